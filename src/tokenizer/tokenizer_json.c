/* tokenizer_json.c - Hugging Face tokenizer.json: reading BPE models (byte-level and SentencePiece-style), writing them. */
#include "tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SPM_SPACE[] = "\xe2\x96\x81"; /* U+2581 */

/* ---- reading ---------------------------------------------------------------------------- */

/* The "type" of a component, "" when absent or not a string. */
static const char *type_of(json_t *o) {
    const char *s = json_string_value(json_object_get(o, "type"));
    return s ? s : "";
}

static int str_eq(json_t *v, const char *lit) {
    return json_is_string(v) && json_string_length(v) == strlen(lit) && memcmp(json_string_value(v), lit, strlen(lit)) == 0;
}

/* An optional boolean field: absent or null gives def. */
static lm_status get_bool(const char *path, const char *where, json_t *o, const char *key, int def, int *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return LM_OK;
    }
    if (!json_is_boolean(v)) return lm_fail(LM_ERR_FORMAT, "%s: %s.%s is not a boolean", path, where, key);
    *out = json_is_true(v);
    return LM_OK;
}

static lm_status parse_normalizer(lm_tokenizer *t, const char *path, json_t *n, int depth) {
    if (!n || json_is_null(n)) return LM_OK;
    if (!json_is_object(n) || depth > 8) return lm_fail(LM_ERR_FORMAT, "%s: normalizer is not an object", path);
    const char *ty = type_of(n);
    if (strcmp(ty, "Sequence") == 0) {
        json_t *list = json_object_get(n, "normalizers");
        if (!json_is_array(list)) return lm_fail(LM_ERR_FORMAT, "%s: normalizer Sequence has no \"normalizers\" list", path);
        for (size_t i = 0; i < json_array_size(list); i++) {
            lm_status st = parse_normalizer(t, path, json_array_get(list, i), depth + 1);
            if (st != LM_OK) return st;
        }
        return LM_OK;
    }
    if (strcmp(ty, "NFC") == 0) {
        t->cfg.nfc = 1;
        return LM_OK;
    }
    if (strcmp(ty, "Prepend") == 0 && str_eq(json_object_get(n, "prepend"), SPM_SPACE)) {
        t->cfg.norm_prepend = 1;
        return LM_OK;
    }
    if (strcmp(ty, "Replace") == 0) {
        json_t *pat = json_object_get(n, "pattern");
        if (str_eq(json_object_get(pat, "String"), " ") && str_eq(json_object_get(n, "content"), SPM_SPACE)) {
            t->cfg.norm_replace = 1;
            return LM_OK;
        }
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: normalizer Replace is supported only for ' ' -> U+2581", path);
    }
    if (strcmp(ty, "Prepend") == 0)
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: normalizer Prepend is supported only for U+2581", path);
    return lm_fail(LM_ERR_UNSUPPORTED, "%s: normalizer \"%s\" is not supported", path, *ty ? ty : "(no type)");
}

typedef struct pretok_seen {
    int bytelevel, metaspace;
} pretok_seen;

