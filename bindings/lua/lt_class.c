/*
 * lt_class.c - the metatables of the module's userdata.
 *
 * On its own so that the codec's fuzzer (tests/fuzz) builds lt_copy.c
 * with the very function the module uses.
 */
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
