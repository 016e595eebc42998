/* test_linearize.c - linear blocks and linear replacement: the affine least-squares fit against an
 * exact map and an independent solver, the distillation, a linear block W = I, b = 0 against the
 * block removed (every forward path), hooks and harvested activations, saving and loading (llama and gpt2 layouts, bad
 * files), training refused, and the must-hold on models/lumen-tiny (removing the most
 * linear block costs less than removing the least linear one, and linear replacement beats
 * removal), with the numbers printed. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "lumen/lumen.h"

static double gauss(lm_rng *r) { return (double)lm_rng_normal(r); }

/* ---- the fit ------------------------------------------------------------------------------ */

/* Y exactly affine in X: the fit gives back W and b (up to the float rounding of Y). */
static void test_fit_exact(void) {
    const size_t n = 300, d = 8;
    float *X = malloc(n * d * sizeof *X), *Y = malloc(n * d * sizeof *Y), W[64], b[8], Wt[64], bt[8];
    lm_rng r;
    lm_rng_seed(&r, 7);
    for (size_t i = 0; i < d * d; i++) Wt[i] = (float)gauss(&r);
    for (size_t i = 0; i < d; i++) bt[i] = (float)(3 * gauss(&r));
    /* columns of very different scales and a nonzero mean, as residual streams have */
    for (size_t t = 0; t < n; t++)
        for (size_t i = 0; i < d; i++) X[t * d + i] = (float)((i == 2 ? 100.0 : 1.0) * gauss(&r) + (double)i);
    for (size_t t = 0; t < n; t++)
        for (size_t j = 0; j < d; j++) {
            double s = bt[j];
            for (size_t i = 0; i < d; i++) s += (double)Wt[j * d + i] * X[t * d + i];
            Y[t * d + j] = (float)s;
        }
    lm_affine_fit fit;
    CHECKF(lm_fit_affine(X, Y, n, d, W, b, &fit) == LM_OK, "%s", lm_errmsg());
    double werr = 0, berr = 0;
    for (size_t i = 0; i < d * d; i++) werr = fmax(werr, fabs((double)W[i] - Wt[i]));
    for (size_t i = 0; i < d; i++) berr = fmax(berr, fabs((double)b[i] - bt[i]));
    CHECKF(werr < 1e-4 && berr < 1e-3, "W err %g, b err %g", werr, berr);
    CHECK(fit.method == LM_FIT_CHOLESKY && fit.rank == (int)d && fit.n == n);
    CHECKF(fit.fvu < 1e-10 && fit.mse < 1e-8, "fvu %g mse %g", fit.fvu, fit.mse);

    /* a constant input column: rank d - 1, the SVD path, its weight 0, still exact, no NaN */
    for (size_t t = 0; t < n; t++) X[t * d + 5] = 4.0f;
    for (size_t t = 0; t < n; t++)
        for (size_t j = 0; j < d; j++) {
            double s = bt[j];
            for (size_t i = 0; i < d; i++) s += (double)Wt[j * d + i] * X[t * d + i];
            Y[t * d + j] = (float)s;
        }
    CHECKF(lm_fit_affine(X, Y, n, d, W, b, &fit) == LM_OK, "%s", lm_errmsg());
    CHECKF(fit.method == LM_FIT_SVD && fit.rank == (int)d - 1, "method %d rank %d", fit.method, fit.rank);
    int finite = 1;
    for (size_t i = 0; i < d * d; i++) finite &= isfinite(W[i]) != 0;
    for (size_t j = 0; j < d; j++) CHECKF(fabsf(W[j * d + 5]) < 1e-6f, "weight of the constant column %g", W[j * d + 5]);
    CHECKF(finite && fit.fvu < 1e-10, "fvu %g", fit.fvu);

    /* too few rows, non-finite values */
    CHECK(lm_fit_affine(X, Y, d, d, W, b, NULL) == LM_ERR_ARG);
    CHECK(strstr(lm_errmsg(), "too few") != NULL);
    X[17] = NAN;
    CHECK(lm_fit_affine(X, Y, n, d, W, b, NULL) == LM_ERR_ARG);
    free(X);
    free(Y);
}

/* Solves the (d+1) x (d+1) system M z = v in place by Gauss-Jordan elimination with partial
 * pivoting (the independent reference for the normal equations with a column of ones). */
