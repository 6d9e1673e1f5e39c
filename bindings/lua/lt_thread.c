/*
 * lt_thread.c - tether.thread, its handles, tether.current, tether.threads
 * and the excepthook.
 *
 * A tether.thread is a worker record (lt_worker, lt.h) and an OS thread
 * started with tether_thread_start.  The thread runs fn on its own
 * coroutine under lua_pcall; the results (or the error and its traceback)
 * stay on that coroutine until the record is freed, so every join gets
 * them.
 *
 * Handles.  A Lua handle (lt_handle) owns one reference to the core's
 * thread handle and points at the worker record when there is one (not for
 * the main thread or foreign threads).  A weak table keyed by the handle
 * value keeps one Lua handle per thread while it lives, so that
 * tether.current() == t.  The record counts its Lua handles: an error that
 * ends a thread is reported to tether.excepthook when nobody can join it
 * any more (the thread ends with no handle left, or its last handle is
 * collected) unless a join returned it.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lt.h"

static const char k_cache = 0; /* weak table: handle value -> Lua handle */

typedef struct lt_handle {
    tether_thread h; /* a reference owned by this userdata; 0 when closed */
    lt_worker *w;    /* the worker record, or NULL */
} lt_handle;

/* ------------------------------------------------------------------------
 * Handles
 * ---------------------------------------------------------------------- */

/* Pushes a closed handle. */
static lt_handle *new_handle(lua_State *L)
{
    lt_handle *hd = lua_newuserdatauv(L, sizeof *hd, 0);
    hd->h = 0;
    hd->w = NULL;
    luaL_setmetatable(L, LT_THREAD_MT);
    return hd;
}

static lt_handle *check_handle(lua_State *L, int idx)
{
    lt_handle *hd = luaL_checkudata(L, idx, LT_THREAD_MT);
    luaL_argcheck(L, hd->h != 0, idx, "closed thread handle");
    return hd;
}

static void bind_worker(lt_handle *hd, lt_worker *w)
{
    hd->w = w;
    if (w)
        w->handles++;
}

static lt_worker *find_worker(lt_state *S, tether_thread h)
{
    for (lt_worker *w = S->workers; w; w = w->next)
        if (w->h == h)
            return w;
    return NULL;
}

/* Replaces the handle on the top with the cached handle of the same thread
   if there is one, else caches it.  Raises when out of memory.  A handle
   made before the thread's record knew its handle (tether.threads() in
   the new thread itself, or in a third thread while tether_thread_start
   had not returned) has no record; the creator's handle, cached after the
   start, gives the cached one its record, or joins through the cache would
   lose the results. */
static void cache_or_use(lua_State *L, tether_thread h)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_cache);
    if (lua_rawgeti(L, -1, (lua_Integer)h) != LUA_TNIL) {
        lt_handle *cached = lua_touserdata(L, -1), *cur = lua_touserdata(L, -3);
        if (!cached->w && cur->w)
            bind_worker(cached, cur->w);
        lua_replace(L, -3);
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, (lua_Integer)h);
    lua_pop(L, 1);
}

/* Protected: cache_or_use of the handle at 1. */
static int cache_pcall(lua_State *L)
{
    lua_settop(L, 1);
    cache_or_use(L, ((lt_handle *)lua_touserdata(L, 1))->h);
    return 1;
}

/* cache_or_use of the handle on the top, of a thread that has just
   started, without raising: once the thread runs, an error would lose its
   only handle.  Out of memory, the handle stays uncached; then
   tether.current() in that thread is a handle of its own (equal to it by
   ==, not the same value). */
static void cache_started(lua_State *L)
{
    lua_pushcfunction(L, cache_pcall); /* room: checked before the start */
    lua_pushvalue(L, -2);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK)
        lua_replace(L, -2);
    else
        lua_pop(L, 1);
}

