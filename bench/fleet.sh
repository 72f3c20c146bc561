#!/usr/bin/env bash
# bench/fleet.sh - the per-router cost an operator pays: N `mdproxy ns-proxy` processes (one per
# fake router id) against N haproxy processes in Neutron's configuration, in one script run.
#
# Each fleet runs on its own (so the two never share pages with each other), all pointing at one
# nginx on a Unix socket: start N processes, wait until all listen, settle 2 s, read VmRSS, Pss
# and private memory of each; send 20 requests to each (a new connection per request); read
# again; stop the fleet by PID and check none is left. Then the next fleet.
#
# Knobs: N=50  REQUESTS=20  RUNTIME=mio|smol|both (default mio)  PORT_BASE=27200 (uses
#   PORT_BASE .. PORT_BASE+2N+1)  MDPROXY_BIN / BUILD=0 as in run.sh
#   TIMEOUT=600  OUT=bench/results/<stamp>-fleet   (.md and .tsv)
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$BENCH_DIR/lib.sh"

N=${N:-50}
REQUESTS=${REQUESTS:-20}
RUNTIME=${RUNTIME:-mio}
PORT_BASE=${PORT_BASE:-27200}
STAMP=$(date +%Y-%m-%d-%H%M)
OUT=${OUT:-$BENCH_DIR/results/$STAMP-fleet}
case $RUNTIME in
  mio | smol) RUNTIMES=$RUNTIME ;;
  both) RUNTIMES="mio smol" ;;
  *) echo "RUNTIME must be mio, smol or both" >&2; exit 2 ;;
esac

bench_init fleet "${TIMEOUT:-600}"
need_tools
RUN=$(mktemp -d /tmp/mdproxy-fleet.XXXXXX)
at_exit() { if [[ $1 == 0 && -z ${KEEP_RUN:-} ]]; then rm -rf "$RUN"; else say "run directory kept: $RUN"; fi; }
mkdir -p "$RUN/nginx-tmp" "$(dirname "$OUT")"
mdproxy_bin "$RUN"
ports_free "$PORT_BASE" $((2 * N + 2))

render "$BENCH_DIR/templates/nginx.conf" "$RUN/nginx.conf" WORKERS=1 RUNDIR="$RUN" PORT="$PORT_BASE" \
  SOCKET="$RUN/nginx.sock" BODY='ami-id\nhostname\ninstance-id' BODY_DESC="a short fixed listing"
spawn "$RUN/nginx.out" "$NGINX" -p "$RUN" -e "$RUN/nginx-error.log" -c "$RUN/nginx.conf" -g 'daemon off;'
wait_listen "$LAST_PID" "unix:$RUN/nginx.sock" || die "nginx did not start"

router_id() { printf '%08x-0000-4000-8000-%012x' "$1" "$1"; }

TSV=$RUN/data.tsv   # copied to $OUT.tsv once complete
printf 'fleet\tstate\tprocesses\tvmrss_kb\tpss_kb\tprivate_kb\tthreads\tanon_kb\tfile_kb\tload1\n' >"$TSV"
measure() {  # measure FLEET STATE PID... -> one TSV row of totals
  local fleet=$1 state=$2; shift 2
  python3 "$BENCH_DIR/tools.py" mem "$@" | awk -v f="$fleet" -v s="$state" -v l="$(cut -d' ' -f1 /proc/loadavg)" \
    '{n++; rss+=$2; pss+=$4; uss+=$5; thr+=$6; an+=$7; fl+=$8}
     END{printf "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", f, s, n, rss, pss, uss, thr, an, fl, l}' >>"$TSV"
}

