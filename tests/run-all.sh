#!/usr/bin/env bash
# The test suite: unit and CLI tests, the real builds and boots of
# images/minimal.toml (the whole VM matrix), the release, publish and
# catalogue tests, then the full BioLinux image built from its lock, every
# check of the catalogue run natively in its tree and one boot per
# firmware with the system's checks. This is README's test command and
# what .ci/run runs. Each part is timed; the seconds of every part are
# printed at the end (also when a part fails).
#
#   tests/run-all.sh                   everything
#   tests/run-all.sh --skip-biolinux   everything but the BioLinux test
#
# The long end-to-end tests run in two lanes at once, each lane one test
# binary after another: run one after another, they left the cores idle
# about 30% of the time (a build's dpkg runs on one core, a guest
# waits on its disk). Guests of both lanes share the machine's guest
# slots (one per core, see src/smoke/slots.rs), so the lanes never start
# more guests than there are cores: three guests on two cores starved one
# (a systemd device timeout in the guest). Each lane's lines carry its
# name; a lane stops at its first failed part, the other runs on.
set -euo pipefail
cd "$(dirname "$0")/.."

with_biolinux=1
case "${1:-}" in
  "") ;;
  --skip-biolinux) with_biolinux=0 ;;
  *) echo "usage: $0 [--skip-biolinux]" >&2; exit 2 ;;
esac

biolinux_test=biolinux_builds_from_its_lock_and_every_check_passes_in_one_boot
start=$(date +%s)
# Parts of both lanes record their lines here (a lane is a subshell), and
# what a failed part said of its failure: CI keeps only the end of the
# output, so the summary repeats it there.
parts_file=$(mktemp)
failures_file=$(mktemp)
# The machine's CPU time so far, busy and all, in clock ticks (/proc/stat).
cpu_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
# busy_since BUSY ALL: the percentage of CPU time busy since that reading.
busy_since() {
  local busy all
  read -r busy all < <(cpu_ticks)
  echo $(( 100 * (busy - $1) / (all - $2 + 1) ))
}
read -r busy0 all0 < <(cpu_ticks)
summary() {
  if [ -s "$failures_file" ]; then
    echo "--- test suite: what the failed parts said"
    cat "$failures_file"
  fi
  rm -f "$failures_file"
  echo "--- test suite: seconds per part"
  cat "$parts_file"
  rm -f "$parts_file"
  echo "total $(( $(date +%s) - start )) s, the machine's $(nproc) cores $(busy_since "$busy0" "$all0")% busy"
}
trap summary EXIT

# failure_lines NAME LOG: from a failed part's output, each panic with
# the lines after it (at most 60 in all), compiler errors, and cargo's
# closing list of the failed tests, each line prefixed with the part's name.
failure_lines() {
  awk -v part="$1" '
    /panicked at/ { left = 12 }
    (left > 0 || /^error(\[E[0-9]+\])?:/) && shown < 60 { print part ": " $0; shown++; left-- }
    /^failures:$/ { list = "" ; listing = 1; next }
    /^test result:/ { listing = 0 }
    listing && /^    / { list = list part ": failed:" $0 "\n" }
    END { printf "%s", list }
  ' "$2"
}

# part NAME COMMAND...: run COMMAND, recording its seconds (and a failure,
# with what it said of it).
part() {
  local name=$1 t0 rc=0 log
  shift
  log=$(mktemp)
  t0=$(date +%s)
  cpu=$(mktemp)
  set +e
  # The part's CPU time: what its processes (and every process they
  # waited for: test binaries, biovm, QEMU's guests) used, from bash's
  # `times` in the subshell that ran it. Not what they did not wait for
  # (a detached `biovm run` guest) nor the kernel's own threads (loop
  # devices, writeback): in the .ci/run of 7a20e21 the lanes' parts
  # summed to 2713 CPU s of the 3072 core-seconds the cores were busy
  # meanwhile (the lanes' line gives that).
  ( "$@"; rc=$?; times > "$cpu"; exit $rc ) 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  if [ $rc != 0 ]; then
    failure_lines "$name" "$log" >> "$failures_file"
  fi
  rm -f "$log"
  printf '%-22s %5d s, %5d CPU s%s\n' "$name" $(( $(date +%s) - t0 )) "$(cpu_seconds < "$cpu")" \
    "$([ $rc = 0 ] || echo "  FAILED ($rc)")" >> "$parts_file"
  rm -f "$cpu"
  return $rc
}

