/* Writes small seed inputs for the fuzz harnesses: make-seeds DIR writes
 * DIR/<target>/<name> for the torch readers (built with the same builders
 * as test-torch-file.c), the latent file and the directions file. The
 * run-fuzz script adds the fixture files (JSON configs, real checkpoints). */

#include "ddim/directions.h"
#include "ddim/latent.h"
#include "ddim/safetensors.h"

#include <glib/gstdio.h>

#include "../torch-builders.h"

static void
put (const char *dir, const char *target, const char *name, GBytes *bytes)
{
  g_autofree char *sub = g_build_filename (dir, target, NULL);
  g_mkdir_with_parents (sub, 0755);
  g_autofree char *path = g_build_filename (sub, name, NULL);
  g_autoptr (GError) error = NULL;
  if (!g_file_set_contents (path, g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes),
                            &error))
    g_error ("%s", error->message);
}

int
main (int argc, char **argv)
{
  if (argc != 2)
    {
      g_printerr ("usage: make-seeds DIR\n");
      return 2;
    }
  const char *dir = argv[1];

  g_autoptr (GBytes) two = two_tensor_pickle ();
  g_autoptr (GBytes) list = ermongroup_list (TRUE);
  put (dir, "torch-pickle", "two-tensors.pkl", two);
  put (dir, "torch-pickle", "ermongroup-list.pkl", list);
  g_autoptr (GBytes) z1 = make_torch_zip_in ("archive/", two, 16, 16, (ZipStyle) { TRUE, TRUE });
  g_autoptr (GBytes) z2 = make_torch_zip_in ("m/", list, 16, 16, (ZipStyle) { FALSE, FALSE });
  put (dir, "torch-zip", "two-tensors-zip64.pt", z1);
  put (dir, "torch-zip", "ermongroup-list.pt", z2);

  const TSpec specs[] = {
    { "module.a", "FloatStorage", "140001", 6, 0, 2, { 2, 3 }, { 3, 1 }, FALSE },
    { "b", "HalfStorage", "140002", 8, 1, 2, { 2, 3 }, { 1, 2 }, TRUE },
  };
  const char *keys[] = { "140001", "140002" };
  const gint64 numels[] = { 6, 4 };   /* 4 floats = 8 halves */
  Pk *pk = pk_new ();
  pk_state_dict (pk, specs, 2, TRUE);
  g_autoptr (GBytes) obj = pk_finish (pk);
  put (dir, "torch-pickle", "legacy-object.pkl", obj);
  g_autoptr (GBytes) legacy = make_legacy (obj, keys, 2, numels, 1001);
  put (dir, "torch-legacy", "synthetic.pt", legacy);

  g_autoptr (DdimSafetensorsWriter) w = ddim_safetensors_writer_new ();
  const gint64 shape[] = { 2, 3 };
  const float values[] = { 1, 2, 3, 4, 5, 6 };
  ddim_safetensors_writer_add_f32 (w, "x", 2, shape, values);
  ddim_safetensors_writer_add_f16 (w, "y", 2, shape, values);
  ddim_safetensors_writer_add_metadata (w, "k", "v");
  g_autoptr (GBytes) st = ddim_safetensors_writer_to_bytes (w);
  put (dir, "safetensors", "small.safetensors", st);

  g_autoptr (DdimLatent) latent = ddim_latent_new (3, 2, 2);
  latent->steps = 10;
  latent->image_width = latent->image_height = 2;
  g_autoptr (GBytes) lb = ddim_latent_to_bytes (latent);
  put (dir, "latent", "small.latent", lb);

  g_autoptr (DdimDirectionSet) set = ddim_direction_set_new ();
  ddim_direction_set_add (set, ddim_direction_new ("smile", DDIM_SPACE_X, 3, 3, 2, 2));
  const int ts[] = { 900, 500 };
  ddim_direction_set_add (set, ddim_direction_new_per_timestep ("age", 3, 4, 2, 2, 2, ts));
  g_autoptr (GBytes) db = ddim_direction_set_to_bytes (set);
  put (dir, "directions", "small.safetensors", db);
  return 0;
}
