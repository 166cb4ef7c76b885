/* echo.c: the state machine of one connection, over real sockets. The
 * client end of each pair is driven by the test; the server end is the
 * machine's, non-blocking as in a worker. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "echo.h"

#define BUF_SIZE 16384
/* Enough turns of the machine for any test here; more means it is stuck. */
#define MAX_TURNS 100000

struct pair {
	int client, server;
	struct echo_conn conn;
	struct echo_io io;
	char buf[BUF_SIZE];
	/* What the client has read back. */
	char *got;
	size_t got_len, got_size;
	bool got_eof;
};

static void
set_nonblocking(int fd)
{
	int flags = fcntl(fd, F_GETFL);

	assert_true(flags >= 0);
	assert_int_equal(fcntl(fd, F_SETFL, flags | O_NONBLOCK), 0);
}

static int
setup_pair(void **state)
{
	struct pair *p = calloc(1, sizeof(*p));
	int sv[2];

	if (!p || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	p->client = sv[0];
	p->server = sv[1];
	set_nonblocking(p->server);
	echo_conn_init(&p->conn, p->server);
	*state = p;
	return 0;
}

static int
teardown_pair(void **state)
{
	struct pair *p = *state;

	echo_conn_release(&p->conn);
	if (p->client >= 0)
		close(p->client);
	if (p->server >= 0)
		close(p->server);
	free(p->got);
	free(p);
	return 0;
}

static void
fill_pattern(char *data, size_t len)
{
	/* Not periodic in any power of two: a byte in the wrong place shows. */
	for (size_t i = 0; i < len; i++)
		data[i] = (char)((i * 7 + i / 251) & 0xff);
}

static void
send_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
		assert_true(n > 0);
		data += n;
		len -= (size_t)n;
	}
}

/* Reads whatever the client can read now. */
static void
client_drain(struct pair *p)
{
	for (;;) {
		ssize_t n;

		if (p->got_size - p->got_len < 65536) {
			p->got_size = p->got_size * 2 + 65536;
			p->got = realloc(p->got, p->got_size);
			assert_non_null(p->got);
		}
		n = recv(p->client, p->got + p->got_len, p->got_size - p->got_len, MSG_DONTWAIT);
		if (n < 0) {
			assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
			return;
		}
		if (n == 0) {
			p->got_eof = true;
			return;
		}
		p->got_len += (size_t)n;
	}
}

static int
turn(struct pair *p)
{
	return echo_conn_handle(&p->conn, p->buf, sizeof(p->buf), &p->io);
}

/* Bytes the server holds unread from the client. */
static int
server_unread(const struct pair *p)
{
	int n;

	assert_int_equal(ioctl(p->server, FIONREAD, &n), 0);
	return n;
}

/* Shrinks the server's send buffer so that an echo cannot be written in
 * one go while the client does not read. */
static void
shrink_sndbuf(struct pair *p)
{
	int size = 4096;

	assert_int_equal(setsockopt(p->server, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size)), 0);
}

static void
test_init(void **state)
{
	struct pair *p = *state;

	assert_int_equal(p->conn.fd, p->server);
	assert_null(p->conn.owed);
	assert_int_equal(p->conn.owed_len, 0);
	assert_int_equal(echo_conn_want(&p->conn), ECHO_WANT_READ);
}

static void
test_simple_echo(void **state)
{
	struct pair *p = *state;

	send_all(p->client, "hello, echo", 11);
	assert_int_equal(turn(p), ECHO_WANT_READ);
	assert_int_equal(p->io.bytes_in, 11);
	assert_int_equal(p->io.bytes_out, 11);
	client_drain(p);
	assert_int_equal(p->got_len, 11);
	assert_memory_equal(p->got, "hello, echo", 11);
	assert_false(p->got_eof);

	/* Nothing to read: no change, still waiting for input. */
	assert_int_equal(turn(p), ECHO_WANT_READ);
	assert_int_equal(p->io.bytes_in, 11);

	/* io counts are added to, not reset. */
	send_all(p->client, "again", 5);
	assert_int_equal(turn(p), ECHO_WANT_READ);
	assert_int_equal(p->io.bytes_in, 16);
	assert_int_equal(p->io.bytes_out, 16);
	client_drain(p);
	assert_int_equal(p->got_len, 16);
	assert_memory_equal(p->got, "hello, echoagain", 16);

	/* An idle connection holds no buffer of its own. */
	assert_null(p->conn.owed);
	assert_int_equal(echo_conn_want(&p->conn), ECHO_WANT_READ);
}

