/* Restart without systemd, in the model $ECHOD_MODEL: the test plays the
 * fd store. It gives echod connections the way systemd does after a
 * restart ($LISTEN_FDS with FDNAME "conn", "owed-<id>" memfds and the
 * "config" one, see src/lib/kept.h), and, the other way, takes what a
 * restarting echod stores (FDSTORE=1 on the test's own NOTIFY_SOCKET, after the
 * RESTART_SIGNAL that `echod --before-stop` would send) and starts a
 * second echod with it. The clients never notice. Runs sanitized too. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "kept.h"
#include "restart.h"

#define CLIENTS 4
#define STORE_MAX 64

/* A listening socket on 127.0.0.1, its port in *ret_port. */
static int
listener(int *ret_port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, 64), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*ret_port = ntohs(sin.sin_port);
	return fd;
}

/* A client connected to l, and the server's end of it (*ret_server). */
static int
connected_pair(int l, int port, int *ret_server)
{
	int client = tcp_connect(port);

	assert_true(client >= 0);
	*ret_server = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(*ret_server >= 0);
	return client;
}

/* What echod put into the store: fds and their FDNAME=. */
struct store {
	int fds[STORE_MAX];
	char names[STORE_MAX][KEPT_NAME_MAX];
	size_t n;
};

static void
store_close(struct store *st)
{
	for (size_t i = 0; i < st->n; i++)
		close(st->fds[i]);
	st->n = 0;
}

/* Reads notify messages until echod (pid) has exited, keeping the fds of
 * every FDSTORE=1 message with the name it gives them. */
static void
store_receive(int notify_fd, pid_t pid, struct store *st, int timeout_ms)
{
	uint64_t end = monotonic_ms() + (uint64_t)timeout_ms;
	bool exited = false;

	while (monotonic_ms() < end) {
		char text[4096], name[KEPT_NAME_MAX] = "";
		union {
			char buf[CMSG_SPACE(sizeof(int) * KEPT_BATCH_MAX)];
			struct cmsghdr align;
		} control;
		struct iovec iov = {.iov_base = text, .iov_len = sizeof(text) - 1};
		struct msghdr msg = {.msg_iov = &iov,
				     .msg_iovlen = 1,
				     .msg_control = control.buf,
				     .msg_controllen = sizeof(control.buf)};
		struct pollfd p = {.fd = notify_fd, .events = POLLIN};
		const char *fdname;
		ssize_t n;

		if (poll(&p, 1, 50) <= 0) {
			if (exited)
				return;
			exited = waitpid(pid, NULL, WNOHANG) == pid;
			continue;
		}
		n = recvmsg(notify_fd, &msg, MSG_CMSG_CLOEXEC);
		if (n < 0)
			continue;
		text[n] = '\0';
		fdname = strstr(text, "FDNAME=");
		if (fdname) {
			size_t len = strcspn(fdname + 7, "\n");

			if (len >= sizeof(name))
				fail_msg("FDNAME= longer than a kept name: %s", fdname);
			memcpy(name, fdname + 7, len);
			name[len] = '\0';
		}
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			int *fds = (int *)CMSG_DATA(c);

			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			for (size_t i = 0; i < k; i++) {
				if (!strstr(text, "FDSTORE=1") || st->n == STORE_MAX) {
					close(fds[i]);
					continue;
				}
				st->fds[st->n] = fds[i];
				snprintf(st->names[st->n], KEPT_NAME_MAX, "%s", name);
				st->n++;
			}
		}
	}
	fail_msg("echod did not exit within %d ms of SIGTERM", timeout_ms);
}

/* How many of the stored fds are named name. */
static size_t
store_count(const struct store *st, const char *name)
{
	size_t n = 0;

	for (size_t i = 0; i < st->n; i++)
		n += strcmp(st->names[i], name) == 0;
	return n;
}

/* Starts echod with fds at 3, 4, ... named by names (colon-separated),
 * telling systemd things on n. */
