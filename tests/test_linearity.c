/* test_linearity.c - linearity score, anisotropy and TwoNN dimension on synthetic data and against
 * llm-microscope's values (tests/fixtures/linearity), the profile of a model against the states
 * lm_harvest writes, the SVG writer, and `lumen linearity --json`. */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "lumen/lumen.h"

static float *gauss(lm_rng *r, size_t n) {
    float *a = malloc(n * sizeof *a);
    for (size_t i = 0; i < n; i++) a[i] = lm_rng_normal(r);
    return a;
}

/* a [n, k] x b [k, m], accumulated in double and rounded once */
static float *matmul(const float *a, const float *b, size_t n, size_t k, size_t m) {
    float *c = malloc(n * m * sizeof *c);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < m; j++) {
            double s = 0;
            for (size_t t = 0; t < k; t++) s += (double)a[i * k + t] * b[t * m + j];
            c[i * m + j] = (float)s;
        }
    return c;
}

static int same_double(double a, double b) { return (isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof a) == 0; }

static void test_exact_and_independent(void) {
    lm_rng r;
    lm_rng_seed(&r, 11);
    /* Y = X A + b exactly (up to float rounding of Y): 1 with centring; Y = X A: 1 without */
    size_t n = 200, d = 12;
    float *X = gauss(&r, n * d), *A = gauss(&r, d * d), *Y = matmul(X, A, n, d, d);
    double s = -1;
    CHECK(lm_linearity_score(X, Y, n, d, 0, &s) == LM_OK);
    CHECKF(fabs(s - 1.0) < 1e-9, "uncentred exact map: %.17g", s);
    for (size_t i = 0; i < n * d; i++) Y[i] += (float)(i % d) * 0.25f - 1.0f;
    CHECK(lm_linearity_score(X, Y, n, d, 1, &s) == LM_OK);
    CHECKF(fabs(s - 1.0) < 1e-9, "centred affine map: %.17g", s);
    /* more features than tokens: any centred Y is reached */
    float *Xw = gauss(&r, 20 * 50), *Yw = gauss(&r, 20 * 50);
    CHECK(lm_linearity_score(Xw, Yw, 20, 50, 1, &s) == LM_OK);
    CHECKF(fabs(s - 1.0) < 1e-9, "d > n: %.17g", s);
    free(Xw);
    free(Yw);
    free(X);
    free(A);
    free(Y);

    /* independent X and Y: each of the d target columns has an expected R^2 of about d / (n - 1);
     * the bound 3 d / n leaves room for the spread at this size */
    n = 4000, d = 8;
    X = gauss(&r, n * d), Y = gauss(&r, n * d);
    CHECK(lm_linearity_score(X, Y, n, d, 1, &s) == LM_OK);
    CHECKF(s >= 0 && s < 3.0 * d / n, "independent: %g (bound %g)", s, 3.0 * d / n);
    /* and the score without the residual of Y = X + noise equals the plain score of the noise */
    float *Z = malloc(n * d * sizeof *Z);
    for (size_t i = 0; i < n * d; i++) Z[i] = X[i] + Y[i];
    double lin, nores, plain;
    CHECK(lm_linearity_scores(X, Z, n, d, 1, &lin, &nores) == LM_OK);
    CHECK(lm_linearity_score(X, Y, n, d, 1, &plain) == LM_OK);
    CHECKF(fabs(nores - plain) < 1e-6, "no residual %.9f vs noise alone %.9f", nores, plain);
    CHECKF(lin > 0.45 && lin < 0.55, "X + noise: %g (about 1/2)", lin);
    free(X);
    free(Y);
    free(Z);
}

