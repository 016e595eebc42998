/* sae_train.c - SAE losses with their explicit backward passes (ReLU + decoder-norm-weighted L1;
 * TopK + AuxK), gradient buffers, Adam, and the April 2024 schedules. A training loop composes
 * these: loss_backward -> grad_clip -> adam_step, with l1_at / lr_at per step. */
#include "lumen/sae.h"
#include "lumen/tensor.h"
#include "sae_internal.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

lm_status lm_sae_grad_init(lm_sae_grad *g, const lm_sae *sae) {
    memset(g, 0, sizeof *g);
    g->data = lm_aligned_alloc(sae->n_params, sizeof(float));
    if (!g->data) return lm_fail(LM_ERR_NOMEM, "sae: out of memory for %zu gradients", sae->n_params);
    g->n = sae->n_params;
    memset(g->data, 0, g->n * sizeof(float));
    g->W_enc = g->data + (sae->W_enc - sae->params);
    g->b_enc = g->data + (sae->b_enc - sae->params);
    g->W_dec = g->data + (sae->W_dec - sae->params);
    g->b_dec = g->data + (sae->b_dec - sae->params);
    g->threshold = sae->threshold ? g->data + (sae->threshold - sae->params) : NULL;
    return LM_OK;
}

void lm_sae_grad_zero(lm_sae_grad *g) {
    if (g->data) memset(g->data, 0, g->n * sizeof(float));
}

void lm_sae_grad_free(lm_sae_grad *g) {
    free(g->data);
    memset(g, 0, sizeof *g);
}

double lm_sae_grad_clip(lm_sae_grad *g, double max_norm) {
    double s = 0;
    for (size_t i = 0; i < g->n; i++) s += (double)g->data[i] * g->data[i];
    double norm = sqrt(s);
    if (max_norm > 0 && norm > max_norm) {
        float sc = (float)(max_norm / norm);
        for (size_t i = 0; i < g->n; i++) g->data[i] *= sc;
    }
    return norm;
}

/* The encoder half of every backward: given dpre [n, d_sae] and the encoder's input xc,
 *   db_enc += sum_t dpre_t;  dW_enc += xc^T @ dpre;  db_dec -= W_enc @ sum_t dpre_t (if b_dec was
 *   subtracted from the input). colsum, if non-NULL, already holds sum_t dpre_t. */
static lm_status encoder_backward(const lm_sae *sae, lm_sae_grad *g, const float *dpre, const float *xc, size_t n,
                                  const float *colsum) {
    const size_t d_in = sae->d_in, d_sae = sae->d_sae;
    float *s = NULL;
    if (!colsum) {
        s = lm_calloc(d_sae, sizeof *s);
        if (!s) return lm_fail(LM_ERR_NOMEM, "sae: out of memory");
        lm_linear_backward(NULL, NULL, s, dpre, NULL, NULL, n, d_in, d_sae); /* s = column sums of dpre */
        colsum = s;
    }
    for (size_t i = 0; i < d_sae; i++) g->b_enc[i] += colsum[i];
    /* dW_enc[d_in, d_sae] += xc[n, d_in]^T @ dpre[n, d_sae] */
    lm_linear_backward(NULL, g->W_enc, NULL, xc, dpre, NULL, n, d_sae, d_in);
    if (sae->apply_b_dec_to_input) {
#pragma omp parallel for schedule(static) if (sae_par((double)d_in * d_sae))
        for (size_t j = 0; j < d_in; j++) {
            const float *w = sae->W_enc + j * d_sae;
            double a = 0;
            for (size_t i = 0; i < d_sae; i++) a += (double)w[i] * colsum[i];
            g->b_dec[j] -= (float)a;
        }
    }
    free(s);
    return LM_OK;
}

/* mse and dxhat = (2/n)(x_hat - x) in place of x_hat; e (if non-NULL) = x - x_hat. */
static double mse_grad(float *xh, float *e, const float *x, size_t n, size_t d) {
    double s = 0;
    const float sc = 2.0f / (float)n;
#pragma omp parallel for schedule(static) reduction(+ : s) if (sae_par((double)n * d))
    for (size_t t = 0; t < n; t++) {
        double r = 0;
        for (size_t j = 0; j < d; j++) {
            size_t q = t * d + j;
            float diff = xh[q] - x[q];
            r += (double)diff * diff;
            if (e) e[q] = -diff;
            xh[q] = sc * diff;
        }
        s += r;
    }
    return s / (double)n;
}

