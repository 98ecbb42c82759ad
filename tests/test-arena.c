/* The activation arena's moves: relocation and the in-place channel
 * concatenation of the UNet decoder, both while a first call overflows the
 * block (chunks) and once the block has grown to the high-water mark. */
#include <string.h>

#include <glib.h>

#include "ops/arena.h"
#include "ops/parallel.h"

static void
fill (float *p, gsize n, float base)
{
  for (gsize i = 0; i < n; i++)
    p[i] = base + (float) i;
}

/* [n, c_first + c_second, hw] from two tensors filled by fill (). */
static void
check_concat (const float *cat, int n, gsize hw, int c_first, float first_base, int c_second,
              float second_base)
{
  gsize nf = (gsize) c_first * hw, ns = (gsize) c_second * hw;
  for (int b = 0; b < n; b++)
    {
      for (gsize i = 0; i < nf; i++)
        g_assert_cmpfloat (cat[b * (nf + ns) + i], ==, first_base + (float) (b * nf + i));
      for (gsize i = 0; i < ns; i++)
        g_assert_cmpfloat (cat[b * (nf + ns) + nf + i], ==, second_base + (float) (b * ns + i));
    }
}

/* Like the decoder: something below, a skip at the mark, h right above it
 * (and scratch above h), then [h, skip] in their place; twice, so that the
 * second call runs in the grown block. */
static void
test_concat_channels (void)
{
  static const int shapes[][4] = {
    /* n, c_first, c_second, hw */
    { 1, 4, 2, 100 }, { 3, 2, 5, 33 }, { 2, 1, 1, 7 }, { 4, 3, 3, 64 },
  };
  for (guint s = 0; s < G_N_ELEMENTS (shapes); s++)
    {
      int n = shapes[s][0], cf = shapes[s][1], cs = shapes[s][2];
      gsize hw = (gsize) shapes[s][3];
      DdimArena arena;
      ddim_arena_init (&arena);
      for (int call = 0; call < 2; call++)
        {
          float *below = ddim_arena_alloc (&arena, 50);
          fill (below, 50, -1000.f);
          gsize mark = ddim_arena_mark (&arena);
          float *skip = ddim_arena_alloc (&arena, (gsize) n * cs * hw);
          fill (skip, (gsize) n * cs * hw, 5000.f);
          float *h = ddim_arena_alloc (&arena, (gsize) n * cf * hw);
          fill (h, (gsize) n * cf * hw, 0.f);
          ddim_arena_alloc (&arena, 10);
          float *cat = ddim_arena_concat_channels (&arena, mark, n, hw, h, cf, skip, cs);
          check_concat (cat, n, hw, cf, 0.f, cs, 5000.f);
          for (gsize i = 0; i < 50; i++)
            g_assert_cmpfloat (below[i], ==, -1000.f + (float) i);
          gsize total = (gsize) n * (cf + cs) * hw;
          g_assert_cmpuint (ddim_arena_mark (&arena), >=, mark + total);
          g_assert_cmpuint (ddim_arena_mark (&arena), <, mark + total + 16);
          if (call == 1)
            /* In the block: in the place of skip and h. */
            g_assert_true (cat == skip);
          /* What follows lands above the concatenation. */
          float *next = ddim_arena_alloc (&arena, 20);
          fill (next, 20, 9e6f);
          check_concat (cat, n, hw, cf, 0.f, cs, 5000.f);
          ddim_arena_reset (&arena);
        }
      ddim_arena_clear (&arena);
    }
}

/* h not right above the skip (something in between, or h below): the
 * general path. */
static void
test_concat_channels_apart (void)
{
  DdimArena arena;
  ddim_arena_init (&arena);
  for (int call = 0; call < 2; call++)
    {
      int n = 2, cf = 3, cs = 2;
      gsize hw = 9;
      gsize mark = ddim_arena_mark (&arena);
      float *h = ddim_arena_alloc (&arena, (gsize) n * cf * hw);
      fill (h, (gsize) n * cf * hw, 0.f);
      ddim_arena_alloc (&arena, 30);
      float *skip = ddim_arena_alloc (&arena, (gsize) n * cs * hw);
      fill (skip, (gsize) n * cs * hw, 5000.f);
      float *cat = ddim_arena_concat_channels (&arena, mark, n, hw, h, cf, skip, cs);
      check_concat (cat, n, hw, cf, 0.f, cs, 5000.f);
      ddim_arena_reset (&arena);
    }
  ddim_arena_clear (&arena);
}

/* Relocating the top chunk of an overflowing call keeps its data. */
static void
test_relocate_overflow (void)
{
  DdimArena arena;
  ddim_arena_init (&arena);
  for (int call = 0; call < 2; call++)
    {
      float *a = ddim_arena_alloc (&arena, 100);
      fill (a, 100, 1.f);
      gsize mark = ddim_arena_mark (&arena);
      ddim_arena_alloc (&arena, 300);
      float *top = ddim_arena_alloc (&arena, 200);
      fill (top, 200, 7.f);
      float *moved = ddim_arena_relocate (&arena, mark, top, 200);
      for (int i = 0; i < 200; i++)
        g_assert_cmpfloat (moved[i], ==, 7.f + (float) i);
      g_assert_cmpuint (ddim_arena_mark (&arena), ==, mark + 208);
      float *after = ddim_arena_alloc (&arena, 10);
      fill (after, 10, 100.f);
      for (int i = 0; i < 200; i++)
        g_assert_cmpfloat (moved[i], ==, 7.f + (float) i);
      for (int i = 0; i < 100; i++)
        g_assert_cmpfloat (a[i], ==, 1.f + (float) i);
      ddim_arena_reset (&arena);
    }
  ddim_arena_clear (&arena);
}

/* ddim_parallel_move against memmove: apart, overlapping downwards by
 * large and small shifts (stretches, serial fallback), upwards, and
 * lengths that are not whole pieces, with two threads. */
static void
test_parallel_move (void)
{
  DdimParallel *par = ddim_parallel_new (2);
  gsize total = 1u << 21;
  float *a = g_new (float, total), *b = g_new (float, total);
  static const gssize cases[][3] = {
    /* dst, src, count */
    { 0, 1000000, 700001 },      /* apart */
    { 1000, 300000, 1500000 },   /* down by 299000: stretches */
    { 0, 200000, 1800000 },      /* down by 200000 */
    { 0, 70000, 1900000 },       /* down by a small shift: serial */
    { 500000, 1000, 1000000 },   /* up, overlapping: serial */
    { 3, 300001, 130000 },       /* down, odd offsets */
    { 7, 8, 100 },               /* small */
  };
  for (guint c = 0; c < G_N_ELEMENTS (cases); c++)
    {
      for (gsize i = 0; i < total; i++)
        a[i] = b[i] = (float) i;
      gsize dst = cases[c][0], src = cases[c][1], count = cases[c][2];
      g_assert_cmpuint (MAX (dst, src) + count, <=, total);
      memmove (b + dst, b + src, count * sizeof (float));
      ddim_parallel_move (par, a + dst, a + src, count);
      g_assert_cmpmem (a, total * sizeof (float), b, total * sizeof (float));
    }
  g_free (a);
  g_free (b);
  ddim_parallel_free (par);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/arena/parallel-move", test_parallel_move);
  g_test_add_func ("/arena/concat-channels", test_concat_channels);
  g_test_add_func ("/arena/concat-channels-apart", test_concat_channels_apart);
  g_test_add_func ("/arena/relocate-overflow", test_relocate_overflow);
  return g_test_run ();
}
