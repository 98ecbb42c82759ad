/* ddim bench: times the UNet forward pass (random weights) against the
 * BLAS's own sgemm speed, and reports memory. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <cblas.h>

#include "cli.h"
#include "ddim/config.h"
#include "ddim/dataset.h"
#include "ddim/edit.h"
#include "ddim/exact.h"
#include "ddim/train.h"
#include "ddim/model.h"
#include "ddim/unet.h"

#define CMD "bench"

/* google/ddpm-cifar10-32's config.json: the default model of the bench. */
static const char builtin_config[] =
  "{\n"
  "  \"_class_name\": \"UNet2DModel\",\n"
  "  \"act_fn\": \"silu\",\n"
  "  \"attention_head_dim\": null,\n"
  "  \"center_input_sample\": false,\n"
  "  \"downsample_padding\": 0,\n"
  "  \"flip_sin_to_cos\": false,\n"
  "  \"freq_shift\": 1,\n"
  "  \"in_channels\": 3,\n"
  "  \"out_channels\": 3,\n"
  "  \"layers_per_block\": 2,\n"
  "  \"mid_block_scale_factor\": 1,\n"
  "  \"norm_eps\": 1e-06,\n"
  "  \"norm_num_groups\": 32,\n"
  "  \"time_embedding_type\": \"positional\",\n"
  "  \"resnet_time_scale_shift\": \"default\",\n"
  "  \"add_attention\": true,\n"
  "  \"sample_size\": 32,\n"
  "  \"block_out_channels\": [128, 256, 256, 256],\n"
  "  \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\", \"DownBlock2D\", "
  "\"DownBlock2D\"],\n"
  "  \"up_block_types\": [\"UpBlock2D\", \"UpBlock2D\", \"AttnUpBlock2D\", \"UpBlock2D\"]\n"
  "}\n";

/* The sgemm reference: an im2col 3x3 convolution of 256 channels over a
 * 64x64 map (M = output channels, N = pixels, K = 9 * input channels). */
#define SGEMM_M 256
#define SGEMM_N 4096
#define SGEMM_K 2304
#define SGEMM_REPEAT 5

#define MIB (1024.0 * 1024.0)

static void
kv (const char *key, const char *format, ...) G_GNUC_PRINTF (2, 3);

static void
kv (const char *key, const char *format, ...)
{
  va_list ap;
  va_start (ap, format);
  g_autofree char *value = g_strdup_vprintf (format, ap);
  va_end (ap);
  g_autofree char *k = g_strconcat (key, ":", NULL);
  printf ("%-24s %s\n", k, value);
  fflush (stdout);
}

/* Peak resident set size in bytes: VmHWM, else ru_maxrss; -1 if neither. */
static double
peak_rss_bytes (const char **source)
{
  g_autofree char *status = NULL;
  if (g_file_get_contents ("/proc/self/status", &status, NULL, NULL))
    {
      const char *line = strstr (status, "VmHWM:");
      if (line)
        {
          long long kib = strtoll (line + strlen ("VmHWM:"), NULL, 10);
          if (kib > 0)
            {
              *source = "VmHWM";
              return kib * 1024.0;
            }
        }
    }
  struct rusage ru;
  if (getrusage (RUSAGE_SELF, &ru) == 0 && ru.ru_maxrss > 0)
    {
      *source = "ru_maxrss";
      return ru.ru_maxrss * 1024.0; /* KiB on Linux */
    }
  *source = "unavailable";
  return -1;
}

