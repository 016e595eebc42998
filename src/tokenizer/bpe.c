/* bpe.c - merge-rank BPE encoding: added tokens, normalisation, PCRE2 pre-tokenisation, merges by rank. */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

static const char SPM_SPACE[] = "\xe2\x96\x81"; /* U+2581, SentencePiece's space */
#define SPM_SPACE_LEN 3

/* One symbol of a word being merged; symbols form a list in text order, a merged-away one has
 * id -1. */
typedef struct bsym {
    int32_t prev, next, id;
} bsym;

/* A candidate merge of adjacent symbols left and right, valid while both still hold the ids they
 * had when it was made and are still neighbours (stale candidates are skipped when popped). */
typedef struct bcand {
    uint32_t rank;
    int32_t left, right, lid, rid;
} bcand;

typedef struct work {
    const lm_tokenizer *t;
    unsigned flags;
    int32_t **out;
    size_t *n, *cap;
    bsym *syms;
    size_t syms_cap;
    bcand *heap;
    size_t heap_n, heap_cap;
    char *buf; /* a word mapped to its piece spelling, or a normalised segment */
    size_t buf_cap;
    char *seg; /* a segment with ByteLevel's prefix space */
    size_t seg_cap;
    pcre2_match_data *md;
    uint16_t cp[256]; /* byte -> stand-in code point */
} work;

static lm_status oom(const work *w) { return lm_fail(LM_ERR_NOMEM, "%s: out of memory while encoding", w->t->path); }

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 1;
    size_t c = *cap ? *cap : 64;
    while (c < need) {
        if (c > SIZE_MAX / 2 / elem) return 0;
        c *= 2;
    }
    void *q = realloc(*p, c * elem);
    if (!q) return 0;
    *p = q;
    *cap = c;
    return 1;
}

static lm_status emit(work *w, int32_t id) {
    if (*w->n == *w->cap) {
        void *p = *w->out;
        if (!grow(&p, w->cap, *w->n + 1, sizeof **w->out)) return oom(w);
        *w->out = p;
    }
    (*w->out)[(*w->n)++] = id;
    return LM_OK;
}

/* ---- merging ------------------------------------------------------------------------------- */

/* Lowest rank first; on equal ranks the leftmost, which is the order Hugging Face's BPE applies
 * them in (and, for vocabularies learned by BPE, the same result as GPT-2's merge-all-at-once). */
