/* cli.h - shared helpers of the `lumen` command's verbs (argument parsing, error printing). */
#ifndef LUMEN_CLI_H
#define LUMEN_CLI_H

#include <jansson.h>

#include "lumen/lumen.h"

/* Exit codes: 0 ok, 1 runtime failure (bad file, ...), 2 usage error. */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

int cli_error(lm_status st);                          /* prints lm_errmsg(); returns CLI_FAIL */
int cli_usage_error(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Parses a number option value; returns 0 on success, prints an error otherwise. */
int cli_parse_int(const char *verb, const char *opt, const char *s, long lo, long hi, long *out);
int cli_parse_float(const char *verb, const char *opt, const char *s, double lo, double hi, double *out);
int cli_parse_u64(const char *verb, const char *opt, const char *s, unsigned long long *out);

/* A tokenizer for a model path: --tokenizer FILE if given, else the one inside the model file,
 * else, if path itself is a tokenizer file, that. model may be NULL. */
lm_status cli_load_tokenizer(const char *path, const char *tok_path, const lm_model *model, lm_tokenizer **owned,
                             const lm_tokenizer **out);

/* A JSON string of text, with invalid UTF-8 bytes replaced by U+FFFD. */
json_t *cli_json_text(const char *text, size_t len);
/* Prints j compactly on one line and releases it. */
int cli_print_json(json_t *j);

int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_mc_eval(int argc, char **argv);
int cmd_activations(int argc, char **argv);
int cmd_bpe_train(int argc, char **argv);
int cmd_tokenize_data(int argc, char **argv);
int cmd_linearity(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_sae(int argc, char **argv);
int cmd_steer(int argc, char **argv);
/* A progress callback printing a bar (terminal) or lines (log) on stderr; ud is an lm_progress. */
int cli_progress_cb(void *ud, size_t done, size_t total);

#endif
