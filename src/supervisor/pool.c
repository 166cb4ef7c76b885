#include "pool.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fdclose.h"
#include "fdpass.h"
#include "kept.h"
#include "ledger.h"
#include "log.h"
#include "metrics.h"
#include "proctitle.h"
#include "util.h"
#include "worker.h"

/* A worker that dies this soon after it started counts as failing to
 * start: its replacement waits, longer each time. */
#define QUICK_DEATH_MS 1000
/* A worker that runs this long proves the position healthy again. */
#define STABLE_MS 10000
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 30000

unsigned
pool_backoff_ms(unsigned quick_deaths)
{
	uint64_t ms = BACKOFF_FIRST_MS;

	for (unsigned i = 1; i < quick_deaths && ms < BACKOFF_MAX_MS; i++)
		ms *= 2;
	return ms > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : (unsigned)ms;
}

int
pool_new(const struct config *config, unsigned generation, unsigned n, enum intake_kind intake,
	 struct pool **ret)
{
	struct pool *p = calloc(1, sizeof(*p));
	int r;

	if (!p)
		return -ENOMEM;
	config_init(&p->config);
	r = config_copy(&p->config, config);
	p->positions = calloc(n ? n : 1, sizeof(*p->positions));
	p->skip = calloc(n ? n : 1, sizeof(*p->skip));
	if (r < 0 || !p->positions || !p->skip) {
		pool_free(NULL, p);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < n; i++)
		p->positions[i].channel = -1;
	p->n = n;
	p->generation = generation;
	p->intake = intake;
	*ret = p;
	return 0;
}

static void
close_channel(const struct pool_env *env, struct position *pos)
{
	if (pos->channel < 0)
		return;
	if (env)
		epoll_ctl(env->epoll_fd, EPOLL_CTL_DEL, pos->channel, NULL);
	close(pos->channel);
	pos->channel = -1;
}

static void
add_queue(struct fd_closer *fc, const struct outbox *out)
{
	for (unsigned k = 0; k < out->n; k++)
		fd_closer_add(fc, out->fds[k]);
}

/* Closes the supervisor's copies of the connections queued in out. */
static void
close_queue(struct outbox *out)
{
	struct fd_closer fc = {0};

	add_queue(&fc, out);
	fd_closer_close(&fc);
	out->n = 0;
}

void
pool_free(const struct pool_env *env, struct pool *p)
{
	if (!p)
		return;
	for (unsigned i = 0; p->positions && i < p->n; i++) {
		close_queue(&p->positions[i].out);
		close_channel(env, &p->positions[i]);
	}
	free(p->positions);
	free(p->skip);
	config_done(&p->config);
	free(p);
}

static void
close_waiting(const struct pool_env *env, int keep_fd, int keep_owed_fd, struct fd_closer *fc)
{
	const struct restart_queue *q = env->waiting;

	if (env->held_fd && *env->held_fd != keep_fd)
		fd_closer_add(fc, *env->held_fd);
	for (size_t i = q ? q->next : 0; q && i < q->n; i++) {
		const struct kept_conn *item = &q->items[i];

		if (item->fd != keep_fd)
			fd_closer_add(fc, item->fd);
		if (item->owed_fd != keep_owed_fd)
			fd_closer_add(fc, item->owed_fd);
	}
	/* Owed bytes whose connection has not come back yet. */
	for (size_t i = 0; q && i < q->n_pending; i++)
		fd_closer_add(fc, q->pending[i].fd);
}

void
pool_env_enter_child(const struct pool_env *env, pid_t parent, int keep_fd, int keep_owed_fd,
		     struct fd_closer *also)
{
	worker_enter_signals(&env->signals);
	fd_closer_add(also, env->epoll_fd);
	fd_closer_add(also, env->signal_fd);
	/* Workers' channels: holding them would keep those workers' hang-ups
	 * from being seen. (A worker's own end is not among these.) */
	for (struct pool *q = env->pools; q; q = q->next)
		for (unsigned i = 0; i < q->n; i++) {
			fd_closer_add(also, q->positions[i].channel);
			/* Connections waiting for a channel with room, like the
			 * held one (close_waiting()). */
			add_queue(also, &q->positions[i].out);
		}
	fd_closer_add(also, env->returns[FDPASS_SUPERVISOR]);
	if (env->forker_channel)
		fd_closer_add(also, *env->forker_channel);
	if (env->forker_exe)
		fd_closer_add(also, *env->forker_exe);
	/* What the scoreboard's and the per-source table's mappings are of:
	 * the mappings come with the fork, and only the forker, exec'd, needs
	 * the fds. */
	fd_closer_add(also, env->scoreboard->fd);
	fd_closer_add(also, env->scoreboard->sources_fd);
	close_waiting(env, keep_fd, keep_owed_fd, also);
	fd_closer_close(also);
	metrics_close_in_child(env->metrics);
	/* If the supervisor dies, its children drain instead of serving on
	 * unsupervised. */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != parent)
		_exit(EXIT_SUCCESS);
}

