/* test_ops.c - the numeric kernels against straightforward double-precision references. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "check.h"
#include "lumen/lumen.h"

static double rel_err(const float *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static void fill(lm_rng *r, float *x, size_t n, float s) {
    for (size_t i = 0; i < n; i++) x[i] = s * lm_rng_normal(r);
}

/* Stores W (f32) as dtype t; returns malloc'd bytes. */
static void *quantize(const float *w, size_t rows, size_t cols, lm_dtype t) {
    size_t rb = lm_dtype_row_bytes(t, cols);
    uint8_t *out = calloc(rows, rb);
    for (size_t r = 0; r < rows; r++) {
        const float *src = w + r * cols;
        uint8_t *dst = out + r * rb;
        if (t == LM_F32) memcpy(dst, src, cols * 4);
        else if (t == LM_F16 || t == LM_BF16)
            for (size_t i = 0; i < cols; i++) {
                uint16_t h = t == LM_F16 ? lm_f32_to_f16(src[i]) : lm_f32_to_bf16(src[i]);
                memcpy(dst + 2 * i, &h, 2);
            }
        else if (t == LM_Q8_0)
            for (size_t b = 0; b < cols / 32; b++) {
                float amax = 0;
                for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(src[b * 32 + i]));
                float d = amax / 127.0f;
                uint16_t hd = lm_f32_to_f16(d);
                memcpy(dst + b * 34, &hd, 2);
                float dd = lm_f16_to_f32(hd);
                for (int i = 0; i < 32; i++)
                    dst[b * 34 + 2 + i] = (uint8_t)(int8_t)lrintf(dd > 0 ? src[b * 32 + i] / dd : 0);
            }
    }
    return out;
}

static void test_half_conversions(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = lm_f16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        if (lm_f32_to_f16(f) != h) bad++;
    }
    CHECKF(bad == 0, "%d f16 values do not round-trip", bad);
    CHECK(lm_f16_to_f32(0x3c00) == 1.0f);
    CHECK(lm_f16_to_f32(0xc000) == -2.0f);
    CHECK(lm_f16_to_f32(0x0001) == ldexpf(1.0f, -24)); /* smallest subnormal */
    CHECK(lm_f32_to_f16(65520.0f) == 0x7c00);            /* rounds to infinity */
    CHECK(lm_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(lm_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(lm_f32_to_bf16(1.00390625f) == 0x3f80); /* tie to even */
}

static void test_linear(void) {
    lm_rng r;
    lm_rng_seed(&r, 1);
    const size_t rows = 150, cols = 96;
    size_t ns[] = {1, 3, 5, 37, 200};
    lm_dtype types[] = {LM_F32, LM_F16, LM_BF16, LM_Q8_0};
    float *w = malloc(rows * cols * 4), *wd = malloc(rows * cols * 4);
    fill(&r, w, rows * cols, 0.5f);
    for (size_t ti = 0; ti < 4; ti++) {
        void *q = quantize(w, rows, cols, types[ti]);
        lm_weight W = {types[ti], rows, cols, q};
        for (size_t r0 = 0; r0 < rows; r0++) lm_embedding_row(wd + r0 * cols, &W, r0);
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            size_t n = ns[k];
            float *x = malloc(n * cols * 4), *out = malloc(n * rows * 4);
            double *ref = malloc(n * rows * 8);
            fill(&r, x, n * cols, 1.0f);
            for (size_t t = 0; t < n; t++)
                for (size_t o = 0; o < rows; o++) {
                    double s = 0;
                    for (size_t c = 0; c < cols; c++) s += (double)x[t * cols + c] * wd[o * cols + c];
                    ref[t * rows + o] = s;
                }
            CHECK(lm_linear(out, x, n, &W) == LM_OK);
            double e = rel_err(out, ref, n * rows);
            CHECKF(e < 1e-5, "linear %s n=%zu rel err %g", lm_dtype_name(types[ti]), n, e);
            free(x);
            free(out);
            free(ref);
        }
        /* the dequantised weights are close to the originals (quantisation error bound) */
        double num = 0, den = 0;
        for (size_t i = 0; i < rows * cols; i++) {
            num += (wd[i] - w[i]) * (wd[i] - w[i]);
            den += (double)w[i] * w[i];
        }
        double tol = types[ti] == LM_F32 ? 0 : types[ti] == LM_F16 ? 1e-3 : 1e-2;
        CHECKF(sqrt(num / den) <= tol, "%s dequantisation error %g", lm_dtype_name(types[ti]), sqrt(num / den));
        free(q);
    }
    free(w);
    free(wd);
}

