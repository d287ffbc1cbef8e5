#!/usr/bin/env bash
# The same small recipe built natively (x86_64) and under qemu-user emulation (aarch64), in the
# same script, with the ratio. Both guests are Debian's busybox-static for their arch, repacked
# with `pallet mkpkg`, so the only difference is emulation. Prints figures, asserts nothing.
# Needs root (apt-get download, binfmt_misc); scripts/install-deps.sh sets up qemu-user.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin pallet >/dev/null 2>&1
P=$PWD/target/release/pallet
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
cd "$T"
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null \
  || { echo "SKIPPED: no qemu-aarch64 binfmt handler (run scripts/install-deps.sh)"; exit 0; }
"$P" keygen --bits 2048 repo.rsa >/dev/null 2>&1
for pair in amd64:x86_64 arm64:aarch64; do
  deb=${pair%%:*}; apk=${pair#*:}
  mkdir -p "deb-$deb" "root-$apk/etc/busybox-paths.d" "repo/$apk"
  (cd "deb-$deb" && apt-get download "busybox-static:$deb" >/dev/null 2>&1) \
    || { echo "SKIPPED: apt-get download busybox-static:$deb failed (dpkg --add-architecture $deb)"; exit 0; }
  dpkg-deb -x deb-"$deb"/*.deb "root-$apk"
  rm -rf "root-$apk/usr/share"
  ln -s busybox "root-$apk/bin/sh"
  "root-$apk/bin/busybox" --list-full | sed 's|^|/|' > "root-$apk/etc/busybox-paths.d/busybox"
  "$P" mkpkg --info name=busybox --info version=1.35.0-r0 --info arch="$apk" --info license=GPL-2.0-only \
    --files "root-$apk" -o "repo/$apk/busybox-1.35.0-r0.apk" --signing-key repo.rsa >/dev/null
  "$P" index -o "repo/$apk/APKINDEX.tar.gz" --signing-key repo.rsa "repo/$apk/busybox-1.35.0-r0.apk" >/dev/null
done
cat > r.yaml <<YAML
package: {name: loop, version: 1, epoch: 0, description: a little shell work, copyright: [{license: MIT}]}
environment:
  contents:
    repositories: [$T/repo]
    keyring: [$T/repo.rsa.pub]
    packages: [busybox]
pipeline:
  - runs: |
      i=0; while [ \$i -lt 100000 ]; do i=\$((i+1)); done
      mkdir -p \${{targets.destdir}}/usr/share/loop
      for n in \$(seq 200); do echo \$n | sha256sum >> \${{targets.destdir}}/usr/share/loop/sums; done
YAML
best() {
  local arch=$1 b=999999
  for _ in 1 2 3; do
    local s e
    s=$(date +%s%N)
    SOURCE_DATE_EPOCH=1700000000 "$P" pkg build r.yaml --arch "$arch" --apk-cache-dir cache --out-dir "out-$arch" >/dev/null 2>&1
    e=$(date +%s%N)
    local ms=$(( (e - s) / 1000000 ))
    [ "$ms" -lt "$b" ] && b=$ms
  done
  echo "$b"
}
native=$(best x86_64)
emulated=$(best aarch64)
echo "same recipe, best of 3: native x86_64 ${native} ms, aarch64 under qemu-user ${emulated} ms, ratio $(echo "scale=2; $emulated / $native" | bc)"
