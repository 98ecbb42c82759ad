/* plug-in-ddim-interpolate, "Interpolate latents…": frames between two
 * layers, decoded from spherical interpolations of their latents
 * (ddim/interpolate.h), as a new layer group "Interpolation of A and B"
 * holding "Frame 1 of N" (the bottom layer, the first layer's
 * reconstruction) up to "Frame N of N" (the top, the second's): GIMP's
 * order for animations.
 *
 * Each layer's latent is, in this order: the layer's own latent when it is
 * a layer made by Invert to latent; a latent made earlier from exactly its
 * pixels with the same settings; a new inversion of the whole layer (the
 * selection is not used). When one of the layers is a latent layer, its
 * settings (steps, method, resolution) are used for the other one as well,
 * so that the two latents fit together; otherwise the arguments'.
 *
 * Frames are new images: they are decoded at the model's size and resized
 * to the first layer's size (bilinear up, area average down), or, at native
 * size, cropped from the padded size; there is no detail transfer. They
 * sit at the first layer's offsets, and their alpha goes linearly from the
 * first layer's alpha to the second's (resized to the first's size).
 * Latents of EDICT and BDIA are pairs; their first states are interpolated
 * and decoded with plain DDIM. */
#include "ddim-plugin.h"

#include <string.h>

static void
interpolate_add_arguments (GimpProcedure *procedure)
{
  ddim_plugin_add_model_argument (procedure);
  ddim_plugin_add_inversion_arguments (procedure, DDIM_PLUGIN_DECODE_METHOD_DEFAULT,
                                       DDIM_PLUGIN_DECODE_STEPS_DEFAULT);
  gimp_procedure_add_layer_argument (procedure, "second-layer", _("Second la_yer"),
      _("The layer to interpolate to (the selected layer is the first)"), TRUE,
      G_PARAM_READWRITE);
  gimp_procedure_add_int_argument (procedure, "frames", _("_Frames"),
      _("Number of frames, the two layers' reconstructions included"),
      2, 64, 8, G_PARAM_READWRITE);
  gimp_procedure_add_boolean_argument (procedure, "interpolate-h", _("Interpolate h-space _too"),
      _("Also interpolate the model's h-space (mid-block output) over the second half of "
        "the steps: smoother transitions"),
      FALSE, G_PARAM_READWRITE);
  gimp_procedure_add_group_layer_return_value (procedure, "group-layer", _("Layer group"),
      _("The new layer group holding the frames"), FALSE, G_PARAM_READWRITE);
}

/* One of the two layers. */
typedef struct {
  GimpLayer  *layer;
  char       *name;       /* for the group's name: the source layer's for a latent layer */
  DdimLatent *own;        /* the latent on a latent layer, else NULL */
  DdimLatent *latent;     /* the latent used (own, reused or new) */
} Side;

static void
side_clear (Side *side)
{
  g_free (side->name);
  if (side->latent != side->own)
    ddim_latent_free (side->latent);
  ddim_latent_free (side->own);
}

/* Reads the latent of a latent layer, checked against @model. FALSE on
 * error; TRUE with side->own NULL for other layers. */
