/* refserver's command line: -p PORT, and -h (forkref, which has options
 * of its own, parses its own). */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* The port -p gave (1-65535). -h prints usage and exits 0; anything else
 * prints it to stderr and exits 2. */
static inline unsigned
server_port_from_args(int argc, char **argv, const char *usage)
{
	unsigned long port = 0;
	int c;

	while ((c = getopt(argc, argv, "p:h")) != -1) {
		switch (c) {
		case 'p':
			port = strtoul(optarg, NULL, 10);
			break;
		case 'h':
			fputs(usage, stdout);
			exit(0);
		default:
			fputs(usage, stderr);
			exit(2);
		}
	}
	if (port == 0 || port > 65535 || optind != argc) {
		fputs(usage, stderr);
		exit(2);
	}
	return (unsigned)port;
}
