/* test_train_grad.c - whole-model gradients of the training backward against PyTorch
 * (tools/make_grad_fixtures.py: tiny gpt2, llama with GQA, tied llama), plus a few AdamW and
 * schedule facts. Loss: mean cross-entropy over the B*(T-1) next-token predictions. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lumen/lumen.h"
#include "lumen/train.h"

static const lm_param *find_param(const lm_trainable *t, const char *name) {
    for (size_t i = 0; i < t->n_table; i++)
        if (!strcmp(t->table[i].name, name)) return &t->table[i];
    return NULL;
}

/* Compares lumen's gradient (rows x cols, row-major) with the reference tensor; the reference is
 * [rows, cols] or, when transposed, [cols, ref_cols] read at column offset col0 (GPT-2 Conv1D). */
static double compare(const float *g, size_t rows, size_t cols, const lm_st_tensor *ref, int transposed, size_t col0) {
    const float *r = ref->data;
    double num = 0, den = 0;
    size_t ref_cols = ref->n_dims == 2 ? ref->shape[1] : 1;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) {
            double want = transposed ? r[j * ref_cols + col0 + i] : ref->n_dims == 2 ? r[i * cols + j] : r[col0 + i];
            double got = g[i * cols + j];
            num += (got - want) * (got - want);
            den += want * want;
        }
    /* a gradient that is zero in exact arithmetic (GPT-2's key bias: adding a constant to every
     * key's score leaves softmax unchanged) is compared absolutely */
    if (sqrt(den) < 1e-6) return sqrt(num) < 1e-6 ? 0.0 : sqrt(num);
    return sqrt(num / den);
}

typedef struct map {
    const char *lumen;  /* with %d for the layer */
    const char *hf;
    int transposed;
    int slice;          /* 0 none, 1/2/3: q/k/v third of GPT-2's c_attn */
} map;

static const map k_llama[] = {
    {"embed", "model.embed_tokens.weight", 0, 0},
    {"final_norm", "model.norm.weight", 0, 0},
    {"output", "lm_head.weight", 0, 0},
    {"blocks.%d.attn_norm", "model.layers.%d.input_layernorm.weight", 0, 0},
    {"blocks.%d.wq", "model.layers.%d.self_attn.q_proj.weight", 0, 0},
    {"blocks.%d.wk", "model.layers.%d.self_attn.k_proj.weight", 0, 0},
    {"blocks.%d.wv", "model.layers.%d.self_attn.v_proj.weight", 0, 0},
    {"blocks.%d.wo", "model.layers.%d.self_attn.o_proj.weight", 0, 0},
    {"blocks.%d.ffn_norm", "model.layers.%d.post_attention_layernorm.weight", 0, 0},
    {"blocks.%d.w_gate", "model.layers.%d.mlp.gate_proj.weight", 0, 0},
    {"blocks.%d.w_up", "model.layers.%d.mlp.up_proj.weight", 0, 0},
    {"blocks.%d.w_down", "model.layers.%d.mlp.down_proj.weight", 0, 0},
};

static const map k_gpt2[] = {
    {"embed", "transformer.wte.weight", 0, 0},
    {"pos_embed", "transformer.wpe.weight", 0, 0},
    {"final_norm", "transformer.ln_f.weight", 0, 0},
    {"final_norm_b", "transformer.ln_f.bias", 0, 0},
    {"blocks.%d.attn_norm", "transformer.h.%d.ln_1.weight", 0, 0},
    {"blocks.%d.attn_norm_b", "transformer.h.%d.ln_1.bias", 0, 0},
    {"blocks.%d.wq", "transformer.h.%d.attn.c_attn.weight", 1, 1},
    {"blocks.%d.wk", "transformer.h.%d.attn.c_attn.weight", 1, 2},
    {"blocks.%d.wv", "transformer.h.%d.attn.c_attn.weight", 1, 3},
    {"blocks.%d.bq", "transformer.h.%d.attn.c_attn.bias", 0, 1},
    {"blocks.%d.bk", "transformer.h.%d.attn.c_attn.bias", 0, 2},
    {"blocks.%d.bv", "transformer.h.%d.attn.c_attn.bias", 0, 3},
    {"blocks.%d.wo", "transformer.h.%d.attn.c_proj.weight", 1, 0},
    {"blocks.%d.bo", "transformer.h.%d.attn.c_proj.bias", 0, 0},
    {"blocks.%d.ffn_norm", "transformer.h.%d.ln_2.weight", 0, 0},
    {"blocks.%d.ffn_norm_b", "transformer.h.%d.ln_2.bias", 0, 0},
    {"blocks.%d.w_up", "transformer.h.%d.mlp.c_fc.weight", 1, 0},
    {"blocks.%d.b_up", "transformer.h.%d.mlp.c_fc.bias", 0, 0},
    {"blocks.%d.w_down", "transformer.h.%d.mlp.c_proj.weight", 1, 0},
    {"blocks.%d.b_down", "transformer.h.%d.mlp.c_proj.bias", 0, 0},
};