static gboolean
side_init (Side *side, GimpLayer *layer, DdimModel *model, const char *model_folder,
           GError **error)
{
  side->layer = layer;
  side->name = gimp_item_get_name (GIMP_ITEM (layer));
  g_autoptr (GBytes) bytes = ddim_plugin_get_parasite (GIMP_ITEM (layer), DDIM_PARASITE_LATENT);
  if (bytes == NULL)
    return TRUE;
  g_autoptr (DdimSourceInfo) source = ddim_source_info_get (GIMP_ITEM (layer));
  if (source != NULL && source->name != NULL && *source->name != '\0')
    {
      g_free (side->name);
      side->name = g_strdup (source->name);
    }
  g_autofree char *layer_name = gimp_item_get_name (GIMP_ITEM (layer));
  g_autoptr (GError) sub = NULL;
  side->own = ddim_latent_new_from_bytes (bytes, model->weights_sha256, &sub);
  if (side->own == NULL && !g_error_matches (sub, DDIM_ERROR, DDIM_ERROR_MISMATCH))
    {
      ddim_plugin_set_error (error, _("The latent on layer “%s” cannot be read: %s. Run "
                                      "Invert to latent… again."), layer_name, sub->message);
      return FALSE;
    }
  if (side->own == NULL || side->own->channels
                               != ddim_unet_get_config (model->unet)->in_channels
      || !ddim_unet_check_size (model->unet, side->own->height, side->own->width, NULL))
    {
      ddim_plugin_set_error (error, _("The latent on layer “%s” was made with another model "
                                      "than the one in “%s”. Set “Model folder” to the model "
                                      "it was inverted with."), layer_name, model_folder);
      return FALSE;
    }
  return TRUE;
}

/* The latent of a picture layer: the whole layer (brought to @width x
 * @height first at native size), reused or inverted. */
static DdimLatent *
picture_latent (GimpImage *image, GimpLayer *layer, const DdimInvertSettings *settings,
                int width, int height, int mw, int mh, GError **error)
{
  GimpDrawable *drawable = GIMP_DRAWABLE (layer);
  g_autofree char *name = gimp_item_get_name (GIMP_ITEM (layer));
  int lw = gimp_drawable_get_width (drawable), lh = gimp_drawable_get_height (drawable);
  int off_x, off_y, check_w, check_h;
  gimp_drawable_get_offsets (drawable, &off_x, &off_y);
  if (!ddim_plugin_check_settings (settings, name, lw, lh, FALSE, &check_w, &check_h, error))
    return NULL;
  g_autofree float *rgba = ddim_plugin_read_rgba (drawable, 0, 0, lw, lh);
  gboolean same_size = lw == width && lh == height;
  if (!settings->native || same_size)
    {
      g_autofree char *checksum = ddim_plugin_pixels_checksum (rgba, lw, lh);
      DdimLatent *latent = ddim_plugin_find_latent (image, NULL, layer, off_x, off_y, lw, lh,
                                                    checksum, settings, NULL);
      if (latent != NULL)
        return latent;
    }
  g_autofree float *x0 = NULL;
  if (!settings->native || same_size)
    x0 = ddim_plugin_model_input (settings, rgba, lw, lh, mw, mh);
  else
    {
      /* Native size: the second layer is resized to the first's size. */
      int C = ddim_unet_get_config (settings->model->unet)->in_channels;
      g_autofree float *full = g_new (float, (gsize) C * lw * lh);
      g_autofree float *sized = g_new (float, (gsize) C * width * height);
      ddim_pixels_rgba_to_tensor (rgba, lw, lh, C, full);
      ddim_pixels_resize (full, C, lw, lh, sized, width, height, DDIM_RESIZE_SMOOTH);
      x0 = g_new (float, (gsize) C * mw * mh);
      ddim_pixels_pad (sized, C, width, height, x0, mw, mh);
    }
  return ddim_plugin_invert (settings, x0, mw, mh, same_size ? lw : width,
                             same_size ? lh : height, error);
}

static const char *const interpolate_main[] = { "second-layer", "frames", NULL };
static const char *const interpolate_advanced[] = {
  "interpolate-h", "steps", "method", "resize", NULL
};
static const DdimDialogSpec interpolate_dialog = {
  .title = N_("Interpolate latents"), .main = interpolate_main,
  .advanced = interpolate_advanced,
};

/* The layer below @layer in its stack (else the one above) that is not a
 * group; NULL when there is none. */
