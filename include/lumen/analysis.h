/* analysis.h - looking at what a model computes: layer linearity, anisotropy, intrinsic dimension,
 * the logit lens, and pruning by block removal or linear replacement. */
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


/* ==== logit lens (src/analysis/logit_lens.c) ==================================================
 *
 * Each state h_0 .. h_L of the linearity profile (the same hook points, the same windows of ctx
 * tokens as lm_eval_ce) is put through the model's own final norm (RMSNorm or LayerNorm, with
 * its weight and bias) and output head, as if the blocks after it were skipped. Per state and
 * token position: the top (argmax) token, and the cross-entropy in nats of the true next token
 * when the position has one in its window. For the last state this is the model's own output:
 * the same logits, bit for bit, and mean_loss[L] equals lm_eval_ce's mean_ce on the same windows
 * (the losses are computed and summed the same way, in stream order). */
typedef struct lm_logit_lens_opts {
    int ctx;           /* window length; <= 0: the model's context */
    int batch;         /* windows per forward call; <= 0: 4 */
    lm_progress_cb cb; /* (tokens done, n); non-zero stops */
    void *cb_ud;
} lm_logit_lens_opts;

typedef struct lm_logit_lens_result {
    int n_layers;        /* L: states 0 .. L */
    size_t n_tokens;     /* positions: every token of the stream */
    size_t n_predicted;  /* positions with a next token in their window (per state) */
    size_t n_windows;
    int ctx;             /* the window length used */
    int32_t *top;        /* [(L + 1) * n_tokens]: state l, position t at [l * n_tokens + t] */
    double *loss;        /* [(L + 1) * n_tokens]: -log p(ids[t + 1]); NaN at a window's last token */
    double *mean_loss;   /* [L + 1]: mean over the n_predicted positions */
    double seconds;
} lm_logit_lens_result;

/* Runs ids (n >= 2 tokens) through m and fills res (owned by the caller; release it with
 * lm_logit_lens_result_free). Memory: 12 (L + 1) n bytes for the result, plus logits for at most
 * 8 Mi floats at a time. o may be NULL. */
lm_status lm_logit_lens(const lm_model *m, const int32_t *ids, size_t n, const lm_logit_lens_opts *o,
                        lm_logit_lens_result *res);
void lm_logit_lens_result_free(lm_logit_lens_result *res); /* accepts a zeroed struct */

/* The lens as an SVG heat map, written atomically: one row per state (h_0 at the top), one
 * column per position for the first n_positions positions (at most 256; fewer when the stream
 * is shorter), coloured by the loss of the next token (grey where there is none), with the top
 * token's text in the cell (shortened with an ellipsis when it does not fit) and the input
 * tokens along the top. ids are the tokens given to lm_logit_lens; tok (may be NULL: ids are
 * shown as numbers) turns ids into text. */
lm_status lm_write_svg_logit_lens(const char *path, const char *title, const lm_logit_lens_result *r,
                                  const int32_t *ids, const lm_tokenizer *tok, size_t n_positions);

/* A token as a short display string: its text (lm_tokenizer_token_text, leading space kept)
 * with spaces shown as U+00B7, newlines as U+21B5 and tabs as U+2192, other control bytes and
 * invalid UTF-8 as U+FFFD; "#ID" without a tokenizer or for a token with no text. Writes at most
 * cap - 1 bytes and a NUL into buf (cap >= 16), cutting only between characters; returns buf. */
char *lm_token_display(const lm_tokenizer *tok, int id, char *buf, size_t cap);

/* ==== pruning (src/analysis/prune.c) ==========================================================
 *
 * Block removal after Razzhigaev et al. (2024): the blocks whose map h_l -> h_{l+1} is most
 * linear (the profile's linearity, with the residual) are the cheapest to drop. */

/* The k blocks to remove: the k highest r->linearity, most linear first (ties: the lower
 * index first; NaN scores rank last). LM_ERR_ARG unless 0 <= k < r->n_layers. */
lm_status lm_prune_choose(const lm_linearity_result *r, int k, int *blocks);

/* A view of m without the blocks blocks[0 .. k): a copy of the struct whose layers array (its own
 * allocation) skips them, with cfg.n_layers = L - k. Everything else (weights, tokenizer, path)
 * is borrowed from m, which must outlive the view; runs and saves (lm_model_save_hf) as an
 * ordinary model with L - k layers. LM_ERR_ARG for an index out of range, a repeated index, or
 * k >= L. Release with lm_model_view_free, never lm_model_free. */
lm_status lm_model_drop_blocks(const lm_model *m, const int *blocks, int k, lm_model **out);
/* Also frees the buffers of blocks made linear on the view (lm_model_set_linear_block). */
void lm_model_view_free(lm_model *view); /* accepts NULL */

