/* echod: decides what this process is (per-connection server, supervisor,
 * or a one-shot command) from the command line and the inherited fds. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include "address.h"
#include "config.h"
#include "listen.h"
#include "log.h"
#include "options.h"
#include "peerproc.h"
#include "privdrop.h"
#include "proctitle.h"
#include "reload.h"
#include "report.h"
#include "restart.h"
#include "scoreboard.h"
#include "supervisor.h"
#include "worker.h"

#define EXIT_USAGE 2
#define RUNTIME_DIR_DEFAULT "/run/echod"

/* --runtime-dir, else systemd's RuntimeDirectory=; NULL: none. */
static const char *
runtime_dir(const struct options *o)
{
	const char *dir = o->runtime_dir ? o->runtime_dir : getenv("RUNTIME_DIRECTORY");

	return dir && *dir ? dir : NULL;
}

/* echod status: reads the running instance's scoreboard, never writes. */
static int
show_status(const struct options *o)
{
	const char *dir = runtime_dir(o) ? runtime_dir(o) : RUNTIME_DIR_DEFAULT;
	struct scoreboard sb;
	struct scoreboard_snapshot snap;
	int r;

	r = scoreboard_open(&sb, dir);
	if (r == -ENOENT || r == -ESRCH) {
		log_error("no echod runs with runtime directory %s (%s/%s: %s)", dir, dir,
			  SCOREBOARD_FILE, r == -ENOENT ? "no such file" : "its supervisor is gone");
		return EXIT_FAILURE;
	}
	if (r == -EACCES || r == -EPERM) {
		log_error("%s/%s: permission denied (echod's runtime directory is readable by "
			  "its owner and root)", dir, SCOREBOARD_FILE);
		return EXIT_FAILURE;
	}
	if (r == -EBADMSG) {
		log_error("%s/%s: not a scoreboard this echod %s can read", dir, SCOREBOARD_FILE,
			  ECHOD_VERSION);
		return EXIT_FAILURE;
	}
	if (r < 0) {
		log_error("%s/%s: %s", dir, SCOREBOARD_FILE, strerror(-r));
		return EXIT_FAILURE;
	}
	r = scoreboard_snapshot(&sb, &snap);
	scoreboard_free(&sb);
	if (r < 0) {
		log_error("%s/%s: no steady reading: %s", dir, SCOREBOARD_FILE, strerror(-r));
		return EXIT_FAILURE;
	}
	r = o->json ? report_json(stdout, &snap) : report_text(stdout, &snap);
	scoreboard_snapshot_free(&snap);
	if (r < 0) {
		log_error("writing the status: %s", strerror(errno));
		return EXIT_FAILURE;
	}
	return EXIT_SUCCESS;
}

/* The file read_configuration() reads, and whether it was there. */
static const char *
config_path(const struct options *o)
{
	return o->config_path ? o->config_path : CONFIG_DEFAULT_PATH;
}

static int
read_configuration_from(const struct options *o, struct config *c, struct config_error *err,
			bool *ret_file_read)
{
	int r;

	r = config_load_file(c, config_path(o), err);
	*ret_file_read = r != -ENOENT;
	/* Only the default file may be absent: a named one is a promise. */
	if (r == -ENOENT && !o->config_path)
		r = 0;
	if (r >= 0)
		r = options_apply(o, c, err);
	if (r >= 0)
		r = config_validate(c, config_path(o), err);
	return r;
}

/* Defaults, then the file, then the command line. Used at start-up and
 * by the supervisor on every reload. */
static int
read_configuration(void *userdata, struct config *c, struct config_error *err)
{
	bool file_read;

	return read_configuration_from(userdata, c, err, &file_read);
}

/* A restart after a broken edit of the file: the previous echod kept the
 * configuration it ran in systemd's fd store, and going on with it (then
 * the command line) keeps the connections the restart kept, which a
 * failed start would lose. broken: why the file was refused. Logs either
 * way; on success *note says it for STATUS=. Returns 0, -ENOENT when
 * nothing was kept, or another negative errno. */
static int
recover_configuration(const struct options *o, struct config *c, const char *broken, char *note,
		      size_t note_size)
{
	struct config_error err = {{0}};
	int r;

	config_done(c);
	config_init(c);
	r = restart_config_load(c, &err);
	if (r == 0)
		return -ENOENT;
	if (r > 0)
		r = options_apply(o, c, &err);
	if (r >= 0)
		r = config_validate(c, RESTART_CONFIG_ORIGIN, &err);
	if (r < 0) {
		log_error("%s; and %s", broken, err.message);
		return r;
	}
	log_struct(LOG_ERR, ECHOD_MESSAGE_CONFIG_KEPT,
		   "%s; restarted with the configuration the previous echod ran, so that the "
		   "connections it kept stay open: fix the file, then systemctl reload echod",
		   broken);
	snprintf(note, note_size, "configuration file rejected, running the previous one: %s",
		 broken);
	return 0;
}

