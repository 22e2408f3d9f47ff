#!/usr/bin/env bash
# bench.sh — the load runs behind BENCHMARKS.md. Starts a chatstream node on
# loopback (demo model, many workers), runs the load generator's scenarios
# against it, stops it. Everything stays on 127.0.0.0/8 and every run is
# bounded in time.
#
#   scripts/bench.sh quick    short runs (what `make bench` does)
#   scripts/bench.sh full     the issue's full-size scenarios (minutes; 20k sockets)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-quick}
eval "$(scripts/services.sh env)"
out=${BENCH_OUT:-bench-results}
mkdir -p "$out"
go build -o bin/chatstream ./cmd/chatstream

port=${BENCH_PORT:-18181}
url=http://127.0.0.1:$port
export AUTH_SECRET=bench-secret-bench-secret-bench-secret
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# The bench node keeps its keys under a prefix of its own on the shared Redis.
REDIS_KEY_PREFIX=bench: WORKERS=${BENCH_WORKERS:-2500} HTTP_ADDR=127.0.0.1:$port LOG_LEVEL=warn GOMAXPROCS=${BENCH_GOMAXPROCS:-2} \
	./bin/chatstream serve >"$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "$url/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "$url/readyz" >/dev/null || { echo "bench: server did not become ready"; cat "$out/server.log"; exit 1; }

lg() { # name, then loadgen flags
	local name=$1; shift
	echo "== $name: chatstream loadgen $*"
	./bin/chatstream loadgen -url "$url" -server-pid "$server" -svg "$out/$name.svg" "$@" \
		>"$out/$name.txt" 2>"$out/$name.progress" || { tail -5 "$out/$name.progress"; cat "$out/$name.txt"; return 1; }
	cat "$out/$name.txt"
	./bin/chatstream loadgen -url "$url" -server-pid "$server" -json "$@" >/dev/null 2>&1 </dev/null || true
}

if [[ $mode == full ]]; then
	lg steady  -scenario steady -streams 1000 -followers 2 -tokens 200 -rate 30 -ramp 5s -duration 120s
	lg fanout  -scenario fanout -streams 20 -followers 500 -tokens 200 -rate 30 -spread -duration 120s
	lg idle    -scenario idle -sockets 20000 -spread -duration 120s
	lg storm   -scenario storm -sockets 5000 -tokens 3000 -rate 30 -spread -duration 120s
	lg churn   -scenario churn -streams 20 -sockets 200 -tokens 3000 -rate 30 -duration 30s
else
	lg steady  -scenario steady -streams 200 -followers 2 -tokens 100 -rate 30 -ramp 2s -duration 60s
	lg fanout  -scenario fanout -streams 5 -followers 200 -tokens 100 -rate 30 -duration 60s
	lg idle    -scenario idle -sockets 2000 -duration 60s
	lg storm   -scenario storm -sockets 500 -tokens 1000 -rate 30 -duration 60s
	lg churn   -scenario churn -streams 5 -sockets 50 -tokens 1000 -rate 30 -duration 10s
fi
