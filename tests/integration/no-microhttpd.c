/* LD_PRELOAD shim for the test of a system without libmicrohttpd: echod
 * loads it only when metrics are served (src/supervisor/metrics.c), and
 * this makes that dlopen() fail as it does when the library is not
 * installed, with the loader's own message. Every other dlopen() (the
 * sanitizers', NSS modules') goes through untouched. */
#include <dlfcn.h>
#include <string.h>

void *
dlopen(const char *file, int flags)
{
	static void *(*real_dlopen)(const char *, int);

	if (!real_dlopen)
		*(void **)&real_dlopen = dlsym(RTLD_NEXT, "dlopen");
	/* A name no system has: the loader says "cannot open shared object
	 * file", as it would for the missing library. */
	if (file && strstr(file, "libmicrohttpd"))
		file = "libmicrohttpd-not-installed.so.12";
	return real_dlopen(file, flags);
}
