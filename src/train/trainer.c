/* trainer.c - the training loop: AdamW with warmup + cosine, gradient accumulation and clipping,
 * periodic evaluation, a JSONL log, and atomic checkpoints that resume bit-identically. */
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
#include "lumen/train.h"
#include "lumen/train.h"

void lm_train_opts_default(lm_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->batch = 8;
    o->ctx = 128;
    o->accum = 1;
    o->steps = 1000;
    o->warmup = 50;
    o->lr = 1e-3f;
    o->min_lr = 1e-4f;
    o->weight_decay = 0.1f;
    o->beta1 = 0.9f;
    o->beta2 = 0.95f;
    o->eps = 1e-8f;
    o->clip = 1.0f;
    o->eval_every = 100;
    o->eval_batches = 8;
    o->save_every = 100;
    o->seed = 1337;
    o->progress = 1;
}

static lm_status mkdir_p(const char *path) {
    if (mkdir(path, 0777) != 0 && errno != EEXIST)
        return lm_fail(LM_ERR_IO, "%s: cannot create directory: %s", path, strerror(errno));
    return LM_OK;
}

/* The options a resumed run must share with the run that wrote the checkpoint. */
static json_t *identity_json(const lm_train_opts *o, const lm_config *c) {
    return json_pack("{s:s, s:s, s:i, s:i, s:i, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:i, s:I, s:f, s:i, "
                     "s:i, s:i, s:i, s:i, s:s}",
                     "data", o->data_dir, "init", o->init_model ? o->init_model : "", "batch", o->batch, "ctx", o->ctx,
                     "accum", o->accum, "steps", (json_int_t)o->steps, "warmup", (json_int_t)o->warmup, "lr",
                     (double)o->lr, "min_lr", (double)o->min_lr, "weight_decay", (double)o->weight_decay, "beta1",
                     (double)o->beta1, "beta2", (double)o->beta2, "clip", (double)o->clip, "eval_every",
                     (json_int_t)o->eval_every, "eval_batches", o->eval_batches, "seed", (json_int_t)o->seed,
                     "linearity_reg", (double)o->linearity_reg, "dim", c->dim, "n_layers", c->n_layers, "n_heads",
                     c->n_heads, "n_kv_heads", c->n_kv_heads, "hidden_dim", c->hidden_dim, "family", c->family);
}

typedef struct run {
    const lm_train_opts *o;
    lm_trainable *t;
    lm_adamw opt;
    lm_rng rng;
    lm_data *train, *val;
    const lm_tokenizer *tok;
    json_t *identity;
    long step;
    double last_val;
} run;

/* Only merge-rank BPE vocabularies can be written as tokenizer.json. */
static const lm_tokenizer *savable(const lm_tokenizer *t) {
    return t && lm_tokenizer_get_kind(t) != LM_TOK_SPM ? t : NULL;
}

static lm_status save_checkpoint(run *R) {
    const lm_train_opts *o = R->o;
    char ck[4096], dir[4200], path[4300];
    snprintf(ck, sizeof ck, "%s/ckpt", o->out_dir);
    lm_status st = mkdir_p(ck);
    if (st != LM_OK) return st;
    snprintf(dir, sizeof dir, "%s/step_%08ld", ck, R->step);
    st = lm_model_save_hf(R->t->model, savable(R->tok), dir);
    if (st != LM_OK) return st;
    lm_st_spec specs[2] = {{"adam_m", LM_ST_F32, 1, {R->t->n_floats}, R->t->adam_m},
                           {"adam_v", LM_ST_F32, 1, {R->t->n_floats}, R->t->adam_v}};
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    st = lm_safetensors_write(path, specs, 2, NULL, 0);
    if (st != LM_OK) return st;
    char rng_hex[32];
    snprintf(rng_hex, sizeof rng_hex, "%016llx", (unsigned long long)R->rng.state);
    json_t *j = json_pack("{s:I, s:I, s:s, s:o, s:O}", "step", (json_int_t)R->step, "adam_step",
                          (json_int_t)R->opt.step, "rng_state", rng_hex, "last_val_loss",
                          isfinite(R->last_val) ? json_real(R->last_val) : json_null(), "identity", R->identity);
    char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
    json_decref(j);
    if (!text) return lm_fail(LM_ERR_NOMEM, "%s: cannot render trainer state", dir);
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    st = lm_write_file_atomic(path, text, strlen(text));
    free(text);
    if (st != LM_OK) return st;
    /* the checkpoint exists for a resumed run only once 'latest' names it */
    char name[64];
    int n = snprintf(name, sizeof name, "step_%08ld\n", R->step);
    snprintf(path, sizeof path, "%s/latest", ck);
    return lm_write_file_atomic(path, name, (size_t)n);
}

