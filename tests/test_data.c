/* test_data.c - token shards: writing a split and reading it back, widths, seeded sampling, sequential windows,
 * and a clear error for every kind of broken input. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"

#include <jansson.h>
#include <stdint.h>
#include <unistd.h>

#include "lumen/tokenizer.h"
#include "lumen/train.h"

#define N_DOCS 40

static char tmp_root[1024];

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", tmp_root, name); }

static void write_text(const char *path, const char *s, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    if (n) fwrite(s, 1, n, f);
    fclose(f);
}

static int same_file(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int same = lm_read_file(a, &x, &nx) == LM_OK && lm_read_file(b, &y, &ny) == LM_OK && nx == ny &&
               memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return same;
}

/* Rewrites n bytes at off of a file. */
static void patch(const char *path, long off, const void *bytes, size_t n) {
    FILE *f = fopen(path, "r+b");
    if (!f) return;
    fseek(f, off, SEEK_SET);
    fwrite(bytes, 1, n, f);
    fclose(f);
}

static void copy_file(const char *from, const char *to) {
    char *d = NULL;
    size_t n = 0;
    if (lm_read_file(from, &d, &n) == LM_OK) write_text(to, d, n);
    free(d);
}

/* The whole token stream of a split. */
static uint32_t *stream_of(const lm_data *d, uint64_t *n) {
    *n = lm_data_n_tokens(d);
    uint32_t *v = malloc((*n ? *n : 1) * sizeof *v);
    for (uint64_t i = 0; v && i < *n; i++) v[i] = lm_data_token(d, i);
    return v;
}

/* Whether tokens w[0..len) occur at some position of the stream. */
static int occurs(const uint32_t *s, uint64_t n, const int32_t *in, const int32_t *tg, int T) {
    for (uint64_t p = 0; p + (uint64_t)T + 1 <= n; p++) {
        int ok = 1;
        for (int t = 0; t < T && ok; t++) ok = s[p + t] == (uint32_t)in[t] && s[p + t + 1] == (uint32_t)tg[t];
        if (ok) return 1;
    }
    return 0;
}

/* Splits a stream at sep (placed after each document) and checks each piece decodes to the next
 * expected document of this split. */
static void check_docs(const lm_tokenizer *tok, const uint32_t *s, uint64_t n, int sep, char docs[][256],
                       const int *in_split, int want_split) {
    int k = 0;
    uint64_t start = 0;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    for (uint64_t i = 0; i < n; i++) {
        if ((int)s[i] != sep) continue;
        while (k < N_DOCS && in_split[k] != want_split) k++;
        CHECKF(k < N_DOCS, "more documents in split %d than expected", want_split);
        if (k >= N_DOCS) break;
        for (uint64_t j = start; j < i; j++) ids[j - start] = (int32_t)s[j];
        char *text = NULL;
        size_t len = 0;
        CHECK(lm_tokenizer_decode(tok, ids, (size_t)(i - start), &text, &len) == LM_OK);
        CHECKF(text && len == strlen(docs[k]) && memcmp(text, docs[k], len) == 0, "document %d: got \"%.*s\", want \"%s\"",
               k, (int)len, text ? text : "", docs[k]);
        free(text);
        start = i + 1;
        k++;
    }
    CHECKF(start == n, "the stream does not end with the separator");
    while (k < N_DOCS && in_split[k] != want_split) k++;
    CHECKF(k == N_DOCS, "split %d: document %d missing", want_split, k);
    free(ids);
}

