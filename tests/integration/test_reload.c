/* A reload applies every key of the configuration file, in the model
 * $ECHOD_MODEL: each test starts echod with one value, rewrites the file,
 * sends SIGHUP, waits for the new generation and checks that the new value
 * is what echod now does (not only what it says). Listen= is the one key a
 * reload keeps as it was: the notice, and the sockets as they were.
 * (Workers=, Model=, ShutdownTimeoutSec= and the access lists have their
 * reload tests in test_systemd.c, test_conformance.c and test_access.c.) */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

struct fixture {
	struct echod e;
	struct notify_socket n;
	char conf[64];
	char runtime_dir[64];
	int udp_port;
	unsigned generation;
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	snprintf(f->conf, sizeof(f->conf), "/tmp/echod-test-reload-%d.conf", (int)getpid());
	snprintf(f->runtime_dir, sizeof(f->runtime_dir), "/tmp/echod-test-reload-XXXXXX");
	if (!mkdtemp(f->runtime_dir)) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	harness_teardown(state);
	notify_socket_close(&f->n);
	unlink(f->conf);
	harness_remove_runtime_dir(f->runtime_dir);
	free(f);
	return 0;
}

static bool
pool_model(void)
{
	return strcmp(harness_model(), "fork") != 0;
}

/* The file: [echod], the workers (pool models), then keys. */
static void
write_config(struct fixture *f, const char *keys)
{
	char text[1024];

	snprintf(text, sizeof(text), "[echod]\n%s%s", pool_model() ? "Workers=1\n" : "", keys);
	harness_write_config(f->conf, text);
}

/* echod on 127.0.0.1 (TCP, and UDP on udp_port), configured by keys. */
static void
start(struct fixture *f, const char *keys)
{
	char udp[64];

	write_config(f, keys);
	f->udp_port = free_port();
	snprintf(udp, sizeof(udp), "udp:127.0.0.1:%d", f->udp_port);
	notify_socket_open(&f->n);
	echod_start_env(&f->e, (const char *[]){f->n.env, NULL},
			(const char *[]){"--config", f->conf, "--listen", udp, "--runtime-dir",
					 f->runtime_dir, NULL});
	assert_non_null(notify_status_wait(&f->n, " gen 0", 5000));
}

/* Rewrites the file with keys, reloads, and waits for the new generation
 * to be ready: after this, new connections meet the new configuration. */
static void
reload(struct fixture *f, const char *keys)
{
	char gen[32];

	write_config(f, keys);
	f->generation++;
	snprintf(gen, sizeof(gen), " gen %u", f->generation);
	assert_int_equal(kill(f->e.pid, SIGHUP), 0);
	if (!notify_status_wait(&f->n, gen, 8000))
		fail_msg("no generation %u after the reload to \"%s\"; STATUS=%s", f->generation,
			 keys, f->n.status);
	assert_true(echod_wait_log(&f->e, "reloaded:", 5000));
}

static void
stop(struct fixture *f)
{
	assert_int_equal(echod_stop(&f->e, 15000), 0);
	f->e.pid = 0;
}

/* A total from `echod status --json` (a key after the workers' array). */
static unsigned long long
status_total(struct fixture *f, const char *key)
{
	unsigned long long total;

	assert_true(echod_status_total(f->runtime_dir, key, &total));
	return total;
}

/* A client from src with one echo done. */
static int
served_from(struct fixture *f, const char *src)
{
	int fd = tcp_connect_from(src, f->e.port);

	if (fd < 0)
		fail_msg("connecting from %s: %s", src, strerror(errno));
	if (echo_roundtrip(fd, "hello", 5, 5000) != 0)
		fail_msg("a connection from %s got no echo", src);
	return fd;
}

/* A client whose first byte gets no echo within ms: connected (the kernel
 * completes the handshake), but echod does not take it. */
static int
waiting_client(struct fixture *f, int ms)
{
	int fd = tcp_connect(f->e.port);

	assert_true(fd >= 0);
	assert_int_equal(send(fd, "w", 1, MSG_NOSIGNAL), 1);
	if (wait_readable(fd, ms))
		fail_msg("a client beyond the limit was served");
	return fd;
}

/* What the client that waited gets once there is room: its echo. */
static void
served_at_last(int fd)
{
	char c = 0;

	if (!wait_readable(fd, 5000))
		fail_msg("the waiting client was never served");
	assert_int_equal(recv(fd, &c, 1, 0), 1);
	assert_int_equal(c, 'w');
}

/* MaxConnectionsPerSource=: from none to 1, a second connection from the
 * same source is refused, another source served; those already open stay. */
