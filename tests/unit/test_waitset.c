/* waitset over real pipes, in both of its forms: the small set (poll) must
 * report what the epoll set reports, refuse what only epoll can do, and
 * never spin on an fd closed under it. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "waitset.h"

static void
new_pipe(int p[2])
{
	assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
}

/* Both forms: a readable fd comes back with its pointer, one not ready
 * does not, a change of events holds, and a removed fd is no longer
 * reported. */
static void
check_reports(bool small)
{
	struct waitset ws;
	struct epoll_event ev[4];
	int a[2], b[2], tag_a, tag_b;

	assert_int_equal(waitset_init(&ws, small), 0);
	assert_true(small ? ws.epoll_fd < 0 : ws.epoll_fd >= 0);
	new_pipe(a);
	new_pipe(b);
	assert_int_equal(waitset_add(&ws, a[0], EPOLLIN, &tag_a), 0);
	assert_int_equal(waitset_add(&ws, b[0], EPOLLIN, &tag_b), 0);
	assert_int_equal(waitset_add(&ws, a[0], EPOLLIN, &tag_a), -EEXIST);
	assert_int_equal(waitset_wait(&ws, ev, 4, 0), 0);

	assert_int_equal(write(a[1], "x", 1), 1);
	assert_int_equal(waitset_wait(&ws, ev, 4, 1000), 1);
	assert_ptr_equal(ev[0].data.ptr, &tag_a);
	assert_true(ev[0].events & EPOLLIN);

	/* Watched for writing instead, on the write end of b. */
	assert_int_equal(waitset_mod(&ws, b[0], 0, &tag_b), 0);
	assert_int_equal(waitset_add(&ws, b[1], EPOLLOUT, &tag_b), 0);
	assert_int_equal(waitset_wait(&ws, ev, 4, 1000), 2);
	assert_true((ev[0].data.ptr == &tag_a && ev[1].data.ptr == &tag_b) ||
		    (ev[0].data.ptr == &tag_b && ev[1].data.ptr == &tag_a));

	/* The peer gone: a hang-up is reported whatever was asked for. */
	waitset_del(&ws, b[1]);
	close(b[1]);
	assert_int_equal(waitset_mod(&ws, b[0], EPOLLIN, &tag_b), 0);
	waitset_del(&ws, a[0]);
	assert_int_equal(waitset_wait(&ws, ev, 4, 1000), 1);
	assert_ptr_equal(ev[0].data.ptr, &tag_b);
	assert_true(ev[0].events & EPOLLHUP);

	/* Not watched any more: nothing; deleting twice is harmless. */
	waitset_del(&ws, b[0]);
	waitset_del(&ws, b[0]);
	assert_int_equal(waitset_wait(&ws, ev, 4, 0), 0);
	if (small)
		assert_int_equal(waitset_mod(&ws, b[0], EPOLLIN, &tag_b), -ENOENT);

	close(a[0]);
	close(a[1]);
	close(b[0]);
	waitset_done(&ws);
	assert_int_equal(ws.epoll_fd, -1);
}

static void
test_epoll_set_reports(void **state)
{
	check_reports(false);
}

static void
test_small_set_reports(void **state)
{
	check_reports(true);
}

/* What only an epoll set can do is refused, and the set has a size. */
static void
test_small_set_limits(void **state)
{
	struct waitset ws;
	int p[WAITSET_SMALL_MAX + 1][2];

	assert_int_equal(waitset_init(&ws, true), 0);
	new_pipe(p[0]);
	assert_int_equal(waitset_add(&ws, p[0][0], EPOLLIN | EPOLLET, NULL), -EINVAL);
	assert_int_equal(waitset_add(&ws, p[0][0], EPOLLIN | EPOLLEXCLUSIVE, NULL), -EINVAL);
	assert_int_equal(waitset_add(&ws, -1, EPOLLIN, NULL), -EBADF);
	assert_int_equal(waitset_add(&ws, p[0][0], EPOLLIN, NULL), 0);
	assert_int_equal(waitset_mod(&ws, p[0][0], EPOLLIN | EPOLLET, NULL), -EINVAL);
	for (int i = 1; i < WAITSET_SMALL_MAX; i++) {
		new_pipe(p[i]);
		assert_int_equal(waitset_add(&ws, p[i][0], EPOLLIN, NULL), 0);
	}
	new_pipe(p[WAITSET_SMALL_MAX]);
	assert_int_equal(waitset_add(&ws, p[WAITSET_SMALL_MAX][0], EPOLLIN, NULL), -ENOSPC);
	for (int i = 0; i <= WAITSET_SMALL_MAX; i++) {
		close(p[i][0]);
		close(p[i][1]);
	}
	waitset_done(&ws);
}

/* An fd closed while still watched: poll() says POLLNVAL at once, every
 * time; the small set drops it, as an epoll set would, rather than have
 * the loop spin. */
static void
test_small_set_drops_closed_fd(void **state)
{
	struct waitset ws;
	struct epoll_event ev[2];
	int p[2];

	assert_int_equal(waitset_init(&ws, true), 0);
	new_pipe(p);
	assert_int_equal(waitset_add(&ws, p[0], EPOLLIN, NULL), 0);
	close(p[0]);
	assert_int_equal(waitset_wait(&ws, ev, 2, 0), 0);
	assert_int_equal(ws.n, 0);
	close(p[1]);
	waitset_done(&ws);
}

/* waitset_closing(): a socket only this process holds leaves an epoll set
 * by its close (nothing to do); the small set forgets it in any case. */
static void
test_closing(void **state)
{
	struct waitset ws;
	int p[2];

	assert_int_equal(waitset_init(&ws, true), 0);
	new_pipe(p);
	assert_int_equal(waitset_add(&ws, p[0], EPOLLIN, NULL), 0);
	waitset_closing(&ws, p[0], true);
	assert_int_equal(ws.n, 0);
	waitset_done(&ws);

	assert_int_equal(waitset_init(&ws, false), 0);
	assert_int_equal(waitset_add(&ws, p[0], EPOLLIN, NULL), 0);
	waitset_closing(&ws, p[0], false);
	/* Deleted: adding it again is allowed. */
	assert_int_equal(waitset_add(&ws, p[0], EPOLLIN, NULL), 0);
	waitset_done(&ws);
	close(p[0]);
	close(p[1]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_epoll_set_reports),
	    cmocka_unit_test(test_small_set_reports),
	    cmocka_unit_test(test_small_set_limits),
	    cmocka_unit_test(test_small_set_drops_closed_fd),
	    cmocka_unit_test(test_closing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
