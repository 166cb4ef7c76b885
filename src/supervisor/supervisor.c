#include "supervisor.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>

#include "accept.h"
#include "admission.h"
#include "children.h"
#include "fdpass.h"
#include "ledger.h"
#include "log.h"
#include "notify.h"
#include "pool.h"
#include "proctitle.h"
#include "reload.h"
#include "restart.h"
#include "scoreboard.h"
#include "util.h"
#include "worker.h"
#include "acceptor.h"
#include "keeper.h"
#include "metrics.h"
#include "model.h"

#define KILL_GRACE_MS 2000
#define READY_POLL_MS 10
#define TICK_MS 250
/* Sources the MaxConnectionsPerSource= table can hold: enough for
 * MaxConnections= at start-up, within bounds. */
#define SOURCES_MIN 4096u
#define SOURCES_MAX (1u << 20)
#define RESTART_ANNOUNCE_VALID_MS 10000
/* Refusals and pauses are summed up in one line at most this often. */
#define ADMISSION_LOG_INTERVAL_MS 5000

/* What an epoll registration of the supervisor is: the type in the high
 * half of data.u64, an index (listener) or an fd (channel) in the low. */
enum {
	EVENT_SIGNAL = 1,
	EVENT_LISTENER,
	EVENT_CHANNEL,
	EVENT_GIVE_BACK, /* the channel fork's connection processes share */
	EVENT_FORKER,	 /* fork's connection forker reports exits */
	EVENT_METRICS,
};
#define EVENT(type, index) (((uint64_t)(type) << 32) | (uint32_t)(index))

struct supervisor {
	struct pool_env env;
	struct scoreboard scoreboard;
	struct listen_set *sockets;
	struct pool *pool; /* the current generation; older ones follow it */
	struct children children;
	struct held held; /* a new connection no process can take yet */
	config_reader reread;
	void *reread_userdata;
	const char *runtime_dir; /* NULL: none */
	uint64_t ticked_ms; /* the last turn that did the once-a-tick work */
	struct metrics metrics;
	unsigned generation; /* of the configuration in use: a rejected reload leaves it */
	/* Reload attempts, taken or not: what reload-status counts (reload.h),
	 * so that echod --reload hears of a rejected one too. */
	unsigned long long reload_seq;
	bool ready;	/* READY=1 sent for the current generation */
	bool reloading; /* a reload waits for its new generation */
	bool stopping;
	uint64_t kill_at_ms;
	bool killed;
	bool keeping; /* this stop hands the connections to the fd store */
	const struct model_ops *model; /* the current generation's */
	struct acceptor acceptor;
	uint64_t refused_logged, refused_access_logged, refused_proxy_logged, pauses_logged;
	uint64_t admission_logged_ms;
	char status_note[640]; /* shown in STATUS=, e.g. a rejected reload */
	/* What the reload in progress did not apply, for its verdict: the
	 * client (echod --reload) must not hear "applied" for a key that is
	 * kept as it was. Empty when everything was applied. */
	char reload_unapplied[512];
	struct notify_status_limiter status_limiter;
	uint64_t watchdog_usec; /* 0: no watchdog */
	uint64_t watchdog_next_ms; /* when the next ping is due */
	uint64_t *heartbeats;	/* per slot, as last seen */
	uint64_t *heartbeat_ms; /* per slot, when it last moved */
	/* Kept connections (from systemd's fd store at start, or returned on
	 * a reload) until the workers have them. */
	struct keeper keeper;
	/* RESTART_SIGNAL came: the coming SIGTERM is a restart's. */
	uint64_t restart_announced_ms; /* 0: no announcement */
	unsigned restart_store_max;
};

static inline const struct config *
current_config(const struct supervisor *s)
{
	return &s->pool->config;
}

/* What the model works on: lent for one call. */
static struct model_ctx
model_ctx(struct supervisor *s)
{
	return (struct model_ctx){
	    .env = &s->env, .pool = s->pool, .children = &s->children, .held = &s->held};
}

/* Starts what the model runs beside its pool (model_ops.begin), just
 * before the pool starts: at start and on each reload. */
static void
model_begin(struct supervisor *s)
{
	struct model_ctx m = model_ctx(s);

	if (s->model->begin)
		s->model->begin(&m);
}

/* DeferAcceptSec=: TCP_DEFER_ACCEPT on the TCP listeners echod bound itself.
 * Sockets from systemd are left as the socket unit made them: that is where
 * their options belong (DeferAcceptSec= there), and they outlive us. */
