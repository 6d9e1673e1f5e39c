#!/usr/bin/env bash
# Builds tether optimised and runs every benchmark against raw pthreads and
# an embedded CPython, side by side in one run; writes the results, the
# Markdown table and the plots, and refreshes docs/performance.md.
#
#   scripts/bench.sh [--smoke] [--reps N] [--only G1,G2] [--no-docs]
#                    [--against REV [--runs N]]
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
# --against REV measures before and after on this machine: it builds the
# library of git revision REV (any 1.x release; in
# <build dir>-against-<REV's hash>, kept for the next run), then runs this
# tree's tether-bench N times (default 2) on each library, alternating,
# REV's first (LD_LIBRARY_PATH chooses the library; tether-bench needs
# nothing newer than ABI 1.0, and leaves out the rows an older library
# cannot run).  It writes <out>/before-K and <out>/after-K, and the table
# of both, <out>/against.md (scripts/bench-compare.py); no plots, and
# docs/performance.md is not touched.  A bad REV or N is refused before
# any build; with --smoke the runs do not wait for the load.
#
# Environment:
#   TETHER_BUILD_ROOT   where build trees go (default: build)
#   TETHER_BENCH_BUILD  the build directory (default: $TETHER_BUILD_ROOT/bench)
#   TETHER_BENCH_OUT    where the results go
#   TETHER_JOBS         parallel compile jobs (default: nproc)
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2; }
docs=1
smoke=0
args=()
against=
runs=
while [ "$#" -gt 0 ]; do
  # An option without its value is a usage error (not bash's "unbound
  # variable").
  case "$1" in --reps|--only|--against|--runs) [ "$#" -gt 1 ] || usage ;; esac
  case "$1" in
    --smoke) args+=(--smoke); docs=0; smoke=1 ;;
    --reps) args+=(--reps "$2"); shift ;;
    --only) args+=(--only "$2"); docs=0; shift ;;
    --no-docs) docs=0 ;;
    --against) against="$2"; [ -n "$against" ] || usage; docs=0; shift ;;
    --runs) runs="$2"; shift ;;
    *) usage ;;
  esac
  shift
done

# --against's arguments are checked before the build, which takes minutes.
if [ -n "$against" ]; then
  case "${runs:=2}" in ''|*[!0-9]*|0*) echo "bench: --runs takes a count" >&2; exit 2 ;; esac
  rev=$(git rev-parse --verify --quiet "$against^{commit}") ||
    { echo "bench: $against is not a git revision here" >&2; exit 2; }
elif [ -n "$runs" ]; then
  echo "bench: --runs goes with --against" >&2
  exit 2
fi

dir="${TETHER_BENCH_BUILD:-${TETHER_BUILD_ROOT:-build}/bench}"
out="${TETHER_BENCH_OUT:-$dir/bench-results}"

# Optimised with symbols (so perf and valgrind can say where time goes),
# and without the test suite, which the benchmarks do not need.
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF \
  >/dev/null
cmake --build "$dir" --target tether-bench -j"${TETHER_JOBS:-$(nproc)}"
mkdir -p "$out"

if [ -n "$against" ]; then
  old="$dir-against-${rev:0:12}"
  if [ ! -e "$old/build/core/libtether.so.1" ]; then
    echo "bench: building the library of $against (${rev:0:12}) in $old" >&2
    rm -rf "$old"
    mkdir -p "$old/src"
    git archive "$rev" | tar -x -C "$old/src"
    cmake -S "$old/src" -B "$old/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DBUILD_TESTING=OFF >/dev/null
    cmake --build "$old/build" --target tether -j"${TETHER_JOBS:-$(nproc)}"
    [ -e "$old/build/core/libtether.so.1" ] ||
      { echo "bench: $against built no core/libtether.so.1" >&2; exit 1; }
  fi
  # The 1000-thread rows leave a one-minute load average of 10-30 behind
  # them, though nothing runs any more: each run waits (at most 5 min) for
  # it to fall under 1, so that the load each run records at its start is
  # the machine's, not the last run's.  Not in smoke mode, whose numbers
  # mean nothing.
  settle() {
    local t=0
    [ "$smoke" = 0 ] || return 0
    while [ "$t" -lt 300 ] &&
          awk '{ exit !($1 >= 1.0) }' /proc/loadavg 2>/dev/null; do
      [ "$t" != 0 ] || echo "bench: waiting (at most 5 min) for the load" \
        "average, $(cut -d' ' -f1 /proc/loadavg), to fall under 1" >&2
      sleep 10
      t=$((t + 10))
    done
  }
  # run_on LIBDIR OUTDIR: one run on the library in LIBDIR, which goes
  # first on LD_LIBRARY_PATH, so that it never loads a libtether.so.1 the
  # caller's path already holds.  OUTDIR is emptied first: a run that
  # writes nothing must not leave an earlier invocation's results to be
  # tabled as its own.
  status=0
  run_on() {
    rm -rf "$2"
    mkdir -p "$2"
    settle
    LD_LIBRARY_PATH="$1${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
      "$dir/bench/tether-bench" --out "$2" "${args[@]}" || status=$?
  }
  for i in $(seq 1 "$runs"); do
    echo "bench: run $i of $runs, before ($against), then after" >&2
    run_on "$old/build/core" "$out/before-$i"
    run_on "$dir/core" "$out/after-$i"
  done
  python3 scripts/bench-compare.py "$against" "$out" "$runs" \
    > "$out/against.md"
  cat "$out/against.md"
  exit "$status"
fi

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
