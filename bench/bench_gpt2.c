/* bench_gpt2.c - prefill, decode and activation-harvesting throughput of GPT-2 small with random weights.
 *
 * The same model and protocol as bench/bench_gpt2.py (the PyTorch side), so bench/run.sh can print
 * the two side by side: GPT-2 small (124M): 12 layers, dim 768, 12 heads, GELU-tanh MLP 3072,
 * LayerNorm, learned positions (1024), biases, vocab 50257, output head tied to the token
 * embeddings, f32. Phases, each one warm-up run then the best of --reps:
 *   prefill_512    one sequence of 512 tokens, logits of the last position
 *   prefill_8x128  8 sequences of 128 tokens in one batched call, logits of every position
 *   decode         a 16-token prompt, then 128 greedy single-token steps on the KV cache (timed)
 *   activations    the harvesting path (as lm_harvest / `lumen activations`): batches of 8x128
 *                  tokens, no logits, a hook copying blocks.6.hook_resid_post out
 * then the weights are converted to BF16 copies and prefill_512 and decode run again.
 *
 *   bench_gpt2 [--threads N] [--reps N] [--seed N]
 *
 * Prints one JSON line: {"impl": "lumen", "prefill_512_tok_s": ..., ...}. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <math.h>

#include "lumen/base.h"
#include "lumen/model.h"

enum {
    VOCAB = 50257,
    CTX = 1024,
    LONG = 512,        /* prefill_512 */
    NSEQ = 8,          /* prefill_8x128 and activations: sequences per call */
    SEQ = 128,         /*   ... of this many tokens */
    PROMPT = 16,       /* decode: prompt ... */
    NEW = 128,         /*   ... then this many generated tokens */
    ACT_CALLS = 4,     /* activations: batches of NSEQ x SEQ per timed run */
    CHECK = 32,        /* self-check: tokens run batched and one at a time */
};

static const char *const ACT_HOOK = "blocks.6.hook_resid_post";

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
        fprintf(stderr, "bench_gpt2: bad value for %s: '%s'\n", flag, s);
        exit(2);
    }
    return (int)v;
}

/* Everything a phase needs; the model is swapped from f32 to bf16 between the two rounds. */
typedef struct bench {
    const lm_model *m;
    lm_state *s1;     /* one sequence, context CTX, LONG tokens per call */
    lm_state *sb;     /* NSEQ sequences of SEQ tokens, for prefill_8x128 */
    lm_state *sa;     /* the same shape with the harvesting hook, for activations */
    const int32_t *toks; /* [ACT_CALLS * NSEQ * SEQ] random ids; the first LONG also serve prefill_512 */
    float *logits;    /* [VOCAB] */
    float *all_logits; /* [NSEQ * SEQ * VOCAB] */
    int32_t last_decoded;
} bench;

/* What lm_harvest's sink does: copy each activation out, one row per token. */
typedef struct sink {
    float *buf;   /* [ACT_CALLS * NSEQ * SEQ, dim] */
    size_t d, off;
} sink;

static lm_status sink_hook(void *ud, const lm_hook_info *info, float *act) {
    sink *k = ud;
    size_t rows = (size_t)info->n_seq * (size_t)info->n_tok;
    memcpy(k->buf + k->off * k->d, act, rows * k->d * sizeof(float));
    k->off += rows;
    return LM_OK;
}

typedef enum phase { PREFILL_512, PREFILL_8X128, DECODE, ACTIVATIONS } phase;

