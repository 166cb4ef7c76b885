/* config.c and options.c: every key from a file, every kind of bad input
 * with its file:line message, and the command line on top of the file. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "config.h"
#include "options.h"
#include "privdrop.h"

#define TMP_TEMPLATE "/tmp/echod-test-config-XXXXXX"

/* Writes text to a new temporary file; path receives its name. */
static void
write_file(char path[static sizeof(TMP_TEMPLATE)], const char *text)
{
	size_t len = strlen(text);
	int fd;

	memcpy(path, TMP_TEMPLATE, sizeof(TMP_TEMPLATE));
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

/* Loads text as a configuration file on top of c. */
static int
load_text(struct config *c, const char *text, char path[static sizeof(TMP_TEMPLATE)],
	  struct config_error *err)
{
	int r;

	write_file(path, text);
	r = config_load_file(c, path, err);
	assert_int_equal(unlink(path), 0);
	return r;
}

/* --- defaults and good files --- */

static void
test_defaults(void **state)
{
	struct config c;

	memset(&c, 0xa5, sizeof(c));
	config_init(&c);
	assert_int_equal(c.model, MODEL_PREFORK);
	assert_int_equal(c.workers, 0);
	assert_int_equal(c.worker_connections, 0); /* auto */
	assert_int_equal(c.max_connections, 0);
	assert_int_equal(c.idle_timeout_sec, 300);
	assert_int_equal(c.shutdown_timeout_sec, 10);
	assert_int_equal(c.datagram_rate_limit, 1000);
	assert_int_equal(c.log_level, LOG_INFO);
	assert_int_equal(c.n_listen, 0);
	assert_string_equal(model_to_string(c.model), "prefork");
	assert_string_equal(model_to_string(MODEL_PASSFD), "passfd");
	assert_string_equal(model_to_string(MODEL_FORK), "fork");
	config_done(&c);
}

static void
test_every_key(void **state)
{
	static const char text[] = "# echod test configuration\n"
				   "; both comment characters\n"
				   "\n"
				   "[echod]\n"
				   "Model=passfd\n"
				   "Workers=3\n"
				   "WorkerConnections=17\n"
				   "MaxConnections=40\n"
				   "IdleTimeoutSec=0\n"
				   "ShutdownTimeoutSec=25\n"
				   "LogLevel=debug\n"
				   "DatagramRateLimit=0\n"
				   "MaxConnectionsPerSource=8\n"
				   "ConnectionRateLimit=100\n"
				   "DeferAcceptSec=5\n"
				   "Listen=127.0.0.1:7007\n"
				   "Listen = [::1]:7007\n"
				   "Listen=udp:127.0.0.1:7007\n"
				   "Listen=unix:/run/echod.sock\n";
	char path[sizeof(TMP_TEMPLATE)];
	struct config_error err = {{0}};
	struct config c;

	config_init(&c);
	assert_int_equal(load_text(&c, text, path, &err), 0);
	assert_int_equal(c.model, MODEL_PASSFD);
	assert_int_equal(c.workers, 3);
	assert_int_equal(c.worker_connections, 17);
	assert_int_equal(c.max_connections, 40);
	assert_int_equal(c.idle_timeout_sec, 0);
	assert_int_equal(c.shutdown_timeout_sec, 25);
	assert_int_equal(c.log_level, LOG_DEBUG);
	assert_int_equal(c.datagram_rate_limit, 0);
	assert_int_equal(c.max_connections_per_source, 8);
	assert_int_equal(c.connection_rate_limit, 100);
	assert_int_equal(c.defer_accept_sec, 5);
	assert_int_equal(c.n_listen, 4);
	assert_string_equal(c.listen[0], "127.0.0.1:7007");
	assert_string_equal(c.listen[1], "[::1]:7007");
	assert_string_equal(c.listen[2], "udp:127.0.0.1:7007");
	assert_string_equal(c.listen[3], "unix:/run/echod.sock");
	config_done(&c);
}

static void
test_limits_and_case(void **state)
{
	/* The bounds themselves are accepted; keys and names ignore case. */
	static const char text[] = "[ECHOD]\n"
				   "model=FORK\n"
				   "workers=1024\n"
				   "workerconnections=1048576\n"
				   "MaxConnections=16777216\n"
				   "IdleTimeoutSec=86400\n"
				   "ShutdownTimeoutSec=3600\n"
				   "DatagramRateLimit=10000000\n"
				   "maxconnectionspersource=16777216\n"
				   "ConnectionRateLimit=10000000\n"
				   "DeferAcceptSec=3600\n"
				   "LogLevel=ERR\n";
	char path[sizeof(TMP_TEMPLATE)];
	struct config_error err = {{0}};
	struct config c;

	config_init(&c);
	assert_int_equal(load_text(&c, text, path, &err), 0);
	assert_int_equal(c.model, MODEL_FORK);
	assert_int_equal(c.workers, 1024);
	assert_int_equal(c.worker_connections, 1048576);
	assert_int_equal(c.max_connections, 16777216);
	assert_int_equal(c.idle_timeout_sec, 86400);
	assert_int_equal(c.shutdown_timeout_sec, 3600);
	assert_int_equal(c.datagram_rate_limit, 10000000);
	assert_int_equal(c.max_connections_per_source, 16777216);
	assert_int_equal(c.connection_rate_limit, 10000000);
	assert_int_equal(c.defer_accept_sec, 3600);
	assert_int_equal(c.log_level, LOG_ERR);
	config_done(&c);
}

static void
test_workers_auto(void **state)
{
	char path[sizeof(TMP_TEMPLATE)];
	struct config_error err = {{0}};
	struct config c;

	config_init(&c);
	c.workers = 7;
	assert_int_equal(load_text(&c, "[echod]\nWorkers=auto\n", path, &err), 0);
	assert_int_equal(c.workers, 0);
	assert_int_equal(load_text(&c, "[echod]\nWorkers=5\nWorkers=AUTO\n", path, &err), 0);
	assert_int_equal(c.workers, 0);
	config_done(&c);
}

static void
test_listen_reset(void **state)
{
	static const char text[] = "[echod]\n"
				   "Listen=127.0.0.1:1\n"
				   "Listen=127.0.0.1:2\n"
				   "Listen=\n"
				   "Listen=udp:[::1]:3\n";
	char path[sizeof(TMP_TEMPLATE)];
	struct config_error err = {{0}};
	struct config c;

	config_init(&c);
	assert_int_equal(load_text(&c, text, path, &err), 0);
	assert_int_equal(c.n_listen, 1);
	assert_string_equal(c.listen[0], "udp:[::1]:3");
	/* A reset at the end leaves nothing. */
	assert_int_equal(load_text(&c, "[echod]\nListen=\n", path, &err), 0);
	assert_int_equal(c.n_listen, 0);
	config_done(&c);
}

static void
test_comments(void **state)
{
	/* Commented-out lines would be errors if they were read. */
	static const char text[] = "# Model=bogus\n"
				   "; Workers=0\n"
				   "[echod]\n"
				   "#Colour=blue\n"
				   ";IdleTimeoutSec=-1\n"
				   "  # indented comment\n"
				   "\t; indented comment\n"
				   "Workers=4\n"
				   "Model=fork\n";
	char path[sizeof(TMP_TEMPLATE)];
	struct config_error err = {{0}};
	struct config c;

	config_init(&c);
	assert_int_equal(load_text(&c, text, path, &err), 0);
	assert_int_equal(c.workers, 4);
	assert_int_equal(c.model, MODEL_FORK);
	assert_int_equal(c.idle_timeout_sec, 300);
	config_done(&c);
}

/* Blanks around each part are ignored; an indented Key=value is one, not
 * a continuation; '#' and ';' inside a value (no blank before) are kept. */
static void
test_grammar_blanks(void **state)
{
	static const char text[] = "\xEF\xBB\xBF  [echod]  \r\n"
				   "  Workers = 3\r\n"
				   "\tModel=\tfork \n"
				   "Listen=unix:/run/a;b#c\n";
	char path[sizeof(TMP_TEMPLATE)];
	struct config_error err = {{0}};
	struct config c;

	config_init(&c);
	assert_int_equal(load_text(&c, text, path, &err), 0);
	assert_int_equal(c.workers, 3);
	assert_int_equal(c.model, MODEL_FORK);
	assert_int_equal(c.n_listen, 1);
	assert_string_equal(c.listen[0], "unix:/run/a;b#c");
	config_done(&c);
}

/* User= and Group= take names or numbers; copied; empty: stay as started. */
static void
test_user_group(void **state)
{
	char path[sizeof(TMP_TEMPLATE)];
	struct config_error err = {{0}};
	struct config c, d;

	config_init(&c);
	config_init(&d);
	assert_int_equal(load_text(&c, "[echod]\nUser=root\nGroup=0\n", path, &err), 0);
	assert_string_equal(c.user, "root");
	assert_string_equal(c.group, "0");
	assert_int_equal(config_copy(&d, &c), 0);
	assert_string_equal(d.user, "root");
	assert_ptr_not_equal(d.user, c.user);
	assert_int_equal(load_text(&c, "[echod]\nUser=\nGroup=\n", path, &err), 0);
	assert_null(c.user);
	assert_null(c.group);
	/* SocketMode=: octal, 3 or 4 digits; empty: the umask decides. */
	assert_int_equal(c.socket_mode, -1);
	assert_int_equal(load_text(&c, "[echod]\nSocketMode=660\n", path, &err), 0);
	assert_int_equal(c.socket_mode, 0660);
	assert_int_equal(load_text(&c, "[echod]\nSocketMode=0600\n", path, &err), 0);
	assert_int_equal(c.socket_mode, 0600);
	assert_int_equal(load_text(&c, "[echod]\nSocketMode=\n", path, &err), 0);
	assert_int_equal(c.socket_mode, -1);
	config_done(&c);
	config_done(&d);
}

/* An empty value sets any key back to its default; lists become empty. */
static void
test_empty_resets(void **state)
{
	static const char text[] = "[echod]\n"
				   "Model=fork\nModel=\n"
				   "Workers=3\nWorkers=\n"
				   "MaxConnections=5\nMaxConnections=\n"
				   "IdleTimeoutSec=7\nIdleTimeoutSec=\n"
				   "LogLevel=debug\nLogLevel=\n"
				   "AllowFrom=192.0.2.0/24\nDenyFrom=192.0.2.1\nDenyFrom=\n"
				   "MetricsListen=127.0.0.1:9707\nMetricsListen=\n";
	char path[sizeof(TMP_TEMPLATE)];
	struct config_error err = {{0}};
	struct config c;

	config_init(&c);
	assert_int_equal(load_text(&c, text, path, &err), 0);
	assert_int_equal(c.model, MODEL_PREFORK);
	assert_int_equal(c.workers, 0);
	assert_int_equal(c.max_connections, 0);
	assert_int_equal(c.idle_timeout_sec, 300);
	assert_int_equal(c.log_level, LOG_INFO);
	assert_int_equal(c.access.n_allow, 1);
	assert_int_equal(c.access.n_deny, 0);
	assert_null(c.metrics_listen);
	assert_int_equal(load_text(&c, "[echod]\nAllowFrom=\n", path, &err), 0);
	assert_false(access_list_active(&c.access));
	config_done(&c);
}

static void
assert_default_config(const struct config *c)
{
	struct config d;

	config_init(&d);
	assert_int_equal(c->model, d.model);
	assert_int_equal(c->workers, d.workers);
	assert_int_equal(c->worker_connections, d.worker_connections);
	assert_int_equal(c->max_connections, d.max_connections);
	assert_int_equal(c->idle_timeout_sec, d.idle_timeout_sec);
	assert_int_equal(c->shutdown_timeout_sec, d.shutdown_timeout_sec);
	assert_int_equal(c->datagram_rate_limit, d.datagram_rate_limit);
	assert_int_equal(c->max_connections_per_source, d.max_connections_per_source);
	assert_int_equal(c->connection_rate_limit, d.connection_rate_limit);
	assert_int_equal(c->defer_accept_sec, d.defer_accept_sec);
	assert_int_equal(c->log_level, d.log_level);
	assert_int_equal(c->n_listen, 0);
	assert_false(access_list_active(&c->access));
	assert_null(c->metrics_listen);
	assert_null(c->user);
	assert_null(c->group);
	assert_int_equal(c->socket_mode, d.socket_mode);
	config_done(&d);
}

/* The shipped etc/echod.conf shows every key commented out with its
 * default: as shipped it means the defaults, and so it does with each
 * "#Key=value" line uncommented. */
static void
test_shipped_file_round_trips(void **state)
{
	static const char *const keys[] = {
	    "Model", "Workers", "WorkerConnections", "MaxConnections", "IdleTimeoutSec",
	    "ShutdownTimeoutSec", "LogLevel", "DatagramRateLimit", "MaxConnectionsPerSource",
	    "AllowFrom", "DenyFrom", "ConnectionRateLimit", "DeferAcceptSec", "Listen",
	    "ProxyListen", "ProxyFrom", "ProxyHeaderTimeoutSec", "MetricsListen", "SocketMode",
	    "User", "Group",
	};
	char path[sizeof(TMP_TEMPLATE)], line[512];
	struct config_error err = {{0}};
	char *text = NULL;
	size_t size = 0, n_uncommented = 0;
	struct config c;
	FILE *in, *out;

	in = fopen(SHIPPED_CONF, "re");
	assert_non_null(in);
	out = open_memstream(&text, &size);
	assert_non_null(out);
	while (fgets(line, sizeof(line), in)) {
		size_t key = strspn(line + 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");

		if (line[0] == '#' && key > 0 && line[1 + key] == '=') {
			fputs(line + 1, out);
			n_uncommented++;
		} else
			fputs(line, out);
	}
	assert_false(ferror(in));
	fclose(in);
	assert_int_equal(fclose(out), 0);

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		char wanted[64];

		snprintf(wanted, sizeof(wanted), "\n%s=", keys[i]);
		if (!strstr(text, wanted))
			fail_msg("%s has no #%s= line", SHIPPED_CONF, keys[i]);
	}
	assert_int_equal(n_uncommented, sizeof(keys) / sizeof(keys[0]));

	config_init(&c);
	assert_int_equal(config_load_file(&c, SHIPPED_CONF, &err), 0);
	assert_default_config(&c);
	config_done(&c);

	config_init(&c);
	if (load_text(&c, text, path, &err) != 0)
		fail_msg("uncommented %s: %s", SHIPPED_CONF, err.message);
	assert_default_config(&c);
	config_done(&c);
	free(text);
}

/* --dump-config's text reads back as the configuration it shows. */
static void
test_dump_reads_back(void **state)
{
	static const char text[] = "[echod]\nModel=passfd\nWorkers=3\nWorkerConnections=10\n"
				   "MaxConnections=20\nIdleTimeoutSec=0\nLogLevel=warn\n"
				   "AllowFrom=192.0.2.0/24 2001:db8::/32\nDenyFrom=192.0.2.1\n"
				   "DeferAcceptSec=2\nListen=127.0.0.1:7\nListen=unix:@x\n"
				   "MetricsListen=127.0.0.1:9707\nSocketMode=0640\n";
	char path[sizeof(TMP_TEMPLATE)];
	struct config_error err = {{0}};
	struct config a, b;
	char *dump = NULL;
	size_t size = 0;
	FILE *f;

	config_init(&a);
	config_init(&b);
	assert_int_equal(load_text(&a, text, path, &err), 0);
	f = open_memstream(&dump, &size);
	assert_int_equal(config_dump(f, &a), 0);
	assert_int_equal(fclose(f), 0);
	assert_non_null(strstr(dump, "\nWorkers=3\n"));
	assert_non_null(strstr(dump, "\nLogLevel=warning\n"));
	/* Set to their defaults first: the dump must say every key. */
	b.model = MODEL_FORK;
	b.workers = 9;
	b.shutdown_timeout_sec = 1;
	if (load_text(&b, dump, path, &err) != 0)
		fail_msg("%s\n%s", err.message, dump);
	assert_int_equal(b.model, MODEL_PASSFD);
	assert_int_equal(b.workers, 3);
	assert_int_equal(b.worker_connections, 10);
	assert_int_equal(b.max_connections, 20);
	assert_int_equal(b.idle_timeout_sec, 0);
	assert_int_equal(b.shutdown_timeout_sec, 10);
	assert_int_equal(b.log_level, LOG_WARNING);
	assert_int_equal(b.access.n_allow, 2);
	assert_int_equal(b.access.n_deny, 1);
	assert_int_equal(b.defer_accept_sec, 2);
	assert_int_equal(b.n_listen, 2);
	assert_string_equal(b.listen[1], "unix:@x");
	assert_string_equal(b.metrics_listen, "127.0.0.1:9707");
	assert_int_equal(b.socket_mode, 0640);
	free(dump);
	config_done(&a);
	config_done(&b);
}

/* Fork runs no pool: its dump comments the pool's keys out. */
static void
test_dump_fork(void **state)
{
	struct config c;
	char *dump = NULL;
	size_t size = 0;
	FILE *f;

	config_init(&c);
	c.model = MODEL_FORK;
	c.workers = 4;
	f = open_memstream(&dump, &size);
	assert_int_equal(config_dump(f, &c), 0);
	assert_int_equal(fclose(f), 0);
	assert_non_null(strstr(dump, "no worker pool"));
	assert_non_null(strstr(dump, "\n#Workers=4\n"));
	assert_non_null(strstr(dump, "\n#WorkerConnections=auto\n"));
	assert_null(strstr(dump, "\nWorkers="));
	assert_non_null(strstr(dump, "# in effect: 1024"));
	free(dump);
	config_done(&c);
}

struct notes {
	unsigned n;
	char last[CONFIG_NOTE_MAX];
};

static void
collect_note(void *userdata, const char *note)
{
	struct notes *n = userdata;

	n->n++;
	snprintf(n->last, sizeof(n->last), "%s", note);
}

/* A MaxConnections= the workers cannot hold is named, with the cap. */
static void
test_notes(void **state)
{
	struct notes n = {0};
	char buf[128];
	struct config c;

	config_init(&c);
	c.workers = 2;
	c.worker_connections = 100;
	config_notes(&c, collect_note, &n);
	assert_int_equal(n.n, 0);
	c.max_connections = 200;
	config_notes(&c, collect_note, &n);
	assert_int_equal(n.n, 0);
	c.max_connections = 201;
	config_notes(&c, collect_note, &n);
	assert_int_equal(n.n, 1);
	assert_string_equal(n.last, "MaxConnections=201 is more than Workers x WorkerConnections "
				    "(2 x 100): capped at 200");
	assert_int_equal(config_max_connections(&c), 200);
	/* Fork: the cap is the key itself; the pool's keys are unused. */
	c.model = MODEL_FORK;
	config_notes(&c, collect_note, &n);
	assert_int_equal(n.n, 2);
	assert_non_null(strstr(n.last, "Model=fork runs no worker pool"));
	assert_int_equal(config_max_connections(&c), 201);

	assert_int_equal(config_activation_ignored(&c, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "");
	assert_int_equal(config_set(&c, "Listen", "127.0.0.1:7", "x", NULL), 0);
	assert_int_equal(config_activation_ignored(&c, buf, sizeof(buf)), 1);
	assert_string_equal(buf, "Listen= (1 address)");
	c.defer_accept_sec = 5;
	assert_int_equal(config_activation_ignored(&c, buf, sizeof(buf)), 2);
	assert_string_equal(buf, "Listen= (1 address), DeferAcceptSec=5");
	config_done(&c);
}

static void
test_file_overrides_only_its_keys(void **state)
{
	char path[sizeof(TMP_TEMPLATE)];
	struct config_error err = {{0}};
	struct config c;

	config_init(&c);
	c.idle_timeout_sec = 5;
	c.worker_connections = 9;
	assert_int_equal(load_text(&c, "[echod]\nIdleTimeoutSec=6\n", path, &err), 0);
	assert_int_equal(c.idle_timeout_sec, 6);
	assert_int_equal(c.worker_connections, 9);
	config_done(&c);
}

static void
test_copy(void **state)
{
	struct config_error err = {{0}};
	struct config a, b;

	config_init(&a);
	config_init(&b);
	assert_int_equal(config_set(&a, "Listen", "127.0.0.1:1", "test", &err), 0);
	assert_int_equal(config_set(&a, "Listen", "unix:@x", "test", &err), 0);
	assert_int_equal(config_set(&a, "Workers", "2", "test", &err), 0);
	assert_int_equal(config_set(&a, "AllowFrom", "192.0.2.0/24 ::1", "test", &err), 0);
	assert_int_equal(config_set(&a, "DenyFrom", "192.0.2.9", "test", &err), 0);
	assert_int_equal(config_set(&b, "Listen", "127.0.0.1:9", "test", &err), 0);
	assert_int_equal(config_set(&b, "DenyFrom", "198.51.100.0/24", "test", &err), 0);
	assert_int_equal(config_copy(&b, &a), 0);
	assert_int_equal(b.access.n_allow, 2);
	assert_int_equal(b.access.n_deny, 1);
	assert_ptr_not_equal(b.access.allow, a.access.allow);
	assert_int_equal(b.workers, 2);
	assert_int_equal(b.n_listen, 2);
	/* A deep copy: the strings are b's own. */
	assert_ptr_not_equal(b.listen[0], a.listen[0]);
	assert_string_equal(b.listen[0], "127.0.0.1:1");
	assert_string_equal(b.listen[1], "unix:@x");
	config_done(&a);
	assert_string_equal(b.listen[1], "unix:@x");
	config_done(&b);
}

/* --- bad files: each one message naming file, line and key --- */

struct bad_file {
	const char *text;
	int error;	     /* expected return value */
	const char *message; /* after "PATH:" */
};

static const struct bad_file bad_unknown_key = {"[echod]\nModel=fork\nColour=blue\n", -EINVAL,
						"3: unknown key \"Colour\""};
static const struct bad_file bad_number = {"[echod]\nWorkerConnections=12x\n", -EINVAL,
					   "2: WorkerConnections=12x: not a whole number or \"auto\""};
static const struct bad_file bad_number_space = {"[echod]\nMaxConnections=1 000\n", -EINVAL,
						 "2: MaxConnections=1 000: not a whole number"};
static const struct bad_file bad_negative = {"[echod]\nShutdownTimeoutSec=-5\n", -EINVAL,
					     "2: ShutdownTimeoutSec=-5: not a whole number"};
static const struct bad_file bad_plus = {"[echod]\nIdleTimeoutSec=+5\n", -EINVAL,
					 "2: IdleTimeoutSec=+5: not a whole number"};
static const struct bad_file bad_below_min = {"[echod]\nWorkerConnections=0\n", -EINVAL,
					      "2: WorkerConnections=0: out of range (1..1048576 or auto)"};
static const struct bad_file bad_max_connections_zero = {
    "[echod]\nMaxConnections=0\n", -EINVAL, "2: MaxConnections=0: out of range (1..16777216)"};
static const struct bad_file bad_above_max = {"[echod]\nIdleTimeoutSec=86401\n", -EINVAL,
					      "2: IdleTimeoutSec=86401: out of range (0..86400)"};
static const struct bad_file bad_rate_above_max = {
    "[echod]\nDatagramRateLimit=10000001\n", -EINVAL,
    "2: DatagramRateLimit=10000001: out of range (0..10000000)"};
static const struct bad_file bad_per_source_above_max = {
    "[echod]\nMaxConnectionsPerSource=16777217\n", -EINVAL,
    "2: MaxConnectionsPerSource=16777217: out of range (0..16777216)"};
static const struct bad_file bad_connection_rate_word = {
    "[echod]\nConnectionRateLimit=fast\n", -EINVAL,
    "2: ConnectionRateLimit=fast: not a whole number"};
static const struct bad_file bad_defer_accept_above_max = {
    "[echod]\nDeferAcceptSec=3601\n", -EINVAL,
    "2: DeferAcceptSec=3601: out of range (0..3600)"};
static const struct bad_file bad_overflow = {
    "[echod]\nShutdownTimeoutSec=99999999999999999999999\n", -EINVAL,
    "2: ShutdownTimeoutSec=99999999999999999999999: out of range (0..3600)"};
static const struct bad_file bad_workers_zero = {"[echod]\nWorkers=0\n", -EINVAL,
						 "2: Workers=0: out of range (1..1024 or auto)"};
static const struct bad_file bad_workers_many = {"[echod]\nWorkers=1025\n", -EINVAL,
						 "2: Workers=1025: out of range (1..1024 or auto)"};
static const struct bad_file bad_workers_word = {"[echod]\nWorkers=all\n", -EINVAL,
						 "2: Workers=all: not a whole number or \"auto\""};
static const struct bad_file bad_model = {
    "[echod]\nModel=threads\n", -EINVAL,
    "2: Model=threads: unknown model (prefork, passfd or fork)"};
static const struct bad_file bad_log_level = {
    "[echod]\nLogLevel=loud\n", -EINVAL,
    "2: LogLevel=loud: unknown level (err, warning, notice, info or debug)"};
static const struct bad_file bad_log_level_crit = {
    "[echod]\nLogLevel=crit\n", -EINVAL,
    "2: LogLevel=crit: unknown level (err, warning, notice, info or debug)"};
static const struct bad_file bad_listen = {"[echod]\nListen=127.0.0.1:7\nListen=localhost:7\n",
					   -EINVAL,
					   "3: Listen=localhost:7: not a numeric IPv4 address"};
static const struct bad_file bad_listen_port = {"[echod]\nListen=udp:127.0.0.1\n", -EINVAL,
						"2: Listen=udp:127.0.0.1: expected ADDRESS:PORT"};
static const struct bad_file bad_allow_from = {
    "[echod]\nAllowFrom=127.0.0.0/8\nAllowFrom=10.0.0.0/8 10.1.0.0/8\n", -EINVAL,
    "3: AllowFrom=10.0.0.0/8 10.1.0.0/8: \"10.1.0.0/8\": address bits set beyond the /8 "
    "prefix (write the network's first address, or the address alone)"};
static const struct bad_file bad_deny_from_name = {
    "[echod]\nDenyFrom=localhost\n", -EINVAL,
    "2: DenyFrom=localhost: \"localhost\": not an IPv4 or IPv6 address"};
static const struct bad_file bad_outside_section = {
    "Model=fork\n[echod]\nWorkers=2\n", -EINVAL,
    "1: Model=fork: key outside of the [echod] section"};
static const struct bad_file bad_section = {"[echod]\nModel=fork\n[other]\nWorkers=2\n", -EINVAL,
					    "4: unknown section [other]"};
static const struct bad_file bad_syntax = {"[echod]\nModel=fork\nWorkers\n", -EINVAL,
					   "3: syntax error: expected [echod] or Key=value"};
static const struct bad_file bad_syntax_section = {
    "[echod\nModel=fork\n", -EINVAL, "1: syntax error: expected [echod] or Key=value"};
static const struct bad_file bad_value_then_syntax = {
    "[echod]\nModel=nope\nWorkers\n", -EINVAL,
    "2: Model=nope: unknown model (prefork, passfd or fork)"};
static const struct bad_file bad_line_count = {
    "# one\n\n; three\n[echod]\n\nModel=fork\n   \nModel=nope\n", -EINVAL,
    "8: Model=nope: unknown model (prefork, passfd or fork)"};

/* The grammar (echod.conf(5), "SYNTAX"): what inih would take and we do not. */
static const struct bad_file bad_continuation = {
    "[echod]\nWorkers=3\n  5\n", -EINVAL,
    "3: syntax error: expected [echod] or Key=value (an indented line does not continue the "
    "previous one)"};
static const struct bad_file bad_colon = {
    "[echod]\nWorkers: 3\n", -EINVAL,
    "2: syntax error: expected [echod] or Key=value (the separator is '=', not ':')"};
static const struct bad_file bad_colon_then_equals = {
    "[echod]\nListen: unix:/a=b\n", -EINVAL,
    "2: syntax error: expected [echod] or Key=value (the separator is '=', not ':')"};
static const struct bad_file bad_inline_semicolon = {
    "[echod]\nWorkers=3 ; note\n", -EINVAL,
    "2: Workers=3 ; note: a ';' after a value starts no comment (comments go on lines of "
    "their own)"};
static const struct bad_file bad_inline_hash = {
    "[echod]\nWorkers=3\t# note\n", -EINVAL,
    "2: Workers=3\t# note: a '#' after a value starts no comment (comments go on lines of "
    "their own)"};
static const struct bad_file bad_section_comment = {
    "[echod] # main\nWorkers=3\n", -EINVAL,
    "1: syntax error: text after the section's ']' (comments go on lines of their own)"};
static const struct bad_file bad_no_key = {
    "[echod]\n=3\n", -EINVAL, "2: syntax error: expected [echod] or Key=value (no key before '=')"};
static const struct bad_file bad_key_chars = {
    "[echod]\nMax-Connections=3\n", -EINVAL,
    "2: syntax error: expected [echod] or Key=value (a key is letters and digits)"};
static const struct bad_file bad_user = {"[echod]\nUser=no-such-user-echod\n", -EINVAL,
					 "2: User=no-such-user-echod: no such user"};
static const struct bad_file bad_group = {"[echod]\nUser=root\nGroup=no-such-group-echod\n",
					  -EINVAL, "3: Group=no-such-group-echod: no such group"};
static const struct bad_file bad_socket_mode_digit = {
    "[echod]\nSocketMode=0689\n", -EINVAL,
    "2: SocketMode=0689: not an octal mode (such as 0660)"};
static const struct bad_file bad_socket_mode_setid = {
    "[echod]\nSocketMode=4755\n", -EINVAL,
    "2: SocketMode=4755: out of range (0000..0777: no set-id or sticky bits)"};
static const struct bad_file bad_empty_unknown = {"[echod]\nColour=\n", -EINVAL,
						  "2: unknown key \"Colour\""};

static void
test_bad_file(void **state)
{
	const struct bad_file *b = *state;
	char path[sizeof(TMP_TEMPLATE)], expected[sizeof(path) + 256];
	struct config_error err = {{0}};
	struct config c;

	config_init(&c);
	assert_int_equal(load_text(&c, b->text, path, &err), b->error);
	snprintf(expected, sizeof(expected), "%s:%s", path, b->message);
	assert_string_equal(err.message, expected);
	config_done(&c);
}

/* Without a name check (echod-forker's configuration), a name is kept as
 * it is: the supervisor checked it, and the lookup needs NSS. */
static void
test_unchecked_names(void **state)
{
	char path[sizeof(TMP_TEMPLATE)];
	struct config_error err = {{0}};
	struct config c;

	(void)state;
	config_check_names_with(NULL);
	config_init(&c);
	assert_int_equal(load_text(&c, "[echod]\nUser=no-such-user-echod\nGroup=no-such-group-echod\n",
				   path, &err),
			 0);
	assert_string_equal(c.user, "no-such-user-echod");
	assert_string_equal(c.group, "no-such-group-echod");
	config_done(&c);
	config_check_names_with(privdrop_name_exists);
}

/* inih reads lines into a fixed buffer (199 characters and the newline). */
static void
test_long_lines(void **state)
{
	char text[1024], path[sizeof(TMP_TEMPLATE)], expected[sizeof(path) + 128];
	struct config_error err = {{0}};
	struct config c;
	int n;

	config_init(&c);
	/* A long comment is skipped whole, and the lines after it keep their
	 * numbers. */
	n = snprintf(text, sizeof(text), "[echod]\n# %0300d\nModel=nope\n", 0);
	assert_true(n > 0 && (size_t)n < sizeof(text));
	assert_int_equal(load_text(&c, text, path, &err), -EINVAL);
	snprintf(expected, sizeof(expected),
		 "%s:3: Model=nope: unknown model (prefork, passfd or fork)", path);
	assert_string_equal(err.message, expected);

	/* 199 characters fit (here mostly spaces); the value is read whole. */
	snprintf(text, sizeof(text), "[echod]\nListen%*s=127.0.0.1:7\n", 181, "");
	assert_int_equal(strlen(strchr(text, '\n') + 1), 199 + 1);
	assert_int_equal(load_text(&c, text, path, &err), 0);
	assert_int_equal(c.n_listen, 1);
	assert_string_equal(c.listen[0], "127.0.0.1:7");

	/* One more would be cut short: an error, not a shorter value. */
	snprintf(text, sizeof(text), "[echod]\nListen=\nListen%*s=127.0.0.1:7\n", 182, "");
	assert_int_equal(load_text(&c, text, path, &err), -EINVAL);
	snprintf(expected, sizeof(expected), "%s:3: line too long (199 characters at most)", path);
	assert_string_equal(err.message, expected);
	assert_int_equal(c.n_listen, 0);
	config_done(&c);
}

/* A NUL byte is named as such, at its line, and the lines after it keep
 * their numbers (fgets() took it for the line's end). Read from memory,
 * through the same parser as a file. */
static void
test_nul_byte(void **state)
{
	static const char text[] = "[echod]\nLogLevel=debug\0junk\nWorkers=2\n";
	static const char later[] = "[echod]\n#\0\nWorkers=2\nModel=nope\n";
	struct config_error err = {{0}};
	struct config c;
	FILE *f;

	config_init(&c);
	f = fmemopen((void *)text, sizeof(text) - 1, "r");
	assert_non_null(f);
	assert_int_equal(config_load_stream(&c, f, "mem", &err), -EINVAL);
	fclose(f);
	assert_string_equal(err.message, "mem:2: NUL byte in line (not a text file?)");
	assert_int_equal(c.workers, 0);

	f = fmemopen((void *)later, sizeof(later) - 1, "r");
	assert_non_null(f);
	assert_int_equal(config_load_stream(&c, f, "mem", &err), -EINVAL);
	fclose(f);
	assert_string_equal(err.message, "mem:2: NUL byte in line (not a text file?)");
	config_done(&c);
}

static void
test_missing_file(void **state)
{
	char path[sizeof(TMP_TEMPLATE)], expected[sizeof(path) + 64];
	struct config_error err = {{0}};
	struct config c;

	write_file(path, "");
	assert_int_equal(unlink(path), 0);
	config_init(&c);
	assert_int_equal(config_load_file(&c, path, &err), -ENOENT);
	snprintf(expected, sizeof(expected), "%s: cannot read: No such file or directory", path);
	assert_string_equal(err.message, expected);
	config_done(&c);
}

static void
test_directory(void **state)
{
	char path[] = "/tmp/echod-test-config-dir-XXXXXX", expected[sizeof(path) + 64];
	struct config_error err = {{0}};
	struct config c;

	assert_non_null(mkdtemp(path));
	config_init(&c);
	assert_int_equal(config_load_file(&c, path, &err), -EINVAL);
	assert_int_equal(rmdir(path), 0);
	snprintf(expected, sizeof(expected), "%s: read error", path);
	assert_string_equal(err.message, expected);
	config_done(&c);
}

static void
test_empty_file(void **state)
{
	char path[sizeof(TMP_TEMPLATE)];
	struct config_error err = {{0}};
	struct config c;

	config_init(&c);
	assert_int_equal(load_text(&c, "", path, &err), 0);
	assert_int_equal(c.model, MODEL_PREFORK);
	config_done(&c);
}

/* --- resolved values --- */

static void
test_resolve_workers(void **state)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	struct config c;

	config_init(&c);
	assert_true(cpus >= 1);
	assert_int_equal(config_workers(&c), cpus > 1024 ? 1024 : cpus);
	c.workers = 3;
	assert_int_equal(config_workers(&c), 3);
	config_done(&c);
}

static void
test_resolve_max_connections(void **state)
{
	struct config c;

	config_init(&c);
	c.workers = 2;
	c.worker_connections = 10;
	/* Unset: what the workers can hold. */
	assert_int_equal(config_max_connections(&c), 20);
	c.max_connections = 5;
	assert_int_equal(config_max_connections(&c), 5);
	/* Never more than the workers can hold. */
	c.max_connections = 100;
	assert_int_equal(config_max_connections(&c), 20);
	c.model = MODEL_PASSFD;
	assert_int_equal(config_max_connections(&c), 20);

	/* fork: a cap on processes, 1024 unless set, whatever the workers hold. */
	c.model = MODEL_FORK;
	c.max_connections = 0;
	assert_int_equal(config_max_connections(&c), 1024);
	c.max_connections = 7;
	assert_int_equal(config_max_connections(&c), 7);
	c.max_connections = 5000;
	assert_int_equal(config_max_connections(&c), 5000);

	/* auto workers: CPUs x WorkerConnections. */
	c.model = MODEL_PREFORK;
	c.workers = 0;
	c.max_connections = 0;
	c.worker_connections = 3;
	assert_int_equal(config_max_connections(&c), config_workers(&c) * 3);
	config_done(&c);
}

/* WorkerConnections=auto: the fd limit a worker gets, less a reserve,
 * within the key's range; and an unset MaxConnections= no more than half
 * the fd store ($FDSTORE) when its size is known, so that a restart can
 * keep every connection. A value set by hand wins over both. */
static void
test_resolve_auto_worker_connections(void **state)
{
	struct config c;
	struct config_error err = {{0}};

	(void)state;
	config_init(&c);
	assert_int_equal(config_worker_connections_for(&c, 65536), 65536 - WORKER_FD_RESERVE);
	assert_int_equal(config_worker_connections_for(&c, 1024), 1024 - WORKER_FD_RESERVE);
	assert_int_equal(config_worker_connections_for(&c, 2 * WORKER_FD_RESERVE), WORKER_FD_RESERVE);
	assert_int_equal(config_worker_connections_for(&c, 2 * WORKER_FD_RESERVE - 2),
			 WORKER_FD_RESERVE - 1);
	assert_int_equal(config_worker_connections_for(&c, 64), 32);
	assert_int_equal(config_worker_connections_for(&c, 1), 1);
	assert_int_equal(config_worker_connections_for(&c, 0), 1);
	assert_int_equal(config_worker_connections_for(&c, UINT64_MAX), WORKER_CONNECTIONS_MAX);
	assert_int_equal(config_set(&c, "WorkerConnections", "AUTO", "test", &err), 0);
	assert_int_equal(c.worker_connections, 0);
	assert_int_equal(config_set(&c, "WorkerConnections", "100", "test", &err), 0);
	assert_int_equal(config_worker_connections_for(&c, 65536), 100);

	c.workers = 4;
	assert_int_equal(unsetenv("FDSTORE"), 0);
	assert_int_equal(config_fd_store_max(), 0);
	assert_int_equal(config_max_connections(&c), 400);
	assert_int_equal(setenv("FDSTORE", "300", 1), 0);
	assert_int_equal(config_fd_store_max(), 300);
	assert_int_equal(config_max_connections(&c), 150);
	/* Room for more than the workers hold: the workers decide. */
	assert_int_equal(setenv("FDSTORE", "65536", 1), 0);
	assert_int_equal(config_max_connections(&c), 400);
	/* Set by hand: the administrator decides (a restart above half the
	 * store drains, and says so). */
	assert_int_equal(setenv("FDSTORE", "300", 1), 0);
	c.max_connections = 390;
	assert_int_equal(config_max_connections(&c), 390);
	/* Not a size: unknown. */
	c.max_connections = 0;
	assert_int_equal(setenv("FDSTORE", "lots", 1), 0);
	assert_int_equal(config_fd_store_max(), 0);
	assert_int_equal(config_max_connections(&c), 400);
	assert_int_equal(unsetenv("FDSTORE"), 0);
	config_done(&c);
}

/* --- the command line --- */

#define ARGV(...)                                                                                  \
	(char *[])                                                                                 \
	{                                                                                          \
		"echod", __VA_ARGS__, NULL                                                         \
	}
#define ARGC(...) ((int)(sizeof(ARGV(__VA_ARGS__)) / sizeof(char *)) - 1)
#define PARSE(o, err, ...) options_parse(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), o, err)

static void
test_options_flags(void **state)
{
	struct config_error err = {{0}};
	struct options o;

	assert_int_equal(PARSE(&o, &err, "--help"), 0);
	assert_true(o.help);
	assert_false(o.version);
	assert_false(o.check_config);
	assert_null(o.config_path);
	assert_int_equal(o.n_settings, 0);

	assert_int_equal(PARSE(&o, &err, "-h"), 0);
	assert_true(o.help);

	assert_int_equal(PARSE(&o, &err, "--version"), 0);
	assert_true(o.version);
	assert_false(o.help);

	assert_int_equal(PARSE(&o, &err, "--check-config", "-c", "/etc/other.conf"), 0);
	assert_true(o.check_config);
	assert_false(o.version);
	assert_string_equal(o.config_path, "/etc/other.conf");

	assert_int_equal(PARSE(&o, &err, "--config=/x.conf", "--reload", "42"), 0);
	assert_string_equal(o.config_path, "/x.conf");
	assert_string_equal(o.reload_pid, "42");
	assert_false(o.check_config);
}

static void
test_options_settings(void **state)
{
	static const char *const expected[][3] = {
	    {"Model", "--model", "fork"},
	    {"Workers", "--workers", "auto"},
	    {"WorkerConnections", "--worker-connections", "8"},
	    {"MaxConnections", "--max-connections", "9"},
	    {"IdleTimeoutSec", "--idle-timeout", "10"},
	    {"ShutdownTimeoutSec", "--shutdown-timeout", "11"},
	    {"LogLevel", "--log-level", "debug"},
	    {"DatagramRateLimit", "--datagram-rate-limit", "12"},
	    {"MaxConnectionsPerSource", "--max-connections-per-source", "13"},
	    {"ConnectionRateLimit", "--connection-rate-limit", "14"},
	    {"DeferAcceptSec", "--defer-accept", "15"},
	    {"Listen", "--listen", "127.0.0.1:1"},
	    {"Listen", "--listen", "127.0.0.1:2"},
	    {"Model", "--model", "passfd"},
	};
	struct config_error err = {{0}};
	struct options o;

	assert_int_equal(PARSE(&o, &err, "-m", "fork", "-w", "auto", "--worker-connections", "8",
			       "--max-connections=9", "--idle-timeout", "10", "--shutdown-timeout",
			       "11", "--log-level", "debug", "--datagram-rate-limit", "12",
			       "--max-connections-per-source", "13", "--connection-rate-limit=14",
			       "--defer-accept", "15", "-l",
			       "127.0.0.1:1", "--listen", "127.0.0.1:2", "--model", "passfd"),
			 0);
	assert_int_equal(o.n_settings, sizeof(expected) / sizeof(expected[0]));
	for (size_t i = 0; i < o.n_settings; i++) {
		assert_string_equal(o.settings[i].key, expected[i][0]);
		assert_string_equal(o.settings[i].option, expected[i][1]);
		assert_string_equal(o.settings[i].value, expected[i][2]);
	}
}

static void
test_options_win_over_file(void **state)
{
	static const char text[] = "[echod]\n"
				   "Model=passfd\n"
				   "Workers=3\n"
				   "IdleTimeoutSec=60\n"
				   "Listen=127.0.0.1:1\n"
				   "Listen=127.0.0.1:2\n";
	char path[sizeof(TMP_TEMPLATE)];
	struct config_error err = {{0}};
	struct options o;
	struct config c;

	config_init(&c);
	assert_int_equal(load_text(&c, text, path, &err), 0);
	assert_int_equal(PARSE(&o, &err, "-m", "fork", "--idle-timeout", "0", "-l", "udp:[::1]:9",
			       "--listen", "unix:@echod"),
			 0);
	assert_int_equal(options_apply(&o, &c, &err), 0);
	assert_int_equal(c.model, MODEL_FORK);
	assert_int_equal(c.idle_timeout_sec, 0);
	/* Not on the command line: the file's value stays. */
	assert_int_equal(c.workers, 3);
	/* --listen replaces the file's list instead of adding to it. */
	assert_int_equal(c.n_listen, 2);
	assert_string_equal(c.listen[0], "udp:[::1]:9");
	assert_string_equal(c.listen[1], "unix:@echod");
	config_done(&c);
}

static void
test_options_keep_file_listen(void **state)
{
	char path[sizeof(TMP_TEMPLATE)];
	struct config_error err = {{0}};
	struct options o;
	struct config c;

	config_init(&c);
	assert_int_equal(load_text(&c, "[echod]\nListen=127.0.0.1:1\n", path, &err), 0);
	assert_int_equal(PARSE(&o, &err, "-w", "2"), 0);
	assert_int_equal(options_apply(&o, &c, &err), 0);
	assert_int_equal(c.workers, 2);
	assert_int_equal(c.n_listen, 1);
	assert_string_equal(c.listen[0], "127.0.0.1:1");
	config_done(&c);
}

static void
test_options_bad_value(void **state)
{
	struct config_error err = {{0}};
	struct options o;
	struct config c;

	config_init(&c);
	assert_int_equal(PARSE(&o, &err, "--workers", "0"), 0);
	assert_int_equal(options_apply(&o, &c, &err), -EINVAL);
	assert_string_equal(err.message, "--workers: Workers=0: out of range (1..1024 or auto)");

	assert_int_equal(PARSE(&o, &err, "-l", "127.0.0.1:1", "--listen", "[::1]"), 0);
	assert_int_equal(options_apply(&o, &c, &err), -EINVAL);
	assert_string_equal(err.message, "--listen: Listen=[::1]: expected [IPv6]:PORT");

	assert_int_equal(PARSE(&o, &err, "--log-level", "verbose"), 0);
	assert_int_equal(options_apply(&o, &c, &err), -EINVAL);
	assert_string_equal(err.message, "--log-level: LogLevel=verbose: unknown level (err, "
					 "warning, notice, info or debug)");
	config_done(&c);
}

struct bad_command_line {
	int argc;
	char **argv;
	const char *message;
};

#define BAD_COMMAND_LINE(message, ...)                                                             \
	{                                                                                          \
		ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), message                                      \
	}

