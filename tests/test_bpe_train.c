/* test_bpe_train.c - BPE training: deterministic output identical to the committed tokenizer.json, encodings equal to
 * Hugging Face's, round trips, the tie rule, limits, and errors. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"

#include <jansson.h>
#include <stdint.h>
#include <unistd.h>

#include "lumen/tokenizer.h"

static char tmp_files[8][4096];
static int n_tmp_files = 0;

/* A file in the test's temporary directory holding n bytes of s; its path. */
static const char *tmp_file(const char *name, const char *s, size_t n) {
    char *p = tmp_files[n_tmp_files++];
    snprintf(p, sizeof tmp_files[0], "%s/bpe_train_%ld_%s", check_tmpdir(), (long)getpid(), name);
    FILE *f = fopen(p, "wb");
    if (f) {
        if (n) fwrite(s, 1, n, f);
        fclose(f);
    }
    return p;
}

static int same_ids(const int32_t *a, size_t na, json_t *ids) {
    if (na != json_array_size(ids)) return 0;
    for (size_t i = 0; i < na; i++)
        if (a[i] != json_integer_value(json_array_get(ids, i))) return 0;
    return 1;
}

/* decode(encode(text)) == text, special tokens in the text read as plain text. */
static int round_trips(const lm_tokenizer *t, const char *text, size_t len) {
    int32_t *ids = NULL;
    size_t n = 0;
    char *back = NULL;
    size_t blen = 0;
    int ok = lm_tokenizer_encode_ex(t, text, len, LM_TOK_NO_SPECIAL, &ids, &n) == LM_OK &&
             lm_tokenizer_decode(t, ids, n, &back, &blen) == LM_OK && blen == len && memcmp(back, text, len) == 0;
    free(ids);
    free(back);
    return ok;
}

/* The fixture cases: lumen's encoding of each text is the ids Hugging Face gave. */
static void check_cases(const lm_tokenizer *t, json_t *cases, const char *which) {
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        int32_t *ids = NULL;
        size_t n = 0;
        lm_status st = lm_tokenizer_encode_ex(t, text, len, 0, &ids, &n);
        CHECKF(st == LM_OK && same_ids(ids, n, json_object_get(c, "ids")), "%s: case %zu \"%s\" encodes differently",
               which, i, text);
        free(ids);
        CHECKF(round_trips(t, text, len), "%s: case %zu \"%s\" does not round trip", which, i, text);
    }
}

static int cmp_files(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int same = lm_read_file(a, &x, &nx) == LM_OK && lm_read_file(b, &y, &ny) == LM_OK && nx == ny &&
               memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return same;
}

static const char *piece(const lm_tokenizer *t, int id) {
    static char buf[256];
    size_t n;
    const char *p = lm_tokenizer_piece(t, id, &n);
    snprintf(buf, sizeof buf, "%.*s", (int)n, p);
    return buf;
}

typedef struct stop_after {
    int calls, stop_at;
} stop_after;

static int count_progress(void *ud, const char *phase, size_t done, size_t total) {
    stop_after *s = ud;
    (void)phase;
    (void)done;
    (void)total;
    return ++s->calls == s->stop_at;
}