static int cand_before(const bcand *a, const bcand *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(work *w, bcand c) {
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(&c, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = c;
}

static bcand heap_pop(work *w) {
    bcand top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= w->heap_n) break;
        if (c + 1 < w->heap_n && cand_before(&w->heap[c + 1], &w->heap[c])) c++;
        if (!cand_before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (w->heap_n) w->heap[i] = last;
    return top;
}

static void try_pair(work *w, int32_t a, int32_t b) {
    if (a < 0 || b < 0) return;
    uint32_t rank;
    if (!lm_tok_merge_find(w->t, w->syms[a].id, w->syms[b].id, &rank)) return;
    heap_push(w, (bcand){rank, a, b, w->syms[a].id, w->syms[b].id});
}

/* Merges syms[0..ns) (ids set) and emits the result. */
static lm_status merge_and_emit(work *w, size_t ns) {
    if (ns == 0) return LM_OK;
    const lm_tokenizer *t = w->t;
    /* ns - 1 initial pairs and at most two new ones per merge, of which there are < ns. */
    if (!grow((void **)&w->heap, &w->heap_cap, 3 * ns, sizeof *w->heap)) return oom(w);
    for (size_t i = 0; i < ns; i++) {
        w->syms[i].prev = (int32_t)i - 1;
        w->syms[i].next = i + 1 < ns ? (int32_t)i + 1 : -1;
    }
    w->heap_n = 0;
    for (size_t i = 1; i < ns; i++) try_pair(w, (int32_t)i - 1, (int32_t)i);
    while (w->heap_n) {
        bcand c = heap_pop(w);
        bsym *l = &w->syms[c.left], *r = &w->syms[c.right];
        if (l->id != c.lid || r->id != c.rid || l->next != c.right) continue;
        l->id = t->merges[c.rank][2];
        l->next = r->next;
        if (r->next >= 0) w->syms[r->next].prev = c.left;
        r->id = -1;
        try_pair(w, l->prev, c.left);
        try_pair(w, c.left, l->next);
    }
    lm_status st = LM_OK;
    for (int32_t i = 0; i >= 0 && st == LM_OK; i = w->syms[i].next) st = emit(w, w->syms[i].id);
    return st;
}

/* Appends a symbol for a character with no token: the unknown token (consecutive ones fused when
 * the model says so), else an error. */
static lm_status push_unknown(work *w, size_t *ns, const unsigned char *s, size_t cl) {
    const lm_tokenizer *t = w->t;
    if (t->unk < 0)
        return lm_fail(LM_ERR_UNSUPPORTED,
                       "%s: cannot encode the character of byte 0x%02x (%zu bytes): the vocabulary has no token for "
                       "it and no unknown token",
                       t->path, s[0], cl);
    if (t->cfg.fuse_unk && *ns > 0 && w->syms[*ns - 1].id == t->unk) return LM_OK;
    w->syms[(*ns)++].id = t->unk;
    return LM_OK;
}

/* A byte-level pre-token: each byte starts as the token of its stand-in character. */
static lm_status bytelevel_word(work *w, const unsigned char *s, size_t n) {
    const lm_tokenizer *t = w->t;
    if (n == 0) return LM_OK;
    if (t->cfg.ignore_merges) {
        const uint16_t *cp = w->cp;
        if (!grow((void **)&w->buf, &w->buf_cap, 2 * n, 1)) return oom(w);
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            uint16_t c = cp[s[i]];
            if (c < 0x80) {
                w->buf[o++] = (char)c;
            } else {
                w->buf[o++] = (char)(0xC0 | (c >> 6));
                w->buf[o++] = (char)(0x80 | (c & 0x3F));
            }
        }
        int id = lm_tok_lookup_piece(t, w->buf, o);
        if (id >= 0) return emit(w, id);
    }
    if (!grow((void **)&w->syms, &w->syms_cap, n, sizeof *w->syms)) return oom(w);
    size_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        int id = t->byte_id[s[i]];
        if (id >= 0) {
            w->syms[ns++].id = id;
        } else {
            lm_status st = push_unknown(w, &ns, s + i, 1);
            if (st != LM_OK) return st;
        }
    }
    return merge_and_emit(w, ns);
}

/* A SentencePiece-style word (spaces already U+2581): characters that are tokens, else their
 * bytes' fallback tokens, else the unknown token. */
static lm_status spm_word(work *w, const char *s, size_t n) {
    const lm_tokenizer *t = w->t;
    if (n == 0) return LM_OK;
    if (t->cfg.ignore_merges) {
        int id = lm_tok_lookup_piece(t, s, n);
        if (id >= 0) return emit(w, id);
    }
    if (!grow((void **)&w->syms, &w->syms_cap, n, sizeof *w->syms)) return oom(w);
    size_t ns = 0;
    for (size_t i = 0; i < n;) {
        const unsigned char *c = (const unsigned char *)s + i;
        size_t cl = lm_tok_utf8_len(c, n - i);
        int id = lm_tok_lookup_piece(t, s + i, cl);
        int have_bytes = t->cfg.byte_fallback;
        for (size_t k = 0; k < cl && have_bytes; k++) have_bytes = t->byte_token[c[k]] >= 0;
        lm_status st = LM_OK;
        if (id >= 0) {
            w->syms[ns++].id = id;
        } else if (have_bytes) {
            for (size_t k = 0; k < cl; k++) w->syms[ns++].id = t->byte_token[c[k]];
        } else {
            st = push_unknown(w, &ns, c, cl);
        }
        if (st != LM_OK) return st;
        i += cl;
    }
    return merge_and_emit(w, ns);
}

/* ---- pre-tokenisation ----------------------------------------------------------------------- */

/* Cuts s[0..n) (valid UTF-8) with regex `level` into its matches and the runs between them, and
 * hands each piece to the next regex, or to the BPE after the last. Each regex sees its piece as
 * a whole subject, so lookarounds stop at the piece's ends, as in Hugging Face's Split. */