static struct bad_command_line bad_unknown_long =
    BAD_COMMAND_LINE("unknown option --bogus (see echod --help)", "-w", "2", "--bogus");
static struct bad_command_line bad_unknown_short =
    BAD_COMMAND_LINE("unknown option -x (see echod --help)", "-x");
static struct bad_command_line bad_missing_long =
    BAD_COMMAND_LINE("option --model needs a value (see echod --help)", "--model");
static struct bad_command_line bad_missing_short =
    BAD_COMMAND_LINE("option -w needs a value (see echod --help)", "--help", "-w");
static struct bad_command_line bad_stray =
    BAD_COMMAND_LINE("unexpected argument \"fork\" (see echod --help)", "-w", "2", "fork");
static struct bad_command_line bad_flag_value = BAD_COMMAND_LINE(
    "option --check-config=yes takes no value (see echod --help)", "--check-config=yes");
static struct bad_command_line bad_help_value =
    BAD_COMMAND_LINE("option --help=1 takes no value (see echod --help)", "--help=1");

static void
test_bad_command_line(void **state)
{
	const struct bad_command_line *b = *state;
	struct config_error err = {{0}};
	struct options o;

	memset(&o, 0x5a, sizeof(o));
	assert_int_equal(options_parse(b->argc, b->argv, &o, &err), -EINVAL);
	assert_string_equal(err.message, b->message);
	/* ret is written only on success. */
	assert_int_equal(o.n_settings, (size_t)0x5a5a5a5a5a5a5a5aULL);
}

