/* test_logit_lens.c - the logit lens: the last state reproduces the model's own logits and
 * lm_eval_ce's loss exactly, earlier states match an independent double-precision computation,
 * shapes and window ends, the SVG heat map (XML escaping), and `lumen linearity --logit-lens`. */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "lumen/lumen.h"

static double nll_ref(const float *lg, size_t V, int target) {
    float mx = lg[0];
    for (size_t i = 1; i < V; i++)
        if (lg[i] > mx) mx = lg[i];
    double s = 0;
    for (size_t i = 0; i < V; i++) s += exp((double)lg[i] - mx);
    return log(s) + mx - lg[target];
}

typedef struct grab {
    float *buf;
    size_t off, d;
} grab;

static lm_status grab_hook(void *ud, const lm_hook_info *info, float *act) {
    grab *g = ud;
    size_t rows = (size_t)info->n_seq * (size_t)info->n_tok;
    memcpy(g->buf + g->off * g->d, act, rows * g->d * sizeof(float));
    g->off += rows;
    return LM_OK;
}

static lm_model *load_fixture(void) {
    const char *fx = getenv("LUMEN_FIXTURES");
    if (!fx) fx = "tests/fixtures";
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/hf/llama", fx);
    lm_model *m = NULL;
    if (lm_model_load(dir, &m) != LM_OK) CHECKF(0, "%s", lm_errmsg());
    return m;
}

