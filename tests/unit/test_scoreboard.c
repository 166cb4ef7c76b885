/* scoreboard.c: shared counters, totals that never go back, and the
 * connection cap across processes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ledger.h"
#include "scoreboard.h"

static void
fill_slot(struct scoreboard_slot *s, uint32_t state, uint64_t base)
{
	s->pid = (pid_t)(1000 + base);
	s->state = state;
	s->active = (uint32_t)base;
	s->served = base + 1;
	s->bytes_in = base + 2;
	s->bytes_out = base + 3;
	s->lost = base + 4;
	s->dgrams_in = base + 5;
	s->dgrams_out = base + 6;
	s->dgrams_dropped[DROP_RATELIMIT] = base + 7;
	s->heartbeat = base + 8;
	s->refused = base + 9;
}

static void
test_new_free(void **state)
{
	struct scoreboard sb;
	struct scoreboard_totals t;

	assert_int_equal(scoreboard_new(&sb, 4, 17, NULL), 0);
	assert_non_null(sb.header);
	assert_non_null(sb.slots);
	assert_int_equal(sb.n_slots, 4);
	assert_int_equal(sb.header->max_connections, 17);
	assert_int_equal(sb.header->active_total, 0);
	/* Slots start empty and each one on its own cache line. */
	assert_int_equal((uintptr_t)sb.slots % 64, 0);
	assert_true((char *)sb.slots >= (char *)sb.header + sizeof(*sb.header));
	for (unsigned i = 0; i < sb.n_slots; i++) {
		assert_int_equal(sb.slots[i].state, SLOT_EMPTY);
		assert_int_equal(sb.slots[i].served, 0);
	}
	/* The whole mapping is writable: the last slot is the last byte. */
	assert_true((char *)(sb.slots + sb.n_slots) <= (char *)sb.header + sb.mapping_size);
	sb.slots[sb.n_slots - 1].heartbeat = 1;
	scoreboard_totals(&sb, &t);
	assert_int_equal(t.workers_running, 0);
	assert_int_equal(t.served, 0);
	assert_int_equal(t.refused, 0);

	scoreboard_free(&sb);
	assert_null(sb.header);
	assert_null(sb.slots);
	assert_int_equal(sb.n_slots, 0);
	/* Freeing twice is harmless. */
	scoreboard_free(&sb);
	assert_null(sb.header);
}

/* The connection forker maps the scoreboard from its fd (a memfd, or the
 * file): writes through either mapping are seen in the other. */
static void
attach_and_check(const char *dir)
{
	struct scoreboard sb, other;
	int junk;

	assert_int_equal(scoreboard_new(&sb, 4, 17, dir), 0);
	assert_true(sb.fd >= 0);
	assert_int_equal(scoreboard_attach(&other, sb.fd), 0);
	assert_int_equal(other.n_slots, 4);
	assert_int_equal(other.header->max_connections, 17);
	assert_int_equal(other.doorbell, -1);
	assert_null(other.sources);
	other.slots[2].served = 99;
	assert_int_equal(sb.slots[2].served, 99);
	scoreboard_free(&other);
	/* The owner's fd stays open for the next one. */
	assert_true(fcntl(sb.fd, F_GETFD) >= 0);
	scoreboard_free(&sb);
	junk = memfd_create("junk", MFD_CLOEXEC);
	assert_true(junk >= 0);
	assert_int_equal(scoreboard_attach(&other, junk), -EBADMSG);
	assert_int_equal(ftruncate(junk, 4096), 0);
	assert_int_equal(scoreboard_attach(&other, junk), -EBADMSG);
	close(junk);
}

static void
test_attach(void **state)
{
	char dir[] = "/tmp/test-scoreboard-XXXXXX";

	attach_and_check(NULL);
	assert_non_null(mkdtemp(dir));
	attach_and_check(dir);
	assert_int_equal(rmdir(dir), 0);
}

