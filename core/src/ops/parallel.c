#include "ops/parallel.h"

struct _DdimParallel {
  int          n_threads;
  GThreadPool *pool;
  GMutex       lock;
  GCond        done_cond;
  int          pending;
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
