/* echod-bench: what the load generator's modules share. */
#pragma once

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

enum bench_mode {
	MODE_RR,
	MODE_CRR,
	MODE_BULK,
	MODE_HOLD,
	MODE_UDP,
};

struct bench_opts {
	enum bench_mode mode;
	struct sockaddr_storage target;
	socklen_t target_len;
	char target_str[64];
	unsigned threads;
	unsigned conns;
	unsigned sources; /* IPv4 only: connect from 127.0.0.1 .. 127.0.0.<sources> */
	int close_rst;    /* crr: close each echoed connection with a reset (no TIME_WAIT) */
	size_t size;
	double secs;    /* measured run (rr, crr, bulk, udp) or idle time (hold) */
	uint64_t count; /* rr, crr, udp: stop after this many operations; 0 = use secs */
	unsigned window;
	double timeout;     /* connect, request and drain limit, seconds */
	double udp_timeout; /* a datagram not back by then is lost */
	pid_t server_pid;
	uint64_t seed;
};

/* Latency histogram, log-linear: 2^(HIST_SUB_BITS-1) buckets per power of
 * two, so any recorded value is known to within 1/128 (< 0.8 %). */
#define HIST_SUB_BITS 8
#define HIST_MAX_BITS 40 /* 2^40 ns is 18 minutes: far beyond any timeout */
#define HIST_BUCKETS ((HIST_MAX_BITS - HIST_SUB_BITS + 2) << (HIST_SUB_BITS - 1))

struct hist {
	uint64_t n;
	uint64_t b[HIST_BUCKETS];
};

void hist_add(struct hist *h, uint64_t ns);
void hist_merge(struct hist *dst, const struct hist *src);
/* Returns the value (ns) below which the fraction q of samples lie, 0 if none. */
uint64_t hist_quantile(const struct hist *h, double q);

struct bench_stats {
	uint64_t ops;   /* completed and verified operations within the measured time */
	uint64_t bytes; /* verified echoed bytes within the measured time (bulk) */
	uint64_t mismatches;
	uint64_t eofs;     /* server closed before echoing everything */
	uint64_t resets;   /* ECONNRESET, EPIPE and other I/O errors */
	uint64_t refused;  /* ECONNREFUSED (TCP connect or UDP ICMP) */
	uint64_t timeouts; /* connect or request not done within --timeout */
	uint64_t connfails; /* any other connect failure (EADDRNOTAVAIL: out of ports) */
	int connfail_errno; /* the first of those, to say which it was */
	uint64_t lost;      /* udp: datagrams not echoed within --udp-timeout */
	uint64_t late;      /* udp: echoes that arrived after being counted lost */
	uint64_t held;      /* hold: connections established */
	uint64_t echoed;    /* hold: of those, echoed and verified */
	struct hist hist;
};

/* Counts a connect failure of none of the kinds above (err: a positive
 * errno), keeping the first one's errno to report. */
void stats_connfail(struct bench_stats *st, int err);

/* One client thread: its own epoll set, connections and counters. */
struct worker {
	const struct bench_opts *o;
	unsigned id;
	unsigned first; /* global index of its first connection or socket */
	unsigned n;     /* how many it owns */
	uint64_t quota; /* count mode: operations to complete, 0 = until the deadline */
	uint64_t rng;
	pthread_barrier_t *phase; /* shared with main(), which acts between phases */
	uint64_t t0, t_stop;      /* measured interval, ns */
	struct bench_stats st;
	pthread_t tid;
};

/* Main and workers meet here; hold mode meets several times. */
void phase_wait(struct worker *w);

void *tcp_worker(void *arg); /* rr, crr, bulk, hold */
void *udp_worker(void *arg);

static inline uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t
secs_to_ns(double s)
{
	return (uint64_t)(s * 1e9);
}

/* xorshift64*: fast, and good enough that a shifted or stale byte
 * stream does not match by chance. */
static inline uint64_t
rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

void rng_fill(uint64_t *s, uint8_t *buf, size_t len);

/* The bulk stream of a connection whose key is k: byte x is
 * pattern[(k + x) % PATTERN_PERIOD]. The table holds PATTERN_SPAN more bytes
 * so any chunk up to that length is contiguous. The period is prime, so a
 * stream that lost or repeated bytes goes out of step with it. */
#define PATTERN_PERIOD 65521u
#define PATTERN_SPAN 65536u
extern uint8_t pattern[PATTERN_PERIOD + PATTERN_SPAN];
void pattern_init(uint64_t seed);

/* Sum of VmRSS (and of Pss, which counts shared pages once) over pid and
 * all its descendants, in KiB. Returns the number of processes, or -errno. */
int procmem_tree(pid_t pid, uint64_t *ret_rss_kb, uint64_t *ret_pss_kb);