static void
test_max_connections_per_source(void **state)
{
	struct fixture *f = *state;
	int first, second, other, again;

	start(f, "");
	first = served_from(f, "127.0.0.2");
	second = served_from(f, "127.0.0.2");
	reload(f, "MaxConnectionsPerSource=1\n");
	assert_int_equal(echo_roundtrip(first, "still", 5, 5000), 0);
	assert_int_equal(echo_roundtrip(second, "still", 5, 5000), 0);
	close(second);
	close(first);
	/* Its two are closed: the source has room for one again. */
	first = -1;
	for (int i = 0; i < 50 && first < 0; i++) {
		int fd = tcp_connect_from("127.0.0.2", f->e.port);
		if (echo_roundtrip(fd, "one", 3, 2000) == 0)
			first = fd;
		else
			close(fd), usleep(100000);
	}
	assert_true(first >= 0);
	again = tcp_connect_from("127.0.0.2", f->e.port);
	assert_true(again >= 0);
	(void)!write(again, "two", 3);
	if (!closed_by_peer(again, 5000))
		fail_msg("a second connection from 127.0.0.2 was not refused after the reload");
	close(again);
	other = served_from(f, "127.0.0.3");
	assert_true(echod_wait_log(&f->e, "MaxConnectionsPerSource=1", 6000));
	close(other);
	close(first);
	stop(f);
}

/* MaxConnections=: lowered to 2 by a reload, a third client waits (in the
 * backlog, not refused) until one of the two closes. */
static void
test_max_connections(void **state)
{
	struct fixture *f = *state;
	int a, b, c;

	start(f, "MaxConnections=100\n");
	reload(f, "MaxConnections=2\n");
	a = served_from(f, "127.0.0.1");
	b = served_from(f, "127.0.0.1");
	c = waiting_client(f, 1000);
	close(a);
	served_at_last(c);
	close(b);
	close(c);
	stop(f);
}

/* WorkerConnections=: lowered to 2 by a reload (one worker), a third
 * client waits for room; the same at start, so the key limits at all. */
static void
test_worker_connections(void **state)
{
	struct fixture *f = *state;
	int a, b, c;

	start(f, "WorkerConnections=2\n");
	a = served_from(f, "127.0.0.1");
	b = served_from(f, "127.0.0.1");
	c = waiting_client(f, 1000);
	close(a);
	served_at_last(c);
	close(b);
	close(c);

	reload(f, "WorkerConnections=3\n");
	a = served_from(f, "127.0.0.1");
	b = served_from(f, "127.0.0.1");
	c = served_from(f, "127.0.0.1");
	close(waiting_client(f, 1000));
	close(a);
	close(b);
	close(c);
	stop(f);
}

/* IdleTimeoutSec=: from none to 1, a new idle connection is closed. */
static void
test_idle_timeout(void **state)
{
	struct fixture *f = *state;
	int before, after;

	start(f, "");
	before = served_from(f, "127.0.0.1");
	if (closed_by_peer(before, 1500))
		fail_msg("an idle connection was closed with no IdleTimeoutSec=");
	reload(f, "IdleTimeoutSec=1\n");
	after = served_from(f, "127.0.0.1");
	if (!closed_by_peer(after, 5000))
		fail_msg("an idle connection outlived IdleTimeoutSec=1 after the reload");
	close(after);
	close(before);
	stop(f);
}

/* Datagrams echoed of a burst of n sent from one socket. */
static int
datagram_burst(struct fixture *f, int n)
{
	struct sockaddr_in to = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)f->udp_port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), got = 0;
	char back[16];

	assert_true(fd >= 0);
	for (int i = 0; i < n; i++)
		assert_int_equal(sendto(fd, "burst", 5, 0, (struct sockaddr *)&to, sizeof(to)), 5);
	while (wait_readable(fd, 500) && recv(fd, back, sizeof(back), 0) == 5)
		got++;
	close(fd);
	return got;
}

/* DatagramRateLimit=: from none to 5, a burst of 40 is cut to about 5. */
static void
test_datagram_rate_limit(void **state)
{
	struct fixture *f = *state;
	int before, after;

	start(f, "");
	before = datagram_burst(f, 40);
	reload(f, "DatagramRateLimit=5\n");
	after = datagram_burst(f, 40);
	print_message("# burst of 40 datagrams: %d echoed without a limit, %d at "
		      "DatagramRateLimit=5\n", before, after);
	assert_int_equal(before, 40);
	assert_in_range(after, 1, 15);
	assert_true(status_total(f, "rate_limit") >= 25);
	stop(f);
}

/* ConnectionRateLimit=: from none to 4, a burst of 12 connections pauses
 * accepting (every one still served). */
