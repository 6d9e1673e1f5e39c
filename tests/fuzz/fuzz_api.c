/*
 * fuzz_api.c - the stateful fuzzer of the public C API (issue 12, item 2).
 *
 * The input is a program: a sequence of public API calls over a few
 * handles, run by 2-4 plain threads (workers) and by the threads the
 * program starts.  After every call the harness checks invariants, and any
 * violation aborts with a sentence saying which:
 *
 *  - the status is one tether.h documents for the function
 *    (fuzz_api_statuses.h, generated from the header's doc comments by
 *    gen_api_statuses.py; TETHER_EBADHANDLE is allowed wherever a handle is
 *    passed, by the header's convention);
 *  - no crash, no sanitizer report, no hang (the program must end within
 *    FUZZ_API_PROGRAM_SECONDS; the waits it asks for are bounded, except
 *    finalize, destroy, join and unload with timeout -1, which must end by
 *    themselves, and lock and event waits without timeout, which the
 *    dispatcher ends by releasing every lock and setting every event once
 *    the program has stalled for half a second: rescue());
 *  - tether_gil_held() agrees with what the calls so far imply (attached
 *    after runtime_create, ensure, restore and the release of an inner
 *    ensure; detached after save, the outermost release and a
 *    TETHER_EFINALIZING), wherever no interpreter the thread is attached
 *    to has been finalized since;
 *  - every handle the program freed answers TETHER_EBADHANDLE, at once and
 *    again at the end of the program (thread handles only at the end), and
 *    a freed handle's value is never issued again (OP_CHURN);
 *  - no leak: every block the library allocated through the counting
 *    allocator is freed once the program's objects are freed and its
 *    threads are gone, and every asynchronous-exception payload handed to
 *    the library was destroyed exactly once;
 *  - each block is freed by the allocator that made it (two counting
 *    allocators with different tags; the program may switch between them);
 *  - a few documented meanings: a lock's EDEADLK only for a thread that
 *    acquired it; a tether_event_wait that was blocked when the event was
 *    set does not time out; one checkpoint does not run pending calls
 *    queued while it runs; a token of a runtime its owner finalized does
 *    not release with OK; a thread name is kept whole, or cut at a
 *    character boundary;
 *  - in a forked child (OP_FORK_PROBE): TETHER_CONFIG_ABORT_ON_MISUSE does
 *    not abort a call of a callback whose interpreter is gone, nor outlive
 *    its runtime; the TETHER_DEBUG=1 report names plugins never unloaded;
 *    TETHER_DEBUG=0 prints nothing.
 *
 * Input layout.  Byte 0: bits 0-1 the number of workers (2 + value % 3),
 * bit 2 per-interpreter GILs for the runtimes the program creates.  Then
 * operations of 5 bytes each: [op][who][a][b][c].  `op` modulo OP__COUNT is
 * one of the OP_ values below (tests/fuzz/make_api_corpus.py reads them from
 * this file, in order).  `who`: bits 0-1 the worker, bit 6 "wait until it
 * finished", bit 7 "do not wait at all"; otherwise the program waits up to
 * one step (20 ms / FUZZ_API_TIME_DIV) for the operation before it hands
 * out the next one, so programs are mostly sequential and still reach real
 * concurrency.  OP_REPEAT and OP_THREAD_START take the next operations as
 * their body (a loop run by the worker, or the script of the new thread);
 * a thread's script runs its operations one after another.
 *
 * Handles live in slots: 2 runtimes, 4 interpreters (0 and 1 are the main
 * interpreters of runtimes 0 and 1), 4 each of threads, locks, events,
 * channels, callbacks and plugins.  A freed handle stays in its slot, so
 * later operations use stale handles too.  Plugin references are counted
 * per handle, as tether counts them (g_pref), not per slot.
 *
 * Switches (environment):
 *   FUZZ_API_MASK=<hex>          operations to skip: bit n skips op n
 *   FUZZ_API_TRACE=1             print each operation and its status
 *   FUZZ_API_TIME_DIV=<n>        divide the program's own timeouts by n
 *   FUZZ_API_PROGRAM_SECONDS=<s> the hang limit of one program (default 60;
 *                                operations are skipped after half of it)
 *   FUZZ_API_CHURN_MAX=<n>       at most 2^n cycles per OP_CHURN (default 24)
 *   FUZZ_API_KNOWN=F9,F16,...    rows of issue 12 not to report again: turns
 *                                off the check that finds each (F7, F9,
 *                                F12, F13, F15, F16, F19), so that a long
 *                                run looks for new defects; the rows that
 *                                crash are avoided with FUZZ_API_MASK
 *
 * Built with clang -fsanitize=fuzzer in the address-sanitizer build, and as
 * a replay program (replay.c) in every build: ctest runs each seed of
 * corpus/api as api_fuzz_corpus_<seed>.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <tether/tether.h>

#include "fuzz_api_statuses.h"
#include "../runner/sanitizers.h"

#ifndef FAPI_PLUGIN_DIR
#error "FAPI_PLUGIN_DIR: the directory of the fapi_* fixture plugins"
#endif

/* The operations.  make_api_corpus.py reads this list: append only. */
enum {
    OP_NOP,
    OP_RT_CREATE,      /* a: rt slot; b: bit 0 per-interp GIL */
    OP_RT_FINALIZE,    /* a: rt slot; b: long timeout */
    OP_INTERP_CREATE,  /* a: rt slot; b: interp slot 2 + b % 2 */
    OP_INTERP_DESTROY, /* a: interp slot; b: long timeout */
    OP_ENSURE,         /* a: interp slot */
    OP_RELEASE,        /* a: 0 innermost, 1 outermost, 2 zero, 3 forged */
    OP_SAVE,
    OP_RESTORE,        /* a: 0 the saved state, 1 a forged one */
    OP_CHECKPOINT,     /* a: bit 0 leaves a delivered exception unfetched */
    OP_SLEEP,          /* a: short timeout */
    OP_THREAD_START,   /* a: interp slot; b: bits 0-1 function (0 returns,
                          1 script, 2 plugin c>>6), bit 2 daemon, bits 3-4
                          name; c: bits 0-1 thread slot, bits 2-7 script
                          length (or, for function 0, the result) */
    OP_THREAD_JOIN,    /* a: thread slot; b: long timeout */
    OP_THREAD_RELEASE, /* a: thread slot */
    OP_THREAD_RAISE,   /* a: thread slot; b: 1 with a payload */
    OP_THREAD_CURRENT, /* a: thread slot */
    OP_THREAD_QUERY,   /* a: thread slot */
    OP_CALL_BLOCKING,  /* a: ubf 0 none, 1 wake, 2 wake + call_soon(b) */
    OP_ASYNC,          /* a: 0 defer, 1 allow, 2 fetch */
    OP_LOCK_NEW,       /* a: slot */
    OP_LOCK_FREE,
    OP_LOCK_ACQUIRE,   /* a: slot; b: short timeout, bit 2 none */
    OP_LOCK_RELEASE,
    OP_EVENT_NEW,
    OP_EVENT_FREE,
    OP_EVENT_SET,
    OP_EVENT_CLEAR,
    OP_EVENT_WAIT,     /* a: slot; b: short timeout, bit 2 none */
    OP_CHANNEL_NEW,    /* a: slot; b: capacity % 4 */
    OP_CHANNEL_RETAIN,
    OP_CHANNEL_RELEASE,
    OP_CHANNEL_SEND,   /* a: slot; b: short timeout; c: length */
    OP_CHANNEL_RECV,   /* a: slot; b: short timeout */
    OP_CHANNEL_CLOSE,
    OP_CALLBACK_NEW,   /* a: slot; b: interp slot; c: 0 fn, 1 slow fn,
                          2 the plugin's (plugin slot c >> 2) */
    OP_CALLBACK_CALL,  /* a: slot; b: argument */
    OP_CALLBACK_FREE,
    OP_PLUGIN_LOAD,    /* a: slot; b: rt slot; c: fixture */
    OP_PLUGIN_UNLOAD,  /* a: slot; b: long timeout */
    OP_PLUGIN_SYMBOL,  /* a: slot */
    OP_CALL_SOON,      /* a: interp slot; b: 0 plain, 1 re-queues itself,
                          2 the plugin's (plugin slot c) */
    OP_SET_ALLOCATOR,  /* a: 0 allocator A, 1 allocator B */
    OP_CHURN,          /* a: 2^(a % 25) lock new/free cycles */
    OP_REPEAT,         /* a: count - 1; b: body length - 1 (% 16) */
    OP_MISC,           /* a: interp slot: gil stats, switch interval,
                          breaker hook, thread list, userdata */
    OP_RAISE_BY_IDENT, /* a: interp slot; b: worker */
    OP_FORK_PROBE,     /* a: 0 misuse flag, 1 debug report, 2 TETHER_DEBUG=0
                          (each in a forked child: fork_probe) */
    OP__COUNT
};

static const char *const op_names[] = {
    "nop", "rt_create", "rt_finalize", "interp_create", "interp_destroy",
    "ensure", "release", "save", "restore", "checkpoint", "sleep",
    "thread_start", "thread_join", "thread_release", "thread_raise",
    "thread_current", "thread_query", "call_blocking", "async",
    "lock_new", "lock_free", "lock_acquire", "lock_release", "event_new",
    "event_free", "event_set", "event_clear", "event_wait", "channel_new",
    "channel_retain", "channel_release", "channel_send", "channel_recv",
    "channel_close", "callback_new", "callback_call", "callback_free",
    "plugin_load", "plugin_unload", "plugin_symbol", "call_soon",
    "set_allocator", "churn", "repeat", "misc", "raise_by_ident",
    "fork_probe"};
_Static_assert(sizeof op_names / sizeof op_names[0] == OP__COUNT,
               "a name for every operation");

#define OP_SIZE 5
#define MAX_OPS 400
#define MAX_WORKERS 4
#define NSLOT 4
#define MAX_FRAMES 16
#define MAX_GRAVE 512

static const char *const fixtures[] = {
    "fapi_plain.so", "fapi_unloadable.so", "fapi_failinit.so",
    "fapi_failinit_mapped.so", "fapi_missing.so", "./fapi_plain.so"};
#define NFIXTURES (sizeof fixtures / sizeof fixtures[0])

/* ------------------------------------------------------------------------
 * Settings, failure and tracing
 * ---------------------------------------------------------------------- */

static uint64_t g_skip_mask;
static int g_trace;
static int64_t g_time_div = 1;
static int64_t g_program_ns = 60LL * 1000000000;
static unsigned g_churn_max = 24;
static uint32_t g_known; /* bit n: row Fn of issue 12 is known, not checked */

static void settings(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    const char *s;
    if ((s = getenv("FUZZ_API_MASK")))
        g_skip_mask = strtoull(s, NULL, 16);
    if ((s = getenv("FUZZ_API_TRACE")))
        g_trace = atoi(s);
    if ((s = getenv("FUZZ_API_TIME_DIV")) && atoll(s) > 0)
        g_time_div = atoll(s);
    if ((s = getenv("FUZZ_API_PROGRAM_SECONDS")) && atoll(s) > 0)
        g_program_ns = atoll(s) * 1000000000LL;
    if ((s = getenv("FUZZ_API_CHURN_MAX")) && atoi(s) >= 0 && atoi(s) <= 24)
        g_churn_max = (unsigned)atoi(s);
    if ((s = getenv("FUZZ_API_KNOWN")))
        for (const char *p = s; (p = strchr(p, 'F')); p++)
            if (atoi(p + 1) > 0 && atoi(p + 1) < 32)
                g_known |= 1u << atoi(p + 1);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ns(int64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    nanosleep(&ts, NULL);
}

static __thread const char *tl_where = "main";

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_api: INVARIANT VIOLATED (%s): ", tl_where);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n  last error on this thread: \"%s\"\n", tether_last_error());
    va_end(ap);
    fflush(stderr);
    abort();
}

/* Checks that `rc` is a status the header lists for `fn`. */
static int checked(const char *fn, int rc, uint32_t allowed)
{
    if (rc > 0 || rc < TETHER__STATUS_LAST || !(allowed & (1u << -rc)))
        fail("%s returned %d (%s), which tether.h does not list for it", fn,
             rc, tether_status_name(rc));
    if (g_trace > 1)
        fprintf(stderr, "  [%s] %s -> %s\n", tl_where, fn,
                tether_status_name(rc));
    return rc;
}
#define CALL(fn, ...) checked(#fn, fn(__VA_ARGS__), FAPI_ALLOWED_##fn)
#define CALL0(fn) checked(#fn, fn(), FAPI_ALLOWED_##fn)