static int
defer_accept_apply(const struct supervisor *s, const struct config *c)
{
	int r;

	if (s->sockets->from_systemd) {
		if (c->defer_accept_sec)
			log_notice("DeferAcceptSec= applies only to sockets echod binds itself: "
				   "set DeferAcceptSec= in the socket unit instead");
		return 0;
	}
	r = listen_set_defer_accept(s->sockets, c->defer_accept_sec);
	if (r < 0)
		return log_error_errno(r, "DeferAcceptSec=%u: setting TCP_DEFER_ACCEPT: %m",
				       c->defer_accept_sec);
	return 0;
}

/* --- status --- */

/* The supervisor's title in ps: model, generation in use, and a stop. */
static void
title_update(const struct supervisor *s)
{
	proctitle_set(NULL, "echod: supervisor (%s, generation %u%s)", s->model->name,
		      s->generation, s->stopping ? ", stopping" : "");
}

/* Runs on every turn of the loop, so it first asks the limiter: summing all
 * SCOREBOARD_SLOTS slots on each accept batch was a sixth of passfd's
 * supervisor CPU, for a text sent at most 4 times a second. */
static void
status_update(struct supervisor *s, bool force)
{
	uint64_t now_usec = now_ms() * 1000;
	struct model_ctx m = model_ctx(s);
	struct scoreboard_totals t;

	if (!force && !notify_status_may_be_due(&s->status_limiter, now_usec))
		return;
	scoreboard_totals(&s->scoreboard, &t);
	struct notify_status st = {
	    .model = s->model->name,
	    .served = t.served,
	    .refused = t.refused,
	    .lost = t.lost,
	    .dgrams_in = t.dgrams_in,
	    .dgrams_out = t.dgrams_out,
	    .dgrams_dropped = t.dgrams_dropped,
	    .generation = s->generation,
	    .note = s->status_note[0] ? s->status_note : NULL,
	};
	s->model->status(&m, &t, &st);
	notify_status_send(&s->status_limiter, &st, now_usec, force);
}

/* What admission control did since the last line, at most one line every
 * few seconds whatever a flood does: refusals by any process and pauses of
 * any acceptor are all in the scoreboard. */
static void
status_log_admission(struct supervisor *s, uint64_t now)
{
	const struct config *c = current_config(s);
	struct scoreboard_totals t;
	uint64_t limit_now, limit_logged;

	if (now - s->admission_logged_ms < ADMISSION_LOG_INTERVAL_MS)
		return;
	scoreboard_totals(&s->scoreboard, &t);
	limit_now = t.refused - t.refused_access - t.refused_proxy;
	limit_logged = s->refused_logged - s->refused_access_logged - s->refused_proxy_logged;
	if (limit_now != limit_logged)
		log_notice(
		    "refused %llu connection(s) from sources over MaxConnectionsPerSource=%u "
		    "(%llu in all)",
		    (unsigned long long)(limit_now - limit_logged), c->max_connections_per_source,
		    (unsigned long long)limit_now);
	if (t.refused_proxy != s->refused_proxy_logged)
		log_notice("refused %llu connection(s) on PROXY listeners: not from ProxyFrom=, or "
			   "no good header within ProxyHeaderTimeoutSec=%u (%llu in all)",
			   (unsigned long long)(t.refused_proxy - s->refused_proxy_logged),
			   c->proxy_header_timeout_sec, (unsigned long long)t.refused_proxy);
	if (t.refused_access != s->refused_access_logged)
		log_notice("refused %llu connection(s) by AllowFrom=/DenyFrom= (%llu in all)",
			   (unsigned long long)(t.refused_access - s->refused_access_logged),
			   (unsigned long long)t.refused_access);
	if (t.accept_pauses != s->pauses_logged)
		log_notice("ConnectionRateLimit=%u reached: accepting paused %llu time(s); "
			   "new clients wait in the listen backlog",
			   c->connection_rate_limit,
			   (unsigned long long)(t.accept_pauses - s->pauses_logged));
	if (t.refused != s->refused_logged || t.accept_pauses != s->pauses_logged)
		s->admission_logged_ms = now;
	s->refused_logged = t.refused;
	s->refused_access_logged = t.refused_access;
	s->refused_proxy_logged = t.refused_proxy;
	s->pauses_logged = t.accept_pauses;
}

/* --- processes --- */

