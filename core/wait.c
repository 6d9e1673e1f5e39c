/*
 * wait.c - interruptible timed waits: the generic wait, sleep, locks and
 * events.
 *
 * Every wait follows one shape (wait_run):
 *
 *   1. try once under the object's mutex, GIL still held;
 *   2. register the object's mutex/cond on the thread state, so that a
 *      raise or finalize can wake exactly this wait, and drop the GIL;
 *   3. wait on the cond until the object is ready, an asynchronous
 *      exception or finalize is flagged in the breaker, or the absolute
 *      monotonic deadline passes;
 *   4. unregister and re-take the GIL with the convoy priority.
 *
 * A wait that usually ends within the cost of a park and a wake-up (a join
 * of a thread that is ending) may spin for a bounded time between 2 and
 * 3, and finish its work (a join reaps the OS thread) before 4, with the
 * GIL still released.
 *
 * The raiser sets the breaker bit first and then, under the interp mutex,
 * looks for a registered wait and broadcasts its cond under its mutex.  The
 * waiter registers before it checks the bit under the object mutex.  So
 * either the waiter sees the bit before sleeping, or the raiser finds the
 * registration and its broadcast reaches the sleeping waiter: no lost
 * wake-up.  This is what CPython cannot do: its waits only end on their
 * own, and the exception waits for them.
 */
#include "alloc.h"
#include "annotate.h"
#include "delay.h"
#include "lockrank.h"
#include "error.h"
#include "handle.h"
#include "internal.h"
#include "platform.h"

#define INTERRUPTS (BREAKER_ASYNC | BREAKER_FINALIZING)

static void set_wait(struct tstate *ts, pthread_mutex_t *m, pthread_cond_t *c)
{
    rank_lock(&ts->interp->mutex, RANK_INTERP);
    ts->wait_mutex = m;
    ts->wait_cond = c;
    rank_unlock(&ts->interp->mutex, RANK_INTERP);
}

/* Step 3: returns poll's final status, ETIMEDOUT, or WAIT_AGAIN when the
   breaker interrupted the wait. */
static int sleep_until_ready(const struct waitspec *w, struct tstate *ts,
                             int64_t deadline)
{
    int rc, expired = 0;
    rank_lock(w->mutex, RANK_OBJECT);
    for (;;) {
        if ((rc = w->poll(w->obj)) != WAIT_AGAIN)
            break;
        if (ts && (atomic_load(&ts->breaker) & INTERRUPTS))
            break;
        if (expired) {
            rc = TETHER_ETIMEDOUT;
            break;
        }
        TETHER_DELAY_POINT("wait.sleep"); /* the object's mutex held */
        expired = plat_cond_wait(w->cond, w->mutex, deadline);
        TETHER_DELAY_POINT(expired ? "wait.expired" : "wait.signalled");
    }
    rank_unlock(w->mutex, RANK_OBJECT);
    return rc;
}

/* Spins, the GIL released, until peek says the object may be ready, the
   breaker interrupts, `budget_ns` has passed or the deadline has.  For
   waits that usually end within the cost of a park and a wake-up: on a
   virtual machine an idle vCPU halts, and waking it takes tens of
   microseconds, more than such a wait itself. */
static void spin_until_ready(const struct waitspec *w,
                             const struct waitspin *s, struct tstate *ts,
                             int64_t budget_ns, int64_t deadline)
{
    int64_t end = plat_now_ns() + budget_ns;
    if (deadline >= 0 && deadline < end)
        end = deadline;
    for (unsigned i = 1;; i++) {
        if (s->peek(w->obj))
            return;
        if (ts && (atomic_load_explicit(&ts->breaker, memory_order_relaxed) &
                   INTERRUPTS))
            return;
        if (plat_spin_step(i) && plat_now_ns() >= end)
            return;
    }
}