static void test_q4(void) {
    /* Q4_0: scale 0.5 (f16 0x3800), nibbles i -> (i - 8) * 0.5 */
    uint8_t blk[18] = {0x00, 0x38};
    for (int i = 0; i < 16; i++) blk[2 + i] = (uint8_t)(i | ((15 - i) << 4));
    float out[32];
    lm_dequantize_row(LM_Q4_0, blk, out, 32);
    int ok = 1;
    for (int i = 0; i < 16; i++) ok &= out[i] == (i - 8) * 0.5f && out[i + 16] == (15 - i - 8) * 0.5f;
    CHECK(ok);
}

static void test_norms_softmax(void) {
    lm_rng r;
    lm_rng_seed(&r, 2);
    const size_t n = 20, d = 48;
    float x[20 * 48], w[48], out[20 * 48];
    double ref[20 * 48];
    fill(&r, x, n * d, 2.0f);
    fill(&r, w, d, 1.0f);
    for (size_t t = 0; t < n; t++) {
        double ss = 0;
        for (size_t i = 0; i < d; i++) ss += (double)x[t * d + i] * x[t * d + i];
        double inv = 1.0 / sqrt(ss / d + 1e-5);
        for (size_t i = 0; i < d; i++) ref[t * d + i] = x[t * d + i] * inv * w[i];
    }
    lm_rmsnorm(out, x, w, n, d, 1e-5f);
    CHECK(rel_err(out, ref, n * d) < 1e-6);
    memcpy(out, x, sizeof x);
    lm_softmax(out, n, d);
    int ok = 1;
    for (size_t t = 0; t < n; t++) {
        double s = 0, mx = -1e30;
        for (size_t i = 0; i < d; i++) mx = fmax(mx, x[t * d + i]);
        for (size_t i = 0; i < d; i++) s += exp(x[t * d + i] - mx);
        for (size_t i = 0; i < d; i++) ref[t * d + i] = exp(x[t * d + i] - mx) / s;
    }
    CHECK(rel_err(out, ref, n * d) < 1e-6);
    CHECK(ok);
}

static void test_rope(void) {
    lm_rng r;
    lm_rng_seed(&r, 3);
    const size_t T = 5, H = 3, D = 8;
    float a[5 * 3 * 8], b[5 * 3 * 8], orig[5 * 3 * 8], inv[4];
    lm_rope_inv_freq(inv, D, 10000.0f);
    fill(&r, orig, T * H * D, 1.0f);
    /* pos 0 is the identity */
    memcpy(a, orig, sizeof a);
    lm_rope(a, 1, H, D, 0, inv, LM_ROPE_INTERLEAVED);
    CHECK(memcmp(a, orig, H * D * 4) == 0);
    /* HALF on a permuted vector equals the same permutation of INTERLEAVED: pair (2i,2i+1) <-> (i,i+D/2) */
    memcpy(a, orig, sizeof a);
    for (size_t v = 0; v < T * H; v++)
        for (size_t i = 0; i < D / 2; i++) {
            b[v * D + i] = orig[v * D + 2 * i];
            b[v * D + i + D / 2] = orig[v * D + 2 * i + 1];
        }
    lm_rope(a, T, H, D, 7, inv, LM_ROPE_INTERLEAVED);
    lm_rope(b, T, H, D, 7, inv, LM_ROPE_HALF);
    int same = 1;
    for (size_t v = 0; v < T * H; v++)
        for (size_t i = 0; i < D / 2; i++)
            same &= fabsf(a[v * D + 2 * i] - b[v * D + i]) < 1e-6f && fabsf(a[v * D + 2 * i + 1] - b[v * D + i + D / 2]) < 1e-6f;
    CHECK(same);
    /* explicit value: position 3, pair 1 of head 0 rotates by 3 * 10000^(-2/8) */
    memcpy(a, orig, sizeof a);
    lm_rope(a, 1, H, D, 3, inv, LM_ROPE_INTERLEAVED);
    double ang = 3.0 * pow(10000.0, -2.0 / 8.0);
    double e0 = orig[2] * cos(ang) - orig[3] * sin(ang), e1 = orig[2] * sin(ang) + orig[3] * cos(ang);
    CHECK(fabs(a[2] - e0) < 1e-5 && fabs(a[3] - e1) < 1e-5);
}