static _Noreturn void
worker_child(const struct pool_env *env, struct pool *p, unsigned index, pid_t parent,
	     int channel)
{
	struct fd_closer drop = {0};
	char context[32];

	/* A worker gives back over its own channel. */
	fd_closer_add(&drop, env->returns[FDPASS_WORKER]);
	pool_env_enter_child(env, parent, -1, -1, &drop);
	snprintf(context, sizeof(context), "worker %u", index);
	log_set_context(context);
	proctitle_set("echod worker", "echod: %s", context);

	struct worker_setup setup = {
	    .config = &p->config,
	    .scoreboard = env->scoreboard,
	    .slot = p->positions[index].slot,
	    .sockets = env->sockets,
	    .intake = p->intake,
	    .datagrams = true,
	    .channel = channel,
	    .returns = -1,
	    .release_reservations = true,
	    .signals_entered = true,
	};
	_exit(worker_run(&setup));
}

int
pool_spawn(const struct pool_env *env, struct pool *p, unsigned index, uint64_t now)
{
	struct position *pos = &p->positions[index];
	pid_t parent = getpid(), pid;
	int slot, channel[2] = {-1, -1};

	slot = scoreboard_find_free(env->scoreboard);
	if (slot < 0)
		return log_error_errno(slot, "worker %u: no free scoreboard slot", index);
	/* Every worker that takes connections gets a channel: prefork's too,
	 * for the connections kept across a restart or reload. */
	if (p->intake != INTAKE_NONE) {
		int r = fdpass_channel_new(channel);
		if (r < 0)
			return log_error_errno(r, "worker %u: creating its channel: %m", index);
	}
	scoreboard_slot_reset(env->scoreboard, (unsigned)slot);
	scoreboard_slot_start(env->scoreboard, (unsigned)slot, p->generation);
	SB_SET(env->scoreboard->slots[slot].state, SLOT_STARTING);
	pos->slot = slot;

	pid = fork();
	if (pid < 0) {
		int r = negative_errno();
		SB_SET(env->scoreboard->slots[slot].state, SLOT_EMPTY);
		if (channel[0] >= 0) {
			close(channel[FDPASS_SUPERVISOR]);
			close(channel[FDPASS_WORKER]);
		}
		return log_error_errno(r, "worker %u: fork: %m", index);
	}
	if (pid == 0) {
		if (channel[0] >= 0)
			close(channel[FDPASS_SUPERVISOR]);
		worker_child(env, p, index, parent, channel[FDPASS_WORKER]);
	}

	env->scoreboard->slots[slot].pid = pid;
	*pos = (struct position){
		.pid = pid,
		.slot = slot,
		.started_ms = now,
		.quick_deaths = pos->quick_deaths,
		.channel = -1,
	};
	if (channel[0] >= 0) {
		/* No events asked for: a hang-up is reported regardless. */
		struct epoll_event ev = {.events = 0,
					 .data.u64 = env->channel_event |
						     (uint32_t)channel[FDPASS_SUPERVISOR]};
		close(channel[FDPASS_WORKER]);
		pos->channel = channel[FDPASS_SUPERVISOR];
		if (epoll_ctl(env->epoll_fd, EPOLL_CTL_ADD, pos->channel, &ev) < 0)
			log_warning_errno(errno, "worker %u: watching its channel: %m", index);
	}
	log_debug("worker %u: started as pid %d (generation %u)", index, (int)pid, p->generation);
	return 0;
}

int
pool_start(const struct pool_env *env, struct pool *p, uint64_t now)
{
	for (unsigned i = 0; i < p->n; i++) {
		int r = pool_spawn(env, p, i, now);
		if (r < 0)
			return r;
	}
	return 0;
}

