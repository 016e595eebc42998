/* test_safetensors.c - safetensors reader, writers and HF shard sets: a real file, round trips, every kind of broken file. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "lumen/format.h"

#include <dirent.h>
#include <stdint.h>
#include <unistd.h>

static char g_dir[512]; /* this run's scratch directory under LUMEN_TMP */

static const char *tpath(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_dir, name);
    return buf;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp || (n && fwrite(p, 1, n, fp) != n) || fclose(fp) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

static uint8_t *read_bytes(const char *path, size_t *n) {
    char *p = NULL;
    if (lm_read_file(path, &p, n) != LM_OK) {
        fprintf(stderr, "cannot read %s: %s\n", path, lm_errmsg());
        exit(1);
    }
    return (uint8_t *)p;
}

/* A safetensors file from raw parts: the length field (the header's true length unless hlen
 * is given), the header text, and data_len zero bytes. */
#define TRUE_LEN UINT64_MAX
static void make_raw(const char *path, uint64_t hlen, const char *header, size_t data_len) {
    size_t hl = strlen(header), n = 8 + hl + data_len;
    uint8_t *b = calloc(1, n);
    if (!b) exit(1);
    if (hlen == TRUE_LEN) hlen = hl;
    for (int k = 0; k < 8; k++) b[k] = (uint8_t)(hlen >> (8 * k));
    memcpy(b + 8, header, hl);
    write_bytes(path, b, n);
    free(b);
}

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Number of leftover temporary files (NAME.tmp.PID) in the scratch directory. */
static int count_tmp_files(void) {
    DIR *d = opendir(g_dir);
    int n = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

/* Opening must fail, leave *out NULL, and name the file (and `want`, if given) in the message.
 * ST_SHOW=1 in the environment prints every message, to read them. */
static void expect_bad(const char *path, const char *label, const char *want) {
    lm_safetensors *st = (lm_safetensors *)&st; /* any non-NULL value: open must reset it */
    lm_status s = lm_safetensors_open(path, &st);
    CHECKF(s != LM_OK, "%s: opened a broken file", label);
    CHECKF(st == NULL, "%s: *out not NULL on failure", label);
    CHECKF(strstr(lm_errmsg(), path) != NULL, "%s: message does not name the file: %s", label, lm_errmsg());
    if (getenv("ST_SHOW")) fprintf(stderr, "[%s] %s\n", label, lm_errmsg());
    if (want) CHECKF(strstr(lm_errmsg(), want) != NULL, "%s: message lacks '%s': %s", label, want, lm_errmsg());
    if (s == LM_OK) lm_safetensors_close(st);
}

static float get_f32(const lm_st_tensor *t, size_t i) {
    float v;
    memcpy(&v, (const uint8_t *)t->data + 4 * i, 4);
    return v;
}

/* ---- dtype helpers -------------------------------------------------------------------- */

static void test_dtypes(void) {
    static const struct {
        lm_st_dtype t;
        const char *name;
        size_t size;
    } k[] = {{LM_ST_BOOL, "BOOL", 1}, {LM_ST_U8, "U8", 1},       {LM_ST_I8, "I8", 1},     {LM_ST_I16, "I16", 2},
             {LM_ST_U16, "U16", 2},   {LM_ST_F16, "F16", 2},     {LM_ST_BF16, "BF16", 2}, {LM_ST_I32, "I32", 4},
             {LM_ST_U32, "U32", 4},   {LM_ST_F32, "F32", 4},     {LM_ST_F64, "F64", 8},   {LM_ST_I64, "I64", 8},
             {LM_ST_U64, "U64", 8},   {LM_ST_F8_E4M3, "F8_E4M3", 1}, {LM_ST_F8_E5M2, "F8_E5M2", 1}};
    CHECK(sizeof k / sizeof k[0] == LM_ST_DTYPE_COUNT);
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        CHECKF(strcmp(lm_st_dtype_name(k[i].t), k[i].name) == 0, "%s", k[i].name);
        CHECKF(lm_st_dtype_size(k[i].t) == k[i].size, "%s", k[i].name);
    }
    CHECK(lm_st_to_dtype(LM_ST_F32) == LM_F32);
    CHECK(lm_st_to_dtype(LM_ST_F16) == LM_F16);
    CHECK(lm_st_to_dtype(LM_ST_BF16) == LM_BF16);
    CHECK(lm_st_to_dtype(LM_ST_I32) == LM_DTYPE_COUNT);
    CHECK(lm_st_to_dtype(LM_ST_DTYPE_COUNT) == LM_DTYPE_COUNT);
    CHECK(strcmp(lm_st_dtype_name(LM_ST_DTYPE_COUNT), "unknown") == 0);
    CHECK(lm_st_dtype_size(LM_ST_DTYPE_COUNT) == 0);
}

/* ---- a real Hugging Face file ----------------------------------------------------------- */

