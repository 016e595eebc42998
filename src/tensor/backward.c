/* backward.c - training kernels: f32 linear, cache-free attention, cross-entropy, and each forward op's backward. */
#include "lumen/tensor.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Below this many multiply-adds a kernel stays on the calling thread: waking the pool costs more. */
#define PAR_WORK 65536.0
/* Query (forward, backward phase A) or key (backward phase B) rows per attention task: small enough that T/ATT_B tasks
 * per head keep every thread busy, large enough for sgemm to run well. */
#define ATT_B 64
/* Query heads whose row statistics the attention backward holds at once; keeps its scratch a function of T alone. */
#define ATT_HCHUNK 64

static size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

/* [*a, *b) = thread id's share of len items, in chunks rounded up to align (SIMD-friendly columns). */
static void share(size_t len, size_t align, size_t id, size_t nt, size_t *a, size_t *b) {
    size_t chunk = (len + nt - 1) / nt;
    chunk = (chunk + align - 1) / align * align;
    size_t lo = id * chunk;
    *a = lo < len ? lo : len;
    *b = lo + chunk < len ? lo + chunk : len;
}

/* Row-major sgemm that tolerates empty shapes (BLAS rejects ld < 1 when a dimension is 0). */
static void gemm(enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, size_t m, size_t n, size_t k, float alpha,
                 const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc) {
    if (m == 0 || n == 0) return;
    if (k == 0) {
        if (beta == 0.0f)
            for (size_t i = 0; i < m; i++) memset(c + i * ldc, 0, n * sizeof *c);
        return;
    }
    cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

/* ---- linear ---------------------------------------------------------------------------------- */

/* out[r0:r1, c0:c1] = x[r0:r1] @ W[c0:c1]^T + b[c0:c1]. */
static void linear_block(float *out, const float *x, const float *W, const float *b, size_t n_in, size_t n_out,
                         size_t r0, size_t r1, size_t c0, size_t c1) {
    if (r0 >= r1 || c0 >= c1) return;
    float beta = 0.0f;
    if (b) {
        for (size_t t = r0; t < r1; t++) memcpy(out + t * n_out + c0, b + c0, (c1 - c0) * sizeof *out);
        beta = 1.0f;
    }
    gemm(CblasNoTrans, CblasTrans, r1 - r0, c1 - c0, n_in, 1.0f, x + r0 * n_in, n_in, W + c0 * n_in, n_in, beta,
         out + r0 * n_out + c0, n_out);
}

void lm_linear_f32(float *y, const float *x, const float *W, const float *b, size_t n, size_t n_in, size_t n_out) {
    if (n == 0 || n_out == 0) return;
    (void)lm_get_threads(); /* first use: pins BLAS to one thread per caller */
    int par = omp_get_max_threads() > 1 && (double)n * (double)n_in * (double)n_out >= PAR_WORK;
    /* each thread re-reads the operand it does not slice: slice the side that makes that the smaller one */
    int by_rows = n > n_out;
#pragma omp parallel if (par)
    {
        size_t id = (size_t)omp_get_thread_num(), nt = (size_t)omp_get_num_threads();
        size_t r0 = 0, r1 = n, c0 = 0, c1 = n_out;
        if (by_rows)
            share(n, 1, id, nt, &r0, &r1);
        else
            share(n_out, 16, id, nt, &c0, &c1);
        linear_block(y, x, W, b, n_in, n_out, r0, r1, c0, c1);
    }
}

/* db[c0:c1] += column sums of dout[n, n_out], accumulated in double over the rows. */
static void column_sums(float *db, const float *dout, size_t n, size_t n_out, size_t c0, size_t c1) {
    double acc[256];
    for (size_t a = c0; a < c1; a += 256) {
        size_t w = min_sz(256, c1 - a);
        for (size_t j = 0; j < w; j++) acc[j] = 0.0;
        for (size_t t = 0; t < n; t++) {
            const float *g = dout + t * n_out + a;
            for (size_t j = 0; j < w; j++) acc[j] += g[j];
        }
        for (size_t j = 0; j < w; j++) db[a + j] += (float)acc[j];
    }
}

void lm_linear_backward(float *dx, float *dW, float *db, const float *dout, const float *x, const float *W, size_t n,
                        size_t n_in, size_t n_out) {
    if (n == 0 || n_out == 0) return;
    (void)lm_get_threads();
    double work =
        (double)n * (double)n_in * (double)n_out * ((dx ? 1 : 0) + (dW ? 1 : 0)) + (db ? (double)n * n_out : 0);
    int par = omp_get_max_threads() > 1 && work >= PAR_WORK;
    /* dx: slicing rows of n makes each thread read all of W, slicing columns of in all of dout; dW: slicing its rows
     * (n_out) makes each thread read all of x, slicing columns all of dout. */
    int dx_rows = n >= n_in, dw_rows = n_out >= n_in;
#pragma omp parallel if (par)
    {
        size_t id = (size_t)omp_get_thread_num(), nt = (size_t)omp_get_num_threads(), a, b;
        if (dx) {
            if (dx_rows) {
                share(n, 1, id, nt, &a, &b);
                gemm(CblasNoTrans, CblasNoTrans, b - a, n_in, n_out, 1.0f, dout + a * n_out, n_out, W, n_in, 1.0f,
                     dx + a * n_in, n_in);
            } else {
                share(n_in, 16, id, nt, &a, &b);
                gemm(CblasNoTrans, CblasNoTrans, n, b - a, n_out, 1.0f, dout, n_out, W + a, n_in, 1.0f, dx + a, n_in);
            }
        }
        if (dW) {
            if (dw_rows) {
                share(n_out, 16, id, nt, &a, &b);
                gemm(CblasTrans, CblasNoTrans, b - a, n_in, n, 1.0f, dout + a, n_out, x, n_in, 1.0f, dW + a * n_in,
                     n_in);
            } else {
                share(n_in, 16, id, nt, &a, &b);
                gemm(CblasTrans, CblasNoTrans, n_out, b - a, n, 1.0f, dout, n_out, x + a, n_in, 1.0f, dW + a, n_in);
            }
        }
        if (db) {
            share(n_out, 16, id, nt, &a, &b);
            column_sums(db, dout, n, n_out, a, b);
        }
    }
}

/* ---- norms: the row statistics are recomputed from x with the forward's exact formulas ------- */

static float rms_inv(const float *x, size_t d, float eps) {
    float ss = 0.0f;
    for (size_t i = 0; i < d; i++) ss += x[i] * x[i];
    return 1.0f / sqrtf(ss / (float)d + eps);
}

/* out = w * r * x with r = (mean(x^2) + eps)^-1/2, so dx = r*w*g - x * r^3/d * sum(g*w*x). */
static void rms_row_dx(float *dx, const float *g, const float *x, const float *w, size_t d, float r) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (size_t i = 0; i < d; i++) s += g[i] * w[i] * x[i];
    float c = r * r * r * s / (float)d;
    for (size_t i = 0; i < d; i++) dx[i] += r * w[i] * g[i] - c * x[i];
}

