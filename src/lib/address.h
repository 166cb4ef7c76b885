/* Listen addresses as users write them: 127.0.0.1:7007, [::1]:7007,
 * udp:127.0.0.1:7007, unix:/run/echod.sock (unix:@name is abstract). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct listen_address {
	int type; /* SOCK_STREAM or SOCK_DGRAM */
	struct sockaddr_storage sa;
	socklen_t salen;
};

/* Parses s. On failure returns -EINVAL and writes a short reason (without
 * the address itself) into reason. ret is written only on success. */
int address_parse(const char *s, struct listen_address *ret, char *reason, size_t reason_size);

/* Formats a socket address for humans: "127.0.0.1:7", "[::1]:7",
 * "unix:/run/x", "unix:@abstract". Always NUL-terminates. */
void address_format(const struct sockaddr *sa, socklen_t salen, char *buf, size_t size);

/* The peer or local name of a socket, formatted; "?" if unknown. */
void address_format_peer(int fd, char *buf, size_t size);
void address_format_local(int fd, char *buf, size_t size);

#define ADDRESS_MAX 128
