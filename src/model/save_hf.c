/* save_hf.c - writes a model as a Hugging Face directory (config.json + model.safetensors +
 * tokenizer.json), the layout lumen loads and transformers reads. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model_internal.h"

typedef struct saver {
    lm_st_spec *specs;
    size_t n, cap;
    void **bufs; /* converted copies, freed after writing */
    size_t n_bufs;
    char **names;
    size_t n_names;
} saver;

static lm_st_dtype st_dtype(lm_dtype t) {
    return t == LM_F16 ? LM_ST_F16 : t == LM_BF16 ? LM_ST_BF16 : LM_ST_F32;
}

static int keep_buf(saver *sv, void *p) {
    void **nb = realloc(sv->bufs, (sv->n_bufs + 1) * sizeof *nb);
    if (!nb) return -1;
    sv->bufs = nb;
    sv->bufs[sv->n_bufs++] = p;
    return 0;
}

static lm_status add(saver *sv, const char *name, lm_st_dtype dt, int n_dims, uint64_t d0, uint64_t d1,
                     const void *data) {
    if (sv->n == sv->cap) {
        size_t nc = sv->cap ? sv->cap * 2 : 64;
        lm_st_spec *ns = realloc(sv->specs, nc * sizeof *ns);
        char **nn = realloc(sv->names, nc * sizeof *nn);
        if (ns) sv->specs = ns;
        if (nn) sv->names = nn;
        if (!ns || !nn) return lm_fail(LM_ERR_NOMEM, "save: out of memory");
        sv->cap = nc;
    }
    char *nm = lm_strdup(name);
    if (!nm) return lm_fail(LM_ERR_NOMEM, "save: out of memory");
    sv->names[sv->n] = nm;
    sv->specs[sv->n] = (lm_st_spec){nm, dt, n_dims, {d0, d1}, data};
    sv->n++;
    return LM_OK;
}

static lm_status add_vec(saver *sv, const char *name, const float *v, size_t n) {
    return add(sv, name, LM_ST_F32, 1, n, 0, v);
}

/* A matrix in its stored dtype (quantised ones as f32); perm_heads > 0 reorders the rows of
 * each head of perm_heads rows from interleaved pairs to rotate-half order; transpose writes
 * it as [cols, rows] (GPT-2's Conv1D). */
static lm_status add_mat(saver *sv, const char *name, const lm_weight *w, size_t perm_head_dim, int transpose) {
    lm_dtype dt = w->dtype;
    int plain = dt == LM_F32 || dt == LM_F16 || dt == LM_BF16;
    if (plain && !perm_head_dim && !transpose) return add(sv, name, st_dtype(dt), 2, w->rows, w->cols, w->data);
    lm_dtype out_dt = plain ? dt : LM_F32;
    size_t es = lm_dtype_block_bytes(out_dt);
    uint8_t *buf = lm_malloc(w->rows * w->cols, es);
    float *row = lm_malloc(w->cols, sizeof(float));
    if (!buf || !row || keep_buf(sv, buf)) {
        free(buf);
        free(row);
        return lm_fail(LM_ERR_NOMEM, "save: out of memory for '%s'", name);
    }
    size_t rb = lm_dtype_row_bytes(dt, w->cols);
    for (size_t r = 0; r < w->rows; r++) {
        size_t dst = r;
        if (perm_head_dim) {
            size_t h = r / perm_head_dim, i = r % perm_head_dim, half = perm_head_dim / 2;
            dst = h * perm_head_dim + (i % 2 == 0 ? i / 2 : half + i / 2);
        }
        const uint8_t *src = (const uint8_t *)w->data + r * rb;
        if (!transpose) {
            if (plain)
                memcpy(buf + dst * w->cols * es, src, w->cols * es);
            else
                lm_dequantize_row(dt, src, (float *)(void *)(buf + dst * w->cols * es), w->cols);
        } else {
            const uint8_t *vals = src;
            if (!plain) {
                lm_dequantize_row(dt, src, row, w->cols);
                vals = (const uint8_t *)row;
            }
            for (size_t c = 0; c < w->cols; c++) memcpy(buf + (c * w->rows + dst) * es, vals + c * es, es);
        }
    }
    free(row);
    if (transpose) return add(sv, name, st_dtype(out_dt), 2, w->cols, w->rows, buf);
    return add(sv, name, st_dtype(out_dt), 2, w->rows, w->cols, buf);
}

static void saver_free(saver *sv) {
    for (size_t i = 0; i < sv->n_bufs; i++) free(sv->bufs[i]);
    for (size_t i = 0; i < sv->n; i++) free(sv->names[i]);
    free(sv->bufs);
    free(sv->names);
    free(sv->specs);
}