/* naive causal GQA attention in double */
static void attention_ref(double *out, const float *q, const float *k, const float *v, size_t T, size_t pos0, size_t H,
                          size_t KVH, size_t D) {
    size_t S = pos0 + T;
    double *sc = malloc(S * sizeof(double));
    for (size_t t = 0; t < T; t++)
        for (size_t h = 0; h < H; h++) {
            size_t kh = h / (H / KVH), len = pos0 + t + 1;
            double mx = -1e300, sum = 0;
            for (size_t s = 0; s < len; s++) {
                double d = 0;
                for (size_t i = 0; i < D; i++) d += (double)q[t * H * D + h * D + i] * k[s * KVH * D + kh * D + i];
                sc[s] = d / sqrt((double)D);
                mx = fmax(mx, sc[s]);
            }
            for (size_t s = 0; s < len; s++) sum += (sc[s] = exp(sc[s] - mx));
            for (size_t i = 0; i < D; i++) {
                double o = 0;
                for (size_t s = 0; s < len; s++) o += sc[s] / sum * v[s * KVH * D + kh * D + i];
                out[t * H * D + h * D + i] = o;
            }
        }
    free(sc);
}

static void test_attention(void) {
    lm_rng r;
    lm_rng_seed(&r, 4);
    const size_t H = 4, KVH = 2, D = 16;
    size_t cases[][2] = {{1, 0}, {1, 9}, {5, 3}, {20, 0}, {33, 11}};
    for (size_t c = 0; c < 5; c++) {
        size_t T = cases[c][0], pos0 = cases[c][1], S = T + pos0;
        float *q = malloc(T * H * D * 4), *k = malloc(S * KVH * D * 4), *v = malloc(S * KVH * D * 4);
        float *out = malloc(T * H * D * 4), *scr = malloc(lm_attention_scratch(T, H, S) * 4);
        double *ref = malloc(T * H * D * 8);
        fill(&r, q, T * H * D, 1.0f);
        fill(&r, k, S * KVH * D, 1.0f);
        fill(&r, v, S * KVH * D, 1.0f);
        attention_ref(ref, q, k, v, T, pos0, H, KVH, D);
        lm_attention(out, q, k, v, T, pos0, H, KVH, D, scr);
        double e = rel_err(out, ref, T * H * D);
        CHECKF(e < 1e-5, "attention T=%zu pos0=%zu rel err %g", T, pos0, e);
        free(q);
        free(k);
        free(v);
        free(out);
        free(scr);
        free(ref);
    }
}