static void
test_many_buffers(void **state)
{
	struct pair *p = *state;
	size_t len = 5 * BUF_SIZE + 123;
	char *data = malloc(len);
	int r = ECHO_WANT_READ, turns = 0;

	assert_non_null(data);
	fill_pattern(data, len);
	send_all(p->client, data, len);
	while (p->got_len < len) {
		assert_true(++turns < MAX_TURNS);
		r = turn(p);
		assert_true(r == ECHO_WANT_READ || r == ECHO_WANT_WRITE);
		client_drain(p);
	}
	assert_int_equal(p->got_len, len);
	assert_memory_equal(p->got, data, len);
	assert_int_equal(p->io.bytes_in, len);
	assert_int_equal(p->io.bytes_out, len);
	free(data);
}

static void
test_read_budget(void **state)
{
	struct pair *p = *state;
	char data[1000], small[16];
	int turns = 0;

	/* One readiness event must not read a fast sender dry: the others
	 * of the worker get their turn. */
	fill_pattern(data, sizeof(data));
	send_all(p->client, data, sizeof(data));
	assert_int_equal(echo_conn_handle(&p->conn, small, sizeof(small), &p->io), ECHO_WANT_READ);
	assert_true(p->io.bytes_in >= sizeof(small));
	assert_true(p->io.bytes_in < sizeof(data));
	assert_int_equal(p->io.bytes_in, p->io.bytes_out);
	assert_int_equal(server_unread(p), sizeof(data) - p->io.bytes_in);
	while (p->io.bytes_in < sizeof(data)) {
		assert_true(++turns < MAX_TURNS);
		assert_int_equal(echo_conn_handle(&p->conn, small, sizeof(small), &p->io),
				 ECHO_WANT_READ);
	}
	client_drain(p);
	assert_int_equal(p->got_len, sizeof(data));
	assert_memory_equal(p->got, data, sizeof(data));
}

static void
test_eof_nothing_owed(void **state)
{
	struct pair *p = *state;

	assert_int_equal(shutdown(p->client, SHUT_WR), 0);
	assert_int_equal(turn(p), ECHO_DONE);
	assert_int_equal(p->io.bytes_in, 0);
	assert_int_equal(p->io.bytes_out, 0);
	client_drain(p);
	assert_true(p->got_eof);
	assert_int_equal(p->got_len, 0);
}

/* fin_on_close leaves the FIN to close(): ECHO_DONE with
 * the socket still open, and the client reads EOF once it is closed. */
static void
test_eof_sole_owner(void **state)
{
	struct pair *p = *state;

	p->conn.fin_on_close = true;
	send_all(p->client, "last", 4);
	assert_int_equal(shutdown(p->client, SHUT_WR), 0);
	while (turn(p) != ECHO_DONE)
		;
	client_drain(p);
	assert_int_equal(p->got_len, 4);
	assert_false(p->got_eof);
	close(p->server);
	p->server = -1;
	client_drain(p);
	assert_true(p->got_eof);
	assert_memory_equal(p->got, "last", 4);
}

static void
test_half_close(void **state)
{
	struct pair *p = *state;
	int r, turns = 0;

	/* The client is done sending but still reads: it gets every byte,
	 * then EOF. */
	send_all(p->client, "last words", 10);
	assert_int_equal(shutdown(p->client, SHUT_WR), 0);
	do {
		assert_true(++turns < 10);
		r = turn(p);
		assert_true(r == ECHO_WANT_READ || r == ECHO_DONE);
	} while (r != ECHO_DONE);
	assert_int_equal(p->io.bytes_in, 10);
	assert_int_equal(p->io.bytes_out, 10);
	assert_null(p->conn.owed);
	client_drain(p);
	assert_int_equal(p->got_len, 10);
	assert_memory_equal(p->got, "last words", 10);
	assert_true(p->got_eof);
}

