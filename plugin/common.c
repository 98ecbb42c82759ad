/* What the plug-in's procedures share: argument helpers, errors, model
 * loading, pixels in and out of GIMP, parasites, progress. */
#include "ddim-plugin.h"

#include <libgimp/gimpui.h>
#include <stdarg.h>

void
ddim_plugin_add_model_argument (GimpProcedure *procedure)
{
  gimp_procedure_add_string_argument (procedure, "model-folder", _("_Model"),
      _("The model's folder: a diffusers UNet2DModel folder (config.json, "
        "diffusion_pytorch_model.safetensors, scheduler config) or a PyTorch checkpoint "
        "folder; empty: the model that comes with the plug-in"),
      "", G_PARAM_READWRITE);
}

void
ddim_plugin_add_inversion_arguments (GimpProcedure *procedure, DdimInversionMethod default_method,
                                     int default_steps)
{
  gimp_procedure_add_int_argument (procedure, "steps", _("_Quality (steps)"),
      _("How many steps the model takes between the picture and its noise: more is slower "
        "and more faithful to the picture"),
      1, 1000, default_steps, G_PARAM_READWRITE);
  gimp_procedure_add_choice_argument (procedure, "method", _("_Way to find the noise"),
      _("How the picture is turned into the model's noise (inversion method)"),
      gimp_choice_new_with_values (
          "ddim", DDIM_METHOD_DDIM, _("Fast (DDIM)"),
          _("Plain DDIM inversion: one model evaluation per step, approximate"),
          "fixed-point", DDIM_METHOD_FIXED_POINT, _("Careful (fixed-point)"),
          _("Each step solved by fixed-point iteration: several evaluations per step, "
            "closer to exact"),
          "edict", DDIM_METHOD_EDICT, _("Exact, twice the time (EDICT)"),
          _("Two coupled sequences, exactly invertible: two evaluations per step"),
          "bdia", DDIM_METHOD_BDIA, _("Exact (BDIA)"),
          _("Bidirectional integration, exactly invertible: one evaluation per step"),
          NULL),
      ddim_inversion_method_to_string (default_method), G_PARAM_READWRITE);
  gimp_procedure_add_choice_argument (procedure, "resize", _("Resolutio_n"),
      _("How the layer's size is matched to the model's: fit (fast; the result is brought "
        "back to the layer's size) or the layer's own size (slower, for large pictures)"),
      gimp_choice_new_with_values (
          "fit", DDIM_RESIZE_MODE_FIT, _("Fit to model size (detail transfer)"),
          _("Resize to the model's size; results are brought back to the layer's size"),
          "native", DDIM_RESIZE_MODE_NATIVE, _("Native size (fully convolutional)"),
          _("Run the model at the layer's own size (padded to the model's size factor)"),
          NULL),
      "fit", G_PARAM_READWRITE);
}

void
ddim_plugin_set_error (GError **error, const char *format, ...)
{
  if (error == NULL)
    return;
  va_list args;
  va_start (args, format);
  g_autofree char *message = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error_literal (error, GIMP_PLUG_IN_ERROR, 0, message);
}

GimpValueArray *
ddim_plugin_fail (GimpProcedure *procedure, GError *error)
{
  gimp_progress_end ();
  return gimp_procedure_new_return_values (procedure, GIMP_PDB_EXECUTION_ERROR, error);
}

GimpLayer *
ddim_plugin_get_layer (GimpImage *image, GimpDrawable **drawables, GError **error)
{
  gsize n = drawables ? gimp_core_object_array_get_length ((GObject **) drawables) : 0;
  if (n != 1)
    {
      ddim_plugin_set_error (error, _("Select exactly one layer (%d are selected)."), (int) n);
      return NULL;
    }
  if (gimp_image_get_base_type (image) == GIMP_INDEXED)
    {
      ddim_plugin_set_error (error, _("Indexed images are not supported; convert the image "
                                      "with Image ▸ Mode ▸ RGB or Grayscale first."));
      return NULL;
    }
  if (!GIMP_IS_LAYER (drawables[0]) || GIMP_IS_LAYER_MASK (drawables[0]))
    {
      ddim_plugin_set_error (error, _("Select a layer (not a channel or a layer mask)."));
      return NULL;
    }
  if (gimp_item_is_group (GIMP_ITEM (drawables[0])))
    {
      g_autofree char *name = gimp_item_get_name (GIMP_ITEM (drawables[0]));
      ddim_plugin_set_error (error, _("“%s” is a layer group; select a layer inside it."), name);
      return NULL;
    }
  return GIMP_LAYER (drawables[0]);
}

