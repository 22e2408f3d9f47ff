#!/usr/bin/env bash
# bench.sh — the load runs behind BENCHMARKS.md. For each scenario it starts a
# fresh chatstream node on loopback (demo model, many workers, its own Redis
# key prefix), runs the load generator against it, and stops it. Everything
# stays on 127.0.0.0/8 and every run is bounded in time.
#
#   scripts/bench.sh quick    short runs (what `make bench` does)
#   scripts/bench.sh full     the issue's full-size scenarios (minutes)
#   scripts/bench.sh full idle storm   only those scenarios
#   BENCH_SOAK=5m scripts/bench.sh quick soak   a soak of another length
#   scripts/bench.sh rows     issue 15's four fan-out rows, server + Redis
#                             pinned to core 0, the load generator to core 1,
#                             with each core's busy share
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-quick}
eval "$(scripts/services.sh env)"
DATABASE_URL+=${BENCH_DB_PARAMS:-}
out=${BENCH_OUT:-bench-results/$mode}
mkdir -p "$out"
go build -o bin/chatstream ./cmd/chatstream

port=${BENCH_PORT:-18181}
url=http://127.0.0.1:$port
export AUTH_SECRET=bench-secret-bench-secret-bench-secret
# The hard open-file limit may not be raisable here (no CAP_SYS_RESOURCE):
# take the soft limit up to it.
ulimit -n "$(ulimit -Hn)"
server=""
stop_server() {
	if [[ -n $server ]]; then
		kill "$server" 2>/dev/null || true
		wait "$server" 2>/dev/null || true
		server=""
	fi
}
trap stop_server EXIT

# The load generator's 50 users each run many generations and sockets from
# one address: the per-user and per-address limits are off for load runs
# (0 turns each off), as they would be for a trusted load balancer's tests.
limits_off="MAX_ACTIVE_GENERATIONS_PER_USER=0 SEND_RATE_PER_USER=0 MAX_SOCKETS_PER_USER=0 CONVERSATION_RATE_PER_USER=0 MAX_CONNS_PER_ADDR=0"
start_server() { # name; SERVER_ENV adds variables for this server
	# Pinned from the start (taskset -c), so that every thread is and the Go
	# runtime sizes GOMAXPROCS to the core it has: `taskset -p` on a running
	# process moves only its main thread.
	env $limits_off ${SERVER_ENV:-} GOGC=${BENCH_GOGC:-100} REDIS_KEY_PREFIX="bench-$1-$$:" WORKERS=${BENCH_WORKERS:-2500} HTTP_ADDR=127.0.0.1:$port LOG_LEVEL=warn \
		${PIN_SERVER:+taskset -c "$PIN_SERVER"} ./bin/chatstream serve >"$out/$1.server.log" 2>&1 &
	server=$!
	for _ in $(seq 100); do curl -sf "$url/readyz" >/dev/null && return 0; sleep 0.1; done
	echo "bench: server did not become ready"; cat "$out/$1.server.log"; return 1
}

only=("${@:2}") # optional: the scenarios to run
lg() { # name, then loadgen flags
	local name=$1; shift
	if [[ ${#only[@]} -gt 0 && ! " ${only[*]} " =~ " $name " ]]; then return 0; fi
	start_server "$name"
	echo "== $name: chatstream loadgen $*"
	local rc=0
	local before
	before=$(cpu_ticks)
	${PIN_LOADGEN:+taskset -c "$PIN_LOADGEN"} ./bin/chatstream loadgen -url "$url" -server-pid "$server" -svg "$out/$name.svg" ${BENCH_LOADGEN_FLAGS:-} "$@" \
		>"$out/$name.txt" 2>"$out/$name.progress" || rc=$?
	per_core "$before" "$(cpu_ticks)" >>"$out/$name.txt"
	cat "$out/$name.txt"
	[[ $rc -eq 0 ]] || tail -3 "$out/$name.progress"
	stop_server
	return $rc
}

# cpu_ticks and per_core: each core's busy share between two points.
# shellcheck source=scripts/cpu.sh
source scripts/cpu.sh

status=0
if [[ $mode == rows ]]; then
	# Server and Redis share core 0, the load generator has core 1: the
	# deliveries per CPU-second of server + Redis are what is compared.
	if [[ $(nproc) -ge 2 ]] && command -v taskset >/dev/null; then
		export PIN_SERVER=0 PIN_LOADGEN=1
		redis_pid=$(scripts/services.sh redis-pid 2>/dev/null || true)
		if [[ -n $redis_pid ]]; then
			redis_mask=$(taskset -p "$redis_pid" | awk '{print $NF}')
			taskset -a -pc 0 "$redis_pid" >/dev/null # -a: every thread of Redis
			trap 'stop_server; taskset -a -p "$redis_mask" "$redis_pid" >/dev/null' EXIT
		fi
		echo "bench: server and Redis (pid ${redis_pid:-?}) on core 0, loadgen on core 1"
	fi
	# A row ends when its streams do (400 tokens: 13 s at 30/s, 40 s at
	# 10/s); the duration only bounds it.
	d=${BENCH_ROW_DURATION:-90s}
	lg row1 -scenario fanout -streams 20 -followers 50 -tokens 400 -rate 30 -duration "$d" || status=1
	lg row2 -scenario fanout -streams 100 -followers 10 -tokens 400 -rate 30 -duration "$d" || status=1
	lg row3 -scenario fanout -streams 10 -followers 500 -tokens 400 -rate 20 -duration "$d" || status=1
	lg row4 -scenario fanout -streams 20 -followers 50 -tokens 400 -rate 10 -duration "$d" || status=1
elif [[ $mode == full ]]; then
	lg steady -scenario steady -streams 1000 -followers 2 -tokens 200 -rate 30 -ramp 5s -duration 120s || status=1
	lg tools -scenario tools -streams 1000 -followers 2 -tokens 200 -think 40 -rate 30 -ramp 5s -duration 120s || status=1
	lg fanout -scenario fanout -streams 20 -followers 500 -tokens 200 -rate 30 -spread -duration 120s || status=1
	# 20,000 would exceed the hard open-file limit of 20,000 of this sandbox.
	lg idle -scenario idle -sockets 19500 -spread -duration 120s || status=1
	lg storm -scenario storm -sockets 5000 -tokens 3000 -rate 30 -spread -duration 120s || status=1
	lg churn -scenario churn -streams 20 -sockets 200 -tokens 3000 -rate 30 -duration 30s || status=1
	# Chunk logs expire 20 s after their stream ends, so that Redis's
	# memory can level off within the run.
	SERVER_ENV="STREAM_TTL=20s" lg soak -scenario soak -streams 50 -tokens 200 -rate 30 -duration ${BENCH_SOAK:-30m} || status=1
else
	lg steady -scenario steady -streams 200 -followers 2 -tokens 100 -rate 30 -ramp 2s -duration 60s || status=1
	lg tools -scenario tools -streams 200 -followers 2 -tokens 100 -think 20 -rate 30 -ramp 2s -duration 60s || status=1
	lg fanout -scenario fanout -streams 5 -followers 200 -tokens 100 -rate 30 -duration 60s || status=1
	lg idle -scenario idle -sockets 2000 -duration 60s || status=1
	lg storm -scenario storm -sockets 500 -tokens 1000 -rate 30 -duration 60s || status=1
	lg churn -scenario churn -streams 5 -sockets 50 -tokens 1000 -rate 30 -duration 10s || status=1
	SERVER_ENV="STREAM_TTL=20s" lg soak -scenario soak -streams 20 -tokens 200 -rate 30 -duration ${BENCH_SOAK:-2m} || status=1
fi
exit $status
