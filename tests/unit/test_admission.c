/* admission.c: the per-source connection table (keys, limits across owners,
 * giving back, a killed owner, a full table, sharing with a child) and the
 * service-wide rate bucket in the scoreboard. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "admission.h"
#include "scoreboard.h"

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

static int
take(struct admission_table *t, struct sockaddr_storage ss, pid_t owner, unsigned limit,
     struct admission_ticket *ticket)
{
	return admission_take(t, (struct sockaddr *)&ss, owner, limit, ticket);
}

static unsigned
count(struct admission_table *t, struct sockaddr_storage ss)
{
	return admission_count(t, (struct sockaddr *)&ss);
}

static void
test_bad_capacity(void **state)
{
	struct admission_table *t = NULL;

	assert_int_equal(admission_table_new(0, &t, NULL), -EINVAL);
	assert_null(t);
}

static void
test_limit_per_source(void **state)
{
	struct admission_table *t;
	struct admission_ticket k[4], other;

	assert_int_equal(admission_table_new(16, &t, NULL), 0);
	assert_int_equal(take(t, v4("192.0.2.1", 5000), 100, 2, &k[0]), 1);
	assert_true(k[0].counted);
	assert_int_equal(take(t, v4("192.0.2.1", 5001), 100, 2, &k[1]), 1);
	/* The third from that address is refused, and not counted... */
	assert_int_equal(take(t, v4("192.0.2.1", 5002), 100, 2, &k[2]), 0);
	assert_false(k[2].counted);
	assert_int_equal(count(t, v4("192.0.2.1", 0)), 2);
	/* ...while another address is served. */
	assert_int_equal(take(t, v4("192.0.2.2", 5000), 100, 2, &other), 1);
	assert_int_equal(count(t, v4("192.0.2.2", 0)), 1);

	/* One closes: room for one more. */
	admission_put(t, 100, &k[0]);
	assert_int_equal(count(t, v4("192.0.2.1", 0)), 1);
	assert_int_equal(take(t, v4("192.0.2.1", 5003), 100, 2, &k[3]), 1);
	assert_int_equal(take(t, v4("192.0.2.1", 5004), 100, 2, &k[2]), 0);
	admission_put(t, 100, &k[1]);
	admission_put(t, 100, &k[3]);
	admission_put(t, 100, &other);
	assert_int_equal(count(t, v4("192.0.2.1", 0)), 0);
	assert_int_equal(count(t, v4("192.0.2.2", 0)), 0);
	admission_table_free(t);
}

static void
test_limit_across_owners(void **state)
{
	struct admission_table *t;
	struct admission_ticket a, b, c;

	/* Two processes serving the same source share its limit. */
	assert_int_equal(admission_table_new(16, &t, NULL), 0);
	assert_int_equal(take(t, v4("192.0.2.1", 1), 100, 2, &a), 1);
	assert_int_equal(take(t, v4("192.0.2.1", 2), 200, 2, &b), 1);
	assert_int_equal(take(t, v4("192.0.2.1", 3), 300, 2, &c), 0);
	assert_int_equal(take(t, v4("192.0.2.1", 3), 100, 2, &c), 0);
	/* Giving back under the wrong owner gives back nothing. */
	admission_put(t, 300, &a);
	assert_int_equal(count(t, v4("192.0.2.1", 0)), 2);
	admission_put(t, 200, &b);
	assert_int_equal(count(t, v4("192.0.2.1", 0)), 1);
	assert_int_equal(take(t, v4("192.0.2.1", 3), 300, 2, &c), 1);
	admission_table_free(t);
}

