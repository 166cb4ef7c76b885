#include "forker-link.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "forkwire.h"
#include "kept.h"
#include "log.h"
#include "util.h"
#include "worker.h"

extern char **environ;

/* From exec to its hello: mapping two tables and one sendmsg(), but a
 * sanitizer build or a loaded machine takes its time. */
#define HELLO_TIMEOUT_MS 5000

static bool
find_forker(char *buf, size_t size)
{
	/* Room for the name after the directory, within PATH_MAX. */
	char self[PATH_MAX - sizeof("/echod-forker")];
	ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (len > 0) {
		char *slash;

		self[len] = '\0';
		slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			snprintf(buf, size, "%s/echod-forker", self);
			if (access(buf, X_OK) == 0)
				return true;
		}
	}
	snprintf(buf, size, "%s", ECHOD_FORKER_PATH);
	return access(buf, X_OK) == 0;
}

void
forker_link_init(struct forker_link *f)
{
	char path[PATH_MAX];

	*f = (struct forker_link){.exe_fd = -1, .channel = -1};
	if (!find_forker(path, sizeof(path)))
		return;
	f->exe_fd = open(path, O_PATH | O_CLOEXEC);
	f->path = strdup(path);
	if (!f->path && f->exe_fd >= 0)
		close(TAKE_FD(f->exe_fd));
}

/* In the child, before exec: the fds the forker expects at the numbers it
 * expects them (forkwire.h), its binary after them (close-on-exec: only
 * execveat() uses it), and nothing else of ours. Returns the binary's. */
static int
place_fds(int channel, const struct pool_env *env, int exe_fd)
{
	const int from[] = {
	    [FORKWIRE_FD_CHANNEL - 3] = channel,
	    [FORKWIRE_FD_SCOREBOARD - 3] = env->scoreboard->fd,
	    [FORKWIRE_FD_SOURCES - 3] = env->scoreboard->sources_fd,
	    [FORKWIRE_FD_RETURNS - 3] = env->returns[FDPASS_WORKER],
	    [FORKWIRE_FD_RETURNS + 1 - 3] = exe_fd,
	};
	const int exe_at = FORKWIRE_FD_RETURNS + 1;
	int high[ELEMENTSOF(from)];

	/* Out of the way first, above every target: a source may sit at
	 * another's target. (Not at some high number: under a low fd limit
	 * F_DUPFD fails past it.) */
	for (size_t i = 0; i < ELEMENTSOF(from); i++) {
		high[i] = fcntl(from[i], F_DUPFD_CLOEXEC, 3 + (int)ELEMENTSOF(from));
		if (high[i] < 0)
			return negative_errno();
	}
	for (size_t i = 0; i < ELEMENTSOF(from); i++)
		if (dup2(high[i], 3 + (int)i) < 0)
			return negative_errno();
	if (fcntl(exe_at, F_SETFD, FD_CLOEXEC) < 0 ||
	    close_range(exe_at + 1, UINT_MAX, 0) < 0)
		return negative_errno();
	return exe_at;
}

static _Noreturn void
exec_forker(const struct forker_link *f, int channel, const struct pool_env *env, int slot,
	    pid_t parent)
{
	char slot_text[16];
	char *argv[] = {(char *)"echod-forker", (char *)FORKWIRE_ABI, slot_text, NULL};
	int r;

	/* Its own process group, which its connection processes join: what
	 * the supervisor signals to reach them (forker_link_signal()). */
	setpgid(0, 0);
	/* The worker's signal state, which the forker hands down to its
	 * connection processes: it survives exec (blocked stays blocked,
	 * ignored stays ignored). */
	worker_enter_signals(&env->signals);
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != parent)
		_exit(EXIT_FAILURE);
	r = place_fds(channel, env, f->exe_fd);
	if (r < 0) {
		log_error_errno(r, "connection forker: passing it its fds: %m");
		_exit(EXIT_FAILURE);
	}
	snprintf(slot_text, sizeof(slot_text), "%d", slot);
	execveat(r, "", argv, environ, AT_EMPTY_PATH);
	log_error_errno(errno, "connection forker: executing %s: %m", f->path);
	_exit(EXIT_FAILURE);
}

static int
wait_for_hello(int channel)
{
	struct forkwire_report report;
	struct pollfd p = {.fd = channel, .events = POLLIN};
	int n = poll(&p, 1, HELLO_TIMEOUT_MS);

	if (n < 0)
		return negative_errno();
	if (n == 0)
		return -ETIMEDOUT;
	n = forkwire_recv(channel, &report);
	return n == 0 ? 0 : n > 0 ? -EPROTO : n;
}

/* Describes how a forker that never said hello ended, for the log. */
static void
describe_end(pid_t pid, char *buf, size_t size)
{
	int status;

	kill(pid, SIGKILL);
	if (waitpid(pid, &status, 0) != pid)
		snprintf(buf, size, "gone");
	else if (WIFEXITED(status))
		snprintf(buf, size, "exit status %d", WEXITSTATUS(status));
	else
		snprintf(buf, size, "signal %d", WTERMSIG(status));
}

