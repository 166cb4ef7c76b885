/* The reload-status file: written by the supervisor, waited for by
 * `echod --reload`. The protocol is in reload.h. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "reload.h"
#include "util.h"

#define POLL_INTERVAL_USEC 20000
/* generation=, pid= and result= lines with room to spare, plus the message. */
#define STATUS_SIZE_MAX (RELOAD_MESSAGE_MAX + 256)

/* What one read of the file says. */
struct answer {
	unsigned long long generation;
	pid_t pid; /* 0 when the file does not say */
	bool ok;
	char message[RELOAD_MESSAGE_MAX + 1];
};

static bool
dir_given(const char *dir)
{
	return dir && *dir;
}

/* Copies src into dst (size bytes, > 0) on one line, cut at a UTF-8
 * character boundary. */
static void
copy_line(char *dst, size_t size, const char *src)
{
	size_t n = strlen(src), i;

	if (n >= size) {
		n = size - 1;
		while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
			n--;
	}
	for (i = 0; i < n; i++) {
		unsigned char c = src[i];
		dst[i] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
	}
	dst[n] = '\0';
}

int
reload_status_write(const char *dir, unsigned long long generation, bool ok, const char *message)
{
	_cleanup_free_ char *path = NULL, *tmp = NULL;
	_cleanup_close_ int fd = -1;
	char line[RELOAD_MESSAGE_MAX + 1], text[STATUS_SIZE_MAX];
	int len, r;

	if (!dir_given(dir))
		return 0;

	copy_line(line, sizeof(line), message ? message : "");
	len = snprintf(text, sizeof(text), "generation=%llu\npid=%ld\nresult=%s\nmessage=%s\n",
		       generation, (long)getpid(), ok ? "ok" : "rejected", line);
	if (len < 0 || (size_t)len >= sizeof(text))
		return -ENOBUFS;

	/* The pointer is undefined after a failed asprintf(). */
	if (asprintf(&path, "%s/" RELOAD_STATUS_FILE, dir) < 0) {
		path = NULL;
		return -ENOMEM;
	}
	if (asprintf(&tmp, "%s/." RELOAD_STATUS_FILE ".XXXXXX", dir) < 0) {
		tmp = NULL;
		return -ENOMEM;
	}

	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return negative_errno();

	/* mkostemp() makes it 0600; whoever may look in the directory may
	 * read the answer (it is the same as `systemctl status` shows). */
	if (fchmod(fd, 0644) < 0) {
		r = negative_errno();
		goto fail;
	}
	r = write_all(fd, text, len);
	if (r < 0)
		goto fail;
	/* No fsync(): the directory is on /run (tmpfs), and an answer is
	 * worthless after a crash anyway. close() can still report an error. */
	if (close(TAKE_FD(fd)) < 0) {
		r = negative_errno();
		goto fail;
	}
	if (rename(tmp, path) < 0) {
		r = negative_errno();
		goto fail;
	}
	return 0;

fail:
	(void)unlink(tmp);
	return r;
}

static int
parse_ull(const char *s, unsigned long long *ret)
{
	unsigned long long v;
	char *end;

	/* strtoull() would take a sign and leading spaces. */
	if (*s < '0' || *s > '9')
		return -EBADMSG;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -EBADMSG;
	*ret = v;
	return 0;
}

/* Parses the file's text (NUL-terminated; modified). */
static int
parse_status(char *text, struct answer *ret)
{
	struct answer a = {0};
	bool have_generation = false, have_result = false;
	char *line = text, *eol;

	while (*line) {
		char *value;

		eol = strchr(line, '\n');
		if (!eol)
			return -EBADMSG; /* every line ends in a newline */
		*eol = '\0';
		value = strchr(line, '=');
		if (!value)
			return -EBADMSG;
		*value++ = '\0';

		if (strcmp(line, "generation") == 0) {
			if (parse_ull(value, &a.generation) < 0)
				return -EBADMSG;
			have_generation = true;
		} else if (strcmp(line, "pid") == 0) {
			unsigned long long pid;

			if (parse_ull(value, &pid) < 0 || pid == 0 || pid > INT32_MAX)
				return -EBADMSG;
			a.pid = (pid_t)pid;
		} else if (strcmp(line, "result") == 0) {
			if (strcmp(value, "ok") == 0)
				a.ok = true;
			else if (strcmp(value, "rejected") == 0)
				a.ok = false;
			else
				return -EBADMSG;
			have_result = true;
		} else if (strcmp(line, "message") == 0) {
			copy_line(a.message, sizeof(a.message), value);
		}
		/* Other keys are for later versions. */
		line = eol + 1;
	}
	if (!have_generation || !have_result)
		return -EBADMSG;

	*ret = a;
	return 0;
}

