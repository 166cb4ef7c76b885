/* udp: real loopback sockets on 127.0.0.1 and ::1. recvmmsg() and sendmmsg()
 * are wrapped (-Wl,--wrap) only to inject what loopback never does: a
 * truncated datagram, a partial send, a full socket buffer, a refused one. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "udp.h"

#define SEC UINT64_C(1000000)
#define T0 (1000 * SEC)

/* --- kernel error injection --- */

int __real_recvmmsg(int fd, struct mmsghdr *vec, unsigned vlen, int flags, struct timespec *tmo);
int __wrap_recvmmsg(int fd, struct mmsghdr *vec, unsigned vlen, int flags, struct timespec *tmo);
int __real_sendmmsg(int fd, struct mmsghdr *vec, unsigned vlen, int flags);
int __wrap_sendmmsg(int fd, struct mmsghdr *vec, unsigned vlen, int flags);

/* Index in the next received batch to mark MSG_TRUNC, or -1. */
static int truncate_index = -1;
/* One step per sendmmsg() call: > 0 sends at most that many, < 0 fails with
 * that -errno, 0 (and past the end) passes through. */
static int send_script[8];
static unsigned send_step;
static unsigned send_calls;

int
__wrap_recvmmsg(int fd, struct mmsghdr *vec, unsigned vlen, int flags, struct timespec *tmo)
{
	int n = __real_recvmmsg(fd, vec, vlen, flags, tmo);

	if (n > truncate_index && truncate_index >= 0) {
		vec[truncate_index].msg_hdr.msg_flags |= MSG_TRUNC;
		truncate_index = -1;
	}
	return n;
}

int
__wrap_sendmmsg(int fd, struct mmsghdr *vec, unsigned vlen, int flags)
{
	int step = send_step < ELEMENTSOF(send_script) ? send_script[send_step] : 0;

	send_calls++;
	send_step++;
	if (step < 0) {
		errno = -step;
		return -1;
	}
	if (step > 0 && vlen > (unsigned)step)
		vlen = step;
	return __real_sendmmsg(fd, vec, vlen, flags);
}

static int
reset_injection(void **state)
{
	truncate_index = -1;
	memset(send_script, 0, sizeof(send_script));
	send_step = send_calls = 0;
	return 0;
}

/* --- sockets --- */

static struct sockaddr_storage
sockaddr_make(int family, const char *addr, uint16_t port, socklen_t *ret_len)
{
	struct sockaddr_storage ss = {};

	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		assert_int_equal(inet_pton(AF_INET, addr, &sin->sin_addr), 1);
		*ret_len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		assert_int_equal(inet_pton(AF_INET6, addr, &sin6->sin6_addr), 1);
		*ret_len = sizeof(*sin6);
	}
	return ss;
}

/* Binds a new socket to addr:port (port 0: ephemeral). Returns the fd or
 * -errno. Buffers are forced large so that a test's burst is never dropped by
 * the kernel, only by echod. */
static int
socket_bound(int family, const char *addr, uint16_t port)
{
	_cleanup_close_ int fd = -1;
	struct sockaddr_storage ss;
	socklen_t len;
	int size = 4 << 20;

	fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return negative_errno();
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size));
	ss = sockaddr_make(family, addr, port, &len);
	if (bind(fd, (struct sockaddr *)&ss, len) < 0)
		return negative_errno();
	return TAKE_FD(fd);
}

static uint16_t
local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port); /* same offset in _in6 */
}

static void
send_to(int fd, int family, const char *addr, uint16_t port, const void *buf, size_t size)
{
	socklen_t len;
	struct sockaddr_storage ss = sockaddr_make(family, addr, port, &len);

	assert_int_equal(sendto(fd, buf, size, 0, (struct sockaddr *)&ss, len), (ssize_t)size);
}

/* Returns the size of the next datagram on fd, or -1 when none came within
 * timeout_ms. */
static ssize_t
recv_within(int fd, void *buf, size_t size, int timeout_ms, struct sockaddr_storage *ret_from)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	socklen_t len = sizeof(*ret_from);

	if (poll(&p, 1, timeout_ms) <= 0)
		return -1;
	return recvfrom(fd, buf, size, 0, (struct sockaddr *)ret_from, &len);
}

