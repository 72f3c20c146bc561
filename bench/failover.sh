#!/usr/bin/env bash
# bench/failover.sh - the chain (wrk → ns-proxy → agent → two `mdproxy server`s) while one of
# the two metadata servers is killed (SIGKILL) and restarted every KILL_EVERY seconds, against
# the same chain with both servers up; then the response cache: a hit against the uncached
# chain. Everything on 127.0.0.1 and Unix sockets, bounded (wrk -d, a watchdog), every process
# stopped by PID.
#
#   bench/failover.sh            # the measurement: writes bench/results/failover-<date>.md
#   bench/failover.sh soak       # a bounded soak (SOAK_SECONDS, default 60): the servers fail in
#                                # turn (never both), then the agent's RSS and descriptors are
#                                # compared with their baseline; exit 1 on growth or a non-200
#
# Environment: DURATION (seconds per measured run, default 20), CONNS (wrk connections, default
# 16), KILL_EVERY (default 5), RUNTIME (mio or smol, default mio), MDPROXY_BIN / BUILD (see
# bench/lib.sh), OUT (the results file), SOAK_RSS_SLACK_KIB (default 1024).
#
# What "failed" means: every answer that was not a 200, plus wrk's socket errors. The target
# (issue 17) is that only requests in flight at a kill fail: with 16 keep-alive connections that
# is at most 16 per kill.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

mode=${1:-measure}
duration=${DURATION:-20}
conns=${CONNS:-16}
kill_every=${KILL_EVERY:-5}
runtime=${RUNTIME:-mio}
soak_seconds=${SOAK_SECONDS:-60}
rss_slack=${SOAK_RSS_SLACK_KIB:-1024}
bench_init failover $((duration * 8 + soak_seconds + 300))

command -v wrk >/dev/null || die "wrk is not installed (apt-get install wrk)"
run=$(mktemp -d /tmp/mdproxy-failover.XXXXXX)
at_exit() { rm -rf "$run"; }
mdproxy_bin "$run"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

router=5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6
network=9c2b1a4e-0000-4000-8000-000000000001
instance=0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01
project=8f14e45fceea167a5a36dedd4bea2543
mkdir -p "$run/instances"
printf 'b3nch-secret' >"$run/secret"
printf 'uuid = "%s"\nproject_id = "%s"\nname = "failover"\n' "$instance" "$project" \
  >"$run/instances/$instance.toml"
static_map "$run/map.toml" "$router" "$network" "$instance" "$project"

ports=("$(free_port)" "$(free_port)")
server_pids=("" "")
start_server() {  # start_server I
  local i=$1
  spawn "$run/server-$i.log" "$MDPROXY" server --runtime "$runtime" \
    --listen "127.0.0.1:${ports[$i]}" --instances "$run/instances" \
    --shared-secret-file "$run/secret"
  server_pids[i]=$LAST_PID
  wait_listen "$LAST_PID" "tcp:${ports[$i]}" || die "server $i did not start: $(tail -3 "$run/server-$i.log")"
}
kill_server() {  # kill_server I: SIGKILL, as a crash
  local i=$1
  kill -KILL "${server_pids[$i]}" 2>/dev/null || true
  wait "${server_pids[$i]}" 2>/dev/null || true
  forget "${server_pids[$i]}"
  server_pids[i]=
}

agent_pid= proxy_pid= proxy_port=
start_chain() {  # start_chain AGENT_FLAGS...
  spawn "$run/agent.log" "$MDPROXY" agent --runtime "$runtime" --listen-socket "$run/agent.sock" \
    --metadata-url "http://127.0.0.1:${ports[0]}" --metadata-url "http://127.0.0.1:${ports[1]}" \
    --shared-secret-file "$run/secret" --static-map "$run/map.toml" "$@"
  agent_pid=$LAST_PID
  wait_listen "$agent_pid" "unix:$run/agent.sock" || die "agent did not start: $(tail -3 "$run/agent.log")"
  proxy_port=$(free_port)
  spawn "$run/ns-proxy.log" "$MDPROXY" ns-proxy --runtime "$runtime" --router-id "$router" \
    --listen "127.0.0.1:$proxy_port" --upstream-socket "$run/agent.sock"
  proxy_pid=$LAST_PID
  wait_listen "$proxy_pid" "tcp:$proxy_port" || die "ns-proxy did not start"
  local url="http://127.0.0.1:$proxy_port/latest/meta-data/instance-id"
  [[ $(curl -s "$url") == i-0d5e3c1c ]] || die "the chain does not answer: $(curl -s "$url")"
}
stop_chain() {
  stop_pids "$proxy_pid" "$agent_pid"
  forget "$proxy_pid" "$agent_pid"
}

# killer SECONDS WHICH: kill server WHICH (0, 1 or "alternate"), restart it KILL_EVERY later,
# and so on, for SECONDS; counts the kills in `kills`. In this shell (not a subshell), so that
# the restarted servers are in the bookkeeping.
kills=0
killer() {
  local until=$(($(date +%s) + $1)) which=$2 i
  kills=0
  while (($(date +%s) + 2 * kill_every <= until)); do
    sleep "$kill_every"
    i=$which
    [[ $which == alternate ]] && i=$((kills % 2))
    kill_server "$i"; kills=$((kills + 1))
    sleep "$kill_every"
    start_server "$i"
  done
}