static void test_invariance(void) {
    /* values on a 1/1024 grid, so that shifting by 5 and scaling by powers of two stay exact in
     * float: any difference is the double arithmetic's */
    lm_rng r;
    lm_rng_seed(&r, 12);
    size_t n = 300, d = 10;
    float *X = malloc(n * d * sizeof *X), *Y = malloc(n * d * sizeof *Y), *X2 = malloc(n * d * sizeof *X2),
          *Y2 = malloc(n * d * sizeof *Y2);
    for (size_t i = 0; i < n * d; i++) X[i] = roundf(lm_rng_normal(&r) * 1024) / 1024;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++) Y[i * d + j] = roundf(tanhf(X[i * d + j] + X[i * d + (j + 1) % d]) * 1024) / 1024;
    for (size_t i = 0; i < n * d; i++) X2[i] = X[i] * 4.0f + 5.0f, Y2[i] = Y[i] * 0.25f - (float)(i % d);
    double a, b, c, e;
    CHECK(lm_linearity_score(X, Y, n, d, 1, &a) == LM_OK);
    CHECK(lm_linearity_score(X2, Y, n, d, 1, &b) == LM_OK);
    CHECK(lm_linearity_score(X, Y2, n, d, 1, &c) == LM_OK);
    CHECK(lm_linearity_score(X2, Y2, n, d, 1, &e) == LM_OK);
    CHECKF(fabs(a - b) < 1e-10 && fabs(a - c) < 1e-10 && fabs(a - e) < 1e-10, "%.15f %.15f %.15f %.15f", a, b, c, e);
    CHECK(a > 0.5 && a < 0.999);
    /* without centring a shift matters, a scale does not */
    double u, v, w;
    CHECK(lm_linearity_score(X, Y, n, d, 0, &u) == LM_OK);
    for (size_t i = 0; i < n * d; i++) Y2[i] = Y[i] * 8.0f;
    CHECK(lm_linearity_score(X, Y2, n, d, 0, &v) == LM_OK);
    CHECK(lm_linearity_score(X2, Y, n, d, 0, &w) == LM_OK);
    CHECKF(fabs(u - v) < 1e-10 && fabs(u - w) > 1e-4, "uncentred: %.15f %.15f %.15f", u, v, w);
    /* undefined: a constant Y is NaN, a constant X scores 0 */
    for (size_t i = 0; i < n * d; i++) Y2[i] = 3.0f, X2[i] = -2.0f;
    CHECK(lm_linearity_score(X, Y2, n, d, 1, &u) == LM_OK && isnan(u));
    CHECK(lm_linearity_score(X2, Y, n, d, 1, &u) == LM_OK && u == 0.0);
    /* errors */
    X2[7] = NAN;
    CHECK(lm_linearity_score(X2, Y, n, d, 1, &u) == LM_ERR_ARG && strstr(lm_errmsg(), "row 0, column 7"));
    CHECK(lm_linearity_score(X, Y, 1, d, 1, &u) == LM_ERR_ARG);
    CHECK(lm_anisotropy(X, 1, d, &u) == LM_ERR_ARG);
    CHECK(lm_intrinsic_dim(X, 2, d, &u) == LM_ERR_ARG);
    free(X);
    free(Y);
    free(X2);
    free(Y2);
}

static void test_anisotropy_and_dimension(void) {
    lm_rng r;
    lm_rng_seed(&r, 13);
    /* isotropic: 1/d, the top eigenvalue of a Wishart matrix sitting about (1 + sqrt(d/n))^2 above */
    size_t n = 5000, d = 10;
    float *X = gauss(&r, n * d);
    double a;
    CHECK(lm_anisotropy(X, n, d, &a) == LM_OK);
    CHECKF(a > 1.0 / d && a < 1.25 / d, "isotropic: %g (1/d = %g)", a, 1.0 / d);
    free(X);
    /* rank one (plus an offset): 1, through both the d x d and the n x n eigenproblem */
    size_t shapes[2][2] = {{500, 16}, {20, 64}};
    for (int k = 0; k < 2; k++) {
        n = shapes[k][0], d = shapes[k][1];
        float *t = gauss(&r, n), *v = gauss(&r, d);
        X = malloc(n * d * sizeof *X);
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < d; j++) X[i * d + j] = t[i] * v[j] + (float)j;
        CHECK(lm_anisotropy(X, n, d, &a) == LM_OK);
        CHECKF(fabs(a - 1.0) < 1e-9, "rank one %zu x %zu: %.17g", n, d, a);
        free(t);
        free(v);
        free(X);
    }
    /* TwoNN: uniform points of a square in a random 2-D plane of 10-D */
    n = 1000, d = 10;
    float *B = gauss(&r, 2 * d);
    X = malloc(n * d * sizeof *X);
    for (size_t i = 0; i < n; i++) {
        float p = lm_rng_f32(&r) * 2 - 1, q = lm_rng_f32(&r) * 2 - 1;
        for (size_t j = 0; j < d; j++) X[i * d + j] = p * B[j] + q * B[d + j] + 1.0f;
    }
    double id1, id2;
    lm_set_threads(1);
    CHECK(lm_intrinsic_dim(X, n, d, &id1) == LM_OK);
    lm_set_threads(2);
    CHECK(lm_intrinsic_dim(X, n, d, &id2) == LM_OK);
    CHECKF(id1 > 1.7 && id1 < 2.3, "plane: %g", id1);
    CHECKF(same_double(id1, id2), "threads change the result: %.17g vs %.17g", id1, id2);
    /* all rows equal: NaN, not an error */
    for (size_t i = 0; i < n * d; i++) X[i] = 1.5f;
    CHECK(lm_intrinsic_dim(X, n, d, &id1) == LM_OK && isnan(id1));
    CHECK(lm_anisotropy(X, n, d, &a) == LM_OK && isnan(a));
    free(B);
    free(X);
}

