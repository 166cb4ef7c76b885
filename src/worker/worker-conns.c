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

/* What a read lands in before it is echoed; what cannot be written at
 * once is copied out (echo.c), so one buffer serves every connection of
 * the (single-threaded) process. Static, it is .bss: where Model=fork
 * forks a process per connection, that process's first read faults in a
 * fresh zero page, where a malloc()ed buffer would copy the parent's heap
 * pages and the allocator's state, a copy-on-write fault each. */
static char scratch[WORKER_BUFFER_SIZE];

void
conns_init(struct conns *cs, struct waitset *waitset, const struct config *config,
	   struct ledger *ledger, struct admission_table *sources)
{
	*cs = (struct conns){
	    .waitset = waitset,
	    .config = config,
	    .ledger = ledger,
	    .sources = sources,
	    /* Only the per-source table needs it: one system call fewer for
	     * each Model=fork connection where there is none. */
	    .pid = sources ? getpid() : 0,
	    .lifetime_ms = CONNS_LIFETIME_START_MS,
	};
}

void
conns_done(struct conns *cs)
{
	while (cs->head)
		conns_close(cs, cs->head);
	while (cs->header_head)
		conns_close(cs, cs->header_head);
}

/* --- the LRU list of connections, for the idle timeout --- */

/* A connection is on one of two lists: the idle one (LRU), or, while its
 * PROXY header is read, the header one (in arrival order, which with one
 * ProxyHeaderTimeoutSec= is the order they are due). */
static void
list_unlink(struct connection **head, struct connection **tail, struct connection *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		*head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		*tail = c->prev;
	c->prev = c->next = NULL;
}

static void
list_append(struct connection **head, struct connection **tail, struct connection *c)
{
	c->prev = *tail;
	c->next = NULL;
	if (*tail)
		(*tail)->next = c;
	else
		*head = c;
	*tail = c;
}

static void
lru_unlink(struct conns *cs, struct connection *c)
{
	if (c->in_header)
		list_unlink(&cs->header_head, &cs->header_tail, c);
	else
		list_unlink(&cs->head, &cs->tail, c);
}

static void
lru_append(struct conns *cs, struct connection *c)
{
	list_append(&cs->head, &cs->tail, c);
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

static struct connection *
connection_new(struct conns *cs)
{
	if (!cs->first_in_use) {
		cs->first_in_use = true;
		cs->first = (struct connection){0};
		return &cs->first;
	}
	return calloc(1, sizeof(struct connection));
}

static void
connection_free(struct conns *cs, struct connection *c)
{
	if (c == &cs->first)
		cs->first_in_use = false;
	else
		free(c);
}

/* Only a socket this process accepted itself is ours alone (a system
 * call per connection saved where prefork accepts): one a supervisor sent
 * or forked with may be held by it for a moment yet (waitset.h). */
static void
forget(struct conns *cs, struct connection *c, bool shared)
{
	waitset_closing(cs->waitset, c->echo.fd, !shared && c->origin == LEDGER_ACCEPTED);
	close(c->echo.fd);
	echo_conn_release(&c->echo);
	lru_unlink(cs, c);
	if (cs->sources)
		admission_put(cs->sources, cs->pid, &c->ticket);
	free(c->proxy);
	connection_free(cs, c);
	cs->n--;
	ledger_close(cs->ledger);
}

void
conns_close(struct conns *cs, struct connection *c)
{
	uint64_t now = now_ms();
	uint64_t lived = now > c->opened_ms ? now - c->opened_ms : 0;

	/* Each close weighs an eighth: a few dozen short ones after a held
	 * one make the average short again. */
	cs->lifetime_ms = cs->lifetime_ms - cs->lifetime_ms / 8 + lived / 8;
	forget(cs, c, false);
}

bool
conns_short_lived(const struct conns *cs)
{
	return cs->lifetime_ms < CONNS_SHORT_LIVED_MS;
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

const struct sockaddr *
conns_client(const struct connection *c, socklen_t *ret_len)
{
	if (!c->proxy || c->proxy->client_len == 0)
		return NULL;
	if (ret_len)
		*ret_len = c->proxy->client_len;
	return (const struct sockaddr *)&c->proxy->client;
}

/* What the journal names c by: its client (ECHOD_PEER=) and, when it came
 * through a balancer, the balancer (ECHOD_PROXY=; else empty). */
static void
conn_names(const struct connection *c, char peer[ADDRESS_MAX], char proxy[ADDRESS_MAX])
{
	socklen_t len;
	const struct sockaddr *client = conns_client(c, &len);

	proxy[0] = '\0';
	if (c->proxy)
		address_format_peer(c->echo.fd, proxy, ADDRESS_MAX);
	if (client)
		address_format(client, len, peer, ADDRESS_MAX);
	else if (c->proxy)
		memcpy(peer, proxy, ADDRESS_MAX);
	else
		address_format_peer(c->echo.fd, peer, ADDRESS_MAX);
}

static void
log_refused(const struct sockaddr *peer, const char *proxy, const char *why)
{
	char name[ADDRESS_MAX];

	if (log_get_max_level() < LOG_DEBUG)
		return;
	address_format(peer, sizeof(struct sockaddr_storage), name, sizeof(name));
	if (proxy)
		log_peer_via(name, proxy, "connection from %s via %s refused: %s", name, proxy,
			     why);
	else
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
	     const char *proxy, struct admission_ticket *ret)
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
		log_refused(peer, proxy, "AllowFrom=/DenyFrom=");
		return false;
	}
	if (origin == LEDGER_KEPT && limit)
		limit = UINT_MAX;
	if (limit == 0 || !cs->sources || admission_take(cs->sources, peer, cs->pid, limit, ret))
		return true;
	ledger_refuse(cs->ledger, origin, LEDGER_REFUSED_SOURCE_LIMIT);
	log_refused(peer, proxy, "MaxConnectionsPerSource= reached");
	return false;
}

