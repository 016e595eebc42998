/* profile.c - the linearity profile of a model: capture the residual stream at every layer over
 * lm_harvest's windows, then score each block (linearity) and each state (anisotropy, dimension). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "analysis_internal.h"

/* Analysis threads are capped so that their working copies stay under a quarter of the
 * machine's memory (at least 2 GiB): the states themselves already hold much of it. */
static double memory_budget(void) {
    double floor_bytes = 2.0 * (1u << 30);
#ifdef _SC_PHYS_PAGES
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    if (pages > 0 && size > 0 && (double)pages * (double)size / 4 > floor_bytes)
        return (double)pages * (double)size / 4;
#endif
    return floor_bytes;
}

void lm_linearity_result_free(lm_linearity_result *res) {
    if (!res) return;
    free(res->linearity);
    free(res->linearity_no_residual);
    free(res->anisotropy);
    free(res->intrinsic_dim);
    res->linearity = res->linearity_no_residual = res->anisotropy = res->intrinsic_dim = NULL;
}

static lm_status result_alloc(lm_linearity_result *res, int n_layers) {
    size_t L = (size_t)n_layers;
    res->n_layers = n_layers;
    res->linearity = lm_malloc(L ? L : 1, sizeof(double));
    res->linearity_no_residual = lm_malloc(L ? L : 1, sizeof(double));
    res->anisotropy = lm_malloc(L + 1, sizeof(double));
    res->intrinsic_dim = lm_malloc(L + 1, sizeof(double));
    if (!res->linearity || !res->linearity_no_residual || !res->anisotropy || !res->intrinsic_dim) {
        lm_linearity_result_free(res);
        return lm_fail(LM_ERR_NOMEM, "linearity: out of memory");
    }
    for (size_t i = 0; i <= L; i++) {
        if (i < L) res->linearity[i] = res->linearity_no_residual[i] = NAN;
        res->anisotropy[i] = res->intrinsic_dim[i] = NAN;
    }
    return LM_OK;
}

/* What one state's task failed with, kept so the caller's thread can report it. */
typedef struct task_error {
    lm_status st;
    char msg[512];
} task_error;

static void analyse_state(const float *const *h, int L, size_t n, size_t d, size_t id_n, int i,
                          lm_linearity_result *res, task_error *err) {
    lm_status st = lm_anisotropy(h[i], n, d, &res->anisotropy[i]);
    if (st == LM_OK) st = lm_intrinsic_dim(h[i], id_n, d, &res->intrinsic_dim[i]);
    if (st == LM_OK && i < L)
        st = lm_linearity_scores(h[i], h[i + 1], n, d, 1, &res->linearity[i], &res->linearity_no_residual[i]);
    if (st != LM_OK) {
        err->st = st;
        snprintf(err->msg, sizeof err->msg, "state %d of %d: %s", i, L, lm_errmsg());
    }
}

lm_status lm_linearity_analyse(const float *const *h, int n_layers, size_t n, size_t d, const lm_linearity_opts *o,
                               lm_linearity_result *res) {
    int L = n_layers;
    memset(res, 0, sizeof *res);
    if (L < 0 || !h) return lm_fail(LM_ERR_ARG, "linearity: no states given");
    if (n < 3) return lm_fail(LM_ERR_ARG, "linearity: needs at least 3 tokens, got %zu", n);
    lm_status st = result_alloc(res, L);
    if (st != LM_OK) return st;
    res->n_tokens = n;
    res->d = d;
    size_t id_n = o && o->id_max_tokens && o->id_max_tokens < n ? o->id_max_tokens : n;
    if (id_n < 3) id_n = 3;
    res->id_tokens = id_n;
    task_error *errs = calloc((size_t)L + 1, sizeof *errs);
    if (!errs) {
        lm_linearity_result_free(res);
        return lm_fail(LM_ERR_NOMEM, "linearity: out of memory");
    }
    /* one state per thread (BLAS and LAPACK run single-threaded inside), as many threads as the
     * working copies allow: X and [Y | Y - X] in double, the fit, and the d x d systems */
    double per_task = 8.0 * (7.0 * (double)n * (double)d + 5.0 * (double)d * (double)d);
    int nt = lm_get_threads();
    double budget = memory_budget();
    if (per_task * nt > budget) nt = (int)(budget / per_task);
    if (nt < 1) nt = 1;
    if (nt > L + 1) nt = L + 1;
    double t0 = lm_now();
    int done = 0, stop = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int i = 0; i <= L; i++) {
        int skip;
#pragma omp atomic read
        skip = stop;
        if (skip) continue;
        analyse_state(h, L, n, d, id_n, i, res, &errs[i]);
#pragma omp critical(lm_linearity_progress)
        {
            done++;
            if (o && o->layer_cb && o->layer_cb(o->layer_ud, (size_t)done, (size_t)L + 1)) {
#pragma omp atomic write
                stop = 1;
            }
            if (errs[i].st != LM_OK) {
#pragma omp atomic write
                stop = 1;
            }
        }
    }
    res->seconds_analysis = lm_now() - t0;
    for (int i = 0; i <= L && st == LM_OK; i++)
        if (errs[i].st != LM_OK) st = lm_fail(errs[i].st, "linearity: %s", errs[i].msg);
    if (st == LM_OK && stop) st = lm_fail(LM_ERR_ARG, "linearity: stopped");
    free(errs);
    if (st != LM_OK) lm_linearity_result_free(res);
    return st;
}

