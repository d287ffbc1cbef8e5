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
# The applet list apko-style builders read to make busybox's links (the host's own busybox
# prints it; nothing from a package runs on the host).
mkdir -p "$D/root/etc/busybox-paths.d"
/bin/busybox --list-full | sed 's|^|/|' > "$D/root/etc/busybox-paths.d/busybox"
"$P" mkpkg --info name=busybox --info version=1.0-r0 --info arch="$ARCH" \
  --info "description=static busybox packed by the pallet demo" --info license=GPL-2.0-only \
  --info provides=/bin/sh --files "$D/root" -o "$D/repo/$ARCH/busybox-1.0-r0.apk" \
  --signing-key "$D/demo.rsa"

echo "== index and verify"
"$P" index -o "$D/repo/$ARCH/APKINDEX.tar.gz" --signing-key "$D/demo.rsa" "$D/repo/$ARCH"/*.apk
"$P" verify --keyring "$D/demo.rsa.pub" "$D/repo/$ARCH"/*.apk "$D/repo/$ARCH/APKINDEX.tar.gz"
"$P" info "$D/repo/$ARCH/busybox-1.0-r0.apk" | head -3

echo "== image build from the local repository"
cat > "$D/image.yaml" <<YAML
contents:
  repositories: [$D/repo]
  keyring: [$D/demo.rsa.pub]
  packages: [busybox]
accounts:
  groups: [{groupname: app, gid: 1000}]
  users: [{username: app, uid: 1000, gid: 1000}]
  run-as: app
entrypoint:
  command: /bin/sh -c "echo hello from a pallet image; id -u; ls /etc/apk"
archs: [$ARCH]
YAML
mkdir -p "$D/layout"
"$P" image build "$D/image.yaml" demo:latest "$D/layout" --sbom-path "$D/sbom" --cache-dir "$D/cache"
"$P" image build "$D/image.yaml" demo:latest "$D/image.tar" --sbom-path "$D/sbom" --cache-dir "$D/cache"
skopeo inspect "docker-archive:$D/image.tar" | grep -E '"(Architecture|Digest)"'

echo "== run it under runc"
umoci unpack --image "$D/layout:latest" "$D/bundle" >/dev/null
python3 - "$D/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p)); c["process"]["terminal"] = False; json.dump(c, open(p, "w"))
PY
out=$(cd "$D/bundle" && runc run "pallet-demo-$$")
echo "$out"
echo "$out" | grep -q "hello from a pallet image" && echo "$out" | grep -qx 1000
echo "demo OK: signed repository, image and SBOM in $D; the image ran under runc as uid 1000"