static void
test_totals(void **state)
{
	struct scoreboard sb;
	struct scoreboard_totals t;

	assert_int_equal(scoreboard_new(&sb, 4, 0, NULL), 0);
	fill_slot(&sb.slots[0], SLOT_RUNNING, 10);
	fill_slot(&sb.slots[1], SLOT_DRAINING, 20);
	fill_slot(&sb.slots[3], SLOT_STARTING, 30);
	sb.header->accept_pauses = 5;
	scoreboard_totals(&sb, &t);
	/* Only running workers count as running; all non-empty slots count. */
	assert_int_equal(t.workers_running, 1);
	assert_int_equal(t.active, 10 + 20 + 30);
	assert_int_equal(t.served, 11 + 21 + 31);
	assert_int_equal(t.bytes_in, 12 + 22 + 32);
	assert_int_equal(t.bytes_out, 13 + 23 + 33);
	assert_int_equal(t.lost, 14 + 24 + 34);
	assert_int_equal(t.dgrams_in, 15 + 25 + 35);
	assert_int_equal(t.dgrams_out, 16 + 26 + 36);
	assert_int_equal(t.dgrams_dropped, 17 + 27 + 37);
	assert_int_equal(t.refused, 19 + 29 + 39);
	assert_int_equal(t.accept_pauses, 5);
	scoreboard_free(&sb);
}

static void
test_reset_keeps_totals(void **state)
{
	struct scoreboard sb;
	struct scoreboard_totals before, after, later;

	assert_int_equal(scoreboard_new(&sb, 2, 0, NULL), 0);
	fill_slot(&sb.slots[0], SLOT_RUNNING, 100);
	fill_slot(&sb.slots[1], SLOT_RUNNING, 200);
	scoreboard_totals(&sb, &before);

	/* The worker in slot 0 died: its slot is emptied for the next one,
	 * and what it counted moves to the header. */
	scoreboard_slot_reset(&sb, 0);
	assert_int_equal(sb.slots[0].state, SLOT_EMPTY);
	assert_int_equal(sb.slots[0].pid, 0);
	assert_int_equal(sb.slots[0].served, 0);
	assert_int_equal(sb.slots[0].bytes_in, 0);
	assert_int_equal(sb.slots[0].heartbeat, 0);
	assert_int_equal(sb.header->retired.served, 101);
	assert_int_equal(sb.header->retired.bytes_in, 102);
	assert_int_equal(sb.header->retired.bytes_out, 103);
	assert_int_equal(sb.header->retired.lost, 104);
	assert_int_equal(sb.header->retired.dgrams_in, 105);
	assert_int_equal(sb.header->retired.dgrams_out, 106);
	assert_int_equal(sb.header->retired.dgrams_dropped[DROP_RATELIMIT], 107);
	assert_int_equal(sb.header->retired.refused, 109);
	/* Slot 1 is untouched. */
	assert_int_equal(sb.slots[1].served, 201);

	scoreboard_totals(&sb, &after);
	assert_int_equal(after.served, before.served);
	assert_int_equal(after.bytes_in, before.bytes_in);
	assert_int_equal(after.bytes_out, before.bytes_out);
	assert_int_equal(after.lost, before.lost);
	assert_int_equal(after.dgrams_in, before.dgrams_in);
	assert_int_equal(after.dgrams_out, before.dgrams_out);
	assert_int_equal(after.dgrams_dropped, before.dgrams_dropped);
	assert_int_equal(after.refused, before.refused);
	/* Its open connections went with it. */
	assert_int_equal(after.active, 200);
	assert_int_equal(after.workers_running, 1);

	/* A new worker in the slot counts from zero, on top of the totals. */
	sb.slots[0].state = SLOT_RUNNING;
	SB_ADD(sb.slots[0].served, 2);
	SB_ADD(sb.slots[0].bytes_in, 10);
	scoreboard_totals(&sb, &later);
	assert_int_equal(later.served, after.served + 2);
	assert_int_equal(later.bytes_in, after.bytes_in + 10);

	/* Resetting again, and resetting an empty slot, never lose a count. */
	scoreboard_slot_reset(&sb, 0);
	scoreboard_slot_reset(&sb, 0);
	scoreboard_slot_reset(&sb, 1);
	scoreboard_totals(&sb, &later);
	assert_int_equal(later.served, after.served + 2);
	assert_int_equal(later.bytes_in, after.bytes_in + 10);
	assert_int_equal(later.active, 0);
	assert_int_equal(later.workers_running, 0);
	scoreboard_free(&sb);
}

