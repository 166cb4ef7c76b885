/* See proxy.h. */
#include "proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

static const uint8_t v2_signature[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
					 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
static const char v1_prefix[] = "PROXY ";

/* v2's byte 13: version (high nibble, 2) and command (low). */
enum {
	V2_LOCAL = 0x0,
	V2_PROXY = 0x1,
};
/* v2's byte 14: address family (high nibble) and transport (low). */
enum {
	V2_AF_UNSPEC = 0x0,
	V2_AF_INET = 0x1,
	V2_AF_INET6 = 0x2,
	V2_AF_UNIX = 0x3,
	V2_UNSPEC = 0x0,
	V2_STREAM = 0x1,
	V2_DGRAM = 0x2,
};

void
proxy_parser_init(struct proxy_parser *p)
{
	*p = (struct proxy_parser){0};
}

/* --- v1 --- */

/* One byte of the line. PROXY_DONE at its "\r\n". */
static int
v1_byte(struct proxy_parser *p, uint8_t b)
{
	if (p->have < sizeof(v1_prefix) - 1 && b != (uint8_t)v1_prefix[p->have])
		return -EBADMSG;
	/* A CR only ends the line; a LF only follows it. */
	if (p->have > 0 && p->buf[p->have - 1] == '\r' && b != '\n')
		return -EBADMSG;
	if (b == '\n' && (p->have == 0 || p->buf[p->have - 1] != '\r'))
		return -EBADMSG;
	if (b != '\r' && b != '\n' && (b < 0x20 || b > 0x7e))
		return -EBADMSG;
	if (p->have == PROXY_V1_MAX)
		return -E2BIG;
	p->buf[p->have++] = b;
	return b == '\n' ? PROXY_DONE : PROXY_MORE;
}

/* The next field of a v1 line, up to a single space or the end; *s moves
 * past the space. NULL when empty. */
static char *
v1_field(char **s)
{
	char *start = *s, *space;

	if (!start || !*start)
		return NULL;
	space = strchr(start, ' ');
	if (space) {
		*space = '\0';
		*s = space + 1;
	} else {
		*s = NULL;
	}
	return *start ? start : NULL;
}

/* Decimal 0..65535. */
static int
v1_port(const char *s, uint16_t *ret)
{
	unsigned v = 0;
	size_t n = strlen(s);

	if (n == 0 || n > 5)
		return -EBADMSG;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EBADMSG;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return -EBADMSG;
	*ret = (uint16_t)v;
	return 0;
}

static int
v1_finish(struct proxy_parser *p, struct proxy_header *ret)
{
	char line[PROXY_V1_MAX + 1];
	char *rest, *proto, *src, *dst, *sport, *dport;
	uint16_t src_port, dst_port;
	int family;
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} src_addr, dst_addr;

	/* Without the prefix and the "\r\n". */
	memcpy(line, p->buf, p->have - 2);
	line[p->have - 2] = '\0';
	rest = line + strlen(v1_prefix);
	proto = v1_field(&rest);
	if (!proto)
		return -EBADMSG;
	*ret = (struct proxy_header){.version = 1};
	/* What follows UNKNOWN is to be ignored. */
	if (strcmp(proto, "UNKNOWN") == 0)
		return 0;
	if (strcmp(proto, "TCP4") == 0)
		family = AF_INET;
	else if (strcmp(proto, "TCP6") == 0)
		family = AF_INET6;
	else
		return -EBADMSG;
	src = v1_field(&rest);
	dst = v1_field(&rest);
	sport = v1_field(&rest);
	dport = v1_field(&rest);
	if (!src || !dst || !sport || !dport || rest)
		return -EBADMSG;
	if (inet_pton(family, src, &src_addr) != 1 || inet_pton(family, dst, &dst_addr) != 1 ||
	    v1_port(sport, &src_port) < 0 || v1_port(dport, &dst_port) < 0)
		return -EBADMSG;
	ret->has_source = true;
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ret->source;
		in->sin_family = AF_INET;
		in->sin_addr = src_addr.v4;
		in->sin_port = htons(src_port);
		ret->source_len = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ret->source;
		in6->sin6_family = AF_INET6;
		in6->sin6_addr = src_addr.v6;
		in6->sin6_port = htons(src_port);
		ret->source_len = sizeof(*in6);
	}
	return 0;
}

/* --- v2 --- */

