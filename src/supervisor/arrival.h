/* A connection the supervisor accepted, on its way to a model's deliver(). */
#pragma once

#include <stdbool.h>
#include <sys/socket.h>

struct arrival {
	int fd;
	bool proxy; /* to a proxy listener: a PROXY header comes first */
	/* Its peer as accept() gave it, so that nobody asks the socket
	 * again (Model=fork names it in the process title); peer_len 0
	 * where it is not known (one that waited, see held.h). */
	struct sockaddr_storage peer;
	socklen_t peer_len;
};
