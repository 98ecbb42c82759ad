/* ddim eval-classifier train|test|histogram: the Fashion-MNIST classifier
 * that judges a model's samples (ddim/classifier.h). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ddim/classifier.h"
#include "ddim/dataset.h"
#include "ddim/sampler.h"
#include "progress.h"

#define CMD "eval-classifier"
#define N_CLASSES DDIM_FASHION_MNIST_N_CLASSES
/* A class above this share of the samples is flagged. */
#define MAX_SHARE 0.20

typedef struct {
  int           total, log_every;
  gboolean      quiet;
  gint64        start_us;
  double        loss_sum;
  int           loss_n;
  GCancellable *cancellable;
} TrainProgress;

static void
on_train_step (int step, int total, double loss, gpointer data)
{
  TrainProgress *p = data;
  (void) total;
  if (cli_sigint_received ())
    g_cancellable_cancel (p->cancellable);
  p->loss_sum += loss;
  p->loss_n++;
  if (p->quiet || (step % p->log_every != 0 && step != p->total))
    return;
  double elapsed = (g_get_monotonic_time () - p->start_us) / 1e6;
  g_autofree char *el = cli_format_seconds (elapsed);
  g_autofree char *eta = cli_format_seconds (elapsed / step * (p->total - step));
  fprintf (stderr, "eval-classifier: step %d/%d  loss %.4f  %s  ETA %s\n", step, p->total,
           p->loss_sum / p->loss_n, el, eta);
  fflush (stderr);
  p->loss_sum = 0;
  p->loss_n = 0;
}

static void
print_confusion (const int *confusion)
{
  printf ("\nConfusion counts (rows: true class, columns: predicted; last: recall):\n%-13s", "");
  for (int k = 0; k < N_CLASSES; k++)
    printf (" %5d", k);
  printf ("\n");
  for (int t = 0; t < N_CLASSES; t++)
    {
      int row = 0;
      for (int k = 0; k < N_CLASSES; k++)
        row += confusion[t * N_CLASSES + k];
      printf ("%d %-11s", t, ddim_fashion_mnist_class_name (t));
      for (int k = 0; k < N_CLASSES; k++)
        printf (" %5d", confusion[t * N_CLASSES + k]);
      printf ("   %5.1f%%\n", row ? 100.0 * confusion[t * N_CLASSES + t] / row : 0.0);
    }
}

static int
cmd_train (const char *out, int steps, int batch, int max_images, double lr, guint64 seed,
           const char *data_dir, gboolean f16, gboolean quiet)
{
  g_autoptr (GError) error = NULL;
  if (!ddim_convnet_check_output_dir (out, &error))
    return cli_error (CMD, error);
  g_autoptr (DdimDataset) train = ddim_dataset_load_fashion_mnist (data_dir, "train", 32, 1,
                                                                   max_images, &error);
  if (train == NULL)
    return cli_error (CMD, error);
  g_autoptr (DdimDataset) test = ddim_dataset_load_fashion_mnist (data_dir, "test", 32, 1, 0,
                                                                  &error);
  if (test == NULL)
    return cli_error (CMD, error);
  g_autoptr (DdimClassifier) c = ddim_classifier_new (1, 32, NULL, seed, &error);
  if (c == NULL)
    return cli_error (CMD, error);
  DdimTrainOptions o;
  ddim_classifier_train_options_init (&o);
  if (steps > 0)
    o.steps = steps;
  if (batch > 0)
    o.batch_size = batch;
  if (lr > 0)
    o.lr = lr;
  o.warmup_steps = MIN (o.warmup_steps, MAX (o.steps / 10, 1));
  o.seed = seed;
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  TrainProgress p = { o.steps, CLAMP (o.steps / 20, 1, 1000), quiet, g_get_monotonic_time (), 0,
                      0, cancellable };
  o.progress = on_train_step;
  o.progress_data = &p;
  o.cancellable = cancellable;
  if (!quiet)
    fprintf (stderr, "eval-classifier: %d training images, %" G_GSIZE_FORMAT " parameters, %d "
             "steps of batch %d\n", train->n,
             ddim_convnet_get_n_params (ddim_classifier_get_net (c)), o.steps, o.batch_size);
  cli_sigint_install (CMD);
  gboolean ok = ddim_classifier_train (c, train, &o, &error);
  cli_sigint_restore ();
  if (!ok)
    return cli_error (CMD, error);
  double seconds = (g_get_monotonic_time () - p.start_us) / 1e6;
  double acc;
  int confusion[N_CLASSES * N_CLASSES];
  if (!ddim_classifier_evaluate (c, test, &acc, confusion, &error))
    return cli_error (CMD, error);
  DdimConvNet *net = ddim_classifier_get_net (c);
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  ddim_convnet_set_metadata (net, "test_accuracy", g_ascii_formatd (buf, sizeof buf, "%.4f", acc));
  ddim_convnet_set_metadata (net, "train_seconds", g_ascii_formatd (buf, sizeof buf, "%.1f",
                                                                    seconds));
  if (!ddim_classifier_save (c, out, f16, &error))
    return cli_error (CMD, error);
  g_autofree char *secs = cli_format_seconds (seconds);
  printf ("Trained %d steps of batch %d in %s; test accuracy %.2f%% (%d images); wrote %s\n",
          o.steps, o.batch_size, secs, 100 * acc, test->n, out);
  return CLI_EXIT_OK;
}

