/* ddim train-encoder MODEL [-o DIR]: trains the learned inversion encoder
 * of a model (ddim/encoder.h) on pairs made by its own DDIM decoding. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ddim/encoder.h"
#include "progress.h"

#define CMD "train-encoder"

typedef struct {
  CliProgress  *bar;        /* while making pairs */
  int           log_every;
  gboolean      quiet;
  gint64        start_us;   /* of the optimisation */
  double        loss_sum;
  int           loss_n;
  GCancellable *cancellable;
} Progress;

static void
on_pairs (int done, int total, gpointer data)
{
  Progress *p = data;
  cli_progress_update (done, total, p->bar);
}

static void
on_step (int step, int total, double loss, gpointer data)
{
  Progress *p = data;
  if (cli_sigint_received ())
    g_cancellable_cancel (p->cancellable);
  if (step == 1)
    {
      cli_progress_end (p->bar);
      p->start_us = g_get_monotonic_time ();
    }
  p->loss_sum += loss;
  p->loss_n++;
  if (p->quiet || (step % p->log_every != 0 && step != total))
    return;
  double elapsed = (g_get_monotonic_time () - p->start_us) / 1e6;
  g_autofree char *el = cli_format_seconds (elapsed);
  g_autofree char *eta = cli_format_seconds (elapsed / step * (total - step));
  fprintf (stderr, "train-encoder: step %d/%d  loss %.5f  %s  ETA %s\n", step, total,
           p->loss_sum / p->loss_n, el, eta);
  fflush (stderr);
  p->loss_sum = 0;
  p->loss_n = 0;
}

