#!/bin/bash
# soak-bulk.sh: runs echod-bench's bulk mode many times against each model,
# optionally with busy loops competing for the CPUs, and reports every
# stalled stream (echod-bench's "timed out" line says where the missing
# bytes were). A stall is a correctness question: bulk must never lose
# or hold back an echo, however loaded the machine.
#
#   tests/bench/soak-bulk.sh [--build DIR] [--runs N] [--duration S]
#                            [--pressure N] [--models LIST]
#
# Exit status: 0 if no run had an error, 1 otherwise, 2 for bad usage.
set -u

BUILD=build RUNS=200 SECS=1 PRESSURE=2 MODELS=passfd,prefork,fork
while [ $# -gt 0 ]; do
	case $1 in
	--build) BUILD=$2; shift ;;
	--runs) RUNS=$2; shift ;;
	--duration) SECS=$2; shift ;;
	--pressure) PRESSURE=$2; shift ;;
	--models) MODELS=$2; shift ;;
	-h | --help) sed -n '2,12s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) echo "soak-bulk.sh: unknown argument '$1'" >&2; exit 2 ;;
	esac
	shift
done
[[ $RUNS =~ ^[0-9]+$ && $RUNS -ge 1 ]] || { echo "soak-bulk.sh: bad --runs '$RUNS'" >&2; exit 2; }
[[ $PRESSURE =~ ^[0-9]+$ ]] || { echo "soak-bulk.sh: bad --pressure '$PRESSURE'" >&2; exit 2; }
ECHOD=$BUILD/src/echod BENCH=$BUILD/tests/bench/echod-bench
for f in "$ECHOD" "$BENCH"; do
	[ -x "$f" ] || { echo "soak-bulk.sh: $f not built" >&2; exit 2; }
done

LOG=$(mktemp -d /tmp/soak-bulk.XXXXXX)
pids=()
# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
}
trap cleanup EXIT
trap 'exit 1' INT TERM

for ((i = 0; i < PRESSURE; i++)); do
	sh -c 'while :; do :; done' &
	pids+=($!)
done

# free_port, listening
# shellcheck disable=SC1091 # ports.sh, beside this script, is checked on its own
. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

failed=0
echo "soak-bulk.sh: $RUNS bulk runs of ${SECS} s per model, $PRESSURE busy loop(s); logs in $LOG"
uptime
for model in ${MODELS//,/ }; do
	port=$(free_port) || { echo "soak-bulk.sh: no free port found" >&2; exit 1; }
	"$ECHOD" -c /dev/null -m "$model" --listen "127.0.0.1:$port" 2>"$LOG/echod-$model.log" &
	server=$!
	pids+=("$server")
	for ((t = 0; t < 50; t++)); do
		listening "$port" && break
		sleep 0.1
	done
	errors=0 stalls=0 ran=0
	for ((r = 1; r <= RUNS; r++)); do
		line=$("$BENCH" -m bulk -p "$port" -d "$SECS" 2>>"$LOG/bench-$model.log")
		ran=$((ran + 1))
		e=$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$line")
		errors=$((errors + ${e:-1}))
	done
	stalls=$(grep -c 'timed out' "$LOG/bench-$model.log")
	kill "$server" 2>/dev/null
	wait "$server" 2>/dev/null
	printf '%-8s runs %d  errors %d  stalled streams %d\n' "$model" "$ran" "$errors" "$stalls"
	grep 'timed out' "$LOG/bench-$model.log"
	[ "$errors" -eq 0 ] && [ "$stalls" -eq 0 ] || failed=1
done
uptime
exit $failed
