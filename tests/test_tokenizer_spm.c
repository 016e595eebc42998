/* test_tokenizer_spm.c - SentencePiece BPE: llama.cpp's reference tokenizations from both vocabulary
 * sources, round trips, streaming token text, crafted vocabularies and lying files. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"

#include <stdint.h>
#include <unistd.h>

#include "lumen/format.h"
#include "lumen/tokenizer.h"

#define MAX_CASES 64

typedef struct ref_case {
    const char *text;
    size_t len;
    int32_t ids[1024];
    size_t n;
} ref_case;

static ref_case g_cases[MAX_CASES];
static size_t g_ncases;
static char *g_inp, *g_out;

/* The .inp file is the texts joined by SEP with SEP after the last one too (as llama.cpp's
 * test writes it), so there is one text per line of the .out file. */
static int load_reference(const char *inp_path, const char *out_path) {
    static const char SEP[] = "\n__ggml_vocab_test__\n";
    size_t inp_len, out_len;
    if (lm_read_file(inp_path, &g_inp, &inp_len) != LM_OK || lm_read_file(out_path, &g_out, &out_len) != LM_OK) {
        fprintf(stderr, "%s\n", lm_errmsg());
        return 0;
    }
    const size_t seplen = sizeof SEP - 1;
    size_t pos = 0;
    while (pos < inp_len && g_ncases < MAX_CASES) {
        const char *next = NULL;
        for (size_t i = pos; i + seplen <= inp_len; i++)
            if (memcmp(g_inp + i, SEP, seplen) == 0) {
                next = g_inp + i;
                break;
            }
        size_t end = next ? (size_t)(next - g_inp) : inp_len;
        g_cases[g_ncases].text = g_inp + pos;
        g_cases[g_ncases].len = end - pos;
        g_ncases++;
        pos = end + seplen;
    }
    char *line = g_out;
    for (size_t c = 0; c < g_ncases; c++) {
        char *nl = strchr(line, '\n');
        if (!nl) return 0;
        *nl = 0;
        char *p = line, *e;
        for (;;) {
            long v = strtol(p, &e, 10);
            if (e == p) break;
            if (g_cases[c].n < 1024) g_cases[c].ids[g_cases[c].n++] = (int32_t)v;
            p = e;
        }
        line = nl + 1;
    }
    return *line == 0; /* every line used */
}

static void check_reference(const lm_tokenizer *t, const char *label) {
    for (size_t c = 0; c < g_ncases; c++) {
        const ref_case *rc = &g_cases[c];
        int32_t *ids = NULL;
        size_t n = 0;
        lm_status st = lm_tokenizer_encode(t, rc->text, rc->len, 0, &ids, &n);
        CHECKF(st == LM_OK, "%s case %zu: %s", label, c, lm_errmsg());
        int same = st == LM_OK && n == rc->n && (n == 0 || memcmp(ids, rc->ids, n * sizeof *ids) == 0);
        CHECKF(same, "%s case %zu (\"%.*s\"): got %zu ids, expected %zu", label, c, (int)rc->len, rc->text, n, rc->n);
        if (!same && st == LM_OK) {
            fprintf(stderr, "  got:     ");
            for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
            fprintf(stderr, "\n  expected:");
            for (size_t i = 0; i < rc->n; i++) fprintf(stderr, " %d", rc->ids[i]);
            fprintf(stderr, "\n");
        }
        char *back = NULL;
        size_t blen = 0;
        st = lm_tokenizer_decode(t, ids, n, &back, &blen);
        CHECKF(st == LM_OK && blen == rc->len && memcmp(back, rc->text, blen) == 0, "%s case %zu: round trip", label,
               c);
        free(back);
        free(ids);
    }
}

static int encode_eq(const lm_tokenizer *a, const lm_tokenizer *b, const char *text, size_t len) {
    int32_t *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int ok = lm_tokenizer_encode(a, text, len, 0, &x, &nx) == LM_OK &&
             lm_tokenizer_encode(b, text, len, 0, &y, &ny) == LM_OK && nx == ny &&
             (nx == 0 || memcmp(x, y, nx * sizeof *x) == 0);
    free(x);
    free(y);
    return ok;
}

