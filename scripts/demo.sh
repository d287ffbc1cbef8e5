#!/usr/bin/env bash
# The main job, end to end and offline: one `pallet build` in a copy of examples/ (two melange
# recipes, one apko image, pallet.yaml) makes the signing key, builds the packages from source
# (bootstrap mode: the host's root, read-only, is the build guest, since no APK repository
# exists yet) in a bubblewrap sandbox, signs and indexes them, builds the image from that
# repository (docker-archive tarball, OCI layout, SPDX SBOMs); a second `pallet build` finds
# everything cached. Then the repository is verified and the image run under runc as a
# non-root user. Never reads ../shared/; everything it makes is in ./demo/.
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
ln -sf "$P" "$D/bin/melange"; ln -sf "$P" "$D/bin/apko"; ln -sf "$P" "$D/bin/pallet"
export PATH=$D/bin:$PATH SOURCE_DATE_EPOCH=1700000000
cd "$D"

echo "== pallet build: key, packages, index and image in one command"
# The workspace is a copy of examples/: two recipes, one image, and pallet.yaml.
cp -r "$ROOT/examples" ws
sed -i "s/x86_64/$ARCH/" ws/image.yaml
cd ws
pallet build --plan
pallet build
echo "== the second run: everything cached, nothing built"
pallet build

echo "== verify the signed repository"
"$P" verify --keyring melange.rsa.pub packages/"$ARCH"/*.apk packages/"$ARCH"/APKINDEX.tar.gz
"$P" info packages/"$ARCH"/hello-c-1.0.0-r0.apk | sed -n '1,9p'
skopeo inspect "docker-archive:$D/ws/images/demo.tar" | grep -E '"(Architecture|Digest)"'

echo "== run it under runc"
umoci unpack --image images/demo:latest bundle >/dev/null
python3 - bundle/config.json <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p)); c["process"]["terminal"] = False; json.dump(c, open(p, "w"))
PY
out=$(cd bundle && runc run "pallet-demo-$$")
echo "$out"
echo "$out" | grep -q "hello from a package pallet built (uid 1000)"
# With a Docker daemon at hand (DOCKER_HOST or the default socket), the everyday flow too:
# docker load, then docker run. Without one, runc above is the consumer.
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  echo "== docker load and docker run"
  docker load -i images/demo.tar
  out=$(docker run --rm --network none demo:latest)
  echo "$out"
  echo "$out" | grep -q "hello from a package pallet built (uid 1000)"
fi
echo "demo OK: packages built and signed, image built from them and run under runc as uid 1000 (all in $D)"
