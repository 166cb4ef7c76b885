/* kept.c: the names connections, owed bytes and the configuration carry
 * in systemd's fd store, and the sealed memfds that hold them. The store itself is
 * exercised against an AF_UNIX datagram socket standing in for systemd. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "kept.h"

static void
test_name_conn(void **state)
{
	uint64_t id = 7;

	(void)state;
	assert_int_equal(kept_name_parse("conn", &id), KEPT_CONN);
	assert_int_equal(id, 7); /* untouched */
	assert_int_equal(kept_name_parse("config", &id), KEPT_CONFIG);
	assert_int_equal(id, 7);
}

static void
test_name_owed_roundtrip(void **state)
{
	const uint64_t ids[] = {1, 42, 1234567890123ULL, UINT64_MAX};
	char name[KEPT_NAME_MAX];

	(void)state;
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		uint64_t id = 0;

		kept_owed_name(ids[i], name, sizeof(name));
		assert_int_equal(kept_name_parse(name, &id), KEPT_OWED);
		assert_true(id == ids[i]);
	}
	kept_owed_name(UINT64_MAX, name, sizeof(name));
	assert_string_equal(name, "owed-18446744073709551615");
}

static void
test_name_other(void **state)
{
	const char *names[] = {
	    "",		  "echod.socket", "conn-1", "Conn",
	    "owed-",	  "owed-0",	  "owed-01", "owed-+1",
	    "owed--1",	  "owed-1x",	  "owed-1 ", "owed-18446744073709551616",
	    "owed-99999999999999999999", "xowed-1", "owed", "config ", "Config", "configs",
	};
	uint64_t id = 5;

	(void)state;
	assert_int_equal(kept_name_parse(NULL, &id), KEPT_OTHER);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (kept_name_parse(names[i], &id) != KEPT_OTHER)
			fail_msg("\"%s\" taken as ours", names[i]);
		assert_int_equal(id, 5);
	}
}

static void
test_socket_id(void **state)
{
	int pair[2], dup_fd;
	uint64_t a, b, c;
	struct stat st;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
	dup_fd = dup(pair[0]);
	assert_int_equal(kept_socket_id(pair[0], &a), 0);
	assert_int_equal(kept_socket_id(dup_fd, &b), 0);
	assert_int_equal(kept_socket_id(pair[1], &c), 0);
	assert_true(a == b);
	assert_true(a != c);
	assert_int_equal(fstat(pair[0], &st), 0);
	assert_true(a == (uint64_t)st.st_ino);
	assert_int_equal(kept_socket_id(STDIN_FILENO + 1000, &a), -EBADF);
	close(pair[0]);
	close(pair[1]);
	close(dup_fd);
}

static void
test_socket_id_not_socket(void **state)
{
	int fd = memfd_create("x", MFD_CLOEXEC);
	uint64_t id = 3;

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(kept_socket_id(fd, &id), -ENOTSOCK);
	assert_int_equal(id, 3);
	close(fd);
}

static void
test_owed_roundtrip(void **state)
{
	const size_t sizes[] = {1, 2, 4096, 65537, KEPT_OWED_MAX};

	(void)state;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char *data = malloc(sizes[i]), *got = NULL;
		uint64_t id = 0;
		size_t len = 0;
		int fd = -1;

		assert_non_null(data);
		for (size_t j = 0; j < sizes[i]; j++)
			data[j] = (char)(j * 31 + i);
		assert_int_equal(kept_owed_encode(1000 + i, data, sizes[i], &fd), 0);
		assert_true(fd >= 0);
		assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
		assert_int_equal(kept_owed_decode(fd, &id, &got, &len), 0);
		assert_true(id == 1000 + i);
		assert_int_equal(len, sizes[i]);
		assert_memory_equal(got, data, len);
		free(got);
		free(data);
		close(fd);
	}
}

static void
test_owed_sealed(void **state)
{
	int fd = -1;

	(void)state;
	assert_int_equal(kept_owed_encode(9, "abc", 3, &fd), 0);
	/* Nobody holding a copy can change what is owed. */
	assert_int_equal(pwrite(fd, "x", 1, 0), -1);
	assert_int_equal(errno, EPERM);
	assert_int_equal(ftruncate(fd, 1), -1);
	assert_int_equal(ftruncate(fd, 4096), -1);
	assert_int_equal(fcntl(fd, F_ADD_SEALS, 0), -1);
	close(fd);
}

