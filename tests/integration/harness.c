#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <grp.h>
#include <time.h>
#include <unistd.h>

__attribute__((format(printf, 1, 2))) static _Noreturn void
fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "harness: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	abort();
}

void
print_comment(const char *text)
{
	while (*text) {
		size_t len = strcspn(text, "\n");

		printf("# %.*s\n", (int)len, text);
		text += len;
		if (*text == '\n')
			text++;
	}
	fflush(stdout);
}

uint64_t
monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

const char *
harness_model(void)
{
	const char *m = getenv("ECHOD_MODEL");

	return m && *m ? m : "prefork";
}

static const char *
echod_binary(void)
{
	const char *b = getenv("ECHOD_BINARY");

	if (!b)
		fatal("ECHOD_BINARY is not set (meson sets it)");
	return b;
}

#define WRAPPER_MAX_WORDS 16

/* Appends echod to argv at n, behind the words of $ECHOD_TEST_WRAPPER
 * (split at blanks, no quoting) if set: "valgrind --leak-check=full" runs
 * every echod under memcheck. Returns the new n. */
static size_t
add_echod(const char **argv, size_t n)
{
	static char *words[WRAPPER_MAX_WORDS];
	static size_t n_words;
	static bool parsed;

	if (!parsed) {
		const char *w = getenv("ECHOD_TEST_WRAPPER");
		char *copy = w ? strdup(w) : NULL, *save = NULL;

		for (char *t = copy ? strtok_r(copy, " \t", &save) : NULL; t;
		     t = strtok_r(NULL, " \t", &save)) {
			if (n_words == WRAPPER_MAX_WORDS)
				fatal("ECHOD_TEST_WRAPPER has more than %d words", WRAPPER_MAX_WORDS);
			words[n_words++] = t;
		}
		parsed = true;
	}
	if (n + n_words + 1 >= HARNESS_MAX_ARGS)
		fatal("too many arguments");
	for (size_t i = 0; i < n_words; i++)
		argv[n++] = words[i];
	argv[n++] = echod_binary();
	return n;
}

/* Whether nothing holds port on 127.0.0.1 for protocol type. */
static bool
port_is_free(int type, int port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET,
				  .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
	bool free = fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;

	if (fd >= 0)
		close(fd);
	return free;
}

/* A port below the kernel's ephemeral range (32768 and up on Linux), so
 * that no client connect() of this or another test can take it as its
 * source port between now and echod's bind(), free for TCP and UDP both
 * (the datagram listeners share the number). Each call of a process tries
 * a different port, starting from one its pid picks, so tests running
 * side by side rarely meet; echod_start() retries if they do. */
int
free_port(void)
{
	static unsigned seq;
	unsigned first = (unsigned)getpid() * 7919u;

	for (unsigned i = 0; i < 4096; i++) {
		int port = 20000 + (int)((first + (seq++) * 104729u) % 12768u);

		if (port_is_free(SOCK_STREAM, port) && port_is_free(SOCK_DGRAM, port))
			return port;
	}
	fatal("finding a free port: none free in 20000-32767");
}