static lm_status parse_pretok(lm_tokenizer *t, const char *path, json_t *p, pretok_seen *seen, int depth) {
    if (!p || json_is_null(p)) return LM_OK;
    if (!json_is_object(p) || depth > 8) return lm_fail(LM_ERR_FORMAT, "%s: pre_tokenizer is not an object", path);
    const char *ty = type_of(p);
    lm_status st;
    if (strcmp(ty, "Sequence") == 0) {
        json_t *list = json_object_get(p, "pretokenizers");
        if (!json_is_array(list))
            return lm_fail(LM_ERR_FORMAT, "%s: pre_tokenizer Sequence has no \"pretokenizers\" list", path);
        for (size_t i = 0; i < json_array_size(list); i++)
            if ((st = parse_pretok(t, path, json_array_get(list, i), seen, depth + 1)) != LM_OK) return st;
        return LM_OK;
    }
    if (strcmp(ty, "ByteLevel") == 0) {
        if (seen->bytelevel) return lm_fail(LM_ERR_UNSUPPORTED, "%s: two ByteLevel pre-tokenizers", path);
        seen->bytelevel = 1;
        int prefix = 0, regex = 1;
        if ((st = get_bool(path, "pre_tokenizer", p, "add_prefix_space", 0, &prefix)) != LM_OK) return st;
        if ((st = get_bool(path, "pre_tokenizer", p, "use_regex", 1, &regex)) != LM_OK) return st;
        /* After a Split the prefix would go on every piece; no known file does that. */
        if (prefix && t->cfg.n_splits > 0)
            return lm_fail(LM_ERR_UNSUPPORTED, "%s: ByteLevel with add_prefix_space after a Split is not supported", path);
        t->cfg.bl_prefix_space = prefix;
        if (regex) {
            t->cfg.bl_regex = 1;
            return lm_tok_add_split(t, LM_GPT2_PATTERN, strlen(LM_GPT2_PATTERN), 0);
        }
        return LM_OK;
    }
    if (strcmp(ty, "Split") == 0) {
        /* ByteLevel turns the text into stand-in characters; a Split after it would see those. */
        if (seen->bytelevel)
            return lm_fail(LM_ERR_UNSUPPORTED, "%s: a Split pre-tokenizer after ByteLevel is not supported", path);
        json_t *pat = json_object_get(p, "pattern");
        json_t *re = json_object_get(pat, "Regex"), *lit = json_object_get(pat, "String");
        json_t *src = json_is_string(re) ? re : lit;
        if (!json_is_string(src))
            return lm_fail(LM_ERR_FORMAT, "%s: Split pre-tokenizer has no pattern {\"Regex\": ...} or {\"String\": ...}",
                           path);
        json_t *beh = json_object_get(p, "behavior");
        if (!str_eq(beh, "Isolated"))
            return lm_fail(LM_ERR_UNSUPPORTED, "%s: Split behavior \"%s\" is not supported (only Isolated)", path,
                           json_is_string(beh) ? json_string_value(beh) : "(none)");
        int invert = 0;
        if ((st = get_bool(path, "pre_tokenizer", p, "invert", 0, &invert)) != LM_OK) return st;
        if (invert) return lm_fail(LM_ERR_UNSUPPORTED, "%s: Split with invert is not supported", path);
        return lm_tok_add_split(t, json_string_value(src), json_string_length(src), src == lit);
    }
    if (strcmp(ty, "Metaspace") == 0) {
        if (!str_eq(json_object_get(p, "replacement"), SPM_SPACE))
            return lm_fail(LM_ERR_UNSUPPORTED, "%s: Metaspace is supported only with replacement U+2581", path);
        seen->metaspace = 1;
        t->cfg.metaspace = 1;
        json_t *scheme = json_object_get(p, "prepend_scheme");
        if (str_eq(scheme, "first")) {
            t->cfg.meta_scheme = 1;
        } else if (str_eq(scheme, "always")) {
            t->cfg.meta_scheme = 2;
        } else if (str_eq(scheme, "never")) {
            t->cfg.meta_scheme = 0;
        } else if (!scheme || json_is_null(scheme)) {
            int prefix = 1; /* files older than prepend_scheme */
            if ((st = get_bool(path, "pre_tokenizer", p, "add_prefix_space", 1, &prefix)) != LM_OK) return st;
            t->cfg.meta_scheme = prefix ? 2 : 0;
        } else {
            return lm_fail(LM_ERR_UNSUPPORTED, "%s: Metaspace prepend_scheme is not first, always or never", path);
        }
        return get_bool(path, "pre_tokenizer", p, "split", 1, &t->cfg.meta_split);
    }
    return lm_fail(LM_ERR_UNSUPPORTED, "%s: pre-tokenizer \"%s\" is not supported (ByteLevel, Split, Metaspace are)",
                   path, *ty ? ty : "(no type)");
}

/* A token named by a config: a string or {"content": string}; -1 when absent or unknown. */
static int named_token(const lm_tokenizer *t, json_t *v) {
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v)) return -1;
    return lm_tok_lookup_piece(t, json_string_value(v), json_string_length(v));
}

static int first_piece(const lm_tokenizer *t, const char *const *names) {
    for (; *names; names++) {
        int id = lm_tok_lookup_piece(t, *names, strlen(*names));
        if (id >= 0) return id;
    }
    return -1;
}

