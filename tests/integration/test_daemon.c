/* The daemon's behaviour that does not depend on the model: command line
 * and configuration errors, one-shot commands, respawn back-off,
 * per-connection (Accept=yes and inetd) mode, logging, several listeners
 * and socket activation with several sockets. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <poll.h>
#include <pwd.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#define DEFAULT_CONFIG "/etc/echod/echod.conf"

/* ---- helpers ---- */

/* Hides an installed configuration from the echod this test starts: from
 * here on, the test and its children see an empty tmpfs on the directory
 * of DEFAULT_CONFIG, in a mount namespace of their own (nothing outside
 * the test sees it). Needs root; false when it cannot be done. */
static bool
hide_default_config(void)
{
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", "/etc/echod", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0) {
		print_message("# hiding %s: %s\n", DEFAULT_CONFIG, strerror(errno));
		return false;
	}
	return access(DEFAULT_CONFIG, F_OK) < 0;
}

/* Waits until pid has exactly n children. When pid is the test itself,
 * its dead children are reaped on the way: as a subreaper it inherits
 * whatever echod leaves behind, so "no children" means "nothing left". */
static bool
wait_children(pid_t pid, size_t n, int timeout_ms)
{
	uint64_t end = monotonic_ms() + (uint64_t)timeout_ms;
	pid_t kids[256];

	for (;;) {
		if (pid == getpid())
			while (waitpid(-1, NULL, WNOHANG) > 0)
				;
		if (process_children(pid, kids, 256) == n)
			return true;
		if (monotonic_ms() >= end)
			return false;
		usleep(20000);
	}
}

static bool
nothing_left_behind(void)
{
	return wait_children(getpid(), 0, 3000);
}

/* The environment entries that preload into echod the test shim whose
 * path the variable var holds (set by meson). */
struct preload {
	char ld_preload[PATH_MAX + 16];
	char asan_options[512];
};

static void
preload_shim(struct preload *p, const char *var)
{
	const char *shim = getenv(var);
	const char *asan = getenv("ASAN_OPTIONS");

	if (!shim)
		fail_msg("%s (the path of a test shim to preload) is not set", var);
	snprintf(p->ld_preload, sizeof(p->ld_preload), "LD_PRELOAD=%s", shim);
	/* A sanitized echod wants its runtime first among the libraries;
	 * the shim comes first here on purpose. */
	snprintf(p->asan_options, sizeof(p->asan_options),
		 "ASAN_OPTIONS=verify_asan_link_order=0%s%s", asan ? ":" : "", asan ? asan : "");
}

