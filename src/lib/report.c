#include "report.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "util.h"

static const char *const drop_reasons[DROP_REASONS] = {
	[DROP_PORT] = "source_port",
	[DROP_ADDRESS] = "source_address",
	[DROP_TRUNCATED] = "truncated",
	[DROP_ACCESS] = "access_list",
	[DROP_RATELIMIT] = "rate_limit",
	[DROP_SEND] = "send_failed",
};

static const char *const state_names[] = {
	[SLOT_EMPTY] = "empty",
	[SLOT_STARTING] = "starting",
	[SLOT_RUNNING] = "running",
	[SLOT_DRAINING] = "draining",
};
#define N_STATES ELEMENTSOF(state_names)

/* Whether a prefork worker accepts: alone (the others stand by), shared
 * with them, or not at all (standing by, full, or not a prefork worker). */
static const char *const watching_names[] = {
	[WATCHING_NONE] = "no",
	[WATCHING_ALONE] = "alone",
	[WATCHING_SHARED] = "shared",
};

const char *
report_drop_reason(enum scoreboard_drop d)
{
	return (unsigned)d < DROP_REASONS ? drop_reasons[d] : "unknown";
}

/* A state the reader does not know (a newer writer) is shown, not trusted. */
static const char *
state_name(uint32_t state)
{
	return state < N_STATES ? state_names[state] : "unknown";
}

static const char *
watching_name(uint32_t watching)
{
	return watching < ELEMENTSOF(watching_names) ? watching_names[watching] : "unknown";
}

static double
seconds(uint64_t now, uint64_t then)
{
	return then && now > then ? (double)(now - then) / 1e6 : 0.0;
}

static uint64_t
slot_dropped(const struct scoreboard_slot *s)
{
	uint64_t n = 0;

	for (unsigned d = 0; d < DROP_REASONS; d++)
		n += s->dgrams_dropped[d];
	return n;
}

static int
finish(FILE *f)
{
	return fflush(f) == 0 && !ferror(f) ? 0 : -EIO;
}

int
report_text(FILE *f, const struct scoreboard_snapshot *snap)
{
	const struct scoreboard_totals *t = &snap->totals;

	fprintf(f, "echod %s model, generation %u, supervisor pid %d, up %.0f s\n", snap->model,
		snap->generation, (int)snap->supervisor, seconds(snap->now_usec, snap->started_usec));
	fprintf(f, "%5s %8s %4s %-9s %-7s %7s %10s %8s %12s %12s %10s %10s %9s\n", "SLOT", "PID",
		"GEN", "STATE", "ACCEPTS", "ACTIVE", "SERVED", "REFUSED", "BYTES-IN", "BYTES-OUT",
		"DGRAMS-IN", "DGRAMS-OUT", "UPTIME");
	for (size_t i = 0; i < snap->n_slots; i++) {
		const struct scoreboard_slot *s = &snap->slots[i].s;

		fprintf(f, "%5u %8d %4u %-9s %-7s %7u %10" PRIu64 " %8" PRIu64 " %12" PRIu64
			   " %12" PRIu64 " %10" PRIu64 " %10" PRIu64 " %8.0fs\n",
			snap->slots[i].index, (int)s->pid, s->generation, state_name(s->state),
			watching_name(s->watching), s->active, s->served, s->refused, s->bytes_in,
			s->bytes_out, s->dgrams_in, s->dgrams_out,
			seconds(snap->now_usec, s->started_usec));
	}
	fprintf(f, "processes: %zu, %u running\n", snap->n_slots, t->workers_running);
	if (snap->max_connections)
		fprintf(f, "connections: %" PRIu64 " active, %u of MaxConnections=%u reserved (%.0f%%)\n",
			t->active, snap->reserved, snap->max_connections,
			100.0 * snap->reserved / snap->max_connections);
	else
		fprintf(f, "connections: %" PRIu64 " active, no MaxConnections=\n", t->active);
	fprintf(f, "accept queue: %u waiting (room for %u)\n", snap->accept_queue,
		snap->accept_queue_max);
	fprintf(f, "served: %" PRIu64 " connections, %" PRIu64 " bytes in, %" PRIu64 " bytes out, %" PRIu64
		   " datagrams in, %" PRIu64 " out\n",
		t->served, t->bytes_in, t->bytes_out, t->dgrams_in, t->dgrams_out);
	fprintf(f, "dropped: %" PRIu64 " refused (%" PRIu64 " over MaxConnectionsPerSource=, %" PRIu64
		   " by AllowFrom=/DenyFrom=, %" PRIu64 " PROXY: untrusted or bad header), %" PRIu64
		   " lost (fd limit), %" PRIu64 " accept pauses (ConnectionRateLimit=)\n",
		t->refused, t->refused - t->refused_access - t->refused_proxy, t->refused_access,
		t->refused_proxy, t->lost, t->accept_pauses);
	fprintf(f, "datagrams dropped:");
	for (unsigned d = 0; d < DROP_REASONS; d++)
		fprintf(f, " %s %" PRIu64 "%s", drop_reasons[d], t->dropped[d],
			d + 1 < DROP_REASONS ? "," : "\n");
	fprintf(f, "reloads: %" PRIu64 " ok, %" PRIu64 " failed; kept connections taken back: %" PRIu64
		   "\n",
		snap->reloads_ok, snap->reloads_failed, snap->kept_back);
	return finish(f);
}

