/* sae_internal.h - helpers shared by the files of src/sae (not part of the public API). */
#ifndef LUMEN_SAE_INTERNAL_H
#define LUMEN_SAE_INTERNAL_H

#include "lumen/sae.h"

/* Elementwise loops go parallel above this many multiply-adds (as in src/tensor). */
#define SAE_PAR_WORK 262144.0

int sae_par(double work);
/* An SAE with zeroed parameters and the given shape (apply_b_dec_to_input = 1, k = 0). */
lm_status sae_alloc(lm_sae_arch arch, size_t d_in, size_t d_sae, lm_sae **out);
/* *xc = x - b_dec (malloc'd) when the SAE subtracts b_dec, else NULL (use x itself). */
lm_status sae_center(const lm_sae *sae, const float *x, size_t n, float **xc);
/* pre[n, d_sae] = xc @ W_enc + b_enc. */
void sae_pre_centered(const lm_sae *sae, float *pre, const float *xc, size_t n);
/* In place: pre -> relu (or jumprelu when the SAE has thresholds). */
void sae_activate_dense(const lm_sae *sae, float *f, size_t n);
/* The (up to) k largest pre[i] with mask[i] != 0 (mask may be NULL), best first, ties to the lower
 * index; writes idx/val (raw pre values) and returns how many were found. */
size_t sae_topk_row(const float *pre, size_t d, size_t k, const uint8_t *mask, int32_t *idx, float *val);
/* out[n, d_in] = bias (or 0 if NULL) + sum_j val[t,j] W_dec[idx[t,j]]. */
void sae_decode_sparse_into(const lm_sae *sae, float *out, const float *bias, const int32_t *idx, const float *val,
                            size_t n, size_t kk);

/* The JumpReLU loss and its backward (sae_jumprelu.c), as lm_sae_loss_backward documents. */
lm_status sae_jumprelu_loss(const lm_sae *sae, lm_sae_grad *g, const float *x, size_t n, const lm_sae_loss_opts *o,
                            lm_sae_loss *L, uint64_t *fired);

#endif
