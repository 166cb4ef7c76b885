/* The worker's connections: the table of those it serves, their idle
 * order (LRU) and their echo state; what each costs in the ledger and the
 * per-source table. The rest of the worker reaches a connection through
 * these functions only. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "admission.h"
#include "config.h"
#include "echo.h"
#include "ledger.h"

#define WORKER_BUFFER_SIZE (64 * 1024)

/* What an epoll registration of the worker is: every one points at one of
 * these (as its first member). */
enum source_type {
	SOURCE_LISTENER,
	SOURCE_DATAGRAM,
	SOURCE_CHANNEL,
	SOURCE_DOORBELL,
	SOURCE_SIGNAL,
	SOURCE_CONNECTION,
};

struct source {
	enum source_type type;
};

struct connection {
	struct source source;
	struct echo_conn echo;
	enum echo_want want;
	uint64_t last_active_ms;
	struct admission_ticket ticket; /* MaxConnectionsPerSource= */
	enum ledger_origin origin;
	uint64_t queued_ms; /* when it last moved to the tail of the list */
	/* Least-recently-queued first; a connection is queued again within
	 * LRU_MOVE_MS of any activity, so checking the head alone finds every
	 * idle connection at most that late. */
	struct connection *prev, *next;
};

struct conns {
	int epoll_fd; /* the worker's */
	const struct config *config;
	struct ledger *ledger;
	struct admission_table *sources; /* MaxConnectionsPerSource=, or NULL */
	pid_t pid;			 /* owns this process's per-source counts */
	unsigned n;
	struct connection *head, *tail; /* idle order: oldest first */
	/* Bytes moved since the last turn of the loop: added to the scoreboard
	 * once per turn, not with an atomic per event. */
	struct echo_io io_pending;
	char *buffer;
};

int conns_init(struct conns *cs, int epoll_fd, const struct config *config, struct ledger *ledger,
	       struct admission_table *sources);
/* Closes every connection. */
void conns_done(struct conns *cs);

/* Takes fd and owed (malloc()ed, or NULL): served or closed and freed on
 * every path. owed is what a previous echod read on this connection and
 * had not yet written back: it goes out before anything else. The
 * connection is already counted, ledger_take(origin). is_tcp: set
 * TCP_NODELAY. from: its peer's address if accept() gave it, else NULL.
 * Returns 0, or -errno when it was refused or could not be set up. */
int conns_add(struct conns *cs, int fd, enum ledger_origin origin, bool is_tcp,
	      const struct sockaddr *from, char *owed, size_t owed_len);
/* Ends c: the socket is closed. */
void conns_close(struct conns *cs, struct connection *c);
/* Lets c go to another process that now holds its socket too (the fd
 * store, the supervisor): this process forgets it. */
void conns_give_away(struct conns *cs, struct connection *c);
/* An epoll event for c. */
void conns_handle(struct conns *cs, struct connection *c, uint32_t events, uint64_t now);
/* IdleTimeoutSec=: closes what has been idle too long. */
void conns_expire(struct conns *cs, uint64_t now);
/* When the oldest connection goes idle, or 0 (none, no timeout). */
uint64_t conns_next_expiry(const struct conns *cs);
void conns_flush_io(struct conns *cs);

/* The least recently active connection, and the one after c; NULL at the
 * end. */
static inline struct connection *
conns_oldest(const struct conns *cs)
{
	return cs->head;
}