static void check_case(const char *fx, const char *name, const map *maps, size_t n_maps) {
    char dir[4096], gpath[4096];
    snprintf(dir, sizeof dir, "%s/hf/%s", fx, name);
    snprintf(gpath, sizeof gpath, "%s/grad/%s.grad.safetensors", fx, name);
    lm_model *m = NULL;
    lm_safetensors *e = NULL;
    CHECKF(lm_model_load(dir, &m) == LM_OK, "%s", lm_errmsg());
    CHECKF(lm_safetensors_open(gpath, &e) == LM_OK, "%s", lm_errmsg());
    lm_trainable *t = NULL;
    if (m) CHECKF(lm_trainable_from_model(m, &t) == LM_OK, "%s", lm_errmsg());
    const lm_st_tensor *ids = e ? lm_safetensors_find(e, "input_ids") : NULL, *loss = e ? lm_safetensors_find(e, "loss") : NULL;
    if (!t || !ids || !loss) {
        CHECKF(0, "%s: cannot run the gradient comparison", name);
        lm_trainable_free(t);
        lm_model_free(m);
        lm_safetensors_close(e);
        return;
    }
    int B = (int)ids->shape[0], T = (int)ids->shape[1];
    int32_t *in = malloc((size_t)B * T * 4), *tg = malloc((size_t)B * T * 4);
    memcpy(in, ids->data, (size_t)B * T * 4);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++) tg[b * T + i] = i + 1 < T ? in[b * T + i + 1] : -1;
    double l = 0;
    lm_trainable_zero_grad(t);
    CHECKF(lm_train_step_grad(t, in, tg, B, T, 1.0f, &l) == LM_OK, "%s", lm_errmsg());
    double ref_loss = loss->dtype == LM_ST_F64 ? *(const double *)loss->data : *(const float *)loss->data;
    CHECKF(fabs(l - ref_loss) < 1e-5 * fabs(ref_loss), "%s: loss %.8f vs torch %.8f", name, l, ref_loss);
    double worst = 0;
    char worst_name[128] = "";
    size_t compared = 0;
    for (int layer = -1; layer < t->model->cfg.n_layers; layer++)
        for (size_t k = 0; k < n_maps; k++) {
            int per_layer = strstr(maps[k].lumen, "%d") != NULL;
            if (per_layer != (layer >= 0)) continue;
            char ln[128], hn[160], gn[170];
            snprintf(ln, sizeof ln, maps[k].lumen, layer);
            snprintf(hn, sizeof hn, maps[k].hf, layer);
            snprintf(gn, sizeof gn, "grad.%s", hn);
            const lm_param *p = find_param(t, ln);
            if (!p) continue; /* e.g. no output matrix when tied */
            const lm_st_tensor *ref = lm_safetensors_find(e, gn);
            CHECKF(ref != NULL, "%s: fixture lacks %s", name, gn);
            if (!ref) continue;
            size_t col0 = maps[k].slice ? (size_t)(maps[k].slice - 1) * p->rows : 0;
            double err = compare(t->grads + p->offset, p->rows, p->cols, ref, maps[k].transposed, col0);
            CHECKF(err < 1e-4, "%s: gradient of %s (%s) rel err %g", name, ln, gn, err);
            if (err > worst) {
                worst = err;
                snprintf(worst_name, sizeof worst_name, "%s", ln);
            }
            compared++;
        }
    CHECKF(compared == t->n_table, "%s: compared %zu of %zu parameters", name, compared, t->n_table);
    fprintf(stderr, "%s: loss %.6f (torch %.6f), %zu gradients, worst rel err %.3g (%s)\n", name, l, ref_loss, compared,
            worst, worst_name);
    free(in);
    free(tg);
    lm_trainable_free(t);
    lm_model_free(m);
    lm_safetensors_close(e);
}

