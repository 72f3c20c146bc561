#!/usr/bin/env bash
# bench/ovn.sh - `mdproxy agent --backend ovn` end to end against a real Southbound.
#
# For each size in SIZES (Port_Binding rows bound to chassis compute-1; for 10 000 the same
# number again bound to compute-2, so the agent's conditional replica holds half of the SB):
#   - a fresh standalone SB ovsdb-server (/usr/share/ovn/ovn-sb.ovsschema) on a Unix socket,
#     loaded by JSON-RPC `transact` straight over that socket, one transaction per 20 networks
#     (2 000 ports; what `ovsdb-client transact` sends, without its argv size limit); one
#     Datapath_Binding per 100 ports (external_ids:name = neutron-<uuid>), Neutron-shaped rows;
#   - nginx as the metadata server (bench/templates/nginx.conf), the agent (--backend ovn
#     --chassis compute-1) and `mdproxy ns-proxy --ovn-network-id NET0` on loopback; the first
#     port of network 0 has IP 127.0.0.1, the address the ns-proxy stamps for wrk;
#   - measured (AGENT_ENV, e.g. glibc malloc tunables, goes to the agent alone): time from starting the agent to the first 200 for the last port loaded
#     (replica load), the agent's VmRSS then and SETTLE s later (the agent returns the
#     snapshot's freed heap to the kernel from a 1 s tick), wrk req/s and p99 at CONNS keep-alive
#     connections for DURATION s through the ns-proxy (non-2xx counted), VmRSS after;
#     then the SB is stopped, a port is added to its file with `ovsdb-tool transact`, the SB is
#     restarted, and the time from its restart to the agent's first 200 for that port
#     (reconnect to fresh answers) is measured, asking the agent's socket directly (curl
#     --unix-socket with X-Forwarded-For and X-OVN-Network-ID); VmRSS then and SETTLE s
#     later, and VmHWM (the peak of the whole run).
# Knobs: SIZES ("100 10000 100000"), DURATION (10), CONNS (16), SETTLE (2), AGENT_ENV (VAR=VALUE words set
# for the agent only, e.g. MALLOC_TRIM_THRESHOLD_=0), MDPROXY_BIN, BUILD, PORT_BASE
# (19400), TIMEOUT (1500 s for the whole script), OUT (bench/results/ovn-<stamp>).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

SIZES=${SIZES:-"100 10000 100000"}
DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
SETTLE=${SETTLE:-2}
PORT_BASE=${PORT_BASE:-19400}
TIMEOUT=${TIMEOUT:-1500}
OUT=${OUT:-$BENCH_DIR/results/ovn-$(date -u +%Y-%m-%d-%H%M)}
bench_init ovn "$TIMEOUT"
need_tools
for t in ovsdb-server ovsdb-tool curl; do command -v "$t" >/dev/null || die "no $t"; done
SCHEMA=/usr/share/ovn/ovn-sb.ovsschema
[[ -f $SCHEMA ]] || die "no $SCHEMA (apt-get install ovn-common)"

RUN=$(mktemp -d /tmp/mdproxy-ovn-bench.XXXXXX)
at_exit() { rm -rf "$RUN"; }
mdproxy_bin "$RUN"
NGINX_PORT=$PORT_BASE
PROXY_PORT=$((PORT_BASE + 1))
ports_free "$PORT_BASE" 2
mkdir -p "$RUN/nginx-tmp" "$(dirname "$OUT")"
printf 's3cr3t' >"$RUN/secret"
render "$BENCH_DIR/templates/nginx.conf" "$RUN/nginx.conf" WORKERS=1 RUNDIR="$RUN" \
  PORT="$NGINX_PORT" SOCKET="$RUN/nginx.sock" BODY="ami-id\ninstance-id\n" BODY_DESC="a short listing"
spawn "$RUN/nginx.out" "$NGINX" -p "$RUN" -e "$RUN/nginx-error.log" -c "$RUN/nginx.conf" -g 'daemon off;'
wait_listen "$LAST_PID" "tcp:$NGINX_PORT" || die "nginx did not start"

