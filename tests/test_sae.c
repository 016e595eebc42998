/* test_sae.c - SAEs: every parameter gradient of the ReLU+L1 and TopK+AuxK losses against central differences of a
 * double-precision reference, TopK sparsity, the sparse decoder, scale folding, training steps, and SAELens-format IO
 * both ways (fixtures from tools/make_sae_fixtures.py; see its header for how lumen_saved/ is regenerated). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "lumen/lumen.h"

#define STEP 1e-5
#define TOL 1e-4
#define IO_TOL 1e-5

static lm_rng rng;

static void fill(float *x, size_t n, float s) {
    for (size_t i = 0; i < n; i++) x[i] = s * lm_rng_normal(&rng);
}

static double rel_err(const float *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}

/* ---- double-precision reference loss ---------------------------------------------------------
 * p: the parameters in lm_sae's layout. pattern[n*d_sae] records, per latent, bit0 = in the top-k set,
 * bit1 = in the AuxK set, bit2 = pre > 0, so a check can assert that a perturbation left the piecewise
 * structure alone. e: the AuxK residual; if fix_e it is read (held constant, as in the analytic gradient),
 * otherwise written. */
typedef struct ref_cfg {
    lm_sae_arch arch;
    size_t d_in, d_sae, k, n, k_aux;
    int apply;
    double lam, alpha;
    const uint8_t *dead;
} ref_cfg;

static void ref_topk(const double *pre, size_t d, size_t k, const uint8_t *mask, uint8_t *pat, uint8_t bit) {
    for (size_t j = 0; j < k; j++) {
        size_t best = d;
        for (size_t i = 0; i < d; i++) {
            if ((mask && !mask[i]) || (pat[i] & bit)) continue;
            if (best == d || pre[i] > pre[best]) best = i;
        }
        if (best < d) pat[best] |= bit;
    }
}

static double ref_loss(const ref_cfg *c, const double *p, const float *x, uint8_t *pattern, double *e, int fix_e) {
    const size_t di = c->d_in, ds = c->d_sae;
    const double *We = p, *be = p + di * ds, *Wd = be + ds, *bd = Wd + ds * di;
    double *pre = malloc(ds * sizeof *pre), *xh = malloc(di * sizeof *xh), *xc = malloc(di * sizeof *xc);
    size_t n_dead = 0;
    if (c->dead)
        for (size_t i = 0; i < ds; i++) n_dead += c->dead[i] != 0;
    size_t kk = n_dead < c->k_aux ? n_dead : c->k_aux;
    double scale = (double)n_dead / c->k_aux < 1 ? (double)n_dead / c->k_aux : 1;
    double mse = 0, sp = 0, aux = 0;
    for (size_t t = 0; t < c->n; t++) {
        uint8_t *pat = pattern + t * ds;
        memset(pat, 0, ds);
        for (size_t j = 0; j < di; j++) xc[j] = x[t * di + j] - (c->apply ? bd[j] : 0);
        for (size_t i = 0; i < ds; i++) {
            double s = be[i];
            for (size_t j = 0; j < di; j++) s += xc[j] * We[j * ds + i];
            pre[i] = s;
            if (s > 0) pat[i] |= 4;
        }
        if (c->arch == LM_SAE_TOPK) {
            ref_topk(pre, ds, c->k, NULL, pat, 1);
            if (kk) ref_topk(pre, ds, kk, c->dead, pat, 2);
        }
        for (size_t j = 0; j < di; j++) xh[j] = bd[j];
        for (size_t i = 0; i < ds; i++) {
            int on = c->arch == LM_SAE_TOPK ? (pat[i] & 1) : 1;
            double f = on && pre[i] > 0 ? pre[i] : 0;
            if (f == 0) continue;
            double nrm = 0;
            for (size_t j = 0; j < di; j++) {
                xh[j] += f * Wd[i * di + j];
                nrm += Wd[i * di + j] * Wd[i * di + j];
            }
            sp += f * sqrt(nrm);
        }
        for (size_t j = 0; j < di; j++) {
            double r = x[t * di + j] - xh[j];
            mse += r * r;
            if (!fix_e) e[t * di + j] = r;
        }
        if (c->arch == LM_SAE_TOPK && kk) {
            for (size_t j = 0; j < di; j++) {
                double eh = 0;
                for (size_t i = 0; i < ds; i++)
                    if (pat[i] & 2) eh += pre[i] * Wd[i * di + j];
                aux += (eh - e[t * di + j]) * (eh - e[t * di + j]);
            }
        }
    }
    free(pre);
    free(xh);
    free(xc);
    double n = (double)c->n;
    if (c->arch == LM_SAE_RELU) return (mse + c->lam * sp) / n;
    return mse / n + c->alpha * scale * aux / n;
}

