/* Connections kept across a reload, in the model $ECHOD_MODEL, end as
 * any other: a client that finishes sending gets its echo, then EOF. The
 * supervisor holds kept connections until new processes take them; a
 * child forked meanwhile must not keep a copy of the others' sockets, or
 * a connection its own process closed would stay open there, and its
 * client would never read EOF. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define KEPT 8

/* The fewest and most sockets a connection process of e holds now. */
static void
socket_spread(const struct echod *e, unsigned *ret_least, unsigned *ret_most)
{
	pid_t kids[64];
	size_t n = process_children(e->pid, kids, 64);

	*ret_least = UINT_MAX;
	*ret_most = 0;
	for (size_t i = 0; i < n; i++) {
		int count = process_socket_count(kids[i]);
		unsigned s = count > 0 ? (unsigned)count : 0;

		/* None: one of those exiting, its fds gone already. */
		if (s == 0)
			continue;
		*ret_least = s < *ret_least ? s : *ret_least;
		*ret_most = s > *ret_most ? s : *ret_most;
	}
}

/* fork: every connection process holds the same sockets, its own
 * connection among them; one forked while the supervisor held other kept
 * connections would hold those too, for its whole life. (One just forked
 * holds everything for a moment, until it has closed what is not its.) */
static void
assert_no_sibling_sockets(const struct echod *e)
{
	uint64_t end = monotonic_ms() + 3000;
	unsigned least, most;

	do {
		usleep(20000);
		socket_spread(e, &least, &most);
	} while (most != least && monotonic_ms() < end);
	if (most != least)
		fail_msg("connection processes hold %u to %u sockets: some hold their siblings'",
			 least, most);
}

static void
test_kept_connections_end(void **state)
{
	struct notify_socket n;
	struct echod e;
	int fds[KEPT];

	(void)state;
	notify_socket_open(&n);
	echod_start_env(&e, (const char *[]){n.env, NULL}, (const char *[]){"--workers", "2", NULL});
	assert_non_null(notify_status_wait(&n, " 0 connections,", 5000));
	for (int i = 0; i < KEPT; i++) {
		fds[i] = tcp_connect(e.port);
		assert_true(fds[i] >= 0);
		assert_int_equal(echo_roundtrip(fds[i], "before", 6, 3000), 0);
	}
	kill(e.pid, SIGHUP);
	assert_non_null(notify_status_wait(&n, " gen 1", 5000));
	assert_non_null(notify_status_wait(&n, " 8 connections,", 5000));
	if (strcmp(harness_model(), "fork") == 0)
		assert_no_sibling_sockets(&e);
	/* Newest first: a process forked earlier would hold the later
	 * ones' sockets. */
	for (int i = KEPT - 1; i >= 0; i--) {
		char buf[16];
		ssize_t got;

		assert_int_equal(echo_roundtrip(fds[i], "after", 5, 3000), 0);
		assert_int_equal(send(fds[i], "bye", 3, MSG_NOSIGNAL), 3);
		assert_int_equal(shutdown(fds[i], SHUT_WR), 0);
		got = read_until_eof(fds[i], buf, sizeof(buf), 3000);
		if (got != 3 || memcmp(buf, "bye", 3) != 0)
			fail_msg("kept connection %d of %d: %zd byte(s) and no EOF within 3 s", i + 1,
				 KEPT, got);
		close(fds[i]);
	}
	assert_int_equal(echod_stop(&e, 10000), 0);
	notify_socket_close(&n);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_kept_connections_end),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
