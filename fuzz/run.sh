#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 10), seeded from fuzz/seeds/<target>.
# New inputs go to fuzz/corpus/<target> (git-ignored): libFuzzer writes into the FIRST corpus
# directory it is given, so the checked-in seeds stay untouched.
# Usage: fuzz/run.sh [seconds] [target...]   (from anywhere; needs cargo-fuzz)
# FUZZ_SANITIZER=none runs without AddressSanitizer (the code is safe Rust: several times faster).
set -euo pipefail
secs="${1:-10}"
shift || true
cd "$(dirname "$0")/.."
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    # Not through a process substitution: its failure (no cargo-fuzz) would go unnoticed and
    # leave no target to run, which passed as a fuzz smoke.
    if ! list=$(cd fuzz && cargo fuzz list); then
        echo "fuzz/run.sh: 'cargo fuzz list' failed (cargo install cargo-fuzz)" >&2
        exit 1
    fi
    mapfile -t targets <<<"$list"
fi
if [ ${#targets[@]} -eq 0 ] || [ -z "${targets[0]}" ]; then
    echo "fuzz/run.sh: no fuzz targets" >&2
    exit 1
fi
for t in "${targets[@]}"; do
    echo "== fuzz target $t"
    mkdir -p "fuzz/corpus/$t"
    RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer "${FUZZ_SANITIZER:-address}" "$t" \
        "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -print_final_stats=1
done
