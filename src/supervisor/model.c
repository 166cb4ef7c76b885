/* The table of models, and what the pool models (prefork, passfd) share. */
#include "model.h"

#include <errno.h>
#include <unistd.h>

#include "ledger.h"
#include "log.h"
#include "util.h"

const struct model_ops *
model_get(enum model id)
{
	switch (id) {
	case MODEL_PREFORK:
		return &model_prefork;
	case MODEL_PASSFD:
		return &model_passfd;
	case MODEL_FORK:
		return &model_fork;
	}
	return &model_prefork;
}

unsigned
model_pool_size(const struct config *c, const struct listen_set *sockets)
{
	return config_workers(c);
}

int
model_deliver_kept_to_pool(struct model_ctx *m, int fd, int owed_fd)
{
	int r;

	/* Beyond MaxConnections= too: admitted before. Released by the
	 * worker when it closes. */
	ledger_reserve_kept(m->env->scoreboard);
	r = pool_send_kept(m->env, m->pool, fd, owed_fd);
	if (r < 0)
		ledger_release(m->env->scoreboard);
	if (r != -EAGAIN)
		close(fd);
	return r;
}

unsigned
model_pool_active(const struct model_ctx *m)
{
	return ledger_reserved(m->env->scoreboard);
}

void
model_pool_status(const struct model_ctx *m, const struct scoreboard_totals *t,
		  struct notify_status *st)
{
	st->workers_running = pool_alive(m->pool);
	st->workers_wanted = m->pool->n;
	st->active = t->active;
}

void
model_pool_log_start(const struct model_ctx *m)
{
	const struct config *c = &m->pool->config;

	log_info("%s model, %u worker(s), up to %u connection(s) each, %u in all",
		 model_to_string(c->model), m->pool->n, config_worker_connections(c),
		 config_max_connections(c));
}
