#!/usr/bin/env bash
# Install what pallet's build, demo and tests need on a fresh Debian machine (as root).
# Idempotent: only missing tools are installed.
set -euo pipefail
need=()
for pair in skopeo:skopeo umoci:umoci runc:runc bwrap:bubblewrap docker-registry:docker-registry \
            curl:curl gcc:gcc pigz:pigz bc:bc htpasswd:apache2-utils patch:patch wget:wget \
            cpio:cpio dockerd:docker.io tmux:tmux qemu-system-x86_64:qemu-system-x86 \
            keytool:default-jre-headless; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx sh || need+=(busybox-static)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -f /usr/lib/aarch64-linux-gnu/libc.a ] || need+=(libc6-dev)
# pip for the SBOM validators, and venv (ensurepip) for BuildGrid's venv below: Debian's own
# python3 ships neither.
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Foreign architectures (aarch64, armv7) run under qemu-user through binfmt_misc with the F
# flag; the multi-arch tests repack Debian's arm64/armhf packages, so apt must know the arches.
if ! [ -x /usr/bin/qemu-aarch64-static ] || ! command -v update-binfmts >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq qemu-user-static binfmt-support >/dev/null \
    || { apt-get update -qq; apt-get install -y -qq qemu-user-static binfmt-support >/dev/null; }
fi
mountpoint -q /proc/sys/fs/binfmt_misc 2>/dev/null || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
for q in aarch64 arm; do
  grep -q '^enabled' "/proc/sys/fs/binfmt_misc/qemu-$q" 2>/dev/null || update-binfmts --enable "qemu-$q" 2>/dev/null || true
done
added=0
for a in arm64 armhf; do
  dpkg --print-foreign-architectures | grep -qx "$a" || { dpkg --add-architecture "$a"; added=1; }
done
[ "$added" = 0 ] || apt-get update -qq || true
# The qemu runner boots Debian's cloud kernels (amd64, and arm64 under emulation), unpacked
# where pallet looks for them (/var/cache/pallet/kernel/ARCH), never installed on the host.
command -v qemu-system-aarch64 >/dev/null || apt-get install -y -qq qemu-system-arm >/dev/null || true
for pair in amd64:x86_64 arm64:aarch64; do
  a=${pair%%:*}
  K=${PALLET_QEMU_KERNEL_DIR:-/var/cache/pallet/kernel}/${pair#*:}
  ls "$K"/boot/vmlinuz-* >/dev/null 2>&1 && continue
  rm -rf "$K.tmp"; mkdir -p "$K.tmp" && (
    cd "$K.tmp"
    v=$(apt-cache depends "linux-image-cloud-$a:$a" | awk '/Depends: linux-image-/{print $2; exit}')
    apt-get download "$v" >/dev/null 2>&1 || { apt-get update -qq; apt-get download "$v" >/dev/null 2>&1; }
    dpkg-deb -x linux-image-*.deb root && rm -f linux-image-*.deb
  ) && rm -rf "$K" && mv "$K.tmp/root" "$K" && rm -rf "$K.tmp" || echo "note: no $a kernel for the qemu runner" >&2
done
if ! command -v pyspdxtools >/dev/null 2>&1; then
  python3 -m pip install -q spdx-tools >/dev/null 2>&1 || python3 -m pip install -q --break-system-packages spdx-tools
fi
if ! python3 -c 'import cyclonedx.validation.json' >/dev/null 2>&1; then
  python3 -m pip install -q 'cyclonedx-python-lib[json-validation]' >/dev/null 2>&1 \
    || python3 -m pip install -q --break-system-packages 'cyclonedx-python-lib[json-validation]'
fi
# Remote-execution tests run BuildGrid (a REAPI scheduler, CAS and ActionCache) from PyPI in its
# own venv. 0.2.53 is the last release that keeps its scheduler in a SQLite file (0.3 and later
# need PostgreSQL), so the tests need no database server. The tests look for
# $PALLET_BUILDGRID/venv/bin/bgd (default /opt/pallet-buildgrid) and print SKIPPED without it.
BG=${PALLET_BUILDGRID:-/opt/pallet-buildgrid}
if ! "$BG/venv/bin/python" -c 'import buildgrid.server.sql.models' >/dev/null 2>&1 \
   || [ "$("$BG/venv/bin/pip" show buildgrid 2>/dev/null | awk '/^Version:/{print $2}')" != 0.2.53 ]; then
  # A half-made venv (an install killed midway) fails the check above and is made again.
  rm -rf "$BG/venv"; mkdir -p "$BG"
  python3 -m venv "$BG/venv"
  "$BG/venv/bin/pip" install -q "buildgrid==0.2.53"
fi
command -v cargo >/dev/null || { echo "cargo is missing: install Rust with rustup first" >&2; exit 1; }
