/* analysis_internal.h - matrix helpers shared by the files of src/analysis/. */
#ifndef LUMEN_ANALYSIS_INTERNAL_H
#define LUMEN_ANALYSIS_INTERNAL_H

#include <stddef.h>

#include "lumen/analysis.h"

/* Copies the float [n, d] matrix src into columns c0 .. c0+d-1 of the double matrix dst, whose
 * rows are ld apart; if sub is given, dst gets src - sub. LM_ERR_ARG (naming what and the
 * element) on a value that is not finite. */
lm_status lm_an_load(double *dst, size_t ld, size_t c0, const float *src, const float *sub, size_t n, size_t d,
                     const char *what);
/* Subtracts each column's mean over the n rows. Sums run in row order, so results do not
 * depend on threads. */
void lm_an_centre(double *a, size_t ld, size_t n, size_t d);
/* Sum of squares of the block. */
double lm_an_sumsq(const double *a, size_t ld, size_t n, size_t d);
/* Whether the dimensions BLAS and LAPACK see (up to n and 2d) fit their 32-bit ints. */
int lm_an_fits_int(size_t n, size_t d);

#endif
