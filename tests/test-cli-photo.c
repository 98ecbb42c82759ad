/* The commands for photo models (issue #14): `ddim info` names the family
 * and the weights' format and dtype, `ddim convert` writes a diffusers
 * folder computing the same numbers, `ddim sample --noise` starts from a
 * given x_T and reproduces the fixtures' DDIM samples. The binary comes from
 * DDIM_CLI, the fixtures from DDIM_FIXTURES_DIR (both set by meson). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "cli-run.h"
#include "ddim/directions.h"
#include "ddim/model.h"
#include "ddim/safetensors.h"

/* A fixture folder and what `ddim info` must say about it; @x_T / @x0 name
 * the tensors of its cases.safetensors holding a 10-step DDIM sample
 * (leading spacing, no clipping, eta 0). */
typedef struct {
  const char *dir;          /* under DDIM_FIXTURES_DIR */
  const char *family, *format, *dtype;
  const char *x_T, *x0;
} Fixture;

static const Fixture diffusers_fixtures[] = {
  { "diffusers/tiny-cifar", "diffusers", "safetensors", "F32", "ddim.xT", "ddim.reconstruction" },
  { "diffusers/tiny-variant", "diffusers", "safetensors", "F16", "ddim.xT",
    "ddim.reconstruction" },
};

/* Every folder of fixtures/torch: PyTorch checkpoints as their projects
 * save them (sample.*: 10 DDIM steps, timesteps 900 ... 0, final alpha 1,
 * no clipping; the diffusers .bin folder has tiny-cifar's cases). */
static const Fixture torch_fixtures[] = {
  { "torch/adm/uncond-256-like", "adm", "torch-zip", "F32", "sample.xT", "sample.x0" },
  { "torch/ermongroup/celeba-like", "ermongroup", "torch-zip", "F32", "sample.xT", "sample.x0" },
  { "torch/ermongroup/pesser-cifar-like", "ermongroup", "torch-legacy", "F32", "sample.xT",
    "sample.x0" },
  { "torch/diffusers-bin/tiny-cifar-bin", "diffusers", "torch-zip", "F32", "ddim.xT",
    "ddim.reconstruction" },
};

static char *
fixture_path (const Fixture *f)
{
  return g_build_filename (g_getenv ("DDIM_FIXTURES_DIR"), f->dir, NULL);
}

static void
run_ddim (CliRun *r, const char *const *args)
{
  g_auto (GStrv) envp = g_environ_unsetenv (g_get_environ (), "DDIM_MODEL");
  cli_run (r, envp, args);
}

/* Runs ddim, expecting exit status @status; on a mismatch prints its
 * stderr first. */
static void
run_expect (CliRun *r, int status, const char *const *args)
{
  run_ddim (r, args);
  if (r->status != status)
    g_printerr ("ddim %s: status %d, stderr:\n%s", args[0], r->status, r->err);
  g_assert_cmpint (r->status, ==, status);
}

static char *
make_tmp_dir (void)
{
  g_autoptr (GError) error = NULL;
  char *dir = g_dir_make_tmp ("test-cli-photo-XXXXXX", &error);
  g_assert_no_error (error);
  return dir;
}

static void
remove_tree (const char *dir)
{
  g_autofree char *cmd = g_strdup_printf ("rm -rf '%s'", dir);
  g_assert_cmpint (system (cmd), ==, 0);
}

/* Tensor @name of @path as float32 (g_free), with its shape. */
static float *
read_tensor (const char *path, const char *name, int *ndim, gint64 shape[DDIM_MAX_DIMS],
             gsize *count)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimSafetensors) st = ddim_safetensors_open (path, &error);
  g_assert_no_error (error);
  const DdimTensorInfo *info = ddim_safetensors_lookup (st, name);
  if (info == NULL)
    g_error ("%s has no tensor %s", path, name);
  float *data = ddim_safetensors_read_f32 (st, name, 0, NULL, &error);
  g_assert_no_error (error);
  if (ndim)
    *ndim = info->ndim;
  if (shape)
    memcpy (shape, info->shape, sizeof (gint64) * info->ndim);
  *count = (gsize) info->n_elements;
  return data;
}