/* Serves fd until expected datagrams have come in (or 5 s have passed). */
static void
serve_until(struct udp_echo *u, int fd, struct ratelimit *rl, uint64_t now, struct udp_counters *c,
	    uint64_t expected)
{
	for (int i = 0; i < 50 && c->datagrams_in < expected; i++) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r;

		if (poll(&p, 1, 100) <= 0)
			continue;
		r = udp_echo_serve(u, fd, rl, now, c);
		assert_true(r > 0 || r == -EAGAIN);
	}
	assert_int_equal(c->datagrams_in, expected);
}

static bool
have_ipv6(void)
{
	_cleanup_close_ int fd = socket_bound(AF_INET6, "::1", 0);

	return fd >= 0;
}

static void
fill(uint8_t *buf, size_t size, unsigned seed)
{
	for (size_t i = 0; i < size; i++)
		buf[i] = (uint8_t)(i * 31 + seed);
}

/* --- tests --- */

static void
echo_sizes(int family, const char *addr, size_t largest)
{
	static uint8_t out[UDP_BUFFER_SIZE], in[UDP_BUFFER_SIZE];
	const size_t sizes[] = {0, 1, 512, 8192, largest};
	struct udp_echo u = {};
	struct udp_counters c = {};
	_cleanup_close_ int server = -1, client = -1;
	uint64_t bytes = 0;

	server = socket_bound(family, addr, 0);
	client = socket_bound(family, addr, 0);
	assert_true(server >= 0 && client >= 0);

	for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
		struct sockaddr_storage from;

		fill(out, sizes[i], i);
		memset(in, 0xee, sizeof(in));
		send_to(client, family, addr, local_port(server), out, sizes[i]);
		serve_until(&u, server, NULL, T0, &c, i + 1);
		assert_int_equal(recv_within(client, in, sizeof(in), 2000, &from), sizes[i]);
		assert_memory_equal(in, out, sizes[i]);
		assert_int_equal(local_port(server),
				 ntohs(((struct sockaddr_in *)&from)->sin_port));
		bytes += sizes[i];
	}

	/* One byte more than the largest does not fit in a UDP datagram. */
	{
		socklen_t len;
		struct sockaddr_storage ss = sockaddr_make(family, addr, local_port(server), &len);

		assert_int_equal(sendto(client, out, largest + 1, 0, (struct sockaddr *)&ss, len),
				 -1);
		assert_int_equal(errno, EMSGSIZE);
	}

	assert_int_equal(c.datagrams_out, ELEMENTSOF(sizes));
	assert_int_equal(c.bytes_in, bytes);
	assert_int_equal(c.bytes_out, bytes);
	assert_int_equal(udp_counters_dropped(&c), 0);
	udp_echo_free(&u);
	assert_null(u.batch);
}

static void
test_sizes_ipv4(void **state)
{
	echo_sizes(AF_INET, "127.0.0.1", 65507);
}

static void
test_sizes_ipv6(void **state)
{
	if (!have_ipv6())
		skip();
	echo_sizes(AF_INET6, "::1", 65527);
}

static void
test_nothing_waiting(void **state)
{
	struct udp_echo u = {};
	struct udp_counters c = {};
	_cleanup_close_ int server = socket_bound(AF_INET, "127.0.0.1", 0);

	assert_int_equal(udp_echo_serve(&u, server, NULL, T0, &c), -EAGAIN);
	assert_int_equal(c.datagrams_in, 0);
	assert_int_equal(udp_echo_serve(&u, -1, NULL, T0, &c), -EBADF);
	udp_echo_free(&u);
	udp_echo_free(&u); /* twice is harmless */
}

