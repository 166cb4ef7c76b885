#include "metrics.h"

#include <dlfcn.h>
#include <errno.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "report.h"
#include "util.h"

#define OPENMETRICS_TYPE "application/openmetrics-text"
#define TIMEOUT_CHECK_MS 250

/* libmicrohttpd is loaded when metrics are first served, not linked:
 * it brings GnuTLS and nine more libraries, some fifty mappings, and
 * with Model=fork the supervisor forks once per connection, so that each
 * connection paid for copying and tearing down mappings it never uses
 * (and for GnuTLS's fork handlers). Loaded once, it stays. */
static struct {
	bool loaded;
	__typeof__(MHD_start_daemon) *start_daemon;
	__typeof__(MHD_stop_daemon) *stop_daemon;
	__typeof__(MHD_run) *run;
	__typeof__(MHD_get_daemon_info) *get_daemon_info;
	__typeof__(MHD_get_connection_info) *get_connection_info;
	__typeof__(MHD_lookup_connection_value) *lookup_connection_value;
	__typeof__(MHD_create_response_from_buffer) *create_response_from_buffer;
	__typeof__(MHD_add_response_header) *add_response_header;
	__typeof__(MHD_queue_response) *queue_response;
	__typeof__(MHD_destroy_response) *destroy_response;
} mhd;

/* Each symbol with the field it goes into, named once so that the two
 * cannot drift apart. dlsym() returns a data pointer; POSIX guarantees it
 * converts to a function pointer, which writing through void ** says. */
#define MHD_SYMBOL(field) {"MHD_" #field, (void **)&mhd.field}
static const struct {
	const char *name;
	void **slot;
} mhd_symbols[] = {
    MHD_SYMBOL(start_daemon),
    MHD_SYMBOL(stop_daemon),
    MHD_SYMBOL(run),
    MHD_SYMBOL(get_daemon_info),
    MHD_SYMBOL(get_connection_info),
    MHD_SYMBOL(lookup_connection_value),
    MHD_SYMBOL(create_response_from_buffer),
    MHD_SYMBOL(add_response_header),
    MHD_SYMBOL(queue_response),
    MHD_SYMBOL(destroy_response),
};

static int
mhd_load(void)
{
	void *lib;

	if (mhd.loaded)
		return 0;
	lib = dlopen(MHD_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (!lib)
		return log_error("metrics: cannot load %s (Debian: apt install libmicrohttpd12): %s",
				 MHD_SONAME, dlerror()),
		       -ENOENT;
	for (size_t i = 0; i < ELEMENTSOF(mhd_symbols); i++) {
		void *sym = dlsym(lib, mhd_symbols[i].name);

		if (!sym) {
			log_error("metrics: %s has no %s: %s", MHD_SONAME, mhd_symbols[i].name,
				  dlerror());
			dlclose(lib);
			return -ENOENT;
		}
		*mhd_symbols[i].slot = sym;
	}
	mhd.loaded = true;
	return 0;
}

/* The client asked for OpenMetrics (Prometheus does, first, in Accept:). */
static bool
wants_openmetrics(struct MHD_Connection *c)
{
	const char *accept = mhd.lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);

	return accept && strstr(accept, OPENMETRICS_TYPE);
}

static enum MHD_Result
reply(struct MHD_Connection *c, unsigned code, const char *type, char *body, size_t len)
{
	struct MHD_Response *r = mhd.create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	enum MHD_Result ret;

	if (!r) {
		free(body);
		return MHD_NO;
	}
	mhd.add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	ret = mhd.queue_response(c, code, r);
	mhd.destroy_response(r);
	return ret;
}

static enum MHD_Result
reply_text(struct MHD_Connection *c, unsigned code, const char *text)
{
	char *body = strdup(text);

	return body ? reply(c, code, "text/plain; charset=utf-8", body, strlen(body)) : MHD_NO;
}

static enum MHD_Result
handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
       const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	struct metrics *m = cls;
	struct scoreboard_snapshot snap;
	bool om = wants_openmetrics(c);
	char *body = NULL;
	size_t len = 0;
	FILE *f;
	int r;

	/* A body is never wanted: the first call has none yet, and any that
	 * follows is refused once it is all in. */
	if (!*con_cls) {
		*con_cls = m;
		return MHD_YES;
	}
	if (*upload_size) {
		*upload_size = 0;
		return MHD_YES;
	}
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET /metrics\n");
	if (strcmp(url, "/metrics") != 0)
		return reply_text(c, MHD_HTTP_NOT_FOUND, "only GET /metrics\n");
	if (scoreboard_snapshot(m->sb, &snap) < 0)
		return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "no steady reading, try again\n");
	f = open_memstream(&body, &len);
	r = f ? report_metrics(f, &snap, om, ECHOD_VERSION) : -ENOMEM;
	if (f && fclose(f) != 0 && r == 0)
		r = -EIO;
	scoreboard_snapshot_free(&snap);
	if (r < 0) {
		free(body);
		return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	}
	return reply(c, MHD_HTTP_OK,
		     om ? OPENMETRICS_TYPE "; version=1.0.0; charset=utf-8"
			: "text/plain; version=0.0.4; charset=utf-8",
		     body, len);
}

