/* The parts of 'ddim directions' kept in their own files (cmd-directions.c
 * dispatches). */
#pragma once

#include <glib.h>

#include "ddim/directions.h"
#include "ddim/fit.h"
#include "ddim/model.h"

G_BEGIN_DECLS

/* directions fit --by-class (cmd-directions-class.c): one direction per
 * Fashion-MNIST class of @data ("fashion-mnist" or "fashion-mnist-test"),
 * fitted on the first @per_class images of every class with @options (the
 * run, interval, method and pooling 'fit' parsed); @classes ("sneaker,bag",
 * NULL: all) limits the classes fitted. Returns the directions, or NULL
 * with the error reported and *exit_code set. */
DdimDirectionSet *cli_fit_class_directions (const char *cmd, DdimModel *model, const char *data,
                                            int per_class, const char *classes,
                                            DdimFitOptions *options, gboolean quiet,
                                            int *exit_code);

/* MODEL folder -> MODEL/directions.safetensors; a file stays as is
 * (g_free). */
char *cli_directions_path (const char *arg);

/* directions merge and set-range (cmd-directions-file.c). */
int cli_directions_merge (int argc, char **argv);
int cli_directions_set_range (int argc, char **argv);

G_END_DECLS
