/*
 * lt_class.c - the metatables of the module's userdata, and how values
 * are shown in messages.  Lua only: it calls nothing of the core.
 */
#include <string.h>

#include "lt.h"

void lt_new_class(lua_State *L, lt_state *S, const char *name,
                  const luaL_Reg *methods, const luaL_Reg *meta,
                  lua_CFunction index)
{
    luaL_newmetatable(L, name);
    if (meta) {
        lua_pushlightuserdata(L, S);
        luaL_setfuncs(L, meta, 1);
    }
    if (methods) {
        lua_newtable(L);
        lua_pushlightuserdata(L, S);
        luaL_setfuncs(L, methods, 1);
        if (index) { /* upvalues: S, the methods */
            lua_pushlightuserdata(L, S);
            lua_insert(L, -2);
            lua_pushcclosure(L, index, 2);
        }
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}

int lt_is_callable(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TFUNCTION)
        return 1;
    if (luaL_getmetafield(L, idx, "__call") == LUA_TNIL)
        return 0;
    lua_pop(L, 1);
    return 1;
}

/* Protected: tostring of the value at 1. */
static int tostring_of(lua_State *L)
{
    luaL_tolstring(L, 1, NULL);
    return 1;
}

const char *lt_describe(lua_State *L, int idx, int quote)
{
    idx = lua_absindex(L, idx);
    int is_string = lua_type(L, idx) == LUA_TSTRING;
    if (is_string) {
        lua_pushvalue(L, idx);
    } else {
        lua_pushcfunction(L, tostring_of);
        lua_pushvalue(L, idx);
        if (lua_pcall(L, 1, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 1); /* __tostring failed: what tostring shows without it */
            lua_pushfstring(L, "%s: %p", luaL_typename(L, idx), lua_topointer(L, idx));
        }
    }
    if (quote && is_string) {
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        size_t shown = strlen(s);
        if (shown > LT_DESCRIBE_MAX)
            shown = LT_DESCRIBE_MAX;
        if (shown == len) {
            lua_pushfstring(L, "'%s'", s);
        } else { /* long, or with a NUL: the start and the length */
            lua_pushlstring(L, s, shown);
            lua_pushfstring(L, "'%s...' (%I bytes)", lua_tostring(L, -1), (lua_Integer)len);
            lua_remove(L, -2);
        }
        lua_remove(L, -2);
    }
    return lua_tostring(L, -1);
}
