/* bpe_train.c - learning a byte-level BPE vocabulary (GPT-2 style) from text files. */
#define _POSIX_C_SOURCE 200809L
#include "tokenizer_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Vocabularies past this are refused (the tokenizer loaders refuse them too). */
#define MAX_TRAIN_VOCAB (1 << 24)
/* Text is read and pre-tokenised in pieces of about this size, cut only where GPT-2's regex
 * cuts anyway (see safe_cut), so the words counted do not depend on it. */
#ifndef READ_CHUNK
#define READ_CHUNK (1u << 22)
#endif

/* ---- small helpers -------------------------------------------------------------------------- */

static uint64_t hash_bytes(const unsigned char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 31);
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* Grows *p (of *cap elements of size elem) to hold need elements; 0 when out of memory. */
static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 1;
    size_t c = *cap ? *cap : 16;
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

/* ---- distinct words ------------------------------------------------------------------------ */

/* A set of byte strings with a count each: the pre-tokens of the corpus. Open addressing over
 * word indices + 1 (0 = empty); the bytes live in one arena. */
typedef struct word_set {
    unsigned char *arena;
    size_t arena_n, arena_cap;
    size_t *off;
    uint32_t *len;
    uint64_t *count;
    uint64_t *hash;
    size_t n, cap;
    uint32_t *slots;
    size_t mask;
} word_set;

static void word_set_free(word_set *w) {
    free(w->arena);
    free(w->off);
    free(w->len);
    free(w->count);
    free(w->hash);
    free(w->slots);
    memset(w, 0, sizeof *w);
}

static int word_set_rehash(word_set *w, size_t nslots) {
    uint32_t *s = lm_calloc(nslots, sizeof *s);
    if (!s) return 0;
    for (size_t i = 0; i < w->n; i++) {
        size_t k = (size_t)w->hash[i] & (nslots - 1);
        while (s[k]) k = (k + 1) & (nslots - 1);
        s[k] = (uint32_t)i + 1;
    }
    free(w->slots);
    w->slots = s;
    w->mask = nslots - 1;
    return 1;
}

/* Adds one occurrence of s[0..n); 0 when out of memory. */
static int word_set_add(word_set *w, const unsigned char *s, size_t n) {
    if (!w->slots && !word_set_rehash(w, 1 << 16)) return 0;
    uint64_t h = hash_bytes(s, n);
    size_t k = (size_t)h & w->mask;
    for (uint32_t v; (v = w->slots[k]) != 0; k = (k + 1) & w->mask) {
        size_t i = v - 1;
        if (w->hash[i] == h && w->len[i] == n && memcmp(w->arena + w->off[i], s, n) == 0) {
            w->count[i]++;
            return 1;
        }
    }
    if (w->n >= UINT32_MAX - 1 || n > UINT32_MAX) return 0;
    if (w->n == w->cap) {
        size_t c = w->cap ? 2 * w->cap : 4096;
        size_t *off = realloc(w->off, c * sizeof *off);
        if (off) w->off = off;
        uint32_t *len = realloc(w->len, c * sizeof *len);
        if (len) w->len = len;
        uint64_t *count = realloc(w->count, c * sizeof *count);
        if (count) w->count = count;
        uint64_t *hash = realloc(w->hash, c * sizeof *hash);
        if (hash) w->hash = hash;
        if (!off || !len || !count || !hash) return 0;
        w->cap = c;
    }
    if (!grow((void **)&w->arena, &w->arena_cap, w->arena_n + n, 1)) return 0;
    size_t i = w->n++;
    memcpy(w->arena + w->arena_n, s, n);
    w->off[i] = w->arena_n;
    w->len[i] = (uint32_t)n;
    w->count[i] = 1;
    w->hash[i] = h;
    w->arena_n += n;
    w->slots[k] = (uint32_t)i + 1;
    /* Load factor <= 1/2 keeps probe runs short. */
    if (2 * w->n > w->mask + 1 && !word_set_rehash(w, 2 * (w->mask + 1))) return 0;
    return 1;
}

/* ---- pre-tokenisation -------------------------------------------------------------------------- */

typedef struct pretok {
    const lm_tokenizer *re;  /* holds the compiled GPT-2 regex */
    pcre2_match_data *md;
    const char *const *special;
    size_t *special_len;
    size_t n_special;
    uint8_t special_first[256]; /* some special token starts with this byte */
    word_set *words;
    uint64_t n_pretokens;
} pretok;

