/* logit_lens.c - the logit lens: every residual state h_0 .. h_L through the model's final norm
 * and output head, giving each layer's top token and next-token loss per position, and its SVG
 * heat map. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lumen/analysis.h"

void lm_logit_lens_result_free(lm_logit_lens_result *res) {
    if (!res) return;
    free(res->top);
    free(res->loss);
    free(res->mean_loss);
    res->top = NULL;
    res->loss = res->mean_loss = NULL;
}

/* What the hooks share: the stream, where the current forward call starts in it, scratch. */
typedef struct lens_run {
    const lm_model *m;
    const int32_t *ids;
    size_t n;
    size_t base;  /* stream index of the first token of the current forward call */
    int win_len;  /* length of each window of the current call */
    int ctx;      /* the stride between the windows of one call */
    float *xn;    /* [rows, d] normalised states */
    float *logits; /* [rows, V] */
    size_t cap_rows;
    lm_logit_lens_result *res;
} lens_run;

/* lm_forward_windows' before-call callback: where the call's windows start, and their length. */
static void set_window(void *ud, size_t first, int len) {
    lens_run *r = ud;
    r->base = first;
    r->win_len = len;
}

typedef struct lens_sink {
    lens_run *run;
    int state;
} lens_sink;

/* -log softmax(logits)[target], computed as lm_eval_ce computes it (float max, double sum), so
 * the last state's losses are that function's to the bit. */
