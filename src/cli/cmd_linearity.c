/* cmd_linearity.c - `lumen linearity`: how linear each block is, with anisotropy and intrinsic dimension. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: lumen linearity MODEL FILE [options]\n\n"
            "The linearity profile of Razzhigaev et al. (2024), \"Your Transformer is Secretly Linear\".\n"
            "FILE is tokenized (one BOS at the start of the text when the tokenizer has one) and run\n"
            "through MODEL in consecutive windows of --ctx tokens, the windows of `lumen eval` and\n"
            "`lumen activations`. The states are exactly those `lumen activations` writes for\n"
            "  h_0     = blocks.0.hook_resid_pre   (the embedding output: token embedding, plus the\n"
            "                                       position embedding for GPT-2)\n"
            "  h_{l+1} = blocks.l.hook_resid_post  (the residual stream after block l; the last is\n"
            "                                       taken before the final norm)\n"
            "one row per token. For each block l (X = h_l, Y = h_{l+1}; rows centred over tokens and\n"
            "scaled to unit Frobenius norm):\n"
            "  linearity              1 - min_A ||X A - Y||^2   (least squares, in double)\n"
            "  linearity_no_residual  the same with Y = h_{l+1} - h_l\n"
            "  anisotropy             of h_l: top eigenvalue of its covariance / sum of eigenvalues\n"
            "  intrinsic_dim          of h_l: TwoNN estimate, on the first --id-tokens rows\n"
            "as llm-microscope 0.0.7 defines them (see docs/linearity.md). The row \"final\" gives\n"
            "anisotropy and intrinsic dimension of h_L.\n\n"
            "  --tokens N         use the first N tokens of FILE (default 4096)\n"
            "  --ctx N            window length (default: the model's context)\n"
            "  --include-bos      keep the rows of BOS tokens (default)\n"
            "  --no-bos           drop the rows whose token is the tokenizer's BOS from every state\n"
            "  --id-tokens N      intrinsic dimension on the first N rows (default 4096; O(N^2 d))\n"
            "  --batch N          windows per forward pass (default 4)\n"
            "  --svg FILE         plot both linearity profiles against the block index\n"
            "  --tokenizer FILE   tokenizer for formats that keep it apart\n"
            "  --threads T        threads (default: all cores)\n"
            "  --json             print {\"model\", \"tokens\", \"layers\": [{\"layer\", \"linearity\",\n"
            "                     \"linearity_no_residual\", \"anisotropy\", \"intrinsic_dim\"}], ...}\n"
            "                     (an undefined value, e.g. of a constant state, is null)\n\n"
            "Memory: (layers + 1) x tokens x d floats for the states.\n");
}

/* Two phases, one bar each: the forward counts tokens, the analysis counts states. */
typedef struct bars {
    lm_progress fwd, ana;
    int ana_started, n_states;
} bars;

static void start_analysis(bars *b) {
    if (b->ana_started) return;
    lm_progress_end(&b->fwd);
    lm_progress_begin(&b->ana, "analysis", "state", b->n_states, 1);
    b->ana_started = 1;
}

static int forward_cb(void *ud, size_t done, size_t total) {
    bars *b = ud;
    b->fwd.total = (double)total;
    lm_progress_update(&b->fwd, (double)done);
    if (done >= total) start_analysis(b);
    return 0;
}

static int analysis_cb(void *ud, size_t done, size_t total) {
    bars *b = ud;
    start_analysis(b);
    b->ana.total = (double)total;
    lm_progress_update(&b->ana, (double)done);
    return 0;
}

static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

