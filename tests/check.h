/* check.h - the tiny test harness: CHECK records a failure and goes on; main returns
 * check_result(), which is non-zero if anything failed. Exit code 77 means "skipped". */
#ifndef LUMEN_TEST_CHECK_H
#define LUMEN_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int check_failures = 0;
static int check_count = 0;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        check_count++;                                                                \
        if (!(cond)) {                                                                \
            check_failures++;                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                             \
    } while (0)

#define CHECKF(cond, ...)                                                             \
    do {                                                                              \
        check_count++;                                                                \
        if (!(cond)) {                                                                \
            check_failures++;                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
        }                                                                             \
    } while (0)

static inline int check_result(void) {
    fprintf(stderr, "%d checks, %d failed\n", check_count, check_failures);
    return check_failures ? 1 : 0;
}

/* Path of an asset under $LUMEN_ASSETS, or NULL (and a message) when it is absent. */
static inline const char *check_asset(const char *rel, char *buf, size_t n) {
    const char *root = getenv("LUMEN_ASSETS");
    if (!root) root = "../shared/assets";
    snprintf(buf, n, "%s/%s", root, rel);
    struct stat st;
    if (stat(buf, &st) != 0) {
        fprintf(stderr, "SKIP: asset %s not found (shared assets absent)\n", buf);
        return NULL;
    }
    return buf;
}

static inline const char *check_tmpdir(void) {
    const char *t = getenv("LUMEN_TMP");
    if (!t) t = "/tmp";
    mkdir(t, 0777);
    return t;
}

#define CHECK_SKIP 77

#endif
