/*
 * lt_sync.c - tether.sleep, lock, rlock, event, condition and queue.
 *
 * Every blocking call here ends in a tether wait, so it drops the GIL while
 * blocked, measures its timeout on the monotonic clock, and is woken by an
 * asynchronous exception (raised as a Lua error) or by shutdown (the thread
 * leaves Lua).
 *
 * lock and event are the core's objects.  rlock adds an owner and a count,
 * kept under the GIL.  condition and queue keep their waiters on lt_waitq
 * lists: a waiter links itself (holding the GIL) and blocks on its own
 * tether event with the GIL dropped, and a notifier (which must hold the
 * GIL to run) unlinks it and sets the event.  The GIL is the mutex of the
 * classic condition variable, so no wake-up can fall between a waiter's
 * check and its sleep.  The links themselves are also under waitq_mu,
 * because a waiter that finalize detaches (TETHER_EFINALIZING) must take
 * its stack record off the list without the GIL.
 */
#define _POSIX_C_SOURCE 200809L

#include <string.h>
#include <time.h>

#include "lt.h"

/* ------------------------------------------------------------------------
 * Wait queues
 * ---------------------------------------------------------------------- */

/* Protects the links of every lt_waitq and of the waiters on them (lt.h),
   in every state of the process: a waiter links itself holding the GIL,
   but may have to unlink itself without it (finalize detached it).  A
   leaf (LT_RANK_WAITQ): nothing is taken and nothing of the core is
   called while it is held; it is held for a few pointer moves. */
static pthread_mutex_t waitq_mu = PTHREAD_MUTEX_INITIALIZER;

void lt_waitq_lock(void)
{
    lt_mutex_lock(&waitq_mu, LT_RANK_WAITQ);
}

void lt_waitq_unlock(void)
{
    lt_mutex_unlock(&waitq_mu, LT_RANK_WAITQ);
}

/* [waitq_mu held] */
static void waitq_link(lt_waitq *q, lt_waiter *w)
{
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail)
        q->tail->next = w;
    else
        q->head = w;
    q->tail = w;
    w->linked = 1;
    atomic_fetch_add_explicit(&q->n, 1, memory_order_relaxed);
}

/* [waitq_mu held] */
static void waitq_unlink(lt_waitq *q, lt_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    w->prev = w->next = NULL;
    w->linked = 0;
    atomic_fetch_sub_explicit(&q->n, 1, memory_order_relaxed);
}

/* Unlinks the oldest waiter of q, marked notified; returns its event, or 0
   if q is empty. */
static tether_event waitq_pop(lt_waitq *q)
{
    tether_event ev = 0;
    lt_mutex_lock(&waitq_mu, LT_RANK_WAITQ);
    lt_waiter *w = q->head;
    if (w) {
        waitq_unlink(q, w);
        w->notified = 1;
        ev = w->ev;
    }
    lt_mutex_unlock(&waitq_mu, LT_RANK_WAITQ);
    return ev;
}

int lt_waitq_wake(lt_waitq *q, int n)
{
    int woken = 0;
    /* No waiter can link meanwhile: that takes the GIL, which we hold. */
    if (atomic_load_explicit(&q->n, memory_order_relaxed) == 0)
        return 0;
    while (woken < n) {
        tether_event ev = waitq_pop(q);
        if (!ev)
            break;
        /* Outside the lock (a leaf).  The waiter may have left already
           (finalize): then its event is a stale handle, or one that it
           no longer waits on, and the set changes nothing that matters. */
        (void)tether_event_set(ev);
        woken++;
    }
    return woken;
}

/* The event a thread waits on: cached on its lt_tstate, or made for this
   wait alone (*own) for a thread the module does not know. */
static int waiter_event(lt_tstate *ts, tether_event *ev, tether_event *own)
{
    *own = 0;
    if (ts && ts->wait_ev) {
        *ev = ts->wait_ev;
        return tether_event_clear(*ev);
    }
    int rc = tether_event_new(ev);
    if (rc == TETHER_OK && ts)
        ts->wait_ev = *ev;
    else if (rc == TETHER_OK)
        *own = *ev;
    return rc;
}

