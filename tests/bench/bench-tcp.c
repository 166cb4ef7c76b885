/* echod-bench: the TCP modes. rr, crr and hold send a random request and
 * wait for exactly its echo; bulk streams the pattern both ways at once.
 * Each worker thread runs its own level-triggered epoll loop. */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/sockios.h>

#include "bench.h"

/* More connects in flight than this per thread only overflow the server's
 * SYN and accept queues, and a dropped SYN costs a 1 s retransmission. */
#define MAX_PENDING_CONNECTS 256
#define SCAN_INTERVAL_NS 100000000u

enum cstate {
	C_CLOSED,
	C_CONNECTING,
	C_READY,  /* connected, no request outstanding */
	C_REQ,    /* rr, crr, hold: a request is out */
	C_STREAM, /* bulk: writing and reading */
	C_DRAIN,  /* bulk: no longer writing, reading what is still owed */
};

struct tconn {
	int fd;
	enum cstate state;
	uint32_t events; /* current epoll interest */
	size_t sent, recvd;
	uint64_t t_start, deadline;
	uint64_t tx_off, rx_off; /* bulk */
	unsigned key;            /* bulk: where the stream starts in the pattern */
	uint8_t *tx;             /* rr, crr, hold: the request being echoed */
};

struct tctx {
	struct worker *w;
	const struct bench_opts *o;
	int epfd;
	struct tconn *c;
	unsigned active;  /* connections in CONNECTING, REQ, STREAM or DRAIN */
	int running;      /* new operations may start */
	uint64_t t_end;   /* end of the measured time; UINT64_MAX in count mode */
	uint64_t started; /* operations started (count mode) */
	uint64_t next_scan;
	unsigned next_source;
	uint8_t rx[PATTERN_SPAN];
};

static void
watch(struct tctx *t, struct tconn *c, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = c };

	if (c->events == events)
		return;
	/* Cannot fail for a socket this thread added: treat it as fatal. */
	if (epoll_ctl(t->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		abort();
	c->events = events;
}

static int
is_busy(enum cstate s)
{
	return s == C_CONNECTING || s == C_REQ || s == C_STREAM || s == C_DRAIN;
}

static void
conn_close(struct tctx *t, struct tconn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	if (is_busy(c->state))
		t->active--;
	c->fd = -1;
	c->state = C_CLOSED;
	c->events = 0;
}

/* err: a positive errno, 0 for a premature EOF, -1 for a mismatch. */
static void
count_failure(struct bench_stats *st, int err, int connecting)
{
	if (err < 0)
		st->mismatches++;
	else if (err == 0)
		st->eofs++;
	else if (err == ECONNREFUSED)
		st->refused++;
	else if (err == ETIMEDOUT)
		st->timeouts++;
	else if (connecting)
		stats_connfail(st, err);
	else
		st->resets++;
}

static void conn_start(struct tctx *t, struct tconn *c, uint64_t now);

static void
conn_fail(struct tctx *t, struct tconn *c, int err, uint64_t now)
{
	count_failure(&t->w->st, err, c->state == C_CONNECTING);
	conn_close(t, c);
	/* crr replaces a failed attempt like a finished one; the persistent
	 * modes lose the connection, which the error count shows. */
	if (t->o->mode == MODE_CRR && t->running)
		conn_start(t, c, now);
}

static int
bind_source(struct tctx *t, int fd)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	unsigned i = t->next_source++ % t->o->sources;
	int one = 1;

	/* Leave the port to connect(), which can then reuse one port for
	 * different destinations: that is what gets past the port range. */
	if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) < 0)
		return -errno;
	sin.sin_addr.s_addr = htonl(0x7f000001u + i);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		return -errno;
	return 0;
}

