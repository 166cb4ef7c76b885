/* The echo state machine of one stream connection, shared by every model.
 *
 * Bytes are read into the caller's (per-worker) buffer and written straight
 * back. Only when the client does not take them all (a partial write) does
 * the connection get a buffer of its own, holding exactly what is owed, and
 * then it reads nothing more until that has drained: the client's unread
 * data waits in the kernel, so echod's memory per connection stays bounded
 * by one read. An idle connection holds no user-space buffer. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct echo_conn {
	int fd;
	char *owed;	 /* bytes read but not yet written back, or NULL */
	size_t owed_len; /* bytes in owed */
	size_t owed_off; /* bytes of owed already written */
	/* Closing our fd sends the FIN: no other process holds the socket,
	 * or only for a moment (the supervisor that sent it, the parent that
	 * forked us, each closing its copy at once). A clean end then needs
	 * no shutdown() (one system call per connection). Otherwise (a copy
	 * in the fd store) our side is shut first, so the client reads EOF
	 * now. */
	bool fin_on_close;
};

/* What the connection waits for next. */
enum echo_want {
	ECHO_WANT_READ,	 /* poll for input */
	ECHO_WANT_WRITE, /* poll for output: it owes bytes */
	ECHO_DONE,	 /* finished cleanly: close it (our side is shut, unless
			  * fin_on_close: closing does that) */
};

struct echo_io {
	uint64_t bytes_in;
	uint64_t bytes_out;
};

void echo_conn_init(struct echo_conn *c, int fd);
/* Makes c owe the len bytes at owed (malloc()ed; c takes it), as kept
 * after a restart; NULL or len 0 owes nothing. */
void echo_conn_adopt_owed(struct echo_conn *c, char *owed, size_t len);
/* Frees what is owed; does not close the fd (the caller owns it). */
void echo_conn_release(struct echo_conn *c);

/* Handles readiness: reads (WANT_READ) or writes what is owed (WANT_WRITE).
 * buf is scratch space shared by all connections of a worker. Returns the
 * next want, or a negative errno when the connection failed (the caller
 * closes it). io counts bytes moved by this call (added, not reset). */
int echo_conn_handle(struct echo_conn *c, char *buf, size_t buf_size, struct echo_io *io);

/* Echoes the len bytes at data, already read from c (what followed a
 * PROXY header in the same read): sends what the socket takes and owes
 * the rest. Returns the next want, or a negative errno. io as above. */
int echo_conn_echo_read(struct echo_conn *c, const char *data, size_t len, struct echo_io *io);

/* What the connection waits for right now (for setting up polling). */
enum echo_want echo_conn_want(const struct echo_conn *c);
