/* Model=passfd: the supervisor accepts (acceptor.c) and sends each
 * connection over a channel to a worker: queued for the worker that should
 * take it (pool_queue()), and sent with the rest of the accepting turn's
 * for that worker in one message (pool_flush()). It reserves
 * MaxConnections= for it, which the worker releases on close. */
#include "model.h"

#include "accept.h"
#include "ledger.h"
#include "log.h"
#include "util.h"

static bool
passfd_has_room(const struct model_ctx *m)
{
	return !held_waiting(m->held) && !pool_stalled(m->pool) && pool_can_take(m->env, m->pool) &&
	       !ledger_full(m->env->scoreboard);
}

static void
log_wait(const struct model_ctx *m)
{
	log_notice("no worker can take a new connection now (their channels are "
		   "full, or none runs): it and those behind it wait, retried "
		   "every %d ms (%llu waited so far)",
		   ACCEPT_RETRY_MS, (unsigned long long)m->held->waits);
}

/* Takes fd: queued, or held. No worker has room (every channel full: a
 * burst faster than the workers take it; the kernel queues a few hundred
 * messages on each), or no worker runs: it waits, and the clients behind
 * it wait in the accept queue, until a worker has room. */
static int
passfd_deliver(struct model_ctx *m, const struct arrival *a, uint64_t now)
{
	if (pool_queue(m->env, m->pool, a->fd, a->proxy) == 0)
		return 0;
	if (held_put(m->held, a->fd, a->proxy, now, ACCEPT_RETRY_MS))
		log_wait(m);
	return 0;
}

/* A queue no channel had room for waits like a held connection, and is
 * said like one, once as it starts waiting. */
static unsigned
passfd_flush(struct model_ctx *m)
{
	bool was_stalled = pool_stalled(m->pool);
	unsigned lost = pool_flush(m->env, m->pool);

	if (!was_stalled && pool_stalled(m->pool) && held_count_wait(m->held, now_ms()))
		log_wait(m);
	return lost;
}

/* What waited in the queues for a channel with room goes first (a
 * retired generation's before this one's), then the held connection. */
static unsigned
passfd_retry(struct model_ctx *m, uint64_t now)
{
	struct arrival a = {0};
	unsigned lost;

	pool_adopt_retired_queues(m->env, m->pool);
	lost = passfd_flush(m);

	a.fd = held_take(m->held, now, &a.proxy);
	if (a.fd >= 0) {
		passfd_deliver(m, &a, now);
		lost += passfd_flush(m);
	}
	return lost;
}

/* A stop, or a reload to another model: the waiting connections are
 * closed, as the backlog would be on a stop. */
static unsigned
passfd_abandon(struct model_ctx *m)
{
	unsigned lost = pool_drop_queued(m->env, m->pool);

	if (held_drop(m->held)) {
		ledger_release(m->env->scoreboard);
		lost++;
	}
	return lost;
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
    .flush = passfd_flush,
    .retry = passfd_retry,
    .abandon = passfd_abandon,
    .deliver_kept = model_deliver_kept_to_pool,
    .active = model_pool_active,
    .status = model_pool_status,
};