/* Starts a non-blocking connect; failures are counted, not returned. */
static void
tcp_connect(struct tctx *t, struct tconn *c, uint64_t now)
{
	struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
	const struct bench_opts *o = t->o;
	int fd, one = 1, r;

	fd = socket(o->target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		count_failure(&t->w->st, errno, 1);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (o->sources > 1) {
		r = bind_source(t, fd);
		if (r < 0) {
			close(fd);
			count_failure(&t->w->st, -r, 1);
			return;
		}
	}
	if (connect(fd, (const struct sockaddr *)&o->target, o->target_len) < 0 &&
	    errno != EINPROGRESS) {
		close(fd);
		count_failure(&t->w->st, errno, 1);
		return;
	}
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		abort();
	c->fd = fd;
	c->events = EPOLLOUT;
	c->state = C_CONNECTING;
	c->t_start = now;
	c->deadline = now + secs_to_ns(o->timeout);
	t->active++;
}

static void
req_send(struct tctx *t, struct tconn *c, uint64_t now)
{
	size_t size = t->o->size;

	while (c->sent < size) {
		ssize_t n = send(c->fd, c->tx + c->sent, size - c->sent, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			conn_fail(t, c, errno, now);
			return;
		}
		c->sent += (size_t)n;
	}
	watch(t, c, c->sent < size ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

/* Sends a fresh random request. crr keeps t_start from the connect, so
 * its latency covers the whole connection. */
static void
req_start(struct tctx *t, struct tconn *c, uint64_t now)
{
	rng_fill(&t->w->rng, c->tx, t->o->size);
	c->sent = c->recvd = 0;
	if (c->state != C_CONNECTING)
		c->t_start = now;
	if (!is_busy(c->state))
		t->active++;
	c->state = C_REQ;
	c->deadline = now + secs_to_ns(t->o->timeout);
	if (t->o->mode != MODE_CRR)
		t->started++;
	req_send(t, c, now);
}

static int
may_start(struct tctx *t)
{
	return t->running && (t->w->quota == 0 || t->started < t->w->quota);
}

static void
req_done(struct tctx *t, struct tconn *c, uint64_t now)
{
	struct bench_stats *st = &t->w->st;

	if (t->o->count || now <= t->t_end) {
		st->ops++;
		hist_add(&st->hist, now - c->t_start);
	}
	if (t->o->mode == MODE_HOLD)
		st->echoed++;
	if (t->o->mode == MODE_CRR) {
		/* A reset leaves no TIME_WAIT socket: tens of thousands of
		 * them make connect() slow to find a free port, and the
		 * client, not the server, sets the rate. */
		if (t->o->close_rst)
			(void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER,
					 &(struct linger){.l_onoff = 1, .l_linger = 0},
					 sizeof(struct linger));
		conn_close(t, c);
		if (may_start(t))
			conn_start(t, c, now);
		return;
	}
	if (t->o->mode == MODE_RR && may_start(t)) {
		req_start(t, c, now);
		return;
	}
	c->state = C_READY;
	t->active--;
	watch(t, c, EPOLLIN);
}

static void
req_recv(struct tctx *t, struct tconn *c, uint64_t now)
{
	ssize_t n = recv(c->fd, t->rx, sizeof(t->rx), 0);

	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			conn_fail(t, c, errno, now);
		return;
	}
	if (n == 0) {
		conn_fail(t, c, 0, now);
		return;
	}
	/* An echo can never run ahead of what was sent. */
	if (c->recvd + (size_t)n > c->sent || memcmp(t->rx, c->tx + c->recvd, (size_t)n) != 0) {
		conn_fail(t, c, -1, now);
		return;
	}
	c->recvd += (size_t)n;
	if (c->recvd == t->o->size)
		req_done(t, c, now);
}

static void
stream_send(struct tctx *t, struct tconn *c, uint64_t now)
{
	size_t pos = (c->key + c->tx_off) % PATTERN_PERIOD;
	ssize_t n = send(c->fd, pattern + pos, PATTERN_SPAN, MSG_NOSIGNAL);

	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			conn_fail(t, c, errno, now);
		return;
	}
	c->tx_off += (uint64_t)n;
}

static void
stream_recv(struct tctx *t, struct tconn *c, uint64_t now)
{
	ssize_t n = recv(c->fd, t->rx, sizeof(t->rx), 0);
	size_t pos = (c->key + c->rx_off) % PATTERN_PERIOD;

	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			conn_fail(t, c, errno, now);
		return;
	}
	if (n == 0) {
		conn_fail(t, c, 0, now);
		return;
	}
	if (c->rx_off + (uint64_t)n > c->tx_off || memcmp(t->rx, pattern + pos, (size_t)n) != 0) {
		conn_fail(t, c, -1, now);
		return;
	}
	c->rx_off += (uint64_t)n;
	if (now <= t->t_end)
		t->w->st.bytes += (uint64_t)n;
	if (c->state == C_DRAIN && c->rx_off == c->tx_off)
		conn_close(t, c);
}

static void
stream_start(struct tctx *t, struct tconn *c, uint64_t now)
{
	c->state = C_STREAM;
	c->tx_off = c->rx_off = 0;
	c->key = (unsigned)(rng_next(&t->w->rng) % PATTERN_PERIOD);
	c->deadline = UINT64_MAX;
	t->active++;
	watch(t, c, EPOLLIN | EPOLLOUT);
}

/* What a new connection or slot does first, by mode. */
static void
conn_start(struct tctx *t, struct tconn *c, uint64_t now)
{
	switch (c->state) {
	case C_CLOSED:
		/* crr counts attempts, so a quota is never overshot. */
		t->started++;
		tcp_connect(t, c, now);
		break;
	case C_READY:
		if (t->o->mode == MODE_BULK)
			stream_start(t, c, now);
		else
			req_start(t, c, now);
		break;
	default:
		break;
	}
}

