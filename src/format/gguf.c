/* gguf.c - GGUF v2/v3 reader: maps the file, validates every count and offset, exposes metadata and tensors. */
#include "lumen/format.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- ggml tensor types --------------------------------------------------------------- */

/* One table for names, block geometry and the lumen dtype, so the three never drift apart.
 * Ids absent here (4, 5, 31-33: removed from ggml; anything newer) are rejected as unknown.
 * Q8_1 is 36 bytes (two f16 + 32 int8) as in current ggml; gguf-py's table still says 40. */
typedef struct ggml_type_info {
    const char *name;
    uint32_t block; /* elements per block */
    uint32_t bytes; /* bytes per block */
    lm_dtype dtype; /* LM_DTYPE_COUNT: known layout, but lumen cannot compute with it */
} ggml_type_info;

#define NO_DTYPE LM_DTYPE_COUNT
static const ggml_type_info k_ggml_types[] = {
    [0] = {"F32", 1, 4, LM_F32},           [1] = {"F16", 1, 2, LM_F16},           [2] = {"Q4_0", 32, 18, LM_Q4_0},
    [3] = {"Q4_1", 32, 20, NO_DTYPE},      [6] = {"Q5_0", 32, 22, NO_DTYPE},      [7] = {"Q5_1", 32, 24, NO_DTYPE},
    [8] = {"Q8_0", 32, 34, LM_Q8_0},       [9] = {"Q8_1", 32, 36, NO_DTYPE},      [10] = {"Q2_K", 256, 84, NO_DTYPE},
    [11] = {"Q3_K", 256, 110, NO_DTYPE},   [12] = {"Q4_K", 256, 144, LM_Q4_K},    [13] = {"Q5_K", 256, 176, NO_DTYPE},
    [14] = {"Q6_K", 256, 210, NO_DTYPE},   [15] = {"Q8_K", 256, 292, NO_DTYPE},   [16] = {"IQ2_XXS", 256, 66, NO_DTYPE},
    [17] = {"IQ2_XS", 256, 74, NO_DTYPE},  [18] = {"IQ3_XXS", 256, 98, NO_DTYPE}, [19] = {"IQ1_S", 256, 50, NO_DTYPE},
    [20] = {"IQ4_NL", 32, 18, NO_DTYPE},   [21] = {"IQ3_S", 256, 110, NO_DTYPE},  [22] = {"IQ2_S", 256, 82, NO_DTYPE},
    [23] = {"IQ4_XS", 256, 136, NO_DTYPE}, [24] = {"I8", 1, 1, NO_DTYPE},         [25] = {"I16", 1, 2, NO_DTYPE},
    [26] = {"I32", 1, 4, NO_DTYPE},        [27] = {"I64", 1, 8, NO_DTYPE},        [28] = {"F64", 1, 8, NO_DTYPE},
    [29] = {"IQ1_M", 256, 56, NO_DTYPE},   [30] = {"BF16", 1, 2, LM_BF16},        [34] = {"TQ1_0", 256, 54, NO_DTYPE},
    [35] = {"TQ2_0", 256, 66, NO_DTYPE},   [39] = {"MXFP4", 32, 17, NO_DTYPE},
};
#define N_GGML_TYPES (sizeof k_ggml_types / sizeof k_ggml_types[0])

static const ggml_type_info *ggml_type_lookup(uint32_t id) {
    if (id >= N_GGML_TYPES || !k_ggml_types[id].name) return NULL;
    return &k_ggml_types[id];
}

const char *lm_ggml_type_name(uint32_t ggml_type) {
    const ggml_type_info *t = ggml_type_lookup(ggml_type);
    return t ? t->name : "unknown";
}

/* ---- metadata value types ------------------------------------------------------------- */

static const char *const k_gguf_type_names[LM_GGUF_TYPE_COUNT] = {
    [LM_GGUF_UINT8] = "uint8",     [LM_GGUF_INT8] = "int8",   [LM_GGUF_UINT16] = "uint16",   [LM_GGUF_INT16] = "int16",
    [LM_GGUF_UINT32] = "uint32",   [LM_GGUF_INT32] = "int32", [LM_GGUF_FLOAT32] = "float32", [LM_GGUF_BOOL] = "bool",
    [LM_GGUF_STRING] = "string",   [LM_GGUF_ARRAY] = "array", [LM_GGUF_UINT64] = "uint64",   [LM_GGUF_INT64] = "int64",
    [LM_GGUF_FLOAT64] = "float64",
};

