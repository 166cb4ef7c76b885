/* report.c: the three renderings of one snapshot agree on its numbers;
 * the JSON is escaped, the metrics named as each format wants. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"

static struct scoreboard_snapshot_slot slots[2];

static struct scoreboard_snapshot
snapshot(void)
{
	struct scoreboard_snapshot s = {
	    .supervisor = 42,
	    .model = "passfd",
	    .generation = 3,
	    .now_usec = 10000000,
	    .started_usec = 4000000,
	    .max_connections = 200,
	    .reserved = 50,
	    .accept_queue = 7,
	    .accept_queue_max = 128,
	    .reloads_ok = 2,
	    .reloads_failed = 1,
	    .kept_back = 9,
	    .totals = {.workers_running = 2, .active = 50, .served = 1234, .bytes_in = 5555,
		       .bytes_out = 5554, .lost = 3, .refused = 6, .refused_access = 1, .refused_proxy = 2,
		       .accept_pauses = 5,
		       .dgrams_in = 60, .dgrams_out = 50, .dgrams_dropped = 10,
		       .dropped = {[DROP_PORT] = 1, [DROP_ACCESS] = 2, [DROP_RATELIMIT] = 9}},
	    .n_slots = 2,
	    .slots = slots,
	};
	slots[0] = (struct scoreboard_snapshot_slot){
	    .index = 1, .s = {.pid = 100, .state = SLOT_RUNNING, .generation = 3, .active = 20,
			      .served = 1000, .started_usec = 9000000, .watching = WATCHING_ALONE}};
	slots[1] = (struct scoreboard_snapshot_slot){
	    .index = 5, .s = {.pid = 101, .state = SLOT_DRAINING, .generation = 2, .active = 30,
			      .served = 234, .dgrams_dropped = {[DROP_RATELIMIT] = 9}}};
	return s;
}

static char *
render(int (*fn)(FILE *, const struct scoreboard_snapshot *), const struct scoreboard_snapshot *s)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	assert_int_equal(fn(f, s), 0);
	fclose(f);
	return buf;
}

static int
metrics_prom(FILE *f, const struct scoreboard_snapshot *s)
{
	return report_metrics(f, s, false, "1.2.3");
}

static int
metrics_om(FILE *f, const struct scoreboard_snapshot *s)
{
	return report_metrics(f, s, true, "1.2.3");
}

static void
test_text(void **state)
{
	struct scoreboard_snapshot s = snapshot();
	char *t = render(report_text, &s);

	assert_non_null(strstr(t, "echod passfd model, generation 3, supervisor pid 42, up 6 s"));
	assert_non_null(strstr(t, "    1      100    3 running   alone        20       1000"));
	assert_non_null(strstr(t, "    5      101    2 draining  no           30        234"));
	assert_non_null(strstr(t, "connections: 50 active, 50 of MaxConnections=200 reserved (25%)"));
	assert_non_null(strstr(t, "accept queue: 7 waiting (room for 128)"));
	assert_non_null(strstr(t, "6 refused (3 over MaxConnectionsPerSource=, 1 by AllowFrom=/DenyFrom=, "
				  "2 PROXY: untrusted or bad header), 3 lost (fd limit)"));
	assert_non_null(strstr(t, "source_port 1, source_address 0, truncated 0, access_list 2, rate_limit 9"));
	assert_non_null(strstr(t, "reloads: 2 ok, 1 failed; kept connections taken back: 9"));
	free(t);
}

static void
test_json(void **state)
{
	struct scoreboard_snapshot s = snapshot();
	char *j;

	/* Not a name echod writes, but the bytes came from another process. */
	strcpy(s.model, "a\"b\\c\n");
	j = render(report_json, &s);
	assert_true(strncmp(j, "{\"model\":\"a\\\"b\\\\c\\u000a\",", 24) == 0);
	assert_non_null(strstr(j, "{\"slot\":5,\"pid\":101,\"generation\":2,\"state\":\"draining\","
				  "\"accepts\":\"no\",\"active\":30,\"served\":234,"));
	assert_non_null(strstr(j, "\"state\":\"running\",\"accepts\":\"alone\","));
	assert_non_null(strstr(j, "\"datagrams_dropped\":9,"));
	assert_non_null(strstr(j, "\"max_connections\":200,\"reserved\":50,\"active\":50,"));
	assert_non_null(strstr(j, "\"datagrams_dropped\":{\"source_port\":1,\"source_address\":0,"
				  "\"truncated\":0,\"access_list\":2,\"rate_limit\":9,\"send_failed\":0}"));
	assert_non_null(strstr(j, "\"refused\":6,\"refused_access\":1,\"refused_proxy\":2,\"lost\":3,"));
	assert_non_null(strstr(j, "\"reloads_ok\":2,\"reloads_failed\":1,\"kept_taken_back\":9}\n"));
	assert_int_equal(strchr(j, '\n') - j + 1, strlen(j)); /* one line */
	free(j);
}

static void
test_metrics_formats(void **state)
{
	struct scoreboard_snapshot s = snapshot();
	char *p = render(metrics_prom, &s), *o = render(metrics_om, &s);

	assert_non_null(strstr(p, "# TYPE echod_connections_total counter\n"));
	assert_non_null(strstr(o, "# TYPE echod_connections counter\n"));
	assert_non_null(strstr(p, "# HELP echod_connections_total "));
	assert_null(strstr(p, "# EOF"));
	assert_string_equal(o + strlen(o) - 6, "# EOF\n");
	for (char *m = p; m; m = m == p ? o : NULL) {
		assert_non_null(strstr(m, "echod_connections_total{result=\"served\"} 1234\n"));
		assert_non_null(strstr(m, "echod_connections_total{result=\"refused\"} 6\n"));
		assert_non_null(strstr(m, "echod_connections_total{result=\"lost\"} 3\n"));
		assert_non_null(
		    strstr(m, "echod_connections_refused_total{reason=\"per_source_limit\"} 3\n"));
		assert_non_null(
		    strstr(m, "echod_connections_refused_total{reason=\"access_list\"} 1\n"));
		assert_non_null(
		    strstr(m, "echod_connections_refused_total{reason=\"proxy\"} 2\n"));
		assert_non_null(strstr(m, "echod_connections_active 50\n"));
		assert_non_null(strstr(m, "echod_worker_connections_active{worker=\"5\",pid=\"101\"} 30\n"));
		assert_non_null(strstr(m, "echod_workers{state=\"draining\"} 1\n"));
		assert_non_null(strstr(m, "echod_bytes_total{direction=\"out\"} 5554\n"));
		assert_non_null(strstr(m, "echod_datagrams_dropped_total{reason=\"rate_limit\"} 9\n"));
		assert_non_null(strstr(m, "echod_reloads_total{result=\"failed\"} 1\n"));
		assert_non_null(strstr(m, "echod_build_info{version=\"1.2.3\",model=\"passfd\"} 1\n"));
		/* A gauge is never named _total, in either format. */
		assert_non_null(strstr(m, "# TYPE echod_connections_active gauge\n"));
	}
	free(p);
	free(o);
}

/* A full stream is an error, not a short answer passed off as whole. */
static void
test_write_error(void **state)
{
	struct scoreboard_snapshot s = snapshot();
	FILE *f = fopen("/dev/full", "w");

	assert_non_null(f);
	assert_int_equal(report_json(f, &s), -5 /* EIO */);
	fclose(f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_text),
	    cmocka_unit_test(test_json),
	    cmocka_unit_test(test_metrics_formats),
	    cmocka_unit_test(test_write_error),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
