/* refserver's command line: -p PORT, -s and -h (forkref, which has
 * options of its own, parses its own). */
#pragma once

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* The port -p gave (1-65535); *ret_split: whether -s was given. -h
 * prints usage and exits 0; anything else prints it to stderr and exits
 * 2. */
static inline unsigned
server_port_from_args(int argc, char **argv, bool *ret_split, const char *usage)
{
	unsigned long port = 0;
	int c;

	*ret_split = false;
	while ((c = getopt(argc, argv, "p:sh")) != -1) {
		switch (c) {
		case 's':
			*ret_split = true;
			break;
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
