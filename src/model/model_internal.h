/* model_internal.h - loaders and helpers shared by the files of src/model/. */
#ifndef LUMEN_MODEL_INTERNAL_H
#define LUMEN_MODEL_INTERNAL_H

#include "lumen/model.h"

lm_status lm_load_llama2c(const char *path, lm_model **out);
lm_status lm_load_gguf_model(const char *path, lm_model **out);
/* Sanity limits and divisibility of a configuration; messages name path. */
lm_status lm_config_check(const lm_config *c, const char *path);

#endif
