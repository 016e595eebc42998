/* file.c - read-only mappings, whole-file reads and atomic (temp + fsync + rename) writes. */
#define _GNU_SOURCE
#include "lumen/base.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

lm_status lm_map_file(const char *path, lm_mapped_file *out) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lm_fail(LM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return lm_fail(LM_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return lm_fail(LM_ERR_IO, "%s: not a regular file", path);
    }
    out->size = (size_t)st.st_size;
    if (out->size > 0) {
        void *p = mmap(NULL, out->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return lm_fail(LM_ERR_IO, "%s: cannot mmap: %s", path, strerror(e));
        }
        out->data = p;
    }
    close(fd);
    out->path = lm_strdup(path);
    if (!out->path) {
        lm_unmap_file(out);
        return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    }
    return LM_OK;
}

void lm_unmap_file(lm_mapped_file *f) {
    if (!f) return;
    if (f->data && f->size) munmap((void *)f->data, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

lm_status lm_read_file(const char *path, char **out, size_t *size) {
    *out = NULL;
    if (size) *size = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return lm_fail(LM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        fclose(fp);
        return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    }
    for (;;) {
        size_t got = fread(buf + n, 1, cap - n, fp);
        n += got;
        if (n < cap) {
            if (ferror(fp)) {
                free(buf);
                fclose(fp);
                return lm_fail(LM_ERR_IO, "%s: read error", path);
            }
            break;
        }
        if (cap > SIZE_MAX / 4) {
            free(buf);
            fclose(fp);
            return lm_fail(LM_ERR_NOMEM, "%s: file too large", path);
        }
        char *nb = realloc(buf, cap * 2 + 1);
        if (!nb) {
            free(buf);
            fclose(fp);
            return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
        }
        buf = nb;
        cap *= 2;
    }
    fclose(fp);
    buf[n] = 0;
    *out = buf;
    if (size) *size = n;
    return LM_OK;
}

static void fsync_dir_of(const char *path) {
    char *copy = lm_strdup(path);
    if (!copy) return;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(copy);
}

lm_status lm_atomic_open(lm_atomic_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    size_t n = strlen(path) + 32;
    f->tmp_path = malloc(n);
    f->path = lm_strdup(path);
    if (!f->tmp_path || !f->path) {
        free(f->tmp_path);
        free(f->path);
        memset(f, 0, sizeof *f);
        return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(f->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    f->fp = fopen(f->tmp_path, "wb");
    if (!f->fp) {
        lm_status st = lm_fail(LM_ERR_IO, "%s: cannot create: %s", f->tmp_path, strerror(errno));
        free(f->tmp_path);
        free(f->path);
        memset(f, 0, sizeof *f);
        return st;
    }
    return LM_OK;
}

lm_status lm_atomic_write(lm_atomic_file *f, const void *data, size_t size) {
    if (size && fwrite(data, 1, size, f->fp) != size)
        return lm_fail(LM_ERR_IO, "%s: write failed: %s", f->tmp_path, strerror(errno));
    return LM_OK;
}

void lm_atomic_abort(lm_atomic_file *f) {
    if (f->fp) fclose(f->fp);
    if (f->tmp_path) unlink(f->tmp_path);
    free(f->tmp_path);
    free(f->path);
    memset(f, 0, sizeof *f);
}

lm_status lm_atomic_commit(lm_atomic_file *f) {
    lm_status st = LM_OK;
    if (fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0)
        st = lm_fail(LM_ERR_IO, "%s: flush failed: %s", f->tmp_path, strerror(errno));
    if (fclose(f->fp) != 0 && st == LM_OK) st = lm_fail(LM_ERR_IO, "%s: close failed: %s", f->tmp_path, strerror(errno));
    f->fp = NULL;
    if (st == LM_OK && rename(f->tmp_path, f->path) != 0)
        st = lm_fail(LM_ERR_IO, "%s: cannot rename into place: %s", f->path, strerror(errno));
    if (st != LM_OK) {
        lm_atomic_abort(f);
        return st;
    }
    fsync_dir_of(f->path);
    free(f->tmp_path);
    free(f->path);
    memset(f, 0, sizeof *f);
    return LM_OK;
}

lm_status lm_write_file_atomic(const char *path, const void *data, size_t size) {
    lm_atomic_file f;
    lm_status st = lm_atomic_open(&f, path);
    if (st != LM_OK) return st;
    st = lm_atomic_write(&f, data, size);
    if (st != LM_OK) {
        lm_atomic_abort(&f);
        return st;
    }
    return lm_atomic_commit(&f);
}

lm_status lm_jsonl_keep_steps(const char *path, long long max_step) {
    if (access(path, F_OK) != 0) return LM_OK;
    char *text = NULL;
    size_t n = 0;
    lm_status st = lm_read_file(path, &text, &n);
    if (st != LM_OK) return st;
    char *out = malloc(n + 1);
    size_t o = 0;
    if (!out) {
        free(text);
        return lm_fail(LM_ERR_NOMEM, "%s: out of memory", path);
    }
    for (char *line = text; line < text + n;) {
        char *nl = memchr(line, '\n', (size_t)(text + n - line));
        size_t len = nl ? (size_t)(nl - line) + 1 : (size_t)(text + n - line);
        const char *sp = strstr(line, "\"step\":");
        long long s = sp && sp < line + len ? strtoll(sp + 7, NULL, 10) : -1;
        if (nl && s >= 0 && s <= max_step) {
            memcpy(out + o, line, len);
            o += len;
        }
        line += len;
    }
    st = lm_write_file_atomic(path, out, o);
    free(out);
    free(text);
    return st;
}
