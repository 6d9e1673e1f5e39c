/*
 * b_async.c - asynchronous exceptions: into a thread spinning through
 * checkpoints (raise -> join returns, against CPython's SetAsyncExc), and
 * into a thread blocked in a wait (raise -> wait returns, against the
 * physical floor of waking a thread: a condvar handoff).
 */
#include <stdatomic.h>

#include "bench.h"

/* How long the waker lets the waiter settle into its wait. */
#define SETTLE_NS 200000u

/* ---- a spinner that checkpoints ---- */

typedef struct spinner {
    tether_event ready;
    uint64_t sink;
} spinner;

static int spinner_fn(void *arg)
{
    spinner *s = arg;
    bench_ok(tether_event_set(s->ready), "tether_event_set");
    uint64_t x = 1;
    for (;;) {
        x = bench_work(x);
        int rc = tether_checkpoint();
        if (rc == TETHER_EASYNC)
            break;
        if (rc != TETHER_OK)
            return rc;
    }
    s->sink = x;
    return tether_async_fetch(NULL, NULL, NULL);
}

static double spinner_trial(bench_ctx *ctx)
{
    spinner s = {0, 0};
    tether_thread t;
    bench_ok(tether_event_new(&s.ready), "tether_event_new");
    bench_ok(tether_thread_start(ctx->interp, spinner_fn, &s, NULL, &t),
             "tether_thread_start");
    bench_ok(tether_event_wait(s.ready, -1), "tether_event_wait");
    uint64_t t0 = bench_now();
    bench_ok(tether_thread_raise(t, 1, NULL, NULL), "tether_thread_raise");
    bench_ok(tether_thread_join(t, -1), "tether_thread_join");
    uint64_t t1 = bench_now();
    int result;
    bench_ok(tether_thread_result(t, &result), "tether_thread_result");
    bench_ok(result, "the spinner");
    bench_ok(tether_thread_release(t), "tether_thread_release");
    bench_ok(tether_event_free(s.ready), "tether_event_free");
    return (double)(t1 - t0);
}

static void t_async_spinner(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    double lat[64];
    int k = (int)bench_count(ctx, 21, 1);
    for (int i = 0; i < k; i++)
        lat[i] = spinner_trial(ctx);
    out[0] = bench_median(lat, (size_t)k);
}

/* ---- a waiter blocked in an event wait, woken by a raise or a set ---- */

typedef struct waiter {
    tether_event ready, go;
    int expect;              /* TETHER_EASYNC (raised) or TETHER_OK (set) */
    _Atomic uint64_t woke;   /* when the wait returned */
} waiter;

static int waiter_fn(void *arg)
{
    waiter *w = arg;
    bench_ok(tether_event_set(w->ready), "tether_event_set");
    int rc = tether_event_wait(w->go, -1);
    atomic_store(&w->woke, bench_now());
    if (rc != w->expect)
        bench_fail("the waiter's wait returned %s", tether_status_name(rc));
    return rc == TETHER_EASYNC ? tether_async_fetch(NULL, NULL, NULL) : rc;
}

/* Wakes the waiter from a detached main thread, so the waiter re-takes a
   free GIL; returns the wake-up latency. */
static double waiter_trial(bench_ctx *ctx, int raise)
{
    waiter w = {0, 0, raise ? TETHER_EASYNC : TETHER_OK, 0};
    tether_thread t;
    tether_tstate main_ts;
    bench_ok(tether_event_new(&w.ready), "tether_event_new");
    bench_ok(tether_event_new(&w.go), "tether_event_new");
    bench_ok(tether_thread_start(ctx->interp, waiter_fn, &w, NULL, &t),
             "tether_thread_start");
    bench_ok(tether_event_wait(w.ready, -1), "tether_event_wait");
    bench_ok(tether_save_thread(&main_ts), "tether_save_thread");
    bench_sleep_ns(SETTLE_NS);
    uint64_t t0 = bench_now();
    bench_ok(raise ? tether_thread_raise(t, 1, NULL, NULL)
                   : tether_event_set(w.go),
             "waking the waiter");
    bench_ok(tether_thread_join(t, -1), "tether_thread_join");
    bench_ok(tether_restore_thread(main_ts), "tether_restore_thread");
    bench_ok(tether_thread_release(t), "tether_thread_release");
    bench_ok(tether_event_free(w.ready), "tether_event_free");
    bench_ok(tether_event_free(w.go), "tether_event_free");
    return (double)(atomic_load(&w.woke) - t0);
}

