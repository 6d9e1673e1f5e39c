/*
 * lt_ffi.c - tether.callback (Lua functions as C function pointers) and
 * tether.load (plugins, and calls into them).
 *
 * A callback's C code is a closure made by tether_callback_new: any thread
 * may call it; the core attaches the thread (ensure) and calls `guest`
 * below holding the GIL.  `guest` runs the Lua function on a coroutine of
 * its own, borrowed from a pool, never on a coroutine another thread may be
 * running.  An error inside goes to tether.excepthook and the C caller gets
 * zero.  A thread the module does not know (a plugin's native thread) gets
 * an lt_tstate on its stack for the duration of the call, so that the
 * breaker hook can reach it.
 *
 * Pool coroutines are made from S->seed with the collector stopped: a
 * finalizer run by a collection step may release the GIL, and the seed
 * must never be in the middle of something when another thread uses it.
 *
 * Values cross by their C types, as the signature says ("i32(ptr,f64)"):
 * integer types are Lua integers (u64 above 2^63 wraps, as in Lua's own
 * conversions), f32/f64 are numbers, ptr is a light userdata (nil for NULL;
 * a tether.callback passes its code), str is a string (nil for NULL).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt.h"

enum { T_VOID, T_I8, T_U8, T_I16, T_U16, T_I32, T_U32, T_I64, T_U64,
       T_F32, T_F64, T_PTR, T_STR, T_COUNT };

static const char *const type_names[T_COUNT] = {
    "void", "i8", "u8", "i16", "u16", "i32", "u32",
    "i64", "u64", "f32", "f64", "ptr", "str"};

static const char k_seed = 0; /* registry key anchoring S->seed */

typedef struct lt_sig {
    unsigned char ret, nargs, args[LT_MAX_ARGS];
} lt_sig;

/* Any value of a signature type. */
typedef union lt_value {
    int8_t i8;
    uint8_t u8;
    int16_t i16;
    uint16_t u16;
    int32_t i32;
    uint32_t u32;
    int64_t i64;
    uint64_t u64;
    float f32;
    double f64;
    void *ptr;
    const char *str;
} lt_value;

/* ------------------------------------------------------------------------
 * Signatures: "ret(arg,...)", the grammar of tether.h.
 * ---------------------------------------------------------------------- */

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Reads a type name at *p; returns the type or -1. */
static int read_type(const char **p)
{
    size_t n = 0;
    while (((*p)[n] >= 'a' && (*p)[n] <= 'z') || ((*p)[n] >= '0' && (*p)[n] <= '9'))
        n++;
    for (int t = 0; t < T_COUNT; t++) {
        if (strlen(type_names[t]) == n && memcmp(type_names[t], *p, n) == 0) {
            *p += n;
            return t;
        }
    }
    return -1;
}

/* Parses the argument list after "(" up to and including ")". */
static const char *parse_args(const char *p, lt_sig *sig)
{
    p = skip_ws(p);
    if (*p == ')')
        return p + 1;
    for (;;) {
        int t = read_type(&p);
        if (t < 0 || (t == T_VOID && (sig->nargs > 0 || *skip_ws(p) != ')')))
            return NULL;
        if (t != T_VOID) {
            if (sig->nargs == LT_MAX_ARGS)
                return NULL;
            sig->args[sig->nargs++] = (unsigned char)t;
        }
        p = skip_ws(p);
        if (*p == ')')
            return p + 1;
        if (*p++ != ',')
            return NULL;
        p = skip_ws(p);
    }
}

/* Parses the signature at idx, or raises an argument error there. */
static void check_sig(lua_State *L, int idx, lt_sig *sig)
{
    const char *s = luaL_checkstring(L, idx), *p = skip_ws(s);
    memset(sig, 0, sizeof *sig);
    int t = read_type(&p);
    p = skip_ws(p);
    if (t >= 0 && *p == '(' && (p = parse_args(p + 1, sig)) && *skip_ws(p) == '\0') {
        sig->ret = (unsigned char)t;
        return;
    }
    lua_pushfstring(L, "malformed signature '%s' (expected e.g. 'i32(ptr,f64)')", s);
    luaL_argerror(L, idx, lua_tostring(L, -1));
}

