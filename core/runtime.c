/*
 * runtime.c - runtimes and interpreters: create, finalize, destroy, the
 * switch interval, the TETHER_DEBUG report.  The objects themselves, their
 * lookup and their lifetime are interp.c's; fork() is fork.c's.
 *
 * Finalize, in order (tether_runtime_finalize; tether_interp_destroy does
 * the same for one interpreter):
 *   1. detach the caller: for good from this runtime, and from another
 *      runtime until finalize returns (let_go, take_back);
 *   2. join every non-daemon thread, until none is left or the deadline;
 *   3. set `finalizing` on each interpreter and BREAKER_FINALIZING in every thread
 *      state's breaker; wake blocked waits, unblock functions, hooks;
 *   4. pass through each GIL once (gil_barrier): every thread that held
 *      it before has let go, and any later taker sees `finalizing`;
 *   5. report leaks (TETHER_DEBUG=1) and close the handles.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "annotate.h"
#include "delay.h"
#include "lockrank.h"
#include "error.h"
#include "handle.h"
#include "hooks.h"
#include "internal.h"
#include "platform.h"
#include "plugin.h"
#include "trace.h"
#include "tuning.h"

#define KNOWN_FLAGS (TETHER_CONFIG_PER_INTERP_GIL | TETHER_CONFIG_ABORT_ON_MISUSE)

uint32_t tether_abi_version(void) { return TETHER_ABI_VERSION; }

#define STR2(x) #x
#define STR(x) STR2(x)
const char *tether_version_string(void)
{
    return STR(TETHER_VERSION_MAJOR) "." STR(TETHER_VERSION_MINOR) "." STR(
        TETHER_VERSION_PATCH);
}

/* ---- create ------------------------------------------------------------- */

static int read_config(const tether_config *cfg, tether_config *c)
{
    static const char fn[] = "tether_runtime_create";
    memset(c, 0, sizeof *c);
    if (!cfg)
        return TETHER_OK;
    size_t min = offsetof(tether_config, flags) + sizeof cfg->flags;
    if (cfg->size < min)
        return err_misuse(TETHER_EINVAL, fn, "cfg->size (%zu) is too small; set "
                          "it to sizeof(tether_config)", cfg->size);
    memcpy(c, cfg, cfg->size < sizeof *c ? cfg->size : sizeof *c);
    if (c->flags & ~KNOWN_FLAGS)
        return err_misuse(TETHER_EINVAL, fn, "unknown flags 0x%x",
                          c->flags & ~KNOWN_FLAGS);
    if (c->switch_interval_us > MAX_SWITCH_US)
        return err_misuse(TETHER_EINVAL, fn, "switch interval %u us is over "
                          "%u us", c->switch_interval_us, MAX_SWITCH_US);
    return TETHER_OK;
}

int tether_runtime_create(const tether_config *cfg, tether_runtime *out)
{
    static const char fn[] = "tether_runtime_create";
    tether_config c;
    if (!out)
        return err_misuse(TETHER_EINVAL, fn, "out is NULL");
    int rc = read_config(cfg, &c);
    if (rc != TETHER_OK)
        return rc;
    if (ts_current())
        return err_misuse(TETHER_ESTATE, fn, "the calling thread already holds a GIL");
    fork_install();
    struct osthread *os = osthread_get();
    if (!os)
        return err_set(TETHER_ENOMEM, fn, "out of memory");
    alloc_runtime_add(1); /* undone by runtime_dtor */
    struct runtime *rt = runtime_new(&c);
    if (!rt) {
        alloc_runtime_add(-1);
        return err_set(TETHER_ENOMEM, fn, "out of memory");
    }
    rt->creator_serial = os->serial;
    struct tstate *ts = NULL;
    if (interp_new(rt, 1, &rt->main) != TETHER_OK || !(ts = ts_new(rt->main))) {
        if (rt->main)
            handle_close(rt->main->handle, HT_INTERP);
        handle_close(rt->handle, HT_RUNTIME);
        return err_set(TETHER_ENOMEM, fn, "out of memory");
    }
    rt->main_handle = rt->main->handle;
    trace_runtime_created(rt); /* TETHER_TRACE */
    ts_bind(ts, os);
    ts_attach(ts, 0); /* a new GIL is free */
    *out = rt->handle;
    return TETHER_OK;
}