static void
test_many_senders(void **state)
{
	enum { SENDERS = 5, EACH = 7 }; /* 35 datagrams: more than two batches */
	struct udp_echo u = {};
	struct udp_counters c = {};
	_cleanup_close_ int server = socket_bound(AF_INET, "127.0.0.1", 0);
	int clients[SENDERS];
	char msg[64], got[64];

	for (int s = 0; s < SENDERS; s++) {
		clients[s] = socket_bound(AF_INET, "127.0.0.1", 0);
		assert_true(clients[s] >= 0);
	}
	/* Interleaved, so one batch holds several senders. */
	for (int j = 0; j < EACH; j++)
		for (int s = 0; s < SENDERS; s++) {
			int n = snprintf(msg, sizeof(msg), "sender %d datagram %d", s, j);

			send_to(clients[s], AF_INET, "127.0.0.1", local_port(server), msg, n);
		}
	serve_until(&u, server, NULL, T0, &c, SENDERS * EACH);
	assert_int_equal(c.datagrams_out, SENDERS * EACH);

	for (int s = 0; s < SENDERS; s++) {
		struct sockaddr_storage from;

		for (int j = 0; j < EACH; j++) {
			int n = snprintf(msg, sizeof(msg), "sender %d datagram %d", s, j);

			assert_int_equal(recv_within(clients[s], got, sizeof(got), 2000, &from), n);
			assert_memory_equal(got, msg, n);
		}
		assert_int_equal(recv_within(clients[s], got, sizeof(got), 20, &from), -1);
		close(clients[s]);
	}
	udp_echo_free(&u);
}

static void
test_bounded_work(void **state)
{
	struct udp_echo u = {};
	struct udp_counters c = {};
	_cleanup_close_ int server = socket_bound(AF_INET, "127.0.0.1", 0);
	_cleanup_close_ int client = socket_bound(AF_INET, "127.0.0.1", 0);
	const int max = UDP_BATCH * UDP_BATCHES_PER_SERVE;

	for (int i = 0; i < max + 10; i++)
		send_to(client, AF_INET, "127.0.0.1", local_port(server), "x", 1);
	assert_int_equal(udp_echo_serve(&u, server, NULL, T0, &c), max);
	assert_int_equal(udp_echo_serve(&u, server, NULL, T0, &c), 10);
	assert_int_equal(udp_echo_serve(&u, server, NULL, T0, &c), -EAGAIN);
	assert_int_equal(c.datagrams_out, max + 10);
	udp_echo_free(&u);
}

static void
test_privileged_port_dropped(void **state)
{
	struct udp_echo u = {};
	struct udp_counters c = {};
	_cleanup_close_ int server = socket_bound(AF_INET, "127.0.0.1", 0);
	_cleanup_close_ int low = -1, client = -1;
	struct sockaddr_storage from;
	char got[16];

	/* Tests run as root; any free port below 1024 will do. */
	for (uint16_t port = 900; port <= 1000 && low < 0; port++)
		low = socket_bound(AF_INET, "127.0.0.1", port);
	if (low < 0)
		skip(); /* not root, or all taken */

	send_to(low, AF_INET, "127.0.0.1", local_port(server), "loop?", 5);
	serve_until(&u, server, NULL, T0, &c, 1);
	assert_int_equal(c.dropped_port, 1);
	assert_int_equal(c.datagrams_out, 0);
	assert_int_equal(recv_within(low, got, sizeof(got), 100, &from), -1);

	/* The server still answers everyone else. */
	client = socket_bound(AF_INET, "127.0.0.1", 0);
	send_to(client, AF_INET, "127.0.0.1", local_port(server), "hi", 2);
	serve_until(&u, server, NULL, T0, &c, 2);
	assert_int_equal(recv_within(client, got, sizeof(got), 2000, &from), 2);
	assert_int_equal(c.datagrams_out, 1);
	udp_echo_free(&u);
}

