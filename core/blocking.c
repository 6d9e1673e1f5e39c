/*
 * blocking.c - letting the GIL go around blocking work: tether_save_thread
 * and tether_restore_thread, and tether_call_blocking with its unblock
 * function.  Both come back through breaker_after_block (checkpoint.c), so
 * an exception raised or a finalize begun meanwhile is answered at once.
 */
#include "error.h"
#include "internal.h"
#include "lockrank.h"

/* ---- save / restore ----------------------------------------------------- */

int tether_save_thread(tether_tstate *out)
{
    static const char fn[] = "tether_save_thread";
    if (!out)
        return err_misuse(TETHER_EINVAL, fn, "out is NULL");
    struct tstate *ts = ts_current();
    if (!ts)
        return err_misuse(TETHER_ESTATE, fn, "the calling thread is not attached");
    if (!ts_paused(ts)) /* the outermost: its use pauses */
        ts->left_at = ts->os->tok;
    ts->saved++; /* counted: an outer save may be pending (an ensure
                    re-attached its state inside TETHER_BEGIN_ALLOW_THREADS) */
    ts_detach(ts);
    *out = ts_save_token(ts);
    return TETHER_OK;
}

int tether_restore_thread(tether_tstate tok)
{
    static const char fn[] = "tether_restore_thread";
    struct osthread *os = osthread_peek();
    struct tstate *ts = NULL;
    if (os && tok)
        for (ts = os->cache; ts && ts_save_token(ts) != tok; ts = ts->os_next)
            ;
    if (!ts && os && tok && osthread_take_evicted(os, tok))
        return err_set(TETHER_EFINALIZING, fn, "the interpreter was finalized "
                       "while the state was saved; the thread stays detached");
    if (!ts || !ts->saved)
        return err_misuse(TETHER_ESTATE, fn, "not a state saved on this thread");
    if (os->current)
        return err_misuse(TETHER_ESTATE, fn, "the calling thread is attached");
    ts->saved--;
    int rc = ts_attach(ts, 1);
    if (rc != TETHER_OK)
        return err_set(rc, fn, "the interpreter is finalizing");
    return breaker_after_block(ts);
}


/* ---- blocking calls ----------------------------------------------------- */

/* Publishes the unblock function; removing it (NULL) also waits until no
   call of the old one is in progress, so that once tether_call_blocking
   returns its ubf_arg is the caller's again. */
static void set_ubf(struct tstate *ts, tether_unblock_fn ubf, void *arg)
{
    rank_lock(&ts->interp->mutex, RANK_INTERP);
    ts->ubf = ubf;
    ts->ubf_arg = arg;
    if (!ubf) {
        ts->ubf_due = 0;
        while (ts->ubf_calls)
            pthread_cond_wait(&ts->ubf_idle, &ts->interp->mutex);
    }
    rank_unlock(&ts->interp->mutex, RANK_INTERP);
}

int tether_call_blocking(int (*fn)(void *arg), void *arg,
                         tether_unblock_fn ubf, void *ubf_arg)
{
    static const char name[] = "tether_call_blocking";
    if (!fn)
        return err_misuse(TETHER_EINVAL, name, "fn is NULL");
    struct tstate *ts = ts_current();
    if (!ts)
        return err_misuse(TETHER_ESTATE, name, "the calling thread is not attached");
    /* The unblock function is published before the breaker is looked at:
       a raise after this point calls it, one before it is seen here, and
       fn is not started only to be interrupted. */
    set_ubf(ts, ubf, ubf_arg);
    if (atomic_load(&ts->breaker) & (BREAKER_ASYNC | BREAKER_FINALIZING)) {
        set_ubf(ts, NULL, NULL);
        int rc = breaker_after_block(ts);
        if (rc != TETHER_OK)
            return rc;
        set_ubf(ts, ubf, ubf_arg);
    }
    /* fn may finalize the runtime on this thread, which forgets the
       thread's unreferenced cached states: ts_block keeps this one until
       fn has returned (ts_unblock forgets it instead). */
    uint64_t mark = ts_block(ts);
    int result = fn(arg);
    set_ubf(ts, NULL, NULL);
    int rc = ts_unblock(ts, mark);
    if (rc == TETHER_ESTATE)
        return err_misuse(rc, name, "fn left a tether_ensure unreleased on "
                          "this thread, which stays attached through it");
    if (rc != TETHER_OK)
        return err_set(rc, name, "the interpreter is finalizing");
    rc = breaker_after_block(ts);
    return rc != TETHER_OK ? rc : result;
}
