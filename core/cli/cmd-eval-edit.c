/* ddim eval-edit [MODEL] --classifier DIR: how well the class directions
 * ("toward sneaker") of a Fashion-MNIST model work. For each class
 * direction, the first N test images of the other classes are inverted,
 * edited along it, and classified; the report gives the share now
 * classified as the target class and the PSNR of the edit to the source
 * outside the changed shape (ddim/edit-score.h). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "labelled-data.h"
#include "ddim/classifier.h"
#include "ddim/directions.h"
#include "ddim/edit.h"
#include "ddim/edit-score.h"
#include "ddim/exact.h"
#include "ddim/image.h"

#define CMD "eval-edit"
#define N_CLASSES DDIM_FASHION_MNIST_N_CLASSES
/* Source/edit pairs per row of --samples-png. */
#define GRID_PAIRS 8
/* Issue #5's target for the average success. */
#define TARGET_SUCCESS 0.80

typedef struct {
  const DdimDirection *direction;  /* borrowed from the directions set */
  int                  target;     /* class label */
  int                 *indices;    /* dataset indices of its sources, owned */
} Target;

typedef struct {
  double        strength;
  int           t_edit;
  DdimEditScore score;
  double        seconds;
} Row;

typedef struct {
  DdimModel        *model;
  DdimClassifier   *classifier;
  const DdimDataset *ds;
  Target           *targets;
  int               n_targets;
  GArray           *strengths;     /* double; empty: each direction's recommended */
  int               per_class, t_edit, batch, grid_pairs;
  DdimRunOptions    run;
  /* How the sources are inverted; their latents are decoded (and edited)
   * with that method's decoder, DDIM or BDIA. */
  DdimInversionMethod method;
  DdimExactOptions  exact;
  /* Score source + (edit - reconstruction), what the GIMP plug-in shows,
   * instead of the edit itself. */
  gboolean          keep_detail;
  /* Decode every latent with DDIM (a pair method's first state), as the
   * plug-in did with BDIA latents. */
  gboolean          ddim_decoder;

  /* Every source image once (the directions' source sets overlap). */
  int              *pos_of;        /* dataset index -> row in x0/latents, or -1 */
  int               n_sources;
  float            *x0, *latents;
  float            *pairs;         /* BDIA: the latents' second states */
  float            *recs;          /* the reconstructions (strength 0) */
  double            rec_seconds;

  Row              *rows;          /* n_targets x n_strengths */
  int               n_strengths;
  DdimEditScore     baseline;      /* reconstructions, target: their own class */
  double            invert_seconds;
  int               invert_evals;  /* model evaluations of all inversions */
  DdimEditStats     edit_stats;    /* of all edit decodings */
  int               edit_batches, edit_images;
  float            *grid;          /* rows x 2 grid_pairs cells */

  /* Progress in batched model steps over the whole job (steps of one
   * batch count once: the progress printer expects steps of 1). */
  DdimProgressFunc  progress;
  gpointer          progress_data;
  int               offset, total;
} EvalJob;

static void
job_progress (int done, int total, gpointer data)
{
  (void) total;
  EvalJob *j = data;
  j->progress (j->offset + done, j->total, j->progress_data);
}

static gsize
image_count (const EvalJob *j)
{
  return (gsize) j->ds->channels * j->ds->size * j->ds->size;
}

/* Copies the @n images of @indices (dataset indices) from @from (x0 or
 * latents, rows by pos_of) into @out. */
static void
gather_rows (const EvalJob *j, const float *from, const int *indices, int n, float *out)
{
  gsize per = image_count (j);
  for (int i = 0; i < n; i++)
    memcpy (out + (gsize) i * per, from + (gsize) j->pos_of[indices[i]] * per,
            per * sizeof (float));
}

