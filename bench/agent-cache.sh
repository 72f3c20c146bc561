#!/usr/bin/env bash
# bench/agent-cache.sh - the agent's memory with ENTRIES (100 000) cached lookups.
#
# The static backend answers from memory and bypasses the cache, so this runs the agent with
# --backend neutron against bench/fake-neutron.py (answers any IP with a port of its own) and
# nginx as the metadata server, and pushes ENTRIES requests with distinct client IPs
# (X-Forwarded-For: 10.x.y.z, one router id) through the agent's Unix socket, CONNS keep-alive
# connections at a time. VmRSS/Pss is read idle, at checkpoints and at the end. Then the first
# SAMPLE IPs are asked again: if the fake Neutron sees no new port query, all ENTRIES were still
# cached (the oldest would be the first evicted).
#
# Knobs: ENTRIES=100000  CONNS=32  SAMPLE=1000  CHECKPOINTS="1000 10000 50000"
#   CACHE_SIZE=ENTRIES (--cache-size)  CACHE_TTL=3600  RUNTIME=mio|smol (default mio)
#   PORT_BASE=27400 (uses PORT_BASE..+1)  MDPROXY_BIN / BUILD=0 as in run.sh
#   TIMEOUT=900   OUT=bench/results/<stamp>-agent-cache   (.md and .tsv)
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$BENCH_DIR/lib.sh"

ENTRIES=${ENTRIES:-100000}
CONNS=${CONNS:-32}
SAMPLE=${SAMPLE:-1000}
CHECKPOINTS=${CHECKPOINTS:-"1000 10000 50000"}
CACHE_SIZE=${CACHE_SIZE:-$ENTRIES}
CACHE_TTL=${CACHE_TTL:-3600}
RUNTIME=${RUNTIME:-mio}
PORT_BASE=${PORT_BASE:-27400}
STAMP=$(date +%Y-%m-%d-%H%M)
OUT=${OUT:-$BENCH_DIR/results/$STAMP-agent-cache}
ROUTER_ID=5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6
((ENTRIES <= 16777216)) || { echo "ENTRIES must fit 10.0.0.0/8" >&2; exit 2; }

bench_init agent-cache "${TIMEOUT:-900}"
need_tools
RUN=$(mktemp -d /tmp/mdproxy-cache.XXXXXX)
at_exit() { if [[ $1 == 0 && -z ${KEEP_RUN:-} ]]; then rm -rf "$RUN"; else say "run directory kept: $RUN"; fi; }
mkdir -p "$RUN/nginx-tmp" "$(dirname "$OUT")"
mdproxy_bin "$RUN"
ports_free "$PORT_BASE" 2
NEUTRON_PORT=$PORT_BASE
META_PORT=$((PORT_BASE + 1))

spawn "$RUN/fake-neutron.log" python3 "$BENCH_DIR/fake-neutron.py" --neutron-port "$NEUTRON_PORT"
wait_listen "$LAST_PID" "tcp:$NEUTRON_PORT" || die "fake Neutron did not start"
render "$BENCH_DIR/templates/nginx.conf" "$RUN/nginx.conf" WORKERS=1 RUNDIR="$RUN" PORT="$META_PORT" \
  SOCKET="$RUN/nginx.sock" BODY='ami-id\nhostname\ninstance-id' BODY_DESC="a short fixed listing"
spawn "$RUN/nginx.out" "$NGINX" -p "$RUN" -e "$RUN/nginx-error.log" -c "$RUN/nginx.conf" -g 'daemon off;'
wait_listen "$LAST_PID" "tcp:$META_PORT" || die "nginx did not start"
printf 's3cr3t' >"$RUN/secret"
spawn "$RUN/agent.log" env RUST_LOG=warn "$MDPROXY" agent --runtime "$RUNTIME" --backend neutron \
  --neutron-url "http://127.0.0.1:$NEUTRON_PORT" --metadata-url "http://127.0.0.1:$META_PORT" \
  --shared-secret-file "$RUN/secret" --listen-socket "$RUN/agent.sock" \
  --cache-size "$CACHE_SIZE" --cache-ttl "$CACHE_TTL" --negative-cache-ttl "$CACHE_TTL"
AGENT_PID=$LAST_PID
wait_listen "$AGENT_PID" "unix:$RUN/agent.sock" || die "agent did not start (see $RUN/agent.log)"

