/* model.h - a decoder-only transformer (llama family now) with KV cache, loaded from
 * llama2.c checkpoints or GGUF files, and the sampler used to generate from it. */
#ifndef LUMEN_MODEL_H
#define LUMEN_MODEL_H

#include "lumen/base.h"
#include "lumen/format.h"
#include "lumen/tensor.h"
#include "lumen/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lm_arch { LM_ARCH_LLAMA = 0, LM_ARCH_GPT2 = 1 } lm_arch;

typedef struct lm_config {
    lm_arch arch;
    int dim;
    int hidden_dim;
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int vocab_size;
    int seq_len; /* maximum context */
    float norm_eps;
    float rope_theta;
    lm_rope_style rope_style;
    int tied_embeddings; /* output head shares the embedding matrix */
} lm_config;

typedef struct lm_layer {
    const float *attn_norm; /* [dim] */
    const float *ffn_norm;  /* [dim] */
    lm_weight wq;           /* [n_heads*head_dim, dim] */
    lm_weight wk;           /* [n_kv_heads*head_dim, dim] */
    lm_weight wv;           /* [n_kv_heads*head_dim, dim] */
    lm_weight wo;           /* [dim, n_heads*head_dim] */
    lm_weight w_gate;       /* [hidden, dim] (w1) */
    lm_weight w_up;         /* [hidden, dim] (w3) */
    lm_weight w_down;       /* [dim, hidden] (w2) */
} lm_layer;

typedef struct lm_model {
    lm_config cfg;
    char *path;
    char *format;          /* "llama2c", "gguf" */
    lm_weight tok_embeddings; /* [vocab, dim] */
    const float *final_norm;  /* [dim] */
    lm_weight output;         /* [vocab, dim] */
    lm_layer *layers;
    lm_tokenizer *tokenizer; /* from the file when it holds one, else NULL */
    char *tokenizer_error;   /* why the file's tokenizer could not be used, or NULL */
    /* ownership */
    lm_mapped_file map;
    lm_gguf *gguf;
    void *owned;            /* f32 copies made at load (norm vectors stored as F16, ...) */
    size_t n_params;
} lm_model;

/* Loads a model, choosing the reader by content (GGUF magic) or extension (.bin = llama2.c).
 * Weights stay in the mapping in their stored dtype. */
lm_status lm_model_load(const char *path, lm_model **out);
void lm_model_free(lm_model *m); /* accepts NULL */
/* A model with freshly allocated f32 weights drawn from N(0, std^2) (norm weights 1), for
 * benchmarks and tests. cfg must be complete (head_dim = dim / n_heads if 0). */
lm_status lm_model_init_random(const lm_config *cfg, uint64_t seed, float std, lm_model **out);
/* Human-readable one-line summary, e.g. for `lumen info`. */
size_t lm_model_param_count(const lm_model *m);

/* Per-sequence inference state: KV cache and activations. */
typedef struct lm_state lm_state;
/* max_ctx <= 0 uses the model's seq_len; max_batch is the most tokens one forward call takes. */
lm_status lm_state_new(const lm_model *m, int max_ctx, int max_batch, lm_state **out);
void lm_state_free(lm_state *s);
void lm_state_reset(lm_state *s);
int lm_state_pos(const lm_state *s);

/* Runs n tokens at the current position, appending to the KV cache. If logits is non-NULL
 * it receives the logits: of every token ([n, vocab]) if all_logits, else of the last ([vocab]).
 * LM_ERR_RANGE if the context would overflow, LM_ERR_ARG for an id outside the vocabulary. */
lm_status lm_forward(const lm_model *m, lm_state *s, const int32_t *tokens, int n, float *logits, int all_logits);

/* Sampling. temperature 0 = greedy argmax; top_k <= 0 disables; top_p >= 1 disables. */
typedef struct lm_sampler {
    float temperature;
    int top_k;
    float top_p;
    lm_rng rng;
    /* scratch */
    float *probs;
    int *idx;
    int vocab;
} lm_sampler;
lm_status lm_sampler_init(lm_sampler *s, int vocab, float temperature, int top_k, float top_p, uint64_t seed);
void lm_sampler_free(lm_sampler *s);
int lm_sample(lm_sampler *s, float *logits); /* logits are modified */

/* Generation: encode the prompt (with BOS), prefill it in one batch, then sample up to
 * max_new_tokens, stopping early at EOS or at a generated BOS (which starts a new document in
 * llama2.c-style models). Each token's text is passed to cb as it is decided: prompt tokens
 * first (is_prompt = 1), then generated ones; cb returns non-zero to stop. */
typedef int (*lm_token_cb)(void *ud, int token, const char *text, size_t len, int is_prompt);

typedef struct lm_generate_opts {
    int max_new_tokens;
    float temperature;
    int top_k;
    float top_p;
    uint64_t seed;
    int ignore_eos; /* keep going past EOS/BOS */
} lm_generate_opts;

typedef struct lm_generate_result {
    int n_prompt;       /* prompt tokens, BOS included */
    int n_generated;
    int stopped_at_eos;
    double prefill_seconds, decode_seconds;
    int32_t *tokens;    /* prompt + generated ids, malloc'd; free with lm_generate_result_free */
    size_t n_tokens;
} lm_generate_result;

lm_status lm_generate(const lm_model *m, const lm_tokenizer *tok, const char *prompt, size_t prompt_len,
                      const lm_generate_opts *opts, lm_token_cb cb, void *ud, lm_generate_result *res);
void lm_generate_result_free(lm_generate_result *res);

#ifdef __cplusplus
}
#endif
#endif
