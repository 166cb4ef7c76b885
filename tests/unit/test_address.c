/* address.c: listen addresses as users write them, and back to text. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "address.h"

static void
parse_ok(const char *s, struct listen_address *a)
{
	char reason[128] = "";

	if (address_parse(s, a, reason, sizeof(reason)) != 0)
		fail_msg("%s: %s", s, reason);
}

static void
check_inet(const char *s, int type, const char *host, unsigned port)
{
	struct listen_address a;
	const struct sockaddr_in *in = (const struct sockaddr_in *)&a.sa;
	struct in_addr want;

	parse_ok(s, &a);
	assert_int_equal(a.type, type);
	assert_int_equal(a.sa.ss_family, AF_INET);
	assert_int_equal(a.salen, sizeof(struct sockaddr_in));
	assert_int_equal(ntohs(in->sin_port), port);
	assert_int_equal(inet_pton(AF_INET, host, &want), 1);
	assert_memory_equal(&in->sin_addr, &want, sizeof(want));
}

static void
check_inet6(const char *s, int type, const char *host, unsigned port)
{
	struct listen_address a;
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a.sa;
	struct in6_addr want;

	parse_ok(s, &a);
	assert_int_equal(a.type, type);
	assert_int_equal(a.sa.ss_family, AF_INET6);
	assert_int_equal(a.salen, sizeof(struct sockaddr_in6));
	assert_int_equal(ntohs(in6->sin6_port), port);
	assert_int_equal(inet_pton(AF_INET6, host, &want), 1);
	assert_memory_equal(&in6->sin6_addr, &want, sizeof(want));
}

static void
test_ipv4(void **state)
{
	check_inet("127.0.0.1:7007", SOCK_STREAM, "127.0.0.1", 7007);
	check_inet("0.0.0.0:1", SOCK_STREAM, "0.0.0.0", 1);
	check_inet("10.1.2.3:65535", SOCK_STREAM, "10.1.2.3", 65535);
}

static void
test_ipv6(void **state)
{
	check_inet6("[::1]:7007", SOCK_STREAM, "::1", 7007);
	check_inet6("[::]:7", SOCK_STREAM, "::", 7);
	check_inet6("[2001:db8::42]:8", SOCK_STREAM, "2001:db8::42", 8);
	check_inet6("[::ffff:127.0.0.1]:9", SOCK_STREAM, "::ffff:127.0.0.1", 9);
}

static void
test_tcp_prefix(void **state)
{
	check_inet("tcp:127.0.0.1:7", SOCK_STREAM, "127.0.0.1", 7);
	check_inet6("tcp:[::1]:7", SOCK_STREAM, "::1", 7);
}

static void
test_udp(void **state)
{
	check_inet("udp:127.0.0.1:7", SOCK_DGRAM, "127.0.0.1", 7);
	check_inet6("udp:[::1]:7", SOCK_DGRAM, "::1", 7);
}

static void
test_unix_path(void **state)
{
	struct listen_address a;
	const struct sockaddr_un *un = (const struct sockaddr_un *)&a.sa;

	parse_ok("unix:/run/x.sock", &a);
	assert_int_equal(a.type, SOCK_STREAM);
	assert_int_equal(un->sun_family, AF_UNIX);
	assert_string_equal(un->sun_path, "/run/x.sock");
	/* The path is NUL-terminated within salen. */
	assert_true(a.salen >= offsetof(struct sockaddr_un, sun_path) + sizeof("/run/x.sock"));
	assert_true(a.salen <= sizeof(struct sockaddr_un));
}

static void
test_unix_abstract(void **state)
{
	struct listen_address a;
	const struct sockaddr_un *un = (const struct sockaddr_un *)&a.sa;

	parse_ok("unix:@abstract", &a);
	assert_int_equal(a.type, SOCK_STREAM);
	assert_int_equal(un->sun_family, AF_UNIX);
	assert_int_equal(un->sun_path[0], '\0');
	assert_memory_equal(un->sun_path + 1, "abstract", 8);
	/* Abstract names are not NUL-terminated: every byte within salen is
	 * part of the name, so it must end exactly after "abstract". */
	assert_int_equal(a.salen, offsetof(struct sockaddr_un, sun_path) + 1 + 8);
}

