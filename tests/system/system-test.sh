#!/bin/bash
# The checks poll with "wait_for N eval '...'": single quotes on purpose.
# shellcheck disable=SC2016
#
# echod system test: boot systemd in a container, install the echod .deb,
# and check the package, the units and the daemon under a real PID 1.
#
# Usage: system-test.sh [DEB]
#
#   DEB, or $ECHOD_DEB, is the echod_*.deb to test (CI builds it first). If
#   neither is given, the package is built here from $ECHOD_SOURCE_ROOT (the
#   source tree; meson sets it) with dpkg-buildpackage -b, without checks.
#
#   ECHOD_SYSTEST_FAKE=1 repacks the package with fake-echod.py, a stand-in
#   for the daemon, as /usr/sbin/echod: that tests this script and the units,
#   not echod.
#
# Needs root and systemd-nspawn (package systemd-container); exits 77 (meson's
# "skipped") without them. Follows /work/shared/SYSTEMD-TESTING.md: the
# container boots the machine's own root through an overlay on a tmpfs, so
# nothing it does reaches the real file system, and it has a private network
# (loopback only), so port 7 never collides with the machine's.
#
# Each check is a function check_NAME run by run_check, which prints one
# "PASS: NAME" or "FAIL: NAME" line (with the check's output, indented,
# on failure). A check returns non-zero at its first failed expectation.
# The checks run in order and build on each other (install first, purge
# last); to add one, write check_something and list it in CHECKS.
#
# Exit status: 0 if every check passed, 1 if any failed, 77 if skipped,
# 99 if the container could not be set up.

set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=${ECHOD_SOURCE_ROOT:-$(cd "$HERE/../.." && pwd)}
DEB=${1:-${ECHOD_DEB:-}}
CHANGES=
UP2=
UP3=

CHECKS=(
	install
	security
	activating_datagram
	echo_tcp_ipv4
	echo_tcp_ipv6
	echo_udp_ipv4
	echo_udp_ipv6
	service_status
	status_as_root
	idle_clients_at_defaults
	journal_started
	workers_auto
	reload_workers
	reload_rejected
	worker_crash
	restart_keeps_connections
	restart_broken_config
	stop_drains
	upgrade_keeps_socket
	apt_upgrade_under_load
	autopkgtest
	per_connection
	stop
	remove
	purge
	lintian
)

