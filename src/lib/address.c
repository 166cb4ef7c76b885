#include "address.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

static int
fail(char *reason, size_t size, const char *text)
{
	snprintf(reason, size, "%s", text);
	return -EINVAL;
}

static int
parse_port(const char *s, in_port_t *ret)
{
	unsigned long v;
	char *end;

	if (s[0] < '0' || s[0] > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (*end != '\0' || errno != 0 || v == 0 || v > 65535)
		return -EINVAL;
	*ret = htons((in_port_t)v);
	return 0;
}

static int
parse_unix(const char *path, struct listen_address *ret, char *reason, size_t size)
{
	struct sockaddr_un *un = (struct sockaddr_un *)&ret->sa;
	size_t len = strlen(path);

	if (len == 0)
		return fail(reason, size, "empty UNIX socket path");
	if (len >= sizeof(un->sun_path))
		return fail(reason, size, "UNIX socket path too long");
	if (path[0] != '/' && path[0] != '@')
		return fail(reason, size, "UNIX socket path must be absolute (or @abstract)");
	memset(un, 0, sizeof(*un));
	un->sun_family = AF_UNIX;
	memcpy(un->sun_path, path, len);
	if (path[0] == '@') {
		un->sun_path[0] = '\0';
		ret->salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	} else {
		ret->salen = (socklen_t)sizeof(*un);
	}
	ret->type = SOCK_STREAM;
	return 0;
}

static int
parse_inet(const char *s, struct listen_address *ret, char *reason, size_t size)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *port;
	in_port_t p;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return fail(reason, size, "expected [IPv6]:PORT");
		if ((size_t)(close - s - 1) >= sizeof(host))
			return fail(reason, size, "IPv6 address too long");
		memcpy(host, s + 1, (size_t)(close - s - 1));
		host[close - s - 1] = '\0';
		port = close + 2;
	} else {
		const char *colon = strrchr(s, ':');
		if (!colon)
			return fail(reason, size, "expected ADDRESS:PORT");
		if (strchr(s, ':') != colon)
			return fail(reason, size, "IPv6 addresses go in brackets: [ADDRESS]:PORT");
		if ((size_t)(colon - s) >= sizeof(host))
			return fail(reason, size, "address too long");
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = '\0';
		port = colon + 1;
	}
	if (parse_port(port, &p) < 0)
		return fail(reason, size, "port must be a number from 1 to 65535");

	memset(&ret->sa, 0, sizeof(ret->sa));
	if (s[0] == '[') {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ret->sa;
		if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
			return fail(reason, size, "not a numeric IPv6 address");
		in6->sin6_family = AF_INET6;
		in6->sin6_port = p;
		ret->salen = sizeof(*in6);
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)&ret->sa;
		if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
			return fail(reason, size, "not a numeric IPv4 address");
		in->sin_family = AF_INET;
		in->sin_port = p;
		ret->salen = sizeof(*in);
	}
	return 0;
}

int
address_parse(const char *s, struct listen_address *ret, char *reason, size_t size)
{
	struct listen_address a = {0};
	int r;

	if (strncmp(s, "unix:", 5) == 0) {
		r = parse_unix(s + 5, &a, reason, size);
	} else if (strncmp(s, "udp:", 4) == 0) {
		r = parse_inet(s + 4, &a, reason, size);
		a.type = SOCK_DGRAM;
	} else {
		if (strncmp(s, "tcp:", 4) == 0)
			s += 4;
		r = parse_inet(s, &a, reason, size);
		a.type = SOCK_STREAM;
	}
	if (r < 0)
		return r;
	*ret = a;
	return 0;
}

void
address_format(const struct sockaddr *sa, socklen_t salen, char *buf, size_t size)
{
	char host[INET6_ADDRSTRLEN];

	if (size == 0)
		return;
	switch (sa->sa_family) {
	case AF_INET: {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(buf, size, "%s:%u", host, ntohs(in->sin_port));
		return;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(buf, size, "[%s]:%u", host, ntohs(in6->sin6_port));
		return;
	}
	case AF_UNIX: {
		const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
		size_t len = salen > offsetof(struct sockaddr_un, sun_path)
				     ? salen - offsetof(struct sockaddr_un, sun_path)
				     : 0;
		if (len == 0)
			snprintf(buf, size, "unix:(unnamed)");
		else if (un->sun_path[0] == '\0')
			snprintf(buf, size, "unix:@%.*s", (int)len - 1, un->sun_path + 1);
		else
			snprintf(buf, size, "unix:%.*s", (int)strnlen(un->sun_path, len),
				 un->sun_path);
		return;
	}
	default:
		snprintf(buf, size, "(family %d)", sa->sa_family);
	}
}

void
address_format_peer(int fd, char *buf, size_t size)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0) {
		snprintf(buf, size, "?");
		return;
	}
	address_format((struct sockaddr *)&ss, len, buf, size);
}

void
address_format_local(int fd, char *buf, size_t size)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
		snprintf(buf, size, "?");
		return;
	}
	address_format((struct sockaddr *)&ss, len, buf, size);
}
