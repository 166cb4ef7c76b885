/* restart.c: when a SIGTERM keeps the connections in systemd's fd store
 * rather than draining them. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "log.h"
#include "restart.h"

static int
with_notify_socket(void **state)
{
	(void)state;
	return setenv("NOTIFY_SOCKET", "/run/systemd/notify", 1);
}

static void
test_keeps_when_all_is_there(void **state)
{
	(void)state;
	/* Announced by --before-stop, sockets from systemd, a store for every
	 * connection and its owed bytes. */
	assert_true(restart_wanted(true, true, 16384, 8192));
	assert_true(restart_wanted(true, true, 2, 1));
	assert_true(restart_wanted(true, true, 0, 0));
}

static void
test_drains_without_announcement(void **state)
{
	(void)state;
	/* A plain stop (or a stale announcement): drain. */
	assert_false(restart_wanted(true, false, 16384, 10));
}

static void
test_drains_without_systemd(void **state)
{
	(void)state;
	/* Sockets echod bound itself: a new echod binds them again, the
	 * store would hand it nothing it could pair. */
	assert_false(restart_wanted(false, true, 16384, 10));
	unsetenv("NOTIFY_SOCKET");
	assert_false(restart_wanted(true, true, 16384, 10));
}

/* FileDescriptorStoreMax= too small for what is open (each connection
 * may need a second entry for its owed bytes): drain rather than keep
 * some and lose the rest. */
static void
test_drains_when_store_is_too_small(void **state)
{
	(void)state;
	assert_false(restart_wanted(true, true, 15, 8));
	assert_false(restart_wanted(true, true, 0, 1));
	assert_true(restart_wanted(true, true, 16, 8));
	/* No overflow in 2 x active. */
	assert_false(restart_wanted(true, true, UINT32_MAX, 0x80000000u));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_keeps_when_all_is_there, with_notify_socket),
	    cmocka_unit_test_setup(test_drains_without_announcement, with_notify_socket),
	    cmocka_unit_test_setup(test_drains_without_systemd, with_notify_socket),
	    cmocka_unit_test_setup(test_drains_when_store_is_too_small, with_notify_socket),
	};

	log_set_max_level(LOG_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
