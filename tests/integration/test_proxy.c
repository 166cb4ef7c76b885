/* PROXY protocol listeners, end to end in the model $ECHOD_MODEL: the
 * test plays the balancer (from its own 127.x address) in front of
 * clients its headers name. v1 and v2 (IPv4, IPv6, LOCAL), headers one
 * byte at a time or with the payload in the same write, untrusted
 * balancers, malformed and late headers refused and counted, and the real
 * client, not the balancer, meeting AllowFrom=/DenyFrom= and
 * MaxConnectionsPerSource=, before and after a reload. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

/* The balancer's address: 127.0.0.1 is the harness's, and plain. */
#define BALANCER "127.0.0.3"
#define V2_SIG "\r\n\r\n\0\r\nQUIT\n"

struct fixture {
	struct echod e;
	struct notify_socket n;
	char conf[64];
	int proxy_port;
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	snprintf(f->conf, sizeof(f->conf), "/tmp/echod-test-proxy-%d.conf", (int)getpid());
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	if (f->e.pid > 0)
		echod_kill(&f->e);
	notify_socket_close(&f->n);
	unlink(f->conf);
	free(f);
	return harness_teardown(state);
}

/* echod with a plain listener (the harness's) and a proxy one, trusting
 * BALANCER, with more configuration in text. */
static void
start(struct fixture *f, const char *text)
{
	char config[512], proxy[64];

	f->proxy_port = free_port();
	snprintf(config, sizeof(config),
		 "[echod]\nWorkers=2\nProxyListen=127.0.0.1:%d\nProxyFrom=" BALANCER "\n%s",
		 f->proxy_port, text);
	harness_write_config(f->conf, config);
	snprintf(proxy, sizeof(proxy), "127.0.0.1:%d", f->proxy_port);
	notify_socket_open(&f->n);
	echod_start_env(&f->e, (const char *[]){f->n.env, NULL},
			(const char *[]){"--config", f->conf, NULL});
	assert_true(tcp_wait_accepting(f->proxy_port, 5000));
	/* The probe just now came from 127.0.0.1, no balancer: one refusal
	 * every test counts on. */
	assert_non_null(notify_status_wait(&f->n, " 1 refused,", 5000));
}

static int
balancer_connect(const struct fixture *f, const char *from)
{
	int fd = tcp_connect_from(from, f->proxy_port);

	if (fd < 0)
		fail_msg("connecting from %s: %s", from, strerror(errno));
	return fd;
}

static void
send_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	uint64_t end = monotonic_ms() + 3000;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			fail_msg("write: %s", strerror(errno));
		if (n > 0) {
			p += n;
			len -= (size_t)n;
		}
		if (len && monotonic_ms() > end)
			fail_msg("write timed out");
		if (n < 0)
			usleep(1000);
	}
}

/* Reads exactly len bytes and compares them with want. */
static void
expect_echo(int fd, const void *want, size_t len)
{
	char buf[256];
	size_t got = 0;
	uint64_t end = monotonic_ms() + 3000;

	assert_true(len <= sizeof(buf));
	while (got < len) {
		ssize_t n;

		if (!wait_readable(fd, (int)(end > monotonic_ms() ? end - monotonic_ms() : 0)))
			fail_msg("echo: %zu of %zu bytes after 3 s", got, len);
		n = read(fd, buf + got, len - got);
		if (n == 0)
			fail_msg("closed after %zu of %zu bytes", got, len);
		if (n < 0 && errno != EAGAIN)
			fail_msg("read: %s", strerror(errno));
		if (n > 0)
			got += (size_t)n;
	}
	assert_memory_equal(buf, want, len);
}

/* A v1 header for client (IPv4) and port. */
static size_t
v1(char *buf, size_t size, const char *client, int port)
{
	return (size_t)snprintf(buf, size, "PROXY TCP4 %s 127.0.0.1 %d 7\r\n", client, port);
}

/* A connection through the balancer for client: header, then a roundtrip. */
static int
served_as(const struct fixture *f, const char *client)
{
	char header[128];
	int fd = balancer_connect(f, BALANCER);

	send_all(fd, header, v1(header, sizeof(header), client, 40000));
	if (echo_roundtrip(fd, "let me in", 9, 3000) != 0)
		fail_msg("client %s (via " BALANCER ") got no echo", client);
	return fd;
}

