/* load_hf.c - Hugging Face model directories: config.json + safetensors (single or sharded),
 * for the gpt2, llama, mistral and qwen2 families. Weights are views into the mapping in
 * their stored dtype, except GPT-2's Conv1D matrices, which are stored [in, out] and are
 * transposed once at load. */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model_internal.h"

typedef struct hf_loader {
    lm_model *m;
    const char *dir;
    char cfg_path[4096];
    json_t *cfg;
    const char *prefix; /* "transformer." or "" for gpt2; "model." for llama */
    size_t n_params;
    char *linear;       /* [n_layers] flags: linear blocks (config.json's lumen_linear_layers), or NULL */
} hf_loader;

static lm_status cfg_int(hf_loader *ld, const char *key, long deflt, long lo, long hi, int *out) {
    json_t *v = json_object_get(ld->cfg, key);
    if (!v || json_is_null(v)) {
        if (deflt == LONG_MIN) return lm_fail(LM_ERR_FORMAT, "%s: missing '%s'", ld->cfg_path, key);
        *out = (int)deflt;
        return LM_OK;
    }
    if (!json_is_integer(v)) return lm_fail(LM_ERR_FORMAT, "%s: '%s' must be an integer", ld->cfg_path, key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return lm_fail(LM_ERR_FORMAT, "%s: '%s' = %lld is out of range [%ld, %ld]", ld->cfg_path, key, (long long)x,
                       lo, hi);
    *out = (int)x;
    return LM_OK;
}

static lm_status num_value(hf_loader *ld, json_t *obj, const char *key, double deflt, double *out) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = deflt;
        return LM_OK;
    }
    if (!json_is_number(v)) return lm_fail(LM_ERR_FORMAT, "%s: '%s' must be a number", ld->cfg_path, key);
    *out = json_number_value(v);
    return LM_OK;
}

static lm_status cfg_float(hf_loader *ld, const char *key, double deflt, float *out) {
    double d;
    lm_status st = num_value(ld, ld->cfg, key, deflt, &d);
    if (st == LM_OK) *out = (float)d;
    return st;
}

static int cfg_bool(hf_loader *ld, const char *key, int deflt) {
    json_t *v = json_object_get(ld->cfg, key);
    if (!v || !json_is_boolean(v)) return deflt;
    return json_is_true(v);
}

static const char *cfg_str(hf_loader *ld, const char *key) {
    json_t *v = json_object_get(ld->cfg, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* A tensor by name (with the loader's prefix tried first), of the given shape. */
static lm_status find(hf_loader *ld, const char *name, int n_dims, const uint64_t *shape, const lm_st_tensor **out) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", ld->prefix, name);
    const lm_safetensors *file = NULL;
    const lm_st_tensor *t = lm_st_set_find(ld->m->st, full, &file);
    if (!t && ld->prefix[0]) t = lm_st_set_find(ld->m->st, name, &file);
    if (!t) return lm_fail(LM_ERR_FORMAT, "%s: missing tensor '%s'", ld->dir, full);
    int ok = t->n_dims == n_dims;
    for (int i = 0; ok && i < n_dims; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        char got[128] = "", want[128] = "";
        for (int i = 0; i < t->n_dims && i < 4; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu", i ? ", " : "",
                     (unsigned long long)t->shape[i]);
        for (int i = 0; i < n_dims; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%llu", i ? ", " : "",
                     (unsigned long long)shape[i]);
        return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s' in %s has shape [%s], expected [%s]", ld->dir, t->name,
                       file->file.path, got, want);
    }
    if (lm_st_to_dtype(t->dtype) >= LM_DTYPE_COUNT)
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s; lumen computes with F32, F16 and BF16",
                       ld->dir, t->name, lm_st_dtype_name(t->dtype));
    *out = t;
    return LM_OK;
}