static void check_gpt2(const lm_safetensors *st) {
    CHECK(st->n_tensors == 64);
    CHECK(lm_safetensors_meta(st, "format") && strcmp(lm_safetensors_meta(st, "format"), "pt") == 0);
    CHECK(lm_safetensors_meta(st, "absent") == NULL);
    CHECK(strcmp(st->tensors[0].name, "transformer.h.0.attn.c_attn.bias") == 0); /* header order is kept */
    const lm_st_tensor *wte = lm_safetensors_find(st, "transformer.wte.weight");
    CHECK(wte != NULL);
    if (wte) {
        CHECK(wte->dtype == LM_ST_F32 && wte->n_dims == 2 && wte->shape[0] == 1000 && wte->shape[1] == 32);
        CHECK(wte->n_elements == 32000 && wte->nbytes == 128000);
        /* Expected values printed by hand with Python (safetensors.numpy.load_file, then
         * float(x).hex()) on this file; hex literals make them exact. */
        CHECK(get_f32(wte, 0) == -0x1.52379ap-6f);
        CHECK(get_f32(wte, 1) == 0x1.999dc2p-7f);
        CHECK(get_f32(wte, 999 * 32 + 31) == -0x1.11aa1ep-8f);
    }
    const lm_st_tensor *qkv = lm_safetensors_find(st, "transformer.h.0.attn.c_attn.weight");
    CHECK(qkv && qkv->n_dims == 2 && qkv->shape[0] == 32 && qkv->shape[1] == 96);
    if (qkv) CHECK(get_f32(qkv, 1 * 96 + 2) == -0x1.983a78p-5f);
    const lm_st_tensor *lnf = lm_safetensors_find(st, "transformer.ln_f.weight");
    CHECK(lnf && lnf->n_dims == 1 && lnf->shape[0] == 32);
    for (size_t i = 0; lnf && i < 32; i++) CHECK(get_f32(lnf, i) == 1.0f);
    const lm_st_tensor *wpe = lm_safetensors_find(st, "transformer.wpe.weight");
    CHECK(wpe && wpe->shape[0] == 512 && wpe->shape[1] == 32);
    CHECK(lm_safetensors_find(st, "transformer.wte") == NULL);
    CHECK(lm_safetensors_find(st, "") == NULL);
    /* every tensor can be found by its own name */
    for (size_t i = 0; i < st->n_tensors; i++) CHECK(lm_safetensors_find(st, st->tensors[i].name) == &st->tensors[i]);
}

static void test_real_file(void) {
    char buf[1024];
    const char *path = check_asset("models/tiny-random-gpt2/model.safetensors", buf, sizeof buf);
    if (!path) return; /* the rest of the suite needs no assets */
    lm_safetensors *st = NULL;
    lm_status s = lm_safetensors_open(path, &st);
    CHECKF(s == LM_OK, "%s", lm_errmsg());
    if (s == LM_OK) check_gpt2(st);
    lm_safetensors_close(st);

    /* the same file through the directory loader (no index next to it) */
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = 0;
    lm_st_set *set = NULL;
    s = lm_st_set_open_dir(dir, &set);
    CHECKF(s == LM_OK, "%s", lm_errmsg());
    if (s == LM_OK) {
        CHECK(set->n_files == 1);
        check_gpt2(set->files[0]);
        const lm_safetensors *f = NULL;
        const lm_st_tensor *t = lm_st_set_find(set, "transformer.wte.weight", &f);
        CHECK(t && f == set->files[0] && get_f32(t, 0) == -0x1.52379ap-6f);
        CHECK(lm_st_set_find(set, "nope", &f) == NULL && f == NULL);
    }
    lm_st_set_close(set);
}

/* ---- writers: round trips --------------------------------------------------------------- */

static float g_f32[6] = {1.5f, -2.25f, 0.0f, 3.0e-5f, -1.0e8f, 7.0f};
static uint16_t g_f16[4], g_bf16[4];
static int32_t g_i32[3] = {-7, 0, 2147483647};
static uint8_t g_u8[5] = {1, 2, 3, 254, 255};
static double g_f64 = 3.25;
static const float g_half_src[4] = {1.0f, -2.0f, 0.5f, 65504.0f};

