/* safetensors.c - safetensors reader (strict validation, tensors point into the mapping) and atomic writers. */
#define _POSIX_C_SOURCE 200809L
#include "lumen/format.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* ---- element types ------------------------------------------------------------------- */

/* One table for names, sizes and the computable lumen dtype, so they never drift apart. */
typedef struct st_dtype_info {
    const char *name;
    size_t size;
    lm_dtype dtype;
} st_dtype_info;

static const st_dtype_info k_st_dtypes[LM_ST_DTYPE_COUNT] = {
    [LM_ST_BOOL] = {"BOOL", 1, LM_DTYPE_COUNT},   [LM_ST_U8] = {"U8", 1, LM_DTYPE_COUNT},
    [LM_ST_I8] = {"I8", 1, LM_DTYPE_COUNT},       [LM_ST_I16] = {"I16", 2, LM_DTYPE_COUNT},
    [LM_ST_U16] = {"U16", 2, LM_DTYPE_COUNT},     [LM_ST_F16] = {"F16", 2, LM_F16},
    [LM_ST_BF16] = {"BF16", 2, LM_BF16},          [LM_ST_I32] = {"I32", 4, LM_DTYPE_COUNT},
    [LM_ST_U32] = {"U32", 4, LM_DTYPE_COUNT},     [LM_ST_F32] = {"F32", 4, LM_F32},
    [LM_ST_F64] = {"F64", 8, LM_DTYPE_COUNT},     [LM_ST_I64] = {"I64", 8, LM_DTYPE_COUNT},
    [LM_ST_U64] = {"U64", 8, LM_DTYPE_COUNT},     [LM_ST_F8_E4M3] = {"F8_E4M3", 1, LM_DTYPE_COUNT},
    [LM_ST_F8_E5M2] = {"F8_E5M2", 1, LM_DTYPE_COUNT},
};

const char *lm_st_dtype_name(lm_st_dtype t) {
    return (unsigned)t < LM_ST_DTYPE_COUNT ? k_st_dtypes[t].name : "unknown";
}

size_t lm_st_dtype_size(lm_st_dtype t) { return (unsigned)t < LM_ST_DTYPE_COUNT ? k_st_dtypes[t].size : 0; }

lm_dtype lm_st_to_dtype(lm_st_dtype t) {
    return (unsigned)t < LM_ST_DTYPE_COUNT ? k_st_dtypes[t].dtype : LM_DTYPE_COUNT;
}

static int st_dtype_parse(const char *s, lm_st_dtype *out) {
    for (int t = 0; t < LM_ST_DTYPE_COUNT; t++) {
        if (strcmp(s, k_st_dtypes[t].name) == 0) {
            *out = (lm_st_dtype)t;
            return 0;
        }
    }
    return -1;
}

/* The reference implementation refuses headers above 100 MB (MAX_HEADER_SIZE); so do we, on
 * reading and on writing, so that every file we write is readable by it. */
#define ST_MAX_HEADER 100000000ull
#define ST_META_KEY "__metadata__"

/* "[3, 4]" for messages; truncated safely if long. */
static void fmt_shape(char *buf, size_t n, const uint64_t *shape, int n_dims) {
    size_t at = 0;
    buf[0] = 0;
    at += (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < n_dims && at < n; d++)
        at += (size_t)snprintf(buf + at, n - at, d ? ", %llu" : "%llu", (unsigned long long)shape[d]);
    if (at < n) snprintf(buf + at, n - at, "]");
}

/* Product of the dims times the element size, or -1 on overflow (of uint64 or size_t). Like the
 * reference, the product is formed left to right, so an overflow before a zero dim still counts. */
static int shape_bytes(const uint64_t *shape, int n_dims, size_t elem, uint64_t *n_elements, size_t *nbytes) {
    uint64_t ne = 1;
    for (int d = 0; d < n_dims; d++) {
        if (shape[d] != 0 && ne > UINT64_MAX / shape[d]) return -1;
        ne *= shape[d];
    }
    if (ne > SIZE_MAX || lm_mul_ok((size_t)ne, elem, nbytes)) return -1;
    *n_elements = ne;
    return 0;
}

/* ---- reader -------------------------------------------------------------------------- */

/* The handle given out is the public struct; the name index lives behind it. */
typedef struct st_impl {
    lm_safetensors pub; /* first member: a pointer to pub is a pointer to the impl */
    const lm_st_tensor **by_name;
} st_impl;