static double nll(const float *logits, size_t V, int target) {
    float mx = logits[0];
    for (size_t i = 1; i < V; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (size_t i = 0; i < V; i++) sum += exp((double)logits[i] - mx);
    return log(sum) + mx - logits[target];
}

static lm_status lens_hook(void *ud, const lm_hook_info *info, float *act) {
    lens_sink *k = ud;
    lens_run *r = k->run;
    const lm_model *m = r->m;
    const size_t d = (size_t)m->cfg.dim, V = (size_t)m->cfg.vocab_size;
    const size_t rows = (size_t)info->n_seq * (size_t)info->n_tok;
    if (rows > r->cap_rows || (size_t)info->d != d)
        return lm_fail(LM_ERR_RANGE, "logit lens: %zu rows of %d in a call, room for %zu (internal error)", rows, info->d,
                       r->cap_rows);
    /* the model's own final norm and head, on all rows of the call at once, as its forward does */
    if (m->cfg.norm == LM_NORM_LAYER)
        lm_layernorm(r->xn, act, m->final_norm, m->final_norm_b, rows, d, m->cfg.norm_eps);
    else
        lm_rmsnorm(r->xn, act, m->final_norm, rows, d, m->cfg.norm_eps);
    lm_status st = lm_linear(r->logits, r->xn, rows, &m->output);
    if (st != LM_OK) return st;
    lm_logit_lens_result *res = r->res;
    int32_t *top = res->top + (size_t)k->state * res->n_tokens;
    double *loss = res->loss + (size_t)k->state * res->n_tokens;
    const int n_tok = info->n_tok;
    int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (rows * V > 65536)
    for (size_t row = 0; row < rows; row++) {
        size_t q = row / (size_t)n_tok, t = row % (size_t)n_tok;
        size_t in_win = (size_t)info->pos0 + t, p = r->base + q * (size_t)r->ctx + in_win;
        if (p >= r->n) {
            bad = 1;
            continue;
        }
        const float *lg = r->logits + row * V;
        size_t best = 0;
        for (size_t v = 1; v < V; v++)
            if (lg[v] > lg[best]) best = v;
        top[p] = (int32_t)best;
        loss[p] = in_win + 1 < (size_t)r->win_len ? nll(lg, V, r->ids[p + 1]) : NAN;
    }
    if (bad) return lm_fail(LM_ERR_RANGE, "logit lens: a row past the end of the stream (internal error)");
    return LM_OK;
}

lm_status lm_logit_lens(const lm_model *m, const int32_t *ids, size_t n, const lm_logit_lens_opts *o,
                        lm_logit_lens_result *res) {
    memset(res, 0, sizeof *res);
    const int L = m->cfg.n_layers;
    const size_t d = (size_t)m->cfg.dim, V = (size_t)m->cfg.vocab_size;
    int ctx = o && o->ctx > 0 ? o->ctx : m->cfg.seq_len;
    if (ctx > m->cfg.seq_len)
        return lm_fail(LM_ERR_RANGE, "logit lens: window of %d tokens exceeds the model's context of %d", ctx,
                       m->cfg.seq_len);
    if (ctx < 2) return lm_fail(LM_ERR_ARG, "logit lens: windows of %d token(s) predict nothing", ctx);
    if (n < 2) return lm_fail(LM_ERR_ARG, "logit lens: needs at least 2 tokens, got %zu", n);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= V)
            return lm_fail(LM_ERR_ARG, "logit lens: token %zu is %d, outside the vocabulary of %zu", i, (int)ids[i], V);
    int batch = o && o->batch > 0 ? o->batch : 4;
    /* the logits of one call are bounded as lm_eval_ce bounds them (so the last state's matmuls
     * are the very calls its forward makes) */
    while (batch > 1 && (size_t)batch * (size_t)ctx * V > ((size_t)64 << 20)) batch /= 2;
    size_t states = (size_t)L + 1, cells;
    if (lm_mul_ok(states, n, &cells)) return lm_fail(LM_ERR_NOMEM, "logit lens: %zu tokens overflow memory", n);
    res->n_layers = L;
    res->n_tokens = n;
    res->ctx = ctx;
    res->top = lm_malloc(cells, sizeof *res->top);
    res->loss = lm_malloc(cells, sizeof *res->loss);
    res->mean_loss = lm_malloc(states, sizeof *res->mean_loss);
    lens_run run = {m, ids, n, 0, ctx, ctx, NULL, NULL, (size_t)batch * (size_t)ctx, res};
    run.xn = lm_malloc(run.cap_rows, d * sizeof(float));
    run.logits = lm_malloc(run.cap_rows, V * sizeof(float));
    lens_sink *sinks = calloc(states, sizeof *sinks);
    lm_status st = LM_OK;
    if (!res->top || !res->loss || !res->mean_loss || !run.xn || !run.logits || !sinks)
        st = lm_fail(LM_ERR_NOMEM, "logit lens: out of memory (%zu states x %zu tokens, logits of %zu x %zu)", states,
                     n, run.cap_rows, V);
    lm_state *s = NULL, *s1 = NULL;
    if (st == LM_OK) st = lm_state_new_batch(m, ctx, batch * ctx, batch, &s);
    if (st == LM_OK) st = lm_state_new(m, ctx, ctx, &s1);
    for (int i = 0; st == LM_OK && i <= L; i++) {
        char name[64];
        if (i == 0) snprintf(name, sizeof name, "blocks.0.hook_resid_pre");
        else snprintf(name, sizeof name, "blocks.%d.hook_resid_post", i - 1);
        sinks[i] = (lens_sink){&run, i};
        st = lm_state_add_hook(s, name, lens_hook, &sinks[i]);
        if (st == LM_OK) st = lm_state_add_hook(s1, name, lens_hook, &sinks[i]);
    }
    double t0 = lm_now();
    if (st == LM_OK) {
        lm_windows_opts wo = {ctx, batch, set_window, &run, o ? o->cb : NULL, o ? o->cb_ud : NULL, 0, n, "logit lens"};
        st = lm_forward_windows(m, s, s1, ids, n, &wo);
    }
    lm_state_free(s);
    lm_state_free(s1);
    free(sinks);
    free(run.xn);
    free(run.logits);
    if (st == LM_OK) {
        /* summed in stream order, as lm_eval_ce sums */
        size_t pred = 0;
        for (size_t i = 0; i < states; i++) {
            double total = 0;
            pred = 0;
            for (size_t t = 0; t < n; t++) {
                double v = res->loss[i * n + t];
                if (isnan(v)) continue;
                total += v;
                pred++;
            }
            res->mean_loss[i] = pred ? total / (double)pred : NAN;
        }
        res->n_predicted = pred;
        res->n_windows = n / (size_t)ctx + (n % (size_t)ctx > 0);
        res->seconds = lm_now() - t0;
    }
    if (st != LM_OK) lm_logit_lens_result_free(res);
    return st;
}

