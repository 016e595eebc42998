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
typedef enum lm_norm_kind { LM_NORM_RMS = 0, LM_NORM_LAYER = 1 } lm_norm_kind;
typedef enum lm_act_kind { LM_ACT_SWIGLU = 0, LM_ACT_GELU_TANH = 1 } lm_act_kind;
typedef enum lm_rope_scaling_kind { LM_ROPE_SCALING_NONE = 0, LM_ROPE_SCALING_LLAMA3, LM_ROPE_SCALING_LINEAR } lm_rope_scaling_kind;

typedef struct lm_rope_scaling {
    lm_rope_scaling_kind kind;
    float factor;
    float low_freq_factor, high_freq_factor; /* llama3 */
    int original_max_positions;              /* llama3 */
} lm_rope_scaling;

typedef struct lm_config {
    lm_arch arch;
    char family[16];      /* "llama", "mistral", "qwen2", "gpt2" (as config.json's model_type) */
    int dim;
    int hidden_dim;
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int vocab_size;
    int seq_len;          /* maximum context (learned positions: the table's size) */
    float norm_eps;
    lm_norm_kind norm;
    lm_act_kind act;
    int learned_pos;      /* GPT-2: learned position embeddings, no RoPE */
    float rope_theta;
    lm_rope_style rope_style;
    lm_rope_scaling rope_scaling;
    int tied_embeddings;  /* output head shares the embedding matrix */
} lm_config;

/* One block. Norm biases and linear biases are NULL where the family has none. */
typedef struct lm_layer {
    const float *attn_norm, *attn_norm_b; /* [dim] */
    const float *ffn_norm, *ffn_norm_b;   /* [dim] */
    lm_weight wq;           /* [n_heads*head_dim, dim] */
    lm_weight wk;           /* [n_kv_heads*head_dim, dim] */
    lm_weight wv;           /* [n_kv_heads*head_dim, dim] */
    lm_weight wo;           /* [dim, n_heads*head_dim] */
    const float *bq, *bk, *bv, *bo;
    lm_weight w_gate;       /* [hidden, dim] (w1); unused without SwiGLU */
    lm_weight w_up;         /* [hidden, dim] (w3; GPT-2's c_fc) */
    lm_weight w_down;       /* [dim, hidden] (w2; GPT-2's mlp c_proj) */
    const float *b_up, *b_down;
    /* A linear block (lumen prune --linearize) when lin.data is set: h_out = h_in lin^T + lin_b,
     * lin [dim, dim] (out x in, as every matrix here) and lin_b [dim], replaces attention, MLP and
     * both residual additions; all the fields above are then zero. */
    lm_weight lin;
    const float *lin_b;
} lm_layer;

static inline int lm_layer_is_linear(const lm_layer *ly) { return ly->lin.data != NULL; }

