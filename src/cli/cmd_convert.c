/* cmd_convert.c - `lumen convert`: any supported checkpoint to a Hugging Face directory. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: lumen convert MODEL -o DIR [--tokenizer FILE]\n\n"
            "Writes MODEL (llama2.c .bin, GGUF, or a Hugging Face directory) as a Hugging Face\n"
            "directory: config.json, model.safetensors and, when the tokenizer can be expressed as\n"
            "one, tokenizer.json. Each file is written atomically. Weights keep their dtype\n"
            "(quantised GGUF weights are written as F32); interleaved-RoPE Q/K rows are permuted to\n"
            "the rotate-half layout transformers uses.\n");
}

int cmd_convert(int argc, char **argv) {
    const char *model_path = NULL, *out = NULL, *tok_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return CLI_OK;
        } else if ((!strcmp(a, "-o") || !strcmp(a, "--out")) && i + 1 < argc) out = argv[++i];
        else if (!strcmp(a, "--tokenizer") && i + 1 < argc) tok_path = argv[++i];
        else if (a[0] == '-' && a[1]) return cli_usage_error("convert", "unknown option or missing value: %s", a);
        else if (!model_path) model_path = a;
        else return cli_usage_error("convert", "unexpected argument: %s", a);
    }
    if (!model_path || !out) return cli_usage_error("convert", "expected MODEL and -o DIR");
    lm_model *m = NULL;
    lm_status st = lm_model_load(model_path, &m);
    if (st != LM_OK) return cli_error(st);
    lm_tokenizer *owned = NULL;
    const lm_tokenizer *tok = NULL;
    if (tok_path || m->tokenizer) st = cli_load_tokenizer(model_path, tok_path, m, &owned, &tok);
    const lm_tokenizer *save_tok = tok;
    if (st == LM_OK && tok && lm_tokenizer_get_kind(tok) == LM_TOK_SPM) {
        fprintf(stderr, "lumen convert: note: a score-based SentencePiece vocabulary cannot be written as "
                        "tokenizer.json; writing the weights and config only\n");
        save_tok = NULL;
    }
    if (st == LM_OK) st = lm_model_save_hf(m, save_tok, out);
    int rc = st == LM_OK ? CLI_OK : cli_error(st);
    if (rc == CLI_OK) printf("wrote %s (config.json, model.safetensors%s)\n", out, save_tok ? ", tokenizer.json" : "");
    lm_tokenizer_free(owned);
    lm_model_free(m);
    return rc;
}
