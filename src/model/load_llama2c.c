/* load_llama2c.c - llama2.c checkpoints: a 7 x int32 header, then f32 weights in a fixed order.
 * A negative vocab_size in the header means the classifier is stored separately. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

/* Weight view of r x c f32 values at *off, advancing *off. */
static lm_weight take(const uint8_t *base, size_t *off, size_t r, size_t c) {
    lm_weight w = {LM_F32, r, c, base + *off};
    *off += r * c * sizeof(float);
    return w;
}

lm_status lm_load_llama2c(const char *path, lm_model **out) {
    *out = NULL;
    lm_model *m = calloc(1, sizeof *m);
    if (!m) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    lm_status st = lm_map_file(path, &m->map);
    if (st != LM_OK) {
        free(m);
        return st;
    }
    const uint8_t *data = m->map.data;
    size_t size = m->map.size;
    if (size < 28) {
        lm_model_free(m);
        return lm_fail(LM_ERR_FORMAT, "%s: truncated llama2.c header (%zu bytes, need 28)", path, size);
    }
    int32_t h[7];
    memcpy(h, data, sizeof h);
    lm_config *c = &m->cfg;
    c->arch = LM_ARCH_LLAMA;
    snprintf(c->family, sizeof c->family, "llama");
    c->dim = h[0];
    c->hidden_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    int shared = h[5] > 0;
    c->vocab_size = h[5] == INT32_MIN ? 0 : abs(h[5]);
    c->seq_len = h[6];
    c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->rope_style = LM_ROPE_INTERLEAVED;
    c->tied_embeddings = shared;
    st = lm_config_check(c, path);
    if (st == LM_OK && c->head_dim * c->n_heads != c->dim)
        st = lm_fail(LM_ERR_FORMAT, "%s: dim %d is not a multiple of %d heads", path, c->dim, c->n_heads);
    if (st == LM_OK && c->seq_len > (1 << 20))
        st = lm_fail(LM_ERR_FORMAT, "%s: absurd context length %d", path, c->seq_len);
    if (st != LM_OK) {
        lm_model_free(m);
        return st;
    }
    /* every size below is bounded by the limits in lm_config_check, so no product overflows 64 bits */
    size_t d = (size_t)c->dim, hd = (size_t)c->head_dim, qd = (size_t)c->n_heads * hd;
    size_t kvd = (size_t)c->n_kv_heads * hd, hid = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t L = (size_t)c->n_layers, S = (size_t)c->seq_len;
    size_t n_floats = V * d + L * (2 * d + qd * d + 2 * kvd * d + qd * d + 3 * hid * d) + d + S * hd;
    if (!shared) n_floats += V * d;
    size_t expect = 28 + n_floats * sizeof(float);
    if (size != expect) {
        st = lm_fail(LM_ERR_FORMAT,
                       "%s: size mismatch: header (dim %d, hidden %d, layers %d, heads %d/%d, vocab %d, context %d) "
                       "implies %zu bytes, file has %zu",
                       path, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size, c->seq_len,
                       expect, size);
        lm_model_free(m);
        return st;
    }
    m->layers = calloc(L, sizeof *m->layers);
    m->path = lm_strdup(path);
    m->format = lm_strdup("llama2c");
    if (!m->layers || !m->path || !m->format) {
        lm_model_free(m);
        return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t off = 28;
    m->tok_embeddings = take(data, &off, V, d);
    /* llama2.c stores each kind of tensor for all layers together */
    for (size_t l = 0; l < L; l++) m->layers[l].attn_norm = (const float *)take(data, &off, 1, d).data;
    for (size_t l = 0; l < L; l++) m->layers[l].wq = take(data, &off, qd, d);
    for (size_t l = 0; l < L; l++) m->layers[l].wk = take(data, &off, kvd, d);
    for (size_t l = 0; l < L; l++) m->layers[l].wv = take(data, &off, kvd, d);
    for (size_t l = 0; l < L; l++) m->layers[l].wo = take(data, &off, d, qd);
    for (size_t l = 0; l < L; l++) m->layers[l].ffn_norm = (const float *)take(data, &off, 1, d).data;
    for (size_t l = 0; l < L; l++) m->layers[l].w_gate = take(data, &off, hid, d);
    for (size_t l = 0; l < L; l++) m->layers[l].w_down = take(data, &off, d, hid);
    for (size_t l = 0; l < L; l++) m->layers[l].w_up = take(data, &off, hid, d);
    m->final_norm = (const float *)take(data, &off, 1, d).data;
    off += S * hd * sizeof(float); /* the legacy freq_cis_real/imag tables: RoPE is recomputed */
    m->output = shared ? m->tok_embeddings : take(data, &off, V, d);
    m->n_params = n_floats - S * hd;
    if ((st = lm_model_finish(m)) != LM_OK) {
        lm_model_free(m);
        return st;
    }
    *out = m;
    return LM_OK;
}
