/* ddim train --config CONFIG --data DATA --out MODEL: trains a
 * UNet2DModel from scratch and writes a diffusers model folder. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "progress.h"
#include "ddim/dataset.h"
#include "ddim/train.h"

#define CMD "train"


typedef struct {
  int      total;          /* steps of the whole run */
  int      first_step;     /* step count when this process started */
  int      batch;
  int      log_every;
  gboolean quiet;
  gint64   start_us;
  double   loss_sum;       /* since the last line */
  int      loss_n;
  const DdimTrainOptions *opts;
  GCancellable *cancellable;
} Progress;

static void
on_step (int step, int total, double loss, gpointer data)
{
  Progress *p = data;
  (void) total;
  if (cli_sigint_received ())
    g_cancellable_cancel (p->cancellable);
  p->loss_sum += loss;
  p->loss_n++;
  if (p->quiet || (step % p->log_every != 0 && step != p->total))
    return;
  double elapsed = (g_get_monotonic_time () - p->start_us) / 1e6;
  int done = step - p->first_step;
  double rate = elapsed > 0 ? done * (double) p->batch / elapsed : 0;
  g_autofree char *el = cli_format_seconds (elapsed);
  g_autofree char *eta = cli_format_seconds (done > 0 ? elapsed / done * (p->total - step) : 0);
  /* lr of the step just done. */
  fprintf (stderr, "train: step %d/%d  loss %.5f  lr %.2e  %.1f samples/s  %s  ETA %s\n", step,
           p->total, p->loss_sum / p->loss_n, ddim_train_lr_at (p->opts, step - 1), rate, el,
           step < p->total ? eta : "0.0 s");
  fflush (stderr);
  p->loss_sum = 0;
  p->loss_n = 0;
}

/* CONFIG (a model folder of any family, or a config.json) -> config and
 * scheduler. */
static gboolean
load_config (const char *arg, DdimUNetConfig *config, DdimSchedule **schedule, GError **error)
{
  if (g_file_test (arg, G_FILE_TEST_IS_DIR))
    return ddim_model_load_config (arg, config, schedule, NULL, error);
  g_autofree char *dir = g_path_get_dirname (arg);
  g_autofree char *config_path = g_strdup (arg);
  if (!ddim_unet_config_load (config_path, config, error))
    return FALSE;
  g_autofree char *s1 = g_build_filename (dir, "scheduler", "scheduler_config.json", NULL);
  g_autofree char *s2 = g_build_filename (dir, "scheduler_config.json", NULL);
  if (g_file_test (s1, G_FILE_TEST_EXISTS))
    *schedule = ddim_schedule_load (s1, error);
  else if (g_file_test (s2, G_FILE_TEST_EXISTS))
    *schedule = ddim_schedule_load (s2, error);
  else
    *schedule = ddim_schedule_new_default ();
  return *schedule != NULL;
}

static DdimDataset *
load_data (const char *data, const DdimUNetConfig *c, int max_images, GError **error)
{
  if (g_str_equal (data, "fashion-mnist"))
    return ddim_dataset_load_fashion_mnist (NULL, "train", c->sample_size, c->in_channels,
                                            max_images, error);
  if (g_str_equal (data, "fashion-mnist-test"))
    return ddim_dataset_load_fashion_mnist (NULL, "test", c->sample_size, c->in_channels,
                                            max_images, error);
  if (g_file_test (data, G_FILE_TEST_IS_DIR))
    return ddim_dataset_load_folder (data, c->sample_size, c->in_channels, max_images, error);
  if (g_file_test (data, G_FILE_TEST_EXISTS))
    return ddim_dataset_load_idx (data, NULL, c->sample_size, c->in_channels, max_images,
                                  error);
  g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO,
               "training data '%s' not found (expected fashion-mnist, fashion-mnist-test, a "
               "folder of images or an IDX image file)", data);
  return NULL;
}

