/*
 * stream_module.c - a C module that makes Lua file handles of its own
 * with luaL_Stream, as third-party modules do (test_io_cmodule.lua): the
 * module's io functions must work on them and close them with their own
 * closef.
 *
 *   local sm = require "stream_module"
 *   local r, w = sm.pipe()   -- the two ends of a pipe, as FILE* handles
 *   sm.closed()              -- how many handles its closef has closed
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

static int closed_count; /* only touched holding the GIL */

/* The closef: closes the FILE and answers true, "closed by the module". */
static int module_close(lua_State *L)
{
    luaL_Stream *p = luaL_checkudata(L, 1, LUA_FILEHANDLE);
    int ok = fclose(p->f) == 0;
    closed_count++;
    lua_pushboolean(L, ok);
    lua_pushliteral(L, "closed by the module");
    return 2;
}

static void push_stream(lua_State *L, int fd, const char *mode)
{
    luaL_Stream *p = lua_newuserdatauv(L, sizeof *p, 0);
    p->closef = NULL;
    luaL_setmetatable(L, LUA_FILEHANDLE);
    p->f = fdopen(fd, mode);
    if (!p->f)
        luaL_error(L, "fdopen failed");
    p->closef = module_close;
}

static int sm_pipe(lua_State *L)
{
    int fds[2];
    if (pipe(fds) != 0)
        return luaL_error(L, "pipe failed");
    push_stream(L, fds[0], "r");
    push_stream(L, fds[1], "w");
    return 2;
}

static int sm_closed(lua_State *L)
{
    lua_pushinteger(L, closed_count);
    return 1;
}

int luaopen_stream_module(lua_State *L);

int luaopen_stream_module(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"pipe", sm_pipe}, {"closed", sm_closed}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
