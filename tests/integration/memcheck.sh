#!/bin/sh
# Runs an integration test with every echod it starts under valgrind's
# memcheck, workers included (they are forks of it, which valgrind
# follows; --trace-children also follows an exec). Fails when the test
# fails or when any echod process reported an invalid access, a use of
# uninitialised memory or a definite/indirect leak: with -q valgrind
# writes nothing else, so every non-empty log is an error report. Fails
# too when no echod ran under valgrind at all.
# Usage: memcheck.sh VALGRIND TEST [ARGS...]
set -u
valgrind=$1
shift
logs=$(mktemp -d "${TMPDIR:-/tmp}/echod-memcheck.XXXXXX")
trap 'rm -rf "$logs"' EXIT

export ECHOD_TEST_WRAPPER="$valgrind -q --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --error-exitcode=99 --trace-children=yes --num-callers=30 --log-file=$logs/memcheck.%p"
"$@"
status=$?
reports=0
for f in "$logs"/memcheck.*; do
	[ -s "$f" ] || continue
	echo "memcheck: errors in process ${f##*.}:" >&2
	cat "$f" >&2
	reports=$((reports + 1))
done
checked=$(find "$logs" -mindepth 1 -maxdepth 1 | wc -l)
echo "memcheck: $checked echod process(es) checked, $reports with errors; test exit status $status" >&2
# No log at all means valgrind never ran an echod: nothing was checked.
[ "$checked" -gt 0 ] || echo "memcheck: no echod process ran under valgrind" >&2
[ "$status" -eq 0 ] && [ "$reports" -eq 0 ] && [ "$checked" -gt 0 ]
