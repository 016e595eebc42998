/* test_sae_features.c - lm_sae_features_compute on the shipped model against brute force: the
 * activations harvested by lm_harvest, encoded by lm_sae_encode, give every latent's density, max
 * activation, top contexts (window-bounded, with their activations) and interval counts; logit
 * effects against direct dot products with the output head; decoder neighbours against cosines in
 * double. Then the outputs (features.json read back with jansson, index.html, the statistics and
 * their checksum), token display of split UTF-8, the --scale steering identity, and bad input. */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "lumen/lumen.h"

#define HOOK "blocks.1.hook_resid_post"

static const char *k_text =
    "Three days from Monday is Thursday. Five months from October is March.\n"
    "Once upon a time there was a little girl who liked to count the days of the week.\n"
    "If today is Tuesday, then in six days it will be Monday. Two months after May comes July.\n"
    "The river was cold and the soldiers walked on in silence, caf\xc3\xa9 \xe2\x80\x94 and on.\n";

static int close_rel(double a, double b, double tol) { return fabs(a - b) <= tol * (1.0 + fabs(a) + fabs(b)); }

/* Activations at HOOK for every token, as lm_harvest writes them (windows of ctx, batch 8). */
static float *harvest(const lm_model *m, const int32_t *ids, size_t n, int ctx) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/features_harvest_%d", check_tmpdir(), (int)getpid());
    const char *hooks[] = {HOOK};
    lm_harvest_opts o = {hooks, 1, ctx, 8, 1 << 20, "lumen-tiny", "inline"};
    lm_harvest_result r;
    lm_status st = lm_harvest(m, ids, n, &o, dir, NULL, NULL, &r);
    CHECKF(st == LM_OK, "%s", lm_errmsg());
    if (st != LM_OK) return NULL;
    char p[4200];
    snprintf(p, sizeof p, "%s/shard_00000.safetensors", dir);
    lm_safetensors *sf = NULL;
    CHECKF(lm_safetensors_open(p, &sf) == LM_OK, "%s", lm_errmsg());
    if (!sf) return NULL;
    const lm_st_tensor *t = lm_safetensors_find(sf, HOOK);
    float *x = NULL;
    if (t && t->shape[0] == n) {
        x = malloc(t->nbytes);
        memcpy(x, t->data, t->nbytes);
    }
    CHECK(x != NULL);
    lm_safetensors_close(sf);
    snprintf(p, sizeof p, "rm -rf '%s'", dir);
    CHECK(system(p) == 0);
    return x;
}

/* An SAE over the model's residual whose latents have spread densities: random decoder
 * directions, b_enc set from the harvested pre-activations so that latent i fires on about a
 * fraction 0.5 * 0.8^i of the tokens; the last latent is dead. */
static lm_sae *make_sae(const float *x, size_t n, size_t d, size_t ds) {
    lm_sae_init in = {0};
    in.arch = LM_SAE_RELU;
    in.d_in = d;
    in.d_sae = ds;
    in.seed = 7;
    in.dec_norm = 1;
    lm_sae *s = NULL;
    if (lm_sae_new(&in, &s) != LM_OK) return NULL;
    s->hook_name = strdup(HOOK);
    /* two latents with one decoder direction: neighbours with cosine 1 */
    memcpy(s->W_dec + 5 * d, s->W_dec + 4 * d, d * sizeof(float));
    for (size_t j = 0; j < d; j++) s->W_dec[5 * d + j] *= 3.0f;
    float *pre = malloc(n * ds * sizeof(float)), *col = malloc(n * sizeof(float));
    lm_sae_pre(s, pre, x, n);
    double frac = 0.5;
    for (size_t i = 0; i < ds; i++, frac *= 0.8) {
        for (size_t t = 0; t < n; t++) col[t] = pre[t * ds + i];
        /* the (1 - frac) quantile by a simple sort */
        for (size_t a = 1; a < n; a++) {
            float v = col[a];
            size_t b = a;
            while (b > 0 && col[b - 1] > v) {
                col[b] = col[b - 1];
                b--;
            }
            col[b] = v;
        }
        size_t q = (size_t)((1.0 - frac) * (double)n);
        if (q >= n - 1) q = n - 2;
        s->b_enc[i] = -0.5f * (col[q] + col[q + 1]); /* between two tokens: no token sits on it */
    }
    s->b_enc[ds - 1] = -1e6f;
    free(pre);
    free(col);
    return s;
}

