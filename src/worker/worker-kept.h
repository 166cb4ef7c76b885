/* A worker's connections outlive it (they are kept): on a restart they go
 * to systemd's fd store for the next echod, on a reload back to the
 * supervisor (they are returned) for the new workers, each with the bytes
 * it still owes. Works on the worker's connections alone; the loop decides
 * when, and drains what is left. */
#pragma once

#include "worker-conns.h"

/* Restart: every connection into the fd store, in batches, then waits for
 * systemd to have them. Logs what it did. What could not be stored stays. */
void worker_kept_store(struct conns *cs);

/* Reload: sends the connections back over channel, oldest first, counting
 * them in *returned. -EAGAIN: the channel is full, call again later; 0:
 * done (what could not be sent stays, said in the log). */
int worker_kept_return(struct conns *cs, int channel, unsigned *returned);