int cmd_linearity(int argc, char **argv) {
    const char *model_path = NULL, *file = NULL, *tok_path = NULL, *svg = NULL;
    long ctx = 0, tokens = 4096, id_tokens = 4096, batch = 4, threads = 0;
    int json = 0, include_bos = 1;
    int rc = CLI_OK;
    for (int i = 1; i < argc && rc == CLI_OK; i++) {
        const char *a = argv[i];
        int hv = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return CLI_OK;
        } else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--include-bos")) include_bos = 1;
        else if (!strcmp(a, "--no-bos")) include_bos = 0;
        else if (!strcmp(a, "--svg") && hv) svg = argv[++i];
        else if (!strcmp(a, "--tokenizer") && hv) tok_path = argv[++i];
        else if (!strcmp(a, "--ctx") && hv) {
            if (cli_parse_int("linearity", a, argv[++i], 1, 1 << 24, &ctx)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--tokens") && hv) {
            if (cli_parse_int("linearity", a, argv[++i], 3, 1L << 32, &tokens)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--id-tokens") && hv) {
            if (cli_parse_int("linearity", a, argv[++i], 3, 1L << 32, &id_tokens)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--batch") && hv) {
            if (cli_parse_int("linearity", a, argv[++i], 1, 4096, &batch)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--threads") && hv) {
            if (cli_parse_int("linearity", a, argv[++i], 1, 1024, &threads)) rc = CLI_USAGE;
        } else if (a[0] == '-' && a[1]) rc = cli_usage_error("linearity", "unknown option or missing value: %s", a);
        else if (!model_path) model_path = a;
        else if (!file) file = a;
        else rc = cli_usage_error("linearity", "unexpected argument: %s", a);
    }
    if (rc == CLI_OK && (!model_path || !file)) rc = cli_usage_error("linearity", "expected MODEL and FILE");
    if (rc != CLI_OK) return rc;
    lm_set_threads((int)threads);
    lm_model *m = NULL;
    lm_status st = lm_model_load(model_path, &m);
    lm_tokenizer *owned = NULL;
    const lm_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    if (st == LM_OK) st = cli_load_tokenizer(model_path, tok_path, m, &owned, &tok);
    if (st == LM_OK) st = lm_tokenize_file(tok, file, 1, (size_t)tokens, &ids, &n);
    lm_linearity_result r = {0};
    int bos = tok ? lm_tokenizer_bos(tok) : -1;
    bars b = {.n_states = m ? m->cfg.n_layers + 1 : 0};
    if (st == LM_OK) {
        lm_linearity_opts o = {(int)ctx, (int)batch, include_bos, bos, (size_t)id_tokens, forward_cb, &b, analysis_cb, &b};
        lm_progress_begin(&b.fwd, "forward", "tok", (double)n, 1);
        st = lm_linearity_profile(m, ids, n, &o, &r);
        if (b.ana_started) lm_progress_end(&b.ana);
        else if (st == LM_OK || b.fwd.done > 0) lm_progress_end(&b.fwd);
    }
    if (st == LM_OK && svg) {
        const int L = r.n_layers;
        double *x = malloc(((size_t)L + 1) * sizeof *x);
        if (!x) st = lm_fail(LM_ERR_NOMEM, "out of memory");
        else {
            for (int i = 0; i < L; i++) x[i] = i;
            lm_svg_series s[2] = {{"linearity", x, r.linearity, (size_t)L},
                                  {"linearity without residual", x, r.linearity_no_residual, (size_t)L}};
            char title[512];
            const char *base = strrchr(model_path, '/');
            base = base && base[1] ? base + 1 : model_path;
            snprintf(title, sizeof title, "linearity of each block: %s, %zu tokens", base, r.n_tokens);
            st = lm_write_svg_lines(svg, title, "block", "score", s, 2);
            free(x);
        }
    }
    if (st != LM_OK) rc = cli_error(st);
    else if (json) {
        json_t *j = json_object(), *layers = json_array();
        json_object_set_new(j, "model", cli_json_text(model_path, strlen(model_path)));
        json_object_set_new(j, "file", cli_json_text(file, strlen(file)));
        json_object_set_new(j, "tokens", json_integer((json_int_t)r.n_tokens));
        json_object_set_new(j, "ctx", json_integer(ctx > 0 ? ctx : m->cfg.seq_len));
        json_object_set_new(j, "windows", json_integer((json_int_t)r.n_windows));
        json_object_set_new(j, "include_bos", json_boolean(include_bos));
        json_object_set_new(j, "bos_dropped", json_integer((json_int_t)r.n_bos_dropped));
        json_object_set_new(j, "id_tokens", json_integer((json_int_t)r.id_tokens));
        json_object_set_new(j, "states", json_string("h_0 = blocks.0.hook_resid_pre, h_{l+1} = blocks.l.hook_resid_post"));
        for (int i = 0; i < r.n_layers; i++)
            json_array_append_new(layers, json_pack("{s:i, s:o, s:o, s:o, s:o}", "layer", i, "linearity",
                                                    num(r.linearity[i]), "linearity_no_residual",
                                                    num(r.linearity_no_residual[i]), "anisotropy",
                                                    num(r.anisotropy[i]), "intrinsic_dim", num(r.intrinsic_dim[i])));
        json_object_set_new(j, "layers", layers);
        json_object_set_new(j, "final", json_pack("{s:o, s:o}", "anisotropy", num(r.anisotropy[r.n_layers]),
                                                  "intrinsic_dim", num(r.intrinsic_dim[r.n_layers])));
        json_object_set_new(j, "seconds", json_real(r.seconds_forward + r.seconds_analysis));
        rc = cli_print_json(j);
    } else {
        printf("%s: %zu tokens in %zu windows of %ld", model_path, r.n_tokens, r.n_windows,
               ctx > 0 ? ctx : (long)m->cfg.seq_len);
        if (include_bos) printf(", BOS rows included\n");
        else if (bos < 0) printf(", no BOS in this vocabulary\n");
        else printf(", %zu BOS row(s) dropped\n", r.n_bos_dropped);
        printf("states: h_0 = blocks.0.hook_resid_pre, h_{l+1} = blocks.l.hook_resid_post; "
               "intrinsic dimension on %zu rows\n\n",
               r.id_tokens);
        printf("%6s  %10s  %12s  %10s  %13s\n", "layer", "linearity", "no-residual", "anisotropy", "intrinsic-dim");
        for (int i = 0; i < r.n_layers; i++)
            printf("%6d  %10.6f  %12.6f  %10.6f  %13.3f\n", i, r.linearity[i], r.linearity_no_residual[i],
                   r.anisotropy[i], r.intrinsic_dim[i]);
        printf("%6s  %10s  %12s  %10.6f  %13.3f\n", "final", "", "", r.anisotropy[r.n_layers],
               r.intrinsic_dim[r.n_layers]);
        if (svg) printf("\nwrote %s\n", svg);
    }
    lm_linearity_result_free(&r);
    free(ids);
    lm_tokenizer_free(owned);
    lm_model_free(m);
    return rc;
}