static void gradcheck(const char *label, lm_sae_arch arch, int apply, size_t k, size_t n_dead_every, size_t k_aux) {
    const size_t d_in = 8, d_sae = 32, n = 6;
    lm_sae_init in = {.arch = arch, .d_in = d_in, .d_sae = d_sae, .k = k, .apply_b_dec_to_input = apply, .seed = 7};
    lm_sae *sae;
    CHECK(lm_sae_new(&in, &sae) == LM_OK);
    if (!sae) return;
    /* move away from the symmetric init so every parameter matters */
    fill(sae->params, sae->n_params, 0.3f);
    float *x = malloc(n * d_in * sizeof *x);
    fill(x, n * d_in, 1.0f);
    uint8_t *dead = NULL;
    if (n_dead_every) {
        dead = calloc(d_sae, 1);
        for (size_t i = 0; i < d_sae; i += n_dead_every) dead[i] = 1;
    }
    lm_sae_loss_opts o = {.l1_coeff = 0.7f, .dead = dead, .k_aux = k_aux, .aux_coeff = 0.5f};
    lm_sae_grad g;
    CHECK(lm_sae_grad_init(&g, sae) == LM_OK);
    lm_sae_loss L;
    CHECK(lm_sae_loss_backward(sae, &g, x, n, &o, &L, NULL) == LM_OK);

    ref_cfg c = {.arch = arch, .d_in = d_in, .d_sae = d_sae, .k = k, .n = n, .k_aux = k_aux ? k_aux : d_in / 2,
                 .apply = apply, .lam = 0.7, .alpha = 0.5, .dead = dead};
    size_t np = sae->n_params;
    double *p = malloc(np * sizeof *p), *num = calloc(np, sizeof *num), *e = malloc(n * d_in * sizeof *e);
    for (size_t i = 0; i < np; i++) p[i] = sae->params[i];
    uint8_t *pat0 = malloc(n * d_sae), *pat = malloc(n * d_sae);
    double L0 = ref_loss(&c, p, x, pat0, e, 0);
    CHECKF(fabs(L.total - L0) <= 1e-5 * fabs(L0), "%s: loss %.9g vs reference %.9g", label, L.total, L0);
    if (arch == LM_SAE_TOPK) CHECKF((L.aux > 0) == (n_dead_every != 0), "%s: aux %g", label, L.aux);
    size_t changed = 0;
    for (size_t i = 0; i < np; i++) {
        double keep = p[i];
        p[i] = keep + STEP;
        double lp = ref_loss(&c, p, x, pat, e, 1);
        changed += memcmp(pat, pat0, n * d_sae) != 0;
        p[i] = keep - STEP;
        double lm = ref_loss(&c, p, x, pat, e, 1);
        changed += memcmp(pat, pat0, n * d_sae) != 0;
        p[i] = keep;
        num[i] = (lp - lm) / (2 * STEP);
    }
    /* the active sets (and ReLU signs) must be the same at every perturbed point, or the check means nothing */
    CHECKF(changed == 0, "%s: %zu perturbations changed the active set", label, changed);
    struct {
        const char *name;
        float *gv;
        float *pv;
        size_t len;
    } parts[] = {{"W_enc", g.W_enc, sae->W_enc, d_in * d_sae},
                 {"b_enc", g.b_enc, sae->b_enc, d_sae},
                 {"W_dec", g.W_dec, sae->W_dec, d_sae * d_in},
                 {"b_dec", g.b_dec, sae->b_dec, d_in}};
    for (size_t q = 0; q < 4; q++) {
        const double *ref = num + (parts[q].pv - sae->params);
        double err = rel_err(parts[q].gv, ref, parts[q].len);
        CHECKF(err < TOL, "%s: d%s rel err %.3g", label, parts[q].name, err);
        fprintf(stderr, "  %-22s d%-5s rel err %.2g\n", label, parts[q].name, err);
    }
    /* gradients accumulate: a second call doubles them */
    float *g1 = malloc(np * sizeof *g1);
    memcpy(g1, g.data, np * sizeof *g1);
    CHECK(lm_sae_loss_backward(sae, &g, x, n, &o, NULL, NULL) == LM_OK);
    double acc = 0;
    for (size_t i = 0; i < np; i++) acc = fmax(acc, fabs(g.data[i] - 2 * g1[i]));
    CHECKF(acc < 1e-5, "%s: gradients do not accumulate (%g)", label, acc);
    free(g1);
    free(p);
    free(num);
    free(e);
    free(pat0);
    free(pat);
    free(dead);
    free(x);
    lm_sae_grad_free(&g);
    lm_sae_free(sae);
}

