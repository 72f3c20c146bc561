#!/usr/bin/env bash
# bench/run.sh - mdproxy's load benchmark: every variant side by side in one run.
#
#   bench/run.sh          start everything, check it, load it, write bench/results/<stamp>.md
#   bench/run.sh check    start everything and run the checks only
#
# Targets (what wrk talks to; all on loopback, upstream hops on Unix sockets where Neutron
# uses them):
#   floor           wrk -> nginx (TCP), the fixed backend: the direct floor
#   haproxy         wrk -> haproxy, Neutron's config (templates/haproxy-neutron.cfg) -> nginx (unix)
#   ns-proxy/R      wrk -> mdproxy ns-proxy (runtime R) -> nginx (unix)                  (the hop)
#   chain/R         wrk -> ns-proxy -> mdproxy agent (static map) -> mdproxy server      (full chain)
#   chain-nginx/R   wrk -> ns-proxy -> mdproxy agent (static map) -> nginx (TCP)         (server's cost isolated)
#   haproxy+neutron wrk -> haproxy -> Neutron's Python agent (../shared/bench/neutron-agent.py)
#                   -> mdproxy server (the anchor; only with NEUTRON_PYTHON)
# nginx answers with the very body mdproxy server renders for GET /latest/meta-data/ (read
# from the server at startup), so every target returns the same bytes.
#
# Knobs (environment):
#   DURATION=10     seconds of each measured wrk run      WARMUP=1   seconds of wrk before it
#   CONNS="1 16 64" MODES="ka close"  REPEATS=3           WRK_THREADS=2 (at most conns)
#   RUNTIME=mio|smol|both (default mio)
#   SCENARIOS="floor haproxy ns-proxy chain chain-nginx neutron" (neutron only runs with
#       NEUTRON_PYTHON=/path/to/venv/bin/python, a Python with `neutron` installed;
#       NEUTRON_AGENT defaults to ../shared/bench/neutron-agent.py)
#   MDPROXY_BIN=path  use this binary (default: cargo build --release, then target/release/mdproxy;
#       BUILD=0 skips the build)        SIZE_NOTLS=1  also build without `tls` to report its size
#   NSPROXY_ARGS="--max-conns-per-ip 1024" extra ns-proxy flags (haproxy has no per-IP limit)
#   SUT_LOG=null|file  where the processes' logs go: /dev/null (default: access logs of haproxy
#       and mdproxy are written and discarded alike) or files in the run directory
#   NGINX_WORKERS=1   PORT_BASE=27100 (uses PORT_BASE..PORT_BASE+49)
#   TIMEOUT=seconds   hard limit for the whole run (default: computed from the matrix + 10 min)
#   OUT=bench/results/<stamp>   output prefix (.md, .tsv, -mem.tsv, -cpu.tsv)
#
# CPU time: just before and just after each measured wrk run (not the warm-up), utime + stime
# of every process in the process table (all its threads, and its children, as for memory:
# nginx's worker counts for nginx) from /proc/PID/stat, in clock ticks (getconf CLK_TCK). Each
# target names its own processes (add_target below); their sum over the run, divided by the
# requests wrk completed, is the target's CPU time per request. A process that died gives NA.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$BENCH_DIR/lib.sh"

ACTION=${1:-bench}
DURATION=${DURATION:-10}; DURATION=${DURATION%s}
WARMUP=${WARMUP:-1}; WARMUP=${WARMUP%s}
CONNS=${CONNS:-"1 16 64"}
MODES=${MODES:-"ka close"}
REPEATS=${REPEATS:-3}
WRK_THREADS=${WRK_THREADS:-2}
RUNTIME=${RUNTIME:-mio}
SCENARIOS=${SCENARIOS:-"floor haproxy ns-proxy chain chain-nginx neutron"}
NEUTRON_PYTHON=${NEUTRON_PYTHON:-}
NEUTRON_AGENT=${NEUTRON_AGENT:-$REPO_DIR/../shared/bench/neutron-agent.py}
NSPROXY_ARGS=${NSPROXY_ARGS:---max-conns-per-ip 1024}
SUT_LOG=${SUT_LOG:-null}
NGINX_WORKERS=${NGINX_WORKERS:-1}
PORT_BASE=${PORT_BASE:-27100}
SIZE_NOTLS=${SIZE_NOTLS:-1}
STAMP=$(date +%Y-%m-%d-%H%M)
OUT=${OUT:-$BENCH_DIR/results/$STAMP}
URL_PATH=/latest/meta-data/

