/* See worker-intake.h. */
#include "worker-intake.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>

#include "accept.h"
#include "admission.h"
#include "fdpass.h"
#include "kept.h"
#include "log.h"
#include "util.h"

/* Fds kept free beyond the connections' own, for what a worker may open
 * along the way (the journal's socket, say). */
#define FD_SPARE 4

int
intake_init(struct intake *in, const struct worker_setup *setup, struct waitset *waitset,
	    struct ledger *ledger, struct conns *conns)
{
	const struct listen_set *set = setup->sockets;

	*in = (struct intake){
	    .kind = setup->intake,
	    .waitset = waitset,
	    .config = setup->config,
	    .scoreboard = setup->scoreboard,
	    .ledger = ledger,
	    .conns = conns,
	    .channel = setup->channel,
	    .pending_owed_fd = -1,
	};
	if (in->kind == INTAKE_LISTENERS && set) {
		in->listeners = calloc(set->n, sizeof(*in->listeners));
		if (!in->listeners)
			return -ENOMEM;
		for (size_t i = 0; i < set->n; i++) {
			if (set->items[i].kind != SOCKET_LISTENING)
				continue;
			in->listeners[in->n_listeners++] = (struct listener_source){
			    .source.type = SOURCE_LISTENER,
			    .listener = &set->items[i],
			};
		}
	}
	if (in->n_listeners > 0 && in->scoreboard && ledger->slot >= in->scoreboard->slots &&
	    ledger->slot < in->scoreboard->slots + in->scoreboard->n_slots) {
		in->n_peers = (size_t)(ledger->slot - in->scoreboard->slots);
		in->peers = calloc(in->n_peers ? in->n_peers : 1, sizeof(*in->peers));
		if (!in->peers)
			return -ENOMEM;
	}
	if (in->n_listeners > 0) {
		int r;

		/* Edge-triggered and not exclusive: a ring wakes every worker. */
		in->doorbell_source.type = SOURCE_DOORBELL;
		r = waitset_add(waitset, in->scoreboard->doorbell, EPOLLIN | EPOLLET,
				&in->doorbell_source);
		if (r < 0)
			return r;
	}
	if (in->channel >= 0) {
		in->channel_source.type = SOURCE_CHANNEL;
		return waitset_add(waitset, in->channel, EPOLLIN, &in->channel_source);
	}
	return 0;
}

void
intake_done(struct intake *in)
{
	free(in->listeners);
	in->listeners = NULL;
	free(in->peers);
	in->peers = NULL;
	if (in->pending_owed_fd >= 0)
		close(TAKE_FD(in->pending_owed_fd));
}

/* --- listeners in and out of the epoll set --- */

/* Whether this worker takes new connections, and whether it could take
 * them alone. A prefork worker takes them while its listeners are in its
 * epoll set (peers stand by only for one that watches every listener); a
 * passfd worker until it drains. */
static uint32_t
intake_watching(const struct intake *in)
{
	bool taking = in->kind == INTAKE_CHANNEL ? !in->stopped : in->accepting;
	bool alone = in->kind == INTAKE_CHANNEL || in->polled_all;

	if (!taking)
		return WATCHING_NONE;
	return alone && !in->load.busy && conns_short_lived(in->conns) ? WATCHING_ALONE
								       : WATCHING_SHARED;
}

/* Says it in the scoreboard. For prefork it rings the doorbell when that
 * changed: a worker standing by behind this one looks again at once,
 * rather than at its next turn. The store comes before the ring, so a
 * peer woken by it reads the new value. passfd's supervisor reads it as
 * it picks a worker for each connection. */
static void
intake_publish(struct intake *in)
{
	uint32_t watching = intake_watching(in);

	/* This worker alone writes its slot: what is there is what it said. */
	if (!in->scoreboard || watching == SB_GET(in->ledger->slot->watching))
		return;
	__atomic_store_n(&in->ledger->slot->watching, watching, __ATOMIC_RELEASE);
	if (in->kind == INTAKE_LISTENERS && scoreboard_workers(in->scoreboard) > 1)
		scoreboard_ring(in->scoreboard);
}

