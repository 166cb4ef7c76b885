#include "children.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "address.h"
#include "admission.h"
#include "fdpass.h"
#include "ledger.h"
#include "log.h"
#include "proctitle.h"
#include "util.h"
#include "worker.h"

int
children_init(struct children *c, struct scoreboard *sb, uint64_t forker_event)
{
	int slot = scoreboard_find_free(sb);

	*c = (struct children){.slot = -1, .parent = getpid(), .forker_event = forker_event};
	forker_link_init(&c->forker);
	if (slot < 0)
		return slot;
	scoreboard_slot_reset(sb, (unsigned)slot);
	sb->slots[slot].pid = c->parent;
	scoreboard_slot_start(sb, (unsigned)slot, 0);
	SB_SET(sb->slots[slot].state, SLOT_RUNNING);
	c->slot = slot;
	return 0;
}

void
children_done(struct children *c)
{
	forker_link_free(&c->forker);
	free(c->pids);
	c->pids = NULL;
	c->n = c->capacity = 0;
}

unsigned
children_alive(const struct children *c)
{
	return c->n + c->forker.alive;
}

int
children_reserve(struct children *c, unsigned max)
{
	pid_t *pids;

	if (max <= c->capacity)
		return 0;
	/* Grown one at a time (kept connections), it doubles. */
	if (max < 2 * c->capacity)
		max = 2 * c->capacity;
	pids = realloc(c->pids, max * sizeof(*pids));
	if (!pids)
		return -ENOMEM;
	c->pids = pids;
	c->capacity = max;
	return 0;
}

/* The title is formatted here, before fork(): every code page a new
 * process runs is a page fault (fork copies no mapping of code), so the
 * connection process should not be the one running getpeername() and
 * printf's machinery, which the supervisor has mapped already. */
static void
format_title(const struct arrival *a, char *title, size_t size)
{
	char peer[128];

	if (a->peer_len > 0)
		address_format((const struct sockaddr *)&a->peer, a->peer_len, peer, sizeof(peer));
	else
		address_format_peer(a->fd, peer, sizeof(peer));
	snprintf(title, size, PROCTITLE_CONNECTION, peer);
}

static _Noreturn void
child_main(const struct pool_env *env, const struct config *config, int slot, int fd, bool kept,
	   bool proxy, int owed_fd, pid_t parent, const char *title)
{
	struct fd_closer drop = {0};

	/* The child serves one connection: no listener of ours may stay open
	 * in it (clients could queue on a socket nobody accepts from after
	 * the supervisor exits). */
	for (size_t i = 0; i < env->sockets->n; i++)
		fd_closer_add(&drop, env->sockets->items[i].fd);
	/* The doorbell is for prefork workers standing by (worker-intake.c);
	 * a connection process never rings it or listens. Its number lies
	 * between the listeners' and the loop's: closed with them, it saves
	 * a close() per connection. */
	fd_closer_add(&drop, env->scoreboard->doorbell);
	pool_env_enter_child(env, parent, fd, owed_fd, &drop);
	log_set_context("connection");
	proctitle_set_text("echod conn", title);
	struct worker_setup setup = {
	    .config = config,
	    .scoreboard = env->scoreboard,
	    .slot = slot,
	    .channel = -1,
	    .returns = env->returns[FDPASS_WORKER],
	    .intake = INTAKE_ONE,
	    .connection = fd,
	    .connection_tuned = true,
	    .connection_proxy = proxy,
	    .connection_kept = kept,
	    .connection_owed_fd = owed_fd,
	    .signals_entered = true,
	};
	_exit(worker_run(&setup));
}

/* Takes a->fd on success (see children.h); never owed_fd. */
static int
fork_here(struct children *c, const struct pool_env *env, const struct config *config,
	  const struct arrival *a, bool kept, int owed_fd)
{
	int fd = a->fd;
	bool proxy = a->proxy;
	pid_t pid;
	char title[160];

	if (c->n >= c->capacity)
		return -ENOSPC;
	format_title(a, title, sizeof(title));
	pid = fork();
	if (pid < 0)
		return negative_errno();
	if (pid == 0)
		child_main(env, config, c->slot, fd, kept, proxy, owed_fd, c->parent, title);
	close(fd);
	c->pids[c->n++] = pid;
	return 0;
}

void
children_start_forker(struct children *c, const struct pool_env *env)
{
	if (c->forker.pid == 0 && !c->forker.unavailable)
		(void)forker_link_start(&c->forker, env, c->slot, c->forker_event);
}

static int
fork_child(struct children *c, const struct pool_env *env, const struct config *config,
	   unsigned generation, const struct arrival *a, bool kept, int owed_fd)
{
	enum fdpass_tag tag = kept ? FDPASS_KEPT : a->proxy ? FDPASS_PROXY : FDPASS_CONN;
	int r;

	if (c->forker.pid > 0) {
		r = forker_link_send(&c->forker, config, generation, tag, a->fd, owed_fd);
		/* Its channel full, or too many fds in flight (the channel's
		 * kind of full): the forker is behind. */
		if (r == -EAGAIN || r == -ETOOMANYREFS)
			r = -EBUSY;
		/* Gone: this one is forked here, and its SIGCHLD tells the
		 * rest. */
		if (r != -EPIPE)
			return r;
	}
	return fork_here(c, env, config, a, kept, owed_fd);
}

int
children_fork(struct children *c, const struct pool_env *env, const struct config *config,
	      unsigned generation, const struct arrival *a)
{
	return fork_child(c, env, config, generation, a, false, -1);
}

int
children_fork_kept(struct children *c, const struct pool_env *env,
		       const struct config *config, unsigned generation, int fd, int owed_fd)
{
	return fork_child(c, env, config, generation, &(struct arrival){.fd = fd}, true, owed_fd);
}

/* What a connection process that did not end cleanly may have left
 * counted: its per-source counts, and (killed) its open connection. */
static void
settle(struct children *c, struct scoreboard *sb, pid_t pid, int status)
{
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		admission_forget_owner(sb->sources, pid);
	if (WIFSIGNALED(status) && c->slot >= 0)
		ledger_settle_one(sb, (unsigned)c->slot);
}

bool
children_exited(struct children *c, struct scoreboard *sb, pid_t pid, int status)
{
	if (forker_link_is(&c->forker, pid)) {
		forker_link_lost(&c->forker, status);
		return true;
	}
	for (unsigned i = 0; i < c->n; i++) {
		if (c->pids[i] != pid)
			continue;
		c->pids[i] = c->pids[--c->n];
		settle(c, sb, pid, status);
		return true;
	}
	return false;
}

void
children_orphan_exited(struct children *c, struct scoreboard *sb, pid_t pid, int status)
{
	if (c->forker.orphans > 0) {
		c->forker.orphans--;
		settle(c, sb, pid, status);
	}
}

struct reported {
	struct children *children;
	struct scoreboard *scoreboard;
};

static void
reported_exit(void *userdata, pid_t pid, int status)
{
	struct reported *r = userdata;

	settle(r->children, r->scoreboard, pid, status);
}

void
children_forker_readable(struct children *c, struct scoreboard *sb)
{
	forker_link_receive(&c->forker, reported_exit,
			    &(struct reported){.children = c, .scoreboard = sb});
}

void
children_signal(struct children *c, int sig)
{
	for (unsigned i = 0; i < c->n; i++)
		kill(c->pids[i], sig);
	forker_link_signal(&c->forker, sig);
}
