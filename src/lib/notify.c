/* sd_notify for the supervisor, and the STATUS= line with its rate limit. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "notify.h"

int
notify_ready(void)
{
	return sd_notify(0, "READY=1");
}

int
notify_reloading(uint64_t monotonic_usec)
{
	return sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, monotonic_usec);
}

int
notify_stopping(void)
{
	return sd_notify(0, "STOPPING=1");
}

int
notify_extend_timeout(uint64_t usec)
{
	return sd_notifyf(0, "EXTEND_TIMEOUT_USEC=%" PRIu64, usec);
}

int
notify_errno(int error)
{
	/* -INT_MIN would overflow; no errno is anywhere near it. */
	if (error == 0 || error == INT_MIN)
		return -EINVAL;
	return sd_notifyf(0, "ERRNO=%d", error < 0 ? -error : error);
}

int
notify_watchdog(void)
{
	return sd_notify(0, "WATCHDOG=1");
}

bool
notify_watchdog_enabled(uint64_t *ret_usec)
{
	uint64_t usec;

	if (sd_watchdog_enabled(0, &usec) <= 0)
		return false;
	if (ret_usec)
		*ret_usec = usec;
	return true;
}

static bool
is_word(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
			return false;
	return true;
}

/* Appends note to buf (which holds len bytes of text) as "; note", keeping
 * it on one line and cutting it to fit. Returns the new length. */
static size_t
append_note(char *buf, size_t len, size_t size, const char *note)
{
	static const char ellipsis[] = "...";
	size_t room, n = strlen(note), i;

	/* Not even "; " and one character fit: the counters matter more. */
	if (size - len < 4)
		return len;
	room = size - len - 1 - 2;
	if (n > room) {
		if (room < sizeof(ellipsis))
			return len;
		n = room - (sizeof(ellipsis) - 1);
		/* Don't split a UTF-8 sequence: back up over continuation bytes. */
		while (n > 0 && ((unsigned char)note[n] & 0xc0) == 0x80)
			n--;
	}

	buf[len++] = ';';
	buf[len++] = ' ';
	for (i = 0; i < n; i++) {
		unsigned char c = note[i];
		buf[len++] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
	}
	if (n < strlen(note)) {
		memcpy(buf + len, ellipsis, sizeof(ellipsis) - 1);
		len += sizeof(ellipsis) - 1;
	}
	buf[len] = '\0';
	return len;
}

int
notify_status_format(const struct notify_status *s, char *buf, size_t size)
{
	size_t len;
	int n;

	if (!s || !buf || size == 0 || !is_word(s->model))
		return -EINVAL;

	n = snprintf(buf, size,
		     "%s: %u/%u workers, %" PRIu64 " connections, %" PRIu64 " served, %" PRIu64
		     " refused, gen %u",
		     s->model, s->workers_running, s->workers_wanted, s->active, s->served,
		     s->refused, s->generation);
	if (n < 0 || (size_t)n >= size)
		goto nobufs;
	len = n;

	if (s->dgrams_in || s->dgrams_out || s->dgrams_dropped) {
		n = snprintf(buf + len, size - len,
			     ", udp %" PRIu64 " in/%" PRIu64 " out/%" PRIu64 " dropped",
			     s->dgrams_in, s->dgrams_out, s->dgrams_dropped);
		if (n < 0 || (size_t)n >= size - len)
			goto nobufs;
		len += n;
	}

	if (s->lost > 0) {
		n = snprintf(buf + len, size - len, ", %" PRIu64 " lost", s->lost);
		if (n < 0 || (size_t)n >= size - len)
			goto nobufs;
		len += n;
	}

	if (s->note && *s->note)
		len = append_note(buf, len, size, s->note);

	return (int)len;

nobufs:
	buf[0] = '\0';
	return -ENOBUFS;
}

bool
notify_status_may_be_due(const struct notify_status_limiter *l, uint64_t now_usec)
{
	if (l->last[0] == '\0')
		return true;
	/* A clock going back is no time passing. */
	return now_usec >= l->last_sent_usec &&
	       now_usec - l->last_sent_usec >= NOTIFY_STATUS_INTERVAL_USEC;
}

static bool
status_due(const struct notify_status_limiter *l, const char *text, uint64_t now_usec)
{
	if (l->last[0] == '\0')
		return true;
	return strcmp(l->last, text) != 0 && notify_status_may_be_due(l, now_usec);
}

static void
status_sent(struct notify_status_limiter *l, const char *text, uint64_t now_usec)
{
	/* A text too long to keep is kept cut short, which never equals it. */
	snprintf(l->last, sizeof(l->last), "%s", text);
	l->last_sent_usec = now_usec;
}

bool
notify_status_due(struct notify_status_limiter *l, const char *text, uint64_t now_usec)
{
	if (!status_due(l, text, now_usec))
		return false;
	status_sent(l, text, now_usec);
	return true;
}

int
notify_status_send(struct notify_status_limiter *l, const struct notify_status *s,
		   uint64_t now_usec, bool force)
{
	char text[sizeof(l->last)];
	int r;

	r = notify_status_format(s, text, sizeof(text));
	if (r < 0)
		return r;
	if (!force && !status_due(l, text, now_usec))
		return 0;

	r = sd_notifyf(0, "STATUS=%s", text);
	if (r >= 0)
		status_sent(l, text, now_usec);
	return r;
}
