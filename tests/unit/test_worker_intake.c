/* worker-intake.c: when a worker takes one more connection — room under
 * WorkerConnections= and its fd limit, MaxConnections= across the service,
 * ConnectionRateLimit=, and its fair share — decided against a scoreboard
 * made here, with no listener, channel or event loop behind it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <sys/resource.h>

#include "config.h"
#include "ledger.h"
#include "log.h"
#include "scoreboard.h"
#include "worker-conns.h"
#include "worker-intake.h"

#define SLOT 0
#define NOW_MS 1000000

struct fixture {
	struct scoreboard sb;
	struct config config;
	struct ledger ledger;
	struct conns conns;
	struct intake in;
};

/* A prefork worker in slot SLOT of a service of `workers` workers, each
 * allowed WorkerConnections=4, MaxConnections=6 across them. */
static int
setup_workers(void **state, unsigned workers)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f || scoreboard_new(&f->sb, 4, 6, NULL) < 0)
		return -1;
	scoreboard_set_workers(&f->sb, workers);
	config_init(&f->config);
	f->config.worker_connections = 4;
	f->config.max_connections = 6;
	f->ledger = (struct ledger){.sb = &f->sb, .slot = &f->sb.slots[SLOT], .reserved = true};
	f->conns = (struct conns){.config = &f->config, .ledger = &f->ledger};
	f->in = (struct intake){
	    .kind = INTAKE_LISTENERS,
	    .config = &f->config,
	    .scoreboard = &f->sb,
	    .ledger = &f->ledger,
	    .conns = &f->conns,
	    .channel = -1,
	    .capacity = 4,
	    .pending_owed_fd = -1,
	};
	*state = f;
	return 0;
}

static int
setup_two(void **state)
{
	return setup_workers(state, 2);
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	scoreboard_free(&f->sb);
	config_done(&f->config);
	free(f);
	return 0;
}

/* What intake_decide() said yes to, accepted: as intake_accept() does. */
static void
take(struct fixture *f)
{
	ledger_take(&f->ledger, LEDGER_ACCEPTED);
	f->conns.n++;
}

static void
test_takes_and_counts(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(intake_decide(&f->in, NOW_MS), INTAKE_TAKE);
	/* Counted before it exists: reserved service-wide, active here. */
	assert_int_equal(ledger_reserved(&f->sb), 1);
	assert_int_equal(SB_GET(f->sb.slots[SLOT].active), 1);
	take(f);
	assert_int_equal(SB_GET(f->sb.slots[SLOT].served), 1);
}

static void
test_undo_releases_everything(void **state)
{
	struct fixture *f = *state;

	f->config.connection_rate_limit = 1;
	assert_int_equal(intake_decide(&f->in, NOW_MS), INTAKE_TAKE);
	/* accept() found nothing queued after all. */
	intake_undo(&f->in);
	assert_int_equal(ledger_reserved(&f->sb), 0);
	assert_int_equal(SB_GET(f->sb.slots[SLOT].active), 0);
	/* ...and the rate token went back: the next one is not refused. */
	assert_int_equal(intake_decide(&f->in, NOW_MS), INTAKE_TAKE);
}

static void
test_no_room_when_full(void **state)
{
	struct fixture *f = *state;

	for (int i = 0; i < 4; i++) {
		assert_int_equal(intake_decide(&f->in, NOW_MS), INTAKE_TAKE);
		take(f);
	}
	assert_int_equal(intake_decide(&f->in, NOW_MS), INTAKE_NO_ROOM);
	/* Nothing counted for the connection it did not take. */
	assert_int_equal(ledger_reserved(&f->sb), 4);
	assert_int_equal(SB_GET(f->sb.slots[SLOT].active), 4);
}

static void
test_cap_holds(void **state)
{
	struct fixture *f = *state;

	/* The rest of the service holds all but one of MaxConnections=6. */
	for (int i = 0; i < 5; i++)
		assert_true(ledger_reserve(&f->sb));
	assert_int_equal(intake_decide(&f->in, NOW_MS), INTAKE_TAKE);
	take(f);
	assert_int_equal(intake_decide(&f->in, NOW_MS), INTAKE_CAP);
	assert_int_equal(f->in.hold, HOLD_LIMIT);
	assert_int_equal(ledger_reserved(&f->sb), 6);
	assert_int_equal(SB_GET(f->sb.slots[SLOT].active), 1);
}

static void
test_rate_limit(void **state)
{
	struct fixture *f = *state;
	int taken = 0;

	f->config.connection_rate_limit = 2;
	while (taken < 4 && intake_decide(&f->in, NOW_MS) == INTAKE_TAKE) {
		take(f);
		taken++;
	}
	/* A burst of one second's worth, then a wait until the next token. */
	assert_int_equal(taken, 2);
	assert_int_equal(intake_decide(&f->in, NOW_MS), INTAKE_RATE);
	assert_true(f->in.accept_resume_ms > NOW_MS);
	assert_true(f->in.accept_resume_ms <= NOW_MS + 500);
	/* Refused by the rate: nothing left counted for it. */
	assert_int_equal(ledger_reserved(&f->sb), 2);
	assert_int_equal(SB_GET(f->sb.slots[SLOT].active), 2);
	/* Half a second later there is a token again. */
	assert_int_equal(intake_decide(&f->in, NOW_MS + 500), INTAKE_TAKE);
}

