/* test_gguf.c - GGUF reader: real files, exact values from an in-test writer, and every kind of broken file. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "lumen/format.h"

#include <stdint.h>
#include <unistd.h>

/* ---- a tiny GGUF writer ---------------------------------------------------------------- */

typedef struct buf {
    uint8_t *d;
    size_t n, cap;
} buf;

static void put(buf *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *d = realloc(b->d, cap);
        if (!d) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        b->d = d;
        b->cap = cap;
    }
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void set_le(uint8_t *p, uint64_t v, int bytes) {
    for (int k = 0; k < bytes; k++) p[k] = (uint8_t)(v >> (8 * k));
}
static void put_le(buf *b, uint64_t v, int bytes) {
    uint8_t t[8];
    set_le(t, v, bytes);
    put(b, t, (size_t)bytes);
}
static void put_u32(buf *b, uint32_t v) { put_le(b, v, 4); }
static void put_u64(buf *b, uint64_t v) { put_le(b, v, 8); }
static void put_f32(buf *b, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(b, u);
}
static void put_f64(buf *b, double f) {
    uint64_t u;
    memcpy(&u, &f, 8);
    put_u64(b, u);
}
static void put_str(buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void pad_to(buf *b, size_t align) {
    while (b->n % align) put_le(b, 0, 1);
}
/* Writes a key and its type; returns the offset of the type field. */
static size_t put_key(buf *b, const char *key, lm_gguf_type t, int *n_kv) {
    put_str(b, key);
    size_t at = b->n;
    put_u32(b, (uint32_t)t);
    (*n_kv)++;
    return at;
}

/* Offsets of the fields that the broken variants patch. */
typedef struct layout {
    size_t version, n_tensors, n_kv;
    size_t arch_len; /* length field of general.architecture's value */
    size_t u8_type;  /* type field of test.u8 */
    size_t align_type, align_val;
    size_t i16_key;       /* first byte of the key text "test.i16" */
    size_t str_arr_count; /* element count of test.str_arr */
    size_t i32_arr_elem;  /* element type of test.i32_arr */
    size_t i32_arr_count;
    size_t t_name_len[3], t_name[3], t_ndims[3], t_ne[3], t_type[3], t_off[3];
    size_t data_offset;
} layout;

#define ALIGN 64
static const float k_wa[12] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 2.5f, 3.0f, 3.5f, 4.0f, 4.5f};

/* A valid v3 file with every scalar type, string and numeric arrays, alignment 64 and three
 * tensors (F32 [4,3] at 0, Q8_0 [64,2] at 64, F16 [8] at 256) whose last byte is the file's. */
static void build_small(buf *b, layout *L) {
    int n_kv = 0;
    memset(L, 0, sizeof *L);
    put(b, "GGUF", 4);
    L->version = b->n;
    put_u32(b, 3);
    L->n_tensors = b->n;
    put_u64(b, 3);
    L->n_kv = b->n;
    put_u64(b, 0); /* patched below */

    put_key(b, "general.architecture", LM_GGUF_STRING, &n_kv);
    L->arch_len = b->n;
    put_str(b, "llama");
    L->align_type = put_key(b, "general.alignment", LM_GGUF_UINT32, &n_kv);
    L->align_val = b->n;
    put_u32(b, ALIGN);
    L->u8_type = put_key(b, "test.u8", LM_GGUF_UINT8, &n_kv);
    put_le(b, 200, 1);
    put_key(b, "test.i8", LM_GGUF_INT8, &n_kv);
    put_le(b, (uint8_t)-5, 1);
    put_key(b, "test.u16", LM_GGUF_UINT16, &n_kv);
    put_le(b, 60000, 2);
    L->i16_key = b->n + 8;
    put_key(b, "test.i16", LM_GGUF_INT16, &n_kv);
    put_le(b, (uint16_t)-30000, 2);
    put_key(b, "test.u32", LM_GGUF_UINT32, &n_kv);
    put_u32(b, 4000000000u);
    put_key(b, "test.i32", LM_GGUF_INT32, &n_kv);
    put_u32(b, (uint32_t)-2000000000);
    put_key(b, "test.u64", LM_GGUF_UINT64, &n_kv);
    put_u64(b, (1ull << 40) + 7);
    put_key(b, "test.i64", LM_GGUF_INT64, &n_kv);
    put_u64(b, (uint64_t)(-((1ll << 40) + 3)));
    put_key(b, "test.f32", LM_GGUF_FLOAT32, &n_kv);
    put_f32(b, 1.5f);
    put_key(b, "test.f64", LM_GGUF_FLOAT64, &n_kv);
    put_f64(b, 0.25);
    put_key(b, "test.big_f64", LM_GGUF_FLOAT64, &n_kv);
    put_f64(b, 1e300);
    put_key(b, "test.bool", LM_GGUF_BOOL, &n_kv);
    put_le(b, 1, 1);
    put_key(b, "test.str_arr", LM_GGUF_ARRAY, &n_kv);
    put_u32(b, LM_GGUF_STRING);
    L->str_arr_count = b->n;
    put_u64(b, 3);
    put_str(b, "a");
    put_str(b, "");
    put_str(b, "h\xc3\xa9llo");
    put_key(b, "test.i32_arr", LM_GGUF_ARRAY, &n_kv);
    L->i32_arr_elem = b->n;
    put_u32(b, LM_GGUF_INT32);
    L->i32_arr_count = b->n;
    put_u64(b, 3);
    put_u32(b, 1);
    put_u32(b, (uint32_t)-2);
    put_u32(b, 2147483647u);
    put_key(b, "test.f32_arr", LM_GGUF_ARRAY, &n_kv);
    put_u32(b, LM_GGUF_FLOAT32);
    put_u64(b, 2);
    put_f32(b, 0.5f);
    put_f32(b, -1.25f);
    put_key(b, "test.u64_arr", LM_GGUF_ARRAY, &n_kv);
    put_u32(b, LM_GGUF_UINT64);
    put_u64(b, 2);
    put_u64(b, UINT64_MAX);
    put_u64(b, 5);
    put_key(b, "test.empty_arr", LM_GGUF_ARRAY, &n_kv);
    put_u32(b, LM_GGUF_STRING);
    put_u64(b, 0);
    set_le(b->d + L->n_kv, (uint64_t)n_kv, 8);

    static const char *names[3] = {"w.a", "w.b", "w.c"};
    static const uint32_t ndims[3] = {2, 2, 1}, types[3] = {0, 8, 1};
    static const uint64_t ne[3][2] = {{4, 3}, {64, 2}, {8, 0}}, offs[3] = {0, 64, 256};
    for (int t = 0; t < 3; t++) {
        L->t_name_len[t] = b->n;
        L->t_name[t] = b->n + 8;
        put_str(b, names[t]);
        L->t_ndims[t] = b->n;
        put_u32(b, ndims[t]);
        L->t_ne[t] = b->n;
        for (uint32_t d = 0; d < ndims[t]; d++) put_u64(b, ne[t][d]);
        L->t_type[t] = b->n;
        put_u32(b, types[t]);
        L->t_off[t] = b->n;
        put_u64(b, offs[t]);
    }
    pad_to(b, ALIGN);
    L->data_offset = b->n;
    for (int k = 0; k < 12; k++) put_f32(b, k_wa[k]);
    pad_to(b, ALIGN);
    for (int k = 0; k < 4 * 34; k++) put_le(b, (uint8_t)(k * 7 + 1), 1); /* Q8_0: two rows of 2 blocks */
    pad_to(b, 256);
    for (int k = 0; k < 8; k++) put_le(b, lm_f32_to_f16((float)k - 3.0f), 2);
}

