/* One accept loop step that survives the kernel saying no (STYLE rule 9):
 * used by prefork workers and by the supervisor in passfd and fork. */
#pragma once

#include <stdbool.h>
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

/* How many accept() calls one turn on a listener makes: as many as its
 * queue holds (up to ACCEPT_BATCH), so that none of them finds it empty.
 * That accept() is the dearest call of a turn: the kernel allocates a
 * socket and a file before it looks, eight times what the getsockopt()
 * that counts the queue costs (listen_queue(): 4.4 against 0.57 us on the
 * benchmark VM), and an acceptor woken for each connection or two paid one
 * per wakeup. What arrives meanwhile the next wait reports. ACCEPT_BATCH,
 * to be cut short by EAGAIN, where the queue cannot be counted (not TCP). */
int accept_turn_size(int listen_fd, bool is_tcp);

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