#define N_SPECS 7
static void make_specs(lm_st_spec *sp, int with_data) {
    for (int i = 0; i < 4; i++) {
        g_f16[i] = lm_f32_to_f16(g_half_src[i]);
        g_bf16[i] = lm_f32_to_bf16(g_half_src[i]);
    }
    memset(sp, 0, N_SPECS * sizeof *sp);
    sp[0] = (lm_st_spec){"w.f32", LM_ST_F32, 2, {2, 3}, g_f32};
    sp[1] = (lm_st_spec){"u8 odd size", LM_ST_U8, 1, {5}, g_u8}; /* leaves the next tensor unaligned */
    sp[2] = (lm_st_spec){"w.f16", LM_ST_F16, 1, {4}, g_f16};
    sp[3] = (lm_st_spec){"a.bf16", LM_ST_BF16, 2, {2, 2}, g_bf16};
    sp[4] = (lm_st_spec){"ids", LM_ST_I32, 1, {3}, g_i32};
    sp[5] = (lm_st_spec){"scalar", LM_ST_F64, 0, {0}, &g_f64};
    sp[6] = (lm_st_spec){"empty", LM_ST_F32, 2, {0, 3}, NULL};
    if (!with_data)
        for (int i = 0; i < N_SPECS; i++) sp[i].data = NULL;
}

static const char *const g_meta[] = {"format", "pt", "note", "caf\xc3\xa9 \"quoted\""};

static void check_round_trip(const char *path, const char *label) {
    lm_safetensors *st = NULL;
    lm_status s = lm_safetensors_open(path, &st);
    CHECKF(s == LM_OK, "%s: %s", label, lm_errmsg());
    if (s != LM_OK) return;
    lm_st_spec sp[N_SPECS];
    make_specs(sp, 1);
    CHECK(st->n_tensors == N_SPECS);
    for (size_t i = 0; i < st->n_tensors && i < N_SPECS; i++) {
        const lm_st_tensor *t = &st->tensors[i];
        CHECKF(strcmp(t->name, sp[i].name) == 0, "%s: tensor %zu is '%s'", label, i, t->name); /* order kept */
        CHECK(lm_safetensors_find(st, sp[i].name) == t);
        CHECK(t->dtype == sp[i].dtype && t->n_dims == sp[i].n_dims);
        for (int d = 0; d < t->n_dims; d++) CHECK(t->shape[d] == sp[i].shape[d]);
        size_t nb = t->n_elements * lm_st_dtype_size(t->dtype);
        CHECK(t->nbytes == nb);
        if (nb) CHECKF(memcmp(t->data, sp[i].data, nb) == 0, "%s: data of '%s'", label, t->name);
    }
    const lm_st_tensor *t = lm_safetensors_find(st, "w.f16");
    for (int i = 0; t && i < 4; i++) {
        uint16_t h;
        memcpy(&h, (const uint8_t *)t->data + 2 * i, 2);
        CHECK(lm_f16_to_f32(h) == g_half_src[i]);
    }
    t = lm_safetensors_find(st, "a.bf16");
    for (int i = 0; t && i < 3; i++) { /* 65504 is not exact in bf16 */
        uint16_t h;
        memcpy(&h, (const uint8_t *)t->data + 2 * i, 2);
        CHECK(lm_bf16_to_f32(h) == g_half_src[i]);
    }
    t = lm_safetensors_find(st, "scalar");
    CHECK(t && t->n_elements == 1 && t->nbytes == 8);
    t = lm_safetensors_find(st, "empty");
    CHECK(t && t->n_elements == 0 && t->nbytes == 0);
    CHECK(st->n_meta == 2);
    CHECK(lm_safetensors_meta(st, "format") && strcmp(lm_safetensors_meta(st, "format"), "pt") == 0);
    CHECK(lm_safetensors_meta(st, "note") && strcmp(lm_safetensors_meta(st, "note"), g_meta[3]) == 0);
    lm_safetensors_close(st);

    size_t n;
    uint8_t *b = read_bytes(path, &n);
    uint64_t hlen = 0;
    for (int k = 0; k < 8; k++) hlen |= (uint64_t)b[k] << (8 * k);
    CHECKF(hlen % 8 == 0, "%s: header length %llu is not padded to 8", label, (unsigned long long)hlen);
    CHECK(n == 8 + hlen + 24 + 5 + 8 + 8 + 12 + 8);
    CHECK(memcmp(b + 8, "{\"__metadata__\":", 16) == 0); /* metadata first */
    CHECK(b[8 + hlen - 1] == ' ' || b[8 + hlen - 1] == '}');
    free(b);
}

