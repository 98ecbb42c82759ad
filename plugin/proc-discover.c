/* plug-in-ddim-discover-directions, "Discover directions…": directions of
 * the model found without labels, saved into the user's directions for
 * that model (ddim_plugin_save_user_directions), so that Semantic edit
 * lists them; and a layer group that shows what each one does: per
 * direction a layer "<name>: −1 | 0 | +1" holding three edits of the layer
 * (or its selected part) side by side, so the artist picks by looking.
 *
 * Source "picture": the top-k right singular vectors of the Jacobian of h
 * at this picture's x_t (ddim/discover.h, Park et al.), as h-space
 * directions (their u_i), named discovered-<pixels>-N-h after the first
 * hex digits of the region's pixel checksum. Source "samples": the top-k
 * principal components of h over the model's own samples (16 of them,
 * from fixed noise), named samples-pca-N. */
#include "ddim-plugin.h"

#include <string.h>

typedef enum {
  DISCOVER_PICTURE,
  DISCOVER_SAMPLES
} DiscoverSource;

#define PCA_SAMPLES 16
#define PCA_STEPS   20

static void
discover_add_arguments (GimpProcedure *procedure)
{
  ddim_plugin_add_model_argument (procedure);
  gimp_procedure_add_choice_argument (procedure, "source", _("_Look at"),
      _("Where the directions come from"),
      gimp_choice_new_with_values (
          "picture", DISCOVER_PICTURE, _("This picture (how the model sees it changing)"),
          _("The directions in which the model's features respond most to this picture "
            "(Jacobian singular vectors)"),
          "samples", DISCOVER_SAMPLES, _("The model's own pictures (what varies most)"),
          _("The principal components of the model's features over its own samples"),
          NULL),
      "picture", G_PARAM_READWRITE);
  gimp_procedure_add_int_argument (procedure, "count", _("How _many"),
      _("How many directions to find"), 1, 8, 3, G_PARAM_READWRITE);
  gimp_procedure_add_int_argument (procedure, "t", _("At noise _level"),
      _("The noise level (timestep) the directions are found at: higher finds coarser "
        "changes (-1: half the model's timesteps)"),
      -1, 100000, -1, G_PARAM_READWRITE);
  ddim_plugin_add_inversion_arguments (procedure, DDIM_PLUGIN_DECODE_METHOD_DEFAULT,
                                       DDIM_PLUGIN_DECODE_STEPS_DEFAULT);
  gimp_procedure_add_group_layer_return_value (procedure, "group-layer", _("Layer group"),
      _("The layer group showing what each direction does"), FALSE, G_PARAM_READWRITE);
}

static const char *const discover_main[] = { "source", "count", NULL };
static const char *const discover_advanced[] = { "t", "steps", "method", "resize", NULL };
static const DdimDialogSpec discover_dialog = {
  .title = N_("Discover directions"), .main = discover_main, .advanced = discover_advanced,
};

/* x_t of @x_T's sampling at the first step at or below @t (the state the
 * editor meets there); *@t_used receives that step's timestep. */
static float *
state_at (DdimModel *model, const float *x_T, int C, int mw, int mh, int steps,
          DdimSpacing spacing, int t, int *t_used, GError **error)
{
  g_autoptr (GError) sub = NULL;
  g_autofree int *ts = ddim_schedule_timesteps (model->schedule, steps, spacing, &sub);
  if (ts == NULL)
    {
      ddim_plugin_set_error (error, "%s", sub->message);
      return NULL;
    }
  int step = 0;
  while (step < steps - 1 && ts[step] > t)
    step++;
  gsize count = (gsize) C * mw * mh;
  g_autofree float *trajectory = g_new (float, (gsize) (steps + 1) * count);
  g_autofree float *x = g_memdup2 (x_T, count * sizeof (float));
  DdimRunOptions o;
  ddim_run_options_init (&o, model->schedule);
  o.steps = steps;
  o.spacing = spacing;
  o.trajectory = trajectory;
  if (!ddim_sample (model->unet, model->schedule, x, 1, mh, mw, &o, &sub))
    {
      ddim_plugin_set_error (error, _("Sampling failed: %s"), sub->message);
      return NULL;
    }
  *t_used = ts[step];
  return g_memdup2 (trajectory + (gsize) step * count, count * sizeof (float));
}

