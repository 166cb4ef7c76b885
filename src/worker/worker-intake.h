/* The worker's intake: how connections reach it (one enum intake_kind, see
 * worker.h) and when it takes them: room under WorkerConnections= and its
 * fd limit, MaxConnections=, its fair share, ConnectionRateLimit=. It puts
 * what it takes into the worker's connections (worker-conns.h) and returns
 * to the loop whatever the loop must act on. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "ledger.h"
#include "listen.h"
#include "worker-conns.h"
#include "worker-setup.h"

struct listener_source {
	struct source source;
	const struct listener *listener;
	bool polled;
};

/* Why a worker that has room keeps its listeners out of the epoll set. */
enum intake_hold {
	HOLD_NONE,
	HOLD_SHARE, /* it holds more than its fair share: peers take the next */
	HOLD_LIMIT, /* MaxConnections= was reached when it was woken */
};

/* How busy the worker has been, over windows of INTAKE_BUSY_WINDOW_US: the
 * CPU time it used (not the time it spent outside epoll_wait(), which
 * also counts the time it was runnable but waiting for a core). */
struct intake_load {
	uint64_t window_start_us; /* CLOCK_MONOTONIC, 0: none yet */
	uint64_t window_start_cpu_us;
	bool busy; /* the last window's verdict, with hysteresis */
};

/* A worker before this one (a lower scoreboard slot), as last seen: its
 * heartbeat and when that last moved. One whose loop stands still is not
 * relied on to accept (see intake_standing_by()). */
struct intake_peer {
	uint64_t heartbeat;
	uint64_t moved_ms;
};

struct intake {
	enum intake_kind kind;
	struct waitset *waitset; /* the worker's */
	const struct config *config;
	struct scoreboard *scoreboard; /* NULL: no service-wide counts */
	struct ledger *ledger;
	struct conns *conns;
	int channel; /* from the supervisor, or -1 */
	struct source channel_source;
	struct source doorbell_source;	   /* the scoreboard's, INTAKE_LISTENERS */
	struct listener_source *listeners; /* INTAKE_LISTENERS */
	size_t n_listeners;
	bool accepting;		   /* listeners are in the epoll set */
	bool polled_all;	   /* all of them: none failed to go in */
	uint64_t accept_resume_ms; /* after an fd shortage or the rate limit, 0 if none */
	enum intake_hold hold;
	bool stopped;	     /* draining: nothing more is taken */
	unsigned capacity;   /* WorkerConnections=, or fewer if fds are short */
	int pending_owed_fd; /* owed bytes for the kept connection to come next, or -1 */
	struct intake_load load;
	struct intake_peer *peers; /* one per slot before this worker's, INTAKE_LISTENERS */
	size_t n_peers;
};

/* A worker that used this share of a core over a window is busy; it is
 * keeping up again below the lower figure. */
#define INTAKE_BUSY_WINDOW_US 100000
#define INTAKE_BUSY_PERCENT 80
#define INTAKE_KEEPING_UP_PERCENT 50
/* A worker before this one whose loop has not turned for this long (it
 * turns every HEARTBEAT_MS when idle) is not relied on to accept. */
#define INTAKE_LEADER_STALE_MS 1000

/* What intake_decide() says of one more connection. */
enum intake_decision {
	INTAKE_TAKE,	/* go ahead: counted (reserved, active) */
	INTAKE_NO_ROOM, /* this worker is full (WorkerConnections=, fd limit) */
	INTAKE_CAP,	/* MaxConnections= across the service: hold */
	INTAKE_RATE,	/* ConnectionRateLimit=: until accept_resume_ms */
};

int intake_init(struct intake *in, const struct worker_setup *setup, struct waitset *waitset,
		struct ledger *ledger, struct conns *conns);
void intake_done(struct intake *in);

/* Room, MaxConnections= and rate for one more accept(), in that order; on
 * INTAKE_TAKE the connection is counted and the caller either accepts one
 * or undoes it with intake_undo(). The fair share is not looked at here:
 * a worker over it hands what is queued to a peer by the doorbell
 * (intake_accept()). */
enum intake_decision intake_decide(struct intake *in, uint64_t now);
void intake_undo(struct intake *in);
/* Whether this worker holds more than its share of the service's
 * connections (prefork, two workers or more). */
bool intake_over_fair_share(const struct intake *in);
/* Sets capacity from WorkerConnections= and the fd limit; logs when the
 * limit leaves less. */
void intake_set_capacity(struct intake *in);

/* A turn of the loop at now_us: once a window is over, the CPU time used
 * over it says whether this worker is busy (INTAKE_LISTENERS,
 * INTAKE_CHANNEL), and that goes to its scoreboard slot. */
void intake_account(struct intake *in, uint64_t now_us);
/* The same, given the process's CPU time cpu_us (for tests). */
void intake_account_cpu(struct intake *in, uint64_t now_us, uint64_t cpu_us);
/* Whether a worker before this one (a lower scoreboard slot) watches the
 * listeners and keeps up, so that this one need not (INTAKE_LISTENERS,
 * two workers or more). */
bool intake_standing_by(struct intake *in, uint64_t now);

/* Whether to be accepting now, and makes it so (INTAKE_LISTENERS). */
void intake_update(struct intake *in, uint64_t now);
/* The kernel woke this worker for l: accepts what is queued, up to this
 * worker's fair share; the rest goes to peers by the doorbell. */
void intake_accept(struct intake *in, const struct listener *l, uint64_t now);
/* Reads the channel dry, or until it took max connections. -ECONNRESET:
 * the supervisor closed it (the loop drains); else 0. */
int intake_receive(struct intake *in, unsigned max);
/* Takes fd, a kept connection, and owed_fd (its owed bytes, or -1). */
void intake_kept(struct intake *in, int fd, int owed_fd);
/* A peer rang the scoreboard's doorbell: look at the listeners. */
void intake_doorbell(struct intake *in, uint64_t now);
/* Draining: listeners and channel out of the epoll set for good. */
void intake_stop(struct intake *in);
/* When the loop must turn again for the intake, or 0. */
uint64_t intake_next_wakeup(const struct intake *in, uint64_t now);
