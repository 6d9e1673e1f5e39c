/*
 * b_contention.c - many threads on one GIL: acquisitions per second (and
 * how fairly they are shared) against CPython, and ensure/release with 1000
 * live threads against 8.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

/* A loop thread's attachment: an outer ensure held open, and the state
   saved between operations. */
typedef struct kept {
    tether_interp interp;
    tether_gilstate outer;
    tether_tstate ts;
} kept;

static void *kept_setup(void *ud)
{
    kept *k = malloc(sizeof *k);
    if (!k)
        bench_fail("out of memory");
    k->interp = *(const tether_interp *)ud;
    bench_ok(tether_ensure(k->interp, &k->outer), "tether_ensure");
    bench_ok(tether_save_thread(&k->ts), "tether_save_thread");
    return k;
}

static void kept_teardown(void *state)
{
    kept *k = state;
    bench_ok(tether_restore_thread(k->ts), "tether_restore_thread");
    bench_ok(tether_release(k->outer), "tether_release");
    free(k);
}

/* One GIL acquisition: re-take the GIL, drop it. */
static void acquire_op(void *state)
{
    kept *k = state;
    if (tether_restore_thread(k->ts) != TETHER_OK ||
        tether_save_thread(&k->ts) != TETHER_OK)
        bench_fail("restore/save: %s", tether_last_error());
}

/* One outermost ensure/release on a thread whose state is cached. */
static void ensure_op(void *state)
{
    tether_gilstate g;
    if (tether_ensure(*(const tether_interp *)state, &g) != TETHER_OK ||
        tether_release(g) != TETHER_OK)
        bench_fail("ensure/release: %s", tether_last_error());
}

static void *cached_setup(void *ud)
{
    ensure_op(ud); /* creates the cached state */
    return ud;
}

static void cached_teardown(void *state)
{
    (void)state;
}

/* Runs the loop with the main thread detached. */
static bench_loop_result detached_loop(bench_ctx *ctx, bench_loop *spec)
{
    tether_tstate main_ts;
    spec->ud = &ctx->interp;
    bench_ok(tether_save_thread(&main_ts), "tether_save_thread");
    bench_loop_result r = bench_loop_run(ctx, spec);
    bench_ok(tether_restore_thread(main_ts), "tether_restore_thread");
    return r;
}

static void t_gil_contention(bench_ctx *ctx, const void *arg, double out[])
{
    bench_loop spec = {*(const int *)arg, kept_setup, acquire_op,
                       kept_teardown, NULL};
    bench_loop_result r = detached_loop(ctx, &spec);
    out[0] = r.per_s;
    out[1] = r.min_share;
}

static void t_ensure_scale(bench_ctx *ctx, const void *arg, double out[])
{
    bench_loop spec = {*(const int *)arg, cached_setup, ensure_op,
                       cached_teardown, NULL};
    out[0] = out[1] = detached_loop(ctx, &spec).per_s;
}

/* ---- GIL acquisitions per second against the number of threads ---- */

static const int sweep_normal[] = {1, 2, 4, 8, 16, 64};
static const int sweep_smoke[] = {1, 2, 8};
#define SWEEP_MAX (sizeof sweep_normal / sizeof sweep_normal[0])

/* The rows of one thread count: acquisitions/s, and for the counts the
   issue sets a target on (2 and 8), the fairness of the shares. */
static void sweep_rows(bench_ctx *ctx, int n, bench_row **acq,
                       bench_row **share)
{
    char id[40], what[128];
    int targeted = n == 2 || n == 8;
    snprintf(id, sizeof id, "gil.acq.%d", n);
    snprintf(what, sizeof what, "GIL acquisitions/s, %d %s", n,
             n == 1 ? "thread (uncontended)" : "contending threads");
    *acq = bench_row_new(ctx, id, what, "CPython", UNIT_PER_S);
    if (targeted)
        bench_row_target(*acq, TARGET_RATIO_MIN, 2.0);
    *share = NULL;
    if (!targeted)
        return;
    snprintf(id, sizeof id, "gil.share.%d", n);
    snprintf(what, sizeof what,
             "GIL, %d contending threads: smallest share ÷ fair share", n);
    *share = bench_row_new(ctx, id, what, "CPython", UNIT_FRACTION);
    bench_row_target(*share, TARGET_ABS_MIN, 0.8);
}

