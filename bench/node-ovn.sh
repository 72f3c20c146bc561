#!/usr/bin/env bash
# bench/node-ovn.sh - how soon `mdproxy node --backend ovn` serves a new OVN network on a real
# chassis (root). DESIGN.md's target: a new OVN network is served < 100 ms after its first port
# binds here (the anchor's first boot on a new network took 11 s of CPU).
#
# In a private mount namespace with an empty tmpfs on /run/netns (so the node, which removes
# stale ovnmeta- namespaces, sees only this script's): NB and SB ovsdb-servers and ovn-northd;
# the chassis' own Open_vSwitch ovsdb-server, ovs-vswitchd with a netdev bridge, ovn-controller;
# a metadata server on loopback answering the X-Instance-ID it is sent; `mdproxy node --backend
# ovn --ovn-poll-interval $POLL`. Then NETS times: a new network (Logical_Switch and its
# metadata localport) and an instance port on it, written to the NB and synced to the SB; the
# instance's namespace made and its veth readied; then, timed from the moment its veth is
# plugged into the bridge (ovs-vsctl add-port with iface-id, which makes ovn-controller bind
# it):
#   claim     - until Port_Binding.chassis names this chassis (ovn-controller's part);
#   listening - until the node listens on :80 inside ovnmeta-<network> (the node's part on
#               top: its poll, the provisioning, the listener; it binds only once provisioning
#               is complete);
#   served    - until `curl http://169.254.169.254/openstack/latest/meta_data.json` from inside
#               the instance, tried from then on, answers its own id.
# All polled every 10 ms (each poll starts a process: a few ms). The instance asks only once
# the node listens: a SYN sent while the namespace is half-made is lost and TCP resends it 1 s
# later (the first runs of this script measured exactly that: ~1.06 s every time).
# Knobs: NETS (5), POLLS ("0.1 1": one node run per value), MDPROXY_BIN, BUILD, TIMEOUT (600),
# OUT (bench/results/node-ovn-<date>).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
HAPROXY=true NGINX=true WRK=true  # machine_md names them; this script uses none

[[ $(id -u) == 0 ]] || die "needs root (namespaces, OVS)"
if [[ -z ${MDPROXY_BENCH_PRIVATE:-} ]]; then
  exec unshare -m --propagation private env MDPROXY_BENCH_PRIVATE=1 "$0" "$@"
fi
mkdir -p /run/netns
mount -t tmpfs tmpfs /run/netns

NETS=${NETS:-5}
POLLS=${POLLS:-"0.1 1"}
TIMEOUT=${TIMEOUT:-600}
OUT=${OUT:-$BENCH_DIR/results/node-ovn-$(date -u +%Y-%m-%d)}
bench_init node-ovn "$TIMEOUT"
for t in ovsdb-server ovsdb-tool ovn-northd ovn-nbctl ovn-sbctl ovs-vsctl ovs-vswitchd \
  ovn-controller ip iptables ethtool curl python3; do
  command -v "$t" >/dev/null || [[ -x /usr/sbin/$t ]] || die "no $t"
done
export PATH=$PATH:/usr/sbin:/sbin

RUN=$(mktemp -d /tmp/mdproxy-node-ovn.XXXXXX)
BR=mdpbench$$
at_exit() {
  local ns
  for ns in $(ip netns list 2>/dev/null | cut -d' ' -f1); do ip netns delete "$ns" 2>/dev/null || true; done
  ovs-vsctl --db="unix:$RUN/ovs.sock" --timeout=5 --if-exists del-br "$BR" 2>/dev/null || true
  rm -rf "$RUN"
}
mdproxy_bin "$RUN"
mkdir -p "$(dirname "$OUT")"
export OVS_RUNDIR=$RUN OVS_LOGDIR=$RUN OVS_DBDIR=$RUN OVN_RUNDIR=$RUN OVN_LOGDIR=$RUN
now_ms() { date +%s%3N; }
uuid() { cat /proc/sys/kernel/random/uuid; }
nbctl() { ovn-nbctl --db="unix:$RUN/nb.sock" --timeout=20 "$@"; }
sbctl() { ovn-sbctl --db="unix:$RUN/sb.sock" --timeout=20 "$@"; }
vsctl() { ovs-vsctl --db="unix:$RUN/ovs.sock" --timeout=20 "$@"; }
until_ok() {  # until_ok SECONDS CMD... : retries CMD every 50 ms
  local deadline=$(($(now_ms) + $1 * 1000)); shift
  until "$@" >/dev/null 2>&1; do (($(now_ms) < deadline)) || return 1; sleep 0.05; done
}

