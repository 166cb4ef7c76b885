/* proxy.c: the PROXY v1/v2 header parser, every branch of both versions,
 * whole and fed one byte at a time. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "proxy.h"

#define SIG "\r\n\r\n\0\r\nQUIT\n"

/* Feeds the whole of data at once; returns what proxy_parse() returns. */
static int
parse_all(const void *data, size_t len, size_t *used, struct proxy_header *h)
{
	struct proxy_parser p;

	proxy_parser_init(&p);
	return proxy_parse(&p, data, len, used, h);
}

/* One byte at a time: PROXY_MORE before the last header byte, then the
 * same result as parse_all(); the bytes after are not taken. */
static int
parse_bytes(const void *data, size_t len, size_t *used, struct proxy_header *h)
{
	const uint8_t *d = data;
	struct proxy_parser p;

	proxy_parser_init(&p);
	for (size_t i = 0; i < len; i++) {
		size_t one;
		int r = proxy_parse(&p, d + i, 1, &one, h);
		if (r == PROXY_MORE)
			continue;
		if (r == PROXY_DONE) {
			assert_int_equal(one, 1);
			*used = i + 1;
			/* Done: takes nothing more. */
			assert_int_equal(proxy_parse(&p, "x", 1, &one, h), -EINVAL);
		}
		return r;
	}
	return PROXY_MORE;
}

/* Both ways agree; returns the result. */
static int
parse(const void *data, size_t len, size_t *used, struct proxy_header *h)
{
	struct proxy_header h2;
	size_t used2 = 0;
	int r = parse_all(data, len, used, h);
	int r2 = parse_bytes(data, len, &used2, &h2);

	assert_int_equal(r, r2);
	if (r == PROXY_DONE) {
		assert_int_equal(*used, used2);
		assert_int_equal(h->has_source, h2.has_source);
		assert_int_equal(h->source_len, h2.source_len);
		assert_memory_equal(&h->source, &h2.source, h->source_len);
	}
	return r;
}

static void
assert_source4(const struct proxy_header *h, const char *addr, uint16_t port)
{
	const struct sockaddr_in *in = (const struct sockaddr_in *)&h->source;
	char text[INET_ADDRSTRLEN];

	assert_true(h->has_source);
	assert_int_equal(in->sin_family, AF_INET);
	assert_int_equal(h->source_len, sizeof(*in));
	assert_non_null(inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)));
	assert_string_equal(text, addr);
	assert_int_equal(ntohs(in->sin_port), port);
}

static void
assert_source6(const struct proxy_header *h, const char *addr, uint16_t port)
{
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&h->source;
	char text[INET6_ADDRSTRLEN];

	assert_true(h->has_source);
	assert_int_equal(in6->sin6_family, AF_INET6);
	assert_int_equal(h->source_len, sizeof(*in6));
	assert_non_null(inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text)));
	assert_string_equal(text, addr);
	assert_int_equal(ntohs(in6->sin6_port), port);
}

#define PARSE(lit, used, h) parse(lit, sizeof(lit) - 1, used, h)

/* --- v1 --- */

static void
test_v1_tcp4(void **state)
{
	static const char in[] = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /";
	struct proxy_header h;
	size_t used;

	assert_int_equal(PARSE(in, &used, &h), PROXY_DONE);
	assert_int_equal(used, strlen(in) - strlen("GET /"));
	assert_int_equal(h.version, 1);
	assert_false(h.local);
	assert_source4(&h, "192.168.0.1", 56324);
}

static void
test_v1_tcp6(void **state)
{
	static const char in[] = "PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
	struct proxy_header h;
	size_t used;

	assert_int_equal(PARSE(in, &used, &h), PROXY_DONE);
	assert_int_equal(used, strlen(in));
	assert_source6(&h, "2001:db8::1", 1);
}