const char *lm_gguf_type_name(lm_gguf_type t) {
    return (unsigned)t < LM_GGUF_TYPE_COUNT ? k_gguf_type_names[t] : "unknown";
}

/* Size in bytes of a fixed-size value; 0 for strings and arrays. */
static size_t gguf_scalar_size(lm_gguf_type t) {
    switch (t) {
    case LM_GGUF_UINT8:
    case LM_GGUF_INT8:
    case LM_GGUF_BOOL: return 1;
    case LM_GGUF_UINT16:
    case LM_GGUF_INT16: return 2;
    case LM_GGUF_UINT32:
    case LM_GGUF_INT32:
    case LM_GGUF_FLOAT32: return 4;
    case LM_GGUF_UINT64:
    case LM_GGUF_INT64:
    case LM_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static int gguf_is_int(lm_gguf_type t) {
    return t == LM_GGUF_UINT8 || t == LM_GGUF_INT8 || t == LM_GGUF_UINT16 || t == LM_GGUF_INT16 ||
           t == LM_GGUF_UINT32 || t == LM_GGUF_INT32 || t == LM_GGUF_UINT64 || t == LM_GGUF_INT64;
}

static int gguf_is_signed(lm_gguf_type t) {
    return t == LM_GGUF_INT8 || t == LM_GGUF_INT16 || t == LM_GGUF_INT32 || t == LM_GGUF_INT64;
}

/* Explicit little-endian decoding keeps the reader correct regardless of host byte order. */
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32); }

/* A fixed-size value decoded into the matching field of the three (u for unsigned and bool,
 * i for signed, f for floats). */
typedef struct scalar {
    uint64_t u;
    int64_t i;
    double f;
} scalar;

static scalar decode_scalar(lm_gguf_type t, const uint8_t *p) {
    scalar s = {0, 0, 0.0};
    switch (t) {
    case LM_GGUF_UINT8: s.u = p[0]; break;
    case LM_GGUF_BOOL: s.u = p[0] != 0; break;
    case LM_GGUF_INT8: s.i = (int8_t)p[0]; break;
    case LM_GGUF_UINT16: s.u = le16(p); break;
    case LM_GGUF_INT16: s.i = (int16_t)le16(p); break;
    case LM_GGUF_UINT32: s.u = le32(p); break;
    case LM_GGUF_INT32: s.i = (int32_t)le32(p); break;
    case LM_GGUF_UINT64: s.u = le64(p); break;
    case LM_GGUF_INT64: s.i = (int64_t)le64(p); break;
    case LM_GGUF_FLOAT32: {
        uint32_t b = le32(p);
        float v;
        memcpy(&v, &b, sizeof v);
        s.f = v;
        break;
    }
    case LM_GGUF_FLOAT64: {
        uint64_t b = le64(p);
        memcpy(&s.f, &b, sizeof s.f);
        break;
    }
    default: break;
    }
    return s;
}

/* ---- the parser ---------------------------------------------------------------------- */

/* Keys and tensor names are copied into C strings, so they must be non-empty, NUL-free and
 * below the GGUF limit of 65535 bytes. */
#define NAME_MAX_BYTES 65535u
/* Arrays of arrays are legal but unused by lumen; past this depth the file is hostile. */
#define MAX_ARRAY_DEPTH 8
/* Smallest possible encodings, used to reject absurd counts before anything is allocated. */
#define MIN_KV_BYTES (8 + 1 + 4 + 1)             /* key length, 1-byte key, type, 1-byte value */
#define MIN_TENSOR_BYTES (8 + 1 + 4 + 8 + 4 + 8) /* name length, 1-byte name, n_dims, ne, type, offset */

typedef struct parser {
    const char *path;
    const uint8_t *data;
    size_t size, pos;
    char what[192]; /* the item being read, for messages: "key 'x'", "tensor #3", ... */
} parser;

static size_t remaining(const parser *p) { return p->size - p->pos; }

