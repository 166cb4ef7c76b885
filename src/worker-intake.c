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

#define ACCEPT_BATCH 64
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
 * takes nearly every connection while the others idle. A worker that
 * holds more than its share steps back (leaves the epoll set) and lets a
 * peer accept.
 *
 * The share has an eighth of slack: a worker that stepped back looks again
 * only every CAP_RETRY_MS, and with no slack (the mean plus one) every
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
	workers = SB_GET(sb->header->workers);
	if (workers < 2)
		return false;
	total = SB_GET(sb->header->active_total);
	mean = (total + 1) / workers;
	return SB_GET(w->slot->active) + 1 > mean + mean / 8 + 1;
}

static bool
at_connection_cap(const struct worker *w)
{
	const struct scoreboard *sb = w->setup->scoreboard;

	return SB_GET(sb->header->active_total) >= SB_GET(sb->header->max_connections);
}

/* Whether this worker could accept now, whatever its share. */
static bool
may_accept(struct worker *w, uint64_t now)
{
	if (w->accept_resume_ms && now >= w->accept_resume_ms)
		w->accept_resume_ms = 0;
	if (w->hold == HOLD_LIMIT && !at_connection_cap(w))
		w->hold = HOLD_NONE;
	return !w->draining && worker_has_room(w) && w->accept_resume_ms == 0 &&
	       w->hold != HOLD_LIMIT;
}

/* Decides whether this worker should be watching its listeners now, and
 * makes it so. Putting a listener back in the epoll set reports what is
 * already queued on it: a connection left waiting while this worker was
 * out is found as it comes back. */
void
worker_intake_update(struct worker *w, uint64_t now)
{
	bool want = may_accept(w, now);

	if (want && w->hold == HOLD_SHARE) {
		if (over_fair_share(w))
			want = false;
		else
			w->hold = HOLD_NONE;
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
	if (w->setup->release_reservations && w->setup->scoreboard &&
	    !scoreboard_reserve(w->setup->scoreboard))
		return false;
	SB_ADD(w->slot->active, 1);
	return true;
}

static void
admit_undo(struct worker *w)
{
	SB_SUB(w->slot->active, 1);
	if (w->setup->release_reservations && w->setup->scoreboard)
		scoreboard_release(w->setup->scoreboard);
}

/* The kernel woke this worker, and no other, for what is queued on l: it
 * accepts until the queue is empty, or hands the wakeup on. Every way out
 * of this loop either leaves nothing queued, or stays in the epoll set
 * (level-triggered: the rest is reported again), or is a reason that
 * stops every worker alike and is looked at again (MaxConnections=,
 * ConnectionRateLimit=: see worker_intake_update()), or rings the
 * doorbell so that peers with room look. Fair share never stops it
 * here: a worker over its share steps back only once the queue is empty,
 * so the wakeup it was given is never lost with it. */
void
worker_intake_accept(struct worker *w, const struct listener *l, uint64_t now)
{
	unsigned rate = w->setup->config->connection_rate_limit;

	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage peer;
		int fd;

		if (!worker_has_room(w)) {
			/* WorkerConnections= or the fd limit: this worker is
			 * full, a peer may not be. */
			scoreboard_ring(w->setup->scoreboard);
			return;
		}
		if (!admit_one(w)) {
			w->hold = HOLD_LIMIT;
			return;
		}
		if (!admission_rate_take(w->setup->scoreboard, rate, now, &w->accept_resume_ms)) {
			admit_undo(w);
			return;
		}
		fd = accept_next_peer(l->fd, &peer, NULL);
		if (fd >= 0) {
			SB_ADD(w->slot->served, 1);
			worker_add_connection(w, fd, l->is_tcp, (struct sockaddr *)&peer, NULL, 0);
			continue;
		}
		admission_rate_undo(w->setup->scoreboard, rate);
		admit_undo(w);
		if (accept_should_pause(fd)) {
			log_warning_errno(fd, "accepting on %s: %m; pausing for %d ms", l->name,
					  ACCEPT_PAUSE_MS);
			w->accept_resume_ms = now + ACCEPT_PAUSE_MS;
			scoreboard_ring(w->setup->scoreboard);
		} else if (over_fair_share(w)) {
			w->hold = HOLD_SHARE;
		}
		return;
	}
}

void
worker_intake_doorbell(struct worker *w, uint64_t now)
{
	uint64_t rings;

	/* Edge-triggered: every ring already woke every watcher; reading
	 * only keeps the counter small. */
	(void)!read(w->setup->scoreboard->doorbell, &rings, sizeof(rings));
	if (!may_accept(w, now))
		return;
	/* Whatever its share: a peer could not take what is queued. Should a
	 * batch not empty the queue, the listeners go back into the epoll
	 * set (worker_intake_update()), which reports the rest. */
	w->hold = HOLD_NONE;
	for (size_t i = 0; i < w->n_listeners; i++)
		worker_intake_accept(w, w->listeners[i].listener, now);
}

/* --- intake: passfd's channel --- */

void
worker_intake_owed_drop(struct worker *w)
{
	free(w->pending_owed);
	w->pending_owed = NULL;
	w->pending_owed_len = 0;
}

/* A restored connection's owed bytes come as a sealed memfd just before
 * it: kept until the connection arrives. Takes fd. */
static void
channel_owed(struct worker *w, int fd)
{
	int r;

	worker_intake_owed_drop(w);
	r = handover_owed_decode(fd, WORKER_BUFFER_SIZE, &w->pending_owed_id, &w->pending_owed,
				 &w->pending_owed_len);
	close(fd);
	if (r < 0)
		log_warning_errno(r, "reading the bytes owed on a restored connection: %m");
}

/* Takes fd: the owed bytes received just before belong to it if the ids
 * match (a send that failed half-way can leave others behind). */
static void
channel_connection(struct worker *w, int fd)
{
	uint64_t id;

	if (w->pending_owed && (handover_socket_id(fd, &id) < 0 || id != w->pending_owed_id))
		worker_intake_owed_drop(w);
	/* Taken, then active, in adjacent steps with no system call between
	 * (where a SIGKILL lands): the supervisor counts what a dead worker
	 * held as active + sent - taken, so a connection is always counted
	 * once, never twice (which would release one reservation too many). */
	SB_ADD(w->slot->served, 1);
	SB_ADD(w->slot->active, 1);
	worker_add_connection(w, fd, false, NULL, TAKE_PTR(w->pending_owed), w->pending_owed_len);
	w->pending_owed_len = 0;
}

void
worker_intake_receive(struct worker *w, uint64_t now)
{
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		int fd, r;

		r = fdpass_recv(w->setup->channel, &fd);
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
			SB_ADD(w->slot->lost, 1);
			if (w->setup->release_reservations && w->setup->scoreboard)
				scoreboard_release(w->setup->scoreboard);
			continue;
		}
		if (handover_is_owed(fd)) {
			channel_owed(w, fd);
			continue;
		}
		/* The supervisor set TCP_NODELAY already: it knows the listener. */
		channel_connection(w, fd);
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
