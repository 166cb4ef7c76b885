/* A pool: one generation of worker processes, all started with the same
 * configuration. The supervisor keeps the current pool serving and, after
 * a reload, older pools retiring until their last worker has exited. */
#pragma once

#include "fdclose.h"

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "accept.h"
#include "config.h"
#include "fdpass.h"
#include "listen.h"
#include "restart.h"
#include "scoreboard.h"
#include "worker.h"

/* What every pool's workers share with the supervisor. */
struct metrics;

struct pool_env {
	int epoll_fd;	/* the supervisor's: closed in workers */
	int signal_fd;	/* likewise */
	struct scoreboard *scoreboard;
	const struct listen_set *sockets;
	struct pool *pools; /* every pool, current first: for closing channels */
	/* Tag for a channel's epoll registration: (tag | fd) in data.u64. */
	uint64_t channel_event;
	struct worker_signals signals; /* the supervisor's, as children inherit them */
	/* The channel fork's connection processes share to send their
	 * connections back on a reload ([FDPASS_WORKER], inherited by them
	 * alone); the supervisor reads [FDPASS_SUPERVISOR]. -1 if none. */
	int returns[2];
	/* Connections the supervisor holds until a process takes them: kept
	 * ones (the keeper's queue, or NULL) and one waiting for fork() to
	 * work again, or for a passfd channel with room (held.h, or NULL). Closed in every child but
	 * the one forked to serve one of them, or a connection that ends
	 * elsewhere would stay open in its siblings, and its client would
	 * never read EOF. */
	const struct restart_queue *waiting;
	const int *held_fd;
	const struct metrics *metrics; /* its fds are closed in children; may be NULL */
	/* The supervisor's end of the connection forker's channel (-1: none),
	 * or NULL: held by a worker, it would hide the supervisor's exit
	 * from the forker. And the forker's binary (O_PATH), for tidiness. */
	const int *forker_channel;
	const int *forker_exe;
};

/* A passfd worker that takes new connections alone has no more than this
 * many on their way to it while it keeps up: one accepting turn of the
 * supervisor's (ACCEPT_BATCH, sent as they are queued, in messages of
 * FDPASS_BATCH), and the worker takes what is on its channel at every turn
 * of its own. More means it is stopped or stuck. */
#define POOL_ALONE_IN_FLIGHT ACCEPT_BATCH

/* passfd: the new connections picked for one worker during the
 * supervisor's current accepting turn, sent to it as one message when the
 * turn ends (pool_flush()) or FDPASS_BATCH are queued. Between turns it
 * holds only connections no worker had room for. Each is counted in its
 * position's sent from the moment it is queued. */
struct outbox {
	unsigned n;
	int fds[FDPASS_BATCH];
	enum fdpass_tag tags[FDPASS_BATCH];
};

/* One place in the pool ("worker 0" .. "worker N-1"): the process that
 * fills it now and how often processes in it failed to start. */
struct position {
	pid_t pid; /* 0 while empty */
	int slot;
	uint64_t started_ms;
	unsigned quick_deaths;
	uint64_t respawn_at_ms; /* 0: no respawn pending */
	/* passfd: our end of the worker's channel, and connections sent on it
	 * (compared with what the worker counts as taken or lost, this gives
	 * those still in flight). */
	int channel;
	uint64_t sent;
	bool hung_up; /* the worker's end closed: send nothing more */
	struct outbox out;
};

struct pool {
	struct config config; /* this generation's, owned */
	unsigned generation;
	bool retiring; /* draining: nothing respawned, nothing sent */
	enum intake_kind intake; /* how its workers get connections */
	unsigned n;
	struct position *positions;
	bool *skip; /* scratch for the sends: workers that refused */
	/* The last pool_flush() left connections queued: no channel had room. */
	bool stalled;
	struct pool *next;
};

/* First thing in any child of the supervisor (worker or connection
 * process): default signal state, none of the supervisor's event-loop fds,
 * workers' channels or waiting kept connections left open (but keep_fd and
 * keep_owed_fd, what this child is to serve, or -1), and death with the
 * supervisor. The fds in `also`, which the child drops besides, are closed
 * with the rest, in as few system calls as their numbers allow. */
void pool_env_enter_child(const struct pool_env *env, pid_t parent, int keep_fd, int keep_owed_fd,
			  struct fd_closer *also);