# Message IDs (catalog/echod.catalog), read from where echod defines them.
message_id() {
	sed -n "s/^#define ECHOD_MESSAGE_$1 \"\([0-9a-f]\{32\}\)\"$/\1/p" "$SRC/src/lib/log.h"
}
MID_STARTED=$(message_id STARTED)
MID_STOPPED=$(message_id STOPPED)
MID_RELOADED=$(message_id RELOADED)
MID_REJECTED=$(message_id RELOAD_REJECTED)
MID_CRASHED=$(message_id WORKER_CRASHED)
MID_CONFIG_KEPT=$(message_id CONFIG_KEPT)
for mid in "$MID_STARTED" "$MID_STOPPED" "$MID_RELOADED" "$MID_REJECTED" "$MID_CRASHED" \
	"$MID_CONFIG_KEPT"; do
	[ ${#mid} -eq 32 ] || { echo "system-test: a MESSAGE_ID missing from $SRC/src/lib/log.h" >&2; exit 99; }
done

EXPOSURE_MAX=15 # tenths, as systemd-analyze --threshold= counts: 1.5

# Progress goes to fd 3, the script's stderr, even from inside a check
# (whose own output is captured and shown only if it fails).
exec 3>&2
log() { printf '%s system-test: %s\n' "$(date +%T)" "$*" >&3; }
skip() { log "SKIP: $*"; exit 77; }

[ "$(id -u)" = 0 ] || skip "needs root"
command -v systemd-nspawn >/dev/null || skip "needs systemd-nspawn (apt-get install systemd-container)"
command -v nsenter >/dev/null || skip "needs nsenter"

WORK=$(mktemp -d /var/tmp/echod-systest.XXXXXX) || exit 99
ROOT=$WORK/root
TMPFS=$WORK/t
NSPAWN=
PID1=

# --- container ------------------------------------------------------------

# Runs a command inside the container, bounded.
ct() {
	timeout 60 nsenter -t "$PID1" -a "$@"
}

# Runs a shell command line inside the container.
ct_sh() {
	ct sh -c "$1"
}

# wait_for SECONDS COMMAND...: polls COMMAND every 0.2 s until it succeeds.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.2
	done
}

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

teardown() {
	local rc=$?
	trap - EXIT INT TERM
	if alive "$NSPAWN"; then
		if alive "$PID1"; then
			log "powering the container off"
			timeout 10 nsenter -t "$PID1" -a systemctl poweroff --no-block >/dev/null 2>&1
		fi
		wait_for 30 eval '! alive "$NSPAWN"' || {
			log "systemd-nspawn did not exit, killing it"
			kill -TERM "$NSPAWN" 2>/dev/null
			wait_for 10 eval '! alive "$NSPAWN"' || {
				kill -KILL "$NSPAWN" 2>/dev/null
				alive "$PID1" && kill -KILL "$PID1" 2>/dev/null
			}
		}
		wait "$NSPAWN" 2>/dev/null
	fi
	for m in "$ROOT" "$TMPFS"; do
		if mountpoint -q "$m"; then
			umount "$m" 2>/dev/null || { sleep 1; umount "$m" 2>/dev/null; } || umount -l "$m"
		fi
	done
	if [ "$rc" -ne 0 ] && [ -s "$WORK/boot.log" ]; then
		log "container console (last lines):"
		tail -n 20 "$WORK/boot.log" | sed 's/^/    /' >&2
	fi
	rm -rf --one-file-system "$WORK"
	exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# copy_source DEST: the source tree as git knows it (or as it is, without
# build directories) into DEST.
copy_source() {
	mkdir -p "$1"
	if git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1; then
		git -C "$SRC" ls-files -z --cached --others --exclude-standard |
			(cd "$SRC" && tar --null -T - -cf -) | tar -xf - -C "$1"
	else
		(cd "$SRC" && tar --exclude='./build*' --exclude='./obj-*' -cf - .) | tar -xf - -C "$1"
	fi
}

# package DIR [dpkg-buildpackage options]: the binary package of the tree
# in DIR, without the test suites; the .deb and .changes land beside DIR.
package() {
	local dir=$1
	shift
	if ! (cd "$dir" && DEB_BUILD_OPTIONS=nocheck timeout 300 \
		dpkg-buildpackage -us -uc -b -Pnocheck "$@") >"$WORK/build.log" 2>&1; then
		tail -n 30 "$WORK/build.log" >&2
		log "package build failed in $dir"
		exit 99
	fi
}

build_deb() {
	local out=$WORK/deb
	log "building the package from $SRC"
	copy_source "$out/src"
	package "$out/src"
	DEB=$(ls "$out"/echod_*.deb)
	CHANGES=$(ls "$out"/echod_*.changes)
}

# changelog_entry DIR VERSION TEXT: a new top entry in DIR's
# debian/changelog (the scratch copy's, never the tree's).
changelog_entry() {
	local f=$1/debian/changelog
	{
		printf 'echod (%s) unstable; urgency=medium\n\n  * %s\n\n' "$2" "$3"
		printf ' -- echod developers <echod@example.org>  %s\n\n' "$(date -R)"
		cat "$f"
	} >"$f.new" && mv "$f.new" "$f"
}

# The packages an upgrade goes to, built from a scratch copy of the same
# tree: $UP2 a newer version (its binary says so: echod --version), $UP3
# newer again with a changed conffile, so that dpkg has a conffile
# question to ask about an administrator's edited /etc/echod/echod.conf.
UP2_VERSION=0.1.0+systest1
UP3_VERSION=0.1.0+systest2
build_upgrades() {
	local out=$WORK/up
	log "building $UP2_VERSION and $UP3_VERSION for the upgrade checks"
	copy_source "$out/src"
	changelog_entry "$out/src" "$UP2_VERSION" "System test: an upgrade."
	sed -i "s/^  version : '[^']*',/  version : '$UP2_VERSION',/" "$out/src/meson.build"
	package "$out/src"
	UP2=$(ls "$out"/echod_"$UP2_VERSION"_*.deb)
	changelog_entry "$out/src" "$UP3_VERSION" "System test: an upgrade with a new conffile."
	printf '# A line added by the package (system test).\n' >>"$out/src/etc/echod.conf"
	package "$out/src" -nc
	UP3=$(ls "$out"/echod_"$UP3_VERSION"_*.deb)
}

boot() {
	mkdir -p "$TMPFS" "$ROOT"
	mount -t tmpfs tmpfs "$TMPFS" || return 1
	mkdir -p "$TMPFS/upper" "$TMPFS/work"
	mount -t overlay overlay -o "lowerdir=/,upperdir=$TMPFS/upper,workdir=$TMPFS/work" "$ROOT" || return 1
	# A build image may carry a policy-rc.d that forbids maintainer scripts
	# to start or stop services (exit 101). Removed in the overlay only, so
	# that the package's scripts run as on an installed system.
	rm -f "$ROOT/usr/sbin/policy-rc.d"

	log "booting the container"
	systemd-nspawn -D "$ROOT" --register=no --keep-unit --boot --console=passive \
		--private-network -M echodtest >"$WORK/boot.log" 2>&1 &
	NSPAWN=$!

	# PID 1 is the child of systemd-nspawn, once it has become systemd.
	find_pid1() {
		local pid kids=()
		alive "$NSPAWN" || return 2
		read -ra kids <"/proc/$NSPAWN/task/$NSPAWN/children" 2>/dev/null
		for pid in "${kids[@]}"; do
			if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = systemd ]; then
				PID1=$pid
				return 0
			fi
		done
		return 1
	}
	wait_for 30 find_pid1 || { log "no systemd in the container"; return 1; }

	booted() {
		local state
		state=$(timeout 10 nsenter -t "$PID1" -a systemctl is-system-running 2>/dev/null)
		case "$state" in
		running | degraded) return 0 ;;
		esac
		return 1
	}
	wait_for 90 booted || { log "the container did not finish booting"; return 1; }
	log "container up: PID 1 is $PID1 ($(ct systemctl is-system-running))"
	if [ "$(ct systemctl is-system-running)" = degraded ]; then
		log "failed units in the container (not echod's):"
		ct systemctl --failed --no-legend --plain >&2
	fi
	cp "$HERE/echo-client.py" "$ROOT/root/echo-client.py"
	cp "$HERE/restart-clients.py" "$ROOT/root/restart-clients.py"
	cp "$HERE/idle-clients.py" "$ROOT/root/idle-clients.py"
	cp "$HERE/connect-loop.py" "$ROOT/root/connect-loop.py"
}

# --- helpers for the checks -------------------------------------------------

