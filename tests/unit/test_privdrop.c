/* privdrop.c: names and numbers resolve; once dropped, root is gone for
 * good (run in a child, as root; skipped otherwise). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "privdrop.h"

static void
test_resolve(void **state)
{
	struct privdrop p;
	char reason[256];

	assert_int_equal(privdrop_resolve("root", NULL, &p, reason, sizeof(reason)), 0);
	assert_int_equal(p.uid, 0);
	assert_int_equal(p.gid, 0);
	assert_string_equal(p.name, "root");
	assert_int_equal(privdrop_resolve("0", "0", &p, reason, sizeof(reason)), 0);
	assert_string_equal(p.name, "root");
	assert_int_equal(privdrop_resolve("4000000", "4000001", &p, reason, sizeof(reason)), 0);
	assert_int_equal(p.uid, 4000000);
	assert_int_equal(p.gid, 4000001);
	assert_string_equal(p.name, "");
	assert_int_equal(privdrop_resolve("4000000", NULL, &p, reason, sizeof(reason)), -EINVAL);
	assert_string_equal(reason, "User=4000000: uid without a name: set Group= too");
	assert_int_equal(privdrop_resolve("no-such-user-echod", NULL, &p, reason, sizeof(reason)),
			 -ENOENT);
	assert_string_equal(reason, "User=no-such-user-echod: no such user");
	assert_int_equal(privdrop_resolve("root", "no-such-group-echod", &p, reason, sizeof(reason)),
			 -ENOENT);
	assert_int_equal(privdrop_resolve(NULL, "root", &p, reason, sizeof(reason)), -EINVAL);
}

static void
test_apply_for_good(void **state)
{
	struct passwd *pw = getpwnam("nobody");
	int status;
	pid_t pid;

	if (geteuid() != 0 || !pw)
		skip();
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct privdrop p;
		char reason[256];
		gid_t groups[64];
		int n;

		if (privdrop_resolve("nobody", NULL, &p, reason, sizeof(reason)) < 0 ||
		    privdrop_apply(&p, reason, sizeof(reason)) < 0)
			_exit(10);
		if (getuid() != pw->pw_uid || geteuid() != pw->pw_uid || getgid() != pw->pw_gid)
			_exit(11);
		if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0)
			_exit(12);
		n = getgroups(64, groups);
		for (int i = 0; i < n; i++)
			if (groups[i] == 0)
				_exit(13);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_resolve),
	    cmocka_unit_test(test_apply_for_good),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
