#include "scoreboard.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ratelimit.h"
#include "util.h"

static size_t
header_slots(void)
{
	return (sizeof(struct scoreboard_header) + sizeof(struct scoreboard_slot) - 1) /
	       sizeof(struct scoreboard_slot);
}

static size_t
mapping_size(unsigned n_slots)
{
	return sizeof(struct scoreboard_slot) * (n_slots + header_slots());
}

static uint64_t
monotonic_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* DIR/scoreboard, sized, written under a temporary name and renamed, so a
 * reader never finds a short file or one without its magic. Takes nothing;
 * returns the open fd and the final path. */
static int
file_create(const char *dir, size_t size, char **ret_path, char **ret_tmp)
{
	_cleanup_free_ char *path = NULL, *tmp = NULL;
	int fd;

	if (asprintf(&path, "%s/" SCOREBOARD_FILE, dir) < 0 ||
	    asprintf(&tmp, "%s/." SCOREBOARD_FILE ".%d", dir, (int)getpid()) < 0)
		return -ENOMEM;
	fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return negative_errno();
	if (ftruncate(fd, (off_t)size) < 0) {
		int r = negative_errno();
		unlink(tmp);
		close(fd);
		return r;
	}
	*ret_path = TAKE_PTR(path);
	*ret_tmp = TAKE_PTR(tmp);
	return fd;
}

int
scoreboard_new(struct scoreboard *ret, unsigned n_slots, unsigned max_connections,
	       const char *dir)
{
	size_t size = mapping_size(n_slots);
	_cleanup_free_ char *path = NULL, *tmp = NULL;
	int doorbell, fd = -1, r;
	void *p;

	doorbell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (doorbell < 0)
		return negative_errno();
	/* Without a file, a memfd rather than anonymous pages: the connection
	 * forker, which is exec'd, maps it from the fd (scoreboard_attach()). */
	fd = dir ? file_create(dir, size, &path, &tmp) : memfd_sized("echod-scoreboard", size);
	if (fd < 0) {
		close(doorbell);
		return fd;
	}
	/* A header rounded up to whole slots keeps the slots cache-line aligned. */
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		r = negative_errno();
		if (tmp)
			unlink(tmp);
		close(fd);
		close(doorbell);
		return r;
	}
	*ret = (struct scoreboard){
	    .header = p,
	    .slots = (struct scoreboard_slot *)p + header_slots(),
	    .n_slots = n_slots,
	    .mapping_size = size,
	    .doorbell = doorbell,
	    .fd = fd,
	    .sources_fd = -1,
	};
	ret->header->max_connections = max_connections;
	ret->header->n_slots = n_slots;
	ret->header->supervisor = getpid();
	ret->header->started_usec = monotonic_usec();
	SB_SET(ret->header->magic, SCOREBOARD_MAGIC);
	if (tmp && rename(tmp, path) < 0) {
		r = negative_errno();
		unlink(tmp);
		scoreboard_free(ret);
		return r;
	}
	ret->path = TAKE_PTR(path);
	return 0;
}

void
scoreboard_free(struct scoreboard *sb)
{
	if (sb->path)
		unlink(sb->path);
	free(sb->path);
	if (sb->header)
		munmap(sb->header, sb->mapping_size);
	if (sb->header && sb->doorbell >= 0)
		close(sb->doorbell);
	if (sb->header && sb->fd >= 0)
		close(sb->fd);
	*sb = (struct scoreboard){.doorbell = -1, .fd = -1, .sources_fd = -1};
}

void
scoreboard_ring(const struct scoreboard *sb)
{
	uint64_t one = 1;

	/* Only a counter at its maximum refuses, and the watchers read it. */
	(void)!write(sb->doorbell, &one, sizeof(one));
}