static int
cmd_test (const char *dir, int max_images, const char *data_dir)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimClassifier) c = ddim_classifier_load (dir, &error);
  if (c == NULL)
    return cli_error (CMD, error);
  g_autoptr (DdimDataset) test = ddim_dataset_load_fashion_mnist (
      data_dir, "test", ddim_classifier_get_size (c), ddim_classifier_get_channels (c),
      max_images, &error);
  if (test == NULL)
    return cli_error (CMD, error);
  double acc;
  int confusion[N_CLASSES * N_CLASSES];
  gint64 t0 = g_get_monotonic_time ();
  if (!ddim_classifier_evaluate (c, test, &acc, confusion, &error))
    return cli_error (CMD, error);
  double secs = (g_get_monotonic_time () - t0) / 1e6;
  printf ("Test accuracy: %.2f%% on %d Fashion-MNIST test images (%.1f ms/image)\n", 100 * acc,
          test->n, 1000 * secs / test->n);
  print_confusion (confusion);
  return CLI_EXIT_OK;
}

typedef struct {
  CliProgress *bar;
  int          base, total;
} BatchProgress;

static void
on_sample_step (int done, int total, gpointer data)
{
  BatchProgress *b = data;
  (void) total;
  cli_progress_update (b->base + done, b->total, b->bar);
}

