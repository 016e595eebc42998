/* tokenizer.h - text <-> token ids: SentencePiece-style BPE (Llama) and merge-rank BPE (GPT-2, Llama-3, Qwen). */
#ifndef LUMEN_TOKENIZER_H
#define LUMEN_TOKENIZER_H

#include "lumen/base.h"
#include "lumen/format.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lm_tokenizer_kind {
    LM_TOK_SPM = 0,    /* SentencePiece-style: score-greedy merges, byte fallback, dummy prefix */
    LM_TOK_BPE = 1,    /* byte-level BPE, merges by rank (GPT-2, Llama-3, Qwen2) */
    LM_TOK_BPE_SPM = 2 /* merges by rank over SentencePiece-style "\xe2\x96\x81" text with byte fallback: a
                        * Hugging Face tokenizer.json of Llama-2 or Mistral */
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
/* The vocabulary stored in a GGUF file: tokenizer.ggml.model "llama" (tokens, scores, token_type,
 * bos/eos/unk ids, add_space_prefix) or "gpt2" (byte-level BPE: tokens, merges, token_type, whose
 * CONTROL and USER_DEFINED tokens are matched in the text as added tokens; tokenizer.ggml.pre
 * "default"/"gpt-2" or absent means GPT-2's regex, "llama-bpe"/"llama3" and "qwen2" their regexes,
 * others are refused). Messages name g->file.path. The tokenizer copies what it needs: g may be
 * closed afterwards. */
lm_status lm_tokenizer_from_gguf(const lm_gguf *g, lm_tokenizer **out);

/* GPT-2's original encoder.json + vocab.bpe, or the same formats named vocab.json + merges.txt:
 * a JSON object {piece: id} with ids 0..N-1, and one merge "a b" a line, by rank, after an
 * optional "#version" line. "<|endoftext|>" is a special token and both BOS and EOS. Pre-tokenised
 * with GPT-2's regex. */
lm_status lm_tokenizer_load_gpt2_files(const char *encoder_json, const char *vocab_bpe, lm_tokenizer **out);

/* A Hugging Face tokenizer.json with model.type "BPE": byte-level (pre_tokenizer ByteLevel, alone or
 * after Split regexes, as GPT-2, Llama-3 and Qwen2 write it) or SentencePiece-style (byte_fallback,
 * normalizer Prepend/Replace "\xe2\x96\x81" or pre_tokenizer Metaspace, as Llama-2 and Mistral write it).
 * Other model types, pre-tokenizers and normalizers give LM_ERR_UNSUPPORTED naming them. BOS/EOS
 * come from a tokenizer_config.json beside the file when there is one, else from the
 * post_processor and the usual token names. The NFC normaliser (Qwen2) is accepted but not applied:
 * text already in NFC, which is nearly all text, encodes as Hugging Face encodes it. */
lm_status lm_tokenizer_load_json(const char *tokenizer_json_path, lm_tokenizer **out);

/* A directory holding tokenizer.json, vocab.json + merges.txt, or encoder.json + vocab.bpe (tried in
 * that order). */
lm_status lm_tokenizer_load_dir(const char *dir, lm_tokenizer **out);
/* Any tokenizer source, told apart by content: a directory (lm_tokenizer_load_dir), a GGUF file,
 * a tokenizer.json, else a llama2.c tokenizer.bin. */
lm_status lm_tokenizer_load(const char *path, lm_tokenizer **out);

/* Writes a Hugging Face tokenizer.json (atomically) that the tokenizers library loads and encodes
 * as this tokenizer does. For merge-rank BPE (LM_TOK_BPE, LM_TOK_BPE_SPM); LM_ERR_UNSUPPORTED for
 * score-based SentencePiece vocabularies. */
lm_status lm_tokenizer_save_json(const lm_tokenizer *t, const char *path);

/* ---- training a byte-level BPE vocabulary (bpe_train.c) ---------------------------------------
 *
 * The text of the files (read in order, as bytes) is cut as the encoder cuts it: the special
 * tokens out first (they are never learned from), then GPT-2's pre-tokenizer regex (invalid
 * UTF-8 bytes are words of their own). Distinct words are counted, then the most frequent
 * adjacent pair of tokens, counted over all words, is merged into a new token, again and again,
 * until the vocabulary has vocab_size tokens or no pair occurs min_frequency times. Ties
 * between equally frequent pairs go to the smallest (left id, right id), so the result depends
 * only on the text and the options. A merge is applied in each word left to right ("aaa" with
 * (a, a) gives "aa a"), the order in which the encoder applies merges by rank.
 *
 * The vocabulary: ids 0..255 are the byte tokens (id b is byte b, spelled with GPT-2's
 * byte-to-character map), then one id per learned merge, in merge order, then the special
 * tokens, in the order given (as GPT-2 puts "<|endoftext|>" last). The first special token is
 * BOS and EOS. A merge that spells a string already in the vocabulary reuses its token (it is
 * still a merge), so there may be more merges than new ids. The result is an LM_TOK_BPE
 * tokenizer that lm_tokenizer_save_json writes as a tokenizer.json (ByteLevel pre-tokenizer
 * and decoder, special tokens as added_tokens) which Hugging Face's tokenizers library loads and
 * encodes the same way. tokenizer.json records no BOS/EOS: a reader finds them by name
 * ("<|endoftext|>", "<s>", "</s>", ...). */
