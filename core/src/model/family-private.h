/* Model families other than diffusers: their key names, and where a
 * UNet2DModel parameter comes from in their checkpoints. */
#pragma once

#include "ddim/model.h"
#include "ddim/safetensors.h"

G_BEGIN_DECLS

/* How a family's checkpoint is laid out (beyond the UNet config). */
typedef struct {
  DdimModelFamily family;
  gboolean        use_ema;               /* ermongroup: config.yml model.ema */
  gboolean        new_attention_order;   /* adm: use_new_attention_order */
} DdimCheckpointLayout;

/* Where a UNet2DModel parameter lives in a checkpoint: tensor @key, whole
 * (@part < 0) or the rows of q (0), k (1) or v (2) of a fused qkv tensor
 * [3C, C(, 1)] of @heads heads: interleaved per head ([q k v] of head 0,
 * then head 1, ...; guided-diffusion's QKVAttentionLegacy) when @interleaved,
 * else all q rows, then k, then v (QKVAttention). */
typedef struct {
  char    *key;
  int      part;
  int      heads;
  gboolean interleaved;
} DdimCheckpointKey;

/* ermongroup name of a UNet2DModel parameter (NULL if it has none). */
char *ddim_ermongroup_key (const DdimUNetConfig *config, const char *name);
/* guided-diffusion location of a UNet2DModel parameter; FALSE if none. */
gboolean ddim_adm_key (const DdimUNetConfig *config, gboolean new_attention_order,
                       const char *name, DdimCheckpointKey *key);

/* The tensors of a weights file of any format (safetensors, torch.save,
 * sharded torch.save with its index json). */
typedef struct _DdimWeightSource DdimWeightSource;

/* @path: a weights file, or an index json ("weight_map") of shards. The
 * format of the (first) file goes to @format. */
DdimWeightSource     *ddim_weight_source_open (const char *path, gboolean use_ema,
                                               DdimWeightsFormat *format, GError **error);
const DdimTensorInfo *ddim_weight_source_lookup (DdimWeightSource *src, const char *name);
/* The (first) weights file. */
const char           *ddim_weight_source_first_path (DdimWeightSource *src);
/* "F32", "F16", "BF16", "mixed" (newly allocated). */
char                 *ddim_weight_source_dtype (DdimWeightSource *src);
void                  ddim_weight_source_free (DdimWeightSource *src);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DdimWeightSource, ddim_weight_source_free)

/* Builds a UNet from @src: every parameter the config implies, found
 * under its name in @layout's family (diffusers names accept the old
 * attention scheme), with its exact shape; errors name the tensor. */
DdimUNet *ddim_unet_new_from_source (const DdimUNetConfig *config, DdimWeightSource *src,
                                     const DdimCheckpointLayout *layout, const char *file_name,
                                     GError **error);

G_END_DECLS