/* ------------------------------------------------------------------------
 * Two counting allocators with tags (F11: a block freed by the wrong one)
 * ---------------------------------------------------------------------- */

struct blk {
    uint64_t tag;
    uint64_t size;
};
_Static_assert(sizeof(struct blk) == 16, "keeps malloc's alignment");

static atomic_llong g_blocks[2];
static const uint64_t g_tags[2] = {0xA110CA7EA11A0001ull, 0xA110CA7EB11B0002ull};

static void *count_malloc(size_t n, void *ud)
{
    int which = (int)(intptr_t)ud;
    struct blk *b = malloc(sizeof *b + n);
    if (!b)
        return NULL;
    b->tag = g_tags[which];
    b->size = n;
    atomic_fetch_add(&g_blocks[which], 1);
    return b + 1;
}

static void count_free(void *p, void *ud)
{
    int which = (int)(intptr_t)ud;
    if (!p)
        return;
    struct blk *b = (struct blk *)p - 1;
    if (b->tag != g_tags[which])
        fail("allocator %c was asked to free a block %s", "AB"[which],
             b->tag == g_tags[!which] ? "made by the other allocator"
                                      : "it did not make");
    b->tag = 0;
    atomic_fetch_sub(&g_blocks[which], 1);
    free(b);
}

static const tether_allocator g_allocs[2] = {
    {sizeof(tether_allocator), count_malloc, count_free, (void *)0},
    {sizeof(tether_allocator), count_malloc, count_free, (void *)1}};

/* Asynchronous-exception payloads: made and destroyed here. */
static atomic_long g_payloads;
static void payload_dtor(void *p)
{
    if (p) {
        atomic_fetch_sub(&g_payloads, 1);
        free(p);
    }
}

/* ------------------------------------------------------------------------
 * The model: slots, and what each thread of the program is attached to
 * ---------------------------------------------------------------------- */

enum { K_RT, K_INTERP, K_THREAD, K_LOCK, K_EVENT, K_CHANNEL, K_CALLBACK, K_PLUGIN, K__COUNT };
static const char *const kind_names[] = {"runtime", "interp", "thread", "lock",
                                         "event", "channel", "callback", "plugin"};

struct slot {
    uint64_t h;
    int live;      /* the program holds `refs` references */
    int refs;
    int rt;        /* interpreters: the runtime slot */
    uint64_t owner;    /* plugins: the runtime handle they were loaded into */
    atomic_uint epoch; /* interp/runtime: bumped by finalize and destroy */
    atomic_int calls;  /* callbacks: callers about to call (OP_CALLBACK_CALL) */
    atomic_int freeing;
    char name[256];    /* threads: the name given to thread_start */
    int named;
};

/* The program's state.  `mu` protects the slots, the grave and the worker
   queues; it is a leaf: never held across a tether call. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* queue changes */
    struct slot s[K__COUNT][NSLOT];
    struct { uint64_t h; int kind; } grave[MAX_GRAVE];
    int ngrave;
    int per_interp_gil;
    int64_t deadline; /* a program still running then has hung */
    int64_t soft;     /* operations are skipped from then on */
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* A frame: what made the thread attached (runtime_create or the thread's
   own start: F_BASE; an ensure: F_ENSURE), a save (F_SAVED), or an
   attached frame whose interpreter shut down under it (`detached`: a
   wait, checkpoint or restore returned TETHER_EFINALIZING). */
enum { F_BASE, F_ENSURE, F_SAVED };

struct frame {
    int kind;
    int detached;
    uint64_t token;
    int interp, rt; /* slots, -1 when unknown */
    uint64_t rt_h;  /* the runtime in slot `rt` when the frame was made */
    unsigned interp_epoch, rt_epoch;
};

struct ctx {
    char name[24];
    struct frame f[MAX_FRAMES];
    int depth;
    int unknown;          /* an EFINALIZING left the GIL state unknown */
    tether_tstate saved;
    uint64_t acquired[16]; /* locks this thread ever acquired */
    int nacquired;
    int nesting;          /* thread scripts inside thread scripts */
    /* call_blocking */
    pthread_mutex_t bmu;  /* protects bwoken */
    pthread_cond_t bcv;
    int bwoken;
};

static struct slot *slot_of(int kind, unsigned i)
{
    return &g.s[kind][i % NSLOT];
}

static uint64_t get_h(int kind, unsigned i)
{
    pthread_mutex_lock(&g.mu);
    uint64_t h = slot_of(kind, i)->h;
    pthread_mutex_unlock(&g.mu);
    return h;
}

/* A handle that must answer EBADHANDLE from now on. */
static void probe_dead(uint64_t h, int kind);

static atomic_int g_plugin_loads; /* OP_PLUGIN_LOADs in progress */
/* OP_PLUGIN_LOADs ever started: a load that begins and ends inside an
   unload's window changes it although g_plugin_loads reads 0 after. */
static atomic_uint g_plugin_load_starts;
/* Set once the program made a callback, or queued a pending call, whose
   function is a plugin's: it pins the plugin (PLUGIN_PIN_HOLD) until the
   program frees the callback or some checkpoint of the interpreter's main
   thread runs the call, maybe never.  An unload without a timeout then
   waits for the pin for ever, as tether.h says it does (seed x10's second
   program, a false hang: the unloading worker itself owned a live
   callback into the plugin), so from then on OP_PLUGIN_UNLOAD passes the
   longest finite timeout instead of -1. */
static atomic_int g_plugin_pins_outlive;

/* Runtime handles that a tether_runtime_finalize began on: finalize
   unloads the plugins still loaded into its runtime and their handles go
   stale (tether.h, tether_plugin_unload), whatever references the program
   holds.  Protected by g.mu. */
#define MAX_FINALIZED 64
static uint64_t g_finalized[MAX_FINALIZED];
static int g_nfinalized;

static void finalize_begins(uint64_t rt)
{
    pthread_mutex_lock(&g.mu);
    if (g_nfinalized < MAX_FINALIZED)
        g_finalized[g_nfinalized++] = rt;
    pthread_mutex_unlock(&g.mu);
}

/* Whether a finalize began on runtime `rt`: from then on its plugins'
   references may be taken by it.  Called with g.mu held. */
static int finalize_began_locked(uint64_t rt)
{
    for (int i = 0; i < g_nfinalized; i++)
        if (g_finalized[i] == rt)
            return 1;
    return g_nfinalized == MAX_FINALIZED; /* lost count: assume it */
}

/* Plugin references, counted per HANDLE as the library counts them: every
   load of one library into one runtime returns the same handle and adds a
   reference, and any unload of that handle (whichever slot names it)
   drops one; the last one unloads it and the handle goes stale.  A plugin
   slot only names a handle (`live`: the handle may still be held); the
   references are here.  Protected by g.mu.
   - refs: references the program holds (loads that succeeded minus
     unloads that succeeded, as the model has recorded them).  It may go
     below 0 for a while: a load that succeeded in the library but is not
     recorded yet, and two unloads that then both succeed.
   - unloading: unloads of this handle in progress (they may take
     references first).
   - unsure: an unload answered EASYNC or EFINALIZING, which may or may not
     have dropped the reference: the count is no longer known. */
#define MAX_PREF 256
static void efin(struct ctx *c, int rc);
static void bury_as(uint64_t h, int kind, int probe_now);
static struct pref {
    uint64_t h;
    uint64_t owner; /* the runtime handle it was loaded into */
    int refs;
    int unloading;
    unsigned unloads; /* unloads ever begun (plugin_unload_model) */
    int unsure;
} g_pref[MAX_PREF];
static int g_npref;

/* The entry of plugin handle h, made if `make` (NULL if the table is full
   of handles still held: that handle is then neither counted nor checked).
   Called with g.mu held. */
static struct pref *pref_locked(uint64_t h, uint64_t owner, int make)
{
    if (!h)
        return NULL;
    for (int i = 0; i < g_npref; i++)
        if (g_pref[i].h == h)
            return &g_pref[i];
    if (!make)
        return NULL;
    struct pref *e = NULL;
    if (g_npref < MAX_PREF)
        e = &g_pref[g_npref++];
    else /* reuse the entry of a handle no longer held (not one below 0:
            a load recorded late must find it) */
        for (int i = 0; i < g_npref && !e; i++)
            if (g_pref[i].refs == 0 && g_pref[i].unloading == 0 && !g_pref[i].unsure)
                e = &g_pref[i];
    if (!e)
        return NULL;
    memset(e, 0, sizeof *e);
    e->h = h;
    e->owner = owner;
    return e;
}

/* The handle's count fell to 0: no slot names a held reference to it any
   more.  Called with g.mu held. */
static void plugin_forget_locked(uint64_t h)
{
    for (int k = 0; k < NSLOT; k++)
        if (g.s[K_PLUGIN][k].h == h)
            g.s[K_PLUGIN][k].live = 0;
}

/* Drops one reference to plugin h (tether_plugin_unload) and checks the
   answer against the per-handle count.  An EBADHANDLE is a violation only
   if the program held a reference that no other unload in progress could
   take, both before and after the call (the count minus the unloads of h
   in flight >= 1), and no finalize began on h's runtime (which unloads
   its plugins whatever the references).  On the last reference the handle
   is buried, probed at once if no load is in progress (a load may hold a
   reference the model does not show yet).  Returns the status. */
static int plugin_unload_model(struct ctx *c, uint64_t h, int64_t tmo,
                               const char *what, int *beside)
{
    pthread_mutex_lock(&g.mu);
    struct pref *e = pref_locked(h, 0, 0);
    int before = e ? e->refs - e->unloading : 0;
    /* Whether another unload of h ran beside this one, at some moment of
       the call (an untracked handle: perhaps). */
    int other = !e || e->unloading > 0;
    unsigned begun = e ? e->unloads : 0;
    if (e) {
        e->unloading++;
        e->unloads++;
    }
    pthread_mutex_unlock(&g.mu);
    /* Whether no load ran during the call (see the probe below). */
    unsigned starts = atomic_load(&g_plugin_load_starts);
    int loading = atomic_load(&g_plugin_loads);

    int rc = CALL(tether_plugin_unload, h, tmo);
    if (c)
        efin(c, rc);

    pthread_mutex_lock(&g.mu);
    int after = 0, fin = 0, unsure = 0, last = 0;
    if (e) {
        other = other || e->unloading > 1 || e->unloads != begun + 1;
        e->unloading--;
        if (rc == TETHER_OK && --e->refs <= 0)
            last = 1;
        if (rc == TETHER_EASYNC || rc == TETHER_EFINALIZING)
            e->unsure = 1;
        after = e->refs - e->unloading;
        fin = finalize_began_locked(e->owner);
        unsure = e->unsure;
        if (rc == TETHER_EBADHANDLE && fin) {
            /* The finalize took the references: forgotten, and the
               handle checked at the end. */
            e->refs = 0;
            last = 1;
        }
        if (last)
            plugin_forget_locked(h);
    }
    pthread_mutex_unlock(&g.mu);

    if (rc == TETHER_EBADHANDLE && before >= 1 && after >= 1 && !fin && !unsure)
        fail("tether_plugin_unload: EBADHANDLE for a plugin this program "
             "holds a reference to (%s; plugin 0x%016llx, %d references "
             "not being unloaded before the call, %d after)", what,
             (unsigned long long)h, before, after);
    /* The freed handle is probed at once only if no load of the same
       path could hold a reference the model has not counted: none was in
       progress when the call began and none began since.  Reading only
       g_plugin_loads after the call was not enough (seed x16): a load
       whose library call took its reference before this unload dropped
       the other one, and which recorded it after this thread forgot the
       handle, could end before the read, leaving h alive and counted
       under a new entry. */
    int quiet = loading == 0 && atomic_load(&g_plugin_load_starts) == starts;
    if (last)
        bury_as(h, K_PLUGIN, rc == TETHER_OK && quiet && !fin);
    if (beside) /* a finalize of its runtime unloads it too */
        *beside = other || fin;
    return rc;
}

/* A successful load of plugin h into runtime `rt`: one more reference. */
static void plugin_loaded_locked(uint64_t h, uint64_t rt)
{
    struct pref *e = pref_locked(h, rt, 1);
    if (e)
        e->refs++;
}

