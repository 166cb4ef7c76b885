/* One accept loop step that survives the kernel saying no (STYLE rule 9):
 * used by prefork workers and by the supervisor in passfd and fork. */
#pragma once

#include <sys/socket.h>

/* Accepts one connection, non-blocking and close-on-exec. Errors that
 * concern only the connection being accepted (ECONNABORTED, EINTR, EPROTO
 * and the network errors Linux reports early) are retried here. Returns the
 * new fd, -EAGAIN when nothing is waiting, or another negative errno:
 * accept_should_pause() tells whether the caller should stop accepting for
 * a while rather than retry at once. */
int accept_next(int listen_fd);
/* The same, also writing the peer's address (when the call succeeds): the
 * kernel has it at hand, where getpeername() would cost a system call. */
int accept_next_peer(int listen_fd, struct sockaddr_storage *ret_peer, socklen_t *ret_len);

/* EMFILE, ENFILE, ENOBUFS, ENOMEM and anything unexpected: retrying at
 * once would spin, so pause; connections finishing will free resources. */
int accept_should_pause(int error);

#define ACCEPT_PAUSE_MS 100
/* Connections one wakeup accepts at most, so that one busy listener cannot
 * starve the rest of a loop. */
#define ACCEPT_BATCH 64
/* How soon an acceptor that stepped back for want of room (MaxConnections=,
 * a fair share, a full worker) looks again. */
#define ACCEPT_RETRY_MS 20
