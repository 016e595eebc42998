/* tokenizer.c - the vocabulary: loading it (llama2.c tokenizer.bin, GGUF), looking pieces up, decoding. */
#define _POSIX_C_SOURCE 200809L
#include "tokenizer_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's stand-in for a space. */
static const char SPM_SPACE[] = "\xe2\x96\x81";
#define SPM_SPACE_LEN 3

/* No real piece is anywhere near this long; a larger value means the file is garbage. */
#define MAX_PIECE_LEN (1u << 20)

/* What a loader hands to build_vocab: pieces borrowed from the source buffer. */
typedef struct raw_vocab {
    int n;
    const char **s;
    uint32_t *len;
    float *score;
    int *type;    /* -1: infer from the piece */
    int spm_form; /* pieces write spaces as U+2581 (GGUF) rather than ' ' (llama2.c) */
} raw_vocab;

static int raw_vocab_alloc(raw_vocab *r, int n) {
    memset(r, 0, sizeof *r);
    r->n = n;
    r->s = lm_calloc((size_t)n, sizeof *r->s);
    r->len = lm_calloc((size_t)n, sizeof *r->len);
    r->score = lm_calloc((size_t)n, sizeof *r->score);
    r->type = lm_calloc((size_t)n, sizeof *r->type);
    return r->s && r->len && r->score && r->type;
}

static void raw_vocab_free(raw_vocab *r) {
    free(r->s);
    free(r->len);
    free(r->score);
    free(r->type);
    memset(r, 0, sizeof *r);
}

lm_tokenizer *lm_tok_new(const char *path) {
    lm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->path = lm_strdup(path ? path : "(vocabulary)");
    if (!t->path) {
        free(t);
        return NULL;
    }
    t->kind = LM_TOK_SPM;
    t->bos = t->eos = t->unk = -1;
    t->add_bos = -1;
    t->add_space_prefix = 1;
    for (int i = 0; i < 256; i++) t->byte_token[i] = -1;
    return t;
}

void lm_tokenizer_free(lm_tokenizer *t) {
    if (!t) return;
    lm_tok_bpe_free(t);
    free(t->slots);
    free(t->tokens);
    free(t->blob);
    free(t->path);
    free(t);
}

