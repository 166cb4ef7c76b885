/* Model=fork: one child process per connection, running the shared worker
 * loop on that one connection. On a reload (SIGUSR2) each sends its
 * connection back over the channel they share (pool_env.returns), for
 * the new generation.
 *
 * The connection forker (forker-link.h) forks them when it can be had;
 * the supervisor forks them itself when it cannot, or once it died. */
#pragma once

#include "arrival.h"

#include <stdbool.h>
#include <sys/types.h>

#include "config.h"
#include "forker-link.h"
#include "pool.h"

struct children {
	/* Those the supervisor forked itself. */
	pid_t *pids;
	unsigned n;
	unsigned capacity;
	struct forker_link forker;
	uint64_t forker_event; /* the forker's channel's epoll tag */
	int slot; /* the scoreboard slot every child (and the supervisor) counts into */
	pid_t parent; /* the supervisor: a child checks it still has that parent */
};

int children_init(struct children *c, struct scoreboard *sb, uint64_t forker_event);
void children_done(struct children *c);
/* Starts the connection forker, unless it runs or could not be had (the
 * supervisor then forks itself, and says so). */
void children_start_forker(struct children *c, const struct pool_env *env);
/* Connection processes alive, whoever forked them. */
unsigned children_alive(const struct children *c);
/* Makes room for up to max live children (after a reload raised it). */
int children_reserve(struct children *c, unsigned max);

/* Takes a->fd on success: a child serves it; the parent's copy is closed
 * at once. Returns 0, or -errno when fork() failed: the fd is still the
 * caller's, to retry with once processes free up (-EAGAIN, -ENOMEM), or
 * once the connection forker catches up (-EBUSY: its channel is full). */
int children_fork(struct children *c, const struct pool_env *env, const struct config *config,
		  unsigned generation, const struct arrival *a);
/* The same for a connection taken back after a restart: owed_fd (a sealed
 * memfd, see kept.h, or -1) holds what the previous echod owed on it,
 * written back first. Takes fd as above; never owed_fd. */
int children_fork_kept(struct children *c, const struct pool_env *env,
			   const struct config *config, unsigned generation, int fd, int owed_fd);
/* Forgets a child that exited (the forker too); false if pid was not one
 * of ours. */
bool children_exited(struct children *c, struct scoreboard *sb, pid_t pid, int status);
/* A process the supervisor reaped that was nobody's it knows: a connection
 * process the forker left when it died (the supervisor is the forker's
 * children's subreaper); settled as one of its own would be. */
void children_orphan_exited(struct children *c, struct scoreboard *sb, pid_t pid, int status);
/* The forker's channel is readable: the exits it reports. */
void children_forker_readable(struct children *c, struct scoreboard *sb);
void children_signal(struct children *c, int sig);
