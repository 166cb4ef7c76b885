/* Admission control: which new connections echod takes, and when.
 *
 * MaxConnectionsPerSource=: live connections per source, keyed as
 * ratelimit_source_key() keys them (an IPv4 address, an IPv6 /64; an
 * IPv4-mapped address is its IPv4 address). The counts live in a table in
 * shared memory, mapped before the first fork, so that the limit holds for
 * the whole service whichever process serves the connection. Each count is
 * held by an owner, the pid of the process serving the connection, so that
 * the supervisor can release what a process that died held
 * (admission_forget_owner()). Sources without a key (UNIX sockets) are never
 * limited.
 *
 * The table has a fixed capacity, one entry per (source, owner) pair with a
 * live connection; when it is full, a new pair is let in uncounted rather than
 * refused (admission_take() returns 1 with ticket->counted false): sized for
 * MaxConnections=, it only fills when a reload raised that.
 *
 * A process-shared robust mutex guards the table. A process killed while
 * holding it leaves the index perhaps half-updated: the next one to lock
 * rebuilds the index from the entries, which are written so that each is
 * either wholly in use or not. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

struct admission_table;

/* What admission_take() counted, to be given back with admission_put(). */
struct admission_ticket {
	uint8_t key[16];
	bool counted;
};

/* Maps a table for capacity (source, owner) pairs, shared with every child
 * forked afterwards, and with whoever maps *ret_fd (the memfd behind it,
 * the caller's to close; NULL: closed here). Returns 0, -EINVAL or -errno. */
int admission_table_new(unsigned capacity, struct admission_table **ret, int *ret_fd);
void admission_table_free(struct admission_table *t);
/* Maps the table behind fd, made by admission_table_new() in another
 * process (the connection forker's, across exec); fd stays the caller's.
 * Undone by admission_table_detach(), which leaves the lock alone. */
int admission_table_attach(int fd, struct admission_table **ret);
void admission_table_detach(struct admission_table *t);

/* Counts a connection from peer, served by owner, when peer's source holds
 * fewer than limit connections (limit 0: no limit, nothing counted).
 * Returns 1 when admitted (*ret tells whether it was counted), 0 when the
 * source is at its limit (nothing counted). */
int admission_take(struct admission_table *t, const struct sockaddr *peer, pid_t owner,
		   unsigned limit, struct admission_ticket *ret);
/* Gives back what admission_take() counted for owner; nothing if nothing was. */
void admission_put(struct admission_table *t, pid_t owner, const struct admission_ticket *ticket);
/* Gives back everything owner held: for a process that ended without doing
 * so itself (killed). */
void admission_forget_owner(struct admission_table *t, pid_t owner);

/* Connections counted for peer's source, all owners together. */
unsigned admission_count(struct admission_table *t, const struct sockaddr *peer);
/* Whether peer's source holds limit connections already (limit 0: never):
 * a look before spending work on a connection that admission_take() would
 * refuse. Counts nothing. */
bool admission_full(struct admission_table *t, const struct sockaddr *peer, unsigned limit);

/* --- ConnectionRateLimit= --- */

struct scoreboard;

/* Before each accept(), in whichever process accepts: takes a token from the
 * one bucket of the whole service (in the scoreboard, burst = rate). True: go
 * ahead, and give the token back with admission_rate_undo() if accept() found
 * nobody. False: the bucket is empty; stop accepting (leave the listeners out
 * of the event loop, clients wait in the backlog) until *ret_resume_ms, when
 * the next token is due. rate 0: always true. Times in ms of CLOCK_MONOTONIC. */
bool admission_rate_take(struct scoreboard *sb, unsigned rate, uint64_t now_ms,
			 uint64_t *ret_resume_ms);
void admission_rate_undo(struct scoreboard *sb, unsigned rate);
