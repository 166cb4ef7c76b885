/* echod-bench: the udp mode. Each socket keeps a window of datagrams out;
 * an echo frees its slot and sends the next one, a datagram not back within
 * --udp-timeout is lost and its slot reused.
 *
 * A datagram: slot (4 bytes), socket id (4), sequence number (8), then
 * bytes derived from those, so an echo is verified without keeping a copy. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "bench.h"

#define UDP_HEADER 16
#define TICK_NS 10000000u

struct slot {
	uint64_t seq;
	uint64_t t_sent;
	int busy;
};

struct usock {
	int fd;
	uint32_t id;
	uint64_t next_seq;
	unsigned inflight;
	struct slot *slots;
};

struct uctx {
	struct worker *w;
	const struct bench_opts *o;
	int epfd;
	struct usock *s;
	int running;
	uint64_t t_end;
	uint64_t started;
	unsigned inflight;
	uint8_t *tx, *rx, *expect;
};

static void
make_datagram(const struct bench_opts *o, uint8_t *buf, uint32_t slot, uint32_t id, uint64_t seq)
{
	uint64_t s = o->seed ^ ((uint64_t)id << 40) ^ (seq * 0x9E3779B97F4A7C15ULL);

	memcpy(buf, &slot, 4);
	memcpy(buf + 4, &id, 4);
	memcpy(buf + 8, &seq, 8);
	rng_next(&s);
	rng_fill(&s, buf + UDP_HEADER, o->size - UDP_HEADER);
}

static int
may_send(struct uctx *u)
{
	return u->running && (u->w->quota == 0 || u->started < u->w->quota);
}

static void
send_one(struct uctx *u, struct usock *us, uint32_t slot, uint64_t now)
{
	struct bench_stats *st = &u->w->st;
	uint64_t seq = us->next_seq;

	make_datagram(u->o, u->tx, slot, us->id, seq);
	if (send(us->fd, u->tx, u->o->size, 0) < 0) {
		/* A full socket buffer is not a loss: the tick retries. */
		if (errno == ECONNREFUSED)
			st->refused++;
		else if (errno != EAGAIN && errno != EINTR && errno != ENOBUFS)
			st->resets++;
		return;
	}
	us->next_seq++;
	us->slots[slot] = (struct slot){ .seq = seq, .t_sent = now, .busy = 1 };
	us->inflight++;
	u->inflight++;
	u->started++;
}

static void
fill_window(struct uctx *u, struct usock *us, uint64_t now)
{
	for (uint32_t i = 0; i < u->o->window && may_send(u); i++)
		if (!us->slots[i].busy)
			send_one(u, us, i, now);
}

static void
free_slot(struct uctx *u, struct usock *us, struct slot *sl)
{
	sl->busy = 0;
	us->inflight--;
	u->inflight--;
}

/* Judges one echoed datagram of n bytes in u->rx. */
static void
on_datagram(struct uctx *u, struct usock *us, size_t n, uint64_t now)
{
	struct bench_stats *st = &u->w->st;
	uint32_t slot, id;
	uint64_t seq;

	if (n != u->o->size) {
		st->mismatches++;
		return;
	}
	memcpy(&slot, u->rx, 4);
	memcpy(&id, u->rx + 4, 4);
	memcpy(&seq, u->rx + 8, 8);
	if (id != us->id || slot >= u->o->window || seq >= us->next_seq) {
		st->mismatches++;
		return;
	}
	make_datagram(u->o, u->expect, slot, id, seq);
	if (memcmp(u->expect, u->rx, n) != 0) {
		st->mismatches++;
		return;
	}
	if (!us->slots[slot].busy || us->slots[slot].seq != seq) {
		st->late++; /* already counted lost, or a duplicate */
		return;
	}
	if (u->o->count || now <= u->t_end) {
		st->ops++;
		hist_add(&st->hist, now - us->slots[slot].t_sent);
	}
	free_slot(u, us, &us->slots[slot]);
	if (may_send(u))
		send_one(u, us, slot, now);
}

