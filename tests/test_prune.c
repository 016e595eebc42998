/* test_prune.c - block removal: the choice of the most linear blocks, the model view without them
 * (its logits equal a forward that carries the residual straight past the removed block), saving
 * and loading the smaller model, and `lumen prune --json` with --remove and --linearize. */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "lumen/lumen.h"

static void test_choose(void) {
    double lin[5] = {0.5, NAN, 0.9, 0.9, 0.1};
    lm_linearity_result r = {0};
    r.n_layers = 5;
    r.linearity = lin;
    int b[5] = {-1, -1, -1, -1, -1};
    CHECK(lm_prune_choose(&r, 4, b) == LM_OK);
    CHECKF(b[0] == 2 && b[1] == 3 && b[2] == 0 && b[3] == 4, "order %d %d %d %d", b[0], b[1], b[2], b[3]);
    CHECK(lm_prune_choose(&r, 0, b) == LM_OK);
    CHECK(lm_prune_choose(&r, 5, b) == LM_ERR_ARG);
    CHECK(lm_prune_choose(&r, -1, b) == LM_ERR_ARG);
}

/* The block skipped by hooks: the residual entering block `skip` replaces the one leaving it. */
typedef struct bypass {
    float *saved;
    size_t n;
} bypass;

static lm_status save_pre(void *ud, const lm_hook_info *info, float *act) {
    bypass *b = ud;
    b->n = (size_t)info->n_seq * (size_t)info->n_tok * (size_t)info->d;
    memcpy(b->saved, act, b->n * sizeof(float));
    return LM_OK;
}

static lm_status restore_post(void *ud, const lm_hook_info *info, float *act) {
    bypass *b = ud;
    if (b->n != (size_t)info->n_seq * (size_t)info->n_tok * (size_t)info->d) return lm_fail(LM_ERR_ARG, "bypass: size");
    memcpy(act, b->saved, b->n * sizeof(float));
    return LM_OK;
}

static float *run_logits(const lm_model *m, const int32_t *ids, int n, int skip) {
    size_t V = (size_t)m->cfg.vocab_size;
    float *lg = malloc((size_t)n * V * sizeof(float));
    bypass b = {malloc((size_t)n * (size_t)m->cfg.dim * sizeof(float)), 0};
    lm_state *s = NULL;
    CHECK(lm_state_new(m, n, n, &s) == LM_OK);
    if (skip >= 0) {
        char pre[64], post[64];
        snprintf(pre, sizeof pre, "blocks.%d.hook_resid_pre", skip);
        snprintf(post, sizeof post, "blocks.%d.hook_resid_post", skip);
        CHECK(lm_state_add_hook(s, pre, save_pre, &b) == LM_OK);
        CHECK(lm_state_add_hook(s, post, restore_post, &b) == LM_OK);
    }
    CHECKF(s && lm_forward(m, s, ids, n, lg, 1) == LM_OK, "%s", lm_errmsg());
    lm_state_free(s);
    free(b.saved);
    return lg;
}

static lm_model *load_tiny(char *dir, size_t cap) {
    const char *md = getenv("LUMEN_MODELS");
    snprintf(dir, cap, "%s/lumen-tiny", md ? md : "models");
    lm_model *m = NULL;
    if (lm_model_load(dir, &m) != LM_OK) {
        CHECKF(0, "%s", lm_errmsg());
        return NULL;
    }
    return m;
}