/* The BOS a TemplateProcessing post-processor puts first, looked for inside a Sequence too. */
static int template_bos(const lm_tokenizer *t, json_t *pp, int depth) {
    if (!json_is_object(pp) || depth > 8) return -1;
    if (strcmp(type_of(pp), "Sequence") == 0) {
        json_t *list = json_object_get(pp, "processors");
        for (size_t i = 0; i < json_array_size(list); i++) {
            int id = template_bos(t, json_array_get(list, i), depth + 1);
            if (id >= 0) return id;
        }
        return -1;
    }
    if (strcmp(type_of(pp), "TemplateProcessing") != 0) return -1;
    json_t *first = json_array_get(json_object_get(pp, "single"), 0);
    return named_token(t, json_object_get(json_object_get(first, "SpecialToken"), "id"));
}

/* BOS and EOS: tokenizer.json does not record them; tokenizer_config.json beside it does. */
static lm_status find_bos_eos(lm_tokenizer *t, const char *path, json_t *root) {
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path) + 1 : 0;
    static const char CFG[] = "tokenizer_config.json";
    char *cfg = malloc(dl + sizeof CFG);
    if (!cfg) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    memcpy(cfg, path, dl);
    memcpy(cfg + dl, CFG, sizeof CFG);
    FILE *f = fopen(cfg, "rb");
    if (f) {
        fclose(f);
        json_t *c = NULL;
        lm_status st = lm_tok_json_load(cfg, &c);
        if (st == LM_OK && !json_is_object(c)) st = lm_fail(LM_ERR_FORMAT, "%s: not a JSON object", cfg);
        if (st == LM_OK) {
            t->bos = named_token(t, json_object_get(c, "bos_token"));
            t->eos = named_token(t, json_object_get(c, "eos_token"));
            json_t *ab = json_object_get(c, "add_bos_token");
            if (json_is_boolean(ab)) t->add_bos = json_is_true(ab);
            else if (t->bos >= 0 && template_bos(t, json_object_get(root, "post_processor"), 0) == t->bos) t->add_bos = 1;
        }
        json_decref(c);
        free(cfg);
        return st;
    }
    free(cfg);
    static const char *const BOS[] = {"<s>", "<|begin_of_text|>", "<bos>", "<|endoftext|>", NULL};
    static const char *const EOS[] = {"</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>", NULL};
    t->bos = template_bos(t, json_object_get(root, "post_processor"), 0);
    if (t->bos >= 0) t->add_bos = 1; /* the post-processor puts it first */
    else t->bos = first_piece(t, BOS);
    t->eos = first_piece(t, EOS);
    return LM_OK;
}

static lm_status parse_model_options(lm_tokenizer *t, const char *path, json_t *model) {
    lm_status st;
    json_t *drop = json_object_get(model, "dropout");
    if (drop && !json_is_null(drop) && !(json_is_number(drop) && json_number_value(drop) <= 0.0))
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: BPE dropout is not supported", path);
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(model, affixes[i]);
        if (v && !json_is_null(v) && !str_eq(v, ""))
            return lm_fail(LM_ERR_UNSUPPORTED, "%s: model.%s is not supported", path, affixes[i]);
    }
    if ((st = get_bool(path, "model", model, "byte_fallback", 0, &t->cfg.byte_fallback)) != LM_OK) return st;
    if ((st = get_bool(path, "model", model, "fuse_unk", 0, &t->cfg.fuse_unk)) != LM_OK) return st;
    return get_bool(path, "model", model, "ignore_merges", 0, &t->cfg.ignore_merges);
}

/* Checks added_tokens and returns their largest id (-1 when there are none). */
static lm_status scan_added(const char *path, json_t *list, int *max_id) {
    *max_id = -1;
    if (!list || json_is_null(list)) return LM_OK;
    if (!json_is_array(list)) return lm_fail(LM_ERR_FORMAT, "%s: added_tokens is not a list", path);
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *a = json_array_get(list, i);
        json_t *id = json_object_get(a, "id"), *content = json_object_get(a, "content");
        if (!json_is_integer(id) || !json_is_string(content) || json_string_length(content) == 0)
            return lm_fail(LM_ERR_FORMAT, "%s: added_tokens[%zu] needs an integer id and a non-empty content", path, i);
        json_int_t v = json_integer_value(id);
        if (v < 0 || v >= (1 << 24))
            return lm_fail(LM_ERR_FORMAT, "%s: added_tokens[%zu] has id %lld, out of range", path, i, (long long)v);
        if ((int)v > *max_id) *max_id = (int)v;
    }
    return LM_OK;
}

