/* sae_trainer.c - the SAE training loop: activations (from a model on the fly, from activation
 * shards or from a caller's function) through a shuffling buffer, Adam, dead-latent / L0 / MSE /
 * explained-variance tracking, a JSONL log and atomic, resumable checkpoints (the conventions of
 * lm_train_run). A checkpoint records where each unserved buffer row came from rather than the
 * rows themselves; resuming makes them again. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lumen/lumen.h"
#include "sae_acts.h"
#include "sae_internal.h"

#define STOP_AFTER_CAPTURE LM_ERR_RANGE

typedef struct capture {
    float *stage; /* [expected, d] */
    size_t d, expected, got;
    int done;
} capture;

static lm_status capture_hook(void *ud, const lm_hook_info *info, float *act) {
    capture *c = ud;
    size_t rows = (size_t)info->n_seq * (size_t)info->n_tok;
    if (c->got + rows > c->expected) return lm_fail(LM_ERR_RANGE, "sae train: hook delivered more rows than expected");
    memcpy(c->stage + c->got * c->d, act, rows * c->d * sizeof(float));
    c->got += rows;
    if (c->got == c->expected) {
        c->done = 1;
        return STOP_AFTER_CAPTURE; /* nothing after the hook is needed: stop the forward */
    }
    return LM_OK;
}

enum { SRC_MODEL, SRC_ACTS, SRC_FN };

/* jumprelu: the default L0 coefficient, for inputs scaled to E||x||^2 = d_in */
#define JUMP_L0_DEFAULT 1.0f

/* For the model source a buffer row's group word packs the forward batch it came from: its
 * first token's index in the ids (<< 16) and its number of windows (fwd_batch <= 65535). */
#define GROUP_NB_BITS 16

typedef struct strun {
    const lm_sae_train_opts *o;
    int kind;
    lm_sae *sae;
    lm_sae_adam adam;
    lm_sae_grad grad;
    lm_rng rng;
    lm_state *state;
    capture cap;
    int ctx, fwd_batch;
    size_t d, batch, cap_rows, served;
    float *buf; /* [cap_rows, d] */
    uint64_t *prov_pos; /* [cap_rows]: the source position of each row (model: token index) */
    uint64_t *prov_grp; /* [cap_rows]: model only, the forward batch of each row */
    sae_acts acts;      /* SRC_ACTS */
    uint64_t src_pos;   /* SRC_ACTS, SRC_FN: the next row of the stream */
    uint64_t tok_pos, step, total_steps, tokens_seen;
    double scale;
    double *fired_total, *last_fired; /* [d_sae] */
    uint64_t *fired;                  /* per step */
    json_t *identity;
    char ckpt_file[4300]; /* the optimizer file resumed from, for messages */
} strun;

static void scale_rows(float *x, size_t n, size_t d, double c);

/* The initial SAE: Anthropic's init (lm_sae_new); a jumprelu SAE gets the ReLU one's weights
 * and every threshold at init_threshold. */
static lm_status new_sae(const lm_sae_train_opts *o, size_t d, lm_sae **out) {
    lm_sae_init in = {o->arch == LM_SAE_JUMPRELU ? LM_SAE_RELU : o->arch, d, o->d_sae, o->k, 1, o->dec_norm, o->seed};
    lm_status st = lm_sae_new(&in, out);
    if (st != LM_OK || o->arch != LM_SAE_JUMPRELU) return st;
    lm_sae *r = *out, *j = NULL;
    *out = NULL;
    st = sae_alloc(LM_SAE_JUMPRELU, d, o->d_sae, &j);
    if (st == LM_OK) {
        /* the layouts agree up to the thresholds, which come last */
        memcpy(j->params, r->params, r->n_params * sizeof(float));
        for (size_t i = 0; i < o->d_sae; i++) j->threshold[i] = o->init_threshold;
        j->apply_b_dec_to_input = r->apply_b_dec_to_input;
        *out = j;
    }
    lm_sae_free(r);
    return st;
}

/* jumprelu: Adam works on log(theta) (SAELens' parameterisation, which keeps theta > 0): the
 * threshold gradient becomes dL/dlog(theta) = theta dL/dtheta before clipping, and the
 * thresholds are swapped for their logs around the step (exponentiated after). The swap is
 * recomputed from theta every step, so a resumed run (which only has theta) matches. */
static void log_threshold_grad(const lm_sae *sae, lm_sae_grad *g) {
    for (size_t i = 0; i < sae->d_sae; i++) g->threshold[i] *= sae->threshold[i];
}

static void threshold_to_log(lm_sae *sae) {
    for (size_t i = 0; i < sae->d_sae; i++) sae->threshold[i] = logf(sae->threshold[i]);
}

static void threshold_from_log(lm_sae *sae) {
    for (size_t i = 0; i < sae->d_sae; i++) sae->threshold[i] = expf(sae->threshold[i]);
}

static lm_status mkdir_p(const char *path) {
    if (mkdir(path, 0777) != 0 && errno != EEXIST)
        return lm_fail(LM_ERR_IO, "%s: cannot create directory: %s", path, strerror(errno));
    return LM_OK;
}

