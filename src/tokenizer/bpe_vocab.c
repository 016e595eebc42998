/* bpe_vocab.c - merge-rank BPE vocabularies: building one, GPT-2's encoder.json + vocab.bpe, GGUF "gpt2". */
#include "tokenizer_internal.h"

#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* GPT-2's pre-tokenizer: contractions, letters, digits, other symbols, each optionally after one
 * space, and whitespace, leaving the last space of a run to start the next word. */
const char LM_GPT2_PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* The pre-tokenizers llama.cpp names in tokenizer.ggml.pre, as their tokenizer.json files write them. */
static const char LLAMA3_PATTERN[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                     "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_PATTERN[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                                    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* No vocabulary comes near this; a larger id means the file is garbage. */
#define MAX_VOCAB (1 << 24)
#define MAX_PIECE_LEN (1u << 20)

void lm_tok_bytelevel_table(uint16_t cp[256]) {
    /* Printable Latin-1 bytes stand for themselves; the others (controls, space, DEL, NBSP,
     * soft hyphen) get the code points from 256 on, in byte order, so every byte has a visible
     * stand-in and no two bytes share one. */
    uint16_t next = 256;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        cp[b] = printable ? (uint16_t)b : next++;
    }
}

static size_t put_utf8(char *dst, uint32_t cp) {
    if (cp < 0x80) {
        dst[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        dst[0] = (char)(0xC0 | (cp >> 6));
        dst[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    dst[0] = (char)(0xE0 | (cp >> 12));
    dst[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    dst[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
}

/* Code point of the well-formed character of length cl at s. */
static uint32_t get_cp(const unsigned char *s, size_t cl) {
    if (cl == 1) return s[0];
    uint32_t cp = s[0] & (0xFF >> (cl + 1));
    for (size_t k = 1; k < cl; k++) cp = cp << 6 | (s[k] & 0x3F);
    return cp;
}

/* The bytes a byte-level piece stands for, into dst (at most n bytes); returns the length, or
 * (size_t)-1 when a character has no byte (then the piece is taken as raw text, as Hugging Face's
 * ByteLevel decoder does). */
static size_t bytelevel_decode(char *dst, const char *piece, size_t n, const int16_t *byte_of_cp) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t cl = lm_tok_utf8_len((const unsigned char *)piece + i, n - i);
        uint32_t cp = get_cp((const unsigned char *)piece + i, cl);
        if (cl == 1 && (unsigned char)piece[i] >= 0x80) return (size_t)-1;
        if (cp >= 512 || byte_of_cp[cp] < 0) return (size_t)-1;
        dst[o++] = (char)byte_of_cp[cp];
        i += cl;
    }
    return o;
}

int lm_tok_lookup_piece(const lm_tokenizer *t, const char *s, size_t n) {
    if (!t->piece_slots) return -1;
    for (size_t i = (size_t)lm_tok_hash(s, n) & t->piece_mask;; i = (i + 1) & t->piece_mask) {
        uint32_t v = t->piece_slots[i];
        if (v == 0) return -1;
        const lm_token *tok = &t->tokens[v - 1];
        if (tok->piece_len == n && memcmp(tok->piece, s, n) == 0) return (int)(v - 1);
    }
}

void lm_tok_bpe_free(lm_tokenizer *t) {
    for (int i = 0; i < t->cfg.n_splits; i++) {
        pcre2_code_free(t->cfg.splits[i].code);
        free(t->cfg.splits[i].src);
    }
    free(t->cfg.splits);
    free(t->piece_slots);
    free(t->merges);
    free(t->merge_keys);
    free(t->merge_rank);
    free(t->added);
    free(t->added_order);
}

/* Those engines take \s to be Unicode's White_Space property; PCRE2's UCP \s also takes the
 * characters of its \h and \v lists, one of which (U+180E, no longer a space since Unicode 6.3)
 * is not White_Space. So \s and \S become \p{White_Space} and \P{White_Space}, which PCRE2 knows
 * from Unicode's own tables. Other escapes, and \Q...\E quoted text, are copied unchanged.
 * Returns a malloc'd pattern (length in *out_len), NULL when out of memory. */
static char *respell_space_escapes(const char *p, size_t n, size_t *out_len) {
    static const char WS[] = "\\p{White_Space}", NWS[] = "\\P{White_Space}";
    size_t count = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (p[i] == '\\') count++, i++;
    if (count > (SIZE_MAX - n - 1) / sizeof WS) return NULL;
    char *o = malloc(n + count * sizeof WS + 1);
    if (!o) return NULL;
    size_t k = 0;
    int quoted = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\\' || i + 1 == n) {
            o[k++] = p[i];
            continue;
        }
        char c = p[++i];
        if (quoted) {
            quoted = c != 'E';
        } else if (c == 'Q') {
            quoted = 1;
        } else if (c == 's' || c == 'S') {
            const char *r = c == 's' ? WS : NWS;
            memcpy(o + k, r, sizeof WS - 1);
            k += sizeof WS - 1;
            continue;
        }
        o[k++] = '\\';
        o[k++] = c;
    }
    o[k] = 0;
    *out_len = k;
    return o;
}

lm_status lm_tok_add_split(lm_tokenizer *t, const char *pattern, size_t len, int literal) {
    if (t->cfg.n_splits >= 64) return lm_fail(LM_ERR_UNSUPPORTED, "%s: more than 64 pre-tokenizer regexes", t->path);
    lm_pretok_split *v = realloc(t->cfg.splits, (size_t)(t->cfg.n_splits + 1) * sizeof *v);
    if (!v) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", t->path);
    t->cfg.splits = v;
    lm_pretok_split *s = &v[t->cfg.n_splits];
    memset(s, 0, sizeof *s);
    s->src = malloc(len + 1);
    if (!s->src) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", t->path);
    memcpy(s->src, pattern, len);
    s->src[len] = 0;
    s->literal = literal;
    t->cfg.n_splits++;
    int err;
    PCRE2_SIZE off;
    /* UCP makes \w, \d and friends Unicode-aware, as they are in the regex engines of the
     * reference implementations (Python's regex module, Oniguruma, Rust's fancy-regex). */
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    char *re = literal ? NULL : respell_space_escapes(pattern, len, &len);
    if (!literal && !re) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", t->path);
    s->code = pcre2_compile((PCRE2_SPTR)(re ? re : pattern), len, opts, &err, &off, NULL);
    free(re);
    if (!s->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        (void)off; /* an offset into the respelled pattern would mislead */
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: pre-tokenizer regex \"%.200s\" does not compile: %s", t->path, s->src,
                       (const char *)msg);
    }
    /* JIT is an optimisation: where the platform lacks it, the interpreter gives the same matches. */
    (void)pcre2_jit_compile(s->code, PCRE2_JIT_COMPLETE);
    return LM_OK;
}

