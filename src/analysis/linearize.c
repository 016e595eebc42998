/* linearize.c - linear replacement of blocks: the least-squares affine map from a block's input to
 * its output on calibration states, an optional Adam distillation of it, and a model view whose
 * chosen blocks are such maps, fitted one after another. */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis_internal.h"
#include "lapack.h"

/* As in linearity.c: below this reciprocal condition number the normal equations give way to
 * the SVD. */
#define FIT_CHOL_MIN_RCOND 1e-10

/* Mean over n * d of (X W^T + b - Y)^2 and, when fvu is given, that error over the sum of squares
 * of Y about its column means; in double with the float weights, 256 rows at a time. */
static void affine_error(const float *X, const float *Y, size_t n, size_t d, const float *W, const float *b,
                         double *mse, double *fvu) {
    enum { CHUNK = 256 };
    double *Wd = lm_malloc(d * d, sizeof *Wd), *xc = lm_malloc(CHUNK * d, sizeof *xc);
    double *pc = lm_malloc(CHUNK * d, sizeof *pc), *ymean = calloc(d, sizeof *ymean);
    *mse = NAN;
    if (fvu) *fvu = NAN;
    if (!Wd || !xc || !pc || !ymean) goto done;
    for (size_t i = 0; i < d * d; i++) Wd[i] = W[i];
    double res = 0, tot = 0;
    for (size_t r0 = 0; r0 < n; r0 += CHUNK) {
        size_t rows = n - r0 < CHUNK ? n - r0 : CHUNK;
        for (size_t i = 0; i < rows * d; i++) xc[i] = X[r0 * d + i];
        for (size_t r = 0; r < rows; r++)
            for (size_t j = 0; j < d; j++) pc[r * d + j] = b[j];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)d, (int)d, 1.0, xc, (int)d, Wd, (int)d,
                    1.0, pc, (int)d);
        for (size_t i = 0; i < rows * d; i++) {
            double e = pc[i] - (double)Y[r0 * d + i];
            res += e * e;
        }
    }
    *mse = res / ((double)n * (double)d);
    if (!fvu) goto done;
    for (size_t r = 0; r < n; r++)
        for (size_t j = 0; j < d; j++) ymean[j] += Y[r * d + j];
    for (size_t j = 0; j < d; j++) ymean[j] /= (double)n;
    for (size_t r = 0; r < n; r++)
        for (size_t j = 0; j < d; j++) {
            double e = (double)Y[r * d + j] - ymean[j];
            tot += e * e;
        }
    *fvu = tot > 0 ? res / tot : NAN;
done:
    free(Wd);
    free(xc);
    free(pc);
    free(ymean);
}

/* Solves the centred, scaled problem Xs A = Yc for A (d x d, column-major: A[i + j d] is input
 * i's weight in output j). Cholesky of the normal equations when well conditioned, else the
 * minimum-norm SVD solution. */
