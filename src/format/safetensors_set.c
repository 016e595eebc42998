/* safetensors_set.c - the weights of a Hugging Face directory: one model.safetensors or the shards of an index. */
#define _POSIX_C_SOURCE 200809L
#include "lumen/format.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SINGLE_NAME "model.safetensors"
#define INDEX_NAME "model.safetensors.index.json"

/* dir + "/" + name, malloc'd; NULL when out of memory. */
static char *join_path(const char *dir, const char *name) {
    size_t dl = strlen(dir), nl = strlen(name);
    int slash = dl > 0 && dir[dl - 1] != '/';
    char *p = malloc(dl + (size_t)slash + nl + 1);
    if (!p) return NULL;
    memcpy(p, dir, dl);
    if (slash) p[dl] = '/';
    memcpy(p + dl + (size_t)slash, name, nl + 1);
    return p;
}

/* 1 if path names something, 0 if it does not exist; other stat errors count as present so
 * that opening it reports the real reason (e.g. permission denied). */
static int exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 || errno != ENOENT;
}

/* A shard name from the index must stay inside the directory. */
static int plain_file_name(const char *s) {
    return s[0] != 0 && strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static lm_status set_add(lm_st_set *set, lm_safetensors *f) {
    lm_safetensors **files = realloc(set->files, (set->n_files + 1) * sizeof *files);
    if (!files) return LM_ERR_NOMEM;
    set->files = files;
    set->files[set->n_files++] = f;
    return LM_OK;
}

/* Opens dir/file, prefixing any failure with the index that named it. */
static lm_status open_shard(const char *dir, const char *index_path, const char *file, lm_safetensors **out) {
    char *path = join_path(dir, file);
    if (!path) return lm_fail(LM_ERR_NOMEM, "%s: out of memory", index_path);
    lm_status s = lm_safetensors_open(path, out);
    if (s != LM_OK) {
        char why[768];
        snprintf(why, sizeof why, "%s", lm_errmsg());
        s = lm_fail(s, "%s: shard '%s': %s", index_path, file, why);
    }
    free(path);
    return s;
}

/* A tensor in two files would make the weights depend on the lookup order: refuse it. The set
 * holds few files (shards of a few GB each), so a lookup per tensor per earlier file is cheap. */
static lm_status check_unique(const char *what, const lm_st_set *set, char *const *names) {
    for (size_t i = 1; i < set->n_files; i++) {
        const lm_safetensors *f = set->files[i];
        for (size_t t = 0; t < f->n_tensors; t++) {
            for (size_t j = 0; j < i; j++) {
                if (lm_safetensors_find(set->files[j], f->tensors[t].name))
                    return lm_fail(LM_ERR_FORMAT, "%s: tensor '%s' is in two shards, '%s' and '%s'", what,
                                   f->tensors[t].name, names[j], names[i]);
            }
        }
    }
    return LM_OK;
}

static lm_status open_index(const char *dir, const char *index_path, lm_st_set *set) {
    char *text = NULL;
    size_t len = 0;
    lm_status s = lm_read_file(index_path, &text, &len);
    if (s != LM_OK) return s;
    json_error_t err;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    free(text);
    if (!root) return lm_fail(LM_ERR_FORMAT, "%s: not valid JSON: %s (line %d)", index_path, err.text, err.line);
    char **names = NULL; /* distinct shard names in order of first mention; names[i] is files[i] */
    size_t n_names = 0;
    json_t *map = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(map)) {
        s = lm_fail(LM_ERR_FORMAT, "%s: %s", index_path,
                    json_is_object(root) ? "\"weight_map\" is missing or not an object" : "not a JSON object");
        goto done;
    }
    if (json_object_size(map) == 0) {
        s = lm_fail(LM_ERR_FORMAT, "%s: \"weight_map\" is empty", index_path);
        goto done;
    }
    names = lm_calloc(json_object_size(map), sizeof *names);
    if (!names) {
        s = lm_fail(LM_ERR_NOMEM, "%s: out of memory", index_path);
        goto done;
    }
    const char *k;
    json_t *v;
    json_object_foreach(map, k, v) {
        if (!json_is_string(v)) {
            s = lm_fail(LM_ERR_FORMAT, "%s: weight_map entry '%s' is not a string", index_path, k);
            goto done;
        }
        if (!plain_file_name(json_string_value(v))) {
            s = lm_fail(LM_ERR_FORMAT, "%s: weight_map entry '%s' names '%s', not a plain file name in the same directory",
                        index_path, k, json_string_value(v));
            goto done;
        }
        const char *file = json_string_value(v);
        size_t i = 0;
        while (i < n_names && strcmp(names[i], file) != 0) i++;
        if (i < n_names) continue;
        names[n_names] = lm_strdup(file);
        if (!names[n_names]) {
            s = lm_fail(LM_ERR_NOMEM, "%s: out of memory", index_path);
            goto done;
        }
        n_names++;
        lm_safetensors *f;
        s = open_shard(dir, index_path, file, &f);
        if (s != LM_OK) goto done;
        if (set_add(set, f) != LM_OK) {
            lm_safetensors_close(f);
            s = lm_fail(LM_ERR_NOMEM, "%s: out of memory", index_path);
            goto done;
        }
    }
    json_object_foreach(map, k, v) {
        const char *file = json_string_value(v);
        size_t i = 0;
        while (strcmp(names[i], file) != 0) i++; /* every file was added above */
        if (!lm_safetensors_find(set->files[i], k)) {
            s = lm_fail(LM_ERR_FORMAT, "%s: weight_map puts tensor '%s' in '%s', which does not contain it", index_path,
                        k, file);
            goto done;
        }
    }
    s = check_unique(index_path, set, names);
done:
    for (size_t i = 0; i < n_names; i++) free(names[i]);
    free(names);
    json_decref(root);
    return s;
}