/* Writes one F32 tensor @name [shape] to @path. */
static void
write_tensor (const char *path, const char *name, int ndim, const gint64 *shape,
              const float *data)
{
  g_autoptr (DdimSafetensorsWriter) w = ddim_safetensors_writer_new ();
  ddim_safetensors_writer_add_f32 (w, name, ndim, shape, data);
  g_autoptr (GError) error = NULL;
  g_assert_true (ddim_safetensors_writer_save (w, path, &error));
  g_assert_no_error (error);
}

/* The fixture's x_T as a --noise file (tensor "x_T") in @dir. */
static char *
write_noise_file (const Fixture *f, const char *dir)
{
  g_autofree char *model = fixture_path (f);
  g_autofree char *cases = g_build_filename (model, "cases.safetensors", NULL);
  int ndim = 0;
  gint64 shape[DDIM_MAX_DIMS];
  gsize count = 0;
  g_autofree float *x_T = read_tensor (cases, f->x_T, &ndim, shape, &count);
  g_autofree char *name = g_strdup_printf ("%s.xT.safetensors", strrchr (f->dir, '/') + 1);
  char *path = g_build_filename (dir, name, NULL);
  write_tensor (path, "x_T", ndim, shape, x_T);
  return path;
}

static void
assert_same_tensor (const char *a_path, const char *b_path, const char *name)
{
  gsize na = 0, nb = 0;
  int nda = 0, ndb = 0;
  gint64 sa[DDIM_MAX_DIMS], sb[DDIM_MAX_DIMS];
  g_autofree float *a = read_tensor (a_path, name, &nda, sa, &na);
  g_autofree float *b = read_tensor (b_path, name, &ndb, sb, &nb);
  g_assert_cmpint (nda, ==, ndb);
  g_assert_cmpmem (sa, sizeof (gint64) * nda, sb, sizeof (gint64) * ndb);
  g_assert_cmpmem (a, na * sizeof (float), b, nb * sizeof (float));
}

/* `ddim sample MODEL --noise FILE -o OUT.safetensors` with the fixtures'
 * sampling settings. */
static void
sample_from_noise (const char *model, const char *noise, const char *out)
{
  CliRun r = { 0 };
  run_expect (&r, 0, (const char *[]){ "sample", model, "--noise", noise, "--steps", "10",
                                       "--spacing", "leading", "--no-clip", "-q", "-o", out,
                                       NULL });
  cli_run_clear (&r);
}

/* The text and JSON of `ddim info` name family, weights format and dtype. */
static void
check_info (const Fixture *f)
{
  g_autofree char *model = fixture_path (f);
  CliRun r = { 0 };
  run_expect (&r, 0, (const char *[]){ "info", model, NULL });
  g_autofree char *family = g_strdup_printf ("\nfamily: +%s\n", f->family);
  g_autofree char *format = g_strdup_printf ("\nweights format: +%s\n", f->format);
  g_autofree char *dtype = g_strdup_printf ("\nweights dtype: +%s\n", f->dtype);
  for (const char *const *re = (const char *[]){ family, format, dtype, NULL }; *re; re++)
    if (!g_regex_match_simple (*re, r.out, 0, 0))
      g_error ("ddim info %s: no line matching '%s' in:\n%s", model, *re, r.out);
  g_assert_true (g_regex_match_simple ("\nweights file: +[^\n]*" G_DIR_SEPARATOR_S, r.out, 0, 0));
  cli_run_clear (&r);

  run_expect (&r, 0, (const char *[]){ "info", "--json", model, NULL });
  g_autofree char *jfamily = g_strdup_printf ("\"family\" : \"%s\"", f->family);
  g_autofree char *jformat = g_strdup_printf ("\"format\" : \"%s\"", f->format);
  g_autofree char *jdtype = g_strdup_printf ("\"dtype\" : \"%s\"", f->dtype);
  g_assert_nonnull (strstr (r.out, jfamily));
  g_assert_nonnull (strstr (r.out, jformat));
  g_assert_nonnull (strstr (r.out, jdtype));
  cli_run_clear (&r);
}

static void
test_info_diffusers (void)
{
  for (gsize i = 0; i < G_N_ELEMENTS (diffusers_fixtures); i++)
    check_info (&diffusers_fixtures[i]);
}

