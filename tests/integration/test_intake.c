/* No queued connection is left waiting while some process could take it.
 *
 * In prefork every worker waits on the listening sockets with
 * EPOLLEXCLUSIVE: the kernel wakes one of them per new connection, and
 * no other. A worker woken that then declines to accept (over its fair
 * share, MaxConnections= reached, ConnectionRateLimit=, out of fds)
 * swallows the wakeup, and the client waits until some other client
 * connects. These tests hold some connections (accepted directly, and
 * kept across a reload that changes Workers=), then connect exactly one
 * more client with no other traffic and wait for its echo: for every
 * Workers= from 1 to 4, in every model. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#define MAX_HELD 8
/* A lost wakeup never recovers; a slow machine still answers within this. */
#define ECHO_DEADLINE_MS 5000

struct rig {
	struct echod e;
	struct notify_socket n;
	char conf[64];
	unsigned generation;
	int held[MAX_HELD];
	size_t n_held;
};

/* The rig a test is using, for the teardown to stop should it fail. */
static struct rig *running;

static void
rig_config(struct rig *r, unsigned workers, const char *extra)
{
	char text[256];

	snprintf(text, sizeof(text), "[echod]\nModel=%s\nWorkers=%u\nShutdownTimeoutSec=1\n%s",
		 harness_model(), workers, extra);
	harness_write_config(r->conf, text);
}

static void
rig_start(struct rig *r, unsigned workers, const char *extra)
{
	char listen[64];

	memset(r, 0, sizeof(*r));
	snprintf(r->conf, sizeof(r->conf), "/tmp/echod-test-intake-%d.conf", (int)getpid());
	rig_config(r, workers, extra);
	notify_socket_open(&r->n);
	r->e.port = free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", r->e.port);
	echod_spawn(&r->e, (const char *[]){r->n.env, NULL},
		    (const char *[]){"--config", r->conf, "--listen", listen, NULL}, -1);
	assert_non_null(notify_status_wait(&r->n, "gen 0", 5000));
	assert_true(tcp_wait_accepting(r->e.port, 5000));
	/* tcp_wait_accepting()'s probe is closed: wait until it is gone, so
	 * that it is not counted among the held connections. */
	assert_non_null(notify_status_wait(&r->n, " 0 connections", 5000));
	r->generation = 0;
	running = r;
}

/* Holds one more connection open, echoed once. */
static void
rig_hold(struct rig *r)
{
	int fd = tcp_connect(r->e.port);

	assert_true(fd >= 0);
	assert_true(r->n_held < MAX_HELD);
	assert_int_equal(echo_roundtrip(fd, "held", 4, ECHO_DEADLINE_MS), 0);
	r->held[r->n_held++] = fd;
}

static void
rig_release(struct rig *r)
{
	while (r->n_held)
		close(r->held[--r->n_held]);
	assert_non_null(notify_status_wait(&r->n, " 0 connections", 5000));
}

/* Reloads to `workers` workers (and `extra` keys); the held connections
 * are kept and served on by the new generation. */
static void
rig_reload(struct rig *r, unsigned workers, const char *extra)
{
	char want[32];

	rig_config(r, workers, extra);
	kill(r->e.pid, SIGHUP);
	snprintf(want, sizeof(want), "gen %u", ++r->generation);
	assert_non_null(notify_status_wait(&r->n, want, 5000));
	/* The old workers have given their connections back and gone. */
	if (strcmp(harness_model(), "fork") != 0) {
		uint64_t end = monotonic_ms() + 5000;
		pid_t kids[16];
		while (process_children(r->e.pid, kids, 16) != workers && monotonic_ms() < end)
			usleep(10 * 1000);
		assert_int_equal(process_children(r->e.pid, kids, 16), workers);
	}
	/* Every held connection is served by the new generation. */
	for (size_t i = 0; i < r->n_held; i++)
		assert_int_equal(echo_roundtrip(r->held[i], "kept", 4, ECHO_DEADLINE_MS), 0);
}

/* Exactly one more client, and nothing else moving: its 1000 bytes come
 * back, without a second client to wake anybody up. */
static void
rig_one_more(struct rig *r, const char *what)
{
	char data[1000];
	int fd;

	fill_random(data, sizeof(data), (unsigned)r->n_held);
	fd = tcp_connect(r->e.port);
	assert_true(fd >= 0);
	if (echo_roundtrip(fd, data, sizeof(data), ECHO_DEADLINE_MS) != 0) {
		echod_collect_log(&r->e);
		print_message("# %s: a client connected with %zu held connection(s) got no echo "
			      "in %d ms\n",
			      what, r->n_held, ECHO_DEADLINE_MS);
		fail();
	}
	close(fd);
}