static void
start_with(struct echod *e, struct notify_socket *n, const int *fds, size_t k, const char *names,
	   int port)
{
	harness_pass_fds(fds, k, names);
	e->port = port;
	echod_spawn(e, (const char *[]){n->env, NULL},
		    (const char *[]){"--config", "/dev/null", "--model", harness_model(),
				     "--workers", "2", NULL},
		    -1);
	assert_non_null(notify_status_wait(n, " connections,", 5000));
}

/* As after a restart: every "conn" is served again, its owed bytes first;
 * kept connections are not counted served a second time. */
static void
test_takes_back_connections(void **state)
{
	int port, tmp_port, l = listener(&port), tmp = listener(&tmp_port);
	int clients[CLIENTS], fds[1 + 2 * CLIENTS];
	char names[512] = "echod.socket", owed[CLIENTS][32];
	struct notify_socket n;
	struct echod e;
	size_t k = 0;

	fds[k++] = l;
	for (int i = 0; i < CLIENTS; i++) {
		char name[KEPT_NAME_MAX];
		uint64_t id;
		int server;

		clients[i] = connected_pair(tmp, tmp_port, &server);
		fds[k++] = server;
		strcat(names, ":" KEPT_CONN_NAME);
		/* Every other one owes bytes its client sent before the restart. */
		if (i % 2 == 0) {
			int memfd;

			snprintf(owed[i], sizeof(owed[i]), "owed to client %d", i);
			assert_int_equal(
			    kept_owed_pack(server, owed[i], strlen(owed[i]), &id, &memfd), 0);
			kept_owed_name(id, name, sizeof(name));
			fds[k++] = memfd;
			strcat(names, ":");
			strcat(names, name);
		}
	}
	notify_socket_open(&n);
	start_with(&e, &n, fds, k, names, port);
	for (size_t i = 1; i < k; i++)
		close(fds[i]);
	assert_true(echod_wait_log(&e, "took back 4 connection(s) from systemd's fd store, 2 of "
				       "them owing",
				   5000));
	for (int i = 0; i < CLIENTS; i++) {
		char got[64];

		if (i % 2 == 0) {
			/* The owed bytes come first, before anything sent now. */
			assert_true(wait_readable(clients[i], 3000));
			assert_int_equal(recv(clients[i], got, strlen(owed[i]), MSG_WAITALL),
					 (ssize_t)strlen(owed[i]));
			assert_memory_equal(got, owed[i], strlen(owed[i]));
		}
		assert_int_equal(echo_roundtrip(clients[i], "after", 5, 3000), 0);
	}
	/* Open again, but served once, where they were first accepted. */
	assert_non_null(notify_status_wait(&n, " 4 connections, 0 served,", 5000));
	/* A new client alongside. */
	int fresh = tcp_connect(port);
	assert_int_equal(echo_roundtrip(fresh, "new", 3, 3000), 0);
	close(fresh);
	for (int i = 0; i < CLIENTS; i++)
		close(clients[i]);
	assert_int_equal(echod_stop(&e, 10000), 0);
	close(l);
	close(tmp);
	notify_socket_close(&n);
}

/* Owed bytes that belong to no connection in the store are closed; a
 * memfd that is not ours under the name of a connection's owed bytes is
 * said and ignored. The connection is served all the same. */