expect() {
	local what=$1
	shift
	if ! "$@"; then
		echo "expected: $what"
		return 1
	fi
}

prop() { ct systemctl show -P "$2" "$1"; }

echo_ok() { ct python3 /root/echo-client.py "$@"; }

# A connection to PROTO HOST PORT is refused: not any other error (a
# missing python3 or a timeout is no proof that the port is closed).
refused() {
	local rc=0
	echo_ok "$@" || rc=$?
	[ "$rc" -eq 3 ] || echo "echo-client.py $*: exit status $rc, not 3 (refused)"
	[ "$rc" -eq 3 ]
}

# No process NAME runs in the container: pgrep says 1 for none, 0 when
# one runs, anything else (procps missing: 127) when it could not look.
# NAME is a regular expression the whole comm must match (pgrep -x).
no_process() {
	local rc=0
	ct pgrep -x "$1" || rc=$?
	[ "$rc" -eq 1 ] || echo "pgrep -x $1: exit status $rc"
	[ "$rc" -eq 1 ]
}

main_pid() { prop echod.service MainPID; }

# The supervisor's children: its workers in the prefork and passfd models.
workers() {
	local pid
	pid=$(main_pid)
	[ -n "$pid" ] && [ "$pid" != 0 ] || return 1
	ct ps -o pid= --ppid "$pid" | awk '{ print $1 }'
}

worker_count() { workers | wc -l; }

# journal_has MESSAGE_ID [SINCE]: the message is in echod.service's journal.
journal_has() {
	ct journalctl --no-pager -q -u echod.service ${2:+--since "$2"} \
		"MESSAGE_ID=$1" -o cat | grep -q .
}

set_config() {
	ct_sh "printf '%s\n' '[echod]' $(printf "'%s' " "$@") >/etc/echod/echod.conf"
}

now() { ct date '+%Y-%m-%d %H:%M:%S'; }

# --- checks -------------------------------------------------------------------

# dpkg -i; the postinst enabled and started echod.socket only.
check_install() {
	fs_snapshot /root/fs-before
	cp "$DEB" "$ROOT/root/echod.deb"
	expect "dpkg -i succeeds" ct dpkg -i /root/echod.deb || return 1
	expect "echod.socket enabled" test "$(ct systemctl is-enabled echod.socket)" = enabled || return 1
	expect "echod.socket active" test "$(ct systemctl is-active echod.socket)" = active || return 1
	expect "echod.service not started" test "$(ct systemctl is-active echod.service)" = inactive || return 1
	expect "echod-accept.socket disabled" test "$(ct systemctl is-enabled echod-accept.socket)" = disabled || return 1
	expect "echod-accept.socket not started" test "$(ct systemctl is-active echod-accept.socket)" = inactive || return 1
	expect "the conffile" ct test -f /etc/echod/echod.conf || return 1
	ct_sh 'cp /etc/echod/echod.conf /root/echod.conf.orig'
	expect "man pages installed" ct test -f /usr/share/man/man8/echod.8.gz || return 1
	expect "man pages installed" ct test -f /usr/share/man/man5/echod.conf.5.gz || return 1
	expect "catalog installed" ct test -f /usr/lib/systemd/catalog/echod.catalog || return 1
	expect "catalog entries compiled (systemd's trigger)" \
		ct_sh "journalctl --list-catalog | grep -q '^$MID_STARTED echod:'" || return 1
	expect "systemd-analyze verify of the installed units is silent" \
		test -z "$(ct systemd-analyze verify echod.socket echod.service echod-accept.socket echod-accept@.service 2>&1)"
}

# systemd-analyze security: overall exposure of both services <= 1.5.
check_security() {
	local unit out rc=0
	for unit in echod.service echod-accept@.service; do
		out=$(ct systemd-analyze security --no-pager --threshold=$EXPOSURE_MAX "$unit" 2>&1) || rc=1
		printf '%s\n' "$out" | grep -E '^✗|Overall exposure'
		log "$(printf '%s\n' "$out" | grep 'Overall exposure')"
	done
	return "$rc"
}

# One datagram, sent once, starts echod.service and is echoed: the
# packaged echod.socket passes packet info from the start
# (PassPacketInfo=yes), and echod never takes a datagram that waited in
# the socket before it ran for a broadcast.
check_activating_datagram() {
	expect "echod.service not yet started" test "$(ct systemctl is-active echod.service)" = inactive || return 1
	expect "the activating datagram is echoed" echo_ok udp-once 127.0.0.1 7 || return 1
	expect "echod.service started by it" test "$(ct systemctl is-active echod.service)" = active || return 1
}

# The first connection starts echod.service; echo over each transport.
check_echo_tcp_ipv4() { echo_ok tcp 127.0.0.1 7 1000000; }
check_echo_tcp_ipv6() { echo_ok tcp ::1 7 1000000; }
check_echo_udp_ipv4() { echo_ok udp 127.0.0.1 7; }
check_echo_udp_ipv6() { echo_ok udp ::1 7; }

# Active after activation; STATUS= reaches systemctl status.
check_service_status() {
	local status
	expect "echod.service active" test "$(ct systemctl is-active echod.service)" = active || return 1
	status=$(prop echod.service StatusText)
	echo "StatusText=$status"
	expect "STATUS= like 'prefork: 2/2 workers, 17 connections, 48211 served, 0 refused, gen 3'" \
		grep -Eq '^prefork: [0-9]+/[0-9]+ workers, [0-9]+ connections, [0-9]+ served, [0-9]+ refused' <<<"$status" || return 1
	# STATUS= may move on (counters) between the two reads: match its
	# shape, not the exact text read above.
	expect "systemctl status shows it" \
		ct_sh "systemctl status --no-pager echod.service | grep -Eq 'Status: \"prefork: [0-9]+/[0-9]+ workers'"
}

