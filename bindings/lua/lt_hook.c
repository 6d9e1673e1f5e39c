/*
 * lt_hook.c - handing the GIL over while Lua code runs, and knowing which
 * coroutine each thread runs.
 *
 * Notes on the implementation
 * ===========================
 *
 * The request.  The core calls lt_on_breaker on the thread that sets
 * something in the eval breaker of the GIL holder: a waiter that waited a
 * switch interval (again every interval while it waits), a raise, the
 * finalizer.  It runs with the GIL's mutex held and a pin on the GIL, so
 * the holder cannot let go of the GIL meanwhile and its lt_tstate stays
 * valid.  It sets `requested` and arms the coroutine the holder runs now
 * with a *line* hook (lua_sethook is documented as safe to call
 * asynchronously; lua.c does it from a signal handler).
 *
 * Why a line hook.  The VM notices a hook installed from outside only where
 * it re-reads its `trap` flag: loop back-edges, calls, and instructions
 * that went through a slow path (`#`, a new table key, ...).  A count hook
 * with count 1 would then fire at the next instruction, which after a slow
 * path is in the middle of a statement; worse, right after any hook has
 * fired the VM keeps `trap` on for one more instruction, so a request that
 * lands then fires between the read and the write of `x = x + 1`.  A line
 * hook fires only when the holder starts a new line, jumps back (a loop
 * iteration, even on one line), or enters or leaves a function; and since
 * the armed mask includes LUA_MASKLINE, the VM keeps `oldpc` exact across
 * the hook that fired, so a re-arm in that one-instruction window waits for
 * the next line too.  The GIL therefore changes hands only between lines
 * and at calls: a one-line `x = x + 1` or `t[#t + 1] = v` is never split.
 *
 * The first line event.  The VM tells "a new line" by comparing the pc
 * with `oldpc`, which it updates only while a line hook is on.  A hook
 * armed from outside therefore starts from the `oldpc` the coroutine's
 * previous line hook left, which may point anywhere: when the previous
 * request was served at a loop's closing line (the `for` line, whose
 * FORLOOP instruction comes after the body), any pc of the body looks
 * like a jump back, and the first instruction that re-reads `trap` (the
 * one after a `#`, a concatenation, a new key) got a line event in the
 * middle of its statement.  So the armed hook is lt_hook_first, which
 * serves nothing on a line event: by then the VM has made `oldpc` exact,
 * and it hands the coroutine over to lt_hook, which serves the request at
 * the next line event, always a real one.  (A request waits at most one
 * line longer.  Call and return events are exact and served at once.)
 *
 * The hook.  On a line, call or return event lt_hook takes itself off the
 * coroutine (putting back any hook it covered), clears `requested`, and
 * calls tether_checkpoint, which hands the GIL over, delivers an
 * asynchronous exception (raised here as a Lua error) or reports shutdown
 * (the thread leaves Lua; see lt.h).  So a hook is installed only between
 * a request and the line that serves it: a thread that nobody waits for
 * runs at plain-Lua speed.  (Count events reach lt_hook only for a covered
 * count hook, which gets them and nothing else happens.)
 *
 * Which coroutine.  A count hook is per coroutine, so it must land on the
 * one the holder runs now.  The module replaces coroutine.resume,
 * coroutine.wrap and coroutine.close with versions that record each switch
 * in lt_tstate.running (lt_switch) and arm the coroutine switched to when a
 * request is pending.  The switch costs no lock, by a Dekker-style protocol
 * on three atomics of the holder's lt_tstate (sequentially consistent, or
 * plain on the holder's side with membarrier on the requester's: see "The
 * asymmetric fence" below):
 *
 *     requester (hook_mu held)         holder, switching to co
 *     arming = 1                       running = co
 *     requested = 1                    while (arming) yield
 *     c = running; arm c               if (requested) arm co (hook_mu)
 *     arming = 0 (release)
 *
 * No request is lost: of "requested = 1 / read running" and "running = co /
 * read requested", one side sees the other's store, so co gets armed by one
 * of them (or both: harmless).  No coroutine is hooked after it may be
 * gone: if the requester read the coroutine the holder left, its
 * `arming = 1` came before the holder read `arming`, so the holder waits
 * until the requester is done with it (acquire/release on arming orders
 * the hooking before whatever the holder does next, such as letting the
 * coroutine be collected).  A hook left on a coroutine the holder left
 * before the hook fired fires once when that coroutine runs again: one
 * extra checkpoint.
 *
 * Other hooks.  A hook already on the coroutine (debug.sethook, a
 * profiler, lua.c's Ctrl-C hook) is saved in S->saved and keeps its mask
 * and count under lt_hook, which passes every event the saved mask asks
 * for on to it, and puts it back when the request is served (its count,
 * if it has one, then starts again: so a count hook set by debug.sethook
 * is never covered; the module runs it, see "Count hooks" below).  The
 * module's debug.sethook and debug.gethook work
 * under hook_mu and through S->saved (see below), so a request never
 * lands in the middle of them and they never see the module's hook.
 * With more than
 * LT_SAVED_HOOKS coroutines carrying foreign hooks under an unserved
 * request at once, a request leaves the extra ones alone (served at the
 * next wait instead).
 */
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#endif

#include "lt.h"

static void lt_hook(lua_State *L, lua_Debug *ar);
static void lt_hook_first(lua_State *L, lua_Debug *ar);
static void lt_counted(lua_State *L, lua_Debug *ar);
static void lt_counted_line(lua_State *L, lua_Debug *ar);