static void
test_bad_owed_entries(void **state)
{
	int port, tmp_port, l = listener(&port), tmp = listener(&tmp_port);
	int server, other, client, orphan_client, fds[4], orphan, bogus;
	char names[256], orphan_name[KEPT_NAME_MAX], bogus_name[KEPT_NAME_MAX];
	struct notify_socket n;
	struct echod e;
	uint64_t id;

	client = connected_pair(tmp, tmp_port, &server);
	orphan_client = connected_pair(tmp, tmp_port, &other);
	/* Owed bytes of a connection that is not in the store. */
	assert_int_equal(kept_owed_pack(other, "lost", 4, &id, &orphan), 0);
	kept_owed_name(id, orphan_name, sizeof(orphan_name));
	/* Someone else's memfd, unsealed, under the name of server's owed
	 * bytes. */
	assert_int_equal(kept_socket_id(server, &id), 0);
	kept_owed_name(id, bogus_name, sizeof(bogus_name));
	bogus = memfd_create("not-ours", MFD_CLOEXEC);
	assert_true(bogus >= 0);
	assert_int_equal(write(bogus, "garbage", 7), 7);
	fds[0] = l;
	fds[1] = server;
	fds[2] = orphan;
	fds[3] = bogus;
	snprintf(names, sizeof(names), "echod.socket:%s:%s:%s", KEPT_CONN_NAME, orphan_name,
		 bogus_name);
	notify_socket_open(&n);
	start_with(&e, &n, fds, 4, names, port);
	close(server);
	close(orphan);
	close(bogus);
	close(other);
	assert_true(echod_wait_log(&e,
				   "took back 1 connection(s) from systemd's fd store, 1 of them "
				   "owing bytes; some entries were stale and are closed",
				   5000));
	assert_true(echod_wait_log(&e, "reading the bytes owed on a kept connection", 5000));
	assert_int_equal(echo_roundtrip(client, "fine", 4, 3000), 0);
	close(client);
	close(orphan_client);
	assert_int_equal(echod_stop(&e, 10000), 0);
	close(l);
	close(tmp);
	notify_socket_close(&n);
}

/* The whole round: a restarting echod stores its connections (with what
 * it owes), a second one takes them back, and each client goes on. */
static void
test_restart_round_trip(void **state)
{
	int port, l = listener(&port), clients[CLIENTS], fds[STORE_MAX + 1];
	char names[STORE_MAX * (KEPT_NAME_MAX + 1) + 32] = "echod.socket";
	struct notify_socket n1, n2;
	struct store st = {0};
	union sigval value = {.sival_int = STORE_MAX};
	struct echod first, second;

	notify_socket_open(&n1);
	start_with(&first, &n1, &l, 1, "echod.socket", port);
	for (int i = 0; i < CLIENTS; i++) {
		clients[i] = tcp_connect(port);
		assert_int_equal(echo_roundtrip(clients[i], "before", 6, 3000), 0);
	}
	assert_non_null(notify_status_wait(&n1, " 4 connections,", 5000));
	/* What `echod --before-stop` sends when systemd says "restart". */
	assert_int_equal(sigqueue(first.pid, RESTART_SIGNAL, value), 0);
	usleep(100000);
	kill(first.pid, SIGTERM);
	store_receive(n1.fd, first.pid, &st, 15000);
	echod_collect_log(&first);
	if (!strstr(first.log, "restart: keeping 4 connection(s)"))
		fail_msg("the first echod did not keep its connections: %s", first.log);
	assert_int_equal(store_count(&st, KEPT_CONN_NAME), CLIENTS);
	assert_int_equal(store_count(&st, KEPT_CONFIG_NAME), 1);
	assert_int_equal(st.n, CLIENTS + 1);

	fds[0] = l;
	for (size_t i = 0; i < st.n; i++) {
		fds[1 + i] = st.fds[i];
		strcat(names, ":");
		strcat(names, st.names[i]);
	}
	notify_socket_open(&n2);
	start_with(&second, &n2, fds, 1 + st.n, names, port);
	store_close(&st);
	assert_true(echod_wait_log(&second, "took back 4 connection(s)", 5000));
	/* The file was fine: the kept configuration was not needed. */
	echod_collect_log(&second);
	if (strstr(second.log, "stale") || strstr(second.log, "previous echod ran"))
		fail_msg("the kept configuration was not simply dropped: %s", second.log);
	for (int i = 0; i < CLIENTS; i++) {
		assert_int_equal(echo_roundtrip(clients[i], "after", 5, 3000), 0);
		close(clients[i]);
	}
	assert_int_equal(echod_stop(&second, 10000), 0);
	close(l);
	notify_socket_close(&n1);
	notify_socket_close(&n2);
}

