/* Every kind of listener, in the model $ECHOD_MODEL: IPv4 (the harness's),
 * IPv6, a UNIX socket file, an abstract UNIX socket, UDP over IPv6. Each
 * echoes; the socket file is removed on exit, the abstract one needs no
 * removing. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

static void
assert_stream_echoes(int fd, const char *what)
{
	char data[4096];

	if (fd < 0)
		fail_msg("%s: cannot connect", what);
	fill_random(data, sizeof(data), (unsigned)strlen(what));
	if (echo_roundtrip(fd, data, sizeof(data), 3000) != 0)
		fail_msg("%s: no echo", what);
	close(fd);
}

static void
assert_udp6_echoes(int port)
{
	struct sockaddr_in6 to = {.sin6_family = AF_INET6,
				  .sin6_port = htons((uint16_t)port),
				  .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	char back[16];
	int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(sendto(fd, "dgram6", 6, 0, (struct sockaddr *)&to, sizeof(to)), 6);
	if (!wait_readable(fd, 3000) || recv(fd, back, sizeof(back), 0) != 6 ||
	    memcmp(back, "dgram6", 6) != 0)
		fail_msg("udp:[::1]:%d: no echo", port);
	close(fd);
}

static void
test_every_listener(void **state)
{
	char path[108], abstract[64], unix_listen[128], abstract_listen[80], v6[64], udp6[64];
	bool v6_ok = ipv6_loopback_available();
	int port6 = free_port(), uport6 = free_port();
	const char *args[16];
	size_t n = 0;
	struct echod e;

	snprintf(path, sizeof(path), "/tmp/echod-test-%d-listeners.sock", (int)getpid());
	unlink(path);
	snprintf(abstract, sizeof(abstract), "@echod-test-%d-%s", (int)getpid(), harness_model());
	snprintf(unix_listen, sizeof(unix_listen), "unix:%s", path);
	snprintf(abstract_listen, sizeof(abstract_listen), "unix:%s", abstract);
	snprintf(v6, sizeof(v6), "[::1]:%d", port6);
	snprintf(udp6, sizeof(udp6), "udp:[::1]:%d", uport6);
	args[n++] = "--workers";
	args[n++] = "2";
	args[n++] = "--listen";
	args[n++] = unix_listen;
	args[n++] = "--listen";
	args[n++] = abstract_listen;
	if (v6_ok) {
		args[n++] = "--listen";
		args[n++] = v6;
		args[n++] = "--listen";
		args[n++] = udp6;
	} else {
		print_message("# no IPv6 loopback here: the IPv6 listeners are not tried\n");
	}
	args[n] = NULL;
	echod_start(&e, args);

	assert_stream_echoes(tcp_connect(e.port), "127.0.0.1");
	assert_stream_echoes(unix_connect(path), unix_listen);
	assert_stream_echoes(unix_connect(abstract), abstract_listen);
	if (v6_ok) {
		assert_stream_echoes(tcp6_connect(port6), v6);
		assert_udp6_echoes(uport6);
	}
	assert_int_equal(echod_stop(&e, 10000), 0);
	assert_int_equal(access(path, F_OK), -1);
	/* Gone with echod: nothing answers on the abstract name. */
	assert_true(unix_connect(abstract) < 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_every_listener, harness_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
