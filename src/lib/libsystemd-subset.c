/* The part of libsystemd the connection forker's processes call, written
 * out, so that echod-forker maps no libsystemd (forker/forker.c says why
 * that matters; it is linked statically). lib/ calls these through
 * <systemd/sd-*.h> as usual; echod itself links the real libsystemd. In
 * no static library: only echod-forker (and its unit test) link this
 * file.
 *
 * All of it is documented, stable protocol: sd_notify(3) ("the protocol is
 * stable ... can be reimplemented"), the journal's native protocol
 * (systemd.io/JOURNAL_NATIVE_PROTOCOL) and sd_is_socket(3). Loading
 * libsystemd with dlopen() instead would cost each connection process
 * that needs it about 0.9 ms, and a restart makes every one of them need
 * it (worker-kept.c stores each connection in the fd store).
 *
 * Only what echod uses is covered: notifications from this process
 * (pid 0), a barrier, journal entries that fit one datagram (echod's are
 * at most a few KiB). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

#include "util.h"

#define JOURNAL_SOCKET "/run/systemd/journal/socket"

static const struct sockaddr_un journal_address = {.sun_family = AF_UNIX,
						   .sun_path = JOURNAL_SOCKET};
#define NOTIFY_MAX_FDS 253 /* the kernel's SCM_MAX_FD */

/* --- sd_notify(3) --- */

/* $NOTIFY_SOCKET as an address: a path, or "@" for the abstract
 * namespace. 0 and nothing set when there is none. */
static int
notify_address(struct sockaddr_un *sa, socklen_t *ret_len)
{
	const char *e = getenv("NOTIFY_SOCKET");
	size_t len;

	if (!e || !*e)
		return 0;
	if (e[0] != '/' && e[0] != '@')
		return -EAFNOSUPPORT;
	len = strlen(e);
	if (len >= sizeof(sa->sun_path))
		return -EINVAL;
	*sa = (struct sockaddr_un){.sun_family = AF_UNIX};
	memcpy(sa->sun_path, e, len);
	if (sa->sun_path[0] == '@')
		sa->sun_path[0] = '\0';
	*ret_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	return 1;
}

int
sd_pid_notify_with_fds(pid_t pid, int unset_environment, const char *state, const int *fds,
		       unsigned n_fds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * NOTIFY_MAX_FDS)];
		struct cmsghdr align;
	} control;
	struct iovec iov = {.iov_base = (char *)state, .iov_len = state ? strlen(state) : 0};
	struct sockaddr_un sa;
	struct msghdr msg = {.msg_name = &sa, .msg_iov = &iov, .msg_iovlen = 1};
	socklen_t sa_len = 0;
	int fd, r;

	/* Another process's credentials would take SCM_CREDENTIALS: echod
	 * notifies for itself only. */
	if (pid != 0 && pid != getpid())
		return -EOPNOTSUPP;
	if (!state || n_fds > NOTIFY_MAX_FDS || (n_fds > 0 && !fds))
		return -EINVAL;
	r = notify_address(&sa, &sa_len);
	if (unset_environment)
		unsetenv("NOTIFY_SOCKET");
	if (r <= 0)
		return r;
	msg.msg_namelen = sa_len;
	if (n_fds > 0) {
		struct cmsghdr *cmsg;

		msg.msg_control = control.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
		cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
		memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * n_fds);
	}
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return negative_errno();
	r = sendmsg(fd, &msg, MSG_NOSIGNAL) < 0 ? negative_errno() : 1;
	close(fd);
	return r;
}

int
sd_notifyf(int unset_environment, const char *format, ...)
{
	char *state;
	va_list ap;
	int r;

	va_start(ap, format);
	r = vasprintf(&state, format, ap);
	va_end(ap);
	if (r < 0)
		return -ENOMEM;
	r = sd_pid_notify_with_fds(0, unset_environment, state, NULL, 0);
	free(state);
	return r;
}

/* The service manager has read everything sent before once it closes
 * the pipe's write end, which travels with BARRIER=1. */
int
sd_notify_barrier(int unset_environment, uint64_t timeout)
{
	int pipe_fds[2], r;

	if (pipe2(pipe_fds, O_CLOEXEC) < 0)
		return negative_errno();
	r = sd_pid_notify_with_fds(0, unset_environment, "BARRIER=1", &pipe_fds[1], 1);
	close(pipe_fds[1]);
	if (r > 0) {
		struct pollfd p = {.fd = pipe_fds[0], .events = POLLIN};
		int ms = timeout == UINT64_MAX ? -1 : (int)((timeout + 999) / 1000);
		int n = poll(&p, 1, ms);

		r = n < 0 ? negative_errno() : n == 0 ? -ETIMEDOUT : 1;
	}
	close(pipe_fds[0]);
	return r;
}