static void
test_owed_encode_invalid(void **state)
{
	int fd = -5;

	(void)state;
	assert_int_equal(kept_owed_encode(1, "x", 0, &fd), -EINVAL);
	assert_int_equal(kept_owed_encode(1, NULL, 1, &fd), -EINVAL);
	assert_int_equal(kept_owed_encode(1, "x", KEPT_OWED_MAX + 1, &fd), -EINVAL);
	assert_int_equal(fd, -5);
}

/* A memfd written as ours would be, with seals; or not. */
static int
forged(const void *data, size_t len, int seals)
{
	int fd = memfd_create("forged", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	if (seals)
		assert_int_equal(fcntl(fd, F_ADD_SEALS, seals), 0);
	return fd;
}

/* One limit for every decoder: a well-formed memfd owing more than
 * KEPT_OWED_MAX is refused, whoever reads it. */
static void
test_owed_over_the_limit(void **state)
{
	const int all = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
	struct {
		char magic[8];
		uint64_t id, len;
	} h = {.id = 5, .len = KEPT_OWED_MAX + 1};
	char *got = NULL;
	uint64_t id = 0;
	size_t len = 0;
	int fd = memfd_create("forged", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	(void)state;
	memcpy(h.magic, "echodOW1", 8);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, &h, sizeof(h)), (ssize_t)sizeof(h));
	assert_int_equal(ftruncate(fd, (off_t)(sizeof(h) + h.len)), 0);
	assert_int_equal(fcntl(fd, F_ADD_SEALS, all), 0);
	assert_int_equal(kept_owed_decode(fd, &id, &got, &len), -E2BIG);
	assert_null(got);
	close(fd);
}

/* Owed bytes are taken for the connection they name, and only for it. */
static void
test_owed_take_pairs_by_connection(void **state)
{
	int a[2], b[2], owed = -1;
	char *got = NULL;
	size_t len = 0;
	uint64_t id;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b), 0);
	assert_int_equal(kept_owed_pack(a[0], "owed", 4, &id, &owed), 0);
	assert_int_equal(kept_owed_take(owed, b[0], &got, &len), -ESTALE);
	assert_null(got);
	assert_int_equal(kept_owed_take(owed, a[0], &got, &len), 0);
	assert_int_equal(len, 4);
	assert_memory_equal(got, "owed", 4);
	free(got);
	close(owed);
	for (int i = 0; i < 2; i++) {
		close(a[i]);
		close(b[i]);
	}
}

static void
test_owed_decode_rejects(void **state)
{
	const int all = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
	struct {
		char magic[8];
		uint64_t id, len;
		char data[4];
	} h = {.id = 3, .len = 4, .data = "abcd"};
	char *got = NULL;
	uint64_t id = 77;
	size_t len = 0;
	/* The struct's size includes padding after data. */
	const size_t size = offsetof(__typeof__(h), data) + sizeof(h.data);
	int fd, pair[2];

	(void)state;
	memcpy(h.magic, "echodOW1", 8);
	/* The well-formed one is accepted: the rest differ from it in one way. */
	fd = forged(&h, size, all);
	assert_int_equal(kept_owed_decode(fd, &id, &got, &len), 0);
	assert_memory_equal(got, "abcd", 4);
	free(got);
	got = NULL;
	close(fd);
	id = 77;

	fd = forged(&h, size, F_SEAL_SHRINK | F_SEAL_GROW); /* writable */
	assert_int_equal(kept_owed_decode(fd, &id, &got, &len), -EBADMSG);
	close(fd);
	fd = forged(&h, size - 1, all); /* shorter than it says */
	assert_int_equal(kept_owed_decode(fd, &id, &got, &len), -EBADMSG);
	close(fd);
	fd = forged(&h, 10, all); /* not even a header */
	assert_int_equal(kept_owed_decode(fd, &id, &got, &len), -EBADMSG);
	close(fd);
	h.len = 0;
	fd = forged(&h, 24, all); /* owes nothing */
	assert_int_equal(kept_owed_decode(fd, &id, &got, &len), -EBADMSG);
	close(fd);
	h.len = 4;
	h.magic[7] = '2';
	fd = forged(&h, size, all);
	assert_int_equal(kept_owed_decode(fd, &id, &got, &len), -EBADMSG);
	close(fd);
	/* Not a memfd at all. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
	assert_int_equal(kept_owed_decode(pair[0], &id, &got, &len), -EBADMSG);
	close(pair[0]);
	close(pair[1]);
	assert_null(got);
	assert_true(id == 77);
}

/* --- the store, against a stand-in for systemd's notify socket --- */

struct notify_sink {
	int fd;
	char path[108];
};

static int
setup_sink(void **state)
{
	struct notify_sink *s = calloc(1, sizeof(*s));
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	assert_non_null(s);
	snprintf(s->path, sizeof(s->path), "/tmp/test-kept-%d.sock", (int)getpid());
	unlink(s->path);
	s->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(s->fd >= 0);
	strcpy(sa.sun_path, s->path);
	assert_int_equal(bind(s->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setenv("NOTIFY_SOCKET", s->path, 1);
	*state = s;
	return 0;
}

static int
teardown_sink(void **state)
{
	struct notify_sink *s = *state;

	unsetenv("NOTIFY_SOCKET");
	close(s->fd);
	unlink(s->path);
	free(s);
	return 0;
}

/* Receives one message: its text into buf, its fds (closed here) counted. */
static size_t
sink_recv(struct notify_sink *s, char *buf, size_t size)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * KEPT_BATCH_MAX)];
	} control;
	struct iovec iov = {.iov_base = buf, .iov_len = size - 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf)};
	size_t fds = 0;
	ssize_t n = recvmsg(s->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

	assert_true(n >= 0);
	assert_false(msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC));
	buf[n] = '\0';
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			close(fd);
			fds++;
		}
	}
	return fds;
}