int
cli_cmd_train (int argc, char **argv)
{
  g_autofree char *config_arg = NULL, *data = NULL, *out = NULL, *checkpoint = NULL;
  g_autofree char *resume = NULL, *loss_csv = NULL, *seed_str = NULL, *prediction_str = NULL;
  g_autofree char *weights_str = NULL;
  int max_images = 0, steps = -1, batch = -1, warmup = -1, checkpoint_every = 0;
  int log_every = 0;
  double lr = NAN, ema_decay = NAN, lr_min_ratio = NAN, weight_decay = NAN, grad_clip = NAN;
  gboolean hflip = FALSE, f16 = FALSE, quiet = FALSE, no_ema_warmup = FALSE, export_only = FALSE;
  GOptionEntry entries[] = {
    { "config", 0, 0, G_OPTION_ARG_FILENAME, &config_arg,
      "Model config: a config.json, or a model folder of any family (required unless "
      "--resume); a scheduler_config.json beside it or in scheduler/ (or the family's "
      "config file) sets the noise schedule (default: DDPM's linear 1e-4..0.02 over 1000 "
      "steps)", "DIR|FILE" },
    { "data", 0, 0, G_OPTION_ARG_FILENAME, &data,
      "Training images (required): fashion-mnist, fashion-mnist-test (Debian's "
      "dataset-fashion-mnist), a folder of images or an IDX image file; padded or resized "
      "to the config's sample_size", "DATA" },
    { "max-images", 0, 0, G_OPTION_ARG_INT, &max_images,
      "Use only the first N images (default: all)", "N" },
    { "out", 'o', 0, G_OPTION_ARG_FILENAME, &out,
      "Output model folder (required); an existing model folder is replaced", "DIR" },
    { "steps", 0, 0, G_OPTION_ARG_INT, &steps, "Optimisation steps in all (default 10000)", "N" },
    { "batch", 0, 0, G_OPTION_ARG_INT, &batch, "Images per step (default 64)", "B" },
    { "lr", 0, 0, G_OPTION_ARG_DOUBLE, &lr, "Peak learning rate (default 2e-4)", "LR" },
    { "warmup", 0, 0, G_OPTION_ARG_INT, &warmup,
      "Linear warm-up steps, then cosine decay (default 500)", "N" },
    { "lr-min-ratio", 0, 0, G_OPTION_ARG_DOUBLE, &lr_min_ratio,
      "Final learning rate as a fraction of --lr (default 0)", "R" },
    { "weight-decay", 0, 0, G_OPTION_ARG_DOUBLE, &weight_decay,
      "AdamW weight decay, not applied to biases and norms (default 0)", "W" },
    { "grad-clip", 0, 0, G_OPTION_ARG_DOUBLE, &grad_clip,
      "Clip the gradient's global norm to C; 0 = off (default 1)", "C" },
    { "ema-decay", 0, 0, G_OPTION_ARG_DOUBLE, &ema_decay,
      "Decay of the weights' EMA (default 0.9999)", "D" },
    { "no-ema-warmup", 0, 0, G_OPTION_ARG_NONE, &no_ema_warmup,
      "Use --ema-decay from the first step (default: min(D, (1+k)/(10+k)) as diffusers)",
      NULL },
    { "seed", 0, 0, G_OPTION_ARG_STRING, &seed_str,
      "Seed of the initialisation and of every random draw (default 0)", "S" },
    { "hflip", 0, 0, G_OPTION_ARG_NONE, &hflip, "Random horizontal flips", NULL },
    { "prediction", 0, 0, G_OPTION_ARG_STRING, &prediction_str,
      "Training target: epsilon or v_prediction (default: the scheduler config's)", "TYPE" },
    { "checkpoint", 0, 0, G_OPTION_ARG_FILENAME, &checkpoint,
      "Checkpoint file (.safetensors), written every --checkpoint-every steps, at the end "
      "and when interrupted", "FILE" },
    { "checkpoint-every", 0, 0, G_OPTION_ARG_INT, &checkpoint_every,
      "Write the checkpoint every N steps (default: only at the end)", "N" },
    { "resume", 0, 0, G_OPTION_ARG_FILENAME, &resume,
      "Continue from a checkpoint; config, schedule and options not given default to the "
      "checkpoint's, and the result equals an uninterrupted run", "FILE" },
    { "loss-csv", 0, 0, G_OPTION_ARG_FILENAME, &loss_csv,
      "Write step,loss,lr,grad_norm,seconds per step", "FILE" },
    { "weights", 0, 0, G_OPTION_ARG_STRING, &weights_str,
      "Weights to save: ema (default) or raw", "KIND" },
    { "f16", 0, 0, G_OPTION_ARG_NONE, &f16, "Save the weights as float16", NULL },
    { "export", 0, 0, G_OPTION_ARG_NONE, &export_only,
      "With --resume: write the checkpoint's model to --out as it is, without training "
      "(--data is not needed)", NULL },
    { "log-every", 0, 0, G_OPTION_ARG_INT, &log_every,
      "A progress line every N steps (default: about 50 lines per run)", "N" },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "No progress on stderr", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new (NULL);
  g_option_context_set_summary (ctx,
      "Trains a UNet2DModel from scratch with the noise-prediction (or v-prediction)\n"
      "MSE loss, AdamW with warm-up and cosine decay, gradient clipping and an EMA of\n"
      "the weights, and writes a diffusers model folder (config.json,\n"
      "diffusion_pytorch_model.safetensors, scheduler/scheduler_config.json).\n"
      "Nothing about the architecture is built in: it comes from --config.\n"
      "Ctrl-C stops after the current step, writes the checkpoint when --checkpoint\n"
      "is given, and exits with status 130 without writing the model.");
  g_option_context_add_main_entries (ctx, entries, NULL);

  int rc;
  if (!cli_parse_options (ctx, CMD, &argc, &argv, &rc))
    return rc;
  if (argc != 1)
    return cli_usage_error (CMD, "unexpected argument '%s'", argv[1]);
  if (export_only && resume == NULL)
    return cli_usage_error (CMD, "--export needs --resume CHECKPOINT");
  if (config_arg == NULL && resume == NULL)
    return cli_usage_error (CMD, "missing --config DIR|FILE");
  if (data == NULL && !export_only)
    return cli_usage_error (CMD, "missing --data fashion-mnist|fashion-mnist-test|FOLDER");
  if (out == NULL)
    return cli_usage_error (CMD, "missing --out MODEL_DIR");
  if (!cli_check_range (CMD, "--max-images", max_images, 0, G_MAXINT, &rc)
      || !cli_check_range (CMD, "--checkpoint-every", checkpoint_every, 0, G_MAXINT, &rc)
      || !cli_check_range (CMD, "--log-every", log_every, 0, G_MAXINT, &rc)
      || (steps != -1 && !cli_check_range (CMD, "--steps", steps, 1, G_MAXINT, &rc))
      || (batch != -1 && !cli_check_range (CMD, "--batch", batch, 1, 65536, &rc))
      || (warmup != -1 && !cli_check_range (CMD, "--warmup", warmup, 0, G_MAXINT, &rc)))
    return rc;
  if (checkpoint_every > 0 && checkpoint == NULL)
    return cli_usage_error (CMD, "--checkpoint-every needs --checkpoint FILE");
  if (!isnan (lr) && !(lr > 0 && isfinite (lr)))
    return cli_usage_error (CMD, "--lr must be a positive number, not %g", lr);
  if (!isnan (ema_decay) && !(ema_decay >= 0 && ema_decay <= 1))
    return cli_usage_error (CMD, "--ema-decay must be between 0 and 1, not %g", ema_decay);
  if (!isnan (lr_min_ratio) && !(lr_min_ratio >= 0 && lr_min_ratio <= 1))
    return cli_usage_error (CMD, "--lr-min-ratio must be between 0 and 1, not %g",
                            lr_min_ratio);
  if (!isnan (weight_decay) && !(weight_decay >= 0 && isfinite (weight_decay)))
    return cli_usage_error (CMD, "--weight-decay must be >= 0, not %g", weight_decay);
  if (!isnan (grad_clip) && !(grad_clip >= 0 && isfinite (grad_clip)))
    return cli_usage_error (CMD, "--grad-clip must be >= 0, not %g", grad_clip);
  gboolean use_ema = TRUE;
  if (weights_str && g_str_equal (weights_str, "raw"))
    use_ema = FALSE;
  else if (weights_str && !g_str_equal (weights_str, "ema"))
    return cli_usage_error (CMD, "--weights must be ema or raw, not '%s'", weights_str);
  guint64 seed = 0;
  if (seed_str)
    {
      g_autoptr (GError) e = NULL;
      if (!g_ascii_string_to_unsigned (seed_str, 10, 0, G_MAXUINT64, &seed, &e))
        return cli_usage_error (CMD, "--seed: %s", e->message);
    }
  DdimPrediction prediction = DDIM_PREDICT_EPSILON;
  if (prediction_str)
    {
      if (g_str_equal (prediction_str, "epsilon"))
        prediction = DDIM_PREDICT_EPSILON;
      else if (g_str_equal (prediction_str, "v_prediction"))
        prediction = DDIM_PREDICT_V;
      else
        return cli_usage_error (CMD, "--prediction must be epsilon or v_prediction, not '%s'",
                                prediction_str);
    }

  /* Configuration: --config, else the checkpoint's. Options not given
   * come from the checkpoint when resuming, else from the defaults. */
  g_autoptr (GError) error = NULL;
  DdimUNetConfig config;
  g_autoptr (DdimSchedule) schedule = NULL;
  DdimTrainOptions o;
  ddim_train_options_init (&o);
  gboolean have_prediction = prediction_str != NULL;
  if (resume)
    {
      DdimUNetConfig ck_config;
      g_autoptr (DdimSchedule) ck_sched = NULL;
      if (!ddim_train_checkpoint_info (resume, &ck_config, &ck_sched, &o, NULL, &error))
        return cli_error (CMD, error);
      if (config_arg == NULL)
        {
          config = ck_config;
          schedule = g_steal_pointer (&ck_sched);
        }
      hflip = hflip || o.hflip;
      if (seed_str == NULL)
        seed = o.seed;
      if (!have_prediction)
        prediction = o.prediction, have_prediction = TRUE;
    }
  if (config_arg && !load_config (config_arg, &config, &schedule, &error))
    return cli_error (CMD, error);
  if (!have_prediction)
    prediction = schedule->prediction == DDIM_PREDICT_V ? DDIM_PREDICT_V : DDIM_PREDICT_EPSILON;
  if (steps != -1)
    o.steps = steps;
  if (batch != -1)
    o.batch_size = batch;
  if (warmup != -1)
    o.warmup_steps = warmup;
  if (!isnan (lr))
    o.lr = lr;
  if (!isnan (ema_decay))
    o.ema_decay = ema_decay;
  if (!isnan (lr_min_ratio))
    o.lr_min_ratio = lr_min_ratio;
  if (!isnan (weight_decay))
    o.weight_decay = weight_decay;
  if (!isnan (grad_clip))
    o.grad_clip = grad_clip;
  if (no_ema_warmup)
    o.ema_warmup = FALSE;
  o.hflip = hflip;
  o.seed = seed;
  o.prediction = prediction;
  o.checkpoint_every = checkpoint_every;
  o.checkpoint_path = checkpoint;
  o.loss_csv_path = loss_csv;

  /* Fail early on an output folder that cannot be written. */
  if (!ddim_train_check_output_dir (out, &error))
    return cli_error (CMD, error);

  if (export_only)
    {
      g_autoptr (DdimTrainer) trainer = ddim_trainer_resume (resume, &config, schedule, &o,
                                                             &error);
      if (trainer == NULL || !ddim_trainer_save_model (trainer, out, use_ema, f16, &error))
        return cli_error (CMD, error);
      printf ("Wrote %s: the %s weights of step %d (%s)\n", out, use_ema ? "EMA" : "raw",
              ddim_trainer_get_step (trainer), f16 ? "float16" : "float32");
      return CLI_EXIT_OK;
    }

  g_autoptr (DdimDataset) ds = load_data (data, &config, max_images, &error);
  if (ds == NULL)
    return cli_error (CMD, error);

  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  Progress progress = { 0 };
  o.progress = on_step;
  o.progress_data = &progress;
  o.cancellable = cancellable;

  g_autoptr (DdimTrainer) trainer = resume
    ? ddim_trainer_resume (resume, &config, schedule, &o, &error)
    : ddim_trainer_new (&config, schedule, &o, &error);
  if (trainer == NULL)
    return cli_error (CMD, error);

  progress.total = o.steps;
  progress.first_step = ddim_trainer_get_step (trainer);
  progress.batch = o.batch_size;
  progress.log_every = log_every > 0 ? log_every : CLAMP (o.steps / 50, 1, 1000);
  progress.quiet = quiet;
  progress.opts = ddim_trainer_get_options (trainer);
  progress.cancellable = cancellable;
  progress.start_us = g_get_monotonic_time ();
  if (!quiet)
    fprintf (stderr, "train: %d images of %dx%d, %" G_GSIZE_FORMAT " parameters, %s, steps %d"
             "..%d, batch %d\n", ds->n, ds->size, ds->size,
             ddim_unet_get_n_params (ddim_trainer_get_unet (trainer)),
             ddim_prediction_to_string (o.prediction), progress.first_step, o.steps,
             o.batch_size);

  cli_sigint_install (CMD);
  gboolean ok = ddim_trainer_run (trainer, ds, o.steps, &error);
  cli_sigint_restore ();
  if (!ok || cli_sigint_received ())
    {
      gboolean cancelled = error == NULL
                           || g_error_matches (error, DDIM_ERROR, DDIM_ERROR_CANCELLED);
      if (cancelled && checkpoint)
        {
          g_autoptr (GError) e = NULL;
          if (ddim_trainer_save_checkpoint (trainer, checkpoint, &e))
            fprintf (stderr, "ddim train: checkpoint of step %d written to %s\n",
                     ddim_trainer_get_step (trainer), checkpoint);
          else
            cli_error (CMD, e);
        }
      if (error == NULL)
        g_set_error (&error, DDIM_ERROR, DDIM_ERROR_CANCELLED, "training cancelled after step %d",
                     ddim_trainer_get_step (trainer));
      return cli_error (CMD, error);
    }
  if (checkpoint && !ddim_trainer_save_checkpoint (trainer, checkpoint, &error))
    return cli_error (CMD, error);
  if (!ddim_trainer_save_model (trainer, out, use_ema, f16, &error))
    return cli_error (CMD, error);
  printf ("Trained %d steps (%s) and wrote %s (%s weights, %s)\n",
          ddim_trainer_get_step (trainer),
          ddim_prediction_to_string (o.prediction), out, use_ema ? "EMA" : "raw",
          f16 ? "float16" : "float32");
  return CLI_EXIT_OK;
}