static lm_status oom_train(void) { return lm_fail(LM_ERR_NOMEM, "bpe-train: out of memory"); }

static lm_status add_word(pretok *p, const char *s, size_t n) {
    p->n_pretokens++;
    /* A one-byte word has no pair to merge and adds nothing to learn from. */
    if (n < 2) return LM_OK;
    return word_set_add(p->words, (const unsigned char *)s, n) ? LM_OK : oom_train();
}

/* Valid UTF-8 s[0..n) cut by GPT-2's regex into its matches and the runs between them, as
 * bpe.c's encoder cuts it (so the words learned from are the words encoded). */
static lm_status regex_words(pretok *p, const char *s, size_t n) {
    const pcre2_code *code = p->re->cfg.splits[0].code;
    size_t off = 0, gap = 0;
    lm_status st = LM_OK;
    while (off < n && st == LM_OK) {
        int rc = pcre2_match(code, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, p->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return lm_fail(LM_ERR_UNSUPPORTED, "bpe-train: pre-tokenizer regex failed: %s", (const char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(p->md);
        size_t ms = ov[0], me = ov[1];
        if (ms < off || me < ms || me > n) break;
        if (me == ms) {
            if (ms >= n) break;
            off = ms + lm_tok_utf8_len((const unsigned char *)s + ms, n - ms);
            continue;
        }
        if (ms > gap) st = add_word(p, s + gap, ms - gap);
        if (st == LM_OK) st = add_word(p, s + ms, me - ms);
        gap = off = me;
    }
    if (st == LM_OK && gap < n) st = add_word(p, s + gap, n - gap);
    return st;
}

/* Text between special tokens: each maximal valid UTF-8 run goes through the regex, each invalid
 * byte is a word of its own (the encoder's rule for invalid UTF-8). */
static lm_status segment_words(pretok *p, const char *s, size_t n) {
    lm_status st = LM_OK;
    size_t run = 0, i = 0;
    while (i < n && st == LM_OK) {
        /* ASCII is always a whole, valid character: skip the general check for it. */
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        size_t cl = lm_tok_utf8_len((const unsigned char *)s + i, n - i);
        if (cl == 1) {
            if (i > run) st = regex_words(p, s + run, i - run);
            if (st == LM_OK) st = add_word(p, s + i, 1);
            run = i + 1;
        }
        i += cl;
    }
    if (st == LM_OK && n > run) st = regex_words(p, s + run, n - run);
    return st;
}

/* The special token at s[i] (leftmost match found by the caller's scan, longest first), or -1. */
static int special_at(const pretok *p, const char *s, size_t n, size_t i) {
    int best = -1;
    size_t best_len = 0;
    for (size_t k = 0; k < p->n_special; k++) {
        size_t l = p->special_len[k];
        if (l <= n - i && l > best_len && memcmp(s + i, p->special[k], l) == 0) {
            best = (int)k;
            best_len = l;
        }
    }
    return best;
}

/* A piece of text: special tokens are cut out first (they are never learned from), as the
 * encoder finds them before pre-tokenising. */
static lm_status text_words(pretok *p, const char *s, size_t n) {
    size_t seg = 0;
    lm_status st = LM_OK;
    if (p->n_special) {
        for (size_t i = 0; i < n && st == LM_OK;) {
            int k = p->special_first[(unsigned char)s[i]] ? special_at(p, s, n, i) : -1;
            if (k < 0) {
                i++;
                continue;
            }
            st = segment_words(p, s + seg, i - seg);
            seg = i = i + p->special_len[k];
        }
    }
    if (st == LM_OK) st = segment_words(p, s + seg, n - seg);
    return st;
}

/* Where a buffer of text may be cut without changing what GPT-2's regex makes of it: just
 * after an ASCII letter, digit or punctuation mark that is followed by '\n'. Every alternative
 * of the regex that can hold that mark stops at whitespace and none looks behind, so a match
 * ends there and the next starts afresh. Special tokens are not cut when they hold no such
 * place. Returns the cut (0 when there is none in s[0..n)). */
static size_t safe_cut(const pretok *p, const char *s, size_t n) {
    for (size_t i = n; i >= 2; i--) {
        unsigned char c = (unsigned char)s[i - 2];
        if (s[i - 1] == '\n' && c > 0x20 && c < 0x7F) {
            size_t cut = i - 1;
            /* A special token holding "c\n" could straddle the cut: look for one around it. */
            int straddles = 0;
            for (size_t k = 0; k < p->n_special && !straddles; k++) {
                size_t l = p->special_len[k];
                size_t from = cut >= l ? cut - l + 1 : 0;
                for (size_t j = from; j < cut && j + l <= n && !straddles; j++)
                    straddles = j + l > cut && memcmp(s + j, p->special[k], l) == 0;
            }
            if (!straddles) return cut;
        }
    }
    return 0;
}

/* Reads a file a chunk at a time and counts its words; at most *budget bytes (SIZE_MAX: all). */
static lm_status count_file(pretok *p, const char *path, size_t *budget, size_t *done, size_t total,
                            const lm_bpe_train_opts *o) {
    FILE *f = fopen(path, "rb");
    if (!f) return lm_fail(LM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return lm_fail(LM_ERR_IO, "%s: not a regular file", path);
    }
    size_t cap = READ_CHUNK * 2;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return oom_train();
    }
    size_t have = 0, file_bytes = 0;
    lm_status st = LM_OK;
    int eof = 0;
    while (st == LM_OK && !eof) {
        size_t want = cap - have;
        if (want > *budget) want = *budget;
        size_t got = want ? fread(buf + have, 1, want, f) : 0;
        if (got < want && ferror(f)) {
            st = lm_fail(LM_ERR_IO, "%s: read error: %s", path, strerror(errno));
            break;
        }
        eof = got < want || want == 0;
        have += got;
        file_bytes += got;
        *budget -= got;
        *done += got;
        size_t cut = eof ? have : safe_cut(p, buf, have);
        /* No cut place in a whole buffer (a huge line): take more before giving up on cutting. */
        if (cut == 0 && !eof) {
            if (cap > SIZE_MAX / 2) {
                st = oom_train();
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                st = oom_train();
                break;
            }
            buf = nb;
            cap *= 2;
            continue;
        }
        st = text_words(p, buf, cut);
        memmove(buf, buf + cut, have - cut);
        have -= cut;
        if (st == LM_OK && o->progress && o->progress(o->progress_ud, "counting", *done, total))
            st = lm_fail(LM_ERR_ARG, "bpe-train: stopped while reading %s", path);
    }
    free(buf);
    fclose(f);
    if (st == LM_OK && file_bytes == 0 && *budget > 0)
        st = lm_fail(LM_ERR_ARG, "%s: the file is empty: there is no text to learn from", path);
    return st;
}

/* ---- merging ----------------------------------------------------------------------------------- */

/* One adjacent pair of token ids (key = left << 32 | right) with its weighted count and the
 * words it may occur in (a word is listed at least once while the pair is in it; entries may be
 * stale, and are checked when used). */
typedef struct pair_rec {
    uint64_t key;
    int64_t count;
    int64_t delta;    /* change during the current merge, applied by flush_dirty */
    int32_t heap_pos; /* -1: not in the heap */
    uint8_t dirty;
    uint32_t *occ;
    uint32_t occ_n, occ_cap;
} pair_rec;

typedef struct merger {
    /* words: symbols (token ids) in one arena, shrinking in place as they merge */
    int32_t *syms;
    size_t *w_off;
    uint32_t *w_len;
    uint64_t *w_count;
    uint32_t *w_stamp; /* the merge that last rewrote the word + 1 */
    size_t n_words;
    /* pairs */
    pair_rec *pairs;
    size_t n_pairs, pairs_cap;
    uint32_t *pslots; /* open addressing over pair index + 1 */
    size_t pmask;
    uint32_t *heap; /* max-heap of pair indices: count, then smaller key */
    size_t heap_n, heap_cap;
    uint32_t *dirty; /* pairs whose count changed during the current merge */
    size_t dirty_n, dirty_cap;
    /* tokens: bytes of each id in an arena, and a set from bytes to id */
    unsigned char *tbytes;
    size_t tbytes_n, tbytes_cap;
    size_t *t_off;
    uint32_t *t_len;
    size_t n_tok, tok_cap;
    uint32_t *tslots;
    size_t tmask;
    /* merges in order: left, right, result */
    int32_t (*merges)[3];
    size_t n_merges, merges_cap;
} merger;

static void merger_free(merger *m) {
    for (size_t i = 0; i < m->n_pairs; i++) free(m->pairs[i].occ);
    free(m->syms);
    free(m->w_off);
    free(m->w_len);
    free(m->w_count);
    free(m->w_stamp);
    free(m->pairs);
    free(m->pslots);
    free(m->heap);
    free(m->dirty);
    free(m->tbytes);
    free(m->t_off);
    free(m->t_len);
    free(m->tslots);
    free(m->merges);
    memset(m, 0, sizeof *m);
}

static int heap_better(const merger *m, uint32_t a, uint32_t b) {
    const pair_rec *x = &m->pairs[a], *y = &m->pairs[b];
    return x->count > y->count || (x->count == y->count && x->key < y->key);
}

static void heap_set(merger *m, size_t i, uint32_t p) {
    m->heap[i] = p;
    m->pairs[p].heap_pos = (int32_t)i;
}

static void heap_up(merger *m, size_t i) {
    uint32_t p = m->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_better(m, p, m->heap[parent])) break;
        heap_set(m, i, m->heap[parent]);
        i = parent;
    }
    heap_set(m, i, p);
}

