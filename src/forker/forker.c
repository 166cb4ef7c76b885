/* echod-forker: Model=fork's connection forker. The supervisor accepts and
 * admits each connection and sends it here (fdpass.h); this process forks
 * one connection process for it, which runs the shared worker loop on that
 * one connection, and reports each one's exit back (forkwire.h).
 *
 * Why a process of its own, exec'd from a binary of its own: fork() and
 * exit() cost each connection in proportion to the mappings the forking
 * process has, and the supervisor maps libsystemd, the six libraries it
 * pulls in, and libinih. This process maps no shared library: it is
 * linked statically, libc and inih included (meson's static_forker; a
 * sanitized build links libc dynamically), and lib/libsystemd-subset.c
 * stands in for the few libsystemd calls a connection process makes. On
 * the bench machine the fork references with and without echod's
 * libraries differ by about 80 us per connection (tests/bench:
 * forkref-libs against forkref-split), and this forker linked statically
 * rather than against libc.so by another 30-50 us.
 *
 * It serves whatever the supervisor sends, with the configuration the
 * supervisor sent last (FDPASS_CONFIG), and exits once the supervisor's
 * end is closed and every connection process it forked has exited.
 * Signals for the connection processes (a stop, a restart, a reload) reach
 * them from the supervisor directly: they share this process's group. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "address.h"
#include "admission.h"
#include "config.h"
#include "fdpass.h"
#include "forkwire.h"
#include "kept.h"
#include "log.h"
#include "proctitle.h"
#include "scoreboard.h"
#include "util.h"
#include "worker.h"

#define EXIT_USAGE 2
/* How often connections that fork() refused are tried again, at the
 * latest (each exit of a connection process tries them at once). */
#define RETRY_MS 100
#define CONFIG_ORIGIN "the configuration from the supervisor"

/* A connection fork() refused for now (no process or memory to be had):
 * it waits, as the backlog behind it does, until processes exit. */
struct waiting {
	int fd;
	int owed_fd;
	enum fdpass_tag tag;
};

struct forker {
	int channel;
	int signal_fd;
	pid_t self;
	pid_t supervisor;
	int slot; /* the scoreboard slot every connection process counts into */
	struct worker_signals signals;
	struct scoreboard scoreboard;
	struct config config;
	bool have_config;
	bool supervisor_gone; /* its end is closed: serve out, then exit */
	unsigned alive;	      /* connection processes forked and not yet reaped */
	int owed_fd;	      /* FDPASS_OWED for the kept connection sent next */
	struct waiting *waiting;
	unsigned n_waiting, waiting_capacity;
	unsigned refusals; /* fork() failures since the last one that worked */
	/* Exits reaped and not yet reported: the channel was full. */
	struct forkwire_report report;
	unsigned n_report;
	unsigned gone; /* connections closed without a process, not yet reported */
};

static bool report_exits(struct forker *f);

/* A connection sent here that no process will serve (closed, or lost on
 * the way in): reported as an exit of pid 0 (report_exits()), so that the
 * supervisor's count of connection processes goes down as for one that
 * ran. */
static void
report_gone(struct forker *f)
{
	f->gone++;
}

/* Closes a connection (and what it owed) that will not be served. */
static void
drop(struct forker *f, int fd, int owed_fd)
{
	close(fd);
	if (owed_fd >= 0)
		close(owed_fd);
	report_gone(f);
}

static void
format_title(int fd, char *title, size_t size)
{
	char peer[128];

	address_format_peer(fd, peer, sizeof(peer));
	snprintf(title, size, PROCTITLE_CONNECTION, peer);
}