static void
reap(struct supervisor *s, uint64_t now)
{
	for (;;) {
		struct pool **link;
		bool a_worker = false;
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);

		if (pid <= 0)
			return;
		if (children_exited(&s->children, &s->scoreboard, pid, status))
			continue;
		/* A worker that did not end cleanly may not have given back
		 * its per-source counts. */
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			admission_forget_owner(s->scoreboard.sources, pid);
		for (link = &s->pool; *link; link = &(*link)->next) {
			struct pool *p = *link;
			int index = pool_find(p, pid);
			if (index < 0)
				continue;
			a_worker = true;
			/* What it sent back and we have not read would
			 * be closed with its channel. */
			if (p->retiring)
				keeper_receive(&s->keeper, pool_channel_of(p, (unsigned)index),
					       UINT_MAX);
			pool_worker_exited(&s->env, p, (unsigned)index, status, now, s->stopping);
			/* A retired generation is gone with its last worker. */
			if (p->retiring && pool_alive(p) == 0) {
				*link = p->next;
				s->env.pools = s->pool;
				log_info("generation %u: every worker has finished", p->generation);
				pool_free(&s->env, p);
			}
			break;
		}
		/* No worker's: an orphaned connection process of a forker that
		 * died (the supervisor is their subreaper). */
		if (!a_worker)
			children_orphan_exited(&s->children, &s->scoreboard, pid, status);
	}
}

static unsigned
processes_alive(const struct supervisor *s)
{
	unsigned n = children_alive(&s->children);

	for (const struct pool *p = s->pool; p; p = p->next)
		n += pool_alive(p);
	return n;
}

static void
signal_all(struct supervisor *s, int sig)
{
	for (const struct pool *p = s->pool; p; p = p->next)
		pool_signal(p, sig);
	children_signal(&s->children, sig);
}

/* --- stop --- */

static unsigned
connections_active(struct supervisor *s)
{
	struct model_ctx m = model_ctx(s);

	return s->model->active(&m);
}

/* What only the model could serve is lost once it goes (stop, or a reload
 * to another model). */
static void
abandon(struct supervisor *s)
{
	struct model_ctx m = model_ctx(s);

	if (s->model->abandon)
		ledger_lost_here(&s->scoreboard, (unsigned)s->children.slot, s->model->abandon(&m));
}

/* A second SIGTERM or SIGINT during the drain (Ctrl-C again, as nginx and
 * most daemons take it): the open connections are closed now, not after
 * ShutdownTimeoutSec=. Not while connections go to the fd store: killing
 * the workers then would lose the very connections a restart keeps. */
static void
fast_stop(struct supervisor *s, const char *signame)
{
	if (s->killed)
		return;
	if (s->keeping) {
		log_notice("SIG%s again: ignored while the connections go to the fd store", signame);
		return;
	}
	log_notice("SIG%s again: fast stop, closing %u open connection(s) now", signame,
		   connections_active(s));
	signal_all(s, SIGKILL);
	s->killed = true;
}

static void
begin_stop(struct supervisor *s, const char *signame, uint64_t now)
{
	unsigned timeout = current_config(s)->shutdown_timeout_sec;
	bool keep;

	if (s->stopping) {
		fast_stop(s, signame);
		return;
	}
	/* systemd sends SIGTERM right after ExecStop= ends: a stale
	 * announcement (a stop job that never came) does not count. */
	keep = restart_wanted(s->sockets->from_systemd,
				  s->restart_announced_ms &&
					  now - s->restart_announced_ms < RESTART_ANNOUNCE_VALID_MS,
				  s->restart_store_max, connections_active(s));
	s->stopping = true;
	s->keeping = keep;
	s->kill_at_ms = now + (uint64_t)timeout * 1000 + KILL_GRACE_MS;
	notify_stopping();
	/* Tell systemd how long the drain may take, so it does not kill us
	 * first when TimeoutStopSec= is shorter. */
	notify_extend_timeout(((uint64_t)timeout * 1000 + KILL_GRACE_MS + 1000) * 1000);
	if (!keep)
		log_info("SIG%s: stopping; open connections get up to %u s to finish", signame,
			 timeout);
	title_update(s);
	for (struct pool *p = s->pool; p; p = p->next)
		pool_cancel_respawns(p);
	acceptor_stop(&s->acceptor);
	/* Never served, like the clients still in the backlog. */
	abandon(s);
	if (keep) {
		/* Sent back by connection processes on a reload, not read yet. */
		keeper_receive(&s->keeper, s->env.returns[FDPASS_SUPERVISOR], UINT_MAX);
		/* For the next echod, should the file be broken by then. */
		(void)restart_config_keep(current_config(s), s->restart_store_max,
					  connections_active(s));
		/* Not delivered to a worker yet: back into the store. */
		keeper_store(&s->keeper);
	}
	signal_all(s, keep ? SIGUSR1 : SIGTERM);
}

/* --- reload --- */

