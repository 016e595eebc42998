/* trainable.c - trainable parameters in one flat f32 allocation (llm.c's layout idea), with a
 * model view onto them, and the training forward/backward for the gpt2 and llama families. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/model_internal.h"
#include "lumen/train.h"

/* Saved activations and gradient scratch of one training forward over N = B*T tokens. */
typedef struct acts {
    size_t cap_tokens, cap_seq_t; /* N and T they were sized for */
    int B, T;
    float *x;     /* [L+1, N, d] residual stream entering each block; x[L] leaves the last */
    float *xn1;   /* [L, N, d] */
    float *q;     /* [L, N, qd] (after RoPE) */
    float *k, *v; /* [L, N, kvd] (k after RoPE) */
    float *probs; /* [L, B, nh, T, T] */
    float *att;   /* [L, N, qd] */
    float *xmid;  /* [L, N, d] */
    float *xn2;   /* [L, N, d] */
    float *h1;    /* [L, N, hid] gate (llama) or pre-GELU (gpt2) */
    float *h3;    /* [L, N, hid] up (llama) */
    float *h;     /* [L, N, hid] MLP hidden after the activation */
    float *xf;    /* [N, d] */
    float *logits;/* [N, V]; overwritten by its gradient */
    /* gradient scratch */
    float *dx, *dxn, *dq, *dk, *dv, *datt, *dh, *dh1, *dh3, *dxf;
    float *att_scratch;
    float *dreg;  /* [L+1, N, d] gradient of the cosine regulariser w.r.t. each residual state */
    int has_reg;
} acts;

static void acts_free(acts *a) {
    if (!a) return;
    float **bufs[] = {&a->x,  &a->xn1, &a->q,  &a->k,   &a->v,   &a->probs, &a->att, &a->xmid, &a->xn2,
                      &a->h1, &a->h3,  &a->h,  &a->xf,  &a->logits, &a->dx, &a->dxn, &a->dq,   &a->dk,
                      &a->dv, &a->datt, &a->dh, &a->dh1, &a->dh3, &a->dxf, &a->att_scratch, &a->dreg};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(*bufs[i]);
        *bufs[i] = NULL;
    }
    free(a);
}

static lm_status acts_ensure(lm_trainable *t, int B, int T) {
    const lm_config *c = &t->model->cfg;
    acts *a = t->acts;
    size_t N = (size_t)B * T;
    int has_reg = a && a->has_reg;
    if (a && a->cap_tokens >= N && a->cap_seq_t >= (size_t)T && (size_t)B * T * T <= a->cap_tokens * a->cap_seq_t &&
        has_reg == (t->linearity_reg > 0)) {
        a->B = B;
        a->T = T;
        return LM_OK;
    }
    acts_free(a);
    a = calloc(1, sizeof *a);
    t->acts = a;
    if (!a) return lm_fail(LM_ERR_NOMEM, "train: out of memory for activations");
    size_t L = (size_t)c->n_layers, d = (size_t)c->dim, qd = (size_t)c->n_heads * c->head_dim;
    size_t kvd = (size_t)c->n_kv_heads * c->head_dim, hid = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t nh = (size_t)c->n_heads, wide = d > qd ? d : qd;
    if (hid > wide) wide = hid;
    a->cap_tokens = N;
    a->cap_seq_t = (size_t)T;
    a->has_reg = t->linearity_reg > 0;
    a->B = B;
    a->T = T;
    int llama = c->act == LM_ACT_SWIGLU;
    a->x = lm_aligned_alloc((L + 1) * N * d, 4);
    a->xn1 = lm_aligned_alloc(L * N * d, 4);
    a->q = lm_aligned_alloc(L * N * qd, 4);
    a->k = lm_aligned_alloc(L * N * kvd, 4);
    a->v = lm_aligned_alloc(L * N * kvd, 4);
    a->probs = lm_aligned_alloc(L * (size_t)B * nh * (size_t)T * T, 4);
    a->att = lm_aligned_alloc(L * N * qd, 4);
    a->xmid = lm_aligned_alloc(L * N * d, 4);
    a->xn2 = lm_aligned_alloc(L * N * d, 4);
    a->h1 = lm_aligned_alloc(L * N * hid, 4);
    a->h3 = llama ? lm_aligned_alloc(L * N * hid, 4) : lm_aligned_alloc(1, 4);
    a->h = lm_aligned_alloc(L * N * hid, 4);
    a->xf = lm_aligned_alloc(N * d, 4);
    a->logits = lm_aligned_alloc(N * V, 4);
    a->dx = lm_aligned_alloc(N * d, 4);
    a->dxn = lm_aligned_alloc(N * d, 4);
    a->dq = lm_aligned_alloc(N * qd, 4);
    a->dk = lm_aligned_alloc(N * kvd, 4);
    a->dv = lm_aligned_alloc(N * kvd, 4);
    a->datt = lm_aligned_alloc(N * qd, 4);
    a->dh = lm_aligned_alloc(N * hid, 4);
    a->dh1 = lm_aligned_alloc(N * hid, 4);
    a->dh3 = lm_aligned_alloc(N * hid, 4);
    a->dxf = lm_aligned_alloc(N * d, 4);
    a->att_scratch = lm_aligned_alloc(lm_attention_train_scratch((size_t)T), 4);
    a->dreg = t->linearity_reg > 0 ? lm_aligned_alloc((L + 1) * N * d, 4) : lm_aligned_alloc(1, 4);
    float *all[] = {a->x,  a->xn1, a->q,  a->k,  a->v,  a->probs, a->att, a->xmid, a->xn2, a->h1,
                    a->h3, a->h,   a->xf, a->logits, a->dx, a->dxn, a->dq,  a->dk,   a->dv,  a->datt,
                    a->dh, a->dh1, a->dh3, a->dxf, a->att_scratch, a->dreg};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!all[i]) {
            acts_free(a);
            t->acts = NULL;
            return lm_fail(LM_ERR_NOMEM, "train: out of memory for activations of %d x %d tokens", B, T);
        }
    (void)wide;
    return LM_OK;
}