size_t lm_tok_utf8_len(const unsigned char *s, size_t n) {
    size_t k = lm_utf8_len(s, n);
    return k ? k : 1;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* The byte of a "<0xNN>" piece, or -1. */
int lm_tok_parse_byte_piece(const char *s, size_t n) {
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
    if (hi < 0 || lo < 0) return -1;
    return hi * 16 + lo;
}

static size_t count_spaces(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += s[i] == ' ';
    return c;
}

/* llama2.c files carry no token types, so they are recovered the way SentencePiece assigned
 * them in Llama vocabularies; GGUF files without token_type get the same treatment. */
static int infer_type(const lm_tokenizer *t, int id, const char *s, size_t n) {
    if (id == t->bos || id == t->eos) return LM_TOKEN_CONTROL;
    if (n == 5 && memcmp(s, "<unk>", 5) == 0) return LM_TOKEN_UNKNOWN;
    if (lm_tok_parse_byte_piece(s, n) >= 0) return LM_TOKEN_BYTE;
    return LM_TOKEN_NORMAL;
}

int lm_tok_type_encodable(int type) {
    return type == LM_TOKEN_NORMAL || type == LM_TOKEN_USER_DEFINED || type == LM_TOKEN_UNDEFINED;
}

uint64_t lm_tok_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

int lm_tok_lookup(const lm_tokenizer *t, const char *s, size_t n) {
    if (!t->slots) return -1;
    for (size_t i = (size_t)lm_tok_hash(s, n) & t->slot_mask;; i = (i + 1) & t->slot_mask) {
        uint32_t v = t->slots[i];
        if (v == 0) return -1;
        const lm_token *tok = &t->tokens[v - 1];
        if (tok->text_len == n && memcmp(tok->text, s, n) == 0) return (int)(v - 1);
    }
}

static lm_status build_index(lm_tokenizer *t) {
    size_t n_enc = 0;
    for (int i = 0; i < t->n_vocab; i++) n_enc += lm_tok_type_encodable(t->tokens[i].type);
    size_t cap = 16;
    while (cap < 2 * n_enc) cap *= 2; /* load factor <= 1/2 keeps probes short */
    t->slots = lm_calloc(cap, sizeof *t->slots);
    if (!t->slots) return lm_fail(LM_ERR_NOMEM, "%s: out of memory for the vocabulary index", t->path);
    t->slot_mask = cap - 1;
    t->split_at_space = 1;
    for (int id = 0; id < t->n_vocab; id++) {
        const lm_token *tok = &t->tokens[id];
        if (!lm_tok_type_encodable(tok->type)) continue;
        for (uint32_t k = 1; k < tok->text_len && t->split_at_space; k++)
            if (tok->text[k] == ' ' && tok->text[k - 1] != ' ') t->split_at_space = 0;
        size_t i = (size_t)lm_tok_hash(tok->text, tok->text_len) & t->slot_mask;
        int dup = 0;
        for (; t->slots[i]; i = (i + 1) & t->slot_mask) {
            const lm_token *o = &t->tokens[t->slots[i] - 1];
            if (o->text_len == tok->text_len && memcmp(o->text, tok->text, tok->text_len) == 0) {
                dup = 1; /* the first of equal pieces wins, as in a SentencePiece model */
                break;
            }
        }
        if (!dup) t->slots[i] = (uint32_t)id + 1;
    }
    return LM_OK;
}

/* Copies src into dst, rewriting one space spelling into the other; returns bytes written. */
static size_t respell(char *dst, const char *src, size_t n, int from_spm) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (from_spm && i + SPM_SPACE_LEN <= n && memcmp(src + i, SPM_SPACE, SPM_SPACE_LEN) == 0) {
            dst[o++] = ' ';
            i += SPM_SPACE_LEN;
        } else if (!from_spm && src[i] == ' ') {
            memcpy(dst + o, SPM_SPACE, SPM_SPACE_LEN);
            o += SPM_SPACE_LEN;
            i++;
        } else {
            dst[o++] = src[i++];
        }
    }
    dst[o] = 0;
    return o;
}

/* Fills t->tokens/blob/byte_token/unk and the index from r. t->bos/eos are already set. */
static lm_status build_vocab(lm_tokenizer *t, const raw_vocab *r) {
    size_t blob = 0;
    for (int i = 0; i < r->n; i++) {
        size_t n = r->len[i];
        size_t extra = r->spm_form ? 0 : 2 * count_spaces(r->s[i], n);
        if (n > MAX_PIECE_LEN) return lm_fail(LM_ERR_FORMAT, "%s: token %d is %zu bytes long", t->path, i, n);
        size_t need = 2 * n + extra + 2;
        if (blob > SIZE_MAX - need) return lm_fail(LM_ERR_NOMEM, "%s: vocabulary too large", t->path);
        blob += need;
    }
    t->n_vocab = r->n;
    t->tokens = lm_calloc((size_t)r->n, sizeof *t->tokens);
    t->blob = malloc(blob ? blob : 1);
    if (!t->tokens || !t->blob) return lm_fail(LM_ERR_NOMEM, "%s: out of memory for %d tokens", t->path, r->n);
    char *p = t->blob;
    for (int i = 0; i < r->n; i++) {
        lm_token *tok = &t->tokens[i];
        const char *s = r->s[i];
        size_t n = r->len[i];
        char *a = p, *b;
        size_t na, nb;
        if (n) memcpy(a, s, n);
        a[n] = 0;
        na = n;
        b = a + n + 1;
        nb = respell(b, s, n, r->spm_form);
        p = b + nb + 1;
        tok->piece = r->spm_form ? a : b;
        tok->piece_len = (uint32_t)(r->spm_form ? na : nb);
        tok->text = r->spm_form ? b : a;
        tok->text_len = (uint32_t)(r->spm_form ? nb : na);
        tok->score = r->score[i];
        if (tok->score != tok->score) return lm_fail(LM_ERR_FORMAT, "%s: token %d has a NaN score", t->path, i);
        int type = r->type[i];
        if (type < 0) type = infer_type(t, i, tok->piece, tok->piece_len);
        if (type > LM_TOKEN_BYTE)
            return lm_fail(LM_ERR_FORMAT, "%s: token %d has unknown token type %d", t->path, i, type);
        tok->type = (uint8_t)type;
        if (type == LM_TOKEN_BYTE) {
            int byte = lm_tok_parse_byte_piece(tok->piece, tok->piece_len);
            if (byte < 0)
                return lm_fail(LM_ERR_FORMAT, "%s: byte token %d has piece \"%.*s\", not <0xNN>", t->path, i,
                               (int)(tok->piece_len < 32 ? tok->piece_len : 32), tok->piece);
            tok->byte = (uint8_t)byte;
            if (t->byte_token[byte] < 0) t->byte_token[byte] = i;
        }
        if (type == LM_TOKEN_UNKNOWN && t->unk < 0) t->unk = i;
    }
    return build_index(t);
}