/* One of the module's own one-shot hooks. */
static int is_ours(lua_Hook h)
{
    return h == lt_hook || h == lt_hook_first;
}

/* A user's count hook that the module runs (see "Count hooks"). */
static int is_counted(lua_Hook h)
{
    return h == lt_counted || h == lt_counted_line;
}

/* ------------------------------------------------------------------------
 * Saved hooks.  All under S->hook_mu.
 * ---------------------------------------------------------------------- */

static int saved_find(lt_state *S, lua_State *co)
{
    for (int i = 0; i < LT_SAVED_HOOKS; i++)
        if (S->saved[i].co == co)
            return i;
    return -1;
}

/* Remembers co's current hook.  Returns 0 when there is no room. */
static int saved_put(lt_state *S, lua_State *co, lua_Hook hook)
{
    int i = saved_find(S, co);
    if (i < 0)
        i = saved_find(S, NULL);
    if (i < 0)
        return 0;
    S->saved[i] = (struct lt_saved){co, hook, lua_gethookmask(co),
                                    lua_gethookcount(co)};
    return 1;
}

/* Takes co's saved hook off the list into *out ({0} when none). */
static void saved_take(lt_state *S, lua_State *co, struct lt_saved *out)
{
    int i = saved_find(S, co);
    *out = (struct lt_saved){NULL, NULL, 0, 0};
    if (i >= 0) {
        *out = S->saved[i];
        S->saved[i].co = NULL;
    }
}

/* Installs the one-shot hook on co, over whatever hook co has. */
static void arm_locked(lt_state *S, lua_State *co)
{
    lua_Hook h = lua_gethook(co);
    if (is_counted(h))
        return; /* its count hook serves the request (no lua_sethook: that
                   would start the user's count again) */
    if (is_ours(h)) {
        /* Already armed: setting it again costs nothing and turns the
           coroutine's trap flags back on. */
        lua_sethook(co, h, lua_gethookmask(co), lua_gethookcount(co));
        return;
    }
    if (h == NULL) {
        struct lt_saved stale;
        saved_take(S, co, &stale);
    } else if (!saved_put(S, co, h)) {
        return;
    }
    lua_sethook(co, lt_hook_first, lua_gethookmask(co) | LUA_MASKLINE,
                lua_gethookcount(co));
}

/* ------------------------------------------------------------------------
 * The asymmetric fence
 *
 * The switch side of the protocol (lt_switch) runs at every coroutine
 * switch; the request side a few hundred times a second.  Each side needs
 * a full fence between its store and its load, and on x86 a sequentially
 * consistent store costs about as much as the rest of a switch.  Where
 * Linux's membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) is available, the
 * requester issues it between its stores and its load instead: it runs a
 * full fence on every CPU that runs a thread of this process, so each
 * holder's plain store and load are on one side of it or the other, which
 * is what the Dekker argument needs.  Then the switch is plain stores and
 * loads.  TETHER_LUA_FENCED=1 (or no membarrier) keeps the fenced switch.
 * ---------------------------------------------------------------------- */

static pthread_once_t asym_once = PTHREAD_ONCE_INIT;
static int asym; /* 1: requesters fence for the holders (immutable once set) */

static void asym_init(void)
{
    const char *env = getenv("TETHER_LUA_FENCED");
    if (env && strcmp(env, "1") == 0)
        return;
#if defined(__linux__) && defined(__NR_membarrier)
    if (syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0)
        asym = 1;
#endif
}

/* The requester's half: a full fence on every CPU running this process. */
static void asym_fence(void)
{
#if defined(__linux__) && defined(__NR_membarrier)
    (void)syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
#endif
}

/* ------------------------------------------------------------------------
 * Requests and the hook
 * ---------------------------------------------------------------------- */

void lt_on_breaker(void *thread_ud, void *ud)
{
    lt_tstate *ts = thread_ud;
    lt_state *S = ud;
    if (!ts)
        return;
    lt_mutex_lock(&S->hook_mu, LT_RANK_HOOK);
    /* Once the state is closed, ts may be a stale pointer: not touched. */
    if (!atomic_load(&S->closed) && ts->S == S) {
        atomic_store(&ts->arming, 1);
        atomic_store(&ts->requested, 1);
        if (asym)
            asym_fence();
        lua_State *co = atomic_load(&ts->running);
        if (co)
            arm_locked(S, co);
        atomic_store_explicit(&ts->arming, 0, memory_order_release);
    }
    lt_mutex_unlock(&S->hook_mu, LT_RANK_HOOK);
}

/* Arms the coroutine the calling thread runs, if a request is pending. */
static void arm_self(lt_tstate *ts)
{
    lt_state *S = ts->S;
    lt_mutex_lock(&S->hook_mu, LT_RANK_HOOK);
    lua_State *co = atomic_load(&ts->running);
    if (co && atomic_load(&ts->requested))
        arm_locked(S, co);
    lt_mutex_unlock(&S->hook_mu, LT_RANK_HOOK);
}

void lt_switch(lt_tstate *ts, lua_State *co)
{
    if (asym) { /* the requester fences for us (see above) */
        atomic_store_explicit(&ts->running, co, memory_order_relaxed);
        atomic_signal_fence(memory_order_seq_cst);
        while (atomic_load_explicit(&ts->arming, memory_order_acquire))
            sched_yield();
        if (co && atomic_load_explicit(&ts->requested, memory_order_relaxed))
            arm_self(ts);
        return;
    }
    atomic_store(&ts->running, co);
    /* A requester that read the coroutine left behind must be done hooking
       it before this thread goes on (it may be collected after that). */
    while (atomic_load_explicit(&ts->arming, memory_order_acquire))
        sched_yield();
    if (co && atomic_load(&ts->requested))
        arm_self(ts);
}

