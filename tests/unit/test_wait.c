/*
 * test_wait.c - the interruptible waits: locks, events and sleep, their
 * timeouts and try-once mode, deadlock and state errors, waits by threads
 * that are not attached, and freeing an object under its waiters.
 *
 * The only clock assertions are lower bounds (a wait never returns before
 * its timeout), which noise cannot break.
 */
#include <tether/tether.h>


#include "runner.h"
#include "support.h"

static tether_runtime g_rt;
static tether_interp g_interp;
static tether_lock g_lock;
static tether_event g_event;

static void setup(void)
{
    g_rt = t_runtime_main(NULL, &g_interp);
    ASSERT_OK(tether_lock_new(&g_lock));
    ASSERT_OK(tether_event_new(&g_event));
}

static void teardown(void)
{
    ASSERT_OK(tether_lock_free(g_lock));
    ASSERT_OK(tether_event_free(g_event));
    t_finalize(g_rt);
}

/* ------------------------------------------------------------------------
 * Locks
 * ---------------------------------------------------------------------- */

static void *contend_held_lock(void *arg)
{
    (void)arg;
    ASSERT_FAILS(tether_lock_acquire(g_lock, 0), TETHER_ETIMEDOUT,
                 "tether_lock_acquire");
    int64_t start = t_now_ns();
    ASSERT_STATUS(tether_lock_acquire(g_lock, MS(10)), TETHER_ETIMEDOUT);
    ASSERT(t_now_ns() - start >= MS(10));
    return NULL;
}

/* Any thread may release (like Python's Lock); this one is not attached. */
static void *release_elsewhere(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_lock_release(g_lock));
    return NULL;
}

TEST(lock_timeouts)
{
    setup();
    ASSERT_OK(tether_lock_acquire(g_lock, 0));
    t_run_foreign(contend_held_lock, NULL);
    t_run_foreign(release_elsewhere, NULL);
    ASSERT_OK(tether_lock_acquire(g_lock, MS(10)));
    ASSERT_OK(tether_lock_release(g_lock));
    teardown();
}

TEST(lock_deadlock_and_state)
{
    setup();
    ASSERT_FAILS(tether_lock_release(g_lock), TETHER_ESTATE, "tether_lock_release");
    ASSERT_OK(tether_lock_acquire(g_lock, -1));
    ASSERT_FAILS(tether_lock_acquire(g_lock, -1), TETHER_EDEADLK,
                 "tether_lock_acquire");
    ASSERT_OK(tether_lock_release(g_lock)); /* still held once: released now */
    ASSERT_FAILS(tether_lock_release(g_lock), TETHER_ESTATE, "tether_lock_release");
    ASSERT_FAILS(tether_lock_new(NULL), TETHER_EINVAL, "tether_lock_new");
    teardown();
}

/* A thread blocked on the lock wakes when the holder releases it, while the
   holder keeps the GIL it needs in between. */
static atomic_int g_acquired;

static int acquire_forever(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_event_set(g_event));
    ASSERT_OK(tether_lock_acquire(g_lock, -1));
    atomic_store(&g_acquired, 1);
    ASSERT_OK(tether_lock_release(g_lock));
    return TETHER_OK;
}

TEST(lock_handoff)
{
    setup();
    ASSERT_OK(tether_lock_acquire(g_lock, 0));
    tether_thread t = t_start(g_interp, acquire_forever, NULL);
    ASSERT_OK(tether_event_wait(g_event, -1));
    ASSERT_OK(tether_sleep(MS(10)));
    ASSERT_EQ(atomic_load(&g_acquired), 0);
    ASSERT_OK(tether_lock_release(g_lock));
    ASSERT_EQ(t_join(t), TETHER_OK);
    ASSERT_EQ(atomic_load(&g_acquired), 1);
    teardown();
}

/* ------------------------------------------------------------------------
 * Events
 * ---------------------------------------------------------------------- */

TEST(event_states)
{
    setup();
    ASSERT_EQ(tether_event_is_set(g_event), 0);
    ASSERT_FAILS(tether_event_wait(g_event, 0), TETHER_ETIMEDOUT, "tether_event_wait");
    int64_t start = t_now_ns();
    ASSERT_STATUS(tether_event_wait(g_event, MS(10)), TETHER_ETIMEDOUT);
    ASSERT(t_now_ns() - start >= MS(10));
    ASSERT_OK(tether_event_set(g_event));
    ASSERT_OK(tether_event_set(g_event)); /* idempotent */
    ASSERT_EQ(tether_event_is_set(g_event), 1);
    ASSERT_OK(tether_event_wait(g_event, 0));
    ASSERT_OK(tether_event_wait(g_event, -1));
    ASSERT_OK(tether_event_clear(g_event));
    ASSERT_EQ(tether_event_is_set(g_event), 0);
    ASSERT_STATUS(tether_event_wait(g_event, 0), TETHER_ETIMEDOUT);
    ASSERT_FAILS(tether_event_new(NULL), TETHER_EINVAL, "tether_event_new");
    teardown();
}