void lm_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w, size_t n, size_t d,
                         float eps) {
    if (n == 0 || d == 0 || (!dx && !dw)) return;
    int par = n > 8 && omp_get_max_threads() > 1;
    float *rs = NULL; /* r of each row, for the column pass that sums dw race-free */
    if (par && dw) {
        rs = malloc(n * sizeof *rs);
        if (!rs) par = 0; /* nothing to report from a void kernel: fall back to the serial loop */
    }
    if (!par) {
        for (size_t t = 0; t < n; t++) {
            const float *xr = x + t * d, *g = dout + t * d;
            float r = rms_inv(xr, d, eps);
            if (dx) rms_row_dx(dx + t * d, g, xr, w, d, r);
            if (dw)
                for (size_t i = 0; i < d; i++) dw[i] += g[i] * (r * xr[i]);
        }
        return;
    }
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (size_t t = 0; t < n; t++) {
            float r = rms_inv(x + t * d, d, eps);
            if (rs) rs[t] = r;
            if (dx) rms_row_dx(dx + t * d, dout + t * d, x + t * d, w, d, r);
        }
        if (dw) {
            size_t c0, c1;
            share(d, 16, (size_t)omp_get_thread_num(), (size_t)omp_get_num_threads(), &c0, &c1);
            for (size_t t = 0; t < n; t++) {
                const float *xr = x + t * d, *g = dout + t * d;
                float r = rs[t];
                for (size_t i = c0; i < c1; i++) dw[i] += g[i] * (r * xr[i]);
            }
        }
    }
    free(rs);
}