/* Whether slot i names a plugin handle the program may still hold.
   Called with g.mu held. */
static int plugin_slot_held_locked(struct slot *s)
{
    if (!s->live)
        return 0;
    struct pref *e = pref_locked(s->h, 0, 0);
    return !e || e->refs > 0 || e->unsure;
}

/* Records a handle the program freed; checks it now if `probe_now` (and
   again at the end of the program). */
static void bury_as(uint64_t h, int kind, int probe_now)
{
    pthread_mutex_lock(&g.mu);
    if (g.ngrave < MAX_GRAVE) {
        g.grave[g.ngrave].h = h;
        g.grave[g.ngrave].kind = kind;
        g.ngrave++;
    }
    pthread_mutex_unlock(&g.mu);
    if (probe_now)
        probe_dead(h, kind);
}

/* A thread handle also lives while its thread runs (the library's own
   reference): it is checked at the end, once every thread is gone. */
static void bury(uint64_t h, int kind)
{
    bury_as(h, kind, kind != K_THREAD);
}

/* A new handle in slot i: the old one, if the program still holds it, is
   kept in the slot only if the new call failed. */
static void put_locked(struct slot *s, uint64_t h, int refs)
{
    s->h = h;
    s->live = 1;
    s->refs = refs;
    atomic_store(&s->calls, 0);
    atomic_store(&s->freeing, 0);
}

/* A new object's handle into slot i, unless the program holds another
   one there: returns 1 if it was put (else the caller releases it).  The
   look and the put are one critical section: two workers making objects
   into one slot each found it free, and the second put lost the first's
   handle, a block still live at the end in the model, not the library
   (seed x26). */
static int adopt_h(int kind, unsigned i, uint64_t h)
{
    pthread_mutex_lock(&g.mu);
    struct slot *s = slot_of(kind, i);
    int free_slot = !s->live;
    if (free_slot)
        put_locked(s, h, 1);
    pthread_mutex_unlock(&g.mu);
    return free_slot;
}

/* A new object's handle into slot i in place of the one there, which is
   returned if the program held it (0 if not): the caller frees it.  One
   critical section, as adopt_h. */
static uint64_t swap_h(int kind, unsigned i, uint64_t h)
{
    pthread_mutex_lock(&g.mu);
    struct slot *s = slot_of(kind, i);
    uint64_t old = s->live ? s->h : 0;
    put_locked(s, h, 1);
    pthread_mutex_unlock(&g.mu);
    return old;
}

/* A new interpreter of runtime slot r into interpreter slot i, unless
   the program still holds another one there (returns 0).  The check, the
   handle and its runtime change in one critical section: were `rt` set
   after `live`, a finalize of the slot's previous runtime running in
   between would take the new interpreter for one of its own and bury it
   alive (the x05 seed: "freed interp handle answers OK"). */
static int claim_interp_slot(unsigned i, uint64_t h, int r)
{
    pthread_mutex_lock(&g.mu);
    struct slot *s = slot_of(K_INTERP, i);
    int free_slot = !s->live;
    if (free_slot) {
        put_locked(s, h, 1);
        s->rt = r;
    }
    pthread_mutex_unlock(&g.mu);
    return free_slot;
}

/* Drops one reference in the model; returns 1 if it was the last one. */
static int drop_ref(int kind, unsigned i, uint64_t h)
{
    int last = 0;
    pthread_mutex_lock(&g.mu);
    struct slot *s = slot_of(kind, i);
    if (s->h == h && s->live && --s->refs <= 0) {
        s->live = 0;
        last = 1;
        /* Another slot may hold references to the same handle (two loads
           of one plugin, thread_current of a started thread). */
        for (int k = 0; k < NSLOT; k++)
            if (g.s[kind][k].live && g.s[kind][k].h == h)
                last = 0;
    }
    pthread_mutex_unlock(&g.mu);
    return last;
}

static int is_live(int kind, unsigned i, uint64_t h)
{
    pthread_mutex_lock(&g.mu);
    struct slot *s = slot_of(kind, i);
    int live = s->h == h && s->live;
    pthread_mutex_unlock(&g.mu);
    return live;
}

static void probe_dead(uint64_t h, int kind)
{
    int rc = 0;
    switch (kind) {
    case K_RT: {
        uint32_t us;
        rc = CALL(tether_get_switch_interval, h, &us);
        break;
    }
    case K_INTERP: {
        tether_gil_stats st = {.size = sizeof st};
        rc = CALL(tether_gil_stats_get, h, &st);
        break;
    }
    case K_THREAD:
        rc = tether_thread_is_alive(h);
        break;
    case K_LOCK:
        rc = CALL(tether_lock_release, h);
        break;
    case K_EVENT:
        rc = tether_event_is_set(h);
        break;
    case K_CHANNEL: {
        size_t n;
        rc = CALL(tether_channel_count, h, &n);
        break;
    }
    case K_CALLBACK:
        rc = tether_callback_code(h) ? TETHER_OK : TETHER_EBADHANDLE;
        break;
    case K_PLUGIN:
        rc = CALL(tether_plugin_info, h, NULL, NULL);
        break;
    }
    if (rc != TETHER_EBADHANDLE)
        fail("freed %s handle 0x%016llx answers %d (%s), not EBADHANDLE",
             kind_names[kind], (unsigned long long)h, rc,
             tether_status_name(rc));
}

/* Interpreters and runtimes: bumped around finalize and destroy, so that
   frames made before are known to be affected. */
static void bump_rt(int r)
{
    pthread_mutex_lock(&g.mu);
    atomic_fetch_add(&slot_of(K_RT, r)->epoch, 1);
    for (int i = 0; i < NSLOT; i++)
        if (g.s[K_INTERP][i].rt == r)
            atomic_fetch_add(&g.s[K_INTERP][i].epoch, 1);
    pthread_mutex_unlock(&g.mu);
}

static void push_frame(struct ctx *c, int kind, uint64_t token, int interp)
{
    if (c->depth == MAX_FRAMES) {
        c->unknown = 1;
        return;
    }
    struct frame *f = &c->f[c->depth++];
    f->kind = kind;
    f->detached = 0;
    f->token = token;
    f->interp = interp;
    pthread_mutex_lock(&g.mu);
    f->rt = interp >= 0 ? slot_of(K_INTERP, (unsigned)interp)->rt : -1;
    f->rt_h = f->rt >= 0 ? slot_of(K_RT, (unsigned)f->rt)->h : 0;
    pthread_mutex_unlock(&g.mu);
    f->interp_epoch = interp >= 0 ? atomic_load(&slot_of(K_INTERP, (unsigned)interp)->epoch) : 0;
    f->rt_epoch = f->rt >= 0 ? atomic_load(&slot_of(K_RT, (unsigned)f->rt)->epoch) : 0;
}

static int frame_intact(const struct frame *f)
{
    if (f->interp < 0 || f->rt < 0)
        return 0;
    return atomic_load(&slot_of(K_INTERP, (unsigned)f->interp)->epoch) == f->interp_epoch &&
           atomic_load(&slot_of(K_RT, (unsigned)f->rt)->epoch) == f->rt_epoch;
}

/* Takes the delivered asynchronous exception and destroys its payload. */
static void fetch_async(void)
{
    void *payload = NULL;
    tether_dtor dtor = NULL;
    if (CALL(tether_async_fetch, NULL, &payload, &dtor) == TETHER_OK && dtor)
        dtor(payload);
}

/* A call returned TETHER_EFINALIZING: the thread is detached from the
   interpreter it was attached to, which shuts down. */
static void efin(struct ctx *c, int rc)
{
    if (rc != TETHER_EFINALIZING)
        return;
    if (c->depth > 0 && c->f[c->depth - 1].kind != F_SAVED)
        c->f[c->depth - 1].detached = 1;
    else
        c->unknown = 1;
}

/* efin for a call whose TETHER_EFINALIZING may be about the interpreter
   it targets, not the caller's (tether_thread_start, tether_plugin_load):
   a caller whose innermost frame is attached and intact (no finalize or
   destroy began on its interpreter) is still attached; one whose frame is
   not intact may be either. */
static void efin_of_a_call_into(struct ctx *c, int rc)
{
    if (rc == TETHER_EFINALIZING && c->depth > 0 &&
        c->f[c->depth - 1].kind != F_SAVED && !c->f[c->depth - 1].detached) {
        if (!frame_intact(&c->f[c->depth - 1]))
            c->unknown = 1;
    } else {
        efin(c, rc);
    }
}

/* The GIL invariant, checked after each operation. */
static void check_gil(struct ctx *c)
{
    if (c->unknown || c->depth == 0) {
        if (c->depth == 0 && !c->unknown && tether_gil_held())
            fail("tether_gil_held() is 1 on a thread that attached nowhere");
        return;
    }
    for (int i = 0; i < c->depth; i++)
        if (c->f[i].kind != F_SAVED && !c->f[i].detached &&
            !frame_intact(&c->f[i]))
            return;
    int top = c->f[c->depth - 1].kind;
    int want = top != F_SAVED && !c->f[c->depth - 1].detached;
    int held = tether_gil_held();
    if (held != want)
        fail("tether_gil_held() is %d, but the calls so far leave the thread %s "
             "(%d frames, innermost %s)", held, want ? "attached" : "detached",
             c->depth,
             c->f[c->depth - 1].detached ? "detached by EFINALIZING" :
             top == F_ENSURE ? "an ensure" :
             top == F_BASE ? "runtime_create/thread start" :
             "a save");
}

/* ------------------------------------------------------------------------
 * Callbacks, pending calls, blocking calls
 * ---------------------------------------------------------------------- */

static int guest_fn(void **args, void *ret, void *ud)
{
    if (ud)
        sleep_ns(1000000);
    *(int32_t *)ret = 2 * *(int32_t *)args[0];
    return TETHER_OK;
}

static int pending_fn(void *arg)
{
    (void)arg;
    return TETHER_OK;
}

/* F9: a pending call that re-queues itself must not run again inside the
   checkpoint that ran it.  Each chain of re-queues has a record of its
   own: two chains sharing one would each see the other's mark and blame
   the library (a false F9 that libFuzzer found once it ran again).  A
   record is claimed while its chain runs (left > 0); a chain whose call
   was dropped (finalize) keeps its record, and when none is free no
   chain starts. */
#define NREQUEUE 64
static atomic_ullong g_cp_serial;
static __thread uint64_t tl_cp; /* the harness checkpoint running, or 0 */
static struct requeue {
    _Atomic uint64_t interp;
    atomic_int left;
    _Atomic uint64_t queued_in; /* the checkpoint that queued it, or 0 */
} g_requeue[NREQUEUE];

/* Claims a free record for a new chain of 50 re-queues, or NULL. */
static struct requeue *requeue_claim(void)
{
    static atomic_uint next;
    for (unsigned n = 0; n < NREQUEUE; n++) {
        struct requeue *r = &g_requeue[atomic_fetch_add(&next, 1) % NREQUEUE];
        int left = atomic_load(&r->left);
        if (left <= 0 && atomic_compare_exchange_strong(&r->left, &left, 50))
            return r;
    }
    return NULL;
}

static int requeue_fn(void *arg)
{
    struct requeue *r = arg;
    uint64_t in = atomic_load(&r->queued_in);
    if (tl_cp && in == tl_cp && !(g_known & 1u << 9))
        fail("one tether_checkpoint ran a pending call that was queued while "
             "it ran (it can run such calls for ever)");
    if (atomic_fetch_sub(&r->left, 1) > 0) {
        atomic_store(&r->queued_in, tl_cp);
        CALL(tether_call_soon, atomic_load(&r->interp), requeue_fn, r);
    }
    return TETHER_OK;
}

static int checkpoint(struct ctx *c)
{
    tl_cp = atomic_fetch_add(&g_cp_serial, 1) + 1;
    int rc = CALL0(tether_checkpoint);
    tl_cp = 0;
    efin(c, rc);
    return rc;
}

struct blocking {
    struct ctx *c;
    int ubf_kind;
    uint64_t interp;
};

static int blocking_fn(void *arg)
{
    struct blocking *b = arg;
    struct ctx *c = b->c;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = 100000000 / g_time_div;
    ts.tv_sec += (time_t)(ns / 1000000000);
    ts.tv_nsec += (long)(ns % 1000000000);
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&c->bmu);
    while (!c->bwoken)
        if (pthread_cond_timedwait(&c->bcv, &c->bmu, &ts) == ETIMEDOUT)
            break;
    c->bwoken = 0;
    pthread_mutex_unlock(&c->bmu);
    return TETHER_OK;
}

