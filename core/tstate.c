/*
 * tstate.c - thread states and the per-OS-thread record: making, binding,
 * attaching (taking the state's GIL), detaching, deleting; and the end of
 * an OS thread (the thread-exit destructor, the bootstrap's end).
 *
 * A thread state belongs to one interpreter and one OS thread.  The OS
 * thread's record (struct osthread, reached through one initial-exec TLS
 * pointer) keeps the state it is attached to, its ensure stack, and a cache
 * of its states, one per interpreter it has used.  Cached states outlive
 * the outermost tether_release so that the next ensure costs one GIL
 * acquisition; they are freed by a pthread key destructor when the OS
 * thread exits, or as soon as their interpreter is found finalizing.  The
 * start-up state of a thread tether started (os->boot) is its bootstrap's
 * alone to free (docs/threading-model.md, "Who owns a thread state").
 *
 * A state holds a reference on its interpreter, which holds one on its
 * runtime: their memory lives until the last state is gone, so a foreign
 * thread that exits long after finalize still finds valid memory to unlink
 * itself from.
 *
 * The pool.  A state deleted while its interpreter is not finalizing is
 * not freed but kept, ready, in the interpreter's pool (interp->pool, at
 * most TS_POOL_MAX), and ts_new takes one from there before it allocates:
 * so the first ensure of a brand-new thread, once some thread of that
 * interpreter has exited, makes no allocation (no first malloc of the
 * thread, which sets up glibc's per-thread cache) and no mutex or cond.
 * A pooled state is a block of the allocator, never memory of a thread:
 * it is unlinked from interp->tstates, bound to no OS thread, holds no
 * interp reference and nothing points to it but the pool.  The pool is
 * changed only under interp->mutex (rank 2; nothing else is taken while
 * it is held for the pool), so it is settled across:
 *   - thread exit: the key destructor deletes the thread's states, which
 *     go to the pool (ts_unlink_and_free), under the mutex that unlinks
 *     them; the thread never touches them afterwards;
 *   - finalize and destroy: mark_finalizing (runtime.c) sets `finalizing`
 *     and then drains the pool (ts_pool_drain); a deletion takes the mutex
 *     and tests `finalizing` under it, so it either put its state in before
 *     the drain or sees the flag and frees the state itself.  States still
 *     cached by threads (attached, saved, or named by ensure frames whose
 *     tokens finalize made invalid) are never in the pool: they are freed
 *     when their thread deletes them, finalizing by then;
 *   - the interpreter's memory: interp_dtor drains what is left (nothing
 *     holds a reference for the pool; a deletion holds its state's until
 *     it has let go of the mutex);
 *   - fork: prepare holds every interp->mutex, so the child inherits each
 *     pool whole; tstate_atfork_child takes it (the records of the parent's
 *     threads are not carried on) and tstate_atfork_release frees it with
 *     every lock released;
 *   - the allocator: a pooled block counts as live, so
 *     tether_set_allocator waits for the finalize that frees it.
 * Handles and tokens never name a pooled state: a state's handle-visible
 * objects (its thread object) let go of it under the same mutex, and a
 * tether_tstate token of a deleted state names no cached state (the
 * thread's own cache is searched; its stamp tells a state made at the
 * same address apart: ts_save_token).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "annotate.h"
#include "delay.h"
#include "error.h"
#include "lockrank.h"
#include "handle.h"
#include "internal.h"
#include "platform.h"
#include "pluginreg.h"
#include "tuning.h"

/* Runs the destructor at thread exit.  Synchronization: immutable after
   g_os_once. */
static pthread_key_t g_os_key;
static pthread_once_t g_os_once = PTHREAD_ONCE_INIT;
static _Atomic uint64_t g_os_serial;
/* Set (release) once g_os_key exists, so that a new thread's record tests
   one word instead of calling pthread_once.  Synchronization: atomic. */
static _Atomic int g_os_key_made;

static void osthread_exit(void *p);

