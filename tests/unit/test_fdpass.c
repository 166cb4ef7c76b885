/* fdpass over real socketpairs. The kernel's own failure modes (truncation,
 * fd limit, foreign control data, dead peer, full queue) are provoked for
 * real; recvmsg() is wrapped only to observe msg_flags and to inject what no
 * kernel sends. Every failing case checks that no fd leaked. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

#include "fdpass.h"
#include "util.h"

#ifndef SO_PASSPIDFD
#define SO_PASSPIDFD 76
#endif

/* What fdpass_recv() must leave alone when it fails. */
#define UNTOUCHED (-42)

enum inject {
	INJECT_NONE,
	INJECT_EINTR,
	INJECT_WRONG_LEVEL,
	INJECT_OVERLONG,
};

static enum inject inject;
/* What fdpass_recv() says a message carried; the tests below that are not
 * about tags pay it no heed. */
static enum fdpass_tag tag;
static int last_msg_flags;
static int injected_fd = -1;

ssize_t __real_recvmsg(int fd, struct msghdr *msg, int flags);
ssize_t __wrap_recvmsg(int fd, struct msghdr *msg, int flags);

ssize_t
__wrap_recvmsg(int fd, struct msghdr *msg, int flags)
{
	enum inject what = inject;
	struct cmsghdr *cmsg;
	ssize_t n;

	inject = INJECT_NONE;
	if (what == INJECT_EINTR) {
		errno = EINTR;
		return -1;
	}

	n = __real_recvmsg(fd, msg, flags);
	if (n < 0)
		return n;
	last_msg_flags = msg->msg_flags;

	cmsg = CMSG_FIRSTHDR(msg);
	if (what == INJECT_WRONG_LEVEL && cmsg) {
		memcpy(&injected_fd, CMSG_DATA(cmsg), sizeof(int));
		cmsg->cmsg_level = SOL_IP;
	}
	if (what == INJECT_OVERLONG && cmsg) {
		memcpy(&injected_fd, CMSG_DATA(cmsg), sizeof(int));
		cmsg->cmsg_len = CMSG_LEN(64 * sizeof(int));
		msg->msg_flags |= MSG_CTRUNC;
	}
	return n;
}

/* Counts this process's open fds; the directory's own fd is counted every
 * time, so only differences mean anything. */
static int
count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	assert_non_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static bool
fd_is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

/* Sends a message fdpass_send() never would: datalen bytes and nfds fds
 * (no control message at all when nfds is 0). */
static void
raw_send(int channel, const int *fds, size_t nfds, size_t datalen)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(3 * sizeof(int))];
	} control = {};
	char data[2] = {'x', 'y'};
	struct iovec iov = {.iov_base = data, .iov_len = datalen};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};

	assert_true(nfds <= 3 && datalen <= sizeof(data));
	if (nfds > 0) {
		struct cmsghdr *cmsg;

		msg.msg_control = control.buf;
		msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(cmsg), fds, nfds * sizeof(int));
	}
	assert_int_equal(sendmsg(channel, &msg, MSG_NOSIGNAL), (ssize_t)datalen);
}

static void
new_channel(int pair[2])
{
	assert_int_equal(fdpass_channel_new(pair), 0);
}

static void
close_channel(int pair[2])
{
	closep(&pair[0]);
	closep(&pair[1]);
}

/* Lowers the soft RLIMIT_NOFILE so that no new fd can be allocated. Returns
 * false when the kernel would not enforce it: valgrind keeps its own limit
 * and applies it to some calls (dup) but not others (recvmsg). */
static bool
exhaust_fds(struct rlimit *saved)
{
	struct rlimit low;
	int lowest_free, probe;

	if (RUNNING_ON_VALGRIND)
		return false;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, saved), 0);
	lowest_free = fcntl(0, F_DUPFD_CLOEXEC, 0);
	assert_true(lowest_free >= 0);
	close(lowest_free);

	low = (struct rlimit){.rlim_cur = lowest_free, .rlim_max = saved->rlim_max};
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	probe = fcntl(0, F_DUPFD_CLOEXEC, 0);
	if (probe >= 0) {
		close(probe);
		assert_int_equal(setrlimit(RLIMIT_NOFILE, saved), 0);
		return false;
	}
	return true;
}

