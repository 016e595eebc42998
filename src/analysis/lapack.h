/* lapack.h - the few LAPACK routines analysis/ uses, declared by hand (OpenBLAS ships them, Debian
 * ships no lapack.h with it). Fortran calling convention: every argument by pointer, 32-bit
 * integers (LP64 OpenBLAS), and a hidden length per character argument at the end, which
 * gfortran-built code may rely on, so it is always passed (as 1). */
#ifndef LUMEN_ANALYSIS_LAPACK_H
#define LUMEN_ANALYSIS_LAPACK_H

#include <stddef.h>

void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info, size_t uplo_len);
void dpotrs_(const char *uplo, const int *n, const int *nrhs, const double *a, const int *lda, double *b,
             const int *ldb, int *info, size_t uplo_len);
void dpocon_(const char *uplo, const int *n, const double *a, const int *lda, const double *anorm, double *rcond,
             double *work, int *iwork, int *info, size_t uplo_len);
void dgelsd_(const int *m, const int *n, const int *nrhs, double *a, const int *lda, double *b, const int *ldb,
             double *s, const double *rcond, int *rank, double *work, const int *lwork, int *iwork, int *info);
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work,
             const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len, size_t uplo_len);

#endif