int
cli_cmd_train_encoder (int argc, char **argv)
{
  g_autofree char *out = NULL, *spacing_str = NULL, *seed_str = NULL;
  int steps = -1, pairs = -1, ddim_steps = -1, batch = -1, val_pairs = -1, sample_batch = -1;
  double lr = NAN;
  gboolean f16 = FALSE, quiet = FALSE;
  GOptionEntry entries[] = {
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &out,
      "Encoder folder to write (default MODEL/encoder); an existing encoder folder is "
      "replaced", "DIR" },
    { "steps", 0, 0, G_OPTION_ARG_INT, &steps, "Optimisation steps (default 3000)", "N" },
    { "pairs", 0, 0, G_OPTION_ARG_INT, &pairs,
      "Training pairs (x_T, DDIM decoding of x_T), made once (default 2048)", "N" },
    { "val-pairs", 0, 0, G_OPTION_ARG_INT, &val_pairs,
      "Held-out pairs for the validation MSE (default 64)", "N" },
    { "ddim-steps", 0, 0, G_OPTION_ARG_INT, &ddim_steps,
      "DDIM steps K of the decoding the encoder inverts (default 20); 'ddim invert --method "
      "encoder' uses these", "K" },
    { "spacing", 0, 0, G_OPTION_ARG_STRING, &spacing_str,
      "Timestep spacing: leading, trailing or linspace (default: the scheduler config's)",
      "SPACING" },
    { "batch", 0, 0, G_OPTION_ARG_INT, &batch, "Pairs per optimisation step (default 32)", "B" },
    { "sample-batch", 0, 0, G_OPTION_ARG_INT, &sample_batch,
      "Images per sampling call while making pairs (default 16)", "N" },
    { "lr", 0, 0, G_OPTION_ARG_DOUBLE, &lr, "Peak learning rate (default 1e-3)", "LR" },
    { "seed", 0, 0, G_OPTION_ARG_STRING, &seed_str,
      "Seed of the pairs, the initialisation and the batches (default 0)", "S" },
    { "f16", 0, 0, G_OPTION_ARG_NONE, &f16, "Save the weights as float16", NULL },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "No progress on stderr", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("[MODEL]");
  g_option_context_set_summary (ctx,
      "Trains a learned inversion encoder E(x0) -> x_T for MODEL: a small\n"
      "fully convolutional network fitted (MSE) to pairs of seeded noise x_T and its\n"
      "K-step DDIM decoding x0. 'ddim invert --method encoder' then inverts an image\n"
      "with one pass of it, and '--method hybrid' starts its optimisation there.\n"
      "The folder records the model's weights SHA-256: an encoder is refused for\n"
      "another model. Ctrl-C stops and writes nothing (exit status 130).");
  g_option_context_add_main_entries (ctx, entries, NULL);
  int rc;
  if (!cli_parse_options (ctx, CMD, &argc, &argv, &rc))
    return rc;
  g_auto (GStrv) args = NULL;
  if (!cli_model_argument (CMD, 0, &argc, &argv, &args, &rc))
    return rc;
  if (argc < 2)
    return cli_usage_error (CMD, "missing MODEL folder (the default model could not be found)");
  if (argc > 2)
    return cli_usage_error (CMD, "too many arguments");
  if ((steps != -1 && !cli_check_range (CMD, "--steps", steps, 0, G_MAXINT, &rc))
      || (pairs != -1 && !cli_check_range (CMD, "--pairs", pairs, 1, 10000000, &rc))
      || (val_pairs != -1 && !cli_check_range (CMD, "--val-pairs", val_pairs, 1, 1000000, &rc))
      || (ddim_steps != -1 && !cli_check_range (CMD, "--ddim-steps", ddim_steps, 1, G_MAXINT,
                                                &rc))
      || (batch != -1 && !cli_check_range (CMD, "--batch", batch, 1, 65536, &rc))
      || (sample_batch != -1
          && !cli_check_range (CMD, "--sample-batch", sample_batch, 1, 65536, &rc)))
    return rc;
  if (!isnan (lr) && !(lr > 0 && isfinite (lr)))
    return cli_usage_error (CMD, "--lr must be a positive number, not %g", lr);
  guint64 seed = 0;
  DdimSpacing spacing = DDIM_SPACING_LEADING;
  {
    g_autoptr (GError) e = NULL;
    if (seed_str && !g_ascii_string_to_unsigned (seed_str, 10, 0, G_MAXUINT64, &seed, &e))
      return cli_usage_error (CMD, "--seed: %s", e->message);
    if (spacing_str && !ddim_spacing_from_string (spacing_str, &spacing, &e))
      return cli_usage_error (CMD, "--spacing: %s", e->message);
  }

  g_autoptr (DdimModel) model = cli_load_model (CMD, argv[1], &rc);
  if (model == NULL)
    return rc;
  g_autofree char *dir = out ? g_strdup (out)
                             : g_build_filename (argv[1], DDIM_ENCODER_DIR_NAME, NULL);
  g_autoptr (GError) error = NULL;
  if (!ddim_convnet_check_output_dir (dir, &error))
    return cli_error (CMD, error);

  DdimEncoderTrainOptions o;
  ddim_encoder_train_options_init (&o, model->schedule);
  if (steps != -1)
    o.steps = steps;
  if (pairs != -1)
    o.pairs = pairs;
  if (val_pairs != -1)
    o.val_pairs = val_pairs;
  if (ddim_steps != -1)
    o.ddim_steps = ddim_steps;
  if (batch != -1)
    o.batch_size = batch;
  if (sample_batch != -1)
    o.sample_batch = sample_batch;
  if (!isnan (lr))
    o.lr = lr;
  if (spacing_str)
    o.spacing = spacing;
  o.seed = seed;
  o.warmup_steps = MIN (o.warmup_steps, MAX (o.steps / 10, 1));
  if (o.ddim_steps > model->schedule->num_train_timesteps)
    return cli_usage_error (CMD, "--ddim-steps must be between 1 and %d, not %d",
                            model->schedule->num_train_timesteps, o.ddim_steps);

  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  g_autoptr (CliProgress) bar = cli_progress_new ("pairs", cancellable, quiet);
  Progress p = { bar, CLAMP (o.steps / 20, 1, 1000), quiet, g_get_monotonic_time (), 0, 0,
                 cancellable };
  o.pairs_progress = on_pairs;
  o.progress = on_step;
  o.progress_data = &p;
  o.cancellable = cancellable;
  if (!quiet)
    fprintf (stderr, "train-encoder: %d + %d held-out pairs of %d DDIM steps (%s), then %d "
             "steps of batch %d\n", o.pairs, o.val_pairs, o.ddim_steps,
             ddim_spacing_to_string (o.spacing), o.steps, o.batch_size);
  DdimEncoderTrainStats stats = { 0 };
  cli_sigint_install (CMD);
  g_autoptr (DdimEncoder) enc = ddim_encoder_train (model->unet, model->schedule,
                                                    model->weights_sha256, &o, &stats, &error);
  cli_sigint_restore ();
  cli_progress_end (bar);
  if (enc == NULL)
    return cli_error (CMD, error);
  if (cli_sigint_received ())
    {
      g_set_error_literal (&error, DDIM_ERROR, DDIM_ERROR_CANCELLED, "cancelled");
      return cli_error (CMD, error);
    }
  if (!ddim_encoder_save (enc, dir, f16, &error))
    return cli_error (CMD, error);
  g_autofree char *ps = cli_format_seconds (stats.pair_seconds);
  g_autofree char *ts = cli_format_seconds (stats.train_seconds);
  printf ("Encoder for %d DDIM steps (%s): held-out MSE %.4f -> %.4f (training loss %.4f); "
          "pairs %s, training %s; wrote %s\n", o.ddim_steps, ddim_spacing_to_string (o.spacing),
          stats.val_mse_initial, stats.val_mse_final, stats.train_loss_final, ps, ts, dir);
  return CLI_EXIT_OK;
}
