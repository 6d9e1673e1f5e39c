/*
 * test_teardown_races.c - an interpreter or runtime torn down under a
 * thread that is still using it: the interpreter of a nested ensure's outer
 * frame destroyed (or found finalizing) while the frame holds its state,
 * and tether_thread_start racing finalize, which must not return OK with
 * its caller detached.  Regression cases for core bugs the reliability
 * work found (all fixed; CTest name rel_core_findings).  The first two are
 * use-after-free: the ASan build is the one that would see them.
 */
#include <tether/tether.h>

#include <stdatomic.h>

#include "runner.h"
#include "support.h"

static tether_runtime g_rt;
static tether_interp g_a, g_b;

static void setup(void)
{
    g_rt = t_runtime(NULL);
    ASSERT_OK(tether_interp_create(g_rt, &g_a));
    ASSERT_OK(tether_interp_create(g_rt, &g_b));
}

/* A thread that left interpreter A for B (nested ensure) still has A's
   state in its outer ensure frame; destroying A must not free that state
   under the frame (ts_evict in detach_caller), or releasing B switches
   back to freed memory (ts_switch). */
TEST(destroy_outer_interp_of_nested_ensure)
{
    setup();
    tether_tstate main_ts;
    ASSERT_OK(tether_save_thread(&main_ts));
    tether_gilstate ga, gb;
    ASSERT_OK(tether_ensure(g_a, &ga));
    ASSERT_OK(tether_ensure(g_b, &gb));
    ASSERT_OK(tether_interp_destroy(g_a, SECONDS(10)));
    int rc = tether_release(gb);
    ASSERT(rc == TETHER_OK || rc == TETHER_EFINALIZING);
    ASSERT_OK(tether_release(ga));
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_OK(tether_restore_thread(main_ts));
    t_finalize(g_rt);
}

static void *destroy_a(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_interp_destroy(g_a, SECONDS(10)));
    return NULL;
}

/* The same when another thread destroys A and this one then ensures A
   again: the ensure says EFINALIZING and must not forget (free) the
   cached state that the outer frame still uses (state_for -> ts_forget). */
TEST(ensure_finalized_outer_interp_of_nested_ensure)
{
    setup();
    tether_tstate main_ts, in_b;
    ASSERT_OK(tether_save_thread(&main_ts));
    tether_gilstate ga, gb, again;
    ASSERT_OK(tether_ensure(g_a, &ga));
    ASSERT_OK(tether_ensure(g_b, &gb));
    ASSERT_OK(tether_save_thread(&in_b));
    t_pthread_join(t_pthread(destroy_a, NULL));
    ASSERT_OK(tether_restore_thread(in_b));
    ASSERT_STATUS(tether_ensure(g_a, &again), TETHER_EFINALIZING);
    int rc = tether_release(gb);
    ASSERT(rc == TETHER_OK || rc == TETHER_EFINALIZING);
    ASSERT_OK(tether_release(ga));
    ASSERT_OK(tether_restore_thread(main_ts));
    t_finalize(g_rt);
}

static tether_interp g_interp;
static atomic_int g_detached_ok, g_starts;

static int noop(void *arg) { return (int)(intptr_t)arg; }

/* Starts threads until refused; a start that says TETHER_OK must leave the
   caller holding the GIL (thread.c wait_started ignores the failure of
   its re-attach when finalize came meanwhile). */
static int starter(void *arg)
{
    (void)arg;
    tether_thread_opts o = {sizeof o, NULL, 1, 0};
    for (;;) {
        tether_thread t;
        if (tether_thread_start(g_interp, noop, NULL, &o, &t) != TETHER_OK)
            break;
        atomic_fetch_add(&g_starts, 1);
        ASSERT_OK(tether_thread_release(t));
        if (!tether_gil_held()) {
            atomic_fetch_add(&g_detached_ok, 1);
            break;
        }
        if (tether_checkpoint() != TETHER_OK)
            break;
    }
    return TETHER_EXIT;
}

TEST(start_racing_finalize_keeps_caller_attached)
{
    for (int i = 0; i < runner_rounds(50); i++) {
        g_rt = t_runtime_main(NULL, &g_interp);
        int base = atomic_load(&g_starts);
        tether_thread t = t_start_daemon(g_interp, starter, NULL);
        while (atomic_load(&g_starts) < base + 5)
            ASSERT_OK(tether_sleep(MS(1)));
        t_finalize(g_rt);
        ASSERT_OK(tether_thread_release(t));
    }
    ASSERT_EQ(atomic_load(&g_detached_ok), 0);
}

RUNNER_MAIN(TEST_ENTRY(destroy_outer_interp_of_nested_ensure),
            TEST_ENTRY(ensure_finalized_outer_interp_of_nested_ensure),
            TEST_ENTRY(start_racing_finalize_keeps_caller_attached))