static void contention_run(bench_ctx *ctx)
{
    const int *counts = ctx->smoke ? sweep_smoke : sweep_normal;
    size_t n = ctx->smoke ? sizeof sweep_smoke / sizeof sweep_smoke[0]
                          : SWEEP_MAX;
    bench_side sides[2 * SWEEP_MAX];
    for (size_t i = 0; i < n; i++) {
        bench_row *acq, *share;
        sweep_rows(ctx, counts[i], &acq, &share);
        sides[2 * i] = (bench_side){t_gil_contention, &counts[i],
                                    BENCH_TETHER, {acq, share}};
        sides[2 * i + 1] = (bench_side){PY_SIDE(py_gil_contention),
                                        &counts[i], BENCH_PYTHON,
                                        {acq, share}};
    }
    bench_round_robin(ctx, sides, 2 * n);
}

const bench_group bench_group_contention = {"contention", 1, contention_run};

/* ---- ensure/release against the number of threads ---- */

/* The thread counts of the scale sweep (issue 19, item 5). */
static const int scale_normal[] = {1, 8, 64, 256, 1000};
static const int scale_smoke[] = {1, 8, 32};
#define SCALE_MAX (sizeof scale_normal / sizeof scale_normal[0])

/* The p99 latency of one ensure/release with `n` threads in the loop. */
static void t_ensure_p99(bench_ctx *ctx, const void *arg, double out[])
{
    bench_loop spec = {*(const int *)arg, cached_setup, ensure_op,
                       cached_teardown, &ctx->interp};
    tether_tstate main_ts;
    bench_ok(tether_save_thread(&main_ts), "tether_save_thread");
    out[0] = bench_loop_latency(ctx, &spec, 0.99);
    bench_ok(tether_restore_thread(main_ts), "tether_restore_thread");
}

static void scale_run(bench_ctx *ctx)
{
    const int *counts = ctx->smoke ? scale_smoke : scale_normal;
    size_t n = ctx->smoke ? sizeof scale_smoke / sizeof scale_smoke[0]
                          : SCALE_MAX;
    static int few = 8, many;
    many = counts[n - 1];
    char what[128], base[64], id[40];
    snprintf(what, sizeof what,
             "scale: ensure/release throughput, %d threads vs %d", many, few);
    snprintf(base, sizeof base, "tether, %d threads", few);
    bench_row *scale = bench_row_new(ctx, "scale", what, base, UNIT_PER_S);
    bench_row_target(scale, TARGET_RATIO_MIN, 0.5);
    bench_side sides[2 * SCALE_MAX + 4];
    size_t k = 0;
    sides[k++] = (bench_side){t_ensure_scale, &many, BENCH_TETHER, {scale}};
    sides[k++] = (bench_side){t_ensure_scale, &few, BENCH_BASE, {scale}};
    for (size_t i = 0; i < n; i++) {
        snprintf(id, sizeof id, "scale.ensure.%d", counts[i]);
        snprintf(what, sizeof what, "ensure/release throughput, %d thread%s",
                 counts[i], counts[i] == 1 ? "" : "s");
        bench_row *r = bench_row_new(ctx, id, what, "CPython", UNIT_PER_S);
        if (counts[i] == 64)
            bench_row_target(r, TARGET_RATIO_MIN, 2.0);
        sides[k++] = (bench_side){t_ensure_scale, &counts[i], BENCH_TETHER, {r}};
        sides[k++] = (bench_side){PY_SIDE(py_ensure_scale), &counts[i],
                                  BENCH_PYTHON, {r}};
    }
    snprintf(what, sizeof what,
             "one ensure/release with %d threads contending, p99", many);
    bench_row *p99 = bench_row_new(ctx, "scale.p99", what, "CPython", UNIT_NS);
    bench_row_note(p99, "Each thread times every ensure/release of its loop "
                        "and keeps the last %d; the row is the 99th "
                        "percentile of all of them.", BENCH_LAT_KEEP);
    sides[k++] = (bench_side){t_ensure_p99, &many, BENCH_TETHER, {p99}};
    sides[k++] = (bench_side){PY_SIDE(py_ensure_p99), &many, BENCH_PYTHON, {p99}};
    bench_round_robin(ctx, sides, k);
}