/* ---- parameter table ------------------------------------------------------------------ */

typedef struct builder {
    lm_trainable *t;
    size_t off;
    int count_only;
} builder;

static float *param(builder *b, const char *name, size_t rows, size_t cols, int decay) {
    lm_trainable *t = b->t;
    if (!b->count_only) {
        lm_param *p = &t->table[t->n_table++];
        snprintf(p->name, sizeof p->name, "%s", name);
        p->offset = b->off;
        p->size = rows * cols;
        p->rows = rows;
        p->cols = cols;
        p->decay = decay;
    } else {
        t->n_table++;
    }
    float *ptr = b->count_only ? NULL : t->params + b->off;
    b->off += rows * cols;
    return ptr;
}

static lm_weight wview(float *p, size_t rows, size_t cols) { return (lm_weight){LM_F32, rows, cols, p}; }

/* Lays out every parameter of cfg; with count_only, just counts floats and tensors. */
static void layout(builder *b, lm_model *m) {
    const lm_config *c = &m->cfg;
    size_t d = (size_t)c->dim, qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t hid = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    int gpt2 = c->arch == LM_ARCH_GPT2;
    char n[96];
    m->tok_embeddings = wview(param(b, "embed", V, d, 1), V, d);
    if (c->learned_pos) m->pos_embeddings = wview(param(b, "pos_embed", (size_t)c->seq_len, d, 1), (size_t)c->seq_len, d);
    for (int l = 0; l < c->n_layers; l++) {
        lm_layer *ly = b->count_only ? NULL : &m->layers[l];
        lm_layer dummy;
        if (!ly) ly = &dummy;
#define P(s, r, cc, dec) (snprintf(n, sizeof n, "blocks.%d.%s", l, s), param(b, n, r, cc, dec))
        ly->attn_norm = P("attn_norm", d, 1, 0);
        if (gpt2) ly->attn_norm_b = P("attn_norm_b", d, 1, 0);
        ly->wq = wview(P("wq", qd, d, 1), qd, d);
        ly->wk = wview(P("wk", kvd, d, 1), kvd, d);
        ly->wv = wview(P("wv", kvd, d, 1), kvd, d);
        if (gpt2) {
            ly->bq = P("bq", qd, 1, 0);
            ly->bk = P("bk", kvd, 1, 0);
            ly->bv = P("bv", kvd, 1, 0);
        }
        ly->wo = wview(P("wo", d, qd, 1), d, qd);
        if (gpt2) ly->bo = P("bo", d, 1, 0);
        ly->ffn_norm = P("ffn_norm", d, 1, 0);
        if (gpt2) ly->ffn_norm_b = P("ffn_norm_b", d, 1, 0);
        if (!gpt2) ly->w_gate = wview(P("w_gate", hid, d, 1), hid, d);
        ly->w_up = wview(P("w_up", hid, d, 1), hid, d);
        if (gpt2) ly->b_up = P("b_up", hid, 1, 0);
        ly->w_down = wview(P("w_down", d, hid, 1), d, hid);
        if (gpt2) ly->b_down = P("b_down", d, 1, 0);
#undef P
    }
    m->final_norm = param(b, "final_norm", d, 1, 0);
    if (gpt2) m->final_norm_b = param(b, "final_norm_b", d, 1, 0);
    if (c->tied_embeddings)
        m->output = m->tok_embeddings;
    else
        m->output = wview(param(b, "output", V, d, 1), V, d);
}

