/*
 * test_join.c - many threads told to stop at once, each joined by several
 * joiners at once (tether threads, raw pthreads, the main thread) with
 * timeouts from none to 0: the join's spin, its reap and the claims on the
 * reap that a timed-out joiner gives back.  Every thread's key destructor
 * (the last code of its OS thread; some take the GIL, some outlast the
 * join's spin) must have ended before any join of it returns TETHER_OK.
 */
#include <tether/tether.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "runner.h"
#include "support.h"

static tether_interp g_interp;
static pthread_key_t g_key;

enum { MAX_THREADS = 1000, TETHER_JOINERS = 2, RAW_JOINERS = 3 };
static int g_n;
static tether_thread g_threads[MAX_THREADS];
static atomic_int g_dtor_done[MAX_THREADS];
static atomic_int g_ok_joins;

static void key_dtor(void *arg)
{
    intptr_t i = (intptr_t)arg - 1;
    if (i % 3 == 1) { /* takes the GIL after the sentinel */
        tether_gilstate st;
        ASSERT_OK(tether_ensure(g_interp, &st));
        ASSERT_OK(tether_release(st));
    } else if (i % 3 == 2) { /* outlasts the join's spin */
        struct timespec ts = {0, 200 * 1000};
        while (nanosleep(&ts, &ts) != 0)
            ;
    }
    atomic_store(&g_dtor_done[i], 1);
}

/* Spins on checkpoints until the exception; fetches it or leaves it. */
static int target(void *arg)
{
    intptr_t i = (intptr_t)arg;
    ASSERT_EQ(pthread_setspecific(g_key, (void *)(i + 1)), 0);
    int rc;
    while ((rc = tether_checkpoint()) == TETHER_OK)
        ;
    ASSERT_STATUS(rc, TETHER_EASYNC);
    if (i % 2)
        ASSERT_OK(tether_async_fetch(NULL, NULL, NULL));
    return TETHER_OK;
}

static const int64_t g_timeouts[] = {-1, 0, 1, 1000, 50000, MS(1)};
#define NTIMEOUTS (int)(sizeof g_timeouts / sizeof g_timeouts[0])

/* Joins every thread, starting at an offset, with a timeout that changes
   from one call to the next. */
static int joins_all(void *arg)
{
    intptr_t me = (intptr_t)arg;
    int k = (int)me;
    for (int n = 0; n < g_n; n++) {
        int i = (int)((n + me * 37) % g_n);
        int rc;
        while ((rc = tether_thread_join(g_threads[i],
                                        g_timeouts[k++ % NTIMEOUTS])) ==
               TETHER_ETIMEDOUT)
            ;
        ASSERT_STATUS(rc, TETHER_OK);
        ASSERT_EQ(atomic_load(&g_dtor_done[i]), 1);
        atomic_fetch_add(&g_ok_joins, 1);
    }
    return TETHER_OK;
}

static void *joins_all_raw(void *arg)
{
    (void)joins_all(arg);
    return NULL;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

TEST(many_raised_threads_many_joiners)
{
    tether_runtime rt = t_runtime_main(NULL, &g_interp);
    ASSERT_EQ(pthread_key_create(&g_key, key_dtor), 0);
    g_n = runner_rounds(MAX_THREADS);
    atomic_store(&g_ok_joins, 0);
    tether_thread_opts opts = {.size = sizeof opts, .stack_size = 256 * 1024};
    for (intptr_t i = 0; i < g_n; i++) {
        atomic_store(&g_dtor_done[i], 0);
        g_threads[i] = t_start_opts(g_interp, target, (void *)i, &opts);
    }
    tether_thread joiners[TETHER_JOINERS];
    pthread_t raw[RAW_JOINERS];
    for (intptr_t j = 0; j < TETHER_JOINERS; j++)
        joiners[j] = t_start(g_interp, joins_all, (void *)(j + 1));
    for (intptr_t j = 0; j < RAW_JOINERS; j++)
        raw[j] = t_pthread(joins_all_raw, (void *)(j + 1 + TETHER_JOINERS));
    int64_t t0 = t_now_ns();
    double c0 = cpu_seconds();
    for (int i = 0; i < g_n; i++)
        ASSERT_OK(tether_thread_raise(g_threads[i], 1, NULL, NULL));
    ASSERT_OK(joins_all((void *)0));
    for (int j = 0; j < TETHER_JOINERS; j++)
        ASSERT_EQ(t_join(joiners[j]), TETHER_OK);
    t_join_foreign(raw, RAW_JOINERS);
    /* Information only (never asserted): what the joins cost. */
    fprintf(stderr, "# %d threads, %d joiners: %.1f ms, %.1f ms of CPU\n", g_n,
            1 + TETHER_JOINERS + RAW_JOINERS, (t_now_ns() - t0) / 1e6,
            (cpu_seconds() - c0) * 1e3);
    ASSERT_EQ(atomic_load(&g_ok_joins),
              g_n * (1 + TETHER_JOINERS + RAW_JOINERS));
    for (int i = 0; i < g_n; i++) {
        ASSERT_EQ(tether_thread_is_alive(g_threads[i]), 0);
        ASSERT_OK(tether_thread_release(g_threads[i]));
    }
    t_finalize(rt);
    ASSERT_EQ(pthread_key_delete(g_key), 0);
}

RUNNER_MAIN(TEST_ENTRY_T(many_raised_threads_many_joiners, 240))