static void ubf(void *arg)
{
    struct blocking *b = arg;
    pthread_mutex_lock(&b->c->bmu);
    b->c->bwoken = 1;
    pthread_cond_signal(&b->c->bcv);
    pthread_mutex_unlock(&b->c->bmu);
    if (b->ubf_kind == 2)
        CALL(tether_call_soon, b->interp, pending_fn, NULL);
}

/* ------------------------------------------------------------------------
 * The operations
 * ---------------------------------------------------------------------- */

static int64_t short_tmo(unsigned x)
{
    static const int64_t t[4] = {0, 1000000, 10000000, 50000000};
    return t[x % 4] / g_time_div;
}

static int64_t long_tmo(unsigned x)
{
    static const int64_t t[4] = {-1, 0, 20000000, 2000000000};
    return t[x % 4] < 0 ? -1 : t[x % 4] / g_time_div;
}

static struct {
    struct ctx *ctx; /* set before the worker starts */
    _Atomic uint64_t ident;
} g_worker_ident[MAX_WORKERS];

static void run_ops(struct ctx *c, const uint8_t *ops, int nops);

struct start {
    struct ctx c;
    const uint8_t *script;
    int nops;
    int result;
    int interp;
    atomic_int refs;
};

static void ctx_init(struct ctx *c, const char *name)
{
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    pthread_mutex_init(&c->bmu, NULL);
    pthread_cond_init(&c->bcv, NULL);
}

static void ctx_cleanup(struct ctx *c);

/* Every struct start of the program: a thread whose start returned OK may
   still never run its function (finalize began before it took the GIL),
   so the ones left are freed at the end of the program.  Protected by
   g.mu. */
static struct start *g_starts[1024];
static int g_nstarts;

static void start_put(struct start *st)
{
    if (atomic_fetch_sub(&st->refs, 1) == 1) {
        pthread_mutex_lock(&g.mu);
        for (int i = 0; i < g_nstarts; i++)
            if (g_starts[i] == st)
                g_starts[i] = NULL;
        pthread_mutex_unlock(&g.mu);
        pthread_mutex_destroy(&st->c.bmu);
        pthread_cond_destroy(&st->c.bcv);
        free(st);
    }
}

static int thread_main(void *arg)
{
    struct start *st = arg;
    const char *saved_where = tl_where;
    tl_where = st->c.name;
    push_frame(&st->c, F_BASE, 0, st->interp);
    check_gil(&st->c);
    run_ops(&st->c, st->script, st->nops);
    ctx_cleanup(&st->c);
    int result = st->result;
    tl_where = saved_where;
    start_put(st);
    return result;
}

static const char *thread_name_of(unsigned kind, char *buf, size_t cap)
{
    switch (kind % 4) {
    case 0:
        return NULL;
    case 1:
        return "fuzz";
    case 2: /* 200 bytes of ASCII */
        memset(buf, 'n', 200);
        buf[200] = 0;
        return buf;
    default: /* "é" 100 times: byte 127 is inside a character */
        for (size_t i = 0; i + 2 < cap && i < 200; i += 2) {
            buf[i] = (char)0xc3;
            buf[i + 1] = (char)0xa9;
            buf[i + 2] = 0;
        }
        return buf;
    }
}

static void *plugin_sym(unsigned pslot, const char *name)
{
    uint64_t p = get_h(K_PLUGIN, pslot);
    void *sym = NULL;
    if (CALL(tether_plugin_symbol, p, name, &sym) != TETHER_OK)
        return NULL;
    return sym;
}

static void lock_acquired(struct ctx *c, uint64_t l)
{
    for (int i = 0; i < c->nacquired; i++)
        if (c->acquired[i] == l)
            return;
    if (c->nacquired < 16)
        c->acquired[c->nacquired++] = l;
}

static int ever_acquired(struct ctx *c, uint64_t l)
{
    for (int i = 0; i < c->nacquired; i++)
        if (c->acquired[i] == l)
            return 1;
    return c->nacquired == 16;
}

/* F13: waiters of each event slot that are known to be blocked. */
static struct {
    atomic_int tid;
    _Atomic uint64_t ev;
    atomic_int waiting;   /* 1 while inside tether_event_wait */
    atomic_int was_set;   /* an event_set ran while it was blocked */
} g_waiters[16];

static int thread_sleeping(pid_t tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] == 'S';
}

static void do_op(struct ctx *c, const uint8_t *op, int *consumed, const uint8_t *end);

/* ------------------------------------------------------------------------
 * Probes that need a process of their own: what TETHER_CONFIG_ABORT_ON_MISUSE
 * and the TETHER_DEBUG reports do.  The child runs a fixed scenario and
 * exits with 0, or with a code naming what was wrong.
 * ---------------------------------------------------------------------- */

static void *exit_attached(void *arg)
{
    tether_gilstate st;
    tether_ensure(*(tether_interp *)arg, &st); /* and never released */
    return NULL;
}

/* A fork child of this multithreaded process may not start a thread under
   ASan or TSan: their allocators are not fork-safe, and a new thread's
   set-up in the child can wait for ever on an allocator lock that another
   parent thread held at the fork (seen: f18 hung 13 times in 400 replays
   under ASan, in __sanitizer::SizeClassAllocator64::GetFromAllocator, as
   tests/stress/test_fork_storm.c notes too).  There the F18 probe checks
   the report without its exiting thread; the normal build checks both. */
#define CHILD_MAY_START_THREADS (!TEST_SANITIZER_THREAD && !TEST_SANITIZER_ADDRESS)

/* Runs in the child, with stderr going to `log` too; returns its exit
   code. */
static int probe_child(unsigned kind, FILE *log)
{
    if (tether_gil_held())
        return 0; /* the scenario needs an unattached thread */
    if (TEST_SANITIZER_THREAD && kind == 2)
        return 0; /* ThreadSanitizer cannot start threads in a forked child */
    tether_runtime rt;
    tether_interp main_interp, x;
    tether_gilstate st;
    if (kind == 0) {
        /* F8: a call of a callback whose interpreter is gone returns 0,
           also with the flag; the flag does not outlive its runtime. */
        tether_config cfg = {.size = sizeof cfg, .flags = TETHER_CONFIG_ABORT_ON_MISUSE};
        tether_callback cb;
        if (tether_runtime_create(&cfg, &rt) != TETHER_OK ||
            tether_interp_create(rt, &x) != TETHER_OK ||
            tether_callback_new(x, "i32(i32)", guest_fn, NULL, &cb) != TETHER_OK ||
            tether_interp_destroy(x, 1000000000) != TETHER_OK)
            return 10;
        int32_t (*f)(int32_t);
        void *code = tether_callback_code(cb);
        memcpy(&f, &code, sizeof f);
        fputs("fuzz_api: (a line about a callback of a finalized interpreter may follow)\n", stderr);
        if (f(5) != 0)
            return 11;
        tether_callback_free(cb);
        if (tether_runtime_finalize(rt, 1000000000) != TETHER_OK)
            return 12;
        if (tether_runtime_create(NULL, &rt) != TETHER_OK)
            return 13;
        if (tether_lock_release(((uint64_t)4 << 56) | 0x77) != TETHER_EBADHANDLE)
            return 14;
        tether_runtime_finalize(rt, 1000000000);
        return 0;
    }
    /* The reports go to a file. */
    fflush(stderr);
    int saved = dup(2);
    dup2(fileno(log), 2);
    int rc = 0;
    if (kind == 1) {
        /* F17: a plugin never unloaded is in the TETHER_DEBUG=1 report. */
        setenv("TETHER_DEBUG", "1", 1);
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", FAPI_PLUGIN_DIR, fixtures[0]);
        tether_plugin p;
        if (tether_runtime_create(NULL, &rt) != TETHER_OK ||
            tether_plugin_load(rt, path, &p) != TETHER_OK)
            rc = 20;
        else
            tether_runtime_finalize(rt, 1000000000);
    } else {
        /* F18: TETHER_DEBUG=0 prints nothing. */
        setenv("TETHER_DEBUG", "0", 1);
        tether_tstate ts;
        pthread_t th;
        if (tether_runtime_create(NULL, &rt) != TETHER_OK ||
            tether_runtime_main_interp(rt, &main_interp) != TETHER_OK ||
            tether_save_thread(&ts) != TETHER_OK)
            rc = 30;
        else {
            if (CHILD_MAY_START_THREADS) {
                pthread_create(&th, NULL, exit_attached, &main_interp);
                pthread_join(th, NULL);
            }
            tether_restore_thread(ts);
            tether_runtime_finalize(rt, 1000000000);
        }
    }
    (void)st;
    fflush(stderr);
    dup2(saved, 2);
    char buf[8192];
    rewind(log);
    size_t n = fread(buf, 1, sizeof buf - 1, log);
    buf[n] = 0;
    if (rc)
        return rc;
    if (kind == 1 && !strstr(buf, "plugin handle"))
        return 21;
    if (kind == 2 && strstr(buf, "TETHER_DEBUG"))
        return 31;
    return 0;
}

/* Under ASan the fork child runs the probe in a fresh image of this
   program: the allocator of the ASan runtime that gcc 12 and clang 14
   ship takes no lock across fork (LLVM installed one in 2023, after these
   versions), so any allocation in the child could wait for ever on a lock
   another parent thread held at the fork.  Seen: api_fuzz in a clean
   clone, a kind-1 probe's child hung (its plugin load and runtime
   allocate); the input replayed 13 times without a hang.  The child only
   calls async-signal-safe functions before the exec: the probe and its
   log's descriptor travel in the environment, read by probe_entry. */
#if TEST_SANITIZER_ADDRESS
extern char **environ;

static void exec_probe(unsigned kind, FILE *log)
{
    int fd = fileno(log);
    char what[32] = "FUZZ_API_PROBE=", where[48] = "FUZZ_API_PROBE_FD=";
    what[15] = (char)('0' + kind);
    int i = 18;
    char digits[12];
    int n = 0;
    do
        digits[n++] = (char)('0' + fd % 10);
    while ((fd /= 10) && n < 11);
    while (n)
        where[i++] = digits[--n];
    size_t env_n = 0;
    while (environ[env_n])
        env_n++;
    char *envp[env_n + 3];
    for (size_t k = 0; k < env_n; k++)
        envp[k] = environ[k];
    envp[env_n] = what;
    envp[env_n + 1] = where;
    envp[env_n + 2] = NULL;
    fcntl(fileno(log), F_SETFD, 0); /* kept across the exec */
    char *argv[] = {(char *)"fuzz_api_probe", NULL};
    execve("/proc/self/exe", argv, envp);
    static const char msg[] = "fuzz_api: the fork probe's exec failed\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(49);
}

/* The probe's process: runs probe_child before main (and before
   libFuzzer) when fork_probe started it. */
__attribute__((constructor)) static void probe_entry(void)
{
    const char *k = getenv("FUZZ_API_PROBE"), *fd = getenv("FUZZ_API_PROBE_FD");
    if (!k || !fd)
        return;
    FILE *log = fdopen(atoi(fd), "w+");
    _exit(log ? probe_child((unsigned)(k[0] - '0'), log) : 49);
}
#endif

static void fork_probe(unsigned kind)
{
    FILE *log = tmpfile(); /* what the child printed, sanitizers too */
    if (!log)
        return;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fclose(log);
        return;
    }
#if TEST_SANITIZER_ADDRESS
    if (pid == 0)
        exec_probe(kind, log);
#endif
    if (pid == 0)
        _exit(probe_child(kind, log));
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    char buf[16384];
    rewind(log);
    size_t n = fread(buf, 1, sizeof buf - 1, log);
    buf[n] = 0;
    fclose(log);
    if (n && (WIFSIGNALED(status) || WEXITSTATUS(status) % 10 != 0))
        fprintf(stderr, "fuzz_api: the fork probe's child printed:\n%s", buf);
    static const char *const what[] = {
        "with TETHER_CONFIG_ABORT_ON_MISUSE, calling a callback of a destroyed "
        "interpreter, or a bad handle after that runtime was finalized and "
        "another made without the flag, did not just return",
        "the TETHER_DEBUG=1 report at finalize does not name a plugin that "
        "was never unloaded",
        "TETHER_DEBUG=0 still prints a TETHER_DEBUG line"};
    if (WIFSIGNALED(status))
        fail("fork probe %u: the child died of signal %d: %s", kind,
             WTERMSIG(status), what[kind]);
    if (WEXITSTATUS(status) % 10 != 0) /* 10, 20, 30: the scenario could not be set up */
        fail("fork probe %u: the child exited with %d: %s", kind,
             WEXITSTATUS(status), what[kind]);
}

