/* What `echod status`, `echod status --json` and GET /metrics print: one
 * scoreboard snapshot, three renderings, so that the three can never
 * disagree about a number. Mechanism: writes to the stream it is given and
 * returns 0, or -EIO when the stream failed. */
#pragma once

#include <stdbool.h>
#include <stdio.h>

#include "scoreboard.h"

/* The name of each datagram drop reason, as the label and key use it. */
const char *report_drop_reason(enum scoreboard_drop d);

/* For a person: one line per process, then the totals. */
int report_text(FILE *f, const struct scoreboard_snapshot *snap);
/* One JSON object (see echod(8) for the keys). */
int report_json(FILE *f, const struct scoreboard_snapshot *snap);
/* The Prometheus text format; openmetrics: the OpenMetrics one (its
 * counters named without _total in # TYPE, and # EOF at the end). */
int report_metrics(FILE *f, const struct scoreboard_snapshot *snap, bool openmetrics,
		   const char *version);