static void
on_connected(struct tctx *t, struct tconn *c, uint64_t now)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		conn_fail(t, c, err, now);
		return;
	}
	if (t->o->mode == MODE_CRR) {
		req_start(t, c, now);
		return;
	}
	c->state = C_READY;
	t->active--;
	watch(t, c, EPOLLIN);
}

/* Bytes or an EOF on a connection that owes nothing: both are the
 * server's fault (or an idle timeout, which hold is there to notice). */
static void
idle_recv(struct tctx *t, struct tconn *c, uint64_t now)
{
	ssize_t n = recv(c->fd, t->rx, sizeof(t->rx), 0);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	conn_fail(t, c, n < 0 ? errno : n == 0 ? 0 : -1, now);
}

static void
on_event(struct tctx *t, struct tconn *c, uint32_t events, uint64_t now)
{
	int in = events & (EPOLLIN | EPOLLERR | EPOLLHUP);

	switch (c->state) {
	case C_CONNECTING:
		on_connected(t, c, now);
		break;
	case C_READY:
		idle_recv(t, c, now);
		break;
	case C_REQ:
		if (events & EPOLLOUT)
			req_send(t, c, now);
		if (in && c->state == C_REQ)
			req_recv(t, c, now);
		break;
	case C_STREAM:
	case C_DRAIN:
		if ((events & EPOLLOUT) && c->state == C_STREAM)
			stream_send(t, c, now);
		if (in && is_busy(c->state))
			stream_recv(t, c, now);
		break;
	case C_CLOSED:
		break;
	}
}

/* A bulk stream that timed out: says on stderr where the missing bytes
 * are, from this end. Bytes still in our send queue (unacked, retransmits,
 * a backoff) mean TCP has not delivered them to the server; a send queue
 * that is empty while echoes are missing means the server holds them. */
static void
report_stall(const struct tctx *t, const struct tconn *c)
{
	struct tcp_info ti = { 0 };
	socklen_t len = sizeof(ti);
	int inq = -1, outq = -1, unsent = -1;

	(void)ioctl(c->fd, SIOCINQ, &inq);
	(void)ioctl(c->fd, SIOCOUTQ, &outq);
	(void)ioctl(c->fd, SIOCOUTQNSD, &unsent);
	if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		memset(&ti, 0, sizeof(ti));
	fprintf(stderr,
		"echod-bench: bulk connection %u timed out %s: sent %" PRIu64 ", echoed %" PRIu64
		" (%" PRIu64 " missing); here: in-queue %d, out-queue %d (%d unsent), tcp state %u,"
		" retransmits %u, probes %u, backoff %u, rto %u ms, unacked %u,"
		" last data sent %u ms ago, last data received %u ms ago, last ack %u ms ago,"
		" total retransmits %u\n",
		t->w->first + (unsigned)(c - t->c), c->state == C_DRAIN ? "draining" : "streaming",
		c->tx_off, c->rx_off, c->tx_off - c->rx_off, inq, outq, unsent, ti.tcpi_state,
		ti.tcpi_retransmits, ti.tcpi_probes, ti.tcpi_backoff, ti.tcpi_rto / 1000,
		ti.tcpi_unacked, ti.tcpi_last_data_sent, ti.tcpi_last_data_recv,
		ti.tcpi_last_ack_recv, ti.tcpi_total_retrans);
}

static void
scan_deadlines(struct tctx *t, uint64_t now)
{
	if (now < t->next_scan)
		return;
	t->next_scan = now + SCAN_INTERVAL_NS;
	for (unsigned i = 0; i < t->w->n; i++) {
		struct tconn *c = &t->c[i];

		if (is_busy(c->state) && now > c->deadline) {
			if (c->state == C_STREAM || c->state == C_DRAIN)
				report_stall(t, c);
			conn_fail(t, c, ETIMEDOUT, now);
		}
		/* A crr slot whose connect() failed at once (say, out of
		 * ports) is retried here: a back-off, not a spin. */
		else if (t->o->mode == MODE_CRR && c->state == C_CLOSED && may_start(t))
			conn_start(t, c, now);
	}
}

/* Runs the loop once: waits at most until `until` (and never more than
 * the deadline scan interval), then handles what arrived. */
