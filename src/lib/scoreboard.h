/* The scoreboard: shared memory, one slot per worker, mapped before the
 * first fork so the supervisor and every worker see the same pages. A
 * worker writes only its own slot; the supervisor reads all of them. What
 * counts connections (the header's reservation, a slot's active, served,
 * received, lost and refused) is written by ledger.c alone; nothing but
 * these two files touches the header.
 *
 * Given a runtime directory, the pages are those of the file
 * DIR/scoreboard, so that `echod status` (another process, maybe another
 * user) can map it read-only: see scoreboard_open() and
 * scoreboard_snapshot(). Such a reader never writes, and never sees
 * garbage: every counter is one aligned atomic word, and the one multi-word
 * change, a slot emptied into the retired totals, runs inside a seqlock
 * (header->reset_seq) that the reader retries around. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define SCOREBOARD_SLOTS 2048
#define SCOREBOARD_FILE "scoreboard"
/* "echodSB3": a file of another layout is not read as this one (2:
 * refused_proxy; 3: watching). */
#define SCOREBOARD_MAGIC UINT64_C(0x3342536468636f65)
#define SCOREBOARD_MODEL_MAX 16

/* Why a datagram was dropped (udp.h's dropped_*). */
enum scoreboard_drop {
	DROP_PORT,
	DROP_ADDRESS,
	DROP_TRUNCATED,
	DROP_ACCESS,
	DROP_RATELIMIT,
	DROP_SEND,
	DROP_REASONS,
};

enum slot_state {
	SLOT_EMPTY = 0,
	SLOT_STARTING, /* forked, loop not yet up */
	SLOT_RUNNING,  /* taking connections */
	SLOT_DRAINING, /* finishing its connections, taking no new ones */
};

/* Whether a worker takes new connections, and whether alone, as it last
 * said. A prefork worker watches the listening sockets, and one after it
 * stands by while it watches alone (worker-intake.c); to a passfd worker
 * that takes them alone the supervisor sends every new connection, and to
 * none other (pool.c). */
enum slot_watching {
	WATCHING_NONE = 0, /* taking none: full, over its share, paused, standing
			    * by, draining; or not said yet */
	WATCHING_ALONE,	   /* taking them, keeping up with short-lived
			    * connections: the others may stand by */
	WATCHING_SHARED,   /* taking them, and wants the others taking them too:
			    * it is busy, or its connections are held */
};

/* While the connections a worker closes live short lives, it has no share
 * to keep to below this many: one worker serving a few dozen clients that
 * connect, echo and close costs less CPU than two woken by turns, and
 * where they land matters for no longer than they live. Held connections
 * (long lived, or none closed yet) always spread evenly. */
#define SHARE_FLOOR 128

/* Counters are updated with relaxed atomics: each is exact on its own,
 * a set of them read together is only a snapshot. */
struct scoreboard_slot {
	pid_t pid;
	uint32_t state;
	uint32_t generation;
	uint32_t active;	/* connections open now */
	uint64_t served;	/* new connections taken since the slot was filled */
	uint64_t received;	/* fds taken off its channel (see ledger.h) */
	uint64_t bytes_in;
	uint64_t bytes_out;
	uint64_t lost;		/* connections lost on the way in (fd limit) */
	uint64_t refused;	/* closed at once: AllowFrom=/DenyFrom=, over
				 * MaxConnectionsPerSource=, or no good PROXY header */
	uint64_t refused_access; /* of those, by AllowFrom=/DenyFrom= */
	uint64_t refused_proxy;	 /* of those, on a proxy listener: not from ProxyFrom=,
				  * a malformed or oversized header, or none in time */
	uint64_t dgrams_in;
	uint64_t dgrams_out;
	uint64_t dgrams_dropped[DROP_REASONS];
	uint64_t heartbeat;	/* bumped by every turn of the worker's loop */
	uint32_t watching;	/* enum slot_watching */
	uint32_t capacity;	/* connections its fd limit leaves room for, 0: unknown */
	uint64_t started_usec;	/* CLOCK_MONOTONIC, when the slot was filled */
} __attribute__((aligned(64)));

struct scoreboard_header {
	uint64_t magic;		/* SCOREBOARD_MAGIC, written last */
	uint32_t n_slots;
	pid_t supervisor;
	char model[SCOREBOARD_MODEL_MAX]; /* the current generation's, NUL-terminated */
	uint32_t generation;
	/* Odd while a slot is being emptied into retired: see the top. */
	uint32_t reset_seq;
	uint64_t started_usec;	/* CLOCK_MONOTONIC */
	uint64_t reloads_ok, reloads_failed;
	uint64_t kept_back;	/* connections a retiring worker returned on a reload */
	/* Connections waiting in the listeners' accept queues (the kernel
	 * reports it for TCP), and the queues' room, as last sampled. */
	uint32_t accept_queue, accept_queue_max;
	uint32_t active_total; /* reserved connection slots across all workers */
	uint32_t max_connections;
	uint32_t workers;	/* workers sharing the listening sockets */
	uint64_t accept_bucket; /* ConnectionRateLimit=: see ratelimit_shared_take() */
	uint64_t accept_pauses; /* times accepting paused for ConnectionRateLimit= */
	/* What slots that were emptied had counted, so totals never go back. */
	struct scoreboard_slot retired;
};

