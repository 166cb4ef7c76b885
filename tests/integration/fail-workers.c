/* LD_PRELOAD shim for the respawn back-off tests: makes workers fail at
 * start-up for a real reason, so that echod itself needs no test hook.
 *
 * The process that loads it (echod's supervisor) creates its one epoll
 * instance as usual. Every process forked from it inherits the count and
 * so fails its first epoll_create1() with EMFILE, as a worker started at
 * its fd limit would: worker_run() logs "setting up the event loop" and
 * exits, and the supervisor backs off before the next try.
 *
 * With FAIL_WORKERS_FIRST=N and FAIL_WORKERS_COUNTER=PATH only the first N
 * workers fail: each appends a byte to PATH, and the file's size says
 * which try it is. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned calls;

/* Whether this child is one of the first FAIL_WORKERS_FIRST (all, unset). */
static int
among_the_failing(void)
{
	const char *first = getenv("FAIL_WORKERS_FIRST");
	const char *counter = getenv("FAIL_WORKERS_COUNTER");
	struct stat st;
	int fd, failing;

	if (!first || !counter)
		return 1;
	fd = open(counter, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return 1;
	failing = write(fd, "x", 1) == 1 && fstat(fd, &st) == 0 &&
		  st.st_size <= strtol(first, NULL, 10);
	close(fd);
	return failing;
}

int
epoll_create1(int flags)
{
	static int (*real)(int);

	if (calls++ == 1 && among_the_failing()) {
		errno = EMFILE;
		return -1;
	}
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "epoll_create1");
	return real(flags);
}