/* Takes w off q if it is still there; returns whether it was notified. */
static int waitq_leave(lt_waitq *q, lt_waiter *w)
{
    lt_mutex_lock(&waitq_mu, LT_RANK_WAITQ);
    if (w->linked)
        waitq_unlink(q, w);
    int notified = w->notified;
    lt_mutex_unlock(&waitq_mu, LT_RANK_WAITQ);
    return notified;
}

int lt_waitq_wait(lt_tstate *ts, lt_waitq *q, int64_t timeout_ns, int *notified)
{
    lt_waiter w = {NULL, NULL, 0, 0, 0};
    tether_event own;
    int rc = waiter_event(ts, &w.ev, &own);
    *notified = 0;
    if (rc != TETHER_OK)
        return rc;
    lt_mutex_lock(&waitq_mu, LT_RANK_WAITQ);
    waitq_link(q, &w);
    lt_mutex_unlock(&waitq_mu, LT_RANK_WAITQ);
    lt_sigint_rearm();
    rc = tether_event_wait(w.ev, timeout_ns);
    /* Every way out unlinks the record, which dies with this frame: with
       TETHER_EFINALIZING too, when this thread no longer holds the GIL
       and is about to leave Lua (a finalizer's q:put would otherwise walk
       into a dead stack; issue 20).  q itself is still there: it is
       freed only once the state is closed, after the threads have left. */
    *notified = waitq_leave(q, &w);
    if (*notified && rc != TETHER_OK && rc != TETHER_ETIMEDOUT)
        lt_waitq_wake(q, 1); /* leaving by an exception: pass the wake-up on */
    if (own)
        (void)tether_event_free(own);
    return rc;
}

void lt_ts_release(lua_State *L, lt_tstate *ts)
{
    (void)tether_event_free(ts->wait_ev);
    ts->wait_ev = 0;
    (void)tether_event_free(ts->select_ev);
    ts->select_ev = 0;
    luaL_unref(L, LUA_REGISTRYINDEX, ts->async_ref);
    ts->async_ref = LUA_NOREF;
}

/* Monotonic nanoseconds. */
static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* What is left of a timeout that started at `start` (-1 stays for ever). */
static int64_t remaining(int64_t timeout_ns, int64_t start)
{
    if (timeout_ns < 0)
        return -1;
    int64_t left = timeout_ns - (now_ns() - start);
    return left > 0 ? left : 0;
}

/* ------------------------------------------------------------------------
 * sleep
 * ---------------------------------------------------------------------- */

static int module_sleep(lua_State *L)
{
    lua_Number s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0, 1, "duration must be a non-negative number of seconds");
    int64_t ns = s >= 9e9 ? INT64_MAX : (int64_t)(s * 1e9);
    if (lt_in_finalizer(L))
        return 0; /* not even sleep(0), which hands the GIL over */
    lt_tstate *ts = lt_current_tstate();
    lt_sigint_rearm();
    lt_wait_ok(L, ts, tether_sleep(ns), "sleep");
    return 0;
}

/* ------------------------------------------------------------------------
 * lock
 * ---------------------------------------------------------------------- */

typedef struct lt_lock {
    tether_lock l; /* 0 until made */
} lt_lock;

static lt_lock *check_lock(lua_State *L)
{
    return luaL_checkudata(L, 1, LT_LOCK_MT);
}

static lt_lock *new_lock(lua_State *L)
{
    lt_lock *k = lua_newuserdatauv(L, sizeof *k, 0);
    k->l = 0;
    luaL_setmetatable(L, LT_LOCK_MT);
    int rc = tether_lock_new(&k->l);
    if (rc != TETHER_OK)
        lt_status_error(L, "lock", rc);
    return k;
}