static void
test_store_batch(void **state)
{
	struct notify_sink *s = *state;
	int fds[KEPT_BATCH_MAX];
	char buf[256];

	for (size_t i = 0; i < KEPT_BATCH_MAX; i++)
		fds[i] = STDERR_FILENO;
	assert_true(kept_store(KEPT_CONN_NAME, fds, KEPT_BATCH_MAX) > 0);
	assert_int_equal(sink_recv(s, buf, sizeof(buf)), KEPT_BATCH_MAX);
	assert_string_equal(buf, "FDSTORE=1\nFDNAME=conn");
	assert_true(kept_store("owed-12", fds, 1) > 0);
	assert_int_equal(sink_recv(s, buf, sizeof(buf)), 1);
	assert_string_equal(buf, "FDSTORE=1\nFDNAME=owed-12");
	/* The kernel's limit per message: refused before the kernel says so. */
	assert_int_equal(kept_store(KEPT_CONN_NAME, fds, 0), -EINVAL);
	assert_int_equal(kept_store(KEPT_CONN_NAME, (int[KEPT_BATCH_MAX + 1]){0},
					KEPT_BATCH_MAX + 1),
			 -EINVAL);
}

static void
test_store_remove(void **state)
{
	struct notify_sink *s = *state;
	char buf[256];

	assert_true(kept_store_remove("owed-5") > 0);
	assert_int_equal(sink_recv(s, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "FDSTOREREMOVE=1\nFDNAME=owed-5");
}

static void
test_store_without_systemd(void **state)
{
	int fd = STDERR_FILENO;

	(void)state;
	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(kept_store(KEPT_CONN_NAME, &fd, 1), 0);
	assert_int_equal(kept_store_remove(KEPT_CONN_NAME), 0);
}

/* A proxied connection's record carries the client its header named,
 * owed bytes or none; the old layout reads back with no client. */
static void
test_state_carries_client(void **state)
{
	struct sockaddr_in client = {.sin_family = AF_INET, .sin_port = htons(4242),
				     .sin_addr.s_addr = htonl(0x7f010203)};
	struct sockaddr_storage got_client;
	socklen_t got_len = 99;
	int a[2], fd = -1;
	char *got = NULL;
	size_t len = 7;
	uint64_t id, got_id;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
	/* Nothing owed. */
	assert_int_equal(kept_state_pack(a[0], (struct sockaddr *)&client, sizeof(client), NULL, 0,
					 &id, &fd),
			 0);
	assert_int_equal(kept_state_take(fd, a[0], &got, &len, &got_client, &got_len), 0);
	assert_null(got);
	assert_int_equal(len, 0);
	assert_int_equal(got_len, sizeof(client));
	assert_memory_equal(&got_client, &client, sizeof(client));
	/* The supervisor reads the id alone. */
	assert_int_equal(kept_owed_decode(fd, &got_id, NULL, NULL), 0);
	assert_int_equal(got_id, id);
	close(fd);
	/* Owed bytes too. */
	assert_int_equal(kept_state_pack(a[0], (struct sockaddr *)&client, sizeof(client), "abc", 3,
					 &id, &fd),
			 0);
	assert_int_equal(kept_owed_take(fd, a[0], &got, &len), 0);
	assert_int_equal(len, 3);
	assert_memory_equal(got, "abc", 3);
	free(got);
	got = NULL;
	close(fd);
	/* The old layout: no client. */
	assert_int_equal(kept_owed_pack(a[0], "xy", 2, &id, &fd), 0);
	assert_int_equal(kept_state_take(fd, a[0], &got, &len, &got_client, &got_len), 0);
	assert_int_equal(got_len, 0);
	free(got);
	close(fd);
	/* Neither bytes nor a client: nothing to keep. */
	assert_int_equal(kept_state_encode(1, NULL, 0, NULL, 0, &fd), -EINVAL);
	assert_int_equal(kept_state_encode(1, (struct sockaddr *)&client, 200, NULL, 0, &fd),
			 -EINVAL);
	close(a[0]);
	close(a[1]);
}

/* The kept configuration reads back as written; what is not exactly
 * that (unsealed, another magic, a length that is not the file's, over
 * the limit) is refused. */
static void
test_config_roundtrip(void **state)
{
	const int all = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
	const char text[] = "[echod]\nWorkers=3\n";
	struct {
		char magic[8];
		uint64_t len;
		char text[4];
	} h = {.len = 4, .text = "ab\nc"};
	const size_t size = offsetof(__typeof__(h), text) + sizeof(h.text);
	char *got = NULL;
	size_t len = 0;
	int fd;

	(void)state;
	assert_int_equal(kept_config_encode(text, strlen(text), &fd), 0);
	assert_int_equal(kept_config_decode(fd, &got, &len), 0);
	assert_int_equal(len, strlen(text));
	assert_string_equal(got, text);
	free(got);
	got = NULL;
	/* Sealed: nobody holding a copy can change it. */
	assert_int_equal(write(fd, "x", 1), -1);
	close(fd);
	assert_int_equal(kept_config_encode(text, 0, &fd), -EINVAL);
	assert_int_equal(kept_config_encode(NULL, 3, &fd), -EINVAL);
	assert_int_equal(kept_config_encode(text, KEPT_CONFIG_MAX + 1, &fd), -EINVAL);

	memcpy(h.magic, "echodCF1", 8);
	fd = forged(&h, size, all);
	assert_int_equal(kept_config_decode(fd, &got, &len), 0);
	assert_int_equal(len, 4);
	free(got);
	got = NULL;
	close(fd);
	fd = forged(&h, size, F_SEAL_SHRINK | F_SEAL_GROW); /* writable */
	assert_int_equal(kept_config_decode(fd, &got, &len), -EBADMSG);
	close(fd);
	fd = forged(&h, size - 1, all); /* shorter than it says */
	assert_int_equal(kept_config_decode(fd, &got, &len), -EBADMSG);
	close(fd);
	h.len = KEPT_CONFIG_MAX + 1;
	fd = forged(&h, size, all);
	assert_int_equal(kept_config_decode(fd, &got, &len), -E2BIG);
	close(fd);
	h.len = 4;
	memcpy(h.magic, "echodOW1", 8); /* owed bytes, not a configuration */
	fd = forged(&h, size, all);
	assert_int_equal(kept_config_decode(fd, &got, &len), -EBADMSG);
	close(fd);
	assert_null(got);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_name_conn),
	    cmocka_unit_test(test_name_owed_roundtrip),
	    cmocka_unit_test(test_name_other),
	    cmocka_unit_test(test_socket_id),
	    cmocka_unit_test(test_socket_id_not_socket),
	    cmocka_unit_test(test_owed_roundtrip),
	    cmocka_unit_test(test_owed_sealed),
	    cmocka_unit_test(test_owed_encode_invalid),
	    cmocka_unit_test(test_owed_over_the_limit),
	    cmocka_unit_test(test_owed_take_pairs_by_connection),
	    cmocka_unit_test(test_owed_decode_rejects),
	    cmocka_unit_test_setup_teardown(test_store_batch, setup_sink, teardown_sink),
	    cmocka_unit_test_setup_teardown(test_store_remove, setup_sink, teardown_sink),
	    cmocka_unit_test(test_store_without_systemd),
	    cmocka_unit_test(test_state_carries_client),
	    cmocka_unit_test(test_config_roundtrip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
