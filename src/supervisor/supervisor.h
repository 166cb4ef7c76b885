/* The supervisor: the unit's main process. It owns the sockets, starts
 * the workers and keeps them running, reloads on SIGHUP, reports to
 * systemd, and stops everything on SIGTERM. */
#pragma once

#include "config.h"
#include "listen.h"

/* Reads the configuration again (file and command line) for a reload.
 * Returns 0 and fills *ret (initialised by the caller), or a negative
 * errno with a one-line reason in err. */
typedef int (*config_reader)(void *userdata, struct config *ret, struct config_error *err);

/* Runs until stopped. Takes sockets (closed on return). runtime_dir (NULL:
 * none) gets the reload-status file and the scoreboard that `echod status`
 * reads. status_note (NULL: none) is shown in STATUS= until a reload
 * succeeds. Returns the process's exit status. */
int supervisor_run(const struct config *config, struct listen_set *sockets, config_reader reread,
		   void *userdata, const char *runtime_dir, const char *status_note);