static void check_contexts(const lm_sae_features *F, const int32_t *ids, const float *f, size_t n, size_t ds,
                           int ctx, size_t i, const lm_sae_context *c, uint32_t count) {
    for (uint32_t k = 0; k < count; k++, c++) {
        CHECK(c->pos < n);
        if (c->pos >= n) return;
        CHECKF(close_rel(c->act, f[c->pos * ds + i], 1e-5), "latent %zu pos %zu: %g vs %g", i, c->pos, (double)c->act,
               (double)f[c->pos * ds + i]);
        size_t w0 = c->pos / (size_t)ctx * (size_t)ctx;
        size_t start = c->pos - c->at;
        CHECK(c->at < c->len && start >= w0 && start + c->len <= w0 + (size_t)ctx && start + c->len <= n);
        CHECK(c->at == (c->pos - w0 < (size_t)F->before ? c->pos - w0 : (size_t)F->before));
        size_t end_want = c->pos + (size_t)F->after + 1, wend = w0 + (size_t)ctx < n ? w0 + (size_t)ctx : n;
        CHECK(start + c->len == (end_want < wend ? end_want : wend));
        CHECK(c->prev == (start > w0 ? ids[start - 1] : -1));
        for (uint32_t t = 0; t < c->len && start + t < n; t++) {
            CHECK(c->tokens[t] == ids[start + t]);
            CHECK(close_rel(c->acts[t], f[(start + t) * ds + i], 1e-5));
        }
    }
}