static void run_op(struct ctx *c, const uint8_t *op, const uint8_t *end, int *consumed)
{
    *consumed = 1;
    unsigned code = op[0] % OP__COUNT;
    if (g_skip_mask >> code & 1)
        return;
    if (g_trace)
        fprintf(stderr, "[%s] %s %u %u %u\n", c->name, op_names[code], op[2],
                op[3], op[4]);
    do_op(c, op, consumed, end);
    check_gil(c);
    if (c->depth == 0)
        c->unknown = 0;
}

static void do_op(struct ctx *c, const uint8_t *op, int *consumed, const uint8_t *end)
{
    unsigned code = op[0] % OP__COUNT, a = op[2], b = op[3], cc = op[4];
    int rc;
    switch (code) {
    case OP_NOP:
        break;
    case OP_RT_CREATE: {
        tether_config cfg = {.size = sizeof cfg};
        cfg.flags = (g.per_interp_gil || (b & 1)) ? TETHER_CONFIG_PER_INTERP_GIL : 0;
        cfg.switch_interval_us = (cc & 3) ? 1000u * (cc & 3) : 0;
        tether_runtime rt = 0;
        rc = CALL(tether_runtime_create, &cfg, &rt);
        if (rc == TETHER_OK) {
            tether_interp m = 0;
            CALL(tether_runtime_main_interp, rt, &m);
            /* The check and the new runtime and main interpreter go into
               the model in one critical section (see claim_interp_slot). */
            pthread_mutex_lock(&g.mu);
            struct slot *r = slot_of(K_RT, a % 2), *i = slot_of(K_INTERP, a % 2);
            int leaked = r->live;
            if (!leaked) {
                put_locked(r, rt, 1);
                for (int k = 0; k < NSLOT; k++)
                    if (g.s[K_INTERP][k].rt == (int)(a % 2) && g.s[K_INTERP][k].live)
                        g.s[K_INTERP][k].live = 0; /* dead with the old runtime */
                put_locked(i, m, 0); /* borrowed */
                i->rt = (int)(a % 2);
            }
            pthread_mutex_unlock(&g.mu);
            if (leaked) { /* keep the live one reachable: finalize the new */
                c->unknown = 1;
                CALL(tether_runtime_finalize, rt, -1);
                bury(rt, K_RT);
                break;
            }
            push_frame(c, F_BASE, 1, (int)(a % 2));
        }
        break;
    }
    case OP_RT_FINALIZE: {
        unsigned r = a % 2;
        uint64_t rt = get_h(K_RT, r);
        bump_rt((int)r);
        finalize_begins(rt);
        rc = CALL(tether_runtime_finalize, rt, long_tmo(b));
        bump_rt((int)r);
        if (rc == TETHER_OK || rc == TETHER_ETIMEDOUT) {
            /* F16: the caller's tokens of this runtime are now invalid.
               Not those of an earlier runtime of the same slot, which
               another thread finalized (the x06 seed: a false violation):
               their releases still pair. */
            for (int i = 0; i < c->depth; i++)
                if (c->f[i].rt == (int)r && c->f[i].rt_h == rt) {
                    c->f[i].rt = -2 - (int)r; /* finalized by this thread */
                    /* The header does not say what an outer frame of
                       another runtime becomes when the inner one's token
                       is invalid: the GIL state is not checked. */
                    c->unknown = 1;
                }
            pthread_mutex_lock(&g.mu);
            int was = slot_of(K_RT, r)->h == rt && slot_of(K_RT, r)->live;
            slot_of(K_RT, r)->live = 0;
            uint64_t interps[NSLOT];
            int n = 0;
            for (int k = 0; k < NSLOT; k++)
                if (g.s[K_INTERP][k].rt == (int)r && g.s[K_INTERP][k].live) {
                    g.s[K_INTERP][k].live = 0;
                    interps[n++] = g.s[K_INTERP][k].h;
                }
            pthread_mutex_unlock(&g.mu);
            if (was) {
                bury(rt, K_RT);
                for (int k = 0; k < n; k++)
                    bury(interps[k], K_INTERP);
            }
        }
        break;
    }
    case OP_INTERP_CREATE: {
        unsigned r = a % 2, slot = 2 + b % 2;
        tether_interp i = 0;
        if (CALL(tether_interp_create, get_h(K_RT, r), &i) == TETHER_OK &&
            !claim_interp_slot(slot, i, (int)r)) {
            CALL(tether_interp_destroy, i, -1);
            bury(i, K_INTERP);
        }
        break;
    }
    case OP_INTERP_DESTROY: {
        unsigned slot = a % NSLOT;
        uint64_t i = get_h(K_INTERP, slot);
        atomic_fetch_add(&slot_of(K_INTERP, slot)->epoch, 1);
        rc = CALL(tether_interp_destroy, i, long_tmo(b));
        atomic_fetch_add(&slot_of(K_INTERP, slot)->epoch, 1);
        if ((rc == TETHER_OK || rc == TETHER_ETIMEDOUT) && drop_ref(K_INTERP, slot, i))
            bury(i, K_INTERP);
        break;
    }
    case OP_ENSURE: {
        unsigned slot = a % NSLOT;
        tether_gilstate st = 0;
        rc = CALL(tether_ensure, get_h(K_INTERP, slot), &st);
        if (rc == TETHER_OK) {
            push_frame(c, F_ENSURE, st, (int)slot);
            tether_thread me = 0;
            if (CALL(tether_thread_current, &me) == TETHER_OK) {
                uint64_t ident = 0;
                CALL(tether_thread_ident, me, &ident);
                CALL(tether_thread_release, me);
                for (int w = 0; w < MAX_WORKERS; w++)
                    if (g_worker_ident[w].ctx == c)
                        atomic_store(&g_worker_ident[w].ident, ident);
            }
        }
        break;
    }
    case OP_RELEASE: {
        int at = -1;
        for (int i = c->depth - 1; i >= 0; i--)
            if (c->f[i].kind == F_ENSURE) {
                if (at < 0 || (a % 4) == 1)
                    at = i;
                if ((a % 4) == 0)
                    break;
            }
        uint64_t tok = (a % 4) == 2 ? 0 : at >= 0 ? c->f[at].token : 0;
        if ((a % 4) == 3)
            tok = tok ^ 0x10000u ^ ((uint64_t)b << 40) ^ 1u;
        rc = tether_release(tok);
        if (!((g_known & 1u << 15) && rc == TETHER_EFINALIZING))
            checked("tether_release", rc, FAPI_ALLOWED_tether_release);
        if (at < 0 || (a % 4) >= 2)
            break;
        if ((g_known & 1u << 7) && c->f[at].detached)
            c->unknown = 1;
        if (rc == TETHER_OK && c->f[at].rt <= -2 && !(g_known & 1u << 16))
            fail("tether_release returned OK for a token of a runtime this "
                 "thread finalized (finalize makes them invalid)");
        if (rc == TETHER_OK || rc == TETHER_EFINALIZING) {
            if (at != c->depth - 1 || rc == TETHER_EFINALIZING)
                c->unknown = 1;
            memmove(&c->f[at], &c->f[at + 1], sizeof c->f[0] * (size_t)(c->depth - at - 1));
            c->depth--;
        }
        break;
    }
    case OP_SAVE: {
        tether_tstate ts = 0;
        if (CALL(tether_save_thread, &ts) == TETHER_OK) {
            if (c->saved)
                c->unknown = 1; /* an older save is lost: restore the newest */
            c->saved = ts;
            push_frame(c, F_SAVED, 0, -1);
        }
        break;
    }
    case OP_RESTORE: {
        tether_tstate ts = (a & 1) ? (c->saved ^ 0x5a5a0000u) | 1u : c->saved;
        rc = CALL(tether_restore_thread, ts);
        if ((a & 1) == 0 && rc != TETHER_ESTATE && c->saved) {
            c->saved = 0;
            if (c->depth && c->f[c->depth - 1].kind == F_SAVED)
                c->depth--;
            else
                c->unknown = 1;
            efin(c, rc);
            if (rc == TETHER_EASYNC)
                fetch_async();
        }
        break;
    }
    case OP_CHECKPOINT:
        if (checkpoint(c) == TETHER_EASYNC && (a & 1) == 0)
            fetch_async();
        break;
    case OP_SLEEP:
        efin(c, CALL(tether_sleep, short_tmo(a)));
        break;
    case OP_THREAD_START: {
        unsigned islot = a % NSLOT, fnk = b % 4, tslot = cc % 4;
        int nops = 0;
        const uint8_t *script = op + OP_SIZE;
        if (fnk == 1 || fnk == 3) {
            nops = (int)(cc >> 2);
            int avail = (int)((end - script) / OP_SIZE);
            if (nops > avail)
                nops = avail;
            *consumed = 1 + nops;
        }
        if (c->nesting >= 3)
            break;
        char namebuf[256];
        const char *name = thread_name_of(b >> 3, namebuf, sizeof namebuf);
        tether_thread_opts opts = {.size = sizeof opts, .name = name,
                                   .daemon = (b >> 2) & 1};
        tether_thread_fn fn = thread_main;
        struct start *st = NULL;
        void *arg = NULL;
        if (fnk == 2) {
            void *sym = plugin_sym(cc >> 6, "fapi_thread");
            if (!sym)
                break;
            memcpy(&fn, &sym, sizeof fn);
        } else {
            pthread_mutex_lock(&g.mu);
            int room = g_nstarts < 1024;
            if (room)
                st = g_starts[g_nstarts++] = calloc(1, sizeof *st);
            pthread_mutex_unlock(&g.mu);
            if (!room)
                break;
            ctx_init(&st->c, "");
            size_t len = strnlen(c->name, sizeof st->c.name - 4);
            memcpy(st->c.name, c->name, len);
            snprintf(st->c.name + len, 4, ".t%u", tslot);
            st->c.nesting = c->nesting + 1;
            st->script = script;
            st->nops = fnk == 0 ? 0 : nops;
            st->result = fnk == 0 ? (int[]){TETHER_OK, TETHER_EXIT, TETHER_EINVAL,
                                            TETHER_ESTATE}[(cc >> 2) % 4]
                                  : TETHER_OK;
            st->interp = (int)islot;
            atomic_store(&st->refs, 2);
            arg = st;
        }
        tether_thread t = 0;
        rc = CALL(tether_thread_start, get_h(K_INTERP, islot), fn, arg, &opts, &t);
        if (st && rc != TETHER_OK && rc != TETHER_EFINALIZING)
            start_put(st); /* fn never runs */
        if (st)
            start_put(st);
        /* EFINALIZING says that the new thread's interpreter is finalizing
           (the caller is left as it was), or that the caller's own
           interpreter began finalizing while it waited for the handshake
           (it stays detached).  A caller whose innermost frame is attached
           and intact (no finalize or destroy began on its interpreter
           before the call returned) re-attached; otherwise which of the
           two it was is unknown (as for OP_PLUGIN_LOAD, seed x08). */
        efin_of_a_call_into(c, rc);
        if (rc != TETHER_OK)
            break;
        /* F19: the name is kept, or cut at a character boundary. */
        const char *got = NULL;
        if (name && !(g_known & 1u << 19) &&
            CALL(tether_thread_name, t, &got) == TETHER_OK) {
            size_t n = strlen(got);
            if (strncmp(got, name, n) != 0 || n > strlen(name))
                fail("thread name \"%s\" is not the name given", got);
            if (n < strlen(name) && ((unsigned char)name[n] & 0xc0) == 0x80)
                fail("thread name cut to %zu bytes, inside a UTF-8 character", n);
        }
        if (!adopt_h(K_THREAD, tslot, t)) {
            CALL(tether_thread_release, t);
            bury(t, K_THREAD);
        }
        break;
    }
    case OP_THREAD_JOIN: {
        rc = CALL(tether_thread_join, get_h(K_THREAD, a), long_tmo(b));
        efin(c, rc);
        if (rc == TETHER_EASYNC)
            fetch_async();
        break;
    }
    case OP_THREAD_RELEASE: {
        uint64_t t = get_h(K_THREAD, a);
        if (CALL(tether_thread_release, t) == TETHER_OK && drop_ref(K_THREAD, a, t))
            bury(t, K_THREAD);
        break;
    }
    case OP_THREAD_RAISE: {
        void *payload = NULL;
        if (b & 1) {
            payload = malloc(8);
            atomic_fetch_add(&g_payloads, 1);
        }
        rc = CALL(tether_thread_raise, get_h(K_THREAD, a), (int64_t)cc + 1,
                  payload, payload ? payload_dtor : NULL);
        if (rc != TETHER_OK)
            payload_dtor(payload);
        break;
    }
    case OP_THREAD_CURRENT: {
        tether_thread t = 0;
        if (CALL(tether_thread_current, &t) != TETHER_OK)
            break;
        pthread_mutex_lock(&g.mu);
        struct slot *s = slot_of(K_THREAD, a);
        int keep = !s->live || s->h == t;
        if (keep && s->live)
            s->refs++;
        else if (keep)
            put_locked(s, t, 1);
        pthread_mutex_unlock(&g.mu);
        if (!keep)
            CALL(tether_thread_release, t);
        break;
    }
    case OP_THREAD_QUERY: {
        uint64_t t = get_h(K_THREAD, a), ident;
        const char *name;
        int res;
        int alive = tether_thread_is_alive(t);
        if (alive != 0 && alive != 1 && alive != TETHER_EBADHANDLE)
            fail("tether_thread_is_alive returned %d", alive);
        CALL(tether_thread_ident, t, &ident);
        CALL(tether_thread_name, t, &name);
        CALL(tether_thread_result, t, &res);
        size_t count = 0;
        tether_thread buf[4];
        if (CALL(tether_thread_list, get_h(K_INTERP, b), buf, 4, &count) == TETHER_OK)
            for (size_t i = 0; i < count && i < 4; i++)
                CALL(tether_thread_release, buf[i]);
        break;
    }
    case OP_CALL_BLOCKING: {
        struct blocking bl = {c, (int)(a % 3), get_h(K_INTERP, b)};
        rc = CALL(tether_call_blocking, blocking_fn, &bl, (a % 3) ? ubf : NULL, &bl);
        efin(c, rc);
        if (rc == TETHER_EASYNC)
            fetch_async();
        break;
    }
    case OP_ASYNC:
        switch (a % 3) {
        case 0:
            CALL0(tether_async_defer);
            break;
        case 1:
            CALL0(tether_async_allow);
            break;
        default: {
            void *payload = NULL;
            tether_dtor dtor = NULL;
            if (CALL(tether_async_fetch, NULL, &payload, &dtor) == TETHER_OK && dtor)
                dtor(payload);
        }
        }
        break;
    case OP_LOCK_NEW: {
        tether_lock l = 0;
        if (CALL(tether_lock_new, &l) == TETHER_OK) {
            uint64_t old = swap_h(K_LOCK, a, l);
            if (old && CALL(tether_lock_free, old) == TETHER_OK)
                bury(old, K_LOCK);
        }
        break;
    }
    case OP_LOCK_FREE: {
        uint64_t l = get_h(K_LOCK, a);
        if (CALL(tether_lock_free, l) == TETHER_OK && drop_ref(K_LOCK, a, l))
            bury(l, K_LOCK);
        break;
    }
    case OP_LOCK_ACQUIRE: {
        uint64_t l = get_h(K_LOCK, a);
        /* b bit 2: no timeout (a stalled program is rescued: rescue()) */
        rc = CALL(tether_lock_acquire, l, (b & 4) ? -1 : short_tmo(b));
        if (rc == TETHER_OK)
            lock_acquired(c, l);
        if (rc == TETHER_EDEADLK && !ever_acquired(c, l) && !(g_known & 1u << 12))
            fail("tether_lock_acquire returned EDEADLK to a thread that never "
                 "acquired the lock");
        efin(c, rc);
        if (rc == TETHER_EASYNC)
            fetch_async();
        break;
    }
    case OP_LOCK_RELEASE:
        CALL(tether_lock_release, get_h(K_LOCK, a));
        break;
    case OP_EVENT_NEW: {
        tether_event e = 0;
        if (CALL(tether_event_new, &e) == TETHER_OK) {
            uint64_t old = swap_h(K_EVENT, a, e);
            if (old && CALL(tether_event_free, old) == TETHER_OK)
                bury(old, K_EVENT);
        }
        break;
    }
    case OP_EVENT_FREE: {
        uint64_t e = get_h(K_EVENT, a);
        if (CALL(tether_event_free, e) == TETHER_OK && drop_ref(K_EVENT, a, e))
            bury(e, K_EVENT);
        break;
    }
    case OP_EVENT_SET: {
        uint64_t e = get_h(K_EVENT, a);
        /* F13: waiters blocked now must wake, even if a clear follows. */
        int blocked[16] = {0};
        for (int i = 0; i < 16; i++)
            blocked[i] = atomic_load(&g_waiters[i].waiting) &&
                         atomic_load(&g_waiters[i].ev) == e &&
                         thread_sleeping((pid_t)atomic_load(&g_waiters[i].tid));
        rc = CALL(tether_event_set, e);
        if (rc == TETHER_OK)
            for (int i = 0; i < 16; i++)
                if (blocked[i] && atomic_load(&g_waiters[i].waiting) &&
                    atomic_load(&g_waiters[i].ev) == e)
                    atomic_store(&g_waiters[i].was_set, 1);
        break;
    }
    case OP_EVENT_CLEAR:
        CALL(tether_event_clear, get_h(K_EVENT, a));
        break;
    case OP_EVENT_WAIT: {
        uint64_t e = get_h(K_EVENT, a);
        int me = -1;
        pthread_mutex_lock(&g.mu);
        for (int i = 0; i < 16; i++)
            if (!atomic_load(&g_waiters[i].waiting)) {
                me = i;
                atomic_store(&g_waiters[i].tid, (int)syscall(SYS_gettid));
                atomic_store(&g_waiters[i].ev, e);
                atomic_store(&g_waiters[i].was_set, 0);
                atomic_store(&g_waiters[i].waiting, 1);
                break;
            }
        pthread_mutex_unlock(&g.mu);
        rc = CALL(tether_event_wait, e, (b & 4) ? -1 : short_tmo(b));
        if (me >= 0) {
            int was_set = atomic_load(&g_waiters[me].was_set);
            atomic_store(&g_waiters[me].waiting, 0);
            if (rc == TETHER_ETIMEDOUT && was_set && !(g_known & 1u << 13))
                fail("tether_event_wait timed out although the event was set "
                     "while it was blocked (a clear right after a set must "
                     "not lose the wake-up)");
        }
        efin(c, rc);
        if (rc == TETHER_EASYNC)
            fetch_async();
        int set = tether_event_is_set(e);
        if (set != 0 && set != 1 && set != TETHER_EBADHANDLE)
            fail("tether_event_is_set returned %d", set);
        break;
    }
    case OP_CHANNEL_NEW: {
        tether_channel ch = 0;
        if (CALL(tether_channel_new, b % 4, &ch) == TETHER_OK) {
            if (!adopt_h(K_CHANNEL, a, ch)) {
                CALL(tether_channel_release, ch);
                bury(ch, K_CHANNEL);
            }
        }
        break;
    }
    case OP_CHANNEL_RETAIN: {
        uint64_t ch = get_h(K_CHANNEL, a);
        pthread_mutex_lock(&g.mu);
        struct slot *s = slot_of(K_CHANNEL, a);
        int live = s->live && s->h == ch && s->refs < 8;
        if (live)
            s->refs++; /* before the call: a racing release keeps one */
        pthread_mutex_unlock(&g.mu);
        if (!live)
            break;
        if (CALL(tether_channel_retain, ch) != TETHER_OK)
            fail("tether_channel_retain failed on a channel the program holds");
        break;
    }
    case OP_CHANNEL_RELEASE: {
        uint64_t ch = get_h(K_CHANNEL, a);
        if (!is_live(K_CHANNEL, a, ch)) {
            CALL(tether_channel_release, ch);
            break;
        }
        int last = drop_ref(K_CHANNEL, a, ch);
        CALL(tether_channel_release, ch);
        if (last)
            bury(ch, K_CHANNEL);
        break;
    }
    case OP_CHANNEL_SEND: {
        uint8_t data[64];
        memset(data, (int)cc, sizeof data);
        rc = CALL(tether_channel_send, get_h(K_CHANNEL, a), data, cc % 64, short_tmo(b));
        efin(c, rc);
        if (rc == TETHER_EASYNC)
            fetch_async();
        break;
    }
    case OP_CHANNEL_RECV: {
        void *data = NULL;
        size_t len = 0;
        rc = CALL(tether_channel_recv, get_h(K_CHANNEL, a), &data, &len, short_tmo(b));
        if (rc == TETHER_OK) {
            if (!data)
                fail("tether_channel_recv gave a NULL buffer");
            tether_channel_msg_free(data);
        }
        efin(c, rc);
        if (rc == TETHER_EASYNC)
            fetch_async();
        break;
    }
    case OP_CHANNEL_CLOSE: {
        size_t n;
        CALL(tether_channel_close, get_h(K_CHANNEL, a));
        CALL(tether_channel_count, get_h(K_CHANNEL, a), &n);
        break;
    }
    case OP_CALLBACK_NEW: {
        tether_guest_fn fn = guest_fn;
        void *ud = (cc % 4) == 1 ? (void *)1 : NULL;
        if ((cc % 4) >= 2) {
            void *sym = plugin_sym(cc >> 2, "fapi_guest");
            if (!sym)
                break;
            memcpy(&fn, &sym, sizeof fn);
            atomic_store(&g_plugin_pins_outlive, 1); /* (before the pin) */
        }
        tether_callback cb = 0;
        if (CALL(tether_callback_new, get_h(K_INTERP, b), "i32(i32)", fn, ud, &cb) == TETHER_OK) {
            if (!adopt_h(K_CALLBACK, a, cb)) {
                CALL(tether_callback_free, cb);
                bury(cb, K_CALLBACK);
            }
        }
        break;
    }
    case OP_CALLBACK_CALL: {
        /* Only a call that begins before tether_callback_free returns is
           legal.  `calls` counts the callers between their look at
           `freeing` and the call instruction; the freer sets `freeing`,
           waits for them to leave that stretch, then frees, so every call
           that was let through has begun (but for the few instructions
           between the decrement and the call) when the free begins. */
        struct slot *s = slot_of(K_CALLBACK, a);
        uint64_t cb = get_h(K_CALLBACK, a);
        atomic_fetch_add(&s->calls, 1);
        void *code = NULL;
        if (!atomic_load(&s->freeing) && is_live(K_CALLBACK, a, cb))
            code = tether_callback_code(cb);
        if (!code) {
            atomic_fetch_sub(&s->calls, 1);
            break;
        }
        int32_t (*f)(int32_t);
        memcpy(&f, &code, sizeof f);
        atomic_fetch_sub(&s->calls, 1);
        int32_t r = f((int32_t)b);
        if (r != 2 * (int32_t)b && r != 0)
            fail("callback returned %d for %d", r, (int)b);
        break;
    }
    case OP_CALLBACK_FREE: {
        struct slot *s = slot_of(K_CALLBACK, a);
        uint64_t cb = get_h(K_CALLBACK, a);
        int live = is_live(K_CALLBACK, a, cb);
        if (live) {
            atomic_store(&s->freeing, 1);
            while (atomic_load(&s->calls) > 0)
                sched_yield();
        }
        rc = CALL(tether_callback_free, cb);
        efin(c, rc);
        if (rc == TETHER_EASYNC)
            fetch_async();
        if (rc != TETHER_EBADHANDLE && live && drop_ref(K_CALLBACK, a, cb))
            bury(cb, K_CALLBACK);
        break;
    }
    case OP_PLUGIN_LOAD: {
        /* Counted while the model lags the library (see
           plugin_unload_model). */
        atomic_fetch_add(&g_plugin_loads, 1);
        atomic_fetch_add(&g_plugin_load_starts, 1);
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", FAPI_PLUGIN_DIR, fixtures[cc % NFIXTURES]);
        tether_plugin p = 0;
        uint64_t rt = get_h(K_RT, b);
        rc = CALL(tether_plugin_load, rt, path, &p);
        /* EFINALIZING says that `rt` is finalizing, or that the caller's
           own interpreter is (its GIL could not be taken back after the
           dlopen): a caller whose innermost frame is attached and intact
           (no finalize or destroy began on its interpreter) is still
           attached (seed x08: a false violation); one whose frame is not
           intact may be either (seed x22: an interp_destroy of its main
           interpreter, refused with EINVAL, moved the slot's epoch, and
           marking the frame detached then checked it). */
        efin_of_a_call_into(c, rc);
        if (rc == TETHER_OK) {
            pthread_mutex_lock(&g.mu);
            plugin_loaded_locked(p, rt);
            struct slot *s = slot_of(K_PLUGIN, a);
            /* A slot naming a handle a finalize may have taken is let go
               of (its references stay counted on that handle). */
            if (s->live && s->h != p && finalize_began_locked(s->owner))
                s->live = 0;
            /* The slot names p from now on, unless it names another
               handle the program still holds: the new reference is then
               unloaded at once (p's count went up by one above; that
               unload takes it back down, like any other unload of p). */
            int keep = !plugin_slot_held_locked(s) || s->h == p;
            if (keep) {
                s->h = p;
                s->live = 1;
                s->owner = rt;
            }
            pthread_mutex_unlock(&g.mu);
            if (!keep) {
                /* Other unloads of p may have taken its other references
                   meanwhile: this one can be the last, and then it waits
                   with the caller's GIL released, like OP_PLUGIN_UNLOAD
                   (the same timeout; crash-d3afb2c5 of the rev1 review:
                   the caller's interpreter began finalizing meanwhile and
                   the unload answered EFINALIZING, as tether.h says, with
                   the caller detached). */
                int64_t tmo = atomic_load(&g_plugin_pins_outlive) ? long_tmo(3) : -1;
                int beside = 0;
                rc = plugin_unload_model(c, p, tmo, "the reference just loaded",
                                         &beside);
                /* EBADHANDLE is judged by plugin_unload_model (other
                   unloads of p may have taken the references).  ESTATE is
                   another unload of p's last reference in progress
                   (tether.h): another unload of p, or a finalize of its
                   runtime, ran beside this one (seed x27: another
                   worker's finalize of p's runtime had begun unloading
                   it). */
                if (rc != TETHER_OK && rc != TETHER_EBADHANDLE &&
                    rc != TETHER_EASYNC && rc != TETHER_EFINALIZING &&
                    !(rc == TETHER_ETIMEDOUT && tmo >= 0) &&
                    !(rc == TETHER_ESTATE && beside))
                    fail("unloading the reference just loaded failed: %d (%s)",
                         rc, tether_status_name(rc));
            }
        }
        atomic_fetch_sub(&g_plugin_loads, 1);
        break;
    }
    case OP_PLUGIN_UNLOAD: {
        /* Whichever slot names it, an unload drops one of the handle's
           references: the model counts them per handle. */
        uint64_t p = get_h(K_PLUGIN, a);
        int64_t tmo = long_tmo(b);
        if (tmo < 0 && atomic_load(&g_plugin_pins_outlive))
            tmo = long_tmo(3);
        rc = plugin_unload_model(c, p, tmo, "OP_PLUGIN_UNLOAD", NULL);
        break;
    }
    case OP_PLUGIN_SYMBOL: {
        const char *name = NULL, *version = NULL;
        plugin_sym(a, (b & 1) ? "no_such_symbol" : "fapi_guest");
        CALL(tether_plugin_info, get_h(K_PLUGIN, a), &name, &version);
        break;
    }
    case OP_CALL_SOON: {
        uint64_t i = get_h(K_INTERP, a);
        switch (b % 3) {
        case 0:
            CALL(tether_call_soon, i, pending_fn, NULL);
            break;
        case 1: {
            struct requeue *r = requeue_claim();
            if (!r)
                break;
            atomic_store(&r->interp, i);
            atomic_store(&r->queued_in, 0);
            if (CALL(tether_call_soon, i, requeue_fn, r) != TETHER_OK)
                atomic_store(&r->left, 0); /* never queued: free again */
            break;
        }
        default: {
            void *sym = plugin_sym(cc, "fapi_pending");
            int (*fn)(void *);
            if (!sym)
                break;
            memcpy(&fn, &sym, sizeof fn);
            atomic_store(&g_plugin_pins_outlive, 1); /* (before the pin) */
            CALL(tether_call_soon, i, fn, NULL);
        }
        }
        break;
    }
    case OP_SET_ALLOCATOR:
        CALL(tether_set_allocator, &g_allocs[a & 1]);
        break;
    case OP_CHURN: {
        /* A freed lock handle, then 2^n cycles of its slot: it must stay
           stale (the generation must not wrap). */
        tether_lock stale = 0, l = 0;
        if (CALL(tether_lock_new, &stale) != TETHER_OK)
            break;
        CALL(tether_lock_free, stale);
        unsigned e = a % 25;
        uint64_t n = 1ull << (e < g_churn_max ? e : g_churn_max);
        for (uint64_t i = 0; i < n; i++) {
            if (tether_lock_new(&l) != TETHER_OK)
                fail("tether_lock_new failed in the churn");
            if (l == stale)
                fail("after %llu new/free cycles tether_lock_new issued the "
                     "freed handle 0x%016llx again: the stale handle now "
                     "reaches the new lock", (unsigned long long)i + 1,
                     (unsigned long long)stale);
            int r1 = tether_lock_free(l);
            if (r1 != TETHER_OK)
                fail("tether_lock_free: %s", tether_status_name(r1));
        }
        if (CALL(tether_lock_new, &l) == TETHER_OK) {
            probe_dead(stale, K_LOCK);
            CALL(tether_lock_free, l);
        }
        break;
    }
    case OP_REPEAT: {
        int body = (int)(b % 16) + 1;
        int avail = (int)((end - op) / OP_SIZE) - 1;
        if (body > avail)
            body = avail;
        *consumed = 1 + body;
        for (unsigned i = 0; i <= a; i++)
            run_ops(c, op + OP_SIZE, body);
        break;
    }
    case OP_MISC: {
        uint64_t i = get_h(K_INTERP, a);
        tether_gil_stats st = {.size = sizeof st};
        CALL(tether_gil_stats_get, i, &st);
        uint64_t rt = get_h(K_RT, b);
        uint32_t us = 0;
        CALL(tether_get_switch_interval, rt, &us);
        CALL(tether_set_switch_interval, rt, (cc % 2) ? 1000u : 5000u);
        void *ud = NULL;
        CALL(tether_set_thread_userdata, (void *)c);
        if (CALL(tether_get_thread_userdata, &ud) == TETHER_OK && ud != c)
            fail("tether_get_thread_userdata gave back %p, not %p", ud, (void *)c);
        break;
    }
    case OP_FORK_PROBE:
        fork_probe(a % 3);
        break;
    case OP_RAISE_BY_IDENT: {
        uint64_t ident = atomic_load(&g_worker_ident[b % MAX_WORKERS].ident);
        int count = -1;
        void *payload = malloc(8);
        atomic_fetch_add(&g_payloads, 1);
        rc = CALL(tether_raise_by_ident, get_h(K_INTERP, a), ident, 9, payload,
                  payload_dtor, &count);
        if (rc != TETHER_OK || count == 0)
            payload_dtor(payload);
        else if (count != 1)
            fail("tether_raise_by_ident: *count_out = %d", count);
        break;
    }
    }
}

