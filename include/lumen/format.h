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

/* ---- safetensors ----------------------------------------------------------------------- */

/* Element types of the safetensors format. */
typedef enum lm_st_dtype {
    LM_ST_BOOL = 0,
    LM_ST_U8,
    LM_ST_I8,
    LM_ST_I16,
    LM_ST_U16,
    LM_ST_F16,
    LM_ST_BF16,
    LM_ST_I32,
    LM_ST_U32,
    LM_ST_F32,
    LM_ST_F64,
    LM_ST_I64,
    LM_ST_U64,
    LM_ST_F8_E4M3,
    LM_ST_F8_E5M2,
    LM_ST_DTYPE_COUNT
} lm_st_dtype;

const char *lm_st_dtype_name(lm_st_dtype t); /* "F32", "BF16", ... as in the file */
size_t lm_st_dtype_size(lm_st_dtype t);
/* The computable lumen dtype (F32, F16, BF16) or LM_DTYPE_COUNT. */
lm_dtype lm_st_to_dtype(lm_st_dtype t);

#define LM_ST_MAX_DIMS 8

typedef struct lm_st_tensor {
    char *name;
    lm_st_dtype dtype;
    int n_dims;                      /* 0 for a scalar */
    uint64_t shape[LM_ST_MAX_DIMS];  /* row-major, shape[0] slowest */
    uint64_t n_elements;
    size_t nbytes;
    const void *data;                /* into the mapping; may be unaligned only if the file is odd */
} lm_st_tensor;

typedef struct lm_safetensors {
    lm_mapped_file file;
    size_t n_tensors;
    lm_st_tensor *tensors;
    size_t n_meta;       /* the optional "__metadata__" string map */
    char **meta_keys;
    char **meta_values;
} lm_safetensors;

/* Opens and validates: 8-byte little-endian header length within the file, the header is a
 * JSON object (parsed with jansson) of {name: {dtype, shape, data_offsets}} plus optional
 * "__metadata__" (string values only); dtypes known; data_offsets inside the data section,
 * begin <= end, end - begin == product(shape) * dtype size (overflow-checked); tensors do
 * not overlap. Every message names the file and the tensor. */
lm_status lm_safetensors_open(const char *path, lm_safetensors **out);
void lm_safetensors_close(lm_safetensors *st); /* accepts NULL */
const lm_st_tensor *lm_safetensors_find(const lm_safetensors *st, const char *name);
const char *lm_safetensors_meta(const lm_safetensors *st, const char *key); /* NULL if absent */

/* The weights of a Hugging Face model directory: model.safetensors, or the shards listed
 * by model.safetensors.index.json ("weight_map": tensor -> file). A tensor name present in
 * two shards, a missing shard file, or a weight_map entry whose shard lacks it is an error. */
typedef struct lm_st_set {
    size_t n_files;
    lm_safetensors **files;
} lm_st_set;
lm_status lm_st_set_open_dir(const char *dir, lm_st_set **out);
void lm_st_set_close(lm_st_set *set); /* accepts NULL */
const lm_st_tensor *lm_st_set_find(const lm_st_set *set, const char *name, const lm_safetensors **file);

/* Writing. A spec describes one tensor; data may be NULL for the streaming writer. */
typedef struct lm_st_spec {
    const char *name;
    lm_st_dtype dtype;
    int n_dims;
    uint64_t shape[LM_ST_MAX_DIMS];
    const void *data;
} lm_st_spec;

/* Writes a whole file atomically (temp + fsync + rename). meta: n_meta key/value pairs
 * (meta[2i], meta[2i+1]) for "__metadata__", may be NULL. Tensors are laid out in the given
 * order; the header is padded with spaces to a multiple of 8 bytes, as the reference does. */
lm_status lm_safetensors_write(const char *path, const lm_st_spec *specs, size_t n, const char *const *meta,
                               size_t n_meta);

/* Streaming writer for files too large to hold: the header is written from the specs first,
 * then the data of each tensor in spec order through any number of write calls. commit checks
 * that exactly the declared bytes were written, then fsyncs and renames into place. */
typedef struct lm_st_writer lm_st_writer;
lm_status lm_st_writer_open(lm_st_writer **out, const char *path, const lm_st_spec *specs, size_t n,
                            const char *const *meta, size_t n_meta);
lm_status lm_st_writer_write(lm_st_writer *w, const void *data, size_t nbytes);
lm_status lm_st_writer_commit(lm_st_writer *w); /* frees w */
void lm_st_writer_abort(lm_st_writer *w);       /* removes the temporary file, frees w; accepts NULL */

#ifdef __cplusplus
}
#endif
#endif