/* lt_switch for the module's coroutine functions, inlined: with the
   asymmetric fence, a switch that nobody is arming is one plain store and
   two plain loads. */
static inline void switch_to(lt_tstate *ts, lua_State *co)
{
    if (asym) {
        atomic_store_explicit(&ts->running, co, memory_order_relaxed);
        atomic_signal_fence(memory_order_seq_cst);
        if (!atomic_load_explicit(&ts->arming, memory_order_acquire) &&
            !atomic_load_explicit(&ts->requested, memory_order_relaxed))
            return;
    }
    lt_switch(ts, co);
}

void lt_request_self(lt_tstate *ts)
{
    atomic_store(&ts->requested, 1);
    arm_self(ts);
}

/* Hands the event on to the hook lt_hook covered, if it asked for it. */
static void forward(const struct lt_saved *prev, lua_State *L, lua_Debug *ar)
{
    int bit = ar->event == LUA_HOOKTAILCALL ? LUA_MASKCALL : 1 << ar->event;
    if (prev->hook && (prev->mask & bit))
        prev->hook(L, ar);
}

/* A count event: only a covered count hook asks for those, and it gets
   them; the request waits for a line. */
static void forward_count(lt_state *S, lua_State *L, lua_Debug *ar)
{
    struct lt_saved prev = {NULL, NULL, 0, 0};
    lt_mutex_lock(&S->hook_mu, LT_RANK_HOOK);
    int i = saved_find(S, L);
    if (i >= 0)
        prev = S->saved[i];
    lt_mutex_unlock(&S->hook_mu, LT_RANK_HOOK);
    forward(&prev, L, ar);
}

/* The first line event after arming: it may be false (see "The first
   line event" above), so it only hands the coroutine over to lt_hook,
   which serves the request at the next one.  Call and return events are
   exact and serve it at once. */
static void lt_hook_first(lua_State *L, lua_Debug *ar)
{
    if (ar->event == LUA_HOOKLINE) {
        lt_state *S = lt_registry_state(L);
        struct lt_saved prev = {NULL, NULL, 0, 0};
        lt_mutex_lock(&S->hook_mu, LT_RANK_HOOK);
        if (lua_gethook(L) == lt_hook_first)
            lua_sethook(L, lt_hook, lua_gethookmask(L), lua_gethookcount(L));
        int i = saved_find(S, L);
        if (i >= 0)
            prev = S->saved[i];
        lt_mutex_unlock(&S->hook_mu, LT_RANK_HOOK);
        forward(&prev, L, ar);
        return;
    }
    lt_hook(L, ar);
}

static void lt_hook(lua_State *L, lua_Debug *ar)
{
    lt_state *S = lt_registry_state(L);
    lt_tstate *ts = lt_current_tstate();
    struct lt_saved prev;
    if (ts && ts->S != S)
        ts = NULL; /* this thread runs another state's Lua too */
    if (ar->event == LUA_HOOKCOUNT) {
        forward_count(S, L, ar);
        return;
    }
    lt_mutex_lock(&S->hook_mu, LT_RANK_HOOK);
    saved_take(S, L, &prev);
    lua_sethook(L, prev.hook, prev.mask, prev.count);
    if (ts)
        atomic_store(&ts->requested, 0);
    lt_mutex_unlock(&S->hook_mu, LT_RANK_HOOK);
    if (ts)
        ts->in_hook = 1; /* stays set if the checkpoint raises */
    lt_checkpoint(L, ts);
    if (ts)
        ts->in_hook = 0;
    forward(&prev, L, ar);
}

/* ------------------------------------------------------------------------
 * coroutine.resume, coroutine.wrap, coroutine.close
 *
 * The same behaviour as the standard library's, plus the tracking, plus
 * one rule: an asynchronous exception that ends a coroutine is not turned
 * into a return value; it goes on in the resumer, because it is aimed at
 * the thread, not at the coroutine.
 * ---------------------------------------------------------------------- */

enum { COS_RUN, COS_DEAD, COS_YIELD, COS_NORM };
static const char *const status_names[] = {"running", "dead", "suspended", "normal"};

static int co_status(lua_State *L, lua_State *co)
{
    lua_Debug ar;
    if (L == co)
        return COS_RUN;
    switch (lua_status(co)) {
    case LUA_YIELD:
        return COS_YIELD;
    case LUA_OK:
        if (lua_getstack(co, 0, &ar))
            return COS_NORM;
        return lua_gettop(co) == 0 ? COS_DEAD : COS_YIELD;
    default:
        return COS_DEAD;
    }
}

/* The calling thread's lt_tstate if it belongs to this state (upvalue 1).
   The module's last push on this OS thread is the answer when it runs L:
   only this thread can be running L, and a record runs only coroutines of
   its own state, so it is of this state too (no need to fetch upvalue 1
   on this path, which every coroutine switch takes).  Otherwise the core
   is asked. */
static inline lt_tstate *ts_here(lua_State *L)
{
    lt_tstate *ts = lt_tl_get();
    if (ts && atomic_load_explicit(&ts->running, memory_order_relaxed) == L)
        return ts;
    lt_state *S = lua_touserdata(L, lua_upvalueindex(1));
    ts = lt_current_tstate();
    return ts && ts->S == S ? ts : NULL;
}

