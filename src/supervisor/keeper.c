/* See keeper.h. */
#include "keeper.h"

#include <errno.h>

#include "fdpass.h"
#include "ledger.h"
#include "log.h"
#include "util.h"

int
keeper_init(struct keeper *k, struct listen_set *sockets)
{
	*k = (struct keeper){0};
	return restart_take(sockets, &k->queue);
}

void
keeper_set_ledger(struct keeper *k, struct scoreboard *sb, unsigned slot)
{
	k->sb = sb;
	k->slot = slot;
}

void
keeper_free(struct keeper *k)
{
	restart_queue_free(&k->queue);
}

bool
keeper_pending(const struct keeper *k)
{
	return k->queue.next < k->queue.n;
}

void
keeper_deliver(struct keeper *k, const struct model_ops *model, struct model_ctx *m,
	       bool after_reload)
{
	struct restart_queue *q = &k->queue;
	size_t first = q->next;
	unsigned lost = 0;

	while (q->next < q->n) {
		struct kept_conn *item = &q->items[q->next];
		int r = model->deliver_kept(m, item->fd, item->owed_fd);

		if (r == -EAGAIN)
			break;
		item->fd = -1;
		if (item->owed_fd >= 0)
			close(TAKE_FD(item->owed_fd));
		if (r < 0) {
			lost++;
			log_warning_errno(
			    r, "restart: a connection taken back could not be delivered: "
			       "%m; it is closed");
		}
		q->next++;
	}
	ledger_lost_here(k->sb, k->slot, lost);
	if (q->next > first && q->next == q->n) {
		log_info("%zu connection(s) kept across the %s are served again%s", q->n - lost,
			 after_reload ? "reload" : "restart", lost ? " (some were lost)" : "");
		/* Emptied: a later reload fills it from the start. */
		q->n = q->next = 0;
		q->owed = 0;
	}
}

void
keeper_receive(struct keeper *k, int channel, unsigned max)
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
		if (tag == FDPASS_CONFIG) {
			/* Only ever sent the other way. */
			close(fd);
			continue;
		}
		if (tag == FDPASS_OWED)
			r = restart_queue_push_owed(&k->queue, fd);
		else
			r = restart_queue_push(&k->queue, fd);
		if (r < 0)
			log_warning_errno(r, "reload: keeping a connection sent back: %m");
		else if (tag != FDPASS_OWED && k->sb)
			scoreboard_count_kept_back(k->sb, 1);
	}
}

void
keeper_store(struct keeper *k)
{
	int r;

	if (!keeper_pending(k))
		return;
	r = restart_queue_store(&k->queue);
	if (r < 0)
		log_warning_errno(r, "restart: storing connections not yet taken back: %m");
	else
		log_info("restart: stored %d connection(s) not yet taken back in systemd's "
			 "fd store",
			 r);
}