static void test_compute(const lm_model *m, const int32_t *ids, size_t n, lm_sae *sae, const float *x,
                         const lm_sae_features *F, int ctx) {
    size_t ds = sae->d_sae, d = sae->d_in;
    float *f = malloc(n * ds * sizeof(float));
    CHECK(lm_sae_encode(sae, f, x, n) == LM_OK);
    CHECK(F->d_sae == ds && F->n_tokens == n && F->n_windows == (n + (size_t)ctx - 1) / (size_t)ctx);
    size_t n_live = 0, n_mid = 0;
    for (size_t i = 0; i < ds; i++) {
        uint64_t fired = 0;
        float mx = 0;
        for (size_t t = 0; t < n; t++) {
            float v = f[t * ds + i];
            if (v != 0) fired++;
            if (v > mx) mx = v;
        }
        /* activations of the model pass and of the harvest can differ in the last bits; a token
         * right at the threshold could flip, so counts may differ by a hair */
        CHECKF(F->n_fired[i] + 1 >= fired && F->n_fired[i] <= fired + 1, "latent %zu fired %llu vs %llu", i,
               (unsigned long long)F->n_fired[i], (unsigned long long)fired);
        CHECK(F->density[i] == (float)((double)F->n_fired[i] / (double)n));
        CHECKF(close_rel(F->max_act[i], mx, 1e-5), "latent %zu max %g vs %g", i, (double)F->max_act[i], (double)mx);
        n_live += fired > 0;
        n_mid += fired > 0 && fired > F->n_top;
        /* top contexts: the largest activations, by brute force */
        uint32_t want = 0;
        for (size_t t = 0; t < n; t++) want += f[t * ds + i] > 0;
        if (want > F->n_top) want = (uint32_t)F->n_top;
        CHECKF(F->top_count[i] == want, "latent %zu: %u top contexts, want %u", i, F->top_count[i], want);
        const lm_sae_context *top = F->top + i * F->n_top;
        check_contexts(F, ids, f, n, ds, ctx, i, top, F->top_count[i]);
        for (uint32_t k = 1; k < F->top_count[i]; k++) CHECK(top[k - 1].act >= top[k].act);
        if (F->top_count[i] == F->n_top) {
            /* no token outside the list beats its last entry */
            float last = top[F->n_top - 1].act;
            uint32_t above = 0;
            for (size_t t = 0; t < n; t++) above += f[t * ds + i] > last * (1 + 1e-5f);
            CHECKF(above < F->n_top, "latent %zu: %u tokens above the last top context", i, above);
            for (size_t t = 0; t < n; t++)
                if (f[t * ds + i] > last * (1 + 1e-5f)) {
                    int found = 0;
                    for (uint32_t k = 0; k < F->n_top; k++) found |= top[k].pos == t;
                    CHECKF(found, "latent %zu: token %zu (%g) missing from the top", i, t, (double)f[t * ds + i]);
                }
        }
        /* intervals: counts, sample counts, each sample inside its interval */
        uint64_t total = 0;
        for (size_t q = 0; q < F->n_intervals; q++) {
            size_t iq = i * F->n_intervals + q;
            total += F->interval_count[iq];
            uint64_t want_s = F->interval_count[iq] < F->n_per_interval ? F->interval_count[iq] : F->n_per_interval;
            CHECK(F->sample_count[iq] == want_s);
            const lm_sae_context *s = F->samples + iq * F->n_per_interval;
            check_contexts(F, ids, f, n, ds, ctx, i, s, F->sample_count[iq]);
            double lo = (double)F->max_act[i] * (double)q / (double)F->n_intervals;
            double hi = (double)F->max_act[i] * (double)(q + 1) / (double)F->n_intervals;
            for (uint32_t k = 0; k < F->sample_count[iq]; k++) {
                CHECKF(s[k].act > lo * (1 - 1e-6) && s[k].act <= hi * (1 + 1e-6), "latent %zu interval %zu: %g", i, q,
                       (double)s[k].act);
                for (uint32_t k2 = 0; k2 < k; k2++) CHECK(s[k2].pos != s[k].pos);
            }
            /* the brute-force count of the interval, up to tokens at its edges */
            uint64_t bf = 0;
            for (size_t t = 0; t < n; t++) {
                double v = f[t * ds + i];
                if (v > lo && v <= hi) bf++;
            }
            CHECKF(F->interval_count[iq] + 2 >= bf && bf + 2 >= F->interval_count[iq], "latent %zu interval %zu: %llu vs %llu",
                   i, q, (unsigned long long)F->interval_count[iq], (unsigned long long)bf);
        }
        uint64_t pos = 0;
        for (size_t t = 0; t < n; t++) pos += f[t * ds + i] > 0;
        CHECK(total == pos || (total + 1 >= pos && total <= pos + 1));
    }
    CHECK(n_live >= ds / 2 && n_mid >= 3); /* the case exercises the heap */
    /* the dead latent */
    CHECK(F->n_fired[ds - 1] == 0 && F->density[ds - 1] == 0 && F->max_act[ds - 1] == 0 && F->top_count[ds - 1] == 0);
    for (size_t q = 0; q < F->n_intervals; q++) CHECK(F->sample_count[(ds - 1) * F->n_intervals + q] == 0);

    /* logit effects: (g * W_dec[i]) . E[v] for every v, in double */
    size_t V = (size_t)m->cfg.vocab_size, K = F->n_logits;
    CHECK(m->output.dtype == LM_F32 && K == 10);
    const float *E = m->output.data;
    double *lg = malloc(V * sizeof(double));
    for (size_t i = 0; i < ds; i += 7) {
        for (size_t v = 0; v < V; v++) {
            double s = 0;
            for (size_t j = 0; j < d; j++) s += (double)sae->W_dec[i * d + j] * m->final_norm[j] * E[v * d + j];
            lg[v] = s;
        }
        for (size_t k = 0; k < K; k++) {
            int a = F->logit_top_id[i * K + k], b = F->logit_bottom_id[i * K + k];
            CHECKF(close_rel(F->logit_top[i * K + k], lg[a], 1e-4), "latent %zu top logit %d", i, a);
            CHECKF(close_rel(F->logit_bottom[i * K + k], lg[b], 1e-4), "latent %zu bottom logit %d", i, b);
            /* its rank: no more than k tokens strictly above (below) it, beyond rounding */
            size_t above = 0, below = 0;
            for (size_t v = 0; v < V; v++) {
                above += lg[v] > lg[a] + 1e-4 * (1 + fabs(lg[a]));
                below += lg[v] < lg[b] - 1e-4 * (1 + fabs(lg[b]));
            }
            CHECKF(above <= k && below <= k, "latent %zu rank %zu: %zu above, %zu below", i, k, above, below);
        }
    }
    free(lg);

    /* neighbours: cosines in double */
    size_t NB = F->n_neighbours;
    CHECK(NB == 10);
    double *cs = malloc(ds * sizeof(double));
    for (size_t i = 0; i < ds; i++) {
        double ni = 0;
        for (size_t j = 0; j < d; j++) ni += (double)sae->W_dec[i * d + j] * sae->W_dec[i * d + j];
        for (size_t k = 0; k < ds; k++) {
            double dot = 0, nk = 0;
            for (size_t j = 0; j < d; j++) {
                dot += (double)sae->W_dec[i * d + j] * sae->W_dec[k * d + j];
                nk += (double)sae->W_dec[k * d + j] * sae->W_dec[k * d + j];
            }
            cs[k] = dot / sqrt(ni * nk);
        }
        for (size_t k = 0; k < NB; k++) {
            int32_t j = F->neighbour_id[i * NB + k];
            CHECK(j >= 0 && (size_t)j < ds && (size_t)j != i);
            if (j < 0 || (size_t)j >= ds) continue;
            CHECKF(fabs(F->neighbour_cos[i * NB + k] - cs[j]) < 1e-5, "latent %zu neighbour %d: %g vs %g", i, j,
                   (double)F->neighbour_cos[i * NB + k], cs[j]);
            size_t above = 0;
            for (size_t q = 0; q < ds; q++) above += q != i && cs[q] > cs[j] + 1e-5;
            CHECK(above <= k);
        }
    }
    CHECK(F->neighbour_id[4 * NB] == 5 && fabs(F->neighbour_cos[4 * NB] - 1.0) < 1e-5);
    CHECK(F->neighbour_id[5 * NB] == 4);
    free(cs);
    free(f);
}