/* ---- capture ------------------------------------------------------------------------------ */

lm_status lm_linearity_profile(const lm_model *m, const int32_t *ids, size_t n, const lm_linearity_opts *o,
                               lm_linearity_result *res) {
    memset(res, 0, sizeof *res);
    const int L = m->cfg.n_layers;
    const size_t d = (size_t)m->cfg.dim;
    int ctx = o && o->ctx > 0 ? o->ctx : m->cfg.seq_len;
    if (ctx > m->cfg.seq_len)
        return lm_fail(LM_ERR_RANGE, "linearity: window of %d tokens exceeds the model's context of %d", ctx,
                       m->cfg.seq_len);
    int batch = o && o->batch > 0 ? o->batch : 4;
    if (n < 3) return lm_fail(LM_ERR_ARG, "linearity: needs at least 3 tokens, got %zu", n);
    /* Centred, n rows span at most n - 1 dimensions: with n - 1 <= d every state maps exactly onto
     * the next (score 1 whatever the model), so such a profile is refused rather than reported. */
    size_t rows = n;
    if (o && !o->include_bos && o->bos_id >= 0)
        for (size_t t = 0; t < n; t++) rows -= ids[t] == o->bos_id;
    if (rows <= d + 1)
        return lm_fail(LM_ERR_ARG,
                       "linearity: %zu tokens for hidden size %zu: the least-squares map between states is "
                       "under-determined (every score would be 1); give more than %zu tokens (several times the "
                       "hidden size is better)",
                       rows, d, d + 1);
    size_t bytes;
    if (lm_mul_ok(n, d, &bytes) || lm_mul_ok(bytes, ((size_t)L + 1) * sizeof(float), &bytes))
        return lm_fail(LM_ERR_NOMEM, "linearity: %zu tokens x %zu x %d states overflow memory", n, d, L + 1);
    lm_row_sink *sinks = calloc((size_t)L + 1, sizeof *sinks);
    lm_state *s = NULL, *s1 = NULL;
    lm_status st = sinks ? LM_OK : lm_fail(LM_ERR_NOMEM, "linearity: out of memory");
    for (int i = 0; st == LM_OK && i <= L; i++) {
        sinks[i] = (lm_row_sink){lm_malloc(n * d, sizeof(float)), d, 0, n};
        if (!sinks[i].buf)
            st = lm_fail(LM_ERR_NOMEM, "linearity: out of memory for %d states of %zu tokens x %zu (%.1f GiB)", L + 1,
                         n, d, (double)bytes / (1u << 30));
    }
    /* the windows and the two states of lm_harvest, so the rows are the states it writes */
    if (st == LM_OK) st = lm_state_new_batch(m, ctx, batch * ctx, batch, &s);
    if (st == LM_OK) st = lm_state_new(m, ctx, ctx, &s1);
    for (int i = 0; st == LM_OK && i <= L; i++) {
        char name[64];
        if (i == 0) snprintf(name, sizeof name, "blocks.0.hook_resid_pre");
        else snprintf(name, sizeof name, "blocks.%d.hook_resid_post", i - 1);
        st = lm_state_add_hook(s, name, lm_row_sink_hook, &sinks[i]);
        if (st == LM_OK) st = lm_state_add_hook(s1, name, lm_row_sink_hook, &sinks[i]);
    }
    double t0 = lm_now();
    if (st == LM_OK) {
        lm_windows_opts wo = {ctx, batch, NULL, NULL, o ? o->cb : NULL, o ? o->cb_ud : NULL, 0, n, "linearity"};
        st = lm_forward_windows(m, s, s1, ids, n, &wo);
    }
    double t_fwd = lm_now() - t0;
    lm_state_free(s);
    lm_state_free(s1);
    /* drop the BOS rows from every state alike */
    size_t kept = n;
    int drop = o && !o->include_bos && o->bos_id >= 0;
    if (st == LM_OK && drop) {
        kept = 0;
        for (size_t t = 0; t < n; t++) {
            if (ids[t] == o->bos_id) continue;
            if (kept != t)
                for (int i = 0; i <= L; i++) memmove(sinks[i].buf + kept * d, sinks[i].buf + t * d, d * sizeof(float));
            kept++;
        }
        if (kept < 3) st = lm_fail(LM_ERR_ARG, "linearity: only %zu tokens left after dropping BOS; needs 3", kept);
    }
    const float **h = st == LM_OK ? malloc(((size_t)L + 1) * sizeof *h) : NULL;
    if (st == LM_OK && !h) st = lm_fail(LM_ERR_NOMEM, "linearity: out of memory");
    if (st == LM_OK) {
        for (int i = 0; i <= L; i++) h[i] = sinks[i].buf;
        st = lm_linearity_analyse(h, L, kept, d, o, res);
    }
    if (st == LM_OK) {
        res->n_bos_dropped = n - kept;
        res->n_windows = n / (size_t)ctx + (n % (size_t)ctx > 0);
        res->seconds_forward = t_fwd;
    }
    free(h);
    for (int i = 0; sinks && i <= L; i++) free(sinks[i].buf);
    free(sinks);
    return st;
}
