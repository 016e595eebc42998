/* linearity.c - how linear a map between two sets of states is (the paper's Procrustes
 * similarity), and the anisotropy of a set of states. */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analysis_internal.h"
#include "lapack.h"

/* Below this reciprocal condition number of X^T X the normal equations give way to the SVD.
 * The score's error from an inexact solution A + dA is ||X dA||^2 (the residual of the exact
 * solution is orthogonal to X's columns), about (eps * cond(X^T X))^2: 1e-12 here. */
#define CHOL_MIN_RCOND 1e-10

lm_status lm_an_load(double *dst, size_t ld, size_t c0, const float *src, const float *sub, size_t n, size_t d,
                     const char *what) {
    for (size_t r = 0; r < n; r++) {
        const float *s = src + r * d, *u = sub ? sub + r * d : NULL;
        double *o = dst + r * ld + c0;
        for (size_t c = 0; c < d; c++) {
            if (!isfinite(s[c]) || (u && !isfinite(u[c])))
                return lm_fail(LM_ERR_ARG, "%s: the value at row %zu, column %zu is not finite", what, r, c);
            o[c] = u ? (double)s[c] - (double)u[c] : (double)s[c];
        }
    }
    return LM_OK;
}

void lm_an_centre(double *a, size_t ld, size_t n, size_t d) {
    double *mean = calloc(d, sizeof *mean);
    if (mean) {
        for (size_t r = 0; r < n; r++)
            for (size_t c = 0; c < d; c++) mean[c] += a[r * ld + c];
        for (size_t c = 0; c < d; c++) mean[c] /= (double)n;
        for (size_t r = 0; r < n; r++)
            for (size_t c = 0; c < d; c++) a[r * ld + c] -= mean[c];
        free(mean);
        return;
    }
    /* no memory for the means: one column at a time, same sums in the same order */
    for (size_t c = 0; c < d; c++) {
        double m = 0;
        for (size_t r = 0; r < n; r++) m += a[r * ld + c];
        m /= (double)n;
        for (size_t r = 0; r < n; r++) a[r * ld + c] -= m;
    }
}

double lm_an_sumsq(const double *a, size_t ld, size_t n, size_t d) {
    double s = 0;
    for (size_t r = 0; r < n; r++)
        for (size_t c = 0; c < d; c++) s += a[r * ld + c] * a[r * ld + c];
    return s;
}

int lm_an_fits_int(size_t n, size_t d) {
    /* BLAS and LAPACK index with 64-bit offsets; only their int arguments (dimensions, leading
     * dimensions, the 2d right-hand sides) must fit */
    return n <= INT_MAX && d <= INT_MAX / 2;
}

/* Centres (when asked) and scales the block to unit Frobenius norm; returns the norm it had
 * (0 leaves the block zero). */
static double standardise(double *a, size_t ld, size_t n, size_t d, int centre) {
    if (centre) lm_an_centre(a, ld, n, d);
    double norm = sqrt(lm_an_sumsq(a, ld, n, d));
    if (norm > 0) {
        double inv = 1.0 / norm;
        for (size_t r = 0; r < n; r++)
            for (size_t c = 0; c < d; c++) a[r * ld + c] *= inv;
    }
    return norm;
}

/* F = X A with A from the normal equations, when X^T X is safely positive definite.
 * *solved says whether F was filled; a failed allocation is an error. */
static lm_status fit_cholesky(const double *X, size_t n, size_t d, const double *Y, size_t md, double *F,
                              int *solved) {
    *solved = 0;
    const int di = (int)d, mdi = (int)md;
    double *G = lm_malloc(d * d, sizeof *G), *C = lm_malloc(d * md, sizeof *C), *work = lm_malloc(3 * d, sizeof *work);
    int *iwork = lm_malloc(d, sizeof *iwork);
    lm_status st = LM_OK;
    if (!G || !C || !work || !iwork) {
        st = lm_fail(LM_ERR_NOMEM, "linearity score: out of memory for a %zu x %zu system", d, d);
        goto done;
    }
    /* the upper triangle of a row-major matrix is the lower triangle LAPACK sees */
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, di, (int)n, 1.0, X, di, 0.0, G, di);
    double anorm = 0;
    for (size_t j = 0; j < d; j++) {
        double s = 0;
        for (size_t i = 0; i < d; i++) s += fabs(i <= j ? G[i * d + j] : G[j * d + i]);
        if (s > anorm) anorm = s;
    }
    /* C = X^T Y stored column-major (d x md), as dpotrs wants its right-hand sides */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, mdi, di, (int)n, 1.0, Y, mdi, X, di, 0.0, C, di);
    int info = 0;
    dpotrf_("L", &di, G, &di, &info, 1);
    if (info != 0) goto done;
    double rcond = 0;
    dpocon_("L", &di, G, &di, &anorm, &rcond, work, iwork, &info, 1);
    if (info != 0 || !(rcond >= CHOL_MIN_RCOND)) goto done;
    dpotrs_("L", &di, &mdi, G, &di, C, &di, &info, 1);
    if (info != 0) goto done;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, mdi, di, 1.0, X, di, C, di, 0.0, F, mdi);
    *solved = 1;