/* ---- TopK: k nonzeros, sparse decoder == dense decoder ---------------------------------------------- */

static void test_topk_sparse(void) {
    const size_t d_in = 16, d_sae = 128, k = 5, n = 40;
    lm_sae_init in = {.arch = LM_SAE_TOPK, .d_in = d_in, .d_sae = d_sae, .k = k, .apply_b_dec_to_input = 1, .seed = 3};
    lm_sae *sae, *dense;
    CHECK(lm_sae_new(&in, &sae) == LM_OK);
    fill(sae->params, sae->n_params, 0.3f);
    for (size_t i = 0; i < d_sae; i++) sae->b_enc[i] = 2.0f + 0.01f * (float)i; /* top-k all positive */
    CHECK(lm_sae_clone(sae, &dense) == LM_OK);
    dense->arch = LM_SAE_RELU; /* same weights, decoded by the dense BLAS path */
    float *x = malloc(n * d_in * sizeof *x), *f = malloc(n * d_sae * sizeof *f);
    float *xs = malloc(n * d_in * sizeof *xs), *xd = malloc(n * d_in * sizeof *xd), *xq = malloc(n * d_in * sizeof *xq);
    int32_t *idx = malloc(n * k * sizeof *idx);
    float *val = malloc(n * k * sizeof *val);
    fill(x, n * d_in, 1.0f);
    CHECK(lm_sae_encode(sae, f, x, n) == LM_OK);
    size_t bad = 0;
    for (size_t t = 0; t < n; t++) {
        size_t nz = 0;
        for (size_t i = 0; i < d_sae; i++) nz += f[t * d_sae + i] != 0;
        bad += nz != k;
    }
    CHECKF(bad == 0, "%zu rows without exactly k=%zu nonzeros", bad, k);
    /* the kept ones are the k largest pre-activations */
    float *pre = malloc(n * d_sae * sizeof *pre);
    lm_sae_pre(sae, pre, x, n);
    size_t wrong = 0;
    for (size_t t = 0; t < n; t++) {
        float lo = INFINITY, hi = -INFINITY;
        for (size_t i = 0; i < d_sae; i++) {
            float v = pre[t * d_sae + i];
            if (f[t * d_sae + i] != 0) {
                lo = fminf(lo, v);
                wrong += fabsf(v - f[t * d_sae + i]) > 1e-4f * fabsf(v);
            } else
                hi = fmaxf(hi, v);
        }
        wrong += !(lo >= hi);
    }
    CHECKF(wrong == 0, "topk keeps the wrong latents (%zu)", wrong);
    lm_sae_decode(sae, xs, f, n);
    lm_sae_decode(dense, xd, f, n);
    CHECK(lm_sae_encode_topk(sae, idx, val, x, n) == LM_OK);
    lm_sae_decode_sparse(sae, xq, idx, val, n, k);
    double e1 = max_abs_diff(xs, xd, n * d_in), e2 = max_abs_diff(xq, xd, n * d_in);
    CHECKF(e1 < 1e-5 && e2 < 1e-5, "sparse decoder differs from dense: %g %g", e1, e2);
    free(pre);
    free(x);
    free(f);
    free(xs);
    free(xd);
    free(xq);
    free(idx);
    free(val);
    lm_sae_free(sae);
    lm_sae_free(dense);
}

