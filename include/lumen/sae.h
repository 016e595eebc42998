/* sae.h - sparse autoencoders over model activations: ReLU+L1 (Anthropic, April 2024), TopK with
 * AuxK (Gao et al. 2024) and JumpReLU (Rajamanoharan et al. 2024); their losses with explicit
 * backward passes, an Adam step, activation scaling, and SAELens-format IO. */
#ifndef LUMEN_SAE_H
#define LUMEN_SAE_H

#include "lumen/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Architectures, named in cfg.json as SAELens names them: "standard", "topk", "jumprelu". */
typedef enum lm_sae_arch {
    LM_SAE_RELU = 0, /* f = relu(pre) */
    LM_SAE_TOPK,     /* f = relu of the k largest pre-activations of each row, 0 elsewhere */
    LM_SAE_JUMPRELU, /* f = pre * (pre > threshold) */
    LM_SAE_ARCH_COUNT
} lm_sae_arch;

const char *lm_sae_arch_name(lm_sae_arch a); /* "standard", "topk", "jumprelu" */

/* An SAE. For an input row x [d_in]:
 *   pre   = (x - a * b_dec) @ W_enc + b_enc          a = apply_b_dec_to_input (0 or 1)
 *   f     = act(pre)                                  [d_sae]
 *   x_hat = f @ W_dec + b_dec                         [d_in]
 * Parameters live in one allocation (params, n_params floats) in the order W_enc, b_enc, W_dec,
 * b_dec, threshold, so an optimiser is one flat loop; lm_sae_grad mirrors the layout. The
 * struct owns params and the strings. */
typedef struct lm_sae {
    lm_sae_arch arch;
    size_t d_in, d_sae;
    size_t k;                 /* topk: active latents per row; 0 otherwise */
    int apply_b_dec_to_input; /* subtract b_dec from the input before encoding */
    float *params;
    size_t n_params;
    float *W_enc;     /* [d_in, d_sae] */
    float *b_enc;     /* [d_sae] */
    float *W_dec;     /* [d_sae, d_in]: row i is latent i's direction */
    float *b_dec;     /* [d_in] */
    float *threshold; /* [d_sae] for jumprelu, NULL otherwise */
    /* cfg.json metadata (any may be NULL): where the activations came from */
    char *model_name;
    char *hook_name;
    long context_size; /* 0 if unknown */
    int prepend_bos;
} lm_sae;

/* Options of lm_sae_new. Zero-initialise, then set what you need. */
typedef struct lm_sae_init {
    lm_sae_arch arch;         /* LM_SAE_RELU or LM_SAE_TOPK */
    size_t d_in, d_sae;
    size_t k;                 /* topk: 1 <= k <= d_sae */
    int apply_b_dec_to_input;
    float dec_norm;           /* norm of each initial decoder row; 0 means 0.1 */
    uint64_t seed;
} lm_sae_init;

/* A new SAE initialised as in Anthropic's April 2024 update: each decoder row a random direction
 * (normalised Gaussian) of norm dec_norm, W_enc = W_dec^T, b_enc = b_dec = 0. */
lm_status lm_sae_new(const lm_sae_init *init, lm_sae **out);
void lm_sae_free(lm_sae *sae); /* accepts NULL */
/* A deep copy. */
lm_status lm_sae_clone(const lm_sae *sae, lm_sae **out);

/* pre [n, d_sae] = (x - a*b_dec) @ W_enc + b_enc, x [n, d_in]. */
void lm_sae_pre(const lm_sae *sae, float *pre, const float *x, size_t n);
/* f [n, d_sae] = act(pre(x)); x [n, d_in]. For topk exactly the k largest pre-activations of a row
 * are kept (ties go to the lower index), then ReLU'd, as SAELens does; so a row has k nonzeros
 * unless some of its top-k pre-activations are <= 0. */
lm_status lm_sae_encode(const lm_sae *sae, float *f, const float *x, size_t n);
/* x_hat [n, d_in] = f @ W_dec + b_dec, f [n, d_sae]. For topk the pass is sparse: only the
 * decoder rows of each row's nonzero activations are read. */
