#!/usr/bin/env bash
# The project's test command (README "Testing"): formatting, lints, every test, a fuzz smoke.
# FUZZ_SECONDS sets the smoke length per fuzz target (default 20; 0 skips fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "--- cargo fmt --check"
cargo fmt --all -- --check
echo "--- cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "--- cargo test"
cargo test --workspace
secs=${FUZZ_SECONDS:-20}
if [ "$secs" -gt 0 ]; then
  echo "--- fuzz smoke (${secs}s per target)"
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  if ! fuzz/run.sh "$secs" >"$log" 2>&1; then
    tail -n 80 "$log"
    echo "fuzz smoke failed"
    exit 1
  fi
  grep -E '^(== fuzz target|stat::number_of_executed_units|stat::new_units_added)' "$log" || true
fi
