/* cmd_tokenize_data.c - `lumen tokenize-data`: text files -> token shards with a train/validation split. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: lumen tokenize-data TOKENIZER FILE... -o DIR [options]\n\n"
            "Tokenizes text files into DIR/train_NNNN.bin and DIR/val_NNNN.bin (uint16 tokens when\n"
            "the vocabulary has at most 65536 tokens, else uint32) and DIR/meta.json, for `lumen train`.\n"
            "Documents are separated by the tokenizer's EOS (after each, byte-level BPE) or BOS\n"
            "(before each, SentencePiece-style); whole documents go to the validation split.\n"
            "TOKENIZER is any tokenizer lumen reads (tokenizer.json, a model directory, GGUF, ...).\n"
            "  -o DIR               output directory (created if missing)\n"
            "  --val-fraction F     probability that a document goes to validation (default 0.05)\n"
            "  --seed N             seed of the split (default 1)\n"
            "  --docs MODE          where documents end: blank (at blank lines, the default), lines\n"
            "                       (every line is a document) or file (each file is one document)\n"
            "  --shard-tokens N     tokens per shard file at most (default 268435456)\n"
            "  --threads N          encoding threads (default: all cores)\n"
            "  --quiet              no progress display\n"
            "  --json               print the result as one JSON object\n");
}

static json_t *split_obj(const lm_data_split_info *s) {
    return json_pack("{s:I, s:I, s:i}", "tokens", (json_int_t)s->tokens, "documents", (json_int_t)s->documents,
                     "shards", s->shards);
}

int cmd_tokenize_data(int argc, char **argv) {
    const char *tok_path = NULL, *out = NULL;
    int json = 0, quiet = 0;
    long threads = 0;
    lm_data_write_opts o;
    lm_data_write_opts_default(&o);
    const char **files = calloc((size_t)argc, sizeof *files);
    size_t n_files = 0;
    if (!files) {
        fprintf(stderr, "lumen: error: out of memory\n");
        return CLI_FAIL;
    }
    int rc = CLI_OK;
    for (int i = 1; i < argc && rc == CLI_OK; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            free(files);
            return CLI_OK;
        } else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else if (!strcmp(a, "-o") && has) out = argv[++i];
        else if (!strcmp(a, "--val-fraction") && has) {
            if (cli_parse_float("tokenize-data", a, argv[++i], 0, 1, &o.val_fraction)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--seed") && has) {
            unsigned long long v;
            if (cli_parse_u64("tokenize-data", a, argv[++i], &v)) rc = CLI_USAGE;
            o.seed = v;
        } else if (!strcmp(a, "--shard-tokens") && has) {
            unsigned long long v;
            if (cli_parse_u64("tokenize-data", a, argv[++i], &v)) rc = CLI_USAGE;
            else if (v == 0) rc = cli_usage_error("tokenize-data", "--shard-tokens must be positive");
            o.shard_tokens = v;
        } else if (!strcmp(a, "--threads") && has) {
            if (cli_parse_int("tokenize-data", a, argv[++i], 1, 4096, &threads)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--docs") && has) {
            const char *v = argv[++i];
            if (!strcmp(v, "blank")) o.docs = LM_DOC_BLANK_LINES;
            else if (!strcmp(v, "file")) o.docs = LM_DOC_FILE;
            else if (!strcmp(v, "lines")) o.docs = LM_DOC_LINES;
            else rc = cli_usage_error("tokenize-data", "--docs expects blank, lines or file, got '%s'", v);
        } else if (a[0] == '-' && a[1]) rc = cli_usage_error("tokenize-data", "unknown option or missing value: %s", a);
        else if (!tok_path) tok_path = a;
        else files[n_files++] = a;
    }
    if (rc == CLI_OK && (!tok_path || n_files == 0))
        rc = cli_usage_error("tokenize-data", "expected a TOKENIZER and at least one text FILE");
    if (rc == CLI_OK && !out) rc = cli_usage_error("tokenize-data", "expected -o DIR");
    if (rc != CLI_OK) {
        free(files);
        return rc;
    }
    o.threads = (int)threads;
    o.tokenizer_path = tok_path;
    lm_tokenizer *tok = NULL;
    const lm_tokenizer *t = NULL;
    lm_status st = cli_load_tokenizer(tok_path, NULL, NULL, &tok, &t);
    lm_data_write_result r;
    if (st == LM_OK) {
        lm_progress p;
        lm_progress_begin(&p, "tokenize-data", "B", 0, !quiet && isatty(STDERR_FILENO));
        st = lm_data_write(t, files, n_files, out, &o, cli_progress_cb, &p, &r);
        if (st == LM_OK) lm_progress_end(&p);
        else if (p.enabled && p.tty) fputc('\n', stderr);
    }
    free(files);
    lm_tokenizer_free(tok);
    if (st != LM_OK) return cli_error(st);
    if (o.val_fraction > 0 && r.val.tokens == 0)
        fprintf(stderr, "lumen tokenize-data: warning: no document went to the validation split\n");
    const char *dtype = r.width == 2 ? "uint16" : "uint32";
    if (json) {
        json_t *j = json_pack("{s:s, s:o, s:o, s:s, s:I, s:f}", "output", out, "train", split_obj(&r.train), "val",
                              split_obj(&r.val), "dtype", dtype, "bytes", (json_int_t)r.bytes_read, "seconds",
                              r.seconds);
        return cli_print_json(j);
    }
    printf("wrote %s: train %llu tokens (%llu documents, %d shards), val %llu tokens (%llu documents, %d shards), "
           "%s; %.2f s\n",
           out, (unsigned long long)r.train.tokens, (unsigned long long)r.train.documents, r.train.shards,
           (unsigned long long)r.val.tokens, (unsigned long long)r.val.documents, r.val.shards, dtype, r.seconds);
    return CLI_OK;
}
