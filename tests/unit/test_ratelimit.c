/* ratelimit: token arithmetic, source grouping and bounded memory, with time
 * driven by the test. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

#include <cmocka.h>

#include "ratelimit.h"

#define SEC UINT64_C(1000000)
#define T0 (1000 * SEC)

static struct sockaddr_storage
v4(const char *addr, uint16_t port)
{
	struct sockaddr_storage ss = {};
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	assert_int_equal(inet_pton(AF_INET, addr, &sin->sin_addr), 1);
	return ss;
}

static struct sockaddr_storage
v6(const char *addr, uint16_t port)
{
	struct sockaddr_storage ss = {};
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	assert_int_equal(inet_pton(AF_INET6, addr, &sin6->sin6_addr), 1);
	return ss;
}

static bool
allow(struct ratelimit *rl, struct sockaddr_storage ss, uint64_t now)
{
	return ratelimit_allow(rl, (struct sockaddr *)&ss, now);
}

static void
test_bad_arguments(void **state)
{
	struct ratelimit *rl = NULL;

	assert_int_equal(ratelimit_new(10, 10, 0, &rl), -EINVAL);
	assert_null(rl);
}

static void
test_rate_zero_is_off(void **state)
{
	_cleanup_ratelimit_ struct ratelimit *rl = NULL;

	assert_int_equal(ratelimit_new(0, 0, 16, &rl), 0);
	for (int i = 0; i < 100000; i++)
		assert_true(allow(rl, v4("192.0.2.1", 5000), T0));
	assert_int_equal(ratelimit_entries(rl), 0);
}

static void
test_burst_then_refill(void **state)
{
	_cleanup_ratelimit_ struct ratelimit *rl = NULL;
	int n;

	assert_int_equal(ratelimit_new(100, 10, 16, &rl), 0);

	for (int i = 0; i < 10; i++)
		assert_true(allow(rl, v4("192.0.2.1", 5000), T0));
	assert_false(allow(rl, v4("192.0.2.1", 5000), T0));

	/* 100/s: 9.999 ms earns nothing yet, 10 ms exactly one token. */
	assert_false(allow(rl, v4("192.0.2.1", 5000), T0 + 9999));
	assert_true(allow(rl, v4("192.0.2.1", 5000), T0 + 10000));
	assert_false(allow(rl, v4("192.0.2.1", 5000), T0 + 10000));

	/* A long silence fills the bucket to the burst, not beyond. */
	for (n = 0; allow(rl, v4("192.0.2.1", 5000), T0 + 3600 * SEC); n++)
		assert_true(n < 1000);
	assert_int_equal(n, 10);

	/* Sustained: over 10 s at one call per ms, 100/s get through. */
	n = 0;
	for (uint64_t t = 1; t <= 10000; t++)
		n += allow(rl, v4("192.0.2.1", 5000), T0 + 3600 * SEC + t * 1000);
	assert_int_equal(n, 1000);
}

static void
test_burst_defaults_to_rate(void **state)
{
	_cleanup_ratelimit_ struct ratelimit *rl = NULL;
	int n;

	assert_int_equal(ratelimit_new(50, 0, 16, &rl), 0);
	for (n = 0; allow(rl, v4("192.0.2.1", 5000), T0); n++)
		assert_true(n < 1000);
	assert_int_equal(n, 50);
}

static void
test_time_going_back_earns_nothing(void **state)
{
	_cleanup_ratelimit_ struct ratelimit *rl = NULL;

	assert_int_equal(ratelimit_new(1, 1, 16, &rl), 0);
	assert_true(allow(rl, v4("192.0.2.1", 5000), T0));
	assert_false(allow(rl, v4("192.0.2.1", 5000), T0 - 10 * SEC));
	assert_false(allow(rl, v4("192.0.2.1", 5000), T0 + SEC - 1));
	assert_true(allow(rl, v4("192.0.2.1", 5000), T0 + SEC));
}

static void
test_sources_are_apart(void **state)
{
	_cleanup_ratelimit_ struct ratelimit *rl = NULL;

	assert_int_equal(ratelimit_new(1, 1, 16, &rl), 0);
	assert_true(allow(rl, v4("192.0.2.1", 5000), T0));
	assert_false(allow(rl, v4("192.0.2.1", 5000), T0));
	/* Another port of the same address is the same source... */
	assert_false(allow(rl, v4("192.0.2.1", 6000), T0));
	/* ...another address is not. */
	assert_true(allow(rl, v4("192.0.2.2", 5000), T0));
	assert_int_equal(ratelimit_entries(rl), 2);
}

