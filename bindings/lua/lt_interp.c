/*
 * lt_interp.c - tether.interp: isolated interpreters, and the handles of
 * threads started in them.
 *
 * An isolated interpreter is a tether interpreter with its own GIL (when
 * the runtime has TETHER_CONFIG_PER_INTERP_GIL, the default of a runtime
 * the module creates) and its own Lua state, into which the module is
 * loaded as a host would load it: joining the runtime through the registry
 * fields of lt.h.  Its threads are ordinary tether.threads of that state,
 * so everything of lt_thread.c, lt_hook.c and lt_sync.c works in it
 * unchanged.  The creating state touches the other state only while it
 * holds that interpreter's GIL, taken with tether_ensure (which detaches
 * the caller from its own interpreter meanwhile), and only under lua_pcall
 * there, so that an error inside never unwinds the caller's state.
 *
 * A thread started with i:thread runs a bootstrap that calls the copied
 * function and encodes its results (or its error and traceback) into a
 * record shared with the creator's handle (lt_irec).  The record holds the
 * reference to the thread's tether handle; the thread's own worker record
 * borrows it, which is safe because the bootstrap's closure, anchored on
 * the worker's coroutine, holds a reference to the record.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "lt.h"

#define LT_IREC_MT "tether.irec"

/* An interpreter handle (a userdata of the creating state). */
typedef struct lt_interp {
    tether_interp interp; /* 0 once closed */
    lua_State *L;         /* its Lua state; NULL once closed or abandoned */
    int abandoned;        /* closing timed out: the state is left alone */
} lt_interp;

/* Shared by the creator's handle and the thread's bootstrap. */
typedef struct lt_irec {
    atomic_int refs;
    /* Synchronization: atomic; LT_RUNNING until `res` is written, then the
       outcome (release/acquire orders `res`). */
    atomic_int status;
    tether_thread h; /* Synchronization: immutable once the thread started. */
    /* Set by the creator once it has let go of the interpreter's GIL after
       the start: the bootstrap waits for it before it runs the function,
       so i:thread never waits for the new thread's work (which may hold
       that GIL for long: a C call, a finalizer).  0 if none could be made.
       Synchronization: immutable once the thread started (an event). */
    tether_event go;
    lt_blob res;     /* results, or error and traceback */
    /* Copied at the start, so that they outlive the interpreter.
       Synchronization: the creating state's GIL. */
    char *name;
    uint64_t ident;
    int daemon;
} lt_irec;

/* The creator's handle: uservalue 1 is the interpreter handle. */
typedef struct lt_ihandle {
    lt_irec *rec;
} lt_ihandle;

static void irec_unref(lt_irec *rec)
{
    if (atomic_fetch_sub(&rec->refs, 1) != 1)
        return;
    (void)tether_thread_release(rec->h);
    if (rec->go)
        (void)tether_event_free(rec->go);
    lt_blob_clear(&rec->res);
    free(rec->name);
    free(rec);
}

/* ------------------------------------------------------------------------
 * Running code in the other state
 * ---------------------------------------------------------------------- */

/* Runs fn(ud) protected in I->L holding its interpreter's GIL; on failure
   raises fn's error message in L (the caller's state). */
static void run_in(lua_State *L, lt_interp *I, lua_CFunction fn, void *ud)
{
    char msg[512] = "";
    tether_gilstate gs;
    int rc = tether_ensure(I->interp, &gs);
    if (rc != TETHER_OK)
        lt_status_error(L, "interp", rc);
    lua_State *L2 = I->L;
    int top = lua_gettop(L2);
    lua_pushcfunction(L2, fn);
    lua_pushlightuserdata(L2, ud);
    if (lua_pcall(L2, 1, 0, 0) != LUA_OK)
        snprintf(msg, sizeof msg, "%s", lua_isstring(L2, -1) ? lua_tostring(L2, -1)
                                                             : "(error object is not a string)");
    lua_settop(L2, top);
    rc = tether_release(gs);
    if (rc != TETHER_OK)
        (void)lt_wait_ok(L, lt_current_tstate(), rc, "interp");
    lt_back_in_lua(lt_current_tstate()); /* the caller's GIL was let go meanwhile */
    if (*msg)
        luaL_error(L, "%s", msg);
}

/* The paths the creating state's `require` uses. */
typedef struct setup {
    const char *path, *cpath;
    tether_runtime rt;
    tether_interp interp;
    lua_CFunction open_module; /* the creating state's luaopen_tether */
} setup;