# load_start SECONDS NAME / load_end NAME: wrk through the chain in the background; load_end
# waits for it and sets `report` to its WRK-REPORT line (not printed: `$(...)` would run the
# wait in a subshell, which cannot wait for this shell's child).
wrk_pid= report=
load_start() {
  spawn "$run/wrk-$2.txt" wrk -t 2 -c "$conns" -d "$1s" --timeout 10s \
    -s "$BENCH_DIR/wrk-report.lua" "http://127.0.0.1:$proxy_port/latest/meta-data/instance-id"
  wrk_pid=$LAST_PID
}
load_end() {
  wait "$wrk_pid" || true
  forget "$wrk_pid"
  report=$(grep WRK-REPORT "$run/wrk-$1.txt") || die "wrk failed: $(cat "$run/wrk-$1.txt")"
}
load() { load_start "$@"; load_end "$2"; }
field() { sed -n "s/.* $2=\([0-9.]*\).*/\1/p" <<<"$1"; }

start_server 0
start_server 1

if [[ $mode == soak ]]; then
  start_chain --metadata-probe-interval 1
  rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$agent_pid/status"; }
  fds() { find "/proc/$agent_pid/fd" -mindepth 1 -maxdepth 1 | wc -l; }
  load 5 warm
  sleep 12  # the pool's idle connections expire after 10 s: the baseline holds none
  base_rss=$(rss) base_fds=$(fds)
  say "baseline: agent RSS $base_rss KiB, $base_fds fds; $soak_seconds s of alternating failures"
  load_start "$soak_seconds" soak
  killer "$soak_seconds" alternate
  load_end soak
  [[ -n ${server_pids[0]} ]] || start_server 0
  [[ -n ${server_pids[1]} ]] || start_server 1
  sleep 12
  final_rss=$(rss) final_fds=$(fds)
  requests=$(field "$report" requests); failed=$(($(field "$report" non2xx) + $(field "$report" sockerr)))
  say "after $kills kills: $requests requests, $failed failed; agent RSS $base_rss → $final_rss KiB, fds $base_fds → $final_fds"
  ok=1
  ((final_rss - base_rss <= rss_slack)) || { say "RSS grew by $((final_rss - base_rss)) KiB"; ok=0; }
  ((final_fds <= base_fds)) || { say "descriptors grew"; ok=0; }
  # Only requests in flight at a kill may fail: at most CONNS per kill.
  ((failed <= conns * kills)) || { say "$failed failures for $kills kills"; ok=0; }
  ((ok)) || die "soak FAILED"
  say "soak: ok"
  exit 0
fi

# 1. Both up, then one of two killed and restarted every KILL_EVERY seconds.
start_chain
load 3 warm
load "$duration" steady; steady=$report
load_start "$duration" flapping
killer "$duration" 0
load_end flapping; flapping=$report
[[ -n ${server_pids[0]} ]] || start_server 0
downs=$(grep -c 'is down' "$run/agent.log" || true)
retries=$(grep -c 'trying another server' "$run/agent.log" || true)
stop_chain

# 2. The response cache: every request a fresh hit, against the uncached chain above.
start_chain --response-cache-ttl 3600
load 3 warm-cache
load "$duration" cached; cached=$report
stop_chain

row() {  # row NAME REPORT
  local r=$2 n f
  n=$(field "$r" requests); f=$(($(field "$r" non2xx) + $(field "$r" sockerr)))
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$(field "$r" rps)" \
    "$(field "$r" p50)" "$(field "$r" p99)" "$n" "$f" \
    "$(python3 -c "print(f'{100 * $f / max($n, 1):.3f} %')")"
}
out=${OUT:-$REPO_DIR/bench/results/failover-$(date -u +%Y-%m-%d).md}
{
  echo "# bench/failover.sh: one of two metadata servers killed and restarted every ${kill_every} s"
  echo
  machine_md 2>/dev/null | grep -v -e haproxy || true
  echo "- chain: wrk (2 threads, $conns keep-alive connections, ${duration} s per run) → ns-proxy → agent ($runtime, static map, two \`--metadata-url\`) → two \`mdproxy server\`"
  echo
  echo "| run | req/s | p50 µs | p99 µs | requests | failed | failed share |"
  echo "|---|---|---|---|---|---|---|"
  row "both servers up" "$steady"
  row "server 0 killed/restarted every ${kill_every} s ($kills kills)" "$flapping"
  row "response cache on (every request a fresh hit)" "$cached"
  echo
  echo "During the flapping run the agent logged $downs \"is down\" lines (one per kill at most) and"
  echo "$retries retries on the other server. Failed requests can only be those in flight at a kill"
  echo "(at most $conns per kill: $((conns * kills)) for this run). The cache row is the cost of a"
  echo "hit (lookup + cache) against the lookup plus a forward of the first row."
} >"$out"
cat "$out"
