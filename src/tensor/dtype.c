/* dtype.c - storage types: block geometry and row dequantisation (F16, BF16, Q8_0, Q4_0, Q4_K). */
#include "lumen/tensor.h"

#include <string.h>

static const struct {
    const char *name;
    size_t block;
    size_t bytes;
} k_dtypes[LM_DTYPE_COUNT] = {
    [LM_F32] = {"F32", 1, 4},     [LM_F16] = {"F16", 1, 2},     [LM_BF16] = {"BF16", 1, 2},
    [LM_Q8_0] = {"Q8_0", 32, 34}, [LM_Q4_0] = {"Q4_0", 32, 18}, [LM_Q4_K] = {"Q4_K", 256, 144},
};

const char *lm_dtype_name(lm_dtype t) { return (unsigned)t < LM_DTYPE_COUNT ? k_dtypes[t].name : "unknown"; }
size_t lm_dtype_block(lm_dtype t) { return (unsigned)t < LM_DTYPE_COUNT ? k_dtypes[t].block : 0; }
size_t lm_dtype_block_bytes(lm_dtype t) { return (unsigned)t < LM_DTYPE_COUNT ? k_dtypes[t].bytes : 0; }

size_t lm_dtype_row_bytes(lm_dtype t, size_t n) {
    size_t b = lm_dtype_block(t);
    if (b == 0 || n % b) return 0;
    size_t out;
    if (lm_mul_ok(n / b, lm_dtype_block_bytes(t), &out)) return 0;
    return out;
}

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* Q4_K: 8 sub-blocks of 32 with 6-bit scales and mins packed in 12 bytes (GGML's layout). */
static void scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

void lm_dequantize_row(lm_dtype t, const void *src, float *dst, size_t n) {
    const uint8_t *p = src;
    switch (t) {
    case LM_F32: memcpy(dst, src, n * 4); break;
    case LM_F16:
#ifdef __F16C__
        if (((uintptr_t)src & 1) == 0) {
            const _Float16 *h = src;
            for (size_t i = 0; i < n; i++) dst[i] = (float)h[i];
            break;
        }
#endif
        for (size_t i = 0; i < n; i++) dst[i] = lm_f16_to_f32(rd16(p + 2 * i));
        break;
    case LM_BF16:
        for (size_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)rd16(p + 2 * i) << 16;
            memcpy(&dst[i], &bits, 4);
        }
        break;
    case LM_Q8_0:
        for (size_t b = 0; b < n / 32; b++, p += 34) {
            float d = lm_f16_to_f32(rd16(p));
            const int8_t *q = (const int8_t *)(p + 2);
            for (int i = 0; i < 32; i++) dst[b * 32 + i] = d * (float)q[i];
        }
        break;
    case LM_Q4_0:
        for (size_t b = 0; b < n / 32; b++, p += 18) {
            float d = lm_f16_to_f32(rd16(p));
            const uint8_t *q = p + 2;
            for (int i = 0; i < 16; i++) {
                dst[b * 32 + i] = d * (float)((q[i] & 0xF) - 8);
                dst[b * 32 + i + 16] = d * (float)((q[i] >> 4) - 8);
            }
        }
        break;
    case LM_Q4_K:
        for (size_t b = 0; b < n / 256; b++, p += 144) {
            float d = lm_f16_to_f32(rd16(p));
            float dmin = lm_f16_to_f32(rd16(p + 2));
            const uint8_t *scales = p + 4;
            const uint8_t *q = p + 16;
            float *y = dst + b * 256;
            int is = 0;
            for (int j = 0; j < 256; j += 64) {
                uint8_t sc, m;
                scale_min_k4(is + 0, scales, &sc, &m);
                float d1 = d * sc, m1 = dmin * m;
                scale_min_k4(is + 1, scales, &sc, &m);
                float d2 = d * sc, m2 = dmin * m;
                for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0xF) - m1;
                for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
                q += 32;
                is += 2;
            }
        }
        break;
    default: memset(dst, 0, n * sizeof *dst); break;
    }
}
