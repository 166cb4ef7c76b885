/* What the supervisor tells a worker it starts: how connections reach it
 * (one explicit value, enum intake_kind) and what it serves. Apart from
 * worker.h so that the worker's parts (worker-intake.c) can read it
 * without including the loop that calls them. */
#pragma once

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
	/* `connection` was accepted from a listener of ours, and inherited
	 * TCP_NODELAY from it (listen.c): no need to look at what kind of
	 * socket it is. */
	bool connection_tuned;
	/* `connection` came to a proxy listener: a PROXY header comes first. */
	bool connection_proxy;
	/* `connection` was kept across a restart or reload (served before,
	 * elsewhere), and what is owed on it: a sealed memfd (kept.h) the
	 * worker reads and closes, or -1. */
	bool connection_kept;
	int connection_owed_fd;
	/* Connections reserved in the scoreboard by whoever accepted them, to be
	 * released as they close (prefork reserves its own; passfd's supervisor
	 * reserves for its workers). */
	bool release_reservations;
	/* worker_enter_signals() has run in this process (worker.h): the
	 * loop only opens its signalfd. */
	bool signals_entered;
};
