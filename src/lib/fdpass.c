/* The one send path and the one receive path for passed fds (STYLE rule 8). */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fdpass.h"
#include "util.h"

/* Linux 6.5+ attaches a pidfd when SO_PASSPIDFD is set; glibc 2.36 predates it. */
#ifndef SCM_PIDFD
#define SCM_PIDFD 0x04
#endif

/* Room for one control message carrying FDPASS_BATCH fds, aligned for
 * struct cmsghdr as CMSG_FIRSTHDR() requires. The padding may admit an fd
 * more than asked for without MSG_CTRUNC: the length check, not the buffer
 * size, enforces the count. */
union fdpass_control {
	struct cmsghdr align;
	char buf[CMSG_SPACE(FDPASS_BATCH * sizeof(int))];
};

int
fdpass_channel_new(int ret_pair[2])
{
	int pair[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) < 0)
		return negative_errno();

	ret_pair[FDPASS_SUPERVISOR] = pair[0];
	ret_pair[FDPASS_WORKER] = pair[1];
	return 0;
}

int
fdpass_send_batch(int channel, const enum fdpass_tag *tags, const int *fds, unsigned n)
{
	union fdpass_control control = {};
	char bytes[FDPASS_BATCH];
	struct iovec iov = {.iov_base = bytes, .iov_len = n};
	struct msghdr msg = {
	    .msg_iov = &iov,
	    .msg_iovlen = 1,
	    .msg_control = control.buf,
	    .msg_controllen = CMSG_SPACE(n * sizeof(int)),
	};
	struct cmsghdr *cmsg;
	ssize_t n_sent;

	if (n == 0 || n > FDPASS_BATCH)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++) {
		if (fds[i] < 0)
			return -EBADF;
		bytes[i] = (char)tags[i];
	}

	cmsg = CMSG_FIRSTHDR(&msg);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(n * sizeof(int));
	memcpy(CMSG_DATA(cmsg), fds, n * sizeof(int));

	/* MSG_NOSIGNAL: a dead worker must be an error to handle, not a signal
	 * that kills the supervisor. */
	n_sent = sendmsg(channel, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n_sent < 0)
		return negative_errno();
	/* A seqpacket message goes whole or not at all. */
	if (n_sent != (ssize_t)n)
		return -EIO;
	return 0;
}

int
fdpass_send(int channel, enum fdpass_tag tag, int fd)
{
	return fdpass_send_batch(channel, &tag, &fd, 1);
}

unsigned
fdpass_close_received(struct msghdr *msg)
{
	const char *end = (const char *)msg->msg_control + msg->msg_controllen;
	unsigned count = 0;

	for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(msg); cmsg; cmsg = CMSG_NXTHDR(msg, cmsg)) {
		size_t room = (size_t)(end - (const char *)cmsg);
		const unsigned char *data = CMSG_DATA(cmsg);

		count++;
		if (cmsg->cmsg_level != SOL_SOCKET ||
		    (cmsg->cmsg_type != SCM_RIGHTS && cmsg->cmsg_type != SCM_PIDFD))
			continue;
		/* A length past the buffer is put_cmsg() cutting a message off
		 * on MSG_CTRUNC; the kernel never cuts one that carries fds
		 * (it passes only the fds that fit), so there is none here.
		 * Compared as lengths: a bad cmsg_len added to a pointer could
		 * wrap around (undefined behaviour) and pass the check. */
		if (cmsg->cmsg_len > room || cmsg->cmsg_len < CMSG_LEN(0))
			continue;
		for (size_t i = 0; i < (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;

			memcpy(&fd, data + i * sizeof(int), sizeof(int));
			if (fd >= 0)
				close(fd);
		}
	}
	return count;
}

static bool
is_tag(char byte)
{
	return byte == FDPASS_CONN || byte == FDPASS_PROXY || byte == FDPASS_KEPT ||
	       byte == FDPASS_OWED || byte == FDPASS_CONFIG;
}

static bool
all_tags(const char *bytes, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!is_tag(bytes[i]))
			return false;
	return true;
}

/* The one control message a good message has: SCM_RIGHTS, alone, with a
 * whole number of fds that fit its announced length. The fd count, or -1. */
static int
rights_count(struct msghdr *msg)
{
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(msg);
	size_t len;

	if (!cmsg || cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS ||
	    CMSG_NXTHDR(msg, cmsg))
		return -1;
	len = cmsg->cmsg_len;
	if (len < CMSG_LEN(sizeof(int)) || len > msg->msg_controllen ||
	    (len - CMSG_LEN(0)) % sizeof(int) != 0)
		return -1;
	return (int)((len - CMSG_LEN(0)) / sizeof(int));
}

int
fdpass_recv_batch(int channel, enum fdpass_tag *tags, int *fds, unsigned max, unsigned *ret_lost)
{
	union fdpass_control control;
	char bytes[FDPASS_BATCH];
	struct iovec iov = {.iov_base = bytes, .iov_len = max};
	struct msghdr msg = {
	    .msg_iov = &iov,
	    .msg_iovlen = 1,
	    .msg_control = control.buf,
	    .msg_controllen = CMSG_SPACE(max * sizeof(int)),
	};
	ssize_t n;
	int got;

	*ret_lost = 0;
	if (max == 0 || max > FDPASS_BATCH)
		return -EINVAL;
	n = recvmsg(channel, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0)
		return negative_errno();

	/* A zero-length message with control data is not end of file: it
	 * still carries fds to close. */
	if (n == 0 && !CMSG_FIRSTHDR(&msg) && !(msg.msg_flags & MSG_CTRUNC))
		return -ECONNRESET;

	got = rights_count(&msg);
	/* Broken: no tag, a byte that is no tag, more data than max, control
	 * data other than the fds, or more fds than tags. With room for n
	 * fds, a truncation must mean exactly this: the kernel stopped
	 * installing fds (it does so at RLIMIT_NOFILE and closes the rest),
	 * so fewer fds than tags without it, or all of them with it, is the
	 * sender breaking the protocol too. */
	if (n == 0 || (msg.msg_flags & MSG_TRUNC) || !all_tags(bytes, (size_t)n) ||
	    (got < 0 && CMSG_FIRSTHDR(&msg)) || got > n ||
	    (got < n) != !!(msg.msg_flags & MSG_CTRUNC)) {
		fdpass_close_received(&msg);
		*ret_lost = n > 0 ? (unsigned)n : 1;
		return -EPROTO;
	}
	*ret_lost = (unsigned)(n - (got > 0 ? got : 0));
	if (got <= 0)
		return -EMFILE;
	memcpy(fds, CMSG_DATA(CMSG_FIRSTHDR(&msg)), (size_t)got * sizeof(int));
	for (int i = 0; i < got; i++)
		tags[i] = (enum fdpass_tag)bytes[i];
	return got;
}

int
fdpass_recv(int channel, enum fdpass_tag *ret_tag, int *ret_fd)
{
	unsigned lost;
	int r = fdpass_recv_batch(channel, ret_tag, ret_fd, 1, &lost);

	return r < 0 ? r : 0;
}