static void heap_down(merger *m, size_t i) {
    uint32_t p = m->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m->heap_n) break;
        if (c + 1 < m->heap_n && heap_better(m, m->heap[c + 1], m->heap[c])) c++;
        if (!heap_better(m, m->heap[c], p)) break;
        heap_set(m, i, m->heap[c]);
        i = c;
    }
    heap_set(m, i, p);
}

static void heap_remove(merger *m, uint32_t p) {
    int32_t i = m->pairs[p].heap_pos;
    if (i < 0) return;
    m->pairs[p].heap_pos = -1;
    uint32_t last = m->heap[--m->heap_n];
    if ((size_t)i == m->heap_n) return;
    heap_set(m, (size_t)i, last);
    heap_up(m, (size_t)i);
    heap_down(m, (size_t)m->pairs[last].heap_pos);
}

/* Puts a pair whose count changed back in its place (in, out of or inside the heap). */
static int heap_fix(merger *m, uint32_t p) {
    pair_rec *r = &m->pairs[p];
    if (r->count <= 0) {
        heap_remove(m, p);
        return 1;
    }
    if (r->heap_pos < 0) {
        if (!grow((void **)&m->heap, &m->heap_cap, m->heap_n + 1, sizeof *m->heap)) return 0;
        heap_set(m, m->heap_n++, p);
        heap_up(m, m->heap_n - 1);
        return 1;
    }
    heap_up(m, (size_t)r->heap_pos);
    heap_down(m, (size_t)m->pairs[p].heap_pos);
    return 1;
}