static void test_outputs(const lm_model *m, lm_sae *sae, const lm_sae_features *F) {
    char dir[4096], p[4300];
    snprintf(dir, sizeof dir, "%s/features_out_%d/a/b", check_tmpdir(), (int)getpid());
    lm_sae_features_meta meta = {"models/lumen-tiny", "sae<&>", "text"};
    CHECKF(lm_sae_features_write(F, sae, m->tokenizer, &meta, dir) == LM_OK, "%s", lm_errmsg());
    /* features.json */
    snprintf(p, sizeof p, "%s/features.json", dir);
    json_error_t e;
    json_t *j = json_load_file(p, 0, &e);
    CHECKF(j != NULL, "%s: %s", p, e.text);
    if (j) {
        CHECK(!strcmp(json_string_value(json_object_get(j, "format")), "lumen-sae-features"));
        CHECK(!strcmp(json_string_value(json_object_get(j, "hook")), HOOK));
        json_t *fs = json_object_get(j, "features");
        CHECK(json_array_size(fs) == F->d_sae);
        for (size_t i = 0; i < json_array_size(fs); i++) {
            json_t *o = json_array_get(fs, i);
            CHECK((size_t)json_integer_value(json_object_get(o, "id")) == i);
            CHECK(close_rel(json_real_value(json_object_get(o, "density")), F->density[i], 1e-6));
            CHECK(close_rel(json_real_value(json_object_get(o, "max_act")), F->max_act[i], 1e-6));
            json_t *top = json_object_get(o, "top");
            CHECK(json_array_size(top) == F->top_count[i]);
            CHECK(json_array_size(json_object_get(o, "intervals")) == (F->max_act[i] > 0 ? F->n_intervals : 0));
            CHECK(json_array_size(json_object_get(o, "logits_top")) == F->n_logits);
            CHECK(json_array_size(json_object_get(o, "neighbours")) == F->n_neighbours);
            if (json_array_size(top)) {
                json_t *c = json_array_get(top, 0);
                const lm_sae_context *fc = &F->top[i * F->n_top];
                CHECK((size_t)json_integer_value(json_object_get(c, "pos")) == fc->pos);
                CHECK(json_array_size(json_object_get(c, "tokens")) == fc->len);
                CHECK(json_array_size(json_object_get(c, "acts")) == fc->len);
                /* the strings decode the ids: their concatenation is the decoded text when no
                 * character is split */
                char *dec = NULL;
                size_t dl = 0;
                CHECK(lm_tokenizer_decode(m->tokenizer, fc->tokens, fc->len, &dec, &dl) == LM_OK);
                size_t cat = 0;
                json_t *ts = json_object_get(c, "tokens");
                for (size_t t = 0; t < json_array_size(ts); t++) cat += strlen(json_string_value(json_array_get(ts, t)));
                int ascii = 1;
                for (size_t t = 0; dec && t < dl; t++) ascii &= (unsigned char)dec[t] < 0x80;
                if (dec && ascii) CHECKF(cat == dl, "latent %zu: %zu vs %zu bytes", i, cat, dl);
                free(dec);
            }
        }
        json_decref(j);
    }
    /* index.html: one data block, no raw '<' inside it, the meta escaped */
    snprintf(p, sizeof p, "%s/index.html", dir);
    char *h = NULL;
    size_t hl = 0;
    CHECK(lm_read_file(p, &h, &hl) == LM_OK);
    if (h) {
        const char *a = strstr(h, "<script id=\"data\" type=\"application/json\">");
        CHECK(a != NULL);
        if (a) {
            a += strlen("<script id=\"data\" type=\"application/json\">");
            const char *b = strstr(a, "</script>");
            CHECK(b != NULL);
            if (b) {
                CHECK(memchr(a, '<', (size_t)(b - a)) == NULL);
                char *data = strndup(a, (size_t)(b - a));
                json_t *pj = json_loads(data, 0, &e);
                CHECKF(pj != NULL, "page data: %s", e.text);
                CHECK(json_array_size(json_object_get(pj, "f")) == F->d_sae);
                json_t *vocab = json_object_get(pj, "vocab");
                CHECK(json_object_size(vocab) > 10);
                /* the top token of latent 0 is in the vocabulary table */
                char key[16];
                snprintf(key, sizeof key, "%d", F->top[0].tokens[F->top[0].at]);
                CHECK(json_object_get(vocab, key) != NULL);
                json_decref(pj);
                free(data);
            }
        }
        CHECK(strstr(h, "sae&lt;&amp;&gt;") != NULL && strstr(h, "sae<&>") == NULL);
        CHECK(strstr(h, "function show(") != NULL && strstr(h, "http") == NULL);
        free(h);
    }
    /* the statistics, and their checksum */
    snprintf(p, sizeof p, "%s/feature_stats.safetensors", dir);
    float *ma = NULL, *dens = NULL;
    CHECKF(lm_sae_feature_stats_load(p, sae, &ma, &dens) == LM_OK, "%s", lm_errmsg());
    if (ma && dens) {
        CHECK(!memcmp(ma, F->max_act, F->d_sae * sizeof(float)));
        CHECK(!memcmp(dens, F->density, F->d_sae * sizeof(float)));
    }
    free(ma);
    free(dens);
    sae->b_enc[0] += 1.0f;
    CHECK(lm_sae_feature_stats_load(p, sae, &ma, NULL) == LM_ERR_ARG && ma == NULL);
    CHECK(strstr(lm_errmsg(), "another SAE") != NULL && strstr(lm_errmsg(), p) != NULL);
    sae->b_enc[0] -= 1.0f;
    /* statistics that are not F32 [d_sae], or hold a NaN, are refused with the file named */
    float bad[64];
    for (int k = 0; k < 64; k++) bad[k] = 1.0f;
    snprintf(p, sizeof p, "%s/bad_stats.safetensors", dir);
    lm_st_spec sp[2] = {{"max_act", LM_ST_F32, 1, {F->d_sae - 1}, bad}, {"density", LM_ST_F32, 1, {F->d_sae}, bad}};
    CHECK(lm_safetensors_write(p, sp, 2, NULL, 0) == LM_OK);
    CHECK(lm_sae_feature_stats_load(p, sae, &ma, NULL) == LM_ERR_FORMAT && ma == NULL);
    CHECK(strstr(lm_errmsg(), "bad_stats.safetensors") != NULL && strstr(lm_errmsg(), "max_act") != NULL);
    sp[0].shape[0] = F->d_sae;
    bad[3] = NAN;
    CHECK(lm_safetensors_write(p, sp, 2, NULL, 0) == LM_OK);
    CHECK(lm_sae_feature_stats_load(p, sae, &ma, NULL) == LM_ERR_FORMAT && ma == NULL);
    CHECK(strstr(lm_errmsg(), "latent 3") != NULL);
    bad[3] = 2.0f;
    CHECK(lm_safetensors_write(p, sp, 2, NULL, 0) == LM_OK);
    CHECK(lm_sae_feature_stats_load(p, sae, &ma, &dens) == LM_OK && ma && dens && ma[3] == 2.0f);
    free(ma);
    free(dens);
    /* a directory that cannot be made */
    snprintf(p, sizeof p, "%s/features.json/x", dir);
    CHECK(lm_sae_features_write(F, sae, m->tokenizer, &meta, p) != LM_OK);
    snprintf(p, sizeof p, "rm -rf '%s/features_out_%d'", check_tmpdir(), (int)getpid());
    CHECK(system(p) == 0);
}