/* ------------------------------------------------------------------------
 * Conversions
 * ---------------------------------------------------------------------- */

/* The C size of a type. */
static size_t type_size(int type)
{
    static const size_t sizes[T_COUNT] = {0, 1, 1, 2, 2, 4, 4, 8, 8,
                                          sizeof(float), sizeof(double),
                                          sizeof(void *), sizeof(char *)};
    return sizes[type];
}

static void push_value(lua_State *L, int type, const void *p)
{
    lt_value v;
    memcpy(&v, p, type_size(type));
    switch (type) {
    case T_I8:  lua_pushinteger(L, v.i8);  break;
    case T_U8:  lua_pushinteger(L, v.u8);  break;
    case T_I16: lua_pushinteger(L, v.i16); break;
    case T_U16: lua_pushinteger(L, v.u16); break;
    case T_I32: lua_pushinteger(L, v.i32); break;
    case T_U32: lua_pushinteger(L, v.u32); break;
    case T_I64: lua_pushinteger(L, v.i64); break;
    case T_U64: lua_pushinteger(L, (lua_Integer)v.u64); break;
    case T_F32: lua_pushnumber(L, v.f32); break;
    case T_F64: lua_pushnumber(L, v.f64); break;
    case T_PTR:
        if (v.ptr)
            lua_pushlightuserdata(L, v.ptr);
        else
            lua_pushnil(L);
        break;
    case T_STR:
        if (v.str)
            lua_pushstring(L, v.str);
        else
            lua_pushnil(L);
        break;
    default:
        lua_pushnil(L);
        break;
    }
}

static void *code_of(lua_State *L, int idx);

/* Converts the Lua value at idx to one of the integer types narrower than
   64 bits.  Returns NULL, or what is wrong. */
static const char *to_small_int(lua_State *L, int idx, int type, lt_value *out)
{
    static const lua_Integer lo[] = {[T_I8] = INT8_MIN, [T_U8] = 0, [T_I16] = INT16_MIN,
                                     [T_U16] = 0, [T_I32] = INT32_MIN, [T_U32] = 0};
    static const lua_Integer hi[] = {[T_I8] = INT8_MAX, [T_U8] = UINT8_MAX,
                                     [T_I16] = INT16_MAX, [T_U16] = UINT16_MAX,
                                     [T_I32] = INT32_MAX, [T_U32] = UINT32_MAX};
    int ok = 0;
    lua_Integer i = lua_tointegerx(L, idx, &ok);
    if (!ok)
        return "integer expected";
    if (i < lo[type] || i > hi[type])
        return "integer out of range";
    switch (type) {
    case T_I8: out->i8 = (int8_t)i; break;
    case T_U8: out->u8 = (uint8_t)i; break;
    case T_I16: out->i16 = (int16_t)i; break;
    case T_U16: out->u16 = (uint16_t)i; break;
    case T_I32: out->i32 = (int32_t)i; break;
    default: out->u32 = (uint32_t)i; break;
    }
    return NULL;
}

/* Converts a pointer argument: nil, a light userdata or a tether.callback. */
static const char *to_ptr(lua_State *L, int idx, lt_value *out)
{
    if (lua_isnil(L, idx))
        return NULL;
    if (lua_islightuserdata(L, idx))
        out->ptr = lua_touserdata(L, idx);
    else if (!(out->ptr = code_of(L, idx)))
        return "light userdata, tether.callback or nil expected";
    return NULL;
}

/* Converts the Lua value at idx to `type` in *out.  Returns NULL, or a
   sentence saying what is wrong. */
static const char *to_c(lua_State *L, int idx, int type, lt_value *out)
{
    int ok = 0;
    memset(out, 0, sizeof *out);
    switch (type) {
    case T_I64: case T_U64:
        out->i64 = lua_tointegerx(L, idx, &ok);
        return ok ? NULL : "integer expected";
    case T_F32: case T_F64:
        if (lua_type(L, idx) != LUA_TNUMBER)
            return "number expected";
        if (type == T_F32)
            out->f32 = (float)lua_tonumber(L, idx);
        else
            out->f64 = lua_tonumber(L, idx);
        return NULL;
    case T_PTR:
        return to_ptr(L, idx, out);
    case T_STR:
        if (lua_isnil(L, idx))
            return NULL;
        if (lua_type(L, idx) != LUA_TSTRING)
            return "string or nil expected";
        out->str = lua_tostring(L, idx);
        return NULL;
    case T_VOID:
        return NULL;
    default:
        return to_small_int(L, idx, type, out);
    }
}