static void osthread_key_init(void)
{
    ann_atomic(g_os_serial); /* atomics only (helgrind, DRD: annotate.h) */
    ann_atomic(g_os_key_made);
    pthread_key_create(&g_os_key, osthread_exit);
    ann_happens_before(&g_os_key_made); /* g_os_key, to osthread_get */
    atomic_store_explicit(&g_os_key_made, 1, memory_order_release);
}

/* The record lives in the thread's own TLS (no allocation: a brand-new
   thread's first ensure must not pay for its first malloc), and outlives
   every runtime.  Initial-exec, like t_os: its address is the thread
   pointer plus an offset, not a __tls_get_addr call.  That takes no more
   static TLS than before: one initial-exec variable already puts the
   library's whole TLS block in the static TLS (the STATIC_TLS flag;
   docs/host.md, "Loading it with dlopen"). */
static __thread struct {
    struct osthread os;
    struct frame frames[INLINE_FRAMES];
} t_os_store __attribute__((tls_model("initial-exec")));

struct osthread *osthread_get(void)
{
    if (!t_os) {
        if (!atomic_load_explicit(&g_os_key_made, memory_order_acquire))
            pthread_once(&g_os_once, osthread_key_init);
        /* The key was made on another thread (as it may be: two threads'
           first calls at once), seen made through the flag or through
           pthread_once, neither of which helgrind or DRD follow. */
        ann_happens_after(&g_os_key_made);
        struct osthread *os = &t_os_store.os;
        os->frames = t_os_store.frames;
        os->cap = INLINE_FRAMES;
        os->serial = atomic_fetch_add(&g_os_serial, 1) + 1;
        os->tok = os->serial << TOKEN_LEVEL_BITS;
        os->ident = plat_thread_ident();
        os_set_current(os, NULL); /* detached */
        pthread_setspecific(g_os_key, os);
        t_os = os;
    }
    return t_os;
}

static void osthread_uncache(struct osthread *os, struct tstate *ts)
{
    for (struct tstate **p = &os->cache; *p; p = &(*p)->os_next) {
        if (*p == ts) {
            *p = ts->os_next;
            return;
        }
    }
}

/* Thread exit: a thread that still holds a GIL lets go of it (else every
   other thread would wait forever), then its states are deleted. */
static void osthread_exit(void *p)
{
    struct osthread *os = p;
    t_os = os; /* other key destructors may have run tether code */
    /* A thread tether started whose fn left through pthread_exit: its
       bootstrap's end never ran.  It finishes here, as a silent exit. */
    if (os->boot)
        osthread_boot_exit(os, TETHER_EXIT);
    if (os->current) {
        if (err_debug_enabled())
            fprintf(stderr,
                    "tether: TETHER_DEBUG: thread %llu exited while attached "
                    "(%u ensure(s) never released)\n",
                    (unsigned long long)os->ident,
                    (unsigned)atomic_load(&os->current->ensures));
        ts_detach(os->current);
    }
    while (os->cache) {
        struct tstate *ts = os->cache;
        os->cache = ts->os_next;
        ts_unlink_and_free(ts);
    }
    if (os->frames != t_os_store.frames)
        t_free(os->frames);
    memset(os, 0, sizeof *os);
    t_os = NULL;
    t_breaker = &g_breaker_detached;
}

/* ---- the end of a thread tether started ------------------------------------ */

void osthread_boot_exit(struct osthread *os, int result)
{
    struct tstate *ts = os->boot;
    struct thread *t = os->boot_thread;
    while (os->current) /* also anything fn ensured and never released */
        ts_detach(os->current);
    /* No instruction of fn runs now, and no GIL is held: the last pin of an
       orphaned plugin (one whose init started this thread and failed, or
       that finalize unloaded while this thread ran) unmaps it here, since
       no later load, unload or finalize may come to reap it. */
    plugin_unpin_reap(t->pin, PLUGIN_PIN_HOLD);
    t->pin = NULL;
    os->depth = 0;
    os->boot = NULL;
    os->boot_thread = NULL;
    TETHER_DELAY_POINT("thread.boot.before_teardown");
    ts_uncache_and_free(os, ts);
    TETHER_DELAY_POINT("thread.boot.before_finish");
    thread_finish(t, result);
    handle_put(t->handle); /* the thread's own reference */
}

