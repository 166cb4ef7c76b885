#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>

#include "admission.h"
#include "echo.h"
#include "ratelimit.h"
#include "udp.h"
#include "log.h"
#include "util.h"
#include "worker-internal.h"

#define WORKER_EVENTS 256
/* How often a worker held back (MaxConnections=, its fair share) looks
 * again. */
#define CAP_RETRY_MS 20
/* The loop turns at least this often, so the heartbeat shows it is alive
 * well within even a one-second WatchdogSec=. */
#define HEARTBEAT_MS 250
/* Drops (datagrams, lost connections) are summed up in one line at most
 * this often, so a flood cannot flood the log. */
#define DROP_LOG_INTERVAL_MS 5000
/* A busy connection moves to the tail of the idle list at most this
 * often: rr touches each connection thousands of times a second, and each
 * move writes two neighbours' cache lines. The idle timeout (whole seconds)
 * may fire up to this late. */
#define LRU_MOVE_MS 100

void
worker_signals_changed(sigset_t *ret)
{
	sigemptyset(ret);
	for (int sig = 1; sig < NSIG; sig++) {
		struct sigaction sa;

		if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler != SIG_DFL)
			sigaddset(ret, sig);
	}
}

void
worker_reset_signals(const sigset_t *changed)
{
	struct sigaction sa = {.sa_handler = SIG_DFL};
	sigset_t orders;

	for (int sig = 1; sig < NSIG; sig++)
		if (sigismember(changed, sig) == 1)
			sigaction(sig, &sa, NULL);
	sigemptyset(&orders);
	sigaddset(&orders, SIGUSR1);
	sigaddset(&orders, SIGUSR2);
	sigprocmask(SIG_SETMASK, &orders, NULL);
}

/* --- the LRU list of connections, for the idle timeout --- */

static void
lru_unlink(struct worker *w, struct connection *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		w->lru_head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		w->lru_tail = c->prev;
	c->prev = c->next = NULL;
}

static void
lru_append(struct worker *w, struct connection *c)
{
	c->prev = w->lru_tail;
	c->next = NULL;
	if (w->lru_tail)
		w->lru_tail->next = c;
	else
		w->lru_head = c;
	w->lru_tail = c;
}

static void
connection_touch(struct worker *w, struct connection *c, uint64_t now)
{
	c->last_active_ms = now;
	if (now - c->queued_ms >= LRU_MOVE_MS && w->lru_tail != c) {
		lru_unlink(w, c);
		lru_append(w, c);
		c->queued_ms = now;
	}
}

/* --- connections --- */

void
worker_connection_close(struct worker *w, struct connection *c)
{
	epoll_ctl(w->epoll_fd, EPOLL_CTL_DEL, c->echo.fd, NULL);
	close(c->echo.fd);
	echo_conn_release(&c->echo);
	lru_unlink(w, c);
	if (w->setup->scoreboard)
		admission_put(w->setup->scoreboard->sources, w->pid, &c->ticket);
	free(c);
	w->n_connections--;
	SB_SUB(w->slot->active, 1);
	if (w->setup->release_reservations && w->setup->scoreboard)
		scoreboard_release(w->setup->scoreboard);
}

static uint32_t
want_events(enum echo_want want)
{
	return want == ECHO_WANT_WRITE ? EPOLLOUT : EPOLLIN;
}

/* MaxConnectionsPerSource=, for every model: checked by the process that is
 * to serve the connection (prefork's worker, passfd's worker, fork's child),
 * whose pid then owns the count. False: refused, and counted so. */
static bool
source_admit(struct worker *w, int fd, const struct sockaddr *peer, struct admission_ticket *ret)
{
	const struct scoreboard *sb = w->setup->scoreboard;
	unsigned limit = w->setup->config->max_connections_per_source;
	struct sockaddr_storage asked;
	socklen_t len = sizeof(asked);

	*ret = (struct admission_ticket){0};
	if (limit == 0 || !sb || !sb->sources)
		return true;
	/* Handed over (passfd, fork): the address costs a system call. A peer
	 * already gone has none; the echo will see it go. */
	if (!peer) {
		if (getpeername(fd, (struct sockaddr *)&asked, &len) < 0)
			return true;
		peer = (struct sockaddr *)&asked;
	}
	if (admission_take(sb->sources, peer, w->pid, limit, ret))
		return true;
	/* Counted refused, not served: in that order, so a kill between the
	 * two counts it taken twice (one reservation kept too long) rather
	 * than not at all (one released too many). */
	SB_ADD(w->slot->refused, 1);
	SB_SUB(w->slot->served, 1);
	if (log_get_max_level() >= LOG_DEBUG) {
		char name[ADDRESS_MAX];
		address_format(peer, sizeof(struct sockaddr_storage), name, sizeof(name));
		log_peer_debug(name, "connection from %s refused: MaxConnectionsPerSource=%u reached",
			       name, limit);
	}
	return false;
}

