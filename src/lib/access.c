#include "access.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* The longest word worth parsing: an IPv6 address with an embedded IPv4
 * one and a length. */
#define WORD_MAX 64

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static bool
host_bits_set(const uint8_t *addr, unsigned bytes, unsigned prefix)
{
	for (unsigned bit = prefix; bit < bytes * 8; bit++)
		if (addr[bit / 8] & (0x80 >> (bit % 8)))
			return true;
	return false;
}

static bool
prefix_matches(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
	unsigned whole = prefix / 8, rest = prefix % 8;

	if (memcmp(a, b, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((a[whole] ^ b[whole]) & (0xff << (8 - rest))) == 0;
}

int
access_cidr_parse(const char *text, struct cidr *ret, char *reason, size_t size)
{
	char word[WORD_MAX];
	const char *slash = strchr(text, '/');
	size_t len = slash ? (size_t)(slash - text) : strlen(text);
	unsigned max, prefix;
	struct cidr c = {0};

	if (len == 0 || len >= sizeof(word)) {
		snprintf(reason, size, "\"%s\": not an IPv4 or IPv6 address", text);
		return -EINVAL;
	}
	memcpy(word, text, len);
	word[len] = '\0';
	if (inet_pton(AF_INET, word, c.addr) == 1) {
		c.family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, word, c.addr) == 1) {
		c.family = AF_INET6;
		max = 128;
	} else {
		snprintf(reason, size, "\"%s\": not an IPv4 or IPv6 address", word);
		return -EINVAL;
	}
	prefix = max;
	if (slash) {
		char *end;
		unsigned long v;

		if (slash[1] < '0' || slash[1] > '9' || (slash[1] == '0' && slash[2] != '\0')) {
			snprintf(reason, size, "\"%s\": the prefix length is not a number", text);
			return -EINVAL;
		}
		errno = 0;
		v = strtoul(slash + 1, &end, 10);
		if (*end != '\0' || errno == ERANGE || v > max) {
			snprintf(reason, size, "\"%s\": the prefix length must be 0..%u", text, max);
			return -EINVAL;
		}
		prefix = (unsigned)v;
	}
	if (host_bits_set(c.addr, max / 8, prefix)) {
		snprintf(reason, size,
			 "\"%s\": address bits set beyond the /%u prefix (write the network's "
			 "first address, or the address alone)",
			 text, prefix);
		return -EINVAL;
	}
	/* ::ffff:a.b.c.d/N with N >= 96 is an IPv4 prefix, and matches as
	 * one. Shorter ones span more than the mapped range: kept as IPv6. */
	if (c.family == AF_INET6 && prefix >= 96 &&
	    memcmp(c.addr, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0) {
		memmove(c.addr, c.addr + 12, 4);
		memset(c.addr + 4, 0, 12);
		c.family = AF_INET;
		prefix -= 96;
	}
	c.prefix = (uint8_t)prefix;
	*ret = c;
	return 0;
}

void
access_cidr_format(const struct cidr *c, char *buf, size_t size)
{
	char addr[INET6_ADDRSTRLEN];

	if (!inet_ntop(c->family, c->addr, addr, sizeof(addr)))
		snprintf(addr, sizeof(addr), "?");
	snprintf(buf, size, "%s/%u", addr, c->prefix);
}

static int
append(struct cidr **items, size_t *n, const struct cidr *add, size_t n_add)
{
	struct cidr *grown;

	if (n_add == 0)
		return 0;
	grown = realloc(*items, (*n + n_add) * sizeof(**items));
	if (!grown)
		return -ENOMEM;
	memcpy(grown + *n, add, n_add * sizeof(*add));
	*items = grown;
	*n += n_add;
	return 0;
}

int
access_list_add(struct access_list *l, bool deny, const char *value, char *reason, size_t size)
{
	_cleanup_free_ struct cidr *parsed = NULL;
	size_t n = 0, room = 0;
	const char *p = value;
	int r;

	for (;;) {
		char word[WORD_MAX + 2];
		size_t len;

		p += strspn(p, " \t");
		if (*p == '\0')
			break;
		len = strcspn(p, " \t");
		if (len >= sizeof(word)) {
			snprintf(reason, size, "\"%.*s...\": not an IPv4 or IPv6 address", 20, p);
			return -EINVAL;
		}
		memcpy(word, p, len);
		word[len] = '\0';
		p += len;
		if (n == room) {
			struct cidr *grown = realloc(parsed, (room ? room * 2 : 4) * sizeof(*parsed));
			if (!grown)
				return -ENOMEM;
			parsed = grown;
			room = room ? room * 2 : 4;
		}
		r = access_cidr_parse(word, &parsed[n], reason, size);
		if (r < 0)
			return r;
		n++;
	}
	if (n == 0) {
		snprintf(reason, size, "no address given");
		return -EINVAL;
	}
	return deny ? append(&l->deny, &l->n_deny, parsed, n)
		    : append(&l->allow, &l->n_allow, parsed, n);
}

void
access_list_clear(struct access_list *l)
{
	free(l->allow);
	free(l->deny);
	*l = (struct access_list){0};
}

void
access_list_reset(struct access_list *l, bool deny)
{
	if (deny) {
		free(l->deny);
		l->deny = NULL;
		l->n_deny = 0;
	} else {
		free(l->allow);
		l->allow = NULL;
		l->n_allow = 0;
	}
}

int
access_list_copy(struct access_list *dst, const struct access_list *src)
{
	access_list_clear(dst);
	if (append(&dst->allow, &dst->n_allow, src->allow, src->n_allow) < 0 ||
	    append(&dst->deny, &dst->n_deny, src->deny, src->n_deny) < 0) {
		access_list_clear(dst);
		return -ENOMEM;
	}
	return 0;
}

bool
access_list_active(const struct access_list *l)
{
	return l->n_allow > 0 || l->n_deny > 0;
}

static bool
any_matches(const struct cidr *items, size_t n, sa_family_t family, const uint8_t *addr)
{
	for (size_t i = 0; i < n; i++)
		if (items[i].family == family && prefix_matches(items[i].addr, addr, items[i].prefix))
			return true;
	return false;
}

bool
access_permits(const struct access_list *l, const struct sockaddr *peer)
{
	const uint8_t *addr;
	sa_family_t family;

	if (!access_list_active(l))
		return true;
	if (peer->sa_family == AF_INET) {
		family = AF_INET;
		addr = (const uint8_t *)&((const struct sockaddr_in *)peer)->sin_addr;
	} else if (peer->sa_family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)peer)->sin6_addr;

		family = AF_INET6;
		addr = a6->s6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			family = AF_INET;
			addr += 12;
		}
	} else {
		return true;
	}
	if (any_matches(l->deny, l->n_deny, family, addr))
		return false;
	return l->n_allow == 0 || any_matches(l->allow, l->n_allow, family, addr);
}

bool
access_trusts(const struct access_list *l, const struct sockaddr *peer)
{
	if (peer->sa_family != AF_INET && peer->sa_family != AF_INET6)
		return true;
	return l->n_allow > 0 && access_permits(l, peer);
}