char *
ddim_plugin_default_model_folder (void)
{
  const char *env = g_getenv ("DDIM_DEFAULT_MODEL");
  if (env != NULL && *env != '\0')
    return g_canonicalize_filename (env, NULL);
  g_autofree char *dir = g_path_get_dirname (gimp_get_progname ());
  g_autofree char *path = g_build_filename (dir, "models", DDIM_DEFAULT_MODEL_NAME, NULL);
  return g_canonicalize_filename (path, NULL);
}

DdimModel *
ddim_plugin_load_model (const char *folder, char **used_folder, GError **error)
{
  gboolean is_default = folder == NULL || *folder == '\0';
  g_autofree char *path = is_default ? ddim_plugin_default_model_folder ()
                                     : g_canonicalize_filename (folder, NULL);
  if (!g_file_test (path, G_FILE_TEST_IS_DIR))
    {
      if (is_default)
        ddim_plugin_set_error (error, _("The model that comes with the plug-in is not installed "
                                        "(there is no folder “%s”). Reinstall the plug-in, or "
                                        "set “Model folder” to a diffusers UNet2DModel folder."),
                               path);
      else
        ddim_plugin_set_error (error, _("Model folder “%s” does not exist. Set “Model folder” "
                                        "to a diffusers UNet2DModel folder (with config.json "
                                        "and diffusion_pytorch_model.safetensors)."), path);
      return NULL;
    }
  g_autoptr (GError) sub = NULL;
  DdimModel *model = ddim_model_load (path, &sub);
  if (model == NULL)
    {
      ddim_plugin_set_error (error, _("Model folder “%s” cannot be used: %s. Choose a diffusers "
                                      "UNet2DModel folder."), path, sub->message);
      return NULL;
    }
  if (used_folder)
    *used_folder = g_steal_pointer (&path);
  return model;
}

void
ddim_plugin_progress_start (DdimProgress *progress, const char *title, const char *step_format)
{
  progress->step_format = step_format;
  progress->offset = 0;
  progress->total = 0;
  progress->estimate = NULL;
  gimp_progress_init (title);
}


void
ddim_plugin_progress_cb (int done, int total, gpointer data)
{
  DdimProgress *progress = data;
  done += progress->offset;
  if (progress->total > 0)
    total = progress->total;
  g_autofree char *text = g_strdup_printf (progress->step_format, done, total);
  if (progress->estimate != NULL)
    gimp_progress_set_text_printf ("%s (%s)", text, progress->estimate);
  else
    gimp_progress_set_text_printf ("%s", text);
  gimp_progress_update (total > 0 ? (double) done / total : 0.0);
}

static const Babl *
drawable_format (GimpDrawable *drawable, gboolean gray)
{
  return babl_format_with_space (gray ? "Y'A float" : "R'G'B'A float",
                                 gimp_drawable_get_format (drawable));
}

float *
ddim_plugin_read_rgba (GimpDrawable *drawable, int x, int y, int width, int height)
{
  gsize n = (gsize) width * height;
  gboolean gray = gimp_drawable_is_gray (drawable);
  g_autoptr (GeglBuffer) buffer = gimp_drawable_get_buffer (drawable);
  float *rgba = g_new (float, 4 * n);
  const GeglRectangle rect = { x, y, width, height };
  if (gray)
    {
      g_autofree float *ya = g_new (float, 2 * n);
      gegl_buffer_get (buffer, &rect, 1.0, drawable_format (drawable, TRUE), ya,
                       GEGL_AUTO_ROWSTRIDE, GEGL_ABYSS_NONE);
      for (gsize i = 0; i < n; i++)
        {
          rgba[4 * i] = rgba[4 * i + 1] = rgba[4 * i + 2] = ya[2 * i];
          rgba[4 * i + 3] = ya[2 * i + 1];
        }
    }
  else
    gegl_buffer_get (buffer, &rect, 1.0, drawable_format (drawable, FALSE), rgba,
                     GEGL_AUTO_ROWSTRIDE, GEGL_ABYSS_NONE);
  return rgba;
}

float *
ddim_plugin_read_selection (GimpImage *image, int x, int y, int width, int height)
{
  if (gimp_selection_is_empty (image))
    return NULL;
  GimpSelection *selection = gimp_image_get_selection (image);
  g_autoptr (GeglBuffer) buffer = gimp_drawable_get_buffer (GIMP_DRAWABLE (selection));
  float *mask = g_new (float, (gsize) width * height);
  const GeglRectangle rect = { x, y, width, height };
  gegl_buffer_get (buffer, &rect, 1.0, babl_format ("Y float"), mask, GEGL_AUTO_ROWSTRIDE,
                   GEGL_ABYSS_NONE);
  return mask;
}