int
pool_find(const struct pool *p, pid_t pid)
{
	for (unsigned i = 0; i < p->n; i++)
		if (p->positions[i].pid == pid)
			return (int)i;
	return -1;
}

void
describe_exit_status(int status, char *buf, size_t size)
{
	if (WIFEXITED(status))
		snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, size, "killed by signal %s%s", sigabbrev_np(WTERMSIG(status)) ?: "?",
			 WCOREDUMP(status) ? " (core dumped)" : "");
	else
		snprintf(buf, size, "ended (status 0x%x)", status);
}

/* Connections sent to the worker that it has not yet taken. */
static uint64_t
in_flight(const struct pool_env *env, const struct position *pos)
{
	return ledger_in_flight(env->scoreboard, (unsigned)pos->slot, pos->sent);
}

/* A dead worker's reserved connections are gone with it (those in flight
 * on its channel too: the kernel closed them). */
static void
release_position(const struct pool_env *env, struct position *pos)
{
	/* Those queued for it are counted in sent, and go with the rest. */
	close_queue(&pos->out);
	ledger_settle(env->scoreboard, (unsigned)pos->slot, pos->sent);
	/* A prefork worker standing by behind this one takes over now. */
	scoreboard_ring(env->scoreboard);
	close_channel(env, pos);
	pos->sent = 0;
	pos->hung_up = false;
	pos->pid = 0;
}

/* A worker that got its loop running and was then killed from outside (by
 * an operator, the OOM killer, a chaos test) proved that it starts: a
 * back-off would only leave its position empty while the killing goes on.
 * One that failed before its loop ran, or crashed or exited on its own,
 * is the fork loop the back-off is for. */
static bool
killed_after_start(int status, bool reached_running)
{
	return reached_running && WIFSIGNALED(status) &&
	       (WTERMSIG(status) == SIGKILL || WTERMSIG(status) == SIGTERM);
}

static void adopt_queued(const struct pool_env *env, struct pool *to, struct pool *from);

void
pool_worker_exited(const struct pool_env *env, struct pool *p, unsigned index, int status,
		   uint64_t now, bool stopping)
{
	struct position *pos = &p->positions[index];
	uint64_t lived = now - pos->started_ms;
	bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	bool started = killed_after_start(
		status, SB_GET(env->scoreboard->slots[pos->slot].state) >= SLOT_RUNNING);
	pid_t pid = pos->pid;
	char how[64];

	describe_exit_status(status, how, sizeof(how));
	/* What was queued for a retiring worker would be closed with its
	 * position: a last chance to go to the current generation (see
	 * pool_adopt_retired_queues()). */
	if (p->retiring && !stopping && env->pools && env->pools != p && pos->out.n > 0)
		adopt_queued(env, env->pools, p);
	release_position(env, pos);
	if (stopping || p->retiring) {
		log_full_errno(clean ? LOG_DEBUG : LOG_WARNING, 0, "worker %u (generation %u): %s",
			       index, p->generation, how);
		return;
	}
	log_struct(LOG_WARNING, ECHOD_MESSAGE_WORKER_CRASHED, "worker %u (pid %d): %s after %llu ms",
		   index, (int)pid, how, (unsigned long long)lived);
	if (lived >= STABLE_MS || started)
		pos->quick_deaths = 0;
	if (lived < QUICK_DEATH_MS && !started) {
		unsigned delay = pool_backoff_ms(++pos->quick_deaths);
		pos->respawn_at_ms = now + delay;
		log_notice("worker %u: died %u time(s) in a row within %d ms of starting; "
			   "restarting it in %u ms",
			   index, pos->quick_deaths, QUICK_DEATH_MS, delay);
	} else {
		pos->respawn_at_ms = now;
	}
}

void
pool_respawn_due(const struct pool_env *env, struct pool *p, uint64_t now)
{
	for (unsigned i = 0; i < p->n; i++) {
		struct position *pos = &p->positions[i];
		if (pos->pid != 0 || pos->respawn_at_ms == 0 || now < pos->respawn_at_ms)
			continue;
		pos->respawn_at_ms = 0;
		if (pool_spawn(env, p, i, now) < 0)
			pos->respawn_at_ms = now + pool_backoff_ms(++pos->quick_deaths);
		else if (pos->quick_deaths)
			log_info("worker %u: restarted", i);
	}
}

