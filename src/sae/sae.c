/* sae.c - the SAE object: construction, encode (ReLU / TopK / JumpReLU), dense and sparse decode,
 * and the activation scale. Dense products go through lm_linear_backward's "dx += dout @ W" half,
 * which multiplies by a row-major matrix without transposing it: that is exactly x @ W_enc and
 * f @ W_dec in SAELens' layout, so no transposed copy of either matrix is kept. */
#include "lumen/sae.h"
#include "lumen/tensor.h"
#include "sae_internal.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

const char *lm_sae_arch_name(lm_sae_arch a) {
    switch (a) {
    case LM_SAE_RELU: return "standard";
    case LM_SAE_TOPK: return "topk";
    case LM_SAE_JUMPRELU: return "jumprelu";
    default: return "?";
    }
}

lm_status sae_alloc(lm_sae_arch arch, size_t d_in, size_t d_sae, lm_sae **out) {
    *out = NULL;
    if (arch >= LM_SAE_ARCH_COUNT || d_in == 0 || d_sae == 0 || d_in > INT32_MAX || d_sae > INT32_MAX)
        return lm_fail(LM_ERR_ARG, "sae: bad shape d_in=%zu d_sae=%zu", d_in, d_sae);
    size_t mat, n = 0;
    if (lm_mul_ok(d_in, d_sae, &mat) || mat > (SIZE_MAX / sizeof(float) - 4 * d_sae - d_in) / 2)
        return lm_fail(LM_ERR_NOMEM, "sae: d_in=%zu x d_sae=%zu overflows", d_in, d_sae);
    n = 2 * mat + d_sae + d_in + (arch == LM_SAE_JUMPRELU ? d_sae : 0);
    lm_sae *s = calloc(1, sizeof *s);
    float *p = s ? lm_aligned_alloc(n, sizeof(float)) : NULL;
    if (!p) {
        free(s);
        return lm_fail(LM_ERR_NOMEM, "sae: out of memory for %zu parameters", n);
    }
    memset(p, 0, n * sizeof(float));
    s->arch = arch;
    s->d_in = d_in;
    s->d_sae = d_sae;
    s->params = p;
    s->n_params = n;
    s->W_enc = p;
    s->b_enc = p + mat;
    s->W_dec = s->b_enc + d_sae;
    s->b_dec = s->W_dec + mat;
    s->threshold = arch == LM_SAE_JUMPRELU ? s->b_dec + d_in : NULL;
    s->apply_b_dec_to_input = 1;
    *out = s;
    return LM_OK;
}

lm_status lm_sae_new(const lm_sae_init *init, lm_sae **out) {
    *out = NULL;
    if (!init) return lm_fail(LM_ERR_ARG, "sae: no init options");
    if (init->arch != LM_SAE_RELU && init->arch != LM_SAE_TOPK)
        return lm_fail(LM_ERR_ARG, "sae: lm_sae_new makes relu or topk SAEs, not %s", lm_sae_arch_name(init->arch));
    if (init->arch == LM_SAE_TOPK && (init->k == 0 || init->k > init->d_sae))
        return lm_fail(LM_ERR_ARG, "sae: topk needs 1 <= k <= d_sae, got k=%zu d_sae=%zu", init->k, init->d_sae);
    lm_sae *s;
    lm_status st = sae_alloc(init->arch, init->d_in, init->d_sae, &s);
    if (st) return st;
    s->k = init->arch == LM_SAE_TOPK ? init->k : 0;
    s->apply_b_dec_to_input = init->apply_b_dec_to_input ? 1 : 0;
    float norm = init->dec_norm > 0 ? init->dec_norm : 0.1f;
    lm_rng rng;
    lm_rng_seed(&rng, init->seed);
    const size_t d_in = s->d_in, d_sae = s->d_sae;
    for (size_t i = 0; i < d_sae; i++) {
        float *row = s->W_dec + i * d_in;
        double ss = 0;
        do {
            ss = 0;
            for (size_t j = 0; j < d_in; j++) {
                row[j] = lm_rng_normal(&rng);
                ss += (double)row[j] * row[j];
            }
        } while (ss == 0);
        float sc = (float)(norm / sqrt(ss));
        for (size_t j = 0; j < d_in; j++) {
            row[j] *= sc;
            s->W_enc[j * d_sae + i] = row[j];
        }
    }
    *out = s;
    return LM_OK;
}

