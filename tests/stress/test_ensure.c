/*
 * test_ensure.c - ensure/release from many threads the runtime did not
 * create: 64 raw pthreads, each nesting three deep for 10,000 rounds
 * (divided by TETHER_TEST_ROUNDS_DIV in the sanitizer builds), then the
 * main thread finalizes.
 */
#include <tether/tether.h>

#include "runner.h"
#include "support.h"

enum { THREADS = 64, DEPTH = 3 };

static tether_interp g_interp;
static long g_counter; /* Synchronization: gil (deliberately plain). */

static void *storm(void *arg)
{
    int rounds = *(const int *)arg;
    for (int r = 0; r < rounds; r++) {
        tether_gilstate st[DEPTH];
        for (int d = 0; d < DEPTH; d++)
            ASSERT_OK(tether_ensure(g_interp, &st[d]));
        g_counter++;
        ASSERT_OK(tether_checkpoint());
        for (int d = DEPTH - 1; d >= 0; d--)
            ASSERT_OK(tether_release(st[d]));
    }
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

static void run_storm(void)
{
    int rounds = runner_rounds(10000);
    tether_runtime rt = t_runtime(NULL);
    g_interp = t_main_interp(rt);
    pthread_t th[THREADS];
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    for (int i = 0; i < THREADS; i++)
        th[i] = t_pthread(storm, &rounds);
    for (int i = 0; i < THREADS; i++)
        t_pthread_join(th[i]);
    ASSERT_OK(tether_restore_thread(ts));
    ASSERT_EQ(g_counter, (long)THREADS * rounds);
    tether_gil_stats st = t_gil_stats(g_interp);
    ASSERT(st.acquisitions >= (uint64_t)THREADS * (uint64_t)rounds);
    t_finalize(rt);
}

TEST(ensure_storm) { run_storm(); }

/* The same again after the first runtime is gone: the 64 new threads get
   fresh thread states, nothing is left over from the old ones. */
TEST(ensure_storm_twice)
{
    run_storm();
    g_counter = 0;
    run_storm();
}

RUNNER_MAIN(TEST_ENTRY_T(ensure_storm, 120), TEST_ENTRY_T(ensure_storm_twice, 120))