static void gauss_jordan(double *M, double *v, int k) {
    for (int c = 0; c < k; c++) {
        int p = c;
        for (int r = c + 1; r < k; r++)
            if (fabs(M[r * k + c]) > fabs(M[p * k + c])) p = r;
        for (int j = 0; j < k; j++) {
            double t = M[c * k + j];
            M[c * k + j] = M[p * k + j];
            M[p * k + j] = t;
        }
        double t = v[c];
        v[c] = v[p];
        v[p] = t;
        for (int r = 0; r < k; r++) {
            if (r == c) continue;
            double f = M[r * k + c] / M[c * k + c];
            for (int j = 0; j < k; j++) M[r * k + j] -= f * M[c * k + j];
            v[r] -= f * v[c];
        }
    }
    for (int c = 0; c < k; c++) v[c] /= M[c * k + c];
}

/* Noisy, nonlinear Y: the fit equals the least-squares solution with X augmented by a column of
 * ones, solved independently, and Adam from it cannot lower the MSE; from a worse start it does. */
static void test_fit_noisy_and_distill(void) {
    const size_t n = 500, d = 5;
    const int k = (int)d + 1;
    float *X = malloc(n * d * sizeof *X), *Y = malloc(n * d * sizeof *Y), W[25], b[5];
    lm_rng r;
    lm_rng_seed(&r, 3);
    for (size_t t = 0; t < n; t++)
        for (size_t i = 0; i < d; i++) X[t * d + i] = (float)(gauss(&r) + 0.5);
    for (size_t t = 0; t < n; t++)
        for (size_t j = 0; j < d; j++) {
            const float *x = X + t * d;
            Y[t * d + j] = (float)(x[j] + 0.3 * x[(j + 1) % d] * x[(j + 2) % d] + 0.1 * gauss(&r) + 1.0);
        }
    lm_affine_fit fit;
    CHECKF(lm_fit_affine(X, Y, n, d, W, b, &fit) == LM_OK, "%s", lm_errmsg());
    double worst = 0;
    for (size_t j = 0; j < d; j++) {
        double M[36] = {0}, v[6] = {0};
        for (size_t t = 0; t < n; t++) {
            double a[6];
            for (size_t i = 0; i < d; i++) a[i] = X[t * d + i];
            a[d] = 1;
            for (int p = 0; p < k; p++) {
                for (int q = 0; q < k; q++) M[p * k + q] += a[p] * a[q];
                v[p] += a[p] * Y[t * d + j];
            }
        }
        gauss_jordan(M, v, k);
        for (size_t i = 0; i < d; i++) worst = fmax(worst, fabs(v[i] - W[j * d + i]));
        worst = fmax(worst, fabs(v[d] - b[j]));
    }
    CHECKF(worst < 1e-5, "fit differs from the augmented normal equations by %g", worst);
    CHECKF(fit.fvu > 0.01 && fit.fvu < 0.5, "fvu %g", fit.fvu);

    /* from the least-squares optimum, Adam can only stay (or move up a little) */
    double before, after;
    lm_distill_opts o = {200, 64, 1e-3, 1};
    float W2[25], b2[5];
    memcpy(W2, W, sizeof W2);
    memcpy(b2, b, sizeof b2);
    CHECKF(lm_distill_affine(X, Y, n, d, &o, W2, b2, &before, &after) == LM_OK, "%s", lm_errmsg());
    CHECKF(fabs(before - fit.mse) <= 1e-12 * fit.mse, "mse before %g vs fit %g", before, fit.mse);
    CHECKF(after >= before * (1 - 1e-9), "Adam went below the least-squares minimum: %g < %g", after, before);
    /* from a zero map it makes progress towards it */
    memset(W2, 0, sizeof W2);
    memset(b2, 0, sizeof b2);
    lm_distill_opts o2 = {1500, 64, 1e-2, 1};
    CHECKF(lm_distill_affine(X, Y, n, d, &o2, W2, b2, &before, &after) == LM_OK, "%s", lm_errmsg());
    CHECKF(after < 0.1 * before && after < 2 * fit.mse, "mse %g -> %g (least squares %g)", before, after, fit.mse);
    /* deterministic for a seed */
    float W3[25] = {0}, b3[5] = {0};
    double a3;
    CHECK(lm_distill_affine(X, Y, n, d, &o2, W3, b3, NULL, &a3) == LM_OK);
    CHECK(memcmp(W2, W3, sizeof W2) == 0 && a3 == after);
    free(X);
    free(Y);
}