static void
test_source_acceptable(void **state)
{
	static const struct {
		int family;
		const char *addr;
		uint16_t port;
		bool ok;
	} table[] = {
	    {AF_INET, "192.0.2.1", 40000, true},
	    {AF_INET, "127.0.0.1", 1024, true},
	    {AF_INET, "192.0.2.1", 1023, false},
	    {AF_INET, "192.0.2.1", 7, false},
	    {AF_INET, "192.0.2.1", 0, false},
	    {AF_INET, "0.0.0.0", 40000, false},
	    {AF_INET, "0.1.2.3", 40000, false},
	    {AF_INET, "224.0.0.1", 40000, false},
	    {AF_INET, "239.255.255.255", 40000, false},
	    {AF_INET, "223.255.255.255", 40000, true},
	    {AF_INET, "240.0.0.1", 40000, true},
	    {AF_INET, "255.255.255.255", 40000, false},
	    {AF_INET6, "2001:db8::1", 40000, true},
	    {AF_INET6, "::1", 40000, true},
	    {AF_INET6, "fe80::1", 40000, true},
	    {AF_INET6, "2001:db8::1", 1023, false},
	    {AF_INET6, "2001:db8::1", 0, false},
	    {AF_INET6, "::", 40000, false},
	    {AF_INET6, "ff02::1", 40000, false},
	    {AF_INET6, "ff05::1:3", 40000, false},
	    {AF_INET6, "::ffff:192.0.2.1", 40000, true},
	    {AF_INET6, "::ffff:192.0.2.1", 53, false},
	    {AF_INET6, "::ffff:0.0.0.0", 40000, false},
	    {AF_INET6, "::ffff:224.0.0.251", 40000, false},
	    {AF_INET6, "::ffff:255.255.255.255", 40000, false},
	};
	struct sockaddr unknown = {.sa_family = AF_UNIX};

	for (size_t i = 0; i < ELEMENTSOF(table); i++) {
		socklen_t len;
		struct sockaddr_storage ss =
		    sockaddr_make(table[i].family, table[i].addr, table[i].port, &len);

		if (udp_source_acceptable((struct sockaddr *)&ss) != table[i].ok)
			fail_msg("%s port %u: expected %s", table[i].addr, table[i].port,
				 table[i].ok ? "acceptable" : "refused");
	}
	assert_false(udp_source_acceptable(&unknown));
}

static void
test_truncated_not_echoed(void **state)
{
	struct udp_echo u = {};
	struct udp_counters c = {};
	_cleanup_close_ int server = socket_bound(AF_INET, "127.0.0.1", 0);
	_cleanup_close_ int client = socket_bound(AF_INET, "127.0.0.1", 0);
	struct sockaddr_storage from;
	char got[16];

	send_to(client, AF_INET, "127.0.0.1", local_port(server), "first", 5);
	send_to(client, AF_INET, "127.0.0.1", local_port(server), "second", 6);
	truncate_index = 0;
	serve_until(&u, server, NULL, T0, &c, 2);
	assert_int_equal(c.dropped_truncated, 1);
	assert_int_equal(c.datagrams_out, 1);
	assert_int_equal(recv_within(client, got, sizeof(got), 2000, &from), 6);
	assert_memory_equal(got, "second", 6);
	assert_int_equal(recv_within(client, got, sizeof(got), 20, &from), -1);
	udp_echo_free(&u);
}

/* Sends n one-byte datagrams 'a', 'b'... and serves them in one call. */
static void
serve_five(int server, int client, struct udp_echo *u, struct udp_counters *c)
{
	for (char ch = 'a'; ch < 'a' + 5; ch++)
		send_to(client, AF_INET, "127.0.0.1", local_port(server), &ch, 1);
	assert_int_equal(udp_echo_serve(u, server, NULL, T0, c), 5);
}

static void
expect_replies(int client, const char *expected)
{
	struct sockaddr_storage from;
	char got;

	for (const char *p = expected; *p; p++) {
		assert_int_equal(recv_within(client, &got, 1, 2000, &from), 1);
		assert_int_equal(got, *p);
	}
	assert_int_equal(recv_within(client, &got, 1, 20, &from), -1);
}

static void
test_partial_send_continues(void **state)
{
	struct udp_echo u = {};
	struct udp_counters c = {};
	_cleanup_close_ int server = socket_bound(AF_INET, "127.0.0.1", 0);
	_cleanup_close_ int client = socket_bound(AF_INET, "127.0.0.1", 0);

	send_script[0] = 1;
	send_script[1] = 2;
	serve_five(server, client, &u, &c);
	assert_int_equal(send_calls, 3); /* 1 + 2 + the remaining 2 */
	assert_int_equal(c.datagrams_out, 5);
	expect_replies(client, "abcde");
	udp_echo_free(&u);
}

static void
test_send_eagain_drops_rest(void **state)
{
	struct udp_echo u = {};
	struct udp_counters c = {};
	_cleanup_close_ int server = socket_bound(AF_INET, "127.0.0.1", 0);
	_cleanup_close_ int client = socket_bound(AF_INET, "127.0.0.1", 0);

	send_script[0] = 2;
	send_script[1] = -EAGAIN;
	serve_five(server, client, &u, &c);
	assert_int_equal(send_calls, 2); /* no retry: never spin, never block */
	assert_int_equal(c.datagrams_out, 2);
	assert_int_equal(c.dropped_send, 3);
	expect_replies(client, "ab");
	udp_echo_free(&u);
}

