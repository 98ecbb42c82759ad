/* What a model evaluation costs, known before running it: so the CLI and
 * the plug-in can show an estimate with the progress and warn before a run
 * that would take minutes. */
#pragma once

#include <glib.h>

#include "ddim/config.h"
#include "ddim/unet.h"

G_BEGIN_DECLS

/* Floating-point operations of one forward pass of batch 1 at
 * @height x @width pixels (convolutions, linear layers, attention). */
double ddim_unet_forward_flops (const DdimUNetConfig *config, int height, int width);

/* Estimated wall-clock seconds of one forward pass of @unet at
 * @height x @width on this machine with @unet's thread count. The first call
 * on a @unet calibrates (times a pass at a small size, well under a second
 * for the embedded model) and the result is kept in @unet; later calls cost
 * nothing (a new thread count, ddim_unet_set_n_threads, calibrates again).
 * The calibration runs @unet: not while another thread uses it. Negative
 * on failure (never expected). */
double ddim_unet_estimate_forward_seconds (DdimUNet *unet, int height, int width);

G_END_DECLS
