/* data.c - token shards: tokenizing text into a train/validation split on disk, and loading it for training. */
#define _POSIX_C_SOURCE 200809L
#include "lumen/train.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define SHARD_MAGIC "LMTOK\0\0\0"
#define SHARD_VERSION 1u
#define HEADER_SIZE 32
#define DEFAULT_SHARD_TOKENS (1ull << 28)
/* Documents encoded together by the threads before their tokens are written in order. */
#define BATCH_BYTES (1u << 22)
#define BATCH_DOCS 8192

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const unsigned char *p) { return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }

static int width_for(uint64_t vocab) { return vocab <= 65536 ? 2 : 4; }

/* ---- one shard being written ------------------------------------------------------------ */

typedef struct shard_writer {
    lm_atomic_file f;
    int open;
    int width;
    uint64_t vocab, n;
    unsigned char *buf; /* tokens on their way to the file, little-endian */
    size_t buf_n;
} shard_writer;

#define SW_BUF (1u << 16)

static lm_status sw_open(shard_writer *w, const char *path, uint64_t vocab) {
    w->width = width_for(vocab);
    w->vocab = vocab;
    w->n = 0;
    w->buf_n = 0;
    if (!w->buf && !(w->buf = malloc(SW_BUF))) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    lm_status st = lm_atomic_open(&w->f, path);
    if (st != LM_OK) return st;
    w->open = 1;
    unsigned char h[HEADER_SIZE] = {0};
    memcpy(h, SHARD_MAGIC, 8);
    put_u32(h + 8, SHARD_VERSION);
    put_u32(h + 12, (uint32_t)w->width);
    put_u64(h + 24, vocab); /* the count (h + 16) is filled in when the shard is complete */
    return lm_atomic_write(&w->f, h, sizeof h);
}

static lm_status sw_flush(shard_writer *w) {
    lm_status st = lm_atomic_write(&w->f, w->buf, w->buf_n);
    w->buf_n = 0;
    return st;
}

static lm_status sw_put(shard_writer *w, uint32_t tok) {
    if (w->buf_n + 4 > SW_BUF) {
        lm_status st = sw_flush(w);
        if (st != LM_OK) return st;
    }
    if (w->width == 2) {
        w->buf[w->buf_n] = (unsigned char)tok;
        w->buf[w->buf_n + 1] = (unsigned char)(tok >> 8);
    } else {
        put_u32(w->buf + w->buf_n, tok);
    }
    w->buf_n += (size_t)w->width;
    w->n++;
    return LM_OK;
}

static void sw_abort(shard_writer *w) {
    if (w->open) lm_atomic_abort(&w->f);
    w->open = 0;
}

static void sw_free(shard_writer *w) {
    sw_abort(w);
    free(w->buf);
    w->buf = NULL;
}

/* Writes the final count into the header, then fsyncs and renames into place. */
static lm_status sw_commit(shard_writer *w) {
    lm_status st = sw_flush(w);
    unsigned char c[8];
    put_u64(c, w->n);
    if (st == LM_OK && (fseek(w->f.fp, 16, SEEK_SET) != 0 || fwrite(c, 1, 8, w->f.fp) != 8))
        st = lm_fail(LM_ERR_IO, "%s: write failed: %s", w->f.tmp_path, strerror(errno));
    if (st != LM_OK) {
        sw_abort(w);
        return st;
    }
    w->open = 0;
    return lm_atomic_commit(&w->f);
}

lm_status lm_data_write_shard(const char *path, const uint32_t *tokens, uint64_t n, uint64_t vocab_size) {
    if (!path || (n && !tokens)) return lm_fail(LM_ERR_ARG, "lm_data_write_shard: NULL argument");
    if (vocab_size == 0 || vocab_size > (1ull << 32))
        return lm_fail(LM_ERR_RANGE, "%s: a vocabulary of %llu tokens cannot be stored (1 to 2^32 tokens)", path,
                       (unsigned long long)vocab_size);
    for (uint64_t i = 0; i < n; i++)
        if (tokens[i] >= vocab_size)
            return lm_fail(LM_ERR_RANGE, "%s: token %u at index %llu is not below the vocabulary size %llu", path,
                           tokens[i], (unsigned long long)i, (unsigned long long)vocab_size);
    shard_writer w = {0};
    lm_status st = sw_open(&w, path, vocab_size);
    for (uint64_t i = 0; i < n && st == LM_OK; i++) st = sw_put(&w, tokens[i]);
    if (st == LM_OK) st = sw_commit(&w);
    sw_free(&w);
    return st;
}