/* Mean (double) and 1/std (float) of a row, as lm_layernorm computes them. */
static void ln_stats(const float *xr, size_t d, float eps, double *mean_out, float *inv_out) {
    double mean = 0, var = 0;
    for (size_t i = 0; i < d; i++) mean += xr[i];
    mean /= (double)d;
    for (size_t i = 0; i < d; i++) var += (xr[i] - mean) * (xr[i] - mean);
    var /= (double)d;
    *mean_out = mean;
    *inv_out = (float)(1.0 / sqrt(var + eps));
}

/* With xh = (x - mean) * inv and g = dout * w: dx = inv * (g - mean(g) - xh * mean(g * xh)). */
static void ln_row_dx(float *dx, const float *dout, const float *xr, const float *w, size_t d, double mean, float inv) {
    float sg = 0.0f, sgx = 0.0f;
    for (size_t i = 0; i < d; i++) {
        float g = dout[i] * w[i], xh = (float)(xr[i] - mean) * inv;
        sg += g;
        sgx += g * xh;
    }
    sg /= (float)d;
    sgx /= (float)d;
    for (size_t i = 0; i < d; i++) {
        float xh = (float)(xr[i] - mean) * inv;
        dx[i] += inv * (dout[i] * w[i] - sg - xh * sgx);
    }
}

static void ln_cols(float *dw, float *db, const float *dout, const float *xr, size_t c0, size_t c1, double mean,
                    float inv) {
    for (size_t i = c0; i < c1; i++) {
        if (dw) dw[i] += dout[i] * ((float)(xr[i] - mean) * inv);
        if (db) db[i] += dout[i];
    }
}

void lm_layernorm_backward(float *dx, float *dw, float *db, const float *dout, const float *x, const float *w, size_t n,
                           size_t d, float eps) {
    if (n == 0 || d == 0 || (!dx && !dw && !db)) return;
    int par = n > 8 && omp_get_max_threads() > 1;
    double *st = NULL; /* mean, inv of each row, for the column pass that sums dw, db race-free */
    if (par && (dw || db)) {
        st = malloc(2 * n * sizeof *st);
        if (!st) par = 0;
    }
    if (!par) {
        for (size_t t = 0; t < n; t++) {
            double mean;
            float inv;
            ln_stats(x + t * d, d, eps, &mean, &inv);
            if (dx) ln_row_dx(dx + t * d, dout + t * d, x + t * d, w, d, mean, inv);
            ln_cols(dw, db, dout + t * d, x + t * d, 0, d, mean, inv);
        }
        return;
    }
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (size_t t = 0; t < n; t++) {
            double mean;
            float inv;
            ln_stats(x + t * d, d, eps, &mean, &inv);
            if (st) {
                st[2 * t] = mean;
                st[2 * t + 1] = inv;
            }
            if (dx) ln_row_dx(dx + t * d, dout + t * d, x + t * d, w, d, mean, inv);
        }
        if (st) {
            size_t c0, c1;
            share(d, 16, (size_t)omp_get_thread_num(), (size_t)omp_get_num_threads(), &c0, &c1);
            for (size_t t = 0; t < n; t++)
                ln_cols(dw, db, dout + t * d, x + t * d, c0, c1, st[2 * t], (float)st[2 * t + 1]);
        }
    }
    free(st);
}

/* ---- element-wise and positional ------------------------------------------------------------- */