/* A connection to a proxy listener: only from a trusted balancer. */
static bool
proxy_admit(struct conns *cs, int fd, const struct conn_arrival *a)
{
	struct sockaddr_storage asked;
	socklen_t len = sizeof(asked);
	const struct sockaddr *peer = a->from;

	if (!peer) {
		/* Gone already: nothing to serve. */
		if (getpeername(fd, (struct sockaddr *)&asked, &len) < 0) {
			ledger_refuse(cs->ledger, a->origin, LEDGER_REFUSED_PROXY);
			return false;
		}
		peer = (struct sockaddr *)&asked;
	}
	/* A UNIX socket's peer has no address: the socket file's mode says
	 * who may connect. */
	if (access_trusts(&cs->config->proxy_from, peer))
		return true;
	ledger_refuse(cs->ledger, a->origin, LEDGER_REFUSED_PROXY);
	log_refused(peer, NULL, "a proxy listener, and not from ProxyFrom=");
	return false;
}

/* Takes fd and a->owed: served or closed and freed on every path. */
int
conns_add(struct conns *cs, int fd, const struct conn_arrival *a)
{
	struct admission_ticket ticket = {0};
	struct connection *c;
	struct conn_proxy *proxy = NULL;
	char *owed = a->owed;
	int one = 1;

	/* Refused: accepted and closed at once, so the source learns it now
	 * rather than waiting in the backlog behind its own connections. A
	 * header's client is admitted once the header is in. */
	if (a->proxy ? !proxy_admit(cs, fd, a)
		     : !source_admit(cs, fd, a->origin, a->client ? a->client : a->from, NULL,
				     &ticket)) {
		close(fd);
		free(owed);
		goto undo;
	}
	if (a->is_tcp)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = connection_new(cs);
	if (c && (a->proxy || a->client))
		proxy = c->proxy = calloc(1, sizeof(*c->proxy));
	if (!c || ((a->proxy || a->client) && !proxy)) {
		if (c)
			connection_free(cs, c);
		close(fd);
		free(owed);
		goto unadmit;
	}
	c->source.type = SOURCE_CONNECTION;
	echo_conn_init(&c->echo, fd);
	/* Accepted here, or sent or forked by a supervisor that closes its
	 * copy at once; a kept one may have a copy in the fd store. */
	c->echo.fin_on_close = a->origin != LEDGER_KEPT;
	echo_conn_adopt_owed(&c->echo, owed, a->owed_len);
	c->want = echo_conn_want(&c->echo);
	int r = waitset_add(cs->waitset, fd, want_events(c->want), &c->source);
	if (r < 0) {
		close(fd);
		echo_conn_release(&c->echo);
		free(c->proxy);
		connection_free(cs, c);
		log_warning_errno(r, "watching a new connection: %m");
		goto unadmit;
	}
	c->ticket = ticket;
	c->origin = a->origin;
	c->last_active_ms = c->queued_ms = c->opened_ms = now_ms();
	if (a->proxy) {
		proxy_parser_init(&proxy->parser);
		proxy->deadline_ms =
		    c->last_active_ms + (uint64_t)cs->config->proxy_header_timeout_sec * 1000;
		c->in_header = true;
		list_append(&cs->header_head, &cs->header_tail, c);
	} else {
		if (a->client) {
			memcpy(&proxy->client, a->client, a->client_len);
			proxy->client_len = a->client_len;
		}
		lru_append(cs, c);
	}
	cs->n++;
	if (log_get_max_level() >= LOG_DEBUG && !a->proxy) {
		char peer[ADDRESS_MAX], via[ADDRESS_MAX];
		conn_names(c, peer, via);
		log_peer_via(peer, via[0] ? via : NULL, "connection from %s%s%s", peer,
			     via[0] ? " via " : "", via);
	}
	/* Nothing to read yet costs one recv() that says so. */
	if (a->readable)
		conns_handle(cs, c, EPOLLIN, c->last_active_ms);
	return 0;
unadmit:
	if (cs->sources)
		admission_put(cs->sources, cs->pid, &ticket);
undo:
	ledger_unadmit(cs->ledger);
	return -ENOMEM;
}

