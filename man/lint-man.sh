#!/bin/sh
# Usage: lint-man.sh PAGE...
#
# mandoc -Tlint at the strictest level (-Wstyle). Any message fails.
#
# Cross-references (.Xr) are checked by mandoc against the manuals
# installed on the build machine, which vary from one machine to the next.
# So the lint runs against a scratch manual tree holding our own pages plus
# an empty stand-in for each other page they refer to: a reference to one of
# our pages that does not exist still fails.
set -eu

tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT

own=
for page in "$@"; do
	name=${page##*/}
	sec=${name##*.}
	mkdir -p "$tree/man$sec"
	cp "$page" "$tree/man$sec/"
	own="$own ${name%.*}($sec)"
done

# Stand-ins for references to pages that are not ours.
for ref in $(sed -n 's/^\.Xr \([^ ]*\) \([0-9]\).*/\1(\2)/p' "$@" | sort -u); do
	case " $own " in
	*" $ref "*) continue ;;
	esac
	name=${ref%(*}
	sec=${ref#*(}
	sec=${sec%)}
	case "$name" in
	echod*) continue ;; # ours but missing: let mandoc complain
	esac
	mkdir -p "$tree/man$sec"
	printf '.Dd\n.Dt %s %s\n.Os\n.Sh NAME\n.Nm %s\n.Nd stand-in\n' \
		"$name" "$sec" "$name" >"$tree/man$sec/$name.$sec"
done
makewhatis "$tree"

mandoc -Tlint -Wstyle -M "$tree" "$@"
