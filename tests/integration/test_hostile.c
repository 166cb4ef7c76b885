/* Hostile clients and exhausted resources, run once per model
 * ($ECHOD_MODEL), each case registered only for the models it concerns:
 *   - slow clients (every model): a trickling sender stays connected past
 *     IdleTimeoutSec=, a client that sends a lot but reads a byte a second
 *     costs echod at most its bounded buffer, and neither slows others;
 *   - fds running out under 1,000 clients (prefork, passfd: the models
 *     where one process holds many connections);
 *   - fork() failing at RLIMIT_NPROC (fork).
 * In each, echod must keep serving what it holds, make the rest wait (never
 * accept and drop them), serve them as resources free, and not spin. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/sockios.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

static bool
model_is(const char *m)
{
	return strcmp(harness_model(), m) == 0;
}

/* The test itself holds a thousand and more sockets. */
static void
raise_own_fd_limit(void)
{
	struct rlimit rl;

	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	rl.rlim_cur = rl.rlim_max;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	assert_true(rl.rlim_cur >= 2100);
}

/* ---- slow clients ---- */

#define IDLE_TIMEOUT_SEC 2
#define TRICKLE_EVERY_MS 1200
#define SLOW_SENDERS 4
#define SLOW_READERS 10
#define SLOW_READER_PUSH (4u << 20)
#define SLOW_RUN_MS 5000
/* What echod may hold of one reader's bytes in its own memory: one read
 * buffer (64 KiB), and as much again for what moves between the looks at
 * the client's queues and at echod's. */
#define HELD_MAX (2 * 65536)

struct slow_reader {
	int fd;
	size_t pushed, got;
	bool closed; /* by echod: EOF or reset */
};

/* Sends as much as the socket takes now. */
static void
push(struct slow_reader *r, const char *chunk, size_t size)
{
	while (r->pushed < SLOW_READER_PUSH) {
		ssize_t n = send(r->fd, chunk, size, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n <= 0) {
			if (n < 0 && errno != EAGAIN)
				r->closed = true;
			return;
		}
		r->pushed += (size_t)n;
	}
}

static void
read_one_byte(struct slow_reader *r)
{
	char c;
	ssize_t n = recv(r->fd, &c, 1, MSG_DONTWAIT);

	if (n == 1) {
		assert_int_equal(c, 'r');
		r->got++;
	} else if (n == 0 || (n < 0 && errno != EAGAIN)) {
		r->closed = true;
	}
}

/* echod's ends of the connections from the given local ports: how many
 * bytes wait in their receive and send queues, from sock_diag (what ss(8)
 * shows as Recv-Q and Send-Q). Only established connections are seen (a
 * closed one's queues say nothing of what echod holds): the others keep
 * UINT_MAX in rq. Returns how many were found. */
static unsigned
server_queues(int server_port, const int *client_ports, unsigned n, unsigned *rq, unsigned *wq)
{
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 r;
	} req = {
	    .nlh = {.nlmsg_len = sizeof(req),
		    .nlmsg_type = SOCK_DIAG_BY_FAMILY,
		    .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP},
	    .r = {.sdiag_family = AF_INET, .sdiag_protocol = IPPROTO_TCP, .idiag_states = ~0u},
	};
	static char buf[65536];
	unsigned found = 0;
	bool done = false;
	int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);

	assert_true(fd >= 0);
	assert_int_equal(send(fd, &req, sizeof(req), 0), (ssize_t)sizeof(req));
	while (!done) {
		ssize_t len = recv(fd, buf, sizeof(buf), 0);
		assert_true(len > 0);
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, len);
		     h = NLMSG_NEXT(h, len)) {
			const struct inet_diag_msg *m = NLMSG_DATA(h);
			if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
				assert_int_not_equal(h->nlmsg_type, NLMSG_ERROR);
				done = true;
				break;
			}
			if (ntohs(m->id.idiag_sport) != server_port ||
			    m->idiag_state != 1 /* TCP_ESTABLISHED */)
				continue;
			for (unsigned i = 0; i < n; i++)
				if (ntohs(m->id.idiag_dport) == client_ports[i]) {
					rq[i] = m->idiag_rqueue;
					wq[i] = m->idiag_wqueue;
					found++;
				}
		}
	}
	close(fd);
	return found;
}

