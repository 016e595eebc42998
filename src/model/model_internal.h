/* model_internal.h - loaders and helpers shared by the files of src/model/. */
#ifndef LUMEN_MODEL_INTERNAL_H
#define LUMEN_MODEL_INTERNAL_H

#include "lumen/model.h"

lm_status lm_load_llama2c(const char *path, lm_model **out);
lm_status lm_load_gguf_model(const char *path, lm_model **out);
/* Sanity limits and divisibility of a configuration; messages name path. */
lm_status lm_config_check(const lm_config *c, const char *path);

/* Takes ownership of buf (freed with the model); frees buf and fails if it cannot. */
lm_status lm_model_own(lm_model *m, void *buf);
/* Completes a loaded model: RoPE frequencies (with scaling), sanity of the configuration. */
lm_status lm_model_finish(lm_model *m);
lm_status lm_load_hf(const char *dir, lm_model **out);

#endif