static void
test_channel_new(void **state)
{
	int pair[2];

	new_channel(pair);
	for (size_t i = 0; i < 2; i++) {
		int type = 0, domain = 0;
		socklen_t len = sizeof(int);

		assert_int_equal(getsockopt(pair[i], SOL_SOCKET, SO_TYPE, &type, &len), 0);
		assert_int_equal(type, SOCK_SEQPACKET);
		assert_int_equal(getsockopt(pair[i], SOL_SOCKET, SO_DOMAIN, &domain, &len), 0);
		assert_int_equal(domain, AF_UNIX);
		assert_true(fcntl(pair[i], F_GETFD) & FD_CLOEXEC);
		assert_true(fcntl(pair[i], F_GETFL) & O_NONBLOCK);
	}
	close_channel(pair);
}

static void
test_channel_new_fails_untouched(void **state)
{
	int pair[2] = {UNTOUCHED, UNTOUCHED}, r;
	struct rlimit saved;

	if (!exhaust_fds(&saved))
		skip();
	r = fdpass_channel_new(pair);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
	assert_int_equal(r, -EMFILE);
	assert_int_equal(pair[0], UNTOUCHED);
	assert_int_equal(pair[1], UNTOUCHED);
}

/* The received fd is the same open file: what is written through it comes
 * out of the pipe, and its file status flags are the sender's. */
static void
test_pass_same_open_file(void **state)
{
	int pair[2], pipefd[2], fd = UNTOUCHED;
	char buf[8] = {};

	new_channel(pair);
	assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
	assert_int_equal(fcntl(pipefd[1], F_SETFL, O_NONBLOCK), 0);

	assert_int_equal(fdpass_send(pair[FDPASS_SUPERVISOR], FDPASS_CONN, pipefd[1]), 0);
	assert_true(fd_is_open(pipefd[1]));
	closep(&pipefd[1]);

	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), 0);
	assert_true(fd >= 0);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
	assert_int_equal(write(fd, "echo", 4), 4);
	assert_int_equal(read(pipefd[0], buf, sizeof(buf)), 4);
	assert_memory_equal(buf, "echo", 4);

	close(fd);
	close(pipefd[0]);
	close_channel(pair);
}

/* On the wire: one data byte, one SCM_RIGHTS with one fd, nothing else. */
static void
test_send_wire_format(void **state)
{
	int pair[2], fd;
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(8 * sizeof(int))];
	} control;
	char data[16];
	struct iovec iov = {.iov_base = data, .iov_len = sizeof(data)};
	struct msghdr msg = {
	    .msg_iov = &iov,
	    .msg_iovlen = 1,
	    .msg_control = control.buf,
	    .msg_controllen = sizeof(control.buf),
	};
	struct cmsghdr *cmsg;

	new_channel(pair);
	assert_int_equal(fdpass_send(pair[FDPASS_SUPERVISOR], FDPASS_CONN, STDIN_FILENO), 0);
	assert_int_equal(recvmsg(pair[FDPASS_WORKER], &msg, MSG_CMSG_CLOEXEC), 1);
	assert_int_equal(data[0], 'C'); /* the tag */
	assert_int_equal(msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC), 0);
	cmsg = CMSG_FIRSTHDR(&msg);
	assert_non_null(cmsg);
	assert_int_equal(cmsg->cmsg_level, SOL_SOCKET);
	assert_int_equal(cmsg->cmsg_type, SCM_RIGHTS);
	assert_int_equal(cmsg->cmsg_len, CMSG_LEN(sizeof(int)));
	assert_null(CMSG_NXTHDR(&msg, cmsg));
	memcpy(&fd, CMSG_DATA(cmsg), sizeof(int));
	close(fd);
	close_channel(pair);
}