static double scalar(const lm_safetensors *st, const char *name) {
    const lm_st_tensor *t = lm_safetensors_find(st, name);
    if (!t || t->dtype != LM_ST_F64 || t->n_elements != 1) return NAN;
    double v;
    memcpy(&v, t->data, sizeof v);
    return v;
}

static void test_fixtures(void) {
    const char *fx = getenv("LUMEN_FIXTURES");
    if (!fx) fx = "tests/fixtures";
    const char *cases[] = {"smooth", "massive", "duplicates", "wide", "collinear", "plane"};
    double worst[4] = {0};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/linearity/%s.safetensors", fx, cases[c]);
        lm_safetensors *st = NULL;
        CHECKF(lm_safetensors_open(path, &st) == LM_OK, "%s", lm_errmsg());
        if (!st) continue;
        const lm_st_tensor *X = lm_safetensors_find(st, "X"), *Y = lm_safetensors_find(st, "Y");
        CHECK(X && Y && X->dtype == LM_ST_F32 && X->n_dims == 2 && Y->n_elements == X->n_elements);
        if (!X || !Y) {
            lm_safetensors_close(st);
            continue;
        }
        size_t n = X->shape[0], d = X->shape[1];
        /* the mapping keeps tensor data 8-byte aligned, but copy to be safe about floats */
        float *x = malloc(n * d * sizeof *x), *y = malloc(n * d * sizeof *y);
        memcpy(x, X->data, n * d * sizeof *x);
        memcpy(y, Y->data, n * d * sizeof *y);
        double got[4], want[4] = {scalar(st, "linearity"), scalar(st, "linearity_no_residual"),
                                  scalar(st, "anisotropy"), scalar(st, "intrinsic_dim")};
        const char *names[4] = {"linearity", "linearity_no_residual", "anisotropy", "intrinsic_dim"};
        CHECK(lm_linearity_scores(x, y, n, d, 1, &got[0], &got[1]) == LM_OK);
        CHECK(lm_anisotropy(x, n, d, &got[2]) == LM_OK);
        CHECK(lm_intrinsic_dim(x, n, d, &got[3]) == LM_OK);
        double one;
        CHECK(lm_linearity_score(x, y, n, d, 1, &one) == LM_OK);
        CHECKF(fabs(one - got[0]) < 1e-12, "%s: score alone %.17g vs with the other %.17g", cases[c], one, got[0]);
        for (int k = 0; k < 4; k++) {
            /* absolute for the scores in [0, 1], relative for the dimension */
            double err = fabs(got[k] - want[k]) / (k == 3 ? fabs(want[k]) : 1.0);
            if (err > worst[k]) worst[k] = err;
            CHECKF(err < 1e-6, "%s %s: lumen %.12f, llm-microscope %.12f", cases[c], names[k], got[k], want[k]);
        }
        free(x);
        free(y);
        lm_safetensors_close(st);
    }
    fprintf(stderr, "llm-microscope fixtures: largest error linearity %.2e, no residual %.2e, anisotropy %.2e, "
                    "intrinsic dim (relative) %.2e\n",
            worst[0], worst[1], worst[2], worst[3]);
}

