/*
 * test_lua_oom_sweep.c - allocation-failure sweeps of the Lua binding.
 *
 * test_oom_sweep.c's sweep, applied to the Lua operations that allocate:
 * a C host embeds Lua, requires tether.so, and runs each operation (a
 * chunk of Lua) with allocation 1, then 2, then 3, ... failing, until it
 * succeeds without reaching the failure; once with a transient fault (only
 * allocation n fails) and once with a persistent one (n and every later
 * one, until the chunk returns).  Two allocators are failed in turn:
 *
 *   - the Lua state's (lua_newstate with a counting lua_Alloc): every
 *     failing step must raise exactly a Lua memory error (LUA_ERRMEM,
 *     "not enough memory"), or return a result the operation documents
 *     for it (a join that reports the thread's memory error, a callback
 *     whose C caller gets zero);
 *   - tether's own (tether_fault_inject): every failing step must raise a
 *     Lua error (LUA_ERRRUN) whose message says "out of memory" (the
 *     sentence of TETHER_ENOMEM).
 *
 * After every step, failing or not, and once the garbage is collected:
 *   - tether holds exactly as many blocks as before the step (counted
 *     through tether_set_allocator, in every build), and no thread of the
 *     interpreter is left alive;
 *   - a failing tether.thread started no thread at all (checked at once,
 *     in C, before any more Lua runs);
 *   - the state is usable: the operation, run again with nothing failing,
 *     gives the right result.
 * At the end the runtime is finalized and the state closed: every block of
 * the Lua state's allocator and of tether's must be back, and the ASan
 * build's LeakSanitizer checks the rest (the host is instrumented itself).
 *
 * Lua's own defences shape what a transient fault does: Lua runs an
 * emergency collection and retries a failed allocation, so a single
 * failure is mostly absorbed (which is what this checks for it: that a
 * collection at any allocation point of the binding is harmless).  The
 * module's small-block cache (lt_alloc.c) would hide most allocations
 * from the counting allocator, so the sweeps run with TETHER_LUA_POOL=0,
 * except one that sweeps the cache's own failure path.
 *
 * Each operation prints how many allocations it makes and how many failing
 * steps raised.  A callback whose Lua side cannot even report its failure
 * prints "tether: callback: not enough memory" on stderr: expected here.
 */
#include <tether/tether.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "rel.h"
#include "runner.h"
#include "support.h"

enum { MAX_STEPS = 2000 };

/* What one attempt runs with: allocation `nth` fails, and `count` - 1
   after it (count 0: all later ones).  nth 0 is the fault-free run. */
typedef struct fault {
    uint64_t nth, count;
} fault;

/* Which allocator fails. */
typedef enum { FAIL_LUA, FAIL_CORE } fail_kind;

/* One operation: Lua chunks, each run by the main thread.  `run` is the
   only one run with the fault armed. */
typedef struct lua_op {
    const char *what;
    const char *setup;  /* before each attempt (may be NULL) */
    const char *run;    /* the operation; its results go to verify */
    const char *verify; /* (faulted, results of run...): raises if wrong;
                           true if right, false if a failure reported */
    const char *failed; /* after a run that raised (may be NULL) */
    int starts_thread;  /* a raise must leave no new thread, even briefly */
} lua_op;

/* ------------------------------------------------------------------------
 * The Lua state's allocator
 * ---------------------------------------------------------------------- */

/* Synchronization: atomic (Lua allocates only under the GIL, but on
   whichever thread holds it). */
static struct {
    atomic_long live;     /* blocks held */
    atomic_ulong calls;   /* allocations asked for (new or growing blocks) */
    atomic_ulong fail_lo; /* allocations fail_lo .. fail_hi - 1 fail; 0 = none */
    atomic_ulong fail_hi;
    atomic_int hit;       /* one of them was asked for */
} g_lua;

/* Lua assumes that shrinking never fails (manual, lua_Alloc), so only new
   and growing blocks are counted and failed. */
