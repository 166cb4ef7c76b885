/* The worker: one event loop, the same in every model (it waits on a
 * waitset: an epoll set, or poll() in a process of one connection); how
 * connections reach it is the intake's business (worker-intake.c), serving them the
 * connections' (worker-conns.c), keeping them across a restart or reload
 * worker-kept.c's. This file owns struct worker: the loop, its signals,
 * datagrams, and draining. */
#include "worker.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>

#include "accept.h"
#include "ledger.h"
#include "log.h"
#include "ratelimit.h"
#include "udp.h"
#include "util.h"
#include "worker-conns.h"
#include "worker-intake.h"
#include "worker-kept.h"

#define WORKER_EVENTS 256
/* The loop turns at least this often, so the heartbeat shows it is alive
 * well within even a one-second WatchdogSec=. */
#define HEARTBEAT_MS 250
/* Drops (datagrams, lost connections) are summed up in one line at most
 * this often, so a flood cannot flood the log. */
#define DROP_LOG_INTERVAL_MS 5000

struct worker {
	const struct worker_setup *setup;
	struct scoreboard_slot *slot; /* shared, or a local stand-in */
	struct scoreboard_slot local_slot;
	struct ledger ledger; /* counts in slot */
	struct conns conns;
	struct intake intake;
	struct waitset waitset;
	struct source signal_source;
	int signal_fd;
	bool signalled; /* the signalfd is readable: read after the batch */
	struct listener_source *datagram_sources;
	bool draining;
	bool returning; /* returning connections to the supervisor (reload) */
	unsigned returned;
	uint64_t drain_deadline_ms;
	struct udp_echo udp;
	struct udp_counters udp_counters;
	struct ratelimit *datagram_limit;
	uint64_t drops_logged; /* datagrams dropped + connections lost, as last logged */
	uint64_t drops_logged_ms;
};

/* What worker_run()'s signalfd reads, and SIGHUP, blocked in a worker. */
static void
worker_signal_mask(sigset_t *ret)
{
	sigemptyset(ret);
	sigaddset(ret, SIGTERM);
	sigaddset(ret, SIGINT);
	/* From the supervisor: hand connections over, echod is restarting
	 * (USR1), or give them back to it, echod is reloading (USR2). */
	sigaddset(ret, SIGUSR1);
	sigaddset(ret, SIGUSR2);
}

/* A worker never reads SIGHUP: blocked, it stays pending and harmless. */
static void
worker_blocked_signals(sigset_t *ret)
{
	worker_signal_mask(ret);
	sigaddset(ret, SIGHUP);
}

void
worker_signals_inherited(struct worker_signals *ret)
{
	sigset_t blocked, here;

	sigemptyset(&ret->to_default);
	ret->pipe_ignored = false;
	worker_blocked_signals(&blocked);
	ret->mask_fits = sigprocmask(SIG_BLOCK, NULL, &here) == 0;
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGCHLD && sigismember(&here, sig) != sigismember(&blocked, sig))
			ret->mask_fits = false;
	for (int sig = 1; sig < NSIG; sig++) {
		struct sigaction sa;

		/* Blocked for a worker's whole life, a signal's disposition
		 * never matters: the signalfd reads it, or (SIGHUP) nothing. */
		if (sigismember(&blocked, sig) == 1)
			continue;
		if (sigaction(sig, NULL, &sa) < 0 || sa.sa_handler == SIG_DFL)
			continue;
		if (sig == SIGPIPE && sa.sa_handler == SIG_IGN)
			ret->pipe_ignored = true;
		else
			sigaddset(&ret->to_default, sig);
	}
}

/* The client's side of a socket may close at any time: EPIPE is an error
 * for that connection, never a reason to die. */
static void
ignore_sigpipe(void)
{
	signal(SIGPIPE, SIG_IGN);
}

void
worker_enter_signals(const struct worker_signals *inherited)
{
	struct sigaction sa = {.sa_handler = SIG_DFL};
	sigset_t blocked;

	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGPIPE && sigismember(&inherited->to_default, sig) == 1)
			sigaction(sig, &sa, NULL);
	if (!inherited->pipe_ignored)
		ignore_sigpipe();
	if (inherited->mask_fits)
		return;
	worker_blocked_signals(&blocked);
	sigprocmask(SIG_SETMASK, &blocked, NULL);
}

/* --- datagrams --- */