static void
test_reserve_up_to_max(void **state)
{
	struct scoreboard sb;

	assert_int_equal(scoreboard_new(&sb, 1, 3, NULL), 0);
	assert_true(ledger_reserve(&sb));
	assert_true(ledger_reserve(&sb));
	assert_true(ledger_reserve(&sb));
	assert_int_equal(sb.header->active_total, 3);
	/* At the cap: refused, and nothing counted. */
	assert_false(ledger_reserve(&sb));
	assert_false(ledger_reserve(&sb));
	assert_int_equal(sb.header->active_total, 3);

	ledger_release(&sb);
	assert_int_equal(sb.header->active_total, 2);
	assert_true(ledger_reserve(&sb));
	assert_false(ledger_reserve(&sb));

	/* A new cap (reload) applies at once, both ways. */
	ledger_set_max(&sb, 4);
	assert_int_equal(sb.header->max_connections, 4);
	assert_true(ledger_reserve(&sb));
	assert_false(ledger_reserve(&sb));
	ledger_set_max(&sb, 2);
	ledger_release(&sb);
	assert_int_equal(sb.header->active_total, 3);
	assert_false(ledger_reserve(&sb));
	ledger_release(&sb);
	ledger_release(&sb);
	assert_true(ledger_reserve(&sb));
	assert_false(ledger_reserve(&sb));
	scoreboard_free(&sb);
}

static void
test_reserve_unlimited(void **state)
{
	struct scoreboard sb;

	assert_int_equal(scoreboard_new(&sb, 1, 0, NULL), 0);
	for (unsigned i = 0; i < 100000; i++)
		assert_true(ledger_reserve(&sb));
	assert_int_equal(sb.header->active_total, 100000);
	for (unsigned i = 0; i < 100000; i++)
		ledger_release(&sb);
	assert_int_equal(sb.header->active_total, 0);
	scoreboard_free(&sb);
}

static void
test_find_free(void **state)
{
	struct scoreboard sb;

	assert_int_equal(scoreboard_new(&sb, 3, 0, NULL), 0);
	assert_int_equal(scoreboard_find_free(&sb), 0);
	sb.slots[0].state = SLOT_STARTING;
	assert_int_equal(scoreboard_find_free(&sb), 1);
	sb.slots[1].state = SLOT_RUNNING;
	sb.slots[2].state = SLOT_DRAINING;
	assert_int_equal(scoreboard_find_free(&sb), -ENOSPC);
	scoreboard_slot_reset(&sb, 1);
	assert_int_equal(scoreboard_find_free(&sb), 1);
	scoreboard_free(&sb);

	/* No slots at all: nothing free, and no crash. */
	assert_int_equal(scoreboard_new(&sb, 0, 0, NULL), 0);
	assert_int_equal(scoreboard_find_free(&sb), -ENOSPC);
	scoreboard_free(&sb);
}

static void
test_shared_across_fork(void **state)
{
	struct scoreboard sb;
	struct scoreboard_totals t;
	int status;
	pid_t pid;

	assert_int_equal(scoreboard_new(&sb, 2, 10, NULL), 0);
	sb.slots[1].state = SLOT_STARTING;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* The child sees what the parent wrote before the fork, and
		 * writes what the parent must see. */
		if (SB_GET(sb.slots[1].state) != SLOT_STARTING)
			_exit(2);
		SB_SET(sb.slots[1].pid, getpid());
		SB_SET(sb.slots[1].state, SLOT_RUNNING);
		SB_ADD(sb.slots[1].served, 5);
		SB_ADD(sb.slots[1].bytes_in, 1234);
		if (!ledger_reserve(&sb) || !ledger_reserve(&sb))
			_exit(3);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(sb.slots[1].pid, pid);
	assert_int_equal(sb.header->active_total, 2);
	scoreboard_totals(&sb, &t);
	assert_int_equal(t.workers_running, 1);
	assert_int_equal(t.served, 5);
	assert_int_equal(t.bytes_in, 1234);
	scoreboard_free(&sb);
}