static void
test_ipv6_per_64_and_v4_mapped(void **state)
{
	struct admission_table *t;
	struct admission_ticket k;

	assert_int_equal(admission_table_new(16, &t, NULL), 0);
	/* Any address of one /64 is the same source. */
	assert_int_equal(take(t, v6("2001:db8:1:2::1", 1), 100, 2, &k), 1);
	assert_int_equal(take(t, v6("2001:db8:1:2:ffff::9", 1), 100, 2, &k), 1);
	assert_int_equal(take(t, v6("2001:db8:1:2:dead:beef:1:2", 1), 100, 2, &k), 0);
	/* The next /64 is another. */
	assert_int_equal(take(t, v6("2001:db8:1:3::1", 1), 100, 2, &k), 1);
	/* An IPv4-mapped address on a dual-stack socket counts as its IPv4
	 * address on an IPv4 socket. */
	assert_int_equal(take(t, v4("198.51.100.7", 1), 100, 2, &k), 1);
	assert_int_equal(take(t, v6("::ffff:198.51.100.7", 1), 100, 2, &k), 1);
	assert_int_equal(take(t, v4("198.51.100.7", 2), 100, 2, &k), 0);
	assert_int_equal(count(t, v6("::ffff:198.51.100.7", 0)), 2);
	/* ...and each mapped address is its own source, not ::/64. */
	assert_int_equal(take(t, v6("::ffff:198.51.100.8", 1), 100, 2, &k), 1);
	assert_int_equal(count(t, v6("::1", 0)), 0);
	admission_table_free(t);
}

static void
test_unlimited_and_keyless(void **state)
{
	struct admission_table *t;
	struct admission_ticket k;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	assert_int_equal(admission_table_new(4, &t, NULL), 0);
	/* Limit 0: nothing is counted. */
	for (int i = 0; i < 100; i++) {
		assert_int_equal(take(t, v4("192.0.2.1", 1), 100, 0, &k), 1);
		assert_false(k.counted);
	}
	assert_int_equal(count(t, v4("192.0.2.1", 0)), 0);
	/* A UNIX peer has no source: never limited. */
	for (int i = 0; i < 10; i++) {
		assert_int_equal(admission_take(t, (struct sockaddr *)&sun, 100, 1, &k), 1);
		assert_false(k.counted);
	}
	admission_table_free(t);
}

static void
test_forget_owner(void **state)
{
	struct admission_table *t;
	struct admission_ticket k;

	assert_int_equal(admission_table_new(64, &t, NULL), 0);
	for (int i = 0; i < 5; i++) {
		char a[32];
		snprintf(a, sizeof(a), "10.0.0.%d", i);
		assert_int_equal(take(t, v4(a, 1), 100, 3, &k), 1);
		assert_int_equal(take(t, v4(a, 2), 100, 3, &k), 1);
		assert_int_equal(take(t, v4(a, 3), 200, 3, &k), 1);
		assert_int_equal(take(t, v4(a, 4), 200, 3, &k), 0);
	}
	/* Owner 100 was killed: what it held is given back, 200's stays. */
	admission_forget_owner(t, 100);
	for (int i = 0; i < 5; i++) {
		char a[32];
		snprintf(a, sizeof(a), "10.0.0.%d", i);
		assert_int_equal(count(t, v4(a, 0)), 1);
		assert_int_equal(take(t, v4(a, 5), 300, 3, &k), 1);
		assert_int_equal(take(t, v4(a, 6), 300, 3, &k), 1);
		assert_int_equal(take(t, v4(a, 7), 300, 3, &k), 0);
	}
	admission_table_free(t);
}

static void
test_full_table_lets_in_uncounted(void **state)
{
	struct admission_table *t;
	struct admission_ticket k[5], extra;

	assert_int_equal(admission_table_new(4, &t, NULL), 0);
	for (int i = 0; i < 4; i++) {
		char a[32];
		snprintf(a, sizeof(a), "10.0.0.%d", i);
		assert_int_equal(take(t, v4(a, 1), 100, 1, &k[i]), 1);
		assert_true(k[i].counted);
	}
	/* No room for a fifth source: let in, not counted, not refused. */
	assert_int_equal(take(t, v4("10.0.0.9", 1), 100, 1, &k[4]), 1);
	assert_false(k[4].counted);
	admission_put(t, 100, &k[4]);
	/* A known (source, owner) pair still counts, and an entry freed is
	 * used again. */
	assert_int_equal(take(t, v4("10.0.0.0", 2), 100, 1, &extra), 0);
	admission_put(t, 100, &k[0]);
	assert_int_equal(take(t, v4("10.0.0.9", 1), 100, 1, &k[4]), 1);
	assert_true(k[4].counted);
	assert_int_equal(take(t, v4("10.0.0.9", 2), 100, 1, &extra), 0);
	admission_table_free(t);
}