static lm_status alloc_trainable(const lm_config *cfg_in, lm_trainable **out) {
    *out = NULL;
    lm_config c = *cfg_in;
    if (c.head_dim == 0 && c.n_heads > 0) c.head_dim = c.dim / c.n_heads;
    if (c.norm_eps == 0) c.norm_eps = 1e-5f;
    if (c.rope_theta == 0) c.rope_theta = 10000.0f;
    if (c.arch == LM_ARCH_GPT2) {
        c.norm = LM_NORM_LAYER;
        c.act = LM_ACT_GELU_TANH;
        c.learned_pos = 1;
        c.n_kv_heads = c.n_heads;
    }
    if (!c.family[0]) snprintf(c.family, sizeof c.family, "%s", c.arch == LM_ARCH_GPT2 ? "gpt2" : "llama");
    /* trainable models use the Hugging Face RoPE layout, so a checkpoint (saved in that layout)
     * reloads to exactly the same weights */
    c.rope_style = LM_ROPE_HALF;
    lm_status st = lm_config_check(&c, "train");
    if (st != LM_OK) return st;
    lm_trainable *t = calloc(1, sizeof *t);
    lm_model *m = calloc(1, sizeof *m);
    if (!t || !m) {
        free(t);
        free(m);
        return lm_fail(LM_ERR_NOMEM, "train: out of memory");
    }
    t->model = m;
    m->cfg = c;
    m->path = lm_strdup("trainable");
    m->format = lm_strdup("trainable");
    builder b = {t, 0, 1};
    layout(&b, m);
    t->n_floats = b.off;
    size_t n_tab = t->n_table;
    t->n_table = 0;
    t->table = calloc(n_tab, sizeof *t->table);
    m->layers = calloc((size_t)c.n_layers, sizeof *m->layers);
    t->params = lm_aligned_alloc(t->n_floats, 4);
    t->grads = lm_aligned_alloc(t->n_floats, 4);
    t->adam_m = lm_aligned_alloc(t->n_floats, 4);
    t->adam_v = lm_aligned_alloc(t->n_floats, 4);
    if (!t->table || !m->layers || !t->params || !t->grads || !t->adam_m || !t->adam_v || !m->path || !m->format) {
        lm_trainable_free(t);
        return lm_fail(LM_ERR_NOMEM, "train: out of memory for %zu parameters", b.off);
    }
    memset(t->grads, 0, t->n_floats * 4);
    memset(t->adam_m, 0, t->n_floats * 4);
    memset(t->adam_v, 0, t->n_floats * 4);
    b = (builder){t, 0, 0};
    layout(&b, m);
    m->n_params = t->n_floats;
    if ((st = lm_model_finish(m)) != LM_OK) {
        lm_trainable_free(t);
        return st;
    }
    *out = t;
    return LM_OK;
}

void lm_trainable_free(lm_trainable *t) {
    if (!t) return;
    acts_free(t->acts);
    free(t->params);
    free(t->grads);
    free(t->adam_m);
    free(t->adam_v);
    free(t->table);
    lm_model_free(t->model);
    free(t);
}

void lm_trainable_zero_grad(lm_trainable *t) { memset(t->grads, 0, t->n_floats * sizeof(float)); }

static int is_out_proj(const char *name) {
    size_t n = strlen(name);
    return (n >= 3 && !strcmp(name + n - 3, ".wo")) || (n >= 7 && !strcmp(name + n - 7, ".w_down"));
}

