#!/usr/bin/env bash
# services.sh — private Redis and Postgres instances for local runs and tests.
#
# Usage: scripts/services.sh up|down|status|env|redis-pid
#
#   up      install redis-server/postgresql with apt-get if missing, start both
#           (reusing whatever already answers on the ports), create the database
#   down    stop the instances this script started (idempotent)
#   status  report whether each service answers; exit 0 only if both do
#   env     print `export REDIS_URL=… DATABASE_URL=…` lines for eval
#   redis-pid  print the pid of the redis-server it started (for pinning)
#
# Environment:
#   DATA_DIR    state directory (default: <repo>/.data)
#   REDIS_PORT  Redis port on 127.0.0.1 (default: 16379)
#   PG_PORT     Postgres port on 127.0.0.1 (default: 15432)
#
# Postgres refuses to run as root; as root the cluster runs as the `postgres`
# system user, and its data moves to /tmp/chatstream-pg-<hash> when that user
# cannot reach DATA_DIR (e.g. a checkout under /root).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA_DIR=${DATA_DIR:-$ROOT/.data}
[[ $DATA_DIR == /* ]] || DATA_DIR=$PWD/$DATA_DIR
REDIS_PORT=${REDIS_PORT:-16379}
PG_PORT=${PG_PORT:-15432}

readonly PG_DB=chatstream
readonly PG_OS_USER=postgres # OS user that runs Postgres when we are root
readonly REDIS_DIR=$DATA_DIR/redis
readonly REDIS_PIDFILE=$REDIS_DIR/redis.pid
readonly REDIS_LOG=$REDIS_DIR/redis.log
readonly APT_LOG=$DATA_DIR/apt.log
readonly WAIT_SECONDS=20

REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/$PG_DB?sslmode=disable"

APT_UPDATED=0
PG_BIN=""

# --- helpers ---------------------------------------------------------------

info() { printf 'services: %s\n' "$*" >&2; }
die() {
	printf 'services: error: %s\n' "$*" >&2
	exit 1
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# tail_file prints the last lines of a log to stderr, indented.
tail_file() {
	[[ -f $1 ]] || return 0
	printf 'services: --- last lines of %s ---\n' "$1" >&2
	tail -n "${2:-20}" "$1" | sed 's/^/  /' >&2
}

# as_root runs a command as root, through sudo when needed.
as_root() {
	if is_root; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		die "need root to run '$*' and sudo is not installed"
	fi
}

# as_pg runs a command as the Postgres OS user: ourselves unless we are root.
as_pg() {
	if ! is_root; then
		"$@"
	elif command -v runuser >/dev/null; then
		(cd / && runuser -u "$PG_OS_USER" -- "$@")
	elif command -v setpriv >/dev/null; then
		(cd / && setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --init-groups -- "$@")
	else
		# shellcheck disable=SC2016 # $0/$@ expand in the inner shell
		(cd / && su -s /bin/sh "$PG_OS_USER" -c 'exec "$0" "$@"' -- "$@")
	fi
}

# port_open reports whether anything accepts TCP connections on 127.0.0.1:$1.
port_open() {
	# shellcheck disable=SC2016 # $1 expands in the inner shell
	timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# pid_is reports whether pid $1 is alive (not a zombie) and its command name
# starts with $2.
pid_is() {
	local comm stat
	[[ $1 =~ ^[0-9]+$ ]] || return 1
	comm=$(cat "/proc/$1/comm" 2>/dev/null) || return 1
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) } # fields after "pid (comm) "; the first is the state
	[[ $comm == "$2"* && ${stat:0:1} != [ZX] ]]
}

# lock serialises concurrent up/down runs on the same DATA_DIR. Daemons must
# be started with 9>&- or they would hold the lock for their lifetime.
lock() {
	mkdir -p "$DATA_DIR"
	command -v flock >/dev/null || return 0
	exec 9>"$DATA_DIR/.lock"
	flock -w 120 9 || die "another services.sh holds $DATA_DIR/.lock"
}

# apt_install installs Debian packages quietly, logging to $APT_LOG.
# A failing post-install step (e.g. starting a system service without
# systemd) is tolerated as long as the check command $1 succeeds afterwards.
apt_install() {
	local check=$1
	shift
	command -v apt-get >/dev/null || die "$* missing and apt-get not available; install it by hand"
	mkdir -p "$DATA_DIR"
	info "installing $* with apt-get (log: $APT_LOG)"
	if [[ $APT_UPDATED -eq 0 ]]; then
		if ! as_root apt-get update >>"$APT_LOG" 2>&1; then
			tail_file "$APT_LOG"
			die "apt-get update failed"
		fi
		APT_UPDATED=1
	fi
	# 9>&-: services started by maintainer scripts must not inherit the lock.
	if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y \
		--no-install-recommends "$@" >>"$APT_LOG" 2>&1 9>&-; then
		if $check; then
			info "apt-get reported errors installing $* but the binaries are there; continuing"
		else
			tail_file "$APT_LOG"
			die "apt-get install $* failed"
		fi
	fi
	$check || die "installed $* but still cannot find it"
}

# wait_for polls command "$@" every 0.2 s for up to WAIT_SECONDS.
wait_for() {
	local deadline=$((SECONDS + WAIT_SECONDS))
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

# --- redis -----------------------------------------------------------------

redis_installed() { command -v redis-server >/dev/null && command -v redis-cli >/dev/null; }

redis_ping() {
	command -v redis-cli >/dev/null || return 1
	[[ $(timeout 3 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

# redis_pid prints the pid of the redis-server we started, if it is alive.
redis_pid() {
	local pid
	pid=$(cat "$REDIS_PIDFILE" 2>/dev/null) || return 1
	pid_is "$pid" redis-server || return 1
	printf '%s\n' "$pid"
}

redis_up() {
	redis_installed || apt_install redis_installed redis-server
	if redis_ping; then
		info "redis: already answering on 127.0.0.1:$REDIS_PORT, reusing it"
		return
	fi
	local pid
	if pid=$(redis_pid); then
		die "redis from $REDIS_DIR (pid $pid) is running but not answering on port $REDIS_PORT; run '$0 down' first"
	fi
	if port_open "$REDIS_PORT"; then
		die "port $REDIS_PORT is taken by something that does not answer Redis PING; set REDIS_PORT"
	fi
	rm -f "$REDIS_PIDFILE" # stale, from a dead process
	mkdir -p "$REDIS_DIR"
	info "redis: starting on 127.0.0.1:$REDIS_PORT (dir $REDIS_DIR)"
	if ! redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
		--daemonize yes --pidfile "$REDIS_PIDFILE" --logfile "$REDIS_LOG" \
		--dir "$REDIS_DIR" --save "" --appendonly no >/dev/null 9>&-; then
		tail_file "$REDIS_LOG"
		die "redis-server failed to start"
	fi
	# Daemonised redis returns before it listens.
	if ! wait_for redis_ping; then
		tail_file "$REDIS_LOG"
		die "redis did not answer PING on port $REDIS_PORT within ${WAIT_SECONDS}s"
	fi
}

redis_gone() { ! pid_is "$1" redis-server; }

redis_down() {
	local pid
	if ! pid=$(redis_pid); then
		rm -f "$REDIS_PIDFILE"
		if redis_ping; then
			info "redis: something else answers on port $REDIS_PORT; not ours, leaving it"
		else
			info "redis: not running"
		fi
		return
	fi
	info "redis: stopping pid $pid"
	kill -TERM "$pid" 2>/dev/null || true # --save "" means nothing is written
	if ! wait_for redis_gone "$pid"; then
		info "redis: pid $pid ignored SIGTERM, killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$REDIS_PIDFILE"
}

redis_status() {
	local pid
	if redis_ping; then
		if pid=$(redis_pid); then
			echo "redis:    running on 127.0.0.1:$REDIS_PORT (pid $pid, $REDIS_DIR)"
		else
			echo "redis:    running on 127.0.0.1:$REDIS_PORT (not started by this script)"
		fi
	else
		echo "redis:    not running on 127.0.0.1:$REDIS_PORT"
		return 1
	fi
}

# --- postgres --------------------------------------------------------------

# pg_find sets PG_BIN to the newest Debian Postgres bin dir, else pg_ctl's dir.
pg_find() {
	local bins=(/usr/lib/postgresql/*/bin/postgres) newest ctl
	if [[ -x ${bins[0]} ]]; then
		newest=$(printf '%s\n' "${bins[@]}" | sort -V | tail -n 1)
		PG_BIN=$(dirname "$newest")
	elif ctl=$(command -v pg_ctl); then
		PG_BIN=$(dirname "$(readlink -f "$ctl")")
	else
		return 1
	fi
	[[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl && -x $PG_BIN/postgres ]]
}

