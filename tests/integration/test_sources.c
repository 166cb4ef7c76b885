/* MaxConnectionsPerSource= end to end in the model $ECHOD_MODEL, for each
 * kind of source address: an IPv6 /64 is one source (two hosts of one /64
 * share a count, another /64 has its own); an IPv4-mapped address on a
 * dual-stack socket counts as its IPv4 address (two IPv4 hosts, which
 * would share the mapped /64, do not share a count); UNIX clients have no
 * source and are never limited; per-connection mode (Accept=yes) does not
 * count.
 *
 * The binary runs in a network namespace of its own: it gives its loopback
 * the IPv6 addresses the clients connect from, which the host's loopback
 * does not have (and which nothing else must see). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/ipv6.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define LIMIT "1"

/* Two hosts of one /64, and one of another. */
static const char *const same_64[] = {"fd00:e0d:0:1::a", "fd00:e0d:0:1::b"};
static const char *const other_64 = "fd00:e0d:0:2::a";

static struct notify_socket notify;

static int
teardown(void **state)
{
	harness_teardown(state);
	notify_socket_close(&notify);
	return 0;
}

/* --- clients --- */

static int
tcp6_connect_from(const char *src, int port)
{
	struct sockaddr_in6 from = {.sin6_family = AF_INET6};
	struct sockaddr_in6 to = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port),
				  .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(inet_pton(AF_INET6, src, &from.sin6_addr), 1);
	if (bind(fd, (struct sockaddr *)&from, sizeof(from)) < 0)
		fail_msg("binding %s: %s", src, strerror(errno));
	if (connect(fd, (struct sockaddr *)&to, sizeof(to)) < 0)
		fail_msg("connecting from %s to [::1]:%d: %s", src, port, strerror(errno));
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

static void
served(int fd, const char *who)
{
	if (fd < 0)
		fail_msg("%s: could not connect: %s", who, strerror(errno));
	if (echo_roundtrip(fd, "count me", 8, 5000) != 0)
		fail_msg("%s got no echo", who);
}

static void
refused(int fd, const char *who)
{
	assert_true(fd >= 0);
	(void)!write(fd, "count me", 8);
	if (!closed_by_peer(fd, 5000))
		fail_msg("%s was not refused at MaxConnectionsPerSource=" LIMIT, who);
}

/* --- echod --- */

/* echod with the limit, on listen (an address, or NULL: the socket passed
 * as systemd does), ready when it says so. */
static void
start(struct echod *e, const char *listen)
{
	const char *args[HARNESS_MAX_ARGS] = {"--config", "/dev/null", "--model", harness_model(),
					      "--max-connections-per-source", LIMIT, NULL};
	size_t n = 6;

	if (strcmp(harness_model(), "fork") != 0) {
		args[n++] = "--workers";
		args[n++] = "2";
	}
	if (listen) {
		args[n++] = "--listen";
		args[n++] = listen;
	}
	args[n] = NULL;
	notify_socket_open(&notify);
	echod_spawn(e, (const char *[]){notify.env, NULL}, args, -1);
	if (!notify_status_wait(&notify, " gen 0", 5000))
		fail_msg("echod on %s did not become ready", listen ? listen : "the passed socket");
}

static void
stop(struct echod *e)
{
	assert_int_equal(echod_stop(e, 15000), 0);
}

/* --- tests --- */

static void
test_ipv6_prefix(void **state)
{
	char listen[64];
	struct echod e;
	int port = free_port(), a, b, other;

	snprintf(listen, sizeof(listen), "[::1]:%d", port);
	start(&e, listen);
	a = tcp6_connect_from(same_64[0], port);
	served(a, same_64[0]);
	b = tcp6_connect_from(same_64[1], port);
	refused(b, "a second host of the same /64");
	other = tcp6_connect_from(other_64, port);
	served(other, "a host of another /64");
	close(b);
	close(a);
	close(other);
	stop(&e);
}