static void
test_ipv6_grouped_by_64(void **state)
{
	_cleanup_ratelimit_ struct ratelimit *rl = NULL;

	assert_int_equal(ratelimit_new(1, 1, 16, &rl), 0);
	assert_true(allow(rl, v6("2001:db8:1:2::1", 5000), T0));
	assert_false(allow(rl, v6("2001:db8:1:2:ffff:ffff:ffff:ffff", 5000), T0));
	assert_false(allow(rl, v6("2001:db8:1:2:dead:beef::7", 6000), T0));
	/* The neighbouring /64 is someone else. */
	assert_true(allow(rl, v6("2001:db8:1:3::1", 5000), T0));
	assert_true(allow(rl, v6("2001:db8:1:1::1", 5000), T0));
	assert_int_equal(ratelimit_entries(rl), 3);
}

static void
test_v4_mapped_is_v4(void **state)
{
	_cleanup_ratelimit_ struct ratelimit *rl = NULL;

	assert_int_equal(ratelimit_new(1, 1, 16, &rl), 0);
	assert_true(allow(rl, v4("192.0.2.1", 5000), T0));
	assert_false(allow(rl, v6("::ffff:192.0.2.1", 5000), T0));
	/* Mapped addresses share ::/64 with ::1 but are each their own source. */
	assert_true(allow(rl, v6("::ffff:192.0.2.2", 5000), T0));
	assert_true(allow(rl, v6("::1", 5000), T0));
	assert_true(allow(rl, v4("0.0.0.1", 5000), T0));
	assert_int_equal(ratelimit_entries(rl), 4);
}

static void
test_other_families_not_limited(void **state)
{
	_cleanup_ratelimit_ struct ratelimit *rl = NULL;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	assert_int_equal(ratelimit_new(1, 1, 16, &rl), 0);
	for (int i = 0; i < 10; i++)
		assert_true(ratelimit_allow(rl, (struct sockaddr *)&sun, T0));
	assert_int_equal(ratelimit_entries(rl), 0);
}

static void
test_full_table_evicts_stalest(void **state)
{
	_cleanup_ratelimit_ struct ratelimit *rl = NULL;

	/* rate 1, burst 1, time standing still: a source seen once is empty, so
	 * "allowed again" means "was forgotten". */
	assert_int_equal(ratelimit_new(1, 1, 4, &rl), 0);
	assert_true(allow(rl, v4("10.0.0.1", 5000), T0));
	assert_true(allow(rl, v4("10.0.0.2", 5000), T0));
	assert_true(allow(rl, v4("10.0.0.3", 5000), T0));
	assert_true(allow(rl, v4("10.0.0.4", 5000), T0));
	assert_int_equal(ratelimit_entries(rl), 4);

	/* Being seen (even refused) keeps a source fresh: .1 is now newest. */
	assert_false(allow(rl, v4("10.0.0.1", 5000), T0));

	assert_true(allow(rl, v4("10.0.0.5", 5000), T0)); /* evicts .2 */
	assert_int_equal(ratelimit_entries(rl), 4);
	assert_false(allow(rl, v4("10.0.0.1", 5000), T0));
	assert_false(allow(rl, v4("10.0.0.3", 5000), T0));
	assert_false(allow(rl, v4("10.0.0.4", 5000), T0));
	assert_false(allow(rl, v4("10.0.0.5", 5000), T0));
	assert_true(allow(rl, v4("10.0.0.2", 5000), T0)); /* forgotten */
	assert_int_equal(ratelimit_entries(rl), 4);
}

static void
test_many_sources_bounded(void **state)
{
	enum { CAPACITY = RATELIMIT_CAPACITY_DEFAULT, SOURCES = 100000 };
	_cleanup_ratelimit_ struct ratelimit *rl = NULL;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(5000)};

	assert_int_equal(ratelimit_new(1, 1, CAPACITY, &rl), 0);
	for (uint32_t i = 0; i < SOURCES; i++) {
		sin.sin_addr.s_addr = htonl(0x0a000000 + i);
		assert_true(ratelimit_allow(rl, (struct sockaddr *)&sin, T0));
	}
	assert_int_equal(ratelimit_entries(rl), CAPACITY);

	/* After 100,000 evictions the chains still find the newest CAPACITY
	 * sources (refused: remembered), and no older one. */
	for (uint32_t i = SOURCES - CAPACITY; i < SOURCES; i++) {
		sin.sin_addr.s_addr = htonl(0x0a000000 + i);
		assert_false(ratelimit_allow(rl, (struct sockaddr *)&sin, T0));
	}
	sin.sin_addr.s_addr = htonl(0x0a000000 + SOURCES - CAPACITY - 1);
	assert_true(ratelimit_allow(rl, (struct sockaddr *)&sin, T0));
	assert_int_equal(ratelimit_entries(rl), CAPACITY);
}