/* ---- the activation scale ----------------------------------------------------------------------------- */

static void test_fold(lm_sae_arch arch) {
    const size_t d_in = 12, d_sae = 48, n = 20;
    lm_sae_init in = {.arch = arch, .d_in = d_in, .d_sae = d_sae, .k = 6, .apply_b_dec_to_input = 1, .seed = 11};
    lm_sae *sae, *folded;
    CHECK(lm_sae_new(&in, &sae) == LM_OK);
    fill(sae->params, sae->n_params, 0.3f);
    float *x = malloc(n * d_in * sizeof *x), *xs = malloc(n * d_in * sizeof *xs);
    fill(x, n * d_in, 7.0f); /* raw activations far from unit scale */
    double c = 0;
    CHECK(lm_sae_estimate_scale(x, n, d_in, &c) == LM_OK);
    double ms = 0;
    for (size_t i = 0; i < n * d_in; i++) {
        xs[i] = (float)(c * x[i]);
        ms += (double)xs[i] * xs[i];
    }
    CHECKF(fabs(ms / n - (double)d_in) < 1e-4 * d_in, "E||c x||^2 = %g, want %zu", ms / n, d_in);
    float *f1 = malloc(n * d_sae * sizeof *f1), *f2 = malloc(n * d_sae * sizeof *f2);
    float *h1 = malloc(n * d_in * sizeof *h1), *h2 = malloc(n * d_in * sizeof *h2);
    CHECK(lm_sae_forward(sae, h1, f1, xs, n) == LM_OK);
    for (size_t i = 0; i < n * d_in; i++) h1[i] = (float)(h1[i] / c);
    CHECK(lm_sae_clone(sae, &folded) == LM_OK);
    CHECK(lm_sae_fold_scale(folded, c) == LM_OK);
    CHECK(lm_sae_forward(folded, h2, f2, x, n) == LM_OK);
    double *fd = malloc(n * d_sae * sizeof *fd), *hd = malloc(n * d_in * sizeof *hd);
    for (size_t i = 0; i < n * d_sae; i++) fd[i] = f1[i];
    for (size_t i = 0; i < n * d_in; i++) hd[i] = h1[i];
    double ef = rel_err(f2, fd, n * d_sae), eh = rel_err(h2, hd, n * d_in);
    CHECKF(ef < 1e-5 && eh < 1e-5, "%s: folded SAE on raw x differs: f %g, x_hat %g", lm_sae_arch_name(arch), ef, eh);
    CHECK(lm_sae_fold_scale(folded, 0.0) == LM_ERR_ARG);
    CHECK(lm_sae_fold_scale(folded, NAN) == LM_ERR_ARG);
    float zero[4] = {0};
    CHECK(lm_sae_estimate_scale(zero, 1, 4, &c) == LM_ERR_ARG);
    free(fd);
    free(hd);
    free(x);
    free(xs);
    free(f1);
    free(f2);
    free(h1);
    free(h2);
    lm_sae_free(sae);
    lm_sae_free(folded);
}

/* ---- training: a few Adam steps reduce the loss; schedules --------------------------------------------- */

