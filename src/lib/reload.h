/* How `systemctl reload echod` learns whether the reload worked.
 *
 * systemd 252 has no Type=notify-reload: ExecReload= is a command, and the
 * reload is over, for systemd, when that command exits. So ExecReload= is
 * `echod --reload $MAINPID`, which signals the supervisor and waits for its
 * answer in a file:
 *
 *   $RUNTIME_DIRECTORY/reload-status     (RuntimeDirectory=echod)
 *
 *   generation=<n>\n         decimal, see below
 *   pid=<supervisor pid>\n   who wrote it
 *   result=ok|rejected\n
 *   message=<one line>\n     may be empty
 *
 * Readers ignore keys they do not know, so later versions may add some.
 *
 * Protocol:
 * - The supervisor writes the file at start-up, before READY=1, with its
 *   starting generation, and again after every reload attempt, with a
 *   generation one higher, whether the new configuration was taken or not.
 *   It is a count of reload attempts, not of configurations in use: a
 *   rejected reload must still raise it, or the client waits in vain.
 *   (So it is not STATUS='s "gen N", which a rejected reload leaves.)
 * - The file is replaced atomically (temporary file + rename): a reader sees
 *   the old answer or the new one, never half of one.
 * - The client reads the generation (a missing or malformed file, or one
 *   written by another pid, counts as 0), sends SIGHUP, and waits for a
 *   file from that pid with a higher generation. The first such answer is taken: if
 *   someone else's SIGHUP started a reload just before, that reload's answer
 *   is the one reported (systemd runs one reload job at a time, so this
 *   needs a concurrent `kill -HUP` by hand).
 * - The supervisor must have SIGHUP blocked (signalfd) before it writes the
 *   file at start-up: until then a SIGHUP would kill it.
 *
 * Only the supervisor writes; each write has its own temporary file, so
 * even two writers would leave one whole answer (the last renamed). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define RELOAD_STATUS_FILE "reload-status"
/* Longest message kept; a longer one is cut. */
#define RELOAD_MESSAGE_MAX 1024

/* Supervisor side. Writes dir/reload-status for the given generation, with
 * message (NULL: empty) kept on one line (control characters become spaces)
 * and cut to RELOAD_MESSAGE_MAX. dir is $RUNTIME_DIRECTORY: NULL or "" means
 * systemd did not give us one, and nothing is written. Returns 0 or a
 * negative errno; on failure the previous file is left as it was. */
int reload_status_write(const char *dir, unsigned long long generation, bool ok,
			const char *message);

/* Reads dir/reload-status. message (size bytes, may be NULL with size 0)
 * receives the message, cut to fit. Returns 0; -ENOENT when there is no
 * file yet; -EBADMSG when it is not what reload_status_write() writes;
 * -EINVAL when dir is NULL or ""; another negative errno from the kernel.
 * Outputs are written only on success. */
int reload_status_read(const char *dir, unsigned long long *ret_generation, bool *ret_ok,
		       char *message, size_t size);

/* Client side (echod --reload PID). Asks the supervisor pid to reload and
 * waits, checking every 20 ms, at most timeout_ms, for its answer in
 * dir/reload-status (see the protocol above). Returns:
 *   0           the new configuration is in use;
 *   -EINVAL     the supervisor rejected it (message says why), or a bad
 *               argument: pid <= 0 (kill() would signal a whole group),
 *               dir NULL or "", timeout_ms < 0 (message says which);
 *   -ETIMEDOUT  no answer in time;
 *   -ESRCH      no such process, or it went away while we waited;
 *   -EPERM      not allowed to signal it;
 *   another negative errno when the status file cannot be read.
 * message (size bytes, may be NULL with size 0) receives a one-line
 * explanation on every outcome, ready to print. */
int reload_request(pid_t pid, const char *dir, int timeout_ms, char *message, size_t size);
