#!/usr/bin/env bash
# Prints README command N (1: set up and run the main job; 2: run the
# tests): the Nth command line of the first ```sh block of README.md, so
# .ci/run runs them exactly as written there and the two can never drift.
#
#   tests/readme-command.sh 1     print command 1
#   eval "$(tests/readme-command.sh 1)"
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:?usage: $0 N}
cmd=$(awk '
  /^```sh$/ && !seen { inside = 1; seen = 1; next }
  inside && /^```$/ { exit }
  inside && !/^#/ && NF { print }
' README.md | sed -n "${n}p")
if [ -z "$cmd" ]; then
  echo "README.md: its first sh block has no command $n" >&2
  exit 1
fi
printf '%s\n' "$cmd"
