/* sae_io.c - SAEs on disk in SAELens' layout (cfg.json + sae_weights.safetensors [+ sparsity.safetensors]),
 * read and written, so SAEs move both ways between lumen and SAELens. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lumen/format.h"
#include "lumen/sae.h"
#include "sae_internal.h"

/* The SAELens config schema this layout follows. SAELens treats a cfg.json whose metadata has no
 * sae_lens_version as pre-6.0 and rebuilds (and so drops) its metadata. */
#define SAELENS_FORMAT_VERSION "6.0.0"

static json_t *metadata_json(const lm_sae *sae) {
    json_t *m = json_object();
    json_object_set_new(m, "sae_lens_version", json_string(SAELENS_FORMAT_VERSION));
    json_object_set_new(m, "sae_lens_training_version", json_null());
    json_object_set_new(m, "model_name", sae->model_name ? json_string(sae->model_name) : json_null());
    json_object_set_new(m, "hook_name", sae->hook_name ? json_string(sae->hook_name) : json_null());
    json_object_set_new(m, "context_size", sae->context_size > 0 ? json_integer(sae->context_size) : json_null());
    json_object_set_new(m, "prepend_bos", json_boolean(sae->prepend_bos));
    json_object_set_new(m, "trained_with", json_string("lumen"));
    return m;
}

static json_t *cfg_json(const lm_sae *sae) {
    json_t *j = json_object();
    if (!j) return NULL;
    json_object_set_new(j, "d_in", json_integer((json_int_t)sae->d_in));
    json_object_set_new(j, "d_sae", json_integer((json_int_t)sae->d_sae));
    json_object_set_new(j, "dtype", json_string("float32"));
    json_object_set_new(j, "device", json_string("cpu"));
    json_object_set_new(j, "apply_b_dec_to_input", json_boolean(sae->apply_b_dec_to_input));
    /* the scale is folded into the weights before saving, so the SAE takes raw activations */
    json_object_set_new(j, "normalize_activations", json_string("none"));
    json_object_set_new(j, "reshape_activations", json_string("none"));
    json_object_set_new(j, "metadata", metadata_json(sae));
    json_object_set_new(j, "architecture", json_string(lm_sae_arch_name(sae->arch)));
    if (sae->arch == LM_SAE_TOPK) {
        json_object_set_new(j, "k", json_integer((json_int_t)sae->k));
        json_object_set_new(j, "rescale_acts_by_decoder_norm", json_false());
    }
    return j;
}

static lm_st_spec spec2(const char *name, const float *data, size_t a, size_t b) {
    lm_st_spec s = {.name = name, .dtype = LM_ST_F32, .n_dims = b ? 2 : 1, .data = data};
    s.shape[0] = a;
    s.shape[1] = b;
    return s;
}

lm_status lm_sae_save(const lm_sae *sae, const char *dir, const float *log10_density) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return lm_fail(LM_ERR_IO, "%s: cannot create directory: %s", dir, strerror(errno));
    char path[4096];
    lm_st_spec specs[5];
    size_t ns = 0;
    /* names sorted, as SAELens' writer (safetensors' save_file) orders equal-dtype tensors */
    specs[ns++] = spec2("W_dec", sae->W_dec, sae->d_sae, sae->d_in);
    specs[ns++] = spec2("W_enc", sae->W_enc, sae->d_in, sae->d_sae);
    specs[ns++] = spec2("b_dec", sae->b_dec, sae->d_in, 0);
    specs[ns++] = spec2("b_enc", sae->b_enc, sae->d_sae, 0);
    if (sae->threshold) specs[ns++] = spec2("threshold", sae->threshold, sae->d_sae, 0);
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
    lm_status st = lm_safetensors_write(path, specs, ns, NULL, 0);
    if (st) return st;
    if (log10_density) {
        lm_st_spec sp = spec2("sparsity", log10_density, sae->d_sae, 0);
        snprintf(path, sizeof path, "%s/sparsity.safetensors", dir);
        if ((st = lm_safetensors_write(path, &sp, 1, NULL, 0))) return st;
    }
    json_t *cfg = cfg_json(sae);
    char *text = cfg ? json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(cfg);
    if (!text) return lm_fail(LM_ERR_NOMEM, "%s: cannot render cfg.json", dir);
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    size_t len = strlen(text);
    text[len] = '\n';
    st = lm_write_file_atomic(path, text, len + 1);
    free(text);
    return st;
}

/* ---- loading ------------------------------------------------------------------------------- */

static lm_status get_size(const char *path, json_t *cfg, const char *key, size_t *out) {
    json_t *v = json_object_get(cfg, key);
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > INT32_MAX)
        return lm_fail(LM_ERR_FORMAT, "%s: '%s' is missing or not a positive integer", path, key);
    *out = (size_t)json_integer_value(v);
    return LM_OK;
}