static size_t pow2_at_least(size_t n) {
    size_t cap = 16;
    while (cap < n) cap *= 2;
    return cap;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

/* Slot of the merge (a, b) in t->merge_keys: where it is, or the empty slot where it goes. */
static size_t merge_slot(const lm_tokenizer *t, uint64_t key) {
    size_t i = (size_t)mix64(key) & t->merge_mask;
    while (t->merge_keys[i] && t->merge_keys[i] != key + 1) i = (i + 1) & t->merge_mask;
    return i;
}

int lm_tok_merge_find(const lm_tokenizer *t, int32_t a, int32_t b, uint32_t *rank) {
    if (!t->merge_keys) return 0;
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (size_t i = (size_t)mix64(key) & t->merge_mask; t->merge_keys[i]; i = (i + 1) & t->merge_mask)
        if (t->merge_keys[i] == key + 1) {
            *rank = t->merge_rank[i];
            return 1;
        }
    return 0;
}

/* Reports a merge problem with the file position. */
static lm_status merge_fail(const lm_tokenizer *t, const lm_bpe_source *src, size_t i, const char *why, const char *s,
                            size_t n) {
    const char *path = src->merges_path ? src->merges_path : t->path;
    int la = (int)(src->merge_a_len[i] < 64 ? src->merge_a_len[i] : 64);
    int lb = (int)(src->merge_b_len[i] < 64 ? src->merge_b_len[i] : 64);
    if (src->merge_line0)
        return lm_fail(LM_ERR_FORMAT, "%s: line %zu: merge \"%.*s %.*s\": %s \"%.*s\" is not in the vocabulary", path,
                       i + src->merge_line0, la, src->merge_a[i], lb, src->merge_b[i], why, (int)(n < 64 ? n : 64), s);
    return lm_fail(LM_ERR_FORMAT, "%s: merge %zu \"%.*s %.*s\": %s \"%.*s\" is not in the vocabulary", path, i, la,
                   src->merge_a[i], lb, src->merge_b[i], why, (int)(n < 64 ? n : 64), s);
}

static lm_status build_merges(lm_tokenizer *t, const lm_bpe_source *src) {
    if (src->n_merges >= (size_t)UINT32_MAX / 4)
        return lm_fail(LM_ERR_FORMAT, "%s: %zu merges", src->merges_path ? src->merges_path : t->path, src->n_merges);
    size_t cap = pow2_at_least(2 * src->n_merges + 1);
    t->merges = lm_malloc(src->n_merges ? src->n_merges : 1, sizeof *t->merges);
    t->merge_keys = lm_calloc(cap, sizeof *t->merge_keys);
    t->merge_rank = lm_malloc(cap, sizeof *t->merge_rank);
    if (!t->merges || !t->merge_keys || !t->merge_rank)
        return lm_fail(LM_ERR_NOMEM, "%s: out of memory for %zu merges", t->path, src->n_merges);
    t->merge_mask = cap - 1;
    size_t longest = 0;
    for (size_t i = 0; i < src->n_merges; i++) {
        size_t n = (size_t)src->merge_a_len[i] + src->merge_b_len[i];
        if (n > longest) longest = n;
    }
    char *cat = malloc(longest + 1);
    if (!cat) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", t->path);
    lm_status st = LM_OK;
    for (size_t i = 0; i < src->n_merges && st == LM_OK; i++) {
        const char *a = src->merge_a[i], *b = src->merge_b[i];
        size_t la = src->merge_a_len[i], lb = src->merge_b_len[i];
        int ia = lm_tok_lookup_piece(t, a, la);
        int ib = lm_tok_lookup_piece(t, b, lb);
        if (ia < 0) {
            st = merge_fail(t, src, i, "left piece", a, la);
            break;
        }
        if (ib < 0) {
            st = merge_fail(t, src, i, "right piece", b, lb);
            break;
        }
        memcpy(cat, a, la);
        memcpy(cat + la, b, lb);
        int ic = lm_tok_lookup_piece(t, cat, la + lb);
        if (ic < 0) {
            st = merge_fail(t, src, i, "merged piece", cat, la + lb);
            break;
        }
        t->merges[i][0] = ia;
        t->merges[i][1] = ib;
        t->merges[i][2] = ic;
        uint64_t key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
        size_t slot = merge_slot(t, key);
        /* A repeated pair takes its last rank, as both reference implementations (a dict built
         * from the list) do. */
        t->merge_keys[slot] = key + 1;
        t->merge_rank[slot] = (uint32_t)i;
    }
    free(cat);
    t->n_merges = (uint32_t)src->n_merges;
    /* Fused unknown characters would be one token across the place; a vocabulary with U+2581
     * never makes one there. */
    t->cfg.spm_word_split = !t->cfg.fuse_unk || lm_tok_lookup_piece(t, "\xe2\x96\x81", 3) >= 0;
    for (uint32_t i = 0; i < t->n_merges && st == LM_OK; i++) {
        const lm_token *tok = &t->tokens[t->merges[i][2]];
        for (uint32_t k = 1; k + 3 <= tok->piece_len && t->cfg.spm_word_split; k++)
            if (memcmp(tok->piece + k, "\xe2\x96\x81", 3) == 0 && !(k >= 3 && memcmp(tok->piece + k - 3, "\xe2\x96\x81", 3) == 0))
                t->cfg.spm_word_split = 0;
    }
    return st;
}

static lm_status build_added(lm_tokenizer *t, const lm_bpe_source *src) {
    t->n_added = src->n_added;
    t->added = lm_malloc(src->n_added ? (size_t)src->n_added : 1, sizeof *t->added);
    t->added_order = lm_malloc(src->n_added ? (size_t)src->n_added : 1, sizeof *t->added_order);
    if (!t->added || !t->added_order) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", t->path);
    if (src->n_added) memcpy(t->added, src->added, (size_t)src->n_added * sizeof *t->added);
    /* An empty added token (a GGUF CONTROL token with no piece) can match nothing: leave it out. */
    int kept = 0;
    for (int i = 0; i < t->n_added; i++)
        if (t->tokens[t->added[i].id].text_len > 0) t->added[kept++] = t->added[i];
    t->n_added = kept;
    int count[256] = {0};
    for (int i = 0; i < t->n_added; i++) count[(unsigned char)t->tokens[t->added[i].id].text[0]]++;
    t->added_first[0] = 0;
    for (int b = 0; b < 256; b++) t->added_first[b + 1] = t->added_first[b] + count[b];
    int fill[256];
    for (int b = 0; b < 256; b++) fill[b] = t->added_first[b];
    for (int i = 0; i < t->n_added; i++) {
        unsigned char b = (unsigned char)t->tokens[t->added[i].id].text[0];
        int k = fill[b]++;
        /* Insertion sort, longest first, so the first match found at a position is the longest. */
        while (k > t->added_first[b] &&
               t->tokens[t->added[t->added_order[k - 1]].id].text_len < t->tokens[t->added[i].id].text_len) {
            t->added_order[k] = t->added_order[k - 1];
            k--;
        }
        t->added_order[k] = i;
    }
    return LM_OK;
}

lm_status lm_tok_bpe_build(lm_tokenizer *t, const lm_bpe_source *src) {
    int n = src->n_tokens;
    if (n <= 0 || n > MAX_VOCAB) return lm_fail(LM_ERR_FORMAT, "%s: vocabulary of %d tokens", t->path, n);
    int byte_level = t->kind == LM_TOK_BPE;
    uint16_t cp[256];
    int16_t byte_of_cp[512];
    lm_tok_bytelevel_table(cp);
    for (int i = 0; i < 512; i++) byte_of_cp[i] = -1;
    for (int b = 0; b < 256; b++) byte_of_cp[cp[b]] = (int16_t)b;

    size_t blob = 0;
    for (int i = 0; i < n; i++) {
        if (!src->piece[i]) return lm_fail(LM_ERR_FORMAT, "%s: token id %d has no piece", t->path, i);
        size_t len = src->piece_len[i];
        if (len > MAX_PIECE_LEN) return lm_fail(LM_ERR_FORMAT, "%s: token %d is %zu bytes long", t->path, i, len);
        if (blob > SIZE_MAX - (2 * len + 2)) return lm_fail(LM_ERR_NOMEM, "%s: vocabulary too large", t->path);
        blob += 2 * len + 2; /* piece, and text, which is never longer */
    }
    t->n_vocab = n;
    t->tokens = lm_calloc((size_t)n, sizeof *t->tokens);
    t->blob = malloc(blob ? blob : 1);
    if (!t->tokens || !t->blob) return lm_fail(LM_ERR_NOMEM, "%s: out of memory for %d tokens", t->path, n);
    char *p = t->blob;
    for (int i = 0; i < n; i++) {
        lm_token *tok = &t->tokens[i];
        const char *s = src->piece[i];
        size_t len = src->piece_len[i];
        int type = src->type[i];
        if (type > LM_TOKEN_BYTE) return lm_fail(LM_ERR_FORMAT, "%s: token %d has unknown type %d", t->path, i, type);
        char *piece = p;
        if (len) memcpy(piece, s, len);
        piece[len] = 0;
        char *text = piece + len + 1;
        size_t tl = (size_t)-1;
        int added = type == LM_TOKEN_CONTROL || type == LM_TOKEN_USER_DEFINED;
        if (byte_level) {
            if (type == LM_TOKEN_BYTE)
                return lm_fail(LM_ERR_FORMAT, "%s: token %d is a byte token, which byte-level BPE has no use for",
                               t->path, i);
            /* Added tokens are matched and decoded as written; vocabulary pieces stand for bytes. */
            if (!added) tl = bytelevel_decode(text, s, len, byte_of_cp);
        } else if (!added) {
            int byte = t->cfg.byte_fallback ? lm_tok_parse_byte_piece(s, len) : -1;
            if (byte >= 0) {
                type = LM_TOKEN_BYTE;
                tok->byte = (uint8_t)byte;
                if (t->byte_token[byte] < 0) t->byte_token[byte] = i;
            }
            /* SentencePiece spelling: U+2581 is a space in decoded text. */
            tl = 0;
            for (size_t k = 0; k < len;) {
                if (k + 3 <= len && memcmp(s + k, "\xe2\x96\x81", 3) == 0) {
                    text[tl++] = ' ';
                    k += 3;
                } else {
                    text[tl++] = s[k++];
                }
            }
        }
        if (tl == (size_t)-1) {
            if (len) memcpy(text, s, len);
            tl = len;
        }
        text[tl] = 0;
        p = text + tl + 1;
        tok->piece = piece;
        tok->piece_len = (uint32_t)len;
        tok->text = text;
        tok->text_len = (uint32_t)tl;
        tok->type = (uint8_t)type;
    }

    size_t cap = pow2_at_least(2 * (size_t)n);
    t->piece_slots = lm_calloc(cap, sizeof *t->piece_slots);
    if (!t->piece_slots) return lm_fail(LM_ERR_NOMEM, "%s: out of memory for the vocabulary index", t->path);
    t->piece_mask = cap - 1;
    for (int id = 0; id < n; id++) {
        const lm_token *tok = &t->tokens[id];
        size_t i = (size_t)lm_tok_hash(tok->piece, tok->piece_len) & t->piece_mask;
        int dup = 0;
        for (; t->piece_slots[i]; i = (i + 1) & t->piece_mask) {
            const lm_token *o = &t->tokens[t->piece_slots[i] - 1];
            if (o->piece_len == tok->piece_len && memcmp(o->piece, tok->piece, tok->piece_len) == 0) {
                dup = 1; /* the first of equal pieces wins */
                break;
            }
        }
        if (!dup) t->piece_slots[i] = (uint32_t)id + 1;
    }

    lm_status st = build_merges(t, src);
    if (st != LM_OK) return st;
    for (int b = 0; b < 256; b++) {
        char u[4];
        size_t ul = put_utf8(u, cp[b]);
        t->byte_id[b] = byte_level ? lm_tok_lookup_piece(t, u, ul) : -1;
    }
    return build_added(t, src);
}

/* ---- JSON vocabularies ({piece: id}) ------------------------------------------------------ */

/* Checks a {piece: id} object and returns its largest id (-1 when empty). */
lm_status lm_tok_json_vocab_scan(const char *path, const char *what, json_t *obj, int *max_id) {
    *max_id = -1;
    if (!json_is_object(obj)) return lm_fail(LM_ERR_FORMAT, "%s: %s is not a JSON object", path, what);
    const char *key;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach(obj, key, klen, v) {
        if (!json_is_integer(v))
            return lm_fail(LM_ERR_FORMAT, "%s: %s: the id of \"%.*s\" is not an integer", path, what,
                           (int)(klen < 64 ? klen : 64), key);
        json_int_t id = json_integer_value(v);
        if (id < 0 || id >= MAX_VOCAB)
            return lm_fail(LM_ERR_FORMAT, "%s: %s: token \"%.*s\" has id %lld, outside 0..%d", path, what,
                           (int)(klen < 64 ? klen : 64), key, (long long)id, MAX_VOCAB - 1);
        if (klen > MAX_PIECE_LEN)
            return lm_fail(LM_ERR_FORMAT, "%s: %s: token %lld is %zu bytes long", path, what, (long long)id, klen);
        if ((int)id > *max_id) *max_id = (int)id;
    }
    return LM_OK;
}

/* Puts each piece of a scanned {piece: id} object at its id (piece[] sized past the largest). */
lm_status lm_tok_json_vocab_fill(const char *path, const char *what, json_t *obj, const char **piece,
                                 uint32_t *piece_len) {
    const char *key;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach(obj, key, klen, v) {
        int id = (int)json_integer_value(v);
        if (piece[id])
            return lm_fail(LM_ERR_FORMAT, "%s: %s: tokens \"%.*s\" and \"%.*s\" both have id %d", path, what,
                           (int)(piece_len[id] < 64 ? piece_len[id] : 64), piece[id], (int)(klen < 64 ? klen : 64),
                           key, id);
        piece[id] = key;
        piece_len[id] = (uint32_t)klen;
    }
    return LM_OK;
}

lm_status lm_tok_json_load(const char *path, json_t **out) {
    *out = NULL;
    char *buf = NULL;
    size_t size = 0;
    lm_status st = lm_read_file(path, &buf, &size);
    if (st != LM_OK) return st;
    json_error_t err;
    /* Duplicate keys would silently drop a token; pieces may hold U+0000 (escaped). */
    *out = json_loadb(buf, size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    free(buf);
    if (!*out)
        return lm_fail(LM_ERR_FORMAT, "%s: not valid JSON (line %d, column %d: %s)", path, err.line, err.column,
                       err.text);
    return LM_OK;
}

/* Splits a merge written "a b" at the first space after the first byte (so that a piece of a
 * lone space could still be written first). 0 if there is no such space or a side is empty. */
int lm_tok_split_merge(const char *s, size_t n, size_t *at) {
    for (size_t i = 1; i + 1 < n; i++)
        if (s[i] == ' ') {
            *at = i;
            return 1;
        }
    return 0;
}

lm_status lm_tok_source_alloc(lm_bpe_source *src, int n_tokens, size_t n_merges, int n_added) {
    src->n_tokens = n_tokens;
    src->piece = lm_calloc((size_t)n_tokens, sizeof *src->piece);
    src->piece_len = lm_calloc((size_t)n_tokens, sizeof *src->piece_len);
    src->type = lm_calloc((size_t)n_tokens, sizeof *src->type);
    src->n_merges = n_merges;
    size_t m = n_merges ? n_merges : 1;
    src->merge_a = lm_calloc(m, sizeof *src->merge_a);
    src->merge_b = lm_calloc(m, sizeof *src->merge_b);
    src->merge_a_len = lm_calloc(m, sizeof *src->merge_a_len);
    src->merge_b_len = lm_calloc(m, sizeof *src->merge_b_len);
    src->added = lm_calloc(n_added > 0 ? (size_t)n_added : 1, sizeof *src->added);
    src->n_added = 0;
    if (!src->piece || !src->piece_len || !src->type || !src->merge_a || !src->merge_b || !src->merge_a_len ||
        !src->merge_b_len || !src->added)
        return LM_ERR_NOMEM;
    for (int i = 0; i < n_tokens; i++) src->type[i] = LM_TOKEN_NORMAL;
    return LM_OK;
}

void lm_tok_source_free(lm_bpe_source *src) {
    free(src->piece);
    free(src->piece_len);
    free(src->type);
    free(src->merge_a);
    free(src->merge_b);
    free(src->merge_a_len);
    free(src->merge_b_len);
    free(src->added);
    memset(src, 0, sizeof *src);
}

/* ---- GPT-2's files -------------------------------------------------------------------------- */

/* Counts the merge lines of a vocab.bpe / merges.txt and, with src, records them. */
static lm_status scan_merges(const char *path, const char *buf, size_t size, size_t *count, lm_bpe_source *src) {
    size_t pos = 0, line = 0, k = 0;
    while (pos < size) {
        const char *nl = memchr(buf + pos, '\n', size - pos);
        size_t end = nl ? (size_t)(nl - buf) : size;
        size_t len = end - pos;
        line++;
        const char *s = buf + pos;
        pos = end + 1;
        if (len && s[len - 1] == '\r') len--;
        if (line == 1 && len >= 8 && memcmp(s, "#version", 8) == 0) continue;
        if (len == 0 && pos >= size) break; /* the newline ending the last line */
        size_t at;
        if (!lm_tok_split_merge(s, len, &at) || memchr(s + at + 1, ' ', len - at - 1))
            return lm_fail(LM_ERR_FORMAT, "%s: line %zu: \"%.*s\" is not a merge (two pieces separated by a space)",
                           path, line, (int)(len < 64 ? len : 64), s);
        if (src) {
            src->merge_a[k] = s;
            src->merge_a_len[k] = (uint32_t)at;
            src->merge_b[k] = s + at + 1;
            src->merge_b_len[k] = (uint32_t)(len - at - 1);
            if (k == 0) src->merge_line0 = line; /* every later line is a merge, so merge k is on line k + this */
        }
        k++;
    }
    *count = k;
    return LM_OK;
}

static void set_special_eot(lm_tokenizer *t, lm_bpe_source *src) {
    static const char EOT[] = "<|endoftext|>";
    for (int i = 0; i < src->n_tokens; i++) {
        if (src->piece_len[i] == sizeof EOT - 1 && memcmp(src->piece[i], EOT, sizeof EOT - 1) == 0) {
            src->type[i] = LM_TOKEN_CONTROL;
            src->added[src->n_added++] = (lm_added_token){.id = i, .special = 1, .in_vocab = 1};
            t->bos = t->eos = i;
            return;
        }
    }
}

lm_status lm_tokenizer_load_gpt2_files(const char *encoder_json, const char *vocab_bpe, lm_tokenizer **out) {
    if (!out) return lm_fail(LM_ERR_ARG, "lm_tokenizer_load_gpt2_files: out is NULL");
    *out = NULL;
    if (!encoder_json || !vocab_bpe) return lm_fail(LM_ERR_ARG, "lm_tokenizer_load_gpt2_files: NULL path");
    json_t *root = NULL;
    char *mbuf = NULL;
    size_t msize = 0, n_merges = 0;
    lm_tokenizer *t = NULL;
    lm_bpe_source src = {0};
    int max_id;
    lm_status st = lm_tok_json_load(encoder_json, &root);
    if (st == LM_OK) st = lm_tok_json_vocab_scan(encoder_json, "the vocabulary", root, &max_id);
    if (st == LM_OK && max_id < 0) st = lm_fail(LM_ERR_FORMAT, "%s: the vocabulary is empty", encoder_json);
    if (st == LM_OK) st = lm_read_file(vocab_bpe, &mbuf, &msize);
    if (st == LM_OK) st = scan_merges(vocab_bpe, mbuf, msize, &n_merges, NULL);
    if (st != LM_OK) goto done;
    t = lm_tok_new(encoder_json);
    if (!t || lm_tok_source_alloc(&src, max_id + 1, n_merges, 1) != LM_OK) {
        st = lm_fail(LM_ERR_NOMEM, "%s: out of memory", encoder_json);
        goto done;
    }
    t->kind = LM_TOK_BPE;
    t->add_space_prefix = 0;
    src.merges_path = vocab_bpe;
    if ((st = lm_tok_json_vocab_fill(encoder_json, "the vocabulary", root, src.piece, src.piece_len)) != LM_OK) goto done;
    for (int i = 0; i <= max_id; i++)
        if (!src.piece[i]) {
            st = lm_fail(LM_ERR_FORMAT, "%s: no token has id %d (ids must be 0..%d)", encoder_json, i, max_id);
            goto done;
        }
    if ((st = scan_merges(vocab_bpe, mbuf, msize, &n_merges, &src)) != LM_OK) goto done;
    set_special_eot(t, &src);
    t->cfg.bl_regex = 1;
    if ((st = lm_tok_add_split(t, LM_GPT2_PATTERN, strlen(LM_GPT2_PATTERN), 0)) != LM_OK) goto done;
    st = lm_tok_bpe_build(t, &src);
done:
    lm_tok_source_free(&src);
    free(mbuf);
    json_decref(root);
    if (st != LM_OK) {
        lm_tokenizer_free(t);
        return st;
    }
    *out = t;
    return LM_OK;
}

/* ---- GGUF "gpt2" ----------------------------------------------------------------------------- */

static int str_is(lm_gguf_str s, const char *lit) { return s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0; }

lm_status lm_tok_from_gguf_bpe(const lm_gguf *g, lm_tokenizer **out) {
    const char *path = g->file.path ? g->file.path : "(gguf)";
    const lm_gguf_kv *toks = lm_gguf_find(g, "tokenizer.ggml.tokens");
    if (!toks) return lm_fail(LM_ERR_FORMAT, "%s: tokenizer.ggml.tokens is missing", path);
    if (toks->type != LM_GGUF_ARRAY || toks->arr_type != LM_GGUF_STRING || !toks->arr_str)
        return lm_fail(LM_ERR_FORMAT, "%s: tokenizer.ggml.tokens is not an array of strings", path);
    if (toks->n == 0 || toks->n > (uint64_t)MAX_VOCAB)
        return lm_fail(LM_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %llu entries", path, (unsigned long long)toks->n);
    const lm_gguf_kv *merges = lm_gguf_find(g, "tokenizer.ggml.merges");
    if (!merges) return lm_fail(LM_ERR_FORMAT, "%s: tokenizer.ggml.merges is missing (needed by model \"gpt2\")", path);
    if (merges->type != LM_GGUF_ARRAY || merges->arr_type != LM_GGUF_STRING || !merges->arr_str)
        return lm_fail(LM_ERR_FORMAT, "%s: tokenizer.ggml.merges is not an array of strings", path);
    if (merges->n >= (uint64_t)UINT32_MAX / 4)
        return lm_fail(LM_ERR_FORMAT, "%s: tokenizer.ggml.merges has %llu entries", path,
                       (unsigned long long)merges->n);
    const lm_gguf_kv *types;
    lm_status st = lm_tok_gguf_token_array(g, "tokenizer.ggml.token_type", 0, toks->n, &types);
    if (st != LM_OK) return st;

    const char *pattern = LM_GPT2_PATTERN;
    int ignore_merges = 0;
    if (lm_gguf_find(g, "tokenizer.ggml.pre")) {
        lm_gguf_str pre;
        if ((st = lm_gguf_get_str(g, "tokenizer.ggml.pre", &pre)) != LM_OK) return st;
        if (str_is(pre, "default") || str_is(pre, "gpt-2") || str_is(pre, "gpt2")) {
            pattern = LM_GPT2_PATTERN;
        } else if (str_is(pre, "llama-bpe") || str_is(pre, "llama3")) {
            pattern = LLAMA3_PATTERN;
            ignore_merges = 1;
        } else if (str_is(pre, "qwen2")) {
            pattern = QWEN2_PATTERN;
        } else {
            return lm_fail(LM_ERR_UNSUPPORTED,
                           "%s: pre-tokenizer \"%.*s\" (tokenizer.ggml.pre) is not supported (only default, gpt-2, "
                           "llama-bpe, qwen2)",
                           path, (int)(pre.len < 64 ? pre.len : 64), pre.ptr);
        }
    }

    int n = (int)toks->n;
    lm_tokenizer *t = lm_tok_new(path);
    lm_bpe_source src = {0};
    if (!t || lm_tok_source_alloc(&src, n, (size_t)merges->n, n) != LM_OK) {
        st = lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    t->kind = LM_TOK_BPE;
    t->add_space_prefix = 0;
    t->cfg.ignore_merges = ignore_merges;
    for (int i = 0; i < n; i++) {
        if (toks->arr_str[i].len > MAX_PIECE_LEN) {
            st = lm_fail(LM_ERR_FORMAT, "%s: token %d is %llu bytes long", path, i,
                         (unsigned long long)toks->arr_str[i].len);
            goto done;
        }
        src.piece[i] = toks->arr_str[i].ptr;
        src.piece_len[i] = (uint32_t)toks->arr_str[i].len;
        if (types) {
            int64_t ty = lm_gguf_arr_i64(types, (uint64_t)i);
            if (ty < 0 || ty > LM_TOKEN_BYTE) {
                st = lm_fail(LM_ERR_FORMAT, "%s: token %d has unknown token type %lld", path, i, (long long)ty);
                goto done;
            }
            src.type[i] = (uint8_t)ty;
            /* llama.cpp matches both kinds in the text; only CONTROL ones are special. */
            if (ty == LM_TOKEN_CONTROL || ty == LM_TOKEN_USER_DEFINED)
                src.added[src.n_added++] =
                    (lm_added_token){.id = i, .special = ty == LM_TOKEN_CONTROL, .in_vocab = 1};
        }
    }
    for (uint64_t i = 0; i < merges->n; i++) {
        lm_gguf_str m = merges->arr_str[i];
        size_t at;
        if (!lm_tok_split_merge(m.ptr, (size_t)m.len, &at)) {
            st = lm_fail(LM_ERR_FORMAT, "%s: tokenizer.ggml.merges[%llu] \"%.*s\" is not two pieces separated by a space",
                         path, (unsigned long long)i, (int)(m.len < 64 ? m.len : 64), m.ptr);
            goto done;
        }
        src.merge_a[i] = m.ptr;
        src.merge_a_len[i] = (uint32_t)at;
        src.merge_b[i] = m.ptr + at + 1;
        src.merge_b_len[i] = (uint32_t)(m.len - at - 1);
    }
    src.merges_path = path;
    if ((st = lm_tok_gguf_token_id(g, "tokenizer.ggml.bos_token_id", n, &t->bos)) != LM_OK) goto done;
    if ((st = lm_tok_gguf_token_id(g, "tokenizer.ggml.eos_token_id", n, &t->eos)) != LM_OK) goto done;
    if ((st = lm_tok_gguf_token_id(g, "tokenizer.ggml.unknown_token_id", n, &t->unk)) != LM_OK) goto done;
    if ((st = lm_tok_gguf_add_bos(g, t)) != LM_OK) goto done;
    if (pattern == LM_GPT2_PATTERN) t->cfg.bl_regex = 1;
    if ((st = lm_tok_add_split(t, pattern, strlen(pattern), 0)) != LM_OK) goto done;
    st = lm_tok_bpe_build(t, &src);
done:
    lm_tok_source_free(&src);
    if (st != LM_OK) {
        lm_tokenizer_free(t);
        return st;
    }
    *out = t;
    return LM_OK;
}