/* Loads the checkpoint named by OUT/ckpt/latest, if any, into R (model weights already built). */
static lm_status try_resume(run *R, long *resumed) {
    const lm_train_opts *o = R->o;
    *resumed = -1;
    char path[4300], dir[4200];
    snprintf(path, sizeof path, "%s/ckpt/latest", o->out_dir);
    char *latest = NULL;
    size_t n = 0;
    if (access(path, F_OK) != 0) return LM_OK;
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
    json_t *id = json_object_get(j, "identity");
    if (!json_equal(id, R->identity)) {
        json_decref(j);
        return lm_fail(LM_ERR_ARG,
                       "%s: the checkpoint in %s/ckpt was written with other options; use another output directory "
                       "or the same options",
                       o->out_dir, o->out_dir);
    }
    json_t *js = json_object_get(j, "step"), *ja = json_object_get(j, "adam_step"), *jr = json_object_get(j, "rng_state");
    if (!json_is_integer(js) || !json_is_integer(ja) || !json_is_string(jr)) {
        json_decref(j);
        return lm_fail(LM_ERR_FORMAT, "%s: missing step, adam_step or rng_state", path);
    }
    R->step = (long)json_integer_value(js);
    R->opt.step = (long)json_integer_value(ja);
    R->rng.state = strtoull(json_string_value(jr), NULL, 16);
    json_t *jv = json_object_get(j, "last_val_loss");
    R->last_val = json_is_number(jv) ? json_number_value(jv) : NAN;
    json_decref(j);
    lm_model *m = NULL;
    st = lm_model_load(dir, &m);
    if (st != LM_OK) return st;
    lm_trainable *t2 = NULL;
    st = lm_trainable_from_model(m, &t2);
    lm_model_free(m);
    if (st != LM_OK) return st;
    if (t2->n_floats != R->t->n_floats) {
        lm_trainable_free(t2);
        return lm_fail(LM_ERR_FORMAT, "%s: checkpoint has %zu parameters, expected %zu", dir, t2->n_floats,
                       R->t->n_floats);
    }
    memcpy(R->t->params, t2->params, t2->n_floats * sizeof(float));
    lm_trainable_free(t2);
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    lm_safetensors *os = NULL;
    st = lm_safetensors_open(path, &os);
    if (st != LM_OK) return st;
    const lm_st_tensor *am = lm_safetensors_find(os, "adam_m"), *av = lm_safetensors_find(os, "adam_v");
    if (!am || !av || am->dtype != LM_ST_F32 || av->dtype != LM_ST_F32 || am->n_elements != R->t->n_floats ||
        av->n_elements != R->t->n_floats) {
        lm_safetensors_close(os);
        return lm_fail(LM_ERR_FORMAT, "%s: adam_m/adam_v missing or of the wrong size", path);
    }
    memcpy(R->t->adam_m, am->data, R->t->n_floats * sizeof(float));
    memcpy(R->t->adam_v, av->data, R->t->n_floats * sizeof(float));
    lm_safetensors_close(os);
    *resumed = R->step;
    return LM_OK;
}

static lm_status evaluate(run *R, double *val) {
    const lm_train_opts *o = R->o;
    lm_data *d = R->val ? R->val : R->train;
    size_t n = (size_t)o->batch * o->ctx;
    int32_t *in = malloc(n * 4), *tg = malloc(n * 4);
    if (!in || !tg) {
        free(in);
        free(tg);
        return lm_fail(LM_ERR_NOMEM, "train: out of memory");
    }
    lm_rng er;
    lm_rng_seed(&er, o->seed ^ 0x5eedf00dull); /* the same validation windows every time */
    double total = 0;
    lm_status st = LM_OK;
    for (int b = 0; b < o->eval_batches && st == LM_OK; b++) {
        st = lm_data_sample(d, &er, o->batch, o->ctx, in, tg);
        double l = 0;
        if (st == LM_OK) st = lm_train_eval_loss(R->t, in, tg, o->batch, o->ctx, &l);
        total += l;
    }
    free(in);
    free(tg);
    *val = total / (o->eval_batches > 0 ? o->eval_batches : 1);
    return st;
}

