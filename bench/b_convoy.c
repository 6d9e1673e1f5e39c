/*
 * b_convoy.c - the convoy effect: a CPU-bound thread holds the GIL, passing
 * through checkpoints; an I/O thread wakes every millisecond and makes one
 * short blocking call (release the GIL, a zero-length clock_nanosleep to an
 * absolute deadline of "now" - what CPython's time.sleep(0) does - and
 * re-take the GIL).  Measured: that call's latency, and the CPU-bound
 * thread's throughput with the I/O thread running relative to running
 * alone.
 *
 * CPython's side (cpython.c) is the same shape in Python: `while run: n +=
 * 1` against `time.sleep(0.001); time.sleep(0)`.  Both run with the default
 * 5 ms switch interval.  The floor is the same pair of threads as plain
 * pthreads with no GIL at all.
 *
 * Each side call runs four windows, solo / with / with / solo, so that a
 * load change on the shared machine hits both throughputs alike.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "bench.h"

#define LAT_CAP 16384

typedef struct convoy {
    tether_interp interp;
    _Atomic int run;
    uint64_t units, ns; /* the CPU-bound thread's work and its duration */
    uint64_t sink;      /* the work's result, so it cannot be optimised out */
    int nlat;
    double *lat;        /* the I/O thread's call latencies */
} convoy;

/* The short blocking call: sleep until an absolute "now". */
static int short_call(void *arg)
{
    struct timespec now;
    (void)arg;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &now, NULL) == 0
               ? TETHER_OK
               : TETHER_EINVAL;
}

static void add_latency(convoy *c, uint64_t t0)
{
    if (c->nlat < LAT_CAP)
        c->lat[c->nlat++] = (double)(bench_now() - t0);
}

/* ---- tether ---- */

static int cpu_fn(void *arg)
{
    convoy *c = arg;
    uint64_t x = 1, n = 0, t0 = bench_now();
    while (atomic_load_explicit(&c->run, memory_order_relaxed)) {
        x = bench_work(x);
        n++;
        int rc = tether_checkpoint();
        if (rc != TETHER_OK)
            return rc;
    }
    c->ns += bench_now() - t0;
    c->units += n;
    c->sink = x;
    return TETHER_OK;
}

static int io_fn(void *arg)
{
    convoy *c = arg;
    int first = c->nlat;
    while (atomic_load(&c->run) || c->nlat == first) {
        bench_ok(tether_sleep(CONVOY_IDLE_NS), "tether_sleep");
        uint64_t t0 = bench_now();
        bench_ok(tether_call_blocking(short_call, NULL, NULL, NULL),
                 "tether_call_blocking");
        add_latency(c, t0);
    }
    return TETHER_OK;
}

static tether_thread start(convoy *c, tether_thread_fn fn)
{
    tether_thread t;
    bench_ok(tether_thread_start(c->interp, fn, c, NULL, &t),
             "tether_thread_start");
    return t;
}

static void finish(tether_thread t)
{
    int result;
    bench_ok(tether_thread_join(t, -1), "tether_thread_join");
    bench_ok(tether_thread_result(t, &result), "tether_thread_result");
    bench_ok(result, "a convoy thread");
    bench_ok(tether_thread_release(t), "tether_thread_release");
}

/* One window: the CPU-bound thread, and the I/O thread if with_io. */
static void tether_window(bench_ctx *ctx, convoy *c, int with_io)
{
    atomic_store(&c->run, 1);
    tether_thread io = with_io ? start(c, io_fn) : 0;
    tether_thread cpu = start(c, cpu_fn);
    bench_ok(tether_sleep((int64_t)bench_window_ns(ctx, 200, 10)),
             "tether_sleep");
    atomic_store(&c->run, 0);
    finish(cpu);
    if (with_io)
        finish(io);
}

/* ---- raw pthreads: the same threads without a GIL ---- */

static void *raw_cpu(void *arg)
{
    convoy *c = arg;
    uint64_t x = 1;
    while (atomic_load_explicit(&c->run, memory_order_relaxed))
        x = bench_work(x);
    c->sink = x;
    return NULL;
}