/* The order matters: a full worker says so (and rings the doorbell)
 * rather than taking a service-wide reservation it cannot use. */
static void
test_room_before_cap(void **state)
{
	struct fixture *f = *state;

	f->in.capacity = 0;
	for (int i = 0; i < 6; i++)
		assert_true(ledger_reserve(&f->sb));
	assert_int_equal(intake_decide(&f->in, NOW_MS), INTAKE_NO_ROOM);
	assert_int_equal(f->in.hold, HOLD_NONE);
}

static void
test_fair_share(void **state)
{
	struct fixture *f = *state;

	/* Two workers, this one holding 3 of 3: over its share. */
	for (int i = 0; i < 3; i++) {
		assert_int_equal(intake_decide(&f->in, NOW_MS), INTAKE_TAKE);
		take(f);
	}
	assert_true(intake_over_fair_share(&f->in));
	/* The other worker takes 3 more: 3 of 6 is the mean. */
	for (int i = 0; i < 3; i++)
		assert_true(ledger_reserve(&f->sb));
	assert_false(intake_over_fair_share(&f->in));
	/* The other worker's close: over again. The fair share is never a
	 * reason to refuse what the kernel woke this worker for. */
	for (int i = 0; i < 3; i++)
		ledger_release(&f->sb);
	assert_true(intake_over_fair_share(&f->in));
	assert_int_equal(intake_decide(&f->in, NOW_MS), INTAKE_TAKE);
}

static void
test_alone_has_no_share(void **state)
{
	struct fixture *f = *state;

	scoreboard_set_workers(&f->sb, 1);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(intake_decide(&f->in, NOW_MS), INTAKE_TAKE);
		take(f);
	}
	assert_false(intake_over_fair_share(&f->in));
}

static unsigned
open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	unsigned n = 0;

	assert_non_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n - 3; /* ".", ".." and the directory's own fd */
}

static void
test_capacity_from_fd_limit(void **state)
{
	struct fixture *f = *state;
	struct rlimit saved, rl;

	assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
	f->config.worker_connections = 1000;
	intake_set_capacity(&f->in);
	if (saved.rlim_cur == RLIM_INFINITY || saved.rlim_cur > open_fds() + 1100)
		assert_int_equal(f->in.capacity, 1000);
	assert_int_equal(SB_GET(f->sb.slots[SLOT].capacity), f->in.capacity);

	/* Room for 10 more fds: fewer connections than WorkerConnections=,
	 * the fds echod needs for itself kept spare, and the lower figure
	 * published for the supervisor's picking (passfd). */
	rl = saved;
	rl.rlim_cur = open_fds() + 10;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	intake_set_capacity(&f->in);
	assert_true(f->in.capacity >= 1 && f->in.capacity < 10);
	assert_int_equal(SB_GET(f->sb.slots[SLOT].capacity), f->in.capacity);

	/* No room at all (but the one fd that counting them takes) still
	 * leaves one: a worker that can take nothing would never close
	 * anything either. */
	rl.rlim_cur = open_fds() + 1;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	intake_set_capacity(&f->in);
	assert_int_equal(f->in.capacity, 1);

	assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
}

/* A connection process (fork) has its one connection: no fd arithmetic,
 * and nothing published for a picker that does not exist. */
static void
test_capacity_of_a_connection_process(void **state)
{
	struct fixture *f = *state;

	f->in.kind = INTAKE_ONE;
	f->config.worker_connections = 1000;
	intake_set_capacity(&f->in);
	assert_int_equal(f->in.capacity, 1000);
	assert_int_equal(SB_GET(f->sb.slots[SLOT].capacity), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_takes_and_counts, setup_two, teardown),
	    cmocka_unit_test_setup_teardown(test_undo_releases_everything, setup_two, teardown),
	    cmocka_unit_test_setup_teardown(test_no_room_when_full, setup_two, teardown),
	    cmocka_unit_test_setup_teardown(test_cap_holds, setup_two, teardown),
	    cmocka_unit_test_setup_teardown(test_rate_limit, setup_two, teardown),
	    cmocka_unit_test_setup_teardown(test_room_before_cap, setup_two, teardown),
	    cmocka_unit_test_setup_teardown(test_fair_share, setup_two, teardown),
	    cmocka_unit_test_setup_teardown(test_alone_has_no_share, setup_two, teardown),
	    cmocka_unit_test_setup_teardown(test_capacity_from_fd_limit, setup_two, teardown),
	    cmocka_unit_test_setup_teardown(test_capacity_of_a_connection_process, setup_two,
					    teardown),
	};

	log_set_max_level(LOG_WARNING);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
