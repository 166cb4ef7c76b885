#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <systemd/sd-journal.h>

static int max_level = LOG_INFO;
static char context[48];
static char model[16];
/* -1: not yet decided, 0: plain lines on stderr, 1: native journal. */
static int use_journal = -1;

static const char *const level_names[] = {
	[LOG_EMERG] = "emerg",     [LOG_ALERT] = "alert",   [LOG_CRIT] = "crit",
	[LOG_ERR] = "err",         [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
	[LOG_INFO] = "info",       [LOG_DEBUG] = "debug",
};

int
log_level_from_string(const char *s)
{
	for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
		if (strcasecmp(s, level_names[i]) == 0)
			return (int)i;
	if (strcasecmp(s, "error") == 0)
		return LOG_ERR;
	if (strcasecmp(s, "warn") == 0)
		return LOG_WARNING;
	return -EINVAL;
}

const char *
log_level_to_string(int level)
{
	if (level < 0 || (size_t)level >= ELEMENTSOF(level_names))
		return "unknown";
	return level_names[level];
}

void
log_set_max_level(int level)
{
	max_level = level;
}

int
log_get_max_level(void)
{
	return max_level;
}

void
log_set_context(const char *c)
{
	/* Not snprintf(): this runs first thing in every Model=fork child,
	 * where each code page of printf's machinery is a page fault. */
	size_t n = c ? strnlen(c, sizeof(context) - 1) : 0;

	memcpy(context, c ? c : "", n);
	context[n] = '\0';
}

void
log_set_model(const char *m)
{
	snprintf(model, sizeof(model), "%s", m ? m : "");
}

/* systemd sets JOURNAL_STREAM=dev:ino for the stream it connected to
 * stderr; only when stderr is still that stream do we talk to the journal
 * natively (a redirected stderr must keep getting plain lines). */
static bool
stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void
log_reopen(void)
{
	use_journal = stderr_is_journal();
}

bool
log_is_journal(void)
{
	if (use_journal < 0)
		log_reopen();
	return use_journal;
}

static void
log_to_journal(int level, const char *peer, const char *proxy, const char *message_id,
	       const char *text)
{
	struct iovec iov[9];
	char buf[8][96];
	int n = 0;

#define FIELD(...)                                                                                 \
	do {                                                                                       \
		int _l = snprintf(buf[n], sizeof(buf[n]), __VA_ARGS__);                            \
		iov[n].iov_base = buf[n];                                                          \
		iov[n].iov_len = (size_t)_l < sizeof(buf[n]) ? (size_t)_l : sizeof(buf[n]) - 1;   \
		n++;                                                                               \
	} while (0)

	FIELD("PRIORITY=%d", level);
	FIELD("SYSLOG_IDENTIFIER=echod");
	if (model[0])
		FIELD("ECHOD_MODEL=%s", model);
	if (strncmp(context, "worker ", 7) == 0)
		FIELD("ECHOD_WORKER=%s", context + 7);
	if (peer)
		FIELD("ECHOD_PEER=%s", peer);
	if (proxy)
		FIELD("ECHOD_PROXY=%s", proxy);
	if (message_id)
		FIELD("MESSAGE_ID=%s", message_id);
#undef FIELD
	/* MESSAGE= may be long: it gets its own buffer. */
	size_t len = strlen("MESSAGE=") + strlen(text) + 1;
	char *msg = malloc(len);
	if (!msg)
		return;
	snprintf(msg, len, "MESSAGE=%s", text);
	iov[n].iov_base = msg;
	iov[n].iov_len = len - 1;
	n++;
	sd_journal_sendv(iov, n);
	free(msg);
}

static void
log_to_stderr(int level, const char *text)
{
	char line[2048];
	int len;

	if (level <= LOG_WARNING || level == LOG_DEBUG)
		len = snprintf(line, sizeof(line), "echod[%d]: %s%s%s: %s\n", (int)getpid(),
			       context, context[0] ? ": " : "", log_level_to_string(level), text);
	else
		len = snprintf(line, sizeof(line), "echod[%d]: %s%s%s\n", (int)getpid(), context,
			       context[0] ? ": " : "", text);
	if (len < 0)
		return;
	if ((size_t)len >= sizeof(line)) {
		len = sizeof(line) - 1;
		line[len - 1] = '\n';
	}
	/* One write() per line, so lines of concurrent processes never interleave. */
	if (write(STDERR_FILENO, line, (size_t)len) < 0)
		return;
}

static int _printf_(6, 0)
log_message(int level, int error, const char *peer, const char *proxy, const char *message_id,
	    const char *fmt, va_list ap)
{
	int saved_errno = errno;
	char text[1536];

	if (error < 0)
		error = -error;
	if (level > max_level)
		return -error;
	if (error)
		errno = error;
	vsnprintf(text, sizeof(text), fmt, ap);
	if (log_is_journal())
		log_to_journal(level, peer, proxy, message_id, text);
	else
		log_to_stderr(level, text);
	errno = saved_errno;
	return -error;
}

static int _printf_(3, 4)
log_line(const char *peer, const char *proxy, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = log_message(LOG_DEBUG, 0, peer, proxy, NULL, fmt, ap);
	va_end(ap);
	return r;
}

int
log_internal(int level, int error, const char *peer, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = log_message(level, error, peer, NULL, NULL, fmt, ap);
	va_end(ap);
	return r;
}

/* One rate limit for every per-connection message of this process. */
static int _printf_(3, 0)
log_peer_v(const char *peer, const char *proxy, const char *fmt, va_list ap)
{
	static time_t window;
	static unsigned in_window;
	static unsigned long long suppressed;
	time_t now = time(NULL);
	char text[1024];

	if (LOG_DEBUG > max_level)
		return 0;
	if (now != window) {
		window = now;
		in_window = 0;
	}
	if (++in_window > LOG_PEER_BURST) {
		suppressed++;
		return 0;
	}
	vsnprintf(text, sizeof(text), fmt, ap);
	if (suppressed) {
		log_line(peer, proxy, "%s (%llu earlier per-connection message(s) suppressed)", text,
			 suppressed);
		suppressed = 0;
	} else {
		log_line(peer, proxy, "%s", text);
	}
	return 0;
}

int
log_peer(const char *peer, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = log_peer_v(peer, NULL, fmt, ap);
	va_end(ap);
	return r;
}

int
log_peer_via(const char *peer, const char *proxy, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = log_peer_v(peer, proxy, fmt, ap);
	va_end(ap);
	return r;
}

int
log_struct(int level, const char *message_id, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = log_message(level, 0, NULL, NULL, message_id, fmt, ap);
	va_end(ap);
	return r;
}