#define BAD_FILE(name)                                                                             \
	{                                                                                          \
		"bad file: " #name, test_bad_file, NULL, NULL, (void *)&bad_##name                 \
	}
#define BAD_ARGS(name)                                                                             \
	{                                                                                          \
		"bad command line: " #name, test_bad_command_line, NULL, NULL, &bad_##name         \
	}

/* MetricsListen=: one stream address, a later one replacing it, empty for
 * none; copied with the rest. */
static void
test_metrics_listen(void **state)
{
	struct config_error err = {{0}};
	struct config a, b;

	config_init(&a);
	config_init(&b);
	assert_null(a.metrics_listen);
	assert_int_equal(config_set(&a, "MetricsListen", "127.0.0.1:9707", "f:3", &err), 0);
	assert_int_equal(config_set(&a, "metricslisten", "unix:/run/echod/m.sock", "f:4", &err), 0);
	assert_string_equal(a.metrics_listen, "unix:/run/echod/m.sock");
	assert_int_equal(config_copy(&b, &a), 0);
	assert_string_equal(b.metrics_listen, "unix:/run/echod/m.sock");
	assert_ptr_not_equal(b.metrics_listen, a.metrics_listen);
	assert_int_equal(config_set(&a, "MetricsListen", "udp:127.0.0.1:9707", "f:5", &err), -EINVAL);
	assert_non_null(strstr(err.message, "f:5: MetricsListen=udp:127.0.0.1:9707: HTTP needs a stream"));
	assert_int_equal(config_set(&a, "MetricsListen", "nonsense", "f:6", &err), -EINVAL);
	assert_non_null(strstr(err.message, "f:6: MetricsListen=nonsense: "));
	assert_string_equal(a.metrics_listen, "unix:/run/echod/m.sock");
	assert_int_equal(config_set(&a, "MetricsListen", "", "f:7", &err), 0);
	assert_null(a.metrics_listen);
	config_done(&a);
	config_done(&b);
}