static void
reload_reject(struct supervisor *s, const char *why)
{
	log_struct(LOG_ERR, ECHOD_MESSAGE_RELOAD_REJECTED,
		   "reload rejected, the running configuration stays: %s", why);
	snprintf(s->status_note, sizeof(s->status_note), "reload rejected: %s", why);
	scoreboard_count_reload(&s->scoreboard, false);
	reload_status_write(s->runtime_dir, s->reload_seq, false, why);
	/* systemd waits for READY=1 after RELOADING=1, whatever the outcome. */
	notify_ready();
	status_update(s, true);
}

static bool
addresses_changed(char *const *a, size_t n_a, char *const *b, size_t n_b)
{
	if (n_a != n_b)
		return true;
	for (size_t i = 0; i < n_a; i++)
		if (strcmp(a[i], b[i]) != 0)
			return true;
	return false;
}

static void
log_config_note(void *userdata, const char *note)
{
	log_notice("reload: %s", note);
}

static void
unapplied_add(struct supervisor *s, const char *what)
{
	size_t len = strlen(s->reload_unapplied);

	snprintf(s->reload_unapplied + len, sizeof(s->reload_unapplied) - len, "%s%s",
		 len ? "; " : "", what);
	log_notice("reload: %s", what);
}

/* What a reload to next leaves as it is, and why, for its verdict: the
 * keys read at start only (echod.conf(5) lists them). */
static void
unapplied_find(struct supervisor *s, const struct config *next)
{
	const struct config *cur = current_config(s);
	const char *a = next->metrics_listen ? next->metrics_listen : "";
	const char *b = cur->metrics_listen ? cur->metrics_listen : "";

	s->reload_unapplied[0] = '\0';
	if (addresses_changed(next->listen, next->n_listen, cur->listen, cur->n_listen))
		unapplied_add(s, s->sockets->from_systemd
				     ? "Listen= changed but not applied: the sockets come from "
				       "systemd (change echod.socket)"
				     : "Listen= changed but not applied: sockets are kept as they are "
				       "until a restart");
	if (addresses_changed(next->proxy_listen, next->n_proxy_listen, cur->proxy_listen,
			      cur->n_proxy_listen))
		unapplied_add(s, s->sockets->from_systemd
				     ? "ProxyListen= changed but not applied: the sockets come from "
				       "systemd (change echod.socket)"
				     : "ProxyListen= changed but not applied: sockets are kept as they "
				       "are until a restart");
	if (next->socket_mode != cur->socket_mode && !s->sockets->from_systemd)
		unapplied_add(s, "SocketMode= changed but not applied: it is set when the sockets "
				 "are bound, at start");
	if (strcmp(a, b) != 0)
		unapplied_add(s, "MetricsListen= changed but not applied: it is read at start, "
				 "restart to apply");
	if (strcmp(next->user ? next->user : "", cur->user ? cur->user : "") != 0 ||
	    strcmp(next->group ? next->group : "", cur->group ? cur->group : "") != 0)
		unapplied_add(s, "User=/Group= changed but not applied: root, once dropped, "
				 "cannot be taken back; restart to apply");
	if (next->defer_accept_sec != cur->defer_accept_sec && s->sockets->from_systemd)
		unapplied_add(s, "DeferAcceptSec= changed but not applied: sockets from systemd "
				 "keep the socket unit's options");
}

/* A new generation of workers starts with the new configuration; the old
 * one stops taking connections and finishes what it holds. READY=1 follows
 * once the new generation is up (see supervisor_loop). */
static void
reload(struct supervisor *s, uint64_t now)
{
	struct config_error err = {{0}};
	struct config next;
	const struct model_ops *model;
	struct model_ctx m = model_ctx(s);
	struct pool *pool;
	int r;

	notify_reloading(now * 1000);
	s->reload_seq++;
	log_info("SIGHUP: reloading the configuration");
	config_init(&next);
	r = s->reread(s->reread_userdata, &next, &err);
	if (r < 0) {
		reload_reject(s, err.message);
		config_done(&next);
		return;
	}
	unapplied_find(s, &next);
	/* As at start: a cap or an unused key is said, not kept quiet. */
	config_notes(&next, log_config_note, NULL);
	if (next.defer_accept_sec != current_config(s)->defer_accept_sec)
		(void)defer_accept_apply(s, &next);
	model = model_get(next.model);
	r = pool_new(&next, s->generation + 1, model->pool_size(&next, s->sockets),
		     model->worker_intake, &pool);
	if (r >= 0 && model->prepare)
		r = model->prepare(&m, &next);
	config_done(&next);
	if (r < 0) {
		reload_reject(s, "out of memory");
		return;
	}
	s->generation++;
	log_set_max_level(pool->config.log_level);
	log_set_model(model_to_string(pool->config.model));
	/* Every connection goes back for the new generation: a worker's over
	 * its channel, a fork connection process's over the channel they share
	 * (whatever the model: a reload may have switched away from fork). */
	pool_retire(&s->env, s->pool, s->model->pool_returns);
	if (model != s->model)
		abandon(s);
	s->model = model;
	if (children_alive(&s->children))
		log_info("reload: %u connection process(es) give their connections back",
			 children_alive(&s->children));
	children_signal(&s->children, SIGUSR2);
	pool->next = s->pool;
	s->pool = s->env.pools = pool;
	ledger_set_max(&s->scoreboard, config_max_connections(&pool->config));
	scoreboard_set_workers(&s->scoreboard, model->shares_listeners ? pool->n : 0);
	s->status_note[0] = '\0';
	s->ready = false;
	s->reloading = true;
	model_begin(s);
	if (pool_start(&s->env, pool, now) < 0)
		log_warning("generation %u: not every worker started; retrying with back-off",
			    pool->generation);
}

