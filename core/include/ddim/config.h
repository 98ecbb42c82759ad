/* The UNet2DModel configuration (diffusers config.json). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define DDIM_MAX_LEVELS 8

typedef enum {
  DDIM_BLOCK_PLAIN,       /* DownBlock2D / UpBlock2D */
  DDIM_BLOCK_ATTENTION    /* AttnDownBlock2D / AttnUpBlock2D */
} DdimBlockKind;

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

/* Width of the time embedding MLP output (4 * block_out_channels[0]). */
int ddim_unet_config_temb_dim (const DdimUNetConfig *config);
/* Height/width must be multiples of this (2^(n_levels-1)). */
int ddim_unet_config_size_factor (const DdimUNetConfig *config);

G_END_DECLS
