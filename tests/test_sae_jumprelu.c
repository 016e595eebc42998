/* test_sae_jumprelu.c - the JumpReLU loss (Rajamanoharan et al. 2024) against a double-precision
 * reference: the loss value and L0; the gradients of W_enc, b_enc (through the active units),
 * W_dec and b_dec by central differences that leave every unit on its side of its threshold; the
 * threshold's straight-through estimate (rectangle kernel) against the paper's formula evaluated
 * independently in double; with and without b_dec subtracted from the input. Then a short
 * training run saves a jumprelu SAE that loads back with its thresholds, and the same run resumed
 * from its middle checkpoint ends bit-identical. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lumen/lumen.h"

enum { D_IN = 8, D_SAE = 24, N = 7 };
#define STEP 1e-4
#define TOL 1e-4

static lm_rng rng;

static double rel_err(const float *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

typedef struct ref {
    int apply;
    double lam, eps;
} ref;

/* p in lm_sae's layout (W_enc, b_enc, W_dec, b_dec, threshold). Writes the active pattern
 * [N * D_SAE], the L0, and (if dth) the threshold's straight-through gradient. */
static double ref_loss(const ref *c, const double *p, const float *x, uint8_t *pat, double *l0_out, double *dth) {
    const double *We = p, *be = We + D_IN * D_SAE, *Wd = be + D_SAE, *bd = Wd + D_SAE * D_IN, *th = bd + D_IN;
    double mse = 0, l0 = 0;
    if (dth) memset(dth, 0, D_SAE * sizeof *dth);
    for (size_t t = 0; t < N; t++) {
        double pre[D_SAE], f[D_SAE], xh[D_IN], xc[D_IN];
        for (size_t j = 0; j < D_IN; j++) xc[j] = x[t * D_IN + j] - (c->apply ? bd[j] : 0);
        for (size_t i = 0; i < D_SAE; i++) {
            double s = be[i];
            for (size_t j = 0; j < D_IN; j++) s += xc[j] * We[j * D_SAE + i];
            pre[i] = s;
            f[i] = s > th[i] && s > 0 ? s : 0;
            pat[t * D_SAE + i] = f[i] != 0;
            l0 += f[i] != 0;
        }
        for (size_t j = 0; j < D_IN; j++) {
            xh[j] = bd[j];
            for (size_t i = 0; i < D_SAE; i++) xh[j] += f[i] * Wd[i * D_IN + j];
            double r = x[t * D_IN + j] - xh[j];
            mse += r * r;
        }
        if (!dth) continue;
        /* dL/df_i = (2/N) (x_hat - x) . W_dec,i; theta: -(K/eps)(theta dL/df + lam/N) */
        for (size_t i = 0; i < D_SAE; i++) {
            double u = (pre[i] - th[i]) / c->eps;
            if (!(u > -0.5 && u < 0.5)) continue;
            double gf = 0;
            for (size_t j = 0; j < D_IN; j++) gf += 2.0 / N * (xh[j] - x[t * D_IN + j]) * Wd[i * D_IN + j];
            dth[i] -= (th[i] * gf + c->lam / N) / c->eps;
        }
    }
    *l0_out = l0 / N;
    return (mse + c->lam * l0) / N;
}

static lm_sae *make_sae(void) {
    lm_sae_init in = {.arch = LM_SAE_RELU, .d_in = D_IN, .d_sae = D_SAE, .apply_b_dec_to_input = 1, .seed = 5};
    lm_sae *r = NULL;
    CHECK(lm_sae_new(&in, &r) == LM_OK);
    return r;
}

