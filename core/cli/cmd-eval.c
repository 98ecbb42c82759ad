/* ddim eval MODEL IN.safetensors OUT.safetensors: out = model(x, t). */
#include <math.h>
#include <stdio.h>

#include "cli.h"
#include "ddim/safetensors.h"

#define CMD "eval"

static char *
shape_string (const DdimTensorInfo *info)
{
  GString *s = g_string_new ("[");
  for (int d = 0; d < info->ndim; d++)
    g_string_append_printf (s, "%s%" G_GINT64_FORMAT, d ? ", " : "", info->shape[d]);
  g_string_append_c (s, ']');
  return g_string_free (s, FALSE);
}

int
cli_cmd_eval (int argc, char **argv)
{
  GOptionEntry entries[] = { G_OPTION_ENTRY_NULL };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("[MODEL] IN.safetensors OUT.safetensors");
  g_option_context_set_summary (ctx,
      "Runs the UNet once on a batch: IN holds 'x' [N, C, H, W] (C = the model's\n"
      "in_channels, H and W multiples of the model's size factor) and 't' [N]\n"
      "(timesteps, float or integer). OUT gets 'out' [N, out_channels, H, W]\n"
      "float32 (the raw model output, e.g. the noise prediction). Tensors of any\n"
      "float or integer dtype are converted to float32. OUT is written atomically.");
  g_option_context_add_main_entries (ctx, entries, NULL);

  int rc;
  if (!cli_parse_options (ctx, CMD, &argc, &argv, &rc))
    return rc;
  g_auto (GStrv) args = NULL;
  if (!cli_model_argument (CMD, 2, &argc, &argv, &args, &rc))
    return rc;
  if (argc < 4)
    return cli_usage_error (CMD, "expected [MODEL] IN.safetensors OUT.safetensors");
  if (argc > 4)
    return cli_usage_error (CMD, "too many arguments");
  const char *model_dir = argv[1], *in_path = argv[2], *out_path = argv[3];

  g_autoptr (DdimModel) model = cli_load_model (CMD, model_dir, &rc);
  if (model == NULL)
    return rc;
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);

  g_autoptr (GError) error = NULL;
  g_autoptr (DdimSafetensors) st = ddim_safetensors_open (in_path, &error);
  if (st == NULL)
    return cli_error (CMD, error);

  const DdimTensorInfo *xi = ddim_safetensors_lookup (st, "x");
  const DdimTensorInfo *ti = ddim_safetensors_lookup (st, "t");
  if (xi == NULL || ti == NULL)
    return cli_fail (CMD, "%s has no tensor '%s' (expected 'x' [N, C, H, W] and 't' [N])",
                     in_path, xi == NULL ? "x" : "t");
  g_autofree char *xs = shape_string (xi);
  g_autofree char *ts = shape_string (ti);
  if (xi->ndim != 4)
    return cli_fail (CMD, "tensor 'x' has shape %s; expected [N, C, H, W]", xs);
  for (int d = 0; d < 4; d++)
    if (xi->shape[d] < 1 || xi->shape[d] > G_MAXINT)
      return cli_fail (CMD, "tensor 'x' has shape %s; every dimension must be at least 1", xs);
  if (xi->shape[1] != c->in_channels)
    return cli_fail (CMD, "tensor 'x' has shape %s, but the model takes %d input channel%s "
                     "(C, the second dimension)", xs, c->in_channels,
                     c->in_channels == 1 ? "" : "s");
  if (ti->ndim != 1 || ti->shape[0] != xi->shape[0])
    return cli_fail (CMD, "tensor 't' has shape %s; expected [%" G_GINT64_FORMAT "], one "
                     "timestep per row of 'x' %s", ts, xi->shape[0], xs);
  int n = (int) xi->shape[0], h = (int) xi->shape[2], w = (int) xi->shape[3];
  if (!ddim_unet_check_size (model->unet, h, w, &error))
    return cli_error (CMD, error);

  g_autofree float *x = ddim_safetensors_read_f32 (st, "x", 4, xi->shape, &error);
  if (x == NULL)
    return cli_error (CMD, error);
  g_autofree float *t = ddim_safetensors_read_f32 (st, "t", 1, ti->shape, &error);
  if (t == NULL)
    return cli_error (CMD, error);
  for (int i = 0; i < n; i++)
    if (!isfinite (t[i]))
      return cli_fail (CMD, "t[%d] is not a finite number", i);

  gint64 out_shape[4] = { n, c->out_channels, h, w };
  gsize count = (gsize) n * c->out_channels * h * w;
  g_autofree float *out = g_try_new (float, count);
  if (out == NULL)
    return cli_fail (CMD, "out of memory for the output (%" G_GSIZE_FORMAT " floats)", count);
  if (!ddim_unet_forward (model->unet, x, n, h, w, t, out, &error))
    return cli_error (CMD, error);

  g_autoptr (DdimSafetensorsWriter) wr = ddim_safetensors_writer_new ();
  ddim_safetensors_writer_add_metadata (wr, "model_sha256", model->weights_sha256);
  ddim_safetensors_writer_add_f32 (wr, "out", 4, out_shape, out);
  if (!ddim_safetensors_writer_save (wr, out_path, &error))
    return cli_error (CMD, error);
  return CLI_EXIT_OK;
}
