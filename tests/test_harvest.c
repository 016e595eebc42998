/* test_harvest.c - activation shards (contents, windows, resume after a stop, refusing another
 * job's directory) and cross-entropy scoring against a direct computation. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "lumen/lumen.h"

typedef struct grab {
    float *buf;
} grab;

static lm_status grab_hook(void *ud, const lm_hook_info *info, float *act) {
    grab *g = ud;
    size_t n = (size_t)info->n_seq * info->n_tok * info->d;
    memcpy(g->buf, act, n * sizeof(float));
    return LM_OK;
}

static int stop_after_first(void *ud, size_t done, size_t total) {
    (void)total;
    size_t *limit = ud;
    return done > *limit;
}

static char *slurp(const char *path, size_t *n) {
    char *d = NULL;
    if (lm_read_file(path, &d, n) != LM_OK) return NULL;
    return d;
}

int main(void) {
    lm_set_threads(2);
    const char *fx = getenv("LUMEN_FIXTURES");
    if (!fx) fx = "tests/fixtures";
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/hf/llama", fx);
    lm_model *m = NULL;
    if (lm_model_load(dir, &m) != LM_OK) {
        fprintf(stderr, "%s\n", lm_errmsg());
        return 1;
    }
    const size_t n = 23, d = (size_t)m->cfg.dim;
    const int ctx = 5;
    int32_t ids[23];
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)((i * 71 + 5) % (size_t)m->cfg.vocab_size);
    const char *hooks[] = {"blocks.1.hook_resid_post", "hook_embed", "blocks.0.hook_mlp_out"};
    lm_harvest_opts o = {hooks, 3, ctx, 2, 10, "llama-fixture", "ids"};
    char out1[4096], out2[4096];
    snprintf(out1, sizeof out1, "%s/harvest_full_%d", check_tmpdir(), (int)getpid());
    snprintf(out2, sizeof out2, "%s/harvest_resumed_%d", check_tmpdir(), (int)getpid());
    lm_harvest_result r;
    CHECKF(lm_harvest(m, ids, n, &o, out1, NULL, NULL, &r) == LM_OK, "%s", lm_errmsg());
    CHECK(r.n_shards == 3 && r.n_tokens == n && r.n_shards_skipped == 0);

    /* every row equals a direct forward of its window */
    lm_state *s = NULL;
    CHECK(lm_state_new(m, ctx, ctx, &s) == LM_OK);
    float *ref = malloc((size_t)ctx * d * sizeof(float));
    grab g = {ref};
    size_t seen = 0;
    for (int k = 0; k < 3; k++) {
        char p[4300];
        snprintf(p, sizeof p, "%s/shard_%05d.safetensors", out1, k);
        lm_safetensors *st = NULL;
        CHECKF(lm_safetensors_open(p, &st) == LM_OK, "%s", lm_errmsg());
        if (!st) continue;
        const lm_st_tensor *tk = lm_safetensors_find(st, "tokens"), *ps = lm_safetensors_find(st, "positions");
        const lm_st_tensor *act = lm_safetensors_find(st, hooks[0]);
        CHECK(tk && ps && act && lm_safetensors_find(st, hooks[1]) && lm_safetensors_find(st, hooks[2]));
        if (tk && ps && act) {
            size_t len = tk->n_elements;
            CHECK(act->n_dims == 2 && act->shape[0] == len && act->shape[1] == d);
            CHECK(memcmp(tk->data, ids + seen, len * 4) == 0);
            const int32_t *pos = ps->data;
            for (size_t w = 0; w < len; w += (size_t)ctx) {
                size_t wl = len - w < (size_t)ctx ? len - w : (size_t)ctx;
                lm_state_clear_hooks(s);
                lm_state_reset(s);
                CHECK(lm_state_add_hook(s, hooks[0], grab_hook, &g) == LM_OK);
                CHECK(lm_forward(m, s, ids + seen + w, (int)wl, NULL, 0) == LM_OK);
                const float *got = (const float *)act->data + w * d;
                double num = 0, den = 0;
                for (size_t i = 0; i < wl * d; i++) {
                    num += (got[i] - ref[i]) * (got[i] - ref[i]);
                    den += (double)ref[i] * ref[i];
                }
                CHECKF(sqrt(num / den) < 1e-5, "shard %d window %zu rel err %g", k, w, sqrt(num / den));
                for (size_t t = 0; t < wl; t++) CHECK(pos[w + t] == (int32_t)t);
            }
            seen += len;
        }
        lm_safetensors_close(st);
    }
    CHECK(seen == n);

    /* stopped after the first shard, then the same job again: resumes, same bytes */
    size_t limit = 10;
    lm_status st = lm_harvest(m, ids, n, &o, out2, stop_after_first, &limit, &r);
    CHECK(st != LM_OK);
    CHECK(lm_harvest(m, ids, n, &o, out2, NULL, NULL, &r) == LM_OK);
    CHECKF(r.n_shards_skipped == 1 && r.n_shards == 2, "skipped %zu, wrote %zu", r.n_shards_skipped, r.n_shards);
    for (int k = 0; k < 3; k++) {
        char p1[4300], p2[4300];
        snprintf(p1, sizeof p1, "%s/shard_%05d.safetensors", out1, k);
        snprintf(p2, sizeof p2, "%s/shard_%05d.safetensors", out2, k);
        size_t n1 = 0, n2 = 0;
        char *a = slurp(p1, &n1), *b = slurp(p2, &n2);
        CHECKF(a && b && n1 == n2 && memcmp(a, b, n1) == 0, "shard %d differs after resume", k);
        free(a);
        free(b);
    }
    /* a finished job run again writes nothing */
    CHECK(lm_harvest(m, ids, n, &o, out2, NULL, NULL, &r) == LM_OK && r.n_shards == 0 && r.n_shards_skipped == 3);
    /* another job in the same directory is refused */
    lm_harvest_opts o2 = o;
    o2.ctx = 4;
    CHECK(lm_harvest(m, ids, n, &o2, out2, NULL, NULL, &r) == LM_ERR_ARG && strstr(lm_errmsg(), "different job"));
    const char *bad_hooks[] = {"blocks.9.hook_resid_post"};
    o2 = o;
    o2.hooks = bad_hooks;
    o2.n_hooks = 1;
    CHECK(lm_harvest(m, ids, n, &o2, out2, NULL, NULL, &r) == LM_ERR_ARG);

    /* cross-entropy against a direct per-window computation */
    lm_eval_result er;
    CHECK(lm_eval_ce(m, ids, n, ctx, 3, NULL, NULL, &er) == LM_OK);
    size_t V = (size_t)m->cfg.vocab_size;
    float *lg = malloc((size_t)ctx * V * sizeof(float));
    double total = 0;
    size_t pred = 0;
    lm_state_clear_hooks(s);
    for (size_t w = 0; w < n; w += (size_t)ctx) {
        size_t wl = n - w < (size_t)ctx ? n - w : (size_t)ctx;
        lm_state_reset(s);
        CHECK(lm_forward(m, s, ids + w, (int)wl, lg, 1) == LM_OK);
        for (size_t t = 0; t + 1 < wl; t++) {
            double mx = -1e30, z = 0;
            for (size_t v = 0; v < V; v++) mx = fmax(mx, lg[t * V + v]);
            for (size_t v = 0; v < V; v++) z += exp(lg[t * V + v] - mx);
            total += log(z) + mx - lg[t * V + (size_t)ids[w + t + 1]];
            pred++;
        }
    }
    CHECK(er.n_predicted == pred && er.n_windows == 5);
    CHECKF(fabs(er.mean_ce - total / pred) < 1e-5 * fabs(total / pred), "ce %g vs %g", er.mean_ce, total / pred);
    CHECK(fabs(er.perplexity - exp(er.mean_ce)) < 1e-9 * er.perplexity);
    free(lg);
    free(ref);
    lm_state_free(s);
    lm_model_free(m);
    lm_tensor_release_scratch();
    return check_result();
}