/* Allocates a pool of n positions with a copy of config, whose workers get
 * connections by intake (all but INTAKE_NONE get a channel). */
int pool_new(const struct config *config, unsigned generation, unsigned n, enum intake_kind intake,
	     struct pool **ret);
void pool_free(const struct pool_env *env, struct pool *p);

/* Starts the worker at position index. Logs its own errors. */
int pool_spawn(const struct pool_env *env, struct pool *p, unsigned index, uint64_t now);
int pool_start(const struct pool_env *env, struct pool *p, uint64_t now);

/* How long a position waits before its next worker, after quick_deaths
 * failures to start in a row: 100 ms, doubling, at most 30 s. A worker
 * that starts (or runs 10 s) sets the count back to 0. */
unsigned pool_backoff_ms(unsigned quick_deaths);

/* The position a pid fills, or -1. */
int pool_find(const struct pool *p, pid_t pid);
/* Records the exit of the worker at index: frees its slot, and (unless the
 * pool is retiring or stopping) schedules its replacement, with a back-off
 * when it died right after starting. */
void pool_worker_exited(const struct pool_env *env, struct pool *p, unsigned index, int status,
			uint64_t now, bool stopping);
void pool_respawn_due(const struct pool_env *env, struct pool *p, uint64_t now);
/* The earliest pending respawn, or 0. */
uint64_t pool_next_respawn(const struct pool *p);
void pool_cancel_respawns(struct pool *p);

unsigned pool_alive(const struct pool *p);
bool pool_all_running(const struct pool_env *env, const struct pool *p);
void pool_signal(const struct pool *p, int sig);
/* Retires the pool: its workers stop taking connections and finish theirs.
 * With returns, they send their connections back over their channels
 * instead (for the next generation), and the channels are watched for
 * them (EPOLLIN). */
void pool_retire(const struct pool_env *env, struct pool *p, bool returns);

/* Whether some worker could take a new connection now. */
bool pool_can_take(const struct pool_env *env, const struct pool *p);
/* Sends a kept connection and its owed bytes (owed_fd, or -1; see kept.h)
 * to the least loaded worker, at once. Takes neither fd: the caller closes
 * them after success, and keeps them to try again after -EAGAIN. Returns
 * 0, or -EAGAIN / -ETOOMANYREFS (pause) or another error when no worker
 * took it. */
int pool_send_kept(const struct pool_env *env, struct pool *p, int fd, int owed_fd);
/* A new connection (proxy: from a proxy listener) queued for the worker
 * that should take it, counted as on its way there: 0, and pool_flush()
 * sends it; -EAGAIN when no worker has room (fd stays the caller's). */
int pool_queue(const struct pool_env *env, struct pool *p, int fd, bool proxy);
/* Sends every worker what is queued for it, one message each, and closes
 * the supervisor's copies of what went. What a worker's full or closed
 * channel refuses goes to another worker with room, or stays queued for
 * the next call (pool_stalled()). Returns how many connections were lost
 * (their reservations given back), which only an error the channel never
 * gives in practice causes. */
unsigned pool_flush(const struct pool_env *env, struct pool *p);
/* Connections wait in p's queues for a channel with room (queued in an
 * accepting turn and not sent when it ended). */
bool pool_stalled(const struct pool *p);
/* A reload retired a generation while connections were queued for its
 * workers (a flush found their channels full). A retiring worker reads
 * its channel dry once, as it gives its connections back, and not after,
 * and nothing more is sent to it: what is still queued for it goes to p's
 * workers instead (p: the current generation, the older ones after it),
 * oldest first, as they have room. */
void pool_adopt_retired_queues(const struct pool_env *env, struct pool *p);
/* A stop, or a reload to another model: closes what p's queues hold and
 * gives their reservations back. Returns how many. */
unsigned pool_drop_queued(const struct pool_env *env, struct pool *p);

/* The supervisor's end of the channel of the worker at index, or -1. */
int pool_channel_of(const struct pool *p, unsigned index);
/* Whether fd is the channel of a worker in pools: an event of an epoll
 * batch may name a channel closed (and its number reused) by an earlier
 * one. */
bool pool_is_channel(const struct pool *pools, int fd);
/* A channel hung up: its worker is dying; send it nothing more. */
void pool_channel_hung_up(const struct pool_env *env, struct pool *pools, int fd);

/* "exited with status 1", "killed by signal KILL (core dumped)". */
void describe_exit_status(int status, char *buf, size_t size);
