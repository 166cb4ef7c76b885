/* lib/libsystemd-subset.c, linked here instead of libsystemd as in
 * echod-forker: notifications with fds and a barrier arrive as sd_notify(3)
 * describes them, and sd_is_socket() tells sockets apart as libsystemd's. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

/* A notify socket of the test's own, abstract or at a path, named in
 * $NOTIFY_SOCKET. */
static int
notify_socket(bool abstract, char *name, size_t size)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	socklen_t len;
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	if (abstract)
		snprintf(name, size, "@echod-test-notify-%d", (int)getpid());
	else
		snprintf(name, size, "/tmp/echod-test-notify-%d", (int)getpid());
	unlink(name);
	memcpy(sa.sun_path, name, strlen(name));
	if (abstract)
		sa.sun_path[0] = '\0';
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(name));
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, len), 0);
	assert_int_equal(setenv("NOTIFY_SOCKET", name, 1), 0);
	return fd;
}

/* One message: its text into buf, the fds it brought into fds. */
static size_t
receive(int fd, char *buf, size_t size, int *fds, size_t max)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 8)];
		struct cmsghdr align;
	} control;
	struct iovec iov = {.iov_base = buf, .iov_len = size - 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf)};
	ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
	size_t got = 0;

	assert_true(n >= 0);
	buf[n] = '\0';
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			got = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			assert_true(got <= max);
			memcpy(fds, CMSG_DATA(c), got * sizeof(int));
		}
	return got;
}

static void
check_fdstore(bool abstract)
{
	char name[108], buf[256];
	int sock = notify_socket(abstract, name, sizeof(name)), pair[2], got[8];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
	assert_int_equal(sd_pid_notify_with_fds(0, 0, "FDSTORE=1\nFDNAME=conn", pair, 1), 1);
	assert_int_equal(receive(sock, buf, sizeof(buf), got, 8), 1);
	assert_string_equal(buf, "FDSTORE=1\nFDNAME=conn");
	/* The very socket: what goes in one end comes out of the other. */
	assert_int_equal(write(got[0], "x", 1), 1);
	assert_int_equal(read(pair[1], buf, 1), 1);
	close(got[0]);
	assert_int_equal(sd_notifyf(0, "FDSTOREREMOVE=1\nFDNAME=%s", "conn"), 1);
	assert_int_equal(receive(sock, buf, sizeof(buf), got, 8), 0);
	assert_string_equal(buf, "FDSTOREREMOVE=1\nFDNAME=conn");
	/* For another process: not supported, said so. */
	assert_int_equal(sd_pid_notify_with_fds(1, 0, "READY=1", NULL, 0), -EOPNOTSUPP);
	close(pair[0]);
	close(pair[1]);
	close(sock);
	if (!abstract)
		unlink(name);
}

static void
test_fdstore_path_and_abstract(void **state)
{
	check_fdstore(false);
	check_fdstore(true);
}

static void
test_no_notify_socket(void **state)
{
	assert_int_equal(unsetenv("NOTIFY_SOCKET"), 0);
	assert_int_equal(sd_pid_notify_with_fds(0, 0, "FDSTORE=1", NULL, 0), 0);
	assert_int_equal(sd_notify_barrier(0, 1000000), 0);
	assert_int_equal(setenv("NOTIFY_SOCKET", "vsock:2:999", 1), 0);
	assert_int_equal(sd_notifyf(0, "READY=1"), -EAFNOSUPPORT);
	/* unset_environment, as libsystemd does it, even on failure. */
	assert_int_equal(sd_pid_notify_with_fds(0, 1, "READY=1", NULL, 0), -EAFNOSUPPORT);
	assert_null(getenv("NOTIFY_SOCKET"));
}

/* The service manager's side of a barrier: read the message, close the
 * fd that came with it (after a while: the barrier must wait). */
static void *
manager(void *arg)
{
	int sock = *(int *)arg, fds[8];
	char buf[64];

	if (receive(sock, buf, sizeof(buf), fds, 8) == 1 && strcmp(buf, "BARRIER=1") == 0) {
		usleep(100 * 1000);
		close(fds[0]);
	}
	return NULL;
}

static void
test_barrier(void **state)
{
	char name[108];
	int sock = notify_socket(true, name, sizeof(name));
	pthread_t t;

	assert_int_equal(pthread_create(&t, NULL, manager, &sock), 0);
	assert_int_equal(sd_notify_barrier(0, 5 * 1000 * 1000), 1);
	assert_int_equal(pthread_join(t, NULL), 0);
	/* Nobody reads: the barrier times out. */
	assert_int_equal(sd_notify_barrier(0, 50 * 1000), -ETIMEDOUT);
	close(sock);
}

static void
test_is_socket(void **state)
{
	int tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int udp = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int unix_pair[2], pipe_fds[2];

	assert_true(tcp >= 0 && udp >= 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, unix_pair), 0);
	assert_int_equal(pipe2(pipe_fds, O_CLOEXEC), 0);
	assert_int_equal(sd_is_socket(tcp, AF_UNSPEC, 0, -1), 1);
	assert_int_equal(sd_is_socket(tcp, AF_INET, SOCK_STREAM, 0), 1);
	assert_int_equal(sd_is_socket(tcp, AF_INET, SOCK_STREAM, 1), 0);
	assert_int_equal(sd_is_socket(tcp, AF_INET6, 0, -1), 0);
	assert_int_equal(sd_is_socket(pipe_fds[0], AF_UNSPEC, 0, -1), 0);
	assert_int_equal(sd_is_socket_inet(tcp, AF_UNSPEC, SOCK_STREAM, -1, 0), 1);
	assert_int_equal(sd_is_socket_inet(udp, AF_UNSPEC, SOCK_STREAM, -1, 0), 0);
	assert_int_equal(sd_is_socket_inet(udp, AF_INET6, SOCK_DGRAM, -1, 0), 1);
	assert_int_equal(sd_is_socket_inet(unix_pair[0], AF_UNSPEC, SOCK_STREAM, -1, 0), 0);
	assert_int_equal(sd_is_socket_inet(tcp, AF_UNIX, 0, -1, 0), -EINVAL);
	close(tcp);
	close(udp);
	close(unix_pair[0]);
	close(unix_pair[1]);
	close(pipe_fds[0]);
	close(pipe_fds[1]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fdstore_path_and_abstract),
	    cmocka_unit_test(test_no_notify_socket),
	    cmocka_unit_test(test_barrier),
	    cmocka_unit_test(test_is_socket),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