static uint64_t ids_hash(const int32_t *ids, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ids[i];
        for (int b = 0; b < 4; b++) {
            h ^= (v >> (8 * b)) & 0xff;
            h *= 1099511628211ull;
        }
    }
    return h;
}

/* Runs nb windows from token tok into the capture stage ([nb * ctx, d] rows). */
static lm_status forward_group(strun *R, uint64_t tok, int nb) {
    const lm_sae_train_opts *o = R->o;
    R->cap.expected = (size_t)nb * (size_t)R->ctx;
    R->cap.got = 0;
    R->cap.done = 0;
    lm_state_reset(R->state);
    lm_status st = lm_forward_batch(o->model, R->state, o->ids + tok, nb, R->ctx, NULL, 0);
    if (!R->cap.done) {
        if (st == LM_OK) st = lm_fail(LM_ERR_ARG, "sae train: hook '%s' was not reached", o->hook);
        return st;
    }
    lm_clear_error();
    return LM_OK;
}

/* Produces `rows` activations (raw, unscaled) into buffer rows slot .. slot+rows-1, recording
 * where each came from; advances the source position (the model: over whole windows). */
static lm_status produce(strun *R, size_t slot, size_t rows) {
    const lm_sae_train_opts *o = R->o;
    float *dst = R->buf + slot * R->d;
    if (R->kind == SRC_ACTS) {
        lm_status st = sae_acts_read(&R->acts, R->src_pos, dst, rows);
        if (st != LM_OK) return st;
        for (size_t i = 0; i < rows; i++) R->prov_pos[slot + i] = (R->src_pos + i) % R->acts.n_rows;
        R->src_pos = (R->src_pos + rows) % R->acts.n_rows;
        return LM_OK;
    }
    if (R->kind == SRC_FN) {
        lm_status st = o->rows_fn(o->rows_ud, R->src_pos, dst, rows, R->d);
        if (st != LM_OK) return st;
        for (size_t i = 0; i < rows; i++) R->prov_pos[slot + i] = R->src_pos + i;
        R->src_pos += rows;
        return LM_OK;
    }
    size_t ctx = (size_t)R->ctx;
    while (rows > 0) {
        size_t want_w = (rows + ctx - 1) / ctx;
        int nb = (int)(want_w < (size_t)R->fwd_batch ? want_w : (size_t)R->fwd_batch);
        /* windows are consecutive in the ids; wrap to the start when the next one does not fit */
        if (R->tok_pos + (uint64_t)nb * ctx > o->n_ids) {
            size_t fit = (size_t)((o->n_ids - R->tok_pos) / ctx);
            if (fit == 0) {
                R->tok_pos = 0;
                continue;
            }
            nb = (int)fit;
        }
        lm_status st = forward_group(R, R->tok_pos, nb);
        if (st != LM_OK) return st;
        size_t take = R->cap.expected < rows ? R->cap.expected : rows;
        memcpy(dst, R->cap.stage, take * R->d * sizeof(float));
        uint64_t grp = R->tok_pos << GROUP_NB_BITS | (uint64_t)nb;
        for (size_t i = 0; i < take; i++) {
            R->prov_pos[slot + i] = R->tok_pos + i;
            R->prov_grp[slot + i] = grp;
        }
        R->tok_pos += (uint64_t)nb * ctx;
        dst += take * R->d;
        slot += take;
        rows -= take;
    }
    return LM_OK;
}

typedef struct prov_ent {
    uint64_t key, pos;
    size_t slot;
} prov_ent;

