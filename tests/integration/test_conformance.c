/* The conformance set every model must pass, run once per model
 * ($ECHOD_MODEL): the same clients, the same expectations. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

static bool
model_is(const char *m)
{
	return strcmp(harness_model(), m) == 0;
}

static void
test_payloads_echoed_exactly(void **state)
{
	static const size_t sizes[] = {1, 7, 1000, 65536, 65537, 1 << 20, 4 << 20};
	struct echod e;

	echod_start(&e, (const char *[]){"--workers", "2", NULL});
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char *buf = malloc(sizes[i]);
		int fd = tcp_connect(e.port);

		assert_true(fd >= 0);
		fill_random(buf, sizes[i], (unsigned)i + 1);
		assert_int_equal(echo_roundtrip(fd, buf, sizes[i], 20000), 0);
		close(fd);
		free(buf);
	}
	assert_int_equal(echod_stop(&e, 15000), 0);
}

#define CONCURRENT 200

static void
test_concurrent_clients(void **state)
{
	static int fds[CONCURRENT];
	struct echod e;
	char buf[1024];

	echod_start(&e, (const char *[]){"--workers", "2", NULL});
	for (int i = 0; i < CONCURRENT; i++) {
		fds[i] = tcp_connect(e.port);
		assert_true(fds[i] >= 0);
	}
	/* Everyone is connected before anyone talks: all 200 are open at once. */
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < CONCURRENT; i++) {
			fill_random(buf, sizeof(buf), (unsigned)(i * 7 + round));
			assert_int_equal(echo_roundtrip(fds[i], buf, sizeof(buf), 10000), 0);
		}
	for (int i = 0; i < CONCURRENT; i++)
		close(fds[i]);
	assert_int_equal(echod_stop(&e, 15000), 0);
}

static void
test_half_close(void **state)
{
	struct echod e;
	char out[300000], back[300001];
	int fd;

	echod_start(&e, (const char *[]){"--workers", "1", NULL});
	fd = tcp_connect(e.port);
	assert_true(fd >= 0);
	fill_random(out, sizeof(out), 42);
	/* Send everything, then shut our side while echoes are still owed:
	 * all of them must arrive, then EOF. */
	size_t sent = 0;
	uint64_t end = monotonic_ms() + 10000;
	size_t got = 0;
	while (sent < sizeof(out) && monotonic_ms() < end) {
		ssize_t n = send(fd, out + sent, sizeof(out) - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0)
			sent += (size_t)n;
		ssize_t m = recv(fd, back + got, sizeof(back) - got, MSG_DONTWAIT);
		if (m > 0)
			got += (size_t)m;
	}
	assert_int_equal(sent, sizeof(out));
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	ssize_t rest = read_until_eof(fd, back + got, sizeof(back) - got, 10000);
	assert_true(rest >= 0);
	assert_int_equal(got + (size_t)rest, sizeof(out));
	assert_memory_equal(back, out, sizeof(out));
	close(fd);
	assert_int_equal(echod_stop(&e, 15000), 0);
}

#define BACKPRESSURE_RSS_KIB (16 * 1024)

/* A client that sends 64 MiB and never reads: echod must stop reading from
 * it (the data waits in the kernel), not buffer it, and keep serving. */
static void
test_backpressure_bounded_memory(void **state)
{
	struct echod e;
	char chunk[65536], buf[512];
	size_t pushed = 0;
	int hog, other;

	echod_start(&e, (const char *[]){"--workers", "2", NULL});
	/* Growth, not the total: under valgrind (the memcheck suite) the
	 * tree starts at over 100 MiB of the tool's own. */
	uint64_t rss_before = process_tree_rss_kib(e.pid);
	hog = tcp_connect(e.port);
	assert_true(hog >= 0);
	memset(chunk, 'x', sizeof(chunk));
	/* Pushed until the kernel's buffers are full both ways and stay so:
	 * a second without progress (the hog is stuck, as it should be). */
	uint64_t end = monotonic_ms() + 20000, progress = monotonic_ms();
	while (pushed < (64u << 20) && monotonic_ms() < end && monotonic_ms() < progress + 1000) {
		ssize_t n = send(hog, chunk, sizeof(chunk), MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			pushed += (size_t)n;
			progress = monotonic_ms();
			continue;
		}
		assert_true(n < 0 && errno == EAGAIN);
		usleep(10000);
	}
	uint64_t rss = process_tree_rss_kib(e.pid);
	print_message("# pushed %zu bytes, echod tree RSS %lu KiB (%lu KiB at start)\n", pushed,
		      (unsigned long)rss, (unsigned long)rss_before);
	/* What echod holds is one read buffer: a quarter of what an echod
	 * that buffered the 64 MiB would grow by, even after the kernel's
	 * queues (tens of MiB with tcp_rmem's autotuning) took their share. */
	assert_true(rss < rss_before + BACKPRESSURE_RSS_KIB);

	other = tcp_connect(e.port);
	assert_true(other >= 0);
	fill_random(buf, sizeof(buf), 9);
	assert_int_equal(echo_roundtrip(other, buf, sizeof(buf), 5000), 0);
	close(other);
	close(hog);
	assert_int_equal(echod_stop(&e, 15000), 0);
}

