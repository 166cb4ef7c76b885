/* reload.c: the status file as written and read back, its atomic
 * replacement, and `echod --reload` against a fake supervisor that answers
 * SIGHUP the way the real one must. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "reload.h"

struct fixture {
	char dir[64];
	char path[128];
};

static int
setup_dir(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	strcpy(f->dir, "/tmp/echod-test-reload-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/" RELOAD_STATUS_FILE, f->dir);
	*state = f;
	return 0;
}

/* Fails if anything but the status file was left behind (a temporary
 * file, say). */
static int
teardown_dir(void **state)
{
	struct fixture *f = *state;

	unlink(f->path);
	assert_int_equal(rmdir(f->dir), 0);
	free(f);
	return 0;
}

static void
write_text(const char *path, const char *text)
{
	FILE *fp = fopen(path, "we");

	assert_non_null(fp);
	assert_int_equal(fputs(text, fp) >= 0, 1);
	assert_int_equal(fclose(fp), 0);
}

static void
read_text(const char *path, char *buf, size_t size)
{
	FILE *fp = fopen(path, "re");
	size_t n;

	assert_non_null(fp);
	n = fread(buf, 1, size - 1, fp);
	buf[n] = '\0';
	assert_int_equal(fclose(fp), 0);
}

static unsigned
count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	unsigned n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static uint64_t
now_msec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* --- the file --- */

static void
test_round_trip(void **state)
{
	struct fixture *f = *state;
	unsigned long long generation = 0;
	bool ok = false;
	char message[256], text[512], expected[512];

	assert_int_equal(reload_status_write(f->dir, 4, true, "configuration generation 4 loaded"),
			 0);
	assert_int_equal(reload_status_read(f->dir, &generation, &ok, message, sizeof(message)), 0);
	assert_int_equal(generation, 4);
	assert_true(ok);
	assert_string_equal(message, "configuration generation 4 loaded");

	/* The format is the protocol: check it byte for byte. */
	read_text(f->path, text, sizeof(text));
	snprintf(expected, sizeof(expected),
		 "generation=4\npid=%ld\nresult=ok\nmessage=configuration generation 4 loaded\n",
		 (long)getpid());
	assert_string_equal(text, expected);
	/* Readable by whoever may look in the directory. */
	{
		struct stat st;

		assert_int_equal(stat(f->path, &st), 0);
		assert_int_equal(st.st_mode & 07777, 0644);
	}

	assert_int_equal(reload_status_write(f->dir, 18446744073709551615ULL, false,
					     "/etc/echod/echod.conf:3: unknown key\n\"Modle\""),
			 0);
	assert_int_equal(reload_status_read(f->dir, &generation, &ok, message, sizeof(message)), 0);
	assert_int_equal(generation, 18446744073709551615ULL);
	assert_false(ok);
	/* One line, whatever the message had. */
	assert_string_equal(message, "/etc/echod/echod.conf:3: unknown key \"Modle\"");

	/* No message: an empty one; and every output is optional. */
	assert_int_equal(reload_status_write(f->dir, 5, true, NULL), 0);
	assert_int_equal(reload_status_read(f->dir, &generation, NULL, message, sizeof(message)),
			 0);
	assert_int_equal(generation, 5);
	assert_string_equal(message, "");
	assert_int_equal(reload_status_read(f->dir, NULL, NULL, NULL, 0), 0);
	assert_int_equal(count_entries(f->dir), 1);
}

static void
test_no_dir(void **state)
{
	struct fixture *f = *state;

	/* No $RUNTIME_DIRECTORY: nothing to write, and that is fine. */
	assert_int_equal(reload_status_write(NULL, 1, true, "x"), 0);
	assert_int_equal(reload_status_write("", 1, true, "x"), 0);
	assert_int_equal(reload_status_read(NULL, NULL, NULL, NULL, 0), -EINVAL);
	assert_int_equal(reload_status_read("", NULL, NULL, NULL, 0), -EINVAL);
	assert_int_equal(count_entries(f->dir), 0);

	assert_int_equal(reload_status_write("/nonexistent/echod", 1, true, "x"), -ENOENT);
}