static void run_ops(struct ctx *c, const uint8_t *ops, int nops)
{
    const uint8_t *end = ops + (size_t)nops * OP_SIZE;
    for (const uint8_t *op = ops; op < end;) {
        if (now_ns() > g.soft)
            return; /* the program's time is up: it winds down */
        int consumed = 1;
        run_op(c, op, end, &consumed);
        op += (size_t)consumed * OP_SIZE;
    }
}

static void finalize_own(struct ctx *c, unsigned r)
{
    pthread_mutex_lock(&g.mu);
    uint64_t rt = slot_of(K_RT, r)->h;
    int live = slot_of(K_RT, r)->live;
    pthread_mutex_unlock(&g.mu);
    if (!live)
        return;
    uint8_t op[OP_SIZE] = {OP_RT_FINALIZE, 0, (uint8_t)r, 3, 0};
    int consumed;
    (void)rt;
    do_op(c, op, &consumed, op + OP_SIZE);
}

/* Undoes what the thread still holds: restores its saved state and
   releases its tokens, innermost first. */
static void ctx_cleanup(struct ctx *c)
{
    while (c->depth > 0) {
        struct frame *f = &c->f[c->depth - 1];
        if (f->kind == F_SAVED) {
            int rc = CALL(tether_restore_thread, c->saved);
            c->saved = 0;
            if (rc == TETHER_EASYNC)
                fetch_async();
            efin(c, rc);
        } else if (f->kind == F_ENSURE) {
            int rc = CALL(tether_release, f->token);
            if (rc == TETHER_OK && f->rt <= -2 && !(g_known & 1u << 16))
                fail("tether_release returned OK for a token of a runtime "
                     "this thread finalized (finalize makes them invalid)");
        } else if (f->token == 1 && f->rt >= 0) {
            /* The thread made this runtime: it finalizes it, as a host's
               main thread would. */
            c->depth--;
            finalize_own(c, (unsigned)f->rt);
            c->unknown = 1;
            continue;
        } else {
            c->depth--; /* a started thread's own state: it returns */
            break;
        }
        c->depth--;
        check_gil(c);
    }
    /* A pending asynchronous exception's payload is the harness's. */
    void *payload = NULL;
    tether_dtor dtor = NULL;
    if (tether_gil_held() && tether_async_fetch(NULL, &payload, &dtor) == TETHER_OK && dtor)
        dtor(payload);
}

