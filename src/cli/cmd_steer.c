/* cmd_steer.c - `lumen steer`: generate with an SAE feature clamped or added (Scaling
 * Monosemanticity-style steering), next to the unsteered continuation with the same seed. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: lumen steer MODEL SAE -p PROMPT --feature ID (--clamp X | --add X | --scale X) [options]\n\n"
            "Generates twice with the same seed: once unchanged, once with SAE latent ID steered at\n"
            "the SAE's hook, at every prompt position and every generated token:\n"
            "  --clamp X   the latent is set to X * MAXACT, keeping the SAE's error term:\n"
            "              x <- decode(f with f[ID] = X*MAXACT) + (x - decode(f)), f = encode(x)\n"
            "  --add X     x <- x + X * MAXACT * W_dec[ID] (as if the latent fired X*MAXACT more)\n"
            "  --scale X   the latent is set to X times its own value at each position (error term\n"
            "              kept): X = 0 ablates it; X = 1 reproduces the unsteered output exactly\n"
            "MAXACT, the latent's max activation, comes from the first of:\n"
            "  --max-act A                 the value given\n"
            "  --features DIR              DIR/feature_stats.safetensors (from `lumen sae features`)\n"
            "  SAE/features/feature_stats.safetensors\n"
            "                              if present: where `lumen sae features` writes by default\n"
            "  the prompt                  the latent's largest activation over the prompt's tokens\n"
            "                              (unsteered run); it must be > 0 there\n"
            "The source used is printed (and is max_act_source in --json). Statistics computed for\n"
            "another SAE, or a latent that never fired on their text, are refused.\n\n"
            "  -p, --prompt TEXT     prompt\n"
            "  --feature ID          SAE latent index\n"
            "  --max-act A           the latent's max activation (e.g. from a corpus)\n"
            "  --features DIR        the output directory of `lumen sae features` for this SAE\n"
            "  --hook NAME           hook to steer at (default: the SAE's hook_name)\n"
            "  -n, --tokens N        new tokens at most (default 64)\n"
            "  -t, --temp T          temperature; 0 = greedy (default 0)\n"
            "  --top-k K, --top-p P  sampling filters (defaults 0 = off, 1 = off)\n"
            "  --seed S              random seed, the same for both runs (default 42)\n"
            "  --threads T           threads (default: all cores)\n"
            "  --tokenizer FILE      tokenizer for formats that keep it apart\n"
            "  --json                one JSON object: prompt, feature, mode, value, max_act,\n"
            "                        max_act_source (option|features|prompt|none), max_act_file, hook,\n"
            "                        default, steered (the generated continuations)\n");
}

typedef struct text_buf {
    char *text;
    size_t len, cap;
} text_buf;

static int on_token(void *ud, int token, const char *text, size_t len, int is_prompt) {
    (void)token;
    text_buf *o = ud;
    if (is_prompt) return 0;
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

/* Measures the feature's max activation over the prompt prefill (the call at position 0). */
typedef struct max_probe {
    const lm_sae *sae;
    size_t feature;
    float max;
    int seen;
} max_probe;

static lm_status max_hook(void *ud, const lm_hook_info *info, float *act) {
    max_probe *p = ud;
    if (info->pos0 != 0) return LM_OK;
    if ((size_t)info->d != p->sae->d_in)
        return lm_fail(LM_ERR_ARG, "steer: hook %s has width %d but the SAE's d_in is %zu", info->name, info->d,
                       p->sae->d_in);
    size_t n = (size_t)info->n_seq * (size_t)info->n_tok, ds = p->sae->d_sae;
    float *f = lm_malloc(n * ds, sizeof(float));
    if (!f) return lm_fail(LM_ERR_NOMEM, "steer: out of memory");
    lm_status st = lm_sae_encode(p->sae, f, act, n);
    for (size_t t = 0; st == LM_OK && t < n; t++) {
        float v = f[t * ds + p->feature];
        if (!p->seen || v > p->max) p->max = v;
        p->seen = 1;
    }
    free(f);
    return st;
}

