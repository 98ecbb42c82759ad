/* Progress reporting and Ctrl-C handling (see progress.h). */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ddim/cost.h"

#include "progress.h"

#define BAR_WIDTH 30
#define REDRAW_INTERVAL_US (100 * 1000)
#define PLAIN_LINES 10

struct _CliProgress {
  char         *label;
  GCancellable *cancellable;
  gboolean      quiet;
  gboolean      tty;
  gint64        start_us;
  gint64        last_draw_us;
  gboolean      line_open;     /* a bar is on screen without its newline */
  int           last_len;      /* length of the bar drawn last */
  double        estimate;      /* seconds of the whole run, <= 0: unknown */
};

/* ---- SIGINT ---- */

static volatile sig_atomic_t sigint_flag = 0;
static char sigint_note[256];
static size_t sigint_note_len;
static gboolean sigint_installed;

static void
on_sigint (int signo)
{
  (void) signo;
  sigint_flag = 1;
  /* write() is async-signal-safe; stdio is not. */
  if (sigint_note_len > 0)
    {
      ssize_t r = write (STDERR_FILENO, sigint_note, sigint_note_len);
      (void) r;
    }
}

void
cli_sigint_install (const char *cmd)
{
  /* On a terminal, start a new line: a progress bar may be on screen. */
  g_snprintf (sigint_note, sizeof sigint_note,
              "%sddim %s: interrupted; stopping after the current step "
              "(press Ctrl-C again to quit at once)\n", isatty (STDERR_FILENO) ? "\n" : "",
              cmd);
  sigint_note_len = strlen (sigint_note);
  sigint_flag = 0;

  struct sigaction sa;
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset (&sa.sa_mask);
  /* One-shot: the second Ctrl-C gets the default action (terminate). */
  sa.sa_flags = SA_RESETHAND | SA_RESTART;
  if (sigaction (SIGINT, &sa, NULL) == 0)
    sigint_installed = TRUE;
}

void
cli_sigint_restore (void)
{
  if (!sigint_installed)
    return;
  struct sigaction sa;
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  sigemptyset (&sa.sa_mask);
  sigaction (SIGINT, &sa, NULL);
  sigint_installed = FALSE;
}

gboolean
cli_sigint_received (void)
{
  return sigint_flag != 0;
}

/* ---- formatting ---- */

char *
cli_format_seconds (double s)
{
  if (!(s >= 0))
    s = 0;
  if (s < 60)
    return g_strdup_printf ("%.1f s", s);
  long total = (long) (s + 0.5);
  if (total < 3600)
    return g_strdup_printf ("%ldm%02lds", total / 60, total % 60);
  return g_strdup_printf ("%ldh%02ldm", total / 3600, (total % 3600) / 60);
}

/* ---- progress ---- */

CliProgress *
cli_progress_new (const char *label, GCancellable *cancellable, gboolean quiet)
{
  g_return_val_if_fail (label != NULL, NULL);
  CliProgress *p = g_new0 (CliProgress, 1);
  p->label = g_strdup (label);
  p->cancellable = cancellable ? g_object_ref (cancellable) : NULL;
  p->quiet = quiet;
  p->tty = isatty (STDERR_FILENO);
  p->start_us = g_get_monotonic_time ();
  return p;
}

double
cli_progress_elapsed (CliProgress *p)
{
  return (g_get_monotonic_time () - p->start_us) / 1e6;
}

void
cli_progress_end (CliProgress *p)
{
  if (p == NULL || !p->line_open)
    return;
  fputc ('\n', stderr);
  fflush (stderr);
  p->line_open = FALSE;
  p->last_len = 0;
}

void
cli_progress_free (CliProgress *p)
{
  if (p == NULL)
    return;
  cli_progress_end (p);
  g_clear_object (&p->cancellable);
  g_free (p->label);
  g_free (p);
}

void
cli_progress_set_estimate (CliProgress *p, double seconds)
{
  g_return_if_fail (p != NULL);
  p->estimate = seconds;
}