/* ProxyListen= (repeatable, streams only), ProxyFrom= (the balancers,
 * required with a proxy listener), ProxyHeaderTimeoutSec= (default 3). */
static void
test_proxy_keys(void **state)
{
	static const char text[] = "[echod]\n"
				   "ProxyListen=127.0.0.1:7100\n"
				   "ProxyListen=unix:/run/echod-proxy.sock\n"
				   "ProxyFrom=10.0.0.0/8\n"
				   "ProxyFrom=192.0.2.1 2001:db8::/32\n"
				   "ProxyHeaderTimeoutSec=5\n";
	char path[sizeof(TMP_TEMPLATE)], expected[sizeof(path) + 200];
	struct config_error err = {{0}};
	struct config c, copy;

	config_init(&c);
	config_init(&copy);
	assert_int_equal(c.proxy_header_timeout_sec, 3);
	assert_int_equal(c.n_proxy_listen, 0);
	assert_int_equal(config_validate(&c, "f", &err), 0);
	assert_int_equal(load_text(&c, text, path, &err), 0);
	assert_int_equal(c.n_proxy_listen, 2);
	assert_string_equal(c.proxy_listen[1], "unix:/run/echod-proxy.sock");
	assert_int_equal(c.proxy_from.n_allow, 3);
	assert_int_equal(c.proxy_header_timeout_sec, 5);
	/* Plain listeners and the access lists are apart. */
	assert_int_equal(c.n_listen, 0);
	assert_false(access_list_active(&c.access));
	assert_int_equal(config_validate(&c, path, &err), 0);
	assert_int_equal(config_copy(&copy, &c), 0);
	assert_int_equal(copy.n_proxy_listen, 2);
	assert_ptr_not_equal(copy.proxy_listen[0], c.proxy_listen[0]);
	assert_int_equal(copy.proxy_from.n_allow, 3);

	/* Empty assignments reset; then a proxy listener alone is an error
	 * naming the key. */
	assert_int_equal(config_set(&c, "ProxyFrom", "", "f:9", &err), 0);
	assert_int_equal(c.proxy_from.n_allow, 0);
	assert_int_equal(config_validate(&c, path, &err), -EINVAL);
	snprintf(expected, sizeof(expected),
		 "%s: ProxyListen=127.0.0.1:7100: ProxyFrom= is required with a proxy listener "
		 "(the balancers trusted to send PROXY headers)",
		 path);
	assert_string_equal(err.message, expected);
	assert_int_equal(config_set(&c, "ProxyListen", "", "f:10", &err), 0);
	assert_int_equal(c.n_proxy_listen, 0);
	assert_int_equal(config_validate(&c, path, &err), 0);

	assert_int_equal(config_set(&c, "ProxyListen", "udp:127.0.0.1:7", "f:11", &err), -EINVAL);
	assert_non_null(strstr(err.message, "f:11: ProxyListen=udp:127.0.0.1:7: the PROXY "
					    "protocol needs a stream address"));
	assert_int_equal(config_set(&c, "ProxyListen", "localhost:7", "f:12", &err), -EINVAL);
	assert_non_null(strstr(err.message, "f:12: ProxyListen=localhost:7: "));
	assert_int_equal(config_set(&c, "ProxyFrom", "balancer", "f:13", &err), -EINVAL);
	assert_non_null(strstr(err.message, "f:13: ProxyFrom=balancer: \"balancer\": not an"));
	assert_int_equal(config_set(&c, "ProxyHeaderTimeoutSec", "0", "f:14", &err), -EINVAL);
	assert_string_equal(err.message, "f:14: ProxyHeaderTimeoutSec=0: out of range (1..3600)");
	config_done(&c);
	config_done(&copy);
}