int
forker_link_start(struct forker_link *f, const struct pool_env *env, int slot,
		  uint64_t event)
{
	char ended[32];
	int pair[2], r;
	pid_t parent = getpid(), pid;

	if (f->exe_fd < 0) {
		f->unavailable = true;
		log_notice("fork model: no connection forker (%s, or echod-forker beside echod): "
			   "the supervisor forks each connection process itself, at a higher cost "
			   "per connection",
			   ECHOD_FORKER_PATH);
		return -ENOENT;
	}
	/* Should the forker die, its connection processes become ours to
	 * reap: a killed one's connection is then settled, not left counted. */
	(void)prctl(PR_SET_CHILD_SUBREAPER, 1);
	r = fdpass_channel_new(pair);
	if (r < 0)
		goto fail;
	pid = fork();
	if (pid < 0) {
		r = negative_errno();
		close(pair[FDPASS_SUPERVISOR]);
		close(pair[FDPASS_WORKER]);
		goto fail;
	}
	if (pid == 0)
		exec_forker(f, pair[FDPASS_WORKER], env, slot, parent);
	/* Also here: signalled before the child got to it, the group would
	 * not exist yet. */
	(void)setpgid(pid, pid);
	close(pair[FDPASS_WORKER]);
	r = wait_for_hello(pair[FDPASS_SUPERVISOR]);
	if (r == 0) {
		struct epoll_event ev = {.events = EPOLLIN, .data.u64 = event};
		if (epoll_ctl(env->epoll_fd, EPOLL_CTL_ADD, pair[FDPASS_SUPERVISOR], &ev) < 0)
			r = negative_errno();
	}
	if (r < 0) {
		close(pair[FDPASS_SUPERVISOR]);
		describe_end(pid, ended, sizeof(ended));
		f->unavailable = true;
		log_warning_errno(r,
				  "fork model: the connection forker %s did not start (%m; %s): "
				  "the supervisor forks each connection process itself",
				  f->path, ended);
		return r;
	}
	f->pid = pid;
	f->channel = pair[FDPASS_SUPERVISOR];
	log_info("fork model: connection processes are forked by %s (pid %d)", f->path, (int)pid);
	return 0;
fail:
	f->unavailable = true;
	return log_warning_errno(r,
				 "fork model: starting the connection forker: %m; the supervisor "
				 "forks each connection process itself");
}

int
forker_link_send(struct forker_link *f, const struct config *config, unsigned generation,
		 enum fdpass_tag tag, int fd, int owed_fd)
{
	enum fdpass_tag tags[3];
	int fds[3], config_fd = -1, r;
	unsigned n = 0;

	if (f->channel < 0)
		return -EPIPE;
	if (!f->config_sent || f->config_generation != generation) {
		/* User= and Group= in it stay unchecked there: the forker
		 * parses with no name check (config_check_names_with()). */
		r = kept_config_pack(config, &config_fd);
		if (r < 0)
			return r;
		tags[n] = FDPASS_CONFIG;
		fds[n++] = config_fd;
	}
	if (owed_fd >= 0) {
		tags[n] = FDPASS_OWED;
		fds[n++] = owed_fd;
	}
	tags[n] = tag;
	fds[n++] = fd;
	r = fdpass_send_batch(f->channel, tags, fds, n);
	if (config_fd >= 0)
		close(config_fd);
	if (r < 0)
		return r == -ECONNRESET ? -EPIPE : r;
	if (config_fd >= 0) {
		f->config_sent = true;
		f->config_generation = generation;
	}
	close(fd);
	f->alive++;
	return 0;
}

void
forker_link_receive(struct forker_link *f, forker_exit_fn exited, void *userdata)
{
	while (f->channel >= 0) {
		struct forkwire_report report;
		int n = forkwire_recv(f->channel, &report);

		if (n == -EAGAIN)
			return;
		if (n == -EPROTO) {
			log_warning("fork model: a report from the connection forker made no sense; "
				    "dropped");
			continue;
		}
		if (n < 0) {
			/* Closed or broken: it is exiting, and its SIGCHLD
			 * says the rest (forker_link_lost()). */
			close(TAKE_FD(f->channel));
			return;
		}
		for (int i = 0; i < n; i++) {
			if (f->alive > 0)
				f->alive--;
			exited(userdata, report.exits[i].pid, report.exits[i].status);
		}
	}
}

bool
forker_link_is(const struct forker_link *f, pid_t pid)
{
	return f->pid > 0 && pid == f->pid;
}

void
forker_link_lost(struct forker_link *f, int status)
{
	unsigned alive = f->alive;

	if (f->channel >= 0)
		close(TAKE_FD(f->channel));
	/* Not at a stop (there the forker goes last, or with SIGKILL from
	 * us): then it is a failure to say. */
	if (!f->killed && (alive || !WIFEXITED(status) || WEXITSTATUS(status) != 0))
		log_warning("fork model: the connection forker (pid %d) ended (%s %d) with %u "
			    "connection process(es): they drain; the supervisor forks new ones "
			    "itself from now on",
			    (int)f->pid, WIFEXITED(status) ? "exit status" : "signal",
			    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), alive);
	f->pid = 0;
	f->orphans += alive;
	f->alive = 0;
	f->unavailable = true;
}

void
forker_link_signal(struct forker_link *f, int sig)
{
	if (f->pid <= 0)
		return;
	/* SIGKILL ends the forker too (a fast stop, or the shutdown timeout):
	 * its end is then expected, not a failure to say. */
	if (sig == SIGKILL)
		f->killed = true;
	kill(-f->pid, sig);
}

void
forker_link_free(struct forker_link *f)
{
	if (f->channel >= 0)
		close(TAKE_FD(f->channel));
	if (f->exe_fd >= 0)
		close(TAKE_FD(f->exe_fd));
	free(f->path);
	f->path = NULL;
}