static lm_status get_bool(const char *path, json_t *cfg, const char *key, int def, int *out) {
    json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return LM_OK;
    }
    if (!json_is_boolean(v)) return lm_fail(LM_ERR_FORMAT, "%s: '%s' is not a boolean", path, key);
    *out = json_is_true(v);
    return LM_OK;
}

/* A string from metadata, or (older configs) from the top level under one of two names. */
static const char *meta_str(json_t *cfg, const char *key, const char *old_key) {
    json_t *m = json_object_get(cfg, "metadata"), *v = json_is_object(m) ? json_object_get(m, key) : NULL;
    if (!json_is_string(v)) v = json_object_get(cfg, key);
    if (!json_is_string(v) && old_key) v = json_object_get(cfg, old_key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static json_t *meta_get(json_t *cfg, const char *key) {
    json_t *m = json_object_get(cfg, "metadata"), *v = json_is_object(m) ? json_object_get(m, key) : NULL;
    return v ? v : json_object_get(cfg, key);
}

/* Copies tensor name of shape [a] or [a, b] (b == 0: 1-D) into dst as f32. */
static lm_status read_tensor(const lm_safetensors *w, const char *path, const char *name, size_t a, size_t b,
                             float *dst) {
    const lm_st_tensor *t = lm_safetensors_find(w, name);
    if (!t) return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s' is missing", path, name);
    int want_dims = b ? 2 : 1;
    if (t->n_dims != want_dims || t->shape[0] != a || (b && t->shape[1] != b)) {
        char got[128] = "";
        size_t o = 0;
        for (int i = 0; i < t->n_dims && o < sizeof got - 24; i++)
            o += (size_t)snprintf(got + o, sizeof got - o, "%s%llu", i ? ", " : "", (unsigned long long)t->shape[i]);
        if (b)
            return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s' has shape [%s], cfg.json implies [%zu, %zu]", path, name, got,
                           a, b);
        return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s' has shape [%s], cfg.json implies [%zu]", path, name, got, a);
    }
    size_t n = (size_t)t->n_elements;
    const uint8_t *src = t->data;
    switch (t->dtype) {
    case LM_ST_F32: memcpy(dst, src, n * sizeof(float)); break;
    case LM_ST_F16:
    case LM_ST_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(src[2 * i] | (src[2 * i + 1] << 8));
            dst[i] = t->dtype == LM_ST_F16 ? lm_f16_to_f32(h) : lm_bf16_to_f32(h);
        }
        break;
    default:
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (want F32, F16 or BF16)", path, name,
                       lm_st_dtype_name(t->dtype));
    }
    /* log10 densities may be -inf for a latent that never fired */
    for (size_t i = 0; i < n && strcmp(name, "sparsity") != 0; i++)
        if (!isfinite(dst[i])) return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s' holds a non-finite value", path, name);
    return LM_OK;
}

static lm_status parse_cfg(const char *path, json_t *cfg, lm_sae_arch *arch, size_t *d_in, size_t *d_sae, size_t *k,
                           int *apply, int *rescale) {
    if (!json_is_object(cfg)) return lm_fail(LM_ERR_FORMAT, "%s: not a JSON object", path);
    lm_status st;
    if ((st = get_size(path, cfg, "d_in", d_in)) || (st = get_size(path, cfg, "d_sae", d_sae))) return st;
    json_t *a = json_object_get(cfg, "architecture");
    const char *an = json_is_string(a) ? json_string_value(a) : NULL;
    if (a && !an) return lm_fail(LM_ERR_FORMAT, "%s: 'architecture' is not a string", path);
    if (!an) an = "standard"; /* SAELens' default for configs older than 6.0 */
    if (!strcmp(an, "standard"))
        *arch = LM_SAE_RELU;
    else if (!strcmp(an, "topk"))
        *arch = LM_SAE_TOPK;
    else if (!strcmp(an, "jumprelu"))
        *arch = LM_SAE_JUMPRELU;
    else
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: unknown architecture '%s' (lumen reads standard, topk, jumprelu)", path,
                       an);
    *k = 0;
    if (*arch == LM_SAE_TOPK) {
        json_t *kv = json_object_get(cfg, "k");
        json_t *kw = json_object_get(cfg, "activation_fn_kwargs"); /* pre-6.0 configs keep k here */
        if (!kv && json_is_object(kw)) kv = json_object_get(kw, "k");
        if (!json_is_integer(kv) || json_integer_value(kv) <= 0 || (size_t)json_integer_value(kv) > *d_sae)
            return lm_fail(LM_ERR_FORMAT, "%s: topk needs an integer 'k' in 1..d_sae (%zu)", path, *d_sae);
        *k = (size_t)json_integer_value(kv);
    }
    if ((st = get_bool(path, cfg, "apply_b_dec_to_input", 1, apply)) ||
        (st = get_bool(path, cfg, "rescale_acts_by_decoder_norm", 0, rescale)))
        return st;
    json_t *na = json_object_get(cfg, "normalize_activations");
    if (na && !json_is_null(na) && !json_is_false(na) && !(json_is_string(na) && !strcmp(json_string_value(na), "none")))
        return lm_fail(LM_ERR_UNSUPPORTED,
                       "%s: normalize_activations is '%s'; lumen reads SAEs that take raw activations ('none'): fold "
                       "the scale into the weights first",
                       path, json_is_string(na) ? json_string_value(na) : "true");
    json_t *ra = json_object_get(cfg, "reshape_activations");
    if (json_is_string(ra) && strcmp(json_string_value(ra), "none") != 0)
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: reshape_activations '%s' is not supported", path, json_string_value(ra));
    return LM_OK;
}

