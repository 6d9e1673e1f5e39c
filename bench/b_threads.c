/*
 * b_threads.c - thread start + join against raw pthreads and CPython's
 * threading.Thread, and an uncontended lock against a pthread mutex.
 */
#include "bench.h"

/* ---- tether_thread_start (with its started-handshake) + join ---- */

static int empty_fn(void *arg)
{
    (void)arg;
    return TETHER_OK;
}

/* The main thread holds the GIL; start releases it while it waits for the
   handshake and join while it waits for the thread. */
static void t_start_join(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    uint64_t k = bench_count(ctx, 500, 3);
    uint64_t t0 = bench_now();
    for (uint64_t i = 0; i < k; i++) {
        tether_thread t;
        bench_ok(tether_thread_start(ctx->interp, empty_fn, NULL, NULL, &t),
                 "tether_thread_start");
        bench_ok(tether_thread_join(t, -1), "tether_thread_join");
        bench_ok(tether_thread_release(t), "tether_thread_release");
    }
    out[0] = out[1] = out[2] = (double)(bench_now() - t0) / (double)k;
}

/* ---- raw pthreads: create + join, with and without a handshake ---- */

typedef struct handshake {
    pthread_mutex_t mu; /* protects started */
    pthread_cond_t cv;
    int started;
} handshake;

static void *handshake_thread(void *p)
{
    handshake *h = p;
    pthread_mutex_lock(&h->mu);
    h->started = 1;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

static void *empty_thread(void *p)
{
    return p;
}

static void wait_started(handshake *h)
{
    pthread_mutex_lock(&h->mu);
    while (!h->started)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
}

static void raw_create_join(bench_ctx *ctx, const void *arg, double out[])
{
    int with_handshake = *(const int *)arg;
    uint64_t k = bench_count(ctx, 500, 3);
    uint64_t t0 = bench_now();
    for (uint64_t i = 0; i < k; i++) {
        handshake h = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
        pthread_t t;
        if (pthread_create(&t, NULL, with_handshake ? handshake_thread
                                                    : empty_thread, &h) != 0)
            bench_fail("pthread_create failed");
        if (with_handshake)
            wait_started(&h);
        bench_join(t);
    }
    out[0] = (double)(bench_now() - t0) / (double)k;
}

static const int with_hs = 1, without_hs = 0;

static void threads_run(bench_ctx *ctx)
{
    bench_row *hs = bench_row_new(
        ctx, "thread.start_join", "thread start (handshake) + join",
        "raw pthread create + handshake + join", UNIT_NS);
    bench_row *bare = bench_row_new(ctx, "thread.start_join.bare",
                                    "thread start (handshake) + join",
                                    "raw pthread create + join", UNIT_NS);
    bench_row *py = bench_row_new(ctx, "thread.start_join.py",
                                  "thread start (handshake) + join",
                                  "CPython threading.Thread start + join",
                                  UNIT_NS);
    bench_row_target(hs, TARGET_RATIO_MAX, 1.15);
    const bench_side sides[] = {
        {t_start_join, NULL, BENCH_TETHER, {hs, bare, py}},
        {raw_create_join, &with_hs, BENCH_BASE, {hs}},
        {raw_create_join, &without_hs, BENCH_BASE, {bare}},
        {PY_SIDE(py_thread_start_join), NULL, BENCH_PYTHON, {py}},
    };
    bench_round_robin(ctx, sides, sizeof sides / sizeof sides[0]);
}

const bench_group bench_group_threads = {"threads", 1, threads_run};

/* ---- an uncontended lock ---- */

static void t_lock(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    tether_lock l;
    bench_ok(tether_lock_new(&l), "tether_lock_new");
    uint64_t n = bench_count(ctx, 2000000, 100);
    uint64_t t0 = bench_now();
    for (uint64_t i = 0; i < n; i++) {
        if (tether_lock_acquire(l, -1) != TETHER_OK ||
            tether_lock_release(l) != TETHER_OK)
            bench_fail("lock acquire/release: %s", tether_last_error());
    }
    out[0] = (double)(bench_now() - t0) / (double)n;
    bench_ok(tether_lock_free(l), "tether_lock_free");
}

static void raw_mutex(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    uint64_t n = bench_count(ctx, 2000000, 100);
    uint64_t t0 = bench_now();
    for (uint64_t i = 0; i < n; i++) {
        pthread_mutex_lock(&mu);
        pthread_mutex_unlock(&mu);
    }
    out[0] = (double)(bench_now() - t0) / (double)n;
}

static void *no_op(void *arg)
{
    return arg;
}

static void locks_run(bench_ctx *ctx)
{
    /* glibc skips the atomic instructions of pthread_mutex_lock and
       unlock while the process has never had a second thread (its
       single-thread optimisation, glibc 2.34 on), and a group runs in a
       child forked from a single thread: measured there, the raw mutex
       was plain loads and stores (3.3 ns against 10.8 ns on an AMD EPYC
       host).  A lock is for a program with threads: one is started and
       joined first, so that both sides pay for their atomics. */
    bench_join(bench_spawn(no_op, NULL));
    bench_row *r = bench_row_new(ctx, "lock.uncontended",
                                 "lock acquire + release, uncontended",
                                 "raw pthread_mutex lock + unlock", UNIT_NS);
    bench_row_target(r, TARGET_RATIO_MAX, 1.5); /* issue 19 item 3 */
    const bench_side sides[] = {
        {t_lock, NULL, BENCH_TETHER, {r}},
        {raw_mutex, NULL, BENCH_BASE, {r}},
    };
    bench_round_robin(ctx, sides, sizeof sides / sizeof sides[0]);
}

const bench_group bench_group_locks = {"locks", 0, locks_run};
