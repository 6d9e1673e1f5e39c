/*
 * threadobj.c - the thread object: the record behind a tether_thread
 * handle, its references, its place in the interpreter's registry of
 * started threads, its end (the sentinel), and the handle's queries.
 *
 * The thread object (the handle) is refcounted apart from the thread
 * state: the state dies with the thread, the handle when its last user
 * reference is released and the thread is done (as CPython 3.13's
 * ThreadHandle).  Threads tether did not start get a thread object the
 * first time they ask for tether_thread_current; it finishes when their
 * state is deleted (tstate.c), and cannot be joined.  Starting and joining
 * OS threads is thread.c's, above the thread states.
 */
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "annotate.h"
#include "error.h"
#include "handle.h"
#include "hooks.h"
#include "internal.h"
#include "lockrank.h"
#include "platform.h"

/* ---- the record -------------------------------------------------------- */

static void thread_dtor(void *p)
{
    struct thread *t = p;
    if (t->joinable && t->reap == REAP_NOT_YET && t->started)
        pthread_detach(t->pt);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->mutex);
    t_free(t->name);
    struct interp *interp = t->interp;
    t_free(t);
    interp_unref(interp);
}

int thread_new(struct interp *interp, const char *name, int joinable,
                      struct thread **out)
{
    struct thread *t = t_calloc(1, sizeof *t);
    if (!t || !(t->name = t_strdup(name))) {
        t_free(t);
        return TETHER_ENOMEM;
    }
    pthread_mutex_init(&t->mutex, NULL);
    plat_cond_init(&t->cond);
    ann_atomic(t->done); /* for helgrind and DRD: a joiner peeks at it */
    t->interp = interp;
    t->joinable = joinable;
    t->user_refs = 1;
    if (handle_new(HT_THREAD, t, thread_dtor, name, &t->handle) != TETHER_OK) {
        pthread_cond_destroy(&t->cond);
        pthread_mutex_destroy(&t->mutex);
        t_free(t->name);
        t_free(t);
        return TETHER_ENOMEM;
    }
    interp_ref(interp);
    handle_ref(t->handle);
    *out = t;
    return TETHER_OK;
}

/* Adds a user reference; the handle is open (the caller holds a lookup
   reference or the thread's state). */
void thread_ref_user(struct thread *t)
{
    rank_lock(&t->mutex, RANK_OBJECT);
    t->user_refs++;
    rank_unlock(&t->mutex, RANK_OBJECT);
}

int thread_unref_user(struct thread *t)
{
    rank_lock(&t->mutex, RANK_OBJECT);
    if (t->user_refs == 0) {
        rank_unlock(&t->mutex, RANK_OBJECT);
        return TETHER_EBADHANDLE;
    }
    int close = --t->user_refs == 0 && t->done;
    rank_unlock(&t->mutex, RANK_OBJECT);
    if (close)
        handle_close(t->handle, HT_THREAD);
    return TETHER_OK;
}

/* ---- the registry of started threads ------------------------------------ */

void thread_register(struct thread *t)
{
    struct interp *interp = t->interp;
    t->reg_prev = NULL;
    t->reg_next = interp->threads;
    if (t->reg_next)
        t->reg_next->reg_prev = t;
    interp->threads = t;
}

void thread_unregister(struct thread *t)
{
    struct interp *interp = t->interp;
    if (t->reg_prev)
        t->reg_prev->reg_next = t->reg_next;
    else if (interp->threads == t)
        interp->threads = t->reg_next;
    if (t->reg_next)
        t->reg_next->reg_prev = t->reg_prev;
    t->reg_prev = t->reg_next = NULL;
}

/* ---- the end ------------------------------------------------------------ */

void thread_finish(struct thread *t, int result)
{
    struct interp *interp = t->interp;
    if (t->joinable) {
        rank_lock(&interp->mutex, RANK_INTERP);
        thread_unregister(t);
        rank_unlock(&interp->mutex, RANK_INTERP);
    }
    rank_lock(&t->mutex, RANK_OBJECT);
    t->done = 1;
    t->result = result;
    int close = t->user_refs == 0;
    pthread_cond_broadcast(&t->cond);
    rank_unlock(&t->mutex, RANK_OBJECT);
    if (close)
        handle_close(t->handle, HT_THREAD);
}

void thread_excepthook(const struct runtime *rt, tether_thread t, int code,
                       const char *message, const char *where)
{
    if (rt->excepthook)
        rt->excepthook(t, code, message, rt->excepthook_ud);
    else
        fprintf(stderr, "tether: %s: %s (%s)%s%s\n", where,
                tether_status_name(code), tether_strerror(code),
                *message ? ": " : "", message);
}

void thread_report(struct interp *interp, struct thread *t, int code)
{
    char where[200]; /* the name is under THREAD_NAME_MAX bytes */
    snprintf(where, sizeof where, "exception in thread '%s' (%llu)", t->name,
             (unsigned long long)t->ident);
    thread_excepthook(interp->rt, t->handle, code, tether_last_error(), where);
}

void runtime_report_error(tether_interp h, int code, const char *message)
{
    struct interp *interp = interp_lookup_any(h);
    if (!interp)
        return;
    struct runtime *rt = interp->rt;
    tether_thread t = 0;
    struct tstate *ts = ts_current();
    if (ts && ts->interp == interp)
        (void)thread_for_state(ts, &t);
    char where[64];
    snprintf(where, sizeof where, "error in a callback on thread %llu",
             (unsigned long long)plat_thread_ident());
    thread_excepthook(rt, t, code, message, where);
    tether_thread_release(t);
    interp_unref(interp);
}

