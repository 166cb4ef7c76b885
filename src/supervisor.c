#include "supervisor.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>

#include "accept.h"
#include "fdpass.h"
#include "log.h"
#include "scoreboard.h"
#include "util.h"
#include "worker.h"

/* A worker that dies this soon after it started counts as failing to
 * start: its replacement waits, longer each time. */
#define QUICK_DEATH_MS 1000
/* A worker that runs this long proves the pool healthy again. */
#define STABLE_MS 10000
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 30000
/* Granted beyond ShutdownTimeoutSec= for workers to close what they hold. */
#define KILL_GRACE_MS 2000
#define READY_POLL_MS 10
/* How often a supervisor with nowhere to put a connection looks again. */
#define CAPACITY_RETRY_MS 20
#define ACCEPT_BATCH 64

/* What an epoll registration of the supervisor is: the type in the high
 * half of data.u64, an index (listener, position) in the low half. */
enum {
	EVENT_SIGNAL = 1,
	EVENT_LISTENER,
	EVENT_CHANNEL,
};
#define EVENT(type, index) (((uint64_t)(type) << 32) | (uint32_t)(index))

/* One place in the pool ("worker 0" .. "worker N-1"): the process that
 * fills it now and how often processes in it failed to start. */
struct position {
	pid_t pid; /* 0 while empty */
	int slot;
	uint64_t started_ms;
	unsigned quick_deaths;
	uint64_t respawn_at_ms; /* 0: no respawn pending */
	/* passfd: our end of the worker's channel, and connections sent on it
	 * (compared with what the worker counts as taken or lost, this gives
	 * those still in flight). */
	int channel;
	uint64_t sent;
	bool hung_up; /* the worker's end closed: send nothing more */
};

struct supervisor {
	const struct config *config;
	struct listen_set *sockets;
	struct scoreboard scoreboard;
	int epoll_fd;
	int signal_fd;
	unsigned n_positions;
	struct position *positions;
	bool ready;
	bool stopping;
	uint64_t kill_at_ms;
	bool killed;
	/* passfd and fork: the supervisor accepts. */
	bool accepts;
	bool accepting;		/* listeners are in the epoll set */
	uint64_t accept_resume_ms; /* after an fd shortage, 0 if none */
	uint64_t lost;		/* accepted but could not be handed to anyone */
	/* fork: the live children, one per connection. */
	pid_t *children;
	unsigned n_children;
	unsigned max_children;
	int fork_slot; /* the scoreboard slot the children count into */
	bool *skip;    /* hand_off()'s scratch: workers that refused */
};

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static unsigned
backoff_ms(unsigned quick_deaths)
{
	uint64_t ms = BACKOFF_FIRST_MS;

	for (unsigned i = 1; i < quick_deaths && ms < BACKOFF_MAX_MS; i++)
		ms *= 2;
	return ms > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : (unsigned)ms;
}

/* In the child, right after fork(): nothing of the supervisor's event loop
 * may stay open, and the worker must not outlive the supervisor. */
static _Noreturn void
worker_child(struct supervisor *s, unsigned index, int slot, pid_t parent, int channel)
{
	char context[32];

	worker_reset_signals();
	close(s->epoll_fd);
	close(s->signal_fd);
	/* Other workers' channels: holding them would keep those workers'
	 * hang-ups from being seen. */
	for (unsigned i = 0; i < s->n_positions; i++)
		if (i != index && s->positions[i].channel >= 0)
			close(s->positions[i].channel);
	/* If the supervisor dies, the workers drain instead of serving on
	 * unsupervised. */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != parent)
		_exit(EXIT_SUCCESS);
	snprintf(context, sizeof(context), "worker %u", index);
	log_set_context(context);

	/* Test hook: lets the integration tests watch the respawn back-off. */
	if (getenv("ECHOD_TEST_WORKER_FAIL")) {
		log_error("ECHOD_TEST_WORKER_FAIL is set: failing at start-up");
		_exit(EXIT_FAILURE);
	}

	struct worker_setup setup = {
		.config = s->config,
		.scoreboard = &s->scoreboard,
		.slot = slot,
		.sockets = s->sockets,
		.accept = s->config->model == MODEL_PREFORK,
		.datagrams = true,
		.channel = channel,
		.connection = -1,
		.release_reservations = true,
	};
	exit(worker_run(&setup));
}