static lm_status matrix(hf_loader *ld, const char *name, size_t rows, size_t cols, lm_weight *w) {
    uint64_t shape[2] = {rows, cols};
    const lm_st_tensor *t;
    lm_status st = find(ld, name, 2, shape, &t);
    if (st != LM_OK) return st;
    lm_dtype dt = lm_st_to_dtype(t->dtype);
    if ((uintptr_t)t->data % lm_dtype_block_bytes(dt) != 0) {
        /* an odd header length can misalign the data; copy rather than read unaligned */
        void *copy = lm_malloc(t->nbytes, 1);
        if (!copy) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", ld->dir);
        memcpy(copy, t->data, t->nbytes);
        if ((st = lm_model_own(ld->m, copy)) != LM_OK) return st;
        *w = (lm_weight){dt, rows, cols, copy};
    } else {
        *w = (lm_weight){dt, rows, cols, t->data};
    }
    ld->n_params += rows * cols;
    return LM_OK;
}

/* GPT-2's Conv1D weight stored [in, out]: transposed (same dtype) into a buffer the model owns. */
static lm_status matrix_t(hf_loader *ld, const char *name, size_t in, size_t out, lm_weight *w) {
    uint64_t shape[2] = {in, out};
    const lm_st_tensor *t;
    lm_status st = find(ld, name, 2, shape, &t);
    if (st != LM_OK) return st;
    lm_dtype dt = lm_st_to_dtype(t->dtype);
    size_t es = lm_dtype_block_bytes(dt);
    uint8_t *buf = lm_malloc(in * out, es);
    if (!buf) return lm_fail(LM_ERR_NOMEM, "%s: out of memory transposing '%s'", ld->dir, name);
    const uint8_t *src = t->data;
    for (size_t i = 0; i < in; i++)
        for (size_t o = 0; o < out; o++) memcpy(buf + (o * in + i) * es, src + (i * out + o) * es, es);
    if ((st = lm_model_own(ld->m, buf)) != LM_OK) return st;
    *w = (lm_weight){dt, out, in, buf};
    ld->n_params += in * out;
    return LM_OK;
}

/* A vector as f32 (converted into an owned buffer unless it already is aligned f32). */
static lm_status vector(hf_loader *ld, const char *name, size_t n, const float **out) {
    uint64_t shape[1] = {n};
    const lm_st_tensor *t;
    lm_status st = find(ld, name, 1, shape, &t);
    if (st != LM_OK) return st;
    ld->n_params += n;
    lm_dtype dt = lm_st_to_dtype(t->dtype);
    if (dt == LM_F32 && (uintptr_t)t->data % sizeof(float) == 0) {
        *out = t->data;
        return LM_OK;
    }
    float *buf = lm_malloc(n, sizeof(float));
    if (!buf) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", ld->dir);
    lm_dequantize_row(dt, t->data, buf, n);
    if ((st = lm_model_own(ld->m, buf)) != LM_OK) return st;
    *out = buf;
    return LM_OK;
}

static int has_tensor(hf_loader *ld, const char *name) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", ld->prefix, name);
    return lm_st_set_find(ld->m->st, full, NULL) || lm_st_set_find(ld->m->st, name, NULL);
}

/* config.json's "lumen_linear_layers": the blocks lumen prune --linearize replaced by an affine
 * map (a lumen extension; transformers ignores the key and cannot load such a checkpoint). */
static lm_status parse_linear_layers(hf_loader *ld, int L) {
    json_t *v = json_object_get(ld->cfg, "lumen_linear_layers");
    if (!v || json_is_null(v)) return LM_OK;
    if (!json_is_array(v))
        return lm_fail(LM_ERR_FORMAT, "%s: 'lumen_linear_layers' must be an array of block indices", ld->cfg_path);
    ld->linear = calloc((size_t)L, 1);
    if (!ld->linear) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", ld->cfg_path);
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) >= L)
            return lm_fail(LM_ERR_FORMAT, "%s: 'lumen_linear_layers'[%zu] must be a block index in 0 .. %d",
                           ld->cfg_path, i, L - 1);
        json_int_t l = json_integer_value(e);
        if (ld->linear[l])
            return lm_fail(LM_ERR_FORMAT, "%s: 'lumen_linear_layers' lists block %lld twice", ld->cfg_path,
                           (long long)l);
        ld->linear[l] = 1;
    }
    return LM_OK;
}

