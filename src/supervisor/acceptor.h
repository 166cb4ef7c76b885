/* The supervisor's own accepting, for the models that have it (model.h:
 * has_room): when it accepts (room, MaxConnections=, ConnectionRateLimit=,
 * MaxConnectionsPerSource=) and giving each connection to the model.
 * Accepting stops while nobody could take a connection: newcomers wait in
 * the kernel's backlog (back-pressure), never accepted and dropped. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "listen.h"
#include "model.h"

struct acceptor {
	int epoll_fd;	/* the supervisor's */
	uint64_t event; /* tag of a listener's registration: (event | index) */
	const struct listen_set *sockets;
	struct scoreboard *sb;
	unsigned slot;	    /* the supervisor's: what it refuses or loses */
	bool accepting;	    /* listeners are in the epoll set */
	uint64_t resume_ms; /* after an fd shortage or the rate limit, 0 if none */
};

void acceptor_init(struct acceptor *a, int epoll_fd, uint64_t event,
		   const struct listen_set *sockets, struct scoreboard *sb, unsigned slot);
/* Whether to accept now, and makes it so; also the model's retries. */
void acceptor_update(struct acceptor *a, const struct model_ops *model, struct model_ctx *m,
		     bool stopping, uint64_t now);
void acceptor_accept(struct acceptor *a, const struct model_ops *model, struct model_ctx *m,
		     const struct listener *l);
/* The model accepts here but the listeners are out: look again soon. */
bool acceptor_waiting(const struct acceptor *a, const struct model_ops *model);
void acceptor_stop(struct acceptor *a);
