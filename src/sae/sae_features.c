/* sae_features.c - what each SAE latent responds to and does: density, max activation, top and
 * interval-sampled contexts over a corpus, logit effects and decoder neighbours (definitions in
 * sae.h). The outputs (features.json, the HTML browser, feature_stats.safetensors) are written by
 * sae_features_out.c.
 *
 * Two passes run the same windows: the first gathers counts, maxima and the top contexts (a
 * min-heap per latent); the second, which needs each latent's max to place the intervals, draws
 * the interval samples. A batch of windows is encoded into f [rows, d_sae] and transposed, so
 * each latent's column is contiguous and latents are split across threads with no shared state. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lumen/model.h"
#include "lumen/sae.h"

#define FX_STOP LM_ERR_RANGE /* returned by the capture hook to end the forward early */

typedef struct fx_capture {
    float *buf; /* [expected, d] */
    size_t d, expected, got;
} fx_capture;

static lm_status fx_hook(void *ud, const lm_hook_info *info, float *act) {
    fx_capture *c = ud;
    size_t rows = (size_t)info->n_seq * (size_t)info->n_tok;
    if ((size_t)info->d != c->d)
        return lm_fail(LM_ERR_ARG, "sae features: hook %s has width %d but the SAE's d_in is %zu", info->name,
                       info->d, c->d);
    if (c->got + rows > c->expected) return lm_fail(LM_ERR_ARG, "sae features: the hook delivered more rows than run");
    memcpy(c->buf + c->got * c->d, act, rows * c->d * sizeof(float));
    c->got += rows;
    return c->got == c->expected ? FX_STOP : LM_OK;
}

/* The first free-standing group of rows: nb windows of len tokens starting at ids[g0]. */
typedef struct fx_group {
    const int32_t *ids; /* the whole stream */
    size_t g0, rows, len;
    const float *ft;    /* [d_sae, rows]: column i is latent i over the group */
} fx_group;

/* Writes the context of row r of the group for latent i (activation v) into c. */
static void fill_ctx(lm_sae_context *c, const fx_group *g, size_t i, size_t r, float v, int before, int after) {
    size_t o = r % g->len, wb = r - o;
    size_t s = o > (size_t)before ? o - (size_t)before : 0;
    size_t e = o + (size_t)after + 1 < g->len ? o + (size_t)after + 1 : g->len;
    const float *col = g->ft + i * g->rows;
    c->pos = g->g0 + r;
    c->act = v;
    c->len = (uint32_t)(e - s);
    c->at = (uint32_t)(o - s);
    c->prev = s > 0 ? g->ids[g->g0 + wb + s - 1] : -1;
    for (size_t k = s; k < e; k++) {
        c->tokens[k - s] = g->ids[g->g0 + wb + k];
        c->acts[k - s] = col[wb + k];
    }
}

/* heap order: a is worse than b (lower activation; on a tie the later token) */
static int worse(const lm_sae_context *a, const lm_sae_context *b) {
    return a->act < b->act || (a->act == b->act && a->pos > b->pos);
}

static void swap_ctx(lm_sae_context *a, lm_sae_context *b) {
    lm_sae_context t = *a;
    *a = *b;
    *b = t;
}

static void sift_up(lm_sae_context *h, size_t k) {
    while (k > 0) {
        size_t p = (k - 1) / 2;
        if (!worse(&h[k], &h[p])) break;
        swap_ctx(&h[k], &h[p]);
        k = p;
    }
}

static void sift_down(lm_sae_context *h, size_t n) {
    size_t k = 0;
    for (;;) {
        size_t l = 2 * k + 1, r = l + 1, m = k;
        if (l < n && worse(&h[l], &h[m])) m = l;
        if (r < n && worse(&h[r], &h[m])) m = r;
        if (m == k) return;
        swap_ctx(&h[k], &h[m]);
        k = m;
    }
}

