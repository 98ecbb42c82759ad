/* UNet2DModel forward pass (diffusers' layout and skip order).
 *
 * Memory: every activation comes from the model's arena in LIFO order. The
 * down pass leaves its skips stacked; each up-block layer pops the top skip,
 * computes on top of the stack and moves its result down into the popped
 * skip's place, so the stack never holds more than the skips plus one
 * layer's working set.
 *
 * The pass is split where h-space sits: the encoder half (time embedding,
 * down and mid blocks) leaves the skips and h, the decoder half consumes
 * them. h-space editing runs the encoder once and the decoder twice
 * (ddim_unet_run_pair); the JVP runs the encoder alone. */
#include <math.h>
#include <string.h>

#include "ddim/error.h"
#include "model/unet-private.h"

typedef struct {
  float *data;
  gsize  mark;       /* arena offset where it starts (fast path) */
  int    channels;
  gsize  count;      /* floats, n * channels * h * w (skips and h) */
} Activation;

/* Where a forward puts what it keeps: the scratch arena (fast path, moved
 * and reused) or the tape's store (kept for the backward). */
typedef DdimRun Run;

static float *
keep_alloc (Run *r, gsize n_floats)
{
  return ddim_run_keep_alloc (r, n_floats);
}

/* One ResnetBlock2D (resnet.c). Allocates its output (kept) and returns it. */
static float *
resnet_forward (Run *run, const DdimResnetLayer *r, const float *x, int h, int w,
                DdimUnitSave *save)
{
  return ddim_resnet_forward (run, r, x, h, w, save);
}

void
ddim_unet_attention_params (DdimUNet *u, const DdimAttentionLayer *a, DdimAttentionParams *p)
{
  *p = (DdimAttentionParams) {
    .gn_gamma = a->has_norm ? a->norm.gamma : NULL,
    .gn_beta = a->has_norm ? a->norm.beta : NULL,
    .gn_groups = a->has_norm ? a->norm.groups : 0,
    .gn_eps = (float) u->config.norm_eps,
    .q_w = a->q.w, .q_b = a->q.b, .k_w = a->k.w, .k_b = a->k.b,
    .v_w = a->v.w, .v_b = a->v.b, .o_w = a->o.w, .o_b = a->o.b,
    .heads = a->heads,
    .rescale = 1.f,
  };
}

/* Attention in place on @x; with a tape, its input is kept first. */
static void
attention_forward (Run *run, const DdimAttentionLayer *a, float *x, int hw, DdimUnitSave *save)
{
  DdimAttentionParams p;
  ddim_unet_attention_params (run->u, a, &p);
  if (run->tape && save)
    {
      gsize count = (gsize) run->n * a->channels * hw;
      save->attn_in = keep_alloc (run, count);
      memcpy (save->attn_in, x, count * sizeof (float));
    }
  ddim_attention_forward (x, run->n, a->channels, hw, &p, run->scratch);
}

gboolean
ddim_unet_check_size (DdimUNet *unet, int height, int width, GError **error)
{
  int f = ddim_unet_config_size_factor (&unet->config);
  if (height <= 0 || width <= 0 || height % f != 0 || width % f != 0)
    {
      g_set_error (error, DDIM_ERROR, DDIM_ERROR_INVALID,
                   "image size %dx%d is not supported by this model: width and height "
                   "must be positive multiples of %d", width, height, f);
      return FALSE;
    }
  return TRUE;
}

gboolean
ddim_unet_forward (DdimUNet *u, const float *x, int n, int height, int width,
                   const float *t, float *out, GError **error)
{
  g_return_val_if_fail (u != NULL && x != NULL && t != NULL && out != NULL && n > 0, FALSE);
  if (!ddim_unet_check_size (u, height, width, error))
    return FALSE;
  ddim_unet_run (u, x, n, height, width, t, NULL, out, NULL);
  return TRUE;
}

#define MAX_SKIPS (DDIM_MAX_LEVELS * (DDIM_MAX_LAYERS_PER_BLOCK + 1) + 1)

/* What the encoder half leaves for the decoder half: the skips in push
 * order and the mid-block output h, all in the scratch arena (fast path)
 * or the tape's store. */
typedef struct {
  Activation skips[MAX_SKIPS];
  int        n_skips;
  Activation cur;     /* h [n, C_mid, h, w] */
  int        h, w;
} Encoded;

