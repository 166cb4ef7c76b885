/* taprun [--no-pidfd] [--no-ipv6] PROGRAM [ARG...]
 *
 * Runs a cmocka test binary for meson's TAP reader.
 *
 * cmocka 1.1.5 reports a skipped test as "not ok N # SKIP name", and TAP
 * (meson 1.0 among its readers) counts any "not ok" as a failure: a test
 * that skips because the machine lacks something would fail the suite.
 * taprun rewrites exactly those lines to "ok N - name # SKIP" and passes
 * everything else, and the exit status, through unchanged.
 *
 * It can also run the test where a feature is missing, to show that the
 * tests depending on it skip rather than fail:
 *   --no-pidfd  setsockopt(SOL_SOCKET, SO_PASSPIDFD) fails with ENOPROTOOPT,
 *               as on kernels before 6.5 (a seccomp filter);
 *   --no-ipv6   a network namespace of its own: loopback up, IPv6 disabled.
 * Each restriction is checked before the test starts. One that cannot be
 * set up (not root, no seccomp) makes the whole test a TAP skip, or a
 * failure when $CI is "true": CI must show the test ran restricted. */
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SO_PASSPIDFD
#define SO_PASSPIDFD 76
#endif

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#elif defined(__riscv) && __riscv_xlen == 64
#define NATIVE_ARCH AUDIT_ARCH_RISCV64
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define NATIVE_ARCH AUDIT_ARCH_PPC64LE
#elif defined(__s390x__)
#define NATIVE_ARCH AUDIT_ARCH_S390X
#endif

/* The low 32 bits of a syscall argument (a 64-bit field). */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ARG_LO(i) (offsetof(struct seccomp_data, args) + (i) * 8)
#else
#define ARG_LO(i) (offsetof(struct seccomp_data, args) + (i) * 8 + 4)
#endif

/* Says why the test cannot run restricted: a skip of the whole binary,
 * or a failure in CI. */
static _Noreturn void
cannot(const char *what)
{
	const char *ci = getenv("CI");
	int saved = errno;

	if (ci && strcmp(ci, "true") == 0) {
		fprintf(stderr, "taprun: %s: %s (CI=true: failing rather than skipping)\n", what,
			strerror(saved));
		exit(1);
	}
	printf("1..0 # SKIP %s: %s\n", what, strerror(saved));
	exit(0);
}

static void
refuse_pidfd(void)
{
#ifdef NATIVE_ARCH
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_setsockopt, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(1)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SOL_SOCKET, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(2)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SO_PASSPIDFD, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOPROTOOPT),
	};
	struct sock_fprog prog = {.len = sizeof(filter) / sizeof(filter[0]), .filter = filter};
	int pair[2], one = 1;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
		cannot("installing a seccomp filter against SO_PASSPIDFD");
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
		cannot("socketpair");
	if (setsockopt(pair[0], SOL_SOCKET, SO_PASSPIDFD, &one, sizeof(one)) == 0 ||
	    errno != ENOPROTOOPT) {
		fprintf(stderr, "taprun: SO_PASSPIDFD is still accepted under the filter\n");
		exit(1);
	}
	close(pair[0]);
	close(pair[1]);
#else
	errno = ENOSYS;
	cannot("no seccomp architecture known for this build");
#endif
}

static int
write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, text, strlen(text));
	close(fd);
	return n == (ssize_t)strlen(text) ? 0 : -1;
}

static void
drop_ipv6(void)
{
	struct sockaddr_in6 six = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	struct sockaddr_in four = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct ifreq ifr = {.ifr_name = "lo"};
	int fd;

	if (unshare(CLONE_NEWNET) < 0)
		cannot("making a network namespace");
	/* Before loopback comes up, so that ::1 is never assigned. */
	if (write_file("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1") < 0 ||
	    write_file("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1") < 0 ||
	    write_file("/proc/sys/net/ipv6/conf/lo/disable_ipv6", "1") < 0) {
		/* No IPv6 in this kernel at all is what is wanted, too. */
		if (errno != ENOENT)
			cannot("disabling IPv6");
	}
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		cannot("reading the flags of lo");
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
		cannot("bringing lo up");
	if (bind(fd, (struct sockaddr *)&four, sizeof(four)) < 0)
		cannot("binding 127.0.0.1 in the new namespace");
	close(fd);

	fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&six, sizeof(six)) == 0) {
		fprintf(stderr, "taprun: ::1 can still be bound with IPv6 disabled\n");
		exit(1);
	}
	if (fd >= 0)
		close(fd);
}

/* "not ok N # SKIP name" -> "ok N - name # SKIP"; other lines as they are. */
static void
relay(FILE *in)
{
	char *line = NULL;
	size_t size = 0;
	ssize_t len;

	while ((len = getline(&line, &size, in)) >= 0) {
		unsigned num;
		int at = -1;

		if (sscanf(line, "not ok %u # SKIP %n", &num, &at) == 1 && at > 0) {
			char *name = line + at;
			name[strcspn(name, "\n")] = '\0';
			printf("ok %u - %s # SKIP\n", num, name);
		} else {
			fwrite(line, 1, (size_t)len, stdout);
		}
		fflush(stdout);
	}
	free(line);
}

int
main(int argc, char **argv)
{
	int i = 1, pipefd[2], status;
	FILE *in;
	pid_t pid;

	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		if (strcmp(argv[i], "--no-pidfd") == 0)
			refuse_pidfd();
		else if (strcmp(argv[i], "--no-ipv6") == 0)
			drop_ipv6();
		else
			break;
	}
	if (i >= argc || argv[i][0] == '-') {
		fprintf(stderr, "usage: taprun [--no-pidfd] [--no-ipv6] PROGRAM [ARG...]\n");
		return 2;
	}

	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		perror("taprun: pipe");
		return 1;
	}
	pid = fork();
	if (pid < 0) {
		perror("taprun: fork");
		return 1;
	}
	if (pid == 0) {
		dup2(pipefd[1], STDOUT_FILENO);
		execv(argv[i], argv + i);
		fprintf(stderr, "taprun: exec %s: %s\n", argv[i], strerror(errno));
		_exit(127);
	}
	close(pipefd[1]);
	in = fdopen(pipefd[0], "r");
	if (!in) {
		perror("taprun: fdopen");
		return 1;
	}
	relay(in);
	fclose(in);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR) {
			perror("taprun: waitpid");
			return 1;
		}
	if (WIFSIGNALED(status)) {
		fprintf(stderr, "taprun: %s killed by signal %d\n", argv[i], WTERMSIG(status));
		return 128 + WTERMSIG(status);
	}
	return WEXITSTATUS(status);
}