static void
track(void *cls, struct MHD_Connection *c, void **socket_context,
      enum MHD_ConnectionNotificationCode code)
{
	struct metrics *m = cls;
	const union MHD_ConnectionInfo *info =
	    mhd.get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	int fd = info ? (int)info->connect_fd : -1;

	for (unsigned i = 0; fd >= 0 && i < METRICS_CONNECTIONS; i++) {
		if (code == MHD_CONNECTION_NOTIFY_STARTED && m->conn_fds[i] < 0) {
			m->conn_fds[i] = fd;
			return;
		}
		if (code == MHD_CONNECTION_NOTIFY_CLOSED && m->conn_fds[i] == fd) {
			m->conn_fds[i] = -1;
			return;
		}
	}
}

/* libmicrohttpd's own complaints (a client's bad request is not one).
 * The format comes from the library, hence the attribute: it lets the
 * compiler check the call rather than refuse a non-literal format. */
__attribute__((format(printf, 2, 0))) static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[256];

	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	log_debug("metrics: %s", line);
}

static int
bind_address(struct metrics *m, const char *address)
{
	struct listen_address a;
	char reason[256];
	int r;

	/* Validated when the configuration was read. */
	r = address_parse(address, &a, reason, sizeof(reason));
	if (r >= 0)
		r = listen_bind(&m->bound, address, &a, false, reason, sizeof(reason));
	if (r < 0) {
		log_error("MetricsListen=: cannot listen on %s", reason);
		return r;
	}
	return m->bound.items[0].fd;
}

int
metrics_start(struct metrics *m, struct listen_set *sockets, const char *address,
	      const struct scoreboard *sb)
{
	const char *where = address;
	int fd;

	*m = (struct metrics){.sb = sb};
	for (unsigned i = 0; i < METRICS_CONNECTIONS; i++)
		m->conn_fds[i] = -1;
	if (sockets->has_metrics) {
		fd = sockets->metrics;
		where = "the socket systemd named " LISTEN_METRICS_NAME;
		if (address)
			log_notice("metrics: the socket comes from systemd, MetricsListen= is ignored");
	} else if (address) {
		fd = bind_address(m, address);
		if (fd < 0)
			return fd;
	} else {
		return 0;
	}
	if (mhd_load() < 0) {
		listen_set_free(&m->bound, true);
		return -ENOENT;
	}
	m->daemon = mhd.start_daemon(
	    MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL, handle, m,
	    MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_CONNECTIONS,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_TIMEOUT_SEC,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)METRICS_REQUEST_MAX,
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
	    MHD_OPTION_NOTIFY_CONNECTION, track, m,
	    MHD_OPTION_END);
	if (!m->daemon) {
		listen_set_free(&m->bound, true);
		return log_error_errno(EINVAL, "metrics: cannot serve HTTP on %s", where), -EINVAL;
	}
	/* The daemon owns the socket now. */
	if (sockets->has_metrics)
		sockets->metrics = -1;
	else
		m->bound.items[0].fd = -1;
	log_info("metrics: serving GET /metrics on %s", where);
	return 0;
}

int
metrics_fd(const struct metrics *m)
{
	const union MHD_DaemonInfo *info;

	if (!m->daemon)
		return -1;
	info = mhd.get_daemon_info(m->daemon, MHD_DAEMON_INFO_EPOLL_FD);
	return info ? info->epoll_fd : -1;
}

void
metrics_run(struct metrics *m, uint64_t now_ms)
{
	if (!m->daemon)
		return;
	m->last_run_ms = now_ms;
	mhd.run(m->daemon);
}

void
metrics_tick(struct metrics *m, uint64_t now_ms)
{
	if (now_ms >= m->last_run_ms + TIMEOUT_CHECK_MS)
		metrics_run(m, now_ms);
}

void
metrics_stop(struct metrics *m)
{
	if (m->daemon)
		mhd.stop_daemon(m->daemon);
	m->daemon = NULL;
	listen_set_free(&m->bound, true);
}

void
metrics_close_in_child(const struct metrics *m)
{
	const union MHD_DaemonInfo *info;

	if (!m || !m->daemon)
		return;
	info = mhd.get_daemon_info(m->daemon, MHD_DAEMON_INFO_LISTEN_FD);
	if (info)
		close((int)info->listen_fd);
	if (metrics_fd(m) >= 0)
		close(metrics_fd(m));
	for (unsigned i = 0; i < METRICS_CONNECTIONS; i++)
		if (m->conn_fds[i] >= 0)
			close(m->conn_fds[i]);
}
