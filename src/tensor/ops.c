/* ops.c - the numeric kernels of a transformer forward: matmul through BLAS, norms, RoPE,
 * softmax, activations and grouped-query attention. Loops are OpenMP-parallel where the
 * work is large enough; BLAS calls are never made from inside an OpenMP region. */
#include "lumen/tensor.h"

#include <cblas.h>
#include <omp.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ROW_BLOCK 128 /* rows of a non-f32 weight converted at a time for sgemm */

/* Per-thread scratch for converting rows of non-f32 weights: grows, never shrinks, and is
 * released by lm_tensor_release_scratch() (on the calling thread). */
static _Thread_local float *t_scratch;
static _Thread_local size_t t_scratch_n;

static float *scratch(size_t n) {
    if (n > t_scratch_n) {
        free(t_scratch);
        t_scratch = malloc(n * sizeof(float));
        t_scratch_n = t_scratch ? n : 0;
    }
    return t_scratch;
}

void lm_tensor_release_scratch(void) {
    free(t_scratch);
    t_scratch = NULL;
    t_scratch_n = 0;
}

static inline float dot(const float *a, const float *b, size_t n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline float dot_bf16(const uint16_t *w, const float *x, size_t n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (size_t i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)w[i] << 16;
        float f;
        memcpy(&f, &bits, 4);
        s += f * x[i];
    }
    return s;
}

static inline float dot_f16(const uint16_t *w, const float *x, size_t n) {
    float s = 0.0f;
#ifdef __F16C__
    /* the hardware conversion (vcvtph2ps) when the build targets it */
    const _Float16 *h = (const _Float16 *)(const void *)w;
#pragma omp simd reduction(+ : s)
    for (size_t i = 0; i < n; i++) s += (float)h[i] * x[i];
#else
    for (size_t i = 0; i < n; i++) s += lm_f16_to_f32(w[i]) * x[i];
#endif
    return s;
}

/* Rows [r0, r1) of out[n, rows] = x @ W^T, on the calling thread. */
static int linear_rows(float *out, const float *x, size_t n, const lm_weight *W, size_t r0, size_t r1) {
    const size_t rows = W->rows, cols = W->cols, nr = r1 - r0;
    if (nr == 0) return 0;
    if (W->dtype == LM_F32) {
        const float *w = (const float *)W->data + r0 * cols;
        if (n == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)nr, (int)cols, 1.0f, w, (int)cols, x, 1, 0.0f, out + r0, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)nr, (int)cols, 1.0f, x, (int)cols, w,
                        (int)cols, 0.0f, out + r0, (int)rows);
        return 0;
    }
    const size_t rb = lm_dtype_row_bytes(W->dtype, cols);
    if (n == 1 && (W->dtype == LM_BF16 || W->dtype == LM_F16)) {
        /* decode with 16-bit weights: convert inside the dot product, one pass over the row */
        for (size_t r = r0; r < r1; r++) {
            const uint16_t *w = (const uint16_t *)(const void *)((const uint8_t *)W->data + r * rb);
            out[r] = W->dtype == LM_BF16 ? dot_bf16(w, x, cols) : dot_f16(w, x, cols);
        }
        return 0;
    }
    if (n <= 4) {
        /* decode is memory bound: read each stored row once, dot it with every x row */
        float *buf = scratch(cols);
        if (!buf) return -1;
        for (size_t r = r0; r < r1; r++) {
            lm_dequantize_row(W->dtype, (const uint8_t *)W->data + r * rb, buf, cols);
            for (size_t t = 0; t < n; t++) out[t * rows + r] = dot(buf, x + t * cols, cols);
        }
        return 0;
    }
    /* prefill: convert ROW_BLOCK rows to f32, then one sgemm per block */
    float *blk = scratch(ROW_BLOCK * cols);
    if (!blk) return -1;
    for (size_t b0 = r0; b0 < r1; b0 += ROW_BLOCK) {
        size_t nb = r1 - b0 < ROW_BLOCK ? r1 - b0 : ROW_BLOCK;
        for (size_t r = 0; r < nb; r++)
            lm_dequantize_row(W->dtype, (const uint8_t *)W->data + (b0 + r) * rb, blk + r * cols, cols);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)nb, (int)cols, 1.0f, x, (int)cols, blk,
                    (int)cols, 0.0f, out + b0, (int)rows);
    }
    return 0;
}

/* Threads: lumen keeps one pool (OpenMP) and runs BLAS single-threaded inside it, each thread
 * taking a slice of the output features. Two pools (OpenMP + OpenBLAS's pthreads) spinning on
 * the same few cores slow small models down by orders of magnitude. */