/* ---- helpers ----------------------------------------------------------------------------- */

static char g_path[512];

static void write_file(const char *path, const uint8_t *d, size_t n) {
    /* a fresh inode: rewriting a truncated one makes ext4 flush it on close (auto_da_alloc) */
    unlink(path);
    FILE *fp = fopen(path, "wb");
    if (!fp || (n && fwrite(d, 1, n, fp) != n) || fclose(fp) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

static int str_is(lm_gguf_str s, const char *c) { return s.len == strlen(c) && memcmp(s.ptr, c, s.len) == 0; }

/* Opens d[0..n) from g_path and expects failure with a message naming the file and containing
 * word (and alt, if given, as an accepted alternative). want == LM_OK means any error status. */
static void expect_bad_ex(const char *label, const uint8_t *d, size_t n, lm_status want, const char *word,
                          const char *alt) {
    write_file(g_path, d, n);
    lm_gguf *g = (lm_gguf *)1;
    lm_clear_error();
    lm_status st = lm_gguf_open(g_path, &g);
    const char *msg = lm_errmsg();
    if (getenv("TEST_GGUF_VERBOSE")) fprintf(stderr, "%-24s %s\n", label, msg);
    CHECKF(st != LM_OK, "%s: opened a broken file", label);
    CHECKF(g == NULL, "%s: out pointer not cleared", label);
    if (want != LM_OK)
        CHECKF(st == want, "%s: status %s, expected %s", label, lm_status_name(st), lm_status_name(want));
    CHECKF(strstr(msg, g_path) == msg, "%s: message does not start with the path: %s", label, msg);
    CHECKF(strstr(msg, word) || (alt && strstr(msg, alt)), "%s: message lacks '%s': %s", label, word, msg);
    if (st == LM_OK) lm_gguf_close(g);
}

static void expect_bad(const char *label, const uint8_t *d, size_t n, lm_status want, const char *word) {
    expect_bad_ex(label, d, n, want, word, NULL);
}

/* A copy of the small file with one little-endian field overwritten. */
static void bad_patch(const char *label, const buf *b, size_t at, uint64_t v, int bytes, lm_status want,
                      const char *word) {
    uint8_t *d = malloc(b->n);
    memcpy(d, b->d, b->n);
    set_le(d + at, v, bytes);
    expect_bad(label, d, b->n, want, word);
    free(d);
}

/* ---- the small written file --------------------------------------------------------------- */

static void check_small_values(const lm_gguf *g, const layout *L, size_t file_size) {
    uint64_t u64;
    uint32_t u32;
    float f;
    lm_gguf_str s;
    CHECK(g->version == 3);
    CHECK(g->n_kv == 19 && g->n_tensors == 3);
    CHECK(g->alignment == ALIGN);
    CHECK(g->data_offset == L->data_offset);
    CHECK(g->file.size == file_size);

    CHECK(lm_gguf_get_str(g, "general.architecture", &s) == LM_OK && str_is(s, "llama"));
    CHECK(lm_gguf_get_u32(g, "general.alignment", &u32) == LM_OK && u32 == 64);
    CHECK(lm_gguf_get_u32(g, "test.u8", &u32) == LM_OK && u32 == 200);
    CHECK(lm_gguf_get_u32(g, "test.u16", &u32) == LM_OK && u32 == 60000);
    CHECK(lm_gguf_get_u32(g, "test.u32", &u32) == LM_OK && u32 == 4000000000u);
    CHECK(lm_gguf_get_u64(g, "test.u64", &u64) == LM_OK && u64 == (1ull << 40) + 7);
    const lm_gguf_kv *kv = lm_gguf_find(g, "test.i8");
    CHECK(kv && kv->type == LM_GGUF_INT8 && kv->i == -5 && kv->n == 1);
    kv = lm_gguf_find(g, "test.i16");
    CHECK(kv && kv->type == LM_GGUF_INT16 && kv->i == -30000);
    kv = lm_gguf_find(g, "test.i32");
    CHECK(kv && kv->type == LM_GGUF_INT32 && kv->i == -2000000000);
    kv = lm_gguf_find(g, "test.i64");
    CHECK(kv && kv->type == LM_GGUF_INT64 && kv->i == -((1ll << 40) + 3));
    kv = lm_gguf_find(g, "test.bool");
    CHECK(kv && kv->type == LM_GGUF_BOOL && kv->u == 1);
    kv = lm_gguf_find(g, "test.f64");
    CHECK(kv && kv->type == LM_GGUF_FLOAT64 && kv->f == 0.25);
    CHECK(lm_gguf_get_f32(g, "test.f32", &f) == LM_OK && f == 1.5f);
    CHECK(lm_gguf_get_f32(g, "test.f64", &f) == LM_OK && f == 0.25f);

    /* getter errors name the file and the key */
    const char *msg;
    CHECK(lm_gguf_get_u32(g, "test.i8", &u32) == LM_ERR_FORMAT);
    msg = lm_errmsg();
    CHECKF(strstr(msg, g_path) == msg && strstr(msg, "'test.i8'") && strstr(msg, "-5"), "%s", msg);
    CHECK(lm_gguf_get_u32(g, "test.u64", &u32) == LM_ERR_FORMAT);
    msg = lm_errmsg();
    CHECKF(strstr(msg, g_path) == msg && strstr(msg, "'test.u64'"), "%s", msg);
    CHECK(lm_gguf_get_u64(g, "test.i64", &u64) == LM_ERR_FORMAT);
    CHECK(lm_gguf_get_u32(g, "test.bool", &u32) == LM_ERR_FORMAT);
    CHECK(lm_gguf_get_u32(g, "test.f32", &u32) == LM_ERR_FORMAT);
    msg = lm_errmsg();
    CHECKF(strstr(msg, "float32") && strstr(msg, "integer"), "%s", msg);
    CHECK(lm_gguf_get_f32(g, "test.u32", &f) == LM_ERR_FORMAT);
    CHECK(lm_gguf_get_f32(g, "test.big_f64", &f) == LM_ERR_FORMAT);
    CHECK(lm_gguf_get_str(g, "test.u8", &s) == LM_ERR_FORMAT);
    CHECK(lm_gguf_get_str(g, "no.such.key", &s) == LM_ERR_FORMAT);
    msg = lm_errmsg();
    CHECKF(strstr(msg, g_path) == msg && strstr(msg, "missing key 'no.such.key'"), "%s", msg);
    CHECK(lm_gguf_find(g, "no.such.key") == NULL);
    CHECK(lm_gguf_find(g, "test") == NULL);

    kv = lm_gguf_find(g, "test.str_arr");
    CHECK(kv && kv->type == LM_GGUF_ARRAY && kv->arr_type == LM_GGUF_STRING && kv->n == 3 && kv->arr_str);
    if (kv && kv->arr_str && kv->n == 3) {
        CHECK(str_is(kv->arr_str[0], "a"));
        CHECK(str_is(kv->arr_str[1], ""));
        CHECK(str_is(kv->arr_str[2], "h\xc3\xa9llo"));
    }
    kv = lm_gguf_find(g, "test.i32_arr");
    CHECK(kv && kv->arr_type == LM_GGUF_INT32 && kv->n == 3 && kv->arr_str == NULL);
    if (kv) {
        CHECK(lm_gguf_arr_i64(kv, 0) == 1 && lm_gguf_arr_i64(kv, 1) == -2 && lm_gguf_arr_i64(kv, 2) == 2147483647);
        CHECK(lm_gguf_arr_f64(kv, 1) == -2.0);
        CHECK(lm_gguf_arr_i64(kv, 3) == 0); /* out of range reads zero, not past the array */
    }
    kv = lm_gguf_find(g, "test.f32_arr");
    CHECK(kv && kv->arr_type == LM_GGUF_FLOAT32 && kv->n == 2);
    if (kv) CHECK(lm_gguf_arr_f64(kv, 0) == 0.5 && lm_gguf_arr_f64(kv, 1) == -1.25 && lm_gguf_arr_i64(kv, 1) == -1);
    kv = lm_gguf_find(g, "test.u64_arr");
    CHECK(kv && kv->arr_type == LM_GGUF_UINT64 && kv->n == 2);
    if (kv) CHECK(lm_gguf_arr_i64(kv, 0) == INT64_MAX && lm_gguf_arr_i64(kv, 1) == 5);
    kv = lm_gguf_find(g, "test.empty_arr");
    CHECK(kv && kv->arr_type == LM_GGUF_STRING && kv->n == 0);

    const lm_gguf_tensor *a = lm_gguf_find_tensor(g, "w.a"), *b = lm_gguf_find_tensor(g, "w.b"),
                         *c = lm_gguf_find_tensor(g, "w.c");
    CHECK(lm_gguf_find_tensor(g, "w.d") == NULL);
    CHECK(a && b && c);
    if (!a || !b || !c) return;
    CHECK(a->n_dims == 2 && a->ne[0] == 4 && a->ne[1] == 3 && a->ne[2] == 1 && a->ne[3] == 1);
    CHECK(a->ggml_type == 0 && a->dtype == LM_F32 && a->offset == 0 && a->nbytes == 48);
    CHECK((const uint8_t *)a->data == g->file.data + L->data_offset);
    float fa[12];
    memcpy(fa, a->data, sizeof fa);
    CHECK(memcmp(fa, k_wa, sizeof fa) == 0);
    CHECK(b->n_dims == 2 && b->ne[0] == 64 && b->ne[1] == 2 && b->ggml_type == 8 && b->dtype == LM_Q8_0);
    CHECK(b->offset == 64 && b->nbytes == 136);
    CHECK(b->nbytes == 2 * lm_dtype_row_bytes(LM_Q8_0, 64)); /* the ggml table agrees with lumen's dtypes */
    CHECK(((const uint8_t *)b->data)[0] == 1 && ((const uint8_t *)b->data)[135] == (uint8_t)(135 * 7 + 1));
    CHECK(c->n_dims == 1 && c->ne[0] == 8 && c->ne[1] == 1 && c->dtype == LM_F16 && c->offset == 256 &&
          c->nbytes == 16);
    CHECK((const uint8_t *)c->data + c->nbytes == g->file.data + g->file.size);
    const uint8_t *cp = c->data;
    CHECK(lm_f16_to_f32((uint16_t)(cp[14] | cp[15] << 8)) == 4.0f);
}

static void test_small(void) {
    buf b = {0};
    layout L;
    build_small(&b, &L);
    const lm_status FMT = LM_ERR_FORMAT, UNS = LM_ERR_UNSUPPORTED;

    write_file(g_path, b.d, b.n);
    lm_gguf *g = NULL;
    lm_status st = lm_gguf_open(g_path, &g);
    CHECKF(st == LM_OK, "small file: %s", lm_errmsg());
    if (st == LM_OK) check_small_values(g, &L, b.n);
    lm_gguf_close(g);
    lm_gguf_close(NULL);

    /* v2 has the same layout for little-endian files */
    set_le(b.d + L.version, 2, 4);
    write_file(g_path, b.d, b.n);
    st = lm_gguf_open(g_path, &g);
    CHECKF(st == LM_OK && g->version == 2, "v2: %s", lm_errmsg());
    lm_gguf_close(g);
    set_le(b.d + L.version, 3, 4);

    /* truncated at every length, including 0 */
    for (size_t n = 0; n < b.n; n++) {
        char label[64];
        snprintf(label, sizeof label, "truncated to %zu bytes", n);
        expect_bad_ex(label, b.d, n, FMT, "truncated", "past the end");
    }

    uint8_t *d = malloc(b.n);
    memcpy(d, b.d, b.n);
    d[0] = 'X';
    expect_bad("bad magic", d, b.n, FMT, "magic");
    free(d);

    bad_patch("version 1", &b, L.version, 1, 4, UNS, "version 1");
    bad_patch("version 4", &b, L.version, 4, 4, UNS, "version 4");
    bad_patch("big-endian", &b, L.version, 0x03000000u, 4, UNS, "big-endian");
    bad_patch("absurd n_kv", &b, L.n_kv, 1ull << 60, 8, FMT, "metadata keys");
    bad_patch("max n_kv", &b, L.n_kv, UINT64_MAX, 8, FMT, "metadata keys");
    bad_patch("absurd n_tensors", &b, L.n_tensors, 1ull << 60, 8, FMT, "tensors");
    bad_patch("n_kv one too many", &b, L.n_kv, 20, 8, FMT, "tensor #0");
    bad_patch("n_tensors one too many", &b, L.n_tensors, 4, 8, FMT, "tensor");
    bad_patch("string past end", &b, L.arch_len, 1ull << 40, 8, FMT, "truncated");
    bad_patch("string length max", &b, L.arch_len, UINT64_MAX, 8, FMT, "'general.architecture'");
    bad_patch("unknown kv type", &b, L.u8_type, 13, 4, FMT, "key 'test.u8' has unknown value type 13");
    bad_patch("unknown kv type max", &b, L.u8_type, UINT32_MAX, 4, FMT, "unknown value type");
    bad_patch("unknown array type", &b, L.i32_arr_elem, 13, 4, FMT, "unknown array element type 13");
    bad_patch("absurd string array", &b, L.str_arr_count, 1ull << 61, 8, FMT, "'test.str_arr'");
    bad_patch("absurd i32 array", &b, L.i32_arr_count, UINT64_MAX / 2, 8, FMT, "truncated");
    bad_patch("duplicate key", &b, L.i16_key + 5, 'u', 1, FMT, "duplicate key 'test.u16'");
    bad_patch("empty key", &b, L.arch_len - 4 - 8 - 20, 0, 8, FMT, "empty name");
    bad_patch("long key", &b, L.arch_len - 4 - 8 - 20, 70000, 8, FMT, "65535");
    bad_patch("alignment 0", &b, L.align_val, 0, 4, FMT, "power of two");
    bad_patch("alignment 3", &b, L.align_val, 3, 4, FMT, "power of two");
    bad_patch("alignment type", &b, L.align_type, LM_GGUF_INT32, 4, FMT, "expected uint32");

    bad_patch("duplicate tensor", &b, L.t_name[1] + 2, 'a', 1, FMT, "duplicate tensor name 'w.a'");
    bad_patch("empty tensor name", &b, L.t_name_len[2], 0, 8, FMT, "empty name");
    bad_patch("n_dims 0", &b, L.t_ndims[0], 0, 4, FMT, "tensor 'w.a' has n_dims 0");
    bad_patch("n_dims 5", &b, L.t_ndims[1], 5, 4, FMT, "tensor 'w.b' has n_dims 5");
    bad_patch("ne 0", &b, L.t_ne[0] + 8, 0, 8, FMT, "ne[1] = 0");
    {
        uint8_t *e = malloc(b.n);
        memcpy(e, b.d, b.n);
        set_le(e + L.t_ne[0], 1ull << 40, 8);
        set_le(e + L.t_ne[0] + 8, 1ull << 40, 8);
        expect_bad("element count overflow", e, b.n, FMT, "overflow");
        free(e);
    }
    bad_patch("element count > int64", &b, L.t_ne[2], 1ull << 63, 8, FMT, "overflow");
    bad_patch("ne past the file", &b, L.t_ne[2], 1ull << 40, 8, FMT, "past the end");
    bad_patch("block multiple", &b, L.t_ne[1], 48, 8, FMT, "block size 32");
    bad_patch("unknown ggml type", &b, L.t_type[1], 99, 4, FMT, "tensor 'w.b' has unknown ggml type 99");
    bad_patch("removed ggml type", &b, L.t_type[1], 4, 4, FMT, "unknown ggml type 4");
    bad_patch("misaligned offset", &b, L.t_off[1], 32, 8, FMT, "alignment 64");
    bad_patch("offset past end", &b, L.t_off[2], 1u << 20, 8, FMT, "past the end");
    bad_patch("offset near 2^64", &b, L.t_off[2], UINT64_MAX & ~(uint64_t)63, 8, FMT, "past the end");
    bad_patch("overlap same offset", &b, L.t_off[1], 0, 8, FMT, "overlap");
    bad_patch("overlap partial", &b, L.t_off[2], 192, 8, FMT, "overlap");
    {
        /* a tensor type lumen cannot compute with still parses, marked LM_DTYPE_COUNT: Q4_1 has
         * 20-byte blocks of 32, so w.b [64,2] takes 80 bytes and stays inside its slot */
        uint8_t *e = malloc(b.n);
        memcpy(e, b.d, b.n);
        set_le(e + L.t_type[1], 3, 4);
        write_file(g_path, e, b.n);
        st = lm_gguf_open(g_path, &g);
        CHECKF(st == LM_OK, "Q4_1 tensor: %s", lm_errmsg());
        if (st == LM_OK) {
            const lm_gguf_tensor *t = lm_gguf_find_tensor(g, "w.b");
            CHECK(t && t->dtype == LM_DTYPE_COUNT && t->nbytes == 80 &&
                  strcmp(lm_ggml_type_name(t->ggml_type), "Q4_1") == 0);
        }
        lm_gguf_close(g);
        free(e);
    }

    /* random byte mutations: any outcome but a crash, a leak or a message without the path */
    lm_rng rng;
    lm_rng_seed(&rng, 1234);
    uint8_t *m = malloc(b.n);
    int opened = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(m, b.d, b.n);
        int flips = 1 + (int)(lm_rng_u32(&rng) % 4);
        for (int k = 0; k < flips; k++) {
            size_t at = lm_rng_u32(&rng) % (uint32_t)L.data_offset; /* the header is what gets parsed */
            uint32_t r = lm_rng_u32(&rng);
            m[at] = (r & 0x100) ? (uint8_t)r : (uint8_t)(m[at] ^ (1u << (r % 8)));
        }
        write_file(g_path, m, b.n);
        st = lm_gguf_open(g_path, &g);
        if (st == LM_OK) {
            opened++;
            for (uint64_t t = 0; t < g->n_tensors; t++) {
                const lm_gguf_tensor *x = &g->tensors[t];
                CHECK((const uint8_t *)x->data >= g->file.data + g->data_offset &&
                      (const uint8_t *)x->data + x->nbytes <= g->file.data + g->file.size);
            }
            lm_gguf_close(g);
        } else {
            CHECKF(strstr(lm_errmsg(), g_path) == lm_errmsg(), "mutation %d: %s", it, lm_errmsg());
        }
    }
    fprintf(stderr, "mutations: %d of 3000 still opened\n", opened);
    free(m);
    free(b.d);
}

/* Arrays of arrays: kept as LM_GGUF_ARRAY elements without accessors, and skipped correctly. */
static void test_nested(void) {
    buf b = {0};
    int n_kv = 0;
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, 0);
    put_u64(&b, 3);
    put_key(&b, "a.nested", LM_GGUF_ARRAY, &n_kv);
    size_t first_elem;
    put_u32(&b, LM_GGUF_ARRAY);
    put_u64(&b, 3);
    first_elem = b.n;
    put_u32(&b, LM_GGUF_INT32);
    put_u64(&b, 2);
    put_u32(&b, 1);
    put_u32(&b, 2);
    put_u32(&b, LM_GGUF_STRING);
    put_u64(&b, 2);
    put_str(&b, "xy");
    put_str(&b, "");
    put_u32(&b, LM_GGUF_ARRAY); /* [[true]] */
    put_u64(&b, 1);
    put_u32(&b, LM_GGUF_BOOL);
    put_u64(&b, 1);
    put_le(&b, 1, 1);
    put_key(&b, "a.after", LM_GGUF_UINT32, &n_kv);
    put_u32(&b, 77);
    put_key(&b, "a.last", LM_GGUF_STRING, &n_kv);
    put_str(&b, "end");

    write_file(g_path, b.d, b.n);
    lm_gguf *g = NULL;
    lm_status st = lm_gguf_open(g_path, &g);
    CHECKF(st == LM_OK, "nested arrays: %s", lm_errmsg());
    if (st == LM_OK) {
        const lm_gguf_kv *kv = lm_gguf_find(g, "a.nested");
        CHECK(kv && kv->type == LM_GGUF_ARRAY && kv->arr_type == LM_GGUF_ARRAY && kv->n == 3);
        if (kv) {
            CHECK(kv->arr_data == g->file.data + first_elem && kv->arr_str == NULL);
            CHECK(lm_gguf_arr_i64(kv, 0) == 0 && lm_gguf_arr_f64(kv, 0) == 0.0);
        }
        uint32_t v;
        lm_gguf_str s;
        CHECK(lm_gguf_get_u32(g, "a.after", &v) == LM_OK && v == 77);
        CHECK(lm_gguf_get_str(g, "a.last", &s) == LM_OK && str_is(s, "end"));
        CHECK(g->n_tensors == 0 && g->tensors == NULL);
    }
    lm_gguf_close(g);
    for (size_t n = 0; n < b.n; n++) expect_bad("nested truncated", b.d, n, LM_ERR_FORMAT, "truncated");

    /* depth 40: legal in principle, but only hostile files nest like this */
    buf deep = {0};
    n_kv = 0;
    put(&deep, "GGUF", 4);
    put_u32(&deep, 3);
    put_u64(&deep, 0);
    put_u64(&deep, 1);
    put_key(&deep, "a.deep", LM_GGUF_ARRAY, &n_kv);
    for (int k = 0; k < 40; k++) {
        put_u32(&deep, LM_GGUF_ARRAY);
        put_u64(&deep, 1);
    }
    put_u32(&deep, LM_GGUF_UINT8);
    put_u64(&deep, 1);
    put_le(&deep, 9, 1);
    expect_bad("deep nesting", deep.d, deep.n, LM_ERR_FORMAT, "nested deeper");
    free(deep.d);
    free(b.d);
}