static void *counting_alloc(void *ud, void *p, size_t osize, size_t nsize)
{
    (void)ud;
    if (nsize == 0) {
        if (p)
            atomic_fetch_sub(&g_lua.live, 1);
        free(p);
        return NULL;
    }
    if (!p || nsize > osize) {
        unsigned long n = atomic_fetch_add(&g_lua.calls, 1) + 1;
        unsigned long lo = atomic_load(&g_lua.fail_lo);
        if (lo && n >= lo && n < atomic_load(&g_lua.fail_hi)) {
            atomic_store(&g_lua.hit, 1);
            return NULL;
        }
    }
    void *r = realloc(p, nsize);
    if (r && !p)
        atomic_fetch_add(&g_lua.live, 1);
    return r;
}

static int panic(lua_State *L)
{
    runner_fail(__FILE__, __LINE__, "Lua panic: %s",
                lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
}

/* ------------------------------------------------------------------------
 * The host
 * ---------------------------------------------------------------------- */

static tether_runtime g_rt;
static tether_interp g_interp;
static lua_State *g_L;
static fail_kind g_kind;
static long g_before;

/* What every chunk may use: the module, and OOM(v), whether v is the
   message of a memory failure of the allocator being swept.  The
   excepthook counts instead of printing (threads failing on purpose). */
static const char k_prelude[] =
    "tether = require 'tether'\n"
    "HOOKED = 0\n"
    "tether.excepthook = function() HOOKED = HOOKED + 1 end\n"
    "function OOM(v)\n"
    "  if KIND == 'lua' then return v == 'not enough memory' end\n"
    "  return type(v) == 'string' and v:find('out of memory', 1, true) ~= nil\n"
    "end\n";

/* Runs `code` unarmed with the `nargs` values on the top as its `...`;
   fails the case if it raises. */
static void do_chunk(const char *what, const char *code, int nargs)
{
    lua_State *L = g_L;
    if (luaL_loadstring(L, code) != LUA_OK)
        runner_fail(__FILE__, __LINE__, "%s: %s", what, lua_tostring(L, -1));
    lua_insert(L, -nargs - 1);
    if (lua_pcall(L, nargs, 0, 0) != LUA_OK)
        runner_fail(__FILE__, __LINE__, "%s: %s", what,
                    lua_isstring(L, -1) ? lua_tostring(L, -1) : "(not a string)");
}

/* A runtime made with the counting allocator, and a Lua state (with the
   counting lua_Alloc, the module's cache on or off) that joined it. */
static long g_idle_blocks;

static void setup(int pool)
{
    rel_count_allocations();
    /* What tether keeps without a runtime (its handle table). */
    tether_runtime rt;
    ASSERT_OK(tether_runtime_create(NULL, &rt));
    ASSERT_OK(tether_runtime_finalize(rt, -1));
    g_idle_blocks = rel_live_blocks();
    ASSERT_OK(tether_runtime_create(&t_per_interp_gil, &g_rt));
    ASSERT_OK(tether_runtime_main_interp(g_rt, &g_interp));
    ASSERT_EQ(setenv("TETHER_LUA_POOL", pool ? "1" : "0", 1), 0);
    g_L = lua_newstate(counting_alloc, NULL);
    ASSERT(g_L != NULL);
    lua_atpanic(g_L, panic);
    luaL_openlibs(g_L);
    lua_pushinteger(g_L, (lua_Integer)g_rt);
    lua_setfield(g_L, LUA_REGISTRYINDEX, "tether.runtime");
    lua_getglobal(g_L, "package");
    lua_pushstring(g_L, REL_LUA_CPATH);
    lua_setfield(g_L, -2, "cpath");
    lua_pop(g_L, 1);
    do_chunk("prelude", k_prelude, 0);
}

/* The host's order (docs/lua.md): finalize, then close the state.  Every
   block of both allocators must be back. */
static void teardown(void)
{
    do_chunk("teardown", "if I then assert(I:close()) end I, CB, Q = nil", 0);
    lua_gc(g_L, LUA_GCCOLLECT);
    ASSERT_OK(tether_runtime_finalize(g_rt, -1));
    lua_close(g_L);
    g_L = NULL;
    g_rt = 0;
    ASSERT_EQ(atomic_load(&g_lua.live), 0);
    rel_wait_live_blocks(g_idle_blocks);
    ASSERT_EQ(rel_live_blocks(), g_idle_blocks);
}

static size_t thread_count(void)
{
    size_t n = 0;
    ASSERT_OK(tether_thread_list(g_interp, NULL, 0, &n));
    return n;
}

/* Waits, with the GIL dropped (tether_sleep), until `pred` holds: threads
   that ended need it to finish leaving.  An eventual-state check with a
   generous bound, not a timing assertion. */
static void wait_gil_free(int (*pred)(long), long want, const char *what)
{
    long limit_ms = 10000L * runner_timeout_scale();
    for (long waited = 0; !pred(want); waited++) {
        if (waited >= limit_ms)
            runner_fail(__FILE__, __LINE__, "still waiting after %ld ms for %s",
                        limit_ms, what);
        ASSERT_OK(tether_sleep(1000000));
    }
}

static int threads_are(long n) { return (long)thread_count() == n; }
static int blocks_are(long n) { return rel_live_blocks() <= n; }

/* Collects the garbage of the state, and of the interpreter I if there is
   one (its thread records hold tether's thread handles): a thread of I
   collects it, and its own record stays until the next collection, so the
   count is the same after each. */
static void collect(void)
{
    do_chunk("collect", "if I then I:thread(function() collectgarbage() "
             "collectgarbage() end):join() end", 0);
    lua_gc(g_L, LUA_GCCOLLECT);
    lua_gc(g_L, LUA_GCCOLLECT);
}

/* Collects the garbage (the finalizers release what a failed operation
   left to them) and waits until the interpreter has `threads` threads. */
static void quiesce(long threads)
{
    collect();
    wait_gil_free(threads_are, threads, "the threads to end");
    /* A thread whose last handle was collected while it still ran keeps
       its record until the module next starts a thread (or closes). */
    do_chunk("sweep records", "tether.thread(function() end):join()", 0);
    collect();
    wait_gil_free(threads_are, threads, "the threads to end");
}

/* Quiesces and checks that tether is back to `blocks` blocks. */
static void settle(const char *what, long blocks, long threads)
{
    quiesce(threads);
    wait_gil_free(blocks_are, blocks, "tether's blocks to be freed");
    if (rel_live_blocks() != blocks)
        runner_fail(__FILE__, __LINE__, "%s: tether holds %ld block(s), %ld before",
                    what, rel_live_blocks(), blocks);
}

/* ------------------------------------------------------------------------
 * Arming
 * ---------------------------------------------------------------------- */

static void arm(const fault *f)
{
    g_before = rel_allocs();
    if (g_kind == FAIL_CORE) {
        ASSERT_OK(tether_fault_inject(TETHER_FAULT_ALLOC, f->nth, f->count));
        return;
    }
    atomic_store(&g_lua.hit, 0);
    atomic_store(&g_lua.calls, 0);
    atomic_store(&g_lua.fail_hi, f->count ? f->nth + f->count : ~0ul);
    atomic_store(&g_lua.fail_lo, f->nth);
}

/* Turns the fault off; returns the number of tether allocations made. */
static long disarm(void)
{
    if (g_kind == FAIL_CORE)
        ASSERT_OK(tether_fault_inject(TETHER_FAULT_ALLOC, 0, 0));
    atomic_store(&g_lua.fail_lo, 0);
    return rel_allocs() - g_before;
}

/* ------------------------------------------------------------------------
 * The sweep
 * ---------------------------------------------------------------------- */

/* How an attempt ended. */
typedef enum { RAN_CLEAN, RAN_DEGRADED, RAISED } outcome;

/* Runs the verify chunk of op with `faulted` and the `nres` results on the
   top; it returns true for the right result, false for a failure the
   operation reports without raising (allowed only after a fault). */
static outcome verify(const lua_op *op, int faulted, int nres)
{
    lua_State *L = g_L;
    lua_pushboolean(L, faulted);
    lua_insert(L, -nres - 1);
    if (luaL_loadstring(L, op->verify) != LUA_OK)
        runner_fail(__FILE__, __LINE__, "%s: %s", op->what, lua_tostring(L, -1));
    lua_insert(L, -nres - 2);
    if (lua_pcall(L, nres + 1, 1, 0) != LUA_OK)
        runner_fail(__FILE__, __LINE__, "%s: %s", op->what,
                    lua_isstring(L, -1) ? lua_tostring(L, -1) : "(not a string)");
    int clean = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return clean ? RAN_CLEAN : RAN_DEGRADED;
}

/* Runs op once under `f` and checks how it ended.  *used: what the run
   asked for (lua_Alloc calls, or tether blocks); *hit: whether the failure
   was reached (exact for lua_Alloc; for tether's allocator, whether a
   fault was armed at all: what a run allocates may vary with the order in
   which threads run, and nothing else makes tether fail, so any memory
   failure seen is the one injected). */
static outcome attempt(const lua_op *op, const fault *f, unsigned long *used, int *hit)
{
    lua_State *L = g_L;
    int top = lua_gettop(L);
    if (op->setup)
        do_chunk(op->what, op->setup, 0);
    size_t threads = thread_count();
    if (luaL_loadstring(L, op->run) != LUA_OK)
        runner_fail(__FILE__, __LINE__, "%s: %s", op->what, lua_tostring(L, -1));
    arm(f);
    int st = lua_pcall(L, 0, LUA_MULTRET, 0);
    long made = disarm();
    *used = g_kind == FAIL_LUA ? atomic_load(&g_lua.calls) : (unsigned long)made;
    *hit = g_kind == FAIL_LUA ? atomic_load(&g_lua.hit) : f->nth != 0;
    if (st == LUA_OK) {
        outcome o = verify(op, *hit, lua_gettop(L) - top);
        lua_settop(L, top);
        return o;
    }
    const char *msg = lua_isstring(L, -1) ? lua_tostring(L, -1) : "(not a string)";
    int want = g_kind == FAIL_LUA ? LUA_ERRMEM : LUA_ERRRUN;
    if (!*hit || st != want ||
        (g_kind == FAIL_LUA ? strcmp(msg, "not enough memory") != 0
                            : !strstr(msg, "out of memory")))
        runner_fail(__FILE__, __LINE__, "%s, allocation %llu failing: status %d: %s",
                    op->what, (unsigned long long)f->nth, st, msg);
    if (op->starts_thread && thread_count() != threads)
        runner_fail(__FILE__, __LINE__, "%s failed but started a thread", op->what);
    lua_settop(L, top);
    if (op->failed)
        do_chunk(op->what, op->failed, 0);
    return RAISED;
}

/* The fault-free run, twice (the first warms caches); returns the most
   allocations one asked for. */
static unsigned long dry_run(const lua_op *op)
{
    const fault none = {0, 0};
    unsigned long used = 0, most = 0;
    int hit = 0;
    for (int i = 0; i < 2; i++) {
        ASSERT_EQ(attempt(op, &none, &used, &hit), RAN_CLEAN);
        most = used > most ? used : most;
    }
    return most;
}

/* Sweeps one operation with faults of `count` (1 transient, 0 persistent)
   of the allocator `kind`, until a run gives the right result without
   reaching the failure (for tether's allocator: with n past what the
   fault-free run allocates).  Returns the steps that raised. */
static int sweep(const lua_op *op, fail_kind kind, uint64_t count)
{
    g_kind = kind;
    lua_pushstring(g_L, kind == FAIL_LUA ? "lua" : "core");
    lua_setglobal(g_L, "KIND");
    long threads = (long)thread_count();
    unsigned long need = dry_run(op);
    quiesce(threads);
    long blocks = rel_live_blocks();
    /* Every operation allocates Lua memory; some none of tether's. */
    ASSERT(kind == FAIL_CORE || need > 0);
    int raised = 0;
    for (uint64_t n = 1;; n++) {
        if (n > MAX_STEPS)
            runner_fail(__FILE__, __LINE__, "%s never succeeded", op->what);
        unsigned long used = 0;
        int hit = 0;
        outcome o = attempt(op, &(fault){n, count}, &used, &hit);
        raised += o == RAISED;
        settle(op->what, blocks, threads);
        /* Usable: the operation again, nothing failing. */
        unsigned long again_used;
        int again_hit;
        ASSERT_EQ(attempt(op, &(fault){0, 0}, &again_used, &again_hit), RAN_CLEAN);
        settle(op->what, blocks, threads);
        if (o == RAN_CLEAN && (kind == FAIL_LUA ? !hit : n > need))
            break;
    }
    return raised;
}

/* Both kinds of fault, both allocators; prints the counts. */
static void sweep_all(const lua_op *op)
{
    int lua_t = sweep(op, FAIL_LUA, 1), lua_p = sweep(op, FAIL_LUA, 0);
    unsigned long lua_n = dry_run(op);
    int core_t = sweep(op, FAIL_CORE, 1), core_p = sweep(op, FAIL_CORE, 0);
    unsigned long core_n = dry_run(op);
    printf("# %s: %lu Lua allocations (%d transient, %d persistent failures "
           "raised), %lu tether allocations (%d, %d)\n", op->what, lua_n, lua_t,
           lua_p, core_n, core_t, core_p);
    ASSERT(lua_p > 0);
}

/* ------------------------------------------------------------------------
 * The operations
 * ---------------------------------------------------------------------- */

/* A join's results: right, or (after a fault) the thread's memory error:
   the new thread may run while the fault is armed (tether_thread_start
   lets go of the GIL until the thread has started). */
#define CHECK_JOINED                                                          \
    "if ok then assert(v == 42, 'wrong result ' .. tostring(v))\n"            \
    "else assert(faulted and OOM(v), 'join: ' .. tostring(v)) end\n"          \
    "return ok\n"
#define VERIFY_JOIN "local faulted, ok, v = ...\n" CHECK_JOINED
#define JOIN_RESULT "local ok, v = t:join()\n" CHECK_JOINED

static const lua_op op_thread = {
    "tether.thread", NULL,
    "return tether.thread(function(x) return x + 1 end, 41)",
    "local faulted, t = ...\n"
    JOIN_RESULT,
    NULL, 1};

static const lua_op op_thread_join = {
    "tether.thread + join", NULL,
    "return tether.thread(function(x) return x + 1 end, 41):join()",
    VERIFY_JOIN, NULL, 0};

static const lua_op op_thread_opts = {
    "tether.thread (named daemon)", NULL,
    "return tether.thread({name = 'swept', daemon = true},\n"
    "                     function(x) return x + 1 end, 41)",
    "local faulted, t = ...\n"
    "assert(t.name == 'swept' and t.daemon)\n"
    JOIN_RESULT,
    NULL, 1};

static const lua_op op_queue = {
    "tether.queue", NULL, "return tether.queue(4)",
    "local _, q = ...\n"
    "assert(q:put('a') and q:put('b'))\n"
    "assert(q:get() == 'a' and q:get() == 'b' and #q == 0)\n"
    "return true\n",
    NULL, 0};

/* A put into a queue with items in it; a failed put must add nothing. */
static const lua_op op_queue_put = {
    "queue:put", "Q = tether.queue() Q:put(1)", "return Q:put(41)",
    "local _, ok = ...\n"
    "assert(ok == true and #Q == 2)\n"
    "assert(Q:get() == 1 and Q:get() == 41 and #Q == 0)\n"
    "return true\n",
    "assert(#Q == 1 and Q:get() == 1 and #Q == 0)", 0};

/* A thread's get that waits for the main thread's put.  When the main
   thread fails before its put, the failure check puts, so that the thread
   ends (a main thread that waited instead could wait for ever on a thread
   that failed). */
static const lua_op op_queue_handoff = {
    "queue:get in a thread", "Q = tether.queue()",
    "local t = tether.thread(function() return Q:get() + 1 end)\n"
    "Q:put(41)\n"
    "return t:join()",
    VERIFY_JOIN, "Q:put(41)", 0};

static const lua_op op_callback = {
    "tether.callback", NULL,
    "return tether.callback('i32(i32)', function(x) return x + 1 end)",
    "local _, cb = ...\n"
    "assert(tether.ffi_call(cb, 'i32(i32)', 41) == 42)\n"
    "cb:free()\n"
    "return true\n",
    NULL, 0};

/* A call of a callback: a failure inside cannot reach the C caller, which
   gets zero (the error goes to the excepthook, or to stderr when even
   that cannot run). */
static const lua_op op_callback_call = {
    "callback call",
    "CB = CB or tether.callback('i32(i32)', function(x) return x + 1 end)",
    "return tether.ffi_call(CB, 'i32(i32)', 41)",
    "local faulted, r = ...\n"
    "assert(r == 42 or (faulted and r == 0), tostring(r))\n"
    "return r == 42\n",
    NULL, 0};

static const lua_op op_lock = {
    "tether.lock", NULL, "return tether.lock()",
    "local _, l = ...\n"
    "assert(l:acquire()) assert(l:locked()) l:release()\n"
    "return true\n",
    NULL, 0};

static const lua_op op_rlock_condition = {
    "tether.rlock + condition", NULL,
    "local r = tether.rlock() return r, tether.condition(r)",
    "local _, r, c = ...\n"
    "assert(r:acquire() and c:acquire()) c:notify() c:release() r:release()\n"
    "assert(not r:locked())\n"
    "return true\n",
    NULL, 0};

static const lua_op op_event = {
    "tether.event", NULL, "return tether.event()",
    "local _, e = ...\n"
    "e:set() assert(e:wait(0) and e:is_set())\n"
    "return true\n",
    NULL, 0};

/* A channel, and a message holding another channel, sent and received.
   (Not the channel itself: a message left in the channel it refers to is a
   reference cycle, which reference counting never frees.) */
static const lua_op op_channel = {
    "tether.channel + send/recv", NULL,
    "local ch, inner = tether.channel(2), tether.channel()\n"
    "assert(ch:send({1, 'two', inner}))\n"
    "return ch, inner, ch:recv()",
    "local _, ch, inner, v = ...\n"
    "assert(v[1] == 1 and v[2] == 'two' and v[3] == inner and ch:count() == 0)\n"
    "return true\n",
    NULL, 0};

static const lua_op op_interp = {
    "tether.interp", NULL, "return tether.interp()",
    "local _, i = ...\n"
    "local ok, v = i:thread(function(x) return x * 2 end, 21):join()\n"
    "assert(ok and v == 42, tostring(v))\n"
    "assert(i:close())\n"
    "return true\n",
    NULL, 0};

static const lua_op op_ithread = {
    "i:thread + join", "I = I or tether.interp()",
    "return I:thread(function(x) return x + 1 end, 41):join()",
    VERIFY_JOIN, NULL, 0};

/* ------------------------------------------------------------------------
 * Cases
 * ---------------------------------------------------------------------- */

TEST(sweep_lua_thread)
{
    setup(0);
    sweep_all(&op_thread);
    sweep_all(&op_thread_join);
    sweep_all(&op_thread_opts);
    teardown();
}

TEST(sweep_lua_queue)
{
    setup(0);
    sweep_all(&op_queue);
    sweep_all(&op_queue_put);
    sweep_all(&op_queue_handoff);
    teardown();
}

TEST(sweep_lua_callback)
{
    setup(0);
    sweep_all(&op_callback);
    sweep_all(&op_callback_call);
    teardown();
}

TEST(sweep_lua_sync_objects)
{
    setup(0);
    sweep_all(&op_lock);
    sweep_all(&op_rlock_condition);
    sweep_all(&op_event);
    sweep_all(&op_channel);
    teardown();
}

TEST(sweep_lua_interp)
{
    setup(0);
    sweep_all(&op_interp);
    sweep_all(&op_ithread);
    teardown();
}

/* The module's small-block cache in front of the failing allocator: it
   serves small blocks itself, so the operation makes a large one (which
   the cache passes on); when that fails the cache empties itself and
   retries once, and must then fail as cleanly. */
static const lua_op op_thread_large = {
    "tether.thread + join (a large block)", NULL,
    "return tether.thread(function(n) return #string.rep('x', 100 * n) // 100 end,\n"
    "                     42):join()",
    VERIFY_JOIN, NULL, 0};

TEST(sweep_lua_pooled)
{
    setup(1);
    int t = sweep(&op_thread_large, FAIL_LUA, 1), p = sweep(&op_thread_large, FAIL_LUA, 0);
    printf("# %s, cache on: %lu Lua allocations past the cache (%d transient, "
           "%d persistent failures raised)\n", op_thread_large.what,
           dry_run(&op_thread_large), t, p);
    ASSERT(p > 0);
    teardown();
}

RUNNER_MAIN(TEST_ENTRY(sweep_lua_thread), TEST_ENTRY(sweep_lua_queue),
            TEST_ENTRY(sweep_lua_callback), TEST_ENTRY(sweep_lua_sync_objects),
            TEST_ENTRY(sweep_lua_interp), TEST_ENTRY(sweep_lua_pooled))
