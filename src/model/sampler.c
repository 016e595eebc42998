/* sampler.c - next-token choice: greedy argmax, or temperature with top-k and nucleus (top-p). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lumen/model.h"

lm_status lm_sampler_init(lm_sampler *s, int vocab, float temperature, int top_k, float top_p, uint64_t seed) {
    memset(s, 0, sizeof *s);
    if (vocab <= 0) return lm_fail(LM_ERR_ARG, "sampler: vocabulary size must be positive");
    if (!(temperature >= 0.0f) || !isfinite(temperature))
        return lm_fail(LM_ERR_ARG, "sampler: temperature must be a finite number >= 0 (got %g)", temperature);
    if (!(top_p > 0.0f) || top_p > 1.0f) return lm_fail(LM_ERR_ARG, "sampler: top-p must be in (0, 1] (got %g)", top_p);
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    s->vocab = vocab;
    lm_rng_seed(&s->rng, seed);
    s->probs = lm_malloc((size_t)vocab, sizeof(float));
    s->idx = lm_malloc((size_t)vocab, sizeof(int));
    if (!s->probs || !s->idx) {
        lm_sampler_free(s);
        return lm_fail(LM_ERR_NOMEM, "sampler: out of memory");
    }
    return LM_OK;
}

void lm_sampler_free(lm_sampler *s) {
    free(s->probs);
    free(s->idx);
    s->probs = NULL;
    s->idx = NULL;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static _Thread_local const float *t_probs;

static int by_prob_desc(const void *a, const void *b) {
    float pa = t_probs[*(const int *)a], pb = t_probs[*(const int *)b];
    if (pa > pb) return -1;
    if (pa < pb) return 1;
    return *(const int *)a - *(const int *)b;
}

int lm_sample(lm_sampler *s, float *logits) {
    int V = s->vocab;
    if (s->temperature == 0.0f) return argmax(logits, V);
    float mx = logits[argmax(logits, V)];
    double sum = 0;
    for (int i = 0; i < V; i++) {
        s->probs[i] = expf((logits[i] - mx) / s->temperature);
        sum += s->probs[i];
    }
    for (int i = 0; i < V; i++) s->probs[i] = (float)(s->probs[i] / sum);
    int n = V;
    int limit_k = s->top_k > 0 && s->top_k < V;
    if (limit_k || s->top_p < 1.0f) {
        /* candidates sorted by probability; drop tiny ones first so the sort stays cheap */
        float cutoff = s->top_p < 1.0f ? (1.0f - s->top_p) / (float)(V - 1 > 0 ? V - 1 : 1) : 0.0f;
        if (limit_k) cutoff = 0.0f;
        n = 0;
        for (int i = 0; i < V; i++)
            if (s->probs[i] >= cutoff) s->idx[n++] = i;
        t_probs = s->probs;
        qsort(s->idx, (size_t)n, sizeof(int), by_prob_desc);
        if (limit_k && n > s->top_k) n = s->top_k;
        double cum = 0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            cum += s->probs[s->idx[i]];
            if (cum >= s->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
        double total = 0;
        for (int i = 0; i < n; i++) total += s->probs[s->idx[i]];
        double r = (double)lm_rng_f32(&s->rng) * total, acc = 0;
        for (int i = 0; i < n; i++) {
            acc += s->probs[s->idx[i]];
            if (r < acc) return s->idx[i];
        }
        return s->idx[n - 1];
    }
    double r = (double)lm_rng_f32(&s->rng), acc = 0;
    for (int i = 0; i < V; i++) {
        acc += s->probs[i];
        if (r < acc) return i;
    }
    return V - 1;
}
