#!/usr/bin/env bash
# node-deps.sh — installs the npm packages the tests drive (the AI SDK's
# client, pinned in integration/aisdk/package-lock.json) with the machine's
# Node.js and npm. A second run with the same lock file installs nothing;
# npm's cache (~/.npm) serves a changed one without the network where it can.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	if command -v apt-get >/dev/null; then
		echo "node-deps.sh: installing nodejs and npm with apt-get (once)…" >&2
		SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
		$SUDO apt-get update -qq && $SUDO apt-get install -y -qq nodejs npm >/dev/null
	else
		echo "node-deps.sh: Node.js 20 or newer and npm are needed for the tests" >&2
		exit 1
	fi
fi
for dir in integration/aisdk clients/js; do
	stamp=$dir/node_modules/.chatstream-lock
	if [[ -f $stamp ]] && cmp -s "$dir/package-lock.json" "$stamp"; then
		continue
	fi
	# --loglevel=error: the AI SDK asks for Node 22 and runs on 20 (tested).
	npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >&2
	cp "$dir/package-lock.json" "$stamp"
done
