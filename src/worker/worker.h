/* The worker: one epoll loop that takes connections from an intake and
 * serves them with the echo state machine. Every model runs this loop; they
 * differ only in the intake, which worker_setup names. */
#pragma once

#include <signal.h>
#include <stdbool.h>

#include "worker-setup.h"

/* Runs the loop until it is told to stop (SIGTERM/SIGINT, the channel
 * closing) and its connections are finished, or (INTAKE_ONE) until its
 * connection ends. Returns an exit status for the process; with
 * INTAKE_ONE, for a process that exits next (some fds are left to exit). */
int worker_run(const struct worker_setup *setup);

/* What a child of the supervisor has to change of the signal state it
 * inherits to have a worker's. Read once, after the supervisor's signal
 * set-up, so that each child makes only the system calls it needs: a
 * Model=fork child pays 10-20 µs for each on a slow VM. */
struct worker_signals {
	sigset_t to_default; /* handled or ignored here, the default in a worker
			      * (but for those a worker keeps blocked) */
	bool pipe_ignored;   /* SIGPIPE is ignored here, as in a worker */
	/* The mask here is a worker's but for SIGCHLD, which never comes
	 * to a process without children: nothing to change. */
	bool mask_fits;
};
void worker_signals_inherited(struct worker_signals *ret);

/* First thing in any child of the supervisor: the worker's signal state,
 * in one go, so that nothing of the supervisor's set-up leaks. SIGPIPE is
 * ignored, the rest of `inherited->to_default` back to the default, and
 * blocked from the fork on are the signals worker_run()'s signalfd reads
 * (SIGTERM, SIGINT, SIGUSR1, SIGUSR2) and SIGHUP (a reload is the
 * supervisor's business): one sent to a child not yet listening waits
 * for it instead of killing it with its connection. Tell worker_run()
 * (worker_setup.signals_entered) not to do it again. */
void worker_enter_signals(const struct worker_signals *inherited);
