#include "listen.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include "kept.h"
#include "udp.h"
#include "util.h"

int
listen_classify(int fd)
{
	int type, accepting;
	socklen_t len = sizeof(type);

	if (sd_is_socket(fd, AF_UNSPEC, 0, -1) <= 0)
		return -ENOTSOCK;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return negative_errno();
	if (type == SOCK_DGRAM)
		return SOCKET_DATAGRAM;
	if (type != SOCK_STREAM)
		return -ESOCKTNOSUPPORT;
	len = sizeof(accepting);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) < 0)
		return negative_errno();
	return accepting ? SOCKET_LISTENING : SOCKET_CONNECTED;
}

bool
listen_socket_is_tcp(int fd)
{
	return sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, -1, 0) > 0;
}

/* On failure *ret_step says what failed. */
static int
listen_set_add(struct listen_set *set, int fd, enum socket_kind kind, const char **ret_step)
{
	struct listener *items = realloc(set->items, (set->n + 1) * sizeof(*items));
	bool is_tcp = listen_socket_is_tcp(fd);
	int one = 1;

	*ret_step = "out of memory";
	if (!items)
		return -ENOMEM;
	set->items = items;
	/* Lets the echo refuse datagrams sent to broadcast or multicast
	 * addresses and answer from the address the client used. */
	if (kind == SOCKET_DATAGRAM) {
		int r = udp_socket_setup(fd);
		*ret_step = "setting up datagram echo";
		if (r < 0)
			return r;
	}
	/* Echoes go out as they are read, not held back by Nagle's algorithm
	 * until the client acknowledges the last. Set once here, as systemd's
	 * NoDelay= would: every connection accepted from it inherits it, so no
	 * process sets it again per connection. */
	if (kind == SOCKET_LISTENING && is_tcp &&
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0) {
		*ret_step = "setting TCP_NODELAY";
		return negative_errno();
	}
	items[set->n] = (struct listener){.fd = fd, .kind = kind, .is_tcp = is_tcp};
	address_format_local(fd, items[set->n].name, sizeof(items[set->n].name));
	set->n++;
	return 0;
}

/* Takes fd and name. */
static int
listen_set_add_stored(struct listen_set *set, int fd, char *name)
{
	struct stored_fd *stored = realloc(set->stored, (set->n_stored + 1) * sizeof(*stored));

	if (!stored) {
		close(fd);
		free(name);
		return -ENOMEM;
	}
	set->stored = stored;
	stored[set->n_stored++] = (struct stored_fd){.fd = fd, .name = name};
	return 0;
}

/* Takes fd (closed on failure). */
static int
take_metrics(struct listen_set *set, int fd, int kind, char *reason, size_t size)
{
	if (kind != SOCKET_LISTENING || set->has_metrics) {
		snprintf(reason, size, "fd %d (" LISTEN_METRICS_NAME ") from systemd: %s", fd,
			 set->has_metrics ? "a second socket named " LISTEN_METRICS_NAME
					  : "not a listening stream socket (HTTP needs one)");
		close(fd);
		return -EINVAL;
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
		int r = negative_errno();
		snprintf(reason, size, "fd %d: making it non-blocking: %s", fd, strerror(-r));
		close(fd);
		return r;
	}
	set->has_metrics = true;
	set->metrics = fd;
	return 0;
}

int
listen_from_systemd(struct listen_set *set, char *reason, size_t size)
{
	char **names = NULL;
	int n, r = 0;
	uint64_t id;

	n = sd_listen_fds_with_names(true, &names);
	if (n < 0) {
		snprintf(reason, size, "reading LISTEN_FDS: %s", strerror(-n));
		return n;
	}
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		int kind;

		if (r == 0 && names &&
		    kept_name_parse(names[i], &id) != KEPT_OTHER) {
			r = listen_set_add_stored(set, fd, TAKE_PTR(names[i]));
			if (r < 0)
				snprintf(reason, size, "out of memory");
			continue;
		}
		kind = r < 0 ? r : listen_classify(fd);
		if (r == 0 && names && strcmp(names[i], LISTEN_METRICS_NAME) == 0) {
			r = take_metrics(set, fd, kind, reason, size);
			free(names[i]);
			continue;
		}

		if (kind < 0 && r == 0) {
			snprintf(reason, size, "fd %d (%s) from systemd: %s", fd,
				 names && names[i] ? names[i] : "unnamed",
				 kind == -ENOTSOCK ? "not a socket"
						   : kind == -ESOCKTNOSUPPORT ? "socket type not served"
									    : strerror(-kind));
			r = kind;
		}
		if (r == 0 && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
			r = negative_errno();
			snprintf(reason, size, "fd %d: making it non-blocking: %s", fd,
				 strerror(-r));
		}
		/* A stream: listening, or one connection (Accept=yes). */
		if (r == 0 && names && strcmp(names[i], LISTEN_PROXY_NAME) == 0 &&
		    kind == SOCKET_DATAGRAM) {
			snprintf(reason, size,
				 "fd %d (" LISTEN_PROXY_NAME ") from systemd: a datagram socket (the "
				 "PROXY protocol needs a stream one)",
				 fd);
			r = -EINVAL;
		}
		if (r == 0) {
			const char *step;

			r = listen_set_add(set, fd, (enum socket_kind)kind, &step);
			if (r < 0)
				snprintf(reason, size, "fd %d from systemd: %s: %s", fd, step,
					 strerror(-r));
			else
				set->items[set->n - 1].proxy =
				    names && strcmp(names[i], LISTEN_PROXY_NAME) == 0;
		}
		if (r < 0)
			close(fd);
		if (names)
			free(names[i]);
	}
	free(names);
	if (r < 0)
		return r;
	set->from_systemd = n > 0;
	return (int)set->n;
}

