/* Semantic edit's preview in its dialog: the edit of the layer (or the
 * selected part) at the model's size, scaled up for the eye. Live (a
 * moment after each change) when the estimated edit takes under a second
 * at that size (the embedded model), else behind a "Preview" button. The
 * latent is kept while the model, steps and method stay the same, so a
 * change of direction or strength costs one edit. It uses at most
 * PREVIEW_MAX_STEPS steps (the edit itself uses the chosen steps). Runs in
 * the dialog's thread: the dialog waits while it computes. */
#include "ddim-plugin.h"

#include <libgimp/gimpui.h>
#include <string.h>

#define PREVIEW_SIDE 160
#define LIVE_SECONDS 1.0
#define PREVIEW_MAX_STEPS 20

struct _DdimDialogPreview {
  GimpProcedureConfig *config;
  GimpDrawable        *drawable;
  GtkWidget           *box, *image, *button, *note;
  guint                pending;        /* timeout source, 0 when none */
  gboolean             live;
  char                *model_id;       /* of model */
  DdimModel           *model;
  char                *latent_key;     /* model id, steps, method of latent */
  DdimLatent          *latent;
};

static void
show_note (DdimDialogPreview *p, const char *text)
{
  gtk_label_set_text (GTK_LABEL (p->note), text);
}

static gboolean
compute (DdimDialogPreview *p, GError **error)
{
  g_autofree char *folder = NULL, *direction_arg = NULL;
  int steps = 50, t_edit = -1;
  double strength = 1.0;
  g_object_get (p->config, "model-folder", &folder, "direction", &direction_arg, "steps",
                &steps, "strength", &strength, "t-edit", &t_edit, NULL);
  steps = MIN (steps, PREVIEW_MAX_STEPS);
  DdimInversionMethod method =
      (DdimInversionMethod) gimp_procedure_config_get_choice_id (p->config, "method");
  gboolean detail = gimp_procedure_config_get_choice_id (p->config, "result")
                    == DDIM_EDIT_RESULT_DETAIL;
  if (folder == NULL)
    folder = g_strdup ("");
  if (p->model == NULL || g_strcmp0 (p->model_id, folder) != 0)
    {
      g_clear_pointer (&p->model, ddim_model_free);
      g_clear_pointer (&p->latent, ddim_latent_free);
      p->model = ddim_plugin_load_model (folder, NULL, error);
      if (p->model == NULL)
        return FALSE;
      g_free (p->model_id);
      p->model_id = g_strdup (folder);
    }
  DdimModel *model = p->model;
  int size = ddim_unet_get_config (model->unet)->sample_size;
  int C = ddim_unet_get_config (model->unet)->in_channels;
  gsize count = (gsize) C * size * size;

  g_autofree char *key = g_strdup_printf ("%s|%d|%d", folder, steps, method);
  if (p->latent == NULL || g_strcmp0 (key, p->latent_key) != 0)
    {
      int x, y, w, h;
      if (!gimp_drawable_mask_intersect (p->drawable, &x, &y, &w, &h) || w < 1 || h < 1)
        {
          ddim_plugin_set_error (error, _("The selection does not overlap the layer."));
          return FALSE;
        }
      g_autofree float *rgba = ddim_plugin_read_rgba (p->drawable, x, y, w, h);
      DdimInvertSettings settings = { model, steps, method, FALSE };
      int mw, mh;
      if (!ddim_plugin_check_settings (&settings, "", w, h, FALSE, &mw, &mh, error))
        return FALSE;
      g_autofree float *x0 = ddim_plugin_model_input (&settings, rgba, w, h, mw, mh);
      DdimRunOptions o;
      ddim_run_options_init (&o, model->schedule);
      o.steps = steps;
      g_autoptr (GError) sub = NULL;
      g_clear_pointer (&p->latent, ddim_latent_free);
      p->latent = ddim_invert_with_method (model->unet, model->schedule, x0, mh, mw, method,
                                           NULL, &o, NULL, &sub);
      if (p->latent == NULL)
        {
          ddim_plugin_set_error (error, "%s", sub->message);
          return FALSE;
        }
      g_free (p->latent_key);
      p->latent_key = g_steal_pointer (&key);
    }

  DdimDirection *direction = NULL;
  g_autoptr (DdimDirectionSet) set = ddim_plugin_resolve_direction (direction_arg, model,
                                                                    &direction, error);
  if (set == NULL)
    return FALSE;
  DdimRunOptions o;
  ddim_run_options_init (&o, model->schedule);
  o.steps = p->latent->steps;
  o.spacing = p->latent->spacing;
  g_autoptr (GError) sub = NULL;
  g_autofree float *edited = g_memdup2 (p->latent->latent, count * sizeof (float));
  if (!ddim_edit (model->unet, model->schedule, edited, 1, size, size, direction,
                  strength * ddim_plugin_direction_unit (direction), t_edit > 0 ? t_edit : -1,
                  &o, &sub))
    {
      ddim_plugin_set_error (error, "%s", sub->message);
      return FALSE;
    }
  (void) detail;   /* the preview shows the edit at the model's size either way */

  g_autofree float *rgba = g_new (float, (gsize) 4 * size * size);
  ddim_pixels_tensor_to_rgba (edited, C, size, size, NULL, rgba);
  g_autoptr (GdkPixbuf) small = gdk_pixbuf_new (GDK_COLORSPACE_RGB, FALSE, 8, size, size);
  guchar *px = gdk_pixbuf_get_pixels (small);
  int stride = gdk_pixbuf_get_rowstride (small);
  for (int yy = 0; yy < size; yy++)
    for (int xx = 0; xx < size; xx++)
      for (int c = 0; c < 3; c++)
        px[yy * stride + xx * 3 + c] =
            (guchar) CLAMP (rgba[4 * (yy * size + xx) + c] * 255.0f + 0.5f, 0, 255);
  g_autoptr (GdkPixbuf) big = gdk_pixbuf_scale_simple (small, PREVIEW_SIDE, PREVIEW_SIDE,
                                                       GDK_INTERP_NEAREST);
  gtk_image_set_from_pixbuf (GTK_IMAGE (p->image), big);
  return TRUE;
}

