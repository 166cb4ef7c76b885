/* The supervisor's side of restarting without dropping a connection (see
 * handover.h for what goes into systemd's fd store, and the README).
 *
 * On SIGTERM, restart_wanted() decides between handing every connection
 * over (a restart) and draining them (a stop). On start, restart_take()
 * collects what the previous echod stored, pairing each connection with its
 * owed bytes, and empties the store; the supervisor then hands the
 * connections to its workers. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "listen.h"

struct restored {
	int fd;	     /* the connection */
	int owed_fd; /* its owed bytes (a sealed memfd), or -1 */
};

struct restart_queue {
	struct restored *items;
	size_t n;
	size_t next; /* items before it are handed on (fds -1) */
	unsigned owed;
};

/* Takes the stored fds out of set (their slots become -1), pairs them into
 * q, closes what cannot be served (an orphaned memfd, a connection already
 * gone), removes every entry from systemd's fd store and logs how many
 * connections came back. Returns the number of connections, or -ENOMEM. */
int restart_take(struct listen_set *set, struct restart_queue *q);

/* A restart before the workers took them all: what is left goes back into
 * the store. Returns how many connections, or -errno. */
int restart_queue_store(struct restart_queue *q);

/* Closes every connection not handed on yet. */
void restart_queue_free(struct restart_queue *q);

/* Asks systemd (over the bus) whether this SIGTERM is a restart, and
 * whether the unit can keep `active` connections meanwhile
 * (NotifyAccess=all, FileDescriptorStoreMax= at least 2 x active). Logs
 * the decision. False whenever in doubt: draining is what a stop does. */
bool restart_wanted(bool from_systemd, unsigned active);
