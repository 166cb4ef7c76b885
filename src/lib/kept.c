#include "kept.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "fdpass.h"
#include "util.h"

#define OWED_MAGIC "echodOW1"
#define STATE_MAGIC "echodOW2"
#define CONFIG_MAGIC "echodCF1"
#define OWED_SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

struct owed_header {
	char magic[8];
	uint64_t id;
	uint64_t len;
};

enum kept_kind
kept_name_parse(const char *name, uint64_t *ret_id)
{
	const char *digits;
	uint64_t id = 0;

	if (!name)
		return KEPT_OTHER;
	if (strcmp(name, KEPT_CONN_NAME) == 0)
		return KEPT_CONN;
	if (strcmp(name, KEPT_CONFIG_NAME) == 0)
		return KEPT_CONFIG;
	if (strncmp(name, KEPT_OWED_PREFIX, strlen(KEPT_OWED_PREFIX)) != 0)
		return KEPT_OTHER;
	digits = name + strlen(KEPT_OWED_PREFIX);
	/* One spelling per id: no sign, no leading zero, no overflow. */
	if (*digits < '1' || *digits > '9')
		return KEPT_OTHER;
	for (const char *p = digits; *p; p++) {
		unsigned d;

		if (*p < '0' || *p > '9')
			return KEPT_OTHER;
		d = (unsigned)(*p - '0');
		if (id > (UINT64_MAX - d) / 10)
			return KEPT_OTHER;
		id = id * 10 + d;
	}
	*ret_id = id;
	return KEPT_OWED;
}

void
kept_owed_name(uint64_t id, char *buf, size_t size)
{
	snprintf(buf, size, KEPT_OWED_PREFIX "%" PRIu64, id);
}

int
kept_socket_id(int fd, uint64_t *ret_id)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return negative_errno();
	if (!S_ISSOCK(st.st_mode))
		return -ENOTSOCK;
	*ret_id = (uint64_t)st.st_ino;
	return 0;
}

