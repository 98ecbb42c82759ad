/* Layer structures of the UNet, pointing into one flat parameter array. */
#pragma once

#include "ddim/unet.h"
#include "ops/arena.h"
#include "ops/ops.h"

typedef struct {
  float *w, *b;
  int    cout, cin, k;
} DdimConvLayer;

typedef struct {
  float *w, *b;
  int    out, in;
} DdimLinearLayer;

typedef struct {
  float *gamma, *beta;
  int    channels, groups;
} DdimNormLayer;

typedef struct {
  DdimNormLayer   norm1, norm2;
  DdimConvLayer   conv1, conv2, shortcut;   /* shortcut.w NULL when cin == cout */
  DdimLinearLayer temb_proj;                /* out = cout, or 2*cout with scale_shift */
  int             cin, cout;
  float           output_scale;
} DdimResnetLayer;

typedef struct {
  gboolean        has_norm;
  DdimNormLayer   norm;
  DdimLinearLayer q, k, v, o;
  int             channels, heads;
} DdimAttentionLayer;

#define DDIM_MAX_LAYERS_PER_BLOCK 17

typedef struct {
  int                n_resnets;
  DdimResnetLayer    resnets[DDIM_MAX_LAYERS_PER_BLOCK];
  gboolean           has_attention;
  DdimAttentionLayer attentions[DDIM_MAX_LAYERS_PER_BLOCK];
  gboolean           has_resample;          /* downsampler / upsampler */
  DdimConvLayer      resample;
  int                channels;              /* output channels */
} DdimBlock;

typedef struct {
  char  *name;
  int    ndim;
  gint64 shape[4];
  gsize  offset;      /* floats into params */
  gsize  size;        /* floats */
} DdimParamEntry;

struct _DdimUNet {
  DdimUNetConfig  config;
  float          *params;        /* all parameters, flat */
  gsize           n_params;
  GArray         *entries;       /* DdimParamEntry, in table order */
  GHashTable     *by_name;       /* name -> index + 1 */

  DdimConvLayer   conv_in, conv_out;
  DdimLinearLayer temb1, temb2;
  DdimBlock       down[DDIM_MAX_LEVELS];
  DdimResnetLayer mid_resnets[2];
  gboolean        mid_has_attention;
  DdimAttentionLayer mid_attention;
  DdimBlock       up[DDIM_MAX_LEVELS];
  DdimNormLayer   norm_out;

  DdimArena       arena;
};

/* Builds the parameter table and the layer structure for @config, with
 * storage allocated (zeroed). */
DdimUNet *ddim_unet_alloc (const DdimUNetConfig *config);
