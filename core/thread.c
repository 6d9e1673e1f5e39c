/*
 * thread.c - starting and joining OS threads: the started-handshake, the
 * bootstrap, join on the sentinel.
 *
 * Life of a thread started by tether_thread_start:
 *
 *   parent                                 child
 *   ------                                 -----
 *   make thread object, thread state,
 *   register in interp->threads
 *   pthread_create  ------------------->   bind the state to this OS thread
 *   drop GIL, wait for `started`  <-----   started = 1 (the handshake)
 *   re-take GIL, return the handle         take the GIL, run fn(arg)
 *                                          report an error to the excepthook
 *                                          drop the GIL, delete the state,
 *                                          unregister, done = 1 (the sentinel)
 *   join: wait for done, pthread_join      exit
 *
 * The thread object (its record, references, registry and end) is
 * threadobj.c's; the end of the bootstrap, shared with the thread-exit
 * destructor, is tstate.c's (osthread_boot_exit).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "delay.h"
#include "lockrank.h"
#include "error.h"
#include "handle.h"
#include "internal.h"
#include "platform.h"
#include "pluginreg.h"
#include "trace.h"
#include "tuning.h"

/* ---- start and the bootstrap -------------------------------------------- */

/* The handle of the thread object the calling OS thread runs for, if
   tether_thread_start made it; 0 on any other thread.  Set by the
   bootstrap and kept until the OS thread ends, through its key destructors
   (a thread's ident no longer tells it apart from a new thread once its
   sentinel is released).  Synchronization: thread-local. */
static __thread uint64_t t_started_as;

struct boot {
    struct thread *t;
    struct tstate *ts;
};

static void *bootstrap(void *p)
{
    struct boot b = *(struct boot *)p; /* the parent's copy dies at the handshake */
    struct thread *t = b.t;
    struct tstate *ts = b.ts;
    struct osthread *os = osthread_get(); /* thread-local storage: cannot fail */
    TETHER_DELAY_POINT("thread.boot.before_bind");
    ts_bind(ts, os);
    os->boot = ts; /* this function alone frees it (osthread_boot_exit) */
    os->boot_thread = t;
    t_started_as = t->handle;
    rank_lock(&t->mutex, RANK_OBJECT);
    t->ident = os->ident;
    t->started = 1;
    pthread_cond_broadcast(&t->cond);
    rank_unlock(&t->mutex, RANK_OBJECT);

    TETHER_DELAY_POINT("thread.boot.after_handshake");
    trace_thread_named(t->name); /* the name of its track, if traced */
    TRACE(trace_thread_begin(t->interp->rt));
    int result = ts_attach(ts, 0);
    if (result == TETHER_OK) {
        result = t->fn(t->arg);
        if (result != TETHER_OK && result != TETHER_EXIT && ts->attached)
            thread_report(t->interp, t, result);
    }
    TRACE(trace_thread_end(t->interp->rt, result));
    osthread_boot_exit(os, result);
    return NULL;
}

static int start_error(int rc, const char *fmt, const char *detail)
{
    return err_set(rc, "tether_thread_start", fmt, detail);
}

/* Validates opts; fills the name (a default "Thread-N" when NULL).  A name
   of `cap` bytes or more is TETHER_EINVAL. */
static int read_opts(const tether_thread_opts *o, struct runtime *rt,
                     char *name, size_t cap, int *daemon, size_t *stack)
{
    *daemon = 0;
    *stack = 0;
    const char *n = NULL;
    if (o) {
        if (o->size < offsetof(tether_thread_opts, name) + sizeof o->name)
            return start_error(TETHER_EINVAL, "%s", "opts->size is too small");
        n = o->name;
        if (o->size >= offsetof(tether_thread_opts, daemon) + sizeof o->daemon)
            *daemon = o->daemon != 0;
        if (o->size >= offsetof(tether_thread_opts, stack_size) + sizeof o->stack_size)
            *stack = o->stack_size;
    }
    if (n && strlen(n) >= cap) /* refused, not cut (maybe inside a character) */
        return err_set(TETHER_EINVAL, "tether_thread_start", "the thread name "
                       "is %zu bytes long; the limit is %zu bytes",
                       strlen(n), cap - 1);
    if (n)
        snprintf(name, cap, "%s", n);
    else
        snprintf(name, cap, "Thread-%llu",
                 (unsigned long long)atomic_fetch_add(&rt->thread_names, 1) + 1);
    return TETHER_OK;
}

