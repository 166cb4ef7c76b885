/* RFC 862 over UDP: the batch receive, the reflector checks, the batch send. */
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "udp.h"

/* Room for both IP_PKTINFO and IPV6_PKTINFO: an IPv6 socket with both enabled
 * gets both for an IPv4 datagram. */
#define UDP_CONTROL_IN_SIZE 128
#define UDP_CONTROL_OUT_SIZE CMSG_SPACE(sizeof(struct in6_pktinfo))

struct udp_batch {
	struct mmsghdr in[UDP_BATCH];
	struct mmsghdr out[UDP_BATCH];
	struct iovec in_iov[UDP_BATCH];
	struct iovec out_iov[UDP_BATCH];
	struct sockaddr_storage names[UDP_BATCH];
	union {
		struct cmsghdr align;
		uint8_t buf[UDP_CONTROL_IN_SIZE];
	} control_in[UDP_BATCH];
	union {
		struct cmsghdr align;
		uint8_t buf[UDP_CONTROL_OUT_SIZE];
	} control_out[UDP_BATCH];
	/* Last, so the headers above can be zeroed without touching 1 MiB. */
	uint8_t data[UDP_BATCH][UDP_BUFFER_SIZE];
};

enum verdict {
	VERDICT_OK,
	VERDICT_PORT,
	VERDICT_ADDRESS,
};

/* addr in network byte order. */
static bool
ipv4_unicast(in_addr_t addr)
{
	uint32_t a = ntohl(addr);

	return (a >> 24) != 0 && !IN_MULTICAST(a) && a != INADDR_BROADCAST;
}

static bool
ipv6_unicast(const struct in6_addr *a)
{
	in_addr_t v4;

	if (IN6_IS_ADDR_UNSPECIFIED(a) || IN6_IS_ADDR_MULTICAST(a))
		return false;
	if (IN6_IS_ADDR_V4MAPPED(a)) {
		memcpy(&v4, &a->s6_addr[12], sizeof(v4));
		return ipv4_unicast(v4);
	}
	return true;
}

/* len: the bytes sa really holds, so a short name from the kernel is refused
 * rather than read past. */
static enum verdict
source_verdict(const struct sockaddr *sa, socklen_t len)
{
	uint16_t port;

	switch (sa->sa_family) {
	case AF_INET: {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		if (len < sizeof(*sin) || !ipv4_unicast(sin->sin_addr.s_addr))
			return VERDICT_ADDRESS;
		port = ntohs(sin->sin_port);
		break;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		if (len < sizeof(*sin6) || !ipv6_unicast(&sin6->sin6_addr))
			return VERDICT_ADDRESS;
		port = ntohs(sin6->sin6_port);
		break;
	}
	default:
		return VERDICT_ADDRESS;
	}

	/* Below 1024 live the services (echo itself, chargen, DNS, NTP) that
	 * would answer our answer: a spoofed source would make them loop. */
	return port < 1024 ? VERDICT_PORT : VERDICT_OK;
}

bool
udp_source_acceptable(const struct sockaddr *sa)
{
	return source_verdict(sa, sizeof(struct sockaddr_storage)) == VERDICT_OK;
}

int
udp_socket_setup(int fd)
{
	static const int one = 1;
	int domain;
	socklen_t len = sizeof(domain);

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
		return negative_errno();

	/* IP_PKTINFO on an IPv6 socket too: only it carries ipi_spec_dst, which
	 * tells an IPv4 directed broadcast from a unicast datagram. */
	if (domain == AF_INET || domain == AF_INET6)
		if (setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one)) < 0)
			return negative_errno();
	if (domain == AF_INET6)
		if (setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one)) < 0)
			return negative_errno();
	return 0;
}

/* Reads the destination of datagram in from its control messages and writes
 * into out the control message that makes the reply leave from that address.
 * Returns false when the destination was a broadcast or multicast address;
 * true when it was unicast or cannot be told. */
