/* The connection ledger: the one writer of what the scoreboard counts of
 * connections, the MaxConnections= reservation (one for the whole service)
 * and each slot's active, served, received, lost and refused. Every process
 * counts through it, in its own slot; the supervisor settles what a dead
 * process left behind.
 *
 * Kill safety, argued once. A process can be killed between any two of
 * these steps, and the supervisor then settles its slot: it releases
 * active plus what is still in flight to it (sent over its channel and not
 * received). The steps are ordered so that such a kill can only make the
 * ledger release one reservation too few (a connection not counted at
 * all, until a restart), never one too many (which would let the service
 * exceed MaxConnections= for good):
 *   - admitting before accept(): reserve, then active (a kill between
 *     keeps one reservation);
 *   - taking a connection off the channel: received, then active (a kill
 *     between: neither in flight nor active);
 *   - closing: active, then the reservation (a kill between keeps one);
 *   - refusing: refused, then served back (the connection counted in
 *     both for a moment, and never reserved twice).
 * Counts are relaxed atomics: exact each on its own, a snapshot together.
 *
 * Mechanism: nothing here logs. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "scoreboard.h"

/* Where one process counts its connections. */
struct ledger {
	struct scoreboard *sb;	      /* NULL: a lone process, no service-wide count */
	struct scoreboard_slot *slot; /* its own, or a private stand-in */
	/* Its connections hold a MaxConnections= reservation, released as
	 * each closes (whoever accepted them made it). */
	bool reserved;
};

/* How a connection came to the process that serves it. */
enum ledger_origin {
	LEDGER_ACCEPTED, /* accept()ed here: new */
	LEDGER_SENT,	 /* a new connection, over the channel */
	LEDGER_KEPT,	 /* kept across a restart or reload: served before, elsewhere */
};

/* --- MaxConnections=, for whoever accepts --- */

/* Takes a reservation unless the cap is reached. */
bool ledger_reserve(struct scoreboard *sb);
/* Takes one beyond the cap: a kept connection was admitted before. */
void ledger_reserve_kept(struct scoreboard *sb);
void ledger_release(struct scoreboard *sb);
void ledger_set_max(struct scoreboard *sb, unsigned max_connections);
/* Reserved across the service now, and the cap. */
unsigned ledger_reserved(const struct scoreboard *sb);
bool ledger_full(const struct scoreboard *sb);

/* --- a serving process, in its own slot --- */

/* Before accept(): a reservation (if l->reserved) and a place in active.
 * False: at MaxConnections=, nothing counted. */
bool ledger_admit(struct ledger *l);
/* accept() found nobody after ledger_admit(), or the connection could not
 * be set up: the same as its closing. */
void ledger_unadmit(struct ledger *l);
/* A connection this process now serves: counted served unless kept, and
 * (unless accepted after ledger_admit()) active. */
void ledger_take(struct ledger *l, enum ledger_origin origin);
/* Why a connection was refused: the two are counted apart. */
enum ledger_refusal {
	LEDGER_REFUSED_SOURCE_LIMIT, /* MaxConnectionsPerSource= */
	LEDGER_REFUSED_ACCESS,	     /* AllowFrom=/DenyFrom= */
	LEDGER_REFUSED_PROXY,	     /* on a proxy listener: not from ProxyFrom=, or
				      * no good header in time */
};

/* Refused at once after ledger_take(). */
void ledger_refuse(struct ledger *l, enum ledger_origin origin, enum ledger_refusal why);
/* A connection closed. */
void ledger_close(struct ledger *l);
/* A connection sent to us that never arrived (the kernel could not give
 * us the fd). */
void ledger_lose(struct ledger *l);

/* --- the supervisor --- */

/* Connections sent to slot i that it has not received yet. */
uint64_t ledger_in_flight(const struct scoreboard *sb, unsigned i, uint64_t sent);
/* The process in slot i is gone: its reservations (active and in flight)
 * are released, its slot cleared for the next one. */
void ledger_settle(struct scoreboard *sb, unsigned i, uint64_t sent);
/* A fork connection process was killed with its one connection, which it
 * could not count closed. */
void ledger_settle_one(struct scoreboard *sb, unsigned i);
/* The supervisor refused a connection itself (AllowFrom=/DenyFrom=,
 * MaxConnectionsPerSource=), or lost n it had accepted or kept (nobody
 * could take them), counted in its slot i. */
void ledger_refused_here(struct scoreboard *sb, unsigned i, enum ledger_refusal why);
void ledger_lost_here(struct scoreboard *sb, unsigned i, unsigned n);
