#!/usr/bin/env bash
# The project's test command (README "Testing"): formatting, lints, every test, the network
# namespace test (scripts/netns-test.sh), the systemd units (scripts/check-units.sh), a short soak
# (bench/soak.sh; SOAK_REQUESTS, default 50 000), a failover soak (bench/failover.sh soak;
# FAILOVER_SOAK_SECONDS, default 60), a fuzz smoke.
# FUZZ_SECONDS sets the smoke length per fuzz target (default 20; 0 skips fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "--- cargo fmt --check"
cargo fmt --all -- --check
echo "--- cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "--- lenient peers (scripts/lenient-peers.sh; bins/tests/lenient.rs skips without them)"
if peers_env=$(./scripts/lenient-peers.sh); then
  eval "$peers_env"
elif [ "${MDPROXY_LENIENT_PEERS:-}" = required ]; then
  echo "lenient peers: FAILED to install and MDPROXY_LENIENT_PEERS=required" >&2
  exit 1
else
  echo "lenient peers: not installed (no PyPI?); bins/tests/lenient.rs will print skipped lines"
fi
echo "--- cargo test"
tests_log=$(mktemp)
cargo test --workspace 2>&1 | tee "$tests_log"
# One total over every test binary, printed last so it closes the run.
summary=$(awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed", p, f }' "$tests_log")
rm -f "$tests_log"
echo "--- netns: the seed's path in network namespaces (root only; skips elsewhere)"
./scripts/netns-test.sh
echo "--- systemd units (dist/systemd)"
./scripts/check-units.sh
echo "--- soak: ${SOAK_REQUESTS:-50000} requests through ns-proxy → agent → server (bench/soak.sh)"
# Fails if any process's RSS grows by more than 1 MiB after the warm-up, or its descriptors at all.
SOAK_CHECK=1 SOAK_MAX_SECONDS=300 MDPROXY_BIN="${CARGO_TARGET_DIR:-target}/debug/mdproxy" bench/soak.sh "${SOAK_REQUESTS:-50000}"
echo "--- failover soak: ${FAILOVER_SOAK_SECONDS:-60} s of alternating metadata-server failures (bench/failover.sh soak)"
# Fails on a non-200 beyond those in flight at a kill, or on agent RSS or descriptor growth.
SOAK_SECONDS=${FAILOVER_SOAK_SECONDS:-60} MDPROXY_BIN="${CARGO_TARGET_DIR:-target}/debug/mdproxy" bench/failover.sh soak
secs=${FUZZ_SECONDS:-20}
if [ "$secs" -gt 0 ]; then
  echo "--- fuzz smoke (${secs}s per target)"
  log=$(mktemp)
  if ! fuzz/run.sh "$secs" >"$log" 2>&1; then
    tail -n 80 "$log"
    echo "fuzz smoke failed"
    exit 1
  fi
  grep -E '^(== fuzz target|stat::number_of_executed_units|stat::new_units_added)' "$log" || true
  rm -f "$log"
fi
echo "--- summary"
echo "tests: $summary"