static void
test_info_torch (void)
{
  for (gsize i = 0; i < G_N_ELEMENTS (torch_fixtures); i++)
    check_info (&torch_fixtures[i]);
}

/* sample --noise from the fixture's x_T reproduces its DDIM sample within
 * the fixtures' trajectory tolerance (1e-3, absolute). */
static void
check_sample_noise (const Fixture *f)
{
  g_autofree char *dir = make_tmp_dir ();
  g_autofree char *model = fixture_path (f);
  g_autofree char *noise = write_noise_file (f, dir);
  g_autofree char *out = g_build_filename (dir, "x0.safetensors", NULL);
  sample_from_noise (model, noise, out);

  g_autofree char *cases = g_build_filename (model, "cases.safetensors", NULL);
  gsize n_ref = 0, n_got = 0;
  int nd_ref = 0, nd_got = 0;
  gint64 s_ref[DDIM_MAX_DIMS], s_got[DDIM_MAX_DIMS];
  g_autofree float *ref = read_tensor (cases, f->x0, &nd_ref, s_ref, &n_ref);
  g_autofree float *got = read_tensor (out, "x0", &nd_got, s_got, &n_got);
  g_assert_cmpint (nd_got, ==, nd_ref);
  g_assert_cmpmem (s_got, sizeof (gint64) * nd_got, s_ref, sizeof (gint64) * nd_ref);
  double max_ref = 0, max_diff = 0;
  for (gsize i = 0; i < n_ref; i++)
    {
      max_ref = MAX (max_ref, fabs (ref[i]));
      max_diff = MAX (max_diff, fabs ((double) got[i] - ref[i]));
    }
  g_test_message ("%s: sample --noise max |diff| %.3g (largest value %.3g)", f->dir, max_diff,
                  max_ref);
  g_assert_cmpfloat (max_diff, <=, 1e-3);
  remove_tree (dir);
}

static void
test_sample_noise_diffusers (void)
{
  for (gsize i = 0; i < G_N_ELEMENTS (diffusers_fixtures); i++)
    check_sample_noise (&diffusers_fixtures[i]);
}

static void
test_sample_noise_torch (void)
{
  for (gsize i = 0; i < G_N_ELEMENTS (torch_fixtures); i++)
    check_sample_noise (&torch_fixtures[i]);
}

/* convert writes a diffusers folder whose outputs (one UNet evaluation, a
 * DDIM sample) are bit for bit the source's; info says what it is. */