net_uuid() { printf '6e000000-0000-4000-8000-%012x' "$1"; }
NET0=$(net_uuid 0)
now_ms() { date +%s%3N; }
rss_kib() { awk -v f="${2:-VmRSS}:" '$1==f{print $2}' "/proc/$1/status"; }
mib() { echo "scale=2; $1/1024" | bc; }

sb_start() {  # sb_start: the SB on $RUN/sb.sock; sets SB_PID
  spawn "$RUN/sb.out" ovsdb-server "$RUN/sb.db" --remote="punix:$RUN/sb.sock" \
    --unixctl="$RUN/sb.ctl" --log-file="$RUN/sb.log" -vconsole:off -vfile:warn
  SB_PID=$LAST_PID
}

ask() {  # ask NET IP : the agent's status for that client
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 --unix-socket "$RUN/agent.sock" \
    -H "X-Forwarded-For: $2" -H "X-OVN-Network-ID: $1" http://169.254.169.254/latest/meta-data/ || true
}

wait_200() {  # wait_200 NET IP SECONDS : polls every 10 ms until 200; fails at the deadline
  local deadline=$(($(now_ms) + $3 * 1000))
  while (($(now_ms) < deadline)); do
    [[ $(ask "$1" "$2") == 200 ]] && return 0
    sleep 0.01
  done
  return 1
}

# ovn_load SOCKET LOCAL REMOTE IDS: the rows, by JSON-RPC transact over the SB's socket, 20
# networks (2 000 ports) per transaction; writes DP0= and CH1= (UUIDs) to IDS.
ovn_load() {
  python3 - "$@" <<'PY'
import json, socket, sys
path, local, remote, ids = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_UNIX)
s.settimeout(120)
s.connect(path)
buf, dec, serial = b"", json.JSONDecoder(), [0]
def transact(ops):
    global buf
    serial[0] += 1
    s.sendall(json.dumps({"method": "transact", "params": ["OVN_Southbound"] + ops, "id": serial[0]}).encode())
    while True:
        try:
            msg, end = dec.raw_decode(buf.decode())
        except ValueError:
            chunk = s.recv(1 << 20)
            if not chunk:
                sys.exit("SB closed the connection")
            buf += chunk
            continue
        buf = buf[len(buf.decode()[:end].encode()):].lstrip()
        if msg.get("id") != serial[0]:
            continue  # an echo or notification
        res = msg.get("result") or []
        errs = [r for r in res if "error" in r]
        if msg.get("error") or errs:
            sys.exit(f"transact failed: {msg.get('error') or errs[:2]}")
        return res
def chassis(i):
    name = f"compute-{i}"
    res = transact([
        {"op": "insert", "table": "Encap", "uuid-name": "e", "row": {"type": "geneve", "ip": f"192.0.2.{i}", "chassis_name": name}},
        {"op": "insert", "table": "Chassis", "uuid-name": "c", "row": {"name": name, "hostname": name, "encaps": ["named-uuid", "e"]}},
    ])
    return res[1]["uuid"][1]
ch = {1: chassis(1), 2: chassis(2)}
def net_uuid(n): return "6e000000-0000-4000-8000-%012x" % n
def rows(first_net, ports, chassis_uuid):
    nets = (ports + 99) // 100
    for b in range(0, nets, 20):
        ops = []
        for n in range(first_net + b, first_net + min(b + 20, nets)):
            ops.append({"op": "insert", "table": "Datapath_Binding", "uuid-name": f"d{n}", "row": {
                "tunnel_key": n + 1,
                "external_ids": ["map", [["name", f"neutron-{net_uuid(n)}"], ["name2", f"net-{n}"]]]}})
            for j in range(min(100, ports - (n - first_net) * 100)):
                i = (n - first_net) * 100 + j
                ip = "127.0.0.1" if (n, j) == (0, 0) else f"10.{n >> 8 & 255}.{n & 255}.{10 + j}"
                dev = "%08x-0000-4000-8000-%012x" % (n, j)
                ops.append({"op": "insert", "table": "Port_Binding", "row": {
                    "logical_port": "%08x-1111-4000-8000-%012x" % (n, j), "type": "",
                    "tunnel_key": j + 1, "datapath": ["named-uuid", f"d{n}"],
                    "chassis": ["uuid", chassis_uuid],
                    "mac": f"fa:16:3e:{n >> 8 & 255:02x}:{n & 255:02x}:{j:02x} {ip}",
                    "external_ids": ["map", [
                        ["neutron:device_id", dev], ["neutron:device_owner", "compute:nova"],
                        ["neutron:project_id", "%032x" % (n % 7)], ["neutron:cidrs", f"{ip}/24"],
                        ["neutron:network_name", f"neutron-{net_uuid(n)}"], ["neutron:port_name", f"port-{i}"],
                        ["neutron:revision_number", "4"], ["neutron:security_group_ids", "%032x" % (n % 5)]]]}})
        transact(ops)