/* Runs @func (ddim_invert or ddim_sample) over every source in batches. */
static gboolean
run_all_sources (EvalJob *j, CliRunFunc func, float *x, GError **error)
{
  int S = j->ds->size;
  gsize per = image_count (j);
  for (int b = 0; b < j->n_sources; b += j->batch)
    {
      if (!func (j->model->unet, j->model->schedule, x + (gsize) b * per,
                 MIN (j->batch, j->n_sources - b), S, S, &j->run, error))
        return FALSE;
      j->offset += j->run.steps;
    }
  return TRUE;
}

static gboolean
is_bdia (const EvalJob *j)
{
  return ddim_inversion_method_decoder (j->method) == DDIM_METHOD_BDIA && !j->ddim_decoder;
}

/* Inverts every source: DDIM in batches, other methods one by one. */
static gboolean
invert_sources (EvalJob *j, GError **error)
{
  gsize per = image_count (j);
  memcpy (j->latents, j->x0, (gsize) j->n_sources * per * sizeof (float));
  if (j->method == DDIM_METHOD_DDIM)
    {
      if (!run_all_sources (j, ddim_invert, j->latents, error))
        return FALSE;
      j->invert_evals += j->n_sources * j->run.steps;   /* per image */
      return TRUE;
    }
  int S = j->ds->size;
  for (int i = 0; i < j->n_sources; i++)
    {
      DdimExactStats st = { 0 };
      g_autoptr (DdimLatent) l = ddim_invert_with_method (j->model->unet, j->model->schedule,
                                                          j->x0 + (gsize) i * per, S, S,
                                                          j->method, &j->exact, &j->run, &st,
                                                          error);
      if (l == NULL)
        return FALSE;
      memcpy (j->latents + (gsize) i * per, l->latent, per * sizeof (float));
      if (j->pairs)
        memcpy (j->pairs + (gsize) i * per, l->latent_pair, per * sizeof (float));
      j->invert_evals += st.model_evals;
      j->offset += j->run.steps;
    }
  return TRUE;
}

/* Decodes (and edits) @n latents @x with their pairs @pairs (BDIA). */
static gboolean
edit_batch (EvalJob *j, const DdimDirection *d, double strength, int t_edit, float *x,
            const float *pairs, int n, DdimEditStats *stats, GError **error)
{
  int S = j->ds->size;
  if (is_bdia (j))
    return ddim_edit_bdia (j->model->unet, j->model->schedule, x, pairs, n, S, S,
                           j->exact.bdia_gamma, d, strength, t_edit, &j->run, stats, error);
  return ddim_edit_counted (j->model->unet, j->model->schedule, x, n, S, S, d, strength, t_edit,
                            &j->run, stats, error);
}

static gboolean
score_reconstructions (EvalJob *j, GError **error)
{
  gsize per = image_count (j);
  gint64 start = g_get_monotonic_time ();
  float *rec = j->recs = g_memdup2 (j->latents, (gsize) j->n_sources * per * sizeof (float));
  if (!is_bdia (j) && !run_all_sources (j, ddim_sample, rec, error))
    return FALSE;
  for (int b = 0; is_bdia (j) && b < j->n_sources; b += j->batch)
    {
      if (!edit_batch (j, j->targets[0].direction, 0.0, 0, rec + (gsize) b * per,
                       j->pairs + (gsize) b * per, MIN (j->batch, j->n_sources - b), NULL,
                       error))
        return FALSE;
      j->offset += j->run.steps;
    }
  j->rec_seconds = (g_get_monotonic_time () - start) / 1e6;
  g_autofree int *predicted = g_new (int, j->n_sources);
  if (!ddim_classifier_predict (j->classifier, rec, j->n_sources, predicted, NULL, error))
    return FALSE;
  int S = j->ds->size;
  for (int i = 0; i < j->ds->n; i++)
    if (j->pos_of[i] >= 0)
      {
        int r = j->pos_of[i];
        ddim_edit_score_add (&j->baseline, j->x0 + (gsize) r * per, rec + (gsize) r * per,
                             predicted + r, j->ds->labels[i], 1, j->ds->channels, S, S);
      }
  return TRUE;
}