int
tcp_connect(int port)
{
	struct sockaddr_in sin = {
		.sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		close(fd);
		return -1;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

void
echod_collect_log(struct echod *e)
{
	for (;;) {
		ssize_t n;
		if (e->log_fd < 0 || e->log_len + 1 >= sizeof(e->log))
			return;
		n = read(e->log_fd, e->log + e->log_len, sizeof(e->log) - 1 - e->log_len);
		if (n <= 0)
			return;
		/* Show echod's lines in the test log too, for diagnosis. */
		fwrite(e->log + e->log_len, 1, (size_t)n, stderr);
		e->log_len += (size_t)n;
		e->log[e->log_len] = '\0';
	}
}

bool
echod_wait_log(struct echod *e, const char *needle, int timeout_ms)
{
	uint64_t end = monotonic_ms() + (uint64_t)timeout_ms;

	for (;;) {
		echod_collect_log(e);
		if (strstr(e->log, needle))
			return true;
		if (monotonic_ms() >= end)
			return false;
		usleep(20000);
	}
}

unsigned
echod_log_count(struct echod *e, const char *needle)
{
	unsigned n = 0;

	echod_collect_log(e);
	for (const char *p = e->log; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

static unsigned next_nofile_limit;
static uid_t next_uid;
static unsigned next_nproc_limit;

void
harness_limit_fds(unsigned limit)
{
	next_nofile_limit = limit;
}

void
harness_run_as(uid_t uid, unsigned nproc_limit)
{
	next_uid = uid;
	next_nproc_limit = nproc_limit;
}

/* In the child, before exec: the limits and the user asked for. Returns
 * false (after saying why) when one cannot be set. */
void
harness_write_config(const char *path, const char *text)
{
	FILE *f = fopen(path, "we");

	if (!f || fputs(text, f) < 0 || fclose(f) != 0)
		fatal("writing %s: %s", path, strerror(errno));
}

void
harness_remove_runtime_dir(const char *dir)
{
	char status[PATH_MAX];

	/* The name is RELOAD_STATUS_FILE of src/lib/reload.h: the harness
	 * sees echod only from outside, as a user does. */
	snprintf(status, sizeof(status), "%s/reload-status", dir);
	if (unlink(status) != 0 && errno != ENOENT)
		fatal("removing %s: %s", status, strerror(errno));
	if (rmdir(dir) != 0)
		fatal("removing %s: %s", dir, strerror(errno));
}

/* Sockets for the next echod, as systemd passes them (harness_pass_fds). */
static const int *next_listen_fds;
static size_t next_n_listen_fds;
static const char *next_listen_names;

void
harness_pass_fds(const int *fds, size_t n, const char *names)
{
	next_listen_fds = fds;
	next_n_listen_fds = n;
	next_listen_names = names;
}

/* In the child: the sockets at 3, 4, ... and LISTEN_* naming this
 * process, as systemd would set them. */
static bool
apply_listen_fds(void)
{
	char value[32];
	int moved[16];

	if (next_n_listen_fds == 0)
		return true;
	if (next_n_listen_fds > 16)
		return fprintf(stderr, "too many fds to pass\n"), false;
	/* Out of the way first: a source fd may sit where another goes. */
	for (size_t i = 0; i < next_n_listen_fds; i++)
		if ((moved[i] = fcntl(next_listen_fds[i], F_DUPFD_CLOEXEC, 100)) < 0)
			return fprintf(stderr, "dup: %s\n", strerror(errno)), false;
	for (size_t i = 0; i < next_n_listen_fds; i++)
		if (dup2(moved[i], 3 + (int)i) < 0)
			return fprintf(stderr, "dup2: %s\n", strerror(errno)), false;
	snprintf(value, sizeof(value), "%zu", next_n_listen_fds);
	setenv("LISTEN_FDS", value, 1);
	snprintf(value, sizeof(value), "%d", (int)getpid());
	setenv("LISTEN_PID", value, 1);
	if (next_listen_names)
		setenv("LISTEN_FDNAMES", next_listen_names, 1);
	return true;
}

static bool
apply_limits(void)
{
	if (!apply_listen_fds())
		return false;
	if (next_nofile_limit) {
		struct rlimit rl = {next_nofile_limit, next_nofile_limit};
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			return fprintf(stderr, "setrlimit(NOFILE): %s\n", strerror(errno)), false;
	}
	if (next_uid) {
		struct rlimit rl = {next_nproc_limit, next_nproc_limit};
		if (setrlimit(RLIMIT_NPROC, &rl) < 0 || setgroups(0, NULL) < 0 ||
		    setgid(next_uid) < 0 || setuid(next_uid) < 0)
			return fprintf(stderr, "running as uid %u: %s\n", (unsigned)next_uid,
				       strerror(errno)),
			       false;
		/* A change of credentials clears the parent-death signal. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
	}
	return true;
}

/* Reads what echod wrote to stdout so far (non-blocking) into e->out. */
static void
collect_out(struct echod *e)
{
	for (;;) {
		ssize_t n;
		if (e->out_fd < 0 || e->out_len + 1 >= sizeof(e->out))
			return;
		n = read(e->out_fd, e->out + e->out_len, sizeof(e->out) - 1 - e->out_len);
		if (n <= 0)
			return;
		e->out_len += (size_t)n;
		e->out[e->out_len] = '\0';
	}
}

static void
close_pipes(struct echod *e)
{
	echod_collect_log(e);
	collect_out(e);
	if (e->log_fd >= 0)
		close(e->log_fd);
	if (e->out_fd >= 0)
		close(e->out_fd);
	e->log_fd = e->out_fd = -1;
}

/* stdin_fd: echod's stdin (-1: /dev/null); capture_stdout: a pipe read
 * into e->out, else the test's own stdout. */
static pid_t
spawn(struct echod *e, const char *const *argv, const char *const *env, int stdin_fd,
      bool capture_stdout)
{
	int pipefd[2], outfd[2] = {-1, -1};
	pid_t pid;

	if (pipe2(pipefd, O_CLOEXEC) < 0 || (capture_stdout && pipe2(outfd, O_CLOEXEC) < 0))
		fatal("pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		fatal("fork: %s", strerror(errno));
	if (pid == 0) {
		int in = stdin_fd >= 0 ? stdin_fd : open("/dev/null", O_RDONLY);
		dup2(in, STDIN_FILENO);
		dup2(pipefd[1], STDERR_FILENO);
		if (capture_stdout)
			dup2(outfd[1], STDOUT_FILENO);
		for (const char *const *v = env; v && *v; v++) {
			/* What systemd sets when stderr is its journal stream:
			 * only the child knows its stderr's device and inode. */
			if (strcmp(*v, HARNESS_JOURNAL_STREAM) == 0) {
				struct stat st;
				char value[64];

				if (fstat(STDERR_FILENO, &st) == 0) {
					snprintf(value, sizeof(value), "%llu:%llu",
						 (unsigned long long)st.st_dev,
						 (unsigned long long)st.st_ino);
					setenv("JOURNAL_STREAM", value, 1);
				}
				continue;
			}
			putenv((char *)*v);
		}
		/* A test that dies must not leave echod behind. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (!apply_limits())
			_exit(127);
		execv(argv[0], (char *const *)argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	next_nofile_limit = 0;
	next_n_listen_fds = 0;
	next_uid = 0;
	next_nproc_limit = 0;
	close(pipefd[1]);
	fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
	e->log_fd = pipefd[0];
	e->log_len = 0;
	e->log[0] = '\0';
	e->out_fd = outfd[0];
	e->out_len = 0;
	e->out[0] = '\0';
	if (capture_stdout) {
		close(outfd[1]);
		fcntl(outfd[0], F_SETFL, O_NONBLOCK);
	}
	e->pid = pid;
	return pid;
}

bool
tcp_wait_accepting(int port, int timeout_ms)
{
	uint64_t end = monotonic_ms() + (uint64_t)timeout_ms;

	for (;;) {
		int fd = tcp_connect(port);
		if (fd >= 0) {
			close(fd);
			return true;
		}
		if (monotonic_ms() >= end)
			return false;
		usleep(20000);
	}
}

/* How long echod may take to start: longer under a wrapper such as
 * valgrind, which slows start-up (and each fork) tenfold or more. */
static int
startup_timeout_ms(void)
{
	const char *w = getenv("ECHOD_TEST_WRAPPER");

	return w && *w ? 60000 : 10000;
}

static void
wait_accepting(struct echod *e)
{
	uint64_t end = monotonic_ms() + (uint64_t)startup_timeout_ms();

	for (;;) {
		int fd = tcp_connect(e->port);
		if (fd >= 0) {
			close(fd);
			return;
		}
		echod_collect_log(e);
		if (waitpid(e->pid, NULL, WNOHANG) == e->pid)
			fatal("echod exited before accepting connections");
		if (monotonic_ms() >= end)
			fatal("echod does not accept connections on port %d after %d ms", e->port,
			      startup_timeout_ms());
		usleep(20000);
	}
}

/* Ready means every worker is up: waiting for the supervisor's line keeps
 * tests from racing the start-up. */
static void
wait_ready(struct echod *e)
{
	if (!echod_wait_log(e, "ready", startup_timeout_ms()))
		fatal("echod did not log readiness within %d ms", startup_timeout_ms());
}

static size_t
build_argv(const char **argv, size_t n, const char *const *extra)
{
	for (const char *const *x = extra; x && *x; x++) {
		if (n + 2 >= HARNESS_MAX_ARGS)
			fatal("too many arguments");
		argv[n++] = *x;
	}
	argv[n] = NULL;
	return n;
}

/* Waits until e says it is ready (true) or exits: false when it exited
 * because its address was taken meanwhile, fatal for any other reason or
 * when it is not ready in time. */
static bool
came_up(struct echod *e)
{
	uint64_t end = monotonic_ms() + (uint64_t)startup_timeout_ms();
	int status;

	while (monotonic_ms() < end) {
		echod_collect_log(e);
		if (strstr(e->log, "ready"))
			return true;
		if (waitpid(e->pid, &status, WNOHANG) == e->pid) {
			echod_collect_log(e);
			close_pipes(e);
			if (strstr(e->log, "Address already in use"))
				return false;
			fatal("echod exited before it was ready:\n%s", e->log);
		}
		usleep(10000);
	}
	fatal("echod did not log readiness within %d ms", startup_timeout_ms());
}

void
echod_start_env(struct echod *e, const char *const *env, const char *const *extra)
{
	static char listen[64];
	const char *argv[HARNESS_MAX_ARGS];
	size_t n = 0;

	/* Another test may have taken the port since free_port() looked:
	 * echod then exits at once, saying so, and gets another. */
	for (int attempt = 0;; attempt++) {
		e->port = free_port();
		snprintf(listen, sizeof(listen), "127.0.0.1:%d", e->port);
		n = add_echod(argv, 0);
		argv[n++] = "--listen";
		argv[n++] = listen;
		argv[n++] = "--model";
		argv[n++] = harness_model();
		argv[n++] = "--config";
		argv[n++] = "/dev/null";
		build_argv(argv, n, extra);
		spawn(e, argv, env, -1, false);
		if (came_up(e))
			break;
		if (attempt == 4)
			fatal("echod found its port taken five times in a row");
	}
	wait_accepting(e);
}

void
echod_start(struct echod *e, const char *const *extra)
{
	echod_start_env(e, NULL, extra);
}

void
echod_start_activated(struct echod *e, const char *const *activator_args, const char *const *extra)
{
	static char listen[64];
	const char *argv[HARNESS_MAX_ARGS];
	bool accept_mode = false, datagram_mode = false;
	size_t n = 0;

	e->port = free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", e->port);
	argv[n++] = "/usr/bin/systemd-socket-activate";
	argv[n++] = "--listen";
	argv[n++] = listen;
	for (const char *const *a = activator_args; a && *a; a++) {
		accept_mode |= strcmp(*a, "--accept") == 0 || strcmp(*a, "-a") == 0;
		datagram_mode |= strcmp(*a, "--datagram") == 0 || strcmp(*a, "-d") == 0;
		argv[n++] = *a;
	}
	n = add_echod(argv, n);
	argv[n++] = "--config";
	argv[n++] = "/dev/null";
	if (!accept_mode) {
		argv[n++] = "--model";
		argv[n++] = harness_model();
	}
	build_argv(argv, n, extra);
	spawn(e, argv, NULL, -1, false);
	/* Datagram sockets: echod starts with the first datagram, which the
	 * test sends itself. */
	if (datagram_mode)
		return;
	/* The activator listens at once and starts echod when the first
	 * client connects (wait_accepting() is that client). */
	wait_accepting(e);
	if (!accept_mode)
		wait_ready(e);
}

int
echod_wait_exit(struct echod *e, int timeout_ms)
{
	uint64_t end = monotonic_ms() + (uint64_t)timeout_ms;
	int status;

	for (;;) {
		pid_t r = waitpid(e->pid, &status, WNOHANG);
		echod_collect_log(e);
		collect_out(e);
		if (r == e->pid)
			break;
		if (monotonic_ms() >= end)
			return -1;
		usleep(10000);
	}
	close_pipes(e);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void
echod_spawn(struct echod *e, const char *const *env, const char *const *args, int stdin_fd)
{
	const char *argv[HARNESS_MAX_ARGS];

	build_argv(argv, add_echod(argv, 0), args);
	spawn(e, argv, env, stdin_fd, false);
}

int
echod_run(struct echod *e, const char *const *args, int timeout_ms)
{
	const char *argv[HARNESS_MAX_ARGS];
	int status;

	build_argv(argv, add_echod(argv, 0), args);
	spawn(e, argv, NULL, -1, true);
	status = echod_wait_exit(e, timeout_ms);
	if (status < 0)
		echod_kill(e);
	return status;
}

int
echod_stop(struct echod *e, int timeout_ms)
{
	int status;

	kill(e->pid, SIGTERM);
	status = echod_wait_exit(e, timeout_ms);
	if (status < 0)
		echod_kill(e);
	return status;
}

void
echod_kill(struct echod *e)
{
	pid_t kids[4096];
	size_t n = process_children(e->pid, kids, 4096);
	pid_t forker = process_forker(e->pid);

	for (size_t i = 0; i < n; i++)
		kill(kids[i], SIGKILL);
	if (forker > 0)
		kill(forker, SIGKILL);
	kill(e->pid, SIGKILL);
	waitpid(e->pid, NULL, 0);
	close_pipes(e);
}

/* Stops pid first, so that it can start nothing new, then its tree. */
static void
kill_tree(pid_t pid)
{
	pid_t kids[1024];
	size_t n = process_direct_children(pid, kids, 1024);

	kill(pid, SIGSTOP);
	for (size_t i = 0; i < n; i++)
		kill_tree(kids[i]);
	kill(pid, SIGKILL);
}

int
harness_teardown(void **state)
{
	pid_t kids[1024];
	size_t n = process_direct_children(getpid(), kids, 1024);
	uint64_t end = monotonic_ms() + 5000;

	for (size_t i = 0; i < n; i++)
		kill_tree(kids[i]);
	/* Reaped: whatever exited, and what the kills end. */
	while (monotonic_ms() < end) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		if (process_direct_children(getpid(), kids, 1024) == 0)
			break;
		usleep(10000);
	}
	return 0;
}

static int
poll_one(int fd, short events, uint64_t end)
{
	struct pollfd p = {.fd = fd, .events = events};
	uint64_t now = monotonic_ms();

	/* Past the deadline, still look once without waiting. */
	return poll(&p, 1, now >= end ? 0 : (int)(end - now));
}

int
echo_roundtrip(int fd, const void *data, size_t len, int timeout_ms)
{
	uint64_t end = monotonic_ms() + (uint64_t)timeout_ms;
	char *back = malloc(len ? len : 1);
	size_t sent = 0, got = 0;
	int r = -1;

	while (got < len) {
		struct pollfd p = {.fd = fd, .events = POLLIN | (sent < len ? POLLOUT : 0)};
		uint64_t now = monotonic_ms();
		if (now >= end || poll(&p, 1, (int)(end - now)) <= 0)
			goto out;
		if ((p.revents & POLLOUT) && sent < len) {
			ssize_t n = send(fd, (const char *)data + sent, len - sent,
					 MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n < 0 && errno != EAGAIN)
				goto out;
			if (n > 0)
				sent += (size_t)n;
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = recv(fd, back + got, len - got, MSG_DONTWAIT);
			if (n == 0 || (n < 0 && errno != EAGAIN))
				goto out;
			if (n > 0)
				got += (size_t)n;
		}
	}
	r = memcmp(back, data, len) == 0 ? 0 : -1;
out:
	free(back);
	return r;
}

ssize_t
read_until_eof(int fd, void *buf, size_t size, int timeout_ms)
{
	uint64_t end = monotonic_ms() + (uint64_t)timeout_ms;
	size_t got = 0;

	for (;;) {
		if (poll_one(fd, POLLIN, end) <= 0)
			return -1;
		ssize_t n = recv(fd, (char *)buf + got, size - got, MSG_DONTWAIT);
		if (n == 0)
			return (ssize_t)got;
		if (n < 0) {
			if (errno == EAGAIN)
				continue;
			return -1;
		}
		got += (size_t)n;
		if (got == size)
			return (ssize_t)got;
	}
}

bool
wait_readable(int fd, int timeout_ms)
{
	return poll_one(fd, POLLIN, monotonic_ms() + (uint64_t)timeout_ms) > 0;
}

void
fill_random(void *buf, size_t len, unsigned seed)
{
	unsigned char *p = buf;
	uint32_t x = seed * 2654435761u + 1;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (unsigned char)x;
	}
}

size_t
process_direct_children(pid_t pid, pid_t *out, size_t max)
{
	char path[64];
	size_t n = 0;
	DIR *d;
	struct dirent *de;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	if (!d)
		return 0;
	while ((de = readdir(d)) && n < max) {
		char cpath[300];
		FILE *f;
		int child;

		if (de->d_name[0] == '.')
			continue;
		snprintf(cpath, sizeof(cpath), "/proc/%d/task/%s/children", (int)pid, de->d_name);
		f = fopen(cpath, "re");
		if (!f)
			continue;
		while (n < max && fscanf(f, "%d", &child) == 1)
			out[n++] = child;
		fclose(f);
	}
	closedir(d);
	return n;
}

static bool
is_forker(pid_t pid)
{
	char path[64], exe[PATH_MAX];
	ssize_t len;
	const char *base;

	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	len = readlink(path, exe, sizeof(exe) - 1);
	if (len <= 0)
		return false;
	exe[len] = '\0';
	base = strrchr(exe, '/');
	base = base ? base + 1 : exe;
	/* Replaced on disk since it started (an upgrade): "NAME (deleted)". */
	return strcmp(base, "echod-forker") == 0 || strcmp(base, "echod-forker (deleted)") == 0;
}

pid_t
process_forker(pid_t pid)
{
	pid_t kids[4096];
	size_t n = process_direct_children(pid, kids, 4096);

	for (size_t i = 0; i < n; i++)
		if (is_forker(kids[i]))
			return kids[i];
	return 0;
}

size_t
process_children(pid_t pid, pid_t *out, size_t max)
{
	size_t n = process_direct_children(pid, out, max);

	for (size_t i = 0; i < n; i++) {
		pid_t forker = out[i];
		if (!is_forker(forker))
			continue;
		out[i] = out[--n];
		return n + process_direct_children(forker, out + n, max - n);
	}
	return n;
}

uint64_t
process_rss_kib(pid_t pid)
{
	char path[64], line[256];
	uint64_t kib = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %lu", (unsigned long *)&kib) == 1)
			break;
	fclose(f);
	return kib;
}

uint64_t
process_tree_rss_kib(pid_t pid)
{
	pid_t kids[1024];
	size_t n = process_children(pid, kids, 1024);
	uint64_t total = process_rss_kib(pid);

	for (size_t i = 0; i < n; i++)
		total += process_tree_rss_kib(kids[i]);
	return total;
}

/* The fds pid has open whose link target match() accepts (NULL: all),
 * or -1 when they cannot be read (pid is gone). */
static int
count_fds_matching(pid_t pid, bool (*match)(const char *target, const void *ctx),
		   const void *ctx)
{
	char dir[64], path[PATH_MAX], target[128];
	struct dirent *de;
	int n = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	d = opendir(dir);
	if (!d)
		return -1;
	while ((de = readdir(d))) {
		ssize_t len;

		if (de->d_name[0] == '.')
			continue;
		if (!match) {
			n++;
			continue;
		}
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		len = readlink(path, target, sizeof(target) - 1);
		if (len <= 0)
			continue;
		target[len] = '\0';
		n += match(target, ctx);
	}
	closedir(d);
	return n;
}

static bool
is_socket(const char *target, const void *ctx)
{
	(void)ctx;
	return strncmp(target, "socket:", strlen("socket:")) == 0;
}

int
process_fd_count(pid_t pid)
{
	return count_fds_matching(pid, NULL, NULL);
}

int
process_socket_count(pid_t pid)
{
	return count_fds_matching(pid, is_socket, NULL);
}

/* Adds to inodes[] (up to max) the socket inodes of the TCP sockets on
 * local port `port` not in LISTEN (0A), from the table at path. */
static size_t
tcp_inodes_on_port(const char *path, int port, unsigned long *inodes, size_t n, size_t max)
{
	char line[512];
	FILE *f = fopen(path, "re");

	if (!f)
		return n;
	while (n < max && fgets(line, sizeof(line), f)) {
		unsigned local_port, state;
		unsigned long inode;

		/* sl local_address:port rem_address:port st tx:rx tr:when
		 * retrnsmt uid timeout inode */
		if (sscanf(line, " %*d: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x %*x:%*x %*x:%*x %*x %*u %*u %lu",
			   &local_port, &state, &inode) == 3 &&
		    (int)local_port == port && state != 0x0A && inode != 0)
			inodes[n++] = inode;
	}
	fclose(f);
	return n;
}

/* The socket inodes of the connections process_connection_count()
 * counts. */
struct inode_set {
	const unsigned long *inodes;
	size_t n;
};

static bool
is_socket_in(const char *target, const void *ctx)
{
	const struct inode_set *set = ctx;
	unsigned long inode;

	if (sscanf(target, "socket:[%lu]", &inode) != 1)
		return false;
	for (size_t i = 0; i < set->n; i++)
		if (set->inodes[i] == inode)
			return true;
	return false;
}

int
process_connection_count(pid_t pid, int port)
{
	static unsigned long inodes[65536];
	struct inode_set set = {.inodes = inodes};

	set.n = tcp_inodes_on_port("/proc/net/tcp", port, inodes, 0, 65536);
	set.n = tcp_inodes_on_port("/proc/net/tcp6", port, inodes, set.n, 65536);
	return count_fds_matching(pid, is_socket_in, &set);
}

bool
process_alive(pid_t pid)
{
	char path[64], state = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	/* A zombie is dead for our purposes. */
	if (fscanf(f, "%*d (%*[^)]) %c", &state) != 1)
		state = 0;
	fclose(f);
	return state != 0 && state != 'Z' && state != 'X';
}

/* Of pid's fds, a copy of the socket connected to the address `client`. */
static int
socket_connected_to(pid_t pid, const struct sockaddr_storage *client, socklen_t client_len)
{
	char path[64];
	struct dirent *d;
	int pidfd, found = -1;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	pidfd = pidfd_open(pid, 0);
	dir = opendir(path);
	while (pidfd >= 0 && dir && found < 0 && (d = readdir(dir))) {
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);
		int fd;

		if (d->d_name[0] == '.')
			continue;
		fd = pidfd_getfd(pidfd, atoi(d->d_name), 0);
		if (fd < 0)
			continue;
		if (getpeername(fd, (struct sockaddr *)&peer, &len) == 0 && len == client_len &&
		    memcmp(&peer, client, len) == 0)
			found = fd;
		else
			close(fd);
	}
	if (dir)
		closedir(dir);
	if (pidfd >= 0)
		close(pidfd);
	return found;
}

int
served_socket(pid_t pid, int client_fd)
{
	struct sockaddr_storage client;
	socklen_t len = sizeof(client);
	pid_t kids[64];
	size_t n;
	int fd;

	if (getsockname(client_fd, (struct sockaddr *)&client, &len) < 0)
		return -1;
	fd = socket_connected_to(pid, &client, len);
	n = process_children(pid, kids, 64);
	for (size_t i = 0; fd < 0 && i < n; i++)
		fd = socket_connected_to(kids[i], &client, len);
	return fd;
}

unsigned
zombie_children(pid_t pid)
{
	pid_t kids[4096];
	size_t n = process_children(pid, kids, 4096);
	unsigned zombies = 0;

	for (size_t i = 0; i < n; i++)
		zombies += !process_alive(kids[i]);
	return zombies;
}

int
tcp_connect_from(const char *src, int port)
{
	struct sockaddr_in from = {.sin_family = AF_INET};
	struct sockaddr_in to = {
		.sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (inet_pton(AF_INET, src, &from.sin_addr) != 1 ||
	    bind(fd, (struct sockaddr *)&from, sizeof(from)) < 0 ||
	    connect(fd, (struct sockaddr *)&to, sizeof(to)) < 0) {
		close(fd);
		return -1;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

static int
stream_connect(const struct sockaddr *sa, socklen_t len)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, sa, len) < 0) {
		close(fd);
		return -1;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

int
tcp6_connect(int port)
{
	struct sockaddr_in6 sin6 = {
	    .sin6_family = AF_INET6,
	    .sin6_port = htons((uint16_t)port),
	    .sin6_addr = IN6ADDR_LOOPBACK_INIT,
	};

	return stream_connect((struct sockaddr *)&sin6, sizeof(sin6));
}

int
unix_connect(const char *path)
{
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	size_t len = strlen(path);

	if (len >= sizeof(un.sun_path))
		return -1;
	memcpy(un.sun_path, path, len);
	/* Abstract: a leading NUL, and the name's length, not a NUL, ends it. */
	if (path[0] == '@') {
		un.sun_path[0] = '\0';
		return stream_connect((struct sockaddr *)&un,
				      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
	}
	return stream_connect((struct sockaddr *)&un, sizeof(un));
}

bool
ipv6_loopback_available(void)
{
	struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&sin6, sizeof(sin6)) == 0;

	if (fd >= 0)
		close(fd);
	return ok;
}

bool
closed_by_peer(int fd, int timeout_ms)
{
	uint64_t end = monotonic_ms() + (uint64_t)timeout_ms;
	char buf[256];

	while (poll_one(fd, POLLIN, end) > 0) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN))
			return true;
	}
	return false;
}

void
notify_socket_open(struct notify_socket *n)
{
	static unsigned seq;
	struct sockaddr_un un = {.sun_family = AF_UNIX};

	/* One path per socket: a leaked echod of an earlier test cannot
	 * reach this one's. */
	snprintf(n->path, sizeof(n->path), "/tmp/echod-test-notify-%d-h%u", (int)getpid(), seq++);
	unlink(n->path);
	strcpy(un.sun_path, n->path);
	n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (n->fd < 0 || bind(n->fd, (struct sockaddr *)&un, sizeof(un)) < 0)
		fatal("binding %s: %s", n->path, strerror(errno));
	snprintf(n->env, sizeof(n->env), "NOTIFY_SOCKET=%s", n->path);
	n->status[0] = '\0';
}

void
notify_socket_close(struct notify_socket *n)
{
	close(n->fd);
	unlink(n->path);
}

/* Reads one message if one comes before end, keeping its STATUS=. */
static bool
notify_read(struct notify_socket *n, uint64_t end)
{
	char msg[4096];
	const char *st;
	ssize_t len;

	if (poll_one(n->fd, POLLIN, end) <= 0)
		return false;
	len = recv(n->fd, msg, sizeof(msg) - 1, MSG_DONTWAIT);
	if (len <= 0)
		return true;
	msg[len] = '\0';
	st = strstr(msg, "STATUS=");
	if (st && (st == msg || st[-1] == '\n')) {
		st += strlen("STATUS=");
		snprintf(n->status, sizeof(n->status), "%.*s", (int)strcspn(st, "\n"), st);
	}
	return true;
}

const char *
notify_status_wait(struct notify_socket *n, const char *needle, int timeout_ms)
{
	uint64_t end = monotonic_ms() + (uint64_t)timeout_ms;

	for (;;) {
		if (strstr(n->status, needle))
			return n->status;
		if (monotonic_ms() >= end || !notify_read(n, end))
			return strstr(n->status, needle) ? n->status : NULL;
	}
}

const char *
notify_status_after(struct notify_socket *n, int ms)
{
	uint64_t end = monotonic_ms() + (uint64_t)ms;

	while (monotonic_ms() < end)
		notify_read(n, end);
	return n->status;
}

long
status_count(const char *status, const char *word)
{
	char pattern[64];
	const char *p;
	const char *start;

	snprintf(pattern, sizeof(pattern), " %s", word);
	p = strstr(status, pattern);
	if (!p)
		return -1;
	start = p;
	while (start > status && start[-1] >= '0' && start[-1] <= '9')
		start--;
	return start == p ? -1 : strtol(start, NULL, 10);
}

/* utime, stime, cutime, cstime of one process, in clock ticks. */
static uint64_t
process_cpu_ticks(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut, st, cut, cst;
	uint64_t ticks = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	/* The command name may hold spaces: fields are counted after its ')'. */
	if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')) &&
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %llu %llu", &ut,
		   &st, &cut, &cst) == 4)
		ticks = ut + st + cut + cst;
	fclose(f);
	return ticks;
}

static uint64_t
process_tree_cpu_ticks(pid_t pid)
{
	pid_t kids[4096];
	size_t n = process_children(pid, kids, 4096);
	uint64_t total = process_cpu_ticks(pid);

	for (size_t i = 0; i < n; i++)
		total += process_tree_cpu_ticks(kids[i]);
	return total;
}

uint64_t
process_tree_cpu_ms(pid_t pid)
{
	return process_tree_cpu_ticks(pid) * 1000 / (uint64_t)sysconf(_SC_CLK_TCK);
}

static uint64_t
run_delay_ms(const char *path)
{
	unsigned long long run, wait = 0;
	FILE *f = fopen(path, "re");

	if (!f)
		return 0;
	/* Time on the CPU, then time waiting on a run queue, in ns. */
	if (fscanf(f, "%llu %llu", &run, &wait) != 2)
		wait = 0;
	fclose(f);
	return wait / 1000000;
}

static uint64_t
process_run_delay_ms(pid_t pid)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
	return run_delay_ms(path);
}

void
cpu_waits_take(pid_t supervisor, struct cpu_waits *w)
{
	pid_t kids[63];
	size_t n = process_children(supervisor, kids, 63);

	w->pids[0] = supervisor;
	w->waited[0] = process_run_delay_ms(supervisor);
	w->n = 1;
	for (size_t i = 0; i < n; i++, w->n++) {
		w->pids[w->n] = kids[i];
		w->waited[w->n] = process_run_delay_ms(kids[i]);
	}
	w->own = run_delay_ms("/proc/thread-self/schedstat");
}

uint64_t
cpu_wait_since(pid_t supervisor, const struct cpu_waits *before)
{
	struct cpu_waits now;
	uint64_t longest = 0;

	cpu_waits_take(supervisor, &now);
	for (size_t i = 0; i < now.n; i++) {
		uint64_t was = 0;
		/* A process born since waited all its life within the span. */
		for (size_t j = 0; j < before->n; j++)
			if (before->pids[j] == now.pids[i])
				was = before->waited[j];
		if (now.waited[i] > was && now.waited[i] - was > longest)
			longest = now.waited[i] - was;
	}
	return (now.own > before->own ? now.own - before->own : 0) + longest;
}

/* --- echod status --- */

bool
status_json_total(const char *json, const char *key, unsigned long long *ret)
{
	char needle[64];
	const char *p = strstr(json, "\"processes\":");

	snprintf(needle, sizeof(needle), "\"%s\":", key);
	p = p ? strstr(p, needle) : NULL;
	if (!p)
		return false;
	*ret = strtoull(p + strlen(needle), NULL, 10);
	return true;
}

bool
echod_status_total(const char *runtime_dir, const char *key, unsigned long long *ret)
{
	const char *args[] = {"status", "--runtime-dir", runtime_dir, "--json", NULL};
	struct echod s;
	int status;

	memset(&s, 0, sizeof(s));
	status = echod_run(&s, args, 10000);
	if (status == 0 && status_json_total(s.out, key, ret))
		return true;
	fprintf(stderr, "# echod status --json (exit status %d) gave no \"%s\": %s\n", status,
		key, s.out);
	return false;
}

/* --- a journal of the test's own --- */

int
harness_private_journal(void)
{
	struct sockaddr_un un = {.sun_family = AF_UNIX,
				 .sun_path = "/run/systemd/journal/socket"};
	int fd;

	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    (mkdir("/run/systemd", 0755) < 0 && errno != EEXIST) ||
	    mount("tmpfs", "/run/systemd", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0 ||
	    mkdir("/run/systemd/journal", 0755) < 0) {
		fprintf(stderr, "# a private /run/systemd/journal: %s\n", strerror(errno));
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0)
		return -1;
	return fd;
}

bool
harness_journal_wait(int fd, const char *needle, char *entry, size_t size, int timeout_ms)
{
	uint64_t end = monotonic_ms() + (uint64_t)timeout_ms;

	while (monotonic_ms() < end) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, 100) <= 0)
			continue;
		n = recv(fd, entry, size - 1, 0);
		if (n <= 0)
			continue;
		entry[n] = '\0';
		const char *m = strstr(entry, "MESSAGE=");
		if (m && strstr(m, needle))
			return true;
	}
	return false;
}

bool
harness_journal_connection(int journal, int client, char *entry, size_t size, int timeout_ms)
{
	struct sockaddr_in local;
	socklen_t len = sizeof(local);
	char peer[64], field[96];

	if (getsockname(client, (struct sockaddr *)&local, &len) < 0)
		return false;
	snprintf(peer, sizeof(peer), "127.0.0.1:%d", ntohs(local.sin_port));
	snprintf(field, sizeof(field), "connection from %s", peer);
	if (!harness_journal_wait(journal, field, entry, size, timeout_ms)) {
		fprintf(stderr, "# no journal entry \"%s\"\n", field);
		return false;
	}
	snprintf(field, sizeof(field), "ECHOD_PEER=%s", peer);
	return harness_journal_has(entry, field);
}

bool
harness_journal_has(const char *entry, const char *field)
{
	char line[128];

	snprintf(line, sizeof(line), "\n%s\n", field);
	if (strstr(entry, line) || strncmp(entry, field, strlen(field)) == 0)
		return true;
	fprintf(stderr, "# journal entry lacks %s:\n%s\n", field, entry);
	return false;
}
