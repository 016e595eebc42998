/* error.c - per-thread error messages and status names. */
#include "lumen/base.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char g_msg[1024];

lm_status lm_fail(lm_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return st;
}

const char *lm_errmsg(void) { return g_msg; }

void lm_clear_error(void) { g_msg[0] = 0; }

const char *lm_status_name(lm_status st) {
    switch (st) {
    case LM_OK: return "ok";
    case LM_ERR_IO: return "i/o error";
    case LM_ERR_FORMAT: return "format error";
    case LM_ERR_UNSUPPORTED: return "unsupported";
    case LM_ERR_ARG: return "bad argument";
    case LM_ERR_NOMEM: return "out of memory";
    case LM_ERR_RANGE: return "out of range";
    }
    return "unknown error";
}