/* Seqpacket keeps messages apart: two sends are two receives, in order. */
static void
test_one_message_per_fd(void **state)
{
	int pair[2], a = UNTOUCHED, b = UNTOUCHED, c = UNTOUCHED;
	struct stat st_null, st_a, st_b, st_self;
	_cleanup_close_ int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	_cleanup_close_ int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);

	assert_true(devnull >= 0 && self >= 0);
	new_channel(pair);
	assert_int_equal(fdpass_send(pair[FDPASS_SUPERVISOR], FDPASS_CONN, devnull), 0);
	assert_int_equal(fdpass_send(pair[FDPASS_SUPERVISOR], FDPASS_CONN, self), 0);

	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &a), 0);
	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &b), 0);
	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &c), -EAGAIN);
	assert_int_equal(c, UNTOUCHED);

	assert_int_equal(fstat(devnull, &st_null), 0);
	assert_int_equal(fstat(self, &st_self), 0);
	assert_int_equal(fstat(a, &st_a), 0);
	assert_int_equal(fstat(b, &st_b), 0);
	assert_true(st_a.st_dev == st_null.st_dev && st_a.st_ino == st_null.st_ino);
	assert_true(st_b.st_dev == st_self.st_dev && st_b.st_ino == st_self.st_ino);

	close(a);
	close(b);
	close_channel(pair);
}

static void
test_recv_empty_eagain(void **state)
{
	int pair[2], fd = UNTOUCHED;

	new_channel(pair);
	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), -EAGAIN);
	assert_int_equal(fd, UNTOUCHED);
	close_channel(pair);
}

/* A message queued before the supervisor went is still delivered; then EOF. */
static void
test_recv_eof(void **state)
{
	int pair[2], fd = UNTOUCHED;

	new_channel(pair);
	assert_int_equal(fdpass_send(pair[FDPASS_SUPERVISOR], FDPASS_CONN, STDIN_FILENO), 0);
	closep(&pair[FDPASS_SUPERVISOR]);

	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), 0);
	close(TAKE_FD(fd));
	fd = UNTOUCHED;
	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), -ECONNRESET);
	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), -ECONNRESET);
	assert_int_equal(fd, UNTOUCHED);
	close_channel(pair);
}

/* The worker at its fd limit: the kernel cannot install the fd, sets
 * MSG_CTRUNC and closes the connection itself. */
static void
test_recv_ctrunc_fd_limit(void **state)
{
	int pair[2], pipefd[2], fd = UNTOUCHED, before, r;
	struct rlimit saved;
	char c;

	new_channel(pair);
	assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
	assert_int_equal(fdpass_send(pair[FDPASS_SUPERVISOR], FDPASS_CONN, pipefd[1]), 0);
	closep(&pipefd[1]);
	before = count_fds();

	if (!exhaust_fds(&saved)) {
		close(pipefd[0]);
		close_channel(pair);
		skip();
	}
	last_msg_flags = 0;
	r = fdpass_recv(pair[FDPASS_WORKER], &tag, &fd);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);

	assert_int_equal(r, -EMFILE);
	assert_true(last_msg_flags & MSG_CTRUNC);
	assert_int_equal(fd, UNTOUCHED);
	assert_int_equal(count_fds(), before);
	/* The only write end went with the message: the pipe reads EOF. */
	assert_int_equal(read(pipefd[0], &c, 1), 0);
	/* The message is consumed, not left to fail again. */
	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), -EAGAIN);

	close(pipefd[0]);
	close_channel(pair);
}

/* Three fds overflow the buffer: MSG_CTRUNC with two fds delivered. */
static void
test_recv_ctrunc_extra_fds(void **state)
{
	int pair[2], fd = UNTOUCHED, before;
	int fds[3] = {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO};

	new_channel(pair);
	raw_send(pair[FDPASS_SUPERVISOR], fds, 3, 1);
	before = count_fds();
	last_msg_flags = 0;
	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), -EPROTO);
	assert_true(last_msg_flags & MSG_CTRUNC);
	assert_int_equal(fd, UNTOUCHED);
	assert_int_equal(count_fds(), before);
	close_channel(pair);
}

/* Two fds fit in the padding of a one-fd buffer without MSG_CTRUNC; the
 * length check must catch them and close both. */