/* ---- a split being written: shards named PREFIX_NNNN.bin, opened as tokens arrive ------------ */

typedef struct split_writer {
    const char *dir, *prefix;
    uint64_t vocab, shard_tokens;
    shard_writer w;
    char **names; /* file names of the shards, committed or open */
    int n_shards;
    uint64_t tokens, documents;
} split_writer;

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static lm_status split_put(split_writer *s, uint32_t tok) {
    lm_status st;
    if (s->w.open && s->w.n >= s->shard_tokens) {
        if ((st = sw_commit(&s->w)) != LM_OK) return st;
    }
    if (!s->w.open) {
        if (s->n_shards >= 9999)
            return lm_fail(LM_ERR_RANGE, "%s: more than 9999 %s shards; raise the tokens per shard", s->dir, s->prefix);
        char name[64];
        snprintf(name, sizeof name, "%s_%04d.bin", s->prefix, s->n_shards);
        char **names = realloc(s->names, (size_t)(s->n_shards + 1) * sizeof *names);
        if (!names) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", s->dir);
        s->names = names;
        s->names[s->n_shards] = lm_strdup(name);
        char *path = join(s->dir, name);
        if (!s->names[s->n_shards] || !path) {
            free(path);
            free(s->names[s->n_shards]);
            return lm_fail(LM_ERR_NOMEM, "%s: out of memory", s->dir);
        }
        s->n_shards++;
        st = sw_open(&s->w, path, s->vocab);
        free(path);
        if (st != LM_OK) return st;
    }
    st = sw_put(&s->w, tok);
    if (st == LM_OK) s->tokens++;
    return st;
}

static void split_free(split_writer *s) {
    sw_free(&s->w);
    for (int i = 0; i < s->n_shards; i++) free(s->names[i]);
    free(s->names);
    s->names = NULL;
    s->n_shards = 0;
}

/* ---- documents ------------------------------------------------------------------------------ */

typedef struct doc {
    size_t off, len;
    int val;
    int32_t *ids;
    size_t n_ids;
} doc;

static int blank_line(const char *s, size_t n, const char *sep, size_t sep_len, const char *sep2, size_t sep2_len) {
    size_t a = 0, b = n;
    while (a < b && (s[a] == ' ' || s[a] == '\t' || s[a] == '\r')) a++;
    while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t' || s[b - 1] == '\r')) b--;
    if (a == b) return 1;
    if (sep_len && b - a == sep_len && memcmp(s + a, sep, sep_len) == 0) return 1;
    if (sep2_len && b - a == sep2_len && memcmp(s + a, sep2, sep2_len) == 0) return 1;
    return 0;
}

/* Cuts text into documents (see train.h); *docs is malloc'd. */
static lm_status find_docs(const char *path, const char *text, size_t size, lm_doc_mode mode, const char *sep,
                           size_t sep_len, const char *sep2, size_t sep2_len, doc **docs, size_t *n_docs) {
    *docs = NULL;
    *n_docs = 0;
    size_t cap = 0, n = 0;
    doc *v = NULL;
    if (mode == LM_DOC_FILE) {
        v = calloc(1, sizeof *v);
        if (!v) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
        v[0].off = 0;
        v[0].len = size;
        *docs = v;
        *n_docs = 1;
        return LM_OK;
    }
    size_t pos = 0, start = 0, end = 0;
    int in_doc = 0;
    while (pos < size) {
        const char *nl = memchr(text + pos, '\n', size - pos);
        size_t le = nl ? (size_t)(nl - text) : size;
        int blank = blank_line(text + pos, le - pos, sep, sep_len, sep2, sep2_len);
        /* In line mode every line ends its document. */
        if (blank || (mode == LM_DOC_LINES && in_doc)) {
            if (in_doc) {
                if (n == cap) {
                    cap = cap ? 2 * cap : 256;
                    doc *nv = realloc(v, cap * sizeof *nv);
                    if (!nv) {
                        free(v);
                        return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
                    }
                    v = nv;
                }
                v[n++] = (doc){.off = start, .len = end - start};
                in_doc = 0;
            }
        }
        if (!blank) {
            if (!in_doc) start = pos;
            in_doc = 1;
            end = le;
            if (end > start && text[end - 1] == '\r') end--;
        }
        pos = le + 1;
    }
    if (in_doc) {
        doc *nv = realloc(v, (n + 1) * sizeof *nv);
        if (!nv) {
            free(v);
            return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
        }
        v = nv;
        v[n++] = (doc){.off = start, .len = end - start};
    }
    *docs = v;
    *n_docs = n;
    return LM_OK;
}