stats() { python3 "$BENCH_DIR/tools.py" get "http://127.0.0.1:$NEUTRON_PORT/_stats" | tail -n +2; }
port_queries() { stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["port_queries"])'; }
TSV=$RUN/data.tsv   # copied to $OUT.tsv once complete
printf 'entries\tvmrss_kb\tvmhwm_kb\tpss_kb\tprivate_kb\tport_queries\tfill_seconds\tfill_result\n' >"$TSV"
record() {  # record ENTRIES SECONDS RESULT
  local m
  m=$(python3 "$BENCH_DIR/tools.py" mem "$AGENT_PID")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$(cut -d' ' -f2 <<<"$m")" "$(cut -d' ' -f3 <<<"$m")" \
    "$(cut -d' ' -f4 <<<"$m")" "$(cut -d' ' -f5 <<<"$m")" "$(port_queries)" "$2" "$3" >>"$TSV"
  say "$1 entries: VmRSS $(cut -d' ' -f2 <<<"$m") KiB; $3"
}

load_start=$(loadavg)
sleep 1
record 0 0 idle
done_n=0
for target in $CHECKPOINTS $ENTRIES; do
  ((target > done_n && target <= ENTRIES)) || continue
  res=$(python3 "$BENCH_DIR/tools.py" fill "$RUN/agent.sock" "$ROUTER_ID" "$done_n" $((target - done_n)) "$CONNS")
  ok=$(sed -n 's/^ok=\([0-9]*\).*/\1/p' <<<"$res")
  ((ok == target - done_n)) || die "fill to $target: $res (see $RUN/agent.log)"
  done_n=$target
  sleep 1
  record "$target" "$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' <<<"$res")" "$res"
done
before=$(port_queries)
res=$(python3 "$BENCH_DIR/tools.py" fill "$RUN/agent.sock" "$ROUTER_ID" 0 "$SAMPLE" "$CONNS")
after=$(port_queries)
load_end=$(loadavg)
sleep 1
record "$ENTRIES (+ the first $SAMPLE again)" "$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' <<<"$res")" "$res"

python3 - "$TSV" "$ENTRIES" "$SAMPLE" "$before" "$after" >"$RUN/tables.md" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
entries, sample, before, after = (int(x) for x in sys.argv[2:6])
print("| cached entries | VmRSS | VmHWM | Pss | private | Neutron port queries so far | fill time |")
print("|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print("| %s | %.2f MiB | %.2f MiB | %.2f MiB | %.2f MiB | %s | %s s |" % (
        r["entries"], int(r["vmrss_kb"]) / 1024, int(r["vmhwm_kb"]) / 1024, int(r["pss_kb"]) / 1024,
        int(r["private_kb"]) / 1024, r["port_queries"], r["fill_seconds"]))
idle = int(rows[0]["vmrss_kb"])
full = [r for r in rows if r["entries"] == str(entries)][0]
rss = int(full["vmrss_kb"])
print()
print("Growth: %.0f bytes of VmRSS per cached entry ((%d - %d) KiB / %d)." % (
    (rss - idle) * 1024.0 / entries, rss, idle, entries))
print("Asking the first %d IPs again made %d new Neutron port queries (0 = every entry was still cached)."
      % (sample, after - before))
print()
print("| target (DESIGN.md) | goal | measured | |")
print("|---|---|---|---|")
print("| agent VmRSS with %d cached entries | < 32 MiB | %.2f MiB (VmHWM %.2f MiB) | %s |" % (
    entries, rss / 1024, int(full["vmhwm_kb"]) / 1024, "**met**" if rss < 32 * 1024 else "**not met**"))
EOF
{
  echo "# Agent memory with $ENTRIES cached lookups (bench/agent-cache.sh)"
  echo
  machine_md
  echo "- load average (1/5/15 min): $load_start at the start, $load_end at the end"
  echo "- mdproxy agent --runtime $RUNTIME --backend neutron --cache-size $CACHE_SIZE --cache-ttl $CACHE_TTL (RUST_LOG=warn); fake Neutron: bench/fake-neutron.py; metadata server: nginx; $CONNS keep-alive connections on the agent's Unix socket, one distinct X-Forwarded-For (10.0.0.0/8) per request, router $ROUTER_ID"
  echo
  cat "$RUN/tables.md"
  echo
  echo "Anchor: Neutron's Python agent is 141 MiB VmRSS with nothing cached (../shared/bench/results-anchors.md)."
} >"$OUT.md"
cp "$TSV" "$OUT.tsv"
say "wrote $OUT.md and $OUT.tsv"
cat "$OUT.md"