int
kept_state_encode(uint64_t id, const struct sockaddr *client, socklen_t client_len,
		  const void *data, size_t len, int *ret_fd)
{
	struct owed_header h = {.id = id, .len = len};
	uint64_t peer_len = client ? client_len : 0;
	_cleanup_close_ int fd = -1;
	int r;

	if (len > KEPT_OWED_MAX || (len > 0 && !data) || (len == 0 && peer_len == 0) ||
	    peer_len > sizeof(struct sockaddr_storage))
		return -EINVAL;
	memcpy(h.magic, peer_len ? STATE_MAGIC : OWED_MAGIC, sizeof(h.magic));
	fd = memfd_create("echod-owed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return negative_errno();
	r = write_all(fd, &h, sizeof(h));
	if (r >= 0 && peer_len)
		r = write_all(fd, &peer_len, sizeof(peer_len));
	if (r >= 0 && peer_len)
		r = write_all(fd, client, peer_len);
	if (r >= 0 && len)
		r = write_all(fd, data, len);
	if (r < 0)
		return r;
	/* Sealed, the bytes can be trusted by whoever gets the fd back: nobody
	 * holding a copy (systemd, a dying worker) can change them meanwhile. */
	if (fcntl(fd, F_ADD_SEALS, OWED_SEALS) < 0)
		return negative_errno();
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int
kept_owed_encode(uint64_t id, const void *data, size_t len, int *ret_fd)
{
	if (len == 0 || !data)
		return -EINVAL;
	return kept_state_encode(id, NULL, 0, data, len, ret_fd);
}

int
kept_state_pack(int conn_fd, const struct sockaddr *client, socklen_t client_len, const void *data,
		size_t len, uint64_t *ret_id, int *ret_fd)
{
	uint64_t id;
	int r;

	r = kept_socket_id(conn_fd, &id);
	if (r < 0)
		return r;
	r = kept_state_encode(id, client, client_len, data, len, ret_fd);
	if (r < 0)
		return r;
	*ret_id = id;
	return 0;
}

int
kept_owed_pack(int conn_fd, const void *data, size_t len, uint64_t *ret_id, int *ret_fd)
{
	return kept_state_pack(conn_fd, NULL, 0, data, len, ret_id, ret_fd);
}

static int
read_at(int fd, void *buf, size_t len, off_t off)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = pread(fd, p, len, off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		if (n == 0)
			return -EBADMSG;
		p += n;
		off += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The size of a memfd nobody can change any more (what the encoders
 * seal), or -EBADMSG for anything else. */
static int
sealed_size(int fd, uint64_t *ret_size)
{
	struct stat st;
	int seals = fcntl(fd, F_GET_SEALS);

	if (seals < 0)
		return errno == EINVAL ? -EBADMSG : negative_errno();
	if ((seals & OWED_SEALS) != OWED_SEALS)
		return -EBADMSG;
	if (fstat(fd, &st) < 0)
		return negative_errno();
	*ret_size = (uint64_t)st.st_size;
	return 0;
}

int
kept_state_decode(int fd, uint64_t *ret_id, char **ret_data, size_t *ret_len,
		  struct sockaddr_storage *ret_client, socklen_t *ret_client_len)
{
	struct owed_header h;
	struct sockaddr_storage client = {0};
	uint64_t peer_len = 0;
	off_t off = sizeof(h);
	uint64_t size;
	_cleanup_free_ char *data = NULL;
	bool state;
	int r;

	r = sealed_size(fd, &size);
	if (r < 0)
		return r;
	r = read_at(fd, &h, sizeof(h), 0);
	if (r < 0)
		return r;
	state = memcmp(h.magic, STATE_MAGIC, sizeof(h.magic)) == 0;
	if (!state && memcmp(h.magic, OWED_MAGIC, sizeof(h.magic)) != 0)
		return -EBADMSG;
	if (state) {
		r = read_at(fd, &peer_len, sizeof(peer_len), off);
		if (r < 0)
			return r;
		if (peer_len == 0 || peer_len > sizeof(client))
			return -EBADMSG;
		r = read_at(fd, &client, peer_len, off + (off_t)sizeof(peer_len));
		if (r < 0)
			return r;
		off += (off_t)(sizeof(peer_len) + peer_len);
	}
	if (h.len > KEPT_OWED_MAX)
		return -E2BIG;
	if ((!state && h.len == 0) || size != (uint64_t)off + h.len)
		return -EBADMSG;
	if (!ret_data) {
		*ret_id = h.id;
		return 0;
	}
	if (h.len) {
		data = malloc(h.len);
		if (!data)
			return -ENOMEM;
		r = read_at(fd, data, h.len, off);
		if (r < 0)
			return r;
	}
	*ret_id = h.id;
	*ret_len = h.len;
	*ret_data = TAKE_PTR(data);
	if (ret_client)
		*ret_client = client;
	if (ret_client_len)
		*ret_client_len = (socklen_t)peer_len;
	return 0;
}

int
kept_owed_decode(int fd, uint64_t *ret_id, char **ret_data, size_t *ret_len)
{
	return kept_state_decode(fd, ret_id, ret_data, ret_len, NULL, NULL);
}

int
kept_state_take(int owed_fd, int conn_fd, char **ret_data, size_t *ret_len,
		struct sockaddr_storage *ret_client, socklen_t *ret_client_len)
{
	_cleanup_free_ char *data = NULL;
	struct sockaddr_storage client;
	socklen_t client_len;
	uint64_t id, conn_id;
	size_t len;
	int r;

	r = kept_state_decode(owed_fd, &id, &data, &len, &client, &client_len);
	if (r < 0)
		return r;
	if (kept_socket_id(conn_fd, &conn_id) < 0 || conn_id != id)
		return -ESTALE;
	*ret_data = TAKE_PTR(data);
	*ret_len = len;
	if (ret_client)
		*ret_client = client;
	if (ret_client_len)
		*ret_client_len = client_len;
	return 0;
}

int
kept_owed_take(int owed_fd, int conn_fd, char **ret_data, size_t *ret_len)
{
	return kept_state_take(owed_fd, conn_fd, ret_data, ret_len, NULL, NULL);
}

struct config_header {
	char magic[8];
	uint64_t len;
};

int
kept_config_encode(const char *text, size_t len, int *ret_fd)
{
	struct config_header h = {.len = len};
	_cleanup_close_ int fd = -1;
	int r;

	if (len == 0 || len > KEPT_CONFIG_MAX || !text)
		return -EINVAL;
	memcpy(h.magic, CONFIG_MAGIC, sizeof(h.magic));
	fd = memfd_create("echod-config", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return negative_errno();
	r = write_all(fd, &h, sizeof(h));
	if (r >= 0)
		r = write_all(fd, text, len);
	if (r < 0)
		return r;
	if (fcntl(fd, F_ADD_SEALS, OWED_SEALS) < 0)
		return negative_errno();
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int
kept_config_decode(int fd, char **ret_text, size_t *ret_len)
{
	struct config_header h;
	_cleanup_free_ char *text = NULL;
	uint64_t size;
	int r;

	r = sealed_size(fd, &size);
	if (r < 0)
		return r;
	r = read_at(fd, &h, sizeof(h), 0);
	if (r < 0)
		return r;
	if (memcmp(h.magic, CONFIG_MAGIC, sizeof(h.magic)) != 0)
		return -EBADMSG;
	if (h.len > KEPT_CONFIG_MAX)
		return -E2BIG;
	if (h.len == 0 || size != sizeof(h) + h.len)
		return -EBADMSG;
	text = malloc(h.len + 1);
	if (!text)
		return -ENOMEM;
	r = read_at(fd, text, h.len, sizeof(h));
	if (r < 0)
		return r;
	text[h.len] = '\0';
	*ret_text = TAKE_PTR(text);
	*ret_len = h.len;
	return 0;
}

int
kept_config_pack(const struct config *c, int *ret_fd)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	FILE *f;
	int r;

	f = open_memstream(&text, &len);
	if (!f)
		return negative_errno();
	r = config_dump(f, c);
	if (fclose(f) != 0 && r >= 0)
		r = -EIO;
	return r < 0 ? r : kept_config_encode(text, len, ret_fd);
}

int
kept_config_unpack(int fd, struct config *c, const char *origin, struct config_error *err)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	FILE *f;
	int r;

	r = kept_config_decode(fd, &text, &len);
	if (r < 0) {
		snprintf(err->message, sizeof(err->message), "%s (fd %d): %s", origin, fd,
			 r == -EBADMSG ? "not a configuration echod kept" : strerror(-r));
		return r;
	}
	f = fmemopen(text, len, "r");
	if (!f) {
		r = negative_errno();
		snprintf(err->message, sizeof(err->message), "%s: %s", origin, strerror(-r));
		return r;
	}
	r = config_load_stream(c, f, origin, err);
	fclose(f);
	return r;
}

int
kept_send(int channel, int fd, int owed_fd)
{
	int r = 0;

	if (owed_fd >= 0)
		r = fdpass_send(channel, FDPASS_OWED, owed_fd);
	if (r == 0)
		r = fdpass_send(channel, FDPASS_KEPT, fd);
	return r;
}

int
kept_store(const char *name, const int *fds, size_t n)
{
	char msg[64 + KEPT_NAME_MAX];

	if (n == 0 || n > KEPT_BATCH_MAX)
		return -EINVAL;
	snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", name);
	return sd_pid_notify_with_fds(0, 0, msg, fds, (unsigned)n);
}

int
kept_store_sync(uint64_t timeout_usec)
{
	return sd_notify_barrier(0, timeout_usec);
}

int
kept_store_remove(const char *name)
{
	return sd_notifyf(0, "FDSTOREREMOVE=1\nFDNAME=%s", name);
}
