/* Small helpers every module may use: cleanup attributes and ownership moves. */
#pragma once

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

static inline void
closep(int *fd)
{
	if (*fd >= 0) {
		int saved_errno = errno;
		close(*fd);
		errno = saved_errno;
	}
}

static inline void
freep(void *p)
{
	free(*(void **)p);
}

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_free_ _cleanup_(freep)
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))

/* Hands the value of an owning variable to someone else and leaves the
 * variable empty, so its cleanup attribute no longer releases it. */
#define TAKE_FD(fd)                                                                                \
	({                                                                                         \
		int _fd_ = (fd);                                                                   \
		(fd) = -1;                                                                         \
		_fd_;                                                                              \
	})
#define TAKE_PTR(p)                                                                                \
	({                                                                                         \
		__typeof__(p) _p_ = (p);                                                           \
		(p) = NULL;                                                                        \
		_p_;                                                                               \
	})

/* Returns -errno of the last failed call, never 0 (a call that failed
 * without setting errno still reports an error). */
static inline int
negative_errno(void)
{
	return errno > 0 ? -errno : -EIO;
}

/* The one clock: microseconds of CLOCK_MONOTONIC, for deadlines and
 * intervals (and what systemd's MONOTONIC_USEC= is in). */
static inline uint64_t
now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* The same clock in milliseconds. */
static inline uint64_t
now_ms(void)
{
	return now_usec() / 1000;
}

/* A close-on-exec memfd of size bytes: memory to share with a process
 * that maps it from the fd, across exec. The fd, or -errno. */
static inline int
memfd_sized(const char *name, size_t size)
{
	int fd = memfd_create(name, MFD_CLOEXEC);

	if (fd < 0)
		return negative_errno();
	if (ftruncate(fd, (off_t)size) < 0) {
		int r = negative_errno();

		close(fd);
		return r;
	}
	return fd;
}

/* Writes all len bytes, retrying short writes and EINTR. 0 or -errno. */
static inline int
write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}