void lm_rope_backward(float *dx, size_t n_tok, size_t n_heads, size_t head_dim, size_t pos0, const float *inv_freq,
                      lm_rope_style style) {
    size_t half = head_dim / 2;
#pragma omp parallel for schedule(static) if (n_tok > 8)
    for (size_t t = 0; t < n_tok; t++) {
        float pos = (float)(pos0 + t);
        for (size_t i = 0; i < half; i++) {
            /* the same angle as lm_rope, rotated the other way (R^T = R^-1) */
            float ang = pos * inv_freq[i];
            float c = cosf(ang), s = sinf(ang);
            size_t a = style == LM_ROPE_INTERLEAVED ? 2 * i : i;
            size_t b = style == LM_ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
            for (size_t h = 0; h < n_heads; h++) {
                float *v = dx + (t * n_heads + h) * head_dim;
                float v0 = v[a], v1 = v[b];
                v[a] = v0 * c + v1 * s;
                v[b] = v1 * c - v0 * s;
            }
        }
    }
}

void lm_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n) {
    /* out = g * sig(g) * u: d/dg = u * sig * (1 + g * (1 - sig)), d/du = g * sig */
    if (dgate && dup) {
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t i = 0; i < n; i++) {
            float g = gate[i], sg = 1.0f / (1.0f + expf(-g));
            dgate[i] += dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
            dup[i] += dout[i] * g * sg;
        }
    } else if (dgate) {
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t i = 0; i < n; i++) {
            float g = gate[i], sg = 1.0f / (1.0f + expf(-g));
            dgate[i] += dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
        }
    } else if (dup) {
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t i = 0; i < n; i++) {
            float g = gate[i];
            dup[i] += dout[i] * g / (1.0f + expf(-g));
        }
    }
}

void lm_gelu_tanh_backward(float *dx, const float *dout, const float *x, size_t n) {
    const float k = 0.7978845608028654f, c = 0.044715f; /* sqrt(2/pi), as the forward */
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float v = x[i], v2 = v * v;
        float th = tanhf(k * (v + c * v2 * v));
        float dy = 0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * k * (1.0f + 3.0f * c * v2);
        dx[i] += dout[i] * dy;
    }
}

void lm_embedding_backward(float *dW, const float *dout, const int32_t *ids, size_t n, size_t d) {
    /* threads split the columns, so rows repeated in ids never race */
    int par = omp_get_max_threads() > 1 && (double)n * (double)d >= PAR_WORK && d >= 32;
#pragma omp parallel if (par)
    {
        size_t c0, c1;
        share(d, 16, (size_t)omp_get_thread_num(), (size_t)omp_get_num_threads(), &c0, &c1);
        for (size_t t = 0; t < n; t++) {
            if (ids[t] < 0) continue;
            float *row = dW + (size_t)ids[t] * d;
            const float *g = dout + t * d;
            for (size_t j = c0; j < c1; j++) row[j] += g[j];
        }
    }
}

/* ---- attention ------------------------------------------------------------------------------- */

