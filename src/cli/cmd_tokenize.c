/* cmd_tokenize.c - `lumen tokenize`: token ids and pieces of a text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: lumen tokenize MODEL TEXT [--tokenizer FILE] [--bos] [--json]\n\n"
            "MODEL is a model file holding a tokenizer (GGUF), or a tokenizer file itself\n"
            "(GGUF vocabulary, llama2.c tokenizer.bin).\n"
            "  --bos        prepend the BOS token\n"
            "  --json       print {\"ids\": [...], \"pieces\": [...]}\n");
}

int cmd_tokenize(int argc, char **argv) {
    const char *path = NULL, *text = NULL, *tok_path = NULL;
    int json = 0, bos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return CLI_OK;
        } else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--bos")) bos = 1;
        else if (!strcmp(a, "--tokenizer") && i + 1 < argc) tok_path = argv[++i];
        else if (a[0] == '-' && a[1] && !path) return cli_usage_error("tokenize", "unknown option: %s", a);
        else if (!path) path = a;
        else if (!text) text = a;
        else return cli_usage_error("tokenize", "unexpected argument: %s", a);
    }
    if (!path || !text) return cli_usage_error("tokenize", "expected MODEL and TEXT");
    lm_model *m = NULL;
    lm_tokenizer *owned = NULL;
    const lm_tokenizer *tok = NULL;
    lm_status st = LM_OK;
    if (!tok_path) {
        /* a GGUF model carries its vocabulary; anything else is tried as a tokenizer file */
        FILE *f = fopen(path, "rb");
        char magic[4] = {0};
        if (f) {
            if (fread(magic, 1, 4, f) != 4) magic[0] = 0;
            fclose(f);
        }
        if (memcmp(magic, "GGUF", 4) == 0) {
            lm_gguf *g = NULL;
            st = lm_gguf_open(path, &g);
            if (st == LM_OK) st = lm_tokenizer_from_gguf(g, &owned);
            lm_gguf_close(g);
            tok = owned;
        } else {
            st = cli_load_tokenizer(path, NULL, NULL, &owned, &tok);
        }
    } else {
        st = cli_load_tokenizer(path, tok_path, NULL, &owned, &tok);
    }
    if (st != LM_OK) {
        lm_model_free(m);
        return cli_error(st);
    }
    int32_t *ids = NULL;
    size_t n = 0;
    st = lm_tokenizer_encode(tok, text, strlen(text), bos, &ids, &n);
    if (st != LM_OK) {
        lm_tokenizer_free(owned);
        return cli_error(st);
    }
    int rc = CLI_OK;
    if (json) {
        json_t *ja = json_array(), *jp = json_array();
        for (size_t i = 0; i < n; i++) {
            size_t len;
            const char *p = lm_tokenizer_piece(tok, ids[i], &len);
            json_array_append_new(ja, json_integer(ids[i]));
            json_array_append_new(jp, cli_json_text(p, len));
        }
        json_t *j = json_object();
        json_object_set_new(j, "ids", ja);
        json_object_set_new(j, "pieces", jp);
        rc = cli_print_json(j);
    } else {
        for (size_t i = 0; i < n; i++) {
            size_t len;
            const char *p = lm_tokenizer_piece(tok, ids[i], &len);
            printf("%d\t%.*s\n", ids[i], (int)len, p);
        }
    }
    free(ids);
    lm_tokenizer_free(owned);
    return rc;
}