lm_status lm_trainable_new(const lm_config *cfg, uint64_t seed, lm_trainable **out) {
    lm_status st = alloc_trainable(cfg, out);
    if (st != LM_OK) return st;
    lm_trainable *t = *out;
    lm_rng rng;
    lm_rng_seed(&rng, seed);
    float resid_scale = 1.0f / sqrtf(2.0f * (float)t->model->cfg.n_layers);
    for (size_t i = 0; i < t->n_table; i++) {
        const lm_param *p = &t->table[i];
        float *w = t->params + p->offset;
        if (p->cols == 1) {
            /* vectors: norms start at 1, biases at 0 */
            float v = strstr(p->name, "norm") && !strstr(p->name, "norm_b") ? 1.0f : 0.0f;
            for (size_t j = 0; j < p->size; j++) w[j] = v;
        } else {
            float std = 0.02f * (is_out_proj(p->name) ? resid_scale : 1.0f);
            for (size_t j = 0; j < p->size; j++) w[j] = std * lm_rng_normal(&rng);
        }
    }
    return LM_OK;
}

static void copy_vec(float *dst, const float *src, size_t n) {
    if (src) memcpy(dst, src, n * sizeof(float));
}

/* Copies w as f32; head_dim > 0 reorders each head's rows from interleaved RoPE pairs to the
 * rotate-half layout (row 2i -> i, row 2i+1 -> i + head_dim/2). */
static void copy_mat_perm(float *dst, const lm_weight *w, size_t head_dim) {
    size_t rb = lm_dtype_row_bytes(w->dtype, w->cols);
    for (size_t r = 0; r < w->rows; r++) {
        size_t to = r;
        if (head_dim) {
            size_t h = r / head_dim, i = r % head_dim;
            to = h * head_dim + (i % 2 == 0 ? i / 2 : head_dim / 2 + i / 2);
        }
        lm_dequantize_row(w->dtype, (const uint8_t *)w->data + r * rb, dst + to * w->cols, w->cols);
    }
}

static void copy_mat(float *dst, const lm_weight *w) { copy_mat_perm(dst, w, 0); }

lm_status lm_trainable_from_model(const lm_model *src, lm_trainable **out) {
    *out = NULL;
    for (int l = 0; l < src->cfg.n_layers; l++)
        if (lm_layer_is_linear(&src->layers[l]))
            return lm_fail(LM_ERR_UNSUPPORTED,
                           "%s: block %d is a linear block (lumen prune --linearize); training a model with linear "
                           "blocks is not supported",
                           src->path ? src->path : "model", l);
    lm_config c = src->cfg;
    lm_status st = alloc_trainable(&c, out);
    if (st != LM_OK) return st;
    lm_trainable *t = *out;
    lm_model *m = t->model;
    size_t d = (size_t)c.dim, hid = (size_t)c.hidden_dim;
    copy_mat((float *)m->tok_embeddings.data, &src->tok_embeddings);
    if (c.learned_pos) copy_mat((float *)m->pos_embeddings.data, &src->pos_embeddings);
    for (int l = 0; l < c.n_layers; l++) {
        const lm_layer *a = &src->layers[l];
        lm_layer *b = &m->layers[l];
        copy_vec((float *)b->attn_norm, a->attn_norm, d);
        if (b->attn_norm_b) copy_vec((float *)b->attn_norm_b, a->attn_norm_b, d);
        size_t perm = !c.learned_pos && c.rope_style == LM_ROPE_INTERLEAVED ? (size_t)c.head_dim : 0;
        copy_mat_perm((float *)b->wq.data, &a->wq, perm);
        copy_mat_perm((float *)b->wk.data, &a->wk, perm);
        copy_mat((float *)b->wv.data, &a->wv);
        copy_mat((float *)b->wo.data, &a->wo);
        if (b->bq) copy_vec((float *)b->bq, a->bq, b->wq.rows);
        if (b->bk) copy_vec((float *)b->bk, a->bk, b->wk.rows);
        if (b->bv) copy_vec((float *)b->bv, a->bv, b->wv.rows);
        if (b->bo) copy_vec((float *)b->bo, a->bo, d);
        copy_vec((float *)b->ffn_norm, a->ffn_norm, d);
        if (b->ffn_norm_b) copy_vec((float *)b->ffn_norm_b, a->ffn_norm_b, d);
        if (c.act == LM_ACT_SWIGLU) copy_mat((float *)b->w_gate.data, &a->w_gate);
        copy_mat((float *)b->w_up.data, &a->w_up);
        copy_mat((float *)b->w_down.data, &a->w_down);
        if (b->b_up) copy_vec((float *)b->b_up, a->b_up, hid);
        if (b->b_down) copy_vec((float *)b->b_down, a->b_down, d);
        if ((a->bq != NULL) != (b->bq != NULL) || (a->bo != NULL) != (b->bo != NULL)) {
            lm_trainable_free(t);
            *out = NULL;
            return lm_fail(LM_ERR_UNSUPPORTED, "%s: training a %s model with these biases is not supported", src->path,
                           c.family);
        }
    }
    copy_vec((float *)m->final_norm, src->final_norm, d);
    if (m->final_norm_b) copy_vec((float *)m->final_norm_b, src->final_norm_b, d);
    if (!c.tied_embeddings) copy_mat((float *)m->output.data, &src->output);
    return LM_OK;
}