typedef struct lm_bpe_train_opts {
    int vocab_size;                     /* all tokens: 256 bytes + learned + special */
    const char *const *special_tokens;  /* [n_special], non-empty UTF-8, distinct; may be NULL if n_special is 0 */
    size_t n_special;
    uint64_t min_frequency;             /* stop when the best pair occurs fewer times (0 or 1: while any pair) */
    size_t max_bytes;                   /* read at most this many bytes over all files; 0: all */
    /* Called with phase "counting" (bytes read of the total) and then "merging" (tokens learned
     * of those wanted); returning non-zero stops training with an error. May be NULL. */
    int (*progress)(void *ud, const char *phase, size_t done, size_t total);
    void *progress_ud;
} lm_bpe_train_opts;

typedef struct lm_bpe_train_stats {
    size_t bytes_read;
    uint64_t n_pretokens;   /* words cut by the pre-tokenizer, with repeats */
    size_t n_words;         /* distinct words of 2 bytes or more (those that can merge) */
    size_t n_merges;
    int vocab_size;         /* < opts.vocab_size when the text ran out of pairs */
    double seconds_counting, seconds_merging;
} lm_bpe_train_stats;

/* Trains a vocabulary on the files; *out is the new tokenizer (free with lm_tokenizer_free).
 * stats may be NULL. Errors: no files; an unreadable or empty file (named); vocab_size below
 * 256 + n_special or above 2^24; empty, repeated or non-UTF-8 special tokens. Running out of
 * pairs is not an error: the vocabulary is then smaller (stats->vocab_size says how big). */
lm_status lm_bpe_train_ex(const char *const *files, size_t n_files, const lm_bpe_train_opts *opts, lm_tokenizer **out,
                          lm_bpe_train_stats *stats);
/* The same with default options otherwise. */
lm_status lm_bpe_train(const char *const *files, size_t n_files, int vocab_size, const char *const *special_tokens,
                       size_t n_special, lm_tokenizer **out);

void lm_tokenizer_free(lm_tokenizer *t); /* accepts NULL */

lm_tokenizer_kind lm_tokenizer_get_kind(const lm_tokenizer *t);
int lm_tokenizer_vocab_size(const lm_tokenizer *t);
int lm_tokenizer_bos(const lm_tokenizer *t); /* -1 if none */
int lm_tokenizer_eos(const lm_tokenizer *t); /* -1 if none */
/* Whether text for this tokenizer conventionally starts with BOS: yes for SentencePiece-style
 * vocabularies (Llama 1/2, Mistral), no for byte-level BPE (GPT-2 adds none). */
int lm_tokenizer_wants_bos(const lm_tokenizer *t);

/* Encodes len bytes of text (any bytes: invalid UTF-8 falls back to byte tokens).
 * add_bos prepends BOS. *ids is malloc'd by the call; the caller frees it.
 * Same as lm_tokenizer_encode_ex with LM_TOK_ADD_BOS when add_bos, so special tokens written in
 * the text are recognised (as Hugging Face tokenizers do). */
lm_status lm_tokenizer_encode(const lm_tokenizer *t, const char *text, size_t len, int add_bos, int32_t **ids,
                              size_t *n_ids);

/* Flags of lm_tokenizer_encode_ex. */
enum {
    LM_TOK_ADD_BOS = 1u,   /* prepend BOS (error if the vocabulary has none) */
    LM_TOK_NO_SPECIAL = 2u /* special tokens written in the text are plain text (tiktoken's
                            * encode_ordinary); non-special added tokens are still matched */
};

/* Merge-rank BPE: added tokens are found in the text first (leftmost, then longest), the rest is
 * normalised and pre-tokenised; byte-level vocabularies split it with the PCRE2 regexes of the
 * pre-tokenizer. Invalid UTF-8, which those regexes cannot look at, is cut into its valid runs,
 * each pre-tokenised as usual, and every invalid byte becomes a pre-token of its own, so that
 * decode(encode(x)) == x byte for byte. Score-based SentencePiece vocabularies (LM_TOK_SPM) have
 * no added-token list: flags other than LM_TOK_ADD_BOS change nothing there. */
lm_status lm_tokenizer_encode_ex(const lm_tokenizer *t, const char *text, size_t len, unsigned flags,
                                 int32_t **ids, size_t *n_ids);

/* The piece of one token in SentencePiece spelling: "\xe2\x96\x81" for spaces (also for
 * llama2.c files, whose plain spaces are respelled so both sources agree), "<0x0A>" for byte
 * tokens, control pieces as the file has them ("<s>" in GGUF, "\n<s>\n" in llama2.c).
 * Byte-level BPE: the piece as the vocabulary spells it ("\xc4\xa0hello" for " hello").
 * "" (len 0) for an id outside the vocabulary. */
const char *lm_tokenizer_piece(const lm_tokenizer *t, int id, size_t *len);

/* The bytes one token contributes to decoded text, given the previous token (prev -1 at the
 * start): llama2.c's decode, except that control tokens contribute nothing. Byte-level BPE: the
 * token's bytes, which may be part of a UTF-8 character (a streaming caller holds them back);
 * special tokens contribute nothing, non-special added tokens their text. A leading space is
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
