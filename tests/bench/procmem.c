/* echod-bench: memory of a server's whole process tree, from /proc. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

struct proc {
	pid_t pid, ppid;
	int in_tree;
};

/* The parent pid is the 2nd field after the command name, which may itself
 * hold spaces and parentheses: parse after the last ')'. */
static pid_t
read_ppid(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;
	size_t n;
	int ppid;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %*c %d", &ppid) != 1)
		return -1;
	return ppid;
}

/* Returns the value in kB of the line starting with key, 0 if absent
 * (kernel threads, zombies, or a process that just exited). */
static uint64_t
read_kb(pid_t pid, const char *file, const char *key)
{
	char path[64], line[256];
	size_t klen = strlen(key);
	uint64_t kb = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, key, klen) == 0) {
			kb = strtoull(line + klen, NULL, 10);
			break;
		}
	}
	fclose(f);
	return kb;
}

static int
list_procs(struct proc **ret, size_t *ret_n)
{
	struct proc *v = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;

	d = opendir("/proc");
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		if (n == cap) {
			struct proc *nv;

			cap = cap ? cap * 2 : 1024;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				free(v);
				closedir(d);
				return -ENOMEM;
			}
			v = nv;
		}
		v[n].pid = (pid_t)atoi(de->d_name);
		v[n].ppid = read_ppid(v[n].pid);
		v[n].in_tree = 0;
		n++;
	}
	closedir(d);
	*ret = v;
	*ret_n = n;
	return 0;
}

int
procmem_tree(pid_t pid, uint64_t *ret_rss_kb, uint64_t *ret_pss_kb)
{
	uint64_t rss = 0, pss = 0;
	struct proc *v = NULL;
	size_t n = 0;
	int r, count = 0, grew = 1;

	r = list_procs(&v, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		v[i].in_tree = v[i].pid == pid;
	/* Mark descendants until a pass adds none; each pass adds at least
	 * one level, so this ends after at most n passes. */
	for (size_t pass = 0; grew && pass < n; pass++) {
		grew = 0;
		for (size_t i = 0; i < n; i++) {
			if (v[i].in_tree)
				continue;
			for (size_t j = 0; j < n; j++) {
				if (v[j].in_tree && v[j].pid == v[i].ppid) {
					v[i].in_tree = 1;
					grew = 1;
					break;
				}
			}
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (!v[i].in_tree)
			continue;
		count++;
		rss += read_kb(v[i].pid, "status", "VmRSS:");
		pss += read_kb(v[i].pid, "smaps_rollup", "Pss:");
	}
	free(v);
	if (count == 0)
		return -ESRCH;
	*ret_rss_kb = rss;
	*ret_pss_kb = pss;
	return count;
}
