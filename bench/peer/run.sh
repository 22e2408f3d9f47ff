#!/usr/bin/env bash
# run.sh — the issue's peer (Centrifugo v6 with its Redis engine) on
# chatstream's four fan-out rows, measured as `scripts/bench.sh rows`
# measures chatstream: Centrifugo and Redis pinned to core 0, the driver to
# core 1, deliveries per CPU-second of server + Redis, each core's busy share.
#
#   bench/peer/run.sh               all four rows
#   bench/peer/run.sh row2 row4     only those rows
#
# Environment:
#   PEER_HISTORY=1      channel history in Redis (default 1: each publish is
#                       one Lua script appending to a Redis stream and
#                       publishing, as chatstream appends each chunk to its
#                       Redis log; 0: a bare PUBLISH per message)
#   PEER_STREAMS, PEER_FOLLOWERS, PEER_MESSAGES   override a row's shape
#                       (e.g. a short check: PEER_STREAMS=4 run.sh row4)
#   PEER_ROW_DURATION   bound on each row (default 120s)
#   PEER_PORT           Centrifugo's port on 127.0.0.1 (default 18200)
#   PEER_GOMAXPROCS     GOMAXPROCS for Centrifugo (default: the runtime's,
#                       1 when pinned to one core)
#   PEER_PIN_MODE       all (default): Centrifugo starts under `taskset -c 0`,
#                       every thread on core 0, as scripts/bench.sh starts
#                       chatstream; main: `taskset -pc 0 <pid>` after the
#                       start, which moves only the main thread (the others
#                       keep both cores, and GOMAXPROCS is 2) — how
#                       bench.sh pinned chatstream before 2026-12-01 22:15
#   PEER_OUT            where reports and logs go (default bench/peer/run)
#
# Needs the Redis of scripts/services.sh running (scripts/services.sh up).
# Builds Centrifugo once into bench/peer/bin (through the Go module proxy).
set -euo pipefail
cd "$(dirname "$0")"
here=$PWD
root=$(cd ../.. && pwd)
eval "$("$root/scripts/services.sh" env)"
out=${PEER_OUT:-$here/run}
mkdir -p "$out" bin

version=v6.9.1
if [[ ! -x bin/centrifugo ]]; then
	echo "peer: building Centrifugo $version into bench/peer/bin (once; a few minutes)"
	# From inside this module: the main module's settings play no part.
	GOBIN=$here/bin go install "github.com/centrifugal/centrifugo/v6@$version"
fi
go build -o bin/peer-driver .

port=${PEER_PORT:-18200}
url=http://127.0.0.1:$port
api_key=bench-peer-api-key
secret=bench-peer-secret-bench-peer-secret
history=${PEER_HISTORY:-1}
messages=${PEER_MESSAGES:-400}
ulimit -n "$(ulimit -Hn)"

# write_config writes Centrifugo's configuration for run $1 (names from
# Centrifugo v6's internal/configtypes and internal/config; check with
# `bin/centrifugo defaultconfig -d`). The Redis key prefix is its own, and
# every key it writes expires within minutes.
write_config() {
	local history_size=0 history_ttl=0s
	if [[ $history == 1 ]]; then
		history_size=$((messages + 1)) history_ttl=120s
	fi
	cat >"$out/config.json" <<EOF
{
  "http_server": {"address": "127.0.0.1", "port": $port},
  "log": {"level": "error"},
  "engine": {
    "type": "redis",
    "redis": {"address": ["$REDIS_URL"], "prefix": "chatstream-bench-peer-$1-$$"}
  },
  "client": {
    "token": {"hmac_secret_key": "$secret"}
  },
  "channel": {
    "history_meta_ttl": "10m",
    "without_namespace": {
      "allow_subscribe_for_client": true,
      "history_size": $history_size,
      "history_ttl": "$history_ttl"
    }
  },
  "http_api": {"key": "$api_key"},
  "health": {"enabled": true},
  "usage_stats": {"disabled": true},
  "shutdown": {"timeout": "5s"}
}
EOF
}

