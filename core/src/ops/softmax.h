/* A vectorised exponential and the softmax pieces built on it (the hot loop
 * of attention: one exp per score). The exponential is accurate to about
 * 1 ulp where the result is a normal float; results below FLT_MIN are 0
 * (x < -87.3365: no subnormals, which are slow), above FLT_MAX +inf;
 * exp(-inf) = 0 and NaN stays NaN. */
#pragma once

#include <glib.h>

/* y[i] = exp(x[i]) for i < n; @y may equal @x. */
void   ddim_vexp (const float *x, float *y, gsize n);

/* Largest of x[0 .. n) (n > 0), NaNs ignored (-inf when all are NaN). */
float  ddim_vmax (const float *x, gsize n);

/* x[i] = exp(x[i] - shift) in place; returns their sum. */
double ddim_vexp_shifted_sum (float *x, gsize n, float shift);

/* Softmax of each row of @s [rows, cols], in place (max subtracted first,
 * so large scores do not overflow). */
void   ddim_softmax_rows (float *s, int rows, int cols);

/* The portable variant of ddim_vexp, which runs where the CPU lacks AVX2
 * (the dispatching one picks per call). For tests. */
void   ddim_vexp_portable (const float *x, float *y, gsize n);