/* Encodes docs[0..n) on the threads; a failure's message is carried back to this thread. */
static lm_status encode_docs(const lm_tokenizer *tok, const char *path, const char *text, doc *docs, size_t n,
                             int threads) {
    char err[512] = {0};
    lm_status first = LM_OK;
    (void)threads;
#pragma omp parallel for schedule(dynamic, 16) num_threads(threads)
    for (size_t i = 0; i < n; i++) {
        lm_status st = lm_tokenizer_encode_ex(tok, text + docs[i].off, docs[i].len, LM_TOK_NO_SPECIAL, &docs[i].ids,
                                              &docs[i].n_ids);
        if (st != LM_OK) {
#pragma omp critical(lm_data_encode_err)
            if (first == LM_OK) {
                first = st;
                snprintf(err, sizeof err, "%s", lm_errmsg());
            }
        }
    }
    if (first != LM_OK) return lm_fail(first, "%s: %s", path, err);
    return LM_OK;
}

/* ---- writing a directory ------------------------------------------------------------------- */

void lm_data_write_opts_default(lm_data_write_opts *o) {
    memset(o, 0, sizeof *o);
    o->val_fraction = 0.05;
    o->seed = 1;
    o->docs = LM_DOC_BLANK_LINES;
}

uint64_t lm_data_vocab_hash(const lm_tokenizer *tok) {
    uint64_t h = 1469598103934665603ull;
    int n = lm_tokenizer_vocab_size(tok);
    for (int id = 0; id < n; id++) {
        size_t len;
        const unsigned char *p = (const unsigned char *)lm_tokenizer_piece(tok, id, &len);
        for (size_t i = 0; i <= len; i++) {
            h ^= i < len ? p[i] : 0;
            h *= 1099511628211ull;
        }
    }
    return h;
}

/* Creates dir and any missing parents (mkdir -p). */
static lm_status make_dir(const char *dir) {
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode)) return lm_fail(LM_ERR_IO, "%s: exists and is not a directory", dir);
        return LM_OK;
    }
    char *p = lm_strdup(dir);
    if (!p) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", dir);
    lm_status st = LM_OK;
    for (char *c = p + 1;; c++) {
        if (*c != '/' && *c != 0) continue;
        char saved = *c;
        *c = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            st = lm_fail(LM_ERR_IO, "%s: cannot create the directory %s: %s", dir, p, strerror(errno));
            break;
        }
        *c = saved;
        if (!saved) break;
    }
    free(p);
    if (st == LM_OK && (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)))
        st = lm_fail(LM_ERR_IO, "%s: exists and is not a directory", dir);
    return st;
}

static json_t *split_json(const split_writer *s) {
    json_t *names = json_array();
    for (int i = 0; i < s->n_shards; i++) json_array_append_new(names, json_string(s->names[i]));
    return json_pack("{s:I, s:I, s:o}", "tokens", (json_int_t)s->tokens, "documents", (json_int_t)s->documents,
                     "shards", names);
}

static lm_status write_meta(const char *dir, const lm_tokenizer *tok, const lm_data_write_opts *o,
                            const char *const *files, const size_t *file_bytes, size_t n_files, int sep, int sep_before,
                            const split_writer *tr, const split_writer *va) {
    int vocab = lm_tokenizer_vocab_size(tok);
    int width = width_for((uint64_t)vocab);
    char hash[24];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)lm_data_vocab_hash(tok));
    json_t *sources = json_array();
    for (size_t i = 0; i < n_files; i++)
        json_array_append_new(sources, json_pack("{s:s, s:I}", "path", files[i], "bytes", (json_int_t)file_bytes[i]));
    json_t *j = json_pack("{s:s, s:i, s:s?, s:s, s:i, s:i, s:s, s:{s:i, s:s}, s:s, s:f, s:I, s:o, s:o, s:o}", "format",
                          "lumen-tokens", "version", 1, "tokenizer", o->tokenizer_path, "vocab_hash", hash,
                          "vocab_size", vocab, "width", width, "dtype", width == 2 ? "uint16" : "uint32", "separator",
                          "id", sep, "placement", sep_before ? "before" : "after", "documents",
                          o->docs == LM_DOC_FILE ? "file" : o->docs == LM_DOC_LINES ? "lines" : "blank-lines", "val_fraction", o->val_fraction, "seed",
                          (json_int_t)o->seed, "sources", sources, "train", split_json(tr), "val", split_json(va));
    char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    char *path = join(dir, "meta.json");
    lm_status st;
    if (!text || !path) st = lm_fail(LM_ERR_NOMEM, "%s: out of memory writing meta.json", dir);
    else st = lm_write_file_atomic(path, text, strlen(text));
    free(text);
    free(path);
    return st;
}