/* A linear block's weight [dim, dim] and bias [dim], named base + "linear.weight" / ".bias". */
static lm_status load_linear_block(hf_loader *ld, const char *base, lm_layer *ly) {
    size_t d = (size_t)ld->m->cfg.dim;
    char n[200];
    const char *parts[] = {"weight", "bias"};
    for (int i = 0; i < 2; i++) {
        snprintf(n, sizeof n, "%slinear.%s", base, parts[i]);
        if (!has_tensor(ld, n))
            return lm_fail(LM_ERR_FORMAT,
                           "%s: missing tensor '%s%s': %s lists the block in 'lumen_linear_layers', so its linear "
                           "map must be stored",
                           ld->dir, ld->prefix, n, ld->cfg_path);
    }
    snprintf(n, sizeof n, "%slinear.weight", base);
    lm_status st = matrix(ld, n, d, d, &ly->lin);
    if (st != LM_OK) return st;
    snprintf(n, sizeof n, "%slinear.bias", base);
    return vector(ld, n, d, &ly->lin_b);
}

static lm_status load_gpt2(hf_loader *ld) {
    lm_config *c = &ld->m->cfg;
    lm_status st;
    c->arch = LM_ARCH_GPT2;
    c->norm = LM_NORM_LAYER;
    c->act = LM_ACT_GELU_TANH;
    c->learned_pos = 1;
    int n_inner;
    if ((st = cfg_int(ld, "n_embd", LONG_MIN, 1, 1 << 16, &c->dim)) != LM_OK) return st;
    if ((st = cfg_int(ld, "n_layer", LONG_MIN, 1, 1024, &c->n_layers)) != LM_OK) return st;
    if ((st = cfg_int(ld, "n_head", LONG_MIN, 1, 1024, &c->n_heads)) != LM_OK) return st;
    if ((st = cfg_int(ld, "n_positions", 1024, 1, 1 << 20, &c->seq_len)) != LM_OK) return st;
    if ((st = cfg_int(ld, "vocab_size", LONG_MIN, 1, 1 << 22, &c->vocab_size)) != LM_OK) return st;
    if ((st = cfg_int(ld, "n_inner", 4L * c->dim, 1, 1 << 18, &n_inner)) != LM_OK) return st;
    if ((st = cfg_float(ld, "layer_norm_epsilon", 1e-5, &c->norm_eps)) != LM_OK) return st;
    c->hidden_dim = n_inner;
    c->n_kv_heads = c->n_heads;
    c->head_dim = c->dim / c->n_heads;
    c->tied_embeddings = cfg_bool(ld, "tie_word_embeddings", 1);
    const char *act = cfg_str(ld, "activation_function");
    if (act && strcmp(act, "gelu_new") && strcmp(act, "gelu_pytorch_tanh") && strcmp(act, "gelu_fast"))
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: activation_function '%s' is not supported (gelu_new is)", ld->cfg_path,
                       act);
    if (cfg_bool(ld, "scale_attn_by_inverse_layer_idx", 0) || cfg_bool(ld, "reorder_and_upcast_attn", 0) ||
        !cfg_bool(ld, "scale_attn_weights", 1))
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: non-default GPT-2 attention scaling options are not supported",
                       ld->cfg_path);
    if (c->head_dim * c->n_heads != c->dim)
        return lm_fail(LM_ERR_FORMAT, "%s: n_embd %d is not a multiple of n_head %d", ld->cfg_path, c->dim, c->n_heads);
    if ((st = lm_config_check(c, ld->cfg_path)) != LM_OK) return st;
    ld->prefix = lm_st_set_find(ld->m->st, "transformer.wte.weight", NULL) ? "transformer." : "";
    size_t d = (size_t)c->dim, V = (size_t)c->vocab_size, hid = (size_t)c->hidden_dim, L = (size_t)c->n_layers;
    lm_model *m = ld->m;
    m->layers = calloc(L, sizeof *m->layers);
    if (!m->layers) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", ld->dir);
    if ((st = matrix(ld, "wte.weight", V, d, &m->tok_embeddings)) != LM_OK) return st;
    if ((st = matrix(ld, "wpe.weight", (size_t)c->seq_len, d, &m->pos_embeddings)) != LM_OK) return st;
    if ((st = vector(ld, "ln_f.weight", d, &m->final_norm)) != LM_OK) return st;
    if ((st = vector(ld, "ln_f.bias", d, &m->final_norm_b)) != LM_OK) return st;
    if ((st = parse_linear_layers(ld, c->n_layers)) != LM_OK) return st;
    char n[128];
    for (size_t l = 0; l < L; l++) {
        lm_layer *ly = &m->layers[l];
        lm_weight qkv;
        const float *bqkv;
        if (ld->linear && ld->linear[l]) {
            snprintf(n, sizeof n, "h.%zu.", l);
            if ((st = load_linear_block(ld, n, ly)) != LM_OK) return st;
            continue;
        }
#define NAME(s) (snprintf(n, sizeof n, "h.%zu.%s", l, s), n)
        if ((st = vector(ld, NAME("ln_1.weight"), d, &ly->attn_norm)) != LM_OK) return st;
        if ((st = vector(ld, NAME("ln_1.bias"), d, &ly->attn_norm_b)) != LM_OK) return st;
        if ((st = matrix_t(ld, NAME("attn.c_attn.weight"), d, 3 * d, &qkv)) != LM_OK) return st;
        if ((st = vector(ld, NAME("attn.c_attn.bias"), 3 * d, &bqkv)) != LM_OK) return st;
        if ((st = matrix_t(ld, NAME("attn.c_proj.weight"), d, d, &ly->wo)) != LM_OK) return st;
        if ((st = vector(ld, NAME("attn.c_proj.bias"), d, &ly->bo)) != LM_OK) return st;
        if ((st = vector(ld, NAME("ln_2.weight"), d, &ly->ffn_norm)) != LM_OK) return st;
        if ((st = vector(ld, NAME("ln_2.bias"), d, &ly->ffn_norm_b)) != LM_OK) return st;
        if ((st = matrix_t(ld, NAME("mlp.c_fc.weight"), d, hid, &ly->w_up)) != LM_OK) return st;
        if ((st = vector(ld, NAME("mlp.c_fc.bias"), hid, &ly->b_up)) != LM_OK) return st;
        if ((st = matrix_t(ld, NAME("mlp.c_proj.weight"), hid, d, &ly->w_down)) != LM_OK) return st;
        if ((st = vector(ld, NAME("mlp.c_proj.bias"), d, &ly->b_down)) != LM_OK) return st;
#undef NAME
        /* the fused projection, transposed to [3d, d], is three consecutive row blocks */
        size_t rb = lm_dtype_row_bytes(qkv.dtype, d);
        ly->wq = (lm_weight){qkv.dtype, d, d, qkv.data};
        ly->wk = (lm_weight){qkv.dtype, d, d, (const uint8_t *)qkv.data + d * rb};
        ly->wv = (lm_weight){qkv.dtype, d, d, (const uint8_t *)qkv.data + 2 * d * rb};
        ly->bq = bqkv;
        ly->bk = bqkv + d;
        ly->bv = bqkv + 2 * d;
    }
    if (c->tied_embeddings || !has_tensor(ld, "lm_head.weight")) {
        m->output = m->tok_embeddings;
        c->tied_embeddings = 1;
    } else {
        const char *saved = ld->prefix;
        ld->prefix = "";
        st = matrix(ld, "lm_head.weight", V, d, &m->output);
        ld->prefix = saved;
        if (st != LM_OK) return st;
    }
    return LM_OK;
}