static void test_lens_fixture(void) {
    lm_model *m = load_fixture();
    if (!m) return;
    const int L = m->cfg.n_layers, ctx = 16, batch = 2;
    const size_t n = 70, d = (size_t)m->cfg.dim, V = (size_t)m->cfg.vocab_size; /* 4 windows + 6 */
    int32_t ids[70];
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)((i * 37 + 11) % V);
    lm_logit_lens_opts o = {ctx, batch, NULL, NULL};
    lm_logit_lens_result r;
    CHECKF(lm_logit_lens(m, ids, n, &o, &r) == LM_OK, "%s", lm_errmsg());
    if (!r.top) {
        lm_model_free(m);
        return;
    }
    /* shapes; no next token at each window's last position */
    CHECK(r.n_layers == L && r.n_tokens == n && r.n_windows == 5 && r.ctx == ctx);
    CHECK(r.n_predicted == 4 * 15 + 5);
    for (int l = 0; l <= L; l++)
        for (size_t t = 0; t < n; t++) {
            int end = (t % 16 == 15) || t == n - 1;
            double v = r.loss[(size_t)l * n + t];
            CHECKF(end ? isnan(v) : (isfinite(v) && v >= 0), "state %d position %zu: %g", l, t, v);
            CHECK(r.top[(size_t)l * n + t] >= 0 && (size_t)r.top[(size_t)l * n + t] < V);
        }

    /* the last state is the model's output: lm_eval_ce's loss to the bit ... */
    lm_eval_result ev;
    CHECKF(lm_eval_ce(m, ids, n, ctx, batch, NULL, NULL, &ev) == LM_OK, "%s", lm_errmsg());
    CHECKF(memcmp(&ev.mean_ce, &r.mean_loss[L], sizeof(double)) == 0, "last state %.17g vs eval %.17g",
           r.mean_loss[L], ev.mean_ce);
    CHECK(ev.n_predicted == r.n_predicted);
    /* ... and per position, the forward's own logits (same windows, same batches) */
    float *logits = malloc((size_t)batch * ctx * V * sizeof(float));
    float *h1 = malloc(n * d * sizeof(float));
    grab g = {h1, 0, d};
    lm_state *s = NULL, *s1 = NULL;
    CHECK(lm_state_new_batch(m, ctx, batch * ctx, batch, &s) == LM_OK);
    CHECK(lm_state_new(m, ctx, ctx, &s1) == LM_OK);
    CHECK(lm_state_add_hook(s, "blocks.0.hook_resid_post", grab_hook, &g) == LM_OK);
    CHECK(lm_state_add_hook(s1, "blocks.0.hook_resid_post", grab_hook, &g) == LM_OK);
    size_t mismatch = 0, full = n / (size_t)ctx;
    for (size_t w = 0; w <= full; w += (size_t)batch) {
        /* batches of full windows as lm_eval_ce runs them, then the short last window alone */
        size_t w0 = w * (size_t)ctx, nb, len = (size_t)ctx;
        if (w < full) {
            nb = full - w < (size_t)batch ? full - w : (size_t)batch;
            lm_state_reset(s);
            CHECK(lm_forward_batch(m, s, ids + w0, (int)nb, ctx, logits, 1) == LM_OK);
        } else {
            nb = 1, len = n - w0;
            if (len == 0) break;
            lm_state_reset(s1);
            CHECK(lm_forward(m, s1, ids + w0, (int)len, logits, 1) == LM_OK);
        }
        for (size_t row = 0; row < nb * len; row++) {
            size_t p = w0 + row, in_win = row % len;
            const float *lg = logits + row * V;
            size_t best = 0;
            for (size_t v = 1; v < V; v++)
                if (lg[v] > lg[best]) best = v;
            double want = in_win + 1 < len ? nll_ref(lg, V, ids[p + 1]) : NAN;
            double got = r.loss[(size_t)L * n + p];
            if ((size_t)r.top[(size_t)L * n + p] != best || !(isnan(want) ? isnan(got) : memcmp(&want, &got, 8) == 0))
                mismatch++;
        }
        if (w < full && nb < (size_t)batch) w = full - (size_t)batch; /* next: the short window */
    }
    CHECKF(mismatch == 0, "%zu positions of the last state differ from the forward's logits", mismatch);
    CHECK(g.off == n);

    /* earlier states against a plain double-precision final norm and head: h_0 is the token
     * embedding (llama), h_1 the captured residual after block 0 */
    const float *emb = m->tok_embeddings.data, *wout = m->output.data, *nw = m->final_norm;
    CHECK(m->tok_embeddings.dtype == LM_F32 && m->output.dtype == LM_F32 && m->cfg.norm == LM_NORM_RMS);
    double *lg = malloc(V * sizeof(double));
    double worst = 0;
    size_t top_bad = 0;
    for (int l = 0; l <= 1; l++)
        for (size_t t = 0; t < n; t++) {
            const float *x = l == 0 ? emb + (size_t)ids[t] * d : h1 + t * d;
            double ss = 0;
            for (size_t i = 0; i < d; i++) ss += (double)x[i] * x[i];
            double inv = 1.0 / sqrt(ss / (double)d + m->cfg.norm_eps), mx = -INFINITY;
            for (size_t v = 0; v < V; v++) {
                double a = 0;
                for (size_t i = 0; i < d; i++) a += (double)wout[v * d + i] * (x[i] * inv * nw[i]);
                lg[v] = a;
                if (a > mx) mx = a;
            }
            double se = 0;
            for (size_t v = 0; v < V; v++) se += exp(lg[v] - mx);
            /* the lens's top token is a maximum up to float rounding */
            if (lg[r.top[(size_t)l * n + t]] < mx - 1e-4 * fmax(1, fabs(mx))) top_bad++;
            if (t % 16 == 15 || t == n - 1) continue;
            double want = log(se) + mx - lg[ids[t + 1]], got = r.loss[(size_t)l * n + t];
            double err = fabs(got - want) / fmax(1, fabs(want));
            if (err > worst) worst = err;
        }
    CHECKF(worst < 1e-5, "states 0 and 1 vs double reference: rel err %g", worst);
    CHECKF(top_bad == 0, "%zu top tokens are not the maximum", top_bad);
    free(lg);

    /* errors are values */
    lm_logit_lens_result bad;
    int32_t oob[3] = {1, (int32_t)V, 2};
    CHECK(lm_logit_lens(m, oob, 3, &o, &bad) == LM_ERR_ARG && bad.top == NULL);
    CHECK(lm_logit_lens(m, ids, 1, &o, &bad) == LM_ERR_ARG);
    lm_logit_lens_opts big = {m->cfg.seq_len + 1, 1, NULL, NULL};
    CHECK(lm_logit_lens(m, ids, n, &big, &bad) == LM_ERR_RANGE);
    lm_logit_lens_result_free(&bad);

    /* the heat map without a tokenizer: ids as #N */
    char svg[4096];
    snprintf(svg, sizeof svg, "%s/lens_fixture_%d.svg", check_tmpdir(), (int)getpid());
    CHECKF(lm_write_svg_logit_lens(svg, "lens <fixture> & co", &r, ids, NULL, 40) == LM_OK, "%s", lm_errmsg());
    char *text = NULL;
    size_t len = 0;
    CHECK(lm_read_file(svg, &text, &len) == LM_OK);
    if (text) {
        CHECK(strncmp(text, "<?xml", 5) == 0 && strstr(text, "</svg>"));
        CHECK(strstr(text, "lens &lt;fixture&gt; &amp; co") != NULL);
        CHECK(strstr(text, ">h_2<") != NULL && strstr(text, ">h_3<") == NULL);
        char cell[32];
        snprintf(cell, sizeof cell, "#%d", (int)r.top[(size_t)L * n + 39]);
        CHECK(strstr(text, cell) != NULL);
        size_t rects = 0;
        for (const char *p = text; (p = strstr(p, "<rect x=")) != NULL; p++) rects++;
        CHECKF(rects == (size_t)(L + 1) * 40 + 32, "%zu cells", rects); /* cells + legend */
    }
    free(text);
    unlink(svg);
    lm_state_free(s);
    lm_state_free(s1);
    free(logits);
    free(h1);
    lm_logit_lens_result_free(&r);
    lm_model_free(m);
}