void lt_push_current(lua_State *L, lt_state *S)
{
    lt_tstate *ts = lt_current_tstate();
    lt_handle *hd = new_handle(L);
    int rc = tether_thread_current(&hd->h);
    if (rc != TETHER_OK)
        lt_status_error(L, "current", rc);
    lt_worker *w = ts && ts->worker ? ts->worker : find_worker(S, hd->h);
    bind_worker(hd, w);
    if (w && !w->h)
        w->h = hd->h; /* asked before tether_thread_start returned */
    cache_or_use(L, hd->h);
}

/* ------------------------------------------------------------------------
 * Worker records
 * ---------------------------------------------------------------------- */

static void unlink_worker(lt_state *S, lt_worker *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else if (S->workers == w)
        S->workers = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->next = w->prev = NULL;
}

static void free_worker(lua_State *L, lt_worker *w)
{
    lt_state *S = w->ts.S;
    unlink_worker(S, w);
    luaL_unref(L, LUA_REGISTRYINDEX, w->co_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, w->res_ref);
    lt_ts_release(L, &w->ts);
    free(w);
    lt_state_unref(S);
}

/* Whether the OS thread is done with the record.  Once it has set the
   status it touches the record only while it holds the GIL, which a free
   needs too (the one place it lets go of the GIL after that, inside the
   excepthook, it holds a handle); a thread that left Lua at shutdown is
   done once the core says so. */
static int worker_done(const lt_worker *w)
{
    return w->status != LT_RUNNING || tether_thread_is_alive(w->h) != 1;
}

static void maybe_free(lua_State *L, lt_worker *w)
{
    if (w->handles == 0 && worker_done(w))
        free_worker(L, w);
}

void lt_sweep_workers(lua_State *L, lt_state *S)
{
    lt_worker *w = S->workers;
    while (w) {
        lt_worker *next = w->next;
        maybe_free(L, w);
        w = next;
    }
}

/* A new record, owned by the handle on the top of the stack (if hd is not
   NULL), linked. */
static lt_worker *new_worker(lua_State *L, lt_state *S, lt_handle *hd)
{
    lt_worker *w = calloc(1, sizeof *w);
    if (!w)
        luaL_error(L, "thread: out of memory");
    lt_ts_init(&w->ts, S, w);
    w->co_ref = LUA_NOREF;
    w->res_ref = LUA_NOREF;
    w->status = LT_RUNNING;
    lt_state_ref(S);
    w->next = S->workers;
    if (w->next)
        w->next->prev = w;
    S->workers = w;
    if (hd)
        bind_worker(hd, w);
    return w;
}

/* Gives w its coroutine: [traceback handler, fn, args...] from L's values
   first..last. */
static void load_coroutine(lua_State *L, lt_worker *w, int first, int last)
{
    int n = last - first + 1;
    w->co = lua_newthread(L);
    w->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    w->res = lua_newthread(L);
    w->res_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    w->vals = w->co;
    if (!lua_checkstack(w->co, n + LUA_MINSTACK))
        luaL_error(L, "thread: too many arguments");
    lua_pushlightuserdata(L, w);
    lua_pushcclosure(L, lt_traceback_handler, 1);
    lua_xmove(L, w->co, 1);
    for (int i = first; i <= last; i++) {
        lua_pushvalue(L, i);
        lua_xmove(L, w->co, 1);
    }
    w->nargs = n - 1;
}

/* ------------------------------------------------------------------------
 * The excepthook
 * ---------------------------------------------------------------------- */

int lt_traceback_handler(lua_State *L)
{
    luaL_traceback(L, L, NULL, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, lua_touserdata(L, lua_upvalueindex(1)));
    lua_settop(L, 1);
    return 1;
}

