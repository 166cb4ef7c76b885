#include "sdunit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>

#include "util.h"

#define SDUNIT_DESTINATION "org.freedesktop.systemd1"
#define SDUNIT_SELF "/org/freedesktop/systemd1/unit/self"
/* At most this long per call: a stop must not hang on a stuck bus. */
#define SDUNIT_TIMEOUT_USEC (2 * 1000 * 1000)

static void
bus_unrefp(sd_bus **bus)
{
	sd_bus_flush_close_unref(*bus);
}

static int
get_string(sd_bus *bus, const char *path, const char *iface, const char *prop, char *buf,
	   size_t size)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	char *value = NULL;
	int r;

	r = sd_bus_get_property_string(bus, SDUNIT_DESTINATION, path, iface, prop, &error, &value);
	sd_bus_error_free(&error);
	if (r < 0)
		return r;
	snprintf(buf, size, "%s", value);
	free(value);
	return 0;
}

/* Unit.Job is "(uo)": the job id (0: none) and its object path. */
static int
get_job_path(sd_bus *bus, char **ret_path)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	const char *path;
	uint32_t id;
	int r;

	r = sd_bus_get_property(bus, SDUNIT_DESTINATION, SDUNIT_SELF, "org.freedesktop.systemd1.Unit",
				"Job", &error, &reply, "(uo)");
	sd_bus_error_free(&error);
	if (r < 0)
		return r;
	r = sd_bus_message_read(reply, "(uo)", &id, &path);
	if (r >= 0) {
		*ret_path = id ? strdup(path) : NULL;
		r = id && !*ret_path ? -ENOMEM : 0;
	}
	sd_bus_message_unref(reply);
	return r;
}

int
sdunit_query(struct sdunit_info *ret)
{
	_cleanup_(bus_unrefp) sd_bus *bus = NULL;
	sd_bus_error error = SD_BUS_ERROR_NULL;
	_cleanup_free_ char *job = NULL;
	struct sdunit_info info = {0};
	int r;

	r = sd_bus_open_system(&bus);
	if (r < 0)
		return r;
	r = sd_bus_set_method_call_timeout(bus, SDUNIT_TIMEOUT_USEC);
	if (r < 0)
		return r;
	r = get_string(bus, SDUNIT_SELF, "org.freedesktop.systemd1.Service", "NotifyAccess",
		       info.notify_access, sizeof(info.notify_access));
	if (r < 0)
		return r;
	r = sd_bus_get_property_trivial(bus, SDUNIT_DESTINATION, SDUNIT_SELF,
					"org.freedesktop.systemd1.Service",
					"FileDescriptorStoreMax", &error, 'u', &info.fd_store_max);
	sd_bus_error_free(&error);
	if (r < 0)
		return r;
	r = get_job_path(bus, &job);
	if (r < 0)
		return r;
	if (job) {
		r = get_string(bus, job, "org.freedesktop.systemd1.Job", "JobType", info.job_type,
			       sizeof(info.job_type));
		if (r < 0)
			return r;
	}
	*ret = info;
	return 0;
}
