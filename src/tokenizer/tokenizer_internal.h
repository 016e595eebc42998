/* tokenizer_internal.h - the lm_tokenizer struct and helpers shared by the tokenizer sources. */
#ifndef LUMEN_TOKENIZER_INTERNAL_H
#define LUMEN_TOKENIZER_INTERNAL_H

#include "lumen/tokenizer.h"

#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>

/* One vocabulary entry. Both spellings are kept because SentencePiece vocabularies write a
 * space as U+2581 while llama2.c files and decoded text use ' ': `piece` is the
 * SentencePiece spelling (what lm_tokenizer_piece returns), `text` the spelling with plain
 * spaces (what encoding matches against and decoding emits). Both point into
 * lm_tokenizer.blob and are NUL-terminated. */
typedef struct lm_token {
    const char *piece;
    const char *text;
    uint32_t piece_len;
    uint32_t text_len;
    float score;
    uint8_t type; /* lm_token_type */
    uint8_t byte; /* the byte of an LM_TOKEN_BYTE token */
} lm_token;

/* A token matched in the text before pre-tokenisation (Hugging Face "added_tokens", GGUF CONTROL and
 * USER_DEFINED tokens). The text matched is the token's `text`. */
typedef struct lm_added_token {
    int32_t id;
    uint8_t special;     /* skipped by LM_TOK_NO_SPECIAL; decodes to nothing */
    uint8_t lstrip;      /* the match takes the whitespace before it */
    uint8_t rstrip;      /* ... and after it */
    uint8_t single_word; /* matches only when not inside a word */
    uint8_t normalized;  /* kept for saving; matched on the raw text either way */
    uint8_t in_vocab;    /* also listed in model.vocab (saved there too) */
} lm_added_token;

/* One regex of the pre-tokenizer: the text is cut into its matches and the runs between them
 * (Hugging Face's Split with behaviour "Isolated"). */
typedef struct lm_pretok_split {
    pcre2_code *code;
    char *src; /* the pattern as the file has it, for saving */
    int literal; /* a {"String": ...} pattern */
} lm_pretok_split;

/* Normalisation and pre-tokenisation of merge-rank BPE, as read from tokenizer.json. */
typedef struct lm_bpe_config {
    /* byte-level */
    lm_pretok_split *splits; /* Split regexes, then GPT-2's when bl_regex, applied in order */
    int n_splits;
    int bl_regex;        /* ByteLevel use_regex: GPT-2's pattern is the last entry of splits */
    int bl_prefix_space; /* ByteLevel add_prefix_space: each segment gets a leading ' ' */
    int nfc;             /* normalizer NFC was declared (not applied: see tokenizer.h) */
    /* SentencePiece-style */
    int norm_prepend;    /* normalizer Prepend "\xe2\x96\x81": every non-empty segment */
    int norm_replace;    /* normalizer Replace ' ' -> "\xe2\x96\x81" */
    int metaspace;       /* pre_tokenizer Metaspace (replaces ' ' too) */
    int meta_scheme;     /* Metaspace prepend_scheme: 0 never, 1 first, 2 always */
    int meta_split;      /* Metaspace split: words start at each "\xe2\x96\x81" */
    /* model */
    int byte_fallback;
    int fuse_unk;
    int ignore_merges; /* a word that is itself a token is not merged (Llama-3) */
    /* Derived: no merge makes a piece with U+2581 right after another character, so no token can
     * span such a place and SentencePiece-style text may be merged one word at a time there. */
    int spm_word_split;
} lm_bpe_config;

struct lm_tokenizer {
    lm_tokenizer_kind kind;
    char *path; /* where the vocabulary came from, for messages */
    int n_vocab;
    lm_token *tokens;
    char *blob;
    int bos, eos, unk; /* -1 when absent */
    /* Whether encoding for the model prepends BOS, as the file says it (tokenizer.json's
     * post-processor template, tokenizer_config.json's add_bos_token); -1: the file does not say,
     * so lm_tokenizer_wants_bos decides by the kind of vocabulary. */
    int add_bos;
    int add_space_prefix;
    int split_at_space; /* no encodable piece has ' ' right after another byte (see spm.c) */
    int byte_token[256]; /* id of the byte-fallback token of each byte, -1 when absent */
    /* Open-addressing table (linear probing) from `text` to id over the tokens that plain
     * text may produce; slots hold id + 1, 0 is empty; the size is a power of two. */
    uint32_t *slots;
    size_t slot_mask;

    /* ---- merge-rank BPE (LM_TOK_BPE, LM_TOK_BPE_SPM) ---- */
    lm_bpe_config cfg;
    /* Table from `piece` to id over all tokens, laid out like `slots`. */
    uint32_t *piece_slots;
    size_t piece_mask;
    /* Merges in rank order (for saving) and an open-addressing table from the pair of ids
     * (left << 32 | right, stored + 1 so 0 is empty) to its slot in merges. */
    int32_t (*merges)[3]; /* left, right, result */
    uint32_t n_merges;
    uint64_t *merge_keys;
    uint32_t *merge_rank;
    size_t merge_mask;
    int byte_id[256]; /* byte-level: the token of each byte's stand-in character, -1 if none */
    lm_added_token *added;
    int n_added;
    /* Added tokens by first byte, longest first: added[added_order[added_first[b] ..
     * added_first[b + 1])]. */
    int32_t *added_order;
    int32_t added_first[257];
};