static unsigned
count_lines(const char *s)
{
	unsigned n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* Writes a temporary configuration file; path gets its name. */
static void
write_config(char *path, size_t size, const char *text)
{
	int fd;

	snprintf(path, size, "/tmp/echod-test-XXXXXX.conf");
	fd = mkstemps(path, 5);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static void
unix_path(char *path, size_t size, const char *tag)
{
	snprintf(path, size, "/tmp/echod-test-%d-%s.sock", (int)getpid(), tag);
	unlink(path);
}

/* A listening socket of our own on 127.0.0.1:port, or -1. */
static int
tcp_listen(int port)
{
	struct sockaddr_in sin = {
	    .sin_family = AF_INET,
	    .sin_port = htons((uint16_t)port),
	    .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(fd, 8) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void
assert_echoes(int fd, size_t len, unsigned seed)
{
	char *buf = malloc(len);

	assert_true(fd >= 0);
	fill_random(buf, len, seed);
	assert_int_equal(echo_roundtrip(fd, buf, len, 10000), 0);
	free(buf);
}

static bool
is_echod(pid_t pid)
{
	char link[64], exe[PATH_MAX], want[PATH_MAX];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/%d/exe", (int)pid);
	n = readlink(link, exe, sizeof(exe) - 1);
	if (n < 0 || !realpath(getenv("ECHOD_BINARY"), want))
		return false;
	exe[n] = '\0';
	return strcmp(exe, want) == 0;
}

/* Runs echod with args and expects a usage or configuration error: exit
 * status 2, nothing on stdout, one line on stderr containing every
 * string of want. */
static void
expect_bad_usage(const char *const *args, const char *const *want)
{
	struct echod e;
	int status = echod_run(&e, args, 5000);

	print_comment(e.log);
	assert_int_equal(status, 2);
	assert_int_equal(e.out_len, 0);
	assert_int_equal(count_lines(e.log), 1);
	assert_non_null(strstr(e.log, "err: "));
	for (const char *const *w = want; *w; w++)
		if (!strstr(e.log, *w))
			fail_msg("\"%s\" not in: %s", *w, e.log);
	assert_true(nothing_left_behind());
}

/* ---- bad command line and configuration ---- */

static void
test_bad_command_line(void **state)
{
	static const struct {
		const char *args[6];
		const char *want[4];
	} cases[] = {
	    {{"--config", "/dev/null", "--bogus"}, {"unknown option --bogus"}},
	    {{"--config", "/dev/null", "-x"}, {"unknown option -x"}},
	    {{"--config", "/dev/null", "--workers"}, {"--workers", "needs a value"}},
	    {{"--config", "/dev/null", "-w"}, {"-w", "needs a value"}},
	    {{"--config", "/dev/null", "--version=1"}, {"--version", "takes no value"}},
	    {{"--config", "/dev/null", "stray"}, {"unexpected argument", "stray"}},
	    {{"--config", "/dev/null", "--workers", "abc"}, {"--workers", "Workers=abc"}},
	    {{"--config", "/dev/null", "--workers", "0"}, {"--workers", "Workers=0", "range"}},
	    {{"--config", "/dev/null", "--model", "bogus"}, {"--model", "Model=bogus"}},
	    {{"--config", "/dev/null", "--log-level", "loud"}, {"--log-level", "LogLevel=loud"}},
	    {{"--config", "/dev/null", "--idle-timeout", "-1"}, {"--idle-timeout", "=-1"}},
	    {{"--config", "/dev/null", "--listen", "127.0.0.1"}, {"--listen", "127.0.0.1"}},
	    {{"-c", "/nonexistent"}, {"/nonexistent", "No such file"}},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_bad_usage(cases[i].args, cases[i].want);
}

static void
test_bad_config_file(void **state)
{
	static const struct {
		const char *text;
		const char *where; /* ":LINE: ..." after the file name */
		const char *want;
	} cases[] = {
	    {"[echod]\nWorkers=2\nBogus=1\n", ":3: ", "unknown key \"Bogus\""},
	    {"# comment\n[echod]\nWorkers=abc\n", ":3: ", "Workers=abc"},
	    {"[echod]\nIdleTimeoutSec=1x\n", ":2: ", "IdleTimeoutSec=1x"},
	    {"Workers=2\n[echod]\n", ":1: ", "outside of the [echod] section"},
	    {"[echod]\nWorkers=2\n[other]\nModel=fork\n", ":4: ", "[other]"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char path[64], where[128];

		write_config(path, sizeof(path), cases[i].text);
		snprintf(where, sizeof(where), "%s%s", path, cases[i].where);
		expect_bad_usage((const char *[]){"-c", path, "--listen", "127.0.0.1:7", NULL},
				 (const char *[]){where, cases[i].want, NULL});
		/* --check-config says the same, the same way. */
		expect_bad_usage((const char *[]){"-c", path, "--check-config", NULL},
				 (const char *[]){where, cases[i].want, NULL});
		unlink(path);
	}
}

static void
test_no_sockets_exits_1(void **state)
{
	struct echod e;

	/* No LISTEN_FDS, no --listen, stdin is /dev/null. */
	assert_null(getenv("LISTEN_FDS"));
	assert_int_equal(echod_run(&e, (const char *[]){"--config", "/dev/null", NULL}, 5000), 1);
	assert_int_equal(count_lines(e.log), 1);
	assert_non_null(strstr(e.log, "no sockets"));
	assert_true(nothing_left_behind());
}

static void
test_address_in_use_exits_1(void **state)
{
	char listen[128], sock[108], want[64];
	int port = free_port();
	int busy = tcp_listen(port);
	struct echod e;

	assert_true(busy >= 0);
	unix_path(sock, sizeof(sock), "inuse");
	snprintf(listen, sizeof(listen), "unix:%s", sock);
	snprintf(want, sizeof(want), "127.0.0.1:%d", port);
	/* The first address binds, the second cannot: nothing half-started. */
	assert_int_equal(echod_run(&e,
				   (const char *[]){"--config", "/dev/null", "--listen", listen,
						    "--listen", want, NULL},
				   5000),
			 1);
	print_comment(e.log);
	assert_int_equal(count_lines(e.log), 1);
	assert_non_null(strstr(e.log, want));
	assert_non_null(strstr(e.log, "in use"));
	assert_int_equal(access(sock, F_OK), -1);
	assert_true(nothing_left_behind());
	close(busy);
}

/* Metrics asked for on a system without libmicrohttpd (a Recommends: of
 * the package, loaded only then): exit 1 naming the library and the
 * package, with neither the echo nor the metrics address left bound. */
static void
test_metrics_without_libmicrohttpd_exits_1(void **state)
{
	static struct preload preload;
	char listen[64], metrics[64];
	int port = free_port(), metrics_port = free_port();
	struct echod e;
	int probe;

	preload_shim(&preload, "ECHOD_NO_MICROHTTPD");
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(metrics, sizeof(metrics), "127.0.0.1:%d", metrics_port);
	echod_spawn(&e, (const char *[]){preload.ld_preload, preload.asan_options, NULL},
		    (const char *[]){"--config", "/dev/null", "--listen", listen, "--metrics-listen",
				     metrics, NULL},
		    -1);
	assert_int_equal(echod_wait_exit(&e, 5000), 1);
	echod_collect_log(&e);
	print_comment(e.log);
	assert_non_null(strstr(e.log, "cannot load libmicrohttpd.so.12"));
	assert_non_null(strstr(e.log, "apt install libmicrohttpd12"));
	assert_non_null(strstr(e.log, "cannot open shared object file"));
	/* Nothing half-started: both ports are free again. */
	probe = tcp_listen(port);
	assert_true(probe >= 0);
	close(probe);
	probe = tcp_listen(metrics_port);
	assert_true(probe >= 0);
	close(probe);
	assert_true(nothing_left_behind());
}

/* ---- one-shot commands ---- */

static void
test_help_and_version_on_stdout(void **state)
{
	struct echod e;

	assert_int_equal(echod_run(&e, (const char *[]){"--help", NULL}, 5000), 0);
	assert_int_equal(e.log_len, 0);
	assert_non_null(strstr(e.out, "Usage: echod"));
	assert_non_null(strstr(e.out, "--listen"));

	assert_int_equal(echod_run(&e, (const char *[]){"-h", NULL}, 5000), 0);
	assert_non_null(strstr(e.out, "Usage: echod"));

	assert_int_equal(echod_run(&e, (const char *[]){"--version", NULL}, 5000), 0);
	assert_int_equal(e.log_len, 0);
	assert_int_equal(strncmp(e.out, "echod ", 6), 0);
	assert_int_equal(count_lines(e.out), 1);
	assert_true(nothing_left_behind());
}

static void
test_check_config_binds_nothing(void **state)
{
	char path[64], text[512], sock[108];
	int port = free_port(), fd;
	struct echod e;

	unix_path(sock, sizeof(sock), "check");
	snprintf(text, sizeof(text),
		 "# a good file\n[echod]\nModel=passfd\nWorkers=2\nListen=127.0.0.1:%d\n"
		 "Listen=unix:%s\nIdleTimeoutSec=0\n",
		 port, sock);
	write_config(path, sizeof(path), text);
	assert_int_equal(echod_run(&e, (const char *[]){"-c", path, "--check-config", NULL}, 5000),
			 0);
	print_comment(e.out);
	assert_non_null(strstr(e.out, "OK"));
	assert_int_equal(e.log_len, 0);
	/* Nothing was bound: the port and the path are still free. */
	fd = tcp_listen(port);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(access(sock, F_OK), -1);
	assert_true(nothing_left_behind());
	unlink(path);
}

/* --check-config names the file it read and says what the keys will not
 * do: a capped MaxConnections=, the keys socket activation ignores, and
 * the pool keys fork does not use; --dump-config prints the effective
 * configuration as a file, which reads back. */
static void
test_check_config_explains(void **state)
{
	char path[64], dumped[64];
	struct echod e;

	write_config(path, sizeof(path),
		     "[echod]\nWorkers=2\nWorkerConnections=10\nMaxConnections=50\n"
		     "Listen=127.0.0.1:7\n");
	assert_int_equal(echod_run(&e, (const char *[]){"-c", path, "--check-config", NULL}, 5000),
			 0);
	print_comment(e.out);
	assert_int_equal(e.log_len, 0);
	assert_non_null(strstr(e.out, "configuration file: "));
	assert_non_null(strstr(e.out, path));
	assert_non_null(strstr(e.out, "up to 20 connection(s)"));
	assert_non_null(strstr(e.out, "MaxConnections=50 is more than Workers x WorkerConnections "
				      "(2 x 10): capped at 20"));
	assert_non_null(strstr(e.out, "under socket activation (echod.socket) these are ignored: "
				      "Listen= (1 address)"));

	assert_int_equal(echod_run(&e, (const char *[]){"-c", path, "-m", "fork", "-w", "4",
							 "--check-config", NULL},
				   5000),
			 0);
	assert_non_null(strstr(e.out, "fork model, up to 50 connection process(es)"));
	assert_null(strstr(e.out, "worker(s)"));
	assert_non_null(strstr(e.out, "Model=fork runs no worker pool"));

	assert_int_equal(echod_run(&e, (const char *[]){"-c", path, "--idle-timeout", "7",
							 "--dump-config", NULL},
				   5000),
			 0);
	assert_int_equal(e.log_len, 0);
	assert_non_null(strstr(e.out, "\nIdleTimeoutSec=7\n"));
	assert_non_null(strstr(e.out, "\nMaxConnections=50\n# in effect: 20"));
	write_config(dumped, sizeof(dumped), e.out);
	assert_int_equal(echod_run(&e, (const char *[]){"-c", dumped, "--dump-config", NULL}, 5000),
			 0);
	assert_non_null(strstr(e.out, "\nIdleTimeoutSec=7\n"));
	assert_non_null(strstr(e.out, "\nListen=127.0.0.1:7\n"));
	unlink(dumped);
	unlink(path);
	assert_true(nothing_left_behind());
}

/* At start the cap is logged, as is what sockets from systemd make void. */
static void
test_start_logs_caps_and_ignored_keys(void **state)
{
	char other[64];
	struct echod e;

	echod_start(&e, (const char *[]){"--workers", "1", "--worker-connections", "8",
					 "--max-connections", "100", NULL});
	assert_true(echod_wait_log(&e, "MaxConnections=100 is more than Workers x "
				      "WorkerConnections (1 x 8): capped at 8", 2000));
	assert_int_equal(echod_stop(&e, 10000), 0);

	snprintf(other, sizeof(other), "127.0.0.1:%d", free_port());
	echod_start_activated(&e, NULL, (const char *[]){"--workers", "1", "--listen", other, NULL});
	assert_true(echod_wait_log(&e, "sockets come from systemd: ignored: Listen= (1 address)",
				   2000));
	assert_int_equal(echod_stop(&e, 10000), 0);
	assert_true(nothing_left_behind());
}

static void
test_default_config_may_be_missing(void **state)
{
	char listen[64];
	struct echod e;
	int port = free_port();

	/* An empty file is a valid configuration. */
	assert_int_equal(
	    echod_run(&e, (const char *[]){"-c", "/dev/null", "--check-config", NULL}, 5000), 0);
	if (access(DEFAULT_CONFIG, F_OK) == 0 && !hide_default_config()) {
		print_message("# %s exists on this machine: cannot test its absence\n",
			      DEFAULT_CONFIG);
		skip();
	}
	assert_int_equal(echod_run(&e, (const char *[]){"--check-config", NULL}, 5000), 0);
	assert_int_equal(e.log_len, 0);
	assert_non_null(strstr(e.out, "configuration file: no file: defaults"));

	/* And it really starts without one. */
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	echod_spawn(&e, NULL, (const char *[]){"--listen", listen, "--workers", "1", NULL}, -1);
	assert_true(echod_wait_log(&e, "ready", 10000));
	assert_true(tcp_wait_accepting(port, 5000));
	int fd = tcp_connect(port);
	assert_echoes(fd, 1000, 1);
	close(fd);
	assert_int_equal(echod_stop(&e, 10000), 0);
	assert_true(nothing_left_behind());
}

static void
test_command_line_wins_over_file(void **state)
{
	char path[64];
	pid_t kids[16];
	struct echod e;

	write_config(path, sizeof(path), "[echod]\nWorkers=3\n");
	/* The file is read... */
	echod_start(&e, (const char *[]){"-c", path, NULL});
	assert_int_equal(process_children(e.pid, kids, 16), 3);
	assert_int_equal(echod_stop(&e, 10000), 0);
	/* ...and the command line wins over it. */
	echod_start(&e, (const char *[]){"-c", path, "--workers", "1", NULL});
	assert_int_equal(process_children(e.pid, kids, 16), 1);
	assert_true(is_echod(kids[0]));
	assert_int_equal(echod_stop(&e, 10000), 0);
	assert_true(nothing_left_behind());
	unlink(path);
}

/* ---- respawn back-off ---- */

/* echod with one worker on listen, whose workers fail at start-up through
 * the fail-workers shim: all of them, or (first not NULL) the first ones,
 * counted in the file counter. */
static void
spawn_failing_workers(struct echod *e, const char *listen, const char *first,
		      const char *counter)
{
	static struct preload preload;
	static char first_env[64], counter_env[PATH_MAX + 32];

	preload_shim(&preload, "ECHOD_FAIL_WORKERS");
	snprintf(first_env, sizeof(first_env), "FAIL_WORKERS_FIRST=%s", first ? first : "");
	snprintf(counter_env, sizeof(counter_env), "FAIL_WORKERS_COUNTER=%s",
		 counter ? counter : "");
	echod_spawn(
	    e,
	    (const char *[]){preload.ld_preload, preload.asan_options, first ? first_env : NULL,
			     counter_env, NULL},
	    (const char *[]){"--listen", listen, "--config", "/dev/null", "--workers", "1", NULL},
	    -1);
}

static void
test_respawn_backoff(void **state)
{
	static const char fail_line[] = "setting up the event loop";
	static const char restart[] = "restarting it in ";
	char listen[64];
	unsigned delays[32], n = 0, deaths;
	struct echod e;
	uint64_t start;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", free_port());
	start = monotonic_ms();
	spawn_failing_workers(&e, listen, NULL, NULL);
	/* 100 + 200 + 400 ms: the third delay is announced well within 4 s. */
	assert_true(echod_wait_log(&e, "restarting it in 400 ms", 4000));
	while (monotonic_ms() < start + 2000)
		usleep(20000);
	deaths = echod_log_count(&e, fail_line);
	print_message("# %u worker deaths in 2 s\n", deaths);
	/* A fork loop would make thousands. */
	assert_true(deaths >= 3 && deaths <= 8);

	for (const char *p = e.log; n < 32 && (p = strstr(p, restart)); p += strlen(restart))
		if (sscanf(p + strlen(restart), "%u ms", &delays[n]) == 1)
			n++;
	assert_true(n >= 3);
	for (unsigned i = 1; i < n; i++)
		if (delays[i] <= delays[i - 1])
			fail_msg("delay %u ms after %u ms: not growing", delays[i], delays[i - 1]);
	/* A pool that never came up is never announced as ready. */
	assert_int_equal(echod_log_count(&e, "ready"), 0);

	assert_int_equal(echod_stop(&e, 5000), 0);
	assert_true(nothing_left_behind());
}

/* The back-off is for a position that keeps failing to start: once a
 * worker there has started, its death (a crash, a kill) is replaced at
 * once, and a later failure to start backs off from 100 ms again. */
static void
test_respawn_backoff_resets(void **state)
{
	char listen[64], counter[64];
	pid_t kids[4], first, next = 0;
	struct echod e;
	int port = free_port(), fd;
	uint64_t end;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(counter, sizeof(counter), "/tmp/echod-test-failing-%d", (int)getpid());
	unlink(counter);
	spawn_failing_workers(&e, listen, "3", counter);
	/* 100 + 200 + 400 ms, then the fourth starts. */
	assert_true(echod_wait_log(&e, "restarting it in 400 ms", 4000));
	assert_true(echod_wait_log(&e, "worker 0: restarted", 4000));
	assert_true(tcp_wait_accepting(port, 5000));
	fd = tcp_connect(port);
	assert_int_equal(echo_roundtrip(fd, "up", 2, 3000), 0);
	close(fd);
	assert_int_equal(process_children(e.pid, kids, 4), 1);
	first = kids[0];

	kill(first, SIGKILL);
	end = monotonic_ms() + 2000;
	while (monotonic_ms() < end) {
		if (process_children(e.pid, kids, 4) == 1 && kids[0] != first) {
			next = kids[0];
			break;
		}
		usleep(10000);
	}
	assert_true(next > 0);
	fd = tcp_connect(port);
	assert_int_equal(echo_roundtrip(fd, "again", 5, 3000), 0);
	close(fd);
	/* Replaced at once: no fourth back-off announced. */
	assert_int_equal(echod_log_count(&e, "restarting it in "), 3);
	assert_int_equal(echod_stop(&e, 5000), 0);
	unlink(counter);
	assert_true(nothing_left_behind());
}

/* ---- signals and one-shot commands ---- */

/* SIGINT (Ctrl-C on a terminal) stops echod as SIGTERM does: no new
 * connection, the open ones finish, exit 0. */
static void
test_sigint_drains(void **state)
{
	struct echod e;
	int fd, late;

	echod_start(&e, (const char *[]){"--workers", "1", NULL});
	fd = tcp_connect(e.port);
	assert_true(fd >= 0);
	assert_int_equal(echo_roundtrip(fd, "before", 6, 3000), 0);
	kill(e.pid, SIGINT);
	assert_true(echod_wait_log(&e, "SIGINT: stopping", 3000));
	/* The open connection is still served, and nothing new is taken. */
	assert_int_equal(echo_roundtrip(fd, "during", 6, 3000), 0);
	late = tcp_connect(e.port);
	if (late >= 0) {
		assert_int_not_equal(echo_roundtrip(late, "late", 4, 500), 0);
		close(late);
	}
	close(fd);
	assert_int_equal(echod_wait_exit(&e, 10000), 0);
	assert_true(nothing_left_behind());
}

/* A second SIGINT during the drain is a fast stop: the open connection is
 * closed at once, long before ShutdownTimeoutSec=, and echod exits 0. */
static void
test_second_sigint_fast_stop(void **state)
{
	char buf[16];
	struct echod e;
	uint64_t start;
	int fd;

	echod_start(&e, (const char *[]){"--workers", "1", "--shutdown-timeout", "60", NULL});
	fd = tcp_connect(e.port);
	assert_true(fd >= 0);
	assert_int_equal(echo_roundtrip(fd, "before", 6, 3000), 0);
	kill(e.pid, SIGINT);
	assert_true(echod_wait_log(&e, "SIGINT: stopping", 3000));
	assert_int_equal(echo_roundtrip(fd, "during", 6, 3000), 0);
	start = monotonic_ms();
	kill(e.pid, SIGINT);
	assert_true(echod_wait_log(&e, "SIGINT again: fast stop, closing 1 open connection(s) now",
				   3000));
	assert_true(read_until_eof(fd, buf, sizeof(buf), 5000) >= 0);
	close(fd);
	assert_int_equal(echod_wait_exit(&e, 5000), 0);
	assert_true(monotonic_ms() - start < 5000);
	assert_true(nothing_left_behind());
}

/* Reads "Uid:" or "Gid:" (real, effective, saved, fs) of pid. */
static bool
process_ids(pid_t pid, const char *field, unsigned ids[4])
{
	char path[64], line[256];
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strncmp(line, field, strlen(field)) == 0 &&
			sscanf(line + strlen(field), "%u %u %u %u", &ids[0], &ids[1], &ids[2],
			       &ids[3]) == 4;
	fclose(f);
	return found;
}

/* User=/--user: started as root, echod binds, then the supervisor and so
 * every worker run as that user, with its group, for good. An unknown user
 * is a configuration error (2). */
static void
test_user_drops_root(void **state)
{
	struct passwd *pw = getpwnam("nobody");
	unsigned ids[4];
	pid_t kids[8];
	struct echod e;
	size_t n;
	int fd;

	assert_int_equal(echod_run(&e, (const char *[]){"--user", "no-such-user-echod", NULL}, 5000),
			 2);
	echod_collect_log(&e);
	assert_non_null(strstr(e.log, "--user: User=no-such-user-echod: no such user"));
	if (geteuid() != 0 || !pw) {
		print_message("# not root, or no user nobody: cannot test dropping root\n");
		skip();
	}
	/* Port 7 would need root to bind: a low port shows the order. */
	echod_start(&e, (const char *[]){"--workers", "2", "--user", "nobody", NULL});
	assert_true(echod_wait_log(&e, "running as user nobody", 3000));
	fd = tcp_connect(e.port);
	assert_int_equal(echo_roundtrip(fd, "as nobody", 9, 3000), 0);
	close(fd);
	assert_true(process_ids(e.pid, "Uid:", ids));
	for (int i = 0; i < 4; i++)
		assert_int_equal(ids[i], pw->pw_uid);
	assert_true(process_ids(e.pid, "Gid:", ids));
	for (int i = 0; i < 4; i++)
		assert_int_equal(ids[i], pw->pw_gid);
	n = process_children(e.pid, kids, 8);
	assert_int_equal(n, 2);
	for (size_t k = 0; k < n; k++) {
		assert_true(process_ids(kids[k], "Uid:", ids));
		assert_int_equal(ids[0], pw->pw_uid);
		assert_int_equal(ids[2], pw->pw_uid);
	}
	assert_int_equal(echod_stop(&e, 10000), 0);
	assert_true(nothing_left_behind());
}

/* /proc/PID/cmdline up to its first NUL, and /proc/PID/comm; false for a
 * process gone (or a zombie: it has no command line). */
static bool
read_title(pid_t pid, char *title, size_t size, char *comm, size_t comm_size)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, title, size - 1);
	close(fd);
	if (n <= 0)
		return false;
	title[n] = '\0';
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, comm, comm_size - 1);
	close(fd);
	if (n <= 0)
		return false;
	comm[n] = '\0';
	comm[strcspn(comm, "\n")] = '\0';
	return true;
}

static void
process_title(pid_t pid, char *title, size_t size, char *comm, size_t comm_size)
{
	if (!read_title(pid, title, size, comm, comm_size))
		fail_msg("pid %d: no command line", (int)pid);
}

/* Process titles tell the processes apart in ps and top, as nginx's do:
 * the supervisor (model, generation, which a reload raises), each worker,
 * and fork's connection processes with their client. The supervisor's
 * comm stays "echod"; MAINPID is untouched (a title is not a process). */
static void
test_process_titles(void **state)
{
	char title[256], comm[32], want[128];
	struct sockaddr_in local;
	socklen_t len = sizeof(local);
	pid_t kids[8];
	struct echod e;
	size_t n;
	int fd;

	echod_start(&e, (const char *[]){"-m", "prefork", "--workers", "2", NULL});
	process_title(e.pid, title, sizeof(title), comm, sizeof(comm));
	assert_string_equal(title, "echod: supervisor (prefork, generation 0)");
	assert_string_equal(comm, "echod");
	n = process_children(e.pid, kids, 8);
	assert_int_equal(n, 2);
	for (size_t i = 0; i < n; i++) {
		process_title(kids[i], title, sizeof(title), comm, sizeof(comm));
		if (strcmp(title, "echod: worker 0") != 0 && strcmp(title, "echod: worker 1") != 0)
			fail_msg("worker title: \"%s\"", title);
		assert_string_equal(comm, "echod worker");
	}
	/* The options still work after their memory was taken for titles. */
	kill(e.pid, SIGHUP);
	assert_true(echod_wait_log(&e, "generation 1", 5000));
	process_title(e.pid, title, sizeof(title), comm, sizeof(comm));
	assert_string_equal(title, "echod: supervisor (prefork, generation 1)");
	fd = tcp_connect(e.port);
	assert_int_equal(echo_roundtrip(fd, "titled", 6, 3000), 0);
	close(fd);
	assert_int_equal(echod_stop(&e, 10000), 0);

	echod_start(&e, (const char *[]){"-m", "fork", NULL});
	fd = tcp_connect(e.port);
	assert_int_equal(echo_roundtrip(fd, "titled", 6, 3000), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&local, &len), 0);
	snprintf(want, sizeof(want), "echod: connection 127.0.0.1:%u", ntohs(local.sin_port));
	n = process_children(e.pid, kids, 8);
	assert_true(n >= 1);
	for (size_t i = 0; i < n; i++) {
		if (!read_title(kids[i], title, sizeof(title), comm, sizeof(comm)))
			continue;
		print_message("# fork child %d: %s (%s)\n", (int)kids[i], title, comm);
		if (strcmp(title, want) == 0)
			break;
	}
	assert_string_equal(title, want);
	assert_string_equal(comm, "echod conn");
	process_title(e.pid, title, sizeof(title), comm, sizeof(comm));
	assert_string_equal(title, "echod: supervisor (fork, generation 0)");
	close(fd);
	assert_int_equal(echod_stop(&e, 10000), 0);
	assert_true(nothing_left_behind());
}

/* --before-stop PID runs from ExecStop=: it never fails the stop. A bad
 * PID is a usage error (2); with no systemd to ask (an unreachable bus)
 * it says so, exits 0, and leaves echod to drain. */
static void
test_before_stop(void **state)
{
	static const char *const bad[] = {"0", "1", "abc", "12x", "-5"};
	char pid[32];
	struct echod e, one;
	int fd;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(echod_run(&one, (const char *[]){"--before-stop", bad[i], NULL}, 5000),
				 2);
		echod_collect_log(&one);
		if (!strstr(one.log, "not a process id"))
			fail_msg("--before-stop %s: %s", bad[i], one.log);
	}

	echod_start(&e, (const char *[]){"--workers", "1", NULL});
	fd = tcp_connect(e.port);
	assert_int_equal(echo_roundtrip(fd, "held", 4, 3000), 0);
	snprintf(pid, sizeof(pid), "%d", (int)e.pid);
	echod_spawn(&one, (const char *[]){"DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent/bus", NULL},
		    (const char *[]){"--before-stop", pid, NULL}, -1);
	assert_int_equal(echod_wait_exit(&one, 10000), 0);
	echod_collect_log(&one);
	if (!strstr(one.log, "cannot ask systemd whether this is a restart"))
		fail_msg("--before-stop with no bus: %s", one.log);
	/* Told nothing: the stop drains, the connection is not kept. */
	kill(e.pid, SIGTERM);
	assert_true(echod_wait_log(&e, "SIGTERM: stopping; open connections get", 3000));
	assert_int_equal(echo_roundtrip(fd, "still", 5, 3000), 0);
	close(fd);
	assert_int_equal(echod_wait_exit(&e, 10000), 0);
	assert_int_equal(echod_log_count(&e, "fd store"), 0);
	assert_true(nothing_left_behind());
}

/* ---- per-connection mode ---- */

static void
test_accept_mode(void **state)
{
	pid_t kids[16], first;
	struct echod e;
	int a, b;

	echod_start_activated(&e, (const char *[]){"--accept", NULL}, NULL);

	/* In sequence: one echod each, gone when its client closes. (The
	 * counts are waited for, not sampled: the harness's probe connection
	 * has an echod of its own for a moment.) */
	a = tcp_connect(e.port);
	assert_echoes(a, 100000, 1);
	assert_true(wait_children(e.pid, 1, 3000));
	assert_int_equal(process_children(e.pid, kids, 16), 1);
	assert_true(is_echod(kids[0]));
	first = kids[0];
	close(a);
	assert_true(wait_children(e.pid, 0, 3000));
	b = tcp_connect(e.port);
	assert_echoes(b, 100000, 2);
	assert_true(wait_children(e.pid, 1, 3000));
	assert_int_equal(process_children(e.pid, kids, 16), 1);
	assert_true(is_echod(kids[0]));
	assert_true(kids[0] != first);
	close(b);
	assert_true(wait_children(e.pid, 0, 3000));

	/* At once: two processes, each serving its own client. */
	a = tcp_connect(e.port);
	b = tcp_connect(e.port);
	assert_echoes(a, 5000, 3);
	assert_echoes(b, 5000, 4);
	assert_echoes(a, 70000, 5);
	assert_true(wait_children(e.pid, 2, 3000));
	assert_int_equal(process_children(e.pid, kids, 16), 2);
	assert_true(is_echod(kids[0]) && is_echod(kids[1]));
	close(a);
	assert_true(wait_children(e.pid, 1, 3000));
	assert_echoes(b, 70000, 6);
	close(b);
	assert_true(wait_children(e.pid, 0, 3000));

	assert_true(echod_stop(&e, 5000) >= 0);
	assert_true(nothing_left_behind());
}

static void
test_accept_mode_idle_timeout(void **state)
{
	struct echod e;
	char buf[16];
	uint64_t start, took;
	int fd;

	echod_start_activated(&e, (const char *[]){"--accept", NULL},
			      (const char *[]){"--idle-timeout", "1", NULL});
	fd = tcp_connect(e.port);
	assert_echoes(fd, 4, 1);
	start = monotonic_ms();
	assert_int_equal(read_until_eof(fd, buf, sizeof(buf), 5000), 0);
	took = monotonic_ms() - start;
	print_message("# closed after %lu ms idle\n", (unsigned long)took);
	assert_true(took >= 800 && took < 3000);
	close(fd);
	assert_true(wait_children(e.pid, 0, 3000));
	assert_true(echod_stop(&e, 5000) >= 0);
	assert_true(nothing_left_behind());
}

/* inetd's StandardInput=socket: the connection is stdin. */
static void
test_inetd_stdin_socket(void **state)
{
	char out[300000], back[300001];
	pid_t kids[4];
	struct echod e;
	size_t sent = 0, got = 0;
	ssize_t rest;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	echod_spawn(&e, NULL, (const char *[]){"--config", "/dev/null", NULL}, sv[1]);
	close(sv[1]);
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
	assert_echoes(sv[0], 1000, 1);
	/* It serves the connection itself: no workers. */
	assert_int_equal(process_children(e.pid, kids, 4), 0);

	/* Everything sent, our side shut while echoes are still owed: all of
	 * them arrive, then EOF, then echod exits 0. */
	fill_random(out, sizeof(out), 2);
	uint64_t end = monotonic_ms() + 10000;
	while (sent < sizeof(out) && monotonic_ms() < end) {
		ssize_t n =
		    send(sv[0], out + sent, sizeof(out) - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0)
			sent += (size_t)n;
		ssize_t m = recv(sv[0], back + got, sizeof(back) - got, MSG_DONTWAIT);
		if (m > 0)
			got += (size_t)m;
	}
	assert_int_equal(sent, sizeof(out));
	assert_int_equal(shutdown(sv[0], SHUT_WR), 0);
	rest = read_until_eof(sv[0], back + got, sizeof(back) - got, 10000);
	assert_true(rest >= 0);
	assert_int_equal(got + (size_t)rest, sizeof(out));
	assert_memory_equal(back, out, sizeof(out));
	assert_int_equal(echod_wait_exit(&e, 5000), 0);
	close(sv[0]);
	assert_true(nothing_left_behind());
}

/* ---- logging ---- */

static void
test_log_level_debug_logs_connections(void **state)
{
	struct echod e;
	int fd;

	echod_start(&e, (const char *[]){"--workers", "1", "--log-level", "debug", NULL});
	fd = tcp_connect(e.port);
	assert_echoes(fd, 100, 1);
	close(fd);
	assert_true(echod_wait_log(&e, "connection from 127.0.0.1:", 3000));
	assert_int_equal(echod_stop(&e, 10000), 0);
	assert_true(nothing_left_behind());
}

static void
test_log_level_warning_is_quiet(void **state)
{
	char listen[64];
	struct echod e;
	int port = free_port(), fd;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	echod_spawn(&e, NULL,
		    (const char *[]){"--listen", listen, "--config", "/dev/null", "--workers", "1",
				     "--log-level", "warning", NULL},
		    -1);
	assert_true(tcp_wait_accepting(port, 10000));
	fd = tcp_connect(port);
	assert_echoes(fd, 100, 1);
	close(fd);
	assert_int_equal(echod_stop(&e, 10000), 0);
	/* Start, serve, stop: nothing worth a warning happened. */
	assert_null(strstr(e.log, "listening on"));
	assert_int_equal(e.log_len, 0);
	assert_true(nothing_left_behind());
}

static void
test_journal_stream_not_stderr(void **state)
{
	struct echod e;
	int fd;

	/* JOURNAL_STREAM names some other stream: stderr (our pipe) still
	 * gets plain lines, or the harness would never see "ready". */
	echod_start_env(&e, (const char *[]){"JOURNAL_STREAM=1:1", NULL},
			(const char *[]){"--workers", "1", NULL});
	assert_non_null(strstr(e.log, "echod["));
	assert_non_null(strstr(e.log, "listening on 127.0.0.1:"));
	fd = tcp_connect(e.port);
	assert_echoes(fd, 100, 1);
	close(fd);
	assert_int_equal(echod_stop(&e, 10000), 0);
	assert_true(nothing_left_behind());
}

/* Under systemd echod logs to the journal natively, with fields a user
 * can match on: ECHOD_MODEL=, ECHOD_WORKER= (which worker), ECHOD_PEER=
 * (which client; behind a balancer the one its PROXY header names),
 * ECHOD_PROXY= (that balancer), PRIORITY=, and MESSAGE_ID= for the
 * catalogued ones. */
static void
test_journal_fields(void **state)
{
	static const char header[] = "PROXY TCP4 192.0.2.7 127.0.0.1 4242 7\r\n";
	char listen[64], proxy_listen[64], entry[4096], field[96];
	struct sockaddr_in local;
	socklen_t len = sizeof(local);
	int journal = harness_private_journal(), port = free_port(), proxy_port = free_port(), fd;
	struct echod e;

	if (journal < 0)
		skip();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(proxy_listen, sizeof(proxy_listen), "127.0.0.1:%d", proxy_port);
	echod_spawn(&e, (const char *[]){HARNESS_JOURNAL_STREAM, NULL},
		    (const char *[]){"--listen", listen, "--proxy-listen", proxy_listen,
				     "--proxy-from", "127.0.0.1", "--config", "/dev/null",
				     "--workers", "1", "--log-level", "debug", NULL},
		    -1);
	assert_true(harness_journal_wait(journal, "listening on 127.0.0.1:", entry, sizeof(entry), 5000));
	assert_true(harness_journal_has(entry, "SYSLOG_IDENTIFIER=echod"));
	assert_true(tcp_wait_accepting(port, 5000));
	fd = tcp_connect(port);
	assert_int_equal(echo_roundtrip(fd, "journal", 7, 3000), 0);
	/* The readiness probe's connection came first: wait for ours. */
	assert_true(harness_journal_connection(journal, fd, entry, sizeof(entry), 5000));
	assert_true(harness_journal_has(entry, "ECHOD_WORKER=0"));
	assert_true(harness_journal_has(entry, "ECHOD_MODEL=prefork"));
	assert_true(harness_journal_has(entry, "PRIORITY=7"));
	close(fd);
	/* Through a balancer (the test, from 127.0.0.1): the client is the
	 * header's, the balancer a field of its own. */
	fd = tcp_connect(proxy_port);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, header, sizeof(header) - 1), (ssize_t)sizeof(header) - 1);
	assert_int_equal(echo_roundtrip(fd, "journal", 7, 3000), 0);
	len = sizeof(local);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&local, &len), 0);
	assert_true(harness_journal_wait(journal, "connection from 192.0.2.7:4242 via", entry,
				 sizeof(entry), 5000));
	assert_true(harness_journal_has(entry, "ECHOD_PEER=192.0.2.7:4242"));
	snprintf(field, sizeof(field), "ECHOD_PROXY=127.0.0.1:%d", ntohs(local.sin_port));
	assert_true(harness_journal_has(entry, field));
	close(fd);
	/* Nothing went to stderr: it is the journal's stream. */
	echod_collect_log(&e);
	assert_null(strstr(e.log, "listening on"));
	assert_int_equal(echod_stop(&e, 10000), 0);
	close(journal);
	assert_true(nothing_left_behind());
}