void lm_sae_free(lm_sae *sae) {
    if (!sae) return;
    free(sae->params);
    free(sae->model_name);
    free(sae->hook_name);
    free(sae);
}

lm_status lm_sae_clone(const lm_sae *sae, lm_sae **out) {
    lm_sae *c;
    lm_status st = sae_alloc(sae->arch, sae->d_in, sae->d_sae, &c);
    if (st) return st;
    memcpy(c->params, sae->params, sae->n_params * sizeof(float));
    c->k = sae->k;
    c->apply_b_dec_to_input = sae->apply_b_dec_to_input;
    c->context_size = sae->context_size;
    c->prepend_bos = sae->prepend_bos;
    if ((sae->model_name && !(c->model_name = lm_strdup(sae->model_name))) ||
        (sae->hook_name && !(c->hook_name = lm_strdup(sae->hook_name)))) {
        lm_sae_free(c);
        return lm_fail(LM_ERR_NOMEM, "sae: out of memory");
    }
    *out = c;
    return LM_OK;
}

/* ---- encoder ------------------------------------------------------------------------------ */

int sae_par(double work) { return omp_get_max_threads() > 1 && work >= SAE_PAR_WORK; }

lm_status sae_center(const lm_sae *sae, const float *x, size_t n, float **xc) {
    *xc = NULL;
    if (!sae->apply_b_dec_to_input) return LM_OK;
    const size_t d = sae->d_in;
    float *c = lm_malloc((n * d) != 0 ? n * d : 1, sizeof(float));
    if (!c) return lm_fail(LM_ERR_NOMEM, "sae: out of memory for %zu x %zu inputs", n, d);
#pragma omp parallel for schedule(static) if (sae_par((double)n * d))
    for (size_t t = 0; t < n; t++)
        for (size_t j = 0; j < d; j++) c[t * d + j] = x[t * d + j] - sae->b_dec[j];
    *xc = c;
    return LM_OK;
}

void sae_pre_centered(const lm_sae *sae, float *pre, const float *xc, size_t n) {
    const size_t d_sae = sae->d_sae;
    for (size_t t = 0; t < n; t++) memcpy(pre + t * d_sae, sae->b_enc, d_sae * sizeof(float));
    /* pre[n, d_sae] += xc[n, d_in] @ W_enc[d_in, d_sae] */
    lm_linear_backward(pre, NULL, NULL, xc, NULL, sae->W_enc, n, d_sae, sae->d_in);
}

void lm_sae_pre(const lm_sae *sae, float *pre, const float *x, size_t n) {
    /* without b_dec subtraction the input is used as is; with it, fold b_dec into the bias so no
     * allocation is needed here (lm_sae_encode subtracts first, as SAELens does) */
    const size_t d_sae = sae->d_sae, d_in = sae->d_in;
    sae_pre_centered(sae, pre, x, n);
    if (!sae->apply_b_dec_to_input) return;
    for (size_t i = 0; i < d_sae; i++) {
        double s = 0;
        for (size_t j = 0; j < d_in; j++) s += (double)sae->b_dec[j] * sae->W_enc[j * d_sae + i];
        for (size_t t = 0; t < n; t++) pre[t * d_sae + i] -= (float)s;
    }
}

/* A min-heap of (value, index) where the root is the worst kept entry: smaller value, or equal
 * value and larger index (ties go to the lower index, whatever the scan order). */
static int worse(float va, int32_t ia, float vb, int32_t ib) { return va < vb || (va == vb && ia > ib); }

static void sift_down(float *hv, int32_t *hi, size_t m, size_t r) {
    for (;;) {
        size_t c = 2 * r + 1;
        if (c >= m) return;
        if (c + 1 < m && worse(hv[c + 1], hi[c + 1], hv[c], hi[c])) c++;
        if (!worse(hv[c], hi[c], hv[r], hi[r])) return;
        float tv = hv[c];
        hv[c] = hv[r];
        hv[r] = tv;
        int32_t ti = hi[c];
        hi[c] = hi[r];
        hi[r] = ti;
        r = c;
    }
}