/* Every string written is one of ours (model and state names), but the
 * model comes from another process's memory: anything not plainly
 * printable is escaped. */
static void
json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

int
report_json(FILE *f, const struct scoreboard_snapshot *snap)
{
	const struct scoreboard_totals *t = &snap->totals;

	fputs("{\"model\":", f);
	json_string(f, snap->model);
	fprintf(f, ",\"generation\":%u,\"supervisor_pid\":%d,\"uptime_sec\":%.3f", snap->generation,
		(int)snap->supervisor, seconds(snap->now_usec, snap->started_usec));
	fputs(",\"workers\":[", f);
	for (size_t i = 0; i < snap->n_slots; i++) {
		const struct scoreboard_slot *s = &snap->slots[i].s;

		fprintf(f, "%s{\"slot\":%u,\"pid\":%d,\"generation\":%u,\"state\":", i ? "," : "",
			snap->slots[i].index, (int)s->pid, s->generation);
		json_string(f, state_name(s->state));
		fputs(",\"accepts\":", f);
		json_string(f, watching_name(s->watching));
		fprintf(f, ",\"active\":%u,\"served\":%" PRIu64 ",\"refused\":%" PRIu64
			   ",\"lost\":%" PRIu64 ",\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64
			   ",\"datagrams_in\":%" PRIu64 ",\"datagrams_out\":%" PRIu64
			   ",\"datagrams_dropped\":%" PRIu64 ",\"capacity\":%u,\"uptime_sec\":%.3f}",
			s->active, s->served, s->refused, s->lost, s->bytes_in, s->bytes_out,
			s->dgrams_in, s->dgrams_out, slot_dropped(s), s->capacity,
			seconds(snap->now_usec, s->started_usec));
	}
	fprintf(f, "],\"processes\":%zu,\"workers_running\":%u", snap->n_slots, t->workers_running);
	fprintf(f, ",\"max_connections\":%u,\"reserved\":%u,\"active\":%" PRIu64, snap->max_connections,
		snap->reserved, t->active);
	fprintf(f, ",\"accept_queue\":%u,\"accept_queue_max\":%u", snap->accept_queue,
		snap->accept_queue_max);
	fprintf(f, ",\"served\":%" PRIu64 ",\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64
		   ",\"datagrams_in\":%" PRIu64 ",\"datagrams_out\":%" PRIu64,
		t->served, t->bytes_in, t->bytes_out, t->dgrams_in, t->dgrams_out);
	fprintf(f, ",\"refused\":%" PRIu64 ",\"refused_access\":%" PRIu64 ",\"refused_proxy\":%" PRIu64
		   ",\"lost\":%" PRIu64 ",\"accept_pauses\":%" PRIu64,
		t->refused, t->refused_access, t->refused_proxy, t->lost, t->accept_pauses);
	fputs(",\"datagrams_dropped\":{", f);
	for (unsigned d = 0; d < DROP_REASONS; d++)
		fprintf(f, "%s\"%s\":%" PRIu64, d ? "," : "", drop_reasons[d], t->dropped[d]);
	fprintf(f, "},\"reloads_ok\":%" PRIu64 ",\"reloads_failed\":%" PRIu64
		   ",\"kept_taken_back\":%" PRIu64 "}\n",
		snap->reloads_ok, snap->reloads_failed, snap->kept_back);
	return finish(f);
}

/* OpenMetrics names a counter family without its _total; the Prometheus
 * text format names it with. */
static void
family(FILE *f, bool om, const char *name, const char *type, const char *help)
{
	size_t len = strlen(name);
	bool counter = strcmp(type, "counter") == 0;

	if (om && counter && len > 6 && strcmp(name + len - 6, "_total") == 0)
		len -= 6;
	fprintf(f, "# HELP %.*s %s\n# TYPE %.*s %s\n", (int)len, name, help, (int)len, name, type);
}