static lm_status need(parser *p, uint64_t n, const char *field) {
    if (n <= remaining(p)) return LM_OK;
    return lm_fail(LM_ERR_FORMAT, "%s: truncated: %s %s needs %llu bytes at offset %zu but only %zu remain", p->path,
                   p->what, field, (unsigned long long)n, p->pos, remaining(p));
}

static lm_status read_u32(parser *p, const char *field, uint32_t *out) {
    lm_status st = need(p, 4, field);
    if (st != LM_OK) return st;
    *out = le32(p->data + p->pos);
    p->pos += 4;
    return LM_OK;
}

static lm_status read_u64(parser *p, const char *field, uint64_t *out) {
    lm_status st = need(p, 8, field);
    if (st != LM_OK) return st;
    *out = le64(p->data + p->pos);
    p->pos += 8;
    return LM_OK;
}

/* A length-prefixed string, left inside the mapping. */
static lm_status read_str(parser *p, const char *field, lm_gguf_str *out) {
    uint64_t len;
    lm_status st = read_u64(p, field, &len);
    if (st != LM_OK) return st;
    if ((st = need(p, len, field)) != LM_OK) return st;
    out->ptr = (const char *)(p->data + p->pos);
    out->len = len;
    p->pos += (size_t)len;
    return LM_OK;
}

/* A key or tensor name, copied into a NUL-terminated string. */
static lm_status read_name(parser *p, const char *kind, char **out) {
    uint64_t len;
    lm_status st = read_u64(p, "name length", &len);
    if (st != LM_OK) return st;
    if (len == 0) return lm_fail(LM_ERR_FORMAT, "%s: %s has an empty name", p->path, p->what);
    if (len > NAME_MAX_BYTES)
        return lm_fail(LM_ERR_FORMAT, "%s: %s name is %llu bytes, expected at most %u", p->path, p->what,
                       (unsigned long long)len, NAME_MAX_BYTES);
    if ((st = need(p, len, "name")) != LM_OK) return st;
    const uint8_t *s = p->data + p->pos;
    if (memchr(s, 0, (size_t)len)) return lm_fail(LM_ERR_FORMAT, "%s: %s name contains a NUL byte", p->path, p->what);
    char *copy = malloc((size_t)len + 1);
    if (!copy) return lm_fail(LM_ERR_NOMEM, "%s: out of memory reading a %s name", p->path, kind);
    memcpy(copy, s, (size_t)len);
    copy[len] = 0;
    p->pos += (size_t)len;
    *out = copy;
    return LM_OK;
}

static lm_status check_value_type(parser *p, uint32_t t, const char *role) {
    if (t < LM_GGUF_TYPE_COUNT) return LM_OK;
    return lm_fail(LM_ERR_FORMAT, "%s: %s has unknown %s type %u (expected 0 to %d)", p->path, p->what, role, t,
                   LM_GGUF_TYPE_COUNT - 1);
}

/* Checks that count elements of type t fit in what is left, before anything loops or allocates. */
static lm_status check_count(parser *p, lm_gguf_type t, uint64_t count) {
    size_t unit = gguf_scalar_size(t);
    const char *least = "";
    if (t == LM_GGUF_STRING) unit = 8, least = "at least ";
    if (t == LM_GGUF_ARRAY) unit = 12, least = "at least ";
    if (count <= remaining(p) / unit) return LM_OK;
    return lm_fail(LM_ERR_FORMAT,
                   "%s: truncated: %s array claims %llu elements of type %s (%s%zu bytes each) but only %zu bytes "
                   "remain at offset %zu",
                   p->path, p->what, (unsigned long long)count, lm_gguf_type_name(t), least, unit, remaining(p),
                   p->pos);
}

