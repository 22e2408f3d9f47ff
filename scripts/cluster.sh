#!/usr/bin/env bash
# cluster.sh — chatstream as a small cluster on one machine, on loopback:
# a Redis Cluster of 3 masters + 3 replicas, the Postgres of services.sh,
# two API-only nodes (ROLES=api), two worker nodes (ROLES=worker) and
# `chatstream proxy` in front of the API nodes: one URL for the page.
#
# Usage: scripts/cluster.sh up|down|status|pids
#
#   up      build bin/chatstream, start everything, wait until every part
#           answers, print the URL (idempotent: a running part is kept)
#   down    stop everything it started (idempotent)
#   status  list the parts and whether each answers; exit 0 only if all do
#   pids    print "name pid" per running part (tests kill nodes with it)
#
# Environment:
#   CLUSTER_DIR        state: logs, pid files, Redis data (default .data/cluster)
#   CLUSTER_PORT_BASE  B: Redis on B+1…B+6, API nodes on B+81, B+82, worker
#                      nodes' /healthz /readyz /metrics on B+91, B+92
#                      (default 17000)
#   PROXY_ADDR         where the page is served (default 127.0.0.1:8080)
#   DATABASE_URL       Postgres (default: scripts/services.sh's)
#   CHATSTREAM_BIN     a built binary to use instead of building one
# Every node reads deploy/cluster.env (shared with compose.yaml's cluster
# profile); the environment overrides it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${CLUSTER_DIR:-$ROOT/.data/cluster}
[[ $DIR == /* ]] || DIR=$PWD/$DIR
B=${CLUSTER_PORT_BASE:-17000}
PROXY_ADDR=${PROXY_ADDR:-127.0.0.1:8080}
BIN=${CHATSTREAM_BIN:-$ROOT/bin/chatstream}
REDIS_PORTS=($((B + 1)) $((B + 2)) $((B + 3)) $((B + 4)) $((B + 5)) $((B + 6)))
API=(api1:$((B + 81)) api2:$((B + 82)))
WORKER=(worker1:$((B + 91)) worker2:$((B + 92)))

info() { printf 'cluster: %s\n' "$*" >&2; }
die() {
	printf 'cluster: error: %s\n' "$*" >&2
	exit 1
}

pidfile() { echo "$DIR/pids/$1.pid"; }
running() { # name
	local f
	f=$(pidfile "$1")
	[[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}
# answers reports whether http://addr/readyz says 200.
answers() { curl -sf -o /dev/null --max-time 2 "http://$1/readyz"; }

# start runs a command in the background as part name, its output in its log.
start() { # name, command…
	local name=$1
	shift
	running "$name" && return 0
	"$@" >>"$DIR/logs/$name.log" 2>&1 &
	echo $! >"$(pidfile "$name")"
}

# wait_for waits until a check passes, up to 60 s.
wait_for() { # what, check…
	local what=$1
	shift
	for _ in $(seq 600); do
		"$@" && return 0
		sleep 0.1
	done
	die "$what did not come up in 60 s (logs in $DIR/logs)"
}

redis_up() {
	command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
		die "redis-server and redis-cli are needed: scripts/services.sh up installs them"
	local port
	for port in "${REDIS_PORTS[@]}"; do
		mkdir -p "$DIR/redis/$port"
		running "redis-$port" && continue
		# No persistence: a local demo (docs/DEPLOY.md weighs the choices).
		start "redis-$port" redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
			--cluster-config-file "$DIR/redis/$port/nodes.conf" --dir "$DIR/redis/$port" \
			--save "" --appendonly no --cluster-node-timeout 3000 --daemonize no
	done
	for port in "${REDIS_PORTS[@]}"; do
		wait_for "redis on $port" redis-cli -p "$port" ping >/dev/null
	done
	if ! redis-cli -p "${REDIS_PORTS[0]}" cluster info | grep -q 'cluster_state:ok'; then
		local hosts=()
		for port in "${REDIS_PORTS[@]}"; do hosts+=("127.0.0.1:$port"); done
		info "creating the Redis Cluster (3 masters, 3 replicas)"
		redis-cli --cluster create "${hosts[@]}" --cluster-replicas 1 --cluster-yes >>"$DIR/logs/redis-create.log" 2>&1 ||
			die "redis-cli --cluster create failed (see $DIR/logs/redis-create.log)"
		wait_for "the Redis Cluster" cluster_ok
	fi
}

# cluster_ok: every node sees the cluster ok, with 3 masters and 3 replicas.
cluster_ok() {
	local port
	for port in "${REDIS_PORTS[@]}"; do
		redis-cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || return 1
	done
	[[ $(redis-cli -p "${REDIS_PORTS[0]}" cluster nodes | grep -c 'master') -eq 3 &&
		$(redis-cli -p "${REDIS_PORTS[0]}" cluster nodes | grep -c 'slave') -eq 3 ]]
}

# node_env prints the environment of a node: deploy/cluster.env, then the
# variables already set in ours (which override it).
node_env() {
	local line key
	while IFS= read -r line; do
		[[ $line =~ ^[A-Z_][A-Z0-9_]*= ]] || continue
		key=${line%%=*}
		if [[ -n ${!key+x} ]]; then echo "$key=${!key}"; else echo "$line"; fi
	done <"$ROOT/deploy/cluster.env"
}

nodes_up() {
	if [[ -z ${DATABASE_URL:-} ]]; then
		"$ROOT/scripts/services.sh" up
		eval "$("$ROOT/scripts/services.sh" env)"
	fi
	if [[ -z ${CHATSTREAM_BIN:-} ]]; then
		info "building $BIN"
		(cd "$ROOT" && go build -o "$BIN" ./cmd/chatstream)
	fi
	mapfile -t shared < <(node_env)
	# Each start gets a NODE_ID of its own: a node restarted under the id of
	# one just killed would take its place in the queue before the reaper
	# has handed the dead one's jobs on.
	local redis_url="redis://127.0.0.1:${REDIS_PORTS[0]}/0"
	local spec name port
	# The first node applies the migrations alone, so that four nodes do not
	# race at an empty database.
	"$BIN" migrate >>"$DIR/logs/migrate.log" 2>&1 || die "migrations failed (see $DIR/logs/migrate.log)"
	for spec in "${WORKER[@]}"; do
		name=${spec%%:*} port=${spec#*:}
		start "$name" env "${shared[@]}" ROLES=worker NODE_ID="$name-$RANDOM$RANDOM" HTTP_ADDR="127.0.0.1:$port" \
			REDIS_URL="$redis_url" DATABASE_URL="$DATABASE_URL" "$BIN" serve
	done
	for spec in "${API[@]}"; do
		name=${spec%%:*} port=${spec#*:}
		start "$name" env "${shared[@]}" ROLES=api NODE_ID="$name-$RANDOM$RANDOM" HTTP_ADDR="127.0.0.1:$port" \
			REDIS_URL="$redis_url" DATABASE_URL="$DATABASE_URL" "$BIN" serve
	done
	for spec in "${WORKER[@]}" "${API[@]}"; do
		wait_for "${spec%%:*}" answers "127.0.0.1:${spec#*:}"
	done
	local backends=()
	for spec in "${API[@]}"; do backends+=(-backend "http://127.0.0.1:${spec#*:}"); done
	start proxy "$BIN" proxy -listen "$PROXY_ADDR" "${backends[@]}"
	wait_for "the proxy" answers "$PROXY_ADDR"
}

up() {
	local began=$SECONDS
	mkdir -p "$DIR/pids" "$DIR/logs" "$DIR/redis"
	export DATABASE_URL=${DATABASE_URL:-}
	redis_up
	nodes_up
	info "up in $((SECONDS - began)) s: http://$PROXY_ADDR/ (API nodes ${API[*]}, worker nodes ${WORKER[*]}, Redis ${REDIS_PORTS[*]}; logs in $DIR/logs; 'make stop' stops it)"
}

down() {
	[[ -d $DIR/pids ]] || return 0
	local f pid name
	# The proxy and the nodes first (their shutdown hands running
	# generations back to the queue), Redis last.
	for name in proxy api1 api2 worker1 worker2; do
		f=$(pidfile "$name")
		[[ -f $f ]] && kill -TERM "$(cat "$f")" 2>/dev/null || true
	done
	for f in "$DIR"/pids/*.pid; do
		[[ -f $f ]] || continue
		pid=$(cat "$f")
		name=$(basename "$f" .pid)
		if [[ $name == redis-* ]]; then
			redis-cli -p "${name#redis-}" shutdown nosave >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
		fi
		for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		rm -f "$f"
	done
	# Without persistence a restarted Redis Cluster starts empty: its node
	# files go too, so that the next `up` creates it afresh.
	rm -rf "$DIR/redis"
	info "stopped"
}

status() {
	local ok=0 spec port
	for port in "${REDIS_PORTS[@]}"; do
		if redis-cli -p "$port" ping >/dev/null 2>&1; then echo "redis-$port up"; else echo "redis-$port down"; ok=1; fi
	done
	for spec in "${API[@]}" "${WORKER[@]}" "proxy:${PROXY_ADDR##*:}"; do
		if answers "127.0.0.1:${spec#*:}"; then echo "${spec%%:*} up"; else echo "${spec%%:*} down"; ok=1; fi
	done
	return $ok
}

pids() {
	local f
	for f in "$DIR"/pids/*.pid; do
		[[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null && echo "$(basename "$f" .pid) $(cat "$f")"
	done
	return 0
}

case ${1:-} in
up) up ;;
down) down ;;
status) status ;;
pids) pids ;;
*)
	echo "usage: $0 up|down|status|pids" >&2
	exit 2
	;;
esac
