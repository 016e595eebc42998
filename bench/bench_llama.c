/* bench_llama.c - prefill and decode throughput of a GPT-2-small-sized Llama with random weights.
 *
 * The same model and protocol as bench/bench_llama.py (the PyTorch side), so bench/run.sh can
 * print the two side by side: 12 layers, dim 768, 12 heads (12 KV heads), SwiGLU ffn 2048,
 * vocab 32000, untied head, f32, interleaved RoPE. Prefill is one forward over 512 tokens
 * keeping the logits of the last position; decode continues from there with 128 greedy
 * single-token steps on the KV cache. One warm-up run, then the best of --reps runs.
 *
 *   bench_llama [--threads N] [--reps N] [--seed N]
 *
 * Prints one JSON line: {"impl":"lumen","prefill_tok_s":...,"decode_tok_s":...,"threads":...}. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <math.h>

#include "lumen/base.h"
#include "lumen/model.h"

enum { PROMPT = 512, NEW = 128, MAX_CTX = 640 };

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int parse_int(const char *s, const char *flag, int min) {
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < min || v > 1 << 20) {
        fprintf(stderr, "bench_llama: bad value for %s: '%s'\n", flag, s);
        exit(2);
    }
    return (int)v;
}

/* One prefill + decode on a reset state; the two phases' wall times in seconds. */
static lm_status run_once(const lm_model *m, lm_state *s, const int32_t *prompt, float *logits,
                          double *t_prefill, double *t_decode) {
    lm_state_reset(s);
    double t0 = lm_now();
    lm_status st = lm_forward(m, s, prompt, PROMPT, logits, 0);
    if (st != LM_OK) return st;
    double t1 = lm_now();
    int32_t tok = argmax(logits, m->cfg.vocab_size);
    double t2 = lm_now();
    for (int i = 0; i < NEW; i++) {
        st = lm_forward(m, s, &tok, 1, logits, 0);
        if (st != LM_OK) return st;
        tok = argmax(logits, m->cfg.vocab_size);
    }
    double t3 = lm_now();
    *t_prefill = t1 - t0;
    *t_decode = t3 - t2;
    return LM_OK;
}

/* Guards the numbers against a miscomputing BLAS kernel: 32 tokens as one batch (sgemm and
 * BLAS attention) against one at a time (sgemv and direct attention); relative error of the
 * last logits. */
static double self_check(const lm_model *m, lm_state *s, const int32_t *prompt, float *a, float *b) {
    enum { N = 32 };
    lm_state_reset(s);
    if (lm_forward(m, s, prompt, N, a, 0) != LM_OK) return INFINITY;
    lm_state_reset(s);
    for (int i = 0; i < N; i++)
        if (lm_forward(m, s, prompt + i, 1, b, 0) != LM_OK) return INFINITY;
    double num = 0, den = 0;
    for (int i = 0; i < m->cfg.vocab_size; i++) {
        num += (double)(a[i] - b[i]) * (a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / den);
}

int main(int argc, char **argv) {
    int threads = 2, reps = 3, seed = 1234;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--threads") == 0) {
            threads = parse_int(argv[++i], "--threads", 1);
        } else if (i + 1 < argc && strcmp(argv[i], "--reps") == 0) {
            reps = parse_int(argv[++i], "--reps", 1);
        } else if (i + 1 < argc && strcmp(argv[i], "--seed") == 0) {
            seed = parse_int(argv[++i], "--seed", 0);
        } else {
            fprintf(stderr, "usage: %s [--threads N] [--reps N] [--seed N]\n", argv[0]);
            return 2;
        }
    }

    lm_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.arch = LM_ARCH_LLAMA;
    cfg.dim = 768;
    cfg.hidden_dim = 2048;
    cfg.n_layers = 12;
    cfg.n_heads = 12;
    cfg.n_kv_heads = 12;
    cfg.head_dim = 64;
    cfg.vocab_size = 32000;
    cfg.seq_len = MAX_CTX;
    cfg.norm_eps = 1e-5f;
    cfg.rope_theta = 10000.0f;
    cfg.rope_style = LM_ROPE_INTERLEAVED;
    cfg.tied_embeddings = 0;

    lm_set_threads(threads);

    lm_model *m = NULL;
    lm_state *s = NULL;
    float *logits = NULL;
    int rc = 1;
    lm_status st = lm_model_init_random(&cfg, (uint64_t)seed, 0.02f, &m);
    if (st != LM_OK) goto fail;
    st = lm_state_new(m, MAX_CTX, PROMPT, &s);
    if (st != LM_OK) goto fail;
    logits = malloc((size_t)cfg.vocab_size * sizeof *logits);
    if (!logits) {
        st = lm_fail(LM_ERR_NOMEM, "bench_llama: logits buffer");
        goto fail;
    }

    int32_t prompt[PROMPT];
    lm_rng rng;
    lm_rng_seed(&rng, (uint64_t)seed + 1);
    for (int i = 0; i < PROMPT; i++) prompt[i] = (int32_t)(lm_rng_u32(&rng) % (uint32_t)cfg.vocab_size);

    double tp, td, best_p = 1e30, best_d = 1e30;
    st = run_once(m, s, prompt, logits, &tp, &td); /* warm-up */
    if (st != LM_OK) goto fail;
    for (int r = 0; r < reps; r++) {
        st = run_once(m, s, prompt, logits, &tp, &td);
        if (st != LM_OK) goto fail;
        if (tp < best_p) best_p = tp;
        if (td < best_d) best_d = td;
    }
    float *check = malloc((size_t)cfg.vocab_size * sizeof *check);
    double err = check ? self_check(m, s, prompt, logits, check) : INFINITY;
    free(check);
    printf("{\"impl\": \"lumen\", \"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f, \"threads\": %d, "
           "\"blas_core\": \"%s\", \"check_rel_err\": %.3g}\n",
           PROMPT / best_p, NEW / best_d, lm_get_threads(), openblas_get_corename(), err);
    if (!(err < 1e-4)) {
        fprintf(stderr, "bench_llama: batched and token-by-token logits differ (rel err %g): numbers are void\n", err);
        goto done;
    }
    rc = 0;
    goto done;

fail:
    fprintf(stderr, "bench_llama: %s: %s\n", lm_status_name(st), lm_errmsg());
done:
    free(logits);
    lm_state_free(s);
    lm_model_free(m);
    return rc;
}