/* The same float softmax as ops.c's, so the training forward matches lm_attention. */
static void softmax_row(float *x, size_t d) {
    float mx = x[0];
    for (size_t i = 1; i < d; i++)
        if (x[i] > mx) mx = x[i];
    float sum = 0.0f;
    for (size_t i = 0; i < d; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (size_t i = 0; i < d; i++) x[i] *= inv;
}

/* Tasks are (head, block of ATT_B query rows); rows r0..r1 only see keys 0..r1, so the blocks skip the masked upper
 * triangle except on the diagonal. The last blocks (the most work) go first. */
void lm_attention_train(float *out, float *probs, const float *q, const float *k, const float *v, size_t T,
                        size_t n_heads, size_t n_kv, size_t hd) {
    if (T == 0 || n_heads == 0 || n_kv == 0 || hd == 0) return;
    (void)lm_get_threads();
    const size_t qdim = n_heads * hd, kvdim = n_kv * hd, group = n_heads / n_kv, nb = (T + ATT_B - 1) / ATT_B;
    const float scale = 1.0f / sqrtf((float)hd);
    int par = omp_get_max_threads() > 1 && (double)n_heads * (double)T * (double)T * (double)hd >= PAR_WORK;
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (size_t i = 0; i < n_heads * nb; i++) {
        size_t b = nb - 1 - i / n_heads, h = i % n_heads, kh = h / group;
        size_t r0 = b * ATT_B, r1 = min_sz(r0 + ATT_B, T), m = r1 - r0;
        float *P = probs + h * T * T + r0 * T;
        gemm(CblasNoTrans, CblasTrans, m, r1, hd, scale, q + r0 * qdim + h * hd, qdim, k + kh * hd, kvdim, 0.0f, P, T);
        for (size_t j = 0; j < m; j++) {
            float *row = P + j * T;
            size_t len = r0 + j + 1;
            softmax_row(row, len);
            memset(row + len, 0, (T - len) * sizeof *row);
        }
        gemm(CblasNoTrans, CblasNoTrans, m, hd, r1, 1.0f, P, T, v + kh * hd, kvdim, 0.0f, out + r0 * qdim + h * hd,
             qdim);
    }
}

size_t lm_attention_train_scratch(size_t T) {
    size_t nt = (size_t)omp_get_max_threads();
    return (ATT_HCHUNK + nt * min_sz(T, ATT_B)) * T;
}

/* Two phases, each race-free without locks:
 *   A, tasks (query head, query row block): dP = dout_h v^T, D_t = sum_s P_ts dP_ts, dS = P * (dP - D),
 *      dq_h += dS k * scale; D is kept for phase B.
 *   B, tasks (kv head, key row block): for every query head of the group, recompute dS on the block's key columns,
 *      dk += dS^T q_h * scale, dv += P^T dout_h. Only this task writes those dk/dv rows, so query heads sharing a
 *      kv head (GQA) never race.
 * Recomputing dP costs a fifth more flops than storing dS, and keeps the scratch O(T) per thread. */
void lm_attention_train_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                                 const float *v, const float *probs, size_t T, size_t n_heads, size_t n_kv, size_t hd,
                                 float *scratch) {
    if (T == 0 || n_heads == 0 || n_kv == 0 || hd == 0 || (!dq && !dk && !dv)) return;
    (void)lm_get_threads();
    const size_t qdim = n_heads * hd, kvdim = n_kv * hd, group = n_heads / n_kv, nb = (T + ATT_B - 1) / ATT_B;
    const size_t blk = min_sz(T, ATT_B);
    const float scale = 1.0f / sqrtf((float)hd);
    const int nt = omp_get_max_threads(); /* the thread count lm_attention_train_scratch sized for */
    const int par = nt > 1 && (double)n_heads * (double)T * (double)T * (double)hd >= PAR_WORK;
    const int need_a = dq || dk, need_b = dk || dv;
    float *rowdot = scratch; /* [ATT_HCHUNK, T]: D of each query row of the chunk's heads */
    for (size_t h0 = 0; h0 < n_heads; h0 += ATT_HCHUNK) {
        const size_t h1 = min_sz(h0 + ATT_HCHUNK, n_heads), nh = h1 - h0;
        const size_t kh0 = h0 / group, kh1 = (h1 - 1) / group + 1, nkh = kh1 - kh0;
#pragma omp parallel num_threads(nt) if (par)
        {
            float *buf = scratch + ATT_HCHUNK * T + (size_t)omp_get_thread_num() * blk * T;
            if (need_a) {
#pragma omp for schedule(dynamic, 1)
                for (size_t i = 0; i < nh * nb; i++) {
                    size_t b = nb - 1 - i / nh, h = h0 + i % nh, kh = h / group;
                    size_t r0 = b * ATT_B, r1 = min_sz(r0 + ATT_B, T), m = r1 - r0;
                    const float *P = probs + h * T * T;
                    gemm(CblasNoTrans, CblasTrans, m, r1, hd, 1.0f, dout + r0 * qdim + h * hd, qdim, v + kh * hd, kvdim,
                         0.0f, buf, r1);
                    for (size_t j = 0; j < m; j++) {
                        size_t t = r0 + j;
                        const float *p = P + t * T;
                        float *row = buf + j * r1;
                        double acc = 0.0;
                        for (size_t s = 0; s <= t; s++) acc += (double)p[s] * row[s];
                        float D = (float)acc;
                        for (size_t s = 0; s <= t; s++) row[s] = p[s] * (row[s] - D);
                        for (size_t s = t + 1; s < r1; s++) row[s] = 0.0f;
                        rowdot[(h - h0) * T + t] = D;
                    }
                    if (dq)
                        gemm(CblasNoTrans, CblasNoTrans, m, hd, r1, scale, buf, r1, k + kh * hd, kvdim, 1.0f,
                             dq + r0 * qdim + h * hd, qdim);
                }
            }
            if (need_b) {
#pragma omp for schedule(dynamic, 1)
                for (size_t i = 0; i < nkh * nb; i++) {
                    /* early key blocks are seen by more rows: they go first */
                    size_t cb = i / nkh, kh = kh0 + i % nkh;
                    size_t c0 = cb * ATT_B, c1 = min_sz(c0 + ATT_B, T), cw = c1 - c0, m = T - c0;
                    size_t ha = h0 > kh * group ? h0 : kh * group, hb = min_sz(h1, (kh + 1) * group);
                    for (size_t h = ha; h < hb; h++) {
                        const float *P = probs + h * T * T;
                        const float *go = dout + c0 * qdim + h * hd;
                        if (dk) {
                            gemm(CblasNoTrans, CblasTrans, m, cw, hd, 1.0f, go, qdim, v + c0 * kvdim + kh * hd, kvdim,
                                 0.0f, buf, cw);
                            for (size_t j = 0; j < m; j++) {
                                size_t t = c0 + j, lim = min_sz(cw, j + 1); /* keys c0+s with s <= j are visible */
                                const float *p = P + t * T + c0;
                                float *row = buf + j * cw, D = rowdot[(h - h0) * T + t];
                                for (size_t s = 0; s < lim; s++) row[s] = p[s] * (row[s] - D);
                                for (size_t s = lim; s < cw; s++) row[s] = 0.0f;
                            }
                            gemm(CblasTrans, CblasNoTrans, cw, hd, m, scale, buf, cw, q + c0 * qdim + h * hd, qdim,
                                 1.0f, dk + c0 * kvdim + kh * hd, kvdim);
                        }
                        if (dv)
                            gemm(CblasTrans, CblasNoTrans, cw, hd, m, 1.0f, P + c0 * T + c0, T, go, qdim, 1.0f,
                                 dv + c0 * kvdim + kh * hd, kvdim);
                    }
                }
            }
        }
    }
}

