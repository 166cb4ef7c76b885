/* The split references' handoff (forkref -s, refserver -s): a process
 * that accepts hands each turn's connections to another in one
 * SCM_RIGHTS message over a SOCK_SEQPACKET channel, as echod's supervisor
 * hands them to a passfd worker or to its connection forker. */
#pragma once

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

/* Connections per message at most: what one accepting turn takes. */
#define HANDOFF_BATCH 64

/* The message that carries a batch of connections: one byte of data (a
 * message of none is not sent) and their fds. */
union handoff_control {
	char buf[CMSG_SPACE(sizeof(int) * HANDOFF_BATCH)];
	struct cmsghdr align;
};

/* Forks the process on the other side of a new channel (close-on-exec
 * ends). Returns the child's pid in the parent and 0 in the child, each
 * with its own end in *ret_channel, or -errno. */
static inline pid_t
handoff_fork(int *ret_channel)
{
	int pair[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		int r = -errno;

		close(pair[0]);
		close(pair[1]);
		return r;
	}
	close(pair[pid == 0 ? 0 : 1]);
	*ret_channel = pair[pid == 0 ? 1 : 0];
	return pid;
}

/* Sends fds[0..n) (1 to HANDOFF_BATCH, blocking). 0 or -errno. */
static inline int
handoff_send(int channel, const int *fds, size_t n)
{
	union handoff_control control;
	char byte = 0;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr msg = {
	    .msg_iov = &iov,
	    .msg_iovlen = 1,
	    .msg_control = control.buf,
	    .msg_controllen = CMSG_SPACE(sizeof(int) * n),
	};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int) * n);
	memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
	return sendmsg(channel, &msg, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

/* The fds of one message into fds (room for HANDOFF_BATCH); their count,
 * or 0 at the channel's end, on an error, or (flags MSG_DONTWAIT) when
 * none waits. */
static inline size_t
handoff_receive(int channel, int *fds, int flags)
{
	for (;;) {
		union handoff_control control;
		char byte;
		struct iovec iov = {.iov_base = &byte, .iov_len = 1};
		struct msghdr msg = {
		    .msg_iov = &iov,
		    .msg_iovlen = 1,
		    .msg_control = control.buf,
		    .msg_controllen = sizeof(control.buf),
		};
		ssize_t r = recvmsg(channel, &msg, MSG_CMSG_CLOEXEC | flags);
		struct cmsghdr *c;

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return 0;
		c = CMSG_FIRSTHDR(&msg);
		if (!c || c->cmsg_type != SCM_RIGHTS)
			continue;
		memcpy(fds, CMSG_DATA(c), c->cmsg_len - CMSG_LEN(0));
		return (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
	}
}
