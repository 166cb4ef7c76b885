/* Model=fork's connection forker (echod-forker): the connection processes
 * are its children and it maps no libsystemd; it starts on a reload into
 * fork too; and when it cannot be had (it fails to start, or it dies) the
 * supervisor forks them itself, says so, and serves on. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static char dir[64];
/* $ECHOD_BINARY as meson set it: the tests that run a copy of echod point
 * it elsewhere, and teardown() points it back. */
static char *binary_from_meson;

static int
setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/test-forker-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int
teardown(void **state)
{
	char path[128];

	harness_teardown(state);
	setenv("ECHOD_BINARY", binary_from_meson, 1);
	snprintf(path, sizeof(path), "%s/echod", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/echod-forker", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/echod.conf", dir);
	unlink(path);
	rmdir(dir);
	return 0;
}

static bool
maps_mention(pid_t pid, const char *needle)
{
	char path[64], line[512];
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "re");
	assert_non_null(f);
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

static pid_t
parent_of(pid_t pid)
{
	char path[64];
	int ppid = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	/* pid (comm) state ppid: comm is ours ("echod conn"), no ')' in it. */
	if (fscanf(f, "%*d (%*[^)]) %*c %d", &ppid) != 1)
		ppid = -1;
	fclose(f);
	return ppid;
}

/* The one process under echod that serves client, once it appears. */
static pid_t
serving_process(struct echod *e, int client)
{
	assert_int_equal(echo_roundtrip(client, "ping", 4, 5000), 0);
	for (int i = 0; i < 250; i++) {
		pid_t kids[16];
		size_t n = process_children(e->pid, kids, 16);

		if (n == 1)
			return kids[0];
		usleep(20 * 1000);
	}
	fail_msg("no single connection process under echod");
	return -1;
}

static void
test_connection_processes_are_the_forkers(void **state)
{
	const char *extra[] = {"--model", "fork", NULL};
	struct echod e;
	pid_t forker, conn, kids[4];
	int client;

	echod_start(&e, extra);
	assert_true(echod_wait_log(&e, "connection processes are forked by", 5000));
	forker = process_forker(e.pid);
	assert_true(forker > 0);
	/* The supervisor's one child (no datagram sockets, so no worker). */
	assert_int_equal(process_direct_children(e.pid, kids, 4), 1);
	assert_int_equal(kids[0], forker);
	client = tcp_connect(e.port);
	conn = serving_process(&e, client);
	assert_int_equal(parent_of(conn), forker);
	/* What it exists for: fork() and exit() without libsystemd's
	 * mappings. The supervisor maps it (the check can fail). */
	assert_true(maps_mention(e.pid, "libsystemd"));
	assert_false(maps_mention(forker, "libsystemd"));
	assert_false(maps_mention(conn, "libsystemd"));
	/* Linked statically (meson's static_forker, which meson passes on
	 * as ECHOD_FORKER_STATIC), it maps no shared library at all; the
	 * supervisor maps several. */
	assert_non_null(getenv("ECHOD_FORKER_STATIC"));
	if (strcmp(getenv("ECHOD_FORKER_STATIC"), "1") == 0) {
		assert_true(maps_mention(e.pid, ".so"));
		assert_false(maps_mention(forker, ".so"));
		assert_false(maps_mention(conn, ".so"));
	}
	close(client);
	assert_int_equal(echod_stop(&e, 10000), 0);
	/* It exits with the supervisor. */
	for (int i = 0; i < 250 && kill(forker, 0) == 0; i++)
		usleep(20 * 1000);
	assert_int_equal(kill(forker, 0), -1);
}

/* Under a low fd limit too: its fds are moved into place within it. */
static void
test_forker_under_low_fd_limit(void **state)
{
	const char *extra[] = {"--model", "fork", NULL};
	struct echod e;
	pid_t conn;
	int client;

	harness_limit_fds(32);
	echod_start(&e, extra);
	assert_true(echod_wait_log(&e, "connection processes are forked by", 5000));
	client = tcp_connect(e.port);
	conn = serving_process(&e, client);
	assert_int_equal(parent_of(conn), process_forker(e.pid));
	close(client);
	assert_int_equal(echod_stop(&e, 10000), 0);
	assert_int_equal(echod_log_count(&e, "did not start"), 0);
}

