/* The `ddim` tool as a user runs it: the optional MODEL argument and the
 * embedded default model. The binary comes from DDIM_CLI (set by meson). */
#include <stdlib.h>
#include <string.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "cli-run.h"

/* Runs ddim with DDIM_MODEL set to @model_env (NULL: unset). */
static void
run_ddim (CliRun *r, const char *model_env, const char *const *args)
{
  g_auto (GStrv) envp = g_get_environ ();
  envp = model_env ? g_environ_setenv (envp, "DDIM_MODEL", model_env, TRUE)
                   : g_environ_unsetenv (envp, "DDIM_MODEL");
  cli_run (r, envp, args);
}

static char *
fixture (const char *name)
{
  const char *root = g_getenv ("DDIM_FIXTURES_DIR");
  if (root == NULL)
    return NULL;
  return g_build_filename (root, "diffusers", name, NULL);
}

/* A sample of @model made by `ddim sample` at @steps steps, written to
 * DIR/NAME (returned, g_free). */
static char *
sample_image (const char *model, const char *dir, const char *name, const char *steps)
{
  char *path = g_build_filename (dir, name, NULL);
  CliRun r = { 0 };
  run_ddim (&r, model, (const char *[]){ "sample", "-o", path, "--steps", steps, "-q", NULL });
  g_assert_cmpint (r.status, ==, 0);
  cli_run_clear (&r);
  return path;
}

/* `ddim info` without MODEL describes $DDIM_MODEL; with MODEL, that one. */
static void
test_model_from_environment (void)
{
  g_autofree char *variant = fixture ("tiny-variant");
  g_autofree char *cifar = fixture ("tiny-cifar");
  if (variant == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR not set");
      return;
    }
  CliRun r = { 0 };
  run_ddim (&r, variant, (const char *[]){ "info", NULL });
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "tiny-variant"));
  g_assert_nonnull (strstr (r.out, "32x32"));
  cli_run_clear (&r);

  /* Without DDIM_MODEL: the embedded model (installed, else the source
   * tree's). */
  run_ddim (&r, NULL, (const char *[]){ "info", NULL });
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "fashion-mnist-32"));
  g_assert_nonnull (strstr (r.out, "32x32"));
  cli_run_clear (&r);

  /* Subcommands too: the fixture has no directions file, and the message
   * names the default model's. */
  run_ddim (&r, variant, (const char *[]){ "directions", "list", NULL });
  g_assert_cmpint (r.status, ==, 1);
  g_assert_nonnull (strstr (r.err, "tiny-variant"));
  g_assert_nonnull (strstr (r.err, "directions.safetensors"));
  cli_run_clear (&r);

  run_ddim (&r, variant, (const char *[]){ "info", cifar, NULL });
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "tiny-cifar"));
  g_assert_null (strstr (r.out, "tiny-variant"));
  cli_run_clear (&r);
}

/* invert, reconstruct and sample work with and without MODEL, with the
 * same results. */
static void
test_optional_model_round_trip (void)
{
  g_autofree char *variant = fixture ("tiny-variant");
  if (variant == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR not set");
      return;
    }
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp ("test-cli-XXXXXX", &error);
  g_assert_no_error (error);
  g_autofree char *image = sample_image (variant, dir, "sample.png", "4");
  g_autofree char *lat1 = g_build_filename (dir, "a.safetensors", NULL);
  g_autofree char *lat2 = g_build_filename (dir, "b.safetensors", NULL);
  g_autofree char *back = g_build_filename (dir, "back.png", NULL);

  CliRun r = { 0 };
  run_ddim (&r, variant,
            (const char *[]){ "invert", image, "-o", lat1, "--steps", "4", "-q", NULL });
  g_assert_cmpint (r.status, ==, 0);
  cli_run_clear (&r);
  run_ddim (&r, NULL,
            (const char *[]){ "invert", variant, image, "-o", lat2, "--steps", "4", "-q", NULL });
  g_assert_cmpint (r.status, ==, 0);
  cli_run_clear (&r);

  g_autofree char *a = NULL, *b = NULL;
  gsize na = 0, nb = 0;
  g_assert_true (g_file_get_contents (lat1, &a, &na, NULL));
  g_assert_true (g_file_get_contents (lat2, &b, &nb, NULL));
  g_assert_cmpuint (na, ==, nb);
  g_assert_cmpmem (a, na, b, nb);

  run_ddim (&r, variant, (const char *[]){ "reconstruct", lat1, "-o", back, "-q", NULL });
  g_assert_cmpint (r.status, ==, 0);
  g_assert_true (g_file_test (back, G_FILE_TEST_IS_REGULAR));
  cli_run_clear (&r);

  /* A mistyped model folder is not taken for the image. */
  run_ddim (&r, variant,
            (const char *[]){ "invert", "no-such-model/", image, "-o", lat1, "-q", NULL });
  g_assert_cmpint (r.status, ==, 1);
  g_assert_nonnull (strstr (r.err, "no-such-model"));
  cli_run_clear (&r);

  for (const char *const *f = (const char *[]){ image, lat1, lat2, back, NULL }; *f; f++)
    g_unlink (*f);
  g_rmdir (dir);
}