static _Noreturn void
connection_main(struct forker *f, int fd, enum fdpass_tag tag, int owed_fd, const char *title)
{
	/* Nothing of the forker's stays open in it but its own connection:
	 * held here, the channel would outlive a forker that died, and what
	 * the supervisor sent meanwhile would wait in it instead of failing
	 * over to the supervisor forking itself. */
	close(f->channel);
	close(f->signal_fd);
	if (f->owed_fd >= 0 && f->owed_fd != owed_fd)
		close(f->owed_fd);
	for (unsigned i = 0; i < f->n_waiting; i++) {
		if (f->waiting[i].fd != fd)
			close(f->waiting[i].fd);
		if (f->waiting[i].owed_fd >= 0 && f->waiting[i].owed_fd != owed_fd)
			close(f->waiting[i].owed_fd);
	}
	/* If the forker dies, its connection processes drain rather than
	 * serve on unsupervised, as the supervisor's own children do. */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != f->self)
		_exit(EXIT_SUCCESS);
	worker_enter_signals(&f->signals);
	log_set_context("connection");
	proctitle_set_text("echod conn", title);
	struct worker_setup setup = {
	    .config = &f->config,
	    .scoreboard = &f->scoreboard,
	    .slot = f->slot,
	    .channel = -1,
	    .returns = FORKWIRE_FD_RETURNS,
	    .intake = INTAKE_ONE,
	    .connection = fd,
	    .connection_tuned = true,
	    .connection_proxy = tag == FDPASS_PROXY,
	    .connection_kept = tag == FDPASS_KEPT,
	    .connection_owed_fd = owed_fd,
	    .signals_entered = true,
	};
	_exit(worker_run(&setup));
}

/* 0: forked (fd and owed_fd are the child's now, closed here); else the
 * -errno of fork(), and both are still the caller's. */
static int
fork_connection(struct forker *f, int fd, enum fdpass_tag tag, int owed_fd)
{
	char title[160];
	pid_t pid;

	format_title(fd, title, sizeof(title));
	pid = fork();
	if (pid < 0)
		return negative_errno();
	if (pid == 0)
		connection_main(f, fd, tag, owed_fd, title);
	close(fd);
	if (owed_fd >= 0)
		close(owed_fd);
	f->alive++;
	return 0;
}

static void
wait_for_processes(struct forker *f, int fd, enum fdpass_tag tag, int owed_fd, int error)
{
	if (f->n_waiting == f->waiting_capacity) {
		unsigned capacity = f->waiting_capacity ? 2 * f->waiting_capacity : 16;
		struct waiting *w = realloc(f->waiting, capacity * sizeof(*w));

		if (!w) {
			log_warning("cannot fork for a new connection (%s), nor keep it "
				    "waiting: it is closed",
				    strerror(-error));
			drop(f, fd, owed_fd);
			return;
		}
		f->waiting = w;
		f->waiting_capacity = capacity;
	}
	f->waiting[f->n_waiting++] = (struct waiting){.fd = fd, .owed_fd = owed_fd, .tag = tag};
	if (f->refusals++ == 0)
		log_warning_errno(error,
				  "cannot fork for a new connection: %m; it and those after it wait "
				  "until processes exit");
}

static void
serve(struct forker *f, int fd, enum fdpass_tag tag, int owed_fd)
{
	int r;

	/* In order: nothing overtakes a connection already waiting. */
	r = f->n_waiting ? -EAGAIN : fork_connection(f, fd, tag, owed_fd);
	if (r == -EAGAIN || r == -ENOMEM) {
		wait_for_processes(f, fd, tag, owed_fd, r);
		return;
	}
	if (r < 0) {
		log_warning_errno(r, "forking for a new connection: %m; it is closed");
		drop(f, fd, owed_fd);
	}
}

static void
retry_waiting(struct forker *f)
{
	unsigned done = 0;

	while (done < f->n_waiting) {
		struct waiting *w = &f->waiting[done];
		int r = fork_connection(f, w->fd, w->tag, w->owed_fd);

		if (r == -EAGAIN || r == -ENOMEM)
			break;
		if (r < 0) {
			log_warning_errno(r, "forking for a new connection: %m; it is closed");
			drop(f, w->fd, w->owed_fd);
		}
		done++;
	}
	if (done == 0)
		return;
	memmove(f->waiting, f->waiting + done, (f->n_waiting - done) * sizeof(*f->waiting));
	f->n_waiting -= done;
	if (f->n_waiting == 0) {
		log_info("forking works again: the connections that waited are served (%u "
			 "refusal(s))",
			 f->refusals);
		f->refusals = 0;
	}
}

/* Replaces the configuration with the one in memfd fd (and closes it).
 * One that cannot be read leaves nothing to serve with: exits, and the
 * supervisor forks connection processes itself from then on. */