/* ---- real files ----------------------------------------------------------------------------- */

static lm_gguf *open_asset(const char *rel) {
    char buf[1024];
    const char *path = check_asset(rel, buf, sizeof buf);
    if (!path) return NULL;
    lm_gguf *g = NULL;
    lm_status st = lm_gguf_open(path, &g);
    CHECKF(st == LM_OK, "%s: %s", rel, lm_errmsg());
    return g;
}

static uint32_t get_u32_or(const lm_gguf *g, const char *key) {
    uint32_t v = 0xDEADBEEF;
    CHECKF(lm_gguf_get_u32(g, key, &v) == LM_OK, "%s", lm_errmsg());
    return v;
}

static float tensor_f32(const lm_gguf_tensor *t, size_t i) {
    float f;
    memcpy(&f, (const uint8_t *)t->data + 4 * i, 4);
    return f;
}

static int has_shape(const lm_gguf *g, const char *name, uint32_t ggml_type, uint64_t ne0, uint64_t ne1) {
    const lm_gguf_tensor *t = lm_gguf_find_tensor(g, name);
    if (!t) return 0;
    uint32_t nd = ne1 ? 2 : 1;
    return t->n_dims == nd && t->ne[0] == ne0 && t->ne[1] == (ne1 ? ne1 : 1) && t->ggml_type == ggml_type;
}