int tether_interp_create(tether_runtime h, tether_interp *out)
{
    static const char fn[] = "tether_interp_create";
    if (!out)
        return err_misuse(TETHER_EINVAL, fn, "out is NULL");
    struct runtime *rt = runtime_get(h, fn);
    if (!rt)
        return TETHER_EBADHANDLE;
    struct interp *interp = NULL;
    int rc = TETHER_OK;
    if (atomic_load(&rt->finalizing))
        rc = err_set(TETHER_EFINALIZING, fn, "the runtime is finalizing");
    else if ((rc = interp_new(rt, 0, &interp)) != TETHER_OK)
        rc = err_set(rc, fn, rc == TETHER_EFINALIZING
                                 ? "the runtime is finalizing"
                                 : "out of memory");
    else
        *out = interp->handle;
    handle_put(h);
    return rc;
}

static int check_interval(const char *fn, uint32_t us)
{
    if (us == 0 || us > MAX_SWITCH_US)
        return err_misuse(TETHER_EINVAL, fn, "the interval must be 1..%u us, "
                          "not %u", MAX_SWITCH_US, us);
    return TETHER_OK;
}

int tether_set_switch_interval(tether_runtime h, uint32_t us)
{
    static const char fn[] = "tether_set_switch_interval";
    int rc = check_interval(fn, us);
    if (rc != TETHER_OK)
        return rc;
    struct runtime *rt = runtime_get(h, fn);
    if (!rt)
        return TETHER_EBADHANDLE;
    atomic_store(&rt->gil.interval_us, us);
    gil_interval_changed(&rt->gil);
    rank_lock(&rt->mutex, RANK_RUNTIME);
    for (struct interp *i = rt->interps; i; i = i->next) {
        atomic_store(&i->gil->interval_us, us);
        if (i->gil != &rt->gil)
            gil_interval_changed(i->gil); /* RUNTIME before GIL */
    }
    rank_unlock(&rt->mutex, RANK_RUNTIME);
    handle_put(h);
    return TETHER_OK;
}

int tether_get_switch_interval(tether_runtime h, uint32_t *out)
{
    static const char fn[] = "tether_get_switch_interval";
    if (!out)
        return err_misuse(TETHER_EINVAL, fn, "out is NULL");
    struct runtime *rt = runtime_get(h, fn);
    if (!rt)
        return TETHER_EBADHANDLE;
    *out = atomic_load(&rt->gil.interval_us);
    handle_put(h);
    return TETHER_OK;
}

/* ---- finalize ----------------------------------------------------------- */

/* Takes a reference to one non-daemon thread still registered, or NULL. */
static struct thread *next_nondaemon(struct interp *interp)
{
    struct thread *found = NULL;
    rank_lock(&interp->mutex, RANK_INTERP);
    for (struct thread *t = interp->threads; t; t = t->reg_next) {
        if (!t->daemon) {
            found = t;
            handle_ref(t->handle);
            break;
        }
    }
    rank_unlock(&interp->mutex, RANK_INTERP);
    return found;
}

/* Step 2 for one interpreter.  Returns TETHER_OK or TETHER_ETIMEDOUT. */
static int join_nondaemon(struct interp *interp, int64_t deadline)
{
    struct thread *t;
    while ((t = next_nondaemon(interp))) {
        int64_t left = deadline < 0 ? -1 : deadline - plat_now_ns();
        int rc = thread_join_obj(t, left < 0 && deadline >= 0 ? 0 : left);
        handle_put(t->handle);
        if (rc != TETHER_OK)
            return TETHER_ETIMEDOUT;
    }
    return TETHER_OK;
}

/* Step 3. */
static void mark_finalizing(struct interp *interp)
{
    atomic_store(&interp->finalizing, 1);
    rank_lock(&interp->mutex, RANK_INTERP);
    for (struct tstate *ts = interp->tstates; ts; ts = ts->next)
        breaker_signal(ts, BREAKER_FINALIZING);
    rank_unlock(&interp->mutex, RANK_INTERP);
    ts_pool_drain(interp); /* after the flag: no state comes back to it */
    breaker_unblock(interp);
    gil_wake_all(interp->gil);
}

/* Reports an open handle that belongs to `rt`, or to no runtime at all
   (locks, events, channels, callbacks); other runtimes' handles are theirs
   to report. */