static void
became_ready(struct supervisor *s)
{
	const struct config *c = current_config(s);

	s->ready = true;
	notify_ready();
	if (s->reloading) {
		char verdict[sizeof(s->reload_unapplied) + 64];

		s->reloading = false;
		scoreboard_count_reload(&s->scoreboard, true);
		scoreboard_set_model(&s->scoreboard, model_to_string(c->model), s->generation);
		if (s->reload_unapplied[0]) {
			snprintf(verdict, sizeof(verdict), "configuration applied, except: %s",
				 s->reload_unapplied);
			snprintf(s->status_note, sizeof(s->status_note), "reload not applied: %s",
				 s->reload_unapplied);
		} else
			snprintf(verdict, sizeof(verdict), "configuration applied");
		reload_status_write(s->runtime_dir, s->reload_seq, true, verdict);
		log_struct(LOG_INFO, ECHOD_MESSAGE_RELOADED, "reloaded: %s model, %u worker(s), "
			   "generation %u%s%s", model_to_string(c->model), s->pool->n, s->generation,
			   s->reload_unapplied[0] ? "; not applied: " : "", s->reload_unapplied);
	} else {
		log_struct(LOG_INFO, ECHOD_MESSAGE_STARTED, "%s: %u worker(s) ready",
			   model_to_string(c->model), s->pool->n);
	}
	title_update(s);
	status_update(s, true);
}

/* --- watchdog --- */

/* A worker's loop turns at least every HEARTBEAT_MS (250 ms) and bumps
 * its heartbeat. One whose heartbeat stood still this long is stuck: it is
 * killed (and respawned). Four missed beats at the least, so that a worker
 * slowed by a busy machine is never taken for a stuck one; half the
 * watchdog interval for longer intervals. */
#define STUCK_MIN_MS 1000

static uint64_t
watchdog_stuck_ms(uint64_t interval_ms)
{
	return interval_ms / 2 > STUCK_MIN_MS ? interval_ms / 2 : STUCK_MIN_MS;
}

/* Pings every quarter of the interval, so that even a ping delayed by a
 * whole period comes within half of it, and only while the current
 * generation is whole and no worker is stuck: a pool that cannot be kept
 * alive lets systemd restart the service. */
static void
watchdog_check(struct supervisor *s, uint64_t now)
{
	uint64_t interval_ms = s->watchdog_usec / 1000;
	uint64_t stuck_ms = watchdog_stuck_ms(interval_ms);
	bool healthy = true;
	struct pool *p = s->pool;

	if (!s->watchdog_usec || now < s->watchdog_next_ms)
		return;
	for (unsigned i = 0; i < p->n; i++) {
		const struct position *pos = &p->positions[i];
		uint64_t beat;

		if (pos->pid == 0) {
			healthy = false;
			continue;
		}
		beat = SB_GET(s->scoreboard.slots[pos->slot].heartbeat);
		if (beat != s->heartbeats[pos->slot] || s->heartbeat_ms[pos->slot] < pos->started_ms) {
			s->heartbeats[pos->slot] = beat;
			s->heartbeat_ms[pos->slot] = now;
			continue;
		}
		if (now - s->heartbeat_ms[pos->slot] < stuck_ms)
			continue;
		healthy = false;
		log_warning("worker %u (pid %d): no progress for %llu ms: killing it", i,
			    (int)pos->pid, (unsigned long long)(now - s->heartbeat_ms[pos->slot]));
		kill(pos->pid, SIGKILL);
	}
	s->watchdog_next_ms = now + interval_ms / 4;
	if (healthy)
		notify_watchdog();
}

/* --- the loop --- */