lm_status lm_data_write(const lm_tokenizer *tok, const char *const *files, size_t n_files, const char *out_dir,
                        const lm_data_write_opts *opts, lm_data_progress_cb cb, void *ud, lm_data_write_result *res) {
    lm_data_write_opts o;
    if (opts) o = *opts;
    else lm_data_write_opts_default(&o);
    if (res) memset(res, 0, sizeof *res);
    if (!tok || !out_dir) return lm_fail(LM_ERR_ARG, "lm_data_write: NULL tokenizer or directory");
    if (!files || n_files == 0) return lm_fail(LM_ERR_ARG, "tokenize-data: no input files");
    for (size_t i = 0; i < n_files; i++)
        if (!files[i]) return lm_fail(LM_ERR_ARG, "tokenize-data: input file %zu is NULL", i);
    if (!(o.val_fraction >= 0 && o.val_fraction <= 1))
        return lm_fail(LM_ERR_ARG, "tokenize-data: the validation fraction %g is not in [0, 1]", o.val_fraction);
    if (o.docs != LM_DOC_BLANK_LINES && o.docs != LM_DOC_FILE && o.docs != LM_DOC_LINES)
        return lm_fail(LM_ERR_ARG, "tokenize-data: unknown document mode %d", (int)o.docs);
    int vocab = lm_tokenizer_vocab_size(tok);
    /* An int vocabulary always fits the format; the check stands for the format's limit. */
    if (vocab <= 0 || (uint64_t)vocab > (1ull << 32))
        return lm_fail(LM_ERR_RANGE, "tokenize-data: a vocabulary of %d tokens cannot be stored in uint32 shards", vocab);
    int sep_before = lm_tokenizer_wants_bos(tok) && lm_tokenizer_bos(tok) >= 0;
    int sep = sep_before ? lm_tokenizer_bos(tok) : lm_tokenizer_eos(tok);
    if (sep < 0 && lm_tokenizer_bos(tok) >= 0) {
        sep = lm_tokenizer_bos(tok);
        sep_before = 1;
    }
    if (sep < 0)
        return lm_fail(LM_ERR_UNSUPPORTED,
                       "tokenize-data: the tokenizer has neither an EOS nor a BOS token to separate documents");
    /* Lines that stand for a document boundary: the separator's text (and the other of BOS/EOS). */
    size_t sep_len = 0, sep2_len = 0;
    const char *sep_text = lm_tokenizer_piece(tok, sep, &sep_len);
    int other = sep == lm_tokenizer_eos(tok) ? lm_tokenizer_bos(tok) : lm_tokenizer_eos(tok);
    const char *sep2_text = other >= 0 && other != sep ? lm_tokenizer_piece(tok, other, &sep2_len) : "";
    if (memchr(sep_text, '\n', sep_len)) sep_len = 0;
    if (memchr(sep2_text, '\n', sep2_len)) sep2_len = 0;
    int threads = o.threads > 0 ? o.threads : lm_get_threads();
    double t0 = lm_now();

    lm_status st = make_dir(out_dir);
    if (st != LM_OK) return st;
    /* Shards are about to change: a meta.json left from before would describe a mixture. */
    char *meta_path = join(out_dir, "meta.json");
    if (!meta_path) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", out_dir);
    if (unlink(meta_path) != 0 && errno != ENOENT) {
        st = lm_fail(LM_ERR_IO, "%s: cannot remove the old meta.json: %s", meta_path, strerror(errno));
        free(meta_path);
        return st;
    }
    free(meta_path);

    size_t total = 0;
    for (size_t i = 0; i < n_files; i++) {
        struct stat sb;
        if (stat(files[i], &sb) == 0) total += (size_t)sb.st_size;
    }
    uint64_t shard_tokens = o.shard_tokens ? o.shard_tokens : DEFAULT_SHARD_TOKENS;
    split_writer tr = {.dir = out_dir, .prefix = "train", .vocab = (uint64_t)vocab, .shard_tokens = shard_tokens};
    split_writer va = {.dir = out_dir, .prefix = "val", .vocab = (uint64_t)vocab, .shard_tokens = shard_tokens};
    size_t *file_bytes = lm_calloc(n_files, sizeof *file_bytes);
    if (!file_bytes) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", out_dir);
    lm_rng rng;
    lm_rng_seed(&rng, o.seed);
    size_t done = 0;
    for (size_t f = 0; f < n_files && st == LM_OK; f++) {
        char *text = NULL;
        size_t size = 0, base = done;
        doc *docs = NULL;
        size_t n_docs = 0;
        st = lm_read_file(files[f], &text, &size);
        if (st == LM_OK && size == 0) st = lm_fail(LM_ERR_ARG, "%s: the file is empty", files[f]);
        if (st == LM_OK)
            st = find_docs(files[f], text, size, o.docs, sep_text, sep_len, sep2_text, sep2_len, &docs, &n_docs);
        if (st == LM_OK && n_docs == 0) st = lm_fail(LM_ERR_ARG, "%s: the file holds only blank lines", files[f]);
        file_bytes[f] = size;
        /* One draw per document, before any encoding, so the split does not depend on batching. */
        for (size_t i = 0; i < n_docs; i++) docs[i].val = lm_rng_f32(&rng) < o.val_fraction;
        for (size_t b0 = 0; b0 < n_docs && st == LM_OK;) {
            size_t b1 = b0, bytes = 0;
            while (b1 < n_docs && b1 - b0 < BATCH_DOCS && bytes < BATCH_BYTES) bytes += docs[b1++].len;
            st = encode_docs(tok, files[f], text, docs + b0, b1 - b0, threads);
            for (size_t i = b0; i < b1 && st == LM_OK; i++) {
                split_writer *s = docs[i].val ? &va : &tr;
                if (docs[i].n_ids == 0) continue;
                s->documents++;
                if (sep_before) st = split_put(s, (uint32_t)sep);
                for (size_t k = 0; k < docs[i].n_ids && st == LM_OK; k++) st = split_put(s, (uint32_t)docs[i].ids[k]);
                if (st == LM_OK && !sep_before) st = split_put(s, (uint32_t)sep);
            }
            for (size_t i = b0; i < b1; i++) {
                free(docs[i].ids);
                docs[i].ids = NULL;
            }
            done = base + docs[b1 - 1].off + docs[b1 - 1].len;
            if (st == LM_OK && cb && cb(ud, done, total))
                st = lm_fail(LM_ERR_ARG, "tokenize-data: stopped while reading %s", files[f]);
            b0 = b1;
        }
        done = base + size;
        for (size_t i = 0; i < n_docs; i++) free(docs[i].ids);
        free(docs);
        free(text);
    }
    if (st == LM_OK && tr.tokens + va.tokens == 0)
        st = lm_fail(LM_ERR_ARG, "tokenize-data: the input holds no tokens");
    if (st == LM_OK && tr.w.open) st = sw_commit(&tr.w);
    if (st == LM_OK && va.w.open) st = sw_commit(&va.w);
    if (st == LM_OK) st = write_meta(out_dir, tok, &o, files, file_bytes, n_files, sep, sep_before, &tr, &va);
    if (st == LM_OK && res) {
        res->train = (lm_data_split_info){tr.tokens, tr.documents, tr.n_shards};
        res->val = (lm_data_split_info){va.tokens, va.documents, va.n_shards};
        res->width = width_for((uint64_t)vocab);
        res->bytes_read = done;
        res->seconds = lm_now() - t0;
    }
    if (st == LM_OK && cb) cb(ud, total, total);
    split_free(&tr);
    split_free(&va);
    free(file_bytes);
    return st;
}