static void
test_recv_two_fds_rejected(void **state)
{
	int pair[2], fd = UNTOUCHED, before;
	int fds[2] = {STDIN_FILENO, STDOUT_FILENO};

	new_channel(pair);
	raw_send(pair[FDPASS_SUPERVISOR], fds, 2, 1);
	before = count_fds();
	last_msg_flags = 0;
	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), -EPROTO);
	assert_int_equal(fd, UNTOUCHED);
	assert_int_equal(count_fds(), before);
	close_channel(pair);
}

static void
test_recv_no_cmsg(void **state)
{
	int pair[2], fd = UNTOUCHED;

	new_channel(pair);
	raw_send(pair[FDPASS_SUPERVISOR], NULL, 0, 1);
	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), -EPROTO);
	assert_int_equal(fd, UNTOUCHED);
	close_channel(pair);
}

/* Each tag arrives as sent. */
static void
test_tags_round_trip(void **state)
{
	static const enum fdpass_tag tags[] = {FDPASS_CONN, FDPASS_KEPT, FDPASS_OWED};
	int pair[2], fd;

	new_channel(pair);
	for (size_t i = 0; i < ELEMENTSOF(tags); i++)
		assert_int_equal(fdpass_send(pair[FDPASS_SUPERVISOR], tags[i], STDIN_FILENO), 0);
	for (size_t i = 0; i < ELEMENTSOF(tags); i++) {
		tag = 0;
		assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), 0);
		assert_int_equal(tag, tags[i]);
		close(fd);
	}
	close_channel(pair);
}

/* One byte and one fd, but a byte that is no tag: broken, the fd closed. */
static void
test_recv_unknown_tag(void **state)
{
	int pair[2], fd = UNTOUCHED, before;

	new_channel(pair);
	before = count_fds();
	raw_send(pair[FDPASS_SUPERVISOR], (int[]){STDIN_FILENO}, 1, 1);
	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), -EPROTO);
	assert_int_equal(fd, UNTOUCHED);
	assert_int_equal(count_fds(), before);
	close_channel(pair);
}

/* A zero-length message reads as 0 like EOF, but carries an fd to close. */
static void
test_recv_zero_length_with_fd(void **state)
{
	int pair[2], fd = UNTOUCHED, before;

	new_channel(pair);
	raw_send(pair[FDPASS_SUPERVISOR], (int[]){STDIN_FILENO}, 1, 0);
	before = count_fds();
	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), -EPROTO);
	assert_int_equal(fd, UNTOUCHED);
	assert_int_equal(count_fds(), before);

	/* The channel is still alive. */
	assert_int_equal(fdpass_send(pair[FDPASS_SUPERVISOR], FDPASS_CONN, STDIN_FILENO), 0);
	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), 0);
	close(fd);
	close_channel(pair);
}

static void
test_recv_long_data(void **state)
{
	int pair[2], fd = UNTOUCHED, before;

	new_channel(pair);
	raw_send(pair[FDPASS_SUPERVISOR], (int[]){STDIN_FILENO}, 1, 2);
	before = count_fds();
	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), -EPROTO);
	assert_int_equal(fd, UNTOUCHED);
	assert_int_equal(count_fds(), before);
	close_channel(pair);
}

/* SO_PASSCRED on the channel: SCM_CREDENTIALS does not fit the buffer, the
 * fd is dropped, and that is a protocol error, not an fd limit. */
static void
test_recv_foreign_credentials(void **state)
{
	int pair[2], fd = UNTOUCHED, before, one = 1;

	new_channel(pair);
	assert_int_equal(
	    setsockopt(pair[FDPASS_WORKER], SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
	assert_int_equal(fdpass_send(pair[FDPASS_SUPERVISOR], FDPASS_CONN, STDIN_FILENO), 0);
	before = count_fds();
	last_msg_flags = 0;
	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), -EPROTO);
	assert_true(last_msg_flags & MSG_CTRUNC);
	assert_int_equal(fd, UNTOUCHED);
	assert_int_equal(count_fds(), before);
	close_channel(pair);
}

