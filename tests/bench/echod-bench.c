/* echod-bench: a load generator for echo servers. Verifies every echoed
 * byte; prints one machine-readable result line on stdout, the rest on
 * stderr. See README.md in this directory. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench.h"

static pthread_barrier_t phase_barrier;

static const char *const mode_names[] = {
	[MODE_RR] = "rr", [MODE_CRR] = "crr", [MODE_BULK] = "bulk",
	[MODE_HOLD] = "hold", [MODE_UDP] = "udp",
};

/* Connections (or sockets) when -c is not given, by mode. */
static const unsigned default_conns[] = {
	[MODE_RR] = 64, [MODE_CRR] = 64, [MODE_BULK] = 4, [MODE_HOLD] = 1000, [MODE_UDP] = 16,
};

static void
usage(FILE *f)
{
	fprintf(f,
		"Usage: echod-bench -m MODE [options]\n"
		"Load generator for an RFC 862 echo server on loopback. Every echoed byte is\n"
		"verified. One result line (key=value) goes to stdout, human text to stderr.\n"
		"Exit status: 0 if no errors, 1 if any operation failed, 2 for bad usage.\n"
		"\n"
		"Modes:\n"
		"  rr    C persistent connections; each sends SIZE random bytes, waits for\n"
		"        their echo, repeats. Requests/s and latency percentiles.\n"
		"  crr   connect, send SIZE bytes, read them back, close; C at a time.\n"
		"  bulk  C connections writing and reading a pattern at once: MB/s echoed.\n"
		"  hold  open C connections, keep them idle for -d seconds, echo SIZE bytes\n"
		"        once on each; reports held, echoed and the server's memory.\n"
		"  udp   C sockets, each with a window of datagrams out: datagrams/s.\n"
		"\n"
		"Options:\n"
		"  -m, --mode MODE        rr, crr, bulk, hold or udp\n"
		"  -H, --host ADDR        IPv4 or IPv6 loopback literal (127.0.0.1)\n"
		"  -p, --port PORT        server port (7)\n"
		"  -t, --threads N        client threads (2)\n"
		"  -c, --conns N          connections or sockets (rr/crr 64, bulk 4,\n"
		"                         hold 1000, udp 16)\n"
		"  -s, --size BYTES       request or datagram size (64; udp at least 16)\n"
		"  -d, --duration SECS    measured time, or idle time in hold (5)\n"
		"  -n, --count N          rr, crr, udp: stop after N operations instead\n"
		"  -w, --window N         udp: datagrams out per socket (8)\n"
		"      --sources K        connect from 127.0.0.1..127.0.0.K (IPv4; 1)\n"
		"      --server-pid PID   hold: measure this process and its descendants\n"
		"      --timeout SECS     limit per connect and request, and for\n"
		"                         draining at the end (10)\n"
		"      --udp-timeout SECS a datagram not back by then is lost (0.2)\n"
		"      --close fin|rst    crr: how a client closes once its echo is\n"
		"                         verified: fin (close(), the default) leaves\n"
		"                         it in TIME_WAIT; rst (SO_LINGER 0) does not\n"
		"      --seed N           payload seed (from the clock)\n"
		"  -h, --help             this text\n");
}

static int
parse_uint(const char *s, uint64_t max, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end || v > max || s[0] == '-')
		return -EINVAL;
	*ret = v;
	return 0;
}

static int
parse_secs(const char *s, double *ret)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v > 0) || v > 86400)
		return -EINVAL;
	*ret = v;
	return 0;
}

/* The harness must never load anything but this machine: accept only
 * 127.0.0.0/8, ::1 and their v4-mapped form. */
static int
parse_target(struct bench_opts *o, const char *host, unsigned port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&o->target;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&o->target;

	memset(&o->target, 0, sizeof(o->target));
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		o->target_len = sizeof(*sin);
		if ((ntohl(sin->sin_addr.s_addr) >> 24) != 127)
			return -EADDRNOTAVAIL;
	} else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		o->target_len = sizeof(*sin6);
		if (!IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr) &&
		    !(IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) && sin6->sin6_addr.s6_addr[12] == 127))
			return -EADDRNOTAVAIL;
	} else {
		return -EINVAL;
	}
	snprintf(o->target_str, sizeof(o->target_str), "%s%s%s:%u",
		 sin->sin_family == AF_INET6 ? "[" : "", host,
		 sin->sin_family == AF_INET6 ? "]" : "", port);
	return 0;
}

static int
parse_mode(const char *s, enum bench_mode *ret)
{
	for (size_t i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++) {
		if (strcmp(s, mode_names[i]) == 0) {
			*ret = (enum bench_mode)i;
			return 0;
		}
	}
	return -EINVAL;
}