/* Waits for the child's handshake with the caller's GIL released.
   Returns TETHER_OK, or TETHER_EFINALIZING if the caller could not
   re-attach (it stays detached). */
static int wait_started(struct thread *t)
{
    struct tstate *cur = ts_current();
    if (cur)
        ts_detach(cur);
    rank_lock(&t->mutex, RANK_OBJECT);
    while (!t->started)
        pthread_cond_wait(&t->cond, &t->mutex);
    rank_unlock(&t->mutex, RANK_OBJECT);
    TETHER_DELAY_POINT("thread.start.reattach");
    return cur ? ts_attach(cur, 1) : TETHER_OK;
}

/* Undoes a start whose OS thread never ran, and drops the plugin pin the
   thread would have dropped at its end. */
static void start_undo(struct thread *t, struct tstate *ts)
{
    struct interp *interp = t->interp;
    plugin_unpin(t->pin, PLUGIN_PIN_HOLD);
    t->pin = NULL;
    rank_lock(&interp->mutex, RANK_INTERP);
    thread_unregister(t);
    rank_unlock(&interp->mutex, RANK_INTERP);
    ts_unlink_and_free(ts); /* also clears t->ts */
    t->joinable = 0;
    t->done = 1;
    handle_put(t->handle); /* the thread's own reference */
    handle_close(t->handle, HT_THREAD);
}

static int start_registered(struct thread *t, struct tstate *ts)
{
    struct interp *interp = t->interp;
    rank_lock(&interp->mutex, RANK_INTERP);
    int fin = atomic_load(&interp->finalizing);
    if (!fin) {
        t->ts = ts;
        ts->thread = t;
        thread_register(t);
    }
    rank_unlock(&interp->mutex, RANK_INTERP);
    if (fin) {
        start_undo(t, ts);
        return start_error(TETHER_EFINALIZING, "%s", "the interpreter is finalizing");
    }
    struct boot b = {t, ts};
    int err = plat_thread_create(&t->pt, t->stack_size, bootstrap, &b);
    if (err) {
        start_undo(t, ts);
        return start_error(err == EINVAL ? TETHER_EINVAL : TETHER_EAGAIN,
                           "the OS refused a thread: %s", strerror(err));
    }
    TETHER_DELAY_POINT("thread.start.created");
    if (wait_started(t) != TETHER_OK) {
        thread_unref_user(t); /* started, but the caller cannot use it */
        return start_error(TETHER_EFINALIZING, "%s", "the thread started, but "
                           "the interpreter began finalizing meanwhile; the "
                           "caller is detached");
    }
    return TETHER_OK;
}

