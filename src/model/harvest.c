/* harvest.c - activations at hook points written as safetensors shards, resumable. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lumen/model.h"

lm_status lm_row_sink_hook(void *ud, const lm_hook_info *info, float *act) {
    lm_row_sink *k = ud;
    size_t rows = (size_t)info->n_seq * (size_t)info->n_tok;
    if (rows > k->cap - k->off)
        return lm_fail(LM_ERR_RANGE, "hook %s: more rows than its buffer holds (internal error)", info->name);
    memcpy(k->buf + k->off * k->d, act, rows * k->d * sizeof(float));
    k->off += rows;
    return LM_OK;
}

lm_status lm_forward_windows(const lm_model *m, lm_state *sb, lm_state *s1, const int32_t *ids, size_t n,
                             const lm_windows_opts *o) {
    const size_t ctx = (size_t)o->ctx, full = n / ctx, rest = n - full * ctx;
    lm_status st = LM_OK;
    for (size_t w = 0; st == LM_OK && w < full + (rest > 0);) {
        int last = w == full; /* the shorter window */
        int nb = last ? 1 : (int)(full - w < (size_t)o->batch ? full - w : (size_t)o->batch);
        int len = last ? (int)rest : o->ctx;
        lm_state *s = last ? s1 : sb;
        if (o->before) o->before(o->before_ud, w * ctx, len);
        lm_state_reset(s);
        st = last ? lm_forward(m, s, ids + w * ctx, len, NULL, 0)
                  : lm_forward_batch(m, s, ids + w * ctx, nb, len, NULL, 0);
        w += (size_t)nb;
        size_t done = last ? n : w * ctx;
        if (st == LM_OK && o->progress && o->progress(o->progress_ud, o->done0 + done, o->total))
            st = lm_fail(LM_ERR_ARG, "%s: stopped", o->what);
    }
    return st;
}

/* The identity of a job: a resumed run must match it exactly. */
static json_t *job_json(const lm_model *m, size_t n, const lm_harvest_opts *o, int ctx, size_t shard_tokens) {
    json_t *hooks = json_array();
    for (int i = 0; i < o->n_hooks; i++) json_array_append_new(hooks, json_string(o->hooks[i]));
    return json_pack("{s:s, s:s, s:s, s:o, s:i, s:I, s:I, s:i}", "format", "lumen-activations", "model",
                     o->model_name ? o->model_name : m->path, "source", o->source_name ? o->source_name : "",
                     "hooks", hooks, "ctx", ctx, "n_tokens", (json_int_t)n, "shard_tokens", (json_int_t)shard_tokens,
                     "d_model", m->cfg.dim);
}

static lm_status write_manifest(const char *dir, json_t *job, size_t done_shards, size_t total_shards) {
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    json_t *j = json_deep_copy(job);
    json_object_set_new(j, "shards_done", json_integer((json_int_t)done_shards));
    json_object_set_new(j, "shards_total", json_integer((json_int_t)total_shards));
    json_object_set_new(j, "complete", json_boolean(done_shards == total_shards));
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!text) return lm_fail(LM_ERR_NOMEM, "%s: cannot render manifest", path);
    size_t len = strlen(text);
    text[len] = '\n';
    lm_status st = lm_write_file_atomic(path, text, len + 1);
    free(text);
    return st;
}