void lt_call_excepthook(lua_State *L, int thread_idx, int err_idx, int tb_idx)
{
    thread_idx = lua_absindex(L, thread_idx);
    err_idx = lua_absindex(L, err_idx);
    tb_idx = lua_absindex(L, tb_idx);
    lt_push_module(L);
    lua_getfield(L, -1, "excepthook");
    lua_remove(L, -2);
    lua_pushvalue(L, thread_idx);
    lua_pushvalue(L, err_idx);
    lua_pushvalue(L, tb_idx);
    /* A cancelled thread stays cancelled (lt_raise_fetched): the report
       itself is not cut short. */
    int deferred = tether_async_defer() == TETHER_OK;
    int st = lua_pcall(L, 3, 0, 0);
    if (deferred)
        (void)tether_async_allow();
    if (st != LUA_OK) {
        const char *why = lt_describe(L, -1, 0);
        const char *what = lt_describe(L, err_idx, 0);
        fprintf(stderr, "tether: tether.excepthook failed (%s) while reporting: %s\n",
                why, what);
        lua_pop(L, 3);
    }
}

/* Copies value i of co to L's top. */
static void push_co_value(lua_State *L, lua_State *co, int i)
{
    if (!lua_checkstack(co, 1))
        luaL_error(L, "tether: stack overflow");
    lua_pushvalue(co, i);
    lua_xmove(co, L, 1);
}

/* Reports w's error with the handle at hd_idx, which stays usable only for
   the duration of the call; the error and traceback are at err_idx and
   err_idx + 1. */
static void report(lua_State *L, lt_worker *w, int hd_idx, int err_idx)
{
    w->reported = 1;
    err_idx = lua_absindex(L, err_idx);
    lt_call_excepthook(L, hd_idx, err_idx, err_idx + 1);
}

/* Protected, on the dying thread's own coroutine: reports its error (the
   arguments are the record, the error and the traceback) with a handle
   that is closed afterwards. */
static int report_from_thread(lua_State *L)
{
    lt_worker *w = lua_touserdata(L, 1);
    lt_handle *hd = new_handle(L);
    int rc = tether_thread_current(&hd->h);
    if (rc != TETHER_OK)
        return lt_status_error(L, "excepthook", rc);
    bind_worker(hd, w);
    report(L, w, -1, 2);
    w->handles--;
    hd->w = NULL;
    (void)tether_thread_release(hd->h);
    hd->h = 0;
    return 0;
}

/* ------------------------------------------------------------------------
 * The thread's life
 * ---------------------------------------------------------------------- */

/* Records how fn ended; co holds [results...] or [err, traceback]. */
static void finish(lt_worker *w, int st)
{
    lua_State *co = w->co;
    lua_remove(co, 1); /* the traceback handler */
    if (st == LUA_OK) {
        w->status = LT_DONE;
        w->nres = lua_gettop(co);
        /* The handler also ran for errors the thread survived (a `load`
           reader's): drop the traceback it kept. */
        if (lua_checkstack(co, 1)) {
            lua_pushnil(co);
            lua_rawsetp(co, LUA_REGISTRYINDEX, w);
        }
        return;
    }
    lua_settop(co, 1);
    if (lua_checkstack(co, 2)) {
        lua_rawgetp(co, LUA_REGISTRYINDEX, w);
        lua_pushnil(co);
        lua_rawsetp(co, LUA_REGISTRYINDEX, w);
    } else {
        lua_pushnil(co);
    }
    lt_push_cancelled(co);
    w->status = lua_rawequal(co, 1, -1) ? LT_CANCELLED : LT_ERROR;
    lua_pop(co, 1);
    w->nres = 2;
    if (w->status == LT_ERROR && w->handles == 0 && lua_checkstack(co, 4)) {
        lua_pushcfunction(co, report_from_thread);
        lua_pushlightuserdata(co, w);
        lua_pushvalue(co, 1);
        lua_pushvalue(co, 2);
        if (lua_pcall(co, 3, 0, 0) != LUA_OK)
            lua_pop(co, 1);
    }
}

