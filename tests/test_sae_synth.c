/* test_sae_synth.c - the SAE trainer recovers known features: activations are sparse nonnegative
 * combinations of a 2x overcomplete dictionary of random unit directions (plus a little noise),
 * made by a caller's row function (lm_sae_train_opts.rows_fn) and fed through the real trainer.
 * For ReLU+L1, TopK and JumpReLU, the saved decoder's rows must find the true directions: the mean,
 * over the true directions, of the best cosine with any decoder row exceeds 0.9, where the
 * untrained SAE scores far lower. Also: a run of the callback source resumed from a middle
 * checkpoint ends bit-identical, and its checkpoint stores the unserved buffer rows' positions
 * (8 bytes each), not the rows. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "lumen/lumen.h"

enum { D_IN = 32, N_DIR = 64, ACTIVE = 3 };

typedef struct synth {
    float dirs[N_DIR * D_IN]; /* the true features: unit rows */
    float noise;              /* std of the Gaussian noise per coordinate */
    uint64_t calls;
} synth;

/* Row pos: ACTIVE distinct directions with magnitudes uniform in [0.5, 1.5], from an rng seeded
 * by pos alone, so that a row depends only on its position (as resuming requires). */
static lm_status synth_rows(void *ud, uint64_t pos, float *dst, size_t n, size_t d) {
    synth *s = ud;
    s->calls++;
    if (d != D_IN) return lm_fail(LM_ERR_ARG, "synth: width %zu", d);
    for (size_t r = 0; r < n; r++) {
        lm_rng rng;
        lm_rng_seed(&rng, (pos + r) * 0x9e3779b97f4a7c15ull + 12345);
        float *x = dst + r * d;
        memset(x, 0, d * sizeof(float));
        int pick[ACTIVE];
        for (int a = 0; a < ACTIVE; a++) {
            int j, again;
            do {
                j = (int)(lm_rng_u32(&rng) % N_DIR);
                again = 0;
                for (int b = 0; b < a; b++) again |= pick[b] == j;
            } while (again);
            pick[a] = j;
            float mag = 0.5f + lm_rng_f32(&rng);
            for (size_t c = 0; c < d; c++) x[c] += mag * s->dirs[(size_t)j * D_IN + c];
        }
        for (size_t c = 0; c < d; c++) x[c] += s->noise * lm_rng_normal(&rng);
    }
    return LM_OK;
}

/* mean over the true directions of max_i cos(direction, W_dec row i) */
static double mean_max_cos(const synth *s, const lm_sae *sae) {
    double sum = 0;
    for (size_t j = 0; j < N_DIR; j++) {
        double best = -1;
        for (size_t i = 0; i < sae->d_sae; i++) {
            const float *w = sae->W_dec + i * sae->d_in;
            double dot = 0, nn = 0;
            for (size_t c = 0; c < D_IN; c++) {
                dot += (double)w[c] * s->dirs[j * D_IN + c];
                nn += (double)w[c] * w[c];
            }
            double cs = nn > 0 ? dot / sqrt(nn) : 0;
            if (cs > best) best = cs;
        }
        sum += best;
    }
    return sum / N_DIR;
}

static void rm_rf(const char *dir) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

static int same_file(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int ok = lm_read_file(a, &x, &nx) == LM_OK && lm_read_file(b, &y, &ny) == LM_OK && nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return ok;
}

static void base_opts(lm_sae_train_opts *o, synth *s, const char *dir) {
    memset(o, 0, sizeof *o);
    o->rows_fn = synth_rows;
    o->rows_ud = s;
    o->d_in = D_IN;
    o->hook = "synthetic";
    o->out_dir = dir;
    o->d_sae = 2 * N_DIR;
    o->batch = 256;
    o->buffer_mult = 8;
    o->log_every = 100;
    o->seed = 3;
}

static void train_and_score(synth *s, const char *dir, lm_sae_arch arch, double *score, double *untrained) {
    lm_sae_train_opts o;
    base_opts(&o, s, dir);
    o.arch = arch;
    if (arch == LM_SAE_TOPK) {
        o.k = ACTIVE;
        o.lr = 6e-3f;
        o.steps = 400;
    } else if (arch == LM_SAE_JUMPRELU) {
        /* thresholds start near the scale of the pre-activations here (inputs have E||x||^2 =
         * d_in), with a kernel as wide: log-threshold Adam moves them by ~lr per step */
        o.l1_coeff = 1.0f;
        o.lr = 8e-3f;
        o.steps = 400;
        o.bandwidth = 0.1f;
        o.init_threshold = 0.1f;
    } else {
        o.l1_coeff = 3.0f;
        o.lr = 6e-3f;
        o.steps = 500;
    }
    rm_rf(dir);
    lm_sae_train_result r;
    double t0 = lm_now();
    CHECKF(lm_sae_train(&o, &r) == LM_OK, "%s", lm_errmsg());
    double secs = lm_now() - t0;
    lm_sae *sae = NULL, *init = NULL;
    CHECKF(lm_sae_load(dir, &sae) == LM_OK, "%s", lm_errmsg());
    lm_sae_init in = {arch == LM_SAE_TOPK ? arch : LM_SAE_RELU, D_IN, 2 * N_DIR, o.k, 1, 0.1f, o.seed};
    CHECK(lm_sae_new(&in, &init) == LM_OK);
    *score = sae ? mean_max_cos(s, sae) : 0;
    if (sae && arch == LM_SAE_JUMPRELU) {
        size_t pos = 0;
        for (size_t i = 0; i < sae->d_sae; i++) pos += sae->threshold[i] > 0;
        CHECK(sae->arch == LM_SAE_JUMPRELU && pos == sae->d_sae);
    }
    *untrained = init ? mean_max_cos(s, init) : 1;
    fprintf(stderr, "  %-8s: %llu steps in %.2f s, ev %.3f, l0 %.2f, dead %zu: mean max cosine %.4f (untrained %.4f)\n",
            arch == LM_SAE_RELU ? "relu" : lm_sae_arch_name(arch), (unsigned long long)r.steps_done, secs, r.ev, r.l0,
            r.n_dead, *score, *untrained);
    lm_sae_free(sae);
    lm_sae_free(init);
    rm_rf(dir);
}