/* Connections from a balancer keep their client across a restart: a
 * socket named "proxy" is a proxy listener, each connection's record in
 * the store names the client its PROXY header did, and the next echod
 * applies its DenyFrom= to that client, not to the balancer. Without
 * ProxyFrom= such a socket is a configuration error. */
static void
test_proxied_restart(void **state)
{
	int port, l = listener(&port), clients[2], fds[STORE_MAX + 1], status;
	char names[STORE_MAX * (KEPT_NAME_MAX + 1) + 32] = "proxy", conf[64];
	struct notify_socket n1, n2;
	struct store st = {0};
	union sigval value = {.sival_int = STORE_MAX};
	struct echod first, second, bad;
	unsigned records = 0;

	snprintf(conf, sizeof(conf), "/tmp/echod-test-fdstore-%d.conf", (int)getpid());
	/* No ProxyFrom=: refused before anything starts. */
	harness_write_config(conf, "[echod]\n");
	harness_pass_fds(&l, 1, "proxy");
	echod_spawn(&bad, NULL, (const char *[]){"--config", conf, NULL}, -1);
	status = echod_wait_exit(&bad, 5000);
	echod_collect_log(&bad);
	assert_int_equal(status, 2);
	if (!strstr(bad.log, "named \"proxy\"") || !strstr(bad.log, "ProxyFrom="))
		fail_msg("unexpected message: %s", bad.log);

	harness_write_config(conf, "[echod]\nProxyFrom=127.0.0.1\n");
	notify_socket_open(&n1);
	harness_pass_fds(&l, 1, "proxy");
	first.port = port;
	echod_spawn(&first, (const char *[]){n1.env, NULL},
		    (const char *[]){"--config", conf, "--model", harness_model(), "--workers", "2",
				     NULL},
		    -1);
	assert_non_null(notify_status_wait(&n1, " connections,", 5000));
	for (int i = 0; i < 2; i++) {
		char header[64];
		int len = snprintf(header, sizeof(header), "PROXY TCP4 192.0.2.%d 127.0.0.1 9 7\r\n",
				   i + 1);

		clients[i] = tcp_connect(port);
		assert_int_equal(write(clients[i], header, (size_t)len), len);
		assert_int_equal(echo_roundtrip(clients[i], "before", 6, 3000), 0);
	}
	assert_non_null(notify_status_wait(&n1, " 2 connections,", 5000));
	assert_int_equal(sigqueue(first.pid, RESTART_SIGNAL, value), 0);
	usleep(100000);
	kill(first.pid, SIGTERM);
	store_receive(n1.fd, first.pid, &st, 15000);
	/* Each connection, a record naming its client, the configuration. */
	assert_int_equal(st.n, 5);
	assert_int_equal(store_count(&st, KEPT_CONFIG_NAME), 1);
	for (size_t i = 0; i < st.n; i++) {
		struct sockaddr_storage client;
		struct sockaddr_in *in = (struct sockaddr_in *)&client;
		socklen_t client_len = 0;
		char *data = NULL;
		size_t len = 0;
		uint64_t id;

		if (strcmp(st.names[i], KEPT_CONN_NAME) == 0 ||
		    strcmp(st.names[i], KEPT_CONFIG_NAME) == 0)
			continue;
		assert_int_equal(
		    kept_state_decode(st.fds[i], &id, &data, &len, &client, &client_len), 0);
		assert_int_equal(client_len, sizeof(*in));
		assert_int_equal(in->sin_family, AF_INET);
		assert_int_equal(ntohl(in->sin_addr.s_addr) & 0xffffff00, 0xc0000200);
		assert_int_equal(len, 0);
		free(data);
		records++;
	}
	assert_int_equal(records, 2);

	/* The next echod denies the second client, and only it. */
	harness_write_config(conf, "[echod]\nProxyFrom=127.0.0.1\nDenyFrom=192.0.2.2\n");
	fds[0] = l;
	for (size_t i = 0; i < st.n; i++) {
		fds[1 + i] = st.fds[i];
		strcat(names, ":");
		strcat(names, st.names[i]);
	}
	notify_socket_open(&n2);
	harness_pass_fds(fds, 1 + st.n, names);
	second.port = port;
	echod_spawn(&second, (const char *[]){n2.env, NULL},
		    (const char *[]){"--config", conf, "--model", harness_model(), "--workers", "2",
				     NULL},
		    -1);
	assert_non_null(notify_status_wait(&n2, " connections,", 5000));
	store_close(&st);
	assert_true(echod_wait_log(&second, "took back 2 connection(s)", 5000));
	assert_int_equal(echo_roundtrip(clients[0], "after", 5, 3000), 0);
	if (!closed_by_peer(clients[1], 3000))
		fail_msg("192.0.2.2, denied after the restart, is still served: its client was lost");
	for (int i = 0; i < 2; i++)
		close(clients[i]);
	assert_int_equal(echod_stop(&second, 10000), 0);
	close(l);
	unlink(conf);
	notify_socket_close(&n1);
	notify_socket_close(&n2);
}

