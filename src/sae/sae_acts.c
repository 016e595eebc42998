/* sae_acts.c - one hook's activations from `lumen activations` shards, as a stream of rows that
 * wraps around: the manifest and every shard are checked when opened, then one shard is mapped
 * at a time while reading. */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sae_acts.h"

static lm_status get_count(json_t *j, const char *path, const char *key, uint64_t *out) {
    json_t *v = json_object_get(j, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return lm_fail(LM_ERR_FORMAT, "%s: '%s' missing or not a non-negative integer", path, key);
    *out = (uint64_t)json_integer_value(v);
    return LM_OK;
}

/* The hook's tensor in shard k, checked against the manifest. */
static lm_status check_shard(const sae_acts *a, const lm_safetensors *s, const char *path, size_t k,
                             const lm_st_tensor **out) {
    const lm_st_tensor *t = lm_safetensors_find(s, a->hook);
    uint64_t rows = a->start[k + 1] - a->start[k];
    if (!t) return lm_fail(LM_ERR_FORMAT, "%s: no tensor '%s' (the manifest lists it)", path, a->hook);
    if (t->dtype != LM_ST_F32 && t->dtype != LM_ST_F16 && t->dtype != LM_ST_BF16)
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (want F32, F16 or BF16)", path, a->hook,
                       lm_st_dtype_name(t->dtype));
    if (t->n_dims != 2 || t->shape[0] != rows || t->shape[1] != a->d)
        return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s' has shape [%llu, %llu], the manifest implies [%llu, %zu]", path,
                       a->hook, (unsigned long long)t->shape[0], (unsigned long long)(t->n_dims > 1 ? t->shape[1] : 0),
                       (unsigned long long)rows, a->d);
    *out = t;
    return LM_OK;
}

static lm_status map_shard(sae_acts *a, size_t k) {
    if (a->cur && a->cur_k == k) return LM_OK;
    lm_safetensors_close(a->cur);
    a->cur = NULL;
    a->t = NULL;
    char path[4200];
    snprintf(path, sizeof path, "%s/shard_%05zu.safetensors", a->dir, k);
    lm_status st = lm_safetensors_open(path, &a->cur);
    if (st != LM_OK) return st;
    st = check_shard(a, a->cur, path, k, &a->t);
    if (st != LM_OK) {
        lm_safetensors_close(a->cur);
        a->cur = NULL;
        return st;
    }
    a->cur_k = k;
    return LM_OK;
}

