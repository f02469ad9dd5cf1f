#!/usr/bin/env bash
# The test suite: unit and CLI tests, the real builds and boots of
# images/minimal.toml (the whole VM matrix), the release, publish and
# catalogue tests. This is README's test command and what .ci/run runs.
#
#   tests/run-all.sh                  the suite
#   tests/run-all.sh --with-biolinux  the suite, then the full BioLinux image
#                                     built from its lock and booted with
#                                     every check of the catalogue
#
# The BioLinux test takes about 37 minutes alone on an idle 2-core machine
# (build 13, boot and 251 checks 24, under software emulation), so it runs
# after the suite, never beside it: measured beside it, the three guests on
# two cores starved a matrix boot (a device timeout in systemd) and failed
# it, and the run grew past what CI allows.
set -euo pipefail
cd "$(dirname "$0")/.."

with_biolinux=0
case "${1:-}" in
  "") ;;
  --with-biolinux) with_biolinux=1 ;;
  *) echo "usage: $0 [--with-biolinux]" >&2; exit 2 ;;
esac

biolinux_test=biolinux_builds_from_its_lock_and_every_check_passes_in_one_boot
start=$(date +%s)

cargo test --release -- --include-ignored --skip "$biolinux_test"
echo "suite finished in $(( $(date +%s) - start )) s"

if [ "$with_biolinux" = 1 ]; then
  cargo test --release --test e2e_catalogue -- --include-ignored --exact "$biolinux_test" --nocapture
  echo "suite and BioLinux test finished in $(( $(date +%s) - start )) s"
fi
