/* access.c: parsing AllowFrom=/DenyFrom= prefixes and deciding who may
 * connect. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

#include "access.h"

static char reason[160];

static struct sockaddr_storage
ip(const char *text)
{
	struct sockaddr_storage ss = {0};
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

	if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons(40000);
	} else {
		assert_int_equal(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(40000);
	}
	return ss;
}

static bool
permits(const struct access_list *l, const char *peer)
{
	struct sockaddr_storage ss = ip(peer);

	return access_permits(l, (struct sockaddr *)&ss);
}

static void
list_add(struct access_list *l, bool deny, const char *value)
{
	if (access_list_add(l, deny, value, reason, sizeof(reason)) < 0)
		fail_msg("%s: %s", value, reason);
}

static void
assert_cidr(const char *text, const char *formatted)
{
	struct cidr c;
	char buf[CIDR_TEXT_MAX];

	if (access_cidr_parse(text, &c, reason, sizeof(reason)) < 0)
		fail_msg("%s: %s", text, reason);
	access_cidr_format(&c, buf, sizeof(buf));
	assert_string_equal(buf, formatted);
}

static void
assert_cidr_refused(const char *text, const char *why)
{
	struct cidr c;

	assert_int_equal(access_cidr_parse(text, &c, reason, sizeof(reason)), -EINVAL);
	if (!strstr(reason, why))
		fail_msg("%s: reason \"%s\" lacks \"%s\"", text, reason, why);
}

static void
test_parse(void **state)
{
	(void)state;
	assert_cidr("192.0.2.0/24", "192.0.2.0/24");
	assert_cidr("192.0.2.7", "192.0.2.7/32");
	assert_cidr("0.0.0.0/0", "0.0.0.0/0");
	assert_cidr("2001:db8::/32", "2001:db8::/32");
	assert_cidr("::1", "::1/128");
	assert_cidr("::/0", "::/0");
	/* A mapped IPv4 prefix is the IPv4 one. */
	assert_cidr("::ffff:192.0.2.0/120", "192.0.2.0/24");
	assert_cidr("::ffff:192.0.2.9", "192.0.2.9/32");
	/* Wider than the mapped range: stays IPv6. */
	assert_cidr("::fffe:0:0/95", "::fffe:0:0/95");
	assert_cidr_refused("::ffff:0:0/95", "beyond the /95");
}

static void
test_parse_errors(void **state)
{
	(void)state;
	assert_cidr_refused("", "not an IPv4 or IPv6 address");
	assert_cidr_refused("example.com", "not an IPv4 or IPv6 address");
	assert_cidr_refused("192.0.2.0/", "not a number");
	assert_cidr_refused("192.0.2.0/+8", "not a number");
	assert_cidr_refused("192.0.2.0/08", "not a number");
	assert_cidr_refused("192.0.2.0/33", "0..32");
	assert_cidr_refused("2001:db8::/129", "0..128");
	assert_cidr_refused("192.0.2.0/24x", "0..32");
	assert_cidr_refused("192.0.2.1/24", "address bits set beyond the /24 prefix");
	assert_cidr_refused("2001:db8::1/64", "beyond the /64");
	assert_cidr_refused("192.0.2.0/99999999999999999999", "0..32");
	assert_cidr_refused("1.2.3", "not an IPv4 or IPv6 address");
}

static void
test_deny_wins(void **state)
{
	struct access_list l = {0};

	(void)state;
	list_add(&l, false, "127.0.0.0/8 2001:db8::/32");
	list_add(&l, true, "127.0.0.3");
	assert_true(permits(&l, "127.0.0.2"));
	assert_false(permits(&l, "127.0.0.3"));
	assert_false(permits(&l, "192.0.2.1"));
	assert_true(permits(&l, "2001:db8:1::5"));
	assert_false(permits(&l, "2001:db9::5"));
	assert_false(permits(&l, "::1"));
	access_list_clear(&l);
}

static void
test_empty_allow_allows_all(void **state)
{
	struct access_list l = {0};

	(void)state;
	assert_false(access_list_active(&l));
	assert_true(permits(&l, "203.0.113.1"));
	list_add(&l, true, "203.0.113.0/24");
	assert_true(access_list_active(&l));
	assert_false(permits(&l, "203.0.113.1"));
	assert_true(permits(&l, "203.0.114.1"));
	assert_true(permits(&l, "::1"));
	access_list_clear(&l);
}

/* What a dual-stack socket reports for an IPv4 client is that client. */
static void
test_mapped_peer(void **state)
{
	struct access_list l = {0};

	(void)state;
	list_add(&l, true, "192.0.2.0/24");
	assert_false(permits(&l, "::ffff:192.0.2.200"));
	assert_true(permits(&l, "::ffff:198.51.100.1"));
	access_list_clear(&l);
	list_add(&l, false, "::ffff:198.51.100.0/120");
	assert_true(permits(&l, "198.51.100.9"));
	assert_true(permits(&l, "::ffff:198.51.100.9"));
	assert_false(permits(&l, "192.0.2.1"));
	access_list_clear(&l);
}

static void
test_prefix_bits(void **state)
{
	struct access_list l = {0};

	(void)state;
	list_add(&l, false, "10.0.0.0/13 fe80::/10 0.0.0.0/32");
	assert_true(permits(&l, "10.7.255.255"));
	assert_false(permits(&l, "10.8.0.0"));
	assert_true(permits(&l, "febf::1"));
	assert_false(permits(&l, "fec0::1"));
	assert_false(permits(&l, "0.0.0.1"));
	access_list_clear(&l);
	list_add(&l, false, "0.0.0.0/0");
	assert_true(permits(&l, "255.255.255.255"));
	/* /0 of IPv4 says nothing of IPv6. */
	assert_false(permits(&l, "2001:db8::1"));
	access_list_clear(&l);
}

static void
test_unix_peers_not_subject(void **state)
{
	struct access_list l = {0};
	struct sockaddr_un un = {.sun_family = AF_UNIX};

	(void)state;
	list_add(&l, false, "192.0.2.0/24");
	assert_true(access_permits(&l, (struct sockaddr *)&un));
	access_list_clear(&l);
}

/* All or nothing: one bad word leaves the list as it was. */
static void
test_add_is_atomic(void **state)
{
	struct access_list l = {0}, copy = {0};

	(void)state;
	list_add(&l, false, "  192.0.2.0/24\t198.51.100.0/24 ");
	assert_int_equal(l.n_allow, 2);
	assert_int_equal(access_list_add(&l, false, "203.0.113.0/24 nonsense", reason,
					 sizeof(reason)),
			 -EINVAL);
	assert_non_null(strstr(reason, "\"nonsense\""));
	assert_int_equal(l.n_allow, 2);
	assert_int_equal(access_list_add(&l, true, "   ", reason, sizeof(reason)), -EINVAL);
	assert_string_equal(reason, "no address given");
	assert_int_equal(l.n_deny, 0);

	assert_int_equal(access_list_copy(&copy, &l), 0);
	access_list_clear(&l);
	assert_int_equal(copy.n_allow, 2);
	assert_true(permits(&copy, "198.51.100.77"));
	access_list_clear(&copy);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse),
	    cmocka_unit_test(test_parse_errors),
	    cmocka_unit_test(test_deny_wins),
	    cmocka_unit_test(test_empty_allow_allows_all),
	    cmocka_unit_test(test_mapped_peer),
	    cmocka_unit_test(test_prefix_bits),
	    cmocka_unit_test(test_unix_peers_not_subject),
	    cmocka_unit_test(test_add_is_atomic),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