static void
test_partial_write(void **state)
{
	struct pair *p = *state;
	size_t len = 6 * BUF_SIZE;
	char *data = malloc(len);
	uint64_t in, out;
	int r, turns = 0;

	assert_non_null(data);
	fill_pattern(data, len);
	shrink_sndbuf(p);
	send_all(p->client, data, len);

	/* The client does not read: the echo of the first buffer cannot all
	 * be written, and what is left is kept, exactly. */
	assert_int_equal(turn(p), ECHO_WANT_WRITE);
	assert_int_equal(echo_conn_want(&p->conn), ECHO_WANT_WRITE);
	assert_int_equal(p->io.bytes_in, BUF_SIZE);
	assert_true(p->io.bytes_out < BUF_SIZE);
	assert_non_null(p->conn.owed);
	assert_int_equal(p->conn.owed_len - p->conn.owed_off, BUF_SIZE - p->io.bytes_out);
	assert_memory_equal(p->conn.owed + p->conn.owed_off, data + p->io.bytes_out,
			    BUF_SIZE - p->io.bytes_out);

	/* While it owes, it reads nothing more, though more is waiting. */
	in = p->io.bytes_in;
	out = p->io.bytes_out;
	assert_int_equal(turn(p), ECHO_WANT_WRITE);
	assert_int_equal(turn(p), ECHO_WANT_WRITE);
	assert_int_equal(p->io.bytes_in, in);
	assert_int_equal(p->io.bytes_out, out);
	assert_int_equal(server_unread(p), len - BUF_SIZE);

	/* The client reads: the machine pays what it owes, then goes back to
	 * reading, having read nothing in between. */
	do {
		assert_true(++turns < MAX_TURNS);
		client_drain(p);
		r = turn(p);
		assert_int_equal(p->io.bytes_in, BUF_SIZE);
	} while (r == ECHO_WANT_WRITE);
	assert_int_equal(r, ECHO_WANT_READ);
	assert_int_equal(p->io.bytes_out, BUF_SIZE);
	assert_null(p->conn.owed);
	assert_int_equal(echo_conn_want(&p->conn), ECHO_WANT_READ);
	client_drain(p);
	assert_int_equal(p->got_len, BUF_SIZE);
	assert_memory_equal(p->got, data, BUF_SIZE);

	/* And the rest goes through, in order, however often it stalls. */
	while (p->got_len < len) {
		assert_true(++turns < MAX_TURNS);
		r = turn(p);
		assert_true(r == ECHO_WANT_READ || r == ECHO_WANT_WRITE);
		client_drain(p);
	}
	assert_int_equal(p->got_len, len);
	assert_memory_equal(p->got, data, len);
	assert_int_equal(p->io.bytes_in, len);
	assert_int_equal(p->io.bytes_out, len);
	assert_null(p->conn.owed);

	assert_int_equal(shutdown(p->client, SHUT_WR), 0);
	assert_int_equal(turn(p), ECHO_DONE);
	client_drain(p);
	assert_true(p->got_eof);
	assert_int_equal(p->got_len, len);
	free(data);
}

static void
test_eof_while_owed(void **state)
{
	struct pair *p = *state;
	size_t len = 3 * BUF_SIZE + 77;
	char *data = malloc(len);
	int r, turns = 0;

	assert_non_null(data);
	fill_pattern(data, len);
	shrink_sndbuf(p);
	send_all(p->client, data, len);
	assert_int_equal(shutdown(p->client, SHUT_WR), 0);

	assert_int_equal(turn(p), ECHO_WANT_WRITE);
	/* EOF is waiting behind the data, but the machine owes bytes: it
	 * must pay them all before it shuts its side. */
	do {
		assert_true(++turns < MAX_TURNS);
		client_drain(p);
		assert_false(p->got_eof);
		r = turn(p);
		assert_true(r == ECHO_WANT_READ || r == ECHO_WANT_WRITE || r == ECHO_DONE);
		if (r == ECHO_DONE)
			assert_null(p->conn.owed);
	} while (r != ECHO_DONE);
	assert_int_equal(p->io.bytes_in, len);
	assert_int_equal(p->io.bytes_out, len);
	client_drain(p);
	assert_int_equal(p->got_len, len);
	assert_memory_equal(p->got, data, len);
	assert_true(p->got_eof);
	free(data);
}

static bool
is_reset_error(int r)
{
	return r == -EPIPE || r == -ECONNRESET;
}

static void
test_peer_gone_with_unread_data(void **state)
{
	struct pair *p = *state;
	int r = ECHO_WANT_READ, turns = 0;

	/* The echo of "ping" is left unread in the client's socket when it
	 * closes; then the machine has "more" to echo to nobody. SIGPIPE is
	 * at its default, so a send without MSG_NOSIGNAL kills the test. */
	send_all(p->client, "ping", 4);
	assert_int_equal(turn(p), ECHO_WANT_READ);
	send_all(p->client, "more", 4);
	assert_int_equal(close(p->client), 0);
	p->client = -1;
	while (r >= 0) {
		assert_true(++turns < 10);
		r = turn(p);
	}
	if (!is_reset_error(r))
		fail_msg("expected -EPIPE or -ECONNRESET, got %d", r);
	assert_null(p->conn.owed);
}

static void
test_peer_gone_while_owed(void **state)
{
	struct pair *p = *state;
	char data[3 * BUF_SIZE];
	int r;

	fill_pattern(data, sizeof(data));
	shrink_sndbuf(p);
	send_all(p->client, data, sizeof(data));
	assert_int_equal(turn(p), ECHO_WANT_WRITE);
	assert_non_null(p->conn.owed);
	assert_int_equal(close(p->client), 0);
	p->client = -1;
	r = turn(p);
	if (!is_reset_error(r))
		fail_msg("expected -EPIPE or -ECONNRESET, got %d", r);
	/* What was owed is freed by release (teardown), not leaked: the
	 * sanitizer and valgrind runs check that. */
	assert_non_null(p->conn.owed);
}