void lm_sae_decode(const lm_sae *sae, float *x_hat, const float *f, size_t n);
/* The top-k encoding as indices and values: idx, val [n, k] (val may be 0 after the ReLU). */
lm_status lm_sae_encode_topk(const lm_sae *sae, int32_t *idx, float *val, const float *x, size_t n);
/* x_hat [n, d_in] = b_dec + sum_j val[t,j] * W_dec[idx[t,j]]: the sparse decoder, idx/val [n, kk]. */
void lm_sae_decode_sparse(const lm_sae *sae, float *x_hat, const int32_t *idx, const float *val, size_t n, size_t kk);
/* encode then decode; f may be NULL (then a temporary is used). */
lm_status lm_sae_forward(const lm_sae *sae, float *x_hat, float *f, const float *x, size_t n);

/* ---- activation scaling -----------------------------------------------------------------
 * Training runs on x' = c x with c chosen so that E||x'||^2 = d_in (Anthropic's recipe). */

/* c = sqrt(d_in / mean_t ||x_t||^2) over the sample x [n, d_in] (the mean taken in double).
 * LM_ERR_ARG if n == 0 or the sample's mean squared norm is zero or not finite. */
lm_status lm_sae_estimate_scale(const float *x, size_t n, size_t d_in, double *c);

/* Folds the input scale c into the weights, so that the SAE trained on c*x works on raw x:
 *   pre(c x) = (c x - a b_dec) @ W_enc + b_enc = (x - a b_dec/c) @ (c W_enc) + b_enc
 *   x_hat(c x) / c = f @ (W_dec / c) + b_dec / c
 * so W_enc <- c W_enc, W_dec <- W_dec / c, b_dec <- b_dec / c, b_enc and threshold unchanged.
 * The folded SAE gives the same f on x as the scaled one on c x, and a reconstruction of x
 * (not of c x). LM_ERR_ARG unless c is finite and > 0. */
lm_status lm_sae_fold_scale(lm_sae *sae, double c);

/* ---- training: losses with backward, Adam ------------------------------------------------- */

/* Gradients, laid out exactly as lm_sae's params (data[n] and the same five views). */
typedef struct lm_sae_grad {
    float *data;
    size_t n;
    float *W_enc, *b_enc, *W_dec, *b_dec, *threshold;
} lm_sae_grad;
lm_status lm_sae_grad_init(lm_sae_grad *g, const lm_sae *sae); /* zeroed */
void lm_sae_grad_zero(lm_sae_grad *g);
void lm_sae_grad_free(lm_sae_grad *g); /* accepts a zeroed struct */
/* Scales g so that its global L2 norm is at most max_norm (if max_norm > 0); returns the norm
 * before clipping. */
double lm_sae_grad_clip(lm_sae_grad *g, double max_norm);

typedef struct lm_sae_loss_opts {
    float l1_coeff;      /* relu (L1) and jumprelu (L0): lambda of the sparsity penalty (after
                            warm-up, see lm_sae_l1_at) */
    /* topk AuxK: dead latents reconstruct the residual e = x - x_hat (treated as a constant) */
    const uint8_t *dead; /* [d_sae], nonzero = dead; NULL = no AuxK term */
    size_t k_aux;        /* 0 means d_in / 2 */
    float aux_coeff;     /* alpha; 0 means 1/32 */
    float bandwidth;     /* jumprelu: eps of the rectangle kernel; 0 means 0.001 */
} lm_sae_loss_opts;

/* The loss of one batch and its parts (means over the n rows). */
typedef struct lm_sae_loss {
    double total;
    double mse;      /* mean_t ||x_t - x_hat_t||^2 */
    double sparsity; /* relu: mean_t sum_i f_ti ||W_dec,i|| (before lambda); jumprelu: = l0 */
    double aux;      /* topk: the AuxK term, coefficient included */
    double l0;       /* mean nonzero latents per row */
} lm_sae_loss;

