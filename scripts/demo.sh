#!/usr/bin/env bash
# Installs what the demo needs, builds it optimised, and runs it: first the
# C host (examples/demo.c), then the Lua tour (examples/demo.lua), both
# with the ticker plugin's native threads calling back into guest code.
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
cmake --build "$dir" --target tether-demo tether_lua ticker -j"${TETHER_JOBS:-$(nproc)}"
echo
echo "=== The C host: examples/demo.c"
"$dir/examples/tether-demo"
echo
echo "=== The Lua tour: lua5.4 examples/demo.lua"
LUA_CPATH="$dir/bindings/lua/?.so;;" lua5.4 examples/demo.lua "$dir/plugins/ticker.so"
