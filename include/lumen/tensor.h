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

#ifdef __cplusplus
}
#endif
#endif
