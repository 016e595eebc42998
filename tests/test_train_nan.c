/* test_train_nan.c - a non-finite loss stops training with a clear message and leaves the last
 * good checkpoint as it was (no newer checkpoint, no final model written over it). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "lumen/lumen.h"

static char *slurp(const char *path, size_t *n) {
    char *d = NULL;
    return lm_read_file(path, &d, n) == LM_OK ? d : NULL;
}

int main(void) {
    lm_set_threads(2);
    const char *fx = getenv("LUMEN_FIXTURES");
    if (!fx) fx = "tests/fixtures";
    char text[4096], tokp[4096], data[4096], out[4096], path[4300];
    if (!check_asset("text/cs336_tinystories_sample.txt", text, sizeof text)) return CHECK_SKIP;
    snprintf(tokp, sizeof tokp, "%s/bpe_train/tokenizer.json", fx);
    snprintf(data, sizeof data, "%s/nan_data_%d", check_tmpdir(), (int)getpid());
    snprintf(out, sizeof out, "%s/nan_out_%d", check_tmpdir(), (int)getpid());
    lm_tokenizer *tok = NULL;
    CHECKF(lm_tokenizer_load(tokp, &tok) == LM_OK, "%s", lm_errmsg());
    if (!tok) return check_result();
    const char *files[] = {text};
    lm_data_write_opts wo;
    lm_data_write_opts_default(&wo);
    wo.val_fraction = 0;
    lm_data_write_result wr;
    CHECKF(lm_data_write(tok, files, 1, data, &wo, NULL, NULL, &wr) == LM_OK, "%s", lm_errmsg());
    lm_train_opts o;
    lm_train_opts_default(&o);
    o.data_dir = data;
    o.out_dir = out;
    o.cfg.arch = LM_ARCH_LLAMA;
    o.cfg.dim = 32;
    o.cfg.n_layers = 2;
    o.cfg.n_heads = 4;
    o.cfg.n_kv_heads = 2;
    o.cfg.hidden_dim = 64;
    o.cfg.tied_embeddings = 1;
    o.batch = 2;
    o.ctx = 16;
    o.steps = 20;
    o.warmup = 2;
    o.save_every = 5;
    o.eval_every = 0;
    o.eval_batches = 1;
    o.progress = 0;
    o.fault_nan_at_step = 13;
    lm_train_result r;
    lm_status st = lm_train_run(&o, &r);
    CHECKF(st == LM_ERR_RANGE && strstr(lm_errmsg(), "not finite"), "status %d: %s", st, lm_errmsg());
    size_t n = 0;
    snprintf(path, sizeof path, "%s/ckpt/latest", out);
    char *latest = slurp(path, &n);
    CHECKF(latest && strncmp(latest, "step_00000010", 13) == 0, "latest checkpoint: %s", latest ? latest : "(none)");
    free(latest);
    snprintf(path, sizeof path, "%s/ckpt/step_00000015", out);
    CHECK(access(path, F_OK) != 0);
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    CHECK(access(path, F_OK) != 0);
    /* the good checkpoint still loads, with finite weights */
    snprintf(path, sizeof path, "%s/ckpt/step_00000010", out);
    lm_model *m = NULL;
    CHECKF(lm_model_load(path, &m) == LM_OK, "%s", lm_errmsg());
    if (m) {
        int finite = 1;
        for (int i = 0; i < m->cfg.dim; i++) finite &= isfinite(m->final_norm[i]);
        CHECK(finite);
        lm_model_free(m);
    }
    /* without the fault the same run completes, resuming from step 10 */
    o.fault_nan_at_step = 0;
    CHECKF(lm_train_run(&o, &r) == LM_OK, "%s", lm_errmsg());
    CHECK(r.resumed_from == 10 && r.steps_done == 20);
    lm_tokenizer_free(tok);
    lm_tensor_release_scratch();
    return check_result();
}
