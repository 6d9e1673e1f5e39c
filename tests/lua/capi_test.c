/*
 * capi_test.c - a third-party Lua C module using tether/lua.h, for
 * test_capi.lua.  It is built against Lua's headers and tether/lua.h only:
 * no link to tether.so or libtether (the test checks it loads without
 * tether too).
 *
 *   capi_test.api_version()        --> the table's version | nil
 *   capi_test.barrier(n, limit)    --> true if n callers were inside the
 *       blocking call at the same time (through call_blocking); false
 *       after `limit` seconds
 *   capi_test.barrier_macro(n, limit)  the same through the macros
 *   capi_test.wait_wake(limit)     --> "woken" (by the unblock function) |
 *       "timeout" | "not run"
 *   capi_test.hold(then)           the GIL released (macros) until go();
 *       then "wait" (wait_wake(20)), "checkpoint" (tether_lua_checkpoint)
 *       or "nothing"
 *   capi_test.go()  capi_test.reset()  capi_test.inside() --> callers in
 *   capi_test.last() --> what the last wait_wake/hold saw
 *   capi_test.ubf_calls() --> how many times the unblock function ran
 *   capi_test.misuse(where) --> a report of the table's functions called
 *       where they must not be: "nested" (inside a blocking call, the GIL
 *       released) or "foreign" (on a thread Lua never ran on, the caller
 *       holding the GIL meanwhile); they must neither raise nor crash
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include <tether/lua.h>

static atomic_int inside, go_flag, ubf_calls;
static const char *last = "none"; /* written and read holding the GIL */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void nap(void)
{
    struct timespec d = {0, 1000000};
    nanosleep(&d, NULL);
}

struct barrier {
    int n;
    double limit;
};

/* Runs without the GIL: in, then wait until n are in. */
static int barrier_fn(void *p)
{
    struct barrier *b = p;
    double end = now() + b->limit;
    atomic_fetch_add(&inside, 1);
    while (atomic_load(&inside) < b->n && now() < end)
        nap();
    return atomic_load(&inside) >= b->n;
}

static int l_barrier(lua_State *L)
{
    struct barrier b = {(int)luaL_checkinteger(L, 1), luaL_checknumber(L, 2)};
    int ok = 0;
    if (tether_lua_call_blocking(L, barrier_fn, &b, NULL, NULL, &ok) != TETHER_LUA_RAN)
        return luaL_error(L, "barrier: not run");
    lua_pushboolean(L, ok);
    return 1;
}

static int l_barrier_macro(lua_State *L)
{
    struct barrier b = {(int)luaL_checkinteger(L, 1), luaL_checknumber(L, 2)};
    int ok;
    TETHER_LUA_BEGIN_ALLOW_THREADS(L)
    ok = barrier_fn(&b);
    TETHER_LUA_END_ALLOW_THREADS
    lua_pushboolean(L, ok);
    return 1;
}

struct wake {
    int fds[2];
    int limit_ms;
};

/* Runs without the GIL: waits on the pipe's read end. */
static int wake_fn(void *p)
{
    struct wake *w = p;
    struct pollfd pfd = {w->fds[0], POLLIN, 0};
    atomic_fetch_add(&inside, 1);
    int rc;
    while ((rc = poll(&pfd, 1, w->limit_ms)) < 0 && errno == EINTR)
        ;
    atomic_fetch_sub(&inside, 1);
    return rc > 0;
}

/* The unblock function: another thread, no GIL needed, does not wait. */
static void wake_ubf(void *p)
{
    struct wake *w = p;
    atomic_fetch_add(&ubf_calls, 1);
    ssize_t n = write(w->fds[1], "x", 1);
    (void)n;
}

static int wait_wake(lua_State *L, double limit)
{
    struct wake w;
    w.limit_ms = (int)(limit * 1000);
    if (pipe(w.fds) != 0)
        return luaL_error(L, "pipe: %s", strerror(errno));
    int woken = 0;
    int rc = tether_lua_call_blocking(L, wake_fn, &w, wake_ubf, &w, &woken);
    close(w.fds[0]);
    close(w.fds[1]);
    last = rc == TETHER_LUA_NOT_RUN ? "not run" : woken ? "woken" : "timeout";
    if (rc == TETHER_LUA_PENDING && !woken)
        last = "pending, not woken";
    tether_lua_checkpoint(L); /* cleaned up: raise what came meanwhile */
    lua_pushstring(L, last);
    return 1;
}

