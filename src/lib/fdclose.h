/* Closing many fds with few system calls: a new process that drops what
 * it inherited (a Model=fork connection, per connection) pays 10-20 us a
 * call on a slow VM, and the fds it drops are mostly numbered in a row. */
#pragma once

#include <stddef.h>

#define FD_CLOSER_MAX 32

struct fd_closer {
	int fds[FD_CLOSER_MAX];
	size_t n;
};

/* Adds fd to those to close (a negative fd is ignored); closes what is
 * gathered when the closer is full. */
void fd_closer_add(struct fd_closer *c, int fd);

/* Closes every fd gathered, each run of consecutive numbers with one
 * close_range(), and empties the closer. Only gathered fds are closed:
 * a run never spans a number that was not added. */
void fd_closer_close(struct fd_closer *c);
