#!/usr/bin/env bash
# The whole test suite: unit and CLI tests, the real builds and boots of
# images/minimal.toml, the release and publish tests, and the full BioLinux
# image built from its lock and booted with every check of the catalogue.
#
# The BioLinux test alone takes over half an hour on 2 cores, most of it one
# guest on one core under software emulation, so it runs beside the rest of
# the suite rather than after it. Its output goes to a log that is printed
# when it ends.
#
#   tests/run-all.sh                    everything
#   tests/run-all.sh --without-biolinux everything but the BioLinux test
set -euo pipefail
cd "$(dirname "$0")/.."

with_biolinux=1
case "${1:-}" in
  "") ;;
  --without-biolinux) with_biolinux=0 ;;
  *) echo "usage: $0 [--without-biolinux]" >&2; exit 2 ;;
esac

biolinux_test=biolinux_builds_from_its_lock_and_every_check_passes_in_one_boot
target=${CARGO_TARGET_DIR:-target}
start=$(date +%s)

# Compile every test binary first, so the two runs below do not both build.
cargo test --release --no-run

bl_pid=
bl_log=$target/biolinux-test.log
if [ "$with_biolinux" = 1 ]; then
  echo "BioLinux test started beside the suite; its log: $bl_log"
  cargo test --release --test e2e_catalogue -- --include-ignored --exact "$biolinux_test" \
    --nocapture >"$bl_log" 2>&1 &
  bl_pid=$!
  # Stop it too if this script is interrupted.
  trap '[ -n "$bl_pid" ] && kill "$bl_pid" 2>/dev/null; exit 130' INT TERM
fi

suite=0
cargo test --release -- --include-ignored --skip "$biolinux_test" || suite=$?
echo "suite finished in $(( $(date +%s) - start )) s (status $suite)"

bl=0
if [ -n "$bl_pid" ]; then
  wait "$bl_pid" || bl=$?
  bl_pid=
  echo "---- BioLinux test (status $bl), $bl_log:"
  grep -v '^\$ \|^ *Compiling\|^ *Finished\|^ *Running' "$bl_log" | tail -n 40
fi

echo "all tests finished in $(( $(date +%s) - start )) s"
if [ "$suite" != 0 ] || [ "$bl" != 0 ]; then
  [ "$suite" != 0 ] && echo "FAILED: the test suite (status $suite)"
  [ "$bl" != 0 ] && echo "FAILED: $biolinux_test (status $bl; log $bl_log)"
  exit 1
fi