/* Encodes and decodes text; the decoded text must equal the input. */
static int round_trips(const lm_tokenizer *t, const char *text, size_t len) {
    int32_t *ids = NULL;
    size_t n = 0;
    char *back = NULL;
    size_t blen = 0;
    int ok = lm_tokenizer_encode(t, text, len, 0, &ids, &n) == LM_OK &&
             lm_tokenizer_decode(t, ids, n, &back, &blen) == LM_OK && blen == len && memcmp(back, text, len) == 0;
    free(ids);
    free(back);
    return ok;
}

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
        ODD("\xf0\x9f\x98 cut"),
        ODD("\x80\x80\x80"),
        ODD("a\0b\0"),
        ODD(" \xe2\x96\x81 literal U+2581"),
        ODD("\n"),
    };
#undef ODD
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++)
        CHECKF(round_trips(t, odd[i].s, odd[i].n), "%s: round trip of odd text %zu", label, i);
    /* random bytes: biased towards ASCII, spaces and UTF-8 lead/continuation bytes */
    lm_rng rng;
    lm_rng_seed(&rng, 1234);
    char buf[96];
    int bad = 0;
    for (int k = 0; k < 300; k++) {
        size_t n = lm_rng_u32(&rng) % sizeof buf;
        for (size_t i = 0; i < n; i++) {
            uint32_t r = lm_rng_u32(&rng);
            switch (r % 4) {
            case 0: buf[i] = ' '; break;
            case 1: buf[i] = (char)('a' + (r >> 8) % 26); break;
            case 2: buf[i] = (char)(0x80 + (r >> 8) % 0x80); break;
            default: buf[i] = (char)(r >> 8); break;
            }
        }
        bad += !round_trips(t, buf, n);
    }
    CHECKF(bad == 0, "%s: %d random byte strings did not round trip", label, bad);
}

static void check_basics(const lm_tokenizer *t, const char *label) {
    int32_t *ids = NULL;
    size_t n = 99;
    CHECK(lm_tokenizer_encode(t, "", 0, 0, &ids, &n) == LM_OK && n == 0);
    free(ids);
    ids = NULL;
    CHECK(lm_tokenizer_encode(t, NULL, 0, 1, &ids, &n) == LM_OK && n == 1 && ids[0] == lm_tokenizer_bos(t));
    free(ids);
    ids = NULL;
    CHECKF(lm_tokenizer_encode(t, "Hello", 5, 1, &ids, &n) == LM_OK && n == 2 && ids[0] == 1, "%s", label);
    free(ids);
    /* a sequence that starts with BOS decodes without the dummy space */
    int32_t seq[] = {1, 15043, 3186, 2};
    char *s = NULL;
    size_t len = 0;
    CHECK(lm_tokenizer_decode(t, seq, 4, &s, &len) == LM_OK && len == 11 && strcmp(s, "Hello world") == 0);
    free(s);
    int32_t badseq[] = {15043, 32000};
    s = NULL;
    CHECK(lm_tokenizer_decode(t, badseq, 2, &s, &len) == LM_ERR_ARG && s == NULL);
}

/* The streaming view: what llama2.c's decode() yields for one token after another. */
static void check_token_text(const lm_tokenizer *t) {
    char buf[8];
    size_t len = 99;
    const char *s = lm_tokenizer_token_text(t, -1, 15043, buf, &len); /* "▁Hello" */
    CHECK(len == 5 && memcmp(s, "Hello", 5) == 0);
    s = lm_tokenizer_token_text(t, 1, 15043, buf, &len);
    CHECK(len == 5 && memcmp(s, "Hello", 5) == 0);
    s = lm_tokenizer_token_text(t, 100, 15043, buf, &len);
    CHECK(len == 6 && memcmp(s, " Hello", 6) == 0);
    s = lm_tokenizer_token_text(t, 100, 1, buf, &len);
    CHECK(len == 0 && s && *s == 0);
    s = lm_tokenizer_token_text(t, 100, 2, buf, &len);
    CHECK(len == 0 && s && *s == 0);
    s = lm_tokenizer_token_text(t, -1, 13, buf, &len); /* <0x0A> */
    CHECK(len == 1 && s[0] == '\n');
    s = lm_tokenizer_token_text(t, 5, 32000, buf, &len);
    CHECK(len == 0 && s && *s == 0);
    s = lm_tokenizer_token_text(t, 5, -7, buf, &len);
    CHECK(len == 0 && s && *s == 0);
    size_t plen = 0;
    const char *p = lm_tokenizer_piece(t, 15043, &plen);
    CHECK(plen == 8 && memcmp(p, "\xe2\x96\x81Hello", 8) == 0);
    p = lm_tokenizer_piece(t, 13, &plen);
    CHECK(plen == 6 && memcmp(p, "<0x0A>", 6) == 0);
}