static void test_write_and_read(const lm_tokenizer *tok) {
    /* Documents separated by blank lines of several kinds and by a separator line. */
    static char docs[N_DOCS][256];
    size_t cap = 64 * 1024, n = 0;
    char *text = malloc(cap);
    for (int i = 0; i < N_DOCS; i++) {
        if (i % 7 == 3)
            snprintf(docs[i], sizeof docs[i], "Story %d.\nIt has two lines, caf\xc3\xa9 and 12345.", i);
        else if (i % 5 == 1)
            snprintf(docs[i], sizeof docs[i], "Once upon a time %d there was <|endoftext|> written inside.", i);
        else
            snprintf(docs[i], sizeof docs[i], "Document number %d: the cat sat on the mat %d times.", i, i * 7);
        static const char *const gaps[] = {"\n\n", "\n\n\n", "\n  \t\n", "\r\n\r\n", "\n<|endoftext|>\n"};
        const char *gap = i == 0 ? "\n\n" : gaps[i % 5];
        n += (size_t)snprintf(text + n, cap - n, "%s%s", i == 0 ? "\n\n" : gap, docs[i]);
    }
    n += (size_t)snprintf(text + n, cap - n, "\n\n\n");
    char txt[4096], dir[4096], dir2[4096], meta[4096];
    path_in(txt, sizeof txt, "docs.txt");
    path_in(dir, sizeof dir, "data");
    path_in(dir2, sizeof dir2, "data2");
    write_text(txt, text, n);
    free(text);

    lm_data_write_opts o;
    lm_data_write_opts_default(&o);
    CHECK(o.val_fraction == 0.05 && o.docs == LM_DOC_BLANK_LINES);
    o.val_fraction = 0.3;
    o.seed = 7;
    o.shard_tokens = 100; /* several shards, so windows cross shard ends */
    o.tokenizer_path = "fixture-tokenizer.json";
    const char *files[] = {txt};
    lm_data_write_result r;
    lm_status st = lm_data_write(tok, files, 1, dir, &o, NULL, NULL, &r);
    CHECKF(st == LM_OK, "%s", lm_errmsg());
    if (st != LM_OK) return;
    int in_val[N_DOCS], n_val = 0;
    lm_rng rng;
    lm_rng_seed(&rng, 7);
    for (int i = 0; i < N_DOCS; i++) n_val += in_val[i] = lm_rng_f32(&rng) < 0.3;
    CHECK(n_val > 0 && n_val < N_DOCS);
    CHECK(r.width == 2);
    CHECK(r.train.documents == (uint64_t)(N_DOCS - n_val) && r.val.documents == (uint64_t)n_val);
    CHECK(r.train.shards >= 3 && r.val.shards >= 1);
    CHECK(r.train.shards == (int)((r.train.tokens + 99) / 100));

    /* meta.json says what is there. */
    path_in(meta, sizeof meta, "data/meta.json");
    json_error_t jerr;
    json_t *m = json_load_file(meta, 0, &jerr);
    CHECKF(m != NULL, "%s", jerr.text);
    CHECK(json_integer_value(json_object_get(m, "vocab_size")) == 512);
    CHECK(!strcmp(json_string_value(json_object_get(m, "dtype")), "uint16"));
    CHECK(json_integer_value(json_object_get(m, "seed")) == 7);
    CHECK(json_integer_value(json_object_get(json_object_get(m, "separator"), "id")) == 511);
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(m, "separator"), "placement")), "after"));
    CHECK(!strcmp(json_string_value(json_object_get(m, "tokenizer")), "fixture-tokenizer.json"));
    char hash[24];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)lm_data_vocab_hash(tok));
    CHECK(!strcmp(json_string_value(json_object_get(m, "vocab_hash")), hash));
    CHECK(json_integer_value(json_object_get(json_object_get(m, "train"), "tokens")) == (json_int_t)r.train.tokens);
    json_decref(m);

    /* Each split reads back as its documents, in order, each followed by EOS. */
    lm_data *train = NULL, *val = NULL;
    st = lm_data_open(dir, "train", &train);
    CHECKF(st == LM_OK, "%s", lm_errmsg());
    st = lm_data_open(dir, "val", &val);
    CHECKF(st == LM_OK, "%s", lm_errmsg());
    if (!train || !val) return;
    CHECK(lm_data_n_tokens(train) == r.train.tokens && lm_data_n_tokens(val) == r.val.tokens);
    CHECK(lm_data_vocab_size(train) == 512 && lm_data_width(train) == 2);
    uint64_t nt, nv;
    uint32_t *st_train = stream_of(train, &nt), *st_val = stream_of(val, &nv);
    int in_train[N_DOCS];
    for (int i = 0; i < N_DOCS; i++) in_train[i] = !in_val[i];
    check_docs(tok, st_train, nt, 511, docs, in_train, 1);
    check_docs(tok, st_val, nv, 511, docs, in_val, 1);

    /* Sampling: the same seed gives the same windows, each a slice of its own split. */
    enum { B = 4, T = 16 };
    int32_t in1[B * T], tg1[B * T], in2[B * T], tg2[B * T];
    lm_rng r1, r2;
    lm_rng_seed(&r1, 42);
    lm_rng_seed(&r2, 42);
    CHECK(lm_data_sample(train, &r1, B, T, in1, tg1) == LM_OK);
    CHECK(lm_data_sample(train, &r2, B, T, in2, tg2) == LM_OK);
    CHECK(!memcmp(in1, in2, sizeof in1) && !memcmp(tg1, tg2, sizeof tg1) && r1.state == r2.state);
    for (int b = 0; b < B; b++) {
        for (int t = 0; t + 1 < T; t++) CHECK(in1[b * T + t + 1] == tg1[b * T + t]);
        CHECKF(occurs(st_train, nt, in1 + b * T, tg1 + b * T, T), "train window %d is not a slice of the train split", b);
    }
    for (int rep = 0; rep < 20; rep++) {
        CHECK(lm_data_sample(val, &r1, B, T, in1, tg1) == LM_OK);
        for (int b = 0; b < B; b++) CHECKF(occurs(st_val, nv, in1 + b * T, tg1 + b * T, T), "val window %d", b);
    }
    /* Resuming: a saved rng state gives the same next batch. */
    lm_rng saved = r1;
    CHECK(lm_data_sample(train, &r1, B, T, in1, tg1) == LM_OK);
    CHECK(lm_data_sample(train, &saved, B, T, in2, tg2) == LM_OK);
    CHECK(!memcmp(in1, in2, sizeof in1) && !memcmp(tg1, tg2, sizeof tg1));
    lm_rng_seed(&r2, 43);
    CHECK(lm_data_sample(train, &r2, B, T, in2, tg2) == LM_OK);
    CHECK(memcmp(in1, in2, sizeof in1) != 0);
    /* Both ends are reachable: a window of nt - 2 tokens + 1 has exactly two starts. */
    int32_t big_in[2048], big_tg[2048];
    CHECK(nt - 2 <= 2048);
    if (nt - 2 <= 2048) {
        int seen0 = 0, seen1 = 0;
        for (int rep = 0; rep < 200; rep++) {
            CHECK(lm_data_sample(train, &r2, 1, (int)nt - 2, big_in, big_tg) == LM_OK);
            seen0 |= big_in[0] == (int32_t)st_train[0];
            seen1 |= big_in[0] == (int32_t)st_train[1];
        }
        CHECK(seen0 && seen1);
    }

    /* Sequential windows: every token after the first is a target exactly once, in order. */
    uint64_t pos = 0, covered = 0;
    int rows = 0, ok = 1;
    do {
        CHECK(lm_data_sequential(train, &pos, 3, T, in1, tg1, &rows) == LM_OK);
        for (int rr = 0; rr < rows; rr++)
            for (int t = 0; t < T; t++) {
                ok &= (uint32_t)tg1[rr * T + t] == st_train[covered + 1];
                ok &= (uint32_t)in1[rr * T + t] == st_train[covered];
                covered++;
            }
    } while (rows > 0);
    CHECK(ok);
    CHECK(covered == (nt - 1) / T * T);

    /* Windows longer than the split are refused. */
    st = lm_data_sample(val, &r1, 1, (int)nv, big_in, big_tg);
    CHECKF(st == LM_ERR_RANGE && strstr(lm_errmsg(), "longer"), "%s", lm_errmsg());
    CHECK(nv - 1 <= 2048 && lm_data_sample(val, &r1, 1, (int)nv - 1, big_in, big_tg) == LM_OK);
    CHECK(big_in[0] == (int32_t)st_val[0] && big_tg[nv - 2] == (int32_t)st_val[nv - 1]);
    st = lm_data_sample(train, &r1, 0, T, in1, tg1);
    CHECK(st == LM_ERR_ARG);
    free(st_train);
    free(st_val);
    lm_data_close(train);
    lm_data_close(val);

    /* Deterministic: the same inputs give the same bytes, whatever the thread count. */
    o.threads = 1;
    CHECK(lm_data_write(tok, files, 1, dir2, &o, NULL, NULL, NULL) == LM_OK);
    char a[8192], b[8192];
    static const char *const names[] = {"meta.json", "train_0000.bin", "train_0001.bin", "val_0000.bin"};
    for (int i = 0; i < 4; i++) {
        snprintf(a, sizeof a, "%s/%s", dir, names[i]);
        snprintf(b, sizeof b, "%s/%s", dir2, names[i]);
        CHECKF(same_file(a, b), "%s differs between runs", names[i]);
    }
    /* Another seed, another split. */
    o.seed = 8;
    CHECK(lm_data_write(tok, files, 1, dir2, &o, NULL, NULL, &r) == LM_OK);
    int other = 0;
    lm_rng_seed(&rng, 8);
    for (int i = 0; i < N_DOCS; i++) other += (lm_rng_f32(&rng) < 0.3) != in_val[i];
    CHECK(other > 0);

    /* File mode: one document per file; lines mode: one per line. */
    o.docs = LM_DOC_FILE;
    o.val_fraction = 0;
    CHECK(lm_data_write(tok, files, 1, dir2, &o, NULL, NULL, &r) == LM_OK);
    CHECK(r.train.documents == 1 && r.val.documents == 0 && r.val.shards == 0);
    lm_data *d = NULL;
    st = lm_data_open(dir2, "val", &d);
    CHECKF(st == LM_ERR_RANGE && strstr(lm_errmsg(), "no tokens"), "%s", lm_errmsg());
    o.docs = LM_DOC_LINES;
    CHECK(lm_data_write(tok, files, 1, dir2, &o, NULL, NULL, &r) == LM_OK);
    CHECK(r.train.documents == N_DOCS + N_DOCS / 7 + (N_DOCS % 7 > 3)); /* the two-line stories count twice */
}