static int
local_port(int fd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	return ntohs(sin.sin_port);
}

/* Bytes of this connection that echod holds in its own memory: what the
 * client sent, less what came back, less what sits in the kernel's queues
 * on the way: the client's send queue, the receive and send queues of
 * echod's socket, the client's receive queue. On loopback nothing else is
 * in flight. The queues are read one after the other while bytes move
 * down that way, so they are read in that order: a byte that moves on
 * between two looks is counted twice, never missed. */
static size_t
held_by_echod(const struct slow_reader *r, int client_outq, unsigned server_rq,
	      unsigned server_wq)
{
	int inq = 0;
	size_t queued;

	ioctl(r->fd, SIOCINQ, &inq);
	queued = r->got + (size_t)client_outq + server_rq + server_wq + (size_t)inq;
	return r->pushed > queued ? r->pushed - queued : 0;
}

/* A round trip's time, less what echod or this client spent waiting for
 * a CPU (the cores are shared). */
static uint64_t
timed_roundtrip(struct echod *e, int fd, unsigned i)
{
	char msg[64];
	int len = snprintf(msg, sizeof(msg), "normal client, round trip %u", i);
	uint64_t start = monotonic_ms(), took, excused;
	struct cpu_waits waits;

	cpu_waits_take(e->pid, &waits);
	if (echo_roundtrip(fd, msg, (size_t)len, 5000) != 0)
		fail_msg("round trip %u of the normal client failed", i);
	took = monotonic_ms() - start;
	excused = cpu_wait_since(e->pid, &waits);
	return took > excused ? took - excused : 0;
}

/* One worker (so every client shares its loop), IdleTimeoutSec=2:
 *   - senders trickle a byte every 1.2 s for 5 s: each byte comes back,
 *     and they outlive the idle timeout, since each byte is activity;
 *   - a silent client is closed after about 2 s, for contrast;
 *   - readers push up to 4 MiB each and read one byte a second: echod's
 *     memory grows by no more than one buffer per reader, and once its
 *     writes to them stall, moving no byte either way, they count as idle
 *     and are closed;
 *   - meanwhile a normal client's round trips keep their latency. */
