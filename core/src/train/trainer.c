/* The training loop, checkpoints and model export (see ddim/train.h).
 *
 * Determinism: every random draw of step s comes from a generator seeded
 * with (seed, stream, s) — the batch from a per-epoch permutation seeded
 * with (seed, epoch) — so a run resumed from a checkpoint at step s draws
 * exactly what the uninterrupted run drew, without any generator state in
 * the checkpoint. The optimiser, clipping and EMA loops are sequential. */
#include <errno.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "ddim/error.h"
#include "ddim/model.h"
#include "ddim/safetensors.h"
#include "ddim/sampler.h"
#include "ddim/train.h"

#define CHECKPOINT_FORMAT "ddim-train-checkpoint"
#define CHECKPOINT_VERSION "1"
#define CSV_HEADER "step,loss,lr,grad_norm,seconds\n"
#define WEIGHTS_NAME DDIM_MODEL_WEIGHTS_FILE

/* Streams of random draws. */
enum {
  STREAM_INIT = 1,
  STREAM_PERM,
  STREAM_NOISE,
  STREAM_TIMESTEP,
  STREAM_FLIP
};

typedef struct {
  gsize    offset, size;
  gboolean decay;
} TensorSlot;

#define DDIM_TRAIN_MAX_SHARDS 16

struct _DdimTrainer {
  DdimUNetConfig    config;
  DdimSchedule     *schedule;
  DdimTrainOptions  opts;            /* strings below, cancellable ref'd */
  char             *checkpoint_path;
  char             *loss_csv_path;
  DdimUNet         *unet, *ema;
  gsize             n_params;
  guint             n_tensors;
  TensorSlot       *slots;
  float            *grad, *m, *v;
  int               step;
  double            seconds;
  int               dataset_n;       /* size of the data trained on; 0: none yet */
  int              *perm;            /* permutation of epoch perm_epoch */
  int               perm_n;
  gint64            perm_epoch;
  int               n_shards;        /* data-parallel shards per batch */
  DdimUNet        **replicas;        /* n_shards - 1 models for shards 1.. */
  float           **shard_grads;     /* their gradients */
};

/* ---- random numbers ---- */

static guint64
splitmix (guint64 *s)
{
  guint64 z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* A seed for draw @index of @stream. */
static guint64
derive_seed (guint64 seed, guint64 stream, guint64 index)
{
  guint64 s = seed;
  s = splitmix (&s) ^ (stream * 0xd1b54a32d192ed03ULL);
  s = splitmix (&s) ^ (index * 0xaef17502108ef2d9ULL);
  return splitmix (&s);
}

/* Uniform integer in [0, n). */
static guint64
bounded (guint64 r, guint64 n)
{
  return (guint64) ((double) (r >> 11) * (1.0 / 9007199254740992.0) * (double) n);
}

static double
uniform_pm1 (guint64 *s)
{
  return (double) (splitmix (s) >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

/* ---- initialisation ---- */

void
ddim_train_init_params (DdimUNet *unet, guint64 seed)
{
  g_return_if_fail (unet != NULL);
  guint n = ddim_unet_get_n_tensors (unet);
  g_autoptr (GHashTable) index = g_hash_table_new (g_str_hash, g_str_equal);
  for (guint i = 0; i < n; i++)
    g_hash_table_insert (index, (gpointer) ddim_unet_get_tensor (unet, i, NULL, NULL, NULL),
                         GUINT_TO_POINTER (i + 1));
  guint64 s = derive_seed (seed, STREAM_INIT, 0);
  for (guint i = 0; i < n; i++)
    {
      int ndim;
      gint64 shape[4];
      float *p;
      const char *name = ddim_unet_get_tensor (unet, i, &ndim, shape, &p);
      gsize size = 1;
      for (int d = 0; d < ndim; d++)
        size *= (gsize) shape[d];
      double fan_in = 1;
      gboolean norm = FALSE;
      if (ndim >= 2)
        for (int d = 1; d < ndim; d++)
          fan_in *= (double) shape[d];
      else if (g_str_has_suffix (name, ".weight"))
        norm = TRUE;   /* 1-D weights are GroupNorm scales */
      else
        {
          /* A bias: the fan_in of its layer's weight; a 1-D weight means a norm. */
          g_autofree char *wname = g_strndup (name, strlen (name) - strlen ("bias"));
          g_autofree char *full = g_strconcat (wname, "weight", NULL);
          guint wi = GPOINTER_TO_UINT (g_hash_table_lookup (index, full));
          int wdim = 0;
          gint64 wshape[4] = { 0 };
          if (wi > 0)
            ddim_unet_get_tensor (unet, wi - 1, &wdim, wshape, NULL);
          if (wdim >= 2)
            for (int d = 1; d < wdim; d++)
              fan_in *= (double) wshape[d];
          else
            norm = TRUE;
        }
      if (norm)
        {
          float value = g_str_has_suffix (name, ".weight") ? 1.f : 0.f;
          for (gsize j = 0; j < size; j++)
            p[j] = value;
          continue;
        }
      double bound = 1.0 / sqrt (fan_in);
      for (gsize j = 0; j < size; j++)
        p[j] = (float) (bound * uniform_pm1 (&s));
    }
}

/* The options a checkpoint records, written and read by the same list. */
#define TRAIN_OPTION_FIELDS \
  INT (batch_size); INT (steps); DBL (lr); INT (warmup_steps); DBL (lr_min_ratio); \
  DBL (weight_decay); DBL (beta1); DBL (beta2); DBL (adam_eps); DBL (grad_clip); \
  DBL (ema_decay); BOOL (ema_warmup); BOOL (hflip); INT (checkpoint_every);

/* ---- options ---- */

static gboolean
check_options (const DdimTrainOptions *o, GError **error)
{
  const char *bad = NULL;
  if (o->batch_size < 1 || o->batch_size > 65536)
    bad = "batch_size must be between 1 and 65536";
  else if (!ddim_train_optimizer_options_check (o, error))
    return FALSE;
  else if (!(o->ema_decay >= 0 && o->ema_decay <= 1))
    bad = "ema_decay must be between 0 and 1";
  else if (o->checkpoint_every < 0)
    bad = "checkpoint_every must be >= 0";
  else if (o->checkpoint_every > 0 && o->checkpoint_path == NULL)
    bad = "checkpoint_every needs a checkpoint path";
  if (bad)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID, "training options: %s", bad);
      return FALSE;
    }
  if (o->prediction != DDIM_PREDICT_EPSILON && o->prediction != DDIM_PREDICT_V)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "training supports the epsilon and v_prediction targets, not '%s'",
                   ddim_prediction_to_string (o->prediction));
      return FALSE;
    }
  return TRUE;
}