uint64_t
pool_next_respawn(const struct pool *p)
{
	uint64_t next = 0;

	for (unsigned i = 0; i < p->n; i++) {
		uint64_t at = p->positions[i].respawn_at_ms;
		if (at && (next == 0 || at < next))
			next = at;
	}
	return next;
}

void
pool_cancel_respawns(struct pool *p)
{
	for (unsigned i = 0; i < p->n; i++)
		p->positions[i].respawn_at_ms = 0;
}

unsigned
pool_alive(const struct pool *p)
{
	unsigned n = 0;

	for (unsigned i = 0; i < p->n; i++)
		n += p->positions[i].pid != 0;
	return n;
}

bool
pool_all_running(const struct pool_env *env, const struct pool *p)
{
	for (unsigned i = 0; i < p->n; i++) {
		const struct position *pos = &p->positions[i];
		if (pos->pid == 0 ||
		    SB_GET(env->scoreboard->slots[pos->slot].state) != SLOT_RUNNING)
			return false;
	}
	return true;
}

void
pool_signal(const struct pool *p, int sig)
{
	for (unsigned i = 0; i < p->n; i++)
		if (p->positions[i].pid)
			kill(p->positions[i].pid, sig);
}

void
pool_retire(const struct pool_env *env, struct pool *p, bool returns)
{
	p->retiring = true;
	pool_cancel_respawns(p);
	for (unsigned i = 0; returns && i < p->n; i++) {
		struct position *pos = &p->positions[i];
		struct epoll_event ev = {.events = EPOLLIN,
					 .data.u64 = env->channel_event | (uint32_t)pos->channel};

		if (pos->channel >= 0 && !pos->hung_up)
			(void)epoll_ctl(env->epoll_fd, EPOLL_CTL_MOD, pos->channel, &ev);
	}
	/* SIGTERM makes a worker drain: it stops taking connections and
	 * finishes its own within ShutdownTimeoutSec=. SIGUSR2 makes it send
	 * them back first, and drain only what it could not. */
	pool_signal(p, returns ? SIGUSR2 : SIGTERM);
}

/* What the worker can hold: WorkerConnections=, or fewer when it said its
 * fd limit leaves room for fewer (a passed fd beyond it would be dropped). */
static uint64_t
worker_capacity(const struct pool_env *env, const struct pool *p, const struct position *pos)
{
	uint32_t fds = SB_GET(env->scoreboard->slots[pos->slot].capacity);
	unsigned wanted = config_worker_connections(&p->config);

	return fds && fds < wanted ? fds : wanted;
}

/* Whether worker i can take one more connection: running, not full, not
 * hung up, not refused this round. Its connections, counting those in
 * flight, go to *ret_load. */
static bool
can_take(const struct pool_env *env, const struct pool *p, unsigned i, const bool *skip,
	 uint64_t *ret_load)
{
	const struct position *pos = &p->positions[i];

	if (pos->pid == 0 || pos->hung_up || pos->channel < 0 || (skip && skip[i]) ||
	    SB_GET(env->scoreboard->slots[pos->slot].state) != SLOT_RUNNING)
		return false;
	*ret_load = SB_GET(env->scoreboard->slots[pos->slot].active) + in_flight(env, pos);
	return *ret_load < worker_capacity(env, p, pos);
}

/* The worker that should take the next connection: of those that can, the
 * one with the fewest. -1 if none can. */
static int
pick_worker(const struct pool_env *env, const struct pool *p, const bool *skip)
{
	uint64_t best_load = UINT64_MAX;
	int best = -1;

	for (unsigned i = 0; i < p->n; i++) {
		uint64_t load;

		if (!can_take(env, p, i, skip, &load) || load >= best_load)
			continue;
		best_load = load;
		best = (int)i;
	}
	return best;
}

/* The worker that takes a new connection alone, if one does: the first,
 * in position order, that says it would (it keeps up, and the connections
 * it closed lately lived short lives: worker-intake.c), while it holds
 * fewer than SHARE_FLOOR and takes what is sent as it comes. Its peers'
 * loops sleep meanwhile: clients that connect, echo and close sent by
 * turns to two workers wake both, each for half as many, and that costs
 * more CPU per connection than one worker taking them all. Held
 * connections spread evenly, as the worker says "shared" then. -1 if none
 * is to take it alone. */