# echod status as root under the packaged unit (DynamicUser=, its
# runtime directory 0700): the table and the JSON, and the served count
# of the echo checks above.
check_status_as_root() {
	local out
	out=$(ct echod status) || { echo "echod status failed: $out"; return 1; }
	echo "$out"
	expect "echod status shows the prefork model" grep -q '^echod prefork model' <<<"$out" || return 1
	expect "and served connections" grep -Eq '^served: [1-9][0-9]* connections' <<<"$out" || return 1
	expect "echod status --json is one JSON object" \
		ct_sh "echod status --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[\"model\"] == \"prefork\" and d[\"served\"] > 0'"
}

# The packaged unit and echod.conf, untouched: 10,000 idle clients are all
# served at once (not left in the listen backlog), then each is echoed.
check_idle_clients_at_defaults() {
	local out rc=0
	out=$(ct python3 /root/idle-clients.py 127.0.0.1 7 10000 echod status --json 2>&1) || rc=$?
	echo "$out"
	log "idle clients: $(printf '%s\n' "$out" | tr '\n' ' ')"
	expect "10000 idle clients held and echoed" test "$rc" = 0
}

# The start-up message, with its structured fields and catalog text.
check_journal_started() {
	local v
	v=$(ct journalctl --no-pager -u echod.service -o verbose "MESSAGE_ID=$MID_STARTED")
	expect "a start-up message with ECHOD_MODEL=prefork" grep -q '^ *ECHOD_MODEL=prefork$' <<<"$v" || {
		ct journalctl --no-pager -u echod.service | tail -n 20
		return 1
	}
	expect "journalctl -x explains it with the catalog" \
		ct_sh "journalctl --no-pager -x -u echod.service MESSAGE_ID=$MID_STARTED | grep -q 'Subject: echod started'"
}

# Workers=auto: one worker per online CPU.
check_workers_auto() {
	local cpus
	cpus=$(ct getconf _NPROCESSORS_ONLN)
	expect "$cpus workers" wait_for 10 eval '[ "$(worker_count)" = "$cpus" ]' || {
		echo "workers: $(workers | tr '\n' ' ')"
		return 1
	}
}

# systemctl reload applies a new Workers=.
check_reload_workers() {
	local since pid
	since=$(now)
	pid=$(main_pid)
	set_config Workers=3
	expect "systemctl reload succeeds" ct systemctl reload echod.service || return 1
	expect "3 workers after the reload" wait_for 15 eval '[ "$(worker_count)" = 3 ]' || {
		echo "workers: $(workers | tr '\n' ' ')"
		return 1
	}
	expect "the same supervisor" test "$(main_pid)" = "$pid" || return 1
	expect "the 'reloaded' message" wait_for 5 journal_has "$MID_RELOADED" "$since" || return 1
	expect "STATUS= says 3/3 workers" wait_for 5 eval 'prop echod.service StatusText | grep -q "3/3 workers"' || return 1
	echo_ok tcp 127.0.0.1 7
}

# A broken configuration makes systemctl reload fail; echod keeps serving.
check_reload_rejected() {
	local since pid rc=0
	since=$(now)
	pid=$(main_pid)
	set_config Workers=3 NoSuchKey=1
	if ct systemctl reload echod.service; then
		echo "expected: systemctl reload fails on an unknown key"
		rc=1
	fi
	expect "still active" test "$(ct systemctl is-active echod.service)" = active || rc=1
	expect "the same supervisor" test "$(main_pid)" = "$pid" || rc=1
	expect "the 'reload rejected' message" wait_for 5 journal_has "$MID_REJECTED" "$since" || rc=1
	expect "still 3 workers" test "$(worker_count)" = 3 || rc=1
	expect "still echoing" echo_ok tcp 127.0.0.1 7 || rc=1
	set_config Workers=3
	return "$rc"
}

# kill -9 of a worker: logged, replaced, the service stays up.
check_worker_crash() {
	local since pid victim
	since=$(now)
	pid=$(main_pid)
	victim=$(workers | head -n 1)
	expect "a worker to kill" test -n "$victim" || return 1
	ct kill -KILL "$victim"
	expect "the 'worker crashed' message" wait_for 10 journal_has "$MID_CRASHED" "$since" || return 1
	expect "a new worker in its place" wait_for 10 eval '[ "$(worker_count)" = 3 ] && ! workers | grep -qx "$victim"' || return 1
	expect "still active" test "$(ct systemctl is-active echod.service)" = active || return 1
	expect "the same supervisor" test "$(main_pid)" = "$pid" || return 1
	echo_ok tcp 127.0.0.1 7
}

# restart-clients.py in the background: busy connections to port 7.
CLIENTS_DIR=/root/clients
CLIENTS=200

start_clients() {
	ct_sh "rm -rf $CLIENTS_DIR && mkdir $CLIENTS_DIR && setsid sh -c 'python3 /root/restart-clients.py \
		127.0.0.1 7 $CLIENTS $CLIENTS_DIR >$CLIENTS_DIR/out 2>&1; echo \$? >$CLIENTS_DIR/rc' \
		</dev/null >/dev/null 2>&1 &"
	wait_for 60 ct test -f "$CLIENTS_DIR/ready"
}

