/* sae_eval.c - lm_sae_eval: reconstruction quality, sparsity and downstream cross-entropy of an SAE
 * spliced into a model at its hook (definitions in sae.h).
 *
 * Each batch of windows is run three times on the same states: clean (no hooks), with the SAE hook
 * (activation <- x_hat, statistics accumulated) and with the zero hook (activation <- 0). The windows,
 * batch sizes and the per-position cross-entropy are those of lm_eval_ce, so ce_clean equals its
 * mean_ce. FVU's denominator is accumulated in one pass as sum ||x||^2 - N ||mean||^2 (doubles). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lumen/model.h"
#include "lumen/sae.h"

typedef struct ev_hook {
    const lm_sae *sae;
    float *f, *xh;        /* scratch [max_rows, d_sae], [max_rows, d_in] */
    size_t max_rows;
    double sse, sum_sq;   /* sum ||x - x_hat||^2, sum ||x||^2 */
    double *sum_x;        /* [d_in] */
    uint64_t *fired;      /* [d_sae] */
    uint64_t active, rows;
} ev_hook;

static lm_status sae_hook(void *ud, const lm_hook_info *info, float *act) {
    ev_hook *h = ud;
    const lm_sae *sae = h->sae;
    size_t rows = (size_t)info->n_seq * (size_t)info->n_tok, d = sae->d_in, ds = sae->d_sae;
    if ((size_t)info->d != d)
        return lm_fail(LM_ERR_ARG, "sae eval: hook %s has width %d, the SAE's d_in is %zu", info->name, info->d, d);
    if (rows > h->max_rows) return lm_fail(LM_ERR_ARG, "sae eval: %zu rows exceed the scratch of %zu", rows, h->max_rows);
    lm_status st = lm_sae_encode(sae, h->f, act, rows);
    if (st != LM_OK) return st;
    lm_sae_decode(sae, h->xh, h->f, rows);
    for (size_t t = 0; t < rows; t++) {
        const float *x = act + t * d, *xh = h->xh + t * d, *f = h->f + t * ds;
        double se = 0, sq = 0;
        for (size_t j = 0; j < d; j++) {
            double e = (double)x[j] - (double)xh[j];
            se += e * e;
            sq += (double)x[j] * x[j];
            h->sum_x[j] += x[j];
        }
        h->sse += se;
        h->sum_sq += sq;
        for (size_t i = 0; i < ds; i++)
            if (f[i] != 0.0f) {
                h->fired[i]++;
                h->active++;
            }
    }
    h->rows += rows;
    memcpy(act, h->xh, rows * d * sizeof(float));
    return LM_OK;
}

static lm_status zero_hook(void *ud, const lm_hook_info *info, float *act) {
    (void)ud;
    memset(act, 0, (size_t)info->n_seq * (size_t)info->n_tok * (size_t)info->d * sizeof(float));
    return LM_OK;
}

/* log-sum-exp of logits[V] and the max, as lm_eval_ce's nll computes them (float max, double sum) */
static double lse(const float *l, size_t V, float *mxo) {
    float mx = l[0];
    for (size_t i = 1; i < V; i++)
        if (l[i] > mx) mx = l[i];
    double sum = 0;
    for (size_t i = 0; i < V; i++) sum += exp((double)l[i] - mx);
    *mxo = mx;
    return log(sum);
}

static double nll(const float *l, size_t V, int target) {
    float mx;
    double ls = lse(l, V, &mx);
    return ls + mx - l[target];
}

/* KL(p || q) for p = softmax(a), q = softmax(b) */
static double kl_div(const float *a, const float *b, size_t V) {
    float ma, mb;
    double la = lse(a, V, &ma) + ma, lb = lse(b, V, &mb) + mb, kl = 0;
    for (size_t i = 0; i < V; i++) {
        double lpa = (double)a[i] - la, lpb = (double)b[i] - lb;
        kl += exp(lpa) * (lpa - lpb);
    }
    return kl > 0 ? kl : 0;
}

typedef struct acc {
    double clean, sae, abl, kl;
    size_t pred;
} acc;

/* Runs one group of nb windows of len tokens three ways and accumulates. batched: lm_forward_batch
 * on s, else lm_forward (one sequence). */
static lm_status run_group(const lm_model *m, lm_state *s, int batched, const int32_t *win, int nb, int len,
                           float *lc, float *lx, const char *hook, ev_hook *h, acc *a) {
    size_t V = (size_t)m->cfg.vocab_size;
    lm_status st;
#define FWD(buf) (batched ? lm_forward_batch(m, s, win, nb, len, (buf), 1) : lm_forward(m, s, win, len, (buf), 1))
    lm_state_clear_hooks(s);
    lm_state_reset(s);
    st = FWD(lc);
    if (st != LM_OK) return st;
    st = lm_state_add_hook(s, hook, sae_hook, h);
    if (st != LM_OK) return st;
    lm_state_reset(s);
    st = FWD(lx);
    lm_state_clear_hooks(s);
    if (st != LM_OK) return st;
    for (int b = 0; b < nb; b++)
        for (int t = 0; t + 1 < len; t++) {
            size_t r = (size_t)b * (size_t)len + (size_t)t;
            int tgt = win[r + 1];
            a->clean += nll(lc + r * V, V, tgt);
            a->sae += nll(lx + r * V, V, tgt);
            a->kl += kl_div(lc + r * V, lx + r * V, V);
            a->pred++;
        }
    st = lm_state_add_hook(s, hook, zero_hook, NULL);
    if (st != LM_OK) return st;
    lm_state_reset(s);
    st = FWD(lx);
    lm_state_clear_hooks(s);
    if (st != LM_OK) return st;
    for (int b = 0; b < nb; b++)
        for (int t = 0; t + 1 < len; t++) {
            size_t r = (size_t)b * (size_t)len + (size_t)t;
            a->abl += nll(lx + r * V, V, win[r + 1]);
        }
#undef FWD
    return LM_OK;
}

