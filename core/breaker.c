/*
 * breaker.c - asking a thread to stop at its next checkpoint.
 *
 * The eval breaker is one atomic word per thread state (BREAKER_* bits).  Other
 * threads only ever set bits in it (with interp->mutex held, so a bit and
 * the data it announces are published together); the owner clears them,
 * at tether_checkpoint (checkpoint.c).  Setting a bit also wakes what the
 * target may be blocked in: a wait (wait.c), an unblock function of
 * tether_call_blocking, the binding's breaker hook if the target holds the
 * GIL.
 */
#include "annotate.h"
#include "internal.h"
#include "lockrank.h"

static void hook_if_holder(struct tstate *holder, void *target)
{
    if (holder == target)
        gil_call_hook(holder);
}

void breaker_signal(struct tstate *ts, unsigned bits)
{
    atomic_fetch_or(&ts->breaker, bits);
    if (ts->wait_mutex) {
        rank_lock(ts->wait_mutex, RANK_OBJECT);
        pthread_cond_broadcast(ts->wait_cond);
        rank_unlock(ts->wait_mutex, RANK_OBJECT);
    }
    /* Called by breaker_unblock, without the lock.  Not while a call of
       it is in progress: that call unblocks fn all the same, and an unblock
       function that raises at its own target would otherwise be called
       again from inside itself, without end. */
    if (ts->ubf && (bits & (BREAKER_ASYNC | BREAKER_FINALIZING)) && ts->ubf_calls == 0)
        ts->ubf_due = 1;
    if (atomic_load(&ts->interp->hook))
        gil_with_holder(ts->interp->gil, hook_if_holder, ts);
}

void breaker_unblock(struct interp *interp)
{
    rank_lock(&interp->mutex, RANK_INTERP);
    for (;;) {
        struct tstate *ts = interp->tstates;
        while (ts && !ts->ubf_due)
            ts = ts->next;
        if (!ts)
            break;
        /* ts stays alive: its owner, in tether_call_blocking, waits for
           ubf_calls to drop to 0 before it goes on. */
        ts->ubf_due = 0;
        ts->ubf_calls++;
        tether_unblock_fn fn = ts->ubf;
        void *arg = ts->ubf_arg;
        rank_unlock(&interp->mutex, RANK_INTERP);
        fn(arg);
        rank_lock(&interp->mutex, RANK_INTERP);
        if (--ts->ubf_calls == 0)
            pthread_cond_broadcast(&ts->ubf_idle);
    }
    rank_unlock(&interp->mutex, RANK_INTERP);
}

