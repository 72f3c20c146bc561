# shellcheck shell=bash
# bench/lib.sh - shared by run.sh, fleet.sh, agent-cache.sh, soak.sh and mdproxy-agent.sh
# (sourced, not run).
#
# Process bookkeeping: every process a script starts goes through `spawn`, which records its
# PID; `stop_all` (installed as the EXIT trap by `bench_init`) stops them by PID: SIGTERM, a
# grace period, then SIGKILL, children first. Nothing is ever killed by name.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
SPAWNED=()          # PIDs in start order
WATCHDOG_PID=

say() { printf '[%s %s] %s\n' "${BENCH_NAME:-bench}" "$(date +%T)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# Descendants of PID (deepest last), from /proc/PID/task/*/children.
descendants() {
  local c
  # shellcheck disable=SC2013  # the file is one line of PIDs separated by spaces
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do  # PIDs: split on whitespace
    echo "$c"
    descendants "$c"
  done
}

stop_pids() {  # stop_pids PID... : TERM (with their descendants), wait up to 5 s, KILL
  local p all=() i
  for p in "$@"; do
    all+=("$p")
    mapfile -t -O "${#all[@]}" all < <(descendants "$p")
  done
  ((${#all[@]})) || return 0
  kill -TERM "${all[@]}" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    local alive=0
    for p in "${all[@]}"; do kill -0 "$p" 2>/dev/null && alive=1 && break; done
    ((alive)) || break
    sleep 0.1
  done
  kill -KILL "${all[@]}" 2>/dev/null || true
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

stop_all() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $WATCHDOG_PID ]]; then stop_pids "$WATCHDOG_PID"; WATCHDOG_PID=; fi
  if ((${#SPAWNED[@]})); then
    say "stopping ${#SPAWNED[@]} processes by PID"
    stop_pids "${SPAWNED[@]}"
    SPAWNED=()
  fi
  if declare -F at_exit >/dev/null; then at_exit "$rc" || true; fi
  exit "$rc"
}

# bench_init NAME TIMEOUT_SECONDS: EXIT/INT/TERM traps and a watchdog that ends the script
# (through the same trap) after TIMEOUT_SECONDS.
bench_init() {
  BENCH_NAME=$1
  trap stop_all EXIT
  trap 'say "interrupted"; exit 130' INT
  trap 'say "terminated (watchdog or signal)"; exit 143' TERM
  bash -c 'sleep "$1" & wait $!; kill -TERM "$2"' watchdog "$2" "$$" &
  WATCHDOG_PID=$!
}

# spawn OUTFILE CMD... : start CMD in the background, stdout+stderr to OUTFILE; sets LAST_PID.
spawn() {
  local out=$1; shift
  "$@" >"$out" 2>&1 </dev/null &
  LAST_PID=$!
  SPAWNED+=("$LAST_PID")
}

# forget PID...: drop PIDs that were stopped on purpose from the bookkeeping.
forget() {
  local p q keep=()
  for p in "${SPAWNED[@]}"; do
    for q in "$@"; do [[ $p == "$q" ]] && continue 2; done
    keep+=("$p")
  done
  SPAWNED=("${keep[@]}")
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ports_free() {  # ports_free FIRST COUNT : die if any 127.0.0.1 port in the range accepts
  local p
  for ((p = $1; p < $1 + $2; p++)); do
    tcp_open "$p" && die "127.0.0.1:$p is in use; choose another PORT_BASE"
  done
  return 0
}

wait_listen() {  # wait_listen PID tcp:PORT|unix:PATH [SECONDS]
  local pid=$1 what=$2 limit=${3:-20} i
  for ((i = 0; i < limit * 20; i++)); do
    kill -0 "$pid" 2>/dev/null || return 1
    case $what in
      tcp:*) tcp_open "${what#tcp:}" && return 0 ;;
      unix:*) [[ -S ${what#unix:} ]] && python3 "$BENCH_DIR/tools.py" connects "${what#unix:}" && return 0 ;;
    esac
    sleep 0.05
  done
  return 1
}

# need_tools: haproxy, nginx (nginx-light) and wrk from Debian's packages, installed if missing.
need_tools() {
  local missing=() b pkg
  for b in haproxy:haproxy nginx:nginx-light wrk:wrk; do
    pkg=${b#*:}; b=${b%%:*}
    command -v "$b" >/dev/null 2>&1 || [[ -x /usr/sbin/$b ]] || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    say "installing ${missing[*]} with apt-get"
    [[ $(id -u) == 0 ]] || die "need root to apt-get install ${missing[*]} (or install them yourself)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
  WRK=$(command -v wrk)
  command -v python3 >/dev/null || die "python3 is needed"
}

# mdproxy_bin RUNDIR: builds (unless BUILD=0 or MDPROXY_BIN is set) and copies the binary into
# RUNDIR, so a rebuild by someone else during the run cannot swap it. Sets MDPROXY and
# MDPROXY_SRC (the path it came from).
mdproxy_bin() {
  MDPROXY_SRC=${MDPROXY_BIN:-$REPO_DIR/target/release/mdproxy}
  if [[ -z ${MDPROXY_BIN:-} && ${BUILD:-1} != 0 ]]; then
    say "cargo build --release -p mdproxy"
    (cd "$REPO_DIR" && cargo build --release -q -p mdproxy) || die "build failed"
  fi
  [[ -x $MDPROXY_SRC ]] || die "no binary at $MDPROXY_SRC (build it or set MDPROXY_BIN)"
  cp "$MDPROXY_SRC" "$1/mdproxy"
  MDPROXY=$1/mdproxy
}

# static_map FILE ROUTER NETWORK DEVICE PROJECT : the agent's static map of a benchmark: the
# router's one network, and on it 127.0.0.1 (the load generator, as the instance) as a port of
# instance DEVICE in PROJECT.
static_map() {
  cat >"$1" <<MAP
[[router]]
id = "$2"
networks = ["$3"]

[[port]]
network = "$3"
ip = "127.0.0.1"
device_id = "$4"
project_id = "$5"
MAP
}

# render TEMPLATE OUT KEY=VALUE... : replaces @KEY@ in TEMPLATE.
render() { python3 "$BENCH_DIR/tools.py" render "$@"; }

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

machine_md() {  # markdown bullet list: date, machine, versions
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- machine: $(nproc) cores ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "- mdproxy: $("$MDPROXY" --version 2>/dev/null || echo '?') from $MDPROXY_SRC ($(stat -c %s "$MDPROXY") bytes), git $(cd "$REPO_DIR" && git rev-parse --short HEAD 2>/dev/null)$(cd "$REPO_DIR" && [[ -n $(git status --porcelain 2>/dev/null | grep -v '^??' | head -1) ]] && echo ' + uncommitted changes'); $(rustc --version 2>/dev/null)"
  echo "- haproxy $("$HAPROXY" -v | awk 'NR==1{print $3}'), nginx $("$NGINX" -v 2>&1 | awk -F/ '{print $2}'), wrk $("$WRK" -v 2>&1 | awk 'NR==1{print $2}'), python $(python3 -c 'import platform; print(platform.python_version())')"
}