/* Edits target @t's sources at row @row's strength, scoring them. */
static gboolean
edit_target (EvalJob *j, const Target *t, Row *row, int grid_row, GError **error)
{
  int S = j->ds->size, C = j->ds->channels;
  gsize per = image_count (j);
  g_autofree float *src = g_new (float, (gsize) j->batch * per);
  g_autofree float *x = g_new (float, (gsize) j->batch * per);
  g_autofree float *pairs = j->pairs ? g_new (float, (gsize) j->batch * per) : NULL;
  g_autofree int *predicted = g_new (int, j->batch);
  gint64 start = g_get_monotonic_time ();
  for (int b = 0; b < j->per_class; b += j->batch)
    {
      int nb = MIN (j->batch, j->per_class - b);
      gather_rows (j, j->x0, t->indices + b, nb, src);
      gather_rows (j, j->latents, t->indices + b, nb, x);
      if (pairs)
        gather_rows (j, j->pairs, t->indices + b, nb, pairs);
      if (!edit_batch (j, t->direction, row->strength, j->t_edit, x, pairs, nb, &j->edit_stats,
                       error))
        return FALSE;
      j->edit_batches++;
      j->edit_images += nb;
      if (j->keep_detail)
        {
          g_autofree float *rec = g_new (float, (gsize) nb * per);
          gather_rows (j, j->recs, t->indices + b, nb, rec);
          for (gsize k = 0; k < (gsize) nb * per; k++)
            x[k] = src[k] + (x[k] - rec[k]);
        }
      if (!ddim_classifier_predict (j->classifier, x, nb, predicted, NULL, error))
        return FALSE;
      j->offset += j->run.steps;
      ddim_edit_score_add (&row->score, src, x, predicted, t->target, nb, C, S, S);
      /* The first pairs, source then edit, for --samples-png. */
      for (int i = 0; j->grid && i < nb && b + i < j->grid_pairs; i++)
        {
          float *cell = j->grid + ((gsize) grid_row * 2 * j->grid_pairs + 2 * (b + i)) * per;
          memcpy (cell, src + (gsize) i * per, per * sizeof (float));
          memcpy (cell + per, x + (gsize) i * per, per * sizeof (float));
        }
    }
  row->seconds = (g_get_monotonic_time () - start) / 1e6;
  return TRUE;
}

static gboolean
eval_job (gpointer data, DdimProgressFunc progress, gpointer progress_data,
          GCancellable *cancellable, GError **error)
{
  EvalJob *j = data;
  j->progress = progress;
  j->progress_data = progress_data;
  j->run.progress = job_progress;
  j->run.progress_data = j;
  j->run.cancellable = cancellable;
  int steps = j->run.steps;
  int source_batches = (j->n_sources + j->batch - 1) / j->batch;
  int edit_batches = (j->per_class + j->batch - 1) / j->batch;
  int invert_runs = j->method == DDIM_METHOD_DDIM ? source_batches : j->n_sources;
  j->total = (invert_runs + source_batches + j->n_targets * j->n_strengths * edit_batches)
             * steps;
  j->offset = 0;

  gint64 start = g_get_monotonic_time ();
  if (!invert_sources (j, error))
    return FALSE;
  j->invert_seconds = (g_get_monotonic_time () - start) / 1e6;
  if (!score_reconstructions (j, error))
    return FALSE;
  for (int t = 0; t < j->n_targets; t++)
    for (int s = 0; s < j->n_strengths; s++)
      {
        int r = t * j->n_strengths + s;
        if (!edit_target (j, &j->targets[t], &j->rows[r], r, error))
          {
            g_prefix_error (error, "%s: ", j->targets[t].direction->name);
            return FALSE;
          }
      }
  return TRUE;
}

/* ---- choosing what to evaluate ---- */

/* The class directions of @set: those named in @classes ("a,b"; each must
 * be a class and in the set), else every direction named after a class. */