static void
check_convert_round_trip (const Fixture *f)
{
  g_autofree char *dir = make_tmp_dir ();
  g_autofree char *model = fixture_path (f);
  g_autofree char *converted = g_build_filename (dir, "converted", NULL);
  CliRun r = { 0 };
  run_expect (&r, 0, (const char *[]){ "convert", model, "-o", converted, NULL });
  g_assert_nonnull (strstr (r.out, "bit-identical"));
  cli_run_clear (&r);
  const char *files[] = { "config.json", "diffusion_pytorch_model.safetensors",
                          "scheduler/scheduler_config.json" };
  for (gsize i = 0; i < G_N_ELEMENTS (files); i++)
    {
      g_autofree char *p = g_build_filename (converted, files[i], NULL);
      g_assert_true (g_file_test (p, G_FILE_TEST_IS_REGULAR));
    }
  /* No temporary folder is left behind. */
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  g_assert_nonnull (d);
  g_assert_cmpstr (g_dir_read_name (d), ==, "converted");
  g_assert_null (g_dir_read_name (d));

  run_expect (&r, 0, (const char *[]){ "info", converted, NULL });
  g_assert_true (g_regex_match_simple ("\nfamily: +diffusers\n", r.out, 0, 0));
  g_assert_true (g_regex_match_simple ("\nweights format: +safetensors\n", r.out, 0, 0));
  g_assert_true (g_regex_match_simple ("\nweights dtype: +F32\n", r.out, 0, 0));
  cli_run_clear (&r);

  /* One evaluation on the fixture's forward inputs. */
  g_autofree char *cases = g_build_filename (model, "cases.safetensors", NULL);
  g_autofree char *in = g_build_filename (dir, "in.safetensors", NULL);
  {
    g_autoptr (GError) error = NULL;
    g_autoptr (DdimSafetensors) st = ddim_safetensors_open (cases, &error);
    g_assert_no_error (error);
    const DdimTensorInfo *xi = ddim_safetensors_lookup (st, "forward.x");
    const DdimTensorInfo *ti = ddim_safetensors_lookup (st, "forward.t");
    g_assert_nonnull (xi);
    g_assert_nonnull (ti);
    g_autofree float *x = ddim_safetensors_read_f32 (st, "forward.x", 0, NULL, &error);
    g_autofree float *t = ddim_safetensors_read_f32 (st, "forward.t", 0, NULL, &error);
    g_assert_no_error (error);
    g_autoptr (DdimSafetensorsWriter) w = ddim_safetensors_writer_new ();
    ddim_safetensors_writer_add_f32 (w, "x", xi->ndim, xi->shape, x);
    ddim_safetensors_writer_add_f32 (w, "t", ti->ndim, ti->shape, t);
    g_assert_true (ddim_safetensors_writer_save (w, in, &error));
    g_assert_no_error (error);
  }
  g_autofree char *out_a = g_build_filename (dir, "eval-a.safetensors", NULL);
  g_autofree char *out_b = g_build_filename (dir, "eval-b.safetensors", NULL);
  run_expect (&r, 0, (const char *[]){ "eval", model, in, out_a, NULL });
  cli_run_clear (&r);
  run_expect (&r, 0, (const char *[]){ "eval", converted, in, out_b, NULL });
  cli_run_clear (&r);
  assert_same_tensor (out_a, out_b, "out");

  /* A DDIM sample from the fixture's x_T. */
  g_autofree char *noise = write_noise_file (f, dir);
  g_autofree char *x0_a = g_build_filename (dir, "x0-a.safetensors", NULL);
  g_autofree char *x0_b = g_build_filename (dir, "x0-b.safetensors", NULL);
  sample_from_noise (model, noise, x0_a);
  sample_from_noise (converted, noise, x0_b);
  assert_same_tensor (x0_a, x0_b, "x0");
  remove_tree (dir);
}

static void
test_convert_round_trip_diffusers (void)
{
  for (gsize i = 0; i < G_N_ELEMENTS (diffusers_fixtures); i++)
    check_convert_round_trip (&diffusers_fixtures[i]);
}

static void
test_convert_round_trip_torch (void)
{
  for (gsize i = 0; i < G_N_ELEMENTS (torch_fixtures); i++)
    check_convert_round_trip (&torch_fixtures[i]);
}

/* --dtype f16 of F16 weights is still exact; of F32 weights it is half
 * the size and says it is not bit-identical. */
static void
test_convert_f16 (void)
{
  g_autofree char *dir = make_tmp_dir ();
  g_autofree char *variant = fixture_path (&diffusers_fixtures[1]);
  g_autofree char *cifar = fixture_path (&diffusers_fixtures[0]);
  g_autofree char *a = g_build_filename (dir, "variant16", NULL);
  g_autofree char *b = g_build_filename (dir, "cifar16", NULL);
  CliRun r = { 0 };
  run_expect (&r, 0, (const char *[]){ "convert", variant, "-o", a, "--dtype", "f16", NULL });
  g_assert_nonnull (strstr (r.out, "bit-identical"));
  cli_run_clear (&r);
  run_expect (&r, 0, (const char *[]){ "info", a, NULL });
  g_assert_true (g_regex_match_simple ("\nweights dtype: +F16\n", r.out, 0, 0));
  cli_run_clear (&r);
  run_expect (&r, 0, (const char *[]){ "convert", cifar, "-o", b, "--dtype", "F16", NULL });
  g_assert_null (strstr (r.out, "bit-identical"));
  cli_run_clear (&r);
  GStatBuf st_src, st_dst;
  g_autofree char *src_w = g_build_filename (cifar, "diffusion_pytorch_model.safetensors", NULL);
  g_autofree char *dst_w = g_build_filename (b, "diffusion_pytorch_model.safetensors", NULL);
  g_assert_cmpint (g_stat (src_w, &st_src), ==, 0);
  g_assert_cmpint (g_stat (dst_w, &st_dst), ==, 0);
  g_assert_cmpint (st_dst.st_size, <, st_src.st_size * 6 / 10);
  remove_tree (dir);
}

