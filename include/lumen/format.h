/* format.h - readers for on-disk model formats: GGUF (v2/v3) and llama2.c checkpoints. */
#ifndef LUMEN_FORMAT_H
#define LUMEN_FORMAT_H

#include "lumen/base.h"
#include "lumen/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- GGUF ---------------------------------------------------------------------------- */

/* Metadata value types, numbered as the GGUF specification numbers them. */
typedef enum lm_gguf_type {
    LM_GGUF_UINT8 = 0,
    LM_GGUF_INT8 = 1,
    LM_GGUF_UINT16 = 2,
    LM_GGUF_INT16 = 3,
    LM_GGUF_UINT32 = 4,
    LM_GGUF_INT32 = 5,
    LM_GGUF_FLOAT32 = 6,
    LM_GGUF_BOOL = 7,
    LM_GGUF_STRING = 8,
    LM_GGUF_ARRAY = 9,
    LM_GGUF_UINT64 = 10,
    LM_GGUF_INT64 = 11,
    LM_GGUF_FLOAT64 = 12,
    LM_GGUF_TYPE_COUNT
} lm_gguf_type;

/* A string inside the mapped file: not NUL-terminated. */
typedef struct lm_gguf_str {
    const char *ptr;
    uint64_t len;
} lm_gguf_str;

typedef struct lm_gguf_kv {
    char *key;          /* NUL-terminated copy */
    lm_gguf_type type;  /* for arrays: LM_GGUF_ARRAY, element type in arr_type */
    lm_gguf_type arr_type;
    uint64_t n;         /* array length (1 for scalars) */
    /* scalars */
    uint64_t u;         /* unsigned integer types and bool */
    int64_t i;          /* signed integer types */
    double f;           /* float types */
    lm_gguf_str str;    /* strings */
    /* arrays: numeric elements packed little-endian in the mapped file; strings as a table */
    const uint8_t *arr_data;
    lm_gguf_str *arr_str;
} lm_gguf_kv;

typedef struct lm_gguf_tensor {
    char *name;          /* NUL-terminated copy */
    uint32_t n_dims;
    uint64_t ne[4];      /* ne[0] is the fastest-varying (columns); unused dims are 1 */
    uint32_t ggml_type;  /* the raw type id from the file */
    lm_dtype dtype;      /* LM_DTYPE_COUNT if lumen cannot compute with this type */
    uint64_t offset;     /* relative to the start of the data section */
    size_t nbytes;
    const void *data;    /* points into the mapping */
} lm_gguf_tensor;

typedef struct lm_gguf {
    lm_mapped_file file;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    lm_gguf_kv *kv;
    lm_gguf_tensor *tensors;
    size_t alignment;
    size_t data_offset;
} lm_gguf;

/* Opens and validates a GGUF file: magic, version, every count and length against the
 * file size, key and tensor-name uniqueness, dims, types, alignment and that each
 * tensor's data lies inside the file without overlapping another. */
lm_status lm_gguf_open(const char *path, lm_gguf **out);
void lm_gguf_close(lm_gguf *g); /* accepts NULL */

const lm_gguf_kv *lm_gguf_find(const lm_gguf *g, const char *key);
const lm_gguf_tensor *lm_gguf_find_tensor(const lm_gguf *g, const char *name);
const char *lm_gguf_type_name(lm_gguf_type t);
const char *lm_ggml_type_name(uint32_t ggml_type);

/* Typed getters: LM_ERR_FORMAT (message naming file and key) if the key is missing,
 * has an incompatible type or is out of range. Integer getters accept any integer type. */
lm_status lm_gguf_get_u64(const lm_gguf *g, const char *key, uint64_t *out);
lm_status lm_gguf_get_u32(const lm_gguf *g, const char *key, uint32_t *out);
lm_status lm_gguf_get_f32(const lm_gguf *g, const char *key, float *out);
lm_status lm_gguf_get_str(const lm_gguf *g, const char *key, lm_gguf_str *out);
/* Element i of a numeric array as double / int64 (caller checks i < kv->n). */
double lm_gguf_arr_f64(const lm_gguf_kv *kv, uint64_t i);
int64_t lm_gguf_arr_i64(const lm_gguf_kv *kv, uint64_t i);

#ifdef __cplusplus
}
#endif
#endif