/* The configuration to start with; *note (empty: none) is for STATUS=. */
static int
load_configuration(const struct options *o, struct config *c, bool *ret_file_read, char *note,
		   size_t note_size)
{
	struct config_error err = {{0}};
	int r;

	config_init(c);
	note[0] = '\0';
	r = read_configuration_from(o, c, &err, ret_file_read);
	if (r >= 0)
		return r;
	/* A command that only reads the file says what is wrong with it. */
	if (o->check_config || o->dump_config ||
	    recover_configuration(o, c, err.message, note, note_size) == -ENOENT)
		log_error("%s", err.message);
	return note[0] ? 0 : r;
}

static void
print_note(void *userdata, const char *note)
{
	printf("note: %s\n", note);
}

static void
log_note(void *userdata, const char *note)
{
	log_notice("%s", note);
}

/* --check-config: the file, the verdict, and what the keys will not do. */
static void
check_config(const struct options *o, const struct config *c, bool file_read)
{
	const char *proxy_note = c->n_proxy_listen ? " (some for the PROXY protocol)" : "";
	char ignored[192];

	if (file_read)
		printf("configuration file: %s\n", config_path(o));
	else
		printf("configuration file: no file: defaults (%s does not exist)\n",
		       config_path(o));
	if (c->model == MODEL_FORK)
		printf("configuration OK: fork model, up to %u connection process(es), %zu listen "
		       "address(es)%s\n", config_max_connections(c), c->n_listen + c->n_proxy_listen,
		       proxy_note);
	else
		printf("configuration OK: %s model, %u worker(s), up to %u connection(s), %zu "
		       "listen address(es)%s\n", model_to_string(c->model), config_workers(c),
		       config_max_connections(c), c->n_listen + c->n_proxy_listen, proxy_note);
	config_notes(c, print_note, NULL);
	if (config_activation_ignored(c, ignored, sizeof(ignored)) > 0)
		printf("note: under socket activation (echod.socket) these are ignored: %s; the "
		       "socket unit's ListenStream=/ListenDatagram= decide (see echod(8))\n",
		       ignored);
	else
		printf("note: under socket activation (echod.socket) Listen=, ProxyListen= and "
		       "DeferAcceptSec= are ignored: the socket unit decides\n");
}

/* The $MAINPID a one-shot command was given, or -1 (said so). */
static long
parse_pid(const char *option, const char *text)
{
	char *end;
	long pid;

	errno = 0;
	pid = strtol(text, &end, 10);
	if (errno || *end || pid <= 1) {
		log_error("%s %s: not a process id", option, text);
		return -1;
	}
	return pid;
}

/* Whether pid is an echod supervisor (peerproc_is_supervisor()'s
 * answers). /proc says, when it shows the process. Under the packaged
 * unit's ProtectProc=invisible, though, ExecReload= runs in a user
 * namespace of its own and /proc hides the supervisor from it: then the
 * runtime directory's scoreboard, which names the supervisor that keeps
 * it, says. */
static int
check_supervisor(pid_t pid, const char *runtime_dir)
{
	struct scoreboard sb;
	pid_t keeper;
	int r = peerproc_is_supervisor(pid);

	if (r != -ESRCH || !runtime_dir || kill(pid, 0) < 0)
		return r;
	if (scoreboard_open(&sb, runtime_dir) < 0)
		return r;
	keeper = sb.header->supervisor;
	scoreboard_free(&sb);
	return keeper == pid ? 0 : -EMEDIUMTYPE;
}

/* ExecReload=echod --reload $MAINPID: asks the running supervisor to
 * reload and waits for the outcome, so `systemctl reload` fails when the
 * new configuration is rejected. */
static int
request_reload(const char *pid_text)
{
	char message[RELOAD_MESSAGE_MAX] = "";
	long pid = parse_pid("--reload", pid_text);
	int r;

	if (pid < 0)
		return EXIT_USAGE;
	r = check_supervisor((pid_t)pid, getenv("RUNTIME_DIRECTORY"));
	if (r < 0) {
		log_error("--reload %ld: %s; not signalled", pid,
			  r == -EMEDIUMTYPE ? "not an echod process"
			  : r == -ECHILD    ? "an echod worker, not the supervisor"
			  : r == -ESRCH     ? "no such process"
					    : strerror(-r));
		return EXIT_FAILURE;
	}
	r = reload_request((pid_t)pid, getenv("RUNTIME_DIRECTORY"), 30000, message,
			   sizeof(message));
	if (r < 0) {
		log_error("reload of echod (pid %ld) failed: %s", pid,
			  message[0] ? message : strerror(-r));
		return EXIT_FAILURE;
	}
	log_info("reload of echod (pid %ld): %s", pid, message[0] ? message : "done");
	return EXIT_SUCCESS;
}