static int by_act_desc(const void *pa, const void *pb) {
    const lm_sae_context *a = pa, *b = pb;
    if (a->act != b->act) return a->act > b->act ? -1 : 1;
    return a->pos < b->pos ? -1 : a->pos > b->pos;
}

static uint64_t splitmix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

typedef struct fx_run {
    lm_sae_features *f;
    lm_rng *rng; /* [d_sae] */
    double *sum; /* [d_sae] */
} fx_run;

static void pass1_latent(fx_run *R, const fx_group *g, size_t i) {
    lm_sae_features *F = R->f;
    const float *col = g->ft + i * g->rows;
    lm_sae_context *h = F->top + i * F->n_top;
    uint32_t *cnt = &F->top_count[i];
    for (size_t r = 0; r < g->rows; r++) {
        float v = col[r];
        if (v == 0.0f) continue;
        F->n_fired[i]++;
        R->sum[i] += v;
        if (v > F->max_act[i]) F->max_act[i] = v;
        if (!(v > 0.0f)) continue;
        if (*cnt < F->n_top) {
            fill_ctx(&h[*cnt], g, i, r, v, F->before, F->after);
            sift_up(h, *cnt);
            (*cnt)++;
        } else if (v > h[0].act) { /* tokens come in order: an equal activation never wins */
            fill_ctx(&h[0], g, i, r, v, F->before, F->after);
            sift_down(h, *cnt);
        }
    }
}

static void pass2_latent(fx_run *R, const fx_group *g, size_t i) {
    lm_sae_features *F = R->f;
    const float *col = g->ft + i * g->rows;
    float mx = F->max_act[i];
    if (!(mx > 0.0f)) return;
    size_t Q = F->n_intervals, S = F->n_per_interval;
    for (size_t r = 0; r < g->rows; r++) {
        float v = col[r];
        if (!(v > 0.0f)) continue;
        size_t q = (size_t)((double)v / (double)mx * (double)Q);
        if (q >= Q) q = Q - 1;
        size_t iq = i * Q + q;
        uint64_t c = ++F->interval_count[iq];
        lm_sae_context *slots = F->samples + iq * S;
        if (c <= S) {
            fill_ctx(&slots[c - 1], g, i, r, v, F->before, F->after);
            F->sample_count[iq] = (uint32_t)c;
        } else {
            uint64_t u = ((uint64_t)lm_rng_u32(&R->rng[i]) << 32) | lm_rng_u32(&R->rng[i]);
            uint64_t j = u % c;
            if (j < S) fill_ctx(&slots[j], g, i, r, v, F->before, F->after);
        }
    }
}

/* Encodes the captured rows of one group and runs the pass over every latent. */
static lm_status process_group(fx_run *R, const lm_sae *sae, const float *x, float *fb, float *ft, const fx_group *g,
                               int pass) {
    size_t ds = sae->d_sae, rows = g->rows;
    lm_status st = lm_sae_encode(sae, fb, x, rows);
    if (st != LM_OK) return st;
    /* blocked transpose fb [rows, ds] -> ft [ds, rows] */
    const size_t B = 64;
#pragma omp parallel for schedule(static)
    for (size_t ib = 0; ib < ds; ib += B)
        for (size_t rb = 0; rb < rows; rb += B)
            for (size_t i = ib; i < ib + B && i < ds; i++)
                for (size_t r = rb; r < rb + B && r < rows; r++) ft[i * rows + r] = fb[r * ds + i];
#pragma omp parallel for schedule(dynamic, 16)
    for (size_t i = 0; i < ds; i++) {
        if (pass == 1) pass1_latent(R, g, i);
        else pass2_latent(R, g, i);
    }
    return LM_OK;
}

/* The next window index after a group starting at w: full windows go batch at a time, and the
 * group ends at the last full one, so that a shorter last window runs on its own. */
static size_t single_step(size_t w, size_t n_full, size_t batch) {
    return w < n_full && n_full - w > batch ? batch : (w < n_full ? n_full - w : 1);
}

