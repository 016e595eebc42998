/* forward.c - the llama-family forward pass over a batch of new tokens with a KV cache. */
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

struct lm_state {
    int max_ctx, max_batch, pos;
    size_t kvdim;
    float *kcache, *vcache; /* [n_layers, max_ctx, kvdim] */
    float *x, *xb, *q, *att, *hb, *hb2; /* activations for max_batch tokens */
    float *scratch;                      /* attention scores */
};

lm_status lm_state_new(const lm_model *m, int max_ctx, int max_batch, lm_state **out) {
    *out = NULL;
    const lm_config *c = &m->cfg;
    if (max_ctx <= 0 || max_ctx > c->seq_len) max_ctx = c->seq_len;
    if (max_batch <= 0) max_batch = 1;
    if (max_batch > max_ctx) max_batch = max_ctx;
    lm_state *s = calloc(1, sizeof *s);
    if (!s) return lm_fail(LM_ERR_NOMEM, "out of memory for inference state");
    s->max_ctx = max_ctx;
    s->max_batch = max_batch;
    size_t B = (size_t)max_batch, d = (size_t)c->dim, qd = (size_t)c->n_heads * c->head_dim;
    s->kvdim = (size_t)c->n_kv_heads * c->head_dim;
    size_t cache = (size_t)c->n_layers * (size_t)max_ctx * s->kvdim;
    s->kcache = lm_aligned_alloc(cache, sizeof(float));
    s->vcache = lm_aligned_alloc(cache, sizeof(float));
    s->x = lm_aligned_alloc(B * d, sizeof(float));
    s->xb = lm_aligned_alloc(B * (d > qd ? d : qd), sizeof(float));
    s->q = lm_aligned_alloc(B * qd, sizeof(float));
    s->att = lm_aligned_alloc(B * qd, sizeof(float));
    s->hb = lm_aligned_alloc(B * (size_t)c->hidden_dim, sizeof(float));
    s->hb2 = lm_aligned_alloc(B * (size_t)c->hidden_dim, sizeof(float));
    s->scratch = lm_aligned_alloc(lm_attention_scratch(B, (size_t)c->n_heads, (size_t)max_ctx), sizeof(float));
    if (!s->kcache || !s->vcache || !s->x || !s->xb || !s->q || !s->att || !s->hb || !s->hb2 || !s->scratch) {
        lm_state_free(s);
        return lm_fail(LM_ERR_NOMEM, "out of memory for inference state (context %d, batch %d)", max_ctx, max_batch);
    }
    *out = s;
    return LM_OK;
}

void lm_state_free(lm_state *s) {
    if (!s) return;
    free(s->kcache);
    free(s->vcache);
    free(s->x);
    free(s->xb);
    free(s->q);
    free(s->att);
    free(s->hb);
    free(s->hb2);
    free(s->scratch);
    free(s);
}

void lm_state_reset(lm_state *s) { s->pos = 0; }
int lm_state_pos(const lm_state *s) { return s->pos; }

/* x += y, n elements */
static void add_inplace(float *x, const float *y, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

static lm_status forward_chunk(const lm_model *m, lm_state *s, const int32_t *tokens, int n, float *logits,
                               int all_logits) {
    const lm_config *c = &m->cfg;
    size_t T = (size_t)n, d = (size_t)c->dim, hd = (size_t)c->head_dim, nh = (size_t)c->n_heads;
    size_t nkv = (size_t)c->n_kv_heads, kvd = s->kvdim, hid = (size_t)c->hidden_dim;
    size_t pos0 = (size_t)s->pos;
    lm_status st;
    for (size_t t = 0; t < T; t++) lm_embedding_row(s->x + t * d, &m->tok_embeddings, (size_t)tokens[t]);
    for (int l = 0; l < c->n_layers; l++) {
        const lm_layer *ly = &m->layers[l];
        float *kc = s->kcache + (size_t)l * (size_t)s->max_ctx * kvd;
        float *vc = s->vcache + (size_t)l * (size_t)s->max_ctx * kvd;
        lm_rmsnorm(s->xb, s->x, ly->attn_norm, T, d, c->norm_eps);
        /* keys and values are written straight into the cache rows of their positions */
        if ((st = lm_linear(s->q, s->xb, T, &ly->wq)) != LM_OK) return st;
        if ((st = lm_linear(kc + pos0 * kvd, s->xb, T, &ly->wk)) != LM_OK) return st;
        if ((st = lm_linear(vc + pos0 * kvd, s->xb, T, &ly->wv)) != LM_OK) return st;
        lm_rope(s->q, T, nh, hd, pos0, c->rope_theta, c->rope_style);
        lm_rope(kc + pos0 * kvd, T, nkv, hd, pos0, c->rope_theta, c->rope_style);
        lm_attention(s->att, s->q, kc, vc, T, pos0, nh, nkv, hd, s->scratch);
        if ((st = lm_linear(s->xb, s->att, T, &ly->wo)) != LM_OK) return st;
        add_inplace(s->x, s->xb, T * d);
        lm_rmsnorm(s->xb, s->x, ly->ffn_norm, T, d, c->norm_eps);
        if ((st = lm_linear(s->hb, s->xb, T, &ly->w_gate)) != LM_OK) return st;
        if ((st = lm_linear(s->hb2, s->xb, T, &ly->w_up)) != LM_OK) return st;
        lm_swiglu(s->hb, s->hb, s->hb2, T * hid);
        if ((st = lm_linear(s->xb, s->hb, T, &ly->w_down)) != LM_OK) return st;
        add_inplace(s->x, s->xb, T * d);
    }
    s->pos += n;
    if (!logits) return LM_OK;
    if (all_logits) {
        lm_rmsnorm(s->xb, s->x, m->final_norm, T, d, c->norm_eps);
        return lm_linear(logits, s->xb, T, &m->output);
    }
    lm_rmsnorm(s->xb, s->x + (T - 1) * d, m->final_norm, 1, d, c->norm_eps);
    return lm_linear(logits, s->xb, 1, &m->output);
}

lm_status lm_forward(const lm_model *m, lm_state *s, const int32_t *tokens, int n, float *logits, int all_logits) {
    if (n <= 0) return lm_fail(LM_ERR_ARG, "forward: no tokens");
    if ((long)s->pos + n > s->max_ctx)
        return lm_fail(LM_ERR_RANGE, "context overflow: %d tokens at position %d exceed the context of %d", n, s->pos,
                       s->max_ctx);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_size)
            return lm_fail(LM_ERR_ARG, "token id %d is outside the vocabulary (0..%d)", tokens[i],
                           m->cfg.vocab_size - 1);
    size_t V = (size_t)m->cfg.vocab_size;
    for (int done = 0; done < n;) {
        int chunk = n - done < s->max_batch ? n - done : s->max_batch;
        int last = done + chunk == n;
        float *lg = NULL;
        if (logits && all_logits) lg = logits + (size_t)done * V;
        else if (logits && last) lg = logits;
        lm_status st = forward_chunk(m, s, tokens + done, chunk, lg, all_logits);
        if (st != LM_OK) return st;
        done += chunk;
    }
    return LM_OK;
}