/* Clears what a state's life leaves behind (from TS_CLEAR_FROM on). */
static void ts_clear(struct tstate *ts)
{
    memset((char *)ts + TS_CLEAR_FROM, 0, sizeof *ts - TS_CLEAR_FROM);
}

/* Links a cleared state into `interp`.  Called with interp->mutex held. */
static void ts_link(struct tstate *ts, struct interp *interp)
{
    ts->interp = interp;
    ts->next = interp->tstates;
    if (ts->next)
        ts->next->prev = ts;
    interp->tstates = ts;
    if (!interp->main_ts) {
        interp->main_ts = ts;
        if (interp->pending_head)
            atomic_fetch_or(&ts->breaker, BREAKER_PENDING);
    }
    if (atomic_load(&interp->finalizing))
        atomic_fetch_or(&ts->breaker, BREAKER_FINALIZING);
}

/* A new block for a state, its mutex and conds initialised. */
static struct tstate *ts_make(void)
{
    struct tstate *ts = t_malloc(sizeof *ts);
    if (!ts)
        return NULL;
    pthread_mutex_init(&ts->sleep_mutex, NULL);
    plat_cond_init(&ts->sleep_cond);
    plat_cond_init(&ts->ubf_idle);
    /* For helgrind and DRD (annotate.h): atomics only; other threads set
       breaker bits and read userdata and the ensure count concurrently. */
    ann_atomic(ts->breaker);
    ann_atomic(ts->userdata);
    ann_atomic(ts->ensures);
    return ts;
}

/* Writes the binding of `ts` to `os`: with interp->mutex held, because
   a linked state's binding is read under it by other threads
   (tether_raise_by_ident, the TETHER_DEBUG report). */
static void ts_set_os_locked(struct tstate *ts, struct osthread *os)
{
    ts->os = os;
    ts->ident = os->ident;
}

/* Puts a bound state at the head of its thread's cache (the owner's). */
static void ts_cache(struct tstate *ts, struct osthread *os)
{
    ts->stamp = (uint16_t)++os->made;
    ts->came_at = os->tok;
    ts->os_next = os->cache;
    os->cache = ts;
}

/* Takes a state from the pool, else makes one, binds it to `os` (NULL:
   unbound) and links it; with interp->mutex held on entry and on return
   (released meanwhile if it allocates).  NULL when out of memory. */
static struct tstate *ts_take_locked(struct interp *interp, struct osthread *os)
{
    struct tstate *ts = interp->pool;
    if (ts) {
        interp->pool = ts->next; /* cleared by pool_put but for `next` */
        interp->pool_len--;
    } else {
        rank_unlock(&interp->mutex, RANK_INTERP);
        ts = ts_make();
        rank_lock(&interp->mutex, RANK_INTERP);
        if (!ts)
            return NULL;
        ts_clear(ts);
    }
    if (os)
        ts_set_os_locked(ts, os);
    ts_link(ts, interp);
    return ts;
}

struct tstate *ts_new_taking(struct interp *interp, struct osthread *os)
{
    rank_lock(&interp->mutex, RANK_INTERP);
    struct tstate *ts = ts_take_locked(interp, os);
    rank_unlock(&interp->mutex, RANK_INTERP);
    if (ts)
        ts_cache(ts, os);
    return ts;
}

struct tstate *ts_new(struct interp *interp)
{
    rank_lock(&interp->mutex, RANK_INTERP);
    struct tstate *ts = ts_take_locked(interp, NULL);
    rank_unlock(&interp->mutex, RANK_INTERP);
    if (ts)
        interp_ref(interp);
    return ts;
}

/* Puts a deleted state (unlinked, with interp->mutex held) into the pool,
   unless its interpreter is finalizing, the pool is full or it still holds
   asynchronous-exception payloads (their destructors must run without
   the mutex).  Returns 1 if it did: the caller no longer owns `ts`. */