/* The output folder: never a half-written or overwritten one. */
static void
test_convert_errors (void)
{
  g_autofree char *dir = make_tmp_dir ();
  g_autofree char *variant = fixture_path (&diffusers_fixtures[1]);
  g_autofree char *out = g_build_filename (dir, "out", NULL);
  g_autofree char *foreign = g_build_filename (out, "notes.txt", NULL);
  CliRun r = { 0 };

  run_expect (&r, 2, (const char *[]){ "convert", variant, NULL });
  g_assert_nonnull (strstr (r.err, "-o"));
  cli_run_clear (&r);
  run_expect (&r, 2, (const char *[]){ "convert", variant, "-o", out, "--dtype", "bf16", NULL });
  g_assert_nonnull (strstr (r.err, "--dtype"));
  cli_run_clear (&r);
  g_autofree char *no_parent = g_build_filename (dir, "missing", "out", NULL);
  run_expect (&r, 1, (const char *[]){ "convert", variant, "-o", no_parent, NULL });
  g_assert_nonnull (strstr (r.err, "does not exist"));
  cli_run_clear (&r);
  run_expect (&r, 1, (const char *[]){ "convert", "/nonexistent/model", "-o", out, NULL });
  g_assert_nonnull (strstr (r.err, "/nonexistent/model"));
  g_assert_false (g_file_test (out, G_FILE_TEST_EXISTS));
  cli_run_clear (&r);

  /* An empty folder is filled; a second run is refused without --force,
   * and replaces the folder with it. */
  g_assert_cmpint (g_mkdir (out, 0755), ==, 0);
  run_expect (&r, 0, (const char *[]){ "convert", variant, "-o", out, "-q", NULL });
  g_assert_cmpstr (r.out, ==, "");
  cli_run_clear (&r);
  run_expect (&r, 1, (const char *[]){ "convert", variant, "-o", out, NULL });
  g_assert_nonnull (strstr (r.err, "not empty"));
  g_assert_nonnull (strstr (r.err, "--force"));
  cli_run_clear (&r);
  run_expect (&r, 0, (const char *[]){ "convert", variant, "-o", out, "--force", NULL });
  cli_run_clear (&r);

  /* --force never deletes what convert did not write. */
  g_assert_true (g_file_set_contents (foreign, "mine", -1, NULL));
  run_expect (&r, 1, (const char *[]){ "convert", variant, "-o", out, "--force", NULL });
  g_assert_nonnull (strstr (r.err, "notes.txt"));
  g_assert_true (g_file_test (foreign, G_FILE_TEST_IS_REGULAR));
  cli_run_clear (&r);
  g_unlink (foreign);

  /* Not onto the source itself, not onto a file. */
  run_expect (&r, 1, (const char *[]){ "convert", out, "-o", out, "--force", NULL });
  g_assert_nonnull (strstr (r.err, "source model"));
  cli_run_clear (&r);
  g_autofree char *file = g_build_filename (dir, "file", NULL);
  g_assert_true (g_file_set_contents (file, "mine", -1, NULL));
  run_expect (&r, 1, (const char *[]){ "convert", variant, "-o", file, "--force", NULL });
  g_assert_nonnull (strstr (r.err, "not a folder"));
  cli_run_clear (&r);

  /* No temporary folders left behind: only out and file. */
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  int n = 0;
  while (g_dir_read_name (d))
    n++;
  g_assert_cmpint (n, ==, 2);
  remove_tree (dir);
}

/* A model's directions stay usable in the converted folder: they are keyed
 * to the new weights' SHA-256. */
