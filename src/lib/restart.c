#include "restart.h"

#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>

#include "kept.h"
#include "log.h"
#include "sdunit.h"
#include "util.h"

static void
close_stored(struct stored_fd *sf)
{
	if (sf->fd >= 0)
		close(sf->fd);
	sf->fd = -1;
}

/* The stored memfd that owes bytes on connection id, or NULL. */
static struct stored_fd *
find_owed(struct listen_set *set, uint64_t id)
{
	for (size_t i = 0; i < set->n_stored; i++) {
		uint64_t owed_id;

		if (set->stored[i].fd >= 0 &&
		    kept_name_parse(set->stored[i].name, &owed_id) == KEPT_OWED &&
		    owed_id == id)
			return &set->stored[i];
	}
	return NULL;
}

/* A connection the client closed while echod was restarting has nothing
 * left to serve: there is no point in keeping it. */
static bool
connection_usable(int fd)
{
	int error = 0;
	socklen_t len = sizeof(error);

	return getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == 0 && error == 0;
}

static void
forget_store(const struct listen_set *set)
{
	bool conns = false, config = false;

	for (size_t i = 0; i < set->n_stored; i++) {
		uint64_t id;
		enum kept_kind kind = kept_name_parse(set->stored[i].name, &id);

		if (kind == KEPT_OWED)
			(void)kept_store_remove(set->stored[i].name);
		conns |= kind == KEPT_CONN;
		config |= kind == KEPT_CONFIG;
	}
	if (conns)
		(void)kept_store_remove(KEPT_CONN_NAME);
	if (config)
		(void)kept_store_remove(KEPT_CONFIG_NAME);
}