static Target *
pick_targets (DdimDirectionSet *set, const char *path, const char *classes, int *n,
              GError **error)
{
  g_autofree Target *targets = g_new0 (Target, N_CLASSES);
  *n = 0;
  if (classes)
    {
      g_auto (GStrv) parts = g_strsplit (classes, ",", -1);
      for (int i = 0; parts[i]; i++)
        {
          int label;
          if (!ddim_fashion_mnist_class_from_name (g_strstrip (parts[i]), &label, error))
            return NULL;
          const char *slug = ddim_fashion_mnist_class_slug (label);
          DdimDirection *d = ddim_direction_set_lookup (set, slug, error);
          if (d == NULL)
            {
              g_prefix_error (error, "%s: ", path);
              return NULL;
            }
          gboolean seen = FALSE;
          for (int k = 0; k < *n; k++)
            seen = seen || targets[k].target == label;
          if (!seen)
            targets[(*n)++] = (Target){ d, label, NULL };
        }
      return g_steal_pointer (&targets);
    }
  for (guint i = 0; i < ddim_direction_set_get_n (set); i++)
    {
      DdimDirection *d = ddim_direction_set_get_nth (set, i);
      for (int k = 0; k < N_CLASSES; k++)
        if (g_str_equal (d->name, ddim_fashion_mnist_class_slug (k)) && *n < N_CLASSES)
          targets[(*n)++] = (Target){ d, k, NULL };
    }
  if (*n == 0)
    {
      g_autofree char *names = ddim_direction_set_list_names (set);
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "%s has no class direction (named t-shirt, trouser, ..., ankle-boot; it has "
                   "%s); fit them with 'ddim directions fit MODEL --by-class --data "
                   "fashion-mnist'", path, names);
      return NULL;
    }
  return g_steal_pointer (&targets);
}

static void
free_targets (Target *targets, int n)
{
  for (int i = 0; targets && i < n; i++)
    g_free (targets[i].indices);
  g_free (targets);
}

/* ---- report ---- */

static char *
format_db (double db)
{
  return isnan (db) ? g_strdup ("-") : isinf (db) ? g_strdup ("inf")
                                                  : g_strdup_printf ("%.2f", db);
}

