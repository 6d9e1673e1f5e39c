#!/usr/bin/env bash
# Installs what the demo needs, builds it optimised, and runs it.
#
#   scripts/demo.sh
#
# Environment: TETHER_BUILD_ROOT (default: build) and TETHER_JOBS (default:
# nproc), as for scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh demo
dir="${TETHER_BUILD_ROOT:-build}/release"
cmake --preset release -B "$dir"
cmake --build "$dir" --target tether-demo -j"${TETHER_JOBS:-$(nproc)}"
echo
"$dir/examples/tether-demo"