static void
test_convert_directions (void)
{
  g_autofree char *dir = make_tmp_dir ();
  g_autofree char *variant = fixture_path (&diffusers_fixtures[1]);
  g_autofree char *a = g_build_filename (dir, "a", NULL);
  g_autofree char *b = g_build_filename (dir, "b", NULL);
  CliRun r = { 0 };
  run_expect (&r, 0, (const char *[]){ "convert", variant, "-o", a, "-q", NULL });
  cli_run_clear (&r);
  g_autofree char *dirs_a = g_build_filename (a, "directions.safetensors", NULL);
  run_expect (&r, 0, (const char *[]){ "directions", "pca", a, "-o", dirs_a, "-k", "2", "-n",
                                       "2", "--steps", "4", "-q", NULL });
  cli_run_clear (&r);
  run_expect (&r, 0, (const char *[]){ "convert", a, "-o", b, "--dtype", "f32", NULL });
  g_assert_nonnull (strstr (r.out, "2 direction(s) re-keyed"));
  cli_run_clear (&r);

  g_autoptr (GError) error = NULL;
  g_autoptr (DdimModel) mb = ddim_model_load (b, &error);
  g_assert_no_error (error);
  g_autofree char *dirs_b = g_build_filename (b, "directions.safetensors", NULL);
  g_autoptr (DdimDirectionSet) set = ddim_direction_set_load (dirs_b, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ddim_direction_set_get_n (set), ==, 2);
  for (guint i = 0; i < 2; i++)
    {
      DdimDirection *d = ddim_direction_set_get_nth (set, i);
      g_assert_cmpstr (d->model_sha256, ==, mb->weights_sha256);
      g_assert_true (ddim_direction_check (d, mb->unet, mb->weights_sha256, 32, 32, &error));
      g_assert_no_error (error);
    }
  /* The edit runs with the converted folder's own directions. */
  g_autofree char *noise = write_noise_file (&diffusers_fixtures[1], dir);
  g_autofree char *edited = g_build_filename (dir, "edited.png", NULL);
  g_autofree char *image = g_build_filename (dir, "image.png", NULL);
  run_expect (&r, 0, (const char *[]){ "sample", b, "--noise", noise, "--steps", "4", "-q",
                                       "-o", image, NULL });
  cli_run_clear (&r);
  run_expect (&r, 0, (const char *[]){ "edit", b, image, "--direction", "pca-1", "--strength",
                                       "1", "--steps", "4", "-q", "-o", edited, NULL });
  cli_run_clear (&r);
  g_assert_true (g_file_test (edited, G_FILE_TEST_IS_REGULAR));
  remove_tree (dir);
}

/* Without MODEL: the embedded default model, whose directions move along
 * and whose learned encoder (tied to the weights) does not, with a note. */
static void
test_convert_default_model (void)
{
  g_autofree char *dir = make_tmp_dir ();
  g_autofree char *out = g_build_filename (dir, "default", NULL);
  CliRun r = { 0 };
  run_expect (&r, 0, (const char *[]){ "convert", "-o", out, NULL });
  g_assert_nonnull (strstr (r.out, "bit-identical"));
  g_assert_true (g_regex_match_simple ("^[1-9][0-9]* direction\\(s\\) re-keyed", r.out,
                                       G_REGEX_MULTILINE, 0));
  g_assert_nonnull (strstr (r.err, "encoder"));
  g_assert_nonnull (strstr (r.err, "train-encoder"));
  cli_run_clear (&r);
  g_autofree char *encoder = g_build_filename (out, "encoder", NULL);
  g_assert_false (g_file_test (encoder, G_FILE_TEST_EXISTS));
  remove_tree (dir);
}

/* Bad --noise files and disagreeing options: exit status 1 and a message
 * naming the problem; nothing is written. */
