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

static void osthread_exit(void *p);

static void osthread_key_init(void)
{
    ann_atomic(g_os_serial); /* atomics only (helgrind, DRD: annotate.h) */
    pthread_key_create(&g_os_key, osthread_exit);
}

/* The record lives in the thread's own TLS (no allocation: a brand-new
   thread's first ensure must not pay for its first malloc), and outlives
   every runtime.  The default TLS model is used for it; only the pointer
   above is initial-exec. */
static __thread struct {
    struct osthread os;
    struct frame frames[INLINE_FRAMES];
} t_os_store;

struct osthread *osthread_get(void)
{
    if (!t_os) {
        pthread_once(&g_os_once, osthread_key_init);
        struct osthread *os = &t_os_store.os;
        os->frames = t_os_store.frames;
        os->cap = INLINE_FRAMES;
        os->serial = atomic_fetch_add(&g_os_serial, 1) + 1;
        os->tok = os->serial << TOKEN_LEVEL_BITS;
        os->ident = plat_thread_ident();
        os_refresh(os); /* detached */
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

/* Clears a new state and links it into `interp`.  Called with interp->mutex held. */
static void ts_link(struct tstate *ts, struct interp *interp)
{
    memset((char *)ts + TS_CLEAR_FROM, 0, sizeof *ts - TS_CLEAR_FROM);
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

struct tstate *ts_new(struct interp *interp)
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
    rank_lock(&interp->mutex, RANK_INTERP);
    ts_link(ts, interp);
    rank_unlock(&interp->mutex, RANK_INTERP);
    interp_ref(interp);
    return ts;
}

void ts_bind(struct tstate *ts, struct osthread *os)
{
    ts->os = os;
    ts->ident = os->ident;
    ts->os_next = os->cache;
    os->cache = ts;
}

/* Frees a state's asynchronous-exception payloads (the state is being
   deleted). */
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
    rank_unlock(&interp->mutex, RANK_INTERP);
    /* A thread tether did not start finishes with its state; tether's own
       threads finish in their bootstrap, right after this. */
    if (t && !t->joinable) {
        thread_finish(t, TETHER_OK);
        handle_put(t->handle);
    }
    ts_clear_async(ts);
    ts_free_unlinked(ts);
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
    if (ts->saved)
        os->evicted_tok = (uint64_t)(uintptr_t)ts;
    osthread_uncache(os, ts);
    ts_unlink_and_free(ts);
}

int osthread_refers(const struct osthread *os, const struct tstate *ts)
{
    if (os->current == ts || os->boot == ts || ts->blocking)
        return 1;
    for (uint32_t i = 0; i < os->depth; i++)
        if (os->frames[i].ts == ts || os->frames[i].prev == ts)
            return 1;
    return 0;
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
    if (os->depth == 0 && os->frames != t_os_store.frames) {
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
   tstate_atfork_child and released by tstate_atfork_release.  Only the
   child's one thread touches it. */
static struct tstate *g_vanished;

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