static int pair_rehash(merger *m, size_t nslots) {
    uint32_t *s = lm_calloc(nslots, sizeof *s);
    if (!s) return 0;
    for (size_t i = 0; i < m->n_pairs; i++) {
        size_t k = (size_t)mix64(m->pairs[i].key) & (nslots - 1);
        while (s[k]) k = (k + 1) & (nslots - 1);
        s[k] = (uint32_t)i + 1;
    }
    free(m->pslots);
    m->pslots = s;
    m->pmask = nslots - 1;
    return 1;
}

/* Index of the pair (a, b), created with count 0 when new; -1 when out of memory. */
static int64_t pair_get(merger *m, int32_t a, int32_t b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t k = (size_t)mix64(key) & m->pmask;
    for (uint32_t v; (v = m->pslots[k]) != 0; k = (k + 1) & m->pmask)
        if (m->pairs[v - 1].key == key) return (int64_t)v - 1;
    if (m->n_pairs >= UINT32_MAX - 1) return -1;
    if (!grow((void **)&m->pairs, &m->pairs_cap, m->n_pairs + 1, sizeof *m->pairs)) return -1;
    size_t i = m->n_pairs++;
    m->pairs[i] = (pair_rec){.key = key, .heap_pos = -1};
    m->pslots[k] = (uint32_t)i + 1;
    if (2 * m->n_pairs > m->pmask + 1 && !pair_rehash(m, 2 * (m->pmask + 1))) return -1;
    return (int64_t)i;
}

/* Adds delta occurrences of (a, b) in word w. The count itself changes in flush_dirty: the heap
 * stays valid only if each changed count is put back in place before the next one changes. */