static int lock_new(lua_State *L)
{
    new_lock(L);
    lt_renew_sentinel(L, lt_upvalue_state(L));
    return 1;
}

/* Acquires l waiting up to ns; returns 1, or 0 on timeout. */
static int lock_take(lua_State *L, tether_lock l, int64_t ns)
{
    lt_tstate *ts = lt_current_tstate();
    if (ns != 0)
        lt_sigint_rearm();
    int rc = tether_lock_acquire(l, ns);
    if (rc == TETHER_EDEADLK)
        return luaL_error(L, "acquire: the calling thread holds this lock and "
                          "would wait for ever");
    return lt_wait_ok(L, ts, rc, "acquire");
}

static void lock_give(lua_State *L, tether_lock l)
{
    int rc = tether_lock_release(l);
    if (rc == TETHER_ESTATE)
        luaL_error(L, "release: the lock is not locked");
    if (rc != TETHER_OK)
        lt_status_error(L, "release", rc);
}

/* 1 if l is locked by any thread. */
static int lock_is_locked(lua_State *L, tether_lock l)
{
    int rc = tether_lock_acquire(l, 0);
    if (rc == TETHER_OK) {
        (void)tether_lock_release(l);
        return 0;
    }
    if (rc == TETHER_ETIMEDOUT || rc == TETHER_EDEADLK)
        return 1;
    return lt_wait_ok(L, lt_current_tstate(), rc, "locked");
}

static int lock_acquire(lua_State *L)
{
    lt_lock *k = check_lock(L);
    lua_pushboolean(L, lock_take(L, k->l, lt_opt_timeout(L, 2)));
    return 1;
}

static int lock_release(lua_State *L)
{
    lock_give(L, check_lock(L)->l);
    return 0;
}

static int lock_locked(lua_State *L)
{
    lua_pushboolean(L, lock_is_locked(L, check_lock(L)->l));
    return 1;
}

/* lock:held(): acquires and returns the lock, for `local x <close> = ...`. */
/* Raises the error of a held() that could not wait in a finalizer. */
static int held_in_finalizer(lua_State *L)
{
    return luaL_error(L, "held: the lock is taken, and a wait inside a "
                      "finalizer does not block");
}

static int lock_held(lua_State *L)
{
    int gc = lt_in_finalizer(L);
    if (!lock_take(L, check_lock(L)->l, gc ? 0 : -1))
        return held_in_finalizer(L);
    lua_settop(L, 1);
    return 1;
}

static int lock_gc(lua_State *L)
{
    lt_lock *k = lua_touserdata(L, 1);
    (void)tether_lock_free(k->l);
    k->l = 0;
    return 0;
}

/* ------------------------------------------------------------------------
 * rlock
 * ---------------------------------------------------------------------- */

typedef struct lt_rlock {
    tether_lock l;
    /* Synchronization: gil. */
    pthread_t owner;
    lua_Integer count; /* 0: not held */
} lt_rlock;

static lt_rlock *check_rlock(lua_State *L)
{
    return luaL_checkudata(L, 1, LT_RLOCK_MT);
}

static lt_rlock *new_rlock(lua_State *L)
{
    lt_rlock *r = lua_newuserdatauv(L, sizeof *r, 0);
    memset(r, 0, sizeof *r);
    luaL_setmetatable(L, LT_RLOCK_MT);
    int rc = tether_lock_new(&r->l);
    if (rc != TETHER_OK)
        lt_status_error(L, "rlock", rc);
    return r;
}

static int rlock_new(lua_State *L)
{
    new_rlock(L);
    lt_renew_sentinel(L, lt_upvalue_state(L));
    return 1;
}

static int rlock_mine(const lt_rlock *r)
{
    return r->count > 0 && pthread_equal(r->owner, pthread_self());
}