static void
print_report (const EvalJob *j, const char *model_dir, const char *data,
              const char *classifier_dir, const char *directions_path)
{
  int S = j->ds->size;
  printf ("Class directions of %s (%s), classified by %s.\n", model_dir, directions_path,
          classifier_dir);
  printf ("Each edits the first %d %s images of the other classes (%d steps, %dx%d; "
          "inversion %s, decoded and edited with %s).\n"
          "Changed shape: pixels where the source or the edit is above gray %.2f, grown by "
          "%d pixel%s; PSNR over the rest.\n\n", j->per_class, data, j->run.steps, S, S,
          ddim_inversion_method_to_string (j->method),
          j->ddim_decoder ? "ddim" : ddim_inversion_method_to_string (
                                        ddim_inversion_method_decoder (j->method)),
          (DDIM_EDIT_SCORE_THRESHOLD + 1) / 2, DDIM_EDIT_SCORE_DILATE,
          DDIM_EDIT_SCORE_DILATE == 1 ? "" : "s");
  printf ("%-12s %10s %6s %8s %12s %7s %8s\n", "direction", "strength", "t", "success",
          "PSNR out dB", "inside", "seconds");
  for (int t = 0; t < j->n_targets; t++)
    for (int s = 0; s < j->n_strengths; s++)
      {
        const Row *r = &j->rows[t * j->n_strengths + s];
        g_autofree char *db = format_db (ddim_edit_score_psnr (&r->score));
        printf ("%-12s %10.4g %6d %7.1f%% %12s %6.1f%% %8.1f\n", j->targets[t].direction->name,
                r->strength, r->t_edit, 100 * ddim_edit_score_success (&r->score), db,
                100 * ddim_edit_score_inside_share (&r->score), r->seconds);
      }
  for (int s = 0; s < j->n_strengths; s++)
    {
      double mean = 0;
      for (int t = 0; t < j->n_targets; t++)
        mean += ddim_edit_score_success (&j->rows[t * j->n_strengths + s].score);
      mean /= j->n_targets;
      g_autofree char *which = j->strengths->len
                                   ? g_strdup_printf ("strength %g", j->rows[s].strength)
                                   : g_strdup ("the recommended strengths");
      printf ("\nMean success over %d direction%s at %s: %.1f%% (target >= %.0f%%: %s)",
              j->n_targets, j->n_targets == 1 ? "" : "s", which, 100 * mean,
              100 * TARGET_SUCCESS, mean >= TARGET_SUCCESS ? "met" : "not met");
      double db = 0;
      for (int t = 0; t < j->n_targets; t++)
        db += ddim_edit_score_psnr (&j->rows[t * j->n_strengths + s].score);
      g_autofree char *mean_db = format_db (db / j->n_targets);
      printf ("; mean PSNR out %s dB", mean_db);
    }
  printf ("\n");
  g_autofree char *base_db = format_db (ddim_edit_score_psnr (&j->baseline));
  printf ("Reconstructions (strength 0) of the %d source images: %.1f%% keep their class, "
          "PSNR out %s dB, inside %.1f%%; inversion took %.1f s (%.3f s/image).\n",
          j->n_sources, 100 * ddim_edit_score_success (&j->baseline), base_db,
          100 * ddim_edit_score_inside_share (&j->baseline), j->invert_seconds,
          j->invert_seconds / j->n_sources);
  double edit_seconds = 0;
  for (int r = 0; r < j->n_targets * j->n_strengths; r++)
    edit_seconds += j->rows[r].seconds;
  double per_edit = j->edit_batches ? (double) j->edit_stats.model_evals / j->edit_batches : 0;
  double halves = j->edit_batches ? (double) j->edit_stats.shifted_decoders / j->edit_batches : 0;
  double inv = (double) j->invert_evals / j->n_sources;
  printf ("Model evaluations per image: inversion %.1f, edit %.1f (+ %.1f shifted decoder "
          "halves), reconstruction %d%s; seconds per image (batches of %d): inversion %.3f, "
          "edit %.3f, reconstruction %.3f.\n", inv, per_edit, halves,
          is_bdia (j) ? 0 : j->run.steps,
          is_bdia (j) ? " (exact latent: none needed)"
                      : j->keep_detail ? " (scored: source + edit - reconstruction)"
                                       : " (not used: the edit itself is scored)",
          j->batch, j->invert_seconds / j->n_sources,
          j->edit_images ? edit_seconds / j->edit_images : 0, j->rec_seconds / j->n_sources);
  if (j->n_strengths < 2)
    return;
  /* A sweep: the strength with the highest success per direction (the
   * smallest of equals: the gentlest edit that does it). */
  printf ("\nHighest success per direction (record it with 'ddim directions set-range "
          "%s NAME --max S'):\n", directions_path);
  for (int t = 0; t < j->n_targets; t++)
    {
      const Row *best = NULL;
      for (int s = 0; s < j->n_strengths; s++)
        {
          const Row *r = &j->rows[t * j->n_strengths + s];
          if (best == NULL
              || ddim_edit_score_success (&r->score) > ddim_edit_score_success (&best->score)
              || (ddim_edit_score_success (&r->score) == ddim_edit_score_success (&best->score)
                  && fabs (r->strength) < fabs (best->strength)))
            best = r;
        }
      printf ("  %-12s %.1f%% at strength %g\n", j->targets[t].direction->name,
              100 * ddim_edit_score_success (&best->score), best->strength);
    }
}

/* The rows to fill: each direction at each strength (the list given, or
 * its recommended one), after checking it fits the model. */