static lm_status split_level(work *w, int level, const char *s, size_t n) {
    const lm_tokenizer *t = w->t;
    if (n == 0) return LM_OK;
    if (level == t->cfg.n_splits) return bytelevel_word(w, (const unsigned char *)s, n);
    const pcre2_code *code = t->cfg.splits[level].code;
    size_t off = 0, gap = 0;
    lm_status st = LM_OK;
    while (off < n && st == LM_OK) {
        /* The text was checked once up front; checking it again on every call would make
         * splitting quadratic. */
        int rc = pcre2_match(code, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, w->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return lm_fail(LM_ERR_UNSUPPORTED, "%s: pre-tokenizer regex %d failed: %s", t->path, level,
                           (const char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
        size_t ms = ov[0], me = ov[1];
        if (ms < off || me < ms || me > n) break; /* \K games; take the rest as one piece */
        if (me == ms) {
            /* An empty match cuts nothing; step over one character to look further. */
            if (ms >= n) break;
            off = ms + lm_tok_utf8_len((const unsigned char *)s + ms, n - ms);
            continue;
        }
        if (ms > gap) st = split_level(w, level + 1, s + gap, ms - gap);
        if (st == LM_OK) st = split_level(w, level + 1, s + ms, me - ms);
        gap = off = me;
    }
    if (st == LM_OK && gap < n) st = split_level(w, level + 1, s + gap, n - gap);
    return st;
}

/* A byte-level segment (text between added tokens). PCRE2 in UTF mode refuses invalid UTF-8, and
 * no reference tokenizer takes it (their input is a Unicode string), so each maximal valid run is
 * pre-tokenised normally and each invalid byte is a pre-token of its own: the tokens still spell
 * out the input exactly. */
static lm_status bytelevel_segment(work *w, const char *s, size_t n) {
    const lm_tokenizer *t = w->t;
    if (n == 0) return LM_OK;
    if (t->cfg.bl_prefix_space && s[0] != ' ') {
        if (!grow((void **)&w->seg, &w->seg_cap, n + 1, 1)) return oom(w);
        w->seg[0] = ' ';
        memcpy(w->seg + 1, s, n);
        s = w->seg;
        n++;
    }
    lm_status st = LM_OK;
    size_t run = 0, i = 0;
    while (i < n && st == LM_OK) {
        size_t cl = lm_tok_utf8_len((const unsigned char *)s + i, n - i);
        if (cl == 1 && (unsigned char)s[i] >= 0x80) {
            st = split_level(w, 0, s + run, i - run);
            if (st == LM_OK) st = bytelevel_word(w, (const unsigned char *)s + i, 1);
            run = i + 1;
        }
        i += cl;
    }
    if (st == LM_OK) st = split_level(w, 0, s + run, n - run);
    return st;
}

/* A SentencePiece-style segment: spaces become U+2581, a U+2581 is prepended as the normaliser
 * or Metaspace says, and Metaspace with split cuts before each U+2581. */
static lm_status spm_segment(work *w, const char *s, size_t n, int at_start) {
    const lm_tokenizer *t = w->t;
    const lm_bpe_config *c = &t->cfg;
    if (n == 0) return LM_OK;
    if (n > (SIZE_MAX - 2 * SPM_SPACE_LEN) / SPM_SPACE_LEN) return oom(w);
    if (!grow((void **)&w->buf, &w->buf_cap, SPM_SPACE_LEN * n + 2 * SPM_SPACE_LEN, 1)) return oom(w);
    char *b = w->buf;
    size_t o = 0;
    if (c->norm_prepend) {
        memcpy(b, SPM_SPACE, SPM_SPACE_LEN);
        o = SPM_SPACE_LEN;
    }
    int replace = c->norm_replace || c->metaspace;
    for (size_t i = 0; i < n; i++) {
        if (replace && s[i] == ' ') {
            memcpy(b + o, SPM_SPACE, SPM_SPACE_LEN);
            o += SPM_SPACE_LEN;
        } else {
            b[o++] = s[i];
        }
    }
    if (c->metaspace && (c->meta_scheme == 2 || (c->meta_scheme == 1 && at_start)) &&
        !(o >= SPM_SPACE_LEN && memcmp(b, SPM_SPACE, SPM_SPACE_LEN) == 0)) {
        memmove(b + SPM_SPACE_LEN, b, o);
        memcpy(b, SPM_SPACE, SPM_SPACE_LEN);
        o += SPM_SPACE_LEN;
    }
    /* Metaspace's split cuts before every U+2581. Without it the segment is one word; when no
     * token can span a U+2581 that follows another character, cutting there gives the same
     * tokens and keeps a long text from becoming one huge merge. */
    int split = c->metaspace && c->meta_split;
    int fast = !split && c->spm_word_split && !c->ignore_merges;
    if (!split && !fast) return spm_word(w, b, o);
    lm_status st = LM_OK;
    size_t start = 0;
    for (size_t i = 1; i + SPM_SPACE_LEN <= o && st == LM_OK; i++) {
        if (memcmp(b + i, SPM_SPACE, SPM_SPACE_LEN) != 0) continue;
        if (fast && i >= SPM_SPACE_LEN && memcmp(b + i - SPM_SPACE_LEN, SPM_SPACE, SPM_SPACE_LEN) == 0) continue;
        st = spm_word(w, b + start, i - start);
        start = i;
    }
    if (st == LM_OK) st = spm_word(w, b + start, o - start);
    return st;
}

static lm_status encode_segment(work *w, const char *s, size_t n, int at_start) {
    return w->t->kind == LM_TOK_BPE ? bytelevel_segment(w, s, n) : spm_segment(w, s, n, at_start);
}

/* ---- added tokens ---------------------------------------------------------------------------- */

static int is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* A "word character" for single_word tokens: ASCII letters, digits, '_', and any non-ASCII byte
 * (most non-ASCII characters in such contexts are letters). */
static int is_word_byte(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

/* The added token matching at text[i], longest first, or -1. */
static int added_at(const work *w, const char *text, size_t len, size_t i) {
    const lm_tokenizer *t = w->t;
    unsigned char b = (unsigned char)text[i];
    for (int k = t->added_first[b]; k < t->added_first[b + 1]; k++) {
        const lm_added_token *a = &t->added[t->added_order[k]];
        const lm_token *tok = &t->tokens[a->id];
        if (a->special && (w->flags & LM_TOK_NO_SPECIAL)) continue;
        if (tok->text_len > len - i || memcmp(text + i, tok->text, tok->text_len) != 0) continue;
        if (a->single_word) {
            size_t e = i + tok->text_len;
            if ((i > 0 && is_word_byte((unsigned char)text[i - 1])) || (e < len && is_word_byte((unsigned char)text[e])))
                continue;
        }
        return t->added_order[k];
    }
    return -1;
}

static lm_status encode_text(work *w, const char *text, size_t len) {
    const lm_tokenizer *t = w->t;
    size_t seg = 0;
    lm_status st = LM_OK;
    for (size_t i = 0; i < len && st == LM_OK;) {
        unsigned char b = (unsigned char)text[i];
        int k = t->added_first[b + 1] > t->added_first[b] ? added_at(w, text, len, i) : -1;
        if (k < 0) {
            i++;
            continue;
        }
        const lm_added_token *a = &t->added[k];
        size_t s = i, e = i + t->tokens[a->id].text_len;
        if (a->lstrip)
            while (s > seg && is_space((unsigned char)text[s - 1])) s--;
        if (a->rstrip)
            while (e < len && is_space((unsigned char)text[e])) e++;
        st = encode_segment(w, text + seg, s - seg, seg == 0);
        if (st == LM_OK) st = emit(w, a->id);
        seg = i = e;
    }
    if (st == LM_OK) st = encode_segment(w, text + seg, len - seg, seg == 0);
    return st;
}

lm_status lm_tok_bpe_encode(const lm_tokenizer *t, const char *text, size_t len, unsigned flags, int32_t **out,
                            size_t *n, size_t *cap) {
    work w;
    memset(&w, 0, sizeof w);
    w.t = t;
    w.flags = flags;
    w.out = out;
    w.n = n;
    w.cap = cap;
    lm_tok_bytelevel_table(w.cp);
    lm_status st = LM_OK;
    if (t->cfg.n_splits > 0) {
        /* Only the whole match is read, so one ovector pair is enough for any pattern. */
        w.md = pcre2_match_data_create(1, NULL);
        if (!w.md) st = oom(&w);
    }
    if (st == LM_OK) st = encode_text(&w, text, len);
    pcre2_match_data_free(w.md);
    free(w.syms);
    free(w.heap);
    free(w.buf);
    free(w.seg);
    return st;
}