/* Walks over the elements of a nested array without keeping them. */
static lm_status skip_array(parser *p, int depth) {
    uint32_t t;
    uint64_t count;
    lm_status st;
    if (depth > MAX_ARRAY_DEPTH)
        return lm_fail(LM_ERR_FORMAT, "%s: %s has arrays nested deeper than %d", p->path, p->what, MAX_ARRAY_DEPTH);
    if ((st = read_u32(p, "nested array element type", &t)) != LM_OK) return st;
    if ((st = check_value_type(p, t, "nested array element")) != LM_OK) return st;
    if ((st = read_u64(p, "nested array length", &count)) != LM_OK) return st;
    if ((st = check_count(p, (lm_gguf_type)t, count)) != LM_OK) return st;
    if (t == LM_GGUF_STRING) {
        lm_gguf_str s;
        for (uint64_t k = 0; k < count; k++)
            if ((st = read_str(p, "nested string element", &s)) != LM_OK) return st;
    } else if (t == LM_GGUF_ARRAY) {
        for (uint64_t k = 0; k < count; k++)
            if ((st = skip_array(p, depth + 1)) != LM_OK) return st;
    } else {
        p->pos += (size_t)count * gguf_scalar_size((lm_gguf_type)t); /* fits: check_count */
    }
    return LM_OK;
}

static lm_status read_array(parser *p, lm_gguf_kv *kv) {
    uint32_t t;
    uint64_t count;
    lm_status st;
    if ((st = read_u32(p, "array element type", &t)) != LM_OK) return st;
    if ((st = check_value_type(p, t, "array element")) != LM_OK) return st;
    if ((st = read_u64(p, "array length", &count)) != LM_OK) return st;
    if ((st = check_count(p, (lm_gguf_type)t, count)) != LM_OK) return st;
    kv->arr_type = (lm_gguf_type)t;
    kv->n = count;
    kv->arr_data = p->data + p->pos;
    if (t == LM_GGUF_STRING) {
        if (count) {
            /* count <= remaining / 8 above, so this allocation is bounded by the file size */
            kv->arr_str = lm_malloc((size_t)count, sizeof *kv->arr_str);
            if (!kv->arr_str) return lm_fail(LM_ERR_NOMEM, "%s: out of memory for %s", p->path, p->what);
        }
        for (uint64_t k = 0; k < count; k++)
            if ((st = read_str(p, "string element", &kv->arr_str[k])) != LM_OK) return st;
    } else if (t == LM_GGUF_ARRAY) {
        for (uint64_t k = 0; k < count; k++)
            if ((st = skip_array(p, 1)) != LM_OK) return st;
    } else {
        p->pos += (size_t)count * gguf_scalar_size((lm_gguf_type)t);
    }
    return LM_OK;
}

static lm_status read_kv(parser *p, uint64_t index, lm_gguf_kv *kv) {
    lm_status st;
    uint32_t t;
    snprintf(p->what, sizeof p->what, "key #%llu", (unsigned long long)index);
    if ((st = read_name(p, "key", &kv->key)) != LM_OK) return st;
    snprintf(p->what, sizeof p->what, "key '%.150s'", kv->key);
    if ((st = read_u32(p, "value type", &t)) != LM_OK) return st;
    if ((st = check_value_type(p, t, "value")) != LM_OK) return st;
    kv->type = (lm_gguf_type)t;
    kv->arr_type = kv->type;
    kv->n = 1;
    if (t == LM_GGUF_STRING) return read_str(p, "string value", &kv->str);
    if (t == LM_GGUF_ARRAY) return read_array(p, kv);
    size_t sz = gguf_scalar_size(kv->type);
    if ((st = need(p, sz, "value")) != LM_OK) return st;
    scalar s = decode_scalar(kv->type, p->data + p->pos);
    kv->u = s.u;
    kv->i = s.i;
    kv->f = s.f;
    p->pos += sz;
    return LM_OK;
}

