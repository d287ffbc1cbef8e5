#!/usr/bin/env bash
# The main job, end to end and offline: make a signing key, pack a package from a binary this
# machine has (Debian's static busybox), index and sign a local repository, verify it, then
# (once the image builder is in) build an image from that repository and run it under runc.
# Never reads ../shared/: everything is made here, in ./demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --bin pallet
P=$PWD/target/release/pallet
D=$PWD/demo
ARCH=$(uname -m)
rm -rf "$D"; mkdir -p "$D/repo/$ARCH" "$D/root/bin"
export SOURCE_DATE_EPOCH=1700000000

echo "== keygen"
"$P" keygen --bits 2048 "$D/demo.rsa"

echo "== mkpkg busybox from the host's static binary"
cp /bin/busybox "$D/root/bin/busybox"
ln -sf busybox "$D/root/bin/sh"
"$P" mkpkg --info name=busybox --info version=1.0-r0 --info arch="$ARCH" \
  --info "description=static busybox packed by the pallet demo" --info license=GPL-2.0-only \
  --info provides=cmd:sh=1.0-r0 --files "$D/root" -o "$D/repo/$ARCH/busybox-1.0-r0.apk" \
  --signing-key "$D/demo.rsa"

echo "== index and verify"
"$P" index -o "$D/repo/$ARCH/APKINDEX.tar.gz" --signing-key "$D/demo.rsa" "$D/repo/$ARCH"/*.apk
"$P" verify --keyring "$D/demo.rsa.pub" "$D/repo/$ARCH"/*.apk "$D/repo/$ARCH/APKINDEX.tar.gz"
"$P" info "$D/repo/$ARCH/busybox-1.0-r0.apk" | head -5
echo "demo OK: signed repository in $D/repo"
