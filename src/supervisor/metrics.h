/* GET /metrics, served by the supervisor from its own epoll loop
 * (libmicrohttpd, external event loop, no thread). Nothing it does can
 * block the supervisor: sockets are non-blocking, a request is bounded
 * (METRICS_REQUEST_MAX bytes, METRICS_TIMEOUT_SEC idle), and at most
 * METRICS_CONNECTIONS scrapers are served at once; more wait in the
 * listening socket's backlog. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "listen.h"
#include "scoreboard.h"

#define METRICS_REQUEST_MAX 8192
#define METRICS_TIMEOUT_SEC 5
#define METRICS_CONNECTIONS 4

struct MHD_Daemon;

struct metrics {
	struct MHD_Daemon *daemon; /* NULL: not serving */
	const struct scoreboard *sb;
	struct listen_set bound; /* MetricsListen=, when we bound it ourselves */
	uint64_t last_run_ms;
	/* The scrapers' sockets: a forked worker closes them, or a scraper
	 * would wait for its EOF as long as that worker lives. */
	int conn_fds[METRICS_CONNECTIONS];
};

/* Serves on the socket systemd named "metrics" (taken from sockets), or
 * else on the address given (NULL: nowhere). Returns 0 (also when there is
 * nothing to serve) or a negative errno, logged with the address. */
int metrics_start(struct metrics *m, struct listen_set *sockets, const char *address,
		  const struct scoreboard *sb);
/* The fd to watch for input (an epoll fd), or -1 when not serving. */
int metrics_fd(const struct metrics *m);
/* Does what is ready without waiting: call when metrics_fd() is readable. */
void metrics_run(struct metrics *m, uint64_t now_ms);
/* The same every so often, so that idle scrapers time out. */
void metrics_tick(struct metrics *m, uint64_t now_ms);
void metrics_stop(struct metrics *m);
/* In a child just forked: closes every fd of m (m may be NULL), touching
 * nothing the supervisor's copy needs. */
void metrics_close_in_child(const struct metrics *m);