static void test_view_and_save(void) {
    char dir[4096];
    lm_model *m = load_tiny(dir, sizeof dir);
    if (!m) return;
    const int L = m->cfg.n_layers, n = 40;
    const size_t V = (size_t)m->cfg.vocab_size;
    CHECK(L == 4);
    int32_t ids[40];
    for (int i = 0; i < n; i++) ids[i] = (int32_t)((i * 131 + 7) % (int)V);
    for (int skip = 0; skip < L; skip++) {
        lm_model *v = NULL;
        CHECKF(lm_model_drop_blocks(m, &skip, 1, &v) == LM_OK, "%s", lm_errmsg());
        if (!v) continue;
        CHECK(v->cfg.n_layers == L - 1 && m->cfg.n_layers == L);
        CHECK(v->n_params < m->n_params);
        for (int i = 0, j = 0; i < L; i++)
            if (i != skip) CHECK(memcmp(&v->layers[j++], &m->layers[i], sizeof(lm_layer)) == 0);
        float *want = run_logits(m, ids, n, skip), *got = run_logits(v, ids, n, -1);
        CHECKF(memcmp(want, got, (size_t)n * V * sizeof(float)) == 0, "block %d: the view differs from the bypass", skip);
        if (skip == 1) {
            /* saved, it loads back as an ordinary 3-block model with the same logits */
            char out[4096];
            snprintf(out, sizeof out, "%s/prune_view_%d", check_tmpdir(), (int)getpid());
            CHECKF(lm_model_save_hf(v, m->tokenizer, out) == LM_OK, "%s", lm_errmsg());
            lm_model *back = NULL;
            CHECKF(lm_model_load(out, &back) == LM_OK, "%s", lm_errmsg());
            if (back) {
                CHECK(back->cfg.n_layers == L - 1 && back->tokenizer != NULL);
                CHECK(back->n_params == v->n_params);
                float *lb = run_logits(back, ids, n, -1);
                double worst = 0;
                for (size_t i = 0; i < (size_t)n * V; i++)
                    worst = fmax(worst, fabs((double)lb[i] - got[i]) / fmax(1, fabs((double)got[i])));
                CHECKF(worst == 0, "reloaded model: rel err %g", worst);
                free(lb);
            }
            lm_model_free(back);
            char p[4200];
            const char *files[] = {"config.json", "model.safetensors", "tokenizer.json"};
            for (int f = 0; f < 3; f++) {
                snprintf(p, sizeof p, "%s/%s", out, files[f]);
                unlink(p);
            }
            rmdir(out);
        }
        free(want);
        free(got);
        lm_model_view_free(v);
    }
    /* two at once, in any order */
    int two[2] = {3, 0};
    lm_model *v = NULL;
    CHECK(lm_model_drop_blocks(m, two, 2, &v) == LM_OK);
    if (v) CHECK(v->cfg.n_layers == 2 && memcmp(&v->layers[0], &m->layers[1], sizeof(lm_layer)) == 0 &&
                 memcmp(&v->layers[1], &m->layers[2], sizeof(lm_layer)) == 0);
    lm_model_view_free(v);
    /* errors are values */
    int dup[2] = {1, 1}, oob = 4, all[4] = {0, 1, 2, 3};
    v = NULL;
    CHECK(lm_model_drop_blocks(m, dup, 2, &v) == LM_ERR_ARG && v == NULL);
    CHECK(lm_model_drop_blocks(m, &oob, 1, &v) == LM_ERR_ARG && v == NULL);
    CHECK(lm_model_drop_blocks(m, all, 4, &v) == LM_ERR_ARG && v == NULL);
    lm_model_view_free(NULL);
    lm_model_free(m);
}

