#!/usr/bin/env bash
# Per-runner overhead for a trivial recipe (one step writing one file), in one script: the
# same `pallet pkg build` with a warm package cache under bubblewrap, docker (a private
# dockerd started here) and qemu (Debian's cloud kernel; KVM, then TCG emulation), median of a
# few runs each, with the ratio to bubblewrap and the guest's boot time for qemu. The packages
# of all runners are compared too. Prints figures, asserts nothing.
# Needs ../shared/fixtures (or PALLET_SHARED), root, and what scripts/install-deps.sh sets up.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${PALLET_SHARED:-$PWD/../shared}
A=$SHARED/fixtures/alpine-3.19
[ -d "$A" ] || { echo "SKIPPED: $A not found (set PALLET_SHARED)"; exit 0; }
cargo build --release --bin pallet -q
P=$PWD/target/release/pallet
RUNS=${RUNS:-3}
T=$(mktemp -d)
cleanup() {
  if [ -f "$T/docker/pid" ]; then
    pid=$(cat "$T/docker/pid"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    umount "$T/docker/exec/netns/default" 2>/dev/null || true
  fi
  rm -rf "$T"
}
trap cleanup EXIT
cd "$T"
"$P" keygen --bits 2048 k.rsa >/dev/null 2>&1
mkdir src
cat > r.yaml <<YAML
package: {name: trivial, version: 1.0.0, epoch: 0, description: runner overhead, copyright: [{license: MIT}]}
environment:
  contents:
    repositories: [$A]
    keyring: [$(ls "$A"/keys/*.pub | paste -sd, -)]
    packages: [busybox]
pipeline:
  - runs: mkdir -p \${{targets.destdir}}/usr/share/t && echo hi > \${{targets.destdir}}/usr/share/t/hi
YAML
export SOURCE_DATE_EPOCH=1700000000
now() { date +%s.%N; }
ms() { echo "scale=0; ($2 - $1) * 1000 / 1" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# One build; prints its milliseconds, or "failed".
one() {
  local runner=$1 out=$2; shift 2
  local t0 t1
  t0=$(now)
  if env "$@" "$P" pkg build r.yaml --arch x86_64 --runner "$runner" --signing-key k.rsa \
      --out-dir "$out" --apk-cache-dir cache --source-dir src >"$out.log" 2>&1; then
    t1=$(now); ms "$t0" "$t1"
  else
    echo failed
  fi
}
bench() {
  local label=$1 runner=$2; shift 2
  local times=() t
  for i in $(seq "$RUNS"); do
    t=$(one "$runner" "out-$label" "$@")
    [ "$t" = failed ] && { echo "failed: $(grep -m1 -o 'Error: [^;]*' "out-$label.log")"; return 1; }
    times+=("$t")
  done
  printf '%s\n' "${times[@]}" | median
}
# Warm the package cache once, outside the figures.
one bubblewrap warm >/dev/null
base=$(bench bubblewrap bubblewrap)
echo "bubblewrap: $base ms (baseline)"
if command -v dockerd >/dev/null; then
  mkdir -p docker
  dockerd --host "unix://$T/docker/sock" --data-root "$T/docker/data" --exec-root "$T/docker/exec" \
    --pidfile "$T/docker/pid" --bridge=none --iptables=false >/dev/null 2>"$T/docker/log" &
  for _ in $(seq 60); do DOCKER_HOST=unix://$T/docker/sock docker info >/dev/null 2>&1 && break; sleep 0.5; done
  if t=$(bench docker docker DOCKER_HOST="unix://$T/docker/sock"); then
    echo "docker: $t ms, $(echo "scale=1; $t / $base" | bc)x bubblewrap"
  else echo "docker: $t"; fi
else
  echo "docker: SKIPPED (dockerd is not installed)"
fi
K=${PALLET_TEST_KERNEL:-$(ls "${PALLET_QEMU_KERNEL_DIR:-/var/cache/pallet/kernel}"/x86_64/boot/vmlinuz-* 2>/dev/null | head -1)}
if [ -n "$K" ] && command -v qemu-system-x86_64 >/dev/null; then
  for accel in kvm tcg; do
    if [ "$accel" = kvm ] && ! [ -w /dev/kvm ]; then echo "qemu (kvm): SKIPPED (no usable /dev/kvm)"; continue; fi
    # KVM is tried once: on hosts without hardware paging for nested guests it does not
    # boot in the runner's two minutes.
    r=$RUNS; [ "$accel" = kvm ] && RUNS=1
    if t=$(bench "qemu-$accel" qemu QEMU_KERNEL_IMAGE="$K" PALLET_QEMU_ACCEL=$accel); then
      boot=$(grep -o 'guest ready in [0-9.]*s' "out-qemu-$accel.log" | tail -1)
      echo "qemu ($accel): $t ms, $(echo "scale=1; $t / $base" | bc)x bubblewrap ($boot)"
    else echo "qemu ($accel): $t"; fi
    RUNS=$r
  done
else
  echo "qemu: SKIPPED (no kernel: scripts/install-deps.sh unpacks one; or qemu-system-x86_64 missing)"
fi
echo "packages (sha256):"
sha256sum out-*/x86_64/trivial-1.0.0-r0.apk | sed 's|/x86_64/.*||' | awk '{print "  " $2 ": " $1}'