/* A linear block: base + "linear.weight" [dim, dim] (out x in, as torch's nn.Linear) and
 * base + "linear.bias" [dim]; the block's other tensors do not exist. */
static lm_status add_linear_block(saver *sv, const char *base, const lm_layer *ly) {
    char n[200];
    snprintf(n, sizeof n, "%slinear.weight", base);
    lm_status st = add_mat(sv, n, &ly->lin, 0, 0);
    snprintf(n, sizeof n, "%slinear.bias", base);
    if (st == LM_OK) st = add_vec(sv, n, ly->lin_b, ly->lin.rows);
    return st;
}

static lm_status collect_llama(saver *sv, const lm_model *m) {
    const lm_config *c = &m->cfg;
    size_t perm = c->rope_style == LM_ROPE_INTERLEAVED ? (size_t)c->head_dim : 0;
    lm_status st = add_mat(sv, "model.embed_tokens.weight", &m->tok_embeddings, 0, 0);
    char n[160];
    for (int l = 0; st == LM_OK && l < c->n_layers; l++) {
        const lm_layer *ly = &m->layers[l];
        if (lm_layer_is_linear(ly)) {
            snprintf(n, sizeof n, "model.layers.%d.", l);
            st = add_linear_block(sv, n, ly);
            continue;
        }
#define NAME(s) (snprintf(n, sizeof n, "model.layers.%d.%s", l, s), n)
        if (st == LM_OK) st = add_vec(sv, NAME("input_layernorm.weight"), ly->attn_norm, (size_t)c->dim);
        if (st == LM_OK) st = add_mat(sv, NAME("self_attn.q_proj.weight"), &ly->wq, perm, 0);
        if (st == LM_OK) st = add_mat(sv, NAME("self_attn.k_proj.weight"), &ly->wk, perm, 0);
        if (st == LM_OK) st = add_mat(sv, NAME("self_attn.v_proj.weight"), &ly->wv, 0, 0);
        if (st == LM_OK) st = add_mat(sv, NAME("self_attn.o_proj.weight"), &ly->wo, 0, 0);
        if (st == LM_OK && ly->bq) st = add_vec(sv, NAME("self_attn.q_proj.bias"), ly->bq, ly->wq.rows);
        if (st == LM_OK && ly->bk) st = add_vec(sv, NAME("self_attn.k_proj.bias"), ly->bk, ly->wk.rows);
        if (st == LM_OK && ly->bv) st = add_vec(sv, NAME("self_attn.v_proj.bias"), ly->bv, ly->wv.rows);
        if (st == LM_OK && ly->bo) st = add_vec(sv, NAME("self_attn.o_proj.bias"), ly->bo, ly->wo.rows);
        if (st == LM_OK) st = add_vec(sv, NAME("post_attention_layernorm.weight"), ly->ffn_norm, (size_t)c->dim);
        if (st == LM_OK) st = add_mat(sv, NAME("mlp.gate_proj.weight"), &ly->w_gate, 0, 0);
        if (st == LM_OK) st = add_mat(sv, NAME("mlp.up_proj.weight"), &ly->w_up, 0, 0);
        if (st == LM_OK) st = add_mat(sv, NAME("mlp.down_proj.weight"), &ly->w_down, 0, 0);
#undef NAME
    }
    if (st == LM_OK) st = add_vec(sv, "model.norm.weight", m->final_norm, (size_t)c->dim);
    if (st == LM_OK && !c->tied_embeddings) st = add_mat(sv, "lm_head.weight", &m->output, 0, 0);
    return st;
}