float *
ddim_plugin_read_alpha (GimpDrawable *drawable, int width, int height)
{
  int w = gimp_drawable_get_width (drawable), h = gimp_drawable_get_height (drawable);
  g_autofree float *rgba = ddim_plugin_read_rgba (drawable, 0, 0, w, h);
  g_autofree float *alpha = g_new (float, (gsize) w * h);
  ddim_pixels_rgba_get_alpha (rgba, w, h, alpha);
  if (w == width && h == height)
    return g_steal_pointer (&alpha);
  float *resized = g_new (float, (gsize) width * height);
  ddim_pixels_resize (alpha, 1, w, h, resized, width, height, DDIM_RESIZE_SMOOTH);
  return resized;
}

GimpLayer *
ddim_plugin_new_layer (GimpImage *image, const char *name, int width, int height,
                       const float *rgba)
{
  gboolean gray = gimp_image_get_base_type (image) == GIMP_GRAY;
  GimpLayer *layer = gimp_layer_new (image, name, width, height,
                                     gray ? GIMP_GRAYA_IMAGE : GIMP_RGBA_IMAGE, 100.0,
                                     GIMP_LAYER_MODE_NORMAL);
  g_object_set_data_full (G_OBJECT (layer), "ddim-pixels",
                          g_memdup2 (rgba, sizeof (float) * 4 * width * height), g_free);
  return layer;
}

static void
write_pixels (GimpLayer *layer)
{
  GimpDrawable *drawable = GIMP_DRAWABLE (layer);
  const float *rgba = g_object_get_data (G_OBJECT (layer), "ddim-pixels");
  if (rgba == NULL)   /* not made by ddim_plugin_new_layer */
    return;
  int width = gimp_drawable_get_width (drawable), height = gimp_drawable_get_height (drawable);
  gsize n = (gsize) width * height;
  gboolean gray = gimp_drawable_is_gray (drawable);
  g_autoptr (GeglBuffer) buffer = gimp_drawable_get_buffer (drawable);
  const GeglRectangle rect = { 0, 0, width, height };
  if (gray)
    {
      g_autofree float *ya = g_new (float, 2 * n);
      for (gsize i = 0; i < n; i++)
        {
          const float *p = rgba + 4 * i;
          ya[2 * i] = ddim_pixels_luminance (p[0], p[1], p[2]);
          ya[2 * i + 1] = p[3];
        }
      gegl_buffer_set (buffer, &rect, 0, drawable_format (drawable, TRUE), ya,
                       GEGL_AUTO_ROWSTRIDE);
    }
  else
    gegl_buffer_set (buffer, &rect, 0, drawable_format (drawable, FALSE), rgba,
                     GEGL_AUTO_ROWSTRIDE);
  gegl_buffer_flush (buffer);
  g_object_set_data (G_OBJECT (layer), "ddim-pixels", NULL);
}

void
ddim_plugin_insert_above (GimpImage *image, GimpLayer *layer, GimpLayer *above)
{
  GimpItem *parent = gimp_item_get_parent (GIMP_ITEM (above));
  int position = gimp_image_get_item_position (image, GIMP_ITEM (above));
  ddim_plugin_insert (image, layer, parent ? GIMP_LAYER (parent) : NULL, position);
}

void
ddim_plugin_insert (GimpImage *image, GimpLayer *layer, GimpLayer *parent, int position)
{
  gimp_image_insert_layer (image, layer, parent, position);
  write_pixels (layer);
  gimp_drawable_update (GIMP_DRAWABLE (layer), 0, 0, gimp_drawable_get_width (GIMP_DRAWABLE (layer)),
                        gimp_drawable_get_height (GIMP_DRAWABLE (layer)));
}

GimpValueArray *
ddim_plugin_finish_with_layer (GimpProcedure *procedure, GimpImage *image, GimpLayer *above,
                               const char *name, int x, int y, int width, int height,
                               const float *rgba, const DdimPluginParasite *parasites,
                               int n_parasites)
{
  GError *error = NULL;
  gimp_image_undo_group_start (image);
  GimpLayer *result = ddim_plugin_new_layer (image, name, width, height, rgba);
  gimp_layer_set_offsets (result, x, y);
  ddim_plugin_insert_above (image, result, above);
  gboolean ok = TRUE;
  for (int i = 0; ok && i < n_parasites; i++)
    ok = ddim_plugin_attach (GIMP_ITEM (result), parasites[i].name, parasites[i].data, &error);
  if (!ok)
    gimp_image_remove_layer (image, result);
  gimp_image_undo_group_end (image);
  if (!ok)
    return ddim_plugin_fail (procedure, error);
  gimp_progress_end ();
  GimpValueArray *values = gimp_procedure_new_return_values (procedure, GIMP_PDB_SUCCESS, NULL);
  GIMP_VALUES_SET_LAYER (values, 1, result);
  return values;
}

