/* Runs the `ddim` binary a test was built against (DDIM_CLI, set by meson)
 * and captures its exit status, stdout and stderr. Header-only: each test
 * program includes it once. */
#pragma once

#include <sys/wait.h>

#include <glib.h>

typedef struct {
  int   status;  /* exit status, -1 when killed by a signal */
  char *out;     /* owned */
  char *err;     /* owned */
} CliRun;

static inline void
cli_run_clear (CliRun *r)
{
  g_clear_pointer (&r->out, g_free);
  g_clear_pointer (&r->err, g_free);
}

/* Runs ddim with @args (NULL-terminated) in the environment @envp (NULL:
 * this process's). Fails the test when it cannot be started. */
static inline void
cli_run (CliRun *r, char **envp, const char *const *args)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_ptr_array_add (argv, (gpointer) g_getenv ("DDIM_CLI"));
  for (int i = 0; args[i]; i++)
    g_ptr_array_add (argv, (gpointer) args[i]);
  g_ptr_array_add (argv, NULL);
  g_autoptr (GError) error = NULL;
  int wait_status = 0;
  g_assert_true (g_spawn_sync (NULL, (char **) argv->pdata, envp, G_SPAWN_DEFAULT, NULL, NULL,
                               &r->out, &r->err, &wait_status, &error));
  g_assert_no_error (error);
  r->status = WIFEXITED (wait_status) ? WEXITSTATUS (wait_status) : -1;
}