# pg_tool prints the path of a client tool, preferring the server's version.
pg_tool() {
	if [[ -x $PG_BIN/$1 ]]; then
		printf '%s\n' "$PG_BIN/$1"
	else
		command -v "$1" || die "$1 not found"
	fi
}

# pg_root prints the directory holding our cluster (data, log, socket).
pg_root() {
	if is_root && ! as_pg test -x "$DATA_DIR" 2>/dev/null; then
		local hash
		hash=$(printf '%s' "$DATA_DIR" | sha256sum | cut -c1-12)
		printf '/tmp/chatstream-pg-%s\n' "$hash"
	else
		printf '%s\n' "$DATA_DIR/postgres"
	fi
}

pg_ready() {
	[[ -n $PG_BIN ]] || pg_find || return 1
	"$(pg_tool pg_isready)" -q -h 127.0.0.1 -p "$PG_PORT" -t 3 >/dev/null 2>&1
}

# pg_ctl_status reports whether pg_ctl considers the cluster in $1 running.
pg_ctl_status() {
	[[ -f $1/PG_VERSION ]] && as_pg "$PG_BIN/pg_ctl" -D "$1" status >/dev/null 2>&1
}

psql_q() {
	PGCONNECT_TIMEOUT=5 "$(pg_tool psql)" -X -q -v ON_ERROR_STOP=1 \
		-h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"
}