static int rlock_take(lua_State *L, lt_rlock *r, int64_t ns)
{
    if (rlock_mine(r)) {
        r->count++;
        return 1;
    }
    if (!lock_take(L, r->l, ns))
        return 0;
    r->owner = pthread_self();
    r->count = 1;
    return 1;
}

static void rlock_give(lua_State *L, lt_rlock *r)
{
    if (!rlock_mine(r))
        luaL_error(L, "release: the calling thread does not hold this rlock");
    if (--r->count == 0)
        lock_give(L, r->l);
}

static int rlock_acquire(lua_State *L)
{
    lt_rlock *r = check_rlock(L);
    lua_pushboolean(L, rlock_take(L, r, lt_opt_timeout(L, 2)));
    return 1;
}

static int rlock_release(lua_State *L)
{
    rlock_give(L, check_rlock(L));
    return 0;
}

static int rlock_locked(lua_State *L)
{
    lua_pushboolean(L, check_rlock(L)->count > 0);
    return 1;
}

static int rlock_held(lua_State *L)
{
    int gc = lt_in_finalizer(L);
    if (!rlock_take(L, check_rlock(L), gc ? 0 : -1))
        return held_in_finalizer(L);
    lua_settop(L, 1);
    return 1;
}

static int rlock_gc(lua_State *L)
{
    lt_rlock *r = lua_touserdata(L, 1);
    (void)tether_lock_free(r->l);
    r->l = 0;
    return 0;
}

/* ------------------------------------------------------------------------
 * event
 * ---------------------------------------------------------------------- */

typedef struct lt_event {
    tether_event e;
    lt_watchlist watchers; /* told at every e:set() (tether.select) */
} lt_event;

static tether_event check_event(lua_State *L)
{
    return ((lt_event *)luaL_checkudata(L, 1, LT_EVENT_MT))->e;
}

static int event_new(lua_State *L)
{
    lt_event *ev = lua_newuserdatauv(L, sizeof *ev, 0);
    ev->e = 0;
    ev->watchers.head = NULL;
    luaL_setmetatable(L, LT_EVENT_MT);
    int rc = tether_event_new(&ev->e);
    if (rc != TETHER_OK)
        return lt_status_error(L, "event", rc);
    lt_renew_sentinel(L, lt_upvalue_state(L));
    return 1;
}

static int event_set(lua_State *L)
{
    int rc = tether_event_set(check_event(L));
    if (rc != TETHER_OK)
        return lt_status_error(L, "set", rc);
    lt_watch_notify(&((lt_event *)lua_touserdata(L, 1))->watchers);
    return 0;
}

static int event_clear(lua_State *L)
{
    int rc = tether_event_clear(check_event(L));
    return rc == TETHER_OK ? 0 : lt_status_error(L, "clear", rc);
}

static int event_is_set(lua_State *L)
{
    int rc = tether_event_is_set(check_event(L));
    if (rc < 0)
        return lt_status_error(L, "is_set", rc);
    lua_pushboolean(L, rc);
    return 1;
}

static int event_wait(lua_State *L)
{
    tether_event e = check_event(L);
    int64_t ns = lt_opt_timeout(L, 2);
    lt_tstate *ts = lt_current_tstate();
    lt_sigint_rearm();
    lua_pushboolean(L, lt_wait_ok(L, ts, tether_event_wait(e, ns), "wait"));
    return 1;
}

static int event_gc(lua_State *L)
{
    lt_event *ev = lua_touserdata(L, 1);
    (void)tether_event_free(ev->e);
    ev->e = 0;
    return 0;
}

/* ------------------------------------------------------------------------
 * condition
 * ---------------------------------------------------------------------- */

typedef struct lt_cond {
    lt_waitq q;
    lt_lock *lock;   /* exactly one of these, anchored by user value 1 */
    lt_rlock *rlock;
} lt_cond;

static lt_cond *check_cond(lua_State *L)
{
    return luaL_checkudata(L, 1, LT_COND_MT);
}

