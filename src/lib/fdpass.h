/* The channel between the supervisor and a process it forked: how fds
 * travel between them, in every model. New connections go from the
 * supervisor to passfd workers; kept connections (see kept.h) go to
 * the workers of any model after a restart or a reload, and come back from
 * them on a reload.
 *
 * The wire protocol is one SOCK_SEQPACKET message per fd: exactly one data
 * byte, the tag that says what the fd is, and one SCM_RIGHTS control message
 * carrying exactly one fd. Seqpacket keeps one message = one fd: on a stream
 * socket the kernel may merge or split the byte stream around control
 * messages, and a receiver would have to reassemble them.
 *
 * These functions never log and never block; every error is a negative errno
 * (STYLE rules 3 and 4). */
#pragma once

/* Which end of a channel belongs to whom. The ends are alike to the kernel.
 * fds travel from the supervisor to the worker, and back only on a reload,
 * when a retiring worker returns its connections. */
enum {
	FDPASS_SUPERVISOR = 0,
	FDPASS_WORKER = 1,
};

/* The data byte: what the fd is. Anything else is a broken message. */
enum fdpass_tag {
	FDPASS_CONN = 'C', /* a new connection, just accepted */
	FDPASS_PROXY = 'P', /* the same, from a proxy listener: a PROXY header
			     * comes first */
	FDPASS_KEPT = 'K', /* a kept connection: served before by another process */
	FDPASS_OWED = 'O', /* the bytes owed on the kept connection sent next (a
			    * sealed memfd, kept.h) */
};

/* Creates a channel: an AF_UNIX SOCK_SEQPACKET socketpair, both ends
 * close-on-exec and non-blocking. ret_pair[FDPASS_SUPERVISOR] stays in the
 * supervisor, ret_pair[FDPASS_WORKER] goes to the worker; after the fork each
 * side closes the other's end, so that a dead peer shows up as EOF/EPIPE.
 * Set no SO_PASSCRED or SO_PASSPIDFD on it: the receive path rejects every
 * message that brings control data other than the one fd.
 *
 * Returns 0 and fills ret_pair, or a negative errno (ret_pair untouched). */
int fdpass_channel_new(int ret_pair[2]);

/* Sends fd over channel as one message tagged tag. Does NOT take fd: the caller keeps
 * its copy and closes it only after success (STYLE rule 8), so that on
 * failure the connection can still go to another worker. After success the
 * connection belongs to the receiving side even if it never reads it: if
 * the worker dies with the message queued, the kernel closes the connection.
 *
 * Never blocks and never raises SIGPIPE. Returns 0 on success, or:
 *   -EAGAIN        the channel is full (the worker is not keeping up): try
 *                  another worker.
 *   -EPIPE         the worker's end is closed: the worker is gone.
 *   -ECONNRESET    the same, and it went with messages unread (reported
 *                  once; the next send says -EPIPE).
 *   -ETOOMANYREFS  this user has more fds in flight than the sender's
 *                  RLIMIT_NOFILE (enforced without CAP_SYS_RESOURCE): a
 *                  limit across all channels, so back off, don't switch.
 *   -EBADF         fd is not an open descriptor.
 *   any other negative errno from sendmsg(). */
int fdpass_send(int channel, enum fdpass_tag tag, int fd);

/* Receives one message from channel and, on success, stores its tag in
 * *ret_tag and the fd it carried in *ret_fd. The new fd has FD_CLOEXEC set; it shares its open file
 * description with the sender's copy, so file status flags such as
 * O_NONBLOCK are the sender's.
 *
 * Never blocks. On every error, every fd the message brought has been closed
 * and *ret_fd is untouched; the message is consumed unless recvmsg() itself
 * failed (-EAGAIN, or an errno of its own). Returns 0 on success, or:
 *   -EAGAIN        no message is waiting.
 *   -ECONNRESET    end of file: the supervisor closed its end.
 *   -EMFILE        the kernel truncated the control data (MSG_CTRUNC) and
 *                  no fd arrived: it could not install the fd, in practice
 *                  because this process is at its RLIMIT_NOFILE. The
 *                  connection is lost (the kernel closed it).
 *   -EPROTO        the message broke the protocol (no fd, more than one fd,
 *                  other control data, not exactly one data byte, a
 *                  byte that is no tag); the fd(s) it carried are lost.
 *   any other negative errno from recvmsg(). */
int fdpass_recv(int channel, enum fdpass_tag *ret_tag, int *ret_fd);