/* A tensor's byte range in the data section, for the coverage check. */
typedef struct st_span {
    uint64_t begin, end;
    size_t idx;
} st_span;

static int span_cmp(const void *a, const void *b) {
    const st_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int tensor_name_cmp(const void *a, const void *b) {
    const lm_st_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* A JSON integer that is >= 0, as uint64; -1 otherwise (floats, strings, negatives). */
static int json_uint(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v)) return -1;
    json_int_t i = json_integer_value(v);
    if (i < 0) return -1;
    *out = (uint64_t)i;
    return 0;
}

/* Parses one {dtype, shape, data_offsets} entry. Other fields are ignored, as the reference's
 * deserialiser ignores them. Fills t (name owned by the caller) and its byte range. */
static lm_status parse_tensor(const char *path, const char *name, json_t *v, uint64_t data_len, lm_st_tensor *t,
                              st_span *sp) {
    if (!json_is_object(v)) return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s': entry is not a JSON object", path, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"), *jo = json_object_get(v, "data_offsets");
    if (!jd || !js || !jo)
        return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s': missing field '%s'", path, name,
                       !jd ? "dtype" : !js ? "shape" : "data_offsets");
    if (!json_is_string(jd)) return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s': dtype is not a string", path, name);
    if (st_dtype_parse(json_string_value(jd), &t->dtype))
        return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%s'", path, name, json_string_value(jd));

    if (!json_is_array(js)) return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s': shape is not an array", path, name);
    size_t nd = json_array_size(js);
    if (nd > LM_ST_MAX_DIMS)
        return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s': shape has %zu dims, at most %d supported", path, name, nd,
                       LM_ST_MAX_DIMS);
    t->n_dims = (int)nd;
    for (size_t d = 0; d < nd; d++) {
        if (json_uint(json_array_get(js, d), &t->shape[d]))
            return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer", path, name, d);
    }
    char shape_s[200];
    fmt_shape(shape_s, sizeof shape_s, t->shape, t->n_dims);
    if (shape_bytes(t->shape, t->n_dims, k_st_dtypes[t->dtype].size, &t->n_elements, &t->nbytes))
        return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s': shape %s of %s overflows the byte size", path, name, shape_s,
                       k_st_dtypes[t->dtype].name);

    if (!json_is_array(jo) || json_array_size(jo) != 2 || json_uint(json_array_get(jo, 0), &sp->begin) ||
        json_uint(json_array_get(jo, 1), &sp->end))
        return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s': data_offsets is not an array of two non-negative integers",
                       path, name);
    if (sp->begin > sp->end)
        return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] begin after end", path, name,
                       (unsigned long long)sp->begin, (unsigned long long)sp->end);
    if (sp->end > data_len)
        return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] end beyond the data section of %llu bytes",
                       path, name, (unsigned long long)sp->begin, (unsigned long long)sp->end,
                       (unsigned long long)data_len);
    if (sp->end - sp->begin != (uint64_t)t->nbytes)
        return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes, shape %s of %s needs %zu",
                       path, name, (unsigned long long)sp->begin, (unsigned long long)sp->end,
                       (unsigned long long)(sp->end - sp->begin), shape_s, k_st_dtypes[t->dtype].name, t->nbytes);
    return LM_OK;
}

static lm_status parse_meta(const char *path, json_t *m, lm_safetensors *st) {
    if (!json_is_object(m)) return lm_fail(LM_ERR_FORMAT, "%s: %s is not a JSON object", path, ST_META_KEY);
    size_t n = json_object_size(m);
    st->meta_keys = lm_calloc(n, sizeof *st->meta_keys);
    st->meta_values = lm_calloc(n, sizeof *st->meta_values);
    if (!st->meta_keys || !st->meta_values) return lm_fail(LM_ERR_NOMEM, "%s: out of memory for metadata", path);
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v) {
        if (!json_is_string(v))
            return lm_fail(LM_ERR_FORMAT, "%s: %s key '%s' is not a string", path, ST_META_KEY, k);
        st->meta_keys[st->n_meta] = lm_strdup(k);
        st->meta_values[st->n_meta] = lm_strdup(json_string_value(v));
        st->n_meta++; /* counted before the check so close frees a half-made pair */
        if (!st->meta_keys[st->n_meta - 1] || !st->meta_values[st->n_meta - 1])
            return lm_fail(LM_ERR_NOMEM, "%s: out of memory for metadata", path);
    }
    return LM_OK;
}