static int valid_utf8(const char *s) {
    json_t *j = json_string(s); /* jansson refuses invalid UTF-8 */
    int ok = j != NULL;
    json_decref(j);
    return ok;
}

static void test_display(const lm_model *m) {
    const lm_tokenizer *tok = m->tokenizer;
    /* byte-level tokens that are a lone lead or continuation byte are written <0xHH> */
    int n_split = 0;
    for (int id = 0; id < lm_tokenizer_vocab_size(tok); id++) {
        char buf[16];
        size_t len = 0;
        const char *t = lm_tokenizer_token_text(tok, 1, id, buf, &len);
        char *s = lm_sae_token_display(tok, 1, id);
        CHECK(s && valid_utf8(s));
        if (len == 1 && (unsigned char)t[0] >= 0x80) {
            char want[8];
            snprintf(want, sizeof want, "<0x%02X>", (unsigned char)t[0]);
            CHECKF(s && !strcmp(s, want), "%d: '%s' vs '%s'", id, s ? s : "", want);
            n_split++;
        }
        free(s);
    }
    CHECK(n_split >= 64);
    /* a whole character stays itself; the end-of-text token shows its piece */
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(lm_tokenizer_encode(tok, "caf\xc3\xa9", 5, 0, &ids, &n) == LM_OK);
    char cat[64] = "";
    for (size_t i = 0; i < n; i++) {
        char *s = lm_sae_token_display(tok, i ? ids[i - 1] : -1, ids[i]);
        if (s && strlen(cat) + strlen(s) < sizeof cat) strcat(cat, s);
        free(s);
    }
    CHECKF(!strcmp(cat, "caf\xc3\xa9") || !strcmp(cat, "caf<0xC3><0xA9>"), "'%s'", cat);
    free(ids);
    int eos = lm_tokenizer_eos(tok);
    if (eos >= 0) {
        char *s = lm_sae_token_display(tok, -1, eos);
        CHECK(s && strlen(s) > 0);
        free(s);
    }
}

