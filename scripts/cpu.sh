# cpu.sh — sourced by scripts/bench.sh and bench/peer/run.sh: each core's
# busy share over a run, from /proc/stat.

# cpu_ticks prints each core's busy and total ticks (from /proc/stat).
cpu_ticks() {
	awk '/^cpu[0-9]/ { busy = $2 + $3 + $4 + $7 + $8; total = busy + $5 + $6; printf "%s:%d:%d ", $1, busy, total }' /proc/stat
}
# per_core prints how busy each core was between two cpu_ticks.
per_core() {
	local line="per-core busy                            "
	local a b name b1 t1 b2 t2
	for a in $1; do
		for b in $2; do
			if [[ ${a%%:*} == "${b%%:*}" ]]; then
				IFS=: read -r name b1 t1 <<<"$a"
				IFS=: read -r _ b2 t2 <<<"$b"
				line+="$name $(((b2 - b1) * 100 / (t2 - t1 > 0 ? t2 - t1 : 1)))%  "
			fi
		done
	done
	echo "$line"
}