lm_status lm_sae_eval(const lm_model *m, const lm_sae *sae, const int32_t *ids, size_t n, const lm_sae_eval_opts *o,
                      lm_sae_eval_result *res) {
    memset(res, 0, sizeof *res);
    lm_sae_eval_opts def;
    memset(&def, 0, sizeof def);
    if (!o) o = &def;
    const char *hook = o->hook ? o->hook : sae->hook_name;
    if (!hook || !*hook) return lm_fail(LM_ERR_ARG, "sae eval: no hook (the SAE names none; give one)");
    lm_hook_point pt;
    int layer;
    lm_status st = lm_hook_parse(m, hook, &pt, &layer);
    if (st != LM_OK) return st;
    int ctx = o->ctx, batch = o->batch;
    if (ctx <= 1) ctx = m->cfg.seq_len;
    if (ctx > m->cfg.seq_len)
        return lm_fail(LM_ERR_RANGE, "sae eval: window of %d tokens exceeds the model's context of %d", ctx,
                       m->cfg.seq_len);
    if (batch <= 0) batch = 1;
    double dense_thr = o->dense_threshold > 0 ? (double)o->dense_threshold : 0.1;
    size_t V = (size_t)m->cfg.vocab_size;
    /* the same batch bound as lm_eval_ce (so the clean pass is its computation) */
    while (batch > 1 && (size_t)batch * (size_t)ctx * V > ((size_t)64 << 20)) batch /= 2;
    size_t rows = (size_t)batch * (size_t)ctx;
    ev_hook h;
    memset(&h, 0, sizeof h);
    h.sae = sae;
    h.max_rows = rows;
    float *lc = lm_malloc(rows * V, sizeof(float)), *lx = lm_malloc(rows * V, sizeof(float));
    h.f = lm_malloc(rows * sae->d_sae, sizeof(float));
    h.xh = lm_malloc(rows * sae->d_in, sizeof(float));
    h.sum_x = calloc(sae->d_in, sizeof(double));
    h.fired = calloc(sae->d_sae, sizeof(uint64_t));
    lm_state *sb = NULL, *s1 = NULL;
    if (!lc || !lx || !h.f || !h.xh || !h.sum_x || !h.fired) st = lm_fail(LM_ERR_NOMEM, "sae eval: out of memory");
    if (st == LM_OK) st = lm_state_new_batch(m, ctx, batch * ctx, batch, &sb);
    if (st == LM_OK) st = lm_state_new(m, ctx, ctx, &s1);
    double t0 = lm_now();
    acc a;
    memset(&a, 0, sizeof a);
    size_t n_full = n / (size_t)ctx, windows = 0;
    for (size_t w = 0; st == LM_OK && w < n_full; w += (size_t)batch) {
        int nb = (int)(n_full - w < (size_t)batch ? n_full - w : (size_t)batch);
        st = run_group(m, sb, 1, ids + w * (size_t)ctx, nb, ctx, lc, lx, hook, &h, &a);
        windows += (size_t)nb;
    }
    size_t rest = n - n_full * (size_t)ctx;
    if (st == LM_OK && rest >= 2) {
        st = run_group(m, s1, 0, ids + n_full * (size_t)ctx, 1, (int)rest, lc, lx, hook, &h, &a);
        windows++;
    }
    if (st == LM_OK && (a.pred == 0 || h.rows == 0))
        st = lm_fail(LM_ERR_ARG, "sae eval: need at least 2 tokens in a window to score");
    if (st == LM_OK) {
        double N = (double)h.rows, d = (double)sae->d_in;
        double mean_sq = 0;
        for (size_t j = 0; j < sae->d_in; j++) {
            double mu = h.sum_x[j] / N;
            mean_sq += mu * mu;
        }
        double var = h.sum_sq - N * mean_sq;
        res->mse = h.sse / (N * d);
        res->fvu = var > 0 ? h.sse / var : (h.sse > 0 ? INFINITY : 0.0);
        res->l0 = (double)h.active / N;
        for (size_t i = 0; i < sae->d_sae; i++) {
            if (h.fired[i] == 0) res->n_dead++;
            if ((double)h.fired[i] > dense_thr * N) res->n_dense++;
        }
        res->dead_fraction = (double)res->n_dead / (double)sae->d_sae;
        res->dense_fraction = (double)res->n_dense / (double)sae->d_sae;
        double P = (double)a.pred;
        res->ce_clean = a.clean / P;
        res->ce_sae = a.sae / P;
        res->ce_ablated = a.abl / P;
        double den = res->ce_ablated - res->ce_clean;
        res->ce_loss_recovered = den != 0 ? (res->ce_ablated - res->ce_sae) / den : NAN;
        res->kl = a.kl / P;
        res->n_tokens = h.rows;
        res->n_predicted = a.pred;
        res->n_windows = windows;
        res->seconds = lm_now() - t0;
    }
    lm_state_free(sb);
    lm_state_free(s1);
    free(lc);
    free(lx);
    free(h.f);
    free(h.xh);
    free(h.sum_x);
    free(h.fired);
    return st;
}
