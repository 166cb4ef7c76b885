/* fdclose.c: on real fds, every fd added is closed and nothing else, not
 * even an fd whose number falls between two that close together. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdbool.h>
#include <unistd.h>

#include "fdclose.h"

#define N_FDS 12

static bool
is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

/* N_FDS fds, numbered in a row as the lowest free numbers are. */
static void
open_run(int fds[N_FDS])
{
	for (int i = 0; i < N_FDS; i++) {
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		assert_true(fds[i] >= 0);
	}
}

static void
close_run(const int fds[N_FDS])
{
	for (int i = 0; i < N_FDS; i++)
		if (is_open(fds[i]))
			close(fds[i]);
}

/* Added out of order, with gaps and a duplicate: exactly those close. */
static void
test_closes_what_was_added_only(void **state)
{
	int fds[N_FDS];
	struct fd_closer c = {0};
	const int picks[] = {7, 2, 3, 9, 4, 3, 11, 0};
	bool picked[N_FDS] = {false};

	(void)state;
	open_run(fds);
	for (size_t i = 0; i < sizeof(picks) / sizeof(picks[0]); i++) {
		fd_closer_add(&c, fds[picks[i]]);
		picked[picks[i]] = true;
	}
	fd_closer_add(&c, -1);
	fd_closer_close(&c);
	assert_int_equal(c.n, 0);
	for (int i = 0; i < N_FDS; i++)
		assert_int_equal(is_open(fds[i]), !picked[i]);
	close_run(fds);
}

/* More than FD_CLOSER_MAX: the closer flushes as it fills; all close. */
static void
test_more_than_fit(void **state)
{
	int fds[FD_CLOSER_MAX + 5];
	struct fd_closer c = {0};

	(void)state;
	for (size_t i = 0; i < FD_CLOSER_MAX + 5; i++) {
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		assert_true(fds[i] >= 0);
		fd_closer_add(&c, fds[i]);
	}
	assert_true(c.n <= FD_CLOSER_MAX);
	fd_closer_close(&c);
	for (size_t i = 0; i < FD_CLOSER_MAX + 5; i++)
		assert_false(is_open(fds[i]));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_closes_what_was_added_only),
	    cmocka_unit_test(test_more_than_fit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
