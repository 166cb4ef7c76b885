#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#include "address.h"
#include "log.h"
#include "util.h"

/* In fork mode MaxConnections= bounds live processes, not epoll slots, so
 * its default is far lower than Workers x WorkerConnections. */
#define FORK_DEFAULT_MAX_CONNECTIONS 1024u

static const char *const model_names[] = {
	[MODEL_PREFORK] = "prefork",
	[MODEL_PASSFD] = "passfd",
	[MODEL_FORK] = "fork",
};

const char *
model_to_string(enum model m)
{
	return (size_t)m < ELEMENTSOF(model_names) ? model_names[m] : "unknown";
}

void
config_init(struct config *c)
{
	*c = (struct config){
		.model = MODEL_PREFORK,
		.workers = 0,
		.worker_connections = 0,
		.max_connections = 0,
		.idle_timeout_sec = 300,
		.shutdown_timeout_sec = 10,
		.datagram_rate_limit = 1000,
		.proxy_header_timeout_sec = 3,
		.log_level = LOG_INFO,
		.socket_mode = -1,
	};
}

static void
config_clear_listen(struct config *c)
{
	for (size_t i = 0; i < c->n_listen; i++)
		free(c->listen[i]);
	c->n_listen = 0;
}

static void
config_clear_proxy_listen(struct config *c)
{
	for (size_t i = 0; i < c->n_proxy_listen; i++)
		free(c->proxy_listen[i]);
	c->n_proxy_listen = 0;
}

void
config_done(struct config *c)
{
	config_clear_listen(c);
	config_clear_proxy_listen(c);
	access_list_clear(&c->access);
	access_list_clear(&c->proxy_from);
	free(c->metrics_listen);
	c->metrics_listen = NULL;
	free(c->user);
	c->user = NULL;
	free(c->group);
	c->group = NULL;
}

int
config_copy(struct config *dst, const struct config *src)
{
	config_done(dst);
	*dst = *src;
	dst->n_listen = 0;
	dst->n_proxy_listen = 0;
	dst->access = (struct access_list){0};
	dst->proxy_from = (struct access_list){0};
	dst->metrics_listen = dst->user = dst->group = NULL;
	if (access_list_copy(&dst->access, &src->access) < 0 ||
	    access_list_copy(&dst->proxy_from, &src->proxy_from) < 0) {
		config_done(dst);
		return -ENOMEM;
	}
	for (size_t i = 0; i < src->n_proxy_listen; i++) {
		dst->proxy_listen[i] = strdup(src->proxy_listen[i]);
		if (!dst->proxy_listen[i]) {
			config_done(dst);
			return -ENOMEM;
		}
		dst->n_proxy_listen++;
	}
	if (src->metrics_listen && !(dst->metrics_listen = strdup(src->metrics_listen)))
		return -ENOMEM;
	if (src->user && !(dst->user = strdup(src->user)))
		return -ENOMEM;
	if (src->group && !(dst->group = strdup(src->group)))
		return -ENOMEM;
	for (size_t i = 0; i < src->n_listen; i++) {
		dst->listen[i] = strdup(src->listen[i]);
		if (!dst->listen[i]) {
			config_done(dst);
			return -ENOMEM;
		}
		dst->n_listen++;
	}
	return 0;
}