/* Restarts the first echod into a second one with everything it stored
 * and the file conf: returns the second's notify socket and process. */
static void
restart_into(struct echod *first, struct notify_socket *n1, struct store *st, int l, int port,
	     const char *conf, struct echod *second, struct notify_socket *n2)
{
	static char names[STORE_MAX * (KEPT_NAME_MAX + 1) + 32];
	static int fds[STORE_MAX + 1];
	union sigval value = {.sival_int = STORE_MAX};

	assert_int_equal(sigqueue(first->pid, RESTART_SIGNAL, value), 0);
	usleep(100000);
	kill(first->pid, SIGTERM);
	store_receive(n1->fd, first->pid, st, 15000);
	snprintf(names, sizeof(names), "echod.socket");
	fds[0] = l;
	for (size_t i = 0; i < st->n; i++) {
		fds[1 + i] = st->fds[i];
		strcat(names, ":");
		strcat(names, st->names[i]);
	}
	notify_socket_open(n2);
	harness_pass_fds(fds, 1 + st->n, names);
	second->port = port;
	echod_spawn(second, (const char *[]){n2->env, NULL},
		    (const char *[]){"--config", conf, "--model", harness_model(), NULL}, -1);
}

/* A restart after a broken edit of the file: the first echod kept the
 * configuration it ran next to its connections, and the second, finding
 * the file broken, goes on with that one (loudly: the log and STATUS=
 * name the file, line and key) rather than fail and lose every kept
 * connection; a reload with the file fixed clears the note. Without a
 * kept configuration, or with one that is not echod's, the broken file
 * fails the start as ever. */
