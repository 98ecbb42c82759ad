#include <cblas.h>
#include <string.h>

#include "ops/parallel.h"

struct _DdimParallel {
  int          n_threads;
  GThreadPool *pool;
  GMutex       lock;
  GCond        done_cond;
  int          pending;
  int          blas_depth;   /* nesting of ddim_parallel_blas_begin */
  int          blas_saved;   /* the BLAS thread count before the outermost */
};

typedef struct {
  DdimParallel *par;
  DdimRangeFunc func;
  gpointer      data;
  gsize         begin, end;
} Task;

static void
run_task (gpointer item, gpointer user_data)
{
  Task *t = item;
  (void) user_data;
  t->func (t->begin, t->end, t->data);
  g_mutex_lock (&t->par->lock);
  if (--t->par->pending == 0)
    g_cond_signal (&t->par->done_cond);
  g_mutex_unlock (&t->par->lock);
}

DdimParallel *
ddim_parallel_new (int n_threads)
{
  DdimParallel *par = g_new0 (DdimParallel, 1);
  par->n_threads = MAX (1, MIN (n_threads, 64));
  g_mutex_init (&par->lock);
  g_cond_init (&par->done_cond);
  if (par->n_threads > 1)
    par->pool = g_thread_pool_new (run_task, NULL, par->n_threads - 1, TRUE, NULL);
  if (par->pool == NULL)
    par->n_threads = 1;
  return par;
}

void
ddim_parallel_free (DdimParallel *par)
{
  if (par == NULL)
    return;
  if (par->pool)
    g_thread_pool_free (par->pool, FALSE, TRUE);
  g_mutex_clear (&par->lock);
  g_cond_clear (&par->done_cond);
  g_free (par);
}

int
ddim_parallel_get_n_threads (DdimParallel *par)
{
  return par ? par->n_threads : 1;
}

void
ddim_parallel_for (DdimParallel *par, gsize n_items, gsize min_items, DdimRangeFunc func,
                   gpointer data)
{
  gsize parts = par ? (gsize) par->n_threads : 1;
  if (min_items < 1)
    min_items = 1;
  if (parts > n_items / min_items)
    parts = n_items / min_items;
  if (parts <= 1)
    {
      if (n_items > 0)
        func (0, n_items, data);
      return;
    }
  Task tasks[64];
  gsize per = n_items / parts, extra = n_items % parts, at = 0;
  for (gsize i = 0; i < parts; i++)
    {
      gsize len = per + (i < extra ? 1 : 0);
      tasks[i] = (Task) { par, func, data, at, at + len };
      at += len;
    }
  g_mutex_lock (&par->lock);
  par->pending = (int) parts - 1;
  g_mutex_unlock (&par->lock);
  for (gsize i = 1; i < parts; i++)
    g_thread_pool_push (par->pool, &tasks[i], NULL);
  func (tasks[0].begin, tasks[0].end, data);
  g_mutex_lock (&par->lock);
  while (par->pending > 0)
    g_cond_wait (&par->done_cond, &par->lock);
  g_mutex_unlock (&par->lock);
}

void
ddim_parallel_blas_begin (DdimParallel *par)
{
  if (par == NULL || par->n_threads <= 1 || par->blas_depth++ > 0)
    return;
#ifdef OPENBLAS_VERSION
  par->blas_saved = openblas_get_num_threads ();
  if (par->blas_saved != 1)
    openblas_set_num_threads (1);
#endif
}

void
ddim_parallel_blas_end (DdimParallel *par)
{
  if (par == NULL || par->n_threads <= 1 || --par->blas_depth > 0)
    return;
#ifdef OPENBLAS_VERSION
  if (par->blas_saved > 1)
    openblas_set_num_threads (par->blas_saved);
#endif
}

/* The GEMM is cut into two blocks (each one BLAS call), as two threads
 * always cut it, whatever the thread count: the BLAS's result depends on
 * the block shapes, and ddim_unet_run_pair decodes on one thread beside
 * another while promising ddim_unet_run's bits. (On more than two cores
 * these GEMMs, 15% of a 256-px forward, use two of them.) */
#define SGEMM_BLOCKS 2

typedef struct {
  int          m, n, k;
  float        alpha, beta;
  const float *a, *b;
  float       *c;
  int          lda, ldb, ldc;
  gboolean     by_rows;
  int          unit;     /* columns (rows) per unit */
  int          block_at[SGEMM_BLOCKS + 1];   /* first unit of each block */
} SgemmJob;

