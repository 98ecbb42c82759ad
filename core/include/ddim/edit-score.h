/* Scoring semantic edits against their sources: did the edit reach the
 * target class, and did it leave the rest of the image alone?
 *
 * The changed shape of a source/edit pair is the set of pixel positions
 * where the source or the edit is foreground (some channel above
 * @threshold, on the [-1, 1] scale), grown by @dilate pixels in the 8
 * directions (a (2*dilate+1)^2 square), so that the anti-aliased rim of
 * either shape counts as inside. Everything else is the outside: pixels
 * that are background in both images and not next to either shape. For
 * dark-background images such as Fashion-MNIST (background -1) the
 * outside is what an edit of the garment should not touch.
 *
 * The outside PSNR is 10 log10(1 / MSE) over the outside values of every
 * channel, differences taken on the [0, 1] scale (as ddim_psnr); a score
 * over several images pools their squared errors and outside counts (one
 * MSE over all outside values), so images with a large outside weigh more
 * and an image with none adds nothing. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* 0.1 on the [0, 1] scale: above JPEG-style noise in a black background,
 * below the faintest Fashion-MNIST garment pixels that matter. */
#define DDIM_EDIT_SCORE_THRESHOLD (-0.8)
#define DDIM_EDIT_SCORE_DILATE 1

/* Writes @mask (@height * @width bytes): 1 inside the changed shape of
 * @a and @b ([channels, height, width] each), 0 outside. Returns the
 * number of positions inside. */
gsize ddim_changed_shape_mask (const float *a, const float *b, int channels, int height,
                               int width, double threshold, int dilate, guint8 *mask);

typedef struct {
  double  threshold;      /* foreground: a value above it ([-1, 1] scale) */
  int     dilate;         /* pixels the shape grows by */
  int     n;              /* images scored */
  int     n_classified;   /* of them, with a predicted label */
  int     n_success;      /* of those, classified as the target */
  double  sq_error;       /* sum of squared outside differences, [0, 1] scale */
  guint64 n_outside;      /* outside values (positions x channels) */
  guint64 n_inside;       /* inside positions */
  guint64 n_positions;    /* all positions */
} DdimEditScore;

/* An empty score with that threshold and dilation. */
void   ddim_edit_score_init (DdimEditScore *score, double threshold, int dilate);

/* Adds @n pairs of @sources and @edits [n, channels, height, width] whose
 * edits the classifier labelled @predicted (n labels; NULL: success not
 * counted) for the class @target. */
void   ddim_edit_score_add (DdimEditScore *score, const float *sources, const float *edits,
                            const int *predicted, int target, int n, int channels, int height,
                            int width);

/* The share of the classified images labelled the target (NaN when none
 * was classified). */
double ddim_edit_score_success (const DdimEditScore *score);
/* The outside PSNR in dB: infinity when the outside is unchanged, NaN
 * when there is no outside at all. */
double ddim_edit_score_psnr (const DdimEditScore *score);
/* The share of positions inside the changed shape (NaN when none). */
double ddim_edit_score_inside_share (const DdimEditScore *score);

G_END_DECLS