static void
rig_stop(struct rig *r)
{
	while (r->n_held)
		close(r->held[--r->n_held]);
	running = NULL;
	assert_int_equal(echod_stop(&r->e, 15000), 0);
	notify_socket_close(&r->n);
	unlink(r->conf);
}

/* The running generation's workers, none in fork: there the children are
 * connection processes, and the probe's may still be on its way out. */
static size_t
rig_workers(struct rig *r, pid_t *kids, size_t max)
{
	if (strcmp(harness_model(), "fork") == 0)
		return 0;
	return process_children(r->e.pid, kids, max);
}

/* A failed test leaves its echod behind: nothing of it may reach the next. */
static int
teardown(void **state)
{
	(void)state;
	if (running) {
		echod_kill(&running->e);
		notify_socket_close(&running->n);
		unlink(running->conf);
		running = NULL;
	}
	return 0;
}

/* Held connections accepted by the running generation itself. */
static void
test_one_more_after_held(void **state)
{
	static struct rig r; /* outlives a failure, for the teardown */
	char what[64];

	(void)state;
	rig_start(&r, 1, "");
	for (unsigned workers = 1; workers <= 4; workers++) {
		rig_reload(&r, workers, "");
		for (unsigned held = 0; held <= 3; held++) {
			while (r.n_held < held)
				rig_hold(&r);
			snprintf(what, sizeof(what), "Workers=%u", workers);
			rig_one_more(&r, what);
		}
		rig_release(&r);
	}
	rig_stop(&r);
}

/* Held connections kept across a reload from Workers=2 to Workers=1..4:
 * the new workers start with them, unevenly shared. */
static void
test_one_more_after_handed_over(void **state)
{
	static struct rig r; /* outlives a failure, for the teardown */
	char what[64];

	(void)state;
	rig_start(&r, 2, "");
	for (unsigned workers = 1; workers <= 4; workers++) {
		for (unsigned handed = 1; handed <= 3; handed++) {
			rig_reload(&r, 2, "");
			while (r.n_held < handed)
				rig_hold(&r);
			rig_reload(&r, workers, "");
			snprintf(what, sizeof(what), "Workers=2 -> %u, %u kept", workers,
				 handed);
			rig_one_more(&r, what);
			/* And with one more held beside the handed-over ones. */
			rig_hold(&r);
			rig_one_more(&r, what);
			rig_release(&r);
		}
	}
	rig_stop(&r);
}

/* MaxConnections= reached: the client beyond waits in the backlog, and
 * is served as soon as a held connection closes, with no other client
 * arriving to wake a worker. */
static void
test_waiting_client_served_when_room_frees(void **state)
{
	static struct rig r; /* outlives a failure, for the teardown */
	char data[1000];

	(void)state;
	fill_random(data, sizeof(data), 7);
	for (unsigned workers = 1; workers <= 4; workers++) {
		rig_start(&r, workers, "MaxConnections=2\n");
		rig_hold(&r);
		rig_hold(&r);
		int fd = tcp_connect(r.e.port);
		assert_true(fd >= 0);
		assert_int_equal(send(fd, data, sizeof(data), 0), (ssize_t)sizeof(data));
		/* Not served while the limit holds. */
		assert_false(wait_readable(fd, 300));
		close(r.held[--r.n_held]);
		char got[1000];
		ssize_t n = 0;
		while ((size_t)n < sizeof(got) && wait_readable(fd, ECHO_DEADLINE_MS)) {
			ssize_t k = recv(fd, got + n, sizeof(got) - (size_t)n, MSG_DONTWAIT);
			if (k <= 0)
				break;
			n += k;
		}
		if (n != (ssize_t)sizeof(data)) {
			print_message(
			    "# Workers=%u, MaxConnections=2: the waiting client got %zd of "
			    "1000 bytes after a held connection closed\n",
			    workers, n);
			fail();
		}
		assert_memory_equal(got, data, sizeof(data));
		close(fd);
		rig_stop(&r);
	}
}

/* Every worker full but one (WorkerConnections=1, the fd limit's
 * stand-in): a burst of as many clients as there are workers, connected
 * back to back, is served whole, whichever worker the kernel wakes. */