/* SO_PASSPIDFD (Linux 6.5+): an SCM_PIDFD fits where SCM_RIGHTS was expected;
 * the type check rejects it and the pidfd it brought is closed. */
static void
test_recv_wrong_type(void **state)
{
	int pair[2], fd = UNTOUCHED, before, one = 1;

	new_channel(pair);
	if (setsockopt(pair[FDPASS_WORKER], SOL_SOCKET, SO_PASSPIDFD, &one, sizeof(one)) < 0) {
		assert_int_equal(errno, ENOPROTOOPT);
		close_channel(pair);
		skip();
	}
	raw_send(pair[FDPASS_SUPERVISOR], NULL, 0, 1);
	before = count_fds();
	last_msg_flags = 0;
	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), -EPROTO);
	assert_int_equal(last_msg_flags & MSG_CTRUNC, 0);
	assert_int_equal(fd, UNTOUCHED);
	assert_int_equal(count_fds(), before);
	close_channel(pair);
}

/* No AF_UNIX socket reports another level; injected to keep the check. */
static void
test_recv_wrong_level(void **state)
{
	int pair[2], fd = UNTOUCHED;

	new_channel(pair);
	assert_int_equal(fdpass_send(pair[FDPASS_SUPERVISOR], FDPASS_CONN, STDIN_FILENO), 0);
	injected_fd = -1;
	inject = INJECT_WRONG_LEVEL;
	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), -EPROTO);
	assert_int_equal(fd, UNTOUCHED);
	/* Not at SOL_SOCKET, its payload is not known to be fds: left alone. */
	assert_true(injected_fd >= 0 && fd_is_open(injected_fd));
	close(injected_fd);
	close_channel(pair);
}

/* A header claiming more than the buffer holds must not be read past its
 * end (AddressSanitizer would see it). The kernel never cuts SCM_RIGHTS, so
 * what is in the buffer is not trusted to be fds: the test closes it. */
static void
test_recv_overlong_header(void **state)
{
	int pair[2], fd = UNTOUCHED;

	new_channel(pair);
	assert_int_equal(fdpass_send(pair[FDPASS_SUPERVISOR], FDPASS_CONN, STDIN_FILENO), 0);
	injected_fd = -1;
	inject = INJECT_OVERLONG;
	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), -EPROTO);
	assert_int_equal(fd, UNTOUCHED);
	assert_true(injected_fd >= 0);
	close(injected_fd);
	close_channel(pair);
}

static void
test_recv_error_passthrough(void **state)
{
	int pair[2], fd = UNTOUCHED;

	new_channel(pair);
	inject = INJECT_EINTR;
	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), -EINTR);
	assert_int_equal(fd, UNTOUCHED);
	close_channel(pair);
}

static volatile sig_atomic_t sigpipes;

static void
count_sigpipe(int sig)
{
	sigpipes++;
}

static void
test_send_closed_peer(void **state)
{
	struct sigaction sa = {.sa_handler = count_sigpipe}, old;
	int pair[2];

	assert_int_equal(sigaction(SIGPIPE, &sa, &old), 0);
	sigpipes = 0;
	new_channel(pair);
	closep(&pair[FDPASS_WORKER]);

	assert_int_equal(fdpass_send(pair[FDPASS_SUPERVISOR], FDPASS_CONN, STDIN_FILENO), -EPIPE);
	assert_int_equal(sigpipes, 0);
	assert_true(fd_is_open(STDIN_FILENO));

	assert_int_equal(sigaction(SIGPIPE, &old, NULL), 0);
	close_channel(pair);
}

/* The worker dies with a connection queued: the kernel closes the
 * connection, and the supervisor hears ECONNRESET once, then EPIPE. */
