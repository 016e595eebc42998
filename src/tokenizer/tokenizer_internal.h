/* tokenizer_internal.h - the lm_tokenizer struct and helpers shared by the tokenizer sources. */
#ifndef LUMEN_TOKENIZER_INTERNAL_H
#define LUMEN_TOKENIZER_INTERNAL_H

#include "lumen/tokenizer.h"

#include <stddef.h>
#include <stdint.h>

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

struct lm_tokenizer {
    lm_tokenizer_kind kind;
    char *path; /* where the vocabulary came from, for messages */
    int n_vocab;
    lm_token *tokens;
    char *blob;
    int bos, eos, unk; /* -1 when absent */
    int add_space_prefix;
    int split_at_space; /* no encodable piece has ' ' right after another byte (see spm.c) */
    int byte_token[256]; /* id of the byte-fallback token of each byte, -1 when absent */
    /* Open-addressing table (linear probing) from `text` to id over the tokens that plain
     * text may produce; slots hold id + 1, 0 is empty; the size is a power of two. */
    uint32_t *slots;
    size_t slot_mask;
};

/* Id of the encodable token whose text is s[0..n), or -1. */
int lm_tok_lookup(const lm_tokenizer *t, const char *s, size_t n);

/* Whether plain text may produce this token type (normal pieces, not control/byte/unknown). */
int lm_tok_type_encodable(int type);

/* SentencePiece BPE. Writes at most len + 1 ids (one per input byte plus the dummy prefix)
 * into out, which the caller sized. */
lm_status lm_tok_spm_encode(const lm_tokenizer *t, const char *text, size_t len, int32_t *out, size_t *n_out);

#endif