/* ---- loading --------------------------------------------------------------------------------- */

typedef struct shard {
    lm_mapped_file map;
    const unsigned char *tokens;
    uint64_t n;
    int width;
} shard;

struct lm_data {
    char *name; /* "DIR (train)" or the first file, for messages */
    shard *shards;
    size_t n_shards;
    uint64_t *start; /* [n_shards + 1]: stream position of each shard's first token */
    uint64_t n_tokens, vocab;
};

void lm_data_close(lm_data *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n_shards; i++) lm_unmap_file(&d->shards[i].map);
    free(d->shards);
    free(d->start);
    free(d->name);
    free(d);
}

/* Maps and checks one shard; want_vocab 0 takes the shard's own. */
static lm_status open_shard(const char *path, uint64_t want_vocab, shard *s, uint64_t *vocab_out) {
    lm_status st = lm_map_file(path, &s->map);
    if (st != LM_OK) return st;
    const unsigned char *p = s->map.data;
    size_t size = s->map.size;
    if (size < HEADER_SIZE)
        return lm_fail(LM_ERR_FORMAT, "%s: %zu bytes, shorter than the %d-byte shard header (truncated?)", path, size,
                       HEADER_SIZE);
    if (memcmp(p, SHARD_MAGIC, 8) != 0)
        return lm_fail(LM_ERR_FORMAT, "%s: not a lumen token shard (bad magic; expected \"LMTOK\")", path);
    uint32_t version = get_u32(p + 8), width = get_u32(p + 12);
    uint64_t n = get_u64(p + 16), vocab = get_u64(p + 24);
    if (version != SHARD_VERSION)
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: shard version %u is not supported (only %u)", path, version,
                       SHARD_VERSION);
    if (width != 2 && width != 4) return lm_fail(LM_ERR_FORMAT, "%s: token width %u is not 2 or 4", path, width);
    if (vocab == 0 || vocab > (1ull << 32))
        return lm_fail(LM_ERR_FORMAT, "%s: vocabulary size %llu in the header is not in 1..2^32", path,
                       (unsigned long long)vocab);
    if (vocab > (uint64_t)INT32_MAX)
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: a vocabulary of %llu tokens does not fit int32 token ids", path,
                       (unsigned long long)vocab);
    if (want_vocab && vocab != want_vocab)
        return lm_fail(LM_ERR_FORMAT, "%s: vocabulary size %llu in the header, but %llu expected", path,
                       (unsigned long long)vocab, (unsigned long long)want_vocab);
    uint64_t body = size - HEADER_SIZE;
    if (n > body / width || n * width != body)
        return lm_fail(LM_ERR_FORMAT, "%s: the header says %llu tokens (%llu bytes) but the file holds %llu bytes after it%s",
                       path, (unsigned long long)n, (unsigned long long)n * width, (unsigned long long)body,
                       n * width > body || n > body / width ? " (truncated?)" : "");
    s->tokens = p + HEADER_SIZE;
    s->n = n;
    s->width = (int)width;
    /* One pass over every token now, so that sampling never has to check. */
    uint32_t max = 0;
    if (width == 2) {
        if (vocab < 65536)
            for (uint64_t i = 0; i < n; i++) {
                uint32_t v = (uint32_t)s->tokens[2 * i] | (uint32_t)s->tokens[2 * i + 1] << 8;
                max = v > max ? v : max;
            }
    } else {
        for (uint64_t i = 0; i < n; i++) {
            uint32_t v = get_u32(s->tokens + 4 * i);
            max = v > max ? v : max;
        }
    }
    if (n && max >= vocab) {
        for (uint64_t i = 0; i < n; i++) {
            uint32_t v = width == 2 ? (uint32_t)s->tokens[2 * i] | (uint32_t)s->tokens[2 * i + 1] << 8
                                    : get_u32(s->tokens + 4 * i);
            if (v >= vocab)
                return lm_fail(LM_ERR_FORMAT, "%s: token %u at index %llu is not below the vocabulary size %llu", path,
                               v, (unsigned long long)i, (unsigned long long)vocab);
        }
    }
    *vocab_out = vocab;
    return LM_OK;
}

