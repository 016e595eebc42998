/* trainer.h - training: parameters in one flat f32 allocation with gradients and AdamW state,
 * the training forward/backward of the gpt2 and llama families, the optimiser, schedules. */
#ifndef LUMEN_TRAINER_H
#define LUMEN_TRAINER_H

#include "lumen/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One parameter tensor inside the flat buffers. */
typedef struct lm_param {
    char name[96];      /* lumen's own name, e.g. "blocks.3.attn.wq" */
    size_t offset;      /* in floats, into params / grads / adam_m / adam_v */
    size_t size;        /* elements */
    size_t rows, cols;  /* cols == 1 for vectors */
    int decay;          /* weight decay applies (matrices and embeddings; not norms or biases) */
} lm_param;

typedef struct lm_trainable {
    lm_model *model;    /* a model whose weights are views into params (f32) */
    float *params, *grads, *adam_m, *adam_v;
    size_t n_floats;
    lm_param *table;
    size_t n_table;
    /* activations of the last training forward, sized for max_tokens */
    void *acts;
} lm_trainable;

/* New parameters for cfg, initialised as GPT-2 does: N(0, 0.02), the output projections of
 * attention and MLP scaled by 1/sqrt(2 * n_layers), norms 1, biases 0. */
lm_status lm_trainable_new(const lm_config *cfg, uint64_t seed, lm_trainable **out);
/* Parameters copied (converted to f32) from a loaded model. */
lm_status lm_trainable_from_model(const lm_model *m, lm_trainable **out);
void lm_trainable_free(lm_trainable *t);
void lm_trainable_zero_grad(lm_trainable *t);

/* Forward and backward over B sequences of T tokens: inputs[B*T], targets[B*T] (targets < 0
 * ignored). The loss is the mean next-token cross-entropy over the counted targets; the
 * gradient of loss * grad_scale is ACCUMULATED into t->grads (grad_scale = 1/accumulation
 * steps). *loss receives the unscaled mean. */
lm_status lm_train_step_grad(lm_trainable *t, const int32_t *inputs, const int32_t *targets, int B, int T,
                             float grad_scale, double *loss);
/* The loss alone (no gradient), for evaluation. */
lm_status lm_train_eval_loss(lm_trainable *t, const int32_t *inputs, const int32_t *targets, int B, int T, double *loss);

/* Global L2 norm of the gradients (double accumulation, deterministic order). */
double lm_grad_norm(const lm_trainable *t);

typedef struct lm_adamw {
    float lr, beta1, beta2, eps, weight_decay;
    long step; /* steps taken so far (bias correction uses step + 1) */
} lm_adamw;
/* One AdamW step with decoupled weight decay on parameters whose table entry says decay;
 * gradients are multiplied by clip_scale first (1 for none). */
void lm_adamw_step(lm_trainable *t, lm_adamw *opt, float clip_scale);

/* Linear warmup to max_lr over warmup steps, then cosine decay to min_lr at total steps. */
float lm_lr_schedule(long step, long warmup, long total, float max_lr, float min_lr);

/* ---- the training loop ------------------------------------------------------------------ */

typedef struct lm_train_opts {
    const char *data_dir;   /* written by `lumen tokenize-data` */
    const char *out_dir;    /* checkpoints, the final model, the JSONL log */
    const char *init_model; /* continue from this model (any format lumen loads), or NULL */
    const char *tokenizer;  /* saved beside the model as tokenizer.json when it can be; may be NULL */
    lm_config cfg;          /* the architecture when init_model is NULL (vocab from the data) */
    int batch, ctx, accum;  /* sequences per micro-batch, tokens per sequence, micro-batches per step */
    long steps, warmup;
    float lr, min_lr, weight_decay, beta1, beta2, eps, clip;
    long eval_every;        /* 0: only at the end */
    int eval_batches;
    long save_every;        /* checkpoint period in steps (0: only at the end) */
    uint64_t seed;
    int progress;           /* progress line on stderr */
    float linearity_reg;    /* cosine regulariser weight (0: off) */
} lm_train_opts;

typedef struct lm_train_result {
    long steps_done;
    long resumed_from;      /* step of the checkpoint resumed, or -1 */
    double final_loss, final_val_loss;
    double tokens_per_s;
    double seconds;
} lm_train_result;

/* Trains, writing OUT/ckpt/step_NNNNNNNN/ checkpoints (model in the Hugging Face layout,
 * optimizer.safetensors, trainer_state.json) and OUT/ckpt/latest (renamed into place last, so
 * a checkpoint is either complete or ignored), OUT/train_log.jsonl (one JSON object per step),
 * and the final model in OUT/. Run again with the same options after a kill, it resumes from
 * the latest checkpoint and continues bit-identically (same seed and thread count). A
 * non-finite loss or gradient stops the run with an error before anything is saved. */
lm_status lm_train_run(const lm_train_opts *o, lm_train_result *r);
void lm_train_opts_default(lm_train_opts *o);

#ifdef __cplusplus
}
#endif
#endif
