#!/usr/bin/env bash
# Builds tether optimised and runs every benchmark against raw pthreads and
# an embedded CPython, side by side in one run; writes the results, the
# Markdown table and the plots, and refreshes docs/performance.md.
#
#   scripts/bench.sh [--smoke] [--reps N] [--only G1,G2] [--no-docs]
#
# Builds in $TETHER_BUILD_ROOT/bench (RelWithDebInfo, tests off) and writes
# into $TETHER_BENCH_OUT (default: <build dir>/bench-results):
#   results.json, results.csv     every row, with every repetition's sample
#   results.md                    the table (also printed)
#   gil-acquisitions.png          GIL acquisitions/s against threads
#   ensure-scale.png              ensure/release throughput, 1 to 1000 threads
#   convoy-cdf.png                the convoy latency distributions
#   *.dat                         the data the plots are drawn from
# A full run (no --smoke, --only or --no-docs) also copies the table into
# docs/performance.md and the plots into docs/performance/.
#
# Environment:
#   TETHER_BUILD_ROOT   where build trees go (default: build)
#   TETHER_BENCH_BUILD  the build directory (default: $TETHER_BUILD_ROOT/bench)
#   TETHER_BENCH_OUT    where the results go
#   TETHER_JOBS         parallel compile jobs (default: nproc)
set -euo pipefail
cd "$(dirname "$0")/.."

docs=1
args=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --smoke) args+=(--smoke); docs=0 ;;
    --reps) args+=(--reps "$2"); shift ;;
    --only) args+=(--only "$2"); docs=0; shift ;;
    --no-docs) docs=0 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2 ;;
  esac
  shift
done

dir="${TETHER_BENCH_BUILD:-${TETHER_BUILD_ROOT:-build}/bench}"
out="${TETHER_BENCH_OUT:-$dir/bench-results}"

# Optimised with symbols (so perf and valgrind can say where time goes),
# and without the test suite, which the benchmarks do not need.
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF \
  >/dev/null
cmake --build "$dir" --target tether-bench -j"${TETHER_JOBS:-$(nproc)}"
mkdir -p "$out"

echo "bench: running (several minutes; results in $out)" >&2
status=0
"$dir/bench/tether-bench" --out "$out" "${args[@]}" || status=$?

if command -v gnuplot >/dev/null; then
  gnuplot -e "dir='$out'" bench/plots.gp
else
  echo "bench: gnuplot not found (apt-get install gnuplot-nox): no plots" >&2
  docs=0
fi

# Replaces what lies between the bench markers in docs/performance.md with
# the new table, and copies the plots next to it.
if [ "$docs" = 1 ] && [ "$status" = 0 ]; then
  page=docs/performance.md
  awk -v table="$out/results.md" '
    /<!-- bench:begin -->/ {
      print
      while ((getline line < table) > 0) print line
      skip = 1
      next
    }
    /<!-- bench:end -->/ { skip = 0 }
    !skip { print }
  ' "$page" > "$page.new"
  mv "$page.new" "$page"
  mkdir -p docs/performance
  cp "$out/gil-acquisitions.png" "$out/ensure-scale.png" "$out/convoy-cdf.png" \
    docs/performance/
  echo "bench: refreshed $page and docs/performance/*.png" >&2
fi
exit "$status"
