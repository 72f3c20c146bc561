#!/usr/bin/env bash
# Soak test: pushes REQUESTS requests (default 1 000 000) through the whole chain on this
# machine only — wrk → `mdproxy ns-proxy` (127.0.0.1, TCP) → `mdproxy agent` (static map, Unix
# socket) → `mdproxy server` (127.0.0.1, TCP) — and watches every process for leaks.
#
#   bench/soak.sh [REQUESTS]
#
# Phases: a warm-up (5 % of REQUESTS, at least 2 000, half keep-alive, half `Connection: close`),
# then half of REQUESTS on keep-alive connections and half on a new connection each
# (`Connection: close`). Every SOAK_SAMPLE seconds it samples VmRSS (from /proc/PID/status) and
# open descriptors (/proc/PID/fd) of the three processes and prints them. Baseline and final
# samples are taken once the chain is quiet (idle pooled upstream connections expire after
# 10 s, so it waits for the descriptor counts to settle), and it prints the growth of each
# process between them.
#
# Bounded: wrk stops each phase after its share of requests or when SOAK_MAX_SECONDS (whole
# run, default 1800) runs out, whichever comes first; everything listens on 127.0.0.1 or a Unix
# socket in a temporary directory, and every process is stopped on exit.
#
# Environment:
#   MDPROXY_BIN        binary to run (default: target/release/mdproxy, built if missing)
#   SOAK_RUNTIME       mio or smol (default mio)
#   SOAK_CONNS         wrk connections (default 16);  SOAK_THREADS wrk threads (default 2)
#   SOAK_SAMPLE        seconds between samples (default 5)
#   SOAK_MAX_SECONDS   bound on the whole run (default 1800)
#   SOAK_CHECK=1       exit 1 if any process grew by more than SOAK_RSS_SLACK_KIB (default
#                      1024) of RSS or by any descriptor, or if any answer was not 200
# Needs wrk (Debian package `wrk`), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source bench/lib.sh

requests=${1:-1000000}
runtime=${SOAK_RUNTIME:-mio}
conns=${SOAK_CONNS:-16}
threads=${SOAK_THREADS:-2}
sample_every=${SOAK_SAMPLE:-5}
max_seconds=${SOAK_MAX_SECONDS:-1800}
check=${SOAK_CHECK:-0}
rss_slack=${SOAK_RSS_SLACK_KIB:-1024}
bin=${MDPROXY_BIN:-target/release/mdproxy}

command -v wrk >/dev/null || { echo "soak: wrk is not installed (apt-get install wrk)" >&2; exit 2; }
if [ ! -x "$bin" ]; then
  [ -z "${MDPROXY_BIN:-}" ] || { echo "soak: $bin is not executable" >&2; exit 2; }
  cargo build --release --quiet
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

started=$(date +%s)
dir=$(mktemp -d /tmp/mdproxy-soak.XXXXXX)
pids=()
sampler=
cleanup() {
  if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null || true; fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

router=5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6
network=9c2b1a4e-0000-4000-8000-000000000001
instance=0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01
project=8f14e45fceea167a5a36dedd4bea2543
mkdir -p "$dir/instances"
printf 's0ak-secret' >"$dir/secret"
printf 'uuid = "%s"\nproject_id = "%s"\nname = "soak"\n' "$instance" "$project" \
  >"$dir/instances/$instance.toml"
static_map "$dir/map.toml" "$router" "$network" "$instance" "$project"

server_port=$(free_port)
proxy_port=$(free_port)
"$bin" server --runtime "$runtime" --listen "127.0.0.1:$server_port" \
  --instances "$dir/instances" --shared-secret-file "$dir/secret" 2>"$dir/server.log" &
server_pid=$!; pids+=("$server_pid")
"$bin" agent --runtime "$runtime" --listen-socket "$dir/agent.sock" \
  --metadata-url "http://127.0.0.1:$server_port" --shared-secret-file "$dir/secret" \
  --static-map "$dir/map.toml" 2>"$dir/agent.log" &
agent_pid=$!; pids+=("$agent_pid")
"$bin" ns-proxy --runtime "$runtime" --router-id "$router" --listen "127.0.0.1:$proxy_port" \
  --upstream-socket "$dir/agent.sock" 2>"$dir/ns-proxy.log" &
proxy_pid=$!; pids+=("$proxy_pid")

url="http://127.0.0.1:$proxy_port/latest/meta-data/instance-id"
for _ in $(seq 100); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "$url" 2>/dev/null)" = 200 ]; then break; fi
  sleep 0.1
