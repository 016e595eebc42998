/* bench_linearity.c - the `lumen linearity` computation on GPT-2 small with random weights, the
 * counterpart of bench_linearity.py.
 *
 * lm_linearity_profile, the library call behind `lumen linearity` (with the CLI's options but
 * --id-tokens 1024): 16384 random token ids in 16 windows of 1024 tokens, 4 windows per forward
 * call, the states h_0 .. h_12 captured at blocks.0.hook_resid_pre and blocks.l.hook_resid_post,
 * then per block the linearity score with and without the residual (centred, in double), and
 * per state the anisotropy (all 16384 rows) and the TwoNN intrinsic dimension (first 1024 rows).
 * The model: GPT-2 small (12 layers, d 768, 12 heads, MLP 3072, vocab 50257, context 1024, tied
 * head), N(0, 0.02^2) weights. One warm-up profile of 1024 tokens, then the best of --reps
 * profiles (default 1); the forward and analysis times are those the profile reports.
 *
 * Self-check (first; a failure exits 1): lm_linearity_scores on a fixed synthetic pair (512 rows
 * of 24, Y = X A + noise) against a recompute in double by the normal equations (Gaussian
 * elimination), within 1e-9 absolute, both with and without the residual.
 *
 *   bench_linearity [--threads N] [--tokens N] [--ctx N] [--batch N] [--id-tokens N] [--reps N]
 *
 * Prints one JSON line: {"impl": "lumen", "total_s": ..., "forward_s": ..., "analysis_s": ...}. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lumen/analysis.h"
#include "lumen/lumen.h"

/* 1 - min_A ||X'' A - Y''||_F^2 with X'', Y'' centred and of unit Frobenius norm, in double. */
static double ref_score(const float *X, const float *Y, int sub, size_t n, size_t d) {
    double *x = malloc(n * d * sizeof *x), *y = malloc(n * d * sizeof *y);
    double *M = malloc(d * d * sizeof *M), *R = malloc(d * d * sizeof *R);
    if (!x || !y || !M || !R) exit(1);
    for (size_t i = 0; i < n * d; i++) {
        x[i] = X[i];
        y[i] = sub ? (double)Y[i] - (double)X[i] : (double)Y[i];
    }
    double *a[2] = {x, y};
    for (int m = 0; m < 2; m++) {
        double ss = 0;
        for (size_t j = 0; j < d; j++) {
            double mu = 0;
            for (size_t t = 0; t < n; t++) mu += a[m][t * d + j];
            mu /= (double)n;
            for (size_t t = 0; t < n; t++) a[m][t * d + j] -= mu;
        }
        for (size_t i = 0; i < n * d; i++) ss += a[m][i] * a[m][i];
        for (size_t i = 0; i < n * d; i++) a[m][i] /= sqrt(ss);
    }
    /* M = x^T x, R = x^T y; solve M A = R (A in R) by elimination with partial pivoting */
    for (size_t i = 0; i < d; i++)
        for (size_t j = 0; j < d; j++) {
            double s = 0, r = 0;
            for (size_t t = 0; t < n; t++) {
                s += x[t * d + i] * x[t * d + j];
                r += x[t * d + i] * y[t * d + j];
            }
            M[i * d + j] = s;
            R[i * d + j] = r;
        }
    for (size_t c = 0; c < d; c++) {
        size_t p = c;
        for (size_t i = c + 1; i < d; i++)
            if (fabs(M[i * d + c]) > fabs(M[p * d + c])) p = i;
        for (size_t j = 0; j < d; j++) {
            double tm = M[c * d + j], tr = R[c * d + j];
            M[c * d + j] = M[p * d + j], R[c * d + j] = R[p * d + j];
            M[p * d + j] = tm, R[p * d + j] = tr;
        }
        for (size_t i = 0; i < d; i++) {
            if (i == c) continue;
            double f = M[i * d + c] / M[c * d + c];
            for (size_t j = 0; j < d; j++) {
                M[i * d + j] -= f * M[c * d + j];
                R[i * d + j] -= f * R[c * d + j];
            }
        }
    }
    for (size_t i = 0; i < d; i++)
        for (size_t j = 0; j < d; j++) R[i * d + j] /= M[i * d + i];
    double err = 0;
    for (size_t t = 0; t < n; t++)
        for (size_t j = 0; j < d; j++) {
            double e = -y[t * d + j];
            for (size_t i = 0; i < d; i++) e += x[t * d + i] * R[i * d + j];
            err += e * e;
        }
    free(x);
    free(y);
    free(M);
    free(R);
    return 1 - err;
}

static double self_check(void) {
    enum { N = 512, D = 24 };
    float *X = malloc(N * D * sizeof *X), *Y = malloc(N * D * sizeof *Y), A[D * D];
    if (!X || !Y) exit(1);
    lm_rng rng;
    lm_rng_seed(&rng, 3);
    for (size_t i = 0; i < N * D; i++) X[i] = lm_rng_normal(&rng) + 0.5f;
    for (size_t i = 0; i < D * D; i++) A[i] = lm_rng_normal(&rng) / 5;
    for (size_t t = 0; t < N; t++)
        for (size_t j = 0; j < D; j++) {
            float s = X[t * D + j] + 0.3f * lm_rng_normal(&rng);
            for (size_t i = 0; i < D; i++) s += X[t * D + i] * A[i * D + j];
            Y[t * D + j] = s;
        }
    double lin = NAN, nores = NAN;
    if (lm_linearity_scores(X, Y, N, D, 1, &lin, &nores) != LM_OK) return INFINITY;
    double r1 = ref_score(X, Y, 0, N, D), r2 = ref_score(X, Y, 1, N, D);
    double e1 = fabs(lin - r1), e2 = fabs(nores - r2);
    free(X);
    free(Y);
    return (e1 > e2 || isnan(e1)) ? e1 : e2; /* a NaN fails the check */
}

