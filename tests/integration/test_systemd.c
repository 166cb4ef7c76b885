/* echod as a systemd service sees it: notify messages on a socket the test
 * owns (NOTIFY_SOCKET), reload by SIGHUP and by echod --reload, and the
 * watchdog. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

struct notify_listener {
	int fd;
	char path[108];
	char env[128];
};

static void
notify_listen(struct notify_listener *n)
{
	static unsigned seq;
	struct sockaddr_un un = {.sun_family = AF_UNIX};

	/* One path per test: a leaked echod of an earlier test cannot reach
	 * this one's socket. */
	snprintf(n->path, sizeof(n->path), "/tmp/echod-test-notify-%d-%u", (int)getpid(), seq++);
	unlink(n->path);
	strcpy(un.sun_path, n->path);
	n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(n->fd >= 0);
	assert_int_equal(bind(n->fd, (struct sockaddr *)&un, sizeof(un)), 0);
	snprintf(n->env, sizeof(n->env), "NOTIFY_SOCKET=%s", n->path);
}

static void
notify_close(struct notify_listener *n)
{
	close(n->fd);
	unlink(n->path);
}

/* Waits for a message containing needle; returns the message or NULL. */
static const char *
notify_wait(struct notify_listener *n, const char *needle, int timeout_ms)
{
	static char msg[4096];
	uint64_t end = monotonic_ms() + (uint64_t)timeout_ms;

	while (monotonic_ms() < end) {
		if (!wait_readable(n->fd, (int)(end - monotonic_ms())))
			break;
		ssize_t len = recv(n->fd, msg, sizeof(msg) - 1, MSG_DONTWAIT);
		if (len <= 0)
			continue;
		msg[len] = '\0';
		if (strstr(msg, needle))
			return msg;
	}
	return NULL;
}

static size_t
worker_count(struct echod *e)
{
	pid_t kids[64];

	return process_children(e->pid, kids, 64);
}

static void
test_ready_status_stopping(void **state)
{
	struct notify_listener n;
	struct echod e;
	const char *m;

	notify_listen(&n);
	echod_start_env(&e, (const char *[]){n.env, NULL}, (const char *[]){"--workers", "2", NULL});
	assert_non_null(notify_wait(&n, "READY=1", 5000));
	m = notify_wait(&n, "STATUS=", 5000);
	assert_non_null(m);
	print_message("# %s\n", m);
	assert_non_null(strstr(m, "2/2 workers"));
	assert_non_null(strstr(m, harness_model()));
	kill(e.pid, SIGTERM);
	assert_non_null(notify_wait(&n, "STOPPING=1", 5000));
	assert_int_equal(echod_stop(&e, 15000), 0);
	notify_close(&n);
}

static void
test_reload_changes_workers_keeps_connections(void **state)
{
	struct notify_listener n;
	struct echod e;
	char conf[64], arg[80];
	int fd;

	snprintf(conf, sizeof(conf), "/tmp/echod-test-%d.conf", (int)getpid());
	harness_write_config(conf, "[echod]\nWorkers=1\n");
	snprintf(arg, sizeof(arg), "%s", conf);
	notify_listen(&n);
	/* A later --config wins over the harness's /dev/null. */
	echod_start_env(&e, (const char *[]){n.env, NULL}, (const char *[]){"--config", arg, NULL});
	assert_non_null(notify_wait(&n, "READY=1", 5000));
	assert_int_equal(worker_count(&e), 1);
	fd = tcp_connect(e.port);
	assert_true(fd >= 0);
	assert_int_equal(echo_roundtrip(fd, "before", 6, 2000), 0);

	harness_write_config(conf, "[echod]\nWorkers=3\n");
	kill(e.pid, SIGHUP);
	const char *m = notify_wait(&n, "RELOADING=1", 5000);
	assert_non_null(m);
	assert_non_null(strstr(m, "MONOTONIC_USEC="));
	assert_non_null(notify_wait(&n, "READY=1", 5000));
	/* The old worker finishes its connection; three new ones serve. */
	assert_int_equal(echo_roundtrip(fd, "across", 6, 2000), 0);
	close(fd);
	uint64_t end = monotonic_ms() + 5000;
	while (worker_count(&e) != 3 && monotonic_ms() < end)
		usleep(50000);
	assert_int_equal(worker_count(&e), 3);

	/* A broken file: the running configuration stays and keeps serving. */
	harness_write_config(conf, "[echod]\nWorkers=3\nBogus=1\n");
	kill(e.pid, SIGHUP);
	assert_non_null(notify_wait(&n, "READY=1", 5000));
	assert_true(echod_wait_log(&e, "reload rejected", 3000));
	assert_true(echod_wait_log(&e, ":3: unknown key", 1000));
	m = notify_wait(&n, "reload rejected", 3000);
	assert_non_null(m);
	/* The generation counts configurations in use: the rejected one is
	 * not, so it stays; the next good reload takes the next number. */
	if (!strstr(m, ", gen 1"))
		fail_msg("after a rejected reload: %s", m);
	assert_int_equal(worker_count(&e), 3);
	fd = tcp_connect(e.port);
	assert_int_equal(echo_roundtrip(fd, "still", 5, 2000), 0);
	close(fd);
	harness_write_config(conf, "[echod]\nWorkers=2\n");
	kill(e.pid, SIGHUP);
	assert_true(echod_wait_log(&e, "generation 2", 5000));
	assert_non_null(notify_wait(&n, ", gen 2", 5000));
	assert_int_equal(echod_stop(&e, 15000), 0);
	notify_close(&n);
	unlink(conf);
}