static GimpLayer *
neighbour_layer (GimpImage *image, GimpLayer *layer)
{
  GimpItem *parent = gimp_item_get_parent (GIMP_ITEM (layer));
  g_autofree GimpItem **siblings = parent ? gimp_item_get_children (parent)
                                          : (GimpItem **) gimp_image_get_layers (image);
  int n = 0, at = -1;
  for (; siblings != NULL && siblings[n] != NULL; n++)
    if (siblings[n] == GIMP_ITEM (layer))
      at = n;
  for (int i = at + 1; at >= 0 && i < n; i++)
    if (!gimp_item_is_group (siblings[i]))
      return GIMP_LAYER (siblings[i]);
  for (int i = at - 1; i >= 0; i--)
    if (!gimp_item_is_group (siblings[i]))
      return GIMP_LAYER (siblings[i]);
  return NULL;
}

static GimpValueArray *
interpolate_run (GimpProcedure *procedure, GimpRunMode run_mode, GimpImage *image,
                 GimpDrawable **drawables, GimpProcedureConfig *config, gpointer run_data)
{
  (void) run_data;
  GError *error = NULL;
  gegl_init (NULL, NULL);

  GimpLayer *first = ddim_plugin_get_layer (image, drawables, &error);
  if (first == NULL)
    return ddim_plugin_fail (procedure, error);

  if (run_mode == GIMP_RUN_INTERACTIVE)
    {
      /* The dialog offers the next layer as the second one. */
      g_autoptr (GimpLayer) chosen = NULL;
      g_object_get (config, "second-layer", &chosen, NULL);
      GimpLayer *next = chosen == NULL ? neighbour_layer (image, first) : NULL;
      if (next != NULL)
        g_object_set (config, "second-layer", next, NULL);
    }
  if (run_mode == GIMP_RUN_INTERACTIVE
      && !ddim_plugin_dialog_run (procedure, config, &interpolate_dialog, NULL))
    return gimp_procedure_new_return_values (procedure, GIMP_PDB_CANCEL, NULL);

  g_autofree char *folder = NULL;
  g_autoptr (GimpLayer) second = NULL;
  int steps = 50, n_frames = 8;
  gboolean hspace = FALSE;
  g_object_get (config, "model-folder", &folder, "steps", &steps, "second-layer", &second,
                "frames", &n_frames, "interpolate-h", &hspace, NULL);
  DdimInversionMethod method =
      (DdimInversionMethod) gimp_procedure_config_get_choice_id (config, "method");
  gboolean native =
      gimp_procedure_config_get_choice_id (config, "resize") == DDIM_RESIZE_MODE_NATIVE;

  g_autofree char *first_name = gimp_item_get_name (GIMP_ITEM (first));
  if (second == NULL)
    {
      ddim_plugin_set_error (&error, _("Choose the second layer to interpolate “%s” to."),
                             first_name);
      return ddim_plugin_fail (procedure, error);
    }
  g_autofree char *second_name = gimp_item_get_name (GIMP_ITEM (second));
  if (gimp_item_get_image (GIMP_ITEM (second)) != image
      || gimp_item_is_group (GIMP_ITEM (second)) || second == first)
    {
      ddim_plugin_set_error (&error, _("The second layer (“%s”) must be another layer of the "
                                       "same image, not a layer group."), second_name);
      return ddim_plugin_fail (procedure, error);
    }
  if (n_frames < 2 || n_frames > 64)
    {
      ddim_plugin_set_error (&error, _("The number of frames must be between 2 and 64, not "
                                       "%d."), n_frames);
      return ddim_plugin_fail (procedure, error);
    }

  /* The model: as given; none given, the one a latent layer was made with
   * when it is still there; else the embedded one. */
  if (folder == NULL || *folder == '\0')
    {
      GimpLayer *layers[] = { first, second };
      for (int i = 0; i < 2; i++)
        {
          g_autoptr (DdimSourceInfo) source = ddim_source_info_get (GIMP_ITEM (layers[i]));
          if (source != NULL && source->model_folder != NULL && *source->model_folder != '\0'
              && g_file_test (source->model_folder, G_FILE_TEST_IS_DIR))
            {
              g_free (folder);
              folder = g_strdup (source->model_folder);
              break;
            }
        }
    }
  g_autofree char *model_folder = NULL;
  g_autoptr (DdimModel) model = ddim_plugin_load_model (folder, &model_folder, &error);
  if (model == NULL)
    return ddim_plugin_fail (procedure, error);

  Side a = { 0 }, b = { 0 };
  GimpValueArray *failure = NULL;
  if (!side_init (&a, first, model, model_folder, &error)
      || !side_init (&b, second, model, model_folder, &error))
    {
      failure = ddim_plugin_fail (procedure, error);
      goto out;
    }

  /* The settings: a latent layer's, else the arguments. */
  DdimInvertSettings settings = { model, steps, method, native };
  const DdimLatent *given = a.own ? a.own : b.own;
  if (given != NULL)
    {
      settings.steps = given->steps;
      settings.native = g_strcmp0 (given->resize, "native") == 0;
      g_autoptr (GError) sub = NULL;
      if (!ddim_latent_get_method (given, &settings.method, &sub))
        {
          ddim_plugin_set_error (&error, _("The latent on layer “%s” cannot be read: %s. Run "
                                           "Invert to latent… again."),
                                 a.own ? first_name : second_name, sub->message);
          failure = ddim_plugin_fail (procedure, error);
          goto out;
        }
    }
  int width = gimp_drawable_get_width (GIMP_DRAWABLE (first));
  int height = gimp_drawable_get_height (GIMP_DRAWABLE (first));
  int image_w = a.own ? a.own->image_width : width;
  int image_h = a.own ? a.own->image_height : height;
  int mw, mh;
  if (a.own != NULL)
    {
      mw = a.own->width;
      mh = a.own->height;
    }
  else if (!ddim_plugin_check_settings (&settings, first_name, image_w, image_h, FALSE, &mw,
                                        &mh, &error))
    {
      failure = ddim_plugin_fail (procedure, error);
      goto out;
    }

  a.latent = a.own ? a.own
                   : picture_latent (image, first, &settings, image_w, image_h, mw, mh, &error);
  if (a.latent != NULL)
    b.latent = b.own ? b.own
                     : picture_latent (image, second, &settings, image_w, image_h, mw, mh,
                                       &error);
  if (a.latent == NULL || b.latent == NULL)
    {
      failure = ddim_plugin_fail (procedure, error);
      goto out;
    }
  if (a.latent->width != b.latent->width || a.latent->height != b.latent->height
      || a.latent->steps != b.latent->steps || a.latent->spacing != b.latent->spacing)
    {
      g_autofree char *da = ddim_plugin_latent_describe (a.latent);
      g_autofree char *db = ddim_plugin_latent_describe (b.latent);
      ddim_plugin_set_error (&error, _("The latents of “%s” (%d×%d, %s) and “%s” (%d×%d, %s) "
                                       "do not fit together; invert both layers with the same "
                                       "settings (and, at native size, the same size)."),
                             first_name, a.latent->width, a.latent->height, da, second_name,
                             b.latent->width, b.latent->height, db);
      failure = ddim_plugin_fail (procedure, error);
      goto out;
    }

  {
    int C = a.latent->channels;
    gsize count = (gsize) C * mw * mh;
    g_autofree float *frames = g_new (float, (gsize) n_frames * count);
    DdimProgress progress;
    ddim_plugin_progress_start (&progress, _("Interpolating"), _("Interpolating: step %d/%d"));
    DdimInterpolateOptions io;
    ddim_interpolate_options_init (&io, model->schedule);
    io.run.steps = a.latent->steps;
    io.run.spacing = a.latent->spacing;
    io.run.progress = ddim_plugin_progress_cb;
    io.run.progress_data = &progress;
    io.hspace = hspace;
    g_autoptr (GError) sub = NULL;
    if (!ddim_interpolate (model->unet, model->schedule, a.latent->latent, b.latent->latent, mh,
                           mw, n_frames, &io, NULL, frames, &sub))
      {
        ddim_plugin_set_error (&error, _("Interpolation failed: %s"), sub->message);
        failure = ddim_plugin_fail (procedure, error);
        goto out;
      }

    /* Every frame at the first layer's size, before touching the image. */
    gsize plane = (gsize) width * height;
    g_autofree float *alpha_a = ddim_plugin_read_alpha (GIMP_DRAWABLE (first), width, height);
    g_autofree float *alpha_b = ddim_plugin_read_alpha (GIMP_DRAWABLE (second), width, height);
    g_autofree float *alpha = g_new (float, plane);
    g_autofree float *sized = g_new (float, C * plane);
    g_autofree float *rgba = g_new (float, 4 * plane);
    gboolean crop = settings.native && width <= mw && height <= mh;
    GimpLayer **frame_layers = g_new0 (GimpLayer *, n_frames);
    for (int i = 0; i < n_frames; i++)
      {
        const float *frame = frames + (gsize) i * count;
        if (crop)
          ddim_pixels_crop (frame, C, mw, mh, sized, width, height);
        else
          ddim_pixels_resize (frame, C, mw, mh, sized, width, height, DDIM_RESIZE_SMOOTH);
        ddim_pixels_mix (alpha_a, alpha_b, plane, (double) i / (n_frames - 1), alpha);
        ddim_pixels_tensor_to_rgba (sized, C, width, height, alpha, rgba);
        g_autofree char *frame_name = g_strdup_printf (_("Frame %d of %d"), i + 1, n_frames);
        frame_layers[i] = ddim_plugin_new_layer (image, frame_name, width, height, rgba);
      }
    g_autofree char *group_name = g_strdup_printf (_("Interpolation of %s and %s"), a.name,
                                                   b.name);
    int off_x, off_y;
    gimp_drawable_get_offsets (GIMP_DRAWABLE (first), &off_x, &off_y);

    gimp_image_undo_group_start (image);
    GimpGroupLayer *group = gimp_group_layer_new (image, group_name);
    GimpItem *parent = gimp_item_get_parent (GIMP_ITEM (first));
    gimp_image_insert_layer (image, GIMP_LAYER (group), parent ? GIMP_LAYER (parent) : NULL,
                             gimp_image_get_item_position (image, GIMP_ITEM (first)));
    /* Frame 1 at the bottom. */
    for (int i = 0; i < n_frames; i++)
      {
        gimp_layer_set_offsets (frame_layers[i], off_x, off_y);
        ddim_plugin_insert (image, frame_layers[i], GIMP_LAYER (group), 0);
      }
    gimp_image_undo_group_end (image);
    g_free (frame_layers);
    gimp_progress_end ();

    side_clear (&a);
    side_clear (&b);
    GimpValueArray *values = gimp_procedure_new_return_values (procedure, GIMP_PDB_SUCCESS,
                                                               NULL);
    GIMP_VALUES_SET_GROUP_LAYER (values, 1, group);
    return values;
  }

out:
  side_clear (&a);
  side_clear (&b);
  return failure;
}

const DdimProcedureInfo ddim_interpolate_procedure = {
  .name = "plug-in-ddim-interpolate",
  .menu_label = N_("Interpolate latents…"),
  .blurb = N_("Frames between two layers through the latent space of a diffusion model"),
  .help = N_("Inverts the selected layer and a second layer (or uses their latents), "
             "interpolates the latents spherically and decodes each step into a frame: a new "
             "layer group “Interpolation of <first> and <second>” with layers “Frame 1 of N” "
             "(bottom) to “Frame N of N” (top), at the first layer's size and position."),
  .icon = "ddim-interpolate.png",
  .add_arguments = interpolate_add_arguments,
  .run = interpolate_run,
};