static int
spawn_worker(struct supervisor *s, unsigned index)
{
	struct position *p = &s->positions[index];
	pid_t parent = getpid(), pid;
	int slot, channel[2] = {-1, -1};

	slot = scoreboard_find_free(&s->scoreboard);
	if (slot < 0)
		return log_error_errno(slot, "worker %u: no free scoreboard slot", index);
	if (s->config->model == MODEL_PASSFD) {
		int r = fdpass_channel_new(channel);
		if (r < 0)
			return log_error_errno(r, "worker %u: creating its channel: %m", index);
	}
	scoreboard_slot_reset(&s->scoreboard, (unsigned)slot);
	SB_SET(s->scoreboard.slots[slot].state, SLOT_STARTING);

	pid = fork();
	if (pid < 0) {
		int r = negative_errno();
		SB_SET(s->scoreboard.slots[slot].state, SLOT_EMPTY);
		if (channel[0] >= 0) {
			close(channel[FDPASS_SUPERVISOR]);
			close(channel[FDPASS_WORKER]);
		}
		return log_error_errno(r, "worker %u: fork: %m", index);
	}
	if (pid == 0) {
		if (channel[0] >= 0)
			close(channel[FDPASS_SUPERVISOR]);
		worker_child(s, index, slot, parent, channel[FDPASS_WORKER]);
	}

	s->scoreboard.slots[slot].pid = pid;
	*p = (struct position){
		.pid = pid,
		.slot = slot,
		.started_ms = now_ms(),
		.quick_deaths = p->quick_deaths,
		.channel = -1,
	};
	if (channel[0] >= 0) {
		/* No events asked for: a hang-up is reported regardless. */
		struct epoll_event ev = {.events = 0, .data.u64 = EVENT(EVENT_CHANNEL, index)};
		close(channel[FDPASS_WORKER]);
		p->channel = channel[FDPASS_SUPERVISOR];
		if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, p->channel, &ev) < 0)
			log_warning_errno(errno, "worker %u: watching its channel: %m", index);
	}
	log_debug("worker %u: started as pid %d", index, (int)pid);
	return 0;
}

static int
position_of(const struct supervisor *s, pid_t pid)
{
	for (unsigned i = 0; i < s->n_positions; i++)
		if (s->positions[i].pid == pid)
			return (int)i;
	return -1;
}

static void
describe_status(int status, char *buf, size_t size)
{
	if (WIFEXITED(status))
		snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, size, "killed by signal %s%s", sigabbrev_np(WTERMSIG(status)) ?: "?",
			 WCOREDUMP(status) ? " (core dumped)" : "");
	else
		snprintf(buf, size, "ended (status 0x%x)", status);
}

/* passfd: connections sent to the worker that it has not yet taken. */
static uint64_t
in_flight(const struct supervisor *s, const struct position *p)
{
	const struct scoreboard_slot *sl = &s->scoreboard.slots[p->slot];
	uint64_t taken = SB_GET(sl->served) + SB_GET(sl->lost);

	return p->sent > taken ? p->sent - taken : 0;
}

/* A dead worker's reserved connections are gone with it (those in flight
 * on its channel too: the kernel closed them): give them back to
 * MaxConnections=, then free its slot. */
static void
release_position(struct supervisor *s, struct position *p)
{
	struct scoreboard_slot *sl = &s->scoreboard.slots[p->slot];
	uint64_t gone = SB_GET(sl->active) + in_flight(s, p);

	if (gone)
		SB_SUB(s->scoreboard.header->active_total, (uint32_t)gone);
	scoreboard_slot_reset(&s->scoreboard, (unsigned)p->slot);
	if (p->channel >= 0) {
		epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, p->channel, NULL);
		close(p->channel);
	}
	p->channel = -1;
	p->sent = 0;
	p->hung_up = false;
}