/* ------------------------------------------------------------------------
 * Callback coroutines
 * ---------------------------------------------------------------------- */

struct co_slot {
    lua_State *co;
    int ref;
};

/* Protected, on the seed: makes a coroutine and anchors it. */
static int make_co(lua_State *L)
{
    struct co_slot *slot = lua_touserdata(L, 1);
    slot->co = lua_newthread(L);
    slot->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* Takes an idle coroutine, or makes one.  Returns 0 when out of memory. */
static int take_co(lt_state *S, struct co_slot *slot)
{
    if (S->cb_idle > 0) {
        S->cb_idle--;
        *slot = (struct co_slot){S->cb_pool[S->cb_idle], S->cb_refs[S->cb_idle]};
        return 1;
    }
    lua_State *seed = S->seed;
    int was_running = lua_gc(seed, LUA_GCISRUNNING);
    lua_gc(seed, LUA_GCSTOP);
    lua_pushcfunction(seed, make_co);
    lua_pushlightuserdata(seed, slot);
    int st = lua_pcall(seed, 1, 0, 0);
    if (st != LUA_OK)
        lua_pop(seed, 1);
    if (was_running == 1)
        lua_gc(seed, LUA_GCRESTART);
    return st == LUA_OK;
}

static void give_co(lt_state *S, const struct co_slot *slot)
{
    lua_settop(slot->co, 0);
    if (S->cb_idle < LT_CB_POOL) {
        S->cb_pool[S->cb_idle] = slot->co;
        S->cb_refs[S->cb_idle] = slot->ref;
        S->cb_idle++;
    } else {
        luaL_unref(slot->co, LUA_REGISTRYINDEX, slot->ref);
    }
}

/* ------------------------------------------------------------------------
 * tether.callback
 * ---------------------------------------------------------------------- */

/* What the closure's guest function needs.  The core owns it once the
   callback exists: a callback C code has retained outlives Lua's userdata
   (issue 14 P4), so the record goes only when the core destroys the
   callback (tether_callback_on_free: last owner gone, no call running).
   That notification may come on any thread, without the GIL, so it only
   drops the record's held reference (lt_heldref_drop), which frees it. */
typedef struct lt_cbdata {
    /* Synchronization: immutable after callback_new (held.next: S->dead_mu). */
    lt_heldref held; /* held.S, held.ref: the Lua function (first member) */
    lt_sig sig;
} lt_cbdata;

typedef struct lt_callback {
    tether_callback cb; /* 0 once freed */
    lt_cbdata *d;
} lt_callback;

/* One call in progress. */
typedef struct lt_call {
    lt_cbdata *d;
    void **args;
    void *ret;
} lt_call;

static void cbdata_release(lua_State *L, lt_cbdata *d)
{
    luaL_unref(L, LUA_REGISTRYINDEX, d->held.ref);
    lt_state_unref(d->held.S);
    free(d);
}

/* The callback's tether_callback_on_free: runs on whichever thread
   destroyed it, GIL or not, so it touches no Lua. */
static void cbdata_dead(void *ud)
{
    lt_heldref_drop(&((lt_cbdata *)ud)->held);
}

/* Calls the Lua function with the C arguments and stores its result. */
static int cb_invoke(lua_State *L)
{
    lt_call *c = lua_touserdata(L, 1);
    const lt_sig *sig = &c->d->sig;
    luaL_checkstack(L, sig->nargs + 1, "too many arguments");
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->d->held.ref);
    for (int i = 0; i < sig->nargs; i++)
        push_value(L, sig->args[i], c->args[i]);
    lua_call(L, sig->nargs, 1);
    if (sig->ret == T_VOID || !c->ret)
        return 0;
    lt_value v;
    const char *bad = to_c(L, -1, sig->ret, &v);
    if (bad)
        return luaL_error(L, "callback returned %s: %s for %s", luaL_typename(L, -1),
                          bad, type_names[sig->ret]);
    memcpy(c->ret, &v, type_size(sig->ret));
    return 0;
}