static int prov_cmp(const void *a, const void *b) {
    const prov_ent *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    if (x->pos != y->pos) return x->pos < y->pos ? -1 : 1;
    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

/* On resume: makes the unserved rows (slots served .. cap_rows-1) again from their recorded
 * positions, in source order (the model reruns each forward batch once, as it first ran), and
 * scales them. The served rows are zeroed: they are overwritten before being read. */
static lm_status regenerate(strun *R, const char *path) {
    const lm_sae_train_opts *o = R->o;
    size_t live = R->cap_rows - R->served, d = R->d;
    memset(R->buf, 0, R->served * d * sizeof(float));
    prov_ent *e = lm_malloc(live, sizeof *e);
    if (!e) return lm_fail(LM_ERR_NOMEM, "sae train: out of memory");
    for (size_t i = 0; i < live; i++) {
        size_t slot = R->served + i;
        e[i].key = R->kind == SRC_MODEL ? R->prov_grp[slot] : R->prov_pos[slot];
        e[i].pos = R->prov_pos[slot];
        e[i].slot = slot;
    }
    qsort(e, live, sizeof *e, prov_cmp);
    lm_status st = LM_OK;
    for (size_t i = 0; st == LM_OK && i < live;) {
        float *dst = R->buf + e[i].slot * d;
        if (R->kind == SRC_ACTS) {
            if (e[i].pos >= R->acts.n_rows) st = lm_fail(LM_ERR_FORMAT, "%s: buffer row position out of range", path);
            else st = sae_acts_read(&R->acts, e[i].pos, dst, 1);
            i++;
        } else if (R->kind == SRC_FN) {
            st = o->rows_fn(o->rows_ud, e[i].pos, dst, 1, d);
            i++;
        } else {
            uint64_t start = e[i].key >> GROUP_NB_BITS, nb = e[i].key & ((1u << GROUP_NB_BITS) - 1);
            uint64_t span = nb * (uint64_t)R->ctx;
            if (nb == 0 || nb > (uint64_t)R->fwd_batch || start > o->n_ids || span > o->n_ids - start) {
                st = lm_fail(LM_ERR_FORMAT, "%s: buffer row group out of range", path);
                break;
            }
            st = forward_group(R, start, (int)nb);
            size_t j = i;
            for (; st == LM_OK && j < live && e[j].key == e[i].key; j++) {
                if (e[j].pos < start || e[j].pos - start >= span) {
                    st = lm_fail(LM_ERR_FORMAT, "%s: buffer row position outside its group", path);
                    break;
                }
                memcpy(R->buf + e[j].slot * d, R->cap.stage + (size_t)(e[j].pos - start) * d, d * sizeof(float));
            }
            i = j;
        }
    }
    free(e);
    if (st == LM_OK)
        for (size_t i = R->served; i < R->cap_rows; i++) scale_rows(R->buf + i * d, 1, d, R->scale);
    return st;
}

static void shuffle_rows(strun *R, float *tmp) {
    size_t d = R->d;
    for (size_t i = R->cap_rows - 1; i > 0; i--) {
        size_t j = (size_t)(((uint64_t)lm_rng_u32(&R->rng) << 32 | lm_rng_u32(&R->rng)) % (i + 1));
        if (j == i) continue;
        memcpy(tmp, R->buf + i * d, d * sizeof(float));
        memcpy(R->buf + i * d, R->buf + j * d, d * sizeof(float));
        memcpy(R->buf + j * d, tmp, d * sizeof(float));
        uint64_t p = R->prov_pos[i];
        R->prov_pos[i] = R->prov_pos[j];
        R->prov_pos[j] = p;
        if (R->prov_grp) {
            p = R->prov_grp[i];
            R->prov_grp[i] = R->prov_grp[j];
            R->prov_grp[j] = p;
        }
    }
}

static void scale_rows(float *x, size_t n, size_t d, double c) {
    for (size_t i = 0; i < n * d; i++) x[i] = (float)(x[i] * c);
}

static json_t *identity_json(const lm_sae_train_opts *o, const strun *R) {
    char h[32];
    snprintf(h, sizeof h, "%016llx", (unsigned long long)ids_hash(o->ids, R->kind == SRC_MODEL ? o->n_ids : 0));
    json_t *j = json_pack(
        "{s:s, s:s, s:s, s:I, s:s, s:s, s:I, s:I, s:f, s:f, s:f, s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:f, s:i}", "model",
        o->model_name ? o->model_name : "", "source", o->source_name ? o->source_name : "", "hook", o->hook ? o->hook : "",
        "n_ids", (json_int_t)(R->kind == SRC_MODEL ? o->n_ids : 0), "ids_hash", h, "arch", lm_sae_arch_name(o->arch),
        "d_sae", (json_int_t)o->d_sae, "k", (json_int_t)o->k, "l1_coeff", (double)o->l1_coeff, "lr", (double)o->lr,
        "clip", (double)o->clip, "ctx", R->ctx, "fwd_batch", R->fwd_batch, "batch", (json_int_t)R->batch, "buffer_rows",
        (json_int_t)R->cap_rows, "steps", (json_int_t)R->total_steps, "dead_window", (json_int_t)o->dead_window, "seed",
        (json_int_t)o->seed, "dec_norm", (double)o->dec_norm, "d_in", (int)R->d);
    /* keys only other architectures and sources have: a relu or topk run on the model keeps the
     * identity it always had */
    if (j && o->arch == LM_SAE_JUMPRELU) {
        json_object_set_new(j, "bandwidth", json_real(o->bandwidth));
        json_object_set_new(j, "init_threshold", json_real(o->init_threshold));
    }
    if (j && R->kind == SRC_ACTS) {
        json_object_set_new(j, "source_kind", json_string("acts"));
        json_object_set_new(j, "acts_rows", json_integer((json_int_t)R->acts.n_rows));
        json_object_set_new(j, "acts_shards", json_integer((json_int_t)R->acts.n_shards));
        json_object_set_new(j, "acts_shard_tokens", json_integer((json_int_t)R->acts.shard_tokens));
    } else if (j && R->kind == SRC_FN) {
        json_object_set_new(j, "source_kind", json_string("callback"));
    }
    return j;
}

static lm_status save_checkpoint(strun *R) {
    const lm_sae_train_opts *o = R->o;
    char ck[4096], dir[4200], path[4300];
    snprintf(ck, sizeof ck, "%s/ckpt", o->out_dir);
    lm_status st = mkdir_p(ck);
    if (st != LM_OK) return st;
    snprintf(dir, sizeof dir, "%s/step_%08llu", ck, (unsigned long long)R->step);
    st = lm_sae_save(R->sae, dir, NULL);
    if (st != LM_OK) return st;
    size_t ds = R->sae->d_sae, live = R->cap_rows - R->served;
    /* the unserved rows (served .. cap_rows-1; the served ones are overwritten before use) are
     * stored as their source positions, not as activations */
    lm_st_spec specs[6] = {{"adam_m", LM_ST_F32, 1, {R->adam.n}, R->adam.m},
                           {"adam_v", LM_ST_F32, 1, {R->adam.n}, R->adam.v},
                           {"fired_total", LM_ST_F64, 1, {ds}, R->fired_total},
                           {"last_fired", LM_ST_F64, 1, {ds}, R->last_fired},
                           {"buffer_pos", LM_ST_U64, 1, {live}, R->prov_pos + R->served},
                           {"buffer_group", LM_ST_U64, 1, {live}, R->prov_grp ? R->prov_grp + R->served : NULL}};
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    st = lm_safetensors_write(path, specs, R->kind == SRC_MODEL ? 6 : 5, NULL, 0);
    if (st != LM_OK) return st;
    char rng_hex[32], scale_hex[32];
    uint64_t sb;
    memcpy(&sb, &R->scale, 8);
    snprintf(rng_hex, sizeof rng_hex, "%016llx", (unsigned long long)R->rng.state);
    snprintf(scale_hex, sizeof scale_hex, "%016llx", (unsigned long long)sb);
    json_t *j = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:s, s:f, s:O}", "step", (json_int_t)R->step,
                          "adam_step", (json_int_t)R->adam.t, "tok_pos", (json_int_t)R->tok_pos, "src_pos",
                          (json_int_t)R->src_pos, "tokens_seen",
                          (json_int_t)R->tokens_seen, "served", (json_int_t)R->served, "rng_state", rng_hex,
                          "scale_bits", scale_hex, "scale", R->scale, "identity", R->identity);
    char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
    json_decref(j);
    if (!text) return lm_fail(LM_ERR_NOMEM, "%s: cannot render trainer state", dir);
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    st = lm_write_file_atomic(path, text, strlen(text));
    free(text);
    if (st != LM_OK) return st;
    char name[64];
    int n = snprintf(name, sizeof name, "step_%08llu\n", (unsigned long long)R->step);
    snprintf(path, sizeof path, "%s/latest", ck);
    return lm_write_file_atomic(path, name, (size_t)n);
}