gboolean
ddim_plugin_edit_strip (DdimModel *model, const DdimLatent *latent, DdimDirection *direction,
                        const float *plain, int rw, int rh, gboolean native, const float *alpha,
                        float *strip, GError **error)
{
  int C = latent->channels, mw = latent->width, mh = latent->height;
  gsize count = (gsize) C * mw * mh;
  g_autofree float *edited = g_new (float, count);
  g_autofree float *sized = g_new (float, (gsize) C * rw * rh);
  g_autofree float *rgba = g_new (float, (gsize) 4 * rw * rh);
  DdimRunOptions o;
  ddim_run_options_init (&o, model->schedule);
  o.steps = latent->steps;
  o.spacing = latent->spacing;
  static const double strengths[] = { -1.0, 0.0, 1.0 };
  for (int k = 0; k < 3; k++)
    {
      g_autoptr (GError) sub = NULL;
      if (strengths[k] == 0.0)
        memcpy (edited, plain, count * sizeof (float));
      else
        {
          memcpy (edited, latent->latent, count * sizeof (float));
          if (!ddim_edit (model->unet, model->schedule, edited, 1, mh, mw, direction,
                          strengths[k] * ddim_plugin_direction_unit (direction), -1, &o, &sub))
            {
              ddim_plugin_set_error (error, _("Editing failed: %s"), sub->message);
              return FALSE;
            }
        }
      if (native)
        ddim_pixels_crop (edited, C, mw, mh, sized, rw, rh);
      else
        ddim_pixels_resize (edited, C, mw, mh, sized, rw, rh, DDIM_RESIZE_SMOOTH);
      ddim_pixels_tensor_to_rgba (sized, C, rw, rh, alpha, rgba);
      for (int y = 0; y < rh; y++)
        memcpy (strip + 4 * ((gsize) y * 3 * rw + (gsize) k * rw), rgba + 4 * (gsize) y * rw,
                sizeof (float) * 4 * rw);
    }
  return TRUE;
}