/* Every waiter wakes on one set: tether threads and a raw pthread. */
enum { WAITERS = 4 };
static atomic_int g_waiting, g_woken;

static int wait_event(void *arg)
{
    atomic_fetch_add(&g_waiting, 1);
    int rc = tether_event_wait(g_event, -1);
    if (rc == (int)(intptr_t)arg)
        atomic_fetch_add(&g_woken, 1);
    return TETHER_OK;
}

static void *wait_event_raw(void *arg)
{
    (void)wait_event(arg);
    return NULL;
}

/* Starts WAITERS - 1 tether threads and one pthread blocked on g_event
   that each count a wake-up with status `want`; returns once all are
   about to wait. */
static pthread_t start_waiters(tether_thread *ts, int want)
{
    for (int i = 0; i < WAITERS - 1; i++)
        ts[i] = t_start(g_interp, wait_event, (void *)(intptr_t)want);
    pthread_t raw = t_pthread(wait_event_raw, (void *)(intptr_t)want);
    while (atomic_load(&g_waiting) < WAITERS)
        ASSERT_OK(tether_sleep(MS(1)));
    ASSERT_OK(tether_sleep(MS(20))); /* let them block */
    return raw;
}

static void join_waiters(tether_thread *ts, pthread_t raw)
{
    for (int i = 0; i < WAITERS - 1; i++)
        ASSERT_EQ(t_join(ts[i]), TETHER_OK);
    TETHER_BEGIN_ALLOW_THREADS
    t_pthread_join(raw);
    TETHER_END_ALLOW_THREADS
    ASSERT_EQ(atomic_load(&g_woken), WAITERS);
}

TEST(event_wakes_all)
{
    setup();
    tether_thread ts[WAITERS - 1];
    pthread_t raw = start_waiters(ts, TETHER_OK);
    ASSERT_OK(tether_event_set(g_event));
    join_waiters(ts, raw);
    teardown();
}

/* Freeing an event wakes its waiters with EBADHANDLE. */
TEST(event_free_wakes_waiters)
{
    setup();
    tether_thread ts[WAITERS - 1];
    pthread_t raw = start_waiters(ts, TETHER_EBADHANDLE);
    ASSERT_OK(tether_event_free(g_event));
    join_waiters(ts, raw);
    ASSERT_OK(tether_event_new(&g_event)); /* for teardown */
    teardown();
}

static int acquire_lock(void *arg)
{
    atomic_fetch_add(&g_waiting, 1);
    if (tether_lock_acquire(g_lock, -1) == (int)(intptr_t)arg)
        atomic_fetch_add(&g_woken, 1);
    return TETHER_OK;
}

static void *acquire_lock_raw(void *arg)
{
    (void)acquire_lock(arg);
    return NULL;
}

/* Freeing a held lock wakes its waiters with EBADHANDLE. */
TEST(lock_free_wakes_waiters)
{
    setup();
    ASSERT_OK(tether_lock_acquire(g_lock, 0));
    tether_thread ts[WAITERS - 1];
    for (int i = 0; i < WAITERS - 1; i++)
        ts[i] = t_start(g_interp, acquire_lock, RESULT(TETHER_EBADHANDLE));
    pthread_t raw = t_pthread(acquire_lock_raw, RESULT(TETHER_EBADHANDLE));
    while (atomic_load(&g_waiting) < WAITERS)
        ASSERT_OK(tether_sleep(MS(1)));
    ASSERT_OK(tether_sleep(MS(20)));
    ASSERT_OK(tether_lock_free(g_lock));
    join_waiters(ts, raw);
    ASSERT_OK(tether_lock_new(&g_lock)); /* for teardown */
    teardown();
}

/* A lock whose owner exited is not held by a new thread that got the same
   pthread_t (glibc hands the exited thread's descriptor to the next thread
   it creates): that thread's acquire waits like any other's, instead of
   failing at once with EDEADLK.  The wait ends with an asynchronous
   exception, so the test does not depend on timing. */
static _Atomic pthread_t g_first_owner;
static atomic_int g_same_id, g_reuse_rc;
static t_sem g_attached;

static void *acquire_and_exit(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_lock_acquire(g_lock, 0));
    atomic_store(&g_first_owner, pthread_self());
    return NULL;
}

static void *acquire_as_successor(void *arg)
{
    (void)arg;
    pthread_t first = atomic_load(&g_first_owner);
    atomic_store(&g_same_id, pthread_equal(first, pthread_self()) != 0);
    tether_gilstate g;
    ASSERT_OK(tether_ensure(g_interp, &g));
    t_sem_post(&g_attached);
    int rc = tether_lock_acquire(g_lock, -1);
    atomic_store(&g_reuse_rc, rc);
    if (rc == TETHER_EASYNC)
        ASSERT_OK(tether_async_fetch(NULL, NULL, NULL));
    ASSERT_OK(tether_release(g));
    return NULL;
}

