/* test_gradcheck.c - every backward kernel against central differences of a double-precision reference forward. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lumen/lumen.h"

/* The loss is L = sum(out * R) for a random R, so dL/dout = R. Each reference forward is in double and is first checked
 * against the float kernel; central differences of it with this step are then exact to ~1e-9, so the tolerances below
 * measure the float backward alone. */
#define STEP 1e-4
#define TOL 1e-4

static lm_rng rng;

static void fill(float *x, size_t n, float s) {
    for (size_t i = 0; i < n; i++) x[i] = s * lm_rng_normal(&rng);
}

static float *randf(size_t n, float s) {
    float *x = malloc(n * sizeof *x);
    fill(x, n, s);
    return x;
}

static float *zerof(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static double *dup_d(const float *x, size_t n) {
    double *d = malloc((n ? n : 1) * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

static float *copyf(const float *x, size_t n) {
    float *c = malloc((n ? n : 1) * sizeof *c);
    memcpy(c, x, n * sizeof *c);
    return c;
}

/* ||a - b|| / ||b|| */
static double rel_err(const float *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static double rel_err_f(const float *a, const float *b, size_t n) {
    double *bd = dup_d(b, n);
    double e = rel_err(a, bd, n);
    free(bd);
    return e;
}

/* The worst gradient error seen per op, printed at the end. */
#define MAX_OPS 16
static const char *op_names[MAX_OPS];
static double op_worst[MAX_OPS];
static int n_ops;

static void note(const char *op, const char *what, double err, double tol) {
    CHECKF(err < tol, "%s %s: rel err %.3g (tol %.1g)", op, what, err, tol);
}

/* A gradient against its numeric value: also kept for the summary. */
static void note_grad(const char *op, const char *what, double err) {
    note(op, what, err, TOL);
    int i = 0;
    while (i < n_ops && strcmp(op_names[i], op) != 0) i++;
    if (i == n_ops && n_ops < MAX_OPS) {
        op_names[n_ops] = op;
        op_worst[n_ops++] = 0;
    }
    if (i < n_ops && !(err <= op_worst[i])) op_worst[i] = err;
}

/* Central differences of f with respect to p[idx[j]] (or p[j] when idx is NULL). */
typedef double (*loss_fn)(void *ctx);
static void numgrad(double *g, double *p, size_t n, const size_t *idx, loss_fn f, void *ctx) {
    for (size_t j = 0; j < n; j++) {
        size_t i = idx ? idx[j] : j;
        double s = p[i];
        p[i] = s + STEP;
        double lp = f(ctx);
        p[i] = s - STEP;
        double lm = f(ctx);
        p[i] = s;
        g[j] = (lp - lm) / (2 * STEP);
    }
}

/* Full numeric gradient of p[n] compared with the analytic one. */
static void gradcheck(const char *op, const char *what, const float *analytic, double *p, size_t n, loss_fn f,
                      void *ctx) {
    double *g = malloc(n * sizeof *g);
    numgrad(g, p, n, NULL, f, ctx);
    note_grad(op, what, rel_err(analytic, g, n));
    free(g);
}

/* The same on a random subset of m coordinates, for inputs too big to difference whole. */
static void gradcheck_some(const char *op, const char *what, const float *analytic, double *p, size_t n, size_t m,
                           loss_fn f, void *ctx) {
    size_t *idx = malloc(m * sizeof *idx);
    float *a = malloc(m * sizeof *a);
    double *g = malloc(m * sizeof *g);
    for (size_t j = 0; j < m; j++) {
        idx[j] = lm_rng_u32(&rng) % n;
        a[j] = analytic[idx[j]];
    }
    numgrad(g, p, m, idx, f, ctx);
    note_grad(op, what, rel_err(a, g, m));
    free(idx);
    free(a);
    free(g);
}

/* Backward called a second time on the same buffers must give exactly twice the first result. */
static void check_twice(const char *op, const char *what, const float *once, const float *twice, size_t n) {
    double *t = malloc((n ? n : 1) * sizeof *t);
    for (size_t i = 0; i < n; i++) t[i] = 2.0 * once[i];
    note(op, what, rel_err(twice, t, n), 1e-6);
    free(t);
}

static double dot_d(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* ---- linear ---------------------------------------------------------------------------------- */

typedef struct {
    double *x, *W, *b, *R;
    size_t n, in, out;
} lin_ctx;

static void linear_ref(double *o, const lin_ctx *c) {
    for (size_t t = 0; t < c->n; t++)
        for (size_t j = 0; j < c->out; j++) {
            double s = c->b ? c->b[j] : 0;
            for (size_t i = 0; i < c->in; i++) s += c->x[t * c->in + i] * c->W[j * c->in + i];
            o[t * c->out + j] = s;
        }
}

static double linear_loss(void *p) {
    lin_ctx *c = p;
    double *o = malloc(c->n * c->out * sizeof *o);
    linear_ref(o, c);
    double l = dot_d(o, c->R, c->n * c->out);
    free(o);
    return l;
}

static void test_linear_small(void) {
    const size_t n = 5, in = 7, out = 6;
    float *x = randf(n * in, 1), *W = randf(out * in, 1), *b = randf(out, 1), *R = randf(n * out, 1);
    lin_ctx c = {dup_d(x, n * in), dup_d(W, out * in), dup_d(b, out), dup_d(R, n * out), n, in, out};
    float *y = zerof(n * out);
    double *yr = malloc(n * out * sizeof *yr);
    lm_linear_f32(y, x, W, b, n, in, out);
    linear_ref(yr, &c);
    note("linear", "forward", rel_err(y, yr, n * out), 1e-6);

    float *dx = zerof(n * in), *dW = zerof(out * in), *db = zerof(out);
    lm_linear_backward(dx, dW, db, R, x, W, n, in, out);
    gradcheck("linear", "dx", dx, c.x, n * in, linear_loss, &c);
    gradcheck("linear", "dW", dW, c.W, out * in, linear_loss, &c);
    gradcheck("linear", "db", db, c.b, out, linear_loss, &c);
    float *dx2 = copyf(dx, n * in), *dW2 = copyf(dW, out * in), *db2 = copyf(db, out);
    lm_linear_backward(dx2, dW2, db2, R, x, W, n, in, out);
    check_twice("linear", "accumulate dx", dx, dx2, n * in);
    check_twice("linear", "accumulate dW", dW, dW2, out * in);
    check_twice("linear", "accumulate db", db, db2, out);
    /* NULL gradients are skipped; the others are unchanged by that */
    float *dx3 = zerof(n * in);
    lm_linear_backward(dx3, NULL, NULL, R, x, W, n, in, out);
    note("linear", "dx alone", rel_err_f(dx3, dx, n * in), 1e-7);

    free(x), free(W), free(b), free(R), free(c.x), free(c.W), free(c.b), free(c.R), free(y), free(yr);
    free(dx), free(dW), free(db), free(dx2), free(dW2), free(db2), free(dx3);
}

/* Shapes big enough for the threaded paths (each way of slicing), against exact double formulas. */
static void test_linear_large(size_t n, size_t in, size_t out) {
    float *x = randf(n * in, 1), *W = randf(out * in, 0.3f), *b = randf(out, 1), *R = randf(n * out, 1);
    lin_ctx c = {dup_d(x, n * in), dup_d(W, out * in), dup_d(b, out), NULL, n, in, out};
    float *y = zerof(n * out), *y2 = zerof(n * out);
    double *yr = malloc(n * out * sizeof *yr);
    linear_ref(yr, &c);
    lm_linear_f32(y, x, W, b, n, in, out);
    note("linear", "forward (threaded)", rel_err(y, yr, n * out), 1e-6);
    /* without bias it agrees with the inference kernel */
    lm_weight Wt = {LM_F32, out, in, W};
    lm_linear_f32(y, x, W, NULL, n, in, out);
    CHECK(lm_linear(y2, x, n, &Wt) == LM_OK);
    note("linear", "forward = lm_linear", rel_err_f(y, y2, n * out), 1e-6);

    /* gradients start from random values: the backward must add to them */
    float *dx = randf(n * in, 1), *dW = randf(out * in, 1), *db = randf(out, 1);
    double *ex = dup_d(dx, n * in), *eW = dup_d(dW, out * in), *eb = dup_d(db, out);
    for (size_t t = 0; t < n; t++)
        for (size_t j = 0; j < out; j++) {
            double g = R[t * out + j];
            eb[j] += g;
            for (size_t i = 0; i < in; i++) {
                ex[t * in + i] += g * W[j * in + i];
                eW[j * in + i] += g * x[t * in + i];
            }
        }
    lm_linear_backward(dx, dW, db, R, x, W, n, in, out);
    note("linear", "dx (threaded)", rel_err(dx, ex, n * in), 1e-5);
    note("linear", "dW (threaded)", rel_err(dW, eW, out * in), 1e-5);
    note("linear", "db (threaded)", rel_err(db, eb, out), 1e-5);
    free(x), free(W), free(b), free(R), free(c.x), free(c.W), free(c.b), free(y), free(y2), free(yr);
    free(dx), free(dW), free(db), free(ex), free(eW), free(eb);
}

/* ---- norms ----------------------------------------------------------------------------------- */

typedef struct {
    double *x, *w, *b, *R;
    size_t n, d;
    double eps;
    int layer;
} norm_ctx;

static void norm_ref(double *o, const norm_ctx *c) {
    for (size_t t = 0; t < c->n; t++) {
        const double *x = c->x + t * c->d;
        if (c->layer) {
            double mean = 0, var = 0;
            for (size_t i = 0; i < c->d; i++) mean += x[i];
            mean /= c->d;
            for (size_t i = 0; i < c->d; i++) var += (x[i] - mean) * (x[i] - mean);
            double inv = 1 / sqrt(var / c->d + c->eps);
            for (size_t i = 0; i < c->d; i++) o[t * c->d + i] = (x[i] - mean) * inv * c->w[i] + (c->b ? c->b[i] : 0);
        } else {
            double ss = 0;
            for (size_t i = 0; i < c->d; i++) ss += x[i] * x[i];
            double r = 1 / sqrt(ss / c->d + c->eps);
            for (size_t i = 0; i < c->d; i++) o[t * c->d + i] = c->w[i] * r * x[i];
        }
    }
}

static double norm_loss(void *p) {
    norm_ctx *c = p;
    double *o = malloc(c->n * c->d * sizeof *o);
    norm_ref(o, c);
    double l = dot_d(o, c->R, c->n * c->d);
    free(o);
    return l;
}

static void test_norm(int layer, size_t n, size_t d) {
    const char *op = layer ? "layernorm" : "rmsnorm";
    const float eps = 1e-5f;
    float *x = randf(n * d, 1.5f), *w = randf(d, 1), *b = randf(d, 1), *R = randf(n * d, 1);
    for (size_t i = 0; i < d; i++) x[i] += 0.7f; /* a row with a non-zero mean */
    norm_ctx c = {dup_d(x, n * d), dup_d(w, d), layer ? dup_d(b, d) : NULL, dup_d(R, n * d), n, d, eps, layer};
    float *y = zerof(n * d);
    double *yr = malloc(n * d * sizeof *yr);
    if (layer)
        lm_layernorm(y, x, w, b, n, d, eps);
    else
        lm_rmsnorm(y, x, w, n, d, eps);
    norm_ref(yr, &c);
    note(op, "reference = forward", rel_err(y, yr, n * d), 1e-6);

    float *dx = zerof(n * d), *dw = zerof(d), *db = zerof(d);
    if (layer)
        lm_layernorm_backward(dx, dw, db, R, x, w, n, d, eps);
    else
        lm_rmsnorm_backward(dx, dw, R, x, w, n, d, eps);
    gradcheck(op, "dx", dx, c.x, n * d, norm_loss, &c);
    gradcheck(op, "dw", dw, c.w, d, norm_loss, &c);
    if (layer) gradcheck(op, "db", db, c.b, d, norm_loss, &c);

    float *dx2 = copyf(dx, n * d), *dw2 = copyf(dw, d), *db2 = copyf(db, d);
    if (layer)
        lm_layernorm_backward(dx2, dw2, db2, R, x, w, n, d, eps);
    else
        lm_rmsnorm_backward(dx2, dw2, R, x, w, n, d, eps);
    check_twice(op, "accumulate dx", dx, dx2, n * d);
    check_twice(op, "accumulate dw", dw, dw2, d);
    if (layer) check_twice(op, "accumulate db", db, db2, d);

    /* each gradient alone equals the same gradient computed together with the others */
    float *only = zerof(n * d);
    if (layer)
        lm_layernorm_backward(only, NULL, NULL, R, x, w, n, d, eps);
    else
        lm_rmsnorm_backward(only, NULL, R, x, w, n, d, eps);
    note(op, "dx alone", rel_err_f(only, dx, n * d), 1e-7);
    memset(only, 0, d * sizeof *only);
    if (layer)
        lm_layernorm_backward(NULL, only, NULL, R, x, w, n, d, eps);
    else
        lm_rmsnorm_backward(NULL, only, R, x, w, n, d, eps);
    note(op, "dw alone", rel_err_f(only, dw, d), 1e-7);

    free(x), free(w), free(b), free(R), free(c.x), free(c.w), free(c.b), free(c.R), free(y), free(yr);
    free(dx), free(dw), free(db), free(dx2), free(dw2), free(db2), free(only);
}

/* ---- rope ------------------------------------------------------------------------------------ */

typedef struct {
    double *x, *R;
    const float *inv;
    size_t n_tok, n_heads, hd, pos0;
    lm_rope_style style;
} rope_ctx;

static void rope_ref(double *o, const rope_ctx *c) {
    size_t half = c->hd / 2;
    memcpy(o, c->x, c->n_tok * c->n_heads * c->hd * sizeof *o);
    for (size_t t = 0; t < c->n_tok; t++)
        for (size_t h = 0; h < c->n_heads; h++)
            for (size_t i = 0; i < half; i++) {
                /* the angle rounded to float as the kernel forms it */
                double ang = (float)(c->pos0 + t) * c->inv[i];
                size_t a = c->style == LM_ROPE_INTERLEAVED ? 2 * i : i;
                size_t b = c->style == LM_ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
                double *v = o + (t * c->n_heads + h) * c->hd, v0 = v[a], v1 = v[b];
                v[a] = v0 * cos(ang) - v1 * sin(ang);
                v[b] = v0 * sin(ang) + v1 * cos(ang);
            }
}

static double rope_loss(void *p) {
    rope_ctx *c = p;
    size_t n = c->n_tok * c->n_heads * c->hd;
    double *o = malloc(n * sizeof *o);
    rope_ref(o, c);
    double l = dot_d(o, c->R, n);
    free(o);
    return l;
}

static void test_rope(lm_rope_style style, size_t n_tok) {
    const size_t nh = 2, hd = 8, pos0 = 5, n = n_tok * nh * hd;
    float inv[4];
    lm_rope_inv_freq(inv, hd, 10000.0f);
    float *x = randf(n, 1), *R = randf(n, 1);
    rope_ctx c = {dup_d(x, n), dup_d(R, n), inv, n_tok, nh, hd, pos0, style};
    float *y = copyf(x, n);
    double *yr = malloc(n * sizeof *yr);
    lm_rope(y, n_tok, nh, hd, pos0, inv, style);
    rope_ref(yr, &c);
    note("rope", "reference = forward", rel_err(y, yr, n), 1e-6);
    float *dx = copyf(R, n);
    lm_rope_backward(dx, n_tok, nh, hd, pos0, inv, style);
    gradcheck("rope", "dx", dx, c.x, n, rope_loss, &c);
    /* backward after forward is the identity (rotations are orthogonal) */
    lm_rope_backward(y, n_tok, nh, hd, pos0, inv, style);
    note("rope", "inverse", rel_err_f(y, x, n), 1e-6);
    free(x), free(R), free(c.x), free(c.R), free(y), free(yr), free(dx);
}

/* ---- element-wise: each output depends on one input, so differences are taken per element ---- */

static double silu_d(double g) { return g / (1 + exp(-g)); }
static double gelu_d(double x) { return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }

static void test_swiglu(size_t n) {
    float *g = randf(n, 3), *u = randf(n, 1), *R = randf(n, 1), *y = zerof(n);
    double *yr = malloc(n * sizeof *yr), *ng = malloc(n * sizeof *ng), *nu = malloc(n * sizeof *nu);
    for (size_t i = 0; i < n; i++) {
        yr[i] = silu_d(g[i]) * u[i];
        double gi = g[i], ui = u[i];
        ng[i] = R[i] * (silu_d(gi + STEP) - silu_d(gi - STEP)) * ui / (2 * STEP);
        nu[i] = R[i] * ((ui + STEP) - (ui - STEP)) * silu_d(gi) / (2 * STEP);
    }
    lm_swiglu(y, g, u, n);
    note("swiglu", "reference = forward", rel_err(y, yr, n), 1e-6);
    float *dg = zerof(n), *du = zerof(n);
    lm_swiglu_backward(dg, du, R, g, u, n);
    note_grad("swiglu", "dgate", rel_err(dg, ng, n));
    note_grad("swiglu", "dup", rel_err(du, nu, n));
    float *dg2 = copyf(dg, n), *du2 = copyf(du, n), *one = zerof(n);
    lm_swiglu_backward(dg2, du2, R, g, u, n);
    check_twice("swiglu", "accumulate dgate", dg, dg2, n);
    check_twice("swiglu", "accumulate dup", du, du2, n);
    lm_swiglu_backward(one, NULL, R, g, u, n);
    note("swiglu", "dgate alone", rel_err_f(one, dg, n), 1e-7);
    memset(one, 0, n * sizeof *one);
    lm_swiglu_backward(NULL, one, R, g, u, n);
    note("swiglu", "dup alone", rel_err_f(one, du, n), 1e-7);
    free(g), free(u), free(R), free(y), free(yr), free(ng), free(nu), free(dg), free(du), free(dg2), free(du2),
        free(one);
}

static void test_gelu(size_t n) {
    float *x = randf(n, 2.5f), *R = randf(n, 1), *y = copyf(x, n);
    double *yr = malloc(n * sizeof *yr), *nx = malloc(n * sizeof *nx);
    for (size_t i = 0; i < n; i++) {
        yr[i] = gelu_d(x[i]);
        nx[i] = R[i] * (gelu_d((double)x[i] + STEP) - gelu_d((double)x[i] - STEP)) / (2 * STEP);
    }
    lm_gelu_tanh(y, n);
    note("gelu", "reference = forward", rel_err(y, yr, n), 1e-6);
    float *dx = zerof(n);
    lm_gelu_tanh_backward(dx, R, x, n);
    note_grad("gelu", "dx", rel_err(dx, nx, n));
    float *dx2 = copyf(dx, n);
    lm_gelu_tanh_backward(dx2, R, x, n);
    check_twice("gelu", "accumulate dx", dx, dx2, n);
    free(x), free(R), free(y), free(yr), free(nx), free(dx), free(dx2);
}

/* ---- embedding ------------------------------------------------------------------------------- */

typedef struct {
    double *W, *R;
    const int32_t *ids;
    size_t n, d;
} emb_ctx;

static double emb_loss(void *p) {
    emb_ctx *c = p;
    double l = 0;
    for (size_t t = 0; t < c->n; t++)
        for (size_t j = 0; j < c->d; j++) l += c->W[(size_t)c->ids[t] * c->d + j] * c->R[t * c->d + j];
    return l;
}

static void test_embedding(size_t rows, size_t n, size_t d, int fd) {
    int32_t *ids = malloc(n * sizeof *ids);
    for (size_t t = 0; t < n; t++) ids[t] = (int32_t)(lm_rng_u32(&rng) % (rows / 2)); /* many repeats */
    ids[n - 1] = ids[0];
    float *W = randf(rows * d, 1), *R = randf(n * d, 1);
    float *dW = randf(rows * d, 1); /* starts non-zero: the scatter must add */
    float *dW0 = copyf(dW, rows * d);
    lm_embedding_backward(dW, R, ids, n, d);
    double *e = dup_d(dW0, rows * d);
    for (size_t t = 0; t < n; t++)
        for (size_t j = 0; j < d; j++) e[(size_t)ids[t] * d + j] += R[t * d + j];
    note("embedding", "dW vs scatter", rel_err(dW, e, rows * d), 1e-6);
    if (fd) {
        float *g = zerof(rows * d);
        lm_embedding_backward(g, R, ids, n, d);
        emb_ctx c = {dup_d(W, rows * d), dup_d(R, n * d), ids, n, d};
        gradcheck("embedding", "dW", g, c.W, rows * d, emb_loss, &c);
        float *g2 = copyf(g, rows * d);
        lm_embedding_backward(g2, R, ids, n, d);
        check_twice("embedding", "accumulate dW", g, g2, rows * d);
        free(g), free(g2), free(c.W), free(c.R);
    }
    free(ids), free(W), free(R), free(dW), free(dW0), free(e);
}

/* ---- attention ------------------------------------------------------------------------------- */

typedef struct {
    double *q, *k, *v, *R;
    size_t T, nh, nkv, hd;
} att_ctx;

static void attention_ref(double *o, const att_ctx *c) {
    size_t qdim = c->nh * c->hd, kvdim = c->nkv * c->hd, group = c->nh / c->nkv;
    double *sc = malloc(c->T * sizeof *sc);
    for (size_t h = 0; h < c->nh; h++) {
        size_t kh = h / group;
        for (size_t t = 0; t < c->T; t++) {
            double mx = -INFINITY, sum = 0;
            for (size_t s = 0; s <= t; s++) {
                sc[s] = dot_d(c->q + t * qdim + h * c->hd, c->k + s * kvdim + kh * c->hd, c->hd) / sqrt((double)c->hd);
                mx = fmax(mx, sc[s]);
            }
            for (size_t s = 0; s <= t; s++) sum += sc[s] = exp(sc[s] - mx);
            double *out = o + t * qdim + h * c->hd;
            for (size_t i = 0; i < c->hd; i++) out[i] = 0;
            for (size_t s = 0; s <= t; s++)
                for (size_t i = 0; i < c->hd; i++) out[i] += sc[s] / sum * c->v[s * kvdim + kh * c->hd + i];
        }
    }
    free(sc);
}

static double attention_loss(void *p) {
    att_ctx *c = p;
    size_t n = c->T * c->nh * c->hd;
    double *o = malloc(n * sizeof *o);
    attention_ref(o, c);
    double l = dot_d(o, c->R, n);
    free(o);
    return l;
}

/* subset: 0 = difference every coordinate, else that many random ones per input */
static void test_attention(size_t T, size_t nh, size_t nkv, size_t hd, size_t subset) {
    size_t nq = T * nh * hd, nk = T * nkv * hd;
    float *q = randf(nq, 1), *k = randf(nk, 1), *v = randf(nk, 1), *R = randf(nq, 1);
    att_ctx c = {dup_d(q, nq), dup_d(k, nk), dup_d(v, nk), dup_d(R, nq), T, nh, nkv, hd};
    float *out = zerof(nq), *probs = zerof(nh * T * T), *out2 = zerof(nq);
    double *ref = malloc(nq * sizeof *ref);
    lm_attention_train(out, probs, q, k, v, T, nh, nkv, hd);
    attention_ref(ref, &c);
    note("attention", "forward", rel_err(out, ref, nq), 1e-5);
    /* the KV-cache forward over the same sequence gives the same output */
    float *sc = zerof(lm_attention_scratch(T, nh, T));
    lm_attention(out2, q, k, v, T, 0, nh, nkv, hd, sc);
    note("attention", "forward = lm_attention", rel_err_f(out, out2, nq), 1e-6);
    /* probs: rows sum to one, nothing above the diagonal */
    double worst = 0;
    int upper_zero = 1;
    for (size_t h = 0; h < nh; h++)
        for (size_t t = 0; t < T; t++) {
            double s = 0;
            for (size_t j = 0; j < T; j++) {
                s += probs[(h * T + t) * T + j];
                if (j > t && probs[(h * T + t) * T + j] != 0.0f) upper_zero = 0;
            }
            worst = fmax(worst, fabs(s - 1));
        }
    CHECKF(worst < 1e-5, "attention probs rows sum to 1 within %g", worst);
    CHECK(upper_zero);

    float *scratch = zerof(lm_attention_train_scratch(T));
    float *dq = zerof(nq), *dk = zerof(nk), *dv = zerof(nk);
    lm_attention_train_backward(dq, dk, dv, R, q, k, v, probs, T, nh, nkv, hd, scratch);
    if (subset) {
        gradcheck_some("attention", "dq", dq, c.q, nq, subset, attention_loss, &c);
        gradcheck_some("attention", "dk", dk, c.k, nk, subset, attention_loss, &c);
        gradcheck_some("attention", "dv", dv, c.v, nk, subset, attention_loss, &c);
    } else {
        gradcheck("attention", "dq", dq, c.q, nq, attention_loss, &c);
        gradcheck("attention", "dk", dk, c.k, nk, attention_loss, &c);
        gradcheck("attention", "dv", dv, c.v, nk, attention_loss, &c);
    }
    float *dq2 = copyf(dq, nq), *dk2 = copyf(dk, nk), *dv2 = copyf(dv, nk);
    lm_attention_train_backward(dq2, dk2, dv2, R, q, k, v, probs, T, nh, nkv, hd, scratch);
    check_twice("attention", "accumulate dq", dq, dq2, nq);
    check_twice("attention", "accumulate dk", dk, dk2, nk);
    check_twice("attention", "accumulate dv", dv, dv2, nk);
    /* each gradient alone (the others NULL) is the same */
    memset(dq2, 0, nq * sizeof *dq2);
    lm_attention_train_backward(dq2, NULL, NULL, R, q, k, v, probs, T, nh, nkv, hd, scratch);
    note("attention", "dq alone", rel_err_f(dq2, dq, nq), 1e-7);
    memset(dk2, 0, nk * sizeof *dk2);
    lm_attention_train_backward(NULL, dk2, NULL, R, q, k, v, probs, T, nh, nkv, hd, scratch);
    note("attention", "dk alone", rel_err_f(dk2, dk, nk), 1e-7);
    memset(dv2, 0, nk * sizeof *dv2);
    lm_attention_train_backward(NULL, NULL, dv2, R, q, k, v, probs, T, nh, nkv, hd, scratch);
    note("attention", "dv alone", rel_err_f(dv2, dv, nk), 1e-7);

    free(q), free(k), free(v), free(R), free(c.q), free(c.k), free(c.v), free(c.R), free(out), free(probs), free(out2);
    free(ref), free(sc), free(scratch), free(dq), free(dk), free(dv), free(dq2), free(dk2), free(dv2);
}

/* ---- cross-entropy --------------------------------------------------------------------------- */

typedef struct {
    double *l;
    const int32_t *y;
    size_t n, V;
    double scale;
} ce_ctx;

/* scale * mean over counted rows of logsumexp(l) - l[y] */
static double ce_ref(void *p) {
    ce_ctx *c = p;
    double total = 0;
    size_t cnt = 0;
    for (size_t t = 0; t < c->n; t++) {
        if (c->y[t] < 0) continue;
        const double *l = c->l + t * c->V;
        double mx = -INFINITY, s = 0;
        for (size_t i = 0; i < c->V; i++) mx = fmax(mx, l[i]);
        for (size_t i = 0; i < c->V; i++) s += exp(l[i] - mx);
        total += mx + log(s) - l[c->y[t]];
        cnt++;
    }
    return c->scale * total / (double)cnt;
}

static void test_cross_entropy_small(void) {
    const size_t n = 6, V = 11;
    const int32_t y[6] = {3, -1, 0, 10, -5, 3};
    float *l = randf(n * V, 3);
    ce_ctx c = {dup_d(l, n * V), y, n, V, 1.0};
    float *dl = zerof(n * V);
    double loss = lm_cross_entropy(dl, l, y, n, V, 0.7f);
    note("cross_entropy", "loss", fabs(loss - ce_ref(&c)) / ce_ref(&c), 1e-7);
    c.scale = 0.7;
    gradcheck("cross_entropy", "dlogits (scale 0.7)", dl, c.l, n * V, ce_ref, &c);
    int ignored_zero = 1;
    for (size_t i = 0; i < V; i++) ignored_zero &= dl[1 * V + i] == 0.0f && dl[4 * V + i] == 0.0f;
    CHECK(ignored_zero);
    /* no gradient asked: same loss; gradient written over whatever was there, even into the logits */
    CHECK(lm_cross_entropy(NULL, l, y, n, V, 0.7f) == loss);
    float *alias = copyf(l, n * V);
    double la = lm_cross_entropy(alias, alias, y, n, V, 0.7f);
    CHECK(la == loss);
    note("cross_entropy", "in place", rel_err_f(alias, dl, n * V), 1e-7);
    /* nothing counted, or a target out of range: NaN */
    const int32_t none[6] = {-1, -1, -1, -1, -1, -1}, big[6] = {3, 1, 0, 11, 2, 3};
    CHECK(isnan(lm_cross_entropy(dl, l, none, n, V, 1.0f)));
    CHECK(isnan(lm_cross_entropy(NULL, l, big, n, V, 1.0f)));
    free(l), free(c.l), free(dl), free(alias);
}

/* Enough rows for the threaded path, against the closed form (softmax - onehot) * scale / n. */
static void test_cross_entropy_large(void) {
    const size_t n = 40, V = 2000;
    int32_t y[40];
    for (size_t t = 0; t < n; t++) y[t] = t % 7 == 3 ? -1 : (int32_t)(lm_rng_u32(&rng) % V);
    float *l = randf(n * V, 4);
    ce_ctx c = {dup_d(l, n * V), y, n, V, 1.0};
    float *dl = randf(n * V, 1);
    double loss = lm_cross_entropy(dl, l, y, n, V, 2.0f);
    note("cross_entropy", "loss (threaded)", fabs(loss - ce_ref(&c)) / ce_ref(&c), 1e-7);
    size_t cnt = 0;
    for (size_t t = 0; t < n; t++) cnt += y[t] >= 0;
    double *e = calloc(n * V, sizeof *e);
    for (size_t t = 0; t < n; t++) {
        if (y[t] < 0) continue;
        const double *lt = c.l + t * V;
        double mx = -INFINITY, s = 0;
        for (size_t i = 0; i < V; i++) mx = fmax(mx, lt[i]);
        for (size_t i = 0; i < V; i++) s += exp(lt[i] - mx);
        for (size_t i = 0; i < V; i++) e[t * V + i] = exp(lt[i] - mx) / s * 2.0 / cnt;
        e[t * V + y[t]] -= 2.0 / cnt;
    }
    note("cross_entropy", "dlogits (threaded)", rel_err(dl, e, n * V), 1e-6);
    free(l), free(c.l), free(dl), free(e);
}

int main(void) {
    lm_rng_seed(&rng, 42);
    lm_get_threads();

    test_linear_small();
    test_linear_large(64, 48, 80); /* dx by rows, dW by rows of W, forward by features */
    test_linear_large(40, 96, 32); /* dx by columns, dW by columns, forward by rows */
    test_norm(0, 3, 16);
    test_norm(0, 12, 40); /* threaded: rows then a column pass */
    test_norm(1, 3, 16);
    test_norm(1, 12, 40);
    test_rope(LM_ROPE_INTERLEAVED, 3);
    test_rope(LM_ROPE_HALF, 3);
    test_rope(LM_ROPE_INTERLEAVED, 12);
    test_rope(LM_ROPE_HALF, 12);
    test_swiglu(257);
    test_swiglu(70000); /* threaded */
    test_gelu(257);
    test_gelu(70000);
    test_embedding(10, 20, 8, 1);
    test_embedding(64, 600, 256, 0);  /* threaded over columns, repeated rows */
    test_attention(7, 4, 2, 8, 0);    /* GQA; lm_attention takes its direct path */
    test_attention(12, 4, 4, 8, 0);   /* MHA */
    test_attention(12, 4, 1, 8, 0);   /* MQA */
    test_attention(20, 4, 2, 8, 0);   /* lm_attention takes its sgemm path */
    test_attention(70, 4, 2, 8, 40);  /* threaded, two row blocks */
    test_attention(130, 2, 1, 4, 30); /* three row blocks, a short last one */
    test_attention(5, 72, 8, 2, 0);   /* more heads than one chunk; kv head 7 spans two chunks */
    test_cross_entropy_small();
    test_cross_entropy_large();

    for (int i = 0; i < n_ops; i++) fprintf(stderr, "%-14s worst rel err %.2e\n", op_names[i], op_worst[i]);
    return check_result();
}
