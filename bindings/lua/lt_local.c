/*
 * lt_local.c - tether.local(): fields whose values are per thread
 * (Python's threading.local).
 *
 * A local is a userdata whose uservalue maps a thread's key to that
 * thread's table of fields.  The key is the thread's core handle value,
 * which the core never issues twice in a process, so a thread that comes
 * later cannot inherit a dead thread's fields; a native thread that calls
 * a callback again and again keeps its handle, and so its fields, between
 * the calls.  The registry keeps a handle of every thread that has fields
 * ("tether.local_owners", key -> thread handle) and a weak set of the
 * locals ("tether.locals").  A tether.thread's fields are dropped as it
 * finishes (lt_thread.c calls LT_REG_THREAD_END); those of other threads (native
 * threads, which the module sees only while they call in) when a new
 * thread first stores a field and finds them finished.  Everything here
 * runs under the GIL.
 */
#include "lt.h"

#define LT_LOCAL_MT "tether.local"
#define REG_OWNERS "tether.local_owners"
#define REG_LOCALS "tether.locals"

static lua_Integer current_key(lua_State *L)
{
    tether_thread t;
    int rc = tether_thread_current(&t);
    if (rc != TETHER_OK)
        lt_status_error(L, "tether.local", rc);
    (void)tether_thread_release(t);
    return (lua_Integer)t;
}

/* Drops the fields of thread `key` from every local. */
static void forget(lua_State *L, lua_Integer key)
{
    lua_getfield(L, LUA_REGISTRYINDEX, REG_LOCALS);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pop(L, 1);
        lua_getiuservalue(L, -1, 1);
        lua_pushnil(L);
        lua_rawseti(L, -2, key);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, REG_OWNERS);
    lua_pushnil(L);
    lua_rawseti(L, -2, key);
    lua_pop(L, 1);
}

/* Drops the fields of the finished threads among the owners. */
static void sweep(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, REG_OWNERS);
    int owners = lua_gettop(L);
    lua_newtable(L); /* the dead keys */
    int dead = owners + 1;
    lua_Integer ndead = 0;
    lua_pushnil(L);
    while (lua_next(L, owners)) {
        lua_getfield(L, -1, "alive");
        lua_pushvalue(L, -2);
        lua_call(L, 1, 1);
        if (!lua_toboolean(L, -1)) {
            lua_pushvalue(L, -3);
            lua_rawseti(L, dead, ++ndead);
        }
        lua_pop(L, 2);
    }
    for (lua_Integer i = 1; i <= ndead; i++) {
        lua_rawgeti(L, dead, i);
        forget(L, lua_tointeger(L, -1));
        lua_pop(L, 1);
    }
    lua_settop(L, owners - 1);
}

/* Pushes the calling thread's field table of the local at 1 (creating
   it with `create`, else nil if none). */
static void push_fields(lua_State *L, int create)
{
    lua_Integer key = current_key(L);
    lua_getiuservalue(L, 1, 1);
    if (lua_rawgeti(L, -1, key) != LUA_TNIL || !create) {
        lua_remove(L, -2);
        return;
    }
    lua_pop(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, REG_OWNERS);
    if (lua_rawgeti(L, -1, key) == LUA_TNIL) { /* a thread new to locals */
        lua_pop(L, 1);
        sweep(L);
        lt_push_current(L, lt_upvalue_state(L));
        lua_rawseti(L, -2, key);
    } else {
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, key);
    lua_remove(L, -2);
}

static int local_index(lua_State *L)
{
    luaL_checkudata(L, 1, LT_LOCAL_MT);
    lua_settop(L, 2);
    push_fields(L, 0);
    if (lua_isnil(L, -1))
        return 1;
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

static int local_newindex(lua_State *L)
{
    luaL_checkudata(L, 1, LT_LOCAL_MT);
    luaL_checkany(L, 3);
    lua_settop(L, 3);
    if (lua_isnil(L, 2))
        return luaL_argerror(L, 2, "a local's field name must not be nil");
    push_fields(L, !lua_isnil(L, 3));
    if (lua_isnil(L, -1))
        return 0;
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_rawset(L, -3);
    return 0;
}

static int local_tostring(lua_State *L)
{
    lua_pushfstring(L, "tether.local: %p", lua_touserdata(L, 1));
    return 1;
}

/* tether.local() --> a new local */
static int local_new(lua_State *L)
{
    lua_newuserdatauv(L, 1, 1);
    luaL_setmetatable(L, LT_LOCAL_MT);
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, REG_LOCALS);
    lua_pushvalue(L, -2);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    return 1;
}

static int thread_ended(lua_State *L)
{
    forget(L, current_key(L));
    return 0;
}

void lt_open_local(lua_State *L, lt_state *S)
{
    static const luaL_Reg meta[] = {
        {"__index", local_index}, {"__newindex", local_newindex},
        {"__tostring", local_tostring}, {NULL, NULL}};
    lt_new_class(L, S, LT_LOCAL_MT, NULL, meta, NULL);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, REG_OWNERS);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, REG_LOCALS);
    lua_pushcfunction(L, thread_ended);
    lua_setfield(L, LUA_REGISTRYINDEX, LT_REG_THREAD_END);
    lua_pushlightuserdata(L, S);
    lua_pushcclosure(L, local_new, 1);
    lua_setfield(L, -2, "local");
}
