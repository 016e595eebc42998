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
            "  --logit-lens       also put each state h_l through the final norm and the output head:\n"
            "                     per state the mean loss of the next token (the last state's is the\n"
            "                     model's, as `lumen eval` gives it) and the top tokens of the last\n"
            "                     --lens-positions positions (default 8)\n"
            "  --lens-svg FILE    (implies --logit-lens) heat map of states x the first 64 positions,\n"
            "                     coloured by the loss, with the top token in each cell\n"
            "  --lens-positions N positions shown in the table and JSON (the last N; default 8)\n"
            "  --tokenizer FILE   tokenizer for formats that keep it apart\n"
            "  --threads T        threads (default: all cores)\n"
            "  --json             print {\"model\", \"tokens\", \"layers\": [{\"layer\", \"linearity\",\n"
            "                     \"linearity_no_residual\", \"anisotropy\", \"intrinsic_dim\"}], ...}\n"
            "                     (an undefined value, e.g. of a constant state, is null); with\n"
            "                     --logit-lens also \"logit_lens\": {\"positions\", \"input\", \"next\",\n"
            "                     \"layers\": [{\"layer\", \"mean_loss\", \"top_tokens\", \"top_ids\",\n"
            "                     \"loss\"}]} (layer l is the state h_l)\n\n"
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

/* A token's text as JSON (ids outside the tokenizer's reach give ""). */
static json_t *token_json(const lm_tokenizer *tok, int id) {
    char b[16];
    size_t len = 0;
    const char *t = lm_tokenizer_token_text(tok, id, id, b, &len);
    return cli_json_text(t ? t : "", t ? len : 0);
}

/* Prints s left-aligned in a column of w characters (UTF-8 aware). */
static void print_cell(const char *s, int w) {
    int c = 0;
    for (const char *p = s; *p; p++) c += ((unsigned char)*p & 0xC0) != 0x80;
    printf(" %s%*s", s, c < w ? w - c : 0, "");
}

/* The lens table's cell text: the display form cut to 10 characters. */
static const char *lens_cell(const lm_tokenizer *tok, int id, char *buf, size_t cap) {
    lm_token_display(tok, id, buf, cap);
    size_t c = 0;
    for (size_t i = 0; buf[i]; i++)
        if (((unsigned char)buf[i] & 0xC0) != 0x80 && c++ == 10) {
            buf[i] = 0;
            break;
        }
    return buf;
}

static void print_lens(const lm_logit_lens_result *lr, const int32_t *ids, const lm_tokenizer *tok, size_t p0) {
    const size_t N = lr->n_tokens;
    char b[64];
    printf("\nlogit lens: each state h_l through the final norm and the output head; loss = cross-entropy\n"
           "of the next token over %zu predictions (h_%d gives the model's own loss); top tokens at\n"
           "positions %zu .. %zu\n\n",
           lr->n_predicted, lr->n_layers, p0, N - 1);
    printf("%6s  %9s ", "state", "mean-loss");
    for (size_t t = p0; t < N; t++) print_cell(lens_cell(tok, ids[t], b, sizeof b), 10);
    printf("   <- input\n%6s  %9s ", "", "");
    for (size_t t = p0; t < N; t++) print_cell(t + 1 < N ? lens_cell(tok, ids[t + 1], b, sizeof b) : "", 10);
    printf("   <- next (to predict)\n");
    for (int l = 0; l <= lr->n_layers; l++) {
        printf("%6d  %9.4f ", l, lr->mean_loss[l]);
        for (size_t t = p0; t < N; t++) print_cell(lens_cell(tok, lr->top[(size_t)l * N + t], b, sizeof b), 10);
        printf("\n");
    }
}

static json_t *lens_json(const lm_logit_lens_result *lr, const int32_t *ids, const lm_tokenizer *tok, size_t p0) {
    const size_t N = lr->n_tokens;
    json_t *j = json_object(), *pos = json_array(), *in = json_array(), *next = json_array(), *layers = json_array();
    for (size_t t = p0; t < N; t++) {
        json_array_append_new(pos, json_integer((json_int_t)t));
        json_array_append_new(in, token_json(tok, ids[t]));
        json_array_append_new(next, t + 1 < N ? token_json(tok, ids[t + 1]) : json_null());
    }
    json_object_set_new(j, "states", json_string("layer l: h_l through the final norm and the output head"));
    json_object_set_new(j, "predicted", json_integer((json_int_t)lr->n_predicted));
    json_object_set_new(j, "positions", pos);
    json_object_set_new(j, "input", in);
    json_object_set_new(j, "next", next);
    for (int l = 0; l <= lr->n_layers; l++) {
        json_t *tt = json_array(), *ti = json_array(), *ls = json_array();
        for (size_t t = p0; t < N; t++) {
            int id = lr->top[(size_t)l * N + t];
            json_array_append_new(tt, token_json(tok, id));
            json_array_append_new(ti, json_integer(id));
            json_array_append_new(ls, num(lr->loss[(size_t)l * N + t]));
        }
        json_array_append_new(layers, json_pack("{s:i, s:o, s:o, s:o, s:o}", "layer", l, "mean_loss",
                                                num(lr->mean_loss[l]), "top_tokens", tt, "top_ids", ti, "loss", ls));
    }
    json_object_set_new(j, "layers", layers);
    return j;
}

int cmd_linearity(int argc, char **argv) {
    const char *model_path = NULL, *file = NULL, *tok_path = NULL, *svg = NULL, *lens_svg = NULL;
    long ctx = 0, tokens = 4096, id_tokens = 4096, batch = 4, threads = 0, lens_positions = 8;
    int json = 0, include_bos = 1, lens = 0;
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
        else if (!strcmp(a, "--logit-lens")) lens = 1;
        else if (!strcmp(a, "--lens-svg") && hv) lens_svg = argv[++i], lens = 1;
        else if (!strcmp(a, "--lens-positions") && hv) {
            if (cli_parse_int("linearity", a, argv[++i], 1, 1 << 20, &lens_positions)) rc = CLI_USAGE;
        }
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
    lm_logit_lens_result lr = {0};
    size_t lens_p0 = 0;
    if (st == LM_OK && lens) {
        lm_progress p;
        lm_logit_lens_opts lo = {(int)ctx, (int)batch, cli_progress_cb, &p};
        lm_progress_begin(&p, "logit lens", "tok", (double)n, 1);
        st = lm_logit_lens(m, ids, n, &lo, &lr);
        lm_progress_end(&p);
        lens_p0 = n > (size_t)lens_positions ? n - (size_t)lens_positions : 0;
    }
    if (st == LM_OK && lens_svg) {
        char title[512];
        const char *base = strrchr(model_path, '/');
        base = base && base[1] ? base + 1 : model_path;
        snprintf(title, sizeof title, "logit lens: %s, first %d positions of %s", base, n < 64 ? (int)n : 64, file);
        st = lm_write_svg_logit_lens(lens_svg, title, &lr, ids, tok, 64);
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
        if (lens) json_object_set_new(j, "logit_lens", lens_json(&lr, ids, tok, lens_p0));
        json_object_set_new(j, "seconds", json_real(r.seconds_forward + r.seconds_analysis + lr.seconds));
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
        if (lens) print_lens(&lr, ids, tok, lens_p0);
        if (svg) printf("\nwrote %s\n", svg);
        if (lens_svg) printf("%swrote %s\n", svg ? "" : "\n", lens_svg);
    }
    lm_logit_lens_result_free(&lr);
    lm_linearity_result_free(&r);
    free(ids);
    lm_tokenizer_free(owned);
    lm_model_free(m);
    return rc;
}
