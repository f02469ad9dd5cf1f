# Sourced by the benchmark scripts: work from the repository root with a
# release build of biovm in $bin and the package cache outside the clone.
cd "$(dirname "$0")/.."
cargo build --release -q
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/biovm
export BIOVM_CACHE_DIR=${BIOVM_CACHE_DIR:-/var/cache/biovm}