/* ---- queries ------------------------------------------------------------ */

int tether_thread_is_alive(tether_thread h)
{
    struct thread *t = handle_get_or_misuse(h, HT_THREAD, "tether_thread_is_alive");
    if (!t)
        return TETHER_EBADHANDLE;
    rank_lock(&t->mutex, RANK_OBJECT);
    int alive = t->started && !t->done;
    rank_unlock(&t->mutex, RANK_OBJECT);
    handle_put(h);
    return alive;
}

int tether_thread_ident(tether_thread h, uint64_t *out)
{
    if (!out)
        return err_misuse(TETHER_EINVAL, "tether_thread_ident", "out is NULL");
    struct thread *t = handle_get_or_misuse(h, HT_THREAD, "tether_thread_ident");
    if (!t)
        return TETHER_EBADHANDLE;
    rank_lock(&t->mutex, RANK_OBJECT);
    *out = t->ident;
    rank_unlock(&t->mutex, RANK_OBJECT);
    handle_put(h);
    return TETHER_OK;
}

int tether_thread_name(tether_thread h, const char **out)
{
    if (!out)
        return err_misuse(TETHER_EINVAL, "tether_thread_name", "out is NULL");
    struct thread *t = handle_get_or_misuse(h, HT_THREAD, "tether_thread_name");
    if (!t)
        return TETHER_EBADHANDLE;
    *out = t->name;
    handle_put(h);
    return TETHER_OK;
}

int tether_thread_result(tether_thread h, int *out)
{
    static const char fn[] = "tether_thread_result";
    if (!out)
        return err_misuse(TETHER_EINVAL, fn, "out is NULL");
    struct thread *t = handle_get_or_misuse(h, HT_THREAD, fn);
    if (!t)
        return TETHER_EBADHANDLE;
    rank_lock(&t->mutex, RANK_OBJECT);
    int done = t->done, result = t->result;
    rank_unlock(&t->mutex, RANK_OBJECT);
    handle_put(h);
    if (!done)
        return err_set(TETHER_ESTATE, fn, "the thread '%s' is still running", t->name);
    *out = result;
    return TETHER_OK;
}

int tether_thread_release(tether_thread h)
{
    if (h == 0)
        return TETHER_OK;
    struct thread *t = handle_get_or_misuse(h, HT_THREAD, "tether_thread_release");
    if (!t)
        return TETHER_EBADHANDLE;
    int rc = thread_unref_user(t);
    handle_put(h);
    if (rc != TETHER_OK)
        return err_misuse(rc, "tether_thread_release",
                          "every reference to the handle was already released");
    return TETHER_OK;
}


int thread_for_state(struct tstate *ts, uint64_t *out)
{
    struct interp *interp = ts->interp;
    rank_lock(&interp->mutex, RANK_INTERP);
    struct thread *t = ts->thread;
    if (t)
        thread_ref_user(t);
    rank_unlock(&interp->mutex, RANK_INTERP);
    if (!t) {
        /* A thread tether did not start: its object finishes with its state. */
        char name[64];
        if (interp->is_main && ts->os->serial == interp->rt->creator_serial)
            snprintf(name, sizeof name, "MainThread");
        else
            snprintf(name, sizeof name, "Dummy-%llu",
                     (unsigned long long)atomic_fetch_add(&interp->rt->thread_names, 1) + 1);
        if (thread_new(interp, name, 0, &t) != TETHER_OK)
            return TETHER_ENOMEM;
        t->ident = ts->ident;
        t->started = 1;
        rank_lock(&interp->mutex, RANK_INTERP);
        t->ts = ts;
        ts->thread = t;
        rank_unlock(&interp->mutex, RANK_INTERP);
    }
    *out = t->handle;
    return TETHER_OK;
}

int tether_thread_current(tether_thread *out)
{
    static const char fn[] = "tether_thread_current";
    if (!out)
        return err_misuse(TETHER_EINVAL, fn, "out is NULL");
    struct tstate *ts = ts_current();
    if (!ts)
        return err_misuse(TETHER_ESTATE, fn, "the calling thread is not attached");
    if (thread_for_state(ts, out) != TETHER_OK)
        return err_set(TETHER_ENOMEM, fn, "out of memory");
    return TETHER_OK;
}

int tether_thread_list(tether_interp h, tether_thread *buf, size_t cap,
                       size_t *count)
{
    static const char fn[] = "tether_thread_list";
    if (!count || (cap && !buf))
        return err_misuse(TETHER_EINVAL, fn, "count is NULL, or buf is NULL "
                          "with cap > 0");
    struct interp *interp = interp_lookup_open(h, fn);
    if (!interp)
        return TETHER_EBADHANDLE;
    size_t n = 0;
    rank_lock(&interp->mutex, RANK_INTERP);
    for (struct tstate *ts = interp->tstates; ts; ts = ts->next) {
        struct thread *t = ts->thread;
        if (!t)
            continue;
        if (n < cap) {
            thread_ref_user(t);
            buf[n] = t->handle;
        }
        n++;
    }
    rank_unlock(&interp->mutex, RANK_INTERP);
    handle_put(h);
    *count = n;
    return TETHER_OK;
}

void thread_atfork_vanished(struct thread *t)
{
    pthread_mutex_init(&t->mutex, NULL);
    plat_cond_init(&t->cond);
    t->done = 1;
    t->reap = REAP_DONE; /* the OS thread exists only in the parent */
}