static void
worker_exited(struct supervisor *s, unsigned index, int status, uint64_t now)
{
	struct position *p = &s->positions[index];
	uint64_t lived = now - p->started_ms;
	char how[64];
	bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;

	pid_t pid = p->pid;

	describe_status(status, how, sizeof(how));
	release_position(s, p);
	p->pid = 0;
	if (s->stopping) {
		log_full_errno(clean ? LOG_DEBUG : LOG_WARNING, 0, "worker %u: %s", index, how);
		return;
	}
	log_struct(LOG_WARNING, ECHOD_MESSAGE_WORKER_CRASHED, "worker %u (pid %d): %s after %llu ms",
		   index, (int)pid, how, (unsigned long long)lived);
	if (lived >= STABLE_MS)
		p->quick_deaths = 0;
	if (lived < QUICK_DEATH_MS) {
		unsigned delay = backoff_ms(++p->quick_deaths);
		p->respawn_at_ms = now + delay;
		log_notice("worker %u: died %u time(s) in a row within %d ms of starting; "
			   "restarting it in %u ms",
			   index, p->quick_deaths, QUICK_DEATH_MS, delay);
	} else {
		p->respawn_at_ms = now;
	}
}

/* --- fork: one child per connection --- */

static void
child_exited(struct supervisor *s, pid_t pid, int status)
{
	for (unsigned i = 0; i < s->n_children; i++) {
		if (s->children[i] != pid)
			continue;
		s->children[i] = s->children[--s->n_children];
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			char how[64];
			describe_status(status, how, sizeof(how));
			log_warning("connection process %d: %s", (int)pid, how);
			/* It could not count its connection closed. */
			if (WIFSIGNALED(status))
				SB_SUB(s->scoreboard.slots[s->fork_slot].active, 1);
		}
		return;
	}
}

/* Takes fd: the child serves it, the parent closes its copy at once. */
static void
fork_connection(struct supervisor *s, int fd)
{
	pid_t parent = getpid();
	pid_t pid = fork();

	if (pid < 0) {
		log_warning_errno(errno, "fork for a new connection: %m; closing it");
		close(fd);
		s->lost++;
		s->accept_resume_ms = now_ms() + ACCEPT_PAUSE_MS;
		return;
	}
	if (pid == 0) {
		worker_reset_signals();
		close(s->epoll_fd);
		close(s->signal_fd);
		/* The child serves one connection: no listener of ours may stay
		 * open in it (a client could otherwise be queued to a socket
		 * nobody accepts from after the supervisor exits). */
		for (size_t i = 0; i < s->sockets->n; i++)
			if (s->sockets->items[i].kind == SOCKET_LISTENING)
				close(s->sockets->items[i].fd);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(EXIT_SUCCESS);
		log_set_context("connection");
		struct worker_setup setup = {
			.config = s->config,
			.scoreboard = &s->scoreboard,
			.slot = s->fork_slot,
			.channel = -1,
			.connection = fd,
		};
		_exit(worker_run(&setup));
	}
	close(fd);
	s->children[s->n_children++] = pid;
}

/* --- passfd: hand each connection to the least-loaded worker --- */

/* The worker that should take the next connection: running, not full, not
 * hung up, not refused this round (skip), fewest connections counting
 * those in flight. -1 if none can. */
static int
pick_worker(const struct supervisor *s, const bool *skip)
{
	uint64_t best_load = UINT64_MAX;
	int best = -1;

	for (unsigned i = 0; i < s->n_positions; i++) {
		const struct position *p = &s->positions[i];
		uint64_t load;

		if (p->pid == 0 || p->hung_up || p->channel < 0 || (skip && skip[i]) ||
		    SB_GET(s->scoreboard.slots[p->slot].state) != SLOT_RUNNING)
			continue;
		load = SB_GET(s->scoreboard.slots[p->slot].active) + in_flight(s, p);
		if (load >= s->config->worker_connections || load >= best_load)
			continue;
		best_load = load;
		best = (int)i;
	}
	return best;
}

/* Takes fd: handed to a worker or closed. The connection is reserved in
 * the scoreboard; the worker releases it when the connection closes. */
