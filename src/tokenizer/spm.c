/* spm.c - SentencePiece BPE encoding: characters with byte fallback, then best-score merges. */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

/* A run of the working text that is currently one token. Symbols form a doubly linked list
 * in text order; a symbol merged into its left neighbour keeps len 0. */
typedef struct sym {
    int32_t prev, next;
    uint32_t start, len;
    int32_t id;
    uint8_t mergeable; /* byte-fallback and unknown symbols never merge */
} sym;

/* A candidate merge of two adjacent symbols. Entries are not removed when a neighbour
 * changes; they are recognised as stale when popped (the lengths no longer add up). */
typedef struct bigram {
    float score;
    int32_t left, right;
    uint32_t len;
    int32_t id;
} bigram;

/* Highest score first; on equal scores the leftmost pair, which is the order a
 * rescan-the-whole-list implementation (llama2.c, SentencePiece) would pick. */
static int bigram_before(const bigram *a, const bigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

typedef struct heap {
    bigram *v;
    size_t n;
} heap;

static void heap_push(heap *h, bigram b) {
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bigram_before(&b, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = b;
}

static bigram heap_pop(heap *h) {
    bigram top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && bigram_before(&h->v[c + 1], &h->v[c])) c++;
        if (!bigram_before(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

static void push_sym(sym *syms, int32_t *ns, uint32_t start, uint32_t len, int32_t id, int mergeable) {
    int32_t i = (*ns)++;
    syms[i] = (sym){i - 1, i + 1, start, len, id, (uint8_t)mergeable};
}

static void try_bigram(const lm_tokenizer *t, const char *text, const sym *syms, int32_t a, int32_t b, heap *h) {
    if (a < 0 || b < 0 || !syms[a].mergeable || !syms[b].mergeable) return;
    uint32_t len = syms[a].len + syms[b].len;
    int id = lm_tok_lookup(t, text + syms[a].start, len);
    if (id < 0) return;
    bigram g = {t->tokens[id].score, a, b, len, id};
    heap_push(h, g);
}

/* Encodes buf[cs, ce) into out + *k; syms and h are scratch sized for the whole text. */
static lm_status encode_span(const lm_tokenizer *t, const char *buf, size_t cs, size_t ce, size_t pre, sym *syms,
                             heap *h, int32_t *out, size_t *k) {
    int32_t ns = 0;
    for (size_t i = cs; i < ce;) {
        size_t cl = lm_tok_utf8_len((const unsigned char *)buf + i, ce - i);
        int id = lm_tok_lookup(t, buf + i, cl);
        if (id >= 0) {
            push_sym(syms, &ns, (uint32_t)i, (uint32_t)cl, id, 1);
        } else {
            int have_bytes = 1;
            for (size_t j = 0; j < cl; j++) have_bytes &= t->byte_token[(unsigned char)buf[i + j]] >= 0;
            if (have_bytes) {
                for (size_t j = 0; j < cl; j++)
                    push_sym(syms, &ns, (uint32_t)(i + j), 1, t->byte_token[(unsigned char)buf[i + j]], 0);
            } else if (t->unk >= 0) {
                push_sym(syms, &ns, (uint32_t)i, (uint32_t)cl, t->unk, 0);
            } else {
                return lm_fail(LM_ERR_UNSUPPORTED,
                               "%s: cannot encode byte 0x%02x at offset %zu: the vocabulary has neither its byte "
                               "token nor an unknown token",
                               t->path, (unsigned char)buf[i], i >= pre ? i - pre : 0);
            }
        }
        i += cl;
    }
    if (ns == 0) return LM_OK;
    syms[ns - 1].next = -1;

    h->n = 0;
    for (int32_t i = 1; i < ns; i++) try_bigram(t, buf, syms, i - 1, i, h);
    while (h->n) {
        bigram g = heap_pop(h);
        sym *l = &syms[g.left], *r = &syms[g.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != g.len) continue;
        l->len += r->len;
        l->id = g.id;
        l->next = r->next;
        if (r->next >= 0) syms[r->next].prev = g.left;
        r->len = 0;
        try_bigram(t, buf, syms, l->prev, g.left, h);
        try_bigram(t, buf, syms, g.left, l->next, h);
    }
    for (int32_t i = 0; i >= 0; i = syms[i].next) out[(*k)++] = syms[i].id;
    return LM_OK;
}

lm_status lm_tok_spm_encode(const lm_tokenizer *t, const char *text, size_t len, int32_t *out, size_t *n_out) {
    *n_out = 0;
    if (len == 0) return LM_OK; /* no dummy prefix on empty text */
    size_t pre = t->add_space_prefix ? 1 : 0;
    size_t n = len + pre; /* the caller bounded len well below INT32_MAX */
    char *buf = malloc(n);
    sym *syms = lm_malloc(n, sizeof *syms);
    /* n - 1 initial pairs plus at most two new ones per merge, and there are < n merges. */
    heap h = {lm_malloc(3 * n, sizeof(bigram)), 0};
    lm_status st = LM_OK;
    if (!buf || !syms || !h.v) {
        st = lm_fail(LM_ERR_NOMEM, "%s: out of memory encoding %zu bytes", t->path, len);
        goto done;
    }
    if (pre) buf[0] = ' ';
    memcpy(buf + pre, text, len);

    /* One heap over a whole book thrashes the cache. When no piece has a space right after
     * another byte, no symbol can ever span the start of a word, so each word (with its
     * leading spaces) merges on its own and the result is the same as in one pass. */
    size_t k = 0, cs = 0;
    for (size_t i = 1; i <= n && st == LM_OK; i++) {
        if (i < n && !(t->split_at_space && buf[i] == ' ' && buf[i - 1] != ' ')) continue;
        st = encode_span(t, buf, cs, i, pre, syms, &h, out, &k);
        cs = i;
    }
    if (st == LM_OK) *n_out = k;
done:
    free(buf);
    free(syms);
    free(h.v);
    return st;
}
