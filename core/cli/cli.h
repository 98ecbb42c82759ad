/* Shared declarations of the `ddim` command-line tool. */
#pragma once

#include <gio/gio.h>
#include <glib.h>

#include "ddim/error.h"
#include "ddim/model.h"
#include "ddim/sampler.h"
#include "ddim/schedule.h"

G_BEGIN_DECLS

/* Exit statuses of every command. */
enum {
  CLI_EXIT_OK = 0,
  CLI_EXIT_ERROR = 1,      /* the command failed (message on stderr) */
  CLI_EXIT_USAGE = 2,      /* bad command line */
  CLI_EXIT_CANCELLED = 130 /* interrupted with Ctrl-C; nothing written */
};

/* A command's entry point: argv[0] is the command name, as for a program. */
int cli_cmd_info (int argc, char **argv);
int cli_cmd_eval (int argc, char **argv);
int cli_cmd_sample (int argc, char **argv);
int cli_cmd_invert (int argc, char **argv);
int cli_cmd_reconstruct (int argc, char **argv);
int cli_cmd_bench (int argc, char **argv);
int cli_cmd_edit (int argc, char **argv);
int cli_cmd_directions (int argc, char **argv);
int cli_cmd_interpolate (int argc, char **argv);
int cli_cmd_eval_inversion (int argc, char **argv);
int cli_cmd_train (int argc, char **argv);
int cli_cmd_train_encoder (int argc, char **argv);
int cli_cmd_eval_classifier (int argc, char **argv);
int cli_cmd_convert (int argc, char **argv);

/* Parses the options of command @cmd. Returns TRUE when the command should
 * go on; otherwise *exit_code says how to exit (--help is handled by GLib,
 * which prints the help and exits 0 itself). */
gboolean cli_parse_options (GOptionContext *context, const char *cmd, int *argc, char ***argv,
                            int *exit_code);

/* Prints "ddim CMD: message" and a hint to run --help; returns
 * CLI_EXIT_USAGE. */
int cli_usage_error (const char *cmd, const char *format, ...) G_GNUC_PRINTF (2, 3);
/* Prints "ddim CMD: message" for @error (may be NULL: "unknown error");
 * returns CLI_EXIT_CANCELLED for a cancelled run, CLI_EXIT_ERROR otherwise. */
int cli_error (const char *cmd, const GError *error);
/* Prints "ddim CMD: message"; returns CLI_EXIT_ERROR. */
int cli_fail (const char *cmd, const char *format, ...) G_GNUC_PRINTF (2, 3);

/* 1234567 -> "1,234,567" (g_free). */
char *cli_group_thousands (guint64 value);

/* TRUE when @path ends in @suffix (ASCII, case-insensitive). */
gboolean cli_has_suffix (const char *path, const char *suffix);
/* Checks that option @what has a value in [min, max]; otherwise reports a
 * usage error and sets *exit_code. */
gboolean cli_check_range (const char *cmd, const char *what, int value, int min, int max,
                          int *exit_code);

/* The embedded default model's folder (g_free): $DDIM_MODEL when set, else
 * the installed copy (DATADIR/ddim-inversion/models/fashion-mnist-32), else
 * the source tree's (a build run in place). NULL with @error when none of
 * them is a model folder (config.json, config.yml or model_flags.txt). */
char *cli_default_model_dir (GError **error);

/* MODEL is optional in every command: a command taking @n_after positional
 * arguments after MODEL gets the default model inserted as argv[1] when it
 * was given exactly @n_after (or, with @n_after < 0, a variable number,
 * when argv[1] is not a model folder). *argv then points into
 * *owned (g_strfreev). Returns FALSE with the error reported and *exit_code
 * set when the default model is needed but missing. */
gboolean cli_model_argument (const char *cmd, int n_after, int *argc, char ***argv, GStrv *owned,
                             int *exit_code);

/* The commands that take options and MODEL alone: parses the options,
 * inserts the default model when MODEL is left out and refuses further
 * arguments; afterwards (*argv)[1] is the model folder. Returns FALSE with
 * *exit_code set (the error reported) when the command should stop. */
gboolean cli_parse_model_only (GOptionContext *context, const char *cmd, int *argc, char ***argv,
                               GStrv *owned, int *exit_code);

/* Loads a model folder, with the error already reported on failure. */
DdimModel *cli_load_model (const char *cmd, const char *folder, int *exit_code);