/* ---- the forward ------------------------------------------------------------------------- */

static lm_model *load_tiny(char *dir, size_t cap) {
    const char *md = getenv("LUMEN_MODELS");
    snprintf(dir, cap, "%s/lumen-tiny", md ? md : "models");
    lm_model *m = NULL;
    if (lm_model_load(dir, &m) != LM_OK) {
        CHECKF(0, "%s", lm_errmsg());
        return NULL;
    }
    return m;
}

/* Logits of every position: prefill in one call (mode 0), token by token through the KV cache
 * (mode 1), or as the second of two sequences of lm_forward_batch (mode 2). */
static float *logits(const lm_model *m, const int32_t *ids, int n, int mode) {
    size_t V = (size_t)m->cfg.vocab_size;
    float *lg = calloc((size_t)n * V, sizeof(float));
    lm_state *s = NULL;
    if (mode == 0) {
        CHECK(lm_state_new(m, n, n, &s) == LM_OK);
        CHECKF(s && lm_forward(m, s, ids, n, lg, 1) == LM_OK, "%s", lm_errmsg());
    } else if (mode == 1) {
        CHECK(lm_state_new(m, n, 1, &s) == LM_OK);
        for (int t = 0; s && t < n; t++) CHECKF(lm_forward(m, s, ids + t, 1, lg + (size_t)t * V, 0) == LM_OK, "%s", lm_errmsg());
    } else {
        int32_t *two = malloc(2 * (size_t)n * sizeof *two);
        float *both = malloc(2 * (size_t)n * V * sizeof(float));
        for (int t = 0; t < n; t++) {
            two[t] = ids[n - 1 - t];
            two[n + t] = ids[t];
        }
        CHECK(lm_state_new_batch(m, n, 2 * n, 2, &s) == LM_OK);
        CHECKF(s && lm_forward_batch(m, s, two, 2, n, both, 1) == LM_OK, "%s", lm_errmsg());
        memcpy(lg, both + (size_t)n * V, (size_t)n * V * sizeof(float));
        free(two);
        free(both);
    }
    lm_state_free(s);
    return lg;
}

typedef struct grab {
    float *buf;
    size_t rows;
    int calls;
} grab;

static lm_status grab_hook(void *ud, const lm_hook_info *info, float *act) {
    grab *g = ud;
    g->rows = (size_t)info->n_seq * (size_t)info->n_tok;
    memcpy(g->buf, act, g->rows * (size_t)info->d * sizeof(float));
    g->calls++;
    return LM_OK;
}