# Tells the clients to finish; succeeds if every byte of every connection
# came back.
finish_clients() {
	ct touch "$CLIENTS_DIR/stop"
	wait_for 150 ct test -f "$CLIENTS_DIR/rc" || { echo "the clients did not finish"; return 1; }
	ct cat "$CLIENTS_DIR/out"
	log "clients: $(ct head -n 1 "$CLIENTS_DIR/out")"
	test "$(ct cat "$CLIENTS_DIR/rc")" = 0
}

# The hand-over lines of echod.service's journal since $1.
kept_lines() {
	ct journalctl --no-pager -q -u echod.service --since "$1" -o cat |
		grep -E 'restart: (keeping|stored|took back)'
}

# took_back_all SINCE WHAT: the echod started since SINCE took back every
# client's connection from systemd's fd store (and a connect loop's, if
# one was open just then); the hand-over lines are shown and logged.
took_back_all() {
	local lines took_since=$1
	# eval runs inside wait_for, where $1 is not ours: a local it sees.
	expect "the new echod took back all $CLIENTS connections" wait_for 10 eval \
		'[ "$(kept_lines "$took_since" | sed -n "s/^restart: took back \([0-9]*\) .*/\1/p")" -ge $CLIENTS ] 2>/dev/null' || {
		kept_lines "$took_since"
		return 1
	}
	lines=$(kept_lines "$took_since")
	printf '%s\n' "$lines"
	log "$2: $(printf '%s\n' "$lines" | grep -E 'keeping|took back' | tr '\n' ' ')"
}

# restart_once SINCE MODEL: systemctl restart while the clients are busy; the
# new echod (of MODEL) took back every connection.
restart_once() {
	local since=$1 pid lines
	pid=$(main_pid)
	expect "systemctl restart succeeds" ct systemctl restart echod.service || return 1
	expect "a new supervisor" test "$(main_pid)" != "$pid" || return 1
	took_back_all "$since" "restart" || return 1
	expect "the $2 model" test "$(prop echod.service StatusText | cut -d: -f1)" = "$2" || return 1
	# Served again: the clients echo through the new echod for a while.
	sleep 2
}

# reload_once MODEL: systemctl reload into MODEL while the clients are busy,
# then longer than the old workers' ShutdownTimeoutSec= (1 s): connections
# they had drained instead of giving back would be cut by now.
reload_once() {
	expect "systemctl reload succeeds" ct systemctl reload echod.service || return 1
	expect "the $1 model" test "$(prop echod.service StatusText | cut -d: -f1)" = "$1" || return 1
	sleep 3
}

# systemctl restart three times under 200 busy clients (some owing bytes):
# every connection goes through systemd's fd store and back, and not one
# byte is lost; then across models by restart (prefork to passfd to fork to
# prefork), and by reloads that change the model, with a drain too short
# for any client to survive it.
check_restart_keeps_connections() {
	local since i rc=0
	expect "$CLIENTS clients busy" start_clients || { ct cat "$CLIENTS_DIR/out"; return 1; }
	for i in 1 2 3; do
		since=$(now)
		echo "restart $i (prefork)"
		restart_once "$since" prefork || { finish_clients; return 1; }
	done
	expect "bytes owed were kept" eval \
		'ct journalctl --no-pager -q -u echod.service -o cat | grep -E "took back $CLIENTS connection\(s\) from systemd.s fd store, [1-9][0-9]* of them owing" >/dev/null' || rc=1
	for m in passfd fork fork prefork; do
		set_config Workers=3 Model=$m ShutdownTimeoutSec=1
		since=$(now)
		echo "restart into $m"
		restart_once "$since" $m || rc=1
	done
	since=$(now)
	set_config Workers=3 Model=passfd ShutdownTimeoutSec=1
	echo "reload into passfd"
	reload_once passfd || rc=1
	set_config Workers=3 ShutdownTimeoutSec=1
	echo "reload into prefork"
	reload_once prefork || rc=1
	ct journalctl --no-pager -q -u echod.service --since "$since" -o cat | grep -E 'reload|kept across'
	expect "every client byte-exact through it all" finish_clients || rc=1
	expect "the fd store is empty" test "$(prop echod.service NFileDescriptorStore)" = 0 || rc=1
	set_config Workers=3
	ct systemctl reload echod.service
	return "$rc"
}

# systemctl restart after a broken edit of echod.conf: the new echod runs
# the configuration the old one kept in the fd store, so every busy
# client's connection survives, and says why (journal, Status:) until a
# reload with the file fixed; a second restart keeps it again.
check_restart_broken_config() {
	local since i rc=0 CLIENTS=20
	# shellcheck disable=SC2034 # read by the eval below
	local note="configuration file rejected, running the previous one: /etc/echod/echod.conf:3: Workers=lots"
	expect "$CLIENTS clients busy" start_clients || { ct cat "$CLIENTS_DIR/out"; return 1; }
	set_config Workers=3 Workers=lots
	for i in 1 2; do
		since=$(now)
		echo "restart $i with a broken file"
		restart_once "$since" prefork || rc=1
		expect "Status: names the file, line and key" eval \
			'[[ "$(prop echod.service StatusText)" == *"$note"* ]]' || rc=1
		expect "the 'previous configuration' message" \
			wait_for 5 journal_has "$MID_CONFIG_KEPT" "$since" || rc=1
		expect "still 3 workers, as before the edit" test "$(worker_count)" = 3 || rc=1
	done
	log "broken file: Status: $(prop echod.service StatusText)"
	set_config Workers=3
	expect "systemctl reload succeeds with the file fixed" ct systemctl reload echod.service || rc=1
	expect "the note is gone" eval '[[ "$(prop echod.service StatusText)" != *rejected* ]]' || rc=1
	expect "every client byte-exact" finish_clients || rc=1
	return "$rc"
}

