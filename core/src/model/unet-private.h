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

/* A resnet that changes resolution (guided-diffusion ResBlock up/down):
 * after norm1 + SiLU the branch, and the input for the shortcut, are
 * resampled, and the rest runs at the new size. */
typedef enum {
  DDIM_RESNET_SAME,
  DDIM_RESNET_DOWN,       /* 2x2 average pooling */
  DDIM_RESNET_UP          /* nearest 2x */
} DdimResnetResample;

typedef struct {
  DdimNormLayer   norm1, norm2;
  DdimConvLayer   conv1, conv2, shortcut;   /* shortcut.w NULL when cin == cout */
  DdimLinearLayer temb_proj;                /* out = cout, or 2*cout with scale_shift */
  int             cin, cout;
  float           output_scale;
  DdimResnetResample resample;
} DdimResnetLayer;

typedef struct {
  gboolean        has_norm;
  DdimNormLayer   norm;
  DdimLinearLayer q, k, v, o;
  int             channels, heads;
} DdimAttentionLayer;

#define DDIM_MAX_LAYERS_PER_BLOCK 17

/* A block's downsampler / upsampler (resampler.c). */
typedef enum {
  DDIM_RESAMPLER_CONV,    /* strided conv down; nearest + conv up */
  DDIM_RESAMPLER_POOL,    /* 2x2 average pooling down; nearest up (no parameters) */
  DDIM_RESAMPLER_RESNET   /* a resampling resnet */
} DdimResamplerKind;

typedef struct {
  int                n_resnets;
  DdimResnetLayer    resnets[DDIM_MAX_LAYERS_PER_BLOCK];
  gboolean           has_attention;
  DdimAttentionLayer attentions[DDIM_MAX_LAYERS_PER_BLOCK];
  gboolean           has_resample;          /* downsampler / upsampler */
  DdimResamplerKind  resample_kind;
  DdimConvLayer      resample;              /* DDIM_RESAMPLER_CONV */
  DdimResnetLayer    resample_resnet;       /* DDIM_RESAMPLER_RESNET */
  int                channels;              /* output channels */
} DdimBlock;

/* What a forward keeps for the backward pass: every layer's input and the
 * few intermediates that are not cheap to recompute. Buffers live in
 * @store, which nothing else uses, so they stay valid until the tape is
 * freed or reused. */
typedef struct {
  const float *x;        /* resnet input ([h, skip] for up blocks) */
  const float *xr;       /* the input resampled (resampling resnets only) */
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
  DdimUnitSave down_resampler[DDIM_MAX_LEVELS];   /* .x input, .out output */
  DdimUnitSave mid[2];         /* mid[0].attn_in: the mid attention input */
  float       *hspace;         /* mid-block output */
  DdimUnitSave up[DDIM_MAX_LEVELS][DDIM_MAX_LAYERS_PER_BLOCK];
  DdimUnitSave up_resampler[DDIM_MAX_LEVELS];
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
  /* The h-shifted decoder of ddim_unet_run_pair when it runs beside the
   * plain one (two threads: one decoder each). */
  DdimArena       pair_arena;
  DdimUNetTape   *tape;          /* created on the first backward */
  /* cost.c: seconds per FLOP measured with cost_threads threads (0: not yet). */
  double          cost_dense_rate, cost_attention_rate;
  int             cost_threads;
};

/* A forward's context: where the units keep what they return (the
 * tape's store, or the scratch arena on the fast path) and the activated
 * time embedding every resnet projects. */
typedef struct {
  DdimUNet     *u;
  DdimArena    *scratch;
  DdimUNetTape *tape;     /* NULL on the fast path */
  int           n;
  const float  *temb_act;
  /* A resnet input the fast path may overwrite (the decoder's [h, skip],
   * dead after the resnet): its norm1 then runs in place. */
  float        *disposable;
} DdimRun;

static inline float *
ddim_run_keep_alloc (DdimRun *r, gsize n_floats)
{
  return ddim_arena_alloc (r->tape ? &r->tape->store : r->scratch, n_floats);
}

/* A backward's context. */
typedef struct {
  DdimUNet     *u;
  DdimArena    *scratch;
  float        *grad_params;  /* NULL: parameter gradients not wanted */
  const float  *temb_act;     /* the forward's activated time embedding */
  float        *d_temb_act;   /* its gradient, accumulated */
  int           n;
} DdimBackRun;

/* The gradient slot of a parameter, or NULL. */
static inline float *
ddim_back_grad (const DdimBackRun *b, const float *param)
{
  if (b->grad_params == NULL || param == NULL)
    return NULL;
  return b->grad_params + (param - b->u->params);
}

/* resnet.c: one ResnetBlock2D (optionally resampling). Sizes are the
 * input's; the output is at ddim_resnet_out_size. */
void   ddim_resnet_out_size (const DdimResnetLayer *r, int h, int w, int *oh, int *ow);
/* Returns its output, allocated with ddim_run_keep_alloc. With a tape, @save
 * receives what the backward needs. */
float *ddim_resnet_forward (DdimRun *run, const DdimResnetLayer *r, const float *x, int h, int w,
                            DdimUnitSave *save);
/* @dout: gradient of the output (modified); @dx receives the input's. */
void   ddim_resnet_backward (DdimBackRun *b, const DdimResnetLayer *r, const DdimUnitSave *s,
                             int h, int w, float *dout, float *dx);
/* Tangent @dx of the input to @dout of the output (time terms constant). */
void   ddim_resnet_jvp (DdimUNet *u, const DdimResnetLayer *r, const DdimUnitSave *s, int n,
                        int h, int w, const float *dx, float *dout, DdimArena *scratch);

/* resampler.c: a block's downsampler (@down) or upsampler at input size
 * @h x @w; *oh, *ow receive the output size. The forward returns its
 * output, allocated with ddim_run_keep_alloc (scratch may lie below it). */
void   ddim_resampler_out_size (const DdimUNet *u, const DdimBlock *blk, gboolean down, int h,
                                int w, int *oh, int *ow);
float *ddim_resampler_forward (DdimRun *run, const DdimBlock *blk, gboolean down,
                               const float *x, int h, int w, DdimUnitSave *save);
void   ddim_resampler_backward (DdimBackRun *b, const DdimBlock *blk, gboolean down,
                                const DdimUnitSave *s, int h, int w, float *dout, float *dx);
void   ddim_resampler_jvp (DdimUNet *u, const DdimBlock *blk, gboolean down,
                           const DdimUnitSave *s, int n, int h, int w, const float *dx,
                           float *dout, DdimArena *scratch);
double ddim_resampler_macs (const DdimUNet *u, const DdimBlock *blk, gboolean down, int h, int w);

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