static lm_status collect_gpt2(saver *sv, const lm_model *m) {
    const lm_config *c = &m->cfg;
    size_t d = (size_t)c->dim;
    lm_status st = add_mat(sv, "transformer.wte.weight", &m->tok_embeddings, 0, 0);
    if (st == LM_OK) st = add_mat(sv, "transformer.wpe.weight", &m->pos_embeddings, 0, 0);
    char n[160];
    for (int l = 0; st == LM_OK && l < c->n_layers; l++) {
        const lm_layer *ly = &m->layers[l];
        if (lm_layer_is_linear(ly)) {
            snprintf(n, sizeof n, "transformer.h.%d.", l);
            st = add_linear_block(sv, n, ly);
            continue;
        }
        /* q, k, v were split from one fused [3d, d] block at load and are contiguous */
        lm_weight qkv = {ly->wq.dtype, 3 * d, d, ly->wq.data};
        float *bqkv = lm_malloc(3 * d, sizeof(float));
        if (!bqkv || keep_buf(sv, bqkv)) {
            free(bqkv);
            return lm_fail(LM_ERR_NOMEM, "save: out of memory");
        }
        memcpy(bqkv, ly->bq, d * sizeof(float));
        memcpy(bqkv + d, ly->bk, d * sizeof(float));
        memcpy(bqkv + 2 * d, ly->bv, d * sizeof(float));
#define NAME(s) (snprintf(n, sizeof n, "transformer.h.%d.%s", l, s), n)
        if (st == LM_OK) st = add_vec(sv, NAME("ln_1.weight"), ly->attn_norm, d);
        if (st == LM_OK) st = add_vec(sv, NAME("ln_1.bias"), ly->attn_norm_b, d);
        if (st == LM_OK) st = add_mat(sv, NAME("attn.c_attn.weight"), &qkv, 0, 1);
        if (st == LM_OK) st = add_vec(sv, NAME("attn.c_attn.bias"), bqkv, 3 * d);
        if (st == LM_OK) st = add_mat(sv, NAME("attn.c_proj.weight"), &ly->wo, 0, 1);
        if (st == LM_OK) st = add_vec(sv, NAME("attn.c_proj.bias"), ly->bo, d);
        if (st == LM_OK) st = add_vec(sv, NAME("ln_2.weight"), ly->ffn_norm, d);
        if (st == LM_OK) st = add_vec(sv, NAME("ln_2.bias"), ly->ffn_norm_b, d);
        if (st == LM_OK) st = add_mat(sv, NAME("mlp.c_fc.weight"), &ly->w_up, 0, 1);
        if (st == LM_OK) st = add_vec(sv, NAME("mlp.c_fc.bias"), ly->b_up, (size_t)c->hidden_dim);
        if (st == LM_OK) st = add_mat(sv, NAME("mlp.c_proj.weight"), &ly->w_down, 0, 1);
        if (st == LM_OK) st = add_vec(sv, NAME("mlp.c_proj.bias"), ly->b_down, d);
#undef NAME
    }
    if (st == LM_OK) st = add_vec(sv, "transformer.ln_f.weight", m->final_norm, d);
    if (st == LM_OK) st = add_vec(sv, "transformer.ln_f.bias", m->final_norm_b, d);
    if (st == LM_OK && !c->tied_embeddings) st = add_mat(sv, "lm_head.weight", &m->output, 0, 0);
    return st;
}

