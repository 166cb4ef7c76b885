/* Process titles, as nginx and postfix set them, so that ps and top tell
 * the supervisor, the workers and fork's connection processes apart:
 * "echod: supervisor (prefork, generation 2)", "echod: worker 1",
 * "echod: connection 203.0.113.5:40001".
 *
 * Linux has no setproctitle(): /proc/PID/cmdline is the memory that held
 * argv (and, when a title is longer, environ after it), so the title is
 * written there. proctitle_init() first moves what lived there (argv's
 * strings, environ) to the heap, so nothing that points into it breaks.
 * The kernel's comm (top, pgrep, /proc/PID/comm) gets a short name with
 * PR_SET_NAME. Mechanism only: nothing here logs. */
#pragma once

/* A connection process's title (per-connection mode, and Model=fork's
 * whoever forks it): the format, with the peer's address for %s. */
#define PROCTITLE_CONNECTION "echod: connection %s"

/* Call first thing in main(), before anything keeps a pointer into argv
 * or the environment: argv[i] and environ are replaced by heap copies. */
void proctitle_init(int argc, char **argv);

/* Sets the title (cut to what the area holds) and comm (cut to 15 bytes,
 * NULL: left as it is). Does nothing before proctitle_init(). */
void proctitle_set(const char *comm, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same with the title already formatted: a Model=fork connection
 * process gets its title formatted by the supervisor before fork(), so
 * that none of printf's code is among the pages it faults in. */
void proctitle_set_text(const char *comm, const char *title);
