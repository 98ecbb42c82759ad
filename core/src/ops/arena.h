/* A bump allocator for activations, reused across forward calls.
 *
 * Allocations are LIFO (mark/release). Offsets are virtual and contiguous:
 * while a call fits in the block, an allocation at offset o is base + o.
 * When a call first needs more than the block, the excess is served by
 * separate chunks (freed again on release, so the footprint never exceeds
 * the high-water mark by much) and the high-water mark is recorded;
 * ddim_arena_reset() then grows the block once, so later calls of the same
 * shape allocate nothing.
 *
 * Large blocks and chunks are mapped from the system directly and
 * unmapped when freed: through malloc, whose threshold for doing so grows
 * with the sizes it has seen freed, the chunks of a first call at a large
 * size stayed resident as heap fragments (a 256x256 forward of the
 * embedded model peaked 50 MiB higher). */
#pragma once

#include <glib.h>

typedef struct {
  float  *data;
  gsize   offset;   /* virtual offset of the chunk, floats */
  gsize   size;     /* floats */
} DdimArenaChunk;

typedef struct {
  float  *base;
  gsize   capacity;   /* floats in base */
  gsize   used;       /* virtual offset of the top, floats */
  gsize   high;       /* high-water mark since the last reset */
  GArray *overflow;   /* DdimArenaChunk, in offset order */
  /* Threads for the passes between GEMMs (borrowed; NULL: inline). The
   * arena is the execution context every op receives. */
  struct _DdimParallel *parallel;
} DdimArena;

void   ddim_arena_init (DdimArena *arena);
void   ddim_arena_clear (DdimArena *arena);
/* 64-byte aligned, uninitialised. */
float *ddim_arena_alloc (DdimArena *arena, gsize n_floats);
/* Zero-filled. */
float *ddim_arena_alloc0 (DdimArena *arena, gsize n_floats);
static inline gsize ddim_arena_mark (DdimArena *arena) { return arena->used; }
/* Frees everything allocated after @mark. */
void   ddim_arena_release (DdimArena *arena, gsize mark);
/* Releases to @mark and allocates @n_floats there, holding a copy of @src
 * (which may lie anywhere above @mark, and is invalid afterwards). Used to
 * move a result down over buffers that are no longer needed. */
float *ddim_arena_relocate (DdimArena *arena, gsize mark, const float *src, gsize n_floats);
/* Releases to @mark and allocates @n samples of @c_first + @c_second
 * channels of @hw values there, each sample @first's channels followed by
 * @second's (the UNet decoder's [h, skip]). Both may lie anywhere above
 * @mark and are invalid afterwards. When @second starts at @mark and @first
 * right after it (a skip and what was computed after it), both in the
 * block, the concatenation is built in their place with a copy of @second
 * as the only extra memory; otherwise through a copy of the result. */
float *ddim_arena_concat_channels (DdimArena *arena, gsize mark, int n, gsize hw,
                                   const float *first, int c_first, const float *second,
                                   int c_second);
/* Grows the block to the high-water mark if a call overflowed. Call between
 * forward passes (nothing allocated may be in use). */
void   ddim_arena_reset (DdimArena *arena);
