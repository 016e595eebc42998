/* test_sae_acts.c - lm_sae_train on activation shards (the layout lm_harvest writes): a run over
 * shards of uneven length, wrapping around the data three times, gives byte for byte the SAE of
 * the same rows handed over by a row function (so the shards are streamed in order, across shard
 * boundaries, and wrap at the end); F16 shards likewise give the SAE of the F16-rounded rows; the
 * saved cfg.json names the manifest's model and window. Broken inputs (hook not harvested,
 * incomplete or inconsistent manifest, a shard with the wrong dtype, shape or tensor, a missing
 * shard, a width that disagrees with d_in) fail with a message naming the file and leave no SAE. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "lumen/lumen.h"

enum { D = 16, ROWS = 1000, SHARD = 300, N_SHARDS = 4 };

static float data[ROWS * D];

static void rm_rf(const char *dir) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

static float f16_round(float x) { return lm_f16_to_f32(lm_f32_to_f16(x)); }

typedef struct src {
    int f16;
} src;

/* the same rows as the shards, by position, wrapping at ROWS */
static lm_status rows_of_data(void *ud, uint64_t pos, float *dst, size_t n, size_t d) {
    const src *s = ud;
    for (size_t r = 0; r < n; r++)
        for (size_t c = 0; c < d; c++) {
            float v = data[((pos + r) % ROWS) * D + c];
            dst[r * d + c] = s->f16 ? f16_round(v) : v;
        }
    return LM_OK;
}

typedef enum flaw { OK_F32, OK_F16, BAD_DTYPE, BAD_SHAPE, NO_TENSOR, NO_SHARD } flaw;

static const char *MANIFEST =
    "{\"format\": \"lumen-activations\", \"model\": \"synthetic-model\", \"source\": \"synthetic.txt\", "
    "\"hooks\": [\"h.a\", \"h.b\"], \"ctx\": 50, \"n_tokens\": %d, \"shard_tokens\": %d, \"d_model\": %d, "
    "\"shards_done\": %d, \"shards_total\": %d, \"complete\": %s}\n";

/* Writes dir with manifest.json and N_SHARDS shards of "h.a" (the data), "h.b" and "tokens";
 * flaw spoils shard 2. */
static void write_acts(const char *dir, flaw fl, int shards_done, int shards_total) {
    rm_rf(dir);
    mkdir(dir, 0777);
    char path[1200], text[1024];
    snprintf(text, sizeof text, MANIFEST, ROWS, SHARD, D, shards_done, shards_total,
             shards_done == shards_total ? "true" : "false");
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    CHECK(lm_write_file_atomic(path, text, strlen(text)) == LM_OK);
    uint16_t *h16 = malloc(SHARD * D * sizeof *h16);
    float *neg = malloc(SHARD * D * sizeof *neg);
    int32_t *tok = calloc(SHARD * D, sizeof *tok);
    for (int k = 0; k < N_SHARDS; k++) {
        size_t start = (size_t)k * SHARD, len = ROWS - start < SHARD ? ROWS - start : SHARD;
        const float *a = data + start * D;
        for (size_t i = 0; i < len * D; i++) {
            h16[i] = lm_f32_to_f16(a[i]);
            neg[i] = -a[i];
        }
        lm_st_spec sp[3] = {{"h.a", LM_ST_F32, 2, {len, D}, a},
                            {"h.b", LM_ST_F32, 2, {len, D}, neg},
                            {"tokens", LM_ST_I32, 1, {len}, tok}};
        if (fl == OK_F16) sp[0] = (lm_st_spec){"h.a", LM_ST_F16, 2, {len, D}, h16};
        size_t n = 3;
        if (k == 2) {
            if (fl == BAD_DTYPE) sp[0] = (lm_st_spec){"h.a", LM_ST_I32, 2, {len, D}, tok};
            if (fl == BAD_SHAPE) sp[0] = (lm_st_spec){"h.a", LM_ST_F32, 2, {len * D / 8, 8}, a};
            if (fl == NO_TENSOR) sp[0] = sp[--n];
            if (fl == NO_SHARD) continue;
        }
        snprintf(path, sizeof path, "%s/shard_%05d.safetensors", dir, k);
        CHECK(lm_safetensors_write(path, sp, n, NULL, 0) == LM_OK);
    }
    free(h16);
    free(neg);
    free(tok);
}

static void opts(lm_sae_train_opts *o, const char *out) {
    memset(o, 0, sizeof *o);
    o->hook = "h.a";
    o->out_dir = out;
    o->arch = LM_SAE_TOPK;
    o->d_sae = 32;
    o->k = 4;
    o->lr = 3e-3f;
    o->batch = 100;
    o->buffer_mult = 4;
    o->steps = 30; /* 3000 rows served: the data three times */
    o->seed = 9;
}

static int same_file(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int ok = lm_read_file(a, &x, &nx) == LM_OK && lm_read_file(b, &y, &ny) == LM_OK && nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return ok;
}