const bench_group bench_group_scale = {"scale", 1, scale_run};

/* ---- fair CPU sharing: 8 CPU-bound threads, time held ---- */

/* Each thread runs a loop of work and tether_checkpoint, and adds up the
   time between leaving a checkpoint and entering the next: the time it
   held the GIL.  The main thread samples the sums at the start and the end
   of the window; the row is the smallest share of the time held ÷ the fair
   share 1/n (issue 19, item 2). */
typedef struct share_run {
    _Atomic int run;
    bench_counter *held; /* ns held so far, one per thread */
} share_run;

typedef struct share_arg {
    share_run *s;
    int index;
} share_arg;

static int share_fn(void *p)
{
    share_arg *a = p;
    _Atomic uint64_t *held = &a->s->held[a->index].n;
    uint64_t x = 1, sum = 0;
    while (atomic_load_explicit(&a->s->run, memory_order_relaxed)) {
        uint64_t t0 = bench_now();
        for (int i = 0; i < 16; i++)
            x = bench_work(x);
        sum += bench_now() - t0;
        atomic_store_explicit(held, sum, memory_order_relaxed);
        int rc = tether_checkpoint();
        if (rc != TETHER_OK)
            return rc;
    }
    return x == 0; /* uses x; never 1 in practice, and then harmless */
}

static void share_snapshot(share_run *s, int n, uint64_t *out)
{
    for (int i = 0; i < n; i++)
        out[i] = atomic_load_explicit(&s->held[i].n, memory_order_relaxed);
}

static void t_cpu_share(bench_ctx *ctx, const void *arg, double out[])
{
    enum { MAXN = 64 };
    int n = *(const int *)arg;
    share_run s;
    share_arg args[MAXN];
    tether_thread th[MAXN];
    uint64_t c0[MAXN], c1[MAXN];
    atomic_init(&s.run, 1);
    s.held = aligned_alloc(64, (size_t)n * sizeof *s.held);
    if (!s.held || n > MAXN)
        bench_fail("out of memory");
    for (int i = 0; i < n; i++) {
        atomic_init(&s.held[i].n, 0);
        args[i] = (share_arg){&s, i};
        bench_ok(tether_thread_start(ctx->interp, share_fn, &args[i], NULL,
                                     &th[i]),
                 "tether_thread_start");
    }
    tether_tstate main_ts;
    bench_ok(tether_save_thread(&main_ts), "tether_save_thread");
    uint64_t window = bench_window_ns(ctx, 2000, 20);
    bench_sleep_ns(window / 10);
    share_snapshot(&s, n, c0);
    bench_sleep_ns(window);
    share_snapshot(&s, n, c1);
    atomic_store(&s.run, 0);
    bench_ok(tether_restore_thread(main_ts), "tether_restore_thread");
    uint64_t total = 0, least = UINT64_MAX;
    for (int i = 0; i < n; i++) {
        int result;
        bench_ok(tether_thread_join(th[i], -1), "tether_thread_join");
        bench_ok(tether_thread_result(th[i], &result), "tether_thread_result");
        bench_ok(result, "a CPU-bound thread");
        bench_ok(tether_thread_release(th[i]), "tether_thread_release");
        uint64_t d = c1[i] - c0[i];
        total += d;
        least = d < least ? d : least;
    }
    free(s.held);
    out[0] = total ? (double)least * n / (double)total : 0;
}

