/* See held.h. */
#include "held.h"

#include <unistd.h>

/* While connections keep waiting, it is said again at most this often. */
#define HELD_LOG_MS 10000

bool
held_put(struct held *h, int fd, bool proxy, uint64_t now, unsigned retry_ms)
{
	h->fd = fd;
	h->proxy = proxy;
	h->retry_at_ms = now + retry_ms;
	return held_count_wait(h, now);
}

bool
held_count_wait(struct held *h, uint64_t now)
{
	h->waits++;
	if (h->wait_logged_ms && now - h->wait_logged_ms < HELD_LOG_MS)
		return false;
	h->wait_logged_ms = now;
	return true;
}

int
held_take(struct held *h, uint64_t now, bool *ret_proxy)
{
	int fd = h->fd;

	if (fd < 0 || now < h->retry_at_ms)
		return -1;
	if (ret_proxy)
		*ret_proxy = h->proxy;
	h->fd = -1;
	return fd;
}

bool
held_waiting(const struct held *h)
{
	return h->fd >= 0;
}

bool
held_drop(struct held *h)
{
	if (h->fd < 0)
		return false;
	close(h->fd);
	h->fd = -1;
	return true;
}
