#!/usr/bin/env bash
# Benchmark: the processor time a cloud-init stage spends starting, in a
# built image's tree, natively: `cloud-init --version` through Debian's
# entry script (which looks cloud-init's main function up in the metadata
# of every installed Python distribution) against the direct call each
# stage's unit makes in a biovm image (src/boot_cuts.rs). Median and least
# of 30 runs each (after 3 to warm the page cache), user + system time of
# the processes. Under software emulation each millisecond here is tens.
# Prints figures; asserts nothing about time.
#
#   tests/bench-cloud-init-start.sh OUT_DIR/NAME.raw   (as root)
set -euo pipefail
raw=${1:?usage: $0 OUT_DIR/NAME.raw}
mnt=$(mktemp -d)
trap 'umount "$mnt" 2>/dev/null || true; rmdir "$mnt"' EXIT
# The root filesystem is the disk's third partition (biovm's GPT layout).
start=$(sfdisk -d "$raw" | grep 'start=' | sed -n 3p | sed 's/.*start= *\([0-9]*\).*/\1/')
mount -o ro,noload,loop,offset=$((start * 512)) "$raw" "$mnt"
echo "$(ls "$mnt/usr/lib/python3/dist-packages" | wc -l) entries in dist-packages"
python3 - "$mnt" <<'PY'
import resource, subprocess, sys
root = sys.argv[1]
direct = ["/usr/bin/python3", "-c",
          "import sys; sys.argv[0] = '/usr/bin/cloud-init'; "
          "from cloudinit.cmd.main import main; sys.exit(main())", "--version"]
def cpu(cmd):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["chroot", root] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
for name, cmd in [("entry script", ["/usr/bin/cloud-init", "--version"]), ("direct call", direct)]:
    for _ in range(3):
        cpu(cmd)
    xs = sorted(cpu(cmd) for _ in range(30))
    print(f"{name:<14} median {xs[15] * 1000:5.0f} ms, least {xs[0] * 1000:5.0f} ms of processor time")
PY