static lua_State *check_co(lua_State *L)
{
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co, 1, "coroutine");
    return co;
}

/* 1 if the error on L's top is an asynchronous exception raised in this
   thread (tether.Cancelled, or the value the last t:raise delivered). */
static int is_async(lua_State *L, lt_tstate *ts)
{
    lt_push_cancelled(L);
    int yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
    if (yes || !ts || ts->async_ref == LUA_NOREF)
        return yes;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ts->async_ref);
    yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
    if (yes) {
        luaL_unref(L, LUA_REGISTRYINDEX, ts->async_ref);
        ts->async_ref = LUA_NOREF;
    }
    return yes;
}

/* Resumes co with the top narg values of L.  Returns the number of values
   moved to L, or -1 with the error on L's top.

   Never inlined, on purpose: between the Lua call of a wrap function (or
   coroutine.resume) and lua_resume there must be two C frames, as in the
   standard library (auxwrap or luaB_coresume, then auxresume).  A yield
   leaves the coroutine by a longjmp from C frames below the yield, so the
   CPU's return-address predictor still holds their return addresses on
   top of those of the yield's own call (the VM calling luaD_precall,
   luaD_precall calling the C function).  The first returns after the
   longjmp (into lua_resume, into this function, into wrapped) pop the
   stale entries and are mispredicted in plain Lua too; the next ones, into
   luaD_precall and the VM, pop the yield's entries, which are the right
   addresses only when the two depths match, as they do for the standard
   library.  Inlined (one frame fewer), those two returns were mispredicted
   at every switch as well: 1.2-1.4x plain Lua on b_overhead.lua's
   coroutine loop for 1.05x the instructions (docs/lua.md, "Coroutine
   switches"). */
static __attribute__((noinline)) int
resume(lua_State *L, lua_State *co, int narg, lt_tstate *ts)
{
    int nres;
    if (!lua_checkstack(co, narg)) {
        lua_pushliteral(L, "too many arguments to resume");
        return -1;
    }
    lua_xmove(L, co, narg);
    struct lt_resumer fr = {L, NULL};
    if (ts) {
        fr.prev = ts->resumers;
        ts->resumers = &fr;
        switch_to(ts, co);
    }
    int st = lua_resume(co, L, narg, &nres);
    if (ts) {
        switch_to(ts, L);
        ts->resumers = fr.prev;
    }
    if (st == LUA_OK || st == LUA_YIELD) {
        if (!lua_checkstack(L, nres + 1)) {
            lua_pop(co, nres);
            lua_pushliteral(L, "too many results to resume");
            return -1;
        }
        lua_xmove(co, L, nres);
        return nres;
    }
    lua_xmove(co, L, 1);
    return -1;
}

/* lua_resetthread with the tracking: co's __close handlers run on co. */
static int close_thread(lua_State *L, lua_State *co, lt_tstate *ts)
{
    struct lt_resumer fr = {L, NULL};
    if (ts) {
        fr.prev = ts->resumers;
        ts->resumers = &fr;
        lt_switch(ts, co);
    }
    int st = lua_resetthread(co);
    if (ts) {
        lt_switch(ts, L);
        ts->resumers = fr.prev;
    }
    return st;
}

static int coroutine_resume(lua_State *L)
{
    lua_State *co = check_co(L);
    lt_tstate *ts = ts_here(L);
    int r = resume(L, co, lua_gettop(L) - 1, ts);
    if (r < 0) {
        if (is_async(L, ts))
            return lua_error(L);
        lua_pushboolean(L, 0);
        lua_insert(L, -2);
        return 2;
    }
    lua_pushboolean(L, 1);
    lua_insert(L, -(r + 1));
    return r + 1;
}

static int wrapped(lua_State *L)
{
    lua_State *co = lua_tothread(L, lua_upvalueindex(2));
    lt_tstate *ts = ts_here(L);
    int r = resume(L, co, lua_gettop(L), ts);
    if (r >= 0)
        return r;
    int st = lua_status(co);
    if (st != LUA_OK && st != LUA_YIELD) { /* an error in co: close it */
        st = close_thread(L, co, ts);
        lua_xmove(co, L, 1);
    }
    if (!is_async(L, ts) && st != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
    }
    return lua_error(L);
}

static int coroutine_wrap(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_State *co = lua_newthread(L);
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    lua_pushcclosure(L, wrapped, 2);
    return 1;
}

static int coroutine_close(lua_State *L)
{
    lua_State *co = check_co(L);
    int status = co_status(L, co);
    if (status != COS_DEAD && status != COS_YIELD)
        return luaL_error(L, "cannot close a %s coroutine", status_names[status]);
    lt_tstate *ts = ts_here(L);
    if (close_thread(L, co, ts) == LUA_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    lua_xmove(co, L, 1);
    if (is_async(L, ts))
        return lua_error(L);
    return 2;
}

/* ------------------------------------------------------------------------
 * xpcall
 *
 * An asynchronous exception raised by lt_hook is raised inside a hook, and
 * Lua calls an xpcall message handler right where the error is raised:
 * the handler would run with hooks off, so it could not be asked for the
 * GIL or cancelled, and a handler that loops would freeze every thread.
 * The module's xpcall wraps the handler: for such an exception the wrapper
 * returns the error unchanged and the handler runs once the stack has
 * unwound to xpcall, outside the hook, where the GIL is handed over and a
 * cancel reaches it like any Lua code.  Every other error reaches the
 * handler where it was raised, as with the standard xpcall.
 * ---------------------------------------------------------------------- */

/* 1 if the value on L's top is an asynchronous exception raised in this
   thread (as is_async, without forgetting the raised value). */
static int is_async_peek(lua_State *L, lt_tstate *ts)
{
    lt_push_cancelled(L);
    int yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
    if (yes || ts->async_ref == LUA_NOREF)
        return yes;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ts->async_ref);
    yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
    return yes;
}

