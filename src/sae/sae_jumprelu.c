/* sae_jumprelu.c - the JumpReLU training loss of Rajamanoharan et al. 2024 ("Jumping Ahead"):
 *   f = pre * H(pre - theta),  L = mean_t ( ||x_t - x_hat_t||^2 + lambda * ||f_t||_0 )
 * The step H has no useful derivative, so theta gets the paper's straight-through estimates with
 * a rectangle kernel K(u) = 1{|u| < 1/2} of bandwidth eps:
 *   d f / d theta  := -(theta / eps) K((pre - theta) / eps)
 *   d H / d theta  := -(1 / eps) K((pre - theta) / eps)
 * while pre gets the exact gradient of f where the unit is active (H = 1) and none through the L0
 * term. The gradient is taken with respect to theta itself; the trainer applies the log-threshold
 * parameterisation (SAELens') around its Adam step. */
#include "lumen/sae.h"
#include "lumen/tensor.h"
#include "sae_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

lm_status sae_jumprelu_loss(const lm_sae *sae, lm_sae_grad *g, const float *x, size_t n, const lm_sae_loss_opts *o,
                            lm_sae_loss *L, uint64_t *fired) {
    const size_t d_in = sae->d_in, d_sae = sae->d_sae;
    const float lam = o ? o->l1_coeff : 0.0f;
    const float eps = o && o->bandwidth > 0 ? o->bandwidth : 0.001f;
    const float *th = sae->threshold;
    float *xc = NULL, *pre = lm_malloc(n * d_sae, sizeof *pre), *f = lm_malloc(n * d_sae, sizeof *f);
    float *xh = lm_malloc(n * d_in, sizeof *xh), *gf = g ? lm_malloc(n * d_sae, sizeof *gf) : NULL;
    float *s = g ? lm_calloc(d_sae, sizeof *s) : NULL;
    lm_status st = LM_OK;
    if (!pre || !f || !xh || (g && (!gf || !s))) {
        st = lm_fail(LM_ERR_NOMEM, "sae: out of memory for a batch of %zu rows", n);
        goto done;
    }
    if ((st = sae_center(sae, x, n, &xc))) goto done;
    const float *xin = xc ? xc : x;
    sae_pre_centered(sae, pre, xin, n);
    memcpy(f, pre, n * d_sae * sizeof *f);
    sae_activate_dense(sae, f, n); /* pre where pre > theta (and > 0), else 0 */
    lm_sae_decode(sae, xh, f, n);
    double mse = 0, l0 = 0;
    const float sc = 2.0f / (float)n;
    for (size_t t = 0; t < n; t++) {
        double r = 0;
        for (size_t j = 0; j < d_in; j++) {
            size_t q = t * d_in + j;
            float diff = xh[q] - x[q];
            r += (double)diff * diff;
            xh[q] = sc * diff; /* now dL/dx_hat */
        }
        mse += r;
        for (size_t i = 0; i < d_sae; i++)
            if (f[t * d_sae + i] != 0) {
                l0 += 1;
                if (fired) fired[i]++;
            }
    }
    L->mse = mse / (double)n;
    L->l0 = l0 / (double)n;
    L->sparsity = L->l0;
    L->aux = 0;
    L->total = L->mse + lam * L->l0;
    if (!g) goto done;

    /* gf = dL/df = dxhat @ W_dec^T; decoder: dW_dec += f^T @ dxhat, db_dec += sum_t dxhat */
    lm_linear_f32(gf, xh, sae->W_dec, NULL, n, d_in, d_sae);
    lm_linear_backward(NULL, g->W_dec, NULL, f, xh, NULL, n, d_in, d_sae);
    lm_linear_backward(NULL, NULL, g->b_dec, xh, NULL, NULL, n, 1, d_in);
    /* theta: both estimators, summed in double per latent; gf becomes dpre (gated by H) */
    const float lam_n = lam / (float)n, inv_eps = 1.0f / eps;
    double *dth = calloc(d_sae, sizeof *dth);
    if (!dth) {
        st = lm_fail(LM_ERR_NOMEM, "sae: out of memory");
        goto done;
    }
    for (size_t t = 0; t < n; t++)
        for (size_t i = 0; i < d_sae; i++) {
            size_t q = t * d_sae + i;
            float u = (pre[q] - th[i]) * inv_eps;
            if (u > -0.5f && u < 0.5f) dth[i] -= (double)inv_eps * ((double)gf[q] * th[i] + lam_n);
            if (f[q] == 0) gf[q] = 0;
        }
    for (size_t i = 0; i < d_sae; i++) g->threshold[i] += (float)dth[i];
    free(dth);
    /* encoder: db_enc += sum_t dpre; dW_enc [d_in, d_sae] += xc^T @ dpre; db_dec -= W_enc @ sum_t dpre */
    lm_linear_backward(NULL, NULL, s, gf, NULL, NULL, n, d_in, d_sae);
    for (size_t i = 0; i < d_sae; i++) g->b_enc[i] += s[i];
    lm_linear_backward(NULL, g->W_enc, NULL, xin, gf, NULL, n, d_sae, d_in);
    if (sae->apply_b_dec_to_input)
        for (size_t j = 0; j < d_in; j++) {
            const float *w = sae->W_enc + j * d_sae;
            double a = 0;
            for (size_t i = 0; i < d_sae; i++) a += (double)w[i] * s[i];
            g->b_dec[j] -= (float)a;
        }
done:
    free(xc);
    free(pre);
    free(f);
    free(xh);
    free(gf);
    free(s);
    return st;
}
