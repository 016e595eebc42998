/* bench_sae.c - SAE training throughput (activations/s), the counterpart of bench_sae.py.
 *
 * One training step as lumen's trainer (src/sae/sae_trainer.c) runs it: lm_sae_grad_zero,
 * lm_sae_loss_backward (forward + backward, with the fired counters), lm_sae_grad_clip (global
 * norm 1), lm_sae_adam_step (fp32 Adam), on a batch of 4096 activations of width 768 into 24576
 * latents (x N(0, 1): E||x||^2 = d_in, as the trainer scales its inputs), for two SAEs:
 *   relu  ReLU + decoder-norm-weighted L1 (l1_coeff 5, lr 5e-5)
 *   topk  TopK k = 32 with AuxK (lr 2e-4): every 8th latent marked dead (3072 dead, so
 *         k_aux = d_in / 2 = 384 and the AuxK scale is 1 x 1/32)
 * One warm-up step, then the best of --reps steps. Also reports the dense-product FLOPs per
 * second against a bare sgemm of the encoder's shape (4096 x 768 -> 24576) run through lumen's
 * threading in the same process (the best of 3 runs before the SAEs and 3 after, so a burst of
 * load from elsewhere does not halve it):
 *   relu  5 products of 2 B d_in d_sae: encoder forward, decoder forward, dL/df = dxhat W_dec^T,
 *         dW_dec = f^T dxhat, dW_enc = xc^T dpre (no gradient is needed for the input)
 *   topk  1 dense product (encoder forward) and 4 sparse passes of 2 B (k + k_aux) d_in
 *         (decoder, dL/dpre, dW_dec, and dW_enc, which lumen computes over the nonzeros of
 *         dpre only)
 *
 * Self-check (run first; a failure exits 1 so bench/run.sh stops): on 16 rows of the benchmark's
 * SAE, lumen's loss against a double-precision recompute, and lumen's gradient along a random
 * direction against a central finite difference of the double loss (AuxK off for the latter,
 * since its residual is held constant in the gradient by definition).
 *
 *   bench_sae [--arch relu|topk|all] [--threads N] [--reps N] [--batch N] [--d-sae N]
 *
 * Prints one JSON line per SAE: {"impl": "lumen", "arch": "relu", "acts_per_s": ..., ...}. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lumen/lumen.h"
#include "lumen/sae.h"

enum { D_IN = 768, K = 32, CHECK_ROWS = 16 }; /* 16 x 24576 is above the threshold of the threaded loops */

static double sgemm_peak(size_t M, size_t N, size_t K_) {
    float *x = malloc(M * K_ * 4), *w = malloc(N * K_ * 4), *y = malloc(M * N * 4);
    if (!x || !w || !y) exit(1);
    for (size_t i = 0; i < M * K_; i++) x[i] = 0.001f * (float)(i % 13);
    for (size_t i = 0; i < N * K_; i++) w[i] = 0.001f * (float)(i % 7);
    lm_linear_f32(y, x, w, NULL, M, K_, N);
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t = lm_now();
        lm_linear_f32(y, x, w, NULL, M, K_, N);
        t = lm_now() - t;
        if (t < best) best = t;
    }
    free(x);
    free(w);
    free(y);
    return 2.0 * M * N * K_ / best / 1e9;
}

/* ---- the double-precision reference ---------------------------------------------------------- */

/* A parameter of the SAE moved by h along the direction v (same layout as params). */
#define P(ptr) ((double)sae->ptr + (v ? h * (double)v[&sae->ptr - sae->params] : 0.0))

