#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then runs every test in the workspace.
# Tests that need ../shared/ (real packages made by others) say so when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --bin pallet
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --release 2>&1 | tee "$log"
# The fuzz targets (fuzz/) must keep building and running: a few seconds each, unoptimised
# and without AddressSanitizer to keep the build short (about 1.5 minutes on 2 cores from
# scratch; scripts/fuzz.sh SECONDS fuzzes for real).
fuzz_status=0
FUZZ_SANITIZER=none FUZZ_DEV=1 FUZZ_SEEDS_ONLY=1 bash scripts/fuzz.sh 4 2>&1 | tee -a "$log" || fuzz_status=$?
# cargo prints a result line per test binary, the last one often a doc-test run with no tests:
# close with the totals so the outcome reads in one line.
passed=$(grep -E '^test result:' "$log" | sed -E 's/.* ([0-9]+) passed.*/\1/' | paste -sd+ | bc)
failed=$(grep -E '^test result:' "$log" | sed -E 's/.* ([0-9]+) failed.*/\1/' | paste -sd+ | bc)
skipped=$(grep -c '^SKIPPED' "$log" || true)
[ "$skipped" = 0 ] || echo "($skipped test parts skipped; see the SKIPPED lines above)"
echo "tests: $passed passed, $failed failed"
[ "$fuzz_status" = 0 ] || { echo "fuzzing failed (see above)"; exit 1; }
