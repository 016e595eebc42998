/* load_gguf.c - builds a llama-family model from a GGUF file: hyper-parameters from the
 * metadata, weights as views into the mapping in their stored dtype. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

typedef struct loader {
    const lm_gguf *g;
    const char *path;
    float *owned;   /* f32 copies of norm vectors stored in other dtypes */
    size_t owned_used, owned_cap;
    size_t n_params;
} loader;

static lm_status want_matrix(loader *ld, const char *name, size_t rows, size_t cols, lm_weight *out) {
    const lm_gguf_tensor *t = lm_gguf_find_tensor(ld->g, name);
    if (!t) return lm_fail(LM_ERR_FORMAT, "%s: missing tensor '%s'", ld->path, name);
    if (t->n_dims != 2 || t->ne[0] != cols || t->ne[1] != rows)
        return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s' has shape [%llu, %llu] (%u dims), expected [%zu, %zu]", ld->path,
                       name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], t->n_dims, cols, rows);
    if (t->dtype >= LM_DTYPE_COUNT)
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: tensor '%s' has type %s, which lumen cannot compute with yet", ld->path,
                       name, lm_ggml_type_name(t->ggml_type));
    if (t->dtype == LM_F32 && (uintptr_t)t->data % sizeof(float) != 0)
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: F32 tensor '%s' is not 4-byte aligned (general.alignment %zu)",
                       ld->path, name, ld->g->alignment);
    *out = (lm_weight){t->dtype, rows, cols, t->data};
    ld->n_params += rows * cols;
    return LM_OK;
}

static lm_status want_vector(loader *ld, const char *name, size_t n, const float **out) {
    const lm_gguf_tensor *t = lm_gguf_find_tensor(ld->g, name);
    if (!t) return lm_fail(LM_ERR_FORMAT, "%s: missing tensor '%s'", ld->path, name);
    if (t->n_dims != 1 || t->ne[0] != n)
        return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s' has shape [%llu] (%u dims), expected [%zu]", ld->path, name,
                       (unsigned long long)t->ne[0], t->n_dims, n);
    if (t->dtype >= LM_DTYPE_COUNT || lm_dtype_block(t->dtype) != 1)
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: norm tensor '%s' has type %s; expected F32, F16 or BF16", ld->path,
                       name, lm_ggml_type_name(t->ggml_type));
    ld->n_params += n;
    if (t->dtype == LM_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        *out = t->data;
        return LM_OK;
    }
    if (ld->owned_used + n > ld->owned_cap) return lm_fail(LM_ERR_NOMEM, "%s: norm buffer exhausted", ld->path);
    float *dst = ld->owned + ld->owned_used;
    lm_dequantize_row(t->dtype, t->data, dst, n);
    ld->owned_used += n;
    *out = dst;
    return LM_OK;
}

static lm_status get_int(const loader *ld, const char *key, int deflt, int *out) {
    if (!lm_gguf_find(ld->g, key)) {
        if (deflt < 0) return lm_fail(LM_ERR_FORMAT, "%s: missing metadata key '%s'", ld->path, key);
        *out = deflt;
        return LM_OK;
    }
    uint32_t v;
    lm_status st = lm_gguf_get_u32(ld->g, key, &v);
    if (st != LM_OK) return st;
    if (v > (1u << 30)) return lm_fail(LM_ERR_FORMAT, "%s: metadata '%s' = %u is absurd", ld->path, key, v);
    *out = (int)v;
    return LM_OK;
}

static lm_status get_float(const loader *ld, const char *key, float deflt, float *out) {
    if (!lm_gguf_find(ld->g, key)) {
        *out = deflt;
        return LM_OK;
    }
    return lm_gguf_get_f32(ld->g, key, out);
}

