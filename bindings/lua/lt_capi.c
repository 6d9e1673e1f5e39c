/*
 * lt_capi.c - the C interface of tether/lua.h: the table of functions
 * that other Lua C modules find in the registry (TETHER_LUA_API_KEY) to
 * release the GIL around a blocking call.
 *
 * Each function falls back to running with the GIL held where the module's
 * own waits would not hand it over: on a thread the module does not know,
 * and in a finalizer (lt_in_finalizer).  An asynchronous exception that
 * arrives while the GIL is released is never raised into the caller's C
 * code: re-taking the GIL delivers it (TETHER_EASYNC), and it is posted
 * back to the thread and the thread's running coroutine armed
 * (defer_delivered), so that the caller's tether_lua_checkpoint, once it
 * has cleaned up, raises it, or else the next line, call or wait.  The end of the program (TETHER_EFINALIZING,
 * or the state closed meanwhile) leaves Lua as every wait of the module
 * does (lt_leave).
 *
 * The blocking call goes through the core's tether_call_blocking with the
 * caller's unblock function, so whatever wakes the core's blocking calls
 * (a raise, cancel, Ctrl-C, finalize) wakes these too.
 */
#include <stdint.h>

#include "lt.h"
#include "tether/lua.h"

/* Posts an exception that re-taking the GIL delivered back to the calling
   thread, and arms its running coroutine, so that it is raised once control
   is back in Lua.  [gil-held] */
static void defer_delivered(lt_tstate *ts)
{
    int64_t code = 0;
    void *payload = NULL;
    tether_dtor dtor = NULL;
    if (tether_async_fetch(&code, &payload, &dtor) != TETHER_OK)
        return;
    tether_thread self;
    int rc = tether_thread_current(&self);
    if (rc == TETHER_OK) {
        rc = tether_thread_raise(self, code, payload, dtor);
        (void)tether_thread_release(self);
    }
    if (rc != TETHER_OK) { /* not taken: lost, as a raise at a finished thread */
        if (dtor)
            dtor(payload);
        return;
    }
    lt_request_self(ts);
}

/* After the GIL came back (rc: what re-taking it answered). */
static void after_block(lt_tstate *ts, int rc)
{
    if (rc == TETHER_EFINALIZING)
        lt_leave(ts);
    if (rc == TETHER_EASYNC)
        defer_delivered(ts);
    lt_back_in_lua(ts);
}

/* The calling thread's record if it may let the GIL go here, else NULL. */
static lt_tstate *releasable(lua_State *L)
{
    if (lt_in_finalizer(L) || !tether_gil_held())
        return NULL;
    return lt_current_tstate();
}

static void api_save(lua_State *L, tether_lua_saved *s)
{
    s->tstate = 0;
    s->thread = NULL;
    lt_tstate *ts = releasable(L);
    tether_tstate t;
    if (!ts)
        return;
    lt_sigint_rearm();
    if (tether_save_thread(&t) != TETHER_OK)
        return;
    s->tstate = t;
    s->thread = ts;
}

static void api_restore(lua_State *L, tether_lua_saved *s)
{
    (void)L;
    lt_tstate *ts = s->thread;
    if (!ts)
        return;
    s->thread = NULL;
    after_block(ts, tether_restore_thread(s->tstate));
}

/* fn(arg) as the core's blocking call, which loses fn's result when an
   exception is found on the way back. */
typedef struct lt_job {
    int (*fn)(void *);
    void *arg;
    int result, ran;
} lt_job;

static int run_job(void *p)
{
    lt_job *j = p;
    j->result = j->fn(j->arg);
    j->ran = 1;
    return 0;
}

static int api_call_blocking(lua_State *L, int (*fn)(void *), void *arg,
                             tether_lua_unblock_fn ubf, void *ubf_arg, int *result)
{
    lt_tstate *ts = releasable(L);
    if (!ts) {
        *result = fn(arg);
        return TETHER_LUA_RAN;
    }
    lt_sigint_rearm();
    lt_job j = {fn, arg, 0, 0};
    int rc = tether_call_blocking(run_job, &j, ubf, ubf_arg);
    if (rc == TETHER_EASYNC || rc == TETHER_EFINALIZING)
        after_block(ts, rc);
    if (!j.ran && rc != TETHER_EASYNC) { /* refused (cannot happen here) */
        j.result = fn(arg);
        j.ran = 1;
    }
    if (!j.ran)
        return TETHER_LUA_NOT_RUN;
    *result = j.result;
    return rc == TETHER_EASYNC ? TETHER_LUA_PENDING : TETHER_LUA_RAN;
}

static void api_checkpoint(lua_State *L)
{
    lt_tstate *ts = lt_current_tstate();
    if (ts)
        lt_checkpoint(L, ts);
}

static tether_lua_api capi = {
    TETHER_LUA_API_VERSION, (uint32_t)sizeof(tether_lua_api),
    api_save, api_restore, api_call_blocking, api_checkpoint};

void lt_open_capi(lua_State *L)
{
    lua_pushlightuserdata(L, &capi);
    lua_setfield(L, LUA_REGISTRYINDEX, TETHER_LUA_API_KEY);
}
