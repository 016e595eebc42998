/* cmd_prune.c - `lumen prune`: remove the most linear blocks of a model and save the smaller one. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: lumen prune MODEL --remove K --calib FILE [--eval FILE] -o OUT [options]\n\n"
            "Pruning by block removal, after Razzhigaev et al. (2024), \"Your Transformer is Secretly\n"
            "Linear\". The linearity profile of MODEL on the --calib text (as `lumen linearity` computes\n"
            "it) ranks the blocks by the linearity of h_l -> h_{l+1} (with the residual); the K most\n"
            "linear are removed and the model with L - K blocks is written to OUT as a Hugging Face\n"
            "directory (config.json, model.safetensors, tokenizer.json), which loads as an ordinary\n"
            "smaller model. With --eval, the perplexity of MODEL and of the saved model (loaded back\n"
            "from OUT) on that text, over the windows of `lumen eval`.\n\n"
            "  --remove K         blocks to remove (1 <= K < layers)\n"
            "  --calib FILE       text to rank the blocks on\n"
            "  --eval FILE        text to measure perplexity on, before and after\n"
            "  --tokens N         tokens of each file to use (default 4096)\n"
            "  --ctx N            window length (default: the model's context)\n"
            "  --batch N          windows per forward pass (default 4)\n"
            "  -o, --out DIR      where to write the pruned model\n"
            "  --tokenizer FILE   tokenizer for formats that keep it apart\n"
            "  --threads T        threads (default: all cores)\n"
            "  --json             print {\"model\", \"out\", \"layers\", \"layers_after\", \"removed\": [...],\n"
            "                     \"blocks\": [{\"layer\", \"linearity\", \"linearity_no_residual\"}],\n"
            "                     \"eval\": {\"before\": {\"ce\", \"perplexity\"}, \"after\": {...}, \"tokens\"}}\n"
            "  --linearize K      replace blocks by linear maps: not supported yet\n");
}

static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int cmd_prune(int argc, char **argv) {
    const char *model_path = NULL, *calib = NULL, *eval = NULL, *out = NULL, *tok_path = NULL;
    long remove = 0, ctx = 0, tokens = 4096, batch = 4, threads = 0;
    int json = 0, rc = CLI_OK;
    for (int i = 1; i < argc && rc == CLI_OK; i++) {
        const char *a = argv[i];
        int hv = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return CLI_OK;
        } else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--linearize"))
            rc = cli_usage_error("prune", "--linearize (replacing blocks by linear maps) is not supported yet; "
                                          "--remove K removes the K most linear blocks");
        else if (!strcmp(a, "--calib") && hv) calib = argv[++i];
        else if (!strcmp(a, "--eval") && hv) eval = argv[++i];
        else if ((!strcmp(a, "-o") || !strcmp(a, "--out")) && hv) out = argv[++i];
        else if (!strcmp(a, "--tokenizer") && hv) tok_path = argv[++i];
        else if (!strcmp(a, "--remove") && hv) {
            if (cli_parse_int("prune", a, argv[++i], 1, 1 << 20, &remove)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--ctx") && hv) {
            if (cli_parse_int("prune", a, argv[++i], 2, 1 << 24, &ctx)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--tokens") && hv) {
            if (cli_parse_int("prune", a, argv[++i], 3, 1L << 32, &tokens)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--batch") && hv) {
            if (cli_parse_int("prune", a, argv[++i], 1, 4096, &batch)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--threads") && hv) {
            if (cli_parse_int("prune", a, argv[++i], 1, 1024, &threads)) rc = CLI_USAGE;
        } else if (a[0] == '-' && a[1]) rc = cli_usage_error("prune", "unknown option or missing value: %s", a);
        else if (!model_path) model_path = a;
        else rc = cli_usage_error("prune", "unexpected argument: %s", a);
    }
    if (rc == CLI_OK && !model_path) rc = cli_usage_error("prune", "expected MODEL");
    if (rc == CLI_OK && !remove) rc = cli_usage_error("prune", "expected --remove K");
    if (rc == CLI_OK && !calib) rc = cli_usage_error("prune", "expected --calib FILE (the text to rank blocks on)");
    if (rc == CLI_OK && !out) rc = cli_usage_error("prune", "expected -o OUT");
    if (rc != CLI_OK) return rc;
    lm_set_threads((int)threads);

    lm_model *m = NULL, *view = NULL, *pruned = NULL;
    lm_tokenizer *owned = NULL;
    const lm_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    lm_linearity_result r = {0};
    int *blocks = NULL;
    lm_eval_result before = {0}, after = {0};
    lm_status st = lm_model_load(model_path, &m);
    if (st == LM_OK) st = cli_load_tokenizer(model_path, tok_path, m, &owned, &tok);
    if (st == LM_OK && remove >= m->cfg.n_layers)
        st = lm_fail(LM_ERR_ARG, "%s: cannot remove %ld of its %d blocks (at least one must stay)", model_path, remove,
                     m->cfg.n_layers);
    if (st == LM_OK && ctx > m->cfg.seq_len)
        st = lm_fail(LM_ERR_RANGE, "--ctx %ld exceeds the model's context of %d", ctx, m->cfg.seq_len);
    int use_ctx = m && ctx > 0 ? (int)ctx : m ? m->cfg.seq_len : 0;
    /* 1. rank the blocks on the calibration text */
    if (st == LM_OK) st = lm_tokenize_file(tok, calib, 1, (size_t)tokens, &ids, &n);
    if (st == LM_OK) {
        lm_progress p;
        /* the intrinsic dimension (O(n^2 d)) is not needed: three rows keep it trivial */
        lm_linearity_opts o = {use_ctx, (int)batch, 1, -1, 3, cli_progress_cb, &p, NULL, NULL};
        lm_progress_begin(&p, "calibrate", "tok", (double)n, 1);
        st = lm_linearity_profile(m, ids, n, &o, &r);
        lm_progress_end(&p);
    }
    free(ids);
    ids = NULL;
    if (st == LM_OK) {
        blocks = malloc((size_t)remove * sizeof *blocks);
        st = blocks ? lm_prune_choose(&r, (int)remove, blocks) : lm_fail(LM_ERR_NOMEM, "out of memory");
    }
    /* 2. drop them and save */
    if (st == LM_OK) st = lm_model_drop_blocks(m, blocks, (int)remove, &view);
    if (st == LM_OK) st = lm_model_save_hf(view, tok, out);
    /* 3. perplexity of the original and of the saved model as it loads back */
    if (st == LM_OK && eval) {
        st = lm_tokenize_file(tok, eval, 1, (size_t)tokens, &ids, &n);
        if (st == LM_OK) {
            lm_progress p;
            lm_progress_begin(&p, "eval before", "tok", (double)n, 1);
            st = lm_eval_ce(m, ids, n, use_ctx, (int)batch, cli_progress_cb, &p, &before);
            lm_progress_end(&p);
        }
        if (st == LM_OK) st = lm_model_load(out, &pruned);
        if (st == LM_OK && pruned->cfg.n_layers != m->cfg.n_layers - (int)remove)
            st = lm_fail(LM_ERR_FORMAT, "%s: saved with %d layers, expected %d", out, pruned->cfg.n_layers,
                         m->cfg.n_layers - (int)remove);
        if (st == LM_OK) {
            lm_progress p;
            lm_progress_begin(&p, "eval after", "tok", (double)n, 1);
            st = lm_eval_ce(pruned, ids, n, use_ctx, (int)batch, cli_progress_cb, &p, &after);
            lm_progress_end(&p);
        }
    }
    if (st != LM_OK) rc = cli_error(st);
    else {
        int L = m->cfg.n_layers;
        int *sorted = malloc((size_t)remove * sizeof *sorted);
        if (sorted) {
            memcpy(sorted, blocks, (size_t)remove * sizeof *sorted);
            qsort(sorted, (size_t)remove, sizeof *sorted, cmp_int);
        }
        if (json) {
            json_t *j = json_object(), *rem = json_array(), *bl = json_array();
            json_object_set_new(j, "model", cli_json_text(model_path, strlen(model_path)));
            json_object_set_new(j, "out", cli_json_text(out, strlen(out)));
            json_object_set_new(j, "calib", cli_json_text(calib, strlen(calib)));
            json_object_set_new(j, "calib_tokens", json_integer((json_int_t)r.n_tokens));
            json_object_set_new(j, "ctx", json_integer(use_ctx));
            json_object_set_new(j, "layers", json_integer(L));
            json_object_set_new(j, "layers_after", json_integer(L - remove));
            json_object_set_new(j, "ranked_by", json_string("linearity (with residual) of h_l -> h_{l+1}, highest removed"));
            for (long i = 0; i < remove; i++) json_array_append_new(rem, json_integer(blocks[i]));
            json_object_set_new(j, "removed", rem);
            for (int i = 0; i < L; i++)
                json_array_append_new(bl, json_pack("{s:i, s:o, s:o}", "layer", i, "linearity", num(r.linearity[i]),
                                                    "linearity_no_residual", num(r.linearity_no_residual[i])));
            json_object_set_new(j, "blocks", bl);
            if (eval)
                json_object_set_new(
                    j, "eval",
                    json_pack("{s:o, s:I, s:I, s:{s:f, s:f}, s:{s:f, s:f}}", "file", cli_json_text(eval, strlen(eval)),
                              "tokens", (json_int_t)n, "predicted", (json_int_t)before.n_predicted, "before", "ce",
                              before.mean_ce, "perplexity", before.perplexity, "after", "ce", after.mean_ce,
                              "perplexity", after.perplexity));
            rc = cli_print_json(j);
        } else {
            printf("%s: %d blocks; linearity on %zu tokens of %s (windows of %d)\n\n", model_path, L, r.n_tokens, calib,
                   use_ctx);
            printf("%6s  %10s  %12s\n", "block", "linearity", "no-residual");
            for (int i = 0; i < L; i++) {
                int gone = 0;
                for (long k = 0; k < remove; k++) gone |= blocks[k] == i;
                printf("%6d  %10.6f  %12.6f%s\n", i, r.linearity[i], r.linearity_no_residual[i],
                       gone ? "  removed" : "");
            }
            printf("\nremoved %ld block(s):", remove);
            for (long k = 0; sorted && k < remove; k++) printf(" %d", sorted[k]);
            printf("; wrote %s (%d blocks)\n", out, L - (int)remove);
            if (eval)
                printf("perplexity on %s (%zu predictions): %.4f -> %.4f  (cross-entropy %.4f -> %.4f nats)\n", eval,
                       before.n_predicted, before.perplexity, after.perplexity, before.mean_ce, after.mean_ce);
        }
        free(sorted);
    }
    free(ids);
    free(blocks);
    lm_linearity_result_free(&r);
    lm_model_free(pruned);
    lm_model_view_free(view);
    lm_tokenizer_free(owned);
    lm_model_free(m);
    return rc;
}
