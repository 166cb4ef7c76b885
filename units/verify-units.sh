#!/bin/sh
# Usage: verify-units.sh ECHOD_BINARY UNIT...
#
# "systemd-analyze verify" checks a unit against the running systemd's
# parser and needs ExecStart='s binary to exist, so the units are verified as
# copies that point at the freshly built echod. Any message fails the test:
# verify returns 0 for unknown keys and merely prints a warning.
set -eu

echod=$(realpath "$1")
shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for unit in "$@"; do
	sed "s|/usr/sbin/echod|$echod|g" "$unit" >"$tmp/${unit##*/}"
done

rc=0
out=$(cd "$tmp" && systemd-analyze verify --man=no ./* 2>&1) || rc=$?
if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
	printf '%s\n' "$out"
	echo "systemd-analyze verify: exit status $rc" >&2
	exit 1
fi
echo "verified: $*"