static void
test_broken_file_restart(void **state)
{
	int port, l = listener(&port), clients[2], status, bogus;
	char conf[64], *text = NULL;
	struct notify_socket n1, n2, n3;
	struct store st = {0};
	struct echod first, second, plain, faked;
	const char *note;
	size_t len;

	snprintf(conf, sizeof(conf), "/tmp/echod-test-fdstore-%d.conf", (int)getpid());
	harness_write_config(conf, "[echod]\nIdleTimeoutSec=77\n");
	notify_socket_open(&n1);
	harness_pass_fds(&l, 1, "echod.socket");
	first.port = port;
	echod_spawn(&first, (const char *[]){n1.env, NULL},
		    (const char *[]){"--config", conf, "--model", harness_model(), NULL}, -1);
	assert_non_null(notify_status_wait(&n1, " connections,", 5000));
	for (int i = 0; i < 2; i++) {
		clients[i] = tcp_connect(port);
		assert_int_equal(echo_roundtrip(clients[i], "before", 6, 3000), 0);
	}
	assert_non_null(notify_status_wait(&n1, " 2 connections,", 5000));

	harness_write_config(conf, "[echod]\nIdleTimeoutSec=77\nWorkers=lots\n");
	restart_into(&first, &n1, &st, l, port, conf, &second, &n2);
	/* What the first one ran, in the file's syntax. */
	for (size_t i = 0; i < st.n; i++)
		if (strcmp(st.names[i], KEPT_CONFIG_NAME) == 0)
			assert_int_equal(kept_config_decode(st.fds[i], &text, &len), 0);
	assert_non_null(text);
	if (!strstr(text, "\nIdleTimeoutSec=77\n"))
		fail_msg("the kept configuration is not the one that ran:\n%s", text);
	free(text);
	note = notify_status_wait(&n2, "configuration file rejected, running the previous one: ",
				  5000);
	if (!note || !strstr(note, conf) || !strstr(note, ":3: Workers="))
		fail_msg("STATUS= does not name the file, line and key: %s", note ? note : "none");
	store_close(&st);
	assert_true(echod_wait_log(&second, "took back 2 connection(s)", 5000));
	echod_collect_log(&second);
	if (!strstr(second.log, ":3: Workers=") ||
	    !strstr(second.log, "restarted with the configuration the previous echod ran"))
		fail_msg("the log does not say it: %s", second.log);
	for (int i = 0; i < 2; i++)
		assert_int_equal(echo_roundtrip(clients[i], "after", 5, 3000), 0);
	/* Fixed and reloaded: the note goes. */
	harness_write_config(conf, "[echod]\nIdleTimeoutSec=77\n");
	kill(second.pid, SIGHUP);
	note = notify_status_wait(&n2, "gen 1", 10000);
	assert_non_null(note);
	if (strstr(note, "rejected"))
		fail_msg("still said after a good reload: %s", note);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(echo_roundtrip(clients[i], "again", 5, 3000), 0);
		close(clients[i]);
	}
	assert_int_equal(echod_stop(&second, 10000), 0);

	/* Nothing kept: the broken file fails the start. */
	harness_write_config(conf, "[echod]\nWorkers=lots\n");
	notify_socket_open(&n3);
	harness_pass_fds(&l, 1, "echod.socket");
	echod_spawn(&plain, (const char *[]){n3.env, NULL}, (const char *[]){"--config", conf, NULL},
		    -1);
	status = echod_wait_exit(&plain, 5000);
	echod_collect_log(&plain);
	assert_int_equal(status, 2);
	if (!strstr(plain.log, ":2: Workers="))
		fail_msg("unexpected message: %s", plain.log);
	/* Something else under the name: said, and the start fails. */
	bogus = memfd_create("not-ours", MFD_CLOEXEC);
	assert_true(bogus >= 0);
	assert_int_equal(write(bogus, "[echod]\n", 8), 8);
	harness_pass_fds((int[]){l, bogus}, 2, "echod.socket:" KEPT_CONFIG_NAME);
	echod_spawn(&faked, (const char *[]){n3.env, NULL}, (const char *[]){"--config", conf, NULL},
		    -1);
	status = echod_wait_exit(&faked, 5000);
	echod_collect_log(&faked);
	assert_int_equal(status, 2);
	if (!strstr(faked.log, ":2: Workers=") ||
	    !strstr(faked.log, "not a configuration echod kept"))
		fail_msg("unexpected message: %s", faked.log);
	close(bogus);
	close(l);
	unlink(conf);
	notify_socket_close(&n1);
	notify_socket_close(&n2);
	notify_socket_close(&n3);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_takes_back_connections, harness_teardown),
	    cmocka_unit_test_teardown(test_bad_owed_entries, harness_teardown),
	    cmocka_unit_test_teardown(test_restart_round_trip, harness_teardown),
	    cmocka_unit_test_teardown(test_proxied_restart, harness_teardown),
	    cmocka_unit_test_teardown(test_broken_file_restart, harness_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