static void
datagram_serve(struct worker *w, const struct listener *l, uint64_t now)
{
	const struct udp_counters *c = &w->udp_counters;
	struct udp_counters before = *c;
	int r;

	r = udp_echo_serve(&w->udp, l->fd, w->datagram_limit, now * 1000, &w->udp_counters);
	if (r == -ENOMEM)
		log_warning("serving datagrams on %s: out of memory", l->name);
	SB_ADD(w->slot->dgrams_in, w->udp_counters.datagrams_in - before.datagrams_in);
	SB_ADD(w->slot->dgrams_out, w->udp_counters.datagrams_out - before.datagrams_out);
	SB_ADD(w->slot->dgrams_dropped[DROP_PORT], c->dropped_port - before.dropped_port);
	SB_ADD(w->slot->dgrams_dropped[DROP_ADDRESS], c->dropped_address - before.dropped_address);
	SB_ADD(w->slot->dgrams_dropped[DROP_TRUNCATED],
	       c->dropped_truncated - before.dropped_truncated);
	SB_ADD(w->slot->dgrams_dropped[DROP_ACCESS], c->dropped_access - before.dropped_access);
	SB_ADD(w->slot->dgrams_dropped[DROP_RATELIMIT],
	       c->dropped_ratelimit - before.dropped_ratelimit);
	SB_ADD(w->slot->dgrams_dropped[DROP_SEND], c->dropped_send - before.dropped_send);
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
		   "broadcast/multicast, %llu truncated, %llu refused by AllowFrom=/DenyFrom=, "
		   "%llu over DatagramRateLimit=, %llu unsendable; "
		   "%llu connection(s) lost at the fd limit",
		   (unsigned long long)c->dropped_port, (unsigned long long)c->dropped_address,
		   (unsigned long long)c->dropped_truncated, (unsigned long long)c->dropped_access,
		   (unsigned long long)c->dropped_ratelimit, (unsigned long long)c->dropped_send,
		   (unsigned long long)SB_GET(w->slot->lost));
	w->drops_logged = drops;
	w->drops_logged_ms = now;
}

/* --- stop --- */

/* Stops taking work; what is held gets ShutdownTimeoutSec= to finish. */
static void
start_drain(struct worker *w, const char *why, uint64_t now)
{
	if (w->draining)
		return;
	w->draining = true;
	w->drain_deadline_ms = now + (uint64_t)w->setup->config->shutdown_timeout_sec * 1000;
	SB_SET(w->slot->state, SLOT_DRAINING);
	intake_stop(&w->intake);
	for (size_t i = 0; w->setup->datagrams && i < w->setup->sockets->n; i++)
		if (w->setup->sockets->items[i].kind == SOCKET_DATAGRAM)
			waitset_del(&w->waitset, w->setup->sockets->items[i].fd);
	if (w->conns.n > 0)
		log_info("%s: finishing %u connection(s), for up to %u s", why, w->conns.n,
			 w->setup->config->shutdown_timeout_sec);
}

/* A turn of the loop takes about as many as an accepting worker's does:
 * a backlog on the channel must not keep it long from the connections it
 * serves. */
#define RECEIVE_TURN ACCEPT_BATCH
/* A worker giving its connections away (a reload, a restart) reads its
 * channel no more after, and the supervisor sends it nothing more once it
 * has signalled: it takes everything there first, or what was sent would
 * be closed with the channel when the worker exits. */
#define RECEIVE_ALL UINT_MAX

static void
receive(struct worker *w, uint64_t now, unsigned max)
{
	if (intake_receive(&w->intake, max) == -ECONNRESET)
		start_drain(w, "supervisor gone", now);
}

/* --- connections that outlive this process --- */

/* The supervisor is being restarted: every connection goes to systemd,
 * which passes it to the next echod, instead of being drained. What cannot
 * be stored is drained as on a stop. */
static void
restart(struct worker *w, uint64_t now)
{
	/* Connections the supervisor sent before it stopped are ours too. */
	if (!w->draining)
		receive(w, now, RECEIVE_ALL);
	worker_kept_store(&w->conns);
	start_drain(w, "restarting", now);
}

/* A worker's own channel, or the one fork's connection processes share. */
static int
return_channel(const struct worker *w)
{
	return w->setup->channel >= 0 ? w->setup->channel : w->setup->returns;
}

static void
return_more(struct worker *w)
{
	if (worker_kept_return(&w->conns, return_channel(w), &w->returned) == -EAGAIN)
		return;
	/* A fork connection process says it at debug level: there may be
	 * thousands of them, and the supervisor counts them once. */
	if (w->returned)
		log_full_errno(w->setup->intake == INTAKE_ONE ? LOG_DEBUG : LOG_INFO, 0,
			       "reload: gave %u connection(s) back for the new workers",
			       w->returned);
	w->returning = false;
}