static lm_status parse_rope(hf_loader *ld) {
    lm_config *c = &ld->m->cfg;
    lm_status st;
    /* transformers 5 keeps theta and scaling in "rope_parameters"; older configs use rope_theta
     * and rope_scaling */
    json_t *rp = json_object_get(ld->cfg, "rope_parameters");
    json_t *rs = json_object_get(ld->cfg, "rope_scaling");
    double theta;
    if ((st = num_value(ld, ld->cfg, "rope_theta", 10000.0, &theta)) != LM_OK) return st;
    if (json_is_object(rp) && json_object_get(rp, "rope_theta"))
        if ((st = num_value(ld, rp, "rope_theta", theta, &theta)) != LM_OK) return st;
    if (!(theta > 0)) return lm_fail(LM_ERR_FORMAT, "%s: rope_theta must be positive", ld->cfg_path);
    c->rope_theta = (float)theta;
    json_t *scaling = json_is_object(rs) ? rs : json_is_object(rp) ? rp : NULL;
    if (!scaling) return LM_OK;
    json_t *tv = json_object_get(scaling, "rope_type");
    if (!tv) tv = json_object_get(scaling, "type");
    const char *type = json_is_string(tv) ? json_string_value(tv) : "default";
    double f;
    if (!strcmp(type, "default")) return LM_OK;
    if ((st = num_value(ld, scaling, "factor", 1.0, &f)) != LM_OK) return st;
    if (!(f > 0)) return lm_fail(LM_ERR_FORMAT, "%s: rope scaling factor must be positive", ld->cfg_path);
    c->rope_scaling.factor = (float)f;
    if (!strcmp(type, "linear")) {
        c->rope_scaling.kind = LM_ROPE_SCALING_LINEAR;
        return LM_OK;
    }
    if (!strcmp(type, "llama3")) {
        double lo, hi, orig;
        if ((st = num_value(ld, scaling, "low_freq_factor", 1.0, &lo)) != LM_OK) return st;
        if ((st = num_value(ld, scaling, "high_freq_factor", 4.0, &hi)) != LM_OK) return st;
        if ((st = num_value(ld, scaling, "original_max_position_embeddings", 8192, &orig)) != LM_OK) return st;
        if (!(hi > lo) || !(lo > 0) || !(orig >= 1))
            return lm_fail(LM_ERR_FORMAT, "%s: invalid llama3 rope scaling parameters", ld->cfg_path);
        c->rope_scaling.kind = LM_ROPE_SCALING_LLAMA3;
        c->rope_scaling.low_freq_factor = (float)lo;
        c->rope_scaling.high_freq_factor = (float)hi;
        c->rope_scaling.original_max_positions = (int)orig;
        return LM_OK;
    }
    return lm_fail(LM_ERR_UNSUPPORTED, "%s: rope scaling type '%s' is not supported (default, linear, llama3 are)",
                   ld->cfg_path, type);
}