static void
test_missing_file(void **state)
{
	struct fixture *f = *state;
	unsigned long long generation = 42;
	bool ok = true;
	char message[16] = "untouched";

	assert_int_equal(reload_status_read(f->dir, &generation, &ok, message, sizeof(message)),
			 -ENOENT);
	assert_int_equal(generation, 42);
	assert_true(ok);
	assert_string_equal(message, "untouched");
}

static void
test_atomic_replace(void **state)
{
	struct fixture *f = *state;
	struct stat before, after;
	char text[512];
	int fd;

	assert_int_equal(reload_status_write(f->dir, 1, true, "first"), 0);
	assert_int_equal(stat(f->path, &before), 0);
	fd = open(f->path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);

	assert_int_equal(reload_status_write(f->dir, 2, false, "second"), 0);
	assert_int_equal(stat(f->path, &after), 0);

	/* A new file took the name: a reader that had the old one open still
	 * reads the whole old answer, never a mix of both. */
	assert_true(before.st_ino != after.st_ino);
	{
		ssize_t n = read(fd, text, sizeof(text) - 1);

		assert_true(n > 0);
		text[n] = '\0';
	}
	assert_non_null(strstr(text, "generation=1\n"));
	assert_non_null(strstr(text, "message=first\n"));
	assert_int_equal(close(fd), 0);

	read_text(f->path, text, sizeof(text));
	assert_non_null(strstr(text, "generation=2\n"));
	assert_non_null(strstr(text, "result=rejected\n"));
	assert_int_equal(count_entries(f->dir), 1);
}

static void
test_long_message_cut(void **state)
{
	struct fixture *f = *state;
	char message[RELOAD_MESSAGE_MAX + 100], got[RELOAD_MESSAGE_MAX + 100], small[8];

	memset(message, 'm', sizeof(message) - 1);
	message[sizeof(message) - 1] = '\0';
	assert_int_equal(reload_status_write(f->dir, 1, false, message), 0);
	assert_int_equal(reload_status_read(f->dir, NULL, NULL, got, sizeof(got)), 0);
	assert_int_equal(strlen(got), RELOAD_MESSAGE_MAX);

	/* Cut to the caller's buffer too. */
	assert_int_equal(reload_status_read(f->dir, NULL, NULL, small, sizeof(small)), 0);
	assert_string_equal(small, "mmmmmmm");
}

static void
test_bad_files(void **state)
{
	static const char *const bad[] = {
	    "",
	    "garbage\n",
	    "generation=1\n",				    /* no result */
	    "result=ok\n",				    /* no generation */
	    "generation=1\nresult=ok",			    /* cut short */
	    "generation=x\nresult=ok\n",		    /* not a number */
	    "generation=-1\nresult=ok\n",		    /* strtoull() would take it */
	    "generation= 1\nresult=ok\n",		    /* and this */
	    "generation=1x\nresult=ok\n",		    /* trailing junk */
	    "generation=18446744073709551616\nresult=ok\n", /* overflow */
	    "generation=1\nresult=maybe\n",
	    "generation=1\npid=0\nresult=ok\n",
	};
	struct fixture *f = *state;
	unsigned long long generation = 42;
	char big[RELOAD_MESSAGE_MAX + 1024];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_text(f->path, bad[i]);
		assert_int_equal(reload_status_read(f->dir, &generation, NULL, NULL, 0), -EBADMSG);
		assert_int_equal(generation, 42);
	}

	/* Larger than anything reload_status_write() makes. */
	memset(big, 'x', sizeof(big) - 2);
	memcpy(big, "generation=1\nresult=ok\nmessage=", 31);
	big[sizeof(big) - 2] = '\n';
	big[sizeof(big) - 1] = '\0';
	write_text(f->path, big);
	assert_int_equal(reload_status_read(f->dir, &generation, NULL, NULL, 0), -EBADMSG);

	/* Keys from a later version are ignored; the order does not matter. */
	write_text(f->path, "result=ok\nfuture=1\ngeneration=7\n");
	assert_int_equal(reload_status_read(f->dir, &generation, NULL, NULL, 0), 0);
	assert_int_equal(generation, 7);
}

/* --- the client, against a fake supervisor --- */

enum behaviour {
	ANSWER_OK,
	ANSWER_REJECTED,
	ANSWER_NEVER, /* takes the signal, says nothing */
	EXIT,	      /* dies of the reload without answering */
};