static void test_train(lm_sae_arch arch) {
    const size_t d_in = 8, d_sae = 32, n = 128, steps = 150;
    lm_sae_init in = {.arch = arch, .d_in = d_in, .d_sae = d_sae, .k = 4, .seed = 5};
    lm_sae *sae;
    CHECK(lm_sae_new(&in, &sae) == LM_OK);
    /* sparse data: each row a sum of 2 of 16 fixed directions */
    float dirs[16 * 8], *x = calloc(n * d_in, sizeof *x);
    fill(dirs, 16 * 8, 1.0f);
    for (size_t t = 0; t < n; t++)
        for (int r = 0; r < 2; r++) {
            size_t a = lm_rng_u32(&rng) % 16;
            float s = 1 + lm_rng_f32(&rng);
            for (size_t j = 0; j < d_in; j++) x[t * d_in + j] += s * dirs[a * 8 + j];
        }
    double c;
    CHECK(lm_sae_estimate_scale(x, n, d_in, &c) == LM_OK);
    for (size_t i = 0; i < n * d_in; i++) x[i] = (float)(x[i] * c);
    lm_sae_grad g;
    lm_sae_adam a;
    CHECK(lm_sae_grad_init(&g, sae) == LM_OK);
    CHECK(lm_sae_adam_init(&a, sae) == LM_OK);
    uint8_t dead[32] = {0};
    dead[3] = dead[9] = 1;
    lm_sae_loss L, first = {0};
    for (size_t s = 0; s < steps; s++) {
        lm_sae_loss_opts o = {.l1_coeff = lm_sae_l1_at(0.05f, s, steps), .dead = arch == LM_SAE_TOPK ? dead : NULL};
        lm_sae_grad_zero(&g);
        CHECK(lm_sae_loss_backward(sae, &g, x, n, &o, &L, NULL) == LM_OK);
        if (s == 0) first = L;
        lm_sae_grad_clip(&g, 1.0);
        CHECK(lm_sae_adam_step(&a, sae, &g, lm_sae_lr_at(0.01f, s, steps)) == LM_OK);
    }
    CHECKF(L.mse < 0.5 * first.mse, "%s: mse %g -> %g after %zu steps", lm_sae_arch_name(arch), first.mse, L.mse,
           steps);
    fprintf(stderr, "  train %-8s mse %.4g -> %.4g, l0 %.3g\n", lm_sae_arch_name(arch), first.mse, L.mse, L.l0);
    lm_sae_adam_free(&a);
    lm_sae_grad_free(&g);
    free(x);
    lm_sae_free(sae);
}

static void test_schedules(void) {
    CHECK(lm_sae_l1_at(2.0f, 0, 1000) == 0.0f);
    CHECK(fabsf(lm_sae_l1_at(2.0f, 25, 1000) - 1.0f) < 1e-6f);
    CHECK(lm_sae_l1_at(2.0f, 50, 1000) == 2.0f);
    CHECK(lm_sae_lr_at(1.0f, 799, 1000) == 1.0f);
    CHECK(fabsf(lm_sae_lr_at(1.0f, 900, 1000) - 0.5f) < 1e-6f);
    CHECK(lm_sae_lr_at(1.0f, 1000, 1000) == 0.0f);
}

/* ---- SAELens IO ------------------------------------------------------------------------------------- */

static const char *fixtures(char *buf, size_t n, const char *rel) {
    const char *root = getenv("LUMEN_FIXTURES");
    snprintf(buf, n, "%s/sae/%s", root ? root : "tests/fixtures", rel);
    return buf;
}

static int read_f32(const lm_safetensors *st, const char *name, size_t n, float *out) {
    const lm_st_tensor *t = lm_safetensors_find(st, name);
    if (!t || t->dtype != LM_ST_F32 || t->n_elements != n) return -1;
    memcpy(out, t->data, n * sizeof *out);
    return 0;
}