/* Time embedding, down blocks and mid block. Sets run->temb_act, which the
 * decoder's resnets project as well. */
static void
encoder_run (Run *run, const float *x, int height, int width, const float *t, Encoded *e)
{
  DdimUNet *u = run->u;
  const DdimUNetConfig *c = &u->config;
  DdimArena *A = run->scratch;
  DdimUNetTape *tape = run->tape;
  int n = run->n;
  int L = c->n_levels;
  int temb_dim = ddim_unet_config_temb_dim (c);
  int ch0 = c->block_out_channels[0];

  /* Time embedding, and its SiLU that every resnet projects. */
  float *emb = keep_alloc (run, (gsize) n * ch0);
  float *t1 = keep_alloc (run, (gsize) n * temb_dim);
  float *t1_act = keep_alloc (run, (gsize) n * temb_dim);
  float *t2 = keep_alloc (run, (gsize) n * temb_dim);
  float *temb_act = keep_alloc (run, (gsize) n * temb_dim);
  ddim_timestep_embedding_forward (t, n, ch0, c->flip_sin_to_cos, (float) c->freq_shift, emb);
  ddim_linear_forward (emb, n, ch0, u->temb1.w, u->temb1.b, temb_dim, t1);
  memcpy (t1_act, t1, sizeof (float) * n * temb_dim);
  ddim_silu_forward (t1_act, (gsize) n * temb_dim);
  ddim_linear_forward (t1_act, n, temb_dim, u->temb2.w, u->temb2.b, temb_dim, t2);
  memcpy (temb_act, t2, sizeof (float) * n * temb_dim);
  ddim_silu_forward (temb_act, (gsize) n * temb_dim);
  run->temb_act = temb_act;

  const float *input = x;
  if (c->center_input_sample)
    {
      gsize cnt = (gsize) n * c->in_channels * height * width;
      float *centred = keep_alloc (run, cnt);
      for (gsize i = 0; i < cnt; i++)
        centred[i] = 2.f * x[i] - 1.f;
      input = centred;
    }
  if (tape)
    {
      tape->input = input;
      tape->t = keep_alloc (run, n);
      memcpy (tape->t, t, sizeof (float) * n);
      tape->emb = emb;
      tape->temb1_pre = t1;
      tape->temb2_pre = t2;
      tape->temb_act = temb_act;
    }

  Activation *skips = e->skips;
  int n_skips = 0;
  int h = height, w = width;
  Activation cur = { NULL, ddim_arena_mark (A), ch0, (gsize) n * ch0 * h * w };
  cur.data = keep_alloc (run, cur.count);
  ddim_conv2d_forward (input, n, c->in_channels, h, w, u->conv_in.w, u->conv_in.b, ch0, 3, 1, 1, 1,
                       cur.data, A);
  if (tape)
    tape->conv_in_out = cur.data;
  skips[n_skips++] = cur;

  for (int i = 0; i < L; i++)
    {
      const DdimBlock *blk = &u->down[i];
      for (int j = 0; j < blk->n_resnets; j++)
        {
          DdimUnitSave *save = tape ? &tape->down[i][j] : NULL;
          Activation next = { NULL, ddim_arena_mark (A), blk->channels,
                              (gsize) n * blk->channels * h * w };
          next.data = resnet_forward (run, &blk->resnets[j], cur.data, h, w, save);
          if (blk->has_attention)
            attention_forward (run, &blk->attentions[j], next.data, h * w, save);
          cur = next;
          skips[n_skips++] = cur;
        }
      if (blk->has_resample)
        {
          int oh, ow;
          ddim_resampler_out_size (u, blk, TRUE, h, w, &oh, &ow);
          Activation next = { NULL, ddim_arena_mark (A), blk->channels,
                              (gsize) n * blk->channels * oh * ow };
          next.data = ddim_resampler_forward (run, blk, TRUE, cur.data, h, w,
                                              tape ? &tape->down_resampler[i] : NULL);
          h = oh;
          w = ow;
          cur = next;
          skips[n_skips++] = cur;
        }
    }

  /* Mid block. Its output is h-space. */
  float *m = resnet_forward (run, &u->mid_resnets[0], cur.data, h, w, tape ? &tape->mid[0] : NULL);
  if (u->mid_has_attention)
    attention_forward (run, &u->mid_attention, m, h * w, tape ? &tape->mid[0] : NULL);
  cur.mark = ddim_arena_mark (A);
  cur.data = resnet_forward (run, &u->mid_resnets[1], m, h, w, tape ? &tape->mid[1] : NULL);
  cur.count = (gsize) n * cur.channels * h * w;
  if (tape)
    tape->hspace = cur.data;
  e->n_skips = n_skips;
  e->cur = cur;
  e->h = h;
  e->w = w;
}