static void
test_unix_longest_path(void **state)
{
	struct sockaddr_un un;
	char s[sizeof("unix:") + sizeof(un.sun_path)];
	struct listen_address a;

	/* 107 characters and the NUL fill sun_path exactly. */
	memcpy(s, "unix:/", 6);
	memset(s + 6, 'p', sizeof(un.sun_path) - 2);
	s[5 + sizeof(un.sun_path) - 1] = '\0';
	assert_int_equal(strlen(s + 5), sizeof(un.sun_path) - 1);
	parse_ok(s, &a);
	assert_string_equal(((const struct sockaddr_un *)&a.sa)->sun_path, s + 5);
}

struct bad_address {
	const char *s;
	const char *reason;
};

static const struct bad_address bad_addresses[] = {
    {"127.0.0.1", "expected ADDRESS:PORT"},
    {"", "expected ADDRESS:PORT"},
    {"tcp:", "expected ADDRESS:PORT"},
    {"udp:", "expected ADDRESS:PORT"},
    {"127.0.0.1:", "port must be a number from 1 to 65535"},
    {"127.0.0.1:0", "port must be a number from 1 to 65535"},
    {"127.0.0.1:65536", "port must be a number from 1 to 65535"},
    {"127.0.0.1:99999999999999999999", "port must be a number from 1 to 65535"},
    {"127.0.0.1:7a", "port must be a number from 1 to 65535"},
    {"127.0.0.1:+7", "port must be a number from 1 to 65535"},
    {"127.0.0.1:-7", "port must be a number from 1 to 65535"},
    {"127.0.0.1: 7", "port must be a number from 1 to 65535"},
    {"[::1]:0", "port must be a number from 1 to 65535"},
    {"udp:[::1]:65536", "port must be a number from 1 to 65535"},
    {"::1:7", "IPv6 addresses go in brackets: [ADDRESS]:PORT"},
    {"udp:::1:7", "IPv6 addresses go in brackets: [ADDRESS]:PORT"},
    {"[::1]", "expected [IPv6]:PORT"},
    {"[::1]7", "expected [IPv6]:PORT"},
    {"[::1:7", "expected [IPv6]:PORT"},
    {"localhost:7", "not a numeric IPv4 address"},
    {"1.2.3:7", "not a numeric IPv4 address"},
    {"256.0.0.1:7", "not a numeric IPv4 address"},
    {":7", "not a numeric IPv4 address"},
    {"[localhost]:7", "not a numeric IPv6 address"},
    {"[127.0.0.1]:7", "not a numeric IPv6 address"},
    {"[]:7", "not a numeric IPv6 address"},
    {"unix:", "empty UNIX socket path"},
    {"unix:run/x.sock", "UNIX socket path must be absolute (or @abstract)"},
    {"unix:./x.sock", "UNIX socket path must be absolute (or @abstract)"},
};

static void
test_bad(void **state)
{
	for (size_t i = 0; i < sizeof(bad_addresses) / sizeof(bad_addresses[0]); i++) {
		const struct bad_address *b = &bad_addresses[i];
		struct listen_address a, untouched;
		char reason[128] = "";

		memset(&a, 0x5a, sizeof(a));
		untouched = a;
		if (address_parse(b->s, &a, reason, sizeof(reason)) != -EINVAL)
			fail_msg("\"%s\" was accepted", b->s);
		if (strcmp(reason, b->reason) != 0)
			fail_msg("\"%s\": reason \"%s\", expected \"%s\"", b->s, reason, b->reason);
		/* ret is written only on success. */
		assert_memory_equal(&a, &untouched, sizeof(a));
	}
}

static void
test_unix_too_long(void **state)
{
	struct sockaddr_un un;
	char s[sizeof("unix:") + sizeof(un.sun_path) + 1];
	struct listen_address a;
	char reason[128] = "";

	/* 108 characters leave no room for the NUL. */
	memcpy(s, "unix:/", 6);
	memset(s + 6, 'p', sizeof(un.sun_path) - 1);
	s[5 + sizeof(un.sun_path)] = '\0';
	assert_int_equal(strlen(s + 5), sizeof(un.sun_path));
	assert_int_equal(address_parse(s, &a, reason, sizeof(reason)), -EINVAL);
	assert_string_equal(reason, "UNIX socket path too long");
}