static void
refused_as(const struct fixture *f, const char *client)
{
	char header[128];
	int fd = balancer_connect(f, BALANCER);

	send_all(fd, header, v1(header, sizeof(header), client, 40001));
	(void)!write(fd, "let me in", 9);
	if (!closed_by_peer(fd, 3000))
		fail_msg("client %s (via " BALANCER ") was not refused", client);
	close(fd);
}

/* The header is consumed, never echoed; what follows it in the same
 * write is. */
static void
test_v1(void **state)
{
	struct fixture *f = *state;
	static const char in[] = "PROXY TCP4 192.0.2.1 127.0.0.1 5555 7\r\nfirst bytes";
	static const char unknown[] = "PROXY UNKNOWN\r\nunknown";
	int fd;

	start(f, "");
	fd = balancer_connect(f, BALANCER);
	send_all(fd, in, sizeof(in) - 1);
	expect_echo(fd, "first bytes", 11);
	assert_int_equal(echo_roundtrip(fd, "and more", 8, 3000), 0);
	/* Half-close honoured as on any connection. */
	shutdown(fd, SHUT_WR);
	assert_true(closed_by_peer(fd, 3000));
	close(fd);
	fd = balancer_connect(f, BALANCER);
	send_all(fd, unknown, sizeof(unknown) - 1);
	expect_echo(fd, "unknown", 7);
	close(fd);
	/* A plain listener beside it never parses a header: echoed whole. */
	fd = tcp_connect_from(BALANCER, f->e.port);
	assert_int_equal(echo_roundtrip(fd, in, sizeof(in) - 1, 3000), 0);
	close(fd);
	assert_non_null(notify_status_after(&f->n, 300));
	assert_int_equal(status_count(notify_status_after(&f->n, 300), "refused"), 1);
	assert_int_equal(echod_stop(&f->e, 10000), 0);
	f->e.pid = 0;
}

static size_t
v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const void *block, size_t len)
{
	memcpy(out, V2_SIG, 12);
	out[12] = ver_cmd;
	out[13] = fam;
	out[14] = (uint8_t)(len >> 8);
	out[15] = (uint8_t)len;
	if (len)
		memcpy(out + 16, block, len);
	return 16 + len;
}

static void
test_v2(void **state)
{
	struct fixture *f = *state;
	static const uint8_t inet[12 + 7] = {192, 0, 2, 9, 127, 0, 0, 1, 0x9c, 0x40, 0, 7,
					     /* a TLV (ALPN), skipped */ 1, 0, 4, 'e', 'c', 'h', 'o'};
	static const uint8_t inet6[36] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1, [31] = 1, [33] = 9};
	uint8_t buf[128];
	size_t n;
	int fd;

	start(f, "");
	n = v2(buf, 0x21, 0x11, inet, sizeof(inet));
	memcpy(buf + n, "v2 payload", 10);
	fd = balancer_connect(f, BALANCER);
	send_all(fd, buf, n + 10);
	expect_echo(fd, "v2 payload", 10);
	close(fd);

	n = v2(buf, 0x21, 0x21, inet6, sizeof(inet6));
	fd = balancer_connect(f, BALANCER);
	send_all(fd, buf, n);
	assert_int_equal(echo_roundtrip(fd, "six", 3, 3000), 0);
	close(fd);

	/* LOCAL: the balancer's own health check, served as itself. */
	n = v2(buf, 0x20, 0x00, NULL, 0);
	memcpy(buf + n, "health", 6);
	fd = balancer_connect(f, BALANCER);
	send_all(fd, buf, n + 6);
	expect_echo(fd, "health", 6);
	close(fd);
	assert_int_equal(status_count(notify_status_after(&f->n, 300), "refused"), 1);
	assert_int_equal(echod_stop(&f->e, 10000), 0);
	f->e.pid = 0;
}

/* A header that comes one byte at a time is waited for (never blocking
 * the worker: another client is served meanwhile). */