static int
prepare_rows (EvalJob *j, const char *path)
{
  const DdimUNetConfig *c = ddim_unet_get_config (j->model->unet);
  g_autoptr (GError) error = NULL;
  j->n_strengths = j->strengths->len ? (int) j->strengths->len : 1;
  j->rows = g_new0 (Row, (gsize) j->n_targets * j->n_strengths);
  for (int t = 0; t < j->n_targets; t++)
    {
      const DdimDirection *d = j->targets[t].direction;
      if (!ddim_direction_check (d, j->model->unet, j->model->weights_sha256, c->sample_size,
                                 c->sample_size, &error))
        {
          g_prefix_error (&error, "%s: ", path);
          return cli_error (CMD, error);
        }
      if (j->strengths->len == 0 && d->strength_max == 0)
        return cli_fail (CMD, "%s: '%s' has no recommended strength; give --strength S "
                         "(or record one with 'ddim directions set-range')", path, d->name);
      for (int s = 0; s < j->n_strengths; s++)
        {
          Row *r = &j->rows[t * j->n_strengths + s];
          r->strength = j->strengths->len ? g_array_index (j->strengths, double, s)
                                          : d->strength_max;
          r->t_edit = j->t_edit >= 0 ? j->t_edit
                                     : ddim_edit_default_t_edit (d, j->model->schedule);
          ddim_edit_score_init (&r->score, DDIM_EDIT_SCORE_THRESHOLD, DDIM_EDIT_SCORE_DILATE);
        }
    }
  return CLI_EXIT_OK;
}

/* Each direction's sources, the first per_class images of @ds not of its
 * class; and every image needed, once, in dataset order (the sets
 * overlap: all of them lie in a short prefix of the data). */
static int
prepare_sources (EvalJob *j, const DdimDataset *ds, const char *data)
{
  g_autoptr (GError) error = NULL;
  j->ds = ds;
  j->pos_of = g_new (int, ds->n);
  for (int i = 0; i < ds->n; i++)
    j->pos_of[i] = -1;
  for (int t = 0; t < j->n_targets; t++)
    {
      Target *tg = &j->targets[t];
      tg->indices = ddim_dataset_find_labels (ds, tg->target, TRUE, j->per_class, &error);
      if (tg->indices == NULL)
        return cli_fail (CMD, "%s, sources for '%s': %s", data, tg->direction->name,
                         error->message);
      for (int i = 0; i < j->per_class; i++)
        j->pos_of[tg->indices[i]] = 0;
    }
  g_autofree int *used = g_new (int, ds->n);
  j->n_sources = 0;
  for (int i = 0; i < ds->n; i++)
    if (j->pos_of[i] == 0)
      {
        j->pos_of[i] = j->n_sources;
        used[j->n_sources++] = i;
      }
  j->x0 = ddim_dataset_gather (ds, used, j->n_sources);
  j->latents = g_new (float, (gsize) j->n_sources * image_count (j));
  if (ddim_inversion_method_is_pair (j->method))
    j->pairs = g_new (float, (gsize) j->n_sources * image_count (j));
  return CLI_EXIT_OK;
}

static void
eval_job_clear (EvalJob *j)
{
  free_targets (j->targets, j->n_targets);
  g_free (j->rows);
  g_free (j->pos_of);
  g_free (j->x0);
  g_free (j->latents);
  g_free (j->pairs);
  g_free (j->recs);
  g_free (j->grid);
  memset (j, 0, sizeof *j);
}

/* ---- the command ---- */

