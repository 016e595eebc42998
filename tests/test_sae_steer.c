/* test_sae_steer.c - SAE feature steering: lm_generate_ex without hooks matches lm_generate,
 * adding 0 changes nothing, a large addition changes the greedy continuation, the clamp hook on
 * an exact SAE moves exactly the clamped latent's contribution, and `lumen steer --json`. */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "lumen/lumen.h"

#define HOOK "blocks.2.hook_resid_post"

/* d_sae = 2 d: W_enc = [I, -I], W_dec = [I; -I], zero biases: f = (relu(x), relu(-x)), exact. */
static lm_sae *exact_sae(size_t d) {
    lm_sae_init in = {0};
    in.arch = LM_SAE_RELU;
    in.d_in = d;
    in.d_sae = 2 * d;
    in.seed = 1;
    lm_sae *s = NULL;
    if (lm_sae_new(&in, &s) != LM_OK) return NULL;
    memset(s->params, 0, s->n_params * sizeof(float));
    for (size_t j = 0; j < d; j++) {
        s->W_enc[j * 2 * d + j] = 1;
        s->W_enc[j * 2 * d + d + j] = -1;
        s->W_dec[j * d + j] = 1;
        s->W_dec[(d + j) * d + j] = -1;
    }
    s->hook_name = strdup(HOOK);
    return s;
}

static int gen(const lm_model *m, const lm_gen_hook *h, int nh, int use_plain, lm_generate_result *r) {
    lm_generate_opts o = {24, 0.0f, 0, 1.0f, 7, 1};
    const char *p = "Once upon a time";
    lm_status st = use_plain ? lm_generate(m, m->tokenizer, p, strlen(p), &o, NULL, NULL, r)
                             : lm_generate_ex(m, m->tokenizer, p, strlen(p), &o, h, nh, NULL, NULL, r);
    CHECKF(st == LM_OK, "%s", lm_errmsg());
    return st == LM_OK;
}

static int same(const lm_generate_result *a, const lm_generate_result *b) {
    return a->n_tokens == b->n_tokens && !memcmp(a->tokens, b->tokens, a->n_tokens * sizeof(int32_t));
}

static void test_clamp_batch(void) {
    const size_t d = 8, n = 5;
    lm_sae *s = exact_sae(d);
    CHECK(s != NULL);
    if (!s) return;
    float x[5 * 8], y[5 * 8];
    for (size_t i = 0; i < n * d; i++) x[i] = (float)sin(1.7 * (double)i + 0.3) * 2.0f;
    const size_t ids[3] = {3, d + 5, d + 3};
    for (int c = 0; c < 3; c++) {
        size_t id = ids[c];
        memcpy(y, x, sizeof x);
        lm_sae_steer sv = {s, id, LM_SAE_STEER_CLAMP, 4.5f};
        CHECK(lm_sae_steer_apply(&sv, y, n) == LM_OK);
        for (size_t t = 0; t < n; t++) {
            size_t j = id % d;
            float xj = x[t * d + j];
            float fid = id < d ? (xj > 0 ? xj : 0) : (xj < 0 ? -xj : 0);
            float sign = id < d ? 1.0f : -1.0f;
            for (size_t k = 0; k < d; k++) {
                float want = x[t * d + k] + (k == j ? (4.5f - fid) * sign : 0.0f);
                CHECKF(fabsf(y[t * d + k] - want) <= 1e-6f, "id %zu t %zu k %zu: %g vs %g", id, t, k,
                       (double)y[t * d + k], (double)want);
            }
            /* where the paired (opposite) latent was off, the latent reads back as the target */
            float f[16];
            CHECK(lm_sae_encode(s, f, y + t * d, 1) == LM_OK);
            if (id < d ? xj >= 0 : xj <= 0) CHECKF(fabsf(f[id] - 4.5f) <= 1e-5f, "f[%zu] = %g", id, (double)f[id]);
        }
    }
    /* add */
    memcpy(y, x, sizeof x);
    lm_sae_steer sa = {s, d + 2, LM_SAE_STEER_ADD, 3.0f};
    CHECK(lm_sae_steer_apply(&sa, y, n) == LM_OK);
    for (size_t t = 0; t < n; t++)
        for (size_t k = 0; k < d; k++) CHECK(y[t * d + k] == x[t * d + k] + (k == 2 ? -3.0f : 0.0f));
    lm_sae_steer bad = {s, 2 * d, LM_SAE_STEER_ADD, 1.0f};
    CHECK(lm_sae_steer_apply(&bad, y, n) == LM_ERR_ARG);
    lm_sae_free(s);
}