static void
test_cap_holds_across_processes(void **state)
{
	enum { CHILDREN = 4, TRIES = 5000, MAX = 100 };
	struct scoreboard sb;
	unsigned won = 0;
	int start[2];

	/* Processes racing for the same places never get more than the cap,
	 * and never fewer: a lost update would show as either. */
	assert_int_equal(scoreboard_new(&sb, 1, MAX, NULL), 0);
	assert_int_equal(pipe(start), 0);
	for (int i = 0; i < CHILDREN; i++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			unsigned n = 0;
			char c;

			close(start[1]);
			/* Start together: EOF when the parent closes its end. */
			if (read(start[0], &c, 1) != 0)
				_exit(255);
			for (int j = 0; j < TRIES; j++)
				n += ledger_reserve(&sb);
			_exit((int)n);
		}
	}
	close(start[0]);
	close(start[1]);
	for (int i = 0; i < CHILDREN; i++) {
		int status;
		assert_true(wait(&status) > 0);
		assert_true(WIFEXITED(status));
		assert_true(WEXITSTATUS(status) <= MAX);
		won += (unsigned)WEXITSTATUS(status);
	}
	assert_int_equal(won, MAX);
	assert_int_equal(sb.header->active_total, MAX);
	scoreboard_free(&sb);
}

static char *
temp_dir(void)
{
	char *d = strdup("/tmp/test-scoreboard-XXXXXX");

	assert_non_null(d);
	assert_non_null(mkdtemp(d));
	return d;
}

static void
remove_dir(char *d)
{
	assert_int_equal(rmdir(d), 0); /* the scoreboard removed its file */
	free(d);
}

/* The owner's writes are what a reader in another mapping sees; the file
 * goes with the owner. */
static void
test_file_read_back(void **state)
{
	char *dir = temp_dir();
	struct scoreboard sb, ro;
	struct scoreboard_snapshot snap;

	assert_int_equal(scoreboard_new(&sb, 4, 9, dir), 0);
	scoreboard_set_model(&sb, "passfd", 3);
	fill_slot(&sb.slots[2], SLOT_RUNNING, 10);
	sb.slots[2].dgrams_dropped[DROP_PORT] = 5;
	scoreboard_count_reload(&sb, true);
	scoreboard_count_reload(&sb, false);
	scoreboard_count_reload(&sb, false);
	scoreboard_count_kept_back(&sb, 4);
	assert_true(ledger_reserve(&sb));

	assert_int_equal(scoreboard_open(&ro, dir), 0);
	assert_int_equal(scoreboard_snapshot(&ro, &snap), 0);
	assert_string_equal(snap.model, "passfd");
	assert_int_equal(snap.generation, 3);
	assert_int_equal(snap.supervisor, getpid());
	assert_int_equal(snap.max_connections, 9);
	assert_int_equal(snap.reserved, 1);
	assert_int_equal(snap.reloads_ok, 1);
	assert_int_equal(snap.reloads_failed, 2);
	assert_int_equal(snap.kept_back, 4);
	assert_int_equal(snap.n_slots, 1);
	assert_int_equal(snap.slots[0].index, 2);
	assert_int_equal(snap.slots[0].s.served, 11);
	assert_int_equal(snap.totals.served, 11);
	assert_int_equal(snap.totals.dropped[DROP_PORT], 5);
	assert_int_equal(snap.totals.dropped[DROP_RATELIMIT], 17);
	assert_int_equal(snap.totals.dgrams_dropped, 22);
	scoreboard_snapshot_free(&snap);

	/* Later writes show through the same mapping. */
	sb.slots[2].served = 50;
	assert_int_equal(scoreboard_snapshot(&ro, &snap), 0);
	assert_int_equal(snap.totals.served, 50);
	scoreboard_snapshot_free(&snap);
	scoreboard_free(&ro);

	scoreboard_free(&sb);
	assert_int_equal(scoreboard_open(&ro, dir), -ENOENT);
	remove_dir(dir);
}