static lm_status open_paths(const char *name, const char *const *paths, size_t n, uint64_t want_vocab, lm_data **out) {
    lm_data *d = calloc(1, sizeof *d);
    if (!d) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", name);
    d->name = lm_strdup(name);
    d->shards = lm_calloc(n ? n : 1, sizeof *d->shards);
    d->start = lm_calloc(n + 1, sizeof *d->start);
    lm_status st = LM_OK;
    if (!d->name || !d->shards || !d->start) st = lm_fail(LM_ERR_NOMEM, "%s: out of memory", name);
    d->vocab = want_vocab;
    for (size_t i = 0; i < n && st == LM_OK; i++) {
        uint64_t v = 0;
        d->n_shards = i + 1;
        st = open_shard(paths[i], d->vocab, &d->shards[i], &v);
        d->vocab = v;
        d->start[i] = d->n_tokens;
        d->n_tokens += d->shards[i].n;
    }
    if (st == LM_OK) d->start[n] = d->n_tokens;
    if (st == LM_OK && d->n_tokens == 0) st = lm_fail(LM_ERR_RANGE, "%s: holds no tokens", name);
    if (st != LM_OK) {
        lm_data_close(d);
        return st;
    }
    *out = d;
    return LM_OK;
}

lm_status lm_data_open_files(const char *const *paths, size_t n, lm_data **out) {
    if (!out) return lm_fail(LM_ERR_ARG, "lm_data_open_files: out is NULL");
    *out = NULL;
    if (!paths || n == 0) return lm_fail(LM_ERR_ARG, "lm_data_open_files: no shard files");
    for (size_t i = 0; i < n; i++)
        if (!paths[i]) return lm_fail(LM_ERR_ARG, "lm_data_open_files: shard %zu is NULL", i);
    return open_paths(paths[0], paths, n, 0, out);
}