static lm_status read_tensor_info(parser *p, uint64_t index, size_t alignment, lm_gguf_tensor *t) {
    lm_status st;
    snprintf(p->what, sizeof p->what, "tensor #%llu", (unsigned long long)index);
    if ((st = read_name(p, "tensor", &t->name)) != LM_OK) return st;
    snprintf(p->what, sizeof p->what, "tensor '%.150s'", t->name);
    const char *name = t->name;
    if ((st = read_u32(p, "n_dims", &t->n_dims)) != LM_OK) return st;
    if (t->n_dims == 0 || t->n_dims > 4)
        return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s' has n_dims %u, expected 1 to 4", p->path, name, t->n_dims);
    for (int d = 0; d < 4; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if ((st = read_u64(p, "shape", &t->ne[d])) != LM_OK) return st;
        if (t->ne[d] == 0)
            return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s' has ne[%u] = 0, expected a positive size", p->path, name, d);
    }
    if ((st = read_u32(p, "type", &t->ggml_type)) != LM_OK) return st;
    if ((st = read_u64(p, "offset", &t->offset)) != LM_OK) return st;

    /* Element count must fit in int64 as well as size_t: that is ggml's own limit. */
    size_t count = 1;
    for (int d = 0; d < 4; d++) {
        if (t->ne[d] > (uint64_t)SIZE_MAX || lm_mul_ok(count, (size_t)t->ne[d], &count) || count > (size_t)INT64_MAX)
            return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s' shape [%llu, %llu, %llu, %llu]: element count overflows",
                           p->path, name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                           (unsigned long long)t->ne[2], (unsigned long long)t->ne[3]);
    }
    const ggml_type_info *info = ggml_type_lookup(t->ggml_type);
    if (!info) return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s' has unknown ggml type %u", p->path, name, t->ggml_type);
    t->dtype = info->dtype;
    if (t->ne[0] % info->block)
        return lm_fail(LM_ERR_FORMAT,
                       "%s: tensor '%s' of type %s has ne[0] = %llu, expected a multiple of the block size %u", p->path,
                       name, info->name, (unsigned long long)t->ne[0], info->block);
    /* count/block*bytes <= count*4.5 at worst, but check anyway rather than reason about it */
    if (lm_mul_ok(count / info->block, info->bytes, &t->nbytes))
        return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s' byte size overflows", p->path, name);
    if (t->offset % alignment)
        return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s' offset %llu is not a multiple of the alignment %zu", p->path,
                       name, (unsigned long long)t->offset, alignment);
    return LM_OK;
}

static int cmp_key_ptr(const void *a, const void *b) {
    const lm_gguf_kv *x = *(const lm_gguf_kv *const *)a, *y = *(const lm_gguf_kv *const *)b;
    return strcmp(x->key, y->key);
}