static void
test_send_peer_died_with_queue(void **state)
{
	int pair[2], pipefd[2];
	char c;

	new_channel(pair);
	assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
	assert_int_equal(fdpass_send(pair[FDPASS_SUPERVISOR], FDPASS_CONN, pipefd[1]), 0);
	closep(&pipefd[1]);
	closep(&pair[FDPASS_WORKER]);

	assert_int_equal(read(pipefd[0], &c, 1), 0);
	assert_int_equal(fdpass_send(pair[FDPASS_SUPERVISOR], FDPASS_CONN, STDIN_FILENO),
			 -ECONNRESET);
	assert_int_equal(fdpass_send(pair[FDPASS_SUPERVISOR], FDPASS_CONN, STDIN_FILENO), -EPIPE);

	close(pipefd[0]);
	close_channel(pair);
}

/* A worker that does not read fills its channel: EAGAIN, nothing lost, and
 * everything queued still arrives. The send buffer is shrunk so that it
 * fills before this user's in-flight fd limit (RLIMIT_NOFILE without
 * CAP_SYS_RESOURCE, which says -ETOOMANYREFS instead). */
static void
test_send_full_eagain(void **state)
{
	int pair[2], fd, r = 0, before, small = 1;
	unsigned sent, received = 0;

	new_channel(pair);
	assert_int_equal(
	    setsockopt(pair[FDPASS_SUPERVISOR], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
	before = count_fds();
	for (sent = 0; sent < 100000; sent++) {
		r = fdpass_send(pair[FDPASS_SUPERVISOR], FDPASS_CONN, STDIN_FILENO);
		if (r < 0)
			break;
	}
	assert_int_equal(r, -EAGAIN);
	assert_true(sent > 0);
	assert_true(fd_is_open(STDIN_FILENO));

	while (fdpass_recv(pair[FDPASS_WORKER], &tag, &fd) == 0) {
		close(fd);
		received++;
	}
	assert_int_equal(received, sent);
	assert_int_equal(count_fds(), before);
	assert_int_equal(fdpass_send(pair[FDPASS_SUPERVISOR], FDPASS_CONN, STDIN_FILENO), 0);
	close_channel(pair);
}

static void
test_send_bad_fd(void **state)
{
	int pair[2], fd = UNTOUCHED;

	new_channel(pair);
	assert_int_equal(fdpass_send(pair[FDPASS_SUPERVISOR], FDPASS_CONN, -1), -EBADF);
	assert_int_equal(fdpass_recv(pair[FDPASS_WORKER], &tag, &fd), -EAGAIN);
	close_channel(pair);
}

/* What the batch tests send: the write ends of three new pipes as one
 * message, tagged batch_tags; the sender's copies are closed after, so
 * each pipe's read end says EOF once the receiver's copy is gone. */
static const enum fdpass_tag batch_tags[] = {FDPASS_CONN, FDPASS_PROXY, FDPASS_CONN};

static void
send_pipe_batch(int pair[2], int pipes[3][2])
{
	int ends[3];

	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(pipe2(pipes[i], O_CLOEXEC), 0);
		ends[i] = pipes[i][1];
	}
	assert_int_equal(fdpass_send_batch(pair[FDPASS_SUPERVISOR], batch_tags, ends, 3), 0);
	for (size_t i = 0; i < 3; i++)
		closep(&pipes[i][1]);
}

/* A batch is one message: the tags and fds arrive in order, each fd the
 * open file that was sent with its tag. */
static void
test_batch_round_trip(void **state)
{
	enum fdpass_tag tags[FDPASS_BATCH];
	int pair[2], pipes[3][2], fds[FDPASS_BATCH];
	unsigned lost = 99;

	new_channel(pair);
	send_pipe_batch(pair, pipes);

	assert_int_equal(fdpass_recv_batch(pair[FDPASS_WORKER], tags, fds, FDPASS_BATCH, &lost), 3);
	assert_int_equal(lost, 0);
	for (size_t i = 0; i < 3; i++) {
		char c = 0;

		assert_int_equal(tags[i], batch_tags[i]);
		assert_true(fcntl(fds[i], F_GETFD) & FD_CLOEXEC);
		assert_int_equal(write(fds[i], (char[]){(char)('a' + i)}, 1), 1);
		assert_int_equal(read(pipes[i][0], &c, 1), 1);
		assert_int_equal(c, 'a' + (int)i);
		close(fds[i]);
		close(pipes[i][0]);
	}
	/* One message: nothing more is queued. */
	assert_int_equal(fdpass_recv_batch(pair[FDPASS_WORKER], tags, fds, FDPASS_BATCH, &lost),
			 -EAGAIN);
	close_channel(pair);
}

static void
test_batch_bad_sizes(void **state)
{
	int pair[2], fds[FDPASS_BATCH + 1];
	enum fdpass_tag tags[FDPASS_BATCH + 1];
	unsigned lost;

	for (size_t i = 0; i < ELEMENTSOF(fds); i++) {
		fds[i] = STDIN_FILENO;
		tags[i] = FDPASS_CONN;
	}
	new_channel(pair);
	assert_int_equal(fdpass_send_batch(pair[FDPASS_SUPERVISOR], tags, fds, 0), -EINVAL);
	assert_int_equal(fdpass_send_batch(pair[FDPASS_SUPERVISOR], tags, fds, FDPASS_BATCH + 1),
			 -EINVAL);
	fds[1] = -1;
	assert_int_equal(fdpass_send_batch(pair[FDPASS_SUPERVISOR], tags, fds, 2), -EBADF);
	assert_int_equal(fdpass_recv_batch(pair[FDPASS_WORKER], tags, fds, 0, &lost), -EINVAL);
	assert_int_equal(lost, 0);
	/* Nothing went. */
	assert_int_equal(fdpass_recv_batch(pair[FDPASS_WORKER], tags, fds, 1, &lost), -EAGAIN);
	close_channel(pair);
}

/* Room for fewer fds than the message brings: the message is refused
 * whole (its fds closed, all counted lost), not taken in part. */
static void
test_batch_more_than_max(void **state)
{
	static const enum fdpass_tag sent_tags[] = {FDPASS_CONN, FDPASS_CONN, FDPASS_CONN};
	enum fdpass_tag tags[2] = {0, 0};
	int pair[2], fds[2] = {UNTOUCHED, UNTOUCHED}, before;
	unsigned lost;

	new_channel(pair);
	assert_int_equal(fdpass_send_batch(pair[FDPASS_SUPERVISOR], sent_tags,
					   (int[]){STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO}, 3),
			 0);
	before = count_fds();
	assert_int_equal(fdpass_recv_batch(pair[FDPASS_WORKER], tags, fds, 2, &lost), -EPROTO);
	assert_int_equal(lost, 2);
	assert_int_equal(fds[0], UNTOUCHED);
	assert_int_equal(count_fds(), before);
	close_channel(pair);
}

/* Sends the bytes of data and nfds fds as one message, as a broken
 * sender might. */
static void
send_tagged(int channel, const char *data, const int *fds, size_t nfds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(4 * sizeof(int))];
	} control = {};
	struct iovec iov = {.iov_base = (void *)data, .iov_len = strlen(data)};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control.buf,
			     .msg_controllen = CMSG_SPACE(nfds * sizeof(int))};
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);

	assert_true(nfds >= 1 && nfds <= 4);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(nfds * sizeof(int));
	memcpy(CMSG_DATA(cmsg), fds, nfds * sizeof(int));
	assert_int_equal(sendmsg(channel, &msg, MSG_NOSIGNAL), (ssize_t)strlen(data));
}

