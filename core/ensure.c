/*
 * ensure.c - tether_ensure and tether_release: attaching any thread to an
 * interpreter, nested, on an ensure stack of the calling thread's record.
 *
 * The nested ensure of the interpreter already attached is one increment
 * of the thread's token; the first ensure of a thread makes its record
 * (tstate.c) and a thread state for the interpreter, cached for the next
 * time.  Moving between two interpreters of one GIL only changes who the
 * holder is.
 */
#include <stdint.h>

#include "annotate.h"
#include "error.h"
#include "hooks.h"
#include "internal.h"
#include "trace.h"

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
    os_set_current(to->os, to);
    ann_happens_before(&to->interp); /* published as holder: see note_holder() */
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
    uint64_t floor = os_note_owner(os); /* the frame's own token is its state's */
    ++os->tok;
    os->frames[os->depth++] = (struct frame){ts, prev, os->tok};
    os_refresh_attached(os, floor);
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
            if (!osthread_refers(os, ts)) /* an outer frame may still need it */
                ts_uncache_and_free(os, ts);
            return err_set(TETHER_EFINALIZING, fn, "the interpreter is finalizing");
        }
        *out = ts;
        return TETHER_OK;
    }
    struct interp *interp = interp_lookup_any(h);
    if (!interp && internal)
        return err_set(TETHER_EBADHANDLE, fn, "the interpreter (0x%llx) is gone",
                       (unsigned long long)h);
    if (!interp)
        return err_misuse(TETHER_EBADHANDLE, fn, "not an interp handle (0x%llx)",
                          (unsigned long long)h);
    /* The lookup's reference becomes the state's (ts_new_taking): a
       pooled state then costs no allocation and one handle reference. */
    if (atomic_load(&interp->finalizing)) {
        interp_unref(interp);
        return err_set(TETHER_EFINALIZING, fn, "the interpreter is finalizing");
    }
    if (!(ts = ts_new_taking(interp, os))) {
        interp_unref(interp);
        return err_set(TETHER_ENOMEM, fn, "out of memory for a thread state");
    }
    *out = ts;
    return TETHER_OK;
}

/* ts_attach for ensure_slow, which pushes a frame right after: the
   record's fast-path fields are refreshed once, by push_frame, rather
   than once here and again there.  Nothing reads them in between. */
static int attach_unrefreshed(struct osthread *os, struct tstate *ts)
{
    int rc = gil_take(ts->interp->gil, ts, 0);
    if (rc == TETHER_OK) {
        ts->attached = 1;
        os->current = ts;
    }
    return rc;
}

T_NOINLINE static int ensure_slow(tether_interp h, int internal,
                                  tether_gilstate *out)
{
    static const char fn[] = "tether_ensure";
    struct osthread *os = osthread_get();
    if (!os)
        return err_set(TETHER_ENOMEM, fn, "out of memory for the thread record");
    if ((os->tok & TOKEN_LEVEL_MASK) == TOKEN_LEVEL_MASK)
        return err_misuse(TETHER_ESTATE, fn, "ensures nested %u deep",
                          TOKEN_LEVEL_MASK);
    if (os->depth == os->cap && osthread_grow_frames(os) != TETHER_OK)
        return err_set(TETHER_ENOMEM, fn, "out of memory for the ensure stack");
    struct tstate *ts = NULL, *cur = os->current;
    int rc = state_for(os, h, internal, &ts);
    if (rc != TETHER_OK)
        return rc;
    if (cur == ts) {
        *out = ++os->tok;
        return TETHER_OK;
    }
    rc = cur ? ts_switch(cur, ts, 0) : attach_unrefreshed(os, ts);
    if (rc != TETHER_OK) {
        /* Put back what was detached; if that interpreter is finalizing
           too, the thread stays detached, as the message says. */
        if (cur && !cur->attached && ts_attach(cur, 1) != TETHER_OK)
            return err_set(rc, fn, "the interpreter is finalizing, and so is "
                           "the one the thread was attached to: it is detached");
        return err_set(rc, fn, "the interpreter is finalizing");
    }
    TRACE(trace_ensure(ts));
    /* A new use of it begins, unless it was in use already: paused, or
       named by a frame (its tokens began before: tstate.came_at). */
    if (!ts_paused(ts) && !osthread_in_frames(os, ts))
        ts->came_at = os->tok;
    return push_frame(os, ts, cur, out);
}

