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

/* ---- many threads, mixed, while the switch interval changes ------------- */

enum { MX_CPUS = 24, MX_SLEEPERS = 24, MX_FOREIGN = 16,
       MX_CHECKPOINTS = 3000, MX_SLEEPS = 300, MX_ENSURES = 300 };

static int mx_inside;     /* Synchronization: gil. */
static long mx_sections;  /* Synchronization: gil. */
static atomic_int mx_done;

/* One critical section under the GIL: nobody else is inside. */
static void mx_section(void)
{
    ASSERT_EQ(mx_inside, 0);
    mx_inside = 1;
    mx_sections++;
    mx_inside = 0;
}

static int mx_cpu(void *arg)
{
    (void)arg;
    for (int i = 0; i < MX_CHECKPOINTS; i++) {
        mx_section();
        ASSERT_OK(tether_checkpoint());
    }
    atomic_fetch_add(&mx_done, 1);
    return TETHER_OK;
}

static int mx_sleeper(void *arg)
{
    int64_t ns = (intptr_t)arg % 2 ? 20000 : 1;
    for (int i = 0; i < MX_SLEEPS; i++) {
        mx_section();
        ASSERT_OK(tether_sleep(ns));
    }
    atomic_fetch_add(&mx_done, 1);
    return TETHER_OK;
}

/* A foreign thread: ensure/release loops (not a returner: a fresh take). */
static void *mx_foreign(void *arg)
{
    (void)arg;
    for (int i = 0; i < MX_ENSURES; i++) {
        tether_gilstate st;
        ASSERT_OK(tether_ensure(g_interp, &st));
        mx_section();
        ASSERT_OK(tether_release(st));
    }
    atomic_fetch_add(&mx_done, 1);
    return NULL;
}

/* 64 threads -- CPU-bound, returners (sleeps), foreign ensure/release
   loops -- each doing a fixed amount of work, while the main thread flips
   the switch interval between 1 us, 1 ms and 10 s.  Every thread finishes
   (a lost wake-up hangs the case; a head left asleep with a 10 s interval
   after the interval came back down makes every CPU-bound hand-over cost
   up to 10 s, and the case times out), and the GIL excludes throughout. */
TEST(many_mixed_while_the_interval_changes)
{
    static const uint32_t flips[] = {1, 1000, 10000000, 1000, 1, 10000000};
    atomic_store(&mx_done, 0);
    mx_sections = 0;
    g_rt = t_runtime_interval(1000);
    g_interp = t_main_interp(g_rt);
    tether_thread ts[MX_CPUS + MX_SLEEPERS];
    pthread_t fs[MX_FOREIGN];
    for (intptr_t i = 0; i < MX_CPUS; i++)
        ts[i] = t_start(g_interp, mx_cpu, (void *)i);
    for (intptr_t i = 0; i < MX_SLEEPERS; i++)
        ts[MX_CPUS + i] = t_start(g_interp, mx_sleeper, (void *)i);
    for (int i = 0; i < MX_FOREIGN; i++)
        fs[i] = t_pthread(mx_foreign, NULL);
    for (unsigned k = 0; atomic_load(&mx_done) < MX_CPUS + MX_SLEEPERS + MX_FOREIGN; k++) {
        ASSERT_OK(tether_set_switch_interval(g_rt, flips[k % 6]));
        ASSERT_OK(tether_sleep(MS(1)));
    }
    ASSERT_OK(tether_set_switch_interval(g_rt, 1000));
    for (int i = 0; i < MX_CPUS + MX_SLEEPERS; i++)
        ASSERT_EQ(t_join(ts[i]), TETHER_OK);
    t_join_foreign(fs, MX_FOREIGN);
    ASSERT_EQ(mx_sections, (long)MX_CPUS * MX_CHECKPOINTS +
                               (long)MX_SLEEPERS * MX_SLEEPS +
                               (long)MX_FOREIGN * MX_ENSURES);
    t_finalize(g_rt);
}

RUNNER_MAIN(TEST_ENTRY_T(returners_do_not_starve_cpu_bound, 240),
            TEST_ENTRY_T(finalize_with_returners_waiting, 240),
            TEST_ENTRY_T(many_mixed_while_the_interval_changes, 240))
