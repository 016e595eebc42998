/* test_tokenizer_bpe.c - merge-rank BPE: GPT-2's reference tokenizations from encoder.json + vocab.bpe, GGUF and
 * tokenizer.json, Llama-3- and Llama-2-style tokenizer.json checked against Hugging Face, round trips, saving, broken files. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"

#include <dirent.h>
#include <jansson.h>
#include <stdint.h>
#include <unistd.h>

#include "lumen/format.h"
#include "lumen/tokenizer.h"

/* ---- reference cases -------------------------------------------------------------------- */

typedef struct tcase {
    char *text;
    size_t len;
    int32_t *ids;
    size_t n;
} tcase;

typedef struct tcases {
    tcase *v;
    size_t n;
} tcases;

static void free_cases(tcases *c) {
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].text);
        free(c->v[i].ids);
    }
    free(c->v);
    c->v = NULL;
    c->n = 0;
}

/* gpt2_reference_tokenizations.json: {"cases": [{"text": ..., "ids": [...]}, ...]}. */
static int load_ref_json(const char *path, tcases *out) {
    json_error_t err;
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, &err);
    json_t *cases = json_object_get(root, "cases");
    if (!json_is_array(cases)) {
        json_decref(root);
        return 0;
    }
    out->n = json_array_size(cases);
    out->v = calloc(out->n, sizeof *out->v);
    for (size_t i = 0; out->v && i < out->n; i++) {
        json_t *c = json_array_get(cases, i), *text = json_object_get(c, "text"), *ids = json_object_get(c, "ids");
        tcase *tc = &out->v[i];
        tc->len = json_string_length(text);
        tc->text = malloc(tc->len + 1);
        memcpy(tc->text, json_string_value(text), tc->len + 1);
        tc->n = json_array_size(ids);
        tc->ids = malloc((tc->n + 1) * sizeof *tc->ids);
        for (size_t k = 0; k < tc->n; k++) tc->ids[k] = (int32_t)json_integer_value(json_array_get(ids, k));
    }
    json_decref(root);
    return out->v != NULL;
}

/* llama.cpp's .inp/.out pair, split as Python's str.split splits them: the .inp on SEP, the .out
 * on newlines, so a trailing SEP / newline leaves one more, empty, text / line (the empty text is a
 * case of its own). */
static int load_ggml_cases(const char *inp_path, const char *out_path, tcases *out) {
    static const char SEP[] = "\n__ggml_vocab_test__\n";
    const size_t seplen = sizeof SEP - 1;
    char *inp = NULL, *outs = NULL;
    size_t inp_len, out_len;
    if (lm_read_file(inp_path, &inp, &inp_len) != LM_OK || lm_read_file(out_path, &outs, &out_len) != LM_OK) {
        free(inp);
        return 0;
    }
    out->v = calloc(inp_len / seplen + 2, sizeof *out->v);
    out->n = 0;
    size_t pos = 0;
    for (int last = 0; out->v && !last;) {
        size_t end = inp_len;
        last = 1;
        for (size_t i = pos; i + seplen <= inp_len; i++)
            if (memcmp(inp + i, SEP, seplen) == 0) {
                end = i;
                last = 0;
                break;
            }
        tcase *tc = &out->v[out->n++];
        tc->len = end - pos;
        tc->text = malloc(tc->len + 1);
        memcpy(tc->text, inp + pos, tc->len);
        tc->text[tc->len] = 0;
        pos = end + seplen;
    }
    char *line = outs;
    size_t lines = 0;
    for (size_t c = 0; out->v && c < out->n && line; c++, lines++) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        tcase *tc = &out->v[c];
        tc->ids = malloc((strlen(line) / 2 + 2) * sizeof *tc->ids);
        char *p = line, *e;
        for (;;) {
            long v = strtol(p, &e, 10);
            if (e == p) break;
            tc->ids[tc->n++] = (int32_t)v;
            p = e;
        }
        line = nl ? nl + 1 : NULL;
    }
    int ok = out->v && lines == out->n && line == NULL; /* one line per text, none left over */
    free(inp);
    free(outs);
    return ok;
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s:", label);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

/* Encodes text with flags; 1 if it gives exactly want[0..nwant). */
static int encodes_to(const lm_tokenizer *t, const char *text, size_t len, unsigned flags, const int32_t *want,
                      size_t nwant) {
    int32_t *ids = NULL;
    size_t n = 0;
    lm_status st = lm_tokenizer_encode_ex(t, text, len, flags, &ids, &n);
    int ok = st == LM_OK && n == nwant && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
    if (!ok) {
        fprintf(stderr, "  text \"%.*s\": %s %s\n", (int)len, text, lm_status_name(st), st ? lm_errmsg() : "");
        print_ids("got     ", ids, n);
        print_ids("expected", want, nwant);
    }
    free(ids);
    return ok;
}

/* Encodes and decodes; the decoded text must equal the input byte for byte, and so must the
 * concatenated streaming texts. */
static int round_trips(const lm_tokenizer *t, const char *text, size_t len, unsigned flags) {
    int32_t *ids = NULL;
    size_t n = 0;
    char *back = NULL;
    size_t blen = 0;
    int ok = lm_tokenizer_encode_ex(t, text, len, flags, &ids, &n) == LM_OK &&
             lm_tokenizer_decode(t, ids, n, &back, &blen) == LM_OK && blen == len && memcmp(back, text, len) == 0;
    if (ok) {
        size_t o = 0;
        for (size_t i = 0; i < n && ok; i++) {
            char buf[8];
            size_t l;
            const char *s = lm_tokenizer_token_text(t, i ? ids[i - 1] : -1, ids[i], buf, &l);
            ok = o + l <= len && memcmp(text + o, s, l) == 0;
            o += l;
        }
        ok = ok && o == len;
    }
    free(ids);
    free(back);
    return ok;
}

static void check_cases(const lm_tokenizer *t, const tcases *c, const char *label, int expect_round_trip) {
    int bad = 0, bad_rt = 0;
    for (size_t i = 0; i < c->n; i++) {
        const tcase *tc = &c->v[i];
        int ok = encodes_to(t, tc->text, tc->len, LM_TOK_NO_SPECIAL, tc->ids, tc->n);
        if (!ok) fprintf(stderr, "  (%s case %zu)\n", label, i);
        bad += !ok;
        if (expect_round_trip) bad_rt += !round_trips(t, tc->text, tc->len, LM_TOK_NO_SPECIAL);
    }
    CHECKF(bad == 0, "%s: %d of %zu cases differ", label, bad, c->n);
    CHECKF(bad_rt == 0, "%s: %d of %zu cases do not round trip", label, bad_rt, c->n);
}

static int same_encoding(const lm_tokenizer *a, const lm_tokenizer *b, const char *text, size_t len, unsigned flags) {
    int32_t *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    /* Failing alike (a toy vocabulary without some byte) counts as the same. */
    lm_status sa = lm_tokenizer_encode_ex(a, text, len, flags, &x, &nx);
    lm_status sb = lm_tokenizer_encode_ex(b, text, len, flags, &y, &ny);
    int ok = sa == sb && nx == ny && (nx == 0 || memcmp(x, y, nx * sizeof *x) == 0);
    free(x);
    free(y);
    return ok;
}

