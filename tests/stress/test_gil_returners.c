/*
 * test_gil_returners.c - threads back from a voluntary wait ahead of
 * CPU-bound ones (issue 20 item 4, kept_for_head in core/gil.c), attacked
 * from outside: the priority must not starve the CPU-bound threads, and
 * must lose no wake-up when finalize comes while returners wait.
 *
 * Nothing here measures time.  Starvation is counted in the returners'
 * own returns: in every window of RETURNS_PER_ROUND returns from a sleep,
 * every CPU-bound thread makes progress (a window that large is far longer
 * than the switch interval after which a waiting CPU-bound thread is put
 * at the front of the queue).  A lost wake-up is a hang: the case timeout.
 */
#include <string.h>

#include <tether/tether.h>

#include "runner.h"
#include "support.h"

static tether_runtime g_rt;
static tether_interp g_interp;
static atomic_int g_stop;

enum { SLEEPERS = 8, CPUS = 2, ROUNDS = 4, RETURNS_PER_ROUND = 20000 };

static atomic_long g_returns;  /* the sleepers' returns from a sleep */
static long g_progress[CPUS];  /* Synchronization: gil. */

/* A returner: sleeps 0.1 ms (or 1 us, every other one)
   in a loop, each return a voluntary wait's. */
static int sleeper(void *arg)
{
    int64_t ns = (intptr_t)arg % 2 ? 100000 : 1000;
    int rc = TETHER_OK;
    while (!atomic_load(&g_stop) && (rc = tether_sleep(ns)) == TETHER_OK)
        atomic_fetch_add(&g_returns, 1);
    return rc == TETHER_EFINALIZING ? TETHER_OK : rc;
}

static int cpu_bound(void *arg)
{
    int me = (int)(intptr_t)arg;
    int rc = TETHER_OK;
    while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        g_progress[me]++;
        if ((rc = tether_checkpoint()) != TETHER_OK)
            break;
    }
    return rc == TETHER_EFINALIZING ? TETHER_OK : rc;
}

/* The main thread waits without the GIL (a plain nanosleep inside
   tether_sleep's release) and samples the counters holding it. */
static long progress_of(int i)
{
    return g_progress[i];
}

TEST(returners_do_not_starve_cpu_bound)
{
    atomic_store(&g_stop, 0);
    atomic_store(&g_returns, 0);
    memset(g_progress, 0, sizeof g_progress);
    g_rt = t_runtime_interval(1000);
    g_interp = t_main_interp(g_rt);
    tether_thread ts[SLEEPERS + CPUS];
    for (intptr_t i = 0; i < CPUS; i++)
        ts[i] = t_start(g_interp, cpu_bound, (void *)i);
    for (intptr_t i = 0; i < SLEEPERS; i++)
        ts[CPUS + i] = t_start(g_interp, sleeper, (void *)i);
    for (int round = 0; round < ROUNDS; round++) {
        long seen[CPUS];
        for (int i = 0; i < CPUS; i++)
            seen[i] = progress_of(i);
        long until = atomic_load(&g_returns) + RETURNS_PER_ROUND;
        while (atomic_load(&g_returns) < until)
            ASSERT_OK(tether_sleep(MS(2)));
        for (int i = 0; i < CPUS; i++)
            if (progress_of(i) <= seen[i])
                runner_fail(__FILE__, __LINE__,
                            "round %d: CPU-bound thread %d made no progress in %d "
                            "returns of the sleepers", round, i, RETURNS_PER_ROUND);
    }
    atomic_store(&g_stop, 1);
    for (int i = 0; i < SLEEPERS + CPUS; i++)
        ASSERT_EQ(t_join(ts[i]), TETHER_OK);
    t_finalize(g_rt);
}

/* Finalize while returners queue ahead of CPU-bound threads and a woken
   returner head may hold the GIL kept for it: every daemon thread leaves
   (EFINALIZING) and finalize returns; a lost wake-up hangs the case. */
TEST(finalize_with_returners_waiting)
{
    for (int round = 0; round < 30; round++) {
        atomic_store(&g_stop, 0);
        atomic_store(&g_returns, 0);
        g_rt = t_runtime_interval(round % 2 ? 1000 : 200);
        g_interp = t_main_interp(g_rt);
        tether_thread ts[SLEEPERS + CPUS];
        for (intptr_t i = 0; i < CPUS; i++)
            ts[i] = t_start_daemon(g_interp, cpu_bound, (void *)i);
        for (intptr_t i = 0; i < SLEEPERS; i++)
            ts[CPUS + i] = t_start_daemon(g_interp, sleeper, (void *)i);
        /* some returns first, so that returners are queued at the end */
        while (atomic_load(&g_returns) < 50 * (round % 5))
            ASSERT_OK(tether_sleep(MS(1)));
        ASSERT_OK(tether_runtime_finalize(g_rt, SECONDS(60)));
        ASSERT_EQ(tether_gil_held(), 0);
        for (int i = 0; i < SLEEPERS + CPUS; i++)
            ASSERT_OK(tether_thread_release(ts[i]));
    }
}

RUNNER_MAIN(TEST_ENTRY_T(returners_do_not_starve_cpu_bound, 240),
            TEST_ENTRY_T(finalize_with_returners_waiting, 240))