int main(void) {
    char a1[4096], a2[4096];
    const char *story = check_asset("text/cs336_tinystories_sample.txt", a1, sizeof a1);
    const char *address = check_asset("text/cs336_address.txt", a2, sizeof a2);
    if (!story || !address) return CHECK_SKIP;
    const char *fx = getenv("LUMEN_FIXTURES");
    if (!fx) fx = "tests/fixtures";
    char committed[4096], expected[4096], out[4096];
    snprintf(committed, sizeof committed, "%s/bpe_train/tokenizer.json", fx);
    snprintf(expected, sizeof expected, "%s/bpe_train/expected_ids.json", fx);
    snprintf(out, sizeof out, "%s/bpe_train_%ld.json", check_tmpdir(), (long)getpid());
    static const char *const EOT[] = {"<|endoftext|>"};
    const char *files[] = {story, address};

    /* Training again gives the committed file byte for byte. */
    lm_bpe_train_opts o = {0};
    o.vocab_size = 512;
    o.special_tokens = EOT;
    o.n_special = 1;
    stop_after calls = {0, -1};
    o.progress = count_progress;
    o.progress_ud = &calls;
    lm_tokenizer *t = NULL;
    lm_bpe_train_stats stats;
    lm_status st = lm_bpe_train_ex(files, 2, &o, &t, &stats);
    CHECKF(st == LM_OK, "%s", lm_errmsg());
    if (st != LM_OK) return check_result();
    CHECK(calls.calls > 1);
    CHECK(lm_tokenizer_vocab_size(t) == 512);
    CHECK(stats.vocab_size == 512 && stats.n_merges == 255);
    CHECK(lm_tokenizer_get_kind(t) == LM_TOK_BPE);
    CHECK(lm_tokenizer_bos(t) == 511 && lm_tokenizer_eos(t) == 511);
    CHECK(strcmp(piece(t, 511), "<|endoftext|>") == 0);
    CHECK(strcmp(piece(t, 'a'), "a") == 0 && strcmp(piece(t, ' '), "\xc4\xa0") == 0); /* id b is byte b */
    CHECK(lm_tokenizer_save_json(t, out) == LM_OK);
    CHECKF(cmp_files(out, committed), "%s differs from %s: training is not deterministic, or the fixture is stale",
           out, committed);
    /* The special token is cut out of the text before learning: no learned token spans part of it. */
    for (int id = 256; id < 511; id++) CHECKF(!strstr(piece(t, id), "<|") && !strstr(piece(t, id), "|>"), "token %d", id);

    /* Encodings equal Hugging Face's, for the trained tokenizer and for the file read back. */
    json_error_t jerr;
    json_t *exp = json_load_file(expected, 0, &jerr);
    CHECKF(exp != NULL, "%s: %s", expected, jerr.text);
    json_t *cases = json_object_get(exp, "cases");
    CHECK(json_array_size(cases) >= 30);
    check_cases(t, cases, "trained");
    lm_tokenizer *loaded = NULL;
    st = lm_tokenizer_load_json(committed, &loaded);
    CHECKF(st == LM_OK, "%s", lm_errmsg());
    if (loaded) {
        check_cases(loaded, cases, "loaded");
        CHECK(lm_tokenizer_eos(loaded) == 511);
    }
    lm_tokenizer_free(loaded);
    json_decref(exp);

    /* Round trips of the training text and of bytes that are not UTF-8. */
    char *text = NULL;
    size_t tlen = 0;
    CHECK(lm_read_file(story, &text, &tlen) == LM_OK);
    CHECK(text && round_trips(t, text, tlen));
    free(text);
    static const char junk[] = "ok \xff\xfe bad \xc3 cut \xe2\x82 end \xed\xa0\x80 surrogate \xf4\x90\x80\x80";
    CHECK(round_trips(t, junk, sizeof junk - 1));
    lm_tokenizer_free(t);

    /* Ties go to the smallest (left id, right id): in "ab ab cd cd" the pairs (a,b), (' ',c) and
     * (c,d) all occur twice, and (' ',c) = (32, 99) is the smallest; then (a,b) = (97, 98) beats
     * (' c', d) = (256, 100). */
    static const char tie[] = "ab ab cd cd";
    const char *tie_file = tmp_file("tie.txt", tie, sizeof tie - 1);
    st = lm_bpe_train(&tie_file, 1, 259, NULL, 0, &t);
    CHECKF(st == LM_OK, "%s", lm_errmsg());
    if (st == LM_OK) {
        CHECKF(strcmp(piece(t, 256), "\xc4\xa0" "c") == 0, "first merge made \"%s\"", piece(t, 256));
        CHECKF(strcmp(piece(t, 257), "ab") == 0, "second merge made \"%s\"", piece(t, 257));
        CHECKF(strcmp(piece(t, 258), "\xc4\xa0" "cd") == 0, "third merge made \"%s\"", piece(t, 258));
        CHECK(lm_tokenizer_vocab_size(t) == 259 && lm_tokenizer_eos(t) == -1);
    }
    lm_tokenizer_free(t);

    /* Running out of pairs is not an error: the vocabulary is smaller than asked. */
    st = lm_bpe_train_ex(&tie_file, 1, &(lm_bpe_train_opts){.vocab_size = 1000, .special_tokens = EOT, .n_special = 1},
                         &t, &stats);
    CHECKF(st == LM_OK, "%s", lm_errmsg());
    if (st == LM_OK) {
        CHECK(stats.vocab_size < 1000 && lm_tokenizer_vocab_size(t) == stats.vocab_size);
        CHECK(lm_tokenizer_eos(t) == stats.vocab_size - 1);
    }
    lm_tokenizer_free(t);

    /* max_bytes reads a prefix: the same as training on that prefix. */
    CHECK(lm_read_file(story, &text, &tlen) == LM_OK);
    const char *prefix = tmp_file("prefix.txt", text, 2000);
    free(text);
    lm_tokenizer *t1 = NULL, *t2 = NULL;
    CHECK(lm_bpe_train_ex(&story, 1, &(lm_bpe_train_opts){.vocab_size = 400, .max_bytes = 2000}, &t1, NULL) == LM_OK);
    CHECK(lm_bpe_train(&prefix, 1, 400, NULL, 0, &t2) == LM_OK);
    CHECK(t1 && t2 && lm_tokenizer_vocab_size(t1) == lm_tokenizer_vocab_size(t2));
    for (int id = 0; t1 && t2 && id < lm_tokenizer_vocab_size(t1); id++) {
        size_t n1, n2;
        const char *p1 = lm_tokenizer_piece(t1, id, &n1), *p2 = lm_tokenizer_piece(t2, id, &n2);
        CHECKF(n1 == n2 && memcmp(p1, p2, n1) == 0, "token %d differs", id);
    }
    lm_tokenizer_free(t1);
    lm_tokenizer_free(t2);

    /* min_frequency stops early. */
    CHECK(lm_bpe_train_ex(&story, 1, &(lm_bpe_train_opts){.vocab_size = 4000, .min_frequency = 5}, &t, &stats) == LM_OK);
    CHECK(stats.vocab_size > 256 && stats.vocab_size < 4000);
    lm_tokenizer_free(t);

    /* Errors, each naming what is wrong. */
    const char *empty = tmp_file("empty.txt", "", 0);
    t = NULL;
    st = lm_bpe_train(&empty, 1, 300, EOT, 1, &t);
    CHECKF(st == LM_ERR_ARG && strstr(lm_errmsg(), empty) && strstr(lm_errmsg(), "empty"), "%s", lm_errmsg());
    CHECK(t == NULL);
    st = lm_bpe_train(files, 2, 256, EOT, 1, &t);
    CHECKF(st == LM_ERR_ARG && strstr(lm_errmsg(), "256") && strstr(lm_errmsg(), "special"), "%s", lm_errmsg());
    st = lm_bpe_train(files, 2, 100, NULL, 0, &t);
    CHECKF(st == LM_ERR_ARG && strstr(lm_errmsg(), "smaller"), "%s", lm_errmsg());
    const char *missing[] = {story, "/nonexistent/dir/corpus.txt"};
    st = lm_bpe_train(missing, 2, 300, EOT, 1, &t);
    CHECKF(st == LM_ERR_IO && strstr(lm_errmsg(), "/nonexistent/dir/corpus.txt"), "%s", lm_errmsg());
    st = lm_bpe_train(&story, 1, 300, (const char *const[]){"<a>", "<a>"}, 2, &t);
    CHECKF(st == LM_ERR_ARG && strstr(lm_errmsg(), "twice"), "%s", lm_errmsg());
    st = lm_bpe_train(&story, 1, 300, (const char *const[]){""}, 1, &t);
    CHECKF(st == LM_ERR_ARG && strstr(lm_errmsg(), "empty"), "%s", lm_errmsg());
    st = lm_bpe_train(NULL, 0, 300, NULL, 0, &t);
    CHECKF(st == LM_ERR_ARG && strstr(lm_errmsg(), "no input"), "%s", lm_errmsg());
    /* A special token spelled like a byte token ("!" is byte 0x21's piece) is refused. */
    st = lm_bpe_train(&story, 1, 300, (const char *const[]){"!"}, 1, &t);
    CHECKF(st == LM_ERR_ARG && strstr(lm_errmsg(), "spelled like"), "%s", lm_errmsg());
    /* The progress callback can stop training. */
    calls = (stop_after){0, 2};
    o.progress_ud = &calls;
    st = lm_bpe_train_ex(files, 2, &o, &t, NULL);
    CHECKF(st == LM_ERR_ARG && strstr(lm_errmsg(), "stopped"), "%s", lm_errmsg());
    CHECK(t == NULL);

    for (int i = 0; i < n_tmp_files; i++) unlink(tmp_files[i]);
    unlink(out);
    return check_result();
}