static void rm_dir(const char *dir) {
    char p[4200];
    const char *files[] = {"config.json", "model.safetensors", "tokenizer.json"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

static int run(const char *cmd) {
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void test_cli(void) {
    const char *bin = getenv("LUMEN_BIN");
    if (!bin) {
        fprintf(stderr, "SKIP: CLI check (no LUMEN_BIN)\n");
        return;
    }
    char dir[1024], text[1024], out[1024], cmd[8192];
    lm_model *m = load_tiny(dir, sizeof dir);
    if (!m || !m->tokenizer) {
        lm_model_free(m);
        return;
    }
    snprintf(text, sizeof text, "%s/prune_text_%d.txt", check_tmpdir(), (int)getpid());
    snprintf(out, sizeof out, "%s/prune_cli_%d", check_tmpdir(), (int)getpid());
    FILE *f = fopen(text, "w");
    for (int i = 0; f && i < 14; i++)
        fputs("If today is Monday, then in three days it will be Thursday.\nCounting seven months forward from "
              "November gives June.\nSaturday plus four days is Wednesday.\n",
              f);
    if (f) fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' --remove 1 --calib '%s' --eval '%s' --tokens 400 --ctx 64 --threads 2 "
                              "-o '%s' --json 2>/dev/null",
             bin, dir, text, text, out);
    FILE *p = popen(cmd, "r");
    static char buf[1 << 16];
    size_t len = p ? fread(buf, 1, sizeof buf - 1, p) : 0;
    buf[len] = 0;
    int rc = p ? pclose(p) : -1;
    CHECKF(rc == 0, "%s exited with %d", cmd, rc);
    json_error_t jerr;
    json_t *j = json_loads(buf, 0, &jerr);
    CHECKF(j != NULL, "not JSON: %.300s", buf);
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(lm_tokenize_file(m->tokenizer, text, 1, 400, &ids, &n) == LM_OK);
    if (j && ids) {
        CHECK(json_integer_value(json_object_get(j, "layers")) == 4);
        CHECK(json_integer_value(json_object_get(j, "layers_after")) == 3);
        json_t *rem = json_object_get(j, "removed");
        CHECK(json_array_size(rem) == 1);
        /* the removed block is the profile's most linear one */
        lm_linearity_opts o = {64, 4, 1, -1, 3, NULL, NULL, NULL, NULL};
        lm_linearity_result r;
        CHECK(lm_linearity_profile(m, ids, n, &o, &r) == LM_OK);
        int best = 0;
        for (int i = 1; r.linearity && i < r.n_layers; i++)
            if (r.linearity[i] > r.linearity[best]) best = i;
        CHECKF(json_integer_value(json_array_get(rem, 0)) == best, "removed %d, most linear %d",
               (int)json_integer_value(json_array_get(rem, 0)), best);
        lm_linearity_result_free(&r);
        /* perplexity before: the original's; after: the saved model's */
        lm_eval_result e0, e1;
        CHECK(lm_eval_ce(m, ids, n, 64, 4, NULL, NULL, &e0) == LM_OK);
        lm_model *back = NULL;
        CHECKF(lm_model_load(out, &back) == LM_OK, "%s", lm_errmsg());
        if (back) {
            CHECK(back->cfg.n_layers == 3);
            CHECK(lm_eval_ce(back, ids, n, 64, 4, NULL, NULL, &e1) == LM_OK);
            json_t *ev = json_object_get(j, "eval");
            double b = json_real_value(json_object_get(json_object_get(ev, "before"), "perplexity"));
            double a = json_real_value(json_object_get(json_object_get(ev, "after"), "perplexity"));
            CHECKF(b == e0.perplexity && a == e1.perplexity, "before %g vs %g, after %g vs %g", b, e0.perplexity, a,
                   e1.perplexity);
        }
        lm_model_free(back);
    }
    free(ids);
    json_decref(j);
    /* the text report; usage errors exit 2, bad requests 1 */
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' --remove 2 --calib '%s' --tokens 400 --ctx 64 -o '%s' 2>/dev/null",
             bin, dir, text, out);
    p = popen(cmd, "r");
    len = p ? fread(buf, 1, sizeof buf - 1, p) : 0;
    buf[len] = 0;
    rc = p ? pclose(p) : -1;
    CHECKF(rc == 0 && strstr(buf, "removed 2 block(s)") && strstr(buf, "(2 blocks)"), "text output: %.300s", buf);
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' --remove 1 --linearize 1 --calib '%s' -o '%s' 2>/dev/null", bin, dir,
             text, out);
    CHECK(run(cmd) == 2);
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' --remove 1 --distill-steps 5 --calib '%s' -o '%s' 2>/dev/null", bin,
             dir, text, out);
    CHECK(run(cmd) == 2);
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' --linearize 0 --calib '%s' -o '%s' 2>/dev/null", bin, dir, text, out);
    CHECK(run(cmd) == 2);
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' --remove 1 -o '%s' 2>/dev/null", bin, dir, out);
    CHECK(run(cmd) == 2);
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' --remove 4 --calib '%s' -o '%s' 2>/dev/null", bin, dir, text, out);
    CHECK(run(cmd) == 1);
    rm_dir(out);
    unlink(text);
    lm_model_free(m);
}

