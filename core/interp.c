/*
 * interp.c - the registry of runtimes and interpreters: the objects, the
 * list of live runtimes, lookup by handle and references.
 *
 * Lifetime.  Memory is reference-counted through the handle table: a
 * runtime is referenced by its handle and by each interpreter; an
 * interpreter by its handle, each thread state, each thread object and each
 * lookup in progress.  Finalize (runtime.c) closes the handles; the memory
 * goes with the last reference, so a daemon or foreign thread that wakes up
 * late still unlinks itself from valid memory.
 *
 * This file makes and frees the memory and finds it; starting and stopping
 * what runs in it (tether_runtime_create/finalize, tether_interp_create/
 * destroy) is runtime.c's, above the thread states.
 */
#include <string.h>

#include "alloc.h"
#include "annotate.h"
#include "delay.h"
#include "error.h"
#include "handle.h"
#include "internal.h"
#include "lockrank.h"
#include "pluginreg.h"
#include "tuning.h"

/* g_rt_lock (rank 0) protects g_runtimes, the runtimes whose memory is
   alive, for fork(). */
static pthread_mutex_t g_rt_lock = PTHREAD_MUTEX_INITIALIZER;
static struct runtime *g_runtimes;

/* ---- lookup and references ----------------------------------------------- */

void interp_ref(struct interp *interp) { handle_ref(interp->handle); }
void interp_unref(struct interp *interp) { handle_put(interp->handle); }
struct interp *interp_lookup_any(tether_interp h) { return handle_get_any(h, HT_INTERP); }

struct interp *interp_lookup_open(tether_interp h, const char *fn)
{
    return handle_get_or_misuse(h, HT_INTERP, fn);
}

/* Looks a runtime handle up (a new reference), or sets the last error. */
struct runtime *runtime_get(tether_runtime h, const char *fn)
{
    return handle_get_or_misuse(h, HT_RUNTIME, fn);
}

int tether_runtime_main_interp(tether_runtime h, tether_interp *out)
{
    static const char fn[] = "tether_runtime_main_interp";
    if (!out)
        return err_misuse(TETHER_EINVAL, fn, "out is NULL");
    struct runtime *rt = runtime_get(h, fn);
    if (!rt)
        return TETHER_EBADHANDLE;
    /* Not rt->main->handle: a finalize on another thread may have freed
       the interpreter since runtime_get (the runtime itself stays). */
    TETHER_DELAY_POINT("runtime.main_interp.got");
    *out = rt->main_handle;
    handle_put(h);
    return TETHER_OK;
}

/* ---- memory ------------------------------------------------------------- */

static void runtime_dtor(void *p)
{
    struct runtime *rt = p;
    rank_lock(&g_rt_lock, RANK_RT_LIST);
    for (struct runtime **q = &g_runtimes; *q; q = &(*q)->next) {
        if (*q == rt) {
            *q = rt->next;
            break;
        }
    }
    rank_unlock(&g_rt_lock, RANK_RT_LIST);
    gil_destroy(&rt->gil);
    pthread_mutex_destroy(&rt->mutex);
    t_free(rt);
    alloc_runtime_add(-1);
}

static void interp_dtor(void *p)
{
    struct interp *interp = p;
    struct runtime *rt = interp->rt;
    rank_lock(&rt->mutex, RANK_RUNTIME);
    for (struct interp **q = &rt->interps; *q; q = &(*q)->next) {
        if (*q == interp) {
            *q = interp->next;
            break;
        }
    }
    rank_unlock(&rt->mutex, RANK_RUNTIME);
    while (interp->pending_head) {
        struct pending_call *c = interp->pending_head;
        interp->pending_head = c->next;
        plugin_unpin(c->pin, PLUGIN_PIN_HOLD);
        t_free(c);
    }
    ts_pool_drain(interp); /* empty once finalized (mark_finalizing) */
    if (interp->gil == &interp->own_gil)
        gil_destroy(&interp->own_gil);
    pthread_mutex_destroy(&interp->mutex);
    uint64_t rth = rt->handle;
    t_free(interp);
    handle_put(rth);
}

/* A new runtime with the settings of `c`, in the list of live runtimes;
   NULL when out of memory. */
struct runtime *runtime_new(const tether_config *c)
{
    struct runtime *rt = t_calloc(1, sizeof *rt);
    if (!rt)
        return NULL;
    rt->flags = c->flags;
    rt->excepthook = c->excepthook;
    rt->excepthook_ud = c->excepthook_ud;
    ann_atomic(rt->finalizing); /* atomics only, as in interp_new */
    ann_atomic(rt->thread_names);
    pthread_mutex_init(&rt->mutex, NULL);
    gil_init(&rt->gil, c->switch_interval_us ? c->switch_interval_us
                                              : DEFAULT_SWITCH_US);
    if (handle_new(HT_RUNTIME, rt, runtime_dtor, NULL, &rt->handle) != TETHER_OK) {
        gil_destroy(&rt->gil);
        pthread_mutex_destroy(&rt->mutex);
        t_free(rt);
        return NULL;
    }
    rank_lock(&g_rt_lock, RANK_RT_LIST);
    rt->next = g_runtimes;
    g_runtimes = rt;
    rank_unlock(&g_rt_lock, RANK_RT_LIST);
    return rt;
}