static int tests_run_real = 0;

static void test_stories(void) {
    lm_gguf *g = open_asset("models/stories260K/stories260K.gguf");
    if (!g) return;
    tests_run_real++;
    lm_gguf_str s;
    float f;
    CHECK(g->version == 3 && g->n_tensors == 48 && g->n_kv == 19);
    CHECK(g->alignment == 32 && g->data_offset == 14176);
    CHECK(lm_gguf_get_str(g, "general.architecture", &s) == LM_OK && str_is(s, "llama"));
    CHECK(lm_gguf_get_str(g, "tokenizer.ggml.model", &s) == LM_OK && str_is(s, "llama"));
    CHECK(get_u32_or(g, "llama.context_length") == 2048);
    CHECK(get_u32_or(g, "llama.embedding_length") == 64);
    CHECK(get_u32_or(g, "llama.feed_forward_length") == 172);
    CHECK(get_u32_or(g, "llama.attention.head_count") == 8);
    CHECK(get_u32_or(g, "llama.attention.head_count_kv") == 4);
    CHECK(get_u32_or(g, "llama.block_count") == 5);
    CHECK(get_u32_or(g, "llama.rope.dimension_count") == 8);
    CHECK(get_u32_or(g, "tokenizer.ggml.padding_token_id") == 4294967295u);
    CHECK(lm_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f) == LM_OK && f == 1e-5f);
    CHECK(lm_gguf_find(g, "llama.rope.freq_base") == NULL);
    const lm_gguf_kv *tok = lm_gguf_find(g, "tokenizer.ggml.tokens");
    CHECK(tok && tok->arr_type == LM_GGUF_STRING && tok->n == 512);
    if (tok && tok->n == 512) {
        CHECK(str_is(tok->arr_str[0], "<unk>") && str_is(tok->arr_str[1], "<s>") && str_is(tok->arr_str[2], "</s>"));
        CHECK(str_is(tok->arr_str[13], "<0x0A>") && str_is(tok->arr_str[511], "\xe2\x80\x8a"));
    }
    const lm_gguf_kv *sc = lm_gguf_find(g, "tokenizer.ggml.scores");
    CHECK(sc && sc->arr_type == LM_GGUF_FLOAT32 && sc->n == 512 && lm_gguf_arr_f64(sc, 511) == -252.0);
    const lm_gguf_kv *tt = lm_gguf_find(g, "tokenizer.ggml.token_type");
    CHECK(tt && tt->arr_type == LM_GGUF_INT32 && lm_gguf_arr_i64(tt, 0) == 2 && lm_gguf_arr_i64(tt, 3) == 6 &&
          lm_gguf_arr_i64(tt, 511) == 1);

    for (uint64_t k = 0; k < g->n_tensors; k++) CHECK(g->tensors[k].ggml_type == 0 && g->tensors[k].dtype == LM_F32);
    CHECK(has_shape(g, "token_embd.weight", 0, 64, 512));
    CHECK(has_shape(g, "output.weight", 0, 64, 512));
    CHECK(has_shape(g, "output_norm.weight", 0, 64, 0));
    CHECK(has_shape(g, "blk.0.attn_k.weight", 0, 64, 32));
    CHECK(has_shape(g, "blk.0.ffn_down.weight", 0, 172, 64));
    CHECK(has_shape(g, "blk.4.ffn_up.weight", 0, 64, 172));
    const lm_gguf_tensor *t = lm_gguf_find_tensor(g, "token_embd.weight");
    if (t) {
        CHECK(t->offset == 0 && t->nbytes == 131072);
        CHECK(tensor_f32(t, 0) == -0.29474878311157227f && tensor_f32(t, 1) == 0.5618956089019775f);
    }
    t = lm_gguf_find_tensor(g, "output_norm.weight");
    if (t) CHECK(t->offset == 131072 && tensor_f32(t, 0) == 2.4583089351654053f);
    t = lm_gguf_find_tensor(g, "blk.4.ffn_norm.weight");
    if (t) {
        CHECK(t->offset == 1170944 && tensor_f32(t, 1) == 0.9257742166519165f);
        CHECK((const uint8_t *)t->data + t->nbytes == g->file.data + g->file.size);
    }
    lm_gguf_close(g);
}

