/* The channel between the supervisor and a process it forked: how fds
 * travel between them, in every model. New connections go from the
 * supervisor to passfd workers; kept connections (see kept.h) go to
 * the workers of any model after a restart or a reload, and come back from
 * them on a reload.
 *
 * The wire protocol is SOCK_SEQPACKET messages of 1 to FDPASS_BATCH fds:
 * one data byte per fd, the tag that says what it is, and one SCM_RIGHTS
 * control message carrying the fds in the order of their tags. The
 * supervisor sends the connections one accepting turn gave a worker as one
 * message, so that a burst costs the two processes one sendmsg() and one
 * recvmsg() rather than one of each per connection. Seqpacket keeps message
 * boundaries: on a stream socket the kernel may merge or split the byte
 * stream around control messages, and a receiver would have to reassemble
 * them.
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
	FDPASS_CONFIG = 'F', /* to the connection forker only: the configuration
			      * for the connections sent after it (a sealed
			      * memfd, kept_config_pack()) */
};

/* Creates a channel: an AF_UNIX SOCK_SEQPACKET socketpair, both ends
 * close-on-exec and non-blocking. ret_pair[FDPASS_SUPERVISOR] stays in the
 * supervisor, ret_pair[FDPASS_WORKER] goes to the worker; after the fork each
 * side closes the other's end, so that a dead peer shows up as EOF/EPIPE.
 * Set no SO_PASSCRED or SO_PASSPIDFD on it: the receive path rejects every
 * message that brings control data other than its fds.
 *
 * Returns 0 and fills ret_pair, or a negative errno (ret_pair untouched). */
int fdpass_channel_new(int ret_pair[2]);

/* The most fds one message carries (the kernel's own cap, SCM_MAX_FD, is
 * 253): a worker's receive buffer has room for this many. */
#define FDPASS_BATCH 32

/* Sends fds[0..n-1], tagged tags[0..n-1], over channel as one message
 * (1 <= n <= FDPASS_BATCH). Does NOT take the fds: the caller keeps its
 * copies and closes them only after success (STYLE rule 8), so that on
 * failure the connections can still go to another worker. After success
 * they belong to the receiving side even if it never reads them: if the
 * worker dies with the message queued, the kernel closes them.
 *
 * Never blocks and never raises SIGPIPE. The message goes whole or not at
 * all. Returns 0 on success, or:
 *   -EAGAIN        the channel is full (the worker is not keeping up): try
 *                  another worker.
 *   -EPIPE         the worker's end is closed: the worker is gone.
 *   -ECONNRESET    the same, and it went with messages unread (reported
 *                  once; the next send says -EPIPE).
 *   -ETOOMANYREFS  this user has more fds in flight than the sender's
 *                  RLIMIT_NOFILE (enforced without CAP_SYS_RESOURCE): a
 *                  limit across all channels, so back off, don't switch.
 *   -EBADF         an fd is not an open descriptor.
 *   -EINVAL        n is 0 or more than FDPASS_BATCH.
 *   any other negative errno from sendmsg(). */
int fdpass_send_batch(int channel, const enum fdpass_tag *tags, const int *fds, unsigned n);
/* The same for one fd. */
int fdpass_send(int channel, enum fdpass_tag tag, int fd);

/* Receives one message of at most max fds (1 <= max <= FDPASS_BATCH) from
 * channel into tags[] and fds[], and returns how many it stored (> 0). The
 * new fds have FD_CLOEXEC set; each shares its open file description with
 * the sender's copy, so file status flags such as O_NONBLOCK are the
 * sender's. *ret_lost is set on every return: how many connections the
 * message announced that did not arrive (see -EMFILE and -EPROTO), so that
 * their reservations can be given back.
 *
 * Never blocks. On every error, every fd the message brought has been
 * closed and tags[] and fds[] are untouched; the message is consumed unless
 * recvmsg() itself failed (-EAGAIN, or an errno of its own). A message
 * whose fds the kernel could install only in part (this process is at its
 * RLIMIT_NOFILE) returns the ones that came, and counts the rest lost.
 * Errors:
 *   -EAGAIN        no message is waiting.
 *   -ECONNRESET    end of file: the supervisor closed its end.
 *   -EMFILE        the kernel truncated the control data (MSG_CTRUNC) and
 *                  no fd arrived: it could not install one, in practice
 *                  because this process is at its RLIMIT_NOFILE. The
 *                  connections are lost (the kernel closed them).
 *   -EPROTO        the message broke the protocol (no fd, more than max
 *                  or more fds than tags, other control data, a byte that
 *                  is no tag); the fd(s) it carried are lost.
 *   any other negative errno from recvmsg(). */
int fdpass_recv_batch(int channel, enum fdpass_tag *tags, int *fds, unsigned max,
		      unsigned *ret_lost);

/* Receives a message of one fd: fdpass_recv_batch() with max 1, the fd in
 * *ret_fd and its tag in *ret_tag (both untouched on error). */
int fdpass_recv(int channel, enum fdpass_tag *ret_tag, int *ret_fd);

struct msghdr;
/* Closes every fd that msg (as recvmsg() filled it) brought, so that no
 * error path leaks one. Returns how many control messages there were,
 * fd-carrying or not. */
unsigned fdpass_close_received(struct msghdr *msg);