static int32_t rd_i32(const unsigned char *p) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t s;
    memcpy(&s, &v, sizeof s);
    return s;
}

static float rd_f32(const unsigned char *p) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &v, sizeof f);
    return f;
}

/* Walks the token records of a tokenizer.bin; with r == NULL it only validates and counts. */
static lm_status scan_llama2c(const char *path, const unsigned char *d, size_t size, int want, int *count,
                              raw_vocab *r) {
    int32_t max_len = rd_i32(d);
    if (max_len <= 0 || (uint32_t)max_len > MAX_PIECE_LEN)
        return lm_fail(LM_ERR_FORMAT, "%s: implausible max_token_length %ld", path, (long)max_len);
    size_t off = 4;
    int i = 0;
    for (; want > 0 ? i < want : off < size; i++) {
        if (size - off < 8) {
            if (want > 0 && off == size)
                return lm_fail(LM_ERR_FORMAT, "%s: file ends after %d of %d tokens", path, i, want);
            return lm_fail(LM_ERR_FORMAT, "%s: truncated in the record of token %d (offset %zu)", path, i, off);
        }
        if (i == INT_MAX - 1) return lm_fail(LM_ERR_FORMAT, "%s: too many tokens", path);
        float score = rd_f32(d + off);
        int32_t len = rd_i32(d + off + 4);
        if (len < 0) return lm_fail(LM_ERR_FORMAT, "%s: token %d has negative length %ld", path, i, (long)len);
        if (len > max_len)
            return lm_fail(LM_ERR_FORMAT, "%s: token %d has length %ld > max_token_length %ld", path, i, (long)len,
                           (long)max_len);
        if ((size_t)len > size - off - 8)
            return lm_fail(LM_ERR_FORMAT, "%s: truncated in the piece of token %d (offset %zu, length %ld)", path, i,
                           off, (long)len);
        if (r) {
            r->s[i] = (const char *)d + off + 8;
            r->len[i] = (uint32_t)len;
            r->score[i] = score;
            r->type[i] = -1;
        }
        off += 8 + (size_t)len;
    }
    if (off != size)
        return lm_fail(LM_ERR_FORMAT, "%s: %zu bytes of trailing garbage after %d tokens", path, size - off, i);
    if (i == 0) return lm_fail(LM_ERR_FORMAT, "%s: no tokens", path);
    *count = i;
    return LM_OK;
}