static int
pick_alone(const struct pool_env *env, const struct pool *p, const bool *skip)
{
	for (unsigned i = 0; i < p->n; i++) {
		const struct scoreboard_slot *s;
		uint64_t load;

		if (!can_take(env, p, i, skip, &load))
			continue;
		s = &env->scoreboard->slots[p->positions[i].slot];
		if (__atomic_load_n(&s->watching, __ATOMIC_ACQUIRE) != WATCHING_ALONE)
			continue;
		/* More on its way than a worker keeping up leaves between two
		 * turns: it is stopped or stuck, and not relied on alone. */
		if (load >= SHARE_FLOOR || in_flight(env, &p->positions[i]) >= POOL_ALONE_IN_FLIGHT)
			return -1;
		return (int)i;
	}
	return -1;
}

bool
pool_can_take(const struct pool_env *env, const struct pool *p)
{
	return !p->retiring && pick_worker(env, p, NULL) >= 0;
}

/* The worker that should take the next new connection: one taking them
 * alone, else the least loaded. (Kept connections were held before they
 * were kept: they spread, pool_send_kept().) */
static int
pick_to_send(const struct pool_env *env, const struct pool *p)
{
	int i = pick_alone(env, p, p->skip);

	return i >= 0 ? i : pick_worker(env, p, p->skip);
}

/* Sends pos's queue as one message and, once it went, closes our copies. */
static int
send_queue(struct position *pos)
{
	int r;

	if (pos->hung_up || pos->channel < 0)
		return -EPIPE;
	r = fdpass_send_batch(pos->channel, pos->out.tags, pos->out.fds, pos->out.n);
	if (r == -EPIPE || r == -ECONNRESET)
		pos->hung_up = true; /* SIGCHLD will follow */
	if (r == 0)
		close_queue(&pos->out);
	return r;
}

int
pool_queue(const struct pool_env *env, struct pool *p, int fd, bool proxy)
{
	if (p->retiring)
		return -EAGAIN;
	memset(p->skip, 0, p->n * sizeof(*p->skip));
	for (;;) {
		int i = pick_to_send(env, p);
		struct position *pos;

		if (i < 0)
			return -EAGAIN;
		pos = &p->positions[i];
		/* A full batch goes now; one its channel refuses stays for
		 * pool_flush() to find another worker for. */
		if (pos->out.n == FDPASS_BATCH && send_queue(pos) < 0) {
			p->skip[i] = true;
			continue;
		}
		pos->out.fds[pos->out.n] = fd;
		pos->out.tags[pos->out.n++] = proxy ? FDPASS_PROXY : FDPASS_CONN;
		pos->sent++;
		return 0;
	}
}

/* The first moved connections queued at src went elsewhere: no longer
 * counted as sent to it, and the rest move up, oldest still first. */
static void
unqueue_front(struct position *src, unsigned moved)
{
	struct outbox *out = &src->out;

	src->sent -= moved;
	out->n -= moved;
	memmove(out->fds, out->fds + moved, out->n * sizeof(*out->fds));
	memmove(out->tags, out->tags + moved, out->n * sizeof(*out->tags));
}

/* Moves the connections queued at position from, oldest first, to other
 * workers with room (not in p->skip), while their queues have room. */
static void
requeue(const struct pool_env *env, struct pool *p, unsigned from)
{
	struct position *src = &p->positions[from];
	unsigned moved = 0;

	p->skip[from] = true;
	while (moved < src->out.n) {
		int j = pick_to_send(env, p);
		struct position *dst;

		if (j < 0 || p->positions[j].out.n == FDPASS_BATCH)
			break;
		dst = &p->positions[j];
		dst->out.fds[dst->out.n] = src->out.fds[moved];
		dst->out.tags[dst->out.n++] = src->out.tags[moved];
		dst->sent++;
		moved++;
	}
	unqueue_front(src, moved);
}

/* Closes what pos has queued and gives back what was reserved for it. */
static unsigned
drop_queue(const struct pool_env *env, struct position *pos)
{
	unsigned n = pos->out.n;

	close_queue(&pos->out);
	pos->sent -= n;
	for (unsigned k = 0; k < n; k++)
		ledger_release(env->scoreboard);
	return n;
}