static void
test_byte_at_a_time(void **state)
{
	struct fixture *f = *state;
	static const uint8_t inet[12] = {198, 51, 100, 4, 127, 0, 0, 1, 0x30, 0x39, 0, 7};
	char header[128];
	uint8_t bin[64];
	size_t n = v1(header, sizeof(header), "198.51.100.3", 1234), m;
	int slow1, slow2, other;

	start(f, "Workers=1\n");
	slow1 = balancer_connect(f, BALANCER);
	slow2 = balancer_connect(f, BALANCER);
	m = v2(bin, 0x21, 0x11, inet, sizeof(inet));
	for (size_t i = 0; i < n || i < m; i++) {
		if (i < n)
			send_all(slow1, header + i, 1);
		if (i < m)
			send_all(slow2, bin + i, 1);
		if (i == 5) {
			/* Halfway through the headers: the one worker serves. */
			other = served_as(f, "198.51.100.99");
			close(other);
		}
		usleep(2000);
	}
	assert_int_equal(echo_roundtrip(slow1, "slow v1", 7, 3000), 0);
	assert_int_equal(echo_roundtrip(slow2, "slow v2", 7, 3000), 0);
	close(slow1);
	close(slow2);
	assert_int_equal(echod_stop(&f->e, 10000), 0);
	f->e.pid = 0;
}

/* Not from ProxyFrom=, malformed, too long, or too late: closed at once
 * (or at the timeout), counted refused, and said in the log. */
static void
test_refused(void **state)
{
	struct fixture *f = *state;
	char longline[200];
	uint64_t t0;
	int fd;

	start(f, "ProxyHeaderTimeoutSec=1\n");
	/* Anyone else, even with a good header. */
	fd = balancer_connect(f, "127.0.0.2");
	send_all(fd, "PROXY UNKNOWN\r\nhello", 20);
	assert_true(closed_by_peer(fd, 3000));
	close(fd);
	/* No header at all: an echo client that found the wrong port. */
	fd = balancer_connect(f, BALANCER);
	send_all(fd, "hello\r\n", 7);
	assert_true(closed_by_peer(fd, 3000));
	close(fd);
	/* A line longer than v1 allows. */
	memset(longline, '1', sizeof(longline));
	memcpy(longline, "PROXY UNKNOWN ", 14);
	fd = balancer_connect(f, BALANCER);
	send_all(fd, longline, sizeof(longline));
	assert_true(closed_by_peer(fd, 3000));
	close(fd);
	/* Half a header, then nothing: closed after ProxyHeaderTimeoutSec=. */
	fd = balancer_connect(f, BALANCER);
	send_all(fd, "PROXY TCP4 1.2", 14);
	t0 = monotonic_ms();
	assert_true(closed_by_peer(fd, 4000));
	assert_true(monotonic_ms() - t0 >= 800);
	close(fd);
	/* Nothing at all. */
	fd = balancer_connect(f, BALANCER);
	assert_true(closed_by_peer(fd, 4000));
	close(fd);
	/* With the probe's, six; said once in a while, not per connection. */
	assert_non_null(notify_status_wait(&f->n, " 6 refused,", 5000));
	assert_true(echod_wait_log(&f->e, "refused", 8000));
	assert_true(echod_wait_log(&f->e, " on PROXY listeners", 8000));
	/* Those that send a good header are served all the while. */
	close(served_as(f, "192.0.2.50"));
	assert_int_equal(echod_stop(&f->e, 10000), 0);
	f->e.pid = 0;
}

/* The real client meets the lists and the per-source limit; the
 * balancer's own address does not (it is denied as a client here). */
static void
test_real_client(void **state)
{
	struct fixture *f = *state;
	int a, b, c, direct;

	start(f, "MaxConnectionsPerSource=1\nDenyFrom=192.0.2.66 " BALANCER "\n");
	a = served_as(f, "192.0.2.10");
	/* The same client again: over the limit, though the balancer holds
	 * one connection already and will hold more. */
	refused_as(f, "192.0.2.10");
	b = served_as(f, "192.0.2.11");
	refused_as(f, "192.0.2.66");
	/* The balancer connecting as a client of its own is denied. */
	direct = tcp_connect_from(BALANCER, f->e.port);
	assert_true(direct >= 0);
	(void)!write(direct, "x", 1);
	assert_true(closed_by_peer(direct, 3000));
	close(direct);
	/* Its slot back, the client may come again. */
	close(a);
	usleep(200 * 1000);
	c = served_as(f, "192.0.2.10");
	assert_int_equal(echo_roundtrip(b, "still", 5, 3000), 0);
	/* probe + limit + deny + direct deny */
	assert_non_null(notify_status_wait(&f->n, " 4 refused,", 5000));
	close(b);
	close(c);
	assert_int_equal(echod_stop(&f->e, 10000), 0);
	f->e.pid = 0;
}

