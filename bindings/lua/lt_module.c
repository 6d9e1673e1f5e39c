/*
 * lt_module.c - the top floor of the binding: luaopen_tether, which makes
 * the state record, joins or creates the runtime and opens every part of
 * the module; closing the state (the sentinel's and the anchor's
 * finalizers); and the module functions of no other part:
 * tether.switchinterval, tether.deferred, tether.clock, tether.gil_stats,
 * tether.trace and the default tether.excepthook.  Nothing below calls into it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lt.h"
#include "lt_block.h"

/* Registry keys: the addresses of these. */
static const char k_anchor = 0; /* userdata whose __gc drops the state */
static const char k_guard = 0;  /* tether.deferred's to-be-closed guard */

/* ------------------------------------------------------------------------
 * Closing the state
 * ---------------------------------------------------------------------- */

/* From now on no thread touches the Lua state, and the breaker hook no
   longer touches its coroutines. */
static void mark_closed(lt_state *S)
{
    lt_mutex_lock(&S->hook_mu, LT_RANK_HOOK);
    atomic_store(&S->closed, 1);
    atomic_store(&S->main_ts.running, NULL);
    for (lt_worker *w = S->workers; w; w = w->next)
        atomic_store(&w->ts.running, NULL);
    lt_mutex_unlock(&S->hook_mu, LT_RANK_HOOK);
}

/* How long finalize waits for the non-daemon threads it still finds
   (those of other interpreters: lt_join_all joined this one's): without
   limit, as Python does, unless an exit policy says otherwise. */
static int64_t finalize_ns(const lt_state *S, int abandoned)
{
    if (abandoned || S->interrupted)
        return 0; /* they fail at their next checkpoint or wait */
    return S->atexit_ns;
}

/* What closing the Lua state does first, as Python does at exit: join the
   non-daemon threads, then finalize, which stops the daemon threads (they
   leave Lua at their next checkpoint or wait without touching it). */
static void shut_down(lua_State *L, lt_state *S)
{
    if (S->shutting_down)
        return;
    S->shutting_down = 1;
    lt_tstate *self = lt_current_tstate();
    if (self && self->S == S && self != &S->main_ts)
        atomic_store(&S->main_stop, 1); /* before the GIL is handed over */
    if (S->sigint) {
        lt_sigint_remove();
        S->sigint = 0;
    }
    if (S->interp) {
        int64_t reap_ns = LT_REAP_TIMEOUT_NS;
        int abandoned = lt_join_all(S);
        if (S->owns_runtime) {
            /* Ours to drop, so TETHER_DEBUG does not report it open. */
            (void)tether_thread_release(S->main_thread);
            S->main_thread = 0;
            /* A tether.thread closing the state (os.exit(code, true) in
               it) cannot finalize the runtime (TETHER_ESTATE): then no
               daemon thread is told to leave, and waiting for them would
               only cost the whole timeout. */
            if (tether_runtime_finalize(S->rt, finalize_ns(S, abandoned)) == TETHER_ESTATE)
                reap_ns = 0;
            S->finalized = 1;
        }
        S->left_alive = lt_reap_workers(S, reap_ns);
        if (S->left_alive && !S->owns_runtime)
            fprintf(stderr, "tether: threads still run Lua as the Lua state "
                    "closes: the host must finalize the runtime (or destroy "
                    "the interpreter) before lua_close\n");
        lt_sweep_workers(L, S);
        lt_unload_plugins(S);
    }
    mark_closed(S);
    lt_heldref_drain(L, S);
}

static int sentinel_gc(lua_State *L)
{
    lt_state **p = lua_touserdata(L, 1);
    if (!*p)
        return 0;
    int current = lt_is_sentinel(L, 1);
    /* Only the current sentinel can be finalized while reachable, which
       happens when the state closes; retired ones are plain garbage. */
    if (current)
        shut_down(L, *p);
    lt_state_unref(*p);
    return 0;
}