static void
test_idle_timeout(void **state)
{
	struct echod e;
	char buf[16];
	int fd;

	echod_start(&e, (const char *[]){"--workers", "1", "--idle-timeout", "1", NULL});
	fd = tcp_connect(e.port);
	assert_true(fd >= 0);
	assert_int_equal(echo_roundtrip(fd, "ping", 4, 2000), 0);
	uint64_t start = monotonic_ms();
	/* Closed by echod after about a second of silence. */
	assert_int_equal(read_until_eof(fd, buf, sizeof(buf), 5000), 0);
	uint64_t took = monotonic_ms() - start;
	assert_true(took >= 800);
	close(fd);
	assert_int_equal(echod_stop(&e, 15000), 0);
}

static void
test_max_connections_waits_then_serves(void **state)
{
	struct echod e;
	int a, b, c;

	echod_start(&e, (const char *[]){"--workers", "2", "--max-connections", "2", NULL});
	a = tcp_connect(e.port);
	b = tcp_connect(e.port);
	assert_true(a >= 0 && b >= 0);
	assert_int_equal(echo_roundtrip(a, "a", 1, 2000), 0);
	assert_int_equal(echo_roundtrip(b, "b", 1, 2000), 0);
	/* The third connects (the kernel's backlog takes it) but is not served. */
	c = tcp_connect(e.port);
	assert_true(c >= 0);
	assert_int_equal(send(c, "c", 1, MSG_NOSIGNAL), 1);
	assert_false(wait_readable(c, 700));
	/* A slot frees up: the waiting client is served, not dropped. */
	close(a);
	assert_true(wait_readable(c, 3000));
	char got;
	assert_int_equal(recv(c, &got, 1, 0), 1);
	assert_int_equal(got, 'c');
	close(b);
	close(c);
	assert_int_equal(echod_stop(&e, 15000), 0);
}

/* The children of pid that are alive (not zombies). */
static size_t
live_children(pid_t pid)
{
	pid_t kids[64];
	size_t n = process_children(pid, kids, 64), live = 0;

	for (size_t i = 0; i < n; i++)
		live += process_alive(kids[i]);
	return live;
}

/* Finds the process serving connections other than the supervisor. */
static size_t
serving_processes(struct echod *e, pid_t *out, size_t max)
{
	return process_children(e->pid, out, max);
}

static void
test_killed_worker_costs_only_its_connections(void **state)
{
	struct echod e;
	pid_t kids[64];
	size_t n;
	int survivor = -1, fds[8];

	echod_start(&e, (const char *[]){"--workers", "2", NULL});
	for (int i = 0; i < 8; i++) {
		fds[i] = tcp_connect(e.port);
		assert_true(fds[i] >= 0);
		assert_int_equal(echo_roundtrip(fds[i], "x", 1, 2000), 0);
	}
	n = serving_processes(&e, kids, 64);
	assert_true(n >= 1);
	kill(kids[0], SIGKILL);
	usleep(200000);
	/* Connections of the other processes keep working; those of the
	 * killed one fail cleanly (EOF or reset, never wrong data). */
	for (int i = 0; i < 8; i++) {
		char b[4] = "abc";
		if (echo_roundtrip(fds[i], b, 3, 1000) == 0)
			survivor = i;
	}
	if (!model_is("fork") || n > 1)
		assert_true(survivor >= 0);
	/* New connections are served again promptly (a respawned worker, or
	 * the survivors, or a new child). */
	uint64_t end = monotonic_ms() + 2000;
	bool served = false;
	while (!served && monotonic_ms() < end) {
		int fd = tcp_connect(e.port);
		served = fd >= 0 && echo_roundtrip(fd, "new", 3, 500) == 0;
		if (fd >= 0)
			close(fd);
	}
	assert_true(served);
	if (!model_is("fork")) {
		/* The pool is whole again within 2 s. */
		end = monotonic_ms() + 2000;
		while (serving_processes(&e, kids, 64) < 2 && monotonic_ms() < end)
			usleep(20000);
		assert_int_equal(serving_processes(&e, kids, 64), 2);
		assert_true(echod_wait_log(&e, "killed by signal KILL", 1000));
	}
	for (int i = 0; i < 8; i++)
		close(fds[i]);
	assert_int_equal(echod_stop(&e, 15000), 0);
}

/* Reads a signal mask of pid ("SigIgn", "SigBlk") from /proc/PID/status;
 * false if the process is gone (a fork-model child whose connection just
 * ended). */
