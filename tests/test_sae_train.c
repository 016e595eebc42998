/* test_sae_train.c - lm_sae_train on lumen-tiny over TinyStories text: the MSE falls and the explained
 * variance passes 0.5 for a small TopK SAE; the saved (scale-folded) SAE reloads and reconstructs raw
 * activations as the scaled checkpoint does scaled ones (rescaled); a run resumed from a middle
 * checkpoint ends bit-identical to the uninterrupted one; rerunning a finished run writes nothing; other
 * options are refused. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "lumen/lumen.h"

static const char *tmpdir(void) {
    const char *t = getenv("LUMEN_TMP");
    if (!t) t = "/tmp";
    mkdir(t, 0777);
    return t;
}

static int read_all(const char *path, char **buf, size_t *n) { return lm_read_file(path, buf, n) == LM_OK; }

static int same_file(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int ok = read_all(a, &x, &nx) && read_all(b, &y, &ny) && nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return ok;
}

static void rm_rf(const char *dir) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

typedef struct grab {
    float *x;
    size_t d;
} grab;

static lm_status grab_hook(void *ud, const lm_hook_info *info, float *act) {
    grab *g = ud;
    memcpy(g->x, act, (size_t)info->n_seq * info->n_tok * g->d * sizeof(float));
    return LM_OK;
}

int main(void) {
    char abuf[1024];
    const char *text = check_asset("text/tinystories_train_head_197k.txt", abuf, sizeof abuf);
    const char *models = getenv("LUMEN_MODELS");
    char mpath[1024];
    snprintf(mpath, sizeof mpath, "%s/lumen-tiny", models ? models : "models");
    struct stat sb;
    if (!text || stat(mpath, &sb) != 0) {
        fprintf(stderr, "SKIP: %s or the text asset is absent\n", mpath);
        return 77;
    }
    lm_model *m = NULL;
    CHECKF(lm_model_load(mpath, &m) == LM_OK, "%s", lm_errmsg());
    if (!m || !m->tokenizer) return check_result();
    int32_t *ids = NULL;
    size_t n = 0;
    CHECKF(lm_tokenize_file(m->tokenizer, text, 1, 12000, &ids, &n) == LM_OK, "%s", lm_errmsg());
    const char *hook = "blocks.2.hook_resid_post";
    char dir_a[1024], dir_b[1024], path[1400], path_b[1400];
    snprintf(dir_a, sizeof dir_a, "%s/sae_train_a", tmpdir());
    snprintf(dir_b, sizeof dir_b, "%s/sae_train_b", tmpdir());
    rm_rf(dir_a);
    rm_rf(dir_b);

    lm_sae_train_opts o;
    memset(&o, 0, sizeof o);
    o.model = m;
    o.ids = ids;
    o.n_ids = n;
    o.hook = hook;
    o.model_name = "lumen-tiny";
    o.source_name = "tinystories";
    o.prepend_bos = 1;
    o.out_dir = dir_a;
    o.arch = LM_SAE_TOPK;
    o.d_sae = 256;
    o.k = 16;
    o.lr = 2e-3f;
    o.ctx = 64;
    o.fwd_batch = 8;
    o.batch = 256;
    o.buffer_mult = 8;
    o.steps = 80;
    o.log_every = 10;
    o.save_every = 40;
    o.seed = 7;
    lm_sae_train_result r;
    double t0 = lm_now();
    CHECKF(lm_sae_train(&o, &r) == LM_OK, "%s", lm_errmsg());
    fprintf(stderr, "  trained %llu steps in %.2f s: first mse %.3f, mse %.3f, ev %.3f, l0 %.1f, dead %zu, scale %.5f\n",
            (unsigned long long)r.steps_done, lm_now() - t0, r.first_mse, r.mse, r.ev, r.l0, r.n_dead, r.scale);
    CHECK(r.steps_done == 80 && r.resumed_from == -1 && !r.already_done);
    CHECKF(r.mse < 0.5 * r.first_mse, "mse %g, first %g", r.mse, r.first_mse);
    CHECKF(r.ev > 0.5, "ev %g", r.ev);
    CHECK(r.l0 <= 16.0 + 1e-9);

    /* the final SAE works on raw activations as the scaled checkpoint does on scaled ones */
    lm_sae *fin = NULL, *ck = NULL;
    CHECKF(lm_sae_load(dir_a, &fin) == LM_OK, "%s", lm_errmsg());
    snprintf(path, sizeof path, "%s/ckpt/step_00000080", dir_a);
    CHECKF(lm_sae_load(path, &ck) == LM_OK, "%s", lm_errmsg());
    if (fin && ck) {
        CHECK(fin->hook_name && !strcmp(fin->hook_name, hook));
        CHECK(fin->model_name && !strcmp(fin->model_name, "lumen-tiny"));
        CHECK(fin->context_size == 64 && fin->prepend_bos == 1 && fin->arch == LM_SAE_TOPK && fin->k == 16);
        size_t d = (size_t)m->cfg.dim, T = 64;
        float *x = malloc(T * d * 4), *xs = malloc(T * d * 4), *h1 = malloc(T * d * 4), *h2 = malloc(T * d * 4);
        lm_state *s = NULL;
        grab g = {x, d};
        CHECK(lm_state_new(m, 64, 64, &s) == LM_OK);
        CHECK(lm_state_add_hook(s, hook, grab_hook, &g) == LM_OK);
        CHECK(lm_forward(m, s, ids + 1000, (int)T, NULL, 0) == LM_OK);
        for (size_t i = 0; i < T * d; i++) xs[i] = (float)(x[i] * r.scale);
        CHECK(lm_sae_forward(fin, h1, NULL, x, T) == LM_OK);
        CHECK(lm_sae_forward(ck, h2, NULL, xs, T) == LM_OK);
        double num = 0, den = 0;
        for (size_t i = 0; i < T * d; i++) {
            double e = h1[i] - h2[i] / r.scale;
            num += e * e;
            den += (double)h1[i] * h1[i];
        }
        CHECKF(sqrt(num / den) < 1e-4, "relative difference %g", sqrt(num / den));
        lm_state_free(s);
        free(x);
        free(xs);
        free(h1);
        free(h2);
        float *sp = NULL;
        CHECKF(lm_sae_load_sparsity(dir_a, 256, &sp) == LM_OK, "%s", lm_errmsg());
        if (sp) CHECK(sp[0] <= 0 && sp[0] >= -10.5);
        free(sp);
    }
    lm_sae_free(fin);
    lm_sae_free(ck);

    /* rerunning the finished run writes nothing */
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir_a);
    struct stat s1, s2;
    CHECK(stat(path, &s1) == 0);
    CHECKF(lm_sae_train(&o, &r) == LM_OK, "%s", lm_errmsg());
    CHECK(r.already_done && r.resumed_from == 80);
    CHECK(stat(path, &s2) == 0 && s1.st_mtim.tv_sec == s2.st_mtim.tv_sec && s1.st_mtim.tv_nsec == s2.st_mtim.tv_nsec);

    /* kill and resume: B gets A's checkpoint of step 40 as if killed after it; it ends bit-identical */
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s/ckpt' && cp -r '%s/ckpt/step_00000040' '%s/ckpt/' && printf 'step_00000040\\n' > "
             "'%s/ckpt/latest' && head -n 4 '%s/sae_log.jsonl' > '%s/sae_log.jsonl'",
             dir_b, dir_a, dir_b, dir_b, dir_a, dir_b);
    CHECK(system(cmd) == 0);
    o.out_dir = dir_b;
    CHECKF(lm_sae_train(&o, &r) == LM_OK, "%s", lm_errmsg());
    CHECK(r.resumed_from == 40 && r.steps_done == 80);
    snprintf(path_b, sizeof path_b, "%s/sae_weights.safetensors", dir_b);
    CHECK(same_file(path, path_b));
    snprintf(path, sizeof path, "%s/sae_log.jsonl", dir_a);
    snprintf(path_b, sizeof path_b, "%s/sae_log.jsonl", dir_b);
    char *la = NULL, *lb = NULL;
    size_t na = 0, nb = 0;
    if (read_all(path, &la, &na) && read_all(path_b, &lb, &nb)) {
        /* same lines apart from the tokens_per_s field */
        int lines_a = 0, lines_b = 0;
        for (size_t i = 0; i < na; i++) lines_a += la[i] == '\n';
        for (size_t i = 0; i < nb; i++) lines_b += lb[i] == '\n';
        CHECKF(lines_a == 8 && lines_b == 8, "%d and %d log lines", lines_a, lines_b);
        const char *ma = strstr(la, "\"step\":80"), *mb = strstr(lb, "\"step\":80");
        const char *ea = ma ? strstr(ma, "tokens_per_s") : NULL, *eb = mb ? strstr(mb, "tokens_per_s") : NULL;
        CHECK(ea && eb && ea - ma == eb - mb && memcmp(ma, mb, (size_t)(ea - ma)) == 0);
    }
    free(la);
    free(lb);
    snprintf(path, sizeof path, "%s/sparsity.safetensors", dir_a);
    snprintf(path_b, sizeof path_b, "%s/sparsity.safetensors", dir_b);
    CHECK(same_file(path, path_b));

    /* other options are refused */
    o.d_sae = 128;
    CHECK(lm_sae_train(&o, &r) == LM_ERR_ARG);
    CHECK(strstr(lm_errmsg(), "other options") != NULL);

    rm_rf(dir_a);
    rm_rf(dir_b);
    free(ids);
    lm_model_free(m);
    return check_result();
}