run_fleet() {  # run_fleet NAME : starts N processes of that kind, measures, stops them
  local name=$1 i port pids=() ports=() alive=0 p
  for ((i = 0; i < N; i++)); do
    port=$((PORT_BASE + 1 + i))
    ports+=("$port")
    case $name in
      haproxy)
        render "$BENCH_DIR/templates/haproxy-neutron.cfg" "$RUN/haproxy-$i.cfg" LOG=stdout \
          ROUTER_ID="$(router_id "$i")" PIDFILE="$RUN/haproxy-$i.pid" BIND="127.0.0.1:$port" \
          SOCKET="$RUN/nginx.sock"
        spawn /dev/null "$HAPROXY" -db -f "$RUN/haproxy-$i.cfg"
        ;;
      ns-proxy/*)
        spawn /dev/null "$MDPROXY" ns-proxy --runtime "${name#ns-proxy/}" --router-id "$(router_id "$i")" \
          --listen "127.0.0.1:$port" --upstream-socket "$RUN/nginx.sock"
        ;;
    esac
    pids+=("$LAST_PID")
  done
  for ((i = 0; i < N; i++)); do
    wait_listen "${pids[i]}" "tcp:${ports[i]}" 30 || die "$name #$i did not listen on ${ports[i]}"
  done
  sleep 2
  measure "$name" idle "${pids[@]}"
  say "$name: $N listening; $(python3 "$BENCH_DIR/tools.py" poke "$REQUESTS" "${ports[@]}") after $REQUESTS requests each"
  sleep 1
  measure "$name" "after $REQUESTS requests each" "${pids[@]}"
  stop_pids "${pids[@]}"
  forget "${pids[@]}"
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
  say "$name: stopped by PID, $alive left alive"
  ((alive == 0)) || die "$alive $name processes survived"
}

load_start=$(loadavg)
for r in $RUNTIMES; do run_fleet "ns-proxy/$r"; done
run_fleet haproxy
load_end=$(loadavg)

python3 - "$TSV" "$N" "$RUNTIMES" >"$RUN/tables.md" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
n = int(sys.argv[2])
mib = lambda kb: int(kb) / 1024.0
print("| fleet | state | total VmRSS | total Pss | total private | per process VmRSS (anon + file) | per process Pss | threads | load (1 min) |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print("| %s | %s | %.1f MiB | %.1f MiB | %.1f MiB | %.2f MiB (%.2f + %.2f) | %.2f MiB | %s | %s |" % (
        r["fleet"], r["state"], mib(r["vmrss_kb"]), mib(r["pss_kb"]), mib(r["private_kb"]),
        mib(r["vmrss_kb"]) / n, mib(r["anon_kb"]) / n, mib(r["file_kb"]) / n,
        mib(r["pss_kb"]) / n, r["threads"], r["load1"]))
print()
hap = {r["state"]: r for r in rows if r["fleet"] == "haproxy"}
print("| target (DESIGN.md) | goal | measured | |")
print("|---|---|---|---|")
for rt in sys.argv[3].split():
    for r in rows:
        if r["fleet"] != "ns-proxy/" + rt:
            continue
        h = hap[r["state"]]
        q = int(r["pss_kb"]) / int(h["pss_kb"])
        print("| %d ns-proxies (%s) vs %d haproxies, Pss, %s | < 1/4 (25 %%) | %.1f MiB vs %.1f MiB = **%.1f %%** (1/%.0f) | %s |" % (
            n, rt, n, r["state"], mib(r["pss_kb"]), mib(h["pss_kb"]), q * 100, 1 / q,
            "**met**" if q < 0.25 else "**not met**"))
        if r["state"] == "idle":
            per = mib(r["vmrss_kb"]) / n
            print("| idle VmRSS per ns-proxy (%s) | < 2 MiB (issue 10: < 1 MiB) | %.2f MiB | %s; issue 10: %s |" % (
                rt, per, "**met**" if per < 2 else "**not met**", "**met**" if per < 1 else "**not met**"))
EOF
{
  echo "# Per-router cost: $N ns-proxies against $N haproxies (bench/fleet.sh)"
  echo
  machine_md
  echo "- load average (1/5/15 min): $load_start at the start, $load_end at the end"
  echo "- each fleet alone: $N processes, router ids 00000000-0000-4000-8000-000000000000.., ports $((PORT_BASE + 1))..$((PORT_BASE + N)), upstream nginx on a Unix socket; measured 2 s after all listened, then again 1 s after $REQUESTS requests to each (a new connection per request); stopped by PID"
  echo "- haproxy: templates/haproxy-neutron.cfg (Neutron's router config, log to stdout -> /dev/null); ns-proxy: default flags"
  echo
  cat "$RUN/tables.md"
  echo
  echo "VmRSS counts shared pages (the binary, libc, and for haproxy its libssl, liblua, libpcre2...) in every process; Pss divides them among the processes sharing them, so the fleet's total Pss is what the $N cost together. Private is what each costs alone."
} >"$OUT.md"
cp "$TSV" "$OUT.tsv"
say "wrote $OUT.md and $OUT.tsv"
cat "$OUT.md"
