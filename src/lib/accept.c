#include "accept.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "listen.h"

/* A connection that died in the backlog must not stall the loop, but a
 * listener that keeps failing must not trap us either. */
#define ACCEPT_RETRIES 16

static bool
error_is_per_connection(int e)
{
	switch (e) {
	case EINTR:
	case ECONNABORTED:
	case EPROTO:
	/* accept(2): Linux passes already-pending network errors of the new
	 * socket to accept(); they are that connection's problem. */
	case ENETDOWN:
	case ENOPROTOOPT:
	case EHOSTDOWN:
	case ENONET:
	case EHOSTUNREACH:
	case EOPNOTSUPP:
	case ENETUNREACH:
	case ETIMEDOUT:
	case ECONNRESET:
		return true;
	default:
		return false;
	}
}

int
accept_next(int listen_fd)
{
	return accept_next_peer(listen_fd, NULL, NULL);
}

int
accept_next_peer(int listen_fd, struct sockaddr_storage *ret_peer, socklen_t *ret_len)
{
	for (int i = 0; i < ACCEPT_RETRIES; i++) {
		socklen_t len = sizeof(*ret_peer);
		int fd = accept4(listen_fd, (struct sockaddr *)ret_peer, ret_peer ? &len : NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd >= 0 && ret_len)
			*ret_len = len;
		if (fd >= 0)
			return fd;
		if (errno == EWOULDBLOCK)
			return -EAGAIN;
		if (!error_is_per_connection(errno))
			return -errno;
	}
	return -EAGAIN;
}

int
accept_turn_size(int listen_fd, bool is_tcp)
{
	unsigned queued;

	if (!is_tcp || listen_queue(listen_fd, &queued, NULL) < 0 || queued > ACCEPT_BATCH)
		return ACCEPT_BATCH;
	return (int)queued;
}

int
accept_should_pause(int error)
{
	return error != -EAGAIN;
}
