#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "peerproc.h"

/* The executable of pid, as a file identity: two processes run the same
 * program when /proc/PID/exe leads to the same inode, whatever path each
 * was started by. */
static int
exe_identity(pid_t pid, struct stat *ret)
{
	char path[64];
	struct stat st;

	if (pid > 0)
		snprintf(path, sizeof(path), "/proc/%ld/exe", (long)pid);
	else
		snprintf(path, sizeof(path), "/proc/self/exe");
	if (stat(path, &st) < 0)
		return errno == ENOENT ? -ESRCH : -errno;
	*ret = st;
	return 0;
}

static int
parent_of(pid_t pid, pid_t *ret)
{
	char path[64], buf[512];
	const char *close_paren;
	long ppid;
	char state;
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? -ESRCH : -errno;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: the fields
	 * start after the last ')'. */
	close_paren = strrchr(buf, ')');
	if (!close_paren || sscanf(close_paren + 1, " %c %ld", &state, &ppid) != 2)
		return -EBADMSG;
	*ret = (pid_t)ppid;
	return 0;
}

static int
same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

int
peerproc_is_supervisor(pid_t pid)
{
	struct stat self, other, parent;
	pid_t ppid = 0;
	int r;

	if (pid <= 0)
		return -EINVAL;
	r = exe_identity(0, &self);
	if (r < 0)
		return r;
	r = exe_identity(pid, &other);
	if (r < 0)
		return r;
	if (!same_file(&self, &other))
		return -EMEDIUMTYPE;
	r = parent_of(pid, &ppid);
	if (r < 0)
		return r;
	if (ppid > 0 && exe_identity(ppid, &parent) == 0 && same_file(&self, &parent))
		return -ECHILD;
	return 0;
}
