/* forkref: the reference for servers with a process per connection (echod
 * fork, xinetd, inetd, socat). One loop accepts on 127.0.0.1:PORT (TCP
 * only) and forks; the child echoes with blocking read() and write() until
 * its client finishes, and exits. Nothing else: no limits, no logging, no
 * signal handling, children reaped by the kernel (SIGCHLD ignored). What
 * fork() and exit() cost a connection on this machine, and nothing more.
 *
 * fork() and exit() cost grows with the mappings a process has, and a
 * dynamically linked program maps five per library. The build links this
 * file twice: forkref, with libc alone, and forkref-libs, with the
 * libraries echod links (libsystemd, and through it lz4, zstd, lzma,
 * gcrypt, gpg-error and cap; libinih) though it calls none of them: the
 * floor for any forking process that has them mapped. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server-args.h"

#define BUF_SIZE 65536

/* Static, as echod's: a child's first read faults in a zero page rather
 * than copying a parent's heap page. */
static char buf[BUF_SIZE];

static _Noreturn void
echo_until_eof(int fd)
{
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			_exit(0);
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(fd, buf + off, (size_t)(n - off));

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				_exit(0);
			off += w;
		}
	}
}

static int
listen_on(unsigned port)
{
	struct sockaddr_in a = {
	    .sin_family = AF_INET,
	    .sin_port = htons((uint16_t)port),
	    .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 4096) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

static _Noreturn void
serve(int listener)
{
	for (;;) {
		int one = 1, fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
		pid_t pid;

		if (fd < 0) {
			/* EMFILE and the like: say so, and give the clients
			 * a moment rather than spinning on the same error. */
			if (errno != EINTR && errno != ECONNABORTED) {
				perror("forkref: accept4");
				usleep(10000);
			}
			continue;
		}
		/* As refserver and echod do. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		pid = fork();
		if (pid == 0) {
			close(listener);
			echo_until_eof(fd);
		}
		if (pid < 0) {
			perror("forkref: fork");
			usleep(10000);
		}
		close(fd);
	}
}

int
main(int argc, char **argv)
{
	unsigned port = server_port_from_args(
	    argc, argv,
	    "Usage: forkref -p PORT\n"
	    "Fork-per-connection TCP echo server on 127.0.0.1:PORT, the\n"
	    "process-per-connection reference for echod-bench. Stops on SIGTERM\n"
	    "(its children with their process group).\n");
	int fd = listen_on(port);

	if (fd < 0) {
		fprintf(stderr, "forkref: listening on 127.0.0.1:%u: %s\n", port, strerror(-fd));
		return 1;
	}
	/* Reaped by the kernel: no waitpid() per connection. */
	signal(SIGCHLD, SIG_IGN);
	serve(fd);
}
