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
# The BioLinux test runs after the rest, never beside it: measured beside
# it, three guests on two cores starved a matrix boot (a device timeout in
# systemd).
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
parts=()
summary() {
  echo "--- test suite: seconds per part"
  for p in "${parts[@]}"; do echo "$p"; done
  echo "total $(( $(date +%s) - start )) s"
}
trap summary EXIT

# part NAME COMMAND...: run COMMAND, recording its seconds (and a failure).
part() {
  local name=$1 t0 rc=0
  shift
  t0=$(date +%s)
  "$@" || rc=$?
  parts+=("$(printf '%-22s %5d s%s' "$name" $(( $(date +%s) - t0 )) "$([ $rc = 0 ] || echo "  FAILED ($rc)")")")
  return $rc
}

part compile cargo test --release --no-run
part unit cargo test --release --lib --bins -- --include-ignored
part doc cargo test --release --doc
# Every test binary: tests/NAME.rs and tests/NAME/main.rs (tests/common
# and tests/publish_common are modules the binaries share, not tests).
for f in tests/*.rs tests/*/main.rs; do
  case "$f" in
    */main.rs) name=$(basename "$(dirname "$f")") ;;
    *) name=$(basename "$f" .rs) ;;
  esac
  part "$name" cargo test --release --test "$name" -- --include-ignored --skip "$biolinux_test"
done

if [ "$with_biolinux" = 1 ]; then
  part biolinux cargo test --release --test e2e_catalogue -- --include-ignored --exact "$biolinux_test" --nocapture
fi
