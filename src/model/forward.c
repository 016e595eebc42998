/* forward.c - the transformer forward pass (llama and gpt2 families) over a batch of
 * equal-length sequences with a KV cache per sequence, and the hook points along it. */
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

typedef struct hook {
    lm_hook_fn fn;
    void *ud;
    char *name;
    struct hook *next;
} hook;

struct lm_state {
    int max_ctx, max_tokens, max_seqs, pos;
    size_t kvdim;
    float *kcache, *vcache;             /* [n_layers, max_seqs, max_ctx, kvdim] */
    float *x, *xb, *q, *att, *hb, *hb2; /* activations for max_tokens tokens */
    float *scratch;                     /* attention scores */
    int n_layers;
    const lm_model *model;              /* for naming hooks; the model outlives the state */
    hook **hooks;                       /* [(n_layers + 1) * LM_HOOK_POINT_COUNT] lists, NULL if none */
    int n_hooks;
};

lm_status lm_state_new_batch(const lm_model *m, int max_ctx, int max_tokens, int max_seqs, lm_state **out) {
    *out = NULL;
    const lm_config *c = &m->cfg;
    if (max_ctx <= 0 || max_ctx > c->seq_len) max_ctx = c->seq_len;
    if (max_seqs <= 0) max_seqs = 1;
    if (max_tokens <= 0) max_tokens = 1;
    if (max_tokens < max_seqs) max_tokens = max_seqs;
    if (max_tokens > max_ctx * max_seqs) max_tokens = max_ctx * max_seqs;
    lm_state *s = calloc(1, sizeof *s);
    if (!s) return lm_fail(LM_ERR_NOMEM, "out of memory for inference state");
    s->max_ctx = max_ctx;
    s->max_tokens = max_tokens;
    s->max_seqs = max_seqs;
    s->n_layers = c->n_layers;
    s->model = m;
    size_t B = (size_t)max_tokens, d = (size_t)c->dim, qd = (size_t)c->n_heads * c->head_dim;
    s->kvdim = (size_t)c->n_kv_heads * c->head_dim;
    size_t cache = (size_t)c->n_layers * (size_t)max_seqs * (size_t)max_ctx * s->kvdim;
    size_t per_seq = (B + (size_t)max_seqs - 1) / (size_t)max_seqs;
    s->kcache = lm_aligned_alloc(cache, sizeof(float));
    s->vcache = lm_aligned_alloc(cache, sizeof(float));
    s->x = lm_aligned_alloc(B * d, sizeof(float));
    s->xb = lm_aligned_alloc(B * (d > qd ? d : qd), sizeof(float));
    s->q = lm_aligned_alloc(B * qd, sizeof(float));
    s->att = lm_aligned_alloc(B * qd, sizeof(float));
    size_t hid = (size_t)c->hidden_dim > s->kvdim ? (size_t)c->hidden_dim : s->kvdim; /* hb holds K/V of a batch too */
    s->hb = lm_aligned_alloc(B * hid, sizeof(float));
    s->hb2 = lm_aligned_alloc(B * hid, sizeof(float));
    s->scratch = lm_aligned_alloc(lm_attention_scratch(B > per_seq ? B : per_seq, (size_t)c->n_heads, (size_t)max_ctx),
                                  sizeof(float));
    s->hooks = calloc((size_t)(c->n_layers + 1) * LM_HOOK_POINT_COUNT, sizeof *s->hooks);
    if (!s->kcache || !s->vcache || !s->x || !s->xb || !s->q || !s->att || !s->hb || !s->hb2 || !s->scratch ||
        !s->hooks) {
        lm_state_free(s);
        return lm_fail(LM_ERR_NOMEM, "out of memory for inference state (context %d, %d tokens, %d sequences)",
                       max_ctx, max_tokens, max_seqs);
    }
    *out = s;
    return LM_OK;
}

lm_status lm_state_new(const lm_model *m, int max_ctx, int max_batch, lm_state **out) {
    return lm_state_new_batch(m, max_ctx, max_batch, 1, out);
}

