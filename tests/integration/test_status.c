/* echod status: reads the running echod's scoreboard through its runtime
 * directory, in every model, under load, while a reload runs and with a
 * worker just killed; and says so, exit 1, when nothing runs there. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static char dir[64];

static int
setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/test-status-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int
teardown(void **state)
{
	harness_teardown(state);
	harness_remove_runtime_dir(dir);
	return 0;
}

/* Runs echod status [--json]; returns its exit status, output in out. */
static int
status(struct echod *out, bool json)
{
	const char *args[] = {"status", "--runtime-dir", dir, json ? "--json" : NULL, NULL};

	memset(out, 0, sizeof(*out));
	return echod_run(out, args, 10000);
}

/* A total of the --json object (the keys after the workers' array). */
static unsigned long long
total(const struct echod *s, const char *key)
{
	unsigned long long total;

	assert_true(status_json_total(s->out, key, &total));
	return total;
}

static void
start(struct echod *e)
{
	const char *extra[] = {"--runtime-dir", dir, "-w", "2", NULL};

	echod_start(e, extra);
}

static void
test_counts_under_load(void **state)
{
	struct echod e, s;
	char model[64];
	unsigned long long before;
	int held[3];

	start(&e);
	/* echod_start() connected once to see it accept. */
	assert_int_equal(status(&s, true), 0);
	before = total(&s, "served");
	for (int i = 0; i < 20; i++) {
		int fd = tcp_connect(e.port);
		assert_int_equal(echo_roundtrip(fd, "hello", 5, 5000), 0);
		close(fd);
	}
	for (int i = 0; i < 3; i++) {
		held[i] = tcp_connect(e.port);
		assert_int_equal(echo_roundtrip(held[i], "x", 1, 5000), 0);
	}
	assert_int_equal(status(&s, true), 0);
	snprintf(model, sizeof(model), "{\"model\":\"%s\"", harness_model());
	assert_non_null(strstr(s.out, model));
	assert_int_equal(total(&s, "active"), 3);
	assert_int_equal(total(&s, "served"), before + 23);
	assert_int_equal(total(&s, "bytes_in"), 20 * 5 + 3);
	assert_int_equal(total(&s, "bytes_out"), 20 * 5 + 3);
	assert_int_equal(total(&s, "reloads_ok"), 0);

	assert_int_equal(status(&s, false), 0);
	assert_non_null(strstr(s.out, "connections: 3 active"));
	assert_non_null(strstr(s.out, "connections: 3 active, "));
	for (int i = 0; i < 3; i++)
		close(held[i]);
	assert_int_equal(echod_stop(&e, 10000), 0);
}

/* Clients keep connecting while status reads: every reading whole, the
 * served total never going back. */
static void
test_readings_while_busy(void **state)
{
	struct echod e, s;
	unsigned long long last = 0;
	int status_;
	pid_t load;

	start(&e);
	load = fork();
	assert_true(load >= 0);
	if (load == 0) {
		for (uint64_t until = monotonic_ms() + 3000; monotonic_ms() < until;) {
			int fd = tcp_connect(e.port);
			if (fd < 0 || echo_roundtrip(fd, "load", 4, 5000) != 0)
				_exit(1);
			close(fd);
		}
		_exit(0);
	}
	for (int i = 0; i < 30; i++) {
		assert_int_equal(status(&s, true), 0);
		assert_true(total(&s, "served") >= last);
		/* The client holds one connection at a time, but a worker may
		 * not yet have read the EOF of the last few: a small number,
		 * never a torn or stale-slot value. */
		assert_true(total(&s, "active") <= 8);
		last = total(&s, "served");
		usleep(50000);
	}
	assert_int_equal(waitpid(load, &status_, 0), load);
	assert_true(WIFEXITED(status_) && WEXITSTATUS(status_) == 0);
	assert_true(last > 10);
	assert_int_equal(echod_stop(&e, 10000), 0);
}