/* The nested ensure of the interpreter already attached is one increment;
   anything else takes ensure_slow.  os->cur_h is the attached
   interpreter's handle, and os->ens_limit the token at which the nesting
   level is full (0 while detached, so that no handle passes; os_refresh):
   two compares cover "attached, to this interpreter, with room". */
static inline int ensure_with(tether_interp h, int internal,
                              tether_gilstate *out)
{
    struct osthread *os = t_os;
    if (__builtin_expect(os != NULL, 1)) {
        uint64_t tok = os->tok;
        if (__builtin_expect(h == os->cur_h && tok < os->ens_limit, 1)) {
            *out = os->tok = tok + 1;
            return TETHER_OK;
        }
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

/* 1 if the state the nested token `st` was got on is detached by
   tether_save_thread or by a blocking section (ts_block: a release inside
   tether_call_blocking's fn), not by finalize. */
static int innermost_paused(const struct osthread *os, tether_gilstate st)
{
    if (os->depth) {
        struct tstate *ts = os->frames[os->depth - 1].ts;
        return ts_paused(ts) && !finalizing(ts);
    }
    /* No frame: the state attached without one (the runtime's creator, a
       tether thread's own) whose use spans `st`; another state saved
       before that one's use began is not it. */
    for (struct tstate *ts = os->cache; ts; ts = ts->os_next)
        if (ts_paused(ts) && !finalizing(ts) &&
            st > ts->came_at && st <= ts->left_at)
            return 1;
    return 0;
}

/* A nested ensure's token on a detached thread, or one finalize made
   invalid, or one of an outer owner run (struct owner_run). */
T_NOINLINE static int release_nested_slow(struct osthread *os, tether_gilstate st)
{
    if (st <= os->tok_floor)
        return release_bad(os, st);
    if (os->current) {
        /* A token of an outer owner run (os->rel_floor): the fast
           path's release, and then the owner of the next token is the
           attached state's runtime (os_refresh). */
        os->tok--;
        os_refresh(os);
        return TETHER_OK;
    }
    if (innermost_paused(os, st))
        return err_misuse(TETHER_ESTATE, "tether_release",
                          "the thread state of this ensure is saved or in "
                          "a blocking call (unbalanced tether_save_thread, "
                          "or a release inside tether_call_blocking?)");
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
    struct tstate *ts = f->ts, *prev = f->prev;
    os->depth--;
    os->tok--;
    osthread_shrink_frames(os); /* f is not read again */
    ensures_add(ts, (uint32_t)-1);
    TRACE(trace_release(ts));
    /* The fast-path fields are refreshed (os_refresh) before anything
       that could read them: by ts_detach itself on the outermost release
       (was_attached means os->current == ts, checked above). */
    int was_attached = ts->attached;
    if (!prev) {
        if (was_attached)
            ts_detach(ts);
        else
            os_refresh(os);
        return TETHER_OK;
    }
    os_refresh(os);
    /* Detached by finalize: the outer state is taken back all the same
       (the thread held its GIL before this ensure; issue 12 F7). */
    int rc = was_attached ? ts_switch(ts, prev, 1) : ts_attach(prev, 1);
    return rc == TETHER_OK ? rc
                           : err_set(rc, fn, "the interpreter the ensure "
                                     "detached from is finalizing; the thread "
                                     "stays detached");
}

T_NOINLINE static int release_slow(struct osthread *os, tether_gilstate st)
{
    if (!os || st != os->tok || (st & TOKEN_LEVEL_MASK) == 0)
        return release_bad(os, st);
    if (os->depth && os->frames[os->depth - 1].tok == st)
        return release_frame(os);
    return release_nested_slow(os, st);
}

/* The innermost token of a nested ensure that took nothing is one
   decrement: it is the thread's current token, and above os->rel_floor
   (os_refresh: the innermost frame's token, the finalize floor and the
   level-0 base; all ones while detached).  Anything else is
   release_slow's. */
int tether_release(tether_gilstate st)
{
    struct osthread *os = t_os;
    if (__builtin_expect(os && st == os->tok && st > os->rel_floor, 1)) {
        os->tok = st - 1;
        return TETHER_OK;
    }
    return release_slow(os, st);
}

/* ---- queries ------------------------------------------------------------ */

int tether_gil_held(void) { return ts_current() != NULL; }