/* A reload: the supervisor takes this worker's connections back and gives
 * them to the new generation, so that they outlive ShutdownTimeoutSec=. */
static void
reload(struct worker *w, uint64_t now)
{
	if (return_channel(w) < 0 || w->draining) {
		start_drain(w, "reloading", now);
		return;
	}
	/* Connections the supervisor sent before are ours to return too. */
	receive(w, now, RECEIVE_ALL);
	w->returning = true;
	return_more(w);
	/* Whatever is left (the channel is full for now) is returned later;
	 * meanwhile nothing new is taken. */
	start_drain(w, "reloading", now);
}

/* --- the loop --- */

static void
signal_handle(struct worker *w, uint64_t now)
{
	struct signalfd_siginfo si;

	while (read(w->signal_fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
			start_drain(w, "stopping", now);
		else if (si.ssi_signo == SIGUSR1)
			restart(w, now);
		else if (si.ssi_signo == SIGUSR2)
			reload(w, now);
	}
}

static void
earliest(uint64_t *deadline, uint64_t at)
{
	if (at && at < *deadline)
		*deadline = at;
}

static int
next_timeout(const struct worker *w, uint64_t now)
{
	uint64_t deadline = now + HEARTBEAT_MS;

	earliest(&deadline, conns_next_expiry(&w->conns));
	earliest(&deadline, intake_next_wakeup(&w->intake, now));
	if (w->draining)
		earliest(&deadline, w->drain_deadline_ms);
	if (w->returning)
		earliest(&deadline, now + ACCEPT_RETRY_MS);
	return deadline > now ? (int)(deadline - now) : 0;
}

static bool
worker_finished(const struct worker *w)
{
	if (w->setup->intake == INTAKE_ONE)
		return w->conns.n == 0;
	return w->draining && w->conns.n == 0;
}

static void
dispatch(struct worker *w, struct epoll_event *ev, uint64_t now)
{
	struct source *s = ev->data.ptr;

	switch (s->type) {
	case SOURCE_LISTENER:
		intake_accept(&w->intake, ((struct listener_source *)s)->listener, now);
		break;
	case SOURCE_CONNECTION:
		conns_handle(&w->conns, (struct connection *)s, ev->events, now);
		break;
	case SOURCE_SIGNAL:
		/* Read after the rest of the batch: a reload or a restart
		 * gives every connection away, and an event further on would
		 * name one that is gone. */
		w->signalled = true;
		break;
	case SOURCE_CHANNEL:
		receive(w, now, RECEIVE_TURN);
		break;
	case SOURCE_DOORBELL:
		intake_doorbell(&w->intake, now);
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
		uint64_t now = now_ms(), woke_us;
		int n;

		conns_flush_io(&w->conns);
		SB_ADD(w->slot->heartbeat, 1);
		conns_expire(&w->conns, now);
		drops_log(w, now);
		if (worker_finished(w))
			return EXIT_SUCCESS;
		if (w->draining && now >= w->drain_deadline_ms) {
			log_notice("shutdown timeout: closing %u connection(s)", w->conns.n);
			conns_done(&w->conns);
			return EXIT_SUCCESS;
		}
		intake_update(&w->intake, now);
		if (w->returning)
			return_more(w);

		n = waitset_wait(&w->waitset, events, WORKER_EVENTS, next_timeout(w, now));
		if (n == -EINTR)
			continue;
		if (n < 0)
			return log_error_errno(n, "waiting for events: %m"), EXIT_FAILURE;
		woke_us = now_usec();
		now = woke_us / 1000;
		/* How busy this worker is decides whether peers stand by. */
		intake_account(&w->intake, woke_us);
		for (int i = 0; i < n; i++)
			dispatch(w, &events[i], now);
		if (w->signalled) {
			w->signalled = false;
			signal_handle(w, now);
		}
	}
}

static int
worker_setup_signals(struct worker *w)
{
	sigset_t mask;

	if (!w->setup->signals_entered) {
		sigset_t blocked;

		ignore_sigpipe();
		worker_blocked_signals(&blocked);
		if (sigprocmask(SIG_BLOCK, &blocked, NULL) < 0)
			return negative_errno();
	}
	worker_signal_mask(&mask);
	w->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (w->signal_fd < 0)
		return negative_errno();
	w->signal_source.type = SOURCE_SIGNAL;
	return waitset_add(&w->waitset, w->signal_fd, EPOLLIN, &w->signal_source);
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

	if (set && w->setup->datagrams) {
		w->datagram_sources = calloc(set->n, sizeof(*w->datagram_sources));
		if (!w->datagram_sources)
			return -ENOMEM;
	}
	for (size_t i = 0; set && w->setup->datagrams && i < set->n; i++) {
		if (set->items[i].kind != SOCKET_DATAGRAM)
			continue;
		w->datagram_sources[n] = (struct listener_source){
			.source.type = SOURCE_DATAGRAM,
			.listener = &set->items[i],
		};
		r = waitset_add(&w->waitset, set->items[i].fd, EPOLLIN | EPOLLEXCLUSIVE,
				&w->datagram_sources[n].source);
		if (r < 0)
			return r;
		n++;
	}
	if (n == 0)
		return 0;
	r = ratelimit_new(w->setup->config->datagram_rate_limit, 0, RATELIMIT_CAPACITY_DEFAULT,
			  &w->datagram_limit);
	return r < 0 ? r : 0;
}

/* The one connection of INTAKE_ONE, given at start. */
static void
take_given(struct worker *w)
{
	const struct worker_setup *setup = w->setup;

	if (setup->connection_kept) {
		intake_kept(&w->intake, setup->connection, setup->connection_owed_fd);
		return;
	}
	ledger_take(&w->ledger, LEDGER_SENT);
	conns_add(&w->conns, setup->connection,
		  &(struct conn_arrival){
		      .origin = LEDGER_SENT,
		      .is_tcp = !setup->connection_tuned && listen_socket_is_tcp(setup->connection),
		      .proxy = setup->connection_proxy,
		      .readable = true,
		  });
}

static void
worker_free(struct worker *w)
{
	conns_done(&w->conns);
	intake_done(&w->intake);
	free(w->datagram_sources);
	udp_echo_free(&w->udp);
	ratelimit_free(w->datagram_limit);
	/* A process of one connection exits next, which closes its signalfd:
	 * a system call fewer for each Model=fork connection. */
	if (w->setup->intake == INTAKE_ONE)
		return;
	if (w->signal_fd >= 0)
		close(w->signal_fd);
	waitset_done(&w->waitset);
}

int
worker_run(const struct worker_setup *setup)
{
	struct worker w = {.setup = setup, .waitset = {.epoll_fd = -1}, .signal_fd = -1};
	/* Only a per-source limit needs the table (and conns our pid). */
	struct admission_table *sources =
	    setup->scoreboard && setup->config->max_connections_per_source
		? setup->scoreboard->sources
		: NULL;
	int r, status;

	w.slot = setup->scoreboard && setup->slot >= 0 ? &setup->scoreboard->slots[setup->slot]
						       : &w.local_slot;
	w.ledger = (struct ledger){
	    .sb = setup->scoreboard, .slot = w.slot, .reserved = setup->release_reservations};
	w.intake.pending_owed_fd = -1;
	w.udp.access = &setup->config->access;
	/* A process of one connection waits with poll(): waitset.h. */
	r = waitset_init(&w.waitset, setup->intake == INTAKE_ONE);
	conns_init(&w.conns, &w.waitset, setup->config, &w.ledger, sources);
	if (r >= 0)
		r = worker_setup_signals(&w);
	if (r >= 0)
		r = intake_init(&w.intake, setup, &w.waitset, &w.ledger, &w.conns);
	if (r >= 0)
		r = worker_setup_datagrams(&w);
	if (r < 0) {
		log_error_errno(r, "setting up the event loop: %m");
		worker_free(&w);
		return EXIT_FAILURE;
	}
	intake_set_capacity(&w.intake);
	if (setup->intake == INTAKE_ONE)
		take_given(&w);
	SB_SET(w.slot->state, SLOT_RUNNING);
	status = worker_loop(&w);
	conns_flush_io(&w.conns);
	/* The scoreboard slot is cleared once the supervisor reaps us: this
	 * line is what remains of how the load was shared (run-bench.sh
	 * reads it for its fairness figure). */
	if (setup->intake != INTAKE_ONE)
		log_info("exiting: served %" PRIu64 " connection(s), %" PRIu64 " datagram(s)",
			 SB_GET(w.slot->served), SB_GET(w.slot->dgrams_in));
	worker_free(&w);
	return status;
}
