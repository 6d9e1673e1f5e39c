/*
 * tether/lua.h - letting other Lua C modules release tether's GIL.
 *
 * A Lua C module (a database binding, a compressor, a network client)
 * that makes a blocking call holds tether's GIL through it, so every other
 * thread of the Lua state stops while it blocks.  With this header it can
 * run the call with the GIL released, as CPython's Py_BEGIN_ALLOW_THREADS
 * does, and can be cut short when the thread is cancelled.
 *
 * The module needs no link-time dependency on tether.so, nor on
 * libtether: `require "tether"` puts a versioned table of function pointers
 * (tether_lua_api) in the Lua registry under TETHER_LUA_API_KEY, and the
 * inline functions below look it up at run time.  In a Lua state where
 * tether is not loaded there is no GIL to release: the same calls run the
 * blocking work directly, holding whatever the caller holds.  This file is
 * header-only; it includes only <lua.h> and <stdint.h>, and compiles as
 * C99, C11 and C++.
 *
 * Rules for every function here:
 *  - Call it from a C function that Lua called (the thread running Lua in
 *    L, which holds the GIL when tether is loaded), never while the GIL is
 *    released.
 *  - While the GIL is released (inside `fn`, or between
 *    TETHER_LUA_BEGIN_ALLOW_THREADS and TETHER_LUA_END_ALLOW_THREADS), do
 *    not touch L or any Lua state: other threads run Lua meanwhile.
 *  - An asynchronous exception (t:cancel(), t:raise(v), Ctrl-C in the main
 *    thread) that arrives while the GIL is released is never raised inside
 *    save, restore or call_blocking, so your C code always gets to clean
 *    up.  Call tether_lua_checkpoint(L) once it has, before returning to
 *    Lua: that raises it.  (Otherwise it is raised at the thread's next
 *    line, call or wait, which a thread whose function returns right after
 *    your call may never reach.)
 *  - When the Lua state is closing, or the runtime finalizing, these calls
 *    may not return to your code: the thread leaves Lua the way a Lua error
 *    leaves C functions, without running any more Lua (docs/lua.md, "The
 *    end of the program").  Hold nothing across them that only your code
 *    would free, as for any Lua API call that may raise.
 *
 * Versioning: `version` grows when members are added at the end of the
 * table; `size` is the size of the table the loaded module provides.  The
 * helpers accept any table of version >= 1 whose size covers the members
 * of version 1.  A member added later must be checked against `size`
 * before use.  An incompatible change would use another registry key.
 */
#ifndef TETHER_LUA_H
#define TETHER_LUA_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The registry field holding a light userdata that points to the module's
   tether_lua_api (static storage: valid as long as the process runs). */
#define TETHER_LUA_API_KEY "tether.lua_api"
/* The version of tether_lua_api this header describes. */
#define TETHER_LUA_API_VERSION 1

/* call_blocking's answers. */
#define TETHER_LUA_RAN 0     /* fn ran; *result is what it returned */
#define TETHER_LUA_NOT_RUN 1 /* fn did not run: an asynchronous exception is
                                pending for this thread */
#define TETHER_LUA_PENDING 2 /* fn ran (*result is what it returned), and an
                                asynchronous exception came meanwhile: the
                                unblock function probably cut fn short */

/* What save stores and restore takes back.  Opaque. */
typedef struct tether_lua_saved {
    uint64_t tstate;
    void *thread;
} tether_lua_saved;

/* Cuts a blocking call short: closes a descriptor, writes a wake-up pipe,
   sets a flag that fn polls.  It is called on another thread (the one
   that cancels or raises, or finalizes), which may hold a GIL; it must be
   quick and must not wait, nor call Lua or anything of this header.  It is
   never called after call_blocking has returned. */
typedef void (*tether_lua_unblock_fn)(void *arg);

/* The table in the registry.  Every function is [gil-held]: called by the
   thread running Lua in L. */