static void
test_burst_fills_every_worker(void **state)
{
	static struct rig r; /* outlives a failure, for the teardown */
	char what[64];

	(void)state;
	for (unsigned workers = 1; workers <= 4; workers++) {
		int fds[4];
		rig_start(&r, workers, "WorkerConnections=1\n");
		for (unsigned i = 0; i < workers; i++) {
			fds[i] = tcp_connect(r.e.port);
			assert_true(fds[i] >= 0);
		}
		for (unsigned i = 0; i < workers; i++) {
			snprintf(what, sizeof(what), "Workers=%u, WorkerConnections=1, client %u",
				 workers, i);
			if (echo_roundtrip(fds[i], what, strlen(what), ECHO_DEADLINE_MS) != 0) {
				print_message("# %s: no echo in %d ms\n", what, ECHO_DEADLINE_MS);
				fail();
			}
		}
		for (unsigned i = 0; i < workers; i++)
			close(fds[i]);
		rig_stop(&r);
	}
}

/* More clients at once than a worker's channel holds (the kernel queues a
 * few hundred fds on it) while the one worker is stopped: none of them is
 * accepted and closed. passfd's supervisor keeps the one it cannot send
 * and leaves the rest in the accept queue; prefork's worker finds them
 * queued there; fork serves each in a process of its own. */
#define BURST 400

/* The burst, against the one worker stopped; with reload, a reload while
 * it is stopped: what it had been sent, and what the supervisor had
 * queued for it, goes to the new generation's worker. Every client of the
 * burst is echoed, by whichever generation. */
static void
burst_beyond_the_channel(bool reload)
{
	static struct rig r; /* outlives a failure, for the teardown */
	static int fds[BURST];
	pid_t kids[4];
	size_t n_kids;

	rig_start(&r, 1, "");
	n_kids = rig_workers(&r, kids, 4);
	for (size_t i = 0; i < n_kids; i++)
		assert_int_equal(kill(kids[i], SIGSTOP), 0);
	for (int i = 0; i < BURST; i++) {
		fds[i] = tcp_connect(r.e.port);
		assert_true(fds[i] >= 0);
		assert_int_equal(send(fds[i], "b", 1, MSG_NOSIGNAL), 1);
	}
	/* Time for the supervisor to fill the channel, and more. */
	usleep(300 * 1000);
	if (reload) {
		rig_config(&r, 1, "");
		assert_int_equal(kill(r.e.pid, SIGHUP), 0);
		assert_non_null(notify_status_wait(&r.n, "gen 1", 5000));
	}
	for (size_t i = 0; i < n_kids; i++)
		assert_int_equal(kill(kids[i], SIGCONT), 0);
	for (int i = 0; i < BURST; i++) {
		char c = 0;

		if (!wait_readable(fds[i], ECHO_DEADLINE_MS) || recv(fds[i], &c, 1, 0) != 1 ||
		    c != 'b') {
			echod_collect_log(&r.e);
			print_message("# client %d of a burst of %d%s: no echo in %d ms\n", i,
				      BURST, reload ? ", reloaded while stopped" : "",
				      ECHO_DEADLINE_MS);
			fail();
		}
	}
	for (int i = 0; i < BURST; i++)
		close(fds[i]);
	rig_stop(&r);
}

static void
test_burst_beyond_the_channel(void **state)
{
	(void)state;
	burst_beyond_the_channel(false);
}

static void
test_burst_beyond_the_channel_then_reload(void **state)
{
	(void)state;
	burst_beyond_the_channel(true);
}

/* A burst queued at once (both workers stopped while 64 clients connect,
 * as when a balancer sends back the clients of a failed peer) is spread
 * over the workers: the busiest holds no more than 1.25 times the mean.
 * In prefork the kernel wakes one worker for the whole queue, which once
 * took 58 of 64 and left the other waking for each request of its six;
 * passfd's supervisor deals them out; fork serves each in a process of
 * its own. */
#define SPREAD_CLIENTS 64