void lm_state_clear_hooks(lm_state *s) {
    if (!s->hooks) return;
    for (size_t i = 0; i < (size_t)(s->n_layers + 1) * LM_HOOK_POINT_COUNT; i++) {
        hook *h = s->hooks[i];
        while (h) {
            hook *next = h->next;
            free(h->name);
            free(h);
            h = next;
        }
        s->hooks[i] = NULL;
    }
    s->n_hooks = 0;
}

void lm_state_free(lm_state *s) {
    if (!s) return;
    lm_state_clear_hooks(s);
    free(s->hooks);
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

static const struct {
    const char *suffix;
    lm_hook_point point;
} k_block_hooks[] = {
    {"hook_resid_pre", LM_HOOK_RESID_PRE}, {"hook_attn_out", LM_HOOK_ATTN_OUT},
    {"hook_resid_mid", LM_HOOK_RESID_MID}, {"hook_mlp_out", LM_HOOK_MLP_OUT},
    {"hook_resid_post", LM_HOOK_RESID_POST},
};

lm_status lm_hook_parse(const lm_model *m, const char *name, lm_hook_point *point, int *layer) {
    if (!strcmp(name, "hook_embed")) {
        *point = LM_HOOK_EMBED;
        *layer = -1;
        return LM_OK;
    }
    if (!strcmp(name, "hook_pos_embed")) {
        if (!m->cfg.learned_pos)
            return lm_fail(LM_ERR_ARG, "hook 'hook_pos_embed': this %s model has no learned position embeddings",
                           m->cfg.family);
        *point = LM_HOOK_POS_EMBED;
        *layer = -1;
        return LM_OK;
    }
    if (!strcmp(name, "ln_final.hook_normalized")) {
        *point = LM_HOOK_LN_FINAL;
        *layer = -1;
        return LM_OK;
    }
    if (!strncmp(name, "blocks.", 7)) {
        const char *p = name + 7;
        long L = 0;
        int digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 6) {
            L = L * 10 + (*p++ - '0');
            digits++;
        }
        if (digits > 0 && *p == '.') {
            for (size_t i = 0; i < sizeof k_block_hooks / sizeof k_block_hooks[0]; i++)
                if (!strcmp(p + 1, k_block_hooks[i].suffix)) {
                    if (L >= m->cfg.n_layers)
                        return lm_fail(LM_ERR_ARG, "hook '%s': layer %ld out of range (the model has %d layers)",
                                       name, L, m->cfg.n_layers);
                    lm_hook_point hp = k_block_hooks[i].point;
                    if (lm_layer_is_linear(&m->layers[L]) && hp != LM_HOOK_RESID_PRE && hp != LM_HOOK_RESID_POST)
                        return lm_fail(LM_ERR_ARG,
                                       "hook '%s': block %ld is a linear block (no attention or MLP); it has "
                                       "hook_resid_pre and hook_resid_post only",
                                       name, L);
                    *point = k_block_hooks[i].point;
                    *layer = (int)L;
                    return LM_OK;
                }
        }
    }
    return lm_fail(LM_ERR_ARG,
                   "unknown hook point '%s' (known: hook_embed, hook_pos_embed, blocks.L.hook_resid_pre, "
                   "blocks.L.hook_attn_out, blocks.L.hook_resid_mid, blocks.L.hook_mlp_out, "
                   "blocks.L.hook_resid_post, ln_final.hook_normalized)",
                   name);
}

static size_t hook_slot(int layer, lm_hook_point p) { return (size_t)(layer + 1) * LM_HOOK_POINT_COUNT + p; }