static void
test_forker_killed(void **state)
{
	const char *extra[] = {"--model", "fork", NULL};
	struct echod e;
	pid_t forker, conn;
	int held, client;

	echod_start(&e, extra);
	assert_true(echod_wait_log(&e, "connection processes are forked by", 5000));
	forker = process_forker(e.pid);
	assert_true(forker > 0);
	held = tcp_connect(e.port);
	(void)serving_process(&e, held);
	assert_int_equal(kill(forker, SIGKILL), 0);
	assert_true(echod_wait_log(&e, "ended (signal 9) with 1 connection process(es)", 5000));
	/* Its connection process drains: what it holds still echoes. */
	assert_int_equal(echo_roundtrip(held, "still", 5, 5000), 0);
	close(held);
	/* New ones are the supervisor's own children now. */
	client = tcp_connect(e.port);
	assert_int_equal(echo_roundtrip(client, "after", 5, 5000), 0);
	conn = 0;
	for (int i = 0; i < 250 && conn <= 0; i++) {
		pid_t kids[4];
		if (process_direct_children(e.pid, kids, 4) == 1)
			conn = kids[0];
		else
			usleep(20 * 1000);
	}
	assert_true(conn > 0);
	assert_int_equal(parent_of(conn), e.pid);
	close(client);
	assert_int_equal(echod_stop(&e, 10000), 0);
}

/* `echod status --json`'s total of active connections. */
static unsigned long long
status_active(const char *rundir)
{
	unsigned long long active;

	assert_true(echod_status_total(rundir, "active", &active));
	return active;
}

/* A connection process that outlived its forker is the supervisor's to
 * reap: killed with its connection open, that connection is settled, not
 * counted active for good. */
static void
test_orphan_killed_is_settled(void **state)
{
	char rundir[96];
	const char *extra[] = {"--model", "fork", "--runtime-dir", rundir, NULL};
	struct echod e;
	pid_t forker, conn;
	int held;

	snprintf(rundir, sizeof(rundir), "%s/run", dir);
	assert_int_equal(mkdir(rundir, 0700), 0);
	echod_start(&e, extra);
	assert_true(echod_wait_log(&e, "connection processes are forked by", 5000));
	forker = process_forker(e.pid);
	held = tcp_connect(e.port);
	conn = serving_process(&e, held);
	assert_int_equal(status_active(rundir), 1);
	assert_int_equal(kill(forker, SIGKILL), 0);
	assert_true(echod_wait_log(&e, "ended (signal 9) with 1 connection process(es)", 5000));
	for (int i = 0; i < 250 && parent_of(conn) != e.pid; i++)
		usleep(20 * 1000);
	assert_int_equal(parent_of(conn), e.pid);
	assert_int_equal(kill(conn, SIGKILL), 0);
	for (int i = 0; i < 250 && kill(conn, 0) == 0; i++)
		usleep(20 * 1000);
	assert_int_equal(kill(conn, 0), -1);
	assert_int_equal(status_active(rundir), 0);
	close(held);
	assert_int_equal(echod_stop(&e, 10000), 0);
	harness_remove_runtime_dir(rundir);
}

/* A copy of echod in dir, beside an echod-forker that is a copy of
 * forker (a program that is not one). */
static void
install_beside(const char *forker)
{
	char cmd[2 * PATH_MAX + 128], path[128];
	const char *binary = getenv("ECHOD_BINARY");

	assert_non_null(binary);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s/echod' && cp '%s' '%s/echod-forker'", binary, dir,
		 forker, dir);
	assert_int_equal(system(cmd), 0);
	snprintf(path, sizeof(path), "%s/echod", dir);
	assert_int_equal(setenv("ECHOD_BINARY", path, 1), 0);
}

static void
test_forker_that_does_not_start(void **state)
{
	const char *extra[] = {"--model", "fork", NULL};
	struct echod e;
	pid_t kids[4];
	int client;

	install_beside("/bin/false");
	echod_start(&e, extra);
	assert_true(echod_wait_log(&e, "did not start", 5000));
	assert_true(echod_wait_log(&e, "exit status 1", 1000));
	client = tcp_connect(e.port);
	assert_int_equal(echo_roundtrip(client, "served", 6, 5000), 0);
	/* By a child of the supervisor's. */
	for (int i = 0; i < 250 && process_direct_children(e.pid, kids, 4) != 1; i++)
		usleep(20 * 1000);
	assert_int_equal(process_direct_children(e.pid, kids, 4), 1);
	assert_int_equal(process_forker(e.pid), 0);
	close(client);
	assert_int_equal(echod_stop(&e, 10000), 0);
}

static void
forker_of_this_build(char *buf, size_t size)
{
	const char *binary = getenv("ECHOD_BINARY");
	const char *slash = binary ? strrchr(binary, '/') : NULL;

	assert_non_null(slash);
	snprintf(buf, size, "%.*s/echod-forker", (int)(slash - binary), binary);
}

/* Started by hand, or by an echod of another build: it says what it is,
 * and exits 2 without doing anything. */