/* The thread function: runs holding the GIL. */
static int worker_main(void *arg)
{
    lt_worker *w = arg;
    jmp_buf out;
    if (setjmp(out) != 0)
        return TETHER_EXIT; /* left Lua at shutdown; touches nothing */
    w->ts.exit = &out;
    if (atomic_load(&w->ts.S->closed))
        lt_leave(&w->ts);
    lt_ts_push(&w->ts);
    lt_switch(&w->ts, w->co);
    /* A cancel or raise that came while this thread waited for its first
       GIL found it holding none, so no hook was armed for it: ask for one
       checkpoint at the first line, inside the protected call. */
    lt_request_self(&w->ts);
    int st = lua_pcall(w->co, w->nargs, LUA_MULTRET, 1);
    if (st == LUA_OK)
        st = lt_end_checkpoint(w->co, &w->ts);
    /* From here on (the GIL held throughout) t:raise and t:cancel answer
       false: w->status is no longer LT_RUNNING. */
    finish(w, st);
    /* The results move out of co, which is then empty: a handle to it
       (coroutine.running() in the thread) reads "dead", as a coroutine
       that returned does, and cannot be resumed. */
    if (lua_checkstack(w->res, w->nres)) {
        lua_xmove(w->co, w->res, w->nres);
        w->vals = w->res;
    }
    lt_watch_notify(&w->watchers);
    /* tether.local drops the thread's fields (lt_local.c, a floor up,
       sets the function in the registry) */
    if (lua_checkstack(w->co, 2)) {
        if (lua_getfield(w->co, LUA_REGISTRYINDEX, LT_REG_THREAD_END) != LUA_TFUNCTION)
            lua_pop(w->co, 1);
        else if (lua_pcall(w->co, 0, 0, 0) != LUA_OK)
            lua_pop(w->co, 1);
    }
    lt_switch(&w->ts, NULL);
    lt_ts_pop(&w->ts);
    w->ts.exit = NULL;
    return st == LUA_OK ? TETHER_OK : TETHER_EXIT;
}


void lt_read_thread_opts(lua_State *L, int idx, tether_thread_opts *o)
{
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            const char *k = lt_describe(L, -2, 1);
            const char *v = lt_describe(L, -2, 1);
            lua_pushfstring(L, "options are named fields (name, daemon, stack_size); "
                               "got [%s] = %s", k, v);
            luaL_argerror(L, idx, lua_tostring(L, -1));
        }
        const char *k = lua_tostring(L, -2);
        if (strcmp(k, "name") == 0) {
            size_t len;
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_argerror(L, idx, "option 'name' must be a string");
            o->name = lua_tolstring(L, -1, &len); /* anchored by the options table */
            if (strlen(o->name) != len)
                luaL_argerror(L, idx, "option 'name' must not contain a NUL byte");
            if (len > LT_NAME_MAX) {
                lua_pushfstring(L, "option 'name' is %I bytes long; the limit is %d",
                                (lua_Integer)len, LT_NAME_MAX);
                luaL_argerror(L, idx, lua_tostring(L, -1));
            }
        } else if (strcmp(k, "daemon") == 0) {
            o->daemon = lua_toboolean(L, -1);
        } else if (strcmp(k, "stack_size") == 0) {
            if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
                luaL_argerror(L, idx, "option 'stack_size' must be an integer >= 0");
            lua_Integer n = lua_tointeger(L, -1);
            if (n > 0 && (lua_Unsigned)n < LT_MIN_STACK) {
                lua_pushfstring(L, "option 'stack_size' must be 0 (the default) or at "
                                   "least %d bytes (%d KiB), the stack Lua needs; got %I",
                                (int)LT_MIN_STACK, (int)(LT_MIN_STACK >> 10), n);
                luaL_argerror(L, idx, lua_tostring(L, -1));
            }
            o->stack_size = (size_t)n;
        } else {
            lua_pushfstring(L, "unknown option '%s'", k);
            luaL_argerror(L, idx, lua_tostring(L, -1));
        }
        lua_pop(L, 1);
    }
}