/* One run of a phase: its wall time in seconds and the tokens it counts. */
static lm_status run_phase(bench *b, phase p, sink *k, double *secs, int *tokens) {
    const lm_model *m = b->m;
    lm_status st = LM_OK;
    double t0 = 0, t1 = 0;
    switch (p) {
    case PREFILL_512:
        lm_state_reset(b->s1);
        t0 = lm_now();
        st = lm_forward(m, b->s1, b->toks, LONG, b->logits, 0);
        t1 = lm_now();
        *tokens = LONG;
        break;
    case PREFILL_8X128:
        lm_state_reset(b->sb);
        t0 = lm_now();
        st = lm_forward_batch(m, b->sb, b->toks, NSEQ, SEQ, b->all_logits, 1);
        t1 = lm_now();
        *tokens = NSEQ * SEQ;
        break;
    case DECODE: {
        lm_state_reset(b->s1);
        st = lm_forward(m, b->s1, b->toks, PROMPT, b->logits, 0);
        int32_t tok = argmax(b->logits, VOCAB);
        t0 = lm_now();
        for (int i = 0; st == LM_OK && i < NEW; i++) {
            st = lm_forward(m, b->s1, &tok, 1, b->logits, 0);
            tok = argmax(b->logits, VOCAB);
        }
        t1 = lm_now();
        b->last_decoded = tok;
        *tokens = NEW;
        break;
    }
    case ACTIVATIONS:
        k->off = 0;
        t0 = lm_now();
        for (int c = 0; st == LM_OK && c < ACT_CALLS; c++) {
            lm_state_reset(b->sa);
            st = lm_forward_batch(m, b->sa, b->toks + (size_t)c * NSEQ * SEQ, NSEQ, SEQ, NULL, 0);
        }
        t1 = lm_now();
        if (st == LM_OK && k->off != (size_t)ACT_CALLS * NSEQ * SEQ)
            st = lm_fail(LM_ERR_ARG, "bench_gpt2: the hook saw %zu tokens, expected %d", k->off, ACT_CALLS * NSEQ * SEQ);
        *tokens = ACT_CALLS * NSEQ * SEQ;
        break;
    }
    *secs = t1 - t0;
    return st;
}

/* Tokens per second of a phase: one warm-up, then the best of reps. */
static lm_status measure(bench *b, phase p, sink *k, int reps, double *tok_s) {
    double secs, best = 1e30;
    int n = 0;
    lm_status st = run_phase(b, p, k, &secs, &n);
    for (int r = 0; st == LM_OK && r < reps; r++) {
        st = run_phase(b, p, k, &secs, &n);
        if (secs < best) best = secs;
    }
    *tok_s = st == LM_OK ? n / best : 0;
    return st;
}

static double rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (double)(a[i] - b[i]) * (a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : INFINITY;
}

/* Guards the numbers against a miscomputing kernel: the last logits of CHECK tokens as one
 * batch (sgemm, BLAS attention) against one at a time (sgemv or the 16-bit dot, direct
 * attention); and, when the batched prefill has run, the last-position logits of its fourth
 * sequence against that sequence alone. Returns the larger relative error. */
static double self_check(bench *b, int with_batch) {
    const lm_model *m = b->m;
    float *ref = malloc((size_t)VOCAB * sizeof *ref);
    double err = INFINITY;
    if (!ref) return err;
    lm_state_reset(b->s1);
    if (lm_forward(m, b->s1, b->toks, CHECK, b->logits, 0) != LM_OK) goto done;
    lm_state_reset(b->s1);
    for (int i = 0; i < CHECK; i++)
        if (lm_forward(m, b->s1, b->toks + i, 1, ref, 0) != LM_OK) goto done;
    err = rel_err(b->logits, ref, VOCAB);
    if (with_batch) {
        const int q = 3;
        lm_state_reset(b->s1);
        if (lm_forward(m, b->s1, b->toks + (size_t)q * SEQ, SEQ, ref, 0) != LM_OK) {
            err = INFINITY;
            goto done;
        }
        double e = rel_err(b->all_logits + ((size_t)q * SEQ + SEQ - 1) * VOCAB, ref, VOCAB);
        if (!(e <= err)) err = e;
    }
done:
    free(ref);
    return err;
}

/* Points every matrix of m (embeddings, positions, the four attention and two MLP matrices
 * of each layer; the tied head follows the embeddings) at a BF16 copy. The copies go into
 * *bufs (free each, then the array); saved[] keeps the f32 views to restore. */