static int
cmd_histogram (const char *dir, const char *model_dir, int n, int steps, guint64 seed, int batch,
               gboolean quiet)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimClassifier) c = ddim_classifier_load (dir, &error);
  if (c == NULL)
    return cli_error (CMD, error);
  int rc;
  g_autoptr (DdimModel) model = cli_load_model (CMD, model_dir, &rc);
  if (model == NULL)
    return rc;
  const DdimUNetConfig *mc = ddim_unet_get_config (model->unet);
  if (!ddim_classifier_check_input (c, mc->in_channels, mc->sample_size, &error))
    {
      g_prefix_error (&error, "model %s does not fit the classifier: ", model_dir);
      return cli_error (CMD, error);
    }
  if (steps > model->schedule->num_train_timesteps)
    return cli_usage_error (CMD, "--steps must be between 1 and %d, not %d",
                            model->schedule->num_train_timesteps, steps);
  int S = mc->sample_size;
  gsize per = (gsize) mc->in_channels * S * S;
  g_autofree float *x = g_try_new (float, (gsize) n * per);
  if (x == NULL)
    return cli_fail (CMD, "out of memory for %d samples", n);
  /* The x_T of 'ddim sample -n N --seed S': one stream for all. */
  ddim_randn (seed, x, (gsize) n * per);

  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  g_autoptr (CliProgress) bar = cli_progress_new ("sample", cancellable, quiet);
  int batches = (n + batch - 1) / batch;
  BatchProgress bp = { bar, 0, batches * steps };
  DdimRunOptions o;
  ddim_run_options_init (&o, model->schedule);
  o.steps = steps;
  o.progress = on_sample_step;
  o.progress_data = &bp;
  o.cancellable = cancellable;
  cli_sigint_install (CMD);
  gboolean ok = TRUE;
  for (int b = 0; b < n && ok; b += batch)
    {
      int m = MIN (batch, n - b);
      bp.base = (b / batch) * steps;
      ok = ddim_sample (model->unet, model->schedule, x + (gsize) b * per, m, S, S, &o, &error);
    }
  cli_sigint_restore ();
  cli_progress_end (bar);
  if (!ok)
    return cli_error (CMD, error);
  double sample_secs = cli_progress_elapsed (bar);

  g_autofree int *labels = g_new (int, n);
  g_autofree float *probs = g_new (float, (gsize) n * N_CLASSES);
  if (!ddim_classifier_predict (c, x, n, labels, probs, &error))
    return cli_error (CMD, error);
  int counts[N_CLASSES] = { 0 };
  double conf[N_CLASSES] = { 0 };
  for (int i = 0; i < n; i++)
    {
      counts[labels[i]]++;
      conf[labels[i]] += probs[(gsize) i * N_CLASSES + labels[i]];
    }
  g_autofree char *secs = cli_format_seconds (sample_secs);
  printf ("Classes of %d DDIM samples of %s (%d steps, seed %" G_GUINT64_FORMAT ", %s):\n\n", n,
          model_dir, steps, seed, secs);
  printf ("%-12s %6s %7s  %6s\n", "class", "count", "share", "mean p");
  GString *flags = g_string_new (NULL);
  for (int k = 0; k < N_CLASSES; k++)
    {
      double share = (double) counts[k] / n;
      /* One '#' per 2% of the samples. */
      int bar_len = (int) lround (share * 50);
      char bar_str[51];
      memset (bar_str, '#', (gsize) bar_len);
      bar_str[bar_len] = '\0';
      const char *flag = counts[k] == 0 ? "  <- missing" : share > MAX_SHARE ? "  <- above 20%"
                                                                             : "";
      printf ("%-12s %6d %6.1f%%  %6.3f  %s%s\n", ddim_fashion_mnist_class_name (k), counts[k],
              100 * share, counts[k] ? conf[k] / counts[k] : 0.0, bar_str, flag);
      if (*flag)
        g_string_append_printf (flags, "%s%s %s", flags->len ? "; " : "",
                                ddim_fashion_mnist_class_name (k),
                                counts[k] == 0 ? "missing" : "above 20%");
    }
  if (flags->len)
    printf ("\nFlagged: %s\n", flags->str);
  else
    printf ("\nEvery class present, none above 20%%.\n");
  g_string_free (flags, TRUE);
  return CLI_EXIT_OK;
}

