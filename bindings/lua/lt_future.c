/*
 * lt_future.c - futures, and the Lua part of the concurrency toolkit
 * (tether.executor, tether.wait, tether.as_completed: lt_executor.lua).
 *
 * A future is the outcome of one call that some thread runs later: it is
 * pending, running, or done (finished, failed, cancelled), and every
 * change happens under the GIL.  The executor's workers run a future with
 * the private run(f [, runner]), in C so that nothing between the task's
 * end and the bookkeeping can be interrupted: it marks the future running
 * (a cancelled one is skipped), calls the function protected with a
 * handler that keeps the worker's traceback, and then, before any Lua
 * line runs, marks it done, so that a future:cancel() from now on cannot
 * reach the next task, and takes back the cancel this task was sent (and
 * the repeats of level-triggered cancellation): the worker goes on with
 * its next task uncancelled.  Only then are the watchers (select,
 * result) told and the done-callbacks called.
 *
 * Uservalues of a future: 1, the call (a packed table: n, fn, args...)
 * until it runs; 2, the outcome (n, results... or err, tb); 3, the
 * done-callbacks (an array); 4, the thread that ran it (for the report of
 * an error nobody retrieved, made at collection through tether.excepthook).
 */
#include <string.h>

#include "lt.h"
#include "lt_executor.h" /* generated from lt_executor.lua */

#define LT_FUTURE_MT "tether.future"
#define LT_REMOTE_MT "tether.remote_error" /* registry: an error with the
                                             traceback of another state */

enum { F_PENDING, F_RUNNING, F_DONE, F_ERROR, F_CANCELLED };

typedef struct lt_future {
    /* Synchronization: gil. */
    int state;
    int retrieved;        /* an error was raised by result or read */
    int cancel_asked;     /* cancel() while it ran: the runner was raised */
    tether_thread runner; /* a reference while F_RUNNING, else 0 */
    lt_watchlist watchers;
} lt_future;

static const char *const state_names[] = {"pending", "running", "done", "error",
                                          "cancelled"};

static lt_future *check_future(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, LT_FUTURE_MT);
}

lt_watchlist *lt_future_source(lua_State *L, int idx)
{
    lt_future *f = luaL_testudata(L, idx, LT_FUTURE_MT);
    return f ? &f->watchers : NULL;
}

int lt_future_done(lua_State *L, int idx)
{
    return ((lt_future *)lua_touserdata(L, idx))->state >= F_DONE;
}

/* Pushes the future's outcome as join does: true, results... | false,
   err, traceback; marks an error retrieved. */
static int push_outcome(lua_State *L, int idx, lt_future *f)
{
    idx = lua_absindex(L, idx);
    if (f->state == F_CANCELLED) {
        lua_pushboolean(L, 0);
        lt_push_cancelled(L);
        lua_pushliteral(L, "");
        return 3;
    }
    lua_getiuservalue(L, idx, 2);
    lua_getfield(L, -1, "n");
    int n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, n + 2, "too many results");
    lua_pushboolean(L, f->state == F_DONE);
    for (int i = 1; i <= n; i++)
        lua_geti(L, -1 - i, i);
    lua_remove(L, -(n + 2));
    if (f->state == F_ERROR)
        f->retrieved = 1;
    return n + 1;
}

int lt_future_take(lua_State *L, int idx)
{
    lt_future *f = lua_touserdata(L, idx);
    if (f->state < F_DONE)
        return -1;
    return push_outcome(L, idx, f);
}

/* Waits until the future at idx is done; 0 at the timeout. */
static int wait_done(lua_State *L, int idx, lt_future *f, int64_t ns)
{
    if (f->state >= F_DONE)
        return 1;
    if (ns == 0 || lt_in_finalizer(L))
        return 0;
    lua_getfield(L, LUA_REGISTRYINDEX, "tether.first_done");
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, idx);
    lua_rawseti(L, -2, 1);
    if (ns < 0)
        lua_pushnil(L);
    else
        lua_pushnumber(L, (lua_Number)ns * 1e-9);
    lua_call(L, 2, 1);
    int done = !lua_isnil(L, -1);
    lua_pop(L, 1);
    return done;
}

/* f:result([timeout]) --> the results | raises the error (a string error
   gets the worker's traceback appended) | raises tether.Cancelled |
   raises "timeout". */
