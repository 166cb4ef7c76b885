/* See ledger.h for the order of every pair of steps and why. */
#include "ledger.h"

bool
ledger_reserve(struct scoreboard *sb)
{
	uint32_t cur = SB_GET(sb->header->active_total);
	uint32_t max = SB_GET(sb->header->max_connections);

	do {
		if (max > 0 && cur >= max)
			return false;
	} while (!__atomic_compare_exchange_n(&sb->header->active_total, &cur, cur + 1, true,
					      __ATOMIC_RELAXED, __ATOMIC_RELAXED));
	return true;
}

void
ledger_reserve_kept(struct scoreboard *sb)
{
	SB_ADD(sb->header->active_total, 1);
}

void
ledger_release(struct scoreboard *sb)
{
	SB_SUB(sb->header->active_total, 1);
}

void
ledger_set_max(struct scoreboard *sb, unsigned max_connections)
{
	SB_SET(sb->header->max_connections, max_connections);
}

unsigned
ledger_reserved(const struct scoreboard *sb)
{
	return SB_GET(sb->header->active_total);
}

bool
ledger_full(const struct scoreboard *sb)
{
	return SB_GET(sb->header->active_total) >= SB_GET(sb->header->max_connections);
}

bool
ledger_admit(struct ledger *l)
{
	if (l->reserved && l->sb && !ledger_reserve(l->sb))
		return false;
	SB_ADD(l->slot->active, 1);
	return true;
}

void
ledger_close(struct ledger *l)
{
	SB_SUB(l->slot->active, 1);
	if (l->reserved && l->sb)
		ledger_release(l->sb);
}

void
ledger_unadmit(struct ledger *l)
{
	ledger_close(l);
}

void
ledger_take(struct ledger *l, enum ledger_origin origin)
{
	if (origin != LEDGER_ACCEPTED) {
		SB_ADD(l->slot->received, 1);
		SB_ADD(l->slot->active, 1);
	}
	if (origin != LEDGER_KEPT)
		SB_ADD(l->slot->served, 1);
}

void
ledger_refuse(struct ledger *l, enum ledger_origin origin, enum ledger_refusal why)
{
	SB_ADD(l->slot->refused, 1);
	if (why == LEDGER_REFUSED_ACCESS)
		SB_ADD(l->slot->refused_access, 1);
	else if (why == LEDGER_REFUSED_PROXY)
		SB_ADD(l->slot->refused_proxy, 1);
	if (origin != LEDGER_KEPT)
		SB_SUB(l->slot->served, 1);
}

void
ledger_lose(struct ledger *l)
{
	SB_ADD(l->slot->received, 1);
	SB_ADD(l->slot->lost, 1);
	if (l->reserved && l->sb)
		ledger_release(l->sb);
}

uint64_t
ledger_in_flight(const struct scoreboard *sb, unsigned i, uint64_t sent)
{
	uint64_t received = SB_GET(sb->slots[i].received);

	return sent > received ? sent - received : 0;
}

void
ledger_settle(struct scoreboard *sb, unsigned i, uint64_t sent)
{
	uint64_t gone = SB_GET(sb->slots[i].active) + ledger_in_flight(sb, i, sent);

	if (gone)
		SB_SUB(sb->header->active_total, (uint32_t)gone);
	scoreboard_slot_reset(sb, i);
}

void
ledger_settle_one(struct scoreboard *sb, unsigned i)
{
	SB_SUB(sb->slots[i].active, 1);
}

void
ledger_refused_here(struct scoreboard *sb, unsigned i, enum ledger_refusal why)
{
	SB_ADD(sb->slots[i].refused, 1);
	if (why == LEDGER_REFUSED_ACCESS)
		SB_ADD(sb->slots[i].refused_access, 1);
	else if (why == LEDGER_REFUSED_PROXY)
		SB_ADD(sb->slots[i].refused_proxy, 1);
}

void
ledger_lost_here(struct scoreboard *sb, unsigned i, unsigned n)
{
	if (n)
		SB_ADD(sb->slots[i].lost, n);
}