int tether_thread_start(tether_interp h, tether_thread_fn fn, void *arg,
                        const tether_thread_opts *opts, tether_thread *out)
{
    if (!fn || !out)
        return err_misuse(TETHER_EINVAL, "tether_thread_start",
                          "fn and out must not be NULL");
    struct interp *interp = interp_lookup_open(h, "tether_thread_start");
    if (!interp)
        return TETHER_EBADHANDLE;
    char name[THREAD_NAME_MAX];
    int daemon, rc;
    size_t stack;
    struct thread *t = NULL;
    struct tstate *ts = NULL;
    struct plugin *pin = NULL;
    rc = read_opts(opts, interp->rt, name, sizeof name, &daemon, &stack);
    if (rc == TETHER_OK && atomic_load(&interp->finalizing))
        rc = start_error(TETHER_EFINALIZING, "%s", "the interpreter is finalizing");
    if (rc == TETHER_OK &&
        plugin_pin_code((uintptr_t)fn, PLUGIN_PIN_HOLD, &pin) != TETHER_OK)
        rc = start_error(TETHER_ESTATE, "%s", "fn is in a plugin being unloaded");
    if (rc == TETHER_OK && thread_new(interp, name, 1, &t) != TETHER_OK)
        rc = start_error(TETHER_ENOMEM, "%s", "out of memory for the thread");
    if (rc == TETHER_OK && !(ts = ts_new(interp))) {
        t->joinable = 0;
        handle_put(t->handle);
        handle_close(t->handle, HT_THREAD);
        rc = start_error(TETHER_ENOMEM, "%s", "out of memory for the thread state");
    }
    if (rc == TETHER_OK) {
        t->daemon = daemon;
        t->stack_size = stack;
        t->fn = fn;
        t->arg = arg;
        /* The pin is the thread's from here on: start_undo drops it if
           the OS thread never runs, else the thread's end does
           (osthread_boot_exit), even when this call then fails because
           the caller cannot re-attach.  Dropping it here as well took one
           pin and one reference of the plugin's handle too many: the
           record of a failed init was freed while still listed. */
        t->pin = pin;
        pin = NULL;
        rc = start_registered(t, ts);
    }
    if (rc != TETHER_OK)
        plugin_unpin(pin, PLUGIN_PIN_HOLD); /* (NULL once the thread's) */
    handle_put(h);
    if (rc == TETHER_OK)
        *out = t->handle;
    return rc;
}

/* ---- join --------------------------------------------------------------- */

/* One join: the waitspec's object (every callback gets it), so that the
   reap run as the wait's finishing step knows the join's deadline and can
   report that it passed. */
struct join {
    struct thread *t;
    int64_t deadline; /* absolute monotonic; -1 = none */
    int reaped;       /* the finishing step ran: reap_rc says how it went */
    int reap_rc;      /* TETHER_OK or TETHER_ETIMEDOUT */
};

static int poll_done(void *p)
{
    return ((struct join *)p)->t->done ? TETHER_OK : WAIT_AGAIN;
}

static int peek_done(void *p)
{
    return atomic_load_explicit(&((struct join *)p)->t->done,
                                memory_order_relaxed);
}

/* How long a joiner spins for the sentinel before it parks: only while
   the thread is ending, so that the spin is usually cut short by the
   sentinel (an asynchronous exception raised at it waits to be delivered
   or fetched, or its state is already gone). */
static int64_t join_spin(void *p)
{
    struct thread *t = ((struct join *)p)->t;
    struct interp *interp = t->interp; /* t's reference keeps interp */
    rank_lock(&interp->mutex, RANK_INTERP);
    struct tstate *ts = t->ts;
    int ending = !ts || (ts->has_pending && ts->defer == 0) || ts->has_delivered;
    rank_unlock(&interp->mutex, RANK_INTERP);
    return ending ? JOIN_SPIN_NS : 0;
}

/* Waits for the OS thread to end and reaps it, until `deadline`.  Its
   sentinel is released, so it is past its last tether code, in the C
   library's thread exit, which usually takes less than a park and a
   wake-up: spin first.  But its key destructors run there too, and may
   take any time.  Returns 0, or ETIMEDOUT (not reaped). */
static int reap_os_thread(pthread_t pt, int64_t deadline)
{
    int64_t end = plat_now_ns() + REAP_SPIN_NS;
    if (deadline >= 0 && deadline < end)
        end = deadline;
    for (unsigned i = 1; plat_thread_tryjoin(pt) == EBUSY; i++) {
        if (plat_spin_step(i) && plat_now_ns() >= end)
            return plat_thread_join_until(pt, deadline);
    }
    return 0;
}

/* Reaps the OS thread once: the first joiner to claim the reap does it,
   later joiners wait until it is done.  A claimant whose deadline passes
   gives the claim back (a waiting joiner, or a later one, claims it
   again).  Returns TETHER_OK once reaped, TETHER_ETIMEDOUT if `deadline`
   passed first.  Called without the GIL (the thread's key destructors may
   need it). */
