/* The PROXY protocol, versions 1 (text) and 2 (binary), as haproxy's
 * doc/proxy-protocol.txt defines them: the header a load balancer sends
 * before the client's first byte, naming the client it stands for.
 *
 * The parser is incremental: it is fed the bytes as they arrive, in pieces
 * of any size (one byte at a time works), and keeps no more than the part
 * of the header it needs (at most PROXY_V1_MAX bytes); v2's TLVs are
 * walked and skipped, never stored. The version is told by the first
 * byte, and a byte that cannot begin or continue a header is refused at
 * once, so a client that is no balancer is not waited for.
 *
 * Mechanism only: nothing here logs; errors are negative errno. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* v1: "PROXY " ... "\r\n", 107 bytes at most (the spec's worst case,
 * TCP6 with the longest addresses and ports). */
#define PROXY_V1_MAX 107
/* v2: the signature, ver_cmd, fam and the 16-bit length. */
#define PROXY_V2_HEADER 16
/* What echod takes of a v2 header in all, TLVs included. The length field
 * allows 65535 bytes after the 16 fixed ones; balancers send a few hundred
 * at most (AWS's TLVs among the longest). More is refused as oversized. */
#define PROXY_V2_MAX 4096

enum proxy_status {
	PROXY_MORE = 0, /* every byte fed was header: feed more */
	PROXY_DONE = 1, /* the header is complete: see struct proxy_header */
};

struct proxy_header {
	unsigned version; /* 1 or 2 */
	/* The client's address (AF_INET or AF_INET6, with its port). False:
	 * use the connection's own peer, the balancer: a v2 LOCAL (the
	 * balancer's health check), v1 UNKNOWN, or a v2 family echod does
	 * not take (AF_UNIX, AF_UNSPEC, datagram transport). */
	bool has_source;
	bool local; /* v2 LOCAL */
	struct sockaddr_storage source;
	socklen_t source_len;
};

struct proxy_parser {
	unsigned version; /* 0 until the first byte says */
	size_t seen;	  /* header bytes taken so far */
	size_t total;	  /* v2: the whole header's length, once known */
	size_t keep;	  /* v2: address bytes to keep after the fixed 16 */
	bool walk_tlvs;	  /* v2: what follows the addresses is TLVs, checked */
	/* v2 TLVs: bytes left of the current TLV's 3-byte head (0 when in a
	 * value), and of its value. */
	uint8_t tlv_head[3];
	size_t tlv_head_have;
	size_t tlv_value_left;
	/* The bytes kept: v1's line, v2's fixed part and address block (an
	 * AF_INET6 one, the longest echod reads, is 36 bytes). */
	uint8_t buf[PROXY_V1_MAX];
	size_t have;
	bool done;
};

void proxy_parser_init(struct proxy_parser *p);

/* Feeds the len bytes at data. Returns PROXY_MORE when they were all
 * header and more is needed; PROXY_DONE when the header is complete, with
 * *ret_used the bytes of data it took (those after it are the client's:
 * echo them) and *ret the header; -EBADMSG for a malformed header (or no
 * header at all), -E2BIG for one longer than the limits above. After
 * PROXY_DONE or an error the parser takes nothing more (-EINVAL).
 * ret_used and ret are written only on PROXY_DONE. */
int proxy_parse(struct proxy_parser *p, const void *data, size_t len, size_t *ret_used,
		struct proxy_header *ret);
