/* accept.c: the kernel's refusals, injected with -Wl,--wrap=accept4, and
 * one real accept over loopback. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "accept.h"

int __real_accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags);
int __wrap_accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags);

/* A fake fd number the wrapper hands out for a successful accept. */
#define FAKE_FD 4242
/* Far above any sane retry count: reaching it means accept_next() spins. */
#define SPIN_LIMIT 100000

static struct {
	bool real;	   /* pass calls to the real accept4 */
	const int *script; /* errno per call, 0 = success */
	size_t n_script;
	int always; /* once the script is over: this errno, 0 = EAGAIN */
	unsigned calls;
	int last_fd, last_flags;
} wrap;

int
__wrap_accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
	int e;

	wrap.calls++;
	wrap.last_fd = fd;
	wrap.last_flags = flags;
	if (wrap.real)
		return __real_accept4(fd, addr, addrlen, flags);
	if (wrap.calls >= SPIN_LIMIT)
		fail_msg("accept_next() called accept4() %u times", wrap.calls);
	if (wrap.calls <= wrap.n_script)
		e = wrap.script[wrap.calls - 1];
	else
		e = wrap.always ? wrap.always : EAGAIN;
	if (e == 0)
		return FAKE_FD;
	errno = e;
	return -1;
}

static int
reset_wrap(void **state)
{
	memset(&wrap, 0, sizeof(wrap));
	return 0;
}

#define SCRIPT(...)                                                                                \
	do {                                                                                       \
		static const int s_[] = {__VA_ARGS__};                                             \
		wrap.script = s_;                                                                  \
		wrap.n_script = sizeof(s_) / sizeof(s_[0]);                                        \
	} while (0)

static void
test_retries_then_success(void **state)
{
	/* Connections that died in the backlog are skipped, invisibly. */
	SCRIPT(ECONNABORTED, EINTR, EPROTO, 0);
	assert_int_equal(accept_next(3), FAKE_FD);
	assert_int_equal(wrap.calls, 4);
	assert_int_equal(wrap.last_fd, 3);
	assert_int_equal(wrap.last_flags, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

static void
test_early_network_errors_retried(void **state)
{
	/* accept(2): Linux reports pending network errors of the new socket. */
	SCRIPT(ENETDOWN, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH,
	       ETIMEDOUT, ECONNRESET, 0);
	assert_int_equal(accept_next(3), FAKE_FD);
	assert_int_equal(wrap.calls, 10);
}

static void
test_eagain(void **state)
{
	SCRIPT(EAGAIN);
	assert_int_equal(accept_next(3), -EAGAIN);
	assert_int_equal(wrap.calls, 1);
	/* Nothing waiting is no reason to pause: wait for the next event. */
	assert_false(accept_should_pause(-EAGAIN));
}

static void
test_eagain_after_retry(void **state)
{
	SCRIPT(ECONNABORTED, EAGAIN);
	assert_int_equal(accept_next(3), -EAGAIN);
	assert_int_equal(wrap.calls, 2);
}

static void
check_pause_error(int e)
{
	static int one[1];

	memset(&wrap, 0, sizeof(wrap));
	one[0] = e;
	wrap.script = one;
	wrap.n_script = 1;
	/* Returned at once: retrying now would spin until fds free up. */
	assert_int_equal(accept_next(3), -e);
	assert_int_equal(wrap.calls, 1);
	assert_true(accept_should_pause(-e));
}

static void
test_fd_limits_pause(void **state)
{
	check_pause_error(EMFILE);
	check_pause_error(ENFILE);
	check_pause_error(ENOBUFS);
	check_pause_error(ENOMEM);
}

static void
test_unexpected_errors_pause(void **state)
{
	/* A broken listener must not be hammered either. */
	check_pause_error(EBADF);
	check_pause_error(EINVAL);
	check_pause_error(ENOTSOCK);
}

static void
test_always_failing_listener(void **state)
{
	int r;

	/* Every call reports a per-connection error: accept_next() must give
	 * up after a bounded number of tries instead of looping forever. */
	wrap.always = ECONNABORTED;
	r = accept_next(3);
	assert_true(r < 0);
	assert_true(wrap.calls > 1);
	assert_true(wrap.calls <= 64);

	/* And the next call is bounded the same way. */
	wrap.calls = 0;
	wrap.always = EINTR;
	r = accept_next(3);
	assert_true(r < 0);
	assert_true(wrap.calls > 1);
	assert_true(wrap.calls <= 64);
}

static void
test_real_accept(void **state)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct sockaddr_in local, peer;
	socklen_t salen = sizeof(sa), llen = sizeof(local), plen = sizeof(peer);
	int lfd, client, fd, flags;
	char c = 0;

	wrap.real = true;
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &salen), 0);

	/* Nothing waiting, from the real kernel. */
	assert_int_equal(accept_next(lfd), -EAGAIN);

	client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(client >= 0);
	assert_int_equal(connect(client, (struct sockaddr *)&sa, sizeof(sa)), 0);
	fd = accept_next(lfd);
	assert_true(fd >= 0);

	/* Close-on-exec and non-blocking from birth. */
	flags = fcntl(fd, F_GETFD);
	assert_true(flags >= 0);
	assert_true(flags & FD_CLOEXEC);
	flags = fcntl(fd, F_GETFL);
	assert_true(flags >= 0);
	assert_true(flags & O_NONBLOCK);

	/* It is the client's connection. */
	assert_int_equal(getsockname(client, (struct sockaddr *)&local, &llen), 0);
	assert_int_equal(getpeername(fd, (struct sockaddr *)&peer, &plen), 0);
	assert_int_equal(peer.sin_port, local.sin_port);
	assert_int_equal(send(client, "x", 1, 0), 1);
	assert_int_equal(recv(fd, &c, 1, MSG_WAITALL), 1);
	assert_int_equal(c, 'x');

	/* Drained again. */
	assert_int_equal(accept_next(lfd), -EAGAIN);
	close(fd);

	/* accept_next_peer() also tells who it is, without a getpeername(). */
	struct sockaddr_storage from;
	socklen_t fromlen = 0;
	assert_int_equal(accept_next_peer(lfd, &from, &fromlen), -EAGAIN);
	assert_int_equal(fromlen, 0);
	int client2 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(client2, (struct sockaddr *)&sa, sizeof(sa)), 0);
	llen = sizeof(local);
	assert_int_equal(getsockname(client2, (struct sockaddr *)&local, &llen), 0);
	fd = accept_next_peer(lfd, &from, &fromlen);
	assert_true(fd >= 0);
	assert_int_equal(fromlen, sizeof(struct sockaddr_in));
	assert_int_equal(((struct sockaddr_in *)&from)->sin_family, AF_INET);
	assert_int_equal(((struct sockaddr_in *)&from)->sin_port, local.sin_port);
	assert_int_equal(((struct sockaddr_in *)&from)->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
	close(fd);
	close(client2);
	close(client);
	close(lfd);
}

#define WRAP_TEST(f) cmocka_unit_test_setup(f, reset_wrap)

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    WRAP_TEST(test_retries_then_success),
	    WRAP_TEST(test_early_network_errors_retried),
	    WRAP_TEST(test_eagain),
	    WRAP_TEST(test_eagain_after_retry),
	    WRAP_TEST(test_fd_limits_pause),
	    WRAP_TEST(test_unexpected_errors_pause),
	    WRAP_TEST(test_always_failing_listener),
	    WRAP_TEST(test_real_accept),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