/* Blocks [begin, end), one BLAS call each. */
static void
sgemm_range (gsize begin, gsize end, gpointer data)
{
  const SgemmJob *j = data;
  for (gsize blk = begin; blk < end; blk++)
    {
      int lo = j->block_at[blk] * j->unit;
      int hi = MIN (j->block_at[blk + 1] * j->unit, j->by_rows ? j->m : j->n);
      if (hi <= lo)
        continue;
      if (j->by_rows)
        cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, hi - lo, j->n, j->k, j->alpha,
                     j->a + (gsize) lo * j->lda, j->lda, j->b, j->ldb, j->beta,
                     j->c + (gsize) lo * j->ldc, j->ldc);
      else
        cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, j->m, hi - lo, j->k, j->alpha,
                     j->a, j->lda, j->b + lo, j->ldb, j->beta, j->c + lo, j->ldc);
    }
}

void
ddim_parallel_sgemm (DdimParallel *par, int m, int n, int k, float alpha, const float *a, int lda,
                     const float *b, int ldb, float beta, float *c, int ldc)
{
  if (m <= 0 || n <= 0)
    return;
  /* Below ~2 MFLOP a hand-off costs more than it saves: one call. */
  if ((double) m * n * k < 1e6 * SGEMM_BLOCKS)
    {
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, alpha, a, lda, b, ldb,
                   beta, c, ldc);
      return;
    }
  /* Column blocks of whole SIMD widths while there are enough columns;
   * otherwise row blocks. The first block takes the odd unit. */
  gboolean by_rows = n < 64 * SGEMM_BLOCKS;
  int unit = by_rows ? 4 : 16;
  int units = ((by_rows ? m : n) + unit - 1) / unit;
  SgemmJob job = { m, n, k, alpha, beta, a, b, c, lda, ldb, ldc, by_rows, unit, { 0 } };
  for (int i = 0, at = 0; i <= SGEMM_BLOCKS; i++)
    {
      job.block_at[i] = at;
      at += units / SGEMM_BLOCKS + (i < units % SGEMM_BLOCKS ? 1 : 0);
    }
  ddim_parallel_blas_begin (par);
  ddim_parallel_for (par, SGEMM_BLOCKS, 1, sgemm_range, &job);
  ddim_parallel_blas_end (par);
}

typedef struct {
  float       *y;
  gsize        len;
  const float *values, *add;
} FillJob;

static void
fill_range (gsize begin, gsize end, gpointer data)
{
  const FillJob *f = data;
  for (gsize r = begin; r < end; r++)
    {
      float v = f->values[r], *y = f->y + r * f->len;
      if (f->add)
        {
          const float *a = f->add + r * f->len;
          for (gsize i = 0; i < f->len; i++)
            y[i] = a[i] + v;
        }
      else
        for (gsize i = 0; i < f->len; i++)
          y[i] = v;
    }
}

void
ddim_parallel_fill_rows (DdimParallel *par, float *y, gsize rows, gsize len, const float *values,
                         const float *add)
{
  g_return_if_fail (y != NULL && values != NULL);
  FillJob f = { y, len, values, add };
  /* At least 64 KiB per range: below that the threads cost more. */
  ddim_parallel_for (par, rows, MAX (1, 16384 / MAX (len, 1)), fill_range, &f);
}

typedef struct {
  float       *dst;
  const float *src;
} MoveJob;

/* Pieces of 16 Ki floats. */
#define MOVE_PIECE 16384

static void
copy_range (gsize begin, gsize end, gpointer data)
{
  const MoveJob *m = data;
  memcpy (m->dst + begin * MOVE_PIECE, m->src + begin * MOVE_PIECE,
          (end - begin) * MOVE_PIECE * sizeof (float));
}

/* A non-overlapping copy: whole pieces in parallel, the tail here. */
static void
copy_parallel (DdimParallel *par, float *dst, const float *src, gsize count)
{
  MoveJob m = { dst, src };
  gsize pieces = count / MOVE_PIECE;
  ddim_parallel_for (par, pieces, 4, copy_range, &m);
  memcpy (dst + pieces * MOVE_PIECE, src + pieces * MOVE_PIECE,
          (count - pieces * MOVE_PIECE) * sizeof (float));
}

void
ddim_parallel_move (DdimParallel *par, float *dst, const float *src, gsize count)
{
  g_return_if_fail (count == 0 || (dst != NULL && src != NULL));
  if (count == 0 || dst == src)
    return;
  gboolean apart = dst + count <= src || src + count <= dst;
  gsize shift = dst < src ? (gsize) (src - dst) : 0;
  if (ddim_parallel_get_n_threads (par) <= 1 || count < 8 * MOVE_PIECE
      || (!apart && shift < count / 8))
    {
      memmove (dst, src, count * sizeof (float));
      return;
    }
  if (apart)
    {
      copy_parallel (par, dst, src, count);
      return;
    }
  /* dst below src, overlapping: each stretch of @shift floats is read
   * before a later stretch's copy overwrites it. */
  for (gsize at = 0; at < count; at += shift)
    copy_parallel (par, dst + at, src + at, MIN (shift, count - at));
}
