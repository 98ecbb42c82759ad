/* Layer structures of the UNet, pointing into one flat parameter array. */
#pragma once

#include "ddim/unet.h"
#include "ops/arena.h"
#include "ops/ops.h"
#include "ops/parallel.h"

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

/* What a forward keeps for the backward pass: every layer's input and the
 * few intermediates that are not cheap to recompute. Buffers live in
 * @store, which nothing else uses, so they stay valid until the tape is
 * freed or reused. */
typedef struct {
  const float *x;        /* resnet input ([h, skip] for up blocks) */
  float       *h1;       /* conv1 output plus time term: the input of norm2 */
  float       *tp;       /* time_emb_proj output */
  float       *t1, *t2;  /* inputs of conv1 and conv2 (after norm and SiLU) */
  float       *attn_in;  /* attention input (NULL without attention) */
  float       *out;      /* the unit's output (after attention) */
} DdimUnitSave;

typedef struct {
  DdimArena    store;
  int          n, height, width;
  const float *input;          /* model input after center_input_sample */
  float       *t;              /* timesteps [n] */
  float       *emb, *temb1_pre, *temb2_pre, *temb_act;
  float       *conv_in_out;
  DdimUnitSave down[DDIM_MAX_LEVELS][DDIM_MAX_LAYERS_PER_BLOCK];
  float       *down_resample_out[DDIM_MAX_LEVELS];
  DdimUnitSave mid[2];         /* mid[0].attn_in: the mid attention input */
  float       *hspace;         /* mid-block output */
  DdimUnitSave up[DDIM_MAX_LEVELS][DDIM_MAX_LAYERS_PER_BLOCK];
  float       *up_resample_out[DDIM_MAX_LEVELS];
  float       *final_in;       /* input of the output norm */
} DdimUNetTape;

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

  DdimArena       arena;         /* activations; its parallel is ours */
  DdimParallel   *parallel;
  DdimArena       grad_arena;    /* gradients of the backward pass */
  DdimUNetTape   *tape;          /* created on the first backward */
  /* cost.c: seconds per FLOP measured with cost_threads threads (0: not yet). */
  double          cost_dense_rate, cost_attention_rate;
  int             cost_threads;
};

/* The forward pass; with @tape, everything the backward needs is kept in
 * it (and nothing is moved in place). @hspace_delta, when not NULL, is
 * added to the mid-block output [n, C_mid, h/f, w/f] (with a tape,
 * tape->hspace keeps h before the delta). */
void ddim_unet_run (DdimUNet *u, const float *x, int n, int height, int width, const float *t,
                    const float *hspace_delta, float *out, DdimUNetTape *tape);

/* Receives a copy of h [n, C_mid, h, w] (@count floats) to shift in place. */
typedef void (*DdimHspaceShiftFunc) (float *h, gsize count, gpointer data);

/* The encoder half once (time embedding, down and mid blocks) and the
 * decoder half twice: with h as is into @out_plain (bit for bit what
 * ddim_unet_run gives without a delta) and, when @shift and @out_shifted
 * are not NULL, with h shifted by @shift into @out_shifted. @hspace
 * receives h (unshifted) when not NULL. Fast path only (no tape). */
void ddim_unet_run_pair (DdimUNet *u, const float *x, int n, int height, int width,
                         const float *t, DdimHspaceShiftFunc shift, gpointer shift_data,
                         float *hspace, float *out_plain, float *out_shifted);

/* The encoder half alone: h into @hspace (may be NULL); with @tape, the
 * encoder's activations are kept in it (the decoder's entries are stale). */
void ddim_unet_run_encoder (DdimUNet *u, const float *x, int n, int height, int width,
                            const float *t, float *hspace, DdimUNetTape *tape);

/* The tape of @u, created on first use. */
DdimUNetTape *ddim_unet_get_tape (DdimUNet *u);

/* Attention layer -> op parameters. */
void ddim_unet_attention_params (DdimUNet *u, const DdimAttentionLayer *a, DdimAttentionParams *p);

/* Builds the parameter table and the layer structure for @config, with
 * storage allocated (zeroed). */
DdimUNet *ddim_unet_alloc (const DdimUNetConfig *config);