/* The wrapper (upvalues: the handler, S, and whether the last error it
   saw was put off to xp_finish).  That mark belongs to this xpcall and is
   cleared by the next error the handler sees: an error put off here may
   have been caught by a protected call inside the xpcall (a `load`
   reader's, which Lua's parser catches after running the handler) and
   never reach xp_finish; a later error must not run the handler twice. */
static int xp_handler(lua_State *L)
{
    lt_tstate *ts = lt_current_tstate();
    if (ts && ts->S == lua_touserdata(L, lua_upvalueindex(2)) && ts->in_hook) {
        ts->in_hook = 0;
        lua_settop(L, 1);
        if (is_async_peek(L, ts)) {
            lua_pushboolean(L, 1);
            lua_replace(L, lua_upvalueindex(3));
            return 1;
        }
    }
    lua_pushboolean(L, 0);
    lua_replace(L, lua_upvalueindex(3));
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int xp_finish(lua_State *L, int status, lua_KContext extra)
{
    if (status == LUA_OK || status == LUA_YIELD)
        return lua_gettop(L) - (int)extra;
    lua_getupvalue(L, 2, 3); /* the wrapper's mark */
    int deferred = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (deferred) {
        lua_pushboolean(L, 0);
        lua_setupvalue(L, 2, 3);
    }
    if (deferred && status == LUA_ERRRUN) { /* a memory error skips handlers */
        lua_getupvalue(L, 2, 1); /* the handler */
        lua_insert(L, -2);
        lua_call(L, 1, 1); /* its errors go on: nothing swallows them */
    }
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
}

/* xpcall's continuation without the wrapper. */
static int xp_finish_plain(lua_State *L, int status, lua_KContext extra)
{
    if (status == LUA_OK || status == LUA_YIELD)
        return lua_gettop(L) - (int)extra;
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
}

/* xpcall(f, msgh, ...) (upvalues: S, the standard debug.traceback) */
static int global_xpcall(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (lua_rawequal(L, 2, lua_upvalueindex(2))) {
        /* xpcall(f, debug.traceback): the wrapper would be the first frame
           of every traceback it makes, and this handler, a C function
           that returns at once (an exception's value is not a string: it
           is returned as it is), may as well run inside the hook. */
        lua_pushboolean(L, 1);
        lua_pushvalue(L, 1);
        lua_rotate(L, 3, 2); /* [f, traceback, true, f, args...] */
        int st = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, xp_finish_plain);
        return xp_finish_plain(L, st, 2);
    }
    lua_pushvalue(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushboolean(L, 0);
    lua_pushcclosure(L, xp_handler, 3);
    lua_replace(L, 2);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2); /* [f, handler, true, f, args...] */
    int st = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, xp_finish);
    return xp_finish(L, st, 2);
}

/* ------------------------------------------------------------------------
 * debug.sethook and debug.gethook
 *
 * The module's own versions, each one C function as the standard ones are,
 * so that a user's hook sees exactly the call and return events and the
 * frame names it would see without the module (Lua's db.lua and
 * locals.lua check them).  They keep the same record as the standard
 * library: the registry table "_HOOKKEY" (weak keys) maps each coroutine
 * to its Lua hook function, and the C hook installed is the standard
 * library's own (found once at open: see capture_lua_hook), so functions
 * saved before the module loaded still agree with these.  Both work under
 * hook_mu and see through the module's armed hook: setting a hook on a
 * coroutine armed by a request changes the hook it covers, and getting it
 * reports that covered hook, never the module's.
 * ---------------------------------------------------------------------- */

#define LT_HOOKKEY "_HOOKKEY"

/* The standard library's C hook (calls the Lua function of the table),
   or NULL when it could not be found.  Synchronization: atomic (every
   state's luaopen stores it, interpreters opening in parallel among them,
   always the same value; hooks of any state read it). */
static _Atomic(lua_Hook) std_hookf;

/* The coroutine argument: L1 and the index of the first other argument
   minus one. */
static lua_State *hook_target(lua_State *L, int *arg)
{
    if (lua_isthread(L, 1)) {
        *arg = 1;
        return lua_tothread(L, 1);
    }
    *arg = 0;
    return L;
}

static int hook_mask_of(const char *smask, lua_Integer count)
{
    int mask = 0;
    if (strchr(smask, 'c'))
        mask |= LUA_MASKCALL;
    if (strchr(smask, 'r'))
        mask |= LUA_MASKRET;
    if (strchr(smask, 'l'))
        mask |= LUA_MASKLINE;
    if (count > 0)
        mask |= LUA_MASKCOUNT;
    return mask;
}