static int try_once(const struct waitspec *w)
{
    rank_lock(w->mutex, RANK_OBJECT);
    int rc = w->poll(w->obj);
    rank_unlock(w->mutex, RANK_OBJECT);
    return rc;
}

int wait_run(const char *func, const struct waitspec *w, int64_t timeout_ns)
{
    return wait_run_spin(func, w, NULL, timeout_ns);
}

int wait_run_spin(const char *func, const struct waitspec *w,
                  const struct waitspin *s, int64_t timeout_ns)
{
    int rc = try_once(w);
    if (rc != WAIT_AGAIN)
        return rc;
    int64_t deadline = plat_deadline(timeout_ns);
    /* Asked once, before the first sleep; a wait that goes on after an
       interruption parks at once. */
    int64_t spin = s ? s->budget(w->obj) : 0;
    struct tstate *ts = ts_current();
    for (;;) {
        if (ts && (atomic_load(&ts->breaker) & INTERRUPTS)) {
            rc = breaker_after_block(ts);
            if (rc != TETHER_OK)
                return err_set(rc, func, "%s", rc == TETHER_EASYNC
                               ? "interrupted by an asynchronous exception"
                               : "interrupted by finalize; the thread was detached");
        }
        if (timeout_ns == 0)
            return err_set(TETHER_ETIMEDOUT, func, "the timeout elapsed");
        if (ts) {
            set_wait(ts, w->mutex, w->cond);
            TETHER_DELAY_POINT("wait.registered");
            ts_detach(ts);
        }
        if (spin > 0) {
            spin_until_ready(w, s, ts, spin, deadline);
            spin = 0;
        }
        rc = sleep_until_ready(w, ts, deadline);
        if (rc == TETHER_OK && s)
            s->finish(w->obj);
        if (!ts)
            break;
        TETHER_DELAY_POINT("wait.woken");
        set_wait(ts, NULL, NULL);
        if (ts_attach(ts, GIL_URGENT_WAITED) != TETHER_OK) {
            if (rc == TETHER_OK && w->undo)
                w->undo(w->obj);
            return err_set(TETHER_EFINALIZING, func, "the interpreter is "
                           "finalizing; the thread stays detached");
        }
        if (rc != WAIT_AGAIN)
            break;
        /* Interrupted: deliver at the loop top, or wait on if a defer
           swallowed it meanwhile. */
        timeout_ns = deadline < 0 ? -1 : deadline - plat_now_ns();
        if (timeout_ns < 0 && deadline >= 0)
            timeout_ns = 0;
    }
    if (rc == TETHER_ETIMEDOUT)
        return err_set(rc, func, "the timeout elapsed");
    return rc;
}

/* ---- sleep -------------------------------------------------------------- */

static int poll_never(void *obj)
{
    (void)obj;
    return WAIT_AGAIN;
}

int tether_sleep(int64_t ns)
{
    static const char fn[] = "tether_sleep";
    if (ns < 0)
        return err_misuse(TETHER_EINVAL, fn, "negative duration %lld",
                          (long long)ns);
    struct tstate *ts = ts_current();
    if (!ts) {
        plat_sleep_ns(ns);
        return TETHER_OK;
    }
    if (ns == 0) {
        if (gil_contended(ts->interp->gil) &&
            gil_yield(ts->interp->gil, ts) != TETHER_OK) {
            ts->attached = 0;
            os_set_current(ts->os, NULL);
            return err_set(TETHER_EFINALIZING, fn, "the interpreter is finalizing");
        }
        return breaker_after_block(ts);
    }
    struct waitspec w = {&ts->sleep_mutex, &ts->sleep_cond, poll_never, NULL, NULL};
    int rc = wait_run(fn, &w, ns);
    return rc == TETHER_ETIMEDOUT ? TETHER_OK : rc;
}

/* ---- locks and events: the object waited on ---------------------------- */

/* What a lock and an event share, first in both: what a wait blocks on,
   and whether the object was freed under its waiters. */