done:
    free(G);
    free(C);
    free(work);
    free(iwork);
    return st;
}

/* F = X A with A the minimum-norm least-squares solution through the SVD (any shape, any rank). */
static lm_status fit_svd(const double *X, size_t n, size_t d, const double *Y, size_t md, double *F) {
    const size_t ldb = n > d ? n : d;
    const int ni = (int)n, di = (int)d, mdi = (int)md, ldbi = (int)ldb;
    double *A = lm_malloc(n * d, sizeof *A), *B = lm_malloc(ldb * md, sizeof *B);
    double *s = lm_malloc(n < d ? n : d, sizeof *s), *work = NULL;
    int *iwork = NULL;
    lm_status st = LM_OK;
    if (!A || !B || !s) {
        st = lm_fail(LM_ERR_NOMEM, "linearity score: out of memory for the SVD of a %zu x %zu matrix", n, d);
        goto done;
    }
    for (size_t r = 0; r < n; r++)
        for (size_t c = 0; c < d; c++) A[r + c * n] = X[r * d + c];
    memset(B, 0, ldb * md * sizeof *B);
    for (size_t r = 0; r < n; r++)
        for (size_t c = 0; c < md; c++) B[r + c * ldb] = Y[r * md + c];
    /* numpy.linalg.lstsq's cut-off: singular values this far below the largest are noise */
    double rcond = (double)ldb * DBL_EPSILON, wq = 0;
    int rank = 0, info = 0, lwork = -1, iwq = 0;
    dgelsd_(&ni, &di, &mdi, A, &ni, B, &ldbi, s, &rcond, &rank, &wq, &lwork, &iwq, &info);
    if (info != 0 || !(wq < (double)INT_MAX - 1)) {
        st = lm_fail(LM_ERR_RANGE, "linearity score: the SVD of a %zu x %zu matrix needs more workspace than LAPACK can index", n, d);
        goto done;
    }
    lwork = (int)wq + 1;
    work = lm_malloc((size_t)lwork, sizeof *work);
    iwork = lm_malloc((size_t)(iwq > 1 ? iwq : 1), sizeof *iwork);
    if (!work || !iwork) {
        st = lm_fail(LM_ERR_NOMEM, "linearity score: out of memory for the SVD of a %zu x %zu matrix", n, d);
        goto done;
    }
    dgelsd_(&ni, &di, &mdi, A, &ni, B, &ldbi, s, &rcond, &rank, work, &lwork, iwork, &info);
    if (info != 0) {
        st = lm_fail(LM_ERR_UNSUPPORTED, "linearity score: the SVD of a %zu x %zu matrix did not converge", n, d);
        goto done;
    }
    /* the solution is B's first d rows, column-major */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ni, mdi, di, 1.0, X, di, B, ldbi, 0.0, F, mdi);
done:
    free(A);
    free(B);
    free(s);
    free(work);
    free(iwork);
    return st;
}