static bool
signal_mask(pid_t pid, const char *which, unsigned long long *ret_mask)
{
	char path[64], line[256];
	size_t len = strlen(which);
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strncmp(line, which, len) == 0 && line[len] == ':' &&
			sscanf(line + len + 1, "%llx", ret_mask) == 1;
	fclose(f);
	return found;
}

#define SIGBIT(sig) (1ULL << ((sig) - 1))

/* A signal echod was started with ignored stays the supervisor's business:
 * the processes serving connections start from default dispositions but
 * SIGPIPE's, ignored (SIGALRM, because echod itself uses neither it nor its
 * default action). Blocked in them are the signals their signalfd reads
 * (SIGTERM, SIGINT, SIGUSR1, SIGUSR2) and SIGHUP, which a worker never
 * reads, besides at most SIGCHLD, which never comes to them. */
static void
test_children_start_with_default_signals(void **state)
{
	const unsigned long long blocked = SIGBIT(SIGTERM) | SIGBIT(SIGINT) | SIGBIT(SIGUSR1) |
					   SIGBIT(SIGUSR2) | SIGBIT(SIGHUP);
	const char *wrapper = getenv("ECHOD_TEST_WRAPPER");
	bool wrapped = wrapper && *wrapper;
	unsigned long long mask = 0;
	struct echod e;
	pid_t kids[8];
	size_t n, checked = 0;
	int fd;

	signal(SIGALRM, SIG_IGN);
	echod_start(&e, (const char *[]){"--workers", "1", NULL});
	signal(SIGALRM, SIG_DFL);
	assert_true(signal_mask(e.pid, "SigIgn", &mask));
	assert_true(mask & SIGBIT(SIGALRM));
	fd = tcp_connect(e.port);
	assert_true(fd >= 0);
	assert_int_equal(echo_roundtrip(fd, "x", 1, 2000), 0);
	n = serving_processes(&e, kids, 8);
	assert_true(n >= 1);
	/* Every process still there is checked, and at least the one serving
	 * fd is; the readiness probe's fork child may be exiting meanwhile. */
	for (size_t i = 0; i < n; i++) {
		unsigned long long ignored, held;

		if (!signal_mask(kids[i], "SigIgn", &ignored) ||
		    !signal_mask(kids[i], "SigBlk", &held))
			continue;
		assert_false(ignored & SIGBIT(SIGALRM));
		/* Under a wrapper (valgrind) the kernel's masks are the
		 * wrapper's own, which catches every signal itself. */
		if (!wrapped) {
			assert_int_equal(ignored, SIGBIT(SIGPIPE));
			assert_int_equal(held & ~SIGBIT(SIGCHLD), blocked);
		}
		checked++;
	}
	assert_true(checked >= 1);
	if (wrapped)
		print_comment("under ECHOD_TEST_WRAPPER: the blocked and ignored masks of the "
			      "children are the wrapper's, checked only for SIGALRM");
	/* The default action: the processes end, the one serving fd among
	 * them (fork: its child; workers are respawned). */
	for (size_t i = 0; i < n; i++)
		kill(kids[i], SIGALRM);
	assert_true(wait_readable(fd, 2000));
	close(fd);
	assert_int_equal(echod_stop(&e, 15000), 0);
}

static void
test_sigterm_drains_open_connection(void **state)
{
	struct echod e;
	pid_t kids[64];
	size_t n;
	int fd;

	echod_start(&e, (const char *[]){"--workers", "2", "--shutdown-timeout", "5", NULL});
	fd = tcp_connect(e.port);
	assert_true(fd >= 0);
	assert_int_equal(echo_roundtrip(fd, "before", 6, 2000), 0);
	n = serving_processes(&e, kids, 64);
	kill(e.pid, SIGTERM);
	/* The drain has begun everywhere once the only process left serving
	 * is the one holding fd: the idle worker (or the readiness probe's
	 * connection process) has ended. */
	assert_true(echod_wait_log(&e, "stopping", 5000));
	uint64_t end = monotonic_ms() + 5000;
	while (live_children(e.pid) != 1 && monotonic_ms() < end)
		usleep(20000);
	assert_int_equal(live_children(e.pid), 1);
	/* Still served during the drain window... */
	assert_int_equal(echo_roundtrip(fd, "during", 6, 2000), 0);
	/* ...and no new connection is taken: refused, or left in the backlog
	 * with nothing answering it. */
	int late = tcp_connect(e.port);
	if (late >= 0) {
		assert_int_not_equal(echo_roundtrip(late, "late", 4, 1000), 0);
		close(late);
	}
	assert_int_equal(echo_roundtrip(fd, "still", 5, 2000), 0);
	close(fd);
	int status = echod_stop(&e, 10000);
	assert_int_equal(status, 0);
	for (size_t i = 0; i < n; i++)
		assert_false(process_alive(kids[i]));
}