/* Runs every window of the stream once (pass 1 or 2). */
static lm_status run_pass(fx_run *R, const lm_model *m, const lm_sae *sae, const char *hook, const int32_t *ids,
                          size_t n, int ctx, int batch, lm_state *sb, lm_state *s1, fx_capture *cap, float *fb,
                          float *ft, int pass, const lm_sae_features_opts *o) {
    size_t n_full = n / (size_t)ctx, rest = n - n_full * (size_t)ctx;
    size_t done = pass == 1 ? 0 : n;
    lm_status st = LM_OK;
    for (size_t w = 0; st == LM_OK && w < n_full + (rest > 0); w += single_step(w, n_full, (size_t)batch)) {
        int single = w >= n_full;
        int nb = single ? 1 : (int)(n_full - w < (size_t)batch ? n_full - w : (size_t)batch);
        size_t len = single ? rest : (size_t)ctx, g0 = w * (size_t)ctx;
        lm_state *s = single ? s1 : sb;
        cap->got = 0;
        cap->expected = (size_t)nb * len;
        lm_state_reset(s);
        st = single ? lm_forward(m, s, ids + g0, (int)len, NULL, 0)
                    : lm_forward_batch(m, s, ids + g0, nb, (int)len, NULL, 0);
        if (cap->got == cap->expected) st = LM_OK;
        else if (st == LM_OK) st = lm_fail(LM_ERR_ARG, "sae features: hook %s was not reached", hook);
        if (st != LM_OK) break;
        fx_group g = {ids, g0, cap->expected, len, ft};
        st = process_group(R, sae, cap->buf, fb, ft, &g, pass);
        done += cap->expected;
        if (st == LM_OK && o->progress && o->progress(o->progress_ud, done, 2 * n))
            st = lm_fail(LM_ERR_ARG, "sae features: stopped");
        if (single) break;
    }
    return st;
}

/* Inserts (v, id) into the k-long list best-first; better(a, b) says a goes before b. Ties keep
 * the earlier id first since ids arrive in order. */
static void keep_best(float *val, int32_t *id, size_t *cnt, size_t k, float v, int32_t j, int largest) {
    size_t c = *cnt;
    if (c == k) {
        float last = val[k - 1];
        if (largest ? !(v > last) : !(v < last)) return;
        c = k - 1;
    }
    size_t p = c;
    while (p > 0 && (largest ? v > val[p - 1] : v < val[p - 1])) {
        val[p] = val[p - 1];
        id[p] = id[p - 1];
        p--;
    }
    val[p] = v;
    id[p] = j;
    if (*cnt < k) (*cnt)++;
}

static lm_status logit_effects(const lm_model *m, const lm_sae *sae, int at_ln_final, lm_sae_features *F) {
    size_t d = sae->d_in, ds = sae->d_sae, V = (size_t)m->cfg.vocab_size, K = F->n_logits;
    const size_t B = 128;
    float *dir = lm_malloc(B * d, sizeof(float)), *lg = lm_malloc(B * V, sizeof(float));
    lm_status st = dir && lg ? LM_OK : lm_fail(LM_ERR_NOMEM, "sae features: out of memory for logit effects");
    for (size_t i0 = 0; st == LM_OK && i0 < ds; i0 += B) {
        size_t nb = ds - i0 < B ? ds - i0 : B;
        for (size_t r = 0; r < nb; r++) {
            const float *w = sae->W_dec + (i0 + r) * d;
            float *o = dir + r * d;
            double mean = 0;
            if (!at_ln_final && m->cfg.norm == LM_NORM_LAYER) {
                for (size_t j = 0; j < d; j++) mean += w[j];
                mean /= (double)d;
            }
            for (size_t j = 0; j < d; j++) {
                float v = w[j] - (float)mean;
                o[j] = !at_ln_final && m->final_norm ? v * m->final_norm[j] : v;
            }
        }
        st = lm_linear(lg, dir, nb, &m->output);
        if (st != LM_OK) break;
#pragma omp parallel for schedule(static)
        for (size_t r = 0; r < nb; r++) {
            size_t i = i0 + r, ct = 0, cb = 0;
            const float *l = lg + r * V;
            for (size_t v = 0; v < V; v++) {
                keep_best(F->logit_top + i * K, F->logit_top_id + i * K, &ct, K, l[v], (int32_t)v, 1);
                keep_best(F->logit_bottom + i * K, F->logit_bottom_id + i * K, &cb, K, l[v], (int32_t)v, 0);
            }
        }
    }
    free(dir);
    free(lg);
    return st;
}

