/* A model: everything in which prefork, passfd and fork differ on the
 * supervisor's side, as one const table each (model-prefork.c,
 * model-passfd.c, model-fork.c). The supervisor's loop, reload, stop and
 * the delivery of kept connections call these entries and ask no "which
 * model?" question; a fourth model is one more file and one more line in
 * model.c. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "arrival.h"
#include "children.h"
#include "held.h"
#include "config.h"
#include "listen.h"
#include "notify.h"
#include "pool.h"
#include "scoreboard.h"
#include "worker.h"

/* What a model works on: the supervisor's, lent for the call. */
struct model_ctx {
	const struct pool_env *env;
	struct pool *pool;	   /* the current generation */
	struct children *children; /* connection processes, of any generation */
	struct held *held;	   /* a new connection waiting for a process */
};

struct model_ops {
	const char *name;
	/* The pool: how many workers a configuration wants, how connections
	 * reach them, whether they share the listeners (prefork's fair share)
	 * and whether, retiring on a reload, they return their connections. */
	unsigned (*pool_size)(const struct config *c, const struct listen_set *sockets);
	enum intake_kind worker_intake;
	bool shares_listeners;
	bool pool_returns;
	/* Before a pool of c starts (at start, on a reload): 0 or -errno. */
	int (*prepare)(struct model_ctx *m, const struct config *c);
	/* The supervisor is set up and m->pool is about to start (at start,
	 * on a reload): what the model runs beside its pool starts here,
	 * once everything it inherits exists. NULL: nothing. */
	void (*begin)(struct model_ctx *m);
	void (*log_start)(const struct model_ctx *m);

	/* The supervisor's own accepting: only where has_room is set. It
	 * takes a MaxConnections= reservation per connection if reserves. */
	bool (*has_room)(const struct model_ctx *m);
	bool reserves;
	/* Takes a->fd, a new connection: 0 once it is served, queued for
	 * flush(), or held to retry (held.h), else -errno (it is closed, and
	 * said in the log). */
	int (*deliver)(struct model_ctx *m, const struct arrival *a, uint64_t now);
	/* After a turn of deliver()s: hands on what they queued (passfd sends
	 * each worker its share as one message), or NULL. Returns how many
	 * connections that lost. */
	unsigned (*flush)(struct model_ctx *m);
	/* Called every turn of the loop for what deliver() held, or NULL.
	 * Returns how many connections that lost. */
	unsigned (*retry)(struct model_ctx *m, uint64_t now);
	/* Stop, or a reload to another model: drops what only this model
	 * could serve, or NULL. Returns how many connections that lost. */
	unsigned (*abandon)(struct model_ctx *m);

	/* A kept connection (and its owed bytes, owed_fd, or -1), which was
	 * admitted before: 0 once it is on its way; -EAGAIN: not now (fd is
	 * still the caller's, to try next turn); else -errno, fd closed. Never
	 * takes owed_fd. */
	int (*deliver_kept)(struct model_ctx *m, int fd, int owed_fd);

	/* Connections open now, and what STATUS= says of workers. */
	unsigned (*active)(const struct model_ctx *m);
	void (*status)(const struct model_ctx *m, const struct scoreboard_totals *t,
		       struct notify_status *st);
};

extern const struct model_ops model_prefork, model_passfd, model_fork;

const struct model_ops *model_get(enum model id);

/* Shared by the models whose pool takes connections over channels: a kept
 * connection reserved beyond MaxConnections= and sent to a worker. */
int model_deliver_kept_to_pool(struct model_ctx *m, int fd, int owed_fd);
unsigned model_pool_size(const struct config *c, const struct listen_set *sockets);
void model_pool_status(const struct model_ctx *m, const struct scoreboard_totals *t,
		       struct notify_status *st);
unsigned model_pool_active(const struct model_ctx *m);
void model_pool_log_start(const struct model_ctx *m);
