/* cmd_eval.c - `lumen eval`: mean cross-entropy and perplexity of a model over a text file. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: lumen eval MODEL FILE [options]\n\n"
            "Mean next-token cross-entropy (nats) and perplexity over FILE, cut into consecutive\n"
            "windows of --ctx tokens; in each window every token after the first is predicted from\n"
            "the ones before it. The text gets one BOS at its start when the tokenizer has one.\n\n"
            "  --ctx N           window length (default: the model's context)\n"
            "  --max-tokens N    score at most N tokens of the file (default: all)\n"
            "  --batch N         windows per forward pass (default 4)\n"
            "  --tokenizer FILE  tokenizer for formats that keep it apart\n"
            "  --threads T       threads (default: all cores)\n"
            "  --json            print the result as JSON\n");
}

int cmd_eval(int argc, char **argv) {
    const char *model_path = NULL, *file = NULL, *tok_path = NULL;
    long ctx = 0, max_tokens = 0, batch = 4, threads = 0;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int hv = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return CLI_OK;
        } else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--tokenizer") && hv) tok_path = argv[++i];
        else if (!strcmp(a, "--ctx") && hv) {
            if (cli_parse_int("eval", a, argv[++i], 2, 1 << 24, &ctx)) return CLI_USAGE;
        } else if (!strcmp(a, "--max-tokens") && hv) {
            if (cli_parse_int("eval", a, argv[++i], 2, 1L << 40, &max_tokens)) return CLI_USAGE;
        } else if (!strcmp(a, "--batch") && hv) {
            if (cli_parse_int("eval", a, argv[++i], 1, 4096, &batch)) return CLI_USAGE;
        } else if (!strcmp(a, "--threads") && hv) {
            if (cli_parse_int("eval", a, argv[++i], 1, 1024, &threads)) return CLI_USAGE;
        } else if (a[0] == '-' && a[1]) return cli_usage_error("eval", "unknown option or missing value: %s", a);
        else if (!model_path) model_path = a;
        else if (!file) file = a;
        else return cli_usage_error("eval", "unexpected argument: %s", a);
    }
    if (!model_path || !file) return cli_usage_error("eval", "expected MODEL and FILE");
    lm_set_threads((int)threads);
    lm_model *m = NULL;
    lm_status st = lm_model_load(model_path, &m);
    if (st != LM_OK) return cli_error(st);
    lm_tokenizer *owned = NULL;
    const lm_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    st = cli_load_tokenizer(model_path, tok_path, m, &owned, &tok);
    if (st == LM_OK) st = lm_tokenize_file(tok, file, 1, (size_t)max_tokens, &ids, &n);
    lm_eval_result r;
    if (st == LM_OK) {
        lm_progress p;
        lm_progress_begin(&p, "eval", "tok", (double)n, isatty(STDERR_FILENO) || n > 100000);
        st = lm_eval_ce(m, ids, n, (int)ctx, (int)batch, cli_progress_cb, &p, &r);
        lm_progress_end(&p);
    }
    int rc = CLI_OK;
    if (st != LM_OK) rc = cli_error(st);
    else if (json) {
        json_t *j = json_object();
        json_object_set_new(j, "model", cli_json_text(model_path, strlen(model_path)));
        json_object_set_new(j, "file", cli_json_text(file, strlen(file)));
        json_object_set_new(j, "tokens", json_integer((json_int_t)n));
        json_object_set_new(j, "predicted", json_integer((json_int_t)r.n_predicted));
        json_object_set_new(j, "windows", json_integer((json_int_t)r.n_windows));
        json_object_set_new(j, "ctx", json_integer(ctx > 1 ? ctx : m->cfg.seq_len));
        json_object_set_new(j, "cross_entropy", json_real(r.mean_ce));
        json_object_set_new(j, "perplexity", json_real(r.perplexity));
        json_object_set_new(j, "tokens_per_s", json_real(r.seconds > 0 ? n / r.seconds : 0));
        rc = cli_print_json(j);
    } else {
        printf("tokens          %zu (%zu windows, %zu predicted)\n", n, r.n_windows, r.n_predicted);
        printf("cross-entropy   %.6f nats/token\n", r.mean_ce);
        printf("perplexity      %.4f\n", r.perplexity);
        printf("speed           %.1f tokens/s\n", r.seconds > 0 ? n / r.seconds : 0);
    }
    free(ids);
    lm_tokenizer_free(owned);
    lm_model_free(m);
    return rc;
}
