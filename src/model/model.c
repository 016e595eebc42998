/* model.c - model lifetime: loading by format, freeing, random initialisation, parameter count. */
#include "lumen/model.h"

#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

static int has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

lm_status lm_model_load(const char *path, lm_model **out) {
    *out = NULL;
    lm_mapped_file f;
    lm_status st = lm_map_file(path, &f);
    if (st != LM_OK) return st;
    int is_gguf = f.size >= 4 && memcmp(f.data, "GGUF", 4) == 0;
    lm_unmap_file(&f);
    if (is_gguf) return lm_load_gguf_model(path, out);
    if (has_suffix(path, ".bin")) return lm_load_llama2c(path, out);
    return lm_fail(LM_ERR_UNSUPPORTED,
                   "%s: unknown model format (expected a GGUF file or a llama2.c .bin checkpoint)", path);
}

void lm_model_free(lm_model *m) {
    if (!m) return;
    free(m->layers);
    free(m->owned);
    free(m->path);
    free(m->format);
    free(m->tokenizer_error);
    lm_tokenizer_free(m->tokenizer);
    lm_gguf_close(m->gguf);
    lm_unmap_file(&m->map);
    free(m);
}

size_t lm_model_param_count(const lm_model *m) { return m->n_params; }

lm_status lm_config_check(const lm_config *c, const char *path) {
    if (c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->vocab_size <= 0 || c->seq_len <= 0)
        return lm_fail(LM_ERR_FORMAT,
                       "%s: invalid model sizes (dim %d, hidden %d, layers %d, heads %d, kv heads %d, vocab %d, "
                       "context %d): all must be positive",
                       path, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size, c->seq_len);
    if (c->dim > (1 << 16) || c->hidden_dim > (1 << 18) || c->n_layers > 1024 || c->n_heads > 1024 ||
        c->vocab_size > (1 << 22) || c->head_dim > 4096)
        return lm_fail(LM_ERR_FORMAT, "%s: absurd model sizes (dim %d, hidden %d, layers %d, heads %d, vocab %d)", path,
                       c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->vocab_size);
    if (c->n_heads % c->n_kv_heads != 0)
        return lm_fail(LM_ERR_FORMAT, "%s: %d attention heads is not a multiple of %d key/value heads", path,
                       c->n_heads, c->n_kv_heads);
    if (c->head_dim <= 0 || c->head_dim % 2 != 0)
        return lm_fail(LM_ERR_FORMAT, "%s: head dimension %d must be positive and even", path, c->head_dim);
    return LM_OK;
}

/* A weight view of the next r*c floats at *p, advancing *p. */
static lm_weight take_f32(float **p, size_t r, size_t c) {
    lm_weight w = {LM_F32, r, c, *p};
    *p += r * c;
    return w;
}

lm_status lm_model_init_random(const lm_config *cfg_in, uint64_t seed, float std, lm_model **out) {
    *out = NULL;
    lm_config c = *cfg_in;
    if (c.head_dim == 0 && c.n_heads > 0) c.head_dim = c.dim / c.n_heads;
    if (c.norm_eps == 0) c.norm_eps = 1e-5f;
    if (c.rope_theta == 0) c.rope_theta = 10000.0f;
    lm_status st = lm_config_check(&c, "random model");
    if (st != LM_OK) return st;
    size_t d = (size_t)c.dim, hd = (size_t)c.head_dim, qd = (size_t)c.n_heads * hd, kvd = (size_t)c.n_kv_heads * hd;
    size_t hid = (size_t)c.hidden_dim, V = (size_t)c.vocab_size, L = (size_t)c.n_layers;
    size_t per_layer = 2 * d + qd * d + 2 * kvd * d + d * qd + 3 * hid * d;
    size_t total = V * d + d + L * per_layer + (c.tied_embeddings ? 0 : V * d);
    lm_model *m = calloc(1, sizeof *m);
    float *w = lm_aligned_alloc(total, sizeof(float));
    lm_layer *layers = calloc(L, sizeof *layers);
    if (!m || !w || !layers) {
        free(m);
        free(w);
        free(layers);
        return lm_fail(LM_ERR_NOMEM, "random model: out of memory for %zu parameters", total);
    }
    lm_rng rng;
    lm_rng_seed(&rng, seed);
    for (size_t i = 0; i < total; i++) w[i] = std * lm_rng_normal(&rng);
    m->cfg = c;
    m->owned = w;
    m->layers = layers;
    m->path = lm_strdup("random");
    m->format = lm_strdup("random");
    float *p = w;
    m->tok_embeddings = take_f32(&p, V, d);
    for (size_t i = 0; i < d; i++) p[i] = 1.0f;
    m->final_norm = p;
    p += d;
    for (size_t l = 0; l < L; l++) {
        lm_layer *ly = &layers[l];
        for (size_t i = 0; i < 2 * d; i++) p[i] = 1.0f;
        ly->attn_norm = p;
        ly->ffn_norm = p + d;
        p += 2 * d;
        ly->wq = take_f32(&p, qd, d);
        ly->wk = take_f32(&p, kvd, d);
        ly->wv = take_f32(&p, kvd, d);
        ly->wo = take_f32(&p, d, qd);
        ly->w_gate = take_f32(&p, hid, d);
        ly->w_up = take_f32(&p, hid, d);
        ly->w_down = take_f32(&p, d, hid);
    }
    if (c.tied_embeddings)
        m->output = m->tok_embeddings;
    else
        m->output = take_f32(&p, V, d);
    m->n_params = total;
    if (!m->path || !m->format) {
        lm_model_free(m);
        return lm_fail(LM_ERR_NOMEM, "random model: out of memory");
    }
    *out = m;
    return LM_OK;
}