static bool
destination_check(const struct msghdr *in, struct msghdr *out)
{
	const struct in_pktinfo *pi4 = NULL;
	const struct in6_pktinfo *pi6 = NULL;
	struct cmsghdr *cm;

	out->msg_controllen = 0;
	/* Cut-short control data proves nothing either way: reply without it. */
	if (in->msg_flags & MSG_CTRUNC)
		return true;

	for (cm = CMSG_FIRSTHDR(in); cm; cm = CMSG_NXTHDR((struct msghdr *)in, cm)) {
		if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO &&
		    cm->cmsg_len >= CMSG_LEN(sizeof(*pi4)))
			pi4 = (const struct in_pktinfo *)CMSG_DATA(cm);
		else if (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_PKTINFO &&
			 cm->cmsg_len >= CMSG_LEN(sizeof(*pi6)))
			pi6 = (const struct in6_pktinfo *)CMSG_DATA(cm);
	}
	/* IP_PKTINFO's ipi_spec_dst is worked out as a datagram is queued,
	 * and only if the option was on by then (ipi_addr is read from the
	 * header as it is received): one that waited before echod turned the
	 * option on (the datagram that made systemd start echod, unless the
	 * socket unit has PassPacketInfo=yes) comes with ipi_spec_dst zero. A
	 * directed broadcast cannot be told then: only the header's
	 * destination is checked, and the reply leaves by the route. The
	 * source is checked whatever this says. */
	if (pi4 && pi4->ipi_spec_dst.s_addr == htonl(INADDR_ANY))
		return ipv4_unicast(pi4->ipi_addr.s_addr);
	if (pi6 && IN6_IS_ADDR_UNSPECIFIED(&pi6->ipi6_addr))
		pi6 = NULL;
	if (pi4) {
		struct in_pktinfo reply = {.ipi_spec_dst = pi4->ipi_spec_dst};

		/* For a datagram to one of our addresses the kernel sets
		 * ipi_spec_dst to the header's destination; for a broadcast
		 * (directed ones too) or multicast it picks a local address. */
		if (!ipv4_unicast(pi4->ipi_addr.s_addr) ||
		    pi4->ipi_addr.s_addr != pi4->ipi_spec_dst.s_addr)
			return false;

		/* ipi_ifindex stays 0: the route picks the interface. */
		out->msg_controllen = CMSG_SPACE(sizeof(reply));
		cm = CMSG_FIRSTHDR(out);
		cm->cmsg_level = IPPROTO_IP;
		cm->cmsg_type = IP_PKTINFO;
		cm->cmsg_len = CMSG_LEN(sizeof(reply));
		memcpy(CMSG_DATA(cm), &reply, sizeof(reply));
	} else if (pi6) {
		struct in6_pktinfo reply = *pi6;

		if (!ipv6_unicast(&pi6->ipi6_addr))
			return false;

		/* The ingress interface is kept: a link-local address means
		 * nothing without it. */
		out->msg_controllen = CMSG_SPACE(sizeof(reply));
		cm = CMSG_FIRSTHDR(out);
		cm->cmsg_level = IPPROTO_IPV6;
		cm->cmsg_type = IPV6_PKTINFO;
		cm->cmsg_len = CMSG_LEN(sizeof(reply));
		memcpy(CMSG_DATA(cm), &reply, sizeof(reply));
	}
	return true;
}

static struct udp_batch *
batch_new(void)
{
	struct udp_batch *b;

	b = malloc(sizeof(*b));
	if (!b)
		return NULL;
	memset(b, 0, offsetof(struct udp_batch, data));

	for (size_t i = 0; i < UDP_BATCH; i++) {
		b->in_iov[i] = (struct iovec){.iov_base = b->data[i], .iov_len = UDP_BUFFER_SIZE};
		b->in[i].msg_hdr.msg_name = &b->names[i];
		b->in[i].msg_hdr.msg_iov = &b->in_iov[i];
		b->in[i].msg_hdr.msg_iovlen = 1;
		b->in[i].msg_hdr.msg_control = b->control_in[i].buf;
		b->out[i].msg_hdr.msg_iov = &b->out_iov[i];
		b->out[i].msg_hdr.msg_iovlen = 1;
		b->out[i].msg_hdr.msg_control = b->control_out[i].buf;
	}
	return b;
}