static void colsum_into(float *acc, const float *y, size_t n, size_t d) {
    lm_linear_backward(NULL, NULL, acc, y, NULL, NULL, n, 1, d);
}

/* One pass over the ReLU activations f [n, d], each thread owning a slice of the columns and
 * walking the rows (long contiguous runs): cnt[i] = rows where f_ti > 0, fs[i] = sum_t f_ti, and,
 * when df is non-NULL (it holds dL/df = dxhat @ W_dec^T), df_ti <- f_ti > 0 ? df_ti + ln ||W_dec,i||
 * : 0 (the gradient of the pre-activations) with ds[i] = sum_t df_ti. fs and ds are double. */
static void relu_columns(const float *f, float *df, const float *norms, float ln, size_t n, size_t d, uint32_t *cnt,
                         double *fs, double *ds) {
#pragma omp parallel if (sae_par((double)n * d))
    {
        size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
        size_t chunk = ((d + nt - 1) / nt + 15) / 16 * 16, c0 = id * chunk < d ? id * chunk : d;
        size_t c1 = c0 + chunk < d ? c0 + chunk : d, w = c1 - c0;
        uint32_t *ac = cnt + c0;
        double *af = fs + c0, *ad = ds ? ds + c0 : NULL;
        const float *nm = norms + c0;
        for (size_t j = 0; j < w; j++) {
            ac[j] = 0;
            af[j] = 0;
            if (ad) ad[j] = 0;
        }
        for (size_t t = 0; t < n && w; t++) {
            const float *r = f + t * d + c0;
#pragma omp simd
            for (size_t j = 0; j < w; j++) {
                ac[j] += r[j] > 0;
                af[j] += r[j];
            }
            if (df) {
                float *q = df + t * d + c0;
#pragma omp simd
                for (size_t j = 0; j < w; j++) {
                    float v = q[j] + ln * nm[j];
                    q[j] = r[j] > 0 ? v : 0.0f;
                }
#pragma omp simd
                for (size_t j = 0; j < w; j++) ad[j] += q[j]; /* apart: gcc does not if-convert the mixed widths */
            }
        }
    }
}