lm_status lm_tokenizer_load_llama2c(const char *path, int vocab_size, lm_tokenizer **out) {
    if (!out) return lm_fail(LM_ERR_ARG, "lm_tokenizer_load_llama2c: out is NULL");
    *out = NULL;
    if (!path) return lm_fail(LM_ERR_ARG, "lm_tokenizer_load_llama2c: path is NULL");
    if (vocab_size < 0) return lm_fail(LM_ERR_ARG, "%s: negative vocab_size %d", path, vocab_size);
    char *buf = NULL;
    size_t size = 0;
    lm_status st = lm_read_file(path, &buf, &size);
    if (st != LM_OK) return st;
    const unsigned char *d = (const unsigned char *)buf;
    lm_tokenizer *t = NULL;
    raw_vocab r = {0};
    int n = 0;
    if (size < 4) {
        st = lm_fail(LM_ERR_FORMAT, "%s: truncated header (%zu bytes)", path, size);
        goto done;
    }
    st = scan_llama2c(path, d, size, vocab_size, &n, NULL);
    if (st != LM_OK) goto done;
    t = lm_tok_new(path);
    if (!t || !raw_vocab_alloc(&r, n)) {
        st = lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    st = scan_llama2c(path, d, size, n, &n, &r);
    if (st != LM_OK) goto done;
    /* llama2.c hard-codes these ids (run.c treats 1 as BOS); its exporter has no other place to keep them. */
    t->bos = n > 1 ? 1 : -1;
    t->eos = n > 2 ? 2 : -1;
    r.spm_form = 0;
    st = build_vocab(t, &r);
done:
    raw_vocab_free(&r);
    free(buf);
    if (st != LM_OK) {
        lm_tokenizer_free(t);
        return st;
    }
    *out = t;
    return LM_OK;
}

/* An optional token-id key: absent leaves *id alone; UINT32_MAX is GGUF's "none". */
lm_status lm_tok_gguf_token_id(const lm_gguf *g, const char *key, int n_vocab, int *id) {
    if (!lm_gguf_find(g, key)) return LM_OK;
    uint32_t v;
    lm_status st = lm_gguf_get_u32(g, key, &v);
    if (st != LM_OK) return st;
    if (v == UINT32_MAX) {
        *id = -1;
        return LM_OK;
    }
    if (v >= (uint32_t)n_vocab)
        return lm_fail(LM_ERR_FORMAT, "%s: %s is %lu but the vocabulary has %d tokens", g->file.path, key,
                       (unsigned long)v, n_vocab);
    *id = (int)v;
    return LM_OK;
}

/* tokenizer.ggml.add_bos_token, when present, into t->add_bos; a non-bool is an error. */
lm_status lm_tok_gguf_add_bos(const lm_gguf *g, lm_tokenizer *t) {
    const lm_gguf_kv *kv = lm_gguf_find(g, "tokenizer.ggml.add_bos_token");
    if (!kv) return LM_OK;
    if (kv->type != LM_GGUF_BOOL)
        return lm_fail(LM_ERR_FORMAT, "%s: tokenizer.ggml.add_bos_token is not a bool", g->file.path);
    t->add_bos = kv->u != 0;
    return LM_OK;
}

static int is_int_type(lm_gguf_type ty) {
    return ty == LM_GGUF_UINT8 || ty == LM_GGUF_INT8 || ty == LM_GGUF_UINT16 || ty == LM_GGUF_INT16 ||
           ty == LM_GGUF_UINT32 || ty == LM_GGUF_INT32 || ty == LM_GGUF_UINT64 || ty == LM_GGUF_INT64;
}

/* An optional per-token array: must be an array of an accepted element type, one per token. */
lm_status lm_tok_gguf_token_array(const lm_gguf *g, const char *key, int want_float, uint64_t n,
                                  const lm_gguf_kv **out) {
    *out = NULL;
    const lm_gguf_kv *kv = lm_gguf_find(g, key);
    if (!kv) return LM_OK;
    int ok = kv->type == LM_GGUF_ARRAY && kv->arr_data &&
             (want_float ? (kv->arr_type == LM_GGUF_FLOAT32 || kv->arr_type == LM_GGUF_FLOAT64)
                         : is_int_type(kv->arr_type));
    if (!ok)
        return lm_fail(LM_ERR_FORMAT, "%s: %s is not an array of %s", g->file.path, key,
                       want_float ? "floats" : "integers");
    if (kv->n != n)
        return lm_fail(LM_ERR_FORMAT, "%s: %s has %llu entries but tokenizer.ggml.tokens has %llu", g->file.path,
                       key, (unsigned long long)kv->n, (unsigned long long)n);
    *out = kv;
    return LM_OK;
}

lm_status lm_tokenizer_from_gguf(const lm_gguf *g, lm_tokenizer **out) {
    if (!out) return lm_fail(LM_ERR_ARG, "lm_tokenizer_from_gguf: out is NULL");
    *out = NULL;
    if (!g) return lm_fail(LM_ERR_ARG, "lm_tokenizer_from_gguf: g is NULL");
    const char *path = g->file.path ? g->file.path : "(gguf)";
    if (!lm_gguf_find(g, "tokenizer.ggml.model"))
        return lm_fail(LM_ERR_FORMAT, "%s: no tokenizer in this file (tokenizer.ggml.model is missing)", path);
    lm_gguf_str model;
    lm_status st = lm_gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (st != LM_OK) return st;
    if (model.len == 4 && memcmp(model.ptr, "gpt2", 4) == 0) return lm_tok_from_gguf_bpe(g, out);
    if (!(model.len == 5 && memcmp(model.ptr, "llama", 5) == 0))
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: tokenizer model \"%.*s\" is not supported (only \"llama\" and \"gpt2\")",
                       path, (int)(model.len < 64 ? model.len : 64), model.ptr);

    const lm_gguf_kv *toks = lm_gguf_find(g, "tokenizer.ggml.tokens");
    if (!toks) return lm_fail(LM_ERR_FORMAT, "%s: tokenizer.ggml.tokens is missing", path);
    if (toks->type != LM_GGUF_ARRAY || toks->arr_type != LM_GGUF_STRING || !toks->arr_str)
        return lm_fail(LM_ERR_FORMAT, "%s: tokenizer.ggml.tokens is not an array of strings", path);
    if (toks->n == 0 || toks->n >= (uint64_t)INT_MAX)
        return lm_fail(LM_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %llu entries", path,
                       (unsigned long long)toks->n);
    int n = (int)toks->n;
    const lm_gguf_kv *scores, *types;
    if ((st = lm_tok_gguf_token_array(g, "tokenizer.ggml.scores", 1, toks->n, &scores)) != LM_OK) return st;
    if ((st = lm_tok_gguf_token_array(g, "tokenizer.ggml.token_type", 0, toks->n, &types)) != LM_OK) return st;

    lm_tokenizer *t = lm_tok_new(path);
    raw_vocab r = {0};
    if (!t || !raw_vocab_alloc(&r, n)) {
        st = lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    if ((st = lm_tok_gguf_token_id(g, "tokenizer.ggml.bos_token_id", n, &t->bos)) != LM_OK) goto done;
    if ((st = lm_tok_gguf_token_id(g, "tokenizer.ggml.eos_token_id", n, &t->eos)) != LM_OK) goto done;
    if ((st = lm_tok_gguf_add_bos(g, t)) != LM_OK) goto done;
    int unk = -1;
    if ((st = lm_tok_gguf_token_id(g, "tokenizer.ggml.unknown_token_id", n, &unk)) != LM_OK) goto done;
    const lm_gguf_kv *asp = lm_gguf_find(g, "tokenizer.ggml.add_space_prefix");
    if (asp) {
        if (asp->type != LM_GGUF_BOOL) {
            st = lm_fail(LM_ERR_FORMAT, "%s: tokenizer.ggml.add_space_prefix is not a bool", path);
            goto done;
        }
        t->add_space_prefix = asp->u != 0;
    }
    for (int i = 0; i < n; i++) {
        if (toks->arr_str[i].len > MAX_PIECE_LEN) {
            st = lm_fail(LM_ERR_FORMAT, "%s: token %d is %llu bytes long", path, i,
                         (unsigned long long)toks->arr_str[i].len);
            goto done;
        }
        r.s[i] = toks->arr_str[i].ptr;
        r.len[i] = (uint32_t)toks->arr_str[i].len;
        r.score[i] = scores ? (float)lm_gguf_arr_f64(scores, (uint64_t)i) : 0.0f;
        if (types) {
            int64_t ty = lm_gguf_arr_i64(types, (uint64_t)i);
            if (ty < 0 || ty > LM_TOKEN_BYTE) {
                st = lm_fail(LM_ERR_FORMAT, "%s: token %d has unknown token type %lld", path, i, (long long)ty);
                goto done;
            }
            r.type[i] = (int)ty;
        } else {
            r.type[i] = -1;
        }
    }
    r.spm_form = 1;
    st = build_vocab(t, &r);
    if (st == LM_OK && unk >= 0) t->unk = unk; /* the file's word beats the first UNKNOWN-typed token */
done:
    raw_vocab_free(&r);
    if (st != LM_OK) {
        lm_tokenizer_free(t);
        return st;
    }
    *out = t;
    return LM_OK;
}

lm_tokenizer_kind lm_tokenizer_get_kind(const lm_tokenizer *t) { return t ? t->kind : LM_TOK_SPM; }
int lm_tokenizer_vocab_size(const lm_tokenizer *t) { return t ? t->n_vocab : 0; }
int lm_tokenizer_bos(const lm_tokenizer *t) { return t ? t->bos : -1; }
int lm_tokenizer_eos(const lm_tokenizer *t) { return t ? t->eos : -1; }

const char *lm_tokenizer_piece(const lm_tokenizer *t, int id, size_t *len) {
    if (!t || id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        return "";
    }
    if (len) *len = t->tokens[id].piece_len;
    return t->tokens[id].piece;
}

const char *lm_tokenizer_token_text(const lm_tokenizer *t, int prev, int id, char *buf, size_t *len) {
    size_t dummy;
    if (!len) len = &dummy;
    *len = 0;
    if (!t || id < 0 || id >= t->n_vocab) return "";
    const lm_token *tok = &t->tokens[id];
    switch (tok->type) {
    case LM_TOKEN_CONTROL:
    case LM_TOKEN_UNUSED:
        return "";
    case LM_TOKEN_BYTE:
        if (!buf) return "";
        buf[0] = (char)tok->byte;
        buf[1] = 0;
        *len = 1;
        return buf;
    default:
        break;
    }
    const char *s = tok->text;
    size_t n = tok->text_len;
    /* The dummy prefix encode added lives on the first piece of a sequence; llama2.c's
     * decode recognises "first" as "after BOS", and -1 stands for the very start. */
    if (t->add_space_prefix && (prev < 0 || prev == t->bos) && n > 0 && s[0] == ' ') {
        s++;
        n--;
    }
    *len = n;
    return s;
}

lm_status lm_tokenizer_decode(const lm_tokenizer *t, const int32_t *ids, size_t n_ids, char **text, size_t *len) {
    if (!text) return lm_fail(LM_ERR_ARG, "lm_tokenizer_decode: text is NULL");
    *text = NULL;
    if (len) *len = 0;
    if (!t || (!ids && n_ids)) return lm_fail(LM_ERR_ARG, "lm_tokenizer_decode: NULL argument");
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return lm_fail(LM_ERR_ARG, "%s: token id %ld at position %zu is outside the vocabulary of %d", t->path,
                           (long)ids[i], i, t->n_vocab);
        total += t->tokens[ids[i]].text_len; /* an upper bound; pieces are < 2^20, so no overflow in practice */
        if (total > SIZE_MAX / 2) return lm_fail(LM_ERR_NOMEM, "%s: decoded text too large", t->path);
    }
    char *out = malloc(total + 1);
    if (!out) return lm_fail(LM_ERR_NOMEM, "%s: out of memory decoding %zu tokens", t->path, n_ids);
    size_t o = 0;
    for (size_t i = 0; i < n_ids; i++) {
        char buf[8];
        size_t n;
        const char *s = lm_tokenizer_token_text(t, i ? ids[i - 1] : -1, ids[i], buf, &n);
        memcpy(out + o, s, n);
        o += n;
    }
    out[o] = 0;
    *text = out;
    if (len) *len = o;
    return LM_OK;
}