/* Puts the added tokens into src (sized for the largest id) as CONTROL (special) or USER_DEFINED. */
static lm_status fill_added(const char *path, json_t *list, lm_bpe_source *src) {
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *a = json_array_get(list, i);
        int id = (int)json_integer_value(json_object_get(a, "id"));
        json_t *content = json_object_get(a, "content");
        lm_added_token at = {.id = id};
        int v = 0;
        lm_status st;
        static const char *const keys[] = {"special", "lstrip", "rstrip", "single_word"};
        uint8_t *dst[] = {&at.special, &at.lstrip, &at.rstrip, &at.single_word};
        for (int k = 0; k < 4; k++) {
            if ((st = get_bool(path, "added_tokens", a, keys[k], 0, &v)) != LM_OK) return st;
            *dst[k] = (uint8_t)v;
        }
        if ((st = get_bool(path, "added_tokens", a, "normalized", !at.special, &v)) != LM_OK) return st;
        at.normalized = (uint8_t)v;
        /* Until now every type is NORMAL, so an added type means this id came before. */
        if (src->type[id] != LM_TOKEN_NORMAL)
            return lm_fail(LM_ERR_FORMAT, "%s: added_tokens lists id %d twice", path, id);
        /* A token in both lists is spelled as added_tokens says, as Hugging Face does. */
        at.in_vocab = src->piece[id] != NULL;
        src->piece[id] = json_string_value(content);
        src->piece_len[id] = (uint32_t)json_string_length(content);
        src->type[id] = at.special ? LM_TOKEN_CONTROL : LM_TOKEN_USER_DEFINED;
        src->added[src->n_added++] = at;
    }
    return LM_OK;
}

static lm_status fill_merges(const char *path, json_t *merges, lm_bpe_source *src) {
    for (size_t i = 0; i < json_array_size(merges); i++) {
        json_t *m = json_array_get(merges, i);
        if (json_is_string(m)) {
            const char *s = json_string_value(m);
            size_t n = json_string_length(m), at;
            if (!lm_tok_split_merge(s, n, &at))
                return lm_fail(LM_ERR_FORMAT, "%s: model.merges[%zu] \"%.*s\" is not two pieces separated by a space",
                               path, i, (int)(n < 64 ? n : 64), s);
            src->merge_a[i] = s;
            src->merge_a_len[i] = (uint32_t)at;
            src->merge_b[i] = s + at + 1;
            src->merge_b_len[i] = (uint32_t)(n - at - 1);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            src->merge_a[i] = json_string_value(json_array_get(m, 0));
            src->merge_a_len[i] = (uint32_t)json_string_length(json_array_get(m, 0));
            src->merge_b[i] = json_string_value(json_array_get(m, 1));
            src->merge_b_len[i] = (uint32_t)json_string_length(json_array_get(m, 1));
        } else {
            return lm_fail(LM_ERR_FORMAT, "%s: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", path, i);
        }
    }
    return LM_OK;
}