/* A shard name from meta.json: a plain file name, so the directory cannot be left. */
static int plain_name(const char *s) { return *s && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, ".."); }

lm_status lm_data_open(const char *dir, const char *split, lm_data **out) {
    if (!out) return lm_fail(LM_ERR_ARG, "lm_data_open: out is NULL");
    *out = NULL;
    if (!dir || !split) return lm_fail(LM_ERR_ARG, "lm_data_open: NULL directory or split");
    if (strcmp(split, "train") != 0 && strcmp(split, "val") != 0)
        return lm_fail(LM_ERR_ARG, "%s: unknown split \"%s\" (train or val)", dir, split);
    char *meta = join(dir, "meta.json");
    if (!meta) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", dir);
    char *buf = NULL;
    size_t size = 0;
    json_t *j = NULL;
    char **paths = NULL;
    size_t n = 0;
    lm_status st = lm_read_file(meta, &buf, &size);
    if (st != LM_OK) {
        /* Most often the directory is not a data directory, or its writing was interrupted. */
        char why[512];
        snprintf(why, sizeof why, "%s", lm_errmsg()); /* lm_fail rewrites the buffer lm_errmsg points into */
        st = lm_fail(st, "%s: no readable meta.json (not a directory written by `lumen tokenize-data`, or its writing "
                         "did not finish): %s", dir, why);
        goto done;
    }
    json_error_t err;
    j = json_loadb(buf, size, JSON_REJECT_DUPLICATES, &err);
    if (!j) {
        st = lm_fail(LM_ERR_FORMAT, "%s: not valid JSON (line %d: %s)", meta, err.line, err.text);
        goto done;
    }
    json_t *fmt = json_object_get(j, "format"), *ver = json_object_get(j, "version");
    json_t *vs = json_object_get(j, "vocab_size"), *sp = json_object_get(j, "split") ? NULL : json_object_get(j, split);
    if (!json_is_string(fmt) || strcmp(json_string_value(fmt), "lumen-tokens") != 0) {
        st = lm_fail(LM_ERR_FORMAT, "%s: \"format\" is not \"lumen-tokens\"", meta);
        goto done;
    }
    if (!json_is_integer(ver) || json_integer_value(ver) != 1) {
        st = lm_fail(LM_ERR_UNSUPPORTED, "%s: version is not 1", meta);
        goto done;
    }
    if (!json_is_integer(vs) || json_integer_value(vs) <= 0 || json_integer_value(vs) > INT32_MAX) {
        st = lm_fail(LM_ERR_FORMAT, "%s: vocab_size is missing or out of range", meta);
        goto done;
    }
    json_t *shards = json_object_get(sp, "shards"), *tokens = json_object_get(sp, "tokens");
    if (!json_is_array(shards) || !json_is_integer(tokens) || json_integer_value(tokens) < 0) {
        st = lm_fail(LM_ERR_FORMAT, "%s: \"%s\" needs \"tokens\" and a \"shards\" list", meta, split);
        goto done;
    }
    n = json_array_size(shards);
    paths = lm_calloc(n ? n : 1, sizeof *paths);
    if (!paths) {
        st = lm_fail(LM_ERR_NOMEM, "%s: out of memory", meta);
        goto done;
    }
    for (size_t i = 0; i < n && st == LM_OK; i++) {
        json_t *s = json_array_get(shards, i);
        if (!json_is_string(s) || !plain_name(json_string_value(s)))
            st = lm_fail(LM_ERR_FORMAT, "%s: %s.shards[%zu] is not a file name", meta, split, i);
        else if (!(paths[i] = join(dir, json_string_value(s))))
            st = lm_fail(LM_ERR_NOMEM, "%s: out of memory", meta);
    }
    if (st != LM_OK) goto done;
    char name[512];
    snprintf(name, sizeof name, "%s (%s split)", dir, split);
    if (n == 0) {
        st = lm_fail(LM_ERR_RANGE, "%s: holds no tokens", name);
        goto done;
    }
    st = open_paths(name, (const char *const *)paths, n, (uint64_t)json_integer_value(vs), out);
    if (st == LM_OK && (*out)->n_tokens != (uint64_t)json_integer_value(tokens)) {
        st = lm_fail(LM_ERR_FORMAT, "%s: meta.json says the %s split has %lld tokens, its shards hold %llu", dir, split,
                     (long long)json_integer_value(tokens), (unsigned long long)(*out)->n_tokens);
        lm_data_close(*out);
        *out = NULL;
    }
done:
    for (size_t i = 0; paths && i < n; i++) free(paths[i]);
    free(paths);
    json_decref(j);
    free(buf);
    free(meta);
    return st;
}