/* The same vocabulary from two files: everything but the control tokens' pieces must agree. */
static void check_same_vocab(const lm_tokenizer *a, const lm_tokenizer *b) {
    CHECK(lm_tokenizer_vocab_size(a) == lm_tokenizer_vocab_size(b));
    CHECK(lm_tokenizer_bos(a) == lm_tokenizer_bos(b) && lm_tokenizer_eos(a) == lm_tokenizer_eos(b));
    int n = lm_tokenizer_vocab_size(a), bad_piece = 0, bad_text = 0;
    static const int prevs[] = {-1, 1, 2, 500};
    for (int id = 0; id < n; id++) {
        size_t la, lb;
        const char *pa = lm_tokenizer_piece(a, id, &la), *pb = lm_tokenizer_piece(b, id, &lb);
        if (id != 1 && id != 2) bad_piece += !(la == lb && memcmp(pa, pb, la) == 0);
        for (size_t k = 0; k < sizeof prevs / sizeof prevs[0]; k++) {
            char ba[8], bb[8];
            const char *ta = lm_tokenizer_token_text(a, prevs[k], id, ba, &la);
            const char *tb = lm_tokenizer_token_text(b, prevs[k], id, bb, &lb);
            bad_text += !(la == lb && memcmp(ta, tb, la) == 0);
        }
    }
    CHECKF(bad_piece == 0, "%d pieces differ", bad_piece);
    CHECKF(bad_text == 0, "%d token texts differ", bad_text);
}

/* ---- lying tokenizer.bin files ---------------------------------------------------------- */

static char g_tmp[512];

