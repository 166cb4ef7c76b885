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
 * floor for any forking process that has them mapped.
 *
 * With -s PATH it is split in two, as a fork model could be whose
 * supervisor keeps its libraries out of every connection: this process
 * accepts, and hands each turn's connections in one SCM_RIGHTS message to
 * a process it starts from PATH (forkref, libc alone, run as "-f 3"),
 * which forks one process per connection. forkref-libs -s forkref is the
 * floor of that design: the handoff's cost, and fork() and exit() from a
 * process that maps libc alone. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "handoff.h"

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

/* One connection from the listener, with TCP_NODELAY as refserver and
 * echod set it; -1 if there is none. EMFILE and the like are said, with
 * a moment's pause rather than spinning on the same error. */
static int
accept_tuned(int listener)
{
	int one = 1, fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0) {
		if (errno != EINTR && errno != ECONNABORTED && errno != EAGAIN) {
			perror("forkref: accept4");
			usleep(10000);
		}
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static _Noreturn void
serve(int listener)
{
	for (;;) {
		int fd = accept_tuned(listener);
		pid_t pid;

		if (fd < 0)
			continue;
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

/* -f FD: one process per connection received on the channel, until the
 * accepting process is gone. */
static _Noreturn void
fork_handed(int channel)
{
	int fds[HANDOFF_BATCH];
	size_t n;

	while ((n = handoff_receive(channel, fds, 0)) > 0) {
		for (size_t i = 0; i < n; i++) {
			pid_t pid = fork();

			if (pid == 0) {
				close(channel);
				for (size_t j = i + 1; j < n; j++)
					close(fds[j]);
				echo_until_eof(fds[i]);
			}
			if (pid < 0) {
				perror("forkref: fork");
				usleep(10000);
			}
			close(fds[i]);
		}
	}
	_exit(0);
}

/* The accepting half of -s: each turn takes what the (non-blocking)
 * listener holds, up to a batch, and hands it on in one message. */
static _Noreturn void
accept_and_hand(int listener, int channel)
{
	fcntl(listener, F_SETFL, O_NONBLOCK);
	for (;;) {
		int fds[HANDOFF_BATCH], r;
		size_t n = 0;

		while (n < HANDOFF_BATCH) {
			int fd = accept_tuned(listener);

			if (fd < 0)
				break;
			fds[n++] = fd;
		}
		if (n == 0) {
			struct pollfd p = {.fd = listener, .events = POLLIN};

			poll(&p, 1, -1);
			continue;
		}
		r = handoff_send(channel, fds, n);
		if (r < 0) {
			fprintf(stderr, "forkref: handing connections on: %s\n", strerror(-r));
			exit(1);
		}
		for (size_t i = 0; i < n; i++)
			close(fds[i]);
	}
}

/* Starts PATH -f 3 on one end of a new channel; returns the other end. */
static int
start_forker(const char *path)
{
	int channel = -1;
	pid_t pid = handoff_fork(&channel);

	if (pid < 0)
		return pid;
	if (pid == 0) {
		/* dup2() clears close-on-exec on the copy. */
		if (dup2(channel, 3) < 0)
			_exit(127);
		execl(path, path, "-f", "3", (char *)NULL);
		fprintf(stderr, "forkref: starting %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	return channel;
}

static const char usage[] = "Usage: forkref -p PORT [-s PATH]\n"
			    "Fork-per-connection TCP echo server on 127.0.0.1:PORT, the\n"
			    "process-per-connection reference for echod-bench. Stops on SIGTERM\n"
			    "(its children with their process group).\n"
			    "  -s PATH  accept here, fork in a process started from PATH (a\n"
			    "           forkref), which is handed the connections\n"
			    "  -f FD    (for -s) fork for the connections received on FD\n";

int
main(int argc, char **argv)
{
	unsigned long port = 0;
	const char *forker = NULL;
	int c, fd, channel = -1;

	while ((c = getopt(argc, argv, "p:s:f:h")) != -1) {
		switch (c) {
		case 'p':
			port = strtoul(optarg, NULL, 10);
			break;
		case 's':
			forker = optarg;
			break;
		case 'f':
			channel = atoi(optarg);
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	if (optind != argc || (channel < 0) == (port == 0 || port > 65535)) {
		fputs(usage, stderr);
		return 2;
	}
	/* Reaped by the kernel: no waitpid() per connection. */
	signal(SIGCHLD, SIG_IGN);
	if (channel >= 0)
		fork_handed(channel);
	fd = listen_on((unsigned)port);
	if (fd < 0) {
		fprintf(stderr, "forkref: listening on 127.0.0.1:%lu: %s\n", port, strerror(-fd));
		return 1;
	}
	if (!forker)
		serve(fd);
	channel = start_forker(forker);
	if (channel < 0) {
		fprintf(stderr, "forkref: starting %s: %s\n", forker, strerror(-channel));
		return 1;
	}
	accept_and_hand(fd, channel);
}