static lm_status solve(const double *Xs, const double *Yc, size_t n, size_t d, double *A, lm_affine_fit *info) {
    const int ni = (int)n, di = (int)d;
    lm_status st = LM_OK;
    double *G = lm_malloc(d * d, sizeof *G), *work = lm_malloc(3 * d, sizeof *work);
    int *iwork = lm_malloc(d, sizeof *iwork);
    double *Acm = NULL, *B = NULL, *s = NULL, *lw = NULL;
    int *liw = NULL;
    if (!G || !work || !iwork) goto oom;
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, di, ni, 1.0, Xs, di, 0.0, G, di);
    double anorm = 0;
    for (size_t j = 0; j < d; j++) {
        double sum = 0;
        for (size_t i = 0; i < d; i++) sum += fabs(i <= j ? G[i * d + j] : G[j * d + i]);
        if (sum > anorm) anorm = sum;
    }
    /* A = Xs^T Yc, column-major d x d, as dpotrs wants its right-hand sides */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, di, di, ni, 1.0, Yc, di, Xs, di, 0.0, A, di);
    int info_ = 0;
    dpotrf_("L", &di, G, &di, &info_, 1);
    if (info_ == 0) {
        double rcond = 0;
        dpocon_("L", &di, G, &di, &anorm, &rcond, work, iwork, &info_, 1);
        if (info_ == 0 && rcond >= FIT_CHOL_MIN_RCOND) {
            dpotrs_("L", &di, &di, G, &di, A, &di, &info_, 1);
            if (info_ == 0) {
                info->method = LM_FIT_CHOLESKY;
                info->rank = di;
                goto done;
            }
        }
    }
    /* ill-conditioned or singular: the minimum-norm least-squares solution */
    Acm = lm_malloc(n * d, sizeof *Acm);
    B = lm_malloc(n * d, sizeof *B);
    s = lm_malloc(d, sizeof *s);
    if (!Acm || !B || !s) goto oom;
    for (size_t r = 0; r < n; r++)
        for (size_t c = 0; c < d; c++) {
            Acm[r + c * n] = Xs[r * d + c];
            B[r + c * n] = Yc[r * d + c];
        }
    double rc = (double)n * DBL_EPSILON, wq = 0;
    int rank = 0, lwork = -1, iwq = 0;
    dgelsd_(&ni, &di, &di, Acm, &ni, B, &ni, s, &rc, &rank, &wq, &lwork, &iwq, &info_);
    if (info_ != 0 || !(wq < (double)INT_MAX - 1)) {
        st = lm_fail(LM_ERR_RANGE, "linear fit: the SVD of a %zu x %zu matrix needs more workspace than LAPACK can index",
                     n, d);
        goto done;
    }
    lwork = (int)wq + 1;
    lw = lm_malloc((size_t)lwork, sizeof *lw);
    liw = lm_malloc((size_t)(iwq > 1 ? iwq : 1), sizeof *liw);
    if (!lw || !liw) goto oom;
    dgelsd_(&ni, &di, &di, Acm, &ni, B, &ni, s, &rc, &rank, lw, &lwork, liw, &info_);
    if (info_ != 0) {
        st = lm_fail(LM_ERR_UNSUPPORTED, "linear fit: the SVD of a %zu x %zu matrix did not converge", n, d);
        goto done;
    }
    for (size_t j = 0; j < d; j++)
        for (size_t i = 0; i < d; i++) A[i + j * d] = B[i + j * n];
    info->method = LM_FIT_SVD;
    info->rank = rank;
    goto done;
oom:
    st = lm_fail(LM_ERR_NOMEM, "linear fit: out of memory for a %zu x %zu system", n, d);
done:
    free(G);
    free(work);
    free(iwork);
    free(Acm);
    free(B);
    free(s);
    free(lw);
    free(liw);
    return st;
}

