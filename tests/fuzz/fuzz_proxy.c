/* Fuzzes the PROXY v1/v2 header parser.
 *
 * The first byte picks how the rest is cut into pieces (its value is the
 * piece size, 0 meaning all at once), as the kernel may hand the header
 * over in reads of any size. Whatever the cut, the outcome must be the
 * same as feeding it whole; a header must end within the bounds proxy.h
 * gives, and its source be an IP address of the right length. */
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
feed(const uint8_t *data, size_t size, size_t piece, size_t *ret_used, struct proxy_header *h)
{
	struct proxy_parser p;
	size_t off = 0;

	proxy_parser_init(&p);
	if (piece == 0)
		piece = size ? size : 1;
	while (off < size) {
		size_t n = size - off < piece ? size - off : piece, used = 0;
		int r = proxy_parse(&p, data + off, n, &used, h);

		if (r == PROXY_DONE) {
			if (used == 0 || used > n)
				abort();
			*ret_used = off + used;
			return r;
		}
		if (r < 0) {
			if (r != -EBADMSG && r != -E2BIG)
				abort();
			/* Refused for good. */
			if (proxy_parse(&p, data, size, &used, h) != -EINVAL)
				abort();
			return r;
		}
		if (r != PROXY_MORE)
			abort();
		off += n;
	}
	return PROXY_MORE;
}

static void
check_header(const struct proxy_header *h, size_t used)
{
	if (h->version == 1 && used > PROXY_V1_MAX)
		abort();
	if (h->version == 2 && (used < PROXY_V2_HEADER || used > PROXY_V2_MAX))
		abort();
	if (h->version != 1 && h->version != 2)
		abort();
	if (!h->has_source)
		return;
	if (h->local)
		abort();
	if (!(h->source.ss_family == AF_INET && h->source_len == sizeof(struct sockaddr_in)) &&
	    !(h->source.ss_family == AF_INET6 && h->source_len == sizeof(struct sockaddr_in6)))
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_header whole, cut;
	size_t used_whole = 0, used_cut = 0;
	int r_whole, r_cut;

	if (size == 0)
		return 0;
	r_whole = feed(data + 1, size - 1, 0, &used_whole, &whole);
	r_cut = feed(data + 1, size - 1, data[0], &used_cut, &cut);
	if (r_whole != r_cut)
		abort();
	if (r_whole != PROXY_DONE)
		return 0;
	check_header(&whole, used_whole);
	if (used_whole != used_cut || whole.version != cut.version ||
	    whole.has_source != cut.has_source || whole.local != cut.local ||
	    whole.source_len != cut.source_len ||
	    memcmp(&whole.source, &cut.source, whole.source_len) != 0)
		abort();
	return 0;
}