/* ---- token text ------------------------------------------------------------------------------ */

char *lm_token_display(const lm_tokenizer *tok, int id, char *buf, size_t cap) {
    size_t len = 0;
    char bytes[16];
    /* prev = the token itself: never BOS-like, so a leading space is kept (it marks a word start) */
    const char *text = tok ? lm_tokenizer_token_text(tok, id, id, bytes, &len) : NULL;
    if (!text || len == 0) {
        snprintf(buf, cap, "#%d", id);
        return buf;
    }
    const unsigned char *s = (const unsigned char *)text;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        const char *rep = NULL;
        size_t k = lm_utf8_len(s + i, len - i);
        if (s[i] == ' ') rep = "\xC2\xB7";
        else if (s[i] == '\n') rep = "\xE2\x86\xB5";
        else if (s[i] == '\t') rep = "\xE2\x86\x92";
        else if (k == 0 || s[i] < 0x20 || s[i] == 0x7F) rep = "\xEF\xBF\xBD";
        size_t w = rep ? strlen(rep) : k;
        if (o + w + 1 > cap) break;
        memcpy(buf + o, rep ? rep : text + i, w);
        o += w;
        i += k ? k : 1;
    }
    buf[o] = 0;
    return buf;
}

/* ---- heat map -------------------------------------------------------------------------------- */

static void xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        default: fputc((unsigned char)*s < 0x20 ? ' ' : *s, f);
        }
    }
}

/* Characters (not bytes) of valid UTF-8 text. */
static size_t n_chars(const char *s) {
    size_t c = 0;
    for (; *s; s++) c += ((unsigned char)*s & 0xC0) != 0x80;
    return c;
}

/* Keeps the first characters of s and an ellipsis when s has more than max_chars, within the
 * cap bytes of its buffer. */
static void shorten(char *s, size_t cap, size_t max_chars) {
    if (n_chars(s) <= max_chars || max_chars < 1) return;
    size_t starts[64], c = 0; /* byte offsets of the first characters */
    for (size_t i = 0; s[i] && c < max_chars && c < 64; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) starts[c++] = i;
    /* keep max_chars - 1 characters, fewer if the ellipsis (3 bytes + NUL) would not fit */
    size_t keep = c ? c - 1 : 0;
    while (keep > 0 && starts[keep] + 4 > cap) keep--;
    size_t at = keep < c ? starts[keep] : 0;
    if (at + 4 > cap) {
        s[0] = 0;
        return;
    }
    memcpy(s + at, "\xE2\x80\xA6", 4);
}

/* viridis at 0 <= u <= 1 (low loss dark purple, high loss yellow), from nine stops */
static void colour(double u, int rgb[3]) {
    static const int stops[9][3] = {{68, 1, 84},    {71, 44, 122},  {59, 81, 139},  {44, 113, 142}, {33, 144, 141},
                                    {39, 173, 129}, {92, 200, 99},  {170, 220, 50}, {253, 231, 37}};
    if (!(u >= 0)) u = 0;
    if (u > 1) u = 1;
    double x = u * 8;
    int i = (int)x;
    if (i >= 8) i = 7;
    double f = x - i;
    for (int c = 0; c < 3; c++) rgb[c] = (int)lround(stops[i][c] + f * (stops[i + 1][c] - stops[i][c]));
}