/* Two tags but one fd, or one tag and two fds: broken, nothing kept, and
 * every connection the tags announced counted lost. */
static void
test_batch_count_mismatch(void **state)
{
	enum fdpass_tag tags[FDPASS_BATCH];
	int pair[2], fds[FDPASS_BATCH], before;
	unsigned lost;

	new_channel(pair);
	before = count_fds();
	send_tagged(pair[FDPASS_SUPERVISOR], "CC", (int[]){STDIN_FILENO}, 1);
	assert_int_equal(fdpass_recv_batch(pair[FDPASS_WORKER], tags, fds, FDPASS_BATCH, &lost),
			 -EPROTO);
	assert_int_equal(lost, 2);
	assert_int_equal(count_fds(), before);

	send_tagged(pair[FDPASS_SUPERVISOR], "C", (int[]){STDIN_FILENO, STDOUT_FILENO}, 2);
	assert_int_equal(fdpass_recv_batch(pair[FDPASS_WORKER], tags, fds, FDPASS_BATCH, &lost),
			 -EPROTO);
	assert_int_equal(lost, 1);
	assert_int_equal(count_fds(), before);

	/* A byte that is no tag among good ones. */
	send_tagged(pair[FDPASS_SUPERVISOR], "CxC",
		    (int[]){STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO}, 3);
	assert_int_equal(fdpass_recv_batch(pair[FDPASS_WORKER], tags, fds, FDPASS_BATCH, &lost),
			 -EPROTO);
	assert_int_equal(lost, 3);
	assert_int_equal(count_fds(), before);
	close_channel(pair);
}