static void
test_ipv4_mapped(void **state)
{
	struct sockaddr_in6 any = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT};
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0), off = 0, port = free_port();
	struct echod e;
	int a, b, again;

	/* What BindIPv6Only=both gives: IPv4 clients arrive as ::ffff:a.b.c.d. */
	assert_true(fd >= 0);
	assert_int_equal(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)), 0);
	any.sin6_port = htons((uint16_t)port);
	assert_int_equal(bind(fd, (struct sockaddr *)&any, sizeof(any)), 0);
	assert_int_equal(listen(fd, 64), 0);
	harness_pass_fds(&fd, 1, "echod.socket");
	start(&e, NULL);
	close(fd);
	a = tcp_connect_from("127.0.0.2", port);
	served(a, "127.0.0.2");
	/* As IPv6 addresses, ::ffff:127.0.0.2 and ::ffff:127.0.0.3 share a /64. */
	b = tcp_connect_from("127.0.0.3", port);
	served(b, "127.0.0.3, the same mapped /64 as 127.0.0.2");
	again = tcp_connect_from("127.0.0.2", port);
	refused(again, "a second connection from 127.0.0.2");
	close(again);
	close(a);
	close(b);
	stop(&e);
}

static void
test_unix_never_limited(void **state)
{
	char path[64], listen[80];
	struct echod e;
	int fds[3];

	snprintf(path, sizeof(path), "/tmp/echod-test-sources-%d.sock", (int)getpid());
	snprintf(listen, sizeof(listen), "unix:%s", path);
	unlink(path);
	start(&e, listen);
	for (int i = 0; i < 3; i++) {
		fds[i] = unix_connect(path);
		served(fds[i], "a UNIX client");
	}
	for (int i = 0; i < 3; i++)
		close(fds[i]);
	stop(&e);
	unlink(path);
}

static bool
wait_child_count(pid_t pid, size_t want, int timeout_ms)
{
	pid_t kids[8];
	uint64_t deadline = monotonic_ms() + (uint64_t)timeout_ms;

	while (process_children(pid, kids, 8) != want) {
		if (monotonic_ms() >= deadline)
			return false;
		usleep(10000);
	}
	return true;
}

/* Accept=yes: an echod per connection, each with nobody to count with. */
static void
test_per_connection_mode_does_not_count(void **state)
{
	struct echod e;
	int a, b;

	echod_start_activated(&e, (const char *[]){"--accept", NULL},
			      (const char *[]){"--max-connections-per-source", LIMIT, NULL});
	a = tcp_connect(e.port);
	served(a, "the first connection in per-connection mode");
	b = tcp_connect(e.port);
	served(b, "a second connection from the same source in per-connection mode");
	/* One echod each: that is why neither had the other to count. (The
	 * harness's readiness probe had one too, gone in a moment.) */
	assert_true(wait_child_count(e.pid, 2, 3000));
	close(a);
	close(b);
	/* The activator, not echod, is stopped here: it dies of SIGTERM. */
	assert_true(echod_stop(&e, 15000) >= 0);
}

/* --- the namespace --- */

static void
add_address(int fd, unsigned ifindex, const char *text)
{
	struct in6_ifreq req = {.ifr6_prefixlen = 64, .ifr6_ifindex = (int)ifindex};

	if (inet_pton(AF_INET6, text, &req.ifr6_addr) != 1 || ioctl(fd, SIOCSIFADDR, &req) < 0) {
		fprintf(stderr, "test_sources: adding %s to lo: %s\n", text, strerror(errno));
		exit(1);
	}
}

/* A namespace of our own whose loopback is up and has the clients' IPv6
 * addresses. Every step is needed: failing, the test fails (not skips). */
static void
private_network(void)
{
	struct ifreq ifr = {.ifr_name = "lo"};
	unsigned lo;
	int fd;

	if (unshare(CLONE_NEWNET) < 0) {
		fprintf(stderr, "test_sources: a network namespace of its own: %s\n",
			strerror(errno));
		exit(1);
	}
	fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) {
		fprintf(stderr, "test_sources: reading lo's flags: %s\n", strerror(errno));
		exit(1);
	}
	ifr.ifr_flags |= IFF_UP;
	lo = if_nametoindex("lo");
	if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0 || lo == 0) {
		fprintf(stderr, "test_sources: bringing lo up: %s\n", strerror(errno));
		exit(1);
	}
	add_address(fd, lo, same_64[0]);
	add_address(fd, lo, same_64[1]);
	add_address(fd, lo, other_64);
	close(fd);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_ipv6_prefix, teardown),
	    cmocka_unit_test_teardown(test_ipv4_mapped, teardown),
	    cmocka_unit_test_teardown(test_unix_never_limited, teardown),
	    cmocka_unit_test_teardown(test_per_connection_mode_does_not_count, teardown),
	};

	private_network();
	return cmocka_run_group_tests_name(harness_model(), tests, NULL, NULL);
}
