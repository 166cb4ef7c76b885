/* Telling systemd what the supervisor is doing: readiness, reloads, stops,
 * the watchdog and a one-line STATUS=.
 *
 * Every sending function goes through libsystemd's sd_notify()/sd_notifyf()
 * with unset_environment=0 (workers are forked later and the supervisor may
 * notify many times) and returns what it returns: > 0 when the message was
 * sent, 0 when $NOTIFY_SOCKET is unset (not run by systemd: nothing to do),
 * negative errno on failure. These are for the supervisor, never a worker:
 * the units say NotifyAccess=all only so that workers can put connections
 * into the fd store on a restart (kept.h), not to report state.
 *
 * This module does not log and does not read clocks: times are passed in, in
 * microseconds of CLOCK_MONOTONIC. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int notify_ready(void);
/* "RELOADING=1\nMONOTONIC_USEC=<monotonic_usec>": systemd >= 253 matches
 * MONOTONIC_USEC against the reload it started (Type=notify-reload); 252
 * ignores it. Follow with notify_ready() once the reload is over, whether
 * the new configuration was taken or not. */
int notify_reloading(uint64_t monotonic_usec);
int notify_stopping(void);
/* "EXTEND_TIMEOUT_USEC=<usec>": asks for usec more from now, on top of
 * TimeoutStartSec=/TimeoutStopSec=; for a slow start or a long drain. */
int notify_extend_timeout(uint64_t usec);
/* "ERRNO=<n>": the reason for a failure, shown by systemctl status. Takes
 * error with either sign (our negative errno, or errno itself); 0 is
 * -EINVAL. */
int notify_errno(int error);
int notify_watchdog(void);

/* True when systemd expects WATCHDOG=1 from this process ($WATCHDOG_USEC
 * set, and $WATCHDOG_PID unset or ours); *ret_usec then receives the
 * timeout, to be pinged at about half of it. False when not, or when the
 * variables are malformed. */
bool notify_watchdog_enabled(uint64_t *ret_usec);

/* --- STATUS= --- */

/* Totals across all workers, as the supervisor last added them up. */
struct notify_status {
	const char *model; /* "prefork", "passfd", "fork": [A-Za-z0-9_-]+ */
	unsigned workers_running, workers_wanted;
	uint64_t active, served, refused, lost, dgrams_in, dgrams_out, dgrams_dropped;
	unsigned generation;
	/* e.g. "reload rejected: /etc/echod/echod.conf:3: ..." or NULL */
	const char *note;
};

/* Formats s as one line, the text of STATUS=:
 *
 *   status  = model ": " RUNNING "/" WANTED " workers, "
 *             ACTIVE " connections, " SERVED " served, "
 *             REFUSED " refused, gen " GENERATION
 *             [ ", udp " IN " in/" OUT " out/" DROPPED " dropped" ]
 *             [ ", " LOST " lost" ]
 *             [ "; " note ]
 *
 * e.g. "prefork: 2/2 workers, 17 connections, 48211 served, 0 refused, gen 3".
 * Upper-case names are unsigned decimal numbers; the words are fixed (no
 * singular forms), so a parser can match them literally. The udp part is
 * there when any datagram counter is nonzero, the lost part when lost > 0,
 * the note when s->note is non-NULL and non-empty. The note comes last and
 * may contain anything but control characters, which become spaces (a
 * newline would start a new assignment in the notify message); if the note
 * does not fit in size, it is cut at a UTF-8 character boundary and ends in
 * "...", or left out when not even that fits.
 *
 * Returns the length of the text (< size), -EINVAL when s->model is NULL or
 * not a word, -ENOBUFS when even the part before the note does not fit. */
int notify_status_format(const struct notify_status *s, char *buf, size_t size);

/* STATUS= at most 4 times a second, and only when it says something new. */
#define NOTIFY_STATUS_INTERVAL_USEC UINT64_C(250000)

/* Zero-initialise; nothing has been sent yet. */
struct notify_status_limiter {
	char last[512];
	uint64_t last_sent_usec;
};

/* True when text differs from the last text sent and at least
 * NOTIFY_STATUS_INTERVAL_USEC have passed since then (the first text is
 * always due). A true answer counts as a send: the caller is expected to
 * send text now. A text longer than the limiter remembers never compares
 * equal (it is sent more often than needed, still at most 4/s). A change
 * that is not due is not remembered: the caller must ask again later (on
 * its next event or a timer), or the change is never shown. */
bool notify_status_due(struct notify_status_limiter *l, const char *text, uint64_t now_usec);

/* Whether any text could be due now: false within NOTIFY_STATUS_INTERVAL_USEC
 * of the last send, when notify_status_due() says no to every text. Lets a
 * caller that runs on every event skip gathering and formatting a status
 * that would be held back anyway. Changes nothing. */
bool notify_status_may_be_due(const struct notify_status_limiter *l, uint64_t now_usec);

/* Formats s and sends "STATUS=<text>" if it is due, or whenever force is
 * set (for the status that goes with READY=1, RELOADING=1, STOPPING=1, which
 * must not be held back; a forced send still counts for the limit). Returns
 * > 0 when sent, 0 when not due or $NOTIFY_SOCKET is unset, or a negative
 * errno from formatting or sending (a failed send is not counted, so the
 * same text is due again). */
int notify_status_send(struct notify_status_limiter *l, const struct notify_status *s,
		       uint64_t now_usec, bool force);
