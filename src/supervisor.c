#include "supervisor.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>

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

/* One place in the pool ("worker 0" .. "worker N-1"): the process that
 * fills it now and how often processes in it failed to start. */
struct position {
	pid_t pid; /* 0 while empty */
	int slot;
	uint64_t started_ms;
	unsigned quick_deaths;
	uint64_t respawn_at_ms; /* 0: no respawn pending */
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
worker_child(struct supervisor *s, unsigned index, int slot, pid_t parent)
{
	char context[32];

	worker_reset_signals();
	close(s->epoll_fd);
	close(s->signal_fd);
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
		.channel = -1,
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
	int slot;

	slot = scoreboard_find_free(&s->scoreboard);
	if (slot < 0)
		return log_error_errno(slot, "worker %u: no free scoreboard slot", index);
	scoreboard_slot_reset(&s->scoreboard, (unsigned)slot);
	SB_SET(s->scoreboard.slots[slot].state, SLOT_STARTING);

	pid = fork();
	if (pid < 0) {
		int r = negative_errno();
		SB_SET(s->scoreboard.slots[slot].state, SLOT_EMPTY);
		return log_error_errno(r, "worker %u: fork: %m", index);
	}
	if (pid == 0)
		worker_child(s, index, slot, parent);

	s->scoreboard.slots[slot].pid = pid;
	*p = (struct position){
		.pid = pid,
		.slot = slot,
		.started_ms = now_ms(),
		.quick_deaths = p->quick_deaths,
	};
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

/* A dead worker's reserved connections are gone with it: give them back
 * to MaxConnections=, then free its slot. */
static void
release_slot(struct supervisor *s, int slot)
{
	struct scoreboard_slot *sl = &s->scoreboard.slots[slot];
	uint32_t active = SB_GET(sl->active);

	if (active)
		SB_SUB(s->scoreboard.header->active_total, active);
	scoreboard_slot_reset(&s->scoreboard, (unsigned)slot);
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
	release_slot(s, p->slot);
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

static unsigned
workers_alive(const struct supervisor *s)
{
	unsigned n = 0;

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
	return deadline > now ? (int)(deadline - now) : 0;
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

		n = epoll_wait(s->epoll_fd, ev, ELEMENTSOF(ev), next_timeout(s, now));
		if (n < 0 && errno != EINTR)
			return log_error_errno(errno, "epoll_wait: %m"), EXIT_FAILURE;
		for (int i = 0; i < n; i++)
			if (ev[i].data.fd == s->signal_fd)
				handle_signals(s, now_ms());
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
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = s->signal_fd};
	if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->signal_fd, &ev) < 0)
		return negative_errno();
	return 0;
}

static void
supervisor_free(struct supervisor *s)
{
	free(s->positions);
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
	};
	int r, status = EXIT_FAILURE;

	log_set_model(model_to_string(config->model));
	s.positions = calloc(s.n_positions, sizeof(*s.positions));
	if (!s.positions) {
		log_error("out of memory");
		goto out;
	}
	r = scoreboard_new(&s.scoreboard, SCOREBOARD_SLOTS, config_max_connections(config));
	if (r < 0) {
		log_error_errno(r, "creating the scoreboard: %m");
		goto out;
	}
	s.scoreboard.header->workers = config->model == MODEL_PREFORK ? s.n_positions : 0;
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
	log_info("%s model, %u worker(s), up to %u connection(s) each, %u in all",
		 model_to_string(config->model), s.n_positions, config->worker_connections,
		 config_max_connections(config));
	status = supervisor_loop(&s);
	log_struct(LOG_INFO, ECHOD_MESSAGE_STOPPED, "stopped");
out:
	supervisor_free(&s);
	listen_set_free(sockets, true);
	return status;
}
