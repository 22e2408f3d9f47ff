#!/usr/bin/env bash
# chromium.sh — make sure Debian's headless-capable Chromium is installed for
# the browser tests (chromedp drives /usr/bin/chromium). Installs it with
# apt-get when missing; prints the path.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
	command -v chromium
	exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
	command -v sudo >/dev/null 2>&1 || { echo "chromium.sh: chromium is missing and this user cannot install it (no root, no sudo)" >&2; exit 1; }
	SUDO=sudo
fi
log=$(mktemp)
echo "chromium.sh: installing chromium with apt-get (once)…" >&2
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } >"$log" 2>&1; then
	tail -n 20 "$log" >&2
	echo "chromium.sh: apt-get install chromium failed" >&2
	exit 1
fi
command -v chromium