static void
handle_signal(struct supervisor *s, const struct signalfd_siginfo *si, uint64_t now)
{
	switch (si->ssi_signo) {
	case SIGCHLD:
		reap(s, now);
		break;
	case SIGTERM:
	case SIGINT:
		begin_stop(s, sigabbrev_np((int)si->ssi_signo), now);
		break;
	case SIGHUP:
		if (!s->stopping)
			reload(s, now);
		break;
	case RESTART_SIGNAL:
		s->restart_announced_ms = si->ssi_int > 0 ? now : 0;
		s->restart_store_max = si->ssi_int > 0 ? (unsigned)si->ssi_int : 0;
		break;
	}
}

/* Read several at a time: a read that comes back short has emptied the
 * signalfd, so the common wakeup (one SIGCHLD per Model=fork connection)
 * costs one read, not a second that fails with EAGAIN. */
static void
handle_signals(struct supervisor *s, uint64_t now)
{
	struct signalfd_siginfo si[8];
	ssize_t n;

	do {
		n = read(s->env.signal_fd, si, sizeof(si));
		for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof(si[0]); i++)
			handle_signal(s, &si[i], now);
	} while (n == (ssize_t)sizeof(si));
}

static int
next_timeout(struct supervisor *s, uint64_t now)
{
	uint64_t deadline = now + TICK_MS;

	if (!s->ready && !s->stopping)
		deadline = now + READY_POLL_MS;
	for (const struct pool *p = s->pool; p; p = p->next) {
		uint64_t at = pool_next_respawn(p);
		if (at && at < deadline)
			deadline = at;
	}
	if (s->stopping && !s->killed && s->kill_at_ms < deadline)
		deadline = s->kill_at_ms;
	if (s->watchdog_usec && s->ready && s->watchdog_next_ms < deadline)
		deadline = s->watchdog_next_ms;
	if ((keeper_pending(&s->keeper) || acceptor_waiting(&s->acceptor, s->model)) &&
	    !s->stopping && now + ACCEPT_RETRY_MS < deadline)
		deadline = now + ACCEPT_RETRY_MS;
	return deadline > now ? (int)(deadline - now) : 0;
}

static void
dispatch(struct supervisor *s, uint64_t event, uint32_t events)
{
	uint32_t low = (uint32_t)event;
	struct model_ctx m = model_ctx(s);

	switch (event >> 32) {
	case EVENT_SIGNAL:
		handle_signals(s, now_ms());
		break;
	case EVENT_LISTENER:
		acceptor_accept(&s->acceptor, s->model, &m, &s->sockets->items[low]);
		break;
	case EVENT_CHANNEL:
		if (!pool_is_channel(s->pool, (int)low))
			break;
		if (events & EPOLLIN)
			keeper_receive(&s->keeper, (int)low, ACCEPT_BATCH * 4);
		if (events & (EPOLLHUP | EPOLLERR))
			pool_channel_hung_up(&s->env, s->pool, (int)low);
		break;
	case EVENT_GIVE_BACK:
		keeper_receive(&s->keeper, s->env.returns[FDPASS_SUPERVISOR], ACCEPT_BATCH * 4);
		break;
	case EVENT_METRICS:
		metrics_run(&s->metrics, now_ms());
		break;
	case EVENT_FORKER:
		children_forker_readable(&s->children, &s->scoreboard);
		break;
	}
}

/* For `echod status`: what waits in the kernel's accept queues. */
static void
sample_accept_queue(struct supervisor *s)
{
	unsigned queued, room;

	listen_queue_depth(s->sockets, &queued, &room);
	scoreboard_set_accept_queue(&s->scoreboard, queued, room);
}

/* What needs a look only every TICK_MS, not on each turn of the loop (each
 * accept batch, under load): both sum or ask the kernel for state across
 * all processes or listeners. The admission log's own interval starts only
 * from a line logged, so while nothing is refused it would otherwise sum
 * every scoreboard slot on every turn (7% of passfd's supervisor CPU). */
static void
once_a_tick(struct supervisor *s, uint64_t now)
{
	if (now < s->ticked_ms + TICK_MS)
		return;
	s->ticked_ms = now;
	status_log_admission(s, now);
	sample_accept_queue(s);
}