struct admission_table;

struct scoreboard {
	struct scoreboard_header *header;
	struct scoreboard_slot *slots;
	unsigned n_slots;
	size_t mapping_size;
	/* DIR/scoreboard, removed when the owner frees it; NULL: anonymous,
	 * or mapped read-only by scoreboard_open(). */
	char *path;
	/* MaxConnectionsPerSource=: shared like the scoreboard, or NULL. */
	struct admission_table *sources;
	int sources_fd; /* the memfd behind it (admission.h), or -1 */
	/* An eventfd every prefork worker watches (edge-triggered, so each
	 * write wakes all of them): rung by a worker that stops accepting
	 * while a listener may still hold connections, since the kernel woke
	 * it alone for them (EPOLLEXCLUSIVE). */
	int doorbell;
	/* What the mapping is of (the file, or a memfd), kept open by the
	 * supervisor for the connection forker; -1 in a reader. */
	int fd;
};

struct scoreboard_totals {
	unsigned workers_running;
	uint64_t active, served, bytes_in, bytes_out, lost;
	uint64_t dgrams_in, dgrams_out, dgrams_dropped;
	uint64_t dropped[DROP_REASONS];
	uint64_t refused, refused_access, refused_proxy, accept_pauses;
};

/* dir NULL: anonymous pages, for this process tree alone. Otherwise
 * DIR/scoreboard, created readable by its owner only (the runtime
 * directory's mode says who else may look) and removed by
 * scoreboard_free(). */
int scoreboard_new(struct scoreboard *ret, unsigned n_slots, unsigned max_connections,
		   const char *dir);
void scoreboard_free(struct scoreboard *sb);

/* What the supervisor publishes for readers. */
void scoreboard_set_model(struct scoreboard *sb, const char *model, unsigned generation);
void scoreboard_count_reload(struct scoreboard *sb, bool ok);
void scoreboard_count_kept_back(struct scoreboard *sb, unsigned n);
void scoreboard_set_accept_queue(struct scoreboard *sb, unsigned queued, unsigned room);
/* A slot taken for a new process: when it started. */
void scoreboard_slot_start(struct scoreboard *sb, unsigned i, unsigned generation);

/* --- a reader in another process --- */

/* Maps DIR/scoreboard read-only into ret (doorbell -1, sources NULL; free
 * with scoreboard_free(), which then removes nothing). -ENOENT: no file;
 * -EACCES: not ours to read; -EBADMSG: not a scoreboard of this layout;
 * -ESRCH: the supervisor that wrote it is gone. */
int scoreboard_open(struct scoreboard *ret, const char *dir);

/* Maps the scoreboard behind fd (struct scoreboard.fd, inherited across
 * exec by the connection forker) read-write, without a doorbell or a
 * sources table; fd stays the caller's. -EBADMSG: not a scoreboard of
 * this layout. */
int scoreboard_attach(struct scoreboard *ret, int fd);

/* One consistent reading of everything: one slot per process. */
struct scoreboard_snapshot {
	pid_t supervisor;
	char model[SCOREBOARD_MODEL_MAX];
	unsigned generation;
	uint64_t now_usec, started_usec; /* CLOCK_MONOTONIC */
	unsigned max_connections, reserved;
	unsigned accept_queue, accept_queue_max;
	uint64_t reloads_ok, reloads_failed, kept_back;
	struct scoreboard_totals totals;
	size_t n_slots;
	struct scoreboard_snapshot_slot {
		unsigned index;
		struct scoreboard_slot s;
	} *slots;
};

/* Copies sb; -EAGAIN when slots kept being emptied while it read (it
 * retries a while first). Free with scoreboard_snapshot_free(). */
int scoreboard_snapshot(const struct scoreboard *sb, struct scoreboard_snapshot *ret);
void scoreboard_snapshot_free(struct scoreboard_snapshot *snap);

/* Wakes every process watching sb->doorbell. */
void scoreboard_ring(const struct scoreboard *sb);

/* Clears slot i for a new process, keeping what it counted in the totals. */
void scoreboard_slot_reset(struct scoreboard *sb, unsigned i);
/* Returns a free slot index or -ENOSPC. */
int scoreboard_find_free(const struct scoreboard *sb);

/* The workers sharing the listening sockets (prefork's fair share), 0 in
 * the other models. */
void scoreboard_set_workers(struct scoreboard *sb, unsigned n);
unsigned scoreboard_workers(const struct scoreboard *sb);

/* ConnectionRateLimit=: the one token bucket of the service, and the count
 * of pauses it caused. See ratelimit_shared_take(). */
bool scoreboard_rate_take(struct scoreboard *sb, unsigned rate, uint64_t now_usec,
			  uint64_t *ret_due_usec);
void scoreboard_rate_undo(struct scoreboard *sb, unsigned rate);

void scoreboard_totals(const struct scoreboard *sb, struct scoreboard_totals *ret);

#define SB_ADD(field, n) __atomic_add_fetch(&(field), (n), __ATOMIC_RELAXED)
#define SB_SUB(field, n) __atomic_sub_fetch(&(field), (n), __ATOMIC_RELAXED)
#define SB_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)
#define SB_SET(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)