void
udp_echo_free(struct udp_echo *u)
{
	free(u->batch);
	u->batch = NULL;
}

/* Sends out[0..n) and never blocks: what the socket will not take now is
 * dropped, as the network might have dropped it. */
static void
send_batch(struct udp_batch *b, int fd, unsigned n, struct udp_counters *c)
{
	unsigned done = 0;

	while (done < n) {
		int r = sendmmsg(fd, b->out + done, n - done, MSG_DONTWAIT);

		if (r > 0) {
			for (unsigned i = done; i < done + (unsigned)r; i++) {
				c->datagrams_out++;
				c->bytes_out += b->out[i].msg_len;
			}
			done += r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
			c->dropped_send += n - done;
			return;
		}
		/* sendmmsg() reports an error only for the first datagram it
		 * tried; one refused destination (EPERM from a firewall,
		 * EHOSTUNREACH...) must not cost the others their reply. */
		c->dropped_send++;
		done++;
	}
}

/* Returns the number of datagrams received, > 0, or -errno. */
static int
serve_batch(struct udp_batch *b, const struct access_list *access, int fd, struct ratelimit *rl,
	    uint64_t now_usec, struct udp_counters *c)
{
	unsigned nout = 0;
	int n;

	for (size_t i = 0; i < UDP_BATCH; i++) {
		b->in[i].msg_hdr.msg_namelen = sizeof(b->names[i]);
		b->in[i].msg_hdr.msg_controllen = sizeof(b->control_in[i].buf);
	}

	do
		n = recvmmsg(fd, b->in, UDP_BATCH, MSG_DONTWAIT | MSG_CMSG_CLOEXEC, NULL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return negative_errno();
	if (n == 0)
		return -EAGAIN;

	for (int i = 0; i < n; i++) {
		struct msghdr *in = &b->in[i].msg_hdr;
		struct mmsghdr *out = &b->out[nout];
		size_t len = b->in[i].msg_len;

		c->datagrams_in++;
		c->bytes_in += len;

		switch (source_verdict(in->msg_name, in->msg_namelen)) {
		case VERDICT_OK:
			break;
		case VERDICT_PORT:
			c->dropped_port++;
			continue;
		case VERDICT_ADDRESS:
			c->dropped_address++;
			continue;
		}
		if (!destination_check(in, &out->msg_hdr)) {
			c->dropped_address++;
			continue;
		}
		if (in->msg_flags & MSG_TRUNC) {
			c->dropped_truncated++;
			continue;
		}
		if (access && !access_permits(access, in->msg_name)) {
			c->dropped_access++;
			continue;
		}
		/* Last, so a datagram dropped for another reason costs no token. */
		if (rl && !ratelimit_allow(rl, in->msg_name, now_usec)) {
			c->dropped_ratelimit++;
			continue;
		}

		out->msg_hdr.msg_name = in->msg_name;
		out->msg_hdr.msg_namelen = in->msg_namelen;
		b->out_iov[nout] = (struct iovec){.iov_base = b->data[i], .iov_len = len};
		nout++;
	}

	send_batch(b, fd, nout, c);
	return n;
}

int
udp_echo_serve(struct udp_echo *u, int fd, struct ratelimit *rl, uint64_t now_usec,
	       struct udp_counters *c)
{
	int total = 0;

	if (!u->batch) {
		u->batch = batch_new();
		if (!u->batch)
			return -ENOMEM;
	}

	for (int k = 0; k < UDP_BATCHES_PER_SERVE; k++) {
		int r = serve_batch(u->batch, u->access, fd, rl, now_usec, c);

		/* An error after some datagrams were served shows again on the
		 * next call; report the work done now. */
		if (r < 0)
			return total > 0 ? total : r;
		total += r;
		if (r < UDP_BATCH)
			break;
	}
	return total;
}
