/* Fuzzes the configuration parser with the input as a file's contents.
 * Beyond not crashing and not leaking, the parser must keep its contract:
 * an error is -EINVAL with a message that names the file; success leaves
 * every key within its documented range and every Listen= parseable. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "address.h"
#include "config.h"

#define NAME "fuzz.conf"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_valid(const struct config *c)
{
	struct listen_address a;
	char reason[128];

	/* The ranges of echod.conf(5), written out here rather than taken
	 * from config.c: every key of struct config. */
	/* 0 is auto for Workers= and WorkerConnections=, unset for
	 * MaxConnections=. */
	if (c->model > MODEL_FORK || c->workers > 1024 || c->worker_connections > 1048576 ||
	    c->max_connections > 16777216 ||
	    c->idle_timeout_sec > 86400 || c->shutdown_timeout_sec > 3600 ||
	    c->datagram_rate_limit > 10000000 || c->max_connections_per_source > 16777216 ||
	    c->connection_rate_limit > 10000000 || c->defer_accept_sec > 3600 ||
	    c->log_level < LOG_ERR || c->log_level > LOG_DEBUG || c->n_listen > CONFIG_MAX_LISTEN ||
	    c->socket_mode < -1 || c->socket_mode > 0777)
		abort();
	for (size_t i = 0; i < c->n_listen; i++)
		if (!c->listen[i] || address_parse(c->listen[i], &a, reason, sizeof(reason)) < 0)
			abort();
}

/* The longest line of the input, in bytes. */
static size_t
longest_line(const uint8_t *data, size_t size)
{
	size_t longest = 0, len = 0;

	for (size_t i = 0; i < size; i++) {
		len = data[i] == '\n' ? 0 : len + 1;
		if (len > longest)
			longest = len;
	}
	return longest;
}

/* An error that blames the line length must be about a line that long.
 * (Matched whole: a value quoted in another message may say anything.) */
static void
check_line_too_long(const char *message, const uint8_t *data, size_t size)
{
	unsigned line, max;
	int end = -1;

	if (sscanf(message, NAME ":%u: line too long (%u characters at most)%n", &line, &max,
		   &end) != 2 ||
	    end < 0 || message[end] != '\0')
		return;
	if (max == 0 || longest_line(data, size) <= max)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config c, copy;
	struct config_error err = {0};
	char *buf;
	FILE *f;
	int r;

	/* A heap copy of exactly the input, so reads past it are caught.
	 * fmemopen() takes no empty buffer: an empty file is /dev/null. */
	buf = malloc(size ? size : 1);
	if (!buf)
		abort();
	memcpy(buf, data, size);
	f = size ? fmemopen(buf, size, "r") : fopen("/dev/null", "re");
	if (!f)
		abort();

	config_init(&c);
	r = config_load_stream(&c, f, NAME, &err);
	fclose(f);
	free(buf);

	if (r < 0) {
		if (r != -EINVAL || strncmp(err.message, NAME, strlen(NAME)) != 0 ||
		    !memchr(err.message, '\0', sizeof(err.message)))
			abort();
		check_line_too_long(err.message, data, size);
	} else {
		if (r != 0)
			abort();
		check_valid(&c);
	}
	/* Whatever was read, even half of a file, copies and frees cleanly. */
	config_init(&copy);
	if (config_copy(&copy, &c) == 0) {
		if (copy.n_listen != c.n_listen)
			abort();
		for (size_t i = 0; i < c.n_listen; i++)
			if (strcmp(copy.listen[i], c.listen[i]) != 0)
				abort();
		if (copy.n_proxy_listen != c.n_proxy_listen ||
		    copy.proxy_from.n_allow != c.proxy_from.n_allow)
			abort();
		for (size_t i = 0; i < c.n_proxy_listen; i++)
			if (strcmp(copy.proxy_listen[i], c.proxy_listen[i]) != 0)
				abort();
	}
	/* A proxy listener without balancers is the one cross-key error. */
	if (r == 0 && (config_validate(&c, NAME, &err) < 0) !=
			  (c.n_proxy_listen > 0 && c.proxy_from.n_allow == 0))
		abort();
	config_done(&copy);
	config_done(&c);
	return 0;
}
