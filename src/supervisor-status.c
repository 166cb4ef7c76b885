/* What the supervisor says of how things go: STATUS= for systemctl status,
 * and a summary of admission control for the journal. */
#include "supervisor-internal.h"

#include "log.h"

/* Refusals and pauses are summed up in one line at most this often. */
#define ADMISSION_LOG_INTERVAL_MS 5000

/* --- status --- */

void
supervisor_status_update(struct supervisor *s, bool force)
{
	struct scoreboard_totals t;
	const struct config *c = current_config(s);
	bool fork = c->model == MODEL_FORK;

	scoreboard_totals(&s->scoreboard, &t);
	struct notify_status st = {
	    .model = model_to_string(c->model),
	    .workers_running = fork ? s->children.n : pool_alive(s->pool),
	    .workers_wanted = fork ? config_max_connections(c) : s->pool->n,
	    .active = fork ? s->children.n : t.active,
	    .served = t.served,
	    .refused = t.refused,
	    .lost = t.lost + s->lost,
	    .dgrams_in = t.dgrams_in,
	    .dgrams_out = t.dgrams_out,
	    .dgrams_dropped = t.dgrams_dropped,
	    .generation = s->generation,
	    .note = s->status_note[0] ? s->status_note : NULL,
	};
	notify_status_send(&s->status_limiter, &st, now_ms() * 1000, force);
}

/* What admission control did since the last line, at most one line every
 * few seconds whatever a flood does: refusals by any process and pauses of
 * any acceptor are all in the scoreboard. */
void
supervisor_status_log_admission(struct supervisor *s, uint64_t now)
{
	const struct config *c = current_config(s);
	struct scoreboard_totals t;

	if (now - s->admission_logged_ms < ADMISSION_LOG_INTERVAL_MS)
		return;
	scoreboard_totals(&s->scoreboard, &t);
	if (t.refused != s->refused_logged)
		log_notice(
		    "refused %llu connection(s) from sources over MaxConnectionsPerSource=%u "
		    "(%llu in all)",
		    (unsigned long long)(t.refused - s->refused_logged),
		    c->max_connections_per_source, (unsigned long long)t.refused);
	if (t.accept_pauses != s->pauses_logged)
		log_notice("ConnectionRateLimit=%u reached: accepting paused %llu time(s); "
			   "new clients wait in the listen backlog",
			   c->connection_rate_limit,
			   (unsigned long long)(t.accept_pauses - s->pauses_logged));
	if (t.refused != s->refused_logged || t.accept_pauses != s->pauses_logged)
		s->admission_logged_ms = now;
	s->refused_logged = t.refused;
	s->pauses_logged = t.accept_pauses;
}