static int parse_int(const char *s, const char *flag, long min, long max) {
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "bench_linearity: bad value for %s: '%s'\n", flag, s);
        exit(2);
    }
    return (int)v;
}

int main(int argc, char **argv) {
    int threads = 2, tokens = 16384, ctx = 1024, batch = 4, id_tokens = 1024, reps = 1;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--threads")) threads = parse_int(argv[++i], "--threads", 1, 1024);
        else if (i + 1 < argc && !strcmp(argv[i], "--tokens")) tokens = parse_int(argv[++i], "--tokens", 3, 1 << 24);
        else if (i + 1 < argc && !strcmp(argv[i], "--ctx")) ctx = parse_int(argv[++i], "--ctx", 1, 1024);
        else if (i + 1 < argc && !strcmp(argv[i], "--batch")) batch = parse_int(argv[++i], "--batch", 1, 1024);
        else if (i + 1 < argc && !strcmp(argv[i], "--id-tokens")) id_tokens = parse_int(argv[++i], "--id-tokens", 3, 1 << 24);
        else if (i + 1 < argc && !strcmp(argv[i], "--reps")) reps = parse_int(argv[++i], "--reps", 1, 100);
        else {
            fprintf(stderr, "usage: %s [--threads N] [--tokens N] [--ctx N] [--batch N] [--id-tokens N] [--reps N]\n",
                    argv[0]);
            return 2;
        }
    }
    lm_set_threads(threads);
    double check = self_check();
    if (!(check < 1e-9)) {
        fprintf(stderr, "bench_linearity: self-check FAILED: linearity score off by %.3g from the double recompute\n",
                check);
        return 1;
    }

    lm_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.arch = LM_ARCH_GPT2;
    cfg.dim = 768;
    cfg.hidden_dim = 3072;
    cfg.n_layers = 12;
    cfg.n_heads = 12;
    cfg.n_kv_heads = 12;
    cfg.head_dim = 64;
    cfg.vocab_size = 50257;
    cfg.seq_len = 1024;
    cfg.norm_eps = 1e-5f;
    cfg.tied_embeddings = 1;
    lm_model *m = NULL;
    if (lm_model_init_random(&cfg, 1, 0.02f, &m) != LM_OK) {
        fprintf(stderr, "bench_linearity: %s\n", lm_errmsg());
        return 1;
    }
    int32_t *ids = malloc((size_t)tokens * sizeof *ids);
    if (!ids) return 1;
    lm_rng rng;
    lm_rng_seed(&rng, 5);
    for (int i = 0; i < tokens; i++) ids[i] = (int32_t)(lm_rng_u32(&rng) % (uint32_t)cfg.vocab_size);

    lm_linearity_opts o;
    memset(&o, 0, sizeof o);
    o.ctx = ctx;
    o.batch = batch;
    o.include_bos = 1;
    o.bos_id = -1;
    o.id_max_tokens = (size_t)id_tokens;
    lm_linearity_result r;
    /* warm-up: one window */
    int warm = tokens < ctx ? tokens : ctx;
    if (lm_linearity_profile(m, ids, (size_t)warm, &o, &r) != LM_OK) {
        fprintf(stderr, "bench_linearity: %s\n", lm_errmsg());
        return 1;
    }
    lm_linearity_result_free(&r);
    double best = 1e30, fwd = 0, ana = 0, lin_mean = 0, nores_mean = 0, aniso_mean = 0, id_mean = 0;
    for (int rep = 0; rep < reps; rep++) {
        double t0 = lm_now();
        if (lm_linearity_profile(m, ids, (size_t)tokens, &o, &r) != LM_OK) {
            fprintf(stderr, "bench_linearity: %s\n", lm_errmsg());
            return 1;
        }
        double t = lm_now() - t0;
        if (t < best) {
            best = t;
            fwd = r.seconds_forward;
            ana = r.seconds_analysis;
            lin_mean = nores_mean = aniso_mean = id_mean = 0;
            for (int l = 0; l < r.n_layers; l++) lin_mean += r.linearity[l] / r.n_layers;
            for (int l = 0; l < r.n_layers; l++) nores_mean += r.linearity_no_residual[l] / r.n_layers;
            for (int l = 0; l <= r.n_layers; l++) aniso_mean += r.anisotropy[l] / (r.n_layers + 1);
            for (int l = 0; l <= r.n_layers; l++) id_mean += r.intrinsic_dim[l] / (r.n_layers + 1);
        }
        lm_linearity_result_free(&r);
    }
    printf("{\"impl\": \"lumen\", \"total_s\": %.3f, \"forward_s\": %.3f, \"analysis_s\": %.3f, \"tokens\": %d, "
           "\"forward_tok_s\": %.1f, \"ctx\": %d, \"batch\": %d, \"id_tokens\": %d, \"mean_linearity\": %.6f, "
           "\"mean_linearity_no_residual\": %.6f, \"mean_anisotropy\": %.6f, \"mean_intrinsic_dim\": %.3f, "
           "\"check_abs_err\": %.2e, \"reps\": %d, \"threads\": %d}\n",
           best, fwd, ana, tokens, tokens / fwd, ctx, batch, id_tokens, lin_mean, nores_mean, aniso_mean, id_mean, check,
           reps, lm_get_threads());
    free(ids);
    lm_model_free(m);
    return 0;
}