/* Model= changes by reload too: the old pool drains while the new model
 * serves, and a connection open across the change keeps echoing. The
 * model comes from the file here (a --model would win over it). */
static void
test_reload_changes_model(void **state)
{
	struct notify_listener n;
	struct echod e;
	char conf[64], listen[64];
	int fd, fresh;

	snprintf(conf, sizeof(conf), "/tmp/echod-test-model-%d.conf", (int)getpid());
	harness_write_config(conf, "[echod]\nModel=prefork\nWorkers=2\n");
	e.port = free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", e.port);
	notify_listen(&n);
	echod_spawn(&e, (const char *[]){n.env, NULL},
		    (const char *[]){"--config", conf, "--listen", listen, NULL}, -1);
	assert_non_null(notify_wait(&n, "READY=1", 5000));
	assert_true(tcp_wait_accepting(e.port, 5000));
	fd = tcp_connect(e.port);
	assert_int_equal(echo_roundtrip(fd, "before", 6, 2000), 0);

	harness_write_config(conf, "[echod]\nModel=passfd\nWorkers=3\n");
	kill(e.pid, SIGHUP);
	assert_non_null(notify_wait(&n, "READY=1", 5000));
	assert_true(echod_wait_log(&e, "reloaded: passfd model, 3 worker(s)", 2000));
	assert_int_equal(echo_roundtrip(fd, "across", 6, 2000), 0);
	fresh = tcp_connect(e.port);
	assert_int_equal(echo_roundtrip(fresh, "fresh", 5, 2000), 0);

	harness_write_config(conf, "[echod]\nModel=fork\n");
	kill(e.pid, SIGHUP);
	assert_non_null(notify_wait(&n, "READY=1", 5000));
	assert_true(echod_wait_log(&e, "reloaded: fork model", 2000));
	assert_int_equal(echo_roundtrip(fresh, "still", 5, 2000), 0);
	close(fresh);
	fresh = tcp_connect(e.port);
	assert_int_equal(echo_roundtrip(fresh, "forked", 6, 2000), 0);
	close(fresh);
	close(fd);
	assert_int_equal(echod_stop(&e, 15000), 0);
	notify_close(&n);
	unlink(conf);
}

/* Sends from buf until the socket takes no more (the server holds bytes
 * it cannot write back: it owes them). Returns bytes sent. */
static size_t
send_until_full(int fd, const char *buf, size_t size)
{
	size_t sent = 0;

	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	for (int idle = 0; sent < size && idle < 20;) {
		ssize_t n = send(fd, buf + sent, size - sent, MSG_NOSIGNAL);
		if (n > 0) {
			sent += (size_t)n;
			idle = 0;
			continue;
		}
		assert_true(n < 0 && errno == EAGAIN);
		idle++;
		usleep(20000);
	}
	return sent;
}

/* Reads len bytes back and compares them with want. */
static void
read_back(int fd, const char *want, size_t len)
{
	char *got = malloc(len);
	size_t have = 0;

	assert_non_null(got);
	while (have < len && wait_readable(fd, 5000)) {
		ssize_t n = recv(fd, got + have, len - have, MSG_DONTWAIT);
		if (n < 0 && errno == EAGAIN)
			continue;
		assert_true(n > 0);
		have += (size_t)n;
	}
	assert_int_equal(have, len);
	assert_memory_equal(got, want, len);
	free(got);
}

/* Waits until pid has exactly n live children and none of them is one of
 * the n_old in old (those have ended); the children go to kids. */
