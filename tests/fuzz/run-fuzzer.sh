#!/bin/sh
# Runs one libFuzzer harness as a test: replays the seed corpus (which
# holds the regression inputs of every crash found so far), then fuzzes
# for a bounded time. New inputs go to a scratch corpus in the build
# directory, never into the source tree; a crash leaves its input in
# WORK/artifacts/ and fails the test.
# libFuzzer's own exit status for a crash, 77, means "skipped" to meson:
# a crash or a timeout exits with 1 instead. One input may take 30 s
# before it counts as a hang: every input here takes milliseconds, but a
# process starved on a loaded machine was seen to stall for 19 s.
# Usage: run-fuzzer.sh FUZZER SEED_DIR WORK_DIR SECONDS [libFuzzer flags...]
set -eu
fuzzer=$1
seeds=$2
work=$3
seconds=$4
shift 4
mkdir -p "$work/corpus" "$work/artifacts"
exec "$fuzzer" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 \
	-error_exitcode=1 -timeout_exitcode=1 \
	-print_final_stats=1 -artifact_prefix="$work/artifacts/" "$@" \
	"$work/corpus" "$seeds"