static void test_sampler(void) {
    lm_sampler s;
    float logits[6] = {0.1f, 2.0f, -1.0f, 1.9f, 0.0f, 0.5f}, tmp[6];
    CHECK(lm_sampler_init(&s, 6, 0.0f, 0, 1.0f, 1) == LM_OK);
    memcpy(tmp, logits, sizeof tmp);
    CHECK(lm_sample(&s, tmp) == 1);
    lm_sampler_free(&s);
    /* top-k 1 is greedy at any temperature */
    CHECK(lm_sampler_init(&s, 6, 1.5f, 1, 1.0f, 7) == LM_OK);
    int all1 = 1;
    for (int i = 0; i < 50; i++) {
        memcpy(tmp, logits, sizeof tmp);
        all1 &= lm_sample(&s, tmp) == 1;
    }
    CHECK(all1);
    lm_sampler_free(&s);
    /* top-p 0.5 keeps only tokens 1 and 3 (probabilities ~0.38 and ~0.34) */
    CHECK(lm_sampler_init(&s, 6, 1.0f, 0, 0.5f, 9) == LM_OK);
    int counts[6] = {0};
    for (int i = 0; i < 2000; i++) {
        memcpy(tmp, logits, sizeof tmp);
        counts[lm_sample(&s, tmp)]++;
    }
    CHECK(counts[0] + counts[2] + counts[4] + counts[5] == 0);
    CHECK(counts[1] > counts[3] && counts[3] > 600);
    lm_sampler_free(&s);
    /* plain sampling follows the softmax: token 1 ~ 38% */
    CHECK(lm_sampler_init(&s, 6, 1.0f, 0, 1.0f, 11) == LM_OK);
    memset(counts, 0, sizeof counts);
    for (int i = 0; i < 20000; i++) {
        memcpy(tmp, logits, sizeof tmp);
        counts[lm_sample(&s, tmp)]++;
    }
    double z = 0;
    for (int i = 0; i < 6; i++) z += exp(logits[i]);
    double p1 = exp(2.0) / z;
    CHECKF(fabs(counts[1] / 20000.0 - p1) < 0.02, "token 1 frequency %g vs %g", counts[1] / 20000.0, p1);
    lm_sampler_free(&s);
    /* same seed, same sequence */
    lm_sampler a, b;
    lm_sampler_init(&a, 6, 0.8f, 0, 0.9f, 123);
    lm_sampler_init(&b, 6, 0.8f, 0, 0.9f, 123);
    int same = 1;
    for (int i = 0; i < 100; i++) {
        float t1[6], t2[6];
        memcpy(t1, logits, sizeof t1);
        memcpy(t2, logits, sizeof t2);
        same &= lm_sample(&a, t1) == lm_sample(&b, t2);
    }
    CHECK(same);
    lm_sampler_free(&a);
    lm_sampler_free(&b);
    CHECK(lm_sampler_init(&s, 6, -1.0f, 0, 1.0f, 1) == LM_ERR_ARG);
    CHECK(lm_sampler_init(&s, 6, 1.0f, 0, 0.0f, 1) == LM_ERR_ARG);
}

/* Dequantisation against the gguf package's reference (tools/make_quant_fixture.py). */
static void test_dequant_fixture(void) {
    const char *fx = getenv("LUMEN_FIXTURES");
    char path[4096];
    snprintf(path, sizeof path, "%s/quant_blocks.json", fx ? fx : "tests/fixtures");
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    CHECKF(j != NULL, "cannot read %s: %s", path, jerr.text);
    if (!j) return;
    const char *names[] = {"Q4_0", "Q8_0", "Q4_K"};
    lm_dtype types[] = {LM_Q4_0, LM_Q8_0, LM_Q4_K};
    for (int k = 0; k < 3; k++) {
        json_t *e = json_object_get(j, names[k]);
        const char *hex = json_string_value(json_object_get(e, "raw_hex"));
        size_t n = (size_t)json_integer_value(json_object_get(e, "n"));
        json_t *vals = json_object_get(e, "values");
        CHECK(hex && n > 0 && json_array_size(vals) == n);
        if (!hex || n == 0 || json_array_size(vals) != n) continue;
        size_t nb = strlen(hex) / 2;
        CHECK(nb == lm_dtype_row_bytes(types[k], n));
        uint8_t *raw = malloc(nb);
        float *out = malloc(n * sizeof(float));
        for (size_t i = 0; i < nb; i++) {
            unsigned v;
            sscanf(hex + 2 * i, "%2x", &v);
            raw[i] = (uint8_t)v;
        }
        lm_dequantize_row(types[k], raw, out, n);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            double ref = json_real_value(json_array_get(vals, i));
            if (fabs(out[i] - ref) > 1e-6 * fmax(1.0, fabs(ref))) bad++;
        }
        CHECKF(bad == 0, "%s: %zu of %zu values differ from the gguf reference", names[k], bad, n);
        free(raw);
        free(out);
    }
    json_decref(j);
}

int main(void) {
    lm_set_threads(2);
    test_half_conversions();
    test_linear();
    test_q4();
    test_dequant_fixture();
    test_norms_softmax();
    test_rope();
    test_attention();
    test_sampler();
    lm_tensor_release_scratch();
    return check_result();
}