static int
supervisor_loop(struct supervisor *s)
{
	for (;;) {
		uint64_t now = now_ms();
		struct epoll_event ev[16];
		int n;

		if (s->stopping && processes_alive(s) == 0)
			return EXIT_SUCCESS;
		if (s->stopping && !s->killed && now >= s->kill_at_ms) {
			log_warning("processes still running past the shutdown timeout: killing them");
			signal_all(s, SIGKILL);
			s->killed = true;
		}
		if (!s->stopping)
			pool_respawn_due(&s->env, s->pool, now);
		if (!s->ready && !s->stopping && pool_all_running(&s->env, s->pool))
			became_ready(s);
		struct model_ctx m = model_ctx(s);

		if (s->ready && keeper_pending(&s->keeper))
			keeper_deliver(&s->keeper, s->model, &m, s->generation > 0);
		if (s->ready) {
			acceptor_update(&s->acceptor, s->model, &m, s->stopping, now);
			watchdog_check(s, now);
			status_update(s, false);
			once_a_tick(s, now);
		}
		metrics_tick(&s->metrics, now);

		n = epoll_wait(s->env.epoll_fd, ev, ELEMENTSOF(ev), next_timeout(s, now));
		if (n < 0 && errno != EINTR)
			return log_error_errno(errno, "epoll_wait: %m"), EXIT_FAILURE;
		for (int i = 0; i < n; i++)
			dispatch(s, ev[i].data.u64, ev[i].events);
	}
}

static int
setup_signals(struct supervisor *s)
{
	sigset_t mask;

	/* Blocked before the first fork, so no signal is lost or handled the
	 * default way in the window before the signalfd exists. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, RESTART_SIGNAL);
	/* Not ours: blocked so that children are born with it blocked (see
	 * worker_enter_signals()); read and ignored. */
	sigaddset(&mask, SIGUSR2);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return negative_errno();
	signal(SIGPIPE, SIG_IGN);
	worker_signals_inherited(&s->env.signals);
	s->env.signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (s->env.signal_fd < 0)
		return negative_errno();
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EVENT(EVENT_SIGNAL, 0)};
	if (epoll_ctl(s->env.epoll_fd, EPOLL_CTL_ADD, s->env.signal_fd, &ev) < 0)
		return negative_errno();
	return 0;
}

/* Made whatever the model: a reload may switch to fork and away again. We
 * hold its sending end too, so it never hangs up. */
static int
setup_return_channel(struct supervisor *s)
{
	int *pair = s->env.returns;
	int r = fdpass_channel_new(pair);

	if (r < 0)
		return r;
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EVENT(EVENT_GIVE_BACK, 0)};
	if (epoll_ctl(s->env.epoll_fd, EPOLL_CTL_ADD, pair[FDPASS_SUPERVISOR], &ev) < 0)
		return negative_errno();
	return 0;
}

