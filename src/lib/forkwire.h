/* What the connection forker (forker/forker.c) says back to the supervisor
 * over the channel between them. The supervisor's side of that channel is
 * fdpass.h's: connections, kept connections and their owed bytes, and
 * FDPASS_CONFIG before the first connection of each configuration. The
 * forker's side is this: one hello once it is ready, then the exits of the
 * connection processes it forked, as SOCK_SEQPACKET messages without fds.
 * Each message of the supervisor's brings one connection, so that every
 * one sent is reported once: as its process's exit, or as an exit of pid
 * 0 when it never got one (closed, or lost on the way in).
 *
 * The forker is a binary of its own, installed beside echod: the two must
 * come from the same build (FORKWIRE_ABI on its command line), since they
 * share the scoreboard's layout as well as this one. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#define FORKWIRE_ABI ECHOD_VERSION "/forkwire-1"
#define FORKWIRE_MAGIC 0x65636b66u /* "fkce" */
/* Exits one report carries: the processes one SIGCHLD's reaping found. */
#define FORKWIRE_EXITS_MAX 64

/* The fds the forker is exec'd with, at these numbers. */
enum {
	FORKWIRE_FD_CHANNEL = 3, /* fdpass_channel_new()'s FDPASS_WORKER end */
	FORKWIRE_FD_SCOREBOARD = 4, /* struct scoreboard.fd */
	FORKWIRE_FD_SOURCES = 5, /* struct scoreboard.sources_fd */
	FORKWIRE_FD_RETURNS = 6, /* where a reload sends connections back
				  * (struct worker_setup.returns) */
};

struct forkwire_exit {
	int32_t pid; /* 0: a connection closed without a process */
	int32_t status; /* as waitpid() gave it */
};

struct forkwire_report {
	uint32_t magic;
	uint32_t n; /* 0: the hello */
	struct forkwire_exit exits[FORKWIRE_EXITS_MAX];
};

/* Sends the first n entries of r (r->magic and r->n are set here). Never
 * blocks: -EAGAIN when the channel is full, else 0 or -errno. */
int forkwire_send(int channel, struct forkwire_report *r, unsigned n);
/* Receives one report; -EAGAIN when none waits, -EPIPE when the forker's
 * end is closed, -EPROTO for a message that is not a report (it is
 * dropped, with any fds it brought). Returns r->n otherwise. */
int forkwire_recv(int channel, struct forkwire_report *r);
