/* Per-source token buckets: how much one source address may make echod do.
 *
 * A source is an IPv4 address or an IPv6 /64 (one host usually owns a whole
 * /64, so counting per IPv6 address would give it 2^64 buckets); an IPv4-mapped
 * IPv6 address is the IPv4 address it maps, so a dual-stack socket and an IPv4
 * socket count the same host the same way. The port is ignored.
 *
 * Memory is fixed at creation: when the table is full, the source seen least
 * recently loses its bucket, and comes back later with a full one. Time is
 * passed in by the caller (CLOCK_MONOTONIC in microseconds), so the table never
 * reads a clock and tests can drive it. Not thread-safe: one table per process
 * (or per thread). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "util.h"

/* Sources remembered by default: 4096 entries cost about 200 KiB. */
#define RATELIMIT_CAPACITY_DEFAULT 4096

struct ratelimit;

/* rate: events per second one source may make; 0 turns the limit off (every
 * call to ratelimit_allow() says yes). burst: events a source that has been
 * quiet may make at once; 0 means "one second's worth" (= rate). capacity:
 * sources remembered, > 0. Returns 0, -EINVAL or -ENOMEM. */
int ratelimit_new(uint32_t rate, uint32_t burst, size_t capacity, struct ratelimit **ret);
struct ratelimit *ratelimit_free(struct ratelimit *rl);

static inline void
ratelimit_freep(struct ratelimit **rl)
{
	ratelimit_free(*rl);
}
#define _cleanup_ratelimit_ _cleanup_(ratelimit_freep)

/* Takes one token from src's bucket. Returns true when the event may happen,
 * false when the source is over its rate. src must be a complete sockaddr_in
 * or sockaddr_in6; any other family is not limited (always true). A now_usec
 * earlier than the last call's is treated as no time passing. */
bool ratelimit_allow(struct ratelimit *rl, const struct sockaddr *src, uint64_t now_usec);

/* Sources currently remembered (<= capacity). */
size_t ratelimit_entries(const struct ratelimit *rl);

/* Writes src's source key: an IPv4 address (or the IPv4 address an
 * IPv4-mapped IPv6 address carries) as ::ffff:a.b.c.d, an IPv6 address as its
 * /64 followed by zeros. Returns false for another family (no key: not
 * limited). Every per-source limit of echod counts by this key. */
bool ratelimit_source_key(const struct sockaddr *src, uint8_t key[static 16]);

/* Hash tables of sources (here and in admission.c) hash keys with a secret
 * seed, so that a client cannot choose addresses that all land in one
 * chain. */
uint64_t ratelimit_source_seed(void);
uint32_t ratelimit_source_hash(uint64_t seed, const uint8_t key[static 16]);

/* One token bucket shared by processes, for a limit on the whole service
 * rather than per source: *bucket is a zero-initialised word in shared memory
 * that only these functions touch. rate: tokens per second, 0 = no limit
 * (always true); burst: tokens a quiet bucket holds, 0 = rate.
 *
 * ratelimit_shared_take() takes one token and returns true, or returns false
 * and, if ret_due_usec is not NULL, writes when the next token is due (same
 * clock as now_usec). ratelimit_shared_refund() returns a token taken for
 * something that did not happen after all. Lock-free. */
bool ratelimit_shared_take(uint64_t *bucket, uint32_t rate, uint32_t burst, uint64_t now_usec,
			   uint64_t *ret_due_usec);
void ratelimit_shared_refund(uint64_t *bucket, uint32_t rate);