static void
hand_off(struct supervisor *s, int fd)
{
	bool *skip = s->skip;
	int i, r = -EAGAIN;

	memset(skip, 0, s->n_positions * sizeof(*skip));
	while ((i = pick_worker(s, skip)) >= 0) {
		struct position *p = &s->positions[i];

		r = fdpass_send(p->channel, fd);
		if (r == 0) {
			p->sent++;
			close(fd);
			return;
		}
		skip[i] = true;
		if (r == -EPIPE || r == -ECONNRESET)
			p->hung_up = true; /* SIGCHLD will follow */
		else if (r == -ETOOMANYREFS)
			break; /* a per-user limit: every channel says the same */
		else if (r != -EAGAIN)
			log_warning_errno(r, "worker %d: handing off a connection: %m", i);
	}
	if (r == -ETOOMANYREFS || r == -EAGAIN)
		s->accept_resume_ms = now_ms() + CAPACITY_RETRY_MS;
	log_warning_errno(r, "no worker could take a connection (%m): closing it");
	close(fd);
	scoreboard_release(&s->scoreboard);
	s->lost++;
}

/* --- the supervisor's own accepting (passfd and fork) --- */

static bool
has_capacity(const struct supervisor *s)
{
	if (s->config->model == MODEL_FORK)
		return s->n_children < s->max_children;
	return pick_worker(s, NULL) >= 0 &&
	       SB_GET(s->scoreboard.header->active_total) <
		       SB_GET(s->scoreboard.header->max_connections);
}

static void
listeners_poll(struct supervisor *s, bool on)
{
	for (size_t i = 0; i < s->sockets->n; i++) {
		if (s->sockets->items[i].kind != SOCKET_LISTENING)
			continue;
		if (on) {
			struct epoll_event ev = {.events = EPOLLIN,
						 .data.u64 = EVENT(EVENT_LISTENER, i)};
			if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->sockets->items[i].fd, &ev) < 0)
				log_warning_errno(errno, "watching %s: %m",
						  s->sockets->items[i].name);
		} else {
			epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, s->sockets->items[i].fd, NULL);
		}
	}
	s->accepting = on;
}

/* Accepting stops while nobody could take a connection: newcomers wait in
 * the kernel's backlog (back-pressure), never accepted and dropped. */
static void
intake_update(struct supervisor *s, uint64_t now)
{
	bool want;

	if (!s->accepts)
		return;
	if (s->accept_resume_ms && now >= s->accept_resume_ms)
		s->accept_resume_ms = 0;
	want = !s->stopping && s->accept_resume_ms == 0 && has_capacity(s);
	if (want != s->accepting)
		listeners_poll(s, want);
}

static void
accept_connections(struct supervisor *s, const struct listener *l)
{
	int one = 1;

	for (int i = 0; i < ACCEPT_BATCH && has_capacity(s); i++) {
		bool reserved = false;
		int fd;

		if (s->config->model == MODEL_PASSFD) {
			if (!scoreboard_reserve(&s->scoreboard))
				return;
			reserved = true;
		}
		fd = accept_next(l->fd);
		if (fd < 0) {
			if (reserved)
				scoreboard_release(&s->scoreboard);
			if (accept_should_pause(fd)) {
				log_warning_errno(fd, "accepting on %s: %m; pausing for %d ms",
						  l->name, ACCEPT_PAUSE_MS);
				s->accept_resume_ms = now_ms() + ACCEPT_PAUSE_MS;
			}
			return;
		}
		if (l->is_tcp)
			(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (s->config->model == MODEL_PASSFD)
			hand_off(s, fd);
		else
			fork_connection(s, fd);
	}
}

static void
reap(struct supervisor *s, uint64_t now)
{
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);
		int index;

		if (pid <= 0)
			return;
		index = position_of(s, pid);
		if (index >= 0)
			worker_exited(s, (unsigned)index, status, now);
		else
			child_exited(s, pid, status);
	}
}

static void
respawn_due(struct supervisor *s, uint64_t now)
{
	for (unsigned i = 0; i < s->n_positions; i++) {
		struct position *p = &s->positions[i];
		if (p->pid != 0 || p->respawn_at_ms == 0 || now < p->respawn_at_ms)
			continue;
		p->respawn_at_ms = 0;
		if (spawn_worker(s, i) < 0)
			p->respawn_at_ms = now + backoff_ms(++p->quick_deaths);
		else if (p->quick_deaths)
			log_info("worker %u: restarted", i);
	}
}