static void
test_reason_truncated(void **state)
{
	struct listen_address a;
	char reason[8];

	memset(reason, 'x', sizeof(reason));
	assert_int_equal(address_parse("localhost:7", &a, reason, sizeof(reason)), -EINVAL);
	assert_string_equal(reason, "not a n");
}

/* Parsing then formatting gives the canonical spelling back. */
static void
check_round_trip(const char *s, const char *expected)
{
	struct listen_address a;
	char buf[ADDRESS_MAX];

	parse_ok(s, &a);
	memset(buf, 'x', sizeof(buf));
	address_format((const struct sockaddr *)&a.sa, a.salen, buf, sizeof(buf));
	assert_string_equal(buf, expected);
}

static void
test_format_round_trip(void **state)
{
	check_round_trip("127.0.0.1:7007", "127.0.0.1:7007");
	check_round_trip("tcp:127.0.0.1:7", "127.0.0.1:7");
	check_round_trip("udp:10.0.0.1:65535", "10.0.0.1:65535");
	check_round_trip("[::1]:7007", "[::1]:7007");
	check_round_trip("[2001:db8:0::42]:8", "[2001:db8::42]:8");
	check_round_trip("unix:/run/x.sock", "unix:/run/x.sock");
	check_round_trip("unix:@abstract", "unix:@abstract");
}

static void
test_format_truncates(void **state)
{
	struct listen_address a;
	char buf[6];

	parse_ok("127.0.0.1:7007", &a);
	memset(buf, 'x', sizeof(buf));
	address_format((const struct sockaddr *)&a.sa, a.salen, buf, sizeof(buf));
	assert_string_equal(buf, "127.0");
	/* A zero-sized buffer is left alone. */
	buf[0] = 'x';
	address_format((const struct sockaddr *)&a.sa, a.salen, buf, 0);
	assert_int_equal(buf[0], 'x');
}

/* The kernel's view: bind what was parsed, and format what the socket
 * reports back. A wrong salen for an abstract name shows up here as a
 * name with trailing NULs. */
static void
test_format_bound_sockets(void **state)
{
	struct listen_address a;
	char name[64], buf[ADDRESS_MAX];
	int fd, sv[2];

	snprintf(name, sizeof(name), "unix:@echod-test-address-%d", (int)getpid());
	parse_ok(name, &a);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (const struct sockaddr *)&a.sa, a.salen), 0);
	address_format_local(fd, buf, sizeof(buf));
	assert_string_equal(buf, name);
	close(fd);

	parse_ok("127.0.0.1:1", &a);
	((struct sockaddr_in *)&a.sa)->sin_port = 0;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (const struct sockaddr *)&a.sa, a.salen), 0);
	address_format_local(fd, buf, sizeof(buf));
	assert_memory_equal(buf, "127.0.0.1:", 10);
	assert_true(buf[10] >= '1' && buf[10] <= '9');
	/* Not connected: no peer. */
	address_format_peer(fd, buf, sizeof(buf));
	assert_string_equal(buf, "?");
	close(fd);

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	address_format_peer(sv[0], buf, sizeof(buf));
	assert_string_equal(buf, "unix:(unnamed)");
	close(sv[0]);
	close(sv[1]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ipv4),
	    cmocka_unit_test(test_ipv6),
	    cmocka_unit_test(test_tcp_prefix),
	    cmocka_unit_test(test_udp),
	    cmocka_unit_test(test_unix_path),
	    cmocka_unit_test(test_unix_abstract),
	    cmocka_unit_test(test_unix_longest_path),
	    cmocka_unit_test(test_bad),
	    cmocka_unit_test(test_unix_too_long),
	    cmocka_unit_test(test_reason_truncated),
	    cmocka_unit_test(test_format_round_trip),
	    cmocka_unit_test(test_format_truncates),
	    cmocka_unit_test(test_format_bound_sockets),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