/* tether.thread([opts,] fn, ...) */
static int thread_new(lua_State *L)
{
    lt_state *S = lt_upvalue_state(L);
    lt_tstate *ts = lt_current_tstate();
    tether_thread_opts o = {sizeof o, NULL, ts && ts->worker && ts->worker->daemon, 0};
    int fi = 1;
    if (S->finalized) /* a finalizer run by lua_close after shut_down */
        return lt_status_error(L, "thread", TETHER_EFINALIZING);
    if (lua_type(L, 1) == LUA_TTABLE && !lt_is_callable(L, 1)) {
        lt_read_thread_opts(L, 1, &o);
        fi = 2;
    }
    if (!lt_is_callable(L, fi))
        luaL_typeerror(L, fi, "function");
    int last = lua_gettop(L);
    lt_sweep_workers(L, S);
    lt_handle *hd = new_handle(L);
    lt_worker *w = new_worker(L, S, hd);
    w->daemon = o.daemon;
    load_coroutine(L, w, fi, last);
    /* Everything that may raise comes before the start: once the thread
       runs, an error here would leave it running with no handle. */
    luaL_checkstack(L, 4, "thread");
    lt_renew_sentinel(L, S);
    int rc = tether_thread_start(S->interp, worker_main, w, &o, &hd->h);
    lt_back_in_lua(ts); /* the start let the GIL go */
    if (rc != TETHER_OK) {
        hd->h = 0;
        hd->w = NULL;
        w->handles = 0;
        free_worker(L, w);
        return lt_status_error(L, "thread", rc);
    }
    w->h = hd->h;
    cache_started(L);
    return 1;
}

void lt_thread_start_bare(lua_State *L, lt_state *S, int first, int last,
                          const tether_thread_opts *o, tether_thread *out)
{
    first = lua_absindex(L, first);
    last = lua_absindex(L, last);
    lt_sweep_workers(L, S);
    lt_worker *w = new_worker(L, S, NULL);
    w->daemon = o->daemon;
    load_coroutine(L, w, first, last);
    lt_renew_sentinel(L, S); /* before the start, as in thread_new */
    int rc = tether_thread_start(S->interp, worker_main, w, o, out);
    lt_back_in_lua(lt_current_tstate()); /* the start let the GIL go */
    if (rc != TETHER_OK) {
        free_worker(L, w);
        lt_status_error(L, "thread", rc);
    }
    w->h = *out;
}

/* ------------------------------------------------------------------------
 * Handle methods
 * ---------------------------------------------------------------------- */

static int push_results(lua_State *L, lt_worker *w)
{
    if (!w) { /* a thread tether.thread did not start */
        lua_pushboolean(L, 1);
        return 1;
    }
    luaL_checkstack(L, w->nres + 1, "too many results");
    lua_pushboolean(L, w->status == LT_DONE);
    for (int i = 1; i <= w->nres; i++)
        push_co_value(L, w->vals, i);
    if (w->status != LT_DONE)
        w->reported = 1;
    return w->nres + 1;
}

static int thread_join(lua_State *L)
{
    lt_handle *hd = check_handle(L, 1);
    int64_t ns = lt_opt_timeout(L, 2);
    lt_tstate *ts = lt_current_tstate();
    lt_sigint_rearm();
    int rc = tether_thread_join(hd->h, ns);
    if (rc == TETHER_EDEADLK)
        return luaL_error(L, "join: a thread cannot join itself");
    if (rc == TETHER_ESTATE)
        return luaL_error(L, "join: this thread was not started by tether.thread");
    if (!lt_wait_ok(L, ts, rc, "join")) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        return 2;
    }
    return push_results(L, hd->w);
}

lt_watchlist *lt_thread_source(lua_State *L, int idx)
{
    lt_handle *hd = luaL_testudata(L, idx, LT_THREAD_MT);
    if (!hd)
        return NULL;
    if (!hd->w || hd->h == 0)
        luaL_error(L, "select: %s cannot be waited for (only a thread that "
                   "tether.thread started, with an open handle)", lt_describe(L, idx, 0));
    return &hd->w->watchers;
}