typedef struct tether_lua_api {
    uint32_t version; /* TETHER_LUA_API_VERSION of the loaded module */
    uint32_t size;    /* sizeof its tether_lua_api */

    /* Releases the GIL; restore takes it back.  `*s` must be passed to
       restore on the same thread, once.  In a finalizer (__gc), or on a
       thread that tether does not know, the GIL is kept and restore does
       nothing. */
    void (*save)(lua_State *L, tether_lua_saved *s);
    /* Takes the GIL back.  An asynchronous exception that came meanwhile
       is raised by checkpoint (or at the thread's next line, call or
       wait), not here. */
    void (*restore)(lua_State *L, tether_lua_saved *s);

    /* Runs fn(arg) with the GIL released and stores its return value in
       *result.  While fn runs, t:cancel(), t:raise(v), Ctrl-C (in the main
       thread) or the end of the program call ubf(ubf_arg) from the raising
       thread, so that fn returns early; ubf may be NULL (fn then runs to
       its end).  Returns TETHER_LUA_RAN; TETHER_LUA_PENDING when fn ran
       and an exception came meanwhile; TETHER_LUA_NOT_RUN when one was
       already pending (fn was not called).  A pending exception is raised
       by checkpoint (or at the next line, call or wait). */
    int (*call_blocking)(lua_State *L, int (*fn)(void *arg), void *arg,
                         tether_lua_unblock_fn ubf, void *ubf_arg, int *result);

    /* Raises, as a Lua error, an asynchronous exception pending for this
       thread (and hands the GIL over if another thread waits for it); does
       nothing otherwise. */
    void (*checkpoint)(lua_State *L);
} tether_lua_api;

/* The size of a version 1 table. */
#define TETHER_LUA_API_V1_SIZE \
    (offsetof(tether_lua_api, checkpoint) + sizeof(void (*)(lua_State *)))

/* The table of the tether module loaded in L, or NULL if none is (or it
   is of an unknown kind).  [gil-held] */
static inline const tether_lua_api *tether_lua_get_api(lua_State *L)
{
    const tether_lua_api *api = NULL;
    if (lua_getfield(L, LUA_REGISTRYINDEX, TETHER_LUA_API_KEY) == LUA_TLIGHTUSERDATA) {
        api = (const tether_lua_api *)lua_touserdata(L, -1);
        if (api && (api->version < 1 || api->size < TETHER_LUA_API_V1_SIZE))
            api = NULL;
    }
    lua_pop(L, 1);
    return api;
}

/* api->call_blocking, or fn(arg) directly (TETHER_LUA_RAN) when tether is
   not loaded in L.  [gil-held] */
static inline int tether_lua_call_blocking(lua_State *L, int (*fn)(void *arg),
                                           void *arg, tether_lua_unblock_fn ubf,
                                           void *ubf_arg, int *result)
{
    const tether_lua_api *api = tether_lua_get_api(L);
    if (api)
        return api->call_blocking(L, fn, arg, ubf, ubf_arg, result);
    *result = fn(arg);
    return TETHER_LUA_RAN;
}

/* api->checkpoint, or nothing when tether is not loaded.  [gil-held] */
static inline void tether_lua_checkpoint(lua_State *L)
{
    const tether_lua_api *api = tether_lua_get_api(L);
    if (api)
        api->checkpoint(L);
}

/* A block of C code that runs with the GIL released (nothing when tether
   is not loaded in L).  L is evaluated once.  The block must be left
   through TETHER_LUA_END_ALLOW_THREADS (no return, goto or longjmp out of
   it) and must not touch any Lua state.

     TETHER_LUA_BEGIN_ALLOW_THREADS(L)
     n = read(fd, buf, sizeof buf);
     TETHER_LUA_END_ALLOW_THREADS
*/
#define TETHER_LUA_BEGIN_ALLOW_THREADS(L)                                     \
    {                                                                         \
        lua_State *tether_lua__L = (L);                                       \
        const tether_lua_api *tether_lua__api = tether_lua_get_api(tether_lua__L); \
        tether_lua_saved tether_lua__s = {0, NULL};                           \
        if (tether_lua__api)                                                  \
            tether_lua__api->save(tether_lua__L, &tether_lua__s);
#define TETHER_LUA_END_ALLOW_THREADS                                          \
        if (tether_lua__api)                                                  \
            tether_lua__api->restore(tether_lua__L, &tether_lua__s);          \
    }

#ifdef __cplusplus
}
#endif

#endif
