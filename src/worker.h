/* The worker: one epoll loop that takes connections from an intake and
 * serves them with the echo state machine. Every model runs this loop; they
 * differ only in the intake:
 *   prefork: accept() on the shared listening sockets,
 *   passfd:  connections received from the supervisor over a channel,
 *   fork and per-connection mode: exactly one connection, given at start. */
#pragma once

#include <signal.h>
#include <stdbool.h>

#include "config.h"
#include "listen.h"
#include "scoreboard.h"

struct worker_setup {
	const struct config *config;
	struct scoreboard *scoreboard; /* NULL: counters are kept locally only */
	int slot;		       /* this worker's scoreboard slot, or -1 */
	const struct listen_set *sockets;
	bool accept;	/* accept() on the listening sockets in `sockets` */
	bool datagrams; /* serve the datagram sockets in `sockets` */
	int channel;	/* passfd intake, or -1 */
	/* Where a reload sends the connections back when there is no channel
	 * (fork's connection processes share one; never read here, and its
	 * hang-up means nothing), or -1. */
	int give_back;
	int connection; /* the one connection to serve, or -1 */
	/* Whoever accepted `connection` already set it up (TCP_NODELAY), as the
	 * supervisor does: no need to look at what kind of socket it is. */
	bool connection_tuned;
	/* `connection` was kept across a restart or reload (served before,
	 * elsewhere), and what is owed on it: a sealed memfd (handover.h) the
	 * worker reads and closes, or -1. */
	bool connection_kept;
	int connection_owed_fd;
	/* Connections reserved in the scoreboard by whoever accepted them, to be
	 * released as they close (prefork reserves its own; passfd's supervisor
	 * reserves for its workers). */
	bool release_reservations;
};

/* Runs the loop until it is told to stop (SIGTERM/SIGINT, the channel
 * closing) and its connections are finished, or (with `connection`) until
 * that connection ends. Returns an exit status for the process. */
int worker_run(const struct worker_setup *setup);

/* The signals whose disposition is not the default in this process (ignored,
 * or handled): what worker_reset_signals() has to undo in a child. Read once,
 * after the supervisor's signal set-up, so that a child does not reset every
 * signal (64 system calls, 0.1-0.2 ms of each fork child on a slow VM). */
void worker_signals_changed(sigset_t *ret);

/* First thing in any child of the supervisor: default handlers for the
 * signals in `changed` and a mask of SIGUSR1 and SIGUSR2 alone, so nothing
 * else of the supervisor's signal set-up leaks. Those two (hand over, give
 * back) stay blocked, as in the supervisor, until worker_run()'s signalfd
 * takes them: one sent to a child not yet listening waits for it instead
 * of killing it with its connection. */
void worker_reset_signals(const sigset_t *changed);
