/* `ddim`: command-line front end of libddim. Dispatches on the first
 * argument to one of the commands; see `ddim --help`. */
#include <locale.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

#ifndef DDIM_VERSION
#define DDIM_VERSION "unknown"
#endif

typedef struct {
  const char *name;
  int (*run) (int argc, char **argv);
  const char *summary;
} CliCommand;

static const CliCommand commands[] = {
  { "info", cli_cmd_info, "Show a model's configuration, weights and noise schedule" },
  { "eval", cli_cmd_eval, "Evaluate the UNet on tensors x, t from a safetensors file" },
  { "sample", cli_cmd_sample, "Generate images from seeded noise with DDIM" },
  { "invert", cli_cmd_invert, "Invert an image to its DDIM latent (noise)" },
  { "reconstruct", cli_cmd_reconstruct, "Decode a latent made by 'invert' back to an image" },
  { "eval-inversion", cli_cmd_eval_inversion,
    "Compare inversion methods: reconstruction PSNR, model evaluations, seconds" },
  { "edit", cli_cmd_edit, "Edit an image along a semantic direction" },
  { "directions", cli_cmd_directions, "List, fit or discover semantic directions" },
  { "eval-edit", cli_cmd_eval_edit,
    "Success and background PSNR of class-direction edits, by the classifier" },
  { "interpolate", cli_cmd_interpolate, "Frames between two images through their latents" },
  { "train", cli_cmd_train, "Train a model from a config.json on Fashion-MNIST or images" },
  { "train-encoder", cli_cmd_train_encoder,
    "Train a model's learned inversion encoder (--method encoder)" },
  { "eval-classifier", cli_cmd_eval_classifier,
    "Train or test the Fashion-MNIST classifier; class histogram of samples" },
  { "bench", cli_cmd_bench, "Time the UNet forward pass with random weights" },
  { "convert", cli_cmd_convert,
    "Write a model folder (any family) as a diffusers safetensors folder" },
};

static void
print_main_help (FILE *out)
{
  fprintf (out,
           "Usage: ddim COMMAND [OPTION…] [ARG…]\n"
           "\n"
           "DDIM sampling and inversion with diffusers UNet2DModel folders.\n"
           "\n"
           "Commands:\n");
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    fprintf (out, "  %-15s %s\n", commands[i].name, commands[i].summary);
  fprintf (out,
           "  %-15s %s\n"
           "\n"
           "Run 'ddim COMMAND --help' (or 'ddim help COMMAND') for a command's options.\n"
           "\n"
           "MODEL is a model folder: diffusers UNet2DModel (config.json), ermongroup/\n"
           "pesser/SDEdit (config.yml + .ckpt/.pth) or OpenAI ADM (model_flags.txt +\n"
           ".pt); 'ddim convert' makes a diffusers copy. Where a command takes one, it may\n"
           "be left out: the embedded default model (Fashion-MNIST, 32x32 gray) is used,\n"
           "or the folder in the environment variable DDIM_MODEL.\n"
           "\n"
           "Exit status: 0 success, 1 failure, 2 bad command line, 130 interrupted (Ctrl-C).\n",
           "help", "Show this help, or a command's help");
}

static const CliCommand *
find_command (const char *name)
{
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    if (g_str_equal (commands[i].name, name))
      return &commands[i];
  return NULL;
}

int
main (int argc, char **argv)
{
  setlocale (LC_ALL, "");

  if (argc < 2)
    {
      print_main_help (stderr);
      return CLI_EXIT_USAGE;
    }
  const char *name = argv[1];
  if (g_str_equal (name, "--help") || g_str_equal (name, "-h") || g_str_equal (name, "-?"))
    {
      print_main_help (stdout);
      return CLI_EXIT_OK;
    }
  if (g_str_equal (name, "--version"))
    {
      printf ("ddim %s\n", DDIM_VERSION);
      return CLI_EXIT_OK;
    }
  if (g_str_equal (name, "help"))
    {
      if (argc < 3)
        {
          print_main_help (stdout);
          return CLI_EXIT_OK;
        }
      const CliCommand *c = find_command (argv[2]);
      if (c == NULL)
        {
          fprintf (stderr, "ddim: unknown command '%s'\n"
                   "Run 'ddim --help' for the list of commands.\n", argv[2]);
          return CLI_EXIT_USAGE;
        }
      g_autofree char *prgname = g_strconcat ("ddim ", c->name, NULL);
      g_set_prgname (prgname);
      char *sub_argv[] = { (char *) c->name, (char *) "--help", NULL };
      return c->run (2, sub_argv);
    }

  const CliCommand *c = find_command (name);
  if (c == NULL)
    {
      if (name[0] == '-')
        fprintf (stderr, "ddim: unknown option '%s'; the first argument must be a command\n",
                 name);
      else
        fprintf (stderr, "ddim: unknown command '%s'\n", name);
      fprintf (stderr, "Run 'ddim --help' for the list of commands.\n");
      return CLI_EXIT_USAGE;
    }
  /* GOption's --help shows g_get_prgname () in its usage line. */
  g_autofree char *prgname = g_strconcat ("ddim ", c->name, NULL);
  g_set_prgname (prgname);
  return c->run (argc - 1, argv + 1);
}