static int
bad_option(const char *opt, const char *arg)
{
	fprintf(stderr, "echod-bench: invalid %s '%s' (see --help)\n", opt, arg);
	return -EINVAL;
}

/* Returns 0 to run, 1 after --help, -EINVAL for a bad command line. */
static int
parse_args(int argc, char **argv, struct bench_opts *o)
{
	enum { OPT_SOURCES = 256, OPT_PID, OPT_TIMEOUT, OPT_UDP_TIMEOUT, OPT_SEED, OPT_CLOSE };
	static const struct option longopts[] = {
		{ "mode", required_argument, NULL, 'm' },
		{ "host", required_argument, NULL, 'H' },
		{ "port", required_argument, NULL, 'p' },
		{ "threads", required_argument, NULL, 't' },
		{ "conns", required_argument, NULL, 'c' },
		{ "size", required_argument, NULL, 's' },
		{ "duration", required_argument, NULL, 'd' },
		{ "count", required_argument, NULL, 'n' },
		{ "window", required_argument, NULL, 'w' },
		{ "sources", required_argument, NULL, OPT_SOURCES },
		{ "server-pid", required_argument, NULL, OPT_PID },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "udp-timeout", required_argument, NULL, OPT_UDP_TIMEOUT },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "close", required_argument, NULL, OPT_CLOSE },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	const char *host = "127.0.0.1", *mode = NULL;
	uint64_t v, port = 7;
	int c, have_mode = 0;

	*o = (struct bench_opts){ .threads = 2, .sources = 1, .size = 64, .secs = 5,
				  .window = 8, .timeout = 10, .udp_timeout = 0.2,
				  .seed = now_ns() ^ ((uint64_t)getpid() << 32) };
	while ((c = getopt_long(argc, argv, "m:H:p:t:c:s:d:n:w:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			mode = optarg;
			if (parse_mode(optarg, &o->mode) < 0)
				return bad_option("mode", optarg);
			have_mode = 1;
			break;
		case 'H':
			host = optarg;
			break;
		case 'p':
			if (parse_uint(optarg, 65535, &port) < 0 || port == 0)
				return bad_option("port", optarg);
			break;
		case 't':
			if (parse_uint(optarg, 256, &v) < 0 || v == 0)
				return bad_option("thread count", optarg);
			o->threads = (unsigned)v;
			break;
		case 'c':
			if (parse_uint(optarg, 1000000, &v) < 0 || v == 0)
				return bad_option("connection count", optarg);
			o->conns = (unsigned)v;
			break;
		case 's':
			if (parse_uint(optarg, 64 << 20, &v) < 0 || v == 0)
				return bad_option("size", optarg);
			o->size = (size_t)v;
			break;
		case 'd':
			if (parse_secs(optarg, &o->secs) < 0)
				return bad_option("duration", optarg);
			break;
		case 'n':
			if (parse_uint(optarg, UINT64_MAX, &o->count) < 0 || o->count == 0)
				return bad_option("count", optarg);
			break;
		case 'w':
			if (parse_uint(optarg, 65536, &v) < 0 || v == 0)
				return bad_option("window", optarg);
			o->window = (unsigned)v;
			break;
		case OPT_SOURCES:
			if (parse_uint(optarg, 254, &v) < 0 || v == 0)
				return bad_option("source count", optarg);
			o->sources = (unsigned)v;
			break;
		case OPT_PID:
			if (parse_uint(optarg, INT32_MAX, &v) < 0 || v == 0)
				return bad_option("pid", optarg);
			o->server_pid = (pid_t)v;
			break;
		case OPT_TIMEOUT:
			if (parse_secs(optarg, &o->timeout) < 0)
				return bad_option("timeout", optarg);
			break;
		case OPT_UDP_TIMEOUT:
			if (parse_secs(optarg, &o->udp_timeout) < 0)
				return bad_option("udp timeout", optarg);
			break;
		case OPT_CLOSE:
			if (strcmp(optarg, "fin") != 0 && strcmp(optarg, "rst") != 0)
				return bad_option("close (fin or rst)", optarg);
			o->close_rst = strcmp(optarg, "rst") == 0;
			break;
		case OPT_SEED:
			if (parse_uint(optarg, UINT64_MAX, &o->seed) < 0)
				return bad_option("seed", optarg);
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			return -EINVAL;
		}
	}
	if (optind < argc)
		return bad_option("argument", argv[optind]);
	if (!have_mode) {
		fprintf(stderr, "echod-bench: -m MODE is required (see --help)\n");
		return -EINVAL;
	}
	if (parse_target(o, host, (unsigned)port) < 0)
		return bad_option("host (an IPv4 or IPv6 loopback literal)", host);
	if (o->conns == 0)
		o->conns = default_conns[o->mode];
	if (o->threads > o->conns)
		o->threads = o->conns;
	if (o->mode == MODE_UDP && o->size < 16)
		return bad_option("size (udp needs at least 16)", mode);
	if (o->mode == MODE_UDP && o->size > 65507)
		return bad_option("size (more than a datagram holds)", mode);
	if (o->count && (o->mode == MODE_BULK || o->mode == MODE_HOLD))
		return bad_option("option -n for mode", mode);
	if (o->sources > 1 && o->target.ss_family != AF_INET)
		return bad_option("option --sources (IPv4 only) for host", host);
	return 0;
}