/* trains from acts (out_a) and from the row function (out_b); the two SAEs must be identical */
static void compare(const char *acts, const char *out_a, const char *out_b, int f16) {
    lm_sae_train_opts o;
    lm_sae_train_result r;
    opts(&o, out_a);
    o.acts_dir = acts;
    rm_rf(out_a);
    CHECKF(lm_sae_train(&o, &r) == LM_OK, "%s", lm_errmsg());
    double ev = r.ev;
    src s = {f16};
    opts(&o, out_b);
    o.rows_fn = rows_of_data;
    o.rows_ud = &s;
    o.d_in = D;
    o.ctx = 50;
    rm_rf(out_b);
    CHECKF(lm_sae_train(&o, &r) == LM_OK, "%s", lm_errmsg());
    char pa[1200], pb[1200];
    snprintf(pa, sizeof pa, "%s/sae_weights.safetensors", out_a);
    snprintf(pb, sizeof pb, "%s/sae_weights.safetensors", out_b);
    CHECKF(same_file(pa, pb), "%s shards and the same rows from a function give different SAEs", f16 ? "F16" : "F32");
    snprintf(pa, sizeof pa, "%s/sparsity.safetensors", out_a);
    snprintf(pb, sizeof pb, "%s/sparsity.safetensors", out_b);
    CHECK(same_file(pa, pb));
    fprintf(stderr, "  %s shards: %llu steps, explained variance %.3f (the row function's run: %.3f)\n",
            f16 ? "F16" : "F32", (unsigned long long)r.steps_done, ev, r.ev);
}

static void expect_fail(const char *acts, const char *out, const char *what, const char *needle, size_t d_in) {
    lm_sae_train_opts o;
    lm_sae_train_result r;
    opts(&o, out);
    o.acts_dir = acts;
    o.d_in = d_in;
    rm_rf(out);
    lm_status st = lm_sae_train(&o, &r);
    CHECKF(st != LM_OK && strstr(lm_errmsg(), needle), "%s: status %d, message '%s' (want '%s')", what, (int)st,
           lm_errmsg(), needle);
    char p[1200];
    struct stat sb;
    snprintf(p, sizeof p, "%s/sae_weights.safetensors", out);
    CHECKF(stat(p, &sb) != 0, "%s: an SAE was written", what);
}

int main(void) {
    lm_rng rng;
    lm_rng_seed(&rng, 77);
    /* rows with some structure (a few strong directions) so the SAE has something to learn */
    float dirs[6 * D];
    for (size_t i = 0; i < 6 * D; i++) dirs[i] = lm_rng_normal(&rng);
    for (size_t r = 0; r < ROWS; r++)
        for (size_t c = 0; c < D; c++) {
            size_t j = r % 6, j2 = (r * 7 + 3) % 6;
            data[r * D + c] =
                (1.0f + lm_rng_f32(&rng)) * dirs[j * D + c] + 0.5f * dirs[j2 * D + c] + 0.05f * lm_rng_normal(&rng);
        }
    char acts[1024], out_a[1024], out_b[1024], bad[1024];
    snprintf(acts, sizeof acts, "%s/sae_acts_shards", check_tmpdir());
    snprintf(bad, sizeof bad, "%s/sae_acts_bad", check_tmpdir());
    snprintf(out_a, sizeof out_a, "%s/sae_acts_a", check_tmpdir());
    snprintf(out_b, sizeof out_b, "%s/sae_acts_b", check_tmpdir());

    write_acts(acts, OK_F32, N_SHARDS, N_SHARDS);
    compare(acts, out_a, out_b, 0);
    lm_sae *sae = NULL;
    CHECKF(lm_sae_load(out_a, &sae) == LM_OK, "%s", lm_errmsg());
    if (sae)
        CHECK(sae->model_name && !strcmp(sae->model_name, "synthetic-model") && sae->context_size == 50 &&
              sae->hook_name && !strcmp(sae->hook_name, "h.a") && sae->d_in == D);
    lm_sae_free(sae);
    write_acts(acts, OK_F16, N_SHARDS, N_SHARDS);
    compare(acts, out_a, out_b, 1);

    write_acts(acts, OK_F32, N_SHARDS, N_SHARDS);
    lm_sae_train_opts o;
    lm_sae_train_result r;
    opts(&o, out_a);
    o.acts_dir = acts;
    o.hook = "h.c";
    rm_rf(out_a);
    CHECK(lm_sae_train(&o, &r) == LM_ERR_ARG && strstr(lm_errmsg(), "manifest.json: hook 'h.c' was not harvested") &&
          strstr(lm_errmsg(), "h.a, h.b"));
    expect_fail(acts, out_a, "width", "16 wide, not d_in 12", 12);
    write_acts(bad, OK_F32, 3, N_SHARDS);
    expect_fail(bad, out_a, "incomplete", "incomplete (3 of 4 shards)", 0);
    write_acts(bad, OK_F32, 5, 5);
    expect_fail(bad, out_a, "shard count", "manifest.json: inconsistent sizes", 0);
    write_acts(bad, BAD_DTYPE, N_SHARDS, N_SHARDS);
    expect_fail(bad, out_a, "dtype", "shard_00002.safetensors: tensor 'h.a' has dtype I32", 0);
    write_acts(bad, BAD_SHAPE, N_SHARDS, N_SHARDS);
    expect_fail(bad, out_a, "shape", "shard_00002.safetensors: tensor 'h.a' has shape [600, 8]", 0);
    write_acts(bad, NO_TENSOR, N_SHARDS, N_SHARDS);
    expect_fail(bad, out_a, "tensor", "shard_00002.safetensors: no tensor 'h.a'", 0);
    write_acts(bad, NO_SHARD, N_SHARDS, N_SHARDS);
    expect_fail(bad, out_a, "shard file", "shard_00002.safetensors", 0);
    char p[1200];
    snprintf(p, sizeof p, "%s/manifest.json", bad);
    CHECK(lm_write_file_atomic(p, "{\"format\": ", 11) == LM_OK);
    expect_fail(bad, out_a, "manifest", "manifest.json", 0);

    rm_rf(acts);
    rm_rf(bad);
    rm_rf(out_a);
    rm_rf(out_b);
    return check_result();
}
