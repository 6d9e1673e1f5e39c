#!/bin/sh
# plots_partial.sh BENCH OUTDIR PLOTS_GP - what `scripts/bench.sh --only
# convoy,async` does after its build (docs/performance.md): run only those
# groups, then draw the plots.  gnuplot must succeed with the acquisitions
# data missing, and still draw the convoy plot.
set -eu
bench=$1 out=$2 plots=$3
rm -rf "$out"
mkdir -p "$out"
"$bench" --smoke --reps 2 --only convoy,async --out "$out"
! grep -qs "^[^#]" "$out/gil_sweep.dat"  # no acquisitions data
gnuplot -e "dir='$out'" "$plots"
test -s "$out/convoy-cdf.png"
test ! -e "$out/gil-acquisitions.png"
test ! -e "$out/ensure-scale.png"
echo "ok: convoy plot drawn, no acquisitions plot, gnuplot exit 0"
