/* model.c - model lifetime: loading by format, freeing, random initialisation, parameter count. */
#define _POSIX_C_SOURCE 200809L
#include "lumen/model.h"

#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

static int has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

lm_status lm_model_load(const char *path, lm_model **out) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) return lm_load_hf(path, out);
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
    for (size_t i = 0; i < m->n_owned_bufs; i++) free(m->owned_bufs[i]);
    free(m->owned_bufs);
    free(m->inv_freq);
    lm_st_set_close(m->st);
    free(m->path);
    free(m->format);
    free(m->tokenizer_error);
    lm_tokenizer_free(m->tokenizer);
    lm_gguf_close(m->gguf);
    lm_unmap_file(&m->map);
    free(m);
}

size_t lm_model_param_count(const lm_model *m) { return m->n_params; }

size_t lm_layer_param_count(const lm_model *m, int l) {
    const lm_layer *ly = &m->layers[l];
    const size_t d = (size_t)m->cfg.dim;
    if (lm_layer_is_linear(ly)) return ly->lin.rows * ly->lin.cols + (ly->lin_b ? ly->lin.rows : 0);
    size_t n = 0;
    const lm_weight *mats[] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down};
    for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++)
        if (mats[i]->data) n += mats[i]->rows * mats[i]->cols;
    n += d * ((ly->attn_norm != NULL) + (ly->ffn_norm != NULL) + (ly->attn_norm_b != NULL) + (ly->ffn_norm_b != NULL));
    if (ly->bq) n += ly->wq.rows;
    if (ly->bk) n += ly->wk.rows;
    if (ly->bv) n += ly->wv.rows;
    if (ly->bo) n += d;
    if (ly->b_up) n += ly->w_up.rows;
    if (ly->b_down) n += d;
    return n;
}

int lm_model_linear_count(const lm_model *m) {
    int k = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) k += lm_layer_is_linear(&m->layers[l]);
    return k;
}

lm_status lm_model_set_linear_block(lm_model *m, int l, const float *W, const float *b) {
    const size_t d = (size_t)m->cfg.dim;
    if (l < 0 || l >= m->cfg.n_layers)
        return lm_fail(LM_ERR_ARG, "%s: block %d does not exist (the model has blocks 0 .. %d)", m->path, l,
                       m->cfg.n_layers - 1);
    float *w = lm_aligned_alloc(d * d + d, sizeof(float));
    if (!w) return lm_fail(LM_ERR_NOMEM, "%s: out of memory for a linear block", m->path);
    memcpy(w, W, d * d * sizeof(float));
    if (b) memcpy(w + d * d, b, d * sizeof(float));
    else memset(w + d * d, 0, d * sizeof(float));
    lm_status st = lm_model_own(m, w);
    if (st != LM_OK) return st;
    size_t before = lm_layer_param_count(m, l);
    lm_layer *ly = &m->layers[l];
    memset(ly, 0, sizeof *ly);
    ly->lin = (lm_weight){LM_F32, d, d, w};
    ly->lin_b = w + d * d;
    size_t after = lm_layer_param_count(m, l);
    m->n_params = m->n_params >= before ? m->n_params - before + after : after;
    return LM_OK;
}

lm_status lm_model_own(lm_model *m, void *buf) {
    void **nb = realloc(m->owned_bufs, (m->n_owned_bufs + 1) * sizeof *nb);
    if (!nb) {
        free(buf);
        return lm_fail(LM_ERR_NOMEM, "%s: out of memory", m->path ? m->path : "model");
    }
    m->owned_bufs = nb;
    m->owned_bufs[m->n_owned_bufs++] = buf;
    return LM_OK;
}

lm_status lm_model_finish(lm_model *m) {
    lm_config *c = &m->cfg;
    if (c->learned_pos) return LM_OK;
    size_t half = (size_t)c->head_dim / 2;
    m->inv_freq = lm_malloc(half ? half : 1, sizeof(float));
    if (!m->inv_freq) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", m->path);
    lm_rope_inv_freq(m->inv_freq, (size_t)c->head_dim, c->rope_theta);
    const lm_rope_scaling *rs = &c->rope_scaling;
    if (rs->kind == LM_ROPE_SCALING_LINEAR) {
        for (size_t i = 0; i < half; i++) m->inv_freq[i] /= rs->factor;
    } else if (rs->kind == LM_ROPE_SCALING_LLAMA3) {
        /* Llama 3.1: long wavelengths are slowed by factor, short ones kept, a smooth blend between */
        const double pi = 3.14159265358979323846;
        double old = (double)rs->original_max_positions;
        double low_wl = old / rs->low_freq_factor, high_wl = old / rs->high_freq_factor;
        for (size_t i = 0; i < half; i++) {
            float f = m->inv_freq[i];
            float wl = (float)(2.0 * pi) / f;
            float scaled = wl > (float)low_wl ? f / rs->factor : f;
            if (!(wl < (float)high_wl) && !(wl > (float)low_wl)) {
                float smooth = ((float)old / wl - rs->low_freq_factor) / (rs->high_freq_factor - rs->low_freq_factor);
                scaled = (1.0f - smooth) * scaled / rs->factor + smooth * scaled;
            }
            m->inv_freq[i] = scaled;
        }
    }
    return LM_OK;
}

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

