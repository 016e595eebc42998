/* prune.c - pruning by block removal: choose the most linear blocks from a linearity profile and
 * build a model view without them (which lm_model_save_hf writes as an ordinary smaller model). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lumen/analysis.h"

lm_status lm_prune_choose(const lm_linearity_result *r, int k, int *blocks) {
    const int L = r ? r->n_layers : 0;
    if (!r || !r->linearity || k < 0 || k >= L)
        return lm_fail(LM_ERR_ARG, "prune: cannot remove %d of %d blocks (at least one must stay)", k, L);
    int *order = malloc((size_t)L * sizeof *order);
    if (!order) return lm_fail(LM_ERR_NOMEM, "prune: out of memory");
    for (int i = 0; i < L; i++) order[i] = i;
    /* insertion sort, stable: descending score, NaN last, ties by index */
    for (int i = 1; i < L; i++) {
        int b = order[i], j = i;
        double v = r->linearity[b];
        while (j > 0) {
            double u = r->linearity[order[j - 1]];
            int before = !isnan(v) && (isnan(u) || v > u);
            if (!before) break;
            order[j] = order[j - 1];
            j--;
        }
        order[j] = b;
    }
    memcpy(blocks, order, (size_t)k * sizeof *blocks);
    free(order);
    return LM_OK;
}

lm_status lm_model_drop_blocks(const lm_model *m, const int *blocks, int k, lm_model **out) {
    *out = NULL;
    const int L = m->cfg.n_layers;
    if (k < 0 || k >= L) return lm_fail(LM_ERR_ARG, "prune: cannot remove %d of %d blocks (at least one must stay)", k, L);
    char *drop = calloc((size_t)L, 1);
    if (!drop) return lm_fail(LM_ERR_NOMEM, "prune: out of memory");
    for (int i = 0; i < k; i++) {
        if (blocks[i] < 0 || blocks[i] >= L) {
            free(drop);
            return lm_fail(LM_ERR_ARG, "prune: block %d does not exist (the model has blocks 0 .. %d)", blocks[i], L - 1);
        }
        if (drop[blocks[i]]) {
            free(drop);
            return lm_fail(LM_ERR_ARG, "prune: block %d given twice", blocks[i]);
        }
        drop[blocks[i]] = 1;
    }
    lm_model *v = malloc(sizeof *v);
    lm_layer *layers = malloc((size_t)(L - k > 0 ? L - k : 1) * sizeof *layers);
    if (!v || !layers) {
        free(v);
        free(layers);
        free(drop);
        return lm_fail(LM_ERR_NOMEM, "prune: out of memory");
    }
    /* a shallow copy: every pointer is m's; only the layers array and the buffers of blocks made
     * linear on the view (lm_model_set_linear_block) are the view's own, and lm_model_view_free
     * releases nothing else */
    *v = *m;
    v->owned_bufs = NULL;
    v->n_owned_bufs = 0;
    size_t removed = 0;
    int j = 0;
    for (int i = 0; i < L; i++) {
        if (!drop[i]) layers[j++] = m->layers[i];
        else removed += lm_layer_param_count(m, i);
    }
    free(drop);
    v->layers = layers;
    v->cfg.n_layers = L - k;
    v->n_params = m->n_params > removed ? m->n_params - removed : 0;
    *out = v;
    return LM_OK;
}

void lm_model_view_free(lm_model *view) {
    if (!view) return;
    for (size_t i = 0; i < view->n_owned_bufs; i++) free(view->owned_bufs[i]);
    free(view->owned_bufs);
    free(view->layers);
    free(view);
}