/* Many sources coming and going: the chains and the free list stay right. */
static void
test_churn(void **state)
{
	enum { N = 1000 };
	static struct admission_ticket k[N];
	struct admission_table *t;
	struct sockaddr_in sin = {.sin_family = AF_INET};

	assert_int_equal(admission_table_new(N, &t, NULL), 0);
	for (int round = 0; round < 5; round++) {
		for (uint32_t i = 0; i < N; i++) {
			sin.sin_addr.s_addr = htonl(0x0a000000 + i * 7 + (uint32_t)round);
			assert_int_equal(admission_take(t, (struct sockaddr *)&sin,
							100 + (pid_t)(i % 3), 1, &k[i]),
					 1);
			assert_true(k[i].counted);
		}
		for (uint32_t i = 0; i < N; i++) {
			sin.sin_addr.s_addr = htonl(0x0a000000 + i * 7 + (uint32_t)round);
			assert_int_equal(admission_count(t, (struct sockaddr *)&sin), 1);
		}
		for (uint32_t i = 0; i < N; i += 2)
			admission_put(t, 100 + (pid_t)(i % 3), &k[i]);
		admission_forget_owner(t, 100);
		admission_forget_owner(t, 101);
		admission_forget_owner(t, 102);
		for (uint32_t i = 0; i < N; i++) {
			sin.sin_addr.s_addr = htonl(0x0a000000 + i * 7 + (uint32_t)round);
			assert_int_equal(admission_count(t, (struct sockaddr *)&sin), 0);
		}
	}
	admission_table_free(t);
}

/* The table is shared with children forked after it was made: a count a
 * child takes is seen by the parent, and forgetting the child gives it back. */