/* Loss of x [n, d_in] and, when g is non-NULL, its gradient ACCUMULATED (+=) into g.
 *   relu: L = mean_t ( ||x_t - x_hat_t||^2 + l1_coeff * sum_i f_ti ||W_dec,i||_2 )
 *   topk: L = mean_t ||x_t - x_hat_t||^2 + aux, with (as SAELens does, after Gao et al. 2024)
 *         aux = alpha * s * mean_t ||e_t - z_t @ W_dec||^2, e_t = x_t - x_hat_t held constant,
 *         z_t = the raw pre-activations of the top-k_aux' dead latents of row t (0 elsewhere),
 *         k_aux' = min(k_aux, n_dead), s = min(n_dead / k_aux, 1).
 *   jumprelu: L = mean_t ( ||x_t - x_hat_t||^2 + l1_coeff * ||f_t||_0 ) (Rajamanoharan et al.
 *         2024); f gets exact gradients where active; the threshold gets the straight-through
 *         estimates with a rectangle kernel K(u) = 1{|u| < 1/2} of width eps = bandwidth:
 *         dL/dtheta_i = mean_t -(K((pre_ti - theta_i)/eps) / eps) (theta_i dL/df_ti + l1_coeff),
 *         with respect to theta itself (a log-threshold parameterisation multiplies by theta).
 * fired [d_sae], if non-NULL, gets += the number of rows where each latent is nonzero (for the
 * caller's dead-latent counters and feature densities). */
lm_status lm_sae_loss_backward(const lm_sae *sae, lm_sae_grad *g, const float *x, size_t n, const lm_sae_loss_opts *o,
                               lm_sae_loss *loss, uint64_t *fired);

/* Adam with fp32 moments over all parameters (no weight decay, as the April 2024 recipe). */
typedef struct lm_sae_adam {
    float *m, *v;
    size_t n;
    uint64_t t;
    float beta1, beta2, eps; /* set by init to 0.9, 0.999, 1e-8; may be changed after */
} lm_sae_adam;
lm_status lm_sae_adam_init(lm_sae_adam *a, const lm_sae *sae);
void lm_sae_adam_free(lm_sae_adam *a); /* accepts a zeroed struct */
/* One bias-corrected Adam step of learning rate lr; the sizes of a, sae and g must agree. */
lm_status lm_sae_adam_step(lm_sae_adam *a, lm_sae *sae, const lm_sae_grad *g, float lr);

/* The April 2024 schedules, for step in [0, total): the L1 coefficient warms up linearly from 0
 * over the first 5% of steps; the learning rate is constant, then decays linearly to zero over
 * the last 20%. */
float lm_sae_l1_at(float l1_coeff, uint64_t step, uint64_t total);
float lm_sae_lr_at(float lr, uint64_t step, uint64_t total);

/* ---- SAELens-format IO --------------------------------------------------------------------
 * A directory with cfg.json, sae_weights.safetensors (W_enc [d_in, d_sae], W_dec [d_sae, d_in],
 * b_enc [d_sae], b_dec [d_in], threshold [d_sae] for jumprelu) and optionally
 * sparsity.safetensors ("sparsity" [d_sae]: log10 feature density). */

/* Writes dir (created if absent) atomically file by file, weights as float32 and
 * normalize_activations "none" (fold the scale first). log10_density [d_sae] may be NULL. */
lm_status lm_sae_save(const lm_sae *sae, const char *dir, const float *log10_density);
/* Reads an SAE saved by SAELens (>= 6.0 layout; older top-level metadata keys are accepted) or
 * by lumen. Weights in F32, F16 or BF16 are converted to f32. A topk SAE saved with
 * rescale_acts_by_decoder_norm has the decoder norms folded in (same outputs). Errors name the
 * file: missing file or tensor, wrong shape, unknown architecture, unsupported normalisation. */
lm_status lm_sae_load(const char *dir, lm_sae **out);
/* Reads sparsity.safetensors from dir into a malloc'd [d_sae] array (free()). */
lm_status lm_sae_load_sparsity(const char *dir, size_t d_sae, float **out);


/* ---- steering (src/sae/sae_steer.c) -------------------------------------------------------
 * Feature steering as in Scaling Monosemanticity (Templeton et al. 2024), applied at the SAE's
 * hook to every row the hook sees (every prompt position and every generated token):
 *   clamp: x <- decode(f') + (x - decode(f)), f = encode(x), f' = f with f'[feature] = value;
 *          the SAE's error term x - decode(f) is kept, so only the feature changes. Decoding is
 *          affine, so this is computed as x + (value - f[feature]) * W_dec[feature] (the same in
 *          exact arithmetic, without the rounding of two full decodes).
 *   add:   x <- x + value * W_dec[feature] (no encoding).
 *   scale: clamp each row's latent to value times its own activation there, i.e.
 *          x <- x + (value - 1) * f[feature] * W_dec[feature]: value 0 ablates the feature,
 *          value 1 leaves x exactly as it was (the splice with the error term is lossless).
 * value is in the feature's activation units for clamp and add (the CLI multiplies its X by a
 * max activation), a factor for scale. */
