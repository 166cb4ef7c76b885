/* Keeping TCP connections across a restart of echod.service: how a live
 * connection and the bytes echod still owes its client are put into
 * systemd's fd store, and recognised when they come back in $LISTEN_FDS.
 *
 * The store keeps fds by name, and FDNAME= names every fd of one notify
 * message alike. So connections travel in batches of up to
 * KEPT_BATCH_MAX fds (SCM_MAX_FD) all named KEPT_CONN_NAME, and a
 * connection that owes bytes gets one more entry of its own: a sealed memfd
 * named "owed-<id>", where <id> is the connection socket's inode number
 * (unique among live sockets, the same in every process holding it). The
 * memfd repeats the id in a header, so whoever receives it without its name
 * (a worker, over its channel) can still pair it with its connection:
 *
 *   bytes 0..7   "echodOW1"
 *   bytes 8..15  socket id, native byte order
 *   bytes 16..23 number of owed bytes that follow, native byte order
 *   bytes 24..   the owed bytes, oldest first
 *
 * A connection that came through a proxy listener carries the client its
 * PROXY header named (its socket's peer is the balancer): it always gets
 * a memfd, "echodOW2", owing bytes or not:
 *
 *   bytes 0..7   "echodOW2"
 *   bytes 8..15  socket id
 *   bytes 16..23 number of owed bytes (may be 0)
 *   bytes 24..31 length of the client's address (1 .. sizeof(struct
 *                sockaddr_storage))
 *   bytes 32..   the client's address, then the owed bytes
 *
 * A restart also keeps the configuration the supervisor ran, so that the
 * next echod can go on with it when the file was broken in between: one
 * sealed memfd named "config", its text as --dump-config prints it:
 *
 *   bytes 0..7   "echodCF1"
 *   bytes 8..15  length of the text that follows, native byte order
 *   bytes 16..   the text (no NUL)
 *
 * Mechanism only: nothing here logs; errors are negative errno. */
#pragma once

#include "config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define KEPT_CONN_NAME "conn"
#define KEPT_OWED_PREFIX "owed-"
#define KEPT_CONFIG_NAME "config"
/* The kernel's SCM_MAX_FD: more fds in one message fail with EINVAL. */
#define KEPT_BATCH_MAX 253
/* Longest name "owed-<id>" plus NUL. */
#define KEPT_NAME_MAX (sizeof(KEPT_OWED_PREFIX) + 20)
/* What one connection may owe, whoever takes it back: echod owes at most
 * one read (64 KiB); the margin admits an older or newer echod's. The one
 * limit every decoder applies. */
#define KEPT_OWED_MAX (1024 * 1024)
/* The longest configuration text kept (a dump is a few KiB). */
#define KEPT_CONFIG_MAX (1024 * 1024)

enum kept_kind {
	KEPT_OTHER, /* not ours: a listening socket, or unnamed */
	KEPT_CONN,
	KEPT_OWED,
	KEPT_CONFIG,
};

/* Classifies an FDNAME= / $LISTEN_FDNAMES entry; for KEPT_OWED stores
 * the id in *ret_id. NULL is KEPT_OTHER. "owed-" with anything but a
 * decimal number without leading zeros in [1, UINT64_MAX] is KEPT_OTHER. */
enum kept_kind kept_name_parse(const char *name, uint64_t *ret_id);

/* Writes "owed-<id>" into buf (at least KEPT_NAME_MAX bytes). */
void kept_owed_name(uint64_t id, char *buf, size_t size);

/* The id of a connected socket: its inode number. -ENOTSOCK for anything
 * else. */
int kept_socket_id(int fd, uint64_t *ret_id);

/* Creates a sealed (no write, grow, shrink, or further seals) close-on-exec
 * memfd holding id and the len bytes at data. len must be 1 ..
 * KEPT_OWED_MAX (else -EINVAL). Returns 0 and *ret_fd, or -errno. */
int kept_owed_encode(uint64_t id, const void *data, size_t len, int *ret_fd);

/* The same for the len bytes owed on connection conn_fd: encodes them under
 * the connection's id, which it stores in *ret_id. */
int kept_owed_pack(int conn_fd, const void *data, size_t len, uint64_t *ret_id, int *ret_fd);