static char *
options_to_json (const DdimTrainOptions *o)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  char seed[32], num[G_ASCII_DTOSTR_BUF_SIZE];
  g_snprintf (seed, sizeof seed, "%" G_GUINT64_FORMAT, o->seed);
  json_builder_begin_object (b);
#define INT(k) json_builder_set_member_name (b, #k); json_builder_add_int_value (b, o->k)
  /* Doubles as strings: json-glib 1.6 writes 1e-08 as "1e-08.0", which is
   * not JSON. */
#define DBL(k) json_builder_set_member_name (b, #k); \
  json_builder_add_string_value (b, g_ascii_formatd (num, sizeof num, "%.17g", o->k))
#define BOOL(k) json_builder_set_member_name (b, #k); json_builder_add_boolean_value (b, o->k)
  TRAIN_OPTION_FIELDS
#undef INT
#undef DBL
#undef BOOL
  json_builder_set_member_name (b, "seed");
  json_builder_add_string_value (b, seed);
  json_builder_set_member_name (b, "prediction_type");
  json_builder_add_string_value (b, ddim_prediction_to_string (o->prediction));
  json_builder_end_object (b);
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  return json_generator_to_data (gen, NULL);
}

static double
get_double (JsonObject *obj, const char *name, double def)
{
  JsonNode *n = json_object_get_member (obj, name);
  if (n == NULL || !JSON_NODE_HOLDS_VALUE (n))
    return def;
  if (json_node_get_value_type (n) == G_TYPE_STRING)
    {
      const char *s = json_node_get_string (n);
      char *end;
      double v = g_ascii_strtod (s, &end);
      return end != s && *end == '\0' ? v : def;
    }
  return json_node_get_double (n);
}

static gboolean
options_from_json (const char *json, const char *path, DdimTrainOptions *o, GError **error)
{
  ddim_train_options_init (o);
  g_autoptr (JsonParser) parser = json_parser_new ();
  JsonNode *root = NULL;
  if (json_parser_load_from_data (parser, json, -1, NULL))
    root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "checkpoint %s: the training options are not a JSON object", path);
      return FALSE;
    }
  JsonObject *obj = json_node_get_object (root);
#define INT(k) o->k = (int) json_object_get_int_member_with_default (obj, #k, o->k)
#define DBL(k) o->k = get_double (obj, #k, o->k)
#define BOOL(k) o->k = json_object_get_boolean_member_with_default (obj, #k, o->k)
  TRAIN_OPTION_FIELDS
#undef INT
#undef DBL
#undef BOOL
  const char *seed = json_object_get_string_member_with_default (obj, "seed", "0");
  const char *pred = json_object_get_string_member_with_default (obj, "prediction_type",
                                                                 "epsilon");
  if (!g_ascii_string_to_unsigned (seed, 10, 0, G_MAXUINT64, &o->seed, NULL))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT, "checkpoint %s: bad seed '%s'", path,
                   seed);
      return FALSE;
    }
  if (g_str_equal (pred, "epsilon"))
    o->prediction = DDIM_PREDICT_EPSILON;
  else if (g_str_equal (pred, "v_prediction"))
    o->prediction = DDIM_PREDICT_V;
  else
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "checkpoint %s: unknown prediction type '%s'", path, pred);
      return FALSE;
    }
  o->checkpoint_every = 0;
  return TRUE;
}

/* ---- trainer ---- */

void
ddim_trainer_free (DdimTrainer *tr)
{
  if (tr == NULL)
    return;
  ddim_schedule_free (tr->schedule);
  g_free (tr->checkpoint_path);
  g_free (tr->loss_csv_path);
  g_clear_object (&tr->opts.cancellable);
  ddim_unet_free (tr->unet);
  ddim_unet_free (tr->ema);
  for (int i = 0; i + 1 < tr->n_shards; i++)
    {
      ddim_unet_free (tr->replicas[i]);
      g_free (tr->shard_grads[i]);
    }
  g_free (tr->replicas);
  g_free (tr->shard_grads);
  g_free (tr->slots);
  g_free (tr->grad);
  g_free (tr->m);
  g_free (tr->v);
  g_free (tr->perm);
  g_free (tr);
}