GimpValueArray *
ddim_plugin_show_directions (GimpProcedure *procedure, GimpImage *image, GimpLayer *layer,
                             DdimModel *model, const DdimLatent *latent,
                             DdimDirectionSet *directions, int x, int y, int rw, int rh,
                             gboolean native, const float *alpha, const char *group_name,
                             GError **error)
{
  int C = latent->channels, mw = latent->width, mh = latent->height;
  gsize count = (gsize) C * mw * mh;
  g_autofree float *plain = g_memdup2 (latent->latent, count * sizeof (float));
  DdimRunOptions o;
  ddim_run_options_init (&o, model->schedule);
  o.steps = latent->steps;
  o.spacing = latent->spacing;
  g_autoptr (GError) sub = NULL;
  if (!ddim_sample (model->unet, model->schedule, plain, 1, mh, mw, &o, &sub))
    {
      ddim_plugin_set_error (error, _("Sampling failed: %s"), sub->message);
      return NULL;
    }
  guint n = ddim_direction_set_get_n (directions);
  GimpLayer **strips = g_new0 (GimpLayer *, n);
  g_autofree float *strip = g_new (float, (gsize) 4 * 3 * rw * rh);
  for (guint i = 0; i < n; i++)
    {
      DdimDirection *d = ddim_direction_set_get_nth (directions, i);
      gimp_progress_set_text_printf (_("Showing direction %u of %u"), i + 1, n);
      gimp_progress_update ((double) i / n);
      if (!ddim_plugin_edit_strip (model, latent, d, plain, rw, rh, native, alpha, strip,
                                   error))
        {
          for (guint j = 0; j < i; j++)
            gimp_item_delete (GIMP_ITEM (strips[j]));
          g_free (strips);
          return NULL;
        }
      g_autofree char *name = g_strdup_printf (_("%s: −1 | 0 | +1"), d->name);
      strips[i] = ddim_plugin_new_layer (image, name, 3 * rw, rh, strip);
    }

  gimp_image_undo_group_start (image);
  GimpGroupLayer *group = gimp_group_layer_new (image, group_name);
  GimpItem *parent = gimp_item_get_parent (GIMP_ITEM (layer));
  gimp_image_insert_layer (image, GIMP_LAYER (group), parent ? GIMP_LAYER (parent) : NULL,
                           gimp_image_get_item_position (image, GIMP_ITEM (layer)));
  /* The first direction on top, the strips one under the other. */
  for (guint i = 0; i < n; i++)
    {
      gimp_layer_set_offsets (strips[i], x, y + (int) i * rh);
      ddim_plugin_insert (image, strips[i], GIMP_LAYER (group), (int) i);
    }
  gimp_image_undo_group_end (image);
  g_free (strips);
  gimp_progress_end ();
  GimpValueArray *values = gimp_procedure_new_return_values (procedure, GIMP_PDB_SUCCESS, NULL);
  GIMP_VALUES_SET_GROUP_LAYER (values, 1, group);
  return values;
}