/* Takes fd and owed (malloc()ed, or NULL): served or closed and freed on
 * every path. owed is what a previous echod read on this connection and
 * had not yet written back: it goes out before anything else. The
 * connection is already counted in slot->active and slot->served and (if
 * reserved) in the scoreboard. from: its peer's address if accept() gave
 * it, else NULL. */
int
worker_add_connection(struct worker *w, int fd, bool is_tcp, const struct sockaddr *from,
		      char *owed, size_t owed_len)
{
	struct admission_ticket ticket;
	struct connection *c;
	int one = 1;

	/* Refused: accepted and closed at once, so the source learns it now
	 * rather than waiting in the backlog behind its own connections. */
	if (!source_admit(w, fd, from, &ticket)) {
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
	echo_conn_adopt_owed(&c->echo, owed, owed_len);
	c->want = echo_conn_want(&c->echo);
	struct epoll_event ev = {.events = want_events(c->want), .data.ptr = &c->source};
	if (epoll_ctl(w->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int r = negative_errno();
		close(fd);
		echo_conn_release(&c->echo);
		free(c);
		log_warning_errno(r, "watching a new connection: %m");
		goto unadmit;
	}
	c->ticket = ticket;
	c->last_active_ms = c->queued_ms = now_ms();
	lru_append(w, c);
	w->n_connections++;
	if (log_get_max_level() >= LOG_DEBUG) {
		char peer[ADDRESS_MAX];
		address_format_peer(fd, peer, sizeof(peer));
		log_peer_debug(peer, "connection from %s", peer);
	}
	return 0;
unadmit:
	if (w->setup->scoreboard)
		admission_put(w->setup->scoreboard->sources, w->pid, &ticket);
undo:
	SB_SUB(w->slot->active, 1);
	if (w->setup->release_reservations && w->setup->scoreboard)
		scoreboard_release(w->setup->scoreboard);
	return -ENOMEM;
}

static void
connection_handle(struct worker *w, struct connection *c, uint32_t events, uint64_t now)
{
	struct echo_io io = {0};
	int r;

	r = echo_conn_handle(&c->echo, w->buffer, WORKER_BUFFER_SIZE, &io);
	w->io_pending.bytes_in += io.bytes_in;
	w->io_pending.bytes_out += io.bytes_out;
	if (r < 0 || r == ECHO_DONE) {
		if (r < 0 && log_get_max_level() >= LOG_DEBUG) {
			char peer[ADDRESS_MAX];
			address_format_peer(c->echo.fd, peer, sizeof(peer));
			log_peer_debug(peer, "connection from %s failed: %s", peer, strerror(-r));
		}
		worker_connection_close(w, c);
		return;
	}
	if (io.bytes_in || io.bytes_out)
		connection_touch(w, c, now);
	if ((enum echo_want)r != c->want) {
		struct epoll_event ev = {.events = want_events((enum echo_want)r),
					 .data.ptr = &c->source};
		if (epoll_ctl(w->epoll_fd, EPOLL_CTL_MOD, c->echo.fd, &ev) < 0) {
			worker_connection_close(w, c);
			return;
		}
		c->want = (enum echo_want)r;
	}
	/* A hang-up with nothing readable left would otherwise wake us forever. */
	if ((events & (EPOLLHUP | EPOLLERR)) && r == ECHO_WANT_WRITE && !(events & EPOLLOUT))
		worker_connection_close(w, c);
}

/* --- datagrams --- */

static void
datagram_serve(struct worker *w, const struct listener *l, uint64_t now)
{
	struct udp_counters before = w->udp_counters;
	int r;

	r = udp_echo_serve(&w->udp, l->fd, w->datagram_limit, now * 1000, &w->udp_counters);
	if (r == -ENOMEM)
		log_warning("serving datagrams on %s: out of memory", l->name);
	SB_ADD(w->slot->dgrams_in, w->udp_counters.datagrams_in - before.datagrams_in);
	SB_ADD(w->slot->dgrams_out, w->udp_counters.datagrams_out - before.datagrams_out);
	SB_ADD(w->slot->dgrams_dropped,
	       udp_counters_dropped(&w->udp_counters) - udp_counters_dropped(&before));
	SB_ADD(w->slot->bytes_in, w->udp_counters.bytes_in - before.bytes_in);
	SB_ADD(w->slot->bytes_out, w->udp_counters.bytes_out - before.bytes_out);
}

/* One summary line for drops since the last one, at most every few seconds. */
static void
drops_log(struct worker *w, uint64_t now)
{
	const struct udp_counters *c = &w->udp_counters;
	uint64_t drops = udp_counters_dropped(c) + SB_GET(w->slot->lost);

	if (drops == w->drops_logged || now - w->drops_logged_ms < DROP_LOG_INTERVAL_MS)
		return;
	log_notice("dropped so far: %llu datagram(s) from privileged ports, %llu from or to "
		   "broadcast/multicast, %llu truncated, %llu over DatagramRateLimit=, %llu unsendable; "
		   "%llu connection(s) lost at the fd limit",
		   (unsigned long long)c->dropped_port, (unsigned long long)c->dropped_address,
		   (unsigned long long)c->dropped_truncated, (unsigned long long)c->dropped_ratelimit,
		   (unsigned long long)c->dropped_send, (unsigned long long)SB_GET(w->slot->lost));
	w->drops_logged = drops;
	w->drops_logged_ms = now;
}

/* --- stop --- */

void
worker_start_drain(struct worker *w, const char *why, uint64_t now)
{
	if (w->draining)
		return;
	w->draining = true;
	w->drain_deadline_ms = now + (uint64_t)w->setup->config->shutdown_timeout_sec * 1000;
	SB_SET(w->slot->state, SLOT_DRAINING);
	worker_intake_poll(w, false);
	if (w->setup->channel >= 0)
		epoll_ctl(w->epoll_fd, EPOLL_CTL_DEL, w->setup->channel, NULL);
	for (size_t i = 0; w->setup->datagrams && i < w->setup->sockets->n; i++)
		if (w->setup->sockets->items[i].kind == SOCKET_DATAGRAM)
			epoll_ctl(w->epoll_fd, EPOLL_CTL_DEL, w->setup->sockets->items[i].fd, NULL);
	if (w->n_connections > 0)
		log_info("%s: finishing %u connection(s), for up to %u s", why, w->n_connections,
			 w->setup->config->shutdown_timeout_sec);
}

/* --- the loop --- */

static void
signal_handle(struct worker *w, uint64_t now)
{
	struct signalfd_siginfo si;

	while (read(w->signal_fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
			worker_start_drain(w, "stopping", now);
		else if (si.ssi_signo == SIGUSR1)
			worker_handover_restart(w, now);
		else if (si.ssi_signo == SIGUSR2)
			worker_handover_reload(w, now);
	}
}

static void
idle_expire(struct worker *w, uint64_t now)
{
	uint64_t limit = (uint64_t)w->setup->config->idle_timeout_sec * 1000;

	if (limit == 0)
		return;
	while (w->lru_head && now - w->lru_head->last_active_ms >= limit) {
		struct connection *c = w->lru_head;
		if (log_get_max_level() >= LOG_DEBUG) {
			char peer[ADDRESS_MAX];
			address_format_peer(c->echo.fd, peer, sizeof(peer));
			log_peer_debug(peer, "connection from %s idle for %u s, closing", peer,
				       w->setup->config->idle_timeout_sec);
		}
		worker_connection_close(w, c);
	}
}

static int
next_timeout(const struct worker *w, uint64_t now)
{
	uint64_t deadline = now + HEARTBEAT_MS;
	uint64_t limit = (uint64_t)w->setup->config->idle_timeout_sec * 1000;

	if (limit && w->lru_head && w->lru_head->last_active_ms + limit < deadline)
		deadline = w->lru_head->last_active_ms + limit;
	if (w->accept_resume_ms && w->accept_resume_ms < deadline)
		deadline = w->accept_resume_ms;
	if (w->hold != HOLD_NONE && now + CAP_RETRY_MS < deadline)
		deadline = now + CAP_RETRY_MS;
	if (w->draining && w->drain_deadline_ms < deadline)
		deadline = w->drain_deadline_ms;
	if (w->returning && now + CAP_RETRY_MS < deadline)
		deadline = now + CAP_RETRY_MS;
	return deadline > now ? (int)(deadline - now) : 0;
}

static void
io_flush(struct worker *w)
{
	if (w->io_pending.bytes_in)
		SB_ADD(w->slot->bytes_in, w->io_pending.bytes_in);
	if (w->io_pending.bytes_out)
		SB_ADD(w->slot->bytes_out, w->io_pending.bytes_out);
	w->io_pending = (struct echo_io){0};
}

static bool
worker_finished(const struct worker *w)
{
	if (w->setup->connection >= 0)
		return w->n_connections == 0;
	return w->draining && w->n_connections == 0;
}

static void
dispatch(struct worker *w, struct epoll_event *ev, uint64_t now)
{
	struct source *s = ev->data.ptr;

	switch (s->type) {
	case SOURCE_LISTENER:
		worker_intake_accept(w, ((struct listener_source *)s)->listener, now);
		break;
	case SOURCE_CONNECTION:
		connection_handle(w, (struct connection *)s, ev->events, now);
		break;
	case SOURCE_SIGNAL:
		signal_handle(w, now);
		break;
	case SOURCE_CHANNEL:
		worker_intake_receive(w, now);
		break;
	case SOURCE_DOORBELL:
		worker_intake_doorbell(w, now);
		break;
	case SOURCE_DATAGRAM:
		datagram_serve(w, ((struct listener_source *)s)->listener, now);
		break;
	}
}

static int
worker_loop(struct worker *w)
{
	struct epoll_event events[WORKER_EVENTS];

	for (;;) {
		uint64_t now = now_ms();
		int n;

		io_flush(w);
		SB_ADD(w->slot->heartbeat, 1);
		idle_expire(w, now);
		drops_log(w, now);
		if (worker_finished(w))
			return EXIT_SUCCESS;
		if (w->draining && now >= w->drain_deadline_ms) {
			log_notice("shutdown timeout: closing %u connection(s)", w->n_connections);
			while (w->lru_head)
				worker_connection_close(w, w->lru_head);
			return EXIT_SUCCESS;
		}
		if (w->n_listeners)
			worker_intake_update(w, now);
		if (w->returning)
			worker_handover_return(w);

		n = epoll_wait(w->epoll_fd, events, WORKER_EVENTS, next_timeout(w, now));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return log_error_errno(errno, "epoll_wait: %m"), EXIT_FAILURE;
		}
		now = now_ms();
		for (int i = 0; i < n; i++)
			dispatch(w, &events[i], now);
	}
}

static int
worker_setup_signals(struct worker *w)
{
	sigset_t mask;

	/* The client's side of a socket may close at any time: EPIPE is an
	 * error for that connection, never a reason to die. */
	signal(SIGPIPE, SIG_IGN);
	/* A reload is the supervisor's business. */
	signal(SIGHUP, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	/* From the supervisor: hand connections over, echod is restarting
	 * (USR1), or give them back to it, echod is reloading (USR2). */
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGUSR2);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return negative_errno();
	w->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (w->signal_fd < 0)
		return negative_errno();
	w->signal_source.type = SOURCE_SIGNAL;
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->signal_source};
	if (epoll_ctl(w->epoll_fd, EPOLL_CTL_ADD, w->signal_fd, &ev) < 0)
		return negative_errno();
	return 0;
}

/* Datagram sockets stay in the epoll set for the worker's whole life (a
 * datagram needs no connection slot); EPOLLEXCLUSIVE wakes one worker per
 * burst, which then reads a whole batch. */
static int
worker_setup_datagrams(struct worker *w)
{
	const struct listen_set *set = w->setup->sockets;
	size_t n = 0;
	int r;

	for (size_t i = 0; set && w->setup->datagrams && i < set->n; i++) {
		if (set->items[i].kind != SOCKET_DATAGRAM)
			continue;
		struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE,
					 .data.ptr = &w->datagram_sources[n].source};
		w->datagram_sources[n] = (struct listener_source){
			.source.type = SOURCE_DATAGRAM,
			.listener = &set->items[i],
		};
		if (epoll_ctl(w->epoll_fd, EPOLL_CTL_ADD, set->items[i].fd, &ev) < 0)
			return negative_errno();
		n++;
	}
	if (n == 0)
		return 0;
	r = ratelimit_new(w->setup->config->datagram_rate_limit, 0, RATELIMIT_CAPACITY_DEFAULT,
			  &w->datagram_limit);
	return r < 0 ? r : 0;
}

