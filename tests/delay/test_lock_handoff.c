/*
 * test_lock_handoff.c - the hand-overs between tether_lock's fast paths
 * (one CAS on the state word in the handle's slot) and its slow paths
 * (waiters on the object's cond), with the windows held open at the
 * core's named delay points (core/delay.h, debug builds; the protocol is
 * the comment above struct lock in core/wait.c).
 *
 * The waiters are plain pthreads (no GIL): a lost wake-up leaves one
 * blocked for good, and the case's time cap reports it.  No case sleeps to
 * make a window likely.
 */
#include <stdatomic.h>

#include "delay_ctl.h"
#include "support.h"

static tether_lock g_lock;
static atomic_int g_took;

/* Acquires g_lock (no timeout), notes it, and releases it at once. */
static void *take_and_release(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_lock_acquire(g_lock, -1));
    atomic_fetch_add(&g_took, 1);
    dctl_note("test.took");
    ASSERT_OK(tether_lock_release(g_lock));
    return NULL;
}

/* Waits until `n` more threads than `base` reached the point where a
   lock waiter goes to sleep (it holds the lock's mutex until it sleeps). */
static void wait_sleepers(unsigned long base, unsigned long n)
{
    dctl_wait_passes("wait.sleep", base + n - 1);
}

/* Two waiters sleep; the release wakes one.  The one woken takes the lock
   in the slow path and must keep the waiters flag, since the other still
   sleeps: its own release is then a slow one that wakes the second.  If a
   slow acquire cleared the flag, the woken waiter's fast release would
   leave the second asleep for good. */
TEST(slow_acquire_keeps_the_waiters_flag)
{
    tether_runtime rt = t_runtime(NULL);
    ASSERT_OK(tether_lock_new(&g_lock));
    atomic_store(&g_took, 0);
    ASSERT_OK(tether_lock_acquire(g_lock, -1));
    unsigned long base = dctl_passes("wait.sleep");
    pthread_t a = t_pthread(take_and_release, NULL);
    pthread_t b = t_pthread(take_and_release, NULL);
    wait_sleepers(base, 2);
    ASSERT_OK(tether_lock_release(g_lock)); /* flagged: the slow release */
    t_pthread_join(a);
    t_pthread_join(b);
    ASSERT_EQ(atomic_load(&g_took), 2);
    /* Nobody waits now: the lock is free, and a fast acquire takes it. */
    ASSERT_OK(tether_lock_acquire(g_lock, 0));
    ASSERT_OK(tether_lock_release(g_lock));
    ASSERT_OK(tether_lock_free(g_lock));
    t_finalize(rt);
}

static void *barge(void *arg)
{
    (void)arg;
    /* The lock is free and flagged-free: the fast path takes it. */
    ASSERT_OK(tether_lock_acquire(g_lock, 0));
    dctl_note("test.barged");
    return NULL;
}

static void *release_it(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_lock_release(g_lock));
    return NULL;
}

/* A slow release has cleared the word (and the flag) and is about to
   signal the sleeping waiter; a third thread's fast acquire takes the lock
   in between.  The woken waiter finds it held, flags it again and sleeps;
   the barger's release must see the flag (its one-CAS fast path fails)
   and wake it. */
TEST(fast_acquire_between_release_and_signal)
{
    tether_runtime rt = t_runtime(NULL);
    ASSERT_OK(tether_lock_new(&g_lock));
    atomic_store(&g_took, 0);
    ASSERT_OK(tether_lock_acquire(g_lock, -1));
    unsigned long base = dctl_passes("wait.sleep");
    pthread_t w = t_pthread(take_and_release, NULL);
    wait_sleepers(base, 1);
    dctl_arm("lock.release.before_signal", 1, DCTL_PARK, 0);
    pthread_t r = t_pthread(release_it, NULL);
    dctl_wait_parked("lock.release.before_signal");
    pthread_t c = t_pthread(barge, NULL);
    t_pthread_join(c); /* holds the lock now, with no flag */
    unsigned long flagged = dctl_passes("lock.flagged");
    base = dctl_passes("wait.sleep");
    dctl_release("lock.release.before_signal");
    t_pthread_join(r);
    /* The waiter woke, found the barger's lock, flagged it and sleeps. */
    dctl_wait_passes("lock.flagged", flagged);
    wait_sleepers(base, 1);
    ASSERT_EQ(atomic_load(&g_took), 0);
    ASSERT_OK(tether_lock_release(g_lock)); /* the barger's, from here */
    t_pthread_join(w);
    ASSERT_EQ(atomic_load(&g_took), 1);
    ASSERT_OK(tether_lock_free(g_lock));
    t_finalize(rt);
}

