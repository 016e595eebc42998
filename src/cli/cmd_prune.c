/* cmd_prune.c - `lumen prune`: remove the most linear blocks of a model and save the smaller one. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: lumen prune MODEL (--remove K | --linearize K) --calib FILE [--eval FILE] -o OUT [options]\n\n"
            "Pruning after Razzhigaev et al. (2024), \"Your Transformer is Secretly Linear\". The linearity\n"
            "profile of MODEL on the --calib text (as `lumen linearity` computes it) ranks the blocks by\n"
            "the linearity of h_l -> h_{l+1} (with the residual). --remove K drops the K most linear blocks\n"
            "(OUT loads anywhere as an ordinary smaller model); --linearize K replaces each of them by the\n"
            "affine map h -> h W^T + b fitted by least squares on the calibration states (in increasing\n"
            "block order, each on the states of the model with the earlier replacements in place; OUT then\n"
            "loads in lumen only). OUT is a Hugging Face directory (config.json, model.safetensors,\n"
            "tokenizer.json). With --eval, the perplexity of MODEL and of the saved model (loaded back from\n"
            "OUT) on that text, over the windows of `lumen eval`.\n\n"
            "  --remove K         blocks to remove (1 <= K < layers)\n"
            "  --linearize K      blocks to replace by fitted linear maps (1 <= K < layers)\n"
            "  --calib FILE       text to rank the blocks on (and to fit the linear maps on)\n"
            "  --eval FILE        text to measure perplexity on, before and after\n"
            "  --distill-steps N  after the least-squares fit, N Adam steps on the MSE to the block's\n"
            "                     output over calibration mini-batches (kept only if the MSE drops)\n"
            "  --distill-lr LR    Adam learning rate (default 1e-4)\n"
            "  --distill-batch N  rows per Adam step (default 256)\n"
            "  --seed S           shuffling seed of the distillation (default 1)\n"
            "  --tokens N         tokens of each file to use (default 4096)\n"
            "  --ctx N            window length (default: the model's context)\n"
            "  --batch N          windows per forward pass (default 4)\n"
            "  -o, --out DIR      where to write the pruned model\n"
            "  --tokenizer FILE   tokenizer for formats that keep it apart\n"
            "  --threads T        threads (default: all cores)\n"
            "  --json             print {\"model\", \"out\", \"mode\", \"layers\", \"layers_after\", \"removed\" |\n"
            "                     \"linearized\": [...], \"fits\": [...], \"blocks\": [{\"layer\", \"linearity\",\n"
            "                     \"linearity_no_residual\"}], \"eval\": {\"before\": {\"ce\", \"perplexity\"}, \"after\"}}\n");
}

static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static const char *method_name(lm_fit_method m) { return m == LM_FIT_CHOLESKY ? "cholesky" : "svd"; }

int cmd_prune(int argc, char **argv) {
    const char *model_path = NULL, *calib = NULL, *eval = NULL, *out = NULL, *tok_path = NULL;
    long remove = 0, linearize = 0, ctx = 0, tokens = 4096, batch = 4, threads = 0, dsteps = 0, dbatch = 256;
    double dlr = 1e-4;
    unsigned long long seed = 1;
    int json = 0, rc = CLI_OK, have_dlr = 0, have_dbatch = 0;
    for (int i = 1; i < argc && rc == CLI_OK; i++) {
        const char *a = argv[i];
        int hv = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return CLI_OK;
        } else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--calib") && hv) calib = argv[++i];
        else if (!strcmp(a, "--eval") && hv) eval = argv[++i];
        else if ((!strcmp(a, "-o") || !strcmp(a, "--out")) && hv) out = argv[++i];
        else if (!strcmp(a, "--tokenizer") && hv) tok_path = argv[++i];
        else if (!strcmp(a, "--remove") && hv) {
            if (cli_parse_int("prune", a, argv[++i], 1, 1 << 20, &remove)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--linearize") && hv) {
            if (cli_parse_int("prune", a, argv[++i], 1, 1 << 20, &linearize)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--distill-steps") && hv) {
            if (cli_parse_int("prune", a, argv[++i], 0, 1 << 24, &dsteps)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--distill-batch") && hv) {
            have_dbatch = 1;
            if (cli_parse_int("prune", a, argv[++i], 1, 1 << 24, &dbatch)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--distill-lr") && hv) {
            have_dlr = 1;
            if (cli_parse_float("prune", a, argv[++i], 1e-12, 1.0, &dlr)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--seed") && hv) {
            if (cli_parse_u64("prune", a, argv[++i], &seed)) rc = CLI_USAGE;
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
    if (rc == CLI_OK && !remove && !linearize) rc = cli_usage_error("prune", "expected --remove K or --linearize K");
    if (rc == CLI_OK && remove && linearize)
        rc = cli_usage_error("prune", "--remove and --linearize exclude each other: give one");
    if (rc == CLI_OK && !linearize && (dsteps || have_dlr || have_dbatch))
        rc = cli_usage_error("prune", "--distill-steps, --distill-lr and --distill-batch go with --linearize");
    if (rc == CLI_OK && !calib) rc = cli_usage_error("prune", "expected --calib FILE (the text to rank blocks on)");
    if (rc == CLI_OK && !out) rc = cli_usage_error("prune", "expected -o OUT");
    if (rc != CLI_OK) return rc;
    lm_set_threads((int)threads);
    const long K = remove ? remove : linearize;
    const char *verb = remove ? "remove" : "linearize";

    lm_model *m = NULL, *view = NULL, *pruned = NULL;
    lm_tokenizer *owned = NULL;
    const lm_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    lm_linearity_result r = {0};
    int *blocks = NULL;
    lm_linearize_info *fits = NULL;
    lm_eval_result before = {0}, after = {0};
    lm_status st = lm_model_load(model_path, &m);
    if (st == LM_OK) st = cli_load_tokenizer(model_path, tok_path, m, &owned, &tok);
    if (st == LM_OK && m->cfg.n_layers < 2)
        st = lm_fail(LM_ERR_ARG, "%s: the model has a single block; there is nothing to %s (at least one must stay)",
                     model_path, verb);
    if (st == LM_OK && K >= m->cfg.n_layers)
        st = lm_fail(LM_ERR_ARG, "%s: cannot %s %ld of its %d blocks (at most %d: at least one must stay)", model_path,
                     verb, K, m->cfg.n_layers, m->cfg.n_layers - 1);
    if (st == LM_OK && linearize && lm_model_linear_count(m) > 0)
        st = lm_fail(LM_ERR_UNSUPPORTED, "%s: already has linear blocks; linearize the original model instead",
                     model_path);
    if (st == LM_OK && ctx > m->cfg.seq_len)
        st = lm_fail(LM_ERR_RANGE, "--ctx %ld exceeds the model's context of %d", ctx, m->cfg.seq_len);
    int use_ctx = m && ctx > 0 ? (int)ctx : m ? m->cfg.seq_len : 0;
    /* 1. rank the blocks on the calibration text */
    if (st == LM_OK) st = lm_tokenize_file(tok, calib, 1, (size_t)tokens, &ids, &n);
    if (st == LM_OK && linearize && n <= (size_t)m->cfg.dim)
        st = lm_fail(LM_ERR_ARG,
                     "%s: %zu calibration tokens are too few to fit a %d x %d linear block (needs more than %d; "
                     "give a longer text or a larger --tokens)",
                     calib, n, m->cfg.dim, m->cfg.dim, m->cfg.dim);
    if (st == LM_OK) {
        lm_progress p;
        /* the intrinsic dimension (O(n^2 d)) is not needed: three rows keep it trivial */
        lm_linearity_opts o = {use_ctx, (int)batch, 1, -1, 3, cli_progress_cb, &p, NULL, NULL};
        lm_progress_begin(&p, "calibrate", "tok", (double)n, 1);
        st = lm_linearity_profile(m, ids, n, &o, &r);
        lm_progress_end(&p);
    }
    if (st == LM_OK) {
        blocks = malloc((size_t)K * sizeof *blocks);
        st = blocks ? lm_prune_choose(&r, (int)K, blocks) : lm_fail(LM_ERR_NOMEM, "out of memory");
    }
    /* 2. drop them or replace them, and save */
    if (st == LM_OK && remove) st = lm_model_drop_blocks(m, blocks, (int)K, &view);
    if (st == LM_OK && linearize) {
        fits = calloc((size_t)K, sizeof *fits);
        lm_progress p;
        lm_linearize_opts o = {use_ctx, (int)batch, (int)dsteps, (int)dbatch, dlr, seed, cli_progress_cb, &p};
        lm_progress_begin(&p, "fit", "tok", 2.0 * (double)n * (double)K, 1);
        st = fits ? lm_linearize(m, ids, n, blocks, (int)K, &o, &view, fits) : lm_fail(LM_ERR_NOMEM, "out of memory");
        lm_progress_end(&p);
    }
    free(ids);
    ids = NULL;
    /* as lumen convert: a SentencePiece vocabulary has no tokenizer.json form */
    const lm_tokenizer *save_tok = tok && lm_tokenizer_get_kind(tok) == LM_TOK_SPM ? NULL : tok;
    if (st == LM_OK && tok && !save_tok)
        fprintf(stderr, "lumen prune: note: a score-based SentencePiece vocabulary cannot be written as "
                        "tokenizer.json; writing the weights and config of %s only\n",
                out);
    if (st == LM_OK) st = lm_model_save_hf(view, save_tok, out);
    const int L = m ? m->cfg.n_layers : 0, L_after = remove ? L - (int)K : L;
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
        if (st == LM_OK && (pruned->cfg.n_layers != L_after || lm_model_linear_count(pruned) != (int)linearize))
            st = lm_fail(LM_ERR_FORMAT, "%s: saved with %d layers (%d linear), expected %d (%ld linear)", out,
                         pruned->cfg.n_layers, lm_model_linear_count(pruned), L_after, linearize);
        if (st == LM_OK) {
            lm_progress p;
            lm_progress_begin(&p, "eval after", "tok", (double)n, 1);
            st = lm_eval_ce(pruned, ids, n, use_ctx, (int)batch, cli_progress_cb, &p, &after);
            lm_progress_end(&p);
        }
    }
    if (st != LM_OK) rc = cli_error(st);
    else {
        int *sorted = malloc((size_t)K * sizeof *sorted);
        if (sorted) {
            memcpy(sorted, blocks, (size_t)K * sizeof *sorted);
            qsort(sorted, (size_t)K, sizeof *sorted, cmp_int);
        }
        if (json) {
            json_t *j = json_object(), *chosen = json_array(), *bl = json_array();
            json_object_set_new(j, "model", cli_json_text(model_path, strlen(model_path)));
            json_object_set_new(j, "out", cli_json_text(out, strlen(out)));
            json_object_set_new(j, "mode", json_string(remove ? "remove" : "linearize"));
            json_object_set_new(j, "calib", cli_json_text(calib, strlen(calib)));
            json_object_set_new(j, "calib_tokens", json_integer((json_int_t)r.n_tokens));
            json_object_set_new(j, "ctx", json_integer(use_ctx));
            json_object_set_new(j, "layers", json_integer(L));
            json_object_set_new(j, "layers_after", json_integer(L_after));
            json_object_set_new(j, "ranked_by", json_string("linearity (with residual) of h_l -> h_{l+1}, highest first"));
            for (long i = 0; i < K; i++) json_array_append_new(chosen, json_integer(blocks[i]));
            json_object_set_new(j, remove ? "removed" : "linearized", chosen);
            if (linearize) {
                json_t *fa = json_array();
                for (long i = 0; i < K; i++) {
                    const lm_linearize_info *li = &fits[i];
                    json_t *f = json_pack("{s:i, s:I, s:s, s:i, s:o, s:o}", "layer", li->layer, "rows",
                                          (json_int_t)li->fit.n, "method", method_name(li->fit.method), "rank",
                                          li->fit.rank, "mse", num(li->fit.mse), "fvu", num(li->fit.fvu));
                    if (li->distilled)
                        json_object_set_new(f, "distill",
                                            json_pack("{s:i, s:f, s:i, s:o, s:o, s:s}", "steps", (int)dsteps, "lr", dlr,
                                                      "batch", (int)dbatch, "mse_before", num(li->mse_distill_before),
                                                      "mse_after", num(li->mse_distill_after), "kept",
                                                      li->kept_distilled ? "distilled" : "least_squares"));
                    json_array_append_new(fa, f);
                }
                json_object_set_new(j, "fits", fa);
            }
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
            const char *mark = remove ? "  removed" : "  linearized";
            printf("%s: %d blocks; linearity on %zu tokens of %s (windows of %d)\n\n", model_path, L, r.n_tokens, calib,
                   use_ctx);
            printf("%6s  %10s  %12s\n", "block", "linearity", "no-residual");
            for (int i = 0; i < L; i++) {
                int hit = 0;
                for (long k = 0; k < K; k++) hit |= blocks[k] == i;
                printf("%6d  %10.6f  %12.6f%s\n", i, r.linearity[i], r.linearity_no_residual[i], hit ? mark : "");
            }
            if (linearize) {
                printf("\n");
                for (long k = 0; k < K; k++) {
                    const lm_linearize_info *li = &fits[k];
                    printf("block %d: least squares (%s, rank %d) on %zu rows: mse %.6g, unexplained variance %.6f\n",
                           li->layer, method_name(li->fit.method), li->fit.rank, li->fit.n, li->fit.mse, li->fit.fvu);
                    if (li->distilled)
                        printf("block %d: %ld Adam steps (lr %g, batch %ld): mse %.6g -> %.6g; kept the %s\n",
                               li->layer, dsteps, dlr, dbatch, li->mse_distill_before, li->mse_distill_after,
                               li->kept_distilled ? "distilled map" : "least-squares fit");
                }
            }
            printf("\n%s %ld block(s):", remove ? "removed" : "linearized", K);
            for (long k = 0; sorted && k < K; k++) printf(" %d", sorted[k]);
            printf("; wrote %s (%d blocks%s)\n", out, L_after, linearize ? ", loads in lumen only" : "");
            if (eval)
                printf("perplexity on %s (%zu predictions): %.4f -> %.4f  (cross-entropy %.4f -> %.4f nats)\n", eval,
                       before.n_predicted, before.perplexity, after.perplexity, before.mean_ce, after.mean_ce);
        }
        free(sorted);
    }
    free(ids);
    free(blocks);
    free(fits);
    lm_linearity_result_free(&r);
    lm_model_free(pruned);
    lm_model_view_free(view);
    lm_tokenizer_free(owned);
    lm_model_free(m);
    return rc;
}