static void test_generation(const lm_model *m, const char *model_dir) {
    size_t d = (size_t)m->cfg.dim;
    lm_sae *s = exact_sae(d);
    CHECK(s != NULL);
    if (!s) return;
    lm_generate_result base, r;
    if (!gen(m, NULL, 0, 1, &base)) goto out;
    /* (a) no hooks == lm_generate */
    if (gen(m, NULL, 0, 0, &r)) {
        CHECK(same(&base, &r));
        lm_generate_result_free(&r);
    }
    /* (b) add 0 changes nothing */
    lm_sae_steer s0 = {s, 5, LM_SAE_STEER_ADD, 0.0f};
    lm_gen_hook h = {HOOK, lm_sae_steer_hook, &s0};
    if (gen(m, &h, 1, 0, &r)) {
        CHECK(same(&base, &r));
        lm_generate_result_free(&r);
    }
    /* (c) a large addition changes the greedy continuation */
    lm_sae_steer s1 = {s, 5, LM_SAE_STEER_ADD, 200.0f};
    h.ud = &s1;
    if (gen(m, &h, 1, 0, &r)) {
        CHECK(r.n_prompt == base.n_prompt);
        CHECK(!same(&base, &r));
        lm_generate_result_free(&r);
    }
    /* a wrong hook name is refused */
    h.name = "blocks.99.hook_resid_post";
    lm_generate_opts o = {4, 0.0f, 0, 1.0f, 7, 1};
    CHECK(lm_generate_ex(m, m->tokenizer, "a", 1, &o, &h, 1, NULL, NULL, &r) != LM_OK);

    /* the CLI: --add 0 gives the default text; a large clamp changes it */
    const char *bin = getenv("LUMEN_BIN"), *tmp = getenv("LUMEN_TMP");
    if (bin && tmp) {
        char dir[4096], cmd[12288];
        mkdir(tmp, 0755);
        snprintf(dir, sizeof dir, "%s/steer_sae", tmp);
        CHECKF(lm_sae_save(s, dir, NULL) == LM_OK, "%s", lm_errmsg());
        const char *modes[2] = {"--add 0", "--clamp 50"};
        for (int k = 0; k < 2; k++) {
            snprintf(cmd, sizeof cmd,
                     "OMP_NUM_THREADS=2 '%s' steer '%s' '%s' -p 'Once upon a time' --feature 5 %s -n 16 --json", bin,
                     model_dir, dir, modes[k]);
            FILE *p = popen(cmd, "r");
            CHECK(p != NULL);
            if (!p) continue;
            json_error_t e;
            json_t *j = json_loadf(p, 0, &e);
            CHECKF(pclose(p) == 0, "%s", cmd);
            CHECKF(j != NULL, "%s", e.text);
            if (!j) continue;
            const char *a = json_string_value(json_object_get(j, "default"));
            const char *b = json_string_value(json_object_get(j, "steered"));
            CHECK(a && b && strlen(a) > 0);
            CHECK(json_integer_value(json_object_get(j, "feature")) == 5);
            CHECK(json_real_value(json_object_get(j, "max_act")) > 0);
            if (a && b) CHECKF(k == 0 ? !strcmp(a, b) : strcmp(a, b) != 0, "%s: '%s' vs '%s'", modes[k], a, b);
            json_decref(j);
        }
    }
    lm_generate_result_free(&base);
out:
    lm_sae_free(s);
}

int main(void) {
    test_clamp_batch();
    const char *mr = getenv("LUMEN_MODELS");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/lumen-tiny", mr ? mr : "models");
    lm_model *m = NULL;
    if (lm_model_load(dir, &m) != LM_OK) {
        fprintf(stderr, "SKIP: %s: %s\n", dir, lm_errmsg());
        return check_result() ? 1 : 77;
    }
    CHECK(m->tokenizer != NULL);
    if (m->tokenizer) test_generation(m, dir);
    lm_model_free(m);
    return check_result();
}