typedef enum lm_sae_steer_mode { LM_SAE_STEER_CLAMP = 0, LM_SAE_STEER_ADD = 1, LM_SAE_STEER_SCALE = 2 } lm_sae_steer_mode;
typedef struct lm_sae_steer {
    const lm_sae *sae;
    size_t feature;
    lm_sae_steer_mode mode;
    float value;
} lm_sae_steer;
/* Steers x [n, d_in] in place. LM_ERR_ARG for a feature >= d_sae. */
lm_status lm_sae_steer_apply(const lm_sae_steer *s, float *x, size_t n);
/* An lm_hook_fn (ud: an lm_sae_steer) calling lm_sae_steer_apply; LM_ERR_ARG if the hook's
 * width is not d_in. */
struct lm_hook_info;
lm_status lm_sae_steer_hook(void *ud, const struct lm_hook_info *info, float *act);

/* ---- training loop (src/sae/sae_trainer.c) ------------------------------------------------
 * Activations come from one of three sources:
 *   model     the model run on the fly over token ids: consecutive windows of ctx tokens
 *             (wrapping around at the end of the ids), captured at one hook;
 *   acts_dir  the shards of a complete `lumen activations` job (lm_harvest) that harvested the
 *             hook, read in order and wrapping around (model, ids, ctx are then not needed; a
 *             model given is only checked: it must have the hook and the shards' width);
 *   rows_fn   a caller's function filling rows pos .. pos+n-1 of an endless stream (d_in wide).
 * They go through a shuffling buffer of buffer_mult * batch rows (fill, shuffle with a seeded
 * lm_rng, serve half in batches, refill the served half, shuffle again). The scale c of
 * lm_sae_estimate_scale is taken on the first fill; training runs on c*x with Adam (fp32
 * moments), lm_sae_lr_at / lm_sae_l1_at schedules and gradient clipping; a jumprelu SAE starts
 * from the ReLU init with every threshold at init_threshold and Adam works on log(threshold), as
 * SAELens does. Written to out_dir:
 *   sae_log.jsonl            one object every log_every steps (and the last): step, tokens, loss,
 *                            mse (on scaled inputs), ev (explained variance of the batch:
 *                            1 - sum||x - x_hat||^2 / sum||x - mean||^2), l0, dead (latents
 *                            that did not fire in the last dead_window tokens), lr, l1_coeff,
 *                            grad_norm, tokens_per_s
 *   ckpt/step_NNNNNNNN/      the SAE (scaled, lm_sae_save), optimizer.safetensors (adam_m,
 *                            adam_v, fired counters, and where each buffer row not yet served
 *                            came from: buffer_pos, plus buffer_group for the model source),
 *                            trainer_state.json (step, adam step, rng, source position, scale,
 *                            the options that must match); ckpt/latest is renamed in last.
 *                            On resume the unserved rows are made again from their source
 *                            positions (the model reruns the same forward batches), so the
 *                            checkpoint holds 8-16 bytes per buffer row, not 4 * d_in.
 *   cfg.json, sae_weights.safetensors, sparsity.safetensors
 *                            the final SAE with the scale folded in (works on raw activations)
 *                            and log10 feature densities over the run.
 * Run again with the same options it resumes from ckpt/latest and continues bit-identically
 * (same thread count; for rows_fn, rows that depend only on their position); other options
 * are refused; a finished run writes nothing. */

/* A caller's activation source: writes rows pos .. pos+n-1 of its stream, raw (unscaled), into
 * dst [n, d_in]. Resuming, and so checkpoints, rely on a row depending only on its position:
 * unserved buffer rows are asked for again, one at a time, by position. A status other than
 * LM_OK stops the training with it (set the message with lm_fail). */
typedef lm_status (*lm_sae_rows_fn)(void *ud, uint64_t pos, float *dst, size_t n, size_t d_in);

