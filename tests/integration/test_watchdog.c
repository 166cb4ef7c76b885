/* The watchdog under load: a healthy echod never comes near its deadline.
 *
 * With WATCHDOG_USEC=1000000, three workers, a busy-loop competitor for
 * the CPU and a bulk client keeping the workers busy for 10 s, every gap
 * between two WATCHDOG=1 pings is at most half the interval, and no
 * worker is taken for stuck. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#define RUN_MS 10000
#define INTERVAL_MS 1000

static struct echod e;
static struct notify_socket n;
static bool started;
static pid_t competitor;

static int
teardown(void **state)
{
	(void)state;
	if (competitor > 0) {
		kill(competitor, SIGKILL);
		waitpid(competitor, NULL, 0);
		competitor = 0;
	}
	if (started) {
		echod_kill(&e);
		notify_socket_close(&n);
		started = false;
	}
	return 0;
}

struct bulk {
	int port;
	volatile bool stop;
	uint64_t bytes; /* echoed and checked */
	bool failed;
};

/* One connection, sending and reading back as fast as it goes. */
static void *
bulk_run(void *arg)
{
	struct bulk *b = arg;
	static char out[256 << 10], in[256 << 10];
	int fd = tcp_connect(b->port);

	if (fd < 0) {
		b->failed = true;
		return NULL;
	}
	fill_random(out, sizeof(out), 1);
	while (!b->stop) {
		if (echo_roundtrip(fd, out, sizeof(out), 10000) != 0) {
			b->failed = true;
			break;
		}
		b->bytes += sizeof(out);
	}
	(void)in;
	close(fd);
	return NULL;
}

static void
test_pings_keep_coming_under_load(void **state)
{
	char msg[4096];
	struct bulk b = {0};
	pthread_t thread;
	uint64_t last = 0, worst = 0, start, end;
	unsigned pings = 0;

	(void)state;
	notify_socket_open(&n);
	echod_start_env(&e, (const char *[]){n.env, "WATCHDOG_USEC=1000000", NULL},
			(const char *[]){"--workers", "3", NULL});
	started = true;
	competitor = fork();
	assert_true(competitor >= 0);
	if (competitor == 0)
		for (volatile unsigned long spin = 0;; spin++)
			;
	b.port = e.port;
	assert_int_equal(pthread_create(&thread, NULL, bulk_run, &b), 0);

	start = monotonic_ms();
	end = start + RUN_MS;
	while (monotonic_ms() < end) {
		struct pollfd p = {.fd = n.fd, .events = POLLIN};
		if (poll(&p, 1, (int)(end - monotonic_ms())) <= 0)
			continue;
		ssize_t len = recv(n.fd, msg, sizeof(msg) - 1, MSG_DONTWAIT);
		if (len <= 0)
			continue;
		msg[len] = '\0';
		if (!strstr(msg, "WATCHDOG=1"))
			continue;
		uint64_t now = monotonic_ms();
		/* The first gap counts from the start of the load. */
		uint64_t gap = now - (last ? last : start);
		if (gap > worst)
			worst = gap;
		last = now;
		pings++;
	}
	/* And the time since the last one. */
	if (monotonic_ms() - last > worst)
		worst = monotonic_ms() - last;
	b.stop = true;
	pthread_join(thread, NULL);
	kill(competitor, SIGKILL);
	waitpid(competitor, NULL, 0);
	competitor = 0;

	print_message("# %u pings in %d ms under load, longest gap %llu ms; %llu MiB echoed\n",
		      pings, RUN_MS, (unsigned long long)worst,
		      (unsigned long long)(b.bytes >> 20));
	assert_false(b.failed);
	echod_collect_log(&e);
	assert_null(strstr(e.log, "no progress"));
	assert_true(worst <= INTERVAL_MS / 2);
	started = false;
	assert_int_equal(echod_stop(&e, 15000), 0);
	notify_socket_close(&n);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_pings_keep_coming_under_load, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name(harness_model(), tests, NULL, NULL);
}