/* tether.condition([lock]): a new rlock unless a lock or rlock is given. */
static int condition_new(lua_State *L)
{
    lt_lock *lock = luaL_testudata(L, 1, LT_LOCK_MT);
    lt_rlock *rlock = luaL_testudata(L, 1, LT_RLOCK_MT);
    if (!lock && !rlock && !lua_isnoneornil(L, 1))
        return luaL_typeerror(L, 1, "tether.lock or tether.rlock");
    lua_settop(L, 1);
    lt_cond *c = lua_newuserdatauv(L, sizeof *c, 1);
    memset(c, 0, sizeof *c);
    luaL_setmetatable(L, LT_COND_MT);
    c->lock = lock;
    c->rlock = lock || rlock ? rlock : new_rlock(L);
    if (lock || rlock)
        lua_pushvalue(L, 1);
    lua_setiuservalue(L, 2, 1);
    lt_renew_sentinel(L, lt_upvalue_state(L));
    return 1;
}

static int cond_owned(lua_State *L, lt_cond *c)
{
    return c->rlock ? rlock_mine(c->rlock) : lock_is_locked(L, c->lock->l);
}

/* Releases the lock completely; returns what cond_reacquire restores. */
static lua_Integer cond_release_all(lua_State *L, lt_cond *c)
{
    if (!c->rlock) {
        lock_give(L, c->lock->l);
        return 1;
    }
    lua_Integer saved = c->rlock->count;
    c->rlock->count = 0;
    lock_give(L, c->rlock->l);
    return saved;
}

/* Takes the lock back after a wait, whatever happened during the wait:
   asynchronous exceptions are held back meanwhile (and raised after, by
   the caller's checkpoint).  Returns the status of the acquire. */
static int cond_reacquire(lt_cond *c, lua_Integer saved)
{
    (void)tether_async_defer();
    int rc = tether_lock_acquire(c->rlock ? c->rlock->l : c->lock->l, -1);
    (void)tether_async_allow();
    if (rc == TETHER_OK && c->rlock) {
        c->rlock->owner = pthread_self();
        c->rlock->count = saved;
    }
    return rc;
}

static int condition_wait(lua_State *L)
{
    lt_cond *c = check_cond(L);
    int64_t ns = lt_opt_timeout(L, 2);
    lt_tstate *ts = lt_current_tstate();
    int notified;
    if (!cond_owned(L, c))
        return luaL_error(L, "wait: the condition's lock is not held");
    lua_Integer saved = cond_release_all(L, c);
    int rc = lt_waitq_wait(ts, &c->q, ns, &notified);
    if (rc == TETHER_EFINALIZING)
        lt_leave(ts);
    int back = cond_reacquire(c, saved);
    if (back != TETHER_OK)
        lt_wait_ok(L, ts, back, "wait");
    if (rc != TETHER_ETIMEDOUT)
        lt_wait_ok(L, ts, rc, "wait");
    lt_checkpoint(L, ts);
    lua_pushboolean(L, notified);
    return 1;
}

static int cond_notify(lua_State *L, lt_cond *c, int n)
{
    if (!cond_owned(L, c))
        return luaL_error(L, "notify: the condition's lock is not held");
    lt_waitq_wake(&c->q, n);
    return 0;
}

static int condition_notify(lua_State *L)
{
    lt_cond *c = check_cond(L);
    lua_Integer n = luaL_optinteger(L, 2, 1);
    luaL_argcheck(L, n >= 0, 2, "must be >= 0");
    return cond_notify(L, c, n > INT32_MAX ? INT32_MAX : (int)n);
}

static int condition_notify_all(lua_State *L)
{
    return cond_notify(L, check_cond(L), INT32_MAX);
}

static int condition_acquire(lua_State *L)
{
    lt_cond *c = check_cond(L);
    int64_t ns = lt_opt_timeout(L, 2);
    int ok = c->rlock ? rlock_take(L, c->rlock, ns) : lock_take(L, c->lock->l, ns);
    lua_pushboolean(L, ok);
    return 1;
}

