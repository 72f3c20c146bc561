#!/usr/bin/env bash
# The seed's path in real network namespaces (issue 8, item 1), as Neutron's L3 agent lays it out:
#
#   mdp-inst-PID (50.0.0.44/24, default via 50.0.0.1)
#     │ veth
#   qrouter-UUID: qr-… 50.0.0.1/24 and reference §A4's iptables rules
#     │   mangle: mark 169.254.169.254:80 from qr-+;  nat: REDIRECT it to :9697
#     │   filter: INPUT accepts marked packets, drops the rest to :9697
#     │ `mdproxy ns-proxy` with the legacy neutron-ns-metadata-proxy flags, inside the namespace
#     │ HTTP over the Unix socket (a file: namespaces share the file system)
#   root namespace: `mdproxy agent` (static map) → `mdproxy server` on 127.0.0.1
#
# From inside the instance namespace, `curl http://169.254.169.254/latest/meta-data/instance-id`
# must print the instance's EC2 id, and a direct request to 50.0.0.1:9697 (unmarked) must be
# dropped. Then the same request must work through `haproxy -f <Neutron's rendered config>`
# with the shim dist/neutron/mdproxy-haproxy as haproxy (how Pike and later spawn the proxy).
# A container namespace behind the instance (NAT) must get no IMDSv2 token: its answer leaves
# the ns-proxy with TTL 1 (its IMDSv1 GET still works), while the instance gets and uses one.
# The shim must also turn the config Neutron's OVN metadata agent renders into `mdproxy ns-proxy
# --ovn-network-id …` (checked with its dry run: the command line, not a run in `ovnmeta-`).
# Then node mode (issue 20): the shim with MDPROXY_NODE_DIR registers each of 50 router
# namespaces (MDPROXY_NODE_ROUTERS) through `mdproxy node-register`, each with the same rules
# and an instance at the same 50.0.0.44, and one `mdproxy node` serves them all: each instance
# reads its own instance-id; SIGTERM to one registration stops that namespace only.
# SIGTERM must stop every role cleanly. Everything is torn down on exit, also on
# failure: the processes (by pid), the namespaces (with them the veth pairs and the rules)
# and the temporary directory. Nothing outside the namespaces this script creates is touched.
#
# Needs root, iproute2, iptables (legacy or nft) and curl. Where network namespaces cannot be
# created it prints "netns: skipped: <reason>" and exits 0, unless MDPROXY_NETNS_TEST=required
# (CI sets it), which makes that a failure. MDPROXY_BIN overrides the binary (default: a debug
# build, built here if needed).
set -euo pipefail
cd "$(dirname "$0")/.."

skip() {
  if [ "${MDPROXY_NETNS_TEST:-}" = required ]; then
    echo "netns: FAILED: cannot run ($1) and MDPROXY_NETNS_TEST=required" >&2
    exit 1
  fi
  echo "netns: skipped: $1"
  exit 0
}
fail() {
  echo "netns: FAILED: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || skip "not root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)"
for tool in ip ss iptables curl; do
  command -v "$tool" >/dev/null 2>&1 || skip "$tool is not installed (Debian: apt-get install iproute2 iptables curl)"
done

if [ -z "${MDPROXY_BIN:-}" ]; then
  cargo build -q -p mdproxy
  MDPROXY_BIN=${CARGO_TARGET_DIR:-target}/debug/mdproxy
fi
bin=$(realpath "$MDPROXY_BIN")
[ -x "$bin" ] || fail "no binary at $bin"

uuid() { cat /proc/sys/kernel/random/uuid; }
router=$(uuid)
network=$(uuid)
port_id=$(uuid)
instance=$(uuid)
project=$(uuid | tr -d -)
ec2_id=$(printf 'i-%08x' $$)
inst_ns=mdp-inst-$$
router_ns=qrouter-$router
qr_dev=qr-${port_id:0:11} # as Neutron names a router's internal port device

tmp=$(mktemp -d /tmp/mdp-netns.XXXXXX)
state=$tmp/state
socket=$state/metadata_proxy
pid_file=$state/external/pids/$router.pid
mkdir -p "$state/external/pids" "$tmp/log" "$tmp/instances"

pids=()        # every process started, for the teardown
namespaces=()  # every namespace created (only those are deleted)

# Whether process $1 has exited (a zombie counts: our children stay zombies until reaped).
gone() {
  local st
  st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 0
  [ -z "$st" ] || [ "$st" = Z ]
}