say "starting NB, SB, northd, the chassis"
ovsdb-tool create "$RUN/nb.db" /usr/share/ovn/ovn-nb.ovsschema
ovsdb-tool create "$RUN/sb.db" /usr/share/ovn/ovn-sb.ovsschema
ovsdb-tool create "$RUN/ovs.db" /usr/share/openvswitch/vswitch.ovsschema
for db in nb sb ovs; do
  spawn "$RUN/$db.out" ovsdb-server "$RUN/$db.db" --remote="punix:$RUN/$db.sock" \
    --unixctl="$RUN/$db.ctl" --log-file="$RUN/$db.log" -vconsole:off
done
until_ok 20 nbctl show || die "NB did not start"
until_ok 20 sbctl show || die "SB did not start"
until_ok 20 vsctl --no-wait init || die "the local OVS database did not start"
spawn "$RUN/northd.out" ovn-northd --ovnnb-db="unix:$RUN/nb.sock" --ovnsb-db="unix:$RUN/sb.sock" \
  --unixctl="$RUN/northd.ctl" --log-file="$RUN/northd.log" -vconsole:off
until_ok 20 nbctl --wait=sb sync || die "northd did not sync"
CHASSIS=$(uuid)
vsctl --no-wait set Open_vSwitch . external_ids:system-id="$CHASSIS" \
  external_ids:ovn-remote="unix:$RUN/sb.sock" external_ids:ovn-encap-type=geneve \
  external_ids:ovn-encap-ip=127.0.0.1 external_ids:ovn-bridge="$BR"
vsctl --no-wait add-br "$BR" -- set Bridge "$BR" datapath_type=netdev fail-mode=secure \
  other_config:disable-in-band=true
spawn "$RUN/vswitchd.out" ovs-vswitchd "unix:$RUN/ovs.sock" --unixctl="$RUN/vswitchd.ctl" \
  --log-file="$RUN/vswitchd.log" -vconsole:off
spawn "$RUN/controller.out" ovn-controller "unix:$RUN/ovs.sock" --log-file="$RUN/controller.log" -vconsole:off
registered() { [[ -n $(sbctl --bare --columns=_uuid find Chassis_Private name="$CHASSIS") ]]; }
until_ok 30 registered || die "ovn-controller did not register"