lm_status lm_tokenizer_encode(const lm_tokenizer *t, const char *text, size_t len, int add_bos, int32_t **ids,
                              size_t *n_ids) {
    return lm_tokenizer_encode_ex(t, text, len, add_bos ? LM_TOK_ADD_BOS : 0u, ids, n_ids);
}

lm_status lm_tokenizer_encode_ex(const lm_tokenizer *t, const char *text, size_t len, unsigned flags,
                                 int32_t **ids, size_t *n_ids) {
    if (!ids || !n_ids) return lm_fail(LM_ERR_ARG, "lm_tokenizer_encode: NULL output");
    *ids = NULL;
    *n_ids = 0;
    if (!t || (!text && len)) return lm_fail(LM_ERR_ARG, "lm_tokenizer_encode: NULL argument");
    if (len > (size_t)INT32_MAX - 8) return lm_fail(LM_ERR_RANGE, "%s: text of %zu bytes is too long", t->path, len);
    int add_bos = (flags & LM_TOK_ADD_BOS) != 0;
    if (add_bos && t->bos < 0) return lm_fail(LM_ERR_ARG, "%s: the vocabulary has no BOS token", t->path);
    if (t->kind == LM_TOK_BPE || t->kind == LM_TOK_BPE_SPM) {
        /* Normalisation may grow the text, so the output grows as it goes. */
        size_t cap = len / 2 + 16, n = 0;
        int32_t *out = lm_malloc(cap, sizeof *out);
        if (!out) return lm_fail(LM_ERR_NOMEM, "%s: out of memory encoding %zu bytes", t->path, len);
        if (add_bos) out[n++] = t->bos;
        lm_status st = lm_tok_bpe_encode(t, text ? text : "", len, flags, &out, &n, &cap);
        if (st != LM_OK) {
            free(out);
            return st;
        }
        *ids = out;
        *n_ids = n;
        return LM_OK;
    }
    int32_t *out = lm_malloc(len + 2, sizeof *out);
    if (!out) return lm_fail(LM_ERR_NOMEM, "%s: out of memory encoding %zu bytes", t->path, len);
    size_t n = 0, m = 0;
    if (add_bos) out[n++] = t->bos;
    lm_status st;
    switch (t->kind) {
    case LM_TOK_SPM:
        st = lm_tok_spm_encode(t, text, len, out + n, &m);
        break;
    default:
        st = lm_fail(LM_ERR_UNSUPPORTED, "%s: this tokenizer kind cannot encode", t->path);
        break;
    }
    if (st != LM_OK) {
        free(out);
        return st;
    }
    *ids = out;
    *n_ids = n + m;
    return LM_OK;
}