# cpu_seconds: the children's user plus system seconds from the output
# of bash's `times` (its second line, "XmY.YYYs XmY.YYYs").
cpu_seconds() {
  awk 'NR == 2 {
    s = 0
    for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); s += t[1] * 60 + t[2] }
    printf "%d", s
  }'
}

part compile cargo test --release --no-run

# test NAME [ARGS...]: one test binary, tests/NAME.rs or tests/NAME/main.rs
# (tests/common and tests/publish_common are modules the binaries share).
test_binary() {
  local name=$1
  shift
  cargo test --release --test "$name" -- --include-ignored "$@"
}
# Balanced for a warm machine, where biovm's cache of bootstraps has every
# locked image's tree (seconds in the 2-core .ci/run of f320db6: unit tests
# 64, doc 3, the quick binaries 42, e2e_minimal 656, reuse 216, workbench
# 379 (1360); BioLinux 615, release 346, data 250, catalogue 26, QEMU
# setup 38, containment 95 (1370)). The unit tests and the quick binaries
# were a serial part before the lanes, the cores a third idle meanwhile.
lane_a=(e2e_minimal e2e_reuse e2e_workbench)
lane_b=(e2e_release e2e_data e2e_catalogue setup_qemu e2e_containment)
quick=()
for f in tests/*.rs tests/*/main.rs; do
  case "$f" in
    */main.rs) name=$(basename "$(dirname "$f")") ;;
    *) name=$(basename "$f" .rs) ;;
  esac
  case " ${lane_a[*]} ${lane_b[*]} " in
    *" $name "*) ;;
    *) quick+=("$name") ;;
  esac
done
# Every binary is in one list: a new tests/NAME.rs is quick unless listed.
# The quick ones run first in lane A, after the unit tests.
lane_a=(unit doc "${quick[@]}" "${lane_a[@]}")

# lane BINARY...: run the binaries one after another (the BioLinux test
# as `biolinux`), stopping at the first that fails.
lane() {
  local name
  for name in "$@"; do
    case "$name" in
      biolinux)
        part biolinux test_binary e2e_catalogue --exact "$biolinux_test" --nocapture ;;
      unit) part unit cargo test --release --lib --bins -- --include-ignored ;;
      doc) part doc cargo test --release --doc ;;
      *)
        part "$name" test_binary "$name" --skip "$biolinux_test" ;;
    esac || return 1
  done
}
if [ "$with_biolinux" = 1 ]; then
  # BioLinux first in its lane: its long bootstrap mostly keeps one core
  # busy while the other lane's first guests boot.
  lane_b=(biolinux "${lane_b[@]}")
fi
lanes_failed=0
t_lanes=$(date +%s)
read -r lbusy0 lall0 < <(cpu_ticks)
( lane "${lane_a[@]}" 2>&1 | sed -u 's/^/[A] /'; exit "${PIPESTATUS[0]}" ) &
a=$!
( lane "${lane_b[@]}" 2>&1 | sed -u 's/^/[B] /'; exit "${PIPESTATUS[0]}" ) &
b=$!
wait "$a" || lanes_failed=1
wait "$b" || lanes_failed=1
printf '%-22s %5d s (the cores %d%% busy)\n' "both lanes" $(( $(date +%s) - t_lanes )) \
  "$(busy_since "$lbusy0" "$lall0")" >> "$parts_file"
exit "$lanes_failed"