lm_status lm_linearity_scores(const float *X, const float *Y, size_t n, size_t d, int centre, double *linearity,
                              double *linearity_no_residual) {
    if (linearity) *linearity = NAN;
    if (linearity_no_residual) *linearity_no_residual = NAN;
    if (!X || !Y) return lm_fail(LM_ERR_ARG, "linearity score: no matrix given");
    if (d < 1 || n < (centre ? 2u : 1u))
        return lm_fail(LM_ERR_ARG, "linearity score: needs at least %d rows and 1 column, got %zu x %zu",
                       centre ? 2 : 1, n, d);
    if (!lm_an_fits_int(n, d))
        return lm_fail(LM_ERR_RANGE, "linearity score: a %zu x %zu matrix exceeds LAPACK's 32-bit sizes", n, d);
    double *out[2];
    int nt = 0;
    if (linearity) out[nt++] = linearity;
    if (linearity_no_residual) out[nt++] = linearity_no_residual;
    if (nt == 0) return LM_OK;
    (void)lm_get_threads(); /* first use pins BLAS to one thread per caller */
    const size_t md = (size_t)nt * d;
    double *Xd = lm_malloc(n * d, sizeof *Xd), *Yd = lm_malloc(n * md, sizeof *Yd), *F = lm_malloc(n * md, sizeof *F);
    lm_status st = LM_OK;
    if (!Xd || !Yd || !F) {
        st = lm_fail(LM_ERR_NOMEM, "linearity score: out of memory for %zu x %zu matrices", n, d);
        goto done;
    }
    /* the targets side by side: [Y | Y - X], each standardised on its own */
    st = lm_an_load(Xd, d, 0, X, NULL, n, d, "linearity score: X");
    int t = 0;
    if (st == LM_OK && linearity) st = lm_an_load(Yd, md, (size_t)t++ * d, Y, NULL, n, d, "linearity score: Y");
    if (st == LM_OK && linearity_no_residual) st = lm_an_load(Yd, md, (size_t)t++ * d, Y, X, n, d, "linearity score: Y");
    if (st != LM_OK) goto done;
    double xnorm = standardise(Xd, d, n, d, centre), ynorm[2];
    for (int k = 0; k < nt; k++) ynorm[k] = standardise(Yd + (size_t)k * d, md, n, d, centre);
    if (xnorm > 0) {
        int solved = 0;
        if (n > d) st = fit_cholesky(Xd, n, d, Yd, md, F, &solved);
        if (st == LM_OK && !solved) st = fit_svd(Xd, n, d, Yd, md, F);
        if (st != LM_OK) goto done;
    }
    for (int k = 0; k < nt; k++) {
        if (!(xnorm > 0)) {
            /* X carries nothing: the best map is zero and explains none of Y */
            *out[k] = ynorm[k] > 0 ? 0.0 : NAN;
            continue;
        }
        double res = 0;
        for (size_t r = 0; r < n; r++)
            for (size_t c = (size_t)k * d; c < (size_t)(k + 1) * d; c++) {
                double e = F[r * md + c] - Yd[r * md + c];
                res += e * e;
            }
        *out[k] = ynorm[k] > 0 ? 1.0 - res : NAN;
    }
done:
    free(Xd);
    free(Yd);
    free(F);
    return st;
}

lm_status lm_linearity_score(const float *X, const float *Y, size_t n, size_t d, int centre, double *score) {
    return lm_linearity_scores(X, Y, n, d, centre, score, NULL);
}

lm_status lm_anisotropy(const float *X, size_t n, size_t d, double *out) {
    *out = NAN;
    if (!X || n < 2 || d < 1) return lm_fail(LM_ERR_ARG, "anisotropy: needs at least 2 rows and 1 column, got %zu x %zu", n, d);
    if (!lm_an_fits_int(n, d)) return lm_fail(LM_ERR_RANGE, "anisotropy: a %zu x %zu matrix exceeds LAPACK's 32-bit sizes", n, d);
    (void)lm_get_threads();
    /* the covariance's nonzero eigenvalues are those of the smaller of X^T X and X X^T */
    const size_t m = d <= n ? d : n;
    const int mi = (int)m, lwork = 2 * mi + 1, liwork = 1;
    double *Xd = lm_malloc(n * d, sizeof *Xd), *M = lm_malloc(m * m, sizeof *M), *w = lm_malloc(m, sizeof *w);
    double *work = lm_malloc((size_t)lwork, sizeof *work);
    int iwork[1];
    lm_status st = LM_OK;
    if (!Xd || !M || !w || !work) {
        st = lm_fail(LM_ERR_NOMEM, "anisotropy: out of memory for a %zu x %zu matrix", n, d);
        goto done;
    }
    st = lm_an_load(Xd, d, 0, X, NULL, n, d, "anisotropy");
    if (st != LM_OK) goto done;
    /* scaled to unit norm so that squares neither overflow nor underflow; the ratio is unchanged */
    if (standardise(Xd, d, n, d, 1) == 0) goto done;
    if (d <= n)
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, mi, (int)n, 1.0, Xd, (int)d, 0.0, M, mi);
    else
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, mi, (int)d, 1.0, Xd, (int)d, 0.0, M, mi);
    double trace = 0;
    for (size_t i = 0; i < m; i++) trace += M[i * m + i];
    int info = 0;
    dsyevd_("N", "L", &mi, M, &mi, w, work, &lwork, iwork, &liwork, &info, 1, 1);
    if (info != 0) {
        st = lm_fail(LM_ERR_UNSUPPORTED, "anisotropy: the eigenvalues of a %zu x %zu matrix did not converge", m, m);
        goto done;
    }
    *out = w[m - 1] / trace; /* eigenvalues come in ascending order */
done:
    free(Xd);
    free(M);
    free(w);
    free(work);
    return st;
}
