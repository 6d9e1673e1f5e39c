/*
 * gilstate.c - attaching threads: ensure/release, save/restore, the eval
 * breaker (tether_checkpoint), asynchronous exceptions, blocking calls and
 * pending calls.
 *
 * The eval breaker is one atomic word per thread state (BRK_* bits).  Other
 * threads only ever set bits in it (with interp->mutex held, so a bit and
 * the data it announces are published together); the owner clears them.
 * With nothing pending, tether_checkpoint is a TLS read and one relaxed
 * load.
 */
#include <string.h>

#include "alloc.h"
#include "delay.h"
#include "annotate.h"
#include "lockrank.h"
#include "error.h"
#include "handle.h"
#include "hooks.h"
#include "internal.h"
#include "platform.h"
#include "plugin.h"

/* Ensure tokens are os->tok after the ensure: [ 40 OS-thread serial |
   24 nesting level ] (see struct osthread). */
#define TOKEN_LEVEL_MASK ((1u << TOKEN_LEVEL_BITS) - 1)

static int finalizing(struct tstate *ts)
{
    return atomic_load_explicit(&ts->interp->finalizing, memory_order_acquire);
}

/* Moves the calling thread from `from` to `to`, both of this OS thread.
   With one GIL for both, only the bookkeeping changes hands. */
static int ts_switch(struct tstate *from, struct tstate *to, int urgent)
{
    struct gil *g = to->interp->gil;
    if (from->interp->gil != g || finalizing(to)) {
        ts_detach(from);
        return ts_attach(to, urgent);
    }
    from->attached = 0;
    to->attached = 1;
    to->os->current = to;
    ann_happens_before(&to->interp); /* published as holder: see took() */
    atomic_store_explicit(&g->holder, to, memory_order_release);
    g->last_holder = to;
    return TETHER_OK;
}

/* ---- ensure / release --------------------------------------------------- */

/* Counts outstanding ensure frames for the TETHER_DEBUG report; only the
   owner writes, so a load and a store do (no locked instruction). */
