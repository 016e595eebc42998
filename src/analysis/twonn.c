/* twonn.c - intrinsic dimension of a set of states by the TwoNN estimator, as llm-microscope fits it. */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "analysis_internal.h"

/* llm-microscope's threshold for "no distance" (duplicates) and for "mu is 1" */
#define TWONN_EPS 1e-8
/* the share of the sorted ratios the line is fitted to: the smallest 1/5 */
#define TWONN_REDUCTION 5
/* Rows per Gram block: fixed, so the arithmetic per row never depends on the thread count. */
#define ROW_BLOCK 64
/* Neighbour candidates taken from the Gram distances and measured again directly. The Gram form
 * |a|^2 + |b|^2 - 2 a.b loses digits when |a - b| << |a|; re-measuring makes r1 and r2 exact (a
 * duplicate gives exactly 0, two copies of one neighbour exactly equal distances) and only a
 * near-tie among more than CAND points could change which is second, not its distance. */
#define CAND 8

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* r1 and r2 of each row in [b0, b1), from the Gram block G = E[b0:b1] E^T. */
static void nearest_two(const double *E, const double *sq, const double *G, size_t n, size_t d, size_t b0, size_t b1,
                        double *r1, double *r2) {
    for (size_t i = b0; i < b1; i++) {
        const double *g = G + (i - b0) * n;
        double cd[CAND];
        size_t ci[CAND], k = 0;
        for (size_t j = 0; j < n; j++) {
            if (j == i) continue;
            double v = sq[i] + sq[j] - 2.0 * g[j];
            if (k < CAND) {
                size_t p = k++;
                while (p > 0 && cd[p - 1] > v) cd[p] = cd[p - 1], ci[p] = ci[p - 1], p--;
                cd[p] = v, ci[p] = j;
            } else if (v < cd[CAND - 1]) {
                size_t p = CAND - 1;
                while (p > 0 && cd[p - 1] > v) cd[p] = cd[p - 1], ci[p] = ci[p - 1], p--;
                cd[p] = v, ci[p] = j;
            }
        }
        double ex[CAND];
        for (size_t c = 0; c < k; c++) {
            const double *a = E + i * d, *b = E + ci[c] * d;
            double s = 0;
            for (size_t t = 0; t < d; t++) s += (a[t] - b[t]) * (a[t] - b[t]);
            ex[c] = sqrt(s);
        }
        qsort(ex, k, sizeof ex[0], cmp_double);
        r1[i] = ex[0];
        r2[i] = ex[1];
    }
}

lm_status lm_intrinsic_dim(const float *X, size_t n, size_t d, double *out) {
    *out = NAN;
    if (!X || n < 3 || d < 1)
        return lm_fail(LM_ERR_ARG, "intrinsic dimension: needs at least 3 rows and 1 column, got %zu x %zu", n, d);
    if (!lm_an_fits_int(n, d))
        return lm_fail(LM_ERR_RANGE, "intrinsic dimension: a %zu x %zu matrix exceeds BLAS's 32-bit sizes", n, d);
    (void)lm_get_threads();
    double *E = lm_malloc(n * d, sizeof *E), *sq = lm_malloc(n, sizeof *sq);
    double *r1 = lm_malloc(n, sizeof *r1), *r2 = lm_malloc(n, sizeof *r2), *mu = lm_malloc(n, sizeof *mu);
    lm_status st = LM_OK;
    if (!E || !sq || !r1 || !r2 || !mu) {
        st = lm_fail(LM_ERR_NOMEM, "intrinsic dimension: out of memory for a %zu x %zu matrix", n, d);
        goto done;
    }
    st = lm_an_load(E, d, 0, X, NULL, n, d, "intrinsic dimension");
    if (st != LM_OK) goto done;
    lm_an_centre(E, d, n, d);
    /* scaled by the mean row length: the thresholds below are relative to it */
    double avg = 0;
    for (size_t i = 0; i < n; i++) avg += sqrt(lm_an_sumsq(E + i * d, d, 1, d));
    avg /= (double)n;
    if (!(avg > 0)) goto done; /* all rows equal: no distances, NaN as llm-microscope gives */
    for (size_t i = 0; i < n * d; i++) E[i] /= avg;
    for (size_t i = 0; i < n; i++) sq[i] = lm_an_sumsq(E + i * d, d, 1, d);

    const size_t n_blocks = (n + ROW_BLOCK - 1) / ROW_BLOCK;
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        double *G = lm_malloc(ROW_BLOCK * n, sizeof *G);
        if (!G) failed = 1;
#pragma omp for schedule(dynamic, 1)
        for (size_t b = 0; b < n_blocks; b++) {
            if (!G) continue;
            size_t b0 = b * ROW_BLOCK, b1 = b0 + ROW_BLOCK < n ? b0 + ROW_BLOCK : n;
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(b1 - b0), (int)n, (int)d, 1.0, E + b0 * d,
                        (int)d, E, (int)d, 0.0, G, (int)n);
            nearest_two(E, sq, G, n, d, b0, b1, r1, r2);
        }
        free(G);
    }
    if (failed) {
        st = lm_fail(LM_ERR_NOMEM, "intrinsic dimension: out of memory for distance blocks of %zu rows", n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) mu[i] = r1[i] < TWONN_EPS ? -1.0 : r2[i] / r1[i];
    qsort(mu, n, sizeof mu[0], cmp_double);
    size_t skip = 0;
    while (skip < n && mu[skip] <= 1.0 + TWONN_EPS) skip++;
    size_t m = n - skip, k = m / TWONN_REDUCTION;
    if (k == 0) goto done;
    double sxy = 0, sxx = 0;
    for (size_t i = 0; i < k; i++) {
        double f = (double)(skip + 1 + i) / (double)n;
        double x = log(mu[skip + i]), y = -log(1.0 - f);
        sxy += x * y;
        sxx += x * x;
    }
    *out = sxy / sxx;
done:
    free(E);
    free(sq);
    free(r1);
    free(r2);
    free(mu);
    return st;
}
