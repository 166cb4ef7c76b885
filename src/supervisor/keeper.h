/* The supervisor's kept connections: those taken back from systemd's fd
 * store at start (a restart) and those the retiring workers return (a
 * reload), queued until the current generation can take them, then
 * delivered through the model. */
#pragma once

#include <stdbool.h>

#include "listen.h"
#include "model.h"
#include "restart.h"

struct keeper {
	struct restart_queue queue;
	struct scoreboard *sb;
	unsigned slot; /* the supervisor's: what it loses */
};

/* At start: takes what the previous echod stored out of sockets. */
int keeper_init(struct keeper *k, struct listen_set *sockets);
void keeper_set_ledger(struct keeper *k, struct scoreboard *sb, unsigned slot);
void keeper_free(struct keeper *k);

bool keeper_pending(const struct keeper *k);
/* Delivers what the model can take now; the rest waits for the next turn.
 * after_reload only changes what the log says. */
void keeper_deliver(struct keeper *k, const struct model_ops *model, struct model_ctx *m,
		    bool after_reload);
/* Reads up to max returned connections (and their owed bytes) from a
 * worker's channel, or the one fork's connection processes share. */
void keeper_receive(struct keeper *k, int channel, unsigned max);
/* A restart before the workers took them all: the rest go back into the
 * fd store. */
void keeper_store(struct keeper *k);
