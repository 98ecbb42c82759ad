/* The UNet2DModel configuration (diffusers config.json). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define DDIM_MAX_LEVELS 8

typedef enum {
  DDIM_BLOCK_PLAIN,       /* DownBlock2D / UpBlock2D */
  DDIM_BLOCK_ATTENTION    /* AttnDownBlock2D / AttnUpBlock2D */
} DdimBlockKind;

/* How a block changes resolution (diffusers downsample_type / upsample_type). */
typedef enum {
  DDIM_RESAMPLE_CONV,     /* "conv": Downsample2D (strided conv) / Upsample2D (nearest + conv);
                           * without conv (resample_with_conv FALSE): avg-pool / nearest */
  DDIM_RESAMPLE_RESNET    /* "resnet": a ResnetBlock2D that pools / upsamples after its
                           * first norm (guided-diffusion resblock_updown) */
} DdimResampleType;

typedef struct {
  int  sample_size;                 /* nominal height = width, pixels */
  int  in_channels;
  int  out_channels;
  gboolean center_input_sample;     /* input mapped x -> 2x - 1 first */
  gboolean flip_sin_to_cos;
  double   freq_shift;
  int  n_levels;                    /* len(block_out_channels) */
  int  block_out_channels[DDIM_MAX_LEVELS];
  DdimBlockKind down_blocks[DDIM_MAX_LEVELS];
  DdimBlockKind up_blocks[DDIM_MAX_LEVELS];
  int  layers_per_block;
  double mid_block_scale_factor;    /* output_scale_factor of the mid resnets */
  int  downsample_padding;          /* 0: pad right/bottom by 1; 1: pad all sides by 1 */
  int  attention_head_dim;          /* 0 when null: one head as wide as the block */
  int  norm_num_groups;
  int  attn_norm_num_groups;        /* 0 when null */
  double norm_eps;
  gboolean scale_shift;             /* resnet_time_scale_shift == "scale_shift" */
  gboolean add_attention;           /* attention in the mid block */
  DdimResampleType downsample_type;
  DdimResampleType upsample_type;
  /* FALSE: "conv" resamplers have no conv (2x2 average pooling down,
   * nearest up), ermongroup's resamp_with_conv false. config.json:
   * "ddim_resample_with_conv" (diffusers has no such option). */
  gboolean resample_with_conv;
  /* The model also predicts a variance (guided-diffusion learn_sigma):
   * conv_out has 2 * out_channels rows, eps first; out_channels counts the
   * eps channels only, and only they are computed. config.json:
   * "out_channels" is the doubled count and "ddim_learned_sigma" true. */
  gboolean learned_sigma;
  /* A fixed number of attention heads (guided-diffusion num_heads without
   * num_head_channels), 0: from attention_head_dim. The up blocks' count
   * (num_heads_upsample) is separate. config.json: "ddim_attention_heads",
   * "ddim_attention_heads_upsample". */
  int  attention_heads;
  int  attention_heads_up;
} DdimUNetConfig;

/* Parses a config.json. Every field a published UNet2DModel uses is read;
 * missing fields take diffusers' defaults; unsupported values (another
 * block type, time_embedding_type "fourier", class embeddings, act_fn other
 * than silu/swish, ...) are DDIM_ERROR_UNSUPPORTED naming the field and
 * value; malformed JSON or wrong types are DDIM_ERROR_FORMAT. */
gboolean ddim_unet_config_load (const char *path, DdimUNetConfig *config, GError **error);
gboolean ddim_unet_config_parse (const char *json, gssize length, DdimUNetConfig *config,
                                 GError **error);
/* The config as diffusers' save_pretrained would write it (newly allocated). */
char    *ddim_unet_config_to_json (const DdimUNetConfig *config);

/* Fills @config with diffusers' UNet2DModel defaults (what an empty
 * config.json means). */
void ddim_unet_config_init (DdimUNetConfig *config);
/* Checks a config built in code (the family parsers) as config.json
 * values are checked; errors name the field. */
gboolean ddim_unet_config_validate (const DdimUNetConfig *config, GError **error);

/* Width of the time embedding MLP output (4 * block_out_channels[0]). */
int ddim_unet_config_temb_dim (const DdimUNetConfig *config);
/* Height/width must be multiples of this (2^(n_levels-1)). */
int ddim_unet_config_size_factor (const DdimUNetConfig *config);

G_END_DECLS