int
report_metrics(FILE *f, const struct scoreboard_snapshot *snap, bool om, const char *version)
{
	const struct scoreboard_totals *t = &snap->totals;
	unsigned states[N_STATES] = {0};

	family(f, om, "echod_build_info", "gauge", "The running echod (always 1).");
	fprintf(f, "echod_build_info{version=\"%s\",model=\"%s\"} 1\n", version, snap->model);
	family(f, om, "echod_generation", "gauge", "Configuration generation (one more per reload attempt).");
	fprintf(f, "echod_generation %u\n", snap->generation);
	family(f, om, "echod_workers", "gauge", "Processes with a scoreboard slot, by state.");
	for (size_t i = 0; i < snap->n_slots; i++)
		if (snap->slots[i].s.state < N_STATES)
			states[snap->slots[i].s.state]++;
	for (unsigned st = SLOT_STARTING; st < N_STATES; st++)
		fprintf(f, "echod_workers{state=\"%s\"} %u\n", state_names[st], states[st]);
	family(f, om, "echod_connections_active", "gauge", "Connections open now.");
	fprintf(f, "echod_connections_active %" PRIu64 "\n", t->active);
	family(f, om, "echod_connections_max", "gauge", "MaxConnections= (0: no cap).");
	fprintf(f, "echod_connections_max %u\n", snap->max_connections);
	family(f, om, "echod_connections_reserved", "gauge", "MaxConnections= reservations held.");
	fprintf(f, "echod_connections_reserved %u\n", snap->reserved);
	family(f, om, "echod_accept_queue", "gauge", "Connections waiting in the kernel's accept queues.");
	fprintf(f, "echod_accept_queue %u\n", snap->accept_queue);
	family(f, om, "echod_connections_total", "counter",
	       "Connections by outcome: served, refused (closed at once), lost (fd limit).");
	fprintf(f, "echod_connections_total{result=\"served\"} %" PRIu64 "\n", t->served);
	fprintf(f, "echod_connections_total{result=\"refused\"} %" PRIu64 "\n", t->refused);
	fprintf(f, "echod_connections_total{result=\"lost\"} %" PRIu64 "\n", t->lost);
	family(f, om, "echod_connections_refused_total", "counter",
	       "Refused connections by reason: over MaxConnectionsPerSource=, AllowFrom=/DenyFrom=, "
	       "or a PROXY listener's (untrusted balancer, bad or late header).");
	fprintf(f, "echod_connections_refused_total{reason=\"per_source_limit\"} %" PRIu64 "\n",
		t->refused - t->refused_access - t->refused_proxy);
	fprintf(f, "echod_connections_refused_total{reason=\"access_list\"} %" PRIu64 "\n",
		t->refused_access);
	fprintf(f, "echod_connections_refused_total{reason=\"proxy\"} %" PRIu64 "\n",
		t->refused_proxy);
	family(f, om, "echod_accept_pauses_total", "counter",
	       "Times accepting paused for ConnectionRateLimit=.");
	fprintf(f, "echod_accept_pauses_total %" PRIu64 "\n", t->accept_pauses);
	family(f, om, "echod_bytes_total", "counter", "Payload bytes, streams and datagrams.");
	fprintf(f, "echod_bytes_total{direction=\"in\"} %" PRIu64 "\n", t->bytes_in);
	fprintf(f, "echod_bytes_total{direction=\"out\"} %" PRIu64 "\n", t->bytes_out);
	family(f, om, "echod_datagrams_total", "counter", "Datagrams received and echoed.");
	fprintf(f, "echod_datagrams_total{direction=\"in\"} %" PRIu64 "\n", t->dgrams_in);
	fprintf(f, "echod_datagrams_total{direction=\"out\"} %" PRIu64 "\n", t->dgrams_out);
	family(f, om, "echod_datagrams_dropped_total", "counter", "Datagrams dropped, by guard.");
	for (unsigned d = 0; d < DROP_REASONS; d++)
		fprintf(f, "echod_datagrams_dropped_total{reason=\"%s\"} %" PRIu64 "\n", drop_reasons[d],
			t->dropped[d]);
	/* Per process: a family of its own, so that sum() of the one above is
	 * not counted twice. */
	family(f, om, "echod_worker_connections_active", "gauge",
	       "Connections open now, by scoreboard slot.");
	for (size_t i = 0; i < snap->n_slots; i++)
		fprintf(f, "echod_worker_connections_active{worker=\"%u\",pid=\"%d\"} %u\n",
			snap->slots[i].index, (int)snap->slots[i].s.pid, snap->slots[i].s.active);
	family(f, om, "echod_worker_connections_total", "counter",
	       "Connections served, by scoreboard slot (since the slot was filled).");
	for (size_t i = 0; i < snap->n_slots; i++)
		fprintf(f, "echod_worker_connections_total{worker=\"%u\",pid=\"%d\"} %" PRIu64 "\n",
			snap->slots[i].index, (int)snap->slots[i].s.pid, snap->slots[i].s.served);
	family(f, om, "echod_reloads_total", "counter", "Reload attempts by result.");
	fprintf(f, "echod_reloads_total{result=\"ok\"} %" PRIu64 "\n", snap->reloads_ok);
	fprintf(f, "echod_reloads_total{result=\"failed\"} %" PRIu64 "\n", snap->reloads_failed);
	family(f, om, "echod_kept_taken_back_total", "counter",
	       "Connections retiring workers returned on a reload.");
	fprintf(f, "echod_kept_taken_back_total %" PRIu64 "\n", snap->kept_back);
	if (om)
		fputs("# EOF\n", f);
	return finish(f);
}