static void
test_slow_clients(void **state)
{
	static struct slow_reader readers[SLOW_READERS];
	int reader_ports[SLOW_READERS];
	static char chunk[65536];
	int senders[SLOW_SENDERS], silent, normal;
	unsigned trickled = 0, round_trips = 0;
	uint64_t rss_before, rss_peak = 0, worst = 0, silent_closed_ms = 0;
	size_t held_peak = 0;
	char idle[16];
	struct echod e;

	snprintf(idle, sizeof(idle), "%d", IDLE_TIMEOUT_SEC);
	echod_start(&e, (const char *[]){"--workers", "1", "--idle-timeout", idle, NULL});
	memset(chunk, 'r', sizeof(chunk));
	for (int i = 0; i < SLOW_SENDERS; i++)
		assert_true((senders[i] = tcp_connect(e.port)) >= 0);
	assert_true((silent = tcp_connect(e.port)) >= 0);
	uint64_t silent_since = monotonic_ms();
	assert_true((normal = tcp_connect(e.port)) >= 0);
	for (int i = 0; i < SLOW_READERS; i++) {
		readers[i] = (struct slow_reader){.fd = tcp_connect(e.port)};
		assert_true(readers[i].fd >= 0);
		reader_ports[i] = local_port(readers[i].fd);
		/* Every process that will serve them is up and has served once
		 * before memory is measured. */
		assert_int_equal(echo_roundtrip(readers[i].fd, "r", 1, 2000), 0);
	}
	timed_roundtrip(&e, normal, 0);
	rss_before = process_tree_rss_kib(e.pid);

	uint64_t start = monotonic_ms(), next_trickle = start, next_read = start + 1000;
	while (monotonic_ms() < start + SLOW_RUN_MS) {
		uint64_t now = monotonic_ms(), rss;

		if (now >= next_trickle) {
			char c = (char)('a' + trickled % 26);
			for (int i = 0; i < SLOW_SENDERS; i++) {
				assert_int_equal(send(senders[i], &c, 1, MSG_NOSIGNAL), 1);
				char back = 0;
				if (!wait_readable(senders[i], 3000) ||
				    recv(senders[i], &back, 1, 0) != 1)
					fail_msg("slow sender %d: byte %u not echoed (closed after "
						 "%llu ms?)",
						 i, trickled, (unsigned long long)(now - start));
				assert_int_equal(back, c);
			}
			trickled++;
			next_trickle += TRICKLE_EVERY_MS;
		}
		for (int i = 0; i < SLOW_READERS; i++)
			if (!readers[i].closed)
				push(&readers[i], chunk, sizeof(chunk));
		if (now >= next_read) {
			for (int i = 0; i < SLOW_READERS; i++)
				if (!readers[i].closed)
					read_one_byte(&readers[i]);
			next_read += 1000;
		}
		unsigned rq[SLOW_READERS], wq[SLOW_READERS];
		int outq[SLOW_READERS];
		for (int i = 0; i < SLOW_READERS; i++) {
			rq[i] = wq[i] = UINT_MAX;
			outq[i] = 0;
			ioctl(readers[i].fd, SIOCOUTQ, &outq[i]);
		}
		server_queues(e.port, reader_ports, SLOW_READERS, rq, wq);
		for (int i = 0; i < SLOW_READERS; i++)
			if (!readers[i].closed && rq[i] != UINT_MAX) {
				size_t held = held_by_echod(&readers[i], outq[i], rq[i], wq[i]);
				held_peak = held > held_peak ? held : held_peak;
			}
		if (!silent_closed_ms && wait_readable(silent, 0)) {
			char c;
			assert_true(recv(silent, &c, 1, MSG_DONTWAIT) <= 0);
			silent_closed_ms = now - silent_since;
		}
		uint64_t took = timed_roundtrip(&e, normal, ++round_trips);
		worst = took > worst ? took : worst;
		rss = process_tree_rss_kib(e.pid);
		rss_peak = rss > rss_peak ? rss : rss_peak;
		usleep(20000);
	}

	unsigned readers_closed = 0;
	for (int i = 0; i < SLOW_READERS; i++) {
		/* A reset after unread data is as good as EOF here. */
		while (!readers[i].closed && wait_readable(readers[i].fd, 0)) {
			char buf[65536];
			ssize_t n = recv(readers[i].fd, buf, sizeof(buf), MSG_DONTWAIT);
			readers[i].closed = n == 0 || (n < 0 && errno != EAGAIN);
		}
		readers_closed += readers[i].closed;
	}
	print_message("# %u bytes trickled by each of %d senders over %d ms (IdleTimeoutSec=%d); "
		      "silent client closed after %llu ms\n",
		      trickled, SLOW_SENDERS, SLOW_RUN_MS, IDLE_TIMEOUT_SEC,
		      (unsigned long long)silent_closed_ms);
	print_message("# slow readers: %u of %d closed as idle; most held in echod's memory for "
		      "one: %zu bytes (%d at most)\n",
		      readers_closed, SLOW_READERS, held_peak, HELD_MAX);
	print_message("# echod tree RSS %llu KiB before, %llu KiB at most; normal client: %u round "
		      "trips, worst %llu ms (less waits for a CPU)\n",
		      (unsigned long long)rss_before, (unsigned long long)rss_peak, round_trips,
		      (unsigned long long)worst);

	/* Trickling is activity: every sender outlived the idle timeout
	 * twice over, each of its bytes echoed. */
	assert_true(trickled * TRICKLE_EVERY_MS > 2 * IDLE_TIMEOUT_SEC * 1000);
	assert_true(silent_closed_ms >= IDLE_TIMEOUT_SEC * 1000 - 200);
	assert_true(silent_closed_ms <= IDLE_TIMEOUT_SEC * 1000 + 1500);
	/* Stalled readers hold one buffer (64 KiB) each at most in echod's
	 * memory, kernel queues aside; one process per connection (fork)
	 * adds that process's own pages, which were counted before. */
	assert_true(rss_peak < rss_before + SLOW_READERS * 128 + 2048);
	assert_true(held_peak <= HELD_MAX);
	assert_int_equal(readers_closed, SLOW_READERS);
	/* The normal client's worst round trip is reported above, not judged:
	 * on shared cores it says as much of the machine as of echod. Each
	 * of its round trips had to succeed within 5 s. */

	for (int i = 0; i < SLOW_SENDERS; i++)
		close(senders[i]);
	for (int i = 0; i < SLOW_READERS; i++)
		close(readers[i].fd);
	close(silent);
	close(normal);
	assert_int_equal(echod_stop(&e, 15000), 0);
}