static int
worker_setup_intake(struct worker *w)
{
	const struct listen_set *set = w->setup->sockets;

	if (set) {
		w->listeners = calloc(set->n, sizeof(*w->listeners));
		w->datagram_sources = calloc(set->n, sizeof(*w->datagram_sources));
		if (!w->listeners || !w->datagram_sources)
			return -ENOMEM;
	}
	for (size_t i = 0; set && w->setup->accept && i < set->n; i++) {
		if (set->items[i].kind != SOCKET_LISTENING)
			continue;
		w->listeners[w->n_listeners++] = (struct listener_source){
			.source.type = SOURCE_LISTENER,
			.listener = &set->items[i],
		};
	}
	if (w->n_listeners > 0) {
		/* Edge-triggered and not exclusive: a ring wakes every worker. */
		struct epoll_event ev = {.events = EPOLLIN | EPOLLET,
					 .data.ptr = &w->doorbell_source};
		w->doorbell_source.type = SOURCE_DOORBELL;
		if (epoll_ctl(w->epoll_fd, EPOLL_CTL_ADD, w->setup->scoreboard->doorbell, &ev) < 0)
			return negative_errno();
	}
	if (w->setup->channel >= 0) {
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->channel_source};
		w->channel_source.type = SOURCE_CHANNEL;
		if (epoll_ctl(w->epoll_fd, EPOLL_CTL_ADD, w->setup->channel, &ev) < 0)
			return negative_errno();
	}
	return worker_setup_datagrams(w);
}