static int condition_release(lua_State *L)
{
    lt_cond *c = check_cond(L);
    if (c->rlock)
        rlock_give(L, c->rlock);
    else
        lock_give(L, c->lock->l);
    return 0;
}

static int condition_held(lua_State *L)
{
    lt_cond *c = check_cond(L);
    if (c->rlock)
        rlock_take(L, c->rlock, -1);
    else
        lock_take(L, c->lock->l, -1);
    lua_settop(L, 1);
    return 1;
}

static int condition_lock(lua_State *L)
{
    check_cond(L);
    lua_getiuservalue(L, 1, 1);
    return 1;
}

/* ------------------------------------------------------------------------
 * queue
 * ---------------------------------------------------------------------- */

typedef struct lt_queue {
    lt_waitq getters, putters;
    lt_watchlist watchers;  /* told at every put (tether.select) */
    lua_Integer maxsize;    /* 0: unbounded */
    lua_Integer head, tail; /* the items are [head, tail) of user value 1 */
} lt_queue;

static lt_queue *check_queue(lua_State *L)
{
    return luaL_checkudata(L, 1, LT_QUEUE_MT);
}

static int queue_new(lua_State *L)
{
    lua_Integer max = luaL_optinteger(L, 1, 0);
    luaL_argcheck(L, max >= 0, 1, "maxsize must be >= 0");
    lt_queue *q = lua_newuserdatauv(L, sizeof *q, 1);
    memset(q, 0, sizeof *q);
    q->maxsize = max;
    luaL_setmetatable(L, LT_QUEUE_MT);
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1);
    lt_renew_sentinel(L, lt_upvalue_state(L));
    return 1;
}

/* Waits on wq for the state queue_ready checks; returns 1 when it holds, 0
   at the timeout. */
static int queue_wait(lua_State *L, lt_queue *q, lt_waitq *wq, int for_put,
                      int64_t timeout_ns)
{
    lt_tstate *ts = lt_current_tstate();
    int64_t start = now_ns();
    for (;;) {
        int ready = for_put ? q->maxsize == 0 || q->tail - q->head < q->maxsize
                            : q->tail > q->head;
        if (ready)
            return 1;
        int64_t left = remaining(timeout_ns, start);
        if (left == 0)
            return 0;
        int notified;
        int rc = lt_waitq_wait(ts, wq, left, &notified);
        if (rc != TETHER_ETIMEDOUT)
            lt_wait_ok(L, ts, rc, for_put ? "put" : "get");
    }
}

/* q:put(v [, timeout]) --> true, or false at the timeout. */
static int queue_put(lua_State *L)
{
    lt_queue *q = check_queue(L);
    luaL_checkany(L, 2);
    int64_t ns = lt_opt_timeout(L, 3);
    lua_settop(L, 2);
    if (!queue_wait(L, q, &q->putters, 1, ns)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_getiuservalue(L, 1, 1);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, q->tail); /* may raise (out of memory): count after */
    q->tail++;
    lt_waitq_wake(&q->getters, 1);
    lt_watch_notify(&q->watchers);
    lua_pushboolean(L, 1);
    return 1;
}

/* q:get([timeout]) --> v, or nil, "timeout". */
static int queue_get(lua_State *L)
{
    lt_queue *q = check_queue(L);
    int64_t ns = lt_opt_timeout(L, 2);
    if (!queue_wait(L, q, &q->getters, 0, ns)) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        return 2;
    }
    lua_getiuservalue(L, 1, 1);
    lua_rawgeti(L, -1, q->head);
    lua_pushnil(L);
    lua_rawseti(L, -3, q->head++);
    lt_waitq_wake(&q->putters, 1);
    return 1;
}

static int queue_size(lua_State *L)
{
    lt_queue *q = check_queue(L);
    lua_pushinteger(L, q->tail - q->head);
    return 1;
}

/* ------------------------------------------------------------------------
 * As sources of tether.select
 * ---------------------------------------------------------------------- */

