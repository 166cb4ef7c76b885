/* The worker's intake: when it takes connections (MaxConnections=, its fair
 * share, the fd limit) and how: accept() on the listeners (prefork), or
 * the passfd channel from the supervisor, with the bytes owed on a
 * connection kept across a restart or reload. */
#include "worker-internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>

#include "accept.h"
#include "admission.h"
#include "fdpass.h"
#include "handover.h"
#include "log.h"
#include "util.h"

/* Fds kept free beyond the connections' own, for what a worker may open
 * along the way (the journal's socket, say). */
#define FD_SPARE 4

/* --- intake: listeners in and out of the epoll set --- */

static bool
worker_has_room(const struct worker *w)
{
	return w->n_connections < w->capacity;
}

void
worker_intake_poll(struct worker *w, bool on)
{
	for (size_t i = 0; i < w->n_listeners; i++) {
		struct listener_source *l = &w->listeners[i];
		if (l->polled == on)
			continue;
		if (on) {
			/* EPOLLEXCLUSIVE: one waiting worker wakes per new
			 * connection, not all of them. It cannot be combined
			 * with EPOLL_CTL_MOD, hence add and delete. */
			struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE,
						 .data.ptr = &l->source};
			if (epoll_ctl(w->epoll_fd, EPOLL_CTL_ADD, l->listener->fd, &ev) < 0) {
				log_warning_errno(errno, "watching %s: %m", l->listener->name);
				continue;
			}
		} else {
			epoll_ctl(w->epoll_fd, EPOLL_CTL_DEL, l->listener->fd, NULL);
		}
		l->polled = on;
	}
	w->accepting = on;
}

/* EPOLLEXCLUSIVE wakes waiters last-in first-out, so left alone one worker
 * takes nearly every connection while the others idle. A worker that would
 * hold more than its share steps back and lets a peer accept.
 *
 * The share has an eighth of slack: a worker that stepped back looks again
 * only every ACCEPT_RETRY_MS, and with no slack (the mean plus one) every
 * worker would soon be over and waiting, taking turns one or two
 * connections at a time: a burst of 18,000 connects took 30 s and
 * overflowed the accept queue. With it, each turn takes an eighth more
 * (18,000 in 2 s), and the busiest worker holds at most about 1.125 times
 * the mean. */
static bool
over_fair_share(const struct worker *w)
{
	const struct scoreboard *sb = w->setup->scoreboard;
	uint32_t workers, total, mean;

	if (!sb)
		return false;
	workers = scoreboard_workers(sb);
	if (workers < 2)
		return false;
	total = ledger_reserved(sb);
	mean = (total + 1) / workers;
	return SB_GET(w->slot->active) + 1 > mean + mean / 8 + 1;
}

static bool
at_connection_cap(const struct worker *w)
{
	return ledger_full(w->setup->scoreboard);
}

/* Decides whether this worker should be accepting now, and makes it so. */
void
worker_intake_update(struct worker *w, uint64_t now)
{
	bool want = !w->draining && worker_has_room(w) &&
		    (w->accept_resume_ms == 0 || now >= w->accept_resume_ms);

	if (w->accept_resume_ms && now >= w->accept_resume_ms)
		w->accept_resume_ms = 0;
	if (want && w->capped) {
		w->capped = at_connection_cap(w) || over_fair_share(w);
		want = !w->capped;
	}
	if (want != w->accepting)
		worker_intake_poll(w, want);
}

/* --- intake: prefork accepts --- */

/* Counts a connection before it exists, so that MaxConnections= holds
 * across workers; undone by worker_connection_close() or on failure. */
static bool
admit_one(struct worker *w)
{
	if (w->ledger.reserved && w->ledger.sb && over_fair_share(w)) {
		w->capped = true;
		return false;
	}
	if (!ledger_admit(&w->ledger)) {
		w->capped = true;
		return false;
	}
	return true;
}

