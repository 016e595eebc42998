/* main.c - `lumen <verb>`: dispatch and the helpers shared by the verbs. All logic is in liblumen. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

int cli_error(lm_status st) {
    const char *msg = lm_errmsg();
    fprintf(stderr, "lumen: error: %s\n", msg && *msg ? msg : lm_status_name(st));
    return CLI_FAIL;
}

int cli_usage_error(const char *verb, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "lumen %s: ", verb);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see `lumen %s --help`)\n", verb);
    return CLI_USAGE;
}

int cli_parse_int(const char *verb, const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        cli_usage_error(verb, "%s expects an integer in [%ld, %ld], got '%s'", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_float(const char *verb, const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        cli_usage_error(verb, "%s expects a number in [%g, %g], got '%s'", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_u64(const char *verb, const char *opt, const char *s, unsigned long long *out) {
    char *end;
    errno = 0;
    if (*s == '-') {
        cli_usage_error(verb, "%s expects a non-negative integer, got '%s'", opt, s);
        return -1;
    }
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end) {
        cli_usage_error(verb, "%s expects a non-negative integer, got '%s'", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

static lm_status load_tokenizer_file(const char *path, lm_tokenizer **out) { return lm_tokenizer_load(path, out); }

lm_status cli_load_tokenizer(const char *path, const char *tok_path, const lm_model *model, lm_tokenizer **owned,
                             const lm_tokenizer **out) {
    *owned = NULL;
    *out = NULL;
    if (tok_path) {
        lm_status st = load_tokenizer_file(tok_path, owned);
        if (st != LM_OK) return st;
        *out = *owned;
        return LM_OK;
    }
    if (model) {
        if (model->tokenizer) {
            *out = model->tokenizer;
            return LM_OK;
        }
        if (model->tokenizer_error) return lm_fail(LM_ERR_UNSUPPORTED, "%s", model->tokenizer_error);
        return lm_fail(LM_ERR_ARG, "%s: this model file holds no tokenizer; pass one with --tokenizer FILE", path);
    }
    lm_status st = load_tokenizer_file(path, owned);
    if (st != LM_OK) return st;
    *out = *owned;
    return LM_OK;
}

static void usage(FILE *f) {
    fprintf(f,
            "lumen %s - run, train and look inside transformer language models\n\n"
            "usage: lumen <command> [options]\n\n"
            "commands:\n"
            "  info MODEL                 architecture, sizes, dtypes and parameter count\n"
            "  tokenize MODEL TEXT        token ids and pieces of TEXT\n"
            "  generate MODEL -p PROMPT   generate text\n"
            "  eval MODEL FILE            cross-entropy and perplexity over a text file\n"
            "  convert MODEL -o DIR       save MODEL as a Hugging Face directory\n"
            "  train --data DIR -o OUT    train a model (resumable)\n"
            "  mc-eval MODEL FILE.json    multiple-choice accuracy (e.g. calendar arithmetic)\n"
            "  activations MODEL FILE --hook NAME -o DIR\n"
            "                             write activations at hook points as safetensors shards\n"
            "  bpe-train FILE... --vocab-size N -o tokenizer.json\n"
            "                             learn a byte-level BPE tokenizer from text\n"
            "  tokenize-data TOKENIZER FILE... -o DIR\n"
            "                             write token shards (train/validation split) for training\n"
            "  linearity MODEL FILE       how linear each block is (+ anisotropy, intrinsic dimension,\n"
            "                             logit lens)\n"
            "  prune MODEL --remove K --calib FILE -o OUT\n"
            "                             remove the K most linear blocks, save the smaller model\n"
            "  sae train MODEL FILE --hook NAME --d-sae N -o DIR\n"
            "                             train a sparse autoencoder on activations (resumable)\n"
            "  steer MODEL SAE -p PROMPT --feature ID (--clamp X | --add X)\n"
            "                             generate with an SAE feature clamped or added, next to the\n"
            "                             unsteered continuation\n\n"
            "MODEL is a Hugging Face directory (config.json + safetensors), a GGUF file or a\n"
            "llama2.c .bin checkpoint.\n"
            "Run `lumen <command> --help` for a command's options.\n",
            LUMEN_VERSION);
}

/* libgomp reads OMP_WAIT_POLICY once, when it is loaded. Its default spins idle threads for a
 * while; when another process holds a core (or ctest runs tests side by side), a spinning
 * barrier can make small models tens of times slower. Unless the user chose a policy, lumen
 * re-executes itself once with the passive one, which costs nothing measurable on large work. */