/* Up blocks and the output layers, consuming @skips (the fast path moves
 * each result into the popped skip's place, so the skips are gone after). */
static void
decoder_run (Run *run, Activation *skips, int n_skips, Activation cur, int h, int w, float *out)
{
  DdimUNet *u = run->u;
  const DdimUNetConfig *c = &u->config;
  DdimArena *A = run->scratch;
  DdimUNetTape *tape = run->tape;
  int n = run->n;
  int L = c->n_levels;
  int ch0 = c->block_out_channels[0];

  for (int i = 0; i < L; i++)
    {
      const DdimBlock *blk = &u->up[i];
      for (int j = 0; j < blk->n_resnets; j++)
        {
          Activation skip = skips[--n_skips];
          gsize hw = (gsize) h * w;
          int cat_c = cur.channels + skip.channels;
          float *cat;
          if (tape)
            {
              cat = keep_alloc (run, (gsize) n * cat_c * hw);
              for (int b = 0; b < n; b++)
                {
                  memcpy (cat + (gsize) b * cat_c * hw, cur.data + (gsize) b * cur.channels * hw,
                          sizeof (float) * cur.channels * hw);
                  memcpy (cat + ((gsize) b * cat_c + cur.channels) * hw,
                          skip.data + (gsize) b * skip.channels * hw,
                          sizeof (float) * skip.channels * hw);
                }
            }
          else
            /* In the place of the popped skip and h, which lie there. */
            cat = ddim_arena_concat_channels (A, skip.mark, n, hw, cur.data, cur.channels,
                                              skip.data, skip.channels);
          DdimUnitSave *save = tape ? &tape->up[i][j] : NULL;
          run->disposable = cat;
          float *o = resnet_forward (run, &blk->resnets[j], cat, h, w, save);
          run->disposable = NULL;
          if (blk->has_attention)
            attention_forward (run, &blk->attentions[j], o, (int) hw, save);
          cur.channels = blk->channels;
          if (tape)
            cur.data = o;
          else
            {
              /* Move the result into the popped skip's place. */
              cur.mark = skip.mark;
              cur.data = ddim_arena_relocate (A, skip.mark, o, (gsize) n * blk->channels * hw);
            }
        }
      if (blk->has_resample)
        {
          float *o = ddim_resampler_forward (run, blk, FALSE, cur.data, h, w,
                                             tape ? &tape->up_resampler[i] : NULL);
          h *= 2;
          w *= 2;
          if (tape)
            cur.data = o;
          else
            cur.data = ddim_arena_relocate (A, cur.mark, o, (gsize) n * blk->channels * h * w);
        }
    }
  g_assert (n_skips == 0);
  if (tape)
    tape->final_in = cur.data;

  gsize hw = (gsize) h * w;
  float *normed = ddim_arena_alloc (A, (gsize) n * ch0 * hw);
  ddim_group_norm_forward_threaded (cur.data, n, ch0, (int) hw, u->norm_out.groups, (float) c->norm_eps,
                           u->norm_out.gamma, u->norm_out.beta, TRUE, normed, A);
  ddim_conv2d_forward (normed, n, ch0, h, w, u->conv_out.w, u->conv_out.b, c->out_channels, 3, 1,
                       1, 1, out, A);
}

static void
run_begin (DdimUNet *u, DdimUNetTape *tape, int n, int height, int width, Run *run)
{
  ddim_arena_reset (&u->arena);
  if (tape)
    {
      ddim_arena_reset (&tape->store);
      tape->n = n;
      tape->height = height;
      tape->width = width;
    }
  *run = (Run) { u, &u->arena, tape, n, NULL, NULL };
  /* Our threads split every large GEMM; OpenBLAS's own would compete. */
  ddim_parallel_blas_begin (u->parallel);
}

