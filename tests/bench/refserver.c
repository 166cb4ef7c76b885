/* refserver: the reference echo server of the benchmark. One process, one
 * thread, one epoll loop, TCP and UDP on the same port: the most a bare
 * server gets out of one core, which echod is measured against.
 *
 * A connection is read into one shared buffer and written straight back.
 * Only when a write is partial does the connection get its own buffer for
 * the rest, and then it is not read again until that buffer has drained,
 * so a client that does not read cannot make the server buffer without
 * bound.
 *
 * With -s it is split in two, as a server that accepts in one process and
 * echoes in another is (echod's passfd): the process started accepts
 * and hands each turn's connections, in one SCM_RIGHTS message, to a
 * process it forked, which runs the loop above on them (and the UDP
 * socket). That is the floor of such a design: an accept, a sendmsg() and
 * a recvmsg(), and two processes to wake, on top of the echo. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "handoff.h"
#include "server-args.h"

#define BUF_SIZE 65536
#define UDP_BATCH 64
#define UDP_MAX 65536

/* Bytes a connection still owes its client. */
struct pending {
	size_t off, len;
	int eof; /* the client has finished: close once drained */
	uint8_t data[];
};

struct server {
	int epfd, tcp, udp, sig;
	int channel; /* -s: to the echoing process, or from the acceptor; else -1 */
	struct pending **pend; /* by fd; NULL for all but the few that need one */
	size_t npend;
	uint8_t buf[BUF_SIZE];
};

static int
add_fd(struct server *s, int fd, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.fd = fd };

	return epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev);
}

static void
set_events(struct server *s, int fd, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.fd = fd };

	epoll_ctl(s->epfd, EPOLL_CTL_MOD, fd, &ev);
}

static void
conn_close(struct server *s, int fd)
{
	free(s->pend[fd]);
	s->pend[fd] = NULL;
	close(fd);
}

/* Keeps the unsent tail of an echo and stops reading until it is sent. */
static int
conn_defer(struct server *s, int fd, const uint8_t *data, size_t len)
{
	struct pending *p = malloc(sizeof(*p) + len);

	if (!p)
		return -ENOMEM;
	memcpy(p->data, data, len);
	p->off = 0;
	p->len = len;
	p->eof = 0;
	s->pend[fd] = p;
	set_events(s, fd, EPOLLOUT);
	return 0;
}

static void
conn_readable(struct server *s, int fd)
{
	ssize_t n = recv(fd, s->buf, sizeof(s->buf), 0), w;

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_close(s, fd);
		return;
	}
	w = send(fd, s->buf, (size_t)n, MSG_NOSIGNAL);
	if (w < 0) {
		if (errno != EAGAIN) {
			conn_close(s, fd);
			return;
		}
		w = 0;
	}
	if (w < n && conn_defer(s, fd, s->buf + w, (size_t)(n - w)) < 0)
		conn_close(s, fd);
}

static void
conn_writable(struct server *s, int fd)
{
	struct pending *p = s->pend[fd];
	ssize_t w = send(fd, p->data + p->off, p->len - p->off, MSG_NOSIGNAL);

	if (w < 0) {
		if (errno != EAGAIN && errno != EINTR)
			conn_close(s, fd);
		return;
	}
	p->off += (size_t)w;
	if (p->off < p->len)
		return;
	free(p);
	s->pend[fd] = NULL;
	set_events(s, fd, EPOLLIN);
}

/* -s, the acceptor: hands on what is queued, a message per HANDOFF_BATCH,
 * and closes its copies. Blocking: the echoing process keeps up, or the
 * clients wait in the accept queue meanwhile. */
static void
accept_and_pass(struct server *s)
{
	int fds[HANDOFF_BATCH], one = 1;
	size_t n = 0;

	for (int i = 0; i < 4096; i++) {
		int fd = accept4(s->tcp, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd >= 0) {
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			fds[n++] = fd;
		}
		if (n == HANDOFF_BATCH || (fd < 0 && n > 0)) {
			(void)handoff_send(s->channel, fds, n);
			for (size_t k = 0; k < n; k++)
				close(fds[k]);
			n = 0;
		}
		if (fd < 0)
			return;
	}
}

/* -s, the echoing process: takes in what the acceptor sent. */
static void
receive_passed(struct server *s)
{
	int fds[HANDOFF_BATCH];
	size_t n;

	while ((n = handoff_receive(s->channel, fds, MSG_DONTWAIT)) > 0)
		for (size_t i = 0; i < n; i++)
			if ((size_t)fds[i] >= s->npend || add_fd(s, fds[i], EPOLLIN) < 0)
				close(fds[i]);
}

