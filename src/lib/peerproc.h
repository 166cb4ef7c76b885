/* Is a process ID, given on the command line, an echod supervisor?
 *
 * `echod --reload PID` and `echod --before-stop PID` signal the PID they
 * are given; a wrong one (a typo, a stale $MAINPID reused by another
 * program) must not get a SIGHUP, which stops most programs. */
#pragma once

#include <sys/types.h>

/* Returns 0 when pid runs the same executable as this process and its
 * parent does not (a worker's parent is the supervisor, so a worker is
 * refused too); -ESRCH when there is no such process; -EMEDIUMTYPE when it
 * runs another program; -ECHILD when it is an echod worker; another
 * negative errno when /proc cannot tell (for example -EACCES for another
 * user's process: then the caller cannot signal it either). */
int peerproc_is_supervisor(pid_t pid);