static json_t *config_json(const lm_model *m, const lm_tokenizer *tok) {
    const lm_config *c = &m->cfg;
    json_t *j = json_object();
    int bos = tok ? lm_tokenizer_bos(tok) : -1, eos = tok ? lm_tokenizer_eos(tok) : -1;
    if (c->arch == LM_ARCH_GPT2) {
        json_object_set_new(j, "architectures", json_pack("[s]", "GPT2LMHeadModel"));
        json_object_set_new(j, "model_type", json_string("gpt2"));
        json_object_set_new(j, "n_embd", json_integer(c->dim));
        json_object_set_new(j, "n_layer", json_integer(c->n_layers));
        json_object_set_new(j, "n_head", json_integer(c->n_heads));
        json_object_set_new(j, "n_inner", json_integer(c->hidden_dim));
        json_object_set_new(j, "n_positions", json_integer(c->seq_len));
        json_object_set_new(j, "n_ctx", json_integer(c->seq_len));
        json_object_set_new(j, "vocab_size", json_integer(c->vocab_size));
        json_object_set_new(j, "layer_norm_epsilon", json_real(c->norm_eps));
        json_object_set_new(j, "activation_function", json_string("gelu_new"));
        json_object_set_new(j, "resid_pdrop", json_real(0));
        json_object_set_new(j, "embd_pdrop", json_real(0));
        json_object_set_new(j, "attn_pdrop", json_real(0));
    } else {
        const char *fam = c->family[0] ? c->family : "llama";
        const char *arch = !strcmp(fam, "mistral") ? "MistralForCausalLM"
                           : !strcmp(fam, "qwen2") ? "Qwen2ForCausalLM"
                                                   : "LlamaForCausalLM";
        json_object_set_new(j, "architectures", json_pack("[s]", arch));
        json_object_set_new(j, "model_type", json_string(!strcmp(fam, "mistral") || !strcmp(fam, "qwen2") ? fam : "llama"));
        json_object_set_new(j, "hidden_size", json_integer(c->dim));
        json_object_set_new(j, "intermediate_size", json_integer(c->hidden_dim));
        json_object_set_new(j, "num_hidden_layers", json_integer(c->n_layers));
        json_object_set_new(j, "num_attention_heads", json_integer(c->n_heads));
        json_object_set_new(j, "num_key_value_heads", json_integer(c->n_kv_heads));
        json_object_set_new(j, "head_dim", json_integer(c->head_dim));
        json_object_set_new(j, "vocab_size", json_integer(c->vocab_size));
        json_object_set_new(j, "max_position_embeddings", json_integer(c->seq_len));
        json_object_set_new(j, "rms_norm_eps", json_real(c->norm_eps));
        json_object_set_new(j, "rope_theta", json_real(c->rope_theta));
        json_object_set_new(j, "hidden_act", json_string("silu"));
        int attn_bias = 0;
        for (int l = 0; l < c->n_layers; l++)
            if (!lm_layer_is_linear(&m->layers[l])) {
                attn_bias = m->layers[l].bo != NULL;
                break;
            }
        json_object_set_new(j, "attention_bias", json_boolean(attn_bias));
        json_object_set_new(j, "mlp_bias", json_false());
        if (c->rope_scaling.kind == LM_ROPE_SCALING_LLAMA3)
            json_object_set_new(j, "rope_scaling",
                                json_pack("{s:s, s:f, s:f, s:f, s:i}", "rope_type", "llama3", "factor",
                                          (double)c->rope_scaling.factor, "low_freq_factor",
                                          (double)c->rope_scaling.low_freq_factor, "high_freq_factor",
                                          (double)c->rope_scaling.high_freq_factor, "original_max_position_embeddings",
                                          c->rope_scaling.original_max_positions));
        else if (c->rope_scaling.kind == LM_ROPE_SCALING_LINEAR)
            json_object_set_new(j, "rope_scaling", json_pack("{s:s, s:f}", "rope_type", "linear", "factor",
                                                            (double)c->rope_scaling.factor));
    }
    if (lm_model_linear_count(m) > 0) {
        /* lumen's own extension (lumen prune --linearize): transformers cannot load these blocks */
        json_t *lin = json_array();
        for (int l = 0; l < c->n_layers; l++)
            if (lm_layer_is_linear(&m->layers[l])) json_array_append_new(lin, json_integer(l));
        json_object_set_new(j, "lumen_linear_layers", lin);
    }
    json_object_set_new(j, "tie_word_embeddings", json_boolean(c->tied_embeddings));
    if (bos >= 0) json_object_set_new(j, "bos_token_id", json_integer(bos));
    if (eos >= 0) json_object_set_new(j, "eos_token_id", json_integer(eos));
    json_object_set_new(j, "torch_dtype", json_string(m->tok_embeddings.dtype == LM_F16    ? "float16"
                                                      : m->tok_embeddings.dtype == LM_BF16 ? "bfloat16"
                                                                                            : "float32"));
    return j;
}

lm_status lm_model_save_hf(const lm_model *m, const lm_tokenizer *tok, const char *dir) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return lm_fail(LM_ERR_IO, "%s: cannot create directory: %s", dir, strerror(errno));
    saver sv = {0};
    lm_status st = m->cfg.arch == LM_ARCH_GPT2 ? collect_gpt2(&sv, m) : collect_llama(&sv, m);
    char path[4096];
    if (st == LM_OK) {
        /* wider elements first (as Python's writer does) so every tensor stays aligned */
        for (size_t i = 1; i < sv.n; i++)
            for (size_t j = i; j > 0 && lm_st_dtype_size(sv.specs[j].dtype) > lm_st_dtype_size(sv.specs[j - 1].dtype);
                 j--) {
                lm_st_spec t = sv.specs[j];
                sv.specs[j] = sv.specs[j - 1];
                sv.specs[j - 1] = t;
            }
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        const char *meta[] = {"format", "pt"};
        st = lm_safetensors_write(path, sv.specs, sv.n, meta, 1);
    }
    saver_free(&sv);
    if (st != LM_OK) return st;
    json_t *cfg = config_json(m, tok);
    char *text = cfg ? json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(cfg);
    if (!text) return lm_fail(LM_ERR_NOMEM, "%s: cannot render config.json", dir);
    snprintf(path, sizeof path, "%s/config.json", dir);
    size_t len = strlen(text);
    text[len] = '\n';
    st = lm_write_file_atomic(path, text, len + 1);
    free(text);
    if (st != LM_OK || !tok) return st;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    return lm_tokenizer_save_json(tok, path);
}