static int
watch(struct conns *cs, struct connection *c, enum echo_want want)
{
	int r;

	if (want == c->want)
		return 0;
	r = waitset_mod(cs->waitset, c->echo.fd, want_events(want), &c->source);
	if (r < 0)
		return r;
	c->want = want;
	return 0;
}

/* A header refused (malformed, oversized, cut short, late): counted and
 * closed. */
static void
header_refuse(struct conns *cs, struct connection *c, const char *why)
{
	ledger_refuse(cs->ledger, c->origin, LEDGER_REFUSED_PROXY);
	if (log_get_max_level() >= LOG_DEBUG) {
		char balancer[ADDRESS_MAX];
		address_format_peer(c->echo.fd, balancer, sizeof(balancer));
		log_peer_via(balancer, balancer, "connection via %s refused: %s", balancer, why);
	}
	conns_close(cs, c);
}

/* The header is in: the client it names is c's peer from now on, admitted
 * as any other (AllowFrom=, DenyFrom=, MaxConnectionsPerSource=); the
 * rest of the read (payload, len bytes at rest) is echoed. */
static void
header_done(struct conns *cs, struct connection *c, const struct proxy_header *h, const char *rest,
	    size_t len, uint64_t now)
{
	struct conn_proxy *p = c->proxy;
	struct echo_io io = {0};
	char peer[ADDRESS_MAX], via[ADDRESS_MAX];
	int r;

	if (h->has_source) {
		memcpy(&p->client, &h->source, h->source_len);
		p->client_len = h->source_len;
	}
	list_unlink(&cs->header_head, &cs->header_tail, c);
	c->in_header = false;
	c->last_active_ms = c->queued_ms = now;
	lru_append(cs, c);
	if (log_get_max_level() >= LOG_DEBUG) {
		conn_names(c, peer, via);
	} else {
		peer[0] = via[0] = '\0';
	}
	if (!source_admit(cs, c->echo.fd, c->origin, conns_client(c, NULL), via[0] ? via : NULL,
			  &c->ticket)) {
		/* Counted refused; no ticket taken to give back. */
		conns_close(cs, c);
		return;
	}
	if (log_get_max_level() >= LOG_DEBUG) {
		const char *what = h->local ? " LOCAL" : "";

		if (!h->local && !h->has_source)
			what = ", no address";
		log_peer_via(peer, via, "connection from %s via %s (PROXY v%u%s)", peer, via,
			     h->version, what);
	}
	if (len == 0)
		return;
	r = echo_conn_echo_read(&c->echo, rest, len, &io);
	cs->io_pending.bytes_in += io.bytes_in;
	cs->io_pending.bytes_out += io.bytes_out;
	if (r < 0 || watch(cs, c, (enum echo_want)r) < 0)
		conns_close(cs, c);
}

