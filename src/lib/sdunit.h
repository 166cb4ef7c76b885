/* What systemd is doing with our own unit, asked over the system bus: the
 * one way on systemd 252 to tell "systemctl restart" from "systemctl stop"
 * when SIGTERM arrives (both send it; only the queued job differs).
 *
 * Mechanism only: nothing here logs; errors are negative errno. */
#pragma once

#include <stdint.h>

struct sdunit_info {
	char job_type[32];	/* "restart", "stop", ... or "" when no job */
	char notify_access[16]; /* "main", "all", ... */
	uint32_t fd_store_max;	/* FileDescriptorStoreMax= */
};

/* Asks systemd about the unit the calling process runs in
 * (/org/freedesktop/systemd1/unit/self), with a bounded wait. Returns 0 and
 * fills *ret, or a negative errno (-ENOENT and the like when there is no
 * system bus, -EACCES when its policy refuses us). */
int sdunit_query(struct sdunit_info *ret);