lt_watchlist *lt_sync_source(lua_State *L, int idx)
{
    lt_queue *q = luaL_testudata(L, idx, LT_QUEUE_MT);
    if (q)
        return &q->watchers;
    lt_event *ev = luaL_testudata(L, idx, LT_EVENT_MT);
    return ev ? &ev->watchers : NULL;
}

/* A queue gives its oldest item, and wakes a blocked putter as q:get
   does (a getter that the item's put woke finds the queue empty and waits
   on); an event gives true while it is set. */
int lt_sync_take(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lt_queue *q = luaL_testudata(L, idx, LT_QUEUE_MT);
    if (q) {
        if (q->tail <= q->head)
            return -1;
        lua_getiuservalue(L, idx, 1);
        lua_rawgeti(L, -1, q->head);
        lua_pushnil(L);
        lua_rawseti(L, -3, q->head++);
        lua_remove(L, -2);
        lt_waitq_wake(&q->putters, 1);
        return 1;
    }
    lt_event *ev = luaL_testudata(L, idx, LT_EVENT_MT);
    int rc = tether_event_is_set(ev->e);
    if (rc < 0)
        return lt_status_error(L, "select", rc);
    if (!rc)
        return -1;
    lua_pushboolean(L, 1);
    return 1;
}

/* ------------------------------------------------------------------------
 * Registration
 * ---------------------------------------------------------------------- */

void lt_open_sync(lua_State *L, lt_state *S)
{
    static const luaL_Reg lock_m[] = {
        {"acquire", lock_acquire}, {"release", lock_release},
        {"locked", lock_locked},   {"held", lock_held},       {NULL, NULL}};
    static const luaL_Reg lock_mt[] = {
        {"__gc", lock_gc}, {"__close", lock_release}, {NULL, NULL}};
    static const luaL_Reg rlock_m[] = {
        {"acquire", rlock_acquire}, {"release", rlock_release},
        {"locked", rlock_locked},   {"held", rlock_held},       {NULL, NULL}};
    static const luaL_Reg rlock_mt[] = {
        {"__gc", rlock_gc}, {"__close", rlock_release}, {NULL, NULL}};
    static const luaL_Reg event_m[] = {
        {"set", event_set},       {"clear", event_clear},
        {"is_set", event_is_set}, {"wait", event_wait},   {NULL, NULL}};
    static const luaL_Reg event_mt[] = {{"__gc", event_gc}, {NULL, NULL}};
    static const luaL_Reg cond_m[] = {
        {"wait", condition_wait},       {"notify", condition_notify},
        {"notify_all", condition_notify_all}, {"acquire", condition_acquire},
        {"release", condition_release}, {"held", condition_held},
        {"lock", condition_lock},       {NULL, NULL}};
    static const luaL_Reg cond_mt[] = {{"__close", condition_release}, {NULL, NULL}};
    static const luaL_Reg queue_m[] = {
        {"put", queue_put}, {"get", queue_get}, {"size", queue_size}, {NULL, NULL}};
    static const luaL_Reg queue_mt[] = {{"__len", queue_size}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {
        {"sleep", module_sleep},         {"lock", lock_new},   {"rlock", rlock_new},
        {"event", event_new},         {"condition", condition_new},
        {"queue", queue_new},         {NULL, NULL}};
    lt_new_class(L, S, LT_LOCK_MT, lock_m, lock_mt, NULL);
    lt_new_class(L, S, LT_RLOCK_MT, rlock_m, rlock_mt, NULL);
    lt_new_class(L, S, LT_EVENT_MT, event_m, event_mt, NULL);
    lt_new_class(L, S, LT_COND_MT, cond_m, cond_mt, NULL);
    lt_new_class(L, S, LT_QUEUE_MT, queue_m, queue_mt, NULL);
    lua_pushlightuserdata(L, S);
    luaL_setfuncs(L, funcs, 1);
}