# pg_owns_pid reports whether pid $1 is the postmaster of data dir $2 (a
# postmaster's working directory is its data dir), guarding against pid reuse.
pg_owns_pid() {
	local cwd
	pid_is "$1" postgres || return 1
	cwd=$(readlink "/proc/$1/cwd" 2>/dev/null) || return 0 # unreadable: trust it
	[[ $cwd == "$(readlink -f "$2")" ]]
}

pg_ensure_user() {
	is_root || return 0
	id -u "$PG_OS_USER" >/dev/null 2>&1 && return 0
	info "postgres: creating system user $PG_OS_USER"
	useradd --system --user-group --home-dir /var/lib/postgresql \
		--shell /bin/sh "$PG_OS_USER"
}

# pg_init creates the cluster under $1 unless it exists, then (re)writes our
# settings so a changed PG_PORT takes effect on the next start.
pg_init() {
	local root=$1 data=$1/data sock=$1/run conf
	if [[ ! -d $root ]]; then
		mkdir -p "$root"
		if is_root; then chown "$PG_OS_USER:" "$root"; fi
		chmod 700 "$root"
	elif is_root && [[ $(stat -c %U "$root") != "$PG_OS_USER" ]]; then
		die "$root exists but is not owned by $PG_OS_USER; remove it"
	fi
	if [[ ! -f $data/PG_VERSION ]]; then
		info "postgres: initdb in $data"
		if ! as_pg "$PG_BIN/initdb" -D "$data" --auth=trust --username=postgres \
			-E UTF8 --locale=C --no-sync >"$root/initdb.log" 2>&1; then
			tail_file "$root/initdb.log"
			die "initdb failed"
		fi
		echo "include_if_exists = 'chatstream.conf'" >>"$data/postgresql.conf"
	fi
	local have want
	have=$(cat "$data/PG_VERSION")
	want=$("$PG_BIN/postgres" --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/')
	[[ $have == "$want" ]] ||
		die "cluster in $data is Postgres $have but binaries in $PG_BIN are $want; run '$0 down' and remove $root"

	# Socket paths are limited to 107 bytes ("/.s.PGSQL.<port>.lock" adds ~21);
	# too deep a checkout gets no socket, which is fine as we use TCP.
	[[ -d $sock ]] || as_pg mkdir -p "$sock"
	local sockdirs=$sock
	if ((${#sock} + 21 > 107)); then sockdirs=""; fi
	conf=$data/chatstream.conf
	cat >"$conf" <<-EOF
		# Written by scripts/services.sh on every 'up'; edits are overwritten.
		listen_addresses = '127.0.0.1'
		port = $PG_PORT
		unix_socket_directories = '$sockdirs'
		max_connections = 200
		# Throwaway test data: trade durability for speed.
		fsync = off
		synchronous_commit = off
		full_page_writes = off
	EOF
	if is_root; then chown "$PG_OS_USER:" "$conf"; fi
	chmod 600 "$conf"
}

pg_create_db() {
	local exists
	exists=$(psql_q -tA -c "select 1 from pg_database where datname = '$PG_DB'") ||
		die "cannot query Postgres on port $PG_PORT as user postgres (trust auth expected)"
	[[ $exists == 1 ]] && return 0
	info "postgres: creating database $PG_DB"
	psql_q -c "create database $PG_DB" >/dev/null 2>&1 ||
		[[ $(psql_q -tA -c "select 1 from pg_database where datname = '$PG_DB'") == 1 ]] ||
		die "create database $PG_DB failed"
}

pg_up() {
	pg_find || apt_install pg_find postgresql
	if pg_ready; then
		info "postgres: already answering on 127.0.0.1:$PG_PORT, reusing it"
		pg_create_db
		return
	fi
	pg_ensure_user
	local root data
	root=$(pg_root)
	data=$root/data
	pg_init "$root"

	if pg_ctl_status "$data"; then
		local pid
		pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)
		if pg_owns_pid "$pid" "$data"; then
			# Ours and alive: on another port (line 4 of the pidfile), or starting.
			if [[ $(sed -n 4p "$data/postmaster.pid") != "$PG_PORT" ]] || ! wait_for pg_ready; then
				die "postgres from $data (pid $pid) is running but not ready on port $PG_PORT; run '$0 down' first"
			fi
			pg_create_db
			return
		fi
		info "postgres: removing stale postmaster.pid (pid $pid is not our postmaster)"
		rm -f "$data/postmaster.pid"
	fi
	if port_open "$PG_PORT"; then
		die "port $PG_PORT is taken by something that is not a ready Postgres; set PG_PORT"
	fi

	info "postgres: starting on 127.0.0.1:$PG_PORT (data $data)"
	if ! as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$root/postgres.log" -w -t 60 \
		start >"$root/pg_ctl.log" 2>&1 9>&-; then
		tail_file "$root/pg_ctl.log" 5
		tail_file "$root/postgres.log"
		die "postgres failed to start"
	fi
	wait_for pg_ready || die "postgres started but is not ready on port $PG_PORT"
	pg_create_db
}

pg_down() {
	local data
	if ! pg_find; then
		info "postgres: not installed"
		return
	fi
	data=$(pg_root)/data
	if pg_ctl_status "$data" && ! pg_owns_pid "$(head -n 1 "$data/postmaster.pid")" "$data"; then
		info "postgres: removing stale postmaster.pid in $data"
		rm -f "$data/postmaster.pid"
	fi
	if pg_ctl_status "$data"; then
		info "postgres: stopping cluster in $data"
		as_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null ||
			die "pg_ctl stop failed for $data"
	elif pg_ready; then
		info "postgres: something else answers on port $PG_PORT; not ours, leaving it"
	else
		info "postgres: not running"
	fi
}

pg_status() {
	local data
	if ! pg_ready; then
		echo "postgres: not running on 127.0.0.1:$PG_PORT"
		return 1
	fi
	data=$(pg_root)/data
	if pg_ctl_status "$data"; then
		echo "postgres: running on 127.0.0.1:$PG_PORT (data $data)"
	else
		echo "postgres: running on 127.0.0.1:$PG_PORT (not started by this script)"
	fi
}

# --- commands --------------------------------------------------------------

cmd_up() {
	lock
	redis_up
	pg_up
	info "REDIS_URL=$REDIS_URL"
	info "DATABASE_URL=$DATABASE_URL"
}

cmd_down() {
	lock
	redis_down
	pg_down
}

cmd_status() {
	local rc=0
	redis_status || rc=1
	pg_status || rc=1
	return "$rc"
}

cmd_env() {
	printf "export REDIS_URL='%s'\n" "$REDIS_URL"
	printf "export DATABASE_URL='%s'\n" "$DATABASE_URL"
}

usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
	exit 2
}

main() {
	case ${1:-} in
	up) cmd_up ;;
	down) cmd_down ;;
	status) cmd_status ;;
	env) cmd_env ;;
	redis-pid) redis_pid ;;
	*) usage ;;
	esac
}

# Sourcing the file (for tests) defines the functions without running them.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	main "$@"
fi
