/* See waitset.h. */
#include "waitset.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

/* epoll's flags for how to report, not what to report: the small set has
 * no use for them. */
#define EPOLL_ONLY (EPOLLET | EPOLLEXCLUSIVE | EPOLLONESHOT | EPOLLWAKEUP)

int
waitset_init(struct waitset *ws, bool small)
{
	*ws = (struct waitset){.epoll_fd = -1};
	if (small)
		return 0;
	ws->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	return ws->epoll_fd < 0 ? negative_errno() : 0;
}

void
waitset_done(struct waitset *ws)
{
	if (ws->epoll_fd >= 0)
		close(ws->epoll_fd);
	*ws = (struct waitset){.epoll_fd = -1};
}

static int
find(const struct waitset *ws, int fd)
{
	for (unsigned i = 0; i < ws->n; i++)
		if (ws->fds[i].fd == fd)
			return (int)i;
	return -1;
}

static int
epoll_change(struct waitset *ws, int op, int fd, uint32_t events, void *ptr)
{
	struct epoll_event ev = {.events = events, .data.ptr = ptr};

	return epoll_ctl(ws->epoll_fd, op, fd, &ev) < 0 ? negative_errno() : 0;
}

int
waitset_add(struct waitset *ws, int fd, uint32_t events, void *ptr)
{
	if (ws->epoll_fd >= 0)
		return epoll_change(ws, EPOLL_CTL_ADD, fd, events, ptr);
	if (fd < 0)
		return -EBADF;
	if (events & EPOLL_ONLY)
		return -EINVAL;
	if (find(ws, fd) >= 0)
		return -EEXIST;
	if (ws->n == WAITSET_SMALL_MAX)
		return -ENOSPC;
	ws->fds[ws->n] = (struct pollfd){.fd = fd, .events = (short)events};
	ws->ptrs[ws->n++] = ptr;
	return 0;
}

int
waitset_mod(struct waitset *ws, int fd, uint32_t events, void *ptr)
{
	int i;

	if (ws->epoll_fd >= 0)
		return epoll_change(ws, EPOLL_CTL_MOD, fd, events, ptr);
	if (events & EPOLL_ONLY)
		return -EINVAL;
	i = find(ws, fd);
	if (i < 0)
		return -ENOENT;
	ws->fds[i].events = (short)events;
	ws->ptrs[i] = ptr;
	return 0;
}

void
waitset_del(struct waitset *ws, int fd)
{
	int i;

	if (ws->epoll_fd >= 0) {
		(void)epoll_ctl(ws->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
		return;
	}
	i = find(ws, fd);
	if (i < 0)
		return;
	ws->n--;
	ws->fds[i] = ws->fds[ws->n];
	ws->ptrs[i] = ws->ptrs[ws->n];
}

void
waitset_closing(struct waitset *ws, int fd, bool only_ours)
{
	if (ws->epoll_fd < 0 || !only_ours)
		waitset_del(ws, fd);
}

int
waitset_wait(struct waitset *ws, struct epoll_event *events, int max, int timeout_ms)
{
	struct pollfd ready[WAITSET_SMALL_MAX];
	void *ptrs[WAITSET_SMALL_MAX];
	unsigned n_watched = ws->n;
	int n = 0;

	if (ws->epoll_fd >= 0) {
		int r = epoll_wait(ws->epoll_fd, events, max, timeout_ms);
		return r < 0 ? negative_errno() : r;
	}
	/* A copy: what the events lead to may add or remove fds before the
	 * caller gets to the last of them, as it may with epoll. */
	memcpy(ready, ws->fds, n_watched * sizeof(*ready));
	memcpy(ptrs, ws->ptrs, n_watched * sizeof(*ptrs));
	if (poll(ready, n_watched, timeout_ms) < 0)
		return negative_errno();
	for (unsigned i = 0; i < n_watched && n < max; i++) {
		if (ready[i].revents == 0)
			continue;
		/* An fd closed while watched, which epoll would have dropped
		 * silently: dropped here too, or every poll() would say so
		 * at once. */
		if (ready[i].revents & POLLNVAL) {
			waitset_del(ws, ready[i].fd);
			continue;
		}
		events[n++] = (struct epoll_event){.events = (uint32_t)(unsigned short)ready[i].revents,
						   .data.ptr = ptrs[i]};
	}
	return n;
}