/* Shards already complete according to an existing manifest (0 if none). */
static lm_status read_progress(const char *dir, json_t *job, size_t *done) {
    *done = 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    struct stat sb;
    if (stat(path, &sb) != 0) return LM_OK;
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    if (!j) return lm_fail(LM_ERR_FORMAT, "%s: invalid JSON at line %d: %s", path, jerr.line, jerr.text);
    const char *keys[] = {"format", "model", "source", "hooks", "ctx", "n_tokens", "shard_tokens", "d_model"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (!json_equal(json_object_get(j, keys[i]), json_object_get(job, keys[i]))) {
            json_decref(j);
            return lm_fail(LM_ERR_ARG,
                           "%s: the directory holds activations of a different job ('%s' differs); "
                           "use another output directory",
                           dir, keys[i]);
        }
    json_t *d = json_object_get(j, "shards_done");
    if (!json_is_integer(d) || json_integer_value(d) < 0) {
        json_decref(j);
        return lm_fail(LM_ERR_FORMAT, "%s: 'shards_done' missing or invalid", path);
    }
    *done = (size_t)json_integer_value(d);
    json_decref(j);
    return LM_OK;
}

lm_status lm_harvest(const lm_model *m, const int32_t *ids, size_t n, const lm_harvest_opts *o, const char *out_dir,
                     lm_progress_cb cb, void *ud, lm_harvest_result *res) {
    memset(res, 0, sizeof *res);
    if (o->n_hooks <= 0) return lm_fail(LM_ERR_ARG, "activations: no hook given");
    int ctx = o->ctx > 0 ? o->ctx : m->cfg.seq_len;
    if (ctx > m->cfg.seq_len)
        return lm_fail(LM_ERR_RANGE, "activations: window of %d tokens exceeds the model's context of %d", ctx,
                       m->cfg.seq_len);
    int batch = o->batch > 0 ? o->batch : 1;
    size_t shard = o->shard_tokens ? o->shard_tokens : 32768;
    shard = (shard + (size_t)ctx - 1) / (size_t)ctx * (size_t)ctx;
    for (int i = 0; i < o->n_hooks; i++) {
        lm_hook_point p;
        int l;
        lm_status st = lm_hook_parse(m, o->hooks[i], &p, &l);
        if (st != LM_OK) return st;
        for (int j = 0; j < i; j++)
            if (!strcmp(o->hooks[i], o->hooks[j]))
                return lm_fail(LM_ERR_ARG, "activations: hook '%s' given twice", o->hooks[i]);
    }
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST)
        return lm_fail(LM_ERR_IO, "%s: cannot create directory: %s", out_dir, strerror(errno));
    json_t *job = job_json(m, n, o, ctx, shard);
    if (!job) return lm_fail(LM_ERR_NOMEM, "activations: out of memory");
    size_t n_shards = (n + shard - 1) / shard, done = 0;
    lm_status st = read_progress(out_dir, job, &done);
    if (st == LM_OK && done > n_shards) st = lm_fail(LM_ERR_FORMAT, "%s/manifest.json: more shards done than planned", out_dir);
    size_t d = (size_t)m->cfg.dim;
    lm_row_sink *sinks = calloc((size_t)o->n_hooks, sizeof *sinks);
    int32_t *pos = lm_malloc(shard, sizeof(int32_t));
    lm_state *s = NULL, *s1 = NULL;
    if (st == LM_OK && (!sinks || !pos)) st = lm_fail(LM_ERR_NOMEM, "activations: out of memory");
    for (int i = 0; st == LM_OK && i < o->n_hooks; i++) {
        sinks[i].d = d;
        sinks[i].cap = shard;
        sinks[i].buf = lm_malloc(shard * d, sizeof(float));
        if (!sinks[i].buf) st = lm_fail(LM_ERR_NOMEM, "activations: out of memory for a %zu-token shard", shard);
    }
    if (st == LM_OK) st = lm_state_new_batch(m, ctx, batch * ctx, batch, &s);
    if (st == LM_OK) st = lm_state_new(m, ctx, ctx, &s1);
    for (int i = 0; st == LM_OK && i < o->n_hooks; i++) {
        st = lm_state_add_hook(s, o->hooks[i], lm_row_sink_hook, &sinks[i]);
        if (st == LM_OK) st = lm_state_add_hook(s1, o->hooks[i], lm_row_sink_hook, &sinks[i]);
    }
    if (st == LM_OK && done == 0) st = write_manifest(out_dir, job, 0, n_shards);
    res->n_shards_skipped = done;
    double t0 = lm_now();
    for (size_t k = done; st == LM_OK && k < n_shards; k++) {
        size_t start = k * shard, len = n - start < shard ? n - start : shard;
        for (int i = 0; i < o->n_hooks; i++) sinks[i].off = 0;
        lm_windows_opts wo = {ctx, batch, NULL, NULL, cb, ud, start, n, "activations"};
        st = lm_forward_windows(m, s, s1, ids + start, len, &wo);
        if (st != LM_OK) break;
        for (size_t t = 0; t < len; t++) pos[t] = (int32_t)(t % (size_t)ctx);
        lm_st_spec *specs = calloc((size_t)o->n_hooks + 2, sizeof *specs);
        if (!specs) {
            st = lm_fail(LM_ERR_NOMEM, "activations: out of memory");
            break;
        }
        for (int i = 0; i < o->n_hooks; i++)
            specs[i] = (lm_st_spec){o->hooks[i], LM_ST_F32, 2, {len, d}, sinks[i].buf};
        specs[o->n_hooks] = (lm_st_spec){"tokens", LM_ST_I32, 1, {len}, ids + start};
        specs[o->n_hooks + 1] = (lm_st_spec){"positions", LM_ST_I32, 1, {len}, pos};
        char path[4096];
        snprintf(path, sizeof path, "%s/shard_%05zu.safetensors", out_dir, k);
        const char *meta[] = {"format", "lumen-activations", "source", o->source_name ? o->source_name : ""};
        st = lm_safetensors_write(path, specs, (size_t)o->n_hooks + 2, meta, 2);
        free(specs);
        if (st == LM_OK) st = write_manifest(out_dir, job, k + 1, n_shards);
        if (st == LM_OK) {
            res->n_shards++;
            res->n_tokens += len;
        }
        if (cb) cb(ud, start + len, n);
    }
    res->seconds = lm_now() - t0;
    for (int i = 0; sinks && i < o->n_hooks; i++) free(sinks[i].buf);
    free(sinks);
    free(pos);
    lm_state_free(s);
    lm_state_free(s1);
    json_decref(job);
    return st;
}
