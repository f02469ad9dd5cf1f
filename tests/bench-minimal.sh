#!/usr/bin/env bash
# Benchmark: build and boot-test images/minimal.toml with a warm package
# cache and print the seconds of each stage and the image sizes; then the
# same build and matrix again, unchanged (reused).
# Targets: build < 120 s with a warm cache; boot to the first check < 30 s
# under software emulation on 2 cores; the whole matrix (12 VM cells, 4
# containers, the native run) < 240 s; an unchanged rerun < 10 s.
# Usage: tests/bench-minimal.sh [OUT_DIR]   (as root, after .ci/setup)
set -euo pipefail
. "$(dirname "$0")/bench-env.sh"
out=${1:-/var/tmp/biovm-bench}

if [ -z "$(ls -A "$BIOVM_CACHE_DIR/debs/bookworm-amd64" 2>/dev/null)" ]; then
  echo "package cache is cold: warm-up build first (not measured)"
  "$bin" build images/minimal.toml --out "$out" >/dev/null
fi

t0=$(date +%s.%N)
"$bin" build images/minimal.toml --out "$out" --rebuild >/dev/null
t1=$(date +%s.%N)
# One firmware at a time, so each boot has the machine to itself.
"$bin" test "$out/minimal.raw" --firmware uefi --rerun --json > "$out/bench-uefi.json"
"$bin" test "$out/minimal.raw" --firmware bios --rerun --json > "$out/bench-bios.json"
t2=$(date +%s.%N)
"$bin" test images/minimal.toml --out "$out" --rerun --json > "$out/bench-matrix.json"
t3=$(date +%s.%N)
# Unchanged: the build and every cell are reused.
"$bin" build images/minimal.toml --out "$out" >/dev/null
t4=$(date +%s.%N)
"$bin" test images/minimal.toml --out "$out" --json > "$out/bench-rerun.json"
t5=$(date +%s.%N)

python3 - "$out" "$t0" "$t1" "$t2" "$t3" "$t4" "$t5" <<'PY'
import json, os, sys
out, t0, t1, t2, t3, t4, t5 = sys.argv[1], *map(float, sys.argv[2:])
b = json.load(open(os.path.join(out, "minimal.build.json")))
def report(name):
    # `biovm --json test` prints events, one per line; the report is the last one's result.
    return json.loads(open(os.path.join(out, name)).read().splitlines()[-1])["result"]
print("stage                       seconds")
for s in b["stages"]:
    print(f"{s['stage']:<27} {s['seconds']:7.1f}")
print(f"{'build total (wall)':<27} {t1 - t0:7.1f}")
for fw in ("uefi", "bios"):
    r = report(f"bench-{fw}.json")[0]
    print(f"{fw + ' boot to checks start':<27} {r['boot_secs']:7.1f}   ({r['accel']}, {r['bus']}; guest uptime then {r['guest_uptime_at_start']:.1f} s)")
    print(f"{fw + ' boot to first result':<27} {r['first_check_secs']:7.1f}")
    print(f"{fw + ' all checks':<27} {sum(c['seconds'] for c in r['results']):7.1f}   ({len(r['results'])} checks, total boot {r['total_secs']:.1f} s)")
m = report("bench-matrix.json")
passed = sum(1 for r in m if r['error'] is None and all(c['result'] == 'passed' for c in r['results']))
shared = sum(1 for r in m if r.get('same_boot_as'))
vms = sum(1 for r in m if r['firmware'] not in ('container', 'native'))
native = [r for r in m if r['firmware'] == 'native']
print(f"{'matrix (wall)':<27} {t3 - t2:7.1f}   ({len(m)} cells, {passed} passed: {vms - shared} VM boots, {shared} VM cells sharing a boot of the same disk, {len(m) - vms - len(native)} containers, {len(native)} native run)")
for r in native:
    print(f"{'native: tree out of disk':<27} {r['prepare_secs']:7.1f}")
    print(f"{'native: every check (wall)':<27} {r['total_secs'] - r['prepare_secs']:7.1f}   ({len(r['results'])} checks)")
for r in m:
    how = f"same disk as {r['same_boot_as']}" if r.get('same_boot_as') else f"checks start at {r['boot_secs'] or 0:.1f} s"
    print(f"  {r['artifact'] + ' ' + r['firmware']:<25} {r['total_secs']:7.1f}   ({r['bus']}, {how})")
again = report("bench-rerun.json")
reused = sum(1 for r in again if r.get("reused"))
print(f"{'unchanged build (reused)':<27} {t4 - t3:7.1f}")
print(f"{'unchanged matrix (reused)':<27} {t5 - t4:7.1f}   ({reused} of {len(again)} cells reused)")
raw = os.path.join(out, "minimal.raw")
st = os.stat(raw)
print(f"{'disk size (apparent)':<27} {st.st_size / 2**20:7.0f} MiB")
print(f"{'disk size (allocated)':<27} {st.st_blocks * 512 / 2**20:7.0f} MiB")
print(f"{'root tree':<27} {b['root_tree_bytes'] / 2**20:7.0f} MiB")
# Every artifact: sparse stays sparse (allocated <= apparent).
print("artifact                    apparent  allocated")
for a in b["artifacts"]:
    p = os.path.join(out, a["file"])
    if a["file"].endswith("/index.json"):
        p = os.path.dirname(p)
        sizes = [os.lstat(os.path.join(d, f)) for d, _, fs in os.walk(p) for f in fs]
        app, alloc = sum(x.st_size for x in sizes), sum(x.st_blocks * 512 for x in sizes)
    else:
        st = os.stat(p)
        app, alloc = st.st_size, st.st_blocks * 512
    print(f"{a['file']:<27} {app / 2**20:7.0f} MiB {alloc / 2**20:6.0f} MiB")
PY