# A plain systemctl stop is no restart: busy clients are let finish
# (drained within ShutdownTimeoutSec=), nothing goes to the fd store.
check_stop_drains() {
	local since rc=0 CLIENTS=5
	expect "$CLIENTS clients busy" start_clients || { ct cat "$CLIENTS_DIR/out"; return 1; }
	since=$(now)
	expect "systemctl stop succeeds" ct systemctl stop --no-block echod.service || rc=1
	expect "workers drain the clients' connections" wait_for 10 eval \
		'ct journalctl --no-pager -q -u echod.service --since "$since" -o cat | grep "^stopping: finishing [0-9]* connection" >/dev/null' || rc=1
	expect "every client byte-exact" finish_clients || rc=1
	expect "echod.service stopped" wait_for 20 eval '[ "$(ct systemctl is-active echod.service)" = inactive ]' || rc=1
	expect "the stop helper saw a stop" eval \
		'ct journalctl --no-pager -q -u echod.service --since "$since" -o cat | grep "^stop: echod drains" >/dev/null' || rc=1
	expect "nothing kept" eval '[ -z "$(kept_lines "$since")" ]' || rc=1
	ct journalctl --no-pager -q -u echod.service --since "$since" -o cat
	return "$rc"
}

# Installing the package again (the upgrade path of the maintainer scripts)
# must keep echod.socket listening throughout and restart a running service.
check_upgrade_keeps_socket() {
	local inv pid was_active
	inv=$(prop echod.socket InvocationID)
	pid=$(main_pid)
	was_active=$(ct systemctl is-active echod.service)
	expect "dpkg -i over the installed package succeeds" ct dpkg -i /root/echod.deb || return 1
	expect "echod.socket active" test "$(ct systemctl is-active echod.socket)" = active || return 1
	expect "echod.socket not restarted" test "$(prop echod.socket InvocationID)" = "$inv" || return 1
	if [ "$was_active" = active ]; then
		expect "echod.service restarted" wait_for 30 eval \
			'[ "$(ct systemctl is-active echod.service)" = active ] && [ "$(main_pid)" != "$pid" ]' || return 1
	fi
	echo_ok tcp 127.0.0.1 7
}

# --- apt upgrade under load ----------------------------------------------------

LOOP_DIR=/root/connect-loop

# A client that connects anew every 10 ms and counts refusals.
start_connect_loop() {
	ct_sh "rm -rf $LOOP_DIR && mkdir $LOOP_DIR && setsid sh -c 'python3 /root/connect-loop.py \
		127.0.0.1 7 $LOOP_DIR >$LOOP_DIR/out 2>&1; echo \$? >$LOOP_DIR/rc' \
		</dev/null >/dev/null 2>&1 &"
	wait_for 30 ct test -f "$LOOP_DIR/ready"
}

finish_connect_loop() {
	ct touch "$LOOP_DIR/stop"
	wait_for 30 ct test -f "$LOOP_DIR/rc" || { echo "the connect loop did not finish"; return 1; }
	ct cat "$LOOP_DIR/out"
	log "connect loop: $(ct cat "$LOOP_DIR/out")"
	test "$(ct cat "$LOOP_DIR/rc")" = 0
}