static void
test_burst_spreads_over_workers(void **state)
{
	static struct rig r; /* outlives a failure, for the teardown */
	static int fds[SPREAD_CLIENTS];
	pid_t kids[SPREAD_CLIENTS + 1];
	size_t n_kids;
	bool fork_model = strcmp(harness_model(), "fork") == 0;

	(void)state;
	rig_start(&r, 2, "");
	n_kids = rig_workers(&r, kids, 2);
	assert_int_equal(n_kids, fork_model ? 0 : 2);
	for (size_t i = 0; i < n_kids; i++)
		assert_int_equal(kill(kids[i], SIGSTOP), 0);
	for (int i = 0; i < SPREAD_CLIENTS; i++) {
		fds[i] = tcp_connect(r.e.port);
		assert_true(fds[i] >= 0);
	}
	for (size_t i = 0; i < n_kids; i++)
		assert_int_equal(kill(kids[i], SIGCONT), 0);
	for (int i = 0; i < SPREAD_CLIENTS; i++)
		assert_int_equal(echo_roundtrip(fds[i], "spread", 6, ECHO_DEADLINE_MS), 0);
	if (fork_model) {
		/* Each held connection in a process of its own. */
		assert_true(process_children(r.e.pid, kids, SPREAD_CLIENTS + 1) >= SPREAD_CLIENTS);
	} else {
		int held[2], most;

		/* The clients' connections alone: a socket a worker opens for
		 * a moment (or closes as it settles in) is none of them. */
		for (size_t i = 0; i < n_kids; i++)
			held[i] = process_connection_count(kids[i], r.e.port);
		most = held[0] > held[1] ? held[0] : held[1];
		if (held[0] + held[1] != SPREAD_CLIENTS || most * 4 > SPREAD_CLIENTS / 2 * 5) {
			print_message("# %d clients at once: the workers hold %d and %d\n",
				      SPREAD_CLIENTS, held[0], held[1]);
			fail();
		}
	}
	for (int i = 0; i < SPREAD_CLIENTS; i++)
		close(fds[i]);
	rig_stop(&r);
}

/* ConnectionRateLimit= runs dry: the clients beyond wait for tokens and
 * are then served, one at a time, with nothing else to wake a worker. */
static void
test_rate_limited_clients_served(void **state)
{
	static struct rig r; /* outlives a failure, for the teardown */

	(void)state;
	for (unsigned workers = 1; workers <= 4; workers++) {
		rig_start(&r, workers, "ConnectionRateLimit=4\n");
		for (unsigned i = 0; i < 6; i++)
			rig_hold(&r);
		rig_one_more(&r, "ConnectionRateLimit=4");
		rig_stop(&r);
	}
}

/* prefork: short-lived clients first, so that the worker first in
 * scoreboard order watches alone and the other stands by; then each
 * worker in turn is stopped (SIGSTOP, as a debugger or a stalled machine
 * would) while exactly one more client connects. It is served either way:
 * by the worker still running at once, or, when the stopped one was
 * watching alone, by the one standing by once the stopped one's loop has
 * stood still for a second. */
static void
test_one_more_with_a_worker_stopped(void **state)
{
	static struct rig r; /* outlives a failure, for the teardown */
	pid_t kids[4];

	(void)state;
	rig_start(&r, 2, "");
	/* Enough closes on both workers for their average lifetime to read
	 * short: clients eight at a time, so that both take some. */
	for (int round = 0; round < 10; round++) {
		for (int i = 0; i < 8; i++)
			rig_hold(&r);
		rig_release(&r);
	}
	/* A load window (100 ms) passes, and the verdicts are published. */
	usleep(300 * 1000);
	rig_one_more(&r, "a short-lived client");
	assert_int_equal(process_children(r.e.pid, kids, 4), 2);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(kill(kids[i], SIGSTOP), 0);
		rig_one_more(&r, "a worker stopped");
		assert_int_equal(kill(kids[i], SIGCONT), 0);
	}
	rig_stop(&r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_one_more_after_held, teardown),
	    cmocka_unit_test_teardown(test_one_more_after_handed_over, teardown),
	    cmocka_unit_test_teardown(test_waiting_client_served_when_room_frees, teardown),
	    cmocka_unit_test_teardown(test_burst_fills_every_worker, teardown),
	    cmocka_unit_test_teardown(test_rate_limited_clients_served, teardown),
	    cmocka_unit_test_teardown(test_burst_spreads_over_workers, teardown),
	    cmocka_unit_test_teardown(test_burst_beyond_the_channel, teardown),
	    cmocka_unit_test_teardown(test_burst_beyond_the_channel_then_reload, teardown),
	    /* Last, as only prefork's workers stand by for each other. */
	    cmocka_unit_test_teardown(test_one_more_with_a_worker_stopped, teardown),
	};
	size_t n = sizeof(tests) / sizeof(tests[0]);

	if (strcmp(harness_model(), "prefork") != 0)
		n--;
	return _cmocka_run_group_tests("tests", tests, n, NULL, NULL);
}
