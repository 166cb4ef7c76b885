/* ledger.c: what a connection costs in the scoreboard, step by step, and
 * that a process killed between two steps never leaves the service able to
 * exceed MaxConnections=. Real shared mappings and real forked children. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ledger.h"
#include "scoreboard.h"

#define SLOT 1

static struct scoreboard sb;

static int
setup(void **state)
{
	(void)state;
	return scoreboard_new(&sb, 4, 3, NULL);
}

static int
teardown(void **state)
{
	(void)state;
	scoreboard_free(&sb);
	return 0;
}

static struct ledger
slot_ledger(bool reserved)
{
	return (struct ledger){.sb = &sb, .slot = &sb.slots[SLOT], .reserved = reserved};
}

static void
test_reservation_cap(void **state)
{
	(void)state;
	for (int i = 0; i < 3; i++)
		assert_true(ledger_reserve(&sb));
	assert_true(ledger_full(&sb));
	assert_false(ledger_reserve(&sb));
	/* A kept connection was admitted before: it goes beyond the cap. */
	ledger_reserve_kept(&sb);
	assert_int_equal(ledger_reserved(&sb), 4);
	for (int i = 0; i < 4; i++)
		ledger_release(&sb);
	assert_int_equal(ledger_reserved(&sb), 0);
	assert_false(ledger_full(&sb));
}

/* prefork: admitted before accept(), counted served once accepted. */
static void
test_accepted(void **state)
{
	struct ledger l = slot_ledger(true);

	(void)state;
	assert_true(ledger_admit(&l));
	ledger_take(&l, LEDGER_ACCEPTED);
	assert_int_equal(sb.slots[SLOT].active, 1);
	assert_int_equal(sb.slots[SLOT].served, 1);
	assert_int_equal(sb.slots[SLOT].received, 0);
	assert_int_equal(ledger_reserved(&sb), 1);
	/* Nobody was there the second time. */
	assert_true(ledger_admit(&l));
	ledger_unadmit(&l);
	ledger_close(&l);
	assert_int_equal(sb.slots[SLOT].active, 0);
	assert_int_equal(ledger_reserved(&sb), 0);
	/* At the cap nothing is counted. */
	ledger_set_max(&sb, 1);
	assert_true(ledger_reserve(&sb));
	assert_false(ledger_admit(&l));
	assert_int_equal(sb.slots[SLOT].active, 0);
	ledger_release(&sb);
	ledger_set_max(&sb, 3);
}

/* A connection kept across a reload is served once: where it was first
 * accepted, not again by the worker that takes it back (issue 14.4). */
static void
test_kept_is_not_served_again(void **state)
{
	struct ledger l = slot_ledger(true);

	(void)state;
	ledger_reserve_kept(&sb);
	ledger_take(&l, LEDGER_KEPT);
	assert_int_equal(sb.slots[SLOT].active, 1);
	assert_int_equal(sb.slots[SLOT].served, 0);
	assert_int_equal(sb.slots[SLOT].received, 1);
	/* Refused (MaxConnectionsPerSource=): served does not go below. */
	ledger_refuse(&l, LEDGER_KEPT, LEDGER_REFUSED_SOURCE_LIMIT);
	assert_int_equal(sb.slots[SLOT].served, 0);
	assert_int_equal(sb.slots[SLOT].refused, 1);
	assert_int_equal(sb.slots[SLOT].refused_access, 0);
	ledger_close(&l);
	/* A new one sent and refused counts refused, not served. */
	assert_true(ledger_reserve(&sb));
	ledger_take(&l, LEDGER_SENT);
	ledger_refuse(&l, LEDGER_SENT, LEDGER_REFUSED_ACCESS);
	ledger_close(&l);
	assert_int_equal(sb.slots[SLOT].served, 0);
	assert_int_equal(sb.slots[SLOT].refused, 2);
	/* Counted apart by reason, and kept when the slot is emptied. */
	assert_int_equal(sb.slots[SLOT].refused_access, 1);
	ledger_refused_here(&sb, SLOT, LEDGER_REFUSED_ACCESS);
	scoreboard_slot_reset(&sb, SLOT);
	{
		struct scoreboard_totals t;

		scoreboard_totals(&sb, &t);
		assert_int_equal(t.refused, 3);
		assert_int_equal(t.refused_access, 2);
		assert_int_equal(t.refused_proxy, 0);
	}
	/* A proxy listener's refusals: a reason of their own, here and in
	 * the supervisor's slot. */
	assert_true(ledger_reserve(&sb));
	ledger_take(&l, LEDGER_SENT);
	ledger_refuse(&l, LEDGER_SENT, LEDGER_REFUSED_PROXY);
	ledger_close(&l);
	ledger_refused_here(&sb, SLOT, LEDGER_REFUSED_PROXY);
	assert_int_equal(sb.slots[SLOT].refused_proxy, 2);
	assert_int_equal(sb.slots[SLOT].refused_access, 0);
	assert_int_equal(sb.slots[SLOT].served, 0);
	assert_int_equal(sb.slots[SLOT].refused, 2);
	assert_int_equal(ledger_reserved(&sb), 0);
	scoreboard_slot_reset(&sb, SLOT);
}

