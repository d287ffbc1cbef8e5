#!/usr/bin/env bash
# Every figure of the speed table in one run, each beside a baseline made by standard tools on
# the same inputs. Figures only: nothing is asserted.
#
#   1. cold image build (empty cache) of the 98 installable packages of the Alpine 3.19 fixture
#      (all but vlan and network-extras, which conflict with ifupdown-ng), against the same work
#      done with tar: extract every package's data, then `tar --sort=name | gzip -6` the tree;
#   2. the same build again, nothing changed, against the same baseline;
#   3. one leaf package changed: openssh repacked at a new version into a copy of the repository
#      (index re-signed with a generated key), built with the cache the old repository left;
#   4. the resolver: `pallet image show-packages` for alpine-base curl python3 on the 4,929-record
#      Alpine 3.16 index, process start included, median of 20 runs, against apk-tools'
#      `apk add --simulate` on the same index (38 ms, measured elsewhere: apk-tools is not here);
#   5. peak memory (RSS) of every build, and a build of a generated 1 GB image (20 packages of
#      50 MB: random bytes and text) with its time and peak RSS.
#
# Needs ../shared/fixtures (or PALLET_SHARED); prints SKIPPED and exits 0 without them. Takes
# about two minutes on 2 cores; everything it makes is in one temporary folder, removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${PALLET_SHARED:-$PWD/../shared}
A=$SHARED/fixtures/alpine-3.19
U=$SHARED/fixtures/upstream-testdata
if [ ! -d "$A/x86_64" ] || [ ! -f "$U/apko/alpine-316/APKINDEX.tar.gz" ]; then
  echo "SKIPPED: $SHARED/fixtures not found (set PALLET_SHARED)"
  exit 0
fi
# PALLET_BIN runs a pallet built elsewhere instead of building this checkout.
P=${PALLET_BIN:-$PWD/target/release/pallet}
[ -n "${PALLET_BIN:-}" ] || cargo build --release --bin pallet -q
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export SOURCE_DATE_EPOCH=1700000000
APK_SIMULATE_MS=38
# apk-tools 2.14.10 `add --no-scripts` + `tar --sort=name | gzip -6` on the same packages, as the
# speed issue measured it (apk-tools is not here): builds are also shown against it.
APK_BUILD_MS=2290

now() { date +%s%N; }
# run NAME CMD…: time CMD (ms in $MS) and its peak RSS (MB in $RSS); its output goes to $T/NAME.log.
run() {
  local name=$1; shift
  local t0 t1
  t0=$(now)
  /usr/bin/time -f %M -o "$T/$name.rss" "$@" >"$T/$name.log" 2>&1 || {
    echo "FAILED: $*"; tail -5 "$T/$name.log"; exit 1
  }
  t1=$(now)
  MS=$(( (t1 - t0) / 1000000 ))
  RSS=$(( $(tail -1 "$T/$name.rss") / 1024 ))
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { r = a / b; printf (r < 0.1 ? "%.3fx" : "%.2fx"), r }'; }
row() { printf '%-44s %8s   %-34s %8s   %6s   %s\n' "$@"; }

# The packages and the image configuration.
pkgs=$(ls "$A/x86_64" | grep '\.apk$' | sed -E 's/-[0-9][^-]*-r[0-9]+\.apk$//' \
  | grep -vx -e vlan -e network-extras | paste -sd, -)
npkgs=$(echo "$pkgs" | tr ',' '\n' | wc -l)
config() { # config FILE REPO KEYRING
  cat >"$1" <<YAML
contents:
  repositories: [$2]
  keyring: [$3]
  packages: [$pkgs]
archs: [x86_64]
YAML
}
config "$T/old.yaml" "$A" "$A/keys"
build() { # build NAME CONFIG: the image of CONFIG into out.tar, with the shared cache
  run "$1" "$P" image build "$2" bench:1 "$T/out.tar" --cache-dir "$T/cache" --sbom=false
}

# Baseline: what `apk add` does to the files (without its database), then the layer, with tar.
base() {
  for f in "$A"/x86_64/*.apk; do
    case "$f" in */vlan-*|*/network-extras-*) continue;; esac
    tar -xzf "$f" -C "$T/root" --exclude='.PKGINFO' --exclude='.SIGN*' --exclude='.pre-*' \
      --exclude='.post-*' --exclude='.trigger' 2>/dev/null || true
  done
  tar --sort=name -C "$T/root" -cf - . | gzip -6 >"$T/base.tar.gz"
}
# The faster of two runs, as the machine may be busy (pallet's cold build: of three).
BASE=
for _ in 1 2; do
  rm -rf "$T/root"; mkdir "$T/root"
  t0=$(now); base; t1=$(now)
  ms=$(( (t1 - t0) / 1000000 ))
  if [ -z "$BASE" ] || [ "$ms" -lt "$BASE" ]; then BASE=$ms; fi