/* lm_sae_load of a SAELens-saved directory, then encode/decode the stored inputs. */
static void test_saelens_fixture(const char *name, lm_sae_arch arch) {
    char dir[1024], exp[1100];
    fixtures(dir, sizeof dir, name);
    snprintf(exp, sizeof exp, "%s.expect.safetensors", dir);
    lm_sae *sae = NULL;
    lm_status st = lm_sae_load(dir, &sae);
    CHECKF(st == LM_OK, "%s: %s", name, lm_errmsg());
    lm_safetensors *e = NULL;
    CHECKF(lm_safetensors_open(exp, &e) == LM_OK, "%s", lm_errmsg());
    if (!sae || !e) {
        lm_sae_free(sae);
        lm_safetensors_close(e);
        return;
    }
    CHECK(sae->arch == arch && sae->d_in == 16 && sae->d_sae == 64 && sae->apply_b_dec_to_input == 1);
    CHECK(arch != LM_SAE_TOPK || sae->k == 4);
    CHECK(sae->hook_name && !strcmp(sae->hook_name, "blocks.0.hook_resid_post"));
    CHECK(sae->model_name && !strcmp(sae->model_name, "tiny-gpt2"));
    CHECK(sae->context_size == 128 && sae->prepend_bos == 1);
    const size_t n = 8;
    float x[8 * 16], f[8 * 64], xh[8 * 16], ef[8 * 64], exh[8 * 16];
    CHECK(read_f32(e, "x", n * 16, x) == 0 && read_f32(e, "f", n * 64, ef) == 0 && read_f32(e, "x_hat", n * 16, exh) == 0);
    CHECK(lm_sae_forward(sae, xh, f, x, n) == LM_OK);
    double df = max_abs_diff(f, ef, n * 64), dx = max_abs_diff(xh, exh, n * 16);
    CHECKF(df < IO_TOL && dx < IO_TOL, "%s: lumen vs SAELens: max |df| %g, max |dx_hat| %g", name, df, dx);
    fprintf(stderr, "  SAELens %-13s max |df| %.2g, max |dx_hat| %.2g\n", name, df, dx);
    lm_safetensors_close(e);
    lm_sae_free(sae);
}

/* A deterministic value in [-1, 1) from two indices, exact in float on every machine. */
static float hashf(uint32_t a, uint32_t b) {
    uint32_t h = a * 2654435761u ^ (b + 0x9e3779b9u) * 2246822519u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    return (float)((int32_t)(h % 2048u) - 1024) / 1024.0f;
}

static lm_sae *closed_form_sae(lm_sae_arch arch) {
    lm_sae_init in = {.arch = arch, .d_in = 16, .d_sae = 64, .k = 4, .apply_b_dec_to_input = arch == LM_SAE_TOPK};
    lm_sae *s;
    if (lm_sae_new(&in, &s) != LM_OK) return NULL;
    for (size_t i = 0; i < s->n_params; i++) s->params[i] = hashf((uint32_t)i, (uint32_t)arch) * 0.5f;
    s->model_name = lm_strdup("tiny-gpt2");
    s->hook_name = lm_strdup("blocks.1.hook_resid_pre");
    s->context_size = 64;
    s->prepend_bos = 1;
    return s;
}

static int same_bytes(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int same = lm_read_file(a, &x, &nx) == LM_OK && lm_read_file(b, &y, &ny) == LM_OK && nx == ny && !memcmp(x, y, nx);
    free(x);
    free(y);
    return same;
}

