#!/bin/sh
# Usage: security-units.sh THRESHOLD UNIT...
#
# Offline "systemd-analyze security" of the service units: the overall
# exposure must not exceed THRESHOLD, in tenths as --threshold= counts them
# (15 = the 1.5 that systemd-analyze prints). The system test repeats this inside a
# booted systemd, against the installed unit.
set -eu

threshold=$1
shift
rc=0
for unit in "$@"; do
	out=$(systemd-analyze security --offline=yes --threshold="$threshold" "$unit" 2>&1) || rc=1
	printf '%s\n' "$out" | grep -E '^✗|Overall exposure' || true
done
exit "$rc"
