/*
 * test_interp.c - interpreters with their own GIL: parallel threads, a
 * thread attached to at most one GIL (A -> B -> A nesting), per-interpreter
 * switch statistics, and tether_interp_destroy with the guarantees of
 * finalize.
 */
#include <sched.h>
#include <stdatomic.h>
#include <tether/tether.h>

#include "runner.h"
#include "support.h"

static tether_interp new_interp(tether_runtime rt)
{
    tether_interp i;
    ASSERT_OK(tether_interp_create(rt, &i));
    return i;
}

/* Two threads that each hold their interpreter's GIL and never checkpoint
   can only meet if the GILs are separate. */
static atomic_int a_running, b_seen;

static int meet_a(void *arg)
{
    (void)arg;
    atomic_store(&a_running, 1);
    for (long i = 0; !atomic_load(&b_seen); i++) {
        ASSERT(i < 2000000000L);
        sched_yield();
    }
    return TETHER_OK;
}

static int meet_b(void *arg)
{
    (void)arg;
    for (long i = 0; !atomic_load(&a_running); i++) {
        ASSERT(i < 2000000000L);
        sched_yield();
    }
    atomic_store(&b_seen, 1);
    return TETHER_OK;
}

TEST(threads_of_two_interps_run_in_parallel)
{
    tether_runtime rt = t_runtime(&t_per_interp_gil);
    tether_interp a = t_main_interp(rt), b = new_interp(rt);
    tether_tstate saved; /* this thread must not sit on a's GIL */
    ASSERT_OK(tether_save_thread(&saved));
    tether_thread ta = t_start(a, meet_a, NULL);
    tether_thread tb = t_start(b, meet_b, NULL);
    ASSERT_OK(t_join(ta));
    ASSERT_OK(t_join(tb));
    ASSERT_OK(tether_restore_thread(saved));
    t_finalize(rt);
}

/* A -> B -> A -> release x3: each ensure detaches the previous state and
   each release re-attaches it; the thread holds one GIL at every step. */
TEST(nesting_across_interps_restores_each_level)
{
    tether_runtime rt = t_runtime(&t_per_interp_gil);
    tether_interp a = t_main_interp(rt), b = new_interp(rt);
    tether_gilstate s1, s2, s3;
    tether_thread me, other;
    uint64_t id_a, id_b;
    ASSERT_OK(tether_thread_current(&me));
    ASSERT_OK(tether_ensure(b, &s1));
    ASSERT_OK(tether_thread_current(&other)); /* the state of interp b */
    ASSERT(me != other);
    ASSERT_OK(tether_ensure(a, &s2));
    ASSERT_OK(tether_ensure(b, &s3));
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_FAILS(tether_release(s2), TETHER_ESTATE, "tether_release");
    ASSERT_OK(tether_release(s3));
    ASSERT_OK(tether_release(s2));
    ASSERT_OK(tether_release(s1));
    ASSERT_EQ(tether_gil_held(), 1);
    /* Back on interp a: its thread handle is the current one again. */
    tether_thread again;
    ASSERT_OK(tether_thread_current(&again));
    ASSERT_EQ(again, me);
    ASSERT_OK(tether_thread_ident(me, &id_a));
    ASSERT_OK(tether_thread_ident(other, &id_b));
    ASSERT_EQ(id_a, id_b); /* one OS thread, two states */
    tether_thread_release(again);
    tether_thread_release(me);
    tether_thread_release(other);
    t_finalize(rt);
}

/* While attached to b, interp a's GIL is free for other threads. */
static int take_a(void *arg)
{
    atomic_store((atomic_int *)arg, 1);
    return TETHER_OK;
}

TEST(ensure_of_other_interp_releases_first_gil)
{
    tether_runtime rt = t_runtime(&t_per_interp_gil);
    tether_interp a = t_main_interp(rt), b = new_interp(rt);
    atomic_int ran = 0;
    tether_gilstate s;
    ASSERT_OK(tether_ensure(b, &s));
    /* Start from a foreign-ish position: a thread of `a` must run to
       completion while this thread holds only b's GIL and never yields. */
    tether_thread t = t_start(a, take_a, &ran);
    for (long i = 0; !atomic_load(&ran); i++) {
        ASSERT(i < 2000000000L);
        sched_yield();
    }
    ASSERT_OK(tether_release(s));
    ASSERT_OK(t_join(t));
    t_finalize(rt);
}

static int spin_checkpoint(void *arg)
{
    atomic_int *count = arg;
    for (;;) {
        int rc = tether_checkpoint();
        if (rc != TETHER_OK)
            return rc;
        atomic_fetch_add(count, 1);
    }
}

TEST(stats_are_per_interp)
{
    tether_runtime rt = t_runtime(&t_per_interp_gil);
    tether_interp a = t_main_interp(rt), b = new_interp(rt);
    tether_gil_stats before_a = t_gil_stats(a);
    atomic_int count = 0;
    tether_thread t = t_start_daemon(b, spin_checkpoint, &count);
    while (atomic_load(&count) < 1000)
        ASSERT_OK(tether_sleep(MS(1)));
    tether_gil_stats sa = t_gil_stats(a), sb = t_gil_stats(b);
    ASSERT(sb.acquisitions >= 1);
    /* interp a's GIL moved only for the main thread's own sleeps. */
    ASSERT(sa.acquisitions >= before_a.acquisitions);
    ASSERT(sa.switches <= before_a.switches + 1);
    ASSERT_OK(tether_thread_raise(t, 1, NULL, NULL));
    ASSERT_STATUS(t_join(t), TETHER_EASYNC);
    t_finalize(rt);
}