/* In the new state: the standard libraries, the paths, the module. */
static int setup_in(lua_State *L)
{
    setup *s = lua_touserdata(L, 1);
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_pushstring(L, s->path);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, s->cpath);
    lua_setfield(L, -2, "cpath");
    lua_pushinteger(L, (lua_Integer)s->rt);
    lua_setfield(L, LUA_REGISTRYINDEX, LT_REG_HOST_RUNTIME);
    lua_pushinteger(L, (lua_Integer)s->interp);
    lua_setfield(L, LUA_REGISTRYINDEX, LT_REG_HOST_INTERP);
    luaL_requiref(L, "tether", s->open_module, 0);
    /* The thread that required it was only visiting. */
    lt_state *S = lt_registry_state(L);
    atomic_store(&S->main_ts.running, NULL);
    (void)tether_set_thread_userdata(NULL);
    return 0;
}

/* Pushes package[k] of L's `require` and returns it if it is a string,
   else "" (the value stays on the stack, anchoring the string). */
static const char *package_field(lua_State *L, const char *k)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, "package") == LUA_TTABLE)
        lua_getfield(L, -1, k);
    else
        lua_pushnil(L);
    lua_replace(L, -3);
    lua_pop(L, 1);
    return lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
}

/* tether.interp() */
static int interp_new(lua_State *L)
{
    lt_state *S = lt_upvalue_state(L);
    setup s = {package_field(L, "path"), package_field(L, "cpath"), S->rt, 0,
               S->open_module};
    lt_interp *I = lua_newuserdatauv(L, sizeof *I, 0);
    memset(I, 0, sizeof *I);
    luaL_setmetatable(L, LT_INTERP_MT);
    int rc = tether_interp_create(S->rt, &I->interp);
    if (rc != TETHER_OK)
        return lt_status_error(L, "interp", rc);
    s.interp = I->interp;
    I->L = luaL_newstate(); /* nobody else sees it yet: no GIL needed */
    if (!I->L)
        return luaL_error(L, "interp: out of memory");
    run_in(L, I, setup_in, &s);
    lt_renew_sentinel(L, S);
    return 1;
}

/* ------------------------------------------------------------------------
 * Threads: the bootstrap, in the other state
 * ---------------------------------------------------------------------- */

static int irec_gc(lua_State *L)
{
    lt_irec **p = lua_touserdata(L, 1);
    if (*p)
        irec_unref(*p);
    *p = NULL;
    return 0;
}


