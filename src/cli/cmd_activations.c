/* cmd_activations.c - `lumen activations`: activations at hook points, as safetensors shards. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: lumen activations MODEL FILE --hook NAME [--hook NAME ...] -o DIR [options]\n\n"
            "Runs FILE through MODEL in consecutive windows of --ctx tokens (the windows `lumen eval`\n"
            "scores; one BOS at the start of the text when the tokenizer has one) and writes every\n"
            "token's activation at each hook to DIR/shard_NNNNN.safetensors: one F32 [tokens, d]\n"
            "tensor per hook, plus \"tokens\" and \"positions\" (I32). DIR/manifest.json records the\n"
            "job; running the same command again resumes after the last complete shard.\n\n"
            "Hooks (TransformerLens names): hook_embed, hook_pos_embed, blocks.L.hook_resid_pre,\n"
            "blocks.L.hook_attn_out, blocks.L.hook_resid_mid, blocks.L.hook_mlp_out,\n"
            "blocks.L.hook_resid_post, ln_final.hook_normalized\n\n"
            "  --ctx N            window length (default: the model's context)\n"
            "  --max-tokens N     at most N tokens of the file (default: all)\n"
            "  --batch N          windows per forward pass (default 4)\n"
            "  --shard-tokens N   tokens per shard (default 32768, rounded to whole windows)\n"
            "  --tokenizer FILE   tokenizer for formats that keep it apart\n"
            "  --threads T        threads (default: all cores)\n"
            "  --json             print a JSON summary\n");
}

int cmd_activations(int argc, char **argv) {
    const char *model_path = NULL, *file = NULL, *tok_path = NULL, *out = NULL;
    long ctx = 0, max_tokens = 0, batch = 4, threads = 0, shard = 32768;
    int json = 0, n_hooks = 0;
    const char **hooks = calloc((size_t)argc, sizeof *hooks);
    if (!hooks) return cli_error(lm_fail(LM_ERR_NOMEM, "out of memory"));
    int rc = CLI_OK;
    for (int i = 1; i < argc && rc == CLI_OK; i++) {
        const char *a = argv[i];
        int hv = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            free(hooks);
            return CLI_OK;
        } else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--hook") && hv) hooks[n_hooks++] = argv[++i];
        else if ((!strcmp(a, "-o") || !strcmp(a, "--out")) && hv) out = argv[++i];
        else if (!strcmp(a, "--tokenizer") && hv) tok_path = argv[++i];
        else if (!strcmp(a, "--ctx") && hv) {
            if (cli_parse_int("activations", a, argv[++i], 1, 1 << 24, &ctx)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--max-tokens") && hv) {
            if (cli_parse_int("activations", a, argv[++i], 1, 1L << 40, &max_tokens)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--batch") && hv) {
            if (cli_parse_int("activations", a, argv[++i], 1, 4096, &batch)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--shard-tokens") && hv) {
            if (cli_parse_int("activations", a, argv[++i], 1, 1L << 32, &shard)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--threads") && hv) {
            if (cli_parse_int("activations", a, argv[++i], 1, 1024, &threads)) rc = CLI_USAGE;
        } else if (a[0] == '-' && a[1]) rc = cli_usage_error("activations", "unknown option or missing value: %s", a);
        else if (!model_path) model_path = a;
        else if (!file) file = a;
        else rc = cli_usage_error("activations", "unexpected argument: %s", a);
    }
    if (rc == CLI_OK && (!model_path || !file)) rc = cli_usage_error("activations", "expected MODEL and FILE");
    if (rc == CLI_OK && !n_hooks) rc = cli_usage_error("activations", "give at least one --hook NAME");
    if (rc == CLI_OK && !out) rc = cli_usage_error("activations", "missing -o DIR");
    if (rc != CLI_OK) {
        free(hooks);
        return rc;
    }
    lm_set_threads((int)threads);
    lm_model *m = NULL;
    lm_status st = lm_model_load(model_path, &m);
    lm_tokenizer *owned = NULL;
    const lm_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    if (st == LM_OK) st = cli_load_tokenizer(model_path, tok_path, m, &owned, &tok);
    if (st == LM_OK) st = lm_tokenize_file(tok, file, 1, (size_t)max_tokens, &ids, &n);
    lm_harvest_result r;
    if (st == LM_OK) {
        lm_harvest_opts o = {hooks, n_hooks, (int)ctx, (int)batch, (size_t)shard, model_path, file};
        lm_progress p;
        lm_progress_begin(&p, "activations", "tok", (double)n, 1);
        st = lm_harvest(m, ids, n, &o, out, cli_progress_cb, &p, &r);
        lm_progress_end(&p);
    }
    if (st != LM_OK) rc = cli_error(st);
    else if (json) {
        json_t *j = json_object();
        json_object_set_new(j, "out", cli_json_text(out, strlen(out)));
        json_object_set_new(j, "tokens", json_integer((json_int_t)n));
        json_object_set_new(j, "shards_written", json_integer((json_int_t)r.n_shards));
        json_object_set_new(j, "shards_resumed", json_integer((json_int_t)r.n_shards_skipped));
        json_object_set_new(j, "tokens_per_s", json_real(r.seconds > 0 ? r.n_tokens / r.seconds : 0));
        rc = cli_print_json(j);
    } else {
        printf("wrote %zu shard(s) (%zu already there) for %zu tokens to %s\n", r.n_shards, r.n_shards_skipped, n, out);
    }
    free(ids);
    free(hooks);
    lm_tokenizer_free(owned);
    lm_model_free(m);
    return rc;
}