static void
refresh (DdimDialogPreview *p)
{
  g_autoptr (GError) error = NULL;
  show_note (p, _("Computing the preview…"));
  while (gtk_events_pending ())
    gtk_main_iteration ();
  if (compute (p, &error))
    show_note (p, p->live ? _("Preview (updates as you change the settings)") : _("Preview"));
  else
    show_note (p, error->message);
}

static gboolean
on_timeout (gpointer data)
{
  DdimDialogPreview *p = data;
  p->pending = 0;
  refresh (p);
  return G_SOURCE_REMOVE;
}

void
ddim_dialog_preview_invalidate (DdimDialogPreview *p)
{
  if (!p->live)
    {
      show_note (p, _("Press Preview to see the edit."));
      return;
    }
  if (p->pending != 0)
    g_source_remove (p->pending);
  p->pending = g_timeout_add (300, on_timeout, p);
}

static void
on_button (GtkButton *button, DdimDialogPreview *p)
{
  (void) button;
  refresh (p);
}

/* Live when one edit at the model's size is estimated under a second. */
static gboolean
decide_live (DdimDialogPreview *p)
{
  g_autofree char *folder = NULL;
  int steps = 50;
  g_object_get (p->config, "model-folder", &folder, "steps", &steps, NULL);
  steps = MIN (steps, PREVIEW_MAX_STEPS);
  g_autoptr (GError) error = NULL;
  g_autoptr (DdimModel) model = ddim_plugin_load_model (folder, NULL, &error);
  if (model == NULL)
    return FALSE;
  int size = ddim_unet_get_config (model->unet)->sample_size;
  double seconds = ddim_plugin_estimate_seconds (model, size, size, 2 * steps);
  return seconds >= 0 && seconds < LIVE_SECONDS;
}

DdimDialogPreview *
ddim_dialog_preview_new (GimpProcedureConfig *config, GimpDrawable *drawable)
{
  DdimDialogPreview *p = g_new0 (DdimDialogPreview, 1);
  p->config = config;
  p->drawable = drawable;
  p->box = gtk_box_new (GTK_ORIENTATION_VERTICAL, 4);
  p->image = gtk_image_new ();
  gtk_widget_set_size_request (p->image, PREVIEW_SIDE, PREVIEW_SIDE);
  atk_object_set_name (gtk_widget_get_accessible (p->image), _("Preview"));
  p->note = gtk_label_new (NULL);
  gtk_label_set_line_wrap (GTK_LABEL (p->note), TRUE);
  gtk_label_set_max_width_chars (GTK_LABEL (p->note), 40);
  p->button = gtk_button_new_with_mnemonic (_("_Preview"));
  g_signal_connect (p->button, "clicked", G_CALLBACK (on_button), p);
  gtk_box_pack_start (GTK_BOX (p->box), p->image, FALSE, FALSE, 0);
  gtk_box_pack_start (GTK_BOX (p->box), p->note, FALSE, FALSE, 0);
  gtk_box_pack_start (GTK_BOX (p->box), p->button, FALSE, FALSE, 0);
  gtk_widget_show_all (p->box);
  p->live = decide_live (p);
  gtk_widget_set_visible (p->button, !p->live);
  ddim_dialog_preview_invalidate (p);
  return p;
}

GtkWidget *
ddim_dialog_preview_get_widget (DdimDialogPreview *p)
{
  return p->box;
}

void
ddim_dialog_preview_free (DdimDialogPreview *p)
{
  if (p == NULL)
    return;
  if (p->pending != 0)
    g_source_remove (p->pending);
  g_free (p->model_id);
  g_clear_pointer (&p->model, ddim_model_free);
  g_free (p->latent_key);
  g_clear_pointer (&p->latent, ddim_latent_free);
  g_free (p);
}