/* A finished thread gives what t:join() would. */
int lt_thread_take(lua_State *L, int idx)
{
    lt_handle *hd = luaL_testudata(L, idx, LT_THREAD_MT);
    if (hd->w->status == LT_RUNNING)
        return -1;
    return push_results(L, hd->w);
}

static int thread_alive(lua_State *L)
{
    lt_handle *hd = check_handle(L, 1);
    lua_pushboolean(L, tether_thread_is_alive(hd->h) == 1);
    return 1;
}

static const char *status_name(const lt_handle *hd)
{
    static const char *const names[] = {"running", "done", "error", "cancelled"};
    if (hd->w)
        return names[hd->w->status];
    return tether_thread_is_alive(hd->h) == 1 ? "running" : "done";
}

static int thread_status(lua_State *L)
{
    lua_pushstring(L, status_name(check_handle(L, 1)));
    return 1;
}

/* t:raise(value): true if the thread was running, false if it finished. */
/* Whether the thread of hd is a tether.thread of this state past its end
   checkpoint: a raise now could never be raised, so it is refused (t:raise
   and t:cancel answer false) rather than lost.  [gil-held] */
static int past_end(const lt_handle *hd)
{
    return hd->w && hd->w->status != LT_RUNNING;
}

static int thread_raise(lua_State *L)
{
    lt_state *S = lt_upvalue_state(L);
    lt_handle *hd = check_handle(L, 1);
    luaL_checkany(L, 2);
    if (past_end(hd)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lt_heldref_drain(L, S);
    lua_settop(L, 2);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lt_payload *pl = malloc(sizeof *pl);
    if (!pl) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        return luaL_error(L, "raise: out of memory");
    }
    *pl = (lt_payload){S, ref, NULL};
    lt_state_ref(S);
    int rc = tether_thread_raise(hd->h, LT_ASYNC_VALUE, pl, lt_heldref_drop);
    if (rc != TETHER_OK) { /* not taken */
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        free(pl);
        lt_state_unref(S);
        if (rc != TETHER_ESTATE)
            return lt_status_error(L, "raise", rc);
    }
    lua_pushboolean(L, rc == TETHER_OK);
    return 1;
}

/* t:cancel(): raises tether.Cancelled in t. */
static int thread_cancel(lua_State *L)
{
    lt_handle *hd = check_handle(L, 1);
    if (past_end(hd)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    int rc = tether_thread_raise(hd->h, LT_ASYNC_CANCEL, NULL, NULL);
    if (rc != TETHER_OK && rc != TETHER_ESTATE)
        return lt_status_error(L, "cancel", rc);
    lua_pushboolean(L, rc == TETHER_OK);
    return 1;
}

/* __index: the methods (upvalue 2), then name, ident and daemon. */
static int thread_index(lua_State *L)
{
    lt_handle *hd = luaL_checkudata(L, 1, LT_THREAD_MT);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL || !hd->h)
        return 1;
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
    const char *name;
    uint64_t ident;
    if (strcmp(k, "name") == 0 && tether_thread_name(hd->h, &name) == TETHER_OK)
        lua_pushstring(L, name);
    else if (strcmp(k, "ident") == 0 && tether_thread_ident(hd->h, &ident) == TETHER_OK)
        lua_pushinteger(L, (lua_Integer)ident);
    else if (strcmp(k, "daemon") == 0)
        lua_pushboolean(L, hd->w && hd->w->daemon);
    else
        lua_pushnil(L);
    return 1;
}

static int thread_tostring(lua_State *L)
{
    lt_handle *hd = luaL_checkudata(L, 1, LT_THREAD_MT);
    const char *name = "?";
    if (!hd->h)
        return lua_pushliteral(L, "tether.thread (closed)"), 1;
    (void)tether_thread_name(hd->h, &name);
    lua_pushfstring(L, "tether.thread: %s (%s)", name, status_name(hd));
    return 1;
}