static lm_status neighbours(const lm_sae *sae, lm_sae_features *F) {
    size_t d = sae->d_in, ds = sae->d_sae, K = F->n_neighbours;
    if (K == 0) return LM_OK;
    const size_t B = 256;
    float *dn = lm_malloc(ds * d, sizeof(float)), *c = lm_malloc(B * ds, sizeof(float));
    lm_status st = dn && c ? LM_OK : lm_fail(LM_ERR_NOMEM, "sae features: out of memory for neighbours");
    if (st == LM_OK) {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < ds; i++) {
            const float *w = sae->W_dec + i * d;
            double s = 0;
            for (size_t j = 0; j < d; j++) s += (double)w[j] * w[j];
            float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f; /* a zero row has cosine 0 with all */
            for (size_t j = 0; j < d; j++) dn[i * d + j] = w[j] * inv;
        }
    }
    lm_weight W = {LM_F32, ds, d, dn};
    for (size_t i0 = 0; st == LM_OK && i0 < ds; i0 += B) {
        size_t nb = ds - i0 < B ? ds - i0 : B;
        st = lm_linear(c, dn + i0 * d, nb, &W); /* c [nb, ds] = rows i0.. against all rows */
        if (st != LM_OK) break;
#pragma omp parallel for schedule(static)
        for (size_t r = 0; r < nb; r++) {
            size_t i = i0 + r, cnt = 0;
            const float *row = c + r * ds;
            for (size_t j = 0; j < ds; j++)
                if (j != i)
                    keep_best(F->neighbour_cos + i * K, F->neighbour_id + i * K, &cnt, K, row[j], (int32_t)j, 1);
        }
    }
    free(dn);
    free(c);
    return st;
}

void lm_sae_features_free(lm_sae_features *f) {
    if (!f) return;
    free(f->hook);
    free(f->n_fired);
    free(f->density);
    free(f->max_act);
    free(f->mean_act);
    free(f->top);
    free(f->top_count);
    free(f->samples);
    free(f->sample_count);
    free(f->interval_count);
    free(f->logit_top_id);
    free(f->logit_bottom_id);
    free(f->logit_top);
    free(f->logit_bottom);
    free(f->neighbour_id);
    free(f->neighbour_cos);
    free(f->tok_store);
    free(f->act_store);
    free(f);
}

