#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

enum {
	OPT_WORKER_CONNECTIONS = 0x100,
	OPT_MAX_CONNECTIONS,
	OPT_IDLE_TIMEOUT,
	OPT_SHUTDOWN_TIMEOUT,
	OPT_LOG_LEVEL,
	OPT_DATAGRAM_RATE_LIMIT,
	OPT_MAX_CONNECTIONS_PER_SOURCE,
	OPT_CONNECTION_RATE_LIMIT,
	OPT_DEFER_ACCEPT,
	OPT_CHECK_CONFIG,
	OPT_DUMP_CONFIG,
	OPT_RELOAD,
	OPT_VERSION,
	OPT_BEFORE_STOP,
	OPT_RUNTIME_DIR,
	OPT_JSON,
	OPT_METRICS_LISTEN,
	OPT_PROXY_LISTEN,
	OPT_PROXY_FROM,
	OPT_PROXY_HEADER_TIMEOUT,
	OPT_USER,
	OPT_GROUP,
	OPT_SOCKET_MODE,
};

/* The leading ':' makes a missing value ':' rather than '?'. */
static const char short_options[] = ":c:m:w:l:h";

static const struct option long_options[] = {
	{"config", required_argument, NULL, 'c'},
	{"model", required_argument, NULL, 'm'},
	{"workers", required_argument, NULL, 'w'},
	{"worker-connections", required_argument, NULL, OPT_WORKER_CONNECTIONS},
	{"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
	{"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
	{"shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN_TIMEOUT},
	{"log-level", required_argument, NULL, OPT_LOG_LEVEL},
	{"datagram-rate-limit", required_argument, NULL, OPT_DATAGRAM_RATE_LIMIT},
	{"max-connections-per-source", required_argument, NULL, OPT_MAX_CONNECTIONS_PER_SOURCE},
	{"connection-rate-limit", required_argument, NULL, OPT_CONNECTION_RATE_LIMIT},
	{"defer-accept", required_argument, NULL, OPT_DEFER_ACCEPT},
	{"listen", required_argument, NULL, 'l'},
	{"check-config", no_argument, NULL, OPT_CHECK_CONFIG},
	{"dump-config", no_argument, NULL, OPT_DUMP_CONFIG},
	{"reload", required_argument, NULL, OPT_RELOAD},
	{"before-stop", required_argument, NULL, OPT_BEFORE_STOP},
	{"metrics-listen", required_argument, NULL, OPT_METRICS_LISTEN},
	{"proxy-listen", required_argument, NULL, OPT_PROXY_LISTEN},
	{"proxy-from", required_argument, NULL, OPT_PROXY_FROM},
	{"proxy-header-timeout", required_argument, NULL, OPT_PROXY_HEADER_TIMEOUT},
	{"socket-mode", required_argument, NULL, OPT_SOCKET_MODE},
	{"user", required_argument, NULL, OPT_USER},
	{"group", required_argument, NULL, OPT_GROUP},
	{"runtime-dir", required_argument, NULL, OPT_RUNTIME_DIR},
	{"json", no_argument, NULL, OPT_JSON},
	{"version", no_argument, NULL, OPT_VERSION},
	{"help", no_argument, NULL, 'h'},
	{0},
};

/* Which configuration key each option sets. */
static const struct {
	int val;
	const char *key;
	const char *option;
} option_keys[] = {
	{'m', "Model", "--model"},
	{'w', "Workers", "--workers"},
	{OPT_WORKER_CONNECTIONS, "WorkerConnections", "--worker-connections"},
	{OPT_MAX_CONNECTIONS, "MaxConnections", "--max-connections"},
	{OPT_IDLE_TIMEOUT, "IdleTimeoutSec", "--idle-timeout"},
	{OPT_SHUTDOWN_TIMEOUT, "ShutdownTimeoutSec", "--shutdown-timeout"},
	{OPT_LOG_LEVEL, "LogLevel", "--log-level"},
	{OPT_DATAGRAM_RATE_LIMIT, "DatagramRateLimit", "--datagram-rate-limit"},
	{OPT_MAX_CONNECTIONS_PER_SOURCE, "MaxConnectionsPerSource", "--max-connections-per-source"},
	{OPT_CONNECTION_RATE_LIMIT, "ConnectionRateLimit", "--connection-rate-limit"},
	{OPT_DEFER_ACCEPT, "DeferAcceptSec", "--defer-accept"},
	{'l', "Listen", "--listen"},
	{OPT_METRICS_LISTEN, "MetricsListen", "--metrics-listen"},
	{OPT_PROXY_LISTEN, "ProxyListen", "--proxy-listen"},
	{OPT_PROXY_FROM, "ProxyFrom", "--proxy-from"},
	{OPT_PROXY_HEADER_TIMEOUT, "ProxyHeaderTimeoutSec", "--proxy-header-timeout"},
	{OPT_SOCKET_MODE, "SocketMode", "--socket-mode"},
	{OPT_USER, "User", "--user"},
	{OPT_GROUP, "Group", "--group"},
};

void
options_print_help(void)
{
	printf("Usage: echod [OPTION]...\n"
	       "       echod status [--json] [--runtime-dir DIR]\n"
	       "RFC 862 echo server: TCP, UDP and UNIX stream, socket-activated or standalone.\n"
	       "\n"
	       "  -c, --config FILE            configuration file (default " CONFIG_DEFAULT_PATH ")\n"
	       "  -m, --model MODEL            prefork (default), passfd or fork\n"
	       "  -w, --workers N|auto         worker processes (default auto: one per CPU)\n"
	       "      --worker-connections N   connections one worker serves at once (auto)\n"
	       "      --max-connections N      connections across all workers (fork: processes)\n"
	       "      --idle-timeout SEC       close connections idle this long; 0 = never (300)\n"
	       "      --shutdown-timeout SEC   time open connections get on stop (10)\n"
	       "      --log-level LEVEL        err, warning, notice, info (default) or debug\n"
	       "      --datagram-rate-limit N  datagrams per second per source; 0 = off (1000)\n"
	       "      --max-connections-per-source N\n"
	       "                               open connections per source address (IPv6: /64);\n"
	       "                               more are refused; 0 = no limit (0)\n"
	       "      --connection-rate-limit N\n"
	       "                               new connections per second; above, accepting\n"
	       "                               pauses; 0 = no limit (0)\n"
	       "      --defer-accept SEC       TCP_DEFER_ACCEPT on sockets echod binds; 0 = off (0)\n"
	       "  -l, --listen ADDR            listen without systemd (repeatable): 127.0.0.1:7007,\n"
	       "                               [::1]:7007, udp:127.0.0.1:7007, unix:/run/echod.sock\n"
	       "      --proxy-listen ADDR      listen (repeatable) for connections from a load\n"
	       "                               balancer that begin with a PROXY v1/v2 header\n"
	       "      --proxy-from CIDR...     the balancers trusted to send headers (required\n"
	       "                               with --proxy-listen)\n"
	       "      --proxy-header-timeout SEC\n"
	       "                               a whole header within this, or closed (3)\n"
	       "      --metrics-listen ADDR    serve GET /metrics (Prometheus, OpenMetrics) there:\n"
	       "                               127.0.0.1:9707, unix:/run/echod/metrics.sock\n"
	       "      --socket-mode MODE       mode of the unix: sockets echod binds (0660)\n"
	       "      --user USER              started as root: run as USER once the sockets\n"
	       "                               are bound (under systemd use the unit's User=)\n"
	       "      --group GROUP            with --user: that group, not USER's own\n"
	       "      --check-config           validate the configuration, say what it means, exit\n"
	       "      --dump-config            print the effective configuration and exit\n"
	       "      --reload PID             reload the echod with that PID; wait for the outcome\n"
	       "      --before-stop PID        (ExecStop=) on a restart, make the echod with that PID\n"
	       "                               keep its connections in systemd's fd store\n"
	       "      --runtime-dir DIR        where the running echod publishes its scoreboard\n"
	       "                               (default $RUNTIME_DIRECTORY; status: /run/echod)\n"
	       "      --json                   (status) print one JSON object\n"
	       "      --version                print the version and exit\n"
	       "  -h, --help                   print this help and exit\n"
	       "\n"
	       "Sockets come from systemd (LISTEN_FDS) or from --listen/Listen=.\n"
	       "See echod(8) and echod.conf(5).\n");
}

static int
add_setting(struct options *o, int val, const char *value, struct config_error *err)
{
	for (size_t i = 0; i < ELEMENTSOF(option_keys); i++) {
		if (option_keys[i].val != val)
			continue;
		if (o->n_settings >= OPTIONS_MAX_SETTINGS)
			return config_fail(err, "%s: too many options", option_keys[i].option);
		o->settings[o->n_settings++] = (struct option_setting){
			.key = option_keys[i].key,
			.option = option_keys[i].option,
			.value = value,
		};
		return 0;
	}
	return config_fail(err, "internal error: option %d has no key", val);
}

int
options_parse(int argc, char **argv, struct options *ret, struct config_error *err)
{
	struct options o = {0};
	int c, r;

	opterr = 0;
	optind = 0;
	while ((c = getopt_long(argc, argv, short_options, long_options, NULL)) >= 0) {
		switch (c) {
		case 'c':
			o.config_path = optarg;
			break;
		case 'h':
			o.help = true;
			break;
		case OPT_VERSION:
			o.version = true;
			break;
		case OPT_CHECK_CONFIG:
			o.check_config = true;
			break;
		case OPT_DUMP_CONFIG:
			o.dump_config = true;
			break;
		case OPT_RELOAD:
			o.reload_pid = optarg;
			break;
		case OPT_BEFORE_STOP:
			o.before_stop_pid = optarg;
			break;
		case OPT_RUNTIME_DIR:
			o.runtime_dir = optarg;
			break;
		case OPT_JSON:
			o.json = true;
			break;
		case ':':
			return config_fail(err, "option %s needs a value (see echod --help)",
					   argv[optind - 1]);
		case '?':
			/* optopt is the unknown character of a short option, or
			 * the val of a known long option given a value it does
			 * not take; 0 for an unknown long option. */
			if (optopt > 0 && optopt < 0x100 && !strchr(short_options, optopt))
				return config_fail(err, "unknown option -%c (see echod --help)",
						   optopt);
			if (optopt)
				return config_fail(err,
						   "option %s takes no value (see echod --help)",
						   argv[optind - 1]);
			return config_fail(err, "unknown option %s (see echod --help)",
					   argv[optind - 1]);
		default:
			r = add_setting(&o, c, optarg, err);
			if (r < 0)
				return r;
		}
	}
	/* One command word, anywhere (getopt moves it to the end). */
	if (optind < argc && strcmp(argv[optind], "status") == 0) {
		o.status = true;
		optind++;
	}
	if (optind < argc)
		return config_fail(err, "unexpected argument \"%s\" (see echod --help)",
				   argv[optind]);
	if (o.json && !o.status)
		return config_fail(err, "--json goes with \"echod status\" (see echod --help)");
	*ret = o;
	return 0;
}

int
options_apply(const struct options *o, struct config *c, struct config_error *err)
{
	bool listen_reset = false, proxy_listen_reset = false, proxy_from_reset = false;

	for (size_t i = 0; i < o->n_settings; i++) {
		const struct option_setting *s = &o->settings[i];
		int r;

		if (strcmp(s->key, "Listen") == 0 && !listen_reset) {
			config_set(c, "Listen", "", s->option, err);
			listen_reset = true;
		}
		if (strcmp(s->key, "ProxyListen") == 0 && !proxy_listen_reset) {
			config_set(c, "ProxyListen", "", s->option, err);
			proxy_listen_reset = true;
		}
		/* The command line's balancers replace the file's. */
		if (strcmp(s->key, "ProxyFrom") == 0 && !proxy_from_reset) {
			config_set(c, "ProxyFrom", "", s->option, err);
			proxy_from_reset = true;
		}
		r = config_set(c, s->key, s->value, s->option, err);
		if (r < 0)
			return r;
	}
	return 0;
}
