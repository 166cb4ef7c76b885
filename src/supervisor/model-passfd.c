/* Model=passfd: the supervisor accepts (acceptor.c) and sends each
 * connection over a channel to a worker (pool_send()); it reserves
 * MaxConnections= for it, which the worker releases on close. */
#include "model.h"

#include <errno.h>
#include <unistd.h>

#include "accept.h"
#include "ledger.h"
#include "log.h"

static bool
passfd_has_room(const struct model_ctx *m)
{
	return !held_waiting(m->held) && pool_can_take(m->env, m->pool) &&
	       !ledger_full(m->env->scoreboard);
}

/* Takes fd: sent, held, or closed. Every channel full (a burst faster
 * than the workers take it; the kernel queues a few hundred fds on each),
 * or no worker running: it waits, and the clients behind it wait in the
 * accept queue, until a worker has room. */
static int
passfd_deliver(struct model_ctx *m, const struct arrival *a, uint64_t now)
{
	int r = pool_send(m->env, m->pool, a->fd, false, a->proxy, -1);

	if (r == -EAGAIN) {
		if (held_put(m->held, a->fd, a->proxy, now, ACCEPT_RETRY_MS))
			log_notice("no worker can take a new connection now (their channels are "
				   "full, or none runs): it and those behind it wait, retried "
				   "every %d ms (%llu waited so far)",
				   ACCEPT_RETRY_MS, (unsigned long long)m->held->waits);
		return 0;
	}
	close(a->fd);
	if (r < 0)
		log_warning_errno(r, "no worker could take a new connection: %m; it is closed");
	return r;
}

/* A connection lost here gives back what the acceptor reserved for it. */
static unsigned
passfd_retry(struct model_ctx *m, uint64_t now)
{
	struct arrival a = {0};

	a.fd = held_take(m->held, now, &a.proxy);
	if (a.fd < 0 || passfd_deliver(m, &a, now) == 0)
		return 0;
	ledger_release(m->env->scoreboard);
	return 1;
}

/* A stop, or a reload to another model: the waiting connection is closed,
 * as the backlog would be on a stop. */
static unsigned
passfd_abandon(struct model_ctx *m)
{
	if (!held_drop(m->held))
		return 0;
	ledger_release(m->env->scoreboard);
	return 1;
}

const struct model_ops model_passfd = {
    .name = "passfd",
    .pool_size = model_pool_size,
    .worker_intake = INTAKE_CHANNEL,
    .pool_returns = true,
    .log_start = model_pool_log_start,
    .has_room = passfd_has_room,
    .reserves = true,
    .deliver = passfd_deliver,
    .retry = passfd_retry,
    .abandon = passfd_abandon,
    .deliver_kept = model_deliver_kept_to_pool,
    .active = model_pool_active,
    .status = model_pool_status,
};