static lm_status relu_loss(const lm_sae *sae, lm_sae_grad *g, const float *x, size_t n, const lm_sae_loss_opts *o,
                           lm_sae_loss *L, uint64_t *fired) {
    const size_t d_in = sae->d_in, d_sae = sae->d_sae;
    const float lam = o ? o->l1_coeff : 0.0f;
    float *xc = NULL, *f = lm_malloc(n * d_sae, sizeof *f), *xh = lm_malloc(n * d_in, sizeof *xh);
    float *norms = lm_malloc(d_sae, sizeof *norms), *dsf = lm_malloc(d_sae, sizeof *dsf);
    double *fs = lm_malloc(d_sae, sizeof *fs), *ds = lm_malloc(d_sae, sizeof *ds);
    uint32_t *cnt = lm_malloc(d_sae, sizeof *cnt);
    float *df = g ? lm_malloc(n * d_sae, sizeof *df) : NULL;
    lm_status st = LM_OK;
    if (!f || !xh || !norms || !dsf || !fs || !ds || !cnt || (g && !df)) {
        st = lm_fail(LM_ERR_NOMEM, "sae: out of memory for a batch of %zu rows", n);
        goto done;
    }
    if ((st = sae_center(sae, x, n, &xc))) goto done;
    const float *xin = xc ? xc : x;
    sae_pre_centered(sae, f, xin, n);
    sae_activate_dense(sae, f, n); /* f > 0 exactly where pre > 0: f is also the ReLU mask */
    lm_sae_decode(sae, xh, f, n);
    L->mse = mse_grad(xh, NULL, x, n, d_in); /* xh now holds dL/dx_hat */
#pragma omp parallel for schedule(static) if (sae_par((double)d_sae * d_in))
    for (size_t i = 0; i < d_sae; i++) {
        double s = 0;
        for (size_t j = 0; j < d_in; j++) s += (double)sae->W_dec[i * d_in + j] * sae->W_dec[i * d_in + j];
        norms[i] = (float)sqrt(s);
    }
    const float ln = lam / (float)n;
    if (g) lm_linear_f32(df, xh, sae->W_dec, NULL, n, d_in, d_sae); /* df = dxhat @ W_dec^T */
    /* with df: df <- (df + (lam/n) ||W_dec,i||) gated by the ReLU, the gradient of pre */
    relu_columns(f, df, norms, ln, n, d_sae, cnt, fs, g ? ds : NULL);
    double sp = 0, l0 = 0;
    for (size_t i = 0; i < d_sae; i++) {
        sp += fs[i] * norms[i];
        l0 += cnt[i];
        if (fired) fired[i] += cnt[i];
    }
    L->sparsity = sp / (double)n;
    L->l0 = l0 / (double)n;
    L->aux = 0;
    L->total = L->mse + lam * L->sparsity;
    if (!g) goto done;

    /* decoder: dW_dec += f^T @ dxhat + (lam/n) (sum_t f_ti) W_dec,i / ||W_dec,i||; db_dec += sum dxhat */
    lm_linear_backward(NULL, g->W_dec, NULL, f, xh, NULL, n, d_in, d_sae);
    if (lam != 0) {
#pragma omp parallel for schedule(static) if (sae_par((double)d_sae * d_in))
        for (size_t i = 0; i < d_sae; i++) {
            if (fs[i] == 0 || norms[i] == 0) continue;
            float a = ln * (float)fs[i] / norms[i];
            for (size_t j = 0; j < d_in; j++) g->W_dec[i * d_in + j] += a * sae->W_dec[i * d_in + j];
        }
    }
    colsum_into(g->b_dec, xh, n, d_in);
    for (size_t i = 0; i < d_sae; i++) dsf[i] = (float)ds[i];
    st = encoder_backward(sae, g, df, xin, n, dsf);
done:
    free(xc);
    free(f);
    free(xh);
    free(norms);
    free(fs);
    free(ds);
    free(dsf);
    free(cnt);
    free(df);
    return st;
}

/* dpre[t, idx] += gate(val) * (dy_t . W_dec[idx]) and dW_dec[idx] += val * dy_t for the kk
 * latents (idx, val) [n, kk] of each row. gate: only where val > 0 (the ReLU after top-k), or
 * everywhere (AuxK uses raw pre-activations). dW_dec is sliced by columns across threads so no
 * two threads touch the same element. */
static void sparse_backward(const lm_sae *sae, lm_sae_grad *g, float *dpre, const int32_t *idx, const float *val,
                            size_t n, size_t kk, const float *dy, int relu_gate) {
    const size_t d_in = sae->d_in, d_sae = sae->d_sae;
    const float *W = sae->W_dec;
#pragma omp parallel for schedule(static) if (sae_par((double)n * kk * d_in))
    for (size_t t = 0; t < n; t++)
        for (size_t j = 0; j < kk; j++) {
            size_t q = t * kk + j;
            if (relu_gate && !(val[q] > 0)) continue;
            const float *w = W + (size_t)idx[q] * d_in, *y = dy + t * d_in;
            float s = 0;
#pragma omp simd reduction(+ : s)
            for (size_t c = 0; c < d_in; c++) s += y[c] * w[c];
            dpre[t * d_sae + (size_t)idx[q]] += s;
        }
#pragma omp parallel if (sae_par((double)n * kk * d_in))
    {
        size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
        size_t chunk = (d_in + nt - 1) / nt, c0 = id * chunk < d_in ? id * chunk : d_in;
        size_t c1 = c0 + chunk < d_in ? c0 + chunk : d_in;
        for (size_t t = 0; t < n && c0 < c1; t++)
            for (size_t j = 0; j < kk; j++) {
                float a = val[t * kk + j];
                if (a == 0) continue;
                float *gw = g->W_dec + (size_t)idx[t * kk + j] * d_in;
                const float *y = dy + t * d_in;
#pragma omp simd
                for (size_t c = c0; c < c1; c++) gw[c] += a * y[c];
            }
    }
}