static void
test_v1_longest(void **state)
{
	/* The spec's worst case, 107 bytes: UNKNOWN with the longest TCP6
	 * addresses and ports; TCP6 itself is 3 bytes shorter. */
	static const char unknown[] = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
				      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	static const char tcp6[] = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
				   "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	struct proxy_header h;
	size_t used;

	assert_int_equal(strlen(unknown), PROXY_V1_MAX);
	assert_int_equal(PARSE(unknown, &used, &h), PROXY_DONE);
	assert_int_equal(used, PROXY_V1_MAX);
	assert_false(h.has_source);
	assert_int_equal(PARSE(tcp6, &used, &h), PROXY_DONE);
	assert_int_equal(used, strlen(tcp6));
	assert_source6(&h, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
}

static void
test_v1_unknown(void **state)
{
	static const char bare[] = "PROXY UNKNOWN\r\nabc";
	static const char rest[] = "PROXY UNKNOWN ffff:f::1 whatever 1 2\r\n";
	struct proxy_header h;
	size_t used;

	assert_int_equal(PARSE(bare, &used, &h), PROXY_DONE);
	assert_int_equal(used, strlen(bare) - 3);
	assert_int_equal(h.version, 1);
	assert_false(h.has_source);
	/* What follows UNKNOWN is ignored. */
	assert_int_equal(PARSE(rest, &used, &h), PROXY_DONE);
	assert_false(h.has_source);
}

static void
test_v1_more(void **state)
{
	struct proxy_header h;
	size_t used;

	assert_int_equal(PARSE("P", &used, &h), PROXY_MORE);
	assert_int_equal(PARSE("PROXY TCP4 1.2.3.4 5.6.7.8 1 2", &used, &h), PROXY_MORE);
	assert_int_equal(PARSE("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", &used, &h), PROXY_MORE);
}

static void
test_v1_malformed(void **state)
{
	static const char *const bad[] = {
	    "GET / HTTP/1.0\r\n",			/* no header at all */
	    "PROXY\r\n",				/* the prefix cut short */
	    "PROXX TCP4 1.2.3.4 5.6.7.8 1 2\r\n",	/* a wrong prefix */
	    "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",	/* a wrong protocol */
	    "PROXY \r\n",				/* no protocol */
	    "PROXY UNKNOWNX\r\n",			/* not UNKNOWN */
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",		/* a field missing */
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",	/* one too many */
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",	/* a trailing space */
	    "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",	/* two spaces */
	    "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",	/* not an IPv4 address */
	    "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",		/* IPv6 under TCP4 */
	    "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",		/* IPv4 under TCP6 */
	    "PROXY TCP4 1.2.3.4 5.6.7.x 1 2\r\n",	/* a bad destination */
	    "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",	/* a port too big */
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1 123456\r\n",	/* too many digits */
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1a 2\r\n",	/* not a number */
	    "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",	/* a sign */
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",		/* LF without CR */
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx",	/* CR without LF */
	    "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",	/* a control character */
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\x80\r\n",	/* not ASCII */
	};
	struct proxy_header h;
	size_t used;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = parse(bad[i], strlen(bad[i]), &used, &h);
		if (r != -EBADMSG)
			fail_msg("\"%s\": %d, not -EBADMSG", bad[i], r);
	}
}

static void
test_v1_oversized(void **state)
{
	char in[200];
	struct proxy_header h;
	size_t used;

	/* 108 bytes and no end in sight. */
	memset(in, '1', sizeof(in));
	memcpy(in, "PROXY UNKNOWN ", 14);
	assert_int_equal(parse(in, PROXY_V1_MAX, &used, &h), PROXY_MORE);
	assert_int_equal(parse(in, PROXY_V1_MAX + 1, &used, &h), -E2BIG);
	/* A line ending one byte too late. */
	memcpy(in + PROXY_V1_MAX - 1, "\r\n", 2);
	assert_int_equal(parse(in, PROXY_V1_MAX + 1, &used, &h), -E2BIG);
}

/* --- v2 --- */

/* A v2 header: signature, ver_cmd, fam, the block of len bytes. Returns
 * its length. */
static size_t
v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const void *block, size_t len)
{
	memcpy(out, SIG, 12);
	out[12] = ver_cmd;
	out[13] = fam;
	out[14] = (uint8_t)(len >> 8);
	out[15] = (uint8_t)len;
	if (len)
		memcpy(out + 16, block, len);
	return 16 + len;
}

static const uint8_t inet_block[12] = {192, 0, 2, 7, 198, 51, 100, 1, 0xc3, 0x50, 0x00, 0x07};

static void
test_v2_inet(void **state)
{
	uint8_t in[64];
	struct proxy_header h;
	size_t used, n = v2(in, 0x21, 0x11, inet_block, sizeof(inet_block));

	memcpy(in + n, "hello", 5);
	assert_int_equal(parse(in, n + 5, &used, &h), PROXY_DONE);
	assert_int_equal(used, n);
	assert_int_equal(h.version, 2);
	assert_false(h.local);
	assert_source4(&h, "192.0.2.7", 50000);
}