static lm_status load_llama_family(hf_loader *ld, const char *family) {
    lm_config *c = &ld->m->cfg;
    lm_status st;
    c->arch = LM_ARCH_LLAMA;
    c->norm = LM_NORM_RMS;
    c->act = LM_ACT_SWIGLU;
    c->rope_style = LM_ROPE_HALF;
    if ((st = cfg_int(ld, "hidden_size", LONG_MIN, 1, 1 << 16, &c->dim)) != LM_OK) return st;
    if ((st = cfg_int(ld, "intermediate_size", LONG_MIN, 1, 1 << 18, &c->hidden_dim)) != LM_OK) return st;
    if ((st = cfg_int(ld, "num_hidden_layers", LONG_MIN, 1, 1024, &c->n_layers)) != LM_OK) return st;
    if ((st = cfg_int(ld, "num_attention_heads", LONG_MIN, 1, 1024, &c->n_heads)) != LM_OK) return st;
    if ((st = cfg_int(ld, "num_key_value_heads", c->n_heads, 1, 1024, &c->n_kv_heads)) != LM_OK) return st;
    if ((st = cfg_int(ld, "head_dim", c->dim / c->n_heads, 1, 4096, &c->head_dim)) != LM_OK) return st;
    if ((st = cfg_int(ld, "vocab_size", LONG_MIN, 1, 1 << 22, &c->vocab_size)) != LM_OK) return st;
    if ((st = cfg_int(ld, "max_position_embeddings", 2048, 1, 1 << 24, &c->seq_len)) != LM_OK) return st;
    if ((st = cfg_float(ld, "rms_norm_eps", 1e-6, &c->norm_eps)) != LM_OK) return st;
    if ((st = parse_rope(ld)) != LM_OK) return st;
    c->tied_embeddings = cfg_bool(ld, "tie_word_embeddings", 0);
    const char *act = cfg_str(ld, "hidden_act");
    if (act && strcmp(act, "silu"))
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: hidden_act '%s' is not supported (silu is)", ld->cfg_path, act);
    int qkv_bias = !strcmp(family, "qwen2") || cfg_bool(ld, "attention_bias", 0);
    int o_bias = strcmp(family, "qwen2") && cfg_bool(ld, "attention_bias", 0);
    if (cfg_bool(ld, "mlp_bias", 0))
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: mlp_bias is not supported yet", ld->cfg_path);
    if (!strcmp(family, "mistral") || !strcmp(family, "qwen2")) {
        /* sliding-window attention only differs beyond the window: cap the context at it */
        int window = 0;
        int use = strcmp(family, "qwen2") ? 1 : cfg_bool(ld, "use_sliding_window", 0);
        if (use && (st = cfg_int(ld, "sliding_window", 0, 0, 1 << 24, &window)) != LM_OK) return st;
        if (use && window > 0 && window < c->seq_len) c->seq_len = window;
    }
    if ((st = lm_config_check(c, ld->cfg_path)) != LM_OK) return st;
    ld->prefix = "model.";
    size_t d = (size_t)c->dim, V = (size_t)c->vocab_size, hid = (size_t)c->hidden_dim, L = (size_t)c->n_layers;
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    lm_model *m = ld->m;
    m->layers = calloc(L, sizeof *m->layers);
    if (!m->layers) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", ld->dir);
    if ((st = matrix(ld, "embed_tokens.weight", V, d, &m->tok_embeddings)) != LM_OK) return st;
    if ((st = vector(ld, "norm.weight", d, &m->final_norm)) != LM_OK) return st;
    if ((st = parse_linear_layers(ld, c->n_layers)) != LM_OK) return st;
    char n[160];
    for (size_t l = 0; l < L; l++) {
        lm_layer *ly = &m->layers[l];
        if (ld->linear && ld->linear[l]) {
            snprintf(n, sizeof n, "layers.%zu.", l);
            if ((st = load_linear_block(ld, n, ly)) != LM_OK) return st;
            continue;
        }
#define NAME(s) (snprintf(n, sizeof n, "layers.%zu.%s", l, s), n)
        if ((st = vector(ld, NAME("input_layernorm.weight"), d, &ly->attn_norm)) != LM_OK) return st;
        if ((st = vector(ld, NAME("post_attention_layernorm.weight"), d, &ly->ffn_norm)) != LM_OK) return st;
        if ((st = matrix(ld, NAME("self_attn.q_proj.weight"), qd, d, &ly->wq)) != LM_OK) return st;
        if ((st = matrix(ld, NAME("self_attn.k_proj.weight"), kvd, d, &ly->wk)) != LM_OK) return st;
        if ((st = matrix(ld, NAME("self_attn.v_proj.weight"), kvd, d, &ly->wv)) != LM_OK) return st;
        if ((st = matrix(ld, NAME("self_attn.o_proj.weight"), d, qd, &ly->wo)) != LM_OK) return st;
        if ((st = matrix(ld, NAME("mlp.gate_proj.weight"), hid, d, &ly->w_gate)) != LM_OK) return st;
        if ((st = matrix(ld, NAME("mlp.up_proj.weight"), hid, d, &ly->w_up)) != LM_OK) return st;
        if ((st = matrix(ld, NAME("mlp.down_proj.weight"), d, hid, &ly->w_down)) != LM_OK) return st;
        if (qkv_bias) {
            if ((st = vector(ld, NAME("self_attn.q_proj.bias"), qd, &ly->bq)) != LM_OK) return st;
            if ((st = vector(ld, NAME("self_attn.k_proj.bias"), kvd, &ly->bk)) != LM_OK) return st;
            if ((st = vector(ld, NAME("self_attn.v_proj.bias"), kvd, &ly->bv)) != LM_OK) return st;
        }
        if (o_bias && (st = vector(ld, NAME("self_attn.o_proj.bias"), d, &ly->bo)) != LM_OK) return st;
#undef NAME
    }
    if (c->tied_embeddings) {
        m->output = m->tok_embeddings;
    } else {
        ld->prefix = "";
        if ((st = matrix(ld, "lm_head.weight", V, d, &m->output)) != LM_OK) return st;
    }
    return LM_OK;
}