static void report_handle(uint64_t h, int type, void *obj, const char *name,
                          uint64_t creator, void *ud)
{
    struct runtime *rt = ud;
    if (type == HT_RUNTIME || type == HT_INTERP || type == HT_PLUGIN)
        return;
    if (type == HT_THREAD) {
        if (((struct thread *)obj)->interp->rt != rt)
            return;
        name = ((struct thread *)obj)->name;
    }
    fprintf(stderr, "tether: TETHER_DEBUG: %s handle 0x%016llx%s%s%s still open, "
            "made by thread %llu\n", handle_type_name(type),
            (unsigned long long)h, name ? " \"" : "", name ? name : "",
            name ? "\"" : "", (unsigned long long)creator);
}

static void report_ensures(struct interp *interp)
{
    rank_lock(&interp->mutex, RANK_INTERP);
    for (struct tstate *ts = interp->tstates; ts; ts = ts->next) {
        unsigned n = atomic_load(&ts->ensures);
        if (n)
            fprintf(stderr, "tether: TETHER_DEBUG: thread %llu never released "
                    "%u ensure(s) of interp 0x%016llx\n",
                    (unsigned long long)ts->ident, n,
                    (unsigned long long)interp->handle);
    }
    rank_unlock(&interp->mutex, RANK_INTERP);
}

/* The innermost token the calling thread got while a state of `rt` was
   attached (the owner runs: struct owner_run), or else that an ensure
   frame's ensure detached a state of `rt` to attach another: the tokens
   before that frame's (frames[i].tok - 1).  The innermost of these, or 0.
   A token got while the state was saved or blocked, attached to another
   runtime, is not `rt`'s, nor one at the level of a token of `rt` that
   was released before it was got. */
static uint64_t innermost_token_of(const struct osthread *os,
                                   const struct runtime *rt)
{
    if (os->wild_at && os->wild_at <= os->tok)
        return os->tok; /* past the bound: every runtime's (tuning.h) */
    uint64_t floor = 0, top = os->tok; /* the innermost token of run i */
    for (uint32_t i = os->nruns; i-- > 0;) {
        const struct owner_run *r = &os->runs[i];
        if (r->start <= top && r->rt == rt->handle) {
            floor = top;
            break;
        }
        if (r->start - 1 < top)
            top = r->start - 1; /* (a stale run leaves it at os->tok) */
    }
    for (uint32_t i = os->depth; i-- > 0;) {
        const struct frame *f = &os->frames[i];
        if (f->prev && f->prev->interp->rt == rt) {
            if (f->tok - 1 > floor)
                floor = f->tok - 1;
            break;
        }
    }
    return floor;
}

/* tether_runtime_finalize on this thread: every token the thread got while
   attached to `rt`, and every outer one, becomes invalid (tok_floor), and
   their ensure frames are dropped; a state of `rt` that is attached is
   detached.  Tokens got later, attached to another runtime, stay valid:
   the release of the outermost of them answers EFINALIZING, since the
   state it would re-attach is `rt`'s (tether.h, tether_release). */
static void invalidate_tokens(struct osthread *os, struct runtime *rt)
{
    uint64_t floor = innermost_token_of(os, rt); /* (before the detach) */
    struct tstate *cur = os->current;
    if (cur && cur->interp->rt == rt)
        ts_detach(cur);
    if (floor <= os->tok_floor)
        return; /* (its tokens here, if any, are invalid already) */
    uint32_t drop = 0;
    while (drop < os->depth && os->frames[drop].tok <= floor)
        drop++;
    for (uint32_t i = drop; i < os->depth; i++)
        os->frames[i - drop] = os->frames[i];
    os->depth -= drop;
    os->tok_floor = floor; /* tether_release refuses these tokens */
    /* The runs whose tokens are all invalid now say nothing more, and
       never go stale (os->tok stays at or above the floor): dropped, or
       they would fill the stack for good, one or more per finalize. */
    uint32_t gone = 0;
    while (gone + 1 < os->nruns && os->runs[gone + 1].start <= floor + 1)
        gone++;
    for (uint32_t i = gone; i < os->nruns; i++)
        os->runs[i - gone] = os->runs[i];
    os->nruns -= gone;
    if (os->wild_at && os->wild_at <= floor)
        os->wild_at = floor + 1; /* (ends when the tokens above end) */
    osthread_shrink_frames(os);
    os_refresh(os); /* the fast release's floor (internal.h) */
}

