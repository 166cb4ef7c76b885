/* The worker: one epoll loop that takes connections from an intake and
 * serves them with the echo state machine. Every model runs this loop; they
 * differ only in the intake, which worker_setup names. */
#pragma once

#include <signal.h>
#include <stdbool.h>

#include "config.h"
#include "listen.h"
#include "scoreboard.h"

/* How connections reach a worker. */
enum intake_kind {
	INTAKE_NONE,	  /* none: fork's datagram worker */
	INTAKE_ONE,	  /* `connection` alone (fork's connection process,
			   * per-connection mode); done when it ends */
	INTAKE_CHANNEL,	  /* passfd: sent by the supervisor over `channel` */
	INTAKE_LISTENERS, /* prefork: accept() on the listening sockets in
			   * `sockets`; kept connections over `channel` */
};

struct worker_setup {
	const struct config *config;
	struct scoreboard *scoreboard; /* NULL: counters are kept locally only */
	int slot;		       /* this worker's scoreboard slot, or -1 */
	const struct listen_set *sockets;
	enum intake_kind intake;
	bool datagrams; /* serve the datagram sockets in `sockets` */
	/* From the supervisor (INTAKE_CHANNEL, INTAKE_LISTENERS), and where a
	 * reload returns the connections; or -1. */
	int channel;
	/* Where a reload sends the connections back when there is no channel
	 * (fork's connection processes share one; never read here, and its
	 * hang-up means nothing), or -1. */
	int returns;
	int connection; /* INTAKE_ONE: the one connection to serve */
	/* Whoever accepted `connection` already set it up (TCP_NODELAY), as the
	 * supervisor does: no need to look at what kind of socket it is. */
	bool connection_tuned;
	/* `connection` was kept across a restart or reload (served before,
	 * elsewhere), and what is owed on it: a sealed memfd (kept.h) the
	 * worker reads and closes, or -1. */
	bool connection_kept;
	int connection_owed_fd;
	/* Connections reserved in the scoreboard by whoever accepted them, to be
	 * released as they close (prefork reserves its own; passfd's supervisor
	 * reserves for its workers). */
	bool release_reservations;
};

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
