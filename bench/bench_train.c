/* bench_train.c - training throughput (forward + backward + AdamW step, tokens/s) for GPT-2 small
 * (124M, batch 4 x 256) and the shipped model's shape (Llama, d 192, 4 layers, 6 heads / 2 KV
 * heads, SwiGLU 512, vocab 4096, tied, batch 16 x 128), the counterpart of bench_train.py.
 * Also reports the share of the sgemm peak the step reaches: model FLOPs (6 per parameter per
 * token for the matrices, plus attention) over the time, against a bare sgemm of the MLP's
 * shape run through lumen's threading in the same process.
 *
 *   bench_train [--model gpt2|small|all] [--threads N] [--steps N]
 *
 * Prints one JSON line per model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lumen/lumen.h"

static double sgemm_peak(size_t M, size_t N, size_t K) {
    float *x = malloc(M * K * 4), *w = malloc(N * K * 4), *y = malloc(M * N * 4);
    for (size_t i = 0; i < M * K; i++) x[i] = 0.001f * (float)(i % 13);
    for (size_t i = 0; i < N * K; i++) w[i] = 0.001f * (float)(i % 7);
    lm_linear_f32(y, x, w, NULL, M, K, N);
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t = lm_now();
        lm_linear_f32(y, x, w, NULL, M, K, N);
        t = lm_now() - t;
        if (t < best) best = t;
    }
    free(x);
    free(w);
    free(y);
    return 2.0 * M * N * K / best / 1e9;
}

static int run(const char *name, lm_config *c, int B, int T, int steps) {
    lm_trainable *t = NULL;
    if (lm_trainable_new(c, 1, &t) != LM_OK) {
        fprintf(stderr, "bench_train: %s\n", lm_errmsg());
        return 1;
    }
    size_t N = (size_t)B * T;
    int32_t *in = malloc(N * 4), *tg = malloc(N * 4);
    lm_rng rng;
    lm_rng_seed(&rng, 5);
    for (size_t i = 0; i < N; i++) in[i] = (int32_t)(lm_rng_u32(&rng) % (uint32_t)c->vocab_size);
    for (size_t i = 0; i < N; i++) tg[i] = i + 1 < N ? in[i + 1] : in[0];
    lm_adamw opt = {1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 0};
    double total = 0, loss = 0;
    for (int s = 0; s < steps + 2; s++) {
        double t0 = lm_now();
        lm_trainable_zero_grad(t);
        if (lm_train_step_grad(t, in, tg, B, T, 1.0f, &loss) != LM_OK) {
            fprintf(stderr, "bench_train: %s\n", lm_errmsg());
            return 1;
        }
        double gn = lm_grad_norm(t);
        lm_adamw_step(t, &opt, gn > 1.0 ? (float)(1.0 / gn) : 1.0f);
        if (s >= 2) total += lm_now() - t0; /* two warm-up steps */
    }
    double step_s = total / steps;
    /* matrix parameters (embedding lookups cost nothing; the tied head is a matmul) */
    size_t mat = 0;
    for (size_t i = 0; i < t->n_table; i++)
        if (t->table[i].cols > 1 && strcmp(t->table[i].name, "pos_embed")) mat += t->table[i].size;
    if (c->tied_embeddings == 0) mat -= (size_t)c->vocab_size * c->dim; /* the input embedding is a lookup */
    /* attention: QK^T and PV, 4 T^2 d per layer and sequence, half of it under the causal mask, x3 with the backward */
    double flops = 6.0 * (double)mat * N + 6.0 * c->n_layers * (double)B * T * T * c->dim;
    double peak = sgemm_peak(N, (size_t)c->hidden_dim, (size_t)c->dim);
    printf("{\"impl\": \"lumen\", \"model\": \"%s\", \"tokens_per_s\": %.1f, \"step_s\": %.4f, \"loss\": %.4f, "
           "\"gflops\": %.1f, \"sgemm_peak_gflops\": %.1f, \"share_of_peak\": %.3f, \"threads\": %d}\n",
           name, N / step_s, step_s, loss, flops / step_s / 1e9, peak, flops / step_s / 1e9 / peak, lm_get_threads());
    free(in);
    free(tg);
    lm_trainable_free(t);
    return 0;
}

int main(int argc, char **argv) {
    const char *which = "all";
    int threads = 2, steps = 5;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--model")) which = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--threads")) threads = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--steps")) steps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--model gpt2|small|all] [--threads N] [--steps N]\n", argv[0]);
            return 2;
        }
    }
    if (threads < 1 || steps < 1) return 2;
    lm_set_threads(threads);
    int rc = 0;
    if (!strcmp(which, "gpt2") || !strcmp(which, "all")) {
        lm_config c = {0};
        c.arch = LM_ARCH_GPT2;
        c.dim = 768;
        c.n_layers = 12;
        c.n_heads = 12;
        c.n_kv_heads = 12;
        c.hidden_dim = 3072;
        c.vocab_size = 50257;
        c.seq_len = 1024;
        c.tied_embeddings = 1;
        rc |= run("gpt2-124m", &c, 4, 256, steps);
    }
    if (!strcmp(which, "small") || !strcmp(which, "all")) {
        lm_config c = {0};
        c.arch = LM_ARCH_LLAMA;
        c.dim = 192;
        c.n_layers = 4;
        c.n_heads = 6;
        c.n_kv_heads = 2;
        c.hidden_dim = 512;
        c.vocab_size = 4096;
        c.seq_len = 128;
        c.tied_embeddings = 1;
        rc |= run("lumen-tiny", &c, 16, 128, steps);
    }
    return rc;
}
