/*
 * lt_require.c - `require` with an import lock per module name.
 *
 * Standard `require` checks package.loaded, finds a loader and runs it,
 * then stores the result.  The loader is Lua code, so the GIL can change
 * hands while it runs; a second thread requiring the same name meanwhile
 * found nothing in package.loaded and ran the loader again (and got a
 * different module table).  Python gives each module an import lock; so
 * does this file, as a replacement of the global `require` that keeps the
 * standard function's behaviour, messages and results:
 *
 * - A name being loaded by thread A has a lock (a userdata in a registry
 *   table keyed by the name).  Thread B requiring it waits for A to finish
 *   (the GIL released, as in every wait of the module; a cancel or a raise
 *   ends the wait), then starts over: it finds the module loaded, or, when
 *   A's loader failed, takes the lock and runs the loader itself.
 * - A re-entering `require` of the same name in A (a module that requires
 *   itself) runs as standard `require` does, without the lock.
 * - Inside a finalizer (__gc), where no wait blocks (lt_in_finalizer),
 *   a name another thread is loading raises an error instead of waiting.
 * - A cycle between threads (A loads m1 and requires m2, which B loads and
 *   which requires m1) would deadlock; the thread that would close it does
 *   not wait and runs as standard `require` does, as Python does on an
 *   import deadlock.  The waits-for graph is the list of waiting threads
 *   kept in the registry (a node per waiter, on its C stack).
 * - The lock is the to-be-closed variable of `require`'s frame, so it is
 *   released however the loader ends: returning, raising, or cancelled.
 *
 * Everything here runs holding the GIL.  The lists of waiters are also
 * under lt_sync.c's waitq_mu: a waiter that finalize detaches takes its
 * node off them without the GIL before it leaves.
 * A thread the module does not know (no lt_tstate) runs standard
 * `require` semantics without a lock.  Code that took a local copy of
 * `require` before `require "tether"` keeps the old function.
 */
#include <limits.h>

#include "lt.h"

#define LT_MODLOCK_MT "tether.modlock"

static const char k_locks = 0; /* registry: name -> modlock being loaded */
static const char k_waits = 0; /* registry: userdata holding the modwait list */

/* An import lock: the module name is loaded by `owner`. */
typedef struct modlock {
    lt_tstate *owner; /* Synchronization: gil; NULL once released. */
    lt_waitq q;       /* threads waiting for the release (lt.h). */
} modlock;

/* A thread waiting for a lock, for finding cycles. */
typedef struct modwait {
    lt_tstate *ts;
    modlock *lock;
    struct modwait *next;
} modwait;

/* The head of the list of waiters, a userdata in the registry. */
typedef struct modwaits {
    modwait *head; /* Synchronization: waitq_mu (lt_waitq_lock). */
} modwaits;

/* ------------------------------------------------------------------------
 * Loading, as standard `require` does
 * ---------------------------------------------------------------------- */

/* Pushes the loader of `name` and its extra value, asking each of
   package.searchers (pkg is the package table) in turn; raises "module
   'name' not found:" followed by what each searcher said, when none has
   one. */
static void find_loader(lua_State *L, int pkg, const char *name)
{
    if (lua_getfield(L, pkg, "searchers") != LUA_TTABLE)
        luaL_error(L, "'package.searchers' must be a table");
    int searchers = lua_gettop(L);
    lua_pushliteral(L, ""); /* what the searchers said */
    for (lua_Integer i = 1;; i++) {
        if (lua_rawgeti(L, searchers, i) == LUA_TNIL)
            luaL_error(L, "module '%s' not found:%s", name, lua_tostring(L, searchers + 1));
        lua_pushstring(L, name);
        lua_call(L, 1, 2);
        if (lua_isfunction(L, -2)) {
            lua_remove(L, searchers);
            lua_remove(L, searchers); /* the messages */
            return;
        }
        if (lua_isstring(L, -2)) {
            lua_pop(L, 1);
            lua_pushliteral(L, "\n\t");
            lua_insert(L, -2);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 2);
        }
    }
}

/* require's work for the name at 1 (pkg: the package table, loaded:
   package.loaded): the loaded module (one result), or the module the
   loader gave and the loader's extra value (two). */
static int load(lua_State *L, int pkg, int loaded)
{
    const char *name = lua_tostring(L, 1);
    lua_getfield(L, loaded, name);
    if (lua_toboolean(L, -1))
        return 1;
    lua_pop(L, 1);
    find_loader(L, pkg, name); /* loader, extra */
    lua_pushvalue(L, -2);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -3);
    lua_call(L, 2, 1);
    if (!lua_isnil(L, -1))
        lua_setfield(L, loaded, name);
    else
        lua_pop(L, 1);
    if (lua_getfield(L, loaded, name) == LUA_TNIL) { /* nothing set: true */
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
        lua_pushvalue(L, -1);
        lua_setfield(L, loaded, name);
    }
    lua_insert(L, -2); /* module, extra */
    return 2;
}

/* ------------------------------------------------------------------------
 * The locks
 * ---------------------------------------------------------------------- */

/* The lock's __close: releases it, forgets it (uservalue 1 is the name)
   and wakes every waiter. */