static int pair_add(merger *m, int32_t a, int32_t b, int64_t delta, uint32_t w) {
    int64_t i = pair_get(m, a, b);
    if (i < 0) return 0;
    pair_rec *r = &m->pairs[i];
    r->delta += delta;
    if (!r->dirty) {
        if (!grow((void **)&m->dirty, &m->dirty_cap, m->dirty_n + 1, sizeof *m->dirty)) return 0;
        m->dirty[m->dirty_n++] = (uint32_t)i;
        r->dirty = 1;
    }
    if (delta > 0 && !(r->occ_n && r->occ[r->occ_n - 1] == w)) {
        if (r->occ_n == r->occ_cap) {
            uint32_t c = r->occ_cap ? 2 * r->occ_cap : 4;
            uint32_t *o = realloc(r->occ, (size_t)c * sizeof *o);
            if (!o) return 0;
            r->occ = o;
            r->occ_cap = c;
        }
        r->occ[r->occ_n++] = w;
    }
    return 1;
}

static int flush_dirty(merger *m) {
    for (size_t i = 0; i < m->dirty_n; i++) {
        pair_rec *r = &m->pairs[m->dirty[i]];
        r->dirty = 0;
        r->count += r->delta;
        r->delta = 0;
        if (!heap_fix(m, m->dirty[i])) return 0;
    }
    m->dirty_n = 0;
    return 1;
}

static int tok_rehash(merger *m, size_t nslots) {
    uint32_t *s = lm_calloc(nslots, sizeof *s);
    if (!s) return 0;
    for (size_t i = 0; i < m->n_tok; i++) {
        size_t k = (size_t)hash_bytes(m->tbytes + m->t_off[i], m->t_len[i]) & (nslots - 1);
        while (s[k]) k = (k + 1) & (nslots - 1);
        s[k] = (uint32_t)i + 1;
    }
    free(m->tslots);
    m->tslots = s;
    m->tmask = nslots - 1;
    return 1;
}

/* Appends a token whose n bytes were just written at the end of the byte arena; its id, or -1
 * when out of memory. The caller puts it in the set. */
static int32_t tok_append(merger *m, size_t n) {
    if (m->n_tok == m->tok_cap) {
        size_t c = m->tok_cap ? 2 * m->tok_cap : 1024;
        size_t *off = realloc(m->t_off, c * sizeof *off);
        if (off) m->t_off = off;
        uint32_t *len = realloc(m->t_len, c * sizeof *len);
        if (len) m->t_len = len;
        if (!off || !len) return -1;
        m->tok_cap = c;
    }
    size_t id = m->n_tok++;
    m->t_off[id] = m->tbytes_n;
    m->t_len[id] = (uint32_t)n;
    m->tbytes_n += n;
    return (int32_t)id;
}

/* The id of the token spelling a's bytes then b's: an existing one (two different merges may
 * spell the same string; the vocabulary keeps one token for it, as Hugging Face's trainer does),
 * else a new one. -1 when out of memory. */
static int32_t tok_concat(merger *m, int32_t a, int32_t b) {
    size_t la = m->t_len[a], lb = m->t_len[b], n = la + lb;
    if (n > UINT32_MAX || !grow((void **)&m->tbytes, &m->tbytes_cap, m->tbytes_n + n, 1)) return -1;
    unsigned char *s = m->tbytes + m->tbytes_n;
    memcpy(s, m->tbytes + m->t_off[a], la);
    memcpy(s + la, m->tbytes + m->t_off[b], lb);
    size_t k = (size_t)hash_bytes(s, n) & m->tmask;
    for (uint32_t v; (v = m->tslots[k]) != 0; k = (k + 1) & m->tmask)
        if (m->t_len[v - 1] == n && memcmp(m->tbytes + m->t_off[v - 1], s, n) == 0) return (int32_t)v - 1;
    int32_t id = tok_append(m, n);
    if (id < 0) return -1;
    m->tslots[k] = (uint32_t)id + 1;
    if (2 * m->n_tok > m->tmask + 1 && !tok_rehash(m, 2 * (m->tmask + 1))) return -1;
    return id;
}