/* A DDIM_MODEL that is no model folder is reported as such. */
static void
test_bad_model_environment (void)
{
  CliRun r = { 0 };
  run_ddim (&r, "/nonexistent/model", (const char *[]){ "info", NULL });
  g_assert_cmpint (r.status, ==, 1);
  g_assert_nonnull (strstr (r.err, "DDIM_MODEL"));
  g_assert_nonnull (strstr (r.err, "/nonexistent/model"));
  cli_run_clear (&r);

  run_ddim (&r, "/nonexistent/model", (const char *[]){ "sample", "-o", "x.png", NULL });
  g_assert_cmpint (r.status, ==, 1);
  g_assert_nonnull (strstr (r.err, "DDIM_MODEL"));
  cli_run_clear (&r);
}

/* `train --export` writes the same model as the end of the run that made
 * the checkpoint. */
static void
test_train_export (void)
{
  g_autofree char *variant = fixture ("tiny-variant");
  if (variant == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR not set");
      return;
    }
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp ("test-cli-XXXXXX", &error);
  g_assert_no_error (error);
  g_autofree char *images = g_build_filename (dir, "images", NULL);
  g_autofree char *ck = g_build_filename (dir, "ck.safetensors", NULL);
  g_autofree char *trained = g_build_filename (dir, "trained", NULL);
  g_autofree char *exported = g_build_filename (dir, "exported", NULL);
  g_assert_cmpint (g_mkdir (images, 0755), ==, 0);
  CliRun r = { 0 };
  for (int i = 0; i < 3; i++)
    {
      g_autofree char *name = g_strdup_printf ("%d.png", i);
      g_autofree char *path = g_build_filename (images, name, NULL);
      g_autofree char *seed = g_strdup_printf ("%d", i);
      run_ddim (&r, variant, (const char *[]){ "sample", "-o", path, "--steps", "2", "--seed",
                                               seed, "-q", NULL });
      g_assert_cmpint (r.status, ==, 0);
      cli_run_clear (&r);
    }
  run_ddim (&r, NULL, (const char *[]){ "train", "--config", variant, "--data", images,
                                        "--steps", "2", "--batch", "2", "--out", trained,
                                        "--checkpoint", ck, "--f16", "-q", NULL });
  g_assert_cmpint (r.status, ==, 0);
  cli_run_clear (&r);
  run_ddim (&r, NULL, (const char *[]){ "train", "--resume", ck, "--export", "--out", exported,
                                        "--f16", NULL });
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "step 2"));
  cli_run_clear (&r);
  const char *files[] = { "config.json", "diffusion_pytorch_model.safetensors",
                          "scheduler/scheduler_config.json" };
  for (gsize i = 0; i < G_N_ELEMENTS (files); i++)
    {
      g_autofree char *a_path = g_build_filename (trained, files[i], NULL);
      g_autofree char *b_path = g_build_filename (exported, files[i], NULL);
      g_autofree char *a = NULL, *b = NULL;
      gsize na = 0, nb = 0;
      g_assert_true (g_file_get_contents (a_path, &a, &na, NULL));
      g_assert_true (g_file_get_contents (b_path, &b, &nb, NULL));
      g_assert_cmpmem (a, na, b, nb);
    }
  run_ddim (&r, NULL, (const char *[]){ "train", "--export", "--out", exported, NULL });
  g_assert_cmpint (r.status, ==, 2);
  g_assert_nonnull (strstr (r.err, "--resume"));
  cli_run_clear (&r);

  g_autofree char *cmd = g_strdup_printf ("rm -rf '%s'", dir);
  g_assert_cmpint (system (cmd), ==, 0);
}

/* `eval-inversion` scores each method on the images it is given; its
 * optimisation settings are checked. */
static void
test_eval_inversion (void)
{
  g_autofree char *variant = fixture ("tiny-variant");
  if (variant == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR not set");
      return;
    }
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp ("test-cli-XXXXXX", &error);
  g_assert_no_error (error);
  g_autofree char *image = sample_image (variant, dir, "sample.png", "2");
  CliRun r = { 0 };
  run_ddim (&r, variant, (const char *[]){ "eval-inversion", image, "--methods", "ddim,optimize",
                                           "--steps", "2", "--iters", "1", "--lr", "0.05",
                                           NULL });
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "1 images"));
  g_assert_true (g_regex_match_simple ("^ddim +2 ", r.out, G_REGEX_MULTILINE, 0));
  g_assert_true (g_regex_match_simple ("^optimize +2 ", r.out, G_REGEX_MULTILINE, 0));
  cli_run_clear (&r);

  /* -1 too: it was once the "not given" mark, silently replaced by the default. */
  const char *const bad[][2] = { { "--lr", "0" }, { "--lr", "nan" }, { "--lr", "-1" },
                                 { "--iters", "-1" } };
  for (gsize i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      run_ddim (&r, variant, (const char *[]){ "eval-inversion", image, "--methods", "optimize",
                                               bad[i][0], bad[i][1], NULL });
      g_assert_cmpint (r.status, ==, 2);
      g_assert_nonnull (strstr (r.err, bad[i][0]));
      cli_run_clear (&r);
    }
  /* `invert` refuses them too, rather than falling back to its defaults. */
  g_autofree char *latent = g_build_filename (dir, "latent.safetensors", NULL);
  const char *const bad_invert[][2] = { { "--lr", "-0.5" }, { "--prior", "nan" },
                                        { "--iters", "-3" }, { "--lr", "-1" },
                                        { "--prior", "-1" }, { "--iters", "-1" } };
  for (gsize i = 0; i < G_N_ELEMENTS (bad_invert); i++)
    {
      run_ddim (&r, variant, (const char *[]){ "invert", image, "-o", latent, "--method",
                                               "optimize", bad_invert[i][0], bad_invert[i][1],
                                               NULL });
      g_assert_cmpint (r.status, ==, 2);
      g_assert_nonnull (strstr (r.err, bad_invert[i][0]));
      cli_run_clear (&r);
    }
  g_assert_false (g_file_test (latent, G_FILE_TEST_EXISTS));
  g_unlink (image);
  g_rmdir (dir);
}