/* ------------------------------------------------------------------------
 * tether_interp_destroy
 * ---------------------------------------------------------------------- */

static int short_work(void *arg)
{
    ASSERT_OK(tether_sleep(MS(20)));
    atomic_store((atomic_int *)arg, 1);
    return TETHER_OK;
}

static int wait_forever(void *arg)
{
    tether_event e = *(tether_event *)arg;
    return tether_event_wait(e, -1);
}

TEST(destroy_joins_nondaemon_and_stops_daemons)
{
    tether_runtime rt = t_runtime(&t_per_interp_gil);
    tether_interp b = new_interp(rt);
    atomic_int done = 0, count = 0;
    tether_event e;
    ASSERT_OK(tether_event_new(&e));
    tether_thread worker = t_start(b, short_work, &done);
    tether_thread spinner = t_start_daemon(b, spin_checkpoint, &count);
    tether_thread waiter = t_start_daemon(b, wait_forever, &e);
    ASSERT_OK(tether_interp_destroy(b, SECONDS(30)));
    ASSERT_EQ(atomic_load(&done), 1); /* the non-daemon ran to its end */
    ASSERT_OK(tether_thread_join(spinner, SECONDS(30)));
    ASSERT_OK(tether_thread_join(waiter, SECONDS(30)));
    int r;
    ASSERT_OK(tether_thread_result(spinner, &r));
    ASSERT_EQ(r, TETHER_EFINALIZING);
    ASSERT_OK(tether_thread_result(waiter, &r));
    ASSERT_EQ(r, TETHER_EFINALIZING);
    /* The handle is gone; ensure on it says so instead of hanging. */
    tether_gilstate s;
    int rc = tether_ensure(b, &s);
    ASSERT(rc == TETHER_EFINALIZING || rc == TETHER_EBADHANDLE);
    ASSERT_FAILS(tether_interp_destroy(b, 0), TETHER_EBADHANDLE,
                 "tether_interp_destroy");
    /* The main interpreter is untouched. */
    atomic_int ran = 0;
    ASSERT_OK(t_join(t_start(t_main_interp(rt), take_a, &ran)));
    ASSERT_EQ(atomic_load(&ran), 1);
    tether_thread_release(worker);
    tether_thread_release(spinner);
    tether_thread_release(waiter);
    ASSERT_OK(tether_event_free(e));
    t_finalize(rt);
}

static int never_ends(void *arg)
{
    (void)arg;
    for (;;)
        if (tether_checkpoint() == TETHER_EFINALIZING)
            return TETHER_OK;
}

TEST(destroy_times_out_on_a_busy_nondaemon)
{
    tether_runtime rt = t_runtime(&t_per_interp_gil);
    tether_interp b = new_interp(rt);
    tether_thread t = t_start(b, never_ends, NULL);
    ASSERT_FAILS(tether_interp_destroy(b, MS(50)), TETHER_ETIMEDOUT,
                 "tether_interp_destroy");
    /* Finalized anyway: the thread sees it at its next checkpoint. */
    ASSERT_OK(tether_thread_join(t, SECONDS(30)));
    tether_thread_release(t);
    t_finalize(rt);
}

TEST(destroy_refuses_main_and_attached)
{
    tether_runtime rt = t_runtime(&t_per_interp_gil);
    tether_interp a = t_main_interp(rt), b = new_interp(rt);
    ASSERT_FAILS(tether_interp_destroy(a, 0), TETHER_EINVAL, "tether_interp_destroy");
    tether_gilstate s;
    ASSERT_OK(tether_ensure(b, &s));
    ASSERT_FAILS(tether_interp_destroy(b, 0), TETHER_ESTATE, "tether_interp_destroy");
    ASSERT_OK(tether_release(s));
    ASSERT_OK(tether_interp_destroy(b, SECONDS(30)));
    t_finalize(rt);
}

TEST(shared_gil_destroy)
{
    tether_runtime rt = t_runtime(NULL);
    tether_interp b = new_interp(rt);
    atomic_int count = 0;
    tether_thread spinner = t_start_daemon(b, spin_checkpoint, &count);
    while (atomic_load(&count) < 100)
        ASSERT_OK(tether_sleep(MS(1)));
    ASSERT_OK(tether_interp_destroy(b, SECONDS(30)));
    ASSERT_OK(tether_thread_join(spinner, SECONDS(30)));
    tether_thread_release(spinner);
    t_finalize(rt);
}

RUNNER_MAIN(TEST_ENTRY(threads_of_two_interps_run_in_parallel),
            TEST_ENTRY(nesting_across_interps_restores_each_level),
            TEST_ENTRY(ensure_of_other_interp_releases_first_gil),
            TEST_ENTRY(stats_are_per_interp),
            TEST_ENTRY(destroy_joins_nondaemon_and_stops_daemons),
            TEST_ENTRY(destroy_times_out_on_a_busy_nondaemon),
            TEST_ENTRY(destroy_refuses_main_and_attached),
            TEST_ENTRY(shared_gil_destroy))
