/* See acceptor.h. */
#include "acceptor.h"

#include <errno.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "accept.h"
#include "access.h"
#include "admission.h"
#include "ledger.h"
#include "log.h"
#include "util.h"

void
acceptor_init(struct acceptor *a, int epoll_fd, uint64_t event, const struct listen_set *sockets,
	      struct scoreboard *sb, unsigned slot)
{
	*a = (struct acceptor){
	    .epoll_fd = epoll_fd,
	    .event = event,
	    .sockets = sockets,
	    .sb = sb,
	    .slot = slot,
	};
}

static void
acceptor_poll(struct acceptor *a, bool on)
{
	for (size_t i = 0; i < a->sockets->n; i++) {
		if (a->sockets->items[i].kind != SOCKET_LISTENING)
			continue;
		if (on) {
			struct epoll_event ev = {.events = EPOLLIN,
						 .data.u64 = a->event | (uint32_t)i};
			if (epoll_ctl(a->epoll_fd, EPOLL_CTL_ADD, a->sockets->items[i].fd, &ev) < 0)
				log_warning_errno(errno, "watching %s: %m",
						  a->sockets->items[i].name);
		} else {
			epoll_ctl(a->epoll_fd, EPOLL_CTL_DEL, a->sockets->items[i].fd, NULL);
		}
	}
	a->accepting = on;
}

void
acceptor_stop(struct acceptor *a)
{
	if (a->accepting)
		acceptor_poll(a, false);
}

bool
acceptor_waiting(const struct acceptor *a, const struct model_ops *model)
{
	return model->has_room && !a->accepting;
}

void
acceptor_update(struct acceptor *a, const struct model_ops *model, struct model_ctx *m,
		bool stopping, uint64_t now)
{
	bool want;

	if (a->resume_ms && now >= a->resume_ms)
		a->resume_ms = 0;
	if (model->retry && a->resume_ms == 0)
		ledger_lost_here(a->sb, a->slot, model->retry(m, now));
	want = model->has_room && !stopping && a->resume_ms == 0 && model->has_room(m);
	if (want != a->accepting)
		acceptor_poll(a, want);
}

/* A source AllowFrom=/DenyFrom= refuse, or one already at
 * MaxConnectionsPerSource=, is refused here, before it costs a fork or a
 * send; the serving process's own check (in the worker loop) decides for
 * the others, exactly. On a proxy listener the peer is a balancer: only
 * ProxyFrom= is looked at here; its client is checked by whoever reads
 * the header. */
static bool
refused_at_source(struct acceptor *a, const struct config *c, const struct listener *l, int fd,
		  const struct sockaddr *peer)
{
	enum ledger_refusal why;

	if (l->proxy) {
		if (access_trusts(&c->proxy_from, peer))
			return false;
		why = LEDGER_REFUSED_PROXY;
	} else if (!access_permits(&c->access, peer))
		why = LEDGER_REFUSED_ACCESS;
	else if (admission_full(a->sb->sources, peer, c->max_connections_per_source))
		why = LEDGER_REFUSED_SOURCE_LIMIT;
	else
		return false;
	close(fd);
	ledger_refused_here(a->sb, a->slot, why);
	return true;
}

/* Accepts what l has waiting, up to ACCEPT_BATCH, and delivers each. */
static void
accept_turn(struct acceptor *a, const struct model_ops *model, struct model_ctx *m,
	    const struct listener *l)
{
	const struct config *c = &m->pool->config;
	unsigned rate = c->connection_rate_limit;
	int size = accept_turn_size(l->fd, l->is_tcp);

	for (int i = 0; i < size && !a->resume_ms && model->has_room(m); i++) {
		struct arrival conn = {.proxy = l->proxy};
		int fd, r;

		if (model->reserves && !ledger_reserve(a->sb))
			return;
		if (!admission_rate_take(a->sb, rate, now_ms(), &a->resume_ms)) {
			if (model->reserves)
				ledger_release(a->sb);
			return;
		}
		fd = accept_next_peer(l->fd, &conn.peer, &conn.peer_len);
		if (fd < 0) {
			admission_rate_undo(a->sb, rate);
			if (model->reserves)
				ledger_release(a->sb);
			if (accept_should_pause(fd)) {
				log_warning_errno(fd, "accepting on %s: %m; pausing for %d ms",
						  l->name, ACCEPT_PAUSE_MS);
				a->resume_ms = now_ms() + ACCEPT_PAUSE_MS;
			}
			return;
		}
		if (refused_at_source(a, c, l, fd, (struct sockaddr *)&conn.peer)) {
			if (model->reserves)
				ledger_release(a->sb);
			continue;
		}
		conn.fd = fd;
		r = model->deliver(m, &conn, now_ms());
		if (r == 0)
			continue;
		if (model->reserves)
			ledger_release(a->sb);
		ledger_lost_here(a->sb, a->slot, 1);
		a->resume_ms = now_ms() + (r == -EAGAIN ? ACCEPT_RETRY_MS : ACCEPT_PAUSE_MS);
	}
}

void
acceptor_accept(struct acceptor *a, const struct model_ops *model, struct model_ctx *m,
		const struct listener *l)
{
	accept_turn(a, model, m, l);
	if (model->flush)
		ledger_lost_here(a->sb, a->slot, model->flush(m));
}
