/*
 * host.c - a C host that embeds Lua and makes `require "tether"` join the
 * runtime it created (the registry field "tether.runtime"), then runs a
 * script, finalizes its runtime, runs the script's HOST_AFTER_FINALIZE (if
 * it set one: Lua that a host runs after the finalize) and closes the
 * state, in that order: the order docs/lua.md asks of hosts.
 *
 *   tether_lua_host script.lua
 *
 * Exits 0 when the script ran without error, the non-daemon thread it left
 * running was joined by the finalize, and everything shut down; a callback
 * the script made is retained across lua_close and released after it.
 */
#define HOST_NAME "tether_lua_host"
#include "host_common.h"

int main(int argc, char **argv)
{
    tether_runtime rt;
    if (argc != 2)
        return fail("usage", "tether_lua_host script.lua");
    lua_State *L = host_open(&rt);
    if (!L)
        return 1;
    int status = luaL_dofile(L, argv[1]);
    if (status != LUA_OK)
        fail(argv[1], lua_tostring(L, -1));
    int rc = tether_runtime_finalize(rt, -1);
    if (rc != TETHER_OK)
        return fail("tether_runtime_finalize", tether_last_error());
    /* No thread runs Lua any more: the host may look at the state, and
       run Lua in it (HOST_AFTER_FINALIZE, if the script set it). */
    lua_getglobal(L, "HOST_AFTER_FINALIZE");
    if (lua_isfunction(L, -1) && lua_pcall(L, 0, 0, 0) != LUA_OK)
        return fail("HOST_AFTER_FINALIZE", lua_tostring(L, -1));
    lua_settop(L, 0);
    lua_getglobal(L, "HOST_CHECK");
    int joined = lua_istable(L, -1) && lua_getfield(L, -1, "nondaemon") == LUA_TSTRING;
    tether_callback cb = 0;
    if (lua_istable(L, -2) && lua_getfield(L, -2, "callback") == LUA_TNUMBER)
        cb = (tether_callback)lua_tointeger(L, -1);
    if (cb && tether_callback_retain(cb) != TETHER_OK)
        return fail("tether_callback_retain", tether_last_error());
    lua_close(L); /* the callback's __gc drops Lua's owner, not ours */
    /* The last owner: the binding frees its record with the state gone. */
    if (cb && tether_callback_release(cb) != TETHER_OK)
        return fail("tether_callback_release", tether_last_error());
    if (status == LUA_OK && !joined)
        return fail("finalize", "the non-daemon thread did not finish");
    if (status == LUA_OK && !cb)
        return fail("script", "HOST_CHECK.callback is not a callback handle");
    return status == LUA_OK ? 0 : 1;
}
