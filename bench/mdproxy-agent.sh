#!/usr/bin/env bash
# Starts `mdproxy agent` with a static map for the shared chain benchmark
# (../shared/bench/chain.sh), which passes {socket} {nova_host} {nova_port} {secret} {rundir}
# {router_id}. The map puts 127.0.0.1 behind that router as the instance the anchors use, so
# the header check shows the same X-Instance-ID-Signature as Neutron's agent.
#   AGENT_NAME=mdproxy AGENT_CMD="$PWD/bench/mdproxy-agent.sh {socket} {nova_host} {nova_port} {secret} {rundir} {router_id}"
# MDPROXY_BIN overrides the binary (default: target/release/mdproxy of this checkout).
set -euo pipefail
[ $# -eq 6 ] || { echo "usage: $0 SOCKET NOVA_HOST NOVA_PORT SECRET RUNDIR ROUTER_ID" >&2; exit 2; }
socket=$1 host=$2 port=$3 secret=$4 rundir=$5 router=$6
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
bin=${MDPROXY_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/mdproxy}
network=9c2b1a4e-0000-4000-8000-000000000001
printf '%s' "$secret" >"$rundir/mdproxy-agent.secret"
static_map "$rundir/mdproxy-agent.map.toml" "$router" "$network" \
  0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01 8f14e45fceea167a5a36dedd4bea2543
exec "$bin" agent --listen-socket "$socket" --metadata-url "http://$host:$port" \
  --shared-secret-file "$rundir/mdproxy-agent.secret" --static-map "$rundir/mdproxy-agent.map.toml"
