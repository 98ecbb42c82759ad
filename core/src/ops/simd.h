/* Run-time choice of instruction set for the hot loops: GCC compiles a
 * function marked DDIM_SIMD_CLONES for AVX-512, AVX2 and plain x86-64 and
 * picks one at load time (the build itself is for any x86-64). Elsewhere
 * it is the plain function. Internal to libddim. */
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define DDIM_SIMD_CLONES __attribute__ ((target_clones ("arch=x86-64-v4", "avx2", "default")))
#else
#define DDIM_SIMD_CLONES
#endif
