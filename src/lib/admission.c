/* The per-source connection table: a chained hash in shared memory.
 *
 * Entries are the truth, the chains and the free list only an index: an entry
 * is in use exactly when its count is nonzero, and the count is written last
 * when an entry is filled and first when it is emptied, so a process killed
 * halfway leaves entries that are each whole, and an index that
 * table_rebuild() can redo from them. Memory is mapped once; pages are touched
 * only as entries are first used (indices start at 1 so that zero-filled
 * memory is an empty table). */
#include "admission.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ratelimit.h"
#include "scoreboard.h"
#include "util.h"

#define NONE 0u

struct entry {
	uint8_t key[16];
	pid_t owner;
	uint32_t count; /* 0: free */
	uint32_t hash;
	uint32_t next; /* chain or free list, 1-based; NONE at the end */
};

struct admission_table {
	pthread_mutex_t lock;
	size_t size;
	uint64_t seed;
	uint32_t capacity;
	uint32_t mask; /* number of chains - 1 */
	uint32_t used; /* entries ever used: [1, used] */
	uint32_t free_head;
	/* uint32_t heads[mask + 1], then struct entry entries[capacity] */
};

static uint32_t *
heads(struct admission_table *t)
{
	return (uint32_t *)(t + 1);
}

/* 1-based: entry(t, 1) is the first. */
static struct entry *
entry(struct admission_table *t, uint32_t i)
{
	return (struct entry *)(heads(t) + t->mask + 1) + (i - 1);
}

int
admission_table_new(unsigned capacity, struct admission_table **ret, int *ret_fd)
{
	struct admission_table *t;
	pthread_mutexattr_t attr;
	uint32_t chains = 1;
	size_t size;
	int fd, r;

	if (capacity == 0 || capacity > (1u << 24))
		return -EINVAL;
	while (chains < capacity)
		chains <<= 1;
	size = sizeof(*t) + chains * sizeof(uint32_t) + capacity * sizeof(struct entry);
	/* A memfd rather than anonymous pages, so that the connection forker,
	 * which is exec'd, can map it too (admission_table_attach()). */
	fd = memfd_sized("echod-sources", size);
	if (fd < 0)
		return fd;
	t = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (t == MAP_FAILED) {
		r = negative_errno();
		close(fd);
		return r;
	}

	r = pthread_mutexattr_init(&attr);
	if (r == 0)
		r = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	/* Robust: a worker killed while holding it must not stop the others. */
	if (r == 0)
		r = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
	if (r == 0)
		r = pthread_mutex_init(&t->lock, &attr);
	pthread_mutexattr_destroy(&attr);
	if (r != 0) {
		munmap(t, size);
		close(fd);
		return -r;
	}
	t->size = size;
	t->capacity = capacity;
	t->mask = chains - 1;
	t->seed = ratelimit_source_seed();
	*ret = t;
	if (ret_fd)
		*ret_fd = fd;
	else
		close(fd);
	return 0;
}

void
admission_table_free(struct admission_table *t)
{
	if (!t)
		return;
	pthread_mutex_destroy(&t->lock);
	munmap(t, t->size);
}

int
admission_table_attach(int fd, struct admission_table **ret)
{
	struct admission_table *t;
	struct stat st;

	if (fstat(fd, &st) < 0)
		return negative_errno();
	if ((size_t)st.st_size < sizeof(*t))
		return -EBADMSG;
	t = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (t == MAP_FAILED)
		return negative_errno();
	if (t->size != (size_t)st.st_size) {
		munmap(t, (size_t)st.st_size);
		return -EBADMSG;
	}
	*ret = t;
	return 0;
}

void
admission_table_detach(struct admission_table *t)
{
	if (t)
		munmap(t, t->size);
}

/* Redoes the chains and the free list from the entries in use. */
static void
table_rebuild(struct admission_table *t)
{
	memset(heads(t), 0, (t->mask + 1) * sizeof(uint32_t));
	t->free_head = NONE;
	for (uint32_t i = 1; i <= t->used; i++) {
		struct entry *e = entry(t, i);
		uint32_t *link = e->count ? &heads(t)[e->hash & t->mask] : &t->free_head;

		e->next = *link;
		*link = i;
	}
}

/* False when the lock cannot be had (it never should: a dead holder's
 * EOWNERDEAD is repaired here); callers then count nothing and refuse
 * nobody, rather than stop serving. */
static bool
table_lock(struct admission_table *t)
{
	int r = pthread_mutex_lock(&t->lock);

	if (r == EOWNERDEAD) {
		table_rebuild(t);
		r = pthread_mutex_consistent(&t->lock);
	}
	return r == 0;
}

static void
table_unlock(struct admission_table *t)
{
	pthread_mutex_unlock(&t->lock);
}