static void
take_config(struct forker *f, int fd)
{
	struct config_error err = {{0}};
	struct config next;
	int r;

	config_init(&next);
	r = kept_config_unpack(fd, &next, CONFIG_ORIGIN, &err);
	close(fd);
	if (r < 0) {
		log_error("%s", err.message);
		exit(EXIT_FAILURE);
	}
	config_done(&f->config);
	f->config = next;
	f->have_config = true;
	log_set_max_level(f->config.log_level);
}

static void
take_one(struct forker *f, enum fdpass_tag tag, int fd)
{
	switch (tag) {
	case FDPASS_CONFIG:
		take_config(f, fd);
		return;
	case FDPASS_OWED:
		if (f->owed_fd >= 0)
			close(f->owed_fd);
		f->owed_fd = fd;
		return;
	case FDPASS_CONN:
	case FDPASS_PROXY:
	case FDPASS_KEPT:
		break;
	}
	if (!f->have_config) {
		log_error("a connection came before any configuration: it is closed");
		drop(f, fd, tag == FDPASS_KEPT ? TAKE_FD(f->owed_fd) : -1);
		return;
	}
	serve(f, fd, tag, tag == FDPASS_KEPT ? TAKE_FD(f->owed_fd) : -1);
}

static void
receive(struct forker *f)
{
	for (;;) {
		enum fdpass_tag tags[FDPASS_BATCH];
		int fds[FDPASS_BATCH];
		unsigned lost;
		int n = fdpass_recv_batch(f->channel, tags, fds, FDPASS_BATCH, &lost);

		if (n == -EAGAIN)
			break;
		if (n == -EPIPE || n == -ECONNRESET) {
			f->supervisor_gone = true;
			return;
		}
		if (n == -EPROTO || n == -EMFILE) {
			log_warning_errno(n, "a connection from the supervisor was lost: %m");
			/* Each message brings one connection (forkwire.h). */
			report_gone(f);
			continue;
		}
		if (n < 0) {
			log_error_errno(n, "reading the supervisor's channel: %m");
			f->supervisor_gone = true;
			return;
		}
		for (int i = 0; i < n; i++)
			take_one(f, tags[i], fds[i]);
		if (lost)
			report_gone(f);
	}
	/* What was closed without a process on the way (report_gone()). */
	(void)report_exits(f);
}

/* Sends what was reaped; false while the channel is full. */
static bool
report_exits(struct forker *f)
{
	int r;

	while (f->gone > 0 && f->n_report < FORKWIRE_EXITS_MAX) {
		f->report.exits[f->n_report++] = (struct forkwire_exit){.pid = 0, .status = 0};
		f->gone--;
	}
	if (f->n_report == 0 || f->supervisor_gone)
		return true;
	r = forkwire_send(f->channel, &f->report, f->n_report);
	if (r == -EAGAIN)
		return false;
	if (r < 0)
		f->supervisor_gone = true;
	f->n_report = 0;
	return true;
}

static void
reap(struct forker *f)
{
	for (;;) {
		int status;
		pid_t pid;

		/* A full report goes before more are reaped: the supervisor
		 * counts each exit, and zombies wait for it meanwhile. */
		if (f->n_report == FORKWIRE_EXITS_MAX && !report_exits(f))
			return;
		pid = waitpid(-1, &status, WNOHANG);
		if (pid <= 0)
			break;
		f->alive--;
		f->report.exits[f->n_report++] = (struct forkwire_exit){.pid = pid, .status = status};
	}
	(void)report_exits(f);
}

static void
read_signals(struct forker *f)
{
	/* Both signals pending fit: one read() per wakeup. */
	struct signalfd_siginfo si[2];
	ssize_t n = read(f->signal_fd, si, sizeof(si));

	/* SIGCHLD: reaped below. SIGTERM: to the whole group from the
	 * supervisor (its connection processes drain; this one serves on),
	 * or PR_SET_PDEATHSIG: the supervisor is gone, and its end of the
	 * channel with it. */
	for (ssize_t i = 0; i < n / (ssize_t)sizeof(si[0]); i++)
		if (si[i].ssi_signo == SIGTERM && getppid() != f->supervisor)
			f->supervisor_gone = true;
	reap(f);
	if (f->n_waiting)
		retry_waiting(f);
}