rows(0, local, ch[1])
rows(50000, remote, ch[2])
dp0 = transact([{"op": "select", "table": "Datapath_Binding", "where": [["tunnel_key", "==", 1]], "columns": ["_uuid"]}])
with open(ids, "w") as f:
    f.write(f"DP0={dp0[0]['rows'][0]['_uuid'][1]}\nCH1={ch[1]}\n")
PY
}

{
  echo "# mdproxy agent --backend ovn, end to end ($(date -u +%Y-%m-%d))"
  echo
  machine_md
  echo "- ovsdb-server $(ovsdb-server --version | awk 'NR==1{print $NF}'); load average at start $(loadavg)"
  echo "- command: SIZES=\"$SIZES\" DURATION=$DURATION CONNS=$CONNS bench/ovn.sh"
  echo
  echo "| local ports | SB Port_Binding rows | SB load | agent start → first 200 | agent VmRSS loaded / ${SETTLE} s later | req/s ($CONNS ka) | p99 | non-2xx / errors | VmRSS after wrk | SB restart → accepting / → fresh 200 | VmRSS after resync / ${SETTLE} s later / VmHWM | load avg |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|"
} >"$OUT.md"

for n in $SIZES; do
  remote=0; ((n == 10000)) && remote=$n
  rm -f "$RUN/sb.db" "$RUN/sb.sock" "$RUN/agent.sock"
  ovsdb-tool create "$RUN/sb.db" "$SCHEMA"
  sb_start
  wait_listen "$SB_PID" "unix:$RUN/sb.sock" || die "SB did not start"
  say "loading $n local + $remote remote ports"
  t0=$(now_ms)
  ovn_load "$RUN/sb.sock" "$n" "$remote" "$RUN/ids" || die "load failed"
  load_ms=$(($(now_ms) - t0))
  rows=$((n + remote))
  last_net=$(((n - 1) / 100)); last_j=$(((n - 1) % 100))
  last_ip=10.$((last_net >> 8 & 255)).$((last_net & 255)).$((10 + last_j))
  ((n == 1)) && last_ip=127.0.0.1

  t0=$(now_ms)
  # shellcheck disable=SC2086  # AGENT_ENV: VAR=VALUE words, e.g. MALLOC_TRIM_THRESHOLD_=0
  spawn "$RUN/agent-$n.log" env ${AGENT_ENV:-} "$MDPROXY" agent --backend ovn --ovn-sb-connection "unix:$RUN/sb.sock" \
    --chassis compute-1 --metadata-url "http://127.0.0.1:$NGINX_PORT" \
    --shared-secret-file "$RUN/secret" --listen-socket "$RUN/agent.sock" --ovn-probe-interval 5
  AGENT_PID=$LAST_PID
  wait_listen "$AGENT_PID" "unix:$RUN/agent.sock" || die "agent did not start (log: $(tail -3 "$RUN/agent-$n.log"))"
  wait_200 "$(net_uuid "$last_net")" "$last_ip" 120 || die "no 200 for the last port within 120 s"
  start_ms=$(($(now_ms) - t0))
  if ((remote)); then  # network 50000's first port, bound to compute-2
    [[ $(ask "$(net_uuid 50000)" 10.195.80.10) == 404 ]] || die "a compute-2 port answered: not conditional"
  fi
  rss0=$(rss_kib "$AGENT_PID")
  sleep "$SETTLE"
  rss0s=$(rss_kib "$AGENT_PID")

  spawn "$RUN/nsproxy-$n.log" "$MDPROXY" ns-proxy --ovn-network-id "$NET0" \
    --listen "127.0.0.1:$PROXY_PORT" --upstream-socket "$RUN/agent.sock" --max-conns-per-ip 1024
  NS_PID=$LAST_PID
  wait_listen "$NS_PID" "tcp:$PROXY_PORT" || die "ns-proxy did not start"
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PROXY_PORT/latest/meta-data/" || true)
  [[ $code == 200 ]] || die "through the ns-proxy: $code"
  la=$(loadavg)
  "$WRK" -t2 -c"$CONNS" -d"${DURATION}s" --timeout 5s --latency \
    "http://127.0.0.1:$PROXY_PORT/latest/meta-data/" >"$RUN/wrk-$n.txt" 2>&1 || die "wrk failed"
  rps=$(awk '/^Requests\/sec/{print $2}' "$RUN/wrk-$n.txt")
  p99=$(awk '$1=="99%"{print $2}' "$RUN/wrk-$n.txt")
  bad=$(awk '/Non-2xx/{print $NF} /Socket errors/{print}' "$RUN/wrk-$n.txt" | paste -sd' ')
  rss1=$(rss_kib "$AGENT_PID")
  kill -0 "$AGENT_PID" || die "agent died under load"

  # Reconnect: the SB goes away, a port appears in its file, the SB comes back.
  stop_pids "$SB_PID"; forget "$SB_PID"
  # shellcheck disable=SC1091  # written by ovn_load
  . "$RUN/ids"
  ovsdb-tool transact "$RUN/sb.db" "[\"OVN_Southbound\",{\"op\":\"insert\",\"table\":\"Port_Binding\",\"row\":{\"logical_port\":\"fresh-port\",\"type\":\"\",\"tunnel_key\":250,\"datapath\":[\"uuid\",\"$DP0\"],\"chassis\":[\"uuid\",\"$CH1\"],\"mac\":\"fa:16:3e:ff:ff:fe 10.0.0.250\",\"external_ids\":[\"map\",[[\"neutron:device_id\",\"fresh-vm\"],[\"neutron:project_id\",\"p\"]]]}}]" >/dev/null
  [[ $(ask "$NET0" 10.0.0.250) == 404 ]] || die "the fresh port answered before the SB came back"
  t0=$(now_ms)
  sb_start
  wait_listen "$SB_PID" "unix:$RUN/sb.sock" || die "SB did not restart"
  sb_up_ms=$(($(now_ms) - t0))
  wait_200 "$NET0" 10.0.0.250 60 || die "no fresh 200 within 60 s of the SB's restart"
  fresh_ms=$(($(now_ms) - t0))
  kill -0 "$AGENT_PID" || die "agent died"
  rss2=$(rss_kib "$AGENT_PID")
  sleep "$SETTLE"
  rss2s=$(rss_kib "$AGENT_PID"); hwm=$(rss_kib "$AGENT_PID" VmHWM)
  say "$n: load ${load_ms} ms, first 200 ${start_ms} ms, rss ${rss0} KiB, $rps req/s, p99 $p99, after ${rss1} KiB, fresh ${fresh_ms} ms"
  echo "| $n | $rows | $(echo "scale=1; $load_ms/1000" | bc) s | $start_ms ms | $(mib "$rss0") / $(mib "$rss0s") MiB | $rps | $p99 | ${bad:-0} | $(mib "$rss1") MiB | $sb_up_ms / $fresh_ms ms | $(mib "$rss2") / $(mib "$rss2s") / $(mib "$hwm") MiB | $la |" >>"$OUT.md"
  cp "$RUN/wrk-$n.txt" "$OUT-wrk-$n.txt"
  warns=$(grep -ciE 'warn|error' "$RUN/agent-$n.log" || true)
  say "agent log, $n ports: $warns warn/error lines (first ones in $OUT-agent-$n-warnings.txt)"
  grep -iE 'warn|error' "$RUN/agent-$n.log" | head -5 >"$OUT-agent-$n-warnings.txt" || true
  stop_pids "$NS_PID" "$AGENT_PID" "$SB_PID"; forget "$NS_PID" "$AGENT_PID" "$SB_PID"
done
say "results: $OUT.md"
cat "$OUT.md"