int cmd_steer(int argc, char **argv) {
    const char *V = "steer";
    const char *model_path = NULL, *sae_path = NULL, *prompt = NULL, *tok_path = NULL, *hook = NULL, *mode = NULL,
               *feat_dir = NULL;
    long n_new = 64, top_k = 0, threads = 0, feature = -1;
    double temp = 0.0, top_p = 1.0, x = 0, max_act = NAN;
    unsigned long long seed = 42;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int hv = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return CLI_OK;
        } else if (!strcmp(a, "--json")) json = 1;
        else if ((!strcmp(a, "-p") || !strcmp(a, "--prompt")) && hv) prompt = argv[++i];
        else if (!strcmp(a, "--tokenizer") && hv) tok_path = argv[++i];
        else if (!strcmp(a, "--hook") && hv) hook = argv[++i];
        else if (!strcmp(a, "--features") && hv) feat_dir = argv[++i];
        else if ((!strcmp(a, "--clamp") || !strcmp(a, "--add") || !strcmp(a, "--scale")) && hv) {
            if (mode) return cli_usage_error(V, "give one of --clamp, --add and --scale");
            mode = a + 2;
            if (cli_parse_float(V, a, argv[++i], -1e6, 1e6, &x)) return CLI_USAGE;
        } else if (!strcmp(a, "--feature") && hv) {
            if (cli_parse_int(V, a, argv[++i], 0, 1L << 40, &feature)) return CLI_USAGE;
        } else if (!strcmp(a, "--max-act") && hv) {
            if (cli_parse_float(V, a, argv[++i], 1e-30, 1e30, &max_act)) return CLI_USAGE;
        } else if ((!strcmp(a, "-n") || !strcmp(a, "--tokens")) && hv) {
            if (cli_parse_int(V, a, argv[++i], 0, 1 << 24, &n_new)) return CLI_USAGE;
        } else if ((!strcmp(a, "-t") || !strcmp(a, "--temp")) && hv) {
            if (cli_parse_float(V, a, argv[++i], 0, 100, &temp)) return CLI_USAGE;
        } else if (!strcmp(a, "--top-k") && hv) {
            if (cli_parse_int(V, a, argv[++i], 0, 1 << 24, &top_k)) return CLI_USAGE;
        } else if (!strcmp(a, "--top-p") && hv) {
            if (cli_parse_float(V, a, argv[++i], 1e-6, 1, &top_p)) return CLI_USAGE;
        } else if (!strcmp(a, "--seed") && hv) {
            if (cli_parse_u64(V, a, argv[++i], &seed)) return CLI_USAGE;
        } else if (!strcmp(a, "--threads") && hv) {
            if (cli_parse_int(V, a, argv[++i], 1, 1024, &threads)) return CLI_USAGE;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error(V, "unknown option or missing value: %s", a);
        } else if (!model_path) model_path = a;
        else if (!sae_path) sae_path = a;
        else return cli_usage_error(V, "unexpected argument: %s", a);
    }
    if (!model_path || !sae_path) return cli_usage_error(V, "missing MODEL or SAE");
    if (!prompt) return cli_usage_error(V, "missing -p PROMPT");
    if (feature < 0) return cli_usage_error(V, "missing --feature ID");
    if (!mode) return cli_usage_error(V, "missing --clamp X, --add X or --scale X");
    int scale_mode = !strcmp(mode, "scale");
    lm_set_threads((int)threads);
    lm_model *m = NULL;
    lm_sae *sae = NULL;
    lm_tokenizer *owned = NULL;
    const lm_tokenizer *tok = NULL;
    text_buf def = {0}, steered = {0};
    lm_generate_result r0 = {0}, r1 = {0};
    lm_status st = lm_model_load(model_path, &m);
    if (st == LM_OK) st = cli_load_tokenizer(model_path, tok_path, m, &owned, &tok);
    if (st == LM_OK) st = lm_sae_load(sae_path, &sae);
    if (st == LM_OK && !hook) hook = sae->hook_name;
    if (st == LM_OK && !hook) st = lm_fail(LM_ERR_ARG, "%s: the SAE names no hook; pass --hook", sae_path);
    if (st == LM_OK && (size_t)feature >= sae->d_sae)
        st = lm_fail(LM_ERR_ARG, "--feature %ld out of range: the SAE has %zu latents", feature, sae->d_sae);
    /* where MAXACT comes from */
    const char *source = "none";
    char stats_path[4200] = "";
    if (st == LM_OK && !scale_mode && !isnan(max_act)) source = "option";
    else if (st == LM_OK && !scale_mode) {
        struct stat sb;
        if (feat_dir) snprintf(stats_path, sizeof stats_path, "%s/feature_stats.safetensors", feat_dir);
        else snprintf(stats_path, sizeof stats_path, "%s/features/feature_stats.safetensors", sae_path);
        if (feat_dir || stat(stats_path, &sb) == 0) {
            float *ma = NULL;
            st = lm_sae_feature_stats_load(stats_path, sae, &ma, NULL);
            if (st == LM_OK && !(ma[feature] > 0))
                st = lm_fail(LM_ERR_ARG, "%s: feature %ld never fired on the text the statistics were made from "
                             "(max_act 0); pass --max-act", stats_path, feature);
            if (st == LM_OK) {
                max_act = ma[feature];
                source = "features";
            }
            free(ma);
        } else {
            stats_path[0] = 0;
            source = "prompt";
        }
    }
    lm_generate_opts o = {(int)n_new, (float)temp, (int)top_k, (float)top_p, seed, 0};
    max_probe probe = {sae, (size_t)feature, 0, 0};
    lm_gen_hook h0 = {hook, max_hook, &probe};
    int measure = !strcmp(source, "prompt");
    if (st == LM_OK)
        st = lm_generate_ex(m, tok, prompt, strlen(prompt), &o, measure ? &h0 : NULL, measure, on_token, &def, &r0);
    if (st == LM_OK && measure) {
        if (!probe.seen || !(probe.max > 0))
            st = lm_fail(LM_ERR_ARG,
                         "feature %ld does not fire on the prompt (max activation %g%s); pass --max-act", feature,
                         probe.seen ? (double)probe.max : 0.0, probe.seen ? "" : ", no tokens generated");
        else max_act = probe.max;
    }
    float value = scale_mode ? (float)x : (float)(x * max_act);
    lm_sae_steer_mode sm = scale_mode ? LM_SAE_STEER_SCALE : !strcmp(mode, "clamp") ? LM_SAE_STEER_CLAMP : LM_SAE_STEER_ADD;
    lm_sae_steer sv = {sae, (size_t)feature, sm, value};
    lm_gen_hook h1 = {hook, lm_sae_steer_hook, &sv};
    if (st == LM_OK) st = lm_generate_ex(m, tok, prompt, strlen(prompt), &o, &h1, 1, on_token, &steered, &r1);
    int rc = CLI_OK;
    if (st != LM_OK) rc = cli_error(st);
    else if (json) {
        json_t *j = json_object();
        json_object_set_new(j, "prompt", cli_json_text(prompt, strlen(prompt)));
        json_object_set_new(j, "feature", json_integer(feature));
        json_object_set_new(j, "mode", json_string(mode));
        json_object_set_new(j, "value", json_real(x));
        json_object_set_new(j, "max_act", isnan(max_act) ? json_null() : json_real(max_act));
        json_object_set_new(j, "max_act_source", json_string(source));
        json_object_set_new(j, "max_act_file", stats_path[0] ? cli_json_text(stats_path, strlen(stats_path)) : json_null());
        json_object_set_new(j, "hook", json_string(hook));
        json_object_set_new(j, "default", cli_json_text(def.text ? def.text : "", def.len));
        json_object_set_new(j, "steered", cli_json_text(steered.text ? steered.text : "", steered.len));
        rc = cli_print_json(j);
    } else {
        printf("--- default ---\n%s%s\n", prompt, def.text ? def.text : "");
        if (scale_mode)
            printf("--- steered: feature %ld scaled by %g at %s ---\n", feature, x, hook);
        else if (!strcmp(source, "features"))
            printf("--- steered: feature %ld, %s %g x max-act %g (from %s) = %g at %s ---\n", feature, mode, x,
                   max_act, stats_path, (double)value, hook);
        else
            printf("--- steered: feature %ld, %s %g x max-act %g (from %s) = %g at %s ---\n", feature, mode, x,
                   max_act, !strcmp(source, "option") ? "--max-act" : "the prompt", (double)value, hook);
        printf("%s%s\n", prompt, steered.text ? steered.text : "");
    }
    lm_generate_result_free(&r0);
    lm_generate_result_free(&r1);
    free(def.text);
    free(steered.text);
    lm_sae_free(sae);
    lm_tokenizer_free(owned);
    lm_model_free(m);
    return rc;
}