size_t sae_topk_row(const float *pre, size_t d, size_t k, const uint8_t *mask, int32_t *idx, float *val) {
    size_t m = 0;
    for (size_t i = 0; i < d; i++) {
        if (mask && !mask[i]) continue;
        float v = pre[i];
        if (v != v) v = -INFINITY; /* NaN ranks last but still counts, so a row always gets k */
        if (m < k) {
            /* sift up */
            size_t c = m++;
            val[c] = v;
            idx[c] = (int32_t)i;
            while (c > 0) {
                size_t p = (c - 1) / 2;
                if (!worse(val[c], idx[c], val[p], idx[p])) break;
                float tv = val[c];
                val[c] = val[p];
                val[p] = tv;
                int32_t ti = idx[c];
                idx[c] = idx[p];
                idx[p] = ti;
                c = p;
            }
        } else if (worse(val[0], idx[0], v, (int32_t)i)) {
            val[0] = v;
            idx[0] = (int32_t)i;
            sift_down(val, idx, m, 0);
        }
    }
    /* heap sort: pop the worst to the back, leaving the entries best first */
    for (size_t e = m; e > 1; e--) {
        float tv = val[0];
        val[0] = val[e - 1];
        val[e - 1] = tv;
        int32_t ti = idx[0];
        idx[0] = idx[e - 1];
        idx[e - 1] = ti;
        sift_down(val, idx, e - 1, 0);
    }
    for (size_t j = 0; j < m; j++) val[j] = pre[idx[j]]; /* restore NaN as it was */
    return m;
}

static lm_status pre_of(const lm_sae *sae, float *pre, const float *x, size_t n) {
    float *xc;
    lm_status st = sae_center(sae, x, n, &xc);
    if (st) return st;
    sae_pre_centered(sae, pre, xc ? xc : x, n);
    free(xc);
    return LM_OK;
}

void sae_activate_dense(const lm_sae *sae, float *f, size_t n) {
    const size_t d = sae->d_sae;
    const float *th = sae->threshold;
#pragma omp parallel for schedule(static) if (sae_par((double)n * d))
    for (size_t t = 0; t < n; t++) {
        float *r = f + t * d;
        if (th)
            for (size_t i = 0; i < d; i++) r[i] = (r[i] > th[i] && r[i] > 0) ? r[i] : 0.0f;
        else
            for (size_t i = 0; i < d; i++) r[i] = r[i] > 0 ? r[i] : 0.0f;
    }
}

lm_status lm_sae_encode_topk(const lm_sae *sae, int32_t *idx, float *val, const float *x, size_t n) {
    if (sae->arch != LM_SAE_TOPK) return lm_fail(LM_ERR_ARG, "sae: encode_topk on a %s SAE", lm_sae_arch_name(sae->arch));
    const size_t d = sae->d_sae, k = sae->k;
    float *pre = lm_malloc((n * d) != 0 ? n * d : 1, sizeof(float));
    if (!pre) return lm_fail(LM_ERR_NOMEM, "sae: out of memory for %zu x %zu pre-activations", n, d);
    lm_status st = pre_of(sae, pre, x, n);
    if (!st) {
#pragma omp parallel for schedule(static) if (sae_par((double)n * d))
        for (size_t t = 0; t < n; t++) {
            sae_topk_row(pre + t * d, d, k, NULL, idx + t * k, val + t * k);
            for (size_t j = 0; j < k; j++) val[t * k + j] = val[t * k + j] > 0 ? val[t * k + j] : 0.0f;
        }
    }
    free(pre);
    return st;
}

lm_status lm_sae_encode(const lm_sae *sae, float *f, const float *x, size_t n) {
    lm_status st = pre_of(sae, f, x, n);
    if (st) return st;
    const size_t d = sae->d_sae, k = sae->k;
    if (sae->arch != LM_SAE_TOPK) {
        sae_activate_dense(sae, f, n);
        return LM_OK;
    }
    int nomem = 0;
#pragma omp parallel if (sae_par((double)n * d)) reduction(| : nomem)
    {
        int32_t *ix = lm_malloc(k, sizeof *ix);
        float *v = lm_malloc(k, sizeof *v);
        if (!ix || !v) nomem = 1;
#pragma omp for schedule(static)
        for (size_t t = 0; t < n; t++) {
            if (!ix || !v) continue;
            float *r = f + t * d;
            sae_topk_row(r, d, k, NULL, ix, v);
            memset(r, 0, d * sizeof *r);
            for (size_t j = 0; j < k; j++) r[ix[j]] = v[j] > 0 ? v[j] : 0.0f;
        }
        free(ix);
        free(v);
    }
    return nomem ? lm_fail(LM_ERR_NOMEM, "sae: out of memory") : LM_OK;
}

/* ---- decoder ------------------------------------------------------------------------------ */

