/* What a worker's loop waits on: an epoll set or, in a process that serves
 * one connection (INTAKE_ONE, Model=fork), a poll(2) array of a few fds.
 *
 * The loop, the connections and the intake call the same functions
 * whichever it is. The epoll set costs a connection process
 * epoll_create1() and an epoll_ctl() for each fd added or removed: four
 * system calls for each Model=fork connection, at 10-30 us each on a slow
 * VM. The poll array costs none of those and one poll() per
 * wait, which for two fds is no dearer than epoll_wait().
 *
 * Events are epoll's (EPOLLIN, EPOLLOUT, EPOLLRDHUP, EPOLLHUP, EPOLLERR have
 * poll's values), level-triggered in both. EPOLLET and EPOLLEXCLUSIVE mean
 * something only to the epoll set; the small set refuses them. Errors are
 * negative errnos (STYLE rule 3); nothing here logs. */
#pragma once

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

/* What a connection process watches: its signalfd and its connection. */
#define WAITSET_SMALL_MAX 4

struct waitset {
	int epoll_fd; /* -1: the small set */
	unsigned n;   /* the small set's entries in use */
	struct pollfd fds[WAITSET_SMALL_MAX];
	void *ptrs[WAITSET_SMALL_MAX];
};

/* An epoll set (close-on-exec), or with small the poll array (no system
 * call). 0, or a negative errno with ws unusable. */
int waitset_init(struct waitset *ws, bool small);
/* Closes the epoll set, if it is one. */
void waitset_done(struct waitset *ws);

/* Watches fd for events; ptr comes back in data.ptr of its events.
 * -EEXIST if fd is watched already, -ENOSPC when the small set is full,
 * -EINVAL for EPOLLET or EPOLLEXCLUSIVE there. */
int waitset_add(struct waitset *ws, int fd, uint32_t events, void *ptr);
/* Changes what fd is watched for. -ENOENT if it is not watched. */
int waitset_mod(struct waitset *ws, int fd, uint32_t events, void *ptr);
/* Stops watching fd (not watched: nothing happens). */
void waitset_del(struct waitset *ws, int fd);
/* fd is about to be closed. only_ours: no other process holds its open
 * file (this one accepted it), so the close takes it out of an epoll set
 * by itself, a system call saved; epoll watches an open file, not an fd
 * number, and one another process holds stays watched after our close. */
void waitset_closing(struct waitset *ws, int fd, bool only_ours);

/* Waits up to timeout_ms (-1: no limit) and fills events with up to max
 * ready fds, in epoll's form. The count, 0 on timeout, or a negative errno
 * (-EINTR included). */
int waitset_wait(struct waitset *ws, struct epoll_event *events, int max, int timeout_ms);