/* Runs cmd (stderr included) and returns its exit status and output. */
static int capture(const char *cmd, char *buf, size_t cap) {
    FILE *p = popen(cmd, "r");
    size_t len = p ? fread(buf, 1, cap - 1, p) : 0;
    buf[len] = 0;
    int rc = p ? pclose(p) : -1;
    return rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* `lumen prune --linearize` against the library, and its refusals. */
static void test_cli_linearize(void) {
    const char *bin = getenv("LUMEN_BIN");
    if (!bin) {
        fprintf(stderr, "SKIP: CLI check (no LUMEN_BIN)\n");
        return;
    }
    char dir[1024], calib[1200], heldout[1200], out[1024], cmd[8192];
    static char buf[1 << 16];
    lm_model *m = load_tiny(dir, sizeof dir);
    if (!m || !m->tokenizer) {
        lm_model_free(m);
        return;
    }
    snprintf(calib, sizeof calib, "%s/../../data/calendar_train.txt", dir);
    snprintf(heldout, sizeof heldout, "%s/../../data/calendar_heldout.txt", dir);
    snprintf(out, sizeof out, "%s/prune_lin_%d", check_tmpdir(), (int)getpid());
    snprintf(cmd, sizeof cmd,
             "'%s' prune '%s' --linearize 1 --distill-steps 10 --calib '%s' --eval '%s' --tokens 600 --ctx 64 "
             "--threads 2 -o '%s' --json 2>/dev/null",
             bin, dir, calib, heldout, out);
    int rc = capture(cmd, buf, sizeof buf);
    CHECKF(rc == 0, "%s exited with %d", cmd, rc);
    json_error_t jerr;
    json_t *j = json_loads(buf, 0, &jerr);
    CHECKF(j != NULL, "not JSON: %.300s", buf);
    int32_t *ids = NULL, *ev = NULL;
    size_t n = 0, ne = 0;
    CHECK(lm_tokenize_file(m->tokenizer, calib, 1, 600, &ids, &n) == LM_OK);
    CHECK(lm_tokenize_file(m->tokenizer, heldout, 1, 600, &ev, &ne) == LM_OK);
    if (j && ids && ev) {
        CHECK(!strcmp(json_string_value(json_object_get(j, "mode")), "linearize"));
        CHECK(json_integer_value(json_object_get(j, "layers_after")) == 4);
        json_t *lin = json_object_get(j, "linearized"), *fit = json_array_get(json_object_get(j, "fits"), 0);
        lm_linearity_opts o = {64, 4, 1, -1, 3, NULL, NULL, NULL, NULL};
        lm_linearity_result r;
        int best = -1;
        CHECK(lm_linearity_profile(m, ids, n, &o, &r) == LM_OK && lm_prune_choose(&r, 1, &best) == LM_OK);
        lm_linearity_result_free(&r);
        CHECKF(json_array_size(lin) == 1 && json_integer_value(json_array_get(lin, 0)) == best, "linearized %d, most "
               "linear %d", (int)json_integer_value(json_array_get(lin, 0)), best);
        CHECK(json_integer_value(json_object_get(fit, "layer")) == best);
        CHECK(json_integer_value(json_object_get(fit, "rows")) == (json_int_t)n);
        CHECK(json_object_get(json_object_get(fit, "distill"), "mse_after") != NULL);
        /* the library's fit of the same rows, and the saved model's perplexity */
        lm_linearize_opts lo = {64, 4, 10, 256, 1e-4, 1, NULL, NULL};
        lm_linearize_info li;
        lm_model *v = NULL, *back = NULL;
        CHECK(lm_linearize(m, ids, n, &best, 1, &lo, &v, &li) == LM_OK);
        CHECK(json_real_value(json_object_get(fit, "mse")) == li.fit.mse);
        CHECKF(lm_model_load(out, &back) == LM_OK, "%s", lm_errmsg());
        if (v && back) {
            CHECK(lm_model_linear_count(back) == 1 && lm_layer_is_linear(&back->layers[best]));
            CHECK(memcmp(back->layers[best].lin.data, v->layers[best].lin.data,
                         (size_t)m->cfg.dim * (size_t)m->cfg.dim * sizeof(float)) == 0);
            lm_eval_result e0, e1;
            CHECK(lm_eval_ce(m, ev, ne, 64, 4, NULL, NULL, &e0) == LM_OK);
            CHECK(lm_eval_ce(back, ev, ne, 64, 4, NULL, NULL, &e1) == LM_OK);
            json_t *e = json_object_get(j, "eval");
            double b = json_real_value(json_object_get(json_object_get(e, "before"), "perplexity"));
            double a = json_real_value(json_object_get(json_object_get(e, "after"), "perplexity"));
            CHECKF(b == e0.perplexity && a == e1.perplexity, "before %g vs %g, after %g vs %g", b, e0.perplexity, a,
                   e1.perplexity);
        }
        lm_model_free(back);
        lm_model_view_free(v);
    }
    json_decref(j);
    free(ids);
    free(ev);
    /* lumen info shows the linear block */
    snprintf(cmd, sizeof cmd, "'%s' info '%s'", bin, out);
    CHECK(capture(cmd, buf, sizeof buf) == 0 && strstr(buf, "linear blocks   1 of 4"));
    rm_dir(out);
    /* too few calibration tokens, too many blocks: exit 1, a message naming the problem, no output */
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' --linearize 1 --calib '%s' --tokens 150 -o '%s' 2>&1", bin, dir, calib,
             out);
    CHECK(capture(cmd, buf, sizeof buf) == 1);
    CHECKF(strstr(buf, "too few") && strstr(buf, calib), "%s", buf);
    CHECK(!exists(out));
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' --linearize 4 --calib '%s' -o '%s' 2>&1", bin, dir, calib, out);
    CHECK(capture(cmd, buf, sizeof buf) == 1);
    CHECKF(strstr(buf, "cannot linearize 4 of its 4 blocks"), "%s", buf);
    CHECK(!exists(out));
    /* a model with a single block */
    char one[1100];
    snprintf(one, sizeof one, "%s/prune_one_%d", check_tmpdir(), (int)getpid());
    lm_config c = m->cfg;
    c.n_layers = 1;
    lm_model *m1 = NULL;
    CHECK(lm_model_init_random(&c, 1, 0.02f, &m1) == LM_OK);
    CHECK(m1 && lm_model_save_hf(m1, m->tokenizer, one) == LM_OK);
    lm_model_free(m1);
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd, "'%s' prune '%s' %s 1 --calib '%s' -o '%s' 2>&1", bin, one,
                 k ? "--linearize" : "--remove", calib, out);
        CHECK(capture(cmd, buf, sizeof buf) == 1);
        CHECKF(strstr(buf, "single block") && strstr(buf, one), "%s", buf);
        CHECK(!exists(out));
    }
    rm_dir(one);
    lm_model_free(m);
}

int main(void) {
    lm_set_threads(2);
    test_choose();
    test_view_and_save();
    test_cli();
    test_cli_linearize();
    return check_result();
}