uint64_t lm_data_n_tokens(const lm_data *d) { return d ? d->n_tokens : 0; }
int lm_data_vocab_size(const lm_data *d) { return d ? (int)d->vocab : 0; }
int lm_data_width(const lm_data *d) { return d && d->n_shards ? d->shards[0].width : 0; }

/* The shard holding stream position i. */
static size_t shard_of(const lm_data *d, uint64_t i) {
    size_t lo = 0, hi = d->n_shards; /* start[lo] <= i < start[hi] */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (d->start[mid] <= i) lo = mid;
        else hi = mid;
    }
    return lo;
}

static uint32_t shard_token(const shard *s, uint64_t k) {
    const unsigned char *p = s->tokens + k * (uint64_t)s->width;
    return s->width == 2 ? (uint32_t)p[0] | (uint32_t)p[1] << 8 : get_u32(p);
}

uint32_t lm_data_token(const lm_data *d, uint64_t i) {
    if (!d || i >= d->n_tokens) return 0;
    size_t s = shard_of(d, i);
    return shard_token(&d->shards[s], i - d->start[s]);
}

/* Tokens [pos, pos + T] into one row of inputs and targets. */
static void read_window(const lm_data *d, uint64_t pos, int T, int32_t *in, int32_t *tg) {
    size_t s = shard_of(d, pos);
    uint64_t k = pos - d->start[s];
    for (int t = 0; t <= T; t++) {
        while (k >= d->shards[s].n) { /* the window runs on into the next shard */
            s++;
            k = 0;
        }
        int32_t v = (int32_t)shard_token(&d->shards[s], k++);
        if (t < T) in[t] = v;
        if (t > 0) tg[t - 1] = v;
    }
}

static lm_status check_window(const lm_data *d, int B, int T, const int32_t *in, const int32_t *tg) {
    if (!d || !in || !tg) return lm_fail(LM_ERR_ARG, "lm_data: NULL argument");
    if (B <= 0 || T <= 0) return lm_fail(LM_ERR_ARG, "%s: batch %d and window %d must be positive", d->name, B, T);
    if ((uint64_t)T + 1 > d->n_tokens)
        return lm_fail(LM_ERR_RANGE, "%s: a window of %d + 1 tokens is longer than the %llu tokens there are", d->name,
                       T, (unsigned long long)d->n_tokens);
    return LM_OK;
}

lm_status lm_data_sample(const lm_data *d, lm_rng *rng, int B, int T, int32_t *inputs, int32_t *targets) {
    lm_status st = check_window(d, B, T, inputs, targets);
    if (st != LM_OK) return st;
    if (!rng) return lm_fail(LM_ERR_ARG, "%s: rng is NULL", d->name);
    uint64_t range = d->n_tokens - (uint64_t)T; /* starts 0 .. n - T - 1 */
    /* Draws at or past the last whole multiple of range are redrawn, so every start is equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % range;
    for (int b = 0; b < B; b++) {
        uint64_t x;
        do {
            x = (uint64_t)lm_rng_u32(rng) << 32;
            x |= lm_rng_u32(rng);
        } while (x >= limit);
        read_window(d, x % range, T, inputs + (size_t)b * T, targets + (size_t)b * T);
    }
    return LM_OK;
}

lm_status lm_data_sequential(const lm_data *d, uint64_t *pos, int B, int T, int32_t *inputs, int32_t *targets,
                             int *n_rows) {
    if (n_rows) *n_rows = 0;
    if (!pos || !n_rows) return lm_fail(LM_ERR_ARG, "lm_data_sequential: NULL argument");
    lm_status st = check_window(d, B, T, inputs, targets);
    if (st != LM_OK) return st;
    int r = 0;
    while (r < B && *pos < d->n_tokens && d->n_tokens - *pos >= (uint64_t)T + 1) {
        read_window(d, *pos, T, inputs + (size_t)r * T, targets + (size_t)r * T);
        *pos += (uint64_t)T;
        r++;
    }
    *n_rows = r;
    return LM_OK;
}