static int future_result(lua_State *L)
{
    lt_future *f = check_future(L, 1);
    int64_t ns = lt_opt_timeout(L, 2);
    lua_settop(L, 1);
    if (!wait_done(L, 1, f, ns))
        return luaL_error(L, "result: the future is not done (timeout)");
    if (f->state == F_CANCELLED) {
        lt_push_cancelled(L);
        return lua_error(L);
    }
    int n = push_outcome(L, 1, f);
    if (f->state == F_DONE)
        return n - 1;
    /* false, err, tb */
    if (lua_type(L, -2) == LUA_TSTRING) {
        lua_pushfstring(L, "%s\nin the worker: %s", lua_tostring(L, -2),
                        lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
        return lua_error(L);
    }
    lua_pop(L, 1);
    return lua_error(L);
}

/* f:exception([timeout]) --> nil (finished) | err, traceback | Cancelled */
static int future_exception(lua_State *L)
{
    lt_future *f = check_future(L, 1);
    int64_t ns = lt_opt_timeout(L, 2);
    lua_settop(L, 1);
    if (!wait_done(L, 1, f, ns))
        return luaL_error(L, "exception: the future is not done (timeout)");
    if (f->state == F_DONE)
        return 0;
    int n = push_outcome(L, 1, f);
    return n - 1;
}

static int future_done(lua_State *L)
{
    lua_pushboolean(L, check_future(L, 1)->state >= F_DONE);
    return 1;
}

static int future_running(lua_State *L)
{
    lua_pushboolean(L, check_future(L, 1)->state == F_RUNNING);
    return 1;
}

static int future_cancelled(lua_State *L)
{
    lua_pushboolean(L, check_future(L, 1)->state == F_CANCELLED);
    return 1;
}

static int future_status(lua_State *L)
{
    lua_pushstring(L, state_names[check_future(L, 1)->state]);
    return 1;
}

/* Calls fn (at the top, popped) with the future at idx, protected; an
   error goes to tether.excepthook with the calling thread. */
static void call_callback(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    luaL_checkstack(L, 6, "future callback");
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 0, 0) == LUA_OK)
        return;
    int err = lua_gettop(L);
    lt_push_current(L, lt_upvalue_state(L));
    lua_pushvalue(L, err);
    luaL_traceback(L, L, "in a done-callback of a future", 1);
    lt_call_excepthook(L, -3, -2, -1);
    lua_settop(L, err - 1);
}

/* The future at idx is done: tells the watchers, runs the callbacks. */
static void completed(lua_State *L, int idx, lt_future *f)
{
    idx = lua_absindex(L, idx);
    lt_watch_notify(&f->watchers);
    lua_getiuservalue(L, idx, 3);
    int cbs = lua_gettop(L);
    if (lua_istable(L, cbs)) {
        lua_pushnil(L);
        lua_setiuservalue(L, idx, 3);
        lua_Integer n = luaL_len(L, cbs);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_geti(L, cbs, i);
            call_callback(L, idx);
        }
    }
    lua_settop(L, cbs - 1);
}

/* f:add_done_callback(fn): fn(f) once f is done, on the thread that
   completes it (at once, here, if it is done already). */
static int future_add_done_callback(lua_State *L)
{
    lt_future *f = check_future(L, 1);
    if (!lt_is_callable(L, 2))
        return luaL_typeerror(L, 2, "function");
    lua_settop(L, 2);
    if (f->state >= F_DONE) {
        call_callback(L, 1);
        return 0;
    }
    if (lua_getiuservalue(L, 1, 3) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setiuservalue(L, 1, 3);
    }
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, luaL_len(L, -2) + 1);
    return 0;
}

/* f:cancel() --> true if the future will not finish normally: a pending
   one never runs; a running one gets tether.Cancelled raised in its task
   (level-triggered in that task only).  false once done. */