lm_status lm_state_add_hook(lm_state *s, const char *name, lm_hook_fn fn, void *ud) {
    lm_hook_point p;
    int layer;
    lm_status st = lm_hook_parse(s->model, name, &p, &layer);
    if (st != LM_OK) return st;
    hook *h = calloc(1, sizeof *h);
    if (!h || !(h->name = lm_strdup(name))) {
        free(h);
        return lm_fail(LM_ERR_NOMEM, "out of memory adding hook '%s'", name);
    }
    h->fn = fn;
    h->ud = ud;
    hook **slot = &s->hooks[hook_slot(layer, p)];
    while (*slot) slot = &(*slot)->next;
    *slot = h;
    s->n_hooks++;
    return LM_OK;
}

typedef struct batch {
    int n_seq, n_tok, pos0;
    const int32_t *tokens;
} batch;

static lm_status run_hooks(lm_state *s, int layer, lm_hook_point p, const batch *b, int d, float *act) {
    if (!s->n_hooks) return LM_OK;
    for (hook *h = s->hooks[hook_slot(layer, p)]; h; h = h->next) {
        lm_hook_info info = {h->name, p, layer, b->n_seq, b->n_tok, d, b->pos0, b->tokens};
        lm_status st = h->fn(h->ud, &info, act);
        if (st != LM_OK) return st;
    }
    return LM_OK;
}

static int has_hooks(const lm_state *s, int layer, lm_hook_point p) {
    return s->n_hooks && s->hooks[hook_slot(layer, p)] != NULL;
}

