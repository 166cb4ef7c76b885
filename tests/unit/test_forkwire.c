/* forkwire.c: the connection forker's reports, whole or refused. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fdpass.h"
#include "forkwire.h"

static void
channel(int pair[2])
{
	assert_int_equal(fdpass_channel_new(pair), 0);
}

static void
test_hello_and_exits(void **state)
{
	struct forkwire_report out, in;
	int pair[2];

	channel(pair);
	assert_int_equal(forkwire_recv(pair[FDPASS_SUPERVISOR], &in), -EAGAIN);
	assert_int_equal(forkwire_send(pair[FDPASS_WORKER], &out, 0), 0);
	assert_int_equal(forkwire_recv(pair[FDPASS_SUPERVISOR], &in), 0);
	for (int i = 0; i < FORKWIRE_EXITS_MAX; i++)
		out.exits[i] = (struct forkwire_exit){.pid = 1000 + i, .status = i << 8};
	assert_int_equal(forkwire_send(pair[FDPASS_WORKER], &out, 3), 0);
	assert_int_equal(forkwire_send(pair[FDPASS_WORKER], &out, FORKWIRE_EXITS_MAX), 0);
	assert_int_equal(forkwire_send(pair[FDPASS_WORKER], &out, FORKWIRE_EXITS_MAX + 1), -EINVAL);
	assert_int_equal(forkwire_recv(pair[FDPASS_SUPERVISOR], &in), 3);
	assert_int_equal(in.exits[2].pid, 1002);
	assert_int_equal(in.exits[2].status, 2 << 8);
	assert_int_equal(forkwire_recv(pair[FDPASS_SUPERVISOR], &in), FORKWIRE_EXITS_MAX);
	assert_int_equal(in.exits[FORKWIRE_EXITS_MAX - 1].pid, 1000 + FORKWIRE_EXITS_MAX - 1);
	/* The forker's end closed: EPIPE, not a report of nothing. */
	close(pair[FDPASS_WORKER]);
	assert_int_equal(forkwire_recv(pair[FDPASS_SUPERVISOR], &in), -EPIPE);
	close(pair[FDPASS_SUPERVISOR]);
}

static void
test_refuses_what_is_not_a_report(void **state)
{
	struct forkwire_report out, in;
	uint32_t wrong[2] = {0x12345678, 0};
	int pair[2];

	channel(pair);
	/* A wrong magic; a count that does not match the length; too short. */
	assert_int_equal(send(pair[FDPASS_WORKER], wrong, sizeof(wrong), 0), (ssize_t)sizeof(wrong));
	assert_int_equal(forkwire_recv(pair[FDPASS_SUPERVISOR], &in), -EPROTO);
	out = (struct forkwire_report){.magic = FORKWIRE_MAGIC, .n = 5};
	assert_int_equal(send(pair[FDPASS_WORKER], &out, 8 + 2 * sizeof(out.exits[0]), 0),
			 (ssize_t)(8 + 2 * sizeof(out.exits[0])));
	assert_int_equal(forkwire_recv(pair[FDPASS_SUPERVISOR], &in), -EPROTO);
	assert_int_equal(send(pair[FDPASS_WORKER], "x", 1, 0), 1);
	assert_int_equal(forkwire_recv(pair[FDPASS_SUPERVISOR], &in), -EPROTO);
	close(pair[FDPASS_WORKER]);
	close(pair[FDPASS_SUPERVISOR]);
}

/* A report never brings an fd: one that does is refused, and the fd it
 * brought is closed rather than left open here. */
static void
test_fd_brought_is_closed(void **state)
{
	struct forkwire_report in;
	int pair[2], pipe_fds[2];
	char byte;

	channel(pair);
	assert_int_equal(pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK), 0);
	assert_int_equal(fdpass_send(pair[FDPASS_WORKER], FDPASS_CONN, pipe_fds[1]), 0);
	close(pipe_fds[1]);
	assert_int_equal(forkwire_recv(pair[FDPASS_SUPERVISOR], &in), -EPROTO);
	/* The write end is gone everywhere: the read end sees EOF. */
	assert_int_equal(read(pipe_fds[0], &byte, 1), 0);
	close(pipe_fds[0]);
	close(pair[FDPASS_WORKER]);
	close(pair[FDPASS_SUPERVISOR]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hello_and_exits),
	    cmocka_unit_test(test_refuses_what_is_not_a_report),
	    cmocka_unit_test(test_fd_brought_is_closed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