static lm_status load_json(lm_tokenizer *t, const char *path, json_t *root) {
    if (!json_is_object(root)) return lm_fail(LM_ERR_FORMAT, "%s: not a JSON object", path);
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return lm_fail(LM_ERR_FORMAT, "%s: no \"model\" object", path);
    json_t *type = json_object_get(model, "type");
    if (type && !json_is_string(type)) return lm_fail(LM_ERR_FORMAT, "%s: model.type is not a string", path);
    /* Files from before model.type was written are told apart by their fields. */
    if (!type && !json_object_get(model, "merges"))
        return lm_fail(LM_ERR_FORMAT, "%s: model has neither a type nor merges", path);
    if (type && !str_eq(type, "BPE"))
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: model type \"%.64s\" is not supported (only BPE)", path,
                       json_string_value(type));
    lm_status st;
    if ((st = parse_model_options(t, path, model)) != LM_OK) return st;
    if ((st = parse_normalizer(t, path, json_object_get(root, "normalizer"), 0)) != LM_OK) return st;
    pretok_seen seen = {0, 0};
    json_t *pre = json_object_get(root, "pre_tokenizer");
    if ((st = parse_pretok(t, path, pre, &seen, 0)) != LM_OK) return st;
    const lm_bpe_config *c = &t->cfg;
    if (seen.bytelevel) {
        if (seen.metaspace || c->norm_prepend || c->norm_replace)
            return lm_fail(LM_ERR_UNSUPPORTED, "%s: ByteLevel mixed with U+2581 spaces is not supported", path);
        t->kind = LM_TOK_BPE;
        t->add_space_prefix = 0;
    } else if (seen.metaspace || c->norm_prepend || c->norm_replace || c->byte_fallback) {
        if (c->n_splits > 0)
            return lm_fail(LM_ERR_UNSUPPORTED, "%s: a Split pre-tokenizer without ByteLevel is not supported", path);
        t->kind = LM_TOK_BPE_SPM;
        t->add_space_prefix = c->norm_prepend || (c->metaspace && c->meta_scheme != 0);
    } else {
        const char *pty = json_is_object(pre) ? type_of(pre) : "null";
        return lm_fail(LM_ERR_UNSUPPORTED,
                       "%s: BPE with pre_tokenizer %s is not supported (needs ByteLevel, or Metaspace / a U+2581 "
                       "normalizer / byte_fallback)",
                       path, pty);
    }

    json_t *vocab = json_object_get(model, "vocab");
    json_t *merges = json_object_get(model, "merges");
    json_t *added = json_object_get(root, "added_tokens");
    if (!vocab) return lm_fail(LM_ERR_FORMAT, "%s: model.vocab is missing", path);
    if (!json_is_array(merges)) return lm_fail(LM_ERR_FORMAT, "%s: model.merges is missing or not a list", path);
    int max_v, max_a;
    if ((st = lm_tok_json_vocab_scan(path, "model.vocab", vocab, &max_v)) != LM_OK) return st;
    if ((st = scan_added(path, added, &max_a)) != LM_OK) return st;
    int n = (max_v > max_a ? max_v : max_a) + 1;
    if (n <= 0) return lm_fail(LM_ERR_FORMAT, "%s: the vocabulary is empty", path);
    lm_bpe_source src = {0};
    if (lm_tok_source_alloc(&src, n, json_array_size(merges), (int)json_array_size(added) + 1) != LM_OK) {
        lm_tok_source_free(&src);
        return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    }
    src.merges_path = path;
    st = lm_tok_json_vocab_fill(path, "model.vocab", vocab, src.piece, src.piece_len);
    if (st == LM_OK) st = fill_added(path, added, &src);
    for (int i = 0; i < n && st == LM_OK; i++)
        if (!src.piece[i])
            st = lm_fail(LM_ERR_FORMAT, "%s: no token has id %d (ids must be 0..%d, in model.vocab or added_tokens)",
                         path, i, n - 1);
    if (st == LM_OK) st = fill_merges(path, merges, &src);
    if (st == LM_OK) st = lm_tok_bpe_build(t, &src);
    lm_tok_source_free(&src);
    if (st != LM_OK) return st;

    json_t *unk = json_object_get(model, "unk_token");
    if (unk && !json_is_null(unk)) {
        if (!json_is_string(unk)) return lm_fail(LM_ERR_FORMAT, "%s: model.unk_token is not a string", path);
        t->unk = lm_tok_lookup_piece(t, json_string_value(unk), json_string_length(unk));
        if (t->unk < 0)
            return lm_fail(LM_ERR_FORMAT, "%s: model.unk_token \"%.64s\" is not in the vocabulary", path,
                           json_string_value(unk));
    }
    return find_bos_eos(t, path, root);
}

lm_status lm_tokenizer_load_json(const char *path, lm_tokenizer **out) {
    if (!out) return lm_fail(LM_ERR_ARG, "lm_tokenizer_load_json: out is NULL");
    *out = NULL;
    if (!path) return lm_fail(LM_ERR_ARG, "lm_tokenizer_load_json: path is NULL");
    json_t *root = NULL;
    lm_status st = lm_tok_json_load(path, &root);
    if (st != LM_OK) return st;
    lm_tokenizer *t = lm_tok_new(path);
    if (!t) st = lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    if (st == LM_OK) st = load_json(t, path, root);
    json_decref(root);
    if (st != LM_OK) {
        lm_tokenizer_free(t);
        return st;
    }
    *out = t;
    return LM_OK;
}