lm_status lm_st_set_open_dir(const char *dir, lm_st_set **out) {
    *out = NULL;
    lm_st_set *set = calloc(1, sizeof *set);
    char *index_path = join_path(dir, INDEX_NAME), *single_path = join_path(dir, SINGLE_NAME);
    lm_status s = LM_OK;
    if (!set || !index_path || !single_path) {
        s = lm_fail(LM_ERR_NOMEM, "%s: out of memory", dir);
    } else if (exists(index_path)) {
        /* The index is looked at first. transformers tries model.safetensors first; the two orders
         * differ only for a directory that holds both, which is ambiguous anyway. */
        s = open_index(dir, index_path, set);
    } else if (exists(single_path)) {
        lm_safetensors *f;
        s = lm_safetensors_open(single_path, &f);
        if (s == LM_OK && set_add(set, f) != LM_OK) {
            lm_safetensors_close(f);
            s = lm_fail(LM_ERR_NOMEM, "%s: out of memory", single_path);
        }
    } else {
        s = lm_fail(LM_ERR_IO, "%s: no %s or %s", dir, SINGLE_NAME, INDEX_NAME);
    }
    free(index_path);
    free(single_path);
    if (s != LM_OK) {
        lm_st_set_close(set);
        return s;
    }
    *out = set;
    return LM_OK;
}

void lm_st_set_close(lm_st_set *set) {
    if (!set) return;
    for (size_t i = 0; i < set->n_files; i++) lm_safetensors_close(set->files[i]);
    free(set->files);
    free(set);
}

const lm_st_tensor *lm_st_set_find(const lm_st_set *set, const char *name, const lm_safetensors **file) {
    if (file) *file = NULL;
    if (!set || !name) return NULL;
    for (size_t i = 0; i < set->n_files; i++) {
        const lm_st_tensor *t = lm_safetensors_find(set->files[i], name);
        if (t) {
            if (file) *file = set->files[i];
            return t;
        }
    }
    return NULL;
}