static void gradcheck(const char *label, int apply) {
    /* lm_sae_new makes relu and topk SAEs; a jumprelu one is written in SAELens layout (a relu
     * SAE's weights, random thresholds, cfg.json naming "jumprelu") and loaded */
    lm_sae *r = make_sae();
    if (!r) return;
    for (size_t i = 0; i < r->n_params; i++) r->params[i] = 0.4f * lm_rng_normal(&rng);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/sae_jumprelu_grad", check_tmpdir());
    float *th = malloc(D_SAE * sizeof *th);
    for (size_t i = 0; i < D_SAE; i++) th[i] = 0.05f + 0.3f * lm_rng_f32(&rng);
    lm_st_spec specs[5] = {{"W_enc", LM_ST_F32, 2, {D_IN, D_SAE}, r->W_enc},
                           {"b_enc", LM_ST_F32, 1, {D_SAE}, r->b_enc},
                           {"W_dec", LM_ST_F32, 2, {D_SAE, D_IN}, r->W_dec},
                           {"b_dec", LM_ST_F32, 1, {D_IN}, r->b_dec},
                           {"threshold", LM_ST_F32, 1, {D_SAE}, th}};
    char path[1200], cfg[600];
    CHECK(lm_sae_save(r, dir, NULL) == LM_OK);
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
    CHECK(lm_safetensors_write(path, specs, 5, NULL, 0) == LM_OK);
    snprintf(cfg, sizeof cfg,
             "{\"architecture\": \"jumprelu\", \"d_in\": %d, \"d_sae\": %d, \"apply_b_dec_to_input\": %s, "
             "\"normalize_activations\": \"none\", \"dtype\": \"float32\"}",
             D_IN, D_SAE, apply ? "true" : "false");
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    CHECK(lm_write_file_atomic(path, cfg, strlen(cfg)) == LM_OK);
    lm_sae *sae = NULL;
    CHECKF(lm_sae_load(dir, &sae) == LM_OK, "%s", lm_errmsg());
    lm_sae_free(r);
    free(th);
    if (!sae) return;
    CHECK(sae->arch == LM_SAE_JUMPRELU && sae->threshold && sae->apply_b_dec_to_input == apply);

    float x[N * D_IN];
    for (size_t i = 0; i < N * D_IN; i++) x[i] = lm_rng_normal(&rng);
    ref c = {apply, 0.3, 0.2}; /* a wide kernel, so that several pre-activations fall inside it */
    lm_sae_loss_opts o = {.l1_coeff = (float)c.lam, .bandwidth = (float)c.eps};
    lm_sae_grad g;
    CHECK(lm_sae_grad_init(&g, sae) == LM_OK);
    lm_sae_loss L;
    uint64_t fired[D_SAE] = {0};
    CHECKF(lm_sae_loss_backward(sae, &g, x, N, &o, &L, fired) == LM_OK, "%s", lm_errmsg());

    size_t np = sae->n_params;
    double *p = malloc(np * sizeof *p), *num = calloc(np, sizeof *num), dth[D_SAE], l0;
    for (size_t i = 0; i < np; i++) p[i] = sae->params[i];
    uint8_t pat0[N * D_SAE], pat[N * D_SAE];
    double L0 = ref_loss(&c, p, x, pat0, &l0, dth);
    CHECKF(fabs(L.total - L0) <= 1e-5 * fabs(L0), "%s: loss %.9g vs reference %.9g", label, L.total, L0);
    CHECKF(fabs(L.l0 - l0) < 1e-12 && L.sparsity == L.l0, "%s: l0 %g vs %g", label, L.l0, l0);
    size_t on = 0, total_fired = 0;
    for (size_t i = 0; i < N * D_SAE; i++) on += pat0[i];
    for (size_t i = 0; i < D_SAE; i++) total_fired += fired[i];
    CHECKF(on > N && on < N * D_SAE * 3 / 4 && total_fired == on, "%s: %zu active, %zu fired", label, on, total_fired);
    /* central differences of all parameters but the thresholds */
    size_t changed = 0, n_th = D_SAE;
    for (size_t i = 0; i < np - n_th; i++) {
        double keep = p[i], l;
        p[i] = keep + STEP;
        double lp = ref_loss(&c, p, x, pat, &l, NULL);
        changed += memcmp(pat, pat0, sizeof pat) != 0;
        p[i] = keep - STEP;
        double lm = ref_loss(&c, p, x, pat, &l, NULL);
        changed += memcmp(pat, pat0, sizeof pat) != 0;
        p[i] = keep;
        num[i] = (lp - lm) / (2 * STEP);
    }
    CHECKF(changed == 0, "%s: %zu perturbations moved a unit across its threshold", label, changed);
    struct {
        const char *name;
        float *gv, *pv;
        size_t len;
    } parts[] = {{"W_enc", g.W_enc, sae->W_enc, D_IN * D_SAE},
                 {"b_enc", g.b_enc, sae->b_enc, D_SAE},
                 {"W_dec", g.W_dec, sae->W_dec, D_SAE * D_IN},
                 {"b_dec", g.b_dec, sae->b_dec, D_IN}};
    for (size_t q = 0; q < 4; q++) {
        double err = rel_err(parts[q].gv, num + (parts[q].pv - sae->params), parts[q].len);
        CHECKF(err < TOL, "%s: d%s rel err %.3g", label, parts[q].name, err);
        fprintf(stderr, "  %-18s d%-9s rel err %.2g\n", label, parts[q].name, err);
    }
    size_t hits = 0;
    for (size_t i = 0; i < D_SAE; i++) hits += dth[i] != 0;
    double err = rel_err(g.threshold, dth, D_SAE);
    CHECKF(hits >= 3 && err < TOL, "%s: dthreshold rel err %.3g (%zu latents in the kernel)", label, err, hits);
    fprintf(stderr, "  %-18s dthreshold rel err %.2g (%zu latents in the kernel)\n", label, err, hits);
    free(p);
    free(num);
    lm_sae_grad_free(&g);
    lm_sae_free(sae);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

/* rows for a short training run: sparse combinations of 16 fixed directions */
static lm_status rows(void *ud, uint64_t pos, float *dst, size_t n, size_t d) {
    const float *dirs = ud;
    for (size_t r = 0; r < n; r++) {
        lm_rng g;
        lm_rng_seed(&g, pos + r + 1);
        memset(dst + r * d, 0, d * sizeof(float));
        for (int a = 0; a < 2; a++) {
            size_t j = lm_rng_u32(&g) % 16;
            float m = 0.5f + lm_rng_f32(&g);
            for (size_t c = 0; c < d; c++) dst[r * d + c] += m * dirs[j * d + c];
        }
    }
    return LM_OK;
}

int main(void) {
    lm_rng_seed(&rng, 11);
    gradcheck("jumprelu", 1);
    gradcheck("jumprelu no-b_dec", 0);

    /* a short run: the saved SAE loads back as jumprelu with positive thresholds that moved */
    float dirs[16 * D_IN];
    for (size_t i = 0; i < 16 * D_IN; i++) dirs[i] = lm_rng_normal(&rng);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/sae_jumprelu_train", check_tmpdir());
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
    lm_sae_train_opts o;
    memset(&o, 0, sizeof o);
    o.rows_fn = rows;
    o.rows_ud = dirs;
    o.d_in = D_IN;
    o.hook = "synthetic";
    o.out_dir = dir;
    o.arch = LM_SAE_JUMPRELU;
    o.d_sae = 32;
    o.batch = 64;
    o.buffer_mult = 4;
    o.steps = 60;
    o.lr = 1e-2f;
    o.l1_coeff = 0.1f;
    o.bandwidth = 0.05f;
    o.init_threshold = 0.01f;
    o.seed = 2;
    o.save_every = 30;
    lm_sae_train_result res;
    CHECKF(lm_sae_train(&o, &res) == LM_OK, "%s", lm_errmsg());
    fprintf(stderr, "  trained: first mse %.4g, mse %.4g, l0 %.2f\n", res.first_mse, res.mse, res.l0);
    CHECKF(res.mse < 0.5 * res.first_mse, "mse %g, first %g", res.mse, res.first_mse);
    lm_sae *s = NULL;
    CHECKF(lm_sae_load(dir, &s) == LM_OK, "%s", lm_errmsg());
    if (s) {
        size_t moved = 0, positive = 0;
        for (size_t i = 0; i < s->d_sae; i++) {
            positive += s->threshold[i] > 0;
            moved += s->threshold[i] != 0.01f;
        }
        CHECK(s->arch == LM_SAE_JUMPRELU && positive == s->d_sae && moved > 0);
    }
    lm_sae_free(s);

    /* resumed from step 30 (thresholds through their logs and back), it ends bit-identical */
    char dir_b[1024], cmd_b[1200], cp[8192], pa[1100], pb[1100];
    snprintf(dir_b, sizeof dir_b, "%s/sae_jumprelu_train_b", check_tmpdir());
    snprintf(cmd_b, sizeof cmd_b, "rm -rf '%s'", dir_b);
    if (system(cmd_b) != 0) fprintf(stderr, "warning: could not remove %s\n", dir_b);
    snprintf(cp, sizeof cp,
             "mkdir -p '%s/ckpt' && cp -r '%s/ckpt/step_00000030' '%s/ckpt/' && echo step_00000030 > '%s/ckpt/latest'",
             dir_b, dir, dir_b, dir_b);
    CHECK(system(cp) == 0);
    o.out_dir = dir_b;
    CHECKF(lm_sae_train(&o, &res) == LM_OK, "%s", lm_errmsg());
    CHECK(res.resumed_from == 30);
    snprintf(pa, sizeof pa, "%s/sae_weights.safetensors", dir);
    snprintf(pb, sizeof pb, "%s/sae_weights.safetensors", dir_b);
    char *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    CHECK(lm_read_file(pa, &a, &na) == LM_OK && lm_read_file(pb, &b, &nb) == LM_OK && na == nb && memcmp(a, b, na) == 0);
    free(a);
    free(b);
    if (system(cmd_b) != 0) fprintf(stderr, "warning: could not remove %s\n", dir_b);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
    return check_result();
}