/* The loss of lm_sae_loss_backward (see sae.h) in double, at params + h v (v may be NULL). */
static double ref_loss(const lm_sae *sae, const float *v, double h, const float *x, size_t n, const uint8_t *dead,
                       size_t k_aux, double aux_coeff) {
    const size_t d_in = sae->d_in, d_sae = sae->d_sae;
    double *pre = malloc(d_sae * sizeof *pre), *xh = malloc(d_in * sizeof *xh), *xc = malloc(d_in * sizeof *xc);
    double *norm = calloc(d_sae, sizeof *norm);
    if (!pre || !xh || !xc || !norm) exit(1);
    for (size_t i = 0; i < d_sae; i++)
        for (size_t j = 0; j < d_in; j++) {
            double w = P(W_dec[i * d_in + j]);
            norm[i] += w * w;
        }
    for (size_t i = 0; i < d_sae; i++) norm[i] = sqrt(norm[i]);
    size_t n_dead = 0;
    for (size_t i = 0; dead && i < d_sae; i++) n_dead += dead[i] != 0;
    size_t kk = n_dead < k_aux ? n_dead : k_aux;
    double total = 0;
    for (size_t t = 0; t < n; t++) {
        for (size_t j = 0; j < d_in; j++) xc[j] = x[t * d_in + j] - P(b_dec[j]);
        for (size_t i = 0; i < d_sae; i++) pre[i] = P(b_enc[i]);
        for (size_t j = 0; j < d_in; j++)
            for (size_t i = 0; i < d_sae; i++) pre[i] += xc[j] * P(W_enc[j * d_sae + i]);
        for (size_t j = 0; j < d_in; j++) xh[j] = P(b_dec[j]);
        double sp = 0;
        if (sae->arch == LM_SAE_RELU) {
            for (size_t i = 0; i < d_sae; i++) {
                if (!(pre[i] > 0)) continue;
                sp += pre[i] * norm[i];
                for (size_t j = 0; j < d_in; j++) xh[j] += pre[i] * P(W_dec[i * d_in + j]);
            }
        } else {
            /* the k largest (selection by repeated scans; n and k are small here) */
            uint8_t *used = calloc(d_sae, 1);
            if (!used) exit(1);
            for (size_t r = 0; r < sae->k; r++) {
                size_t b = d_sae;
                for (size_t i = 0; i < d_sae; i++)
                    if (!used[i] && (b == d_sae || pre[i] > pre[b])) b = i;
                used[b] = 1;
                if (pre[b] > 0)
                    for (size_t j = 0; j < d_in; j++) xh[j] += pre[b] * P(W_dec[b * d_in + j]);
            }
            if (kk) {
                /* e = x - x_hat; the AuxK part: ||e - z W_dec||^2 over the top kk dead latents */
                double *e = malloc(d_in * sizeof *e);
                if (!e) exit(1);
                for (size_t j = 0; j < d_in; j++) e[j] = x[t * d_in + j] - xh[j];
                memset(used, 0, d_sae);
                for (size_t r = 0; r < kk; r++) {
                    size_t b = d_sae;
                    for (size_t i = 0; i < d_sae; i++)
                        if (dead[i] && !used[i] && (b == d_sae || pre[i] > pre[b])) b = i;
                    used[b] = 1;
                    for (size_t j = 0; j < d_in; j++) e[j] -= pre[b] * P(W_dec[b * d_in + j]);
                }
                double s = (double)n_dead / (double)k_aux < 1 ? (double)n_dead / (double)k_aux : 1.0, a = 0;
                for (size_t j = 0; j < d_in; j++) a += e[j] * e[j];
                total += aux_coeff * s * a;
                free(e);
            }
            free(used);
        }
        double r = 0;
        for (size_t j = 0; j < d_in; j++) r += (x[t * d_in + j] - xh[j]) * (x[t * d_in + j] - xh[j]);
        total += r + (sae->arch == LM_SAE_RELU ? 5.0 * sp : 0.0);
    }
    free(pre);
    free(xh);
    free(xc);
    free(norm);
    return total / (double)n;
}
#undef P

/* Loss against the double recompute (with AuxK for topk), and the gradient along a random
 * direction against a central difference (without AuxK). Returns the worse relative error. */