/* The reference requires the tensors to cover the data section exactly: sorted by offset, each
 * begins where the previous ended, and the last ends at the end of the file. We are as strict:
 * a hole or trailing bytes mean the file is not what its header says (often a bad download), and
 * accepting them would let files through that the Python tools refuse. This also rules out overlap. */
static lm_status check_coverage(const char *path, const lm_safetensors *st, st_span *spans, uint64_t data_len) {
    qsort(spans, st->n_tensors, sizeof *spans, span_cmp);
    uint64_t at = 0;
    for (size_t i = 0; i < st->n_tensors; i++) {
        const st_span *s = &spans[i];
        const char *name = st->tensors[s->idx].name;
        if (s->begin < at) {
            const char *prev = st->tensors[spans[i - 1].idx].name; /* at > 0 implies i > 0 */
            return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] overlap tensor '%s' (ends at %llu)",
                           path, name, (unsigned long long)s->begin, (unsigned long long)s->end, prev,
                           (unsigned long long)at);
        }
        if (s->begin > at)
            return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] leave a hole: bytes %llu to %llu "
                           "of the data section belong to no tensor", path, name, (unsigned long long)s->begin,
                           (unsigned long long)s->end, (unsigned long long)at, (unsigned long long)s->begin);
        at = s->end;
    }
    if (at != data_len)
        return lm_fail(LM_ERR_FORMAT, "%s: the tensors end at byte %llu of the data section but it has %llu bytes",
                       path, (unsigned long long)at, (unsigned long long)data_len);
    return LM_OK;
}

static lm_status parse_header(const char *path, json_t *root, const uint8_t *data, uint64_t data_len,
                              st_impl *impl) {
    lm_safetensors *st = &impl->pub;
    if (!json_is_object(root)) return lm_fail(LM_ERR_FORMAT, "%s: header is not a JSON object", path);
    json_t *meta = json_object_get(root, ST_META_KEY);
    size_t n = json_object_size(root) - (meta ? 1 : 0);
    if (meta) {
        lm_status s = parse_meta(path, meta, st);
        if (s != LM_OK) return s;
    }
    st->tensors = lm_calloc(n, sizeof *st->tensors);
    impl->by_name = lm_calloc(n, sizeof *impl->by_name);
    st_span *spans = lm_calloc(n, sizeof *spans);
    if (!st->tensors || !impl->by_name || !spans) {
        free(spans);
        return lm_fail(LM_ERR_NOMEM, "%s: out of memory for %zu tensors", path, n);
    }
    lm_status s = LM_OK;
    const char *k;
    json_t *v;
    /* jansson keeps keys in file order, so tensors[] lists them as the header does. */
    json_object_foreach(root, k, v) {
        if (strcmp(k, ST_META_KEY) == 0) continue;
        lm_st_tensor *t = &st->tensors[st->n_tensors];
        t->name = lm_strdup(k);
        if (!t->name) {
            s = lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        st->n_tensors++;
        st_span *sp = &spans[st->n_tensors - 1];
        sp->idx = st->n_tensors - 1;
        s = parse_tensor(path, k, v, data_len, t, sp);
        if (s != LM_OK) break;
        t->data = data + sp->begin;
    }
    if (s == LM_OK) s = check_coverage(path, st, spans, data_len);
    free(spans);
    if (s != LM_OK) return s;
    /* Duplicate names cannot occur: jansson refused them (JSON_REJECT_DUPLICATES). */
    for (size_t i = 0; i < st->n_tensors; i++) impl->by_name[i] = &st->tensors[i];
    qsort(impl->by_name, st->n_tensors, sizeof *impl->by_name, tensor_name_cmp);
    return LM_OK;
}

lm_status lm_safetensors_open(const char *path, lm_safetensors **out) {
    *out = NULL;
    st_impl *impl = calloc(1, sizeof *impl);
    if (!impl) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    lm_safetensors *st = &impl->pub;
    lm_status s = lm_map_file(path, &st->file);
    if (s != LM_OK) {
        free(impl);
        return s;
    }
    const uint8_t *p = st->file.data;
    size_t size = st->file.size;
    json_t *root = NULL;
    if (size < 8) {
        s = lm_fail(LM_ERR_FORMAT, "%s: %zu bytes is too short for a safetensors file (need an 8-byte header length)",
                    path, size);
        goto done;
    }
    uint64_t hlen = 0;
    for (int b = 0; b < 8; b++) hlen |= (uint64_t)p[b] << (8 * b);
    if (hlen == 0) {
        s = lm_fail(LM_ERR_FORMAT, "%s: header length is 0", path);
        goto done;
    }
    if (hlen > ST_MAX_HEADER) {
        s = lm_fail(LM_ERR_FORMAT, "%s: header length %llu exceeds the limit of %llu bytes", path,
                    (unsigned long long)hlen, ST_MAX_HEADER);
        goto done;
    }
    if (hlen > size - 8) {
        s = lm_fail(LM_ERR_FORMAT, "%s: header length %llu exceeds the %zu bytes after the length field", path,
                    (unsigned long long)hlen, size - 8);
        goto done;
    }
    json_error_t err;
    /* jansson checks UTF-8, refuses NUL inside strings and trailing garbage, and refuses
     * duplicate keys with this flag, which is how duplicate tensor names are caught. */
    root = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &err);
    if (!root) {
        s = lm_fail(LM_ERR_FORMAT, "%s: header is not valid JSON: %s (header byte %d)", path, err.text, err.position);
        goto done;
    }
    s = parse_header(path, root, p + 8 + hlen, (uint64_t)(size - 8 - hlen), impl);
done:
    json_decref(root);
    if (s != LM_OK) {
        lm_safetensors_close(st);
        return s;
    }
    *out = st;
    return LM_OK;
}