/* Reads back what kept_owed_encode() wrote: checks the seals, the magic
 * and that the length matches the file's size and is at most
 * KEPT_OWED_MAX. On success *ret_data is a malloc()ed copy of the bytes
 * (the caller frees it) and *ret_len their number. Does not take fd.
 * -EBADMSG for a memfd that is not one of ours or is not sealed, -E2BIG for
 * one that is too long. ret_data may be NULL: only the id is wanted. */
int kept_owed_decode(int fd, uint64_t *ret_id, char **ret_data, size_t *ret_len);

/* What whoever takes a kept connection back does with owed_fd: decodes it
 * (the errors of kept_owed_decode()) and checks that it is conn_fd's:
 * -ESTALE when it names another connection (a send that failed half-way
 * left it behind). Takes neither fd. */
int kept_owed_take(int owed_fd, int conn_fd, char **ret_data, size_t *ret_len);

/* The same with the client a PROXY header named (client_len > 0; then len
 * may be 0), in the "echodOW2" layout; client NULL is kept_owed_*(). */
int kept_state_encode(uint64_t id, const struct sockaddr *client, socklen_t client_len,
		      const void *data, size_t len, int *ret_fd);
int kept_state_pack(int conn_fd, const struct sockaddr *client, socklen_t client_len,
		    const void *data, size_t len, uint64_t *ret_id, int *ret_fd);
/* Reads either layout; *ret_client_len is 0 when no client was named (and
 * *ret_data NULL when nothing is owed). ret_client may be NULL. */
int kept_state_decode(int fd, uint64_t *ret_id, char **ret_data, size_t *ret_len,
		      struct sockaddr_storage *ret_client, socklen_t *ret_client_len);
int kept_state_take(int owed_fd, int conn_fd, char **ret_data, size_t *ret_len,
		    struct sockaddr_storage *ret_client, socklen_t *ret_client_len);

/* The configuration's text (1 .. KEPT_CONFIG_MAX bytes, else -EINVAL) in
 * a sealed close-on-exec memfd. Returns 0 and *ret_fd, or -errno. */
int kept_config_encode(const char *text, size_t len, int *ret_fd);

/* Reads it back: *ret_text is a malloc()ed, NUL-terminated copy. Does not
 * take fd. -EBADMSG for a memfd that is not one, or not sealed; -E2BIG
 * for one longer than KEPT_CONFIG_MAX. */
int kept_config_decode(int fd, char **ret_text, size_t *ret_len);

/* The whole configuration c, as --dump-config writes it, in such a memfd:
 * what a restart keeps in the fd store, and what the supervisor hands the
 * connection forker. Returns 0 and *ret_fd, or -errno. */
int kept_config_pack(const struct config *c, int *ret_fd);
/* Reads one back into c (on top of what it holds, as a file would be);
 * origin names it in the messages in *err. Does not take fd. 0 or -errno,
 * with the message in *err. */
int kept_config_unpack(int fd, struct config *c, const char *origin, struct config_error *err);

/* Sends kept connection fd over channel, preceded by its owed bytes unless
 * owed_fd is -1: they come first, because once the receiver has the
 * connection it may read and echo newer bytes, which must follow them.
 * Takes neither fd. Returns what fdpass_send() returns; after a failure
 * half-way the receiver drops the stray owed bytes (kept_owed_take()). */
int kept_send(int channel, int fd, int owed_fd);

/* Puts n (1 .. KEPT_BATCH_MAX) fds into systemd's fd store under name
 * in one message (sd_pid_notify_with_fds with FDSTORE=1). Does not take the
 * fds: systemd keeps copies. Returns > 0 when sent, 0 when $NOTIFY_SOCKET is
 * unset (nothing was stored), or -errno. */
int kept_store(const char *name, const int *fds, size_t n);

/* Waits (up to timeout_usec) until systemd has processed every message
 * this process sent before: systemd finds the unit of a message by its
 * sender's pid, so a process that exits right after storing fds may have
 * them dropped, and the connections reset. Returns > 0 once processed, 0
 * when $NOTIFY_SOCKET is unset, or -errno (-ETIMEDOUT). */
int kept_store_sync(uint64_t timeout_usec);

/* FDSTOREREMOVE=1 for every entry named name. Same returns. */
int kept_store_remove(const char *name);