/* Protected: encodes the values after the blob (argument 1). */
static int encode_all(lua_State *L)
{
    lt_blob *b = lua_touserdata(L, 1);
    int n = lua_gettop(L);
    for (int i = 2; i <= n; i++) {
        lua_pushfstring(L, "result #%d", i - 1);
        lt_encode(L, b, i, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    return 0;
}

/* Encodes the values on the top `n` slots into b, taking them off the
   stack (they become the arguments of encode_all where they stand, not
   copies: a function may return close to Lua's stack limit of values);
   returns 0 with the error message on the top, and b empty, if one cannot
   be copied.  Needs two free slots. */
static int try_encode(lua_State *L, lt_blob *b, int n)
{
    lua_pushcfunction(L, encode_all);
    lua_insert(L, -n - 1);
    lua_pushlightuserdata(L, b);
    lua_insert(L, -n - 1);
    if (lua_pcall(L, n + 1, 0, 0) == LUA_OK)
        return 1;
    lt_blob_clear(b);
    return 0;
}

/* Encodes the outcome: the error and its traceback on the top. */
static int encode_error(lua_State *L, lt_blob *b)
{
    lt_push_cancelled(L);
    int st = lua_rawequal(L, -3, -1) ? LT_CANCELLED : LT_ERROR;
    lua_pop(L, 1);
    lua_pushvalue(L, -2);
    lua_pushvalue(L, -2);
    if (!try_encode(L, b, 2)) {
        lua_pop(L, 1); /* the encoding error */
        luaL_tolstring(L, -2, NULL);
        lua_pushvalue(L, -2);
        if (!try_encode(L, b, 2))
            lua_pop(L, 1);
    }
    return st;
}

/* bootstrap(fn, ...): upvalue 1 is the record's box. */
static int bootstrap(lua_State *L)
{
    lt_irec *rec = *(lt_irec **)lua_touserdata(L, lua_upvalueindex(1));
    int n = lua_gettop(L);
    if (rec->go) {
        /* The GIL goes to the creator, which is still in i:thread.  A
           raise meanwhile is held back, then raised at fn's first line
           (inside the pcall below); finalize makes the thread leave. */
        lt_tstate *ts = lt_current_tstate();
        (void)tether_async_defer();
        int rc = tether_event_wait(rec->go, -1);
        (void)tether_async_allow();
        if (rc == TETHER_EFINALIZING)
            lt_leave(ts);
        lt_back_in_lua(ts);
        if (ts)
            lt_request_self(ts);
    }
    /* The handler keeps the traceback aside and returns the error as it
       is: Lua also runs the running handler for errors that do not end
       the thread (a `load` reader's), which must see them unchanged. */
    lua_pushlightuserdata(L, rec);
    lua_pushcclosure(L, lt_traceback_handler, 1);
    lua_insert(L, 1);
    int ok = lua_pcall(L, n - 1, LUA_MULTRET, 1) == LUA_OK;
    if (ok) /* its end is a checkpoint: nothing raised meanwhile is lost */
        ok = lt_end_checkpoint(L, lt_current_tstate()) == LUA_OK;
    int nres = lua_gettop(L) - 1;
    int st = LT_DONE;
    if (ok && !lua_checkstack(L, LUA_MINSTACK)) { /* none left after MULTRET */
        lua_settop(L, 1);
        lua_pushliteral(L, "tether: too many results to return from the thread");
        st = LT_ERROR;
    }
    lt_blob *b = lt_blob_push(L);
    lua_insert(L, 2);
    if (!ok) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, rec);
        st = encode_error(L, b);
    } else if (st == LT_DONE && !try_encode(L, b, nres)) { /* results that cannot cross */
        st = LT_ERROR;
    }
    if (ok && st == LT_ERROR) { /* the message on the top, no traceback */
        lua_pushliteral(L, "");
        if (!try_encode(L, b, 2))
            lua_pop(L, 1);
    }
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, rec);
    rec->res = *b;
    memset(b, 0, sizeof *b);
    b->release = free;
    atomic_store_explicit(&rec->status, st, memory_order_release);
    return 0;
}

typedef struct spawn {
    lt_blob *code; /* the function's bytecode, then the arguments */
    lt_irec *rec;
    const tether_thread_opts *opts;
} spawn;

