/* Fuzzes the listen-address parser and the address formatter.
 *
 * The first byte picks the half. Parsing: the rest is the text; a failure
 * must leave the result untouched and give a reason; a success must
 * format back into text that parses to the very same address. Formatting:
 * the rest is a raw socket address of any family and length, as
 * getpeername() may return it; the text must fit and be terminated. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "address.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_roundtrip(const struct listen_address *a)
{
	struct listen_address again;
	char text[ADDRESS_MAX + 8], formatted[ADDRESS_MAX + 4], reason[128];

	address_format((const struct sockaddr *)&a->sa, a->salen, formatted, sizeof(formatted));
	/* The formatter names no socket type: UDP takes its prefix back. */
	snprintf(text, sizeof(text), "%s%s", a->type == SOCK_DGRAM ? "udp:" : "", formatted);
	if (address_parse(text, &again, reason, sizeof(reason)) < 0)
		abort();
	if (again.type != a->type || again.salen != a->salen ||
	    memcmp(&again.sa, &a->sa, a->salen) != 0)
		abort();
}

static void
fuzz_parse(const uint8_t *data, size_t size)
{
	struct listen_address a, untouched;
	char reason[128];
	char *s;

	/* A C string, as the config and the command line hand it over. */
	s = malloc(size + 1);
	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	memset(&a, 0xa5, sizeof(a));
	untouched = a;
	memset(reason, 0, sizeof(reason));
	if (address_parse(s, &a, reason, sizeof(reason)) < 0) {
		if (memcmp(&a, &untouched, sizeof(a)) != 0 || reason[0] == '\0')
			abort();
	} else {
		if ((a.type != SOCK_STREAM && a.type != SOCK_DGRAM) || a.salen == 0 ||
		    a.salen > sizeof(a.sa))
			abort();
		check_roundtrip(&a);
	}
	free(s);
}

static void
fuzz_format(const uint8_t *data, size_t size)
{
	struct sockaddr_storage ss = {0};
	char buf[ADDRESS_MAX];
	socklen_t len;

	if (size < sizeof(sa_family_t))
		return;
	len = (socklen_t)(size > sizeof(ss) ? sizeof(ss) : size);
	memcpy(&ss, data, len);
	memset(buf, 'X', sizeof(buf));
	address_format((const struct sockaddr *)&ss, len, buf, sizeof(buf));
	if (!memchr(buf, '\0', sizeof(buf)))
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1)
		fuzz_format(data + 1, size - 1);
	else
		fuzz_parse(data + 1, size - 1);
	return 0;
}
