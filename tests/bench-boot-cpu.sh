#!/usr/bin/env bash
# Benchmark: where a test boot's CPU time goes. Boots a built minimal.qcow2
# under UEFI and BIOS at once (one processor each, as in the matrix) with
# one extra check that waits for the boot to finish and reads the guest's
# own accounting: /proc/stat, and each systemd unit's CPUUsageNSec
# (cgroup v2). Prints the CPU seconds of the largest units per boot.
# Under software emulation a guest has no idle time, so this is what bounds
# how many boots two cores finish per minute.
# Usage: tests/bench-boot-cpu.sh [OUT_DIR]   (OUT_DIR holds a build of
# images/minimal.toml; default /var/tmp/biovm-bench, as tests/bench-minimal.sh)
set -euo pipefail
. "$(dirname "$0")/bench-env.sh"
out=${1:-/var/tmp/biovm-bench}
[ -f "$out/minimal.qcow2" ] || "$bin" build images/minimal.toml --out "$out" >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The project's recipes plus one recipe whose check is the measurement.
cp -r recipes "$work/recipes"
mkdir -p "$work/recipes/bench" "$work/images"
cat > "$work/recipes/bench/zz-boot-cpu.toml" <<'EOF'
name = "zz-boot-cpu"
summary = "The guest's CPU time by systemd unit once the boot has finished"
category = "bench"
homepage = "https://systemd.io/"
license = "LGPL-2.1-or-later"

[install]
debian = ["systemd"]

[check]
command = '''
systemctl is-system-running --wait >/dev/null 2>&1
echo "uptime $(cut -d' ' -f1 /proc/uptime)"
head -1 /proc/stat
for u in $(systemctl list-units --all --no-legend --plain --type=service,scope | awk '{print $1}'); do
  n=$(systemctl show -p CPUUsageNSec --value "$u" 2>/dev/null)
  case "$n" in ''|*[!0-9]*) continue ;; esac
  echo "unit $((n / 1000000)) $u"
done
'''
expect = '^unit \d+ cloud-init-local\.service$'
timeout = 400
EOF
sed 's/^include = \[\(.*\)\]/include = [\1, "zz-boot-cpu"]/' images/minimal.toml > "$work/images/minimal.toml"
"$bin" test "$out/minimal.qcow2" --image "$work/images/minimal.toml" --jobs 2 --json > "$work/report.json"

python3 - "$work/report.json" <<'PY'
import json, sys
reports = json.loads(open(sys.argv[1]).read().splitlines()[-1])["result"]
for r in reports:
    out = next(c for c in r["results"] if c["tool"] == "zz-boot-cpu")["output"]
    lines = out.splitlines()
    uptime = float(next(l for l in lines if l.startswith("uptime ")).split()[1])
    # /proc/stat's first line: user nice system idle iowait irq softirq, in 1/100 s.
    f = [int(x) for x in next(l for l in lines if l.startswith("cpu ")).split()[1:8]]
    busy, idle = (f[0] + f[1] + f[2] + f[5] + f[6]) / 100, (f[3] + f[4]) / 100
    units = sorted(((int(l.split()[1]) / 1000, l.split()[2]) for l in lines if l.startswith("unit ")), reverse=True)
    cloud = sum(s for s, u in units if u.startswith("cloud-"))
    print(f"{r['artifact']} {r['firmware']}: boot finished at {uptime:.1f} s of guest uptime; "
          f"CPU busy {busy:.1f} s, idle {idle:.1f} s (whole boot {r['total_secs']:.1f} s on the host)")
    print(f"  cloud-init's four units together: {cloud:.1f} s")
    for s, u in units[:12]:
        print(f"  {s:6.1f} s  {u}")
PY