typedef struct lm_sae_train_opts {
    const struct lm_model *model; /* the model whose activations are learnt (source "model") */
    const int32_t *ids;           /* token ids the model is run on */
    size_t n_ids;
    const char *hook;             /* TransformerLens hook name, e.g. "blocks.2.hook_resid_post"
                                     (rows_fn: metadata only) */
    const char *model_name;       /* metadata (cfg.json); may be NULL (acts_dir: then the
                                     manifest's model) */
    const char *source_name;      /* the corpus, recorded in the checkpoint identity; may be NULL */
    int prepend_bos;              /* metadata: whether the ids start with BOS */
    const char *out_dir;
    lm_sae_arch arch;             /* LM_SAE_RELU, LM_SAE_TOPK or LM_SAE_JUMPRELU */
    size_t d_sae, k;              /* k: topk only */
    float l1_coeff;               /* relu (default 5) */
    float lr;                     /* default 5e-5 for relu, 2e-4 for topk (0: default) */
    float clip;                   /* global gradient-norm clip (default 1; < 0: none) */
    int ctx;                      /* window length (0: the model's context); acts_dir: the
                                     shards' own; rows_fn: metadata (cfg.json context_size) */
    int fwd_batch;                /* windows per forward (0: 8; at most 65535) */
    size_t batch;                 /* SAE batch in rows (0: 4096) */
    size_t buffer_mult;           /* buffer = buffer_mult * batch rows, even (0: 16) */
    uint64_t steps;               /* total steps; 0: tokens / batch */
    uint64_t tokens;              /* used when steps == 0 */
    uint64_t dead_window;         /* tokens (0: min(10M, the run's tokens)) */
    uint64_t log_every;           /* steps (0: 10) */
    uint64_t save_every;          /* steps (0: only at the end) */
    uint64_t seed;
    float dec_norm;               /* initial decoder row norm (0: 0.1) */
    int progress;                 /* progress line on stderr */
    /* other sources (give at most one; then model and ids may be NULL) */
    const char *acts_dir;         /* shards of `lumen activations` holding hook */
    lm_sae_rows_fn rows_fn;       /* a caller's stream of rows ... */
    void *rows_ud;                /* ... its user data ... */
    size_t d_in;                  /* ... and their width (required for rows_fn; else 0 or checked) */
    /* jumprelu (l1_coeff is then the L0 coefficient lambda, default 1; lr default 7e-5) */
    float bandwidth;              /* eps of the threshold's rectangle kernel (0: 0.001) */
    float init_threshold;         /* every threshold at the start (0: 0.001) */
} lm_sae_train_opts;

typedef struct lm_sae_train_result {
    uint64_t steps_done, tokens_done;
    int64_t resumed_from;   /* step of the checkpoint resumed, or -1 */
    int already_done;       /* the run was complete: nothing was written */
    double scale;           /* the input scale c */
    double first_mse;       /* mse of the first step run now (NaN if none) */
    double mse, ev, l0;     /* of the last step */
    size_t n_dead;          /* dead latents at the end */
    double seconds, tokens_per_s;
} lm_sae_train_result;

lm_status lm_sae_train(const lm_sae_train_opts *o, lm_sae_train_result *res);

/* ---- evaluation (src/sae/sae_eval.c) ------------------------------------------------------
 * Runs ids through the model in consecutive windows of ctx tokens, exactly as lm_eval_ce cuts
 * them (batch full windows per forward; a shorter last window of >= 2 tokens is run too), three
 * ways: clean; with the activation at the hook replaced by the SAE's reconstruction (encode +
 * decode in place, on raw activations, as saved SAEs expect); and with it zeroed (ablated).
 * Statistics over every token N run through the hook (d = d_in):
 *   mse            sum_t ||x_t - x_hat_t||^2 / (N d)              (per element)
 *   fvu            sum_t ||x_t - x_hat_t||^2 / sum_t ||x_t - mean||^2, mean over the N tokens;
 *                  one pass: the denominator is sum ||x||^2 - N ||mean||^2, in double
 *   l0             mean nonzero latents per token
 *   dead_fraction  latents never nonzero on the N tokens / d_sae
 *   dense_fraction latents nonzero on more than dense_threshold * N tokens / d_sae
 *   ce_*           mean next-token cross-entropy over the predicted positions (as lm_eval_ce)
 *   ce_loss_recovered = (ce_ablated - ce_sae) / (ce_ablated - ce_clean) (NaN if the
 *                  denominator is 0)
 *   kl             mean over predicted positions of KL(p_clean || p_sae) of the next-token
 *                  distributions, in nats. */
struct lm_model;
typedef struct lm_sae_eval_opts {
    const char *hook;      /* NULL: sae->hook_name */
    int ctx;               /* window length (<= 1: the model's context) */
    int batch;             /* windows per forward (<= 0: 1) */
    float dense_threshold; /* 0: 0.1 */
} lm_sae_eval_opts;