struct waitobj {
    /* rank 4 (RANK_OBJECT), never two at once: `dead`, an event's fields,
       and for a lock the sleeping side of its protocol (a waiter sets the
       waiters flag and sleeps without letting go of it; a release that
       cleared the flag signals under it).  A lock's word itself is atomic. */
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int dead; /* freed: waiters leave with EBADHANDLE.  Synchronization: mutex */
};

/*
 * A lock's state is one 64-bit word, [ 32 generation | 32 state ], kept in
 * its handle's slot (handle_word), not in the object: slots are never
 * freed, so the uncontended acquire and release touch it without taking a
 * reference on the handle, and the generation in the word is the handle
 * check (a stale handle's generation never matches; a freed lock's state
 * is LOCK_DEAD).  The state is 0 when unlocked, else owner << 1 | W: the
 * owner is the acquiring thread's lock_owner_id, and W (LOCK_WAITERS) says
 * that a waiter may sleep on the object's cond, so the release must take
 * the object's mutex and signal.
 *
 *   fast acquire   one CAS  gen|0        -> gen|me<<1
 *   fast release   one CAS  gen|me<<1    -> gen|0
 *   anything else  the slow paths, with a handle reference: wait_run polls
 *                  under o.mutex; a poll that finds the lock held sets W
 *                  (CAS) before the waiter sleeps, and a poll that takes it
 *                  keeps W set (a waiter cannot know whether others still
 *                  sleep), so the next release signals again; a release
 *                  that clears W takes o.mutex and signals one waiter.
 *
 * No lost wake-up: a waiter sets W and goes to sleep without letting go of
 * o.mutex; a release that swapped W out takes o.mutex before it signals,
 * so its signal comes after the waiter sleeps, and a release that came
 * before W was set made the waiter's CAS fail and its poll see the lock
 * free.  A spurious W (its waiter timed out or was interrupted) costs one
 * signal that nobody hears.
 */
#define LOCK_WAITERS 1u
#define LOCK_DEAD 0xffffffffu
/* Owner ids are 1 .. LOCK_OWNER_UNKNOWN; the last one is shared by every
   thread beyond two thousand million and never counts as the caller's
   (no EDEADLK for them).  owner << 1 | W never equals LOCK_DEAD. */
#define LOCK_OWNER_UNKNOWN 0x7ffffffeu
#define LOCK_STATE(w) ((uint32_t)(w))
#define LOCK_OWNER(w) (LOCK_STATE(w) >> 1)

struct lock {
    struct waitobj o;
    /* The state word in the handle's slot, and its unlocked value (the
       generation alone).  Synchronization: immutable (the word: atomic). */
    _Atomic uint64_t *word;
    uint64_t unlocked;
};

struct event {
    struct waitobj o;
    int set; /* the flag.  Synchronization: o.mutex */
    /* How many times it was set.  A waiter that saw one value before
       blocking and finds another has been woken by a set, even if a clear
       came before it ran again.  Synchronization: o.mutex. */
    uint64_t sets;
};

/* The calling thread's owner id: a number no other thread of the process
   has (until two thousand million threads have asked), unlike its
   pthread_t or kernel id, which are reused once a thread has exited.
   Synchronization: thread-local; initial-exec, since every fast acquire
   and release reads it. */
static __thread uint32_t t_lock_owner __attribute__((tls_model("initial-exec")));

T_NOINLINE static uint32_t lock_owner_new(void)
{
    static _Atomic uint32_t next; /* Synchronization: atomic */
    uint32_t id = atomic_load_explicit(&next, memory_order_relaxed), n;
    do
        n = id < LOCK_OWNER_UNKNOWN ? id + 1 : LOCK_OWNER_UNKNOWN;
    while (!atomic_compare_exchange_weak_explicit(&next, &id, n,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed));
    t_lock_owner = n;
    return n;
}

