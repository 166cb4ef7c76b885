/* Access lists: AllowFrom= and DenyFrom=, the IPv4 and IPv6 prefixes a
 * client may or may not come from, as xinetd's only_from/no_access and
 * tcpserver's rules give. Deny wins; an empty allow list allows everyone.
 * An IPv4-mapped IPv6 address (::ffff:192.0.2.1, what a dual-stack socket
 * reports for an IPv4 client) is that IPv4 address, whichever way a rule
 * writes it. Clients without an IP address (UNIX sockets) are not subject
 * to the lists, as systemd's IPAddressAllow= does not apply to them.
 *
 * Mechanism only: nothing here logs; errors are negative errno with a
 * reason for the user. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* One prefix: the address with its host bits zero, and the prefix length.
 * IPv4 is kept as such (4 bytes), never mapped. */
struct cidr {
	sa_family_t family; /* AF_INET or AF_INET6 */
	uint8_t prefix;	    /* 0..32 or 0..128 */
	uint8_t addr[16];
};

struct access_list {
	struct cidr *allow, *deny;
	size_t n_allow, n_deny;
};

/* Longest text access_cidr_format() writes, NUL included. */
#define CIDR_TEXT_MAX 64

/* Parses "ADDRESS" (the whole address: /32 or /128) or "ADDRESS/LENGTH".
 * Host bits set below the prefix (192.0.2.1/24) are refused rather than
 * guessed at. 0, or -EINVAL with the reason in reason (size bytes). */
int access_cidr_parse(const char *text, struct cidr *ret, char *reason, size_t size);
/* "192.0.2.0/24", "2001:db8::/32", "192.0.2.1/32". */
void access_cidr_format(const struct cidr *c, char *buf, size_t size);

/* Adds every prefix of value, a list separated by spaces, to the deny or
 * the allow list. All or nothing: on -EINVAL (reason says which word and
 * why; an empty list is one) or -ENOMEM the list is as it was. */
int access_list_add(struct access_list *l, bool deny, const char *value, char *reason,
		    size_t size);
void access_list_clear(struct access_list *l);
/* Empties the deny or the allow list alone (an empty AllowFrom=/DenyFrom=). */
void access_list_reset(struct access_list *l, bool deny);
/* Deep copy into dst (emptied first): 0 or -ENOMEM. */
int access_list_copy(struct access_list *dst, const struct access_list *src);
/* Whether either list has anything in it. */
bool access_list_active(const struct access_list *l);

/* Whether l names peer in its allow list (and not in its deny list): for
 * lists of the trusted (ProxyFrom=), where an empty list trusts nobody.
 * True for anything but an IPv4 or IPv6 address. */
bool access_trusts(const struct access_list *l, const struct sockaddr *peer);

/* Whether a client at peer may connect (or send). True for anything but an
 * IPv4 or IPv6 address. */
bool access_permits(const struct access_list *l, const struct sockaddr *peer);
