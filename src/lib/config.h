/* The configuration: defaults, the file (/etc/echod/echod.conf, INI section
 * [echod]) and command-line overrides, all through one setter per key. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>

#include "access.h"

#define CONFIG_DEFAULT_PATH "/etc/echod/echod.conf"
#define CONFIG_MAX_LISTEN 64

enum model {
	MODEL_PREFORK,
	MODEL_PASSFD,
	MODEL_FORK,
};

struct config {
	enum model model;
	unsigned workers; /* 0 = auto: one per online CPU */
	unsigned worker_connections; /* 0 = auto: see config_worker_connections() */
	unsigned max_connections; /* 0 = unset: see config_max_connections() */
	unsigned idle_timeout_sec; /* 0 = never */
	unsigned shutdown_timeout_sec;
	unsigned datagram_rate_limit; /* per source and second, 0 = off */
	unsigned max_connections_per_source; /* live, per source; 0 = no limit */
	unsigned connection_rate_limit;	     /* new connections per second; 0 = off */
	unsigned defer_accept_sec;	     /* TCP_DEFER_ACCEPT on our own sockets; 0 = off */
	int log_level;
	size_t n_listen;
	char *listen[CONFIG_MAX_LISTEN];
	struct access_list access; /* AllowFrom=, DenyFrom= */
	/* ProxyListen=: listeners whose connections begin with a PROXY
	 * header (proxy.h); ProxyFrom=: the balancers trusted to send one
	 * (its allow list alone is used). */
	size_t n_proxy_listen;
	char *proxy_listen[CONFIG_MAX_LISTEN];
	struct access_list proxy_from;
	unsigned proxy_header_timeout_sec; /* a whole header within this, or closed */
	char *metrics_listen; /* MetricsListen=: where GET /metrics is served; NULL: nowhere */
	char *user;  /* User=: who to run as once the sockets are bound (name or uid); NULL: stay */
	char *group; /* Group=: NULL: the user's primary group */
	int socket_mode; /* SocketMode=: of the unix: sockets echod binds; -1: the umask's */
};

/* An error found while reading a configuration: where, and what. */
struct config_error {
	char message[512];
};

/* Writes the message into err (if not NULL) and returns -EINVAL: the one
 * formatter for configuration and command-line errors. */
int config_fail(struct config_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

const char *model_to_string(enum model m);

/* Looks a User= (group false) or Group= name up: 0, -ENOENT when there
 * is none, or another -errno when the lookup itself failed. */
typedef int config_name_check_fn(const char *name, bool group);
/* Sets how User= and Group= names are checked as they are parsed: echod
 * sets privdrop_name_exists(). Unset, a name is kept unchecked, as in
 * echod-forker: it never drops privileges (the supervisor has), and it is
 * linked statically, where the lookups (NSS) would want shared libraries
 * (and could load libnss_systemd into the process kept lean). */
void config_check_names_with(config_name_check_fn *check);

void config_init(struct config *c);
void config_done(struct config *c);
/* Deep copy; dst must be initialised (it is emptied first). */
int config_copy(struct config *dst, const struct config *src);

/* Sets one key from its text value. `origin` names where the value came
 * from ("FILE:LINE" or "--option") and is used only for the error text.
 * Returns 0, -ENOENT for an unknown key, -EINVAL for a bad value, with a
 * full one-line message in *err. */
int config_set(struct config *c, const char *key, const char *value, const char *origin,
	       struct config_error *err);

/* Reads a file into c (keys it sets override what c holds). A missing file
 * is -ENOENT with a message; the caller decides whether that matters. */
int config_load_file(struct config *c, const char *path, struct config_error *err);
/* The same from an open stream (read to its end, not closed); name stands
 * for the file in error messages. What the fuzzer feeds (fmemopen). */
int config_load_stream(struct config *c, FILE *f, const char *name, struct config_error *err);

/* What no single key can say: ProxyListen= needs ProxyFrom=. origin
 * names the configuration for the message (the file). 0 or -EINVAL. */
int config_validate(const struct config *c, const char *origin, struct config_error *err);

/* What the keys mean once "auto" and "unset" are resolved. */
unsigned config_workers(const struct config *c);
/* WorkerConnections=auto: the open-files limit a worker gets (echod
 * raises its soft limit to the hard one, the unit's LimitNOFILE=), less
 * WORKER_FD_RESERVE for what else a worker holds (listeners, its channel,
 * epoll, the journal), or half of a limit under twice that, at most
 * WORKER_CONNECTIONS_MAX. A worker trims its
 * share further to the fds it really has free (worker-intake.c). */
#define WORKER_FD_RESERVE 64u
#define WORKER_CONNECTIONS_MAX 1048576u
unsigned config_worker_connections(const struct config *c);
/* The same for a given hard limit (UINT64_MAX: unlimited). */
unsigned config_worker_connections_for(const struct config *c, uint64_t fd_limit);
/* The size of the unit's fd store, from $FDSTORE (systemd 254 and later
 * set it; echod.service sets it for systemd 252, equal to its
 * FileDescriptorStoreMax=); 0 when unknown. */
unsigned config_fd_store_max(void);
/* The cap on connections across all workers (fork: on live children).
 * MaxConnections= unset: Workers x WorkerConnections, and at most half
 * the fd store when its size is known, so that a restart can keep every
 * connection and the bytes it is owed. */
unsigned config_max_connections(const struct config *c);

#define CONFIG_NOTE_MAX 256
typedef void (*config_note_fn)(void *userdata, const char *note);
/* Calls note() once for each way the configuration does not do what its
 * keys say: a MaxConnections= above what the workers can hold (capped),
 * keys the model does not use. What --check-config prints and the
 * supervisor logs at start. */
void config_notes(const struct config *c, config_note_fn note, void *userdata);
/* The keys set in c that sockets from systemd make void, as a list for a
 * message ("Listen= (2 addresses), DeferAcceptSec=5"); returns how many. */
size_t config_activation_ignored(const struct config *c, char *buf, size_t size);
/* Writes the effective configuration in the file's syntax, with comments
 * where a key is capped or resolved (auto), and the keys the model does
 * not use commented out: it reads back as the same configuration, those
 * aside. What --dump-config prints. 0 or -EIO. */
int config_dump(FILE *f, const struct config *c);