static void
on_readable(struct uctx *u, struct usock *us, uint64_t now)
{
	/* Bounded: at most a window's worth, then let the others run. */
	for (unsigned i = 0; i < u->o->window; i++) {
		ssize_t n = recv(us->fd, u->rx, u->o->size + 1, MSG_TRUNC);

		if (n < 0) {
			if (errno == ECONNREFUSED) {
				u->w->st.refused++;
				continue;
			}
			if (errno != EAGAIN && errno != EINTR)
				u->w->st.resets++;
			return;
		}
		on_datagram(u, us, (size_t)n, now);
	}
}

static void
tick(struct uctx *u, uint64_t now)
{
	uint64_t limit = secs_to_ns(u->o->udp_timeout);

	for (unsigned i = 0; i < u->w->n; i++) {
		struct usock *us = &u->s[i];

		for (unsigned j = 0; j < u->o->window; j++) {
			struct slot *sl = &us->slots[j];

			if (sl->busy && now - sl->t_sent > limit) {
				u->w->st.lost++;
				free_slot(u, us, sl);
			}
		}
		fill_window(u, us, now);
	}
}

static int
open_socket(struct uctx *u, struct usock *us)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = us };
	const struct bench_opts *o = u->o;

	us->fd = socket(o->target.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (us->fd < 0)
		return -errno;
	/* Connected: the kernel drops datagrams from anyone but the server
	 * and reports its ICMP port unreachable as ECONNREFUSED. */
	if (connect(us->fd, (const struct sockaddr *)&o->target, o->target_len) < 0)
		return -errno;
	if (epoll_ctl(u->epfd, EPOLL_CTL_ADD, us->fd, &ev) < 0)
		return -errno;
	return 0;
}

static void
run(struct uctx *u)
{
	struct epoll_event ev[64];
	uint64_t now, next_tick, stop_by = UINT64_MAX;

	u->w->t0 = now = now_ns();
	u->t_end = u->o->count ? UINT64_MAX : now + secs_to_ns(u->o->secs);
	u->running = 1;
	next_tick = now + TICK_NS;
	for (unsigned i = 0; i < u->w->n; i++)
		fill_window(u, &u->s[i], now);
	/* After the deadline, wait for what is out: each slot either comes
	 * back or times out, so this ends within --udp-timeout. */
	while (u->running || (u->inflight > 0 && now < stop_by)) {
		int n = epoll_wait(u->epfd, ev, 64, 10);

		now = now_ns();
		for (int i = 0; i < n; i++)
			on_readable(u, ev[i].data.ptr, now);
		if (now >= next_tick) {
			tick(u, now);
			next_tick = now + TICK_NS;
		}
		if (u->running && (now >= u->t_end || (u->o->count && !may_send(u)))) {
			u->running = 0;
			u->w->t_stop = u->o->count ? now : u->t_end;
			stop_by = now + secs_to_ns(u->o->udp_timeout) + 2 * TICK_NS;
		}
	}
	if (u->o->count)
		u->w->t_stop = now;
	u->w->st.lost += u->inflight;
}

void *
udp_worker(void *arg)
{
	struct worker *w = arg;
	struct uctx *u;
	int failed = 0;

	u = calloc(1, sizeof(*u));
	if (!u)
		abort();
	u->w = w;
	u->o = w->o;
	u->s = calloc(w->n, sizeof(*u->s));
	u->tx = malloc(u->o->size + 1);
	u->rx = malloc(u->o->size + 1);
	u->expect = malloc(u->o->size + 1);
	u->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!u->s || !u->tx || !u->rx || !u->expect || u->epfd < 0)
		abort();
	for (unsigned i = 0; i < w->n; i++) {
		struct usock *us = &u->s[i];
		int r;

		us->id = w->first + i;
		us->slots = calloc(u->o->window, sizeof(*us->slots));
		if (!us->slots)
			abort();
		r = open_socket(u, us);
		if (r < 0) {
			stats_connfail(&w->st, -r);
			failed = 1;
		}
	}
	phase_wait(w);
	if (!failed)
		run(u);
	else
		w->t0 = w->t_stop = now_ns();
	for (unsigned i = 0; i < w->n; i++) {
		if (u->s[i].fd >= 0)
			close(u->s[i].fd);
		free(u->s[i].slots);
	}
	close(u->epfd);
	free(u->tx);
	free(u->rx);
	free(u->expect);
	free(u->s);
	free(u);
	return NULL;
}
