#include "echo.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "util.h"

/* How many full buffers one readiness event may read before others get
 * their turn: one fast sender cannot starve the rest of the worker. */
#define ECHO_READ_BUDGET 4

void
echo_conn_init(struct echo_conn *c, int fd)
{
	*c = (struct echo_conn){.fd = fd};
}

void
echo_conn_adopt_owed(struct echo_conn *c, char *owed, size_t len)
{
	echo_conn_release(c);
	if (!owed || len == 0) {
		free(owed);
		return;
	}
	c->owed = owed;
	c->owed_len = len;
}

void
echo_conn_release(struct echo_conn *c)
{
	free(c->owed);
	c->owed = NULL;
	c->owed_len = c->owed_off = 0;
}

enum echo_want
echo_conn_want(const struct echo_conn *c)
{
	return c->owed ? ECHO_WANT_WRITE : ECHO_WANT_READ;
}

static bool
errno_is_transient(int e)
{
	return e == EAGAIN || e == EWOULDBLOCK || e == EINTR;
}

/* Sends as much of data as the socket takes. Returns bytes sent (possibly
 * fewer than len, 0 when the socket is full) or -errno. */
static ssize_t
send_some(int fd, const char *data, size_t len)
{
	size_t sent = 0;

	while (sent < len) {
		ssize_t n = send(fd, data + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			return negative_errno();
		}
		sent += (size_t)n;
	}
	return (ssize_t)sent;
}

/* The client is done sending and we owe nothing: shut our side so it reads
 * EOF after the last echoed byte; the caller's close() does that when it
 * holds the only copy (nothing is left unread, so it sends a FIN, not a
 * reset). */
static int
finish(struct echo_conn *c)
{
	if (c->fin_on_close)
		return ECHO_DONE;
	if (shutdown(c->fd, SHUT_WR) < 0 && errno != ENOTCONN)
		return negative_errno();
	return ECHO_DONE;
}

static int
keep_owed(struct echo_conn *c, const char *data, size_t len)
{
	c->owed = malloc(len);
	if (!c->owed)
		return -ENOMEM;
	memcpy(c->owed, data, len);
	c->owed_len = len;
	c->owed_off = 0;
	return ECHO_WANT_WRITE;
}

static int
handle_readable(struct echo_conn *c, char *buf, size_t buf_size, struct echo_io *io)
{
	for (int round = 0; round < ECHO_READ_BUDGET; round++) {
		ssize_t n = recv(c->fd, buf, buf_size, MSG_DONTWAIT);
		ssize_t sent;

		if (n < 0) {
			if (errno_is_transient(errno))
				return ECHO_WANT_READ;
			return negative_errno();
		}
		if (n == 0)
			return finish(c);
		io->bytes_in += (uint64_t)n;
		sent = send_some(c->fd, buf, (size_t)n);
		if (sent < 0)
			return (int)sent;
		io->bytes_out += (uint64_t)sent;
		if (sent < n)
			return keep_owed(c, buf + sent, (size_t)(n - sent));
		/* A short read means the socket is drained for now; asking
		 * again would only cost an EAGAIN. */
		if ((size_t)n < buf_size)
			return ECHO_WANT_READ;
	}
	return ECHO_WANT_READ;
}

static int
handle_writable(struct echo_conn *c, struct echo_io *io)
{
	ssize_t sent = send_some(c->fd, c->owed + c->owed_off, c->owed_len - c->owed_off);

	if (sent < 0)
		return (int)sent;
	io->bytes_out += (uint64_t)sent;
	c->owed_off += (size_t)sent;
	if (c->owed_off < c->owed_len)
		return ECHO_WANT_WRITE;
	/* EOF, if it came, is read next time: it queues behind the data. */
	echo_conn_release(c);
	return ECHO_WANT_READ;
}

int
echo_conn_echo_read(struct echo_conn *c, const char *data, size_t len, struct echo_io *io)
{
	ssize_t sent;

	io->bytes_in += len;
	sent = send_some(c->fd, data, len);
	if (sent < 0)
		return (int)sent;
	io->bytes_out += (uint64_t)sent;
	if ((size_t)sent < len)
		return keep_owed(c, data + sent, len - (size_t)sent);
	return ECHO_WANT_READ;
}

int
echo_conn_handle(struct echo_conn *c, char *buf, size_t buf_size, struct echo_io *io)
{
	if (c->owed)
		return handle_writable(c, io);
	return handle_readable(c, buf, buf_size, io);
}
