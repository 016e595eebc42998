/* test_model.c - loading real llama-family checkpoints (llama2.c, GGUF) and running them:
 * golden greedy text, logits against transformers' fixtures, batched == sequential, and
 * lying or truncated files rejected with a message naming the file. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "lumen/lumen.h"

static char g_path[4096];

static int collect(void *ud, int token, const char *text, size_t len, int is_prompt) {
    (void)token;
    (void)is_prompt;
    char **buf = ud;
    size_t old = *buf ? strlen(*buf) : 0;
    char *nb = realloc(*buf, old + len + 1);
    if (!nb) return 1;
    memcpy(nb + old, text, len);
    nb[old + len] = 0;
    *buf = nb;
    return 0;
}

/* Greedy 256 tokens from BOS must reproduce llama2.c's published output. */
static void check_golden(const char *model_path, const char *tok_path, const char *golden) {
    lm_model *m = NULL;
    lm_status st = lm_model_load(model_path, &m);
    CHECKF(st == LM_OK, "%s", lm_errmsg());
    if (st != LM_OK) return;
    lm_tokenizer *tok = NULL;
    if (tok_path) CHECK(lm_tokenizer_load_llama2c(tok_path, m->cfg.vocab_size, &tok) == LM_OK);
    const lm_tokenizer *t = tok ? tok : m->tokenizer;
    CHECK(t != NULL);
    if (t) {
        lm_generate_opts o = {.max_new_tokens = 256, .temperature = 0.0f, .top_p = 1.0f, .seed = 1};
        lm_generate_result res;
        char *text = NULL;
        st = lm_generate(m, t, "", 0, &o, collect, &text, &res);
        CHECKF(st == LM_OK, "%s", lm_errmsg());
        char *expect = NULL;
        size_t n = 0;
        CHECK(lm_read_file(golden, &expect, &n) == LM_OK);
        /* the golden file is the text plus the newline run.c prints at the end */
        if (expect && n && expect[n - 1] == '\n') expect[n - 1] = 0;
        CHECKF(text && expect && strcmp(text, expect) == 0, "%s: generated text differs:\n%s", model_path,
               text ? text : "(null)");
        free(expect);
        free(text);
        lm_generate_result_free(&res);
    }
    lm_tokenizer_free(tok);
    lm_model_free(m);
}

/* Prefill in one batch, in chunks, and one token at a time must agree. */
static void check_batch_consistency(const char *model_path) {
    lm_model *m = NULL;
    if (lm_model_load(model_path, &m) != LM_OK) {
        CHECKF(0, "%s", lm_errmsg());
        return;
    }
    const int T = 40;
    int V = m->cfg.vocab_size;
    int32_t toks[40];
    for (int i = 0; i < T; i++) toks[i] = (int32_t)((i * 37 + 11) % V);
    float *all = malloc((size_t)T * V * 4), *seq = malloc((size_t)T * V * 4), *chunked = malloc((size_t)T * V * 4);
    lm_state *s1, *s2, *s3;
    CHECK(lm_state_new(m, 64, 64, &s1) == LM_OK);
    CHECK(lm_state_new(m, 64, 1, &s2) == LM_OK);
    CHECK(lm_state_new(m, 64, 16, &s3) == LM_OK);
    CHECK(lm_forward(m, s1, toks, T, all, 1) == LM_OK);
    for (int i = 0; i < T; i++) CHECK(lm_forward(m, s2, toks + i, 1, seq + (size_t)i * V, 0) == LM_OK);
    CHECK(lm_forward(m, s3, toks, 23, chunked, 1) == LM_OK);
    CHECK(lm_forward(m, s3, toks + 23, T - 23, chunked + (size_t)23 * V, 1) == LM_OK);
    double num = 0, num2 = 0, den = 0;
    for (size_t i = 0; i < (size_t)T * V; i++) {
        num += (all[i] - seq[i]) * (all[i] - seq[i]);
        num2 += (all[i] - chunked[i]) * (all[i] - chunked[i]);
        den += (double)seq[i] * seq[i];
    }
    CHECKF(sqrt(num / den) < 1e-5, "batched vs sequential rel err %g", sqrt(num / den));
    CHECKF(sqrt(num2 / den) < 1e-5, "batched vs chunked rel err %g", sqrt(num2 / den));
    /* context overflow and bad ids are errors, not crashes */
    CHECK(lm_forward(m, s1, toks, 30, NULL, 0) == LM_ERR_RANGE);
    int32_t bad = V;
    lm_state_reset(s1);
    CHECK(lm_forward(m, s1, &bad, 1, NULL, 0) == LM_ERR_ARG);
    lm_state_free(s1);
    lm_state_free(s2);
    lm_state_free(s3);
    free(all);
    free(seq);
    free(chunked);
    lm_model_free(m);
}