gboolean
ddim_plugin_attach (GimpItem *item, const char *name, GBytes *data, GError **error)
{
  gsize size = 0;
  gconstpointer bytes = g_bytes_get_data (data, &size);
  GimpParasite *parasite = gimp_parasite_new (name,
                                              GIMP_PARASITE_PERSISTENT | GIMP_PARASITE_UNDOABLE,
                                              (guint32) size, bytes);
  gboolean ok = gimp_item_attach_parasite (item, parasite);
  gimp_parasite_free (parasite);
  if (!ok)
    ddim_plugin_set_error (error, _("GIMP refused to store the latent on the layer (parasite "
                                    "“%s”, %lu bytes)."), name, (unsigned long) size);
  return ok;
}

GBytes *
ddim_plugin_get_parasite (GimpItem *item, const char *name)
{
  GimpParasite *parasite = gimp_item_get_parasite (item, name);
  if (parasite == NULL)
    return NULL;
  guint32 size = 0;
  gconstpointer data = gimp_parasite_get_data (parasite, &size);
  GBytes *bytes = g_bytes_new (data, size);
  gimp_parasite_free (parasite);
  return bytes;
}

void
ddim_source_info_free (DdimSourceInfo *info)
{
  if (info == NULL)
    return;
  g_free (info->name);
  g_free (info->model_folder);
  g_free (info->checksum);
  g_free (info);
}

#define SOURCE_GROUP "source"

GBytes *
ddim_source_info_to_bytes (const DdimSourceInfo *info)
{
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_key_file_set_string (kf, SOURCE_GROUP, "name", info->name ? info->name : "");
  g_key_file_set_integer (kf, SOURCE_GROUP, "x", info->x);
  g_key_file_set_integer (kf, SOURCE_GROUP, "y", info->y);
  g_key_file_set_integer (kf, SOURCE_GROUP, "width", info->width);
  g_key_file_set_integer (kf, SOURCE_GROUP, "height", info->height);
  g_key_file_set_uint64 (kf, SOURCE_GROUP, "tattoo", info->tattoo);
  g_key_file_set_string (kf, SOURCE_GROUP, "model-folder",
                         info->model_folder ? info->model_folder : "");
  if (info->checksum != NULL)
    g_key_file_set_string (kf, SOURCE_GROUP, "checksum", info->checksum);
  gsize length = 0;
  char *text = g_key_file_to_data (kf, &length, NULL);
  return g_bytes_new_take (text, length);
}

DdimSourceInfo *
ddim_source_info_new_from_bytes (GBytes *bytes)
{
  gsize size = 0;
  const char *data = g_bytes_get_data (bytes, &size);
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_autoptr (GError) error = NULL;
  if (!g_key_file_load_from_data (kf, data ? data : "", size, G_KEY_FILE_NONE, &error))
    {
      g_printerr ("ddim-inversion: ignoring parasite " DDIM_PARASITE_SOURCE ": %s\n",
                  error->message);
      return NULL;
    }
  g_autoptr (DdimSourceInfo) info = g_new0 (DdimSourceInfo, 1);
  info->name = g_key_file_get_string (kf, SOURCE_GROUP, "name", &error);
  if (error == NULL)
    info->x = g_key_file_get_integer (kf, SOURCE_GROUP, "x", &error);
  if (error == NULL)
    info->y = g_key_file_get_integer (kf, SOURCE_GROUP, "y", &error);
  if (error == NULL)
    info->width = g_key_file_get_integer (kf, SOURCE_GROUP, "width", &error);
  if (error == NULL)
    info->height = g_key_file_get_integer (kf, SOURCE_GROUP, "height", &error);
  if (error == NULL)
    info->tattoo = (guint) g_key_file_get_uint64 (kf, SOURCE_GROUP, "tattoo", &error);
  if (error == NULL)
    info->model_folder = g_key_file_get_string (kf, SOURCE_GROUP, "model-folder", &error);
  if (error != NULL || info->width < 1 || info->height < 1)
    {
      g_printerr ("ddim-inversion: ignoring parasite " DDIM_PARASITE_SOURCE ": %s\n",
                  error ? error->message : "bad size");
      return NULL;
    }
  /* Optional (older latents lack it). */
  info->checksum = g_key_file_get_string (kf, SOURCE_GROUP, "checksum", NULL);
  return g_steal_pointer (&info);
}

DdimSourceInfo *
ddim_source_info_get (GimpItem *item)
{
  g_autoptr (GBytes) bytes = ddim_plugin_get_parasite (item, DDIM_PARASITE_SOURCE);
  return bytes ? ddim_source_info_new_from_bytes (bytes) : NULL;
}
