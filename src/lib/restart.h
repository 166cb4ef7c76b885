/* The supervisor's side of restarting without dropping a connection (see
 * kept.h for what goes into systemd's fd store, and the README).
 *
 * On SIGTERM, restart_wanted() decides between keeping every connection
 * in the store (a restart) and draining them (a stop). On start,
 * restart_take() collects what the previous echod stored, pairing each
 * connection with its owed bytes, and empties the store; the supervisor
 * then delivers the connections to its workers.
 *
 * The configuration the supervisor ran goes into the store too: when the
 * file was broken meanwhile, the next echod goes on with it rather than
 * fail its start (systemd 252 empties the store when a start fails, and
 * every kept connection with it). */
#pragma once

#include <stdbool.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "listen.h"

struct kept_conn {
	int fd;	     /* the connection */
	int owed_fd; /* its owed bytes (a sealed memfd), or -1 */
};

struct pending_owed {
	int fd;
	uint64_t id;
};

struct restart_queue {
	struct kept_conn *items;
	size_t n, size;
	size_t next; /* items before it are delivered (fds -1) */
	unsigned owed;
	/* Owed bytes whose connection has not arrived yet (reload). */
	struct pending_owed *pending;
	size_t n_pending;
};

/* Takes the stored fds out of set (their slots become -1), pairs them into
 * q, closes what cannot be served (an orphaned memfd, a connection already
 * gone), removes every entry from systemd's fd store and logs how many
 * connections came back. Returns the number of connections, or -ENOMEM. */
int restart_take(struct listen_set *set, struct restart_queue *q);

/* A reload: the retiring workers send their connections back over their
 * channels, each one's owed bytes (a sealed memfd) first. Both take the
 * fd; push() pairs the connection with owed bytes pushed before it (by the
 * socket's id). Return 0 or -ENOMEM (the fd is then closed). */
int restart_queue_push_owed(struct restart_queue *q, int memfd);
int restart_queue_push(struct restart_queue *q, int fd);

/* A restart before the workers took them all: what is left goes back into
 * the store. Returns how many connections, or -errno. */
int restart_queue_store(struct restart_queue *q);

/* Closes every connection not delivered yet. */
void restart_queue_free(struct restart_queue *q);

/* On a restart: puts c, as --dump-config writes it, into the store, if
 * it holds store_max fds and room is left once the `active` connections
 * and their owed bytes are in (-ENOSPC otherwise). Logs a failure.
 * Returns > 0 when stored, 0 without $NOTIFY_SOCKET, or -errno. */
int restart_config_keep(const struct config *c, unsigned store_max, unsigned active);

/* What error messages call the kept configuration. */
#define RESTART_CONFIG_ORIGIN "the configuration kept by the previous echod"

/* At start, before the sockets are taken: whether systemd passed a kept
 * configuration, and if so, reads it into c (over what c holds).
 * Returns 1 when read, 0 when none was passed, or a negative errno with
 * the reason in err. Leaves $LISTEN_FDS for listen_from_systemd(). */
int restart_config_load(struct config *c, struct config_error *err);

/* Run by ExecStop= (as root, since a DynamicUser= cannot use the system
 * bus): asks systemd whether the job stopping the unit is a restart, and if
 * the unit can keep connections meanwhile (NotifyAccess=all, a fd store),
 * sends the supervisor pid RESTART_SIGNAL carrying FileDescriptorStoreMax=
 * as its value. systemd sends SIGTERM only after ExecStop= has finished.
 * Logs what it found; failing, the supervisor just drains as on a stop. */
void restart_announce(pid_t pid);

/* The signal restart_announce() sends. */
#define RESTART_SIGNAL SIGUSR1

/* On SIGTERM: whether to hand `active` connections over, given what the
 * last RESTART_SIGNAL said (announced, and the store's size). Logs the
 * decision. False whenever in doubt: draining is what a stop does. */
bool restart_wanted(bool from_systemd, bool announced, unsigned store_max, unsigned active);
