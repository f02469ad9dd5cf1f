#!/usr/bin/env bash
# The test suite: unit and CLI tests, the real builds and boots of
# images/minimal.toml (the whole VM matrix), the release, publish and
# catalogue tests, then the full BioLinux image built from its lock and
# booted with every check of the catalogue. This is README's test command
# and what .ci/run runs.
#
#   tests/run-all.sh                   everything
#   tests/run-all.sh --skip-biolinux   everything but the BioLinux test
#
# The BioLinux test runs after the rest, never beside it: measured beside
# it, three guests on two cores starved a matrix boot (a device timeout in
# systemd). In a full .ci/run on 2 cores it took 709 s (build 381 s; one
# boot with 251 checks, two at a time, 327 s; 2026-11-27).
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

cargo test --release -- --include-ignored --skip "$biolinux_test"
echo "suite finished in $(( $(date +%s) - start )) s"

if [ "$with_biolinux" = 1 ]; then
  cargo test --release --test e2e_catalogue -- --include-ignored --exact "$biolinux_test" --nocapture
  echo "suite and BioLinux test finished in $(( $(date +%s) - start )) s"
fi