/* A tokenizer that wants BOS puts it before each document. */
static void test_bos_placement(void) {
    char p[4096];
    const char *path = check_asset("models/stories260K/tok512.bin", p, sizeof p);
    if (!path) return;
    lm_tokenizer *tok = NULL;
    if (lm_tokenizer_load_llama2c(path, 512, &tok) != LM_OK) {
        CHECKF(0, "%s", lm_errmsg());
        return;
    }
    char txt[4096], dir[4096];
    path_in(txt, sizeof txt, "spm.txt");
    path_in(dir, sizeof dir, "spm");
    static const char s[] = "One day a cat.\n\nThe dog ran.\n";
    write_text(txt, s, sizeof s - 1);
    lm_data_write_opts o;
    lm_data_write_opts_default(&o);
    o.val_fraction = 0;
    const char *files[] = {txt};
    lm_data_write_result r;
    CHECK(lm_data_write(tok, files, 1, dir, &o, NULL, NULL, &r) == LM_OK);
    lm_data *d = NULL;
    CHECK(lm_data_open(dir, "train", &d) == LM_OK);
    int bos = lm_tokenizer_bos(tok), n_bos = 0;
    for (uint64_t i = 0; d && i < lm_data_n_tokens(d); i++) n_bos += (int)lm_data_token(d, i) == bos;
    CHECK(d && lm_data_token(d, 0) == (uint32_t)bos && n_bos == 2);
    lm_data_close(d);
    lm_tokenizer_free(tok);
}