/* Odd and random byte strings, invalid UTF-8 above all: they must encode and decode back exactly. */
static void check_round_trips(const lm_tokenizer *t, const char *label) {
    static const struct {
        const char *s;
        size_t n;
    } odd[] = {
#define ODD(lit) {lit, sizeof lit - 1}
        ODD("\xff\xfe abc \xc3"),
        ODD("\xc3"),
        ODD("\xc0\xaf overlong"),
        ODD("\xed\xa0\x80 surrogate"),
        ODD("\xf0\x9f\x98 cut \xf0\x9f\x98\x80 whole"),
        ODD("\x80\x80\x80"),
        ODD("a\0b\0 \0"),
        ODD("caf\xe9 latin-1 in\xa0the middle"),
        ODD("  \xe2\x96\x81 literal U+2581  "),
        ODD("\xf4\x90\x80\x80 beyond U+10FFFF"),
        ODD("it's\xff" "the 123\xfe" "4567"),
        ODD("\n\n\n\t \r\n"),
        ODD("<|endoftext"),
#undef ODD
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        /* SentencePiece-style text cannot tell a written U+2581 from a space (Hugging Face's
         * Llama tokenizer.json neither). */
        if (lm_tokenizer_get_kind(t) == LM_TOK_BPE_SPM && strstr(odd[i].s, "\xe2\x96\x81")) continue;
        int ok = round_trips(t, odd[i].s, odd[i].n, 0) && round_trips(t, odd[i].s, odd[i].n, LM_TOK_NO_SPECIAL);
        if (!ok) fprintf(stderr, "  %s: odd text %zu does not round trip\n", label, i);
        bad += !ok;
    }
    lm_rng rng;
    lm_rng_seed(&rng, 77);
    char buf[200];
    for (int k = 0; k < 400; k++) {
        size_t n = lm_rng_u32(&rng) % sizeof buf;
        for (size_t i = 0; i < n; i++) {
            uint32_t r = lm_rng_u32(&rng);
            switch (r % 5) {
            case 0: buf[i] = ' '; break;
            case 1: buf[i] = (char)('a' + (r >> 8) % 26); break;
            case 2: buf[i] = (char)(0x80 + (r >> 8) % 0x80); break;
            case 3: buf[i] = "\n\t'0123456789"[(r >> 8) % 13]; break;
            default: buf[i] = (char)(r >> 8); break;
            }
        }
        bad += !round_trips(t, buf, n, 0);
    }
    CHECKF(bad == 0, "%s: %d texts did not round trip", label, bad);
}

/* ---- files -------------------------------------------------------------------------------- */

static char g_dir[512];

/* Removes the test directory (files and one level of subdirectories) unless LUMEN_KEEP_TMP is set,
 * which keeps the written tokenizer.json files for loading into other tools. */
static void remove_tree(const char *dir, int depth) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            if (depth < 2) remove_tree(p, depth + 1);
        } else {
            unlink(p);
        }
    }
    closedir(d);
    rmdir(dir);
}

static const char *tmp_path(const char *name, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", g_dir, name);
    return buf;
}