/* --scale 1 leaves the activation bit for bit; --scale X is the clamp to X times the own value */
static void test_scale(lm_sae *sae, const float *x, size_t n) {
    size_t d = sae->d_in, ds = sae->d_sae;
    float *y = malloc(n * d * sizeof(float)), *z = malloc(n * d * sizeof(float)), *f = malloc(n * ds * sizeof(float));
    CHECK(lm_sae_encode(sae, f, x, n) == LM_OK);
    for (size_t id = 0; id < 4; id++) {
        memcpy(y, x, n * d * sizeof(float));
        lm_sae_steer s1 = {sae, id, LM_SAE_STEER_SCALE, 1.0f};
        CHECK(lm_sae_steer_apply(&s1, y, n) == LM_OK);
        CHECK(!memcmp(x, y, n * d * sizeof(float)));
        memcpy(y, x, n * d * sizeof(float));
        lm_sae_steer s3 = {sae, id, LM_SAE_STEER_SCALE, 3.0f};
        CHECK(lm_sae_steer_apply(&s3, y, n) == LM_OK);
        for (size_t t = 0; t < n; t++) {
            /* the clamp of this row to 3 f */
            memcpy(z, x + t * d, d * sizeof(float));
            lm_sae_steer c = {sae, id, LM_SAE_STEER_CLAMP, 3.0f * f[t * ds + id]};
            CHECK(lm_sae_steer_apply(&c, z, 1) == LM_OK);
            /* one row alone is encoded through another BLAS path than the batch: last bits */
            for (size_t j = 0; j < d; j++) CHECK(close_rel(y[t * d + j], z[j], 1e-4));
        }
    }
    free(y);
    free(z);
    free(f);
}

