/* The scoreboard: shared memory, one slot per worker, mapped before the
 * first fork so the supervisor and every worker see the same pages. A
 * worker writes only its own slot; the supervisor reads all of them. What
 * counts connections (the header's reservation, a slot's active, served,
 * received, lost and refused) is written by ledger.c alone; nothing but
 * these two files touches the header. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define SCOREBOARD_SLOTS 2048

enum slot_state {
	SLOT_EMPTY = 0,
	SLOT_STARTING, /* forked, loop not yet up */
	SLOT_RUNNING,  /* taking connections */
	SLOT_DRAINING, /* finishing its connections, taking no new ones */
};

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
	uint64_t refused;	/* closed at once: AllowFrom=/DenyFrom= or over
				 * MaxConnectionsPerSource= */
	uint64_t refused_access; /* of those, by AllowFrom=/DenyFrom= */
	uint64_t dgrams_in;
	uint64_t dgrams_out;
	uint64_t dgrams_dropped;
	uint64_t heartbeat;	/* bumped by every turn of the worker's loop */
	uint32_t capacity;	/* connections its fd limit leaves room for, 0: unknown */
} __attribute__((aligned(64)));

struct scoreboard_header {
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
	/* MaxConnectionsPerSource=: shared like the scoreboard, or NULL. */
	struct admission_table *sources;
	/* An eventfd every prefork worker watches (edge-triggered, so each
	 * write wakes all of them): rung by a worker that stops accepting
	 * while a listener may still hold connections, since the kernel woke
	 * it alone for them (EPOLLEXCLUSIVE). */
	int doorbell;
};

struct scoreboard_totals {
	unsigned workers_running;
	uint64_t active, served, bytes_in, bytes_out, lost;
	uint64_t dgrams_in, dgrams_out, dgrams_dropped;
	uint64_t refused, refused_access, accept_pauses;
};

int scoreboard_new(struct scoreboard *ret, unsigned n_slots, unsigned max_connections);
void scoreboard_free(struct scoreboard *sb);

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