static void test_display(void) {
    char b[16];
    CHECK(strcmp(lm_token_display(NULL, 42, b, sizeof b), "#42") == 0);
    const char *md = getenv("LUMEN_MODELS");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/lumen-tiny", md ? md : "models");
    lm_model *m = NULL;
    if (lm_model_load(dir, &m) != LM_OK || !m->tokenizer) {
        fprintf(stderr, "SKIP: display check (%s)\n", lm_errmsg());
        lm_model_free(m);
        return;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(lm_tokenizer_encode(m->tokenizer, " a\n", 3, 0, &ids, &n) == LM_OK);
    char all[256] = "";
    for (size_t i = 0; i < n; i++) strcat(all, lm_token_display(m->tokenizer, ids[i], b, sizeof b));
    CHECKF(strcmp(all, "\xC2\xB7" "a\xE2\x86\xB5") == 0, "display of \" a\\n\": '%s'", all);
    /* a tiny buffer cuts between characters */
    char tiny[16];
    for (size_t i = 0; i < n; i++) {
        lm_token_display(m->tokenizer, ids[i], tiny, sizeof tiny);
        CHECK(strlen(tiny) < sizeof tiny);
    }
    free(ids);
    lm_model_free(m);
}

static void test_cli(void) {
    const char *bin = getenv("LUMEN_BIN"), *md = getenv("LUMEN_MODELS");
    if (!bin) {
        fprintf(stderr, "SKIP: CLI check (no LUMEN_BIN)\n");
        return;
    }
    char dir[4096], text[4096], svg[4096], cmd[16384];
    snprintf(dir, sizeof dir, "%s/lumen-tiny", md ? md : "models");
    snprintf(text, sizeof text, "%s/lens_text_%d.txt", check_tmpdir(), (int)getpid());
    snprintf(svg, sizeof svg, "%s/lens_cli_%d.svg", check_tmpdir(), (int)getpid());
    const char *body = "If today is Monday, then in three days it will be Thursday. <Tags> & \"quotes\" 'too'.\n"
                       "Counting seven months forward from November gives June. Saturday plus four days is "
                       "Wednesday. What month is five months after January? It is June.\n";
    FILE *f = fopen(text, "w");
    for (int i = 0; f && i < 8; i++) fputs(body, f);
    if (f) fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' linearity '%s' '%s' --tokens 400 --ctx 64 --id-tokens 50 --threads 2 --json "
                              "--logit-lens --lens-positions 5 --lens-svg '%s' 2>/dev/null",
             bin, dir, text, svg);
    FILE *p = popen(cmd, "r");
    static char buf[1 << 20];
    size_t len = p ? fread(buf, 1, sizeof buf - 1, p) : 0;
    buf[len] = 0;
    int rc = p ? pclose(p) : -1;
    CHECKF(rc == 0, "%s exited with %d", cmd, rc);
    json_error_t jerr;
    json_t *j = json_loads(buf, 0, &jerr);
    CHECKF(j != NULL, "not JSON: %.200s", buf);
    json_t *lens = j ? json_object_get(j, "logit_lens") : NULL;
    json_t *layers = json_object_get(lens, "layers");
    lm_model *m = NULL;
    if (lm_model_load(dir, &m) == LM_OK && m->tokenizer && layers) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(lm_tokenize_file(m->tokenizer, text, 1, 400, &ids, &n) == LM_OK);
        lm_eval_result ev;
        CHECK(lm_eval_ce(m, ids, n, 64, 4, NULL, NULL, &ev) == LM_OK);
        CHECK(json_array_size(layers) == (size_t)m->cfg.n_layers + 1);
        json_t *last = json_array_get(layers, (size_t)m->cfg.n_layers);
        double ml = json_real_value(json_object_get(last, "mean_loss"));
        CHECKF(ml == ev.mean_ce, "CLI last-state loss %.17g vs eval %.17g", ml, ev.mean_ce);
        CHECK(json_array_size(json_object_get(last, "top_tokens")) == 5);
        CHECK(json_array_size(json_object_get(last, "top_ids")) == 5);
        CHECK(json_array_size(json_object_get(lens, "positions")) == 5);
        CHECK(json_integer_value(json_array_get(json_object_get(lens, "positions"), 4)) == (json_int_t)n - 1);
        CHECK(json_is_null(json_array_get(json_object_get(lens, "next"), 4)));
        free(ids);
    } else CHECKF(0, "no lens in the output or no model: %s", lm_errmsg());
    lm_model_free(m);
    json_decref(j);
    /* the heat map escapes the text's markup */
    char *svgt = NULL;
    size_t sl = 0;
    CHECK(lm_read_file(svg, &svgt, &sl) == LM_OK);
    if (svgt) {
        CHECK(strstr(svgt, "&lt;") != NULL || strstr(svgt, "&amp;") != NULL);
        CHECK(strstr(svgt, "<Tags") == NULL && strstr(svgt, "<&") == NULL);
    }
    free(svgt);
    /* the table */
    snprintf(cmd, sizeof cmd, "'%s' linearity '%s' '%s' --tokens 400 --ctx 64 --id-tokens 50 --threads 2 --logit-lens 2>/dev/null",
             bin, dir, text);
    p = popen(cmd, "r");
    len = p ? fread(buf, 1, sizeof buf - 1, p) : 0;
    buf[len] = 0;
    rc = p ? pclose(p) : -1;
    CHECKF(rc == 0 && strstr(buf, "logit lens:") && strstr(buf, "<- next"), "table output: %.300s", buf);
    /* fewer tokens than the hidden size (192): every map would fit exactly, so it is refused */
    snprintf(cmd, sizeof cmd, "'%s' linearity '%s' '%s' --tokens 150 --ctx 64 --threads 2 2>&1", bin, dir, text);
    p = popen(cmd, "r");
    len = p ? fread(buf, 1, sizeof buf - 1, p) : 0;
    buf[len] = 0;
    rc = p ? pclose(p) : -1;
    CHECKF(rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 1 && strstr(buf, "150 tokens for hidden size 192") &&
               strstr(buf, "under-determined"),
           "too few tokens: rc %d, %.300s", rc, buf);
    unlink(svg);
    unlink(text);
}

int main(void) {
    lm_set_threads(2);
    test_lens_fixture();
    test_display();
    test_cli();
    return check_result();
}