/* Protected: runs cb_invoke under the traceback handler and reports its
   error to tether.excepthook. */
static int cb_body(lua_State *L)
{
    lt_call *c = lua_touserdata(L, 1);
    lua_pushlightuserdata(L, c);
    lua_pushcclosure(L, lt_traceback_handler, 1);
    lua_pushcfunction(L, cb_invoke);
    lua_pushlightuserdata(L, c);
    if (lua_pcall(L, 1, 0, 2) == LUA_OK)
        return 0;
    lua_rawgetp(L, LUA_REGISTRYINDEX, c);
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, c);
    lt_push_cancelled(L);
    int cancelled = lua_rawequal(L, -1, 3);
    lua_pop(L, 1);
    if (!cancelled) {
        lt_push_current(L, c->d->held.S);
        lt_call_excepthook(L, -1, 3, 4);
    }
    return 0;
}

/* Runs the call on a pool coroutine; `ts` is the calling thread's. */
static void cb_run(lt_call *c, lt_tstate *ts)
{
    lt_state *S = c->d->held.S;
    struct co_slot slot;
    if (!take_co(S, &slot)) {
        fprintf(stderr, "tether: callback: out of memory; it returns zero\n");
        return;
    }
    lua_State *prev = atomic_load_explicit(&ts->running, memory_order_relaxed);
    lt_switch(ts, slot.co);
    lua_pushcfunction(slot.co, cb_body);
    lua_pushlightuserdata(slot.co, c);
    if (lua_pcall(slot.co, 1, 0, 0) != LUA_OK)
        fprintf(stderr, "tether: callback: %s\n", lua_tostring(slot.co, -1));
    lt_switch(ts, prev);
    give_co(S, &slot);
}

/* Makes the lt_tstate of a thread the module does not know, on its stack.
   The core hands the pointer to lt_on_breaker with relaxed atomics, so the
   fields are written under hook_mu, which lt_on_breaker takes before it
   reads them: that orders these writes before its reads (and after the
   reads it made of an earlier call's tstate at the same address). */
static void init_local(lt_tstate *ts, lt_state *S)
{
    lt_mutex_lock(&S->hook_mu, LT_RANK_HOOK);
    lt_ts_init(ts, S, NULL);
    lt_mutex_unlock(&S->hook_mu, LT_RANK_HOOK);
}

/* The tether_guest_fn of every callback. */
static int guest(void **args, void *ret, void *ud)
{
    lt_call c = {ud, args, ret};
    lt_state *S = c.d->held.S;
    if (atomic_load(&S->closed))
        return TETHER_OK; /* the C caller gets zero */
    lt_tstate local, *ts = lt_current_tstate();
    if (!ts || ts->S != S) {
        ts = &local;
        init_local(ts, S);
        lt_ts_push(ts);
    }
    jmp_buf out;
    jmp_buf *outer_exit = ts->exit;
    if (setjmp(out) != 0) {
        ts->exit = outer_exit; /* left Lua at shutdown: touch nothing */
        if (lt_tl_get() == &local) /* but forget the frame that ends */
            lt_tl_set(local.tl_outer);
        return TETHER_OK;
    }
    ts->exit = &out;
    cb_run(&c, ts);
    ts->exit = outer_exit;
    if (ts == &local) {
        lt_ts_release(S->seed, &local);
        lt_ts_pop(ts);
    }
    return TETHER_OK;
}

static lt_callback *check_callback(lua_State *L)
{
    return luaL_checkudata(L, 1, LT_CALLBACK_MT);
}

static void *code_of(lua_State *L, int idx)
{
    lt_callback *cb = luaL_testudata(L, idx, LT_CALLBACK_MT);
    return cb && cb->cb ? tether_callback_code(cb->cb) : NULL;
}

