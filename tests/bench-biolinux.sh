#!/usr/bin/env bash
# Benchmark: the BioLinux image's test, cold. Builds images/biolinux.toml
# from its lock (reused when already built from the same inputs), then runs
# `biovm test` on every artifact with --rerun (nothing taken from stored
# results) and prints the seconds of each part: the tree read out of the
# disk, every check and functional test natively (wall), each VM boot to
# its last system check, each container run, and the whole test; then the
# same test unchanged (every cell reused).
# Targets (2 cores, no KVM): every check natively <= 90 s; each boot <= 90 s;
# the whole test <= 6 minutes; an unchanged rerun <= 10 s.
# Usage: tests/bench-biolinux.sh [OUT_DIR]   (as root, after .ci/setup)
set -euo pipefail
. "$(dirname "$0")/bench-env.sh"
out=${1:-/var/tmp/biovm-bench-biolinux}

t0=$(date +%s.%N)
"$bin" build images/biolinux.toml --out "$out" >/dev/null
t1=$(date +%s.%N)
"$bin" test images/biolinux.toml --out "$out" --rerun --boot-timeout 900 --json > "$out/bench-test.json"
t2=$(date +%s.%N)
"$bin" test images/biolinux.toml --out "$out" --json > "$out/bench-rerun.json"
t3=$(date +%s.%N)

python3 - "$out" "$t0" "$t1" "$t2" "$t3" <<'PY'
import json, os, sys
out, t0, t1, t2, t3 = sys.argv[1], *map(float, sys.argv[2:])
def report(name):
    return json.loads(open(os.path.join(out, name)).read().splitlines()[-1])["result"]
b = json.load(open(os.path.join(out, "biolinux.build.json")))
print(f"{'build (wall)':<34} {t1 - t0:7.1f}   ({'reused' if b.get('reused') else 'built'}; root tree {b['root_tree_bytes'] / 2**30:.1f} GiB)")
m = report("bench-test.json")
for r in m:
    cell = f"{r['artifact']} {r['firmware']}"
    if r["firmware"] == "native":
        how = "disk mounted" if r.get("disk_mounted") else "tree out of the disk"
        print(f"{'native: ' + how:<34} {r['prepare_secs']:7.1f}")
        same = next((c["output"] for c in r["results"] if c["tool"] == "system/same-tree"), "")
        how_tree = "its tree the build's read-back" if "read back" in same else "the disk's digest read meanwhile"
        print(f"{'native: every check (wall)':<34} {r['total_secs'] - r['prepare_secs']:7.1f}   ({len(r['results'])} checks, as {r.get('user', 'root')}; {how_tree})")
    elif r["firmware"] == "container":
        how = f"layers read {r['prepare_secs']:.1f} s, run in {r['tree_of']}'s tree" if r.get("tree_of") else f"unpacked {r['prepare_secs']:.1f} s"
        print(f"{cell:<34} {r['total_secs']:7.1f}   ({how}, {len(r['results'])} checks)")
    elif r.get("same_boot_as"):
        print(f"{cell:<34} {'-':>7}   (same disk as {r['same_boot_as']})")
    else:
        print(f"{cell:<34} {r['total_secs']:7.1f}   (first check at {r['first_check_secs'] or 0:.1f} s, {len(r['results'])} checks, {r['accel']})")
ok = all(r["error"] is None and all(c["result"] == "passed" for c in r["results"]) for r in m)
print(f"{'whole test (wall)':<34} {t2 - t1:7.1f}   ({len(m)} cells, {'all passed' if ok else 'FAILED'})")
again = report("bench-rerun.json")
print(f"{'unchanged rerun (wall)':<34} {t3 - t2:7.1f}   ({sum(1 for r in again if r.get('reused'))} of {len(again)} cells reused)")
PY
