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
  cd fuzz
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  for t in $(cargo fuzz list); do
    # New inputs go to a scratch corpus; the checked-in seeds are only read.
    mkdir -p "$work/$t"
    if ! RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$t" "$work/$t" "seeds/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 >"$work/$t.log" 2>&1; then
      tail -n 60 "$work/$t.log"
      echo "fuzz target $t failed"
      exit 1
    fi
    echo "$t: $(grep -E '^stat::number_of_executed_units' "$work/$t.log" | tr -s ' ')"
  done
fi