/* The profile of the llama fixture equals the scores recomputed from lm_harvest's shard. */
static void test_profile_vs_harvest(void) {
    const char *fx = getenv("LUMEN_FIXTURES");
    if (!fx) fx = "tests/fixtures";
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/hf/llama", fx);
    lm_model *m = NULL;
    if (lm_model_load(dir, &m) != LM_OK) {
        CHECKF(0, "%s", lm_errmsg());
        return;
    }
    const int L = m->cfg.n_layers, ctx = 16, batch = 2, bos = 1;
    const size_t n = 70, d = (size_t)m->cfg.dim; /* 4 full windows in two batches + 6 tokens */
    int32_t ids[70];
    size_t n_bos = 0;
    for (size_t i = 0; i < n; i++) {
        ids[i] = (int32_t)((i * 37 + 11) % (size_t)m->cfg.vocab_size);
        if (i % 23 == 0) ids[i] = bos;
        n_bos += ids[i] == bos;
    }
    char **hooks = calloc((size_t)L + 1, sizeof *hooks);
    for (int i = 0; i <= L; i++) {
        hooks[i] = malloc(64);
        if (i == 0) snprintf(hooks[i], 64, "blocks.0.hook_resid_pre");
        else snprintf(hooks[i], 64, "blocks.%d.hook_resid_post", i - 1);
    }
    char out[4096];
    snprintf(out, sizeof out, "%s/linearity_harvest_%d", check_tmpdir(), (int)getpid());
    lm_harvest_opts ho = {(const char *const *)hooks, L + 1, ctx, batch, 4096, "llama-fixture", "ids"};
    lm_harvest_result hr;
    CHECKF(lm_harvest(m, ids, n, &ho, out, NULL, NULL, &hr) == LM_OK, "%s", lm_errmsg());
    char shard[4200];
    snprintf(shard, sizeof shard, "%s/shard_00000.safetensors", out);
    lm_safetensors *st = NULL;
    CHECKF(lm_safetensors_open(shard, &st) == LM_OK, "%s", lm_errmsg());
    float **h = calloc((size_t)L + 1, sizeof *h), **hk = calloc((size_t)L + 1, sizeof *hk);
    for (int i = 0; st && i <= L; i++) {
        const lm_st_tensor *t = lm_safetensors_find(st, hooks[i]);
        CHECK(t && t->n_elements == n * d);
        h[i] = malloc(n * d * sizeof(float));
        hk[i] = malloc(n * d * sizeof(float));
        if (t) memcpy(h[i], t->data, n * d * sizeof(float));
        /* the same rows without BOS */
        size_t k = 0;
        for (size_t r = 0; r < n; r++)
            if (ids[r] != bos) memcpy(hk[i] + k++ * d, h[i] + r * d, d * sizeof(float));
    }
    for (int variant = 0; st && variant < 3; variant++) {
        /* 0: all rows; 1: BOS rows dropped; 2: all rows, intrinsic dimension on the first 40 */
        lm_linearity_opts o = {ctx, batch, variant != 1, bos, variant == 2 ? 40 : 0, NULL, NULL, NULL, NULL};
        lm_linearity_result res;
        CHECKF(lm_linearity_profile(m, ids, n, &o, &res) == LM_OK, "%s", lm_errmsg());
        if (!res.anisotropy) continue;
        float **s = variant == 1 ? hk : h;
        size_t rows = variant == 1 ? n - n_bos : n, id_rows = variant == 2 ? 40 : rows;
        CHECK(res.n_layers == L && res.n_tokens == rows && res.n_windows == 5 && res.id_tokens == id_rows);
        CHECK(res.n_bos_dropped == (variant == 1 ? n_bos : 0));
        for (int i = 0; i <= L; i++) {
            double a, id, lin = NAN, nores = NAN;
            CHECK(lm_anisotropy(s[i], rows, d, &a) == LM_OK);
            CHECK(lm_intrinsic_dim(s[i], id_rows, d, &id) == LM_OK);
            if (i < L) CHECK(lm_linearity_scores(s[i], s[i + 1], rows, d, 1, &lin, &nores) == LM_OK);
            CHECKF(same_double(a, res.anisotropy[i]), "variant %d state %d anisotropy %.17g vs %.17g", variant, i, a,
                   res.anisotropy[i]);
            CHECKF(same_double(id, res.intrinsic_dim[i]), "variant %d state %d dim %.17g vs %.17g", variant, i, id,
                   res.intrinsic_dim[i]);
            if (i < L) {
                CHECKF(same_double(lin, res.linearity[i]) && same_double(nores, res.linearity_no_residual[i]),
                       "variant %d block %d: %.17g %.17g vs %.17g %.17g", variant, i, lin, nores, res.linearity[i],
                       res.linearity_no_residual[i]);
                CHECK(lin > 0 && lin <= 1 + 1e-12 && nores > 0 && nores <= 1 + 1e-12);
            }
        }
        /* the analysis alone on the harvested states gives the same bits */
        lm_linearity_result res2;
        CHECK(lm_linearity_analyse((const float *const *)s, L, rows, d, &o, &res2) == LM_OK);
        for (int i = 0; res2.anisotropy && i <= L; i++) {
            CHECK(same_double(res2.anisotropy[i], res.anisotropy[i]));
            CHECK(same_double(res2.intrinsic_dim[i], res.intrinsic_dim[i]));
            if (i < L) CHECK(same_double(res2.linearity[i], res.linearity[i]));
        }
        lm_linearity_result_free(&res2);
        lm_linearity_result_free(&res);
    }
    /* too few tokens left, and a window longer than the model's context */
    int32_t three_bos[3] = {bos, bos, 5};
    lm_linearity_opts o = {ctx, batch, 0, bos, 0, NULL, NULL, NULL, NULL};
    lm_linearity_result res;
    CHECK(lm_linearity_profile(m, three_bos, 3, &o, &res) == LM_ERR_ARG);
    o.ctx = m->cfg.seq_len + 1;
    CHECK(lm_linearity_profile(m, ids, n, &o, &res) == LM_ERR_RANGE);
    for (int i = 0; i <= L; i++) {
        free(h[i]);
        free(hk[i]);
        free(hooks[i]);
    }
    free(h);
    free(hk);
    free(hooks);
    lm_safetensors_close(st);
    lm_model_free(m);
    /* tidy the harvest directory */
    char p[4300];
    snprintf(p, sizeof p, "%s/manifest.json", out);
    unlink(p);
    unlink(shard);
    rmdir(out);
}

