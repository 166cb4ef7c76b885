#include "privdrop.h"

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

static int
fail(int error, char *reason, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
fail(int error, char *reason, size_t size, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, size, fmt, ap);
	va_end(ap);
	return error;
}

/* A whole decimal number, or -EINVAL. */
static int
parse_id(const char *s, unsigned *ret)
{
	unsigned long v;
	char *end;

	if (s[0] < '0' || s[0] > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (*end || errno || v >= UINT_MAX)
		return -EINVAL;
	*ret = (unsigned)v;
	return 0;
}

int
privdrop_name_exists(const char *name, bool group)
{
	bool found;

	errno = 0;
	found = group ? getgrnam(name) != NULL : getpwnam(name) != NULL;
	if (found)
		return 0;
	/* getpwnam(3): ENOENT, ESRCH and the like, or no errno, mean none. */
	return errno && errno != ENOENT && errno != ESRCH ? -errno : -ENOENT;
}

int
privdrop_resolve(const char *user, const char *group, struct privdrop *ret, char *reason,
		 size_t size)
{
	struct privdrop p = {0};
	struct passwd *pw;
	unsigned id;

	if (!user)
		return fail(-EINVAL, reason, size, "Group= without User=: echod would stay root");
	errno = 0;
	pw = parse_id(user, &id) == 0 ? getpwuid((uid_t)id) : getpwnam(user);
	if (pw) {
		p.uid = pw->pw_uid;
		p.gid = pw->pw_gid;
		snprintf(p.name, sizeof(p.name), "%s", pw->pw_name);
	} else if (parse_id(user, &id) == 0) {
		/* A uid with no name, as systemd allows: its group must be given. */
		if (!group)
			return fail(-EINVAL, reason, size,
				    "User=%s: uid without a name: set Group= too", user);
		p.uid = (uid_t)id;
	} else
		return fail(-ENOENT, reason, size, "User=%s: no such user", user);
	if (group) {
		struct group *gr;

		errno = 0;
		gr = parse_id(group, &id) == 0 ? getgrgid((gid_t)id) : getgrnam(group);
		if (gr)
			p.gid = gr->gr_gid;
		else if (parse_id(group, &id) == 0)
			p.gid = (gid_t)id;
		else
			return fail(-ENOENT, reason, size, "Group=%s: no such group", group);
	}
	*ret = p;
	return 0;
}

int
privdrop_apply(const struct privdrop *p, char *reason, size_t size)
{
	uid_t ruid, euid, suid;
	gid_t rgid, egid, sgid;

	/* Groups first: once the uid is not 0 they cannot be changed. */
	if (p->name[0] ? initgroups(p->name, p->gid) < 0 : setgroups(1, &p->gid) < 0)
		return fail(negative_errno(), reason, size, "setting the groups of %s: %m",
			    p->name[0] ? p->name : "the user");
	if (setresgid(p->gid, p->gid, p->gid) < 0)
		return fail(negative_errno(), reason, size, "setresgid(%u): %m", (unsigned)p->gid);
	if (setresuid(p->uid, p->uid, p->uid) < 0)
		return fail(negative_errno(), reason, size, "setresuid(%u): %m", (unsigned)p->uid);
	if (getresuid(&ruid, &euid, &suid) < 0 || getresgid(&rgid, &egid, &sgid) < 0)
		return fail(negative_errno(), reason, size, "reading back the ids: %m");
	if (ruid != p->uid || euid != p->uid || suid != p->uid || rgid != p->gid ||
	    egid != p->gid || sgid != p->gid)
		return fail(-EPERM, reason, size, "the ids did not change as asked");
	/* Unless the target is root itself, there must be no way back. */
	if (p->uid != 0 && (setuid(0) == 0 || seteuid(0) == 0))
		return fail(-EPERM, reason, size, "root could be regained after dropping it");
	if (p->uid != 0 && p->gid != 0 && (setgid(0) == 0 || setegid(0) == 0))
		return fail(-EPERM, reason, size, "group 0 could be regained after dropping it");
	return 0;
}