static void test_errors(const lm_model *m, const lm_sae *sae, const int32_t *ids, size_t n) {
    lm_sae_features *F = NULL;
    lm_sae_features_opts o = {0};
    o.before = o.after = -1;
    CHECK(lm_sae_features_compute(m, sae, ids, 0, &o, &F) == LM_ERR_ARG && F == NULL);
    CHECK(strstr(lm_errmsg(), "no tokens") != NULL);
    o.hook = "blocks.9.hook_resid_post";
    CHECK(lm_sae_features_compute(m, sae, ids, n, &o, &F) != LM_OK && F == NULL);
    o.hook = NULL;
    o.ctx = m->cfg.seq_len + 1;
    CHECK(lm_sae_features_compute(m, sae, ids, n, &o, &F) == LM_ERR_RANGE && F == NULL);
    o.ctx = 0;
    lm_sae_init in = {0};
    in.arch = LM_SAE_RELU;
    in.d_in = (size_t)m->cfg.dim + 1;
    in.d_sae = 8;
    in.seed = 1;
    lm_sae *w = NULL;
    CHECK(lm_sae_new(&in, &w) == LM_OK);
    if (w) {
        w->hook_name = strdup(HOOK);
        CHECK(lm_sae_features_compute(m, w, ids, n, &o, &F) == LM_ERR_ARG && F == NULL);
        CHECK(strstr(lm_errmsg(), "d_in") != NULL);
        lm_sae_free(w);
    }
}

int main(void) {
    lm_set_threads(2);
    const char *mr = getenv("LUMEN_MODELS");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/lumen-tiny", mr ? mr : "models");
    lm_model *m = NULL;
    if (lm_model_load(dir, &m) != LM_OK) {
        fprintf(stderr, "SKIP: %s: %s\n", dir, lm_errmsg());
        return CHECK_SKIP;
    }
    CHECK(m->tokenizer != NULL);
    int32_t *ids = NULL;
    size_t n = 0;
    /* the text twice: 2 full windows of 64 and a shorter last one */
    char text[4096];
    snprintf(text, sizeof text, "%s%s", k_text, k_text);
    CHECK(lm_tokenizer_encode(m->tokenizer, text, strlen(text), 0, &ids, &n) == LM_OK);
    const int ctx = 64;
    CHECKF(n > 2 * (size_t)ctx && n % (size_t)ctx != 0, "%zu tokens", n);
    size_t d = (size_t)m->cfg.dim, ds = 40;
    float *x = harvest(m, ids, n, ctx);
    lm_sae *sae = x ? make_sae(x, n, d, ds) : NULL;
    CHECK(sae != NULL);
    if (sae) {
        lm_sae_features *F = NULL;
        lm_sae_features_opts o = {0};
        o.ctx = ctx;
        o.n_top = 6;
        o.n_intervals = 4;
        o.n_per_interval = 2;
        o.before = 5;
        o.after = 2;
        o.seed = 3;
        CHECKF(lm_sae_features_compute(m, sae, ids, n, &o, &F) == LM_OK, "%s", lm_errmsg());
        if (F) {
            test_compute(m, ids, n, sae, x, F, ctx);
            /* the same with other thread counts and batch: identical results */
            lm_set_threads(1);
            o.batch = 1;
            lm_sae_features *G = NULL;
            CHECK(lm_sae_features_compute(m, sae, ids, n, &o, &G) == LM_OK);
            lm_set_threads(2);
            if (G) {
                for (size_t i = 0; i < ds; i++) {
                    CHECK(G->n_fired[i] == F->n_fired[i] && G->top_count[i] == F->top_count[i]);
                    for (uint32_t k = 0; k < G->top_count[i]; k++)
                        CHECK(G->top[i * F->n_top + k].pos == F->top[i * F->n_top + k].pos);
                    for (size_t q = 0; q < F->n_intervals; q++) {
                        size_t iq = i * F->n_intervals + q;
                        CHECK(G->sample_count[iq] == F->sample_count[iq]);
                        for (uint32_t k = 0; k < G->sample_count[iq]; k++)
                            CHECK(G->samples[iq * F->n_per_interval + k].pos == F->samples[iq * F->n_per_interval + k].pos);
                    }
                }
                lm_sae_features_free(G);
            }
            test_outputs(m, sae, F);
            lm_sae_features_free(F);
        }
        test_scale(sae, x, n);
        test_errors(m, sae, ids, n);
        lm_sae_free(sae);
    }
    test_display(m);
    free(x);
    free(ids);
    lm_model_free(m);
    return check_result();
}