/* LISTEN_PID names the supervisor, never this process: nothing is passed
 * here (lib/listen.c links it; the forker never calls it). */
int
sd_listen_fds_with_names(int unset_environment, char ***names)
{
	if (names)
		*names = NULL;
	return 0;
}

/* --- sd_is_socket(3) --- */

static int
socket_option(int fd, int option)
{
	int value;
	socklen_t len = sizeof(value);

	if (getsockopt(fd, SOL_SOCKET, option, &value, &len) < 0)
		return negative_errno();
	return value;
}

int
sd_is_socket(int fd, int family, int type, int listening)
{
	int r;

	if (type != 0) {
		r = socket_option(fd, SO_TYPE);
		if (r < 0)
			return r == -ENOTSOCK ? 0 : r;
		if (r != type)
			return 0;
	}
	r = socket_option(fd, SO_DOMAIN);
	if (r < 0)
		return r == -ENOTSOCK ? 0 : r;
	if (family != AF_UNSPEC && r != family)
		return 0;
	if (listening >= 0) {
		r = socket_option(fd, SO_ACCEPTCONN);
		if (r < 0)
			return r;
		if (!r != !listening)
			return 0;
	}
	return 1;
}

int
sd_is_socket_inet(int fd, int family, int type, int listening, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int r;

	if (family != AF_UNSPEC && family != AF_INET && family != AF_INET6)
		return -EINVAL;
	r = sd_is_socket(fd, family, type, listening);
	if (r <= 0)
		return r;
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return negative_errno();
	if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
		return 0;
	if (port == 0)
		return 1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port) == port;
	return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) == port;
}

/* --- the journal's native protocol --- */

/* "FIELD=value\n", or for a value with a newline "FIELD\n", its length
 * as 64-bit little endian, the value and "\n". Returns the bytes added
 * (or that would be), like snprintf(). */
static size_t
append_field(char *buf, size_t size, size_t at, const char *field, size_t len)
{
	const char *eq = memchr(field, '=', len);
	size_t name = eq ? (size_t)(eq - field) : len;
	size_t value = eq ? len - name - 1 : 0;
	bool binary = eq && memchr(eq + 1, '\n', value);
	size_t need = binary ? name + 1 + 8 + value + 1 : len + 1;

	if (at + need > size)
		return need;
	if (!binary) {
		memcpy(buf + at, field, len);
		buf[at + len] = '\n';
		return need;
	}
	memcpy(buf + at, field, name);
	buf[at + name] = '\n';
	for (int i = 0; i < 8; i++)
		buf[at + name + 1 + i] = (char)(((uint64_t)value >> (8 * i)) & 0xff);
	memcpy(buf + at + name + 9, eq + 1, value);
	buf[at + need - 1] = '\n';
	return need;
}

/* Not connected: each entry is sent to the socket's path, so that a
 * journald restarted meanwhile is found again, as libsystemd does. */
static int
journal_socket(void)
{
	static int fd = -1;

	if (fd < 0) {
		fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return negative_errno();
	}
	return fd;
}

int
sd_journal_sendv_with_location(const char *file, const char *line, const char *func,
			       const struct iovec *iov, int n)
{
	char buf[8192], code_func[128];
	size_t at = 0;
	int fd;

	snprintf(code_func, sizeof(code_func), "CODE_FUNC=%s", func ? func : "");
	const char *location[] = {file, line, code_func};
	for (size_t i = 0; i < ELEMENTSOF(location); i++)
		if (location[i])
			at += append_field(buf, sizeof(buf), at, location[i], strlen(location[i]));
	for (int i = 0; i < n; i++)
		at += append_field(buf, sizeof(buf), at, iov[i].iov_base, iov[i].iov_len);
	if (at > sizeof(buf))
		return -EMSGSIZE;
	fd = journal_socket();
	if (fd < 0)
		return fd;
	return sendto(fd, buf, at, MSG_NOSIGNAL, (const struct sockaddr *)&journal_address,
		      sizeof(journal_address)) < 0
		       ? negative_errno()
		       : 0;
}