/* tether.callback(signature, fn) */
static int callback_new(lua_State *L)
{
    lt_state *S = lt_upvalue_state(L);
    lt_sig sig;
    check_sig(L, 1, &sig);
    luaL_argcheck(L, sig.ret != T_STR, 1, "a callback cannot return str (the "
                  "string would not outlive the call); return ptr");
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lt_heldref_drain(L, S);
    lt_callback *cb = lua_newuserdatauv(L, sizeof *cb, 0);
    cb->cb = 0;
    cb->d = NULL;
    luaL_setmetatable(L, LT_CALLBACK_MT);
    lt_cbdata *d = calloc(1, sizeof *d);
    if (!d)
        return luaL_error(L, "callback: out of memory");
    *d = (lt_cbdata){{S, LUA_NOREF, NULL}, sig};
    lt_state_ref(S);
    cb->d = d; /* __gc frees it until the callback exists */
    lua_pushvalue(L, 2);
    d->held.ref = luaL_ref(L, LUA_REGISTRYINDEX);
    tether_callback h;
    int rc = tether_callback_new(S->interp, lua_tostring(L, 1), guest, d, &h);
    if (rc != TETHER_OK)
        return lt_status_error(L, "callback", rc);
    /* Nobody else knows h yet: this cannot fail but by misuse. */
    rc = tether_callback_on_free(h, cbdata_dead, d);
    if (rc != TETHER_OK) {
        (void)tether_callback_free(h);
        return lt_status_error(L, "callback", rc);
    }
    cb->cb = h; /* from here the core frees d */
    lt_renew_sentinel(L, S);
    return 1;
}

static int callback_ptr(lua_State *L)
{
    lt_callback *cb = check_callback(L);
    luaL_argcheck(L, cb->cb != 0, 1, "the callback was freed");
    lua_pushlightuserdata(L, tether_callback_code(cb->cb));
    return 1;
}

/* cb:handle(): the tether_callback handle, for C code that retains it. */
static int callback_handle(lua_State *L)
{
    lt_callback *cb = check_callback(L);
    luaL_argcheck(L, cb->cb != 0, 1, "the callback was freed");
    lua_pushinteger(L, (lua_Integer)cb->cb);
    return 1;
}

/* cb:free(), __gc and __close: drops Lua's owner of the callback.  When
   it was the last (no C code retained it) this waits for calls running on
   other threads; the record, with the Lua function, goes once the core has
   destroyed the callback (cbdata_dead), freed here or at a later drain. */
static int callback_free(lua_State *L)
{
    lt_callback *cb = check_callback(L);
    lt_cbdata *d = cb->d;
    tether_callback h = cb->cb;
    cb->cb = 0;
    cb->d = NULL;
    if (!d)
        return 0; /* freed before */
    lt_state *S = d->held.S;
    lt_state_ref(S); /* d may go in the free, and with it its reference */
    if (h) {
        int deferred = tether_async_defer() == TETHER_OK;
        (void)tether_callback_free(h);
        if (deferred)
            (void)tether_async_allow();
    } else {
        cbdata_release(L, d); /* tether_callback_new failed: never shared */
    }
    if (!atomic_load(&S->closed)) /* else the notification frees them */
        lt_heldref_drain(L, S);
    lt_state_unref(S);
    return 0;
}

/* ------------------------------------------------------------------------
 * tether.load and plugins
 * ---------------------------------------------------------------------- */

typedef struct lt_plugin {
    tether_plugin p; /* 0 once unloaded */
} lt_plugin;

static lt_plugin *check_plugin(lua_State *L)
{
    lt_plugin *p = luaL_checkudata(L, 1, LT_PLUGIN_MT);
    luaL_argcheck(L, p->p != 0, 1, "the plugin was unloaded");
    return p;
}

/* Makes room for one more plugin in S->plugins. */
static void reserve_plugin(lua_State *L, lt_state *S)
{
    if (S->nplugins < S->plugins_cap)
        return;
    int cap = S->plugins_cap ? 2 * S->plugins_cap : 4;
    tether_plugin *v = realloc(S->plugins, (size_t)cap * sizeof *v);
    if (!v)
        luaL_error(L, "load: out of memory");
    S->plugins = v;
    S->plugins_cap = cap;
}