ROUTER_ID=5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6
NETWORK_ID=9c2b1a4e-0000-4000-8000-000000000001
INSTANCE_ID=0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01   # the anchors' instance (neutron-agent.py)
PROJECT_ID=8f14e45fceea167a5a36dedd4bea2543
SECRET=s3cr3t

case $RUNTIME in
  mio | smol) RUNTIMES=$RUNTIME ;;
  both) RUNTIMES="mio smol" ;;
  *) echo "RUNTIME must be mio, smol or both" >&2; exit 2 ;;
esac
has() { [[ " $SCENARIOS " == *" $1 "* ]]; }
if has neutron && [[ -z $NEUTRON_PYTHON ]]; then SCENARIOS=${SCENARIOS//neutron/}; fi
ncells=$(($(wc -w <<<"$CONNS") * $(wc -w <<<"$MODES")))
ntargets=$((1 + 1 + 3 * $(wc -w <<<"$RUNTIMES") + 1))
TIMEOUT=${TIMEOUT:-$((REPEATS * ncells * ntargets * (DURATION + WARMUP + 2) + 600))}

bench_init run "$TIMEOUT"
need_tools
RUN=$(mktemp -d /tmp/mdproxy-bench.XXXXXX)   # short: Unix socket paths must fit 108 bytes
at_exit() {  # after every process is stopped: keep the run directory only after a failure
  if [[ $1 == 0 && -z ${KEEP_RUN:-} ]]; then rm -rf "$RUN"; else say "run directory kept: $RUN"; fi
}
mkdir -p "$RUN/nginx-tmp" "$RUN/instances" "$(dirname "$OUT")"
say "run directory $RUN; results $OUT.md, .tsv, -mem.tsv, -cpu.tsv; hard limit ${TIMEOUT}s"
mdproxy_bin "$RUN"
ports_free "$PORT_BASE" 50

logfile() { if [[ $SUT_LOG == file ]]; then echo "$RUN/$1.log"; else echo /dev/null; fi; }
started() {  # started NAME what : wait until it listens, or die with a hint
  wait_listen "$LAST_PID" "$2" 60 ||
    die "$1 did not come up on ${2#*:} (rerun with SUT_LOG=file and read $RUN/$1.log)"
}

# ---- the process table: name, role, PID -------------------------------------------------
P_NAME=(); P_ROLE=(); P_PID=()
add_proc() { P_NAME+=("$1"); P_ROLE+=("$2"); P_PID+=("$3"); }
# ---- the target table: name, URL, and its own processes -----------------------------------
# add_target NAME URL PROC... : PROC are add_proc names, the processes whose CPU time is the
# target's cost (its CPU time per request). The mapping, as given at each add_target below:
#   floor           nginx
#   haproxy         haproxy                 (nginx behind it is the shared backend: not counted)
#   ns-proxy/R      ns-proxy/R              (likewise)
#   chain/R         server/R, agent/R, ns-proxy/R (chain)              (the three mdproxy hops)
#   chain-nginx/R   agent/R (chain-nginx), ns-proxy/R (chain-nginx)    (nginx: backend, not counted)
#   haproxy+neutron server/R, neutron-agent (Python), haproxy (for neutron)  (R: the first runtime;
#                   the same server as the chain's, so the two compare hop for hop)
T_NAME=(); T_URL=(); T_OWN=()   # T_OWN: indexes into the process table, space-separated
add_target() {
  local name=$1 url=$2 own='' p k; shift 2
  for p in "$@"; do
    for k in "${!P_NAME[@]}"; do
      if [[ ${P_NAME[k]} == "$p" ]]; then own+=" $k"; continue 2; fi
    done
    die "add_target $name: no process named '$p'"
  done
  T_NAME+=("$name"); T_URL+=("$url"); T_OWN+=("${own# }")
}

printf '%s' "$SECRET" >"$RUN/secret"

# mdproxy server per runtime (the chain's metadata server, and the anchor's Nova)
declare -A SERVER_PORT
i=0
for r in $RUNTIMES; do
  if has chain || has neutron; then
    cat >"$RUN/instances/$INSTANCE_ID.toml" <<EOF
uuid = "$INSTANCE_ID"
project_id = "$PROJECT_ID"
name = "bench-vm"
hostname = "bench-vm"
fixed_ips = ["127.0.0.1"]
security_groups = ["default"]
user_data = "#cloud-config\n"
EOF
    SERVER_PORT[$r]=$((PORT_BASE + 10 + i))
    spawn "$(logfile "server-$r")" "$MDPROXY" server --runtime "$r" --instances "$RUN/instances" \
      --shared-secret-file "$RUN/secret" --listen "127.0.0.1:${SERVER_PORT[$r]}"
    started "server-$r" "tcp:${SERVER_PORT[$r]}"
    add_proc "server/$r" server "$LAST_PID"
  fi
  i=$((i + 1))
done

# The body every target serves: the server's EC2 listing (or a stand-in without a server).
SIG=$(python3 "$BENCH_DIR/tools.py" sign "$SECRET" "$INSTANCE_ID")
first_rt=${RUNTIMES%% *}
if [[ -n ${SERVER_PORT[$first_rt]:-} ]]; then
  python3 "$BENCH_DIR/tools.py" get "http://127.0.0.1:${SERVER_PORT[$first_rt]}$URL_PATH" \
    "X-Forwarded-For: 127.0.0.1" "X-Instance-ID: $INSTANCE_ID" "X-Tenant-ID: $PROJECT_ID" \
    "X-Instance-ID-Signature: $SIG" >"$RUN/listing"
  [[ $(head -1 "$RUN/listing") == 200 ]] || die "mdproxy server did not serve the listing: $(cat "$RUN/listing")"
  BODY=$(tail -n +2 "$RUN/listing")
  body_desc="mdproxy server's EC2 listing"
else
  BODY=$'ami-id\nhostname\ninstance-id'
  body_desc="a short fixed listing"
fi
printf '%s' "$BODY" >"$RUN/expected-body"
body_escaped=$(python3 -c 'import sys; b=open(sys.argv[1]).read(); print(b.replace("\\","\\\\").replace("\"","\\\"").replace("\n","\\n"), end="")' "$RUN/expected-body")
[[ $body_escaped != *'$'* ]] || die "the listing contains \$, which nginx would expand"

# nginx: the floor, the hop's upstream (unix) and the chain-nginx metadata server (TCP)
NGINX_PORT=$PORT_BASE
render "$BENCH_DIR/templates/nginx.conf" "$RUN/nginx.conf" WORKERS="$NGINX_WORKERS" RUNDIR="$RUN" \
  PORT="$NGINX_PORT" SOCKET="$RUN/nginx.sock" BODY="$body_escaped" BODY_DESC="$body_desc"
"$NGINX" -t -q -p "$RUN" -e "$RUN/nginx-error.log" -c "$RUN/nginx.conf" || die "nginx -t failed"
spawn "$RUN/nginx.out" "$NGINX" -p "$RUN" -e "$RUN/nginx-error.log" -c "$RUN/nginx.conf" -g 'daemon off;'
started nginx "tcp:$NGINX_PORT"
wait_listen "$LAST_PID" "unix:$RUN/nginx.sock" || die "nginx unix socket"
add_proc nginx backend "$LAST_PID"
add_target floor "http://127.0.0.1:$NGINX_PORT$URL_PATH" nginx

haproxy_up() {  # haproxy_up NAME PORT SOCKET
  render "$BENCH_DIR/templates/haproxy-neutron.cfg" "$RUN/$1.cfg" LOG=stdout ROUTER_ID="$ROUTER_ID" \
    PIDFILE="$RUN/$1.pid" BIND="127.0.0.1:$2" SOCKET="$3"
  "$HAPROXY" -c -q -f "$RUN/$1.cfg" || die "haproxy -c $RUN/$1.cfg"
  spawn "$(logfile "$1")" "$HAPROXY" -db -f "$RUN/$1.cfg"
  started "$1" "tcp:$2"
}
nsproxy_up() {  # nsproxy_up NAME RUNTIME PORT SOCKET
  # shellcheck disable=SC2086  # NSPROXY_ARGS is a list of flags
  spawn "$(logfile "$1")" "$MDPROXY" ns-proxy --runtime "$2" --router-id "$ROUTER_ID" \
    --listen "127.0.0.1:$3" --upstream-socket "$4" $NSPROXY_ARGS
  started "$1" "tcp:$3"
}
agent_up() {  # agent_up NAME RUNTIME SOCKET METADATA_PORT
  static_map "$RUN/static-map.toml" "$ROUTER_ID" "$NETWORK_ID" "$INSTANCE_ID" "$PROJECT_ID"
  spawn "$(logfile "$1")" "$MDPROXY" agent --runtime "$2" --listen-socket "$3" \
    --metadata-url "http://127.0.0.1:$4" --shared-secret-file "$RUN/secret" \
    --static-map "$RUN/static-map.toml"
  started "$1" "unix:$3"
}

if has haproxy; then
  haproxy_up haproxy $((PORT_BASE + 1)) "$RUN/nginx.sock"
  add_proc haproxy proxy "$LAST_PID"
  add_target haproxy "http://127.0.0.1:$((PORT_BASE + 1))$URL_PATH" haproxy
fi
i=0
for r in $RUNTIMES; do
  if has ns-proxy; then
    nsproxy_up "ns-proxy-$r" "$r" $((PORT_BASE + 2 + i)) "$RUN/nginx.sock"
    add_proc "ns-proxy/$r" proxy "$LAST_PID"
    add_target "ns-proxy/$r" "http://127.0.0.1:$((PORT_BASE + 2 + i))$URL_PATH" "ns-proxy/$r"
  fi
  if has chain; then
    agent_up "agent-$r" "$r" "$RUN/agent-$r.sock" "${SERVER_PORT[$r]}"
    add_proc "agent/$r" agent "$LAST_PID"
    nsproxy_up "chain-ns-proxy-$r" "$r" $((PORT_BASE + 20 + i)) "$RUN/agent-$r.sock"
    add_proc "ns-proxy/$r (chain)" proxy "$LAST_PID"
    add_target "chain/$r" "http://127.0.0.1:$((PORT_BASE + 20 + i))$URL_PATH" \
      "server/$r" "agent/$r" "ns-proxy/$r (chain)"
  fi
  if has chain-nginx; then
    agent_up "agent-nginx-$r" "$r" "$RUN/agent-nginx-$r.sock" "$NGINX_PORT"
    add_proc "agent/$r (chain-nginx)" agent "$LAST_PID"
    nsproxy_up "chain-nginx-ns-proxy-$r" "$r" $((PORT_BASE + 30 + i)) "$RUN/agent-nginx-$r.sock"
    add_proc "ns-proxy/$r (chain-nginx)" proxy "$LAST_PID"
    add_target "chain-nginx/$r" "http://127.0.0.1:$((PORT_BASE + 30 + i))$URL_PATH" \
      "agent/$r (chain-nginx)" "ns-proxy/$r (chain-nginx)"
  fi
  i=$((i + 1))
done
if has neutron; then
  [[ -f $NEUTRON_AGENT ]] || die "NEUTRON_AGENT=$NEUTRON_AGENT not found"
  say "starting Neutron's Python agent (imports take a few seconds)"
  spawn "$(logfile neutron-agent)" "$NEUTRON_PYTHON" "$NEUTRON_AGENT" --socket "$RUN/neutron.sock" \
    --nova-host 127.0.0.1 --nova-port "${SERVER_PORT[$first_rt]}" --secret "$SECRET" \
    --client-ip 127.0.0.1 --instance-id "$INSTANCE_ID" --tenant-id "$PROJECT_ID"
  started neutron-agent "unix:$RUN/neutron.sock"
  add_proc "neutron-agent (Python)" agent "$LAST_PID"
  haproxy_up haproxy-neutron $((PORT_BASE + 40)) "$RUN/neutron.sock"
  add_proc "haproxy (for neutron)" proxy "$LAST_PID"
  add_target "haproxy+neutron" "http://127.0.0.1:$((PORT_BASE + 40))$URL_PATH" \
    "server/$first_rt" "neutron-agent (Python)" "haproxy (for neutron)"
fi

# ---- checks --------------------------------------------------------------------------------
checks() {
  local k code body ok=1
  echo '```'
  for k in "${!T_NAME[@]}"; do
    python3 "$BENCH_DIR/tools.py" get "${T_URL[k]}" >"$RUN/got"
    code=$(head -1 "$RUN/got")
    if [[ $code == 200 && $(tail -n +2 "$RUN/got") == "$BODY" ]]; then body="same body as the server"
    else body="WRONG: $(tail -n +2 "$RUN/got" | head -c 200)"; ok=0; fi
    printf '%-16s GET %s -> %s, %s\n' "${T_NAME[k]}" "$URL_PATH" "$code" "$body"
    case ${T_NAME[k]} in
      haproxy | ns-proxy/* | chain-nginx/*)
        local base=${T_URL[k]%"$URL_PATH"}
        printf '%-16s   clean   -> %s\n' "" "$(python3 "$BENCH_DIR/tools.py" get "$base/_headers" | tail -n +2)"
        printf '%-16s   spoofed -> %s\n' "" "$(python3 "$BENCH_DIR/tools.py" get "$base/_headers" \
          'X-Forwarded-For: 203.0.113.7' 'X-Neutron-Router-ID: spoofed' 'X-Neutron-Network-ID: spoofed-net' \
          'X-Instance-ID: spoofed-id' | tail -n +2)"
        ;;
    esac
  done
  echo '```'
  echo
  echo "Spoofed requests send \`X-Forwarded-For: 203.0.113.7\`, \`X-Neutron-Router-ID: spoofed\`, \`X-Neutron-Network-ID: spoofed-net\`, \`X-Instance-ID: spoofed-id\`; router $ROUTER_ID; expected signature of $INSTANCE_ID: \`$SIG\`."
  ((ok))
}
checks >"$RUN/checks.md" || { cat "$RUN/checks.md" >&2; die "checks failed"; }
cat "$RUN/checks.md" >&2
if [[ $ACTION == check ]]; then say "checks passed"; exit 0; fi

# ---- footprint before load ---------------------------------------------------------------
notls_size=NA
if [[ $SIZE_NOTLS == 1 && -z ${MDPROXY_BIN:-} ]]; then
  say "building without the tls feature (target/bench-notls) for its size"
  if (cd "$REPO_DIR" && cargo build --release -q -p mdproxy --no-default-features --features mio,smol \
    --target-dir target/bench-notls); then
    notls_size=$(stat -c %s "$REPO_DIR/target/bench-notls/release/mdproxy")
  else say "the no-tls build failed; its size is not reported"; fi
fi
sleep 1
mem_all() { python3 "$BENCH_DIR/tools.py" mem "${P_PID[@]}"; }
mem_all >"$RUN/mem-idle"

# ---- load ----------------------------------------------------------------------------------
TSV=$RUN/runs.tsv   # copied to $OUT.tsv once the run is complete
printf 'rep\tconns\tmode\ttarget\trps\tp50_us\tp90_us\tp99_us\tmax_us\trequests\tnon2xx\tsockerr\tload1\tcpu_us\tcpu_us_per_req\n' >"$TSV"
CPU_TSV=$RUN/cpu.tsv   # every process's CPU time in every run; copied to $OUT-cpu.tsv
printf 'rep\tconns\tmode\ttarget\tprocess\trole\tpid\town\tcpu_ticks\tcpu_us\n' >"$CPU_TSV"
: >"$RUN/mem-max"
CLK_TCK=$(getconf CLK_TCK)
# cpu_all FILE: "PID TICKS" (utime + stime, threads and children included; NA if gone) per process
cpu_all() { python3 "$BENCH_DIR/tools.py" cpu "${P_PID[@]}" >"$1" 2>/dev/null || :; }
load_start=$(loadavg)
run_one() {  # run_one URL CONNS MODE -> WRK-REPORT fields; CPU ticks before/after in $RUN/cpu0, cpu1
  local t=$WRK_THREADS hdr=()
  ((t > $2)) && t=$2
  [[ $3 == close ]] && hdr=(-H 'Connection: close')
  if ((WARMUP > 0)); then
    timeout $((WARMUP + 20)) "$WRK" -t"$t" -c"$2" -d"${WARMUP}s" "${hdr[@]}" "$1" >/dev/null 2>&1 || true
  fi
  cpu_all "$RUN/cpu0"
  timeout $((DURATION + 30)) "$WRK" -t"$t" -c"$2" -d"${DURATION}s" -s "$BENCH_DIR/wrk-report.lua" \
    "${hdr[@]}" "$1" 2>&1 | tee -a "$RUN/wrk.log" | awk '/^WRK-REPORT/' || true
  cpu_all "$RUN/cpu1"
}
# cpu_run REP CONNS MODE TARGET_INDEX REQUESTS: appends every process's CPU time in the last run
# (from $RUN/cpu0 and cpu1) to $CPU_TSV; prints "CPU_US US_PER_REQ" of the target's own
# processes (NA if one of them is gone or wrk completed no request).
cpu_run() {
  local -A t0=() t1=()
  local p v k d us own=" ${T_OWN[$4]} " is sum=0 na=0
  while read -r p v; do t0[$p]=$v; done <"$RUN/cpu0"
  while read -r p v; do t1[$p]=$v; done <"$RUN/cpu1"
  for k in "${!P_PID[@]}"; do
    p=${P_PID[k]}
    d=NA us=NA
    if [[ ${t0[$p]:-NA} != NA && ${t1[$p]:-NA} != NA ]] && ((t1[$p] >= t0[$p])); then
      d=$((t1[$p] - t0[$p])) us=$(((t1[$p] - t0[$p]) * 1000000 / CLK_TCK))
    fi
    is=0
    if [[ $own == *" $k "* ]]; then
      is=1
      if [[ $us == NA ]]; then na=1; else sum=$((sum + us)); fi
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${T_NAME[$4]}" "${P_NAME[k]}" \
      "${P_ROLE[k]}" "$p" "$is" "$d" "$us" >>"$CPU_TSV"
  done
  if ((na)) || [[ -z ${T_OWN[$4]} ]]; then echo "NA NA"; return; fi
  if [[ $5 =~ ^[0-9]+$ ]] && (($5 > 0)); then echo "$sum $(awk -v t="$sum" -v n="$5" 'BEGIN{printf "%.2f", t / n}')"; else echo "$sum NA"; fi
}
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }
nt=${#T_NAME[@]}
for ((rep = 1; rep <= REPEATS; rep++)); do
  for c in $CONNS; do
    for m in $MODES; do
      # every target once per cell, starting one further along each repeat
      for ((j = 0; j < nt; j++)); do
        k=$(((j + rep - 1) % nt))
        l1=$(cut -d' ' -f1 /proc/loadavg)
        line=$(run_one "${T_URL[k]}" "$c" "$m")
        [[ -n $line ]] || line="rps=0 p50=0 p90=0 p99=0 max=0 requests=0 non2xx=0 sockerr=-1"
        read -r cpu_us cpu_req < <(cpu_run "$rep" "$c" "$m" "$k" "$(field requests "$line")") ||
          { cpu_us=NA; cpu_req=NA; }
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$c" "$m" "${T_NAME[k]}" \
          "$(field rps "$line")" "$(field p50 "$line")" "$(field p90 "$line")" "$(field p99 "$line")" \
          "$(field max "$line")" "$(field requests "$line")" "$(field non2xx "$line")" \
          "$(field sockerr "$line")" "$l1" "$cpu_us" "$cpu_req" >>"$TSV"
        say "rep $rep/$REPEATS c=$c $m ${T_NAME[k]}: $(field rps "$line") req/s p50 $(field p50 "$line") us p99 $(field p99 "$line") us, CPU $cpu_req us/req (load $l1)"
        mem_all >>"$RUN/mem-max"
      done
    done
  done
done
load_end=$(loadavg)
sleep 1
mem_all >"$RUN/mem-end"

# ---- report ----------------------------------------------------------------------------------
{
  printf 'name\trole\tpid\tidle_rss_kb\tidle_pss_kb\tidle_uss_kb\tidle_anon_kb\tidle_file_kb\tmax_rss_kb\tend_rss_kb\tend_hwm_kb\tend_pss_kb\tthreads\n'
  for k in "${!P_PID[@]}"; do
    p=${P_PID[k]}
    read -r _ irss _ ipss iuss _ ianon ifile < <(awk -v p="$p" '$1==p' "$RUN/mem-idle")
    mrss=$(awk -v p="$p" '$1==p && $2>m{m=$2} END{print m+0}' "$RUN/mem-max")
    read -r _ erss ehwm epss _ thr _ < <(awk -v p="$p" '$1==p' "$RUN/mem-end")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${P_NAME[k]}" "${P_ROLE[k]}" "$p" "$irss" "$ipss" "$iuss" "$ianon" "$ifile" \
      "$mrss" "$erss" "$ehwm" "$epss" "$thr"
  done
} >"$OUT-mem.tsv"
{
  machine_md
  echo "- binary: $(stat -c %s "$MDPROXY") bytes as built (default features: mio, smol, tls; $(file -b "$MDPROXY" | grep -o 'not stripped\|stripped')); without tls: $notls_size bytes"
  echo "- load average (1/5/15 min): $load_start at the start of the load, $load_end at the end"
  echo "- knobs: DURATION=${DURATION}s WARMUP=${WARMUP}s CONNS=\"$CONNS\" MODES=\"$MODES\" REPEATS=$REPEATS RUNTIME=$RUNTIME WRK_THREADS=$WRK_THREADS NGINX_WORKERS=$NGINX_WORKERS NSPROXY_ARGS=\"$NSPROXY_ARGS\" SUT_LOG=$SUT_LOG"
  echo "- body: every target answers GET $URL_PATH with the same $(wc -c <"$RUN/expected-body") bytes ($body_desc)"
} >"$RUN/meta.md"
cp "$TSV" "$OUT.tsv"
cp "$CPU_TSV" "$OUT-cpu.tsv"
python3 "$BENCH_DIR/summarize.py" --runs "$OUT.tsv" --mem "$OUT-mem.tsv" --meta "$RUN/meta.md" \
  --checks "$RUN/checks.md" --notls-size "$notls_size" --binary-size "$(stat -c %s "$MDPROXY")" \
  --out "$OUT.md"
say "wrote $OUT.md, $OUT.tsv, $OUT-mem.tsv and $OUT-cpu.tsv"
cat "$OUT.md"
