/* echod-bench: latency histogram, payload generation, the bulk pattern. */
#include <string.h>

#include "bench.h"

uint8_t pattern[PATTERN_PERIOD + PATTERN_SPAN];

static unsigned
hist_bucket(uint64_t v)
{
	unsigned msb, shift;

	if (v < (1u << HIST_SUB_BITS))
		return (unsigned)v;
	if (v >= (1ULL << HIST_MAX_BITS))
		v = (1ULL << HIST_MAX_BITS) - 1;
	msb = 63 - (unsigned)__builtin_clzll(v);
	shift = msb - HIST_SUB_BITS + 1;
	/* v >> shift is in [2^(SUB-1), 2^SUB): the buckets of successive powers
	 * of two follow each other without gaps. */
	return (shift << (HIST_SUB_BITS - 1)) + (unsigned)(v >> shift);
}

/* The middle of bucket b, so quantiles are not biased low. */
static uint64_t
hist_value(unsigned b)
{
	unsigned shift;
	uint64_t mant;

	if (b < (1u << HIST_SUB_BITS))
		return b;
	shift = (b >> (HIST_SUB_BITS - 1)) - 1;
	mant = b - (shift << (HIST_SUB_BITS - 1));
	return (mant << shift) + (1ULL << (shift - 1));
}

void
hist_add(struct hist *h, uint64_t ns)
{
	h->b[hist_bucket(ns)]++;
	h->n++;
}

void
hist_merge(struct hist *dst, const struct hist *src)
{
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		dst->b[i] += src->b[i];
	dst->n += src->n;
}

uint64_t
hist_quantile(const struct hist *h, double q)
{
	uint64_t rank, seen = 0;

	if (h->n == 0)
		return 0;
	rank = (uint64_t)(q * (double)h->n);
	if (rank < 1)
		rank = 1;
	if (rank > h->n)
		rank = h->n;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= rank)
			return hist_value(i);
	}
	return hist_value(HIST_BUCKETS - 1);
}

void
stats_connfail(struct bench_stats *st, int err)
{
	if (st->connfails++ == 0)
		st->connfail_errno = err;
}

void
rng_fill(uint64_t *s, uint8_t *buf, size_t len)
{
	while (len >= 8) {
		uint64_t x = rng_next(s);

		memcpy(buf, &x, 8);
		buf += 8;
		len -= 8;
	}
	if (len > 0) {
		uint64_t x = rng_next(s);

		memcpy(buf, &x, len);
	}
}

void
pattern_init(uint64_t seed)
{
	uint64_t s = seed | 1;

	rng_fill(&s, pattern, PATTERN_PERIOD);
	/* The span is longer than the period: copy forwards, byte by byte. */
	for (size_t i = PATTERN_PERIOD; i < sizeof(pattern); i++)
		pattern[i] = pattern[i - PATTERN_PERIOD];
}