/* A trainer with zeroed state (weights not initialised). */
static DdimTrainer *
trainer_alloc (const DdimUNetConfig *config, const DdimSchedule *schedule,
               const DdimTrainOptions *opts, GError **error)
{
  if (!check_options (opts, error))
    return NULL;
  if (config->in_channels != config->out_channels)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "training needs out_channels equal to in_channels (config.json has %d and "
                   "%d)", config->out_channels, config->in_channels);
      return NULL;
    }
  g_autoptr (DdimTrainer) tr = g_new0 (DdimTrainer, 1);
  tr->config = *config;
  tr->schedule = ddim_schedule_copy (schedule);
  tr->schedule->prediction = opts->prediction;
  tr->opts = *opts;
  tr->checkpoint_path = g_strdup (opts->checkpoint_path);
  tr->loss_csv_path = g_strdup (opts->loss_csv_path);
  tr->opts.checkpoint_path = tr->checkpoint_path;
  tr->opts.loss_csv_path = tr->loss_csv_path;
  if (opts->cancellable)
    g_object_ref (opts->cancellable);
  /* ddim_unet_new_random allocates the table; the values are replaced. */
  tr->unet = ddim_unet_new_random (config, 0);
  tr->ema = ddim_unet_new_random (config, 0);
  tr->n_params = ddim_unet_get_n_params (tr->unet);
  tr->n_shards = opts->threads > 0 ? opts->threads : (int) g_get_num_processors ();
  tr->n_shards = CLAMP (tr->n_shards, 1, MIN (DDIM_TRAIN_MAX_SHARDS, opts->batch_size));
  if (tr->n_shards > 1)
    {
      /* Each shard runs on its own thread: no inner threads. */
      ddim_unet_set_n_threads (tr->unet, 1);
      tr->replicas = g_new0 (DdimUNet *, tr->n_shards - 1);
      tr->shard_grads = g_new0 (float *, tr->n_shards - 1);
      for (int i = 0; i < tr->n_shards - 1; i++)
        {
          tr->replicas[i] = ddim_unet_new_random (config, 0);
          ddim_unet_set_n_threads (tr->replicas[i], 1);
          tr->shard_grads[i] = g_new (float, tr->n_params);
        }
    }
  tr->n_tensors = ddim_unet_get_n_tensors (tr->unet);
  tr->slots = g_new0 (TensorSlot, tr->n_tensors);
  float *base = ddim_unet_get_params (tr->unet);
  for (guint i = 0; i < tr->n_tensors; i++)
    {
      int ndim;
      gint64 shape[4];
      float *p;
      ddim_unet_get_tensor (tr->unet, i, &ndim, shape, &p);
      tr->slots[i].offset = (gsize) (p - base);
      tr->slots[i].size = 1;
      for (int d = 0; d < ndim; d++)
        tr->slots[i].size *= (gsize) shape[d];
      /* No weight decay on biases and GroupNorm parameters (all 1-D). */
      tr->slots[i].decay = ndim >= 2;
    }
  tr->grad = g_new0 (float, tr->n_params);
  tr->m = g_new0 (float, tr->n_params);
  tr->v = g_new0 (float, tr->n_params);
  tr->perm_epoch = -1;
  return g_steal_pointer (&tr);
}

DdimTrainer *
ddim_trainer_new (const DdimUNetConfig *config, const DdimSchedule *schedule,
                  const DdimTrainOptions *options, GError **error)
{
  g_return_val_if_fail (config != NULL && schedule != NULL && options != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);
  DdimTrainer *tr = trainer_alloc (config, schedule, options, error);
  if (tr == NULL)
    return NULL;
  ddim_train_init_params (tr->unet, options->seed);
  memcpy (ddim_unet_get_params (tr->ema), ddim_unet_get_params (tr->unet),
          tr->n_params * sizeof (float));
  return tr;
}

int
ddim_trainer_get_step (DdimTrainer *tr)
{
  g_return_val_if_fail (tr != NULL, 0);
  return tr->step;
}

double
ddim_trainer_get_seconds (DdimTrainer *tr)
{
  g_return_val_if_fail (tr != NULL, 0);
  return tr->seconds;
}

DdimUNet *
ddim_trainer_get_unet (DdimTrainer *tr)
{
  g_return_val_if_fail (tr != NULL, NULL);
  return tr->unet;
}

DdimUNet *
ddim_trainer_get_ema_unet (DdimTrainer *tr)
{
  g_return_val_if_fail (tr != NULL, NULL);
  return tr->ema;
}

const DdimSchedule *
ddim_trainer_get_schedule (DdimTrainer *tr)
{
  g_return_val_if_fail (tr != NULL, NULL);
  return tr->schedule;
}

const DdimTrainOptions *
ddim_trainer_get_options (DdimTrainer *tr)
{
  g_return_val_if_fail (tr != NULL, NULL);
  return &tr->opts;
}

/* ---- the loss CSV ---- */

static char *
format_double (double v, const char *fmt)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  return g_strdup (g_ascii_formatd (buf, sizeof buf, fmt, v));
}

/* Opens the CSV for appending rows after step tr->step: a new file with
 * its header for a fresh run; for a resumed one the existing rows up to
 * the current step are kept (rows of steps the checkpoint does not have
 * are dropped, atomically). */
static FILE *
open_csv (DdimTrainer *tr, GError **error)
{
  const char *path = tr->loss_csv_path;
  g_autoptr (GString) keep = g_string_new (CSV_HEADER);
  g_autofree char *contents = NULL;
  if (tr->step > 0 && g_file_get_contents (path, &contents, NULL, NULL))
    {
      g_auto (GStrv) lines = g_strsplit (contents, "\n", -1);
      for (int i = 1; lines[i] != NULL; i++)
        {
          guint64 s;
          g_autofree char *first = g_strndup (lines[i], strcspn (lines[i], ","));
          if (lines[i][0] != '\0'
              && g_ascii_string_to_unsigned (first, 10, 1, (guint64) tr->step, &s, NULL))
            g_string_append_printf (keep, "%s\n", lines[i]);
        }
    }
  g_autoptr (GError) local = NULL;
  if (!g_file_set_contents_full (path, keep->str, (gssize) keep->len,
                                 G_FILE_SET_CONTENTS_CONSISTENT, 0666, &local))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot write the loss CSV %s: %s", path,
                   local->message);
      return NULL;
    }
  FILE *f = fopen (path, "a");
  if (f == NULL)
    {
      int e = errno;
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot write the loss CSV %s: %s", path,
                   g_strerror (e));
    }
  return f;
}

static gboolean
write_csv_row (DdimTrainer *tr, FILE *f, double loss, double lr, double gnorm, GError **error)
{
  g_autofree char *l = format_double (loss, "%.8g");
  g_autofree char *r = format_double (lr, "%.8g");
  g_autofree char *g = format_double (gnorm, "%.8g");
  g_autofree char *s = format_double (tr->seconds, "%.3f");
  if (fprintf (f, "%d,%s,%s,%s,%s\n", tr->step, l, r, g, s) < 0 || fflush (f) != 0)
    {
      int e = errno;
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot write the loss CSV %s: %s",
                   tr->loss_csv_path, g_strerror (e));
      return FALSE;
    }
  return TRUE;
}

