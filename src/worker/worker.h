/* The worker: one epoll loop that takes connections from an intake and
 * serves them with the echo state machine. Every model runs this loop; they
 * differ only in the intake, which worker_setup names. */
#pragma once

#include <signal.h>
#include <stdbool.h>

#include "worker-setup.h"

/* Runs the loop until it is told to stop (SIGTERM/SIGINT, the channel
 * closing) and its connections are finished, or (INTAKE_ONE) until its
 * connection ends. Returns an exit status for the process. */
int worker_run(const struct worker_setup *setup);

/* The signals whose disposition is not the default in this process (ignored,
 * or handled): what worker_reset_signals() has to undo in a child. Read once,
 * after the supervisor's signal set-up, so that a child does not reset every
 * signal (64 system calls, 0.1-0.2 ms of each fork child on a slow VM). */
void worker_signals_changed(sigset_t *ret);

/* First thing in any child of the supervisor: default handlers for the
 * signals in `changed` and a mask of SIGUSR1 and SIGUSR2 alone, so nothing
 * else of the supervisor's signal set-up leaks. Those two (store, return)
 * stay blocked, as in the supervisor, until worker_run()'s signalfd
 * takes them: one sent to a child not yet listening waits for it instead
 * of killing it with its connection. */
void worker_reset_signals(const sigset_t *changed);
