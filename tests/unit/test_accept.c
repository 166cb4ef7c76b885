/* accept.c: the kernel's refusals, injected with -Wl,--wrap=accept4, one
 * real accept over loopback, and turns as long as the accept queue that
 * listen_queue() counts. */
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
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "accept.h"
#include "listen.h"

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

static int
tcp_listener(struct sockaddr_in *ret_addr, int backlog)
{
	socklen_t len = sizeof(*ret_addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	*ret_addr =
	    (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)ret_addr, sizeof(*ret_addr)), 0);
	assert_int_equal(listen(fd, backlog), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)ret_addr, &len), 0);
	return fd;
}

/* Connects n clients to addr; their fds go to ret_clients. */
static void
connect_clients(const struct sockaddr_in *addr, int *ret_clients, int n)
{
	for (int i = 0; i < n; i++) {
		ret_clients[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(ret_clients[i] >= 0);
		assert_int_equal(
		    connect(ret_clients[i], (const struct sockaddr *)addr, sizeof(*addr)), 0);
	}
}

/* listen_queue()'s count, or its negative errno. */
static int
queued_on(int fd)
{
	unsigned queued, room;
	int r = listen_queue(fd, &queued, &room);

	return r < 0 ? r : (int)queued;
}

/* The queue as the kernel counts it, once it holds at least want: the
 * handshake's last step may finish after connect() returns. Bounded. */
static int
queue_length_reaching(int lfd, int want)
{
	int n = queued_on(lfd);

	for (int i = 0; i < 200 && n >= 0 && n < want; i++) {
		poll(NULL, 0, 5);
		n = queued_on(lfd);
	}
	return n;
}

static void
test_queue_counted(void **state)
{
	struct sockaddr_in sa;
	int clients[3], lfd, fd;

	wrap.real = true;
	lfd = tcp_listener(&sa, 16);
	assert_int_equal(queued_on(lfd), 0);
	unsigned queued = 1, room = 0;
	assert_int_equal(listen_queue(lfd, &queued, &room), 0);
	assert_int_equal(queued, 0);
	/* The backlog listen() was given. */
	assert_int_equal(room, 16);
	/* Nothing queued: a turn makes no accept() at all. */
	assert_int_equal(accept_turn_size(lfd, true), 0);

	connect_clients(&sa, clients, 3);
	assert_int_equal(queue_length_reaching(lfd, 3), 3);
	assert_int_equal(accept_turn_size(lfd, true), 3);
	fd = accept_next(lfd);
	assert_true(fd >= 0);
	assert_int_equal(queued_on(lfd), 2);
	/* Not known to be TCP: until EAGAIN says the queue is empty. */
	assert_int_equal(accept_turn_size(lfd, false), ACCEPT_BATCH);

	close(fd);
	for (int i = 0; i < 3; i++)
		close(clients[i]);
	close(lfd);
}

static void
test_queue_beyond_a_batch(void **state)
{
	struct sockaddr_in sa;
	int clients[ACCEPT_BATCH + 2], lfd;

	wrap.real = true;
	lfd = tcp_listener(&sa, ACCEPT_BATCH * 2);
	connect_clients(&sa, clients, ACCEPT_BATCH + 2);
	assert_int_equal(queue_length_reaching(lfd, ACCEPT_BATCH + 2), ACCEPT_BATCH + 2);
	/* One turn takes a batch; the next wait reports the rest. */
	assert_int_equal(accept_turn_size(lfd, true), ACCEPT_BATCH);
	for (int i = 0; i < ACCEPT_BATCH + 2; i++)
		close(clients[i]);
	close(lfd);
}

static void
test_queue_not_countable(void **state)
{
	struct sockaddr_in sa;
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	int lfd, client, fd, ufd;

	wrap.real = true;
	/* A connected TCP socket is no listener: its count means nothing. */
	lfd = tcp_listener(&sa, 4);
	connect_clients(&sa, &client, 1);
	assert_int_equal(queue_length_reaching(lfd, 1), 1);
	fd = accept_next(lfd);
	assert_true(fd >= 0);
	assert_int_equal(queued_on(fd), -EINVAL);
	assert_int_equal(queued_on(client), -EINVAL);

	/* A UNIX listener has no TCP_INFO. */
	ufd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	assert_true(ufd >= 0);
	/* Autobound in the abstract namespace: no file to clean up. */
	assert_int_equal(bind(ufd, (struct sockaddr *)&un, sizeof(sa_family_t)), 0);
	assert_int_equal(listen(ufd, 4), 0);
	assert_true(queued_on(ufd) < 0);
	assert_int_equal(accept_turn_size(ufd, false), ACCEPT_BATCH);

	close(ufd);
	close(fd);
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
	    WRAP_TEST(test_queue_counted),
	    WRAP_TEST(test_queue_beyond_a_batch),
	    WRAP_TEST(test_queue_not_countable),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
