/* RFC 862 over UDP: every datagram goes back, unchanged, to where it came from.
 *
 * Batches in with recvmmsg() and out with sendmmsg(), never blocking. echod
 * must not become a reflector, so a datagram is dropped (and counted) when its
 * source could be a service or a spoofed victim rather than a client: a source
 * port below 1024 (another echo, chargen, DNS, NTP... which would answer back,
 * forever) or 0, or a broadcast, multicast or unspecified source address. A
 * datagram that did not fit the buffer is dropped, never echoed cut short.
 * So is one from a source AllowFrom=/DenyFrom= refuse (access.h). What one
 * source may make echod send is capped by a ratelimit table. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "access.h"
#include "ratelimit.h"

/* Datagrams per recvmmsg()/sendmmsg() call and calls per udp_echo_serve(): at
 * most 64 datagrams per call keeps the caller's event loop fair to its other
 * sockets. */
#define UDP_BATCH 16
#define UDP_BATCHES_PER_SERVE 4
/* Larger than the largest UDP payload (65,507 bytes over IPv4, 65,527 over
 * IPv6), so only a jumbogram could be truncated. */
#define UDP_BUFFER_SIZE 65536

/* Every field only ever grows; udp_echo_serve() adds to it. A datagram counted
 * in datagrams_in is counted once more: in datagrams_out or in one dropped_*. */
struct udp_counters {
	uint64_t datagrams_in;
	uint64_t datagrams_out;
	uint64_t bytes_in; /* payload bytes received, dropped datagrams too */
	uint64_t bytes_out;
	uint64_t dropped_port;	    /* source port 0 or below 1024 */
	uint64_t dropped_address;   /* from broadcast, multicast, unspecified or
				     * not IP; to broadcast or multicast */
	uint64_t dropped_truncated; /* larger than UDP_BUFFER_SIZE */
	uint64_t dropped_access;    /* from a source AllowFrom=/DenyFrom= refuse */
	uint64_t dropped_ratelimit; /* source over DatagramRateLimit= */
	uint64_t dropped_send;	    /* sendmmsg() refused it (full socket buffer...) */
};

static inline uint64_t
udp_counters_dropped(const struct udp_counters *c)
{
	return c->dropped_port + c->dropped_address + c->dropped_truncated + c->dropped_access +
	       c->dropped_ratelimit + c->dropped_send;
}

/* The batch buffers (about 1 MiB), allocated by the first udp_echo_serve(),
 * and who may send: access is NULL (everyone) or the caller's, which it
 * keeps alive while serving. Start from a zeroed struct (`struct udp_echo u
 * = {};`). One is enough for any number of sockets served by one thread. */
struct udp_echo {
	struct udp_batch *batch;
	const struct access_list *access;
};

void udp_echo_free(struct udp_echo *u);

/* Asks the kernel to say where each datagram was sent (IP_PKTINFO, and
 * IPV6_RECVPKTINFO on an IPv6 socket). Optional, call once per socket before
 * serving it; with it, udp_echo_serve() also drops datagrams sent to a
 * broadcast (directed ones too) or multicast address, so a wildcard-bound echo
 * can't be made to answer for a whole subnet, and a reply leaves from the
 * address the client sent to, not whichever the route prefers. Returns 0 or
 * -errno. */
int udp_socket_setup(int fd);

/* Serves up to UDP_BATCHES_PER_SERVE batches from the datagram socket fd, which
 * need not be non-blocking (MSG_DONTWAIT is used either way). rl may be NULL
 * (no rate limit); now_usec is CLOCK_MONOTONIC, for rl. Adds to *c.
 *
 * Returns the number of datagrams received (echoed or dropped: see *c), > 0;
 * -EAGAIN when none was waiting; -ENOMEM when the buffers could not be
 * allocated; or another -errno from recvmmsg(). A send that fails is never an
 * error of the call: the datagram is dropped and counted. A return of
 * UDP_BATCH * UDP_BATCHES_PER_SERVE means more may be waiting (an
 * edge-triggered caller must call again until -EAGAIN). */
int udp_echo_serve(struct udp_echo *u, int fd, struct ratelimit *rl, uint64_t now_usec,
		   struct udp_counters *c);

/* Whether a reply may be sent to sa (sockaddr_in or sockaddr_in6, complete):
 * port >= 1024, and the address (or the IPv4 address an IPv4-mapped IPv6
 * address carries) neither unspecified, 0.0.0.0/8, 255.255.255.255, nor
 * multicast (224.0.0.0/4, ff00::/8). Other families: false. */
bool udp_source_acceptable(const struct sockaddr *sa);