static int modlock_close(lua_State *L)
{
    modlock *lk = luaL_checkudata(L, 1, LT_MODLOCK_MT);
    if (!lk->owner)
        return 0;
    lk->owner = NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_locks);
    lua_getiuservalue(L, 1, 1);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TUSERDATA && lua_touserdata(L, -1) == lk) {
        lua_pop(L, 1);
        lua_pushnil(L); /* removing a key allocates nothing: cannot raise */
        lua_rawset(L, -3);
    }
    lt_waitq_wake(&lk->q, INT_MAX);
    return 0;
}

static modwaits *waits_of(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_waits);
    modwaits *ws = lua_touserdata(L, -1);
    lua_pop(L, 1); /* anchored by the registry */
    return ws;
}

/* Whether `me` waiting for `lk` would close a cycle: following "the owner
   of this lock waits for that lock" from lk leads back to me. */
static int would_deadlock(modwaits *ws, const modlock *lk, const lt_tstate *me)
{
    lt_waitq_lock();
    int found = 0;
    for (int hops = 0; lk && !found && hops < 1000000; hops++) {
        const lt_tstate *owner = lk->owner;
        found = owner == me;
        const modwait *w = ws->head;
        while (w && w->ts != owner)
            w = w->next;
        lk = w ? w->lock : NULL;
    }
    lt_waitq_unlock();
    return found;
}

/* Waits for the lock at the top, which another thread holds, to be
   released; pops it.  Raises a delivered asynchronous exception. */
static void wait_for(lua_State *L, modwaits *ws, lt_tstate *me)
{
    modlock *lk = lua_touserdata(L, -1);
    modwait node = {me, lk, NULL};
    int notified;
    lt_waitq_lock();
    node.next = ws->head;
    ws->head = &node;
    lt_waitq_unlock();
    int rc = lt_waitq_wait(me, &lk->q, -1, &notified);
    /* Off the list on every way out, leaving at finalize (no GIL) too: the
       node dies with this frame (issue 20). */
    lt_waitq_lock();
    modwait **pp = &ws->head;
    while (*pp != &node)
        pp = &(*pp)->next;
    *pp = node.next;
    lt_waitq_unlock();
    if (rc == TETHER_EFINALIZING) /* no GIL: touch nothing more, leave */
        lt_leave(me);
    lua_pop(L, 1);
    (void)lt_wait_ok(L, me, rc, "require");
}

/* require(name) */
static int global_require(lua_State *L)
{
    luaL_checkstring(L, 1);
    lua_settop(L, 1);
    int pkg = lua_upvalueindex(2);
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE); /* 2 */
    lt_tstate *me = lt_current_tstate();
    /* While the state closes only its finalizers run Lua, on one thread:
       the locks of threads that left at shutdown are never released. */
    if (!me || atomic_load(&lt_upvalue_state(L)->closed))
        return load(L, pkg, 2);
    modwaits *ws = waits_of(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_locks); /* 3 */
    for (;;) {
        lua_pushvalue(L, 1);
        if (lua_rawget(L, 3) == LUA_TNIL)
            break;
        modlock *lk = lua_touserdata(L, -1);
        if (lk->owner == me || would_deadlock(ws, lk, me)) {
            lua_settop(L, 3); /* in a module it loads, or a cycle: no lock */
            return load(L, pkg, 2);
        }
        if (lt_in_finalizer(L)) /* a finalizer does not block (lt.h) */
            return luaL_error(L, "module '%s' is being loaded by another "
                              "thread, and a wait inside a finalizer does "
                              "not block", lua_tostring(L, 1));
        wait_for(L, ws, me);
    }
    lua_pop(L, 1);
    lua_getfield(L, 2, lua_tostring(L, 1));
    if (lua_toboolean(L, -1)) /* loaded already */
        return 1;
    lua_pop(L, 1);
    modlock *lk = lua_newuserdatauv(L, sizeof *lk, 1); /* 4 */
    lk->owner = NULL;
    lt_waitq_init(&lk->q);
    luaL_setmetatable(L, LT_MODLOCK_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, 4, 1);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 4);
    lua_rawset(L, 3);
    lua_toclose(L, 4); /* released however load ends */
    lk->owner = me;
    return load(L, pkg, 2);
}

void lt_open_require(lua_State *L, lt_state *S)
{
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);  /* top + 1 */
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE); /* top + 2 */
    if (lua_getfield(L, top + 2, "package") != LUA_TTABLE ||  /* top + 3 */
        lua_getfield(L, top + 1, "require") != LUA_TFUNCTION) { /* no package library */
        lua_settop(L, top);
        return;
    }
    luaL_newmetatable(L, LT_MODLOCK_MT);
    lua_pushcfunction(L, modlock_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_locks);
    modwaits *ws = lua_newuserdatauv(L, sizeof *ws, 0);
    ws->head = NULL;
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_waits);
    lua_pushlightuserdata(L, S);
    lua_pushvalue(L, top + 3);
    lua_pushcclosure(L, global_require, 2); /* upvalues: S, package */
    lua_setfield(L, top + 1, "require");
    lua_settop(L, top);
}
