/* Progress reporting on stderr and Ctrl-C handling for long runs.
 *
 * On a terminal, a one-line bar with the elapsed time and the time left,
 * redrawn with '\r'; otherwise (a log file, a pipe) plain lines such as
 *   invert: step 3/10 (2.1 s, ~4.9 s left)
 * at most about ten per run (every step for runs of up to ten steps). */
#pragma once

#include <gio/gio.h>
#include <glib.h>

#include "ddim/sampler.h"
#include "ddim/unet.h"

G_BEGIN_DECLS

typedef struct _CliProgress CliProgress;

/* @label names the run ("invert"). With @quiet nothing is printed, but
 * Ctrl-C still cancels @cancellable (may be NULL). The clock starts here. */
CliProgress *cli_progress_new (const char *label, GCancellable *cancellable, gboolean quiet);
/* Ends the line of a bar if one is on screen; idempotent. Call it before
 * printing anything else to stderr after a run. */
void         cli_progress_end (CliProgress *progress);
void         cli_progress_free (CliProgress *progress);
/* Seconds since cli_progress_new. */
double       cli_progress_elapsed (CliProgress *progress);

/* The expected seconds of the whole run (cli_estimate_run; <= 0: none),
 * shown as the time left until a step has been timed. */
void         cli_progress_set_estimate (CliProgress *progress, double seconds);

/* The estimated seconds of @evaluations forward passes of @unet at
 * @height x @width (cost.h; the first estimate for a model times a small
 * pass), printed on stderr before a run starts:
 *   invert: estimated 41 s (50 model evaluations at 512x512, 0.8 s each)
 * Returns -1 without estimating when @quiet, or when the run is short
 * anyway (under CLI_ESTIMATE_MIN_FLOPS: calibrating would cost a noticeable
 * part of it). @bound says the count is an upper bound ("at most"). */
#define CLI_ESTIMATE_MIN_FLOPS 5e10
double       cli_estimate_run (const char *label, DdimUNet *unet, int height, int width,
                               double evaluations, gboolean bound, gboolean quiet);

/* A DdimProgressFunc: @user_data is the CliProgress. It also turns a
 * received SIGINT into g_cancellable_cancel, which the library checks
 * before each step. */
void cli_progress_update (int done, int total, gpointer user_data);
/* Sets options->progress, ->progress_data and ->cancellable. */
void cli_progress_attach (CliProgress *progress, DdimRunOptions *options);

/* SIGINT handling around a run: the first Ctrl-C sets a flag (and prints a
 * note that the run stops after the current step), the handler then resets
 * itself so that a second Ctrl-C kills the process at once. @cmd is used in
 * the note ("ddim CMD: ..."). */
void     cli_sigint_install (const char *cmd);
/* Restores the default action. */
void     cli_sigint_restore (void);
gboolean cli_sigint_received (void);

/* "2.1 s", "3m05s", "1h02m". */
char    *cli_format_seconds (double seconds);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (CliProgress, cli_progress_free)

G_END_DECLS