static int
run(struct forker *f)
{
	int r = 0;

	while (!f->supervisor_gone || f->alive > 0) {
		struct pollfd p[2] = {
		    {.fd = f->signal_fd, .events = POLLIN},
		    {.fd = f->supervisor_gone ? -1 : f->channel,
		     .events = POLLIN | (f->n_report || f->gone ? POLLOUT : 0)},
		};
		int n = poll(p, 2, f->n_waiting ? RETRY_MS : -1);

		if (n < 0 && errno != EINTR) {
			r = log_error_errno(errno, "poll: %m");
			break;
		}
		if (n <= 0) {
			retry_waiting(f);
			continue;
		}
		if (p[0].revents)
			read_signals(f);
		if (p[1].revents & POLLOUT)
			(void)report_exits(f);
		if (p[1].revents & (POLLIN | POLLHUP | POLLERR))
			receive(f);
	}
	/* Nobody is left to serve the ones still waiting (or, after a poll()
	 * error, nobody will). */
	for (unsigned i = 0; i < f->n_waiting; i++) {
		close(f->waiting[i].fd);
		if (f->waiting[i].owed_fd >= 0)
			close(f->waiting[i].owed_fd);
	}
	free(f->waiting);
	f->waiting = NULL;
	f->n_waiting = f->waiting_capacity = 0;
	return r;
}

static int
setup_signals(struct forker *f)
{
	sigset_t mask;

	/* The worker's signals came blocked across exec (the supervisor set
	 * them so before it); what the connection processes need is
	 * recorded before SIGCHLD joins them. */
	worker_signals_inherited(&f->signals);
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return negative_errno();
	f->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	return f->signal_fd < 0 ? negative_errno() : 0;
}

/* The supervisor's scoreboard and per-source table, mapped from the fds
 * it passed; the fds are closed once mapped. */
static int
attach_shared(struct forker *f)
{
	int r = scoreboard_attach(&f->scoreboard, FORKWIRE_FD_SCOREBOARD);

	if (r < 0)
		return log_error_errno(r, "mapping the supervisor's scoreboard (fd %d): %m",
				       FORKWIRE_FD_SCOREBOARD);
	r = admission_table_attach(FORKWIRE_FD_SOURCES, &f->scoreboard.sources);
	if (r < 0)
		return log_error_errno(r, "mapping the supervisor's per-source table (fd %d): %m",
				       FORKWIRE_FD_SOURCES);
	close(FORKWIRE_FD_SCOREBOARD);
	close(FORKWIRE_FD_SOURCES);
	return 0;
}

static int
parse_slot(const char *text)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(text, &end, 10);
	if (errno || end == text || *end || v < 0 || v >= SCOREBOARD_SLOTS)
		return -EINVAL;
	return (int)v;
}

int
main(int argc, char **argv)
{
	struct forker f = {
	    .channel = FORKWIRE_FD_CHANNEL,
	    .signal_fd = -1,
	    .owed_fd = -1,
	    .self = getpid(),
	    .supervisor = getppid(),
	};
	int r;

	if (argc != 3 || strcmp(argv[1], FORKWIRE_ABI) != 0 || parse_slot(argv[2]) < 0) {
		fprintf(stderr,
			"echod-forker: this is the connection forker of echod %s, started by "
			"echod itself (Model=fork) with \"%s SLOT\"; not %s%s%s\n",
			ECHOD_VERSION, FORKWIRE_ABI, argc > 1 ? "\"" : "no arguments",
			argc > 1 ? argv[1] : "", argc > 1 ? "\"" : "");
		return EXIT_USAGE;
	}
	f.slot = parse_slot(argv[2]);
	proctitle_init(argc, argv);
	proctitle_set("echod forker", "echod: connection forker");
	log_set_context("forker");
	log_set_model("fork");
	config_init(&f.config);
	r = attach_shared(&f);
	if (r >= 0) {
		r = setup_signals(&f);
		if (r < 0)
			log_error_errno(r, "setting up signal handling: %m");
	}
	if (r >= 0) {
		r = forkwire_send(f.channel, &f.report, 0);
		if (r < 0)
			log_error_errno(r, "greeting the supervisor: %m");
	}
	if (r >= 0)
		r = run(&f);
	config_done(&f.config);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