/* ---- one step ---- */

typedef struct {
  gsize  count;               /* batch * C * S * S */
  float *x0, *eps, *xt, *target, *out, *tf;
  int   *t;
} Batch;

static void
batch_clear (Batch *b)
{
  g_free (b->x0);
  g_free (b->eps);
  g_free (b->xt);
  g_free (b->target);
  g_free (b->out);
  g_free (b->tf);
  g_free (b->t);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Batch, batch_clear)

/* Index of item @pos of the endless stream of per-epoch permutations. */
static int
stream_index (DdimTrainer *tr, int n, gint64 pos)
{
  gint64 epoch = pos / n;
  if (tr->perm == NULL || tr->perm_n != n || tr->perm_epoch != epoch)
    {
      if (tr->perm_n != n)
        {
          g_free (tr->perm);
          tr->perm = g_new (int, n);
          tr->perm_n = n;
        }
      for (int i = 0; i < n; i++)
        tr->perm[i] = i;
      guint64 s = derive_seed (tr->opts.seed, STREAM_PERM, (guint64) epoch);
      for (int i = n - 1; i > 0; i--)
        {
          int j = (int) bounded (splitmix (&s), (guint64) i + 1);
          int tmp = tr->perm[i];
          tr->perm[i] = tr->perm[j];
          tr->perm[j] = tmp;
        }
      tr->perm_epoch = epoch;
    }
  return tr->perm[pos % n];
}

static void
make_batch (DdimTrainer *tr, const DdimDataset *ds, Batch *b)
{
  const DdimTrainOptions *o = &tr->opts;
  int B = o->batch_size, C = ds->channels, S = ds->size;
  gsize per = (gsize) C * S * S;
  guint64 step = (guint64) tr->step;
  guint64 fs = derive_seed (o->seed, STREAM_FLIP, step);
  guint64 ts = derive_seed (o->seed, STREAM_TIMESTEP, step);
  int T = tr->schedule->num_train_timesteps;
  for (int i = 0; i < B; i++)
    {
      int idx = stream_index (tr, ds->n, (gint64) tr->step * B + i);
      const float *src = ds->images + (gsize) idx * per;
      float *dst = b->x0 + (gsize) i * per;
      gboolean flip = (splitmix (&fs) >> 63) != 0;
      if (o->hflip && flip)
        for (int r = 0; r < C * S; r++)
          for (int x = 0; x < S; x++)
            dst[(gsize) r * S + x] = src[(gsize) r * S + (S - 1 - x)];
      else
        memcpy (dst, src, per * sizeof (float));
      b->t[i] = (int) bounded (splitmix (&ts), (guint64) T);
      b->tf[i] = (float) b->t[i];
    }
  ddim_randn (derive_seed (o->seed, STREAM_NOISE, step), b->eps, b->count);
  for (int i = 0; i < B; i++)
    {
      float a = tr->schedule->alphas_cumprod[b->t[i]];
      float sa = sqrtf (a), sb = sqrtf (1.f - a);
      gsize off = (gsize) i * per;
      for (gsize j = off; j < off + per; j++)
        {
          b->xt[j] = sa * b->x0[j] + sb * b->eps[j];
          b->target[j] = o->prediction == DDIM_PREDICT_V ? sa * b->eps[j] - sb * b->x0[j]
                                                         : b->eps[j];
        }
    }
}

typedef struct {
  const float *target;   /* this shard's targets */
  gsize        total;    /* elements of the whole batch: the mean's divisor */
  int          step;     /* 1-based, for messages */
  double       ss;       /* sum of squared errors of this shard */
} LossCtx;

/* Loss = mean((out - target)^2) over the batch; cotangent = its gradient
 * (for this shard's part). */
static gboolean
mse_cotangent (const float *out, float *w, gsize count, gpointer data, GError **error)
{
  LossCtx *lc = data;
  double ss = 0;
  for (gsize j = 0; j < count; j++)
    {
      double d = (double) out[j] - lc->target[j];
      ss += d * d;
    }
  lc->ss = ss;
  if (!isfinite (ss))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the loss is not finite at step %d (try a lower learning rate)", lc->step);
      return FALSE;
    }
  float scale = (float) (2.0 / (double) lc->total);
  for (gsize j = 0; j < count; j++)
    w[j] = scale * (out[j] - lc->target[j]);
  return TRUE;
}

typedef struct {
  DdimUNet    *unet;
  const float *xt, *tf;
  float       *out, *grad;
  int          n, size;
  LossCtx      loss;
  gboolean     ok;
  GError      *error;
} Shard;

static gpointer
run_shard (gpointer data)
{
  Shard *sh = data;
  DdimUNetVjp io = { .out = sh->out, .grad_params = sh->grad, .cotangent_func = mse_cotangent,
                     .cotangent_data = &sh->loss };
  sh->ok = ddim_unet_vjp (sh->unet, sh->xt, sh->n, sh->size, sh->size, sh->tf, NULL, &io,
                          &sh->error);
  return NULL;
}

/* The batch's loss and parameter gradient (into tr->grad), its shards in
 * parallel, summed in shard order. */