static void
reset_counts(struct scoreboard_slot *s, struct scoreboard_slot *r)
{
	SB_ADD(r->served, SB_GET(s->served));
	SB_ADD(r->bytes_in, SB_GET(s->bytes_in));
	SB_ADD(r->bytes_out, SB_GET(s->bytes_out));
	SB_ADD(r->lost, SB_GET(s->lost));
	SB_ADD(r->refused, SB_GET(s->refused));
	SB_ADD(r->refused_access, SB_GET(s->refused_access));
	SB_ADD(r->refused_proxy, SB_GET(s->refused_proxy));
	SB_ADD(r->dgrams_in, SB_GET(s->dgrams_in));
	SB_ADD(r->dgrams_out, SB_GET(s->dgrams_out));
	for (unsigned d = 0; d < DROP_REASONS; d++)
		SB_ADD(r->dgrams_dropped[d], SB_GET(s->dgrams_dropped[d]));
	memset(s, 0, sizeof(*s));
}

void
scoreboard_slot_reset(struct scoreboard *sb, unsigned i)
{
	struct scoreboard_slot *s = &sb->slots[i], *r = &sb->header->retired;

	/* Odd: a reader that started meanwhile may count this slot twice
	 * (in retired and here) or not at all, and reads again. */
	SB_ADD(sb->header->reset_seq, 1);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	reset_counts(s, r);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	SB_ADD(sb->header->reset_seq, 1);
}

int
scoreboard_find_free(const struct scoreboard *sb)
{
	for (unsigned i = 0; i < sb->n_slots; i++)
		if (SB_GET(sb->slots[i].state) == SLOT_EMPTY)
			return (int)i;
	return -ENOSPC;
}

void
scoreboard_set_workers(struct scoreboard *sb, unsigned n)
{
	SB_SET(sb->header->workers, n);
}

unsigned
scoreboard_workers(const struct scoreboard *sb)
{
	return SB_GET(sb->header->workers);
}

bool
scoreboard_rate_take(struct scoreboard *sb, unsigned rate, uint64_t now_usec,
		     uint64_t *ret_due_usec)
{
	if (ratelimit_shared_take(&sb->header->accept_bucket, rate, 0, now_usec, ret_due_usec))
		return true;
	SB_ADD(sb->header->accept_pauses, 1);
	return false;
}

void
scoreboard_rate_undo(struct scoreboard *sb, unsigned rate)
{
	ratelimit_shared_refund(&sb->header->accept_bucket, rate);
}

void
scoreboard_totals(const struct scoreboard *sb, struct scoreboard_totals *ret)
{
	const struct scoreboard_slot *r = &sb->header->retired;
	struct scoreboard_totals t = {
		.served = SB_GET(r->served),
		.bytes_in = SB_GET(r->bytes_in),
		.bytes_out = SB_GET(r->bytes_out),
		.lost = SB_GET(r->lost),
		.refused = SB_GET(r->refused),
		.refused_access = SB_GET(r->refused_access),
		.refused_proxy = SB_GET(r->refused_proxy),
		.dgrams_in = SB_GET(r->dgrams_in),
		.dgrams_out = SB_GET(r->dgrams_out),
	};

	for (unsigned i = 0; i < sb->n_slots; i++) {
		const struct scoreboard_slot *s = &sb->slots[i];
		uint32_t state = SB_GET(s->state);

		if (state == SLOT_EMPTY)
			continue;
		t.workers_running += state == SLOT_RUNNING;
		t.active += SB_GET(s->active);
		t.served += SB_GET(s->served);
		t.bytes_in += SB_GET(s->bytes_in);
		t.bytes_out += SB_GET(s->bytes_out);
		t.lost += SB_GET(s->lost);
		t.refused += SB_GET(s->refused);
		t.refused_access += SB_GET(s->refused_access);
		t.refused_proxy += SB_GET(s->refused_proxy);
		t.dgrams_in += SB_GET(s->dgrams_in);
		t.dgrams_out += SB_GET(s->dgrams_out);
		for (unsigned d = 0; d < DROP_REASONS; d++)
			t.dropped[d] += SB_GET(s->dgrams_dropped[d]);
	}
	t.accept_pauses = SB_GET(sb->header->accept_pauses);
	for (unsigned d = 0; d < DROP_REASONS; d++) {
		t.dropped[d] += SB_GET(r->dgrams_dropped[d]);
		t.dgrams_dropped += t.dropped[d];
	}
	*ret = t;
}

