/*
 * lt_base.c - the ground floor of the binding: what every other file uses.
 * The state record and the calling thread's record, the registry slots
 * they live in, errors, timeouts, waits, asynchronous exceptions, leaving
 * Lua at shutdown, and the sentinel's renewal.  It calls nothing of the
 * binding above it (lt_codec.c is below: an exception raised from another
 * interpreter arrives encoded).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lt.h"

/* Registry keys: the addresses of these. */
static const char k_module = 0;    /* the module table */
static const char k_state = 0;     /* lightuserdata: the lt_state */
static const char k_sentinel = 0;  /* the current sentinel */

/* ------------------------------------------------------------------------
 * The state and the calling thread
 * ---------------------------------------------------------------------- */

lt_state *lt_upvalue_state(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

lt_state *lt_registry_state(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_state);
    lt_state *S = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return S;
}

lt_tstate *lt_current_tstate(void)
{
    void *ud = NULL;
    if (tether_get_thread_userdata(&ud) != TETHER_OK)
        return NULL;
    return ud;
}

void lt_ts_init(lt_tstate *ts, lt_state *S, lt_worker *worker)
{
    ts->S = S;
    ts->worker = worker;
    atomic_init(&ts->running, NULL);
    atomic_init(&ts->requested, 0);
    atomic_init(&ts->arming, 0);
    ts->exit = NULL;
    ts->wait_ev = 0;
    ts->select_ev = 0;
    ts->async_ref = LUA_NOREF;
    ts->cancelled = 0;
    ts->in_hook = 0;
    ts->resumers = NULL;
    ts->outer = NULL;
    ts->tl_outer = NULL;
}

static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;
static int tl_ok;

#ifndef NDEBUG
static pthread_key_t rank_key; /* the ranks the thread holds, a bit each */
static int rank_ok;
#endif

static void tl_init(void)
{
    tl_ok = pthread_key_create(&tl_key, NULL) == 0;
#ifndef NDEBUG
    rank_ok = pthread_key_create(&rank_key, NULL) == 0;
#endif
}

lt_tstate *lt_tl_get(void)
{
    return tl_ok ? pthread_getspecific(tl_key) : NULL;
}

void lt_tl_set(lt_tstate *ts)
{
    if (tl_ok)
        (void)pthread_setspecific(tl_key, ts);
}

void lt_ts_push(lt_tstate *ts)
{
    (void)tether_get_thread_userdata(&ts->outer);
    (void)tether_set_thread_userdata(ts);
    ts->tl_outer = lt_tl_get();
    lt_tl_set(ts);
}

void lt_ts_pop(lt_tstate *ts)
{
    (void)tether_set_thread_userdata(ts->outer);
    ts->outer = NULL;
    if (lt_tl_get() == ts)
        lt_tl_set(ts->tl_outer);
}

void lt_state_ref(lt_state *S)
{
    atomic_fetch_add(&S->refs, 1);
}

void lt_state_unref(lt_state *S)
{
    if (atomic_fetch_sub(&S->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&S->hook_mu);
    pthread_mutex_destroy(&S->dead_mu);
    free(S->plugins);
    free(S);
}

void lt_push_module(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_module);
}
void lt_set_module(lua_State *L)
{
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_module);
}

void lt_set_state(lua_State *L, lt_state *S)
{
    lua_pushlightuserdata(L, S);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_state);
}

void lt_tl_init(void)
{
    (void)pthread_once(&tl_once, tl_init);
}

/* ------------------------------------------------------------------------
 * The lock order, checked (debug builds; see lt_mutex_lock in lt.h)
 * ---------------------------------------------------------------------- */

#ifndef NDEBUG
static const char *const rank_names[LT_RANK__COUNT] = {"hook_mu", "dead_mu", "waitq_mu"};

void lt_rank_take(enum lt_lock_rank r)
{
    if (!rank_ok)
        return;
    uintptr_t held = (uintptr_t)pthread_getspecific(rank_key);
    for (int i = r; i < LT_RANK__COUNT; i++) {
        if (held & ((uintptr_t)1 << i)) {
            fprintf(stderr, "tether (Lua): lock order violated: %s taken while "
                    "%s is held\n", rank_names[r], rank_names[i]);
            abort();
        }
    }
    (void)pthread_setspecific(rank_key, (void *)(held | (uintptr_t)1 << r));
}

void lt_rank_give(enum lt_lock_rank r)
{
    if (!rank_ok)
        return;
    uintptr_t held = (uintptr_t)pthread_getspecific(rank_key);
    (void)pthread_setspecific(rank_key, (void *)(held & ~((uintptr_t)1 << r)));
}
#endif

/* ------------------------------------------------------------------------
 * Errors, waits and asynchronous exceptions
 * ---------------------------------------------------------------------- */

/* 1 if L's stack has a finalizer's frame (Lua names it "__gc", a
   "metamethod"). */