static void
test_shared_with_child(void **state)
{
	struct admission_table *t;
	struct admission_ticket k;
	int status;
	pid_t pid;

	assert_int_equal(admission_table_new(16, &t, NULL), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int r = take(t, v4("192.0.2.1", 1), getpid(), 1, &k);
		_exit(r == 1 && k.counted ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(count(t, v4("192.0.2.1", 0)), 1);
	assert_int_equal(take(t, v4("192.0.2.1", 2), getpid(), 1, &k), 0);
	admission_forget_owner(t, pid);
	assert_int_equal(take(t, v4("192.0.2.1", 2), getpid(), 1, &k), 1);
	admission_table_free(t);
}

/* What the connection forker maps from the memfd (across exec there is
 * no inheriting the mapping): the same table, counts seen both ways. */
static void
test_attached_by_fd(void **state)
{
	struct admission_table *t, *other;
	struct admission_ticket k;
	int fd, junk;

	assert_int_equal(admission_table_new(16, &t, &fd), 0);
	assert_true(fd >= 0);
	assert_int_equal(admission_table_attach(fd, &other), 0);
	assert_ptr_not_equal(other, t);
	assert_int_equal(take(other, v4("192.0.2.7", 1), 4242, 1, &k), 1);
	assert_int_equal(count(t, v4("192.0.2.7", 0)), 1);
	admission_forget_owner(t, 4242);
	assert_int_equal(count(other, v4("192.0.2.7", 0)), 0);
	admission_table_detach(other);
	/* Not a table: an empty memfd, or one of another size. */
	junk = memfd_create("junk", MFD_CLOEXEC);
	assert_true(junk >= 0);
	assert_int_equal(admission_table_attach(junk, &other), -EBADMSG);
	assert_int_equal(ftruncate(junk, 1 << 20), 0);
	assert_int_equal(admission_table_attach(junk, &other), -EBADMSG);
	close(junk);
	admission_table_free(t);
	close(fd);
}

static void
test_full(void **state)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct admission_table *t;
	struct admission_ticket k;

	assert_int_equal(admission_table_new(16, &t, NULL), 0);
	assert_false(admission_full(t, (struct sockaddr *)&sun, 1));
	struct sockaddr_storage a = v4("192.0.2.1", 1);
	assert_false(admission_full(t, (struct sockaddr *)&a, 1));
	assert_int_equal(take(t, v4("192.0.2.1", 2), 100, 1, &k), 1);
	/* Full at its limit, not below; limit 0 is never full. */
	assert_true(admission_full(t, (struct sockaddr *)&a, 1));
	assert_false(admission_full(t, (struct sockaddr *)&a, 2));
	assert_false(admission_full(t, (struct sockaddr *)&a, 0));
	/* A source without an address is never full. */
	assert_false(admission_full(t, (struct sockaddr *)&sun, 1));
	admission_table_free(t);
}

/* Processes killed at random while they count and release (so, often,
 * while holding the table's lock): the next user repairs the table, the
 * supervisor's forget gives back what each held, and nothing else moves. */
static void
test_owner_killed_holding_the_lock(void **state)
{
	struct admission_table *t;
	struct admission_ticket mine;
	struct sockaddr_storage a = v4("192.0.2.1", 1);

	assert_int_equal(admission_table_new(64, &t, NULL), 0);
	assert_int_equal(take(t, v4("198.51.100.1", 1), getpid(), 5, &mine), 1);
	for (int round = 0; round < 100; round++) {
		struct admission_ticket k;
		pid_t pid = fork();

		assert_true(pid >= 0);
		if (pid == 0) {
			pid_t me = getpid();

			for (;;) {
				if (admission_take(t, (struct sockaddr *)&a, me, 1000, &k))
					admission_put(t, me, &k);
				(void)admission_take(t, (struct sockaddr *)&a, me, 1000, &k);
			}
		}
		usleep(200 + (unsigned)(round * 37) % 800);
		kill(pid, SIGKILL);
		assert_int_equal(waitpid(pid, NULL, 0), pid);
		admission_forget_owner(t, pid);
		assert_int_equal(count(t, a), 0);
		assert_int_equal(count(t, v4("198.51.100.1", 0)), 1);
	}
	/* Still a working table. */
	assert_int_equal(take(t, a, getpid(), 1, &mine), 1);
	assert_int_equal(take(t, a, getpid(), 1, &mine), 0);
	admission_table_free(t);
}

static void
test_rate_in_scoreboard(void **state)
{
	struct scoreboard sb;
	uint64_t resume = 0;

	assert_int_equal(scoreboard_new(&sb, 2, 0, NULL), 0);
	/* Off: always yes, nothing counted. */
	for (int i = 0; i < 100; i++)
		assert_true(admission_rate_take(&sb, 0, 1000, &resume));
	assert_int_equal(sb.header->accept_pauses, 0);
	/* 4/s: four at once, then a pause until the next token, 250 ms on. */
	for (int i = 0; i < 4; i++)
		assert_true(admission_rate_take(&sb, 4, 1000, &resume));
	assert_false(admission_rate_take(&sb, 4, 1000, &resume));
	assert_int_equal(resume, 1250);
	assert_int_equal(sb.header->accept_pauses, 1);
	/* accept() found nobody: the token comes back. */
	assert_true(admission_rate_take(&sb, 4, 1250, &resume));
	admission_rate_undo(&sb, 4);
	assert_true(admission_rate_take(&sb, 4, 1250, &resume));
	assert_false(admission_rate_take(&sb, 4, 1250, &resume));
	assert_int_equal(resume, 1500);
	scoreboard_free(&sb);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bad_capacity),
	    cmocka_unit_test(test_limit_per_source),
	    cmocka_unit_test(test_limit_across_owners),
	    cmocka_unit_test(test_ipv6_per_64_and_v4_mapped),
	    cmocka_unit_test(test_unlimited_and_keyless),
	    cmocka_unit_test(test_forget_owner),
	    cmocka_unit_test(test_full_table_lets_in_uncounted),
	    cmocka_unit_test(test_churn),
	    cmocka_unit_test(test_shared_with_child),
	    cmocka_unit_test(test_full),
	    cmocka_unit_test(test_attached_by_fd),
	    cmocka_unit_test(test_owner_killed_holding_the_lock),
	    cmocka_unit_test(test_rate_in_scoreboard),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
