#!/usr/bin/env bash
# bench/node.sh - what one more served namespace costs a `mdproxy node`, and the node's chain
# against the two-hop one (issue 20), in one script run.
#
# Memory: one node with a static map of NS_MAX routers (each with 127.0.0.1 as an instance),
# its --watch-dir filled with 1, 10, 100, then NS_MAX files, each a router on its own loopback
# port (not root: the node's own namespace, so a "namespace" here is one registration: its
# listening socket, its table entry and rate limiter, its accept task or slot; the kernel's
# namespace and socket memory is not the process's). At each step: wait until every port
# listens, settle 1 s, read VmRSS / Pss / private memory; then one request on each new port,
# read again. The growth per namespace is (step NS_MAX - step 1) / (NS_MAX - 1).
#
# Throughput: wrk at CONNS (16) keep-alive connections, DURATION seconds, REPEATS times in a
# rotated order, on: the floor (wrk -> nginx), the node chain (wrk -> node -> mdproxy server),
# the two-hop chain (wrk -> ns-proxy -> agent -> mdproxy server; the same server), and a second
# node whose metadata server is the floor's nginx (node-nginx: the server's cost taken out).
# CPU per request: user + system time of the proxies' own processes (the node; the ns-proxy and
# the agent), from /proc before and after each run, / requests.
#
# Knobs: NS_MAX=500  DURATION=10  REPEATS=3  CONNS=16  RUNTIME=mio|smol (default mio)
#   PORT_BASE=28000 (uses PORT_BASE .. PORT_BASE+NS_MAX+20)  MDPROXY_BIN / BUILD=0 as in run.sh
#   TIMEOUT=1200  OUT=bench/results/node-<date>   (.md)
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$BENCH_DIR/lib.sh"

NS_MAX=${NS_MAX:-500}
DURATION=${DURATION:-10}
REPEATS=${REPEATS:-3}
CONNS=${CONNS:-16}
RUNTIME=${RUNTIME:-mio}
PORT_BASE=${PORT_BASE:-28000}
OUT=${OUT:-$BENCH_DIR/results/node-$(date +%Y-%m-%d)}
URL_PATH=/latest/meta-data/
SECRET=bench-secret
INSTANCE_ID=0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01
PROJECT_ID=8f14e45fceea167a5a36dedd4bea2543

bench_init node "${TIMEOUT:-1200}"
need_tools
RUN=$(mktemp -d /tmp/mdproxy-node-bench.XXXXXX)
at_exit() { if [[ $1 == 0 && -z ${KEEP_RUN:-} ]]; then rm -rf "$RUN"; else say "run directory kept: $RUN"; fi; }
mkdir -p "$RUN/nginx-tmp" "$RUN/instances" "$RUN/units" "$(dirname "$OUT")"
mdproxy_bin "$RUN"
ports_free "$PORT_BASE" $((NS_MAX + 20))

router_id() { printf '%08x-0000-4000-8000-%012x' "$1" "$1"; }
network_id() { printf '%08x-0000-4000-9000-%012x' "$1" "$1"; }
mem_of() { python3 "$BENCH_DIR/tools.py" mem "$1" | awk '{ printf "%d %d %d\n", $2, $4, $5 }'; }

printf '%s' "$SECRET" >"$RUN/secret"
# Router i (0 .. NS_MAX-1) has network i, on which 127.0.0.1 is the instance.
for ((i = 0; i < NS_MAX; i++)); do
  printf '[[router]]\nid = "%s"\nnetworks = ["%s"]\n\n[[port]]\nnetwork = "%s"\nip = "127.0.0.1"\ndevice_id = "%s"\nproject_id = "%s"\n\n' \
    "$(router_id "$i")" "$(network_id "$i")" "$(network_id "$i")" "$INSTANCE_ID" "$PROJECT_ID"
done >"$RUN/map.toml"
printf 'uuid = "%s"\nproject_id = "%s"\nname = "bench-vm"\nfixed_ips = ["127.0.0.1"]\n' \
  "$INSTANCE_ID" "$PROJECT_ID" >"$RUN/instances/$INSTANCE_ID.toml"

SERVER_PORT=$((PORT_BASE + 1))
NGINX_PORT=$((PORT_BASE + 2))
CHAIN_PORT=$((PORT_BASE + 3))
unit_port() { echo $((PORT_BASE + 20 + $1)); }

spawn "$RUN/server.log" "$MDPROXY" server --runtime "$RUNTIME" --instances "$RUN/instances" \
  --shared-secret-file "$RUN/secret" --listen "127.0.0.1:$SERVER_PORT"
wait_listen "$LAST_PID" "tcp:$SERVER_PORT" || die "mdproxy server did not start"
render "$BENCH_DIR/templates/nginx.conf" "$RUN/nginx.conf" WORKERS=1 RUNDIR="$RUN" PORT="$NGINX_PORT" \
  SOCKET="$RUN/nginx.sock" BODY='ami-id\nhostname\ninstance-id' BODY_DESC="a short fixed listing"