static gboolean
batch_gradient (DdimTrainer *tr, Batch *b, int B, int S, double *loss, GError **error)
{
  int shards = MIN (tr->n_shards, B);
  gsize per_image = b->count / B;
  Shard sh[DDIM_TRAIN_MAX_SHARDS];
  GThread *threads[DDIM_TRAIN_MAX_SHARDS] = { NULL };
  float *params = ddim_unet_get_params (tr->unet);
  int at = 0;
  for (int s = 0; s < shards; s++)
    {
      int rows = B / shards + (s < B % shards ? 1 : 0);
      sh[s] = (Shard) { s == 0 ? tr->unet : tr->replicas[s - 1], b->xt + at * per_image,
                        b->tf + at, b->out + at * per_image,
                        s == 0 ? tr->grad : tr->shard_grads[s - 1], rows, S,
                        { b->target + at * per_image, b->count, tr->step + 1, 0 }, FALSE, NULL };
      memset (sh[s].grad, 0, tr->n_params * sizeof (float));
      if (s > 0)
        memcpy (ddim_unet_get_params (sh[s].unet), params, tr->n_params * sizeof (float));
      at += rows;
    }
#ifdef OPENBLAS_VERSION
  int blas_threads = openblas_get_num_threads ();
  if (shards > 1)
    openblas_set_num_threads (1);
#endif
  for (int s = 1; s < shards; s++)
    threads[s] = g_thread_new ("ddim-train-shard", run_shard, &sh[s]);
  run_shard (&sh[0]);
  for (int s = 1; s < shards; s++)
    g_thread_join (threads[s]);
#ifdef OPENBLAS_VERSION
  if (shards > 1)
    openblas_set_num_threads (blas_threads);
#endif
  gboolean ok = TRUE;
  double ss = 0;
  for (int s = 0; s < shards; s++)
    {
      if (!sh[s].ok && ok)
        {
          g_propagate_error (error, sh[s].error);
          sh[s].error = NULL;
          ok = FALSE;
        }
      g_clear_error (&sh[s].error);
      ss += sh[s].loss.ss;
    }
  if (!ok)
    return FALSE;
  for (int s = 1; s < shards; s++)
    for (gsize i = 0; i < tr->n_params; i++)
      tr->grad[i] += sh[s].grad[i];
  *loss = ss / (double) b->count;
  return TRUE;
}

static gboolean
train_step (DdimTrainer *tr, const DdimDataset *ds, Batch *b, double *loss_out,
            double *lr_out, double *gnorm_out, GError **error)
{
  const DdimTrainOptions *o = &tr->opts;
  int B = o->batch_size, S = ds->size;
  make_batch (tr, ds, b);
  /* One taped forward per shard: the MSE cotangent is made from its output. */
  double loss;
  if (!batch_gradient (tr, b, B, S, &loss, error))
    return FALSE;
  double gnorm = ddim_clip_grad_norm (tr->grad, tr->n_params, o->grad_clip);
  if (!isfinite (gnorm))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "the gradient is not finite at step %d (try a lower learning rate)",
                   tr->step + 1);
      return FALSE;
    }

  double lr = ddim_train_lr_at (o, tr->step);
  DdimAdamW adam = { lr, o->beta1, o->beta2, o->adam_eps, o->weight_decay };
  float *p = ddim_unet_get_params (tr->unet);
  for (guint i = 0; i < tr->n_tensors; i++)
    {
      const TensorSlot *sl = &tr->slots[i];
      ddim_adamw_step (&adam, (gint64) tr->step + 1, p + sl->offset, tr->grad + sl->offset,
                       tr->m + sl->offset, tr->v + sl->offset, sl->size, sl->decay);
    }
  tr->step++;
  ddim_ema_update (ddim_unet_get_params (tr->ema), p, tr->n_params,
                   ddim_ema_decay_at (o->ema_decay, o->ema_warmup, tr->step));
  *loss_out = loss;
  *lr_out = lr;
  *gnorm_out = gnorm;
  return TRUE;
}

gboolean
ddim_trainer_run (DdimTrainer *tr, const DdimDataset *ds, int until_step, GError **error)
{
  g_return_val_if_fail (tr != NULL && ds != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
  const DdimUNetConfig *c = &tr->config;
  if (ds->n < 1 || ds->images == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID, "the training set is empty");
      return FALSE;
    }
  if (ds->channels != c->in_channels)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "the training images have %d channels but config.json's in_channels is %d",
                   ds->channels, c->in_channels);
      return FALSE;
    }
  if (ds->size != c->sample_size)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "the training images are %dx%d but config.json's sample_size is %d",
                   ds->size, ds->size, c->sample_size);
      return FALSE;
    }
  if (!ddim_unet_check_size (tr->unet, ds->size, ds->size, error))
    return FALSE;
  if (tr->dataset_n != 0 && tr->dataset_n != ds->n)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "the checkpoint was trained on %d images but this training set has %d; "
                   "the batches would not continue the run", tr->dataset_n, ds->n);
      return FALSE;
    }
  if (until_step <= tr->step)
    return TRUE;
  tr->dataset_n = ds->n;

  g_auto (Batch) b = { 0 };
  b.count = (gsize) tr->opts.batch_size * ds->channels * ds->size * ds->size;
  b.x0 = g_try_new (float, b.count);
  b.eps = g_try_new (float, b.count);
  b.xt = g_try_new (float, b.count);
  b.target = g_try_new (float, b.count);
  b.out = g_try_new (float, b.count);
  if (!b.x0 || !b.eps || !b.xt || !b.target || !b.out)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "out of memory for a batch of %d images", tr->opts.batch_size);
      return FALSE;
    }
  b.tf = g_new (float, tr->opts.batch_size);
  b.t = g_new (int, tr->opts.batch_size);

  FILE *csv = NULL;
  if (tr->loss_csv_path && (csv = open_csv (tr, error)) == NULL)
    return FALSE;

  gboolean ok = TRUE;
  while (tr->step < until_step)
    {
      if (tr->opts.cancellable && g_cancellable_is_cancelled (tr->opts.cancellable))
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_CANCELLED,
                       "training cancelled after step %d", tr->step);
          ok = FALSE;
          break;
        }
      gint64 t0 = g_get_monotonic_time ();
      double loss, lr, gnorm;
      if (!train_step (tr, ds, &b, &loss, &lr, &gnorm, error))
        {
          ok = FALSE;
          break;
        }
      tr->seconds += (g_get_monotonic_time () - t0) / 1e6;
      if (csv && !write_csv_row (tr, csv, loss, lr, gnorm, error))
        {
          ok = FALSE;
          break;
        }
      if (tr->opts.checkpoint_every > 0 && tr->step % tr->opts.checkpoint_every == 0
          && !ddim_trainer_save_checkpoint (tr, tr->checkpoint_path, error))
        {
          ok = FALSE;
          break;
        }
      if (tr->opts.progress)
        tr->opts.progress (tr->step, until_step, loss, tr->opts.progress_data);
    }
  if (csv)
    fclose (csv);
  return ok;
}

