/* See worker-conns.h. */
#include "worker-conns.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "access.h"
#include "address.h"
#include "log.h"
#include "util.h"

/* A busy connection moves to the tail of the idle list at most this
 * often: rr touches each connection thousands of times a second, and each
 * move writes two neighbours' cache lines. The idle timeout (whole seconds)
 * may fire up to this late. */
#define LRU_MOVE_MS 100

int
conns_init(struct conns *cs, int epoll_fd, const struct config *config, struct ledger *ledger,
	   struct admission_table *sources)
{
	*cs = (struct conns){
	    .epoll_fd = epoll_fd,
	    .config = config,
	    .ledger = ledger,
	    .sources = sources,
	    .pid = getpid(),
	};
	cs->buffer = malloc(WORKER_BUFFER_SIZE);
	return cs->buffer ? 0 : -ENOMEM;
}

void
conns_done(struct conns *cs)
{
	while (cs->head)
		conns_close(cs, cs->head);
	free(cs->buffer);
	cs->buffer = NULL;
}

/* --- the LRU list of connections, for the idle timeout --- */

static void
lru_unlink(struct conns *cs, struct connection *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		cs->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		cs->tail = c->prev;
	c->prev = c->next = NULL;
}

static void
lru_append(struct conns *cs, struct connection *c)
{
	c->prev = cs->tail;
	c->next = NULL;
	if (cs->tail)
		cs->tail->next = c;
	else
		cs->head = c;
	cs->tail = c;
}

static void
connection_touch(struct conns *cs, struct connection *c, uint64_t now)
{
	c->last_active_ms = now;
	if (now - c->queued_ms >= LRU_MOVE_MS && cs->tail != c) {
		lru_unlink(cs, c);
		lru_append(cs, c);
		c->queued_ms = now;
	}
}

/* --- connections --- */

/* epoll watches an open socket, not an fd number: while another process
 * holds the socket, even for a moment, closing ours leaves it watched,
 * and an event would name c after it is freed. Only a socket this process
 * accepted itself leaves the epoll set by being closed (a system call per
 * connection saved where prefork accepts). */
static void
forget(struct conns *cs, struct connection *c, bool shared)
{
	if (shared || c->origin != LEDGER_ACCEPTED)
		epoll_ctl(cs->epoll_fd, EPOLL_CTL_DEL, c->echo.fd, NULL);
	close(c->echo.fd);
	echo_conn_release(&c->echo);
	lru_unlink(cs, c);
	if (cs->sources)
		admission_put(cs->sources, cs->pid, &c->ticket);
	free(c);
	cs->n--;
	ledger_close(cs->ledger);
}

void
conns_close(struct conns *cs, struct connection *c)
{
	forget(cs, c, false);
}

void
conns_give_away(struct conns *cs, struct connection *c)
{
	forget(cs, c, true);
}

static uint32_t
want_events(enum echo_want want)
{
	return want == ECHO_WANT_WRITE ? EPOLLOUT : EPOLLIN;
}

static void
log_refused(const struct sockaddr *peer, const char *why)
{
	char name[ADDRESS_MAX];

	if (log_get_max_level() < LOG_DEBUG)
		return;
	address_format(peer, sizeof(struct sockaddr_storage), name, sizeof(name));
	log_peer_debug(name, "connection from %s refused: %s", name, why);
}

/* AllowFrom=/DenyFrom= and MaxConnectionsPerSource=, for every model:
 * checked by the process that is to serve the connection (prefork's
 * worker, passfd's worker, fork's child), whose pid then owns the count.
 * A kept connection is checked against the lists again (a reload may
 * have changed them) and counted, but never refused for the limit: a
 * lowered limit is for new connections, and which of a source's open ones
 * to cut would be arbitrary. False: refused, and counted so. */
static bool
source_admit(struct conns *cs, int fd, enum ledger_origin origin, const struct sockaddr *peer,
	     struct admission_ticket *ret)
{
	unsigned limit = cs->config->max_connections_per_source;
	bool lists = access_list_active(&cs->config->access);
	struct sockaddr_storage asked;
	socklen_t len = sizeof(asked);

	*ret = (struct admission_ticket){0};
	if (!lists && (limit == 0 || !cs->sources))
		return true;
	/* Sent (passfd), forked or kept: the address costs a system call. A
	 * peer already gone has none; the echo will see it go. */
	if (!peer) {
		if (getpeername(fd, (struct sockaddr *)&asked, &len) < 0)
			return true;
		peer = (struct sockaddr *)&asked;
	}
	if (lists && !access_permits(&cs->config->access, peer)) {
		ledger_refuse(cs->ledger, origin, LEDGER_REFUSED_ACCESS);
		log_refused(peer, "AllowFrom=/DenyFrom=");
		return false;
	}
	if (origin == LEDGER_KEPT && limit)
		limit = UINT_MAX;
	if (limit == 0 || !cs->sources ||
	    admission_take(cs->sources, peer, cs->pid, limit, ret))
		return true;
	ledger_refuse(cs->ledger, origin, LEDGER_REFUSED_SOURCE_LIMIT);
	log_refused(peer, "MaxConnectionsPerSource= reached");
	return false;
}

