#!/bin/sh
# Usage: check-catalog.sh CATALOG LOG_H
#
# Compiles CATALOG with journalctl into a scratch root (the host's catalog
# database is not touched) and checks that it parses without a message and
# holds exactly the MESSAGE_IDs that echod logs, each with a Subject: those
# LOG_H (src/log.h) defines as ECHOD_MESSAGE_* "32 hex digits".
set -eu

catalog=$1
header=$2
set -- $(sed -n 's/^#define ECHOD_MESSAGE_[A-Z_]* "\([0-9a-f]\{32\}\)"$/\1/p' "$header")
if [ "$#" -eq 0 ]; then
	echo "no ECHOD_MESSAGE_* defined in $header"
	exit 1
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/lib/systemd/catalog"
cp "$catalog" "$root/usr/lib/systemd/catalog/"

out=$(journalctl --root="$root" --update-catalog 2>&1) || { printf '%s\n' "$out"; exit 1; }
if [ -n "$out" ]; then
	printf '%s\n' "$out"
	exit 1
fi

# Lines are "ID echod: Subject".
got=$(journalctl --root="$root" --list-catalog | awk '$2 == "echod:" && NF > 2 { print $1 }' | sort)
want=$(printf '%s\n' "$@" | sort)
if [ "$got" != "$want" ]; then
	echo "catalog entries with Defined-By: echod and a Subject:"
	printf '%s\n' "$got"
	echo "expected:"
	printf '%s\n' "$want"
	exit 1
fi
echo "catalog OK: $# entries"