static lm_status copy_tensor(const lm_safetensors *s, const char *path, const char *name, lm_st_dtype dt, size_t n,
                             void *dst) {
    const lm_st_tensor *t = lm_safetensors_find(s, name);
    if (!t || t->dtype != dt || t->n_elements != n)
        return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s' missing or of the wrong type or size", path, name);
    memcpy(dst, t->data, n * lm_st_dtype_size(dt));
    return LM_OK;
}

static lm_status try_resume(strun *R, int64_t *resumed) {
    const lm_sae_train_opts *o = R->o;
    *resumed = -1;
    char path[4300], dir[4200];
    snprintf(path, sizeof path, "%s/ckpt/latest", o->out_dir);
    if (access(path, F_OK) != 0) return LM_OK;
    char *latest = NULL;
    size_t n = 0;
    lm_status st = lm_read_file(path, &latest, &n);
    if (st != LM_OK) return st;
    while (n && (latest[n - 1] == '\n' || latest[n - 1] == '\r')) latest[--n] = 0;
    if (n == 0 || n > 64 || strncmp(latest, "step_", 5) != 0 || strchr(latest, '/')) {
        free(latest);
        return lm_fail(LM_ERR_FORMAT, "%s: does not name a checkpoint", path);
    }
    snprintf(dir, sizeof dir, "%s/ckpt/%s", o->out_dir, latest);
    free(latest);
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    if (!j) return lm_fail(LM_ERR_FORMAT, "%s: invalid JSON at line %d: %s", path, jerr.line, jerr.text);
    if (!json_equal(json_object_get(j, "identity"), R->identity)) {
        json_decref(j);
        return lm_fail(LM_ERR_ARG,
                       "%s: the checkpoint in %s/ckpt was written with other options; use another output directory "
                       "or the same options",
                       o->out_dir, o->out_dir);
    }
    json_t *js = json_object_get(j, "step"), *ja = json_object_get(j, "adam_step"), *jt = json_object_get(j, "tok_pos"),
           *jn = json_object_get(j, "tokens_seen"), *jv = json_object_get(j, "served"), *jp = json_object_get(j, "src_pos"),
           *jr = json_object_get(j, "rng_state"), *jc = json_object_get(j, "scale_bits");
    if (!json_is_integer(js) || !json_is_integer(ja) || !json_is_integer(jt) || !json_is_integer(jn) ||
        !json_is_integer(jv) || !json_is_integer(jp) || !json_is_string(jr) || !json_is_string(jc) ||
        json_integer_value(js) < 0 || json_integer_value(jt) < 0 || json_integer_value(jv) < 0 ||
        json_integer_value(jp) < 0) {
        json_decref(j);
        return lm_fail(LM_ERR_FORMAT, "%s: missing or invalid fields", path);
    }
    R->step = (uint64_t)json_integer_value(js);
    R->adam.t = (uint64_t)json_integer_value(ja);
    R->tok_pos = (uint64_t)json_integer_value(jt);
    R->tokens_seen = (uint64_t)json_integer_value(jn);
    R->served = (size_t)json_integer_value(jv);
    R->src_pos = (uint64_t)json_integer_value(jp);
    R->rng.state = strtoull(json_string_value(jr), NULL, 16);
    uint64_t sb = strtoull(json_string_value(jc), NULL, 16);
    memcpy(&R->scale, &sb, 8);
    json_decref(j);
    if (R->step > R->total_steps || R->served > R->cap_rows / 2 || R->served % R->batch ||
        (R->kind == SRC_MODEL && R->tok_pos > R->o->n_ids) || (R->kind == SRC_ACTS && R->src_pos >= R->acts.n_rows))
        return lm_fail(LM_ERR_FORMAT, "%s: inconsistent trainer state", dir);
    lm_sae *s = NULL;
    st = lm_sae_load(dir, &s);
    if (st != LM_OK) return st;
    if (s->n_params != R->sae->n_params || s->arch != R->sae->arch) {
        lm_sae_free(s);
        return lm_fail(LM_ERR_FORMAT, "%s: checkpoint SAE does not match the options", dir);
    }
    memcpy(R->sae->params, s->params, s->n_params * sizeof(float));
    lm_sae_free(s);
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    snprintf(R->ckpt_file, sizeof R->ckpt_file, "%s", path);
    lm_safetensors *os = NULL;
    st = lm_safetensors_open(path, &os);
    if (st != LM_OK) return st;
    size_t ds = R->sae->d_sae;
    st = copy_tensor(os, path, "adam_m", LM_ST_F32, R->adam.n, R->adam.m);
    if (st == LM_OK) st = copy_tensor(os, path, "adam_v", LM_ST_F32, R->adam.n, R->adam.v);
    if (st == LM_OK) st = copy_tensor(os, path, "fired_total", LM_ST_F64, ds, R->fired_total);
    if (st == LM_OK) st = copy_tensor(os, path, "last_fired", LM_ST_F64, ds, R->last_fired);
    size_t live = R->cap_rows - R->served;
    if (st == LM_OK) st = copy_tensor(os, path, "buffer_pos", LM_ST_U64, live, R->prov_pos + R->served);
    if (st == LM_OK && R->kind == SRC_MODEL)
        st = copy_tensor(os, path, "buffer_group", LM_ST_U64, live, R->prov_grp + R->served);
    lm_safetensors_close(os);
    if (st == LM_OK) *resumed = (int64_t)R->step;
    return st;
}

