/* tensor.h - dtypes, weight views, and the numeric ops of a transformer forward pass. */
#ifndef LUMEN_TENSOR_H
#define LUMEN_TENSOR_H

#include "lumen/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Storage types a weight may have. The numeric values are lumen's own, not GGUF's. */
typedef enum lm_dtype {
    LM_F32 = 0,
    LM_F16,
    LM_BF16,
    LM_Q8_0, /* blocks of 32: f16 scale + 32 int8 */
    LM_Q4_0, /* blocks of 32: f16 scale + 16 bytes of nibbles */
    LM_Q4_K, /* super-blocks of 256 (GGML's k-quant layout) */
    LM_DTYPE_COUNT
} lm_dtype;

const char *lm_dtype_name(lm_dtype t);
/* Elements per block and bytes per block (1 and the element size for plain types). */
size_t lm_dtype_block(lm_dtype t);
size_t lm_dtype_block_bytes(lm_dtype t);
/* Bytes for one row of n elements; 0 if n is not a multiple of the block. */
size_t lm_dtype_row_bytes(lm_dtype t, size_t n);

/* Converts n elements of a row stored as t to f32. n must be a multiple of the block size. */
void lm_dequantize_row(lm_dtype t, const void *src, float *dst, size_t n);

/* A 2-D weight matrix [rows, cols] (rows = output features, cols = input features),
 * row-major, stored in any dtype. The data is borrowed (usually an mmap). */
typedef struct lm_weight {
    lm_dtype dtype;
    size_t rows, cols;
    const void *data;
} lm_weight;

/* out[n, W.rows] = x[n, W.cols] @ W^T. f32 weights go straight to BLAS (sgemv when n == 1,
 * sgemm otherwise); other dtypes are converted a block of rows at a time into scratch
 * and multiplied there, so the whole matrix never exists as f32. */
lm_status lm_linear(float *out, const float *x, size_t n, const lm_weight *W);
/* Frees the calling thread's conversion scratch used by lm_linear. */
void lm_tensor_release_scratch(void);

/* Copies row r of an embedding table W[rows, cols] into out[cols] as f32. */
void lm_embedding_row(float *out, const lm_weight *W, size_t r);

/* out[n, d] = x / rms(x) * w ; w[d] f32. out may alias x. */
void lm_rmsnorm(float *out, const float *x, const float *w, size_t n, size_t d, float eps);
/* LayerNorm with weight and bias (b may be NULL). out may alias x. */
void lm_layernorm(float *out, const float *x, const float *w, const float *b, size_t n, size_t d, float eps);

/* Rotary embedding on x[n_tok, n_heads, head_dim] at positions pos0 .. pos0+n_tok-1, with
 * inv_freq[head_dim/2] the rotation frequency of each pair (see lm_rope_inv_freq).
 * INTERLEAVED rotates pairs (2i, 2i+1) (llama2.c, GGUF llama); HALF rotates (i, i+d/2)
 * (Hugging Face rotate_half). */
typedef enum lm_rope_style { LM_ROPE_INTERLEAVED = 0, LM_ROPE_HALF = 1 } lm_rope_style;
void lm_rope(float *x, size_t n_tok, size_t n_heads, size_t head_dim, size_t pos0, const float *inv_freq,
             lm_rope_style style);
/* The plain frequencies theta^(-2i/head_dim), computed in float as llama2.c does. */
void lm_rope_inv_freq(float *inv_freq, size_t head_dim, float theta);

/* In-place softmax over each of n rows of length d. */
void lm_softmax(float *x, size_t n, size_t d);

/* out[i] = silu(gate[i]) * up[i], n elements. out may alias gate. */
void lm_swiglu(float *out, const float *gate, const float *up, size_t n);
/* GELU, tanh approximation, in place. */
void lm_gelu_tanh(float *x, size_t n);

/* Causal grouped-query attention of n_tok new queries at positions pos0.. against a cache
 * holding keys/values for positions 0 .. pos0+n_tok-1.
 *   out  [n_tok, n_heads * head_dim]
 *   q    [n_tok, n_heads * head_dim]
 *   kc,vc[ctx_cap, n_kv_heads * head_dim] (rows 0 .. pos0+n_tok-1 valid)
 *   scratch: at least lm_attention_scratch(...) floats. */
size_t lm_attention_scratch(size_t n_tok, size_t n_heads, size_t kv_len);
void lm_attention(float *out, const float *q, const float *kc, const float *vc, size_t n_tok, size_t pos0,
                  size_t n_heads, size_t n_kv_heads, size_t head_dim, float *scratch);

/* ---- training: forward pieces without a KV cache, and backward passes -----------------
 * Every backward ACCUMULATES (+=) into the gradients it is given (so a parameter used twice, or
 * a residual branch, just sums); a NULL gradient pointer means "not needed". Shapes are those of
 * the matching forward. All buffers f32. */

/* dx[n,n_in] += dout[n,n_out] @ W[n_out,n_in];  dW += dout^T @ x;  db[n_out] += sum_n dout. */
void lm_linear_backward(float *dx, float *dW, float *db, const float *dout, const float *x, const float *W, size_t n,
                        size_t n_in, size_t n_out);
/* y[n,n_out] = x[n,n_in] @ W^T + b (b may be NULL), W f32 [n_out,n_in]. */
void lm_linear_f32(float *y, const float *x, const float *W, const float *b, size_t n, size_t n_in, size_t n_out);
void lm_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w, size_t n, size_t d,
                         float eps);
void lm_layernorm_backward(float *dx, float *dw, float *db, const float *dout, const float *x, const float *w,
                           size_t n, size_t d, float eps);
/* The gradient of a rotation is the inverse rotation: applies RoPE with negated angles to
 * dx[n_tok, n_heads, head_dim] in place. */
void lm_rope_backward(float *dx, size_t n_tok, size_t n_heads, size_t head_dim, size_t pos0, const float *inv_freq,
                      lm_rope_style style);
void lm_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n);
void lm_gelu_tanh_backward(float *dx, const float *dout, const float *x, size_t n);
/* dW[rows, d] += scatter of dout[n, d] into the rows ids[n]. */
void lm_embedding_backward(float *dW, const float *dout, const int32_t *ids, size_t n, size_t d);

/* Causal GQA attention over one sequence of T tokens at positions 0..T-1, keeping the
 * probabilities for the backward.
 *   out [T, n_heads*hd]; q [T, n_heads*hd]; k, v [T, n_kv*hd]; probs [n_heads, T, T] (written,
 *   upper triangle zero). */
void lm_attention_train(float *out, float *probs, const float *q, const float *k, const float *v, size_t T,
                        size_t n_heads, size_t n_kv, size_t hd);
/* Accumulates dq, dk, dv from dout, given the forward's inputs and probs. scratch: at least
 * lm_attention_train_scratch(T) floats (it depends on the thread count: size it after
 * lm_set_threads); one scratch per concurrent caller. */
size_t lm_attention_train_scratch(size_t T);
void lm_attention_train_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                                 const float *v, const float *probs, size_t T, size_t n_heads, size_t n_kv, size_t hd,
                                 float *scratch);

/* Mean cross-entropy of logits[n, V] against targets[n] (targets < 0 are ignored and not
 * counted); if dlogits is non-NULL it receives (softmax - onehot) * scale / n_counted (written,
 * not accumulated). Returns the mean loss (NaN if no target counted). */
double lm_cross_entropy(float *dlogits, const float *logits, const int32_t *targets, size_t n, size_t V, float scale);

#ifdef __cplusplus
}
#endif
#endif