/* ------------------------------------------------------------------------
 * Workers and the dispatcher
 * ---------------------------------------------------------------------- */

struct unit {
    const uint8_t *op, *end;
};

static struct worker {
    pthread_t th;
    struct ctx c;
    struct unit q[MAX_OPS + 1];
    int head, tail; /* protected by g.mu */
    int done;       /* units finished; protected by g.mu */
    int quit;
    const uint8_t *current; /* the op it runs, for the hang report */
} g_w[MAX_WORKERS];
static int g_nworkers;

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    tl_where = w->c.name;
    for (;;) {
        pthread_mutex_lock(&g.mu);
        while (w->head == w->tail && !w->quit) {
            /* Idle: like a guest between statements, check the breaker
               now and then, so that a GIL it holds is handed over. */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&g.cv, &g.mu, &ts);
            if (w->head == w->tail && !w->quit) {
                pthread_mutex_unlock(&g.mu);
                if (tether_gil_held()) {
                    int rc = checkpoint(&w->c);
                    if (rc == TETHER_EASYNC)
                        fetch_async();
                    check_gil(&w->c);
                }
                pthread_mutex_lock(&g.mu);
            }
        }
        if (w->head == w->tail) {
            pthread_mutex_unlock(&g.mu);
            break;
        }
        struct unit u = w->q[w->head];
        w->current = u.op;
        pthread_mutex_unlock(&g.mu);
        int consumed;
        if (now_ns() < g.soft)
            run_op(&w->c, u.op, u.end, &consumed);
        pthread_mutex_lock(&g.mu);
        w->current = NULL;
        w->head++;
        w->done++;
        pthread_cond_broadcast(&g.cv);
        pthread_mutex_unlock(&g.mu);
    }
    ctx_cleanup(&w->c);
    return NULL;
}

/* A program stalled for a while (a lock or event wait without timeout
   that nobody ends) is helped along, as its host would: the dispatcher
   releases every lock and sets every event the program holds. */
static void rescue(void)
{
    for (int i = 0; i < NSLOT; i++) {
        pthread_mutex_lock(&g.mu);
        uint64_t l = g.s[K_LOCK][i].live ? g.s[K_LOCK][i].h : 0;
        uint64_t e = g.s[K_EVENT][i].live ? g.s[K_EVENT][i].h : 0;
        pthread_mutex_unlock(&g.mu);
        if (l)
            CALL(tether_lock_release, l);
        if (e)
            CALL(tether_event_set, e);
    }
}

static void *nothing(void *arg)
{
    return arg;
}

static int count_tasks(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.')
            n++;
    if (d)
        closedir(d);
    return n;
}