/* A new interpreter of `rt`, linked into its list (refused with
   TETHER_EFINALIZING once `rt` is finalizing, unless it is the main one). */
int interp_new(struct runtime *rt, int is_main, struct interp **out)
{
    struct interp *interp = t_calloc(1, sizeof *interp);
    if (!interp)
        return TETHER_ENOMEM;
    interp->rt = rt;
    interp->rt_handle = rt->handle;
    interp->is_main = is_main;
    /* For helgrind and DRD (annotate.h): flags read and written only
       through C11 atomics, by any thread. */
    ann_atomic(interp->finalizing);
    ann_atomic(interp->destroying);
    ann_atomic(interp->hook);
    ann_atomic(interp->hook_ud);
    pthread_mutex_init(&interp->mutex, NULL);
    if (rt->flags & TETHER_CONFIG_PER_INTERP_GIL) {
        gil_init(&interp->own_gil, atomic_load(&rt->gil.interval_us));
        interp->gil = &interp->own_gil;
    } else {
        interp->gil = &rt->gil;
    }
    if (handle_new(HT_INTERP, interp, interp_dtor, is_main ? "main" : NULL,
                   &interp->handle) != TETHER_OK) {
        if (interp->gil == &interp->own_gil)
            gil_destroy(&interp->own_gil);
        pthread_mutex_destroy(&interp->mutex);
        t_free(interp);
        return TETHER_ENOMEM;
    }
    handle_ref(rt->handle);
    TETHER_DELAY_POINT("interp.create.before_link");
    /* Checked again under the mutex: finalize sets the flag before it
       takes its snapshot of the list under the same mutex, so a new
       interpreter is either in that snapshot or refused here. */
    rank_lock(&rt->mutex, RANK_RUNTIME);
    int fin = !is_main && atomic_load(&rt->finalizing);
    if (!fin) {
        interp->next = rt->interps;
        rt->interps = interp;
    }
    rank_unlock(&rt->mutex, RANK_RUNTIME);
    if (fin) {
        handle_close(interp->handle, HT_INTERP); /* interp_dtor undoes it */
        return TETHER_EFINALIZING;
    }
    *out = interp;
    return TETHER_OK;
}

/* ---- fork --------------------------------------------------------------- */

/* Every lock of the registry is taken, in rank order (the list, each
   runtime, each interpreter, each GIL), so that the child inherits the
   registry consistent. */
void registry_atfork_prepare(void)
{
    pthread_mutex_lock(&g_rt_lock);
    for (struct runtime *rt = g_runtimes; rt; rt = rt->next) {
        pthread_mutex_lock(&rt->mutex);
        for (struct interp *i = rt->interps; i; i = i->next)
            pthread_mutex_lock(&i->mutex);
        gil_atfork_prepare(&rt->gil);
        for (struct interp *i = rt->interps; i; i = i->next)
            if (i->gil == &i->own_gil)
                gil_atfork_prepare(&i->own_gil);
    }
}

void registry_atfork_parent(void)
{
    for (struct runtime *rt = g_runtimes; rt; rt = rt->next) {
        for (struct interp *i = rt->interps; i; i = i->next)
            if (i->gil == &i->own_gil)
                gil_atfork_parent(&i->own_gil);
        gil_atfork_parent(&rt->gil);
        for (struct interp *i = rt->interps; i; i = i->next)
            pthread_mutex_unlock(&i->mutex);
        pthread_mutex_unlock(&rt->mutex);
    }
    pthread_mutex_unlock(&g_rt_lock);
}

void registry_atfork_child(void)
{
    struct osthread *self = osthread_peek();
    struct tstate *survivor = self ? self->current : NULL;
    for (struct runtime *rt = g_runtimes; rt; rt = rt->next) {
        gil_atfork_child(&rt->gil, survivor);
        for (struct interp *i = rt->interps; i; i = i->next) {
            if (i->gil == &i->own_gil)
                gil_atfork_child(&i->own_gil, survivor);
            pthread_mutex_unlock(&i->mutex);
        }
        pthread_mutex_unlock(&rt->mutex);
    }
    pthread_mutex_unlock(&g_rt_lock);
}

void registry_foreach_interp_locked(void (*fn)(struct interp *, void *), void *ud)
{
    for (struct runtime *rt = g_runtimes; rt; rt = rt->next)
        for (struct interp *i = rt->interps; i; i = i->next)
            fn(i, ud);
}