static void test_svg(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/linearity_%d.svg", check_tmpdir(), (int)getpid());
    double x[5] = {0, 1, 2, 3, 4}, y1[5] = {0.9, 0.95, NAN, 0.97, 0.99}, y2[5] = {0.3, 0.5, 0.4, 0.6, 0.55};
    lm_svg_series s[2] = {{"linearity", x, y1, 5}, {"no <residual> & co", x, y2, 5}};
    CHECKF(lm_write_svg_lines(path, "title \"a<b\"", "block", "score", s, 2) == LM_OK, "%s", lm_errmsg());
    char *text = NULL;
    size_t len = 0;
    CHECK(lm_read_file(path, &text, &len) == LM_OK);
    if (text) {
        CHECK(!strncmp(text, "<?xml", 5) && strstr(text, "<svg") && strstr(text, "</svg>\n"));
        CHECK(strstr(text, "title &quot;a&lt;b&quot;") && strstr(text, "no &lt;residual&gt; &amp; co"));
        /* the NaN splits the first line in two: three polylines in all */
        int lines = 0;
        for (const char *q = text; (q = strstr(q, "<polyline")); q++) lines++;
        CHECK(lines == 3);
        CHECK(!strstr(text, "nan") && !strstr(text, "inf"));
    }
    free(text);
    unlink(path);
    double bad[2] = {NAN, NAN};
    lm_svg_series none = {"x", x, bad, 2};
    CHECK(lm_write_svg_lines(path, "t", "x", NULL, &none, 1) == LM_ERR_ARG);
    CHECK(access(path, F_OK) != 0);
}