static void
test_send_error_skips_one(void **state)
{
	struct udp_echo u = {};
	struct udp_counters c = {};
	_cleanup_close_ int server = socket_bound(AF_INET, "127.0.0.1", 0);
	_cleanup_close_ int client = socket_bound(AF_INET, "127.0.0.1", 0);

	send_script[0] = 1;
	send_script[1] = -EPERM;
	serve_five(server, client, &u, &c);
	assert_int_equal(c.datagrams_out, 4);
	assert_int_equal(c.dropped_send, 1);
	expect_replies(client, "acde");
	udp_echo_free(&u);
}

static void
test_rate_limit(void **state)
{
	_cleanup_ratelimit_ struct ratelimit *rl = NULL;
	struct udp_echo u = {};
	struct udp_counters c = {};
	_cleanup_close_ int server = socket_bound(AF_INET, "127.0.0.1", 0);
	_cleanup_close_ int a = socket_bound(AF_INET, "127.0.0.1", 0);
	_cleanup_close_ int b = socket_bound(AF_INET, "127.0.0.2", 0);
	struct sockaddr_storage from;
	char got[4];
	int n;

	assert_int_equal(ratelimit_new(10, 10, 64, &rl), 0);

	/* A floods; B, another address, is still served in the same batches. */
	for (int i = 0; i < 30; i++)
		send_to(a, AF_INET, "127.0.0.1", local_port(server), "a", 1);
	for (int i = 0; i < 5; i++)
		send_to(b, AF_INET, "127.0.0.1", local_port(server), "b", 1);
	serve_until(&u, server, rl, T0, &c, 35);
	assert_int_equal(c.datagrams_out, 15);
	assert_int_equal(c.dropped_ratelimit, 20);
	for (n = 0; recv_within(a, got, sizeof(got), 50, &from) == 1; n++)
		;
	assert_int_equal(n, 10);
	for (n = 0; recv_within(b, got, sizeof(got), 50, &from) == 1; n++)
		;
	assert_int_equal(n, 5);

	/* Half a second later A has earned five more. */
	for (int i = 0; i < 8; i++)
		send_to(a, AF_INET, "127.0.0.1", local_port(server), "a", 1);
	serve_until(&u, server, rl, T0 + SEC / 2, &c, 43);
	assert_int_equal(c.dropped_ratelimit, 23);
	for (n = 0; recv_within(a, got, sizeof(got), 50, &from) == 1; n++)
		;
	assert_int_equal(n, 5);
	udp_echo_free(&u);
}

/* With udp_socket_setup() a wildcard socket answers from the address the
 * client used and ignores datagrams sent to a broadcast address. */
static void
wildcard(int family, const char *any)
{
	struct udp_echo u = {};
	struct udp_counters c = {};
	_cleanup_close_ int server = socket_bound(family, any, 0);
	_cleanup_close_ int client = socket_bound(AF_INET, "127.0.0.1", 0);
	struct sockaddr_storage from;
	const int one = 1;
	char got[8];

	assert_true(server >= 0);
	assert_int_equal(udp_socket_setup(server), 0);
	assert_int_equal(setsockopt(client, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one)), 0);

	send_to(client, AF_INET, "127.255.255.255", local_port(server), "bcast", 5);
	send_to(client, AF_INET, "127.0.0.2", local_port(server), "ucast", 5);
	serve_until(&u, server, NULL, T0, &c, 2);
	assert_int_equal(c.dropped_address, 1);
	assert_int_equal(c.datagrams_out, 1);

	assert_int_equal(recv_within(client, got, sizeof(got), 2000, &from), 5);
	assert_memory_equal(got, "ucast", 5);
	assert_int_equal(from.ss_family, AF_INET);
	/* Without IP_PKTINFO the route would have picked 127.0.0.1. */
	assert_string_equal(inet_ntoa(((struct sockaddr_in *)&from)->sin_addr), "127.0.0.2");
	assert_int_equal(recv_within(client, got, sizeof(got), 20, &from), -1);
	udp_echo_free(&u);
}