static int pool_put(struct interp *interp, struct tstate *ts)
{
    if (atomic_load(&interp->finalizing) || interp->pool_len >= TS_POOL_MAX ||
        ts->has_pending || ts->has_delivered)
        return 0;
    ann_forget(&ts->interp); /* as ts_free_unlinked does */
    /* Cleared here, by the exiting thread, rather than by the taker: a new
       thread's first ensure then writes only the lines of the state it
       uses, not every line the last thread left in its core's cache. */
    ts_clear(ts);
    ts->next = interp->pool;
    interp->pool = ts;
    interp->pool_len++;
    return 1;
}

/* Frees a list of pooled states linked by `next`. */
static void pool_free(struct tstate *ts)
{
    while (ts) {
        struct tstate *next = ts->next;
        ts_free_unlinked(ts);
        ts = next;
    }
}

void ts_pool_drain(struct interp *interp)
{
    rank_lock(&interp->mutex, RANK_INTERP);
    struct tstate *list = interp->pool;
    interp->pool = NULL;
    interp->pool_len = 0;
    rank_unlock(&interp->mutex, RANK_INTERP);
    pool_free(list);
}

void ts_bind(struct tstate *ts, struct osthread *os)
{
    rank_lock(&ts->interp->mutex, RANK_INTERP);
    ts_set_os_locked(ts, os);
    rank_unlock(&ts->interp->mutex, RANK_INTERP);
    ts_cache(ts, os);
}

/* ---- whose the tokens are ---------------------------------------------- */

/* The runs are changed only here, at a change of the attached state or
   on a slow path that moved os->tok (os_refresh), never by the nested
   ensure and release of the fast paths: those keep the owner, and the
   fast release stops at the innermost run (os->rel_floor). */
uint64_t os_note_owner_slow(struct osthread *os)
{
    uint64_t rt = os->current->interp->rt_handle, next = os->tok + 1;
    uint32_t n = os->nruns;
    if (os->wild_at > os->tok)
        os->wild_at = 0; /* no token past the bound is outstanding */
    while (n && os->runs[n - 1].start > next)
        n--; /* stale: their tokens were released */
    if (n && os->runs[n - 1].start == next)
        n--; /* holds no token yet: the new owner's instead */
    if (!n || os->runs[n - 1].rt != rt) {
        if (n < OWNER_RUNS)
            os->runs[n++] = (struct owner_run){next, rt};
        else if (!os->wild_at)
            os->wild_at = next; /* full: every runtime's (tuning.h) */
    }
    os->nruns = n;
    /* Past the bound, the token at wild_at is released on the slow path
       too, which clears it (a fast ensure of the innermost run's
       runtime may take that level again). */
    return os->wild_at ? os->wild_at : os->runs[n - 1].start - 1;
}

/* ---- attach and detach -------------------------------------------------- */

int ts_attach(struct tstate *ts, int urgent)
{
    int rc = gil_take(ts->interp->gil, ts, urgent);
    if (rc == TETHER_OK) {
        ts->attached = 1;
        os_set_current(ts->os, ts);
    }
    return rc;
}

void ts_detach(struct tstate *ts)
{
    ts->attached = 0;
    os_set_current(ts->os, NULL);
    gil_drop(ts->interp->gil, ts);
}

uint64_t ts_block(struct tstate *ts)
{
    uint64_t mark = ts->os->tok;
    if (!ts_paused(ts)) /* the outermost: its use pauses */
        ts->left_at = mark;
    ts->blocking++;
    ts_detach(ts);
    return mark;
}

int ts_unblock(struct tstate *ts, uint64_t mark)
{
    struct osthread *os = ts->os;
    ts->blocking--;
    if (os->current) {
        /* The outermost ensure made meanwhile found the thread detached;
           its release re-attaches `ts`, as if made before the block. */
        for (uint32_t i = 0; i < os->depth; i++) {
            if (os->frames[i].tok > mark) {
                if (!os->frames[i].prev)
                    os->frames[i].prev = ts;
                break;
            }
        }
        return TETHER_ESTATE;
    }
    int rc = ts_attach(ts, 1);
    if (rc != TETHER_OK && !osthread_refers(os, ts))
        ts_uncache_and_free(os, ts);
    return rc;
}

/* ---- unlink and delete -------------------------------------------------- */