/* ------------------------------------------------------------------------
 * Count hooks
 *
 * lua_sethook starts the count again (Lua keeps the instructions left
 * until the next count event in the lua_State, out of the API's reach), so
 * a count hook that the one-shot hook covered and put back lost the part
 * of its count it had run: with a request every millisecond, a count of a
 * million fired a few times in a run that should have fired a hundred.
 * So the module runs every count hook that debug.sethook installs itself,
 * and never sets it from outside.  The coroutine's C hook is lt_counted,
 * with the user's mask and a count of at most LT_COUNT_STEP; the record
 * below (a userdata in a registry table with weak keys, one per coroutine)
 * keeps the user's mask and count and how many instructions are left to
 * the user's next count event.  At each count event lt_counted takes the
 * step from what is left, calls the user's hook when nothing is, and
 * installs the next step; a lua_sethook at a count event loses nothing,
 * since the VM has just started the count again anyway.  Lua counts the
 * instructions of a hook function too: the step is installed before the
 * user's hook runs, so those count as without the module (only a hook
 * function that runs more than a whole step in one call, with a count
 * above LT_COUNT_STEP, makes a step go unseen).
 *
 * Requests.  The requester leaves such a coroutine alone (arm_locked).
 * lt_counted sees the request at its next count event, at most
 * LT_COUNT_STEP instructions later, and, if the user's mask has no line
 * bit, adds one there, by becoming lt_counted_line (which knows the line
 * bit is its own); its first line event may be false, as for
 * lt_hook_first ("The first line event"), and serves nothing.  The next
 * line event serves the request, and so does a call or return event the
 * user asked for; the line bit goes at the first count event that finds
 * no request.  The hook function tells which it is so that a coroutine
 * that inherited the hook (lua_newthread copies it) and has no record can
 * be given the user's part back: the standard C hook with the mask
 * without the module's line bit, as stock Lua would have copied it.
 *
 * Synchronization: the records, gil (only the GIL holder runs hooks and
 * debug.sethook); the lua_sethook calls on a coroutine, hook_mu, as every
 * other (a requester reads the hook under it).
 * ---------------------------------------------------------------------- */

/* The module's record of a user's count hook. */
struct lt_count {
    int mask;  /* the user's mask (has LUA_MASKCOUNT) */
    int count; /* the user's count */
    int left;  /* instructions to the user's next count event, from the
                  start of the step under way */
    int step;  /* the count installed: the step under way */
    int first; /* lt_counted_line's next line event may be false */
};

/* The registry table of the records (weak keys: the coroutines). */
static const char k_counts = 'c';

static int count_step(int left)
{
    return left < LT_COUNT_STEP ? left : LT_COUNT_STEP;
}

/* Pushes co itself on L's top. */
static void push_thread_of(lua_State *L, lua_State *co)
{
    if (L == co) {
        lua_pushthread(L);
    } else {
        lua_pushthread(co);
        lua_xmove(co, L, 1);
    }
}

/* Pushes co's record (or nil) and returns it (NULL for none).  Needs 2
   free slots on L and, for another co, one on co.  Raises nothing. */
static struct lt_count *push_count(lua_State *L, lua_State *co)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &k_counts) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_pushnil(L);
        return NULL;
    }
    push_thread_of(L, co);
    lua_rawget(L, -2);
    lua_remove(L, -2);
    return lua_touserdata(L, -1);
}

/* Makes co's record (or with count 0 drops it).  Raises when out of
   memory, before anything is changed.  Returns the new record. */
static struct lt_count *set_count(lua_State *L, lua_State *co, int mask, int count)
{
    if (L != co && !lua_checkstack(co, 1))
        luaL_error(L, "stack overflow");
    luaL_checkstack(L, 4, NULL);
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &k_counts) != LUA_TTABLE) {
        lua_pop(L, 1);
        if (count <= 0)
            return NULL;
        lua_newtable(L);
        lua_pushliteral(L, "k");
        lua_setfield(L, -2, "__mode");
        lua_pushvalue(L, -1);
        lua_setmetatable(L, -2);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &k_counts);
    }
    struct lt_count *c = NULL;
    push_thread_of(L, co);
    if (count > 0) {
        c = lua_newuserdatauv(L, sizeof *c, 0);
        *c = (struct lt_count){mask, count, count, count_step(count), 0};
    } else {
        lua_pushnil(L);
    }
    lua_rawset(L, -3);
    lua_pop(L, 1);
    return c;
}

/* The calling thread's lt_tstate if it belongs to S. */
static lt_tstate *ts_of(lt_state *S)
{
    lt_tstate *ts = lt_current_tstate();
    return ts && ts->S == S ? ts : NULL;
}

/* Serves a request in a hook: the GIL handed over, an exception raised. */
static void serve(lua_State *L, lt_state *S, lt_tstate *ts)
{
    lt_mutex_lock(&S->hook_mu, LT_RANK_HOOK);
    atomic_store(&ts->requested, 0);
    lt_mutex_unlock(&S->hook_mu, LT_RANK_HOOK);
    ts->in_hook = 1; /* stays set if the checkpoint raises */
    lt_checkpoint(L, ts);
    ts->in_hook = 0;
}

/* An lt_counted hook on a coroutine without a record: it was copied by
   lua_newthread.  Gives it what stock Lua would have copied: the standard
   C hook with the user's part of the mask. */
static void counted_inherited(lua_State *L, lt_state *S, lua_Hook fn)
{
    lt_tstate *ts = ts_of(S);
    lt_mutex_lock(&S->hook_mu, LT_RANK_HOOK);
    int mask = lua_gethookmask(L);
    if (fn == lt_counted_line)
        mask &= ~LUA_MASKLINE;
    if (lua_gethook(L) == fn) {
        lua_sethook(L, std_hookf, mask, lua_gethookcount(L));
        if (fn == lt_counted_line && ts && atomic_load(&ts->requested))
            arm_locked(S, L); /* the request its line bit was for */
    }
    lt_mutex_unlock(&S->hook_mu, LT_RANK_HOOK);
}