static int write_file(const char *path, const void *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(d, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

static void put_i32(unsigned char *p, int32_t v) {
    uint32_t u = (uint32_t)v;
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(u >> (8 * i));
}

/* Loads d as a tokenizer.bin; expects failure with `want` and a message naming the file. */
static int load_fails(const void *d, size_t n, int vocab, lm_status want) {
    if (!write_file(g_tmp, d, n)) return 0;
    lm_tokenizer *t = (lm_tokenizer *)&t; /* must be reset to NULL */
    lm_status st = lm_tokenizer_load_llama2c(g_tmp, vocab, &t);
    int ok = st == want && t == NULL && strstr(lm_errmsg(), g_tmp) != NULL;
    if (!ok) fprintf(stderr, "  load of %zu bytes (vocab %d): %s: %s\n", n, vocab, lm_status_name(st), lm_errmsg());
    if (st == LM_OK) lm_tokenizer_free(t);
    return ok;
}

static void check_lying_llama2c(const char *tok512, const char *big) {
    char *d = NULL;
    size_t n = 0;
    if (lm_read_file(tok512, &d, &n) != LM_OK) {
        CHECKF(0, "%s", lm_errmsg());
        return;
    }
    /* Every truncation is an error when the vocabulary size is known. Reading to EOF, a cut
     * at the end of a record is a valid smaller vocabulary; anywhere else it is an error.
     * Every cut in the header and the first records, then a stride (file writes are slow). */
    unsigned char *is_end = calloc(n + 1, 1);
    for (size_t off = 4; is_end && off + 8 <= n;) {
        int32_t len;
        memcpy(&len, d + off + 4, 4);
        off += 8 + (size_t)len;
        if (off <= n) is_end[off] = 1;
    }
    int bad = 0, ends = 0;
    for (size_t cut = 0; is_end && cut < n; cut += cut < 600 ? 1 : 7) {
        bad += !load_fails(d, cut, 512, LM_ERR_FORMAT);
        lm_tokenizer *t = NULL;
        lm_status st = lm_tokenizer_load_llama2c(g_tmp, 0, &t);
        ends += is_end[cut];
        if (is_end[cut])
            bad += !(st == LM_OK && lm_tokenizer_vocab_size(t) < 512);
        else
            bad += st != LM_ERR_FORMAT || t != NULL || !strstr(lm_errmsg(), g_tmp);
        lm_tokenizer_free(t);
    }
    CHECKF(is_end && bad == 0, "%d truncations of tok512.bin misbehaved", bad);
    CHECKF(ends > 50, "only %d cuts at record ends", ends);
    free(is_end);

    unsigned char *m = malloc(n + 8);
    if (!m) {
        free(d);
        return;
    }
    /* offset of token 300's record, found by walking the file */
    size_t off = 4;
    for (int i = 0; i < 300; i++) {
        int32_t len;
        memcpy(&len, d + off + 4, 4);
        off += 8 + (size_t)len;
    }
    static const int32_t bad_lens[] = {1000000000, -1, 8, INT32_MIN};
    for (size_t k = 0; k < sizeof bad_lens / sizeof bad_lens[0]; k++) {
        memcpy(m, d, n);
        put_i32(m + off + 4, bad_lens[k]);
        CHECKF(load_fails(m, n, 0, LM_ERR_FORMAT), "len %ld", (long)bad_lens[k]);
        CHECKF(load_fails(m, n, 512, LM_ERR_FORMAT), "len %ld", (long)bad_lens[k]);
    }
    /* a max_token_length large enough to let a huge len through to the bounds check */
    memcpy(m, d, n);
    put_i32(m, 1 << 20);
    put_i32(m + off + 4, 1 << 20);
    CHECK(load_fails(m, n, 0, LM_ERR_FORMAT));
    static const int32_t bad_max[] = {0, -5, 1000000000, 3};
    for (size_t k = 0; k < sizeof bad_max / sizeof bad_max[0]; k++) {
        memcpy(m, d, n);
        put_i32(m, bad_max[k]);
        CHECKF(load_fails(m, n, 0, LM_ERR_FORMAT), "max_token_length %ld", (long)bad_max[k]);
    }
    /* a NaN score */
    memcpy(m, d, n);
    put_i32(m + off, 0x7fc00000);
    CHECK(load_fails(m, n, 0, LM_ERR_FORMAT));
    /* trailing garbage is only detectable when the size is given */
    memcpy(m, d, n);
    memcpy(m + n, "junk", 4);
    CHECK(load_fails(m, n + 4, 512, LM_ERR_FORMAT));
    CHECK(load_fails(m, n + 4, 0, LM_ERR_FORMAT)); /* "junk" is no complete record either */
    CHECK(load_fails(d, n, 511, LM_ERR_FORMAT));
    CHECK(load_fails(d, n, 513, LM_ERR_FORMAT));
    lm_tokenizer *t = NULL;
    CHECK(lm_tokenizer_load_llama2c(tok512, 512, &t) == LM_OK && lm_tokenizer_vocab_size(t) == 512);
    lm_tokenizer_free(t);
    t = NULL;
    CHECK(lm_tokenizer_load_llama2c(tok512, -1, &t) == LM_ERR_ARG && t == NULL);
    CHECK(lm_tokenizer_load_llama2c("/nonexistent/tok.bin", 0, &t) == LM_ERR_IO && t == NULL &&
          strstr(lm_errmsg(), "/nonexistent/tok.bin"));
    free(m);
    free(d);

    /* the 32000-token file cut at a spread of places, including inside the last records */
    if (lm_read_file(big, &d, &n) != LM_OK) return;
    bad = 0;
    for (size_t k = 1; k < 40; k++) bad += !load_fails(d, n * k / 40 + k, 32000, LM_ERR_FORMAT);
    for (size_t k = 1; k < 12; k++) bad += !load_fails(d, n - k, 32000, LM_ERR_FORMAT);
    CHECKF(bad == 0, "%d truncations of the Llama tokenizer.bin misbehaved", bad);
    free(d);
}

/* ---- crafted GGUF vocabularies ---------------------------------------------------------- */

typedef struct gbuf {
    unsigned char d[16384];
    size_t n;
    uint64_t n_kv;
} gbuf;

static void g_bytes(gbuf *b, const void *p, size_t n) {
    if (b->n + n <= sizeof b->d) memcpy(b->d + b->n, p, n);
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
static void g_str(gbuf *b, const char *s) {
    g_u64(b, strlen(s));
    g_bytes(b, s, strlen(s));
}
static void g_key(gbuf *b, const char *key, uint32_t type) {
    g_str(b, key);
    g_u32(b, type);
    b->n_kv++;
}

typedef struct tiny_tok {
    const char *piece;
    float score;
    int type;
} tiny_tok;

/* Writes a tensorless GGUF holding a vocabulary; knobs let a test break one thing at a time. */
typedef struct tiny_opts {
    const char *model;
    int n_scores_delta; /* scores array shorter/longer than tokens */
    int64_t bos;        /* < -1: omit */
    int add_space_prefix; /* -1: omit */
    int omit_types;
} tiny_opts;

static lm_status tiny_gguf(const tiny_tok *v, int n, const tiny_opts *o, lm_tokenizer **out) {
    gbuf body = {0}, file = {0};
    if (o->model) {
        g_key(&body, "tokenizer.ggml.model", LM_GGUF_STRING);
        g_str(&body, o->model);
    }
    g_key(&body, "tokenizer.ggml.tokens", LM_GGUF_ARRAY);
    g_u32(&body, LM_GGUF_STRING);
    g_u64(&body, (uint64_t)n);
    for (int i = 0; i < n; i++) g_str(&body, v[i].piece);
    g_key(&body, "tokenizer.ggml.scores", LM_GGUF_ARRAY);
    g_u32(&body, LM_GGUF_FLOAT32);
    int ns = n + o->n_scores_delta;
    g_u64(&body, (uint64_t)ns);
    for (int i = 0; i < ns; i++) {
        float f = i < n ? v[i].score : 0.0f;
        uint32_t u;
        memcpy(&u, &f, 4);
        g_u32(&body, u);
    }
    if (!o->omit_types) {
        g_key(&body, "tokenizer.ggml.token_type", LM_GGUF_ARRAY);
        g_u32(&body, LM_GGUF_INT32);
        g_u64(&body, (uint64_t)n);
        for (int i = 0; i < n; i++) g_u32(&body, (uint32_t)v[i].type);
    }
    if (o->bos >= -1) {
        g_key(&body, "tokenizer.ggml.bos_token_id", LM_GGUF_UINT32);
        g_u32(&body, (uint32_t)o->bos);
    }
    if (o->add_space_prefix >= 0) {
        g_key(&body, "tokenizer.ggml.add_space_prefix", LM_GGUF_BOOL);
        unsigned char c = (unsigned char)o->add_space_prefix;
        g_bytes(&body, &c, 1);
    }
    g_bytes(&file, "GGUF", 4);
    g_u32(&file, 3);
    g_u64(&file, 0);
    g_u64(&file, body.n_kv);
    g_bytes(&file, body.d, body.n);
    *out = NULL;
    if (file.n > sizeof file.d || !write_file(g_tmp, file.d, file.n)) return lm_fail(LM_ERR_IO, "test: write");
    lm_gguf *g = NULL;
    lm_status st = lm_gguf_open(g_tmp, &g);
    if (st == LM_OK) st = lm_tokenizer_from_gguf(g, out);
    lm_gguf_close(g);
    return st;
}

/* ids of text under vocabulary v, as a space-separated string for easy comparison */
static const char *tiny_encode(const tiny_tok *v, int n, const tiny_opts *o, const char *text) {
    static char res[256];
    lm_tokenizer *t = NULL;
    lm_status st = tiny_gguf(v, n, o, &t);
    if (st != LM_OK) {
        snprintf(res, sizeof res, "error %s: %s", lm_status_name(st), lm_errmsg());
        return res;
    }
    int32_t *ids = NULL;
    size_t k = 0;
    st = lm_tokenizer_encode(t, text, strlen(text), 0, &ids, &k);
    size_t o2 = 0;
    res[0] = 0;
    if (st != LM_OK) snprintf(res, sizeof res, "error %s", lm_status_name(st));
    for (size_t i = 0; st == LM_OK && i < k && o2 < sizeof res - 16; i++)
        o2 += (size_t)snprintf(res + o2, sizeof res - o2, i ? " %d" : "%d", ids[i]);
    free(ids);
    lm_tokenizer_free(t);
    return res;
}

static void check_crafted(void) {
    /* 0 unk, 1 <s>, 2 </s>, 3 ▁, 4 a, 5 b, 6 ab, 7 ▁a, 8 <0x63> ('c'), 9 ▁ab, 10 <, 11 s, 12 >, 13 <s */
    tiny_tok v[] = {
        {"<unk>", 0, LM_TOKEN_UNKNOWN}, {"<s>", 0, LM_TOKEN_CONTROL},      {"</s>", 0, LM_TOKEN_CONTROL},
        {"\xe2\x96\x81", -1, 1},        {"a", -2, 1},                      {"b", -3, 1},
        {"ab", -5, 1},                  {"\xe2\x96\x81" "a", -4, 1},       {"<0x63>", 0, LM_TOKEN_BYTE},
        {"\xe2\x96\x81" "ab", -9, 1}, {"<", -6, 1},                      {"s", -7, 1},
        {">", -8, 1},                   {"<s", -1, 1},
    };
    int n = (int)(sizeof v / sizeof v[0]);
    tiny_opts o = {"llama", 0, 1, -1, 0};
    /* ▁a (-4) beats ab (-5); then ▁a+b = ▁ab exists */
    CHECKF(strcmp(tiny_encode(v, n, &o, "ab"), "9") == 0, "%s", tiny_encode(v, n, &o, "ab"));
    CHECKF(strcmp(tiny_encode(v, n, &o, "ba"), "3 5 4") == 0, "%s", tiny_encode(v, n, &o, "ba"));
    /* 'c' is no piece: its byte token; 'd' has neither: the unknown token */
    CHECKF(strcmp(tiny_encode(v, n, &o, "cd"), "3 8 0") == 0, "%s", tiny_encode(v, n, &o, "cd"));
    /* control pieces are never formed from text: "<s" + ">" would spell <s> */
    CHECKF(strcmp(tiny_encode(v, n, &o, "<s>"), "3 13 12") == 0, "%s", tiny_encode(v, n, &o, "<s>"));
    o.add_space_prefix = 0;
    CHECKF(strcmp(tiny_encode(v, n, &o, "ab"), "6") == 0, "%s", tiny_encode(v, n, &o, "ab"));
    o.add_space_prefix = -1;
    /* equal scores: the leftmost pair merges first */
    v[7].score = -5;
    v[9].score = -100; /* keep ▁ab from changing the picture: it still forms from ▁a + b */
    CHECKF(strcmp(tiny_encode(v, n, &o, "ab"), "9") == 0, "%s", tiny_encode(v, n, &o, "ab"));
    v[9].piece = "xx"; /* without ▁ab: ▁a then b */
    CHECKF(strcmp(tiny_encode(v, n, &o, "ab"), "7 5") == 0, "%s", tiny_encode(v, n, &o, "ab"));
    v[6].score = -4.5f; /* now ab beats ▁a */
    CHECKF(strcmp(tiny_encode(v, n, &o, "ab"), "3 6") == 0, "%s", tiny_encode(v, n, &o, "ab"));
    v[9].piece = "\xe2\x96\x81" "ab";

    /* types inferred when token_type is absent: same result */
    o.omit_types = 1;
    CHECKF(strcmp(tiny_encode(v, n, &o, "cd"), "3 8 0") == 0, "%s", tiny_encode(v, n, &o, "cd"));
    o.omit_types = 0;

    /* without an unknown token, an unencodable byte is an error, not a crash */
    v[0].type = LM_TOKEN_NORMAL;
    v[0].piece = "zz";
    CHECKF(strncmp(tiny_encode(v, n, &o, "d"), "error unsupported", 17) == 0, "%s", tiny_encode(v, n, &o, "d"));
    v[0].type = LM_TOKEN_UNKNOWN;
    v[0].piece = "<unk>";

    /* a piece with a space inside ("x▁y") may join words, so words are not encoded apart */
    tiny_tok w[] = {
        {"<unk>", 0, LM_TOKEN_UNKNOWN}, {"<s>", 0, LM_TOKEN_CONTROL}, {"</s>", 0, LM_TOKEN_CONTROL},
        {"\xe2\x96\x81", -1, 1},       {"x", -2, 1},                 {"y", -3, 1},
        {"x\xe2\x96\x81", -1.2f, 1},   {"x\xe2\x96\x81y", -1.5f, 1},
    };
    CHECKF(strcmp(tiny_encode(w, 8, &o, "x y"), "3 7") == 0, "%s", tiny_encode(w, 8, &o, "x y"));
    CHECKF(strcmp(tiny_encode(w, 8, &o, "y x y x"), "3 5 3 7 3 4") == 0, "%s", tiny_encode(w, 8, &o, "y x y x"));

    lm_tokenizer *t = NULL;
    tiny_opts bad = o;
    bad.model = "t5"; /* "gpt2" is byte-level BPE now: test_tokenizer_bpe.c */
    CHECK(tiny_gguf(v, n, &bad, &t) == LM_ERR_UNSUPPORTED && t == NULL && strstr(lm_errmsg(), "t5") &&
          strstr(lm_errmsg(), g_tmp));
    bad.model = NULL;
    CHECK(tiny_gguf(v, n, &bad, &t) == LM_ERR_FORMAT && t == NULL && strstr(lm_errmsg(), g_tmp));
    bad = o;
    bad.n_scores_delta = -1;
    CHECK(tiny_gguf(v, n, &bad, &t) == LM_ERR_FORMAT && t == NULL && strstr(lm_errmsg(), "scores"));
    bad.n_scores_delta = 3;
    CHECK(tiny_gguf(v, n, &bad, &t) == LM_ERR_FORMAT && t == NULL);
    bad = o;
    bad.bos = n;
    CHECK(tiny_gguf(v, n, &bad, &t) == LM_ERR_FORMAT && t == NULL && strstr(lm_errmsg(), "bos_token_id"));
    bad.bos = -1; /* UINT32_MAX: no BOS */
    CHECK(tiny_gguf(v, n, &bad, &t) == LM_OK && lm_tokenizer_bos(t) == -1);
    int32_t *ids = NULL;
    size_t k;
    CHECK(lm_tokenizer_encode(t, "a", 1, 1, &ids, &k) == LM_ERR_ARG && ids == NULL);
    lm_tokenizer_free(t);
    t = NULL;
    bad = o;
    v[8].piece = "<0xZZ>";
    CHECK(tiny_gguf(v, n, &bad, &t) == LM_ERR_FORMAT && t == NULL && strstr(lm_errmsg(), "token 8"));
    v[8].piece = "<0x63>";
    v[4].type = 9;
    CHECK(tiny_gguf(v, n, &bad, &t) == LM_ERR_FORMAT && t == NULL);
    v[4].type = 1;
}

int main(void) {
    char a[512], b[512], c[512], d[512], e[512], f[512];
    const char *inp = check_asset("tokenizers/llama-spm/ggml-vocab-llama-spm.gguf.inp", a, sizeof a);
    const char *outp = check_asset("tokenizers/llama-spm/ggml-vocab-llama-spm.gguf.out", b, sizeof b);
    const char *big_bin = check_asset("tokenizers/llama-spm/llama2c_tokenizer.bin", c, sizeof c);
    const char *big_gguf = check_asset("tokenizers/llama-spm/ggml-vocab-llama-spm.gguf", d, sizeof d);
    const char *tok512 = check_asset("models/stories260K/tok512.bin", e, sizeof e);
    const char *st_gguf = check_asset("models/stories260K/stories260K.gguf", f, sizeof f);
    if (!inp || !outp || !big_bin || !big_gguf || !tok512 || !st_gguf) return CHECK_SKIP;
    snprintf(g_tmp, sizeof g_tmp, "%s/tok_spm_%ld.bin", check_tmpdir(), (long)getpid());

    CHECK(load_reference(inp, outp));
    CHECKF(g_ncases == 46, "%zu reference texts", g_ncases);

    lm_tokenizer *l2c = NULL, *gg = NULL, *s512 = NULL, *sgg = NULL;
    lm_gguf *g = NULL;
    CHECKF(lm_tokenizer_load_llama2c(big_bin, 32000, &l2c) == LM_OK, "%s", lm_errmsg());
    CHECKF(lm_gguf_open(big_gguf, &g) == LM_OK, "%s", lm_errmsg());
    if (g) CHECKF(lm_tokenizer_from_gguf(g, &gg) == LM_OK, "%s", lm_errmsg());
    lm_gguf_close(g);
    g = NULL;
    CHECKF(lm_tokenizer_load_llama2c(tok512, 0, &s512) == LM_OK, "%s", lm_errmsg());
    CHECKF(lm_gguf_open(st_gguf, &g) == LM_OK, "%s", lm_errmsg());
    if (g) CHECKF(lm_tokenizer_from_gguf(g, &sgg) == LM_OK, "%s", lm_errmsg());
    lm_gguf_close(g);

    if (l2c) {
        CHECK(lm_tokenizer_get_kind(l2c) == LM_TOK_SPM);
        CHECK(lm_tokenizer_vocab_size(l2c) == 32000 && lm_tokenizer_bos(l2c) == 1 && lm_tokenizer_eos(l2c) == 2);
        check_reference(l2c, "llama2c_tokenizer.bin");
        check_round_trips(l2c, "llama2c_tokenizer.bin");
        check_basics(l2c, "llama2c_tokenizer.bin");
        check_token_text(l2c);
    }
    if (gg) {
        CHECK(lm_tokenizer_vocab_size(gg) == 32000 && lm_tokenizer_bos(gg) == 1 && lm_tokenizer_eos(gg) == 2);
        check_reference(gg, "ggml-vocab-llama-spm.gguf");
        check_round_trips(gg, "ggml-vocab-llama-spm.gguf");
        check_basics(gg, "ggml-vocab-llama-spm.gguf");
        check_token_text(gg);
    }
    if (l2c && gg) check_same_vocab(l2c, gg);

    if (s512 && sgg) {
        CHECK(lm_tokenizer_vocab_size(s512) == 512 && lm_tokenizer_vocab_size(sgg) == 512);
        check_same_vocab(s512, sgg);
        int diff = 0;
        for (size_t k = 0; k < g_ncases; k++) {
            diff += !encode_eq(s512, sgg, g_cases[k].text, g_cases[k].len);
            CHECKF(round_trips(s512, g_cases[k].text, g_cases[k].len), "tok512 case %zu round trip", k);
        }
        static const char *stories[] = {"Once upon a time", "Lily and Ben went to the park. They saw a big dog!",
                                        "\"I'm sorry, mom.\"\n\nThe end."};
        for (size_t k = 0; k < 3; k++) diff += !encode_eq(s512, sgg, stories[k], strlen(stories[k]));
        CHECKF(diff == 0, "%d texts encode differently from tok512.bin and stories260K.gguf", diff);
        check_round_trips(s512, "tok512.bin");
        /* "Once upon a time": each id must be a piece of the small vocabulary, and short */
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(lm_tokenizer_encode(s512, "Once upon a time", 16, 1, &ids, &n) == LM_OK && n >= 3 && n <= 12 &&
              ids[0] == 1);
        free(ids);
    }

    check_lying_llama2c(tok512, big_bin);
    check_crafted();

    lm_tokenizer_free(l2c);
    lm_tokenizer_free(gg);
    lm_tokenizer_free(s512);
    lm_tokenizer_free(sgg);
    lm_tokenizer_free(NULL);
    unlink(g_tmp);
    free(g_inp);
    free(g_out);
    return check_result();
}