static void test_lumen_saved(const char *name, lm_sae_arch arch) {
    lm_sae *sae = closed_form_sae(arch);
    CHECK(sae != NULL);
    if (!sae) return;
    const size_t n = 8;
    float x[8 * 16], f[8 * 64], xh[8 * 16], dens[64];
    for (size_t i = 0; i < n * 16; i++) x[i] = hashf((uint32_t)i, 99u) * 2.0f;
    for (size_t i = 0; i < 64; i++) dens[i] = -1.0f - (float)(i % 5);
    CHECK(lm_sae_forward(sae, xh, f, x, n) == LM_OK);
    const char *regen = getenv("LUMEN_SAE_WRITE_FIXTURES");
    char dir[1024], exp[1100], ref[1024], path_a[1200], path_b[1200];
    if (regen) {
        mkdir(regen, 0777);
        snprintf(dir, sizeof dir, "%s/%s", regen, name);
        snprintf(exp, sizeof exp, "%s/%s.expect.safetensors", regen, name);
        CHECKF(lm_sae_save(sae, dir, arch == LM_SAE_RELU ? dens : NULL) == LM_OK, "%s", lm_errmsg());
        lm_st_spec sp[3] = {{.name = "x", .dtype = LM_ST_F32, .n_dims = 2, .shape = {n, 16}, .data = x},
                            {.name = "f", .dtype = LM_ST_F32, .n_dims = 2, .shape = {n, 64}, .data = f},
                            {.name = "x_hat", .dtype = LM_ST_F32, .n_dims = 2, .shape = {n, 16}, .data = xh}};
        CHECK(lm_safetensors_write(exp, sp, 3, NULL, 0) == LM_OK);
        fprintf(stderr, "  wrote %s and %s\n", dir, exp);
        lm_sae_free(sae);
        return;
    }
    snprintf(dir, sizeof dir, "%s/sae_lumen_saved_%s", check_tmpdir(), name);
    CHECKF(lm_sae_save(sae, dir, arch == LM_SAE_RELU ? dens : NULL) == LM_OK, "%s", lm_errmsg());
    char rel[256];
    snprintf(rel, sizeof rel, "lumen_saved/%s", name);
    fixtures(ref, sizeof ref, rel);
    const char *files[] = {"cfg.json", "sae_weights.safetensors", arch == LM_SAE_RELU ? "sparsity.safetensors" : NULL};
    for (size_t i = 0; i < 3 && files[i]; i++) {
        snprintf(path_a, sizeof path_a, "%s/%s", dir, files[i]);
        snprintf(path_b, sizeof path_b, "%s/%s", ref, files[i]);
        CHECKF(same_bytes(path_a, path_b), "%s differs from the committed %s (regenerate: see tools/make_sae_fixtures.py)",
               path_a, path_b);
    }
    /* lumen's own outputs against the expectations SAELens was checked against */
    snprintf(exp, sizeof exp, "%s.expect.safetensors", ref);
    lm_safetensors *e = NULL;
    CHECKF(lm_safetensors_open(exp, &e) == LM_OK, "%s", lm_errmsg());
    float ef[8 * 64], exh[8 * 16];
    if (e) {
        CHECK(read_f32(e, "f", n * 64, ef) == 0 && read_f32(e, "x_hat", n * 16, exh) == 0);
        CHECK(max_abs_diff(f, ef, n * 64) < IO_TOL && max_abs_diff(xh, exh, n * 16) < IO_TOL);
        lm_safetensors_close(e);
    }
    /* round trip */
    lm_sae *back = NULL;
    CHECKF(lm_sae_load(dir, &back) == LM_OK, "%s", lm_errmsg());
    if (back) {
        CHECK(back->arch == arch && back->k == sae->k && back->apply_b_dec_to_input == sae->apply_b_dec_to_input);
        CHECK(back->n_params == sae->n_params && !memcmp(back->params, sae->params, sae->n_params * sizeof(float)));
        CHECK(back->hook_name && !strcmp(back->hook_name, sae->hook_name) && back->context_size == 64);
        float *dd = NULL;
        if (arch == LM_SAE_RELU) {
            CHECK(lm_sae_load_sparsity(dir, 64, &dd) == LM_OK && dd && !memcmp(dd, dens, sizeof dens));
            free(dd);
        }
        lm_sae_free(back);
    }
    lm_sae_free(sae);
}

/* ---- files that are missing or lie ----------------------------------------------------------------------- */

static void write_text(const char *path, const char *text) { lm_write_file_atomic(path, text, strlen(text)); }

static void expect_fail(const char *dir, lm_status want, const char *needle1, const char *needle2) {
    lm_sae *s = NULL;
    lm_status st = lm_sae_load(dir, &s);
    const char *m = lm_errmsg();
    CHECKF(st == want && !s && strstr(m, needle1) && (!needle2 || strstr(m, needle2)), "%s: got %s '%s'", dir,
           lm_status_name(st), m);
    lm_sae_free(s);
}