static lm_status load_llama(loader *ld, lm_model *m) {
    lm_config *c = &m->cfg;
    lm_status st;
    int rope_dims = 0;
    c->arch = LM_ARCH_LLAMA;
    snprintf(c->family, sizeof c->family, "llama");
    c->rope_style = LM_ROPE_INTERLEAVED; /* llama.cpp's converter permutes Q/K for interleaved pairs */
    if ((st = get_int(ld, "llama.embedding_length", -1, &c->dim)) != LM_OK) return st;
    if ((st = get_int(ld, "llama.block_count", -1, &c->n_layers)) != LM_OK) return st;
    if ((st = get_int(ld, "llama.feed_forward_length", -1, &c->hidden_dim)) != LM_OK) return st;
    if ((st = get_int(ld, "llama.attention.head_count", -1, &c->n_heads)) != LM_OK) return st;
    if ((st = get_int(ld, "llama.attention.head_count_kv", c->n_heads, &c->n_kv_heads)) != LM_OK) return st;
    if ((st = get_int(ld, "llama.context_length", 2048, &c->seq_len)) != LM_OK) return st;
    if ((st = get_float(ld, "llama.attention.layer_norm_rms_epsilon", 1e-5f, &c->norm_eps)) != LM_OK) return st;
    if ((st = get_float(ld, "llama.rope.freq_base", 10000.0f, &c->rope_theta)) != LM_OK) return st;
    const lm_gguf_tensor *emb = lm_gguf_find_tensor(ld->g, "token_embd.weight");
    if (!emb) return lm_fail(LM_ERR_FORMAT, "%s: missing tensor 'token_embd.weight'", ld->path);
    if (emb->n_dims != 2 || emb->ne[1] > (1u << 22))
        return lm_fail(LM_ERR_FORMAT, "%s: tensor 'token_embd.weight' has an invalid shape", ld->path);
    c->vocab_size = (int)emb->ne[1];
    c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    if ((st = get_int(ld, "llama.attention.key_length", c->head_dim, &c->head_dim)) != LM_OK) return st;
    if ((st = get_int(ld, "llama.rope.dimension_count", c->head_dim, &rope_dims)) != LM_OK) return st;
    if ((st = lm_config_check(c, ld->path)) != LM_OK) return st;
    if (rope_dims != c->head_dim)
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: partial rotary embedding (%d of %d dims) is not supported", ld->path,
                       rope_dims, c->head_dim);
    if (c->rope_theta <= 0) return lm_fail(LM_ERR_FORMAT, "%s: rope frequency base must be positive", ld->path);
    if (lm_gguf_find(ld->g, "llama.expert_count"))
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: mixture-of-experts llama models are not supported yet", ld->path);

    size_t d = (size_t)c->dim, hd = (size_t)c->head_dim, qd = (size_t)c->n_heads * hd;
    size_t kvd = (size_t)c->n_kv_heads * hd, hid = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t L = (size_t)c->n_layers;
    ld->owned_cap = (2 * L + 1) * d;
    ld->owned = lm_malloc(ld->owned_cap, sizeof(float));
    m->layers = calloc(L, sizeof *m->layers);
    if (!ld->owned || !m->layers) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", ld->path);
    m->owned = ld->owned;
    if ((st = want_matrix(ld, "token_embd.weight", V, d, &m->tok_embeddings)) != LM_OK) return st;
    if ((st = want_vector(ld, "output_norm.weight", d, &m->final_norm)) != LM_OK) return st;
    if (lm_gguf_find_tensor(ld->g, "output.weight")) {
        if ((st = want_matrix(ld, "output.weight", V, d, &m->output)) != LM_OK) return st;
    } else {
        m->output = m->tok_embeddings;
        c->tied_embeddings = 1;
    }
    char name[96];
    for (size_t l = 0; l < L; l++) {
        lm_layer *ly = &m->layers[l];
        struct {
            const char *suffix;
            lm_weight *w;
            size_t rows, cols;
        } mats[] = {
            {"attn_q", &ly->wq, qd, d},           {"attn_k", &ly->wk, kvd, d},    {"attn_v", &ly->wv, kvd, d},
            {"attn_output", &ly->wo, d, qd},      {"ffn_gate", &ly->w_gate, hid, d}, {"ffn_up", &ly->w_up, hid, d},
            {"ffn_down", &ly->w_down, d, hid},
        };
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) {
            snprintf(name, sizeof name, "blk.%zu.%s.weight", l, mats[i].suffix);
            if ((st = want_matrix(ld, name, mats[i].rows, mats[i].cols, mats[i].w)) != LM_OK) return st;
        }
        snprintf(name, sizeof name, "blk.%zu.attn_norm.weight", l);
        if ((st = want_vector(ld, name, d, &ly->attn_norm)) != LM_OK) return st;
        snprintf(name, sizeof name, "blk.%zu.ffn_norm.weight", l);
        if ((st = want_vector(ld, name, d, &ly->ffn_norm)) != LM_OK) return st;
    }
    return LM_OK;
}

lm_status lm_load_gguf_model(const char *path, lm_model **out) {
    *out = NULL;
    lm_model *m = calloc(1, sizeof *m);
    if (!m) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    lm_status st = lm_gguf_open(path, &m->gguf);
    if (st != LM_OK) {
        free(m);
        return st;
    }
    m->path = lm_strdup(path);
    m->format = lm_strdup("gguf");
    if (!m->path || !m->format) {
        lm_model_free(m);
        return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    }
    loader ld = {.g = m->gguf, .path = path};
    lm_gguf_str arch;
    st = lm_gguf_get_str(m->gguf, "general.architecture", &arch);
    if (st == LM_OK) {
        if (arch.len == 5 && memcmp(arch.ptr, "llama", 5) == 0)
            st = load_llama(&ld, m);
        else
            st = lm_fail(LM_ERR_UNSUPPORTED, "%s: architecture '%.*s' is not supported (supported: llama)", path,
                         (int)(arch.len > 64 ? 64 : arch.len), arch.ptr);
    }
    if (st == LM_OK && lm_gguf_find(m->gguf, "tokenizer.ggml.tokens")) {
        st = lm_tokenizer_from_gguf(m->gguf, &m->tokenizer);
        if (st == LM_ERR_UNSUPPORTED) {
            /* the weights are still usable (info, scoring token ids); keep why there is no tokenizer */
            m->tokenizer_error = lm_strdup(lm_errmsg());
            st = LM_OK;
        } else if (st == LM_OK && lm_tokenizer_vocab_size(m->tokenizer) > m->cfg.vocab_size)
            st = lm_fail(LM_ERR_FORMAT, "%s: tokenizer has %d tokens but the embedding has %d rows", path,
                         lm_tokenizer_vocab_size(m->tokenizer), m->cfg.vocab_size);
    }
    if (st != LM_OK) {
        if (!m->owned) free(ld.owned);
        lm_model_free(m);
        return st;
    }
    m->n_params = ld.n_params;
    if ((st = lm_model_finish(m)) != LM_OK) {
        lm_model_free(m);
        return st;
    }
    *out = m;
    return LM_OK;
}
