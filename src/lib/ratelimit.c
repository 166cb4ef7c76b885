/* Per-source token buckets in a fixed-size chained hash table with an LRU list.
 *
 * All entries are allocated at creation; a miss on a full table reuses the
 * least recently seen entry, so memory never grows whatever the sources do.
 * Tokens are kept in millionths so that refilling is integer arithmetic on
 * microseconds: a source earns exactly `rate` millionths per microsecond. */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "ratelimit.h"

#define NONE UINT32_MAX
#define UNITS_PER_TOKEN UINT64_C(1000000)

struct entry {
	/* IPv4 as ::ffff:a.b.c.d, IPv6 as the /64 prefix followed by zeros; the
	 * two never collide because a /64 key's low half is always zero. */
	uint8_t key[16];
	uint64_t tokens; /* in millionths of a token, <= burst */
	uint64_t last_usec;
	uint32_t hash;
	uint32_t next;	/* hash chain */
	uint32_t newer; /* LRU list; NONE at the ends */
	uint32_t older;
};

struct ratelimit {
	uint64_t rate;	/* tokens per second = millionths per microsecond */
	uint64_t burst; /* in millionths */
	uint64_t seed;
	uint32_t capacity;
	uint32_t used;
	uint32_t mask;
	uint32_t newest;
	uint32_t oldest;
	uint32_t *buckets;
	struct entry *entries;
};

int
ratelimit_new(uint32_t rate, uint32_t burst, size_t capacity, struct ratelimit **ret)
{
	struct ratelimit *rl;
	uint32_t nbuckets = 1;

	/* Indices are 32-bit with NONE reserved; half of that is already absurd. */
	if (capacity == 0 || capacity > UINT32_MAX / 2)
		return -EINVAL;

	while (nbuckets < capacity)
		nbuckets <<= 1;

	rl = calloc(1, sizeof(*rl));
	if (!rl)
		return -ENOMEM;
	rl->buckets = malloc(nbuckets * sizeof(*rl->buckets));
	rl->entries = calloc(capacity, sizeof(*rl->entries));
	if (!rl->buckets || !rl->entries) {
		ratelimit_free(rl);
		return -ENOMEM;
	}
	memset(rl->buckets, 0xff, nbuckets * sizeof(*rl->buckets));

	rl->rate = rate;
	rl->burst = (uint64_t)(burst ? burst : rate) * UNITS_PER_TOKEN;
	rl->capacity = (uint32_t)capacity;
	rl->mask = nbuckets - 1;
	rl->newest = rl->oldest = NONE;

	rl->seed = ratelimit_source_seed();

	*ret = rl;
	return 0;
}

struct ratelimit *
ratelimit_free(struct ratelimit *rl)
{
	if (rl) {
		free(rl->buckets);
		free(rl->entries);
		free(rl);
	}
	return NULL;
}

size_t
ratelimit_entries(const struct ratelimit *rl)
{
	return rl->used;
}

bool
ratelimit_source_key(const struct sockaddr *src, uint8_t key[static 16])
{
	static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	switch (src->sa_family) {
	case AF_INET: {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)src;

		memcpy(key, v4mapped, sizeof(v4mapped));
		memcpy(key + 12, &sin->sin_addr, 4);
		return true;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)src;

		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			memcpy(key, &sin6->sin6_addr, 16);
		} else {
			memcpy(key, &sin6->sin6_addr, 8);
			memset(key + 8, 0, 8);
		}
		return true;
	}
	default:
		return false;
	}
}

static uint64_t
mix64(uint64_t x)
{
	/* MurmurHash3's finaliser: every input bit reaches every output bit. */
	x ^= x >> 33;
	x *= UINT64_C(0xff51afd7ed558ccd);
	x ^= x >> 33;
	x *= UINT64_C(0xc4ceb9fe1a85ec53);
	x ^= x >> 33;
	return x;
}

uint64_t
ratelimit_source_seed(void)
{
	uint64_t seed;

	/* Without entropy yet (early boot), a weaker seed still works. */
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed))
		seed = now_usec() ^ (uintptr_t)&seed;
	return seed;
}

uint32_t
ratelimit_source_hash(uint64_t seed, const uint8_t key[static 16])
{
	uint64_t a, b;

	memcpy(&a, key, 8);
	memcpy(&b, key + 8, 8);
	return (uint32_t)(mix64(mix64(seed ^ a) ^ b) >> 32);
}

static void
lru_unlink(struct ratelimit *rl, uint32_t i)
{
	struct entry *e = &rl->entries[i];

	if (e->newer != NONE)
		rl->entries[e->newer].older = e->older;
	else
		rl->newest = e->older;
	if (e->older != NONE)
		rl->entries[e->older].newer = e->newer;
	else
		rl->oldest = e->newer;
}