lm_status sae_acts_open(sae_acts *a, const char *dir, const char *hook) {
    memset(a, 0, sizeof *a);
    char path[4200];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    if (!j)
        return lm_fail(LM_ERR_FORMAT, "%s: cannot read the activations manifest (line %d: %s)", path, jerr.line,
                       jerr.text);
    lm_status st = LM_OK;
    json_t *fmt = json_object_get(j, "format"), *hooks = json_object_get(j, "hooks");
    uint64_t d = 0, ctx = 0, done = 0, total = 0;
    if (!json_is_object(j) || !json_is_string(fmt) || strcmp(json_string_value(fmt), "lumen-activations") != 0)
        st = lm_fail(LM_ERR_FORMAT, "%s: not a lumen activations manifest (format is not \"lumen-activations\")", path);
    if (st == LM_OK && !json_is_array(hooks)) st = lm_fail(LM_ERR_FORMAT, "%s: 'hooks' missing or not a list", path);
    if (st == LM_OK) st = get_count(j, path, "d_model", &d);
    if (st == LM_OK) st = get_count(j, path, "ctx", &ctx);
    if (st == LM_OK) st = get_count(j, path, "n_tokens", &a->n_tokens);
    if (st == LM_OK) st = get_count(j, path, "shard_tokens", &a->shard_tokens);
    if (st == LM_OK) st = get_count(j, path, "shards_done", &done);
    if (st == LM_OK) st = get_count(j, path, "shards_total", &total);
    if (st == LM_OK && (d == 0 || d > (1u << 24) || ctx == 0 || ctx > (1u << 30) || a->n_tokens == 0 ||
                        a->n_tokens > (1ull << 48) || a->shard_tokens == 0 || a->shard_tokens > (1ull << 40) ||
                        total != (a->n_tokens + a->shard_tokens - 1) / a->shard_tokens))
        st = lm_fail(LM_ERR_FORMAT, "%s: inconsistent sizes (d_model, ctx, n_tokens, shard_tokens, shards_total)", path);
    if (st == LM_OK && done != total)
        st = lm_fail(LM_ERR_ARG,
                     "%s: the harvest is incomplete (%llu of %llu shards); run the same `lumen activations` command "
                     "again to finish it",
                     path, (unsigned long long)done, (unsigned long long)total);
    if (st == LM_OK) {
        int found = 0;
        for (size_t i = 0; i < json_array_size(hooks); i++) {
            json_t *h = json_array_get(hooks, i);
            if (json_is_string(h) && !strcmp(json_string_value(h), hook)) found = 1;
        }
        if (!found) {
            char list[1024] = "";
            size_t o = 0;
            for (size_t i = 0; i < json_array_size(hooks) && o < sizeof list - 1; i++) {
                json_t *h = json_array_get(hooks, i);
                int n = snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "", json_is_string(h) ? json_string_value(h) : "?");
                if (n < 0) break;
                o += (size_t)n < sizeof list - o ? (size_t)n : sizeof list - o - 1;
            }
            st = lm_fail(LM_ERR_ARG, "%s: hook '%s' was not harvested (the shards hold: %s)", path, hook, list);
        }
    }
    json_t *jm = json_object_get(j, "model");
    if (st == LM_OK) a->model = lm_strdup(json_is_string(jm) ? json_string_value(jm) : "");
    json_decref(j);
    if (st != LM_OK) return st;
    a->d = (size_t)d;
    a->ctx = (int)ctx;
    a->n_shards = (size_t)total;
    a->n_rows = a->n_tokens;
    a->dir = lm_strdup(dir);
    a->hook = lm_strdup(hook);
    a->start = lm_malloc(a->n_shards + 1, sizeof(uint64_t));
    if (!a->dir || !a->hook || !a->model || !a->start) {
        sae_acts_close(a);
        return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    }
    for (size_t k = 0; k <= a->n_shards; k++) {
        uint64_t s = (uint64_t)k * a->shard_tokens;
        a->start[k] = s < a->n_rows ? s : a->n_rows;
    }
    /* every shard is checked now, so that a bad one fails before any training */
    for (size_t k = 0; k < a->n_shards; k++) {
        st = map_shard(a, k);
        if (st != LM_OK) {
            sae_acts_close(a);
            return st;
        }
    }
    return LM_OK;
}

void sae_acts_close(sae_acts *a) {
    lm_safetensors_close(a->cur);
    free(a->dir);
    free(a->hook);
    free(a->model);
    free(a->start);
    memset(a, 0, sizeof *a);
}

lm_status sae_acts_read(sae_acts *a, uint64_t pos, float *dst, size_t n) {
    pos %= a->n_rows;
    while (n > 0) {
        /* the shard holding pos: the last k with start[k] <= pos */
        size_t lo = 0, hi = a->n_shards - 1;
        while (lo < hi) {
            size_t mid = (lo + hi + 1) / 2;
            if (a->start[mid] <= pos) lo = mid;
            else hi = mid - 1;
        }
        lm_status st = map_shard(a, lo);
        if (st != LM_OK) return st;
        uint64_t r = pos - a->start[lo], avail = a->start[lo + 1] - pos;
        size_t take = (uint64_t)n < avail ? n : (size_t)avail;
        lm_dtype dt = lm_st_to_dtype(a->t->dtype);
        size_t row_bytes = lm_dtype_row_bytes(dt, a->d);
        const uint8_t *src = (const uint8_t *)a->t->data + (size_t)r * row_bytes;
        if (dt == LM_F32) memcpy(dst, src, take * a->d * sizeof(float));
        else
            for (size_t i = 0; i < take; i++) lm_dequantize_row(dt, src + i * row_bytes, dst + i * a->d, a->d);
        dst += take * a->d;
        n -= take;
        pos = (pos + take) % a->n_rows;
    }
    return LM_OK;
}