static inline uint32_t lock_owner_id(void)
{
    uint32_t id = t_lock_owner;
    return __builtin_expect(id != 0, 1) ? id : lock_owner_new();
}

static void object_dtor(void *p)
{
    struct waitobj *o = p;
    pthread_cond_destroy(&o->cond);
    pthread_mutex_destroy(&o->mutex);
    t_free(o);
}

/* A lock or an event (`size` bytes, starting with its struct waitobj). */
static int object_new(const char *fn, int type, size_t size, uint64_t *out)
{
    if (!out)
        return err_misuse(TETHER_EINVAL, fn, "out is NULL");
    struct waitobj *o = t_calloc(1, size);
    if (!o)
        return err_set(TETHER_ENOMEM, fn, "out of memory");
    pthread_mutex_init(&o->mutex, NULL);
    plat_cond_init(&o->cond);
    if (handle_new(type, o, object_dtor, NULL, out) != TETHER_OK) {
        object_dtor(o);
        return err_set(TETHER_ENOMEM, fn, "out of memory");
    }
    return TETHER_OK;
}

/* Marks the object dead, wakes its waiters and closes the handle. */
static int object_free(const char *fn, int type, uint64_t h)
{
    if (h == 0)
        return TETHER_OK;
    struct waitobj *o = handle_get_or_misuse(h, type, fn);
    if (!o)
        return TETHER_EBADHANDLE;
    rank_lock(&o->mutex, RANK_OBJECT);
    o->dead = 1;
    if (type == HT_LOCK) { /* fast paths fail from now on */
        struct lock *l = (struct lock *)o;
        atomic_store_explicit(l->word, l->unlocked | LOCK_DEAD, memory_order_release);
    }
    pthread_cond_broadcast(&o->cond);
    rank_unlock(&o->mutex, RANK_OBJECT);
    int rc = handle_close(h, type);
    handle_put(h);
    if (rc != TETHER_OK)
        return err_misuse(rc, fn, "the handle was freed concurrently");
    return TETHER_OK;
}

int tether_lock_new(tether_lock *out)
{
    int rc = object_new("tether_lock_new", HT_LOCK, sizeof(struct lock), out);
    if (rc != TETHER_OK)
        return rc;
    /* Not yet shared: the caller learns the handle from *out. */
    struct lock *l = handle_get(*out, HT_LOCK);
    if (l) {
        l->word = handle_word(*out);
        l->unlocked = (uint64_t)handle_generation(*out) << 32;
        atomic_store_explicit(l->word, l->unlocked, memory_order_release);
        handle_put(*out);
    }
    return TETHER_OK;
}

int tether_lock_free(tether_lock h)
{
    return object_free("tether_lock_free", HT_LOCK, h);
}

/* Under o.mutex (wait_run's poll): takes the lock, or flags it so that its
   release signals, before the caller sleeps. */
static int poll_lock(void *p)
{
    struct lock *l = p;
    if (l->o.dead)
        return TETHER_EBADHANDLE;
    uint64_t w = atomic_load_explicit(l->word, memory_order_relaxed);
    for (;;) {
        uint32_t st = LOCK_STATE(w);
        if (st == LOCK_DEAD)
            return TETHER_EBADHANDLE;
        if (st == 0) {
            uint64_t mine = l->unlocked | (uint64_t)lock_owner_id() << 1 | LOCK_WAITERS;
            if (atomic_compare_exchange_weak_explicit(l->word, &w, mine,
                                                      memory_order_acquire,
                                                      memory_order_relaxed)) {
                ann_happens_after(l->word);
                return TETHER_OK;
            }
            continue;
        }
        if (st & LOCK_WAITERS)
            return WAIT_AGAIN;
        if (atomic_compare_exchange_weak_explicit(l->word, &w, w | LOCK_WAITERS,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed)) {
            TETHER_DELAY_POINT("lock.flagged"); /* o.mutex held */
            return WAIT_AGAIN;
        }
    }
}

