/* Reading and writing latent files (see ddim/latent.h). */
#include <stdlib.h>
#include <string.h>

#include "ddim/error.h"
#include "ddim/latent.h"
#include "ddim/safetensors.h"

DdimLatent *
ddim_latent_new (int channels, int height, int width)
{
  g_return_val_if_fail (channels > 0 && height > 0 && width > 0, NULL);
  DdimLatent *l = g_new0 (DdimLatent, 1);
  l->channels = channels;
  l->height = height;
  l->width = width;
  l->latent = g_new0 (float, (gsize) channels * height * width);
  l->method = g_strdup ("ddim");
  l->resize = g_strdup ("fit");
  l->image_width = width;
  l->image_height = height;
  return l;
}

void
ddim_latent_free (DdimLatent *l)
{
  if (l == NULL)
    return;
  g_free (l->latent);
  g_free (l->latent_pair);
  g_free (l->model_sha256);
  g_free (l->method);
  g_free (l->resize);
  g_free (l);
}

const char *
ddim_eps_at_to_string (DdimEpsAt e)
{
  return e == DDIM_EPS_AT_CURRENT ? "current" : "target";
}

gboolean
ddim_eps_at_from_string (const char *s, DdimEpsAt *e, GError **error)
{
  if (g_strcmp0 (s, "target") == 0)
    *e = DDIM_EPS_AT_TARGET;
  else if (g_strcmp0 (s, "current") == 0)
    *e = DDIM_EPS_AT_CURRENT;
  else
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "eps-at '%s' is not one of target, current", s ? s : "(null)");
      return FALSE;
    }
  return TRUE;
}

static DdimSafetensorsWriter *
build_writer (const DdimLatent *l)
{
  DdimSafetensorsWriter *w = ddim_safetensors_writer_new ();
  gint64 shape[4] = { 1, l->channels, l->height, l->width };
  char buf[32];
  ddim_safetensors_writer_add_metadata (w, "format", DDIM_LATENT_FORMAT);
  ddim_safetensors_writer_add_metadata (w, "model_sha256", l->model_sha256 ? l->model_sha256 : "");
  g_snprintf (buf, sizeof buf, "%d", l->steps);
  ddim_safetensors_writer_add_metadata (w, "steps", buf);
  ddim_safetensors_writer_add_metadata (w, "spacing", ddim_spacing_to_string (l->spacing));
  ddim_safetensors_writer_add_metadata (w, "method", l->method ? l->method : "ddim");
  ddim_safetensors_writer_add_metadata (w, "eps_at", ddim_eps_at_to_string (l->eps_at));
  g_snprintf (buf, sizeof buf, "%d", l->image_width);
  ddim_safetensors_writer_add_metadata (w, "image_width", buf);
  g_snprintf (buf, sizeof buf, "%d", l->image_height);
  ddim_safetensors_writer_add_metadata (w, "image_height", buf);
  ddim_safetensors_writer_add_metadata (w, "resize", l->resize ? l->resize : "fit");
  /* The parameters the pair methods' decoders need (%.17g: reads back as
   * the same double). */
  char dbuf[G_ASCII_DTOSTR_BUF_SIZE];
  if (g_strcmp0 (l->method, "edict") == 0)
    ddim_safetensors_writer_add_metadata (w, "edict_p",
                                          g_ascii_dtostr (dbuf, sizeof dbuf, l->edict_p));
  else if (g_strcmp0 (l->method, "bdia") == 0)
    ddim_safetensors_writer_add_metadata (w, "bdia_gamma",
                                          g_ascii_dtostr (dbuf, sizeof dbuf, l->bdia_gamma));
  ddim_safetensors_writer_add_f32 (w, "latent", 4, shape, l->latent);
  if (l->latent_pair)
    ddim_safetensors_writer_add_f32 (w, "latent_pair", 4, shape, l->latent_pair);
  return w;
}

GBytes *
ddim_latent_to_bytes (const DdimLatent *l)
{
  g_autoptr (DdimSafetensorsWriter) w = build_writer (l);
  return ddim_safetensors_writer_to_bytes (w);
}

gboolean
ddim_latent_save (const DdimLatent *l, const char *path, GError **error)
{
  g_autoptr (DdimSafetensorsWriter) w = build_writer (l);
  return ddim_safetensors_writer_save (w, path, error);
}

static gboolean
meta_int (DdimSafetensors *st, const char *key, int min, int *out, GError **error)
{
  const char *v = ddim_safetensors_get_metadata (st, key);
  char *end = NULL;
  long long x = v ? strtoll (v, &end, 10) : 0;
  if (v == NULL || *v == '\0' || *end != '\0' || x < min || x > G_MAXINT)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "latent file: metadata '%s' is missing or not a valid number", key);
      return FALSE;
    }
  *out = (int) x;
  return TRUE;
}

/* A method parameter in (0, 1]. */
static gboolean
meta_unit (DdimSafetensors *st, const char *method, const char *key, double *out,
           GError **error)
{
  const char *v = ddim_safetensors_get_metadata (st, key);
  char *end = NULL;
  double x = v ? g_ascii_strtod (v, &end) : 0;
  if (v == NULL || *v == '\0' || *end != '\0' || !(x > 0 && x <= 1))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "latent file: method '%s' needs metadata '%s', a number in (0, 1]%s%s%s",
                   method, key, v ? ", not '" : "", v ? v : "", v ? "'" : "");
      return FALSE;
    }
  *out = x;
  return TRUE;
}

