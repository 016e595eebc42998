/* eval.c - corpus tokenization and cross-entropy scoring over fixed windows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lumen/model.h"

lm_status lm_tokenize_file(const lm_tokenizer *tok, const char *path, int add_bos, size_t max_tokens, int32_t **ids,
                           size_t *n_ids) {
    *ids = NULL;
    *n_ids = 0;
    char *text = NULL;
    size_t len = 0;
    lm_status st = lm_read_file(path, &text, &len);
    if (st != LM_OK) return st;
    if (max_tokens > 0 && len > max_tokens * 64) len = max_tokens * 64; /* no token spans 64 bytes of text */
    st = lm_tokenizer_encode(tok, text, len, add_bos && lm_tokenizer_wants_bos(tok), ids, n_ids);
    free(text);
    if (st != LM_OK) return st;
    if (max_tokens > 0 && *n_ids > max_tokens) *n_ids = max_tokens;
    if (*n_ids == 0) {
        free(*ids);
        *ids = NULL;
        return lm_fail(LM_ERR_ARG, "%s: no tokens (empty file?)", path);
    }
    return LM_OK;
}

/* log-softmax of logits[V] at target, in double */
static double nll(const float *logits, size_t V, int target) {
    float mx = logits[0];
    for (size_t i = 1; i < V; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (size_t i = 0; i < V; i++) sum += exp((double)logits[i] - mx);
    return log(sum) + mx - logits[target];
}

lm_status lm_eval_ce(const lm_model *m, const int32_t *ids, size_t n, int ctx, int batch, lm_progress_cb cb, void *ud,
                     lm_eval_result *res) {
    memset(res, 0, sizeof *res);
    if (ctx <= 1) ctx = m->cfg.seq_len;
    if (ctx > m->cfg.seq_len)
        return lm_fail(LM_ERR_RANGE, "eval: window of %d tokens exceeds the model's context of %d", ctx,
                       m->cfg.seq_len);
    if (batch <= 0) batch = 1;
    size_t V = (size_t)m->cfg.vocab_size;
    /* bound the logits buffer to ~256 MB */
    while (batch > 1 && (size_t)batch * (size_t)ctx * V > ((size_t)64 << 20)) batch /= 2;
    float *logits = lm_malloc((size_t)batch * (size_t)ctx * V, sizeof(float));
    if (!logits) return lm_fail(LM_ERR_NOMEM, "eval: out of memory for logits");
    lm_state *sb = NULL, *s1 = NULL;
    lm_status st = lm_state_new_batch(m, ctx, batch * ctx, batch, &sb);
    if (st == LM_OK) st = lm_state_new(m, ctx, ctx, &s1);
    double t0 = lm_now(), total = 0;
    size_t n_full = n / (size_t)ctx, pred = 0, windows = 0;
    for (size_t w = 0; st == LM_OK && w < n_full; w += (size_t)batch) {
        int nb = (int)(n_full - w < (size_t)batch ? n_full - w : (size_t)batch);
        lm_state_reset(sb);
        const int32_t *win = ids + w * (size_t)ctx;
        st = lm_forward_batch(m, sb, win, nb, ctx, logits, 1);
        if (st != LM_OK) break;
        for (int b = 0; b < nb; b++)
            for (int t = 0; t + 1 < ctx; t++) {
                total += nll(logits + ((size_t)b * ctx + t) * V, V, win[(size_t)b * ctx + t + 1]);
                pred++;
            }
        windows += (size_t)nb;
        if (cb && cb(ud, (w + (size_t)nb) * (size_t)ctx, n)) break;
    }
    size_t rest = n - n_full * (size_t)ctx;
    if (st == LM_OK && rest >= 2) {
        const int32_t *win = ids + n_full * (size_t)ctx;
        lm_state_reset(s1);
        st = lm_forward(m, s1, win, (int)rest, logits, 1);
        for (size_t t = 0; st == LM_OK && t + 1 < rest; t++) {
            total += nll(logits + t * V, V, win[t + 1]);
            pred++;
        }
        windows++;
        if (cb) cb(ud, n, n);
    }
    lm_state_free(sb);
    lm_state_free(s1);
    free(logits);
    if (st != LM_OK) return st;
    if (pred == 0) return lm_fail(LM_ERR_ARG, "eval: need at least 2 tokens in a window to score");
    res->mean_ce = total / (double)pred;
    res->perplexity = exp(res->mean_ce);
    res->n_predicted = pred;
    res->n_windows = windows;
    res->seconds = lm_now() - t0;
    return LM_OK;
}
