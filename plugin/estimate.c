/* Run-time estimates (ddim/cost.h) in the plug-in: shown with the
 * progress, and, before an interactive native-size run that would take
 * minutes, a question offering fit mode instead. */
#include "ddim-plugin.h"

#include <libgimp/gimpui.h>

#include "ddim/cost.h"

int
ddim_plugin_method_evaluations (DdimInversionMethod method)
{
  switch (method)
    {
    case DDIM_METHOD_EDICT:
      return 2;
    case DDIM_METHOD_FIXED_POINT:
      return 4;   /* a typical iteration count per step */
    default:
      return 1;
    }
}

double
ddim_plugin_estimate_seconds (DdimModel *model, int mw, int mh, int evaluations)
{
  double one = ddim_unet_estimate_forward_seconds (model->unet, mh, mw);
  return one > 0 ? one * evaluations : -1.0;
}

char *
ddim_plugin_format_seconds (double seconds)
{
  if (seconds < 0)
    return g_strdup ("?");
  if (seconds < 90)
    return g_strdup_printf (_("%.0f s"), MAX (seconds, 1.0));
  if (seconds < 5400)
    return g_strdup_printf (_("%.0f min"), seconds / 60);
  return g_strdup_printf (_("%.1f h"), seconds / 3600);
}

gboolean
ddim_plugin_confirm_long_run (GimpRunMode run_mode, DdimInvertSettings *settings,
                              const char *name, int width, int height, int evaluations,
                              gboolean *cancelled)
{
  *cancelled = FALSE;
  if (run_mode != GIMP_RUN_INTERACTIVE || !settings->native)
    return TRUE;
  int mw, mh;
  if (!ddim_plugin_check_settings (settings, name, width, height, FALSE, &mw, &mh, NULL))
    return TRUE;   /* the run itself reports it */
  double seconds = ddim_plugin_estimate_seconds (settings->model, mw, mh, evaluations);
  if (seconds < DDIM_PLUGIN_LONG_RUN_SECONDS)
    return TRUE;
  int size = ddim_unet_get_config (settings->model->unet)->sample_size;
  double fit_seconds = ddim_plugin_estimate_seconds (settings->model, size, size, evaluations);
  g_autofree char *slow = ddim_plugin_format_seconds (seconds);
  g_autofree char *fast = ddim_plugin_format_seconds (fit_seconds);

  gimp_ui_init (DDIM_PLUGIN_BINARY);
  GtkWidget *dialog = gtk_message_dialog_new (NULL, GTK_DIALOG_MODAL, GTK_MESSAGE_QUESTION,
                                              GTK_BUTTONS_NONE,
                                              _("At the layer's own size (%d×%d) this takes "
                                                "about %s on this computer."),
                                              width, height, slow);
  gtk_message_dialog_format_secondary_text (GTK_MESSAGE_DIALOG (dialog),
      _("“Fit to model size” runs the model at %d×%d and brings the result back to the "
        "layer's size: about %s."), size, size, fast);
  gtk_dialog_add_buttons (GTK_DIALOG (dialog), _("_Cancel"), GTK_RESPONSE_CANCEL,
                          _("Run at _own size"), GTK_RESPONSE_REJECT,
                          _("_Fit to model size"), GTK_RESPONSE_ACCEPT, NULL);
  gtk_dialog_set_default_response (GTK_DIALOG (dialog), GTK_RESPONSE_ACCEPT);
  int response = gtk_dialog_run (GTK_DIALOG (dialog));
  gtk_widget_destroy (dialog);
  if (response == GTK_RESPONSE_ACCEPT)
    settings->native = FALSE;
  else if (response != GTK_RESPONSE_REJECT)
    *cancelled = TRUE;
  return !*cancelled;
}
