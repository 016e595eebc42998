/* generate.c - the generation loop: prompt prefill, sampling, streaming of token text. */
#include <stdlib.h>
#include <string.h>

#include "lumen/model.h"

void lm_generate_result_free(lm_generate_result *res) {
    if (!res) return;
    free(res->tokens);
    res->tokens = NULL;
    res->n_tokens = 0;
}

lm_status lm_generate(const lm_model *m, const lm_tokenizer *tok, const char *prompt, size_t prompt_len,
                      const lm_generate_opts *o, lm_token_cb cb, void *ud, lm_generate_result *res) {
    return lm_generate_ex(m, tok, prompt, prompt_len, o, NULL, 0, cb, ud, res);
}

lm_status lm_generate_ex(const lm_model *m, const lm_tokenizer *tok, const char *prompt, size_t prompt_len,
                         const lm_generate_opts *o, const lm_gen_hook *hooks, int n_hooks, lm_token_cb cb, void *ud,
                         lm_generate_result *res) {
    memset(res, 0, sizeof *res);
    if (n_hooks < 0 || (n_hooks > 0 && !hooks)) return lm_fail(LM_ERR_ARG, "generate: bad hook list");
    if (o->max_new_tokens < 0) return lm_fail(LM_ERR_ARG, "generate: negative token count");
    int32_t *ids = NULL;
    size_t n_ids = 0;
    /* BOS as the tokenizer's convention has it; an empty prompt starts from BOS (GPT-2's
     * <|endoftext|>) either way */
    int add_bos = lm_tokenizer_wants_bos(tok) || prompt_len == 0;
    lm_status st = lm_tokenizer_encode(tok, prompt, prompt_len, add_bos, &ids, &n_ids);
    if (st != LM_OK) return st;
    if (n_ids == 0) {
        free(ids);
        return lm_fail(LM_ERR_ARG, "generate: the tokenizer has no BOS token and the prompt is empty");
    }
    if (n_ids + (size_t)o->max_new_tokens > (size_t)m->cfg.seq_len) {
        free(ids);
        return lm_fail(LM_ERR_RANGE,
                       "generate: prompt (%zu tokens) + %d new tokens exceeds the model's context of %d tokens", n_ids,
                       o->max_new_tokens, m->cfg.seq_len);
    }
    size_t cap = n_ids + (size_t)o->max_new_tokens;
    int32_t *all = realloc(ids, (cap ? cap : 1) * sizeof *all);
    if (!all) {
        free(ids);
        return lm_fail(LM_ERR_NOMEM, "generate: out of memory");
    }
    int V = m->cfg.vocab_size;
    float *logits = lm_malloc((size_t)V, sizeof(float));
    lm_state *s = NULL;
    lm_sampler smp = {0};
    if (!logits) st = lm_fail(LM_ERR_NOMEM, "generate: out of memory");
    if (st == LM_OK) st = lm_state_new(m, (int)cap, (int)n_ids, &s);
    for (int h = 0; st == LM_OK && h < n_hooks; h++) st = lm_state_add_hook(s, hooks[h].name, hooks[h].fn, hooks[h].ud);
    if (st == LM_OK) st = lm_sampler_init(&smp, V, o->temperature, o->top_k, o->top_p, o->seed);
    int stop = 0;
    char buf[16];
    size_t len;
    for (size_t i = 0; st == LM_OK && i < n_ids && !stop; i++) {
        const char *txt = lm_tokenizer_token_text(tok, i ? all[i - 1] : -1, all[i], buf, &len);
        if (cb) stop = cb(ud, all[i], txt, len, 1);
    }
    size_t n = n_ids;
    res->n_prompt = (int)n_ids;
    if (st == LM_OK && !stop && o->max_new_tokens > 0) {
        double t0 = lm_now();
        st = lm_forward(m, s, all, (int)n_ids, logits, 0);
        res->prefill_seconds = lm_now() - t0;
        t0 = lm_now();
        int bos = lm_tokenizer_bos(tok), eos = lm_tokenizer_eos(tok);
        while (st == LM_OK) {
            int next = lm_sample(&smp, logits);
            if (!o->ignore_eos && (next == eos || next == bos)) {
                res->stopped_at_eos = 1;
                break;
            }
            all[n++] = next;
            res->n_generated++;
            const char *txt = lm_tokenizer_token_text(tok, all[n - 2], next, buf, &len);
            if (cb && cb(ud, next, txt, len, 0)) break;
            if (res->n_generated >= o->max_new_tokens) break;
            st = lm_forward(m, s, &all[n - 1], 1, logits, 0);
        }
        res->decode_seconds = lm_now() - t0;
    }
    free(logits);
    lm_state_free(s);
    lm_sampler_free(&smp);
    if (st != LM_OK) {
        free(all);
        return st;
    }
    res->tokens = all;
    res->n_tokens = n;
    return LM_OK;
}