/* --proxy-listen and --proxy-from replace the file's lists. */
static void
test_options_proxy(void **state)
{
	static const char text[] = "[echod]\n"
				   "ProxyListen=127.0.0.1:1\n"
				   "ProxyFrom=10.0.0.0/8\n";
	char path[sizeof(TMP_TEMPLATE)];
	struct config_error err = {{0}};
	struct options o;
	struct config c;

	config_init(&c);
	assert_int_equal(load_text(&c, text, path, &err), 0);
	assert_int_equal(PARSE(&o, &err, "--proxy-listen", "127.0.0.1:2", "--proxy-listen",
			       "[::1]:3", "--proxy-from", "127.0.0.1", "--proxy-header-timeout",
			       "7"),
			 0);
	assert_int_equal(options_apply(&o, &c, &err), 0);
	assert_int_equal(c.n_proxy_listen, 2);
	assert_string_equal(c.proxy_listen[0], "127.0.0.1:2");
	assert_string_equal(c.proxy_listen[1], "[::1]:3");
	assert_int_equal(c.proxy_from.n_allow, 1);
	assert_int_equal(c.proxy_header_timeout_sec, 7);
	config_done(&c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_unchecked_names),
	    cmocka_unit_test(test_every_key),
	    cmocka_unit_test(test_limits_and_case),
	    cmocka_unit_test(test_workers_auto),
	    cmocka_unit_test(test_listen_reset),
	    cmocka_unit_test(test_comments),
	    cmocka_unit_test(test_grammar_blanks),
	    cmocka_unit_test(test_empty_resets),
	    cmocka_unit_test(test_user_group),
	    cmocka_unit_test(test_shipped_file_round_trips),
	    cmocka_unit_test(test_dump_reads_back),
	    cmocka_unit_test(test_dump_fork),
	    cmocka_unit_test(test_notes),
	    cmocka_unit_test(test_file_overrides_only_its_keys),
	    cmocka_unit_test(test_copy),
	    BAD_FILE(unknown_key),
	    BAD_FILE(number),
	    BAD_FILE(number_space),
	    BAD_FILE(negative),
	    BAD_FILE(plus),
	    BAD_FILE(below_min),
	    BAD_FILE(max_connections_zero),
	    BAD_FILE(above_max),
	    BAD_FILE(rate_above_max),
	    BAD_FILE(per_source_above_max),
	    BAD_FILE(connection_rate_word),
	    BAD_FILE(defer_accept_above_max),
	    BAD_FILE(overflow),
	    BAD_FILE(workers_zero),
	    BAD_FILE(workers_many),
	    BAD_FILE(workers_word),
	    BAD_FILE(model),
	    BAD_FILE(log_level),
	    BAD_FILE(log_level_crit),
	    BAD_FILE(listen),
	    BAD_FILE(listen_port),
	    BAD_FILE(allow_from),
	    BAD_FILE(deny_from_name),
	    BAD_FILE(continuation),
	    BAD_FILE(colon),
	    BAD_FILE(colon_then_equals),
	    BAD_FILE(inline_semicolon),
	    BAD_FILE(inline_hash),
	    BAD_FILE(section_comment),
	    BAD_FILE(no_key),
	    BAD_FILE(key_chars),
	    BAD_FILE(empty_unknown),
	    BAD_FILE(user),
	    BAD_FILE(socket_mode_digit),
	    BAD_FILE(socket_mode_setid),
	    BAD_FILE(group),
	    BAD_FILE(outside_section),
	    BAD_FILE(section),
	    BAD_FILE(syntax),
	    BAD_FILE(syntax_section),
	    BAD_FILE(value_then_syntax),
	    BAD_FILE(line_count),
	    cmocka_unit_test(test_long_lines),
	    cmocka_unit_test(test_nul_byte),
	    cmocka_unit_test(test_missing_file),
	    cmocka_unit_test(test_directory),
	    cmocka_unit_test(test_empty_file),
	    cmocka_unit_test(test_resolve_workers),
	    cmocka_unit_test(test_resolve_max_connections),
	    cmocka_unit_test(test_resolve_auto_worker_connections),
	    cmocka_unit_test(test_options_flags),
	    cmocka_unit_test(test_options_settings),
	    cmocka_unit_test(test_options_win_over_file),
	    cmocka_unit_test(test_options_keep_file_listen),
	    cmocka_unit_test(test_options_bad_value),
	    cmocka_unit_test(test_metrics_listen),
	    cmocka_unit_test(test_proxy_keys),
	    cmocka_unit_test(test_options_proxy),
	    BAD_ARGS(unknown_long),
	    BAD_ARGS(unknown_short),
	    BAD_ARGS(missing_long),
	    BAD_ARGS(missing_short),
	    BAD_ARGS(stray),
	    BAD_ARGS(flag_value),
	    BAD_ARGS(help_value),
	};

	config_check_names_with(privdrop_name_exists);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
