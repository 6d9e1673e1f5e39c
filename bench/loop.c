/*
 * loop.c - n threads repeating one operation, counted over a window.
 *
 * Used for GIL acquisitions per second (tether and CPython) and for the
 * ensure/release scaling run.  Each thread owns a counter on its own cache
 * line; the main thread snapshots all counters at the start and the end of
 * the window, so thread start-up and shutdown are not counted.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "bench.h"

typedef struct loop_shared {
    const bench_loop *spec;
    bench_gate *gate;
    bench_counter *counters; /* one per thread */
    _Atomic int ready;       /* threads that finished setup */
    _Atomic int stop;
} loop_shared;

typedef struct loop_arg {
    loop_shared *sh;
    int index;
} loop_arg;

static void *loop_thread(void *p)
{
    loop_arg *a = p;
    loop_shared *sh = a->sh;
    bench_counter *c = &sh->counters[a->index];
    void *state = sh->spec->setup(sh->spec->ud);
    atomic_fetch_add(&sh->ready, 1);
    bench_gate_wait(sh->gate);
    uint64_t n = 0;
    while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
        sh->spec->op(state);
        atomic_store_explicit(&c->n, ++n, memory_order_relaxed);
    }
    sh->spec->teardown(state);
    return NULL;
}

static void snapshot(const loop_shared *sh, int n, uint64_t *out)
{
    for (int i = 0; i < n; i++)
        out[i] = atomic_load_explicit(&sh->counters[i].n, memory_order_relaxed);
}

static bench_loop_result summarize(int n, const uint64_t *c0,
                                   const uint64_t *c1, uint64_t ns)
{
    uint64_t total = 0, least = UINT64_MAX;
    for (int i = 0; i < n; i++) {
        uint64_t d = c1[i] - c0[i];
        total += d;
        least = d < least ? d : least;
    }
    bench_loop_result r;
    r.per_s = (double)total * 1e9 / (double)ns;
    r.min_share = total ? (double)least * n / (double)total : 0;
    return r;
}

/* Counts over the window, after a warm-up of a fifth of it. */
static bench_loop_result measure(const bench_ctx *ctx, loop_shared *sh, int n)
{
    uint64_t window = bench_window_ns(ctx, 250, 5);
    uint64_t *c0 = calloc((size_t)n, sizeof *c0);
    uint64_t *c1 = calloc((size_t)n, sizeof *c1);
    if (!c0 || !c1)
        bench_fail("out of memory");
    bench_gate_open(sh->gate);
    bench_sleep_ns(window / 5);
    snapshot(sh, n, c0);
    uint64_t t0 = bench_now();
    bench_sleep_ns(window);
    snapshot(sh, n, c1);
    uint64_t t1 = bench_now();
    atomic_store(&sh->stop, 1);
    bench_loop_result r = summarize(n, c0, c1, t1 - t0);
    free(c0);
    free(c1);
    return r;
}

bench_loop_result bench_loop_run(const bench_ctx *ctx, const bench_loop *spec)
{
    int n = spec->nthreads;
    loop_shared sh = {.spec = spec, .gate = bench_gate_new()};
    sh.counters = aligned_alloc(64, (size_t)n * sizeof *sh.counters);
    loop_arg *args = calloc((size_t)n, sizeof *args);
    pthread_t *threads = calloc((size_t)n, sizeof *threads);
    if (!sh.counters || !args || !threads)
        bench_fail("out of memory");
    for (int i = 0; i < n; i++) {
        atomic_init(&sh.counters[i].n, 0);
        args[i] = (loop_arg){&sh, i};
        threads[i] = bench_spawn(loop_thread, &args[i]);
    }
    while (atomic_load(&sh.ready) < n)
        bench_sleep_ns(100000);
    bench_loop_result r = measure(ctx, &sh, n);
    for (int i = 0; i < n; i++)
        bench_join(threads[i]);
    bench_gate_free(sh.gate);
    free(sh.counters);
    free(args);
    free(threads);
    return r;
}

/* ---- the same loop, timing every operation ---- */

typedef struct lat_shared {
    const bench_loop *inner;
    pthread_mutex_t mutex; /* protects n and v */
    size_t n, cap;
    double *v;
} lat_shared;

typedef struct lat_state {
    lat_shared *sh;
    void *inner;
    uint64_t n; /* operations so far; ring holds the last BENCH_LAT_KEEP */
    double ring[BENCH_LAT_KEEP];
} lat_state;

static void *lat_setup(void *ud)
{
    lat_shared *sh = ud;
    lat_state *t = calloc(1, sizeof *t);
    if (!t)
        bench_fail("out of memory");
    t->sh = sh;
    t->inner = sh->inner->setup(sh->inner->ud);
    return t;
}

static void lat_op(void *state)
{
    lat_state *t = state;
    uint64_t t0 = bench_now();
    t->sh->inner->op(t->inner);
    t->ring[t->n++ % BENCH_LAT_KEEP] = (double)(bench_now() - t0);
}

static void lat_teardown(void *state)
{
    lat_state *t = state;
    lat_shared *sh = t->sh;
    sh->inner->teardown(t->inner);
    size_t k = t->n < BENCH_LAT_KEEP ? (size_t)t->n : BENCH_LAT_KEEP;
    pthread_mutex_lock(&sh->mutex);
    for (size_t i = 0; i < k && sh->n < sh->cap; i++)
        sh->v[sh->n++] = t->ring[i];
    pthread_mutex_unlock(&sh->mutex);
    free(t);
}

double bench_loop_latency(const bench_ctx *ctx, const bench_loop *spec,
                          double p)
{
    lat_shared sh = {.inner = spec,
                     .cap = (size_t)spec->nthreads * BENCH_LAT_KEEP};
    pthread_mutex_init(&sh.mutex, NULL);
    if (!(sh.v = malloc(sh.cap * sizeof *sh.v)))
        bench_fail("out of memory");
    bench_loop outer = {spec->nthreads, lat_setup, lat_op, lat_teardown, &sh};
    bench_loop_run(ctx, &outer);
    if (sh.n == 0)
        bench_fail("no latency was recorded");
    double r = bench_percentile(sh.v, sh.n, p);
    free(sh.v);
    pthread_mutex_destroy(&sh.mutex);
    return r;
}