/* ---- writing ------------------------------------------------------------------------------ */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int failed; /* out of memory */
    int bad_utf8;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->cap - b->n < n) {
        size_t c = b->cap ? b->cap : 1 << 16;
        while (c - b->n < n) {
            if (c > SIZE_MAX / 2) {
                b->failed = 1;
                return;
            }
            c *= 2;
        }
        char *q = realloc(b->p, c);
        if (!q) {
            b->failed = 1;
            return;
        }
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

/* A JSON string literal; text that is not UTF-8 cannot be one, and marks the buffer. */
static void put_str(sbuf *b, const char *s, size_t n) {
    put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t cl = lm_tok_utf8_len((const unsigned char *)s + i, n - i);
        if (cl == 1 && c >= 0x80) b->bad_utf8 = 1;
        if (c < 0x20 || c == '"' || c == '\\') {
            put(b, s + run, i - run);
            char esc[8];
            switch (c) {
            case '"': memcpy(esc, "\\\"", 3); break;
            case '\\': memcpy(esc, "\\\\", 3); break;
            case '\n': memcpy(esc, "\\n", 3); break;
            case '\t': memcpy(esc, "\\t", 3); break;
            case '\r': memcpy(esc, "\\r", 3); break;
            default: snprintf(esc, sizeof esc, "\\u%04x", c); break;
            }
            puts_(b, esc);
            run = i + 1;
        }
        i += cl;
    }
    put(b, s + run, n - run);
    put(b, "\"", 1);
}

static void put_int(sbuf *b, long long v) {
    char num[32];
    snprintf(num, sizeof num, "%lld", v);
    puts_(b, num);
}

static const char *tf(int v) { return v ? "true" : "false"; }

static void write_pretok_bytelevel(sbuf *b, const lm_tokenizer *t) {
    const lm_bpe_config *c = &t->cfg;
    int user = c->n_splits - (c->bl_regex ? 1 : 0); /* GPT-2's regex, if used, is the last one */
    char bl[128];
    snprintf(bl, sizeof bl, "{\"type\": \"ByteLevel\", \"add_prefix_space\": %s, \"trim_offsets\": true, \"use_regex\": %s}",
             tf(c->bl_prefix_space), tf(c->bl_regex));
    if (user == 0) {
        puts_(b, bl);
        return;
    }
    puts_(b, "{\"type\": \"Sequence\", \"pretokenizers\": [");
    for (int i = 0; i < user; i++) {
        puts_(b, "\n    {\"type\": \"Split\", \"pattern\": {");
        puts_(b, c->splits[i].literal ? "\"String\": " : "\"Regex\": ");
        put_str(b, c->splits[i].src, strlen(c->splits[i].src));
        puts_(b, "}, \"behavior\": \"Isolated\", \"invert\": false},");
    }
    puts_(b, "\n    ");
    puts_(b, bl);
    puts_(b, "]}");
}

/* A TemplateProcessing post-processor that puts BOS first (as Hugging Face's Llama tokenizers
 * have), so that loaders, lumen's included, know that encoding for the model prepends it. */
