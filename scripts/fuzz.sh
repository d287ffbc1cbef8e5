#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser that reads input made by others (fuzz/, cargo fuzz).
#
#   bash scripts/fuzz.sh [SECONDS]     build, then run each target SECONDS (default 60), one
#                                      at a time in one process, and print per target the
#                                      executions run and the crashes found
#
# FUZZ_TARGETS="apk pkginfo" limits the run to some targets; FUZZ_SANITIZER=none builds
# without AddressSanitizer (safe Rust needs it little); FUZZ_DEV=1 builds unoptimised (a
# third of the build time, slower runs) and FUZZ_SEEDS_ONLY=1 starts from the seeds alone
# in a scratch corpus (libFuzzer replays a whole corpus before it looks at the clock, and a
# grown one takes minutes): what test.sh's short run uses. Corpora grow in
# fuzz/corpus/<target>/ (seeded by fuzz/seed.sh from ../shared), crashes land in
# fuzz/artifacts/<target>/. Installs cargo-fuzz when missing; prints SKIPPED when it cannot.
# cargo fuzz passes nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take them.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
san=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  if ! cargo install --locked cargo-fuzz >&2; then
    echo "SKIPPED: fuzzing: cargo-fuzz cannot be installed"
    exit 0
  fi
fi

all=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^pallet-fuzz$')
targets=${FUZZ_TARGETS:-$all}

bash fuzz/seed.sh >/dev/null
mkdir -p fuzz/artifacts
# Each sanitizer builds in its own folder under fuzz/target, so switching does not rebuild all.
tdir=fuzz/target
[ "$san" = address ] || tdir=fuzz/target/$san
profile=release
dev=()
[ -n "${FUZZ_DEV:-}" ] && { profile=debug; dev=(--dev); }
if ! cargo fuzz build "${dev[@]}" --sanitizer "$san" --target-dir "$tdir" > fuzz/artifacts/build.log 2>&1; then
  tail -40 fuzz/artifacts/build.log
  echo "fuzzing: the fuzz targets do not build (fuzz/artifacts/build.log)"
  exit 1
fi
root=$PWD
bin=$root/$tdir/$(rustc -vV | sed -n 's/^host: //p')/$profile

status=0
total_crashes=0
for t in $targets; do
  art=$root/fuzz/artifacts/$t
  mkdir -p "$art"
  before=$(find "$art" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l)
  log=$art/last-run.log
  # Inputs that are gzip files get room for whole packages; the others keep libFuzzer's
  # default (the largest seed, at least 4096 bytes).
  extra=()
  asan=${ASAN_OPTIONS:-}
  dict=$root/fuzz/dicts/${t%_install}.dict
  [ -f "$dict" ] && extra+=(-dict="$dict")
  case $t in
    apk | apk_install | apkindex) extra+=(-max_len=262144) ;;
    # The scripted registry answers each connection on a thread of its own; LeakSanitizer
    # takes the thread-exit records of those still running for leaks.
    # LeakSanitizer's own check at exit (not only libFuzzer's) must be off for it too.
    registry) extra+=(-detect_leaks=0); asan=${asan:+$asan:}detect_leaks=0 ;;
  esac
  corpus=$root/fuzz/corpus/$t
  if [ -n "${FUZZ_SEEDS_ONLY:-}" ]; then
    corpus=$(mktemp -d)
    find "$root/fuzz/corpus/$t" -maxdepth 1 -name 'seed-*' -exec cp {} "$corpus/" \;
  fi
  # -jobs=1 runs one worker process whose output goes to fuzz-0.log in the working folder.
  (cd "$art" && ASAN_OPTIONS=$asan PALLET_FUZZ_KEYRING=$root/fuzz/corpus/keys-ring \
    "$bin/$t" "$corpus" -jobs=1 -max_total_time="$secs" -timeout=25 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$art/" "${extra[@]}" \
      >/dev/null 2>&1) || true
  [ -n "${FUZZ_SEEDS_ONLY:-}" ] && rm -rf "$corpus"
  [ -f "$art/fuzz-0.log" ] && mv "$art/fuzz-0.log" "$log"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" 2>/dev/null | tail -1)
  if [ -z "$execs" ]; then
    # No final statistics (the run stopped at a crash): the last progress line's count.
    execs=$(grep -oE '^#[0-9]+' "$log" 2>/dev/null | tail -1 | tr -d '#')
  fi
  after=$(find "$art" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l)
  crashes=$((after - before))
  total_crashes=$((total_crashes + crashes))
  printf '%-15s %10s executions  %d crashes' "$t" "${execs:-?}" "$crashes"
  if [ "$crashes" -gt 0 ]; then
    printf '  (%s; log %s)' "$(ls -t "$art" | grep -E '^(crash|oom|timeout|leak)-' | head -1)" "$log"
    status=1
  fi
  printf '\n'
done
echo "fuzzing: $(echo "$targets" | wc -w) targets, ${secs}s each, $total_crashes crashes"
exit $status