/* ---- checkpoints ---- */

gboolean
ddim_trainer_save_checkpoint (DdimTrainer *tr, const char *path, GError **error)
{
  g_return_val_if_fail (tr != NULL && path != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
  static const char *const prefixes[] = { "param.", "ema.", "adam_m.", "adam_v." };
  const float *sources[] = { ddim_unet_get_params (tr->unet), ddim_unet_get_params (tr->ema),
                             tr->m, tr->v };
  g_autoptr (DdimSafetensorsWriter) w = ddim_safetensors_writer_new ();
  for (guint k = 0; k < G_N_ELEMENTS (prefixes); k++)
    for (guint i = 0; i < tr->n_tensors; i++)
      {
        int ndim;
        gint64 shape[4];
        const char *name = ddim_unet_get_tensor (tr->unet, i, &ndim, shape, NULL);
        g_autofree char *full = g_strconcat (prefixes[k], name, NULL);
        ddim_safetensors_writer_add_f32 (w, full, ndim, shape, sources[k] + tr->slots[i].offset);
      }
  g_autofree char *config = ddim_unet_config_to_json (&tr->config);
  g_autofree char *sched = ddim_schedule_to_json (tr->schedule);
  g_autofree char *opts = options_to_json (&tr->opts);
  g_autofree char *step = g_strdup_printf ("%d", tr->step);
  g_autofree char *dsn = g_strdup_printf ("%d", tr->dataset_n);
  g_autofree char *secs = format_double (tr->seconds, "%.17g");
  ddim_safetensors_writer_add_metadata (w, "format", CHECKPOINT_FORMAT);
  ddim_safetensors_writer_add_metadata (w, "version", CHECKPOINT_VERSION);
  ddim_safetensors_writer_add_metadata (w, "step", step);
  ddim_safetensors_writer_add_metadata (w, "seconds", secs);
  ddim_safetensors_writer_add_metadata (w, "dataset_size", dsn);
  ddim_safetensors_writer_add_metadata (w, "config", config);
  ddim_safetensors_writer_add_metadata (w, "scheduler", sched);
  ddim_safetensors_writer_add_metadata (w, "options", opts);
  return ddim_safetensors_writer_save (w, path, error);
}

static const char *
checkpoint_meta (DdimSafetensors *st, const char *path, const char *key, GError **error)
{
  const char *v = ddim_safetensors_get_metadata (st, key);
  if (v == NULL)
    g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                 "checkpoint %s has no '%s' metadata", path, key);
  return v;
}

static DdimSafetensors *
open_checkpoint (const char *path, GError **error)
{
  g_autoptr (DdimSafetensors) st = ddim_safetensors_open (path, error);
  if (st == NULL)
    return NULL;
  const char *fmt = ddim_safetensors_get_metadata (st, "format");
  if (fmt == NULL || !g_str_equal (fmt, CHECKPOINT_FORMAT))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "%s is not a ddim training checkpoint (its metadata has no format '%s')",
                   path, CHECKPOINT_FORMAT);
      return NULL;
    }
  const char *ver = ddim_safetensors_get_metadata (st, "version");
  if (ver == NULL || !g_str_equal (ver, CHECKPOINT_VERSION))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "checkpoint %s has version %s; this ddim reads version %s", path,
                   ver ? ver : "(none)", CHECKPOINT_VERSION);
      return NULL;
    }
  return g_steal_pointer (&st);
}

static gboolean
parse_count (DdimSafetensors *st, const char *path, const char *key, int *out, GError **error)
{
  const char *v = checkpoint_meta (st, path, key, error);
  guint64 n;
  if (v == NULL)
    return FALSE;
  if (!g_ascii_string_to_unsigned (v, 10, 0, G_MAXINT, &n, NULL))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT, "checkpoint %s: bad %s '%s'", path,
                   key, v);
      return FALSE;
    }
  *out = (int) n;
  return TRUE;
}

static gboolean
read_info (DdimSafetensors *st, const char *path, DdimUNetConfig *config,
           DdimSchedule **schedule, DdimTrainOptions *options, int *step, GError **error)
{
  const char *cj, *sj, *oj;
  if (!(cj = checkpoint_meta (st, path, "config", error))
      || !(sj = checkpoint_meta (st, path, "scheduler", error))
      || !(oj = checkpoint_meta (st, path, "options", error)))
    return FALSE;
  g_autoptr (GError) local = NULL;
  DdimUNetConfig cfg;
  if (!ddim_unet_config_parse (cj, -1, &cfg, &local))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT, "checkpoint %s: %s", path,
                   local->message);
      return FALSE;
    }
  g_autoptr (DdimSchedule) sched = ddim_schedule_parse (sj, -1, &local);
  if (sched == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT, "checkpoint %s: %s", path,
                   local->message);
      return FALSE;
    }
  DdimTrainOptions opts;
  int n;
  if (!options_from_json (oj, path, &opts, error) || !parse_count (st, path, "step", &n, error))
    return FALSE;
  if (config)
    *config = cfg;
  if (schedule)
    *schedule = g_steal_pointer (&sched);
  if (options)
    *options = opts;
  if (step)
    *step = n;
  return TRUE;
}