/* Length of the well-formed UTF-8 character at s (n > 0 bytes available), or 1 when s does not
 * start one (stray continuation, overlong form, surrogate, beyond U+10FFFF, cut short). This is
 * the validity PCRE2 checks in UTF mode. */
size_t lm_tok_utf8_len(const unsigned char *s, size_t n);

/* GPT-2's map from bytes to printable code points: cp[b] for each byte. */
void lm_tok_bytelevel_table(uint16_t cp[256]);

/* Id of the token whose piece is s[0..n) (any type), or -1. BPE kinds only. */
int lm_tok_lookup_piece(const lm_tokenizer *t, const char *s, size_t n);

/* The rank of the merge of ids a and b (its index in t->merges), if there is one. */
int lm_tok_merge_find(const lm_tokenizer *t, int32_t a, int32_t b, uint32_t *rank);

/* Frees what the BPE fields own. */
void lm_tok_bpe_free(lm_tokenizer *t);

/* A new empty tokenizer (kind SPM, no ids) with path copied; NULL when out of memory. */
lm_tokenizer *lm_tok_new(const char *path);

/* What a BPE loader hands to lm_tok_bpe_build. Strings are borrowed and need not be
 * NUL-terminated. Ids are 0..n_tokens-1, each given exactly once by vocab or added. */
typedef struct lm_bpe_source {
    const char *merges_path;   /* file named in messages about merges */
    int n_tokens;
    const char **piece;        /* [n_tokens]; piece of each id */
    uint32_t *piece_len;
    uint8_t *type;             /* [n_tokens]; lm_token_type (NORMAL for plain vocabulary) */
    size_t n_merges;
    const char **merge_a, **merge_b;
    uint32_t *merge_a_len, *merge_b_len;
    size_t merge_line0;        /* > 0: merges are lines of a text file, merge i on line i + merge_line0 */
    lm_added_token *added;     /* n_added, ids < n_tokens */
    int n_added;
} lm_bpe_source;

/* Builds tokens, indexes and merge table of t (kind and cfg already set) from src. */
lm_status lm_tok_bpe_build(lm_tokenizer *t, const lm_bpe_source *src);

/* Compiles one pre-tokenizer regex and appends it to t->cfg.splits. */
lm_status lm_tok_add_split(lm_tokenizer *t, const char *pattern, size_t len, int literal);

/* GPT-2's pre-tokenizer pattern. */
extern const char LM_GPT2_PATTERN[];

lm_status lm_tok_source_alloc(lm_bpe_source *src, int n_tokens, size_t n_merges, int n_added);
void lm_tok_source_free(lm_bpe_source *src);

/* JSON helpers. lm_tok_json_load parses a whole file (duplicate keys are an error). A vocabulary
 * object {piece: id} is checked by _scan (ids integers in range; returns the largest, -1 if empty)
 * and placed by id into piece/piece_len by _fill (two pieces with one id are an error). */
lm_status lm_tok_json_load(const char *path, json_t **out);
lm_status lm_tok_json_vocab_scan(const char *path, const char *what, json_t *obj, int *max_id);
lm_status lm_tok_json_vocab_fill(const char *path, const char *what, json_t *obj, const char **piece,
                                 uint32_t *piece_len);
/* Splits a merge written "a b" at its first space after the first byte; 0 if it is not one. */
int lm_tok_split_merge(const char *s, size_t n, size_t *at);

/* tokenizer.ggml.model "gpt2" (lm_tokenizer_from_gguf passes it on). */
lm_status lm_tok_from_gguf_bpe(const lm_gguf *g, lm_tokenizer **out);

/* Merge-rank BPE encoding into a growing array (*out of capacity *cap, *n used). */
lm_status lm_tok_bpe_encode(const lm_tokenizer *t, const char *text, size_t len, unsigned flags, int32_t **out,
                            size_t *n, size_t *cap);

/* The byte of a "<0xNN>" piece, or -1. */
int lm_tok_parse_byte_piece(const char *s, size_t n);

/* FNV-1a with a final mix: the hash of both piece tables. */
uint64_t lm_tok_hash(const char *s, size_t n);

/* GGUF helpers shared by the two GGUF vocabularies. An optional token-id key: absent leaves *id
 * alone; UINT32_MAX is GGUF's "none". */
lm_status lm_tok_gguf_token_id(const lm_gguf *g, const char *key, int n_vocab, int *id);
lm_status lm_tok_gguf_add_bos(const lm_gguf *g, lm_tokenizer *t);
/* An optional per-token array of floats or integers, one per token. */
lm_status lm_tok_gguf_token_array(const lm_gguf *g, const char *key, int want_float, uint64_t n,
                                  const lm_gguf_kv **out);

/* Id of the encodable token whose text is s[0..n), or -1. */
int lm_tok_lookup(const lm_tokenizer *t, const char *s, size_t n);

/* Whether plain text may produce this token type (normal pieces, not control/byte/unknown). */
int lm_tok_type_encodable(int type);

/* SentencePiece BPE. Writes at most len + 1 ids (one per input byte plus the dummy prefix)
 * into out, which the caller sized. */
lm_status lm_tok_spm_encode(const lm_tokenizer *t, const char *text, size_t len, int32_t *out, size_t *n_out);

#endif