static int file_exists(const char *dir, const char *name) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* The tokenizer stored beside the weights, if any; an unsupported one is remembered, not fatal. */
static lm_status load_dir_tokenizer(lm_model *m, const char *dir) {
    char a[4096], b[4096];
    lm_status st = LM_OK;
    if (file_exists(dir, "tokenizer.json")) {
        snprintf(a, sizeof a, "%s/tokenizer.json", dir);
        st = lm_tokenizer_load_json(a, &m->tokenizer);
    } else if (file_exists(dir, "vocab.json") && file_exists(dir, "merges.txt")) {
        snprintf(a, sizeof a, "%s/vocab.json", dir);
        snprintf(b, sizeof b, "%s/merges.txt", dir);
        st = lm_tokenizer_load_gpt2_files(a, b, &m->tokenizer);
    } else {
        return LM_OK;
    }
    if (st == LM_ERR_UNSUPPORTED) {
        m->tokenizer_error = lm_strdup(lm_errmsg());
        return LM_OK;
    }
    if (st == LM_OK && lm_tokenizer_vocab_size(m->tokenizer) > m->cfg.vocab_size)
        return lm_fail(LM_ERR_FORMAT, "%s: tokenizer has %d tokens but the embedding has %d rows", dir,
                       lm_tokenizer_vocab_size(m->tokenizer), m->cfg.vocab_size);
    return st;
}