static void test_bad_files(void) {
    char dir[1024], p[1200];
    snprintf(dir, sizeof dir, "%s/sae_bad", check_tmpdir());
    expect_fail("/nonexistent/sae", LM_ERR_IO, "cfg.json", NULL);
    lm_sae *s = closed_form_sae(LM_SAE_RELU);
    if (!s) return;
    CHECK(lm_sae_save(s, dir, NULL) == LM_OK);
    snprintf(p, sizeof p, "%s/cfg.json", dir);
    const char *base = "{\"d_in\": %s, \"d_sae\": 64, \"architecture\": \"%s\"%s}";
    char txt[512];
    snprintf(txt, sizeof txt, base, "16", "gated", "");
    write_text(p, txt);
    expect_fail(dir, LM_ERR_UNSUPPORTED, "cfg.json", "gated");
    snprintf(txt, sizeof txt, base, "17", "standard", "");
    write_text(p, txt);
    expect_fail(dir, LM_ERR_FORMAT, "sae_weights.safetensors", "W_enc");
    snprintf(txt, sizeof txt, base, "16", "topk", "");
    write_text(p, txt);
    expect_fail(dir, LM_ERR_FORMAT, "cfg.json", "'k'");
    snprintf(txt, sizeof txt, base, "16", "jumprelu", "");
    write_text(p, txt);
    expect_fail(dir, LM_ERR_FORMAT, "sae_weights.safetensors", "threshold");
    snprintf(txt, sizeof txt, base, "16", "standard", ", \"normalize_activations\": \"layer_norm\"");
    write_text(p, txt);
    expect_fail(dir, LM_ERR_UNSUPPORTED, "cfg.json", "layer_norm");
    snprintf(txt, sizeof txt, base, "\"16\"", "standard", "");
    write_text(p, txt);
    expect_fail(dir, LM_ERR_FORMAT, "cfg.json", "d_in");
    write_text(p, "{\"d_in\": 16,");
    expect_fail(dir, LM_ERR_FORMAT, "cfg.json", NULL);
    /* a weights file without b_dec */
    snprintf(txt, sizeof txt, base, "16", "standard", "");
    write_text(p, txt);
    lm_st_spec sp[3] = {{.name = "W_enc", .dtype = LM_ST_F32, .n_dims = 2, .shape = {16, 64}, .data = s->W_enc},
                        {.name = "W_dec", .dtype = LM_ST_F32, .n_dims = 2, .shape = {64, 16}, .data = s->W_dec},
                        {.name = "b_enc", .dtype = LM_ST_F32, .n_dims = 1, .shape = {64}, .data = s->b_enc}};
    snprintf(p, sizeof p, "%s/sae_weights.safetensors", dir);
    CHECK(lm_safetensors_write(p, sp, 3, NULL, 0) == LM_OK);
    expect_fail(dir, LM_ERR_FORMAT, "sae_weights.safetensors", "b_dec");
    remove(p);
    expect_fail(dir, LM_ERR_IO, "sae_weights.safetensors", NULL);
    lm_sae_free(s);
}

int main(void) {
    lm_rng_seed(&rng, 42);
    gradcheck("relu", LM_SAE_RELU, 1, 0, 0, 0);
    gradcheck("relu no-b_dec-input", LM_SAE_RELU, 0, 0, 0, 0);
    gradcheck("topk", LM_SAE_TOPK, 1, 3, 0, 0);
    gradcheck("topk+auxk", LM_SAE_TOPK, 1, 3, 3, 4);
    gradcheck("topk+auxk few dead", LM_SAE_TOPK, 0, 3, 16, 4);
    test_topk_sparse();
    test_fold(LM_SAE_RELU);
    test_fold(LM_SAE_TOPK);
    test_schedules();
    test_train(LM_SAE_RELU);
    test_train(LM_SAE_TOPK);
    test_lumen_saved("standard", LM_SAE_RELU);
    test_lumen_saved("topk", LM_SAE_TOPK);
    if (!getenv("LUMEN_SAE_WRITE_FIXTURES")) {
        test_saelens_fixture("standard", LM_SAE_RELU);
        test_saelens_fixture("topk", LM_SAE_TOPK);
        test_saelens_fixture("topk_rescale", LM_SAE_TOPK);
        test_saelens_fixture("jumprelu", LM_SAE_JUMPRELU);
        test_bad_files();
    }
    return check_result();
}
