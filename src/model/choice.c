/* choice.c - multiple-choice scoring by the log-probability of each continuation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lumen/model.h"

static double log_softmax_at(const float *logits, size_t V, int id) {
    float mx = logits[0];
    for (size_t i = 1; i < V; i++)
        if (logits[i] > mx) mx = logits[i];
    double z = 0;
    for (size_t i = 0; i < V; i++) z += exp((double)logits[i] - mx);
    return (double)logits[id] - mx - log(z);
}

lm_status lm_choice_score(const lm_model *m, const lm_tokenizer *tok, const char *prompt, const char *const *choices,
                          int n_choices, double *logprobs, int *best) {
    if (n_choices <= 0) return lm_fail(LM_ERR_ARG, "choice: no choices");
    int32_t *p_ids = NULL;
    size_t n_p = 0;
    lm_status st = lm_tokenizer_encode(tok, prompt, strlen(prompt), lm_tokenizer_wants_bos(tok), &p_ids, &n_p);
    if (st != LM_OK) return st;
    size_t V = (size_t)m->cfg.vocab_size;
    double best_lp = -INFINITY;
    *best = -1;
    for (int c = 0; c < n_choices && st == LM_OK; c++) {
        /* the choice's tokens are those that follow the prompt's in the encoding of the whole
         * text; encoding it alone would add SentencePiece's dummy-prefix space */
        size_t plen = strlen(prompt), len = strlen(choices[c]);
        char *text = malloc(plen + len + 2);
        int32_t *f_ids = NULL, *c_ids = NULL;
        size_t n_f = 0, n_c = 0;
        if (!text) {
            st = lm_fail(LM_ERR_NOMEM, "choice: out of memory");
            break;
        }
        memcpy(text, prompt, plen);
        text[plen] = ' ';
        memcpy(text + plen + 1, choices[c], len + 1);
        st = lm_tokenizer_encode(tok, text, plen + len + 1, lm_tokenizer_wants_bos(tok), &f_ids, &n_f);
        free(text);
        if (st == LM_OK && (n_f <= n_p || memcmp(f_ids, p_ids, n_p * sizeof *p_ids) != 0))
            st = lm_fail(LM_ERR_ARG, "choice: '%s' does not extend the prompt's tokens (the prompt's last token merges "
                                     "with the choice)", choices[c]);
        if (st == LM_OK) {
            n_c = n_f - n_p;
            c_ids = f_ids + n_p;
        }
        size_t n = n_p + n_c;
        int32_t *all = st == LM_OK ? malloc(n * sizeof *all) : NULL;
        float *logits = st == LM_OK ? lm_malloc(n * V, sizeof(float)) : NULL;
        lm_state *s = NULL;
        if (st == LM_OK && (!all || !logits)) st = lm_fail(LM_ERR_NOMEM, "choice: out of memory");
        if (st == LM_OK && n_p == 0) st = lm_fail(LM_ERR_ARG, "choice: the prompt encodes to no tokens");
        if (st == LM_OK) {
            memcpy(all, p_ids, n_p * sizeof *all);
            memcpy(all + n_p, c_ids, n_c * sizeof *all);
            st = lm_state_new(m, (int)n, (int)n, &s);
        }
        if (st == LM_OK) st = lm_forward(m, s, all, (int)n, logits, 1);
        double lp = 0;
        for (size_t i = 0; st == LM_OK && i < n_c; i++) lp += log_softmax_at(logits + (n_p - 1 + i) * V, V, c_ids[i]);
        if (st == LM_OK) {
            if (logprobs) logprobs[c] = lp;
            if (lp > best_lp) {
                best_lp = lp;
                *best = c;
            }
        }
        lm_state_free(s);
        free(logits);
        free(all);
        free(f_ids);
    }
    free(p_ids);
    return st;
}