lm_status lm_load_hf(const char *dir, lm_model **out) {
    *out = NULL;
    hf_loader ld = {0};
    ld.dir = dir;
    ld.prefix = "";
    snprintf(ld.cfg_path, sizeof ld.cfg_path, "%s/config.json", dir);
    char *text = NULL;
    size_t len = 0;
    lm_status st = lm_read_file(ld.cfg_path, &text, &len);
    if (st != LM_OK) return st;
    json_error_t jerr;
    ld.cfg = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!ld.cfg || !json_is_object(ld.cfg)) {
        st = ld.cfg ? lm_fail(LM_ERR_FORMAT, "%s: not a JSON object", ld.cfg_path)
                    : lm_fail(LM_ERR_FORMAT, "%s: invalid JSON at line %d: %s", ld.cfg_path, jerr.line, jerr.text);
        json_decref(ld.cfg);
        return st;
    }
    const char *type = cfg_str(&ld, "model_type");
    if (!type) {
        json_decref(ld.cfg);
        return lm_fail(LM_ERR_FORMAT, "%s: no 'model_type'", ld.cfg_path);
    }
    int gpt2 = !strcmp(type, "gpt2");
    if (!gpt2 && strcmp(type, "llama") && strcmp(type, "mistral") && strcmp(type, "qwen2")) {
        st = lm_fail(LM_ERR_UNSUPPORTED, "%s: model_type '%s' is not supported (gpt2, llama, mistral, qwen2 are)",
                     ld.cfg_path, type);
        json_decref(ld.cfg);
        return st;
    }
    lm_model *m = calloc(1, sizeof *m);
    if (!m) {
        json_decref(ld.cfg);
        return lm_fail(LM_ERR_NOMEM, "%s: out of memory", dir);
    }
    ld.m = m;
    snprintf(m->cfg.family, sizeof m->cfg.family, "%s", type);
    m->path = lm_strdup(dir);
    m->format = lm_strdup("hf");
    st = m->path && m->format ? LM_OK : lm_fail(LM_ERR_NOMEM, "%s: out of memory", dir);
    if (st == LM_OK) st = lm_st_set_open_dir(dir, &m->st);
    if (st == LM_OK) st = gpt2 ? load_gpt2(&ld) : load_llama_family(&ld, type);
    json_decref(ld.cfg);
    free(ld.linear);
    if (st == LM_OK) st = load_dir_tokenizer(m, dir);
    if (st == LM_OK) {
        m->n_params = ld.n_params;
        st = lm_model_finish(m);
    }
    if (st != LM_OK) {
        lm_model_free(m);
        return st;
    }
    *out = m;
    return LM_OK;
}
