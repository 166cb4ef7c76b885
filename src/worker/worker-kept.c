/* See worker-kept.h. */
#include "worker-kept.h"

#include <errno.h>

#include "fdpass.h"
#include "kept.h"
#include "log.h"
#include "util.h"

#define KEPT_SYNC_USEC (5 * 1000 * 1000)

/* --- restart: storing connections in systemd's fd store --- */

/* What travels with c besides its socket: the bytes it owes, and the
 * client a PROXY header named. Returns 1 with a sealed memfd (kept.h),
 * 0 when there is nothing to say, or -errno. */
static int
pack_state(const struct connection *c, uint64_t *ret_id, int *ret_fd)
{
	const struct echo_conn *e = &c->echo;
	const struct sockaddr *client;
	socklen_t client_len = 0;
	int r;

	client = conns_client(c, &client_len);
	if (!e->owed && !client)
		return 0;
	r = kept_state_pack(e->fd, client, client_len, e->owed ? e->owed + e->owed_off : NULL,
			    e->owed ? e->owed_len - e->owed_off : 0, ret_id, ret_fd);
	return r < 0 ? r : 1;
}

/* Stores what c still owes, if anything. 0 when nothing is owed or it is
 * stored, else -errno: the connection must not be kept without it. */
static int
store_owed(struct connection *c)
{
	char name[KEPT_NAME_MAX];
	_cleanup_close_ int memfd = -1;
	uint64_t id;
	int r;

	r = pack_state(c, &id, &memfd);
	if (r <= 0)
		return r;
	kept_owed_name(id, name, sizeof(name));
	r = kept_store(name, &memfd, 1);
	return r > 0 ? 0 : r == 0 ? -ENOTCONN : r;
}

/* Moves up to KEPT_BATCH_MAX connections from the head of the list
 * into the store. Returns how many, or -errno (those stay with us). */
static int
store_batch(struct conns *cs, unsigned *ret_owed)
{
	/* Initialised only for GCC 12, which no longer sees (across files) that
	 * the caller's non-empty list fills at least fds[0]. */
	int fds[KEPT_BATCH_MAX] = {0};
	size_t n = 0;
	int r;

	for (struct connection *c = cs->head; c && n < ELEMENTSOF(fds); c = c->next) {
		r = store_owed(c);
		if (r < 0)
			return r;
		*ret_owed += c->echo.owed != NULL;
		fds[n++] = c->echo.fd;
	}
	r = kept_store(KEPT_CONN_NAME, fds, n);
	if (r <= 0)
		return r == 0 ? -ENOTCONN : r;
	/* systemd holds its own copies now; ours go. */
	for (size_t i = 0; i < n; i++)
		conns_give_away(cs, cs->head);
	return (int)n;
}

void
worker_kept_store(struct conns *cs)
{
	unsigned stored = 0, owed = 0;
	int r = 0;

	while (cs->head) {
		r = store_batch(cs, &owed);
		if (r < 0)
			break;
		stored += (unsigned)r;
	}
	if (stored || r < 0)
		log_info("restart: stored %u connection(s) in systemd's fd store, %u of them "
			 "owing bytes%s",
			 stored, owed, r < 0 ? "; the rest drain" : "");
	if (r < 0)
		log_warning_errno(r, "storing connections in systemd's fd store: %m");
	if (stored) {
		r = kept_store_sync(KEPT_SYNC_USEC);
		if (r < 0)
			log_warning_errno(r, "waiting for systemd to store the connections: %m");
	}
}

/* --- reload: connections back to the supervisor, for the new workers --- */

/* Sends c's owed bytes (if any), then c, over the channel. -EAGAIN: the
 * channel is full, try again later (the owed bytes may go twice; the
 * supervisor keeps the newer copy). */
static int
return_one(int channel, const struct connection *c)
{
	_cleanup_close_ int memfd = -1;
	uint64_t id;
	int r;

	r = pack_state(c, &id, &memfd);
	if (r < 0)
		return r;
	return kept_send(channel, c->echo.fd, memfd);
}

int
worker_kept_return(struct conns *cs, int channel, unsigned *returned)
{
	int r = 0;

	while (cs->head) {
		r = return_one(channel, cs->head);
		if (r < 0)
			break;
		/* The supervisor's now: the message holds it. */
		conns_give_away(cs, cs->head);
		(*returned)++;
	}
	if (r == -EAGAIN)
		return r;
	if (r < 0)
		log_warning_errno(r,
				  "reload: returning %u connection(s) to the supervisor: %m; "
				  "they drain here",
				  cs->n);
	return 0;
}