static int spawn_in(lua_State *L)
{
    spawn *sp = lua_touserdata(L, 1);
    lt_irec **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    if (luaL_newmetatable(L, LT_IREC_MT)) {
        lua_pushcfunction(L, irec_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    *box = sp->rec;
    atomic_fetch_add(&sp->rec->refs, 1);
    lua_pushcclosure(L, bootstrap, 1);
    int first = lua_gettop(L);
    lt_decode(L, sp->code->data, sp->code->len);
    lt_load_function(L, first + 1);
    lua_replace(L, first + 1);
    lt_thread_start_bare(L, lt_registry_state(L), first, lua_gettop(L), sp->opts,
                         &sp->rec->h);
    return 0;
}

/* ------------------------------------------------------------------------
 * Interpreter methods
 * ---------------------------------------------------------------------- */

static lt_interp *check_interp(lua_State *L)
{
    lt_interp *I = luaL_checkudata(L, 1, LT_INTERP_MT);
    luaL_argcheck(L, I->interp != 0, 1, "closed interpreter");
    return I;
}

/* i:thread([opts,] fn, ...) */
static int interp_thread(lua_State *L)
{
    lt_interp *I = check_interp(L);
    tether_thread_opts o = {sizeof o, NULL, 0, 0};
    int fi = 2;
    if (lua_type(L, 2) == LUA_TTABLE && !lt_is_callable(L, 2)) {
        lt_read_thread_opts(L, 2, &o);
        fi = 3;
    }
    luaL_argcheck(L, lua_type(L, fi) == LUA_TFUNCTION || !lt_is_callable(L, fi), fi,
                  "a callable table or userdata cannot be copied to another "
                  "interpreter; pass a Lua function");
    int n = lua_gettop(L);
    lt_dump_function(L, fi);
    lt_blob *b = lt_blob_push(L);
    lt_encode(L, b, -2, "function");
    for (int i = fi + 1; i <= n; i++) {
        lua_pushfstring(L, "argument #%d", i - 1);
        lt_encode(L, b, i, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lt_ihandle *hd = lua_newuserdatauv(L, sizeof *hd, 1);
    hd->rec = NULL;
    luaL_setmetatable(L, LT_ITHREAD_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    lt_irec *rec = calloc(1, sizeof *rec);
    if (!rec)
        return luaL_error(L, "thread: out of memory");
    atomic_init(&rec->refs, 1);
    atomic_init(&rec->status, LT_RUNNING);
    rec->res.release = free;
    rec->daemon = o.daemon;
    hd->rec = rec;
    if (tether_event_new(&rec->go) != TETHER_OK)
        rec->go = 0; /* then the creator may wait for the thread's work */
    spawn sp = {b, rec, &o};
    run_in(L, I, spawn_in, &sp);
    if (rec->go) /* the interpreter's GIL is let go: fn may start */
        (void)tether_event_set(rec->go);
    /* The thread runs: from here on nothing may raise, or the caller would
       lose its only handle.  Out of memory, the name is left out (nil). */
    const char *name = NULL;
    (void)tether_thread_ident(rec->h, &rec->ident);
    if (tether_thread_name(rec->h, &name) == TETHER_OK)
        rec->name = strdup(name);
    return 1;
}

/* Closes the other state; the interpreter is already gone. */
static void close_state(lt_interp *I)
{
    lua_State *L2 = I->L;
    I->L = NULL;
    if (L2)
        lua_close(L2);
}

/* i:close([timeout]) --> true | nil, "timeout" */
static int interp_close(lua_State *L)
{
    lt_interp *I = luaL_checkudata(L, 1, LT_INTERP_MT);
    int64_t ns = lt_opt_timeout(L, 2);
    if (I->interp) {
        int rc = tether_interp_destroy(I->interp, ns);
        if (rc == TETHER_ESTATE)
            return luaL_error(L, "close: called from a thread of that interpreter");
        I->interp = 0;
        if (rc == TETHER_EFINALIZING)
            lt_leave(lt_current_tstate());
        if (rc == TETHER_ETIMEDOUT) { /* its threads may still be in Lua */
            I->L = NULL;
            I->abandoned = 1;
        }
        close_state(I);
    }
    if (I->abandoned) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* A collected interpreter is closed, its threads joined (the runtime may
   be finalized already, when the creating state is closing). */
static int interp_gc(lua_State *L)
{
    lt_interp *I = lua_touserdata(L, 1);
    if (I->interp) {
        int rc = tether_interp_destroy(I->interp, -1);
        I->interp = 0;
        if (rc == TETHER_ETIMEDOUT || rc == TETHER_ESTATE)
            I->L = NULL;
    }
    close_state(I);
    return 0;
}

static int interp_tostring(lua_State *L)
{
    lt_interp *I = luaL_checkudata(L, 1, LT_INTERP_MT);
    lua_pushfstring(L, "tether.interp: %p%s", (void *)I, I->interp ? "" : " (closed)");
    return 1;
}

/* ------------------------------------------------------------------------
 * Thread handle methods (in the creating state)
 * ---------------------------------------------------------------------- */

static lt_irec *check_rec(lua_State *L)
{
    lt_ihandle *hd = luaL_checkudata(L, 1, LT_ITHREAD_MT);
    luaL_argcheck(L, hd->rec != NULL, 1, "thread handle not started");
    return hd->rec;
}

/* t:join([timeout]): the shapes of tether.thread's join. */
static int ithread_join(lua_State *L)
{
    lt_irec *rec = check_rec(L);
    int64_t ns = lt_opt_timeout(L, 2);
    lt_sigint_rearm();
    int rc = tether_thread_join(rec->h, ns);
    /* A bad handle: the interpreter is gone, and the thread with it. */
    if (rc != TETHER_EBADHANDLE && !lt_wait_ok(L, lt_current_tstate(), rc, "join")) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        return 2;
    }
    int st = atomic_load_explicit(&rec->status, memory_order_acquire);
    if (st == LT_RUNNING) { /* left Lua as the interpreter was destroyed */
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "tether: the interpreter was closed before the thread finished");
        lua_pushliteral(L, "");
        return 3;
    }
    lua_pushboolean(L, st == LT_DONE);
    return 1 + lt_decode(L, rec->res.data, rec->res.len);
}

static int ithread_alive(lua_State *L)
{
    lua_pushboolean(L, tether_thread_is_alive(check_rec(L)->h) == 1);
    return 1;
}

static const char *status_name(lt_irec *rec)
{
    static const char *const names[] = {"running", "done", "error", "cancelled"};
    int st = atomic_load_explicit(&rec->status, memory_order_acquire);
    if (st == LT_RUNNING && tether_thread_is_alive(rec->h) != 1)
        st = LT_ERROR; /* ended without finishing: see ithread_join */
    return names[st];
}

static int ithread_status(lua_State *L)
{
    lua_pushstring(L, status_name(check_rec(L)));
    return 1;
}

/* Whether a raise failed because the thread finished (ESTATE) or went
   with its interpreter (EBADHANDLE): t:raise and t:cancel answer false. */
static int thread_gone(int rc)
{
    return rc == TETHER_ESTATE || rc == TETHER_EBADHANDLE;
}

/* t:raise(value): the value is copied into the thread's interpreter. */
static int ithread_raise(lua_State *L)
{
    lt_irec *rec = check_rec(L);
    luaL_checkany(L, 2);
    lt_blob *b = lt_blob_push(L);
    lt_encode(L, b, 2, "value");
    lt_blob *heap = lt_blob_move(L, b);
    int rc = tether_thread_raise(rec->h, LT_ASYNC_COPY, heap, lt_blob_dtor);
    if (rc != TETHER_OK) { /* not taken */
        lt_blob_dtor(heap);
        if (!thread_gone(rc))
            return lt_status_error(L, "raise", rc);
    }
    lua_pushboolean(L, rc == TETHER_OK);
    return 1;
}

static int ithread_cancel(lua_State *L)
{
    int rc = tether_thread_raise(check_rec(L)->h, LT_ASYNC_CANCEL, NULL, NULL);
    if (rc != TETHER_OK && !thread_gone(rc))
        return lt_status_error(L, "cancel", rc);
    lua_pushboolean(L, rc == TETHER_OK);
    return 1;
}

static int ithread_gc(lua_State *L)
{
    lt_ihandle *hd = lua_touserdata(L, 1);
    if (hd->rec)
        irec_unref(hd->rec);
    hd->rec = NULL;
    return 0;
}

/* __index: the methods (upvalue 2), then name, ident and daemon. */
static int ithread_index(lua_State *L)
{
    lt_ihandle *hd = luaL_checkudata(L, 1, LT_ITHREAD_MT);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL || !hd->rec)
        return 1;
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
    if (strcmp(k, "name") == 0)
        lua_pushstring(L, hd->rec->name);
    else if (strcmp(k, "ident") == 0)
        lua_pushinteger(L, (lua_Integer)hd->rec->ident);
    else if (strcmp(k, "daemon") == 0)
        lua_pushboolean(L, hd->rec->daemon);
    else
        lua_pushnil(L);
    return 1;
}

static int ithread_tostring(lua_State *L)
{
    lt_ihandle *hd = luaL_checkudata(L, 1, LT_ITHREAD_MT);
    if (!hd->rec)
        return lua_pushliteral(L, "tether.ithread (not started)"), 1;
    lua_pushfstring(L, "tether.ithread: %s (%s)", hd->rec->name ? hd->rec->name : "?",
                    status_name(hd->rec));
    return 1;
}

void lt_open_interp(lua_State *L, lt_state *S)
{
    static const luaL_Reg imethods[] = {
        {"thread", interp_thread}, {"close", interp_close}, {NULL, NULL}};
    static const luaL_Reg imeta[] = {
        {"__gc", interp_gc}, {"__tostring", interp_tostring}, {NULL, NULL}};
    static const luaL_Reg tmethods[] = {
        {"join", ithread_join},   {"alive", ithread_alive},   {"status", ithread_status},
        {"raise", ithread_raise}, {"cancel", ithread_cancel}, {NULL, NULL}};
    static const luaL_Reg tmeta[] = {
        {"__gc", ithread_gc}, {"__tostring", ithread_tostring}, {NULL, NULL}};
    lt_new_class(L, S, LT_INTERP_MT, imethods, imeta, NULL);
    lt_new_class(L, S, LT_ITHREAD_MT, tmethods, tmeta, ithread_index);
    lua_pushlightuserdata(L, S);
    lua_pushcclosure(L, interp_new, 1);
    lua_setfield(L, -2, "interp");
}