/* Takes fd and owed (malloc()ed, or NULL): served or closed and freed on
 * every path. owed is what a previous echod read on this connection and
 * had not yet written back: it goes out before anything else. The
 * connection is already counted, ledger_take(origin). from: its peer's
 * address if accept() gave it, else NULL. */
int
conns_add(struct conns *cs, int fd, enum ledger_origin origin, bool is_tcp,
	  const struct sockaddr *from, char *owed, size_t owed_len)
{
	struct admission_ticket ticket;
	struct connection *c;
	int one = 1;

	/* Refused: accepted and closed at once, so the source learns it now
	 * rather than waiting in the backlog behind its own connections. */
	if (!source_admit(cs, fd, origin, from, &ticket)) {
		close(fd);
		free(owed);
		goto undo;
	}
	if (is_tcp)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		free(owed);
		goto unadmit;
	}
	c->source.type = SOURCE_CONNECTION;
	echo_conn_init(&c->echo, fd);
	/* Accepted here, or sent or forked by a supervisor that closes its
	 * copy at once; a kept one may have a copy in the fd store. */
	c->echo.fin_on_close = origin != LEDGER_KEPT;
	echo_conn_adopt_owed(&c->echo, owed, owed_len);
	c->want = echo_conn_want(&c->echo);
	struct epoll_event ev = {.events = want_events(c->want), .data.ptr = &c->source};
	if (epoll_ctl(cs->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int r = negative_errno();
		close(fd);
		echo_conn_release(&c->echo);
		free(c);
		log_warning_errno(r, "watching a new connection: %m");
		goto unadmit;
	}
	c->ticket = ticket;
	c->origin = origin;
	c->last_active_ms = c->queued_ms = now_ms();
	lru_append(cs, c);
	cs->n++;
	if (log_get_max_level() >= LOG_DEBUG) {
		char peer[ADDRESS_MAX];
		address_format_peer(fd, peer, sizeof(peer));
		log_peer_debug(peer, "connection from %s", peer);
	}
	return 0;
unadmit:
	if (cs->sources)
		admission_put(cs->sources, cs->pid, &ticket);
undo:
	ledger_unadmit(cs->ledger);
	return -ENOMEM;
}

void
conns_handle(struct conns *cs, struct connection *c, uint32_t events, uint64_t now)
{
	struct echo_io io = {0};
	int r;

	r = echo_conn_handle(&c->echo, cs->buffer, WORKER_BUFFER_SIZE, &io);
	cs->io_pending.bytes_in += io.bytes_in;
	cs->io_pending.bytes_out += io.bytes_out;
	if (r < 0 || r == ECHO_DONE) {
		if (r < 0 && log_get_max_level() >= LOG_DEBUG) {
			char peer[ADDRESS_MAX];
			address_format_peer(c->echo.fd, peer, sizeof(peer));
			log_peer_debug(peer, "connection from %s failed: %s", peer, strerror(-r));
		}
		conns_close(cs, c);
		return;
	}
	if (io.bytes_in || io.bytes_out)
		connection_touch(cs, c, now);
	if ((enum echo_want)r != c->want) {
		struct epoll_event ev = {.events = want_events((enum echo_want)r),
					 .data.ptr = &c->source};
		if (epoll_ctl(cs->epoll_fd, EPOLL_CTL_MOD, c->echo.fd, &ev) < 0) {
			conns_close(cs, c);
			return;
		}
		c->want = (enum echo_want)r;
	}
	/* A hang-up with nothing readable left would otherwise wake us forever. */
	if ((events & (EPOLLHUP | EPOLLERR)) && r == ECHO_WANT_WRITE && !(events & EPOLLOUT))
		conns_close(cs, c);
}

void
conns_expire(struct conns *cs, uint64_t now)
{
	uint64_t limit = (uint64_t)cs->config->idle_timeout_sec * 1000;

	if (limit == 0)
		return;
	while (cs->head && now - cs->head->last_active_ms >= limit) {
		struct connection *c = cs->head;
		if (log_get_max_level() >= LOG_DEBUG) {
			char peer[ADDRESS_MAX];
			address_format_peer(c->echo.fd, peer, sizeof(peer));
			log_peer_debug(peer, "connection from %s idle for %u s, closing", peer,
				       cs->config->idle_timeout_sec);
		}
		conns_close(cs, c);
	}
}

void
conns_flush_io(struct conns *cs)
{
	if (cs->io_pending.bytes_in)
		SB_ADD(cs->ledger->slot->bytes_in, cs->io_pending.bytes_in);
	if (cs->io_pending.bytes_out)
		SB_ADD(cs->ledger->slot->bytes_out, cs->io_pending.bytes_out);
	cs->io_pending = (struct echo_io){0};
}

uint64_t
conns_next_expiry(const struct conns *cs)
{
	uint64_t limit = (uint64_t)cs->config->idle_timeout_sec * 1000;

	return limit && cs->head ? cs->head->last_active_ms + limit : 0;
}