static void test_round_trip(void) {
    char p1[600], p2[600];
    tpath(p1, sizeof p1, "whole.safetensors");
    tpath(p2, sizeof p2, "stream.safetensors");
    lm_st_spec sp[N_SPECS];
    make_specs(sp, 1);
    lm_status s = lm_safetensors_write(p1, sp, N_SPECS, g_meta, 2);
    CHECKF(s == LM_OK, "%s", lm_errmsg());
    check_round_trip(p1, "whole-file writer");

    /* the streaming writer, fed in 3-byte pieces that straddle tensor boundaries, must give
     * the same bytes */
    size_t total = 0;
    uint8_t all[128];
    for (int i = 0; i < N_SPECS; i++) {
        size_t nb = 1;
        for (int d = 0; d < sp[i].n_dims; d++) nb *= sp[i].shape[d];
        nb *= lm_st_dtype_size(sp[i].dtype);
        if (nb) memcpy(all + total, sp[i].data, nb);
        total += nb;
    }
    CHECK(total == 24 + 5 + 8 + 8 + 12 + 8);
    lm_st_spec sn[N_SPECS];
    make_specs(sn, 0);
    lm_st_writer *w = NULL;
    s = lm_st_writer_open(&w, p2, sn, N_SPECS, g_meta, 2);
    CHECKF(s == LM_OK, "%s", lm_errmsg());
    for (size_t at = 0; s == LM_OK && at < total; at += 3) s = lm_st_writer_write(w, all + at, total - at < 3 ? total - at : 3);
    CHECKF(s == LM_OK, "%s", lm_errmsg());
    s = lm_st_writer_commit(w);
    CHECKF(s == LM_OK, "%s", lm_errmsg());
    check_round_trip(p2, "streaming writer");
    size_t n1, n2;
    uint8_t *b1 = read_bytes(p1, &n1), *b2 = read_bytes(p2, &n2);
    CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0);
    free(b1);
    free(b2);

    /* no metadata, no tensors: "{}" padded to 8 */
    char p3[600];
    tpath(p3, sizeof p3, "empty.safetensors");
    s = lm_safetensors_write(p3, NULL, 0, NULL, 0);
    CHECKF(s == LM_OK, "%s", lm_errmsg());
    lm_safetensors *st = NULL;
    s = lm_safetensors_open(p3, &st);
    CHECKF(s == LM_OK, "%s", lm_errmsg());
    CHECK(st && st->n_tensors == 0 && st->n_meta == 0 && lm_safetensors_find(st, "x") == NULL);
    lm_safetensors_close(st);
    b1 = read_bytes(p3, &n1);
    CHECK(n1 == 16 && memcmp(b1 + 8, "{}      ", 8) == 0);
    free(b1);

    /* overwriting an existing file replaces it */
    s = lm_safetensors_write(p1, sp, 1, NULL, 0);
    CHECKF(s == LM_OK, "%s", lm_errmsg());
    st = NULL;
    CHECK(lm_safetensors_open(p1, &st) == LM_OK && st->n_tensors == 1 && st->n_meta == 0);
    lm_safetensors_close(st);
    unlink(p1);
    unlink(p2);
    unlink(p3);
    CHECK(count_tmp_files() == 0);
}

static void test_writer_errors(void) {
    char p[600];
    tpath(p, sizeof p, "bad_write.safetensors");
    lm_st_spec sp[N_SPECS];
    make_specs(sp, 1);
    const char *k_meta_dup[] = {"a", "1", "a", "2"};
    const char *k_meta_null[] = {"a", NULL};
    lm_st_spec bad[2];

    bad[0] = sp[0];
    bad[1] = sp[4];
    bad[1].name = "w.f32";
    CHECK(lm_safetensors_write(p, bad, 2, NULL, 0) == LM_ERR_ARG && strstr(lm_errmsg(), "w.f32"));
    bad[1].name = "__metadata__";
    CHECK(lm_safetensors_write(p, bad, 2, NULL, 0) == LM_ERR_ARG);
    bad[1] = sp[4];
    bad[1].n_dims = LM_ST_MAX_DIMS + 1;
    CHECK(lm_safetensors_write(p, bad, 2, NULL, 0) == LM_ERR_ARG);
    bad[1] = sp[4];
    bad[1].dtype = LM_ST_DTYPE_COUNT;
    CHECK(lm_safetensors_write(p, bad, 2, NULL, 0) == LM_ERR_ARG);
    bad[1] = sp[4];
    bad[1].data = NULL;
    CHECK(lm_safetensors_write(p, bad, 2, NULL, 0) == LM_ERR_ARG && strstr(lm_errmsg(), "ids"));
    bad[1] = sp[4];
    bad[1].name = NULL;
    CHECK(lm_safetensors_write(p, bad, 2, NULL, 0) == LM_ERR_ARG);
    bad[1] = sp[4];
    bad[1].name = "bad \xff utf8";
    CHECK(lm_safetensors_write(p, bad, 2, NULL, 0) == LM_ERR_ARG);
    bad[1] = sp[4];
    bad[1].n_dims = 3;
    bad[1].shape[0] = bad[1].shape[1] = bad[1].shape[2] = (uint64_t)1 << 30;
    CHECK(lm_safetensors_write(p, bad, 2, NULL, 0) != LM_OK);
    CHECK(lm_safetensors_write(p, sp, 1, k_meta_dup, 2) == LM_ERR_ARG);
    CHECK(lm_safetensors_write(p, sp, 1, k_meta_null, 1) == LM_ERR_ARG);
    CHECK(!file_exists(p));

    /* streaming: too few bytes -> commit fails, nothing left behind */
    lm_st_spec sn[N_SPECS];
    make_specs(sn, 0);
    lm_st_writer *w = NULL;
    CHECK(lm_st_writer_open(&w, p, sn, 2, NULL, 0) == LM_OK); /* 24 + 5 bytes */
    uint8_t zeros[64] = {0};
    CHECK(lm_st_writer_write(w, zeros, 28) == LM_OK);
    CHECK(count_tmp_files() == 1);
    CHECK(lm_st_writer_commit(w) != LM_OK && strstr(lm_errmsg(), p) && strstr(lm_errmsg(), "28 of the 29"));
    CHECK(!file_exists(p));
    CHECK(count_tmp_files() == 0);

    /* too many bytes -> the write fails, and so does the commit */
    CHECK(lm_st_writer_open(&w, p, sn, 2, NULL, 0) == LM_OK);
    CHECK(lm_st_writer_write(w, zeros, 20) == LM_OK);
    CHECK(lm_st_writer_write(w, zeros, 10) != LM_OK && strstr(lm_errmsg(), p));
    CHECK(lm_st_writer_write(w, zeros, 9) != LM_OK); /* poisoned */
    CHECK(lm_st_writer_commit(w) != LM_OK);
    CHECK(!file_exists(p));
    CHECK(count_tmp_files() == 0);

    /* abort leaves nothing; an existing file survives an aborted rewrite */
    CHECK(lm_safetensors_write(p, sp, 1, NULL, 0) == LM_OK);
    CHECK(lm_st_writer_open(&w, p, sn, 2, NULL, 0) == LM_OK);
    CHECK(lm_st_writer_write(w, zeros, 29) == LM_OK);
    lm_st_writer_abort(w);
    lm_st_writer_abort(NULL);
    lm_safetensors *st = NULL;
    CHECK(lm_safetensors_open(p, &st) == LM_OK && st->n_tensors == 1);
    lm_safetensors_close(st);
    CHECK(count_tmp_files() == 0);
    unlink(p);

    /* a directory that does not exist */
    char q[700];
    snprintf(q, sizeof q, "%s/no/such/dir/x.safetensors", g_dir);
    CHECK(lm_safetensors_write(q, sp, 1, NULL, 0) == LM_ERR_IO && strstr(lm_errmsg(), q));
}

