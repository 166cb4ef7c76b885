/* The datagram that starts echod is echoed.
 *
 * Under socket activation the first datagram arrives before echod runs:
 * it waits in the socket while systemd starts the service, and echod
 * turns IP_PKTINFO on only after it was queued. The client sends it once
 * and waits; nothing is retried, as a user's first probe after boot is
 * not. With TCP and UDP passed together (as echod.socket does) and with
 * a UDP socket alone (systemd-socket-activate --datagram), per model. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#define ANSWER_MS 10000

static struct echod *running;

static int
teardown(void **state)
{
	(void)state;
	if (running)
		echod_kill(running);
	running = NULL;
	return 0;
}

static struct sockaddr_in
loopback(int port)
{
	return (struct sockaddr_in){
		.sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
}

static int
bound_socket(int type, int port)
{
	struct sockaddr_in a = loopback(port);
	int one = 1;
	int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		return close(fd), -1;
	if (type == SOCK_STREAM)
		assert_int_equal(listen(fd, 128), 0);
	return fd;
}

/* Sends one datagram from a client socket of its own; returns the client. */
static int
send_once(int port, const char *text)
{
	struct sockaddr_in to = loopback(port);
	int fd = bound_socket(SOCK_DGRAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(sendto(fd, text, strlen(text), 0, (struct sockaddr *)&to, sizeof(to)),
			 (ssize_t)strlen(text));
	return fd;
}

static void
assert_answered(struct echod *e, int client, const char *text)
{
	char back[64];
	ssize_t n = -1;

	if (wait_readable(client, ANSWER_MS))
		n = recv(client, back, sizeof(back), MSG_DONTWAIT);
	if (n != (ssize_t)strlen(text) || memcmp(back, text, (size_t)n) != 0) {
		echod_collect_log(e);
		print_message("# the activating datagram got no echo in %d ms; echod said:\n%s",
			      ANSWER_MS, e->log);
		fail();
	}
}

/* As echod.socket passes them: a TCP listener and a UDP socket on one
 * port, the datagram already queued when echod starts. */
static void
test_activating_datagram_with_tcp(void **state)
{
	static struct echod e;
	int fds[2], port, client, tcp;

	(void)state;
	for (int tries = 0;; tries++) {
		port = free_port();
		fds[0] = bound_socket(SOCK_STREAM, port);
		fds[1] = bound_socket(SOCK_DGRAM, port);
		if (fds[0] >= 0 && fds[1] >= 0)
			break;
		if (fds[0] >= 0)
			close(fds[0]);
		if (fds[1] >= 0)
			close(fds[1]);
		assert_true(tries < 20);
	}
	client = send_once(port, "first probe");
	harness_pass_fds(fds, 2, "echod.socket:echod.socket");
	e.port = port;
	echod_spawn(&e, NULL,
		    (const char *[]){"--config", "/dev/null", "--model", harness_model(), NULL},
		    -1);
	running = &e;
	close(fds[0]);
	close(fds[1]);
	assert_answered(&e, client, "first probe");
	tcp = tcp_connect(port);
	assert_true(tcp >= 0);
	assert_int_equal(echo_roundtrip(tcp, "tcp too", 7, ANSWER_MS), 0);
	close(tcp);
	close(client);
	running = NULL;
	assert_int_equal(echod_stop(&e, 15000), 0);
}

/* systemd-socket-activate --datagram: echod starts when the datagram
 * comes. */
static void
test_activating_datagram_alone(void **state)
{
	static struct echod e;
	int client;

	(void)state;
	echod_start_activated(&e, (const char *[]){"--datagram", NULL}, NULL);
	running = &e;
	/* Once the activator has bound the socket, not before: a datagram
	 * to a port nobody holds yet is gone. */
	assert_true(echod_wait_log(&e, "Listening on", 5000));
	client = send_once(e.port, "wake up");
	assert_answered(&e, client, "wake up");
	/* And the ones after it. */
	struct sockaddr_in to = loopback(e.port);
	assert_int_equal(sendto(client, "again", 5, 0, (struct sockaddr *)&to, sizeof(to)), 5);
	assert_answered(&e, client, "again");
	close(client);
	running = NULL;
	assert_int_equal(echod_stop(&e, 15000), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_activating_datagram_with_tcp, teardown),
	    cmocka_unit_test_teardown(test_activating_datagram_alone, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