static void test_llama_tiny(void) {
    lm_gguf *g = open_asset("models/llama-2-tiny-random/llama-2-tiny-random.gguf");
    if (!g) return;
    tests_run_real++;
    lm_gguf_str s;
    float f;
    CHECK(g->version == 3 && g->n_tensors == 12 && g->n_kv == 18 && g->data_offset == 724416);
    CHECK(lm_gguf_get_str(g, "general.name", &s) == LM_OK && str_is(s, "LLaMA v2"));
    CHECK(get_u32_or(g, "llama.context_length") == 4096);
    CHECK(get_u32_or(g, "llama.embedding_length") == 8);
    CHECK(get_u32_or(g, "llama.block_count") == 1);
    CHECK(get_u32_or(g, "llama.feed_forward_length") == 32);
    CHECK(get_u32_or(g, "llama.rope.dimension_count") == 4);
    CHECK(get_u32_or(g, "llama.attention.head_count") == 2);
    CHECK(get_u32_or(g, "llama.attention.head_count_kv") == 2);
    CHECK(get_u32_or(g, "general.file_type") == 1);
    CHECK(lm_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f) == LM_OK && f == 1e-5f);
    const lm_gguf_kv *tok = lm_gguf_find(g, "tokenizer.ggml.tokens");
    CHECK(tok && tok->n == 32000 && tok->arr_str);
    if (tok && tok->n == 32000) CHECK(str_is(tok->arr_str[31999], "\xe7\xbb\x99") && str_is(tok->arr_str[1], "<s>"));
    const lm_gguf_kv *sc = lm_gguf_find(g, "tokenizer.ggml.scores");
    CHECK(sc && sc->n == 32000 && lm_gguf_arr_f64(sc, 31999) == -31740.0);

    CHECK(has_shape(g, "token_embd.weight", 1, 8, 32000));
    CHECK(has_shape(g, "output.weight", 1, 8, 32000));
    CHECK(has_shape(g, "blk.0.ffn_gate.weight", 1, 8, 32));
    CHECK(has_shape(g, "blk.0.ffn_down.weight", 1, 32, 8));
    CHECK(has_shape(g, "blk.0.attn_norm.weight", 0, 8, 0));
    CHECK(has_shape(g, "output_norm.weight", 0, 8, 0));
    const lm_gguf_tensor *t = lm_gguf_find_tensor(g, "token_embd.weight");
    if (t) CHECK(t->dtype == LM_F16 && t->nbytes == 512000 && t->offset == 0);
    t = lm_gguf_find_tensor(g, "blk.0.attn_q.weight");
    if (t) {
        const uint8_t *p = t->data;
        CHECK(t->offset == 512000 && lm_f16_to_f32((uint16_t)(p[0] | p[1] << 8)) == 0.024261474609375f);
    }
    t = lm_gguf_find_tensor(g, "output_norm.weight");
    if (t) CHECK(t->dtype == LM_F32 && t->offset == 514112 && tensor_f32(t, 7) == 1.0f);
    t = lm_gguf_find_tensor(g, "output.weight");
    if (t) CHECK(t->offset == 514144 && (const uint8_t *)t->data + t->nbytes == g->file.data + g->file.size);
    lm_gguf_close(g);
}