static void share_run_group(bench_ctx *ctx)
{
    static const int n = 8;
    bench_row *r = bench_row_new(
        ctx, "gil.cpu_share.8",
        "8 CPU-bound threads with checkpoints, 2 s at 5 ms: smallest share "
        "of time held ÷ fair share",
        "CPython", UNIT_FRACTION);
    bench_row_target(r, TARGET_ABS_MIN, 0.8);
    bench_row_note(r, "tether: time between leaving a checkpoint and "
                      "entering the next; CPython: 8 threads in `while run: "
                      "pass`, each one's CPU time (a thread that runs only "
                      "Python code uses the CPU only while it holds the "
                      "GIL).");
    bench_ok(tether_set_switch_interval(ctx->rt, 5000),
             "tether_set_switch_interval");
    const bench_side sides[] = {
        {t_cpu_share, &n, BENCH_TETHER, {r}},
        {PY_SIDE(py_cpu_share), &n, BENCH_PYTHON, {r}},
    };
    bench_round_robin(ctx, sides, sizeof sides / sizeof sides[0]);
}

const bench_group bench_group_share = {"share", 1, share_run_group};

/* ---- memory per idle attached thread ---- */

/* Threads that ensure, save their state (attached, GIL released) and wait
   at a gate: the resident set's growth ÷ the threads, measured in a forked
   child so that no earlier run's freed memory is reused. */
typedef struct idle_run {
    tether_interp interp;
    bench_gate *gate;
    _Atomic int ready;
    int attach; /* 0: raw pthreads, the floor */
    int n;
} idle_run;

static void *idle_thread(void *p)
{
    idle_run *r = p;
    tether_gilstate g;
    tether_tstate ts;
    if (r->attach) {
        bench_ok(tether_ensure(r->interp, &g), "tether_ensure");
        bench_ok(tether_save_thread(&ts), "tether_save_thread");
    }
    atomic_fetch_add(&r->ready, 1);
    bench_gate_wait(r->gate);
    if (r->attach) {
        bench_ok(tether_restore_thread(ts), "tether_restore_thread");
        bench_ok(tether_release(g), "tether_release");
    }
    return NULL;
}

static double idle_measure(void *p)
{
    idle_run *r = p;
    int n = r->n;
    pthread_t *t = calloc((size_t)n, sizeof *t);
    if (!t)
        bench_fail("out of memory");
    tether_tstate main_ts;
    bench_ok(tether_save_thread(&main_ts), "tether_save_thread");
    r->gate = bench_gate_new();
    double rss0 = bench_rss_bytes();
    for (int i = 0; i < n; i++)
        t[i] = bench_spawn(idle_thread, r);
    while (atomic_load(&r->ready) < n)
        bench_sleep_ns(1000000);
    double rss1 = bench_rss_bytes();
    bench_gate_open(r->gate);
    for (int i = 0; i < n; i++)
        bench_join(t[i]);
    bench_ok(tether_restore_thread(main_ts), "tether_restore_thread");
    free(t);
    return (rss1 - rss0) / n;
}

static void t_idle_memory(bench_ctx *ctx, const void *arg, double out[])
{
    idle_run r = {.interp = ctx->interp, .attach = *(const int *)arg,
                  .n = ctx->smoke ? 16 : 1000};
    out[0] = out[1] = bench_in_child(idle_measure, &r);
}

static void memory_run(bench_ctx *ctx)
{
    static const int attach = 1, raw = 0;
    bench_row *mem = bench_row_new(
        ctx, "scale.memory",
        "memory per idle attached thread (RSS growth ÷ 1000 threads)",
        "CPython", UNIT_BYTES);
    bench_row *floor = bench_row_new(
        ctx, "scale.memory.floor",
        "memory per idle attached thread (RSS growth ÷ 1000 threads)",
        "raw pthread, no state (floor)", UNIT_BYTES);
    bench_row_note(mem, "Each thread ensures, saves its state and waits; "
                        "measured in a forked child. Both columns include "
                        "the pthread's own cost (the floor row).");
    const bench_side sides[] = {
        {t_idle_memory, &attach, BENCH_TETHER, {mem, floor}},
        {PY_SIDE(py_idle_memory), NULL, BENCH_PYTHON, {mem}},
        {t_idle_memory, &raw, BENCH_BASE, {floor}},
    };
    bench_round_robin(ctx, sides, sizeof sides / sizeof sides[0]);
}

const bench_group bench_group_memory = {"memory", 1, memory_run};