/* The words and their pair counts, with the 256 byte tokens as ids 0..255. */
static lm_status merger_init(merger *m, const word_set *ws) {
    m->n_words = ws->n;
    size_t nw = ws->n ? ws->n : 1;
    m->syms = lm_malloc(ws->arena_n ? ws->arena_n : 1, sizeof *m->syms);
    m->w_off = lm_malloc(nw, sizeof *m->w_off);
    m->w_len = lm_malloc(nw, sizeof *m->w_len);
    m->w_count = lm_malloc(nw, sizeof *m->w_count);
    m->w_stamp = lm_calloc(nw, sizeof *m->w_stamp);
    if (!m->syms || !m->w_off || !m->w_len || !m->w_count || !m->w_stamp) return oom_train();
    for (size_t i = 0; i < ws->arena_n; i++) m->syms[i] = ws->arena[i];
    for (size_t i = 0; i < ws->n; i++) {
        m->w_off[i] = ws->off[i];
        m->w_len[i] = ws->len[i];
        m->w_count[i] = ws->count[i];
    }
    if (!pair_rehash(m, 1 << 16)) return oom_train();
    if (!grow((void **)&m->tbytes, &m->tbytes_cap, 256, 1)) return oom_train();
    for (int b = 0; b < 256; b++) {
        m->tbytes[b] = (unsigned char)b;
        if (tok_append(m, 1) < 0) return oom_train();
    }
    if (!tok_rehash(m, 1 << 12)) return oom_train();
    for (size_t w = 0; w < m->n_words; w++) {
        const int32_t *s = m->syms + m->w_off[w];
        for (uint32_t i = 0; i + 1 < m->w_len[w]; i++)
            if (!pair_add(m, s[i], s[i + 1], (int64_t)m->w_count[w], (uint32_t)w)) return oom_train();
    }
    if (!flush_dirty(m)) return oom_train();
    return LM_OK;
}

/* Rewrites every word holding (a, b) with c in its place, left to right (so "a a a" with the
 * pair (a, a) becomes "c a", the order in which the encoder applies a merge), and moves the
 * counts of the neighbouring pairs over. */
static lm_status merge_pair(merger *m, uint32_t top, int32_t c, uint32_t stamp) {
    pair_rec *r = &m->pairs[top];
    int32_t a = (int32_t)(r->key >> 32), b = (int32_t)(uint32_t)r->key;
    /* New pairs may move m->pairs; hold the word list apart from it. */
    uint32_t *list = r->occ, n_list = r->occ_n;
    r->occ = NULL;
    r->occ_n = r->occ_cap = 0;
    lm_status st = LM_OK;
    for (uint32_t li = 0; li < n_list && st == LM_OK; li++) {
        uint32_t w = list[li];
        if (m->w_stamp[w] == stamp) continue;
        m->w_stamp[w] = stamp;
        int32_t *s = m->syms + m->w_off[w];
        uint32_t len = m->w_len[w], k = 0;
        int64_t cnt = (int64_t)m->w_count[w];
        int ok = 1;
        for (uint32_t j = 0; j < len && ok;) {
            if (j + 1 < len && s[j] == a && s[j + 1] == b) {
                ok = pair_add(m, a, b, -cnt, w);
                if (ok && k > 0) ok = pair_add(m, s[k - 1], a, -cnt, w) && pair_add(m, s[k - 1], c, cnt, w);
                if (ok && j + 2 < len) ok = pair_add(m, b, s[j + 2], -cnt, w) && pair_add(m, c, s[j + 2], cnt, w);
                s[k++] = c;
                j += 2;
            } else {
                s[k++] = s[j++];
            }
        }
        m->w_len[w] = k;
        if (!ok) st = oom_train();
    }
    free(list);
    if (st == LM_OK && !flush_dirty(m)) st = oom_train();
    return st;
}

/* ---- the trained tokenizer ------------------------------------------------------------------ */

/* The byte-level spelling of bytes: each byte's stand-in character, as UTF-8. */
static size_t spell(char *dst, const unsigned char *s, size_t n, const uint16_t cp[256]) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t c = cp[s[i]];
        if (c < 0x80) {
            dst[o++] = (char)c;
        } else {
            dst[o++] = (char)(0xC0 | (c >> 6));
            dst[o++] = (char)(0x80 | (c & 0x3F));
        }
    }
    return o;
}