/* hold needs a descriptor per connection; the soft limit is often 1024. */
static void
raise_nofile(const struct bench_opts *o)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < (rlim_t)o->conns + 64)
		fprintf(stderr, "echod-bench: warning: RLIMIT_NOFILE is %llu, below %u connections\n",
			(unsigned long long)rl.rlim_cur, o->conns);
}

void
phase_wait(struct worker *w)
{
	pthread_barrier_wait(w->phase);
}

static void
sample_server(const struct bench_opts *o, const char *when, uint64_t *ret_rss,
	      uint64_t *ret_pss, int *ret_procs)
{
	int r;

	if (!o->server_pid)
		return;
	r = procmem_tree(o->server_pid, ret_rss, ret_pss);
	if (r < 0) {
		fprintf(stderr, "echod-bench: reading memory of pid %d %s: %s\n",
			(int)o->server_pid, when, strerror(-r));
		return;
	}
	*ret_procs = r;
}

static void
merge_stats(struct bench_stats *dst, const struct bench_stats *src)
{
	dst->ops += src->ops;
	dst->bytes += src->bytes;
	dst->mismatches += src->mismatches;
	dst->eofs += src->eofs;
	dst->resets += src->resets;
	dst->refused += src->refused;
	dst->timeouts += src->timeouts;
	if (!dst->connfail_errno)
		dst->connfail_errno = src->connfail_errno;
	dst->connfails += src->connfails;
	dst->lost += src->lost;
	dst->late += src->late;
	dst->held += src->held;
	dst->echoed += src->echoed;
	hist_merge(&dst->hist, &src->hist);
}

struct memory {
	uint64_t rss_idle, pss_idle, rss, pss;
	int procs;
};

static uint64_t
count_errors(const struct bench_opts *o, const struct bench_stats *st)
{
	uint64_t errors = st->mismatches + st->eofs + st->resets + st->refused + st->timeouts +
			  st->connfails;

	/* A connection hold could not echo on is an error even when no
	 * individual failure was seen. */
	if (o->mode == MODE_HOLD && st->echoed < o->conns && errors == 0)
		errors = o->conns - st->echoed;
	return errors;
}

static void
report(const struct bench_opts *o, const struct bench_stats *st, double secs,
       const struct memory *m)
{
	double rate = secs > 0 ? (double)st->ops / secs : 0;
	uint64_t errors = count_errors(o, st);

	printf("mode=%s target=%s threads=%u conns=%u size=%zu secs=%.2f ops=%" PRIu64
	       " rate=%.1f p50_us=%.1f p99_us=%.1f p999_us=%.1f errors=%" PRIu64
	       " mismatches=%" PRIu64 " eofs=%" PRIu64 " resets=%" PRIu64 " refused=%" PRIu64
	       " timeouts=%" PRIu64 " connfails=%" PRIu64,
	       mode_names[o->mode], o->target_str, o->threads, o->conns, o->size, secs, st->ops,
	       rate, hist_quantile(&st->hist, 0.50) / 1e3, hist_quantile(&st->hist, 0.99) / 1e3,
	       hist_quantile(&st->hist, 0.999) / 1e3, errors, st->mismatches, st->eofs,
	       st->resets, st->refused, st->timeouts, st->connfails);
	if (o->mode == MODE_BULK)
		printf(" bytes=%" PRIu64 " mbps=%.1f", st->bytes,
		       secs > 0 ? (double)st->bytes / secs / 1e6 : 0);
	if (o->mode == MODE_HOLD)
		printf(" held=%" PRIu64 " echoed=%" PRIu64 " rss_kb=%" PRIu64 " pss_kb=%" PRIu64
		       " rss_idle_kb=%" PRIu64 " server_procs=%d",
		       st->held, st->echoed, m->rss, m->pss, m->rss_idle, m->procs);
	if (o->mode == MODE_UDP)
		printf(" window=%u lost=%" PRIu64 " late=%" PRIu64, o->window, st->lost, st->late);
	printf("\n");
	fflush(stdout);

	fprintf(stderr, "echod-bench: %s against %s: %" PRIu64 " ops in %.2f s = %.0f/s",
		mode_names[o->mode], o->target_str, st->ops, secs, rate);
	if (o->mode == MODE_BULK)
		fprintf(stderr, ", %.1f MB/s echoed", secs > 0 ? (double)st->bytes / secs / 1e6 : 0);
	if (o->mode == MODE_HOLD)
		fprintf(stderr, ", %" PRIu64 "/%u held, %" PRIu64 " echoed, server %d procs %" PRIu64
			" kB RSS (%" PRIu64 " kB PSS)",
			st->held, o->conns, st->echoed, m->procs, m->rss, m->pss);
	fprintf(stderr, "; %" PRIu64 " errors\n", errors);
	if (errors)
		fprintf(stderr,
			"echod-bench: FAILED: %" PRIu64 " mismatches, %" PRIu64
			" premature EOFs, %" PRIu64 " resets/I-O errors, %" PRIu64 " refused, %" PRIu64
			" timeouts, %" PRIu64 " other connect failures\n",
			st->mismatches, st->eofs, st->resets, st->refused, st->timeouts,
			st->connfails);
	/* Out of local ports (EADDRNOTAVAIL) is this machine's, not the server's. */
	if (st->connfails)
		fprintf(stderr, "echod-bench: the first other connect failure: %s\n",
			strerror(st->connfail_errno));
}