/* `ddim bench --edit` keeps the bench's lines and adds the whole edit's:
 * seconds, model evaluations (as many as its settings call for: one
 * inversion, the edit, and a reconstruction unless the latent is exact)
 * and the edit's own peak memory. */
static void
test_bench_edit (void)
{
  g_autofree char *cifar = fixture ("tiny-cifar");
  if (cifar == NULL)
    {
      g_test_skip ("DDIM_FIXTURES_DIR not set");
      return;
    }
  CliRun r = { 0 };
  run_ddim (&r, NULL, (const char *[]){ "bench", "--config", cifar, "--edit", "--repeat", "1",
                                        NULL });
  g_assert_cmpint (r.status, ==, 0);
  g_assert_true (g_regex_match_simple ("^best seconds: +[0-9.]+ \\(of 1\\)$", r.out,
                                       G_REGEX_MULTILINE, 0));
  g_assert_true (g_regex_match_simple ("^peak resident: ", r.out, G_REGEX_MULTILINE, 0));
  g_autoptr (GRegex) seconds = g_regex_new ("^edit seconds: +([0-9.]+) \\(([0-9]+) model "
                                            "evaluations\\)$", G_REGEX_MULTILINE, 0, NULL);
  g_autoptr (GRegex) settings = g_regex_new ("^edit settings: +([a-z-]+) inversion, ([0-9]+) "
                                             "steps, .*, (no reconstruction pass|with a "
                                             "reconstruction pass)", G_REGEX_MULTILINE, 0, NULL);
  g_autoptr (GMatchInfo) ms = NULL, mt = NULL;
  g_assert_true (g_regex_match (seconds, r.out, 0, &ms));
  g_assert_true (g_regex_match (settings, r.out, 0, &mt));
  g_autofree char *secs = g_match_info_fetch (ms, 1), *evals = g_match_info_fetch (ms, 2);
  g_autofree char *method = g_match_info_fetch (mt, 1), *steps = g_match_info_fetch (mt, 2);
  g_autofree char *rec = g_match_info_fetch (mt, 3);
  g_assert_cmpfloat (g_ascii_strtod (secs, NULL), >, 0);
  int n = atoi (steps), expected;
  if (g_str_equal (method, "bdia"))
    expected = n + (n - 1);        /* inversion, BDIA edit decoding */
  else if (g_str_equal (method, "ddim"))
    expected = n + n;              /* inversion, edit */
  else
    expected = -1;
  if (!g_str_has_prefix (rec, "no"))
    expected += n;                 /* the reconstruction */
  g_assert_cmpint (atoi (evals), ==, expected);
  g_assert_true (g_regex_match_simple ("^edit peak resident: +[0-9.]+ MiB", r.out,
                                       G_REGEX_MULTILINE, 0));
  g_assert_true (g_regex_match_simple ("^edit peak - weights: +-?[0-9.]+ MiB$", r.out,
                                       G_REGEX_MULTILINE, 0));
  cli_run_clear (&r);

  /* Without --edit: no edit lines. */
  run_ddim (&r, NULL, (const char *[]){ "bench", "--config", cifar, "--repeat", "1", NULL });
  g_assert_cmpint (r.status, ==, 0);
  g_assert_null (strstr (r.out, "edit seconds"));
  cli_run_clear (&r);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  if (g_getenv ("DDIM_CLI") == NULL)
    g_error ("DDIM_CLI must name the ddim binary");
  g_test_add_func ("/cli/model-from-environment", test_model_from_environment);
  g_test_add_func ("/cli/optional-model-round-trip", test_optional_model_round_trip);
  g_test_add_func ("/cli/bad-model-environment", test_bad_model_environment);
  g_test_add_func ("/cli/train-export", test_train_export);
  g_test_add_func ("/cli/eval-inversion", test_eval_inversion);
  g_test_add_func ("/cli/bench-edit", test_bench_edit);
  return g_test_run ();
}