spawn "$RUN/nginx.out" "$NGINX" -p "$RUN" -e "$RUN/nginx-error.log" -c "$RUN/nginx.conf" -g 'daemon off;'
wait_listen "$LAST_PID" "tcp:$NGINX_PORT" || die "nginx did not start"

spawn "$RUN/node.log" "$MDPROXY" node --runtime "$RUNTIME" --watch-dir "$RUN/units" \
  --rescan-interval 0.1 --shared-secret-file "$RUN/secret" --static-map "$RUN/map.toml" \
  --metadata-url "http://127.0.0.1:$SERVER_PORT" --max-conns-per-ip 1024
NODE_PID=$LAST_PID
sleep 1
kill -0 "$NODE_PID" || die "the node did not start: $(cat "$RUN/node.log")"

# --- memory
MEM_ROWS=()
served=0
read -r rss pss uss < <(mem_of "$NODE_PID")
MEM_ROWS+=("| 0 | idle | $rss | $pss | $uss |")
for step in 1 10 100 "$NS_MAX"; do
  ((step <= NS_MAX)) || continue
  for ((i = served; i < step; i++)); do
    printf 'router_id = "%s"\nlisten = ["127.0.0.1:%d"]\n' "$(router_id "$i")" "$(unit_port "$i")" \
      >"$RUN/units/.r$i.tmp"
    mv "$RUN/units/.r$i.tmp" "$RUN/units/r$i.toml"
  done
  for ((i = served; i < step; i++)); do
    wait_listen "$NODE_PID" "tcp:$(unit_port "$i")" 60 || die "router $i never served: $(tail -5 "$RUN/node.log")"
  done
  sleep 1
  read -r rss pss uss < <(mem_of "$NODE_PID")
  MEM_ROWS+=("| $step | listening | $rss | $pss | $uss |")
  ports=()
  for ((i = served; i < step; i++)); do ports+=("$(unit_port "$i")"); done
  poked=$(python3 "$BENCH_DIR/tools.py" poke 1 "${ports[@]}")
  [[ $poked == *" failed=0" ]] || die "requests to the new listeners failed: $poked"
  read -r rss pss uss < <(mem_of "$NODE_PID")
  MEM_ROWS+=("| $step | after 1 request on each new one | $rss | $pss | $uss |")
  [[ $step == 1 ]] && { RSS1=$rss; PSS1=$pss; }
  RSSN=$rss PSSN=$pss
  served=$step
  say "$step namespaces: VmRSS $rss KiB, Pss $pss KiB"
done
per_rss=$(awk -v a="$RSS1" -v b="$RSSN" -v n="$NS_MAX" 'BEGIN { printf "%.1f", (b - a) / (n - 1) }')
per_pss=$(awk -v a="$PSS1" -v b="$PSSN" -v n="$NS_MAX" 'BEGIN { printf "%.1f", (b - a) / (n - 1) }')

# --- throughput: the node (router 0's listener), the two-hop chain, the floor
spawn "$RUN/agent.log" "$MDPROXY" agent --runtime "$RUNTIME" --listen-socket "$RUN/agent.sock" \
  --metadata-url "http://127.0.0.1:$SERVER_PORT" --shared-secret-file "$RUN/secret" \
  --static-map "$RUN/map.toml"
AGENT_PID=$LAST_PID
wait_listen "$AGENT_PID" "unix:$RUN/agent.sock" || die "the agent did not start"
spawn "$RUN/ns-proxy.log" "$MDPROXY" ns-proxy --runtime "$RUNTIME" --router-id "$(router_id 0)" \
  --listen "127.0.0.1:$CHAIN_PORT" --upstream-socket "$RUN/agent.sock" --max-conns-per-ip 1024
PROXY_PID=$LAST_PID
wait_listen "$PROXY_PID" "tcp:$CHAIN_PORT" || die "the ns-proxy did not start"
mkdir -p "$RUN/units-nginx"
NODE_NGINX_PORT=$((PORT_BASE + 4))
printf 'router_id = "%s"\nlisten = ["127.0.0.1:%d"]\n' "$(router_id 0)" "$NODE_NGINX_PORT" \
  >"$RUN/units-nginx/r0.toml"
spawn "$RUN/node-nginx.log" "$MDPROXY" node --runtime "$RUNTIME" --watch-dir "$RUN/units-nginx" \
  --shared-secret-file "$RUN/secret" --static-map "$RUN/map.toml" \
  --metadata-url "http://127.0.0.1:$NGINX_PORT" --max-conns-per-ip 1024
NODE_NGINX_PID=$LAST_PID
wait_listen "$NODE_NGINX_PID" "tcp:$NODE_NGINX_PORT" || die "the second node did not start"