static void
intake_poll(struct intake *in, bool on)
{
	in->polled_all = true;
	for (size_t i = 0; i < in->n_listeners; i++) {
		struct listener_source *l = &in->listeners[i];
		if (l->polled == on)
			continue;
		if (on) {
			/* EPOLLEXCLUSIVE: one waiting worker wakes per new
			 * connection, not all of them. It cannot be combined
			 * with EPOLL_CTL_MOD, hence add and delete. */
			int r = waitset_add(in->waitset, l->listener->fd, EPOLLIN | EPOLLEXCLUSIVE,
					    &l->source);
			if (r < 0) {
				log_warning_errno(r, "watching %s: %m", l->listener->name);
				in->polled_all = false;
				continue;
			}
		} else {
			waitset_del(in->waitset, l->listener->fd);
		}
		l->polled = on;
	}
	in->accepting = on;
	intake_publish(in);
}

static bool
has_room(const struct intake *in)
{
	return in->conns->n < in->capacity;
}

/* EPOLLEXCLUSIVE wakes waiters last-in first-out, so left alone one worker
 * takes nearly every connection while the others idle. A worker that
 * holds more than its share steps back (leaves the epoll set) and lets a
 * peer accept.
 *
 * The share has an eighth of slack: a worker that stepped back looks again
 * only every ACCEPT_RETRY_MS, and with no slack (the mean plus one) every
 * worker would soon be over and waiting, taking turns one or two
 * connections at a time: a burst of 18,000 connects took 30 s and
 * overflowed the accept queue. With it, each turn takes an eighth more
 * (18,000 in 2 s), and the busiest worker holds at most about 1.125 times
 * the mean. */
bool
intake_over_fair_share(const struct intake *in)
{
	const struct scoreboard *sb = in->scoreboard;
	uint32_t workers, total, mean, active;

	if (!sb)
		return false;
	workers = scoreboard_workers(sb);
	active = SB_GET(in->ledger->slot->active);
	if (workers < 2 || (conns_short_lived(in->conns) && active < SHARE_FLOOR))
		return false;
	total = ledger_reserved(sb);
	mean = (total + 1) / workers;
	return active + 1 > mean + mean / 8 + 1;
}

/* --- standing by --- */

/* Every worker in the accept wait is a process the kernel may wake for a
 * new connection (EPOLLEXCLUSIVE wakes one that is waiting, passing over
 * a busy one): with two workers watching, clients that connect, echo and
 * close keep both waking by turns, each for a batch half as large, and
 * that costs 10-20% more CPU per connection than one worker taking them
 * all while it keeps up. So a worker stands by (keeps its listeners out
 * of its epoll set) while a worker before it, in scoreboard order,
 * watches alone: it keeps up, and the connections it closed lately lived
 * short lives (conns_short_lived()). It joins when that one is busy
 * (INTAKE_BUSY_PERCENT of a core), holds long-lived connections (those
 * spread evenly, as before), stops watching (full, over its share,
 * paused, draining; it rings the doorbell then), dies (the supervisor
 * rings), or has a loop that stood still for INTAKE_LEADER_STALE_MS
 * (stopped, or stuck). No wakeup is lost meanwhile: the worker standing
 * by relies on one that is in the accept wait itself, and a listener put
 * back into an epoll set reports what is already queued on it. */

void
intake_account_cpu(struct intake *in, uint64_t now_us, uint64_t cpu_us)
{
	struct intake_load *l = &in->load;
	uint64_t elapsed, percent;
	bool busy;

	if (l->window_start_us == 0 || now_us <= l->window_start_us ||
	    cpu_us < l->window_start_cpu_us) {
		*l = (struct intake_load){
		    .window_start_us = now_us, .window_start_cpu_us = cpu_us, .busy = l->busy};
		return;
	}
	elapsed = now_us - l->window_start_us;
	if (elapsed < INTAKE_BUSY_WINDOW_US)
		return;
	percent = (cpu_us - l->window_start_cpu_us) * 100 / elapsed;
	busy = percent >= (l->busy ? INTAKE_KEEPING_UP_PERCENT : INTAKE_BUSY_PERCENT);
	l->window_start_us = now_us;
	l->window_start_cpu_us = cpu_us;
	l->busy = busy;
	/* What the connections' lifetimes say may have changed too. */
	intake_publish(in);
}

