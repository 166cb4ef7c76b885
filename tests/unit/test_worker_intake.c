/* worker-intake.c: when a worker takes one more connection — room under
 * WorkerConnections= and its fd limit, MaxConnections= across the service,
 * ConnectionRateLimit=, its fair share, and whether it stands by for a
 * worker before it — decided against a scoreboard
 * made here, with no listener, channel or event loop behind it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <unistd.h>
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

	/* behind_peer()'s, freed here so that a failed test leaks nothing. */
	free(f->in.peers);
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

/* The service holds total connections, this worker mine of them. */
static void
hold(struct fixture *f, uint32_t mine, uint32_t total)
{
	SB_SET(f->sb.slots[SLOT].active, mine);
	SB_SET(f->sb.header->active_total, total);
	SB_SET(f->sb.header->max_connections, 100000);
}

static void
test_fair_share(void **state)
{
	struct fixture *f = *state;
	const uint32_t n = 2 * SHARE_FLOOR;

	/* Two workers, this one holding all n: over its share. */
	hold(f, n, n);
	assert_true(intake_over_fair_share(&f->in));
	/* The other worker takes n more: n of 2n is the mean. */
	hold(f, n, 2 * n);
	assert_false(intake_over_fair_share(&f->in));
	/* An eighth over the mean is slack, not yet over. */
	hold(f, n + n / 8, 2 * n);
	assert_false(intake_over_fair_share(&f->in));
	/* The other worker's connections close: over again. The fair share
	 * is never a reason to refuse what the kernel woke this worker for. */
	hold(f, n, n + 1);
	assert_true(intake_over_fair_share(&f->in));
	assert_int_equal(intake_decide(&f->in, NOW_MS), INTAKE_TAKE);
}

/* While its connections live short lives, a worker has no share to keep
 * to below SHARE_FLOOR connections, whatever its peers hold. Held
 * ones (long lived, or none closed yet) spread from the first. */
