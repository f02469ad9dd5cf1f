#!/usr/bin/env bash
# Publishing benchmark: uploads a raw disk to moto's EBS emulator on
# 127.0.0.1 (through the test proxy, which answers the real 512 KiB block
# size) and prints bytes uploaded against the disk's non-zero data, and the
# upload throughput.
#
#   tests/bench-publish.sh                  # a synthetic 96 MiB disk
#   tests/bench-publish.sh out/minimal.raw  # a built image
#
# Needs moto (.ci/setup installs it; or set BIOVM_MOTO).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then
  BIOVM_BENCH_DISK=$(realpath "$1")
  export BIOVM_BENCH_DISK
fi
cargo test --release --test publish_ec2 bench_publish -- --ignored --nocapture 2>&1 \
  | grep -vE '^(running|test result|$)|Running|Finished|Compiling'