static lm_status build_tokenizer(const merger *m, const char *const *special, size_t n_special, lm_tokenizer **out) {
    uint16_t cp[256];
    lm_tok_bytelevel_table(cp);
    int n_tokens = (int)(m->n_tok + n_special);
    lm_tokenizer *t = lm_tok_new("(bpe-train)");
    lm_bpe_source src = {0};
    char *pieces = NULL;
    lm_status st = LM_OK;
    if (!t || lm_tok_source_alloc(&src, n_tokens, m->n_merges, (int)n_special) != LM_OK) {
        st = oom_train();
        goto done;
    }
    /* A stand-in character is at most 2 bytes of UTF-8. */
    pieces = malloc(2 * m->tbytes_n + 1);
    if (!pieces) {
        st = oom_train();
        goto done;
    }
    t->kind = LM_TOK_BPE;
    t->add_space_prefix = 0;
    t->cfg.bl_regex = 1;
    if ((st = lm_tok_add_split(t, LM_GPT2_PATTERN, strlen(LM_GPT2_PATTERN), 0)) != LM_OK) goto done;
    size_t o = 0;
    for (size_t id = 0; id < m->n_tok; id++) {
        size_t n = spell(pieces + o, m->tbytes + m->t_off[id], m->t_len[id], cp);
        src.piece[id] = pieces + o;
        src.piece_len[id] = (uint32_t)n;
        o += n;
    }
    for (size_t k = 0; k < n_special; k++) {
        int id = (int)(m->n_tok + k);
        src.piece[id] = special[k];
        src.piece_len[id] = (uint32_t)strlen(special[k]);
        src.type[id] = LM_TOKEN_CONTROL;
        src.added[src.n_added++] = (lm_added_token){.id = id, .special = 1, .in_vocab = 1};
    }
    for (size_t i = 0; i < m->n_merges; i++) {
        int32_t a = m->merges[i][0], b = m->merges[i][1];
        src.merge_a[i] = src.piece[a];
        src.merge_a_len[i] = src.piece_len[a];
        src.merge_b[i] = src.piece[b];
        src.merge_b_len[i] = src.piece_len[b];
    }
    src.merges_path = "(bpe-train)";
    if ((st = lm_tok_bpe_build(t, &src)) != LM_OK) goto done;
    /* A special token spelled like a learned or byte token would make two tokens with one piece. */
    for (size_t k = 0; k < n_special; k++) {
        int id = (int)(m->n_tok + k);
        int first = lm_tok_lookup_piece(t, special[k], strlen(special[k]));
        if (first != id) {
            st = lm_fail(LM_ERR_ARG, "bpe-train: special token \"%.64s\" is spelled like token %d of the vocabulary",
                         special[k], first);
            goto done;
        }
    }
    if (n_special) t->bos = t->eos = (int)m->n_tok;
done:
    free(pieces);
    lm_tok_source_free(&src);
    if (st != LM_OK) {
        lm_tokenizer_free(t);
        return st;
    }
    *out = t;
    return LM_OK;
}

/* ---- the API -------------------------------------------------------------------------------------- */

static lm_status check_specials(const char *const *special, size_t n) {
    if (n && !special) return lm_fail(LM_ERR_ARG, "bpe-train: special_tokens is NULL");
    for (size_t i = 0; i < n; i++) {
        if (!special[i] || !special[i][0]) return lm_fail(LM_ERR_ARG, "bpe-train: special token %zu is empty", i);
        size_t l = strlen(special[i]);
        for (size_t k = 0; k < l;) {
            size_t cl = lm_tok_utf8_len((const unsigned char *)special[i] + k, l - k);
            if (cl == 1 && (unsigned char)special[i][k] >= 0x80)
                return lm_fail(LM_ERR_ARG, "bpe-train: special token %zu is not valid UTF-8", i);
            k += cl;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(special[i], special[j]) == 0)
                return lm_fail(LM_ERR_ARG, "bpe-train: special token \"%.64s\" is given twice", special[i]);
    }
    return LM_OK;
}