/* The cosine regulariser's gradient against a central difference of the whole loss along a
 * random direction (float forward, so a loose tolerance; with weight 5 the regulariser is
 * about 40% of the derivative, so an error in its gradient cannot hide). */
static void check_cosine_reg(void) {
    lm_config c = {0};
    c.arch = LM_ARCH_LLAMA;
    c.dim = 16;
    c.n_layers = 3;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.hidden_dim = 32;
    c.vocab_size = 50;
    c.seq_len = 8;
    lm_trainable *t = NULL;
    CHECK(lm_trainable_new(&c, 3, &t) == LM_OK);
    if (!t) return;
    /* larger weights so that the blocks move the residual stream */
    for (size_t i = 0; i < t->n_floats; i++) t->params[i] *= 2.0f;
    t->linearity_reg = 5.0f;
    int32_t in[16], tg[16];
    for (int i = 0; i < 16; i++) {
        in[i] = (i * 7 + 3) % 50;
        tg[i] = (i * 11 + 1) % 50;
    }
    double l0 = 0, lp = 0, lm = 0;
    lm_trainable_zero_grad(t);
    CHECK(lm_train_step_grad(t, in, tg, 2, 8, 1.0f, &l0) == LM_OK);
    CHECK(t->last_reg > 0.01);
    lm_rng r;
    lm_rng_seed(&r, 9);
    float *dir = malloc(t->n_floats * sizeof(float)), *g = malloc(t->n_floats * sizeof(float));
    memcpy(g, t->grads, t->n_floats * sizeof(float));
    double gv = 0;
    for (size_t i = 0; i < t->n_floats; i++) {
        dir[i] = lm_rng_normal(&r);
        gv += (double)g[i] * dir[i];
    }
    const float eps = 3e-4f;
    for (size_t i = 0; i < t->n_floats; i++) t->params[i] += eps * dir[i];
    CHECK(lm_train_step_grad(t, in, tg, 2, 8, 1.0f, &lp) == LM_OK);
    for (size_t i = 0; i < t->n_floats; i++) t->params[i] -= 2 * eps * dir[i];
    CHECK(lm_train_step_grad(t, in, tg, 2, 8, 1.0f, &lm) == LM_OK);
    double fd = (lp - lm) / (2.0 * eps);
    CHECKF(fabs(fd - gv) < 5e-3 * fabs(gv), "cosine regulariser: directional derivative %g vs finite difference %g", gv, fd);
    fprintf(stderr, "cosine regulariser: directional derivative %.6g, finite difference %.6g (reg %g)\n", gv, fd, t->last_reg);
    free(dir);
    free(g);
    lm_trainable_free(t);
}

int main(void) {
    lm_set_threads(2);
    const char *fx = getenv("LUMEN_FIXTURES");
    if (!fx) fx = "tests/fixtures";
    check_case(fx, "gpt2", k_gpt2, sizeof k_gpt2 / sizeof k_gpt2[0]);
    check_case(fx, "llama", k_llama, sizeof k_llama / sizeof k_llama[0]);
    check_case(fx, "llama_tied", k_llama, sizeof k_llama / sizeof k_llama[0]);
    check_cosine_reg();
    /* schedule */
    CHECK(fabsf(lm_lr_schedule(0, 10, 100, 1e-3f, 1e-4f) - 1e-4f) < 1e-9f);
    CHECK(fabsf(lm_lr_schedule(9, 10, 100, 1e-3f, 1e-4f) - 1e-3f) < 1e-9f);
    CHECK(fabsf(lm_lr_schedule(55, 10, 100, 1e-3f, 1e-4f) - 5.5e-4f) < 1e-7f);
    CHECK(fabsf(lm_lr_schedule(100, 10, 100, 1e-3f, 1e-4f) - 1e-4f) < 1e-9f);
    lm_tensor_release_scratch();
    return check_result();
}