/* The reader's mapping cannot write: a store is a fault. */
static void
test_reader_cannot_write(void **state)
{
	char *dir = temp_dir();
	struct scoreboard sb, ro;
	int status;
	pid_t pid;

	assert_int_equal(scoreboard_new(&sb, 2, 0, dir), 0);
	assert_int_equal(scoreboard_open(&ro, dir), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		signal(SIGSEGV, SIG_DFL);
		*(volatile uint64_t *)&ro.slots[0].served = 1;
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGSEGV);
	assert_int_equal(sb.slots[0].served, 0);
	scoreboard_free(&ro);
	scoreboard_free(&sb);
	remove_dir(dir);
}

static void
test_open_refuses(void **state)
{
	char *dir = temp_dir();
	char path[256];
	struct scoreboard sb;
	int fd, status;
	pid_t pid;

	/* Not a scoreboard. */
	snprintf(path, sizeof(path), "%s/" SCOREBOARD_FILE, dir);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "garbage garbage garbage garbage garbage garbage garbage "
				   "garbage garbage garbage garbage garbage garbage garbage",
			       112),
			 112);
	close(fd);
	assert_int_equal(scoreboard_open(&sb, dir), -EBADMSG);
	assert_int_equal(unlink(path), 0);

	/* Left by a supervisor that is gone (killed: it removed nothing). */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct scoreboard child;
		_exit(scoreboard_new(&child, 2, 0, dir) == 0 ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(scoreboard_open(&sb, dir), -ESRCH);
	assert_int_equal(unlink(path), 0);

	/* No directory at all. */
	assert_int_equal(scoreboard_new(&sb, 2, 0, "/nonexistent/echod"), -ENOENT);
	remove_dir(dir);
}

/* A writer keeps emptying its slot into the retired totals while a reader
 * takes snapshots: the total served never goes back, as it would if a
 * reader caught a slot both in retired and still in place. */
static void
test_snapshot_while_slots_reset(void **state)
{
	char *dir = temp_dir();
	struct scoreboard sb, ro;
	uint64_t last = 0;
	int status;
	pid_t pid;

	assert_int_equal(scoreboard_new(&sb, 2, 0, dir), 0);
	SB_SET(sb.slots[0].state, SLOT_RUNNING);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		for (unsigned n = 0;; n++) {
			SB_ADD(sb.slots[0].served, 1000);
			if (n % 64 == 0) {
				scoreboard_slot_reset(&sb, 0);
				SB_SET(sb.slots[0].state, SLOT_RUNNING);
			}
		}
		_exit(0);
	}
	assert_int_equal(scoreboard_open(&ro, dir), 0);
	unsigned readings = 0;
	/* Read while it writes, not before. */
	while (SB_GET(sb.header->retired.served) == 0)
		usleep(100);
	for (unsigned i = 0; i < 5000; i++) {
		struct scoreboard_snapshot snap;
		int r = scoreboard_snapshot(&ro, &snap);

		if (r == -EAGAIN)
			continue;
		readings++;
		assert_int_equal(r, 0);
		assert_true(snap.totals.served >= last);
		assert_int_equal(snap.totals.served % 1000, 0);
		last = snap.totals.served;
		scoreboard_snapshot_free(&snap);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	assert_true(readings > 0);
	assert_true(last > 0);
	scoreboard_free(&ro);
	scoreboard_free(&sb);
	remove_dir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_new_free),
	    cmocka_unit_test(test_attach),
	    cmocka_unit_test(test_totals),
	    cmocka_unit_test(test_reset_keeps_totals),
	    cmocka_unit_test(test_reserve_up_to_max),
	    cmocka_unit_test(test_reserve_unlimited),
	    cmocka_unit_test(test_find_free),
	    cmocka_unit_test(test_shared_across_fork),
	    cmocka_unit_test(test_cap_holds_across_processes),
	    cmocka_unit_test(test_file_read_back),
	    cmocka_unit_test(test_reader_cannot_write),
	    cmocka_unit_test(test_open_refuses),
	    cmocka_unit_test(test_snapshot_while_slots_reset),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
