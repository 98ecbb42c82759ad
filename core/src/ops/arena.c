#include <string.h>

#include "ops/arena.h"

#define ALIGN_FLOATS 16 /* 64 bytes */

void
ddim_arena_init (DdimArena *arena)
{
  memset (arena, 0, sizeof *arena);
  arena->overflow = g_ptr_array_new_with_free_func (g_aligned_free);
}

void
ddim_arena_clear (DdimArena *arena)
{
  g_aligned_free (arena->base);
  if (arena->overflow)
    g_ptr_array_unref (arena->overflow);
  memset (arena, 0, sizeof *arena);
}

float *
ddim_arena_alloc (DdimArena *arena, gsize n_floats)
{
  gsize n = (n_floats + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
  if (n == 0)
    n = ALIGN_FLOATS;
  gsize start = arena->used;
  arena->used += n;
  if (arena->used > arena->high)
    arena->high = arena->used;
  if (arena->used <= arena->capacity)
    return arena->base + start;
  float *chunk = g_aligned_alloc (n, sizeof (float), 64);
  g_ptr_array_add (arena->overflow, chunk);
  return chunk;
}

float *
ddim_arena_alloc0 (DdimArena *arena, gsize n_floats)
{
  float *p = ddim_arena_alloc (arena, n_floats);
  memset (p, 0, n_floats * sizeof (float));
  return p;
}

void
ddim_arena_reset (DdimArena *arena)
{
  arena->used = 0;
  if (arena->overflow->len > 0 || arena->high > arena->capacity)
    {
      g_ptr_array_set_size (arena->overflow, 0);
      g_aligned_free (arena->base);
      arena->base = g_aligned_alloc (arena->high, sizeof (float), 64);
      arena->capacity = arena->high;
    }
  arena->high = 0;
}