static void
test_sample_noise_errors (void)
{
  g_autofree char *dir = make_tmp_dir ();
  g_autofree char *model = fixture_path (&diffusers_fixtures[0]);  /* 3 channels, factor 4 */
  g_autofree char *out = g_build_filename (dir, "out.safetensors", NULL);
  g_autofree char *good = write_noise_file (&diffusers_fixtures[0], dir);
  float zeros[3 * 2 * 16 * 16] = { 0 };
  struct {
    const char *file, *tensor;
    int ndim;
    gint64 shape[4];
    const char *message;
  } bad[] = {
    { "name.safetensors", "noise", 4, { 1, 3, 16, 16 }, "no tensor 'x_T' or 'latent'" },
    { "rank.safetensors", "x_T", 3, { 3, 16, 16 }, "rank 3" },
    { "channels.safetensors", "x_T", 4, { 1, 2, 16, 16 }, "2 channels" },
    { "size.safetensors", "latent", 4, { 1, 3, 16, 10 }, "[1, 3, 16, 10]" },
    { "empty.safetensors", "x_T", 4, { 0, 3, 16, 16 }, "[0, 3, 16, 16]" },
  };
  CliRun r = { 0 };
  for (gsize i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autofree char *path = g_build_filename (dir, bad[i].file, NULL);
      write_tensor (path, bad[i].tensor, bad[i].ndim, bad[i].shape, zeros);
      run_expect (&r, 1, (const char *[]){ "sample", model, "--noise", path, "-o", out, NULL });
      if (strstr (r.err, bad[i].message) == NULL || strstr (r.err, bad[i].file) == NULL)
        g_error ("%s: expected '%s' in: %s", bad[i].file, bad[i].message, r.err);
      cli_run_clear (&r);
    }
  /* Not finite, not a safetensors file, missing. */
  zeros[5] = NAN;
  g_autofree char *nan_path = g_build_filename (dir, "nan.safetensors", NULL);
  write_tensor (nan_path, "x_T", 4, (gint64[]){ 1, 3, 16, 16 }, zeros);
  run_expect (&r, 1, (const char *[]){ "sample", model, "--noise", nan_path, "-o", out, NULL });
  g_assert_nonnull (strstr (r.err, "not finite"));
  cli_run_clear (&r);
  g_autofree char *text = g_build_filename (dir, "text.safetensors", NULL);
  g_assert_true (g_file_set_contents (text, "not a tensor file", -1, NULL));
  run_expect (&r, 1, (const char *[]){ "sample", model, "--noise", text, "-o", out, NULL });
  g_assert_nonnull (strstr (r.err, "text.safetensors"));
  cli_run_clear (&r);
  g_autofree char *missing = g_build_filename (dir, "missing.safetensors", NULL);
  run_expect (&r, 1, (const char *[]){ "sample", model, "--noise", missing, "-o", out, NULL });
  g_assert_nonnull (strstr (r.err, "missing.safetensors"));
  cli_run_clear (&r);

  /* -n and --size must agree with the file; -n 1 and --size 16 do. */
  run_expect (&r, 1, (const char *[]){ "sample", model, "--noise", good, "-n", "2", "-o", out,
                                       NULL });
  g_assert_nonnull (strstr (r.err, "-n 2"));
  cli_run_clear (&r);
  run_expect (&r, 1, (const char *[]){ "sample", model, "--noise", good, "--size", "32", "-o",
                                       out, NULL });
  g_assert_nonnull (strstr (r.err, "--size 32"));
  cli_run_clear (&r);
  run_expect (&r, 2, (const char *[]){ "sample", model, "-n", "many", "-o", out, NULL });
  g_assert_nonnull (strstr (r.err, "--n"));
  cli_run_clear (&r);
  g_assert_false (g_file_test (out, G_FILE_TEST_EXISTS));
  run_expect (&r, 0, (const char *[]){ "sample", model, "--noise", good, "-n", "1", "--size",
                                       "16", "--steps", "2", "-q", "-o", out, NULL });
  cli_run_clear (&r);
  g_assert_true (g_file_test (out, G_FILE_TEST_IS_REGULAR));
  remove_tree (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  if (g_getenv ("DDIM_CLI") == NULL || g_getenv ("DDIM_FIXTURES_DIR") == NULL)
    g_error ("DDIM_CLI and DDIM_FIXTURES_DIR must be set (meson test sets them)");
  g_test_add_func ("/cli-photo/info/diffusers", test_info_diffusers);
  g_test_add_func ("/cli-photo/info/torch", test_info_torch);
  g_test_add_func ("/cli-photo/sample-noise/diffusers", test_sample_noise_diffusers);
  g_test_add_func ("/cli-photo/sample-noise/torch", test_sample_noise_torch);
  g_test_add_func ("/cli-photo/sample-noise/errors", test_sample_noise_errors);
  g_test_add_func ("/cli-photo/convert/round-trip-diffusers", test_convert_round_trip_diffusers);
  g_test_add_func ("/cli-photo/convert/round-trip-torch", test_convert_round_trip_torch);
  g_test_add_func ("/cli-photo/convert/f16", test_convert_f16);
  g_test_add_func ("/cli-photo/convert/errors", test_convert_errors);
  g_test_add_func ("/cli-photo/convert/directions", test_convert_directions);
  g_test_add_func ("/cli-photo/convert/default-model", test_convert_default_model);
  return g_test_run ();
}