/* Detaches the caller from `rt` (finalize) and forgets its cached states
   there (of `only`, for a destroy, which never runs on a thread attached
   to `only` and leaves its tokens as they are: their releases answer
   EFINALIZING where they would re-attach a state of `only`). */
static void detach_caller(struct runtime *rt, struct interp *only)
{
    struct osthread *os = osthread_peek();
    if (!os)
        return;
    if (!only)
        invalidate_tokens(os, rt);
    ts_uncache_finalized(os, rt, only);
}

/* Finalize and destroy wait for threads and for GILs, so the caller holds
   no GIL while they wait: a thread waited for, or a finalize running on
   another thread, may need the one it holds (two runtimes finalized
   crosswise, each by a thread attached to the other, deadlocked), and
   waiting detached leaves an exception raised at the caller pending for
   its next checkpoint, as finalize is none.  The state is kept meanwhile
   (ts_block): a plugin's fini run on this thread may finalize its runtime.
   Returns the state detached, or NULL. */
static struct tstate *let_go(uint64_t *mark)
{
    struct tstate *cur = ts_current();
    if (cur)
        *mark = ts_block(cur);
    return cur;
}

/* Attaches `cur` (let_go's, with its mark) again; returns `rc`, or
   ts_unblock's error. */
static int take_back(struct tstate *cur, uint64_t mark, const char *fn, int rc)
{
    int back = cur ? ts_unblock(cur, mark) : TETHER_OK;
    if (back == TETHER_ESTATE)
        return err_misuse(back, fn, "code run on this thread meanwhile (a "
                          "plugin's fini) left a tether_ensure unreleased; "
                          "the thread stays attached through it");
    if (back != TETHER_OK)
        return err_set(back, fn, "the caller's interpreter is finalizing; "
                       "the caller stays detached");
    return rc;
}

/* Steps 3-4 for a set of interpreters sharing the runtime. */
static int stop_interps(struct interp **v, size_t n, int64_t deadline)
{
    int rc = TETHER_OK;
    for (size_t i = 0; i < n; i++) {
        mark_finalizing(v[i]);
        pending_drop(v[i]); /* no checkpoint of it runs them any more */
    }
    TETHER_DELAY_POINT("finalize.marked");
    for (size_t i = 0; i < n; i++) {
        int seen = 0; /* each GIL once */
        for (size_t j = 0; j < i; j++)
            seen |= v[j]->gil == v[i]->gil;
        if (!seen && gil_barrier(v[i]->gil, deadline) != 0)
            rc = TETHER_ETIMEDOUT;
    }
    return rc;
}

/* A snapshot of the runtime's interpreters (referenced), or NULL. */
static struct interp **snapshot(struct runtime *rt, size_t *n)
{
    rank_lock(&rt->mutex, RANK_RUNTIME);
    size_t count = 0;
    for (struct interp *i = rt->interps; i; i = i->next)
        count++;
    struct interp **v = t_calloc(count ? count : 1, sizeof *v);
    if (v) {
        count = 0;
        for (struct interp *i = rt->interps; i; i = i->next) {
            /* Skip an interpreter destroyed already (its handle closed),
               but not one whose tether_interp_destroy is still running:
               finalize closes its handle too, before it returns, as it
               promises (that destroy's own close then finds it closed).
               The reference handle_get takes (lock-free) is the snapshot's,
               dropped by interp_unref outside this mutex. */
            if (handle_get(i->handle, HT_INTERP))
                v[count++] = i;
        }
    }
    rank_unlock(&rt->mutex, RANK_RUNTIME);
    *n = count;
    return v;
}

/* 1 if the calling thread was started by tether_thread_start in `rt` (in
   `only`, when set), whether it is attached, detached (inside
   TETHER_BEGIN_ALLOW_THREADS) or attached to another interpreter through
   an ensure: finalize would join itself, and would free the state its
   bootstrap owns. */
static int caller_is_our_thread(struct runtime *rt, struct interp *only)
{
    struct osthread *os = osthread_peek();
    struct tstate *boot = os ? os->boot : NULL;
    return boot && boot->interp->rt == rt && (!only || boot->interp == only);
}