static void forget_plugin(lt_state *S, tether_plugin p)
{
    for (int i = 0; i < S->nplugins; i++) {
        if (S->plugins[i] == p) {
            S->plugins[i] = S->plugins[--S->nplugins];
            return;
        }
    }
}

/* tether.load(path) */
static int module_load(lua_State *L)
{
    lt_state *S = lt_upvalue_state(L);
    const char *path = luaL_checkstring(L, 1);
    lt_plugin *p = lua_newuserdatauv(L, sizeof *p, 1); /* kept callbacks */
    p->p = 0;
    luaL_setmetatable(L, LT_PLUGIN_MT);
    reserve_plugin(L, S);
    lt_tstate *ts = lt_current_tstate();
    int rc = tether_plugin_load(S->rt, path, &p->p);
    lt_back_in_lua(ts); /* the open let the GIL go */
    if (rc == TETHER_EASYNC || rc == TETHER_EFINALIZING)
        lt_wait_ok(L, ts, rc, "load");
    if (rc != TETHER_OK)
        return luaL_error(L, "load: %s", tether_last_error());
    S->plugins[S->nplugins++] = p->p;
    lt_renew_sentinel(L, S);
    return 1;
}

/* After a call into C that may have let go of the GIL: leaves Lua if the
   thread could not come back (shutdown), raises an asynchronous exception
   the call received. */
static void after_c_call(lua_State *L, lt_tstate *ts)
{
    int64_t code;
    void *payload;
    tether_dtor dtor;
    if (!tether_gil_held() || lt_must_leave(ts))
        lt_leave(ts);
    if (tether_async_fetch(&code, &payload, &dtor) == TETHER_OK)
        lt_raise_fetched(L, ts, code, payload, dtor);
}

/* Keeps every callback among the C arguments alive while the plugin at
   index 1 is loaded: C may hold on to its code (a plugin's threads call it
   later), and Lua cannot know for how long (issue 14 P4).  They are let go
   when the plugin is unloaded. */
static void keep_callbacks(lua_State *L, int first, int n)
{
    int have_table = 0;
    for (int i = first; i < first + n; i++) {
        if (!luaL_testudata(L, i, LT_CALLBACK_MT))
            continue;
        if (!have_table) {
            if (lua_getiuservalue(L, 1, 1) != LUA_TTABLE) {
                lua_pop(L, 1);
                lua_newtable(L);
                lua_pushvalue(L, -1);
                lua_setiuservalue(L, 1, 1);
            }
            have_table = 1;
        }
        lua_pushvalue(L, i);
        lua_pushboolean(L, 1);
        lua_rawset(L, -3);
    }
    if (have_table)
        lua_pop(L, 1);
}

/* Calls fn as the signature at sig_idx says, with the Lua values from
   sig_idx + 1 on; pushes the C return value.  Returns the number of results.
   A bad argument is reported under the function's name, `what`, numbered
   as Lua numbers a method's arguments when `method` (p:call) is set, also
   when it was called as a plain function (pcall(p.call, p, ...)). */
static int call_c(lua_State *L, void *fn, int sig_idx, const char *what,
                  int method)
{
    lt_sig sig;
    check_sig(L, sig_idx, &sig);
    int given = lua_gettop(L) - sig_idx;
    if (given != sig.nargs)
        return luaL_error(L, "%s: the signature takes %d argument(s), got %d", what,
                          (int)sig.nargs, given);
    lt_value vals[LT_MAX_ARGS], ret;
    void *args[LT_MAX_ARGS];
    for (int i = 0; i < sig.nargs; i++) {
        const char *bad = to_c(L, sig_idx + 1 + i, sig.args[i], &vals[i]);
        if (bad)
            return luaL_error(L, "bad argument #%d to '%s' (%s)",
                              sig_idx + 1 + i - method, what, bad);
        args[i] = &vals[i];
    }
    if (method)
        keep_callbacks(L, sig_idx + 1, sig.nargs);
    lt_tstate *ts = lt_current_tstate();
    memset(&ret, 0, sizeof ret);
    int rc = tether_ffi_call(fn, lua_tostring(L, sig_idx), args, &ret);
    lt_back_in_lua(ts); /* the call may have let the GIL go */
    if (rc != TETHER_OK)
        return lt_status_error(L, what, rc);
    after_c_call(L, ts);
    if (sig.ret == T_VOID)
        return 0;
    push_value(L, sig.ret, &ret);
    return 1;
}