static void
test_v2_inet6(void **state)
{
	uint8_t block[36] = {0x20, 0x01, 0x0d, 0xb8, [15] = 0x05, [16] = 0x20, [17] = 0x01,
			     [31] = 0x09, [32] = 0x01, [33] = 0x02, [34] = 0, [35] = 7};
	uint8_t in[64];
	struct proxy_header h;
	size_t used, n = v2(in, 0x21, 0x21, block, sizeof(block));

	assert_int_equal(parse(in, n, &used, &h), PROXY_DONE);
	assert_int_equal(used, n);
	assert_source6(&h, "2001:db8::5", 258);
}

static void
test_v2_local(void **state)
{
	uint8_t in[64];
	struct proxy_header h;
	size_t used, n = v2(in, 0x20, 0x00, NULL, 0);

	assert_int_equal(parse(in, n, &used, &h), PROXY_DONE);
	assert_int_equal(used, 16);
	assert_true(h.local);
	assert_false(h.has_source);
	/* LOCAL with addresses (haproxy's health checks may send them): the
	 * block is discarded, the family too, TLVs unchecked. */
	n = v2(in, 0x20, 0x11, inet_block, sizeof(inet_block));
	assert_int_equal(parse(in, n, &used, &h), PROXY_DONE);
	assert_int_equal(used, n);
	assert_true(h.local);
	assert_false(h.has_source);
}

static void
test_v2_fallbacks(void **state)
{
	uint8_t unix_block[216] = {'/', 'a'};
	uint8_t in[300], junk[5] = {1, 2, 3, 4, 5};
	struct proxy_header h;
	size_t used, n;

	/* AF_UNIX: the balancer's address. */
	n = v2(in, 0x21, 0x31, unix_block, sizeof(unix_block));
	assert_int_equal(parse(in, n, &used, &h), PROXY_DONE);
	assert_int_equal(used, n);
	assert_false(h.local);
	assert_false(h.has_source);
	/* AF_UNSPEC: whatever follows is skipped unread. */
	n = v2(in, 0x21, 0x00, junk, sizeof(junk));
	assert_int_equal(parse(in, n, &used, &h), PROXY_DONE);
	assert_int_equal(used, n);
	assert_false(h.has_source);
	/* An IPv4 datagram, or no transport named: not a stream's client. */
	n = v2(in, 0x21, 0x12, inet_block, sizeof(inet_block));
	assert_int_equal(parse(in, n, &used, &h), PROXY_DONE);
	assert_false(h.has_source);
	n = v2(in, 0x21, 0x10, inet_block, sizeof(inet_block));
	assert_int_equal(parse(in, n, &used, &h), PROXY_DONE);
	assert_false(h.has_source);
}

static void
test_v2_tlvs(void **state)
{
	uint8_t block[12 + 3 + 4 + 3 + 0 + 3 + 2];
	uint8_t in[64];
	struct proxy_header h;
	size_t used, n;

	memcpy(block, inet_block, 12);
	/* PP2_TYPE_ALPN "echo", an empty NOOP, an unknown type's 2 bytes. */
	memcpy(block + 12, "\x01\x00\x04" "echo", 7);
	memcpy(block + 19, "\x04\x00\x00", 3);
	memcpy(block + 22, "\xee\x00\x02" "xy", 5);
	n = v2(in, 0x21, 0x11, block, sizeof(block));
	assert_int_equal(parse(in, n, &used, &h), PROXY_DONE);
	assert_int_equal(used, n);
	assert_source4(&h, "192.0.2.7", 50000);
	/* A TLV whose value runs past the header. */
	block[24] = 0x03;
	n = v2(in, 0x21, 0x11, block, sizeof(block));
	assert_int_equal(parse(in, n, &used, &h), -EBADMSG);
	/* A TLV head cut short by the header's end. */
	n = v2(in, 0x21, 0x11, block, 12 + 2);
	assert_int_equal(parse(in, n, &used, &h), -EBADMSG);
	/* TLVs after AF_UNIX addresses are walked too. */
	{
		uint8_t ub[216 + 2] = {0}, big[300];
		n = v2(big, 0x21, 0x31, ub, sizeof(ub));
		assert_int_equal(parse(big, n, &used, &h), -EBADMSG);
	}
}