static void
test_worker_killed(void **state)
{
	struct echod e, s;
	pid_t kids[16];
	size_t n;

	bool pool = strcmp(harness_model(), "fork") != 0;
	int held = -1;

	start(&e);
	/* fork: the last connection stays open, so that its process is
	 * there to be killed (the others may have exited already). */
	for (int i = 0; i < 5; i++) {
		int fd = tcp_connect(e.port);
		assert_int_equal(echo_roundtrip(fd, "abc", 3, 5000), 0);
		if (!pool && i == 4)
			held = fd;
		else
			close(fd);
	}
	/* A worker adds its bytes to its slot once per turn of its loop, so a
	 * reading taken before that turn ends may lack the last echo: wait for
	 * the whole 15 before the kill, so that what the kill takes is seen. */
	uint64_t deadline = monotonic_ms() + 5000;

	while (pool) {
		assert_int_equal(status(&s, true), 0);
		if (total(&s, "bytes_in") == 15)
			break;
		if (monotonic_ms() >= deadline)
			fail_msg("bytes_in %llu, not 15, 5 s after 5 echoes of 3 bytes",
				 total(&s, "bytes_in"));
		usleep(20000);
	}
	n = process_children(e.pid, kids, 16);
	assert_true(n >= 1);
	kill(kids[0], SIGKILL);
	/* Right after, and for a while: always a whole reading, never less
	 * than what was served, and totals that never go back (a process
	 * killed before it counted its last bytes may take them along: fork). */
	unsigned long long bytes = 0;
	for (int i = 0; i < 20; i++) {
		assert_int_equal(status(&s, true), 0);
		assert_true(total(&s, "served") >= 5);
		assert_true(total(&s, "bytes_in") >= bytes);
		assert_true(total(&s, "bytes_in") <= 15);
		bytes = total(&s, "bytes_in");
		usleep(20000);
	}
	if (pool)
		assert_int_equal(bytes, 15);
	if (held >= 0)
		close(held);
	assert_int_equal(echod_stop(&e, 10000), 0);
}

static void
test_during_reload(void **state)
{
	struct echod e, s;
	unsigned long long before;
	uint64_t until;
	int fd;

	start(&e);
	assert_int_equal(status(&s, true), 0);
	before = total(&s, "served");
	fd = tcp_connect(e.port);
	assert_int_equal(echo_roundtrip(fd, "abc", 3, 5000), 0);
	kill(e.pid, SIGHUP);
	until = monotonic_ms() + 3000;
	do {
		assert_int_equal(status(&s, true), 0);
		assert_true(total(&s, "served") >= 1);
	} while (total(&s, "reloads_ok") == 0 && monotonic_ms() < until);
	assert_int_equal(total(&s, "reloads_ok"), 1);
	assert_int_equal(total(&s, "reloads_failed"), 0);
	assert_non_null(strstr(s.out, "\"generation\":1"));
	/* The held connection went back and was served on. */
	assert_int_equal(echo_roundtrip(fd, "def", 3, 5000), 0);
	assert_int_equal(status(&s, true), 0);
	assert_int_equal(total(&s, "kept_taken_back"), 1);
	assert_int_equal(total(&s, "served"), before + 1);
	close(fd);
	assert_int_equal(echod_stop(&e, 10000), 0);
}

static void
test_nothing_runs(void **state)
{
	struct echod e, s;

	assert_int_equal(status(&s, false), 1);
	assert_non_null(strstr(s.log, "no echod runs with runtime directory"));
	assert_non_null(strstr(s.log, dir));
	/* After a stop, the scoreboard is gone with it. */
	start(&e);
	assert_int_equal(status(&s, false), 0);
	assert_int_equal(echod_stop(&e, 10000), 0);
	assert_int_equal(status(&s, true), 1);
	assert_string_equal(s.out, "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_counts_under_load, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readings_while_busy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_worker_killed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_during_reload, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_nothing_runs, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