static void *raw_io(void *arg)
{
    convoy *c = arg;
    int first = c->nlat;
    while (atomic_load(&c->run) || c->nlat == first) {
        bench_sleep_ns(CONVOY_IDLE_NS);
        uint64_t t0 = bench_now();
        short_call(NULL);
        add_latency(c, t0);
    }
    return NULL;
}

static void raw_window(bench_ctx *ctx, convoy *c)
{
    atomic_store(&c->run, 1);
    pthread_t io = bench_spawn(raw_io, c), cpu = bench_spawn(raw_cpu, c);
    bench_sleep_ns(bench_window_ns(ctx, 200, 10));
    atomic_store(&c->run, 0);
    bench_join(cpu);
    bench_join(io);
}

/* ---- the sides ---- */

static convoy *convoy_new(bench_ctx *ctx)
{
    convoy *c = calloc(1, sizeof *c);
    if (!c || !(c->lat = malloc(LAT_CAP * sizeof *c->lat)))
        bench_fail("out of memory");
    c->interp = ctx->interp;
    return c;
}

/* out[0], out[1]: median and 90th percentile of the latencies, which also
   go to the series `name`. */
static void convoy_free(bench_ctx *ctx, convoy *c, const char *name,
                        double out[])
{
    bench_series *s = bench_series_get(ctx, name);
    for (int i = 0; i < c->nlat; i++)
        bench_series_add(s, c->lat[i]);
    out[1] = bench_percentile(c->lat, (size_t)c->nlat, 0.9);
    out[0] = bench_median(c->lat, (size_t)c->nlat);
    free(c->lat);
    free(c);
}

/* Units per second over the windows run so far, and a reset. */
static double take_rate(convoy *c)
{
    double r = (double)c->units * 1e9 / (double)c->ns;
    c->units = c->ns = 0;
    return r;
}

static void t_convoy(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    convoy *c = convoy_new(ctx);
    tether_window(ctx, c, 0);
    double solo = take_rate(c);
    tether_window(ctx, c, 1);
    tether_window(ctx, c, 1);
    double with = take_rate(c);
    tether_window(ctx, c, 0);
    solo = (solo + take_rate(c)) / 2;
    out[2] = with / solo;
    convoy_free(ctx, c, "convoy.tether", out);
    out[3] = out[0];
}

static void raw_convoy(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    convoy *c = convoy_new(ctx);
    raw_window(ctx, c);
    convoy_free(ctx, c, "convoy.floor", out);
}

static void convoy_run(bench_ctx *ctx)
{
    bench_row *lat = bench_row_new(
        ctx, "convoy.latency",
        "convoy: short blocking call while a thread is CPU-bound, median",
        "CPython", UNIT_NS);
    bench_row *p90 = bench_row_new(
        ctx, "convoy.p90",
        "convoy: short blocking call while a thread is CPU-bound, 90th pct",
        "CPython", UNIT_NS);
    bench_row *thr = bench_row_new(
        ctx, "convoy.throughput",
        "convoy: CPU-bound thread's throughput ÷ its solo throughput",
        "CPython", UNIT_FRACTION);
    bench_row *floor = bench_row_new(
        ctx, "convoy.floor",
        "convoy: short blocking call while a thread is CPU-bound, median",
        "raw pthreads, no GIL (floor)", UNIT_NS);
    bench_row_target(lat, TARGET_RATIO_MAX, 0.1);
    bench_row_target(thr, TARGET_ABS_MIN, 0.95);
    bench_row_note(lat, "The I/O thread waits 1 ms (GIL released), then "
                        "times one release / zero-length clock_nanosleep / "
                        "re-take.");
    const bench_side sides[] = {
        {t_convoy, NULL, BENCH_TETHER, {lat, p90, thr, floor}},
        {PY_SIDE(py_convoy), NULL, BENCH_PYTHON, {lat, p90, thr}},
        {raw_convoy, NULL, BENCH_BASE, {floor}},
    };
    bench_round_robin(ctx, sides, sizeof sides / sizeof sides[0]);
}

const bench_group bench_group_convoy = {"convoy", 1, convoy_run};