static void
test_sigterm_closes_at_shutdown_timeout(void **state)
{
	struct echod e;
	char buf[8];
	int fd;

	echod_start(&e, (const char *[]){"--workers", "1", "--shutdown-timeout", "1", NULL});
	fd = tcp_connect(e.port);
	assert_true(fd >= 0);
	assert_int_equal(echo_roundtrip(fd, "x", 1, 2000), 0);
	uint64_t start = monotonic_ms();
	kill(e.pid, SIGTERM);
	/* The idle client is closed when the drain window ends. */
	assert_true(read_until_eof(fd, buf, sizeof(buf), 6000) >= 0);
	assert_true(monotonic_ms() - start >= 800);
	close(fd);
	assert_int_equal(echod_stop(&e, 8000), 0);
}

static void
test_socket_activation(void **state)
{
	struct echod e;
	char buf[5000];
	int fd;

	echod_start_activated(&e, NULL, (const char *[]){"--workers", "2", NULL});
	fd = tcp_connect(e.port);
	assert_true(fd >= 0);
	fill_random(buf, sizeof(buf), 5);
	assert_int_equal(echo_roundtrip(fd, buf, sizeof(buf), 5000), 0);
	close(fd);
	assert_int_equal(echod_stop(&e, 15000), 0);
}

/* The connection's socket in echod, while it is open, has TCP_NODELAY set:
 * an echo goes out as it is read, not held back until the client
 * acknowledges the previous one. */
static void
assert_served_without_nagle(struct echod *e, int client)
{
	int served = -1, nodelay = 0;
	socklen_t len = sizeof(nodelay);
	uint64_t deadline = monotonic_ms() + 5000;

	assert_int_equal(echo_roundtrip(client, "ping", 4, 5000), 0);
	/* fork, passfd: held by a process the supervisor handed it to. */
	while ((served = served_socket(e->pid, client)) < 0 && monotonic_ms() < deadline)
		usleep(20 * 1000);
	if (served < 0)
		fail_msg("no echod process holds the server's end of the connection");
	assert_int_equal(getsockopt(served, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len), 0);
	close(served);
	if (!nodelay)
		fail_msg("the server's end of the connection has TCP_NODELAY off");
}

/* Whether echod bound the listener or systemd passed it, over IPv4 and
 * IPv6. */
static void
test_served_without_nagle(void **state)
{
	struct echod e;
	char v6[64];
	int fd, port6;

	(void)state;
	echod_start(&e, (const char *[]){"--workers", "2", NULL});
	fd = tcp_connect(e.port);
	assert_true(fd >= 0);
	assert_served_without_nagle(&e, fd);
	close(fd);
	assert_int_equal(echod_stop(&e, 15000), 0);

	echod_start_activated(&e, NULL, (const char *[]){"--workers", "2", NULL});
	fd = tcp_connect(e.port);
	assert_true(fd >= 0);
	assert_served_without_nagle(&e, fd);
	close(fd);
	assert_int_equal(echod_stop(&e, 15000), 0);

	if (!ipv6_loopback_available()) {
		print_message("# no IPv6 loopback here: the IPv6 listener is not tried\n");
		return;
	}
	port6 = free_port();
	snprintf(v6, sizeof(v6), "[::1]:%d", port6);
	echod_start(&e, (const char *[]){"--workers", "2", "--listen", v6, NULL});
	fd = tcp6_connect(port6);
	assert_true(fd >= 0);
	assert_served_without_nagle(&e, fd);
	close(fd);
	assert_int_equal(echod_stop(&e, 15000), 0);
}

/* Counts fds of echod and its workers (not of per-connection children,
 * which come and go). */
static int
tree_fd_count(struct echod *e)
{
	pid_t kids[64];
	size_t n = process_children(e->pid, kids, 64);
	int total = process_fd_count(e->pid);

	for (size_t i = 0; i < n; i++)
		total += process_fd_count(kids[i]);
	return total;
}