static void test_identity_block(void) {
    char dir[4096];
    lm_model *m = load_tiny(dir, sizeof dir);
    if (!m) return;
    const int n = 24, L = m->cfg.n_layers;
    const size_t d = (size_t)m->cfg.dim, V = (size_t)m->cfg.vocab_size;
    int32_t ids[24];
    for (int i = 0; i < n; i++) ids[i] = (int32_t)((i * 977 + 11) % (int)V);
    float *I = calloc(d * d, sizeof *I);
    for (size_t i = 0; i < d; i++) I[i * d + i] = 1.0f;
    for (int l = 0; l < L; l += 2) {
        lm_model *lin = NULL, *drop = NULL;
        CHECK(lm_model_drop_blocks(m, NULL, 0, &lin) == LM_OK);
        CHECK(lm_model_drop_blocks(m, &l, 1, &drop) == LM_OK);
        if (!lin || !drop) break;
        CHECKF(lm_model_set_linear_block(lin, l, I, NULL) == LM_OK, "%s", lm_errmsg());
        CHECK(lm_model_linear_count(lin) == 1 && lm_model_linear_count(m) == 0 && lin->cfg.n_layers == L);
        CHECK(lin->n_params == drop->n_params + d * d + d);
        for (int mode = 0; mode < 3; mode++) {
            float *a = logits(lin, ids, n, mode), *b = logits(drop, ids, n, mode);
            CHECKF(memcmp(a, b, (size_t)n * V * sizeof(float)) == 0, "block %d, path %d: W = I differs from removal",
                   l, mode);
            free(a);
            free(b);
        }
        lm_model_view_free(lin);
        lm_model_view_free(drop);
    }
    /* hooks of a linear block: resid_pre and resid_post fire, post = pre W^T + b; the others are refused */
    lm_model *lin = NULL;
    CHECK(lm_model_drop_blocks(m, NULL, 0, &lin) == LM_OK);
    float *W = malloc(d * d * sizeof *W), *bias = malloc(d * sizeof *bias);
    lm_rng r;
    lm_rng_seed(&r, 5);
    for (size_t i = 0; i < d * d; i++) W[i] = (float)(0.1 * gauss(&r)) + (i % (d + 1) == 0 ? 1.0f : 0.0f);
    for (size_t i = 0; i < d; i++) bias[i] = (float)gauss(&r);
    CHECK(lm_model_set_linear_block(lin, 2, W, bias) == LM_OK);
    lm_state *s = NULL;
    CHECK(lm_state_new(lin, n, n, &s) == LM_OK);
    grab pre = {malloc((size_t)n * d * sizeof(float)), 0, 0}, post = {malloc((size_t)n * d * sizeof(float)), 0, 0};
    CHECK(lm_state_add_hook(s, "blocks.2.hook_resid_pre", grab_hook, &pre) == LM_OK);
    CHECK(lm_state_add_hook(s, "blocks.2.hook_resid_post", grab_hook, &post) == LM_OK);
    CHECK(lm_state_add_hook(s, "blocks.2.hook_mlp_out", grab_hook, &post) == LM_ERR_ARG);
    CHECK(strstr(lm_errmsg(), "linear block") != NULL);
    CHECK(lm_state_add_hook(s, "blocks.2.hook_attn_out", grab_hook, &post) == LM_ERR_ARG);
    CHECK(lm_state_add_hook(s, "blocks.2.hook_resid_mid", grab_hook, &post) == LM_ERR_ARG);
    CHECK(lm_state_add_hook(s, "blocks.1.hook_mlp_out", grab_hook, &post) == LM_OK); /* an ordinary block */
    lm_state_clear_hooks(s);
    CHECK(lm_state_add_hook(s, "blocks.2.hook_resid_pre", grab_hook, &pre) == LM_OK);
    CHECK(lm_state_add_hook(s, "blocks.2.hook_resid_post", grab_hook, &post) == LM_OK);
    CHECK(lm_forward(lin, s, ids, n, NULL, 0) == LM_OK);
    CHECK(pre.calls == 1 && post.calls == 1 && pre.rows == (size_t)n);
    double worst = 0;
    for (int t = 0; t < n; t++)
        for (size_t j = 0; j < d; j++) {
            double e = bias[j], mag = fabs(bias[j]);
            for (size_t i = 0; i < d; i++) {
                e += (double)W[j * d + i] * pre.buf[(size_t)t * d + i];
                mag += fabs((double)W[j * d + i] * pre.buf[(size_t)t * d + i]);
            }
            worst = fmax(worst, fabs(e - post.buf[(size_t)t * d + j]) / fmax(1e-30, mag));
        }
    CHECKF(worst < 4e-6, "resid_post vs resid_pre W^T + b: %g", worst);
    /* training is refused */
    lm_trainable *tr = NULL;
    CHECK(lm_trainable_from_model(lin, &tr) == LM_ERR_UNSUPPORTED && tr == NULL);
    CHECK(strstr(lm_errmsg(), "linear block") != NULL);
    CHECK(lm_model_set_linear_block(lin, L, W, bias) == LM_ERR_ARG);
    free(pre.buf);
    free(post.buf);
    lm_state_free(s);
    lm_model_view_free(lin);
    free(W);
    free(bias);
    free(I);
    lm_model_free(m);
}

/* ---- saving and loading ------------------------------------------------------------------ */

static void rm_dir(const char *dir) {
    char p[4200];
    const char *files[] = {"config.json", "model.safetensors", "tokenizer.json"};
    for (int f = 0; f < 3; f++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[f]);
        unlink(p);
    }
    rmdir(dir);
}

