/* What STATUS= counts for connections that outlive a process: a connection
 * kept across a reload is served once, counted where it was first accepted,
 * not again by the process that takes it back. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#define KEPT "connection(s) kept across the reload are served again"

/* Waits until STATUS= says `served` connections were served; fails the test
 * with the last status seen otherwise. */
static void
expect_served(struct notify_socket *n, long served)
{
	char want[32];

	snprintf(want, sizeof(want), " %ld served,", served);
	if (!notify_status_wait(n, want, 3000))
		fail_msg("wanted%s, STATUS=%s", want, n->status);
}

/* Two reloads with one connection held: the connection is sent back and
 * taken by a new process twice, and still counts as one served. */
static void
test_kept_connection_served_once(void **state)
{
	struct notify_socket n;
	struct echod e;
	long served;
	int fd;

	notify_socket_open(&n);
	echod_start_env(&e, (const char *[]){n.env, NULL},
			(const char *[]){"--workers", "2", NULL});
	fd = tcp_connect(e.port);
	assert_true(fd >= 0);
	assert_int_equal(echo_roundtrip(fd, "first", 5, 2000), 0);
	/* Ours and the start-up probe's, settled. */
	assert_non_null(notify_status_wait(&n, " 1 connections,", 5000));
	served = status_count(notify_status_after(&n, 600), "served");
	assert_true(served >= 1);
	for (int i = 0; i < 2; i++) {
		uint64_t end = monotonic_ms() + 5000;

		kill(e.pid, SIGHUP);
		while (echod_log_count(&e, KEPT) < (unsigned)i + 1 && monotonic_ms() < end)
			usleep(20000);
		assert_int_equal(echod_log_count(&e, KEPT), i + 1);
		assert_int_equal(echo_roundtrip(fd, "again", 5, 2000), 0);
	}
	/* Long enough for a STATUS= that would count it again. */
	print_message("# %s\n", notify_status_after(&n, 1500));
	expect_served(&n, served);
	close(fd);
	assert_int_equal(echod_stop(&e, 15000), 0);
	notify_socket_close(&n);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_kept_connection_served_once),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name(harness_model(), tests, NULL, NULL);
}