static bool
wait_successors(pid_t pid, size_t n, const pid_t *old, size_t n_old, pid_t *kids, int timeout_ms)
{
	uint64_t end = monotonic_ms() + (uint64_t)timeout_ms;

	for (;;) {
		pid_t all[16];
		size_t found = process_children(pid, all, 16), live = 0;
		bool stale = false;

		for (size_t i = 0; i < found; i++) {
			if (!process_alive(all[i]))
				continue;
			for (size_t j = 0; j < n_old; j++)
				stale |= all[i] == old[j];
			if (live < n)
				kids[live] = all[i];
			live++;
		}
		if (live == n && !stale)
			return true;
		if (monotonic_ms() >= end) {
			print_message("# %zu live children (want %zu), %s\n", live, n,
				      stale ? "some from before the reload" : "all new");
			return false;
		}
		usleep(20000);
	}
}

/* Reloads the running echod to `model` with `workers` workers and a short
 * drain, and waits until it says so. */
static void
reload_to(struct echod *e, struct notify_listener *n, const char *conf, const char *model,
	  int workers)
{
	char text[128];

	snprintf(text, sizeof(text), "[echod]\nModel=%s\nWorkers=%d\nShutdownTimeoutSec=1\n", model,
		 workers);
	harness_write_config(conf, text);
	kill(e->pid, SIGHUP);
	assert_non_null(notify_wait(n, "READY=1", 5000));
}

/* A reload that changes the model keeps connections past the old
 * processes' drain (ShutdownTimeoutSec=1): fork's connection processes,
 * then the workers of this run's model, give them back, owed bytes too,
 * and the new workers serve them. */
static void
test_reload_gives_connections_back(void **state)
{
	const size_t size = 16 << 20;
	const char *model = harness_model();
	const char *other = strcmp(model, "prefork") == 0 ? "passfd" : "prefork";
	struct notify_listener n;
	struct echod e;
	char conf[64], listen[64];
	char *data = malloc(size);
	pid_t kids[8];
	size_t owed;
	int fd, stalled;

	assert_non_null(data);
	fill_random(data, size, 862);
	snprintf(conf, sizeof(conf), "/tmp/echod-test-back-%d.conf", (int)getpid());
	harness_write_config(conf, "[echod]\nModel=fork\nShutdownTimeoutSec=1\n");
	e.port = free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", e.port);
	notify_listen(&n);
	echod_spawn(&e, (const char *[]){n.env, NULL},
		    (const char *[]){"--config", conf, "--listen", listen, NULL}, -1);
	assert_non_null(notify_wait(&n, "READY=1", 5000));
	assert_true(tcp_wait_accepting(e.port, 5000));
	fd = tcp_connect(e.port);
	stalled = tcp_connect(e.port);
	assert_int_equal(echo_roundtrip(fd, "before", 6, 2000), 0);
	owed = send_until_full(stalled, data, size);
	assert_true(owed > 0);
	assert_int_equal(process_children(e.pid, kids, 8), 2);

	pid_t before[8];
	size_t n_before = process_children(e.pid, before, 8);

	/* Each reload: the old processes are gone past their drain
	 * (ShutdownTimeoutSec=1) and exactly their successors serve. */
	reload_to(&e, &n, conf, model, 2);
	/* Each connection process gives its connection back on its own, so
	 * the supervisor may count them in one batch or in two. */
	assert_true(echod_wait_log(&e, "kept across the reload are served again", 3000));
	/* The connection processes are gone: the new workers serve both. */
	assert_true(wait_successors(e.pid, 2, before, n_before, kids, 10000));
	assert_int_equal(echo_roundtrip(fd, "across", 6, 2000), 0);

	memcpy(before, kids, sizeof(before));
	n_before = 2;
	reload_to(&e, &n, conf, other, 3);
	assert_true(echod_wait_log(&e, "connection(s) back for the new workers", 3000));
	assert_true(wait_successors(e.pid, 3, before, n_before, kids, 10000));
	assert_int_equal(echo_roundtrip(fd, "again", 5, 2000), 0);

	/* Back to fork, and fork to fork: a new connection process each
	 * time, the old ones gone. */
	memcpy(before, kids, sizeof(before));
	n_before = 3;
	for (int i = 0; i < 2; i++) {
		reload_to(&e, &n, conf, "fork", 1);
		assert_true(wait_successors(e.pid, 2, before, n_before, kids, 10000));
		memcpy(before, kids, sizeof(before));
		n_before = 2;
		assert_int_equal(echo_roundtrip(fd, "forked", 6, 2000), 0);
	}
	read_back(stalled, data, owed);
	close(fd);
	close(stalled);
	assert_int_equal(echod_stop(&e, 15000), 0);
	notify_close(&n);
	unlink(conf);
	free(data);
}