static int runs_gc_metamethod(lua_State *L)
{
    lua_Debug ar;
    for (int level = 0; lua_getstack(L, level, &ar); level++) {
        if (lua_getinfo(L, "n", &ar) && ar.name && ar.namewhat &&
            strcmp(ar.namewhat, "metamethod") == 0 && strcmp(ar.name, "__gc") == 0)
            return 1;
    }
    return 0;
}

int lt_in_finalizer(lua_State *L)
{
    /* Lua stops its collector while a finalizer runs, and lua_gc answers
       -1 to everything then (collectgarbage("count") gives nil).  That is
       state-wide, and other threads run meanwhile when a finalizer lets go
       of the GIL (the module's own, which joins the threads at close), so
       the calling coroutine must also have a finalizer on its stack, which
       Lua names "__gc", a "metamethod". */
    if (lua_gc(L, LUA_GCCOUNT, 0) >= 0)
        return 0;
    if (runs_gc_metamethod(L))
        return 1;
    /* A coroutine that a finalizer resumed has the finalizer on the stack
       of a resumer (the module's resumes under way on this thread). */
    lt_tstate *ts = lt_current_tstate();
    if (!ts || ts->S != lt_registry_state(L))
        return 0;
    for (const struct lt_resumer *r = ts->resumers; r; r = r->prev)
        if (r->from != L && runs_gc_metamethod(r->from))
            return 1;
    return 0;
}

int64_t lt_opt_timeout(lua_State *L, int idx)
{
    int64_t ns = -1;
    if (!lua_isnoneornil(L, idx)) {
        lua_Number s = luaL_checknumber(L, idx);
        luaL_argcheck(L, s >= 0, idx, "timeout must be a non-negative number of seconds");
        if (s < 9e9) /* past INT64_MAX nanoseconds, math.huge included: -1 */
            ns = (int64_t)(s * 1e9);
    }
    return ns != 0 && lt_in_finalizer(L) ? 0 : ns;
}

int lt_status_error(lua_State *L, const char *what, int rc)
{
    lt_state *S = lt_registry_state(L);
    if (S && S->finalized) /* a finalizer that runs after shut_down */
        return luaL_error(L, "%s: the Lua state is closing: tether's runtime "
                          "is finalized", what);
    const char *why = tether_last_error();
    return luaL_error(L, "%s: %s", what, *why ? why : tether_strerror(rc));
}

_Noreturn void lt_leave(lt_tstate *ts)
{
    /* Read before the GIL goes: once it is let go, the closing thread may
       free ts (the main thread's lives in the lt_state). */
    jmp_buf *exit = ts ? ts->exit : NULL;
    if (tether_gil_held()) { /* the state closed under a thread holding it */
        tether_tstate gone;
        (void)tether_save_thread(&gone);
    }
    if (exit)
        longjmp(*exit, 1);
    for (;;) /* nowhere to go back to: this thread must never run again */
        pause();
}

int lt_must_leave(const lt_tstate *ts)
{
    return ts && (atomic_load(&ts->S->closed) ||
                  (ts == &ts->S->main_ts && atomic_load(&ts->S->main_stop)));
}

void lt_back_in_lua(lt_tstate *ts)
{
    if (lt_must_leave(ts))
        lt_leave(ts);
}

int lt_wait_ok(lua_State *L, lt_tstate *ts, int rc, const char *what)
{
    if (rc == TETHER_EFINALIZING || lt_must_leave(ts))
        lt_leave(ts);
    switch (rc) {
    case TETHER_OK:
        return 1;
    case TETHER_ETIMEDOUT:
        return 0;
    case TETHER_EASYNC:
        return lt_raise_async(L, ts);
    default:
        return lt_status_error(L, what, rc);
    }
}

/* Protected: raises the asynchronous exception that lt_end_checkpoint
   saw delivered (argument 1: the thread's lt_tstate, or NULL). */
static int raise_at_end(lua_State *L)
{
    return lt_raise_async(L, lua_touserdata(L, 1));
}

int lt_end_checkpoint(lua_State *co, lt_tstate *ts)
{
    int rc = tether_checkpoint();
    if (rc == TETHER_EFINALIZING || lt_must_leave(ts))
        lt_leave(ts);
    if (rc != TETHER_EASYNC)
        return LUA_OK;
    lua_settop(co, 1);
    lua_pushcfunction(co, raise_at_end);
    lua_pushlightuserdata(co, ts);
    return lua_pcall(co, 1, 0, 1);
}

void lt_checkpoint(lua_State *L, lt_tstate *ts)
{
    if (lt_in_finalizer(L)) /* the GIL is not handed over there */
        return;
    int rc = tether_checkpoint();
    if (rc != TETHER_OK || lt_must_leave(ts))
        (void)lt_wait_ok(L, ts, rc, "tether_checkpoint");
}

/* Pushes the Lua value of an exception taken with tether_async_fetch and
   disposes of its payload. */