static void write_bos_template(sbuf *b, const lm_tokenizer *t) {
    const char *piece = t->tokens[t->bos].piece;
    size_t len = t->tokens[t->bos].piece_len;
    puts_(b, "{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": ");
    put_str(b, piece, len);
    puts_(b, ", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"pair\": [{\"SpecialToken\": {\"id\": ");
    put_str(b, piece, len);
    puts_(b, ", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, {\"SpecialToken\": {\"id\": ");
    put_str(b, piece, len);
    puts_(b, ", \"type_id\": 1}}, {\"Sequence\": {\"id\": \"B\", \"type_id\": 1}}], \"special_tokens\": {");
    put_str(b, piece, len);
    puts_(b, ": {\"id\": ");
    put_str(b, piece, len);
    puts_(b, ", \"ids\": [");
    put_int(b, t->bos);
    puts_(b, "], \"tokens\": [");
    put_str(b, piece, len);
    puts_(b, "]}}}");
}

static void write_spm_parts(sbuf *b, const lm_tokenizer *t) {
    const lm_bpe_config *c = &t->cfg;
    const char *prep = "{\"type\": \"Prepend\", \"prepend\": \"\xe2\x96\x81\"}";
    const char *repl = "{\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\xe2\x96\x81\"}";
    puts_(b, ",\n  \"normalizer\": ");
    if (c->norm_prepend && c->norm_replace) {
        puts_(b, "{\"type\": \"Sequence\", \"normalizers\": [");
        puts_(b, prep);
        puts_(b, ", ");
        puts_(b, repl);
        puts_(b, "]}");
    } else {
        puts_(b, c->norm_prepend ? prep : c->norm_replace ? repl : "null");
    }
    puts_(b, ",\n  \"pre_tokenizer\": ");
    if (c->metaspace) {
        static const char *const scheme[] = {"never", "first", "always"};
        puts_(b, "{\"type\": \"Metaspace\", \"replacement\": \"\xe2\x96\x81\", \"prepend_scheme\": \"");
        puts_(b, scheme[c->meta_scheme]);
        puts_(b, "\", \"split\": ");
        puts_(b, tf(c->meta_split));
        puts_(b, "}");
    } else {
        puts_(b, "null");
    }
    puts_(b, ",\n  \"post_processor\": ");
    if (lm_tokenizer_wants_bos(t)) write_bos_template(b, t);
    else puts_(b, "null");
    puts_(b, ",\n  \"decoder\": {\"type\": \"Sequence\", \"decoders\": ["
             "{\"type\": \"Replace\", \"pattern\": {\"String\": \"\xe2\x96\x81\"}, \"content\": \" \"}, "
             "{\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}");
    if (t->add_space_prefix) puts_(b, ", {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}");
    puts_(b, "]}");
}

static int by_id(const void *a, const void *b) {
    int32_t x = ((const lm_added_token *)a)->id, y = ((const lm_added_token *)b)->id;
    return (x > y) - (x < y);
}

static lm_status write_json(const lm_tokenizer *t, sbuf *b, const char *path) {
    const lm_bpe_config *c = &t->cfg;
    /* Which ids are only added tokens (not in model.vocab). */
    uint8_t *added_only = lm_calloc((size_t)t->n_vocab, 1);
    if (!added_only) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < t->n_added; i++)
        if (!t->added[i].in_vocab) added_only[t->added[i].id] = 1;
    /* model.vocab is a map: two tokens with one piece cannot both be in it. */
    for (int id = 0; id < t->n_vocab; id++) {
        if (added_only[id]) continue;
        int first = lm_tok_lookup_piece(t, t->tokens[id].piece, t->tokens[id].piece_len);
        if (first != id) {
            free(added_only);
            return lm_fail(LM_ERR_UNSUPPORTED, "%s: tokens %d and %d have the same piece, which tokenizer.json cannot hold",
                           path, first, id);
        }
    }

    puts_(b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [");
    /* added_tokens in id order, as the tokenizers library writes them. */
    lm_added_token *order = lm_malloc(t->n_added ? (size_t)t->n_added : 1, sizeof *order);
    if (!order) {
        free(added_only);
        return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    }
    if (t->n_added) memcpy(order, t->added, (size_t)t->n_added * sizeof *order);
    qsort(order, (size_t)t->n_added, sizeof *order, by_id);
    for (int k = 0; k < t->n_added; k++) {
        const lm_added_token *a = &order[k];
        int id = a->id;
        puts_(b, k ? ",\n    {\"id\": " : "\n    {\"id\": ");
        put_int(b, id);
        puts_(b, ", \"content\": ");
        put_str(b, t->tokens[id].text, t->tokens[id].text_len);
        char flags[160];
        snprintf(flags, sizeof flags,
                 ", \"single_word\": %s, \"lstrip\": %s, \"rstrip\": %s, \"normalized\": %s, \"special\": %s}",
                 tf(a->single_word), tf(a->lstrip), tf(a->rstrip), tf(a->normalized), tf(a->special));
        puts_(b, flags);
    }
    free(order);
    puts_(b, "\n  ]");
    if (t->kind == LM_TOK_BPE) {
        puts_(b, ",\n  \"normalizer\": ");
        puts_(b, c->nfc ? "{\"type\": \"NFC\"}" : "null");
        puts_(b, ",\n  \"pre_tokenizer\": ");
        write_pretok_bytelevel(b, t);
        static const char BL[] = "{\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": false, "
                                 "\"use_regex\": true}";
        if (lm_tokenizer_wants_bos(t)) {
            puts_(b, ",\n  \"post_processor\": {\"type\": \"Sequence\", \"processors\": [");
            puts_(b, BL);
            puts_(b, ", ");
            write_bos_template(b, t);
            puts_(b, "]}");
        } else {
            puts_(b, ",\n  \"post_processor\": ");
            puts_(b, BL);
        }
        puts_(b, ",\n  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, "
                 "\"use_regex\": true}");
    } else {
        write_spm_parts(b, t);
    }
    puts_(b, ",\n  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": ");
    if (t->unk >= 0) put_str(b, t->tokens[t->unk].piece, t->tokens[t->unk].piece_len);
    else puts_(b, "null");
    puts_(b, ",\n    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n    \"fuse_unk\": ");
    puts_(b, tf(c->fuse_unk));
    puts_(b, ",\n    \"byte_fallback\": ");
    puts_(b, tf(c->byte_fallback));
    /* Written only when set, so that tokenizers releases older than the field still read the file. */
    if (c->ignore_merges) puts_(b, ",\n    \"ignore_merges\": true");
    puts_(b, ",\n    \"vocab\": {");
    for (int id = 0, k = 0; id < t->n_vocab; id++) {
        if (added_only[id]) continue;
        puts_(b, k++ ? ",\n      " : "\n      ");
        put_str(b, t->tokens[id].piece, t->tokens[id].piece_len);
        puts_(b, ": ");
        put_int(b, id);
    }
    free(added_only);
    puts_(b, "\n    },\n    \"merges\": [");
    /* "a b" strings are what every release reads; a piece holding a space needs the pair form. */
    for (uint32_t r = 0; r < t->n_merges; r++) {
        const lm_token *x = &t->tokens[t->merges[r][0]], *y = &t->tokens[t->merges[r][1]];
        puts_(b, r ? ",\n      " : "\n      ");
        int spaced = memchr(x->piece, ' ', x->piece_len) || memchr(y->piece, ' ', y->piece_len);
        if (spaced) {
            puts_(b, "[");
            put_str(b, x->piece, x->piece_len);
            puts_(b, ", ");
            put_str(b, y->piece, y->piece_len);
            puts_(b, "]");
            continue;
        }
        size_t n = (size_t)x->piece_len + 1 + y->piece_len;
        char *m = malloc(n);
        if (!m) {
            b->failed = 1;
            break;
        }
        memcpy(m, x->piece, x->piece_len);
        m[x->piece_len] = ' ';
        memcpy(m + x->piece_len + 1, y->piece, y->piece_len);
        put_str(b, m, n);
        free(m);
    }
    puts_(b, "\n    ]\n  }\n}\n");
    if (b->failed) return lm_fail(LM_ERR_NOMEM, "%s: out of memory writing the tokenizer", path);
    if (b->bad_utf8)
        return lm_fail(LM_ERR_UNSUPPORTED, "%s: a token is not valid UTF-8, which tokenizer.json cannot hold", path);
    return LM_OK;
}

lm_status lm_tokenizer_save_json(const lm_tokenizer *t, const char *path) {
    if (!t || !path) return lm_fail(LM_ERR_ARG, "lm_tokenizer_save_json: NULL argument");
    if (t->kind != LM_TOK_BPE && t->kind != LM_TOK_BPE_SPM)
        return lm_fail(LM_ERR_UNSUPPORTED,
                       "%s: a score-based SentencePiece vocabulary (from %s) cannot be written as tokenizer.json", path,
                       t->path);
    sbuf b = {0};
    lm_status st = write_json(t, &b, path);
    if (st == LM_OK) st = lm_write_file_atomic(path, b.p, b.n);
    free(b.p);
    return st;
}
