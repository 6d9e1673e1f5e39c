/*
 * pending.c - pending calls: tether_call_soon queues a function for the
 * interpreter's main thread, which runs it at its next checkpoint.
 */
#include "alloc.h"
#include "error.h"
#include "handle.h"
#include "internal.h"
#include "lockrank.h"
#include "pluginreg.h"

int tether_call_soon(tether_interp h, int (*fn)(void *), void *arg)
{
    static const char name[] = "tether_call_soon";
    if (!fn)
        return err_misuse(TETHER_EINVAL, name, "fn is NULL");
    struct interp *interp = interp_lookup_open(h, name);
    if (!interp)
        return TETHER_EBADHANDLE;
    int rc = TETHER_OK;
    struct pending_call *c = NULL;
    struct plugin *pin = NULL;
    if (atomic_load(&interp->finalizing))
        rc = err_set(TETHER_EFINALIZING, name, "the interpreter is finalizing");
    else if (plugin_pin_code((uintptr_t)fn, PLUGIN_PIN_HOLD, &pin) != TETHER_OK)
        rc = err_set(TETHER_ESTATE, name, "fn is in a plugin being unloaded");
    else if (!(c = t_malloc(sizeof *c))) {
        plugin_unpin(pin, PLUGIN_PIN_HOLD);
        rc = err_set(TETHER_ENOMEM, name, "out of memory");
    }
    if (c) {
        *c = (struct pending_call){fn, arg, pin, NULL};
        rank_lock(&interp->mutex, RANK_INTERP);
        /* Looked at again under the mutex: a finalize that marked the
           interpreter meanwhile has dropped the queue (pending_drop) or
           will, and nothing may be queued after that. */
        if (atomic_load(&interp->finalizing)) {
            rank_unlock(&interp->mutex, RANK_INTERP);
            plugin_unpin(pin, PLUGIN_PIN_HOLD);
            t_free(c);
            handle_put(h);
            return err_set(TETHER_EFINALIZING, name,
                           "the interpreter is finalizing");
        }
        if (interp->pending_tail)
            interp->pending_tail->next = c;
        else
            interp->pending_head = c;
        interp->pending_tail = c;
        if (interp->main_ts)
            breaker_signal(interp->main_ts, BREAKER_PENDING);
        rank_unlock(&interp->mutex, RANK_INTERP);
    }
    handle_put(h);
    return rc;
}

void pending_drop(struct interp *interp)
{
    rank_lock(&interp->mutex, RANK_INTERP);
    struct pending_call *c = interp->pending_head;
    interp->pending_head = interp->pending_tail = NULL;
    rank_unlock(&interp->mutex, RANK_INTERP);
    while (c) {
        struct pending_call *next = c->next;
        plugin_unpin(c->pin, PLUGIN_PIN_HOLD);
        t_free(c);
        c = next;
    }
}

/* Runs the calls that were queued when it began, on the interpreter's main
   thread, like CPython: a call that queues another (or itself) with
   tether_call_soon does not make this checkpoint run for ever; the new one
   waits for the next checkpoint, with BREAKER_PENDING left set.  Stops at the
   first failure, leaving the rest queued for the next checkpoint.

   A call may finalize the runtime, which detaches the thread and frees its
   state (`ts`): then this stops at once, touching neither `ts` nor, since
   a reference is held across the call, freed interpreter memory. */
int pending_run(struct tstate *ts)
{
    struct interp *interp = ts->interp;
    size_t budget = 0;
    rank_lock(&interp->mutex, RANK_INTERP);
    for (struct pending_call *c = interp->pending_head; c; c = c->next)
        budget++;
    rank_unlock(&interp->mutex, RANK_INTERP);
    for (;;) {
        struct pending_call *c = NULL;
        rank_lock(&interp->mutex, RANK_INTERP);
        if (interp->main_ts == ts && budget > 0)
            c = interp->pending_head;
        if (c) {
            budget--;
            interp->pending_head = c->next;
            if (!c->next)
                interp->pending_tail = NULL;
        } else if (!interp->pending_head || interp->main_ts != ts) {
            atomic_fetch_and(&ts->breaker, ~BREAKER_PENDING);
        }
        rank_unlock(&interp->mutex, RANK_INTERP);
        if (!c)
            return TETHER_OK;
        interp_ref(interp);
        int rc = c->fn(c->arg);
        plugin_unpin(c->pin, PLUGIN_PIN_HOLD);
        t_free(c);
        if (ts_current() != ts) {
            /* Detached by the call: its state may be gone. */
            int fin = atomic_load(&interp->finalizing);
            interp_unref(interp);
            if (fin)
                return err_set(TETHER_EFINALIZING, "tether_checkpoint",
                               "a pending call finalized the interpreter; "
                               "the thread is detached");
            return err_set(TETHER_ESTATE, "tether_checkpoint",
                           "a pending call left the thread detached");
        }
        interp_unref(interp);
        if (rc != TETHER_OK)
            return rc;
    }
}