/* Unlocks (whoever holds it), and wakes a waiter if W was set.  Returns
   TETHER_OK, or TETHER_ESTATE if it was not locked.  o.mutex not held. */
static int lock_unlock(struct lock *l)
{
    uint64_t w = atomic_load_explicit(l->word, memory_order_relaxed);
    do {
        if (LOCK_STATE(w) == 0 || LOCK_STATE(w) == LOCK_DEAD)
            return TETHER_ESTATE;
        TETHER_DELAY_POINT("lock.release.slow");
        ann_happens_before(l->word);
    } while (!atomic_compare_exchange_weak_explicit(l->word, &w, l->unlocked,
                                                    memory_order_release,
                                                    memory_order_relaxed));
    if (LOCK_STATE(w) & LOCK_WAITERS) {
        TETHER_DELAY_POINT("lock.release.before_signal");
        rank_lock(&l->o.mutex, RANK_OBJECT);
        pthread_cond_signal(&l->o.cond);
        rank_unlock(&l->o.mutex, RANK_OBJECT);
    }
    return TETHER_OK;
}

static void undo_lock(void *p)
{
    (void)lock_unlock(p);
}

T_NOINLINE static int lock_acquire_slow(tether_lock h, int64_t timeout_ns)
{
    static const char fn[] = "tether_lock_acquire";
    struct lock *l = handle_get_or_misuse(h, HT_LOCK, fn);
    if (!l)
        return TETHER_EBADHANDLE;
    /* Only this thread can make itself the owner, so what it reads of
       itself holds until it acts (another thread may release the lock
       meanwhile: then the wait below simply succeeds). */
    uint32_t me = lock_owner_id();
    uint64_t w = atomic_load_explicit(l->word, memory_order_relaxed);
    int self = LOCK_STATE(w) != LOCK_DEAD && LOCK_OWNER(w) == me &&
               me != LOCK_OWNER_UNKNOWN;
    int rc;
    if (self && timeout_ns < 0) {
        rc = err_misuse(TETHER_EDEADLK, fn, "the calling thread holds this lock "
                        "and would wait forever");
    } else {
        struct waitspec ws = {&l->o.mutex, &l->o.cond, poll_lock, undo_lock, l};
        rc = wait_run(fn, &ws, timeout_ns);
        if (rc == TETHER_EBADHANDLE)
            err_set(rc, fn, "the lock was freed while waiting");
    }
    handle_put(h);
    return rc;
}

/* The fast path: the handle's type byte, its slot's word, one CAS. */
int tether_lock_acquire(tether_lock h, int64_t timeout_ns)
{
    _Atomic uint64_t *word;
    if (handle_claimed_type(h) == HT_LOCK && (word = handle_word(h))) {
        uint64_t w = (uint64_t)handle_generation(h) << 32;
        if (atomic_compare_exchange_strong_explicit(
                word, &w, w | (uint64_t)lock_owner_id() << 1,
                memory_order_acquire, memory_order_relaxed)) {
            ann_happens_after(word);
            return TETHER_OK;
        }
    }
    return lock_acquire_slow(h, timeout_ns);
}

T_NOINLINE static int lock_release_slow(tether_lock h)
{
    static const char fn[] = "tether_lock_release";
    struct lock *l = handle_get_or_misuse(h, HT_LOCK, fn);
    if (!l)
        return TETHER_EBADHANDLE;
    int rc = lock_unlock(l);
    handle_put(h);
    return rc == TETHER_OK ? rc : err_misuse(rc, fn, "the lock is not locked");
}

/* The fast path: the owner's release with no waiter flagged is one CAS
   back to the generation alone; a release by another thread, or with W
   set, takes the slow path. */
