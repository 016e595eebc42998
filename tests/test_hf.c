/* test_hf.c - Hugging Face checkpoints (gpt2, llama with GQA + llama3 rope scaling, sharded
 * llama, mistral, qwen2, and the shared tiny-random-gpt2) against transformers: logits, every
 * hidden state through the hook points, attention and MLP outputs, a hook that zeroes an MLP,
 * the batched forward against the single-sequence one. Expectations are written by
 * tools/make_hf_fixtures.py. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lumen/lumen.h"

static double rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

/* worst relative error over rows of length d */
static double row_rel_err(const float *a, const float *b, size_t rows, size_t d) {
    double worst = 0;
    for (size_t r = 0; r < rows; r++) {
        double e = rel_err(a + r * d, b + r * d, d);
        if (e > worst) worst = e;
    }
    return worst;
}

typedef struct capture {
    float *buf; /* [n_rows, d] */
    size_t n;
    int zero;   /* zero the activation instead of capturing */
    int calls;
} capture;

static lm_status capture_hook(void *ud, const lm_hook_info *info, float *act) {
    capture *c = ud;
    size_t n = (size_t)info->n_seq * info->n_tok * info->d;
    c->calls++;
    if (c->zero) {
        memset(act, 0, n * sizeof(float));
        return LM_OK;
    }
    free(c->buf);
    c->buf = malloc(n * sizeof(float));
    if (!c->buf) return lm_fail(LM_ERR_NOMEM, "capture");
    memcpy(c->buf, act, n * sizeof(float));
    c->n = n;
    return LM_OK;
}

static lm_status identity_hook(void *ud, const lm_hook_info *info, float *act) {
    (void)ud;
    size_t n = (size_t)info->n_seq * info->n_tok * info->d;
    for (size_t i = 0; i < n; i++) act[i] = act[i] * 1.0f; /* rewrite in place, same values */
    return LM_OK;
}

static const float *expect(const lm_safetensors *e, const char *name, size_t n) {
    const lm_st_tensor *t = lm_safetensors_find(e, name);
    if (!t || t->dtype != LM_ST_F32 || t->n_elements != n) {
        CHECKF(0, "%s: expectation '%s' missing or of the wrong size", e->file.path, name);
        return NULL;
    }
    return t->data;
}

