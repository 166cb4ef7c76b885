/* LD_PRELOAD shim for the respawn back-off test: makes every worker fail
 * at start-up for a real reason, so that echod itself needs no test hook.
 *
 * The process that loads it (echod's supervisor) creates its one epoll
 * instance as usual. Every process forked from it inherits the count and
 * so fails its first epoll_create1() with EMFILE, as a worker started at
 * its fd limit would: worker_run() logs "setting up the event loop" and
 * exits, and the supervisor backs off before the next try. */
#include <dlfcn.h>
#include <errno.h>
#include <sys/epoll.h>

static unsigned calls;

int
epoll_create1(int flags)
{
	static int (*real)(int);

	if (calls++ > 0) {
		errno = EMFILE;
		return -1;
	}
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "epoll_create1");
	return real(flags);
}