/* The metatable of the sentinels (lt_renew_sentinel makes them). */
static void make_sentinel_class(lua_State *L)
{
    if (luaL_newmetatable(L, LT_SENTINEL_MT)) {
        lua_pushcfunction(L, sentinel_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
}

/* The anchor is the module's oldest finalizable object, so its __gc is
   the last of the module's to run. */
static int anchor_gc(lua_State *L)
{
    lt_state **p = lua_touserdata(L, 1);
    lt_state *S = *p;
    if (!S)
        return 0;
    *p = NULL;
    shut_down(L, S);
    lt_ts_release(L, &S->main_ts);
    if (lt_tl_get() == &S->main_ts) /* S is freed below */
        lt_tl_set(S->main_ts.tl_outer);
    if (!S->owns_runtime && S->interp) { /* the host's thread lives on */
        void *ud = NULL;
        (void)tether_interp_set_breaker_hook(S->interp, NULL, NULL);
        if (tether_get_thread_userdata(&ud) == TETHER_OK && ud == &S->main_ts)
            (void)tether_set_thread_userdata(NULL);
    }
    (void)tether_thread_release(S->main_thread);
    lt_pool_remove(L, S->pool);
    S->pool = NULL;
    /* A thread the close gave up waiting for may be in the middle of an
       io call with the GIL released, reading a string of the state or
       writing into a buffer of it: when it comes back it leaves without
       touching Lua, but until then that memory must stay. */
    if (S->left_alive)
        lt_alloc_never_free(L);
    lt_state_unref(S);
    return 0;
}

/* Makes the state record, owned by the anchor userdata (so a failure later
   in luaopen_tether leaves nothing behind). */
static lt_state *new_state(lua_State *L)
{
    lt_state **p = lua_newuserdatauv(L, sizeof *p, 0);
    *p = NULL;
    lua_newtable(L);
    lua_pushcfunction(L, anchor_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_anchor);
    lt_state *S = calloc(1, sizeof *S);
    if (!S)
        luaL_error(L, "tether: out of memory");
    atomic_init(&S->refs, 1);
    atomic_init(&S->closed, 0);
    atomic_init(&S->main_stop, 0);
    pthread_mutex_init(&S->hook_mu, NULL);
    pthread_mutex_init(&S->dead_mu, NULL);
    lt_ts_init(&S->main_ts, S, NULL);
    S->atexit_ns = -1;
    *p = S;
    lt_set_state(L, S);
    return S;
}

/* Joins the runtime the host made (registry fields, see lt.h) or creates
   one, leaving the calling thread attached and holding the GIL. */
static void open_runtime(lua_State *L, lt_state *S)
{
    int rc;
    if (lua_getfield(L, LUA_REGISTRYINDEX, LT_REG_HOST_RUNTIME) != LUA_TNIL) {
        S->rt = (tether_runtime)lua_tointeger(L, -1);
        if (lua_getfield(L, LUA_REGISTRYINDEX, LT_REG_HOST_INTERP) != LUA_TNIL)
            S->interp = (tether_interp)lua_tointeger(L, -1);
        else if ((rc = tether_runtime_main_interp(S->rt, &S->interp)) != TETHER_OK)
            lt_status_error(L, "tether: the host's runtime", rc);
        lua_pop(L, 2);
        if (!tether_gil_held())
            luaL_error(L, "tether: the host must hold the interpreter's GIL "
                       "while it requires the module");
        return;
    }
    lua_pop(L, 1);
    /* Each interpreter its own GIL, so that tether.interp runs in parallel;
       the threads of one interpreter still share one. */
    tether_config cfg = {0};
    cfg.size = sizeof cfg;
    cfg.flags = TETHER_CONFIG_PER_INTERP_GIL;
    rc = tether_runtime_create(&cfg, &S->rt);
    if (rc == TETHER_ESTATE)
        luaL_error(L, "tether: this thread already holds a tether GIL (another "
                   "Lua state using tether on the same thread?)");
    if (rc != TETHER_OK)
        lt_status_error(L, "tether: creating the runtime", rc);
    S->owns_runtime = 1;
    if ((rc = tether_runtime_main_interp(S->rt, &S->interp)) != TETHER_OK)
        lt_status_error(L, "tether: the main interpreter", rc);
}

/* Makes the requiring thread known: its userdata, its thread object. */
static void attach_main(lua_State *L, lt_state *S)
{
    atomic_store(&S->main_ts.running, L);
    lt_ts_push(&S->main_ts);
    int rc = tether_thread_current(&S->main_thread);
    if (rc != TETHER_OK)
        lt_status_error(L, "tether: the main thread", rc);
    rc = tether_interp_set_breaker_hook(S->interp, lt_on_breaker, S);
    if (rc != TETHER_OK)
        lt_status_error(L, "tether: the breaker hook", rc);
}

/* ------------------------------------------------------------------------
 * Module functions
 * ---------------------------------------------------------------------- */

static int module_switchinterval(lua_State *L)
{
    lt_state *S = lt_upvalue_state(L);
    uint32_t us = 0;
    int rc;
    if (!lua_isnoneornil(L, 1)) {
        lua_Number s = luaL_checknumber(L, 1);
        luaL_argcheck(L, s > 0 && s <= 10, 1, "interval must be in (0, 10] seconds");
        us = s * 1e6 < 1 ? 1 : (uint32_t)(s * 1e6 + 0.5);
        if ((rc = tether_set_switch_interval(S->rt, us)) != TETHER_OK)
            return lt_status_error(L, "switchinterval", rc);
    }
    if ((rc = tether_get_switch_interval(S->rt, &us)) != TETHER_OK)
        return lt_status_error(L, "switchinterval", rc);
    lua_pushnumber(L, us / 1e6);
    return 1;
}

/* tether.atexit_timeout([seconds]) --> seconds | nil: how long the exit
   waits for non-daemon threads before it cancels them (math.huge: no
   limit, the default). */
static int module_atexit_timeout(lua_State *L)
{
    lt_state *S = lt_upvalue_state(L);
    if (!lua_isnone(L, 1)) {
        lua_Number s = luaL_checknumber(L, 1);
        luaL_argcheck(L, s >= 0, 1, "timeout must be a non-negative number of seconds");
        S->atexit_ns = s >= 9e9 ? -1 : (int64_t)(s * 1e9);
    }
    if (S->atexit_ns < 0)
        lua_pushnil(L);
    else
        lua_pushnumber(L, (lua_Number)S->atexit_ns * 1e-9);
    return 1;
}

/* The guard's __close(guard, err): ends the deferral.  Leaving by an error,
   it also arms the hook so that an exception held back meanwhile is raised
   at the next line instead of being lost. */
static int guard_close(lua_State *L)
{
    (void)tether_async_allow();
    lt_tstate *ts = lt_current_tstate();
    if (!lua_isnil(L, 2) && ts)
        lt_request_self(ts);
    return 0;
}

/* tether.deferred(fn, ...): fn(...) with asynchronous exceptions held back.
   A to-be-closed guard ends the deferral however fn leaves, and fn's errors
   keep their traceback (no pcall in between). */
static int module_deferred(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lt_tstate *ts = lt_current_tstate();
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_guard);
    lua_insert(L, 1);
    lua_toclose(L, 1);
    if (tether_async_defer() != TETHER_OK)
        return lt_status_error(L, "deferred", TETHER_ESTATE);
    lua_call(L, lua_gettop(L) - 2, LUA_MULTRET);
    lua_closeslot(L, 1);
    lt_checkpoint(L, ts);
    return lua_gettop(L) - 1;
}

static int module_clock(lua_State *L)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    lua_pushnumber(L, (lua_Number)t.tv_sec + (lua_Number)t.tv_nsec * 1e-9);
    return 1;
}