static GimpValueArray *
discover_run (GimpProcedure *procedure, GimpRunMode run_mode, GimpImage *image,
              GimpDrawable **drawables, GimpProcedureConfig *config, gpointer run_data)
{
  (void) run_data;
  GError *error = NULL;
  gegl_init (NULL, NULL);

  GimpLayer *layer = ddim_plugin_get_layer (image, drawables, &error);
  if (layer == NULL)
    return ddim_plugin_fail (procedure, error);
  if (run_mode == GIMP_RUN_INTERACTIVE
      && !ddim_plugin_dialog_run (procedure, config, &discover_dialog, NULL))
    return gimp_procedure_new_return_values (procedure, GIMP_PDB_CANCEL, NULL);

  g_autofree char *folder = NULL;
  int steps = 50, k = 3, t = -1;
  g_object_get (config, "model-folder", &folder, "steps", &steps, "count", &k, "t", &t, NULL);
  DiscoverSource source = gimp_procedure_config_get_choice_id (config, "source");
  DdimInversionMethod method =
      (DdimInversionMethod) gimp_procedure_config_get_choice_id (config, "method");
  gboolean native =
      gimp_procedure_config_get_choice_id (config, "resize") == DDIM_RESIZE_MODE_NATIVE;

  GimpDrawable *drawable = GIMP_DRAWABLE (layer);
  g_autofree char *name = gimp_item_get_name (GIMP_ITEM (layer));
  int rx, ry, rw, rh, off_x, off_y;
  gboolean partial;
  if (!ddim_plugin_get_region (layer, TRUE, &rx, &ry, &rw, &rh, &partial, &error))
    return ddim_plugin_fail (procedure, error);
  gimp_drawable_get_offsets (drawable, &off_x, &off_y);

  g_autofree char *model_folder = NULL;
  g_autoptr (DdimModel) model = ddim_plugin_load_model (folder, &model_folder, &error);
  if (model == NULL)
    return ddim_plugin_fail (procedure, error);
  DdimInvertSettings settings = { model, steps, method, native };
  int mw, mh;
  if (!ddim_plugin_check_settings (&settings, name, rw, rh, partial, &mw, &mh, &error))
    return ddim_plugin_fail (procedure, error);
  int T = model->schedule->num_train_timesteps;
  if (t < -1 || t >= T)
    {
      ddim_plugin_set_error (&error, _("The noise level must be between 0 and %d (-1: half of "
                                       "that), not %d."), T - 1, t);
      return ddim_plugin_fail (procedure, error);
    }
  if (t == -1)
    t = T / 2;

  int C = ddim_unet_get_config (model->unet)->in_channels;
  g_autofree float *rgba = ddim_plugin_read_rgba (drawable, rx, ry, rw, rh);
  g_autofree char *checksum = ddim_plugin_pixels_checksum (rgba, rw, rh);
  g_autofree float *alpha = g_new (float, (gsize) rw * rh);
  ddim_pixels_rgba_get_alpha (rgba, rw, rh, alpha);
  g_autofree float *x0 = ddim_plugin_model_input (&settings, rgba, rw, rh, mw, mh);
  g_autoptr (DdimLatent) latent = ddim_plugin_invert (&settings, x0, mw, mh, rw, rh, &error);
  if (latent == NULL)
    return ddim_plugin_fail (procedure, error);

  gimp_progress_init (_("Discovering directions"));
  DdimDiscoverOptions opts;
  ddim_discover_options_init (&opts);
  opts.k = k;
  opts.model_sha256 = model->weights_sha256;
  g_autoptr (GError) sub = NULL;
  g_autoptr (DdimDirectionSet) found = NULL;
  if (source == DISCOVER_PICTURE)
    {
      int t_used = t;
      g_autofree float *x_t = state_at (model, latent->latent, C, mw, mh, latent->steps,
                                        latent->spacing, t, &t_used, &error);
      if (x_t == NULL)
        return ddim_plugin_fail (procedure, error);
      g_autofree char *prefix = g_strdup_printf ("discovered-%.6s", checksum);
      opts.prefix = prefix;
      opts.want_x = FALSE;
      opts.want_h = TRUE;
      found = ddim_discover_jacobian (model->unet, x_t, mh, mw, t_used, &opts, &sub);
    }
  else
    {
      g_autofree float *latents = g_new (float, (gsize) PCA_SAMPLES * C * mw * mh);
      ddim_randn (0, latents, (gsize) PCA_SAMPLES * C * mw * mh);
      DdimRunOptions run;
      ddim_run_options_init (&run, model->schedule);
      run.steps = MIN (PCA_STEPS, T);
      opts.prefix = "samples-pca";
      found = ddim_discover_pca (model->unet, model->schedule, latents, PCA_SAMPLES, mh, mw,
                                 &run, t, T - 1, FALSE, &opts, &sub);
    }
  if (found == NULL)
    {
      ddim_plugin_set_error (&error, _("Finding directions failed: %s"), sub->message);
      return ddim_plugin_fail (procedure, error);
    }
  if (!ddim_plugin_save_user_directions (model->weights_sha256, found, &error))
    return ddim_plugin_fail (procedure, error);

  g_autofree char *group_name = g_strdup_printf (_("Directions found in %s"), name);
  GimpValueArray *values = ddim_plugin_show_directions (procedure, image, layer, model, latent,
                                                        found, off_x + rx, off_y + ry, rw, rh,
                                                        native, alpha, group_name, &error);
  return values ? values : ddim_plugin_fail (procedure, error);
}

const DdimProcedureInfo ddim_discover_procedure = {
  .name = "plug-in-ddim-discover-directions",
  .menu_label = N_("Discover directions…"),
  .blurb = N_("Find directions a diffusion model can edit along, and show what each does"),
  .help = N_("Finds the directions in which the model's features change most, for this "
             "picture (or the selected part of it) or across the model's own pictures, saves "
             "them among your directions for the model (Semantic edit lists them), and adds a "
             "layer group “Directions found in <name>” with one layer per direction showing "
             "edits at −1, 0 and +1."),
  .icon = "ddim-semantic-edit.png",
  .add_arguments = discover_add_arguments,
  .run = discover_run,
};