void sae_decode_sparse_into(const lm_sae *sae, float *out, const float *bias, const int32_t *idx, const float *val,
                            size_t n, size_t kk) {
    const size_t d = sae->d_in;
#pragma omp parallel for schedule(static) if (sae_par((double)n * kk * d))
    for (size_t t = 0; t < n; t++) {
        float *o = out + t * d;
        if (bias)
            memcpy(o, bias, d * sizeof *o);
        else
            memset(o, 0, d * sizeof *o);
        for (size_t j = 0; j < kk; j++) {
            float a = val[t * kk + j];
            if (a == 0) continue;
            const float *w = sae->W_dec + (size_t)idx[t * kk + j] * d;
#pragma omp simd
            for (size_t c = 0; c < d; c++) o[c] += a * w[c];
        }
    }
}

void lm_sae_decode_sparse(const lm_sae *sae, float *x_hat, const int32_t *idx, const float *val, size_t n, size_t kk) {
    sae_decode_sparse_into(sae, x_hat, sae->b_dec, idx, val, n, kk);
}

void lm_sae_decode(const lm_sae *sae, float *x_hat, const float *f, size_t n) {
    const size_t d_in = sae->d_in, d_sae = sae->d_sae;
    if (sae->arch == LM_SAE_TOPK) {
        /* row-sparse: walk each row's nonzeros and add their decoder rows */
#pragma omp parallel for schedule(static) if (sae_par((double)n * (d_sae + sae->k * d_in)))
        for (size_t t = 0; t < n; t++) {
            float *o = x_hat + t * d_in;
            memcpy(o, sae->b_dec, d_in * sizeof *o);
            const float *r = f + t * d_sae;
            for (size_t i = 0; i < d_sae; i++) {
                if (r[i] == 0) continue;
                const float *w = sae->W_dec + i * d_in;
#pragma omp simd
                for (size_t c = 0; c < d_in; c++) o[c] += r[i] * w[c];
            }
        }
        return;
    }
    for (size_t t = 0; t < n; t++) memcpy(x_hat + t * d_in, sae->b_dec, d_in * sizeof(float));
    /* x_hat[n, d_in] += f[n, d_sae] @ W_dec[d_sae, d_in] */
    lm_linear_backward(x_hat, NULL, NULL, f, NULL, sae->W_dec, n, d_in, d_sae);
}

lm_status lm_sae_forward(const lm_sae *sae, float *x_hat, float *f, const float *x, size_t n) {
    float *tmp = NULL;
    if (!f) {
        tmp = lm_malloc((n * sae->d_sae) != 0 ? n * sae->d_sae : 1, sizeof(float));
        if (!tmp) return lm_fail(LM_ERR_NOMEM, "sae: out of memory for %zu x %zu activations", n, sae->d_sae);
        f = tmp;
    }
    lm_status st = lm_sae_encode(sae, f, x, n);
    if (!st) lm_sae_decode(sae, x_hat, f, n);
    free(tmp);
    return st;
}

/* ---- activation scale ----------------------------------------------------------------------- */

lm_status lm_sae_estimate_scale(const float *x, size_t n, size_t d_in, double *c) {
    if (n == 0 || d_in == 0) return lm_fail(LM_ERR_ARG, "sae scale: empty sample (%zu rows of %zu)", n, d_in);
    double s = 0;
#pragma omp parallel for schedule(static) reduction(+ : s) if (sae_par((double)n * d_in))
    for (size_t t = 0; t < n; t++) {
        double r = 0;
        for (size_t j = 0; j < d_in; j++) r += (double)x[t * d_in + j] * x[t * d_in + j];
        s += r;
    }
    double mean = s / (double)n;
    if (!(mean > 0) || !isfinite(mean))
        return lm_fail(LM_ERR_ARG, "sae scale: mean squared norm of the sample is %g", mean);
    *c = sqrt((double)d_in / mean);
    return LM_OK;
}

lm_status lm_sae_fold_scale(lm_sae *sae, double c) {
    if (!(c > 0) || !isfinite(c)) return lm_fail(LM_ERR_ARG, "sae: scale %g is not finite and positive", c);
    const size_t mat = sae->d_in * sae->d_sae;
    for (size_t i = 0; i < mat; i++) {
        sae->W_enc[i] = (float)(sae->W_enc[i] * c);
        sae->W_dec[i] = (float)(sae->W_dec[i] / c);
    }
    for (size_t j = 0; j < sae->d_in; j++) sae->b_dec[j] = (float)(sae->b_dec[j] / c);
    return LM_OK;
}