int
cli_cmd_eval_classifier (int argc, char **argv)
{
  g_autofree char *out = NULL, *seed_str = NULL, *data_dir = NULL;
  int steps = 0, batch = 0, max_images = 0, n = 1000;
  double lr = 0;
  gboolean f16 = FALSE, quiet = FALSE;
  GOptionEntry entries[] = {
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &out,
      "train: the classifier folder to write (required)", "DIR" },
    { "steps", 0, 0, G_OPTION_ARG_INT, &steps,
      "train: optimisation steps (default 2000); histogram: DDIM steps (default 50)", "N" },
    { "batch", 0, 0, G_OPTION_ARG_INT, &batch,
      "train: images per step (default 64); histogram: images per sampling call (default "
      "50)", "B" },
    { "max-images", 0, 0, G_OPTION_ARG_INT, &max_images,
      "train, test: use only the first N images of the split (default: all)", "N" },
    { "lr", 0, 0, G_OPTION_ARG_DOUBLE, &lr, "train: peak learning rate (default 2e-3)", "LR" },
    { "seed", 0, 0, G_OPTION_ARG_STRING, &seed_str,
      "train: initialisation and batches; histogram: the noise, as 'ddim sample --seed' "
      "(default 0)", "S" },
    { "n", 'n', 0, G_OPTION_ARG_INT, &n, "histogram: number of samples (default 1000)", "N" },
    { "data-dir", 0, 0, G_OPTION_ARG_FILENAME, &data_dir,
      "Folder of the Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist)",
      "DIR" },
    { "f16", 0, 0, G_OPTION_ARG_NONE, &f16, "train: save the weights as float16", NULL },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "No progress on stderr", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("train|test|histogram ...");
  g_option_context_set_summary (ctx,
      "A small Fashion-MNIST classifier (4 convolutions, 1-channel 32x32 input in\n"
      "[-1, 1]) to judge a model's samples:\n"
      "  train -o DIR [--steps N] [--batch B] [--max-images N]\n"
      "      trains it on the training split, reports the test accuracy, writes DIR\n"
      "  test DIR\n"
      "      test accuracy and confusion counts on the test split\n"
      "  histogram DIR [MODEL] [-n 1000] [--steps 50] [--seed S]\n"
      "      classifies DDIM samples of MODEL (eta 0, the x_T of 'ddim sample') and\n"
      "      prints the class histogram, flagging a class that is missing or above 20%");
  g_option_context_add_main_entries (ctx, entries, NULL);
  int rc;
  if (!cli_parse_options (ctx, CMD, &argc, &argv, &rc))
    return rc;
  if (argc < 2)
    return cli_usage_error (CMD, "missing train, test or histogram");
  const char *sub = argv[1];
  guint64 seed = 0;
  if (seed_str)
    {
      g_autoptr (GError) e = NULL;
      if (!g_ascii_string_to_unsigned (seed_str, 10, 0, G_MAXUINT64, &seed, &e))
        return cli_usage_error (CMD, "--seed: %s", e->message);
    }
  if (!cli_check_range (CMD, "--max-images", max_images, 0, G_MAXINT, &rc)
      || !cli_check_range (CMD, "--steps", steps, 0, G_MAXINT, &rc)
      || !cli_check_range (CMD, "--batch", batch, 0, 65536, &rc))
    return rc;
  if (!(lr >= 0 && isfinite (lr)))
    return cli_usage_error (CMD, "--lr must be a positive number, not %g", lr);
  if (g_str_equal (sub, "train"))
    {
      if (argc != 2)
        return cli_usage_error (CMD, "train takes no argument (the folder goes after -o)");
      if (out == NULL)
        return cli_usage_error (CMD, "train: missing -o CLASSIFIER_DIR");
      return cmd_train (out, steps, batch, max_images, lr, seed, data_dir, f16, quiet);
    }
  if (g_str_equal (sub, "test"))
    {
      if (argc != 3)
        return cli_usage_error (CMD, "usage: test CLASSIFIER_DIR");
      return cmd_test (argv[2], max_images, data_dir);
    }
  if (g_str_equal (sub, "histogram"))
    {
      if (argc != 3 && argc != 4)
        return cli_usage_error (CMD, "usage: histogram CLASSIFIER_DIR [MODEL]");
      if (!cli_check_range (CMD, "-n", n, 1, 1000000, &rc))
        return rc;
      g_autoptr (GError) error = NULL;
      g_autofree char *model_dir = argc == 4 ? g_strdup (argv[3]) : cli_default_model_dir (&error);
      if (model_dir == NULL)
        return cli_error (CMD, error);
      return cmd_histogram (argv[2], model_dir, n, steps > 0 ? steps : 50, seed,
                            batch > 0 ? batch : 50, quiet);
    }
  return cli_usage_error (CMD, "unknown subcommand '%s' (train, test or histogram)", sub);
}