typedef struct bf16_copies {
    void **bufs;
    size_t n;
    lm_weight *saved; /* tok, pos, output, then 6 per layer */
} bf16_copies;

static lm_status to_bf16_one(lm_weight *w, bf16_copies *c) {
    size_t n = w->rows * w->cols;
    uint16_t *h = lm_aligned_alloc(n, sizeof *h);
    if (!h) return lm_fail(LM_ERR_NOMEM, "bench_gpt2: out of memory for a BF16 copy");
    const float *f = w->data;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) h[i] = lm_f32_to_bf16(f[i]);
    c->bufs[c->n++] = h;
    w->dtype = LM_BF16;
    w->data = h;
    return LM_OK;
}

static lm_status to_bf16(lm_model *m, bf16_copies *c) {
    int L = m->cfg.n_layers;
    c->bufs = calloc((size_t)2 + 6 * (size_t)L, sizeof *c->bufs);
    c->saved = calloc((size_t)3 + 6 * (size_t)L, sizeof *c->saved);
    if (!c->bufs || !c->saved) return lm_fail(LM_ERR_NOMEM, "bench_gpt2: out of memory");
    c->saved[0] = m->tok_embeddings;
    c->saved[1] = m->pos_embeddings;
    c->saved[2] = m->output;
    lm_status st = to_bf16_one(&m->tok_embeddings, c);
    if (st == LM_OK) st = to_bf16_one(&m->pos_embeddings, c);
    if (st == LM_OK) m->output = m->tok_embeddings; /* tied: the same BF16 copy */
    for (int l = 0; st == LM_OK && l < L; l++) {
        lm_weight *w[6] = {&m->layers[l].wq, &m->layers[l].wk, &m->layers[l].wv,
                           &m->layers[l].wo, &m->layers[l].w_up, &m->layers[l].w_down};
        for (int j = 0; st == LM_OK && j < 6; j++) {
            c->saved[3 + 6 * l + j] = *w[j];
            st = to_bf16_one(w[j], c);
        }
    }
    return st;
}

