#!/usr/bin/env bash
# fuzz.sh — runs every fuzz target for FUZZTIME each (default 5m) and prints
# how many inputs each ran and whether any failed. A failing input is saved
# under the package's testdata/fuzz/ by go test, and replays with `make test`.
#
#   scripts/fuzz.sh                 every target
#   FUZZTIME=30s scripts/fuzz.sh    shorter
#   scripts/fuzz.sh FuzzSocketFrame only that one
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-5m}
targets=(
	"./server FuzzSocketFrame"
	"./server FuzzHTTPBody"
	"./server FuzzAccessToken"
	"./protocol FuzzAppendJSONString"
	"./protocol FuzzScan"
	"./llm FuzzDemoDirective"
	"./tools FuzzCalculator"
	"./tools FuzzRunArguments"
)
status=0
printf '%-22s %-12s %12s  %s\n' target package execs result
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	if [[ $# -gt 0 && ! " $* " =~ " $name " ]]; then continue; fi
	log=$(mktemp)
	rc=0
	# New inputs are minimised for at most 200 runs each: the default (60s
	# each) leaves the fuzzer idle for most of a short run.
	go test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" -fuzzminimizetime 200x "$pkg" >"$log" 2>&1 || rc=$?
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
	if [[ $rc -eq 0 ]]; then result=ok; else result=FAILED; status=1; fi
	printf '%-22s %-12s %12s  %s\n' "$name" "$pkg" "${execs:-?}" "$result"
	[[ $rc -eq 0 ]] || tail -20 "$log"
	rm -f "$log"
done
exit $status