/* `lumen linearity --json` on a model with its tokenizer gives what the library gives. */
static void test_cli(void) {
    const char *bin = getenv("LUMEN_BIN");
    char model[4096], text[4096];
    if (!bin || !check_asset("models/stories260K/stories260K.gguf", model, sizeof model) ||
        !check_asset("text/cs336_tinystories_sample.txt", text, sizeof text)) {
        fprintf(stderr, "SKIP: the CLI check (no LUMEN_BIN or assets)\n");
        return;
    }
    char svg[4096], cmd[16384];
    snprintf(svg, sizeof svg, "%s/linearity_cli_%d.svg", check_tmpdir(), (int)getpid());
    snprintf(cmd, sizeof cmd, "'%s' linearity '%s' '%s' --tokens 300 --ctx 64 --no-bos --id-tokens 200 --threads 2 "
                              "--json --svg '%s' 2>/dev/null",
             bin, model, text, svg);
    FILE *p = popen(cmd, "r");
    char buf[65536];
    size_t len = p ? fread(buf, 1, sizeof buf - 1, p) : 0;
    buf[len] = 0;
    int rc = p ? pclose(p) : -1;
    CHECKF(rc == 0, "%s exited with %d", cmd, rc);
    json_error_t jerr;
    json_t *j = json_loads(buf, 0, &jerr);
    CHECKF(j != NULL, "not JSON: %s", buf);
    lm_model *m = NULL;
    CHECK(lm_model_load(model, &m) == LM_OK);
    if (j && m && m->tokenizer) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(lm_tokenize_file(m->tokenizer, text, 1, 300, &ids, &n) == LM_OK);
        lm_linearity_opts o = {64, 4, 0, lm_tokenizer_bos(m->tokenizer), 200, NULL, NULL, NULL, NULL};
        lm_linearity_result r;
        CHECK(lm_linearity_profile(m, ids, n, &o, &r) == LM_OK);
        json_t *layers = json_object_get(j, "layers");
        CHECK(json_integer_value(json_object_get(j, "tokens")) == (json_int_t)r.n_tokens && r.n_tokens == n - 1);
        CHECK(json_integer_value(json_object_get(j, "bos_dropped")) == 1);
        CHECK(json_is_array(layers) && json_array_size(layers) == (size_t)r.n_layers);
        for (int i = 0; r.anisotropy && i < r.n_layers && i < (int)json_array_size(layers); i++) {
            json_t *l = json_array_get(layers, (size_t)i);
            double v[4] = {json_real_value(json_object_get(l, "linearity")),
                           json_real_value(json_object_get(l, "linearity_no_residual")),
                           json_real_value(json_object_get(l, "anisotropy")),
                           json_real_value(json_object_get(l, "intrinsic_dim"))};
            double w[4] = {r.linearity[i], r.linearity_no_residual[i], r.anisotropy[i], r.intrinsic_dim[i]};
            CHECK(json_integer_value(json_object_get(l, "layer")) == i);
            for (int k = 0; k < 4; k++) CHECKF(fabs(v[k] - w[k]) <= 1e-9 * fmax(1, fabs(w[k])), "layer %d value %d: %.17g vs %.17g", i, k, v[k], w[k]);
        }
        lm_linearity_result_free(&r);
        free(ids);
    }
    CHECK(access(svg, F_OK) == 0);
    unlink(svg);
    json_decref(j);
    lm_model_free(m);
    /* usage errors exit 2, bad files 1 */
    snprintf(cmd, sizeof cmd, "'%s' linearity '%s' 2>/dev/null >/dev/null", bin, model);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
    snprintf(cmd, sizeof cmd, "'%s' linearity '%s' /nonexistent/file.txt 2>/dev/null >/dev/null", bin, model);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
}

int main(void) {
    lm_set_threads(2);
    test_exact_and_independent();
    test_invariance();
    test_anisotropy_and_dimension();
    test_fixtures();
    test_profile_vs_harvest();
    test_svg();
    test_cli();
    return check_result();
}