lm_status lm_fit_affine(const float *X, const float *Y, size_t n, size_t d, float *W, float *b, lm_affine_fit *info) {
    lm_affine_fit tmp;
    if (!info) info = &tmp;
    memset(info, 0, sizeof *info);
    info->mse = info->fvu = NAN;
    if (!X || !Y || d < 1) return lm_fail(LM_ERR_ARG, "linear fit: no matrix given");
    if (n <= d)
        return lm_fail(LM_ERR_ARG,
                       "linear fit: %zu rows are too few for a %zu x %zu map with an intercept (needs more than %zu)",
                       n, d, d, d);
    if (!lm_an_fits_int(n, d))
        return lm_fail(LM_ERR_RANGE, "linear fit: a %zu x %zu matrix exceeds LAPACK's 32-bit sizes", n, d);
    (void)lm_get_threads(); /* first use pins BLAS to one thread per caller */
    double *Xd = lm_malloc(n * d, sizeof *Xd), *Yd = lm_malloc(n * d, sizeof *Yd), *A = lm_malloc(d * d, sizeof *A);
    double *mx = calloc(d, sizeof *mx), *my = calloc(d, sizeof *my), *scale = lm_malloc(d, sizeof *scale);
    lm_status st = LM_OK;
    if (!Xd || !Yd || !A || !mx || !my || !scale) {
        st = lm_fail(LM_ERR_NOMEM, "linear fit: out of memory for %zu x %zu matrices", n, d);
        goto done;
    }
    if ((st = lm_an_load(Xd, d, 0, X, NULL, n, d, "linear fit: X")) != LM_OK) goto done;
    if ((st = lm_an_load(Yd, d, 0, Y, NULL, n, d, "linear fit: Y")) != LM_OK) goto done;
    /* the intercept: centring both sides is the same least-squares problem as a column of ones
     * appended to X, and better conditioned */
    for (size_t r = 0; r < n; r++)
        for (size_t c = 0; c < d; c++) {
            mx[c] += Xd[r * d + c];
            my[c] += Yd[r * d + c];
        }
    for (size_t c = 0; c < d; c++) {
        mx[c] /= (double)n;
        my[c] /= (double)n;
        scale[c] = 0;
    }
    for (size_t r = 0; r < n; r++)
        for (size_t c = 0; c < d; c++) {
            Xd[r * d + c] -= mx[c];
            Yd[r * d + c] -= my[c];
            scale[c] += Xd[r * d + c] * Xd[r * d + c];
        }
    /* columns scaled to unit norm (a constant column stays zero and gets a zero weight): residual
     * streams have a few dimensions far larger than the rest */
    for (size_t c = 0; c < d; c++) scale[c] = scale[c] > 0 ? 1.0 / sqrt(scale[c]) : 1.0;
    for (size_t r = 0; r < n; r++)
        for (size_t c = 0; c < d; c++) Xd[r * d + c] *= scale[c];
    if ((st = solve(Xd, Yd, n, d, A, info)) != LM_OK) goto done;
    for (size_t j = 0; j < d; j++) {
        double bj = my[j];
        for (size_t i = 0; i < d; i++) {
            double w = A[i + j * d] * scale[i];
            if (!isfinite(w)) {
                st = lm_fail(LM_ERR_RANGE, "linear fit: weight (%zu, %zu) is not finite", j, i);
                goto done;
            }
            W[j * d + i] = (float)w;
            bj -= w * mx[i];
        }
        b[j] = (float)bj;
    }
    info->n = n;
    affine_error(X, Y, n, d, W, b, &info->mse, &info->fvu);
done:
    free(Xd);
    free(Yd);
    free(A);
    free(mx);
    free(my);
    free(scale);
    return st;
}

lm_status lm_distill_affine(const float *X, const float *Y, size_t n, size_t d, const lm_distill_opts *o, float *W,
                            float *b, double *mse_before, double *mse_after) {
    if (!X || !Y || !W || !b || n < 1 || d < 1) return lm_fail(LM_ERR_ARG, "distill: no data");
    if (!lm_an_fits_int(n, d)) return lm_fail(LM_ERR_RANGE, "distill: a %zu x %zu matrix is too large", n, d);
    int steps = o ? o->steps : 0;
    size_t B = o && o->batch > 0 ? (size_t)o->batch : 256;
    if (B > n) B = n;
    double lr = o && o->lr > 0 ? o->lr : 1e-4;
    if (mse_before) affine_error(X, Y, n, d, W, b, mse_before, NULL);
    if (steps <= 0) {
        if (mse_after) affine_error(X, Y, n, d, W, b, mse_after, NULL);
        return LM_OK;
    }
    (void)lm_get_threads();
    const size_t P = d * d + d; /* W then b */
    double *p = lm_malloc(P, sizeof *p), *g = lm_malloc(P, sizeof *g), *m1 = calloc(P, sizeof *m1),
           *m2 = calloc(P, sizeof *m2);
    double *xb = lm_malloc(B * d, sizeof *xb), *eb = lm_malloc(B * d, sizeof *eb);
    size_t *perm = lm_malloc(n, sizeof *perm);
    lm_status st = LM_OK;
    if (!p || !g || !m1 || !m2 || !xb || !eb || !perm) {
        st = lm_fail(LM_ERR_NOMEM, "distill: out of memory");
        goto done;
    }
    for (size_t i = 0; i < d * d; i++) p[i] = W[i];
    for (size_t i = 0; i < d; i++) p[d * d + i] = b[i];
    for (size_t i = 0; i < n; i++) perm[i] = i;
    lm_rng rng;
    lm_rng_seed(&rng, o->seed);
    const double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
    double c1 = 1, c2 = 1;
    size_t next = n; /* position in the current shuffle; n: reshuffle */
    const int di = (int)d, Bi = (int)B;
    for (int step = 0; step < steps; step++) {
        for (size_t r = 0; r < B; r++) {
            if (next == n) {
                for (size_t i = n - 1; i > 0; i--) {
                    size_t j = (size_t)lm_rng_u32(&rng) % (i + 1), t = perm[i];
                    perm[i] = perm[j];
                    perm[j] = t;
                }
                next = 0;
            }
            size_t row = perm[next++];
            for (size_t c = 0; c < d; c++) {
                xb[r * d + c] = X[row * d + c];
                eb[r * d + c] = p[d * d + c] - (double)Y[row * d + c];
            }
        }
        /* E = Xb W^T + b - Yb; grad W = 2 / (B d) E^T Xb, grad b = 2 / (B d) colsum E */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Bi, di, di, 1.0, xb, di, p, di, 1.0, eb, di);
        double k = 2.0 / ((double)B * (double)d);
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, di, di, Bi, k, eb, di, xb, di, 0.0, g, di);
        for (size_t c = 0; c < d; c++) {
            double s = 0;
            for (size_t r = 0; r < B; r++) s += eb[r * d + c];
            g[d * d + c] = k * s;
        }
        c1 *= beta1;
        c2 *= beta2;
        for (size_t i = 0; i < P; i++) {
            m1[i] = beta1 * m1[i] + (1 - beta1) * g[i];
            m2[i] = beta2 * m2[i] + (1 - beta2) * g[i] * g[i];
            p[i] -= lr * (m1[i] / (1 - c1)) / (sqrt(m2[i] / (1 - c2)) + eps);
        }
    }
    for (size_t i = 0; i < d * d; i++) W[i] = (float)p[i];
    for (size_t i = 0; i < d; i++) b[i] = (float)p[d * d + i];
    if (mse_after) affine_error(X, Y, n, d, W, b, mse_after, NULL);