static void
accept_all(struct server *s)
{
	int one = 1;

	if (s->channel >= 0) {
		accept_and_pass(s);
		return;
	}

	/* Bounded: the accept queue holds at most the backlog. */
	for (int i = 0; i < 4096; i++) {
		int fd = accept4(s->tcp, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0)
			return; /* EAGAIN, or EMFILE: the next wake-up retries */
		if ((size_t)fd >= s->npend || add_fd(s, fd, EPOLLIN) < 0) {
			close(fd);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
}

/* Echoes a batch of datagrams back to their senders, except those from
 * privileged ports: two echo services must not bounce packets forever. */
static void
udp_readable(struct server *s)
{
	static uint8_t bufs[UDP_BATCH][UDP_MAX];
	struct sockaddr_storage from[UDP_BATCH];
	struct mmsghdr in[UDP_BATCH], out[UDP_BATCH];
	struct iovec iov[UDP_BATCH];
	int n, m = 0;

	for (int i = 0; i < UDP_BATCH; i++) {
		iov[i] = (struct iovec){ .iov_base = bufs[i], .iov_len = UDP_MAX };
		in[i] = (struct mmsghdr){ .msg_hdr = { .msg_name = &from[i],
						       .msg_namelen = sizeof(from[i]),
						       .msg_iov = &iov[i],
						       .msg_iovlen = 1 } };
	}
	n = recvmmsg(s->udp, in, UDP_BATCH, MSG_DONTWAIT, NULL);
	for (int i = 0; i < n; i++) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&from[i];

		if (ntohs(sin->sin_port) < 1024)
			continue;
		iov[i].iov_len = in[i].msg_len;
		out[m] = in[i];
		out[m].msg_hdr.msg_iov = &iov[i];
		m++;
	}
	/* A full send buffer drops the rest, as UDP may. */
	if (m > 0)
		sendmmsg(s->udp, out, (unsigned)m, MSG_DONTWAIT);
}

static int
open_listener(int type, const struct sockaddr_in *sin)
{
	int fd, one = 1;

	fd = socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)sin, sizeof(*sin)) < 0 ||
	    (type == SOCK_STREAM && listen(fd, 4096) < 0)) {
		close(fd);
		return -1;
	}
	return fd;
}

static int
setup(struct server *s, unsigned port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct rlimit rl;
	sigset_t mask;

	/* One slot per possible fd; the hard limit is what hold needs. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	s->npend = rl.rlim_cur > 1048576 ? 1048576 : rl.rlim_cur;
	s->pend = calloc(s->npend, sizeof(*s->pend));

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	s->sig = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s->tcp = open_listener(SOCK_STREAM, &sin);
	s->udp = open_listener(SOCK_DGRAM, &sin);
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!s->pend || s->sig < 0 || s->tcp < 0 || s->udp < 0 || s->epfd < 0 ||
	    add_fd(s, s->tcp, EPOLLIN) < 0 || add_fd(s, s->udp, EPOLLIN) < 0 ||
	    add_fd(s, s->sig, EPOLLIN) < 0)
		return -errno;
	return 0;
}

static void
serve(struct server *s)
{
	struct epoll_event ev[256];

	for (;;) {
		int n = epoll_wait(s->epfd, ev, 256, -1);

		for (int i = 0; i < n; i++) {
			int fd = ev[i].data.fd;

			if (fd == s->sig)
				return;
			if (fd == s->tcp)
				accept_all(s);
			else if (fd == s->channel)
				receive_passed(s);
			else if (fd == s->udp)
				udp_readable(s);
			else if (s->pend[fd])
				conn_writable(s, fd);
			else
				conn_readable(s, fd);
		}
	}
}

/* -s: forks the echoing process; the TCP listener stays here, the UDP
 * socket goes there. Returns in both; 0, or -errno. */
static int
split(struct server *s, pid_t *ret_echoer)
{
	pid_t pid = handoff_fork(&s->channel);

	if (pid < 0)
		return pid;
	*ret_echoer = pid;
	if (pid == 0) {
		/* The epoll instance is the acceptor's (an EPOLL_CTL_DEL here
		 * would take the listener out of it): this process closes its
		 * copy and makes its own. */
		close(s->tcp);
		s->tcp = -1;
		close(s->epfd);
		s->epfd = epoll_create1(EPOLL_CLOEXEC);
		if (s->epfd < 0 || add_fd(s, s->udp, EPOLLIN) < 0 || add_fd(s, s->sig, EPOLLIN) < 0 ||
		    add_fd(s, s->channel, EPOLLIN) < 0)
			return -errno;
		return 0;
	}
	epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->udp, NULL);
	return 0;
}

int
main(int argc, char **argv)
{
	static struct server s = { .channel = -1 };
	bool split_in_two = false;
	unsigned port = server_port_from_args(
	    argc, argv, &split_in_two,
	    "Usage: refserver -p PORT [-s]\n"
	    "Single-threaded epoll echo server (TCP and UDP) on 127.0.0.1:PORT,\n"
	    "the reference for echod-bench. -s: split in two, one process\n"
	    "accepting and passing each connection to another that echoes.\n"
	    "Stops on SIGTERM or SIGINT.\n");
	pid_t echoer = -1;
	int r = setup(&s, port);

	if (r == 0 && split_in_two)
		r = split(&s, &echoer);
	if (r < 0) {
		fprintf(stderr, "refserver: setting up 127.0.0.1:%u: %s\n", port, strerror(-r));
		return 1;
	}
	serve(&s);
	/* The acceptor, stopped: so is the echoing process. */
	if (echoer > 0) {
		kill(echoer, SIGTERM);
		waitpid(echoer, NULL, 0);
	}
	return 0;
}