/* ExecStop=+echod --before-stop $MAINPID: tells the supervisor, when this
 * stop is part of a restart, to keep its connections in the fd store
 * instead of draining them. Never fails the stop. */
static int
before_stop(const char *pid_text)
{
	long pid = parse_pid("--before-stop", pid_text);

	if (pid < 0)
		return EXIT_USAGE;
	restart_announce((pid_t)pid);
	return EXIT_SUCCESS;
}

/* Each connection holds an fd: the soft limit (often 1024) would cap a
 * worker far below WorkerConnections=. */
static void
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_warning_errno(errno, "raising the open-files limit: %m");
	}
}

/* systemd's Accept=yes (LISTEN_FDS=1, a connected socket) or inetd's
 * StandardInput=socket: one connection, served here, then exit; proxy:
 * named "proxy", from a balancer, a PROXY header first. */
static int
serve_one_connection(const struct config *c, int fd, bool proxy)
{
	char peer[128];

	address_format_peer(fd, peer, sizeof(peer));
	proctitle_set("echod conn", PROCTITLE_CONNECTION, peer);
	struct worker_setup setup = {
	    .config = c,
	    .slot = -1,
	    .channel = -1,
	    .returns = -1,
	    .intake = INTAKE_ONE,
	    .connection = fd,
	    .connection_proxy = proxy,
	    .connection_owed_fd = -1,
	};
	return worker_run(&setup);
}

static int
bind_list(char *const *list, size_t n, bool proxy, int socket_mode, struct listen_set *set)
{
	for (size_t i = 0; i < n; i++) {
		struct listen_address a;
		char reason[256];
		mode_t umask_was = 0;
		bool path;
		int r;

		/* Already validated when the configuration was read. */
		if (address_parse(list[i], &a, reason, sizeof(reason)) < 0) {
			log_error("cannot listen on %s", reason);
			return -1;
		}
		/* SocketMode=: the umask bind() applies, so that the file
		 * never exists with a wider mode, even for a moment. */
		path = a.sa.ss_family == AF_UNIX && ((struct sockaddr_un *)&a.sa)->sun_path[0];
		if (path && socket_mode >= 0)
			umask_was = umask(~(mode_t)socket_mode & 0777);
		r = listen_bind(set, list[i], &a, proxy, reason, sizeof(reason));
		if (path && socket_mode >= 0)
			umask(umask_was);
		if (r < 0) {
			log_error("cannot listen on %s%s", reason, proxy ? " (ProxyListen=)" : "");
			return -1;
		}
	}
	return 0;
}

/* User=, Group=: once the sockets are bound and before anything is
 * forked, so that no worker or connection process ever runs as root.
 * Only root can switch; anyone else runs as they are (under systemd the
 * unit's User=/DynamicUser= decides). Returns an exit status, or -1 to go
 * on. */
static int
drop_privileges(const struct config *c)
{
	struct privdrop p;
	char reason[256];

	if (!c->user)
		return -1;
	if (geteuid() != 0) {
		log_notice("User=%s: not started as root, so running as uid %u as started", c->user,
			   (unsigned)geteuid());
		return -1;
	}
	if (privdrop_resolve(c->user, c->group, &p, reason, sizeof(reason)) < 0) {
		log_error("%s", reason);
		return EXIT_USAGE;
	}
	if (privdrop_apply(&p, reason, sizeof(reason)) < 0) {
		log_error("dropping root for User=%s: %s", c->user, reason);
		return EXIT_FAILURE;
	}
	log_info("running as user %s (uid %u, gid %u)", p.name[0] ? p.name : c->user,
		 (unsigned)p.uid, (unsigned)p.gid);
	return -1;
}

static int
bind_configured(const struct config *c, struct listen_set *set)
{
	if (bind_list(c->listen, c->n_listen, false, c->socket_mode, set) < 0)
		return -1;
	return bind_list(c->proxy_listen, c->n_proxy_listen, true, c->socket_mode, set);
}

