/* What the supervisor's files share, and only they: supervisor.c (the loop,
 * processes, stop, reload, watchdog), supervisor-intake.c (its own
 * accepting, passfd and fork), supervisor-restore.c (connections kept across
 * a restart or a reload) and supervisor-status.c (STATUS= and the admission
 * summary). Not installed; nothing else includes it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "children.h"
#include "config.h"
#include "listen.h"
#include "notify.h"
#include "pool.h"
#include "restart.h"
#include "scoreboard.h"
#include "supervisor.h"

/* What an epoll registration of the supervisor is: the type in the high
 * half of data.u64, an index (listener) or an fd (channel) in the low. */
enum {
	EVENT_SIGNAL = 1,
	EVENT_LISTENER,
	EVENT_CHANNEL,
	EVENT_GIVE_BACK, /* the channel fork's connection processes share */
};
#define EVENT(type, index) (((uint64_t)(type) << 32) | (uint32_t)(index))

struct supervisor {
	struct pool_env env;
	struct scoreboard scoreboard;
	struct listen_set *sockets;
	struct pool *pool; /* the current generation; older ones follow it */
	struct children children;
	config_reader reread;
	void *reread_userdata;
	unsigned generation;
	bool ready;	/* READY=1 sent for the current generation */
	bool reloading; /* a reload waits for its new generation */
	bool stopping;
	uint64_t kill_at_ms;
	bool killed;
	bool accepting;		   /* listeners are in our epoll set */
	uint64_t accept_resume_ms; /* after an fd shortage, 0 if none */
	uint64_t lost;		   /* accepted but could not be handed on */
	uint64_t refused_logged, pauses_logged, admission_logged_ms;
	/* fork: a connection accepted when fork() failed, waiting for a
	 * process (-1: none); failed fork()s, and when that was last said. */
	int unforked_fd;
	uint64_t fork_failures;
	uint64_t fork_failure_logged_ms;
	char status_note[256]; /* shown in STATUS=, e.g. a rejected reload */
	struct notify_status_limiter status_limiter;
	uint64_t watchdog_usec; /* 0: no watchdog */
	uint64_t watchdog_last_ms;
	uint64_t *heartbeats;	/* per slot, as last seen */
	uint64_t *heartbeat_ms; /* per slot, when it last moved */
	/* Connections taken back from systemd's fd store at start, until the
	 * workers have them. */
	struct restart_queue restore;
	/* RESTART_SIGNAL came: the coming SIGTERM is a restart's. */
	uint64_t restart_announced_ms; /* 0: no announcement */
	unsigned restart_store_max;
};

static inline const struct config *
current_config(const struct supervisor *s)
{
	return &s->pool->config;
}

static inline bool
supervisor_accepts(const struct supervisor *s)
{
	return current_config(s)->model != MODEL_PREFORK;
}

/* supervisor-intake.c */

/* Puts the listeners in the epoll set (on) or takes them out. */
void supervisor_intake_poll(struct supervisor *s, bool on);
void supervisor_intake_update(struct supervisor *s, uint64_t now);
void supervisor_intake_accept(struct supervisor *s, const struct listener *l);

/* supervisor-restore.c */

void supervisor_restore_hand_on(struct supervisor *s);
bool supervisor_restore_pending(const struct supervisor *s);
void supervisor_restore_receive(struct supervisor *s, int channel, unsigned max);

/* supervisor-status.c */

void supervisor_status_update(struct supervisor *s, bool force);
void supervisor_status_log_admission(struct supervisor *s, uint64_t now);