/* Workers and connection processes: what a stop waits for. */
static unsigned
workers_alive(const struct supervisor *s)
{
	unsigned n = s->n_children;

	for (unsigned i = 0; i < s->n_positions; i++)
		n += s->positions[i].pid != 0;
	return n;
}

static bool
all_workers_running(const struct supervisor *s)
{
	for (unsigned i = 0; i < s->n_positions; i++) {
		const struct position *p = &s->positions[i];
		if (p->pid == 0 || SB_GET(s->scoreboard.slots[p->slot].state) != SLOT_RUNNING)
			return false;
	}
	return true;
}

static void
signal_workers(struct supervisor *s, int sig)
{
	for (unsigned i = 0; i < s->n_positions; i++)
		if (s->positions[i].pid)
			kill(s->positions[i].pid, sig);
	for (unsigned i = 0; i < s->n_children; i++)
		kill(s->children[i], sig);
}

static void
begin_stop(struct supervisor *s, const char *signame, uint64_t now)
{
	if (s->stopping)
		return;
	s->stopping = true;
	s->kill_at_ms = now + (uint64_t)s->config->shutdown_timeout_sec * 1000 + KILL_GRACE_MS;
	log_info("SIG%s: stopping; open connections get up to %u s to finish", signame,
		 s->config->shutdown_timeout_sec);
	for (unsigned i = 0; i < s->n_positions; i++)
		s->positions[i].respawn_at_ms = 0;
	if (s->accepting)
		listeners_poll(s, false);
	signal_workers(s, SIGTERM);
}

static void
handle_signals(struct supervisor *s, uint64_t now)
{
	struct signalfd_siginfo si;

	while (read(s->signal_fd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			reap(s, now);
			break;
		case SIGTERM:
		case SIGINT:
			begin_stop(s, sigabbrev_np((int)si.ssi_signo), now);
			break;
		case SIGHUP:
			log_notice("SIGHUP: reloading is not supported yet; ignored");
			break;
		}
	}
}

static int
next_timeout(const struct supervisor *s, uint64_t now)
{
	uint64_t deadline = now + 1000;

	if (!s->ready && !s->stopping)
		deadline = now + READY_POLL_MS;
	for (unsigned i = 0; i < s->n_positions; i++) {
		uint64_t at = s->positions[i].respawn_at_ms;
		if (at && at < deadline)
			deadline = at;
	}
	if (s->stopping && !s->killed && s->kill_at_ms < deadline)
		deadline = s->kill_at_ms;
	if (s->accepts && !s->accepting && !s->stopping && now + CAPACITY_RETRY_MS < deadline)
		deadline = now + CAPACITY_RETRY_MS;
	return deadline > now ? (int)(deadline - now) : 0;
}

static void
dispatch(struct supervisor *s, uint64_t event)
{
	uint32_t index = (uint32_t)event;

	switch (event >> 32) {
	case EVENT_SIGNAL:
		handle_signals(s, now_ms());
		break;
	case EVENT_LISTENER:
		accept_connections(s, &s->sockets->items[index]);
		break;
	case EVENT_CHANNEL:
		/* The worker's end closed: it is dying. Send it nothing more,
		 * and stop watching (a hang-up is reported until closed). */
		s->positions[index].hung_up = true;
		epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, s->positions[index].channel, NULL);
		break;
	}
}

static int
supervisor_loop(struct supervisor *s)
{
	for (;;) {
		uint64_t now = now_ms();
		struct epoll_event ev[8];
		int n;

		if (s->stopping && workers_alive(s) == 0)
			return EXIT_SUCCESS;
		if (s->stopping && !s->killed && now >= s->kill_at_ms) {
			log_warning("workers still running past the shutdown timeout: killing them");
			signal_workers(s, SIGKILL);
			s->killed = true;
		}
		if (!s->stopping)
			respawn_due(s, now);
		if (!s->ready && !s->stopping && all_workers_running(s)) {
			s->ready = true;
			log_struct(LOG_INFO, ECHOD_MESSAGE_STARTED, "%s: %u worker(s) ready",
				   model_to_string(s->config->model), s->n_positions);
		}

		if (s->ready)
			intake_update(s, now);

		n = epoll_wait(s->epoll_fd, ev, ELEMENTSOF(ev), next_timeout(s, now));
		if (n < 0 && errno != EINTR)
			return log_error_errno(errno, "epoll_wait: %m"), EXIT_FAILURE;
		for (int i = 0; i < n; i++)
			dispatch(s, ev[i].data.u64);
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
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return negative_errno();
	signal(SIGPIPE, SIG_IGN);
	s->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (s->signal_fd < 0)
		return negative_errno();
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EVENT(EVENT_SIGNAL, 0)};
	if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->signal_fd, &ev) < 0)
		return negative_errno();
	return 0;
}

