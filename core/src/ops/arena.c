#include <string.h>

#include "ops/arena.h"
#include "ops/parallel.h"

/* Not under AddressSanitizer, which checks malloc'ed memory only. */
#if defined(G_OS_UNIX) && !defined(__SANITIZE_ADDRESS__)
#define USE_MMAP 1
#include <sys/mman.h>
#endif

#define ALIGN_FLOATS 16 /* 64 bytes */
/* From this size on, memory is mapped (page aligned) rather than malloc'ed. */
#define MAP_MIN_BYTES (256 * 1024)

static float *
block_alloc (gsize n_floats)
{
#ifdef USE_MMAP
  gsize bytes = n_floats * sizeof (float);
  if (bytes >= MAP_MIN_BYTES)
    {
      void *p = mmap (NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED)
        g_error ("%s: failed to map %" G_GSIZE_FORMAT " bytes", G_STRLOC, bytes);
      return p;
    }
#endif
  return g_aligned_alloc (n_floats, sizeof (float), 64);
}

static void
block_free (float *p, gsize n_floats)
{
  if (p == NULL)
    return;
#ifdef USE_MMAP
  gsize bytes = n_floats * sizeof (float);
  if (bytes >= MAP_MIN_BYTES)
    {
      munmap (p, bytes);
      return;
    }
#endif
  (void) n_floats;
  g_aligned_free (p);
}

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
      block_free (c->data, c->size);
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
  block_free (arena->base, arena->capacity);
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
  DdimArenaChunk c = { block_alloc (n), start, n };
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
      ddim_parallel_move (arena->parallel, arena->base + mark, src, n_floats);
      ddim_arena_release (arena, mark);
      arena->used = mark + n;
      return arena->base + mark;
    }
  /* The destination overflows. When @src is the top chunk (as big), that
   * chunk moves down to @mark as it is: no copy, no second buffer. */
  guint len = arena->overflow->len;
  DdimArenaChunk *top = len > 0 ? &g_array_index (arena->overflow, DdimArenaChunk, len - 1)
                                : NULL;
  if (top != NULL && top->data == src && top->offset >= mark && top->size >= n)
    {
      DdimArenaChunk kept = *top;
      g_array_set_size (arena->overflow, len - 1);
      ddim_arena_release (arena, mark);
      kept.offset = mark;
      g_array_append_val (arena->overflow, kept);
      arena->used = mark + kept.size;
      return kept.data;
    }
  /* Otherwise copy into a fresh chunk, then free the old chunks above
   * @mark, keeping the new one. */
  float *data = block_alloc (n);
  memcpy (data, src, n_floats * sizeof (float));
  ddim_arena_release (arena, mark);
  DdimArenaChunk c = { data, mark, n };
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
  ddim_parallel_move (arena->parallel, saved, second, (gsize) n * ns);
  float *cat = arena->base + mark;
  for (int b = 0; b < n; b++)
    ddim_parallel_move (arena->parallel, cat + b * per, first + b * nf, nf);
  for (int b = 0; b < n; b++)
    ddim_parallel_move (arena->parallel, cat + b * per + nf, saved + b * ns, ns);
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
      block_free (arena->base, arena->capacity);
      arena->base = block_alloc (arena->high);
      arena->capacity = arena->high;
    }
  arena->high = 0;
}