lm_status lm_bpe_train_ex(const char *const *files, size_t n_files, const lm_bpe_train_opts *o, lm_tokenizer **out,
                          lm_bpe_train_stats *stats) {
    if (!out) return lm_fail(LM_ERR_ARG, "lm_bpe_train: out is NULL");
    *out = NULL;
    if (stats) memset(stats, 0, sizeof *stats);
    if (!o) return lm_fail(LM_ERR_ARG, "lm_bpe_train: options are NULL");
    if (!files || n_files == 0) return lm_fail(LM_ERR_ARG, "bpe-train: no input files");
    for (size_t i = 0; i < n_files; i++)
        if (!files[i]) return lm_fail(LM_ERR_ARG, "bpe-train: input file %zu is NULL", i);
    lm_status st = check_specials(o->special_tokens, o->n_special);
    if (st != LM_OK) return st;
    if (o->n_special > (size_t)MAX_TRAIN_VOCAB || o->vocab_size < 256 + (long long)o->n_special)
        return lm_fail(LM_ERR_ARG,
                       "bpe-train: vocabulary size %d is smaller than the 256 byte tokens plus %zu special token%s",
                       o->vocab_size, o->n_special, o->n_special == 1 ? "" : "s");
    if (o->vocab_size > MAX_TRAIN_VOCAB)
        return lm_fail(LM_ERR_RANGE, "bpe-train: vocabulary size %d is larger than %d", o->vocab_size, MAX_TRAIN_VOCAB);
    double t0 = lm_now();

    /* Total bytes, for progress only. */
    size_t total = 0;
    for (size_t i = 0; i < n_files; i++) {
        struct stat sb;
        if (stat(files[i], &sb) == 0 && S_ISREG(sb.st_mode)) total += (size_t)sb.st_size;
    }
    if (o->max_bytes && total > o->max_bytes) total = o->max_bytes;

    word_set words = {0};
    merger m = {0};
    lm_tokenizer *scratch = lm_tok_new("(bpe-train)");
    pretok p = {0};
    size_t *special_len = lm_calloc(o->n_special ? o->n_special : 1, sizeof *special_len);
    if (!scratch || !special_len) {
        st = oom_train();
        goto done;
    }
    if ((st = lm_tok_add_split(scratch, LM_GPT2_PATTERN, strlen(LM_GPT2_PATTERN), 0)) != LM_OK) goto done;
    p.re = scratch;
    p.md = pcre2_match_data_create(1, NULL);
    if (!p.md) {
        st = oom_train();
        goto done;
    }
    p.special = o->special_tokens;
    p.n_special = o->n_special;
    p.special_len = special_len;
    for (size_t k = 0; k < o->n_special; k++) {
        special_len[k] = strlen(o->special_tokens[k]);
        p.special_first[(unsigned char)o->special_tokens[k][0]] = 1;
    }
    p.words = &words;

    size_t budget = o->max_bytes ? o->max_bytes : SIZE_MAX, done_bytes = 0;
    for (size_t i = 0; i < n_files && st == LM_OK && budget > 0; i++)
        st = count_file(&p, files[i], &budget, &done_bytes, total, o);
    if (st != LM_OK) goto done;
    double t1 = lm_now();
    if (stats) {
        stats->bytes_read = done_bytes;
        stats->n_pretokens = p.n_pretokens;
        stats->n_words = words.n;
        stats->seconds_counting = t1 - t0;
    }

    if ((st = merger_init(&m, &words)) != LM_OK) goto done;
    word_set_free(&words);
    size_t target = (size_t)o->vocab_size - o->n_special; /* tokens other than the special ones */
    int64_t min_count = o->min_frequency > 1 ? (int64_t)o->min_frequency : 1;
    size_t merges_wanted = target - 256;
    uint32_t stamp = 0;
    while (m.n_tok < target && st == LM_OK) {
        if (m.heap_n == 0) break;
        uint32_t top = m.heap[0];
        if (m.pairs[top].count < min_count) break;
        int32_t a = (int32_t)(m.pairs[top].key >> 32), b = (int32_t)(uint32_t)m.pairs[top].key;
        int32_t c = tok_concat(&m, a, b);
        if (c < 0 || !grow((void **)&m.merges, &m.merges_cap, m.n_merges + 1, sizeof *m.merges)) {
            st = oom_train();
            break;
        }
        m.merges[m.n_merges][0] = a;
        m.merges[m.n_merges][1] = b;
        m.merges[m.n_merges][2] = c;
        m.n_merges++;
        st = merge_pair(&m, top, c, ++stamp);
        /* Every occurrence was rewritten, so its count is now 0 and it left the heap. */
        if (st == LM_OK && o->progress && o->progress(o->progress_ud, "merging", m.n_tok - 256, merges_wanted))
            st = lm_fail(LM_ERR_ARG, "bpe-train: stopped after %zu merges", m.n_merges);
    }
    if (st != LM_OK) goto done;
    if (stats) {
        stats->n_merges = m.n_merges;
        stats->vocab_size = (int)(m.n_tok + o->n_special);
        stats->seconds_merging = lm_now() - t1;
    }
    st = build_tokenizer(&m, o->special_tokens, o->n_special, out);
done:
    pcre2_match_data_free(p.md);
    lm_tokenizer_free(scratch);
    free(special_len);
    word_set_free(&words);
    merger_free(&m);
    return st;
}

lm_status lm_bpe_train(const char *const *files, size_t n_files, int vocab_size, const char *const *special_tokens,
                       size_t n_special, lm_tokenizer **out) {
    lm_bpe_train_opts o = {0};
    o.vocab_size = vocab_size;
    o.special_tokens = special_tokens;
    o.n_special = n_special;
    return lm_bpe_train_ex(files, n_files, &o, out, NULL);
}