static lm_status append_log(FILE *log, json_t *j) {
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s) return lm_fail(LM_ERR_NOMEM, "train: cannot render a log line");
    fprintf(log, "%s\n", s);
    fflush(log);
    free(s);
    return LM_OK;
}

lm_status lm_train_run(const lm_train_opts *o, lm_train_result *res) {
    memset(res, 0, sizeof *res);
    res->resumed_from = -1;
    if (o->batch <= 0 || o->ctx <= 1 || o->accum <= 0 || o->steps <= 0 || o->eval_batches < 0)
        return lm_fail(LM_ERR_ARG, "train: batch, ctx (> 1), accum and steps must be positive");
    if (!(o->lr > 0) || o->min_lr < 0 || o->clip < 0)
        return lm_fail(LM_ERR_ARG, "train: learning rates must be positive and clip non-negative");
    if (o->linearity_reg < 0 || !isfinite(o->linearity_reg))
        return lm_fail(LM_ERR_ARG, "train: the linearity regulariser weight must be >= 0");
    run R;
    memset(&R, 0, sizeof R);
    R.o = o;
    R.last_val = NAN;
    lm_status st = lm_data_open(o->data_dir, "train", &R.train);
    if (st != LM_OK) return st;
    if (lm_data_open(o->data_dir, "val", &R.val) != LM_OK) R.val = NULL; /* no validation split: use train */
    lm_model *init = NULL;
    lm_tokenizer *tok_owned = NULL;
    if (o->tokenizer) {
        st = lm_tokenizer_load(o->tokenizer, &tok_owned);
        R.tok = tok_owned;
    }
    if (st == LM_OK && o->init_model) {
        st = lm_model_load(o->init_model, &init);
        if (st == LM_OK) st = lm_trainable_from_model(init, &R.t);
        if (st == LM_OK && !R.tok) R.tok = init->tokenizer;
    } else if (st == LM_OK) {
        lm_config c = o->cfg;
        c.vocab_size = lm_data_vocab_size(R.train);
        if (c.seq_len < o->ctx) c.seq_len = o->ctx;
        st = lm_trainable_new(&c, o->seed, &R.t);
    }
    if (st == LM_OK && R.tok && lm_tokenizer_vocab_size(R.tok) > R.t->model->cfg.vocab_size)
        st = lm_fail(LM_ERR_ARG, "train: tokenizer has %d tokens, the model %d", lm_tokenizer_vocab_size(R.tok),
                     R.t->model->cfg.vocab_size);
    if (st == LM_OK && lm_data_vocab_size(R.train) > R.t->model->cfg.vocab_size)
        st = lm_fail(LM_ERR_ARG, "%s: data vocabulary (%d) is larger than the model's (%d)", o->data_dir,
                     lm_data_vocab_size(R.train), R.t->model->cfg.vocab_size);
    if (st == LM_OK && o->ctx > R.t->model->cfg.seq_len)
        st = lm_fail(LM_ERR_ARG, "train: ctx %d exceeds the model's context %d", o->ctx, R.t->model->cfg.seq_len);
    if (st == LM_OK) R.t->linearity_reg = o->linearity_reg;
    if (st == LM_OK) {
        R.identity = identity_json(o, &R.t->model->cfg);
        if (!R.identity) st = lm_fail(LM_ERR_NOMEM, "train: out of memory");
    }
    R.opt = (lm_adamw){o->lr, o->beta1, o->beta2, o->eps, o->weight_decay, 0};
    lm_rng_seed(&R.rng, o->seed);
    if (st == LM_OK) st = mkdir_p(o->out_dir);
    long resumed = -1;
    if (st == LM_OK) st = try_resume(&R, &resumed);
    res->resumed_from = resumed;
    char log_path[4200];
    snprintf(log_path, sizeof log_path, "%s/train_log.jsonl", o->out_dir);
    if (st == LM_OK) st = lm_jsonl_keep_steps(log_path, resumed >= 0 ? (long long)resumed : -1);
    FILE *log = st == LM_OK ? fopen(log_path, "a") : NULL;
    if (st == LM_OK && !log) st = lm_fail(LM_ERR_IO, "%s: cannot open: %s", log_path, strerror(errno));
    size_t n = (size_t)o->batch * o->ctx;
    int32_t *in = malloc(n * 4), *tg = malloc(n * 4);
    if (st == LM_OK && (!in || !tg)) st = lm_fail(LM_ERR_NOMEM, "train: out of memory");
    lm_progress prog;
    char prog_label[96] = "train";
    lm_progress_begin(&prog, prog_label, "step", (double)o->steps, o->progress);
    double t0 = lm_now(), tokens = 0, loss = NAN;
    while (st == LM_OK && R.step < o->steps) {
        double ts = lm_now();
        lm_trainable_zero_grad(R.t);
        if (o->fault_nan_at_step && R.step + 1 == o->fault_nan_at_step) {
            /* fault injection for tests: a NaN in the final norm makes every logit NaN */
            ((float *)R.t->model->final_norm)[0] = NAN;
        }
        double step_loss = 0, step_reg = 0;
        for (int a = 0; a < o->accum && st == LM_OK; a++) {
            st = lm_data_sample(R.train, &R.rng, o->batch, o->ctx, in, tg);
            double l = 0;
            if (st == LM_OK) st = lm_train_step_grad(R.t, in, tg, o->batch, o->ctx, 1.0f / (float)o->accum, &l);
            step_loss += l / o->accum;
            step_reg += R.t->last_reg / o->accum;
        }
        if (st != LM_OK) break;
        double gn = lm_grad_norm(R.t);
        if (!isfinite(gn)) {
            st = lm_fail(LM_ERR_RANGE, "train: gradient norm is %g at step %ld; stopping without saving", gn, R.step);
            break;
        }
        float clip = o->clip > 0 && gn > o->clip ? (float)(o->clip / gn) : 1.0f;
        R.opt.lr = lm_lr_schedule(R.step, o->warmup, o->steps, o->lr, o->min_lr);
        lm_adamw_step(R.t, &R.opt, clip);
        R.step++;
        loss = step_loss;
        tokens += (double)n * o->accum;
        double dt = lm_now() - ts;
        json_t *j = json_pack("{s:I, s:f, s:f, s:f, s:f}", "step", (json_int_t)R.step, "loss", loss, "lr",
                              (double)R.opt.lr, "grad_norm", gn, "tokens_per_s", dt > 0 ? n * o->accum / dt : 0.0);
        if (o->linearity_reg > 0) json_object_set_new(j, "cos_reg", json_real(step_reg));
        if ((o->eval_every > 0 && R.step % o->eval_every == 0) || R.step == o->steps) {
            st = evaluate(&R, &R.last_val);
            json_object_set_new(j, "val_loss", json_real(R.last_val));
        }
        if (st == LM_OK) st = append_log(log, j);
        else json_decref(j);
        if (st == LM_OK && ((o->save_every > 0 && R.step % o->save_every == 0) || R.step == o->steps))
            st = save_checkpoint(&R);
        /* the progress line carries the loss and the token rate */
        snprintf(prog_label, sizeof prog_label, "train loss %.4f %.0f tok/s", loss, dt > 0 ? n * o->accum / dt : 0.0);
        prog.label = prog_label;
        lm_progress_update(&prog, (double)R.step);
    }
    lm_progress_end(&prog);
    if (st == LM_OK) st = lm_model_save_hf(R.t->model, savable(R.tok), o->out_dir);
    res->steps_done = R.step;
    res->final_loss = loss;
    res->final_val_loss = R.last_val;
    res->seconds = lm_now() - t0;
    res->tokens_per_s = res->seconds > 0 ? tokens / res->seconds : 0;
    if (log) fclose(log);
    free(in);
    free(tg);
    json_decref(R.identity);
    lm_trainable_free(R.t);
    lm_model_free(init);
    lm_tokenizer_free(tok_owned);
    lm_data_close(R.train);
    lm_data_close(R.val);
    return st;
}