static void add_inplace(float *x, const float *y, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

static void add_bias(float *x, const float *b, size_t n, size_t d) {
    if (!b) return;
#pragma omp parallel for schedule(static) if (n * d > 65536)
    for (size_t t = 0; t < n; t++)
        for (size_t i = 0; i < d; i++) x[t * d + i] += b[i];
}

static void norm(const lm_model *m, float *out, const float *x, const float *w, const float *b, size_t n) {
    const lm_config *c = &m->cfg;
    if (c->norm == LM_NORM_LAYER)
        lm_layernorm(out, x, w, b, n, (size_t)c->dim, c->norm_eps);
    else
        lm_rmsnorm(out, x, w, n, (size_t)c->dim, c->norm_eps);
}

static lm_status linear_bias(float *out, const float *x, size_t n, const lm_weight *W, const float *b) {
    lm_status st = lm_linear(out, x, n, W);
    if (st == LM_OK) add_bias(out, b, n, W->rows);
    return st;
}

static lm_status forward_core(const lm_model *m, lm_state *s, const batch *b, float *logits, int all_logits) {
    const lm_config *c = &m->cfg;
    const size_t T = (size_t)b->n_tok, NS = (size_t)b->n_seq, N = NS * T;
    const size_t d = (size_t)c->dim, hd = (size_t)c->head_dim, nh = (size_t)c->n_heads;
    const size_t nkv = (size_t)c->n_kv_heads, kvd = s->kvdim, hid = (size_t)c->hidden_dim, qd = nh * hd;
    const size_t pos0 = (size_t)b->pos0, ctx = (size_t)s->max_ctx;
    lm_status st;
    for (size_t i = 0; i < N; i++) lm_embedding_row(s->x + i * d, &m->tok_embeddings, (size_t)b->tokens[i]);
    if ((st = run_hooks(s, -1, LM_HOOK_EMBED, b, (int)d, s->x)) != LM_OK) return st;
    if (c->learned_pos) {
        float *pe = s->xb;
        for (size_t q = 0; q < NS; q++)
            for (size_t t = 0; t < T; t++) lm_embedding_row(pe + (q * T + t) * d, &m->pos_embeddings, pos0 + t);
        if ((st = run_hooks(s, -1, LM_HOOK_POS_EMBED, b, (int)d, pe)) != LM_OK) return st;
        add_inplace(s->x, pe, N * d);
    }
    for (int l = 0; l < c->n_layers; l++) {
        const lm_layer *ly = &m->layers[l];
        if ((st = run_hooks(s, l, LM_HOOK_RESID_PRE, b, (int)d, s->x)) != LM_OK) return st;
        if (lm_layer_is_linear(ly)) {
            /* the whole block, residual included, is one affine map; its KV cache stays unused */
            if ((st = linear_bias(s->xb, s->x, N, &ly->lin, ly->lin_b)) != LM_OK) return st;
            memcpy(s->x, s->xb, N * d * sizeof(float));
            if ((st = run_hooks(s, l, LM_HOOK_RESID_POST, b, (int)d, s->x)) != LM_OK) return st;
            continue;
        }
        norm(m, s->xb, s->x, ly->attn_norm, ly->attn_norm_b, N);
        if ((st = linear_bias(s->q, s->xb, N, &ly->wq, ly->bq)) != LM_OK) return st;
        lm_rope_style rs = c->rope_style;
        if (NS == 1) {
            /* keys and values go straight into the cache rows of their positions */
            float *kc = s->kcache + (size_t)l * s->max_seqs * ctx * kvd, *vc = s->vcache + (size_t)l * s->max_seqs * ctx * kvd;
            if ((st = linear_bias(kc + pos0 * kvd, s->xb, T, &ly->wk, ly->bk)) != LM_OK) return st;
            if ((st = linear_bias(vc + pos0 * kvd, s->xb, T, &ly->wv, ly->bv)) != LM_OK) return st;
            if (!c->learned_pos) {
                lm_rope(s->q, T, nh, hd, pos0, m->inv_freq, rs);
                lm_rope(kc + pos0 * kvd, T, nkv, hd, pos0, m->inv_freq, rs);
            }
            lm_attention(s->att, s->q, kc, vc, T, pos0, nh, nkv, hd, s->scratch);
        } else {
            /* batch: project all rows at once, then scatter each sequence into its cache */
            if ((st = linear_bias(s->hb, s->xb, N, &ly->wk, ly->bk)) != LM_OK) return st;
            if ((st = linear_bias(s->hb2, s->xb, N, &ly->wv, ly->bv)) != LM_OK) return st;
            for (size_t q = 0; q < NS; q++) {
                float *kc = s->kcache + ((size_t)l * s->max_seqs + q) * ctx * kvd;
                float *vc = s->vcache + ((size_t)l * s->max_seqs + q) * ctx * kvd;
                memcpy(kc + pos0 * kvd, s->hb + q * T * kvd, T * kvd * sizeof(float));
                memcpy(vc + pos0 * kvd, s->hb2 + q * T * kvd, T * kvd * sizeof(float));
                if (!c->learned_pos) {
                    lm_rope(s->q + q * T * qd, T, nh, hd, pos0, m->inv_freq, rs);
                    lm_rope(kc + pos0 * kvd, T, nkv, hd, pos0, m->inv_freq, rs);
                }
                lm_attention(s->att + q * T * qd, s->q + q * T * qd, kc, vc, T, pos0, nh, nkv, hd, s->scratch);
            }
        }
        if ((st = linear_bias(s->xb, s->att, N, &ly->wo, ly->bo)) != LM_OK) return st;
        if ((st = run_hooks(s, l, LM_HOOK_ATTN_OUT, b, (int)d, s->xb)) != LM_OK) return st;
        add_inplace(s->x, s->xb, N * d);
        if ((st = run_hooks(s, l, LM_HOOK_RESID_MID, b, (int)d, s->x)) != LM_OK) return st;
        norm(m, s->xb, s->x, ly->ffn_norm, ly->ffn_norm_b, N);
        if (c->act == LM_ACT_SWIGLU) {
            if ((st = lm_linear(s->hb, s->xb, N, &ly->w_gate)) != LM_OK) return st;
            if ((st = linear_bias(s->hb2, s->xb, N, &ly->w_up, ly->b_up)) != LM_OK) return st;
            lm_swiglu(s->hb, s->hb, s->hb2, N * hid);
        } else {
            if ((st = linear_bias(s->hb, s->xb, N, &ly->w_up, ly->b_up)) != LM_OK) return st;
            lm_gelu_tanh(s->hb, N * hid);
        }
        if ((st = linear_bias(s->xb, s->hb, N, &ly->w_down, ly->b_down)) != LM_OK) return st;
        if ((st = run_hooks(s, l, LM_HOOK_MLP_OUT, b, (int)d, s->xb)) != LM_OK) return st;
        add_inplace(s->x, s->xb, N * d);
        if ((st = run_hooks(s, l, LM_HOOK_RESID_POST, b, (int)d, s->x)) != LM_OK) return st;
    }
    if (!logits && !has_hooks(s, -1, LM_HOOK_LN_FINAL)) return LM_OK;
    if (all_logits || has_hooks(s, -1, LM_HOOK_LN_FINAL)) {
        norm(m, s->xb, s->x, m->final_norm, m->final_norm_b, N);
        if ((st = run_hooks(s, -1, LM_HOOK_LN_FINAL, b, (int)d, s->xb)) != LM_OK) return st;
        if (!logits) return LM_OK;
        if (all_logits) return lm_linear(logits, s->xb, N, &m->output);
        for (size_t q = 0; q < NS; q++)
            memmove(s->xb + q * d, s->xb + (q * T + T - 1) * d, d * sizeof(float));
    } else {
        for (size_t q = 0; q < NS; q++) norm(m, s->xb + q * d, s->x + (q * T + T - 1) * d, m->final_norm, m->final_norm_b, 1);
    }
    return lm_linear(logits, s->xb, NS, &m->output);
}

static lm_status check_tokens(const lm_model *m, const int32_t *tokens, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_size)
            return lm_fail(LM_ERR_ARG, "token id %d is outside the vocabulary (0..%d)", tokens[i],
                           m->cfg.vocab_size - 1);
    return LM_OK;
}