static uint64_t
poll_once(struct tctx *t, uint64_t until)
{
	struct epoll_event ev[256];
	uint64_t now = now_ns();
	int ms = 0, n;

	if (until > now) {
		uint64_t wait = until - now;

		if (wait > SCAN_INTERVAL_NS)
			wait = SCAN_INTERVAL_NS;
		ms = (int)((wait + 999999) / 1000000);
	}
	n = epoll_wait(t->epfd, ev, 256, ms);
	now = now_ns();
	for (int i = 0; i < n; i++)
		on_event(t, ev[i].data.ptr, ev[i].events, now);
	scan_deadlines(t, now);
	return now;
}

/* Connects every slot, at most MAX_PENDING_CONNECTS at a time. Bounded:
 * each connect ends by --timeout. */
static void
connect_all(struct tctx *t)
{
	unsigned next = 0;
	uint64_t now = now_ns();

	while (next < t->w->n || t->active > 0) {
		while (next < t->w->n && t->active < MAX_PENDING_CONNECTS)
			tcp_connect(t, &t->c[next++], now);
		now = poll_once(t, now + SCAN_INTERVAL_NS);
	}
}

static uint64_t
count_state(struct tctx *t, enum cstate s)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < t->w->n; i++)
		n += t->c[i].state == s;
	return n;
}

/* rr, crr, bulk: start every slot, run to the deadline or the quota, then
 * let what is in flight finish (bounded by --timeout per operation). */
static void
run_measured(struct tctx *t)
{
	const struct bench_opts *o = t->o;
	uint64_t now;

	t->w->t0 = now = now_ns();
	t->t_end = o->count ? UINT64_MAX : now + secs_to_ns(o->secs);
	t->running = 1;
	/* A persistent connection that failed to connect stays closed: the
	 * error count already says so. */
	for (unsigned i = 0; i < t->w->n; i++)
		if (may_start(t) && (o->mode == MODE_CRR || t->c[i].state == C_READY))
			conn_start(t, &t->c[i], now);
	while (t->running) {
		now = poll_once(t, t->t_end);
		if (now >= t->t_end || (o->count && t->active == 0))
			t->running = 0;
	}
	t->w->t_stop = o->count ? now : t->t_end;
	if (o->mode == MODE_BULK) {
		for (unsigned i = 0; i < t->w->n; i++) {
			struct tconn *c = &t->c[i];

			if (c->state != C_STREAM)
				continue;
			c->state = C_DRAIN;
			c->deadline = now + secs_to_ns(o->timeout);
			watch(t, c, EPOLLIN);
			if (c->rx_off == c->tx_off)
				conn_close(t, c);
		}
	}
	while (t->active > 0)
		now = poll_once(t, now + SCAN_INTERVAL_NS);
	if (o->count)
		t->w->t_stop = now;
}

/* hold: connect all, idle, echo once on each, and stop at each step so
 * main() can measure the server in between. */
static void
run_hold(struct tctx *t)
{
	uint64_t now, until;

	connect_all(t);
	t->w->st.held = count_state(t, C_READY);
	phase_wait(t->w); /* everyone connected */
	now = now_ns();
	until = now + secs_to_ns(t->o->secs);
	while (now < until)
		now = poll_once(t, until);
	phase_wait(t->w); /* main() has sampled the idle server */
	t->w->t0 = now = now_ns();
	t->t_end = UINT64_MAX;
	for (unsigned i = 0; i < t->w->n; i++)
		if (t->c[i].state == C_READY)
			req_start(t, &t->c[i], now);
	while (t->active > 0)
		now = poll_once(t, now + SCAN_INTERVAL_NS);
	t->w->t_stop = now;
	phase_wait(t->w); /* all echoed: main() samples the server again */
	phase_wait(t->w); /* main() is done: close */
}

void *
tcp_worker(void *arg)
{
	struct worker *w = arg;
	struct tctx *t;
	uint8_t *tx = NULL;

	t = calloc(1, sizeof(*t));
	if (!t)
		abort();
	t->w = w;
	t->o = w->o;
	t->c = calloc(w->n, sizeof(*t->c));
	if (t->o->mode != MODE_BULK)
		tx = malloc((size_t)w->n * t->o->size);
	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!t->c || (t->o->mode != MODE_BULK && !tx) || t->epfd < 0)
		abort();
	for (unsigned i = 0; i < w->n; i++) {
		t->c[i].fd = -1;
		if (tx)
			t->c[i].tx = tx + (size_t)i * t->o->size;
	}

	switch (t->o->mode) {
	case MODE_HOLD:
		run_hold(t);
		break;
	case MODE_CRR:
		phase_wait(w);
		run_measured(t);
		break;
	default:
		connect_all(t);
		phase_wait(w);
		run_measured(t);
		break;
	}

	for (unsigned i = 0; i < w->n; i++)
		conn_close(t, &t->c[i]);
	close(t->epfd);
	free(tx);
	free(t->c);
	free(t);
	return NULL;
}