static void
test_tcp_reset(void **state)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t salen = sizeof(sa);
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	struct echo_conn conn;
	struct echo_io io = {0};
	char buf[256];
	int lfd, client, server, r = ECHO_WANT_READ, turns = 0;
	struct pollfd pfd;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 1), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &salen), 0);
	client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(client >= 0);
	assert_int_equal(connect(client, (struct sockaddr *)&sa, sizeof(sa)), 0);
	server = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	assert_true(server >= 0);
	close(lfd);

	echo_conn_init(&conn, server);
	send_all(client, "x", 1);
	/* SO_LINGER 0: close sends RST instead of FIN. */
	assert_int_equal(setsockopt(client, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	assert_int_equal(close(client), 0);
	pfd = (struct pollfd){.fd = server, .events = POLLIN};
	assert_int_equal(poll(&pfd, 1, 5000), 1);
	while (r >= 0) {
		assert_true(++turns < 10);
		r = echo_conn_handle(&conn, buf, sizeof(buf), &io);
		assert_int_not_equal(r, ECHO_DONE);
	}
	if (!is_reset_error(r))
		fail_msg("expected -EPIPE or -ECONNRESET, got %d", r);
	echo_conn_release(&conn);
	close(server);
}

static void
test_release_keeps_fd(void **state)
{
	struct pair *p = *state;
	char data[2 * BUF_SIZE];

	fill_pattern(data, sizeof(data));
	shrink_sndbuf(p);
	send_all(p->client, data, sizeof(data));
	assert_int_equal(turn(p), ECHO_WANT_WRITE);
	echo_conn_release(&p->conn);
	assert_null(p->conn.owed);
	assert_int_equal(p->conn.owed_len, 0);
	assert_int_equal(p->conn.owed_off, 0);
	assert_int_equal(echo_conn_want(&p->conn), ECHO_WANT_READ);
	/* The caller owns the fd: release must not close it. */
	assert_true(fcntl(p->server, F_GETFD) >= 0);
	/* Releasing twice is harmless. */
	echo_conn_release(&p->conn);
	assert_null(p->conn.owed);
}

static int
setup_signals(void **state)
{
	/* Make a missing MSG_NOSIGNAL fatal, whatever the parent ignored. */
	signal(SIGPIPE, SIG_DFL);
	return 0;
}

/* Bytes read before the machine had them (those after a PROXY header):
 * echoed, and what the socket does not take is owed, as for a read. */
static void
test_echo_read(void **state)
{
	struct pair *p = *state;
	size_t len = 4 * BUF_SIZE;
	char *data = malloc(len);
	int r, turns = 0;

	assert_non_null(data);
	fill_pattern(data, len);
	assert_int_equal(echo_conn_echo_read(&p->conn, "hello", 5, &p->io), ECHO_WANT_READ);
	assert_int_equal(p->io.bytes_in, 5);
	assert_int_equal(p->io.bytes_out, 5);
	client_drain(p);
	assert_int_equal(p->got_len, 5);
	assert_memory_equal(p->got, "hello", 5);
	p->got_len = 0;
	p->io = (struct echo_io){0};

	shrink_sndbuf(p);
	r = echo_conn_echo_read(&p->conn, data, len, &p->io);
	assert_int_equal(r, ECHO_WANT_WRITE);
	assert_int_equal(p->io.bytes_in, len);
	assert_true(p->io.bytes_out < len);
	assert_int_equal(p->conn.owed_len, len - p->io.bytes_out);
	while (p->got_len < len) {
		assert_true(++turns < MAX_TURNS);
		client_drain(p);
		r = turn(p);
		assert_true(r == ECHO_WANT_READ || r == ECHO_WANT_WRITE);
	}
	client_drain(p);
	assert_int_equal(p->got_len, len);
	assert_memory_equal(p->got, data, len);
	assert_null(p->conn.owed);
	free(data);
}

#define PAIR_TEST(f) cmocka_unit_test_setup_teardown(f, setup_pair, teardown_pair)

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    PAIR_TEST(test_init),
	    PAIR_TEST(test_simple_echo),
	    PAIR_TEST(test_many_buffers),
	    PAIR_TEST(test_read_budget),
	    PAIR_TEST(test_eof_nothing_owed),
	    PAIR_TEST(test_eof_sole_owner),
	    PAIR_TEST(test_half_close),
	    PAIR_TEST(test_partial_write),
	    PAIR_TEST(test_eof_while_owed),
	    PAIR_TEST(test_peer_gone_with_unread_data),
	    PAIR_TEST(test_peer_gone_while_owed),
	    cmocka_unit_test(test_tcp_reset),
	    PAIR_TEST(test_release_keeps_fd),
	    PAIR_TEST(test_echo_read),
	};

	return cmocka_run_group_tests(tests, setup_signals, NULL);
}