lm_status lm_forward(const lm_model *m, lm_state *s, const int32_t *tokens, int n, float *logits, int all_logits) {
    if (n <= 0) return lm_fail(LM_ERR_ARG, "forward: no tokens");
    if ((long)s->pos + n > s->max_ctx)
        return lm_fail(LM_ERR_RANGE, "context overflow: %d tokens at position %d exceed the context of %d", n, s->pos,
                       s->max_ctx);
    lm_status st = check_tokens(m, tokens, (size_t)n);
    if (st != LM_OK) return st;
    size_t V = (size_t)m->cfg.vocab_size;
    for (int done = 0; done < n;) {
        int chunk = n - done < s->max_tokens ? n - done : s->max_tokens;
        int last = done + chunk == n;
        float *lg = NULL;
        if (logits && all_logits) lg = logits + (size_t)done * V;
        else if (logits && last) lg = logits;
        batch b = {1, chunk, s->pos, tokens + done};
        st = forward_core(m, s, &b, lg, all_logits);
        if (st != LM_OK) return st;
        s->pos += chunk;
        done += chunk;
    }
    return LM_OK;
}

lm_status lm_forward_batch(const lm_model *m, lm_state *s, const int32_t *tokens, int n_seq, int n_tok,
                           float *logits, int all_logits) {
    if (n_seq <= 0 || n_tok <= 0) return lm_fail(LM_ERR_ARG, "forward: empty batch (%d x %d)", n_seq, n_tok);
    if (n_seq > s->max_seqs || (long)n_seq * n_tok > s->max_tokens)
        return lm_fail(LM_ERR_RANGE, "forward: batch of %d x %d tokens exceeds the state (%d sequences, %d tokens)",
                       n_seq, n_tok, s->max_seqs, s->max_tokens);
    if ((long)s->pos + n_tok > s->max_ctx)
        return lm_fail(LM_ERR_RANGE, "context overflow: %d tokens at position %d exceed the context of %d", n_tok,
                       s->pos, s->max_ctx);
    lm_status st = check_tokens(m, tokens, (size_t)n_seq * (size_t)n_tok);
    if (st != LM_OK) return st;
    batch b = {n_seq, n_tok, s->pos, tokens};
    st = forward_core(m, s, &b, logits, all_logits);
    if (st == LM_OK) s->pos += n_tok;
    return st;
}