/* Thousands of short connections leave no fd, no zombie behind. */
static void
test_short_connections_leave_nothing(void **state)
{
	struct echod e;
	int baseline, after = -1;

	echod_start(&e, (const char *[]){"--workers", "2", NULL});
	/* fork: the start-up probe's connection process may still be ending. */
	pid_t kids[8];
	uint64_t settle = monotonic_ms() + 2000;
	while (model_is("fork") && process_children(e.pid, kids, 8) > 0 && monotonic_ms() < settle)
		usleep(20000);
	/* ...and the supervisor may still hold its copy for a moment. */
	baseline = tree_fd_count(&e);
	for (int stable = 0; stable < 3 && monotonic_ms() < settle + 2000;) {
		usleep(50000);
		int now = tree_fd_count(&e);
		stable = now == baseline ? stable + 1 : 0;
		baseline = now;
	}
	for (int i = 0; i < 2000; i++) {
		int fd = tcp_connect(e.port);
		assert_true(fd >= 0);
		assert_int_equal(echo_roundtrip(fd, "short", 5, 3000), 0);
		close(fd);
	}
	/* Connections close asynchronously: allow a moment to settle. */
	uint64_t end = monotonic_ms() + 3000;
	while (monotonic_ms() < end) {
		after = tree_fd_count(&e);
		if (after == baseline && zombie_children(e.pid) == 0)
			break;
		usleep(50000);
	}
	print_message("# fds of echod and workers: %d before, %d after 2000 connections\n",
		      baseline, after);
	assert_int_equal(after, baseline);
	assert_int_equal(zombie_children(e.pid), 0);
	assert_int_equal(echod_stop(&e, 15000), 0);
}

static int
udp_socket_bound(int port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static ssize_t
udp_exchange(int fd, int port, const void *data, size_t len, void *back, size_t size, int ms)
{
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};

	if (sendto(fd, data, len, 0, (struct sockaddr *)&to, sizeof(to)) != (ssize_t)len)
		return -1;
	if (!wait_readable(fd, ms))
		return -1;
	return recv(fd, back, size, MSG_DONTWAIT);
}

static void
test_udp_echo(void **state)
{
	static char out[65507], back[65536];
	static const size_t sizes[] = {0, 1, 512, 8192, 65507};
	char listen[64];
	struct echod e;
	int uport = free_port(), fd, priv = -1;

	snprintf(listen, sizeof(listen), "udp:127.0.0.1:%d", uport);
	echod_start(&e, (const char *[]){"--workers", "2", "--listen", listen, NULL});
	fd = udp_socket_bound(0);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		fill_random(out, sizes[i], (unsigned)i + 3);
		ssize_t n = udp_exchange(fd, uport, out, sizes[i], back, sizeof(back), 2000);
		assert_int_equal(n, (ssize_t)sizes[i]);
		assert_memory_equal(back, out, sizes[i]);
	}
	/* A sender on a privileged port (another echo service, say) gets
	 * nothing back: two echo services must never bounce packets forever. */
	for (int port = 1000; port > 900 && priv < 0; port--)
		priv = udp_socket_bound(port);
	assert_true(priv >= 0);
	assert_int_equal(udp_exchange(priv, uport, "loop?", 5, back, sizeof(back), 500), -1);
	/* ...and the drop is counted. */
	assert_true(echod_wait_log(&e, "1 datagram(s) from privileged ports", 2000));
	/* ...while ordinary senders, 20 at once, each get exactly their own. */
	int senders[20];
	for (int i = 0; i < 20; i++) {
		senders[i] = udp_socket_bound(0);
		char msg[32];
		int len = snprintf(msg, sizeof(msg), "sender %d", i);
		struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)uport),
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		assert_int_equal(sendto(senders[i], msg, (size_t)len, 0, (struct sockaddr *)&to,
					sizeof(to)),
				 len);
	}
	for (int i = 0; i < 20; i++) {
		char msg[32];
		int len = snprintf(msg, sizeof(msg), "sender %d", i);
		assert_true(wait_readable(senders[i], 2000));
		assert_int_equal(recv(senders[i], back, sizeof(back), 0), len);
		assert_memory_equal(back, msg, (size_t)len);
		close(senders[i]);
	}
	close(priv);
	close(fd);
	assert_int_equal(echod_stop(&e, 15000), 0);
}

/* DatagramRateLimit= caps what one source can make echod send, while a
 * second source is still served. */
static void
test_udp_rate_limit_per_source(void **state)
{
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct sockaddr_in other = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000002)};
	char listen[64], back[16];
	struct echod e;
	int uport = free_port(), a, b, got_a = 0, got_b = 0;

	snprintf(listen, sizeof(listen), "udp:127.0.0.1:%d", uport);
	to.sin_port = htons((uint16_t)uport);
	echod_start(&e, (const char *[]){"--workers", "1", "--datagram-rate-limit", "5", "--listen",
					 listen, NULL});
	a = udp_socket_bound(0);
	b = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(b, (struct sockaddr *)&other, sizeof(other)), 0);
	uint64_t start = monotonic_ms(), last = start;
	for (int i = 0; i < 40; i++)
		assert_int_equal(sendto(a, "flood", 5, 0, (struct sockaddr *)&to, sizeof(to)), 5);
	for (int i = 0; i < 3; i++)
		assert_int_equal(sendto(b, "other", 5, 0, (struct sockaddr *)&to, sizeof(to)), 5);
	/* Every answer that comes, until none has for half a second: the
	 * other source's three, and the flood's up to its limit. */
	while (got_b < 3 && wait_readable(b, 5000) && recv(b, back, sizeof(back), 0) == 5)
		got_b++;
	while (wait_readable(a, 500) && recv(a, back, sizeof(back), 0) == 5) {
		got_a++;
		last = monotonic_ms();
	}
	print_message("# flooding source: %d of 40 answered within %llu ms; other source: %d of "
		      "3\n",
		      got_a, (unsigned long long)(last - start), got_b);
	/* A burst of one second's worth, plus what trickled in while echod
	 * worked through the flood (5 a second, one more for rounding). */
	assert_true(got_a >= 5);
	assert_true((uint64_t)got_a <= 5 + (last - start) * 5 / 1000 + 1);
	assert_int_equal(got_b, 3);
	close(a);
	close(b);
	assert_int_equal(echod_stop(&e, 15000), 0);
}