/* Allocates the result and points every context slot at its storage. */
static lm_status alloc_result(lm_sae_features *F, size_t V) {
    size_t ds = F->d_sae, W = (size_t)F->before + (size_t)F->after + 1;
    size_t slots_top = ds * F->n_top, slots_s = ds * F->n_intervals * F->n_per_interval, nq = ds * F->n_intervals;
    size_t slots, store;
    if (lm_mul_ok(ds, F->n_top + F->n_intervals * F->n_per_interval, &slots) || lm_mul_ok(slots, W, &store))
        return lm_fail(LM_ERR_NOMEM, "sae features: too many contexts");
    (void)V;
    F->n_fired = calloc(ds, sizeof(uint64_t));
    F->density = calloc(ds, sizeof(float));
    F->max_act = calloc(ds, sizeof(float));
    F->mean_act = calloc(ds, sizeof(float));
    F->top = lm_calloc(slots_top ? slots_top : 1, sizeof(lm_sae_context));
    F->top_count = calloc(ds, sizeof(uint32_t));
    F->samples = lm_calloc(slots_s ? slots_s : 1, sizeof(lm_sae_context));
    F->sample_count = lm_calloc(nq ? nq : 1, sizeof(uint32_t));
    F->interval_count = lm_calloc(nq ? nq : 1, sizeof(uint64_t));
    F->logit_top_id = lm_calloc(ds * F->n_logits + 1, sizeof(int32_t));
    F->logit_bottom_id = lm_calloc(ds * F->n_logits + 1, sizeof(int32_t));
    F->logit_top = lm_calloc(ds * F->n_logits + 1, sizeof(float));
    F->logit_bottom = lm_calloc(ds * F->n_logits + 1, sizeof(float));
    F->neighbour_id = lm_calloc(ds * F->n_neighbours + 1, sizeof(int32_t));
    F->neighbour_cos = lm_calloc(ds * F->n_neighbours + 1, sizeof(float));
    F->tok_store = lm_calloc(store ? store : 1, sizeof(int32_t));
    F->act_store = lm_calloc(store ? store : 1, sizeof(float));
    if (!F->n_fired || !F->density || !F->max_act || !F->mean_act || !F->top || !F->top_count || !F->samples ||
        !F->sample_count || !F->interval_count || !F->logit_top_id || !F->logit_bottom_id || !F->logit_top ||
        !F->logit_bottom || !F->neighbour_id || !F->neighbour_cos || !F->tok_store || !F->act_store)
        return lm_fail(LM_ERR_NOMEM, "sae features: out of memory for %zu latents", ds);
    for (size_t k = 0; k < slots_top; k++) {
        F->top[k].tokens = F->tok_store + k * W;
        F->top[k].acts = F->act_store + k * W;
    }
    for (size_t k = 0; k < slots_s; k++) {
        F->samples[k].tokens = F->tok_store + (slots_top + k) * W;
        F->samples[k].acts = F->act_store + (slots_top + k) * W;
    }
    return LM_OK;
}