int
config_fail(struct config_error *err, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Whole decimal numbers only: no sign, no suffix, no spaces inside. */
static int
parse_unsigned(const char *s, unsigned min, unsigned max, unsigned *ret)
{
	unsigned long long v;
	char *end;

	if (!isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (*end != '\0')
		return -EINVAL;
	if (errno == ERANGE || v < min || v > max)
		return -ERANGE;
	*ret = (unsigned)v;
	return 0;
}

struct key_spec {
	const char *key;
	const char *option;
	unsigned min, max;
	size_t offset; /* into struct config, for plain numbers */
};

#define NUMBER_KEY(k, opt, lo, hi, field)                                                          \
	{                                                                                          \
		k, opt, lo, hi, offsetof(struct config, field)                                     \
	}

static const struct key_spec number_keys[] = {
	NUMBER_KEY("MaxConnections", "--max-connections", 1, 16777216, max_connections),
	NUMBER_KEY("IdleTimeoutSec", "--idle-timeout", 0, 86400, idle_timeout_sec),
	NUMBER_KEY("ShutdownTimeoutSec", "--shutdown-timeout", 0, 3600, shutdown_timeout_sec),
	NUMBER_KEY("DatagramRateLimit", "--datagram-rate-limit", 0, 10000000, datagram_rate_limit),
	NUMBER_KEY("MaxConnectionsPerSource", "--max-connections-per-source", 0, 16777216,
		   max_connections_per_source),
	NUMBER_KEY("ConnectionRateLimit", "--connection-rate-limit", 0, 10000000,
		   connection_rate_limit),
	NUMBER_KEY("DeferAcceptSec", "--defer-accept", 0, 3600, defer_accept_sec),
	NUMBER_KEY("ProxyHeaderTimeoutSec", "--proxy-header-timeout", 1, 3600,
		   proxy_header_timeout_sec),
};

#define WORKERS_MAX 1024u

static int
set_number(struct config *c, const struct key_spec *k, const char *value, const char *where,
	   struct config_error *err)
{
	unsigned v;
	int r = parse_unsigned(value, k->min, k->max, &v);

	if (r == -EINVAL)
		return config_fail(err, "%s: %s=%s: not a whole number", where, k->key, value);
	if (r == -ERANGE)
		return config_fail(err, "%s: %s=%s: out of range (%u..%u)", where, k->key, value,
				   k->min, k->max);
	*(unsigned *)((char *)c + k->offset) = v;
	return 0;
}

/* A key that takes a whole number in lo..hi or "auto" (stored as 0). */
static int
set_auto_number(unsigned *field, const char *key, unsigned lo, unsigned hi, const char *value,
		const char *where, struct config_error *err)
{
	unsigned v;
	int r;

	if (strcasecmp(value, "auto") == 0) {
		*field = 0;
		return 0;
	}
	r = parse_unsigned(value, lo, hi, &v);
	if (r == -EINVAL)
		return config_fail(err, "%s: %s=%s: not a whole number or \"auto\"", where, key,
				   value);
	if (r == -ERANGE)
		return config_fail(err, "%s: %s=%s: out of range (%u..%u or auto)", where, key, value,
				   lo, hi);
	*field = v;
	return 0;
}

static int
set_model(struct config *c, const char *value, const char *where, struct config_error *err)
{
	for (size_t i = 0; i < ELEMENTSOF(model_names); i++)
		if (strcasecmp(value, model_names[i]) == 0) {
			c->model = (enum model)i;
			return 0;
		}
	return config_fail(err, "%s: Model=%s: unknown model (prefork, passfd or fork)", where,
			   value);
}

static int
set_log_level(struct config *c, const char *value, const char *where, struct config_error *err)
{
	int l = log_level_from_string(value);

	if (l < 0 || l < LOG_ERR)
		return config_fail(err, "%s: LogLevel=%s: unknown level (err, warning, notice, "
				   "info or debug)", where, value);
	c->log_level = l;
	return 0;
}

static int
add_listen(struct config *c, const char *value, const char *where, struct config_error *err)
{
	struct listen_address a;
	char reason[128];

	if (address_parse(value, &a, reason, sizeof(reason)) < 0)
		return config_fail(err, "%s: Listen=%s: %s", where, value, reason);
	if (c->n_listen >= CONFIG_MAX_LISTEN)
		return config_fail(err, "%s: Listen=%s: more than %d addresses", where, value,
				   CONFIG_MAX_LISTEN);
	c->listen[c->n_listen] = strdup(value);
	if (!c->listen[c->n_listen])
		return config_fail(err, "%s: out of memory", where);
	c->n_listen++;
	return 0;
}

/* ProxyListen=: like Listen=, but a stream address only (the PROXY
 * protocol is TCP's; a balancer may come over a UNIX socket too). */
static int
add_proxy_listen(struct config *c, const char *value, const char *where,
		 struct config_error *err)
{
	struct listen_address a;
	char reason[128];

	if (address_parse(value, &a, reason, sizeof(reason)) < 0)
		return config_fail(err, "%s: ProxyListen=%s: %s", where, value, reason);
	if (a.type != SOCK_STREAM)
		return config_fail(err, "%s: ProxyListen=%s: the PROXY protocol needs a stream "
				   "address (TCP or unix:), not a datagram one", where, value);
	if (c->n_proxy_listen >= CONFIG_MAX_LISTEN)
		return config_fail(err, "%s: ProxyListen=%s: more than %d addresses", where, value,
				   CONFIG_MAX_LISTEN);
	c->proxy_listen[c->n_proxy_listen] = strdup(value);
	if (!c->proxy_listen[c->n_proxy_listen])
		return config_fail(err, "%s: out of memory", where);
	c->n_proxy_listen++;
	return 0;
}

/* ProxyFrom=: the balancers' prefixes, an allow list of its own. (An
 * empty assignment, which empties it, is reset_key's.) */
static int
add_proxy_from(struct config *c, const char *value, const char *where, struct config_error *err)
{
	char reason[160];
	int r;

	r = access_list_add(&c->proxy_from, false, value, reason, sizeof(reason));
	if (r == -ENOMEM)
		return config_fail(err, "%s: out of memory", where);
	if (r < 0)
		return config_fail(err, "%s: ProxyFrom=%s: %s", where, value, reason);
	return 0;
}

int
config_validate(const struct config *c, const char *origin, struct config_error *err)
{
	if (c->n_proxy_listen > 0 && c->proxy_from.n_allow == 0)
		return config_fail(err, "%s: ProxyListen=%s: ProxyFrom= is required with a proxy "
				   "listener (the balancers trusted to send PROXY headers)",
				   origin, c->proxy_listen[0]);
	return 0;
}

/* AllowFrom= and DenyFrom=: each adds its prefixes to the list. */
static int
add_access(struct config *c, const char *key, bool deny, const char *value, const char *where,
	   struct config_error *err)
{
	char reason[160];
	int r = access_list_add(&c->access, deny, value, reason, sizeof(reason));

	if (r == -ENOMEM)
		return config_fail(err, "%s: out of memory", where);
	if (r < 0)
		return config_fail(err, "%s: %s=%s: %s", where, key, value, reason);
	return 0;
}

/* One address (a later one replaces it; empty: none), a stream one: HTTP. */
static int
set_metrics_listen(struct config *c, const char *value, const char *where,
		   struct config_error *err)
{
	struct listen_address a;
	char reason[128];
	char *copy = NULL;

	if (value[0] && address_parse(value, &a, reason, sizeof(reason)) < 0)
		return config_fail(err, "%s: MetricsListen=%s: %s", where, value, reason);
	if (value[0] && a.type != SOCK_STREAM)
		return config_fail(err, "%s: MetricsListen=%s: HTTP needs a stream address (TCP "
				   "or unix:), not a datagram one", where, value);
	if (value[0] && !(copy = strdup(value)))
		return config_fail(err, "%s: out of memory", where);
	free(c->metrics_listen);
	c->metrics_listen = copy;
	return 0;
}

/* An empty value sets a key back to its default, for every key: what an
 * empty assignment does in systemd's unit files (and in the echod.socket
 * drop-ins echod(8) shows), what lets the command line undo a line of the
 * file, and what makes each "#Key=" line of the shipped file mean its
 * default once uncommented. For the lists (Listen=, AllowFrom=, DenyFrom=)
 * the default is empty, so the assignment empties them. -ENOENT for a key
 * that does not exist. */
static int
reset_key(struct config *c, const char *key)
{
	struct config d;

	config_init(&d);
	if (strcasecmp(key, "AllowFrom") == 0 || strcasecmp(key, "DenyFrom") == 0) {
		access_list_reset(&c->access, strcasecmp(key, "DenyFrom") == 0);
		return 0;
	}
	if (strcasecmp(key, "MetricsListen") == 0) {
		free(c->metrics_listen);
		c->metrics_listen = NULL;
		return 0;
	}
	if (strcasecmp(key, "Listen") == 0) {
		config_clear_listen(c);
		return 0;
	}
	if (strcasecmp(key, "ProxyListen") == 0) {
		config_clear_proxy_listen(c);
		return 0;
	}
	if (strcasecmp(key, "ProxyFrom") == 0) {
		access_list_clear(&c->proxy_from);
		return 0;
	}
	if (strcasecmp(key, "User") == 0 || strcasecmp(key, "Group") == 0) {
		char **field = strcasecmp(key, "User") == 0 ? &c->user : &c->group;

		free(*field);
		*field = NULL;
		return 0;
	}
	if (strcasecmp(key, "Model") == 0) {
		c->model = d.model;
		return 0;
	}
	if (strcasecmp(key, "SocketMode") == 0) {
		c->socket_mode = d.socket_mode;
		return 0;
	}
	if (strcasecmp(key, "Workers") == 0) {
		c->workers = d.workers;
		return 0;
	}
	if (strcasecmp(key, "LogLevel") == 0) {
		c->log_level = d.log_level;
		return 0;
	}
	for (size_t i = 0; i < ELEMENTSOF(number_keys); i++)
		if (strcasecmp(key, number_keys[i].key) == 0) {
			size_t off = number_keys[i].offset;

			*(unsigned *)((char *)c + off) = *(unsigned *)((char *)&d + off);
			return 0;
		}
	return -ENOENT;
}

/* SocketMode=: octal, as chmod(1) and systemd's SocketMode= take it. */
static int
set_socket_mode(struct config *c, const char *value, const char *where,
		struct config_error *err)
{
	unsigned long v;
	char *end;

	if (strspn(value, "01234567") != strlen(value) || strlen(value) > 4)
		return config_fail(err, "%s: SocketMode=%s: not an octal mode (such as 0660)", where,
				   value);
	v = strtoul(value, &end, 8);
	if (v > 0777)
		return config_fail(err, "%s: SocketMode=%s: out of range (0000..0777: no set-id or "
				   "sticky bits)", where, value);
	c->socket_mode = (int)v;
	return 0;
}

/* Where User= and Group= names are checked (config_check_names_with()). */
static config_name_check_fn *name_check;

void
config_check_names_with(config_name_check_fn *check)
{
	name_check = check;
}

/* User= and Group=: a name, or a number (a uid or gid with no name is
 * allowed, as with systemd). A name is checked now, where a check is set,
 * so that --check-config and the start-up fail with file:line:key for a
 * user that does not exist. */
static int
set_identity(char **field, bool group, const char *value, const char *where,
	     struct config_error *err)
{
	const char *key = group ? "Group" : "User";
	unsigned id;
	char *copy;
	int r;

	if (parse_unsigned(value, 0, UINT_MAX - 1, &id) < 0 && name_check &&
	    (r = name_check(value, group)) < 0) {
		const char *why = r == -ENOENT ? (group ? "no such group" : "no such user")
					       : strerror(-r);

		return config_fail(err, "%s: %s=%s: %s", where, key, value, why);
	}
	copy = strdup(value);
	if (!copy)
		return config_fail(err, "%s: out of memory", where);
	free(*field);
	*field = copy;
	return 0;
}

int
config_set(struct config *c, const char *key, const char *value, const char *where,
	   struct config_error *err)
{
	if (value[0] == '\0') {
		if (reset_key(c, key) == 0)
			return 0;
		config_fail(err, "%s: unknown key \"%s\"", where, key);
		return -ENOENT;
	}
	if (strcasecmp(key, "AllowFrom") == 0)
		return add_access(c, "AllowFrom", false, value, where, err);
	if (strcasecmp(key, "DenyFrom") == 0)
		return add_access(c, "DenyFrom", true, value, where, err);
	if (strcasecmp(key, "ProxyFrom") == 0)
		return add_proxy_from(c, value, where, err);
	if (strcasecmp(key, "ProxyListen") == 0)
		return add_proxy_listen(c, value, where, err);
	if (strcasecmp(key, "MetricsListen") == 0)
		return set_metrics_listen(c, value, where, err);
	if (strcasecmp(key, "SocketMode") == 0)
		return set_socket_mode(c, value, where, err);
	if (strcasecmp(key, "User") == 0)
		return set_identity(&c->user, false, value, where, err);
	if (strcasecmp(key, "Group") == 0)
		return set_identity(&c->group, true, value, where, err);
	if (strcasecmp(key, "Model") == 0)
		return set_model(c, value, where, err);
	if (strcasecmp(key, "Workers") == 0)
		return set_auto_number(&c->workers, "Workers", 1, WORKERS_MAX, value, where, err);
	if (strcasecmp(key, "WorkerConnections") == 0)
		return set_auto_number(&c->worker_connections, "WorkerConnections", 1,
				       WORKER_CONNECTIONS_MAX, value, where, err);
	if (strcasecmp(key, "LogLevel") == 0)
		return set_log_level(c, value, where, err);
	if (strcasecmp(key, "Listen") == 0)
		return add_listen(c, value, where, err);
	for (size_t i = 0; i < ELEMENTSOF(number_keys); i++)
		if (strcasecmp(key, number_keys[i].key) == 0)
			return set_number(c, &number_keys[i], value, where, err);
	config_fail(err, "%s: unknown key \"%s\"", where, key);
	return -ENOENT;
}

struct file_parse {
	struct config *config;
	struct config_error *err;
	const char *path;
	FILE *f;
	unsigned line;
	int error;
	unsigned error_line;
};

#define SYNTAX "syntax error: expected [echod] or Key=value"

/* Records the first error, at the current line, and blanks the line so that
 * inih does nothing with it. */
static void
line_fail(struct file_parse *p, char *str, const char *hint)
{
	if (!p->error) {
		p->error = config_fail(p->err, "%s:%u: %s", p->path, p->line, hint);
		p->error_line = p->line;
	}
	str[0] = '\0';
}

/* The grammar, one rule per line, enforced here because inih's defaults
 * (Debian builds it with them) are looser: a line is empty, a comment
 * ('#' or ';' first), "[section]" or "Key=value"; blanks around each part
 * are ignored. What inih would otherwise do and we refuse: an indented
 * line continuing the previous value (INI_ALLOW_MULTILINE), ':' for '='
 * and " ;" starting a comment after a value (but not " #"): comments go on
 * lines of their own, so '#' and ';' mean the same everywhere. The line is
 * handed on unindented, so inih never sees a continuation. */
static void
check_line(struct file_parse *p, char *str)
{
	size_t indent, len, key_len, skip = 0, total = strlen(str);
	const char *eq, *value;
	char *s = str;

	/* A UTF-8 byte order mark, which editors may write, opens line 1. */
	if (p->line == 1 && total >= 3 && (unsigned char)str[0] == 0xEF &&
	    (unsigned char)str[1] == 0xBB && (unsigned char)str[2] == 0xBF)
		skip = 3;
	indent = strspn(str + skip, " \t");
	skip += indent;
	memmove(str, str + skip, total - skip + 1);
	len = total - skip;
	while (len > 0 && strchr(" \t\r\n", s[len - 1]))
		len--;
	if (len == 0 || s[0] == '#' || s[0] == ';')
		return;
	if (s[0] == '[') {
		const char *end = memchr(s, ']', len);

		if (!end)
			line_fail(p, str, SYNTAX);
		else if ((size_t)(end - s) + 1 != len)
			line_fail(p, str, "syntax error: text after the section's ']' (comments go "
					  "on lines of their own)");
		return;
	}
	eq = memchr(s, '=', len);
	key_len = eq ? (size_t)(eq - s) : len;
	while (key_len > 0 && strchr(" \t", s[key_len - 1]))
		key_len--;
	if (memchr(s, ':', key_len)) {
		line_fail(p, str, SYNTAX " (the separator is '=', not ':')");
		return;
	}
	if (!eq) {
		line_fail(p, str, indent > 0 ? SYNTAX " (an indented line does not continue the "
						      "previous one)"
					     : SYNTAX);
		return;
	}
	for (size_t i = 0; i < key_len; i++)
		if (!isalnum((unsigned char)s[i])) {
			line_fail(p, str, SYNTAX " (a key is letters and digits)");
			return;
		}
	if (key_len == 0) {
		line_fail(p, str, SYNTAX " (no key before '=')");
		return;
	}
	for (value = eq + 1; value < s + len; value++)
		if ((*value == '#' || *value == ';') && strchr(" \t", value[-1])) {
			char hint[320];

			snprintf(hint, sizeof(hint), "%.*s: a '%c' after a value starts no comment "
				 "(comments go on lines of their own)", (int)len, s, *value);
			line_fail(p, str, hint);
			return;
		}
}

/* inih's reader callback: counting lines here is how we learn which line a
 * handler call comes from (Debian's libinih is built without
 * INI_HANDLER_LINENO). Read byte by byte rather than with fgets(), which
 * cannot tell a NUL byte in a line from the line's end. */
static char *
read_line(char *str, int num, void *stream)
{
	struct file_parse *p = stream;
	const char *first;
	bool nul = false;
	int len = 0, ch = EOF;

	while (len < num - 1 && (ch = getc(p->f)) != EOF) {
		str[len++] = (char)ch;
		nul |= ch == '\0';
		if (ch == '\n')
			break;
	}
	if (len == 0)
		return NULL;
	str[len] = '\0';
	p->line++;
	if (nul && !p->error) {
		/* inih would see the line end at the NUL and the rest as
		 * nothing: say what is wrong rather than parse half a line. */
		p->error = config_fail(p->err, "%s:%u: NUL byte in line (not a text file?)",
				       p->path, p->line);
		p->error_line = p->line;
		return str;
	}
	if (ch == EOF || ch == '\n') {
		check_line(p, str);
		return str;
	}
	/* A line longer than inih's buffer: inih would take the rest for a
	 * line of its own. The rest of a comment can go; anything else would
	 * be cut short, so it is an error. */
	ch = getc(p->f);
	if (ch == EOF || ch == '\n') {
		check_line(p, str);
		return str;
	}
	while (ch != EOF && ch != '\n')
		ch = getc(p->f);
	first = str + strspn(str, " \t");
	if (first[0] != '#' && first[0] != ';' && !p->error) {
		p->error = config_fail(p->err, "%s:%u: line too long (%d characters at most)",
				       p->path, p->line, num - 1);
		p->error_line = p->line;
	}
	return str;
}

static int
handle_entry(void *user, const char *section, const char *name, const char *value)
{
	struct file_parse *p = user;
	char where[PATH_MAX + 32];
	int r;

	if (p->error)
		return 0;
	snprintf(where, sizeof(where), "%s:%u", p->path, p->line);
	if (strcasecmp(section, "echod") != 0) {
		p->error_line = p->line;
		if (section[0] == '\0')
			p->error = config_fail(p->err, "%s: %s=%s: key outside of the [echod] section",
					       where, name, value);
		else
			p->error = config_fail(p->err, "%s: unknown section [%s]", where, section);
		return 0;
	}
	r = config_set(p->config, name, value, where, p->err);
	if (r < 0) {
		/* config_load_file()'s -ENOENT means "no file", which the
		 * default path may be: an unknown key inside one is a bad file. */
		p->error = r == -ENOENT ? -EINVAL : r;
		p->error_line = p->line;
		return 0;
	}
	return 1;
}

int
config_load_stream(struct config *c, FILE *f, const char *name, struct config_error *err)
{
	struct file_parse p = {.config = c, .err = err, .path = name, .f = f};
	int r;

	r = ini_parse_stream(read_line, &p, handle_entry, &p);
	if (ferror(f) && !p.error)
		p.error = config_fail(err, "%s: read error", name);
	/* inih goes on after a syntax error and returns the first error's
	 * line: report whichever came first, as it is the likely cause. */
	if (p.error && !(r > 0 && (unsigned)r < p.error_line))
		return p.error;
	if (r > 0)
		return config_fail(err, "%s:%d: syntax error: expected [echod] or Key=value", name,
				   r);
	if (r < 0)
		return config_fail(err, "%s: cannot parse", name);
	return 0;
}

int
config_load_file(struct config *c, const char *path, struct config_error *err)
{
	FILE *f;
	int r;

	f = fopen(path, "re");
	if (!f) {
		r = negative_errno();
		config_fail(err, "%s: cannot read: %s", path, strerror(-r));
		return r;
	}
	r = config_load_stream(c, f, path, err);
	fclose(f);
	return r;
}

unsigned
config_workers(const struct config *c)
{
	long n;

	if (c->workers > 0)
		return c->workers;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		return 1;
	return n > (long)WORKERS_MAX ? WORKERS_MAX : (unsigned)n;
}

unsigned
config_worker_connections_for(const struct config *c, uint64_t fd_limit)
{
	if (c->worker_connections > 0)
		return c->worker_connections;
	/* Under a limit too small for the reserve (a test, a tight
	 * container), half of it still serves clients. */
	if (fd_limit < 2 * WORKER_FD_RESERVE)
		return fd_limit < 2 ? 1 : (unsigned)(fd_limit / 2);
	fd_limit -= WORKER_FD_RESERVE;
	return fd_limit > WORKER_CONNECTIONS_MAX ? WORKER_CONNECTIONS_MAX : (unsigned)fd_limit;
}

/* The open-files limit a worker runs with: echod raises its soft limit to
 * the hard one at start, and workers inherit it. Read once: the hard
 * limit does not change under a running echod, and the pool asks on
 * every connection it places. */
static uint64_t
worker_fd_limit(void)
{
	static uint64_t limit;
	struct rlimit rl;

	if (limit)
		return limit;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 1024;
	limit = rl.rlim_max == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_max;
	return limit;
}

unsigned
config_worker_connections(const struct config *c)
{
	return config_worker_connections_for(c, worker_fd_limit());
}

unsigned
config_fd_store_max(void)
{
	const char *text = getenv("FDSTORE");
	unsigned v;

	if (!text || parse_unsigned(text, 1, UINT_MAX, &v) < 0)
		return 0;
	return v;
}

/* The workers' slots, Workers x WorkerConnections (not for fork). */
static unsigned long long
config_slots(const struct config *c)
{
	return (unsigned long long)config_workers(c) * config_worker_connections(c);
}

/* What an unset MaxConnections= means: the slots, and no more than a
 * restart can keep (two store entries a connection) when the fd store's
 * size is known. */
static unsigned long long
config_default_max(const struct config *c)
{
	unsigned long long all = config_slots(c);
	unsigned store = config_fd_store_max();

	if (store > 0 && store / 2 < all)
		return store / 2 > 0 ? store / 2 : 1;
	return all;
}

unsigned
config_max_connections(const struct config *c)
{
	unsigned long long all;

	if (c->model == MODEL_FORK)
		return c->max_connections > 0 ? c->max_connections : FORK_DEFAULT_MAX_CONNECTIONS;
	/* The workers cannot hold more than their slots, whatever the key says. */
	all = c->max_connections > 0 ? config_slots(c) : config_default_max(c);
	if (c->max_connections > 0 && c->max_connections < all)
		return c->max_connections;
	return all > UINT_MAX ? UINT_MAX : (unsigned)all;
}

void
config_notes(const struct config *c, config_note_fn note, void *userdata)
{
	char text[CONFIG_NOTE_MAX];

	if (c->model == MODEL_FORK) {
		struct config d;

		config_init(&d);
		if (c->workers != d.workers || c->worker_connections != d.worker_connections) {
			snprintf(text, sizeof(text), "Model=fork runs no worker pool (one process per "
				 "connection): Workers= and WorkerConnections= are not used");
			note(userdata, text);
		}
		return;
	}
	if (c->max_connections > 0 && c->max_connections > config_slots(c)) {
		snprintf(text, sizeof(text), "MaxConnections=%u is more than Workers x "
			 "WorkerConnections (%u%s x %u%s): capped at %u", c->max_connections,
			 config_workers(c), c->workers ? "" : " for auto", config_worker_connections(c),
			 c->worker_connections ? "" : " for auto", config_max_connections(c));
		note(userdata, text);
	}
}

size_t
config_activation_ignored(const struct config *c, char *buf, size_t size)
{
	size_t n = 0;

	buf[0] = '\0';
	if (c->n_listen > 0) {
		snprintf(buf, size, "Listen= (%zu address%s)", c->n_listen,
			 c->n_listen == 1 ? "" : "es");
		n++;
	}
	if (c->n_proxy_listen > 0) {
		size_t len = strlen(buf);

		snprintf(buf + len, size - len, "%sProxyListen= (%zu address%s)", n ? ", " : "",
			 c->n_proxy_listen, c->n_proxy_listen == 1 ? "" : "es");
		n++;
	}
	if (c->defer_accept_sec > 0) {
		size_t len = strlen(buf);

		snprintf(buf + len, size - len, "%sDeferAcceptSec=%u", n ? ", " : "",
			 c->defer_accept_sec);
		n++;
	}
	return n;
}

int
config_dump(FILE *f, const struct config *c)
{
	bool fork_model = c->model == MODEL_FORK;
	char cidr[CIDR_TEXT_MAX];

	fprintf(f, "[echod]\n");
	fprintf(f, "Model=%s\n", model_to_string(c->model));
	if (fork_model)
		fprintf(f, "# Model=fork runs no worker pool, one process per connection:\n"
			   "# Workers= and WorkerConnections= are not used.\n"
			   "#Workers=");
	else
		fprintf(f, "Workers=");
	if (c->workers)
		fprintf(f, "%u\n", c->workers);
	else
		fprintf(f, "auto\n# auto: %u here, one per online CPU\n", config_workers(c));
	if (c->worker_connections)
		fprintf(f, "%sWorkerConnections=%u\n", fork_model ? "#" : "", c->worker_connections);
	else
		fprintf(f, "%sWorkerConnections=auto\n# auto: %u here, the open-files limit less %u "
			"(half of it under %u)\n",
			fork_model ? "#" : "", config_worker_connections(c), WORKER_FD_RESERVE,
			2 * WORKER_FD_RESERVE);
	if (fork_model)
		fprintf(f, "# In the fork model MaxConnections= caps the children.\n");
	if (c->max_connections)
		fprintf(f, "MaxConnections=%u\n", c->max_connections);
	else
		fprintf(f, "MaxConnections=\n");
	if (config_max_connections(c) != c->max_connections)
		fprintf(f, "# in effect: %u%s\n", config_max_connections(c),
			fork_model ? " (the fork model's default)"
			: c->max_connections ? " (Workers x WorkerConnections: the workers hold no more)"
			: config_default_max(c) < config_slots(c)
			    ? " (half the fd store, $FDSTORE: what a restart can keep)"
			    : " (Workers x WorkerConnections)");
	fprintf(f, "IdleTimeoutSec=%u\n", c->idle_timeout_sec);
	fprintf(f, "ShutdownTimeoutSec=%u\n", c->shutdown_timeout_sec);
	fprintf(f, "LogLevel=%s\n", log_level_to_string(c->log_level));
	fprintf(f, "DatagramRateLimit=%u\n", c->datagram_rate_limit);
	fprintf(f, "MaxConnectionsPerSource=%u\n", c->max_connections_per_source);
	if (c->access.n_allow == 0)
		fprintf(f, "AllowFrom=\n");
	for (size_t i = 0; i < c->access.n_allow; i++) {
		access_cidr_format(&c->access.allow[i], cidr, sizeof(cidr));
		fprintf(f, "AllowFrom=%s\n", cidr);
	}
	if (c->access.n_deny == 0)
		fprintf(f, "DenyFrom=\n");
	for (size_t i = 0; i < c->access.n_deny; i++) {
		access_cidr_format(&c->access.deny[i], cidr, sizeof(cidr));
		fprintf(f, "DenyFrom=%s\n", cidr);
	}
	fprintf(f, "ConnectionRateLimit=%u\n", c->connection_rate_limit);
	fprintf(f, "DeferAcceptSec=%u\n", c->defer_accept_sec);
	fprintf(f, "# Listen=, ProxyListen= and DeferAcceptSec= are ignored when systemd passes "
		   "the sockets.\n");
	if (c->n_listen == 0)
		fprintf(f, "Listen=\n");
	for (size_t i = 0; i < c->n_listen; i++)
		fprintf(f, "Listen=%s\n", c->listen[i]);
	if (c->n_proxy_listen == 0)
		fprintf(f, "ProxyListen=\n");
	for (size_t i = 0; i < c->n_proxy_listen; i++)
		fprintf(f, "ProxyListen=%s\n", c->proxy_listen[i]);
	if (c->proxy_from.n_allow == 0)
		fprintf(f, "ProxyFrom=\n");
	for (size_t i = 0; i < c->proxy_from.n_allow; i++) {
		access_cidr_format(&c->proxy_from.allow[i], cidr, sizeof(cidr));
		fprintf(f, "ProxyFrom=%s\n", cidr);
	}
	fprintf(f, "ProxyHeaderTimeoutSec=%u\n", c->proxy_header_timeout_sec);
	if (c->socket_mode >= 0)
		fprintf(f, "SocketMode=%04o\n", (unsigned)c->socket_mode);
	else
		fprintf(f, "SocketMode=\n");
	fprintf(f, "MetricsListen=%s\n", c->metrics_listen ? c->metrics_listen : "");
	fprintf(f, "User=%s\n", c->user ? c->user : "");
	fprintf(f, "Group=%s\n", c->group ? c->group : "");
	return ferror(f) ? -EIO : 0;
}