typedef struct lm_model {
    lm_config cfg;
    char *path;
    char *format;             /* "llama2c", "gguf", "hf", "random" */
    lm_weight tok_embeddings; /* [vocab, dim] */
    lm_weight pos_embeddings; /* [seq_len, dim] when cfg.learned_pos */
    const float *final_norm, *final_norm_b; /* [dim] */
    lm_weight output;         /* [vocab, dim] */
    lm_layer *layers;
    float *inv_freq;          /* [head_dim/2] RoPE frequencies, scaling applied */
    lm_tokenizer *tokenizer;  /* from the file/directory when it holds one, else NULL */
    char *tokenizer_error;    /* why the file's tokenizer could not be used, or NULL */
    /* ownership */
    lm_mapped_file map;
    lm_gguf *gguf;
    lm_st_set *st;
    void *owned;              /* f32 copies made at load (norm vectors stored as F16, ...) */
    void **owned_bufs;        /* further buffers owned by the model */
    size_t n_owned_bufs;
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
/* Parameters of block l (0 <= l < n_layers) alone: its matrices, norms and biases, or dim^2 + dim
 * for a linear block. */
size_t lm_layer_param_count(const lm_model *m, int l);
/* Makes block l a linear block h -> h W^T + b (W [dim, dim] row-major, out x in; b [dim] or NULL
 * for zero): W and b are copied into buffers m owns (a view's own, see lm_model_drop_blocks), the
 * block's other weights are forgotten and n_params is updated. The KV cache of that layer is then
 * unused; its hook points are blocks.l.hook_resid_pre and hook_resid_post only. */
lm_status lm_model_set_linear_block(lm_model *m, int l, const float *W, const float *b);
/* Number of linear blocks of m. */
int lm_model_linear_count(const lm_model *m);

/* Saves m as a Hugging Face directory (config.json, model.safetensors, and tokenizer.json when
 * tok is given and can be written), each file atomically. Weights keep their dtype (F32, F16,
 * BF16); quantised ones are written as F32. Interleaved-RoPE checkpoints (llama2.c, GGUF) get
 * their Q/K rows permuted to the rotate-half layout transformers expects. */
lm_status lm_model_save_hf(const lm_model *m, const lm_tokenizer *tok, const char *dir);

/* Inference state: KV cache (one per sequence of a batch), activations, hooks. */
typedef struct lm_state lm_state;
/* One sequence. max_ctx <= 0 uses the model's seq_len; max_batch is the most tokens one
 * forward call takes (longer inputs are processed in chunks). */
lm_status lm_state_new(const lm_model *m, int max_ctx, int max_batch, lm_state **out);
/* Up to max_seqs sequences of equal length per call (lm_forward_batch), max_tokens in all. */
lm_status lm_state_new_batch(const lm_model *m, int max_ctx, int max_tokens, int max_seqs, lm_state **out);
void lm_state_free(lm_state *s);
void lm_state_reset(lm_state *s);
int lm_state_pos(const lm_state *s);

/* Runs n tokens at the current position, appending to the KV cache. If logits is non-NULL
 * it receives the logits: of every token ([n, vocab]) if all_logits, else of the last ([vocab]).
 * LM_ERR_RANGE if the context would overflow, LM_ERR_ARG for an id outside the vocabulary. */
lm_status lm_forward(const lm_model *m, lm_state *s, const int32_t *tokens, int n, float *logits, int all_logits);

/* n_seq sequences of n_tok tokens each (tokens[n_seq * n_tok], row-major), all at the state's
 * current position, appended to each sequence's cache. logits: [n_seq, n_tok, vocab] if
 * all_logits, else [n_seq, vocab] (last position of each). */
lm_status lm_forward_batch(const lm_model *m, lm_state *s, const int32_t *tokens, int n_seq, int n_tok,
                           float *logits, int all_logits);

/* ---- hook points (TransformerLens names) ---------------------------------------------- */
typedef enum lm_hook_point {
    LM_HOOK_EMBED = 0,   /* hook_embed: token embeddings */
    LM_HOOK_POS_EMBED,   /* hook_pos_embed: learned position embeddings (GPT-2) */
    LM_HOOK_RESID_PRE,   /* blocks.L.hook_resid_pre */
    LM_HOOK_ATTN_OUT,    /* blocks.L.hook_attn_out: attention output as added to the residual */
    LM_HOOK_RESID_MID,   /* blocks.L.hook_resid_mid */
    LM_HOOK_MLP_OUT,     /* blocks.L.hook_mlp_out */
    LM_HOOK_RESID_POST,  /* blocks.L.hook_resid_post */
    LM_HOOK_LN_FINAL,    /* ln_final.hook_normalized: the final norm's output */
    LM_HOOK_POINT_COUNT
} lm_hook_point;

typedef struct lm_hook_info {
    const char *name;   /* the name it was registered under */
    lm_hook_point point;
    int layer;          /* -1 for hook_embed, hook_pos_embed, ln_final */
    int n_seq, n_tok;   /* the activation is [n_seq * n_tok, d], row-major */
    int d;
    int pos0;           /* position of the first token of each sequence */
    const int32_t *tokens; /* [n_seq * n_tok] */
} lm_hook_info;

/* Called during the forward with the activation, which the hook may read or modify in place
 * (the forward continues with what it leaves there). A non-OK return aborts the forward. */
typedef lm_status (*lm_hook_fn)(void *ud, const lm_hook_info *info, float *act);

/* Parses a TransformerLens name ("blocks.3.hook_resid_post", "hook_embed", ...) for model m.
 * A linear block has no attention or MLP: hook_attn_out, hook_resid_mid and hook_mlp_out are
 * refused there (LM_ERR_ARG); its hook_resid_pre and hook_resid_post fire as usual. */
lm_status lm_hook_parse(const lm_model *m, const char *name, lm_hook_point *point, int *layer);
/* Registers fn at the named point; hooks at one point run in registration order. With no hooks
 * registered the forward does no extra work. */
lm_status lm_state_add_hook(lm_state *s, const char *name, lm_hook_fn fn, void *ud);
void lm_state_clear_hooks(lm_state *s);

/* ---- corpora, scoring, harvesting ------------------------------------------------------ */

/* Reads a text file and tokenizes it (BOS first when add_bos and lm_tokenizer_wants_bos),
 * keeping at most max_tokens (0 = all). *ids is malloc'd. */
lm_status lm_tokenize_file(const lm_tokenizer *tok, const char *path, int add_bos, size_t max_tokens, int32_t **ids,
                           size_t *n_ids);

/* Called after each batch with tokens done so far and the total; returns non-zero to stop. */
typedef int (*lm_progress_cb)(void *ud, size_t done, size_t total);

/* Mean next-token cross-entropy over ids cut into consecutive, non-overlapping windows of ctx
 * tokens (a shorter last window is scored too): within a window every token after the first is
 * predicted from those before it in the window, so a window of n tokens gives n - 1
 * predictions. batch windows run together. */
typedef struct lm_eval_result {
    double mean_ce;      /* nats per predicted token */
    double perplexity;   /* exp(mean_ce) */
    size_t n_predicted;
    size_t n_windows;
    double seconds;
} lm_eval_result;
lm_status lm_eval_ce(const lm_model *m, const int32_t *ids, size_t n, int ctx, int batch, lm_progress_cb cb, void *ud,
                     lm_eval_result *res);

/* The windows of lm_eval_ce and lm_harvest, run for the hooks on two states: ids[0..n) in
 * consecutive windows of o->ctx tokens, the full ones o->batch at a time on sb (from
 * lm_state_new_batch(m, ctx, batch * ctx, batch)), the shorter last one on s1 (from
 * lm_state_new(m, ctx, ctx)); each state is reset before its call; no logits. Before each call,
 * o->before (if set) gets the offset of its first token and the window length; after each call,
 * o->progress (if set) gets o->done0 + the tokens done and o->total, and a non-zero return stops
 * the run with "WHAT: stopped" (LM_ERR_ARG, WHAT = o->what). */
typedef void (*lm_window_fn)(void *ud, size_t first, int len);
typedef struct lm_windows_opts {
    int ctx, batch;
    lm_window_fn before;
    void *before_ud;
    lm_progress_cb progress;
    void *progress_ud;
    size_t done0, total;  /* progress reports done0 + tokens done, of total */
    const char *what;     /* names the job in the "stopped" message */
} lm_windows_opts;
lm_status lm_forward_windows(const lm_model *m, lm_state *sb, lm_state *s1, const int32_t *ids, size_t n,
                             const lm_windows_opts *o);

/* A hook target that appends each call's rows (n_seq * n_tok rows of width d) to buf [cap, d]. */
typedef struct lm_row_sink {
    float *buf;
    size_t d, off, cap;
} lm_row_sink;
/* An lm_hook_fn (ud: an lm_row_sink); LM_ERR_RANGE if the rows would pass cap. */
lm_status lm_row_sink_hook(void *ud, const lm_hook_info *info, float *act);

/* Activation harvesting: runs ids through the model in consecutive windows of ctx tokens
 * (the same windows as lm_eval_ce; a shorter last window included) and writes, for every
 * token, the activation at each hook as safetensors shards in out_dir:
 *   shard_NNNNN.safetensors: one F32 tensor [tokens, d] per hook (named as the hook), "tokens"
 *   I32 [tokens] (the ids) and "positions" I32 [tokens] (the position inside its window);
 *   manifest.json: what was run and which shards are complete, rewritten atomically after
 *   each shard. Running the same job again skips the shards already written (resume); a
 *   directory holding a different job is an error. */
typedef struct lm_harvest_opts {
    const char *const *hooks;
    int n_hooks;
    int ctx;              /* window length; <= 0: the model's context */
    int batch;            /* windows per forward call */
    size_t shard_tokens;  /* tokens per shard (rounded to whole windows); 0: 32768 */
    const char *model_name;  /* recorded in the manifest */
    const char *source_name; /* the text file, recorded in the manifest */
} lm_harvest_opts;
typedef struct lm_harvest_result {
    size_t n_tokens, n_shards, n_shards_skipped;
    double seconds;
} lm_harvest_result;
lm_status lm_harvest(const lm_model *m, const int32_t *ids, size_t n, const lm_harvest_opts *o, const char *out_dir,
                     lm_progress_cb cb, void *ud, lm_harvest_result *res);

/* Multiple choice: the log-probability of each choice's tokens (encoded with a leading space,
 * as they follow the prompt in running text) after the prompt; *best is the argmax. logprobs
 * (n_choices) may be NULL. */
lm_status lm_choice_score(const lm_model *m, const lm_tokenizer *tok, const char *prompt, const char *const *choices,
                          int n_choices, double *logprobs, int *best);

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

/* Generation: encode the prompt (with BOS when lm_tokenizer_wants_bos, or when the prompt is
 * empty), prefill it in one batch, then sample up to
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

/* A hook for lm_generate_ex: registered (lm_state_add_hook) on the generation's state, in
 * order, so it runs on the prompt prefill and on every generated token. */
typedef struct lm_gen_hook {
    const char *name; /* TransformerLens name, e.g. "blocks.2.hook_resid_post" */
    lm_hook_fn fn;
    void *ud;
} lm_gen_hook;
/* lm_generate with hooks (n_hooks may be 0, hooks then may be NULL): same tokens, sampling and
 * callbacks; lm_generate is lm_generate_ex with no hooks. */
lm_status lm_generate_ex(const lm_model *m, const lm_tokenizer *tok, const char *prompt, size_t prompt_len,
                         const lm_generate_opts *opts, const lm_gen_hook *hooks, int n_hooks, lm_token_cb cb,
                         void *ud, lm_generate_result *res);

#ifdef __cplusplus
}
#endif
#endif
