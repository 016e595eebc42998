/* sae_acts.h - reading one hook's activations from the shards `lumen activations` writes (private
 * to src/sae). */
#ifndef LUMEN_SAE_ACTS_H
#define LUMEN_SAE_ACTS_H

#include "lumen/lumen.h"

/* The shards of a complete lm_harvest job, seen as one stream of rows of one hook: row r of the
 * stream is row r - start[k] of shard k. At most one shard is mapped at a time. */
typedef struct sae_acts {
    char *dir;
    char *hook;
    char *model;           /* the manifest's model (the harvested model's path) */
    size_t d;              /* row width (the manifest's d_model) */
    int ctx;               /* the job's window length */
    size_t n_shards;
    uint64_t n_rows;       /* all shards together */
    uint64_t n_tokens, shard_tokens;
    uint64_t *start;       /* [n_shards + 1]: first row of each shard, then n_rows */
    lm_safetensors *cur;   /* the mapped shard (NULL if none) */
    size_t cur_k;
    const lm_st_tensor *t; /* the hook's tensor in cur */
} sae_acts;

/* Reads dir/manifest.json and checks that the job is complete, lists hook, and that every shard
 * holds hook as an F32, F16 or BF16 tensor [its tokens, d_model]. Errors name the file. */
lm_status sae_acts_open(sae_acts *a, const char *dir, const char *hook);
void sae_acts_close(sae_acts *a); /* accepts a zeroed struct */
/* Rows pos .. pos+n-1 of the stream (taken modulo n_rows, so it wraps around) as f32 into
 * dst [n, d]. */
lm_status sae_acts_read(sae_acts *a, uint64_t pos, float *dst, size_t n);

#endif
