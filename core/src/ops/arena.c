#include <string.h>

#include "ops/arena.h"

#define ALIGN_FLOATS 16 /* 64 bytes */

static gsize
rounded (gsize n_floats)
{
  gsize n = (n_floats + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
  return n ? n : ALIGN_FLOATS;
}

void
ddim_arena_init (DdimArena *arena)
{
  memset (arena, 0, sizeof *arena);
  arena->overflow = g_array_new (FALSE, FALSE, sizeof (DdimArenaChunk));
}

static void
free_chunks_from (DdimArena *arena, gsize mark)
{
  while (arena->overflow->len > 0)
    {
      DdimArenaChunk *c = &g_array_index (arena->overflow, DdimArenaChunk, arena->overflow->len - 1);
      if (c->offset < mark)
        break;
      g_aligned_free (c->data);
      g_array_set_size (arena->overflow, arena->overflow->len - 1);
    }
}

void
ddim_arena_clear (DdimArena *arena)
{
  if (arena->overflow)
    {
      free_chunks_from (arena, 0);
      g_array_unref (arena->overflow);
    }
  g_aligned_free (arena->base);
  memset (arena, 0, sizeof *arena);
}

float *
ddim_arena_alloc (DdimArena *arena, gsize n_floats)
{
  gsize n = rounded (n_floats);
  gsize start = arena->used;
  arena->used += n;
  if (arena->used > arena->high)
    arena->high = arena->used;
  if (arena->used <= arena->capacity)
    return arena->base + start;
  DdimArenaChunk c = { g_aligned_alloc (n, sizeof (float), 64), start };
  g_array_append_val (arena->overflow, c);
  return c.data;
}

float *
ddim_arena_alloc0 (DdimArena *arena, gsize n_floats)
{
  float *p = ddim_arena_alloc (arena, n_floats);
  memset (p, 0, n_floats * sizeof (float));
  return p;
}

void
ddim_arena_release (DdimArena *arena, gsize mark)
{
  free_chunks_from (arena, mark);
  arena->used = mark;
}

float *
ddim_arena_relocate (DdimArena *arena, gsize mark, const float *src, gsize n_floats)
{
  gsize n = rounded (n_floats);
  if (mark + n <= arena->capacity)
    {
      /* The destination is in the block: move first, then drop what was
       * above (src may live in an overflow chunk). */
      memmove (arena->base + mark, src, n_floats * sizeof (float));
      ddim_arena_release (arena, mark);
      arena->used = mark + n;
      return arena->base + mark;
    }
  /* The destination overflows: copy into a fresh chunk, then free the old
   * chunks above @mark, keeping the new one. */
  float *data = g_aligned_alloc (n, sizeof (float), 64);
  memcpy (data, src, n_floats * sizeof (float));
  ddim_arena_release (arena, mark);
  DdimArenaChunk c = { data, mark };
  g_array_append_val (arena->overflow, c);
  arena->used = mark + n;
  if (arena->used > arena->high)
    arena->high = arena->used;
  return data;
}

float *
ddim_arena_concat_channels (DdimArena *arena, gsize mark, int n, gsize hw, const float *first,
                            int c_first, const float *second, int c_second)
{
  gsize nf = (gsize) c_first * hw, ns = (gsize) c_second * hw, per = nf + ns;
  gsize total = (gsize) n * per;
  gboolean in_place = arena->overflow->len == 0 && arena->used <= arena->capacity
                      && second == arena->base + mark
                      && first == arena->base + mark + rounded ((gsize) n * ns)
                      && first + (gsize) n * nf <= arena->base + arena->used;
  if (!in_place)
    {
      float *cat = ddim_arena_alloc (arena, total);
      for (int b = 0; b < n; b++)
        {
          memcpy (cat + b * per, first + b * nf, nf * sizeof (float));
          memcpy (cat + b * per + nf, second + b * ns, ns * sizeof (float));
        }
      return ddim_arena_relocate (arena, mark, cat, total);
    }

  /* Save @second on top, then move each sample of @first down to its
   * place: sample b goes to mark + b * per from mark + n * ns + b * nf (or
   * above), never past the start of sample b + 1's source, so in order of b
   * nothing is overwritten before it is read. */
  float *saved = ddim_arena_alloc (arena, (gsize) n * ns);
  memcpy (saved, second, (gsize) n * ns * sizeof (float));
  float *cat = arena->base + mark;
  for (int b = 0; b < n; b++)
    memmove (cat + b * per, first + b * nf, nf * sizeof (float));
  for (int b = 0; b < n; b++)
    memcpy (cat + b * per + nf, saved + b * ns, ns * sizeof (float));
  ddim_arena_release (arena, mark);
  arena->used = mark + rounded (total);
  if (arena->used > arena->high)
    arena->high = arena->used;
  return cat;
}

void
ddim_arena_reset (DdimArena *arena)
{
  ddim_arena_release (arena, 0);
  if (arena->high > arena->capacity)
    {
      g_aligned_free (arena->base);
      arena->base = g_aligned_alloc (arena->high, sizeof (float), 64);
      arena->capacity = arena->high;
    }
  arena->high = 0;
}