peer=""
stop_peer() {
	if [[ -n $peer ]]; then
		kill "$peer" 2>/dev/null || true
		wait "$peer" 2>/dev/null || true
		peer=""
	fi
}
redis_pid="" redis_mask=""
cleanup() {
	stop_peer
	if [[ -n $redis_mask ]]; then taskset -p "$redis_mask" "$redis_pid" >/dev/null || true; fi
}
trap cleanup EXIT

start_peer() { # name
	write_config "$1"
	local pin=${PIN_SERVER:+taskset -c $PIN_SERVER}
	[[ ${PEER_PIN_MODE:-all} == all ]] || pin=""
	$pin env ${PEER_GOMAXPROCS:+GOMAXPROCS=$PEER_GOMAXPROCS} \
		./bin/centrifugo --config "$out/config.json" >"$out/$1.centrifugo.log" 2>&1 &
	peer=$! # taskset and env exec: this is Centrifugo's pid
	if [[ -n ${PIN_SERVER:-} && -z $pin ]]; then taskset -pc "$PIN_SERVER" "$peer" >/dev/null; fi
	for _ in $(seq 100); do
		if curl -sf "$url/health" >/dev/null; then
			[[ $(cat "/proc/$peer/comm" 2>/dev/null) == centrifugo ]] && return 0
			echo "peer: $url answers but pid $peer is not centrifugo (port taken?)"
			return 1
		fi
		sleep 0.1
	done
	echo "peer: Centrifugo did not become ready"
	cat "$out/$1.centrifugo.log"
	return 1
}

# cpu_ticks and per_core, as scripts/bench.sh reports them.
# shellcheck source=../../scripts/cpu.sh
source "$root/scripts/cpu.sh"

only=("$@")
row() { # name streams followers rate
	local name=$1 streams=${PEER_STREAMS:-$2} followers=${PEER_FOLLOWERS:-$3} rate=$4
	if [[ ${#only[@]} -gt 0 && ! " ${only[*]} " =~ " $name " ]]; then return 0; fi
	start_peer "$name"
	local flags=(-url "$url" -api-key "$api_key" -secret "$secret" -server-pid "$peer"
		-redis-pid "${redis_pid:-0}" -redis-url "$REDIS_URL" -streams "$streams" -followers "$followers"
		-messages "$messages" -rate "$rate" -duration "${PEER_ROW_DURATION:-120s}"
		-channel-prefix "$name-$$-" -peer "centrifugo $version, redis engine, history $([[ $history == 1 ]] && echo on || echo off)")
	echo "== $name: peer-driver -streams $streams -followers $followers -messages $messages -rate $rate"
	local rc=0 before
	before=$(cpu_ticks)
	${PIN_LOADGEN:+taskset -c "$PIN_LOADGEN"} ./bin/peer-driver "${flags[@]}" >"$out/$name.txt" 2>"$out/$name.progress" || rc=$?
	per_core "$before" "$(cpu_ticks)" >>"$out/$name.txt"
	local cpus
	cpus=$(cat /proc/"$peer"/task/*/status 2>/dev/null | awk '/^Cpus_allowed_list/ {n[$2]++} END {for (c in n) printf "%d on %s  ", n[c], c}')
	echo "server threads (CPUs allowed)             $cpus" >>"$out/$name.txt"
	cat "$out/$name.txt"
	[[ $rc -eq 0 ]] || tail -3 "$out/$name.progress"
	stop_peer
	if grep -q . "$out/$name.centrifugo.log"; then
		echo "peer: Centrifugo logged (first lines of $out/$name.centrifugo.log):"
		head -5 "$out/$name.centrifugo.log"
	fi
	return $rc
}

if [[ $(nproc) -ge 2 ]] && command -v taskset >/dev/null; then
	export PIN_SERVER=0 PIN_LOADGEN=1
	redis_pid=$("$root/scripts/services.sh" redis-pid 2>/dev/null || true)
	if [[ -n $redis_pid ]]; then
		redis_mask=$(taskset -p "$redis_pid" | awk '{print $NF}')
		taskset -pc 0 "$redis_pid" >/dev/null
	fi
	echo "peer: Centrifugo and Redis (pid ${redis_pid:-?}) on core 0, driver on core 1"
fi

status=0
row row1 20 50 30 || status=1
row row2 100 10 30 || status=1
row row3 10 500 20 || status=1
row row4 20 50 10 || status=1
exit $status