static void
test_forker_by_hand(void **state)
{
	char forker[PATH_MAX], cmd[PATH_MAX + 64], out[512] = "";
	FILE *p;
	int status;

	forker_of_this_build(forker, sizeof(forker));
	snprintf(cmd, sizeof(cmd), "'%s' 0.0.0/forkwire-0 0 2>&1 </dev/null", forker);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_true(fread(out, 1, sizeof(out) - 1, p) > 0);
	status = pclose(p);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 2);
	assert_non_null(strstr(out, "started by echod itself"));
	assert_non_null(strstr(out, "0.0.0/forkwire-0"));
}

/* From prefork to fork by a reload: the forker starts then, and serves
 * with the configuration of the reload. It is the one that was there when
 * echod started, though apt replaced the file since (by rename, as dpkg
 * does): the one of echod's own build. */
static void
test_reload_into_fork(void **state)
{
	char config[128], listen[64], forker[PATH_MAX], replaced[160], cmd[PATH_MAX + 64];
	const char *args[] = {"--listen", listen, "--config", config, NULL};
	struct echod e;
	pid_t conn;
	int client;
	char byte;

	forker_of_this_build(forker, sizeof(forker));
	install_beside(forker);
	snprintf(config, sizeof(config), "%s/echod.conf", dir);
	harness_write_config(config, "[echod]\nModel=prefork\nWorkers=1\n");
	memset(&e, 0, sizeof(e));
	e.port = free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", e.port);
	echod_spawn(&e, NULL, args, -1);
	assert_true(tcp_wait_accepting(e.port, 10000));
	assert_int_equal(process_forker(e.pid), 0);
	snprintf(replaced, sizeof(replaced), "%s/echod-forker.new", dir);
	snprintf(cmd, sizeof(cmd), "cp /bin/false '%s' && mv '%s' '%s/echod-forker'", replaced,
		 replaced, dir);
	assert_int_equal(system(cmd), 0);
	harness_write_config(config, "[echod]\nModel=fork\nIdleTimeoutSec=1\n");
	assert_int_equal(kill(e.pid, SIGHUP), 0);
	assert_true(echod_wait_log(&e, "connection processes are forked by", 10000));
	assert_true(process_forker(e.pid) > 0);
	client = tcp_connect(e.port);
	conn = serving_process(&e, client);
	assert_int_equal(parent_of(conn), process_forker(e.pid));
	/* IdleTimeoutSec=1 came with it: the idle client is closed. */
	assert_true(wait_readable(client, 5000));
	assert_int_equal(read(client, &byte, 1), 0);
	close(client);
	assert_int_equal(echod_stop(&e, 10000), 0);
}

/* What a connection process logs goes to the journal natively, as in the
 * other models, through echod-forker's own writer of the protocol: the
 * same fields. */
static void
test_journal_from_connection_process(void **state)
{
	char listen[64], entry[4096];
	const char *args[] = {"--listen", listen, "--model", "fork", "--config", "/dev/null",
			      "--log-level", "debug", NULL};
	int journal = harness_private_journal(), fd;
	struct echod e;

	if (journal < 0)
		skip();
	memset(&e, 0, sizeof(e));
	e.port = free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", e.port);
	echod_spawn(&e, (const char *[]){HARNESS_JOURNAL_STREAM, NULL}, args, -1);
	assert_true(harness_journal_wait(journal, "connection processes are forked by", entry,
					 sizeof(entry), 10000));
	assert_true(tcp_wait_accepting(e.port, 5000));
	fd = tcp_connect(e.port);
	assert_int_equal(echo_roundtrip(fd, "journal", 7, 3000), 0);
	assert_true(harness_journal_connection(journal, fd, entry, sizeof(entry), 5000));
	assert_true(harness_journal_has(entry, "ECHOD_MODEL=fork"));
	assert_true(harness_journal_has(entry, "PRIORITY=7"));
	assert_true(harness_journal_has(entry, "SYSLOG_IDENTIFIER=echod"));
	assert_non_null(strstr(entry, "\nCODE_FUNC="));
	close(fd);
	assert_int_equal(echod_stop(&e, 10000), 0);
	close(journal);
}

int
main(void)
{
	binary_from_meson = getenv("ECHOD_BINARY") ? strdup(getenv("ECHOD_BINARY")) : NULL;
	if (!binary_from_meson) {
		fprintf(stderr, "ECHOD_BINARY is not set (meson sets it)\n");
		return 1;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_connection_processes_are_the_forkers, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_forker_under_low_fd_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_forker_killed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_orphan_killed_is_settled, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_forker_that_does_not_start, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_forker_by_hand, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reload_into_fork, setup, teardown),
	    /* Last: it leaves this process in a mount namespace of its own. */
	    cmocka_unit_test_setup_teardown(test_journal_from_connection_process, setup,
					    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