/* A count event: the step is done. */
static void counted_count(lua_State *L, lua_Debug *ar, lt_state *S,
                          struct lt_count *c, lua_Hook fn)
{
    int user = 0;
    c->left -= c->step;
    if (c->left <= 0) {
        c->left = c->count;
        user = 1;
    }
    lt_tstate *ts = ts_of(S);
    int line = !(c->mask & LUA_MASKLINE) && ts && atomic_load(&ts->requested);
    lua_Hook next = line ? lt_counted_line : lt_counted;
    int step = count_step(c->left);
    if (next != fn || step != c->step) {
        if (next == lt_counted_line && fn != next)
            c->first = 1;
        c->step = step;
        lt_mutex_lock(&S->hook_mu, LT_RANK_HOOK);
        lua_sethook(L, next, c->mask | (line ? LUA_MASKLINE : 0), step);
        lt_mutex_unlock(&S->hook_mu, LT_RANK_HOOK);
    }
    if (user)
        std_hookf(L, ar); /* may set hooks: the record is not touched after */
}

static void counted(lua_State *L, lua_Debug *ar, lua_Hook fn)
{
    lt_state *S = lt_registry_state(L);
    struct lt_count *c = push_count(L, L); /* anchored on the stack */
    if (c == NULL) {
        lua_pop(L, 1);
        counted_inherited(L, S, fn);
        if (std_hookf)
            forward(&(struct lt_saved){L, std_hookf, lua_gethookmask(L), 0}, L, ar);
        return;
    }
    if (ar->event == LUA_HOOKCOUNT) {
        counted_count(L, ar, S, c, fn);
        lua_pop(L, 1);
        return;
    }
    int user_line = (c->mask & LUA_MASKLINE) != 0;
    if (ar->event == LUA_HOOKLINE && !user_line) {
        /* The module's line bit: only for requests, never the user's. */
        if (fn == lt_counted_line && c->first) {
            c->first = 0;
        } else if (fn == lt_counted_line) {
            lt_tstate *ts = ts_of(S);
            if (ts && atomic_load(&ts->requested))
                serve(L, S, ts);
        } /* else a line event of a traceexec that began before the
             module's line bit went: nothing */
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    lt_tstate *ts = ts_of(S);
    if (ts && atomic_load(&ts->requested))
        serve(L, S, ts);
    /* The user's hook may have changed meanwhile (another thread ran
       while this one checkpointed): what it asks for now. */
    lt_mutex_lock(&S->hook_mu, LT_RANK_HOOK);
    int still = is_counted(lua_gethook(L));
    lt_mutex_unlock(&S->hook_mu, LT_RANK_HOOK);
    if (!still)
        return;
    c = push_count(L, L);
    int mask = c ? c->mask : 0;
    lua_pop(L, 1);
    forward(&(struct lt_saved){L, std_hookf, mask, 0}, L, ar);
}

static void lt_counted(lua_State *L, lua_Debug *ar)
{
    counted(L, ar, lt_counted);
}

static void lt_counted_line(lua_State *L, lua_Debug *ar)
{
    counted(L, ar, lt_counted_line);
}

/* Sets co's hook, or the hook the module's armed hook covers. [hook_mu] */
static void set_hook_locked(lt_state *S, lua_State *co, lua_Hook f, int mask, int count)
{
    lua_Hook h = lua_gethook(co);
    if (!is_ours(h)) {
        lua_sethook(co, f, mask, count);
        if (h == lt_counted_line) /* it had a request to serve */
            arm_locked(S, co);
        return;
    }
    if (f == NULL) {
        struct lt_saved gone;
        saved_take(S, co, &gone);
        lua_sethook(co, h, LUA_MASKLINE, 0);
        return;
    }
    int i = saved_find(S, co);
    if (i < 0)
        i = saved_find(S, NULL);
    if (i < 0) { /* no room to cover it: the request waits for a wait */
        lua_sethook(co, f, mask, count);
        return;
    }
    S->saved[i] = (struct lt_saved){co, f, mask, count};
    lua_sethook(co, h, mask | LUA_MASKLINE, count);
}

/* debug.sethook([co,] [fn, mask [, count]]) */
static int debug_sethook(lua_State *L)
{
    lt_state *S = lt_upvalue_state(L);
    int arg;
    lua_State *co = hook_target(L, &arg);
    lua_Hook f = NULL;
    int mask = 0, count = 0;
    if (lua_isnoneornil(L, arg + 1)) {
        lua_settop(L, arg + 1);
    } else {
        const char *smask = luaL_checkstring(L, arg + 2);
        luaL_checktype(L, arg + 1, LUA_TFUNCTION);
        lua_Integer n = luaL_optinteger(L, arg + 3, 0);
        count = n > INT_MAX ? INT_MAX : n < 0 ? 0 : (int)n;
        mask = hook_mask_of(smask, n);
        f = std_hookf;
    }
    struct lt_count *c = set_count(L, co, mask, (mask & LUA_MASKCOUNT) ? count : 0);
    if (!luaL_getsubtable(L, LUA_REGISTRYINDEX, LT_HOOKKEY)) {
        lua_pushliteral(L, "k"); /* the coroutines are weak keys */
        lua_setfield(L, -2, "__mode");
        lua_pushvalue(L, -1);
        lua_setmetatable(L, -2);
    }
    if (L != co && !lua_checkstack(co, 1))
        return luaL_error(L, "stack overflow");
    lua_pushthread(co);
    lua_xmove(co, L, 1);
    lua_pushvalue(L, arg + 1);
    lua_rawset(L, -3);
    lt_mutex_lock(&S->hook_mu, LT_RANK_HOOK);
    if (c) {
        struct lt_saved gone; /* a hook an armed one-shot covered */
        saved_take(S, co, &gone);
        lua_sethook(co, lt_counted, c->mask, c->step);
    } else {
        set_hook_locked(S, co, f, mask, count);
    }
    lt_mutex_unlock(&S->hook_mu, LT_RANK_HOOK);
    return 0;
}

/* debug.gethook([co]): fn (or "external hook"), mask, count; or fail. */
static int debug_gethook(lua_State *L)
{
    lt_state *S = lt_upvalue_state(L);
    int arg;
    lua_State *co = hook_target(L, &arg);
    lt_mutex_lock(&S->hook_mu, LT_RANK_HOOK);
    lua_Hook h = lua_gethook(co);
    int mask = lua_gethookmask(co), count = lua_gethookcount(co);
    if (is_ours(h)) {
        int i = saved_find(S, co);
        h = i >= 0 ? S->saved[i].hook : NULL;
        mask = i >= 0 ? S->saved[i].mask : 0;
        count = i >= 0 ? S->saved[i].count : 0;
    } else if (h == lt_counted_line) {
        mask &= ~LUA_MASKLINE; /* the module's, not the user's */
    }
    lt_mutex_unlock(&S->hook_mu, LT_RANK_HOOK);
    if (is_counted(h)) { /* the user's, from its record */
        if (L != co && !lua_checkstack(co, 1))
            return luaL_error(L, "stack overflow");
        luaL_checkstack(L, 2, NULL);
        struct lt_count *c = push_count(L, co);
        if (c) {
            mask = c->mask;
            count = c->count;
        } /* else inherited: as stock Lua copied it (with the step's count) */
        lua_pop(L, 1);
        h = std_hookf;
    }
    if (h == NULL) {
        luaL_pushfail(L);
        return 1;
    }
    if (h != std_hookf) {
        lua_pushliteral(L, "external hook");
    } else {
        lua_getfield(L, LUA_REGISTRYINDEX, LT_HOOKKEY);
        if (L != co && !lua_checkstack(co, 1))
            return luaL_error(L, "stack overflow");
        lua_pushthread(co);
        lua_xmove(co, L, 1);
        lua_rawget(L, -2);
        lua_remove(L, -2);
    }
    char smask[4];
    int k = 0;
    if (mask & LUA_MASKCALL)
        smask[k++] = 'c';
    if (mask & LUA_MASKRET)
        smask[k++] = 'r';
    if (mask & LUA_MASKLINE)
        smask[k++] = 'l';
    smask[k] = '\0';
    lua_pushstring(L, smask);
    lua_pushinteger(L, count);
    return 3;
}

/* Finds the standard library's C hook: the real debug.sethook (on the
   top) installs it on a scratch coroutine.  Pops the function.  Returns
   0 if it could not. */
static int capture_lua_hook(lua_State *L)
{
    lua_State *co = lua_newthread(L);
    lua_pushvalue(L, -2);                        /* sethook */
    lua_pushvalue(L, -2);                        /* co */
    luaL_loadstring(L, "return");                /* a hook function */
    lua_pushliteral(L, "l");
    int ok = lua_pcall(L, 3, 0, 0) == LUA_OK;
    if (!ok)
        lua_pop(L, 1);
    lua_Hook h = ok ? lua_gethook(co) : NULL;
    if (ok) { /* and off again, which clears its table entry */
        lua_pushvalue(L, -2);
        lua_pushvalue(L, -2);
        if (lua_pcall(L, 1, 0, 0) != LUA_OK)
            lua_pop(L, 1);
    }
    lua_pop(L, 2); /* co, sethook */
    if (!h)
        return 0;
    std_hookf = h;
    return 1;
}

void lt_open_hooks(lua_State *L, lt_state *S)
{
    (void)pthread_once(&asym_once, asym_init);
    static const luaL_Reg co_funcs[] = {
        {"resume", coroutine_resume}, {"wrap", coroutine_wrap},
        {"close", coroutine_close}, {NULL, NULL}};
    lua_pushlightuserdata(L, S);
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, "debug") == LUA_TTABLE)
        lua_getfield(L, -1, "traceback");
    else
        lua_pushnil(L);
    lua_replace(L, -3); /* [S, traceback or nil] */
    lua_pop(L, 1);
    lua_pushcclosure(L, global_xpcall, 2);
    lua_setglobal(L, "xpcall");
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, "coroutine") == LUA_TTABLE) {
        lua_pushlightuserdata(L, S);
        luaL_setfuncs(L, co_funcs, 1);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, -1, "debug") == LUA_TTABLE) {
        static const luaL_Reg db_funcs[] = {
            {"sethook", debug_sethook}, {"gethook", debug_gethook}, {NULL, NULL}};
        if (lua_getfield(L, -1, "sethook") != LUA_TFUNCTION) {
            lua_pop(L, 1);
        } else if (capture_lua_hook(L)) {
            lua_pushlightuserdata(L, S);
            luaL_setfuncs(L, db_funcs, 1);
        }
    }
    lua_pop(L, 2);
}
