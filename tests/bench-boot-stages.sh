#!/usr/bin/env bash
# Benchmark: where a TCG test boot of the minimal image spends its time,
# stage by stage (firmware, GRUB, kernel, initramfs, systemd, each
# cloud-init stage, the checks), for each firmware. Prints figures; asserts
# nothing about time.
#
#   tests/bench-boot-stages.sh [OUT_DIR] [RUNS]   (as root, after .ci/setup)
#
# OUT_DIR (default /var/tmp/biovm-bench-boot) holds the build; an existing OUT/minimal.raw
# is reused (remove it, or pass another OUT, to build afresh). Each of RUNS
# (default 1) boots the raw disk (EC2 data source, NVMe) once per firmware,
# one guest at a time, and prints the report's `boot_stages` with the load
# average before and after (the machine may be shared: note it with the
# figures).
set -euo pipefail
. "$(dirname "$0")/bench-env.sh"
out=${1:-/var/tmp/biovm-bench-boot}
runs=${2:-1}
biovm() { "$bin" "$@"; }

if [ ! -f "$out/minimal.raw" ]; then
    t0=$(date +%s)
    biovm build images/minimal.toml --out "$out" >/dev/null
    echo "build: $(( $(date +%s) - t0 )) s"
fi

run=1
while [ "$run" -le "$runs" ]; do
    for fw in bios uefi; do
        load0=$(cut -d' ' -f1-3 /proc/loadavg)
        biovm test "$out/minimal.raw" --firmware "$fw" --rerun >/dev/null || echo "run $run $fw: the test FAILED (figures below anyway)"
        load1=$(cut -d' ' -f1-3 /proc/loadavg)
        python3 - "$out/minimal.test/report.json" "$fw" "$run" "$load0" "$load1" <<'EOF'
import json, sys
path, fw, run, load0, load1 = sys.argv[1:]
for r in json.load(open(path)):
    if r["firmware"] != fw:
        continue
    print(f"== run {run}, {r['artifact']} {fw} ({r['accel']}, {r['bus']}); load {load0} -> {load1}")
    for s in r.get("boot_stages", []):
        print(f"   {s['name']:<24} {s['secs']:7.2f} s  (from {s['start']:7.2f} s)")
    print(f"   {'to the start line':<24} {r['boot_secs'] or 0:7.2f} s")
    print(f"   {'total':<24} {r['total_secs']:7.2f} s")
    ok = all(c["result"] == "passed" for c in r["results"]) and not r["error"]
    print(f"   checks {'passed' if ok else 'FAILED'}")
    blame = r.get("boot_analysis", {}).get("cloud-init-blame", "")
    if blame:
        print("   slowest cloud-init events:")
        for l in blame.splitlines()[:8]:
            print(f"     {l.strip()}")
EOF
    done
    run=$((run + 1))
done