static void check_model(const char *model_dir, const char *expect_path, double tol) {
    lm_model *m = NULL;
    lm_status st = lm_model_load(model_dir, &m);
    CHECKF(st == LM_OK, "%s", lm_errmsg());
    lm_safetensors *e = NULL;
    lm_status se = lm_safetensors_open(expect_path, &e);
    CHECKF(se == LM_OK, "%s", lm_errmsg());
    if (st != LM_OK || se != LM_OK) {
        lm_model_free(m);
        lm_safetensors_close(e);
        return;
    }
    const lm_st_tensor *ids = lm_safetensors_find(e, "input_ids");
    CHECK(ids && ids->dtype == LM_ST_I32 && ids->n_dims == 2);
    if (!ids) goto done;
    {
        int B = (int)ids->shape[0], T = (int)ids->shape[1], L = m->cfg.n_layers;
        size_t V = (size_t)m->cfg.vocab_size, d = (size_t)m->cfg.dim, N = (size_t)B * T;
        int32_t *toks = malloc(N * sizeof *toks);
        memcpy(toks, ids->data, N * sizeof *toks);
        float *lg = malloc(N * V * sizeof(float));
        lm_state *s = NULL;
        CHECK(lm_state_new_batch(m, T, (int)N, B, &s) == LM_OK);
        capture *post = calloc((size_t)L, sizeof *post), *mlp = calloc((size_t)L, sizeof *mlp);
        capture *attn = calloc((size_t)L, sizeof *attn), emb = {0}, fin = {0};
        char name[96];
        for (int l = 0; l < L; l++) {
            snprintf(name, sizeof name, "blocks.%d.hook_resid_post", l);
            CHECK(lm_state_add_hook(s, name, capture_hook, &post[l]) == LM_OK);
            snprintf(name, sizeof name, "blocks.%d.hook_mlp_out", l);
            CHECK(lm_state_add_hook(s, name, capture_hook, &mlp[l]) == LM_OK);
            snprintf(name, sizeof name, "blocks.%d.hook_attn_out", l);
            CHECK(lm_state_add_hook(s, name, capture_hook, &attn[l]) == LM_OK);
        }
        CHECK(lm_state_add_hook(s, "blocks.0.hook_resid_pre", capture_hook, &emb) == LM_OK);
        CHECK(lm_state_add_hook(s, "ln_final.hook_normalized", capture_hook, &fin) == LM_OK);
        CHECK(lm_forward_batch(m, s, toks, B, T, lg, 1) == LM_OK);
        const float *ref = expect(e, "logits", N * V);
        double err = ref ? row_rel_err(lg, ref, N, V) : 1;
        CHECKF(err < tol, "%s: logits rel err %g", model_dir, err);
        fprintf(stderr, "%s: logits worst row rel err %.3g\n", model_dir, err);
        /* hidden_states[0] is the embedding output = resid_pre of block 0 */
        ref = expect(e, "hidden_states.0", N * d);
        if (ref && emb.buf) CHECKF(row_rel_err(emb.buf, ref, N, d) < tol, "%s: hidden_states.0", model_dir);
        for (int l = 0; l < L; l++) {
            snprintf(name, sizeof name, "resid_post.%d", l);
            ref = expect(e, name, N * d);
            if (ref && post[l].buf)
                CHECKF(row_rel_err(post[l].buf, ref, N, d) < tol, "%s: resid_post.%d rel err %g", model_dir, l,
                       row_rel_err(post[l].buf, ref, N, d));
            /* transformers' hidden_states[l+1] is resid_post[l], except the last, which has the
             * final norm applied: that one is ln_final.hook_normalized */
            snprintf(name, sizeof name, "hidden_states.%d", l + 1);
            ref = expect(e, name, N * d);
            const float *mine = l + 1 < L ? post[l].buf : fin.buf;
            if (ref && mine)
                CHECKF(row_rel_err(mine, ref, N, d) < tol, "%s: hidden_states.%d rel err %g", model_dir, l + 1,
                       row_rel_err(mine, ref, N, d));
            snprintf(name, sizeof name, "mlp_out.%d", l);
            ref = expect(e, name, N * d);
            if (ref && mlp[l].buf) CHECKF(row_rel_err(mlp[l].buf, ref, N, d) < tol, "%s: mlp_out.%d", model_dir, l);
            snprintf(name, sizeof name, "attn_out.%d", l);
            ref = expect(e, name, N * d);
            if (ref && attn[l].buf)
                CHECKF(row_rel_err(attn[l].buf, ref, N, d) < tol, "%s: attn_out.%d", model_dir, l);
        }
        /* hooks that rewrite resid_post with itself change nothing, bit for bit */
        float *lg2 = malloc(N * V * sizeof(float));
        lm_state_clear_hooks(s);
        lm_state_reset(s);
        CHECK(lm_forward_batch(m, s, toks, B, T, lg, 1) == LM_OK);
        for (int l = 0; l < L; l++) {
            snprintf(name, sizeof name, "blocks.%d.hook_resid_post", l);
            CHECK(lm_state_add_hook(s, name, identity_hook, NULL) == LM_OK);
        }
        lm_state_reset(s);
        CHECK(lm_forward_batch(m, s, toks, B, T, lg2, 1) == LM_OK);
        CHECK(memcmp(lg, lg2, N * V * sizeof(float)) == 0);
        /* zeroing one MLP's output matches transformers with that MLP zeroed */
        int zl[2] = {0, L - 1};
        for (int k = 0; k < 2; k++) {
            snprintf(name, sizeof name, "logits_zero_mlp.%d", zl[k]);
            if (!lm_safetensors_find(e, name)) continue;
            lm_state_clear_hooks(s);
            capture z = {.zero = 1};
            char hn[96];
            snprintf(hn, sizeof hn, "blocks.%d.hook_mlp_out", zl[k]);
            CHECK(lm_state_add_hook(s, hn, capture_hook, &z) == LM_OK);
            lm_state_reset(s);
            CHECK(lm_forward_batch(m, s, toks, B, T, lg2, 1) == LM_OK);
            ref = expect(e, name, N * V);
            if (ref) CHECKF(row_rel_err(lg2, ref, N, V) < tol, "%s: %s rel err %g", model_dir, name, row_rel_err(lg2, ref, N, V));
            CHECK(z.calls == 1);
        }
        /* each sequence alone, through the single-sequence KV-cache path, gives the same logits */
        lm_state *s1 = NULL;
        CHECK(lm_state_new(m, T, T, &s1) == LM_OK);
        for (int b = 0; b < B && s1; b++) {
            lm_state_reset(s1);
            CHECK(lm_forward(m, s1, toks + (size_t)b * T, T, lg2, 1) == LM_OK);
            CHECK(rel_err(lg2, lg + (size_t)b * T * V, (size_t)T * V) < 1e-5);
            /* and token by token */
            lm_state_reset(s1);
            for (int t = 0; t < T; t++) CHECK(lm_forward(m, s1, toks + (size_t)b * T + t, 1, lg2, 0) == LM_OK);
            CHECK(rel_err(lg2, lg + ((size_t)b * T + T - 1) * V, V) < 1e-5);
        }
        lm_state_free(s1);
        for (int l = 0; l < L; l++) {
            free(post[l].buf);
            free(mlp[l].buf);
            free(attn[l].buf);
        }
        free(post);
        free(mlp);
        free(attn);
        free(emb.buf);
        free(fin.buf);
        free(lg2);
        lm_state_free(s);
        free(lg);
        free(toks);
    }
done:
    lm_safetensors_close(e);
    lm_model_free(m);
}