/* Logits of a fixed sequence against the fixture written by tools/make_fixtures.py. */
static void check_fixture(const char *model_rel, const char *fixture_base, double tol) {
    const char *fx = getenv("LUMEN_FIXTURES");
    if (!fx) fx = "tests/fixtures";
    char jpath[4096], fpath[4096];
    snprintf(jpath, sizeof jpath, "%s/%s.json", fx, fixture_base);
    snprintf(fpath, sizeof fpath, "%s/%s.f32", fx, fixture_base);
    if (!check_asset(model_rel, g_path, sizeof g_path)) return;
    json_error_t jerr;
    json_t *j = json_load_file(jpath, 0, &jerr);
    CHECKF(j != NULL, "cannot read fixture %s: %s", jpath, jerr.text);
    if (!j) return;
    json_t *jt = json_object_get(j, "tokens");
    size_t T = json_array_size(jt);
    lm_model *m = NULL;
    lm_status st = lm_model_load(g_path, &m);
    CHECKF(st == LM_OK, "%s", lm_errmsg());
    char *raw = NULL;
    size_t nraw = 0;
    CHECK(lm_read_file(fpath, &raw, &nraw) == LM_OK);
    if (st == LM_OK && raw && T > 0) {
        size_t V = (size_t)m->cfg.vocab_size;
        CHECKF(nraw == T * V * 4, "fixture %s has %zu bytes, expected %zu", fpath, nraw, T * V * 4);
        int32_t *toks = malloc(T * sizeof *toks);
        for (size_t i = 0; i < T; i++) toks[i] = (int32_t)json_integer_value(json_array_get(jt, i));
        float *lg = malloc(T * V * 4);
        lm_state *s;
        CHECK(lm_state_new(m, (int)T, (int)T, &s) == LM_OK);
        CHECK(lm_forward(m, s, toks, (int)T, lg, 1) == LM_OK);
        if (nraw == T * V * 4) {
            const float *ref = (const float *)raw;
            double worst = 0;
            for (size_t t = 0; t < T; t++) {
                double num = 0, den = 0;
                for (size_t v = 0; v < V; v++) {
                    double d = lg[t * V + v] - ref[t * V + v];
                    num += d * d;
                    den += (double)ref[t * V + v] * ref[t * V + v];
                }
                double e = sqrt(num / den);
                if (e > worst) worst = e;
            }
            CHECKF(worst < tol, "%s: logits differ from %s: worst per-position rel err %g", model_rel, fpath, worst);
            fprintf(stderr, "%s vs %s: worst per-position relative error %.3g\n", model_rel, fixture_base, worst);
        }
        lm_state_free(s);
        free(lg);
        free(toks);
    }
    free(raw);
    json_decref(j);
    lm_model_free(m);
}

static char *find_bytes(char *hay, size_t n, const char *needle, size_t k) {
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(hay + i, needle, k) == 0) return hay + i;
    return NULL;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

