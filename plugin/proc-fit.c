/* plug-in-ddim-fit-direction, "Fit direction from layers…": the selected
 * layers (one or more) are examples of what the artist wants more of; a
 * supervised h-space direction (ddim/fit.h: mean difference, one block per
 * sampling step) is fitted from them against the model's own samples or
 * against the image's other layers, saved under the given name among the
 * user's directions for the model, and shown as Discover directions shows
 * its directions (a group with the first example edited at −1, 0, +1).
 *
 * Every example is fitted to the model's size (whole layers; the selection
 * is not used). */
#include "ddim-plugin.h"

#include <string.h>

typedef enum {
  FIT_AGAINST_SAMPLES,
  FIT_AGAINST_OTHER_LAYERS
} FitAgainst;

#define FIT_SAMPLES 8
#define FIT_SAMPLE_STEPS 20

static void
fit_add_arguments (GimpProcedure *procedure)
{
  ddim_plugin_add_model_argument (procedure);
  gimp_procedure_add_string_argument (procedure, "name", _("_Name"),
      _("The new direction's name (no spaces); a direction of yours with this name is "
        "replaced"),
      "my-direction", G_PARAM_READWRITE);
  gimp_procedure_add_choice_argument (procedure, "against", _("_Compared with"),
      _("What the examples are told apart from"),
      gimp_choice_new_with_values (
          "samples", FIT_AGAINST_SAMPLES, _("The model's own pictures"),
          _("8 pictures the model draws from fixed noise"),
          "other-layers", FIT_AGAINST_OTHER_LAYERS, _("The image's other layers"),
          _("Every layer of the image that is not selected (and not a layer group)"),
          NULL),
      "samples", G_PARAM_READWRITE);
  ddim_plugin_add_inversion_arguments (procedure, DDIM_PLUGIN_DECODE_METHOD_DEFAULT,
                                       DDIM_PLUGIN_DECODE_STEPS_DEFAULT);
  gimp_procedure_add_group_layer_return_value (procedure, "group-layer", _("Layer group"),
      _("The layer group showing what the direction does"), FALSE, G_PARAM_READWRITE);
}

static const char *const fit_main[] = { "name", "against", NULL };
static const char *const fit_advanced[] = { "steps", "method", NULL };
static const DdimDialogSpec fit_dialog = {
  .title = N_("Fit direction from layers"), .main = fit_main, .advanced = fit_advanced,
};

/* The whole of @layer as model input at the model's size. */
static void
layer_input (GimpLayer *layer, DdimModel *model, float *out)
{
  GimpDrawable *d = GIMP_DRAWABLE (layer);
  int w = gimp_drawable_get_width (d), h = gimp_drawable_get_height (d);
  g_autofree float *rgba = ddim_plugin_read_rgba (d, 0, 0, w, h);
  DdimInvertSettings settings = { model, 1, DDIM_METHOD_DDIM, FALSE };
  int size = ddim_unet_get_config (model->unet)->sample_size;
  g_autofree float *x0 = ddim_plugin_model_input (&settings, rgba, w, h, size, size);
  int C = ddim_unet_get_config (model->unet)->in_channels;
  memcpy (out, x0, sizeof (float) * C * size * size);
}

static gboolean
is_selected (GimpLayer *layer, GimpDrawable **drawables)
{
  for (int i = 0; drawables[i] != NULL; i++)
    if (GIMP_ITEM (drawables[i]) == GIMP_ITEM (layer))
      return TRUE;
  return FALSE;
}

