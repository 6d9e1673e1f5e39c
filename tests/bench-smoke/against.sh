#!/bin/sh
# against.sh BENCH OUTDIR COMPARE_PY PYTHON - the parts of `scripts/bench.sh
# --against REV` (docs/performance.md) that need no second build:
# tether-bench asks libtether for nothing newer than ABI 1.0 (so that it
# runs on an earlier 1.x library), and scripts/bench-compare.py makes its
# table from a before and an after run, row by row.
set -eu
bench=$1 out=$2 compare=$3 python=$4
versions=$(objdump -T "$bench" | grep -o 'TETHER_1\.[0-9]*' | sort -u)
if [ "$versions" != "TETHER_1.0" ]; then
  echo "FAIL: tether-bench needs libtether versions: $versions" >&2
  exit 1
fi
rm -rf "$out"
for run in before-1 after-1; do
  mkdir -p "$out/$run"
  "$bench" --smoke --reps 2 --only gilstate,trace --out "$out/$run" >/dev/null
done
"$python" "$compare" test-rev "$out" 1 > "$out/against.md"
grep -q "^Before: the library of test-rev" "$out/against.md"
# one line per row of the runs, each with a ratio before and after
rows=$(grep -c '^| ensure/release on a brand-new thread | CPython | ≤ 0.2× | [0-9.]* [nµm]s | [0-9.]*× | [0-9.]* [nµm]s | [0-9.]*× |' "$out/against.md")
# the trace rows measured on both sides: the dlvsym lookup found the calls
traced=$(grep -c '^| bytes per event in the JSON file | no baseline | report | [0-9.]* | — | [0-9.]* | — |' "$out/against.md")
if [ "$rows" != 1 ] || [ "$traced" != 1 ]; then
  cat "$out/against.md" >&2
  echo "FAIL: the table lacks a row (brand-new thread: $rows, trace: $traced)" >&2
  exit 1
fi
# a group that failed in a run is named in that run's line
"$python" - "$out/after-1/results.json" <<'EOF'
import json, sys
with open(sys.argv[1]) as f:
    run = json.load(f)
run["failed_groups"] = ["trace: timed out after 1 s (killed)"]
with open(sys.argv[1], "w") as f:
    json.dump(run, f)
EOF
"$python" "$compare" test-rev "$out" 1 > "$out/failed.md"
if ! grep -q '^- after 1: .*; groups that failed: trace: timed out after 1 s (killed)$' "$out/failed.md"; then
  cat "$out/failed.md" >&2
  echo "FAIL: the table does not say that a group failed" >&2
  exit 1
fi
if "$python" "$compare" test-rev "$out" 2 >/dev/null 2>&1; then
  echo "FAIL: a missing run directory was not an error" >&2
  exit 1
fi
echo "ok: ABI 1.0 only; the before/after table has the runs' rows," \
  "the trace rows measured, a failed group named"
