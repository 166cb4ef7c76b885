/* The supervisor's own accepting, for passfd and fork: when it accepts
 * (room in a worker or for a process, MaxConnections=, ConnectionRateLimit=,
 * fork() failing), and each connection handed to a worker or a new process. */
#include "supervisor-internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "accept.h"
#include "admission.h"
#include "ledger.h"
#include "log.h"
#include "util.h"

/* While fork() keeps failing, it is said again at most this often. */
#define FORK_FAILURE_LOG_MS 10000

/* --- the supervisor's own accepting (passfd and fork) --- */

static bool
has_capacity(const struct supervisor *s)
{
	const struct config *c = current_config(s);

	if (c->model == MODEL_FORK)
		return s->unforked_fd < 0 && s->children.n < config_max_connections(c);
	return pool_can_take(&s->env, s->pool) && !ledger_full(&s->scoreboard);
}

void
supervisor_intake_poll(struct supervisor *s, bool on)
{
	for (size_t i = 0; i < s->sockets->n; i++) {
		if (s->sockets->items[i].kind != SOCKET_LISTENING)
			continue;
		if (on) {
			struct epoll_event ev = {.events = EPOLLIN,
						 .data.u64 = EVENT(EVENT_LISTENER, i)};
			if (epoll_ctl(s->env.epoll_fd, EPOLL_CTL_ADD, s->sockets->items[i].fd,
				      &ev) < 0)
				log_warning_errno(errno, "watching %s: %m",
						  s->sockets->items[i].name);
		} else {
			epoll_ctl(s->env.epoll_fd, EPOLL_CTL_DEL, s->sockets->items[i].fd, NULL);
		}
	}
	s->accepting = on;
}

static void serve_accepted(struct supervisor *s, int fd);

/* The connection that waits for fork() to work again. A reload away from
 * the fork model leaves it nobody to serve it: it is closed, as the
 * backlog would be on a stop. */
static void
retry_unforked(struct supervisor *s)
{
	int fd = TAKE_FD(s->unforked_fd);

	if (current_config(s)->model == MODEL_FORK) {
		serve_accepted(s, fd);
		return;
	}
	close(fd);
	s->lost++;
}

/* Accepting stops while nobody could take a connection: newcomers wait in
 * the kernel's backlog (back-pressure), never accepted and dropped. */
void
supervisor_intake_update(struct supervisor *s, uint64_t now)
{
	bool want;

	if (s->accept_resume_ms && now >= s->accept_resume_ms)
		s->accept_resume_ms = 0;
	if (s->unforked_fd >= 0 && s->accept_resume_ms == 0)
		retry_unforked(s);
	want = supervisor_accepts(s) && !s->stopping && s->accept_resume_ms == 0 && has_capacity(s);
	if (want != s->accepting)
		supervisor_intake_poll(s, want);
}

/* fork() failing for want of processes or memory is the process table's
 * version of running out of fds: the connection waits (and the backlog
 * behind it) until processes exit. At the limit, failures come and go as
 * each process exits: they are said at most every FORK_FAILURE_LOG_MS. */
static void
fork_failed(struct supervisor *s, int fd, int error, uint64_t now)
{
	s->unforked_fd = fd;
	s->accept_resume_ms = now + ACCEPT_PAUSE_MS;
	s->fork_failures++;
	if (s->fork_failure_logged_ms && now - s->fork_failure_logged_ms < FORK_FAILURE_LOG_MS)
		return;
	s->fork_failure_logged_ms = now;
	log_warning_errno(error,
			  "cannot fork for a new connection: %m; it and those behind it "
			  "wait until processes exit, retried every %d ms (%llu failed so far)",
			  ACCEPT_PAUSE_MS, (unsigned long long)s->fork_failures);
}

/* Takes fd: handed on, kept to retry (fork), or closed and counted as lost. */
static void
serve_accepted(struct supervisor *s, int fd)
{
	const struct config *c = current_config(s);
	int r;

	if (c->model == MODEL_FORK) {
		r = children_fork(&s->children, &s->env, c, fd);
		if (r == 0)
			return;
		if (r == -EAGAIN || r == -ENOMEM) {
			fork_failed(s, fd, r, now_ms());
			return;
		}
		close(fd);
	} else {
		r = pool_hand_off(&s->env, s->pool, fd);
	}
	if (r == 0)
		return;
	if (c->model == MODEL_PASSFD)
		ledger_release(&s->scoreboard);
	s->lost++;
	s->accept_resume_ms = now_ms() + (r == -EAGAIN ? ACCEPT_RETRY_MS : ACCEPT_PAUSE_MS);
	log_warning_errno(r, "%s a new connection: %m; it is closed",
			  c->model == MODEL_FORK ? "forking for" : "no worker could take");
}

/* A source already at MaxConnectionsPerSource= is refused here, before it
 * costs a fork or a hand-over; the serving process's own check (in the
 * worker loop) decides for the others, exactly. */
static bool
refused_at_source_limit(struct supervisor *s, int fd, const struct sockaddr *peer)
{
	if (!admission_full(s->scoreboard.sources, peer,
			    current_config(s)->max_connections_per_source))
		return false;
	close(fd);
	ledger_refused_here(&s->scoreboard, (unsigned)s->children.slot);
	return true;
}

void
supervisor_intake_accept(struct supervisor *s, const struct listener *l)
{
	bool reserve = current_config(s)->model == MODEL_PASSFD;
	unsigned rate = current_config(s)->connection_rate_limit;
	int one = 1;

	for (int i = 0; i < ACCEPT_BATCH && has_capacity(s) && !s->accept_resume_ms; i++) {
		struct sockaddr_storage peer;
		int fd;

		if (reserve && !ledger_reserve(&s->scoreboard))
			return;
		if (!admission_rate_take(&s->scoreboard, rate, now_ms(), &s->accept_resume_ms)) {
			if (reserve)
				ledger_release(&s->scoreboard);
			return;
		}
		fd = accept_next_peer(l->fd, &peer, NULL);
		if (fd < 0) {
			admission_rate_undo(&s->scoreboard, rate);
			if (reserve)
				ledger_release(&s->scoreboard);
			if (accept_should_pause(fd)) {
				log_warning_errno(fd, "accepting on %s: %m; pausing for %d ms",
						  l->name, ACCEPT_PAUSE_MS);
				s->accept_resume_ms = now_ms() + ACCEPT_PAUSE_MS;
			}
			return;
		}
		if (refused_at_source_limit(s, fd, (struct sockaddr *)&peer)) {
			if (reserve)
				ledger_release(&s->scoreboard);
			continue;
		}
		if (l->is_tcp)
			(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		serve_accepted(s, fd);
	}
}
