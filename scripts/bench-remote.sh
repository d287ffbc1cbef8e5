#!/usr/bin/env bash
# Remote execution figures, printed (nothing asserted): BuildGrid 0.2.53 (the venv
# scripts/install-deps.sh makes) on 127.0.0.1 and `pallet worker`s as separate processes.
#  1. scaling: 16 independent recipes whose step sleeps 2 s, built with 1, 2 and 4 workers
#     (sleep-bound, so 2 cores suffice); wall times and the ratio to one worker;
#  2. no-op: a 50-package workspace built once remotely, then by a second client with an empty
#     local cache (every package an ActionCache hit), with the bytes moved each time;
#  3. the same for 10 packages whose environments come from the Alpine fixture over HTTP, with
#     the package files the second client fetched from the repository.
# PALLET=path/to/pallet uses that binary instead of building the release one; BENCH=noop skips
# the scaling figures.
set -euo pipefail
cd "$(dirname "$0")/.."
BG=${PALLET_BUILDGRID:-/opt/pallet-buildgrid}/venv
[ -x "$BG/bin/bgd" ] || { echo "SKIPPED: no BuildGrid in $BG (scripts/install-deps.sh makes it)"; exit 0; }
if [ -z "${PALLET:-}" ]; then cargo build --release --bin pallet -q; PALLET=$PWD/target/release/pallet; fi
T=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [ -f "$T/bgd.pid" ] && kill "$(cat "$T/bgd.pid")" 2>/dev/null || true
  sleep 1; rm -rf "$T"
}
trap cleanup EXIT