static int cmp_tensor_name(const void *a, const void *b) {
    const lm_gguf_tensor *x = *(const lm_gguf_tensor *const *)a, *y = *(const lm_gguf_tensor *const *)b;
    return strcmp(x->name, y->name);
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const lm_gguf_tensor *x = *(const lm_gguf_tensor *const *)a, *y = *(const lm_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Sorting makes the uniqueness checks O(n log n) even for hostile files with huge counts. */
static lm_status check_unique_keys(const lm_gguf *g) {
    if (g->n_kv < 2) return LM_OK;
    const lm_gguf_kv **v = lm_malloc((size_t)g->n_kv, sizeof *v);
    if (!v) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", g->file.path);
    for (size_t k = 0; k < g->n_kv; k++) v[k] = &g->kv[k];
    qsort(v, (size_t)g->n_kv, sizeof *v, cmp_key_ptr);
    lm_status st = LM_OK;
    for (size_t k = 1; k < g->n_kv && st == LM_OK; k++)
        if (strcmp(v[k - 1]->key, v[k]->key) == 0)
            st = lm_fail(LM_ERR_FORMAT, "%s: duplicate key '%s'", g->file.path, v[k]->key);
    free(v);
    return st;
}

/* Uniqueness of names, then that every tensor's bytes lie inside the file and none overlap. */
static lm_status check_tensor_layout(const lm_gguf *g) {
    const char *path = g->file.path;
    size_t n = (size_t)g->n_tensors;
    if (n == 0) return LM_OK;
    const lm_gguf_tensor **v = lm_malloc(n, sizeof *v);
    if (!v) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    for (size_t k = 0; k < n; k++) v[k] = &g->tensors[k];
    lm_status st = LM_OK;

    qsort(v, n, sizeof *v, cmp_tensor_name);
    for (size_t k = 1; k < n && st == LM_OK; k++)
        if (strcmp(v[k - 1]->name, v[k]->name) == 0)
            st = lm_fail(LM_ERR_FORMAT, "%s: duplicate tensor name '%s'", path, v[k]->name);

    /* data_offset may lie past the end of a file with no tensors (writers omit the padding),
     * so bounds are only checked per tensor. */
    size_t data_room = g->data_offset <= g->file.size ? g->file.size - g->data_offset : 0;
    for (size_t k = 0; k < n && st == LM_OK; k++) {
        const lm_gguf_tensor *t = &g->tensors[k];
        if (t->offset > data_room || t->nbytes > data_room - t->offset)
            st = lm_fail(LM_ERR_FORMAT,
                         "%s: tensor '%s' data (%zu bytes at offset %llu of the data section at %zu) runs past the end "
                         "of the file (%zu bytes)",
                         path, t->name, t->nbytes, (unsigned long long)t->offset, g->data_offset, g->file.size);
    }

    if (st == LM_OK) {
        qsort(v, n, sizeof *v, cmp_tensor_offset);
        for (size_t k = 1; k < n && st == LM_OK; k++) {
            const lm_gguf_tensor *a = v[k - 1], *b = v[k];
            if (a->offset + a->nbytes > b->offset) /* no overflow: both checked against the file */
                st = lm_fail(LM_ERR_FORMAT, "%s: tensors '%s' (offset %llu, %zu bytes) and '%s' (offset %llu) overlap",
                             path, a->name, (unsigned long long)a->offset, a->nbytes, b->name,
                             (unsigned long long)b->offset);
        }
    }
    free(v);
    return st;
}

static lm_status read_alignment(lm_gguf *g) {
    g->alignment = 32;
    const lm_gguf_kv *kv = lm_gguf_find(g, "general.alignment");
    if (!kv) return LM_OK;
    if (kv->type != LM_GGUF_UINT32)
        return lm_fail(LM_ERR_FORMAT, "%s: key 'general.alignment' has type %s, expected uint32", g->file.path,
                       lm_gguf_type_name(kv->type));
    if (kv->u == 0 || (kv->u & (kv->u - 1)))
        return lm_fail(LM_ERR_FORMAT, "%s: key 'general.alignment' is %llu, expected a nonzero power of two",
                       g->file.path, (unsigned long long)kv->u);
    g->alignment = (size_t)kv->u;
    return LM_OK;
}

static lm_status parse(lm_gguf *g) {
    parser p = {.path = g->file.path, .data = g->file.data, .size = g->file.size, .pos = 0};
    lm_status st;
    snprintf(p.what, sizeof p.what, "the header");

    if ((st = need(&p, 4, "magic")) != LM_OK) return st;
    if (memcmp(p.data, "GGUF", 4) != 0)
        return lm_fail(LM_ERR_FORMAT, "%s: not a GGUF file: bad magic %02x %02x %02x %02x, expected \"GGUF\"", p.path,
                       p.data[0], p.data[1], p.data[2], p.data[3]);
    p.pos = 4;
    if ((st = read_u32(&p, "version", &g->version)) != LM_OK) return st;
    if (g->version != 2 && g->version != 3) {
        /* A big-endian file reads its small version number byte-swapped. */
        if ((g->version & 0xFFFFu) == 0 && (g->version >> 24) >= 1 && (g->version >> 24) <= 3)
            return lm_fail(LM_ERR_UNSUPPORTED, "%s: big-endian GGUF (version %u) is not supported", p.path,
                           g->version >> 24);
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: unsupported GGUF version %u, expected 2 or 3", p.path, g->version);
    }
    if ((st = read_u64(&p, "tensor count", &g->n_tensors)) != LM_OK) return st;
    if ((st = read_u64(&p, "metadata key count", &g->n_kv)) != LM_OK) return st;
    if (g->n_kv > remaining(&p) / MIN_KV_BYTES)
        return lm_fail(LM_ERR_FORMAT,
                       "%s: truncated or corrupt: header claims %llu metadata keys but only %zu bytes follow", p.path,
                       (unsigned long long)g->n_kv, remaining(&p));
    if (g->n_tensors > remaining(&p) / MIN_TENSOR_BYTES)
        return lm_fail(LM_ERR_FORMAT, "%s: truncated or corrupt: header claims %llu tensors but only %zu bytes follow",
                       p.path, (unsigned long long)g->n_tensors, remaining(&p));

    /* Counts are now bounded by the file size, so these allocations are too. A partly filled
     * array is freed by lm_gguf_close because calloc left the rest NULL. */
    uint64_t n_kv = g->n_kv, n_tensors = g->n_tensors;
    if (n_kv && !(g->kv = lm_calloc((size_t)n_kv, sizeof *g->kv)))
        return lm_fail(LM_ERR_NOMEM, "%s: out of memory for %llu keys", p.path, (unsigned long long)n_kv);
    for (uint64_t k = 0; k < n_kv; k++)
        if ((st = read_kv(&p, k, &g->kv[k])) != LM_OK) return st;
    if ((st = check_unique_keys(g)) != LM_OK) return st;
    if ((st = read_alignment(g)) != LM_OK) return st;

    snprintf(p.what, sizeof p.what, "the tensor table");
    if (n_tensors > remaining(&p) / MIN_TENSOR_BYTES)
        return lm_fail(LM_ERR_FORMAT,
                       "%s: truncated: header claims %llu tensors but only %zu bytes remain at offset %zu", p.path,
                       (unsigned long long)n_tensors, remaining(&p), p.pos);
    if (n_tensors && !(g->tensors = lm_calloc((size_t)n_tensors, sizeof *g->tensors)))
        return lm_fail(LM_ERR_NOMEM, "%s: out of memory for %llu tensors", p.path, (unsigned long long)n_tensors);
    for (uint64_t k = 0; k < n_tensors; k++)
        if ((st = read_tensor_info(&p, k, g->alignment, &g->tensors[k])) != LM_OK) return st;

    /* p.pos <= size, and alignment is a power of two far below SIZE_MAX, so this cannot wrap
     * unless the file is within one alignment of SIZE_MAX. */
    if (p.pos > SIZE_MAX - g->alignment) return lm_fail(LM_ERR_FORMAT, "%s: data section offset overflows", p.path);
    g->data_offset = (p.pos + g->alignment - 1) & ~(g->alignment - 1);
    if ((st = check_tensor_layout(g)) != LM_OK) return st;
    for (uint64_t k = 0; k < n_tensors; k++)
        g->tensors[k].data = g->file.data + g->data_offset + (size_t)g->tensors[k].offset;
    return LM_OK;
}

lm_status lm_gguf_open(const char *path, lm_gguf **out) {
    *out = NULL;
    lm_gguf *g = calloc(1, sizeof *g);
    if (!g) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    lm_status st = lm_map_file(path, &g->file);
    if (st == LM_OK) st = parse(g);
    if (st != LM_OK) {
        lm_gguf_close(g);
        return st;
    }
    *out = g;
    return LM_OK;
}

void lm_gguf_close(lm_gguf *g) {
    if (!g) return;
    if (g->kv)
        for (uint64_t k = 0; k < g->n_kv; k++) {
            free(g->kv[k].key);
            free(g->kv[k].arr_str);
        }
    if (g->tensors)
        for (uint64_t k = 0; k < g->n_tensors; k++) free(g->tensors[k].name);
    free(g->kv);
    free(g->tensors);
    lm_unmap_file(&g->file);
    free(g);
}

/* ---- lookups and getters ------------------------------------------------------------- */

const lm_gguf_kv *lm_gguf_find(const lm_gguf *g, const char *key) {
    if (!g || !key || !g->kv) return NULL;
    for (uint64_t k = 0; k < g->n_kv; k++)
        if (g->kv[k].key && strcmp(g->kv[k].key, key) == 0) return &g->kv[k];
    return NULL;
}

const lm_gguf_tensor *lm_gguf_find_tensor(const lm_gguf *g, const char *name) {
    if (!g || !name || !g->tensors) return NULL;
    for (uint64_t k = 0; k < g->n_tensors; k++)
        if (g->tensors[k].name && strcmp(g->tensors[k].name, name) == 0) return &g->tensors[k];
    return NULL;
}

static lm_status find_or_fail(const lm_gguf *g, const char *key, const lm_gguf_kv **kv) {
    *kv = lm_gguf_find(g, key);
    if (*kv) return LM_OK;
    return lm_fail(LM_ERR_FORMAT, "%s: missing key '%s'", g->file.path, key);
}

lm_status lm_gguf_get_u64(const lm_gguf *g, const char *key, uint64_t *out) {
    const lm_gguf_kv *kv;
    lm_status st = find_or_fail(g, key, &kv);
    if (st != LM_OK) return st;
    if (!gguf_is_int(kv->type))
        return lm_fail(LM_ERR_FORMAT, "%s: key '%s' has type %s, expected an integer", g->file.path, key,
                       lm_gguf_type_name(kv->type));
    if (gguf_is_signed(kv->type)) {
        if (kv->i < 0)
            return lm_fail(LM_ERR_FORMAT, "%s: key '%s' is %lld, expected a non-negative integer", g->file.path, key,
                           (long long)kv->i);
        *out = (uint64_t)kv->i;
    } else {
        *out = kv->u;
    }
    return LM_OK;
}

lm_status lm_gguf_get_u32(const lm_gguf *g, const char *key, uint32_t *out) {
    uint64_t v;
    lm_status st = lm_gguf_get_u64(g, key, &v);
    if (st != LM_OK) return st;
    if (v > UINT32_MAX)
        return lm_fail(LM_ERR_FORMAT, "%s: key '%s' is %llu, expected at most %u", g->file.path, key,
                       (unsigned long long)v, UINT32_MAX);
    *out = (uint32_t)v;
    return LM_OK;
}

lm_status lm_gguf_get_f32(const lm_gguf *g, const char *key, float *out) {
    const lm_gguf_kv *kv;
    lm_status st = find_or_fail(g, key, &kv);
    if (st != LM_OK) return st;
    if (kv->type != LM_GGUF_FLOAT32 && kv->type != LM_GGUF_FLOAT64)
        return lm_fail(LM_ERR_FORMAT, "%s: key '%s' has type %s, expected float32 or float64", g->file.path, key,
                       lm_gguf_type_name(kv->type));
    if (isfinite(kv->f) && fabs(kv->f) > FLT_MAX)
        return lm_fail(LM_ERR_FORMAT, "%s: key '%s' is %g, outside the float32 range", g->file.path, key, kv->f);
    *out = (float)kv->f;
    return LM_OK;
}

lm_status lm_gguf_get_str(const lm_gguf *g, const char *key, lm_gguf_str *out) {
    const lm_gguf_kv *kv;
    lm_status st = find_or_fail(g, key, &kv);
    if (st != LM_OK) return st;
    if (kv->type != LM_GGUF_STRING)
        return lm_fail(LM_ERR_FORMAT, "%s: key '%s' has type %s, expected string", g->file.path, key,
                       lm_gguf_type_name(kv->type));
    *out = kv->str;
    return LM_OK;
}

/* Element i of a numeric array; all-zero for non-numeric arrays or out-of-range i, so a caller's
 * slip reads a zero rather than past the mapping. */
static scalar arr_elem(const lm_gguf_kv *kv, uint64_t i) {
    scalar zero = {0, 0, 0.0};
    if (!kv || kv->type != LM_GGUF_ARRAY || !kv->arr_data || i >= kv->n) return zero;
    size_t sz = gguf_scalar_size(kv->arr_type);
    if (sz == 0) return zero;
    return decode_scalar(kv->arr_type, kv->arr_data + (size_t)i * sz);
}

double lm_gguf_arr_f64(const lm_gguf_kv *kv, uint64_t i) {
    scalar s = arr_elem(kv, i);
    if (!kv) return 0.0;
    if (kv->arr_type == LM_GGUF_FLOAT32 || kv->arr_type == LM_GGUF_FLOAT64) return s.f;
    if (gguf_is_signed(kv->arr_type)) return (double)s.i;
    return (double)s.u;
}

int64_t lm_gguf_arr_i64(const lm_gguf_kv *kv, uint64_t i) {
    scalar s = arr_elem(kv, i);
    if (!kv) return 0;
    if (kv->arr_type == LM_GGUF_FLOAT32 || kv->arr_type == LM_GGUF_FLOAT64) {
        /* saturate: converting an out-of-range double to int64 is undefined */
        if (isnan(s.f)) return 0;
        if (s.f >= 9223372036854775807.0) return INT64_MAX;
        if (s.f <= -9223372036854775808.0) return INT64_MIN;
        return (int64_t)s.f;
    }
    if (gguf_is_signed(kv->arr_type)) return s.i;
    return s.u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)s.u;
}
