/* analysis.h - looking at what a model computes: layer linearity, anisotropy, intrinsic dimension. */
#ifndef LUMEN_ANALYSIS_H
#define LUMEN_ANALYSIS_H

#include "lumen/base.h"
#include "lumen/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ==== statistics of activation matrices (src/analysis/linearity.c, twonn.c) ===================
 *
 * Every matrix is [n, d] float, row-major: n tokens (rows) of d features. All arithmetic is in
 * double. The definitions are those of llm-microscope 0.0.7 (Razzhigaev et al. 2024, "Your
 * Transformer is Secretly Linear"); docs/linearity.md gives them in full and lists where lumen
 * differs. Results do not depend on the thread count. A value that is undefined (0/0) is NaN,
 * as llm-microscope gives it, not an error, so one degenerate layer does not stop a profile. */

/* Linearity score (the paper's Procrustes similarity):
 *   X' = X - mean over rows (when centre), X'' = X' / ||X'||_F, the same for Y;
 *   A  = argmin_A ||X'' A - Y''||_F   (least squares, d x d);
 *   score = 1 - ||X'' A - Y''||_F^2, in [0, 1].
 * A is found from the normal equations X''^T X'' A = X''^T Y'' by Cholesky (LAPACK dpotrf) when
 * X'' is well conditioned, else as the minimum-norm solution through the SVD (dgelsd, singular
 * values below max(n, d) * DBL_EPSILON times the largest dropped), which is also the path when
 * d >= n. NaN when Y'' is undefined (Y constant over the rows, or all zero without centring);
 * 0 when X is. LM_ERR_ARG for n < 2 (n < 1 without centring) or d < 1. */
lm_status lm_linearity_score(const float *X, const float *Y, size_t n, size_t d, int centre, double *score);
/* Both scores of one layer at once: linearity (of Y) and linearity without the residual (of
 * Y - X, the difference taken in double). They share X's factorisation; either pointer may be
 * NULL. The profile computes its scores through this call, so recomputing them from saved
 * activations with it gives identical bits. */
lm_status lm_linearity_scores(const float *X, const float *Y, size_t n, size_t d, int centre, double *linearity,
                              double *linearity_no_residual);

/* Anisotropy: the largest eigenvalue of the covariance of the rows (centred over the rows)
 * over the sum of its eigenvalues, in [1/min(n-1, d), 1]. NaN when all rows are equal.
 * LM_ERR_ARG for n < 2. */
lm_status lm_anisotropy(const float *X, size_t n, size_t d, double *out);

/* Intrinsic dimension by the TwoNN estimator as llm-microscope computes it: rows centred and
 * divided by their mean length; for each row, mu = r2 / r1 (distances to its nearest and
 * second-nearest other row); rows with r1 < 1e-8 (duplicates) and rows with mu <= 1 + 1e-8 are
 * set aside; the K = m / 5 smallest of the m remaining mu (sorted, i-th at empirical CDF
 * F_i = (s + 1 + i) / n, s = rows set aside) are fitted by a line through the origin,
 * -log(1 - F_i) = dim * log(mu_i). NaN when K = 0. Exact O(n^2 d) neighbour search (a Gram
 * matrix by BLAS, the few closest candidates re-measured directly). LM_ERR_ARG for n < 3. */
lm_status lm_intrinsic_dim(const float *X, size_t n, size_t d, double *out);

/* ==== the linearity profile of a model ========================================================
 *
 * States h_0 .. h_L (L = n_layers), as `lumen activations` writes them:
 *   h_0     = blocks.0.hook_resid_pre: the embedding output, which is the token embedding for
 *             the llama family and token + position embedding for GPT-2 (hook_embed alone
 *             lacks GPT-2's positions); transformers' hidden_states[0] for both;
 *   h_{l+1} = blocks.l.hook_resid_post, the residual stream after block l; for l < L - 1 this
 *             is transformers' hidden_states[l+1]. h_L is taken before the final norm (unlike
 *             transformers' last hidden state).
 * The token stream runs through the model in the consecutive windows of ctx tokens of
 * lm_harvest / lm_eval_ce (a shorter last window included). Per block l:
 *   linearity[l]             = lm_linearity_scores(h_l, h_{l+1})      (centred)
 *   linearity_no_residual[l] = the same of h_{l+1} - h_l
 * and per state i = 0..L: anisotropy[i], intrinsic_dim[i] (of the first id_max_tokens rows). */
typedef struct lm_linearity_opts {
    int ctx;              /* window length; <= 0: the model's context */
    int batch;            /* windows per forward call; <= 0: 4 */
    int include_bos;      /* keep the rows whose token is bos_id (non-zero), or drop them */
    int32_t bos_id;       /* the BOS token, or -1 when the vocabulary has none */
    size_t id_max_tokens; /* intrinsic dimension on the first this many rows; 0: all */
    lm_progress_cb cb;    /* forward progress: (tokens done, n); non-zero stops */
    void *cb_ud;
    lm_progress_cb layer_cb; /* analysis progress: (states done, n_layers + 1); non-zero stops */
    void *layer_ud;
} lm_linearity_opts;

typedef struct lm_linearity_result {
    int n_layers;
    size_t n_tokens;        /* rows analysed (after dropping BOS rows) */
    size_t n_bos_dropped;
    size_t n_windows;
    size_t id_tokens;       /* rows used for the intrinsic dimension */
    size_t d;
    double *linearity;             /* [n_layers] */
    double *linearity_no_residual; /* [n_layers] */
    double *anisotropy;            /* [n_layers + 1], of h_0 .. h_L */
    double *intrinsic_dim;         /* [n_layers + 1] */
    double seconds_forward, seconds_analysis;
} lm_linearity_result;

/* Runs ids (n tokens) through m, captures h_0 .. h_L and analyses them. Needs
 * (n_layers + 1) * n * d floats for the states, plus per analysis thread about 7 n d + 5 d^2
 * doubles; threads are capped to keep those under a quarter of the machine's memory (at least
 * 2 GiB). LM_ERR_ARG if fewer than 3 rows remain. res is owned by the caller: release it with
 * lm_linearity_result_free. o may be NULL (all defaults, BOS rows kept). */
lm_status lm_linearity_profile(const lm_model *m, const int32_t *ids, size_t n, const lm_linearity_opts *o,
                               lm_linearity_result *res);
/* The analysis part alone, on states already in memory: h[i] is [n, d] for i = 0..n_layers
 * (e.g. read from `lumen activations` shards). Uses o->id_max_tokens and o->layer_cb only. */
lm_status lm_linearity_analyse(const float *const *h, int n_layers, size_t n, size_t d, const lm_linearity_opts *o,
                               lm_linearity_result *res);
void lm_linearity_result_free(lm_linearity_result *res); /* accepts a zeroed struct */

/* ==== plots (src/analysis/svg.c) ============================================================== */

/* One line of a plot; points whose y is not finite are left out (the line breaks there). */
typedef struct lm_svg_series {
    const char *name;  /* legend entry */
    const double *x, *y;
    size_t n;
} lm_svg_series;

/* A self-contained SVG line plot (axes with ticks, one colour per series, legend), written
 * atomically. ylabel may be NULL. LM_ERR_ARG when no series has a finite point. */
lm_status lm_write_svg_lines(const char *path, const char *title, const char *xlabel, const char *ylabel,
                             const lm_svg_series *series, size_t n_series);

#ifdef __cplusplus
}
#endif
#endif