static double self_check(const lm_sae *sae, lm_sae_grad *g, const float *x, const uint8_t *dead, double *loss_err,
                         double *grad_err) {
    lm_sae_loss L;
    lm_sae_loss_opts o = {.l1_coeff = 5.0f, .dead = dead};
    if (lm_sae_loss_backward(sae, NULL, x, CHECK_ROWS, &o, &L, NULL) != LM_OK) return INFINITY;
    double ref = ref_loss(sae, NULL, 0, x, CHECK_ROWS, dead, D_IN / 2, 1.0 / 32);
    *loss_err = fabs(L.total - ref) / fabs(ref);
    o.dead = NULL;
    lm_sae_grad_zero(g);
    if (lm_sae_loss_backward(sae, g, x, CHECK_ROWS, &o, &L, NULL) != LM_OK) return INFINITY;
    /* v = g / |g| + a unit random direction: the finite difference then has a large signal
     * (|g| along g) and still tests every component of g (a wrong one moves <g, v> off) */
    float *v = malloc(sae->n_params * sizeof *v);
    if (!v) exit(1);
    lm_rng rng;
    lm_rng_seed(&rng, 99);
    double gg = 0, rr = 0, gv = 0;
    for (size_t i = 0; i < sae->n_params; i++) {
        v[i] = lm_rng_normal(&rng);
        gg += (double)g->data[i] * g->data[i];
        rr += (double)v[i] * v[i];
    }
    for (size_t i = 0; i < sae->n_params; i++) {
        v[i] = (float)(g->data[i] / sqrt(gg) + v[i] / sqrt(rr));
        gv += (double)g->data[i] * v[i];
    }
    const double h = 1e-6;
    double fd = (ref_loss(sae, v, h, x, CHECK_ROWS, NULL, 1, 0) - ref_loss(sae, v, -h, x, CHECK_ROWS, NULL, 1, 0)) / (2 * h);
    *grad_err = fabs(gv - fd) / fabs(fd);
    free(v);
    lm_sae_grad_zero(g);
    return *loss_err > *grad_err ? *loss_err : *grad_err;
}

/* Runs one SAE; writes its JSON fields (without the closing brace) to out and its dense GFLOP/s. */
static int run(lm_sae_arch arch, size_t B, size_t d_sae, int reps, char *out, size_t cap, double *gflops) {
    const char *name = arch == LM_SAE_RELU ? "relu" : "topk";
    lm_sae_init in = {arch, D_IN, d_sae, arch == LM_SAE_TOPK ? K : 0, 1, 0.1f, 7};
    lm_sae *sae = NULL;
    lm_sae_grad g;
    lm_sae_adam adam;
    if (lm_sae_new(&in, &sae) != LM_OK || lm_sae_grad_init(&g, sae) != LM_OK || lm_sae_adam_init(&adam, sae) != LM_OK) {
        fprintf(stderr, "bench_sae: %s\n", lm_errmsg());
        return 1;
    }
    float *x = malloc(B * D_IN * sizeof *x);
    uint8_t *dead = calloc(d_sae, 1);
    uint64_t *fired = calloc(d_sae, sizeof *fired);
    if (!x || !dead || !fired) return 1;
    lm_rng rng;
    lm_rng_seed(&rng, 11);
    for (size_t i = 0; i < B * D_IN; i++) x[i] = lm_rng_normal(&rng);
    size_t n_dead = 0;
    if (arch == LM_SAE_TOPK)
        for (size_t i = 0; i < d_sae; i += 8) dead[i] = 1, n_dead++;

    double loss_err = 0, grad_err = 0;
    double worst = self_check(sae, &g, x, arch == LM_SAE_TOPK ? dead : NULL, &loss_err, &grad_err);
    if (!(worst < 1e-3)) {
        fprintf(stderr, "bench_sae: %s self-check FAILED: loss rel err %.3g, gradient rel err %.3g\n", name, loss_err,
                grad_err);
        return 1;
    }

    const float lr = arch == LM_SAE_RELU ? 5e-5f : 2e-4f;
    lm_sae_loss_opts o = {.l1_coeff = 5.0f, .dead = arch == LM_SAE_TOPK ? dead : NULL};
    lm_sae_loss L;
    double best = 1e30, first_loss = 0, gn = 0, t_loss = 0, t_clip = 0, t_adam = 0;
    for (int s = 0; s < reps + 1; s++) {
        double t0 = lm_now();
        lm_sae_grad_zero(&g);
        memset(fired, 0, d_sae * sizeof *fired);
        if (lm_sae_loss_backward(sae, &g, x, B, &o, &L, fired) != LM_OK) {
            fprintf(stderr, "bench_sae: %s\n", lm_errmsg());
            return 1;
        }
        double t1 = lm_now();
        gn = lm_sae_grad_clip(&g, 1.0);
        double t2 = lm_now();
        lm_sae_adam_step(&adam, sae, &g, lr);
        double t3 = lm_now();
        if (s == 0) first_loss = L.total;
        if (s > 0 && t3 - t0 < best) { /* s == 0 is the warm-up */
            best = t3 - t0;
            t_loss = t1 - t0;
            t_clip = t2 - t1;
            t_adam = t3 - t2;
        }
    }
    if (!isfinite(L.total) || !isfinite(gn)) {
        fprintf(stderr, "bench_sae: %s: loss or gradient not finite\n", name);
        return 1;
    }
    const double mm = 2.0 * (double)B * D_IN * (double)d_sae;
    size_t kk = n_dead < D_IN / 2 ? n_dead : D_IN / 2;
    /* topk: dW_enc is a sparse product too when lumen takes that path (k + kk <= d_sae / 16) */
    const double sp = 2.0 * (double)B * (double)(K + kk) * D_IN;
    double flops = arch == LM_SAE_RELU ? 5 * mm : (K + kk) * 16 <= d_sae ? mm + 4 * sp : 2 * mm + 3 * sp;
    *gflops = flops / best / 1e9;
    snprintf(out, cap,
             "{\"impl\": \"lumen\", \"arch\": \"%s\", \"acts_per_s\": %.1f, \"step_s\": %.4f, \"loss_backward_s\": %.4f, "
             "\"clip_s\": %.4f, \"adam_s\": %.4f, \"first_loss\": %.4f, \"last_loss\": %.4f, \"l0\": %.1f, "
             "\"gflops\": %.1f, \"check_loss_rel_err\": %.2e, \"check_grad_rel_err\": %.2e, \"batch\": %zu, "
             "\"d_in\": %d, \"d_sae\": %zu, \"k\": %d, \"n_dead\": %zu, \"reps\": %d, \"threads\": %d",
             name, (double)B / best, best, t_loss, t_clip, t_adam, first_loss, L.total, L.l0, *gflops, loss_err, grad_err,
             B, D_IN, d_sae, arch == LM_SAE_TOPK ? K : 0, n_dead, reps, lm_get_threads());
    free(x);
    free(dead);
    free(fired);
    lm_sae_adam_free(&adam);
    lm_sae_grad_free(&g);
    lm_sae_free(sae);
    return 0;
}

