#!/bin/bash
# run-bench.sh: measure echod's three models, the one-core reference server
# and the classic inetd-style echo services in one run, on loopback, and
# write the raw lines, a markdown table and a plot. See README.md.
#
# Every server is started in its own session on a free high port, and
# stopped (and its whole process group killed if need be) after its runs
# and on any exit of this script. All loops and waits are bounded.

set -u
set -o pipefail

usage() {
	cat <<EOF
Usage: run-bench.sh [options]

Measures echod (prefork, passfd, fork), the reference server (refserver;
ref-split, which accepts in one process and echoes in another, the floor
of passfd's design), the process-per-connection reference (forkref; forkref-libs, which maps
echod's libraries; forkref-split, which accepts with them and forks
without) and, when installed, xinetd, openbsd-inetd and socat, in modes
rr, crr, crr8, bulk, hold and udp; servers alternate round-robin across
repetitions and the table shows medians, with ratios to the reference
measured in the same run, and the server's CPU time per operation (its
whole process tree, in a cgroup of its own), which the scheduler does not
distort as it does throughput on a few shared cores.

Options:
  --build DIR        build directory the defaults below are taken from (build)
  --echod PATH       echod executable (DIR/src/echod)
  --echod-before PATH
                     a second echod (say, the build before a change),
                     measured as prefork-before, passfd-before and
                     fork-before, alternating with the rest in the same
                     run; without --servers these join the default list
  --bench PATH       echod-bench executable (DIR/tests/bench/echod-bench)
  --refserver PATH   refserver executable (DIR/tests/bench/refserver)
  --forkref PATH     forkref executable (DIR/tests/bench/forkref); forkref-libs
                     is taken from beside it (forkref-split runs both)
  --xinetd PATH      xinetd executable (from PATH; skipped if absent)
  --inetd PATH       openbsd-inetd's inetd (from PATH; skipped if absent)
  --socat PATH       socat executable (from PATH; skipped if absent)
  --out DIR          results directory (DIR/bench-results)
  -r, --reps N       repetitions, median taken (3; at least 3 unless --smoke)
  -d, --duration S   seconds per measured run (3)
  --hold N           connections for hold, echod prefork/passfd and the
                     reference (10000)
  --hold-proc N      connections for hold on servers with a process per
                     connection: echod fork, forkref, xinetd, inetd, socat (1000;
                     0 skips hold for them)
  --servers LIST     comma-separated subset of:
                     ref,ref-split,prefork,passfd,fork,forkref,
                     forkref-libs,forkref-split,xinetd,inetd,socat
  --modes LIST       comma-separated subset of rr,crr,crr8,bulk,udp,hold (all);
                     e.g. --servers fork,xinetd --modes crr for a quick
                     look at the per-connection cost
  --server-cpus LIST
                     run every server on these CPUs only (taskset -c LIST,
                     e.g. 0): its processes and all they fork
  --client-cpus LIST run echod-bench on these CPUs only (e.g. 1); with
                     --server-cpus, client and server stop competing for a
                     core, which on some VMs changes what a fork() costs
  --smoke            CI mode: 0.5 s runs, 1 repetition, small hold, only the
                     reference and echod; fails unless every run of a server
                     that started reported errors=0
  --require-echod    also fail if an echod model does not start (for when
                     echod exists; without it that is only a warning)
  --tap              report each run as a TAP test line on stdout (an echod
                     model that does not start is a SKIP), the table on
                     stderr: what meson's bench-smoke test reads
  -h, --help         this text
EOF
}

BUILD=build
ECHOD='' ECHOD_BEFORE='' SERVERS_GIVEN=0 BENCH='' REFSERVER='' FORKREF='' OUT=''
XINETD=$(command -v xinetd || true)
INETD=$(command -v inetd || true)
SOCAT=$(command -v socat || true)
REPS=3
SECS=3
HOLD=10000
HOLD_PROC=1000
HOLD_IDLE=1
SERVERS=ref,ref-split,prefork,passfd,fork,forkref,forkref-libs,forkref-split,xinetd,inetd,socat
MODES=rr,crr,crr8,bulk,udp,hold
SERVER_CPUS='' CLIENT_CPUS=''
SMOKE=0
REQUIRE_ECHOD=0
TAP=0
TAP_N=0

die() {
	echo "run-bench.sh: $*" >&2
	exit 2
}

while [ $# -gt 0 ]; do
	case $1 in
	--build) BUILD=${2:?}; shift ;;
	--echod) ECHOD=${2:?}; shift ;;
	--echod-before) ECHOD_BEFORE=${2:?}; shift ;;
	--bench) BENCH=${2:?}; shift ;;
	--refserver) REFSERVER=${2:?}; shift ;;
	--forkref) FORKREF=${2:?}; shift ;;
	--xinetd) XINETD=${2:?}; shift ;;
	--inetd) INETD=${2:?}; shift ;;
	--socat) SOCAT=${2:?}; shift ;;
	--out) OUT=${2:?}; shift ;;
	-r | --reps) REPS=${2:?}; shift ;;
	-d | --duration) SECS=${2:?}; shift ;;
	--hold) HOLD=${2:?}; shift ;;
	--hold-proc) HOLD_PROC=${2:?}; shift ;;
	--servers) SERVERS=${2:?} SERVERS_GIVEN=1; shift ;;
	--modes) MODES=${2:?}; shift ;;
	--server-cpus) SERVER_CPUS=${2:?}; shift ;;
	--client-cpus) CLIENT_CPUS=${2:?}; shift ;;
	--smoke) SMOKE=1 ;;
	--require-echod) REQUIRE_ECHOD=1 ;;
	--tap) TAP=1 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
	shift
done

