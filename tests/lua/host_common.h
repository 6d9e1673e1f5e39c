/*
 * host_common.h - what the two C test hosts share (host.c, host_late.c):
 * their error message and the Lua state they run the script in.
 *
 * The including file defines HOST_NAME, the name its messages start with.
 */
#ifndef TETHER_LUA_HOST_COMMON_H
#define TETHER_LUA_HOST_COMMON_H

#include <stdio.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <tether/tether.h>

#ifndef HOST_NAME
#error "define HOST_NAME before including host_common.h"
#endif

/* Tells on stderr what failed and why; returns 1, the host's exit status. */
static inline int fail(const char *what, const char *why)
{
    fprintf(stderr, HOST_NAME ": %s: %s\n", what, why);
    return 1;
}

/* Creates a runtime in *rt and a Lua state with the standard libraries
   whose `require "tether"` joins it (the registry field "tether.runtime").
   Returns the state, or NULL once it has told why (fail). */
static inline lua_State *host_open(tether_runtime *rt)
{
    if (tether_runtime_create(NULL, rt) != TETHER_OK) {
        fail("tether_runtime_create", tether_last_error());
        return NULL;
    }
    lua_State *L = luaL_newstate();
    if (!L) {
        fail("luaL_newstate", "out of memory");
        return NULL;
    }
    luaL_openlibs(L);
    lua_pushinteger(L, (lua_Integer)*rt);
    lua_setfield(L, LUA_REGISTRYINDEX, "tether.runtime");
    return L;
}

#endif