void ts_unlink(struct tstate *ts)
{
    struct interp *interp = ts->interp;
    if (ts->prev)
        ts->prev->next = ts->next;
    else
        interp->tstates = ts->next;
    if (ts->next)
        ts->next->prev = ts->prev;
}

static void ts_clear_async(struct tstate *ts)
{
    if (ts->has_pending && ts->pending_dtor)
        ts->pending_dtor(ts->pending_payload);
    if (ts->has_delivered && ts->delivered_dtor)
        ts->delivered_dtor(ts->delivered_payload);
    ts->has_pending = ts->has_delivered = 0;
}

void ts_unlink_and_free(struct tstate *ts)
{
    struct interp *interp = ts->interp;
    rank_lock(&interp->mutex, RANK_INTERP);
    ts_unlink(ts);
    if (interp->main_ts == ts) {
        /* Pending calls move on to the interpreter's next thread. */
        interp->main_ts = interp->tstates;
        if (interp->main_ts && interp->pending_head)
            breaker_signal(interp->main_ts, BREAKER_PENDING);
    }
    struct thread *t = ts->thread;
    ts->thread = NULL;
    if (t)
        t->ts = NULL;
    int pooled = pool_put(interp, ts); /* then ts is not touched again */
    rank_unlock(&interp->mutex, RANK_INTERP);
    /* A thread tether did not start finishes with its state; tether's own
       threads finish in their bootstrap, right after this. */
    if (t && !t->joinable) {
        thread_finish(t, TETHER_OK);
        handle_put(t->handle);
    }
    if (!pooled) {
        ts_clear_async(ts);
        ts_free_unlinked(ts);
    }
    interp_unref(interp);
}

void ts_free_unlinked(struct tstate *ts)
{
    ann_forget(&ts->interp); /* its publications as GIL holder (note_holder()) end */
    pthread_cond_destroy(&ts->ubf_idle);
    pthread_cond_destroy(&ts->sleep_cond);
    pthread_mutex_destroy(&ts->sleep_mutex);
    t_free(ts);
}

struct tstate *ts_cached(struct osthread *os, tether_interp h)
{
    for (struct tstate *ts = os->cache; ts; ts = ts->os_next)
        if (ts->interp->handle == h)
            return ts;
    return NULL;
}

void ts_uncache_and_free(struct osthread *os, struct tstate *ts)
{
    if (ts->saved) {
        os->evicted[os->evicted_next] = ts_save_token(ts);
        os->evicted_next = (os->evicted_next + 1) % EVICTED_MAX;
    }
    osthread_uncache(os, ts);
    ts_unlink_and_free(ts);
}

int osthread_take_evicted(struct osthread *os, uint64_t tok)
{
    for (uint32_t i = 0; i < EVICTED_MAX; i++) {
        if (os->evicted[i] == tok) {
            os->evicted[i] = 0;
            return 1;
        }
    }
    return 0;
}

int osthread_refers(const struct osthread *os, const struct tstate *ts)
{
    return os->current == ts || os->boot == ts || ts->blocking ||
           osthread_in_frames(os, ts);
}

void ts_uncache_finalized(struct osthread *os, struct runtime *rt, struct interp *only)
{
    struct tstate *ts = os->cache, *next;
    for (; ts; ts = next) {
        next = ts->os_next;
        /* A state an outer ensure frame will switch back to stays (its
           release then answers EFINALIZING); the thread frees it later.
           So does the thread's start-up state: its bootstrap frees it. */
        if (ts->interp->rt == rt && (!only || ts->interp == only) &&
            !osthread_refers(os, ts))
            ts_uncache_and_free(os, ts);
    }
}

void osthread_shrink_frames(struct osthread *os)
{
    /* The inline frames are the only ones of INLINE_FRAMES (a grown stack
       has at least twice as many): a test of cap spares the common case
       the TLS address of t_os_store (a __tls_get_addr call). */
    if (os->depth == 0 && os->cap != INLINE_FRAMES) {
        t_free(os->frames);
        os->frames = t_os_store.frames;
        os->cap = INLINE_FRAMES;
    }
}