gboolean
ddim_train_checkpoint_info (const char *path, DdimUNetConfig *config, DdimSchedule **schedule,
                            DdimTrainOptions *options, int *step, GError **error)
{
  g_return_val_if_fail (path != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
  g_autoptr (DdimSafetensors) st = open_checkpoint (path, error);
  if (st == NULL)
    return FALSE;
  return read_info (st, path, config, schedule, options, step, error);
}

/* The first member of @fields (all members when NULL) whose value differs
 * between two JSON objects, described as "'name' is A in the checkpoint
 * and B here"; NULL when they agree. */
static char *
json_difference (const char *ours, const char *theirs, const char *const *fields)
{
  g_autoptr (JsonParser) pa = json_parser_new ();
  g_autoptr (JsonParser) pb = json_parser_new ();
  if (!json_parser_load_from_data (pa, theirs, -1, NULL)
      || !json_parser_load_from_data (pb, ours, -1, NULL))
    return g_strdup ("the settings cannot be compared");
  JsonObject *a = json_node_get_object (json_parser_get_root (pa));
  JsonObject *b = json_node_get_object (json_parser_get_root (pb));
  g_autoptr (GList) members = json_object_get_members (a);
  for (GList *l = members; l; l = l->next)
    {
      const char *name = l->data;
      if (fields != NULL && !g_strv_contains (fields, name))
        continue;
      JsonNode *na = json_object_get_member (a, name);
      JsonNode *nb = json_object_get_member (b, name);
      g_autofree char *sa = json_to_string (na, FALSE);
      g_autofree char *sb = nb ? json_to_string (nb, FALSE) : g_strdup ("absent");
      if (!g_str_equal (sa, sb))
        return g_strdup_printf ("'%s' is %s in the checkpoint and %s here", name, sa, sb);
    }
  return NULL;
}

DdimTrainer *
ddim_trainer_resume (const char *path, const DdimUNetConfig *config,
                     const DdimSchedule *schedule, const DdimTrainOptions *options,
                     GError **error)
{
  g_return_val_if_fail (path != NULL && config != NULL && schedule != NULL && options != NULL,
                        NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);
  g_autoptr (DdimSafetensors) st = open_checkpoint (path, error);
  if (st == NULL)
    return NULL;
  DdimUNetConfig ck_config;
  g_autoptr (DdimSchedule) ck_sched = NULL;
  DdimTrainOptions ck_opts;
  int ck_step;
  if (!read_info (st, path, &ck_config, &ck_sched, &ck_opts, &ck_step, error))
    return NULL;

  g_autofree char *cj_ours = ddim_unet_config_to_json (config);
  g_autofree char *cj_theirs = ddim_unet_config_to_json (&ck_config);
  g_autofree char *cdiff = json_difference (cj_ours, cj_theirs, NULL);
  if (cdiff)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "checkpoint %s was made with another model config: %s", path, cdiff);
      return NULL;
    }
  static const char *const sched_fields[] = { "num_train_timesteps", "beta_start", "beta_end",
                                              "beta_schedule", NULL };
  g_autofree char *sj_ours = ddim_schedule_to_json (schedule);
  g_autofree char *sj_theirs = ddim_schedule_to_json (ck_sched);
  g_autofree char *sdiff = json_difference (sj_ours, sj_theirs, sched_fields);
  if (sdiff)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "checkpoint %s was made with another noise schedule: %s", path, sdiff);
      return NULL;
    }
  const char *opt_diff = NULL;
  g_autofree char *detail = NULL;
  if (ck_opts.seed != options->seed)
    opt_diff = "seed", detail = g_strdup_printf ("%" G_GUINT64_FORMAT " in the checkpoint and %"
                                                 G_GUINT64_FORMAT " here", ck_opts.seed,
                                                 options->seed);
  else if (ck_opts.batch_size != options->batch_size)
    opt_diff = "batch size", detail = g_strdup_printf ("%d in the checkpoint and %d here",
                                                       ck_opts.batch_size, options->batch_size);
  else if (ck_opts.prediction != options->prediction)
    opt_diff = "prediction type",
    detail = g_strdup_printf ("%s in the checkpoint and %s here",
                              ddim_prediction_to_string (ck_opts.prediction),
                              ddim_prediction_to_string (options->prediction));
  else if (ck_opts.hflip != options->hflip)
    opt_diff = "horizontal flips",
    detail = g_strdup_printf ("%s in the checkpoint and %s here", ck_opts.hflip ? "on" : "off",
                              options->hflip ? "on" : "off");
  if (opt_diff)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "checkpoint %s was made with another %s (%s); resuming needs the same",
                   path, opt_diff, detail);
      return NULL;
    }

  g_autoptr (DdimTrainer) tr = trainer_alloc (config, schedule, options, error);
  if (tr == NULL)
    return NULL;
  static const char *const prefixes[] = { "param.", "ema.", "adam_m.", "adam_v." };
  float *dests[] = { ddim_unet_get_params (tr->unet), ddim_unet_get_params (tr->ema), tr->m,
                     tr->v };
  for (guint k = 0; k < G_N_ELEMENTS (prefixes); k++)
    for (guint i = 0; i < tr->n_tensors; i++)
      {
        int ndim;
        gint64 shape[4];
        const char *name = ddim_unet_get_tensor (tr->unet, i, &ndim, shape, NULL);
        g_autofree char *full = g_strconcat (prefixes[k], name, NULL);
        const DdimTensorInfo *info = ddim_safetensors_lookup (st, full);
        if (info == NULL)
          {
            g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                         "checkpoint %s has no tensor '%s'", path, full);
            return NULL;
          }
        gboolean same = info->ndim == ndim;
        for (int d = 0; same && d < ndim; d++)
          same = info->shape[d] == shape[d];
        if (!same || info->dtype != DDIM_DTYPE_F32)
          {
            g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                         "checkpoint %s: tensor '%s' does not have the float32 shape the "
                         "config implies", path, full);
            return NULL;
          }
        if (!ddim_tensor_info_to_f32 (info, dests[k] + tr->slots[i].offset, error))
          return NULL;
      }
  tr->step = ck_step;
  if (!parse_count (st, path, "dataset_size", &tr->dataset_n, error))
    return NULL;
  const char *secs = checkpoint_meta (st, path, "seconds", error);
  if (secs == NULL)
    return NULL;
  tr->seconds = g_ascii_strtod (secs, NULL);
  return g_steal_pointer (&tr);
}

/* ---- model folders ---- */

