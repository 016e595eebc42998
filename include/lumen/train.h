/* train.h - training: token-shard data (writing and loading); the trainer's declarations join it. */
#ifndef LUMEN_TRAIN_H
#define LUMEN_TRAIN_H

#include "lumen/base.h"
#include "lumen/model.h"
#include "lumen/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ==== token-shard data (src/train/data.c) ===================================================
 *
 * A data directory, written by lm_data_write (`lumen tokenize-data`):
 *
 *   DIR/train_NNNN.bin, DIR/val_NNNN.bin   the token stream of each split, cut into shards
 *   DIR/meta.json                          what is there; written last
 *
 * A shard is a 32-byte header, then the tokens, little-endian, `width` bytes each:
 *
 *   offset  0  8 bytes  magic "LMTOK\0\0\0"
 *           8  u32      version (1)
 *          12  u32      width: 2 (uint16 tokens) or 4 (uint32 tokens)
 *          16  u64      token count
 *          24  u64      vocabulary size (every token is below it)
 *
 * so the file is exactly 32 + count * width bytes. Width 2 is used when the vocabulary has at
 * most 65536 tokens, else 4; vocabularies above 2^32 cannot be stored.
 *
 * meta.json: {"format": "lumen-tokens", "version": 1, "tokenizer": PATH, "vocab_hash": HEX
 * (FNV-1a over every token's piece, see lm_data_vocab_hash), "vocab_size", "width", "dtype"
 * ("uint16" | "uint32"), "separator": {"id", "placement": "before" | "after"}, "documents"
 * ("blank-lines" | "file" | "lines"), "val_fraction", "seed", "sources": [{"path", "bytes"}], "train"
 * and "val": {"tokens", "documents", "shards": [file names]}}.
 *
 * Documents: each input file is cut at blank lines (lines of only spaces, tabs or '\r'; a line
 * holding just the separator token's text, like TinyStories' "<|endoftext|>", counts as one
 * too), at every line end (line mode; blank lines are skipped), or taken whole (file mode). A
 * document's text runs from the start of its first line to the end of its last (without the
 * final newline or '\r'); in file mode it is the whole file. Each document is encoded on its
 * own, special tokens in its text read as plain text, and the separator token is put before it
 * (BOS, for tokenizers that want BOS: SentencePiece-style ones) or after it (EOS: byte-level
 * BPE, as GPT-2's "<|endoftext|>"). A whole document goes to the validation split with
 * probability val_fraction, drawn from an lm_rng seeded with seed, one draw per document in
 * file order, so the split depends only on the inputs, the tokenizer and the seed. Every file
 * is written atomically, and meta.json is removed first and written last, so a directory is
 * either complete or refused by lm_data_open. Shards of an earlier run past the new count are
 * left alone (meta.json does not list them). */

typedef enum lm_doc_mode {
    LM_DOC_BLANK_LINES = 0, /* documents are separated by blank lines */
    LM_DOC_FILE = 1,        /* each file is one document */
    LM_DOC_LINES = 2        /* each non-blank line is one document (one sentence a line, as brown.txt) */
} lm_doc_mode;

typedef struct lm_data_write_opts {
    double val_fraction;    /* in [0, 1]; lm_data_write_opts_default: 0.05 */
    uint64_t seed;          /* the split's seed; default 1 */
    lm_doc_mode docs;
    uint64_t shard_tokens;  /* tokens per shard file at most; 0: 1 << 28 */
    const char *tokenizer_path; /* recorded in meta.json; may be NULL */
    int threads;            /* encoding threads; <= 0: lm_get_threads() */
} lm_data_write_opts;
void lm_data_write_opts_default(lm_data_write_opts *o);

typedef struct lm_data_split_info {
    uint64_t tokens, documents;
    int shards;
} lm_data_split_info;

typedef struct lm_data_write_result {
    lm_data_split_info train, val;
    int width;              /* bytes per token in the shards */
    uint64_t bytes_read;
    double seconds;
} lm_data_write_result;

/* Called with the bytes of input processed and the total; non-zero stops with an error. */
typedef int (*lm_data_progress_cb)(void *ud, size_t done, size_t total);

/* Tokenizes the files into out_dir (created if missing). o NULL: defaults. cb and res may be
 * NULL. Errors name the file: unreadable or empty input, no tokens at all, a tokenizer with
 * neither EOS nor BOS to separate documents, a vocabulary too large for the shard format. */
lm_status lm_data_write(const lm_tokenizer *tok, const char *const *files, size_t n_files, const char *out_dir,
                        const lm_data_write_opts *o, lm_data_progress_cb cb, void *ud, lm_data_write_result *res);

/* Writes one shard (atomically) holding tokens[0..n), each < vocab_size; the width follows
 * from vocab_size. LM_ERR_RANGE for a vocabulary above 2^32 or a token not below it. */
lm_status lm_data_write_shard(const char *path, const uint32_t *tokens, uint64_t n, uint64_t vocab_size);

/* FNV-1a (64-bit) over every token's piece, each followed by a 0 byte, in id order: tells
 * whether data was made with a given vocabulary. */
uint64_t lm_data_vocab_hash(const lm_tokenizer *tok);

/* ---- loading ---- */

/* One split of a data directory: its shards mapped read-only and seen as one token stream. */
typedef struct lm_data lm_data;

/* Opens split "train" or "val" of dir (meta.json and the shards it lists). Every shard's header
 * is checked (magic, version, width, count against the file size, vocabulary against
 * meta.json) and every token is checked once against the vocabulary size; a failure names the
 * file (and for a token its index). A split without tokens is LM_ERR_RANGE. */
lm_status lm_data_open(const char *dir, const char *split, lm_data **out);
/* The same over given shard files, without a meta.json (their vocabulary sizes must agree). */
lm_status lm_data_open_files(const char *const *paths, size_t n, lm_data **out);
void lm_data_close(lm_data *d); /* accepts NULL */

uint64_t lm_data_n_tokens(const lm_data *d);
int lm_data_vocab_size(const lm_data *d);
int lm_data_width(const lm_data *d);
/* The token at position i of the split's stream (i < lm_data_n_tokens). */
uint32_t lm_data_token(const lm_data *d, uint64_t i);

/* B windows of T + 1 consecutive tokens at uniformly random starts drawn from rng: row b of
 * inputs[B*T] is tokens [s, s+T), of targets[B*T] tokens [s+1, s+T]. The loader keeps no state:
 * the rng is all there is to save for resuming (it is advanced by exactly 2 draws per window,
 * more only in the rare rejection of a biased draw). LM_ERR_RANGE when T + 1 exceeds the
 * split. */
lm_status lm_data_sample(const lm_data *d, lm_rng *rng, int B, int T, int32_t *inputs, int32_t *targets);

/* Consecutive windows for evaluation: window k holds tokens [k*T, k*T + T] (T + 1 tokens, so
 * consecutive windows share one token and every token after the first is a target exactly
 * once). Fills up to B windows from *pos (start 0) and advances it; *n_rows is how many were
 * filled, 0 at the end. The last partial window (fewer than T + 1 tokens) is left out. */
lm_status lm_data_sequential(const lm_data *d, uint64_t *pos, int B, int T, int32_t *inputs, int32_t *targets,
                             int *n_rows);

/* ==== end of token-shard data ============================================================= */

/* ==== trainable parameters, backward, optimiser, training loop ============================= */

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
    /* cosine regulariser (Razzhigaev et al. 2024): loss += linearity_reg * mean over layers and
     * tokens of (1 - cos(h_i, h_{i+1})), h_0 the embedding output, h_{i+1} block i's output */
    float linearity_reg;
    double last_reg;   /* the regulariser's mean (before the weight) in the last step */
} lm_trainable;

/* New parameters for cfg, initialised as GPT-2 does: N(0, 0.02), the output projections of
 * attention and MLP scaled by 1/sqrt(2 * n_layers), norms 1, biases 0. */
lm_status lm_trainable_new(const lm_config *cfg, uint64_t seed, lm_trainable **out);
/* Parameters copied (converted to f32) from a loaded model. */
lm_status lm_trainable_from_model(const lm_model *m, lm_trainable **out);
void lm_trainable_free(lm_trainable *t);
void lm_trainable_zero_grad(lm_trainable *t);

/* Forward and backward over B sequences of T tokens: inputs[B*T], targets[B*T] (targets < 0
 * ignored). The loss is the mean next-token cross-entropy over the counted targets, plus the
 * cosine regulariser when t->linearity_reg > 0; the gradient of loss * grad_scale is
 * ACCUMULATED into t->grads (grad_scale = 1/accumulation steps). *loss receives the unscaled
 * total; t->last_reg the regulariser's mean. */
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
    long fault_nan_at_step; /* tests only: poison a weight before this step (0: never) */
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