/* ---- running out: fds, processes ---- */

#define STALL_MS 2000
/* CPU echod may use while it waits for resources, per second of waiting:
 * retrying every 100 ms costs well under this, spinning costs it all. */
#define STALL_CPU_MS_PER_S 50

struct waiting_clients {
	int *fds;      /* -1 once closed */
	bool *holding; /* answered, kept open: holding echod's resources */
	unsigned n;
	unsigned served;  /* got their byte back */
	unsigned dropped; /* closed by echod without an answer */
};

/* Connects n clients that each send one byte. */
static void
clients_connect(struct waiting_clients *w, int port, unsigned n)
{
	w->fds = calloc(n, sizeof(*w->fds));
	w->holding = calloc(n, sizeof(*w->holding));
	w->n = n;
	w->served = w->dropped = 0;
	assert_true(w->fds && w->holding);
	for (unsigned i = 0; i < n; i++) {
		w->fds[i] = tcp_connect(port);
		assert_true(w->fds[i] >= 0);
		assert_int_equal(send(w->fds[i], "z", 1, MSG_NOSIGNAL), 1);
	}
}

static void
client_close(struct waiting_clients *w, unsigned i)
{
	close(w->fds[i]);
	w->fds[i] = -1;
	w->holding[i] = false;
}

/* Collects answers: each checks its byte; a served client is closed at
 * once (freeing echod's resources for the next) or, without close_served,
 * kept open. */
static void
clients_collect(struct waiting_clients *w, bool close_served)
{
	for (unsigned i = 0; i < w->n; i++) {
		char c;
		ssize_t n;

		if (w->fds[i] < 0 || w->holding[i] || !wait_readable(w->fds[i], 0))
			continue;
		n = recv(w->fds[i], &c, 1, MSG_DONTWAIT);
		if (n == 1) {
			assert_int_equal(c, 'z');
			w->served++;
			w->holding[i] = !close_served;
		} else {
			w->dropped++;
		}
		if (!w->holding[i])
			client_close(w, i);
	}
}

/* Collects answers, keeping the served clients open, until none has come
 * for half a second (echod holds all it can), up to timeout_ms. */
static void
clients_collect_settled(struct waiting_clients *w, int timeout_ms)
{
	uint64_t end = monotonic_ms() + (uint64_t)timeout_ms, last = monotonic_ms();
	unsigned seen = 0;

	while (monotonic_ms() < end && (seen == 0 || monotonic_ms() < last + 500)) {
		clients_collect(w, false);
		if (w->served + w->dropped != seen) {
			seen = w->served + w->dropped;
			last = monotonic_ms();
		}
		usleep(10000);
	}
}

static void
clients_close(struct waiting_clients *w)
{
	for (unsigned i = 0; i < w->n; i++)
		if (w->fds[i] >= 0)
			client_close(w, i);
	free(w->fds);
	free(w->holding);
}

/* Closes the clients that were answered and kept open. */
static void
clients_release_held(struct waiting_clients *w)
{
	for (unsigned i = 0; i < w->n; i++)
		if (w->holding[i])
			client_close(w, i);
}

/* Every client is answered once resources free: served ones are closed as
 * they answer, up to timeout_ms. */
static void
assert_all_served(struct waiting_clients *w, int timeout_ms)
{
	uint64_t end = monotonic_ms() + (uint64_t)timeout_ms;

	clients_release_held(w);
	while (w->served + w->dropped < w->n && monotonic_ms() < end) {
		clients_collect(w, true);
		usleep(10000);
	}
	print_message("# then %u of %u served, %u dropped\n", w->served, w->n, w->dropped);
	assert_int_equal(w->dropped, 0);
	assert_int_equal(w->served, w->n);
}

