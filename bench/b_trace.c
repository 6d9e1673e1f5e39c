/*
 * b_trace.c - what recording a GIL trace costs (issue 21; docs/tracing.md).
 *
 * The same loops with tracing off (the baseline column) and on (the
 * tether column), run round-robin so that load hits both alike:
 *
 *   trace.acquire    a save/restore pair (one drop and one take of an
 *                    uncontended GIL: two events when on)
 *   trace.switch     two threads handing the GIL to each other with
 *                    tether_sleep(0) for a window: its length over the
 *                    number of switches (tether_gil_stats)
 *   trace.acquire_off  the same pair with no trace recording (the tether
 *                    column) against the library built with the hooks
 *                    compiled out (TETHER_NO_TRACE, the baseline column,
 *                    tether-bench-notrace in a process of its own): what
 *                    the hooks cost while off, which must be noise
 *   trace.overhead   trace.acquire's difference, on minus off, measured in
 *                    one side call with the two halves interleaved: the
 *                    nanoseconds recording adds to one GIL acquisition
 *   trace.bytes      bytes per event in the JSON written at stop (file
 *                    size / events written), and trace.bytes_ring in memory
 *
 * Tracing off is the library's normal state: every other group of
 * tether-bench runs with it off, and their rows must not move against an
 * earlier run's medians (docs/performance.md).
 *
 * The two trace calls are looked up when the group runs (dlvsym, by their
 * version node), not linked: tether-bench then needs nothing newer than
 * ABI 1.0, so that scripts/bench.sh --against runs this very binary on
 * the library of an earlier release, whose rows here are left missing.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"

/* A temporary file for the trace; unlinked at once, the descriptor is
   what tether_trace_start gets. */
static int trace_fd(void)
{
    char path[] = "/tmp/tether-bench-trace-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        bench_fail("mkstemp: cannot make a temporary file");
    unlink(path);
    return fd;
}

/* tether_trace_start and tether_trace_stop (ABI 1.3), or NULL when the
   library loaded is older.  Set by trace_run before any side runs. */
static int (*trace_start)(tether_runtime, const char *, int, uint32_t);
static int (*trace_stop)(tether_runtime);

static int trace_lookup(void)
{
    /* A function pointer from dlvsym's void *: POSIX's allowance, which
       -Wpedantic does not know, hence the memcpy. */
    void *start = dlvsym(RTLD_DEFAULT, "tether_trace_start", "TETHER_1.3");
    void *stop = dlvsym(RTLD_DEFAULT, "tether_trace_stop", "TETHER_1.3");
    if (!start || !stop)
        return 0;
    memcpy(&trace_start, &start, sizeof start);
    memcpy(&trace_stop, &stop, sizeof stop);
    return 1;
}

static void trace_on(bench_ctx *ctx, int fd)
{
    bench_ok(trace_start(ctx->rt, NULL, fd, 0), "tether_trace_start");
}

static void trace_off(bench_ctx *ctx)
{
    bench_ok(trace_stop(ctx->rt), "tether_trace_stop");
}

static double pairs(uint64_t n)
{
    uint64_t t0 = bench_now();
    for (uint64_t i = 0; i < n; i++) {
        tether_tstate ts;
        if (tether_save_thread(&ts) != TETHER_OK ||
            tether_restore_thread(ts) != TETHER_OK)
            bench_fail("save/restore: %s", tether_last_error());
    }
    return (double)(bench_now() - t0) / (double)n;
}

/* out[0]: ns per pair. */
static void acquire_side(bench_ctx *ctx, const void *arg, double out[])
{
    int on = *(const int *)arg;
    uint64_t n = bench_count(ctx, 2000000, 100);
    int fd = on ? trace_fd() : -1;
    if (on)
        trace_on(ctx, fd);
    out[0] = pairs(n);
    if (on) {
        trace_off(ctx);
        close(fd);
    }
}

/* out[0]: ns per pair in tether-bench-notrace (the hooks compiled out),
   run with the same count as acquire_side. */
static void notrace_side(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    uint64_t n = bench_count(ctx, 2000000, 100);
    char cmd[sizeof TETHER_BENCH_NOTRACE + 32];
    snprintf(cmd, sizeof cmd, "'%s' %" PRIu64, TETHER_BENCH_NOTRACE, n);
    FILE *p = popen(cmd, "r");
    if (!p)
        bench_fail("cannot run %s", TETHER_BENCH_NOTRACE);
    double v = -1;
    int got = fscanf(p, "%lf", &v);
    int st = pclose(p);
    if (got != 1 || st != 0 || v < 0)
        bench_fail("%s failed (status %d)", TETHER_BENCH_NOTRACE, st);
    out[0] = v;
}

/* out[0]: on minus off per pair, the halves interleaved in slices;
   out[1], out[2]: JSON and in-memory bytes per event of the trace. */