/* encoder_backward for a dpre [n, d_sae] that is zero outside the k latents idx of each row and
 * its kk AuxK latents aidx (which may repeat one of idx): the products only over those entries.
 * The entries are bucketed by latent (a counting sort); then each thread takes blocks of 16
 * latents, sums dpre_ti * xc_t over each latent's rows into a [16, d_in] block, and adds the block
 * to the 16 adjacent columns of dW_enc. Also db_enc and the b_dec term, as encoder_backward. */
static lm_status sparse_encoder_backward(const lm_sae *sae, lm_sae_grad *g, const float *dpre, const float *xc,
                                         size_t n, const int32_t *idx, size_t k, const int32_t *aidx, size_t kk) {
    enum { BL = 16 };
    const size_t d_in = sae->d_in, d_sae = sae->d_sae;
    size_t *off = lm_calloc(d_sae + 1, sizeof *off);
    size_t *pos = lm_malloc(d_sae, sizeof *pos);
    int32_t *rows = lm_malloc(n * (k + kk) + 1, sizeof *rows);
    float *s = lm_malloc(d_sae, sizeof *s);
    if (!off || !pos || !rows || !s) {
        free(off);
        free(pos);
        free(rows);
        free(s);
        return lm_fail(LM_ERR_NOMEM, "sae: out of memory");
    }
    /* an AuxK entry that is also one of the row's top k is the same element of dpre: once only */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            for (size_t i = 0; i < d_sae; i++) off[i + 1] += off[i];
            memcpy(pos, off, d_sae * sizeof *pos);
        }
        for (size_t t = 0; t < n; t++) {
            for (size_t j = 0; j < k; j++) {
                size_t i = (size_t)idx[t * k + j];
                if (pass == 0) off[i + 1]++;
                else rows[pos[i]++] = (int32_t)t;
            }
            for (size_t j = 0; j < kk; j++) {
                size_t i = (size_t)aidx[t * kk + j], r;
                for (r = 0; r < k && (size_t)idx[t * k + r] != i; r++) {
                }
                if (r < k) continue;
                if (pass == 0) off[i + 1]++;
                else rows[pos[i]++] = (int32_t)t;
            }
        }
    }
    const size_t nb = (d_sae + BL - 1) / BL;
    int nomem = 0;
#pragma omp parallel if (sae_par((double)n * (k + kk) * d_in)) reduction(| : nomem)
    {
        float *acc = lm_malloc(BL * d_in, sizeof *acc);
        if (!acc) nomem = 1;
#pragma omp for schedule(dynamic, 4)
        for (size_t b = 0; b < nb; b++) {
            if (!acc) continue;
            const size_t i0 = b * BL, w = d_sae - i0 < BL ? d_sae - i0 : BL;
            memset(acc, 0, BL * d_in * sizeof *acc);
            for (size_t u = 0; u < w; u++) {
                const size_t i = i0 + u;
                float *a = acc + u * d_in, si = 0;
                for (size_t q = off[i]; q < off[i + 1]; q++) {
                    const size_t t = (size_t)rows[q];
                    const float v = dpre[t * d_sae + i], *xr = xc + t * d_in;
                    si += v;
#pragma omp simd
                    for (size_t c = 0; c < d_in; c++) a[c] += v * xr[c];
                }
                s[i] = si;
            }
            for (size_t c = 0; c < d_in; c++) {
                float *gw = g->W_enc + c * d_sae + i0;
                for (size_t u = 0; u < w; u++) gw[u] += acc[u * d_in + c];
            }
        }
        free(acc);
    }
    lm_status st = LM_OK;
    if (nomem) st = lm_fail(LM_ERR_NOMEM, "sae: out of memory");
    else {
        for (size_t i = 0; i < d_sae; i++) g->b_enc[i] += s[i];
        if (sae->apply_b_dec_to_input) {
#pragma omp parallel for schedule(static) if (sae_par((double)d_in * d_sae))
            for (size_t j = 0; j < d_in; j++) {
                const float *w = sae->W_enc + j * d_sae;
                double a = 0;
                for (size_t i = 0; i < d_sae; i++) a += (double)w[i] * s[i];
                g->b_dec[j] -= (float)a;
            }
        }
    }
    free(off);
    free(pos);
    free(rows);
    free(s);
    return st;
}