/* ==== linear replacement (src/analysis/linearize.c) ===========================================
 *
 * A block replaced by the affine map h_{l+1} ~ h_l W^T + b fitted on calibration states
 * (lm_model_set_linear_block holds it). docs/linearity.md, "Linear replacement". */

typedef enum lm_fit_method { LM_FIT_CHOLESKY = 0, LM_FIT_SVD = 1 } lm_fit_method;

typedef struct lm_affine_fit {
    size_t n;            /* rows fitted */
    lm_fit_method method;
    int rank;            /* of the centred, column-scaled X (d on the Cholesky path) */
    double mse;          /* mean over n * d of (X W^T + b - Y)^2, with the float W and b returned */
    double fvu;          /* fraction of Y's variance (about its column means) left unexplained */
} lm_affine_fit;

/* Least squares with an intercept, in double: W [d, d] (out x in) and b [d] minimise
 * ||X W^T + 1 b^T - Y||_F over the n rows of X and Y ([n, d] float). Done as the equivalent
 * centred problem (b = mean(Y) - mean(X) W^T) with X's columns scaled to unit norm: normal
 * equations by Cholesky (dpotrf) when their reciprocal condition number (dpocon) is at least
 * 1e-10, else the minimum-norm solution through the SVD (dgelsd, singular values below
 * max(n, d) * DBL_EPSILON of the largest dropped), so constant or collinear columns get a zero
 * weight, never NaN. LM_ERR_ARG for n <= d (fewer rows than the d + 1 unknowns of an output;
 * the fit would interpolate) or a value that is not finite. info may be NULL. */
lm_status lm_fit_affine(const float *X, const float *Y, size_t n, size_t d, float *W, float *b, lm_affine_fit *info);

/* Distillation of an affine map: Adam (beta 0.9, 0.999, eps 1e-8, no weight decay) on W, b from
 * their current values, minimising the mean squared error of X W^T + b against Y over
 * mini-batches of rows (a fresh shuffle every epoch, seeded). *mse_before and *mse_after (either
 * may be NULL) are the MSE over all n rows before and after, as lm_affine_fit.mse. Arithmetic in
 * double; W and b are updated in place (rounded to float at the end). */
typedef struct lm_distill_opts {
    int steps;        /* Adam steps */
    int batch;        /* rows per step; <= 0: 256 (at most n) */
    double lr;        /* <= 0: 1e-4 */
    uint64_t seed;
} lm_distill_opts;
lm_status lm_distill_affine(const float *X, const float *Y, size_t n, size_t d, const lm_distill_opts *o, float *W,
                            float *b, double *mse_before, double *mse_after);

typedef struct lm_linearize_opts {
    int ctx;            /* window length; <= 0: the model's context */
    int batch;          /* windows per forward call; <= 0: 4 */
    int distill_steps;  /* 0: least squares only */
    int distill_batch;  /* <= 0: 256 */
    double distill_lr;  /* <= 0: 1e-4 */
    uint64_t seed;
    lm_progress_cb cb;  /* (tokens done, 2 k n: two passes per block); non-zero stops */
    void *cb_ud;
} lm_linearize_opts;

typedef struct lm_linearize_info {
    int layer;
    lm_affine_fit fit;         /* the least-squares fit */
    int distilled;             /* distillation ran */
    double mse_distill_before; /* MSE before and after the Adam steps (= fit.mse before) */
    double mse_distill_after;
    int kept_distilled;        /* the distilled W, b were kept (they had the lower MSE) */
} lm_linearize_info;

/* A view of m (as lm_model_drop_blocks with nothing dropped) in which blocks[0 .. k) are linear
 * blocks, fitted by lm_fit_affine in increasing block order (sequential): for block l the inputs
 * are h_l = blocks.l.hook_resid_pre of the view, which already holds the earlier replacements,
 * and the targets are h_{l+1} = blocks.l.hook_resid_post of the original m, so each map also
 * absorbs the drift the earlier ones caused (for the first, or k = 1, both are m's own states).
 * Rows: every token of ids (n tokens, BOS rows included) in the windows of ctx tokens that
 * lm_linearity_profile and lm_harvest use. Then, if o->distill_steps > 0, lm_distill_affine on
 * the same rows from the least-squares fit; the distilled map is kept only if its MSE is lower.
 * info ([k], may be NULL) is in increasing block order. Release the view with
 * lm_model_view_free; m must outlive it. LM_ERR_ARG for a block out of range or repeated,
 * k < 1 or k > L, or n <= dim (too few rows for a d x d map with an intercept). */
lm_status lm_linearize(const lm_model *m, const int32_t *ids, size_t n, const int *blocks, int k,
                       const lm_linearize_opts *o, lm_model **out, lm_linearize_info *info);

#ifdef __cplusplus
}
#endif
#endif