# Sends SIGTERM to $1 and waits up to $2 seconds for it to exit, then SIGKILLs it; returns its
# exit status (137 when it had to be killed).
stop() {
  local pid=$1 end=$((SECONDS + $2)) rc=0
  kill -TERM "$pid" 2>/dev/null || true
  while ! gone "$pid" && [ "$SECONDS" -lt "$end" ]; do sleep 0.1; done
  gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || rc=$?
  return "$rc"
}

teardown() {
  local rc=$?
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do stop "$pid" 5 || true; done
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || echo "netns: cannot delete namespace $ns" >&2; done
  if [ "$rc" -ne 0 ]; then
    for log in "$tmp"/log/*; do
      [ -f "$log" ] || continue
      echo "--- ${log##*/} (last 40 lines)" >&2
      tail -n 40 "$log" >&2
    done
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# Polls `$3…` every 0.1 s until it succeeds; fails after $2 seconds, or at once if process $1
# (0: none) has exited.
wait_for() {
  local pid=$1 secs=$2 end=$((SECONDS + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$pid" != 0 ] && gone "$pid"; then fail "process $pid exited while waiting for: $*"; fi
    [ "$SECONDS" -lt "$end" ] || fail "not within ${secs}s: $*"
    sleep 0.1
  done
}

in_router() { ip netns exec "$router_ns" "$@"; }
in_inst() { ip netns exec "$inst_ns" "$@"; }

# --- the network: two namespaces, a veth pair, addresses, routes
if ! err=$(ip netns add "$inst_ns" 2>&1); then
  skip "cannot create a network namespace: ${err:-ip netns add failed}"
fi
namespaces+=("$inst_ns")
ip netns add "$router_ns" || fail "cannot create $router_ns"
namespaces+=("$router_ns")
ip link add "$qr_dev" netns "$router_ns" type veth peer name eth0 netns "$inst_ns" ||
  fail "cannot create the veth pair"
in_router ip link set lo up
in_router ip addr add 50.0.0.1/24 dev "$qr_dev"
in_router ip link set "$qr_dev" up
in_inst ip link set lo up
in_inst ip addr add 50.0.0.44/24 dev eth0
in_inst ip link set eth0 up
in_inst ip route add default via 50.0.0.1

# --- reference §A4: the L3 agent's metadata rules (IPv4; this network has no IPv6), in router
# namespace $1
metadata_rules() {
  local ns=$1
  ipt_in() { ip netns exec "$ns" iptables -w "$@"; }
  ipt_in -t mangle -A PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 \
    -j MARK --set-xmark 0x1/0xffff
  ipt_in -N scope
  ipt_in -A FORWARD -j scope
  ipt_in -A scope -m mark --mark 0x1/0xffff -j DROP
  ipt_in -t nat -A PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 \
    -j REDIRECT --to-ports 9697
  ipt_in -A INPUT -m mark --mark 0x1/0xffff -j ACCEPT
  ipt_in -A INPUT -p tcp -m tcp --dport 9697 -j DROP
}
ipt() { in_router iptables -w "$@"; }
metadata_rules "$router_ns"

# --- the data: one instance, its port on the router's network
printf 's3cr3t\n' >"$tmp/secret"
chmod 600 "$tmp/secret"
cat >"$tmp/instances/$instance.toml" <<EOF
uuid = "$instance"
project_id = "$project"
name = "netns-vm"
ec2_id = "$ec2_id"
fixed_ips = ["50.0.0.44"]
EOF
cat >"$tmp/ports.toml" <<EOF
[[router]]
id = "$router"
networks = ["$network"]

[[port]]
network = "$network"
ip = "50.0.0.44"
device_id = "$instance"
project_id = "$project"
EOF

# --- the roles
"$bin" server --instances "$tmp/instances" --shared-secret-file "$tmp/secret" \
  --listen 127.0.0.1:0 --log-file "$tmp/log/server.log" &
server_pid=$!
pids+=("$server_pid")
wait_for "$server_pid" 20 grep -q 'server listening on 127\.0\.0\.1:' "$tmp/log/server.log"
server_port=$(sed -n 's/.*server listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/log/server.log" | head -n 1)

"$bin" agent --listen-socket "$socket" --shared-secret-file "$tmp/secret" \
  --metadata-url "http://127.0.0.1:$server_port" --static-map "$tmp/ports.toml" \
  --log-file "$tmp/log/agent.log" &
agent_pid=$!
pids+=("$agent_pid")
# Any HTTP answer will do (a request without the proxy's headers gets 400).
wait_for "$agent_pid" 20 curl -s -o /dev/null --max-time 2 --unix-socket "$socket" http://agent/

# As the pre-Pike L3 agent ran neutron-ns-metadata-proxy (reference §A6). Not through a shell
# function, which would fork a subshell: `ip netns exec` execs, so $! is mdproxy itself.
ip netns exec "$router_ns" "$bin" ns-proxy --pid_file="$pid_file" --metadata_proxy_socket="$socket" \
  --router_id="$router" --state_path="$state" --metadata_port=9697 --verbose \
  --log-file="neutron-ns-metadata-proxy-$router.log" --log-dir="$tmp/log" &
proxy_pid=$!
pids+=("$proxy_pid")
listening() { in_router ss -Hltn 'sport = :9697' | grep -q .; }
wait_for "$proxy_pid" 20 listening
wait_for "$proxy_pid" 20 test -s "$pid_file"
[ "$(cat "$pid_file")" = "$proxy_pid" ] || fail "pid file says $(cat "$pid_file"), not $proxy_pid"

# --- what the instance sees
got=$(in_inst curl -sS -f --noproxy '*' --max-time 10 http://169.254.169.254/latest/meta-data/instance-id) ||
  fail "the metadata request from inside $inst_ns failed"
[ "$got" = "$ec2_id" ] || fail "instance-id: got '$got', expected '$ec2_id'"
echo "netns: read instance-id $got from inside $inst_ns (50.0.0.44 → 169.254.169.254:80 → REDIRECT :9697 in $router_ns → agent → server)"

# --- IMDSv2's hop limit, on the wire: a container behind the instance (one more router, NAT).
# The agent answers the token PUT; the ns-proxy sends that answer with TTL 1, which reaches the
# instance but dies at the instance's forwarding to the container (IMDSv1 GETs still pass).
in_ctr() { ip netns exec "$ctr_ns" "$@"; }
ctr_ns=mdp-ctr-$$
ip netns add "$ctr_ns" || fail "cannot create $ctr_ns"
namespaces+=("$ctr_ns")
ip link add veth-ctr netns "$inst_ns" type veth peer name eth0 netns "$ctr_ns" ||
  fail "cannot create the container's veth pair"
in_inst ip addr add 172.31.0.1/24 dev veth-ctr
in_inst ip link set veth-ctr up
in_ctr ip link set lo up
in_ctr ip addr add 172.31.0.2/24 dev eth0
in_ctr ip link set eth0 up
in_ctr ip route add default via 172.31.0.1
in_inst sysctl -qw net.ipv4.ip_forward=1
in_inst iptables -w -t nat -A POSTROUTING -s 172.31.0.0/24 -o eth0 -j MASQUERADE
put_token() {
  "$@" curl -sS -f --noproxy '*' --max-time 5 -X PUT \
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token
}
token=$(put_token in_inst) || fail "the token PUT from inside $inst_ns failed"
[ "${#token}" -eq 64 ] || fail "the token is ${#token} characters, not 64: '$token'"
got=$(in_inst curl -sS -f --noproxy '*' --max-time 10 -H "X-aws-ec2-metadata-token: $token" \
  http://169.254.169.254/latest/meta-data/instance-id) || fail "the request with the token failed"
[ "$got" = "$ec2_id" ] || fail "instance-id with the token: got '$got', expected '$ec2_id'"
got=$(in_ctr curl -sS -f --noproxy '*' --max-time 10 http://169.254.169.254/latest/meta-data/instance-id) ||
  fail "the IMDSv1 request from the container behind the instance failed"
[ "$got" = "$ec2_id" ] || fail "instance-id from the container: got '$got', expected '$ec2_id'"
rc=0
put_token in_ctr >/dev/null 2>&1 || rc=$?
[ "$rc" -eq 28 ] || fail "the token's answer reached the container one router away (curl exit $rc; 28 is a timeout)"
echo "netns: a token from inside $inst_ns (64 chars, used once), none from a container one router behind it (the answer left with TTL 1; its IMDSv1 GET passed)"

rc=0
in_inst curl -s -o /dev/null --noproxy '*' --max-time 3 http://50.0.0.1:9697/ || rc=$?
[ "$rc" -eq 28 ] || fail "a direct request to 50.0.0.1:9697 was not dropped (curl exit $rc; 28 is a timeout)"
dropped=$(ipt -L INPUT -n -v -x | awk '$3 == "DROP" && /dpt:9697/ { print $1 }')
[ "${dropped:-0}" -gt 0 ] || fail "the INPUT DROP rule for :9697 counted no packet"
echo "netns: direct request to 50.0.0.1:9697 dropped ($dropped packets on the INPUT DROP rule; curl timed out)"

# SIGTERM: the ns-proxy drains, exits 0 and removes its pid file.
rc=0
stop "$proxy_pid" 15 || rc=$?
[ "$rc" -eq 0 ] || fail "the ns-proxy exited with status $rc after SIGTERM"
[ ! -e "$pid_file" ] || fail "the ns-proxy left its pid file behind"

# --- Pike and later: the L3 agent runs `haproxy -f <its rendered config>` in the namespace; the
# shim dist/neutron/mdproxy-haproxy, installed as haproxy, reads that config and execs mdproxy,
# which daemonizes and writes the pid file Neutron watches, as haproxy does. The config is
# Neutron's template (reference §A1) with the proxy's user `nobody`: privileges are dropped.
nobody_group=$(id -gn nobody)
bind='0.0.0.0:9697'
[ ! -d /proc/sys/net/ipv6 ] || bind=':::9697' # Neutron binds :: when IPv6 is on
haproxy_pid_file=$state/external/pids/$router.pid.haproxy
haproxy_cfg=$state/ns-metadata-proxy/$router.conf
mkdir -p "$state/ns-metadata-proxy"
cat >"$haproxy_cfg" <<EOF
global
    log         /dev/log local0 info
    log-tag     haproxy-metadata-proxy-$router
    user        nobody
    group       $nobody_group
    maxconn     1024
    nbthread    2
    pidfile     $haproxy_pid_file
    daemon

defaults
    log global
    mode http
    option httplog
    option dontlognull
    option http-server-close
    option forwardfor
    retries                 3
    timeout http-request    30s
    timeout connect         30s
    timeout client          32s
    timeout server          32s
    timeout http-keep-alive 30s

listen listener
    bind $bind

    server metadata $socket

    http-request del-header X-Neutron-Network-ID
    http-request set-header X-Neutron-Router-ID $router
EOF
# `nobody` must reach the agent's socket.
chmod 755 "$tmp" "$state"
chmod 666 "$socket"
MDPROXY=$bin MDPROXY_LOG_DIR=$tmp/log ip netns exec "$router_ns" dist/neutron/mdproxy-haproxy -f "$haproxy_cfg" ||
  fail "the haproxy shim exited with status $?"
# It returned: mdproxy is in the background, as haproxy would be.
wait_for 0 20 test -s "$haproxy_pid_file"
daemon_pid=$(cat "$haproxy_pid_file")
pids+=("$daemon_pid")
wait_for "$daemon_pid" 20 listening
grep -q "$router" "/proc/$daemon_pid/cmdline" || fail "the daemon's command line does not name the router"
uid=$(awk '$1 == "Uid:" { print $3 }' "/proc/$daemon_pid/status")
[ "$uid" = "$(id -u nobody)" ] || fail "the daemon runs as uid $uid, not nobody"
got=$(in_inst curl -sS -f --noproxy '*' --max-time 10 http://169.254.169.254/latest/meta-data/instance-id) ||
  fail "the metadata request through the haproxy shim failed"
[ "$got" = "$ec2_id" ] || fail "instance-id through the haproxy shim: got '$got', expected '$ec2_id'"
echo "netns: read instance-id $got from inside $inst_ns through \`haproxy -f\` (the shim: mdproxy ns-proxy, daemonized, as nobody, on $bind)"
# Not our child: its exit status is not ours to read, so its log tells how it ended.
stop "$daemon_pid" 15 || true
grep -q 'ns-proxy stopped' "$tmp/log/haproxy-metadata-proxy-$router.log" ||
  fail "the daemonized ns-proxy did not stop cleanly on SIGTERM"

# --- OVN: the config Neutron's OVN metadata agent renders for an `ovnmeta-` namespace (global
# and defaults as above; the IPv6 bind names the namespace's tap device, here `lo`: ifindex 1).
# With MDPROXY_HAPROXY_DRY_RUN=1 the shim prints the command it would exec, one argument a line.
ovn_cfg=$tmp/ovn-$network.conf
{
  sed -n '/^global/,/^listen/p' "$haproxy_cfg" | sed '$d'
  cat <<EOF
listen listener
    bind 169.254.169.254:80
    bind fe80::a9fe:a9fe:80 interface lo
    server metadata $socket

    http-request add-header X-OVN-Network-ID $network
EOF
} >"$ovn_cfg"
shim() {
  MDPROXY=$bin MDPROXY_HAPROXY=/nonexistent/haproxy MDPROXY_LOG_DIR=$tmp/log MDPROXY_HAPROXY_DRY_RUN=1 \
    dist/neutron/mdproxy-haproxy -f "$1" | tr '\n' ' '
}
want="$bin ns-proxy --ovn-network-id $network --user nobody --group $nobody_group --max-conns 1024"
want+=" --pid-file $haproxy_pid_file --daemonize --timeout-head 30 --timeout-connect 30"
want+=" --timeout-response 32 --timeout-idle 30 --listen 169.254.169.254:80"
want+=" --listen [fe80::a9fe:a9fe%1]:80 --upstream-socket $socket"
want+=" --log-file $tmp/log/haproxy-metadata-proxy-$router.log "
got=$(shim "$ovn_cfg")
[ "$got" = "$want" ] || fail "the shim's command for an OVN config: got '$got', expected '$want'"
# What mdproxy does not do still goes to the real haproxy (OVN's router header, say).
sed -i 's/X-OVN-Network-ID/X-OVN-Router-ID/' "$ovn_cfg"
got=$(shim "$ovn_cfg")
[ "$got" = "/nonexistent/haproxy -f $ovn_cfg " ] || fail "the shim did not leave X-OVN-Router-ID to haproxy: '$got'"
echo "netns: the haproxy shim turns Neutron's OVN config into mdproxy ns-proxy --ovn-network-id (dry run)"

# --- node mode: with MDPROXY_NODE_DIR the shim execs `mdproxy node-register` instead (dry run).
node_dir=$tmp/node-units
mkdir -p "$node_dir"
node_listen=0.0.0.0:9697
[ "$bind" != ':::9697' ] || node_listen='[::]:9697'
want="$bin node-register --router-id $router --dir $node_dir --namespace $router_ns"
want+=" --listen $node_listen --pid-file $haproxy_pid_file --daemonize --max-conns 1024 "
got=$(MDPROXY_NODE_DIR=$node_dir MDPROXY_NODE_NAMESPACE=$router_ns shim "$haproxy_cfg")
[ "$got" = "$want" ] || fail "the shim's node-mode command: got '$got', expected '$want'"
# Rootwrap resets the environment: the directory may come from the shim's defaults file.
printf 'MDPROXY_NODE_DIR=%s\n' "$node_dir" >"$tmp/shim-defaults"
got=$(MDPROXY_HAPROXY_DEFAULTS=$tmp/shim-defaults MDPROXY_NODE_NAMESPACE=$router_ns shim "$haproxy_cfg")
[ "$got" = "$want" ] || fail "the shim's node mode from its defaults file: got '$got'"
echo "netns: with MDPROXY_NODE_DIR the haproxy shim execs mdproxy node-register (dry run)"

# --- node mode for real: $n_routers router namespaces, each with the L3 agent's rules and an
# instance at the same address 50.0.0.44, registered through the shim (node-register,
# daemonized, as Neutron's process monitor expects) and served by one `mdproxy node`.
n_routers=${MDPROXY_NODE_ROUTERS:-50}
node_map=$tmp/node-ports.toml
: >"$node_map"
node_routers=() node_ec2=()
for i in $(seq 1 "$n_routers"); do
  r=$(uuid) net=$(uuid) inst=$(uuid) port=$(uuid)
  ec2=$(printf 'i-%05x%03x' $$ "$i")
  rns=qrouter-$r ins=mdp-ni-$$-$i dev=qr-${port:0:11}
  ip netns add "$rns" || fail "cannot create $rns"
  namespaces+=("$rns")
  ip netns add "$ins" || fail "cannot create $ins"
  namespaces+=("$ins")
  ip link add "$dev" netns "$rns" type veth peer name eth0 netns "$ins" ||
    fail "cannot create the veth pair of $rns"
  ip netns exec "$rns" ip link set lo up
  ip netns exec "$rns" ip addr add 50.0.0.1/24 dev "$dev"
  ip netns exec "$rns" ip link set "$dev" up
  ip netns exec "$ins" ip link set lo up
  ip netns exec "$ins" ip addr add 50.0.0.44/24 dev eth0
  ip netns exec "$ins" ip link set eth0 up
  ip netns exec "$ins" ip route add default via 50.0.0.1
  metadata_rules "$rns"
  printf 'uuid = "%s"\nproject_id = "%s"\nname = "node-vm-%s"\nec2_id = "%s"\nfixed_ips = ["50.0.0.44"]\n' \
    "$inst" "$project" "$i" "$ec2" >"$tmp/instances/$inst.toml"
  printf '[[router]]\nid = "%s"\nnetworks = ["%s"]\n\n[[port]]\nnetwork = "%s"\nip = "50.0.0.44"\ndevice_id = "%s"\nproject_id = "%s"\n\n' \
    "$r" "$net" "$net" "$inst" "$project" >>"$node_map"
  sed -e "s/$router/$r/g" "$haproxy_cfg" >"$state/ns-metadata-proxy/$r.conf"
  MDPROXY=$bin MDPROXY_NODE_DIR=$node_dir ip netns exec "$rns" \
    dist/neutron/mdproxy-haproxy -f "$state/ns-metadata-proxy/$r.conf" ||
    fail "the haproxy shim (node mode) exited with status $?"
  node_routers+=("$r")
  node_ec2+=("$ec2")
done
kill -HUP "$server_pid" # the server reads the new instance files
"$bin" node --watch-dir "$node_dir" --rescan-interval 0.2 --shared-secret-file "$tmp/secret" \
  --metadata-url "http://127.0.0.1:$server_port" --static-map "$node_map" \
  --log-file "$tmp/log/node.log" &
node_pid=$!
pids+=("$node_pid")
# The node, one process, listens in router namespace qrouter-$1.
serves() { ip netns exec "qrouter-$1" ss -Hltnp 'sport = :9697' | grep -q "pid=$node_pid,"; }
not_serves() { ! serves "$1"; }
# Instance namespace $1 reads instance-id $2.
reads() {
  local got
  got=$(ip netns exec "$1" curl -sS -f --noproxy '*' --max-time 5 http://169.254.169.254/latest/meta-data/instance-id) &&
    [ "$got" = "$2" ]
}
for i in $(seq 1 "$n_routers"); do
  r=${node_routers[$((i - 1))]}
  # What Neutron's process monitor checks: the pid file names a live process whose command
  # line names the router.
  pidf=${haproxy_pid_file//$router/$r}
  wait_for 0 20 test -s "$pidf"
  reg_pid=$(cat "$pidf")
  pids+=("$reg_pid")
  grep -q "$r" "/proc/$reg_pid/cmdline" || fail "node-register's command line does not name $r"
  wait_for "$node_pid" 20 serves "$r"
  wait_for "$node_pid" 20 reads "mdp-ni-$$-$i" "${node_ec2[$((i - 1))]}"
done
rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$node_pid/status")
reg_rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$reg_pid/status")
echo "netns: one mdproxy node (VmRSS $rss KiB) served $n_routers router namespaces registered through the shim; each instance, all at 50.0.0.44, read its own instance-id (a node-register: VmRSS $reg_rss KiB)"
# Neutron stops one router's proxy with SIGTERM: that namespace stops, the others go on.
last=${node_routers[$((n_routers - 1))]}
# Not our child (it daemonized): its exit status is not ours to read; its file tells.
stop "$reg_pid" 15 || true
[ ! -e "$node_dir/$last.toml" ] || fail "node-register left its file behind"
wait_for "$node_pid" 20 not_serves "$last"
reads "mdp-ni-$$-1" "${node_ec2[0]}" || fail "router 1 stopped being served with the last one"
stop "$node_pid" 15 || fail "the node exited with status $? after SIGTERM"
echo "netns: SIGTERM to one node-register stopped serving its namespace only; the node stopped on SIGTERM with status 0"

# --- SIGTERM: the agent and the server drain and exit 0; the agent removes its socket.
for role in agent:$agent_pid server:$server_pid; do
  rc=0
  stop "${role#*:}" 15 || rc=$?
  [ "$rc" -eq 0 ] || fail "${role%%:*} exited with status $rc after SIGTERM"
done
pids=()
[ ! -e "$socket" ] || fail "the agent left its socket behind"
echo "netns: both ns-proxies, the agent and the server stopped on SIGTERM with status 0"
