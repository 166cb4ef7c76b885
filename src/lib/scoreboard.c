#include "scoreboard.h"

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ratelimit.h"
#include "util.h"

int
scoreboard_new(struct scoreboard *ret, unsigned n_slots, unsigned max_connections)
{
	size_t header_slots = (sizeof(struct scoreboard_header) + sizeof(struct scoreboard_slot) - 1) /
			      sizeof(struct scoreboard_slot);
	size_t size = sizeof(struct scoreboard_slot) * (n_slots + header_slots);
	int doorbell;
	void *p;

	doorbell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (doorbell < 0)
		return negative_errno();
	/* A header rounded up to whole slots keeps the slots cache-line aligned. */
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		int r = negative_errno();
		close(doorbell);
		return r;
	}
	*ret = (struct scoreboard){
	    .header = p,
	    .slots = (struct scoreboard_slot *)p + header_slots,
	    .n_slots = n_slots,
	    .mapping_size = size,
	    .doorbell = doorbell,
	};
	ret->header->max_connections = max_connections;
	return 0;
}

void
scoreboard_free(struct scoreboard *sb)
{
	if (sb->header)
		munmap(sb->header, sb->mapping_size);
	if (sb->header && sb->doorbell >= 0)
		close(sb->doorbell);
	*sb = (struct scoreboard){.doorbell = -1};
}

void
scoreboard_ring(const struct scoreboard *sb)
{
	uint64_t one = 1;

	/* Only a counter at its maximum refuses, and the watchers read it. */
	(void)!write(sb->doorbell, &one, sizeof(one));
}

void
scoreboard_slot_reset(struct scoreboard *sb, unsigned i)
{
	struct scoreboard_slot *s = &sb->slots[i], *r = &sb->header->retired;

	SB_ADD(r->served, SB_GET(s->served));
	SB_ADD(r->bytes_in, SB_GET(s->bytes_in));
	SB_ADD(r->bytes_out, SB_GET(s->bytes_out));
	SB_ADD(r->lost, SB_GET(s->lost));
	SB_ADD(r->refused, SB_GET(s->refused));
	SB_ADD(r->refused_access, SB_GET(s->refused_access));
	SB_ADD(r->dgrams_in, SB_GET(s->dgrams_in));
	SB_ADD(r->dgrams_out, SB_GET(s->dgrams_out));
	SB_ADD(r->dgrams_dropped, SB_GET(s->dgrams_dropped));
	memset(&sb->slots[i], 0, sizeof(sb->slots[i]));
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
		.dgrams_in = SB_GET(r->dgrams_in),
		.dgrams_out = SB_GET(r->dgrams_out),
		.dgrams_dropped = SB_GET(r->dgrams_dropped),
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
		t.dgrams_in += SB_GET(s->dgrams_in);
		t.dgrams_out += SB_GET(s->dgrams_out);
		t.dgrams_dropped += SB_GET(s->dgrams_dropped);
	}
	t.accept_pauses = SB_GET(sb->header->accept_pauses);
	*ret = t;
}
