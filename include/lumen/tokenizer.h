/* tokenizer.h - text <-> token ids. SentencePiece-style BPE (Llama) now; byte-level BPE later. */
#ifndef LUMEN_TOKENIZER_H
#define LUMEN_TOKENIZER_H

#include "lumen/base.h"
#include "lumen/format.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lm_tokenizer_kind {
    LM_TOK_SPM = 0, /* SentencePiece-style: score-greedy merges, byte fallback, dummy prefix */
    LM_TOK_BPE = 1  /* byte-level BPE (GPT-2 style); not yet implemented */
} lm_tokenizer_kind;

/* Token types as SentencePiece / GGUF number them. */
typedef enum lm_token_type {
    LM_TOKEN_UNDEFINED = 0,
    LM_TOKEN_NORMAL = 1,
    LM_TOKEN_UNKNOWN = 2,
    LM_TOKEN_CONTROL = 3,
    LM_TOKEN_USER_DEFINED = 4,
    LM_TOKEN_UNUSED = 5,
    LM_TOKEN_BYTE = 6
} lm_token_type;

typedef struct lm_tokenizer lm_tokenizer;

/* llama2.c tokenizer.bin: int32 max_token_length, then per token {f32 score, int32 len, bytes}.
 * The file does not store the vocabulary size: vocab_size > 0 reads exactly that many tokens
 * (error if the file has fewer); vocab_size == 0 reads to the end of the file. */
lm_status lm_tokenizer_load_llama2c(const char *path, int vocab_size, lm_tokenizer **out);
/* The vocabulary stored in a GGUF file (tokenizer.ggml.model "llama": tokens, scores,
 * token_type, bos/eos/unk ids, add_space_prefix). Messages name g->file.path. The tokenizer
 * copies what it needs: g may be closed afterwards. */
lm_status lm_tokenizer_from_gguf(const lm_gguf *g, lm_tokenizer **out);
void lm_tokenizer_free(lm_tokenizer *t); /* accepts NULL */

lm_tokenizer_kind lm_tokenizer_get_kind(const lm_tokenizer *t);
int lm_tokenizer_vocab_size(const lm_tokenizer *t);
int lm_tokenizer_bos(const lm_tokenizer *t); /* -1 if none */
int lm_tokenizer_eos(const lm_tokenizer *t); /* -1 if none */

/* Encodes len bytes of text (any bytes: invalid UTF-8 falls back to byte tokens).
 * add_bos prepends BOS. *ids is malloc'd by the call; the caller frees it. */
lm_status lm_tokenizer_encode(const lm_tokenizer *t, const char *text, size_t len, int add_bos, int32_t **ids,
                              size_t *n_ids);

/* The piece of one token in SentencePiece spelling: "\xe2\x96\x81" for spaces (also for
 * llama2.c files, whose plain spaces are respelled so both sources agree), "<0x0A>" for byte
 * tokens, control pieces as the file has them ("<s>" in GGUF, "\n<s>\n" in llama2.c).
 * "" (len 0) for an id outside the vocabulary. */
const char *lm_tokenizer_piece(const lm_tokenizer *t, int id, size_t *len);

/* The bytes one token contributes to decoded text, given the previous token (prev -1 at the
 * start): llama2.c's decode, except that control tokens contribute nothing. A leading space is
 * dropped after BOS or at the start when the vocabulary adds a dummy prefix; byte tokens become
 * their byte; control and unused tokens, and ids outside the vocabulary, give "" (len 0); an
 * unknown token gives its piece ("<unk>"). Returns a pointer valid until the tokenizer is
 * freed, or into buf (at least 8 bytes) for byte tokens. */
const char *lm_tokenizer_token_text(const lm_tokenizer *t, int prev, int id, char *buf, size_t *len);

/* Decodes ids to text; *text is malloc'd, NUL-terminated. Inverse of encode (without BOS). */
lm_status lm_tokenizer_decode(const lm_tokenizer *t, const int32_t *ids, size_t n_ids, char **text, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
