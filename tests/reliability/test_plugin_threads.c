/*
 * test_plugin_threads.c - the OS refuses a thread to the sample plugins.
 *
 * The sample plugins start their own pthreads (pool: four workers in its
 * init; ticker: one per ticker_start), which TETHER_FAULT_THREAD_CREATE
 * cannot reach.  This program defines pthread_create itself and exports it
 * (ENABLE_EXPORTS), so the plugins' calls come here; it fails the k-th
 * creation and forwards the others to libc.  For every k: loading pool
 * fails with TETHER_EPLUGIN and leaves nothing loaded, ticker_start fails
 * with TETHER_EAGAIN and stops the threads it did start; then both work.
 * Built only without sanitizers, whose runtimes define pthread_create.
 */
#include <tether/tether.h>

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

#include "runner.h"
#include "support.h"

/* Creations left before the one that fails; 0: none fails. */
static atomic_int g_fail_in;

int pthread_create(pthread_t *t, const pthread_attr_t *attr,
                   void *(*fn)(void *), void *arg)
{
    static int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *),
                       void *);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "pthread_create");
    int left = atomic_load(&g_fail_in);
    while (left > 0 && !atomic_compare_exchange_weak(&g_fail_in, &left, left - 1))
        ;
    if (left == 1)
        return EAGAIN;
    return real(t, attr, fn, arg);
}

static int32_t job(void *ud) { return (int32_t)(intptr_t)ud; }

/* The pool runs one job (proof that it is loaded and its workers live). */
static void use_pool(tether_plugin p)
{
    void *sym;
    void *(*submit)(int32_t (*)(void *), void *, int32_t);
    int32_t (*wait)(void *, int64_t, int32_t *);
    ASSERT_OK(tether_plugin_symbol(p, "pool_submit", &sym));
    *(void **)&submit = sym;
    ASSERT_OK(tether_plugin_symbol(p, "pool_wait", &sym));
    *(void **)&wait = sym;
    void *ticket = submit(job, (void *)(intptr_t)42, 0);
    ASSERT(ticket != NULL);
    int32_t result = 0;
    ASSERT_OK(wait(ticket, -1, &result));
    ASSERT_EQ(result, 42);
}

TEST(pool_refused_a_worker)
{
    tether_runtime rt = t_runtime(NULL);
    for (int k = 1; k <= 4; k++) {
        tether_plugin p = 0;
        atomic_store(&g_fail_in, k);
        ASSERT_FAILS(tether_plugin_load(rt, REL_POOL_PATH, &p), TETHER_EPLUGIN,
                     "tether_plugin_load");
        ASSERT_EQ(atomic_load(&g_fail_in), 0); /* the k-th was refused */
        ASSERT_EQ(p, 0);
        ASSERT_OK(tether_plugin_load(rt, REL_POOL_PATH, &p));
        use_pool(p);
        ASSERT_OK(tether_plugin_unload(p, SECONDS(30)));
    }
    t_finalize(rt);
}

static atomic_int g_ticks;

static void tick(void *ud, int32_t thread, int32_t n)
{
    (void)ud, (void)thread, (void)n;
    atomic_fetch_add(&g_ticks, 1);
}

TEST(ticker_refused_a_thread)
{
    enum { THREADS = 3, TICKS = 4 };
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p;
    void *sym;
    int32_t (*start)(void (*)(void *, int32_t, int32_t), void *, int32_t,
                     int32_t, int32_t);
    int32_t (*wait)(int64_t);
    ASSERT_OK(tether_plugin_load(rt, REL_TICKER_PATH, &p));
    ASSERT_OK(tether_plugin_symbol(p, "ticker_start", &sym));
    *(void **)&start = sym;
    ASSERT_OK(tether_plugin_symbol(p, "ticker_wait", &sym));
    *(void **)&wait = sym;
    for (int k = 1; k <= THREADS; k++) {
        atomic_store(&g_fail_in, k);
        ASSERT_STATUS(start(tick, NULL, THREADS, TICKS, 0), TETHER_EAGAIN);
        ASSERT_EQ(atomic_load(&g_fail_in), 0);
        int before = atomic_load(&g_ticks);
        ASSERT_OK(start(tick, NULL, THREADS, TICKS, 0)); /* the last run was stopped */
        ASSERT_OK(wait(-1));
        ASSERT_EQ(atomic_load(&g_ticks), before + THREADS * TICKS);
    }
    ASSERT_OK(tether_plugin_unload(p, SECONDS(30)));
    t_finalize(rt);
}

RUNNER_MAIN(TEST_ENTRY(pool_refused_a_worker), TEST_ENTRY(ticker_refused_a_thread))
