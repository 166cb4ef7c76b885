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
#include "proxy.h"
#include "waitset.h"

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

/* A connection that came through a proxy listener. */
struct conn_proxy {
	struct proxy_parser parser; /* while its header is read */
	uint64_t deadline_ms;	    /* the header is due (ProxyHeaderTimeoutSec=) */
	/* The client the header named; client_len 0: the balancer's own
	 * address stands (LOCAL, UNKNOWN, ...). */
	struct sockaddr_storage client;
	socklen_t client_len;
};

struct connection {
	struct source source;
	struct echo_conn echo;
	enum echo_want want;
	uint64_t last_active_ms;
	uint64_t opened_ms;		/* when this process took it */
	struct admission_ticket ticket; /* MaxConnectionsPerSource= */
	enum ledger_origin origin;
	/* Through a proxy listener, or kept after it: else NULL. */
	struct conn_proxy *proxy;
	/* Its PROXY header is not complete yet: it is on the header list,
	 * not the idle one, and echoes nothing. */
	bool in_header;
	uint64_t queued_ms; /* when it last moved to the tail of the list */
	/* Least-recently-queued first; a connection is queued again within
	 * LRU_MOVE_MS of any activity, so checking the head alone finds every
	 * idle connection at most that late. */
	struct connection *prev, *next;
};

struct conns {
	struct waitset *waitset; /* the worker's */
	const struct config *config;
	struct ledger *ledger;
	struct admission_table *sources; /* MaxConnectionsPerSource=, or NULL */
	pid_t pid;			 /* owns this process's per-source counts */
	unsigned n;
	struct connection *head, *tail; /* idle order: oldest first */
	/* Connections still reading their PROXY header, oldest (first due)
	 * first; not kept across a restart or reload: they finish here. */
	struct connection *header_head, *header_tail;
	/* Bytes moved since the last turn of the loop: added to the scoreboard
	 * once per turn, not with an atomic per event. */
	struct echo_io io_pending;
	/* One connection's storage, used before the heap's: a Model=fork
	 * connection process serves its one connection without writing a
	 * heap page, each of which would cost it a copy-on-write fault. */
	struct connection first;
	bool first_in_use;
	/* How long connections closed here lately had lived: a moving
	 * average, CONNS_LIFETIME_START_MS before the first one. */
	uint64_t lifetime_ms;
};

/* Connections that live shorter lives than this, on average, are short
 * lived (see conns_short_lived()); one that never closed counts as long
 * lived, and so does a worker that has closed none yet. */
#define CONNS_SHORT_LIVED_MS 100
#define CONNS_LIFETIME_START_MS (10 * CONNS_SHORT_LIVED_MS)

void conns_init(struct conns *cs, struct waitset *waitset, const struct config *config,
		struct ledger *ledger, struct admission_table *sources);
/* Closes every connection. */
void conns_done(struct conns *cs);

/* How a connection arrives. */
struct conn_arrival {
	enum ledger_origin origin;
	bool is_tcp; /* set TCP_NODELAY: not accepted from a listener of ours */
	/* To a proxy listener: from a balancer in ProxyFrom=, and a PROXY
	 * header comes before the client's bytes. */
	bool proxy;
	const struct sockaddr *from; /* its peer's address if accept() gave it, else NULL */
	/* Kept: the client a PROXY header named before (the socket's peer
	 * is the balancer), or NULL. */
	const struct sockaddr *client;
	socklen_t client_len;
	/* What a previous echod read on this connection and had not yet
	 * written back (malloc()ed, or NULL): it goes out before anything
	 * else. */
	char *owed;
	size_t owed_len;
	/* Most likely readable already (a connection handed to a new
	 * process, its client's bytes in by now): served at once, an
	 * epoll_wait() sooner. */
	bool readable;
};

/* Takes fd and a->owed: served or closed and freed on every path. The
 * connection is already counted, ledger_take(a->origin). Returns 0, or
 * -errno when it was refused or could not be set up. */
int conns_add(struct conns *cs, int fd, const struct conn_arrival *a);
/* The client c serves: the one its PROXY header named, else NULL (its
 * socket's peer). */
const struct sockaddr *conns_client(const struct connection *c, socklen_t *ret_len);
/* Ends c: the socket is closed. */
void conns_close(struct conns *cs, struct connection *c);
/* Whether the connections closed here lately lived short lives (a busy
 * client connecting, echoing once and closing, or a health check), as
 * opposed to being held: prefork's fair share looks at it. */
bool conns_short_lived(const struct conns *cs);
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