void
ddim_unet_run (DdimUNet *u, const float *x, int n, int height, int width, const float *t,
               const float *hspace_delta, float *out, DdimUNetTape *tape)
{
  Run run;
  run_begin (u, tape, n, height, width, &run);
  Encoded e;
  encoder_run (&run, x, height, width, t, &e);
  if (hspace_delta)
    {
      /* With a tape, h stays as it was (tape->hspace is h before the
       * delta) and the decoder reads a shifted copy; the fast path shifts
       * in place. */
      float *dst = tape ? keep_alloc (&run, e.cur.count) : e.cur.data;
      for (gsize i = 0; i < e.cur.count; i++)
        dst[i] = e.cur.data[i] + hspace_delta[i];
      e.cur.data = dst;
    }
  decoder_run (&run, e.skips, e.n_skips, e.cur, e.h, e.w, out);
  ddim_arena_release (&u->arena, 0);
  ddim_parallel_blas_end (u->parallel);
}

DdimUNetTape *
ddim_unet_get_tape (DdimUNet *u)
{
  if (u->tape == NULL)
    {
      u->tape = g_new0 (DdimUNetTape, 1);
      ddim_arena_init (&u->tape->store);
    }
  return u->tape;
}

void
ddim_unet_run_encoder (DdimUNet *u, const float *x, int n, int height, int width, const float *t,
                       float *hspace, DdimUNetTape *tape)
{
  Run run;
  run_begin (u, tape, n, height, width, &run);
  Encoded e;
  encoder_run (&run, x, height, width, t, &e);
  if (hspace)
    memcpy (hspace, e.cur.data, e.cur.count * sizeof (float));
  ddim_arena_release (&u->arena, 0);
  ddim_parallel_blas_end (u->parallel);
}

/* Decoders [begin, end) of a pair (ddim_unet_run_pair side by side). */
typedef struct {
  Run        *runs[2];
  Activation *skips[2];
  Activation  cur[2];
  int         n_skips, h, w;
  float      *out[2];
} PairJob;

static void
pair_range (gsize begin, gsize end, gpointer data)
{
  PairJob *p = data;
  for (gsize k = begin; k < end; k++)
    decoder_run (p->runs[k], p->skips[k], p->n_skips, p->cur[k], p->h, p->w, p->out[k]);
}

void
ddim_unet_run_pair (DdimUNet *u, const float *x, int n, int height, int width, const float *t,
                    DdimHspaceShiftFunc shift, gpointer shift_data, float *hspace,
                    float *out_plain, float *out_shifted)
{
  DdimArena *A = &u->arena;
  Run run;
  run_begin (u, NULL, n, height, width, &run);
  Encoded e;
  encoder_run (&run, x, height, width, t, &e);
  if (hspace)
    memcpy (hspace, e.cur.data, e.cur.count * sizeof (float));
  if (!(shift && out_shifted))
    decoder_run (&run, e.skips, e.n_skips, e.cur, e.h, e.w, out_plain);
  else
    {
      /* The shifted pass decodes copies of the skips and of h: a decoder
       * moves its results over the skips it pops. With two threads the two
       * decoders run side by side, one thread each, the copies in the pair
       * arena: no thread then waits for the other inside a layer (the
       * model's threads split each layer at 87% efficiency). Otherwise the
       * shifted pass runs first, its copies at the top of the arena;
       * releasing them leaves the arena exactly as a plain forward has it
       * here. Either way the plain pass is ddim_unet_run's, bit for bit. */
      gboolean side_by_side = ddim_parallel_get_n_threads (u->parallel) == 2;
      DdimArena *S = side_by_side ? &u->pair_arena : A;
      if (side_by_side)
        ddim_arena_reset (S);
      gsize base = ddim_arena_mark (S);
      Activation copies[MAX_SKIPS];
      for (int k = 0; k < e.n_skips; k++)
        {
          copies[k] = e.skips[k];
          copies[k].mark = ddim_arena_mark (S);
          copies[k].data = ddim_arena_alloc (S, e.skips[k].count);
          memcpy (copies[k].data, e.skips[k].data, e.skips[k].count * sizeof (float));
        }
      Activation hs = e.cur;
      hs.mark = ddim_arena_mark (S);
      hs.data = ddim_arena_alloc (S, e.cur.count);
      memcpy (hs.data, e.cur.data, e.cur.count * sizeof (float));
      shift (hs.data, hs.count, shift_data);
      Run shifted = run;
      shifted.scratch = S;
      if (side_by_side)
        {
          PairJob job = { { &shifted, &run }, { copies, e.skips }, { hs, e.cur }, e.n_skips,
                          e.h, e.w, { out_shifted, out_plain } };
          A->parallel = NULL;
          S->parallel = NULL;
          ddim_parallel_for (u->parallel, 2, 1, pair_range, &job);
          A->parallel = u->parallel;
          ddim_arena_release (S, base);
        }
      else
        {
          decoder_run (&shifted, copies, e.n_skips, hs, e.h, e.w, out_shifted);
          ddim_arena_release (A, base);
          decoder_run (&run, e.skips, e.n_skips, e.cur, e.h, e.w, out_plain);
        }
    }
  ddim_arena_release (A, 0);
  ddim_parallel_blas_end (u->parallel);
}