void
worker_intake_accept(struct worker *w, const struct listener *l, uint64_t now)
{
	unsigned rate = w->setup->config->connection_rate_limit;

	for (int i = 0; i < ACCEPT_BATCH && worker_has_room(w); i++) {
		struct sockaddr_storage peer;
		int fd;

		if (!admit_one(w))
			return;
		if (!admission_rate_take(w->setup->scoreboard, rate, now, &w->accept_resume_ms)) {
			ledger_unadmit(&w->ledger);
			return;
		}
		fd = accept_next_peer(l->fd, &peer, NULL);
		if (fd >= 0) {
			ledger_take(&w->ledger, LEDGER_ACCEPTED);
			worker_add_connection(w, fd, LEDGER_ACCEPTED, l->is_tcp,
					      (struct sockaddr *)&peer, NULL, 0);
			continue;
		}
		admission_rate_undo(w->setup->scoreboard, rate);
		ledger_unadmit(&w->ledger);
		if (accept_should_pause(fd)) {
			log_warning_errno(fd, "accepting on %s: %m; pausing for %d ms", l->name,
					  ACCEPT_PAUSE_MS);
			w->accept_resume_ms = now + ACCEPT_PAUSE_MS;
		}
		return;
	}
}

/* --- intake: the channel --- */

/* Takes fd: a connection the supervisor accepted. */
static void
channel_connection(struct worker *w, int fd)
{
	ledger_take(&w->ledger, LEDGER_SENT);
	worker_add_connection(w, fd, LEDGER_SENT, false, NULL, NULL, 0);
}

void
worker_intake_kept(struct worker *w, int fd, int owed_fd)
{
	char *owed = NULL;
	size_t owed_len = 0;

	if (owed_fd >= 0) {
		int r = handover_owed_take(owed_fd, fd, &owed, &owed_len);
		if (r < 0 && r != -ESTALE)
			log_warning_errno(r, "reading the bytes owed on a kept connection: %m");
		close(owed_fd);
	}
	/* Served once, where it was first accepted: not again here. */
	ledger_take(&w->ledger, LEDGER_KEPT);
	worker_add_connection(w, fd, LEDGER_KEPT, false, NULL, owed, owed_len);
}

void
worker_intake_receive(struct worker *w, uint64_t now)
{
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		enum fdpass_tag tag;
		int fd, r;

		r = fdpass_recv(w->setup->channel, &tag, &fd);
		if (r == -EAGAIN)
			return;
		if (r == -ECONNRESET) {
			worker_start_drain(w, "supervisor gone", now);
			return;
		}
		if (r < 0) {
			/* The supervisor reserved it: the reservation goes with it.
			 * -EMFILE: the kernel could not give us the fd (we are at
			 * our fd limit) and closed the connection. */
			ledger_lose(&w->ledger);
			continue;
		}
		switch (tag) {
		case FDPASS_OWED:
			/* For the kept connection that comes next. */
			if (w->pending_owed_fd >= 0)
				close(w->pending_owed_fd);
			w->pending_owed_fd = fd;
			break;
		case FDPASS_KEPT:
			worker_intake_kept(w, fd, TAKE_FD(w->pending_owed_fd));
			break;
		case FDPASS_CONN:
			/* The supervisor set TCP_NODELAY already: it knows the
			 * listener. */
			channel_connection(w, fd);
			break;
		}
	}
}

/* --- intake: as many connections as the fd limit leaves room for --- */

/* Each connection costs one fd. Taking no more than the fd limit leaves
 * room for means no accept() fails with EMFILE (which could only be
 * retried blindly) and no passed fd is dropped by the kernel; the clients
 * beyond wait in the backlog until a connection closes. */
static unsigned
fd_capacity(unsigned wanted)
{
	struct rlimit rl;
	struct dirent *de;
	unsigned open_fds = 0;
	DIR *d;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return wanted;
	d = opendir("/proc/self/fd");
	if (!d)
		return wanted; /* unknown: EMFILE is handled when it comes */
	while ((de = readdir(d)))
		open_fds += de->d_name[0] != '.';
	closedir(d);
	/* The directory's own fd was counted and is closed again: a spare. */
	if (rl.rlim_cur <= open_fds + FD_SPARE)
		return 1;
	if (rl.rlim_cur - open_fds - FD_SPARE >= wanted)
		return wanted;
	return (unsigned)(rl.rlim_cur - open_fds - FD_SPARE);
}

void
worker_intake_set_capacity(struct worker *w)
{
	unsigned wanted = w->setup->config->worker_connections;

	/* Only a worker that takes connections has room to find: a
	 * connection process has its one, fork's datagram worker none. */
	if (!w->setup->accept && w->setup->channel < 0) {
		w->capacity = wanted;
		return;
	}
	w->capacity = fd_capacity(wanted);
	SB_SET(w->slot->capacity, w->capacity);
	if (w->capacity < wanted)
		log_notice("the fd limit (RLIMIT_NOFILE) leaves room for %u connection(s), "
			   "fewer than WorkerConnections=%u: clients beyond wait to be accepted",
			   w->capacity, wanted);
}