/* MetricsListen= is read at start only, as Listen= is. */
static int
setup_metrics(struct supervisor *s, const struct config *c)
{
	int r = metrics_start(&s->metrics, s->sockets, c->metrics_listen, &s->scoreboard);
	int fd = metrics_fd(&s->metrics);

	if (r < 0 || fd < 0)
		return r;
	s->env.metrics = &s->metrics;
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EVENT(EVENT_METRICS, 0)};
	if (epoll_ctl(s->env.epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return log_error_errno(errno, "metrics: epoll_ctl: %m");
	return 0;
}

static unsigned
sources_capacity(const struct config *c)
{
	unsigned n = config_max_connections(c);

	return n < SOURCES_MIN ? SOURCES_MIN : n > SOURCES_MAX ? SOURCES_MAX : n;
}

/* Everything that can fail before the first fork. */
static int
supervisor_setup(struct supervisor *s, const struct config *config)
{
	const struct model_ops *model = model_get(config->model);
	unsigned workers = model->pool_size(config, s->sockets);
	int r;

	r = scoreboard_new(&s->scoreboard, SCOREBOARD_SLOTS, config_max_connections(config),
			   s->runtime_dir);
	if (r < 0 && s->runtime_dir)
		return log_error_errno(r, "creating the scoreboard in %s: %m", s->runtime_dir);
	if (r < 0)
		return log_error_errno(r, "creating the scoreboard: %m");
	scoreboard_set_model(&s->scoreboard, model_to_string(config->model), s->generation);
	/* Mapped whatever the configuration says, so a reload can turn the limit
	 * on; its pages are touched only as sources are counted. */
	r = admission_table_new(sources_capacity(config), &s->scoreboard.sources,
				&s->scoreboard.sources_fd);
	if (r < 0)
		return log_error_errno(r, "creating the per-source connection table: %m");
	r = defer_accept_apply(s, config);
	if (r < 0)
		return r;
	s->env.scoreboard = &s->scoreboard;
	scoreboard_set_workers(&s->scoreboard, model->shares_listeners ? workers : 0);
	s->heartbeats = calloc(SCOREBOARD_SLOTS, sizeof(*s->heartbeats));
	s->heartbeat_ms = calloc(SCOREBOARD_SLOTS, sizeof(*s->heartbeat_ms));
	r = s->heartbeats && s->heartbeat_ms
		? pool_new(config, s->generation, workers, model->worker_intake, &s->pool)
		: -ENOMEM;
	if (r >= 0)
		r = children_init(&s->children, &s->scoreboard, EVENT(EVENT_FORKER, 0));
	s->model = model;
	if (r >= 0 && model->prepare) {
		struct model_ctx m = model_ctx(s);
		r = model->prepare(&m, config);
	}
	if (r < 0)
		return log_error_errno(r, "setting up: %m");
	s->env.pools = s->pool;
	keeper_set_ledger(&s->keeper, &s->scoreboard, (unsigned)s->children.slot);
	s->env.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (s->env.epoll_fd < 0)
		return log_error_errno(errno, "epoll_create1: %m");
	acceptor_init(&s->acceptor, s->env.epoll_fd, EVENT(EVENT_LISTENER, 0), s->sockets,
		      &s->scoreboard, (unsigned)s->children.slot);
	r = setup_signals(s);
	if (r < 0)
		return log_error_errno(r, "setting up signal handling: %m");
	r = setup_return_channel(s);
	if (r < 0)
		return log_error_errno(r, "setting up the connection processes' channel: %m");
	r = setup_metrics(s, config);
	if (r < 0)
		return r;
	if (notify_watchdog_enabled(&s->watchdog_usec))
		log_info("watchdog: pinging every %llu ms while every worker makes progress; "
			 "a worker that makes none for %llu ms is replaced",
			 (unsigned long long)(s->watchdog_usec / 4000),
			 (unsigned long long)watchdog_stuck_ms(s->watchdog_usec / 1000));
	return 0;
}

static void
supervisor_free(struct supervisor *s)
{
	while (s->pool) {
		struct pool *next = s->pool->next;
		pool_free(&s->env, s->pool);
		s->pool = next;
	}
	metrics_stop(&s->metrics);
	children_done(&s->children);
	if (s->held.fd >= 0)
		close(TAKE_FD(s->held.fd));
	keeper_free(&s->keeper);
	free(s->heartbeats);
	free(s->heartbeat_ms);
	admission_table_free(s->scoreboard.sources);
	if (s->scoreboard.sources)
		close(s->scoreboard.sources_fd);
	scoreboard_free(&s->scoreboard);
	for (int i = 0; i < 2; i++)
		if (s->env.returns[i] >= 0)
			close(s->env.returns[i]);
	if (s->env.signal_fd >= 0)
		close(s->env.signal_fd);
	if (s->env.epoll_fd >= 0)
		close(s->env.epoll_fd);
}

/* Start-up failed after some workers were forked: nothing may be left. */
static void
abort_start(struct supervisor *s)
{
	signal_all(s, SIGKILL);
	while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
		;
}

int
supervisor_run(const struct config *config, struct listen_set *sockets, config_reader reread,
	       void *userdata, const char *runtime_dir, const char *status_note)
{
	struct supervisor s = {
	    .env = {.epoll_fd = -1,
		    .signal_fd = -1,
		    .sockets = sockets,
		    .channel_event = EVENT(EVENT_CHANNEL, 0),
		    .returns = {-1, -1}},
	    .sockets = sockets,
	    /* Not fd 0: children close what it names. */
	    .held = HELD_NONE,
	    .reread = reread,
	    .reread_userdata = userdata,
	    .runtime_dir = runtime_dir,
	};
	int r, status = EXIT_FAILURE;

	if (status_note)
		snprintf(s.status_note, sizeof(s.status_note), "%s", status_note);
	log_set_model(model_to_string(config->model));
	r = keeper_init(&s.keeper, sockets);
	s.env.waiting = &s.keeper.queue;
	s.env.held_fd = &s.held.fd;
	s.env.forker_channel = &s.children.forker.channel;
	s.env.forker_exe = &s.children.forker.exe_fd;
	if (r >= 0)
		r = supervisor_setup(&s, config);
	if (r >= 0)
		model_begin(&s);
	if (r >= 0) {
		r = pool_start(&s.env, s.pool, now_ms());
		if (r < 0)
			abort_start(&s);
	}
	if (r < 0) {
		notify_errno(r);
		goto out;
	}
	struct model_ctx m = model_ctx(&s);
	title_update(&s);
	s.model->log_start(&m);
	reload_status_write(s.runtime_dir, s.reload_seq, true, "started");
	status = supervisor_loop(&s);
	log_struct(LOG_INFO, ECHOD_MESSAGE_STOPPED, "stopped");
out:
	supervisor_free(&s);
	listen_set_free(sockets, true);
	return status;
}