static lm_status save_final(strun *R) {
    const lm_sae_train_opts *o = R->o;
    size_t ds = R->sae->d_sae;
    lm_sae *f = NULL;
    lm_status st = lm_sae_clone(R->sae, &f);
    if (st != LM_OK) return st;
    float *dens = malloc(ds * sizeof(float));
    if (!dens) st = lm_fail(LM_ERR_NOMEM, "sae train: out of memory");
    if (st == LM_OK) st = lm_sae_fold_scale(f, R->scale);
    if (st == LM_OK) {
        double tok = R->tokens_seen > 0 ? (double)R->tokens_seen : 1.0;
        for (size_t i = 0; i < ds; i++) dens[i] = (float)log10(R->fired_total[i] / tok + 1e-10);
        free(f->model_name);
        free(f->hook_name);
        f->model_name = lm_strdup(o->model_name ? o->model_name : R->kind == SRC_ACTS ? R->acts.model : "");
        f->hook_name = lm_strdup(o->hook ? o->hook : "");
        f->context_size = R->ctx;
        f->prepend_bos = o->prepend_bos;
        if (!f->model_name || !f->hook_name) st = lm_fail(LM_ERR_NOMEM, "sae train: out of memory");
    }
    if (st == LM_OK) st = lm_sae_save(f, o->out_dir, dens);
    free(dens);
    lm_sae_free(f);
    return st;
}

static lm_status append_log(FILE *log, json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(8)) : NULL;
    json_decref(j);
    if (!s) return lm_fail(LM_ERR_NOMEM, "sae train: cannot render a log line");
    fprintf(log, "%s\n", s);
    fflush(log);
    free(s);
    return LM_OK;
}