static void
worker_free(struct worker *w)
{
	while (w->lru_head)
		worker_connection_close(w, w->lru_head);
	free(w->listeners);
	free(w->datagram_sources);
	udp_echo_free(&w->udp);
	worker_intake_owed_drop(w);
	ratelimit_free(w->datagram_limit);
	free(w->buffer);
	if (w->signal_fd >= 0)
		close(w->signal_fd);
	if (w->epoll_fd >= 0)
		close(w->epoll_fd);
}

int
worker_run(const struct worker_setup *setup)
{
	struct worker w = {.setup = setup, .pid = getpid(), .epoll_fd = -1, .signal_fd = -1};
	int r, status;

	w.slot = setup->scoreboard && setup->slot >= 0 ? &setup->scoreboard->slots[setup->slot]
						       : &w.local_slot;
	w.buffer = malloc(WORKER_BUFFER_SIZE);
	w.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (!w.buffer || w.epoll_fd < 0) {
		r = w.buffer ? negative_errno() : -ENOMEM;
		log_error_errno(r, "setting up the event loop: %m");
		worker_free(&w);
		return EXIT_FAILURE;
	}
	r = worker_setup_signals(&w);
	if (r >= 0)
		r = worker_setup_intake(&w);
	if (r >= 0)
		worker_intake_set_capacity(&w);
	if (r < 0) {
		log_error_errno(r, "setting up the event loop: %m");
		worker_free(&w);
		return EXIT_FAILURE;
	}
	if (setup->connection >= 0) {
		SB_ADD(w.slot->active, 1);
		SB_ADD(w.slot->served, 1);
		worker_add_connection(&w, setup->connection,
				      !setup->connection_tuned &&
					      listen_socket_is_tcp(setup->connection),
				      NULL, setup->connection_owed, setup->connection_owed_len);
	}
	SB_SET(w.slot->state, SLOT_RUNNING);
	status = worker_loop(&w);
	io_flush(&w);
	/* The scoreboard slot is cleared once the supervisor reaps us: this
	 * line is what remains of how the load was shared (run-bench.sh
	 * reads it for its fairness figure). */
	if (setup->connection < 0)
		log_info("exiting: served %" PRIu64 " connection(s), %" PRIu64 " datagram(s)",
			 SB_GET(w.slot->served), SB_GET(w.slot->dgrams_in));
	worker_free(&w);
	return status;
}