static void
supervisor_free(struct supervisor *s)
{
	for (unsigned i = 0; s->positions && i < s->n_positions; i++)
		if (s->positions[i].channel >= 0)
			close(s->positions[i].channel);
	free(s->positions);
	free(s->skip);
	free(s->children);
	scoreboard_free(&s->scoreboard);
	if (s->signal_fd >= 0)
		close(s->signal_fd);
	if (s->epoll_fd >= 0)
		close(s->epoll_fd);
}

/* Start-up failed after some workers were forked: nothing may be left. */
static void
abort_start(struct supervisor *s)
{
	signal_workers(s, SIGKILL);
	while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
		;
}

int
supervisor_run(const struct config *config, struct listen_set *sockets)
{
	struct supervisor s = {
		.config = config,
		.sockets = sockets,
		.epoll_fd = -1,
		.signal_fd = -1,
		.n_positions = config_workers(config),
		.accepts = config->model != MODEL_PREFORK,
		.fork_slot = -1,
	};
	int r, status = EXIT_FAILURE;

	log_set_model(model_to_string(config->model));
	if (config->model == MODEL_FORK) {
		/* Connections get a process each; datagrams need no process
		 * each, so one worker serves them if there are any. */
		s.n_positions = listen_set_count(sockets, SOCKET_DATAGRAM) > 0 ? 1 : 0;
		s.max_children = config_max_connections(config);
		s.children = calloc(s.max_children, sizeof(*s.children));
		if (!s.children) {
			log_error("out of memory");
			goto out;
		}
	}
	s.positions = calloc(s.n_positions ? s.n_positions : 1, sizeof(*s.positions));
	s.skip = calloc(s.n_positions ? s.n_positions : 1, sizeof(*s.skip));
	if (!s.positions || !s.skip) {
		log_error("out of memory");
		goto out;
	}
	for (unsigned i = 0; i < s.n_positions; i++)
		s.positions[i].channel = -1;
	r = scoreboard_new(&s.scoreboard, SCOREBOARD_SLOTS, config_max_connections(config));
	if (r < 0) {
		log_error_errno(r, "creating the scoreboard: %m");
		goto out;
	}
	s.scoreboard.header->workers = config->model == MODEL_PREFORK ? s.n_positions : 0;
	if (config->model == MODEL_FORK) {
		s.fork_slot = scoreboard_find_free(&s.scoreboard);
		scoreboard_slot_reset(&s.scoreboard, (unsigned)s.fork_slot);
		s.scoreboard.slots[s.fork_slot].pid = getpid();
		SB_SET(s.scoreboard.slots[s.fork_slot].state, SLOT_RUNNING);
	}
	s.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (s.epoll_fd < 0) {
		log_error_errno(errno, "epoll_create1: %m");
		goto out;
	}
	r = setup_signals(&s);
	if (r < 0) {
		log_error_errno(r, "setting up signal handling: %m");
		goto out;
	}
	for (unsigned i = 0; i < s.n_positions; i++)
		if (spawn_worker(&s, i) < 0) {
			abort_start(&s);
			goto out;
		}
	if (config->model == MODEL_FORK)
		log_info("fork model: one process per connection, up to %u at once%s",
			 s.max_children, s.n_positions ? ", one worker for datagrams" : "");
	else
		log_info("%s model, %u worker(s), up to %u connection(s) each, %u in all",
			 model_to_string(config->model), s.n_positions,
			 config->worker_connections, config_max_connections(config));
	status = supervisor_loop(&s);
	log_struct(LOG_INFO, ECHOD_MESSAGE_STOPPED, "stopped");
out:
	supervisor_free(&s);
	listen_set_free(sockets, true);
	return status;
}