/* A waiter has flagged the lock, polled it once more and, holding the
   lock's mutex, is about to sleep; the owner's release comes in this
   window.  Its fast CAS fails on the flag, and the slow release must
   signal under the mutex, so after the waiter sleeps: a signal sent
   before would be lost. */
TEST(release_between_flag_and_sleep)
{
    tether_runtime rt = t_runtime(NULL);
    ASSERT_OK(tether_lock_new(&g_lock));
    atomic_store(&g_took, 0);
    ASSERT_OK(tether_lock_acquire(g_lock, -1));
    dctl_arm("wait.sleep", 1, DCTL_PARK, 0);
    pthread_t w = t_pthread(take_and_release, NULL);
    dctl_wait_parked("wait.sleep");
    unsigned long signals = dctl_passes("lock.release.before_signal");
    pthread_t r = t_pthread(release_it, NULL);
    dctl_wait_passes("lock.release.before_signal", signals);
    dctl_release("wait.sleep");
    t_pthread_join(r);
    t_pthread_join(w);
    ASSERT_EQ(atomic_load(&g_took), 1);
    ASSERT_OK(tether_lock_free(g_lock));
    t_finalize(rt);
}

/* The word lives in the handle's slot: a stale handle of a freed lock, and
   one forged for a slot no lock ever used, fail the fast paths' check and
   answer EBADHANDLE; a new lock in the recycled slot is not touched. */
TEST(stale_and_forged_handles_miss_the_fast_path)
{
    tether_runtime rt = t_runtime(NULL);
    tether_lock old, fresh;
    ASSERT_OK(tether_lock_new(&old));
    ASSERT_OK(tether_lock_free(old)); /* the slot's word still names it */
    ASSERT_FAILS(tether_lock_acquire(old, 0), TETHER_EBADHANDLE,
                 "tether_lock_acquire");
    ASSERT_FAILS(tether_lock_release(old), TETHER_EBADHANDLE,
                 "tether_lock_release");
    ASSERT_OK(tether_lock_new(&fresh)); /* may recycle old's slot */
    ASSERT_FAILS(tether_lock_acquire(old, 0), TETHER_EBADHANDLE,
                 "tether_lock_acquire");
    /* Generation 0 is never issued, and a slot's word starts there: a
       forged lock handle of generation 0 for the first chunk's last slot
       (which this program never reaches) must not find it unlocked. */
    tether_lock forged = (fresh >> 56) << 56 | 1023;
    ASSERT_FAILS(tether_lock_acquire(forged, 0), TETHER_EBADHANDLE,
                 "tether_lock_acquire");
    ASSERT_OK(tether_lock_acquire(fresh, 0));
    ASSERT_FAILS(tether_lock_acquire(fresh, 0), TETHER_ETIMEDOUT,
                 "tether_lock_acquire");
    ASSERT_OK(tether_lock_release(fresh));
    ASSERT_OK(tether_lock_free(fresh));
    t_finalize(rt);
}

RUNNER_MAIN(TEST_ENTRY_T(slow_acquire_keeps_the_waiters_flag, 30),
            TEST_ENTRY_T(fast_acquire_between_release_and_signal, 30),
            TEST_ENTRY_T(release_between_flag_and_sleep, 30),
            TEST_ENTRY_T(stale_and_forged_handles_miss_the_fast_path, 30))