lm_status lm_write_svg_logit_lens(const char *path, const char *title, const lm_logit_lens_result *r,
                                  const int32_t *ids, const lm_tokenizer *tok, size_t n_positions) {
    if (!r || !r->top || !r->loss || r->n_tokens == 0) return lm_fail(LM_ERR_ARG, "%s: no logit lens to plot", path);
    size_t P = n_positions < r->n_tokens ? n_positions : r->n_tokens;
    if (P > 256) P = 256;
    if (P == 0) return lm_fail(LM_ERR_ARG, "%s: no positions to plot", path);
    const size_t S = (size_t)r->n_layers + 1, N = r->n_tokens;
    /* the colour scale runs from 0 to the largest loss shown */
    double hi = 0;
    for (size_t l = 0; l < S; l++)
        for (size_t t = 0; t < P; t++)
            if (isfinite(r->loss[l * N + t]) && r->loss[l * N + t] > hi) hi = r->loss[l * N + t];
    if (hi <= 0) hi = 1;
    const double cw = 46, ch = 20, left = 72, top = 104, legend_w = 110, font = 9;
    const size_t fit = (size_t)((cw - 4) / (font * 0.62)); /* characters of a cell at ~0.62 em */
    const double W = left + cw * (double)P + legend_w, H = top + ch * (double)S + 56;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return lm_fail(LM_ERR_NOMEM, "%s: out of memory rendering the heat map", path);
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
            "font-family=\"sans-serif\" font-size=\"%.0f\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n<text x=\"%.1f\" y=\"22\" font-size=\"15\">",
            W, H, W, H, font, left);
    xml_text(f, title ? title : "logit lens");
    fprintf(f, "</text>\n<text x=\"%.1f\" y=\"40\" font-size=\"11\">cell: top token of state h_l through the final "
               "norm and head; colour: loss of the next token (nats)</text>\n", left);
    char tb[64];
    /* input tokens along the top, rotated */
    for (size_t t = 0; t < P; t++) {
        double x = left + cw * ((double)t + 0.5);
        lm_token_display(tok, ids[t], tb, sizeof tb);
        shorten(tb, sizeof tb, 12);
        fprintf(f, "<text transform=\"translate(%.1f %.1f) rotate(-60)\">", x, top - 4);
        xml_text(f, tb);
        fputs("</text>\n", f);
    }
    fprintf(f, "<text transform=\"translate(16 %.1f) rotate(-90)\" text-anchor=\"middle\" font-size=\"11\">state "
               "(0: embedding; l: after block l-1)</text>\n", top + ch * (double)S / 2);
    for (size_t l = 0; l < S; l++) {
        double y = top + ch * (double)l;
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">h_%zu</text>\n", left - 6, y + ch / 2 + 3, l);
        for (size_t t = 0; t < P; t++) {
            double x = left + cw * (double)t, v = r->loss[l * N + t];
            int rgb[3] = {200, 200, 200};
            if (isfinite(v)) colour(v / hi, rgb);
            lm_token_display(tok, r->top[l * N + t], tb, sizeof tb);
            fprintf(f, "<g><title>h_%zu, position %zu: top ", l, t);
            xml_text(f, tb);
            if (isfinite(v)) fprintf(f, ", loss %.3f", v);
            fprintf(f, "</title><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"rgb(%d,%d,%d)\"/>", x, y,
                    cw, ch, rgb[0], rgb[1], rgb[2]);
            shorten(tb, sizeof tb, fit);
            /* dark text on the light end of the scale */
            int light = rgb[0] * 299 + rgb[1] * 587 + rgb[2] * 114 > 140000;
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"%s\">", x + cw / 2, y + ch / 2 + 3,
                    light ? "black" : "white");
            xml_text(f, tb);
            fputs("</text></g>\n", f);
        }
    }
    /* colour legend */
    double lx = left + cw * (double)P + 24, ly = top, lh = ch * (double)S;
    for (int i = 0; i < 32; i++) {
        int rgb[3];
        colour(1.0 - (i + 0.5) / 32.0, rgb);
        fprintf(f, "<rect x=\"%.1f\" y=\"%.2f\" width=\"14\" height=\"%.2f\" fill=\"rgb(%d,%d,%d)\"/>\n", lx,
                ly + lh * i / 32.0, lh / 32.0 + 0.5, rgb[0], rgb[1], rgb[2]);
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">%.2f</text>\n<text x=\"%.1f\" y=\"%.1f\">0</text>\n", lx + 18, ly + 8, hi,
            lx + 18, ly + lh);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\">loss (nats)</text>\n", lx - 6, ly - 8);
    fputs("</svg>\n", f);
    int bad = ferror(f);
    if (fclose(f) != 0) bad = 1;
    lm_status st = bad || !text ? lm_fail(LM_ERR_NOMEM, "%s: out of memory rendering the heat map", path)
                                : lm_write_file_atomic(path, text, len);
    free(text);
    return st;
}