lm_status lm_sae_train(const lm_sae_train_opts *o, lm_sae_train_result *res) {
    memset(res, 0, sizeof *res);
    res->resumed_from = -1;
    res->first_mse = res->mse = res->ev = NAN;
    int kind = o->rows_fn ? SRC_FN : o->acts_dir ? SRC_ACTS : SRC_MODEL;
    if (o->rows_fn && o->acts_dir) return lm_fail(LM_ERR_ARG, "sae train: give one source: acts_dir or rows_fn, not both");
    if (!o->out_dir) return lm_fail(LM_ERR_ARG, "sae train: out_dir is required");
    if (kind == SRC_MODEL && (!o->model || !o->ids || !o->hook))
        return lm_fail(LM_ERR_ARG, "sae train: model, ids and hook are required (or acts_dir or rows_fn as the source)");
    if (kind == SRC_ACTS && !o->hook) return lm_fail(LM_ERR_ARG, "sae train: the hook to read from %s is required", o->acts_dir);
    if (kind == SRC_FN && (o->d_in == 0 || o->d_in > (1u << 24)))
        return lm_fail(LM_ERR_ARG, "sae train: rows_fn needs d_in (1 .. 2^24), got %zu", o->d_in);
    if (o->arch != LM_SAE_RELU && o->arch != LM_SAE_TOPK && o->arch != LM_SAE_JUMPRELU)
        return lm_fail(LM_ERR_ARG, "sae train: arch must be relu, topk or jumprelu");
    if (o->d_sae == 0) return lm_fail(LM_ERR_ARG, "sae train: d_sae must be positive");
    if (o->arch == LM_SAE_TOPK && (o->k == 0 || o->k > o->d_sae)) return lm_fail(LM_ERR_ARG, "sae train: topk needs 1 <= k <= d_sae");
    lm_sae_train_opts oo = *o; /* defaults filled in */
    if (oo.arch != LM_SAE_TOPK) oo.k = 0;
    if (!(oo.lr > 0)) oo.lr = oo.arch == LM_SAE_TOPK ? 2e-4f : oo.arch == LM_SAE_JUMPRELU ? 7e-5f : 5e-5f;
    if (oo.arch == LM_SAE_RELU && !(oo.l1_coeff > 0)) oo.l1_coeff = 5.0f;
    if (oo.arch == LM_SAE_JUMPRELU && !(oo.l1_coeff > 0)) oo.l1_coeff = JUMP_L0_DEFAULT;
    if (oo.arch == LM_SAE_TOPK) oo.l1_coeff = 0;
    if (oo.arch == LM_SAE_JUMPRELU) {
        if (!(oo.bandwidth > 0)) oo.bandwidth = 0.001f;
        if (!(oo.init_threshold > 0)) oo.init_threshold = 0.001f;
        if (!isfinite(oo.bandwidth) || !isfinite(oo.init_threshold))
            return lm_fail(LM_ERR_ARG, "sae train: bandwidth and init_threshold must be finite");
    } else {
        oo.bandwidth = oo.init_threshold = 0;
    }
    if (oo.clip == 0) oo.clip = 1.0f;
    if (oo.clip < 0) oo.clip = 0;
    if (!(oo.dec_norm > 0)) oo.dec_norm = 0.1f;
    if (!oo.batch) oo.batch = 4096;
    if (!oo.buffer_mult) oo.buffer_mult = 16;
    if (oo.buffer_mult < 2 || oo.buffer_mult % 2) return lm_fail(LM_ERR_ARG, "sae train: buffer_mult must be even and >= 2");
    if (!oo.log_every) oo.log_every = 10;
    strun R;
    memset(&R, 0, sizeof R);
    R.o = &oo;
    R.kind = kind;
    R.batch = oo.batch;
    if (lm_mul_ok(oo.batch, oo.buffer_mult, &R.cap_rows) != 0)
        return lm_fail(LM_ERR_RANGE, "sae train: buffer of %zu x %zu rows is too large", oo.batch, oo.buffer_mult);
    lm_status st = LM_OK;
    if (kind == SRC_MODEL) {
        R.ctx = oo.ctx > 0 ? oo.ctx : o->model->cfg.seq_len;
        if (R.ctx > o->model->cfg.seq_len)
            return lm_fail(LM_ERR_RANGE, "sae train: ctx %d exceeds the model's context %d", R.ctx, o->model->cfg.seq_len);
        if ((size_t)R.ctx > o->n_ids) return lm_fail(LM_ERR_ARG, "sae train: %zu tokens are fewer than one window of %d", o->n_ids, R.ctx);
        R.fwd_batch = oo.fwd_batch > 0 ? oo.fwd_batch : 8;
        if (R.fwd_batch >= 1 << GROUP_NB_BITS)
            return lm_fail(LM_ERR_RANGE, "sae train: fwd_batch %d exceeds %d", R.fwd_batch, (1 << GROUP_NB_BITS) - 1);
        R.d = (size_t)o->model->cfg.dim;
        if (oo.d_in && oo.d_in != R.d)
            return lm_fail(LM_ERR_ARG, "sae train: d_in %zu differs from the model's width %zu", oo.d_in, R.d);
        lm_hook_point hp;
        int hl;
        st = lm_hook_parse(o->model, o->hook, &hp, &hl);
        if (st != LM_OK) return st;
    } else if (kind == SRC_ACTS) {
        st = sae_acts_open(&R.acts, o->acts_dir, o->hook);
        if (st != LM_OK) return st;
        R.d = R.acts.d;
        R.ctx = R.acts.ctx;
        if (oo.d_in && oo.d_in != R.d)
            st = lm_fail(LM_ERR_ARG, "%s: the activations are %zu wide, not d_in %zu", o->acts_dir, R.d, oo.d_in);
        if (st == LM_OK && o->model) {
            lm_hook_point hp;
            int hl;
            st = lm_hook_parse(o->model, o->hook, &hp, &hl);
            if (st == LM_OK && (size_t)o->model->cfg.dim != R.d)
                st = lm_fail(LM_ERR_ARG, "%s: the activations at '%s' are %zu wide, the model's width is %d", o->acts_dir,
                             o->hook, R.d, o->model->cfg.dim);
        }
        if (st != LM_OK) {
            sae_acts_close(&R.acts);
            return st;
        }
    } else {
        R.d = oo.d_in;
        R.ctx = oo.ctx > 0 ? oo.ctx : 0;
    }
    R.total_steps = oo.steps ? oo.steps : oo.tokens / oo.batch;
    if (R.total_steps == 0) {
        sae_acts_close(&R.acts);
        return lm_fail(LM_ERR_ARG, "sae train: no steps to run (give steps or tokens >= batch)");
    }
    oo.steps = R.total_steps;
    if (!oo.dead_window) {
        uint64_t run_tok = R.total_steps * oo.batch;
        oo.dead_window = run_tok < 10000000ull ? run_tok : 10000000ull;
    }
    st = new_sae(&oo, R.d, &R.sae);
    if (st == LM_OK) st = lm_sae_adam_init(&R.adam, R.sae);
    if (st == LM_OK) st = lm_sae_grad_init(&R.grad, R.sae);
    size_t ds = oo.d_sae;
    R.fired_total = calloc(ds, sizeof(double));
    R.last_fired = calloc(ds, sizeof(double));
    R.fired = calloc(ds, sizeof(uint64_t));
    R.buf = lm_malloc(R.cap_rows * R.d, sizeof(float));
    R.prov_pos = lm_malloc(R.cap_rows, sizeof(uint64_t));
    if (kind == SRC_MODEL) R.prov_grp = lm_malloc(R.cap_rows, sizeof(uint64_t));
    float *x = lm_malloc(R.batch * R.d, sizeof(float)), *tmp = malloc(R.d * sizeof(float));
    uint8_t *dead = calloc(ds, 1);
    R.cap.d = R.d;
    if (kind == SRC_MODEL) R.cap.stage = lm_malloc((size_t)R.fwd_batch * (size_t)R.ctx * R.d, sizeof(float));
    if (st == LM_OK && (!R.fired_total || !R.last_fired || !R.fired || !R.buf || !R.prov_pos || !x || !tmp || !dead ||
                        (kind == SRC_MODEL && (!R.cap.stage || !R.prov_grp))))
        st = lm_fail(LM_ERR_NOMEM, "sae train: out of memory (buffer of %zu x %zu)", R.cap_rows, R.d);
    lm_rng_seed(&R.rng, oo.seed ^ 0x5ae5eedull);
    if (st == LM_OK) {
        R.identity = identity_json(&oo, &R);
        if (!R.identity) st = lm_fail(LM_ERR_NOMEM, "sae train: out of memory");
    }
    if (st == LM_OK) st = mkdir_p(oo.out_dir);
    int64_t resumed = -1;
    if (st == LM_OK) st = try_resume(&R, &resumed);
    res->resumed_from = resumed;
    char final_path[4200], log_path[4200];
    snprintf(final_path, sizeof final_path, "%s/sae_weights.safetensors", oo.out_dir);
    snprintf(log_path, sizeof log_path, "%s/sae_log.jsonl", oo.out_dir);
    int finished = st == LM_OK && resumed >= 0 && R.step == R.total_steps && access(final_path, F_OK) == 0;
    FILE *log = NULL;
    if (st == LM_OK && !finished) {
        st = lm_jsonl_keep_steps(log_path, resumed >= 0 ? (long long)resumed : 0);
        if (st == LM_OK && resumed < 0 && access(log_path, F_OK) == 0) st = lm_write_file_atomic(log_path, "", 0);
        if (st == LM_OK && !(log = fopen(log_path, "a"))) st = lm_fail(LM_ERR_IO, "%s: cannot open: %s", log_path, strerror(errno));
        if (st == LM_OK && kind == SRC_MODEL)
            st = lm_state_new_batch(o->model, R.ctx, R.fwd_batch * R.ctx, R.fwd_batch, &R.state);
        if (st == LM_OK && kind == SRC_MODEL) st = lm_state_add_hook(R.state, o->hook, capture_hook, &R.cap);
        if (st == LM_OK && resumed >= 0) st = regenerate(&R, R.ckpt_file);
    }
    if (st == LM_OK && !finished && resumed < 0) {
        /* first fill: estimate the scale on it, then scale and shuffle */
        st = produce(&R, 0, R.cap_rows);
        if (st == LM_OK) st = lm_sae_estimate_scale(R.buf, R.cap_rows, R.d, &R.scale);
        if (st == LM_OK) {
            scale_rows(R.buf, R.cap_rows, R.d, R.scale);
            shuffle_rows(&R, tmp);
            R.served = 0;
        }
    }
    res->scale = R.scale;
    lm_progress prog;
    lm_progress_begin(&prog, "sae train", "step", (double)R.total_steps, oo.progress && !finished);
    lm_progress_update(&prog, (double)R.step);
    double t0 = lm_now(), tokens_now = 0, tl = lm_now();
    uint64_t tokens_at_log = 0;
    lm_sae_loss L;
    memset(&L, 0, sizeof L);
    double ev = NAN;
    size_t n_dead = 0;
    while (st == LM_OK && !finished && R.step < R.total_steps) {
        if (R.served + R.batch > R.cap_rows / 2) {
            /* the served half (the front) is refilled, then the whole buffer is shuffled */
            st = produce(&R, 0, R.cap_rows / 2);
            if (st != LM_OK) break;
            scale_rows(R.buf, R.cap_rows / 2, R.d, R.scale);
            shuffle_rows(&R, tmp);
            R.served = 0;
        }
        memcpy(x, R.buf + R.served * R.d, R.batch * R.d * sizeof(float));
        R.served += R.batch;
        n_dead = 0;
        for (size_t i = 0; i < ds; i++) {
            dead[i] = (double)R.tokens_seen - R.last_fired[i] >= (double)oo.dead_window;
            n_dead += dead[i];
        }
        lm_sae_loss_opts lo = {lm_sae_l1_at(oo.l1_coeff, R.step, R.total_steps), oo.arch == LM_SAE_TOPK ? dead : NULL, 0, 0,
                               oo.bandwidth};
        lm_sae_grad_zero(&R.grad);
        memset(R.fired, 0, ds * sizeof(uint64_t));
        st = lm_sae_loss_backward(R.sae, &R.grad, x, R.batch, &lo, &L, R.fired);
        if (st != LM_OK) break;
        if (oo.arch == LM_SAE_JUMPRELU) log_threshold_grad(R.sae, &R.grad);
        double gn = lm_sae_grad_clip(&R.grad, oo.clip);
        if (!isfinite(gn) || !isfinite(L.total)) {
            st = lm_fail(LM_ERR_RANGE, "sae train: loss or gradient not finite at step %llu; stopping without saving",
                         (unsigned long long)R.step);
            break;
        }
        float lr = lm_sae_lr_at(oo.lr, R.step, R.total_steps);
        if (oo.arch == LM_SAE_JUMPRELU) threshold_to_log(R.sae);
        st = lm_sae_adam_step(&R.adam, R.sae, &R.grad, lr);
        if (oo.arch == LM_SAE_JUMPRELU) threshold_from_log(R.sae);
        if (st != LM_OK) break;
        /* explained variance of this batch (x_hat from before the step, as the mse) */
        double var = 0;
        {
            double *mean = calloc(R.d, sizeof(double));
            if (!mean) {
                st = lm_fail(LM_ERR_NOMEM, "sae train: out of memory");
                break;
            }
            for (size_t t = 0; t < R.batch; t++)
                for (size_t c = 0; c < R.d; c++) mean[c] += x[t * R.d + c];
            for (size_t c = 0; c < R.d; c++) mean[c] /= (double)R.batch;
            for (size_t t = 0; t < R.batch; t++)
                for (size_t c = 0; c < R.d; c++) {
                    double e = x[t * R.d + c] - mean[c];
                    var += e * e;
                }
            free(mean);
        }
        ev = var > 0 ? 1.0 - L.mse * (double)R.batch / var : NAN;
        R.tokens_seen += R.batch;
        tokens_now += (double)R.batch;
        for (size_t i = 0; i < ds; i++)
            if (R.fired[i]) {
                R.fired_total[i] += (double)R.fired[i];
                R.last_fired[i] = (double)R.tokens_seen;
            }
        R.step++;
        if (isnan(res->first_mse)) res->first_mse = L.mse;
        if (R.step % oo.log_every == 0 || R.step == R.total_steps) {
            double now = lm_now();
            double rate = now > tl ? (double)(R.tokens_seen - tokens_at_log) / (now - tl) : 0;
            tl = now;
            tokens_at_log = R.tokens_seen;
            json_t *j = json_pack("{s:I, s:I, s:f, s:f, s:f, s:f, s:I, s:f, s:f, s:f, s:f, s:f}", "step",
                                  (json_int_t)R.step, "tokens", (json_int_t)R.tokens_seen, "loss", L.total, "mse",
                                  L.mse, "ev", isfinite(ev) ? ev : 0.0, "l0", L.l0, "dead", (json_int_t)n_dead, "lr",
                                  (double)lr, "l1_coeff", (double)lo.l1_coeff, "grad_norm", gn, "aux", L.aux,
                                  "tokens_per_s", rate);
            st = append_log(log, j);
        }
        if (st == LM_OK && ((oo.save_every > 0 && R.step % oo.save_every == 0) || R.step == R.total_steps))
            st = save_checkpoint(&R);
        lm_progress_update(&prog, (double)R.step);
    }
    lm_progress_end(&prog);
    if (st == LM_OK && !finished) st = save_final(&R);
    res->already_done = finished;
    res->steps_done = R.step;
    res->tokens_done = R.tokens_seen;
    res->scale = R.scale;
    res->mse = L.mse;
    res->ev = ev;
    res->l0 = L.l0;
    n_dead = 0;
    for (size_t i = 0; R.last_fired && i < ds; i++) n_dead += (double)R.tokens_seen - R.last_fired[i] >= (double)oo.dead_window;
    res->n_dead = n_dead;
    res->seconds = lm_now() - t0;
    res->tokens_per_s = res->seconds > 0 ? tokens_now / res->seconds : 0;
    if (log) fclose(log);
    lm_state_free(R.state);
    free(R.cap.stage);
    free(R.buf);
    free(R.prov_pos);
    free(R.prov_grp);
    sae_acts_close(&R.acts);
    free(R.fired_total);
    free(R.last_fired);
    free(R.fired);
    free(x);
    free(tmp);
    free(dead);
    json_decref(R.identity);
    lm_sae_grad_free(&R.grad);
    lm_sae_adam_free(&R.adam);
    lm_sae_free(R.sae);
    return st;
}
