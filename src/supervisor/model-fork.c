/* Model=fork: the supervisor accepts (acceptor.c) and forks one connection
 * process per connection (children.c), up to MaxConnections=; the pool
 * holds one worker for datagrams, if there are datagram sockets. */
#include "model.h"

#include <errno.h>
#include <unistd.h>

#include "accept.h"
#include "log.h"

static unsigned
fork_pool_size(const struct config *c, const struct listen_set *sockets)
{
	return listen_set_count(sockets, SOCKET_DATAGRAM) > 0 ? 1 : 0;
}

static int
fork_prepare(struct model_ctx *m, const struct config *c)
{
	return children_reserve(m->children, config_max_connections(c));
}

static void
fork_begin(struct model_ctx *m)
{
	children_start_forker(m->children, m->env);
}

static void
fork_log_start(const struct model_ctx *m)
{
	log_info("fork model: one process per connection, up to %u at once%s",
		 config_max_connections(&m->pool->config),
		 m->pool->n ? ", one worker for datagrams" : "");
}

static bool
fork_has_room(const struct model_ctx *m)
{
	return !held_waiting(m->held) &&
	       children_alive(m->children) < config_max_connections(&m->pool->config);
}

/* fork() failing for want of processes or memory is the process table's
 * version of running out of fds: the connection waits (and the backlog
 * behind it) until processes exit. */
static int
fork_deliver(struct model_ctx *m, const struct arrival *a, uint64_t now)
{
	int r = children_fork(m->children, m->env, &m->pool->config, m->pool->generation, a);

	if (r == 0)
		return 0;
	if (r == -EBUSY) {
		if (held_put(m->held, a->fd, a->proxy, now, ACCEPT_PAUSE_MS))
			log_warning("the connection forker is behind (its channel is full): a new "
				    "connection and those behind it wait, retried every %d ms (%llu "
				    "waits so far)",
				    ACCEPT_PAUSE_MS, (unsigned long long)m->held->waits);
		return 0;
	}
	if (r == -EAGAIN || r == -ENOMEM) {
		if (held_put(m->held, a->fd, a->proxy, now, ACCEPT_PAUSE_MS))
			log_warning_errno(
			    r,
			    "cannot fork for a new connection: %m; it and those behind "
			    "it wait until processes exit, retried every %d ms (%llu "
			    "failed so far)",
			    ACCEPT_PAUSE_MS, (unsigned long long)m->held->waits);
		return 0;
	}
	close(a->fd);
	return log_warning_errno(r, "forking for a new connection: %m; it is closed");
}

static unsigned
fork_retry(struct model_ctx *m, uint64_t now)
{
	struct arrival a = {0};

	a.fd = held_take(m->held, now, &a.proxy);
	return a.fd >= 0 && fork_deliver(m, &a, now) < 0;
}

/* The connection that waits for fork() to work again has nobody to serve
 * it after a stop or a reload away from fork: it is closed, as the backlog
 * would be on a stop. */
static unsigned
fork_abandon(struct model_ctx *m)
{
	return held_drop(m->held);
}

static int
fork_deliver_kept(struct model_ctx *m, int fd, int owed_fd)
{
	/* Beyond MaxConnections= too: admitted before; and after a reload
	 * from fork the processes that sent these back may not be reaped
	 * yet. */
	int r = children_reserve(m->children, m->children->n + 1);

	if (r == 0)
		r = children_fork_kept(m->children, m->env, &m->pool->config, m->pool->generation,
				       fd, owed_fd);
	/* No process to be had now, or the forker behind: the next turn
	 * retries. */
	if (r == -ENOMEM || r == -EBUSY)
		r = -EAGAIN;
	if (r < 0 && r != -EAGAIN)
		close(fd);
	return r;
}

static unsigned
fork_active(const struct model_ctx *m)
{
	return children_alive(m->children);
}

static void
fork_status(const struct model_ctx *m, const struct scoreboard_totals *t, struct notify_status *st)
{
	st->workers_running = children_alive(m->children);
	st->workers_wanted = config_max_connections(&m->pool->config);
	st->active = children_alive(m->children);
}

const struct model_ops model_fork = {
    .name = "fork",
    .pool_size = fork_pool_size,
    .worker_intake = INTAKE_NONE,
    .prepare = fork_prepare,
    .begin = fork_begin,
    .log_start = fork_log_start,
    .has_room = fork_has_room,
    .deliver = fork_deliver,
    .retry = fork_retry,
    .abandon = fork_abandon,
    .deliver_kept = fork_deliver_kept,
    .active = fork_active,
    .status = fork_status,
};