static int
read_answer(const char *dir, struct answer *ret)
{
	_cleanup_free_ char *path = NULL;
	_cleanup_close_ int fd = -1;
	char text[STATUS_SIZE_MAX + 1];
	size_t len = 0;

	if (asprintf(&path, "%s/" RELOAD_STATUS_FILE, dir) < 0) {
		path = NULL;
		return -ENOMEM;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return negative_errno();

	/* One byte more than a valid file can have tells a foreign file. */
	while (len < sizeof(text) - 1) {
		ssize_t n = read(fd, text + len, sizeof(text) - 1 - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		if (n == 0)
			break;
		len += n;
	}
	if (len >= sizeof(text) - 1 || memchr(text, '\0', len))
		return -EBADMSG;
	text[len] = '\0';

	return parse_status(text, ret);
}

int
reload_status_read(const char *dir, unsigned long long *ret_generation, bool *ret_ok, char *message,
		   size_t size)
{
	struct answer a;
	int r;

	if (!dir_given(dir))
		return -EINVAL;
	r = read_answer(dir, &a);
	if (r < 0)
		return r;

	if (ret_generation)
		*ret_generation = a.generation;
	if (ret_ok)
		*ret_ok = a.ok;
	if (message && size > 0)
		copy_line(message, size, a.message);
	return 0;
}

static void
sleep_usec(uint64_t usec)
{
	struct timespec ts = {.tv_sec = usec / 1000000, .tv_nsec = (usec % 1000000) * 1000};

	/* A signal cutting it short only makes the next check earlier. */
	(void)nanosleep(&ts, NULL);
}

static _printf_(4, 5) int explain(char *message, size_t size, int r, const char *format, ...)
{
	va_list ap;

	if (message && size > 0) {
		va_start(ap, format);
		vsnprintf(message, size, format, ap);
		va_end(ap);
	}
	return r;
}

int
reload_request(pid_t pid, const char *dir, int timeout_ms, char *message, size_t size)
{
	unsigned long long base = 0;
	uint64_t deadline;
	struct answer a;
	int r;

	/* kill() with 0 or a negative pid signals process groups, or every
	 * process we may signal: never what a reload means. */
	if (pid <= 0)
		return explain(message, size, -EINVAL, "not a process ID: %ld", (long)pid);
	if (!dir_given(dir))
		return explain(message, size, -EINVAL,
			       "no runtime directory ($RUNTIME_DIRECTORY) to read the answer from");
	if (timeout_ms < 0)
		return explain(message, size, -EINVAL, "negative timeout: %d ms", timeout_ms);

	/* No file, a foreign one or one from an earlier supervisor: any answer
	 * from pid is new. */
	r = read_answer(dir, &a);
	if (r >= 0 && a.pid == pid)
		base = a.generation;
	else if (r < 0 && r != -ENOENT && r != -EBADMSG)
		return explain(message, size, r, "reading %s/" RELOAD_STATUS_FILE ": %s", dir,
			       strerror(-r));

	deadline = now_usec() + (uint64_t)timeout_ms * 1000;
	if (kill(pid, SIGHUP) < 0) {
		r = negative_errno();
		if (r == -ESRCH)
			return explain(message, size, r, "no process %ld: is echod running?",
				       (long)pid);
		return explain(message, size, r, "signalling process %ld: %s", (long)pid,
			       strerror(-r));
	}

	for (;;) {
		uint64_t now, left;

		r = read_answer(dir, &a);
		if (r >= 0 && a.pid == pid && a.generation > base) {
			if (a.ok)
				return explain(message, size, 0, "%s",
					       a.message[0] ? a.message : "configuration reloaded");
			return explain(message, size, -EINVAL, "%s",
				       a.message[0] ? a.message : "reload rejected");
		}
		/* Written atomically, so -EBADMSG is a foreign file the
		 * supervisor will replace; -ENOENT an answer still to come. */
		if (r < 0 && r != -ENOENT && r != -EBADMSG)
			return explain(message, size, r, "reading %s/" RELOAD_STATUS_FILE ": %s",
				       dir, strerror(-r));

		if (kill(pid, 0) < 0 && errno == ESRCH)
			return explain(message, size, -ESRCH,
				       "process %ld exited without answering the reload",
				       (long)pid);

		now = now_usec();
		if (now >= deadline)
			return explain(message, size, -ETIMEDOUT,
				       "no answer from process %ld within %d ms", (long)pid,
				       timeout_ms);
		left = deadline - now;
		sleep_usec(left < POLL_INTERVAL_USEC ? left : POLL_INTERVAL_USEC);
	}
}
