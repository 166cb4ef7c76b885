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

/* Room for one control message carrying one fd, aligned for struct cmsghdr
 * as CMSG_FIRSTHDR() requires. On LP64 the padding admits a second fd
 * without MSG_CTRUNC: the length check, not the buffer size, enforces one. */
union fdpass_control {
	struct cmsghdr align;
	char buf[CMSG_SPACE(sizeof(int))];
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
fdpass_send(int channel, enum fdpass_tag tag, int fd)
{
	union fdpass_control control = {};
	char byte = (char)tag;
	struct iovec iov = {.iov_base = &byte, .iov_len = sizeof(byte)};
	struct msghdr msg = {
	    .msg_iov = &iov,
	    .msg_iovlen = 1,
	    .msg_control = control.buf,
	    .msg_controllen = sizeof(control.buf),
	};
	struct cmsghdr *cmsg;
	ssize_t n;

	if (fd < 0)
		return -EBADF;

	cmsg = CMSG_FIRSTHDR(&msg);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));

	/* MSG_NOSIGNAL: a dead worker must be an error to handle, not a signal
	 * that kills the supervisor. */
	n = sendmsg(channel, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n < 0)
		return negative_errno();
	/* A seqpacket message goes whole or not at all. */
	if (n != sizeof(byte))
		return -EIO;
	return 0;
}

/* Closes every fd that msg brought, so that no error path leaks one.
 * Returns how many control messages there were, fd-carrying or not. */
static unsigned
close_received_fds(struct msghdr *msg)
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
	       byte == FDPASS_OWED;
}

int
fdpass_recv(int channel, enum fdpass_tag *ret_tag, int *ret_fd)
{
	union fdpass_control control;
	char byte;
	struct iovec iov = {.iov_base = &byte, .iov_len = sizeof(byte)};
	struct msghdr msg = {
	    .msg_iov = &iov,
	    .msg_iovlen = 1,
	    .msg_control = control.buf,
	    .msg_controllen = sizeof(control.buf),
	};
	struct cmsghdr *cmsg;
	ssize_t n;
	int fd;

	n = recvmsg(channel, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0)
		return negative_errno();

	/* Truncation first: whatever did arrive is then only partly described
	 * and must not be trusted. Control data that the kernel could not fit
	 * means the peer sent more than this protocol ever does; none at all
	 * means the kernel dropped the fd itself: it had no fd number free. */
	if (msg.msg_flags & MSG_CTRUNC)
		return close_received_fds(&msg) > 0 ? -EPROTO : -EMFILE;

	cmsg = CMSG_FIRSTHDR(&msg);
	/* A zero-length message with control data is not end of file: it
	 * still carries fds to close. */
	if (n == 0 && !cmsg)
		return -ECONNRESET;

	if (n != sizeof(byte) || (msg.msg_flags & MSG_TRUNC) || !is_tag(byte) || !cmsg ||
	    cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS ||
	    cmsg->cmsg_len != CMSG_LEN(sizeof(int))) {
		close_received_fds(&msg);
		return -EPROTO;
	}

	memcpy(&fd, CMSG_DATA(cmsg), sizeof(int));
	*ret_tag = (enum fdpass_tag)byte;
	*ret_fd = fd;
	return 0;
}