static void overhead_side(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    uint64_t slice = bench_count(ctx, 100000, 50);
    double off = 0, on = 0;
    int fd = trace_fd();
    for (int k = 0; k < 8; k++) {
        off += pairs(slice);
        trace_on(ctx, fd);
        on += pairs(slice);
        trace_off(ctx);
        if (k < 7 && (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0))
            bench_fail("cannot empty the trace file");
    }
    out[0] = (on - off) / 8;
    /* The last trace: its size and its event counts. */
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size <= 0)
        bench_fail("the trace file is empty");
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf || pread(fd, buf, (size_t)st.st_size, 0) != st.st_size)
        bench_fail("cannot read the trace back");
    buf[st.st_size] = 0;
    close(fd);
    const char *m = strstr(buf, "\"bytes_per_event\":");
    const char *ev = strstr(buf, "\"events\":");
    const char *dr = strstr(buf, "\"dropped_events\":");
    if (!m || !ev || !dr)
        bench_fail("the trace has no otherData counters");
    double kept = atof(ev + 9) - atof(dr + 17);
    out[1] = kept > 0 ? (double)st.st_size / kept : 0;
    out[2] = atof(m + 18);
    free(buf);
}

/* ---- two threads handing the GIL over with tether_sleep(0) ---- */

typedef struct switch_run {
    tether_interp interp;
    _Atomic int stop;
    bench_gate *gate;
} switch_run;

static void *switcher(void *p)
{
    switch_run *s = p;
    tether_gilstate g;
    bench_ok(tether_ensure(s->interp, &g), "tether_ensure");
    tether_tstate ts;
    bench_ok(tether_save_thread(&ts), "tether_save_thread");
    bench_gate_wait(s->gate);
    bench_ok(tether_restore_thread(ts), "tether_restore_thread");
    while (!atomic_load_explicit(&s->stop, memory_order_relaxed))
        bench_ok(tether_sleep(0), "tether_sleep(0)");
    bench_ok(tether_release(g), "tether_release");
    return NULL;
}

/* out[0]: ns per switch (the GIL going to the other thread), over a
   window in which both threads loop on tether_sleep(0). */
static void switch_side(bench_ctx *ctx, const void *arg, double out[])
{
    int on = *(const int *)arg;
    switch_run s = {ctx->interp, 0, bench_gate_new()};
    int fd = on ? trace_fd() : -1;
    if (on)
        trace_on(ctx, fd);
    tether_tstate main_ts;
    bench_ok(tether_save_thread(&main_ts), "tether_save_thread");
    pthread_t a = bench_spawn(switcher, &s), b = bench_spawn(switcher, &s);
    tether_gil_stats st0 = {sizeof st0, 0, 0, 0, 0, 0}, st1 = st0;
    bench_ok(tether_gil_stats_get(ctx->interp, &st0), "tether_gil_stats_get");
    uint64_t t0 = bench_now();
    bench_gate_open(s.gate);
    bench_sleep_ns(bench_window_ns(ctx, 200, 5));
    bench_ok(tether_gil_stats_get(ctx->interp, &st1), "tether_gil_stats_get");
    uint64_t t1 = bench_now();
    atomic_store(&s.stop, 1);
    bench_join(a);
    bench_join(b);
    uint64_t switches = st1.switches - st0.switches;
    out[0] = (double)(t1 - t0) / (double)(switches ? switches : 1);
    bench_ok(tether_restore_thread(main_ts), "tether_restore_thread");
    if (on) {
        trace_off(ctx);
        close(fd);
    }
    bench_gate_free(s.gate);
}

static const int k_off = 0, k_on = 1;

static void trace_run(bench_ctx *ctx)
{
    const char *off = "tracing off";
    bench_row *acq = bench_row_new(
        ctx, "trace.acquire", "save/restore pair (one GIL acquisition), tracing on",
        off, UNIT_NS);
    bench_row *sw = bench_row_new(
        ctx, "trace.switch", "GIL switch between 2 threads looping on sleep(0), tracing on",
        off, UNIT_NS);
    bench_row *acq_off = bench_row_new(
        ctx, "trace.acquire_off",
        "save/restore pair (one GIL acquisition), tracing off",
        "no trace support", UNIT_NS);
    bench_row_note(acq_off, "The baseline is the library built with the trace "
                   "hooks compiled out, in a process of its own; the two "
                   "must differ by noise only.");
    bench_row *over = bench_row_new(
        ctx, "trace.overhead", "ns added per GIL acquisition by tracing (on - off)",
        "no baseline", UNIT_NS);
    bench_row *bytes = bench_row_new(
        ctx, "trace.bytes", "bytes per event in the JSON file", "no baseline",
        UNIT_FRACTION);
    bench_row *ring = bench_row_new(
        ctx, "trace.bytes_ring", "bytes per event in memory (the ring)", "no baseline",
        UNIT_FRACTION);
    bench_row_note(over, "Two events per acquisition (take, drop); the halves "
                   "run interleaved in one call.");
    if (!trace_lookup()) {
        bench_row *all[] = {acq, sw, acq_off, over, bytes, ring};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            bench_row_note(all[i], "Not measured: the library loaded has no "
                           "tether_trace_start (ABI 1.3).");
        return;
    }
    const bench_side sides[] = {
        {acquire_side, &k_on, BENCH_TETHER, {acq}},
        {acquire_side, &k_off, BENCH_BASE, {acq}},
        {acquire_side, &k_off, BENCH_TETHER, {acq_off}},
        {notrace_side, NULL, BENCH_BASE, {acq_off}},
        {switch_side, &k_on, BENCH_TETHER, {sw}},
        {switch_side, &k_off, BENCH_BASE, {sw}},
        {overhead_side, NULL, BENCH_TETHER, {over, bytes, ring}},
    };
    bench_round_robin(ctx, sides, sizeof sides / sizeof sides[0]);
}

const bench_group bench_group_trace = {"trace", 0, trace_run};