lm_status lm_linear(float *out, const float *x, size_t n, const lm_weight *W) {
    const size_t rows = W->rows, cols = W->cols;
    int failed = 0;
    (void)lm_get_threads(); /* first use: pins BLAS to one thread per caller */
    double work = (double)n * (double)rows * (double)cols;
    if (work < 65536.0 || omp_get_max_threads() == 1) {
        failed = linear_rows(out, x, n, W, 0, rows);
    } else {
#pragma omp parallel reduction(| : failed)
        {
            size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
            size_t chunk = (rows + nt - 1) / nt;
            chunk = (chunk + 15) & ~(size_t)15; /* keep slices SIMD-friendly */
            size_t r0 = id * chunk < rows ? id * chunk : rows;
            size_t r1 = r0 + chunk < rows ? r0 + chunk : rows;
            failed |= linear_rows(out, x, n, W, r0, r1);
        }
    }
    return failed ? lm_fail(LM_ERR_NOMEM, "out of memory converting a %s weight", lm_dtype_name(W->dtype)) : LM_OK;
}

void lm_embedding_row(float *out, const lm_weight *W, size_t r) {
    size_t rb = lm_dtype_row_bytes(W->dtype, W->cols);
    lm_dequantize_row(W->dtype, (const uint8_t *)W->data + r * rb, out, W->cols);
}

void lm_rmsnorm(float *out, const float *x, const float *w, size_t n, size_t d, float eps) {
#pragma omp parallel for schedule(static) if (n * d > 32768)
    for (size_t t = 0; t < n; t++) {
        const float *xr = x + t * d;
        float *o = out + t * d;
        float ss = 0.0f;
        for (size_t i = 0; i < d; i++) ss += xr[i] * xr[i];
        ss = 1.0f / sqrtf(ss / (float)d + eps);
        for (size_t i = 0; i < d; i++) o[i] = w[i] * (ss * xr[i]);
    }
}

void lm_layernorm(float *out, const float *x, const float *w, const float *b, size_t n, size_t d, float eps) {
#pragma omp parallel for schedule(static) if (n * d > 32768)
    for (size_t t = 0; t < n; t++) {
        const float *xr = x + t * d;
        float *o = out + t * d;
        /* two passes in float (vectorised); for rows of a few thousand values the sums keep
         * about 1e-7 relative precision, as PyTorch's float LayerNorm does */
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (size_t i = 0; i < d; i++) sum += xr[i];
        float mean = sum / (float)d, var = 0.0f;
#pragma omp simd reduction(+ : var)
        for (size_t i = 0; i < d; i++) var += (xr[i] - mean) * (xr[i] - mean);
        float inv = 1.0f / sqrtf(var / (float)d + eps);
        if (b) {
#pragma omp simd
            for (size_t i = 0; i < d; i++) o[i] = (xr[i] - mean) * inv * w[i] + b[i];
        } else {
#pragma omp simd
            for (size_t i = 0; i < d; i++) o[i] = (xr[i] - mean) * inv * w[i];
        }
    }
}

void lm_rope_inv_freq(float *inv_freq, size_t head_dim, float theta) {
    /* the same float expression as llama2.c, so greedy output matches it bit for bit */
    for (size_t i = 0; i < head_dim / 2; i++) inv_freq[i] = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
}

void lm_rope(float *x, size_t n_tok, size_t n_heads, size_t head_dim, size_t pos0, const float *inv_freq,
             lm_rope_style style) {
    size_t half = head_dim / 2;
#pragma omp parallel for schedule(static) if (n_tok * n_heads * head_dim > 32768)
    for (size_t t = 0; t < n_tok; t++) {
        float pos = (float)(pos0 + t);
        for (size_t i = 0; i < half; i++) {
            float ang = pos * inv_freq[i];
            float c = cosf(ang), s = sinf(ang);
            size_t a = style == LM_ROPE_INTERLEAVED ? 2 * i : i;
            size_t b = style == LM_ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
            for (size_t h = 0; h < n_heads; h++) {
                float *v = x + (t * n_heads + h) * head_dim;
                float v0 = v[a], v1 = v[b];
                v[a] = v0 * c - v1 * s;
                v[b] = v0 * s + v1 * c;
            }
        }
    }
}

/* exp(x) to about 2e-7 relative, in plain float arithmetic that vectorises (libm's expf/tanhf
 * calls do not, and were two thirds of GPT-2's prefill time): 2^n by the exponent bits times a
 * degree-6 Taylor polynomial on |r| <= ln2/2. The clamp is written with comparisons (fminf/fmaxf
 * are libm calls at -std=c11 without -ffast-math and stop vectorisation), n is rounded with the
 * 1.5*2^23 trick, and x < -87 (exp(-inf) included) gives 0. */
static inline float fast_expf(float x0) {
    float x = x0 < -87.0f ? -87.0f : (x0 > 88.0f ? 88.0f : x0);
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    int32_t ni = (int32_t)n;
    float r = x - n * 0.693145751953125f - n * 1.42860682030941723e-6f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
    union {
        int32_t i;
        float f;
    } scale = {.i = (ni + 127) * (1 << 23)};
    return x0 < -87.0f ? 0.0f : p * scale.f;
}

