/* test_sae_threads.c - the SAE losses at a shape large enough for their threaded loops (column
 * passes, sparse decoder and backward) give the same loss, fired counts and gradient on 2
 * threads as on 1 (up to summation order), for ReLU + L1 and TopK + AuxK. test_sae.c's
 * gradient checks run shapes below the threading threshold. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lumen/lumen.h"

static void run(lm_sae_arch arch, int threads, const float *x, size_t n, const uint8_t *dead, lm_sae_loss *L,
                lm_sae_grad *g, uint64_t *fired) {
    lm_sae_init in = {.arch = arch, .d_in = 32, .d_sae = 2048, .k = 8, .apply_b_dec_to_input = 1, .seed = 3};
    lm_sae *sae = NULL;
    CHECK(lm_sae_new(&in, &sae) == LM_OK);
    if (!sae) return;
    /* non-zero biases so every term of the gradient matters */
    for (size_t i = 0; i < sae->d_sae; i++) sae->b_enc[i] = 0.01f * (float)((int)(i % 7) - 3);
    for (size_t j = 0; j < sae->d_in; j++) sae->b_dec[j] = 0.02f * (float)((int)(j % 5) - 2);
    CHECK(lm_sae_grad_init(g, sae) == LM_OK);
    lm_set_threads(threads);
    lm_sae_loss_opts o = {.l1_coeff = 0.5f, .dead = dead, .k_aux = 16};
    CHECK(lm_sae_loss_backward(sae, g, x, n, &o, L, fired) == LM_OK);
    lm_sae_free(sae);
}

static void compare(const char *label, lm_sae_arch arch, const uint8_t *dead) {
    const size_t n = 1024, d_in = 32, d_sae = 2048; /* n d_sae and n k d_in are above the threading threshold */
    float *x = malloc(n * d_in * sizeof *x);
    uint64_t *f1 = calloc(d_sae, sizeof *f1), *f2 = calloc(d_sae, sizeof *f2);
    lm_rng rng;
    lm_rng_seed(&rng, 17);
    for (size_t i = 0; i < n * d_in; i++) x[i] = lm_rng_normal(&rng);
    lm_sae_loss L1, L2;
    lm_sae_grad g1, g2;
    memset(&g1, 0, sizeof g1);
    memset(&g2, 0, sizeof g2);
    run(arch, 1, x, n, dead, &L1, &g1, f1);
    run(arch, 2, x, n, dead, &L2, &g2, f2);
    CHECKF(fabs(L1.total - L2.total) <= 1e-5 * fabs(L1.total), "%s: loss %.9g vs %.9g", label, L1.total, L2.total);
    CHECKF(L1.l0 == L2.l0, "%s: l0 %g vs %g", label, L1.l0, L2.l0);
    CHECKF(!memcmp(f1, f2, d_sae * sizeof *f1), "%s: fired counts differ", label);
    double dd = 0, nn = 0;
    for (size_t i = 0; g1.data && g2.data && i < g1.n; i++) {
        double a = g1.data[i], b = g2.data[i];
        dd += (a - b) * (a - b);
        nn += a * a;
    }
    CHECKF(nn > 0 && sqrt(dd / nn) < 1e-5, "%s: gradient differs by %.3g relative", label, sqrt(dd / (nn > 0 ? nn : 1)));
    lm_sae_grad_free(&g1);
    lm_sae_grad_free(&g2);
    free(x);
    free(f1);
    free(f2);
}

int main(void) {
    uint8_t *dead = calloc(2048, 1);
    for (size_t i = 0; i < 2048; i += 16) dead[i] = 1;
    compare("relu", LM_SAE_RELU, NULL);
    compare("topk", LM_SAE_TOPK, NULL);
    compare("topk+auxk", LM_SAE_TOPK, dead);
    free(dead);
    return check_result();
}