/* Forks a process that, like the supervisor, has SIGHUP blocked (so it
 * waits for the signal instead of dying of it) and writes its starting
 * generation (start_generation < 0: writes nothing), then answers one
 * SIGHUP as told. Returns once the child is ready for the signal. */
static pid_t
spawn_supervisor(const char *dir, long long start_generation, enum behaviour b)
{
	sigset_t hup, old;
	int ready[2];
	char c = 0;
	pid_t pid;

	sigemptyset(&hup);
	sigaddset(&hup, SIGHUP);
	assert_int_equal(sigprocmask(SIG_BLOCK, &hup, &old), 0);
	assert_int_equal(pipe2(ready, O_CLOEXEC), 0);

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		unsigned long long next = start_generation < 0 ? 1 : start_generation + 1;

		close(ready[0]);
		if (start_generation >= 0 &&
		    reload_status_write(dir, start_generation, true, "started") < 0)
			_exit(2);
		if (write(ready[1], &c, 1) != 1)
			_exit(3);
		if (sigwaitinfo(&hup, NULL) != SIGHUP)
			_exit(4);
		switch (b) {
		case ANSWER_OK:
			_exit(reload_status_write(dir, next, true,
						  "configuration generation 2 loaded") < 0);
		case ANSWER_REJECTED:
			_exit(reload_status_write(
				  dir, next, false,
				  "/etc/echod/echod.conf:3: unknown key \"Modle\"") < 0);
		case ANSWER_NEVER:
			sleep(30); /* killed by reap() long before */
			_exit(0);
		case EXIT:
			_exit(0);
		}
		_exit(5);
	}

	assert_int_equal(sigprocmask(SIG_SETMASK, &old, NULL), 0);
	close(ready[1]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	return pid;
}

/* Waits for a child that answered: it may still be on its way out after
 * the rename the client saw, so it must not be killed. Returns its exit
 * status (0: it wrote its answer), -1 when it died otherwise. */