int tether_lock_release(tether_lock h)
{
    _Atomic uint64_t *word;
    if (handle_claimed_type(h) == HT_LOCK && (word = handle_word(h))) {
        uint64_t unlocked = (uint64_t)handle_generation(h) << 32;
        uint64_t w = unlocked | (uint64_t)lock_owner_id() << 1;
        ann_happens_before(word);
        if (atomic_compare_exchange_strong_explicit(word, &w, unlocked,
                                                    memory_order_release,
                                                    memory_order_relaxed))
            return TETHER_OK;
    }
    return lock_release_slow(h);
}

/* ---- events ------------------------------------------------------------- */

int tether_event_new(tether_event *out)
{
    return object_new("tether_event_new", HT_EVENT, sizeof(struct event), out);
}

int tether_event_free(tether_event e)
{
    return object_free("tether_event_free", HT_EVENT, e);
}

static int event_set_to(const char *fn, tether_event h, int value)
{
    struct event *e = handle_get_or_misuse(h, HT_EVENT, fn);
    if (!e)
        return TETHER_EBADHANDLE;
    rank_lock(&e->o.mutex, RANK_OBJECT);
    e->set = value;
    if (value) {
        e->sets++;
        pthread_cond_broadcast(&e->o.cond);
    }
    rank_unlock(&e->o.mutex, RANK_OBJECT);
    handle_put(h);
    return TETHER_OK;
}

int tether_event_set(tether_event e) { return event_set_to("tether_event_set", e, 1); }

void event_notify(uint64_t h)
{
    struct event *e = handle_get(h, HT_EVENT);
    if (!e)
        return;
    rank_lock(&e->o.mutex, RANK_OBJECT);
    e->set = 1;
    e->sets++;
    pthread_cond_broadcast(&e->o.cond);
    rank_unlock(&e->o.mutex, RANK_OBJECT);
    handle_put(h);
}
int tether_event_clear(tether_event e) { return event_set_to("tether_event_clear", e, 0); }

/* One wait on an event: the set count it saw first. */
struct event_wait {
    struct event *e;
    int seen;      /* `sets` was read */
    uint64_t sets;
};

/* Like Python's Event.wait, a waiter returns OK if the event was set at any
   moment after the wait began, even if it was cleared again before the
   waiter could look: the first poll (under the mutex, before blocking)
   notes the set count, and a later one that finds it moved succeeds. */
static int poll_event(void *p)
{
    struct event_wait *w = p;
    struct event *e = w->e;
    if (e->o.dead)
        return TETHER_EBADHANDLE;
    if (e->set)
        return TETHER_OK;
    if (!w->seen) {
        w->seen = 1;
        w->sets = e->sets;
        return WAIT_AGAIN;
    }
    return e->sets != w->sets ? TETHER_OK : WAIT_AGAIN;
}

int tether_event_wait(tether_event h, int64_t timeout_ns)
{
    static const char fn[] = "tether_event_wait";
    struct event *e = handle_get_or_misuse(h, HT_EVENT, fn);
    if (!e)
        return TETHER_EBADHANDLE;
    struct event_wait ew = {e, 0, 0};
    struct waitspec w = {&e->o.mutex, &e->o.cond, poll_event, NULL, &ew};
    int rc = wait_run(fn, &w, timeout_ns);
    if (rc == TETHER_EBADHANDLE)
        err_set(rc, fn, "the event was freed while waiting");
    handle_put(h);
    return rc;
}

int tether_event_is_set(tether_event h)
{
    struct event *e = handle_get_or_misuse(h, HT_EVENT, "tether_event_is_set");
    if (!e)
        return TETHER_EBADHANDLE;
    rank_lock(&e->o.mutex, RANK_OBJECT);
    int set = e->set;
    rank_unlock(&e->o.mutex, RANK_OBJECT);
    handle_put(h);
    return set;
}

void wait_atfork_child_object(int type, void *obj)
{
    if (type != HT_LOCK && type != HT_EVENT)
        return;
    struct waitobj *o = obj;
    pthread_mutex_init(&o->mutex, NULL);
    plat_cond_init(&o->cond);
}
