# shellcheck shell=bash
# ports.sh: sourced by the benchmark's scripts (run-bench.sh, soak-bulk.sh)
# to pick a server's port and see it listen. Needs ss (iproute2).

# Prints a port in 20000-32767 that nothing uses over TCP or UDP: below
# the ephemeral range, so client connections cannot take it meanwhile.
free_port() {
	local i port

	for ((i = 0; i < 100; i++)); do
		port=$((20000 + RANDOM % 12768))
		if [ -z "$(ss -Htuan "( sport = :$port )" 2>/dev/null)" ]; then
			echo "$port"
			return 0
		fi
	done
	return 1
}

listening() {
	[ -n "$(ss -Htln "( sport = :$1 )" 2>/dev/null)" ]
}