/* A weight view of the next r*c floats at *p, filled from N(0, std^2), advancing *p. */
static lm_weight take_f32(float **p, size_t r, size_t c, float std, lm_rng *rng) {
    lm_weight w = {LM_F32, r, c, *p};
    for (size_t i = 0; i < r * c; i++) (*p)[i] = std * lm_rng_normal(rng);
    *p += r * c;
    return w;
}

/* The next n floats at *p set to v, advancing *p. */
static const float *take_vec(float **p, size_t n, float v) {
    float *out = *p;
    for (size_t i = 0; i < n; i++) out[i] = v;
    *p += n;
    return out;
}

lm_status lm_model_init_random(const lm_config *cfg_in, uint64_t seed, float std, lm_model **out) {
    *out = NULL;
    lm_config c = *cfg_in;
    if (c.head_dim == 0 && c.n_heads > 0) c.head_dim = c.dim / c.n_heads;
    if (c.norm_eps == 0) c.norm_eps = 1e-5f;
    if (c.rope_theta == 0) c.rope_theta = 10000.0f;
    int gpt2 = c.arch == LM_ARCH_GPT2;
    if (!c.family[0]) snprintf(c.family, sizeof c.family, "%s", gpt2 ? "gpt2" : "llama");
    if (gpt2) {
        c.norm = LM_NORM_LAYER;
        c.act = LM_ACT_GELU_TANH;
        c.learned_pos = 1;
    }
    lm_status st = lm_config_check(&c, "random model");
    if (st != LM_OK) return st;
    size_t d = (size_t)c.dim, hd = (size_t)c.head_dim, qd = (size_t)c.n_heads * hd, kvd = (size_t)c.n_kv_heads * hd;
    size_t hid = (size_t)c.hidden_dim, V = (size_t)c.vocab_size, L = (size_t)c.n_layers, S = (size_t)c.seq_len;
    size_t mats = qd * d + 2 * kvd * d + d * qd + (gpt2 ? 2 : 3) * hid * d;
    size_t vecs = gpt2 ? 4 * d + qd + 2 * kvd + d + hid + d : 2 * d; /* norms (+ biases) */
    size_t total = V * d + (gpt2 ? S * d + 2 * d : d) + L * (mats + vecs) + (c.tied_embeddings ? 0 : V * d);
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
    m->cfg = c;
    m->owned = w;
    m->layers = layers;
    m->path = lm_strdup("random");
    m->format = lm_strdup("random");
    float *p = w;
    m->tok_embeddings = take_f32(&p, V, d, std, &rng);
    if (gpt2) m->pos_embeddings = take_f32(&p, S, d, std, &rng);
    m->final_norm = take_vec(&p, d, 1.0f);
    if (gpt2) m->final_norm_b = take_vec(&p, d, 0.0f);
    for (size_t l = 0; l < L; l++) {
        lm_layer *ly = &layers[l];
        ly->attn_norm = take_vec(&p, d, 1.0f);
        ly->ffn_norm = take_vec(&p, d, 1.0f);
        ly->wq = take_f32(&p, qd, d, std, &rng);
        ly->wk = take_f32(&p, kvd, d, std, &rng);
        ly->wv = take_f32(&p, kvd, d, std, &rng);
        ly->wo = take_f32(&p, d, qd, std, &rng);
        if (!gpt2) ly->w_gate = take_f32(&p, hid, d, std, &rng);
        ly->w_up = take_f32(&p, hid, d, std, &rng);
        ly->w_down = take_f32(&p, d, hid, std, &rng);
        if (gpt2) {
            ly->attn_norm_b = take_vec(&p, d, 0.0f);
            ly->ffn_norm_b = take_vec(&p, d, 0.0f);
            ly->bq = take_vec(&p, qd, 0.0f);
            ly->bk = take_vec(&p, kvd, 0.0f);
            ly->bv = take_vec(&p, kvd, 0.0f);
            ly->bo = take_vec(&p, d, 0.0f);
            ly->b_up = take_vec(&p, hid, 0.0f);
            ly->b_down = take_vec(&p, d, 0.0f);
        }
    }
    if (c.tied_embeddings)
        m->output = m->tok_embeddings;
    else
        m->output = take_f32(&p, V, d, std, &rng);
    m->n_params = total;
    if (!m->path || !m->format || lm_model_finish(m) != LM_OK) {
        lm_model_free(m);
        return lm_fail(LM_ERR_NOMEM, "random model: out of memory");
    }
    *out = m;
    return LM_OK;
}