static void ensures_add(struct tstate *ts, uint32_t n)
{
    atomic_store_explicit(&ts->ensures,
                          atomic_load_explicit(&ts->ensures, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* Records an ensure that attached `ts` (detaching `prev`, if any). */
static int push_frame(struct osthread *os, struct tstate *ts,
                      struct tstate *prev, tether_gilstate *out)
{
    os->frames[os->depth++] = (struct frame){ts, prev, ++os->tok};
    ensures_add(ts, 1);
    *out = os->tok;
    return TETHER_OK;
}

/* The state the calling thread uses for interp handle `h`, created on first
   use.  Returns TETHER_OK, or TETHER_EBADHANDLE/EFINALIZING/ENOMEM.  A bad
   handle is the caller's misuse unless `internal` (the library's own
   ensure of a callback whose interpreter is gone). */
static int state_for(struct osthread *os, tether_interp h, int internal,
                     struct tstate **out)
{
    static const char fn[] = "tether_ensure";
    struct tstate *ts = ts_cached(os, h);
    if (ts) {
        if (finalizing(ts) && !ts->attached) {
            if (!os_refers(os, ts)) /* an outer frame may still need it */
                ts_forget(os, ts);
            return err_set(TETHER_EFINALIZING, fn, "the interpreter is finalizing");
        }
        *out = ts;
        return TETHER_OK;
    }
    struct interp *interp = interp_get(h);
    if (!interp && internal)
        return err_set(TETHER_EBADHANDLE, fn, "the interpreter (0x%llx) is gone",
                       (unsigned long long)h);
    if (!interp)
        return err_misuse(TETHER_EBADHANDLE, fn, "not an interp handle (0x%llx)",
                          (unsigned long long)h);
    int rc = TETHER_OK;
    if (atomic_load(&interp->finalizing))
        rc = err_set(TETHER_EFINALIZING, fn, "the interpreter is finalizing");
    else if (!(ts = ts_new(interp)))
        rc = err_set(TETHER_ENOMEM, fn, "out of memory for a thread state");
    else
        ts_bind(ts, os);
    interp_unref(interp);
    *out = ts;
    return rc;
}

T_NOINLINE static int ensure_slow(tether_interp h, int internal,
                                  tether_gilstate *out)
{
    static const char fn[] = "tether_ensure";
    struct osthread *os = os_get();
    if (!os)
        return err_set(TETHER_ENOMEM, fn, "out of memory for the thread record");
    if ((os->tok & TOKEN_LEVEL_MASK) == TOKEN_LEVEL_MASK)
        return err_misuse(TETHER_ESTATE, fn, "ensures nested %u deep",
                          TOKEN_LEVEL_MASK);
    if (os->depth == os->cap && os_grow_frames(os) != TETHER_OK)
        return err_set(TETHER_ENOMEM, fn, "out of memory for the ensure stack");
    struct tstate *ts, *cur = os->current;
    int rc = state_for(os, h, internal, &ts);
    if (rc != TETHER_OK)
        return rc;
    if (cur == ts) {
        *out = ++os->tok;
        return TETHER_OK;
    }
    rc = cur ? ts_switch(cur, ts, 0) : ts_attach(ts, 0);
    if (rc != TETHER_OK) {
        /* Put back what was detached; if that interpreter is finalizing
           too, the thread stays detached, as the message says. */
        if (cur && !cur->attached && ts_attach(cur, 1) != TETHER_OK)
            return err_set(rc, fn, "the interpreter is finalizing, and so is "
                           "the one the thread was attached to: it is detached");
        return err_set(rc, fn, "the interpreter is finalizing");
    }
    return push_frame(os, ts, cur, out);
}

/* The nested ensure of the interpreter already attached is one increment;
   anything else takes ensure_slow. */
static inline int ensure_with(tether_interp h, int internal,
                              tether_gilstate *out)
{
    struct osthread *os = t_os_fast();
    struct tstate *cur;
    if (os && (cur = os->current) && cur->interp->handle == h &&
        (os->tok & TOKEN_LEVEL_MASK) != TOKEN_LEVEL_MASK) {
        *out = ++os->tok;
        return TETHER_OK;
    }
    return ensure_slow(h, internal, out);
}

int tether_ensure(tether_interp h, tether_gilstate *out)
{
    if (!out)
        return err_misuse(TETHER_EINVAL, "tether_ensure", "out is NULL");
    return ensure_with(h, 0, out);
}

int ensure_internal(tether_interp h, tether_gilstate *out)
{
    return ensure_with(h, 1, out);
}

T_NOINLINE static int release_bad(struct osthread *os, tether_gilstate st)
{
    static const char fn[] = "tether_release";
    if (st == 0)
        return err_misuse(TETHER_EINVAL, fn, "the token is 0");
    if (!os || st >> TOKEN_LEVEL_BITS != os->tok >> TOKEN_LEVEL_BITS)
        return err_misuse(TETHER_ESTATE, fn, "the token belongs to another thread");
    if (st <= os->tok_floor)
        return err_misuse(TETHER_ESTATE, fn, "the token was made invalid by "
                          "tether_runtime_finalize on this thread");
    return err_misuse(TETHER_ESTATE, fn, "tokens must be released innermost "
                      "first, once");
}

/* 1 if the state of the calling thread's innermost ensure is detached by
   tether_save_thread (not by finalize). */
static int innermost_saved(const struct osthread *os)
{
    if (os->depth) {
        struct tstate *ts = os->frames[os->depth - 1].ts;
        return ts->saved && !finalizing(ts);
    }
    /* No frame: the state attached without one (the runtime's creator, a
       tether thread's own), one of the cached states. */
    for (struct tstate *ts = os->cache; ts; ts = ts->os_next)
        if (ts->saved && !finalizing(ts))
            return 1;
    return 0;
}

/* A nested ensure's token on a detached thread, or one finalize made
   invalid. */
T_NOINLINE static int release_nested_slow(struct osthread *os, tether_gilstate st)
{
    if (st <= os->tok_floor)
        return release_bad(os, st);
    if (innermost_saved(os))
        return err_misuse(TETHER_ESTATE, "tether_release",
                          "the thread state of this ensure is saved "
                          "(unbalanced tether_save_thread?)");
    os->tok--; /* detached by finalize: the release still pairs */
    return TETHER_OK;
}

/* Undoes an ensure that attached a state.  Its state is attached, or
   finalize detached it (and nothing else is attached); either way the
   state the ensure detached is attached again, or the call answers
   TETHER_EFINALIZING and the thread stays detached. */
T_NOINLINE static int release_frame(struct osthread *os)
{
    static const char fn[] = "tether_release";
    struct frame *f = &os->frames[os->depth - 1];
    if (os->current != f->ts && (os->current || !finalizing(f->ts)))
        return err_misuse(TETHER_ESTATE, fn,
                          "the thread state of this ensure is not attached "
                          "(unbalanced tether_save_thread?)");
    os->depth--;
    os->tok--;
    ensures_add(f->ts, (uint32_t)-1);
    int was_attached = f->ts->attached;
    if (!f->prev) {
        if (was_attached)
            ts_detach(f->ts);
        return TETHER_OK;
    }
    /* Detached by finalize: the outer state is taken back all the same
       (the thread held its GIL before this ensure; issue 12 F7). */
    int rc = was_attached ? ts_switch(f->ts, f->prev, 1) : ts_attach(f->prev, 1);
    return rc == TETHER_OK ? rc
                           : err_set(rc, fn, "the interpreter the ensure "
                                     "detached from is finalizing; the thread "
                                     "stays detached");
}

int tether_release(tether_gilstate st)
{
    struct osthread *os = t_os_fast();
    if (!os || st != os->tok || (st & TOKEN_LEVEL_MASK) == 0)
        return release_bad(os, st);
    if (os->depth && os->frames[os->depth - 1].tok == st)
        return release_frame(os);
    if (!os->current || st <= os->tok_floor)
        return release_nested_slow(os, st);
    os->tok--; /* a nested ensure took nothing */
    return TETHER_OK;
}

/* ---- save / restore ----------------------------------------------------- */

int tether_save_thread(tether_tstate *out)
{
    static const char fn[] = "tether_save_thread";
    if (!out)
        return err_misuse(TETHER_EINVAL, fn, "out is NULL");
    struct tstate *ts = ts_current();
    if (!ts)
        return err_misuse(TETHER_ESTATE, fn, "the calling thread is not attached");
    ts->saved = 1;
    ts_detach(ts);
    *out = (tether_tstate)(uintptr_t)ts;
    return TETHER_OK;
}

int breaker_after_block(struct tstate *ts)
{
    unsigned b = atomic_load_explicit(&ts->breaker, memory_order_acquire);
    if (b & BRK_FINAL) {
        ts_detach(ts);
        return TETHER_EFINALIZING;
    }
    if (b & BRK_ASYNC)
        return async_deliver(ts);
    return TETHER_OK;
}

int tether_restore_thread(tether_tstate tok)
{
    static const char fn[] = "tether_restore_thread";
    struct osthread *os = os_peek();
    struct tstate *ts = NULL;
    if (os && tok)
        for (ts = os->cache; ts && (uintptr_t)ts != tok; ts = ts->os_next)
            ;
    if (!ts && os && tok && os->evicted_tok == tok)
        return err_set(TETHER_EFINALIZING, fn, "the interpreter was finalized "
                       "while the state was saved; the thread stays detached");
    if (!ts || !ts->saved)
        return err_misuse(TETHER_ESTATE, fn, "not a state saved on this thread");
    if (os->current)
        return err_misuse(TETHER_ESTATE, fn, "the calling thread is attached");
    ts->saved = 0;
    int rc = ts_attach(ts, 1);
    if (rc != TETHER_OK)
        return err_set(rc, fn, "the interpreter is finalizing");
    return breaker_after_block(ts);
}

int tether_gil_held(void) { return ts_current() != NULL; }

/* ---- the eval breaker --------------------------------------------------- */

static int run_pending(struct tstate *ts);

T_NOINLINE static int checkpoint_slow(struct tstate *ts)
{
    unsigned b = atomic_load(&ts->breaker);
    if (b & BRK_FINAL) {
        ts_detach(ts);
        return err_set(TETHER_EFINALIZING, "tether_checkpoint",
                       "the interpreter is finalizing; the thread was detached");
    }
    if (b & BRK_DROP) {
        TETHER_DELAY_POINT("checkpoint.drop_requested");
        int rc = gil_yield(ts->interp->gil, ts);
        if (rc != TETHER_OK) {
            ts->attached = 0;
            ts->os->current = NULL;
            return err_set(rc, "tether_checkpoint",
                           "the interpreter is finalizing; the thread was detached");
        }
    }
    if (b & BRK_PENDING) {
        int rc = run_pending(ts);
        if (rc != TETHER_OK)
            return rc;
    }
    return breaker_after_block(ts);
}

int tether_checkpoint(void)
{
    struct osthread *os = t_os_fast();
    struct tstate *ts;
    if (!os || !(ts = os->current))
        return err_misuse(TETHER_ESTATE, "tether_checkpoint",
                          "the calling thread is not attached");
    if (atomic_load_explicit(&ts->breaker, memory_order_relaxed) == 0)
        return TETHER_OK;
    return checkpoint_slow(ts);
}

/* ---- asynchronous exceptions -------------------------------------------- */

int async_deliver(struct tstate *ts)
{
    struct interp *interp = ts->interp;
    void *old = NULL;
    tether_dtor old_dtor = NULL;
    int rc = TETHER_OK;
    rank_lock(&interp->mutex, RANK_INTERP);
    atomic_fetch_and(&ts->breaker, ~BRK_ASYNC);
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
    if (ts->defer == 0)
        breaker_signal(ts, BRK_ASYNC);
}

int tether_thread_raise(tether_thread h, int64_t code, void *payload,
                        tether_dtor dtor)
{
    static const char fn[] = "tether_thread_raise";
    struct thread *t = handle_get(h, HT_THREAD);
    if (!t)
        return err_misuse(TETHER_EBADHANDLE, fn, "not a thread handle (0x%llx)",
                          (unsigned long long)h);
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
    struct interp *interp = interp_open(h, "tether_raise_by_ident");
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
        atomic_fetch_or(&ts->breaker, BRK_ASYNC);
    rank_unlock(&ts->interp->mutex, RANK_INTERP);
    return rc;
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
    if (atomic_load(&ts->breaker) & (BRK_ASYNC | BRK_FINAL)) {
        set_ubf(ts, NULL, NULL);
        int rc = breaker_after_block(ts);
        if (rc != TETHER_OK)
            return rc;
        set_ubf(ts, ubf, ubf_arg);
    }
    /* fn may finalize the runtime on this thread, which forgets the
       thread's unreferenced cached states: `blocking` keeps this one until
       fn has returned (it is forgotten here instead). */
    ts->blocking++;
    ts_detach(ts);
    int result = fn(arg);
    set_ubf(ts, NULL, NULL);
    ts->blocking--;
    int rc = ts_attach(ts, 1);
    if (rc != TETHER_OK) {
        if (!os_refers(ts->os, ts))
            ts_forget(ts->os, ts);
        return err_set(rc, name, "the interpreter is finalizing");
    }
    rc = breaker_after_block(ts);
    return rc != TETHER_OK ? rc : result;
}

/* ---- pending calls ------------------------------------------------------ */

int tether_call_soon(tether_interp h, int (*fn)(void *), void *arg)
{
    static const char name[] = "tether_call_soon";
    if (!fn)
        return err_misuse(TETHER_EINVAL, name, "fn is NULL");
    struct interp *interp = interp_open(h, name);
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
        if (interp->pending_tail)
            interp->pending_tail->next = c;
        else
            interp->pending_head = c;
        interp->pending_tail = c;
        if (interp->main_ts)
            breaker_signal(interp->main_ts, BRK_PENDING);
        rank_unlock(&interp->mutex, RANK_INTERP);
    }
    handle_put(h);
    return rc;
}

/* Runs the calls that were queued when it began, on the interpreter's main
   thread, like CPython: a call that queues another (or itself) with
   tether_call_soon does not make this checkpoint run for ever; the new one
   waits for the next checkpoint, with BRK_PENDING left set.  Stops at the
   first failure, leaving the rest queued for the next checkpoint.

   A call may finalize the runtime, which detaches the thread and frees its
   state (`ts`): then this stops at once, touching neither `ts` nor, since
   a reference is held across the call, freed interpreter memory. */
static int run_pending(struct tstate *ts)
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
            atomic_fetch_and(&ts->breaker, ~BRK_PENDING);
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

/* ---- bindings ----------------------------------------------------------- */

int tether_interp_set_breaker_hook(tether_interp h, tether_breaker_fn fn,
                                   void *ud)
{
    struct interp *interp = interp_open(h, "tether_interp_set_breaker_hook");
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
    struct interp *interp = interp_open(h, fn);
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