/* ---- broken files ----------------------------------------------------------------------- */

#define T4(name, off) "\"" name "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[" off "]}"
static const struct broken {
    const char *label, *header;
    size_t data_len;
    const char *want; /* a substring the message must hold, besides the path */
} k_broken[] = {
    {"non-JSON header", "{\"a\": nope", 4, "JSON"},
    {"JSON array header", "[1, 2, 3]", 0, "not a JSON object"},
    {"JSON string header", "\"x\"", 0, "JSON"},
    {"trailing garbage", "{} x", 0, "JSON"},
    {"invalid UTF-8", "{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "JSON"},
    {"NUL in a name", "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "JSON"},
    {"unknown dtype", "{\"a\":{\"dtype\":\"F31\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "F31"},
    {"lower-case dtype", "{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "f32"},
    {"dtype not a string", "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'a'"},
    {"missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "shape"},
    {"missing dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype"},
    {"missing offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "data_offsets"},
    {"entry not an object", "{\"a\":[0,4]}", 4, "'a'"},
    {"shape not an array", "{\"a\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, "'a'"},
    {"negative shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape[0]"},
    {"float shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4, "shape[0]"},
    {"string shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, "shape[0]"},
    {"9 dims", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "9 dims"},
    {"shape overflows", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,4]}}", 4,
     "overflow"},
    {"bytes overflow", "{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}}", 4,
     "overflow"},
    {"integer too big for JSON", "{\"a\":{\"dtype\":\"U8\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}",
     4, "JSON"},
    {"shape/dtype size mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "needs 8"},
    {"offsets beyond data", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "beyond"},
    {"begin > end", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, "begin after end"},
    {"negative offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "data_offsets"},
    {"three offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, "data_offsets"},
    {"one offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}", 4, "data_offsets"},
    {"string offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",\"4\"]}}", 4, "data_offsets"},
    {"float offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 4, "data_offsets"},
    {"overlapping tensors", "{" T4("a", "0,4") "," T4("b", "2,6") "," T4("c", "6,10") "}", 10, "overlap"},
    {"same range twice", "{" T4("a", "0,4") "," T4("b", "0,4") "}", 4, "overlap"},
    {"hole between tensors", "{" T4("a", "0,4") "," T4("b", "8,12") "}", 12, "hole"},
    {"hole at the start", "{" T4("a", "4,8") "}", 8, "hole"},
    {"trailing data bytes", "{" T4("a", "0,4") "}", 8, "end at byte 4"},
    {"duplicate names", "{" T4("a", "0,4") "," T4("a", "4,8") "}", 8, "duplicate"},
    {"metadata not an object", "{\"__metadata__\":\"pt\"," T4("a", "0,4") "}", 4, "__metadata__"},
    {"metadata non-string value", "{\"__metadata__\":{\"format\":\"pt\",\"n\":1}," T4("a", "0,4") "}", 4, "'n'"},
    {"metadata null value", "{\"__metadata__\":{\"x\":null}}", 0, "'x'"},
    {"metadata nested object", "{\"__metadata__\":{\"x\":{}}}", 0, "'x'"},
};

static void test_broken(void) {
    char p[600];
    tpath(p, sizeof p, "broken.safetensors");
    for (size_t i = 0; i < sizeof k_broken / sizeof k_broken[0]; i++) {
        make_raw(p, TRUE_LEN, k_broken[i].header, k_broken[i].data_len);
        expect_bad(p, k_broken[i].label, k_broken[i].want);
    }

    /* lying header lengths */
    const char *ok_hdr = "{" T4("a", "0,4") "}";
    make_raw(p, 0, ok_hdr, 4);
    expect_bad(p, "header length 0", "length is 0");
    make_raw(p, 1000, ok_hdr, 4);
    expect_bad(p, "header length past the end", "exceeds");
    make_raw(p, strlen(ok_hdr) + 4 + 1, ok_hdr, 4);
    expect_bad(p, "header length one past the end", "exceeds");
    make_raw(p, 200000000, ok_hdr, 4);
    expect_bad(p, "header length over 100 MB", "limit");
    make_raw(p, UINT64_MAX - 3, ok_hdr, 4);
    expect_bad(p, "header length near 2^64", "limit");
    make_raw(p, strlen(ok_hdr) - 1, ok_hdr, 4);
    expect_bad(p, "header length one short", NULL);
    make_raw(p, strlen(ok_hdr) + 4, ok_hdr, 4);
    expect_bad(p, "header length swallowing the data", "JSON");
    write_bytes(p, "", 0);
    expect_bad(p, "empty file", "too short");
    unlink(p);
    expect_bad(p, "missing file", NULL);

    /* well-formed edge cases that must open */
    static const struct {
        const char *label, *header;
        size_t data_len;
    } k_good[] = {
        {"no tensors", "{}", 0},
        {"only metadata", "{\"__metadata__\":{}}", 0},
        {"header order differs from offset order", "{" T4("b", "4,8") "," T4("a", "0,4") "}", 8},
        {"empty tensors at shared offsets",
         "{\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]}," T4("a", "0,4") "," T4("b", "4,8")
         ",\"z\":{\"dtype\":\"I64\",\"shape\":[5,0],\"data_offsets\":[8,8]}}",
         8},
        {"scalar", "{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4},
        {"unknown extra field ignored", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4},
        {"whitespace padding", "{" T4("a", "0,4") "}      ", 4},
        {"8 dims", "{\"a\":{\"dtype\":\"BOOL\",\"shape\":[1,1,1,1,1,1,1,2],\"data_offsets\":[0,2]}}", 2},
    };
    for (size_t i = 0; i < sizeof k_good / sizeof k_good[0]; i++) {
        make_raw(p, TRUE_LEN, k_good[i].header, k_good[i].data_len);
        lm_safetensors *st = NULL;
        lm_status s = lm_safetensors_open(p, &st);
        CHECKF(s == LM_OK, "%s: %s", k_good[i].label, lm_errmsg());
        if (s == LM_OK && i == 2) {
            CHECK(strcmp(st->tensors[0].name, "b") == 0);
            CHECK(lm_safetensors_find(st, "b")->data == (const uint8_t *)lm_safetensors_find(st, "a")->data + 4);
        }
        if (s == LM_OK && i == 3) {
            CHECK(st->n_tensors == 4 && lm_safetensors_find(st, "e")->nbytes == 0);
            CHECK(lm_safetensors_find(st, "z")->n_elements == 0);
        }
        lm_safetensors_close(st);
    }
    lm_safetensors_close(NULL);
    unlink(p);
}

/* Every proper prefix of a valid file is refused: its data no longer matches the header. */
static void test_truncation(void) {
    char p[600], q[600];
    tpath(p, sizeof p, "full.safetensors");
    tpath(q, sizeof q, "cut.safetensors");
    lm_st_spec sp[N_SPECS];
    make_specs(sp, 1);
    CHECK(lm_safetensors_write(p, sp, 3, g_meta, 1) == LM_OK);
    size_t n;
    uint8_t *b = read_bytes(p, &n);
    int refused = 0;
    for (size_t k = 0; k < n; k++) {
        write_bytes(q, b, k);
        lm_safetensors *st = NULL;
        lm_status s = lm_safetensors_open(q, &st);
        int named = strstr(lm_errmsg(), q) != NULL;
        CHECKF(s != LM_OK && st == NULL && named, "prefix of %zu of %zu bytes: %s", k, n,
               s == LM_OK ? "opened" : lm_errmsg());
        refused += s != LM_OK;
        lm_safetensors_close(st);
    }
    CHECK(refused == (int)n);
    free(b);
    unlink(p);
    unlink(q);
}

/* Single-byte corruptions of a valid file, at every offset: no crash (the sanitizer build
 * watches), and whatever still opens keeps every tensor inside the mapping. */
static void test_mutations(void) {
    char p[600], q[600];
    tpath(p, sizeof p, "orig.safetensors");
    tpath(q, sizeof q, "mutant.safetensors");
    lm_st_spec sp[N_SPECS];
    make_specs(sp, 1);
    CHECK(lm_safetensors_write(p, sp, N_SPECS, g_meta, 1) == LM_OK);
    size_t n;
    uint8_t *b = read_bytes(p, &n);
    static const uint8_t k_bytes[] = {0, ' ', '"', '0', '1', '9', '-', '.', '[', '{', '}', ',', 'e', 0x80, 0xff};
    int opened = 0, inside = 0;
    for (size_t k = 0; k < n; k++) {
        uint8_t orig = b[k];
        for (size_t j = 0; j < sizeof k_bytes; j++) {
            if (k_bytes[j] == orig) continue;
            b[k] = k_bytes[j];
            write_bytes(q, b, n);
            lm_safetensors *st = NULL;
            if (lm_safetensors_open(q, &st) == LM_OK) {
                opened++;
                int ok = 1;
                for (size_t i = 0; i < st->n_tensors; i++) {
                    const uint8_t *d = st->tensors[i].data;
                    ok &= d >= st->file.data + 8 && d + st->tensors[i].nbytes <= st->file.data + st->file.size;
                    ok &= lm_safetensors_find(st, st->tensors[i].name) == &st->tensors[i];
                }
                inside += ok;
                lm_safetensors_close(st);
            } else {
                CHECKF(strstr(lm_errmsg(), q) != NULL, "mutant at %zu: %s", k, lm_errmsg());
            }
        }
        b[k] = orig;
    }
    CHECK(opened == inside);
    CHECK(opened > 0); /* data bytes and some header digits/names can change harmlessly */
    free(b);
    unlink(p);
    unlink(q);
}

/* ---- Hugging Face directories ----------------------------------------------------------- */

static void write_shard(const char *dir, const char *file, const char *const *names, size_t n) {
    static const float v[4] = {1, 2, 3, 4};
    lm_st_spec sp[4];
    memset(sp, 0, sizeof sp);
    for (size_t i = 0; i < n; i++) sp[i] = (lm_st_spec){names[i], LM_ST_F32, 1, {i + 1}, v};
    char p[800];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    if (lm_safetensors_write(p, sp, n, NULL, 0) != LM_OK) {
        fprintf(stderr, "%s\n", lm_errmsg());
        exit(1);
    }
}

static void write_index(const char *dir, const char *text) {
    char p[800];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_bytes(p, text, strlen(text));
}

static void expect_bad_dir(const char *dir, const char *label, const char *want) {
    lm_st_set *set = (lm_st_set *)&set;
    lm_status s = lm_st_set_open_dir(dir, &set);
    CHECKF(s != LM_OK, "%s: opened", label);
    CHECKF(set == NULL, "%s: *out not NULL on failure", label);
    if (getenv("ST_SHOW")) fprintf(stderr, "[%s] %s\n", label, lm_errmsg());
    CHECKF(strstr(lm_errmsg(), dir) != NULL, "%s: message does not name the directory: %s", label, lm_errmsg());
    if (want) CHECKF(strstr(lm_errmsg(), want) != NULL, "%s: message lacks '%s': %s", label, want, lm_errmsg());
    if (s == LM_OK) lm_st_set_close(set);
}

#define S1 "model-00001-of-00002.safetensors"
#define S2 "model-00002-of-00002.safetensors"

static void test_sharded(void) {
    char dir[600];
    tpath(dir, sizeof dir, "hf");
    mkdir(dir, 0777);
    expect_bad_dir(dir, "empty directory", "no model.safetensors or model.safetensors.index.json");

    const char *n1[] = {"a", "b"}, *n2[] = {"c"};
    write_shard(dir, S1, n1, 2);
    write_shard(dir, S2, n2, 1);
    write_index(dir, "{\"metadata\":{\"total_size\":16},\"weight_map\":{\"a\":\"" S1 "\",\"c\":\"" S2 "\",\"b\":\"" S1
                     "\"}}");
    lm_st_set *set = NULL;
    lm_status s = lm_st_set_open_dir(dir, &set);
    CHECKF(s == LM_OK, "%s", lm_errmsg());
    if (s == LM_OK) {
        CHECK(set->n_files == 2);
        const lm_safetensors *f = NULL;
        const lm_st_tensor *t = lm_st_set_find(set, "a", &f);
        CHECK(t && f == set->files[0] && t->shape[0] == 1 && get_f32(t, 0) == 1.0f);
        t = lm_st_set_find(set, "b", &f);
        CHECK(t && f == set->files[0] && t->shape[0] == 2 && get_f32(t, 1) == 2.0f);
        t = lm_st_set_find(set, "c", NULL);
        CHECK(t && t->shape[0] == 1);
        CHECK(lm_st_set_find(set, "c", &f) && f == set->files[1]);
        CHECK(lm_st_set_find(set, "d", &f) == NULL && f == NULL);
        CHECK(lm_st_set_find(NULL, "a", &f) == NULL);
    }
    lm_st_set_close(set);
    lm_st_set_close(NULL);

    write_index(dir, "{\"weight_map\":{\"a\":\"" S1 "\",\"c\":\"model-00003-of-00003.safetensors\"}}");
    expect_bad_dir(dir, "shard listed but missing", "model-00003-of-00003.safetensors");
    write_index(dir, "{\"weight_map\":{\"a\":\"" S1 "\",\"d\":\"" S2 "\"}}");
    expect_bad_dir(dir, "weight_map names a tensor its shard lacks", "'d'");
    write_index(dir, "{\"weight_map\":{\"a\":\"" S1 "\",\"c\":\"../" S2 "\"}}");
    expect_bad_dir(dir, "shard outside the directory", "'c'");
    write_index(dir, "{\"weight_map\":{\"a\":\"" S1 "\",\"c\":\"..\"}}");
    expect_bad_dir(dir, "shard named ..", "'c'");
    write_index(dir, "{\"weight_map\":{\"a\":\"" S1 "\",\"c\":7}}");
    expect_bad_dir(dir, "shard name not a string", "'c'");
    write_index(dir, "{\"weight_map\":{\"a\":\"" S1 "\", \"a\":\"" S1 "\"}}");
    expect_bad_dir(dir, "duplicate weight_map key", "JSON");
    write_index(dir, "{\"weight_map\": [1, 2]}");
    expect_bad_dir(dir, "weight_map not an object", "weight_map");
    write_index(dir, "{\"metadata\": {}}");
    expect_bad_dir(dir, "no weight_map", "weight_map");
    write_index(dir, "{\"weight_map\": {}}");
    expect_bad_dir(dir, "empty weight_map", "empty");
    write_index(dir, "[]");
    expect_bad_dir(dir, "index is an array", "not a JSON object");
    write_index(dir, "{\"weight_map\": {\"a\": \"" S1 "\"");
    expect_bad_dir(dir, "index.json that is not JSON", "not valid JSON");
    write_index(dir, "");
    expect_bad_dir(dir, "empty index.json", "not valid JSON");

    /* a tensor in two shards */
    const char *n2dup[] = {"c", "a"};
    write_shard(dir, S2, n2dup, 2);
    write_index(dir, "{\"weight_map\":{\"a\":\"" S1 "\",\"b\":\"" S1 "\",\"c\":\"" S2 "\"}}");
    expect_bad_dir(dir, "tensor in two shards", "two shards");

    /* a broken shard: the message names the index, the shard and what is wrong with it */
    char p[800];
    snprintf(p, sizeof p, "%s/%s", dir, S2);
    make_raw(p, TRUE_LEN, "[]", 0);
    expect_bad_dir(dir, "broken shard", "not a JSON object");

    /* without an index, model.safetensors is used */
    char idx[800];
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    unlink(idx);
    unlink(p);
    snprintf(p, sizeof p, "%s/%s", dir, S1);
    unlink(p);
    expect_bad_dir(dir, "no files again", "no model.safetensors");
    write_shard(dir, "model.safetensors", n1, 2);
    set = NULL;
    s = lm_st_set_open_dir(dir, &set);
    CHECKF(s == LM_OK, "%s", lm_errmsg());
    CHECK(set && set->n_files == 1 && lm_st_set_find(set, "b", NULL));
    lm_st_set_close(set);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    make_raw(p, 0, "{}", 0);
    expect_bad_dir(dir, "broken model.safetensors", "length is 0");
    unlink(p);
    rmdir(dir);

    char none[700];
    snprintf(none, sizeof none, "%s/does-not-exist", g_dir);
    expect_bad_dir(none, "missing directory", NULL);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s/test_safetensors.%ld", check_tmpdir(), (long)getpid());
    if (mkdir(g_dir, 0777) != 0) {
        fprintf(stderr, "cannot create %s\n", g_dir);
        return 1;
    }
    test_dtypes();
    test_real_file();
    test_round_trip();
    test_writer_errors();
    test_broken();
    test_truncation();
    test_mutations();
    test_sharded();
    CHECK(count_tmp_files() == 0);
    if (rmdir(g_dir) != 0) {
        CHECKF(0, "scratch directory %s not empty", g_dir);
    }
    return check_result();
}
