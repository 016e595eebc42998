/* base.h - errors, file mapping, atomic writes, rng, progress: the bottom layer of lumen. */
#ifndef LUMEN_BASE_H
#define LUMEN_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Every fallible call returns one of these; the message lives per thread (lm_errmsg). */
typedef enum lm_status {
    LM_OK = 0,
    LM_ERR_IO,          /* open/read/write/mmap failed */
    LM_ERR_FORMAT,      /* the file is malformed, truncated or lies about itself */
    LM_ERR_UNSUPPORTED, /* well-formed but not supported (dtype, architecture, version) */
    LM_ERR_ARG,         /* bad argument from the caller */
    LM_ERR_NOMEM,       /* allocation failed or a size overflowed */
    LM_ERR_RANGE        /* a request exceeds a limit (context length, vocabulary) */
} lm_status;

/* Records a message for this thread and returns st, so callers can write
 * `return lm_fail(LM_ERR_FORMAT, "%s: ...", path);`. */
lm_status lm_fail(lm_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The message of the last failure on this thread ("" if none). */
const char *lm_errmsg(void);
const char *lm_status_name(lm_status st);
void lm_clear_error(void);

/* Allocation helpers: NULL on failure or on overflow of n*size. Freed with free(). */
void *lm_malloc(size_t n, size_t size);
void *lm_calloc(size_t n, size_t size);
/* 64-byte aligned; freed with free(). */
void *lm_aligned_alloc(size_t n, size_t size);
/* a*b without overflow: returns 0 and sets *out, or -1 on overflow. */
int lm_mul_ok(size_t a, size_t b, size_t *out);
char *lm_strdup(const char *s);
/* Length (1..4) of the valid UTF-8 character at s, which has n > 0 bytes, or 0 if the bytes there
 * are not one: no overlong forms, no surrogates, nothing above U+10FFFF. */
size_t lm_utf8_len(const unsigned char *s, size_t n);

/* A read-only mapping of a whole file. */
typedef struct lm_mapped_file {
    const uint8_t *data;
    size_t size;
    char *path;
} lm_mapped_file;

lm_status lm_map_file(const char *path, lm_mapped_file *out);
void lm_unmap_file(lm_mapped_file *f); /* accepts a zeroed struct */

/* Reads a whole file into a malloc'd, NUL-terminated buffer. */
lm_status lm_read_file(const char *path, char **out, size_t *size);

/* Writes a file atomically: data goes to PATH.tmp.PID, is fsync'd, then renamed over PATH. */
lm_status lm_write_file_atomic(const char *path, const void *data, size_t size);
/* Rewrites a JSONL log atomically keeping only its complete lines whose "step" is in
 * [0, max_step] (a run killed after its last checkpoint may have logged later steps); a missing
 * file is not an error. */
lm_status lm_jsonl_keep_steps(const char *path, long long max_step);

/* Streaming atomic writer for large files. */
typedef struct lm_atomic_file {
    FILE *fp;
    char *path;
    char *tmp_path;
} lm_atomic_file;
lm_status lm_atomic_open(lm_atomic_file *f, const char *path);
lm_status lm_atomic_write(lm_atomic_file *f, const void *data, size_t size);
lm_status lm_atomic_commit(lm_atomic_file *f); /* fsync + rename; closes */
void lm_atomic_abort(lm_atomic_file *f);        /* removes the temporary file; closes */

/* Half-precision conversions (IEEE binary16 and bfloat16). */
float lm_f16_to_f32(uint16_t h);
uint16_t lm_f32_to_f16(float f);
float lm_bf16_to_f32(uint16_t h);
uint16_t lm_f32_to_bf16(float f);

/* Deterministic RNG (xorshift64*), seeded explicitly. */
typedef struct lm_rng {
    uint64_t state;
} lm_rng;
void lm_rng_seed(lm_rng *r, uint64_t seed);
uint32_t lm_rng_u32(lm_rng *r);
float lm_rng_f32(lm_rng *r); /* uniform in [0, 1) */
float lm_rng_normal(lm_rng *r);

/* Monotonic seconds. */
double lm_now(void);

/* Thread count used by lumen's OpenMP loops and by BLAS. n <= 0 means all cores. */
void lm_set_threads(int n);
int lm_get_threads(void);

/* Progress: a bar with rate and ETA on a terminal, a line per update otherwise. */
typedef struct lm_progress {
    const char *label;
    const char *unit;
    double total;
    double done;
    double start;
    double last_print;
    int tty;
    int enabled;
} lm_progress;
void lm_progress_begin(lm_progress *p, const char *label, const char *unit, double total, int enabled);
void lm_progress_update(lm_progress *p, double done);
void lm_progress_end(lm_progress *p);

#ifdef __cplusplus
}
#endif
#endif
