/*
 * checkpoint.c - tether_checkpoint: where a thread that holds the GIL
 * answers its eval breaker (breaker.c sets the bits): finalize detaches it,
 * a drop request hands the GIL over, pending calls run on the main thread,
 * an asynchronous exception is delivered.  With nothing pending it is a
 * TLS read and one relaxed load (t_breaker, internal.h).
 */
#include "delay.h"
#include "error.h"
#include "internal.h"

/* ---- after a blocking call --------------------------------------------- */

int breaker_after_block(struct tstate *ts)
{
    unsigned b = atomic_load_explicit(&ts->breaker, memory_order_acquire);
    if (b & BREAKER_FINALIZING) {
        ts_detach(ts);
        return TETHER_EFINALIZING;
    }
    if (b & BREAKER_ASYNC)
        return async_deliver(ts);
    return TETHER_OK;
}


/* ---- the eval breaker --------------------------------------------------- */

T_NOINLINE static int checkpoint_slow(void)
{
    struct osthread *os = t_os;
    struct tstate *ts;
    if (!os || !(ts = os->current))
        return err_misuse(TETHER_ESTATE, "tether_checkpoint",
                          "the calling thread is not attached");
    unsigned b = atomic_load(&ts->breaker);
    if (b & BREAKER_FINALIZING) {
        ts_detach(ts);
        return err_set(TETHER_EFINALIZING, "tether_checkpoint",
                       "the interpreter is finalizing; the thread was detached");
    }
    if (b & BREAKER_DROP) {
        TETHER_DELAY_POINT("checkpoint.drop_requested");
        int rc = gil_yield(ts->interp->gil, ts);
        if (rc != TETHER_OK) {
            ts->attached = 0;
            os_set_current(ts->os, NULL);
            return err_set(rc, "tether_checkpoint",
                           "the interpreter is finalizing; the thread was detached");
        }
    }
    if (b & BREAKER_PENDING) {
        int rc = pending_run(ts);
        if (rc != TETHER_OK)
            return rc;
    }
    return breaker_after_block(ts);
}

/* With nothing pending: one initial-exec TLS load (t_breaker: the
   attached state's breaker, or a non-zero word while detached) and one
   relaxed load through it.  Everything else, "not attached" included,
   is the slow path's. */
int tether_checkpoint(void)
{
    if (__builtin_expect(
            atomic_load_explicit(t_breaker, memory_order_relaxed) == 0, 1))
        return TETHER_OK;
    return checkpoint_slow();
}
