/* Connections kept across a restart (taken back from systemd's fd store at
 * start) or a reload (sent back by the retiring workers): queued, then
 * handed to the current generation as it can take them. */
#include "supervisor-internal.h"

#include <errno.h>

#include "fdpass.h"
#include "handover.h"
#include "ledger.h"
#include "log.h"
#include "util.h"

/* --- connections kept across a restart --- */

/* Hands on the connections taken back from the fd store, as workers can
 * take them; what they cannot take now waits for the next turn. */
void
supervisor_restore_hand_on(struct supervisor *s)
{
	struct restart_queue *q = &s->restore;
	const struct config *c = current_config(s);
	size_t first = q->next;
	unsigned lost = 0;

	while (q->next < q->n) {
		struct restored *item = &q->items[q->next];
		int r;

		if (c->model == MODEL_FORK) {
			/* Beyond MaxConnections= too: admitted before;
			 * and after a reload from fork the processes that sent
			 * these back may not be reaped yet. */
			r = children_reserve(&s->children,
					     s->children.n + (unsigned)(q->n - q->next));
			if (r == 0)
				r = children_fork_restored(&s->children, &s->env, c, item->fd,
							   item->owed_fd);
			/* No process to be had now: the next turn retries. */
			if (r == -EAGAIN || r == -ENOMEM)
				break;
			if (r == 0)
				item->fd = -1;
			else
				close(TAKE_FD(item->fd));
		} else {
			/* Beyond MaxConnections= too: admitted before. */
			ledger_reserve_kept(&s->scoreboard);
			r = pool_hand_off_restored(&s->env, s->pool, item->fd, item->owed_fd);
			if (r == -EAGAIN) {
				ledger_release(&s->scoreboard);
				break;
			}
			if (r < 0)
				ledger_release(&s->scoreboard);
			close(TAKE_FD(item->fd));
		}
		if (item->owed_fd >= 0)
			close(TAKE_FD(item->owed_fd));
		if (r < 0) {
			lost++;
			log_warning_errno(
			    r, "restart: a connection taken back could not be handed on: "
			       "%m; it is closed");
		}
		q->next++;
	}
	s->lost += lost;
	if (q->next > first && q->next == q->n) {
		log_info("%zu connection(s) kept across the %s are served again%s", q->n - lost,
			 s->generation ? "reload" : "restart", lost ? " (some were lost)" : "");
		/* Emptied: a later reload fills it from the start. */
		q->n = q->next = 0;
		q->owed = 0;
	}
}

bool
supervisor_restore_pending(const struct supervisor *s)
{
	return s->restore.next < s->restore.n;
}

/* Connections a retiring worker sends back on a reload: into the queue,
 * for the new generation. */
void
supervisor_restore_receive(struct supervisor *s, int channel, unsigned max)
{
	for (unsigned i = 0; channel >= 0 && i < max; i++) {
		enum fdpass_tag tag;
		int fd, r;

		r = fdpass_recv(channel, &tag, &fd);
		if (r == -EAGAIN || r == -ECONNRESET)
			return;
		if (r == -EPROTO || r == -EMFILE) {
			log_warning_errno(r, "reload: a connection sent back was lost: %m");
			continue;
		}
		if (r < 0) {
			log_warning_errno(r, "reload: reading a worker's channel: %m");
			return;
		}
		if (tag == FDPASS_OWED)
			r = restart_queue_push_owed(&s->restore, fd);
		else
			r = restart_queue_push(&s->restore, fd);
		if (r < 0)
			log_warning_errno(r, "reload: keeping a connection sent back: %m");
	}
}