int
restart_take(struct listen_set *set, struct restart_queue *q)
{
	size_t n = 0, dropped = 0;

	*q = (struct restart_queue){0};
	if (set->n_stored == 0)
		return 0;
	/* Taken: systemd need not keep them any more, and must not give the
	 * same connections to a later start once we have stored them anew. */
	forget_store(set);
	q->items = calloc(set->n_stored, sizeof(*q->items));
	q->size = set->n_stored;
	if (!q->items) {
		log_error("taking connections back from systemd's fd store: out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < set->n_stored; i++) {
		struct stored_fd *sf = &set->stored[i], *owed;
		uint64_t id, unused;

		if (sf->fd < 0 || kept_name_parse(sf->name, &unused) != KEPT_CONN)
			continue;
		if (kept_socket_id(sf->fd, &id) < 0 || !connection_usable(sf->fd)) {
			close_stored(sf);
			dropped++;
			continue;
		}
		owed = find_owed(set, id);
		(void)fcntl(sf->fd, F_SETFL, fcntl(sf->fd, F_GETFL) | O_NONBLOCK);
		q->items[n] = (struct kept_conn){.fd = TAKE_FD(sf->fd),
						.owed_fd = owed ? TAKE_FD(owed->fd) : -1};
		q->owed += owed != NULL;
		n++;
	}
	/* Left over: the kept configuration (read at start, if it was
	 * needed), and owed bytes whose connection did not come back. */
	for (size_t i = 0; i < set->n_stored; i++) {
		uint64_t unused;

		if (set->stored[i].fd < 0)
			continue;
		dropped += kept_name_parse(set->stored[i].name, &unused) != KEPT_CONFIG;
		close_stored(&set->stored[i]);
	}
	q->n = n;
	log_info("restart: took back %zu connection(s) from systemd's fd store, %u of them owing "
		 "bytes%s",
		 n, q->owed, dropped ? "; some entries were stale and are closed" : "");
	return (int)n;
}

int
restart_queue_store(struct restart_queue *q)
{
	int fds[KEPT_BATCH_MAX];
	size_t stored = 0;

	while (q->next < q->n) {
		size_t n = 0, first = q->next;
		int r;

		for (size_t i = first; i < q->n && n < ELEMENTSOF(fds); i++) {
			struct kept_conn *item = &q->items[i];
			char name[KEPT_NAME_MAX];
			uint64_t id;

			if (item->owed_fd >= 0 && kept_socket_id(item->fd, &id) == 0) {
				kept_owed_name(id, name, sizeof(name));
				(void)kept_store(name, &item->owed_fd, 1);
			}
			fds[n++] = item->fd;
		}
		r = kept_store(KEPT_CONN_NAME, fds, n);
		if (r <= 0)
			return r == 0 ? -ENOTCONN : r;
		for (size_t i = first; i < first + n; i++) {
			close(q->items[i].fd);
			if (q->items[i].owed_fd >= 0)
				close(q->items[i].owed_fd);
			q->items[i].fd = q->items[i].owed_fd = -1;
		}
		q->next += n;
		stored += n;
	}
	/* The supervisor exits soon: systemd must have them first. */
	if (stored)
		(void)kept_store_sync(5 * 1000 * 1000);
	return (int)stored;
}

int
restart_queue_push_owed(struct restart_queue *q, int memfd)
{
	struct pending_owed *pending;
	uint64_t id;
	int r;

	r = kept_owed_decode(memfd, &id, NULL, NULL);
	if (r < 0) {
		close(memfd);
		return r;
	}
	/* Sent again after a send that failed half-way: the newer copy wins. */
	for (size_t i = 0; i < q->n_pending; i++)
		if (q->pending[i].id == id) {
			close(q->pending[i].fd);
			q->pending[i].fd = memfd;
			return 0;
		}
	pending = realloc(q->pending, (q->n_pending + 1) * sizeof(*pending));
	if (!pending) {
		close(memfd);
		return -ENOMEM;
	}
	q->pending = pending;
	q->pending[q->n_pending++] = (struct pending_owed){.fd = memfd, .id = id};
	return 0;
}

int
restart_queue_push(struct restart_queue *q, int fd)
{
	int owed_fd = -1;
	uint64_t id;

	if (q->n == q->size) {
		size_t size = q->size ? 2 * q->size : 64;
		struct kept_conn *items = realloc(q->items, size * sizeof(*items));
		if (!items) {
			close(fd);
			return -ENOMEM;
		}
		q->items = items;
		q->size = size;
	}
	if (kept_socket_id(fd, &id) == 0)
		for (size_t i = 0; i < q->n_pending; i++)
			if (q->pending[i].id == id) {
				owed_fd = q->pending[i].fd;
				q->pending[i] = q->pending[--q->n_pending];
				break;
			}
	q->items[q->n++] = (struct kept_conn){.fd = fd, .owed_fd = owed_fd};
	q->owed += owed_fd >= 0;
	return 0;
}

void
restart_queue_free(struct restart_queue *q)
{
	for (size_t i = 0; i < q->n_pending; i++)
		close(q->pending[i].fd);
	free(q->pending);
	for (size_t i = q->next; i < q->n; i++) {
		if (q->items[i].fd >= 0)
			close(q->items[i].fd);
		if (q->items[i].owed_fd >= 0)
			close(q->items[i].owed_fd);
	}
	free(q->items);
	*q = (struct restart_queue){0};
}

int
restart_config_keep(const struct config *c, unsigned store_max, unsigned active)
{
	_cleanup_close_ int fd = -1;
	int r;

	/* The connections come first: systemd refuses what does not fit. */
	if ((uint64_t)store_max < 2 * (uint64_t)active + 1) {
		log_notice("restart: FileDescriptorStoreMax=%u leaves no room for the configuration "
			   "next to %u connection(s): a broken configuration file would fail the "
			   "next start", store_max, active);
		return -ENOSPC;
	}
	r = kept_config_pack(c, &fd);
	if (r >= 0)
		r = kept_store(KEPT_CONFIG_NAME, &fd, 1);
	/* The supervisor may exit before systemd reads the message. */
	if (r > 0)
		(void)kept_store_sync(5 * 1000 * 1000);
	if (r >= 0)
		return r;
	log_warning_errno(r, "restart: keeping the configuration in systemd's fd store: %m; a "
			     "broken configuration file would fail the next start");
	return r;
}

int
restart_config_load(struct config *c, struct config_error *err)
{
	char **names = NULL;
	int n, fd = -1, r;

	n = sd_listen_fds_with_names(false, &names);
	for (int i = 0; i < n; i++) {
		uint64_t unused;

		if (fd < 0 && names && kept_name_parse(names[i], &unused) == KEPT_CONFIG)
			fd = SD_LISTEN_FDS_START + i;
		free(names ? names[i] : NULL);
	}
	free(names);
	if (fd < 0)
		return 0;
	r = kept_config_unpack(fd, c, RESTART_CONFIG_ORIGIN, err);
	return r < 0 ? r : 1;
}

void
restart_announce(pid_t pid)
{
	struct sdunit_info info;
	union sigval value;
	int r;

	r = sdunit_query(&info);
	if (r < 0) {
		log_notice_errno(r, "cannot ask systemd whether this is a restart (%m): "
				    "echod drains its connections as on a stop");
		return;
	}
	if (strcmp(info.job_type, "restart") != 0) {
		log_info("%s: echod drains its connections", info.job_type[0] ? info.job_type : "stop");
		return;
	}
	if (strcmp(info.notify_access, "all") != 0 || info.fd_store_max == 0) {
		log_notice("restart, but NotifyAccess=%s and FileDescriptorStoreMax=%u: connections "
			   "cannot be kept (that needs \"all\" and a store); echod drains them",
			   info.notify_access, info.fd_store_max);
		return;
	}
	value.sival_int = (int)(info.fd_store_max > INT32_MAX ? INT32_MAX : info.fd_store_max);
	if (sigqueue(pid, RESTART_SIGNAL, value) < 0)
		log_warning_errno(errno, "restart: telling echod (pid %d) to keep its connections: %m",
				  (int)pid);
}

bool
restart_wanted(bool from_systemd, bool announced, unsigned store_max, unsigned active)
{
	if (!announced || !from_systemd || !getenv("NOTIFY_SOCKET"))
		return false;
	if ((uint64_t)store_max < 2 * (uint64_t)active) {
		log_notice("restart, but FileDescriptorStoreMax=%u cannot hold %u connection(s) and "
			   "their owed bytes; draining them", store_max, active);
		return false;
	}
	log_info("restart: keeping %u connection(s) in systemd's fd store", active);
	return true;
}