static int write_file(const char *path, const void *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(d, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

static int write_str(const char *path, const char *s) { return write_file(path, s, strlen(s)); }

/* Loads a tokenizer.json written from text; it must fail with want, naming the file and saying
 * needle. */
static void json_fails(const char *text, lm_status want, const char *needle) {
    char p[600];
    tmp_path("broken_tokenizer.json", p, sizeof p);
    if (!write_str(p, text)) {
        CHECKF(0, "cannot write %s", p);
        return;
    }
    lm_tokenizer *t = (lm_tokenizer *)&t;
    lm_status st = lm_tokenizer_load_json(p, &t);
    int ok = st == want && t == NULL && strstr(lm_errmsg(), p) && strstr(lm_errmsg(), needle);
    CHECKF(ok, "%.60s...: got %s \"%s\", wanted %s mentioning \"%s\"", text, lm_status_name(st), lm_errmsg(),
           lm_status_name(want), needle);
    if (st == LM_OK) lm_tokenizer_free(t);
}

/* A byte-level tokenizer.json around the given vocab, merges and extra fields. */
static void bl_json(char *buf, size_t n, const char *vocab, const char *merges, const char *pre) {
    snprintf(buf, n,
             "{\"added_tokens\": [], \"normalizer\": null, \"pre_tokenizer\": %s, \"decoder\": {\"type\": \"ByteLevel\"},"
             " \"model\": {\"type\": \"BPE\", \"vocab\": %s, \"merges\": %s}}",
             pre, vocab, merges);
}

static void check_broken_json(const char *good_path) {
    char b[4096];
    const char *BL = "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}";
    json_fails("this is not { json", LM_ERR_FORMAT, "not valid JSON");
    json_fails("", LM_ERR_FORMAT, "not valid JSON");
    json_fails("[1, 2]", LM_ERR_FORMAT, "not a JSON object");
    json_fails("{\"version\": \"1.0\"}", LM_ERR_FORMAT, "no \"model\"");
    json_fails("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}", LM_ERR_UNSUPPORTED, "WordPiece");
    json_fails("{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}", LM_ERR_UNSUPPORTED, "Unigram");
    json_fails("{\"model\": {\"vocab\": {\"a\": 0}}}", LM_ERR_FORMAT, "neither a type nor merges");
    bl_json(b, sizeof b, "{\"a\": 0, \"b\": 1, \"ab\": 2}", "[\"a c\"]", BL);
    json_fails(b, LM_ERR_FORMAT, "\"c\" is not in the vocabulary");
    bl_json(b, sizeof b, "{\"a\": 0, \"b\": 1}", "[\"a b\"]", BL);
    json_fails(b, LM_ERR_FORMAT, "merged piece \"ab\"");
    bl_json(b, sizeof b, "{\"a\": 0, \"b\": 1, \"ab\": 2}", "[[\"x\", \"b\"]]", BL);
    json_fails(b, LM_ERR_FORMAT, "\"x\" is not in the vocabulary");
    bl_json(b, sizeof b, "{\"a\": 0, \"b\": 1}", "[\"ab\"]", BL);
    json_fails(b, LM_ERR_FORMAT, "not two pieces");
    bl_json(b, sizeof b, "{\"a\": 0, \"b\": 1}", "[7]", BL);
    json_fails(b, LM_ERR_FORMAT, "merges[0]");
    bl_json(b, sizeof b, "{\"a\": 0, \"b\": 1}", "{}", BL);
    json_fails(b, LM_ERR_FORMAT, "model.merges");
    bl_json(b, sizeof b, "{\"a\": -1}", "[]", BL);
    json_fails(b, LM_ERR_FORMAT, "id -1");
    bl_json(b, sizeof b, "{\"a\": 0, \"b\": 99999999999}", "[]", BL);
    json_fails(b, LM_ERR_FORMAT, "id 99999999999");
    bl_json(b, sizeof b, "{\"a\": \"0\"}", "[]", BL);
    json_fails(b, LM_ERR_FORMAT, "not an integer");
    bl_json(b, sizeof b, "{\"a\": 0, \"b\": 0}", "[]", BL);
    json_fails(b, LM_ERR_FORMAT, "both have id 0");
    bl_json(b, sizeof b, "{\"a\": 0, \"a\": 1}", "[]", BL);
    json_fails(b, LM_ERR_FORMAT, "duplicate");
    bl_json(b, sizeof b, "{\"a\": 0, \"c\": 2}", "[]", BL);
    json_fails(b, LM_ERR_FORMAT, "no token has id 1");
    bl_json(b, sizeof b, "{}", "[]", BL);
    json_fails(b, LM_ERR_FORMAT, "empty");
    bl_json(b, sizeof b, "[\"a\"]", "[]", BL);
    json_fails(b, LM_ERR_FORMAT, "model.vocab is not a JSON object");
    bl_json(b, sizeof b, "{\"a\": 0}", "[]", "{\"type\": \"Whitespace\"}");
    json_fails(b, LM_ERR_UNSUPPORTED, "\"Whitespace\"");
    bl_json(b, sizeof b, "{\"a\": 0}", "[]", "null");
    json_fails(b, LM_ERR_UNSUPPORTED, "pre_tokenizer null");
    bl_json(b, sizeof b, "{\"a\": 0}", "[]",
            "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(unclosed\"}, "
            "\"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"use_regex\": false}]}");
    json_fails(b, LM_ERR_UNSUPPORTED, "does not compile");
    bl_json(b, sizeof b, "{\"a\": 0}", "[]",
            "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, "
            "\"behavior\": \"MergedWithNext\", \"invert\": false}, {\"type\": \"ByteLevel\"}]}");
    json_fails(b, LM_ERR_UNSUPPORTED, "MergedWithNext");
    bl_json(b, sizeof b, "{\"a\": 0}", "[]",
            "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"ByteLevel\"}, {\"type\": \"Split\", \"pattern\": "
            "{\"Regex\": \"a\"}, \"behavior\": \"Isolated\"}]}");
    json_fails(b, LM_ERR_UNSUPPORTED, "after ByteLevel");
    bl_json(b, sizeof b, "{\"a\": 0}", "[]", "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\"}]}");
    json_fails(b, LM_ERR_UNSUPPORTED, "\"Digits\"");
    json_fails("{\"normalizer\": {\"type\": \"NFKC\"}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": "
               "{\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
               LM_ERR_UNSUPPORTED, "\"NFKC\"");
    json_fails("{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"dropout\": 0.1, "
               "\"vocab\": {\"a\": 0}, \"merges\": []}}",
               LM_ERR_UNSUPPORTED, "dropout");
    json_fails("{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", "
               "\"continuing_subword_prefix\": \"##\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
               LM_ERR_UNSUPPORTED, "continuing_subword_prefix");
    json_fails("{\"added_tokens\": [{\"id\": \"1\", \"content\": \"x\"}], \"pre_tokenizer\": {\"type\": \"ByteLevel\"}, "
               "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
               LM_ERR_FORMAT, "added_tokens[0]");
    json_fails("{\"added_tokens\": [{\"id\": 1, \"content\": \"x\"}, {\"id\": 1, \"content\": \"y\"}], \"pre_tokenizer\": "
               "{\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
               LM_ERR_FORMAT, "id 1 twice");
    json_fails("{\"added_tokens\": [{\"id\": 1, \"content\": \"x\", \"special\": \"yes\"}], \"pre_tokenizer\": "
               "{\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
               LM_ERR_FORMAT, "not a boolean");
    json_fails("{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", "
               "\"vocab\": {\"a\": 0}, \"merges\": []}}",
               LM_ERR_FORMAT, "unk_token");

    /* A vocabulary without every byte loads, and text it cannot spell is an error, not a crash. */
    char p[600];
    bl_json(b, sizeof b, "{\"a\": 0, \"b\": 1, \"ab\": 2}", "[\"a b\"]", BL);
    tmp_path("small_tokenizer.json", p, sizeof p);
    lm_tokenizer *t = NULL;
    CHECK(write_str(p, b) && lm_tokenizer_load_json(p, &t) == LM_OK);
    if (t) {
        static const int32_t abab[] = {2, 2, 0};
        CHECK(encodes_to(t, "ababa", 5, 0, abab, 3));
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(lm_tokenizer_encode(t, "abc", 3, 0, &ids, &n) == LM_ERR_UNSUPPORTED && ids == NULL &&
              strstr(lm_errmsg(), p));
        CHECK(lm_tokenizer_encode(t, "a", 1, 1, &ids, &n) == LM_ERR_ARG); /* no BOS */
        lm_tokenizer_free(t);
    }

    /* The real file cut anywhere, and with bytes flipped: an error or a tokenizer, never a crash. */
    char *d = NULL;
    size_t n = 0;
    if (lm_read_file(good_path, &d, &n) != LM_OK) return;
    tmp_path("cut_tokenizer.json", p, sizeof p);
    int bad = 0;
    for (size_t k = 0; k < 60; k++) {
        size_t cut = n * k / 60 + k;
        if (!write_file(p, d, cut)) break;
        t = (lm_tokenizer *)&t;
        lm_status st = lm_tokenizer_load_json(p, &t);
        bad += !(st == LM_ERR_FORMAT && t == NULL && strstr(lm_errmsg(), p));
    }
    CHECKF(bad == 0, "%d truncated tokenizer.json files misbehaved", bad);
    lm_rng rng;
    lm_rng_seed(&rng, 5);
    for (int k = 0; k < 40; k++) {
        char *m = malloc(n);
        memcpy(m, d, n);
        for (int j = 0; j < 4; j++) m[lm_rng_u32(&rng) % n] = "{}[]\",:0 x\\"[lm_rng_u32(&rng) % 11];
        write_file(p, m, n);
        free(m);
        t = NULL;
        lm_status st = lm_tokenizer_load_json(p, &t);
        if (st == LM_OK) {
            int32_t *ids = NULL;
            size_t ni;
            (void)lm_tokenizer_encode(t, "Hello, world! 123", 17, 0, &ids, &ni);
            free(ids);
            lm_tokenizer_free(t);
        } else {
            bad += t != NULL || !strstr(lm_errmsg(), p);
        }
    }
    CHECKF(bad == 0, "damaged tokenizer.json files misbehaved");
    free(d);
    t = (lm_tokenizer *)&t;
    CHECK(lm_tokenizer_load_json("/nonexistent/tokenizer.json", &t) == LM_ERR_IO && t == NULL &&
          strstr(lm_errmsg(), "/nonexistent/tokenizer.json"));
}

/* encoder.json / vocab.bpe that lie. */
static void gpt2_files_fail(const char *enc, const char *bpe, lm_status want, const char *needle, int bpe_named) {
    char pe[600], pb[600];
    tmp_path("broken_encoder.json", pe, sizeof pe);
    tmp_path("broken_vocab.bpe", pb, sizeof pb);
    if (!write_str(pe, enc) || !write_str(pb, bpe)) {
        CHECK(0);
        return;
    }
    lm_tokenizer *t = (lm_tokenizer *)&t;
    lm_status st = lm_tokenizer_load_gpt2_files(pe, pb, &t);
    int ok = st == want && t == NULL && strstr(lm_errmsg(), bpe_named ? pb : pe) && strstr(lm_errmsg(), needle);
    CHECKF(ok, "encoder %.40s / vocab %.40s: got %s \"%s\"", enc, bpe, lm_status_name(st), lm_errmsg());
    if (st == LM_OK) lm_tokenizer_free(t);
}

static void check_broken_gpt2_files(void) {
    gpt2_files_fail("{\"a\": 0, \"b\": 1, \"ab\": 2", "#version: 0.2\na b\n", LM_ERR_FORMAT, "not valid JSON", 0);
    gpt2_files_fail("[\"a\"]", "a b\n", LM_ERR_FORMAT, "not a JSON object", 0);
    gpt2_files_fail("{\"a\": 0, \"b\": 0}", "", LM_ERR_FORMAT, "both have id 0", 0);
    gpt2_files_fail("{\"a\": 0, \"b\": 2}", "", LM_ERR_FORMAT, "no token has id 1", 0);
    gpt2_files_fail("{\"a\": 1.5}", "", LM_ERR_FORMAT, "not an integer", 0);
    gpt2_files_fail("{}", "", LM_ERR_FORMAT, "empty", 0);
    gpt2_files_fail("{\"a\": 0, \"b\": 1, \"ab\": 2}", "#version: 0.2\nab\n", LM_ERR_FORMAT, "line 2", 1);
    gpt2_files_fail("{\"a\": 0, \"b\": 1, \"ab\": 2}", "a b\na  b\n", LM_ERR_FORMAT, "line 2", 1);
    gpt2_files_fail("{\"a\": 0, \"b\": 1, \"ab\": 2}", "#version: 0.2\na b\n\nb a\n", LM_ERR_FORMAT, "line 3", 1);
    gpt2_files_fail("{\"a\": 0, \"b\": 1, \"ab\": 2}", "#version: 0.2\na b\nb a\n", LM_ERR_FORMAT,
                    "line 3: merge \"b a\": merged piece \"ba\"", 1);
    gpt2_files_fail("{\"a\": 0, \"b\": 1, \"ab\": 2}", "a q\n", LM_ERR_FORMAT, "line 1", 1);
    lm_tokenizer *t = (lm_tokenizer *)&t;
    char pe[600];
    tmp_path("broken_encoder.json", pe, sizeof pe);
    CHECK(lm_tokenizer_load_gpt2_files(pe, "/nonexistent/vocab.bpe", &t) == LM_ERR_IO && t == NULL &&
          strstr(lm_errmsg(), "/nonexistent/vocab.bpe"));
    /* a well-formed pair, CRLF lines and no final newline */
    char pb[600];
    tmp_path("broken_vocab.bpe", pb, sizeof pb);
    t = NULL;
    CHECK(write_str(pe, "{\"a\": 0, \"b\": 1, \"ab\": 2, \"aba\": 3}") && write_str(pb, "#version: 0.2\r\na b\r\nab a") &&
          lm_tokenizer_load_gpt2_files(pe, pb, &t) == LM_OK);
    if (t) {
        static const int32_t want[] = {3, 2};
        CHECK(lm_tokenizer_get_kind(t) == LM_TOK_BPE && encodes_to(t, "abaab", 5, 0, want, 2));
        CHECK(lm_tokenizer_bos(t) == -1 && lm_tokenizer_eos(t) == -1);
        lm_tokenizer_free(t);
    }
}

/* ---- crafted GGUF vocabularies ------------------------------------------------------------ */

typedef struct gbuf {
    unsigned char *d;
    size_t n, cap;
    uint64_t n_kv;
} gbuf;

static void g_bytes(gbuf *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->d = realloc(b->d, b->cap);
    }
    memcpy(b->d + b->n, p, n);
    b->n += n;
}
static void g_u32(gbuf *b, uint32_t v) {
    unsigned char p[4];
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
    g_bytes(b, p, 4);
}
static void g_u64(gbuf *b, uint64_t v) {
    unsigned char p[8];
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
    g_bytes(b, p, 8);
}
static void g_strn(gbuf *b, const char *s, size_t n) {
    g_u64(b, n);
    g_bytes(b, s, n);
}
static void g_key(gbuf *b, const char *key, uint32_t type) {
    g_strn(b, key, strlen(key));
    g_u32(b, type);
    b->n_kv++;
}

/* GPT-2's byte stand-ins, computed the way its encoder.py does, to spell byte tokens. */
static size_t byte_piece(int byte, char *out) {
    int n = 0, cp = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        int c = printable ? b : 256 + n++;
        if (b == byte) cp = c;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

/* A tensorless GGUF: 256 byte tokens, "ab", "<|endoftext|>" (CONTROL), the given merges and pre. */
static lm_status tiny_gpt2_gguf(const char *pre, const char *const *merges, int n_merges, lm_tokenizer **out) {
    gbuf body = {0}, file = {0};
    g_key(&body, "tokenizer.ggml.model", LM_GGUF_STRING);
    g_strn(&body, "gpt2", 4);
    if (pre) {
        g_key(&body, "tokenizer.ggml.pre", LM_GGUF_STRING);
        g_strn(&body, pre, strlen(pre));
    }
    g_key(&body, "tokenizer.ggml.tokens", LM_GGUF_ARRAY);
    g_u32(&body, LM_GGUF_STRING);
    g_u64(&body, 258);
    for (int b = 0; b < 256; b++) {
        char p[2];
        g_strn(&body, p, byte_piece(b, p));
    }
    g_strn(&body, "ab", 2);
    g_strn(&body, "<|endoftext|>", 13);
    g_key(&body, "tokenizer.ggml.token_type", LM_GGUF_ARRAY);
    g_u32(&body, LM_GGUF_INT32);
    g_u64(&body, 258);
    for (int i = 0; i < 258; i++) g_u32(&body, i == 257 ? 3 : 1);
    if (merges) {
        g_key(&body, "tokenizer.ggml.merges", LM_GGUF_ARRAY);
        g_u32(&body, LM_GGUF_STRING);
        g_u64(&body, (uint64_t)n_merges);
        for (int i = 0; i < n_merges; i++) g_strn(&body, merges[i], strlen(merges[i]));
    }
    g_key(&body, "tokenizer.ggml.eos_token_id", LM_GGUF_UINT32);
    g_u32(&body, 257);
    g_bytes(&file, "GGUF", 4);
    g_u32(&file, 3);
    g_u64(&file, 0);
    g_u64(&file, body.n_kv);
    g_bytes(&file, body.d, body.n);
    char p[600];
    tmp_path("tiny_gpt2.gguf", p, sizeof p);
    lm_status st = write_file(p, file.d, file.n) ? LM_OK : LM_ERR_IO;
    free(body.d);
    free(file.d);
    lm_gguf *g = NULL;
    *out = NULL;
    if (st == LM_OK) st = lm_gguf_open(p, &g);
    if (st == LM_OK) st = lm_tokenizer_from_gguf(g, out);
    lm_gguf_close(g);
    return st;
}

static void check_tiny_gguf(void) {
    static const char *const good[] = {"a b"};
    lm_tokenizer *t = NULL;
    CHECKF(tiny_gpt2_gguf("gpt-2", good, 1, &t) == LM_OK, "%s", lm_errmsg());
    if (t) {
        static const int32_t want[] = {256, 256, 'a', 257, 256}; /* tokens 0..255 are the bytes in order */
        CHECK(encodes_to(t, "ababa<|endoftext|>ab", 20, 0, want, 5));
        CHECK(lm_tokenizer_eos(t) == 257 && lm_tokenizer_bos(t) == -1);
        lm_tokenizer_free(t);
    }
    t = NULL;
    CHECK(tiny_gpt2_gguf(NULL, good, 1, &t) == LM_OK); /* no pre: GPT-2's */
    lm_tokenizer_free(t);
    t = NULL;
    CHECK(tiny_gpt2_gguf("deepseek-llm", good, 1, &t) == LM_ERR_UNSUPPORTED && t == NULL &&
          strstr(lm_errmsg(), "deepseek-llm") && strstr(lm_errmsg(), "tiny_gpt2.gguf"));
    CHECK(tiny_gpt2_gguf("gpt-2", NULL, 0, &t) == LM_ERR_FORMAT && strstr(lm_errmsg(), "merges"));
    static const char *const unknown[] = {"a b", "ab zz"};
    CHECK(tiny_gpt2_gguf("gpt-2", unknown, 2, &t) == LM_ERR_FORMAT && strstr(lm_errmsg(), "merge 1") &&
          strstr(lm_errmsg(), "\"zz\""));
    static const char *const nospace[] = {"ab"};
    CHECK(tiny_gpt2_gguf("gpt-2", nospace, 1, &t) == LM_ERR_FORMAT && strstr(lm_errmsg(), "merges[0]"));
    static const char *const result_missing[] = {"b a"};
    CHECK(tiny_gpt2_gguf("gpt-2", result_missing, 1, &t) == LM_ERR_FORMAT && strstr(lm_errmsg(), "\"ba\""));
    CHECK(t == NULL);
}

/* ---- GPT-2 -------------------------------------------------------------------------------- */

static void check_gpt2_basics(const lm_tokenizer *t, const char *label) {
    CHECKF(lm_tokenizer_get_kind(t) == LM_TOK_BPE && lm_tokenizer_vocab_size(t) == 50257, "%s", label);
    CHECKF(lm_tokenizer_bos(t) == 50256 && lm_tokenizer_eos(t) == 50256, "%s", label);
    size_t len = 0;
    const char *p = lm_tokenizer_piece(t, 220, &len);
    CHECKF(len == 2 && memcmp(p, "\xc4\xa0", 2) == 0, "%s: piece of 220", label);
    p = lm_tokenizer_piece(t, 18435, &len);
    CHECKF(len == 7 && memcmp(p, "\xc4\xa0Hello", 7) == 0, "%s: piece of 18435", label);
    char buf[8];
    p = lm_tokenizer_token_text(t, 5, 18435, buf, &len);
    CHECKF(len == 6 && memcmp(p, " Hello", 6) == 0, "%s: text of 18435", label);
    p = lm_tokenizer_token_text(t, -1, 50256, buf, &len);
    CHECKF(len == 0, "%s: <|endoftext|> decodes to nothing", label);
    p = lm_tokenizer_token_text(t, -1, 50257, buf, &len);
    CHECKF(len == 0 && p, "%s: id outside the vocabulary", label);
    /* The 256 single-byte tokens each decode to a different byte. */
    int seen[256] = {0}, bad = 0;
    for (int b = 0; b < 256; b++) {
        char piece[2];
        size_t pl = byte_piece(b, piece);
        int found = 0;
        for (int id = 0; id < 256 && !found; id++) {
            const char *q = lm_tokenizer_piece(t, id, &len);
            if (len == pl && memcmp(q, piece, pl) == 0) {
                q = lm_tokenizer_token_text(t, -1, id, buf, &len);
                found = len == 1 && (unsigned char)q[0] == b && !seen[b];
                seen[b] = 1;
            }
        }
        bad += !found;
    }
    CHECKF(bad == 0, "%s: %d bytes lack their single-byte token", label, bad);
    /* Special tokens: recognised by default, plain text with LM_TOK_NO_SPECIAL. */
    static const int32_t with[] = {64, 50256, 65};
    static const int32_t without[] = {64, 27, 91, 437, 1659, 5239, 91, 29, 65};
    CHECKF(encodes_to(t, "a<|endoftext|>b", 15, 0, with, 3), "%s", label);
    CHECKF(encodes_to(t, "a<|endoftext|>b", 15, LM_TOK_NO_SPECIAL, without, 9), "%s", label);
    /* Unicode's White_Space decides \s, as in Hugging Face's and tiktoken's engines: U+180E is not
     * one (PCRE2's plain UCP \s says it is), U+3000 and U+2028 are, U+001C is not. Expected ids
     * from Hugging Face tokenizers, by hand. */
    static const char ws[] = "x \xe1\xa0\x8ey\xe3\x80\x80\xe3\x80\x80z\x1c\x1c w\xc2\xa0 \xe2\x80\xa8!";
    static const int32_t ws_ids[] = {87, 28053, 254, 236, 88, 5099, 222, 5099, 222, 89, 216, 216, 266, 1849, 220, 447, 101, 0};
    CHECKF(encodes_to(t, ws, sizeof ws - 1, 0, ws_ids, sizeof ws_ids / sizeof ws_ids[0]), "%s", label);
    static const int32_t bos[] = {50256, 15496};
    CHECKF(encodes_to(t, "Hello", 5, LM_TOK_ADD_BOS, bos, 2), "%s", label);
    int32_t *ids = NULL;
    size_t n = 9;
    CHECK(lm_tokenizer_encode(t, NULL, 0, 0, &ids, &n) == LM_OK && n == 0);
    free(ids);
    int32_t badseq[] = {15496, 50257};
    char *s = NULL;
    CHECK(lm_tokenizer_decode(t, badseq, 2, &s, &len) == LM_ERR_ARG && s == NULL);
}

/* Encodes a whole book with each tokenizer: all the same, decoding back to the book. */
static void check_book(const char *path, lm_tokenizer *const *ts, int nt) {
    char *text = NULL;
    size_t len = 0;
    if (lm_read_file(path, &text, &len) != LM_OK) return;
    int32_t *first = NULL;
    size_t nfirst = 0;
    for (int k = 0; k < nt; k++) {
        int32_t *ids = NULL;
        size_t n = 0;
        double t0 = lm_now();
        lm_status st = lm_tokenizer_encode_ex(ts[k], text, len, LM_TOK_NO_SPECIAL, &ids, &n);
        double dt = lm_now() - t0;
        CHECKF(st == LM_OK, "%s", lm_errmsg());
        fprintf(stderr, "book: %zu bytes -> %zu tokens in %.2f s (tokenizer %d)\n", len, n, dt, k);
        if (k == 0) {
            char *back = NULL;
            size_t blen = 0;
            CHECK(lm_tokenizer_decode(ts[k], ids, n, &back, &blen) == LM_OK && blen == len &&
                  memcmp(back, text, len) == 0);
            free(back);
            /* Count and a sample checked against Hugging Face's GPT-2 tokenizer by hand. */
            CHECKF(n == 792623, "%zu tokens", n);
            first = ids;
            nfirst = n;
        } else {
            CHECKF(n == nfirst && memcmp(ids, first, n * sizeof *ids) == 0, "tokenizer %d differs on the book", k);
            free(ids);
        }
    }
    free(first);
    free(text);
}

/* ---- tokenizer.json variants ------------------------------------------------------------- */

typedef struct hf_case {
    const char *text;
    int32_t ids[32];
    size_t n;
} hf_case;

static void check_hf_cases(const lm_tokenizer *t, const hf_case *c, size_t n, const char *label) {
    for (size_t i = 0; i < n; i++)
        CHECKF(encodes_to(t, c[i].text, strlen(c[i].text), 0, c[i].ids, c[i].n), "%s case %zu", label, i);
}

/* Saves t as tokenizer.json, loads it back: both must encode every text alike. */
static void check_save_load(const lm_tokenizer *t, const tcases *texts, const char *name) {
    char p[600];
    tmp_path(name, p, sizeof p);
    lm_tokenizer *u = NULL;
    lm_status st = lm_tokenizer_save_json(t, p);
    CHECKF(st == LM_OK, "save %s: %s", name, lm_errmsg());
    if (st == LM_OK) st = lm_tokenizer_load_json(p, &u);
    CHECKF(st == LM_OK, "reload %s: %s", name, lm_errmsg());
    if (!u) return;
    CHECK(lm_tokenizer_get_kind(u) == lm_tokenizer_get_kind(t) &&
          lm_tokenizer_vocab_size(u) == lm_tokenizer_vocab_size(t));
    CHECKF(lm_tokenizer_bos(u) == lm_tokenizer_bos(t) && lm_tokenizer_wants_bos(u) == lm_tokenizer_wants_bos(t),
           "%s: BOS %d (wanted: %d) after saving, %d (%d) before", name, lm_tokenizer_bos(u), lm_tokenizer_wants_bos(u),
           lm_tokenizer_bos(t), lm_tokenizer_wants_bos(t));
    int bad = 0;
    for (size_t i = 0; i < texts->n; i++) {
        bad += !same_encoding(t, u, texts->v[i].text, texts->v[i].len, 0);
        bad += !same_encoding(t, u, texts->v[i].text, texts->v[i].len, LM_TOK_NO_SPECIAL);
    }
    static const char extra[] = "a<|endoftext|>b <s> </s> \xff\xfe  x\n\n y \xe2\x96\x81z";
    bad += !same_encoding(t, u, extra, sizeof extra - 1, 0);
    CHECKF(bad == 0, "%s: %d encodings differ after saving and loading", name, bad);
    for (int id = 0; id < lm_tokenizer_vocab_size(t); id++) {
        size_t la, lb;
        const char *a = lm_tokenizer_piece(t, id, &la), *b = lm_tokenizer_piece(u, id, &lb);
        if (la != lb || memcmp(a, b, la) != 0) {
            if (!bad) fprintf(stderr, "  %s: piece of %d: \"%.*s\" then \"%.*s\"\n", name, id, (int)la, a, (int)lb, b);
            bad++;
        }
    }
    CHECKF(bad == 0, "%s: pieces differ after saving and loading", name);
    lm_tokenizer_free(u);
}

/* Writes root (consumed) to a file under the test directory and loads it. */
static lm_tokenizer *load_json_obj(json_t *root, const char *name) {
    char p[600];
    tmp_path(name, p, sizeof p);
    int ok = json_dump_file(root, p, JSON_COMPACT) == 0;
    json_decref(root);
    lm_tokenizer *t = NULL;
    lm_status st = ok ? lm_tokenizer_load_json(p, &t) : LM_ERR_IO;
    CHECKF(st == LM_OK, "%s: %s", name, lm_errmsg());
    return t;
}

/* tiny-random-gpt2 with Llama-3's pre-tokenizer (a Split regex before a regex-less ByteLevel) and
 * ignore_merges, as Llama-3's tokenizer.json has them. */
static lm_tokenizer *llama3_style(const char *tiny_json, int bos_template) {
    json_error_t err;
    json_t *root = json_load_file(tiny_json, 0, &err);
    if (!root) return NULL;
    static const char L3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                             "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    json_t *pre = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b, s:b}]}", "type", "Sequence",
                            "pretokenizers", "type", "Split", "pattern", "Regex", L3, "behavior", "Isolated", "invert", 0,
                            "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 0);
    json_object_set_new(root, "pre_tokenizer", pre);
    json_object_set_new(json_object_get(root, "model"), "ignore_merges", json_true());
    if (bos_template) { /* Llama-3's post-processor, with GPT-2's <|endoftext|> (id 0 here) as BOS */
        json_t *tp = json_pack(
            "{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:{s:{s:s, s:[i], s:[s]}}}", "type", "TemplateProcessing",
            "single", "SpecialToken", "id", "<|endoftext|>", "type_id", 0, "Sequence", "id", "A", "type_id", 0,
            "special_tokens", "<|endoftext|>", "id", "<|endoftext|>", "ids", 0, "tokens", "<|endoftext|>");
        json_object_set_new(root, "post_processor",
                            json_pack("{s:s, s:[{s:s, s:b}, o]}", "type", "Sequence", "processors", "type",
                                      "ByteLevel", "trim_offsets", 0, tp));
    }
    return load_json_obj(root, "llama3_style/tokenizer.json");
}

typedef struct mrg {
    float score;
    int32_t a, b;
} mrg;

/* Higher score first; ties by the ids of the halves. */
static int by_score(const void *x, const void *y) {
    const mrg *p = x, *q = y;
    if (p->score != q->score) return p->score > q->score ? -1 : 1;
    if (p->a != q->a) return p->a < q->a ? -1 : 1;
    return (p->b > q->b) - (p->b < q->b);
}

/* A Llama-2-style tokenizer.json built from the SentencePiece vocabulary in a GGUF: merges are every
 * split of a normal piece into two normal pieces, ranked by the score of the merged piece (as the
 * Hugging Face converter ranks them), byte fallback, and either the Prepend + Replace normaliser of
 * Llama-2's file (metaspace 0) or a Metaspace pre-tokenizer with prepend_scheme "first". */
static lm_tokenizer *llama2_style(const char *gguf_path, int metaspace) {
    lm_gguf *g = NULL;
    if (lm_gguf_open(gguf_path, &g) != LM_OK) return NULL;
    const lm_gguf_kv *toks = lm_gguf_find(g, "tokenizer.ggml.tokens");
    const lm_gguf_kv *scores = lm_gguf_find(g, "tokenizer.ggml.scores");
    const lm_gguf_kv *types = lm_gguf_find(g, "tokenizer.ggml.token_type");
    json_t *vocab = json_object();
    size_t n = toks ? (size_t)toks->n : 0;
    for (size_t i = 0; i < n; i++)
        json_object_setn_new(vocab, toks->arr_str[i].ptr, (size_t)toks->arr_str[i].len, json_integer((json_int_t)i));
    size_t nm = 0, cap = 1 << 16;
    mrg *m = malloc(cap * sizeof *m);
    for (size_t i = 0; i < n; i++) {
        if (lm_gguf_arr_i64(types, i) != LM_TOKEN_NORMAL) continue;
        const char *s = toks->arr_str[i].ptr;
        size_t len = (size_t)toks->arr_str[i].len;
        for (size_t k = 1; k < len; k++) {
            if (((unsigned char)s[k] & 0xC0) == 0x80) continue; /* not a character boundary */
            json_t *a = json_object_getn(vocab, s, k), *b = json_object_getn(vocab, s + k, len - k);
            if (!a || !b) continue;
            json_int_t ia = json_integer_value(a), ib = json_integer_value(b);
            if (lm_gguf_arr_i64(types, (uint64_t)ia) != LM_TOKEN_NORMAL ||
                lm_gguf_arr_i64(types, (uint64_t)ib) != LM_TOKEN_NORMAL)
                continue;
            if (nm == cap) m = realloc(m, (cap *= 2) * sizeof *m);
            m[nm++] = (mrg){(float)lm_gguf_arr_f64(scores, i), (int32_t)ia, (int32_t)ib};
        }
    }
    qsort(m, nm, sizeof *m, by_score);
    json_t *merges = json_array();
    for (size_t i = 0; i < nm; i++)
        json_array_append_new(merges, json_pack("[s%s%]", toks->arr_str[m[i].a].ptr, (size_t)toks->arr_str[m[i].a].len,
                                                toks->arr_str[m[i].b].ptr, (size_t)toks->arr_str[m[i].b].len));
    free(m);
    json_t *added = json_array();
    for (int i = 0; i < 3; i++)
        json_array_append_new(added, json_pack("{s:i, s:s%, s:b, s:b, s:b, s:b, s:b}", "id", i, "content",
                                               toks->arr_str[i].ptr, (size_t)toks->arr_str[i].len, "single_word", 0,
                                               "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1));
    json_t *root = json_object();
    json_object_set_new(root, "version", json_string("1.0"));
    json_object_set_new(root, "added_tokens", added);
    if (metaspace) {
        json_object_set_new(root, "normalizer", json_null());
        json_object_set_new(root, "pre_tokenizer",
                            json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement", "\xe2\x96\x81",
                                      "prepend_scheme", "first", "split", 0));
    } else {
        json_object_set_new(root, "normalizer",
                            json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:{s:s}, s:s}]}", "type", "Sequence", "normalizers",
                                      "type", "Prepend", "prepend", "\xe2\x96\x81", "type", "Replace", "pattern",
                                      "String", " ", "content", "\xe2\x96\x81"));
        json_object_set_new(root, "pre_tokenizer", json_null());
    }
    json_object_set_new(root, "post_processor", json_null());
    json_object_set_new(root, "decoder", json_null());
    json_object_set_new(root, "model",
                        json_pack("{s:s, s:s, s:b, s:b, s:o, s:o}", "type", "BPE", "unk_token", "<unk>", "fuse_unk", 1,
                                  "byte_fallback", 1, "vocab", vocab, "merges", merges));
    lm_gguf_close(g);
    return load_json_obj(root, metaspace ? "llama2_metaspace/tokenizer.json" : "llama2_legacy/tokenizer.json");
}

