#!/usr/bin/env bash
# The main job, end to end and offline, as a melange + apko user runs it: make a signing key
# with `melange keygen`, build the example packages in examples/ from source (bootstrap mode:
# the host's root, read-only, is the build guest, since no APK repository exists yet), sign and
# index them, verify the repository, build an image from it with `apko build`, and run the image
# under runc as a non-root user. Never reads ../shared/; everything it makes is in ./demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --bin pallet
ROOT=$PWD
P=$ROOT/target/release/pallet
D=$ROOT/demo
ARCH=$(uname -m)
rm -rf "$D"; mkdir -p "$D/bin"
# The same binary answers as melange and apko, so Makefile command lines work unchanged.
ln -sf "$P" "$D/bin/melange"; ln -sf "$P" "$D/bin/apko"
export PATH=$D/bin:$PATH SOURCE_DATE_EPOCH=1700000000
cd "$D"

echo "== melange keygen"
melange keygen melange.rsa

echo "== melange build (bootstrap): busybox from Debian's busybox-static, hello-c from source"
melange build --bootstrap "$ROOT/examples/busybox/melange.yaml" --arch "$ARCH" --signing-key melange.rsa --out-dir packages
melange build --bootstrap "$ROOT/examples/hello-c/melange.yaml" --arch "$ARCH" --signing-key melange.rsa --out-dir packages \
  --source-dir "$ROOT/examples/hello-c"

echo "== verify the signed repository"
pallet_verify() { "$P" verify --keyring melange.rsa.pub "$@"; }
pallet_verify packages/"$ARCH"/*.apk packages/"$ARCH"/APKINDEX.tar.gz
"$P" info packages/"$ARCH"/hello-c-1.0.0-r0.apk | sed -n '1,9p'

echo "== apko build from the local repository"
sed "s/x86_64/$ARCH/" "$ROOT/examples/image.yaml" > image.yaml
mkdir -p layout
apko build image.yaml demo:latest layout --sbom-path sbom
apko build image.yaml demo:latest image.tar --sbom-path sbom
skopeo inspect "docker-archive:$D/image.tar" | grep -E '"(Architecture|Digest)"'

echo "== run it under runc"
umoci unpack --image layout:latest bundle >/dev/null
python3 - bundle/config.json <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p)); c["process"]["terminal"] = False; json.dump(c, open(p, "w"))
PY
out=$(cd bundle && runc run "pallet-demo-$$")
echo "$out"
echo "$out" | grep -q "hello from a package pallet built (uid 1000)"
echo "demo OK: packages built and signed, image built from them and run under runc as uid 1000 (all in $D)"