/* p:call(symbol, signature, args...) --> the C return value */
static int plugin_call(lua_State *L)
{
    lt_plugin *p = check_plugin(L);
    void *fn;
    int rc = tether_plugin_symbol(p->p, luaL_checkstring(L, 2), &fn);
    if (rc != TETHER_OK)
        return lt_status_error(L, "call", rc);
    return call_c(L, fn, 3, "call", 1);
}

/* tether.ffi_call(fnptr, signature, args...) --> the C return value.  As
   safe as the pointer it is given. */
static int module_ffi_call(lua_State *L)
{
    void *fn = lua_islightuserdata(L, 1) ? lua_touserdata(L, 1) : code_of(L, 1);
    luaL_argexpected(L, fn != NULL, 1, "function pointer");
    return call_c(L, fn, 2, "ffi_call", 0);
}

static int plugin_symbol(lua_State *L)
{
    lt_plugin *p = check_plugin(L);
    void *fn;
    int rc = tether_plugin_symbol(p->p, luaL_checkstring(L, 2), &fn);
    if (rc != TETHER_OK)
        return lt_status_error(L, "symbol", rc);
    lua_pushlightuserdata(L, fn);
    return 1;
}

/* p:unload([timeout]) --> true, or false when calls were still running */
static int plugin_unload(lua_State *L)
{
    lt_state *S = lt_upvalue_state(L);
    lt_plugin *p = check_plugin(L);
    int64_t ns = lt_opt_timeout(L, 2);
    lt_tstate *ts = lt_current_tstate();
    int rc = tether_plugin_unload(p->p, ns);
    lt_back_in_lua(ts); /* the unload let the GIL go */
    /* Cut short by an exception, the unload may or may not have happened. */
    int gone = rc == TETHER_OK ||
               (rc == TETHER_EASYNC && tether_plugin_info(p->p, NULL, NULL) != TETHER_OK);
    if (gone) {
        forget_plugin(S, p->p);
        p->p = 0;
        lua_pushnil(L); /* its fini stopped what called the kept callbacks */
        lua_setiuservalue(L, 1, 1);
    }
    lua_pushboolean(L, lt_wait_ok(L, ts, rc, "unload"));
    return 1;
}

static int plugin_index(lua_State *L)
{
    lt_plugin *p = luaL_checkudata(L, 1, LT_PLUGIN_MT);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL || !p->p)
        return 1;
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
    const char *name = NULL, *version = NULL;
    (void)tether_plugin_info(p->p, &name, &version);
    if (strcmp(k, "name") == 0 && name)
        lua_pushstring(L, name);
    else if (strcmp(k, "version") == 0 && version)
        lua_pushstring(L, version);
    else
        lua_pushnil(L);
    return 1;
}

void lt_unload_plugins(lt_state *S)
{
    while (S->nplugins > 0)
        (void)tether_plugin_unload(S->plugins[--S->nplugins], LT_UNLOAD_TIMEOUT_NS);
}

void lt_open_ffi(lua_State *L, lt_state *S)
{
    static const luaL_Reg cb_m[] = {
        {"ptr", callback_ptr}, {"handle", callback_handle},
        {"free", callback_free}, {NULL, NULL}};
    static const luaL_Reg cb_mt[] = {
        {"__gc", callback_free}, {"__close", callback_free}, {NULL, NULL}};
    static const luaL_Reg pl_m[] = {
        {"call", plugin_call}, {"symbol", plugin_symbol},
        {"unload", plugin_unload}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {
        {"callback", callback_new}, {"load", module_load},
        {"ffi_call", module_ffi_call}, {NULL, NULL}};
    lt_new_class(L, S, LT_CALLBACK_MT, cb_m, cb_mt, NULL);
    lt_new_class(L, S, LT_PLUGIN_MT, pl_m, NULL, plugin_index);
    S->seed = lua_newthread(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_seed); /* for the life of the state */
    lua_pushlightuserdata(L, S);
    luaL_setfuncs(L, funcs, 1);
}
