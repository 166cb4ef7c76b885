/* Fuzzes the receive path for passed fds, fdpass_recv(), two ways; the
 * first input byte picks one.
 *
 * Kernel: the input describes up to 8 messages (data length, its first
 * byte: one of the tags or not, number of fds, credentials, fds split over
 * two control messages) that are really
 * sent over a real channel, optionally with SO_PASSCRED set on the
 * worker's end or the supervisor's end closed; the kernel then builds
 * what the worker receives (and truncates what does not fit). Every
 * message must be refused but one with one byte, a tag, and one fd, which
 * must arrive as that very file with that tag, close-on-exec; afterwards
 * not one fd may be
 * left open that the test did not account for.
 *
 * Synthetic: recvmsg() (wrapped) returns the input as is: any control
 * bytes, any msg_controllen, any flags, any length, or an error. close()
 * is wrapped to record instead of closing, as the "fds" are made up. No
 * read may leave the control buffer, the result must be one that
 * fdpass.h documents, a success closes nothing and says the tag sent. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fdpass.h"

#define MAX_MESSAGES 8
#define MAX_FDS 64 /* per message: well past what the receive buffer holds */

/* The data bytes a message may start with: the three tags and one that is
 * none. */
static const char first_bytes[] = {FDPASS_CONN, FDPASS_KEPT, FDPASS_OWED, 'x'};

static bool
is_tag(char byte)
{
	return byte != 'x';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
ssize_t __real_recvmsg(int fd, struct msghdr *msg, int flags);
ssize_t __wrap_recvmsg(int fd, struct msghdr *msg, int flags);
int __real_close(int fd);
int __wrap_close(int fd);

/* What the wrapped recvmsg() returns in synthetic mode. */
static struct {
	bool on;
	const uint8_t *control;
	size_t control_len;
	size_t controllen;
	int flags;
	char byte;
	ssize_t ret;
	int error;
	unsigned closes;
} fake;

ssize_t
__wrap_recvmsg(int fd, struct msghdr *msg, int flags)
{
	size_t len;

	if (!fake.on)
		return __real_recvmsg(fd, msg, flags);
	if (fake.ret < 0) {
		errno = fake.error;
		return -1;
	}
	/* As the kernel does: never more control data than room for it, and
	 * never more data than the iovec holds. */
	len = fake.control_len < msg->msg_controllen ? fake.control_len : msg->msg_controllen;
	memcpy(msg->msg_control, fake.control, len);
	msg->msg_controllen = fake.controllen < len ? fake.controllen : len;
	msg->msg_flags = fake.flags;
	if (fake.ret > 0 && msg->msg_iovlen > 0)
		memset(msg->msg_iov[0].iov_base, fake.byte,
		       (size_t)fake.ret < msg->msg_iov[0].iov_len ? (size_t)fake.ret
								  : msg->msg_iov[0].iov_len);
	return fake.ret < (ssize_t)msg->msg_iov[0].iov_len ? fake.ret
							   : (ssize_t)msg->msg_iov[0].iov_len;
}

int
__wrap_close(int fd)
{
	if (!fake.on)
		return __real_close(fd);
	if (fd < 0)
		abort(); /* fdpass.c must never close a negative "fd" */
	fake.closes++;
	return 0;
}

static void
fuzz_synthetic(const uint8_t *data, size_t size)
{
	static const int errors[] = {EAGAIN, EINTR, ECONNRESET, ENOMEM, EBADF};
	static const int flag_sets[] = {0, MSG_CTRUNC, MSG_TRUNC, MSG_CTRUNC | MSG_TRUNC, MSG_EOR};
	enum fdpass_tag tag = 0;
	int fd = -12345, r;

	if (size < 3)
		return;
	fake.flags = flag_sets[data[0] % 5];
	fake.byte = first_bytes[(data[0] >> 4) % 4];
	/* Mostly one byte, as the protocol has it; sometimes none, more or
	 * an error. */
	fake.ret = data[1] < 128 ? 1 : data[1] < 160 ? 0 : data[1] < 192 ? 2 : -1;
	fake.error = errors[data[1] % 5];
	fake.controllen = data[2];
	fake.control = data + 3;
	fake.control_len = size - 3;
	fake.closes = 0;
	fake.on = true;
	r = fdpass_recv(0, &tag, &fd);
	fake.on = false;

	if (fake.ret < 0) {
		if (r != -fake.error || fake.closes != 0)
			abort();
	} else if (r == 0) {
		if (fake.closes != 0 || fd == -12345 || !is_tag(fake.byte) ||
		    tag != (enum fdpass_tag)fake.byte)
			abort();
	} else if (r != -EPROTO && r != -EMFILE && r != -ECONNRESET) {
		abort();
	}
	if (r != 0 && fd != -12345)
		abort();
}

/* The fds this process has open, from /proc/self/fd. */
static unsigned
open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	unsigned n = 0;

	if (!d)
		abort();
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n - 1; /* the directory's own fd */
}

struct message {
	size_t data_len;
	char byte; /* the first data byte */
	unsigned n_fds;
	bool creds;
	bool split;
	bool sent;
};