/* Broken llama2.c and GGUF model files: every failure names the file. */
static void check_broken(const char *bin_path, const char *gguf_path) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/broken_model_%d.bin", check_tmpdir(), (int)getpid());
    char *data = NULL;
    size_t n = 0;
    if (lm_read_file(bin_path, &data, &n) != LM_OK) return;
    int bad = 0;
    size_t offs[] = {0, 1, 4, 27, 28, 29, 1000, n / 2, n - 4, n - 1};
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        write_file(tmp, data, offs[i]);
        lm_model *m = NULL;
        lm_status st = lm_model_load(tmp, &m);
        if (st == LM_OK || !strstr(lm_errmsg(), tmp)) bad++;
        lm_model_free(m);
    }
    CHECKF(bad == 0, "%d truncated llama2.c files were not rejected with the path", bad);
    /* lying headers: zero, negative and absurd sizes, heads not dividing */
    int32_t hdrs[][7] = {{0, 172, 5, 8, 4, 512, 512},       {64, 172, 5, 8, 3, 512, 512},
                         {64, 172, -5, 8, 4, 512, 512},     {64, 172, 5, 8, 4, 512, 1 << 30},
                         {1 << 30, 172, 5, 8, 4, 512, 512}, {64, 172, 5, 8, 4, INT32_MIN, 512},
                         {64, 172, 5, 7, 7, 512, 512},      {64, 172, 6, 8, 4, 512, 512}};
    for (size_t i = 0; i < sizeof hdrs / sizeof hdrs[0]; i++) {
        memcpy(data, hdrs[i], 28);
        write_file(tmp, data, n);
        lm_model *m = NULL;
        lm_status st = lm_model_load(tmp, &m);
        CHECKF(st != LM_OK && strstr(lm_errmsg(), tmp), "lying header %zu: status %d, message '%s'", i, st,
               lm_errmsg());
        lm_model_free(m);
    }
    free(data);
    unlink(tmp);
    if (!gguf_path || lm_read_file(gguf_path, &data, &n) != LM_OK) return;
    snprintf(tmp, sizeof tmp, "%s/broken_model_%d.gguf", check_tmpdir(), (int)getpid());
    /* an architecture lumen does not know: patch the "llama" value of general.architecture */
    char *p = find_bytes(data, n, "general.architecture", 20);
    CHECK(p != NULL);
    if (p) {
        char *v = find_bytes(p, 64, "llama", 5);
        if (v) {
            memcpy(v, "bloom", 5);
            write_file(tmp, data, n);
            lm_model *m = NULL;
            lm_status st = lm_model_load(tmp, &m);
            CHECKF(st == LM_ERR_UNSUPPORTED && strstr(lm_errmsg(), "bloom") && strstr(lm_errmsg(), tmp), "%s",
                   lm_errmsg());
            lm_model_free(m);
            memcpy(v, "llama", 5);
        }
    }
    /* a missing tensor: rename output_norm.weight */
    p = find_bytes(data, n, "output_norm.weight", 18);
    if (p) {
        memcpy(p, "output_xorm", 11);
        write_file(tmp, data, n);
        lm_model *m = NULL;
        lm_status st = lm_model_load(tmp, &m);
        CHECKF(st == LM_ERR_FORMAT && strstr(lm_errmsg(), "output_norm.weight") && strstr(lm_errmsg(), tmp), "%s",
               lm_errmsg());
        lm_model_free(m);
        memcpy(p, "output_norm", 11);
    }
    bad = 0;
    for (size_t cut = 0; cut < n; cut += n / 97 + 1) {
        write_file(tmp, data, cut);
        lm_model *m = NULL;
        lm_status st = lm_model_load(tmp, &m);
        if (st == LM_OK || !strstr(lm_errmsg(), tmp)) bad++;
        lm_model_free(m);
    }
    CHECKF(bad == 0, "%d truncated GGUF models were not rejected with the path", bad);
    free(data);
    unlink(tmp);
}