typedef struct lm_sae_eval_result {
    double mse, fvu, l0, dead_fraction, dense_fraction;
    double ce_clean, ce_sae, ce_ablated, ce_loss_recovered, kl;
    size_t n_tokens, n_predicted, n_windows, n_dead, n_dense;
    double seconds;
} lm_sae_eval_result;

/* o may be NULL (defaults). LM_ERR_ARG if the hook's width is not sae->d_in or there is nothing
 * to score; LM_ERR_RANGE if ctx exceeds the model's context. */
lm_status lm_sae_eval(const struct lm_model *model, const lm_sae *sae, const int32_t *ids, size_t n,
                      const lm_sae_eval_opts *o, lm_sae_eval_result *res);

/* ---- feature statistics, examples and the feature browser (src/sae/sae_features.c; outputs in
 * src/sae/sae_features_out.c) ------------------------------------------------------------------
 * lm_sae_features_compute runs ids through the model in the windows of lm_harvest / lm_sae_eval
 * (consecutive windows of ctx tokens; a shorter last window is run too), encodes the activation
 * at the SAE's hook and gathers, for every latent i:
 *   n_fired, density   tokens where f_i > 0, and that count / n_tokens
 *   max_act, mean_act  largest activation, and the mean over the tokens where it fires
 *   top                the n_top largest activations (ties: the earlier token), each with its
 *                      context: up to `before` tokens before and `after` tokens after the
 *                      activating token, never crossing its window, with f_i at every token
 *   samples            a second pass over the same windows: the range (0, max_act] is cut into
 *                      n_intervals equal intervals; from each, n_per_interval tokens whose
 *                      activation falls in it are drawn uniformly (reservoir sampling, one
 *                      seeded lm_rng per latent, so the draw does not depend on threads);
 *                      interval_count has how many tokens fell in each
 *   logit effect       W_dec[i] through the output head: the n_logits largest and smallest
 *                      entries of (g * c(W_dec[i])) @ W_U^T, where g is the final norm's weight
 *                      and c() subtracts the mean for LayerNorm models (what that norm does to a
 *                      direction; its division by the scale and its bias are left out since they
 *                      do not depend on i). At ln_final.hook_normalized the norm is already
 *                      applied: W_dec[i] @ W_U^T.
 *   neighbours         the n_neighbours other latents with the largest cosine similarity of
 *                      decoder rows (blocks of rows through sgemm; ties: the lower index).
 * A latent that never fires has density 0, max_act 0 and no contexts or samples. */
struct lm_tokenizer;
typedef struct lm_sae_context {
    size_t pos;      /* index in ids of the activating token */
    float act;       /* the latent's activation there */
    uint32_t len;    /* tokens in the context */
    uint32_t at;     /* offset of the activating token in the context */
    int32_t prev;    /* the token before the context in its window, -1 if none (for display) */
    int32_t *tokens; /* [len] token ids (storage owned by the lm_sae_features) */
    float *acts;     /* [len] the latent's activation at each */
} lm_sae_context;

typedef struct lm_sae_features_opts {
    const char *hook;      /* NULL: sae->hook_name */
    int ctx;               /* window length (<= 1: the model's context) */
    int batch;             /* windows per forward (<= 0: 8; halved while rows * d_sae > 32M) */
    size_t n_top;          /* 0: 20 */
    size_t n_intervals;    /* 0: 5 */
    size_t n_per_interval; /* 0: 3 */
    int before, after;     /* context tokens around the activating one (< 0: 16 and 4) */
    size_t n_logits;       /* 0: 10 */
    size_t n_neighbours;   /* 0: 10 (at most d_sae - 1) */
    uint64_t seed;         /* of the interval samples */
    /* called after each forward with (tokens done, 2 * n) over both passes; may be NULL */
    int (*progress)(void *ud, size_t done, size_t total);
    void *progress_ud;
} lm_sae_features_opts;