static bool
send_message(int channel, int payload_fd, const struct message *m)
{
	char data[100] = {m->byte};
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(struct ucred)) + 2 * CMSG_SPACE(MAX_FDS * sizeof(int))];
	} control;
	struct iovec iov = {.iov_base = data, .iov_len = m->data_len};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf};
	struct cmsghdr *cmsg;
	unsigned parts = m->split && m->n_fds > 1 ? 2 : m->n_fds > 0 ? 1 : 0;
	unsigned given = 0;
	size_t len = 0;
	int fds[MAX_FDS];

	memset(&control, 0, sizeof(control));
	for (unsigned i = 0; i < m->n_fds; i++)
		fds[i] = payload_fd;
	/* The buffer is sized for the whole; the headers are found by length. */
	msg.msg_controllen = sizeof(control.buf);
	cmsg = CMSG_FIRSTHDR(&msg);
	if (m->creds) {
		struct ucred uc = {.pid = getpid(), .uid = getuid(), .gid = getgid()};
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_CREDENTIALS;
		cmsg->cmsg_len = CMSG_LEN(sizeof(uc));
		memcpy(CMSG_DATA(cmsg), &uc, sizeof(uc));
		len += CMSG_SPACE(sizeof(uc));
		cmsg = (struct cmsghdr *)(control.buf + len);
	}
	for (unsigned p = 0; p < parts; p++) {
		unsigned n = p + 1 < parts ? m->n_fds / 2 : m->n_fds - given;
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(n * sizeof(int));
		memcpy(CMSG_DATA(cmsg), fds + given, n * sizeof(int));
		given += n;
		len += CMSG_SPACE(n * sizeof(int));
		cmsg = (struct cmsghdr *)(control.buf + len);
	}
	msg.msg_controllen = len;
	if (len == 0)
		msg.msg_control = NULL;
	return sendmsg(channel, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)m->data_len;
}

static void
fuzz_kernel(const uint8_t *data, size_t size)
{
	static const size_t data_lens[] = {1, 1, 0, 2, 100};
	static const unsigned fd_counts[] = {1, 1, 0, 2, 3, 5, MAX_FDS};
	struct message msgs[MAX_MESSAGES] = {0};
	struct stat payload, st;
	unsigned n_msgs = 0, baseline;
	bool passcred, hangup;
	int pair[2], payload_fd, r;

	if (size < 1)
		return;
	passcred = data[0] & 1;
	hangup = data[0] & 2;
	data++;
	size--;
	for (; size >= 2 && n_msgs < MAX_MESSAGES; data += 2, size -= 2, n_msgs++) {
		msgs[n_msgs].data_len = data_lens[data[0] % 5];
		msgs[n_msgs].byte = first_bytes[(data[0] >> 3) % 4];
		msgs[n_msgs].n_fds = fd_counts[data[1] % 7];
		msgs[n_msgs].creds = data[0] & 0x80;
		msgs[n_msgs].split = data[1] & 0x80;
	}

	baseline = open_fds();
	/* A file of its own, to know the fd that arrives for the one sent. */
	payload_fd = memfd_create("fuzz-fdpass", MFD_CLOEXEC);
	if (payload_fd < 0 || fstat(payload_fd, &payload) < 0 || fdpass_channel_new(pair) < 0)
		abort();
	if (passcred &&
	    setsockopt(pair[FDPASS_WORKER], SOL_SOCKET, SO_PASSCRED, &(int){1}, sizeof(int)) < 0)
		abort();
	for (unsigned i = 0; i < n_msgs; i++)
		msgs[i].sent = send_message(pair[FDPASS_SUPERVISOR], payload_fd, &msgs[i]);
	if (hangup) {
		close(pair[FDPASS_SUPERVISOR]);
		pair[FDPASS_SUPERVISOR] = -1;
	}

	/* Seqpacket: each call takes exactly the next message that was sent. */
	for (unsigned i = 0; i < n_msgs; i++) {
		const struct message *m = &msgs[i];
		bool valid = m->data_len == 1 && is_tag(m->byte) && m->n_fds == 1 && !passcred;
		enum fdpass_tag tag = 0;
		int fd = -1;

		if (!m->sent)
			continue;
		r = fdpass_recv(pair[FDPASS_WORKER], &tag, &fd);
		if (r == 0) {
			if (!valid || tag != (enum fdpass_tag)m->byte || fstat(fd, &st) < 0 ||
			    st.st_ino != payload.st_ino || st.st_dev != payload.st_dev ||
			    !(fcntl(fd, F_GETFD) & FD_CLOEXEC))
				abort();
			close(fd);
		} else if (valid || fd != -1) {
			abort();
		} else if (r == -ECONNRESET) {
			/* Indistinguishable from end of file: only a message
			 * without data and without anything attached (sent
			 * credentials reach only a receiver with SO_PASSCRED). */
			if (m->data_len != 0 || m->n_fds != 0 || passcred)
				abort();
		} else if (r != -EPROTO) {
			abort();
		}
	}
	r = fdpass_recv(pair[FDPASS_WORKER], &(enum fdpass_tag){0}, &(int){-1});
	if (r != (hangup ? -ECONNRESET : -EAGAIN))
		abort();

	close(pair[FDPASS_WORKER]);
	if (pair[FDPASS_SUPERVISOR] >= 0)
		close(pair[FDPASS_SUPERVISOR]);
	close(payload_fd);
	if (open_fds() != baseline)
		abort(); /* an fd of some refused message was left open */
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1)
		fuzz_synthetic(data + 1, size - 1);
	else
		fuzz_kernel(data + 1, size - 1);
	return 0;
}