/* The separate-classifier variant: negative vocab in the header, classifier after the tables.
 * Built from stories260K with its embedding as the classifier, it must generate the same text. */
static void check_separate_classifier(const char *bin, const char *tok, const char *golden) {
    char *data = NULL;
    size_t n = 0;
    if (lm_read_file(bin, &data, &n) != LM_OK) return;
    size_t cls = 512 * 64 * sizeof(float);
    char *big = malloc(n + cls);
    memcpy(big, data, n);
    memcpy(big + n, data + 28, cls); /* the embedding table */
    int32_t v = -512;
    memcpy(big + 20, &v, 4);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/separate_cls_%d.bin", check_tmpdir(), (int)getpid());
    write_file(tmp, big, n + cls);
    lm_model *m = NULL;
    CHECKF(lm_model_load(tmp, &m) == LM_OK, "%s", lm_errmsg());
    if (m) {
        CHECK(!m->cfg.tied_embeddings && m->output.data != m->tok_embeddings.data);
        lm_model_free(m);
        check_golden(tmp, tok, golden);
    }
    /* the same file without its classifier is a size mismatch */
    write_file(tmp, big, n);
    CHECK(lm_model_load(tmp, &m) == LM_ERR_FORMAT && strstr(lm_errmsg(), "size mismatch"));
    unlink(tmp);
    free(big);
    free(data);
}

int main(void) {
    lm_set_threads(2);
    char bin[4096], tok[4096], gguf[4096], golden[4096], tiny[4096];
    if (!check_asset("models/stories260K/stories260K.bin", bin, sizeof bin) ||
        !check_asset("models/stories260K/tok512.bin", tok, sizeof tok) ||
        !check_asset("models/stories260K/stories260K.gguf", gguf, sizeof gguf) ||
        !check_asset("models/stories260K/stories260K_greedy_256.txt", golden, sizeof golden) ||
        !check_asset("models/llama-2-tiny-random/llama-2-tiny-random.gguf", tiny, sizeof tiny))
        return CHECK_SKIP;
    lm_model *m = NULL;
    CHECK(lm_model_load(bin, &m) == LM_OK);
    if (m) {
        const lm_config *c = &m->cfg;
        CHECK(c->dim == 64 && c->hidden_dim == 172 && c->n_layers == 5 && c->n_heads == 8 && c->n_kv_heads == 4 &&
              c->vocab_size == 512 && c->seq_len == 512 && c->tied_embeddings);
        lm_model_free(m);
    }
    CHECK(lm_model_load(gguf, &m) == LM_OK);
    if (m) {
        CHECK(m->cfg.dim == 64 && m->cfg.n_layers == 5 && m->cfg.seq_len == 2048 && m->tokenizer != NULL);
        lm_model_free(m);
    }
    check_golden(bin, tok, golden);
    check_golden(gguf, NULL, golden);
    check_batch_consistency(bin);
    check_batch_consistency(tiny);
    check_fixture("models/llama-2-tiny-random/llama-2-tiny-random.gguf", "llama2_tiny_random_logits", 1e-4);
    check_fixture("models/stories260K/stories260K.gguf", "stories260k_logits", 1e-4);
    /* multiple choice: the model that wrote the golden story knows how stories begin */
    if (lm_model_load(gguf, &m) == LM_OK) {
        const char *choices[] = {"dog", "time", "table", "red"};
        double lp[4];
        int best = -1;
        CHECK(lm_choice_score(m, m->tokenizer, "Once upon a", choices, 4, lp, &best) == LM_OK);
        CHECKF(best == 1 && lp[1] > -1.0, "best %d, log p(time) %g", best, lp[1]);
        lm_model_free(m);
    }
    check_broken(bin, gguf);
    check_separate_classifier(bin, tok, golden);
    lm_tensor_release_scratch();
    return check_result();
}