int main(void) {
    static synth s;
    lm_rng rng;
    lm_rng_seed(&rng, 2024);
    for (size_t j = 0; j < N_DIR; j++) {
        double nn = 0;
        float *v = s.dirs + j * D_IN;
        for (size_t c = 0; c < D_IN; c++) {
            v[c] = lm_rng_normal(&rng);
            nn += (double)v[c] * v[c];
        }
        for (size_t c = 0; c < D_IN; c++) v[c] = (float)(v[c] / sqrt(nn));
    }
    s.noise = 0.01f;
    char dir[1024], dir_b[1024], path[1400], path_b[1400];
    snprintf(dir, sizeof dir, "%s/sae_synth_a", check_tmpdir());
    snprintf(dir_b, sizeof dir_b, "%s/sae_synth_b", check_tmpdir());

    double relu, relu0, topk, topk0, jump, jump0;
    train_and_score(&s, dir, LM_SAE_RELU, &relu, &relu0);
    train_and_score(&s, dir, LM_SAE_TOPK, &topk, &topk0);
    train_and_score(&s, dir, LM_SAE_JUMPRELU, &jump, &jump0);
    CHECKF(relu > 0.9, "relu mean max cosine %.4f", relu);
    CHECKF(topk > 0.9, "topk mean max cosine %.4f", topk);
    CHECKF(jump > 0.9, "jumprelu mean max cosine %.4f", jump);
    CHECKF(relu0 < 0.75 && topk0 < 0.75 && jump0 < 0.75, "untrained %.4f %.4f %.4f", relu0, topk0, jump0);

    /* resume with the callback source: B starts from A's checkpoint of step 12 */
    lm_sae_train_opts o;
    base_opts(&o, &s, dir);
    o.arch = LM_SAE_RELU;
    o.batch = 64;
    o.buffer_mult = 4;
    o.steps = 25;
    o.save_every = 12;
    o.lr = 1e-3f;
    rm_rf(dir);
    rm_rf(dir_b);
    lm_sae_train_result r;
    CHECKF(lm_sae_train(&o, &r) == LM_OK, "%s", lm_errmsg());
    /* buffer of 4 * 64 rows, refilled by halves of 2 batches: after step 12 the front half is
     * served, so the 128 rows of the back half are the unserved ones */
    snprintf(path, sizeof path, "%s/ckpt/step_00000012/optimizer.safetensors", dir);
    lm_safetensors *os = NULL;
    CHECKF(lm_safetensors_open(path, &os) == LM_OK, "%s", lm_errmsg());
    if (os) {
        const lm_st_tensor *bp = lm_safetensors_find(os, "buffer_pos");
        CHECK(bp && bp->dtype == LM_ST_U64 && bp->n_elements == 128);
        CHECK(!lm_safetensors_find(os, "buffer") && !lm_safetensors_find(os, "buffer_group"));
    }
    lm_safetensors_close(os);
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s/ckpt' && cp -r '%s/ckpt/step_00000012' '%s/ckpt/' && printf 'step_00000012\\n' > "
             "'%s/ckpt/latest'",
             dir_b, dir, dir_b, dir_b);
    CHECK(system(cmd) == 0);
    o.out_dir = dir_b;
    s.calls = 0;
    CHECKF(lm_sae_train(&o, &r) == LM_OK, "%s", lm_errmsg());
    CHECK(r.resumed_from == 12 && r.steps_done == 25 && s.calls > 0);
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
    snprintf(path_b, sizeof path_b, "%s/sae_weights.safetensors", dir_b);
    CHECK(same_file(path, path_b));
    snprintf(path, sizeof path, "%s/sparsity.safetensors", dir);
    snprintf(path_b, sizeof path_b, "%s/sparsity.safetensors", dir_b);
    CHECK(same_file(path, path_b));

    /* a source that fails stops the run with its message and writes no SAE */
    rm_rf(dir_b);
    o.d_in = 16;
    CHECK(lm_sae_train(&o, &r) == LM_ERR_ARG && strstr(lm_errmsg(), "synth: width 16"));
    snprintf(path_b, sizeof path_b, "%s/sae_weights.safetensors", dir_b);
    struct stat sb;
    CHECK(stat(path_b, &sb) != 0);
    o.d_in = 0;
    CHECK(lm_sae_train(&o, &r) == LM_ERR_ARG && strstr(lm_errmsg(), "d_in"));
    o.d_in = D_IN;
    o.acts_dir = dir;
    CHECK(lm_sae_train(&o, &r) == LM_ERR_ARG && strstr(lm_errmsg(), "not both"));

    rm_rf(dir);
    rm_rf(dir_b);
    return check_result();
}