static void
test_udp_socket_activation(void **state)
{
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	char back[64];
	struct echod e;
	int fd;

	echod_start_activated(&e, (const char *[]){"--datagram", NULL},
			      (const char *[]){"--workers", "2", NULL});
	to.sin_port = htons((uint16_t)e.port);
	fd = udp_socket_bound(0);
	/* The first datagram starts echod; it waits in the socket until then. */
	bool answered = false;
	for (int i = 0; i < 50 && !answered; i++) {
		assert_int_equal(sendto(fd, "activate", 8, 0, (struct sockaddr *)&to, sizeof(to)), 8);
		answered = wait_readable(fd, 200) && recv(fd, back, sizeof(back), 0) == 8 &&
			   memcmp(back, "activate", 8) == 0;
	}
	assert_true(answered);
	assert_true(echod_wait_log(&e, "listening on udp:127.0.0.1", 2000));
	close(fd);
	assert_int_equal(echod_stop(&e, 15000), 0);
}

/* With fds running out (RLIMIT_NOFILE 64, 150 clients, and a
 * WorkerConnections= set by hand beyond what that allows), echod keeps the
 * clients it holds, takes no more than its fds allow (the rest wait in the
 * backlog), says so, and serves newcomers again once fds free up. test_hostile does
 * the same with 1,000 clients, checking that none is lost and that the
 * wait costs no CPU. */
#define FD_LIMIT_CLIENTS 150