static void
test_odd_capacity(void **state)
{
	_cleanup_ratelimit_ struct ratelimit *rl = NULL;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(5000)};

	/* Not a power of two: the table holds exactly what was asked. */
	assert_int_equal(ratelimit_new(1, 1, 5, &rl), 0);
	for (uint32_t i = 0; i < 50; i++) {
		sin.sin_addr.s_addr = htonl(0x0a000000 + i);
		assert_true(ratelimit_allow(rl, (struct sockaddr *)&sin, T0));
		assert_int_equal(ratelimit_entries(rl), i < 5 ? i + 1 : 5);
	}
}

static void
assert_key(struct sockaddr_storage ss, const char *expected_v6)
{
	uint8_t key[16], want[16];

	assert_true(ratelimit_source_key((struct sockaddr *)&ss, key));
	assert_int_equal(inet_pton(AF_INET6, expected_v6, want), 1);
	assert_memory_equal(key, want, 16);
}

static void
test_source_key(void **state)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	uint8_t key[16];

	/* IPv4, and IPv4-mapped IPv6, are the IPv4 address, port ignored. */
	assert_key(v4("192.0.2.1", 5000), "::ffff:192.0.2.1");
	assert_key(v6("::ffff:192.0.2.1", 6000), "::ffff:192.0.2.1");
	/* IPv6 is its /64: the interface half is masked. */
	assert_key(v6("2001:db8:1:2:dead:beef:0:7", 5000), "2001:db8:1:2::");
	assert_key(v6("2001:db8:1:2:ffff:ffff:ffff:ffff", 1), "2001:db8:1:2::");
	assert_key(v6("::1", 5000), "::");
	/* A v6 /64 never collides with a v4 key: its low half is zero. */
	assert_key(v6("0:0:0:ffff:1:2:3:4", 5000), "0:0:0:ffff::");
	assert_false(ratelimit_source_key((struct sockaddr *)&sun, key));
}

static void
test_shared_bucket(void **state)
{
	uint64_t bucket = 0, due = 0;

	/* rate 0: no limit, the word is not touched. */
	for (int i = 0; i < 1000; i++)
		assert_true(ratelimit_shared_take(&bucket, 0, 0, T0, &due));
	assert_int_equal(bucket, 0);

	/* 10/s, burst defaulting to 10: ten at once, then one per 100 ms. */
	for (int i = 0; i < 10; i++)
		assert_true(ratelimit_shared_take(&bucket, 10, 0, T0, &due));
	assert_false(ratelimit_shared_take(&bucket, 10, 0, T0, &due));
	assert_int_equal(due, T0 + 100000);
	assert_false(ratelimit_shared_take(&bucket, 10, 0, T0 + 99999, NULL));
	assert_true(ratelimit_shared_take(&bucket, 10, 0, T0 + 100000, &due));
	assert_false(ratelimit_shared_take(&bucket, 10, 0, T0 + 100000, &due));
	assert_int_equal(due, T0 + 200000);

	/* A token given back is there again at once. */
	ratelimit_shared_refund(&bucket, 10);
	assert_true(ratelimit_shared_take(&bucket, 10, 0, T0 + 100000, NULL));
	assert_false(ratelimit_shared_take(&bucket, 10, 0, T0 + 100000, NULL));

	/* A long quiet fills the bucket to the burst, not beyond. */
	int n = 0;
	while (ratelimit_shared_take(&bucket, 10, 0, T0 + 3600 * SEC, NULL))
		assert_true(++n <= 10);
	assert_int_equal(n, 10);

	/* Sustained over 10 s at one try per ms: 100 get through. */
	n = 0;
	for (uint64_t t = 1; t <= 10000; t++)
		n += ratelimit_shared_take(&bucket, 10, 0, T0 + 3600 * SEC + t * 1000, NULL);
	assert_int_equal(n, 100);

	/* An explicit burst of 1: strictly one per interval. */
	bucket = 0;
	assert_true(ratelimit_shared_take(&bucket, 2, 1, T0, NULL));
	assert_false(ratelimit_shared_take(&bucket, 2, 1, T0 + 499999, &due));
	assert_int_equal(due, T0 + 500000);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bad_arguments),
	    cmocka_unit_test(test_rate_zero_is_off),
	    cmocka_unit_test(test_burst_then_refill),
	    cmocka_unit_test(test_burst_defaults_to_rate),
	    cmocka_unit_test(test_time_going_back_earns_nothing),
	    cmocka_unit_test(test_sources_are_apart),
	    cmocka_unit_test(test_ipv6_grouped_by_64),
	    cmocka_unit_test(test_v4_mapped_is_v4),
	    cmocka_unit_test(test_other_families_not_limited),
	    cmocka_unit_test(test_full_table_evicts_stalest),
	    cmocka_unit_test(test_many_sources_bounded),
	    cmocka_unit_test(test_odd_capacity),
	    cmocka_unit_test(test_source_key),
	    cmocka_unit_test(test_shared_bucket),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
