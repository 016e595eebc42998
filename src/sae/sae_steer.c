/* sae_steer.c - feature steering with an SAE (clamp a latent, or add its decoder direction). */
#include <stdlib.h>
#include <string.h>

#include "lumen/model.h"
#include "lumen/sae.h"

lm_status lm_sae_steer_apply(const lm_sae_steer *s, float *x, size_t n) {
    const lm_sae *sae = s->sae;
    if (!sae || s->feature >= sae->d_sae)
        return lm_fail(LM_ERR_ARG, "steer: feature %zu out of range (the SAE has %zu latents)", s->feature,
                       sae ? sae->d_sae : (size_t)0);
    if (s->mode != LM_SAE_STEER_CLAMP && s->mode != LM_SAE_STEER_ADD && s->mode != LM_SAE_STEER_SCALE)
        return lm_fail(LM_ERR_ARG, "steer: bad mode");
    const size_t d = sae->d_in, id = s->feature;
    const float *dir = sae->W_dec + id * d;
    if (n == 0) return LM_OK;
    if (s->mode == LM_SAE_STEER_ADD) {
        for (size_t t = 0; t < n; t++)
            for (size_t j = 0; j < d; j++) x[t * d + j] += s->value * dir[j];
        return LM_OK;
    }
    float *f = lm_malloc(n * sae->d_sae, sizeof(float));
    if (!f) return lm_fail(LM_ERR_NOMEM, "steer: out of memory");
    lm_status st = lm_sae_encode(sae, f, x, n);
    if (st == LM_OK)
        for (size_t t = 0; t < n; t++) {
            float fi = f[t * sae->d_sae + id];
            float delta = s->mode == LM_SAE_STEER_SCALE ? (s->value - 1.0f) * fi : s->value - fi;
            for (size_t j = 0; j < d; j++) x[t * d + j] += delta * dir[j];
        }
    free(f);
    return st;
}

lm_status lm_sae_steer_hook(void *ud, const lm_hook_info *info, float *act) {
    const lm_sae_steer *s = ud;
    if (!s->sae || (size_t)info->d != s->sae->d_in)
        return lm_fail(LM_ERR_ARG, "steer: hook %s has width %d but the SAE's d_in is %zu", info->name, info->d,
                       s->sae ? s->sae->d_in : (size_t)0);
    return lm_sae_steer_apply(s, act, (size_t)info->n_seq * (size_t)info->n_tok);
}