int main(void) {
    char a1[512], a2[512], a3[512], a4[512], a5[512], a6[512], a7[512];
    const char *enc = check_asset("tokenizers/gpt2/encoder.json", a1, sizeof a1);
    const char *bpe = check_asset("tokenizers/gpt2/vocab.bpe", a2, sizeof a2);
    const char *refs = check_asset("tokenizers/gpt2/gpt2_reference_tokenizations.json", a3, sizeof a3);
    const char *gguf = check_asset("tokenizers/gpt2/ggml-vocab-gpt-2.gguf", a4, sizeof a4);
    const char *tiny_dir = check_asset("models/tiny-random-gpt2", a5, sizeof a5);
    const char *book = check_asset("text/war-and-peace.txt", a6, sizeof a6);
    const char *spm_gguf = check_asset("tokenizers/llama-spm/ggml-vocab-llama-spm.gguf", a7, sizeof a7);
    if (!enc || !bpe || !refs || !gguf || !tiny_dir || !book || !spm_gguf) return CHECK_SKIP;
    snprintf(g_dir, sizeof g_dir, "%s/tokenizer_bpe.%ld", check_tmpdir(), (long)getpid());
    mkdir(g_dir, 0777);
    char sub[600];
    mkdir(tmp_path("llama3_style", sub, sizeof sub), 0777);
    mkdir(tmp_path("llama2_legacy", sub, sizeof sub), 0777);
    mkdir(tmp_path("llama2_metaspace", sub, sizeof sub), 0777);

    tcases ref = {0}, ggml = {0}, spm_cases = {0};
    char inp[600], out[600];
    snprintf(inp, sizeof inp, "%s.inp", gguf);
    snprintf(out, sizeof out, "%s.out", gguf);
    CHECK(load_ref_json(refs, &ref) && ref.n == 74);
    CHECK(load_ggml_cases(inp, out, &ggml) && ggml.n == 47);
    snprintf(inp, sizeof inp, "%s.inp", spm_gguf);
    snprintf(out, sizeof out, "%s.out", spm_gguf);
    CHECK(load_ggml_cases(inp, out, &spm_cases) && spm_cases.n == 47);

    /* GPT-2 from its original files, from the GGUF, and from the tokenizer.json lumen writes. */
    lm_tokenizer *files = NULL, *fromg = NULL, *saved = NULL;
    CHECKF(lm_tokenizer_load_gpt2_files(enc, bpe, &files) == LM_OK, "%s", lm_errmsg());
    lm_gguf *g = NULL;
    CHECKF(lm_gguf_open(gguf, &g) == LM_OK && lm_tokenizer_from_gguf(g, &fromg) == LM_OK, "%s", lm_errmsg());
    lm_gguf_close(g);
    if (!files || !fromg) return check_result();
    char p[600];
    CHECKF(lm_tokenizer_save_json(files, tmp_path("gpt2.json", p, sizeof p)) == LM_OK, "%s", lm_errmsg());
    CHECKF(lm_tokenizer_load_json(p, &saved) == LM_OK, "%s", lm_errmsg());
    lm_tokenizer *gpt2[3] = {files, fromg, saved};
    static const char *const names[3] = {"encoder.json+vocab.bpe", "GGUF", "saved tokenizer.json"};
    for (int k = 0; k < 3; k++) {
        if (!gpt2[k]) continue;
        check_gpt2_basics(gpt2[k], names[k]);
        check_cases(gpt2[k], &ref, names[k], 1);
        check_cases(gpt2[k], &ggml, names[k], 1);
        check_round_trips(gpt2[k], names[k]);
    }
    if (saved) check_book(book, gpt2, 3);

    /* lm_tokenizer_load finds each source by its content. */
    lm_tokenizer *any = NULL;
    char gdir[600];
    snprintf(gdir, sizeof gdir, "%s", enc);
    *strrchr(gdir, '/') = 0;
    static const int32_t hello[] = {15496, 995};
    const char *sources[] = {gdir, gguf, p};
    for (int k = 0; k < 3; k++) {
        any = NULL;
        CHECKF(lm_tokenizer_load(sources[k], &any) == LM_OK && encodes_to(any, "Hello world", 11, 0, hello, 2), "%s: %s",
               sources[k], lm_errmsg());
        lm_tokenizer_free(any);
    }
    any = (lm_tokenizer *)&any;
    CHECK(lm_tokenizer_load_dir(g_dir, &any) == LM_ERR_IO && any == NULL && strstr(lm_errmsg(), g_dir));

    /* tiny-random-gpt2: tokenizer.json, its vocab.json + merges.txt, the directory. Expected ids from
     * Hugging Face tokenizers 0.23 (Tokenizer.from_file(...).encode(text).ids), run by hand. */
    static const hf_case tiny_cases[] = {
        {"Hello world", {40, 416, 79, 206, 750}, 5},
        {"a<|endoftext|>b", {65, 0, 66}, 3},
        {" <|endoftext|> ", {159, 0, 159}, 3},
        {"x  y", {88, 159, 407}, 3},
        {"h\xc3\xa9llo w\xc3\xb6rld 123 4567!!", {72, 125, 102, 800, 79, 206, 125, 114, 82, 352, 837, 19, 493, 21, 22, 23, 1, 1}, 18},
        {"", {0}, 0},
    };
    char tj[600], vj[600], mt[600];
    snprintf(tj, sizeof tj, "%s/tokenizer.json", tiny_dir);
    snprintf(vj, sizeof vj, "%s/vocab.json", tiny_dir);
    snprintf(mt, sizeof mt, "%s/merges.txt", tiny_dir);
    lm_tokenizer *tiny = NULL, *tiny_files = NULL, *tiny_dir_tok = NULL;
    CHECKF(lm_tokenizer_load_json(tj, &tiny) == LM_OK, "%s", lm_errmsg());
    CHECKF(lm_tokenizer_load_gpt2_files(vj, mt, &tiny_files) == LM_OK, "%s", lm_errmsg());
    CHECKF(lm_tokenizer_load_dir(tiny_dir, &tiny_dir_tok) == LM_OK, "%s", lm_errmsg());
    lm_tokenizer *tinies[3] = {tiny, tiny_files, tiny_dir_tok};
    for (int k = 0; k < 3; k++) {
        if (!tinies[k]) continue;
        check_hf_cases(tinies[k], tiny_cases, sizeof tiny_cases / sizeof tiny_cases[0], "tiny-random-gpt2");
        CHECK(lm_tokenizer_vocab_size(tinies[k]) == 1000 && lm_tokenizer_bos(tinies[k]) == 0 &&
              lm_tokenizer_eos(tinies[k]) == 0);
        /* This toy vocabulary lacks most bytes (tab, most of Latin-1...), so only its own cases
         * round trip; Hugging Face drops such characters silently, lumen refuses them. */
        for (size_t i = 0; i < sizeof tiny_cases / sizeof tiny_cases[0]; i++)
            CHECK(round_trips(tinies[k], tiny_cases[i].text, strlen(tiny_cases[i].text), LM_TOK_NO_SPECIAL));
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(lm_tokenizer_encode(tinies[k], "a\tb", 3, 0, &ids, &n) == LM_ERR_UNSUPPORTED && !ids &&
              strstr(lm_errmsg(), "0x09"));
    }
    if (tiny) check_save_load(tiny, &ref, "tiny_saved.json");
    lm_tokenizer_free(tiny_files);
    lm_tokenizer_free(tiny_dir_tok);

    /* Llama-3 style pre-tokenisation; expected ids from Hugging Face tokenizers, by hand. */
    static const hf_case l3_cases[] = {
        {"Hello world", {40, 416, 79, 206, 750}, 5},
        {"I'M here, you'RE 12345 ok\n\n  x", {41, 7, 45, 331, 202, 12, 407, 235, 7, 50, 37, 159, 17, 18, 19, 20, 21, 205, 75, 158, 158, 159, 159, 88}, 24},
        {"  leading  tabs\n\nCRLF!!!", {159, 950, 223, 159, 194, 372, 83, 158, 158, 35, 50, 44, 38, 1, 1, 1}, 16},
        {"h\xc3\xa9llo w\xc3\xb6rld 123 4567!!", {72, 125, 102, 800, 79, 206, 125, 114, 82, 352, 159, 17, 18, 19, 159, 20, 21, 22, 23, 1, 1}, 21},
        {"a<|endoftext|>b", {65, 0, 66}, 3},
        {"the then there 1234567", {84, 195, 862, 817, 159, 17, 18, 19, 20, 21, 22, 23}, 12},
    };
    lm_tokenizer *l3 = llama3_style(tj, 0);
    if (l3) {
        check_hf_cases(l3, l3_cases, sizeof l3_cases / sizeof l3_cases[0], "llama3-style");
        check_save_load(l3, &ref, "llama3_saved.json");
        CHECK(!lm_tokenizer_wants_bos(l3)); /* byte-level without a BOS template: GPT-2 adds none */
    }
    lm_tokenizer_free(l3);
    /* Llama-3 puts BOS first through a TemplateProcessing post-processor: encoding for the model
     * then prepends it, and a tokenizer.json saved by lumen keeps the template. */
    l3 = llama3_style(tj, 1);
    if (l3) {
        CHECKF(lm_tokenizer_bos(l3) == 0 && lm_tokenizer_wants_bos(l3), "llama3 template BOS: bos %d, wanted %d",
               lm_tokenizer_bos(l3), lm_tokenizer_wants_bos(l3));
        check_save_load(l3, &ref, "llama3_bos_saved.json");
    }
    lm_tokenizer_free(l3);
    /* tokenizer_config.json's add_bos_token overrides the template. */
    FILE *cf = fopen(tmp_path("llama3_style/tokenizer_config.json", p, sizeof p), "wb");
    if (cf) {
        fputs("{\"bos_token\": \"<|endoftext|>\", \"add_bos_token\": false}", cf);
        fclose(cf);
        l3 = llama3_style(tj, 1);
        CHECK(l3 && lm_tokenizer_bos(l3) == 0 && !lm_tokenizer_wants_bos(l3));
        lm_tokenizer_free(l3);
        remove(p);
    }

    /* Llama-2 style (SentencePiece BPE with byte fallback, merges by rank): llama.cpp's expected
     * ids for the same vocabulary, and the Metaspace "first" variant against Hugging Face. */
    lm_tokenizer *l2 = llama2_style(spm_gguf, 0);
    if (l2) {
        CHECK(lm_tokenizer_get_kind(l2) == LM_TOK_BPE_SPM && lm_tokenizer_bos(l2) == 1 && lm_tokenizer_eos(l2) == 2);
        check_cases(l2, &spm_cases, "llama2-style tokenizer.json", 1);
        check_round_trips(l2, "llama2-style tokenizer.json");
        static const int32_t bos_hello[] = {1, 15043};
        CHECK(encodes_to(l2, "<s>Hello", 8, 0, bos_hello, 2)); /* Prepend applies to each segment */
        check_save_load(l2, &spm_cases, "llama2_saved.json");
    }
    lm_tokenizer_free(l2);
    static const hf_case meta_cases[] = {
        {" ", {29871}, 1},
        {"  ", {259}, 1},
        {" Hello world", {15043, 3186}, 2},
        {"Hello world", {15043, 3186}, 2},
        {"    Hello\n    Hello", {1678, 15043, 13, 1678, 15043}, 5},
        {"<s>Hello", {1, 10994}, 2},
    };
    lm_tokenizer *meta = llama2_style(spm_gguf, 1);
    if (meta) {
        check_hf_cases(meta, meta_cases, sizeof meta_cases / sizeof meta_cases[0], "metaspace");
        check_save_load(meta, &spm_cases, "metaspace_saved.json");
    }
    lm_tokenizer_free(meta);

    /* SentencePiece score-based vocabularies cannot be saved as tokenizer.json. */
    lm_tokenizer *spm = NULL;
    if (lm_tokenizer_load(spm_gguf, &spm) == LM_OK) {
        CHECK(lm_tokenizer_get_kind(spm) == LM_TOK_SPM);
        CHECK(lm_tokenizer_save_json(spm, tmp_path("spm.json", p, sizeof p)) == LM_ERR_UNSUPPORTED);
    }
    lm_tokenizer_free(spm);
    CHECK(lm_tokenizer_save_json(files, "/nonexistent/dir/tokenizer.json") == LM_ERR_IO);

    check_broken_json(tj);
    check_broken_gpt2_files();
    check_tiny_gguf();

    lm_tokenizer_free(tiny);
    lm_tokenizer_free(files);
    lm_tokenizer_free(fromg);
    lm_tokenizer_free(saved);
    free_cases(&ref);
    free_cases(&ggml);
    free_cases(&spm_cases);
    if (!getenv("LUMEN_KEEP_TMP")) remove_tree(g_dir, 0);
    else fprintf(stderr, "kept %s\n", g_dir);
    return check_result();
}