static void push_async_value(lua_State *L, int64_t code, void *payload,
                             tether_dtor dtor)
{
    if (dtor == lt_heldref_drop && payload) {
        lt_payload *pl = payload;
        lua_rawgeti(L, LUA_REGISTRYINDEX, pl->ref);
        luaL_unref(L, LUA_REGISTRYINDEX, pl->ref);
        lt_state_unref(pl->S);
        free(pl);
    } else if (dtor == lt_blob_dtor && payload) { /* from another interpreter */
        lt_blob *b = lt_blob_push(L);
        *b = *(lt_blob *)payload;
        free(payload);
        if (lt_decode(L, b->data, b->len) != 1)
            luaL_error(L, "tether: corrupt raised value");
        lua_remove(L, -2);
    } else if (code == LT_ASYNC_CANCEL) {
        lt_push_cancelled(L);
    } else if (code == LT_ASYNC_INTERRUPT) {
        /* lua.c's message, with its position: in a C function of the
           module level 1 is the Lua function that called it, in the
           breaker hook the caller of the function running, as in lua.c's
           own hook. */
        luaL_where(L, 1);
        lua_pushliteral(L, "interrupted!");
        lua_concat(L, 2);
    } else {
        if (dtor)
            dtor(payload);
        lua_pushfstring(L, "tether: asynchronous exception %I raised from C",
                        (lua_Integer)code);
    }
}

/* Remembers the raised value (the top), so that the module's
   coroutine.resume can tell it from an ordinary error and pass it on. */
static void remember_async(lua_State *L, lt_tstate *ts)
{
    luaL_unref(L, LUA_REGISTRYINDEX, ts->async_ref);
    lua_pushvalue(L, -1);
    ts->async_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Posts tether.Cancelled to the calling thread again, so that its next
   checkpoint or wait raises it once more (level-triggered cancellation;
   a tether.deferred block holds it back like any other). */
static void repost_cancel(void)
{
    tether_thread self;
    if (tether_thread_current(&self) != TETHER_OK)
        return;
    (void)tether_thread_raise(self, LT_ASYNC_CANCEL, NULL, NULL);
    (void)tether_thread_release(self);
}

int lt_raise_fetched(lua_State *L, lt_tstate *ts, int64_t code, void *payload,
                     tether_dtor dtor)
{
    push_async_value(L, code, payload, dtor);
    if (code == LT_ASYNC_INTERRUPT && ts)
        ts->S->interrupted = 1;
    if (ts) {
        remember_async(L, ts);
        if (code == LT_ASYNC_CANCEL)
            ts->cancelled = 1;
        if (ts->cancelled)
            repost_cancel();
    } else if (code == LT_ASYNC_CANCEL) {
        repost_cancel();
    }
    return lua_error(L);
}

int lt_raise_async(lua_State *L, lt_tstate *ts)
{
    int64_t code = 0;
    void *payload = NULL;
    tether_dtor dtor = NULL;
    if (tether_async_fetch(&code, &payload, &dtor) != TETHER_OK)
        return luaL_error(L, "tether: no asynchronous exception was delivered");
    return lt_raise_fetched(L, ts, code, payload, dtor);
}

void lt_heldref_drop(void *ref)
{
    lt_heldref *r = ref;
    lt_state *S = r->S;
    lt_mutex_lock(&S->dead_mu, LT_RANK_DEAD);
    int closed = atomic_load(&S->closed);
    if (!closed) {
        r->next = S->dead;
        S->dead = r;
    }
    lt_mutex_unlock(&S->dead_mu, LT_RANK_DEAD);
    if (closed) { /* its registry reference went with the state */
        free(r);
        lt_state_unref(S);
    }
}

void lt_heldref_drain(lua_State *L, lt_state *S)
{
    lt_mutex_lock(&S->dead_mu, LT_RANK_DEAD);
    lt_heldref *r = S->dead;
    S->dead = NULL;
    lt_mutex_unlock(&S->dead_mu, LT_RANK_DEAD);
    while (r) {
        lt_heldref *next = r->next;
        luaL_unref(L, LUA_REGISTRYINDEX, r->ref);
        free(r);
        lt_state_unref(S);
        r = next;
    }
}


/* ------------------------------------------------------------------------
 * The sentinel (its finalizer is the module's: lt_module.c)
 * ---------------------------------------------------------------------- */

void lt_renew_sentinel(lua_State *L, lt_state *S)
{
    if (S->shutting_down) /* the sentinel has done its work */
        return;
    lt_state **p = lua_newuserdatauv(L, sizeof *p, 0);
    *p = NULL; /* the reference only once __gc is set: both may raise */
    if (luaL_getmetatable(L, LT_SENTINEL_MT) != LUA_TTABLE)
        luaL_error(L, "tether: the module is not open in this state");
    lua_setmetatable(L, -2);
    *p = S;
    lt_state_ref(S);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_sentinel);
}

int lt_is_sentinel(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_sentinel);
    int current = lua_rawequal(L, -1, idx);
    lua_pop(L, 1);
    return current;
}

