/* cmd_info.c - `lumen info`: what a model file holds. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void help(FILE *f) {
    fprintf(f,
            "usage: lumen info MODEL [--json]\n\n"
            "Prints the architecture, sizes, storage dtypes and parameter count of MODEL\n"
            "(a Hugging Face directory, a GGUF file or a llama2.c .bin checkpoint), and which blocks\n"
            "are linear blocks (lumen prune --linearize).\n");
}

/* Counts tensors per stored dtype. */
static void count_dtypes(const lm_model *m, size_t counts[LM_DTYPE_COUNT + 1]) {
    memset(counts, 0, sizeof(size_t) * (LM_DTYPE_COUNT + 1));
    if (m->gguf) {
        for (uint64_t i = 0; i < m->gguf->n_tensors; i++) {
            lm_dtype t = m->gguf->tensors[i].dtype;
            counts[t < LM_DTYPE_COUNT ? t : LM_DTYPE_COUNT]++;
        }
        return;
    }
    counts[m->tok_embeddings.dtype]++;
    counts[LM_F32] += 1; /* final norm */
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const lm_layer *ly = &m->layers[l];
        if (lm_layer_is_linear(ly)) {
            counts[ly->lin.dtype]++;
            counts[LM_F32]++; /* its bias */
            continue;
        }
        counts[LM_F32] += 2; /* norms */
        const lm_weight *ws[] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down};
        for (size_t i = 0; i < 7; i++)
            if (ws[i]->data) counts[ws[i]->dtype]++;
    }
    if (!m->cfg.tied_embeddings) counts[m->output.dtype]++;
}

int cmd_info(int argc, char **argv) {
    const char *path = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            help(stdout);
            return CLI_OK;
        } else if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] == '-' && argv[i][1]) return cli_usage_error("info", "unknown option: %s", argv[i]);
        else if (!path) path = argv[i];
        else return cli_usage_error("info", "unexpected argument: %s", argv[i]);
    }
    if (!path) return cli_usage_error("info", "missing MODEL");
    lm_model *m;
    lm_status st = lm_model_load(path, &m);
    if (st != LM_OK) return cli_error(st);
    const lm_config *c = &m->cfg;
    size_t counts[LM_DTYPE_COUNT + 1];
    count_dtypes(m, counts);
    const char *arch = c->arch == LM_ARCH_LLAMA ? "llama" : "gpt2";
    const char *rope = c->rope_style == LM_ROPE_INTERLEAVED ? "interleaved" : "half";
    int rc = CLI_OK;
    if (json) {
        json_t *dt = json_object();
        for (int t = 0; t <= LM_DTYPE_COUNT; t++)
            if (counts[t]) json_object_set_new(dt, t < LM_DTYPE_COUNT ? lm_dtype_name((lm_dtype)t) : "other",
                                               json_integer((json_int_t)counts[t]));
        json_t *j = json_object();
        json_object_set_new(j, "path", cli_json_text(path, strlen(path)));
        json_object_set_new(j, "format", json_string(m->format));
        json_object_set_new(j, "architecture", json_string(arch));
        json_object_set_new(j, "dim", json_integer(c->dim));
        json_object_set_new(j, "hidden_dim", json_integer(c->hidden_dim));
        json_object_set_new(j, "n_layers", json_integer(c->n_layers));
        json_object_set_new(j, "n_heads", json_integer(c->n_heads));
        json_object_set_new(j, "n_kv_heads", json_integer(c->n_kv_heads));
        json_object_set_new(j, "head_dim", json_integer(c->head_dim));
        json_object_set_new(j, "vocab_size", json_integer(c->vocab_size));
        json_object_set_new(j, "context_length", json_integer(c->seq_len));
        json_object_set_new(j, "norm_eps", json_real(c->norm_eps));
        json_object_set_new(j, "rope_theta", json_real(c->rope_theta));
        json_object_set_new(j, "rope_style", json_string(rope));
        json_object_set_new(j, "tied_embeddings", json_boolean(c->tied_embeddings));
        json_object_set_new(j, "dtypes", dt);
        json_t *lin = json_array();
        for (int l = 0; l < c->n_layers; l++)
            if (lm_layer_is_linear(&m->layers[l])) json_array_append_new(lin, json_integer(l));
        json_object_set_new(j, "linear_layers", lin);
        json_object_set_new(j, "parameters", json_integer((json_int_t)lm_model_param_count(m)));
        json_object_set_new(j, "tokenizer", m->tokenizer ? json_integer(lm_tokenizer_vocab_size(m->tokenizer))
                                                         : json_null());
        rc = cli_print_json(j);
    } else {
        printf("file            %s\n", path);
        printf("format          %s\n", m->format);
        printf("architecture    %s\n", arch);
        printf("layers          %d\n", c->n_layers);
        if (lm_model_linear_count(m) > 0) {
            printf("linear blocks   %d of %d:", lm_model_linear_count(m), c->n_layers);
            for (int l = 0; l < c->n_layers; l++)
                if (lm_layer_is_linear(&m->layers[l])) printf(" %d", l);
            printf(" (h -> h W^T + b, from lumen prune --linearize)\n");
        }
        printf("dim             %d\n", c->dim);
        printf("ffn hidden      %d\n", c->hidden_dim);
        printf("heads           %d (kv %d, head dim %d)\n", c->n_heads, c->n_kv_heads, c->head_dim);
        printf("vocab           %d\n", c->vocab_size);
        printf("context         %d\n", c->seq_len);
        printf("rope            %s, theta %g\n", rope, c->rope_theta);
        printf("norm eps        %g\n", c->norm_eps);
        printf("tied embeddings %s\n", c->tied_embeddings ? "yes" : "no");
        printf("dtypes         ");
        for (int t = 0; t <= LM_DTYPE_COUNT; t++)
            if (counts[t]) printf(" %s x%zu", t < LM_DTYPE_COUNT ? lm_dtype_name((lm_dtype)t) : "other", counts[t]);
        printf("\n");
        printf("parameters      %zu (%.2fM)\n", lm_model_param_count(m), lm_model_param_count(m) / 1e6);
        if (m->tokenizer) printf("tokenizer       inside the file, %d tokens\n", lm_tokenizer_vocab_size(m->tokenizer));
        else if (m->tokenizer_error) printf("tokenizer       unusable: %s\n", m->tokenizer_error);
        else printf("tokenizer       none (pass --tokenizer FILE to generate)\n");
    }
    lm_model_free(m);
    return rc;
}
