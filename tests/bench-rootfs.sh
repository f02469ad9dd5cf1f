#!/usr/bin/env bash
# Benchmark: the root filesystem stage of images/biolinux.toml (biovm's
# downloads + bootstrap + configure + clamp-times stages, from its lock)
# against bare mmdebstrap installing the same locked package set from the
# same warm package cache, side by side in one run. Prints both times and
# their ratio. Target: biovm / bare <= 1.15.
# Usage: tests/bench-rootfs.sh [OUT_DIR]   (as root, after .ci/setup)
set -euo pipefail
. "$(dirname "$0")/bench-env.sh"
out=${1:-/var/tmp/biovm-bench-rootfs}
debs=$BIOVM_CACHE_DIR/debs/bookworm-amd64

rm -rf "$out"
mkdir -p "$out/project/images"
img=$out/project/images/biolinux.toml
cp images/biolinux.toml "$img"
# The lock pins the package set both sides install.
if [ -f images/biolinux.lock ]; then cp images/biolinux.lock "$out/project/images/"; fi
"$bin" --recipes recipes lock "$img" >/dev/null
lock=${img%.toml}.lock

# name=version for every locked package, and whether the cache holds them all.
rc=0
python3 - "$lock" "$debs" > "$out/packages.txt" <<'PY' || rc=$?
import os, sys, tomllib
lock, debs = sys.argv[1], sys.argv[2]
l = tomllib.load(open(lock, "rb"))
missing = 0
for d in l["debian"]:
    print(f"{d['name']}={d['version']}")
    f = f"{d['name']}_{d['version'].replace(':', '%3a')}_{d['architecture']}.deb"
    missing += not os.path.exists(os.path.join(debs, f))
print(f"{missing} of {len(l['debian'])} locked packages not in the cache", file=sys.stderr)
sys.exit(3 if missing else 0)
PY
[ "$rc" = 0 ] || [ "$rc" = 3 ] || exit "$rc"
if [ "$rc" = 3 ]; then
  echo "package cache is cold: warm-up build first (not measured)"
  "$bin" --recipes recipes build "$img" --format raw --out "$out/warm" >/dev/null
  rm -rf "$out/warm"
fi

# 1. biovm: its root filesystem stages from the build's own timings.
"$bin" --recipes recipes build "$img" --format raw --out "$out/biovm" >/dev/null
biovm_secs=$(python3 - "$out/biovm/biolinux.build.json" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
stages = {s["stage"]: s["seconds"] for s in b["stages"]}
for s in ("downloads", "bootstrap", "configure", "clamp-times"):
    print(f"  biovm {s:<12} {stages.get(s, 0):7.1f} s", file=sys.stderr)
print(sum(stages.get(s, 0) for s in ("downloads", "bootstrap", "configure", "clamp-times")))
PY
)
rm -rf "$out/biovm"

# 2. Bare mmdebstrap: the same packages, the same cache copied in the same way.
t0=$(date +%s.%N)
mmdebstrap --quiet --variant=apt --architectures=amd64 --components=main \
  --include="$(paste -sd, "$out/packages.txt")" \
  --skip=download/empty \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
  --setup-hook="sync-in $debs /var/cache/apt/archives/" \
  bookworm "$out/bare-root"
t1=$(date +%s.%N)
rm -rf "$out/bare-root"
bare_secs=$(python3 -c "print($t1 - $t0)")

python3 - "$biovm_secs" "$bare_secs" "$(wc -l < "$out/packages.txt")" <<'PY'
import sys
b, m, n = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
print(f"packages (locked closure)   {n:>7}")
print(f"biovm root filesystem       {b:7.1f} s")
print(f"bare mmdebstrap             {m:7.1f} s")
print(f"ratio biovm / bare          {b / m:7.2f}   (target <= 1.15)")
PY
