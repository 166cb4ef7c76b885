/* Model=passfd: the supervisor accepts (acceptor.c) and sends each
 * connection over a channel to the least loaded worker (pool_send()); it
 * reserves MaxConnections= for it, which the worker releases on close. */
#include "model.h"

#include <errno.h>
#include <unistd.h>

#include "ledger.h"
#include "log.h"

static bool
passfd_has_room(const struct model_ctx *m)
{
	return pool_can_take(m->env, m->pool) && !ledger_full(m->env->scoreboard);
}

/* Takes fd: sent, or closed. */
static int
passfd_deliver(struct model_ctx *m, int fd, bool proxy, uint64_t now)
{
	int r = pool_send(m->env, m->pool, fd, false, proxy, -1);

	close(fd);
	if (r < 0)
		log_warning_errno(r, "no worker could take a new connection: %m; it is closed");
	return r;
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
    .deliver_kept = model_deliver_kept_to_pool,
    .active = model_pool_active,
    .status = model_pool_status,
};