/* ---- forward / backward ---------------------------------------------------------------- */

static float *G(lm_trainable *t, const void *param_ptr) {
    /* the gradient of a parameter lives at the same offset in grads */
    return param_ptr ? t->grads + ((const float *)param_ptr - t->params) : NULL;
}

static void norm_fwd(const lm_config *c, float *out, const float *x, const float *w, const float *b, size_t n) {
    if (c->norm == LM_NORM_LAYER)
        lm_layernorm(out, x, w, b, n, (size_t)c->dim, c->norm_eps);
    else
        lm_rmsnorm(out, x, w, n, (size_t)c->dim, c->norm_eps);
}

static void norm_bwd(lm_trainable *t, float *dx, const float *dout, const float *x, const float *w, const float *b,
                     size_t n) {
    const lm_config *c = &t->model->cfg;
    if (c->norm == LM_NORM_LAYER)
        lm_layernorm_backward(dx, G(t, w), G(t, b), dout, x, w, n, (size_t)c->dim, c->norm_eps);
    else
        lm_rmsnorm_backward(dx, G(t, w), dout, x, w, n, (size_t)c->dim, c->norm_eps);
}

static lm_status forward(lm_trainable *t, const int32_t *inputs, int B, int T) {
    lm_model *m = t->model;
    const lm_config *c = &m->cfg;
    if (T > c->seq_len) return lm_fail(LM_ERR_RANGE, "train: sequence of %d tokens exceeds the context of %d", T, c->seq_len);
    for (size_t i = 0; i < (size_t)B * T; i++)
        if (inputs[i] < 0 || inputs[i] >= c->vocab_size)
            return lm_fail(LM_ERR_ARG, "train: token id %d outside the vocabulary (0..%d)", inputs[i], c->vocab_size - 1);
    lm_status st = acts_ensure(t, B, T);
    if (st != LM_OK) return st;
    acts *a = t->acts;
    size_t N = (size_t)B * T, d = (size_t)c->dim, hd = (size_t)c->head_dim, nh = (size_t)c->n_heads;
    size_t nkv = (size_t)c->n_kv_heads, qd = nh * hd, kvd = nkv * hd, hid = (size_t)c->hidden_dim;
    size_t V = (size_t)c->vocab_size, TT = (size_t)T;
    const float *emb = m->tok_embeddings.data;
    for (size_t i = 0; i < N; i++) memcpy(a->x + i * d, emb + (size_t)inputs[i] * d, d * sizeof(float));
    if (c->learned_pos) {
        const float *pe = m->pos_embeddings.data;
        for (size_t i = 0; i < N; i++)
            for (size_t j = 0; j < d; j++) a->x[i * d + j] += pe[(i % TT) * d + j];
    }
    for (int l = 0; l < c->n_layers; l++) {
        const lm_layer *ly = &m->layers[l];
        size_t L = (size_t)l;
        float *xl = a->x + L * N * d, *xn = a->x + (L + 1) * N * d;
        float *xn1 = a->xn1 + L * N * d, *q = a->q + L * N * qd, *k = a->k + L * N * kvd, *v = a->v + L * N * kvd;
        float *probs = a->probs + L * (size_t)B * nh * TT * TT, *att = a->att + L * N * qd;
        float *xmid = a->xmid + L * N * d, *xn2 = a->xn2 + L * N * d;
        float *h1 = a->h1 + L * N * hid, *h3 = c->act == LM_ACT_SWIGLU ? a->h3 + L * N * hid : NULL;
        float *h = a->h + L * N * hid;
        norm_fwd(c, xn1, xl, ly->attn_norm, ly->attn_norm_b, N);
        lm_linear_f32(q, xn1, ly->wq.data, ly->bq, N, d, qd);
        lm_linear_f32(k, xn1, ly->wk.data, ly->bk, N, d, kvd);
        lm_linear_f32(v, xn1, ly->wv.data, ly->bv, N, d, kvd);
        for (int b = 0; b < B; b++) {
            size_t o = (size_t)b * TT;
            if (!c->learned_pos) {
                lm_rope(q + o * qd, TT, nh, hd, 0, m->inv_freq, c->rope_style);
                lm_rope(k + o * kvd, TT, nkv, hd, 0, m->inv_freq, c->rope_style);
            }
            lm_attention_train(att + o * qd, probs + (size_t)b * nh * TT * TT, q + o * qd, k + o * kvd, v + o * kvd, TT,
                               nh, nkv, hd);
        }
        lm_linear_f32(xmid, att, ly->wo.data, ly->bo, N, qd, d);
        for (size_t i = 0; i < N * d; i++) xmid[i] += xl[i];
        norm_fwd(c, xn2, xmid, ly->ffn_norm, ly->ffn_norm_b, N);
        if (c->act == LM_ACT_SWIGLU) {
            lm_linear_f32(h1, xn2, ly->w_gate.data, NULL, N, d, hid);
            lm_linear_f32(h3, xn2, ly->w_up.data, NULL, N, d, hid);
            lm_swiglu(h, h1, h3, N * hid);
        } else {
            lm_linear_f32(h1, xn2, ly->w_up.data, ly->b_up, N, d, hid);
            memcpy(h, h1, N * hid * sizeof(float));
            lm_gelu_tanh(h, N * hid);
        }
        lm_linear_f32(xn, h, ly->w_down.data, ly->b_down, N, hid, d);
        for (size_t i = 0; i < N * d; i++) xn[i] += xmid[i];
    }
    norm_fwd(c, a->xf, a->x + (size_t)c->n_layers * N * d, m->final_norm, m->final_norm_b, N);
    lm_linear_f32(a->logits, a->xf, m->output.data, NULL, N, d, V);
    return LM_OK;
}

