/* AllowFrom= and DenyFrom=, end to end in the model $ECHOD_MODEL: clients
 * bound to distinct 127.x addresses, TCP and UDP, refusals counted in
 * STATUS= and logged, and a reload that changes the lists closing the
 * connections the new lists refuse. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

struct fixture {
	struct echod e;
	struct notify_socket n;
	char conf[64];
	int udp_port;
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	snprintf(f->conf, sizeof(f->conf), "/tmp/echod-test-access-%d.conf", (int)getpid());
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	if (f->e.pid > 0)
		echod_kill(&f->e);
	notify_socket_close(&f->n);
	unlink(f->conf);
	free(f);
	return 0;
}

/* echod on 127.0.0.1 (TCP, and UDP on udp_port) with the lists in text. */
static void
start(struct fixture *f, const char *lists)
{
	char config[512], udp[64];

	snprintf(config, sizeof(config), "[echod]\nWorkers=2\n%s", lists);
	harness_write_config(f->conf, config);
	f->udp_port = free_port();
	snprintf(udp, sizeof(udp), "udp:127.0.0.1:%d", f->udp_port);
	notify_socket_open(&f->n);
	echod_start_env(&f->e, (const char *[]){f->n.env, NULL},
			(const char *[]){"--config", f->conf, "--listen", udp, NULL});
	assert_non_null(notify_status_wait(&f->n, " 0 connections,", 5000));
}

static int
served_from(struct fixture *f, const char *src)
{
	int fd = tcp_connect_from(src, f->e.port);

	if (fd < 0)
		fail_msg("connecting from %s: %s", src, strerror(errno));
	if (echo_roundtrip(fd, "let me in", 9, 3000) != 0)
		fail_msg("a connection from %s got no echo", src);
	return fd;
}

static void
refused_from(struct fixture *f, const char *src)
{
	int fd = tcp_connect_from(src, f->e.port);

	if (fd < 0)
		fail_msg("connecting from %s: %s", src, strerror(errno));
	/* Accepted and closed at once: the client learns it now. */
	(void)!write(fd, "let me in", 9);
	if (!closed_by_peer(fd, 3000))
		fail_msg("a connection from %s was not closed", src);
	close(fd);
}

/* Sends one datagram from src; whether its echo came back within ms. */
static bool
datagram_echoed(const struct fixture *f, const char *src, int ms)
{
	struct sockaddr_in from = {.sin_family = AF_INET};
	struct sockaddr_in to = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)f->udp_port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	char back[32];
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	bool echoed;

	assert_true(fd >= 0);
	assert_int_equal(inet_pton(AF_INET, src, &from.sin_addr), 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&from, sizeof(from)), 0);
	assert_int_equal(sendto(fd, "dgram", 5, 0, (struct sockaddr *)&to, sizeof(to)), 5);
	echoed = wait_readable(fd, ms) && recv(fd, back, sizeof(back), MSG_DONTWAIT) == 5;
	close(fd);
	return echoed;
}

static void
test_tcp(void **state)
{
	struct fixture *f = *state;
	int fds[2];

	/* The harness's readiness probe comes from 127.0.0.1. */
	start(f, "AllowFrom=127.0.0.1 127.0.0.2\nAllowFrom=127.0.0.4/30\n"
		 "DenyFrom=127.0.0.6/31\n");
	fds[0] = served_from(f, "127.0.0.2");
	fds[1] = served_from(f, "127.0.0.5");
	refused_from(f, "127.0.0.3"); /* in no allow prefix */
	refused_from(f, "127.0.0.6"); /* allowed, but denied: deny wins */
	refused_from(f, "127.0.0.7");
	refused_from(f, "127.0.0.8");
	assert_non_null(notify_status_wait(&f->n, " 4 refused,", 5000));
	assert_true(echod_wait_log(&f->e, "by AllowFrom=/DenyFrom= (4 in all)", 8000));
	/* Not to be taken for the per-source limit. */
	assert_int_equal(echod_log_count(&f->e, "MaxConnectionsPerSource"), 0);
	/* Those let in are served all the while. */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(echo_roundtrip(fds[i], "still", 5, 3000), 0);
		close(fds[i]);
	}
	assert_int_equal(echod_stop(&f->e, 10000), 0);
	f->e.pid = 0;
}

static void
test_udp(void **state)
{
	struct fixture *f = *state;

	start(f, "DenyFrom=127.0.0.3\n");
	assert_true(datagram_echoed(f, "127.0.0.2", 3000));
	/* No echo for a denied source, however long one waits... */
	assert_false(datagram_echoed(f, "127.0.0.3", 500));
	assert_false(datagram_echoed(f, "127.0.0.3", 500));
	/* ...counted as dropped, and said why. */
	assert_non_null(notify_status_wait(&f->n, "/2 dropped", 5000));
	/* Each worker says what it dropped, at most every few seconds: the
	 * first drop is said at once, by whichever worker took it. */
	assert_true(echod_wait_log(&f->e, " refused by AllowFrom=/DenyFrom=", 8000));
	assert_int_equal(echod_log_count(&f->e, " 0 refused by AllowFrom=/DenyFrom="), 0);
	assert_true(datagram_echoed(f, "127.0.0.2", 3000));
	assert_int_equal(echod_stop(&f->e, 10000), 0);
	f->e.pid = 0;
}

/* A reload replaces the lists: a connection the new lists refuse is
 * closed, the others go on, and new clients meet the new lists. */
static void
test_reload(void **state)
{
	struct fixture *f = *state;
	int stays, goes;

	start(f, "DenyFrom=127.0.0.9\n");
	stays = served_from(f, "127.0.0.2");
	goes = served_from(f, "127.0.0.3");
	refused_from(f, "127.0.0.9");

	harness_write_config(f->conf, "[echod]\nWorkers=2\nDenyFrom=127.0.0.3\n");
	kill(f->e.pid, SIGHUP);
	assert_non_null(notify_status_wait(&f->n, " gen 1", 5000));
	if (!closed_by_peer(goes, 5000))
		fail_msg("the connection from 127.0.0.3, now denied, is still open after the reload");
	close(goes);
	assert_int_equal(echo_roundtrip(stays, "after", 5, 3000), 0);
	refused_from(f, "127.0.0.3");
	close(served_from(f, "127.0.0.9"));
	close(stays);
	assert_int_equal(echod_stop(&f->e, 10000), 0);
	f->e.pid = 0;
}

/* A bad prefix is a configuration error that names file, line and word. */
static void
test_bad_prefix(void **state)
{
	struct fixture *f = *state;
	struct echod e;
	int status;

	harness_write_config(f->conf, "[echod]\nAllowFrom=10.0.0.0/8\nDenyFrom=10.1.2.3/16\n");
	status = echod_run(&e, (const char *[]){"--config", f->conf, "--check-config", NULL}, 5000);
	echod_collect_log(&e);
	assert_int_equal(status, 2);
	if (!strstr(e.log, ":3: DenyFrom=10.1.2.3/16: \"10.1.2.3/16\": address bits set beyond "
			   "the /16 prefix"))
		fail_msg("unexpected message: %s", e.log);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_tcp, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_udp, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_prefix, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