static int l_wait_wake(lua_State *L)
{
    return wait_wake(L, luaL_checknumber(L, 1));
}

static int l_hold(lua_State *L)
{
    const char *then = luaL_checkstring(L, 1);
    last = "holding";
    TETHER_LUA_BEGIN_ALLOW_THREADS(L)
    atomic_fetch_add(&inside, 1);
    double end = now() + 60;
    while (!atomic_load(&go_flag) && now() < end)
        nap();
    atomic_fetch_sub(&inside, 1);
    TETHER_LUA_END_ALLOW_THREADS
    if (strcmp(then, "nothing") == 0)
        return 0;
    if (strcmp(then, "checkpoint") == 0) {
        tether_lua_checkpoint(L); /* raises what arrived meanwhile */
        last = "after checkpoint";
        return 0;
    }
    return wait_wake(L, 20);
}

/* The table's functions called wrongly, with the pointer fetched while
   it was right to (a module that caches it). */
struct misuse {
    lua_State *L;
    const tether_lua_api *api;
    char report[128];
};

static int count_fn(void *p)
{
    (*(int *)p)++;
    return 7;
}

static void misuse_all(struct misuse *m)
{
    int runs = 0, result = 0;
    int rc = m->api->call_blocking(m->L, count_fn, &runs, NULL, NULL, &result);
    tether_lua_saved s = {0, NULL};
    m->api->save(m->L, &s);
    m->api->restore(m->L, &s);
    m->api->restore(m->L, &s); /* twice */
    m->api->checkpoint(m->L);
    snprintf(m->report, sizeof m->report, "rc=%d runs=%d result=%d", rc, runs, result);
}

static int misuse_fn(void *p)
{
    misuse_all(p);
    return 0;
}

static void *misuse_thread(void *p)
{
    misuse_all(p);
    return NULL;
}

static int l_misuse(lua_State *L)
{
    const char *where = luaL_checkstring(L, 1);
    struct misuse m = {L, tether_lua_get_api(L), "not run"};
    if (!m.api)
        return luaL_error(L, "tether is not loaded");
    if (strcmp(where, "nested") == 0) {
        int r;
        if (m.api->call_blocking(L, misuse_fn, &m, NULL, NULL, &r) != TETHER_LUA_RAN)
            return luaL_error(L, "misuse: the outer call did not run");
    } else {
        pthread_t t;
        if (pthread_create(&t, NULL, misuse_thread, &m) != 0)
            return luaL_error(L, "pthread_create failed");
        pthread_join(t, NULL);
    }
    lua_pushstring(L, m.report);
    return 1;
}

static int l_api_version(lua_State *L)
{
    const tether_lua_api *api = tether_lua_get_api(L);
    if (!api)
        return 0;
    lua_pushinteger(L, (lua_Integer)api->version);
    return 1;
}

static int l_go(lua_State *L)
{
    (void)L;
    atomic_store(&go_flag, 1);
    return 0;
}

static int l_reset(lua_State *L)
{
    (void)L;
    atomic_store(&inside, 0);
    atomic_store(&go_flag, 0);
    last = "none";
    return 0;
}

static int l_inside(lua_State *L)
{
    lua_pushinteger(L, atomic_load(&inside));
    return 1;
}

static int l_last(lua_State *L)
{
    lua_pushstring(L, last);
    return 1;
}

static int l_ubf_calls(lua_State *L)
{
    lua_pushinteger(L, atomic_load(&ubf_calls));
    return 1;
}

__attribute__((visibility("default"))) int luaopen_capi_test(lua_State *L)
{
    static const luaL_Reg f[] = {
        {"api_version", l_api_version}, {"barrier", l_barrier},
        {"barrier_macro", l_barrier_macro}, {"wait_wake", l_wait_wake},
        {"hold", l_hold}, {"go", l_go}, {"reset", l_reset}, {"inside", l_inside},
        {"last", l_last}, {"ubf_calls", l_ubf_calls}, {"misuse", l_misuse},
        {NULL, NULL}};
    luaL_newlib(L, f);
    return 1;
}