/* arg: 1 = wake by raising, 0 = by setting the event. */
static void t_waiter(bench_ctx *ctx, const void *arg, double out[])
{
    double lat[64];
    int k = (int)bench_count(ctx, 41, 1);
    for (int i = 0; i < k; i++)
        lat[i] = waiter_trial(ctx, *(const int *)arg);
    out[0] = out[1] = bench_median(lat, (size_t)k);
}

/* ---- the floor: a raw mutex + condvar handoff ---- */

typedef struct raw_waiter {
    pthread_mutex_t mu; /* protects ready, go */
    pthread_cond_t cv;
    int ready, go;
    uint64_t woke; /* Synchronization: mu. */
} raw_waiter;

static void *raw_waiter_thread(void *p)
{
    raw_waiter *w = p;
    pthread_mutex_lock(&w->mu);
    w->ready = 1;
    pthread_cond_broadcast(&w->cv);
    while (!w->go)
        pthread_cond_wait(&w->cv, &w->mu);
    w->woke = bench_now();
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static double raw_trial(void)
{
    raw_waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0,
                    0};
    pthread_t t = bench_spawn(raw_waiter_thread, &w);
    pthread_mutex_lock(&w.mu);
    while (!w.ready)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    bench_sleep_ns(SETTLE_NS);
    uint64_t t0 = bench_now();
    pthread_mutex_lock(&w.mu);
    w.go = 1;
    pthread_cond_broadcast(&w.cv);
    pthread_mutex_unlock(&w.mu);
    bench_join(t);
    return (double)(w.woke - t0);
}

static void raw_handoff(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    double lat[64];
    int k = (int)bench_count(ctx, 41, 1);
    for (int i = 0; i < k; i++)
        lat[i] = raw_trial();
    out[0] = out[1] = bench_median(lat, (size_t)k);
}

static const int by_raise = 1, by_set = 0;

static void async_run(bench_ctx *ctx)
{
    bench_row *spin = bench_row_new(
        ctx, "async.spinner",
        "async exception into a checkpointing spinner → join returns",
        "CPython SetAsyncExc", UNIT_NS);
    bench_row *blocked = bench_row_new(
        ctx, "async.blocked",
        "async exception into a thread blocked in a wait → wait returns",
        "raw condvar handoff", UNIT_NS);
    bench_row *blocked_py = bench_row_new(
        ctx, "async.blocked.py",
        "async exception into a thread blocked in a wait → wait returns",
        "CPython, Event.wait(50 ms)", UNIT_NS);
    bench_row *handoff = bench_row_new(
        ctx, "handoff", "one-way handoff: event set → the waiter runs",
        "raw condvar handoff", UNIT_NS);
    bench_row_target(spin, TARGET_RATIO_MAX, 0.5);
    bench_row_target(blocked, TARGET_RATIO_MAX, 2.0);
    bench_row_note(blocked_py, "CPython delivers an asynchronous exception "
                               "only once the wait ends by itself, here at "
                               "its %d ms timeout.", PY_BLOCKED_WAIT_MS);
    const bench_side sides[] = {
        {t_async_spinner, NULL, BENCH_TETHER, {spin}},
        {PY_SIDE(py_async_spinner), NULL, BENCH_PYTHON, {spin}},
        {t_waiter, &by_raise, BENCH_TETHER, {blocked, blocked_py}},
        {raw_handoff, NULL, BENCH_BASE, {blocked, handoff}},
        {t_waiter, &by_set, BENCH_TETHER, {handoff}},
        {PY_SIDE(py_async_blocked), NULL, BENCH_PYTHON, {blocked_py}},
    };
    bench_round_robin(ctx, sides, sizeof sides / sizeof sides[0]);
}

const bench_group bench_group_async = {"async", 1, async_run};