lm_status lm_sae_features_compute(const lm_model *m, const lm_sae *sae, const int32_t *ids, size_t n,
                          const lm_sae_features_opts *o, lm_sae_features **out) {
    *out = NULL;
    lm_sae_features_opts def;
    memset(&def, 0, sizeof def);
    def.before = def.after = -1;
    if (!o) o = &def;
    const char *hook = o->hook ? o->hook : sae->hook_name;
    if (!hook || !*hook) return lm_fail(LM_ERR_ARG, "sae features: no hook (the SAE names none; give one)");
    lm_hook_point pt;
    int layer;
    lm_status st = lm_hook_parse(m, hook, &pt, &layer);
    if (st != LM_OK) return st;
    if ((size_t)m->cfg.dim != sae->d_in)
        return lm_fail(LM_ERR_ARG, "sae features: hook %s of %s has width %d but the SAE's d_in is %zu", hook,
                       m->path ? m->path : "the model", m->cfg.dim, sae->d_in);
    if (n == 0) return lm_fail(LM_ERR_ARG, "sae features: no tokens to run");
    int ctx = o->ctx, batch = o->batch > 0 ? o->batch : 8;
    if (ctx <= 1) ctx = m->cfg.seq_len;
    if (ctx > m->cfg.seq_len)
        return lm_fail(LM_ERR_RANGE, "sae features: window of %d tokens exceeds the model's context of %d", ctx,
                       m->cfg.seq_len);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            return lm_fail(LM_ERR_ARG, "sae features: token id %d at %zu is outside the vocabulary", ids[i], i);
    double t0 = lm_now();
    lm_sae_features *F = calloc(1, sizeof *F);
    if (!F) return lm_fail(LM_ERR_NOMEM, "sae features: out of memory");
    size_t ds = sae->d_sae, V = (size_t)m->cfg.vocab_size;
    F->d_sae = ds;
    F->n_tokens = n;
    F->ctx = ctx;
    F->hook = lm_strdup(hook);
    F->n_top = o->n_top ? o->n_top : 20;
    F->n_intervals = o->n_intervals ? o->n_intervals : 5;
    F->n_per_interval = o->n_per_interval ? o->n_per_interval : 3;
    F->before = o->before >= 0 ? o->before : 16;
    F->after = o->after >= 0 ? o->after : 4;
    if (F->before >= ctx) F->before = ctx - 1;
    if (F->after >= ctx) F->after = ctx - 1;
    F->n_logits = o->n_logits ? o->n_logits : 10;
    if (F->n_logits > V) F->n_logits = V;
    F->n_neighbours = o->n_neighbours ? o->n_neighbours : 10;
    if (F->n_neighbours > ds - 1) F->n_neighbours = ds - 1;
    st = F->hook ? alloc_result(F, V) : lm_fail(LM_ERR_NOMEM, "sae features: out of memory");
    /* the encoded batch is held twice ([rows, d_sae] and its transpose): keep each near 128 MiB */
    while (batch > 1 && (size_t)batch * (size_t)ctx * ds > ((size_t)32 << 20)) batch /= 2;
    size_t rows = (size_t)batch * (size_t)ctx;
    fx_capture cap = {0};
    cap.d = sae->d_in;
    fx_run R = {F, NULL, NULL};
    float *fb = NULL, *ft = NULL;
    lm_state *sb = NULL, *s1 = NULL;
    if (st == LM_OK) {
        cap.buf = lm_malloc(rows, sae->d_in * sizeof(float));
        fb = lm_malloc(rows, ds * sizeof(float));
        ft = lm_malloc(rows, ds * sizeof(float));
        R.rng = lm_malloc(ds, sizeof(lm_rng));
        R.sum = calloc(ds, sizeof(double));
        if (!cap.buf || !fb || !ft || !R.rng || !R.sum)
            st = lm_fail(LM_ERR_NOMEM, "sae features: out of memory for %zu rows of %zu latents", rows, ds);
    }
    if (st == LM_OK) st = lm_state_new_batch(m, ctx, batch * ctx, batch, &sb);
    if (st == LM_OK) st = lm_state_new(m, ctx, ctx, &s1);
    if (st == LM_OK) st = lm_state_add_hook(sb, hook, fx_hook, &cap);
    if (st == LM_OK) st = lm_state_add_hook(s1, hook, fx_hook, &cap);
    for (size_t i = 0; st == LM_OK && i < ds; i++) lm_rng_seed(&R.rng[i], splitmix(o->seed * 0x100000001b3ull + i));
    if (st == LM_OK) st = run_pass(&R, m, sae, hook, ids, n, ctx, batch, sb, s1, &cap, fb, ft, 1, o);
    if (st == LM_OK) st = run_pass(&R, m, sae, hook, ids, n, ctx, batch, sb, s1, &cap, fb, ft, 2, o);
    if (st == LM_OK) {
        F->n_windows = n / (size_t)ctx + (n % (size_t)ctx > 0);
        for (size_t i = 0; i < ds; i++) {
            F->density[i] = (float)((double)F->n_fired[i] / (double)n);
            F->mean_act[i] = F->n_fired[i] ? (float)(R.sum[i] / (double)F->n_fired[i]) : 0.0f;
            qsort(F->top + i * F->n_top, F->top_count[i], sizeof(lm_sae_context), by_act_desc);
            for (size_t q = 0; q < F->n_intervals; q++) {
                size_t iq = i * F->n_intervals + q;
                qsort(F->samples + iq * F->n_per_interval, F->sample_count[iq], sizeof(lm_sae_context), by_act_desc);
            }
        }
        st = logit_effects(m, sae, pt == LM_HOOK_LN_FINAL, F);
    }
    if (st == LM_OK) st = neighbours(sae, F);
    lm_state_free(sb);
    lm_state_free(s1);
    free(cap.buf);
    free(fb);
    free(ft);
    free(R.rng);
    free(R.sum);
    if (st != LM_OK) {
        lm_sae_features_free(F);
        return st;
    }
    F->seconds = lm_now() - t0;
    *out = F;
    return LM_OK;
}