: "${ECHOD:=$BUILD/src/echod}" "${BENCH:=$BUILD/tests/bench/echod-bench}"
: "${REFSERVER:=$BUILD/tests/bench/refserver}" "${OUT:=$BUILD/bench-results}"
: "${FORKREF:=$BUILD/tests/bench/forkref}"
FORKREF_LIBS=$FORKREF-libs

if [ -n "$ECHOD_BEFORE" ] && [ $SERVERS_GIVEN = 0 ]; then
	SERVERS=ref,ref-split,prefork,prefork-before,passfd,passfd-before,fork,fork-before,forkref,forkref-libs,forkref-split,xinetd,inetd,socat
fi
if [ $SMOKE = 1 ]; then
	REPS=1 SECS=0.5 HOLD=200 HOLD_PROC=50 HOLD_IDLE=0.2
	SERVERS=ref,ref-split,prefork,passfd,fork,forkref,forkref-split
fi
[[ $REPS =~ ^[0-9]+$ && $REPS -ge 1 && $REPS -le 50 ]] || die "bad repetition count '$REPS'"
[ $SMOKE = 1 ] || [ "$REPS" -ge 3 ] || die "medians need at least 3 repetitions"
[[ $SECS =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "bad duration '$SECS'"
[[ $HOLD =~ ^[0-9]+$ && $HOLD_PROC =~ ^[0-9]+$ ]] || die "bad hold count"
[[ ,$MODES, =~ ^(,(rr|crr|crr8|bulk|udp|hold))+,$ ]] || die "bad mode list '$MODES'"
[ -x "$BENCH" ] || die "no echod-bench at $BENCH (build first, or pass --bench)"
# taskset -c LIST (util-linux), or nothing; checked here, not in the first run.
SERVER_PIN=() CLIENT_PIN=()
if [ -n "$SERVER_CPUS" ]; then
	taskset -c "$SERVER_CPUS" true 2>/dev/null || die "bad --server-cpus '$SERVER_CPUS' (taskset -c says no)"
	SERVER_PIN=(taskset -c "$SERVER_CPUS")
fi
if [ -n "$CLIENT_CPUS" ]; then
	taskset -c "$CLIENT_CPUS" true 2>/dev/null || die "bad --client-cpus '$CLIENT_CPUS' (taskset -c says no)"
	CLIENT_PIN=(taskset -c "$CLIENT_CPUS")
fi
[ -x "$REFSERVER" ] || die "no refserver at $REFSERVER (build first, or pass --refserver)"
mkdir -p "$OUT/logs" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
RAW=$OUT/raw.txt
CONF=$OUT/conf
mkdir -p "$CONF"
rm -f "$RAW" "$OUT/results.md" "$OUT/ratios.dat" "$OUT/results.svg" "$OUT"/logs/*.log
: >"$RAW"

# A held connection is a descriptor here and one in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)
if [[ $NOFILE =~ ^[0-9]+$ ]]; then
	for v in HOLD HOLD_PROC; do
		if [ "${!v}" -gt $((NOFILE - 100)) ]; then
			echo "run-bench.sh: RLIMIT_NOFILE is $NOFILE: hold lowered from ${!v} to $((NOFILE - 100))" >&2
			printf -v "$v" '%s' $((NOFILE - 100))
		fi
	done
fi

# Bound for one echod-bench run: its own limits (--timeout 10 per connect,
# request and drain) plus room for hold's connect and echo phases.
RUN_LIMIT=$((${SECS%.*} + 90))

SERVER_PID=
START_ERROR=
declare -A FAILED=() NOTE=()

# Returns once the process group of $1 is gone; TERM first so servers can
# drain and reap, KILL for whatever is left after 10 s.
stop_server() {
	local pid=$1 i

	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	# Children of fork-per-connection servers share the group.
	kill -TERM -- "-$pid" 2>/dev/null
	for ((i = 0; i < 50; i++)); do
		kill -0 -- "-$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL -- "-$pid" 2>/dev/null
	return 0
}

# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
	if [ -n "$SERVER_PID" ]; then
		stop_server "$SERVER_PID"
		SERVER_PID=
	fi
	remove_cgroup
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# CPU time per operation: the server runs in a cgroup of its own, which
# counts every process of its tree, fork children and exited workers
# included (a sum over /proc would miss what exited between two looks).
# cgroup v1's cpuacct, else v2's cpu.stat; without either the CPU columns
# say "-". CG_HOME is where this shell was, to go back to.
CG='' CG_HOME='' CG_KIND=''
setup_cgroup() {
	local base rel

	for base in /sys/fs/cgroup/cpuacct /sys/fs/cgroup/unified /sys/fs/cgroup; do
		[ -f "$base/cgroup.procs" ] || continue
		if [ -f "$base/cpuacct.usage" ]; then
			CG_KIND=v1 rel=$(sed -n 's/^[0-9]*:[^:]*\bcpuacct\b[^:]*://p' /proc/self/cgroup)
		else
			CG_KIND=v2 rel=$(sed -n 's/^0:://p' /proc/self/cgroup)
		fi
		CG_HOME=$base${rel%/}
		CG=$base/echod-bench-$$
		if mkdir -p "$CG" 2>/dev/null && [ -w "$CG/cgroup.procs" ] &&
			{ [ -f "$CG/cpuacct.usage" ] || [ -f "$CG/cpu.stat" ]; }; then
			return 0
		fi
		rmdir "$CG" 2>/dev/null
		CG=
	done
	echo "run-bench.sh: no cgroup to measure servers' CPU in; CPU columns will say -" >&2
	return 0
}

# The CPU the server's cgroup has used so far, in microseconds.
cpu_us() {
	if [ -z "$CG" ]; then
		echo -
	elif [ "$CG_KIND" = v1 ]; then
		echo $(($(cat "$CG/cpuacct.usage") / 1000))
	else
		sed -n 's/^usage_usec //p' "$CG/cpu.stat"
	fi
}

# shellcheck disable=SC2317 # invoked by cleanup(), the trap
remove_cgroup() {
	[ -n "$CG" ] && rmdir "$CG" 2>/dev/null
	return 0
}

# free_port, listening
# shellcheck disable=SC1091 # ports.sh, beside this script, is checked on its own
. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

# An echod server's model: prefork-before is the --echod-before build's
# prefork.
model_of() {
	echo "${1%-before}"
}

echod_of() {
	case $1 in *-before) echo "$ECHOD_BEFORE" ;; *) echo "$ECHOD" ;; esac
}

is_echod() {
	case $(model_of "$1") in prefork | passfd | fork) return 0 ;; esac
	return 1
}

# echod with a pool of workers: each mode gets a server of its own, whose
# workers log, as they exit, how many connections each served; the spread
# of those is the fairness figure.
per_mode() {
	case $(model_of "$1") in prefork | passfd) return 0 ;; esac
	return 1
}

# Servers with a process per connection get the smaller hold.
per_process() {
	case $(model_of "$1") in fork | forkref | forkref-libs | forkref-split | xinetd | inetd | socat) return 0 ;; esac
	return 1
}

server_label() {
	case $1 in
	ref) echo "reference" ;;
	ref-split) echo "reference, split" ;;
	forkref) echo "fork reference" ;;
	forkref-libs) echo "fork reference + echod's libraries" ;;
	forkref-split) echo "fork reference, split" ;;
	prefork | passfd | fork) echo "echod $1" ;;
	*-before) echo "echod $(model_of "$1") (before)" ;;
	*) echo "$1" ;;
	esac
}

# socat and forkref are started for TCP only; openbsd-inetd drops every datagram from
# 127.0.0.0/8 (dg_badinput(), an anti-spoofing rule), so its UDP echo
# cannot be measured on loopback. Only the modes asked for (--modes).
modes_of() {
	local m

	for m in rr crr crr8 bulk udp hold; do
		[[ ,$MODES, == *,$m,* ]] || continue
		case $1:$m in socat:udp | inetd:udp | forkref*:udp) continue ;; esac
		echo "$m"
	done
}

# Checks that a server can be tried at all; prints why not.
unavailable() {
	case $1 in
	ref | ref-split) [ -x "$REFSERVER" ] || echo "no refserver" ;;
	forkref) [ -x "$FORKREF" ] || echo "no forkref at $FORKREF" ;;
	forkref-libs) [ -x "$FORKREF_LIBS" ] || echo "no forkref-libs at $FORKREF_LIBS" ;;
	forkref-split) [ -x "$FORKREF" ] && [ -x "$FORKREF_LIBS" ] || echo "no forkref and forkref-libs beside it at $FORKREF" ;;
	prefork | passfd | fork) [ -x "$ECHOD" ] || echo "no echod at $ECHOD" ;;
	prefork-before | passfd-before | fork-before)
		[ -n "$ECHOD_BEFORE" ] && [ -x "$ECHOD_BEFORE" ] || echo "no --echod-before executable"
		;;
	xinetd) [ -n "$XINETD" ] && [ -x "$XINETD" ] || echo "not installed" ;;
	inetd)
		if [ -z "$INETD" ] || [ ! -x "$INETD" ]; then
			echo "not installed"
		elif ! command -v unshare >/dev/null || ! unshare --mount true 2>/dev/null; then
			echo "needs a private mount namespace (unshare) for its port; not available"
		fi
		;;
	socat) [ -n "$SOCAT" ] && [ -x "$SOCAT" ] || echo "not installed" ;;
	*) echo "unknown server" ;;
	esac
}

write_xinetd_conf() {
	local port=$1 f=$CONF/xinetd.conf

	# xinetd's defaults (cps = 50 10: more than 50 connections in a second
	# disables the service for 10 s) would refuse nearly everything here.
	cat >"$f" <<EOF
defaults
{
	instances	= UNLIMITED
	per_source	= UNLIMITED
	cps		= 1000000 1
	log_type	= FILE $OUT/logs/xinetd-service.log
}
service echo
{
	id		= echo-stream
	type		= INTERNAL UNLISTED
	socket_type	= stream
	protocol	= tcp
	port		= $port
	bind		= 127.0.0.1
	wait		= no
	user		= root
}
service echo
{
	id		= echo-dgram
	type		= INTERNAL UNLISTED
	socket_type	= dgram
	protocol	= udp
	port		= $port
	bind		= 127.0.0.1
	wait		= yes
	user		= root
}
EOF
	echo "$f"
}

# inetd's internal services take their port from /etc/services by name, so
# inetd runs in a private mount namespace where "echo" is the high port.
write_inetd_conf() {
	local port=$1

	grep -v -E '^echo[[:space:]]' /etc/services >"$CONF/services" 2>/dev/null
	printf 'echo\t\t%s/tcp\necho\t\t%s/udp\n' "$port" "$port" >>"$CONF/services"
	# .N: at most N spawns a minute; the default, 256, stops the service
	# for ten minutes the moment crr starts.
	cat >"$CONF/inetd.conf" <<EOF
127.0.0.1:echo	stream	tcp	nowait.100000000	root	internal
127.0.0.1:echo	dgram	udp	wait.100000000	root	internal
EOF
}

# Starts server $1 on port $2 in its own session; sets SERVER_PID. The
# backgrounded command must stay a simple command: then setsid is not a
# group leader, does not fork, and its pid is the server's and its group's.
launch() {
	local s=$1 port=$2 log=$3 cmd

	case $s in
	ref) cmd=("$REFSERVER" -p "$port") ;;
	ref-split) cmd=("$REFSERVER" -p "$port" -s) ;;
	forkref) cmd=("$FORKREF" -p "$port") ;;
	forkref-libs) cmd=("$FORKREF_LIBS" -p "$port") ;;
	forkref-split) cmd=("$FORKREF_LIBS" -p "$port" -s "$FORKREF") ;;
	prefork | passfd | fork | prefork-before | passfd-before | fork-before)
		cmd=("$(echod_of "$s")" --listen "127.0.0.1:$port" --listen "udp:127.0.0.1:$port"
			-m "$(model_of "$s")" -w 2 --config /dev/null
			# info: the workers' "exiting: served N connection(s)"
			# lines, for fairness; nothing is logged per connection.
			--log-level "$(per_mode "$s" && echo info || echo warning)"
			# One client address sends every datagram: measure the echo,
			# not the per-source limit that protects victims.
			--datagram-rate-limit 0
			# hold opens 10,000 and more: the default 4096 per worker
			# (8192 in all with two) would keep the rest in the backlog.
			--worker-connections 65536)
		;;
	xinetd) cmd=("$XINETD" -dontfork -f "$(write_xinetd_conf "$port")") ;;
	inetd)
		write_inetd_conf "$port"
		# shellcheck disable=SC2016 # expanded by that sh
		cmd=(unshare --mount --propagation private sh -c
			'mount --bind "$1" /etc/services && exec "$2" -i -q 4096 "$3"'
			sh "$CONF/services" "$INETD" "$CONF/inetd.conf")
		;;
	socat)
		# Bound to loopback; socat's default backlog of 5 would make crr
		# measure SYN retransmission, not socat.
		cmd=("$SOCAT" "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork,backlog=4096" PIPE)
		;;
	esac
	echo "--- $(date -u +%T) ${cmd[*]}" >>"$log"
	# Forked from inside the server's cgroup, so that it and every process
	# it forks count there; this shell goes back at once.
	[ -n "$CG" ] && echo "$BASHPID" >"$CG/cgroup.procs"
	setsid "${SERVER_PIN[@]}" "${cmd[@]}" </dev/null >>"$log" 2>&1 &
	SERVER_PID=$!
	[ -n "$CG" ] && echo "$BASHPID" >"$CG_HOME/cgroup.procs"
}

# Starts a server and waits (5 s at most) for it to listen. Returns 1 if
# it does not, with the reason in START_ERROR. Not to be run in a
# subshell: SERVER_PID must reach the caller.
start_server() {
	local s=$1 port=$2 log=$3 i status

	launch "$s" "$port" "$log"
	for ((i = 0; i < 50; i++)); do
		if ! kill -0 "$SERVER_PID" 2>/dev/null; then
			wait "$SERVER_PID"
			status=$?
			SERVER_PID=
			START_ERROR="exited with status $status before listening"
			return 1
		fi
		listening "$port" && return 0
		sleep 0.1
	done
	stop_server "$SERVER_PID"
	SERVER_PID=
	START_ERROR="not listening on port $port after 5 s"
	return 1
}

bench_args() {
	local s=$1 mode=$2 n

	case $mode in
	rr) echo "-m rr -c 64 -s 64 -d $SECS" ;;
	# One source address, and each client resets its connection once
	# the echo is verified: closed with a FIN, every connection left a
	# TIME_WAIT socket on the client's side, and with tens of thousands
	# of them connect() spent so long finding a port that the client set
	# the rate (every server, the reference too, ran either ~14,000/s or
	# ~19,000/s, by how many earlier runs' sockets were still waiting).
	# More sources would do too, but with four xinetd's small accept
	# queue overflowed into 1-7 s SYN retransmissions.
	crr) echo "-m crr -c 64 -s 64 -d $SECS --close rst" ;;
	# Few at once: each arrival tends to find its server asleep, so what
	# a wakeup costs shows (a supervisor's and a worker's, in passfd).
	crr8) echo "-m crr -c 8 -s 64 -d $SECS --close rst" ;;
	bulk) echo "-m bulk -c 4 -d $SECS" ;;
	udp) echo "-m udp -c 16 -w 8 -s 64 -d $SECS" ;;
	hold)
		n=$HOLD
		per_process "$s" && n=$HOLD_PROC
		[ "$n" -gt 0 ] || return 1
		echo "-m hold -c $n -s 64 -d $HOLD_IDLE --sources 4 --server-pid $SERVER_PID"
		;;
	esac
}

# Adds to the last line of raw.txt how evenly the workers of the server
# just stopped shared the connections: served=N/N/... from the lines they
# logged as they exited (in the last part of log $1, since its launch)
# and fairness=max/mean, 1.00 being an even share. Only if that line is
# the run of server $2, repetition $3, mode $4.
add_fairness() {
	local log=$1 served fairness

	tail -n 1 "$RAW" | grep -q "^server=$2 rep=$3 mode=$4 " || return 0
	served=$(awk '/^--- / { n = 0; delete v }
		/: worker [0-9]+: exiting: served [0-9]+ connection/ {
			for (i = 1; i < NF; i++) if ($i == "served") v[n++] = $(i + 1) }
		END { for (i = 0; i < n; i++) printf "%s%s", i ? "/" : "", v[i] }' "$log")
	[ -n "$served" ] || return 0
	fairness=$(awk -v s="$served" 'BEGIN {
		n = split(s, v, "/"); for (i = 1; i <= n; i++) { t += v[i]; if (v[i] > m) m = v[i] }
		if (t > 0) printf "%.2f", m * n / t }')
	[ -n "$fairness" ] || return 0
	sed -i "\$ s|\$| served=$served fairness=$fairness|" "$RAW"
}

# One echod-bench run; appends its result line, tagged, to raw.txt. A run
# that prints no result (crash, time limit) is recorded as failed.
run_one() {
	local s=$1 rep=$2 port=$3 mode=$4 args line rc cpu_before cpu_after

	args=$(bench_args "$s" "$mode") || return 0
	cpu_before=$(cpu_us)
	# shellcheck disable=SC2086 # args is a list of options
	line=$(timeout -k 5 "$RUN_LIMIT" "${CLIENT_PIN[@]}" "$BENCH" -H 127.0.0.1 -p "$port" $args \
		2>>"$OUT/logs/bench.log")
	rc=$?
	cpu_after=$(cpu_us)
	line=$(printf '%s\n' "$line" | grep '^mode=' | tail -n 1)
	# echod-bench calls crr8 crr; the report tells them apart by name.
	[ "$mode" = crr8 ] && line=${line/#mode=crr /mode=crr8 }
	if [ -z "$line" ]; then
		line="mode=$mode errors=1 status=no-result exit=$rc"
	elif [ "$cpu_before" != - ]; then
		line="$line $(cpu_fields "$line" $((cpu_after - cpu_before)))"
	fi
	echo "server=$s rep=$rep $line" >>"$RAW"
	printf '  %-8s %-5s %s\n' "$s" "$mode" "$(summary "$line")" >&2
	if [[ $line == *" errors=0 "* ]]; then
		tap ok "$(server_label "$s") $mode: $(summary "$line")"
	else
		tap "not ok" "$(server_label "$s") $mode: $(summary "$line")"
	fi
}

# cpu_us=N for the run, and per operation: cpu_op_us (a request, a
# connection, a datagram echoed) or, for bulk, cpu_mb_us (a MB echoed).
cpu_fields() { # cpu_fields RESULT-LINE CPU-MICROSECONDS
	awk -v l="$1" -v c="$2" 'BEGIN {
		n = split(l, f, " ")
		for (i = 1; i <= n; i++) { split(f[i], kv, "="); v[kv[1]] = kv[2] }
		printf "cpu_us=%d", c
		if (v["mode"] == "bulk" && v["mbps"] * v["secs"] > 0)
			printf " cpu_mb_us=%.1f", c / (v["mbps"] * v["secs"])
		else if (v["mode"] != "hold" && v["ops"] > 0)
			printf " cpu_op_us=%.2f", c / v["ops"]
	}'
}

tap() { # tap ok|"not ok" DESCRIPTION
	[ $TAP = 1 ] || return 0
	TAP_N=$((TAP_N + 1))
	echo "$1 $TAP_N - $2"
}

field() { # field KEY < lines
	sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p"
}

summary() {
	local l=$1 v

	case $l in
	*mode=bulk*) v="$(field mbps <<<"$l") MB/s" ;;
	*mode=hold*) v="held $(field held <<<"$l") echoed $(field echoed <<<"$l") rss $(field rss_kb <<<"$l") kB" ;;
	*) v="$(field rate <<<"$l")/s p99 $(field p99_us <<<"$l") us" ;;
	esac
	echo "$v errors=$(field errors <<<" $l")"
}

# Median of field KEY over the runs of server S in mode M; "-" if none.
median() {
	local s=$1 m=$2 key=$3

	grep "^server=$s .* mode=$m " "$RAW" | grep -v 'status=no-result' | field "$key" |
		sort -g | awk '{ v[NR] = $1 } END {
			if (NR == 0) { print "-"; exit }
			if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# The lowest and highest of field KEY over those runs: the spread.
extreme() { # extreme min|max S M KEY
	grep "^server=$2 .* mode=$3 " "$RAW" | grep -v 'status=no-result' | field "$4" |
		sort -g | awk -v w="$1" '{ v[NR] = $1 } END {
			if (NR == 0) print "-"; else print (w == "min" ? v[1] : v[NR]) }'
}

errors_of() {
	grep "^server=$1 " "$RAW" | field errors | awk '{ e += $1 } END { print e + 0 }'
}

ratio() { # ratio VALUE REFERENCE
	awk -v v="$1" -v r="$2" 'BEGIN {
		if (v == "-" || r == "-" || r + 0 == 0) print "-"; else printf "%.2f\n", v / r }'
}

fmt() { # fmt VALUE DECIMALS
	awk -v v="$1" -v d="$2" 'BEGIN { if (v == "-") print "-"; else printf "%.*f\n", d, v }'
}

# --- the runs ---------------------------------------------------------------

IFS=, read -r -a WANTED <<<"$SERVERS"
ACTIVE=()
for s in "${WANTED[@]}"; do
	why=$(unavailable "$s")
	if [ -n "$why" ]; then
		NOTE[$s]="skipped: $why"
		echo "run-bench.sh: $(server_label "$s"): $why; skipped" >&2
	else
		ACTIVE+=("$s")
	fi
done
[ ${#ACTIVE[@]} -gt 0 ] || die "no server to measure"

setup_cgroup
NCPU=$(nproc)
# What one fork+exit+wait costs here, for reading the per-process servers'
# crr numbers (virtual machines differ widely).
FORK_US=$(TIMEFORMAT=%R; { time (for ((i = 0; i < 200; i++)); do (:); done); } 2>&1 |
	awk '{ printf "%.0f", $1 * 1e6 / 200 }')
echo "run-bench.sh: client and server share this machine's $NCPU cores;" \
	"$REPS repetition(s) of ${SECS}s runs; results in $OUT" >&2

for ((rep = 1; rep <= REPS; rep++)); do
	# Round-robin, each repetition starting one server later, so no server
	# always runs first (cold caches) or last (a warm, tired machine).
	n=${#ACTIVE[@]}
	for ((k = 0; k < n; k++)); do
		s=${ACTIVE[$(((k + rep - 1) % n))]}
		[ -n "${FAILED[$s]:-}" ] && continue
		log=$OUT/logs/$s.log
		groups=("$(modes_of "$s")")
		# shellcheck disable=SC2207 # one group per mode: split on spaces
		per_mode "$s" && groups=($(modes_of "$s"))
		for group in "${groups[@]}"; do
			port=$(free_port) || die "no free port found"
			echo "run-bench.sh: repetition $rep: $(server_label "$s") on port $port" >&2
			if ! start_server "$s" "$port" "$log"; then
				FAILED[$s]="failed to start: $START_ERROR"
				echo "run-bench.sh: WARNING: $(server_label "$s") $START_ERROR (log: $log)" >&2
				if is_echod "$s" && [ $REQUIRE_ECHOD = 0 ]; then
					tap "not ok" "$(server_label "$s") failed to start: $START_ERROR # TODO not fatal until --require-echod"
				else
					tap "not ok" "$(server_label "$s") failed to start: $START_ERROR"
				fi
				break
			fi
			for mode in $group; do
				run_one "$s" "$rep" "$port" "$mode"
			done
			stop_server "$SERVER_PID"
			SERVER_PID=
			per_mode "$s" && add_fairness "$log" "$s" "$rep" "$group"
		done
	done
done

# --- the report -------------------------------------------------------------

hold_of() {
	if per_process "$1"; then echo "$HOLD_PROC"; else echo "$HOLD"; fi
}

# crr for the servers with a process per connection, against the fork
# reference (what fork() and exit() alone cost a connection here) and
# xinetd, each measured in the same run; only if one of them was.
per_process_table() {
	local s any=0 rate cpu fr_rate fr_cpu xi_rate xi_cpu

	for s in forkref xinetd; do
		[[ " ${ACTIVE[*]} " == *" $s "* ]] && [ -z "${FAILED[$s]:-}" ] && any=1
	done
	[ $any = 1 ] && [[ ,$MODES, == *,crr,* ]] || return 0
	fr_rate=$(median forkref crr rate) fr_cpu=$(median forkref crr cpu_op_us)
	xi_rate=$(median xinetd crr rate) xi_cpu=$(median xinetd crr cpu_op_us)
	echo "A process per connection, crr: connections/s and server CPU per connection,"
	echo "median, and their ratios to the fork reference (forkref: accept, fork, echo,"
	echo "exit, and nothing else) and to xinetd, measured in the same run:"
	echo
	echo "| server | crr conn/s | ×forkref | ×xinetd | crr µs/conn | ×forkref | ×xinetd |"
	echo "|---|---:|---:|---:|---:|---:|---:|"
	for s in "${WANTED[@]}"; do
		per_process "$s" || continue
		[ -n "${NOTE[$s]:-}${FAILED[$s]:-}" ] && continue
		rate=$(median "$s" crr rate) cpu=$(median "$s" crr cpu_op_us)
		printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$(server_label "$s")" \
			"$(fmt "$rate" 0)" "$(ratio "$rate" "$fr_rate")" "$(ratio "$rate" "$xi_rate")" \
			"$(fmt "$cpu" 0)" "$(ratio "$cpu" "$fr_cpu")" "$(ratio "$cpu" "$xi_cpu")"
	done
	echo
}

report() {
	local s rr crr crr8 bulk udp held echoed rss pss p50 p99 e fair

	echo "# echod benchmark"
	echo
	echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -sr), $NCPU CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))."
	if [ -n "$SERVER_CPUS$CLIENT_CPUS" ]; then
		echo "**Pinned**: every server on CPU(s) ${SERVER_CPUS:-any}, the load generator"
		echo "(echod-bench, 2 threads) on CPU(s) ${CLIENT_CPUS:-any} (taskset -c)."
	else
		echo "**Client and server share the machine's $NCPU cores**: every number is a"
		echo "load generator (echod-bench, 2 threads) and a server competing for them."
	fi
	echo "Median of $REPS repetition(s), ${SECS} s each, servers alternating round-robin."
	echo "Ratios (×ref) are to the single-threaded reference server measured in the same run."
	echo
	echo "| server | rr req/s | ×ref | rr p50/p99 µs | crr conn/s | ×ref | crr p99 µs | crr8 conn/s | ×ref | bulk MB/s | ×ref | udp dgram/s | ×ref | hold held/echoed of N | hold RSS / PSS MiB | fairness crr / hold | errors |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	for s in "${WANTED[@]}"; do
		if [ -n "${NOTE[$s]:-}" ] || [ -n "${FAILED[$s]:-}" ]; then
			echo "| $(server_label "$s") | ${NOTE[$s]:-${FAILED[$s]}} |||||||||||||||| |"
			continue
		fi
		rr=$(median "$s" rr rate) crr=$(median "$s" crr rate) crr8=$(median "$s" crr8 rate)
		bulk=$(median "$s" bulk mbps) udp=$(median "$s" udp rate)
		p50=$(median "$s" rr p50_us) p99=$(median "$s" rr p99_us)
		held=$(median "$s" hold held) echoed=$(median "$s" hold echoed)
		rss=$(median "$s" hold rss_kb) pss=$(median "$s" hold pss_kb)
		e=$(errors_of "$s")
		fair="$(fmt "$(median "$s" crr fairness)" 2) / $(fmt "$(median "$s" hold fairness)" 2)"
		per_mode "$s" || fair=-
		printf '| %s | %s | %s | %s / %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
			"$(server_label "$s")" \
			"$(fmt "$rr" 0)" "$(ratio "$rr" "$REF_RR")" "$(fmt "$p50" 0)" "$(fmt "$p99" 0)" \
			"$(fmt "$crr" 0)" "$(ratio "$crr" "$REF_CRR")" "$(fmt "$(median "$s" crr p99_us)" 0)" \
			"$(fmt "$crr8" 0)" "$(ratio "$crr8" "$REF_CRR8")" \
			"$(fmt "$bulk" 0)" "$(ratio "$bulk" "$REF_BULK")" \
			"$(fmt "$udp" 0)" "$(ratio "$udp" "$REF_UDP")" \
			"$(if [ "$held" = - ]; then echo "skipped"; else echo "$(fmt "$held" 0)/$(fmt "$echoed" 0) of $(hold_of "$s")"; fi)" \
			"$(if [ "$rss" = - ]; then echo -; else echo "$(fmt "$(awk -v k="$rss" 'BEGIN{print k/1024}')" 1) / $(fmt "$(awk -v k="$pss" 'BEGIN{print k/1024}')" 1)"; fi)" \
			"$fair" "$e"
	done
	echo
	if [ -n "$CG" ]; then
		echo "Server CPU per operation (µs: user + system time of all the server's processes,"
		echo "fork children and exited workers included, from a cgroup of its own, over"
		echo "the run), median, and its ratio to the reference's in the same run:"
		echo
		echo "| server | rr µs/req | ×ref | crr µs/conn | ×ref | crr8 µs/conn | ×ref | bulk µs/MB | ×ref | udp µs/dgram | ×ref |"
		echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		for s in "${WANTED[@]}"; do
			[ -n "${NOTE[$s]:-}${FAILED[$s]:-}" ] && continue
			local c_rr c_crr c_crr8 c_bulk c_udp
			c_rr=$(median "$s" rr cpu_op_us) c_crr=$(median "$s" crr cpu_op_us)
			c_crr8=$(median "$s" crr8 cpu_op_us)
			c_bulk=$(median "$s" bulk cpu_mb_us) c_udp=$(median "$s" udp cpu_op_us)
			printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(server_label "$s")" \
				"$(fmt "$c_rr" 2)" "$(ratio "$c_rr" "$(median ref rr cpu_op_us)")" \
				"$(fmt "$c_crr" 1)" "$(ratio "$c_crr" "$(median ref crr cpu_op_us)")" \
				"$(fmt "$c_crr8" 1)" "$(ratio "$c_crr8" "$(median ref crr8 cpu_op_us)")" \
				"$(fmt "$c_bulk" 0)" "$(ratio "$c_bulk" "$(median ref bulk cpu_mb_us)")" \
				"$(fmt "$c_udp" 2)" "$(ratio "$c_udp" "$(median ref udp cpu_op_us)")"
		done
		echo
	fi
	per_process_table
	echo "Modes: rr = 64 persistent connections, 64-byte request, wait for its echo, repeat;"
	echo "crr = connect, 64 bytes, echo, close with a reset, 64 in flight; crr8 = the same, 8 in flight;"
	echo "bulk = 4 connections streaming"
	echo "both ways (MB/s echoed back); udp = 16 sockets × 8 outstanding 64-byte datagrams"
	echo "(losses are in raw.txt as lost=, not errors); hold = N idle connections for ${HOLD_IDLE} s,"
	echo "then one 64-byte echo on each, with the server's summed VmRSS (and PSS, which"
	echo "counts shared pages once) over its process tree while they are held."
	echo "fairness = connections served by the busiest worker ÷ the mean over the workers"
	echo "(1.00 = even; target: ≤ 1.25 for hold), from the \"exiting: served N"
	echo "connection(s)\" line each worker logs; echod prefork and passfd get a fresh"
	echo "server per mode for it, so the counts are those of one mode's run. The crr"
	echo "figure is uneven by design in both: short-lived connections go to one worker"
	echo "while it keeps up, the others standing by."
	echo "errors = failed operations of any kind (mismatch, premature EOF, reset, refusal,"
	echo "timeout) summed over all runs; every echoed byte is verified."
	echo
	echo "Notes:"
	echo "- hold uses N = $HOLD for the reference and echod prefork/passfd, N = $HOLD_PROC for servers"
	echo "  with a process per connection (echod fork, forkref, xinetd, inetd, socat)$([ "$HOLD_PROC" = 0 ] && echo ": skipped for them")."
	echo "- ref-split is the reference split in two: one process accepts and hands each"
	echo "  turn's connections (one SCM_RIGHTS message) to another that echoes them: the"
	echo "  floor of echod passfd's design (an accept, a sendmsg, a recvmsg, two wakeups)."
	echo "- forkref is built twice from one source: with libc alone, and as forkref-libs,"
	echo "  mapping the libraries echod links (libsystemd and what it pulls in, libinih)"
	echo "  without calling them; fork() and exit() cost grows with a process's mappings."
	echo "  forkref-split is the two in one server: forkref-libs accepts and hands each"
	echo "  turn's connections (one SCM_RIGHTS message) to a forkref that forks for each:"
	echo "  the floor of a fork model whose forking process maps libc alone."
	echo "- xinetd runs its internal echo with cps and instances raised: its default"
	echo "  \`cps = 50 10\` disables the service for 10 s after 50 connections in a second,"
	echo "  refusing nearly everything under load."
	echo "- openbsd-inetd runs its internal echo as \`nowait.100000000\` (the default of 256"
	echo "  spawns a minute stops the service for ten minutes) with \`-q 4096\`, in a private"
	echo "  mount namespace whose /etc/services maps \"echo\" to the high port. Its UDP echo"
	echo "  is not measured: it drops every datagram from 127.0.0.0/8 (dg_badinput())."
	echo "- Processes per connection: fork() is the cost that dominates crr for echod fork,"
	echo "  xinetd, inetd and socat; on this machine bash forks and reaps a subshell in $FORK_US µs."
	echo "- socat runs as \`socat TCP-LISTEN:PORT,bind=127.0.0.1,reuseaddr,fork,backlog=4096 PIPE\`"
	echo "  (TCP only; its default backlog of 5 would measure SYN retransmissions)."
	for s in "${WANTED[@]}"; do
		[ -n "${FAILED[$s]:-}" ] && echo "- **$(server_label "$s") ${FAILED[$s]}**; its log is logs/$s.log."
	done
	echo
	echo "Raw result lines: raw.txt. Plot: results.svg (throughput ÷ reference)."
}

# The plot: for each mode, one bar per server, its median throughput over
# the reference's median, with a whisker from its slowest to its fastest
# repetition (each over the same reference median). A mode a server was
# not measured in has no bar and says "n/m" at its foot; a measured 0 is
# a bar of height 0 with its whisker.
plot() {
	local m s v lo hi ref key mi=0 si nserv=0

	: >"$OUT/unmeasured.dat"
	{
		printf 'mode'
		for s in "${WANTED[@]}"; do
			[ "$s" = ref ] && continue
			[ -n "${NOTE[$s]:-}${FAILED[$s]:-}" ] && continue
			printf ' "%s" min max' "$(server_label "$s")"
			nserv=$((nserv + 1))
		done
		echo
		for m in rr crr crr8 bulk udp; do
			case $m in
			rr) printf '"rr: request-response\\n64 connections"' ;;
			crr) printf '"crr: connect, echo, close\\n64 at once"' ;;
			crr8) printf '"crr8: connect, echo, close\\n8 at once"' ;;
			bulk) printf '"bulk: streaming\\n4 connections"' ;;
			udp) printf '"udp: 64-byte datagrams\\n16 sockets"' ;;
			esac
			case $m in bulk) key=mbps ;; *) key=rate ;; esac
			case $m in rr) ref=$REF_RR ;; crr) ref=$REF_CRR ;; crr8) ref=$REF_CRR8 ;; bulk) ref=$REF_BULK ;; udp) ref=$REF_UDP ;; esac
			si=0
			for s in "${WANTED[@]}"; do
				[ "$s" = ref ] && continue
				[ -n "${NOTE[$s]:-}${FAILED[$s]:-}" ] && continue
				v=$(median "$s" "$m" "$key")
				# Where its bar would stand: labelled "n/m".
				[ "$v" = - ] && echo "$mi $si" >>"$OUT/unmeasured.dat"
				si=$((si + 1))
				lo=$(extreme min "$s" "$m" "$key") hi=$(extreme max "$s" "$m" "$key")
				printf ' %s %s %s' "$(ratio "$v" "$ref")" "$(ratio "$lo" "$ref")" "$(ratio "$hi" "$ref")"
			done
			echo
			mi=$((mi + 1))
		done
	} >"$OUT/ratios.dat"
	[ $nserv -gt 0 ] || return 0
	command -v gnuplot >/dev/null || { echo "run-bench.sh: gnuplot not installed; no plot" >&2; return 0; }
	# gnuplot plots nothing from an empty file, but complains of it.
	[ -s "$OUT/unmeasured.dat" ] || echo "-1 0" >"$OUT/unmeasured.dat"
	cat >"$OUT/plot.gp" <<EOF
set terminal svg size 1100,600 dynamic enhanced font "sans,12"
set output "$OUT/results.svg"
set title "Echo servers: throughput ÷ the single-threaded reference's, same run (client and server share $NCPU cores)\\nbar: median of $REPS; whisker: slowest to fastest repetition; n/m: not measured"
set datafile missing "-"
set style data histograms
set style histogram errorbars gap 1 lw 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key outside right top
set ylabel "throughput ÷ reference"
set yrange [0:1.1<*]
set grid ytics
set bmargin 5
set arrow from graph 0, first 1 to graph 1, first 1 nohead dashtype 2 lc rgb "black"
nserv = $nserv
set xrange [-0.6:4.6]
plot for [i=0:nserv-1] "$OUT/ratios.dat" using (column(2+3*i)):(column(3+3*i)):(column(4+3*i)):xtic(1) title columnheader(2+3*i), \\
     "$OUT/unmeasured.dat" using (\$1 - 0.5 + (\$2 + 1) / (nserv + 1.0)):(0.03):("n/m") with labels font ",9" notitle
EOF
	gnuplot "$OUT/plot.gp" 2>>"$OUT/logs/gnuplot.log" ||
		echo "run-bench.sh: gnuplot failed; see logs/gnuplot.log" >&2
}

REF_RR=$(median ref rr rate) REF_CRR=$(median ref crr rate) REF_CRR8=$(median ref crr8 rate)
REF_BULK=$(median ref bulk mbps) REF_UDP=$(median ref udp rate)
report >"$OUT/results.md"
plot
if [ $TAP = 1 ]; then
	sed 's/^/# /' "$OUT/results.md" >&2
	echo "1..$TAP_N"
else
	cat "$OUT/results.md"
fi

# --- the verdict ------------------------------------------------------------

status=0
for s in "${WANTED[@]}"; do
	if is_echod "$s" && [ -n "${FAILED[$s]:-}${NOTE[$s]:-}" ]; then
		if [ $REQUIRE_ECHOD = 1 ]; then
			echo "run-bench.sh: FAIL: echod $s ${FAILED[$s]:-${NOTE[$s]}}" >&2
			status=1
		else
			echo "run-bench.sh: WARNING: echod $s ${FAILED[$s]:-${NOTE[$s]}}; not measured" \
				"(--require-echod makes this fatal)" >&2
		fi
	fi
done
if [ -n "${FAILED[ref]:-}" ]; then
	echo "run-bench.sh: FAIL: the reference server ${FAILED[ref]}" >&2
	status=1
fi
# Errors fail the run for the servers this project answers for: the
# reference and echod. Other servers' errors are reported in the table.
bad=$(grep -E '^server=(ref|ref-split|prefork|passfd|fork)(-before)? ' "$RAW" | grep -v ' errors=0 ' || true)
if [ -n "$bad" ]; then
	echo "run-bench.sh: FAIL: runs with errors:" >&2
	echo "$bad" >&2
	status=1
fi
[ $status = 0 ] && echo "run-bench.sh: all runs of the reference and echod reported errors=0" >&2
exit $status
