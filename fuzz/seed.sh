#!/usr/bin/env bash
# Seed every fuzz target's corpus (fuzz/corpus/<target>/, git-ignored) from real inputs made by
# others: the packages, indexes and keys in ../shared/fixtures (or $PALLET_SHARED/fixtures),
# the apko and melange YAML in ../shared/corpus, plus the small hand-written seeds in
# fuzz/seeds/<target>/. Seeds are copied at run time and never committed. Idempotent: seed
# files are named seed-*, and what the fuzzer added to a corpus stays.
set -euo pipefail
fuzz=$(cd "$(dirname "$0")" && pwd)
shared=${PALLET_SHARED:-$fuzz/../../shared}
fixtures=$shared/fixtures
yaml=$shared/corpus
corpus=$fuzz/corpus
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

targets="apk apk_install apkindex index_text pkginfo installed_db version_dep apko_config
  melange_config registry docker_config lockfile keys ldso sbom_fields"
for t in $targets; do mkdir -p "$corpus/$t"; done
mkdir -p "$corpus/keys-ring"

# A name per seed from its source path, so seeds from different folders never collide.
name() { printf 'seed-%s' "$(echo "$1" | sed 's|^\./||; s|[^A-Za-z0-9._-]|_|g')"; }

# Hand-written seeds first: they need nothing from outside.
for t in $targets; do
  [ -d "$fuzz/seeds/$t" ] || continue
  for f in "$fuzz/seeds/$t"/*; do
    [ -f "$f" ] && cp "$f" "$corpus/$t/seed-hand-$(basename "$f")"
  done
done

if [ ! -d "$fixtures" ]; then
  echo "SKIPPED: $fixtures is absent: only the hand-written seeds are in fuzz/corpus" >&2
  exit 0
fi

# Packages: small ones only (big inputs slow every execution down).
count=0
while IFS= read -r apk; do
  rel=${apk#"$fixtures"/}
  n=$(name "$rel")
  cp "$apk" "$corpus/apk/$n"
  cp "$apk" "$corpus/apk_install/$n"
  # .PKGINFO of every package (the control section; tar reads the concatenated members).
  tar -xzOf "$apk" .PKGINFO > "$corpus/pkginfo/$n.PKGINFO" 2>/dev/null || rm -f "$corpus/pkginfo/$n.PKGINFO"
  # ELF files and os-release from the data sections, for the ld.so.cache and SBOM targets.
  if [ $count -lt 40 ]; then
    d=$work/x$count
    mkdir -p "$d"
    tar -xzf "$apk" -C "$d" 2>/dev/null || true
    find "$d" -type f -size -64k | while IFS= read -r f; do
      if [ "$(head -c4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ]; then
        cp "$f" "$corpus/ldso/$n-$(basename "$f")"
      fi
      case "$f" in */os-release|*/ld.so.conf|*/ld.so.conf.d/*) cp "$f" "$corpus/ldso/$n-$(basename "$f")"
                                                   cp "$f" "$corpus/sbom_fields/$n-$(basename "$f")";; esac
    done
    count=$((count + 1))
  fi
done < <(find "$fixtures" -name '*.apk' -size -128k | sort)

# Keys: the keyring the verifying targets use (by file name, as signatures name them), and
# seeds for the PEM parser.
find "$fixtures" -name '*.pub' | while IFS= read -r k; do
  cp "$k" "$corpus/keys-ring/$(basename "$k")"
  cp "$k" "$corpus/keys/$(name "${k#"$fixtures"/}")"
done

# Indexes: the small ones whole; of every index, the text in chunks of 8 records, versions
# and atoms one per line, and licences.
i=0
while IFS= read -r idx; do
  rel=${idx#"$fixtures"/}
  n=$(name "$rel")
  [ "$(stat -c %s "$idx")" -lt 65536 ] && cp "$idx" "$corpus/apkindex/$n"
  text=$work/APKINDEX.$i
  tar -xzOf "$idx" APKINDEX > "$text" 2>/dev/null || continue
  # An unsigned index of the first records of a big one, as a small whole-file seed too.
  awk -v RS= -v ORS='\n\n' 'NR <= 12' "$text" > "$work/APKINDEX"
  (cd "$work" && tar -czf "$corpus/apkindex/$n-head.tar.gz" APKINDEX)
  awk -v RS= -v ORS='\n\n' -v out="$corpus/index_text/$n" \
    'NR <= 400 { f = out "-" int((NR - 1) / 8); print > f; if ((NR - 1) % 8 == 7) close(f) }' "$text"
  # (awk, not head: head would end the pipe early, and pipefail would take that as failure)
  { awk '/^V:/ { print substr($0, 3) }' "$text" | awk 'NR <= 200'
    awk '/^[Dpi]:/ { print substr($0, 3) }' "$text" | tr ' ' '\n' | sort -u | awk 'NR <= 400'
  } | split -l 32 - "$corpus/version_dep/$n-"
  awk '/^L:/ { print substr($0, 3) }' "$text" | sort -u | split -l 16 - "$corpus/sbom_fields/$n-L-"
  i=$((i + 1))
done < <(find "$fixtures" -name 'APKINDEX.tar.gz' | sort)
find "$fixtures" -name APKINDEX -type f | while IFS= read -r t; do
  cp "$t" "$corpus/index_text/$(name "${t#"$fixtures"/}")"
done

# The installed database: whole, and in chunks of 4 records.
find "$fixtures" -path '*/installed' -type f | while IFS= read -r db; do
  n=$(name "${db#"$fixtures"/}")
  cp "$db" "$corpus/installed_db/$n"
  awk -v RS= -v ORS='\n\n' -v out="$corpus/installed_db/$n" \
    '{ f = out "-" int((NR - 1) / 4); print > f; if ((NR - 1) % 4 == 3) close(f) }' "$db"
done

# YAML: apko files (an included file follows `#%%` as base.yaml, the form the apko_config
# target reads) and melange files.
if [ -d "$yaml/apko" ]; then
  find "$yaml/apko" -name '*.yaml' | sort | while IFS= read -r y; do
    out="$corpus/apko_config/$(name "${y#"$yaml"/}")"
    inc=$(sed -n 's/^include:[[:space:]]*//p' "$y" | sed -n 1p)
    base=""
    for c in "$(dirname "$y")/$inc" "$yaml/apko/$inc" "$(dirname "$y")/$(basename "$inc")"; do
      [ -n "$inc" ] && [ -f "$c" ] && { base=$c; break; }
    done
    if [ -n "$base" ]; then
      { sed 's/^include:.*/include: base.yaml/' "$y"; printf '\n#%%%%\n'; cat "$base"; } > "$out"
    else
      cp "$y" "$out"
    fi
  done
fi
if [ -d "$yaml/melange" ]; then
  find "$yaml/melange" -name '*.yaml' | sort | while IFS= read -r y; do
    cp "$y" "$corpus/melange_config/$(name "${y#"$yaml"/}")"
  done
fi

for t in $targets; do
  printf '%-15s %5d seeds\n' "$t" "$(find "$corpus/$t" -maxdepth 1 -type f | wc -l)"
done