/* A stale socket file (its server gone) would make bind() fail forever;
 * one that still answers belongs to a running server and is left alone. */
static bool
unix_socket_is_stale(const struct listen_address *a)
{
	const struct sockaddr_un *un = (const struct sockaddr_un *)&a->sa;
	struct stat st;
	_cleanup_close_ int fd = -1;

	if (un->sun_path[0] == '\0' || stat(un->sun_path, &st) < 0 || !S_ISSOCK(st.st_mode))
		return false;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	return connect(fd, (const struct sockaddr *)&a->sa, a->salen) < 0 &&
	       errno == ECONNREFUSED;
}

static int
bind_socket(const struct listen_address *a, const char **ret_step)
{
	_cleanup_close_ int fd = -1;
	int one = 1;

	*ret_step = "socket";
	fd = socket(a->sa.ss_family, a->type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return negative_errno();
	*ret_step = "setsockopt";
	if (a->sa.ss_family != AF_UNIX &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		return negative_errno();
	/* [::]:7 means IPv6 only; listen on 0.0.0.0:7 too for IPv4. */
	if (a->sa.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
		return negative_errno();
	*ret_step = "bind";
	if (bind(fd, (const struct sockaddr *)&a->sa, a->salen) < 0) {
		if (errno != EADDRINUSE || a->sa.ss_family != AF_UNIX || !unix_socket_is_stale(a))
			return negative_errno();
		unlink(((const struct sockaddr_un *)&a->sa)->sun_path);
		if (bind(fd, (const struct sockaddr *)&a->sa, a->salen) < 0)
			return negative_errno();
	}
	*ret_step = "listen";
	if (a->type == SOCK_STREAM && listen(fd, SOMAXCONN) < 0)
		return negative_errno();
	return TAKE_FD(fd);
}

int
listen_bind(struct listen_set *set, const char *text, const struct listen_address *a, bool proxy,
	    char *reason, size_t size)
{
	const struct sockaddr_un *un = (const struct sockaddr_un *)&a->sa;
	const char *step;
	int fd, r;

	fd = bind_socket(a, &step);
	if (fd < 0) {
		snprintf(reason, size, "%s: %s: %s", text, step, strerror(-fd));
		return fd;
	}
	r = listen_set_add(set, fd, a->type == SOCK_DGRAM ? SOCKET_DATAGRAM : SOCKET_LISTENING,
			   &step);
	if (r < 0) {
		close(fd);
		snprintf(reason, size, "%s: %s: %s", text, step, strerror(-r));
		return r;
	}
	set->items[set->n - 1].proxy = proxy && a->type == SOCK_STREAM;
	if (a->sa.ss_family == AF_UNIX && un->sun_path[0] != '\0')
		set->items[set->n - 1].unlink_path = strdup(un->sun_path);
	return 0;
}

void
listen_set_free(struct listen_set *set, bool unlink_paths)
{
	for (size_t i = 0; i < set->n; i++) {
		if (set->items[i].fd >= 0)
			close(set->items[i].fd);
		if (unlink_paths && set->items[i].unlink_path)
			unlink(set->items[i].unlink_path);
		free(set->items[i].unlink_path);
	}
	free(set->items);
	set->items = NULL;
	set->n = 0;
	for (size_t i = 0; i < set->n_stored; i++) {
		if (set->stored[i].fd >= 0)
			close(set->stored[i].fd);
		free(set->stored[i].name);
	}
	free(set->stored);
	set->stored = NULL;
	set->n_stored = 0;
	if (set->has_metrics && set->metrics >= 0)
		close(set->metrics);
	set->has_metrics = false;
}

size_t
listen_set_count_proxy(const struct listen_set *set)
{
	size_t n = 0;

	for (size_t i = 0; i < set->n; i++)
		n += set->items[i].proxy;
	return n;
}

size_t
listen_set_count(const struct listen_set *set, enum socket_kind kind)
{
	size_t n = 0;

	for (size_t i = 0; i < set->n; i++)
		n += set->items[i].kind == kind;
	return n;
}

int
listen_set_defer_accept(const struct listen_set *set, unsigned sec)
{
	int value = (int)sec;

	for (size_t i = 0; i < set->n; i++) {
		const struct listener *l = &set->items[i];

		if (l->kind != SOCKET_LISTENING || !l->is_tcp)
			continue;
		if (setsockopt(l->fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &value, sizeof(value)) < 0)
			return negative_errno();
	}
	return 0;
}

int
listen_queue(int fd, unsigned *ret_queued, unsigned *ret_room)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return negative_errno();
	if (len < offsetof(struct tcp_info, tcpi_sacked) + sizeof(ti.tcpi_sacked))
		return -EPROTO;
	/* On any other socket the two fields mean something else. */
	if (ti.tcpi_state != TCP_LISTEN)
		return -EINVAL;
	*ret_queued = ti.tcpi_unacked;
	if (ret_room)
		*ret_room = ti.tcpi_sacked;
	return 0;
}

void
listen_queue_depth(const struct listen_set *set, unsigned *ret_queued, unsigned *ret_room)
{
	unsigned queued = 0, room = 0;

	for (size_t i = 0; i < set->n; i++) {
		unsigned q, r;

		if (set->items[i].kind != SOCKET_LISTENING || !set->items[i].is_tcp ||
		    listen_queue(set->items[i].fd, &q, &r) < 0)
			continue;
		queued += q;
		room += r;
	}
	*ret_queued = queued;
	*ret_room = room;
}
