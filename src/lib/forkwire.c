#include "forkwire.h"

#include <errno.h>
#include <stddef.h>
#include <sys/socket.h>

#include "fdpass.h"
#include "util.h"

int
forkwire_send(int channel, struct forkwire_report *r, unsigned n)
{
	size_t len = offsetof(struct forkwire_report, exits) + n * sizeof(r->exits[0]);

	if (n > FORKWIRE_EXITS_MAX)
		return -EINVAL;
	r->magic = FORKWIRE_MAGIC;
	r->n = n;
	if (send(channel, r, len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		return negative_errno();
	return 0;
}

int
forkwire_recv(int channel, struct forkwire_report *r)
{
	/* Room for one fd's control message, so that one sent in error is
	 * received (and closed below) rather than left to the kernel. */
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	struct iovec iov = {.iov_base = r, .iov_len = sizeof(*r)};
	struct msghdr msg = {
	    .msg_iov = &iov,
	    .msg_iovlen = 1,
	    .msg_control = control.buf,
	    .msg_controllen = sizeof(control.buf),
	};
	ssize_t len = recvmsg(channel, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

	if (len < 0)
		return negative_errno();
	if (len == 0)
		return -EPIPE;
	if (msg.msg_controllen > 0 || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
		fdpass_close_received(&msg);
		return -EPROTO;
	}
	if ((size_t)len < offsetof(struct forkwire_report, exits) || r->magic != FORKWIRE_MAGIC ||
	    r->n > FORKWIRE_EXITS_MAX ||
	    (size_t)len != offsetof(struct forkwire_report, exits) + r->n * sizeof(r->exits[0]))
		return -EPROTO;
	return (int)r->n;
}