static void
test_connection_rate_limit(void **state)
{
	struct fixture *f = *state;
	int fds[12];

	start(f, "");
	reload(f, "ConnectionRateLimit=4\n");
	for (int i = 0; i < 12; i++) {
		fds[i] = tcp_connect(f->e.port);
		assert_true(fds[i] >= 0);
		assert_int_equal(send(fds[i], "r", 1, MSG_NOSIGNAL), 1);
	}
	for (int i = 0; i < 12; i++) {
		char c = 0;
		assert_true(wait_readable(fds[i], 10000));
		assert_int_equal(recv(fds[i], &c, 1, 0), 1);
		close(fds[i]);
	}
	assert_true(status_total(f, "accept_pauses") >= 1);
	assert_true(echod_wait_log(&f->e, "ConnectionRateLimit=4 reached", 6000));
	stop(f);
}

/* DeferAcceptSec=: from none to 5, a client that sends nothing is not
 * taken (nothing active), and is served as soon as it sends. */
static void
test_defer_accept(void **state)
{
	struct fixture *f = *state;
	int silent;
	char c = 0;

	start(f, "");
	silent = tcp_connect(f->e.port);
	for (int i = 0; i < 50 && status_total(f, "active") != 1; i++)
		usleep(100000);
	assert_int_equal(status_total(f, "active"), 1);
	close(silent);
	for (int i = 0; i < 50 && status_total(f, "active") != 0; i++)
		usleep(100000);

	reload(f, "DeferAcceptSec=5\n");
	silent = tcp_connect(f->e.port);
	usleep(1000000);
	assert_int_equal(status_total(f, "active"), 0);
	assert_int_equal(send(silent, "d", 1, MSG_NOSIGNAL), 1);
	assert_true(wait_readable(silent, 5000));
	assert_int_equal(recv(silent, &c, 1, 0), 1);
	assert_int_equal(c, 'd');
	close(silent);
	stop(f);
}

/* LogLevel=: from info to debug, a new generation's workers log that they
 * started; from debug to warning, the reload's own info line goes. */
static void
test_log_level(void **state)
{
	struct fixture *f = *state;
	char gen[32];

	start(f, "LogLevel=info\n");
	assert_int_equal(echod_log_count(&f->e, "started as pid"), 0);
	reload(f, "LogLevel=debug\n");
	if (pool_model())
		assert_true(echod_wait_log(&f->e, "(generation 1)", 5000));
	write_config(f, "LogLevel=warning\n");
	assert_int_equal(kill(f->e.pid, SIGHUP), 0);
	snprintf(gen, sizeof(gen), " gen %u", ++f->generation);
	assert_non_null(notify_status_wait(&f->n, gen, 8000));
	usleep(200000);
	echod_collect_log(&f->e);
	assert_int_equal(echod_log_count(&f->e, "reloaded:"), 1);
	stop(f);
}

/* Listen=: a reload keeps the sockets as they were, and says so. */
static void
test_listen_kept(void **state)
{
	struct fixture *f = *state;
	char keys[2][128], conf[256];
	int ports[2] = {free_port(), free_port()};
	struct echod *e = &f->e;
	int fd;

	for (int i = 0; i < 2; i++)
		snprintf(keys[i], sizeof(keys[i]), "%sListen=127.0.0.1:%d\n",
			 pool_model() ? "Workers=1\n" : "", ports[i]);
	snprintf(conf, sizeof(conf), "[echod]\n%s", keys[0]);
	harness_write_config(f->conf, conf);
	notify_socket_open(&f->n);
	echod_spawn(e, (const char *[]){f->n.env, NULL},
		    (const char *[]){"--config", f->conf, "--model", harness_model(), NULL}, -1);
	assert_true(tcp_wait_accepting(ports[0], 5000));
	assert_non_null(notify_status_wait(&f->n, " gen 0", 5000));

	snprintf(conf, sizeof(conf), "[echod]\n%s", keys[1]);
	harness_write_config(f->conf, conf);
	assert_int_equal(kill(e->pid, SIGHUP), 0);
	assert_non_null(notify_status_wait(&f->n, " gen 1", 8000));
	assert_true(echod_wait_log(e, "Listen= changed", 5000));
	fd = tcp_connect(ports[0]);
	assert_int_equal(echo_roundtrip(fd, "kept", 4, 5000), 0);
	close(fd);
	assert_int_equal(tcp_connect(ports[1]), -1);
	stop(f);
}

int
main(void)
{
	struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_max_connections_per_source, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_max_connections, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_idle_timeout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_datagram_rate_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_connection_rate_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_defer_accept, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_log_level, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_listen_kept, setup, teardown),
	    /* Last: fork serves each connection in a process of its own, so
	     * no worker holds WorkerConnections= of them. */
	    cmocka_unit_test_setup_teardown(test_worker_connections, setup, teardown),
	};
	size_t n = sizeof(tests) / sizeof(tests[0]) - (pool_model() ? 0 : 1);

	return _cmocka_run_group_tests(harness_model(), tests, n, NULL, NULL);
}