/* ExecReload=echod --reload $MAINPID: exit 0 when applied, 1 when the
 * new configuration is rejected. */
static void
test_reload_client_reports_outcome(void **state)
{
	char dir[64], conf[96], rt[96], pid[16];
	struct echod e, client;

	snprintf(dir, sizeof(dir), "/tmp/echod-test-rt-%d", (int)getpid());
	mkdir(dir, 0700);
	snprintf(conf, sizeof(conf), "%s/echod.conf", dir);
	snprintf(rt, sizeof(rt), "RUNTIME_DIRECTORY=%s", dir);
	harness_write_config(conf, "[echod]\nWorkers=1\n");
	echod_start_env(&e, (const char *[]){rt, NULL}, (const char *[]){"--config", conf, NULL});
	snprintf(pid, sizeof(pid), "%d", (int)e.pid);
	setenv("RUNTIME_DIRECTORY", dir, 1);

	harness_write_config(conf, "[echod]\nWorkers=2\n");
	assert_int_equal(echod_run(&client, (const char *[]){"--reload", pid, NULL}, 10000), 0);
	harness_write_config(conf, "[echod]\nWorkers=nope\n");
	assert_int_equal(echod_run(&client, (const char *[]){"--reload", pid, NULL}, 10000), 1);
	assert_non_null(strstr(client.log, "Workers=nope"));
	unsetenv("RUNTIME_DIRECTORY");
	assert_int_equal(echod_stop(&e, 15000), 0);
	unlink(conf);
	unlink(dir);
	char status[128];
	snprintf(status, sizeof(status), "%s/reload-status", dir);
	unlink(status);
	rmdir(dir);
}

/* A reload that changes Listen= outside systemd keeps the sockets: its
 * verdict, and so echod --reload's output, says so instead of "applied". */
static void
test_reload_names_what_was_not_applied(void **state)
{
	char dir[64], conf[96], rt[96], pid[16], text[256], status[128];
	struct echod e, client;
	int port = free_port(), other = free_port();

	snprintf(dir, sizeof(dir), "/tmp/echod-test-rtl-%d", (int)getpid());
	mkdir(dir, 0700);
	snprintf(conf, sizeof(conf), "%s/echod.conf", dir);
	snprintf(rt, sizeof(rt), "RUNTIME_DIRECTORY=%s", dir);
	snprintf(text, sizeof(text), "[echod]\nWorkers=1\nListen=127.0.0.1:%d\n", port);
	harness_write_config(conf, text);
	echod_spawn(&e, (const char *[]){rt, NULL}, (const char *[]){"--config", conf, NULL}, -1);
	assert_true(tcp_wait_accepting(port, 10000));
	snprintf(pid, sizeof(pid), "%d", (int)e.pid);
	setenv("RUNTIME_DIRECTORY", dir, 1);

	snprintf(text, sizeof(text),
		 "[echod]\nWorkers=1\nListen=127.0.0.1:%d\nMetricsListen=127.0.0.1:%d\n"
		 "WorkerConnections=20\nMaxConnections=50\n",
		 other, other);
	harness_write_config(conf, text);
	assert_int_equal(echod_run(&client, (const char *[]){"--reload", pid, NULL}, 10000), 0);
	print_comment(client.log);
	assert_non_null(strstr(client.log, "configuration applied, except: Listen= changed but not "
					   "applied: sockets are kept as they are until a restart; "
					   "MetricsListen= changed but not applied"));
	assert_true(echod_wait_log(&e, "generation 1; not applied: Listen=", 2000));
	assert_true(echod_wait_log(&e, "reload: MaxConnections=50 is more than Workers x "
				      "WorkerConnections (1 x 20): capped at 20", 1000));
	unsetenv("RUNTIME_DIRECTORY");
	assert_true(tcp_wait_accepting(port, 1000));
	assert_int_equal(echod_stop(&e, 15000), 0);
	snprintf(status, sizeof(status), "%s/reload-status", dir);
	unlink(status);
	unlink(conf);
	rmdir(dir);
}

/* echod --reload PID signals only an echod supervisor: a wrong PID (here a
 * sleep, then an echod worker) is refused and left running. */