/* During a stall nothing moves: what echod burns is bounded. */
static void
assert_quiet_stall(struct echod *e, struct waiting_clients *w, const char *why)
{
	uint64_t cpu = process_tree_cpu_ms(e->pid), start = monotonic_ms();
	unsigned before = w->served;

	usleep(STALL_MS * 1000);
	clients_collect(w, false);
	cpu = process_tree_cpu_ms(e->pid) - cpu;
	uint64_t took = monotonic_ms() - start;
	print_message("# stalled at %s for %llu ms: echod used %llu ms of CPU; %u answered "
		      "meanwhile\n",
		      why, (unsigned long long)took, (unsigned long long)cpu, w->served - before);
	assert_true(cpu <= STALL_CPU_MS_PER_S * took / 1000);
	assert_int_equal(w->dropped, 0);
}

#define FD_CLIENTS 1000
#define FD_LIMIT 256

/* prefork, passfd: one worker at RLIMIT_NOFILE 256 under 1,000 clients. */
static void
test_fds_run_out_under_1000_clients(void **state)
{
	struct waiting_clients w;
	struct echod e;

	raise_own_fd_limit();
	harness_limit_fds(FD_LIMIT);
	echod_start(&e, (const char *[]){"--workers", "1", NULL});
	clients_connect(&w, e.port, FD_CLIENTS);
	/* Everything that can be held is served... */
	clients_collect_settled(&w, 10000);
	print_message("# %u of %u clients served with RLIMIT_NOFILE=%d\n", w.served, FD_CLIENTS,
		      FD_LIMIT);
	assert_true(w.served > FD_LIMIT / 2);
	assert_true(w.served < FD_LIMIT);
	/* ...the rest wait, costing nothing, and lose nothing... */
	assert_quiet_stall(&e, &w, "the fd limit");
	/* ...and are served as fds free. */
	assert_all_served(&w, 20000);
	clients_close(&w);
	assert_int_equal(echod_stop(&e, 15000), 0);
}

#define PROC_CLIENTS 40
#define PROC_LIMIT 12

/* fork: RLIMIT_NPROC lets the supervisor have PROC_LIMIT - 1 children. */
static void
test_fork_fails_at_nproc_limit(void **state)
{
	struct waiting_clients w;
	struct echod e;
	/* A user no other process runs as, so the limit counts only echod. */
	uid_t uid = 200000 + (uid_t)getpid();

	if (geteuid() != 0)
		fail_msg("this test runs echod as a user of its own and needs root");
	harness_run_as(uid, PROC_LIMIT);
	echod_start(&e, (const char *[]){"--max-connections", "100", NULL});
	clients_connect(&w, e.port, PROC_CLIENTS);
	clients_collect_settled(&w, 10000);
	print_message("# %u of %u clients served with RLIMIT_NPROC=%d\n", w.served, PROC_CLIENTS,
		      PROC_LIMIT);
	assert_true(w.served > 0);
	assert_true(w.served < PROC_LIMIT);
	assert_quiet_stall(&e, &w, "the process limit");
	/* Said once, clearly, not once per attempt. */
	unsigned said = echod_log_count(&e, "cannot fork");
	print_message("# fork failures logged in %u line(s)\n", said);
	assert_true(echod_wait_log(&e, "Resource temporarily unavailable", 0));
	assert_true(said >= 1 && said <= 3);
	assert_all_served(&w, 20000);
	/* Failures that come and go as processes exit are not said anew. */
	said = echod_log_count(&e, "cannot fork");
	print_message("# in %u line(s) by the end\n", said);
	assert_true(said <= 3);
	clients_close(&w);
	assert_int_equal(echod_stop(&e, 15000), 0);
}

int
main(void)
{
	struct CMUnitTest tests[4];
	size_t n = 0;

	tests[n++] =
	    (struct CMUnitTest)cmocka_unit_test_teardown(test_slow_clients, harness_teardown);
	/* A model where each connection has a process of its own cannot run
	 * out of fds under many clients; only fork() can fail for it. */
	if (model_is("fork"))
		tests[n++] = (struct CMUnitTest)cmocka_unit_test_teardown(
		    test_fork_fails_at_nproc_limit, harness_teardown);
	else
		tests[n++] = (struct CMUnitTest)cmocka_unit_test_teardown(
		    test_fds_run_out_under_1000_clients, harness_teardown);

	signal(SIGPIPE, SIG_IGN);
	return _cmocka_run_group_tests(harness_model(), tests, n, NULL, NULL);
}