/* The cosine regulariser over the residual states x[0..L]: returns its mean of (1 - cos) over the
 * L pairs and N tokens, and writes weight * d(mean)/dx into a->dreg. */
static double cosine_reg(lm_trainable *t, float weight) {
    const lm_config *c = &t->model->cfg;
    acts *a = t->acts;
    size_t N = (size_t)a->B * a->T, d = (size_t)c->dim, L = (size_t)c->n_layers;
    memset(a->dreg, 0, (L + 1) * N * d * sizeof(float));
    double total = 0, scale = (double)weight / (double)(L * N);
#pragma omp parallel for reduction(+ : total) schedule(static) if (N * d * L > 65536)
    for (size_t i = 0; i < N; i++) {
        for (size_t l = 0; l < L; l++) {
            const float *x = a->x + (l * N + i) * d, *y = a->x + ((l + 1) * N + i) * d;
            double xy = 0, xx = 0, yy = 0;
            for (size_t j = 0; j < d; j++) {
                xy += (double)x[j] * y[j];
                xx += (double)x[j] * x[j];
                yy += (double)y[j] * y[j];
            }
            double nx = sqrt(xx) + 1e-12, ny = sqrt(yy) + 1e-12, cs = xy / (nx * ny);
            total += 1.0 - cs;
            /* d(1 - cos)/dx = -(y / (|x||y|) - cos x / |x|^2), and symmetrically for y */
            float *gx = a->dreg + (l * N + i) * d, *gy = a->dreg + ((l + 1) * N + i) * d;
            for (size_t j = 0; j < d; j++) {
                gx[j] += (float)(-scale * (y[j] / (nx * ny) - cs * x[j] / (nx * nx)));
                gy[j] += (float)(-scale * (x[j] / (nx * ny) - cs * y[j] / (ny * ny)));
            }
        }
    }
    return total / (double)(L * N);
}