static void hang_report(const uint8_t *prog)
{
    fprintf(stderr, "fuzz_api: the program did not finish within %lld s\n",
            (long long)(g_program_ns / 1000000000));
    for (int i = 0; i < g_nworkers; i++) {
        const uint8_t *op = g_w[i].current;
        if (op)
            fprintf(stderr, "  worker %d is in op #%d %s %u %u %u\n", i,
                    (int)((op - prog) / OP_SIZE), op_names[op[0] % OP__COUNT],
                    op[2], op[3], op[4]);
        else
            fprintf(stderr, "  worker %d: %d units queued\n", i,
                    g_w[i].tail - g_w[i].head);
    }
    fail("hang");
}

/* Takes slot i of `kind` away from the program: returns its handle and
   references if the program held it, else 0. */
static uint64_t take_slot(int kind, int i, int *refs)
{
    pthread_mutex_lock(&g.mu);
    struct slot *s = slot_of(kind, (unsigned)i);
    uint64_t h = s->live ? s->h : 0;
    *refs = s->refs;
    s->live = 0;
    pthread_mutex_unlock(&g.mu);
    return h;
}

/* Joins (up to `tmo`) and releases the thread handles the program holds;
   their values go to later[] (buried by the caller: a handle released
   here may be in use by a thread still running) or, without later, are
   buried at once. */
static int release_threads(int64_t tmo, uint64_t *later, int nlater)
{
    uint64_t h;
    int refs;
    for (int i = 0; i < NSLOT; i++)
        if ((h = take_slot(K_THREAD, i, &refs))) {
            CALL(tether_thread_join, h, tmo);
            while (refs-- > 0)
                CALL(tether_thread_release, h);
            if (later)
                later[nlater++] = h;
            else
                bury(h, K_THREAD);
        }
    return nlater;
}

/* Frees the callbacks, locks, events and channels the program holds. */
static void release_objects(void)
{
    uint64_t h;
    int refs;
    for (int i = 0; i < NSLOT; i++) {
        if ((h = take_slot(K_CALLBACK, i, &refs)) &&
            CALL(tether_callback_free, h) == TETHER_OK)
            bury(h, K_CALLBACK);
        if ((h = take_slot(K_LOCK, i, &refs)) && CALL(tether_lock_free, h) == TETHER_OK)
            bury(h, K_LOCK);
        if ((h = take_slot(K_EVENT, i, &refs)) && CALL(tether_event_free, h) == TETHER_OK)
            bury(h, K_EVENT);
        if ((h = take_slot(K_CHANNEL, i, &refs))) {
            while (refs-- > 0)
                CALL(tether_channel_release, h);
            bury(h, K_CHANNEL);
        }
        take_slot(K_PLUGIN, i, &refs);
    }
}

/* Frees what the program still holds, from the dispatcher thread (never
   attached), after the workers have finished.  The program's own threads
   may still run, and make objects, until they are joined: the objects are
   released again after the joins (seed x07: a lock made by a thread after
   the first pass leaked in the model, not in the library), and once more
   when every thread has left (the caller). */
static void release_runtimes(void);

static void release_everything(void)
{
    uint64_t h, later[NSLOT];
    int nlater;
    release_objects();
    /* Plugin references are counted per handle (g_pref): each handle the
       program still holds is unloaded that many times and buried.  Not
       without a timeout when a pending call may still pin the plugin: no
       checkpoint may ever run it, and only the finalize below drops it
       (seed x14, a false hang; g_plugin_pins_outlive).  A plugin left
       mapped then is unloaded by that finalize. */
    int64_t unload_tmo = atomic_load(&g_plugin_pins_outlive) ? long_tmo(3) : -1;
    for (int i = 0; i < g_npref; i++)
        if (g_pref[i].refs > 0 || g_pref[i].unsure) {
            h = g_pref[i].h;
            for (int n = g_pref[i].refs; n > 0; n--)
                CALL(tether_plugin_unload, h, unload_tmo);
            g_pref[i].refs = 0;
            bury_as(h, K_PLUGIN, 0);
        }
    nlater = release_threads(10LL * 1000000000, later, 0);
    release_objects();
    for (int i = 0; i < nlater; i++)
        bury(later[i], K_THREAD);
    /* A thread of the program nobody joined may be destroying or
       finalizing the same object (its own OP_INTERP_DESTROY, or the
       finalize of a runtime it made, ctx_cleanup): the call then answers
       TETHER_ESTATE and the handle is closed only when that other call
       ends, so it is probed at the end, once every thread has left (seed
       x23), not at once. */
    release_runtimes();
}

/* Destroys the interpreters and finalizes the runtimes the program still
   holds (release_everything, and its last pass). */
static void release_runtimes(void)
{
    uint64_t h;
    int refs, rc;
    for (int i = 2; i < NSLOT; i++)
        if ((h = take_slot(K_INTERP, i, &refs))) {
            /* Frames of threads still attached to it are not intact from
               now on (as OP_INTERP_DESTROY does). */
            atomic_fetch_add(&slot_of(K_INTERP, (unsigned)i)->epoch, 1);
            if ((rc = CALL(tether_interp_destroy, h, 10LL * 1000000000)) != TETHER_EBADHANDLE)
                bury_as(h, K_INTERP, rc != TETHER_ESTATE);
        }
    for (int r = 0; r < 2; r++)
        if ((h = take_slot(K_RT, r, &refs))) {
            uint64_t m = take_slot(K_INTERP, r, &refs);
            bump_rt(r);
            rc = CALL(tether_runtime_finalize, h, 10LL * 1000000000);
            bump_rt(r);
            bury_as(h, K_RT, rc != TETHER_ESTATE);
            if (m)
                bury_as(m, K_INTERP, rc != TETHER_ESTATE);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    settings();
    static int baseline_tasks;
    static int installed;
    if (!installed) {
        /* The counting allocator for the whole process; the handle
           table's first chunk (never freed) is made now, not counted as a
           program's leak. */
        if (tether_set_allocator(&g_allocs[0]) != TETHER_OK)
            fail("tether_set_allocator at start: %s", tether_last_error());
        tether_lock l;
        if (tether_lock_new(&l) != TETHER_OK || tether_lock_free(l) != TETHER_OK)
            fail("warm-up");
        installed = 1;
        /* A sanitizer's helper thread starts with the first thread. */
        pthread_t th;
        pthread_create(&th, NULL, nothing, NULL);
        pthread_join(th, NULL);
        sleep_ns(20000000);
    }
    baseline_tasks = count_tasks();
    if (size < 1)
        return 0;
    size_t nops = (size - 1) / OP_SIZE;
    if (nops > MAX_OPS)
        nops = MAX_OPS;
    const uint8_t *prog = data + 1, *end = prog + nops * OP_SIZE;
    long long blocks_before = atomic_load(&g_blocks[0]) + atomic_load(&g_blocks[1]);

    memset(g.s, 0, sizeof g.s);
    for (int i = 0; i < NSLOT; i++)
        g.s[K_INTERP][i].rt = i < 2 ? i : -1;
    g.ngrave = 0;
    g_nfinalized = 0;
    g_npref = 0;
    atomic_store(&g_plugin_pins_outlive, 0);
    g.per_interp_gil = (data[0] >> 2) & 1;
    g.deadline = now_ns() + g_program_ns;
    g.soft = now_ns() + g_program_ns / 2;
    g_nstarts = 0;
    for (int i = 0; i < MAX_WORKERS; i++) {
        g_worker_ident[i].ctx = NULL;
        atomic_store(&g_worker_ident[i].ident, 0);
    }
    g_nworkers = 2 + (data[0] & 3) % 3;
    for (int i = 0; i < g_nworkers; i++) {
        struct worker *w = &g_w[i];
        w->head = w->tail = w->done = w->quit = 0;
        w->current = NULL;
        char name[16];
        snprintf(name, sizeof name, "w%d", i);
        ctx_init(&w->c, name);
        g_worker_ident[i].ctx = &w->c;
        pthread_create(&w->th, NULL, worker_main, w);
    }

    int64_t step = 20000000 / g_time_div;
    for (const uint8_t *op = prog; op < end;) {
        int n = 1;
        unsigned code = op[0] % OP__COUNT;
        if (code == OP_REPEAT)
            n += (int)(op[3] % 16) + 1;
        else if (code == OP_THREAD_START && ((op[3] % 4) == 1 || (op[3] % 4) == 3))
            n += op[4] >> 2;
        const uint8_t *next = op + (size_t)n * OP_SIZE;
        if (next > end)
            next = end;
        struct worker *w = &g_w[(op[1] & 3) % g_nworkers];
        pthread_mutex_lock(&g.mu);
        w->q[w->tail++] = (struct unit){op, next};
        int seq = w->tail;
        pthread_cond_broadcast(&g.cv);
        if (!(op[1] & 0x80)) {
            int64_t until = (op[1] & 0x40) ? g.deadline : now_ns() + step;
            int64_t stalled = now_ns() + 500000000;
            while (w->done < seq && now_ns() < until) {
                if (now_ns() > stalled) {
                    pthread_mutex_unlock(&g.mu);
                    rescue();
                    pthread_mutex_lock(&g.mu);
                    stalled = now_ns() + 100000000;
                }
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 1000000;
                if (ts.tv_nsec >= 1000000000) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000;
                }
                pthread_cond_timedwait(&g.cv, &g.mu, &ts);
            }
        }
        pthread_mutex_unlock(&g.mu);
        op = next;
    }
    /* Drain and stop the workers. */
    pthread_mutex_lock(&g.mu);
    for (int i = 0; i < g_nworkers; i++)
        g_w[i].quit = 1;
    pthread_cond_broadcast(&g.cv);
    int busy = 1;
    int64_t stalled = now_ns() + 500000000;
    while (busy && now_ns() < g.deadline) {
        busy = 0;
        for (int i = 0; i < g_nworkers; i++)
            busy |= g_w[i].head != g_w[i].tail;
        if (busy) {
            pthread_mutex_unlock(&g.mu);
            sleep_ns(1000000);
            if (now_ns() > stalled) {
                rescue();
                stalled = now_ns() + 100000000;
            }
            pthread_mutex_lock(&g.mu);
        }
    }
    pthread_mutex_unlock(&g.mu);
    if (busy)
        hang_report(prog);
    for (int i = 0; i < g_nworkers; i++) {
        pthread_join(g_w[i].th, NULL);
        pthread_mutex_destroy(&g_w[i].c.bmu);
        pthread_cond_destroy(&g_w[i].c.bcv);
    }

    release_everything();

    /* Every thread the program started must leave (daemons once finalize
       told them); then nothing the library allocated may remain. */
    int64_t until = now_ns() + g_program_ns;
    while (count_tasks() > baseline_tasks && now_ns() < until)
        sleep_ns(1000000);
    if (count_tasks() > baseline_tasks)
        fail("%d threads still run after the program's runtimes were finalized",
             count_tasks() - baseline_tasks);
    /* What threads nobody joined (their handles released, daemons) made
       after release_everything's last pass (seed x19: a channel made
       while finalize waited for its thread; seed x20: a thread handle
       made after its pass over the threads, by a daemon that went on
       after its runtime was finalized; seed x25: runtimes a thread made
       after the pass over the runtimes, in a repeat that overflowed its
       frames, so that its own cleanup did not finalize them). */
    release_threads(0, NULL, 0);
    release_runtimes();
    release_objects();
    for (int i = 0; i < g.ngrave; i++)
        probe_dead(g.grave[i].h, g.grave[i].kind);
    for (int i = 0; i < g_nstarts; i++)
        if (g_starts[i]) { /* its thread never ran the function */
            if (g_trace)
                fprintf(stderr, "fuzz_api: %s never ran its function\n",
                        g_starts[i]->c.name);
            pthread_mutex_destroy(&g_starts[i]->c.bmu);
            pthread_cond_destroy(&g_starts[i]->c.bcv);
            free(g_starts[i]);
        }
    long long blocks = atomic_load(&g_blocks[0]) + atomic_load(&g_blocks[1]);
    if (blocks != blocks_before)
        fail("%lld blocks allocated by the library are still live at the end "
             "(%lld before the program)", blocks, blocks_before);
    if (atomic_load(&g_payloads) != 0)
        fail("%ld asynchronous-exception payloads were not destroyed",
             atomic_load(&g_payloads));
    int rc = CALL(tether_set_allocator, &g_allocs[0]);
    if (rc != TETHER_OK)
        fail("tether_set_allocator refused at the end: %s", tether_last_error());
    return 0;
}