/* The first position, not in p->skip, with connections queued; or -1. */
static int
next_queued(const struct pool *p)
{
	for (unsigned i = 0; i < p->n; i++)
		if (p->positions[i].out.n > 0 && !p->skip[i])
			return (int)i;
	return -1;
}

static bool
any_queued(const struct pool *p)
{
	for (unsigned i = 0; i < p->n; i++)
		if (p->positions[i].out.n > 0)
			return true;
	return false;
}

unsigned
pool_flush(const struct pool_env *env, struct pool *p)
{
	unsigned lost = 0;
	int i;

	memset(p->skip, 0, p->n * sizeof(*p->skip));
	while ((i = next_queued(p)) >= 0) {
		struct position *pos = &p->positions[i];
		int r = send_queue(pos);

		if (r == 0)
			continue;
		if (r == -EAGAIN || r == -EPIPE || r == -ECONNRESET) {
			requeue(env, p, (unsigned)i);
		} else if (r == -ETOOMANYREFS) {
			/* A per-user limit: every channel says the same, so
			 * what is queued waits for the next turn, as
			 * pool_send_kept()'s connection does. */
			break;
		} else {
			log_warning_errno(r, "worker %d: sending %u connection(s): %m; they are closed",
					  i, pos->out.n);
			lost += drop_queue(env, pos);
		}
	}
	p->stalled = any_queued(p);
	return lost;
}

bool
pool_stalled(const struct pool *p)
{
	return p->stalled && any_queued(p);
}

/* Moves what from's queues hold, oldest first, to the workers of to with
 * room: counted as sent to them instead, so that each reservation follows
 * its connection. Stops at the first one to cannot take. */
static void
adopt_queued(const struct pool_env *env, struct pool *to, struct pool *from)
{
	for (unsigned i = 0; i < from->n; i++) {
		const struct outbox *out = &from->positions[i].out;
		unsigned moved = 0;

		while (moved < out->n &&
		       pool_queue(env, to, out->fds[moved], out->tags[moved] == FDPASS_PROXY) == 0)
			moved++;
		unqueue_front(&from->positions[i], moved);
		if (out->n > 0)
			break;
	}
}

void
pool_adopt_retired_queues(const struct pool_env *env, struct pool *p)
{
	for (struct pool *old = p->next; old; old = old->next)
		if (old->retiring && any_queued(old))
			adopt_queued(env, p, old);
}

unsigned
pool_drop_queued(const struct pool_env *env, struct pool *p)
{
	unsigned lost = 0;

	for (unsigned i = 0; i < p->n; i++)
		lost += drop_queue(env, &p->positions[i]);
	p->stalled = false;
	return lost;
}

int
pool_send_kept(const struct pool_env *env, struct pool *p, int fd, int owed_fd)
{
	int i, r = -EAGAIN;

	memset(p->skip, 0, p->n * sizeof(*p->skip));
	while ((i = pick_worker(env, p, p->skip)) >= 0) {
		struct position *pos = &p->positions[i];

		r = kept_send(pos->channel, fd, owed_fd);
		if (r == 0) {
			pos->sent++;
			return 0;
		}
		p->skip[i] = true;
		if (r == -EPIPE || r == -ECONNRESET)
			pos->hung_up = true; /* SIGCHLD will follow */
		else if (r == -ETOOMANYREFS)
			break; /* a per-user limit: every channel says the same */
		else if (r != -EAGAIN)
			log_warning_errno(r, "worker %d: sending a kept connection: %m", i);
	}
	return r;
}

int
pool_channel_of(const struct pool *p, unsigned index)
{
	return p->positions[index].channel;
}

bool
pool_is_channel(const struct pool *pools, int fd)
{
	for (const struct pool *p = pools; p; p = p->next)
		for (unsigned i = 0; i < p->n; i++)
			if (p->positions[i].channel == fd)
				return true;
	return false;
}

void
pool_channel_hung_up(const struct pool_env *env, struct pool *pools, int fd)
{
	for (struct pool *p = pools; p; p = p->next)
		for (unsigned i = 0; i < p->n; i++)
			if (p->positions[i].channel == fd) {
				p->positions[i].hung_up = true;
				/* A hang-up is reported until the fd is closed. */
				epoll_ctl(env->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
				return;
			}
}