static int module_gil_stats(lua_State *L)
{
    tether_gil_stats st = {sizeof st, 0, 0, 0, 0, 0};
    int rc = tether_gil_stats_get(lt_upvalue_state(L)->interp, &st);
    if (rc != TETHER_OK)
        return lt_status_error(L, "gil_stats", rc);
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, (lua_Integer)st.acquisitions);
    lua_setfield(L, -2, "acquisitions");
    lua_pushinteger(L, (lua_Integer)st.switches);
    lua_setfield(L, -2, "switches");
    lua_pushinteger(L, (lua_Integer)st.forced_drops);
    lua_setfield(L, -2, "forced_drops");
    lua_pushnumber(L, (lua_Number)st.wait_ns_total * 1e-9);
    lua_setfield(L, -2, "wait_total");
    lua_pushnumber(L, (lua_Number)st.wait_ns_max * 1e-9);
    lua_setfield(L, -2, "wait_max");
    return 1;
}

static int trace_stop_fn(void *rt)
{
    return tether_trace_stop(*(tether_runtime *)rt);
}

/* tether.trace(path) starts a trace of the runtime into `path`;
   tether.trace() stops it and writes the file (with the GIL released,
   unless in a finalizer).  Both return true or raise. */
static int module_trace(lua_State *L)
{
    lt_state *S = lt_upvalue_state(L);
    int rc;
    if (!lua_isnoneornil(L, 1)) {
        size_t len;
        const char *path = luaL_checklstring(L, 1, &len);
        if (strlen(path) != len) /* C would trace into the part before it */
            return luaL_argerror(L, 1, "the path contains a zero byte");
        if ((rc = tether_trace_start(S->rt, path, -1, 0)) != TETHER_OK)
            return lt_status_error(L, "trace", rc);
        lua_pushboolean(L, 1);
        return 1;
    }
    if (lt_in_finalizer(L))
        rc = tether_trace_stop(S->rt);
    else
        rc = tether_call_blocking(trace_stop_fn, &S->rt, NULL, NULL);
    if (rc == TETHER_EASYNC || rc == TETHER_EFINALIZING)
        lt_wait_ok(L, lt_current_tstate(), rc, "trace");
    else if (rc != TETHER_OK)
        return lt_status_error(L, "trace", rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* The default tether.excepthook(thread, err, traceback). */
static int module_default_excepthook(lua_State *L)
{
    const char *name = "?";
    if (luaL_testudata(L, 1, LT_THREAD_MT) && lua_getfield(L, 1, "name") == LUA_TSTRING)
        name = lua_tostring(L, -1);
    const char *err = lt_describe(L, 2, 0); /* even if its __tostring fails */
    const char *tb = lua_isstring(L, 3) ? lua_tostring(L, 3) : "";
    fprintf(stderr, "tether: exception in thread '%s': %s\n%s\n", name, err, tb);
    fflush(stderr);
    return 0;
}

static const luaL_Reg state_funcs[] = {
    {"switchinterval", module_switchinterval},
    {"deferred", module_deferred},
    {"clock", module_clock},
    {"gil_stats", module_gil_stats},
    {"atexit_timeout", module_atexit_timeout},
    {"trace", module_trace},
    {NULL, NULL}};

static void make_guard(lua_State *L)
{
    lua_newtable(L);
    lua_newtable(L);
    lua_pushcfunction(L, guard_close);
    lua_setfield(L, -2, "__close");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_guard);
}

/* Fills the module table on the top. */
static void fill_module(lua_State *L, lt_state *S)
{
    lua_pushlightuserdata(L, S);
    luaL_setfuncs(L, state_funcs, 1);
    lt_open_thread(L, S);
    lt_open_sync(L, S);
    lt_open_block(L, S);
    lt_open_io(L, S);
    lt_open_ffi(L, S);
    lt_open_channel(L, S);
    lt_open_interp(L, S);
    lt_open_select(L, S);
    lt_open_future(L, S);
    lt_open_local(L, S);
    lt_push_cancelled(L);
    lua_setfield(L, -2, "Cancelled");
    make_guard(L);
    lua_pushcfunction(L, module_default_excepthook);
    lua_setfield(L, -2, "excepthook");
    lua_pushstring(L, tether_version_string());
    lua_setfield(L, -2, "version");
}

/* The codec takes and drops channel references with the core's calls. */
static const lt_chanrefs core_chanrefs = {tether_channel_retain,
                                          tether_channel_release};
static pthread_once_t codec_once = PTHREAD_ONCE_INIT;

static void codec_init(void)
{
    lt_codec_init(&core_chanrefs);
}

int luaopen_tether(lua_State *L)
{
    lt_push_module(L);
    if (lua_type(L, -1) == LUA_TTABLE)
        return 1;
    lua_pop(L, 1);
    lt_tl_init();
    (void)pthread_once(&codec_once, codec_init);
    lt_state *S = new_state(L);
    S->open_module = luaopen_tether;
    make_sentinel_class(L);
    lt_open_codec(L);
    S->pool = lt_pool_install(L);
    open_runtime(L, S);
    attach_main(L, S);
    lua_newtable(L);
    fill_module(L, S);
    lt_open_hooks(L, S);
    lt_open_require(L, S);
    lt_open_capi(L);
    if (S->owns_runtime) /* never in a host that made its own */
        S->sigint = lt_sigint_install();
    lua_pushvalue(L, -1);
    lt_set_module(L);
    lt_renew_sentinel(L, S);
    return 1;
}