/* Sums the counts of key over all owners; *ret_mine is owner's entry or NONE. */
static unsigned
source_sum(struct admission_table *t, const uint8_t key[static 16], uint32_t hash, pid_t owner,
	   uint32_t *ret_mine)
{
	unsigned sum = 0;

	*ret_mine = NONE;
	for (uint32_t i = heads(t)[hash & t->mask]; i != NONE; i = entry(t, i)->next) {
		struct entry *e = entry(t, i);

		if (e->hash != hash || memcmp(e->key, key, 16) != 0 || e->count == 0)
			continue;
		sum += e->count;
		if (e->owner == owner)
			*ret_mine = i;
	}
	return sum;
}

/* Returns a new entry for (key, owner) with a count of 1, or NONE when full. */
static uint32_t
entry_add(struct admission_table *t, const uint8_t key[static 16], uint32_t hash, pid_t owner)
{
	uint32_t i, *head = &heads(t)[hash & t->mask];
	struct entry *e;

	if (t->free_head != NONE) {
		i = t->free_head;
		t->free_head = entry(t, i)->next;
	} else if (t->used < t->capacity) {
		i = ++t->used;
	} else {
		return NONE;
	}
	e = entry(t, i);
	memcpy(e->key, key, 16);
	e->owner = owner;
	e->hash = hash;
	e->next = *head;
	__atomic_store_n(&e->count, 1, __ATOMIC_RELEASE);
	__atomic_store_n(head, i, __ATOMIC_RELEASE);
	return i;
}

static void
entry_remove(struct admission_table *t, uint32_t i)
{
	struct entry *e = entry(t, i);
	uint32_t *link = &heads(t)[e->hash & t->mask];

	__atomic_store_n(&e->count, 0, __ATOMIC_RELEASE);
	while (*link != i)
		link = &entry(t, *link)->next;
	*link = e->next;
	e->next = t->free_head;
	t->free_head = i;
}

int
admission_take(struct admission_table *t, const struct sockaddr *peer, pid_t owner, unsigned limit,
	       struct admission_ticket *ret)
{
	struct admission_ticket ticket = {0};
	uint32_t hash, mine;
	int admitted = 1;

	if (limit == 0 || !t || !ratelimit_source_key(peer, ticket.key)) {
		*ret = ticket;
		return 1;
	}
	hash = ratelimit_source_hash(t->seed, ticket.key);
	if (!table_lock(t)) {
		*ret = (struct admission_ticket){0};
		return 1;
	}
	if (source_sum(t, ticket.key, hash, owner, &mine) >= limit)
		admitted = 0;
	else if (mine != NONE)
		ticket.counted = entry(t, mine)->count++ > 0;
	else
		ticket.counted = entry_add(t, ticket.key, hash, owner) != NONE;
	table_unlock(t);
	*ret = ticket;
	return admitted;
}

void
admission_put(struct admission_table *t, pid_t owner, const struct admission_ticket *ticket)
{
	uint32_t hash, mine;

	if (!t || !ticket->counted)
		return;
	hash = ratelimit_source_hash(t->seed, ticket->key);
	if (!table_lock(t))
		return;
	source_sum(t, ticket->key, hash, owner, &mine);
	if (mine != NONE) {
		if (entry(t, mine)->count == 1)
			entry_remove(t, mine);
		else
			entry(t, mine)->count--;
	}
	table_unlock(t);
}

void
admission_forget_owner(struct admission_table *t, pid_t owner)
{
	if (!t || !table_lock(t))
		return;
	for (uint32_t i = 1; i <= t->used; i++)
		if (entry(t, i)->count && entry(t, i)->owner == owner)
			entry_remove(t, i);
	table_unlock(t);
}

unsigned
admission_count(struct admission_table *t, const struct sockaddr *peer)
{
	uint8_t key[16];
	uint32_t hash, mine;
	unsigned n;

	if (!t || !ratelimit_source_key(peer, key))
		return 0;
	hash = ratelimit_source_hash(t->seed, key);
	if (!table_lock(t))
		return 0;
	n = source_sum(t, key, hash, 0, &mine);
	table_unlock(t);
	return n;
}

bool
admission_full(struct admission_table *t, const struct sockaddr *peer, unsigned limit)
{
	return limit > 0 && admission_count(t, peer) >= limit;
}

bool
admission_rate_take(struct scoreboard *sb, unsigned rate, uint64_t now_ms, uint64_t *ret_resume_ms)
{
	uint64_t due_usec;

	if (rate == 0 || scoreboard_rate_take(sb, rate, now_ms * 1000, &due_usec))
		return true;
	*ret_resume_ms = (due_usec + 999) / 1000;
	return false;
}

void
admission_rate_undo(struct scoreboard *sb, unsigned rate)
{
	scoreboard_rate_undo(sb, rate);
}