void
scoreboard_set_model(struct scoreboard *sb, const char *model, unsigned generation)
{
	/* Byte by byte: a reader copies it whole and ends it itself. */
	for (size_t i = 0; i < SCOREBOARD_MODEL_MAX - 1; i++) {
		char ch = model[i];
		SB_SET(sb->header->model[i], ch);
		if (!ch)
			break;
	}
	SB_SET(sb->header->generation, generation);
}

void
scoreboard_count_reload(struct scoreboard *sb, bool ok)
{
	SB_ADD(*(ok ? &sb->header->reloads_ok : &sb->header->reloads_failed), 1);
}

void
scoreboard_count_kept_back(struct scoreboard *sb, unsigned n)
{
	SB_ADD(sb->header->kept_back, n);
}

void
scoreboard_set_accept_queue(struct scoreboard *sb, unsigned queued, unsigned room)
{
	SB_SET(sb->header->accept_queue, queued);
	SB_SET(sb->header->accept_queue_max, room);
}

void
scoreboard_slot_start(struct scoreboard *sb, unsigned i, unsigned generation)
{
	SB_SET(sb->slots[i].generation, generation);
	SB_SET(sb->slots[i].started_usec, monotonic_usec());
}

/* The header of the scoreboard behind fd, if it is one of this layout;
 * *ret_size is the file's size, which that layout fixes. */
static int
read_header(int fd, struct scoreboard_header *h, size_t *ret_size)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return negative_errno();
	if ((size_t)st.st_size < sizeof(*h) || pread(fd, h, sizeof(*h), 0) != (ssize_t)sizeof(*h) ||
	    h->magic != SCOREBOARD_MAGIC || h->n_slots > SCOREBOARD_SLOTS ||
	    (size_t)st.st_size != mapping_size(h->n_slots))
		return -EBADMSG;
	*ret_size = (size_t)st.st_size;
	return 0;
}

/* Maps what read_header() checked, for someone else's scoreboard: no
 * doorbell, no sources table, no fd kept. */
static int
map_existing(struct scoreboard *ret, int fd, int prot, const struct scoreboard_header *h,
	     size_t size)
{
	void *p = mmap(NULL, size, prot, MAP_SHARED, fd, 0);

	if (p == MAP_FAILED)
		return negative_errno();
	*ret = (struct scoreboard){
	    .header = p,
	    .slots = (struct scoreboard_slot *)p + header_slots(),
	    .n_slots = h->n_slots,
	    .mapping_size = size,
	    .doorbell = -1,
	    .fd = -1,
	    .sources_fd = -1,
	};
	return 0;
}

int
scoreboard_open(struct scoreboard *ret, const char *dir)
{
	_cleanup_free_ char *path = NULL;
	_cleanup_close_ int fd = -1;
	struct scoreboard_header h;
	size_t size;
	int r;

	if (asprintf(&path, "%s/" SCOREBOARD_FILE, dir) < 0)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return negative_errno();
	r = read_header(fd, &h, &size);
	if (r < 0)
		return r;
	/* EPERM: alive, someone else's; only ESRCH says it is gone. */
	if (h.supervisor <= 0 || (kill(h.supervisor, 0) < 0 && errno == ESRCH))
		return -ESRCH;
	return map_existing(ret, fd, PROT_READ, &h, size);
}

int
scoreboard_attach(struct scoreboard *ret, int fd)
{
	struct scoreboard_header h;
	size_t size;
	int r = read_header(fd, &h, &size);

	return r < 0 ? r : map_existing(ret, fd, PROT_READ | PROT_WRITE, &h, size);
}

