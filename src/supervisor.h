/* The supervisor: the unit's main process. It owns the sockets, starts
 * the workers and keeps them running, and stops everything on SIGTERM. */
#pragma once

#include "config.h"
#include "listen.h"

/* Runs until stopped. Takes sockets (closed on return). config_path is
 * re-read on reload (NULL: reload only re-applies the command line).
 * Returns the process's exit status. */
int supervisor_run(const struct config *config, struct listen_set *sockets);