done

# The changed repository: every package but openssh linked in, openssh repacked at -r1 with
# the same files and metadata, and an index signed with a new key.
mkdir -p "$T/new/x86_64" "$T/ssh"
"$P" keygen "$T/bench.rsa" >/dev/null 2>&1
old_ssh=$(ls "$A"/x86_64/openssh-[0-9]*.apk)
for f in "$A"/x86_64/*.apk; do [ "$f" = "$old_ssh" ] || ln -s "$f" "$T/new/x86_64/"; done
tar -xzf "$old_ssh" -C "$T/ssh" --exclude='.PKGINFO' --exclude='.SIGN*' 2>/dev/null || true
info=()
while IFS= read -r line; do
  key=${line%% = *}; value=${line#* = }
  case "$key" in pkgname|arch|pkgdesc|url|license|origin|maintainer|commit|depend|provides)
    info+=(--info "$key=$value");;
  esac
done < <(tar -xzOf "$old_ssh" .PKGINFO 2>/dev/null)
old_ver=$(tar -xzOf "$old_ssh" .PKGINFO 2>/dev/null | sed -n 's/^pkgver = //p')
new_ver=${old_ver%-r*}-r$(( ${old_ver##*-r} + 1 ))
"$P" mkpkg "${info[@]}" --info "version=$new_ver" --files "$T/ssh" \
  -o "$T/new/x86_64/openssh-$new_ver.apk" --signing-key "$T/bench.rsa" >/dev/null 2>&1
"$P" index -o "$T/new/x86_64/APKINDEX.tar.gz" --signing-key "$T/bench.rsa" \
  "$T"/new/x86_64/*.apk >/dev/null 2>&1
config "$T/new.yaml" "$T/new" "$T/bench.rsa.pub"

# The fastest of three cold builds, each from an empty cache, as for the baseline.
COLD=
for _ in 1 2 3; do
  rm -rf "$T/cache"
  build cold "$T/old.yaml"
  if [ -z "$COLD" ] || [ "$MS" -lt "$COLD" ]; then COLD=$MS; COLD_RSS=$RSS; fi
done
build same "$T/old.yaml"; SAME=$MS; SAME_RSS=$RSS
build leaf "$T/new.yaml"; LEAF=$MS; LEAF_RSS=$RSS
# What the new repository resolves openssh to (the repacked version, if all went well).
SSH=$("$P" image show-packages "$T/new.yaml" --cache-dir "$T/cache" | awk '$1 == "openssh" { print $2 }')
IMAGE_KB=$(du -k "$T/out.tar" | cut -f1)

# The resolver, on a repository holding the Alpine 3.16 index. The first run reads, verifies
# and caches the parsed index; the 20 timed runs after it are what a user sees on every run.
mkdir -p "$T/r316/x86_64"
cp "$U/apko/alpine-316/APKINDEX.tar.gz" "$T/r316/x86_64/"
cat >"$T/r316.yaml" <<YAML
contents:
  repositories: [$T/r316]
  keyring: [$U/keys]
  packages: [alpine-base, curl, python3]
archs: [x86_64]
YAML
resolve=("$P" image show-packages "$T/r316.yaml" --cache-dir "$T/cache")
run resolve0 "${resolve[@]}"; FIRST=$MS
RESOLVED=$(wc -l <"$T/resolve0.log")
for _ in $(seq 20); do
  t0=$(now); "${resolve[@]}" >/dev/null 2>&1; t1=$(now)
  echo $(( (t1 - t0) / 1000 ))
done | sort -n >"$T/resolve.us"
MEDIAN_US=$(sed -n 10p "$T/resolve.us")
MEDIAN=$(awk -v u="$MEDIAN_US" 'BEGIN { printf "%.1f", u / 1000 }')

# A 1 GB image: 20 packages of 50 MB each (25 MB of random bytes, 25 MB of text).
mkdir -p "$T/big/x86_64"
t0=$(now)
seq 1 20 | xargs -P 2 -I{} bash -c '
  d="$1/src{}/usr/share/big{}"; mkdir -p "$d"
  head -c 25M /dev/urandom >"$d/random.bin"
  yes "line of text in package {}, repeated to fill the file" | head -c 25M >"$d/text.txt"
  "$2" mkpkg --info name=big{} --info version=1.0-r0 --info arch=x86_64 \
    --info "description=generated 50 MB package" --files "$1/src{}" \
    -o "$1/big/x86_64/big{}-1.0-r0.apk" --signing-key "$1/bench.rsa" >/dev/null 2>&1
  rm -rf "$1/src{}"' _ "$T" "$P"
"$P" index -o "$T/big/x86_64/APKINDEX.tar.gz" --signing-key "$T/bench.rsa" \
  "$T"/big/x86_64/*.apk >/dev/null 2>&1
t1=$(now)
GEN=$(( (t1 - t0) / 1000000 ))
cat >"$T/big.yaml" <<YAML
contents:
  repositories: [$T/big]
  keyring: [$T/bench.rsa.pub]
  packages: [$(seq -f 'big%g' 1 20 | paste -sd, -)]
archs: [x86_64]
YAML
run big "$P" image build "$T/big.yaml" big:1 "$T/big.tar" --cache-dir "$T/bigcache" --sbom=false
BIG=$MS; BIG_RSS=$RSS
BIG_MB=$(( $(du -k "$T/big.tar" | cut -f1) / 1024 ))
rm -rf "$T/bigcache" "$T/big.tar" "$T/big"

echo "pallet $("$P" --version | awk '{print $2}'), $(nproc) cores; image of $npkgs packages: $IMAGE_KB KiB"
row "figure" "pallet" "baseline" "" "ratio" "peak RSS"
row "1. cold image build (empty cache)" "$COLD ms" "tar -xzf each + tar | gzip -6" "$BASE ms" "$(ratio "$COLD" "$BASE")" "$COLD_RSS MB"
row "   the same against apk-tools (fixed)" "" "apk add + tar | gzip -6 (fixed)" "$APK_BUILD_MS ms" "$(ratio "$COLD" "$APK_BUILD_MS")" ""
row "2. rebuild, nothing changed" "$SAME ms" "the same" "$BASE ms" "$(ratio "$SAME" "$BASE")" "$SAME_RSS MB"
row "3. one leaf changed (openssh $SSH)" "$LEAF ms" "the same" "$BASE ms" "$(ratio "$LEAF" "$BASE")" "$LEAF_RSS MB"
row "4. resolve $RESOLVED packages (median of 20)" "$MEDIAN ms" "apk add --simulate (fixed)" "$APK_SIMULATE_MS ms" "$(ratio "$MEDIAN" "$APK_SIMULATE_MS")" ""
row "   first run (parses, verifies, caches)" "$FIRST ms" "" "" "" ""
row "5. 1 GB image build (20 x 50 MB, cold)" "$BIG ms" "(made in $GEN ms, $BIG_MB MB image)" "" "" "$BIG_RSS MB"