static void
slot_copy(struct scoreboard_slot *d, const struct scoreboard_slot *s)
{
	*d = (struct scoreboard_slot){
	    .pid = SB_GET(s->pid),
	    .state = SB_GET(s->state),
	    .watching = SB_GET(s->watching),
	    .generation = SB_GET(s->generation),
	    .active = SB_GET(s->active),
	    .served = SB_GET(s->served),
	    .received = SB_GET(s->received),
	    .bytes_in = SB_GET(s->bytes_in),
	    .bytes_out = SB_GET(s->bytes_out),
	    .lost = SB_GET(s->lost),
	    .refused = SB_GET(s->refused),
	    .refused_access = SB_GET(s->refused_access),
	    .refused_proxy = SB_GET(s->refused_proxy),
	    .dgrams_in = SB_GET(s->dgrams_in),
	    .dgrams_out = SB_GET(s->dgrams_out),
	    .heartbeat = SB_GET(s->heartbeat),
	    .capacity = SB_GET(s->capacity),
	    .started_usec = SB_GET(s->started_usec),
	};
	for (unsigned k = 0; k < DROP_REASONS; k++)
		d->dgrams_dropped[k] = SB_GET(s->dgrams_dropped[k]);
}

/* One pass; false when a slot was emptied meanwhile. */
static bool
snapshot_once(const struct scoreboard *sb, struct scoreboard_snapshot *snap)
{
	const struct scoreboard_header *h = sb->header;
	uint32_t seq = SB_GET(h->reset_seq);

	if (seq & 1)
		return false;
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	snap->n_slots = 0;
	for (unsigned i = 0; i < sb->n_slots; i++) {
		if (SB_GET(sb->slots[i].state) == SLOT_EMPTY)
			continue;
		snap->slots[snap->n_slots].index = i;
		slot_copy(&snap->slots[snap->n_slots].s, &sb->slots[i]);
		snap->n_slots++;
	}
	scoreboard_totals(sb, &snap->totals);
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	return SB_GET(h->reset_seq) == seq;
}

int
scoreboard_snapshot(const struct scoreboard *sb, struct scoreboard_snapshot *ret)
{
	const struct scoreboard_header *h = sb->header;
	struct scoreboard_snapshot snap = {0};
	bool done = false;

	snap.slots = calloc(sb->n_slots ? sb->n_slots : 1, sizeof(*snap.slots));
	if (!snap.slots)
		return -ENOMEM;
	/* A reset takes a few hundred nanoseconds; even Model=fork's one per
	 * connection leaves long gaps between them. */
	for (unsigned tries = 0; tries < 1000 && !done; tries++) {
		done = snapshot_once(sb, &snap);
		if (!done)
			nanosleep(&(struct timespec){.tv_nsec = 10000}, NULL);
	}
	if (!done) {
		free(snap.slots);
		return -EAGAIN;
	}
	snap.supervisor = SB_GET(h->supervisor);
	/* Another process's bytes: only a name's letters are taken. */
	for (size_t i = 0; i < SCOREBOARD_MODEL_MAX - 1; i++) {
		char ch = SB_GET(h->model[i]);
		if (!ch)
			break;
		snap.model[i] = (ch >= 'a' && ch <= 'z') || ch == '-' ? ch : '?';
	}
	snap.generation = SB_GET(h->generation);
	snap.now_usec = monotonic_usec();
	snap.started_usec = SB_GET(h->started_usec);
	snap.max_connections = SB_GET(h->max_connections);
	snap.reserved = SB_GET(h->active_total);
	snap.accept_queue = SB_GET(h->accept_queue);
	snap.accept_queue_max = SB_GET(h->accept_queue_max);
	snap.reloads_ok = SB_GET(h->reloads_ok);
	snap.reloads_failed = SB_GET(h->reloads_failed);
	snap.kept_back = SB_GET(h->kept_back);
	*ret = snap;
	return 0;
}

void
scoreboard_snapshot_free(struct scoreboard_snapshot *snap)
{
	free(snap->slots);
	snap->slots = NULL;
	snap->n_slots = 0;
}
