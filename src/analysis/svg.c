/* svg.c - a small self-contained SVG line plot (axes, ticks, legend), written atomically. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lumen/analysis.h"

typedef struct buf {
    char *p;
    size_t len, cap;
    int failed;
} buf;

static void put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(buf *b, const char *fmt, ...) {
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->failed = 1;
            return;
        }
        if (b->p && (size_t)k < b->cap - b->len) {
            b->len += (size_t)k;
            return;
        }
        size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)k;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->failed = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

/* Text as XML character data or attribute value. */
static void put_text(buf *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': put(b, "&amp;"); break;
        case '<': put(b, "&lt;"); break;
        case '>': put(b, "&gt;"); break;
        case '"': put(b, "&quot;"); break;
        case '\'': put(b, "&apos;"); break;
        default:
            /* control characters are not allowed in XML 1.0 */
            put(b, "%c", (unsigned char)*s < 0x20 ? ' ' : *s);
        }
    }
}

/* A tick step of 1, 2 or 5 times a power of ten giving about `want` intervals over span. */
static double nice_step(double span, int want) {
    double raw = span / want, p = pow(10.0, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                      "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};

lm_status lm_write_svg_lines(const char *path, const char *title, const char *xlabel, const char *ylabel,
                             const lm_svg_series *series, size_t n_series) {
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    int x_whole = 1; /* layer indices and the like: no ticks between integers */
    for (size_t s = 0; s < n_series; s++)
        for (size_t i = 0; i < series[s].n; i++) {
            double x = series[s].x[i], y = series[s].y[i];
            if (!isfinite(x) || !isfinite(y)) continue;
            x0 = fmin(x0, x), x1 = fmax(x1, x), y0 = fmin(y0, y), y1 = fmax(y1, y);
            if (x != floor(x)) x_whole = 0;
        }
    if (!(x0 <= x1)) return lm_fail(LM_ERR_ARG, "%s: nothing to plot (no finite point)", path);
    /* a flat range still needs an extent to draw into */
    if (x1 - x0 < 1e-12 * fmax(1.0, fabs(x0))) x0 -= 0.5, x1 += 0.5;
    if (y1 - y0 < 1e-12 * fmax(1.0, fabs(y0))) y0 -= 0.5, y1 += 0.5;
    double xs = nice_step(x1 - x0, 8), ys = nice_step(y1 - y0, 5);
    if (x_whole && xs < 1) xs = 1;
    x0 = floor(x0 / xs) * xs, x1 = ceil(x1 / xs) * xs;
    y0 = floor(y0 / ys) * ys, y1 = ceil(y1 / ys) * ys;

    const double W = 760, H = 440, left = 70, right = 200, top = 44, bottom = 56;
    const double pw = W - left - right, ph = H - top - bottom;
#define PX(x) (left + ((x) - x0) / (x1 - x0) * pw)
#define PY(y) (top + (1.0 - ((y) - y0) / (y1 - y0)) * ph)
    buf b = {0};
    put(&b,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
        "font-family=\"sans-serif\" font-size=\"12\">\n"
        "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
        W, H, W, H);
    put(&b, "<text x=\"%.1f\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">", left + pw / 2);
    put_text(&b, title);
    put(&b, "</text>\n<g stroke=\"#e0e0e0\" stroke-width=\"1\">\n");
    for (double t = x0; t <= x1 + xs * 1e-9; t += xs)
        put(&b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\"/>\n", PX(t), top, PX(t), top + ph);
    for (double t = y0; t <= y1 + ys * 1e-9; t += ys)
        put(&b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\"/>\n", left, PY(t), left + pw, PY(t));
    put(&b, "</g>\n<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" stroke=\"black\"/>\n", left,
        top, pw, ph);
    /* tick labels: %g of a value snapped to the step, so 0.30000000000000004 prints as 0.3 */
    for (double t = x0; t <= x1 + xs * 1e-9; t += xs)
        put(&b, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">%g</text>\n", PX(t), top + ph + 16,
            round(t / xs) * xs);
    for (double t = y0; t <= y1 + ys * 1e-9; t += ys)
        put(&b, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\">%g</text>\n", left - 6, PY(t) + 4,
            round(t / ys) * ys);
    put(&b, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">", left + pw / 2, H - 14);
    put_text(&b, xlabel);
    put(&b, "</text>\n");
    if (ylabel) {
        put(&b, "<text transform=\"translate(18 %.2f) rotate(-90)\" text-anchor=\"middle\">", top + ph / 2);
        put_text(&b, ylabel);
        put(&b, "</text>\n");
    }
    for (size_t s = 0; s < n_series; s++) {
        const char *col = palette[s % (sizeof palette / sizeof palette[0])];
        const lm_svg_series *se = &series[s];
        /* one polyline per run of finite points */
        int open = 0;
        for (size_t i = 0; i < se->n; i++) {
            int ok = isfinite(se->x[i]) && isfinite(se->y[i]);
            if (ok && !open) put(&b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", col), open = 1;
            if (ok) put(&b, "%.2f,%.2f ", PX(se->x[i]), PY(se->y[i]));
            if (!ok && open) put(&b, "\"/>\n"), open = 0;
        }
        if (open) put(&b, "\"/>\n");
        for (size_t i = 0; i < se->n; i++)
            if (isfinite(se->x[i]) && isfinite(se->y[i]))
                put(&b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"%s\"/>\n", PX(se->x[i]), PY(se->y[i]), col);
        double ly = top + 10 + 20 * (double)s, lx = left + pw + 16;
        put(&b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" stroke-width=\"2\"/>\n", lx, ly,
            lx + 22, ly, col);
        put(&b, "<text x=\"%.2f\" y=\"%.2f\">", lx + 28, ly + 4);
        put_text(&b, se->name);
        put(&b, "</text>\n");
    }
    put(&b, "</svg>\n");
#undef PX
#undef PY
    lm_status st = b.failed ? lm_fail(LM_ERR_NOMEM, "%s: out of memory rendering the plot", path)
                            : lm_write_file_atomic(path, b.p, b.len);
    free(b.p);
    return st;
}