done
answer=$(curl -s "$url" || true)
[ "$answer" = "i-0d5e3c1c" ] || {
  echo "soak: the chain does not answer ($answer)" >&2
  tail -n 5 "$dir"/*.log >&2
  exit 1
}

names=(ns-proxy agent server)
procs=("$proxy_pid" "$agent_pid" "$server_pid")
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# One line: "name rss fds" per process.
snapshot() {
  local out=()
  for i in 0 1 2; do out+=("${names[$i]}" "$(rss "${procs[$i]}")" "$(fds "${procs[$i]}")"); done
  echo "${out[*]}"
}
show() {
  local label=$1
  # shellcheck disable=SC2086
  set -- $2
  printf '%-9s ns-proxy %6s KiB %4s fds | agent %6s KiB %4s fds | server %6s KiB %4s fds\n' \
    "$label" "$2" "$3" "$5" "$6" "$8" "$9"
}
# Waits until no descriptor count changed for 3 s, and at least 12 s (the upstream pool's
# idle timeout is 10 s), then prints the snapshot.
settle() {
  local last now same=0 waited=0
  last=$(snapshot | awk '{ print $3, $6, $9 }')
  while [ $waited -lt 12 ] || [ $same -lt 3 ]; do
    sleep 1; waited=$((waited + 1))
    now=$(snapshot | awk '{ print $3, $6, $9 }')
    if [ "$now" = "$last" ]; then same=$((same + 1)); else same=0; last=$now; fi
    [ $waited -lt 60 ] || break
  done
  snapshot
}

cat >"$dir/limit.lua" <<'LUA'
-- Each thread stops after its share of responses (SOAK_PER_THREAD) and says so in
-- SOAK_DONE_FILE; wrk's main thread sleeps for the whole -d, so the script interrupts it (SIGINT
-- makes wrk print its statistics and exit) once every thread is done.
local n = 0
function setup(thread)
  n = n + 1
  thread:set("id", n)
end
local limit = tonumber(os.getenv("SOAK_PER_THREAD"))
local done = 0
function response(status, headers, body)
  done = done + 1
  if done == limit then
    local f = io.open(os.getenv("SOAK_DONE_FILE"), "a")
    f:write(id, "\n")
    f:close()
    wrk.thread:stop()
  end
end
LUA

total_done=0
bad=0
# phase NAME COUNT [wrk args...]: COUNT requests, bounded by what is left of SOAK_MAX_SECONDS.
phase() {
  local name=$1 count=$2; shift 2
  local left=$((max_seconds - ($(date +%s) - started)))
  [ $left -gt 5 ] || { echo "soak: out of time before $name" >&2; exit 1; }
  local per_thread=$(((count + threads - 1) / threads))
  local conns_here=$conns
  [ "$conns_here" -ge "$threads" ] || conns_here=$threads
  local done_file="$dir/done-$name"
  : >"$done_file"
  SOAK_PER_THREAD=$per_thread SOAK_DONE_FILE=$done_file \
    wrk -t "$threads" -c "$conns_here" -d "${left}s" --timeout 10s \
    -s "$dir/limit.lua" "$@" "$url" >"$dir/wrk-$name.txt" 2>&1 &
  local wrk_pid=$!
  while kill -0 "$wrk_pid" 2>/dev/null; do
    if [ "$(wc -l <"$done_file")" -ge "$threads" ]; then
      kill -INT "$wrk_pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  wait "$wrk_pid" || true
  local n non2xx errors rate
  n=$(awk '/requests in/ { print $1 }' "$dir/wrk-$name.txt")
  non2xx=$(awk -F': ' '/Non-2xx/ { print $2 }' "$dir/wrk-$name.txt")
  errors=$(grep -o 'Socket errors:.*' "$dir/wrk-$name.txt" || true)
  rate=$(awk '/Requests\/sec/ { print $2 }' "$dir/wrk-$name.txt")
  n=${n:-0}; non2xx=${non2xx:-0}
  total_done=$((total_done + n))
  bad=$((bad + non2xx))
  printf '%-10s %9s requests, %8s req/s, non-200: %s %s\n' "$name" "$n" "${rate:-?}" "$non2xx" "$errors"
  if [ "$n" -lt "$count" ]; then
    echo "soak: $name stopped after $n of $count requests (time bound or errors)" >&2
    cat "$dir/wrk-$name.txt" >&2
    exit 1
  fi
}

echo "soak: $requests requests through ns-proxy → agent → server ($runtime, $bin)"
warm=$((requests / 20)); [ $warm -ge 2000 ] || warm=2000
half=$((requests / 2))
phase warm-ka $((warm / 2)) -H "Connection: keep-alive"
phase warm-close $((warm / 2)) -H "Connection: close"
base=$(settle); show baseline "$base"

(
  while :; do
    sleep "$sample_every"
    show "+$(($(date +%s) - started))s" "$(snapshot)"
  done
) &
sampler=$!

phase keep-alive "$half" -H "Connection: keep-alive"
phase close $((requests - half)) -H "Connection: close"
kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; sampler=

final=$(settle); show final "$final"
# shellcheck disable=SC2086
set -- $base; b=("$@")
# shellcheck disable=SC2086
set -- $final; f=("$@")
failed=0
echo "growth after warm-up ($total_done requests in $(($(date +%s) - started)) s):"
for i in 0 1 2; do
  drss=$((f[i * 3 + 1] - b[i * 3 + 1]))
  dfds=$((f[i * 3 + 2] - b[i * 3 + 2]))
  printf '  %-9s RSS %+6d KiB (%s → %s KiB)   fds %+d (%s → %s)\n' "${names[$i]}" "$drss" \
    "${b[i * 3 + 1]}" "${f[i * 3 + 1]}" "$dfds" "${b[i * 3 + 2]}" "${f[i * 3 + 2]}"
  if [ $drss -gt "$rss_slack" ] || [ $dfds -gt 0 ]; then failed=1; fi
done
[ $bad -eq 0 ] || { echo "soak: $bad answers were not 200"; failed=1; }
for i in 0 1 2; do
  kill -0 "${procs[$i]}" 2>/dev/null || { echo "soak: ${names[$i]} died"; failed=1; }
done
if [ "$check" = 1 ] && [ $failed -ne 0 ]; then
  echo "soak: FAILED (RSS grew over $rss_slack KiB, descriptors grew, or answers failed)"
  exit 1
fi
echo "soak: done"