static int parse_int(const char *s, const char *flag, long min, long max) {
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "bench_sae: bad value for %s: '%s'\n", flag, s);
        exit(2);
    }
    return (int)v;
}

int main(int argc, char **argv) {
    const char *which = "all";
    int threads = 2, reps = 3, batch = 4096, d_sae = 24576;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--arch")) which = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--threads")) threads = parse_int(argv[++i], "--threads", 1, 1024);
        else if (i + 1 < argc && !strcmp(argv[i], "--reps")) reps = parse_int(argv[++i], "--reps", 1, 1000);
        else if (i + 1 < argc && !strcmp(argv[i], "--batch")) batch = parse_int(argv[++i], "--batch", CHECK_ROWS, 1 << 20);
        else if (i + 1 < argc && !strcmp(argv[i], "--d-sae")) d_sae = parse_int(argv[++i], "--d-sae", 8 * D_IN, 1 << 22);
        else {
            fprintf(stderr, "usage: %s [--arch relu|topk|all] [--threads N] [--reps N] [--batch N] [--d-sae N]\n", argv[0]);
            return 2;
        }
    }
    int relu = !strcmp(which, "relu") || !strcmp(which, "all"), topk = !strcmp(which, "topk") || !strcmp(which, "all");
    if (!relu && !topk) return 2;
    lm_set_threads(threads);
    double peak = sgemm_peak((size_t)batch, (size_t)d_sae, D_IN);
    char js[2][1024] = {"", ""};
    double gf[2] = {0, 0};
    int rc = 0;
    if (relu) rc |= run(LM_SAE_RELU, (size_t)batch, (size_t)d_sae, reps, js[0], sizeof js[0], &gf[0]);
    if (topk && rc == 0) rc |= run(LM_SAE_TOPK, (size_t)batch, (size_t)d_sae, reps, js[1], sizeof js[1], &gf[1]);
    if (rc) return rc;
    double p2 = sgemm_peak((size_t)batch, (size_t)d_sae, D_IN);
    if (p2 > peak) peak = p2;
    for (int a = 0; a < 2; a++)
        if (js[a][0])
            printf("%s, \"sgemm_peak_gflops\": %.1f, \"share_of_peak\": %.3f}\n", js[a], peak, gf[a] / peak);
    return rc;
}