static void softmax_row(float *x, size_t d) {
    float mx = x[0];
#pragma omp simd reduction(max : mx)
    for (size_t i = 1; i < d; i++) mx = x[i] > mx ? x[i] : mx;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (size_t i = 0; i < d; i++) {
        x[i] = fast_expf(x[i] - mx);
        sum += x[i];
    }
    float inv = 1.0f / sum;
#pragma omp simd
    for (size_t i = 0; i < d; i++) x[i] *= inv;
}

void lm_softmax(float *x, size_t n, size_t d) {
#pragma omp parallel for schedule(static) if (n * d > 32768)
    for (size_t t = 0; t < n; t++) softmax_row(x + t * d, d);
}

void lm_swiglu(float *out, const float *gate, const float *up, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void lm_gelu_tanh(float *x, size_t n) {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float u = k * (v + 0.044715f * v * v * v);
        /* 0.5 v (1 + tanh u) = v / (1 + exp(-2u)) */
        x[i] = v / (1.0f + fast_expf(-2.0f * u));
    }
}

size_t lm_attention_scratch(size_t n_tok, size_t n_heads, size_t kv_len) {
    size_t nt = (size_t)omp_get_max_threads();
    size_t a = nt * n_tok * kv_len, b = n_heads * kv_len;
    return a > b ? a : b;
}

/* Few queries: one thread per head, scores in a row of scratch per head. */
static void attention_direct(float *out, const float *q, const float *kc, const float *vc, size_t n_tok, size_t pos0,
                             size_t n_heads, size_t n_kv_heads, size_t head_dim, float *scratch_buf) {
    size_t qdim = n_heads * head_dim, kvdim = n_kv_heads * head_dim, group = n_heads / n_kv_heads;
    size_t kv_len = pos0 + n_tok;
    float scale = 1.0f / sqrtf((float)head_dim);
#pragma omp parallel for schedule(static) if (n_heads * kv_len * head_dim * n_tok > 32768)
    for (size_t h = 0; h < n_heads; h++) {
        float *att = scratch_buf + h * kv_len;
        size_t kh = h / group;
        for (size_t t = 0; t < n_tok; t++) {
            const float *qh = q + t * qdim + h * head_dim;
            size_t len = pos0 + t + 1;
            for (size_t s = 0; s < len; s++) att[s] = dot(qh, kc + s * kvdim + kh * head_dim, head_dim) * scale;
            softmax_row(att, len);
            float *o = out + t * qdim + h * head_dim;
            memset(o, 0, head_dim * sizeof *o);
            for (size_t s = 0; s < len; s++) {
                const float *vh = vc + s * kvdim + kh * head_dim;
                float a = att[s];
                for (size_t i = 0; i < head_dim; i++) o[i] += a * vh[i];
            }
        }
    }
}

void lm_attention(float *out, const float *q, const float *kc, const float *vc, size_t n_tok, size_t pos0,
                  size_t n_heads, size_t n_kv_heads, size_t head_dim, float *scratch_buf) {
    size_t kv_len = pos0 + n_tok;
    if (n_tok < 16) {
        attention_direct(out, q, kc, vc, n_tok, pos0, n_heads, n_kv_heads, head_dim, scratch_buf);
        return;
    }
    size_t qdim = n_heads * head_dim, kvdim = n_kv_heads * head_dim, group = n_heads / n_kv_heads;
    float scale = 1.0f / sqrtf((float)head_dim);
    /* One head per thread: scores = Q_h K_h^T (sgemm), causal softmax, out_h = P V_h (sgemm), in
     * blocks of QB query rows, each against only the keys it can see (pos0 + its last row + 1),
     * so the masked half of the score matrix is not computed (half the attention FLOPs for a
     * prompt). Rows keep the kv_len stride of the scratch. */
    enum { QB = 64 };
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t h = 0; h < n_heads; h++) {
        size_t kh = h / group;
        float *sc = scratch_buf + (size_t)omp_get_thread_num() * n_tok * kv_len; /* [n_tok, kv_len] */
        for (size_t t0 = 0; t0 < n_tok; t0 += QB) {
            size_t t1 = t0 + QB < n_tok ? t0 + QB : n_tok, kl = pos0 + t1;
            float *blk = sc + t0 * kv_len;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(t1 - t0), (int)kl, (int)head_dim, scale,
                        q + t0 * qdim + h * head_dim, (int)qdim, kc + kh * head_dim, (int)kvdim, 0.0f, blk,
                        (int)kv_len);
            for (size_t t = t0; t < t1; t++) {
                float *row = sc + t * kv_len;
                size_t len = pos0 + t + 1;
                softmax_row(row, len);
                for (size_t j = len; j < kl; j++) row[j] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(t1 - t0), (int)head_dim, (int)kl, 1.0f, blk,
                        (int)kv_len, vc + kh * head_dim, (int)kvdim, 0.0f, out + t0 * qdim + h * head_dim, (int)qdim);
        }
    }
}