static int thread_eq(lua_State *L)
{
    lt_handle *a = luaL_testudata(L, 1, LT_THREAD_MT);
    lt_handle *b = luaL_testudata(L, 2, LT_THREAD_MT);
    lua_pushboolean(L, a && b && a->h && a->h == b->h);
    return 1;
}

static int thread_gc(lua_State *L)
{
    lt_handle *hd = lua_touserdata(L, 1);
    lt_worker *w = hd->w;
    if (w) {
        if (w->handles == 1 && w->status == LT_ERROR && !w->reported && L != w->co) {
            push_co_value(L, w->vals, 1);
            push_co_value(L, w->vals, 2);
            report(L, w, 1, -2);
        }
        hd->w = NULL;
        w->handles--;
        maybe_free(L, w);
    }
    (void)tether_thread_release(hd->h);
    hd->h = 0;
    return 0;
}

/* ------------------------------------------------------------------------
 * Module functions
 * ---------------------------------------------------------------------- */

static int module_current(lua_State *L)
{
    lt_push_current(L, lt_upvalue_state(L));
    return 1;
}

/* Lists up to cap live threads into buf; returns their number (which may
   exceed cap: then no reference was kept). */
static size_t list_into(lua_State *L, lt_state *S, tether_thread *buf, size_t cap)
{
    size_t n = 0;
    int rc = tether_thread_list(S->interp, buf, cap, &n);
    if (rc != TETHER_OK)
        lt_status_error(L, "threads", rc);
    if (n > cap) {
        for (size_t i = 0; i < cap; i++)
            (void)tether_thread_release(buf[i]);
    }
    return n;
}

/* tether.threads(): every live thread of the interpreter.  The handles are
   made before the references are taken, so no error can leak one; they
   are kept in a table, not on the stack, which has room for a few dozen
   values only (one handle per thread on the stack overflowed it). */
static int module_threads(lua_State *L)
{
    lt_state *S = lt_upvalue_state(L);
    size_t n = 0, cap = 0;
    tether_thread *buf = NULL;
    do {
        cap = n + 8;
        if (cap > INT_MAX - 1)
            return luaL_error(L, "threads: too many threads");
        lua_settop(L, 0);
        buf = lua_newuserdatauv(L, cap * sizeof *buf, 0); /* 1 */
        lua_createtable(L, (int)cap, 0);                  /* 2: closed handles */
        for (size_t i = 0; i < cap; i++) {
            new_handle(L);
            lua_rawseti(L, 2, (lua_Integer)i + 1);
        }
        n = list_into(L, S, buf, cap);
    } while (n > cap);
    /* Nothing below raises before every reference has its handle. */
    for (size_t i = 0; i < cap; i++) {
        lua_rawgeti(L, 2, (lua_Integer)i + 1);
        if (i < n) {
            lt_handle *hd = lua_touserdata(L, -1);
            hd->h = buf[i];
            bind_worker(hd, find_worker(S, buf[i]));
            lua_pop(L, 1);
        } else { /* a spare: drop it */
            lua_pop(L, 1);
            lua_pushnil(L);
            lua_rawseti(L, 2, (lua_Integer)i + 1);
        }
    }
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 2, (lua_Integer)i + 1);
        cache_or_use(L, buf[i]);
        lua_rawseti(L, 2, (lua_Integer)i + 1);
    }
    return 1;
}

/* Takes the delivered asynchronous exception and disposes of it. */
/* Takes an exception aimed at the exiting thread, which is leaving
   anyway; returns its code. */
static int64_t drop_async(void)
{
    int64_t code = 0;
    void *payload = NULL;
    tether_dtor dtor = NULL;
    if (tether_async_fetch(&code, &payload, &dtor) == TETHER_OK && dtor)
        dtor(payload);
    return code;
}