static void
test_fd_exhaustion_survived(void **state)
{
	static int fds[FD_LIMIT_CLIENTS];
	struct echod e;
	int served = 0;

	harness_limit_fds(64);
	echod_start(&e, (const char *[]){"--workers", "1", "--worker-connections", "4096", NULL});
	for (int i = 0; i < FD_LIMIT_CLIENTS; i++) {
		fds[i] = tcp_connect(e.port);
		if (fds[i] >= 0)
			(void)send(fds[i], "z", 1, MSG_NOSIGNAL);
	}
	/* Whatever can be served is served within a second. */
	usleep(1000000);
	for (int i = 0; i < FD_LIMIT_CLIENTS; i++) {
		char c;
		if (fds[i] >= 0 && wait_readable(fds[i], 0) && recv(fds[i], &c, 1, 0) == 1)
			served++;
	}
	print_message("# %d of %d clients served at the fd limit\n", served, FD_LIMIT_CLIENTS);
	assert_true(served > 0);
	/* fork's children each have an fd table of their own. */
	if (!model_is("fork"))
		assert_true(served < FD_LIMIT_CLIENTS);
	if (!model_is("fork"))
		assert_true(echod_wait_log(&e, "leaves room for", 0));
	for (int i = 0; i < FD_LIMIT_CLIENTS; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	/* Newcomers are served again once the fds are back (fork: after a
	 * child for each connection still in the backlog, closed or not,
	 * which under ASan on a loaded 2-core VM took more than 3 s). */
	uint64_t start = monotonic_ms(), end = start + 10000;
	bool ok = false;
	while (!ok && monotonic_ms() < end) {
		int fd = tcp_connect(e.port);
		ok = fd >= 0 && echo_roundtrip(fd, "again", 5, 500) == 0;
		if (fd >= 0)
			close(fd);
	}
	print_message("# a newcomer served %llu ms after the clients left\n",
		      (unsigned long long)(monotonic_ms() - start));
	assert_true(ok);
	assert_int_equal(echod_stop(&e, 15000), 0);
}

/* Starts echod reporting to n, and waits until the start-up probe's
 * connection is gone (STATUS= says 0 connections), so that the test's own
 * connections are the only ones from 127.0.0.1. */
static void
start_notified(struct echod *e, struct notify_socket *n, const char *const *extra)
{
	notify_socket_open(n);
	echod_start_env(e, (const char *[]){n->env, NULL}, extra);
	assert_non_null(notify_status_wait(n, " 0 connections,", 5000));
}

/* Keeps connecting from src until a connection is echoed, up to timeout_ms.
 * Returns the served connection, or -1. */
static int
connect_served(const char *src, int port, int timeout_ms)
{
	uint64_t end = monotonic_ms() + (uint64_t)timeout_ms;

	while (monotonic_ms() < end) {
		int fd = tcp_connect_from(src, port);
		if (fd >= 0 && echo_roundtrip(fd, "again", 5, 500) == 0)
			return fd;
		if (fd >= 0)
			close(fd);
		usleep(50000);
	}
	return -1;
}

/* MaxConnectionsPerSource=: beyond the limit, one source's new connections
 * are accepted and closed at once (refused, counted in STATUS=) while another
 * source is served; a connection that ends, or a process killed with its
 * connections, gives its count back. Datagrams are not limited by it. */
static void
test_max_connections_per_source(void **state)
{
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct notify_socket n;
	char listen[64], back[16];
	struct echod e;
	int uport = free_port(), mine[4], other[2], udp;
	pid_t kids[64];
	size_t nkids;

	snprintf(listen, sizeof(listen), "udp:127.0.0.1:%d", uport);
	start_notified(&e, &n, (const char *[]){"--workers", "2", "--max-connections-per-source",
						"2", "--listen", listen, NULL});
	/* The harness's readiness probe came from this source too: it counts
	 * until echod has closed it (slowly, under valgrind). */
	assert_non_null(notify_status_wait(&n, " 0 connections, 1 served,", 5000));
	for (int i = 0; i < 2; i++) {
		mine[i] = tcp_connect_from("127.0.0.1", e.port);
		assert_true(mine[i] >= 0);
		assert_int_equal(echo_roundtrip(mine[i], "mine", 4, 2000), 0);
	}
	/* Over the limit: closed at once, not left waiting in the backlog. */
	for (int i = 2; i < 4; i++) {
		mine[i] = tcp_connect_from("127.0.0.1", e.port);
		assert_true(mine[i] >= 0);
		assert_true(closed_by_peer(mine[i], 2000));
	}
	/* Another source is served all the while. */
	for (int i = 0; i < 2; i++) {
		other[i] = tcp_connect_from("127.0.0.2", e.port);
		assert_true(other[i] >= 0);
		assert_int_equal(echo_roundtrip(other[i], "other", 5, 2000), 0);
	}
	assert_non_null(notify_status_wait(&n, " 2 refused,", 3000));
	assert_true(echod_wait_log(&e, "from sources over MaxConnectionsPerSource=2", 6000));
	/* The source at its limit still gets its datagrams echoed. */
	udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	to.sin_port = htons((uint16_t)uport);
	assert_int_equal(sendto(udp, "dgram", 5, 0, (struct sockaddr *)&to, sizeof(to)), 5);
	assert_true(wait_readable(udp, 2000));
	assert_int_equal(recv(udp, back, sizeof(back), 0), 5);
	close(udp);

	/* One of its connections ends: room for one more. */
	close(mine[0]);
	close(mine[2]);
	close(mine[3]);
	mine[0] = connect_served("127.0.0.1", e.port, 3000);
	assert_true(mine[0] >= 0);

	/* Every serving process is killed with its connections: the supervisor
	 * gives back what they held, so the source is served again. */
	nkids = process_children(e.pid, kids, 64);
	assert_true(nkids >= 1);
	for (size_t i = 0; i < nkids; i++)
		kill(kids[i], SIGKILL);
	close(mine[0]);
	close(mine[1]);
	close(other[0]);
	close(other[1]);
	mine[0] = connect_served("127.0.0.1", e.port, 5000);
	mine[1] = connect_served("127.0.0.1", e.port, 3000);
	assert_true(mine[0] >= 0 && mine[1] >= 0);
	close(mine[0]);
	close(mine[1]);
	assert_int_equal(echod_stop(&e, 15000), 0);
	notify_socket_close(&n);
}

#define RATE_CLIENTS 25

/* ConnectionRateLimit=10: a burst of 25 connections is served in full, none
 * refused, the ones beyond the burst of 10 at 10 a second: accepting pauses
 * and the kernel's backlog holds them meanwhile. */
static void
test_connection_rate_limit_pauses(void **state)
{
	struct notify_socket n;
	struct echod e;
	int fds[RATE_CLIENTS];
	uint64_t start, last = 0;

	start_notified(&e, &n, (const char *[]){"--workers", "2", "--connection-rate-limit", "10",
						NULL});
	/* The start-up probe may have taken a token or two: 15 or more are
	 * beyond the burst either way. */
	start = monotonic_ms();
	for (int i = 0; i < RATE_CLIENTS; i++) {
		fds[i] = tcp_connect(e.port);
		assert_true(fds[i] >= 0);
		assert_int_equal(send(fds[i], "r", 1, MSG_NOSIGNAL), 1);
	}
	for (int i = 0; i < RATE_CLIENTS; i++) {
		char c = 0;
		assert_true(wait_readable(fds[i], 8000));
		assert_int_equal(recv(fds[i], &c, 1, 0), 1);
		assert_int_equal(c, 'r');
		if (monotonic_ms() > last)
			last = monotonic_ms();
	}
	print_message("# %d connections at ConnectionRateLimit=10: all served in %llu ms\n",
		      RATE_CLIENTS, (unsigned long long)(last - start));
	/* 15 beyond the burst at 10/s: about 1.5 s. */
	assert_true(last - start >= 1000);
	assert_non_null(notify_status_wait(&n, " 0 refused,", 1000));
	assert_true(echod_wait_log(&e, "ConnectionRateLimit=10 reached: accepting paused", 6000));
	for (int i = 0; i < RATE_CLIENTS; i++)
		close(fds[i]);
	assert_int_equal(echod_stop(&e, 15000), 0);
	notify_socket_close(&n);
}

#define FLOOD_CLIENTS 20

/* DeferAcceptSec=2: connections that send nothing are not accepted (the
 * served count does not move: no process woke for them) until data arrives;
 * once the deferral is over the kernel hands them over anyway and
 * IdleTimeoutSec= closes them. */
static void
test_defer_accept_flood(void **state)
{
	struct notify_socket n;
	struct echod e;
	int fds[FLOOD_CLIENTS];
	long served;
	char buf[8];

	start_notified(&e, &n, (const char *[]){"--workers", "2", "--defer-accept", "2",
						"--idle-timeout", "1", NULL});
	served = status_count(notify_status_after(&n, 500), "served");
	print_message("# before: %s\n", n.status);
	assert_true(served >= 0);
	for (int i = 0; i < FLOOD_CLIENTS; i++) {
		fds[i] = tcp_connect(e.port);
		assert_true(fds[i] >= 0);
	}
	const char *st = notify_status_after(&n, 1500);
	print_message("# %d silent connections, after 1.5 s: %s\n", FLOOD_CLIENTS, st);
	assert_int_equal(status_count(st, "served"), served);
	assert_int_equal(status_count(st, "connections"), 0);
	/* Data arrives on one: that one is accepted and echoed at once. */
	assert_int_equal(echo_roundtrip(fds[0], "data", 4, 1000), 0);
	char want[32];
	snprintf(want, sizeof(want), " %ld served,", served + 1);
	assert_non_null(notify_status_wait(&n, want, 2000));
	/* The silent ones: delivered when the deferral ends, then closed as
	 * idle. */
	for (int i = 1; i < FLOOD_CLIENTS; i++)
		assert_int_equal(read_until_eof(fds[i], buf, sizeof(buf), 10000), 0);
	for (int i = 0; i < FLOOD_CLIENTS; i++)
		close(fds[i]);
	assert_int_equal(echod_stop(&e, 15000), 0);
	notify_socket_close(&n);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_payloads_echoed_exactly, harness_teardown),
	    cmocka_unit_test_teardown(test_concurrent_clients, harness_teardown),
	    cmocka_unit_test_teardown(test_half_close, harness_teardown),
	    cmocka_unit_test_teardown(test_backpressure_bounded_memory, harness_teardown),
	    cmocka_unit_test_teardown(test_idle_timeout, harness_teardown),
	    cmocka_unit_test_teardown(test_max_connections_waits_then_serves, harness_teardown),
	    cmocka_unit_test_teardown(test_killed_worker_costs_only_its_connections,
				      harness_teardown),
	    cmocka_unit_test_teardown(test_children_start_with_default_signals, harness_teardown),
	    cmocka_unit_test_teardown(test_sigterm_drains_open_connection, harness_teardown),
	    cmocka_unit_test_teardown(test_sigterm_closes_at_shutdown_timeout, harness_teardown),
	    cmocka_unit_test_teardown(test_socket_activation, harness_teardown),
	    cmocka_unit_test_teardown(test_served_without_nagle, harness_teardown),
	    cmocka_unit_test_teardown(test_short_connections_leave_nothing, harness_teardown),
	    cmocka_unit_test_teardown(test_udp_echo, harness_teardown),
	    cmocka_unit_test_teardown(test_udp_rate_limit_per_source, harness_teardown),
	    cmocka_unit_test_teardown(test_udp_socket_activation, harness_teardown),
	    cmocka_unit_test_teardown(test_fd_exhaustion_survived, harness_teardown),
	    cmocka_unit_test_teardown(test_max_connections_per_source, harness_teardown),
	    cmocka_unit_test_teardown(test_connection_rate_limit_pauses, harness_teardown),
	    cmocka_unit_test_teardown(test_defer_accept_flood, harness_teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name(harness_model(), tests, NULL, NULL);
}
