/* Logging: the one place that decides where a message goes (stderr today,
 * the journal when stderr is connected to it). Roles log; mechanisms don't. */
#pragma once

#include <stdbool.h>
#include <syslog.h>

#include "util.h"

/* Levels are syslog priorities: LOG_ERR .. LOG_DEBUG. */
int log_level_from_string(const char *s);
const char *log_level_to_string(int level);

void log_set_max_level(int level);
int log_get_max_level(void);
/* A short tag for this process's role ("worker 3"), put before every message. */
void log_set_context(const char *context);
void log_set_model(const char *model);

/* Logs the message if level passes the filter. With error != 0, errno is set
 * to -error (or error) around formatting so "%m" names it. Returns -abs(error),
 * so a caller can `return log_error_errno(r, ...)`. */
int log_internal(int level, int error, const char *peer, const char *fmt, ...) _printf_(4, 5);
/* A message with a MESSAGE_ID= that the journal catalog explains. */
int log_struct(int level, const char *message_id, const char *fmt, ...) _printf_(3, 4);

/* Decides again whether stderr is the journal (after stderr changed). */
void log_reopen(void);
bool log_is_journal(void);

/* MESSAGE_IDs of the events catalog/echod.catalog explains. */
#define ECHOD_MESSAGE_STARTED "756418ebc6cd4ea7be59bfa840eea8f6"
#define ECHOD_MESSAGE_STOPPED "d7ae218fccb24fc195fa354f6c43eef9"
#define ECHOD_MESSAGE_RELOADED "1dbe40775eb04e2bb98741d49b4270d4"
#define ECHOD_MESSAGE_RELOAD_REJECTED "50cb68a85e144ba29d97027468e93550"
#define ECHOD_MESSAGE_WORKER_CRASHED "f2b0fd16c8dc4655befb4286f3b469f0"
#define ECHOD_MESSAGE_CONFIG_KEPT "3107b4a86d6744eeb9f171343beda350"

#define log_full_errno(level, error, ...) log_internal(level, error, NULL, __VA_ARGS__)
#define log_debug(...) log_internal(LOG_DEBUG, 0, NULL, __VA_ARGS__)
#define log_info(...) log_internal(LOG_INFO, 0, NULL, __VA_ARGS__)
#define log_notice(...) log_internal(LOG_NOTICE, 0, NULL, __VA_ARGS__)
#define log_warning(...) log_internal(LOG_WARNING, 0, NULL, __VA_ARGS__)
#define log_error(...) log_internal(LOG_ERR, 0, NULL, __VA_ARGS__)
#define log_debug_errno(e, ...) log_internal(LOG_DEBUG, e, NULL, __VA_ARGS__)
#define log_info_errno(e, ...) log_internal(LOG_INFO, e, NULL, __VA_ARGS__)
#define log_notice_errno(e, ...) log_internal(LOG_NOTICE, e, NULL, __VA_ARGS__)
#define log_warning_errno(e, ...) log_internal(LOG_WARNING, e, NULL, __VA_ARGS__)
#define log_error_errno(e, ...) log_internal(LOG_ERR, e, NULL, __VA_ARGS__)
/* Per-connection events: debug level, with the peer's address as a field,
 * and rate-limited (LOG_PEER_BURST a second per process; what is held back
 * is counted in the next line that gets through), so a flood of clients
 * cannot flood the journal. */
#define LOG_PEER_BURST 100
int log_peer(const char *peer, const char *fmt, ...) _printf_(2, 3);
#define log_peer_debug(peer, ...) log_peer(peer, __VA_ARGS__)
/* The same for a connection through a load balancer: proxy (NULL: none)
 * is the balancer, in ECHOD_PROXY=; peer the client its header named. */
int log_peer_via(const char *peer, const char *proxy, const char *fmt, ...) _printf_(3, 4);