int main(void) {
    lm_set_threads(2);
    const char *fx = getenv("LUMEN_FIXTURES");
    if (!fx) fx = "tests/fixtures";
    const char *names[] = {"gpt2", "llama", "llama_tied", "mistral", "qwen2"};
    char dir[4096], exp[4096];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(dir, sizeof dir, "%s/hf/%s", fx, names[i]);
        snprintf(exp, sizeof exp, "%s/hf/%s.expect.safetensors", fx, names[i]);
        check_model(dir, exp, 1e-4);
    }
    char asset[4096];
    if (check_asset("models/tiny-random-gpt2", asset, sizeof asset)) {
        snprintf(exp, sizeof exp, "%s/hf/tiny_random_gpt2.expect.safetensors", fx);
        check_model(asset, exp, 1e-4);
    }
    /* hook names are validated */
    lm_model *m = NULL;
    snprintf(dir, sizeof dir, "%s/hf/llama", fx);
    if (lm_model_load(dir, &m) == LM_OK) {
        lm_hook_point p;
        int l;
        CHECK(lm_hook_parse(m, "blocks.1.hook_resid_post", &p, &l) == LM_OK && p == LM_HOOK_RESID_POST && l == 1);
        CHECK(lm_hook_parse(m, "blocks.2.hook_resid_post", &p, &l) == LM_ERR_ARG);
        CHECK(lm_hook_parse(m, "blocks.x.hook_resid_post", &p, &l) == LM_ERR_ARG);
        CHECK(lm_hook_parse(m, "hook_pos_embed", &p, &l) == LM_ERR_ARG); /* llama has no learned positions */
        CHECK(lm_hook_parse(m, "blocks.0.hook_nothing", &p, &l) == LM_ERR_ARG && strstr(lm_errmsg(), "hook_nothing"));
        lm_model_free(m);
    }
    lm_tensor_release_scratch();
    return check_result();
}