int
cli_cmd_eval_edit (int argc, char **argv)
{
  g_autofree char *classifier_dir = NULL, *data = NULL, *directions = NULL, *classes = NULL;
  g_autofree char *strength = NULL, *samples_png = NULL, *method = NULL;
  int per_class = 100, steps = 50, t_edit = -1, batch = 25;
  gboolean quiet = FALSE, keep_detail = FALSE, ddim_decoder = FALSE;
  GOptionEntry entries[] = {
    { "classifier", 'c', 0, G_OPTION_ARG_FILENAME, &classifier_dir,
      "Fashion-MNIST classifier folder (required), e.g. models/fashion-mnist-classifier",
      "DIR" },
    { "data", 0, 0, G_OPTION_ARG_STRING, &data,
      "Labelled source images: fashion-mnist-test (default) or fashion-mnist", "DATA" },
    { "directions", 0, 0, G_OPTION_ARG_FILENAME, &directions,
      "Directions file (default MODEL/directions.safetensors)", "FILE" },
    { "classes", 0, 0, G_OPTION_ARG_STRING, &classes,
      "Evaluate only these class directions (default: every direction named after a class)",
      "NAME,..." },
    { "per-class", 'n', 0, G_OPTION_ARG_INT, &per_class,
      "Source images per direction: the first N whose label is not the target (default 100)",
      "N" },
    { "strength", 's', 0, G_OPTION_ARG_STRING, &strength,
      "Strength (default: each direction's recommended one, the upper end of its range); a "
      "list S1,S2,... sweeps them", "S" },
    { "steps", 0, 0, G_OPTION_ARG_INT, &steps, "DDIM steps of inversion and edit (default 50)",
      "N" },
    { "t-edit", 't', 0, G_OPTION_ARG_INT, &t_edit,
      "Edit timestep (default: each direction's own, as 'ddim edit')", "T" },
    { "method", 0, 0, G_OPTION_ARG_STRING, &method,
      "Inversion method: ddim (default), bdia (exact; decoded and edited with BDIA's own "
      "decoder), fixed-point, optimize, hybrid (decoded with DDIM)", "METHOD" },
    { "keep-detail", 0, 0, G_OPTION_ARG_NONE, &keep_detail,
      "Score what the GIMP plug-in shows, source + (edit - reconstruction), instead of the "
      "edit itself (the same for an exact bdia latent)", NULL },
    { "ddim-decoder", 0, 0, G_OPTION_ARG_NONE, &ddim_decoder,
      "Decode and edit bdia latents with DDIM from their first state (use with "
      "--keep-detail)", NULL },
    { "batch", 0, 0, G_OPTION_ARG_INT, &batch,
      "Images per model call (default 25; inversions other than ddim run one by one)", "B" },
    { "samples-png", 0, 0, G_OPTION_ARG_FILENAME, &samples_png,
      "Also write a grid: one row per direction (and strength) of source/edit pairs", "FILE" },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "No progress on stderr", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("[MODEL]");
  g_option_context_set_summary (ctx,
      "Evaluates the class directions (t-shirt, ..., ankle-boot: 'toward CLASS', from\n"
      "'ddim directions fit --by-class') with the Fashion-MNIST classifier: for each,\n"
      "the first N images of the data whose label is not the target class are\n"
      "inverted with DDIM, edited along the direction and classified. Reported per\n"
      "direction: success, the share of edits classified as the target class; the\n"
      "PSNR of the edit to the source outside the changed shape; the share of pixels\n"
      "inside that shape; the seconds its edits took (the inversion, shared by all\n"
      "directions, is reported apart).\n"
      "The changed shape of a source/edit pair: the pixels where the source or the\n"
      "edit is foreground (above gray 0.1 on a 0..1 scale, -0.8 on the model's -1..1),\n"
      "grown by 1 pixel in all 8 directions. The PSNR (0..1 scale) is over every\n"
      "other pixel, pooled over the direction's images; it measures what the edit did\n"
      "to the background. The reconstructions (strength 0) are scored the same way,\n"
      "as a baseline: inversion error alone. Issue #5's target: >= 80% success on\n"
      "average.");
  g_option_context_add_main_entries (ctx, entries, NULL);
  int rc;
  g_auto (GStrv) args = NULL;
  if (!cli_parse_model_only (ctx, CMD, &argc, &argv, &args, &rc))
    return rc;
  if (classifier_dir == NULL)
    return cli_usage_error (CMD, "missing --classifier DIR (e.g. models/fashion-mnist-classifier)");
  if (!cli_check_range (CMD, "--per-class", per_class, 1, 100000, &rc)
      || !cli_check_range (CMD, "--steps", steps, 1, G_MAXINT, &rc)
      || !cli_check_range (CMD, "--batch", batch, 1, 4096, &rc))
    return rc;
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) strengths = g_array_new (FALSE, FALSE, sizeof (double));
  if (strength && !cli_parse_strengths (strength, strengths, &error))
    return cli_usage_error (CMD, "--strength: %s", error->message);

  DdimInversionMethod inversion = DDIM_METHOD_DDIM;
  if (method && !ddim_inversion_method_from_string (method, &inversion, &error))
    return cli_usage_error (CMD, "--method: %s", error->message);
  if (inversion == DDIM_METHOD_EDICT || inversion == DDIM_METHOD_ENCODER)
    return cli_usage_error (CMD, "--method %s is not supported here (EDICT has no edit "
                            "decoder; the encoder needs its own folder)", method);

  g_autoptr (DdimModel) model = cli_load_model (CMD, argv[1], &rc);
  if (model == NULL)
    return rc;
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  int T = model->schedule->num_train_timesteps;
  if (steps > T)
    return cli_usage_error (CMD, "--steps must be between 1 and %d, not %d", T, steps);
  if (t_edit != -1 && !cli_check_range (CMD, "--t-edit", t_edit, 0, T - 1, &rc))
    return rc;
  g_autoptr (DdimClassifier) classifier = ddim_classifier_load (classifier_dir, &error);
  if (classifier == NULL)
    return cli_error (CMD, error);
  if (!ddim_classifier_check_input (classifier, c->in_channels, c->sample_size, &error))
    return cli_fail (CMD, "classifier %s does not fit model %s (%d-channel %dx%d images): %s",
                     classifier_dir, argv[1], c->in_channels, c->sample_size, c->sample_size,
                     error->message);

  g_autofree char *dpath = directions ? g_strdup (directions)
                                      : g_build_filename (argv[1], DDIM_DIRECTIONS_FILE, NULL);
  g_autoptr (DdimDirectionSet) set = ddim_direction_set_load (dpath, &error);
  if (set == NULL)
    return cli_error (CMD, error);
  EvalJob job = { 0 };
  job.model = model;
  job.classifier = classifier;
  job.strengths = strengths;
  job.per_class = per_class;
  job.t_edit = t_edit;
  job.batch = batch;
  job.method = inversion;
  job.keep_detail = keep_detail;
  job.ddim_decoder = ddim_decoder;
  ddim_exact_options_init (&job.exact);
  ddim_run_options_init (&job.run, model->schedule);
  job.run.steps = steps;
  ddim_edit_score_init (&job.baseline, DDIM_EDIT_SCORE_THRESHOLD, DDIM_EDIT_SCORE_DILATE);
  job.targets = pick_targets (set, dpath, classes, &job.n_targets, &error);
  if (job.targets == NULL)
    return cli_error (CMD, error);
  if (data == NULL)
    data = g_strdup ("fashion-mnist-test");
  g_autoptr (DdimDataset) ds = NULL;
  rc = prepare_rows (&job, dpath);
  if (rc == CLI_EXIT_OK)
    {
      ds = cli_load_labelled_data (data, model, &error);
      rc = ds ? prepare_sources (&job, ds, data) : cli_error (CMD, error);
    }
  if (rc == CLI_EXIT_OK)
    {
      if (samples_png)
        {
          job.grid_pairs = MIN (GRID_PAIRS, per_class);
          job.grid = g_new0 (float, (gsize) job.n_targets * job.n_strengths * 2
                                        * job.grid_pairs * image_count (&job));
        }
      if (!quiet)
        fprintf (stderr, "ddim %s: %d direction%s x %d strength%s, %d images each (%d distinct "
                 "sources), %d steps, method %s\n", CMD, job.n_targets, job.n_targets == 1 ? "" : "s",
                 job.n_strengths, job.n_strengths == 1 ? "" : "s", per_class, job.n_sources,
                 steps, ddim_inversion_method_to_string (inversion));
      rc = cli_run_job (CMD, CMD, eval_job, &job, quiet);
    }
  if (rc == CLI_EXIT_OK)
    {
      print_report (&job, argv[1], data, classifier_dir, dpath);
      if (samples_png
          && !ddim_image_save_grid_png (samples_png,
                                        job.n_targets * job.n_strengths * 2 * job.grid_pairs,
                                        ds->channels, ds->size, ds->size, job.grid,
                                        2 * job.grid_pairs, &error))
        rc = cli_error (CMD, error);
    }
  eval_job_clear (&job);
  return rc;
}