/* A reload gives the connections to new workers, who check the new
 * lists against the client the header named: it travels with them. */
static void
test_reload(void **state)
{
	struct fixture *f = *state;
	char config[512];
	int stays, goes;

	start(f, "");
	stays = served_as(f, "192.0.2.20");
	goes = served_as(f, "192.0.2.21");
	snprintf(config, sizeof(config),
		 "[echod]\nWorkers=2\nProxyListen=127.0.0.1:%d\nProxyFrom=" BALANCER
		 "\nDenyFrom=192.0.2.21\n",
		 f->proxy_port);
	harness_write_config(f->conf, config);
	kill(f->e.pid, SIGHUP);
	assert_non_null(notify_status_wait(&f->n, " gen 1", 5000));
	if (!closed_by_peer(goes, 5000))
		fail_msg("192.0.2.21, denied by the reload, is still served: its client was lost");
	close(goes);
	assert_int_equal(echo_roundtrip(stays, "after", 5, 3000), 0);
	refused_as(f, "192.0.2.21");
	close(stays);
	/* A reload that drops ProxyFrom= is rejected, naming the key. */
	snprintf(config, sizeof(config), "[echod]\nProxyListen=127.0.0.1:%d\n", f->proxy_port);
	harness_write_config(f->conf, config);
	kill(f->e.pid, SIGHUP);
	assert_true(echod_wait_log(&f->e, "ProxyFrom= is required", 5000));
	close(served_as(f, "192.0.2.22"));
	assert_int_equal(echod_stop(&f->e, 10000), 0);
	f->e.pid = 0;
}

/* Without ProxyFrom=, a proxy listener is a configuration error. */
static void
test_needs_proxy_from(void **state)
{
	struct fixture *f = *state;
	struct echod e;
	int status;

	harness_write_config(f->conf, "[echod]\nProxyListen=127.0.0.1:7\n");
	status = echod_run(&e, (const char *[]){"--config", f->conf, NULL}, 5000);
	echod_collect_log(&e);
	assert_int_equal(status, 2);
	if (!strstr(e.log, "ProxyListen=127.0.0.1:7: ProxyFrom= is required"))
		fail_msg("unexpected message: %s", e.log);
}

/* Per-connection mode (Accept=yes) with FileDescriptorName=proxy: the one
 * connection is a balancer's, header first; from anyone else it is
 * refused. */
static void
test_accept_yes(void **state)
{
	struct fixture *f = *state;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	const char *from[] = {BALANCER, "127.0.0.2"};
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	harness_write_config(f->conf, "[echod]\nProxyFrom=" BALANCER "\n");
	assert_true(l >= 0);
	assert_int_equal(bind(l, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(l, 4), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&sin, &len), 0);
	for (int i = 0; i < 2; i++) {
		static const char in[] = "PROXY TCP4 192.0.2.5 127.0.0.1 1 7\r\none shot";
		int client = tcp_connect_from(from[i], ntohs(sin.sin_port));
		int server = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		struct echod e;
		char back[64];

		assert_true(client >= 0 && server >= 0);
		harness_pass_fds(&server, 1, "proxy");
		echod_spawn(&e, NULL, (const char *[]){"--config", f->conf, "--log-level", "debug",
						       NULL},
			    -1);
		close(server);
		send_all(client, in, sizeof(in) - 1);
		shutdown(client, SHUT_WR);
		if (i == 0) {
			assert_int_equal(read_until_eof(client, back, sizeof(back), 3000), 8);
			assert_memory_equal(back, "one shot", 8);
		} else {
			assert_true(closed_by_peer(client, 3000));
		}
		assert_int_equal(echod_wait_exit(&e, 5000), 0);
		echod_collect_log(&e);
		if (i == 0 && !strstr(e.log, "connection from 192.0.2.5:1 via " BALANCER ":"))
			fail_msg("the client is not named: %s", e.log);
		if (i == 1 && !strstr(e.log, "not from ProxyFrom="))
			fail_msg("the refusal is not said: %s", e.log);
		close(client);
	}
	close(l);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_v1, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_v2, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_byte_at_a_time, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_real_client, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_needs_proxy_from, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_accept_yes, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
