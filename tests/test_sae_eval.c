/* test_sae_eval.c - lm_sae_eval on the llama fixture: an SAE that reconstructs exactly (ReLU,
 * W_enc = [I, -I], W_dec = [I; -I], zero biases: x_hat = relu(x) - relu(-x) = x) gives mse = fvu = 0,
 * ce_sae == ce_clean, kl = 0, ce_loss_recovered = 1; a zero SAE gives ce_sae == ce_ablated and
 * recovered = 0; ce_clean equals lm_eval_ce over the same windows. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lumen/lumen.h"

static lm_sae *make_sae(size_t d, int exact) {
    lm_sae_init in;
    memset(&in, 0, sizeof in);
    in.arch = LM_SAE_RELU;
    in.d_in = d;
    in.d_sae = 2 * d;
    in.seed = 1;
    lm_sae *s = NULL;
    if (lm_sae_new(&in, &s) != LM_OK) return NULL;
    memset(s->params, 0, s->n_params * sizeof(float));
    if (exact)
        for (size_t j = 0; j < d; j++) {
            s->W_enc[j * 2 * d + j] = 1.0f;      /* latent j = relu(x_j) */
            s->W_enc[j * 2 * d + d + j] = -1.0f; /* latent d+j = relu(-x_j) */
            s->W_dec[j * d + j] = 1.0f;
            s->W_dec[(d + j) * d + j] = -1.0f;
        }
    s->hook_name = lm_strdup("blocks.0.hook_resid_post");
    return s;
}

int main(void) {
    lm_set_threads(2);
    const char *fx = getenv("LUMEN_FIXTURES");
    if (!fx) fx = "tests/fixtures";
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/hf/llama", fx);
    lm_model *m = NULL;
    if (lm_model_load(dir, &m) != LM_OK) {
        fprintf(stderr, "%s\n", lm_errmsg());
        return 1;
    }
    const size_t n = 45, d = (size_t)m->cfg.dim;
    int32_t ids[45];
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)((i * 71 + 5) % (size_t)m->cfg.vocab_size);
    lm_sae_eval_opts o;
    memset(&o, 0, sizeof o);
    o.ctx = 8;
    o.batch = 2; /* 5 full windows in groups of 2, 2, 1, then a last window of 5 tokens */

    lm_eval_result ref;
    CHECKF(lm_eval_ce(m, ids, n, o.ctx, o.batch, NULL, NULL, &ref) == LM_OK, "%s", lm_errmsg());

    lm_sae *ex = make_sae(d, 1), *zero = make_sae(d, 0);
    CHECK(ex && zero);
    lm_sae_eval_result r;
    CHECKF(lm_sae_eval(m, ex, ids, n, &o, &r) == LM_OK, "%s", lm_errmsg());
    CHECK(r.n_tokens == n && r.n_predicted == ref.n_predicted && r.n_windows == ref.n_windows);
    CHECKF(r.ce_clean == ref.mean_ce, "%.17g vs %.17g", r.ce_clean, ref.mean_ce);
    CHECKF(r.mse < 1e-12 && r.fvu < 1e-10, "mse %g fvu %g", r.mse, r.fvu);
    CHECKF(fabs(r.ce_sae - r.ce_clean) < 1e-9, "%.17g vs %.17g", r.ce_sae, r.ce_clean);
    CHECKF(r.kl < 1e-9, "kl %g", r.kl);
    /* (a random fixture: ablating need not hurt, only change the loss) */
    CHECKF(fabs(r.ce_ablated - r.ce_clean) > 1e-6, "ablated %g clean %g", r.ce_ablated, r.ce_clean);
    CHECKF(fabs(r.ce_loss_recovered - 1) < 1e-6, "recovered %g", r.ce_loss_recovered);
    /* every coordinate is nonzero somewhere with either sign: about d of the 2d latents fire per token */
    CHECKF(r.l0 > 0.9 * (double)d && r.l0 <= (double)d, "l0 %g", r.l0);
    CHECK(r.dead_fraction >= 0 && r.dead_fraction < 0.5 && r.dense_fraction > 0.4);

    lm_sae_eval_result z;
    CHECKF(lm_sae_eval(m, zero, ids, n, &o, &z) == LM_OK, "%s", lm_errmsg());
    CHECK(z.ce_clean == r.ce_clean && z.ce_ablated == r.ce_ablated);
    CHECKF(fabs(z.ce_sae - z.ce_ablated) < 1e-9, "%.17g vs %.17g", z.ce_sae, z.ce_ablated);
    CHECKF(fabs(z.ce_loss_recovered) < 1e-6, "recovered %g", z.ce_loss_recovered);
    CHECK(z.l0 == 0 && z.dead_fraction == 1 && z.dense_fraction == 0);
    CHECKF(fabs(z.fvu - 1) < 1e-6 || z.fvu > 1, "fvu %g", z.fvu);
    CHECK(z.kl > 0);

    /* a hook of another width is refused; a hook named in opts overrides the SAE's */
    o.hook = "blocks.1.hook_resid_post";
    CHECKF(lm_sae_eval(m, ex, ids, n, &o, &r) == LM_OK, "%s", lm_errmsg());
    CHECKF(r.mse < 1e-12 && fabs(r.ce_sae - r.ce_clean) < 1e-9, "mse %g", r.mse);
    o.hook = "blocks.7.hook_resid_post";
    CHECK(lm_sae_eval(m, ex, ids, n, &o, &r) != LM_OK);
    o.hook = NULL;
    lm_sae *wrong = make_sae(d + 1, 1);
    CHECK(wrong && lm_sae_eval(m, wrong, ids, n, &o, &r) == LM_ERR_ARG);

    lm_sae_free(ex);
    lm_sae_free(zero);
    lm_sae_free(wrong);
    lm_model_free(m);
    return check_result();
}