static void
test_reload_refuses_other_processes(void **state)
{
	char pid[16];
	struct echod e, client;
	pid_t other, kids[8];
	int status;

	other = fork();
	assert_true(other >= 0);
	if (other == 0) {
		execlp("sleep", "sleep", "30", (char *)NULL);
		_exit(127);
	}
	setenv("RUNTIME_DIRECTORY", "/tmp", 1);
	snprintf(pid, sizeof(pid), "%d", (int)other);
	assert_int_equal(echod_run(&client, (const char *[]){"--reload", pid, NULL}, 10000), 1);
	assert_non_null(strstr(client.log, "not an echod process"));
	usleep(100 * 1000);
	assert_true(process_alive(other));
	kill(other, SIGKILL);
	waitpid(other, &status, 0);

	echod_start(&e, (const char *[]){"--workers", "1", NULL});
	assert_int_equal(process_children(e.pid, kids, 8), 1);
	snprintf(pid, sizeof(pid), "%d", (int)kids[0]);
	assert_int_equal(echod_run(&client, (const char *[]){"--reload", pid, NULL}, 10000), 1);
	assert_non_null(strstr(client.log, "an echod worker"));
	unsetenv("RUNTIME_DIRECTORY");
	assert_true(process_alive(kids[0]));
	assert_int_equal(echod_stop(&e, 15000), 0);
}

static void
test_watchdog_pings_only_while_workers_progress(void **state)
{
	struct notify_listener n;
	struct echod e;
	pid_t kids[8];
	size_t nk;
	int pings = 0;

	notify_listen(&n);
	echod_start_env(&e, (const char *[]){n.env, "WATCHDOG_USEC=1000000", NULL},
			(const char *[]){"--workers", "2", NULL});
	uint64_t end = monotonic_ms() + 2500;
	while (monotonic_ms() < end && notify_wait(&n, "WATCHDOG=1", (int)(end - monotonic_ms())))
		pings++;
	print_message("# %d pings in 2.5 s with WatchdogSec=1s\n", pings);
	assert_true(pings >= 3);

	/* Every worker stuck: pings stop, the stuck workers are killed and
	 * replaced, then pings resume. The supervisor looks every quarter
	 * interval (250 ms) and pings at each look while the pool moves; at
	 * the look where a heartbeat is a second old it kills the worker and
	 * holds that ping, and pings again at the next look once the
	 * replacement runs. So around the stop one gap spans two looks at
	 * least (500 ms), where a pool that is moving, or a supervisor that
	 * pinged blindly, gets a ping at every look (250 ms). */
	nk = process_children(e.pid, kids, 8);
	assert_int_equal(nk, 2);
	for (size_t i = 0; i < nk; i++)
		kill(kids[i], SIGSTOP);
	uint64_t stopped = monotonic_ms(), last_ping = stopped, gap = 0, end_by = stopped + 10000;
	unsigned after_replaced = 0;
	bool replaced = false;
	while (monotonic_ms() < end_by && after_replaced < 2) {
		if (notify_wait(&n, "WATCHDOG=1", 100)) {
			uint64_t now = monotonic_ms();
			gap = now - last_ping > gap ? now - last_ping : gap;
			last_ping = now;
			after_replaced += replaced;
		}
		if (!replaced) {
			pid_t now_kids[8];
			size_t nn = process_children(e.pid, now_kids, 8), fresh = 0;
			for (size_t i = 0; i < nn; i++)
				fresh += process_alive(now_kids[i]) && now_kids[i] != kids[0] &&
					 now_kids[i] != kids[1];
			replaced =
			    fresh == nk && !process_alive(kids[0]) && !process_alive(kids[1]);
		}
	}
	print_message("# longest gap between pings %llu ms; workers %sreplaced; %u ping(s) since\n",
		      (unsigned long long)gap, replaced ? "" : "not ", after_replaced);
	assert_true(replaced);
	assert_int_equal(echod_log_count(&e, "no progress"), nk);
	assert_true(gap >= 450);
	assert_int_equal(after_replaced, 2);
	assert_int_equal(echod_stop(&e, 15000), 0);
	notify_close(&n);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_ready_status_stopping, harness_teardown),
	    cmocka_unit_test_teardown(test_reload_changes_workers_keeps_connections,
				      harness_teardown),
	    cmocka_unit_test_teardown(test_reload_changes_model, harness_teardown),
	    cmocka_unit_test_teardown(test_reload_gives_connections_back, harness_teardown),
	    cmocka_unit_test_teardown(test_reload_client_reports_outcome, harness_teardown),
	    cmocka_unit_test_teardown(test_reload_refuses_other_processes, harness_teardown),
	    cmocka_unit_test_teardown(test_reload_names_what_was_not_applied, harness_teardown),
	    cmocka_unit_test_teardown(test_watchdog_pings_only_while_workers_progress,
				      harness_teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name(harness_model(), tests, NULL, NULL);
}