lm_status lm_sae_load(const char *dir, lm_sae **out) {
    *out = NULL;
    char path[4096], wpath[4096];
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    char *text = NULL;
    size_t len = 0;
    lm_status st = lm_read_file(path, &text, &len);
    if (st) return st;
    json_error_t jerr;
    json_t *cfg = json_loadb(text, len, 0, &jerr);
    free(text);
    if (!cfg) return lm_fail(LM_ERR_FORMAT, "%s: invalid JSON at line %d: %s", path, jerr.line, jerr.text);
    lm_sae_arch arch = LM_SAE_RELU;
    size_t d_in = 0, d_sae = 0, k = 0;
    int apply = 1, rescale = 0;
    lm_sae *s = NULL;
    lm_safetensors *w = NULL;
    if ((st = parse_cfg(path, cfg, &arch, &d_in, &d_sae, &k, &apply, &rescale))) goto fail;
    if ((st = sae_alloc(arch, d_in, d_sae, &s))) goto fail;
    s->k = k;
    s->apply_b_dec_to_input = apply;
    const char *mn = meta_str(cfg, "model_name", NULL), *hn = meta_str(cfg, "hook_name", "hook_point");
    if ((mn && !(s->model_name = lm_strdup(mn))) || (hn && !(s->hook_name = lm_strdup(hn)))) {
        st = lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    json_t *cs = meta_get(cfg, "context_size"), *pb = meta_get(cfg, "prepend_bos");
    s->context_size = json_is_integer(cs) && json_integer_value(cs) > 0 ? (long)json_integer_value(cs) : 0;
    s->prepend_bos = json_is_boolean(pb) ? json_is_true(pb) : 1;

    snprintf(wpath, sizeof wpath, "%s/sae_weights.safetensors", dir);
    if ((st = lm_safetensors_open(wpath, &w))) goto fail;
    if ((st = read_tensor(w, wpath, "W_enc", d_in, d_sae, s->W_enc)) ||
        (st = read_tensor(w, wpath, "W_dec", d_sae, d_in, s->W_dec)) ||
        (st = read_tensor(w, wpath, "b_enc", d_sae, 0, s->b_enc)) ||
        (st = read_tensor(w, wpath, "b_dec", d_in, 0, s->b_dec)))
        goto fail;
    if (arch == LM_SAE_JUMPRELU && (st = read_tensor(w, wpath, "threshold", d_sae, 0, s->threshold))) goto fail;
    if (rescale) {
        /* SAELens then ranks and scales latents by pre_i * ||W_dec,i|| and decodes with W_dec,i / ||W_dec,i||:
         * the same SAE as W_enc[:, i] *= n_i, b_enc[i] *= n_i, W_dec[i] /= n_i without rescaling. */
        for (size_t i = 0; i < d_sae; i++) {
            double ss = 0;
            for (size_t j = 0; j < d_in; j++) ss += (double)s->W_dec[i * d_in + j] * s->W_dec[i * d_in + j];
            float nrm = (float)sqrt(ss);
            if (nrm < 1e-8f) nrm = 1e-8f; /* SAELens' clamp */
            for (size_t j = 0; j < d_in; j++) {
                s->W_dec[i * d_in + j] /= nrm;
                s->W_enc[j * d_sae + i] *= nrm;
            }
            s->b_enc[i] *= nrm;
        }
    }
    lm_safetensors_close(w);
    json_decref(cfg);
    *out = s;
    return LM_OK;
fail:
    lm_safetensors_close(w);
    lm_sae_free(s);
    json_decref(cfg);
    return st;
}

lm_status lm_sae_load_sparsity(const char *dir, size_t d_sae, float **out) {
    *out = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/sparsity.safetensors", dir);
    lm_safetensors *w;
    lm_status st = lm_safetensors_open(path, &w);
    if (st) return st;
    float *d = lm_malloc(d_sae, sizeof *d);
    if (!d)
        st = lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    else
        st = read_tensor(w, path, "sparsity", d_sae, 0, d);
    lm_safetensors_close(w);
    if (st) {
        free(d);
        return st;
    }
    *out = d;
    return LM_OK;
}
