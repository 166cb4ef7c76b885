/* See fdclose.h. */
#include "fdclose.h"

#include <stdlib.h>
#include <unistd.h>

static int
compare_fds(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

void
fd_closer_add(struct fd_closer *c, int fd)
{
	if (fd < 0)
		return;
	if (c->n == FD_CLOSER_MAX)
		fd_closer_close(c);
	c->fds[c->n++] = fd;
}

void
fd_closer_close(struct fd_closer *c)
{
	size_t i = 0;

	qsort(c->fds, c->n, sizeof(c->fds[0]), compare_fds);
	while (i < c->n) {
		int first = c->fds[i], last = first;

		/* The same fd added twice is one number of the run. */
		while (++i < c->n && c->fds[i] <= last + 1)
			last = c->fds[i];
		if (first == last)
			close(first);
		else if (close_range((unsigned)first, (unsigned)last, 0) < 0)
			for (int fd = first; fd <= last; fd++)
				close(fd);
	}
	c->n = 0;
}
