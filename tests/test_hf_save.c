/* test_hf_save.c - models saved by lumen in the Hugging Face layout: they reload bit for bit,
 * give identical logits, and (fixture from tools/make_saved_fixture.py) transformers computes
 * the same logits from them. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "lumen/lumen.h"

static int logits_of(const lm_model *m, const int32_t *toks, int T, float *out) {
    lm_state *s = NULL;
    if (lm_state_new(m, T, T, &s) != LM_OK) return -1;
    lm_status st = lm_forward(m, s, toks, T, out, 1);
    lm_state_free(s);
    return st == LM_OK ? 0 : -1;
}

static double rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

/* Saves src_path to a temp dir, reloads, compares logits (exact when exact) and returns the dir. */
static void roundtrip(const char *src_path, int exact, char *dir, size_t dn) {
    snprintf(dir, dn, "%s/saved_%d_%ld", check_tmpdir(), (int)getpid(), (long)strlen(src_path));
    lm_model *a = NULL, *b = NULL;
    CHECKF(lm_model_load(src_path, &a) == LM_OK, "%s", lm_errmsg());
    if (!a) return;
    CHECKF(lm_model_save_hf(a, NULL, dir) == LM_OK, "%s", lm_errmsg());
    CHECKF(lm_model_load(dir, &b) == LM_OK, "%s", lm_errmsg());
    if (b) {
        CHECK(a->cfg.dim == b->cfg.dim && a->cfg.n_layers == b->cfg.n_layers && a->cfg.vocab_size == b->cfg.vocab_size &&
              a->cfg.tied_embeddings == b->cfg.tied_embeddings && a->cfg.n_kv_heads == b->cfg.n_kv_heads);
        CHECK(lm_model_param_count(a) == lm_model_param_count(b));
        int T = 9;
        int32_t toks[9];
        for (int i = 0; i < T; i++) toks[i] = (int32_t)((i * 53 + 7) % a->cfg.vocab_size);
        size_t V = (size_t)a->cfg.vocab_size;
        float *la = malloc((size_t)T * V * 4), *lb = malloc((size_t)T * V * 4);
        CHECK(logits_of(a, toks, T, la) == 0 && logits_of(b, toks, T, lb) == 0);
        if (exact)
            CHECKF(memcmp(la, lb, (size_t)T * V * 4) == 0, "%s: reloaded logits differ (rel %g)", src_path,
                   rel_err(lb, la, (size_t)T * V));
        else
            CHECKF(rel_err(lb, la, (size_t)T * V) < 1e-5, "%s: converted logits rel err %g", src_path,
                   rel_err(lb, la, (size_t)T * V));
        /* saving the reloaded model again gives the same bytes */
        char dir2[4200];
        snprintf(dir2, sizeof dir2, "%s_again", dir);
        CHECK(lm_model_save_hf(b, NULL, dir2) == LM_OK);
        char p1[4300], p2[4300];
        snprintf(p1, sizeof p1, "%s/model.safetensors", dir);
        snprintf(p2, sizeof p2, "%s/model.safetensors", dir2);
        char *d1 = NULL, *d2 = NULL;
        size_t n1 = 0, n2 = 0;
        CHECK(lm_read_file(p1, &d1, &n1) == LM_OK && lm_read_file(p2, &d2, &n2) == LM_OK);
        CHECKF(d1 && d2 && n1 == n2 && memcmp(d1, d2, n1) == 0, "%s: re-saved weights differ", src_path);
        free(d1);
        free(d2);
        free(la);
        free(lb);
    }
    lm_model_free(a);
    lm_model_free(b);
}