static void test_widths(void) {
    char p2[4096], p4[4096], big[4096];
    path_in(p2, sizeof p2, "w2.bin");
    path_in(p4, sizeof p4, "w4.bin");
    path_in(big, sizeof big, "big.bin");
    uint32_t toks[5] = {0, 1, 65535, 7, 3};
    CHECK(lm_data_write_shard(p2, toks, 5, 65536) == LM_OK);
    uint32_t toks4[5] = {0, 69999, 65536, 65535, 12};
    CHECK(lm_data_write_shard(p4, toks4, 5, 70000) == LM_OK);
    struct stat sb;
    CHECK(stat(p2, &sb) == 0 && sb.st_size == 32 + 5 * 2);
    CHECK(stat(p4, &sb) == 0 && sb.st_size == 32 + 5 * 4);
    lm_data *d = NULL;
    const char *one[] = {p4};
    CHECK(lm_data_open_files(one, 1, &d) == LM_OK);
    CHECK(d && lm_data_width(d) == 4 && lm_data_vocab_size(d) == 70000 && lm_data_n_tokens(d) == 5);
    for (int i = 0; d && i < 5; i++) CHECK(lm_data_token(d, (uint64_t)i) == toks4[i]);
    int32_t in[4], tg[4];
    uint64_t pos = 0;
    int rows = 0;
    CHECK(d && lm_data_sequential(d, &pos, 1, 4, in, tg, &rows) == LM_OK && rows == 1);
    CHECK(in[1] == 69999 && tg[3] == 12);
    lm_data_close(d);
    const char *one2[] = {p2};
    CHECK(lm_data_open_files(one2, 1, &d) == LM_OK && lm_data_width(d) == 2 && lm_data_token(d, 2) == 65535);
    lm_data_close(d);
    /* Shards with different vocabularies cannot form one stream. */
    const char *both[] = {p2, p4};
    lm_status st = lm_data_open_files(both, 2, &d);
    CHECKF(st == LM_ERR_FORMAT && strstr(lm_errmsg(), p4) && strstr(lm_errmsg(), "70000"), "%s", lm_errmsg());
    /* Limits of the format. */
    st = lm_data_write_shard(big, toks, 5, (1ull << 32) + 1);
    CHECKF(st == LM_ERR_RANGE && strstr(lm_errmsg(), "2^32"), "%s", lm_errmsg());
    st = lm_data_write_shard(big, toks4, 5, 65536);
    CHECKF(st == LM_ERR_RANGE && strstr(lm_errmsg(), "index 1"), "%s", lm_errmsg());
    CHECK(access(big, F_OK) != 0); /* nothing half-written is left */
}