DdimLatent *
ddim_latent_new_from_bytes (GBytes *bytes, const char *expected_sha256, GError **error)
{
  g_autoptr (GError) local = NULL;
  g_autoptr (DdimSafetensors) st = ddim_safetensors_new_from_bytes (bytes, &local);
  if (st == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT, "not a latent file: %s", local->message);
      return NULL;
    }
  const char *format = ddim_safetensors_get_metadata (st, "format");
  if (format == NULL || !g_str_has_prefix (format, "ddim-latent/"))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "not a latent file: metadata 'format' is %s%s%s, expected '%s'",
                   format ? "'" : "", format ? format : "missing", format ? "'" : "",
                   DDIM_LATENT_FORMAT);
      return NULL;
    }
  char *end = NULL;
  long version = strtol (format + strlen ("ddim-latent/"), &end, 10);
  if (*end != '\0' || version < 1)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "latent file: format '%s' is not valid", format);
      return NULL;
    }
  if (version > DDIM_LATENT_FORMAT_VERSION)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_UNSUPPORTED,
                   "latent file has format '%s', made by a newer version; this version "
                   "reads '%s'", format, DDIM_LATENT_FORMAT);
      return NULL;
    }
  const char *sha = ddim_safetensors_get_metadata (st, "model_sha256");
  if (expected_sha256 && g_strcmp0 (sha, expected_sha256) != 0)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_MISMATCH,
                   "the latent was made with another model (weights SHA-256 %.12s…, this "
                   "model has %.12s…); invert the image again with this model",
                   sha && *sha ? sha : "unknown", expected_sha256);
      return NULL;
    }
  const DdimTensorInfo *info = ddim_safetensors_lookup (st, "latent");
  if (info == NULL || info->ndim != 4 || info->shape[0] != 1 || info->shape[1] < 1
      || info->shape[2] < 1 || info->shape[3] < 1 || info->shape[1] > 64
      || info->shape[2] > 65536 || info->shape[3] > 65536)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "latent file: tensor 'latent' is missing or not of shape [1, C, H, W]");
      return NULL;
    }
  g_autoptr (DdimLatent) l = ddim_latent_new ((int) info->shape[1], (int) info->shape[2],
                                              (int) info->shape[3]);
  if (!ddim_tensor_info_to_f32 (info, l->latent, error))
    return NULL;
  const DdimTensorInfo *pair = ddim_safetensors_lookup (st, "latent_pair");
  if (pair)
    {
      gboolean same = pair->ndim == 4;
      for (int d = 0; same && d < 4; d++)
        same = pair->shape[d] == info->shape[d];
      if (!same)
        {
          g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                       "latent file: 'latent_pair' does not have the shape of 'latent'");
          return NULL;
        }
      l->latent_pair = g_new (float, info->n_elements);
      if (!ddim_tensor_info_to_f32 (pair, l->latent_pair, error))
        return NULL;
    }
  l->model_sha256 = g_strdup (sha ? sha : "");
  if (!meta_int (st, "steps", 1, &l->steps, error)
      || !meta_int (st, "image_width", 1, &l->image_width, error)
      || !meta_int (st, "image_height", 1, &l->image_height, error))
    return NULL;
  const char *spacing = ddim_safetensors_get_metadata (st, "spacing");
  const char *eps_at = ddim_safetensors_get_metadata (st, "eps_at");
  const char *method = ddim_safetensors_get_metadata (st, "method");
  const char *resize = ddim_safetensors_get_metadata (st, "resize");
  g_autoptr (GError) sub = NULL;
  if (!ddim_spacing_from_string (spacing, &l->spacing, &sub)
      || !ddim_eps_at_from_string (eps_at ? eps_at : "target", &l->eps_at, &sub))
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT, "latent file: %s", sub->message);
      return NULL;
    }
  if (method == NULL || *method == '\0')
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT, "latent file: metadata 'method' is missing");
      return NULL;
    }
  gboolean edict = strcmp (method, "edict") == 0, bdia = strcmp (method, "bdia") == 0;
  if ((edict || bdia) && l->latent_pair == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_FORMAT,
                   "latent file: method '%s' needs tensor 'latent_pair'", method);
      return NULL;
    }
  if (edict && !meta_unit (st, method, "edict_p", &l->edict_p, error))
    return NULL;
  if (bdia && !meta_unit (st, method, "bdia_gamma", &l->bdia_gamma, error))
    return NULL;
  g_free (l->method);
  l->method = g_strdup (method);
  g_free (l->resize);
  l->resize = g_strdup (resize ? resize : "fit");
  return g_steal_pointer (&l);
}

DdimLatent *
ddim_latent_load (const char *path, const char *expected_sha256, GError **error)
{
  g_autoptr (GMappedFile) mf = NULL;
  g_autoptr (GError) local = NULL;
  mf = g_mapped_file_new (path, FALSE, &local);
  if (mf == NULL)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_IO, "cannot read latent %s: %s", path,
                   local->message);
      return NULL;
    }
  g_autoptr (GBytes) bytes = g_mapped_file_get_bytes (mf);
  g_autoptr (GError) sub = NULL;
  DdimLatent *l = ddim_latent_new_from_bytes (bytes, expected_sha256, &sub);
  if (l == NULL)
    {
      g_autofree char *base = g_path_get_basename (path);
      g_set_error (error, sub->domain, sub->code, "%s: %s", base, sub->message);
    }
  return l;
}