static double
process_cpu_seconds (void)
{
  struct timespec ts;
  if (clock_gettime (CLOCK_PROCESS_CPUTIME_ID, &ts) != 0)
    return 0;
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
compare_doubles (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return (x > y) - (x < y);
}

/* Best seconds of @repeat sgemm calls of the reference shape, after one
 * warm-up call. */
static double
time_sgemm (int repeat)
{
  gsize na = (gsize) SGEMM_M * SGEMM_K, nb = (gsize) SGEMM_K * SGEMM_N;
  gsize nc = (gsize) SGEMM_M * SGEMM_N;
  g_autofree float *a = g_new (float, na);
  g_autofree float *b = g_new (float, nb);
  g_autofree float *c = g_new0 (float, nc);
  ddim_randn (11, a, na);
  ddim_randn (12, b, nb);
  double best = G_MAXDOUBLE;
  for (int r = -1; r < repeat; r++)
    {
      gint64 t0 = g_get_monotonic_time ();
      cblas_sgemm (CblasRowMajor, CblasNoTrans, CblasNoTrans, SGEMM_M, SGEMM_N, SGEMM_K, 1.f,
                   a, SGEMM_K, b, SGEMM_N, 0.f, c, SGEMM_N);
      double s = (g_get_monotonic_time () - t0) / 1e6;
      if (r >= 0 && s < best)
        best = s;
    }
  return best;
}

/* User + system CPU seconds of this process so far (all threads). */
static double
cpu_seconds (void)
{
  struct rusage ru;
  if (getrusage (RUSAGE_SELF, &ru) != 0)
    return 0;
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec
         + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Forgets the peak resident size so far (Linux: clear_refs 5), so that
 * VmHWM then measures from here. FALSE where that is not possible. */
static gboolean
reset_peak_rss (void)
{
  FILE *f = fopen ("/proc/self/clear_refs", "w");
  if (f == NULL)
    return FALSE;
  gboolean ok = fputs ("5", f) >= 0;
  return fclose (f) == 0 && ok;
}

/* One whole Semantic edit of a random @size image as the GIMP plug-in
 * makes it by default (ddim_edit_defaults: inversion, then the change of
 * the edit, with a reconstruction pass only for inexact latents), along a
 * random h-space direction applied from 15% of the training timesteps up
 * (where the default model's class directions start). */
static int
bench_edit (DdimUNet *unet, int size, double weights_mib, const DdimEditDefaults *settings)
{
  const DdimUNetConfig *c = ddim_unet_get_config (unet);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimSchedule) schedule = ddim_schedule_new_default ();
  DdimEditDefaults defaults = *settings;
  int hc, hh, hw;
  ddim_unet_hspace_shape (unet, size, size, &hc, &hh, &hw);
  gsize nh = (gsize) hc * hh * hw, nx = (gsize) c->in_channels * size * size;
  g_autoptr (DdimDirection) d = ddim_direction_new ("random", DDIM_SPACE_H, 3, hc, hh, hw);
  ddim_randn (5, d->data, nh);
  double norm = 0;
  for (gsize i = 0; i < nh; i++)
    norm += (double) d->data[i] * d->data[i];
  for (gsize i = 0; i < nh; i++)
    d->data[i] = (float) (d->data[i] / sqrt (norm));
  d->t_min = schedule->num_train_timesteps * 3 / 20;
  d->t_max = schedule->num_train_timesteps - 1;
  g_autofree float *x0 = g_new (float, nx);
  g_autofree float *change = g_new (float, nx);
  ddim_randn (6, x0, nx);
  for (gsize i = 0; i < nx; i++)
    x0[i] = CLAMP (x0[i] * 0.5f, -1.f, 1.f);

  gboolean reset = reset_peak_rss ();
  DdimRunOptions o;
  ddim_run_options_init (&o, schedule);
  o.steps = defaults.steps;
  DdimExactStats inversion = { 0 };
  DdimEditStats edit = { 0 };
  gint64 t0 = g_get_monotonic_time ();
  double cpu0 = cpu_seconds ();
  g_autoptr (DdimLatent) latent = ddim_invert_with_method (unet, schedule, x0, size, size,
                                                           defaults.method, NULL, &o,
                                                           &inversion, &error);
  if (latent == NULL
      || !ddim_edit_change (unet, schedule, latent, defaults.decoder, defaults.reconstruct, x0, d, sqrt ((double) nh), -1, &o, change,
                            &edit, &error))
    return cli_error (CMD, error);
  double seconds = (g_get_monotonic_time () - t0) / 1e6;
  double cpu = cpu_seconds () - cpu0;
  const char *source = NULL;
  double peak = peak_rss_bytes (&source);

  kv ("edit seconds", "%.2f (%d model evaluations)", seconds,
      inversion.model_evals + edit.model_evals);
  kv ("edit CPU seconds", "%.2f (all threads)", cpu);
  kv ("edit settings", "%s inversion, %d steps, h shifted for t >= %d (%d extra decoder "
      "halves; %d of the evaluations in the inversion), %s",
      ddim_inversion_method_to_string (defaults.method), defaults.steps, d->t_min,
      edit.shifted_decoders, inversion.model_evals,
      !defaults.reconstruct ? "no reconstruction pass (the source stands for it)"
      : defaults.decoder == DDIM_EDIT_DECODER_OWN && ddim_edit_latent_is_exact (latent)
        ? "no reconstruction pass (exact latent)" : "with a reconstruction pass");
  if (peak >= 0)
    {
      kv ("edit peak resident", "%.1f MiB (%s, %s)", peak / MIB, source,
          reset ? "from the start of the edit" : "whole run: the peak could not be reset");
      kv ("edit peak - weights", "%.1f MiB", peak / MIB - weights_mib);
    }
  else
    kv ("edit peak resident", "unavailable");
  return CLI_EXIT_OK;
}

int
cli_cmd_bench (int argc, char **argv)
{
  g_autofree char *config_arg = NULL;
  int repeat = 3, batch = 1, size = 0;
  gboolean vjp = FALSE, train = FALSE, edit = FALSE;
  g_autofree char *edit_method = NULL, *edit_decoder = NULL, *edit_reconstruct = NULL;
  int edit_steps = 0;
  GOptionEntry entries[] = {
    { "config", 0, 0, G_OPTION_ARG_FILENAME, &config_arg,
      "A model folder of any family (config.json, ermongroup config.yml, guided-diffusion "
      "model_flags.txt) or a config.json whose architecture to benchmark; weights are not "
      "read (default: the built-in config of google/ddpm-cifar10-32)", "DIR" },
    { "repeat", 0, 0, G_OPTION_ARG_INT, &repeat,
      "Timed forward passes after one warm-up; the best counts (default 3)", "K" },
    { "batch", 0, 0, G_OPTION_ARG_INT, &batch, "Batch size (default 1)", "N" },
    { "vjp", 0, 0, G_OPTION_ARG_NONE, &vjp,
      "Also time one vector-Jacobian product (forward + backward) against one forward; "
      "the peak memory then includes the gradient tape", NULL },
    { "train", 0, 0, G_OPTION_ARG_NONE, &train,
      "Also time training steps (forward, backward, AdamW, EMA) on a batch of --batch "
      "random images (a batch of 1 is raised to 16) and report samples/s", NULL },
    { "edit", 0, 0, G_OPTION_ARG_NONE, &edit,
      "Also time one whole Semantic edit with the GIMP plug-in's default settings (inversion "
      "and edit, a random h-space direction) and report its model evaluations and peak "
      "memory", NULL },
    { "edit-method", 0, 0, G_OPTION_ARG_STRING, &edit_method,
      "--edit with this inversion method instead of the plug-in's (ddim, bdia, ...)", "M" },
    { "edit-steps", 0, 0, G_OPTION_ARG_INT, &edit_steps,
      "--edit with this many steps instead of the plug-in's", "N" },
    { "edit-decoder", 0, 0, G_OPTION_ARG_STRING, &edit_decoder,
      "--edit decoding with the method's own decoder (own: no reconstruction pass for bdia) "
      "or with DDIM (ddim)", "own|ddim" },
    { "edit-reconstruct", 0, 0, G_OPTION_ARG_STRING, &edit_reconstruct,
      "--edit with (yes) or without (no) a reconstruction pass for detail keeping", "yes|no" },
    { "size", 0, 0, G_OPTION_ARG_INT, &size,
      "Image height and width (default: the config's sample_size)", "S" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new (NULL);
  g_option_context_set_summary (ctx,
      "Times the UNet forward pass of a configuration with random weights at t = 500\n"
      "and compares its speed with the BLAS's cblas_sgemm on a representative shape\n"
      "(M=256, N=4096, K=2304: a 3x3 convolution of 256 channels over 64x64 pixels).\n"
      "Also reports the parameter count and the peak resident memory, measured\n"
      "after the forward passes and before the sgemm test. The number of BLAS\n"
      "threads follows OPENBLAS_NUM_THREADS.");
  g_option_context_add_main_entries (ctx, entries, NULL);

  int rc;
  if (!cli_parse_options (ctx, CMD, &argc, &argv, &rc))
    return rc;
  if (argc > 1)
    return cli_usage_error (CMD, "unexpected argument '%s'", argv[1]);
  if (!cli_check_range (CMD, "--repeat", repeat, 1, 1000, &rc)
      || !cli_check_range (CMD, "--batch", batch, 1, 4096, &rc))
    return rc;
  if (size != 0 && !cli_check_range (CMD, "--size", size, 1, 65536, &rc))
    return rc;
  DdimEditDefaults edit_settings;
  ddim_edit_defaults (&edit_settings);
  {
    g_autoptr (GError) e = NULL;
    if (edit_method && !ddim_inversion_method_from_string (edit_method, &edit_settings.method, &e))
      return cli_usage_error (CMD, "--edit-method: %s", e->message);
    if (edit_method && edit_settings.method != DDIM_METHOD_DDIM
        && edit_settings.method != DDIM_METHOD_BDIA
        && edit_settings.method != DDIM_METHOD_FIXED_POINT)
      return cli_usage_error (CMD, "--edit-method must be ddim, bdia or fixed-point");
    if (edit_steps != 0 && !cli_check_range (CMD, "--edit-steps", edit_steps, 1, 1000, &rc))
      return rc;
    if (edit_steps)
      edit_settings.steps = edit_steps;
    if (edit_decoder && !g_str_equal (edit_decoder, "own") && !g_str_equal (edit_decoder, "ddim"))
      return cli_usage_error (CMD, "--edit-decoder must be own or ddim, not '%s'", edit_decoder);
    if (edit_reconstruct)
      edit_settings.reconstruct = g_str_equal (edit_reconstruct, "yes");
    if (edit_reconstruct && !g_str_equal (edit_reconstruct, "yes")
        && !g_str_equal (edit_reconstruct, "no"))
      return cli_usage_error (CMD, "--edit-reconstruct must be yes or no, not '%s'",
                              edit_reconstruct);
    if (edit_decoder)
      edit_settings.decoder = g_str_equal (edit_decoder, "own") ? DDIM_EDIT_DECODER_OWN
                                                               : DDIM_EDIT_DECODER_DDIM;
  }

  g_autoptr (GError) error = NULL;
  DdimUNetConfig config;
  g_autofree char *config_desc = NULL;
  if (config_arg)
    {
      if (!g_file_test (config_arg, G_FILE_TEST_EXISTS))
        return cli_fail (CMD, "--config: %s does not exist (expected a model folder, or a "
                         "config.json file)", config_arg);
      gboolean ok;
      g_autofree char *path = NULL;
      if (g_file_test (config_arg, G_FILE_TEST_IS_DIR))
        {
          DdimModelFamily family = DDIM_MODEL_FAMILY_DIFFUSERS;
          ok = ddim_model_load_config (config_arg, &config, NULL, &family, &error);
          path = g_strdup_printf ("%s (%s)", config_arg, ddim_model_family_name (family));
        }
      else
        {
          ok = ddim_unet_config_load (config_arg, &config, &error);
          path = g_strdup (config_arg);
        }
      if (!ok)
        return cli_error (CMD, error);
      config_desc = g_steal_pointer (&path);
    }
  else
    {
      if (!ddim_unet_config_parse (builtin_config, -1, &config, &error))
        return cli_error (CMD, error);
      config_desc = g_strdup ("built-in (google/ddpm-cifar10-32)");
    }
  if (size == 0)
    size = config.sample_size;
  int factor = ddim_unet_config_size_factor (&config);
  if (size % factor != 0)
    return cli_fail (CMD, "size %d is not supported by this config: it must be a multiple of %d",
                     size, factor);

  g_autoptr (DdimUNet) unet = ddim_unet_new_random (&config, 1);
  if (!ddim_unet_check_size (unet, size, size, &error))
    return cli_error (CMD, error);
  const DdimUNetConfig *c = ddim_unet_get_config (unet);

  gsize n_in = (gsize) batch * c->in_channels * size * size;
  gsize n_out = (gsize) batch * c->out_channels * size * size;
  g_autofree float *x = g_try_new (float, n_in);
  g_autofree float *out = g_try_new (float, n_out);
  g_autofree float *t = g_new (float, batch);
  if (x == NULL || out == NULL)
    return cli_fail (CMD, "out of memory for a batch of %d at %dx%d", batch, size, size);
  ddim_randn (2, x, n_in);
  for (int i = 0; i < batch; i++)
    t[i] = 500.f;

  gsize n_params = ddim_unet_get_n_params (unet);
  double weights_mib = n_params * sizeof (float) / MIB;
  double gflop = 2.0 * ddim_unet_count_macs (unet, batch, size, size) / 1e9;
  g_autofree char *np = cli_group_thousands (n_params);
  const char *coretype = g_getenv ("OPENBLAS_CORETYPE");

  kv ("config", "%s", config_desc);
  kv ("input", "%d x %d x %d x %d (t = 500)", batch, c->in_channels, size, size);
  kv ("parameters", "%s", np);
  kv ("weights", "%.1f MiB (float32)", weights_mib);
#ifdef OPENBLAS_VERSION
  {
    g_autofree char *version = g_strstrip (g_strdup (OPENBLAS_VERSION));
    kv ("BLAS", "%s, core %s", version, openblas_get_corename ());
  }
  kv ("OPENBLAS_CORETYPE", "%s", coretype ? coretype : "(not set)");
  kv ("BLAS threads", "%d", openblas_get_num_threads ());
#else
  kv ("BLAS", "not OpenBLAS (thread count unknown)");
  kv ("OPENBLAS_CORETYPE", "%s", coretype ? coretype : "(not set)");
#endif
  /* The model splits its GEMMs over its own threads (one per processor it
   * may run on) and keeps the BLAS at one thread meanwhile. */
  kv ("model threads", "%u (BLAS 1 thread inside the forward when > 1)",
      g_get_num_processors ());
  kv ("GFLOP per call", "%.3f", gflop);

  gint64 t0 = g_get_monotonic_time ();
  if (!ddim_unet_forward (unet, x, batch, size, size, t, out, &error))
    return cli_error (CMD, error);
  double warmup = (g_get_monotonic_time () - t0) / 1e6;
  kv ("warm-up seconds", "%.4f", warmup);

  double best = G_MAXDOUBLE, best_cpu = G_MAXDOUBLE;
  g_autofree double *all = g_new (double, repeat);
  for (int r = 0; r < repeat; r++)
    {
      t0 = g_get_monotonic_time ();
      double c0 = process_cpu_seconds ();
      if (!ddim_unet_forward (unet, x, batch, size, size, t, out, &error))
        return cli_error (CMD, error);
      double s = (g_get_monotonic_time () - t0) / 1e6;
      all[r] = s;
      best = MIN (best, s);
      best_cpu = MIN (best_cpu, process_cpu_seconds () - c0);
    }
  double achieved = gflop / best;
  kv ("best seconds", "%.4f (of %d)", best, repeat);
  /* CPU time of all threads: against the wall time, how well the cores
   * are used (and, on a busy machine, a steadier measure of the work). */
  kv ("best CPU seconds", "%.4f (all threads)", best_cpu);
  /* On a shared machine the best is the quiet moment; a long run (an
   * edit) sees the median. */
  qsort (all, repeat, sizeof (double), compare_doubles);
  kv ("median seconds", "%.4f", repeat % 2 ? all[repeat / 2]
                                           : (all[repeat / 2 - 1] + all[repeat / 2]) / 2);
  kv ("achieved GFLOPS", "%.2f", achieved);

  /* One VJP (forward with tape + backward) against one forward: with all
   * parameter gradients (training) and with the input gradient only
   * (optimisation-based inversion). */
  if (vjp)
    {
      g_autofree float *w = g_new (float, n_out);
      g_autofree float *gx = g_new (float, n_in);
      g_autofree float *gp = g_try_new0 (float, n_params);
      if (gp == NULL)
        return cli_fail (CMD, "out of memory for the parameter gradients");
      ddim_randn (3, w, n_out);
      for (int mode = 0; mode < 2; mode++)
        {
          DdimUNetVjp io = { .grad_x = gx, .grad_params = mode == 0 ? gp : NULL };
          double vbest = G_MAXDOUBLE;
          for (int r = -1; r < repeat; r++)
            {
              t0 = g_get_monotonic_time ();
              if (!ddim_unet_vjp (unet, x, batch, size, size, t, w, &io, &error))
                return cli_error (CMD, error);
              double s = (g_get_monotonic_time () - t0) / 1e6;
              if (r >= 0)
                vbest = MIN (vbest, s);
            }
          kv (mode == 0 ? "VJP seconds (all grads)" : "VJP seconds (x only)",
              "%.4f = %.2f x forward", vbest, vbest / best);
        }
    }

  /* Training throughput: whole optimiser steps on random data. The FLOP
   * count is 3x the forward's per sample (forward, input and weight
   * gradients), the usual estimate. */
  double train_gflops = 0;
  if (train)
    {
      int tb = batch > 1 ? batch : 16;
      DdimTrainOptions topts;
      ddim_train_options_init (&topts);
      topts.batch_size = tb;
      topts.warmup_steps = 1;
      g_autoptr (DdimSchedule) sched = ddim_schedule_new_default ();
      g_autoptr (DdimTrainer) tr = ddim_trainer_new (c, sched, &topts, &error);
      if (tr == NULL)
        return cli_error (CMD, error);
      DdimDataset ds = { 2 * tb, c->in_channels, size, NULL, NULL };
      gsize per = (gsize) c->in_channels * size * size;
      g_autofree float *images = g_new (float, ds.n * per);
      ddim_randn (4, images, ds.n * per);
      for (gsize i = 0; i < ds.n * per; i++)
        images[i] = CLAMP (images[i] * 0.5f, -1.f, 1.f);
      ds.images = images;
      if (!ddim_trainer_run (tr, &ds, 1, &error))   /* warm-up */
        return cli_error (CMD, error);
      double tbest = G_MAXDOUBLE;
      for (int r = 0; r < repeat; r++)
        {
          t0 = g_get_monotonic_time ();
          if (!ddim_trainer_run (tr, &ds, 2 + r, &error))
            return cli_error (CMD, error);
          tbest = MIN (tbest, (g_get_monotonic_time () - t0) / 1e6);
        }
      double per_sample_gflop = 3.0 * 2.0 * ddim_unet_count_macs (unet, 1, size, size) / 1e9;
      train_gflops = per_sample_gflop * tb / tbest;
      kv ("train step seconds", "%.4f (batch %d, best of %d)", tbest, tb, repeat);
      kv ("train samples/s", "%.2f", tb / tbest);
      kv ("train GFLOPS", "%.2f (3 x forward FLOPs per sample)", train_gflops);
    }

  /* Before the sgemm buffers add to it. */
  const char *rss_source = NULL;
  double peak = peak_rss_bytes (&rss_source);

  double sgemm_s = time_sgemm (SGEMM_REPEAT);
  double sgemm_gflops = 2.0 * SGEMM_M * SGEMM_N * SGEMM_K / 1e9 / sgemm_s;
  kv ("sgemm shape", "M=%d N=%d K=%d (row-major, no transposes)", SGEMM_M, SGEMM_N, SGEMM_K);
  kv ("sgemm GFLOPS", "%.2f (best of %d)", sgemm_gflops, SGEMM_REPEAT);
  kv ("achieved / sgemm", "%.3f", achieved / sgemm_gflops);
  if (train)
    kv ("train / sgemm", "%.3f", train_gflops / sgemm_gflops);

  if (peak >= 0)
    {
      kv ("peak resident", "%.1f MiB (%s)", peak / MIB, rss_source);
      kv ("peak - weights", "%.1f MiB", peak / MIB - weights_mib);
    }
  else
    {
      kv ("peak resident", "unavailable");
      kv ("peak - weights", "unavailable");
    }
  if (edit)
    return bench_edit (unet, size, weights_mib, &edit_settings);
  return CLI_EXIT_OK;
}
