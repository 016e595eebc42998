/* cmd_mc_eval.c - `lumen mc-eval`: accuracy on multiple-choice prompts (e.g. calendar arithmetic). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: lumen mc-eval MODEL FILE.json [--tokenizer FILE] [--threads T] [--json]\n\n"
            "FILE.json is an array of {\"prompt\", \"answer\", \"choices\": [...], \"kind\"}. For each item\n"
            "the choice whose tokens (after a space) are most probable after the prompt is the\n"
            "model's answer; prints the accuracy overall and per kind, with the chance level.\n");
}

typedef struct tally {
    char kind[64];
    int n, correct;
    double chance;
} tally;

int cmd_mc_eval(int argc, char **argv) {
    const char *model_path = NULL, *file = NULL, *tok_path = NULL;
    long threads = 0;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return CLI_OK;
        } else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--tokenizer") && i + 1 < argc) tok_path = argv[++i];
        else if (!strcmp(a, "--threads") && i + 1 < argc) {
            if (cli_parse_int("mc-eval", a, argv[++i], 1, 1024, &threads)) return CLI_USAGE;
        } else if (a[0] == '-' && a[1]) return cli_usage_error("mc-eval", "unknown option or missing value: %s", a);
        else if (!model_path) model_path = a;
        else if (!file) file = a;
        else return cli_usage_error("mc-eval", "unexpected argument: %s", a);
    }
    if (!model_path || !file) return cli_usage_error("mc-eval", "expected MODEL and FILE.json");
    lm_set_threads((int)threads);
    json_error_t jerr;
    json_t *items = json_load_file(file, 0, &jerr);
    if (!items) return cli_error(lm_fail(LM_ERR_FORMAT, "%s: invalid JSON at line %d: %s", file, jerr.line, jerr.text));
    if (!json_is_array(items)) {
        json_decref(items);
        return cli_error(lm_fail(LM_ERR_FORMAT, "%s: expected a JSON array of items", file));
    }
    lm_model *m = NULL;
    lm_status st = lm_model_load(model_path, &m);
    lm_tokenizer *owned = NULL;
    const lm_tokenizer *tok = NULL;
    if (st == LM_OK) st = cli_load_tokenizer(model_path, tok_path, m, &owned, &tok);
    size_t n = json_array_size(items);
    tally *t = calloc(n + 1, sizeof *t);
    int n_kinds = 0, total = 0, correct = 0;
    if (st == LM_OK && !t) st = lm_fail(LM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; st == LM_OK && i < n; i++) {
        json_t *it = json_array_get(items, i), *ch = json_object_get(it, "choices");
        const char *prompt = json_string_value(json_object_get(it, "prompt"));
        const char *answer = json_string_value(json_object_get(it, "answer"));
        const char *kind = json_string_value(json_object_get(it, "kind"));
        size_t nc = json_array_size(ch);
        if (!prompt || !answer || nc == 0 || nc > 1024) {
            st = lm_fail(LM_ERR_FORMAT, "%s: item %zu needs \"prompt\", \"answer\" and \"choices\"", file, i);
            break;
        }
        const char **choices = calloc(nc, sizeof *choices);
        int gold = -1, best = -1;
        for (size_t c = 0; choices && c < nc; c++) {
            choices[c] = json_string_value(json_array_get(ch, c));
            if (!choices[c]) choices[c] = "";
            if (!strcmp(choices[c], answer)) gold = (int)c;
        }
        if (!choices) st = lm_fail(LM_ERR_NOMEM, "out of memory");
        else if (gold < 0) st = lm_fail(LM_ERR_FORMAT, "%s: item %zu: the answer is not among the choices", file, i);
        if (st == LM_OK) st = lm_choice_score(m, tok, prompt, choices, (int)nc, NULL, &best);
        free(choices);
        if (st != LM_OK) break;
        if (!kind) kind = "all";
        int k = 0;
        while (k < n_kinds && strcmp(t[k].kind, kind)) k++;
        if (k == n_kinds) {
            snprintf(t[k].kind, sizeof t[k].kind, "%s", kind);
            t[k].chance = 1.0 / (double)nc;
            n_kinds++;
        }
        t[k].n++;
        t[k].correct += best == gold;
        total++;
        correct += best == gold;
    }
    int rc = CLI_OK;
    if (st != LM_OK) rc = cli_error(st);
    else if (json) {
        json_t *j = json_object(), *bk = json_object();
        json_object_set_new(j, "n", json_integer(total));
        json_object_set_new(j, "accuracy", json_real(total ? (double)correct / total : 0));
        for (int k = 0; k < n_kinds; k++)
            json_object_set_new(bk, t[k].kind,
                                json_pack("{s:i, s:i, s:f, s:f}", "n", t[k].n, "correct", t[k].correct, "accuracy",
                                          (double)t[k].correct / t[k].n, "chance", t[k].chance));
        json_object_set_new(j, "by_kind", bk);
        rc = cli_print_json(j);
    } else {
        for (int k = 0; k < n_kinds; k++)
            printf("%-12s %4d/%-4d = %5.1f%%  (chance %.1f%%)\n", t[k].kind, t[k].correct, t[k].n,
                   100.0 * t[k].correct / t[k].n, 100.0 * t[k].chance);
        printf("%-12s %4d/%-4d = %5.1f%%\n", "all", correct, total, total ? 100.0 * correct / total : 0);
    }
    free(t);
    json_decref(items);
    lm_tokenizer_free(owned);
    lm_model_free(m);
    return rc;
}