/* ---- several listeners ---- */

static void
test_multiple_listeners(void **state)
{
	char v6[64], sock[108], unix_listen[128];
	int port6 = free_port();
	struct echod e;
	int fd;

	snprintf(v6, sizeof(v6), "[::1]:%d", port6);
	unix_path(sock, sizeof(sock), "multi");
	snprintf(unix_listen, sizeof(unix_listen), "unix:%s", sock);
	echod_start(
	    &e, (const char *[]){"--workers", "2", "--listen", v6, "--listen", unix_listen, NULL});
	assert_int_equal(echod_log_count(&e, "listening on"), 3);

	fd = tcp_connect(e.port);
	assert_echoes(fd, 100000, 1);
	close(fd);
	fd = tcp6_connect(port6);
	assert_echoes(fd, 100000, 2);
	close(fd);
	fd = unix_connect(sock);
	assert_echoes(fd, 100000, 3);
	close(fd);

	assert_int_equal(echod_stop(&e, 10000), 0);
	/* The socket file is echod's to remove. */
	assert_int_equal(access(sock, F_OK), -1);
	assert_true(nothing_left_behind());
}

/* SocketMode=: the unix: socket file gets that mode, whatever the umask;
 * without it, the umask's (as before). Abstract sockets have no file. */
static void
test_socket_mode(void **state)
{
	char sock[108], unix_listen[128];
	struct echod e;
	struct stat st;
	mode_t was;
	int fd;

	unix_path(sock, sizeof(sock), "mode");
	snprintf(unix_listen, sizeof(unix_listen), "unix:%s", sock);
	was = umask(022);
	echod_start(&e, (const char *[]){"--workers", "1", "--listen", unix_listen,
					 "--socket-mode", "0660", NULL});
	umask(was);
	assert_int_equal(stat(sock, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0660);
	fd = unix_connect(sock);
	assert_echoes(fd, 1000, 1);
	close(fd);
	assert_int_equal(echod_stop(&e, 10000), 0);

	was = umask(077);
	echod_start(&e, (const char *[]){"--workers", "1", "--listen", unix_listen, NULL});
	umask(was);
	assert_int_equal(stat(sock, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(echod_stop(&e, 10000), 0);
	assert_true(nothing_left_behind());
}

static void
test_stale_unix_socket(void **state)
{
	char sock[108], unix_listen[128];
	struct echod e, other;
	struct stat st;
	int fd;

	unix_path(sock, sizeof(sock), "stale");
	snprintf(unix_listen, sizeof(unix_listen), "unix:%s", sock);
	echod_start(&e, (const char *[]){"--workers", "1", "--listen", unix_listen, NULL});

	/* A live socket file belongs to its server: a second echod must not
	 * take it over. */
	assert_int_equal(
	    echod_run(&other,
		      (const char *[]){"--config", "/dev/null", "--listen", unix_listen, NULL},
		      5000),
	    1);
	assert_non_null(strstr(other.log, sock));
	fd = unix_connect(sock);
	assert_echoes(fd, 1000, 1);
	close(fd);

	/* Killed: the file stays behind... */
	echod_kill(&e);
	assert_true(nothing_left_behind());
	assert_int_equal(stat(sock, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));

	/* ...and does not keep the next echod from starting. */
	echod_start(&e, (const char *[]){"--workers", "1", "--listen", unix_listen, NULL});
	fd = unix_connect(sock);
	assert_echoes(fd, 1000, 2);
	close(fd);
	assert_int_equal(echod_stop(&e, 10000), 0);
	assert_int_equal(access(sock, F_OK), -1);
	assert_true(nothing_left_behind());
}

static void
test_activation_two_sockets(void **state)
{
	char second[64];
	int port2 = free_port();
	struct echod e;
	int fd;

	snprintf(second, sizeof(second), "127.0.0.1:%d", port2);
	echod_start_activated(&e, (const char *[]){"--listen", second, NULL},
			      (const char *[]){"--workers", "2", NULL});
	assert_int_equal(echod_log_count(&e, "listening on"), 2);
	fd = tcp_connect(e.port);
	assert_echoes(fd, 100000, 1);
	close(fd);
	fd = tcp_connect(port2);
	assert_echoes(fd, 100000, 2);
	close(fd);
	assert_int_equal(echod_stop(&e, 10000), 0);
	assert_true(nothing_left_behind());
}

/* DeferAcceptSec= is for sockets echod binds: sockets from systemd keep the
 * socket unit's options, and echod says where to set it instead. */
static void
test_defer_accept_leaves_systemd_sockets_alone(void **state)
{
	struct echod e;
	int fd;

	echod_start_activated(&e, NULL, (const char *[]){"--workers", "1", "--defer-accept", "5",
							 "--log-level", "debug", NULL});
	assert_true(echod_wait_log(&e, "DeferAcceptSec= applies only to sockets echod binds "
				      "itself: set DeferAcceptSec= in the socket unit instead",
				   2000));
	/* Untouched: a connection that sends nothing is accepted at once. */
	usleep(300000);
	unsigned before = echod_log_count(&e, "connection from 127.0.0.1");
	fd = tcp_connect(e.port);
	assert_true(fd >= 0);
	uint64_t end = monotonic_ms() + 2000;
	while (echod_log_count(&e, "connection from 127.0.0.1") == before && monotonic_ms() < end)
		usleep(20000);
	assert_true(echod_log_count(&e, "connection from 127.0.0.1") > before);
	close(fd);
	assert_int_equal(echod_stop(&e, 10000), 0);
	assert_true(nothing_left_behind());
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_bad_command_line, harness_teardown),
	    cmocka_unit_test_teardown(test_bad_config_file, harness_teardown),
	    cmocka_unit_test_teardown(test_no_sockets_exits_1, harness_teardown),
	    cmocka_unit_test_teardown(test_address_in_use_exits_1, harness_teardown),
	    cmocka_unit_test_teardown(test_metrics_without_libmicrohttpd_exits_1, harness_teardown),
	    cmocka_unit_test_teardown(test_help_and_version_on_stdout, harness_teardown),
	    cmocka_unit_test_teardown(test_check_config_binds_nothing, harness_teardown),
	    cmocka_unit_test_teardown(test_check_config_explains, harness_teardown),
	    cmocka_unit_test_teardown(test_start_logs_caps_and_ignored_keys, harness_teardown),
	    cmocka_unit_test_teardown(test_default_config_may_be_missing, harness_teardown),
	    cmocka_unit_test_teardown(test_command_line_wins_over_file, harness_teardown),
	    cmocka_unit_test_teardown(test_respawn_backoff, harness_teardown),
	    cmocka_unit_test_teardown(test_respawn_backoff_resets, harness_teardown),
	    cmocka_unit_test_teardown(test_sigint_drains, harness_teardown),
	    cmocka_unit_test_teardown(test_second_sigint_fast_stop, harness_teardown),
	    cmocka_unit_test_teardown(test_user_drops_root, harness_teardown),
	    cmocka_unit_test_teardown(test_process_titles, harness_teardown),
	    cmocka_unit_test_teardown(test_before_stop, harness_teardown),
	    cmocka_unit_test_teardown(test_accept_mode, harness_teardown),
	    cmocka_unit_test_teardown(test_accept_mode_idle_timeout, harness_teardown),
	    cmocka_unit_test_teardown(test_inetd_stdin_socket, harness_teardown),
	    cmocka_unit_test_teardown(test_log_level_debug_logs_connections, harness_teardown),
	    cmocka_unit_test_teardown(test_log_level_warning_is_quiet, harness_teardown),
	    cmocka_unit_test_teardown(test_journal_stream_not_stderr, harness_teardown),
	    cmocka_unit_test_teardown(test_journal_fields, harness_teardown),
	    cmocka_unit_test_teardown(test_multiple_listeners, harness_teardown),
	    cmocka_unit_test_teardown(test_socket_mode, harness_teardown),
	    cmocka_unit_test_teardown(test_stale_unix_socket, harness_teardown),
	    cmocka_unit_test_teardown(test_activation_two_sockets, harness_teardown),
	    cmocka_unit_test_teardown(test_defer_accept_leaves_systemd_sockets_alone,
				      harness_teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	/* Whatever echod leaves behind is re-parented to the test, where
	 * nothing_left_behind() sees it. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	return cmocka_run_group_tests_name("daemon", tests, NULL, NULL);
}