/* At the fd limit halfway through a batch: the fds that fit arrive, the
 * kernel closes the rest, and those are counted lost. */
static void
test_batch_partial_at_fd_limit(void **state)
{
	enum fdpass_tag tags[FDPASS_BATCH];
	int pair[2], pipes[3][2], fds[FDPASS_BATCH], spare, r;
	unsigned lost = 99;
	struct rlimit saved;
	char c;

	new_channel(pair);
	send_pipe_batch(pair, pipes);
	/* One fd number free below the limit: the first fd fits, no more. */
	spare = fcntl(0, F_DUPFD_CLOEXEC, 0);
	assert_true(spare >= 0);
	if (!exhaust_fds(&saved)) {
		close(spare);
		for (size_t i = 0; i < 3; i++)
			close(pipes[i][0]);
		close_channel(pair);
		skip();
	}
	close(spare);
	last_msg_flags = 0;
	r = fdpass_recv_batch(pair[FDPASS_WORKER], tags, fds, FDPASS_BATCH, &lost);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);

	assert_int_equal(r, 1);
	assert_int_equal(lost, 2);
	assert_true(last_msg_flags & MSG_CTRUNC);
	assert_int_equal(tags[0], FDPASS_CONN);
	assert_int_equal(write(fds[0], "a", 1), 1);
	assert_int_equal(read(pipes[0][0], &c, 1), 1);
	close(fds[0]);
	/* The other two write ends were closed by the kernel: EOF. */
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(read(pipes[i][0], &c, 1), 0);
		close(pipes[i][0]);
	}
	close_channel(pair);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_channel_new),
	    cmocka_unit_test(test_channel_new_fails_untouched),
	    cmocka_unit_test(test_pass_same_open_file),
	    cmocka_unit_test(test_send_wire_format),
	    cmocka_unit_test(test_one_message_per_fd),
	    cmocka_unit_test(test_recv_empty_eagain),
	    cmocka_unit_test(test_recv_eof),
	    cmocka_unit_test(test_recv_ctrunc_fd_limit),
	    cmocka_unit_test(test_recv_ctrunc_extra_fds),
	    cmocka_unit_test(test_recv_two_fds_rejected),
	    cmocka_unit_test(test_recv_no_cmsg),
	    cmocka_unit_test(test_tags_round_trip),
	    cmocka_unit_test(test_recv_unknown_tag),
	    cmocka_unit_test(test_recv_zero_length_with_fd),
	    cmocka_unit_test(test_recv_long_data),
	    cmocka_unit_test(test_recv_foreign_credentials),
	    cmocka_unit_test(test_recv_wrong_type),
	    cmocka_unit_test(test_recv_wrong_level),
	    cmocka_unit_test(test_recv_overlong_header),
	    cmocka_unit_test(test_recv_error_passthrough),
	    cmocka_unit_test(test_send_closed_peer),
	    cmocka_unit_test(test_send_peer_died_with_queue),
	    cmocka_unit_test(test_send_full_eagain),
	    cmocka_unit_test(test_send_bad_fd),
	    cmocka_unit_test(test_batch_round_trip),
	    cmocka_unit_test(test_batch_bad_sizes),
	    cmocka_unit_test(test_batch_more_than_max),
	    cmocka_unit_test(test_batch_count_mismatch),
	    cmocka_unit_test(test_batch_partial_at_fd_limit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
