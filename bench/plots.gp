# Draws the benchmark plots from the data files tether-bench writes.
#
#   gnuplot -e "dir='build/bench-results'" bench/plots.gp
#
# Reads   dir/gil_sweep.dat, dir/scale_sweep.dat and
#         dir/convoy.{tether,cpython,floor}.cdf.dat
# Writes  dir/gil-acquisitions.png, dir/ensure-scale.png, dir/convoy-cdf.png
# A plot whose data is missing (a run with --only that left its group out)
# is not drawn, and says so; the other one still is.

if (!exists("dir")) dir = "."
sweep = dir."/gil_sweep.dat"
scale = dir."/scale_sweep.dat"
cdf_tether = dir."/convoy.tether.cdf.dat"
cdf_cpython = dir."/convoy.cpython.cdf.dat"
cdf_floor = dir."/convoy.floor.cdf.dat"

# A data file counts when it has a line that is not a comment: tether-bench
# writes the header of gil_sweep.dat even when the contention group did not run.
have(f) = system("grep -qs '^[^#]' '".f."' && echo 1 || echo 0") + 0
have_sweep = have(sweep)
have_scale = have(scale)
have_convoy = have(cdf_tether)
# Without CPython (no python3-dev) the convoy plot shows tether alone.
have_cpython = have(cdf_cpython)

set terminal pngcairo size 900,560 font "sans,11"
set grid
set key top right box opaque

# GIL acquisitions per second against the number of contending threads:
# the median of the repetitions, with bars from the min to the max.
if (!have_sweep) {
    print "plots: no ".sweep." (the contention group did not run): no GIL plot"
} else {
set output dir."/gil-acquisitions.png"
set title "GIL acquisitions per second (higher is better)"
set xlabel "threads taking and dropping the GIL in a loop"
set ylabel "acquisitions/s, all threads (millions)"
set logscale x 2
set xrange [0.8:90]
set yrange [0:*]
set format y "%.1f"
plot sweep using 1:($2/1e6):($3/1e6):($4/1e6) with yerrorlines lw 2 pt 7 \
         title "tether", \
     sweep using 1:($5/1e6):($6/1e6):($7/1e6) with yerrorlines lw 2 pt 5 \
         title "CPython 3 (embedded)"
}

# ensure/release throughput against the number of threads in the loop,
# up to 1000 (issue 19): the median, with bars from the min to the max.
if (!have_scale) {
    print "plots: no ".scale." (the scale group did not run): no scale plot"
} else {
set output dir."/ensure-scale.png"
set title "ensure/release throughput against threads (higher is better)"
set xlabel "threads calling ensure/release in a loop"
set ylabel "ensure/release pairs/s, all threads (millions)"
set logscale x 2
set xrange [0.8:1400]
set yrange [0:*]
set format y "%.1f"
plot scale using 1:($2/1e6):($3/1e6):($4/1e6) with yerrorlines lw 2 pt 7 \
         title "tether", \
     scale using 1:($5/1e6):($6/1e6):($7/1e6) with yerrorlines lw 2 pt 5 \
         title "CPython 3 (embedded)"
unset logscale x
}

# The convoy effect: how long a short blocking call takes while another
# thread is CPU-bound, as a cumulative distribution over every sample.
if (!have_convoy) {
    print "plots: no ".cdf_tether." (the convoy group did not run): no convoy plot"
} else {
set output dir."/convoy-cdf.png"
set title "Convoy: latency of a short blocking call next to a CPU-bound thread"
set xlabel "latency (µs, log scale)"
set ylabel "fraction of calls at most this slow"
set logscale x 10
unset xrange
set yrange [0:1.02]
set format y "%.1f"
set key bottom right
if (have_cpython) {
    plot cdf_tether using 1:2 with steps lw 2 title "tether", \
         cdf_cpython using 1:2 with steps lw 2 title "CPython 3 (embedded)", \
         cdf_floor using 1:2 with steps lw 1 dt 2 lc "gray40" \
             title "floor: the same threads, no GIL"
} else {
    plot cdf_tether using 1:2 with steps lw 2 title "tether", \
         cdf_floor using 1:2 with steps lw 1 dt 2 lc "gray40" \
             title "floor: the same threads, no GIL"
}
}