static void test_vocab_files(void) {
    lm_gguf *g = open_asset("tokenizers/llama-spm/ggml-vocab-llama-spm.gguf");
    if (g) {
        tests_run_real++;
        lm_gguf_str s;
        CHECK(g->n_tensors == 0 && g->n_kv == 22);
        /* no tensors: the data section would start past the unpadded end of the file */
        CHECK(g->data_offset == 723872 && g->file.size == 723869);
        CHECK(lm_gguf_get_str(g, "tokenizer.ggml.pre", &s) == LM_OK && str_is(s, "default"));
        CHECK(get_u32_or(g, "llama.vocab_size") == 32000);
        const lm_gguf_kv *kv = lm_gguf_find(g, "tokenizer.ggml.add_bos_token");
        CHECK(kv && kv->type == LM_GGUF_BOOL && kv->u == 1);
        kv = lm_gguf_find(g, "tokenizer.ggml.add_eos_token");
        CHECK(kv && kv->type == LM_GGUF_BOOL && kv->u == 0);
        kv = lm_gguf_find(g, "tokenizer.ggml.tokens");
        CHECK(kv && kv->n == 32000 && kv->arr_str && str_is(kv->arr_str[100], "<0x61>"));
        lm_gguf_close(g);
    }
    g = open_asset("tokenizers/gpt2/ggml-vocab-gpt-2.gguf");
    if (g) {
        tests_run_real++;
        float f;
        CHECK(g->n_tensors == 0 && g->n_kv == 16);
        CHECK(get_u32_or(g, "tokenizer.ggml.bos_token_id") == 50256);
        CHECK(get_u32_or(g, "gpt2.context_length") == 1024);
        CHECK(lm_gguf_get_f32(g, "gpt2.attention.layer_norm_epsilon", &f) == LM_OK && f == 1e-5f);
        const lm_gguf_kv *kv = lm_gguf_find(g, "tokenizer.ggml.tokens");
        CHECK(kv && kv->n == 50257 && kv->arr_str);
        if (kv && kv->n == 50257)
            CHECK(str_is(kv->arr_str[0], "!") && str_is(kv->arr_str[100], "\xc2\xa7") &&
                  str_is(kv->arr_str[50256], "<|endoftext|>"));
        kv = lm_gguf_find(g, "tokenizer.ggml.merges");
        CHECK(kv && kv->arr_type == LM_GGUF_STRING && kv->n == 50000);
        if (kv && kv->n == 50000)
            CHECK(str_is(kv->arr_str[0], "\xc4\xa0 t") && str_is(kv->arr_str[49999], "\xc4\xa0g azed"));
        lm_gguf_close(g);
    }
}

