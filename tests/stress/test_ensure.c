/*
 * test_ensure.c - ensure/release from many threads the runtime did not
 * create: 64 raw pthreads, each nesting three deep for 10,000 rounds
 * (divided by TETHER_TEST_ROUNDS_DIV in the sanitizer builds), then the
 * main thread finalizes.  And ensures that cross into interpreters being
 * destroyed meanwhile, next to threads of those interpreters that try to
 * destroy them and ensure them once refused (issue 12 F1, F3, F7).
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
    tether_runtime rt = t_runtime_main(NULL, &g_interp);
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

/* ------------------------------------------------------------------------
 * Crossing into interpreters that are being destroyed
 * ---------------------------------------------------------------------- */

enum { CROSSERS = 6 };
static tether_interp g_main_interp;
static _Atomic tether_interp g_doomed;  /* the interpreter of this round */
static atomic_int g_stop;
static atomic_long g_crossings;
static atomic_int g_doomed_in; /* the round's daemon thread runs */

/* Attached to the main interpreter, ensures the doomed one, runs there a
   little, releases: the thread must hold the main interpreter's GIL again
   whatever happened to the other meanwhile. */
static void *crosser(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_stop)) {
        tether_gilstate outer, inner;
        ASSERT_OK(tether_ensure(g_main_interp, &outer));
        tether_interp x = atomic_load(&g_doomed);
        int rc = x ? tether_ensure(x, &inner) : TETHER_EBADHANDLE;
        if (rc == TETHER_OK) {
            for (int i = 0; i < 3 && tether_checkpoint() == TETHER_OK; i++)
                ; /* EFINALIZING detaches the thread from x */
            ASSERT_OK(tether_release(inner));
            atomic_fetch_add(&g_crossings, 1);
        } else if (rc != TETHER_EFINALIZING && rc != TETHER_EBADHANDLE) {
            runner_fail(__FILE__, __LINE__, "ensure: %s", tether_status_name(rc));
        }
        ASSERT_EQ(tether_gil_held(), 1); /* the main interpreter's, again */
        ASSERT_OK(tether_checkpoint());
        ASSERT_OK(tether_release(outer));
        ASSERT_EQ(tether_gil_held(), 0);
    }
    return NULL;
}

/* A daemon thread of the doomed interpreter: tries to destroy it while
   detached (refused: it would join itself), until finalize stops it; then
   ensures it, which must answer without freeing its own state. */
static int doomed_thread(void *arg)
{
    tether_interp x = (tether_interp)(uintptr_t)arg;
    int rc;
    atomic_store(&g_doomed_in, 1);
    for (;;) {
        tether_tstate saved;
        ASSERT_OK(tether_save_thread(&saved));
        rc = tether_interp_destroy(x, 0);
        if (rc != TETHER_ESTATE && rc != TETHER_EBADHANDLE)
            runner_fail(__FILE__, __LINE__, "destroy: %s", tether_status_name(rc));
        if ((rc = tether_restore_thread(saved)) != TETHER_OK)
            break;
        if ((rc = tether_checkpoint()) != TETHER_OK)
            break;
    }
    ASSERT_EQ(rc, TETHER_EFINALIZING);
    ASSERT_EQ(tether_gil_held(), 0);
    for (int i = 0; i < 2; i++) {
        tether_gilstate st;
        rc = tether_ensure(x, &st);
        ASSERT(rc == TETHER_EFINALIZING || rc == TETHER_EBADHANDLE);
    }
    return TETHER_EXIT;
}

TEST(cross_into_destroyed_interps)
{
    int rounds = runner_rounds(100);
    tether_runtime rt = t_runtime_interval(200); /* quick hand-overs */
    g_main_interp = t_main_interp(rt);
    pthread_t th[CROSSERS];
    for (int i = 0; i < CROSSERS; i++)
        th[i] = t_pthread(crosser, NULL);
    for (int r = 0; r < rounds; r++) {
        tether_interp x;
        ASSERT_OK(tether_interp_create(rt, &x));
        tether_thread t = t_start_daemon(x, doomed_thread, (void *)(uintptr_t)x);
        long before = atomic_load(&g_crossings);
        atomic_store(&g_doomed, x);
        /* Someone crossed in, and the daemon thread runs. */
        while (atomic_load(&g_crossings) < before + 2 || !atomic_load(&g_doomed_in))
            ASSERT_OK(tether_sleep(0));
        atomic_store(&g_doomed_in, 0);
        /* No deadline: the claim is that destroy ends, not how fast (under
           DRD on a loaded machine 30 s was not enough); a hang is the
           test's TIMEOUT. */
        ASSERT_OK(tether_interp_destroy(x, -1));
        atomic_store(&g_doomed, 0);
        ASSERT_EQ(t_join(t), TETHER_EXIT);
    }
    atomic_store(&g_stop, 1);
    t_join_foreign(th, CROSSERS);
    t_finalize(rt);
}

RUNNER_MAIN(TEST_ENTRY_T(ensure_storm, 120), TEST_ENTRY_T(ensure_storm_twice, 120),
            TEST_ENTRY_T(cross_into_destroyed_interps, 240))
