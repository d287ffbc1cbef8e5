#!/usr/bin/env bash
# Image build benchmark: all 98 installable packages of the Alpine 3.19 fixture (every package
# but vlan and network-extras, which conflict with ifupdown-ng). Prints a cold build (empty
# cache), a warm build (cache filled, output removed), a rebuild with nothing changed, peak
# memory, and a baseline made of the same work with standard tools: extract every package's
# data (what `apk add` does, minus its database) and `tar | gzip -6` the tree.
# Needs ../shared/fixtures (or PALLET_SHARED); figures only, no assertions.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${PALLET_SHARED:-$PWD/../shared}
A=$SHARED/fixtures/alpine-3.19
[ -d "$A" ] || { echo "SKIPPED: $A not found (set PALLET_SHARED)"; exit 0; }
cargo build --release --bin pallet -q
P=$PWD/target/release/pallet
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
pkgs=$(ls "$A/x86_64" | grep '\.apk$' | sed -E 's/-[0-9][^-]*-r[0-9]+\.apk$//' | grep -vx -e vlan -e network-extras | paste -sd, -)
cat > "$T/all.yaml" <<YAML
contents:
  repositories: [$A]
  keyring: [$(ls "$A"/keys/*.pub | paste -sd, -)]
  packages: [$pkgs]
archs: [x86_64]
YAML
echo "packages: $(echo "$pkgs" | tr ',' '\n' | wc -l)"
now() { date +%s.%N; }
ms() { echo "scale=0; ($2 - $1) * 1000 / 1" | bc; }
export SOURCE_DATE_EPOCH=1700000000
t0=$(now); /usr/bin/time -f "%M" -o "$T/mem1" "$P" image build "$T/all.yaml" b:1 "$T/out.tar" --cache-dir "$T/cache" --sbom=false >/dev/null 2>&1; t1=$(now)
echo "cold build (empty cache): $(ms $t0 $t1) ms, peak RSS $(( $(cat "$T/mem1") / 1024 )) MB"
rm -f "$T/out.tar"
t0=$(now); /usr/bin/time -f "%M" -o "$T/mem2" "$P" image build "$T/all.yaml" b:1 "$T/out.tar" --cache-dir "$T/cache" --sbom=false >/dev/null 2>&1; t1=$(now)
echo "warm build (cache filled, output removed): $(ms $t0 $t1) ms, peak RSS $(( $(cat "$T/mem2") / 1024 )) MB"
t0=$(now); "$P" image build "$T/all.yaml" b:1 "$T/out.tar" --cache-dir "$T/cache" --sbom=false >/dev/null 2>&1; t1=$(now)
echo "rebuild, nothing changed: $(ms $t0 $t1) ms"
echo "image: $(du -k "$T/out.tar" | cut -f1) KiB"
mkdir "$T/root"
t0=$(now)
for f in "$A"/x86_64/*.apk; do
  case "$f" in */vlan-*|*/network-extras-*) continue;; esac
  tar -xzf "$f" -C "$T/root" --exclude='.PKGINFO' --exclude='.SIGN*' --exclude='.pre-*' --exclude='.post-*' --exclude='.trigger' 2>/dev/null || true
done
tar -C "$T/root" -cf - . | gzip -6 > "$T/base.tar.gz"
t1=$(now)
echo "baseline (extract 98 packages with tar + tar | gzip -6): $(ms $t0 $t1) ms"
