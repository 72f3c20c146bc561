#!/usr/bin/env bash
# `systemd-analyze verify` on dist/systemd/*: the units (the template instantiated for a router
# UUID) must load without a warning. The units name /usr/bin/mdproxy, which verify wants to be
# executable, so copies naming the debug build are checked instead. Prints "units: skipped:
# <reason>" and exits 0 where systemd-analyze is not installed (Debian: package systemd).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v systemd-analyze >/dev/null 2>&1 || {
  echo "units: skipped: systemd-analyze is not installed"
  exit 0
}
if [ -z "${MDPROXY_BIN:-}" ]; then
  cargo build -q -p mdproxy
  MDPROXY_BIN=${CARGO_TARGET_DIR:-target}/debug/mdproxy
fi
bin=$(realpath "$MDPROXY_BIN")

tmp=$(mktemp -d /tmp/mdp-units.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
units=()
for unit in dist/systemd/*.service dist/systemd/*.socket; do
  name=${unit##*/}
  # A template is checked as an instance, so that %i expands as it will.
  name=${name/@./@0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01.}
  sed "s|/usr/bin/mdproxy|$bin|g" "$unit" >"$tmp/$name"
  units+=("$tmp/$name")
done
out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "${units[@]}" 2>&1) || {
  echo "$out"
  echo "units: FAILED: systemd-analyze verify"
  exit 1
}
if [ -n "$out" ]; then
  echo "$out"
  echo "units: FAILED: systemd-analyze verify warned"
  exit 1
fi
echo "units: systemd-analyze verify passed for ${#units[@]} units (${units[*]##*/})"

# The notify-reload drop-in needs systemd 253 (Type=notify-reload); older ones reject it.
version=$(systemd-analyze --version | awk 'NR == 1 { print $2 }')
if [ "${version:-0}" -ge 253 ]; then
  mkdir "$tmp/mdproxy-agent.service.d"
  cp dist/systemd/notify-reload/notify-reload.conf "$tmp/mdproxy-agent.service.d/"
  out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$tmp/mdproxy-agent.service" 2>&1) || {
    echo "$out"
    echo "units: FAILED: the notify-reload drop-in"
    exit 1
  }
  [ -z "$out" ] || { echo "$out"; echo "units: FAILED: the notify-reload drop-in warned"; exit 1; }
  echo "units: the notify-reload drop-in verified (systemd $version)"
else
  echo "units: the notify-reload drop-in not verified: systemd $version < 253"
fi