static lm_status topk_loss(const lm_sae *sae, lm_sae_grad *g, const float *x, size_t n, const lm_sae_loss_opts *o,
                           lm_sae_loss *L, uint64_t *fired) {
    const size_t d_in = sae->d_in, d_sae = sae->d_sae, k = sae->k;
    const uint8_t *dead = o ? o->dead : NULL;
    size_t n_dead = 0;
    if (dead)
        for (size_t i = 0; i < d_sae; i++) n_dead += dead[i] != 0;
    size_t k_aux = o && o->k_aux ? o->k_aux : d_in / 2;
    if (k_aux == 0) k_aux = 1;
    const size_t kk = n_dead < k_aux ? n_dead : k_aux;
    const double aux_scale = (o && o->aux_coeff > 0 ? o->aux_coeff : 1.0 / 32) *
                             ((double)n_dead / k_aux < 1 ? (double)n_dead / k_aux : 1.0);

    float *xc = NULL, *pre = lm_malloc(n * d_sae, sizeof *pre), *xh = lm_malloc(n * d_in, sizeof *xh);
    int32_t *idx = lm_malloc(n * k, sizeof *idx), *aidx = kk ? lm_malloc(n * kk, sizeof *aidx) : NULL;
    float *val = lm_malloc(n * k, sizeof *val), *aval = kk ? lm_malloc(n * kk, sizeof *aval) : NULL;
    float *e = kk ? lm_malloc(n * d_in, sizeof *e) : NULL;
    lm_status st = LM_OK;
    if (!pre || !xh || !idx || !val || (kk && (!aidx || !aval || !e))) {
        st = lm_fail(LM_ERR_NOMEM, "sae: out of memory for a batch of %zu rows", n);
        goto done;
    }
    if ((st = sae_center(sae, x, n, &xc))) goto done;
    const float *xin = xc ? xc : x;
    sae_pre_centered(sae, pre, xin, n);
#pragma omp parallel for schedule(static) if (sae_par((double)n * d_sae))
    for (size_t t = 0; t < n; t++) {
        sae_topk_row(pre + t * d_sae, d_sae, k, NULL, idx + t * k, val + t * k);
        for (size_t j = 0; j < k; j++) val[t * k + j] = val[t * k + j] > 0 ? val[t * k + j] : 0.0f;
        if (kk) sae_topk_row(pre + t * d_sae, d_sae, kk, dead, aidx + t * kk, aval + t * kk);
    }
    sae_decode_sparse_into(sae, xh, sae->b_dec, idx, val, n, k);
    L->mse = mse_grad(xh, e, x, n, d_in); /* xh: dL/dx_hat; e: the residual x - x_hat */
    double l0 = 0;
    for (size_t q = 0; q < n * k; q++)
        if (val[q] != 0) {
            l0 += 1;
            if (fired) fired[idx[q]]++;
        }
    L->l0 = l0 / (double)n;
    L->sparsity = 0;
    L->aux = 0;
    if (kk) {
        /* e <- e_hat - e = z @ W_dec - e, then the loss and de_hat = (2 s / n)(e_hat - e) in place */
        float *eh = pre; /* pre is no longer needed once both selections are made */
        sae_decode_sparse_into(sae, eh, NULL, aidx, aval, n, kk);
        double s = 0;
        const float sc = (float)(2.0 * aux_scale / (double)n);
        for (size_t q = 0; q < n * d_in; q++) {
            float dlt = eh[q] - e[q];
            s += (double)dlt * dlt;
            e[q] = sc * dlt;
        }
        L->aux = aux_scale * s / (double)n;
    }
    L->total = L->mse + L->aux;
    if (!g) goto done;

    float *dpre = pre;
    memset(dpre, 0, n * d_sae * sizeof *dpre);
    sparse_backward(sae, g, dpre, idx, val, n, k, xh, 1);
    if (kk) sparse_backward(sae, g, dpre, aidx, aval, n, kk, e, 0);
    colsum_into(g->b_dec, xh, n, d_in);
    /* dpre has k + kk nonzeros a row: past a few percent of d_sae the dense product is cheaper */
    if ((k + kk) * 16 <= d_sae) st = sparse_encoder_backward(sae, g, dpre, xin, n, idx, k, aidx, kk);
    else st = encoder_backward(sae, g, dpre, xin, n, NULL);
done:
    free(xc);
    free(pre);
    free(xh);
    free(idx);
    free(val);
    free(aidx);
    free(aval);
    free(e);
    return st;
}