static void backward(lm_trainable *t, const int32_t *inputs) {
    lm_model *m = t->model;
    const lm_config *c = &m->cfg;
    acts *a = t->acts;
    int B = a->B, T = a->T;
    size_t N = (size_t)B * T, d = (size_t)c->dim, hd = (size_t)c->head_dim, nh = (size_t)c->n_heads;
    size_t nkv = (size_t)c->n_kv_heads, qd = nh * hd, kvd = nkv * hd, hid = (size_t)c->hidden_dim;
    size_t V = (size_t)c->vocab_size, TT = (size_t)T;
    /* a->logits holds dL/dlogits */
    memset(a->dxf, 0, N * d * sizeof(float));
    lm_linear_backward(a->dxf, G(t, m->output.data), NULL, a->logits, a->xf, m->output.data, N, d, V);
    memset(a->dx, 0, N * d * sizeof(float));
    norm_bwd(t, a->dx, a->dxf, a->x + (size_t)c->n_layers * N * d, m->final_norm, m->final_norm_b, N);
    int reg = t->linearity_reg > 0;
    if (reg)
        for (size_t i = 0; i < N * d; i++) a->dx[i] += a->dreg[(size_t)c->n_layers * N * d + i];
    for (int l = c->n_layers - 1; l >= 0; l--) {
        const lm_layer *ly = &m->layers[l];
        size_t L = (size_t)l;
        float *xl = a->x + L * N * d;
        float *xn1 = a->xn1 + L * N * d, *q = a->q + L * N * qd, *k = a->k + L * N * kvd, *v = a->v + L * N * kvd;
        float *probs = a->probs + L * (size_t)B * nh * TT * TT, *att = a->att + L * N * qd;
        float *xmid = a->xmid + L * N * d, *xn2 = a->xn2 + L * N * d;
        float *h1 = a->h1 + L * N * hid, *h3 = c->act == LM_ACT_SWIGLU ? a->h3 + L * N * hid : NULL;
        float *h = a->h + L * N * hid;
        /* a->dx is dL/d(block output) = dL/dxmid through the residual, plus the MLP branch */
        memset(a->dh, 0, N * hid * sizeof(float));
        lm_linear_backward(a->dh, G(t, ly->w_down.data), G(t, ly->b_down), a->dx, h, ly->w_down.data, N, hid, d);
        memset(a->dxn, 0, N * d * sizeof(float));
        memset(a->dh1, 0, N * hid * sizeof(float));
        if (c->act == LM_ACT_SWIGLU) {
            memset(a->dh3, 0, N * hid * sizeof(float));
            lm_swiglu_backward(a->dh1, a->dh3, a->dh, h1, h3, N * hid);
            lm_linear_backward(a->dxn, G(t, ly->w_gate.data), NULL, a->dh1, xn2, ly->w_gate.data, N, d, hid);
            lm_linear_backward(a->dxn, G(t, ly->w_up.data), NULL, a->dh3, xn2, ly->w_up.data, N, d, hid);
        } else {
            lm_gelu_tanh_backward(a->dh1, a->dh, h1, N * hid);
            lm_linear_backward(a->dxn, G(t, ly->w_up.data), G(t, ly->b_up), a->dh1, xn2, ly->w_up.data, N, d, hid);
        }
        norm_bwd(t, a->dx, a->dxn, xmid, ly->ffn_norm, ly->ffn_norm_b, N);
        /* a->dx is now dL/dxmid */
        memset(a->datt, 0, N * qd * sizeof(float));
        lm_linear_backward(a->datt, G(t, ly->wo.data), G(t, ly->bo), a->dx, att, ly->wo.data, N, qd, d);
        memset(a->dq, 0, N * qd * sizeof(float));
        memset(a->dk, 0, N * kvd * sizeof(float));
        memset(a->dv, 0, N * kvd * sizeof(float));
        for (int b = 0; b < B; b++) {
            size_t o = (size_t)b * TT;
            lm_attention_train_backward(a->dq + o * qd, a->dk + o * kvd, a->dv + o * kvd, a->datt + o * qd, q + o * qd,
                                        k + o * kvd, v + o * kvd, probs + (size_t)b * nh * TT * TT, TT, nh, nkv, hd,
                                        a->att_scratch);
            if (!c->learned_pos) {
                lm_rope_backward(a->dq + o * qd, TT, nh, hd, 0, m->inv_freq, c->rope_style);
                lm_rope_backward(a->dk + o * kvd, TT, nkv, hd, 0, m->inv_freq, c->rope_style);
            }
        }
        memset(a->dxn, 0, N * d * sizeof(float));
        lm_linear_backward(a->dxn, G(t, ly->wq.data), G(t, ly->bq), a->dq, xn1, ly->wq.data, N, d, qd);
        lm_linear_backward(a->dxn, G(t, ly->wk.data), G(t, ly->bk), a->dk, xn1, ly->wk.data, N, d, kvd);
        lm_linear_backward(a->dxn, G(t, ly->wv.data), G(t, ly->bv), a->dv, xn1, ly->wv.data, N, d, kvd);
        norm_bwd(t, a->dx, a->dxn, xl, ly->attn_norm, ly->attn_norm_b, N);
        /* a->dx is now dL/dx_l, where the regulariser also touches x_l */
        if (reg)
            for (size_t i = 0; i < N * d; i++) a->dx[i] += a->dreg[(size_t)l * N * d + i];
    }
    lm_embedding_backward(G(t, m->tok_embeddings.data), a->dx, inputs, N, d);
    if (c->learned_pos) {
        float *dpe = G(t, m->pos_embeddings.data);
        for (size_t i = 0; i < N; i++)
            for (size_t j = 0; j < d; j++) dpe[(i % TT) * d + j] += a->dx[i * d + j];
    }
}