int main(void) {
    lm_set_threads(2);
    const char *fx = getenv("LUMEN_FIXTURES");
    if (!fx) fx = "tests/fixtures";
    char src[4096], dir[4096];
    const char *names[] = {"gpt2", "llama", "llama_tied", "qwen2"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(src, sizeof src, "%s/hf/%s", fx, names[i]);
        roundtrip(src, 1, dir, sizeof dir);
    }
    /* llama2.c (interleaved RoPE) converted to the Hugging Face layout: Q/K rows permuted */
    if (check_asset("models/stories260K/stories260K.bin", src, sizeof src)) {
        roundtrip(src, 0, dir, sizeof dir);
        /* transformers' logits for this converted model (tools/make_saved_fixture.py) */
        char exp[4096];
        snprintf(exp, sizeof exp, "%s/hf/stories260k_converted.expect.safetensors", fx);
        lm_safetensors *e = NULL;
        lm_model *m = NULL;
        CHECKF(lm_safetensors_open(exp, &e) == LM_OK, "%s", lm_errmsg());
        CHECKF(lm_model_load(dir, &m) == LM_OK, "%s", lm_errmsg());
        if (e && m) {
            const lm_st_tensor *ids = lm_safetensors_find(e, "input_ids"), *lg = lm_safetensors_find(e, "logits");
            CHECK(ids && lg && ids->dtype == LM_ST_I32 && lg->dtype == LM_ST_F32);
            if (ids && lg) {
                int T = (int)ids->n_elements;
                size_t V = (size_t)m->cfg.vocab_size;
                float *out = malloc((size_t)T * V * 4);
                CHECK(lg->n_elements == (size_t)T * V);
                CHECK(logits_of(m, ids->data, T, out) == 0);
                double err = rel_err(out, lg->data, (size_t)T * V);
                CHECKF(err < 1e-4, "transformers on lumen's converted stories260K: rel err %g", err);
                fprintf(stderr, "stories260K converted by lumen, transformers vs lumen: rel err %.3g\n", err);
                free(out);
            }
        }
        lm_safetensors_close(e);
        lm_model_free(m);
    }
    /* the model lumen trained and ships, against transformers (tools/make_trained_fixture.py) */
    {
        char exp[4096];
        snprintf(exp, sizeof exp, "%s/hf/lumen_tiny.expect.safetensors", fx);
        lm_safetensors *e = NULL;
        lm_model *m = NULL;
        const char *dir_env = getenv("LUMEN_MODELS");
        char mdir[4096];
        snprintf(mdir, sizeof mdir, "%s/lumen-tiny", dir_env ? dir_env : "models");
        CHECKF(lm_safetensors_open(exp, &e) == LM_OK, "%s", lm_errmsg());
        CHECKF(lm_model_load(mdir, &m) == LM_OK, "%s", lm_errmsg());
        if (e && m) {
            const lm_st_tensor *ids = lm_safetensors_find(e, "input_ids"), *lg = lm_safetensors_find(e, "logits");
            const char *text = lm_safetensors_meta(e, "text");
            CHECK(ids && lg && text && m->tokenizer);
            if (ids && lg && text && m->tokenizer) {
                int32_t *mine = NULL;
                size_t n = 0;
                CHECK(lm_tokenizer_encode(m->tokenizer, text, strlen(text), 0, &mine, &n) == LM_OK);
                CHECK(n == ids->n_elements && mine && memcmp(mine, ids->data, n * 4) == 0);
                free(mine);
                int T = (int)ids->n_elements;
                size_t V = (size_t)m->cfg.vocab_size;
                float *out = malloc((size_t)T * V * 4);
                CHECK(lg->n_elements == (size_t)T * V);
                CHECK(logits_of(m, ids->data, T, out) == 0);
                double err = rel_err(out, lg->data, (size_t)T * V);
                CHECKF(err < 1e-4, "transformers on models/lumen-tiny: rel err %g", err);
                fprintf(stderr, "models/lumen-tiny, transformers vs lumen: rel err %.3g\n", err);
                free(out);
            }
        }
        lm_safetensors_close(e);
        lm_model_free(m);
    }
    lm_tensor_release_scratch();
    return check_result();
}
