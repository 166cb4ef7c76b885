/* Integration test harness: starts the real echod (standalone with
 * --listen, or under systemd-socket-activate), talks to it over loopback
 * with bounded waits, and inspects its processes through /proc. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HARNESS_MAX_ARGS 48

struct echod {
	pid_t pid;	 /* echod itself (the supervisor), or the activator */
	int port;	 /* TCP port on 127.0.0.1 */
	int log_fd;	 /* read end of echod's stderr */
	char log[65536]; /* what echod logged so far */
	size_t log_len;
	int out_fd;	 /* read end of echod's stdout (echod_run), or -1 */
	char out[16384]; /* what echod wrote to stdout (echod_run) */
	size_t out_len;
};

/* The model under test, from $ECHOD_MODEL (default prefork). */
const char *harness_model(void);

/* The next echod started gets this RLIMIT_NOFILE (soft and hard). */
void harness_limit_fds(unsigned limit);
/* Writes text to path (a configuration file for echod), failing the test
 * if it cannot. */
void harness_write_config(const char *path, const char *text);
/* The next echod started gets fds (n of them, still owned by the caller)
 * as systemd passes sockets: at 3, 4, ... with LISTEN_FDS, LISTEN_PID and,
 * unless NULL, LISTEN_FDNAMES (names separated by ':'). */
void harness_pass_fds(const int *fds, size_t n, const char *names);
/* The next echod started runs as uid (and gid) with this RLIMIT_NPROC:
 * the kernel ignores RLIMIT_NPROC for root, so a test of fork() failing
 * needs a user of its own (one no other process runs as). Needs root. */
void harness_run_as(uid_t uid, unsigned nproc_limit);

/* CPU time (user + system) used so far by pid, its descendants, and the
 * children it has reaped, in milliseconds. */
uint64_t process_tree_cpu_ms(pid_t pid);
/* Time spent runnable but waiting for a CPU, from schedstat: lets a test
 * tell a slow daemon from a busy machine (the cores are shared with other
 * tests and builds). A snapshot of echod's processes (the supervisor and
 * its children) and of the calling thread: */
struct cpu_waits {
	pid_t pids[64];
	uint64_t waited[64]; /* ms */
	size_t n;
	uint64_t own;
};
void cpu_waits_take(pid_t supervisor, struct cpu_waits *w);
/* How long since `before` the caller or echod was runnable but had no CPU,
 * in ms: the caller's own wait plus the longest wait of one echod process
 * (they wait side by side: adding them all up would excuse too much). */
uint64_t cpu_wait_since(pid_t supervisor, const struct cpu_waits *before);

/* Starts echod with --listen 127.0.0.1:PORT -m MODEL and extra args
 * (NULL-terminated), and waits until it accepts connections. */
void echod_start(struct echod *e, const char *const *extra);
/* An environment entry for echod_spawn()/echod_start_env(): becomes
 * JOURNAL_STREAM naming echod's stderr, so that echod logs to the journal
 * natively, as under systemd (and no longer to the harness's pipe). */
#define HARNESS_JOURNAL_STREAM "JOURNAL_STREAM=<stderr>"

/* Same with extra environment entries ("K=V", NULL-terminated). */
void echod_start_env(struct echod *e, const char *const *env, const char *const *extra);
/* Starts echod under systemd-socket-activate with the given activator
 * arguments before the program (e.g. "--accept"). With "--datagram" the
 * socket is UDP and echod starts with the first datagram: this returns
 * at once, the caller sends it. */
void echod_start_activated(struct echod *e, const char *const *activator_args,
			   const char *const *extra);
/* Runs echod to completion with args (no --listen added); returns its
 * exit status (128 + signal if killed, -1 after killing it when it did not
 * exit in time), what it wrote to stderr in e->log and to stdout in e->out. */
int echod_run(struct echod *e, const char *const *args, int timeout_ms);
/* Starts echod with exactly args and the extra environment entries, with
 * stdin_fd as its stdin (-1: /dev/null), and returns at once: for tests
 * that watch the start-up itself. */
void echod_spawn(struct echod *e, const char *const *env, const char *const *args, int stdin_fd);
/* Waits up to timeout_ms for echod to exit and returns its status as
 * echod_run() does, or -1 when it is still running (it is left alone). */
int echod_wait_exit(struct echod *e, int timeout_ms);

/* SIGTERM, then waits up to timeout_ms; returns the exit status, or -1
 * after killing it when it did not exit in time. */
int echod_stop(struct echod *e, int timeout_ms);
void echod_kill(struct echod *e);
/* Reads what echod logged so far (non-blocking) into e->log. */
void echod_collect_log(struct echod *e);
/* Waits until the log contains needle, up to timeout_ms. */
bool echod_wait_log(struct echod *e, const char *needle, int timeout_ms);
/* Counts the occurrences of needle in the log. */
unsigned echod_log_count(struct echod *e, const char *needle);

/* A cmocka teardown for every test that starts echod: SIGKILLs whatever
 * the test process still has running, each child's whole process tree,
 * found by PID through /proc (the test's own struct echod may be gone
 * with its stack when an assertion failed), and reaps it. A failed test
 * must not leave its echod to disturb the next. */
int harness_teardown(void **state);
/* Removes a --runtime-dir made for a test, with the reload status file an
 * echod leaves in it (systemd removes RuntimeDirectory= itself). Anything
 * else left there fails the test: echod must not leave litter. */
void harness_remove_runtime_dir(const char *dir);

