/* Model=fork's connection forker, from the supervisor's side: starting it
 * (an exec of echod-forker, see forker/forker.c for why), sending it the
 * connections to fork for with the configuration they are served with,
 * and reading back which of its connection processes exited. children.c
 * decides what goes here and what the supervisor forks itself. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "fdpass.h"
#include "pool.h"

struct forker_link {
	/* echod-forker, opened (O_PATH) when the supervisor starts: what it
	 * runs later, on a reload into fork after apt replaced the file,
	 * is still the forker of this echod's build. -1: none found. */
	int exe_fd;
	char *path; /* where it was found, for messages */
	pid_t pid;	 /* 0: none running */
	int channel;	 /* our end, or -1 */
	unsigned alive;	 /* connections sent and not yet reported exited */
	bool config_sent;
	unsigned config_generation; /* of the configuration it has */
	/* It could not be started, or it died: the supervisor forks for
	 * itself from then on (the forker is an optimisation, never a
	 * reason to stop serving). */
	bool unavailable;
	bool killed; /* we sent its group SIGKILL: its end is no surprise */
	/* Its connection processes alive when it died, reparented to the
	 * supervisor (PR_SET_CHILD_SUBREAPER) and not yet reaped. */
	unsigned orphans;
};

/* Finds echod-forker, beside this echod's binary (a build tree, or a
 * relocated install), else at ECHOD_FORKER_PATH, and opens it. */
void forker_link_init(struct forker_link *f);

/* Starts the forker, whose connection processes count into scoreboard
 * slot `slot`, and waits for its hello; its reports come on the channel,
 * registered in env->epoll_fd with `event`. Logs what failed and marks
 * it unavailable then. 0 or -errno. */
int forker_link_start(struct forker_link *f, const struct pool_env *env, int slot,
		      uint64_t event);

/* Sends connection fd (tag FDPASS_CONN, FDPASS_PROXY or FDPASS_KEPT, with
 * owed_fd for a kept one, or -1), preceded by `config` when the forker
 * does not have this generation's yet, all as one message. Takes fd on
 * success (closed here), never owed_fd. -EAGAIN: the forker is not
 * keeping up, try later; -EPIPE: it is gone. */
int forker_link_send(struct forker_link *f, const struct config *config, unsigned generation,
		     enum fdpass_tag tag, int fd, int owed_fd);

typedef void (*forker_exit_fn)(void *userdata, pid_t pid, int status);
/* Reads every report waiting, calling exited() once per connection
 * process that exited. */
void forker_link_receive(struct forker_link *f, forker_exit_fn exited, void *userdata);

/* Whether pid is the forker's. */
bool forker_link_is(const struct forker_link *f, pid_t pid);
/* The forker itself exited: forgets it and the connections it had, which
 * drain on their own (they got SIGTERM when it died) and are counted as
 * orphans for the supervisor to reap. */
void forker_link_lost(struct forker_link *f, int status);

/* To every connection process of the forker (they share its process
 * group; the forker itself reads and ignores what it must not act on). */
void forker_link_signal(struct forker_link *f, int sig);

/* Closes our end (the forker exits once its connection processes have)
 * and what forker_link_init() opened. */
void forker_link_free(struct forker_link *f);