/* Removes what ddim_trainer_save_model writes in @dir, then @dir. */
static void
remove_model_tree (const char *dir)
{
  static const char *const files[] = { "config.json", WEIGHTS_NAME, "scheduler_config.json" };
  for (guint i = 0; i < G_N_ELEMENTS (files); i++)
    {
      g_autofree char *p = g_build_filename (dir, files[i], NULL);
      g_unlink (p);
    }
  g_autofree char *sc = g_build_filename (dir, "scheduler", "scheduler_config.json", NULL);
  g_autofree char *sd = g_build_filename (dir, "scheduler", NULL);
  g_unlink (sc);
  g_rmdir (sd);
  g_rmdir (dir);
}

/* An entry of an existing output folder that is not part of a model
 * folder (newly allocated), or NULL. */
static char *
foreign_entry (const char *dir, GError **error)
{
  g_autoptr (GError) local = NULL;
  g_autoptr (GDir) d = g_dir_open (dir, 0, &local);
  if (d == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot read the model folder %s: %s", dir,
                   local->message);
      return NULL;
    }
  const char *name;
  while ((name = g_dir_read_name (d)))
    {
      g_autofree char *p = g_build_filename (dir, name, NULL);
      gboolean is_dir = g_file_test (p, G_FILE_TEST_IS_DIR);
      if (!is_dir && (g_str_equal (name, "config.json") || g_str_equal (name, WEIGHTS_NAME)
                      || g_str_equal (name, "scheduler_config.json")))
        continue;
      if (is_dir && g_str_equal (name, "scheduler"))
        {
          g_autoptr (GDir) sd = g_dir_open (p, 0, NULL);
          const char *sub;
          while (sd && (sub = g_dir_read_name (sd)))
            {
              g_autofree char *sp = g_build_filename (p, sub, NULL);
              if (!g_str_equal (sub, "scheduler_config.json")
                  || g_file_test (sp, G_FILE_TEST_IS_DIR))
                return g_build_filename ("scheduler", sub, NULL);
            }
          continue;
        }
      return g_strdup (name);
    }
  return NULL;
}

/* Parent folder and base name of @out_dir (trailing separators ignored). */
static void
split_path (const char *out_dir, char **parent, char **base)
{
  g_autofree char *canon = g_canonicalize_filename (out_dir, NULL);
  *parent = g_path_get_dirname (canon);
  *base = g_path_get_basename (canon);
}

gboolean
ddim_train_check_output_dir (const char *out_dir, GError **error)
{
  g_return_val_if_fail (out_dir != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
  g_autofree char *parent = NULL, *base = NULL;
  split_path (out_dir, &parent, &base);
  if (!g_file_test (parent, G_FILE_TEST_IS_DIR))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                   "cannot write the model folder %s: %s %s", out_dir, parent,
                   g_file_test (parent, G_FILE_TEST_EXISTS) ? "is not a folder"
                                                            : "does not exist");
      return FALSE;
    }
  if (g_access (parent, W_OK | X_OK) != 0)
    {
      int e = errno;
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                   "cannot write the model folder %s: folder %s is not writable (%s)", out_dir,
                   parent, g_strerror (e));
      return FALSE;
    }
  if (!g_file_test (out_dir, G_FILE_TEST_EXISTS))
    return TRUE;
  if (!g_file_test (out_dir, G_FILE_TEST_IS_DIR))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                   "cannot write the model folder %s: a file of that name exists", out_dir);
      return FALSE;
    }
  GError *local = NULL;
  g_autofree char *foreign = foreign_entry (out_dir, &local);
  if (local)
    {
      g_propagate_error (error, local);
      return FALSE;
    }
  if (foreign)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "refusing to replace %s: it holds '%s', which is not part of a model "
                   "folder (remove it or choose another output folder)", out_dir, foreign);
      return FALSE;
    }
  return TRUE;
}

gboolean
ddim_trainer_save_model (DdimTrainer *tr, const char *out_dir, gboolean use_ema, gboolean f16,
                         GError **error)
{
  g_return_val_if_fail (tr != NULL && out_dir != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);
  if (!ddim_train_check_output_dir (out_dir, error))
    return FALSE;
  g_autofree char *parent = NULL, *base = NULL;
  split_path (out_dir, &parent, &base);
  g_autofree char *tmp_name = g_strdup_printf (".%s.tmp-XXXXXX", base);
  g_autofree char *tmp = g_build_filename (parent, tmp_name, NULL);
  if (g_mkdtemp_full (tmp, 0777) == NULL)
    {
      int e = errno;
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                   "cannot write the model folder %s: cannot create a folder in %s: %s",
                   out_dir, parent, g_strerror (e));
      return FALSE;
    }
  if (!ddim_model_write_files (tmp, use_ema ? tr->ema : tr->unet, &tr->config, tr->schedule,
                               f16, NULL, error))
    {
      remove_model_tree (tmp);
      return FALSE;
    }
  g_autofree char *target = g_build_filename (parent, base, NULL);
  if (g_file_test (target, G_FILE_TEST_EXISTS))
    {
      /* Swap: old folder aside (onto an empty placeholder), new one in. */
      g_autofree char *old_name = g_strdup_printf (".%s.old-XXXXXX", base);
      g_autofree char *old = g_build_filename (parent, old_name, NULL);
      if (g_mkdtemp_full (old, 0777) == NULL || g_rename (target, old) != 0)
        {
          int e = errno;
          g_rmdir (old);
          remove_model_tree (tmp);
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                       "cannot replace the model folder %s: %s", out_dir, g_strerror (e));
          return FALSE;
        }
      if (g_rename (tmp, target) != 0)
        {
          int e = errno;
          g_rename (old, target);
          remove_model_tree (tmp);
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
                       "cannot replace the model folder %s: %s", out_dir, g_strerror (e));
          return FALSE;
        }
      remove_model_tree (old);
      return TRUE;
    }
  if (g_rename (tmp, target) != 0)
    {
      int e = errno;
      remove_model_tree (tmp);
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot create the model folder %s: %s",
                   out_dir, g_strerror (e));
      return FALSE;
    }
  return TRUE;
}