static void
test_v2_malformed(void **state)
{
	uint8_t in[64];
	struct proxy_header h;
	size_t used, n;

	/* A signature byte wrong, at each position. */
	for (size_t i = 1; i < 12; i++) {
		n = v2(in, 0x21, 0x11, inet_block, sizeof(inet_block));
		in[i] ^= 0x40;
		assert_int_equal(parse(in, n, &used, &h), -EBADMSG);
	}
	/* Version 1 or 3 in the binary form. */
	n = v2(in, 0x11, 0x11, inet_block, sizeof(inet_block));
	assert_int_equal(parse(in, n, &used, &h), -EBADMSG);
	n = v2(in, 0x31, 0x11, inet_block, sizeof(inet_block));
	assert_int_equal(parse(in, n, &used, &h), -EBADMSG);
	/* A command neither LOCAL nor PROXY. */
	n = v2(in, 0x22, 0x11, inet_block, sizeof(inet_block));
	assert_int_equal(parse(in, n, &used, &h), -EBADMSG);
	/* An unknown family or transport. */
	n = v2(in, 0x21, 0x41, inet_block, sizeof(inet_block));
	assert_int_equal(parse(in, n, &used, &h), -EBADMSG);
	n = v2(in, 0x21, 0x13, inet_block, sizeof(inet_block));
	assert_int_equal(parse(in, n, &used, &h), -EBADMSG);
	/* Too short for the family's addresses. */
	n = v2(in, 0x21, 0x11, inet_block, 11);
	assert_int_equal(parse(in, n, &used, &h), -EBADMSG);
	n = v2(in, 0x21, 0x21, inet_block, 12);
	assert_int_equal(parse(in, n, &used, &h), -EBADMSG);
	n = v2(in, 0x21, 0x31, inet_block, 12);
	assert_int_equal(parse(in, n, &used, &h), -EBADMSG);
	/* Incomplete: more wanted, whatever was cut. */
	n = v2(in, 0x21, 0x11, inet_block, sizeof(inet_block));
	assert_int_equal(parse(in, 15, &used, &h), PROXY_MORE);
	assert_int_equal(parse(in, n - 1, &used, &h), PROXY_MORE);
	/* A first byte that begins neither version. */
	assert_int_equal(parse("\n", 1, &used, &h), -EBADMSG);
	assert_int_equal(parse("\0", 1, &used, &h), -EBADMSG);
}

static void
test_v2_oversized(void **state)
{
	uint8_t in[16];
	struct proxy_header h;
	size_t used;

	/* Refused from the length alone, before the block comes. */
	v2(in, 0x21, 0x11, NULL, 0);
	in[14] = (PROXY_V2_MAX - 16 + 1) >> 8;
	in[15] = (PROXY_V2_MAX - 16 + 1) & 0xff;
	assert_int_equal(parse(in, 16, &used, &h), -E2BIG);
	in[14] = in[15] = 0xff;
	assert_int_equal(parse(in, 16, &used, &h), -E2BIG);
}

static void
test_v2_largest(void **state)
{
	static uint8_t in[PROXY_V2_MAX], block[PROXY_V2_MAX - 16];
	struct proxy_header h;
	size_t used, n;

	/* Addresses, then one NOOP TLV filling the rest. */
	memcpy(block, inet_block, 12);
	block[12] = 0x04;
	block[13] = (uint8_t)((sizeof(block) - 15) >> 8);
	block[14] = (uint8_t)(sizeof(block) - 15);
	n = v2(in, 0x21, 0x11, block, sizeof(block));
	assert_int_equal(n, PROXY_V2_MAX);
	assert_int_equal(parse(in, n, &used, &h), PROXY_DONE);
	assert_int_equal(used, PROXY_V2_MAX);
	assert_source4(&h, "192.0.2.7", 50000);
}

static void
test_after_error(void **state)
{
	struct proxy_parser p;
	struct proxy_header h;
	size_t used;

	proxy_parser_init(&p);
	assert_int_equal(proxy_parse(&p, "X", 1, &used, &h), -EBADMSG);
	assert_int_equal(proxy_parse(&p, "PROXY UNKNOWN\r\n", 15, &used, &h), -EINVAL);
	/* Nothing fed: nothing decided. */
	proxy_parser_init(&p);
	assert_int_equal(proxy_parse(&p, "", 0, &used, &h), PROXY_MORE);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_v1_tcp4),
	    cmocka_unit_test(test_v1_tcp6),
	    cmocka_unit_test(test_v1_longest),
	    cmocka_unit_test(test_v1_unknown),
	    cmocka_unit_test(test_v1_more),
	    cmocka_unit_test(test_v1_malformed),
	    cmocka_unit_test(test_v1_oversized),
	    cmocka_unit_test(test_v2_inet),
	    cmocka_unit_test(test_v2_inet6),
	    cmocka_unit_test(test_v2_local),
	    cmocka_unit_test(test_v2_fallbacks),
	    cmocka_unit_test(test_v2_tlvs),
	    cmocka_unit_test(test_v2_malformed),
	    cmocka_unit_test(test_v2_oversized),
	    cmocka_unit_test(test_v2_largest),
	    cmocka_unit_test(test_after_error),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