/* Runs step in a child that counts in SLOT, then dies by SIGKILL: what a
 * kill between two of the ledger's steps leaves. */
static void
killed_after(void (*step)(struct ledger *l))
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		struct ledger l = slot_ledger(true);
		step(&l);
		raise(SIGKILL);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
}

static void
admit_only(struct ledger *l)
{
	assert_true(ledger_admit(l)); /* killed before accept() */
}

static void
take_one(struct ledger *l)
{
	ledger_take(l, LEDGER_SENT); /* killed with it open */
}

static void
take_and_close_one(struct ledger *l)
{
	ledger_take(l, LEDGER_SENT);
	ledger_close(l);
}

/* prefork: a worker killed after it reserved and before it accepted. */
static void
test_killed_between_admit_and_accept(void **state)
{
	(void)state;
	killed_after(admit_only);
	assert_int_equal(ledger_reserved(&sb), 1);
	ledger_settle(&sb, SLOT, 0);
	assert_int_equal(ledger_reserved(&sb), 0);
	assert_int_equal(sb.slots[SLOT].active, 0);
}

/* passfd: the supervisor reserved and sent three; the worker took one and
 * was killed. The one it held and the two in flight are released, and
 * nothing more. */
static void
test_killed_with_connections_in_flight(void **state)
{
	(void)state;
	for (int i = 0; i < 3; i++)
		assert_true(ledger_reserve(&sb));
	killed_after(take_one);
	assert_int_equal(ledger_in_flight(&sb, SLOT, 3), 2);
	ledger_settle(&sb, SLOT, 3);
	assert_int_equal(ledger_reserved(&sb), 0);
	/* What it served stays in the totals. */
	struct scoreboard_totals t;
	scoreboard_totals(&sb, &t);
	assert_true(t.served >= 1);

	/* One sent, taken and closed before the kill: released once. */
	assert_true(ledger_reserve(&sb));
	assert_true(ledger_reserve(&sb)); /* another worker's, still open */
	killed_after(take_and_close_one);
	ledger_settle(&sb, SLOT, 1);
	assert_int_equal(ledger_reserved(&sb), 1);
	ledger_release(&sb);
}

/* fork: a connection process killed with its connection. */
static void
test_fork_child_killed(void **state)
{
	(void)state;
	assert_true(ledger_reserve(&sb));
	killed_after(take_one);
	assert_int_equal(sb.slots[SLOT].active, 1);
	ledger_settle_one(&sb, SLOT);
	assert_int_equal(sb.slots[SLOT].active, 0);
	ledger_release(&sb);
	scoreboard_slot_reset(&sb, SLOT);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_reservation_cap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_accepted, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_kept_is_not_served_again, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_killed_between_admit_and_accept, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_killed_with_connections_in_flight, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_fork_child_killed, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
