/* The worker's connections outlive it: on a restart they go to systemd's fd
 * store for the next echod, on a reload back to the supervisor for the new
 * workers, each with the bytes it still owes. */
#include "worker-internal.h"

#include <errno.h>

#include "fdpass.h"
#include "handover.h"
#include "log.h"
#include "util.h"

#define HANDOVER_SYNC_USEC (5 * 1000 * 1000)

/* --- restart: handing connections over to systemd's fd store --- */

/* Stores what c still owes, if anything. 0 when nothing is owed or it is
 * stored, else -errno: the connection must not be handed over without it. */
static int
handover_owed(struct connection *c)
{
	const struct echo_conn *e = &c->echo;
	char name[HANDOVER_NAME_MAX];
	_cleanup_close_ int memfd = -1;
	uint64_t id;
	int r;

	if (!e->owed)
		return 0;
	r = handover_owed_pack(e->fd, e->owed + e->owed_off, e->owed_len - e->owed_off, &id,
			       &memfd);
	if (r < 0)
		return r;
	handover_owed_name(id, name, sizeof(name));
	r = handover_store(name, &memfd, 1);
	return r > 0 ? 0 : r == 0 ? -ENOTCONN : r;
}

/* Moves up to HANDOVER_BATCH_MAX connections from the head of the list
 * into the store. Returns how many, or -errno (those stay with us). */
static int
handover_batch(struct worker *w, unsigned *ret_owed)
{
	/* Initialised only for GCC 12, which no longer sees (across files) that
	 * the caller's non-empty list fills at least fds[0]. */
	int fds[HANDOVER_BATCH_MAX] = {0};
	size_t n = 0;
	int r;

	for (struct connection *c = w->lru_head; c && n < ELEMENTSOF(fds); c = c->next) {
		r = handover_owed(c);
		if (r < 0)
			return r;
		*ret_owed += c->echo.owed != NULL;
		fds[n++] = c->echo.fd;
	}
	r = handover_store(HANDOVER_CONN_NAME, fds, n);
	if (r <= 0)
		return r == 0 ? -ENOTCONN : r;
	/* systemd holds its own copies now; ours go. */
	for (size_t i = 0; i < n; i++)
		worker_connection_close(w, w->lru_head);
	return (int)n;
}

/* The supervisor is being restarted: every connection goes to systemd,
 * which passes it to the next echod, instead of being drained. What cannot
 * be handed over is drained as on a stop. */
void
worker_handover_restart(struct worker *w, uint64_t now)
{
	unsigned handed = 0, owed = 0;
	int r = 0;

	/* Connections the supervisor sent before it stopped are ours too. */
	if (w->setup->channel >= 0 && !w->draining)
		worker_intake_receive(w, now);
	while (w->lru_head) {
		r = handover_batch(w, &owed);
		if (r < 0)
			break;
		handed += (unsigned)r;
	}
	if (handed || r < 0)
		log_info("restart: handed %u connection(s) to systemd's fd store, %u of them "
			 "owing bytes%s",
			 handed, owed, r < 0 ? "; the rest drain" : "");
	if (r < 0)
		log_warning_errno(r, "storing connections in systemd's fd store: %m");
	if (handed) {
		r = handover_store_sync(HANDOVER_SYNC_USEC);
		if (r < 0)
			log_warning_errno(r, "waiting for systemd to store the connections: %m");
	}
	worker_start_drain(w, "restarting", now);
}

/* --- reload: connections back to the supervisor, for the new workers --- */

/* A worker's own channel, or the one fork's connection processes share. */
static int
return_channel(const struct worker *w)
{
	return w->setup->channel >= 0 ? w->setup->channel : w->setup->give_back;
}

/* Sends c's owed bytes (if any), then c, over the channel. -EAGAIN: the
 * channel is full, try again later (the owed bytes may go twice; the
 * supervisor keeps the newer copy). */
static int
return_one(struct worker *w, const struct connection *c)
{
	const struct echo_conn *e = &c->echo;
	_cleanup_close_ int memfd = -1;
	uint64_t id;
	int r;

	if (e->owed) {
		r = handover_owed_pack(e->fd, e->owed + e->owed_off, e->owed_len - e->owed_off, &id,
				       &memfd);
		if (r < 0)
			return r;
	}
	return handover_send(return_channel(w), e->fd, memfd);
}

void
worker_handover_return(struct worker *w)
{
	int r = 0;

	while (w->lru_head) {
		r = return_one(w, w->lru_head);
		if (r < 0)
			break;
		/* The supervisor's now: the message holds it. */
		worker_connection_close(w, w->lru_head);
		w->returned++;
	}
	if (r == -EAGAIN)
		return;
	if (r < 0)
		log_warning_errno(r,
				  "reload: giving %u connection(s) back to the supervisor: %m; "
				  "they drain here",
				  w->n_connections);
	/* A fork connection process says it at debug level: there may be
	 * thousands of them, and the supervisor counts them once. */
	if (w->returned)
		log_full_errno(w->setup->connection >= 0 ? LOG_DEBUG : LOG_INFO, 0,
			       "reload: gave %u connection(s) back for the new workers",
			       w->returned);
	w->returning = false;
}

/* A reload: the supervisor takes this worker's connections back and gives
 * them to the new generation, so that they outlive ShutdownTimeoutSec=. */
void
worker_handover_reload(struct worker *w, uint64_t now)
{
	if (return_channel(w) < 0 || w->draining) {
		worker_start_drain(w, "reloading", now);
		return;
	}
	/* Connections the supervisor sent before are ours to return too. */
	if (w->setup->channel >= 0)
		worker_intake_receive(w, now);
	w->returning = true;
	worker_handover_return(w);
	/* Whatever is left (the channel is full for now) is returned later;
	 * meanwhile nothing new is taken. */
	worker_start_drain(w, "reloading", now);
}
