/* notify.c: every message as systemd receives it, on a real notify socket;
 * the STATUS= line and its rate limit. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"

#define MSEC UINT64_C(1000)
#define T0 (UINT64_C(1000000) * 3600) /* an hour after boot */

struct notify_socket {
	char dir[64];
	char path[96];
	int fd;
};

/* Binds a datagram socket in a new directory and points $NOTIFY_SOCKET at
 * it, as systemd does for Type=notify. */
static int
setup_socket(void **state)
{
	struct notify_socket *ns = calloc(1, sizeof(*ns));
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = 2};

	assert_non_null(ns);
	strcpy(ns->dir, "/tmp/echod-test-notify-XXXXXX");
	assert_non_null(mkdtemp(ns->dir));
	snprintf(ns->path, sizeof(ns->path), "%s/notify", ns->dir);
	ns->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(ns->fd >= 0);
	strcpy(sa.sun_path, ns->path);
	assert_int_equal(bind(ns->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	/* A missing message fails the test instead of hanging it. */
	assert_int_equal(setsockopt(ns->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	assert_int_equal(setenv("NOTIFY_SOCKET", ns->path, 1), 0);
	*state = ns;
	return 0;
}

static int
teardown_socket(void **state)
{
	struct notify_socket *ns = *state;

	unsetenv("NOTIFY_SOCKET");
	close(ns->fd);
	unlink(ns->path);
	rmdir(ns->dir);
	free(ns);
	return 0;
}

/* Receives one message and checks its exact text. */
static void
expect_message(struct notify_socket *ns, const char *text)
{
	char buf[4096];
	ssize_t n;

	n = recv(ns->fd, buf, sizeof(buf) - 1, 0);
	assert_true(n >= 0);
	buf[n] = '\0';
	assert_string_equal(buf, text);
}

static void
expect_nothing(struct notify_socket *ns)
{
	char buf[16];

	assert_int_equal(recv(ns->fd, buf, sizeof(buf), MSG_DONTWAIT), -1);
	assert_int_equal(errno, EAGAIN);
}

/* --- messages --- */

static void
test_ready_stopping_watchdog(void **state)
{
	struct notify_socket *ns = *state;

	assert_true(notify_ready() > 0);
	expect_message(ns, "READY=1");
	assert_true(notify_stopping() > 0);
	expect_message(ns, "STOPPING=1");
	assert_true(notify_watchdog() > 0);
	expect_message(ns, "WATCHDOG=1");
	expect_nothing(ns);
	/* unset_environment=0: the next message still finds the socket. */
	assert_string_equal(getenv("NOTIFY_SOCKET"), ns->path);
}

static void
test_reloading(void **state)
{
	struct notify_socket *ns = *state;

	assert_true(notify_reloading(UINT64_C(123456789012)) > 0);
	expect_message(ns, "RELOADING=1\nMONOTONIC_USEC=123456789012");
	assert_true(notify_reloading(UINT64_MAX) > 0);
	expect_message(ns, "RELOADING=1\nMONOTONIC_USEC=18446744073709551615");
	expect_nothing(ns);
}

static void
test_extend_timeout(void **state)
{
	struct notify_socket *ns = *state;

	assert_true(notify_extend_timeout(UINT64_C(5000000)) > 0);
	expect_message(ns, "EXTEND_TIMEOUT_USEC=5000000");
	expect_nothing(ns);
}

static void
test_errno(void **state)
{
	struct notify_socket *ns = *state;

	/* Our negative errno and errno itself say the same. */
	assert_true(notify_errno(-ENOENT) > 0);
	expect_message(ns, "ERRNO=2");
	assert_true(notify_errno(EACCES) > 0);
	expect_message(ns, "ERRNO=13");
	assert_int_equal(notify_errno(0), -EINVAL);
	expect_nothing(ns);
}

static void
test_no_socket(void **state)
{
	struct notify_status_limiter l = {0};
	struct notify_status s = {.model = "fork"};

	/* Not started by systemd: nothing to do, and no error. */
	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(notify_ready(), 0);
	assert_int_equal(notify_reloading(1), 0);
	assert_int_equal(notify_stopping(), 0);
	assert_int_equal(notify_extend_timeout(1), 0);
	assert_int_equal(notify_errno(-EIO), 0);
	assert_int_equal(notify_watchdog(), 0);
	assert_int_equal(notify_status_send(&l, &s, T0, true), 0);
}

static void
test_socket_gone(void **state)
{
	struct notify_socket *ns = *state;
	char missing[128];

	snprintf(missing, sizeof(missing), "%s/missing", ns->dir);
	assert_int_equal(setenv("NOTIFY_SOCKET", missing, 1), 0);
	assert_true(notify_ready() < 0);
}

static void
test_watchdog_enabled(void **state)
{
	char pid[32];
	uint64_t usec = 42;

	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	assert_false(notify_watchdog_enabled(&usec));
	assert_int_equal(usec, 42);

	assert_int_equal(setenv("WATCHDOG_USEC", "3000000", 1), 0);
	assert_true(notify_watchdog_enabled(&usec));
	assert_int_equal(usec, 3000000);
	assert_true(notify_watchdog_enabled(NULL));

	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	assert_int_equal(setenv("WATCHDOG_PID", pid, 1), 0);
	usec = 42;
	assert_true(notify_watchdog_enabled(&usec));
	assert_int_equal(usec, 3000000);
	/* unset_environment=0: asking again gives the same answer. */
	assert_non_null(getenv("WATCHDOG_USEC"));

	/* Meant for another process (a worker inherits the supervisor's). */
	snprintf(pid, sizeof(pid), "%ld", (long)getpid() + 1);
	assert_int_equal(setenv("WATCHDOG_PID", pid, 1), 0);
	usec = 42;
	assert_false(notify_watchdog_enabled(&usec));
	assert_int_equal(usec, 42);

	unsetenv("WATCHDOG_PID");
	assert_int_equal(setenv("WATCHDOG_USEC", "soon", 1), 0);
	assert_false(notify_watchdog_enabled(&usec));
	assert_int_equal(usec, 42);
	unsetenv("WATCHDOG_USEC");
}

/* --- STATUS= text --- */

static const struct notify_status example = {
    .model = "prefork",
    .workers_running = 2,
    .workers_wanted = 2,
    .active = 17,
    .served = 48211,
    .refused = 0,
    .generation = 3,
};

static void
test_format_plain(void **state)
{
	char buf[512];
	int r;

	r = notify_status_format(&example, buf, sizeof(buf));
	assert_string_equal(buf,
			    "prefork: 2/2 workers, 17 connections, 48211 served, 0 refused, gen 3");
	assert_int_equal(r, strlen(buf));
}

static void
test_format_udp_lost_note(void **state)
{
	struct notify_status s = example;
	char buf[512];

	/* Any one datagram counter brings in all three. */
	s.dgrams_dropped = 1;
	assert_true(notify_status_format(&s, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "prefork: 2/2 workers, 17 connections, 48211 served, 0 refused, "
				 "gen 3, udp 0 in/0 out/1 dropped");

	s.dgrams_in = 10;
	s.dgrams_out = 9;
	s.lost = 3;
	s.workers_running = 1;
	assert_true(notify_status_format(&s, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "prefork: 1/2 workers, 17 connections, 48211 served, 0 refused, "
				 "gen 3, udp 10 in/9 out/1 dropped, 3 lost");

	s.dgrams_in = s.dgrams_out = s.dgrams_dropped = 0;
	s.note = "reload rejected: /etc/echod/echod.conf:3: unknown key \"Modle\"";
	assert_true(notify_status_format(&s, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "prefork: 1/2 workers, 17 connections, 48211 served, 0 refused, "
				 "gen 3, 3 lost; reload rejected: /etc/echod/echod.conf:3: "
				 "unknown key \"Modle\"");

	/* An empty note is no note. */
	s.note = "";
	s.lost = 0;
	assert_true(notify_status_format(&s, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "prefork: 1/2 workers, 17 connections, 48211 served, 0 refused, "
				 "gen 3");
}

static void
test_format_note_one_line(void **state)
{
	struct notify_status s = example;
	char buf[512];

	/* A newline would be read as a second assignment: READY=1 here. */
	s.note = "bad\nREADY=1\r\tx\x7f";
	assert_true(notify_status_format(&s, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "prefork: 2/2 workers, 17 connections, 48211 served, 0 refused, "
				 "gen 3; bad READY=1  x ");
	assert_null(strchr(buf, '\n'));
}

static void
test_format_largest_numbers_fit(void **state)
{
	struct notify_status s = {
	    .model = "passfd",
	    .workers_running = UINT32_MAX,
	    .workers_wanted = UINT32_MAX,
	    .active = UINT64_MAX,
	    .served = UINT64_MAX,
	    .refused = UINT64_MAX,
	    .lost = UINT64_MAX,
	    .dgrams_in = UINT64_MAX,
	    .dgrams_out = UINT64_MAX,
	    .dgrams_dropped = UINT64_MAX,
	    .generation = UINT32_MAX,
	};
	struct notify_status_limiter l;
	char buf[sizeof(l.last)];
	int r;

	r = notify_status_format(&s, buf, sizeof(buf));
	assert_true(r > 0);
	/* At most half the limiter's buffer: the rest is for a note. */
	assert_int_equal(r, 256);
	assert_int_equal(r, strlen(buf));
}

static void
test_format_note_cut(void **state)
{
	struct notify_status s = example;
	char note[600], buf[100], expected[100];
	const char *counters =
	    "prefork: 2/2 workers, 17 connections, 48211 served, 0 refused, gen 3";
	int r;

	memset(note, 'x', sizeof(note) - 1);
	note[sizeof(note) - 1] = '\0';
	s.note = note;
	r = notify_status_format(&s, buf, sizeof(buf));
	assert_int_equal(r, sizeof(buf) - 1);
	assert_int_equal(strlen(buf), sizeof(buf) - 1);
	snprintf(expected, sizeof(expected), "%s; %.*s...", counters,
		 (int)(sizeof(buf) - 1 - strlen(counters) - 2 - 3), note);
	assert_string_equal(buf, expected);

	/* Cut before a UTF-8 sequence, not inside it: "é" is 2 bytes. */
	memset(note, 'x', sizeof(note));
	strcpy(note + sizeof(buf) - 1 - strlen(counters) - 2 - 3 - 1, "\xc3\xa9yyy");
	r = notify_status_format(&s, buf, sizeof(buf));
	assert_int_equal(r, sizeof(buf) - 2);
	assert_string_equal(buf + r - 4, "x...");

	/* No room for any of the note: the counters alone. */
	r = notify_status_format(&s, buf, strlen(counters) + 3);
	assert_int_equal(r, strlen(counters));
	assert_string_equal(buf, counters);
}

static void
test_format_errors(void **state)
{
	struct notify_status s = example;
	char buf[512];

	assert_int_equal(notify_status_format(&s, buf, 20), -ENOBUFS);
	assert_string_equal(buf, "");
	assert_int_equal(notify_status_format(&s, buf, 0), -EINVAL);
	assert_int_equal(notify_status_format(NULL, buf, sizeof(buf)), -EINVAL);

	/* The model starts the line and ends at ':'; it must be a word. */
	s.model = NULL;
	assert_int_equal(notify_status_format(&s, buf, sizeof(buf)), -EINVAL);
	s.model = "";
	assert_int_equal(notify_status_format(&s, buf, sizeof(buf)), -EINVAL);
	s.model = "pre fork";
	assert_int_equal(notify_status_format(&s, buf, sizeof(buf)), -EINVAL);
	s.model = "a:b";
	assert_int_equal(notify_status_format(&s, buf, sizeof(buf)), -EINVAL);
	s.model = "pre_fork-2";
	assert_true(notify_status_format(&s, buf, sizeof(buf)) > 0);
}

/* --- the limiter --- */

static void
test_limiter(void **state)
{
	struct notify_status_limiter l = {0};

	assert_true(notify_status_due(&l, "a", T0)); /* the first is always due */
	assert_false(notify_status_due(&l, "a", T0));
	assert_false(notify_status_due(&l, "a", T0 + 10000 * MSEC)); /* same text, ever */
	assert_false(notify_status_due(&l, "b", T0 + 1 * MSEC));     /* too soon */
	assert_false(notify_status_due(&l, "b", T0 + 249 * MSEC));
	assert_true(notify_status_due(&l, "b", T0 + 250 * MSEC));
	assert_false(notify_status_due(&l, "b", T0 + 600 * MSEC));
	/* A change held back is not remembered: it is due when asked again. */
	assert_false(notify_status_due(&l, "c", T0 + 300 * MSEC));
	assert_true(notify_status_due(&l, "c", T0 + 600 * MSEC));
	/* Back to an earlier text is a change too. */
	assert_true(notify_status_due(&l, "a", T0 + 900 * MSEC));
	/* A clock going back is no time passing. */
	assert_false(notify_status_due(&l, "d", T0));
	assert_true(notify_status_due(&l, "d", T0 + 1150 * MSEC));
}

/* notify_status_may_be_due() says no exactly when notify_status_due() would
 * say no to any text, and asking it counts nothing. */
static void
test_limiter_may_be_due(void **state)
{
	struct notify_status_limiter l = {0};

	assert_true(notify_status_may_be_due(&l, T0)); /* nothing sent yet */
	assert_true(notify_status_may_be_due(&l, T0)); /* asking is no send */
	assert_true(notify_status_due(&l, "a", T0));
	assert_false(notify_status_may_be_due(&l, T0));
	assert_false(notify_status_may_be_due(&l, T0 + 249 * MSEC));
	assert_false(notify_status_due(&l, "b", T0 + 249 * MSEC));
	assert_true(notify_status_may_be_due(&l, T0 + 250 * MSEC));
	/* Due in time, yet the same text is still not due. */
	assert_false(notify_status_due(&l, "a", T0 + 250 * MSEC));
	assert_true(notify_status_due(&l, "b", T0 + 250 * MSEC));
	/* A clock going back is no time passing. */
	assert_false(notify_status_may_be_due(&l, T0));
}

static void
test_limiter_long_text(void **state)
{
	struct notify_status_limiter l = {0};
	char text[sizeof(l.last) + 10];

	memset(text, 'x', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	assert_true(notify_status_due(&l, text, T0));
	/* Not remembered whole: sent again, but still no more than 4/s. */
	assert_false(notify_status_due(&l, text, T0 + 249 * MSEC));
	assert_true(notify_status_due(&l, text, T0 + 250 * MSEC));
}

static void
test_status_send(void **state)
{
	struct notify_socket *ns = *state;
	struct notify_status_limiter l = {0};
	struct notify_status s = example;

	assert_true(notify_status_send(&l, &s, T0, false) > 0);
	expect_message(ns, "STATUS=prefork: 2/2 workers, 17 connections, 48211 served, "
			   "0 refused, gen 3");

	/* Unchanged: not sent, however long after. */
	assert_int_equal(notify_status_send(&l, &s, T0 + 5000 * MSEC, false), 0);
	expect_nothing(ns);

	/* Changed, within 250 ms of the last send: not sent. */
	s.active = 18;
	assert_true(notify_status_send(&l, &s, T0 + 5000 * MSEC, false) > 0);
	expect_message(ns, "STATUS=prefork: 2/2 workers, 18 connections, 48211 served, "
			   "0 refused, gen 3");
	s.active = 19;
	assert_int_equal(notify_status_send(&l, &s, T0 + 5100 * MSEC, false), 0);
	assert_int_equal(notify_status_send(&l, &s, T0 + 5249 * MSEC, false), 0);
	expect_nothing(ns);
	/* Now it is. */
	assert_true(notify_status_send(&l, &s, T0 + 5250 * MSEC, false) > 0);
	expect_message(ns, "STATUS=prefork: 2/2 workers, 19 connections, 48211 served, "
			   "0 refused, gen 3");

	/* Forced (going with READY=1 and the like): sent at once, even the
	 * same text, and it counts for the limit. */
	s.generation = 4;
	s.note = "reload rejected: echod.conf:3: bad value";
	assert_true(notify_status_send(&l, &s, T0 + 5260 * MSEC, true) > 0);
	expect_message(ns, "STATUS=prefork: 2/2 workers, 19 connections, 48211 served, "
			   "0 refused, gen 4; reload rejected: echod.conf:3: bad value");
	assert_true(notify_status_send(&l, &s, T0 + 5270 * MSEC, true) > 0);
	expect_message(ns, "STATUS=prefork: 2/2 workers, 19 connections, 48211 served, "
			   "0 refused, gen 4; reload rejected: echod.conf:3: bad value");
	s.note = NULL;
	assert_int_equal(notify_status_send(&l, &s, T0 + 5300 * MSEC, false), 0);
	expect_nothing(ns);
	assert_true(notify_status_send(&l, &s, T0 + 5520 * MSEC, false) > 0);
	expect_message(ns, "STATUS=prefork: 2/2 workers, 19 connections, 48211 served, "
			   "0 refused, gen 4");

	/* A bad status is an error, and nothing goes out. */
	s.model = NULL;
	assert_int_equal(notify_status_send(&l, &s, T0 + 9000 * MSEC, true), -EINVAL);
	expect_nothing(ns);
}

static void
test_status_send_failure_not_counted(void **state)
{
	struct notify_socket *ns = *state;
	struct notify_status_limiter l = {0};
	struct notify_status s = example;
	char missing[128];

	snprintf(missing, sizeof(missing), "%s/missing", ns->dir);
	assert_int_equal(setenv("NOTIFY_SOCKET", missing, 1), 0);
	assert_true(notify_status_send(&l, &s, T0, false) < 0);

	/* The same text, at once: it never got out, so it is still due. */
	assert_int_equal(setenv("NOTIFY_SOCKET", ns->path, 1), 0);
	assert_true(notify_status_send(&l, &s, T0 + 1 * MSEC, false) > 0);
	expect_message(ns, "STATUS=prefork: 2/2 workers, 17 connections, 48211 served, "
			   "0 refused, gen 3");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_ready_stopping_watchdog, setup_socket,
					    teardown_socket),
	    cmocka_unit_test_setup_teardown(test_reloading, setup_socket, teardown_socket),
	    cmocka_unit_test_setup_teardown(test_extend_timeout, setup_socket, teardown_socket),
	    cmocka_unit_test_setup_teardown(test_errno, setup_socket, teardown_socket),
	    cmocka_unit_test_setup_teardown(test_no_socket, setup_socket, teardown_socket),
	    cmocka_unit_test_setup_teardown(test_socket_gone, setup_socket, teardown_socket),
	    cmocka_unit_test(test_watchdog_enabled),
	    cmocka_unit_test(test_format_plain),
	    cmocka_unit_test(test_format_udp_lost_note),
	    cmocka_unit_test(test_format_note_one_line),
	    cmocka_unit_test(test_format_largest_numbers_fit),
	    cmocka_unit_test(test_format_note_cut),
	    cmocka_unit_test(test_format_errors),
	    cmocka_unit_test(test_limiter),
	    cmocka_unit_test(test_limiter_may_be_due),
	    cmocka_unit_test(test_limiter_long_text),
	    cmocka_unit_test_setup_teardown(test_status_send, setup_socket, teardown_socket),
	    cmocka_unit_test_setup_teardown(test_status_send_failure_not_counted, setup_socket,
					    teardown_socket),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