/* Output files of sample and reconstruct: PNG (one image, or a grid of
 * ceil(sqrt(n)) columns for several) or safetensors. */
typedef enum {
  CLI_OUTPUT_PNG,
  CLI_OUTPUT_SAFETENSORS
} CliOutputKind;

/* From the file name (.png or .safetensors, any case); a usage error
 * otherwise. */
gboolean cli_output_kind (const char *cmd, const char *path, CliOutputKind *kind,
                          int *exit_code);
/* Writes @n images [C,H,W] (consecutive in @data) atomically. For
 * safetensors: one F32 tensor @tensor_name [n, C, H, W] plus @metadata
 * (key, value, ..., NULL; may be NULL). */
gboolean cli_save_images (const char *path, CliOutputKind kind, const char *tensor_name, int n,
                          int channels, int height, int width, const float *data,
                          const char *const *metadata, GError **error);

/* ddim_sample and ddim_invert. */
typedef gboolean (*CliRunFunc) (DdimUNet *unet, const DdimSchedule *schedule, float *x, int n,
                                int height, int width, const DdimRunOptions *options,
                                GError **error);
/* Runs @func with progress on stderr (labelled @label, none if @quiet),
 * after an estimate of its time (cli_estimate_run: n x steps evaluations),
 * and Ctrl-C cancelling it. Returns CLI_EXIT_OK, or the exit code after
 * reporting the error (CLI_EXIT_CANCELLED when interrupted, even after the
 * last step, so that nothing gets written). */
int cli_run (const char *cmd, const char *label, CliRunFunc func, DdimModel *model, float *x,
             int n, int height, int width, DdimRunOptions *options, gboolean quiet);

/* The same for any long call: @func receives @data and the options with
 * progress and cancellable attached. */
typedef gboolean (*CliRunWithFunc) (gpointer data, DdimRunOptions *options, GError **error);
int cli_run_with (const char *cmd, const char *label, CliRunWithFunc func, gpointer data,
                  DdimRunOptions *options, gboolean quiet);
/* The same with the expected seconds of the run (cli_estimate_run, <= 0:
 * none) for the time left before the first step is done. */
int cli_run_with_estimate (const char *cmd, const char *label, CliRunWithFunc func,
                           gpointer data, DdimRunOptions *options, gboolean quiet,
                           double estimate);

/* Long library calls other than ddim_sample and ddim_invert (cmd-edit.c):
 * @func gets the progress callback, its data and the cancellable to pass
 * on. Same contract as cli_run. */
typedef gboolean (*CliJobFunc) (gpointer data, DdimProgressFunc progress, gpointer progress_data,
                                GCancellable *cancellable, GError **error);
int cli_run_job (const char *cmd, const char *label, CliJobFunc func, gpointer data,
                 gboolean quiet);
int cli_run_job_estimate (const char *cmd, const char *label, CliJobFunc func, gpointer data,
                          gboolean quiet, double estimate);

/* The latent x_T an edit, interpolation or discovery starts from
 * (cmd-edit.c). */
typedef struct {
  float      *x;            /* [C, H, W], owned */
  int         height, width;
  int         steps;
  DdimSpacing spacing;
  gboolean    from_latent;  /* a latent file; else an image, inverted here */
} CliSource;

typedef struct {
  int         steps;        /* 0: the latent's, or 50 for images */
  const char *spacing;      /* NULL: the latent's, or the scheduler's */
  const char *eps_at;       /* NULL: the default */
  gboolean    native;       /* images keep their size */
  gboolean    quiet;
} CliSourceArgs;

/* @path: a latent written by 'ddim invert' (.safetensors with tensor
 * 'latent'), a .safetensors with 'x0' [1, C, H, W], or an image (resized
 * to the model's sample_size unless native). Anything but a latent is
 * inverted with progress on stderr. Returns CLI_EXIT_OK, or the exit code
 * after reporting the error. */
int  cli_source_load (const char *cmd, DdimModel *model, const char *path,
                      const CliSourceArgs *args, CliSource *src);
void cli_source_clear (CliSource *src);

/* ---- semantic-edit evaluation (cmd-eval-edit.c) ---- */

int cli_cmd_eval_edit (int argc, char **argv);

/* Parses "S" or "S1,S2,..." (finite numbers) into @out (double)
 * (cmd-edit.c). */
gboolean cli_parse_strengths (const char *text, GArray *out, GError **error);

G_END_DECLS