/* A datagram queued before udp_socket_setup() (the one that made systemd
 * start echod) arrives with IP_PKTINFO zeroed: it is echoed, not taken for
 * a broadcast, and a real broadcast behind it is still dropped. */
static void
queued_before_setup(int family, const char *any)
{
	struct udp_echo u = {};
	struct udp_counters c = {};
	_cleanup_close_ int server = socket_bound(family, any, 0);
	_cleanup_close_ int client = socket_bound(AF_INET, "127.0.0.1", 0);
	struct sockaddr_storage from;
	const int one = 1;
	char got[8];

	assert_true(server >= 0);
	assert_int_equal(setsockopt(client, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one)), 0);
	send_to(client, AF_INET, "127.0.0.1", local_port(server), "first", 5);
	assert_int_equal(udp_socket_setup(server), 0);
	send_to(client, AF_INET, "127.255.255.255", local_port(server), "bcast", 5);
	serve_until(&u, server, NULL, T0, &c, 2);
	assert_int_equal(c.dropped_address, 1);
	assert_int_equal(c.datagrams_out, 1);
	assert_int_equal(recv_within(client, got, sizeof(got), 2000, &from), 5);
	assert_memory_equal(got, "first", 5);
	assert_int_equal(recv_within(client, got, sizeof(got), 20, &from), -1);
	udp_echo_free(&u);
}

static void
test_queued_before_setup_ipv4(void **state)
{
	queued_before_setup(AF_INET, "0.0.0.0");
}

static void
test_queued_before_setup_dual_stack(void **state)
{
	if (!have_ipv6())
		skip();
	queued_before_setup(AF_INET6, "::");
}

static void
test_wildcard_ipv4(void **state)
{
	wildcard(AF_INET, "0.0.0.0");
}

static void
test_wildcard_dual_stack(void **state)
{
	if (!have_ipv6())
		skip();
	wildcard(AF_INET6, "::");
}

static void
test_wildcard_ipv6(void **state)
{
	struct udp_echo u = {};
	struct udp_counters c = {};
	_cleanup_close_ int server = -1, client = -1;
	struct sockaddr_storage from;
	char got[8];

	if (!have_ipv6())
		skip();
	server = socket_bound(AF_INET6, "::", 0);
	client = socket_bound(AF_INET6, "::1", 0);
	assert_int_equal(udp_socket_setup(server), 0);

	send_to(client, AF_INET6, "::1", local_port(server), "six", 3);
	serve_until(&u, server, NULL, T0, &c, 1);
	assert_int_equal(recv_within(client, got, sizeof(got), 2000, &from), 3);
	assert_memory_equal(got, "six", 3);
	assert_true(IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&from)->sin6_addr));
	udp_echo_free(&u);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_sizes_ipv4, reset_injection),
	    cmocka_unit_test_setup(test_sizes_ipv6, reset_injection),
	    cmocka_unit_test_setup(test_nothing_waiting, reset_injection),
	    cmocka_unit_test_setup(test_many_senders, reset_injection),
	    cmocka_unit_test_setup(test_bounded_work, reset_injection),
	    cmocka_unit_test_setup(test_privileged_port_dropped, reset_injection),
	    cmocka_unit_test_setup(test_source_acceptable, reset_injection),
	    cmocka_unit_test_setup(test_truncated_not_echoed, reset_injection),
	    cmocka_unit_test_setup(test_partial_send_continues, reset_injection),
	    cmocka_unit_test_setup(test_send_eagain_drops_rest, reset_injection),
	    cmocka_unit_test_setup(test_send_error_skips_one, reset_injection),
	    cmocka_unit_test_setup(test_rate_limit, reset_injection),
	    cmocka_unit_test_setup(test_queued_before_setup_ipv4, reset_injection),
	    cmocka_unit_test_setup(test_queued_before_setup_dual_stack, reset_injection),
	    cmocka_unit_test_setup(test_wildcard_ipv4, reset_injection),
	    cmocka_unit_test_setup(test_wildcard_dual_stack, reset_injection),
	    cmocka_unit_test_setup(test_wildcard_ipv6, reset_injection),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
