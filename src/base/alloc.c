/* alloc.c - overflow-checked allocation helpers. */
#define _POSIX_C_SOURCE 200809L
#include "lumen/base.h"

#include <stdlib.h>
#include <string.h>

int lm_mul_ok(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

void *lm_malloc(size_t n, size_t size) {
    size_t total;
    if (lm_mul_ok(n, size, &total)) return NULL;
    return malloc(total ? total : 1);
}

void *lm_calloc(size_t n, size_t size) {
    if (n == 0 || size == 0) return calloc(1, 1);
    return calloc(n, size);
}

void *lm_aligned_alloc(size_t n, size_t size) {
    size_t total;
    if (lm_mul_ok(n, size, &total)) return NULL;
    total = (total + 63) & ~(size_t)63;
    if (total == 0) total = 64;
    void *p = NULL;
    if (posix_memalign(&p, 64, total)) return NULL;
    return p;
}

char *lm_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}