lm_status lm_sae_loss_backward(const lm_sae *sae, lm_sae_grad *g, const float *x, size_t n, const lm_sae_loss_opts *o,
                               lm_sae_loss *loss, uint64_t *fired) {
    lm_sae_loss tmp;
    if (!loss) loss = &tmp;
    memset(loss, 0, sizeof *loss);
    if (n == 0) return lm_fail(LM_ERR_ARG, "sae loss: empty batch");
    if (g && g->n != sae->n_params) return lm_fail(LM_ERR_ARG, "sae loss: gradient of %zu for %zu parameters", g->n, sae->n_params);
    switch (sae->arch) {
    case LM_SAE_RELU: return relu_loss(sae, g, x, n, o, loss, fired);
    case LM_SAE_TOPK: return topk_loss(sae, g, x, n, o, loss, fired);
    case LM_SAE_JUMPRELU: return sae_jumprelu_loss(sae, g, x, n, o, loss, fired); /* sae_jumprelu.c */
    default: return lm_fail(LM_ERR_UNSUPPORTED, "sae loss: training a %s SAE is not supported", lm_sae_arch_name(sae->arch));
    }
}

/* ---- Adam ------------------------------------------------------------------------------------ */

lm_status lm_sae_adam_init(lm_sae_adam *a, const lm_sae *sae) {
    memset(a, 0, sizeof *a);
    a->m = lm_calloc(sae->n_params, sizeof(float));
    a->v = lm_calloc(sae->n_params, sizeof(float));
    if (!a->m || !a->v) {
        lm_sae_adam_free(a);
        return lm_fail(LM_ERR_NOMEM, "sae: out of memory for Adam state of %zu parameters", sae->n_params);
    }
    a->n = sae->n_params;
    a->beta1 = 0.9f;
    a->beta2 = 0.999f;
    a->eps = 1e-8f;
    return LM_OK;
}

void lm_sae_adam_free(lm_sae_adam *a) {
    free(a->m);
    free(a->v);
    memset(a, 0, sizeof *a);
}

lm_status lm_sae_adam_step(lm_sae_adam *a, lm_sae *sae, const lm_sae_grad *g, float lr) {
    if (a->n != sae->n_params || g->n != sae->n_params)
        return lm_fail(LM_ERR_ARG, "sae adam: sizes differ (state %zu, grad %zu, params %zu)", a->n, g->n, sae->n_params);
    a->t++;
    const float b1 = a->beta1, b2 = a->beta2, eps = a->eps;
    const float c1 = (float)(1.0 - pow(b1, (double)a->t)), c2 = (float)(1.0 - pow(b2, (double)a->t));
    float *p = sae->params, *m = a->m, *v = a->v;
    const float *gd = g->data;
    const size_t n = a->n;
#pragma omp parallel for schedule(static) if (sae_par((double)n * 8))
    for (size_t i = 0; i < n; i++) {
        m[i] = b1 * m[i] + (1 - b1) * gd[i];
        v[i] = b2 * v[i] + (1 - b2) * gd[i] * gd[i];
        p[i] -= lr * (m[i] / c1) / (sqrtf(v[i] / c2) + eps);
    }
    return LM_OK;
}

float lm_sae_l1_at(float l1_coeff, uint64_t step, uint64_t total) {
    double warm = 0.05 * (double)total;
    if ((double)step >= warm || warm <= 0) return l1_coeff;
    return (float)(l1_coeff * ((double)step / warm));
}

float lm_sae_lr_at(float lr, uint64_t step, uint64_t total) {
    double start = 0.8 * (double)total, len = (double)total - start;
    if ((double)step < start || len <= 0) return lr;
    if (step >= total) return 0.0f;
    return (float)(lr * (((double)total - (double)step) / len));
}