/* Reads what has come of c's header; never blocks. */
static void
header_handle(struct conns *cs, struct connection *c, uint64_t now)
{
	struct proxy_header h;
	size_t used = 0;
	ssize_t n;
	int r;

	n = recv(c->echo.fd, scratch, WORKER_BUFFER_SIZE, MSG_DONTWAIT);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		header_refuse(cs, c, "the connection failed before its PROXY header");
		return;
	}
	if (n == 0) {
		header_refuse(cs, c, "closed before its PROXY header was complete");
		return;
	}
	r = proxy_parse(&c->proxy->parser, scratch, (size_t)n, &used, &h);
	if (r == PROXY_MORE)
		return;
	if (r == -E2BIG) {
		header_refuse(cs, c, "PROXY header too long");
		return;
	}
	if (r < 0) {
		header_refuse(cs, c, "malformed PROXY header");
		return;
	}
	header_done(cs, c, &h, scratch + used, (size_t)n - used, now);
}

void
conns_handle(struct conns *cs, struct connection *c, uint32_t events, uint64_t now)
{
	struct echo_io io = {0};
	int r;

	if (c->in_header) {
		header_handle(cs, c, now);
		return;
	}
	r = echo_conn_handle(&c->echo, scratch, WORKER_BUFFER_SIZE, &io);
	cs->io_pending.bytes_in += io.bytes_in;
	cs->io_pending.bytes_out += io.bytes_out;
	if (r < 0 || r == ECHO_DONE) {
		if (r < 0 && log_get_max_level() >= LOG_DEBUG) {
			char peer[ADDRESS_MAX], via[ADDRESS_MAX];
			conn_names(c, peer, via);
			log_peer_via(peer, via[0] ? via : NULL, "connection from %s failed: %s",
				     peer, strerror(-r));
		}
		conns_close(cs, c);
		return;
	}
	if (io.bytes_in || io.bytes_out)
		connection_touch(cs, c, now);
	if (watch(cs, c, (enum echo_want)r) < 0) {
		conns_close(cs, c);
		return;
	}
	/* A hang-up with nothing readable left would otherwise wake us forever. */
	if ((events & (EPOLLHUP | EPOLLERR)) && r == ECHO_WANT_WRITE && !(events & EPOLLOUT))
		conns_close(cs, c);
}

void
conns_expire(struct conns *cs, uint64_t now)
{
	uint64_t limit = (uint64_t)cs->config->idle_timeout_sec * 1000;

	while (cs->header_head && now >= cs->header_head->proxy->deadline_ms)
		header_refuse(cs, cs->header_head,
			      "no complete PROXY header within ProxyHeaderTimeoutSec=");
	if (limit == 0)
		return;
	while (cs->head && now - cs->head->last_active_ms >= limit) {
		struct connection *c = cs->head;
		if (log_get_max_level() >= LOG_DEBUG) {
			char peer[ADDRESS_MAX], via[ADDRESS_MAX];
			conn_names(c, peer, via);
			log_peer_via(peer, via[0] ? via : NULL,
				     "connection from %s idle for %u s, closing", peer,
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
	uint64_t idle = limit && cs->head ? cs->head->last_active_ms + limit : 0;
	uint64_t header = cs->header_head ? cs->header_head->proxy->deadline_ms : 0;

	if (idle == 0 || (header && header < idle))
		return header;
	return idle;
}