/* Connects to 127.0.0.1:port (blocking connect, then non-blocking). */
int tcp_connect(int port);
/* Waits until 127.0.0.1:port accepts connections, up to timeout_ms. */
bool tcp_wait_accepting(int port, int timeout_ms);
int free_port(void);
/* Sends data and reads back exactly len bytes, full duplex, with a
 * deadline. Returns 0 when what came back equals data, -1 otherwise. */
int echo_roundtrip(int fd, const void *data, size_t len, int timeout_ms);
/* Reads until EOF or timeout; returns bytes read, or -1 on error/timeout. */
ssize_t read_until_eof(int fd, void *buf, size_t size, int timeout_ms);
/* True when fd becomes readable (data or EOF) within timeout_ms. */
bool wait_readable(int fd, int timeout_ms);
void fill_random(void *buf, size_t len, unsigned seed);

/* The processes that serve under pid: its direct children (from /proc),
 * where Model=fork's connection forker stands aside for its own, the
 * connection processes. Returns how many were written. */
size_t process_children(pid_t pid, pid_t *out, size_t max);
/* Direct children of pid alone. */
size_t process_direct_children(pid_t pid, pid_t *out, size_t max);
/* pid's connection forker (echod-forker, Model=fork), or 0. */
pid_t process_forker(pid_t pid);
/* Resident memory (VmRSS) of pid, in KiB; 0 if it is gone. */
uint64_t process_rss_kib(pid_t pid);
/* Total resident memory of pid and all its descendants, in KiB. */
uint64_t process_tree_rss_kib(pid_t pid);
/* Number of open fds of pid. */
int process_fd_count(pid_t pid);
/* Of those, the sockets; -1 when pid's fds cannot be read (it is gone). */
int process_socket_count(pid_t pid);
/* Of those, the TCP connections accepted on local port `port` (any state
 * but LISTEN), from /proc/net/tcp and tcp6: exact where the socket count
 * would also count whatever other socket pid has open for a moment. -1
 * when pid's fds cannot be read. */
int process_connection_count(pid_t pid, int port);
bool process_alive(pid_t pid);
/* The server's end of the client's connection client_fd, looked for among
 * the fds of pid and its children and copied into this process
 * (pidfd_getfd()): what the server set on it can be read there. -1 if no
 * such process holds it. */
int served_socket(pid_t pid, int client_fd);
/* Children of pid that have exited but not been reaped. */
unsigned zombie_children(pid_t pid);
uint64_t monotonic_ms(void);
/* Prints text, a line at a time, as TAP comments ("# ..."): a line of a
 * program's output printed bare would be read as a broken TAP line. */
void print_comment(const char *text);

/* Connects from the local address src (e.g. "127.0.0.2") to 127.0.0.1:port,
 * as tcp_connect() does. */
int tcp_connect_from(const char *src, int port);
/* Connects to [::1]:port, or to the UNIX socket path ("@name": the
 * abstract one), non-blocking as tcp_connect() is; -1 on failure. */
int tcp6_connect(int port);
int unix_connect(const char *path);
/* Whether this machine can use ::1 at all. */
bool ipv6_loopback_available(void);
/* True when the peer closes fd (EOF or reset) within timeout_ms. */
bool closed_by_peer(int fd, int timeout_ms);

/* A NOTIFY_SOCKET of the test's own, to read what echod tells systemd: pass
 * env to echod_start_env(). */
struct notify_socket {
	int fd;
	char path[108];
	char env[128];
	char status[1024]; /* the latest STATUS= text received, or "" */
};

void notify_socket_open(struct notify_socket *n);
void notify_socket_close(struct notify_socket *n);
/* Reads the messages echod sends until the latest STATUS= contains needle;
 * returns that status, or NULL after timeout_ms. */
const char *notify_status_wait(struct notify_socket *n, const char *needle, int timeout_ms);
/* Reads every message echod sends for ms and returns the latest STATUS=. */
const char *notify_status_after(struct notify_socket *n, int ms);
/* The number in status before " word" (e.g. "served", "refused"), or -1. */
long status_count(const char *status, const char *word);

/* A total of `echod status --json`'s output (a key after the workers'
 * array, as "active" or "served") into *ret; false when json has none. */
bool status_json_total(const char *json, const char *key, unsigned long long *ret);
/* Runs `echod status --json --runtime-dir DIR` and reads one total; false
 * when it fails or has no such key (it says which on stderr). */
bool echod_status_total(const char *runtime_dir, const char *key, unsigned long long *ret);

/* A journal socket of the test's own, at the path the native protocol
 * uses (sd_journal_send(), and echod-forker's own writer), in a mount
 * namespace of the test's (a tmpfs over /run/systemd): what echod logs
 * natively arrives here, field by field. -1 when it cannot be set up
 * (not root). */
int harness_private_journal(void);
/* Waits for a journal entry whose MESSAGE= contains needle; copies the
 * whole entry (KEY=value lines) into entry. */
bool harness_journal_wait(int fd, const char *needle, char *entry, size_t size, int timeout_ms);
/* Whether entry has the line field ("KEY=value"); says which it lacks on
 * stderr when not. */
bool harness_journal_has(const char *entry, const char *field);
/* Waits for the entry that logs client's connection ("connection from
 * 127.0.0.1:PORT", at --log-level debug) and checks its ECHOD_PEER=. */
bool harness_journal_connection(int journal, int client, char *entry, size_t size,
				int timeout_ms);
