/* What the worker's files share, and only they: worker.c (the loop, the
 * connections, datagrams, stopping), worker-intake.c (taking connections
 * in: accept() or the passfd channel) and worker-handover.c (giving them
 * away on a restart or a reload). Not installed; nothing else includes it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "admission.h"
#include "echo.h"
#include "ratelimit.h"
#include "scoreboard.h"
#include "udp.h"
#include "worker.h"

#define WORKER_BUFFER_SIZE (64 * 1024)

enum source_type {
	SOURCE_LISTENER,
	SOURCE_DATAGRAM,
	SOURCE_CHANNEL,
	SOURCE_DOORBELL,
	SOURCE_SIGNAL,
	SOURCE_CONNECTION,
};

/* Every epoll registration points at one of these (as its first member). */
struct source {
	enum source_type type;
};

struct listener_source {
	struct source source;
	const struct listener *listener;
	bool polled;
};

struct connection {
	struct source source;
	struct echo_conn echo;
	enum echo_want want;
	uint64_t last_active_ms;
	struct admission_ticket ticket; /* MaxConnectionsPerSource= */
	uint64_t queued_ms;		/* when it last moved to the tail of the list */
	/* Least-recently-queued first; a connection is queued again within
	 * LRU_MOVE_MS of any activity, so checking the head alone finds every
	 * idle connection at most that late. */
	struct connection *prev, *next;
};

/* Why a worker that has room keeps its listeners out of the epoll set. */
enum intake_hold {
	HOLD_NONE,
	HOLD_SHARE, /* it holds more than its fair share: peers take the next */
	HOLD_LIMIT, /* MaxConnections= was reached when it was woken */
};

struct worker {
	const struct worker_setup *setup;
	pid_t pid;		      /* owns this process's per-source counts */
	struct scoreboard_slot *slot; /* shared, or a local stand-in */
	struct scoreboard_slot local_slot;
	int epoll_fd;
	struct source signal_source;
	int signal_fd;
	struct source channel_source;
	struct source doorbell_source;
	struct listener_source *listeners; /* stream listeners (prefork) */
	size_t n_listeners;
	struct listener_source *datagram_sources;
	bool accepting;		   /* listeners are in the epoll set */
	uint64_t accept_resume_ms; /* after an fd shortage, 0 if none */
	enum intake_hold hold;
	bool draining;
	bool returning; /* sending connections back to the supervisor (reload) */
	unsigned returned;
	uint64_t drain_deadline_ms;
	struct udp_echo udp;
	struct udp_counters udp_counters;
	struct ratelimit *datagram_limit;
	uint64_t drops_logged; /* datagrams dropped + connections lost, as last logged */
	uint64_t drops_logged_ms;
	unsigned n_connections;
	unsigned capacity; /* WorkerConnections=, or fewer if fds are short */
	struct connection *lru_head, *lru_tail;
	/* Bytes moved since the last turn of the loop: added to the scoreboard
	 * once per turn, not with an atomic per event. */
	struct echo_io io_pending;
	char *buffer;
	/* Bytes owed on a restored connection, received over the channel just
	 * before the connection itself (see handover.h); NULL if none. */
	char *pending_owed;
	size_t pending_owed_len;
	uint64_t pending_owed_id;
};

/* worker.c */

/* Takes fd and owed (malloc()ed, or NULL): served or closed and freed on
 * every path; see there. */
int worker_add_connection(struct worker *w, int fd, bool is_tcp, const struct sockaddr *from,
			  char *owed, size_t owed_len);
void worker_connection_close(struct worker *w, struct connection *c);
/* Stops taking work; what is held gets ShutdownTimeoutSec= to finish. */
void worker_start_drain(struct worker *w, const char *why, uint64_t now);

/* worker-intake.c */

/* Puts the listeners in the epoll set (on) or takes them out. */
void worker_intake_poll(struct worker *w, bool on);
void worker_intake_update(struct worker *w, uint64_t now);
void worker_intake_accept(struct worker *w, const struct listener *l, uint64_t now);
void worker_intake_receive(struct worker *w, uint64_t now);
/* A peer rang the scoreboard's doorbell: look at the listeners. */
void worker_intake_doorbell(struct worker *w, uint64_t now);
void worker_intake_owed_drop(struct worker *w);
void worker_intake_set_capacity(struct worker *w);

/* worker-handover.c */

void worker_handover_restart(struct worker *w, uint64_t now);
void worker_handover_reload(struct worker *w, uint64_t now);
void worker_handover_return(struct worker *w);
