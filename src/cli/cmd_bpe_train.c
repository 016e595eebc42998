/* cmd_bpe_train.c - `lumen bpe-train`: learn a byte-level BPE vocabulary and write it as tokenizer.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: lumen bpe-train FILE... --vocab-size N -o tokenizer.json [options]\n\n"
            "Learns a byte-level BPE vocabulary (GPT-2's pre-tokenizer) from text files and writes\n"
            "a Hugging Face tokenizer.json. Ids 0-255 are the bytes, then the learned merges, then\n"
            "the special tokens; the first special token is BOS and EOS.\n"
            "  --vocab-size N       total vocabulary size, special tokens included (>= 256 + specials)\n"
            "  -o PATH              the tokenizer.json to write (atomically)\n"
            "  --special TEXT       a special token; repeat for more (default: <|endoftext|>)\n"
            "  --no-special         no special tokens at all\n"
            "  --min-frequency N    stop when the most frequent pair occurs fewer than N times\n"
            "  --max-bytes N        read at most N bytes of text in all\n"
            "  --quiet              no progress display\n"
            "  --json               print the result as one JSON object\n");
}

typedef struct phase_progress {
    lm_progress p;
    const char *phase;
    int enabled;
} phase_progress;

static int on_progress(void *ud, const char *phase, size_t done, size_t total) {
    phase_progress *pp = ud;
    if (pp->phase != phase && (!pp->phase || strcmp(pp->phase, phase) != 0)) {
        if (pp->phase) lm_progress_end(&pp->p);
        int merging = strcmp(phase, "merging") == 0;
        lm_progress_begin(&pp->p, merging ? "bpe-train: merging" : "bpe-train: reading", merging ? "tok" : "B",
                          (double)total, pp->enabled);
        pp->phase = phase;
    }
    pp->p.total = (double)total;
    lm_progress_update(&pp->p, (double)done);
    return 0;
}

int cmd_bpe_train(int argc, char **argv) {
    const char *out = NULL;
    long vocab = 0;
    unsigned long long min_freq = 0, max_bytes = 0;
    int json = 0, quiet = 0, no_special = 0;
    const char **files = calloc((size_t)argc, sizeof *files);
    const char **specials = calloc((size_t)argc, sizeof *specials);
    size_t n_files = 0, n_special = 0;
    int rc = CLI_OK;
    if (!files || !specials) {
        free(files);
        free(specials);
        fprintf(stderr, "lumen: error: out of memory\n");
        return CLI_FAIL;
    }
    for (int i = 1; i < argc && rc == CLI_OK; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            free(files);
            free(specials);
            return CLI_OK;
        } else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else if (!strcmp(a, "--no-special")) no_special = 1;
        else if (!strcmp(a, "-o") && has) out = argv[++i];
        else if (!strcmp(a, "--special") && has) specials[n_special++] = argv[++i];
        else if (!strcmp(a, "--vocab-size") && has) {
            if (cli_parse_int("bpe-train", a, argv[++i], 256, 1L << 24, &vocab)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--min-frequency") && has) {
            if (cli_parse_u64("bpe-train", a, argv[++i], &min_freq)) rc = CLI_USAGE;
        } else if (!strcmp(a, "--max-bytes") && has) {
            if (cli_parse_u64("bpe-train", a, argv[++i], &max_bytes)) rc = CLI_USAGE;
        } else if (a[0] == '-' && a[1]) rc = cli_usage_error("bpe-train", "unknown option or missing value: %s", a);
        else files[n_files++] = a;
    }
    if (rc == CLI_OK && n_files == 0) rc = cli_usage_error("bpe-train", "expected at least one text FILE");
    if (rc == CLI_OK && !vocab) rc = cli_usage_error("bpe-train", "expected --vocab-size N");
    if (rc == CLI_OK && !out) rc = cli_usage_error("bpe-train", "expected -o tokenizer.json");
    if (rc == CLI_OK && no_special && n_special) rc = cli_usage_error("bpe-train", "--no-special contradicts --special");
    if (rc != CLI_OK) {
        free(files);
        free(specials);
        return rc;
    }
    static const char *const DEFAULT_SPECIAL[] = {"<|endoftext|>"};
    lm_bpe_train_opts o = {0};
    o.vocab_size = (int)vocab;
    o.special_tokens = n_special ? specials : no_special ? NULL : DEFAULT_SPECIAL;
    o.n_special = n_special ? n_special : no_special ? 0 : 1;
    o.min_frequency = min_freq;
    o.max_bytes = (size_t)max_bytes;
    phase_progress pp = {.enabled = !quiet && isatty(STDERR_FILENO)};
    o.progress = on_progress;
    o.progress_ud = &pp;
    lm_tokenizer *tok = NULL;
    lm_bpe_train_stats s;
    lm_status st = lm_bpe_train_ex(files, n_files, &o, &tok, &s);
    if (pp.phase) lm_progress_end(&pp.p);
    if (st == LM_OK) st = lm_tokenizer_save_json(tok, out);
    free(files);
    free(specials);
    if (st != LM_OK) {
        lm_tokenizer_free(tok);
        return cli_error(st);
    }
    if (s.vocab_size < vocab)
        fprintf(stderr, "lumen bpe-train: warning: the text ran out of pairs to merge; the vocabulary has %d tokens, not %ld\n",
                s.vocab_size, vocab);
    if (json) {
        json_t *j = json_object();
        json_object_set_new(j, "output", json_string(out));
        json_object_set_new(j, "vocab_size", json_integer(s.vocab_size));
        json_object_set_new(j, "merges", json_integer((json_int_t)s.n_merges));
        json_object_set_new(j, "special_tokens", json_integer((json_int_t)o.n_special));
        json_object_set_new(j, "bytes", json_integer((json_int_t)s.bytes_read));
        json_object_set_new(j, "pretokens", json_integer((json_int_t)s.n_pretokens));
        json_object_set_new(j, "distinct_words", json_integer((json_int_t)s.n_words));
        json_object_set_new(j, "seconds_counting", json_real(s.seconds_counting));
        json_object_set_new(j, "seconds_merging", json_real(s.seconds_merging));
        rc = cli_print_json(j);
    } else {
        printf("wrote %s: %d tokens (%zu merges, %d special) from %zu bytes, %zu distinct words; %.2f s reading, %.2f s "
               "merging\n",
               out, s.vocab_size, s.n_merges, (int)o.n_special, s.bytes_read, s.n_words, s.seconds_counting,
               s.seconds_merging);
    }
    lm_tokenizer_free(tok);
    return rc;
}