TEST(lock_owner_is_not_a_reused_pthread_id)
{
    setup();
    t_sem_init(&g_attached);
    tether_tstate saved;
    ASSERT_OK(tether_save_thread(&saved));
    int reused = 0;
    for (int round = 0; round < 100 && !reused; round++) {
        t_pthread_join(t_pthread(acquire_and_exit, NULL));
        pthread_t succ = t_pthread(acquire_as_successor, NULL);
        t_sem_wait(&g_attached);
        /* It is attached (its state exists) until it releases, after the
           acquire ends: the raise finds it, blocked or about to block. */
        int count = 0;
        ASSERT_OK(tether_raise_by_ident(g_interp, (uint64_t)succ, 7, NULL, NULL,
                                        &count));
        t_pthread_join(succ);
        reused = atomic_load(&g_same_id);
        /* Not EDEADLK (then it may have left before the raise found it). */
        ASSERT_STATUS(atomic_load(&g_reuse_rc), TETHER_EASYNC);
        ASSERT_EQ(count, 1);
        ASSERT_OK(tether_lock_release(g_lock));
    }
    ASSERT(reused); /* else this libc never reuses ids and the case proves nothing */
    ASSERT_OK(tether_restore_thread(saved));
    t_sem_destroy(&g_attached);
    teardown();
}

/* An event set and at once cleared still wakes a waiter that was blocked
   before the set (Python's Event.wait returns True). */
static atomic_int g_about_to_wait;

static int wait_for_set(void *arg)
{
    (void)arg;
    /* Set holding the GIL, and the wait drops it only once it has looked
       at the event: a thread that sees the flag holding the GIL knows the
       wait has begun. */
    atomic_store(&g_about_to_wait, 1);
    return tether_event_wait(g_event, SECONDS(10));
}

TEST(event_set_then_clear_wakes_waiter)
{
    setup();
    tether_thread t = t_start(g_interp, wait_for_set, NULL);
    while (!atomic_load(&g_about_to_wait))
        ASSERT_OK(tether_sleep(MS(1)));
    ASSERT_OK(tether_event_set(g_event));
    ASSERT_OK(tether_event_clear(g_event));
    ASSERT_EQ(t_join(t), TETHER_OK);
    /* A wait that begins after the clear is not woken by the old set. */
    ASSERT_STATUS(tether_event_wait(g_event, 0), TETHER_ETIMEDOUT);
    teardown();
}

/* ------------------------------------------------------------------------
 * Sleep
 * ---------------------------------------------------------------------- */

static void *sleep_unattached(void *arg)
{
    (void)arg;
    int64_t start = t_now_ns();
    ASSERT_OK(tether_sleep(MS(5)));
    ASSERT(t_now_ns() - start >= MS(5));
    ASSERT_OK(tether_sleep(0));
    return NULL;
}

TEST(sleep_basics)
{
    setup();
    ASSERT_OK(tether_sleep(0));
    int64_t start = t_now_ns();
    ASSERT_OK(tether_sleep(MS(5)));
    ASSERT(t_now_ns() - start >= MS(5));
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_FAILS(tether_sleep(-1), TETHER_EINVAL, "tether_sleep");
    t_run_foreign(sleep_unattached, NULL);
    teardown();
}

/* sleep(0) hands the GIL to a thread waiting for it. */
static atomic_int g_other_ran;

static int mark_ran(void *arg)
{
    (void)arg;
    atomic_store(&g_other_ran, 1);
    return TETHER_OK;
}

TEST(sleep_zero_yields)
{
    setup();
    tether_thread t = t_start(g_interp, mark_ran, NULL);
    /* The new thread may take a while to be scheduled on a loaded machine:
       keep yielding (a liveness bound, not a timing assertion). */
    int64_t give_up = t_now_ns() + SECONDS(30);
    while (!atomic_load(&g_other_ran) && t_now_ns() < give_up)
        ASSERT_OK(tether_sleep(0));
    ASSERT_EQ(atomic_load(&g_other_ran), 1);
    ASSERT_EQ(t_join(t), TETHER_OK);
    teardown();
}

RUNNER_MAIN(TEST_ENTRY(lock_timeouts), TEST_ENTRY(lock_deadlock_and_state),
            TEST_ENTRY(lock_handoff), TEST_ENTRY(event_states),
            TEST_ENTRY(event_wakes_all), TEST_ENTRY(event_free_wakes_waiters),
            TEST_ENTRY(lock_free_wakes_waiters), TEST_ENTRY(sleep_basics),
            TEST_ENTRY(sleep_zero_yields),
            TEST_ENTRY(lock_owner_is_not_a_reused_pthread_id),
            TEST_ENTRY(event_set_then_clear_wakes_waiter))