static int
run(const struct config *c, const struct options *o, const char *status_note)
{
	struct listen_set sockets = {0};
	char reason[256];
	int n, status;

	n = listen_from_systemd(&sockets, reason, sizeof(reason));
	if (n < 0) {
		log_error("%s", reason);
		return EXIT_FAILURE;
	}
	/* Known only now: ProxyFrom= is as required as with ProxyListen=. */
	if (listen_set_count_proxy(&sockets) > 0 && c->proxy_from.n_allow == 0) {
		log_error("systemd passed a socket named \"" LISTEN_PROXY_NAME "\" (a proxy "
			  "listener) but ProxyFrom= lists no balancer: set ProxyFrom= in %s",
			  o->config_path ? o->config_path : CONFIG_DEFAULT_PATH);
		listen_set_free(&sockets, false);
		return EXIT_USAGE;
	}
	if (n == 1 && sockets.items[0].kind == SOCKET_CONNECTED) {
		int fd = sockets.items[0].fd;
		bool proxy = sockets.items[0].proxy;
		free(sockets.items);
		status = drop_privileges(c);
		return status >= 0 ? status : serve_one_connection(c, fd, proxy);
	}
	if (listen_set_count(&sockets, SOCKET_CONNECTED) > 0) {
		log_error("systemd passed a connected socket among %d sockets: per-connection "
			  "mode (Accept=yes) takes exactly one",
			  n);
		listen_set_free(&sockets, false);
		return EXIT_FAILURE;
	}
	if (n > 0 && config_activation_ignored(c, reason, sizeof(reason)) > 0)
		log_notice("sockets come from systemd: ignored: %s; change the socket unit "
			   "instead (systemctl edit echod.socket)", reason);
	config_notes(c, log_note, NULL);
	if (n == 0) {
		size_t wanted = c->n_listen + c->n_proxy_listen;

		if (wanted == 0 && listen_classify(STDIN_FILENO) == SOCKET_CONNECTED) {
			status = drop_privileges(c);
			return status >= 0 ? status : serve_one_connection(c, STDIN_FILENO, false);
		}
		if (wanted == 0) {
			log_error("no sockets: not started by systemd socket activation (LISTEN_FDS "
				  "unset) and no --listen/Listen= address given");
			return EXIT_FAILURE;
		}
		if (bind_configured(c, &sockets) < 0) {
			listen_set_free(&sockets, true);
			return EXIT_FAILURE;
		}
	}
	for (size_t i = 0; i < sockets.n; i++)
		log_info("listening on %s%s%s", sockets.items[i].kind == SOCKET_DATAGRAM ? "udp:" : "",
			 sockets.items[i].name,
			 sockets.items[i].proxy ? " (PROXY protocol)" : "");
	status = drop_privileges(c);
	if (status >= 0) {
		listen_set_free(&sockets, true);
		return status;
	}
	return supervisor_run(c, &sockets, read_configuration, (void *)o, runtime_dir(o),
			      status_note[0] ? status_note : NULL);
}

int
main(int argc, char **argv)
{
	struct options o;
	struct config c;
	struct config_error err = {{0}};
	char status_note[600];
	bool file_read;
	int status;

	/* Before anything keeps a pointer into argv (the options do). */
	proctitle_init(argc, argv);
	config_check_names_with(privdrop_name_exists);
	if (options_parse(argc, argv, &o, &err) < 0) {
		log_error("%s", err.message);
		return EXIT_USAGE;
	}
	if (o.help) {
		options_print_help();
		return EXIT_SUCCESS;
	}
	if (o.version) {
		printf("echod %s\n", ECHOD_VERSION);
		return EXIT_SUCCESS;
	}
	if (o.reload_pid)
		return request_reload(o.reload_pid);
	if (o.before_stop_pid)
		return before_stop(o.before_stop_pid);
	if (o.status)
		return show_status(&o);
	if (load_configuration(&o, &c, &file_read, status_note, sizeof(status_note)) < 0) {
		config_done(&c);
		return EXIT_USAGE;
	}
	log_set_max_level(c.log_level);
	if (c.group && !c.user) {
		log_error("Group=%s without User=: echod would stay root; set User= too", c.group);
		config_done(&c);
		return EXIT_USAGE;
	}
	if (o.check_config || o.dump_config) {
		if (o.check_config)
			check_config(&o, &c, file_read);
		if (o.dump_config) {
			printf("# echod --dump-config: %s%s, then the command line\n",
			       file_read ? "file " : "no file: defaults; ", config_path(&o));
			status = config_dump(stdout, &c);
		} else
			status = 0;
		config_done(&c);
		return fflush(stdout) == 0 && status == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
	}
	raise_fd_limit();
	status = run(&c, &o, status_note);
	config_done(&c);
	return status;
}