done:
    free(p);
    free(g);
    free(m1);
    free(m2);
    free(xb);
    free(eb);
    free(perm);
    return st;
}

/* ---- the model view ----------------------------------------------------------------------- */

/* h_l (into X) and h_{l+1} (into Y), either may be NULL, of m over the windows of
 * lm_linearity_profile (full windows in batches, then the shorter last one). */
static lm_status capture(const lm_model *m, const int32_t *ids, size_t n, int l, int ctx, int batch, float *X, float *Y,
                         const lm_linearize_opts *o, size_t done0, size_t total) {
    const size_t d = (size_t)m->cfg.dim;
    lm_row_sink in = {X, d, 0, n}, outk = {Y, d, 0, n};
    char pre[64], post[64];
    snprintf(pre, sizeof pre, "blocks.%d.hook_resid_pre", l);
    snprintf(post, sizeof post, "blocks.%d.hook_resid_post", l);
    lm_state *s = NULL, *s1 = NULL;
    lm_status st = lm_state_new_batch(m, ctx, batch * ctx, batch, &s);
    if (st == LM_OK) st = lm_state_new(m, ctx, ctx, &s1);
    if (st == LM_OK && X) st = lm_state_add_hook(s, pre, lm_row_sink_hook, &in);
    if (st == LM_OK && Y) st = lm_state_add_hook(s, post, lm_row_sink_hook, &outk);
    if (st == LM_OK && X) st = lm_state_add_hook(s1, pre, lm_row_sink_hook, &in);
    if (st == LM_OK && Y) st = lm_state_add_hook(s1, post, lm_row_sink_hook, &outk);
    if (st == LM_OK) {
        lm_windows_opts wo = {ctx, batch, NULL, NULL, o ? o->cb : NULL, o ? o->cb_ud : NULL, done0, total, "linearize"};
        st = lm_forward_windows(m, s, s1, ids, n, &wo);
    }
    if (st == LM_OK && ((X && in.off != n) || (Y && outk.off != n)))
        st = lm_fail(LM_ERR_RANGE, "linearize: captured %zu and %zu rows of %zu (internal error)", in.off, outk.off, n);
    lm_state_free(s);
    lm_state_free(s1);
    return st;
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

lm_status lm_linearize(const lm_model *m, const int32_t *ids, size_t n, const int *blocks, int k,
                       const lm_linearize_opts *o, lm_model **out, lm_linearize_info *info) {
    *out = NULL;
    const int L = m->cfg.n_layers;
    const size_t d = (size_t)m->cfg.dim;
    if (k < 1 || k > L) return lm_fail(LM_ERR_ARG, "linearize: cannot replace %d of %d blocks", k, L);
    int ctx = o && o->ctx > 0 ? o->ctx : m->cfg.seq_len;
    if (ctx > m->cfg.seq_len)
        return lm_fail(LM_ERR_RANGE, "linearize: window of %d tokens exceeds the model's context of %d", ctx,
                       m->cfg.seq_len);
    int batch = o && o->batch > 0 ? o->batch : 4;
    if (n <= d)
        return lm_fail(LM_ERR_ARG,
                       "linearize: %zu calibration tokens are too few to fit a %zu x %zu linear block (needs more "
                       "than %zu)",
                       n, d, d, d);
    int *order = malloc((size_t)k * sizeof *order);
    if (!order) return lm_fail(LM_ERR_NOMEM, "linearize: out of memory");
    memcpy(order, blocks, (size_t)k * sizeof *order);
    qsort(order, (size_t)k, sizeof *order, cmp_int);
    lm_status st = LM_OK;
    for (int i = 0; i < k && st == LM_OK; i++) {
        if (order[i] < 0 || order[i] >= L)
            st = lm_fail(LM_ERR_ARG, "linearize: block %d does not exist (the model has blocks 0 .. %d)", order[i],
                         L - 1);
        else if (i > 0 && order[i] == order[i - 1])
            st = lm_fail(LM_ERR_ARG, "linearize: block %d given twice", order[i]);
    }
    lm_model *v = NULL;
    float *X = NULL, *Y = NULL, *W = NULL, *b = NULL;
    if (st == LM_OK) st = lm_model_drop_blocks(m, NULL, 0, &v);
    if (st == LM_OK) {
        X = lm_malloc(n * d, sizeof *X);
        Y = lm_malloc(n * d, sizeof *Y);
        W = lm_malloc(d * d, sizeof *W);
        b = lm_malloc(d, sizeof *b);
        if (!X || !Y || !W || !b) st = lm_fail(LM_ERR_NOMEM, "linearize: out of memory for %zu states of %zu", n, d);
    }
    for (int i = 0; i < k && st == LM_OK; i++) {
        const int l = order[i];
        lm_linearize_info li = {0};
        li.layer = l;
        li.mse_distill_before = li.mse_distill_after = NAN;
        /* sequential: the inputs are the view's, which already holds the earlier replacements; the
         * targets are the original model's, so the map also undoes what the earlier ones changed
         * (docs/linearity.md compares this with the alternatives) */
        st = capture(v, ids, n, l, ctx, batch, X, NULL, o, (size_t)(2 * i) * n, (size_t)(2 * k) * n);
        if (st == LM_OK) st = capture(m, ids, n, l, ctx, batch, NULL, Y, o, (size_t)(2 * i + 1) * n, (size_t)(2 * k) * n);
        if (st == LM_OK) st = lm_fit_affine(X, Y, n, d, W, b, &li.fit);
        if (st == LM_OK && o && o->distill_steps > 0) {
            float *W2 = lm_malloc(d * d, sizeof *W2), *b2 = lm_malloc(d, sizeof *b2);
            if (!W2 || !b2) st = lm_fail(LM_ERR_NOMEM, "linearize: out of memory");
            if (st == LM_OK) {
                memcpy(W2, W, d * d * sizeof *W2);
                memcpy(b2, b, d * sizeof *b2);
                lm_distill_opts dopt = {o->distill_steps, o->distill_batch, o->distill_lr, o->seed + (uint64_t)l};
                st = lm_distill_affine(X, Y, n, d, &dopt, W2, b2, &li.mse_distill_before, &li.mse_distill_after);
            }
            if (st == LM_OK) {
                li.distilled = 1;
                if (li.mse_distill_after < li.mse_distill_before) {
                    li.kept_distilled = 1;
                    memcpy(W, W2, d * d * sizeof *W);
                    memcpy(b, b2, d * sizeof *b);
                }
            }
            free(W2);
            free(b2);
        }
        if (st == LM_OK) st = lm_model_set_linear_block(v, l, W, b);
        if (st == LM_OK && info) info[i] = li;
    }
    free(order);
    free(X);
    free(Y);
    free(W);
    free(b);
    if (st != LM_OK) {
        lm_model_view_free(v);
        return st;
    }
    *out = v;
    return LM_OK;
}