static int cmp_size_desc(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Truncates a copy of a real file at many lengths, longest first so that each step is one
 * truncate() rather than a rewrite. Every prefix must fail cleanly. */
static void test_truncated_real(const char *rel, size_t dense_step) {
    char abuf[1024];
    const char *src = check_asset(rel, abuf, sizeof abuf);
    if (!src) return;
    char *data;
    size_t size;
    if (lm_read_file(src, &data, &size) != LM_OK) {
        CHECKF(0, "%s", lm_errmsg());
        return;
    }
    write_file(g_path, (const uint8_t *)data, size);
    free(data);

    size_t dense = size < 8192 ? size : 8192;
    size_t cap = dense / dense_step + 1 + 400, n = 0;
    size_t *lens = malloc(cap * sizeof *lens);
    for (size_t k = 0; k < dense; k += dense_step) lens[n++] = k;
    lm_rng rng;
    lm_rng_seed(&rng, size);
    for (int k = 0; k < 300; k++) lens[n++] = dense + (size - dense) / 300 * (size_t)k;
    for (int k = 0; k < 90; k++) lens[n++] = ((size_t)lm_rng_u32(&rng) * 65536 + lm_rng_u32(&rng) % 65536) % size;
    lens[n++] = size - 1;
    qsort(lens, n, sizeof *lens, cmp_size_desc);

    lm_gguf *g = NULL;
    CHECKF(lm_gguf_open(g_path, &g) == LM_OK, "%s copy: %s", rel, lm_errmsg());
    lm_gguf_close(g);
    int bad = 0;
    for (size_t k = 0; k < n; k++) {
        if (truncate(g_path, (off_t)lens[k]) != 0) {
            CHECKF(0, "truncate %s", g_path);
            break;
        }
        g = NULL;
        lm_status st = lm_gguf_open(g_path, &g);
        const char *msg = lm_errmsg();
        int ok = st == LM_ERR_FORMAT && g == NULL && strstr(msg, g_path) == msg &&
                 (strstr(msg, "truncated") || strstr(msg, "past the end"));
        if (!ok && bad++ < 5) CHECKF(0, "%s truncated to %zu: status %s: %s", rel, lens[k], lm_status_name(st), msg);
        if (st == LM_OK) lm_gguf_close(g);
    }
    CHECKF(bad == 0, "%s: %d truncations misbehaved", rel, bad);
    free(lens);
}

int main(void) {
    snprintf(g_path, sizeof g_path, "%s/test_gguf_%ld.gguf", check_tmpdir(), (long)getpid());
    double t0 = lm_now();

    test_small();
    test_nested();
    test_stories();
    test_llama_tiny();
    test_vocab_files();
    test_truncated_real("models/stories260K/stories260K.gguf", 1);
    test_truncated_real("models/llama-2-tiny-random/llama-2-tiny-random.gguf", 3);
    test_truncated_real("tokenizers/llama-spm/ggml-vocab-llama-spm.gguf", 5);
    test_truncated_real("tokenizers/gpt2/ggml-vocab-gpt-2.gguf", 7);
    {
        /* a missing file is an I/O error naming the path */
        lm_gguf *g = (lm_gguf *)1;
        char missing[600];
        snprintf(missing, sizeof missing, "%s.missing", g_path);
        CHECK(lm_gguf_open(missing, &g) == LM_ERR_IO && g == NULL && strstr(lm_errmsg(), missing));
    }
    unlink(g_path);

    CHECK(strcmp(lm_gguf_type_name(LM_GGUF_FLOAT64), "float64") == 0);
    CHECK(strcmp(lm_gguf_type_name((lm_gguf_type)99), "unknown") == 0);
    CHECK(strcmp(lm_ggml_type_name(30), "BF16") == 0 && strcmp(lm_ggml_type_name(35), "TQ2_0") == 0);
    CHECK(strcmp(lm_ggml_type_name(5), "unknown") == 0 && strcmp(lm_ggml_type_name(UINT32_MAX), "unknown") == 0);

    fprintf(stderr, "test_gguf: %.2f s\n", lm_now() - t0);
    int rc = check_result();
    if (rc == 0 && tests_run_real == 0) {
        fprintf(stderr, "SKIP: real GGUF assets absent; only the written files were tested\n");
        return CHECK_SKIP;
    }
    return rc;
}
