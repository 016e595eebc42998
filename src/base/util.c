/* util.c - UTF-8 validation, half-precision conversion, rng, clock, thread count, progress display. */
#define _POSIX_C_SOURCE 200809L
#include "lumen/base.h"

#include <math.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <cblas.h>

size_t lm_utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0; /* overlong */
        if (c == 0xED) hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90; /* overlong */
        if (c == 0xF4) hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (need > n || s[1] < lo || s[1] > hi) return 0;
    for (size_t k = 2; k < need; k++)
        if ((s[k] & 0xC0) != 0x80) return 0;
    return need;
}

float lm_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t lm_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t exp = (x >> 23) & 0xff;
    uint32_t man = x & 0x7fffff;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000;
        int shift = 14 - e;
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return (uint16_t)(sign | half);
}

float lm_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t lm_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

void lm_rng_seed(lm_rng *r, uint64_t seed) { r->state = seed ? seed : 0x9e3779b97f4a7c15ull; }

uint32_t lm_rng_u32(lm_rng *r) {
    r->state ^= r->state >> 12;
    r->state ^= r->state << 25;
    r->state ^= r->state >> 27;
    return (uint32_t)((r->state * 0x2545F4914F6CDD1Dull) >> 32);
}

float lm_rng_f32(lm_rng *r) { return (float)(lm_rng_u32(r) >> 8) / 16777216.0f; }

float lm_rng_normal(lm_rng *r) {
    float u1 = lm_rng_f32(r), u2 = lm_rng_f32(r);
    if (u1 < 1e-12f) u1 = 1e-12f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
}

double lm_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int g_threads = 0;

void lm_set_threads(int n) {
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    g_threads = n;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    /* BLAS runs single-threaded inside lumen's OpenMP slices (see lm_linear) */
    openblas_set_num_threads(1);
}

int lm_get_threads(void) {
    if (g_threads <= 0) lm_set_threads(0);
    return g_threads;
}

static void fmt_time(char *buf, size_t n, double s) {
    if (s < 0 || s > 1e7) {
        snprintf(buf, n, "--");
        return;
    }
    int t = (int)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%dh%02dm", t / 3600, (t / 60) % 60);
    else
        snprintf(buf, n, "%dm%02ds", t / 60, t % 60);
}

void lm_progress_begin(lm_progress *p, const char *label, const char *unit, double total, int enabled) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->unit = unit;
    p->total = total;
    p->start = lm_now();
    p->enabled = enabled;
    p->tty = isatty(STDERR_FILENO);
}

static void progress_print(lm_progress *p, int final) {
    double el = lm_now() - p->start;
    double rate = el > 0 ? p->done / el : 0;
    double eta = rate > 0 && p->total > 0 ? (p->total - p->done) / rate : -1;
    char es[32], ts[32];
    fmt_time(es, sizeof es, eta);
    fmt_time(ts, sizeof ts, el);
    double frac = p->total > 0 ? p->done / p->total : 0;
    if (frac > 1) frac = 1;
    if (p->tty) {
        char bar[31];
        int fill = (int)(frac * 30);
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = 0;
        fprintf(stderr, "\r%s [%s] %5.1f%% %.0f/%.0f %s  %.1f %s/s  elapsed %s  eta %s%s", p->label, bar,
                100 * frac, p->done, p->total, p->unit, rate, p->unit, ts, es, final ? "\n" : "");
    } else {
        fprintf(stderr, "%s: %.0f/%.0f %s (%.1f%%) %.1f %s/s elapsed %s eta %s\n", p->label, p->done, p->total,
                p->unit, 100 * frac, rate, p->unit, ts, es);
    }
    fflush(stderr);
}

void lm_progress_update(lm_progress *p, double done) {
    p->done = done;
    if (!p->enabled) return;
    double now = lm_now();
    double every = p->tty ? 0.2 : 5.0;
    if (now - p->last_print < every) return;
    p->last_print = now;
    progress_print(p, 0);
}

void lm_progress_end(lm_progress *p) {
    if (p->enabled) progress_print(p, 1);
}