declare -A URL OWN
URL[floor]="http://127.0.0.1:$NGINX_PORT$URL_PATH"
URL[node]="http://127.0.0.1:$(unit_port 0)$URL_PATH"
URL[ns-proxy+agent]="http://127.0.0.1:$CHAIN_PORT$URL_PATH"
URL[node-nginx]="http://127.0.0.1:$NODE_NGINX_PORT$URL_PATH"
OWN[floor]=""
OWN[node]="$NODE_PID"
OWN[ns-proxy+agent]="$PROXY_PID $AGENT_PID"
OWN[node-nginx]="$NODE_NGINX_PID"
TARGETS=(floor node ns-proxy+agent node-nginx)
for t in "${TARGETS[@]}"; do
  python3 "$BENCH_DIR/tools.py" get "${URL[$t]}" >"$RUN/got" || true
  code=$(head -1 "$RUN/got")
  [[ $code == 200 ]] || die "$t does not answer 200 ($code)"
done
ticks() { local s=0 p; for p in "$@"; do s=$((s + $(python3 "$BENCH_DIR/tools.py" cpu "$p" | awk '{ print $2 }'))); done; echo "$s"; }
HZ=$(getconf CLK_TCK)
declare -A RPS CPU
RUN_ROWS=()
for ((rep = 0; rep < REPEATS; rep++)); do
  for ((k = 0; k < ${#TARGETS[@]}; k++)); do
    t=${TARGETS[$(((k + rep) % ${#TARGETS[@]}))]}
    # shellcheck disable=SC2086  # OWN is a list of PIDs
    before=$(ticks ${OWN[$t]})
    out=$(timeout $((DURATION + 30)) "$WRK" -t2 -c"$CONNS" -d"${DURATION}s" "${URL[$t]}")
    # shellcheck disable=SC2086
    after=$(ticks ${OWN[$t]})
    rps=$(awk '/^Requests\/sec:/ { printf "%d", $2 }' <<<"$out")
    reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
    us=$(awk -v d=$((after - before)) -v hz="$HZ" -v n="$reqs" -v own="${OWN[$t]}" \
      'BEGIN { if (own == "") print "-"; else if (n > 0) printf "%.1f", d * 1e6 / hz / n; else print "NA" }')
    RPS[$t]+="$rps "
    CPU[$t]+="$us "
    RUN_ROWS+=("| $rep | $t | $rps | $us | $(loadavg) |")
    say "$t: $rps req/s, $us us CPU per request"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
m_floor=$(median <<<"${RPS[floor]}")
m_node=$(median <<<"${RPS[node]}")
m_chain=$(median <<<"${RPS[ns-proxy+agent]}")
c_node=$(median <<<"${CPU[node]}")
c_chain=$(median <<<"${CPU[ns-proxy+agent]}")
m_nginx=$(median <<<"${RPS[node-nginx]}")
c_nginx=$(median <<<"${CPU[node-nginx]}")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

{
  echo "# mdproxy node: per-namespace memory and the one-hop chain ($RUNTIME runtime)"
  echo
  machine_md
  echo "- run: NS_MAX=$NS_MAX, DURATION=${DURATION}s, REPEATS=$REPEATS, CONNS=$CONNS keep-alive"
  echo
  echo "## Memory of one node as it serves more namespaces"
  echo
  echo "Each namespace here is one --watch-dir file: a router with a loopback listener of its own"
  echo "(not root: the node's own namespace)."
  echo
  echo "| namespaces | state | VmRSS KiB | Pss KiB | private KiB |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${MEM_ROWS[@]}"
  echo
  echo "Growth per namespace, 1 → $NS_MAX (after a request on each): VmRSS **$per_rss KiB**, Pss **$per_pss KiB** (target < 64 KiB; one haproxy: 14 MiB VmRSS)."
  echo
  echo "## Requests/s at $CONNS keep-alive connections (medians of $REPEATS)"
  echo
  echo "| target | req/s | CPU µs per request (proxies' own processes) |"
  echo "|---|---|---|"
  echo "| floor (wrk → nginx) | $m_floor | |"
  echo "| node (wrk → node → mdproxy server) | $m_node | $c_node |"
  echo "| ns-proxy + agent (wrk → ns-proxy → agent → mdproxy server) | $m_chain | $c_chain |"
  echo "| node-nginx (wrk → node → nginx as the metadata server) | $m_nginx | $c_nginx |"
  echo
  echo "node ÷ floor = **$(ratio "$m_node" "$m_floor")**, node-nginx ÷ floor = **$(ratio "$m_nginx" "$m_floor")** (target ≥ 0.50); node ÷ ns-proxy+agent = **$(ratio "$m_node" "$m_chain")**; CPU per request ns-proxy+agent ÷ node = **$(ratio "$c_chain" "$c_node")**."
  echo "The floor is nginx answering by itself; the node and ns-proxy+agent chains also pay for mdproxy"
  echo "server (checking the signature, rendering the listing), which shares the 2 cores with wrk and"
  echo "the proxies; node-nginx takes the server out, as bench/run.sh's chain-nginx does."
  echo
  echo "Every run:"
  echo
  echo "| repeat | target | req/s | CPU µs/req | load average |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${RUN_ROWS[@]}"
} >"$OUT.md"
say "wrote $OUT.md"