# The metadata server: 200 with the X-Instance-ID it was sent.
cat >"$RUN/server.py" <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (self.headers.get("X-Instance-ID") or "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
SERVER_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
spawn "$RUN/server.out" python3 "$RUN/server.py" "$SERVER_PORT"
wait_listen "$LAST_PID" "tcp:$SERVER_PORT" || die "the metadata server did not start"
printf 's3cr3t\n' >"$RUN/secret"

SERIAL=0
# new_network: a network, its localport and one instance port, synced to the SB; the
# instance's namespace ready but not plugged. Sets NET PORT VM NS HOST.
new_network() {
  SERIAL=$((SERIAL + 1))
  NET=$(uuid) PORT=$(uuid) VM=$(uuid)
  local sw=neutron-$NET lp mac ip sub
  lp=$(uuid)
  sub=$((SERIAL % 250))
  ip=10.$sub.0.5
  mac=$(printf 'fa:16:3e:00:%02x:05' "$sub")
  nbctl --wait=sb ls-add "$sw" -- set Logical_Switch "$sw" "external_ids:\"neutron:network_name\"=net-$SERIAL" \
    -- lsp-add "$sw" "$lp" -- lsp-set-addresses "$lp" "fa:16:3e:ff:$(printf %02x "$sub"):02 10.$sub.0.2" \
    -- set Logical_Switch_Port "$lp" type=localport \
    "external_ids={\"neutron:cidrs\"=\"10.$sub.0.2/24\",\"neutron:device_id\"=\"ovnmeta-$NET\",\"neutron:device_owner\"=\"network:distributed\"}" \
    -- lsp-add "$sw" "$PORT" -- lsp-set-addresses "$PORT" "$mac $ip" -- lsp-set-port-security "$PORT" "$mac $ip" \
    -- set Logical_Switch_Port "$PORT" \
    "external_ids={\"neutron:cidrs\"=\"$ip/24\",\"neutron:device_id\"=\"$VM\",\"neutron:device_owner\"=\"compute:nova\",\"neutron:project_id\"=\"p\"}" \
    >/dev/null
  NS=vm-$SERIAL HOST=mdpb$$x$SERIAL
  ip netns add "$NS"
  ip link add "$HOST" type veth peer name eth0 netns "$NS"
  ip -n "$NS" link set lo up
  ip -n "$NS" link set eth0 address "$mac"
  ip -n "$NS" addr add "$ip/24" dev eth0
  ip -n "$NS" link set eth0 up
  ip -n "$NS" route add 169.254.169.254/32 via "10.$sub.0.2"
  ip netns exec "$NS" ethtool -K eth0 tx off >/dev/null
  # ARP retried every 10 ms (100 times) instead of every second: a request sent before the
  # localport is plugged would otherwise wait for the kernel's next probe, 1 s later, and the
  # figure would be the kernel's retry timer rather than the path's readiness.
  ip netns exec "$NS" sysctl -qw net.ipv4.neigh.eth0.retrans_time_ms=10 net.ipv4.neigh.eth0.mcast_solicit=100
  ip link set "$HOST" up
}
claimed() { [[ -n $(sbctl --bare --columns=chassis find Port_Binding logical_port="$PORT") ]]; }
listening() {
  [[ -n $(ip netns exec "ovnmeta-$NET" ss -Hltn 'sport = :80' 2>/dev/null) ]]
}
served() {
  [[ $(ip netns exec "$NS" curl -s --noproxy '*' --max-time 1 \
    http://169.254.169.254/openstack/latest/meta_data.json 2>/dev/null) == "$VM" ]]
}
wait_ms() {  # wait_ms SECONDS CMD : polls CMD every 10 ms; prints the ms since T0, or fails
  local deadline=$(($(now_ms) + $1 * 1000)); shift
  until "$@"; do (($(now_ms) < deadline)) || return 1; sleep 0.01; done
  echo $(($(now_ms) - T0))
}

{
  echo "# mdproxy node --backend ovn: time to serve a new OVN network"
  echo
  machine_md | sed -n 1,3p
  echo "- chassis: ovs-vswitchd (netdev datapath) + ovn-controller $(ovn-controller --version | head -1 | awk '{print $NF}'), NB/SB ovsdb-server $(ovsdb-server --version | head -1 | awk '{print $NF}') + ovn-northd, all on loopback"
  echo "- binary: $MDPROXY_SRC; $NETS networks per run, each with one instance port, one after another"
  echo
  echo "Times from plugging the instance's veth into the bridge (iface-id set), in ms:"
  echo "**claim** until Port_Binding.chassis is this chassis (ovn-controller), **listening** until"
  echo "the node listens in the provisioned ovnmeta- namespace, **served** until the instance's curl"
  echo "(tried from then on) reads its own id through the node. **node** = listening − claim: the"
  echo "node's share (its poll wait, provisioning, the listener), the figure the < 100 ms target is about."
  echo
  echo "| --ovn-poll-interval | network | claim | listening | served | node |"
  echo "|---:|---:|---:|---:|---:|---:|"
} >"$OUT.md"

for POLL in $POLLS; do
  say "node with --ovn-poll-interval $POLL"
  spawn "$RUN/node-$POLL.log" "$MDPROXY" node --backend ovn --ovn-sb-connection "unix:$RUN/sb.sock" \
    --ovs-db "unix:$RUN/ovs.sock" --ovn-poll-interval "$POLL" --shared-secret-file "$RUN/secret" \
    --metadata-url "http://127.0.0.1:$SERVER_PORT"
  NODE_PID=$LAST_PID
  until_ok 20 grep -q "registered as the metadata agent" "$RUN/node-$POLL.log" \
    || die "the node did not register: $(tail -5 "$RUN/node-$POLL.log")"
  nodes=()
  for ((i = 1; i <= NETS; i++)); do
    new_network
    T0=$(now_ms)
    vsctl add-port "$BR" "$HOST" -- set Interface "$HOST" external_ids:iface-id="$PORT" >/dev/null
    claim=$(wait_ms 20 claimed) || die "port $PORT never claimed"
    up=$(wait_ms 20 listening) || die "network $NET: no listener: $(tail -5 "$RUN/node-$POLL.log")"
    got=$(wait_ms 20 served) || die "network $NET never served: $(tail -5 "$RUN/node-$POLL.log")"
    nodes+=($((up - claim)))
    say "poll $POLL, network $i: claim $claim ms, listening $up ms, served $got ms"
    echo "| $POLL s | $i | $claim | $up | $got | $((up - claim)) |" >>"$OUT.md"
  done
  sorted=$(printf '%s\n' "${nodes[@]}" | sort -n | tr '\n' ' ')
  echo "| $POLL s | node's share, sorted | | | | $sorted|" >>"$OUT.md"
  stop_pids "$NODE_PID"
  forget "$NODE_PID"
  # The next run starts from what this one left: it adopts those networks first.
done
say "wrote $OUT.md"
