/*
 * userdata.c - what hosts and bindings hang on interpreters and threads:
 * the breaker hook of an interpreter, the userdata of a thread state; and
 * the counters of an interpreter's GIL.
 */
#include <string.h>

#include "annotate.h"
#include "error.h"
#include "handle.h"
#include "internal.h"

int tether_interp_set_breaker_hook(tether_interp h, tether_breaker_fn fn,
                                   void *ud)
{
    struct interp *interp = interp_lookup_open(h, "tether_interp_set_breaker_hook");
    if (!interp)
        return TETHER_EBADHANDLE;
    atomic_store(&interp->hook_ud, ud);
    /* For helgrind and DRD: a thread that loads `fn` and calls it sees what
       the caller set up for it (the seq_cst store and load pair). */
    ann_happens_before(&interp->hook);
    atomic_store(&interp->hook, fn);
    handle_put(h);
    return TETHER_OK;
}

int tether_set_thread_userdata(void *ud)
{
    struct tstate *ts = ts_current();
    if (!ts)
        return err_misuse(TETHER_ESTATE, "tether_set_thread_userdata",
                          "the calling thread is not attached");
    /* For helgrind and DRD: the release store and the breaker hook's
       acquire load (gil.c request_drop, hook_if_holder) pair up. */
    ann_happens_before(&ts->userdata);
    atomic_store_explicit(&ts->userdata, ud, memory_order_release);
    return TETHER_OK;
}

int tether_get_thread_userdata(void **out)
{
    static const char fn[] = "tether_get_thread_userdata";
    if (!out)
        return err_misuse(TETHER_EINVAL, fn, "out is NULL");
    struct tstate *ts = ts_current();
    if (!ts)
        return err_misuse(TETHER_ESTATE, fn, "the calling thread is not attached");
    *out = atomic_load_explicit(&ts->userdata, memory_order_relaxed);
    return TETHER_OK;
}

int tether_gil_stats_get(tether_interp h, tether_gil_stats *out)
{
    static const char fn[] = "tether_gil_stats_get";
    if (!out || out->size < sizeof(size_t))
        return err_misuse(TETHER_EINVAL, fn, "out is NULL or out->size is not set");
    struct interp *interp = interp_lookup_open(h, fn);
    if (!interp)
        return TETHER_EBADHANDLE;
    struct gil *g = interp->gil;
    tether_gil_stats s = {sizeof s,
                          atomic_load(&g->acquisitions),
                          atomic_load(&g->switches),
                          atomic_load(&g->forced_drops),
                          atomic_load(&g->wait_ns_total),
                          atomic_load(&g->wait_ns_max)};
    size_t n = out->size < sizeof s ? out->size : sizeof s;
    memcpy((char *)out + sizeof(size_t), (char *)&s + sizeof(size_t),
           n - sizeof(size_t));
    handle_put(h);
    return TETHER_OK;
}