static void ensure_wait_policy(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;
    if (setenv("OMP_WAIT_POLICY", "PASSIVE", 0) != 0) return;
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc, say): carry on with the default policy */
}

int main(int argc, char **argv) {
    ensure_wait_policy(argv);
    if (argc < 2) {
        usage(stderr);
        return CLI_USAGE;
    }
    const char *verb = argv[1];
    if (!strcmp(verb, "--help") || !strcmp(verb, "-h") || !strcmp(verb, "help")) {
        usage(stdout);
        return CLI_OK;
    }
    if (!strcmp(verb, "--version")) {
        printf("lumen %s\n", LUMEN_VERSION);
        return CLI_OK;
    }
    int rc;
    if (!strcmp(verb, "info")) rc = cmd_info(argc - 1, argv + 1);
    else if (!strcmp(verb, "tokenize")) rc = cmd_tokenize(argc - 1, argv + 1);
    else if (!strcmp(verb, "generate")) rc = cmd_generate(argc - 1, argv + 1);
    else if (!strcmp(verb, "eval")) rc = cmd_eval(argc - 1, argv + 1);
    else if (!strcmp(verb, "convert")) rc = cmd_convert(argc - 1, argv + 1);
    else if (!strcmp(verb, "train")) rc = cmd_train(argc - 1, argv + 1);
    else if (!strcmp(verb, "mc-eval")) rc = cmd_mc_eval(argc - 1, argv + 1);
    else if (!strcmp(verb, "activations")) rc = cmd_activations(argc - 1, argv + 1);
    else if (!strcmp(verb, "bpe-train")) rc = cmd_bpe_train(argc - 1, argv + 1);
    else if (!strcmp(verb, "tokenize-data")) rc = cmd_tokenize_data(argc - 1, argv + 1);
    else if (!strcmp(verb, "linearity")) rc = cmd_linearity(argc - 1, argv + 1);
    else if (!strcmp(verb, "prune")) rc = cmd_prune(argc - 1, argv + 1);
    else if (!strcmp(verb, "sae")) rc = cmd_sae(argc - 1, argv + 1);
    else if (!strcmp(verb, "steer")) rc = cmd_steer(argc - 1, argv + 1);
    else {
        fprintf(stderr, "lumen: unknown command '%s'\n\n", verb);
        usage(stderr);
        return CLI_USAGE;
    }
    lm_tensor_release_scratch();
    return rc;
}

json_t *cli_json_text(const char *text, size_t len) {
    /* JSON strings must be valid UTF-8: invalid bytes become U+FFFD */
    char *buf = malloc(len * 3 + 1);
    if (!buf) return NULL;
    size_t o = 0;
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        size_t k = lm_utf8_len(s + i, len - i);
        if (k == 0) {
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(buf + o, s + i, k);
            o += k;
            i += k;
        }
    }
    json_t *j = json_stringn(buf, o);
    free(buf);
    return j;
}

int cli_print_json(json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) {
        fprintf(stderr, "lumen: error: could not build JSON output\n");
        return CLI_FAIL;
    }
    printf("%s\n", s);
    free(s);
    return CLI_OK;
}

int cli_progress_cb(void *ud, size_t done, size_t total) {
    lm_progress *p = ud;
    p->total = (double)total;
    lm_progress_update(p, (double)done);
    return 0;
}