static int future_cancel(lua_State *L)
{
    lt_future *f = check_future(L, 1);
    lua_settop(L, 1);
    if (f->state == F_PENDING) {
        f->state = F_CANCELLED;
        lua_pushnil(L);
        lua_setiuservalue(L, 1, 1);
        completed(L, 1, f);
        lua_pushboolean(L, 1);
        return 1;
    }
    if (f->state == F_RUNNING) {
        if (!f->cancel_asked) {
            int rc = tether_thread_raise(f->runner, LT_ASYNC_CANCEL, NULL, NULL);
            if (rc != TETHER_OK && rc != TETHER_ESTATE)
                return lt_status_error(L, "cancel", rc);
            f->cancel_asked = 1;
        }
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    return 1;
}

static int future_tostring(lua_State *L)
{
    lt_future *f = check_future(L, 1);
    lua_pushfstring(L, "tether.future (%s): %p", state_names[f->state], (void *)f);
    return 1;
}

/* An error nobody retrieved is reported now, as the future goes. */
static int future_gc(lua_State *L)
{
    lt_future *f = lua_touserdata(L, 1);
    if (f->runner) {
        (void)tether_thread_release(f->runner);
        f->runner = 0;
    }
    if (f->state != F_ERROR || f->retrieved)
        return 0;
    f->retrieved = 1;
    lua_settop(L, 1);
    lua_getiuservalue(L, 1, 4); /* 2: the thread */
    lua_getiuservalue(L, 1, 2); /* 3: the outcome */
    lua_geti(L, 3, 1);
    if (lua_type(L, -1) == LUA_TSTRING)
        lua_pushfstring(L, "%s (an error of a future nobody retrieved)", lua_tostring(L, -1));
    else
        lua_pushvalue(L, -1);
    lua_geti(L, 3, 2);
    lt_call_excepthook(L, 2, -2, -1);
    return 0;
}

/* The private new(fn, ...) --> a pending future of the call fn(...). */
static int future_new(lua_State *L)
{
    int n = lua_gettop(L); /* the call (submit checked it) */
    lt_future *f = lua_newuserdatauv(L, sizeof *f, 4);
    memset(f, 0, sizeof *f);
    luaL_setmetatable(L, LT_FUTURE_MT);
    lua_createtable(L, n, 1);
    for (int i = 1; i <= n; i++) {
        lua_pushvalue(L, i);
        lua_rawseti(L, -2, i);
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
    lua_setiuservalue(L, -2, 1);
    return 1;
}

/* Takes back the cancel a finished task was sent (and what level-
   triggered cancellation reposted): the worker goes on uncancelled.
   Another exception is posted again, for the worker's next checkpoint. */
static void drain_cancel(lua_State *L, lt_tstate *ts)
{
    if (ts)
        ts->cancelled = 0;
    for (;;) {
        int rc = tether_checkpoint();
        if (rc == TETHER_EFINALIZING || lt_must_leave(ts))
            lt_leave(ts);
        if (rc != TETHER_EASYNC)
            return;
        int64_t code = 0;
        void *payload = NULL;
        tether_dtor dtor = NULL;
        if (tether_async_fetch(&code, &payload, &dtor) != TETHER_OK)
            return;
        if (code == LT_ASYNC_CANCEL && !payload) {
            if (dtor)
                dtor(payload);
            continue;
        }
        tether_thread self;
        if (tether_thread_current(&self) == TETHER_OK) {
            if (tether_thread_raise(self, code, payload, dtor) != TETHER_OK && dtor)
                dtor(payload);
            (void)tether_thread_release(self);
        } else if (dtor) {
            dtor(payload);
        }
        (void)L;
        return;
    }
}

/* The private run(f [, runner]) --> true if it ran, false if it had been
   cancelled.  runner(fn, args...) replaces the plain call fn(args...). */
static int future_run(lua_State *L)
{
    lt_future *f = check_future(L, 1);
    int has_runner = !lua_isnoneornil(L, 2);
    lua_settop(L, 3);
    lt_tstate *ts = lt_current_tstate();
    if (f->state == F_CANCELLED) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (f->state != F_PENDING)
        return luaL_error(L, "run: the future is %s, not pending", state_names[f->state]);
    int rc = tether_thread_current(&f->runner);
    if (rc != TETHER_OK)
        return lt_status_error(L, "run", rc);
    lt_push_current(L, lt_upvalue_state(L)); /* the thread */
    lua_setiuservalue(L, 1, 4);
    f->state = F_RUNNING;
    lua_getiuservalue(L, 1, 1); /* 4: the call */
    lua_pushnil(L);
    lua_setiuservalue(L, 1, 1);
    lua_getfield(L, 4, "n");
    int n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, n + 4, "run: too many arguments");
    lua_pushlightuserdata(L, f);
    lua_pushcclosure(L, lt_traceback_handler, 1); /* 5 */
    int base = lua_gettop(L);
    if (has_runner)
        lua_pushvalue(L, 2);
    for (int i = 1; i <= n; i++)
        lua_geti(L, 4, i);
    int st = lua_pcall(L, n - (has_runner ? 0 : 1), LUA_MULTRET, 5);
    /* The task is over: from here to the end of the bookkeeping nothing
       checkpoints but drain_cancel. */
    int nres = lua_gettop(L) - base;
    (void)tether_thread_release(f->runner);
    f->runner = 0;
    if (st == LUA_OK) {
        f->state = F_DONE;
        lua_createtable(L, nres, 1);
        lua_insert(L, base + 1);
        for (int i = nres; i >= 1; i--)
            lua_rawseti(L, base + 1, i);
        lua_pushinteger(L, nres);
        lua_setfield(L, base + 1, "n");
        lua_pushnil(L); /* the handler's traceback of an error survived */
        lua_rawsetp(L, LUA_REGISTRYINDEX, f);
    } else {
        int err = lua_gettop(L);
        lua_rawgetp(L, LUA_REGISTRYINDEX, f); /* the worker's traceback */
        lua_pushnil(L);
        lua_rawsetp(L, LUA_REGISTRYINDEX, f);
        if (lua_getmetatable(L, err)) { /* from another interpreter */
            luaL_getmetatable(L, LT_REMOTE_MT);
            int remote = lua_rawequal(L, -1, -2);
            lua_pop(L, 2);
            if (remote) {
                lua_geti(L, err, 1);
                lua_geti(L, err, 2);
                lua_replace(L, err + 1);
                lua_replace(L, err);
            }
        }
        lt_push_cancelled(L);
        int cancelled = lua_rawequal(L, err, -1);
        lua_pop(L, 1);
        f->state = cancelled && f->cancel_asked ? F_CANCELLED : F_ERROR;
        lua_createtable(L, 2, 1);
        lua_insert(L, err);
        lua_rawseti(L, err, 2);
        lua_rawseti(L, err, 1);
        lua_pushinteger(L, 2);
        lua_setfield(L, err, "n");
    }
    lua_setiuservalue(L, 1, 2);
    if (st != LUA_OK && f->cancel_asked && !lua_isnoneornil(L, 3)) {
        /* on_cancel(): with the cancel held back, as it cleans up */
        int deferred = tether_async_defer() == TETHER_OK;
        lua_pushvalue(L, 3);
        int cst = lua_pcall(L, 0, 0, 0);
        if (deferred)
            (void)tether_async_allow();
        if (cst != LUA_OK) {
            lt_push_current(L, lt_upvalue_state(L));
            lua_insert(L, -2);
            lua_pushliteral(L, "");
            lt_call_excepthook(L, -3, -2, -1);
            lua_pop(L, 3);
        }
    }
    if (f->cancel_asked || (ts && ts->cancelled))
        drain_cancel(L, ts);
    lua_settop(L, 1);
    completed(L, 1, f);
    lua_pushboolean(L, 1);
    return 1;
}

/* The private check_copy(v): raises the codec's error if v cannot cross
   to another interpreter. */
static int check_copy(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    lt_blob *b = lt_blob_push(L);
    lt_encode(L, b, 1, "argument");
    lt_blob_clear(b);
    return 0;
}

/* The private dump(fn) --> fn's bytecode (no upvalue but _ENV). */
static int dump_fn(lua_State *L)
{
    lt_dump_function(L, 1);
    return 1;
}

/* The private closing() --> true once the state has begun to close
   (lua_close's sentinel ran): the daemon workers are gone from Lua, so an
   executor's finalizer has nobody left to tell.  (They used to leave their
   waits still linked on the queue, which made a put from a finalizer
   crash; they unlink now, issue 20.) */
static int state_closing(lua_State *L)
{
    lt_state *S = lt_upvalue_state(L);
    lua_pushboolean(L, atomic_load(&S->closed) || S->shutting_down);
    return 1;
}

void lt_open_future(lua_State *L, lt_state *S)
{
    static const luaL_Reg methods[] = {
        {"result", future_result},       {"exception", future_exception},
        {"done", future_done},           {"running", future_running},
        {"cancelled", future_cancelled}, {"status", future_status},
        {"cancel", future_cancel},       {"add_done_callback", future_add_done_callback},
        {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", future_gc}, {"__tostring", future_tostring}, {NULL, NULL}};
    static const luaL_Reg priv[] = {
        {"new", future_new},       {"run", future_run},
        {"check_copy", check_copy}, {"dump", dump_fn},
        {"closing", state_closing}, {NULL, NULL}};
    int module = lua_gettop(L);
    lt_new_class(L, S, LT_FUTURE_MT, methods, meta, NULL);
    luaL_newmetatable(L, LT_REMOTE_MT);
    lua_pop(L, 1);
    if (luaL_loadbuffer(L, lt_executor_lua, sizeof lt_executor_lua - 1,
                        "=tether.executor") != LUA_OK)
        lua_error(L);
    lua_pushvalue(L, module);
    lua_newtable(L); /* the private table */
    lua_pushlightuserdata(L, S);
    luaL_setfuncs(L, priv, 1);
    luaL_getmetatable(L, LT_REMOTE_MT);
    lua_setfield(L, -2, "remote_mt");
    luaL_getmetatable(L, LT_FUTURE_MT);
    lua_setfield(L, -2, "future_mt");
    lua_getfield(L, LUA_REGISTRYINDEX, "tether.first_done");
    lua_setfield(L, -2, "first_done");
    lua_call(L, 2, 0);
}