/* The CPU clock is a system call, not a vDSO read: looked at once a
 * window, not every turn. */
void
intake_account(struct intake *in, uint64_t now_us)
{
	struct timespec ts;

	if (in->kind == INTAKE_LISTENERS ? in->n_listeners == 0 : in->kind != INTAKE_CHANNEL)
		return;
	if (in->load.window_start_us && now_us >= in->load.window_start_us &&
	    now_us - in->load.window_start_us < INTAKE_BUSY_WINDOW_US)
		return;
	if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) < 0)
		return;
	intake_account_cpu(in, now_us, (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000);
}

/* Whether the loop of the worker in slot i turned lately, as far as this
 * worker has watched it. */
static bool
peer_turning(struct intake *in, size_t i, uint64_t now)
{
	struct intake_peer *p = &in->peers[i];
	uint64_t beat = SB_GET(in->scoreboard->slots[i].heartbeat);

	if (beat != p->heartbeat || p->moved_ms == 0) {
		p->heartbeat = beat;
		p->moved_ms = now;
		return true;
	}
	return now - p->moved_ms < INTAKE_LEADER_STALE_MS;
}

bool
intake_standing_by(struct intake *in, uint64_t now)
{
	const struct scoreboard *sb = in->scoreboard;
	bool relied_on = false;

	if (!sb || in->n_listeners == 0 || scoreboard_workers(sb) < 2)
		return false;
	/* Every peer is looked at, so that each one's heartbeat is followed
	 * from turn to turn. */
	for (size_t i = 0; i < in->n_peers; i++) {
		const struct scoreboard_slot *s = &sb->slots[i];
		bool turning = peer_turning(in, i, now);

		if (SB_GET(s->state) == SLOT_RUNNING &&
		    __atomic_load_n(&s->watching, __ATOMIC_ACQUIRE) == WATCHING_ALONE && turning)
			relied_on = true;
	}
	return relied_on;
}

/* Whether this worker could accept now, whatever its share. */
static bool
may_accept(struct intake *in, uint64_t now)
{
	if (in->accept_resume_ms && now >= in->accept_resume_ms)
		in->accept_resume_ms = 0;
	if (in->hold == HOLD_LIMIT && !ledger_full(in->scoreboard))
		in->hold = HOLD_NONE;
	return !in->stopped && has_room(in) && in->accept_resume_ms == 0 && in->hold != HOLD_LIMIT;
}

/* Decides whether this worker should be watching its listeners now, and
 * makes it so. Putting a listener back in the epoll set reports what is
 * already queued on it: a connection left waiting while this worker was
 * out is found as it comes back. */
void
intake_update(struct intake *in, uint64_t now)
{
	bool want;

	if (in->n_listeners == 0)
		return;
	want = may_accept(in, now);
	if (want && in->hold == HOLD_SHARE) {
		if (intake_over_fair_share(in))
			want = false;
		else
			in->hold = HOLD_NONE;
	}
	if (want && intake_standing_by(in, now))
		want = false;
	if (want != in->accepting)
		intake_poll(in, want);
}

uint64_t
intake_next_wakeup(const struct intake *in, uint64_t now)
{
	uint64_t at = in->accept_resume_ms;

	if (in->hold != HOLD_NONE && (at == 0 || now + ACCEPT_RETRY_MS < at))
		at = now + ACCEPT_RETRY_MS;
	return at;
}

void
intake_stop(struct intake *in)
{
	in->stopped = true;
	intake_poll(in, false);
	if (in->channel >= 0)
		waitset_del(in->waitset, in->channel);
}

/* --- prefork accepts --- */