lm_status lm_train_step_grad(lm_trainable *t, const int32_t *inputs, const int32_t *targets, int B, int T,
                             float grad_scale, double *loss) {
    lm_status st = forward(t, inputs, B, T);
    if (st != LM_OK) return st;
    acts *a = t->acts;
    size_t V = (size_t)t->model->cfg.vocab_size;
    /* the gradient overwrites the logits row by row */
    *loss = lm_cross_entropy(a->logits, a->logits, targets, (size_t)B * T, V, grad_scale);
    t->last_reg = 0;
    if (t->linearity_reg > 0) {
        t->last_reg = cosine_reg(t, t->linearity_reg * grad_scale);
        *loss += t->linearity_reg * t->last_reg;
    }
    if (!isfinite(*loss)) return lm_fail(LM_ERR_RANGE, "train: the loss is %g (not finite)", *loss);
    backward(t, inputs);
    return LM_OK;
}

lm_status lm_train_eval_loss(lm_trainable *t, const int32_t *inputs, const int32_t *targets, int B, int T, double *loss) {
    lm_status st = forward(t, inputs, B, T);
    if (st != LM_OK) return st;
    acts *a = t->acts;
    *loss = lm_cross_entropy(NULL, a->logits, targets, (size_t)B * T, (size_t)t->model->cfg.vocab_size, 1.0f);
    return LM_OK; /* the evaluation loss is the cross-entropy alone, with or without the regulariser */
}

double lm_grad_norm(const lm_trainable *t) {
    double s = 0;
    for (size_t i = 0; i < t->n_floats; i++) s += (double)t->grads[i] * t->grads[i];
    return sqrt(s);
}

void lm_adamw_step(lm_trainable *t, lm_adamw *opt, float clip_scale) {
    opt->step++;
    double bc1 = 1.0 - pow(opt->beta1, (double)opt->step), bc2 = 1.0 - pow(opt->beta2, (double)opt->step);
    float lr = opt->lr, b1 = opt->beta1, b2 = opt->beta2, eps = opt->eps, wd = opt->weight_decay;
    for (size_t i = 0; i < t->n_table; i++) {
        const lm_param *p = &t->table[i];
        float *w = t->params + p->offset, *g = t->grads + p->offset;
        float *mm = t->adam_m + p->offset, *vv = t->adam_v + p->offset;
        float decay = p->decay ? wd : 0.0f;
#pragma omp parallel for simd schedule(static) if (p->size > 65536)
        for (size_t j = 0; j < p->size; j++) {
            float gj = g[j] * clip_scale;
            mm[j] = b1 * mm[j] + (1.0f - b1) * gj;
            vv[j] = b2 * vv[j] + (1.0f - b2) * gj * gj;
            float mhat = (float)(mm[j] / bc1), vhat = (float)(vv[j] / bc2);
            w[j] -= lr * (mhat / (sqrtf(vhat) + eps) + decay * w[j]);
        }
    }
}

float lm_lr_schedule(long step, long warmup, long total, float max_lr, float min_lr) {
    if (warmup > 0 && step < warmup) return max_lr * (float)(step + 1) / (float)warmup;
    if (step >= total || total <= warmup) return min_lr;
    double progress = (double)(step - warmup) / (double)(total - warmup);
    return min_lr + 0.5f * (max_lr - min_lr) * (float)(1.0 + cos(3.14159265358979323846 * progress));
}
