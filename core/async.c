/*
 * async.c - asynchronous exceptions: raise (post to a thread and signal
 * its breaker), deliver (at a checkpoint, or on return from a blocking
 * wait), fetch, defer and allow.  Synchronization of the slots:
 * interp->mutex.
 */
#include "error.h"
#include "handle.h"
#include "internal.h"
#include "lockrank.h"
#include "trace.h"

int async_deliver(struct tstate *ts)
{
    struct interp *interp = ts->interp;
    void *old = NULL;
    tether_dtor old_dtor = NULL;
    int rc = TETHER_OK;
    rank_lock(&interp->mutex, RANK_INTERP);
    atomic_fetch_and(&ts->breaker, ~BREAKER_ASYNC);
    if (ts->has_pending && ts->defer == 0) {
        if (ts->has_delivered) {
            old = ts->delivered_payload;
            old_dtor = ts->delivered_dtor;
        }
        ts->has_delivered = 1;
        ts->delivered_code = ts->pending_code;
        ts->delivered_payload = ts->pending_payload;
        ts->delivered_dtor = ts->pending_dtor;
        ts->has_pending = 0;
        rc = TETHER_EASYNC;
    }
    rank_unlock(&interp->mutex, RANK_INTERP);
    if (old_dtor)
        old_dtor(old);
    if (rc == TETHER_EASYNC)
        TRACE(trace_async_delivered(ts, ts->delivered_code));
    if (rc == TETHER_EASYNC)
        err_set(rc, "tether_checkpoint", "an asynchronous exception (code %lld) "
                "was delivered", (long long)ts->delivered_code);
    return rc;
}

/* Posts an exception to `ts`; called with interp->mutex held.  Returns the
   replaced payload's destructor call through old and old_dtor. */
static void post_async(struct tstate *ts, int64_t code, void *payload,
                       tether_dtor dtor, void **old, tether_dtor *old_dtor)
{
    if (ts->has_pending) {
        *old = ts->pending_payload;
        *old_dtor = ts->pending_dtor;
    }
    ts->has_pending = 1;
    ts->pending_code = code;
    ts->pending_payload = payload;
    ts->pending_dtor = dtor;
    TRACE(trace_async_posted(ts->interp->rt, ts->ident, code));
    if (ts->defer == 0)
        breaker_signal(ts, BREAKER_ASYNC);
}

int tether_thread_raise(tether_thread h, int64_t code, void *payload,
                        tether_dtor dtor)
{
    static const char fn[] = "tether_thread_raise";
    struct thread *t = handle_get_or_misuse(h, HT_THREAD, fn);
    if (!t)
        return TETHER_EBADHANDLE;
    struct interp *interp = t->interp;
    void *old = NULL;
    tether_dtor old_dtor = NULL;
    int rc = TETHER_OK;
    rank_lock(&interp->mutex, RANK_INTERP);
    if (t->ts)
        post_async(t->ts, code, payload, dtor, &old, &old_dtor);
    else
        rc = err_set(TETHER_ESTATE, fn, "the thread '%s' has finished", t->name);
    rank_unlock(&interp->mutex, RANK_INTERP);
    breaker_unblock(interp); /* t's reference keeps interp */
    handle_put(h);
    if (old_dtor)
        old_dtor(old);
    return rc;
}

int tether_raise_by_ident(tether_interp h, uint64_t ident, int64_t code,
                          void *payload, tether_dtor dtor, int *count_out)
{
    struct interp *interp = interp_lookup_open(h, "tether_raise_by_ident");
    if (!interp)
        return TETHER_EBADHANDLE;
    void *old = NULL;
    tether_dtor old_dtor = NULL;
    int count = 0;
    rank_lock(&interp->mutex, RANK_INTERP);
    for (struct tstate *ts = interp->tstates; ts; ts = ts->next) {
        if (ts->os && ts->ident == ident) {
            post_async(ts, code, payload, dtor, &old, &old_dtor);
            count = 1;
            break;
        }
    }
    rank_unlock(&interp->mutex, RANK_INTERP);
    breaker_unblock(interp);
    handle_put(h);
    if (old_dtor)
        old_dtor(old);
    if (count_out)
        *count_out = count;
    return TETHER_OK;
}

int tether_async_fetch(int64_t *code_out, void **payload_out,
                       tether_dtor *dtor_out)
{
    static const char fn[] = "tether_async_fetch";
    struct tstate *ts = ts_current();
    if (!ts)
        return err_misuse(TETHER_ESTATE, fn, "the calling thread is not attached");
    int rc = TETHER_OK;
    rank_lock(&ts->interp->mutex, RANK_INTERP);
    if (!ts->has_delivered) {
        rc = err_set(TETHER_ESTATE, fn, "no asynchronous exception was delivered");
    } else {
        ts->has_delivered = 0;
        if (code_out)
            *code_out = ts->delivered_code;
        if (payload_out)
            *payload_out = ts->delivered_payload;
        if (dtor_out)
            *dtor_out = ts->delivered_dtor;
    }
    rank_unlock(&ts->interp->mutex, RANK_INTERP);
    return rc;
}

int tether_async_defer(void)
{
    struct tstate *ts = ts_current();
    if (!ts)
        return err_misuse(TETHER_ESTATE, "tether_async_defer",
                          "the calling thread is not attached");
    rank_lock(&ts->interp->mutex, RANK_INTERP);
    ts->defer++;
    rank_unlock(&ts->interp->mutex, RANK_INTERP);
    return TETHER_OK;
}

int tether_async_allow(void)
{
    static const char fn[] = "tether_async_allow";
    struct tstate *ts = ts_current();
    if (!ts)
        return err_misuse(TETHER_ESTATE, fn, "the calling thread is not attached");
    int rc = TETHER_OK;
    rank_lock(&ts->interp->mutex, RANK_INTERP);
    if (ts->defer == 0)
        rc = err_misuse(TETHER_ESTATE, fn, "no tether_async_defer to undo");
    else if (--ts->defer == 0 && ts->has_pending)
        atomic_fetch_or(&ts->breaker, BREAKER_ASYNC);
    rank_unlock(&ts->interp->mutex, RANK_INTERP);
    return rc;
}