enum intake_decision
intake_decide(struct intake *in, uint64_t now)
{
	unsigned rate = in->config->connection_rate_limit;

	if (!has_room(in))
		return INTAKE_NO_ROOM;
	/* Counted before it exists, so that MaxConnections= holds across
	 * workers; undone by conns_close() or intake_undo(). */
	if (!ledger_admit(in->ledger)) {
		in->hold = HOLD_LIMIT;
		return INTAKE_CAP;
	}
	if (!admission_rate_take(in->scoreboard, rate, now, &in->accept_resume_ms)) {
		ledger_unadmit(in->ledger);
		return INTAKE_RATE;
	}
	return INTAKE_TAKE;
}

void
intake_undo(struct intake *in)
{
	admission_rate_undo(in->scoreboard, in->config->connection_rate_limit);
	ledger_unadmit(in->ledger);
}

/* Accepts what is queued on l until the queue is empty, or hands the rest
 * on. Every way out of this loop either leaves nothing queued, or stays
 * in the epoll set (level-triggered: the rest is reported again), or is a
 * reason that stops every worker alike and is looked at again
 * (MaxConnections=, ConnectionRateLimit=: see intake_update()), or rings
 * the doorbell so that peers with room look.
 *
 * The fair share: the kernel wakes one worker for a burst queued at once,
 * and left alone it would take it all: 64 clients connecting together
 * ended 58 to 6, and the worker left with 6 busy connections woke for
 * each request (15-20% more CPU per request than one worker or an even
 * split). So a worker over its share hands the rest on: it rings, and the
 * workers under theirs take what is queued by turns. One is always under
 * (not every worker can hold more than the mean), and the doorbell wakes
 * it wherever it is: watching, standing by, or out for its own share.
 * Woken by the kernel (not by_doorbell), a worker takes one first, so the
 * wakeup it was given is never lost with it. */
static void
accept_queued(struct intake *in, const struct listener *l, uint64_t now, bool by_doorbell)
{
	int size = accept_turn_size(l->fd, l->is_tcp);
	/* The queue emptied: all it held taken, or accept() said EAGAIN. */
	bool emptied = size < ACCEPT_BATCH;

	for (int i = 0; i < size; i++) {
		struct sockaddr_storage peer;
		enum intake_decision d;
		int fd;

		if ((by_doorbell || i > 0) && intake_over_fair_share(in)) {
			in->hold = HOLD_SHARE;
			/* One that took nothing hands nothing on. */
			if (i > 0)
				scoreboard_ring(in->scoreboard);
			return;
		}
		d = intake_decide(in, now);
		/* WorkerConnections= or the fd limit: this worker is full, a
		 * peer may not be. */
		if (d == INTAKE_NO_ROOM)
			scoreboard_ring(in->scoreboard);
		if (d != INTAKE_TAKE)
			return;
		fd = accept_next_peer(l->fd, &peer, NULL);
		if (fd >= 0) {
			ledger_take(in->ledger, LEDGER_ACCEPTED);
			conns_add(in->conns, fd,
				  &(struct conn_arrival){.origin = LEDGER_ACCEPTED,
							 .proxy = l->proxy,
							 .from = (struct sockaddr *)&peer});
			continue;
		}
		intake_undo(in);
		if (accept_should_pause(fd)) {
			log_warning_errno(fd, "accepting on %s: %m; pausing for %d ms", l->name,
					  ACCEPT_PAUSE_MS);
			in->accept_resume_ms = now + ACCEPT_PAUSE_MS;
			scoreboard_ring(in->scoreboard);
			return;
		}
		emptied = true;
		break;
	}
	if (emptied && intake_over_fair_share(in))
		in->hold = HOLD_SHARE;
}

void
intake_accept(struct intake *in, const struct listener *l, uint64_t now)
{
	accept_queued(in, l, now, false);
}

void
intake_doorbell(struct intake *in, uint64_t now)
{
	uint64_t rings;

	/* Edge-triggered: every ring already woke every watcher; reading
	 * only keeps the counter small. */
	(void)!read(in->scoreboard->doorbell, &rings, sizeof(rings));
	if (!may_accept(in, now))
		return;
	/* A peer could not take what is queued, or handed it on: up to this
	 * worker's share. Should a batch not empty the queue, the listeners
	 * go back into the epoll set (intake_update()), which reports the
	 * rest. */
	in->hold = HOLD_NONE;
	for (size_t i = 0; i < in->n_listeners; i++)
		accept_queued(in, in->listeners[i].listener, now, true);
}