double
cli_estimate_run (const char *label, DdimUNet *unet, int height, int width,
                  double evaluations, gboolean bound, gboolean quiet)
{
  g_return_val_if_fail (label != NULL && unet != NULL, -1);
  if (quiet || evaluations <= 0
      || evaluations * 2.0 * ddim_unet_count_macs (unet, 1, height, width)
           < CLI_ESTIMATE_MIN_FLOPS)
    return -1;
  double each = ddim_unet_estimate_forward_seconds (unet, height, width);
  if (!(each > 0))
    return -1;
  double total = each * evaluations;
  g_autofree char *total_s = cli_format_seconds (total);
  g_autofree char *each_s = each < 0.1 ? g_strdup_printf ("%.0f ms", each * 1e3)
                                       : cli_format_seconds (each);
  fprintf (stderr, "%s: estimated %s%s (%.0f model evaluations at %dx%d, %s each)\n", label,
           bound ? "at most " : "", total_s, evaluations, width, height, each_s);
  fflush (stderr);
  return total;
}

/* From the steps timed so far; before the first, from the estimate. */
static double
time_left (CliProgress *p, int done, int total, double elapsed)
{
  if (done > 0)
    return elapsed / done * (total - done);
  return p->estimate > 0 ? MAX (p->estimate - elapsed, 0) : -1;
}

static void
draw_bar (CliProgress *p, int done, int total, double elapsed)
{
  char bar[BAR_WIDTH + 1];
  int filled = total > 0 ? (int) ((gint64) done * BAR_WIDTH / total) : BAR_WIDTH;
  for (int i = 0; i < BAR_WIDTH; i++)
    bar[i] = i < filled ? '#' : '.';
  bar[BAR_WIDTH] = '\0';

  g_autofree char *el = cli_format_seconds (elapsed);
  g_autofree char *line = NULL;
  double left = time_left (p, done, total, elapsed);
  if (done < total && left >= 0)
    {
      g_autofree char *eta = cli_format_seconds (left);
      line = g_strdup_printf ("%s [%s] %d/%d  %s  ~%s left", p->label, bar, done, total, el,
                              eta);
    }
  else
    line = g_strdup_printf ("%s [%s] %d/%d  %s", p->label, bar, done, total, el);

  int len = (int) strlen (line);
  /* Pad with spaces over what a longer previous line left on screen. */
  fprintf (stderr, "\r%s%*s", line, p->last_len > len ? p->last_len - len : 0, "");
  fflush (stderr);
  p->last_len = len;
  p->line_open = TRUE;
}

static void
print_line (CliProgress *p, int done, int total, double elapsed)
{
  g_autofree char *el = cli_format_seconds (elapsed);
  double left = time_left (p, done, total, elapsed);
  if (done < total && left >= 0)
    {
      g_autofree char *eta = cli_format_seconds (left);
      fprintf (stderr, "%s: step %d/%d (%s, ~%s left)\n", p->label, done, total, el, eta);
    }
  else
    fprintf (stderr, "%s: step %d/%d (%s)\n", p->label, done, total, el);
  fflush (stderr);
}

void
cli_progress_update (int done, int total, gpointer user_data)
{
  CliProgress *p = user_data;
  if (cli_sigint_received ())
    {
      /* Checked by the library before the next step. */
      if (p->cancellable)
        g_cancellable_cancel (p->cancellable);
      return;
    }
  if (p->quiet || total <= 0)
    return;

  gint64 now = g_get_monotonic_time ();
  double elapsed = (now - p->start_us) / 1e6;
  if (p->tty)
    {
      if (done >= total || done <= 1 || now - p->last_draw_us >= REDRAW_INTERVAL_US)
        {
          draw_bar (p, done, total, elapsed);
          p->last_draw_us = now;
        }
      if (done >= total)
        cli_progress_end (p);
    }
  else
    {
      /* Every step up to PLAIN_LINES steps, else each time another tenth is done. */
      gboolean show = total <= PLAIN_LINES || done >= total
                      || (gint64) done * PLAIN_LINES / total
                           != (gint64) (done - 1) * PLAIN_LINES / total;
      if (show)
        print_line (p, done, total, elapsed);
    }
}

void
cli_progress_attach (CliProgress *p, DdimRunOptions *o)
{
  o->progress = cli_progress_update;
  o->progress_data = p;
  o->cancellable = p->cancellable;
}
