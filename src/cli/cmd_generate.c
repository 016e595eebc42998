/* cmd_generate.c - `lumen generate`: sample a continuation of a prompt and stream it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: lumen generate MODEL -p PROMPT [options]\n\n"
            "  -p, --prompt TEXT     prompt (\"\" starts from BOS alone)\n"
            "  -n, --tokens N        new tokens to generate at most (default 256)\n"
            "  -t, --temp T          temperature; 0 = greedy (default 1.0)\n"
            "  --top-k K             keep the K most likely tokens (default 0 = off)\n"
            "  --top-p P             nucleus sampling mass (default 0.9; 1 = off)\n"
            "  --seed S              random seed (default 42)\n"
            "  --threads T           threads (default: all cores)\n"
            "  --tokenizer FILE      tokenizer for formats that keep it apart (llama2.c tokenizer.bin, GGUF)\n"
            "  --ignore-eos          do not stop at end-of-sequence tokens\n"
            "  --stats               print prompt/decode speed to stderr\n"
            "  --json                print one JSON object instead of streaming text\n");
}

typedef struct gen_out {
    int json;
    char *text;
    size_t len, cap;
} gen_out;

static int on_token(void *ud, int token, const char *text, size_t len, int is_prompt) {
    (void)token;
    (void)is_prompt;
    gen_out *o = ud;
    if (!o->json) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
        return 0;
    }
    if (o->len + len + 1 > o->cap) {
        size_t nc = (o->cap + len + 1) * 2;
        char *p = realloc(o->text, nc);
        if (!p) return 1;
        o->text = p;
        o->cap = nc;
    }
    memcpy(o->text + o->len, text, len);
    o->len += len;
    o->text[o->len] = 0;
    return 0;
}

int cmd_generate(int argc, char **argv) {
    const char *model_path = NULL, *prompt = NULL, *tok_path = NULL;
    long n_new = 256, top_k = 0, threads = 0;
    double temp = 1.0, top_p = 0.9;
    unsigned long long seed = 42;
    int json = 0, stats = 0, ignore_eos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return CLI_OK;
        } else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--stats")) stats = 1;
        else if (!strcmp(a, "--ignore-eos")) ignore_eos = 1;
        else if ((!strcmp(a, "-p") || !strcmp(a, "--prompt")) && has_val) prompt = argv[++i];
        else if (!strcmp(a, "--tokenizer") && has_val) tok_path = argv[++i];
        else if ((!strcmp(a, "-n") || !strcmp(a, "--tokens")) && has_val) {
            if (cli_parse_int("generate", a, argv[++i], 0, 1 << 24, &n_new)) return CLI_USAGE;
        } else if ((!strcmp(a, "-t") || !strcmp(a, "--temp")) && has_val) {
            if (cli_parse_float("generate", a, argv[++i], 0, 100, &temp)) return CLI_USAGE;
        } else if (!strcmp(a, "--top-k") && has_val) {
            if (cli_parse_int("generate", a, argv[++i], 0, 1 << 24, &top_k)) return CLI_USAGE;
        } else if (!strcmp(a, "--top-p") && has_val) {
            if (cli_parse_float("generate", a, argv[++i], 1e-6, 1, &top_p)) return CLI_USAGE;
        } else if (!strcmp(a, "--seed") && has_val) {
            if (cli_parse_u64("generate", a, argv[++i], &seed)) return CLI_USAGE;
        } else if (!strcmp(a, "--threads") && has_val) {
            if (cli_parse_int("generate", a, argv[++i], 1, 1024, &threads)) return CLI_USAGE;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error("generate", "unknown option or missing value: %s", a);
        } else if (!model_path) model_path = a;
        else return cli_usage_error("generate", "unexpected argument: %s", a);
    }
    if (!model_path) return cli_usage_error("generate", "missing MODEL");
    if (!prompt) return cli_usage_error("generate", "missing -p PROMPT (use -p \"\" to start from BOS alone)");
    lm_set_threads((int)threads);
    lm_model *m = NULL;
    lm_status st = lm_model_load(model_path, &m);
    if (st != LM_OK) return cli_error(st);
    lm_tokenizer *owned = NULL;
    const lm_tokenizer *tok = NULL;
    st = cli_load_tokenizer(model_path, tok_path, m, &owned, &tok);
    if (st == LM_OK && lm_tokenizer_vocab_size(tok) > m->cfg.vocab_size)
        st = lm_fail(LM_ERR_ARG, "%s: tokenizer has %d tokens but the model only %d", tok_path ? tok_path : model_path,
                     lm_tokenizer_vocab_size(tok), m->cfg.vocab_size);
    if (st != LM_OK) {
        lm_model_free(m);
        return cli_error(st);
    }
    lm_generate_opts o = {(int)n_new, (float)temp, (int)top_k, (float)top_p, seed, ignore_eos};
    gen_out out = {.json = json};
    lm_generate_result res;
    st = lm_generate(m, tok, prompt, strlen(prompt), &o, on_token, &out, &res);
    int rc = CLI_OK;
    if (st != LM_OK) {
        if (!json) printf("\n");
        rc = cli_error(st);
    } else if (json) {
        json_t *ids = json_array();
        for (size_t i = 0; i < res.n_tokens; i++) json_array_append_new(ids, json_integer(res.tokens[i]));
        json_t *j = json_object();
        json_object_set_new(j, "model", cli_json_text(model_path, strlen(model_path)));
        json_object_set_new(j, "text", cli_json_text(out.text ? out.text : "", out.len));
        json_object_set_new(j, "tokens", ids);
        json_object_set_new(j, "prompt_tokens", json_integer(res.n_prompt));
        json_object_set_new(j, "generated_tokens", json_integer(res.n_generated));
        json_object_set_new(j, "stopped_at_eos", json_boolean(res.stopped_at_eos));
        json_object_set_new(j, "prefill_tokens_per_s",
                            json_real(res.prefill_seconds > 0 ? res.n_prompt / res.prefill_seconds : 0.0));
        json_object_set_new(j, "decode_tokens_per_s",
                            json_real(res.decode_seconds > 0 ? res.n_generated / res.decode_seconds : 0.0));
        rc = cli_print_json(j);
    } else {
        printf("\n");
    }
    if (st == LM_OK && stats)
        fprintf(stderr, "prompt: %d tokens, %.1f tok/s; generated: %d tokens, %.1f tok/s\n", res.n_prompt,
                res.prefill_seconds > 0 ? res.n_prompt / res.prefill_seconds : 0.0, res.n_generated,
                res.decode_seconds > 0 ? res.n_generated / res.decode_seconds : 0.0);
    lm_generate_result_free(&res);
    free(out.text);
    lm_tokenizer_free(owned);
    lm_model_free(m);
    return rc;
}
