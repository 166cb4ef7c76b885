/* Where sockets come from: systemd (sd_listen_fds_with_names) or our own
 * bind() of Listen= addresses. Knows nothing of workers. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "address.h"

enum socket_kind {
	SOCKET_LISTENING, /* SOCK_STREAM, listen() called: accept from it */
	SOCKET_DATAGRAM,  /* SOCK_DGRAM: echo each datagram */
	SOCKET_CONNECTED, /* SOCK_STREAM, already connected: per-connection mode */
};

struct listener {
	int fd;
	enum socket_kind kind;
	bool is_tcp;		 /* TCP: TCP_NODELAY is set on it (a listening socket),
				  * and what it accepts inherits it */
	bool proxy;		 /* its connections begin with a PROXY header */
	char name[ADDRESS_MAX];	 /* the local address, for logs */
	char *unlink_path;	 /* a UNIX socket file we created: removed at exit */
};

/* An fd that came back from systemd's fd store (see kept.h). */
struct stored_fd {
	int fd;
	char *name;
};

struct listen_set {
	struct listener *items;
	size_t n;
	bool from_systemd;
	/* Connections kept across a restart and the bytes they owe: not
	 * sockets to listen on; the supervisor takes them (-1 once taken). */
	struct stored_fd *stored;
	size_t n_stored;
	/* The socket systemd named "metrics" (FileDescriptorName=metrics):
	 * HTTP, not echo; the supervisor takes it. */
	bool has_metrics;
	int metrics;
};

#define LISTEN_METRICS_NAME "metrics"
/* A stream socket systemd named "proxy" is a proxy listener
 * (ProxyListen=), or with Accept=yes one connection from a balancer. */
#define LISTEN_PROXY_NAME "proxy"

/* Takes the sockets systemd passed; those its fd store kept for us (named
 * as kept.h says) go to set->stored. Returns the number of sockets put
 * in set->items (0 when LISTEN_FDS is not for us), or a negative errno with a reason naming the
 * fd when one of them is not a socket echod can serve. */
int listen_from_systemd(struct listen_set *set, char *reason, size_t reason_size);

/* Creates, binds and (for streams) listens on a; proxy: a proxy listener
 * (ProxyListen=). Returns 0 or -errno with
 * a reason naming the address and the failing step. */
int listen_bind(struct listen_set *set, const char *text, const struct listen_address *a,
		bool proxy, char *reason, size_t reason_size);

/* Classifies an inherited fd. Returns the kind, or a negative errno for
 * something echod cannot serve (not a socket, SEQPACKET, ...). */
int listen_classify(int fd);

/* Closes every socket; with unlink_paths, removes the UNIX socket files we
 * created (only the process that bound them should). */
void listen_set_free(struct listen_set *set, bool unlink_paths);

bool listen_socket_is_tcp(int fd);

size_t listen_set_count(const struct listen_set *set, enum socket_kind kind);
/* Proxy listeners among them. */
size_t listen_set_count_proxy(const struct listen_set *set);

/* TCP_DEFER_ACCEPT of sec seconds (0: off) on every TCP listening socket of
 * set: a connection wakes the acceptor only once the client has sent data.
 * Returns 0 or the first -errno. */
int listen_set_defer_accept(const struct listen_set *set, unsigned sec);

/* One TCP listener's accept queue, from the kernel's TCP_INFO, whose
 * tcpi_unacked and tcpi_sacked on a listening socket are the connections
 * waiting to be accept()ed (ss's Recv-Q) and the queue's room (its
 * backlog; ret_room may be NULL). 0, or a negative errno where there is
 * no such count: not TCP (a UNIX socket), or not listening (-EINVAL). */
int listen_queue(int fd, unsigned *ret_queued, unsigned *ret_room);
/* The same summed over the set's TCP listeners; other sockets do not say
 * and count 0. */
void listen_queue_depth(const struct listen_set *set, unsigned *ret_queued, unsigned *ret_room);