void lm_safetensors_close(lm_safetensors *st) {
    if (!st) return;
    st_impl *impl = (st_impl *)st;
    for (size_t i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    for (size_t i = 0; i < st->n_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_values[i]);
    }
    free(st->meta_keys);
    free(st->meta_values);
    free(impl->by_name);
    lm_unmap_file(&st->file);
    free(impl);
}

const lm_st_tensor *lm_safetensors_find(const lm_safetensors *st, const char *name) {
    if (!st || !name) return NULL;
    const st_impl *impl = (const st_impl *)st;
    size_t lo = 0, hi = st->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, impl->by_name[mid]->name);
        if (c == 0) return impl->by_name[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *lm_safetensors_meta(const lm_safetensors *st, const char *key) {
    if (!st || !key) return NULL;
    for (size_t i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_values[i];
    return NULL;
}

/* ---- writers ------------------------------------------------------------------------- */

struct lm_st_writer {
    lm_atomic_file f;
    uint64_t total, written;
    int failed; /* a write failed: the temporary file's contents are unknown, commit must refuse */
};

/* Validates the specs and builds the 8-byte length, the header JSON and its space padding.
 * *out is malloc'd; *total gets the data section's size. */
static lm_status build_header(const char *path, const lm_st_spec *specs, size_t n, const char *const *meta,
                              size_t n_meta, char **out, size_t *out_len, uint64_t *total) {
    *out = NULL;
    if (n && !specs) return lm_fail(LM_ERR_ARG, "%s: %zu tensors but no specs", path, n);
    if (n_meta && !meta) return lm_fail(LM_ERR_ARG, "%s: %zu metadata pairs but no array", path, n_meta);
    lm_status s = LM_OK;
    json_t *root = json_object();
    if (!root) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    char *text = NULL;
    if (n_meta) {
        json_t *m = json_object();
        if (!m || json_object_set_new(root, ST_META_KEY, m)) {
            s = lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        for (size_t i = 0; i < n_meta; i++) {
            const char *k = meta[2 * i], *v = meta[2 * i + 1];
            if (!k || !v) {
                s = lm_fail(LM_ERR_ARG, "%s: metadata pair %zu has a NULL key or value", path, i);
                goto done;
            }
            if (json_object_get(m, k)) {
                s = lm_fail(LM_ERR_ARG, "%s: metadata key '%s' given twice", path, k);
                goto done;
            }
            json_t *jv = json_string(v);
            if (!jv || json_object_set_new(m, k, jv)) {
                s = lm_fail(LM_ERR_ARG, "%s: metadata key '%s': key or value is not valid UTF-8", path, k);
                goto done;
            }
        }
    }
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const lm_st_spec *sp = &specs[i];
        if (!sp->name) {
            s = lm_fail(LM_ERR_ARG, "%s: tensor %zu has no name", path, i);
            goto done;
        }
        if (strcmp(sp->name, ST_META_KEY) == 0 || json_object_get(root, sp->name)) {
            s = lm_fail(LM_ERR_ARG, "%s: tensor '%s': %s", path, sp->name,
                        strcmp(sp->name, ST_META_KEY) == 0 ? "name is reserved for metadata" : "name given twice");
            goto done;
        }
        if ((unsigned)sp->dtype >= LM_ST_DTYPE_COUNT) {
            s = lm_fail(LM_ERR_ARG, "%s: tensor '%s': dtype %d is not a safetensors dtype", path, sp->name, (int)sp->dtype);
            goto done;
        }
        if (sp->n_dims < 0 || sp->n_dims > LM_ST_MAX_DIMS) {
            s = lm_fail(LM_ERR_ARG, "%s: tensor '%s': n_dims %d, expected 0 to %d", path, sp->name, sp->n_dims,
                        LM_ST_MAX_DIMS);
            goto done;
        }
        uint64_t ne = 0;
        size_t nb = 0;
        int big = 0;
        for (int d = 0; d < sp->n_dims; d++) big |= sp->shape[d] > (uint64_t)INT64_MAX; /* JSON ints are signed */
        if (big || shape_bytes(sp->shape, sp->n_dims, k_st_dtypes[sp->dtype].size, &ne, &nb) ||
            (uint64_t)nb > (uint64_t)INT64_MAX - at) {
            s = lm_fail(LM_ERR_ARG, "%s: tensor '%s': byte size overflows", path, sp->name);
            goto done;
        }
        json_t *t = json_object(), *shape = json_array(), *offs = json_array();
        if (!t || !shape || !offs) {
            json_decref(t);
            json_decref(shape);
            json_decref(offs);
            s = lm_fail(LM_ERR_NOMEM, "%s: tensor '%s': out of memory", path, sp->name);
            goto done;
        }
        /* '|' rather than '||': every _new call must run, since each takes ownership even when it fails. */
        int bad = 0;
        for (int d = 0; d < sp->n_dims; d++) bad |= json_array_append_new(shape, json_integer((json_int_t)sp->shape[d]));
        bad |= json_array_append_new(offs, json_integer((json_int_t)at));
        bad |= json_array_append_new(offs, json_integer((json_int_t)(at + nb)));
        bad |= json_object_set_new(t, "dtype", json_string(k_st_dtypes[sp->dtype].name));
        bad |= json_object_set_new(t, "shape", shape);
        bad |= json_object_set_new(t, "data_offsets", offs);
        if (bad) {
            json_decref(t);
            s = lm_fail(LM_ERR_NOMEM, "%s: tensor '%s': out of memory", path, sp->name);
            goto done;
        }
        if (json_object_set_new(root, sp->name, t)) {
            s = lm_fail(LM_ERR_ARG, "%s: tensor '%s': name is not valid UTF-8", path, sp->name);
            goto done;
        }
        at += nb;
    }
    /* JSON_PRESERVE_ORDER keeps "__metadata__" first and the tensors in the caller's order. */
    text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) {
        s = lm_fail(LM_ERR_NOMEM, "%s: out of memory for the header", path);
        goto done;
    }
    size_t len = strlen(text), padded = len + (8 - len % 8) % 8; /* the data section starts 8-aligned */
    if (padded > ST_MAX_HEADER) {
        s = lm_fail(LM_ERR_RANGE, "%s: header of %zu bytes exceeds the safetensors limit of %llu", path, padded,
                    ST_MAX_HEADER);
        goto done;
    }
    char *buf = malloc(8 + padded);
    if (!buf) {
        s = lm_fail(LM_ERR_NOMEM, "%s: out of memory for the header", path);
        goto done;
    }
    for (int b = 0; b < 8; b++) buf[b] = (char)(uint8_t)((uint64_t)padded >> (8 * b));
    memcpy(buf + 8, text, len);
    memset(buf + 8 + len, ' ', padded - len);
    *out = buf;
    *out_len = 8 + padded;
    *total = at;
done:
    free(text);
    json_decref(root);
    return s;
}

lm_status lm_st_writer_open(lm_st_writer **out, const char *path, const lm_st_spec *specs, size_t n,
                            const char *const *meta, size_t n_meta) {
    *out = NULL;
    char *hdr = NULL;
    size_t hdr_len = 0;
    uint64_t total = 0;
    lm_status s = build_header(path, specs, n, meta, n_meta, &hdr, &hdr_len, &total);
    if (s != LM_OK) return s;
    lm_st_writer *w = calloc(1, sizeof *w);
    if (!w) {
        free(hdr);
        return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    }
    w->total = total;
    s = lm_atomic_open(&w->f, path);
    if (s == LM_OK) {
        s = lm_atomic_write(&w->f, hdr, hdr_len);
        if (s != LM_OK) lm_atomic_abort(&w->f);
    }
    free(hdr);
    if (s != LM_OK) {
        free(w);
        return s;
    }
    *out = w;
    return LM_OK;
}

lm_status lm_st_writer_write(lm_st_writer *w, const void *data, size_t nbytes) {
    if (!w) return lm_fail(LM_ERR_ARG, "safetensors writer: NULL writer");
    if (w->failed) return lm_fail(LM_ERR_ARG, "%s: write after an earlier failure", w->f.path);
    if (nbytes == 0) return LM_OK;
    if (!data) {
        w->failed = 1;
        return lm_fail(LM_ERR_ARG, "%s: write of %zu bytes from NULL", w->f.path, nbytes);
    }
    if ((uint64_t)nbytes > w->total - w->written) {
        w->failed = 1;
        return lm_fail(LM_ERR_ARG, "%s: writing %zu more bytes exceeds the declared data size (%llu of %llu written)",
                       w->f.path, nbytes, (unsigned long long)w->written, (unsigned long long)w->total);
    }
    lm_status s = lm_atomic_write(&w->f, data, nbytes);
    if (s != LM_OK) {
        w->failed = 1;
        return s;
    }
    w->written += nbytes;
    return LM_OK;
}

lm_status lm_st_writer_commit(lm_st_writer *w) {
    if (!w) return lm_fail(LM_ERR_ARG, "safetensors writer: NULL writer");
    lm_status s;
    if (w->failed || w->written != w->total) {
        s = lm_fail(LM_ERR_ARG, "%s: %llu of the %llu declared data bytes were written%s; nothing was saved", w->f.path,
                    (unsigned long long)w->written, (unsigned long long)w->total,
                    w->failed ? " before a failed write" : "");
        lm_atomic_abort(&w->f);
    } else {
        s = lm_atomic_commit(&w->f); /* removes the temporary file itself on failure */
    }
    free(w);
    return s;
}

void lm_st_writer_abort(lm_st_writer *w) {
    if (!w) return;
    lm_atomic_abort(&w->f);
    free(w);
}

lm_status lm_safetensors_write(const char *path, const lm_st_spec *specs, size_t n, const char *const *meta,
                               size_t n_meta) {
    /* Check the data pointers first, so a bad call leaves no temporary file behind. */
    for (size_t i = 0; specs && i < n; i++) {
        uint64_t ne = 0;
        size_t nb = 0;
        if ((unsigned)specs[i].dtype < LM_ST_DTYPE_COUNT && specs[i].n_dims >= 0 && specs[i].n_dims <= LM_ST_MAX_DIMS &&
            !shape_bytes(specs[i].shape, specs[i].n_dims, k_st_dtypes[specs[i].dtype].size, &ne, &nb) && nb &&
            !specs[i].data)
            return lm_fail(LM_ERR_ARG, "%s: tensor '%s' has no data", path, specs[i].name ? specs[i].name : "?");
    }
    lm_st_writer *w;
    lm_status s = lm_st_writer_open(&w, path, specs, n, meta, n_meta);
    if (s != LM_OK) return s;
    for (size_t i = 0; i < n; i++) {
        uint64_t ne = 0;
        size_t nb = 0;
        shape_bytes(specs[i].shape, specs[i].n_dims, k_st_dtypes[specs[i].dtype].size, &ne, &nb); /* checked by open */
        s = lm_st_writer_write(w, specs[i].data, nb);
        if (s != LM_OK) {
            lm_st_writer_abort(w);
            return s;
        }
    }
    return lm_st_writer_commit(w);
}