static void
lru_push_newest(struct ratelimit *rl, uint32_t i)
{
	struct entry *e = &rl->entries[i];

	e->newer = NONE;
	e->older = rl->newest;
	if (rl->newest != NONE)
		rl->entries[rl->newest].newer = i;
	rl->newest = i;
	if (rl->oldest == NONE)
		rl->oldest = i;
}

static void
chain_unlink(struct ratelimit *rl, uint32_t i)
{
	uint32_t *p = &rl->buckets[rl->entries[i].hash & rl->mask];

	while (*p != i)
		p = &rl->entries[*p].next;
	*p = rl->entries[i].next;
}

/* Returns src's entry, creating it (with a full bucket) if it is not known. */
static struct entry *
lookup(struct ratelimit *rl, const uint8_t key[static 16], uint64_t now_usec)
{
	uint32_t h = ratelimit_source_hash(rl->seed, key), i;
	struct entry *e;

	for (i = rl->buckets[h & rl->mask]; i != NONE; i = rl->entries[i].next) {
		e = &rl->entries[i];
		if (e->hash == h && memcmp(e->key, key, 16) == 0) {
			lru_unlink(rl, i);
			lru_push_newest(rl, i);
			return e;
		}
	}

	if (rl->used < rl->capacity) {
		i = rl->used++;
	} else {
		i = rl->oldest;
		chain_unlink(rl, i);
		lru_unlink(rl, i);
	}

	e = &rl->entries[i];
	memcpy(e->key, key, 16);
	e->hash = h;
	e->tokens = rl->burst;
	e->last_usec = now_usec;
	e->next = rl->buckets[h & rl->mask];
	rl->buckets[h & rl->mask] = i;
	lru_push_newest(rl, i);
	return e;
}

static void
refill(const struct ratelimit *rl, struct entry *e, uint64_t now_usec)
{
	uint64_t elapsed, missing;

	if (now_usec <= e->last_usec)
		return;
	elapsed = now_usec - e->last_usec;
	e->last_usec = now_usec;

	/* Compare before multiplying: a long-idle source would overflow. */
	missing = rl->burst - e->tokens;
	if (elapsed >= missing / rl->rate + 1)
		e->tokens = rl->burst;
	else
		e->tokens += elapsed * rl->rate;
}

bool
ratelimit_allow(struct ratelimit *rl, const struct sockaddr *src, uint64_t now_usec)
{
	uint8_t key[16];
	struct entry *e;

	if (rl->rate == 0 || !ratelimit_source_key(src, key))
		return true;

	e = lookup(rl, key, now_usec);
	refill(rl, e, now_usec);
	if (e->tokens < UNITS_PER_TOKEN)
		return false;
	e->tokens -= UNITS_PER_TOKEN;
	return true;
}

/* --- one bucket shared by processes --- */

/* The bucket is kept as the time at which it will be full again, in
 * nanoseconds ("theoretical arrival time" of the generic cell rate
 * algorithm, the token bucket restated): a token is there when that time is
 * at most burst - 1 intervals ahead of now. One word, so processes share it
 * with a compare-and-swap and no lock. */
static uint64_t
interval_nsec(uint32_t rate)
{
	return UINT64_C(1000000000) / rate;
}

bool
ratelimit_shared_take(uint64_t *bucket, uint32_t rate, uint32_t burst, uint64_t now_usec,
		      uint64_t *ret_due_usec)
{
	uint64_t now = now_usec * 1000, t, tolerance, cur, next;

	if (rate == 0)
		return true;
	t = interval_nsec(rate);
	tolerance = (uint64_t)((burst ? burst : rate) - 1) * t;
	cur = __atomic_load_n(bucket, __ATOMIC_RELAXED);
	do {
		if (cur > now + tolerance) {
			if (ret_due_usec)
				*ret_due_usec = (cur - tolerance + 999) / 1000;
			return false;
		}
		next = (cur > now ? cur : now) + t;
	} while (!__atomic_compare_exchange_n(bucket, &cur, next, true, __ATOMIC_RELAXED,
					      __ATOMIC_RELAXED));
	return true;
}

void
ratelimit_shared_refund(uint64_t *bucket, uint32_t rate)
{
	uint64_t t, cur;

	if (rate == 0)
		return;
	t = interval_nsec(rate);
	cur = __atomic_load_n(bucket, __ATOMIC_RELAXED);
	while (!__atomic_compare_exchange_n(bucket, &cur, cur > t ? cur - t : 0, true,
					    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}