/* --- the channel --- */

void
intake_kept(struct intake *in, int fd, int owed_fd)
{
	struct sockaddr_storage client;
	socklen_t client_len = 0;
	char *owed = NULL;
	size_t owed_len = 0;

	if (owed_fd >= 0) {
		int r = kept_state_take(owed_fd, fd, &owed, &owed_len, &client, &client_len);
		if (r < 0 && r != -ESTALE)
			log_warning_errno(r, "reading the bytes owed on a kept connection: %m");
		if (r < 0)
			client_len = 0;
		close(owed_fd);
	}
	/* Served once, where it was first accepted: not again here. */
	ledger_take(in->ledger, LEDGER_KEPT);
	conns_add(in->conns, fd,
		  &(struct conn_arrival){.origin = LEDGER_KEPT,
					 .client = client_len ? (struct sockaddr *)&client : NULL,
					 .client_len = client_len,
					 .owed = owed,
					 .owed_len = owed_len});
}

/* One fd the supervisor sent, by what its tag says it is. */
static void
intake_passed(struct intake *in, enum fdpass_tag tag, int fd)
{
	switch (tag) {
	case FDPASS_OWED:
		/* For the kept connection that comes next. */
		if (in->pending_owed_fd >= 0)
			close(in->pending_owed_fd);
		in->pending_owed_fd = fd;
		break;
	case FDPASS_KEPT:
		intake_kept(in, fd, TAKE_FD(in->pending_owed_fd));
		break;
	case FDPASS_CONN:
	case FDPASS_PROXY:
		/* TCP_NODELAY came with it from the listener. */
		ledger_take(in->ledger, LEDGER_SENT);
		conns_add(in->conns, fd,
			  &(struct conn_arrival){.origin = LEDGER_SENT, .proxy = tag == FDPASS_PROXY});
		break;
	case FDPASS_CONFIG:
		/* The connection forker's alone: a worker has its own. */
		close(fd);
		break;
	}
}

/* The bound counts connections, not messages of up to FDPASS_BATCH each
 * (a broken message counts one). */
int
intake_receive(struct intake *in, unsigned max)
{
	for (unsigned taken = 0; in->channel >= 0 && taken < max;) {
		enum fdpass_tag tags[FDPASS_BATCH];
		int fds[FDPASS_BATCH];
		unsigned lost;
		int n = fdpass_recv_batch(in->channel, tags, fds, FDPASS_BATCH, &lost);

		/* The supervisor reserved each: a lost one's reservation goes
		 * with it. -EMFILE, or fewer than sent: the kernel could not
		 * give us the fds (we are at our fd limit) and closed them. */
		for (unsigned k = 0; k < lost; k++)
			ledger_lose(in->ledger);
		if (n == -EAGAIN)
			return 0;
		if (n == -ECONNRESET)
			return n;
		taken += n > 0 ? (unsigned)n : 1;
		for (int k = 0; k < n; k++)
			intake_passed(in, tags[k], fds[k]);
	}
	return 0;
}

/* --- as many connections as the fd limit leaves room for --- */

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
intake_set_capacity(struct intake *in)
{
	unsigned wanted;

	/* Only a worker that takes connections has room to find: a
	 * connection process has its one, fork's datagram worker none. */
	if (in->kind != INTAKE_LISTENERS && in->kind != INTAKE_CHANNEL) {
		in->capacity = in->kind == INTAKE_ONE ? 1 : 0;
		return;
	}
	wanted = config_worker_connections(in->config);
	in->capacity = fd_capacity(wanted);
	SB_SET(in->ledger->slot->capacity, in->capacity);
	if (in->capacity < wanted)
		log_notice("the fd limit (RLIMIT_NOFILE) leaves room for %u connection(s), "
			   "fewer than WorkerConnections=%u: clients beyond wait to be accepted",
			   in->capacity, wanted);
}