static GimpValueArray *
fit_run (GimpProcedure *procedure, GimpRunMode run_mode, GimpImage *image,
         GimpDrawable **drawables, GimpProcedureConfig *config, gpointer run_data)
{
  (void) run_data;
  GError *error = NULL;
  gegl_init (NULL, NULL);

  gsize n_selected = drawables ? gimp_core_object_array_get_length ((GObject **) drawables) : 0;
  if (n_selected == 0)
    {
      ddim_plugin_set_error (&error, _("Select the layers that show what you want more of "
                                       "(one or more)."));
      return ddim_plugin_fail (procedure, error);
    }
  if (gimp_image_get_base_type (image) == GIMP_INDEXED)
    {
      ddim_plugin_set_error (&error, _("Indexed images are not supported; convert the image "
                                       "with Image ▸ Mode ▸ RGB or Grayscale first."));
      return ddim_plugin_fail (procedure, error);
    }
  for (gsize i = 0; i < n_selected; i++)
    if (!GIMP_IS_LAYER (drawables[i]) || GIMP_IS_LAYER_MASK (drawables[i])
        || gimp_item_is_group (GIMP_ITEM (drawables[i])))
      {
        g_autofree char *name = gimp_item_get_name (GIMP_ITEM (drawables[i]));
        ddim_plugin_set_error (&error, _("“%s” is not a layer with pixels; select only layers "
                                         "(not groups, channels or masks)."), name);
        return ddim_plugin_fail (procedure, error);
      }

  if (run_mode == GIMP_RUN_INTERACTIVE
      && !ddim_plugin_dialog_run (procedure, config, &fit_dialog, NULL))
    return gimp_procedure_new_return_values (procedure, GIMP_PDB_CANCEL, NULL);

  g_autofree char *folder = NULL;
  g_autofree char *name = NULL;
  int steps = 50;
  g_object_get (config, "model-folder", &folder, "name", &name, "steps", &steps, NULL);
  FitAgainst against = gimp_procedure_config_get_choice_id (config, "against");
  DdimInversionMethod method =
      (DdimInversionMethod) gimp_procedure_config_get_choice_id (config, "method");
  g_autoptr (GError) sub = NULL;
  if (!ddim_direction_name_is_valid (name ? name : "", &sub))
    {
      ddim_plugin_set_error (&error, _("“%s” cannot name a direction: %s. Use letters, digits "
                                       "and dashes, as “longer-sleeves”."), name ? name : "",
                             sub->message);
      return ddim_plugin_fail (procedure, error);
    }

  g_autofree char *model_folder = NULL;
  g_autoptr (DdimModel) model = ddim_plugin_load_model (folder, &model_folder, &error);
  if (model == NULL)
    return ddim_plugin_fail (procedure, error);
  const DdimUNetConfig *c = ddim_unet_get_config (model->unet);
  int C = c->in_channels, size = c->sample_size;
  gsize one = (gsize) C * size * size;
  int T = model->schedule->num_train_timesteps;
  DdimInvertSettings settings = { model, steps, method, FALSE };
  GimpLayer *first = GIMP_LAYER (drawables[0]);
  g_autofree char *first_name = gimp_item_get_name (GIMP_ITEM (first));
  int mw, mh;
  for (gsize i = 0; i < n_selected; i++)
    {
      g_autofree char *layer_name = gimp_item_get_name (GIMP_ITEM (drawables[i]));
      if (!ddim_plugin_check_settings (&settings, layer_name,
                                       gimp_drawable_get_width (drawables[i]),
                                       gimp_drawable_get_height (drawables[i]), FALSE, &mw,
                                       &mh, &error))
        return ddim_plugin_fail (procedure, error);
    }

  g_autofree float *positives = g_new (float, n_selected * one);
  for (gsize i = 0; i < n_selected; i++)
    layer_input (GIMP_LAYER (drawables[i]), model, positives + i * one);

  g_autofree float *negatives = NULL;
  int n_negative = 0;
  gimp_progress_init (_("Fitting the direction"));
  if (against == FIT_AGAINST_SAMPLES)
    {
      n_negative = FIT_SAMPLES;
      negatives = g_new (float, (gsize) n_negative * one);
      ddim_randn (1, negatives, (gsize) n_negative * one);
      DdimRunOptions run;
      ddim_run_options_init (&run, model->schedule);
      run.steps = MIN (FIT_SAMPLE_STEPS, T);
      if (!ddim_sample (model->unet, model->schedule, negatives, n_negative, size, size, &run,
                        &sub))
        {
          ddim_plugin_set_error (&error, _("Sampling failed: %s"), sub->message);
          return ddim_plugin_fail (procedure, error);
        }
    }
  else
    {
      g_autofree GimpLayer **layers = gimp_image_get_layers (image);
      GArray *others = g_array_new (FALSE, FALSE, sizeof (float));
      for (int i = 0; layers[i] != NULL; i++)
        if (!gimp_item_is_group (GIMP_ITEM (layers[i])) && !is_selected (layers[i], drawables))
          {
            g_array_set_size (others, (guint) ((n_negative + 1) * one));
            layer_input (layers[i], model, (float *) others->data + n_negative * one);
            n_negative++;
          }
      negatives = (float *) g_array_free (others, n_negative == 0);
      if (n_negative == 0)
        {
          ddim_plugin_set_error (&error, _("There are no other layers to compare the examples "
                                           "with. Add layers that show the opposite, or "
                                           "compare with the model's own pictures."));
          return ddim_plugin_fail (procedure, error);
        }
    }

  DdimFitOptions fo;
  ddim_fit_options_init (&fo, model->schedule);
  fo.run.steps = steps;
  fo.per_timestep = TRUE;
  fo.method = DDIM_FIT_MEAN_DIFFERENCE;
  fo.model_sha256 = model->weights_sha256;
  g_autofree char *description = g_strdup_printf (_("toward %s"), first_name);
  fo.description = description;
  g_autoptr (DdimDirection) direction = ddim_fit_direction (model->unet, model->schedule, name,
                                                            positives, (int) n_selected,
                                                            negatives, n_negative, size, size,
                                                            &fo, &sub);
  if (direction == NULL)
    {
      ddim_plugin_set_error (&error, _("Fitting the direction failed: %s"), sub->message);
      return ddim_plugin_fail (procedure, error);
    }
  g_autoptr (DdimDirectionSet) set = ddim_direction_set_new ();
  ddim_direction_set_add (set, g_steal_pointer (&direction));
  if (!ddim_plugin_save_user_directions (model->weights_sha256, set, &error))
    return ddim_plugin_fail (procedure, error);

  /* What it does to the first example. */
  int fw = gimp_drawable_get_width (GIMP_DRAWABLE (first));
  int fh = gimp_drawable_get_height (GIMP_DRAWABLE (first));
  g_autoptr (DdimLatent) latent = ddim_plugin_invert (&settings, positives, size, size, fw, fh,
                                                      &error);
  if (latent == NULL)
    return ddim_plugin_fail (procedure, error);
  g_autofree float *alpha = ddim_plugin_read_alpha (GIMP_DRAWABLE (first), fw, fh);
  int off_x, off_y;
  gimp_drawable_get_offsets (GIMP_DRAWABLE (first), &off_x, &off_y);
  g_autofree char *group_name = g_strdup_printf (_("Direction %s"), name);
  GimpValueArray *values = ddim_plugin_show_directions (procedure, image, first, model, latent,
                                                        set, off_x, off_y, fw, fh, FALSE,
                                                        alpha, group_name, &error);
  return values ? values : ddim_plugin_fail (procedure, error);
}

const DdimProcedureInfo ddim_fit_procedure = {
  .name = "plug-in-ddim-fit-direction",
  .menu_label = N_("Fit direction from layers…"),
  .blurb = N_("Make a direction of a diffusion model from example layers"),
  .help = N_("The selected layers show what you want more of. A direction of the model is "
             "fitted from them, against the model's own pictures or the image's other "
             "layers, saved under the name you give among your directions for the model "
             "(Semantic edit lists it), and shown on the first example at −1, 0 and +1 in "
             "a layer group “Direction <name>”."),
  .icon = "ddim-semantic-edit.png",
  .several_layers = TRUE,
  .add_arguments = fit_add_arguments,
  .run = fit_run,
};