static void write_text(const char *dir, const char *name, const char *text) {
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static char *read_text(const char *dir, const char *name) {
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    char *text = NULL;
    size_t len = 0;
    if (lm_read_file(p, &text, &len) != LM_OK) return NULL;
    return text;
}

/* Replaces the first occurrence of a by b in s (malloc'd result). */
static char *replace(const char *s, const char *a, const char *b) {
    const char *at = strstr(s, a);
    if (!at) return NULL;
    size_t la = strlen(a), lb = strlen(b), ls = strlen(s);
    char *o = malloc(ls - la + lb + 1);
    memcpy(o, s, (size_t)(at - s));
    memcpy(o + (at - s), b, lb);
    strcpy(o + (at - s) + lb, at + la);
    return o;
}

/* m with block `l` linear (random W, b) saved and loaded back: same logits, bit for bit. */
static void roundtrip(const lm_model *m, int l, const char *tag) {
    const size_t d = (size_t)m->cfg.dim, V = (size_t)m->cfg.vocab_size;
    lm_model *v = NULL;
    CHECK(lm_model_drop_blocks(m, NULL, 0, &v) == LM_OK);
    if (!v) return;
    float *W = malloc(d * d * sizeof *W), *b = malloc(d * sizeof *b);
    lm_rng r;
    lm_rng_seed(&r, 11);
    for (size_t i = 0; i < d * d; i++) W[i] = (float)(0.2 * gauss(&r));
    for (size_t i = 0; i < d; i++) b[i] = (float)(0.5 * gauss(&r));
    CHECK(lm_model_set_linear_block(v, l, W, b) == LM_OK);
    char out[4096];
    snprintf(out, sizeof out, "%s/linearize_%s_%d", check_tmpdir(), tag, (int)getpid());
    CHECKF(lm_model_save_hf(v, m->tokenizer, out) == LM_OK, "%s", lm_errmsg());
    lm_model *back = NULL;
    CHECKF(lm_model_load(out, &back) == LM_OK, "%s: %s", tag, lm_errmsg());
    const int n = 16;
    int32_t ids[16];
    for (int i = 0; i < n; i++) ids[i] = (int32_t)((i * 37 + 5) % (int)V);
    if (back) {
        CHECK(back->cfg.n_layers == m->cfg.n_layers && lm_model_linear_count(back) == 1 &&
              lm_layer_is_linear(&back->layers[l]));
        CHECKF(back->n_params == v->n_params, "%s: %zu params, expected %zu", tag, back->n_params, v->n_params);
        float *a = logits(v, ids, n, 0), *c = logits(back, ids, n, 0);
        CHECKF(memcmp(a, c, (size_t)n * V * sizeof(float)) == 0, "%s: reloaded logits differ", tag);
        free(a);
        free(c);
    }
    lm_model_free(back);
    char *cfg = read_text(out, "config.json");
    CHECK(cfg && strstr(cfg, "\"lumen_linear_layers\"") != NULL);
    if (cfg && !strcmp(tag, "llama")) {
        /* a listed block without its tensors, bad lists */
        char *bad = replace(cfg, "\"lumen_linear_layers\": [", "\"lumen_linear_layers\": [0, ");
        write_text(out, "config.json", bad);
        CHECK(lm_model_load(out, &back) == LM_ERR_FORMAT && back == NULL);
        CHECKF(strstr(lm_errmsg(), "model.layers.0.linear.weight") && strstr(lm_errmsg(), out), "%s", lm_errmsg());
        free(bad);
        const char *lists[] = {"\"x\", ", "9, ", "1, "};
        for (int i = 0; i < 3; i++) {
            char rep[64];
            snprintf(rep, sizeof rep, "\"lumen_linear_layers\": [%s", lists[i]);
            bad = replace(cfg, "\"lumen_linear_layers\": [", rep);
            write_text(out, "config.json", bad);
            CHECK(lm_model_load(out, &back) == LM_ERR_FORMAT && back == NULL);
            CHECKF(strstr(lm_errmsg(), "lumen_linear_layers") && strstr(lm_errmsg(), "config.json"), "%s", lm_errmsg());
            free(bad);
        }
    }
    free(cfg);
    rm_dir(out);
    /* a linear weight of the wrong shape */
    if (!strcmp(tag, "llama")) {
        lm_weight keep = v->layers[l].lin;
        v->layers[l].lin.cols = d / 2;
        CHECK(lm_model_save_hf(v, m->tokenizer, out) == LM_OK);
        v->layers[l].lin = keep;
        CHECK(lm_model_load(out, &back) == LM_ERR_FORMAT && back == NULL);
        CHECKF(strstr(lm_errmsg(), "linear.weight") && strstr(lm_errmsg(), "shape"), "%s", lm_errmsg());
        rm_dir(out);
    }
    free(W);
    free(b);
    lm_model_view_free(v);
}

static void test_save_load(void) {
    char dir[4096];
    lm_model *m = load_tiny(dir, sizeof dir);
    if (m) roundtrip(m, 1, "llama");
    lm_model_free(m);
    lm_config c = {0};
    c.arch = LM_ARCH_GPT2;
    c.dim = 32;
    c.hidden_dim = 64;
    c.n_layers = 3;
    c.n_heads = 4;
    c.n_kv_heads = 4;
    c.vocab_size = 50;
    c.seq_len = 32;
    lm_model *g = NULL;
    CHECK(lm_model_init_random(&c, 3, 0.1f, &g) == LM_OK);
    if (g) roundtrip(g, 0, "gpt2");
    lm_model_free(g);
}

/* ---- the must-hold on the shipped model ----------------------------------------- */

static void test_must_hold(void) {
    char dir[4096], calib[4200], heldout[4200];
    lm_model *m = load_tiny(dir, sizeof dir);
    if (!m || !m->tokenizer) {
        lm_model_free(m);
        return;
    }
    const char *md = getenv("LUMEN_MODELS") ? getenv("LUMEN_MODELS") : "models";
    snprintf(calib, sizeof calib, "%s/../data/calendar_train.txt", md);
    snprintf(heldout, sizeof heldout, "%s/../data/calendar_heldout.txt", md);
    int32_t *cal = NULL, *ev = NULL;
    size_t nc = 0, ne = 0;
    CHECKF(lm_tokenize_file(m->tokenizer, calib, 1, 4096, &cal, &nc) == LM_OK, "%s", lm_errmsg());
    CHECKF(lm_tokenize_file(m->tokenizer, heldout, 1, 4096, &ev, &ne) == LM_OK, "%s", lm_errmsg());
    const int L = m->cfg.n_layers, ctx = 128;
    lm_linearity_opts o = {ctx, 4, 1, -1, 3, NULL, NULL, NULL, NULL};
    lm_linearity_result r = {0};
    int order[8];
    CHECK(cal && ev && L <= 8);
    CHECK(cal && lm_linearity_profile(m, cal, nc, &o, &r) == LM_OK);
    CHECK(r.linearity && lm_prune_choose(&r, L - 1, order) == LM_OK);
    if (!r.linearity || !ev) goto out;
    int most = order[0], least = 0;
    for (int l = 0; l < L; l++) {
        int chosen = 0;
        for (int i = 0; i < L - 1; i++) chosen |= order[i] == l;
        if (!chosen) least = l;
    }
    lm_eval_result full, rm_most, rm_least, lin, lin_d;
    lm_model *v_most = NULL, *v_least = NULL, *v_lin = NULL, *v_lind = NULL;
    CHECK(lm_eval_ce(m, ev, ne, ctx, 4, NULL, NULL, &full) == LM_OK);
    CHECK(lm_model_drop_blocks(m, &most, 1, &v_most) == LM_OK);
    CHECK(lm_model_drop_blocks(m, &least, 1, &v_least) == LM_OK);
    lm_linearize_info li, lid;
    lm_linearize_opts lo = {ctx, 4, 0, 0, 0, 1, NULL, NULL};
    CHECKF(lm_linearize(m, cal, nc, &most, 1, &lo, &v_lin, &li) == LM_OK, "%s", lm_errmsg());
    lm_linearize_opts lod = {ctx, 4, 300, 256, 1e-4, 1, NULL, NULL};
    CHECKF(lm_linearize(m, cal, nc, &most, 1, &lod, &v_lind, &lid) == LM_OK, "%s", lm_errmsg());
    if (!v_most || !v_least || !v_lin || !v_lind) goto views;
    CHECK(lm_eval_ce(v_most, ev, ne, ctx, 4, NULL, NULL, &rm_most) == LM_OK);
    CHECK(lm_eval_ce(v_least, ev, ne, ctx, 4, NULL, NULL, &rm_least) == LM_OK);
    CHECK(lm_eval_ce(v_lin, ev, ne, ctx, 4, NULL, NULL, &lin) == LM_OK);
    CHECK(lm_eval_ce(v_lind, ev, ne, ctx, 4, NULL, NULL, &lin_d) == LM_OK);
    printf("lumen-tiny, linearity on %zu tokens of calendar_train.txt, perplexity on %zu predictions of "
           "calendar_heldout.txt (windows of %d):\n",
           nc, full.n_predicted, ctx);
    printf("| model | blocks | perplexity | cross-entropy |\n|---|---|---|---|\n");
    printf("| full | %d | %.4f | %.4f |\n", L, full.perplexity, full.mean_ce);
    printf("| most linear block (%d, linearity %.4f) removed | %d | %.4f | %.4f |\n", most, r.linearity[most], L - 1,
           rm_most.perplexity, rm_most.mean_ce);
    printf("| least linear block (%d, linearity %.4f) removed | %d | %.4f | %.4f |\n", least, r.linearity[least], L - 1,
           rm_least.perplexity, rm_least.mean_ce);
    printf("| block %d linearized (least squares, fvu %.4f) | %d | %.4f | %.4f |\n", most, li.fit.fvu, L,
           lin.perplexity, lin.mean_ce);
    printf("| block %d linearized + 300 Adam steps (mse %.5g -> %.5g, kept %s) | %d | %.4f | %.4f |\n", most,
           lid.mse_distill_before, lid.mse_distill_after, lid.kept_distilled ? "distilled" : "least squares", L,
           lin_d.perplexity, lin_d.mean_ce);
    CHECKF(rm_most.perplexity < rm_least.perplexity, "removing the most linear block (%g) should cost less than the "
           "least linear (%g)", rm_most.perplexity, rm_least.perplexity);
    CHECKF(lin.perplexity < rm_most.perplexity, "linear replacement (%g) should beat removal (%g)", lin.perplexity,
           rm_most.perplexity);
    CHECKF(lin_d.perplexity <= rm_most.perplexity, "distilled (%g) vs removal (%g)", lin_d.perplexity,
           rm_most.perplexity);
    CHECK(li.layer == most && li.fit.n == nc && isfinite(li.fit.mse) && li.fit.fvu > 0 && li.fit.fvu < 1);
    CHECK(lid.distilled && lid.mse_distill_before == li.fit.mse);

    /* the paper's linearity score is 1 - the unexplained variance of the centred least-squares map:
     * the profile (linearity.c, its own solve) and the fit must agree on the same rows */
    CHECKF(fabs(li.fit.fvu - (1 - r.linearity[most])) < 1e-5 * (1 - r.linearity[most]),
           "fit fvu %.9g vs 1 - linearity %.9g", li.fit.fvu, 1 - r.linearity[most]);
    {
        const size_t d = (size_t)m->cfg.dim;
        const lm_layer *ly = &v_lin->layers[most];
        CHECK(lm_layer_is_linear(ly) && !lm_layer_is_linear(&m->layers[most]));
        /* the saved model gives the same logits, bit for bit */
        char out[4096];
        snprintf(out, sizeof out, "%s/linearize_tiny_%d", check_tmpdir(), (int)getpid());
        CHECKF(lm_model_save_hf(v_lin, m->tokenizer, out) == LM_OK, "%s", lm_errmsg());
        lm_model *back = NULL;
        CHECKF(lm_model_load(out, &back) == LM_OK, "%s", lm_errmsg());
        if (back) {
            float *a = logits(v_lin, ev, 64, 0), *b = logits(back, ev, 64, 0);
            CHECK(memcmp(a, b, 64 * (size_t)m->cfg.vocab_size * sizeof(float)) == 0);
            CHECK(memcmp(back->layers[most].lin.data, ly->lin.data, d * d * sizeof(float)) == 0);
            lm_eval_result e;
            CHECK(lm_eval_ce(back, ev, ne, ctx, 4, NULL, NULL, &e) == LM_OK && e.mean_ce == lin.mean_ce);
            free(a);
            free(b);
        }
        lm_model_free(back);
        rm_dir(out);
    }
    /* the harvest path: lumen activations' shards of a linear block hold h and h W^T + b */
    {
        const size_t d = (size_t)m->cfg.dim;
        char hdir[4096], pre[64], post[64], mlp[64], shard[4200], man[4200];
        snprintf(hdir, sizeof hdir, "%s/linearize_harvest_%d", check_tmpdir(), (int)getpid());
        snprintf(pre, sizeof pre, "blocks.%d.hook_resid_pre", most);
        snprintf(post, sizeof post, "blocks.%d.hook_resid_post", most);
        snprintf(mlp, sizeof mlp, "blocks.%d.hook_mlp_out", most);
        const char *hooks[2] = {pre, post}, *bad[1] = {mlp};
        size_t nh = ne < 300 ? ne : 300;
        lm_harvest_opts ho = {hooks, 2, 64, 2, 0, "lin", "heldout"};
        lm_harvest_result hr;
        CHECKF(lm_harvest(v_lin, ev, nh, &ho, hdir, NULL, NULL, &hr) == LM_OK, "%s", lm_errmsg());
        snprintf(shard, sizeof shard, "%s/shard_00000.safetensors", hdir);
        snprintf(man, sizeof man, "%s/manifest.json", hdir);
        lm_safetensors *sf = NULL;
        CHECKF(lm_safetensors_open(shard, &sf) == LM_OK, "%s", lm_errmsg());
        const lm_st_tensor *tx = sf ? lm_safetensors_find(sf, pre) : NULL, *ty = sf ? lm_safetensors_find(sf, post) : NULL;
        CHECK(tx && ty && tx->shape[0] == nh && ty->shape[0] == nh && tx->shape[1] == d);
        if (tx && ty) {
            const float *hx = tx->data, *hy = ty->data, *W = v_lin->layers[most].lin.data, *bb = v_lin->layers[most].lin_b;
            double worst = 0;
            for (size_t t = 0; t < nh; t++)
                for (size_t j = 0; j < d; j++) {
                    /* relative to the sum of magnitudes, which bounds float's rounding of the dot product */
                    double e = bb[j], mag = fabs(bb[j]);
                    for (size_t i = 0; i < d; i++) {
                        e += (double)W[j * d + i] * hx[t * d + i];
                        mag += fabs((double)W[j * d + i] * hx[t * d + i]);
                    }
                    worst = fmax(worst, fabs(e - hy[t * d + j]) / fmax(1e-30, mag));
                }
            CHECKF(worst < 4e-6, "harvested resid_post vs resid_pre W^T + b: %g", worst);
        }
        lm_safetensors_close(sf);
        unlink(shard);
        unlink(man);
        rmdir(hdir);
        ho.hooks = bad;
        ho.n_hooks = 1;
        CHECK(lm_harvest(v_lin, ev, nh, &ho, hdir, NULL, NULL, &hr) == LM_ERR_ARG);
        CHECK(strstr(lm_errmsg(), "linear block") != NULL);
        rmdir(hdir);
    }
    /* sequential fitting of two blocks; errors */
    {
        lm_model *v2 = NULL;
        lm_linearize_info l2[2];
        int two[2] = {order[0], order[1]};
        CHECKF(lm_linearize(m, cal, nc, two, 2, &lo, &v2, l2) == LM_OK, "%s", lm_errmsg());
        CHECK(v2 && lm_model_linear_count(v2) == 2 && l2[0].layer < l2[1].layer);
        lm_model_view_free(v2);
        int dup[2] = {1, 1}, bad = L;
        v2 = NULL;
        CHECK(lm_linearize(m, cal, nc, dup, 2, &lo, &v2, NULL) == LM_ERR_ARG && !v2);
        CHECK(lm_linearize(m, cal, nc, &bad, 1, &lo, &v2, NULL) == LM_ERR_ARG && !v2);
        CHECK(lm_linearize(m, cal, (size_t)m->cfg.dim, &most, 1, &lo, &v2, NULL) == LM_ERR_ARG && !v2);
        CHECK(strstr(lm_errmsg(), "too few") != NULL);
    }
views:
    lm_model_view_free(v_most);
    lm_model_view_free(v_least);
    lm_model_view_free(v_lin);
    lm_model_view_free(v_lind);
out:
    lm_linearity_result_free(&r);
    free(cal);
    free(ev);
    lm_model_free(m);
}

int main(void) {
    lm_set_threads(2);
    test_fit_exact();
    test_fit_noisy_and_distill();
    test_identity_block();
    test_save_load();
    test_must_hold();
    return check_result();
}
