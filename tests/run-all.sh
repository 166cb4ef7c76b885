#!/usr/bin/env bash
# The whole test suite: a -Werror build, an ASan+UBSan build and a clang
# build that runs the fuzzers. Every meson test runs, each in the build
# where it checks most: the integration and chaos suites sanitized, the
# suites that need the plain binary (system, memcheck, rss, bench,
# balancers) in the -Werror build, the unit suites in both.
# Ends with the counts from meson's test logs, so a run that ran nothing
# can't look green: the test cases (TAP subtests) passed, failed and
# skipped, then, as the very last line, "N passed, M failed" over the
# tests meson ran (test binaries and scripts; a binary passes only when
# all its cases do). With CI=true a skipped test counts as failed: CI is
# where every test must really run.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

status=0
passed=0
failed=0
skipped=0
logs=()

run_build() {
	local dir=$1
	shift
	if [ ! -d "$dir" ]; then
		meson setup "$dir" -Dwerror=true "$@" || return 1
	fi
	ninja -C "$dir" || return 1
	meson test -C "$dir" --print-errorlogs "${MESON_TEST_ARGS[@]}" || status=1
	local log="$dir/meson-logs/testlog.json"
	[ -f "$log" ] || return 1
	logs+=("$log")
	passed=$((passed + $(grep -c '"result": "OK"' "$log" || true)))
	skipped=$((skipped + $(grep -c '"result": "SKIP"' "$log" || true)))
	failed=$((failed + $(grep -vc '"result": "\(OK\|SKIP\)"' "$log" || true)))
}

# The plain build: the system test boots a container with the packaged
# (unsanitized) build; valgrind (memcheck) cannot run sanitized binaries;
# ASan's quarantine keeps freed memory resident on purpose (rss); the
# benchmark's smoke run checks the harness, not echod; and the run behind
# real balancers is end to end (the PROXY code runs sanitized in the proxy
# tests). Each once.
PLAIN_SUITES=(system memcheck rss bench balancers)
UNIT_SUITES=(unit unit-no-pidfd unit-no-ipv6 units man catalog)
MESON_TEST_ARGS=(--num-processes 1)
# And the forker's tests once more: the plain build's echod-forker is the
# statically linked one that is shipped, the sanitized build's is not.
for suite in "${UNIT_SUITES[@]}" "${PLAIN_SUITES[@]}" forker; do
	MESON_TEST_ARGS+=(--suite "$suite")
done
run_build build-ci || { status=1; failed=$((failed + 1)); }
# The sanitized build: everything else, and the unit suites again. The
# integration tests run here only: against the same code, the sanitizers
# see what the plain run would, and more. Chaos runs shorter than its
# default: what it finds shows in the first kills.
MESON_TEST_ARGS=(--num-processes 1)
for suite in "${PLAIN_SUITES[@]}"; do
	MESON_TEST_ARGS+=(--no-suite "$suite")
done
export ECHOD_CHAOS_SECONDS=10
# The sanitizers abort on the first error and report leaks at exit.
export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
run_build build-ci-asan -Db_sanitize=address,undefined -Db_lundef=false ||
	{ status=1; failed=$((failed + 1)); }

# libFuzzer needs clang; gcc builds everything else. This build holds
# only the fuzzers (with ASan+UBSan), which run side by side for
# fuzz_seconds each after replaying their corpus.
MESON_TEST_ARGS=(--suite fuzz --num-processes 4)
CC=clang run_build build-fuzz -Dtests=false -Dfuzz=true -Dfuzz_seconds=20 \
	-Db_sanitize=address,undefined -Db_lundef=false ||
	{ status=1; failed=$((failed + 1)); }

[ ${#logs[@]} -eq 0 ] || python3 tests/count-subtests.py "${logs[@]}" || status=1
if [ "$skipped" -ne 0 ]; then
	if [ "${CI:-}" = true ]; then
		echo "error: $skipped test(s) skipped, and CI=true: counted as failed"
		failed=$((failed + skipped))
		status=1
	else
		echo "warning: $skipped test(s) skipped: see the logs above"
	fi
fi
echo "$passed passed, $failed failed"
exit $status