static void
test_share_floor(void **state)
{
	struct fixture *f = *state;

	f->conns.lifetime_ms = CONNS_SHORT_LIVED_MS - 1;
	assert_true(conns_short_lived(&f->conns));
	hold(f, SHARE_FLOOR - 1, SHARE_FLOOR - 1);
	assert_false(intake_over_fair_share(&f->in));
	hold(f, SHARE_FLOOR, SHARE_FLOOR);
	assert_true(intake_over_fair_share(&f->in));

	f->conns.lifetime_ms = CONNS_SHORT_LIVED_MS;
	assert_false(conns_short_lived(&f->conns));
	hold(f, 3, 3);
	assert_true(intake_over_fair_share(&f->in));
	hold(f, 3, 6);
	assert_false(intake_over_fair_share(&f->in));
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

/* --- standing by --- */

#define PEER 0
#define BEHIND 1

/* This worker in slot BEHIND, watching a listener (none is polled here),
 * with the worker in slot PEER before it, running and keeping up. */
static void
behind_peer(struct fixture *f)
{
	f->ledger.slot = &f->sb.slots[BEHIND];
	f->in.n_listeners = 1;
	f->in.n_peers = BEHIND;
	f->in.peers = calloc(BEHIND, sizeof(*f->in.peers));
	assert_non_null(f->in.peers);
	SB_SET(f->sb.slots[PEER].state, SLOT_RUNNING);
	SB_SET(f->sb.slots[PEER].watching, WATCHING_ALONE);
}

static void
test_stands_by_while_peer_keeps_up(void **state)
{
	struct fixture *f = *state;

	behind_peer(f);
	assert_true(intake_standing_by(&f->in, NOW_MS));
	/* Busy nearly all the time, or holding long-lived connections: this
	 * worker watches too. */
	SB_SET(f->sb.slots[PEER].watching, WATCHING_SHARED);
	assert_false(intake_standing_by(&f->in, NOW_MS));
	/* Not watching (full, over its share, paused): this worker takes. */
	SB_SET(f->sb.slots[PEER].watching, WATCHING_NONE);
	assert_false(intake_standing_by(&f->in, NOW_MS));
	/* Draining, or gone (its slot emptied): the same. */
	SB_SET(f->sb.slots[PEER].watching, WATCHING_ALONE);
	SB_SET(f->sb.slots[PEER].state, SLOT_DRAINING);
	assert_false(intake_standing_by(&f->in, NOW_MS));
	SB_SET(f->sb.slots[PEER].state, SLOT_EMPTY);
	assert_false(intake_standing_by(&f->in, NOW_MS));
}

/* A peer whose loop stands still (stopped, stuck) is not relied on; once
 * it turns again, it is. */
static void
test_peer_standing_still_is_not_relied_on(void **state)
{
	struct fixture *f = *state;
	uint64_t t = NOW_MS;

	behind_peer(f);
	assert_true(intake_standing_by(&f->in, t));
	t += INTAKE_LEADER_STALE_MS - 1;
	assert_true(intake_standing_by(&f->in, t));
	t += 1;
	assert_false(intake_standing_by(&f->in, t));
	SB_ADD(f->sb.slots[PEER].heartbeat, 1);
	assert_true(intake_standing_by(&f->in, t));
}

/* The first worker has nobody before it; a worker alone stands by for
 * nobody; and peers behind this one do not count. */
static void
test_who_stands_by(void **state)
{
	struct fixture *f = *state;

	f->in.n_listeners = 1;
	SB_SET(f->sb.slots[BEHIND].state, SLOT_RUNNING);
	SB_SET(f->sb.slots[BEHIND].watching, WATCHING_ALONE);
	assert_false(intake_standing_by(&f->in, NOW_MS));
	behind_peer(f);
	scoreboard_set_workers(&f->sb, 1);
	assert_false(intake_standing_by(&f->in, NOW_MS));
}

/* Busy from INTAKE_BUSY_PERCENT of a core over a window, keeping up again
 * below INTAKE_KEEPING_UP_PERCENT, and what the scoreboard says of it,
 * with the lifetimes of the worker's connections. */
static void
test_busy_with_hysteresis(void **state)
{
	struct fixture *f = *state;
	const uint64_t w = INTAKE_BUSY_WINDOW_US;
	uint64_t t = 5000000, cpu = 70000;

	f->in.n_listeners = 1;
	f->in.accepting = true;
	f->in.polled_all = true;
	intake_account_cpu(&f->in, t, cpu);
	intake_account_cpu(&f->in, t += w, cpu += w * (INTAKE_BUSY_PERCENT - 1) / 100);
	assert_false(f->in.load.busy);
	intake_account_cpu(&f->in, t += w, cpu += w * INTAKE_BUSY_PERCENT / 100);
	assert_true(f->in.load.busy);
	assert_int_equal(SB_GET(f->sb.slots[SLOT].watching), WATCHING_SHARED);
	/* Between the two figures: still busy. */
	intake_account_cpu(&f->in, t += w, cpu += w * INTAKE_KEEPING_UP_PERCENT / 100);
	assert_true(f->in.load.busy);
	/* A window is over only once it has lasted: half of one decides
	 * nothing, and its CPU time counts in the whole. */
	intake_account_cpu(&f->in, t += w / 2, cpu);
	assert_true(f->in.load.busy);
	intake_account_cpu(&f->in, t += w / 2, cpu += w * (INTAKE_KEEPING_UP_PERCENT - 1) / 100);
	assert_false(f->in.load.busy);
	assert_int_equal(SB_GET(f->sb.slots[SLOT].watching), WATCHING_ALONE);
	/* A long sleep in epoll_wait() is idle time. */
	intake_account_cpu(&f->in, t += 10 * w, cpu += w * 9 / 10);
	assert_false(f->in.load.busy);
	/* Keeping up, but with connections that live long lives: they are
	 * to spread, so peers watch too. */
	f->conns.lifetime_ms = CONNS_SHORT_LIVED_MS;
	intake_account_cpu(&f->in, t += w, cpu);
	assert_int_equal(SB_GET(f->sb.slots[SLOT].watching), WATCHING_SHARED);
	f->conns.lifetime_ms = 0;
	intake_account_cpu(&f->in, t += w, cpu);
	assert_int_equal(SB_GET(f->sb.slots[SLOT].watching), WATCHING_ALONE);
	/* Not watching: nothing to say of it, whatever the load. */
	f->in.accepting = false;
	intake_account_cpu(&f->in, t += w, cpu += w);
	assert_true(f->in.load.busy);
	assert_int_equal(SB_GET(f->sb.slots[SLOT].watching), WATCHING_NONE);
}

/* A passfd worker says the same of itself, for the supervisor to read as
 * it picks a worker: alone while it keeps up with short-lived connections,
 * shared when busy or holding long-lived ones, none once it drains. No
 * peer watches the doorbell in passfd: it is not rung. */
static void
test_channel_worker_says_whether_alone(void **state)
{
	struct fixture *f = *state;
	const uint64_t w = INTAKE_BUSY_WINDOW_US;
	uint64_t t = 5000000, cpu = 70000, rung;

	f->in.kind = INTAKE_CHANNEL;
	f->conns.lifetime_ms = 0;
	intake_account_cpu(&f->in, t, cpu);
	intake_account_cpu(&f->in, t += w, cpu += w / 10);
	assert_int_equal(SB_GET(f->sb.slots[SLOT].watching), WATCHING_ALONE);
	intake_account_cpu(&f->in, t += w, cpu += w);
	assert_int_equal(SB_GET(f->sb.slots[SLOT].watching), WATCHING_SHARED);
	intake_account_cpu(&f->in, t += w, cpu += w / 10);
	assert_int_equal(SB_GET(f->sb.slots[SLOT].watching), WATCHING_ALONE);
	f->conns.lifetime_ms = CONNS_SHORT_LIVED_MS;
	intake_account_cpu(&f->in, t += w, cpu += w / 10);
	assert_int_equal(SB_GET(f->sb.slots[SLOT].watching), WATCHING_SHARED);
	intake_stop(&f->in);
	assert_int_equal(SB_GET(f->sb.slots[SLOT].watching), WATCHING_NONE);
	assert_int_equal(read(f->sb.doorbell, &rung, sizeof(rung)), -1);
	assert_int_equal(errno, EAGAIN);
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
	assert_int_equal(f->in.capacity, 1);
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
	    cmocka_unit_test_setup_teardown(test_share_floor, setup_two, teardown),
	    cmocka_unit_test_setup_teardown(test_alone_has_no_share, setup_two, teardown),
	    cmocka_unit_test_setup_teardown(test_stands_by_while_peer_keeps_up, setup_two,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_peer_standing_still_is_not_relied_on, setup_two,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_who_stands_by, setup_two, teardown),
	    cmocka_unit_test_setup_teardown(test_busy_with_hysteresis, setup_two, teardown),
	    cmocka_unit_test_setup_teardown(test_channel_worker_says_whether_alone, setup_two,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_capacity_from_fd_limit, setup_two, teardown),
	    cmocka_unit_test_setup_teardown(test_capacity_of_a_connection_process, setup_two,
					    teardown),
	};

	log_set_max_level(LOG_WARNING);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