static int
wait_exit(pid_t pid)
{
	int status;

	if (waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Ends a child that will never exit on its own. */
static void
reap(pid_t pid)
{
	(void)kill(pid, SIGKILL);
	(void)waitpid(pid, NULL, 0);
}

static void
test_request_ok(void **state)
{
	struct fixture *f = *state;
	unsigned long long generation;
	char message[256];
	pid_t pid;

	pid = spawn_supervisor(f->dir, 1, ANSWER_OK);
	assert_int_equal(reload_request(pid, f->dir, 5000, message, sizeof(message)), 0);
	assert_string_equal(message, "configuration generation 2 loaded");
	assert_int_equal(wait_exit(pid), 0);

	assert_int_equal(reload_status_read(f->dir, &generation, NULL, NULL, 0), 0);
	assert_int_equal(generation, 2);
}

static void
test_request_rejected(void **state)
{
	struct fixture *f = *state;
	char message[256];
	pid_t pid;

	pid = spawn_supervisor(f->dir, 1, ANSWER_REJECTED);
	assert_int_equal(reload_request(pid, f->dir, 5000, message, sizeof(message)), -EINVAL);
	assert_string_equal(message, "/etc/echod/echod.conf:3: unknown key \"Modle\"");
	assert_int_equal(wait_exit(pid), 0);
}

static void
test_request_no_file_yet(void **state)
{
	struct fixture *f = *state;
	char message[256];
	pid_t pid;

	/* A missing file is generation 0; the answer is generation 1. */
	pid = spawn_supervisor(f->dir, -1, ANSWER_OK);
	assert_int_equal(reload_request(pid, f->dir, 5000, message, sizeof(message)), 0);
	assert_int_equal(wait_exit(pid), 0);
}

static void
test_request_ignores_another_pids_file(void **state)
{
	struct fixture *f = *state;
	char message[256];
	pid_t pid;

	/* Left by an earlier supervisor with a higher count than the new one
	 * will ever reach soon: the new one's answer must still be taken. */
	pid = spawn_supervisor(f->dir, -1, ANSWER_OK);
	assert_int_equal(reload_status_write(f->dir, 7, true, "an older echod"), 0);
	assert_int_equal(reload_request(pid, f->dir, 5000, message, sizeof(message)), 0);
	assert_string_equal(message, "configuration generation 2 loaded");
	assert_int_equal(wait_exit(pid), 0);
}

static void
test_request_over_foreign_file(void **state)
{
	struct fixture *f = *state;
	char message[256];
	pid_t pid;

	/* Not ours to judge: the supervisor's answer will replace it. */
	pid = spawn_supervisor(f->dir, -1, ANSWER_OK);
	write_text(f->path, "garbage\n");
	assert_int_equal(reload_request(pid, f->dir, 5000, message, sizeof(message)), 0);
	assert_int_equal(wait_exit(pid), 0);
}

static void
test_request_timeout(void **state)
{
	struct fixture *f = *state;
	char message[256];
	uint64_t start, elapsed;
	pid_t pid;

	pid = spawn_supervisor(f->dir, 1, ANSWER_NEVER);
	start = now_msec();
	assert_int_equal(reload_request(pid, f->dir, 150, message, sizeof(message)), -ETIMEDOUT);
	elapsed = now_msec() - start;
	assert_true(elapsed >= 150);
	assert_true(elapsed < 2000);
	assert_non_null(strstr(message, "no answer"));
	reap(pid);

	/* A timeout of 0: one look, no wait. */
	pid = spawn_supervisor(f->dir, 1, ANSWER_NEVER);
	assert_int_equal(reload_request(pid, f->dir, 0, NULL, 0), -ETIMEDOUT);
	reap(pid);
}

static void
test_request_dead_pid(void **state)
{
	struct fixture *f = *state;
	char message[256];
	pid_t pid;

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	assert_int_equal(waitpid(pid, NULL, 0), pid);

	assert_int_equal(reload_request(pid, f->dir, 1000, message, sizeof(message)), -ESRCH);
	assert_non_null(strstr(message, "no process"));
}

static void
test_request_supervisor_dies(void **state)
{
	struct fixture *f = *state;
	char message[256];
	uint64_t start;
	pid_t pid;

	/* No zombie to keep the pid alive: it is gone as soon as it exits. */
	assert_true(signal(SIGCHLD, SIG_IGN) != SIG_ERR);
	pid = spawn_supervisor(f->dir, 1, EXIT);
	start = now_msec();
	assert_int_equal(reload_request(pid, f->dir, 10000, message, sizeof(message)), -ESRCH);
	assert_true(now_msec() - start < 5000);
	assert_non_null(strstr(message, "exited"));
	/* Already reaped by the kernel: nothing to wait for, and killing the
	 * pid now could hit a stranger that reused it. */
	assert_true(signal(SIGCHLD, SIG_DFL) != SIG_ERR);
}

static void
test_request_bad_arguments(void **state)
{
	struct fixture *f = *state;
	char message[256];

	/* kill(0, SIGHUP) would hit this very test; that it is still running
	 * is half the check. */
	assert_int_equal(reload_request(0, f->dir, 100, message, sizeof(message)), -EINVAL);
	assert_non_null(strstr(message, "not a process ID"));
	assert_int_equal(reload_request(-1, f->dir, 100, NULL, 0), -EINVAL);
	assert_int_equal(reload_request(-getpgrp(), f->dir, 100, NULL, 0), -EINVAL);
	assert_int_equal(reload_request(getpid(), NULL, 100, message, sizeof(message)), -EINVAL);
	assert_non_null(strstr(message, "RUNTIME_DIRECTORY"));
	assert_int_equal(reload_request(getpid(), "", 100, NULL, 0), -EINVAL);
	assert_int_equal(reload_request(getpid(), f->dir, -1, NULL, 0), -EINVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_round_trip, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_no_dir, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_missing_file, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_atomic_replace, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_long_message_cut, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_bad_files, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_request_ok, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_request_rejected, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_request_no_file_yet, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_request_ignores_another_pids_file, setup_dir,
					    teardown_dir),
	    cmocka_unit_test_setup_teardown(test_request_over_foreign_file, setup_dir,
					    teardown_dir),
	    cmocka_unit_test_setup_teardown(test_request_timeout, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_request_dead_pid, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_request_supervisor_dies, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_request_bad_arguments, setup_dir, teardown_dir),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