/* hold's phases: the workers stop at each barrier so the server is
 * measured while nothing moves. */
static void
drive_hold(const struct bench_opts *o, struct memory *m)
{
	uint64_t pss_unused;
	int procs_unused;

	pthread_barrier_wait(&phase_barrier); /* all connected */
	fprintf(stderr, "echod-bench: connected; holding idle for %.2f s\n", o->secs);
	pthread_barrier_wait(&phase_barrier); /* idle time over */
	sample_server(o, "while idle", &m->rss_idle, &pss_unused, &procs_unused);
	pthread_barrier_wait(&phase_barrier); /* echoed on all */
	sample_server(o, "while holding", &m->rss, &m->pss, &m->procs);
	pthread_barrier_wait(&phase_barrier); /* let them close */
}

int
main(int argc, char **argv)
{
	struct bench_opts o;
	struct bench_stats *total;
	struct worker *w;
	struct memory mem = {};
	uint64_t t0 = UINT64_MAX, t_stop = 0;
	int r;

	r = parse_args(argc, argv, &o);
	if (r != 0)
		return r > 0 ? 0 : 2;
	signal(SIGPIPE, SIG_IGN);
	raise_nofile(&o);
	pattern_init(o.seed);

	w = calloc(o.threads, sizeof(*w));
	total = calloc(1, sizeof(*total));
	if (!w || !total) {
		fprintf(stderr, "echod-bench: out of memory\n");
		return 1;
	}
	pthread_barrier_init(&phase_barrier, NULL, o.threads + 1);
	for (unsigned i = 0; i < o.threads; i++) {
		w[i].o = &o;
		w[i].id = i;
		w[i].first = (unsigned)((uint64_t)o.conns * i / o.threads);
		w[i].n = (unsigned)((uint64_t)o.conns * (i + 1) / o.threads) - w[i].first;
		if (o.count)
			w[i].quota = o.count * (i + 1) / o.threads - o.count * i / o.threads;
		w[i].rng = o.seed ^ ((uint64_t)(i + 1) * 0x9E3779B97F4A7C15ULL);
		w[i].phase = &phase_barrier;
		r = pthread_create(&w[i].tid, NULL, o.mode == MODE_UDP ? udp_worker : tcp_worker,
				   &w[i]);
		if (r != 0) {
			fprintf(stderr, "echod-bench: starting thread: %s\n", strerror(r));
			return 1; /* a barrier would wait forever for it */
		}
	}
	if (o.mode == MODE_HOLD)
		drive_hold(&o, &mem);
	else
		pthread_barrier_wait(&phase_barrier);

	for (unsigned i = 0; i < o.threads; i++) {
		pthread_join(w[i].tid, NULL);
		merge_stats(total, &w[i].st);
		if (w[i].t0 < t0)
			t0 = w[i].t0;
		if (w[i].t_stop > t_stop)
			t_stop = w[i].t_stop;
	}
	report(&o, total, t_stop > t0 ? (double)(t_stop - t0) / 1e9 : 0, &mem);
	r = count_errors(&o, total) ? 1 : 0;
	pthread_barrier_destroy(&phase_barrier);
	free(total);
	free(w);
	return r;
}