/* Back to the f32 views (the model frees only its own allocation), then frees the copies. */
static void bf16_release(lm_model *m, bf16_copies *c) {
    if (c->saved && c->n > 0) {
        m->tok_embeddings = c->saved[0];
        m->pos_embeddings = c->saved[1];
        m->output = c->saved[2];
        for (int l = 0; l < m->cfg.n_layers; l++) {
            lm_weight *w[6] = {&m->layers[l].wq, &m->layers[l].wk, &m->layers[l].wv,
                               &m->layers[l].wo, &m->layers[l].w_up, &m->layers[l].w_down};
            for (int j = 0; j < 6; j++)
                if (c->saved[3 + 6 * l + j].data) *w[j] = c->saved[3 + 6 * l + j];
        }
    }
    for (size_t i = 0; i < c->n; i++) free(c->bufs[i]);
    free(c->bufs);
    free(c->saved);
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
    cfg.arch = LM_ARCH_GPT2; /* init_random sets LayerNorm, GELU-tanh, learned positions, biases */
    cfg.dim = 768;
    cfg.hidden_dim = 3072;
    cfg.n_layers = 12;
    cfg.n_heads = 12;
    cfg.n_kv_heads = 12;
    cfg.head_dim = 64;
    cfg.vocab_size = VOCAB;
    cfg.seq_len = CTX;
    cfg.norm_eps = 1e-5f;
    cfg.tied_embeddings = 1;

    lm_set_threads(threads);

    lm_model *m = NULL;
    bench b;
    memset(&b, 0, sizeof b);
    sink k = {NULL, (size_t)cfg.dim, 0};
    bf16_copies bf = {NULL, 0, NULL};
    int32_t *toks = NULL;
    int rc = 1;
    const size_t n_toks = (size_t)ACT_CALLS * NSEQ * SEQ;
    lm_status st = lm_model_init_random(&cfg, (uint64_t)seed, 0.02f, &m);
    if (st == LM_OK) st = lm_state_new(m, CTX, LONG, &b.s1);
    if (st == LM_OK) st = lm_state_new_batch(m, SEQ, NSEQ * SEQ, NSEQ, &b.sb);
    if (st == LM_OK) st = lm_state_new_batch(m, SEQ, NSEQ * SEQ, NSEQ, &b.sa);
    if (st == LM_OK) st = lm_state_add_hook(b.sa, ACT_HOOK, sink_hook, &k);
    if (st != LM_OK) goto fail;
    toks = malloc(n_toks * sizeof *toks);
    b.logits = malloc((size_t)VOCAB * sizeof *b.logits);
    b.all_logits = lm_aligned_alloc((size_t)NSEQ * SEQ * VOCAB, sizeof *b.all_logits);
    k.buf = lm_aligned_alloc(n_toks * k.d, sizeof *k.buf);
    if (!toks || !b.logits || !b.all_logits || !k.buf) {
        st = lm_fail(LM_ERR_NOMEM, "bench_gpt2: out of memory for buffers");
        goto fail;
    }
    lm_rng rng;
    lm_rng_seed(&rng, (uint64_t)seed + 1);
    for (size_t i = 0; i < n_toks; i++) toks[i] = (int32_t)(lm_rng_u32(&rng) % (uint32_t)VOCAB);
    b.m = m;
    b.toks = toks;

    double p512 = 0, p8x128 = 0, dec = 0, act = 0, dec_bf16 = 0, p512_bf16 = 0;
    if ((st = measure(&b, PREFILL_512, &k, reps, &p512)) != LM_OK) goto fail;
    if ((st = measure(&b, PREFILL_8X128, &k, reps, &p8x128)) != LM_OK) goto fail;
    if ((st = measure(&b, DECODE, &k, reps, &dec)) != LM_OK) goto fail;
    if ((st = measure(&b, ACTIVATIONS, &k, reps, &act)) != LM_OK) goto fail;
    double err = self_check(&b, 1);

    if ((st = to_bf16(m, &bf)) != LM_OK) goto fail;
    if ((st = measure(&b, DECODE, &k, reps, &dec_bf16)) != LM_OK) goto fail;
    if ((st = measure(&b, PREFILL_512, &k, reps, &p512_bf16)) != LM_OK) goto fail;
    double err_bf16 = self_check(&b, 0);

    printf("{\"impl\": \"lumen\", \"prefill_512_tok_s\": %.2f, \"prefill_8x128_tok_s\": %.2f, "
           "\"decode_tok_s\": %.2f, \"activations_tok_s\": %.2f, \"decode_bf16_tok_s\": %.2f, "
           "\"prefill_512_bf16_tok_s\": %.2f, \"threads\": %d, \"blas_core\": \"%s\", "
           "\"check_rel_err\": %.3g, \"check_rel_err_bf16\": %.3g}\n",
           p512, p8x128, dec, act, dec_bf16, p512_bf16, lm_get_threads(), openblas_get_corename(), err, err_bf16);
    if (!(err < 1e-4) || !(err_bf16 < 1e-4)) {
        fprintf(stderr, "bench_gpt2: batched and token-by-token logits differ (rel err %g, bf16 %g): numbers are void\n",
                err, err_bf16);
        goto done;
    }
    rc = 0;
    goto done;

fail:
    fprintf(stderr, "bench_gpt2: %s: %s\n", lm_status_name(st), lm_errmsg());
done:
    if (m) bf16_release(m, &bf);
    free(toks);
    free(b.logits);
    free(b.all_logits);
    free(k.buf);
    lm_state_free(b.s1);
    lm_state_free(b.sb);
    lm_state_free(b.sa);
    lm_model_free(m);
    return rc;
}