start_bgd() { # $1: folder
  local W=$1 port
  mkdir -p "$W"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$BG/bin/python" -c "import sqlalchemy; from buildgrid.server.sql.models import Base; Base.metadata.create_all(sqlalchemy.create_engine('sqlite:///$W/bgd.db'))"
  # The tests' configuration (reapi.md's loopback setup), with a 10 s bot keepalive.
  sed -e "s|{port}|$port|" -e "s|{db}|$W/bgd.db|" -e "s|{keepalive}|10|" \
    crates/pallet-test-support/src/buildgrid.yml >"$W/server.yml"
  "$BG/bin/bgd" server start --pid-file "$W/bgd.pid" "$W/server.yml" >"$W/server.log" 2>&1 &
  # Listening, and its pid file written (a loaded machine may take longer than 10 s).
  for _ in $(seq 300); do
    [ -f "$W/bgd.pid" ] && (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1
  done
  [ -f "$W/bgd.pid" ] || { echo "BuildGrid did not start:"; tail -5 "$W/server.log"; exit 1; }
  URL=grpc://127.0.0.1:$port
}

workspace() { # $1: folder, $2: recipes, $3: seconds of sleep
  mkdir -p "$1"; : > "$1/pallet.yaml"; echo "recipes:" >> "$1/pallet.yaml"
  for k in $(seq -w 1 "$2"); do
    cat > "$1/r$k.yaml" <<YAML
package: {name: r$k, version: 1.0.0, epoch: 0, description: bench, copyright: [{license: MIT}]}
pipeline:
  - runs: |
      sleep $3
      mkdir -p \${{targets.destdir}}/usr/share/r$k
      echo $k > \${{targets.destdir}}/usr/share/r$k/k
YAML
    echo "  r$k: {bootstrap: true}" >> "$1/pallet.yaml"
  done
  "$PALLET" keygen --bits 2048 "$1/melange.rsa" >/dev/null 2>&1
}

secs() { python3 -c "import time; print(time.monotonic())"; }

# BENCH=noop runs the no-op figures alone.
declare -A wall
[ "${BENCH:-}" = noop ] || echo "scaling: 16 recipes, each step sleeps 2 s"
for n in $([ "${BENCH:-}" = noop ] || echo 1 2 4); do
  start_bgd "$T/bgd$n"; cp "$T/bgd$n/bgd.pid" "$T/bgd.pid"
  for w in $(seq "$n"); do
    "$PALLET" worker --executor "$URL" --name "b$n-$w" --work-dir "$T/w$n-$w" --cache-dir "$T/wcache" 2>"$T/w$n-$w.log" &
    pids+=($!); disown $!
  done
  workspace "$T/ws$n" 16 2
  t0=$(secs)
  (cd "$T/ws$n" && SOURCE_DATE_EPOCH=0 "$PALLET" build -j 16 --cache-dir "$T/c$n" --remote-executor "$URL" >"$T/b$n.log" 2>&1) \
    || { echo "build with $n workers failed:"; grep -A1 FAILED "$T/b$n.log" | head; tail -5 "$T/bgd$n/server.log"; exit 1; }
  t1=$(secs)
  wall[$n]=$(python3 -c "print(f'{$t1-$t0:.1f}')")
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; pids=()
  kill "$(cat "$T/bgd$n/bgd.pid")"; sleep 1.5
  echo "  $n worker(s): ${wall[$n]} s  ($(python3 -c "print(f'{${wall[1]}/${wall[$n]}:.2f}')")x one worker)"
done

echo "no-op: 50 packages, second client with an empty local cache"
start_bgd "$T/bgd50"; cp "$T/bgd50/bgd.pid" "$T/bgd.pid"
for w in 1 2; do
  "$PALLET" worker --executor "$URL" --name "n$w" --work-dir "$T/n$w" --cache-dir "$T/wcache" 2>"$T/n$w.log" &
  pids+=($!); disown $!
done
workspace "$T/a" 50 0
(cd "$T/a" && SOURCE_DATE_EPOCH=0 "$PALLET" build --cache-dir "$T/ca" --remote-executor "$URL" >"$T/a.log" 2>&1) || { tail -20 "$T/a.log"; exit 1; }
echo "  first build:   $(grep '^remote:' "$T/a.log")"
mkdir -p "$T/b"; cp "$T"/a/*.yaml "$T"/a/melange.rsa* "$T/b/"
t0=$(secs)
(cd "$T/b" && SOURCE_DATE_EPOCH=0 "$PALLET" build --cache-dir "$T/cb" --remote-executor "$URL" >"$T/b.log" 2>&1) || { tail -20 "$T/b.log"; exit 1; }
t1=$(secs)
echo "  second client: $(python3 -c "print(f'{$t1-$t0:.2f}')") s wall; $(grep '^remote:' "$T/b.log")"
t0=$(secs)
(cd "$T/b" && SOURCE_DATE_EPOCH=0 "$PALLET" build --cache-dir "$T/cb" --remote-executor "$URL" >"$T/c.log" 2>&1)
t1=$(secs)
echo "  again (local cache warm): $(python3 -c "print(f'{$t1-$t0:.2f}')") s wall; $(grep '^remote:' "$T/c.log")"
cmp <(cd "$T/a/packages" && find . -name '*.apk' -o -name APKINDEX.tar.gz | sort | xargs sha256sum) \
    <(cd "$T/b/packages" && find . -name '*.apk' -o -name APKINDEX.tar.gz | sort | xargs sha256sum) \
  && echo "  the second client's packages and index are byte-identical to the first's"

# 3. The same with an external environment: what a cold client downloads to look results up.
ALPINE=${PALLET_FIXTURES:-/work/shared/fixtures}/alpine-3.19
if [ ! -d "$ALPINE/x86_64" ] || ! command -v bwrap >/dev/null; then
  echo "no-op with an external environment: SKIPPED (no $ALPINE, or no bwrap)"; exit 0
fi
echo "no-op with an external environment: 10 packages, each built in busybox + zlib from the Alpine fixture over HTTP"
hport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server -b 127.0.0.1 -d "$ALPINE" "$hport" >"$T/http.log" 2>&1 &
pids+=($!); disown $!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$hport) 2>/dev/null && break; sleep 0.1; done
envws() { # $1: folder
  mkdir -p "$1"
  { echo "repositories: [http://127.0.0.1:$hport]"; echo "keyring:"
    for k in "$ALPINE"/keys/*; do echo "  - $k"; done; } >"$1/pallet.yaml"
  for k in $(seq -w 1 10); do
    cat > "$1/e$k.yaml" <<YAML
package: {name: e$k, version: 1.0.0, epoch: 0, description: bench, copyright: [{license: MIT}]}
environment:
  contents:
    packages: [busybox, zlib]
pipeline:
  - runs: |
      mkdir -p \${{targets.destdir}}/usr/share/e$k
      echo $k > \${{targets.destdir}}/usr/share/e$k/k
YAML
  done
}
envws "$T/ea"; cp "$T"/a/melange.rsa* "$T/ea/"
(cd "$T/ea" && SOURCE_DATE_EPOCH=0 "$PALLET" build --cache-dir "$T/cea" --remote-executor "$URL" >"$T/ea.log" 2>&1) || { tail -20 "$T/ea.log"; exit 1; }
echo "  first build:   $(grep '^remote:' "$T/ea.log")"
envws "$T/eb"; cp "$T"/a/melange.rsa* "$T/eb/"
served=$(wc -l <"$T/http.log")
t0=$(secs)
(cd "$T/eb" && SOURCE_DATE_EPOCH=0 "$PALLET" build --cache-dir "$T/ceb" --remote-executor "$URL" >"$T/eb.log" 2>&1) || { tail -20 "$T/eb.log"; exit 1; }
t1=$(secs)
echo "  second client: $(python3 -c "print(f'{$t1-$t0:.2f}')") s wall, $(tail -n +$((served + 1)) "$T/http.log" | grep -c '\.apk HTTP') package files fetched from the repository; $(grep '^remote:' "$T/eb.log")"
cmp <(cd "$T/ea/packages" && find . -name '*.apk' -o -name APKINDEX.tar.gz | sort | xargs sha256sum) \
    <(cd "$T/eb/packages" && find . -name '*.apk' -o -name APKINDEX.tar.gz | sort | xargs sha256sum) \
  && echo "  the second client's packages and index are byte-identical to the first's"