int tether_runtime_finalize(tether_runtime h, int64_t timeout_ns)
{
    static const char fn[] = "tether_runtime_finalize";
    struct runtime *rt = runtime_get(h, fn);
    if (!rt)
        return TETHER_EBADHANDLE;
    int64_t deadline = plat_deadline(timeout_ns);
    if (caller_is_our_thread(rt, NULL)) {
        handle_put(h);
        return err_misuse(TETHER_ESTATE, fn, "a thread the runtime started "
                          "cannot finalize it");
    }
    if (atomic_exchange(&rt->finalizing, 1)) {
        handle_put(h);
        return err_misuse(TETHER_ESTATE, fn, "the runtime is already finalizing");
    }
    /* Taken after the flag is set (a tether_interp_create either is in it
       or sees the flag) and before anything changes, so that running out
       of memory here changes nothing. */
    size_t n;
    struct interp **v = snapshot(rt, &n);
    if (!v) {
        atomic_store(&rt->finalizing, 0);
        handle_put(h);
        return err_set(TETHER_ENOMEM, fn, "out of memory; nothing changed");
    }
    int64_t tp = TRACE_T0(); /* the phases of finalize, when traced */
    detach_caller(rt, NULL);
    uint64_t mark = 0;
    struct tstate *cur = let_go(&mark); /* attached to another runtime */
    TETHER_DELAY_POINT("finalize.detached");
    int rc = TETHER_OK;
    for (size_t i = 0; i < n && rc == TETHER_OK; i++)
        rc = join_nondaemon(v[i], deadline);
    TETHER_DELAY_POINT("finalize.joined");
    TRACE(trace_finalize_phase(rt, tp, "join non-daemon threads"));
    tp = TRACE_T0();
    if (stop_interps(v, n, deadline) != TETHER_OK)
        rc = TETHER_ETIMEDOUT;
    TETHER_DELAY_POINT("finalize.stopped");
    TRACE(trace_finalize_phase(rt, tp, "stop the interpreters"));
    tp = TRACE_T0();
    int debug = err_debug_enabled();
    plugin_finalize_runtime(h, deadline, debug);
    TRACE(trace_finalize_phase(rt, tp, "unload plugins"));
    trace_runtime_finalized(rt); /* writes its trace, if it has one */
    if (debug) {
        handle_foreach_open(report_handle, rt);
        for (size_t i = 0; i < n; i++)
            report_ensures(v[i]);
    }
    for (size_t i = 0; i < n; i++) {
        handle_close(v[i]->handle, HT_INTERP);
        interp_unref(v[i]);
    }
    t_free(v);
    handle_close(h, HT_RUNTIME);
    handle_put(h);
    if (rc != TETHER_OK)
        err_set(rc, fn, "threads were still running at the deadline; they "
                "fail at their next checkpoint");
    return take_back(cur, mark, fn, rc);
}

int tether_interp_destroy(tether_interp h, int64_t timeout_ns)
{
    static const char fn[] = "tether_interp_destroy";
    struct interp *interp = interp_lookup_open(h, fn);
    if (!interp)
        return TETHER_EBADHANDLE;
    int rc = TETHER_OK;
    struct tstate *cur = ts_current();
    if (interp->is_main)
        rc = err_misuse(TETHER_EINVAL, fn, "the main interpreter is destroyed "
                        "by tether_runtime_finalize");
    else if (cur && cur->interp == interp)
        rc = err_misuse(TETHER_ESTATE, fn, "the calling thread is attached to it");
    else if (caller_is_our_thread(interp->rt, interp))
        rc = err_misuse(TETHER_ESTATE, fn, "a thread the interpreter started "
                        "cannot destroy it");
    else if (atomic_exchange(&interp->destroying, 1))
        rc = err_misuse(TETHER_ESTATE, fn, "another thread is destroying it");
    if (rc != TETHER_OK) {
        handle_put(h);
        return rc;
    }
    int64_t deadline = plat_deadline(timeout_ns);
    uint64_t mark = 0;
    let_go(&mark); /* detaches `cur`; the GIL may be shared with `interp` */
    rc = join_nondaemon(interp, deadline);
    if (stop_interps(&interp, 1, deadline) != TETHER_OK)
        rc = TETHER_ETIMEDOUT;
    TETHER_DELAY_POINT("destroy.stopped");
    detach_caller(interp->rt, interp);
    /* A tether_runtime_finalize running meanwhile may have closed it
       already (snapshot): then this close answers EBADHANDLE, harmlessly. */
    handle_close(h, HT_INTERP);
    handle_put(h);
    if (rc != TETHER_OK)
        err_set(rc, fn, "threads were still running at the deadline");
    return take_back(cur, mark, fn, rc);
}