/* Each corruption of a good shard is reported with the file and what is wrong. */
static void test_corrupt(void) {
    char good[4096], bad[4096];
    path_in(good, sizeof good, "good.bin");
    path_in(bad, sizeof bad, "bad.bin");
    uint32_t toks[64];
    for (int i = 0; i < 64; i++) toks[i] = (uint32_t)(i * 7 % 512);
    CHECK(lm_data_write_shard(good, toks, 64, 512) == LM_OK);
    const char *files[] = {bad};
    lm_data *d = NULL;
    lm_status st;
    struct {
        const char *what;
        long off;
        const char *bytes;
        size_t n;
        long truncate_to;
        const char *needle;
    } cases[] = {
        {"wrong magic", 0, "X", 1, -1, "magic"},
        {"version", 8, "\x02", 1, -1, "version 2"},
        {"width", 12, "\x03", 1, -1, "width 3"},
        {"count lies", 16, "\x41", 1, -1, "says 65 tokens"},
        {"count lies hugely", 16, "\xff\xff\xff\xff\xff\xff\xff\xff", 8, -1, "the header says"},
        {"zero vocabulary", 24, "\0\0\0\0", 4, -1, "vocabulary size 0"},
        {"token beyond vocabulary", 32 + 2 * 10, "\x00\x02", 2, -1, "index 10"},
        {"truncated", 0, "", 0, 32 + 2 * 63 + 1, "truncated"},
        {"truncated header", 0, "", 0, 20, "shorter than"},
        {"empty file", 0, "", 0, 0, "shorter than"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        copy_file(good, bad);
        if (cases[i].n) patch(bad, cases[i].off, cases[i].bytes, cases[i].n);
        if (cases[i].truncate_to >= 0) CHECK(truncate(bad, cases[i].truncate_to) == 0);
        d = NULL;
        st = lm_data_open_files(files, 1, &d);
        CHECKF(st != LM_OK && d == NULL && strstr(lm_errmsg(), bad) && strstr(lm_errmsg(), cases[i].needle),
               "%s: status %d, message \"%s\"", cases[i].what, (int)st, lm_errmsg());
    }
    char none[4096];
    path_in(none, sizeof none, "missing.bin");
    files[0] = none;
    st = lm_data_open_files(files, 1, &d);
    CHECKF(st == LM_ERR_IO && strstr(lm_errmsg(), none), "%s", lm_errmsg());
    unlink(bad);
}

/* A directory whose meta.json is missing, lies or points outside is refused. */
static void test_bad_dirs(const lm_tokenizer *tok) {
    char dir[4096], txt[4096], meta[4096];
    path_in(dir, sizeof dir, "dirs/made/on/the/way");
    path_in(txt, sizeof txt, "dirs.txt");
    path_in(meta, sizeof meta, "dirs/made/on/the/way/meta.json");
    static const char s[] = "Alpha beta gamma.\n\nDelta epsilon.\n\nZeta eta theta.\n";
    write_text(txt, s, sizeof s - 1);
    const char *files[] = {txt};
    lm_data_write_opts o;
    lm_data_write_opts_default(&o);
    o.val_fraction = 0;
    CHECK(lm_data_write(tok, files, 1, dir, &o, NULL, NULL, NULL) == LM_OK);
    lm_data *d = NULL;
    CHECK(lm_data_open(dir, "train", &d) == LM_OK);
    lm_data_close(d);
    lm_status st = lm_data_open(dir, "test", &d);
    CHECKF(st == LM_ERR_ARG && strstr(lm_errmsg(), "test"), "%s", lm_errmsg());

    char *good = NULL;
    size_t n = 0;
    CHECK(lm_read_file(meta, &good, &n) == LM_OK);
    json_t *j = json_loads(good, 0, NULL);
    /* the token count lies */
    json_t *train = json_object_get(j, "train");
    json_int_t tokens = json_integer_value(json_object_get(train, "tokens"));
    json_object_set_new(train, "tokens", json_integer(tokens + 1));
    CHECK(json_dump_file(j, meta, 0) == 0);
    st = lm_data_open(dir, "train", &d);
    CHECKF(st == LM_ERR_FORMAT && strstr(lm_errmsg(), "meta.json says"), "%s", lm_errmsg());
    json_object_set_new(train, "tokens", json_integer(tokens));
    /* a vocabulary other than the shards' */
    json_object_set_new(j, "vocab_size", json_integer(600));
    CHECK(json_dump_file(j, meta, 0) == 0);
    st = lm_data_open(dir, "train", &d);
    CHECKF(st == LM_ERR_FORMAT && strstr(lm_errmsg(), "train_0000.bin") && strstr(lm_errmsg(), "600"), "%s",
           lm_errmsg());
    json_object_set_new(j, "vocab_size", json_integer(512));
    /* a shard name that leaves the directory */
    json_array_set_new(json_object_get(train, "shards"), 0, json_string("../x.bin"));
    CHECK(json_dump_file(j, meta, 0) == 0);
    st = lm_data_open(dir, "train", &d);
    CHECKF(st == LM_ERR_FORMAT && strstr(lm_errmsg(), "not a file name"), "%s", lm_errmsg());
    json_decref(j);
    /* not JSON, then no meta.json at all (an interrupted run) */
    write_text(meta, "{\"format\": ", 11);
    st = lm_data_open(dir, "train", &d);
    CHECKF(st == LM_ERR_FORMAT && strstr(lm_errmsg(), "meta.json"), "%s", lm_errmsg());
    unlink(meta);
    st = lm_data_open(dir, "train", &d);
    CHECKF(st == LM_ERR_IO && strstr(lm_errmsg(), "meta.json") && strstr(lm_errmsg(), dir) &&
               strstr(lm_errmsg(), "cannot open: No such file"),
           "%s", lm_errmsg());
    free(good);

    /* Inputs that give nothing to write. */
    char empty[4096], blank[4096], out[4096];
    path_in(empty, sizeof empty, "empty.txt");
    path_in(blank, sizeof blank, "blank.txt");
    path_in(out, sizeof out, "never");
    write_text(empty, "", 0);
    write_text(blank, "\n \n\t\n", 5);
    files[0] = empty;
    st = lm_data_write(tok, files, 1, out, &o, NULL, NULL, NULL);
    CHECKF(st == LM_ERR_ARG && strstr(lm_errmsg(), empty) && strstr(lm_errmsg(), "empty"), "%s", lm_errmsg());
    files[0] = blank;
    st = lm_data_write(tok, files, 1, out, &o, NULL, NULL, NULL);
    CHECKF(st == LM_ERR_ARG && strstr(lm_errmsg(), blank) && strstr(lm_errmsg(), "blank"), "%s", lm_errmsg());
    char missing[4096];
    path_in(missing, sizeof missing, "missing.txt");
    files[0] = missing;
    st = lm_data_write(tok, files, 1, out, &o, NULL, NULL, NULL);
    CHECKF(st == LM_ERR_IO && strstr(lm_errmsg(), missing), "%s", lm_errmsg());
    files[0] = txt;
    o.val_fraction = 1.5;
    st = lm_data_write(tok, files, 1, out, &o, NULL, NULL, NULL);
    CHECKF(st == LM_ERR_ARG && strstr(lm_errmsg(), "fraction"), "%s", lm_errmsg());

    /* A tokenizer with no EOS or BOS cannot separate documents. */
    lm_tokenizer *plain = NULL;
    CHECK(lm_bpe_train(files, 1, 260, NULL, 0, &plain) == LM_OK);
    o.val_fraction = 0;
    st = lm_data_write(plain, files, 1, out, &o, NULL, NULL, NULL);
    CHECKF(st == LM_ERR_UNSUPPORTED && strstr(lm_errmsg(), "EOS"), "%s", lm_errmsg());
    lm_tokenizer_free(plain);
}

int main(void) {
    lm_set_threads(2);
    const char *fx = getenv("LUMEN_FIXTURES");
    if (!fx) fx = "tests/fixtures";
    char tp[4096];
    snprintf(tp, sizeof tp, "%s/bpe_train/tokenizer.json", fx);
    snprintf(tmp_root, sizeof tmp_root, "%s/data_%ld", check_tmpdir(), (long)getpid());
    mkdir(tmp_root, 0777);
    lm_tokenizer *tok = NULL;
    if (lm_tokenizer_load(tp, &tok) != LM_OK) {
        fprintf(stderr, "%s\n", lm_errmsg());
        return 1;
    }
    CHECK(lm_tokenizer_eos(tok) == 511 && !lm_tokenizer_wants_bos(tok));
    test_write_and_read(tok);
    test_widths();
    test_corrupt();
    test_bad_dirs(tok);
    test_bos_placement();
    lm_tokenizer_free(tok);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_root);
    return check_result();
}