/* ---- loss ------------------------------------------------------------------------------------ */

double lm_cross_entropy(float *dlogits, const float *logits, const int32_t *targets, size_t n, size_t V, float scale) {
    size_t counted = 0;
    int bad = 0;
    for (size_t t = 0; t < n; t++) {
        if (targets[t] < 0) continue;
        if ((size_t)targets[t] >= V)
            bad = 1;
        else
            counted++;
    }
    const double g = counted ? (double)scale / (double)counted : 0.0;
    double total = 0.0;
    int par = omp_get_max_threads() > 1 && n > 1 && (double)n * (double)V >= PAR_WORK;
#pragma omp parallel for schedule(static) reduction(+ : total) if (par)
    for (size_t t = 0; t < n; t++) {
        const float *l = logits + t * V;
        float *dl = dlogits ? dlogits + t * V : NULL;
        int32_t y = targets[t];
        if (y < 0 || (size_t)y >= V) {
            if (dl) memset(dl, 0, V * sizeof *dl);
            continue;
        }
        /* dlogits may alias logits: every logit is read before its slot is overwritten */
        float ly = l[y], mx = l[0];
        for (size_t i = 1; i < V; i++)
            if (l[i] > mx) mx = l[i];
        double sum = 0.0;
        if (dl) {
            for (size_t i = 0; i < V; i++) {
                float e = expf(l[i] - mx);
                dl[i] = e;
                sum += e;
            }
            float f = (float)(g / sum);
            double ey = dl[y];
            for (size_t i = 0; i < V; i++) dl[i] *= f;
            dl[y] = (float)((ey / sum - 1.0) * g); /* in double: p_y - 1 cancels when p_y is near 1 */
        } else {
            for (size_t i = 0; i < V; i++) sum += expf(l[i] - mx);
        }
        total += (double)mx + log(sum) - (double)ly;
    }
    if (bad || counted == 0) return NAN;
    return total / (double)counted;
}