/* A non-daemon thread still running, other than the caller. */
static int to_join_at_exit(const lt_worker *w, const lt_tstate *self)
{
    return !w->daemon && w->status == LT_RUNNING && !(self && self->worker == w) &&
           tether_thread_is_alive(w->h) == 1;
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Joins the threads to join at exit, up to timeout_ns in all (-1: no
   limit), cancelling each first with `cancel`.  Returns 1 once none is
   left (or the runtime is finalizing), 0 at the deadline or when Ctrl-C
   interrupted the wait. */
static int join_phase(lt_state *S, const lt_tstate *self, int64_t timeout_ns,
                      int cancel)
{
    int64_t deadline = timeout_ns < 0 ? INT64_MAX : now_ns() + timeout_ns;
    for (;;) {
        lt_worker *w = S->workers;
        while (w && !to_join_at_exit(w, self))
            w = w->next;
        if (!w)
            return 1;
        if (cancel)
            (void)tether_thread_raise(w->h, LT_ASYNC_CANCEL, NULL, NULL);
        int64_t left = -1;
        if (deadline != INT64_MAX) {
            left = deadline - now_ns();
            if (left < 0)
                left = 0;
        }
        int rc = tether_thread_join(w->h, left);
        if (rc == TETHER_ETIMEDOUT)
            return 0;
        if (rc == TETHER_EFINALIZING)
            return 1;
        if (rc == TETHER_EASYNC && drop_async() == LT_ASYNC_INTERRUPT) {
            S->interrupted = 1;
            return 0;
        }
    }
}

/* Warns of the non-daemon threads left running at exit. */
static void warn_abandoned(lt_state *S, const lt_tstate *self)
{
    int n = 0;
    for (lt_worker *w = S->workers; w; w = w->next)
        n += to_join_at_exit(w, self);
    fprintf(stderr, "tether: %d thread%s still running at exit after being "
            "cancelled; abandoned:", n, n == 1 ? "" : "s");
    for (lt_worker *w = S->workers; w; w = w->next) {
        const char *name = "?";
        if (to_join_at_exit(w, self)) {
            (void)tether_thread_name(w->h, &name);
            fprintf(stderr, " '%s'", name);
        }
    }
    fputc('\n', stderr);
    fflush(stderr);
}

int lt_join_all(lt_state *S)
{
    lt_tstate *self = lt_current_tstate();
    if (!S->interrupted && join_phase(S, self, S->atexit_ns, 0))
        return 0;
    /* Cancel them all first, so that they end side by side. */
    for (lt_worker *w = S->workers; w; w = w->next)
        if (to_join_at_exit(w, self))
            (void)tether_thread_raise(w->h, LT_ASYNC_CANCEL, NULL, NULL);
    int64_t grace = S->atexit_ns > LT_CANCEL_GRACE_NS ? S->atexit_ns : LT_CANCEL_GRACE_NS;
    if (join_phase(S, self, grace, 1))
        return 0;
    warn_abandoned(S, self);
    return 1;
}

int lt_reap_workers(lt_state *S, int64_t timeout_ns)
{
    int left_alive = 0;
    int64_t deadline = now_ns() + timeout_ns;
    for (lt_worker *w = S->workers; w; w = w->next) {
        if (tether_thread_is_alive(w->h) != 1)
            continue;
        int64_t left = deadline - now_ns();
        left_alive |= tether_thread_join(w->h, left > 0 ? left : 0) == TETHER_ETIMEDOUT;
    }
    return left_alive;
}

void lt_open_thread(lua_State *L, lt_state *S)
{
    static const luaL_Reg methods[] = {
        {"join", thread_join},     {"alive", thread_alive},   {"status", thread_status},
        {"raise", thread_raise},   {"cancel", thread_cancel}, {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", thread_gc}, {"__tostring", thread_tostring}, {"__eq", thread_eq},
        {NULL, NULL}};
    static const luaL_Reg funcs[] = {
        {"thread", thread_new}, {"current", module_current}, {"threads", module_threads},
        {NULL, NULL}};
    lt_new_class(L, S, LT_THREAD_MT, methods, meta, thread_index);
    lua_newtable(L); /* the handle cache, weak-valued */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_cache);
    lua_pushlightuserdata(L, S);
    luaL_setfuncs(L, funcs, 1);
}