static int is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* dir + "/" + name, malloc'd. */
static char *join_path(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

lm_status lm_tokenizer_load_dir(const char *dir, lm_tokenizer **out) {
    if (!out) return lm_fail(LM_ERR_ARG, "lm_tokenizer_load_dir: out is NULL");
    *out = NULL;
    if (!dir) return lm_fail(LM_ERR_ARG, "lm_tokenizer_load_dir: dir is NULL");
    static const char *const pairs[][2] = {{"tokenizer.json", NULL},
                                           {"vocab.json", "merges.txt"},
                                           {"encoder.json", "vocab.bpe"}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        char *a = join_path(dir, pairs[i][0]);
        char *b = pairs[i][1] ? join_path(dir, pairs[i][1]) : NULL;
        if (!a || (pairs[i][1] && !b)) {
            free(a);
            free(b);
            return lm_fail(LM_ERR_NOMEM, "%s: out of memory", dir);
        }
        int found = is_file(a) && (!b || is_file(b));
        lm_status st = LM_OK;
        if (found) st = b ? lm_tokenizer_load_gpt2_files(a, b, out) : lm_tokenizer_load_json(a, out);
        free(a);
        free(b);
        if (found) return st;
    }
    return lm_fail(LM_ERR_IO, "%s: no tokenizer here (looked for tokenizer.json, vocab.json + merges.txt, "
                   "encoder.json + vocab.bpe)", dir);
}

lm_status lm_tokenizer_load(const char *path, lm_tokenizer **out) {
    if (!out) return lm_fail(LM_ERR_ARG, "lm_tokenizer_load: out is NULL");
    *out = NULL;
    if (!path) return lm_fail(LM_ERR_ARG, "lm_tokenizer_load: path is NULL");
    if (is_dir(path)) return lm_tokenizer_load_dir(path, out);
    FILE *f = fopen(path, "rb");
    if (!f) return lm_fail(LM_ERR_IO, "%s: cannot open", path);
    unsigned char head[64];
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    if (n >= 4 && memcmp(head, "GGUF", 4) == 0) {
        lm_gguf *g = NULL;
        lm_status st = lm_gguf_open(path, &g);
        if (st == LM_OK) st = lm_tokenizer_from_gguf(g, out);
        lm_gguf_close(g);
        return st;
    }
    size_t i = 0;
    while (i < n && (head[i] == ' ' || head[i] == '\t' || head[i] == '\n' || head[i] == '\r')) i++;
    if (i < n && head[i] == '{') return lm_tokenizer_load_json(path, out);
    return lm_tokenizer_load_llama2c(path, 0, out);
}

int lm_tokenizer_wants_bos(const lm_tokenizer *t) {
    if (lm_tokenizer_bos(t) < 0) return 0;
    if (t->add_bos >= 0) return t->add_bos;
    return lm_tokenizer_get_kind(t) != LM_TOK_BPE;
}
