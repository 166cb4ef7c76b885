/* A new connection the supervisor accepted and can hand to no process yet:
 * fork() failed for want of processes or memory, or every passfd worker's
 * channel is full. It waits here, keeping what it reserved, and the model
 * says it has no room meanwhile, so that the clients behind it wait in the
 * kernel's accept queue rather than being accepted and closed. One at
 * most: the supervisor accepts nothing more until it is handed on. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct held {
	int fd; /* -1: none */
	bool proxy; /* it came to a proxy listener */
	uint64_t retry_at_ms;
	/* Times a connection had to wait so far, and when that was last
	 * said. */
	uint64_t waits;
	uint64_t wait_logged_ms;
};

#define HELD_NONE ((struct held){.fd = -1})

/* Takes fd, to be retried after retry_ms. True when the wait is to be
 * said now (at most every few seconds while waits go on). */
bool held_put(struct held *h, int fd, bool proxy, uint64_t now, unsigned retry_ms);
/* Counts a wait of connections kept elsewhere (passfd's queues, which no
 * channel had room for), with the same answer as held_put(). */
bool held_count_wait(struct held *h, uint64_t now);
/* The waiting connection once its retry is due (the caller takes it), or
 * -1; *ret_proxy: whether it came to a proxy listener. */
int held_take(struct held *h, uint64_t now, bool *ret_proxy);
bool held_waiting(const struct held *h);
/* A stop, or a reload to a model that cannot serve it: closes the waiting
 * connection, whether due or not. True if there was one. */
bool held_drop(struct held *h);