int osthread_grow_frames(struct osthread *os)
{
    if (os->cap >= MAX_FRAMES)
        return TETHER_ENOMEM;
    struct frame *f = t_calloc(2 * (size_t)os->cap, sizeof *f);
    if (!f)
        return TETHER_ENOMEM;
    for (uint32_t i = 0; i < os->depth; i++)
        f[i] = os->frames[i];
    if (os->frames != t_os_store.frames)
        t_free(os->frames);
    os->frames = f;
    os->cap *= 2;
    return TETHER_OK;
}

/* ---- fork --------------------------------------------------------------- */

/* Fork child: the states of vanished threads, unlinked by
   tstate_atfork_child and released by tstate_atfork_release; and the
   interpreters' pools, taken by tstate_atfork_child and freed by
   tstate_atfork_release.  Only the child's one thread touches them. */
static struct tstate *g_vanished, *g_pooled;

/* Unlinks the states of vanished threads; their references are dropped
   once every lock is released (a dropped reference may free memory whose
   destructor takes those locks).  Returns the list through ts->next. */
static struct tstate *drop_vanished(struct interp *interp, struct osthread *self)
{
    struct tstate *gone = NULL, *ts = interp->tstates, *next;
    for (; ts; ts = next) {
        next = ts->next;
        if (self && ts->os == self)
            continue;
        ts_unlink(ts);
        if (interp->main_ts == ts)
            interp->main_ts = NULL;
        struct thread *t = ts->thread;
        if (t) {
            thread_unregister(t);
            thread_atfork_vanished(t);
            t->ts = NULL;
        }
        ts->next = gone;
        gone = ts;
    }
    /* A registered thread whose state was already deleted vanished too. */
    for (struct thread *t = interp->threads, *tn; t; t = tn) {
        tn = t->reg_next;
        if (!t->ts)
            thread_unregister(t);
    }
    return gone;
}

/* Drops the vanished threads' states of one interpreter (its mutex is
   held since prepare) and makes the survivor's own objects anew. */
static void child_interp(struct interp *i, void *ud)
{
    struct osthread *self = ud;
    /* The pool is whole (prepare held the mutex); its records go. */
    while (i->pool) {
        struct tstate *ts = i->pool;
        i->pool = ts->next;
        ts->next = g_pooled;
        g_pooled = ts;
    }
    i->pool_len = 0;
    struct tstate *g = drop_vanished(i, self);
    while (g) {
        struct tstate *ts = g;
        g = ts->next;
        ts->next = g_vanished;
        g_vanished = ts;
    }
    if (self)
        for (struct tstate *ts = i->tstates; ts; ts = ts->next) {
            pthread_mutex_init(&ts->sleep_mutex, NULL);
            plat_cond_init(&ts->sleep_cond);
            plat_cond_init(&ts->ubf_idle);
            ts->ubf_calls = 0; /* callers that vanished */
            if (!i->main_ts)
                i->main_ts = ts;
        }
}

void tstate_atfork_child(void)
{
    registry_foreach_interp_locked(child_interp, osthread_peek());
}

/* Drops what vanished threads held: their thread objects' own references
   and their states (their OS-thread records were thread-local storage). */
void tstate_atfork_release(void)
{
    /* Pooled records: no thread ever waited on their conds in this
       process's memory since they were pooled, so they are destroyed as
       usual. */
    struct tstate *pooled = g_pooled;
    g_pooled = NULL;
    pool_free(pooled);
    struct tstate *gone = g_vanished;
    g_vanished = NULL;
    while (gone) {
        struct tstate *ts = gone;
        gone = ts->next;

        struct thread *t = ts->thread;
        ts->thread = NULL;
        if (t) {
            int close = t->user_refs == 0;
            if (close)
                handle_close(t->handle, HT_THREAD);
            handle_put(t->handle); /* the vanished thread's own reference */
        }
        struct interp *interp = ts->interp;
        /* Plain free: its sleep cond may count a waiter that vanished, and
           destroying such a cond waits for ever.  Payloads are left alone:
           their owners are gone. */
        ann_forget(&ts->interp); /* as ts_free_unlinked does */
        t_free(ts);
        interp_unref(interp);
    }
}