typedef struct {
  const float *dh;
} AddDelta;

static void
add_delta (float *h, gsize count, gpointer data)
{
  const AddDelta *d = data;
  for (gsize i = 0; i < count; i++)
    h[i] += d->dh[i];
}

gboolean
ddim_unet_forward_pair (DdimUNet *u, const float *x, int n, int height, int width,
                        const float *t, const float *hspace_delta, float *hspace,
                        float *out_plain, float *out_shifted, GError **error)
{
  g_return_val_if_fail (u && x && t && out_plain && n > 0, FALSE);
  if (!ddim_unet_check_size (u, height, width, error))
    return FALSE;
  AddDelta d = { hspace_delta };
  gboolean both = hspace_delta != NULL && out_shifted != NULL;
  ddim_unet_run_pair (u, x, n, height, width, t, both ? add_delta : NULL, &d, hspace, out_plain,
                      out_shifted);
  if (!both && out_shifted)
    memcpy (out_shifted, out_plain,
            (gsize) n * u->config.out_channels * height * width * sizeof (float));
  return TRUE;
}

/* Multiply-adds, walking the same structure as the forward. */
static double
conv_macs (const DdimConvLayer *l, int oh, int ow)
{
  return (double) l->cout * l->cin * l->k * l->k * oh * ow;
}

static double
resnet_macs (const DdimResnetLayer *r, int h, int w)
{
  double m = conv_macs (&r->conv1, h, w) + conv_macs (&r->conv2, h, w)
             + (double) r->temb_proj.out * r->temb_proj.in;
  if (r->shortcut.w)
    m += conv_macs (&r->shortcut, h, w);
  return m;
}

static double
attention_macs (const DdimAttentionLayer *a, int hw)
{
  return 4.0 * a->channels * a->channels * hw + 2.0 * (double) hw * hw * a->channels;
}

double
ddim_unet_count_macs (DdimUNet *u, int n, int height, int width)
{
  const DdimUNetConfig *c = &u->config;
  int h = height, w = width, L = c->n_levels;
  double m = conv_macs (&u->conv_in, h, w) + (double) u->temb1.out * u->temb1.in
             + (double) u->temb2.out * u->temb2.in;
  for (int i = 0; i < L; i++)
    {
      for (int j = 0; j < u->down[i].n_resnets; j++)
        {
          m += resnet_macs (&u->down[i].resnets[j], h, w);
          if (u->down[i].has_attention)
            m += attention_macs (&u->down[i].attentions[j], h * w);
        }
      if (u->down[i].has_resample)
        {
          m += ddim_resampler_macs (u, &u->down[i], TRUE, h, w);
          ddim_resampler_out_size (u, &u->down[i], TRUE, h, w, &h, &w);
        }
    }
  m += resnet_macs (&u->mid_resnets[0], h, w) + resnet_macs (&u->mid_resnets[1], h, w);
  if (u->mid_has_attention)
    m += attention_macs (&u->mid_attention, h * w);
  for (int i = 0; i < L; i++)
    {
      for (int j = 0; j < u->up[i].n_resnets; j++)
        {
          m += resnet_macs (&u->up[i].resnets[j], h, w);
          if (u->up[i].has_attention)
            m += attention_macs (&u->up[i].attentions[j], h * w);
        }
      if (u->up[i].has_resample)
        {
          m += ddim_resampler_macs (u, &u->up[i], FALSE, h, w);
          h *= 2;
          w *= 2;
        }
    }
  m += conv_macs (&u->conv_out, h, w);
  return m * n;
}