static int reap_once(struct thread *t, int64_t deadline)
{
    int rc = TETHER_OK;
    rank_lock(&t->mutex, RANK_OBJECT);
    while (t->reap != REAP_DONE) {
        if (t->reap == REAP_NOT_YET) {
            t->reap = REAP_IN_PROGRESS;
            rank_unlock(&t->mutex, RANK_OBJECT);
            int err = reap_os_thread(t->pt, deadline);
            rank_lock(&t->mutex, RANK_OBJECT);
            t->reap = err ? REAP_NOT_YET : REAP_DONE;
            pthread_cond_broadcast(&t->cond);
            if (err) {
                rc = TETHER_ETIMEDOUT;
                break;
            }
        } else if (plat_cond_wait(&t->cond, &t->mutex, deadline) &&
                   t->reap != REAP_DONE) {
            rc = TETHER_ETIMEDOUT;
            break;
        }
    }
    rank_unlock(&t->mutex, RANK_OBJECT);
    return rc;
}

/* The wait's finishing step: a joiner that waited reaps before it re-takes
   its GIL. */
static void finish_join(void *p)
{
    struct join *j = p;
    j->reaped = 1;
    j->reap_rc = reap_once(j->t, j->deadline);
}

/* The reap after a join that found the sentinel already released, with
   the caller's GIL released unless the thread was already reaped: past
   its sentinel the OS thread runs its key destructors, which may take the
   GIL (tether_ensure), and a reap by another joiner waits for them too. */
static int reap_released(struct thread *t, int64_t deadline)
{
    rank_lock(&t->mutex, RANK_OBJECT);
    int reaped = t->reap == REAP_DONE;
    rank_unlock(&t->mutex, RANK_OBJECT);
    if (reaped)
        return TETHER_OK;
    struct tstate *ts = ts_current();
    if (ts)
        ts_detach(ts);
    int rc = reap_once(t, deadline);
    if (ts && ts_attach(ts, 1) != TETHER_OK)
        return TETHER_EFINALIZING;
    return rc;
}

int thread_join_obj(struct thread *t, int64_t timeout_ns)
{
    static const char fn[] = "tether_thread_join";
    static const struct waitspin spin = {join_spin, peek_done, finish_join};
    struct join j = {t, plat_deadline(timeout_ns), 0, TETHER_OK};
    struct waitspec w = {&t->mutex, &t->cond, poll_done, NULL, &j};
    int rc = wait_run_spin(fn, &w, &spin, timeout_ns);
    if (rc != TETHER_OK)
        return rc;
    rc = j.reaped ? j.reap_rc : reap_released(t, j.deadline);
    if (rc == TETHER_ETIMEDOUT)
        return err_set(rc, fn, "the timeout elapsed while the thread's OS "
                       "thread was ending (its key destructors still run)");
    if (rc == TETHER_EFINALIZING)
        return err_set(rc, fn, "the interpreter is finalizing; the thread "
                       "stays detached");
    return rc;
}

int tether_thread_join(tether_thread h, int64_t timeout_ns)
{
    static const char fn[] = "tether_thread_join";
    struct thread *t = handle_get_or_misuse(h, HT_THREAD, fn);
    if (!t)
        return TETHER_EBADHANDLE;
    int64_t t0 = TRACE_T0();
    /* Itself: while it runs, its ident says so; past its sentinel (in a
       key destructor) only what its bootstrap noted does, since a
       finished thread's ident may be a new thread's. */
    rank_lock(&t->mutex, RANK_OBJECT);
    int self = (t->ident == plat_thread_ident() && !t->done) ||
               t_started_as == t->handle;
    rank_unlock(&t->mutex, RANK_OBJECT);
    int rc;
    if (self)
        rc = err_misuse(TETHER_EDEADLK, fn, "a thread cannot join itself");
    else if (!t->joinable)
        rc = err_misuse(TETHER_ESTATE, fn, "the thread '%s' was not started by "
                        "tether_thread_start", t->name);
    else
        rc = thread_join_obj(t, timeout_ns);
    TRACE(trace_join(ts_current(), t0, t, rc));
    handle_put(h);
    return rc;
}