/* The result; every per-latent array is [d_sae] or [d_sae, n] row-major. */
typedef struct lm_sae_features {
    size_t d_sae, n_tokens, n_windows;
    int ctx;
    char *hook;
    size_t n_top, n_intervals, n_per_interval, n_logits, n_neighbours;
    int before, after;
    uint64_t *n_fired;
    float *density, *max_act, *mean_act;
    lm_sae_context *top;     /* [d_sae, n_top], by activation descending; top_count[i] are used */
    uint32_t *top_count;
    lm_sae_context *samples; /* [d_sae, n_intervals, n_per_interval], interval 0 the lowest, each
                              * by activation descending; sample_count[i, q] are used */
    uint32_t *sample_count;  /* [d_sae, n_intervals] */
    uint64_t *interval_count; /* [d_sae, n_intervals] */
    int32_t *logit_top_id, *logit_bottom_id; /* [d_sae, n_logits]: largest first / smallest first */
    float *logit_top, *logit_bottom;
    int32_t *neighbour_id;   /* [d_sae, n_neighbours], most similar first */
    float *neighbour_cos;
    double seconds;
    /* storage of the contexts' tokens and activations */
    int32_t *tok_store;
    float *act_store;
} lm_sae_features;

/* o may be NULL (defaults). Errors: LM_ERR_ARG if the SAE names no hook and o gives none, the
 * hook's width is not sae->d_in, or n == 0; the hook name is checked against the model; ctx
 * beyond the model's context is LM_ERR_RANGE. *out is freed with lm_sae_features_free. */
lm_status lm_sae_features_compute(const struct lm_model *model, const lm_sae *sae, const int32_t *ids, size_t n,
                          const lm_sae_features_opts *o, lm_sae_features **out);
void lm_sae_features_free(lm_sae_features *f); /* accepts NULL */

/* Text of one token for display, valid UTF-8: the bytes it adds to decoded text (given the
 * previous token, -1 at the start), with every byte that is not part of a complete UTF-8
 * character (byte-level tokens may split one) written as <0xHH>; special tokens, which add no
 * text, are shown as their piece ("<|endoftext|>"). Returns a malloc'd string. */
char *lm_sae_token_display(const struct lm_tokenizer *tok, int prev, int id);

/* A 64-bit FNV-1a checksum of the SAE's dimensions and parameters: feature_stats.safetensors
 * records it so that stale statistics are refused. */
uint64_t lm_sae_checksum(const lm_sae *sae);

/* Metadata recorded in the outputs (any may be NULL). */
typedef struct lm_sae_features_meta {
    const char *model, *sae, *text;
} lm_sae_features_meta;

/* Writes into dir (created if absent), each file atomically:
 *   features.json  {"format": "lumen-sae-features", "version": 1, "model", "sae", "text", "hook",
 *                   "d_sae", "d_in", "tokens", "windows", "ctx", "before", "after",
 *                   "intervals" (the number), "features": [ one object per latent, in id order:
 *                     {"id", "density", "fired", "max_act", "mean_act",
 *                      "top": [context...], by activation descending,
 *                      "intervals": [{"lo", "hi", "count", "samples": [context...]}...],
 *                                   lowest interval first (empty for a dead latent),
 *                      "logits_top": [{"token", "id", "value"}...] largest first,
 *                      "logits_bottom": [...] smallest first,
 *                      "neighbours": [{"id", "cos"}...] most similar first} ]}
 *                  where a context is {"pos": index of the activating token in the token stream,
 *                   "act", "at": its offset in the context, "ids": [token ids],
 *                   "tokens": [display strings, lm_sae_token_display], "acts": [activations]}
 *   index.html     one static page (data embedded, inline CSS and JS, no network): the list of
 *                  latents, sortable and filterable by density and max activation, and the card
 *                  of the selected one (contexts shaded by activation, the activating token
 *                  outlined; logit effects; neighbours)
 *   feature_stats.safetensors
 *                  "density" and "max_act" F32 [d_sae]; metadata format "lumen-sae-feature-stats",
 *                  hook, sae_checksum (16 hex digits), tokens. */
lm_status lm_sae_features_write(const lm_sae_features *f, const lm_sae *sae, const struct lm_tokenizer *tok,
                                const lm_sae_features_meta *meta, const char *dir);

/* Reads "max_act" and/or "density" (either out pointer may be NULL; malloc'd [d_sae], free())
 * from a feature_stats.safetensors file. Errors name the file: missing, a tensor missing or not
 * F32 [d_sae], or a checksum that does not match sae (statistics of another SAE). */
lm_status lm_sae_feature_stats_load(const char *path, const lm_sae *sae, float **max_act, float **density);

#ifdef __cplusplus
}
#endif
#endif
