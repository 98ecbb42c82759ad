/* A bump allocator for activations, reused across forward calls.
 *
 * Allocations are LIFO (mark/release). The first call of a given shape may
 * overflow the block; the overflow is served by separate chunks and the
 * high-water mark is recorded, so that ddim_arena_reset() grows the block
 * once and later calls of the same shape allocate nothing. Offsets are
 * virtual and contiguous either way, so memmove between arena buffers is
 * always safe. */
#pragma once

#include <glib.h>

typedef struct {
  float     *base;
  gsize      capacity;   /* floats in base */
  gsize      used;       /* virtual offset of the top, floats */
  gsize      high;       /* high-water mark since the last reset */
  GPtrArray *overflow;   /* chunks allocated beyond capacity */
} DdimArena;

void   ddim_arena_init (DdimArena *arena);
void   ddim_arena_clear (DdimArena *arena);
/* 64-byte aligned, uninitialised. */
float *ddim_arena_alloc (DdimArena *arena, gsize n_floats);
/* Zero-filled. */
float *ddim_arena_alloc0 (DdimArena *arena, gsize n_floats);
static inline gsize ddim_arena_mark (DdimArena *arena) { return arena->used; }
static inline void  ddim_arena_release (DdimArena *arena, gsize mark) { arena->used = mark; }
/* Frees overflow chunks and grows the block to the high-water mark. Call
 * between forward passes (nothing allocated may be in use). */
void   ddim_arena_reset (DdimArena *arena);