# apt_install ARGS...: as an unattended upgrade does it. The conffile
# question is answered as --force-confdef --force-confold answer it (what
# unattended-upgrades passes; dpkg would otherwise stop at the prompt with
# no terminal to ask): an administrator's edited file is kept.
apt_install() {
	ct env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

installed_version() { ct dpkg-query -W -f='${Version}' echod; }

# upgrade_to DEB VERSION [apt options]: installs DEB over the running echod;
# the package's own maintainer scripts restart echod.service, and the new
# echod took back every client's connection from systemd's fd store.
upgrade_to() {
	local deb=$1 version=$2 since pid exe lines socket
	shift 2
	since=$(now)
	pid=$(main_pid)
	socket=$(prop echod.socket InvocationID)
	echo "apt-get install $deb ($version)"
	expect "apt-get install succeeds" apt_install "$@" "$deb" || return 1
	expect "version $version installed" test "$(installed_version)" = "$version" || return 1
	expect "a new supervisor" test "$(main_pid)" != "$pid" || return 1
	expect "echod.socket listened throughout (same invocation)" \
		test "$(prop echod.socket InvocationID)" = "$socket" || return 1
	took_back_all "$since" "upgrade to $version" || return 1
	# The new binary serves: the running file is the installed one, not
	# the old one unlinked under it, and it says the new version.
	exe=$(ct readlink "/proc/$(main_pid)/exe")
	expect "echod runs /usr/sbin/echod as installed (not $exe)" test "$exe" = /usr/sbin/echod || return 1
	expect "echod --version says ${version%%-*}" eval \
		'ct /usr/sbin/echod --version | grep -qF "${EXPECT_BINARY_VERSION:-$version}"' || return 1
	expect "STATUS= live" eval \
		'prop echod.service StatusText | grep -Eq "^prefork: [0-9]+/[0-9]+ workers, [0-9]+ connections"' || return 1
	sleep 2
}

# apt-get install of a newer package while 200 clients echo (one in ten
# not reading, so echod owes them bytes) and another client connects anew
# every 10 ms: no byte lost, no connection cut, not one connect refused.
# Then a newer one again whose conffile changed while the administrator's
# copy was edited too (kept), then a downgrade back to the tree's version.
check_apt_upgrade_under_load() {
	local rc=0
	cp "$UP2" "$ROOT/root/echod-up2.deb" && cp "$UP3" "$ROOT/root/echod-up3.deb" || return 1
	set_config Workers=3
	ct systemctl start echod.service
	expect "echod.service active" wait_for 10 eval '[ "$(ct systemctl is-active echod.service)" = active ]' || return 1
	ct_sh 'cp /etc/echod/echod.conf /root/echod.conf.admin'
	expect "$CLIENTS clients busy" start_clients || { ct cat "$CLIENTS_DIR/out"; return 1; }
	expect "the connect loop runs" start_connect_loop || { ct cat "$LOOP_DIR/out"; return 1; }
	upgrade_to /root/echod-up2.deb "$UP2_VERSION" || rc=1
	if [ "$rc" = 0 ]; then
		EXPECT_BINARY_VERSION=$UP2_VERSION upgrade_to /root/echod-up3.deb "$UP3_VERSION" || rc=1
		expect "the administrator's echod.conf kept" \
			ct cmp /etc/echod/echod.conf /root/echod.conf.admin || rc=1
		expect "the package's new one beside it" ct test -f /etc/echod/echod.conf.dpkg-dist || rc=1
	fi
	if [ "$rc" = 0 ]; then
		EXPECT_BINARY_VERSION=$(ct dpkg-deb -f /root/echod.deb Version) \
			upgrade_to /root/echod.deb "$(ct dpkg-deb -f /root/echod.deb Version)" --allow-downgrades ||
			rc=1
	fi
	expect "every client byte-exact, none disconnected" finish_clients || rc=1
	expect "no connect refused or failed" finish_connect_loop || rc=1
	expect "the fd store is empty" test "$(prop echod.service NFileDescriptorStore)" = 0 || rc=1
	ct rm -f /etc/echod/echod.conf.dpkg-dist
	return "$rc"
}

# What Debian's CI runs: autopkgtest, with the package's own debian/tests,
# against the built .deb, in this booted container (the null runner: the
# container is the testbed, so isolation-container is met).
check_autopkgtest() {
	local out
	rm -rf "$ROOT/root/src" && copy_source "$ROOT/root/src" || return 1
	# Not ct's 60 s: the null runner first tries apt-get update, which
	# waits on a network the container does not have.
	out=$(timeout 300 nsenter -t "$PID1" -a autopkgtest --ignore-restrictions=isolation-container \
		/root/echod.deb /root/src/ -- null 2>&1)
	local rc=$?
	printf '%s\n' "$out" | grep -v -E '^(Ign|Err|W):|Temporary failure' | tail -n 40
	printf '%s\n' "$out" | grep -E '^echo-service ' >&3
	expect "autopkgtest passed" test "$rc" = 0 || return 1
	expect "echo-service PASS" eval 'printf "%s\n" "$out" | grep -Eq "^echo-service +PASS"'
}

# echod-accept.socket: one echod per connection, which exits 0.
check_per_connection() {
	local failed
	expect "echod-accept.socket starts" ct systemctl start echod-accept.socket || return 1
	expect "echo over IPv4 on port 7008" echo_ok tcp 127.0.0.1 7008 || return 1
	expect "echo over IPv6 on port 7008" echo_ok tcp ::1 7008 || return 1
	expect "the instances exit" wait_for 10 eval \
		'[ -z "$(ct systemctl list-units --no-legend --plain --state=active,activating "echod-accept@*")" ]' || return 1
	failed=$(ct systemctl list-units --no-legend --plain --all --state=failed 'echod-accept@*')
	expect "no failed instance" test -z "$failed" || {
		echo "$failed"
		ct journalctl --no-pager -u 'echod-accept@*' | tail -n 20
		return 1
	}
	ct systemctl stop echod-accept.socket
}

# systemctl stop: a clean exit (status 0), the 'stopped' message, port 7 closed.
check_stop() {
	local since
	since=$(now)
	expect "systemctl stop succeeds" ct systemctl stop echod.socket echod.service || return 1
	expect "echod.service inactive, not failed" test "$(ct systemctl is-active echod.service)" = inactive || return 1
	expect "echod.socket inactive" test "$(ct systemctl is-active echod.socket)" = inactive || return 1
	expect "exit status 0" test "$(prop echod.service ExecMainStatus)" = 0 || return 1
	expect "Result=success" test "$(prop echod.service Result)" = success || return 1
	expect "the 'stopped' message" journal_has "$MID_STOPPED" "$since" || return 1
	expect "port 7 closed" refused tcp 127.0.0.1 7
}

# What piuparts compares: every path of the system's own trees (the
# container's root is the machine's, so not the machine's work trees, nor
# /proc, /run and /tmp) but those that change on their own (logs, caches,
# apt's, dpkg's and systemd's state), into the file $1 in the container.
fs_snapshot() {
	ct_sh "find /etc /usr /var /opt /srv -xdev \\( -path /var/tmp -o -path /var/log -o -path /var/cache -o -path /var/lib/apt \
		-o -path /var/lib/dpkg -o -path /var/lib/systemd -o -path /root -o -path /var/backups \
		-o -path /etc/ld.so.cache -o -path /usr/lib/systemd/catalog/database \
		-o -path '/usr/lib/python3*/__pycache__' -o -path '*/__pycache__' \\) -prune \
		-o -print | LC_ALL=C sort >$1"
}

# apt-get remove: the daemon and its units go, echod.socket stops, the
# administrator's configuration stays.
check_remove() {
	expect "apt-get remove succeeds" ct env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q echod || return 1
	ct systemctl daemon-reload
	expect "package removed, config kept (rc)" eval \
		'[ "$(ct dpkg-query -W -f="\${db:Status-Abbrev}" echod)" = "rc " ]' || return 1
	expect "no /usr/sbin/echod" eval '! ct test -e /usr/sbin/echod' || return 1
	expect "/etc/echod/echod.conf kept" ct test -f /etc/echod/echod.conf || return 1
	expect "echod.socket gone" eval '[ "$(ct systemctl is-active echod.socket)" != active ]' || return 1
	expect "port 7 closed" refused tcp 127.0.0.1 7
}

# apt-get purge leaves nothing behind: piuparts' check, by hand (piuparts
# would need a chroot of its own and a network mirror): the file system
# as it was before the package was installed, no unit, no dynamic user,
# nothing in /run, no fd store, no process.
check_purge() {
	local rc=0 left
	expect "apt-get purge succeeds" ct env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q echod || return 1
	ct systemctl daemon-reload
	expect "the package is gone from dpkg's database" eval '! ct dpkg-query -W echod >/dev/null 2>&1' || rc=1
	fs_snapshot /root/fs-after
	# Other services of the machine's image run in the container too: their
	# state under /var/lib is theirs, and only echod's is looked at there.
	left=$(ct diff /root/fs-before /root/fs-after | grep -E '^[<>] ' |
		grep -Ev '^[<>] /var/lib/' ; ct diff /root/fs-before /root/fs-after |
		grep -E '^[<>] /var/lib/.*echod')
	expect "the file system as before the install (piuparts-style)" test -z "$left" || {
		echo "$left"
		rc=1
	}
	left=$(ct_sh 'ls -d /run/echod /var/lib/private/echod /var/lib/systemd/deb-systemd-helper-enabled/echod* \
		/var/lib/systemd/deb-systemd-helper-enabled/*/echod* 2>/dev/null')
	expect "nothing in /run or systemd's state" test -z "$left" || { echo "$left"; rc=1; }
	left=$(ct systemctl list-units --no-legend --plain --all 'echod*')
	expect "no units loaded" test -z "$left" || { echo "$left"; rc=1; }
	expect "no fd store (the unit is gone)" eval \
		'[ "$(prop echod.service NFileDescriptorStore)" = 0 ]' || rc=1
	expect "no echod user" eval '! ct getent passwd echod >/dev/null' || rc=1
	expect "no catalog entries" eval "! ct_sh 'journalctl --list-catalog | grep -q \" echod:\"'" || rc=1
	# comm: "echod" (supervisor), "echod worker", "echod forker" and
	# "echod conn" (fork).
	expect "no echod processes" no_process 'echod( worker| forker| conn)?' || rc=1
	return "$rc"
}

# lintian, as Debian's archive runs it, pedantic included, on the .changes
# (or the .deb when only that was given): no error, no warning.
check_lintian() {
	local target=${CHANGES:-$DEB} out
	out=$(lintian --pedantic --display-info --fail-on error,warning "$target" 2>&1)
	local rc=$?
	printf '%s\n' "$out"
	log "lintian on $(basename "$target"): $(printf '%s\n' "$out" | grep -c '^[EW]:') error(s)/warning(s)"
	expect "lintian --pedantic: no error or warning" test "$rc" = 0
}

# --- main ---------------------------------------------------------------------

run_check() {
	local name=$1 out=$WORK/check.out rc
	log "check $name"
	"check_$name" >"$out" 2>&1
	rc=$?
	if [ "$rc" -eq 0 ]; then
		echo "PASS: $name"
	else
		echo "FAIL: $name"
		sed 's/^/    /' "$out"
		FAILED+=("$name")
	fi
}

if [ -z "$DEB" ]; then
	build_deb
fi
[ -f "$DEB" ] || { log "no such package: $DEB"; exit 99; }
DEB=$(realpath "$DEB")
[ -n "$CHANGES" ] || CHANGES=$(find "$(dirname "$DEB")" -maxdepth 1 -name 'echod_*.changes' | sort | head -n 1)
build_upgrades
if [ "${ECHOD_SYSTEST_FAKE:-0}" = 1 ]; then
	log "ECHOD_SYSTEST_FAKE=1: replacing echod with fake-echod.py in the package"
	dpkg-deb -R "$DEB" "$WORK/fake" &&
		install -m 0755 "$HERE/fake-echod.py" "$WORK/fake/usr/sbin/echod" &&
		sed -i '/ usr\/sbin\/echod$/d' "$WORK/fake/DEBIAN/md5sums" &&
		dpkg-deb -b "$WORK/fake" "$WORK/echod-fake.deb" >/dev/null || exit 99
	DEB=$WORK/echod-fake.deb
fi
log "testing $DEB"

boot || exit 99

FAILED=()
for check in "${CHECKS[@]}"; do
	run_check "$check"
done

echo "${#CHECKS[@]} checks, $((${#CHECKS[@]} - ${#FAILED[@]})) passed, ${#FAILED[@]} failed${FAILED[*]:+: ${FAILED[*]}}"
[ "${#FAILED[@]}" -eq 0 ]
