/* Dropping root after the sockets are bound (User=, Group=), as inetd and
 * every daemon that binds its own ports does: the supervisor, before it
 * forks anything, becomes the configured user for good.
 *
 * Mechanism only: nothing here logs; errors are negative errno with a
 * reason for the user. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct privdrop {
	uid_t uid;
	gid_t gid;
	char name[256]; /* the user's name, for initgroups(); "" for a uid with none */
};

/* config_name_check_fn for config_check_names_with(): whether the user
 * (group false) or the group called name exists. */
int privdrop_name_exists(const char *name, bool group);

/* Resolves user (a name or a uid) and group (NULL: the user's primary
 * group; a name or a gid). 0, or -ENOENT / -EINVAL with the reason. */
int privdrop_resolve(const char *user, const char *group, struct privdrop *ret, char *reason,
		     size_t size);

/* Becomes p: supplementary groups (the user's, from initgroups(), plus
 * p->gid; only p->gid for a uid without a name), then the gid, then the
 * uid, real, effective and saved. Then checks that root cannot be taken
 * back: setuid(0) and setgid(0) must fail. 0, or a negative errno with the
 * step that failed in reason. */
int privdrop_apply(const struct privdrop *p, char *reason, size_t size);