/* The fixed 16 bytes are in: checks them and learns what follows. */
static int
v2_fixed(struct proxy_parser *p)
{
	uint8_t cmd = p->buf[12] & 0x0f, family = p->buf[13] >> 4, transport = p->buf[13] & 0x0f;
	size_t len = (size_t)p->buf[14] << 8 | p->buf[15];
	size_t addresses = 0;

	if (p->buf[12] >> 4 != 2 || (cmd != V2_LOCAL && cmd != V2_PROXY))
		return -EBADMSG;
	/* Other values "must be rejected as invalid by receivers". */
	if (family > V2_AF_UNIX || transport > V2_DGRAM)
		return -EBADMSG;
	p->total = PROXY_V2_HEADER + len;
	if (p->total > PROXY_V2_MAX)
		return -E2BIG;
	/* LOCAL: the block is discarded whole, the family with it. */
	if (cmd == V2_LOCAL)
		return 0;
	if (family == V2_AF_INET)
		addresses = 12;
	else if (family == V2_AF_INET6)
		addresses = 36;
	else if (family == V2_AF_UNIX)
		addresses = 216;
	if (len < addresses)
		return -EBADMSG;
	/* Only an IP stream's addresses are the client's. */
	if ((family == V2_AF_INET || family == V2_AF_INET6) && transport == V2_STREAM)
		p->keep = addresses;
	/* With AF_UNSPEC nothing says where addresses would end. */
	p->walk_tlvs = family != V2_AF_UNSPEC;
	/* Skipped, but before the TLVs: counted as kept-but-dropped. */
	p->tlv_value_left = p->keep ? 0 : addresses;
	return 0;
}

/* One byte after the fixed part. */
static int
v2_byte(struct proxy_parser *p, uint8_t b)
{
	size_t off = p->seen - PROXY_V2_HEADER; /* of this byte, in the block */

	if (off < p->keep) {
		p->buf[p->have++] = b;
		return 0;
	}
	if (!p->walk_tlvs)
		return 0;
	if (p->tlv_value_left > 0) {
		p->tlv_value_left--;
		return 0;
	}
	p->tlv_head[p->tlv_head_have++] = b;
	if (p->tlv_head_have < sizeof(p->tlv_head))
		return 0;
	p->tlv_head_have = 0;
	p->tlv_value_left = (size_t)p->tlv_head[1] << 8 | p->tlv_head[2];
	/* The value must end within the header. */
	if (p->seen + 1 + p->tlv_value_left > p->total)
		return -EBADMSG;
	return 0;
}

static int
v2_finish(struct proxy_parser *p, struct proxy_header *ret)
{
	const uint8_t *a = p->buf + PROXY_V2_HEADER;

	/* A TLV's head cut short by the end of the header. */
	if (p->tlv_head_have != 0)
		return -EBADMSG;
	*ret = (struct proxy_header){.version = 2, .local = (p->buf[12] & 0x0f) == V2_LOCAL};
	if (ret->local || p->keep == 0)
		return 0;
	ret->has_source = true;
	if (p->buf[13] >> 4 == V2_AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ret->source;
		in->sin_family = AF_INET;
		memcpy(&in->sin_addr, a, 4);
		memcpy(&in->sin_port, a + 8, 2);
		ret->source_len = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ret->source;
		in6->sin6_family = AF_INET6;
		memcpy(&in6->sin6_addr, a, 16);
		memcpy(&in6->sin6_port, a + 32, 2);
		ret->source_len = sizeof(*in6);
	}
	return 0;
}

static int
v2_feed(struct proxy_parser *p, uint8_t b)
{
	int r = 0;

	if (p->seen < sizeof(v2_signature)) {
		if (b != v2_signature[p->seen])
			return -EBADMSG;
		p->buf[p->have++] = b;
	} else if (p->seen < PROXY_V2_HEADER) {
		p->buf[p->have++] = b;
		if (p->seen + 1 == PROXY_V2_HEADER)
			r = v2_fixed(p);
	} else {
		r = v2_byte(p, b);
	}
	if (r < 0)
		return r;
	p->seen++;
	return p->seen >= PROXY_V2_HEADER && p->seen == p->total ? PROXY_DONE : PROXY_MORE;
}

/* --- either --- */

static int
fail(struct proxy_parser *p, int r)
{
	p->done = true;
	return r;
}

int
proxy_parse(struct proxy_parser *p, const void *data, size_t len, size_t *ret_used,
	    struct proxy_header *ret)
{
	const uint8_t *d = data;
	struct proxy_header h;

	if (p->done)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		int r;

		if (p->version == 0) {
			if (d[i] == v1_prefix[0])
				p->version = 1;
			else if (d[i] == v2_signature[0])
				p->version = 2;
			else
				return fail(p, -EBADMSG);
		}
		if (p->version == 1) {
			r = v1_byte(p, d[i]);
			p->seen++;
			if (r == PROXY_DONE)
				r = v1_finish(p, &h);
			else if (r == PROXY_MORE)
				continue;
		} else {
			r = v2_feed(p, d[i]);
			if (r == PROXY_DONE)
				r = v2_finish(p, &h);
			else if (r == PROXY_MORE)
				continue;
		}
		if (r < 0)
			return fail(p, r);
		p->done = true;
		*ret_used = i + 1;
		*ret = h;
		return PROXY_DONE;
	}
	return PROXY_MORE;
}
