/* The command line: options that map to configuration keys are kept as
 * (key, value) pairs and applied after the file, so the command line wins
 * and both go through the same validation. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#define OPTIONS_MAX_SETTINGS 128

struct option_setting {
	const char *key;    /* configuration key */
	const char *option; /* as the user wrote it, for messages */
	const char *value;
};

struct options {
	const char *config_path; /* NULL: the default, which may be missing */
	bool check_config;
	bool dump_config; /* --dump-config */
	bool help;
	bool version;
	const char *reload_pid; /* --reload PID */
	const char *before_stop_pid; /* --before-stop PID */
	bool status;		     /* echod status */
	bool json;		     /* echod status --json */
	const char *runtime_dir;     /* --runtime-dir DIR */
	size_t n_settings;
	struct option_setting settings[OPTIONS_MAX_SETTINGS];
};

/* Parses argv. On a bad command line returns -EINVAL with a one-line
 * message in err. */
int options_parse(int argc, char **argv, struct options *ret, struct config_error *err);

/* Applies the settings on top of c (a --listen replaces Listen= from the
 * file rather than adding to it). */
int options_apply(const struct options *o, struct config *c, struct config_error *err);

void options_print_help(void);
