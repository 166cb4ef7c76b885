#include "proctitle.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

extern char **environ;

static char *area; /* argv[0] and what follows it contiguously */
static size_t area_size;
/* The heap copies, held here for good: argv[] may be permuted (getopt),
 * and environ changed (sd_listen_fds() unsets LISTEN_FDS) or replaced
 * (setenv, which leaves our array for one of its own), and the strings
 * must outlive all that. Nothing reads these three,
 * so without volatile the compiler drops the stores, and valgrind calls
 * the copies lost. */
static char **volatile argv_copy, **volatile environ_held, **volatile environ_array;

void
proctitle_init(int argc, char **argv)
{
	char *start, *end, **env;
	size_t n_env = 0;

	if (argc < 1 || !argv[0] || area)
		return;
	/* The strings the kernel laid out one after the other: argv's, then
	 * environ's. Stop at the first one that is not where expected. */
	start = argv[0];
	end = argv[0] + strlen(argv[0]) + 1;
	for (int i = 1; i < argc; i++)
		if (argv[i] == end)
			end = argv[i] + strlen(argv[i]) + 1;
	for (; environ && environ[n_env]; n_env++)
		if (environ[n_env] == end)
			end = environ[n_env] + strlen(environ[n_env]) + 1;

	environ_array = env = calloc(n_env + 1, sizeof(*env));
	environ_held = calloc(n_env + 1, sizeof(*environ_held));
	argv_copy = calloc((size_t)argc + 1, sizeof(*argv_copy));
	if (!env || !environ_held || !argv_copy)
		return;
	for (size_t i = 0; i < n_env; i++)
		if (!(env[i] = environ_held[i] = strdup(environ[i])))
			return; /* leaves everything where it was: no title */
	for (int i = 0; i < argc; i++)
		if (!(argv_copy[i] = strdup(argv[i])))
			return;
	for (int i = 0; i < argc; i++)
		argv[i] = argv_copy[i];
	area = start;
	/* glibc's own pointers into argv[0] (error(), getopt's messages). */
	program_invocation_name = argv[0];
	program_invocation_short_name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	environ = env;
	area_size = (size_t)(end - area);
}

/* Sets comm; says whether there is an area to write the title in. */
static bool
title_start(const char *comm)
{
	if (comm)
		(void)prctl(PR_SET_NAME, (unsigned long)comm, 0, 0, 0);
	return area && area_size >= 2;
}

/* The title is the first n bytes of the area: the rest is zeroed, so that
 * nothing of a longer title, or of argv and environ, shows after it. */
static void
title_end(size_t n)
{
	if (n < area_size)
		memset(area + n, 0, area_size - n);
}

void
proctitle_set(const char *comm, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!title_start(comm))
		return;
	va_start(ap, fmt);
	n = vsnprintf(area, area_size, fmt, ap);
	va_end(ap);
	title_end(n < 0 ? 0 : (size_t)n);
}

void
proctitle_set_text(const char *comm, const char *title)
{
	size_t n;

	if (!title_start(comm))
		return;
	n = strnlen(title, area_size - 1);
	memcpy(area, title, n);
	title_end(n);
}
