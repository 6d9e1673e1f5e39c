/*
 * test_oom_sweep.c - the allocation-failure sweeps, with exact accounting.
 *
 * SQLite's malloc sweep, applied to every tether operation that allocates:
 * fail allocation 1, then 2, then 3, ... of the operation until it
 * succeeds, once with a transient fault (only allocation n fails) and once
 * with a persistent one (allocation n and every later one fail).  Each
 * failing step must
 *   - return TETHER_ENOMEM with a last-error sentence naming the function
 *     (checked on the thread that called it), and write no out-parameter;
 *   - give back every block it took: the suite counts the library's blocks
 *     through tether_set_allocator, so this is checked exactly in every
 *     build, not only when LeakSanitizer runs at exit;
 *   - leave the runtime usable: the GIL, thread start and join, locks,
 *     events and nested ensure all work right after it.
 * And the sweep must really reach every allocation: it goes on until the
 * operation succeeds, and must have failed at least as many steps as the
 * operation makes allocations when nothing fails (a failure that is
 * swallowed and "succeeds" anyway is reported).
 *
 * Besides the main operations (runtime and interpreter creation, thread
 * start, ensure from a new thread, locks, events, channels, call_soon,
 * callbacks, finalize), it reaches the operations made only from
 * particular states: a second interpreter while attached, its own GIL, a
 * thread object for a foreign thread, a plugin.  The ASan build's leak
 * checker also sees the blocks of libc the counting allocator does not
 * (thread records).  This is the one OOM sweep of the C API (it replaced
 * tests/unit/test_oom.c); the Lua binding's is test_lua_oom_sweep.c.
 */
#include <tether/tether.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "rel.h"
#include "runner.h"
#include "support.h"

enum { MAX_STEPS = 300 };

/* What one attempt runs with: allocation `nth` fails, and `count` - 1
   after it (count 0: all later ones).  nth 0 is the fault-free run. */
typedef struct fault {
    uint64_t nth, count;
} fault;

/* An attempt: runs the operation under `f`, undoes a success, and returns
   the operation's status.  It stores in g_made the number of blocks the
   operation took (the dry run's count is the sweep's target). */
typedef int (*attempt_fn)(const fault *f);

static tether_runtime g_rt;
static tether_interp g_interp, g_second;
static atomic_long g_made;
static long g_before;

static void arm(const fault *f)
{
    g_before = rel_allocs();
    ASSERT_OK(tether_fault_inject(TETHER_FAULT_ALLOC, f->nth, f->count));
}

/* Turns the fault off at once and records what the operation allocated. */
static int disarm(int rc)
{
    ASSERT_OK(tether_fault_inject(TETHER_FAULT_ALLOC, 0, 0));
    atomic_store(&g_made, rel_allocs() - g_before);
    return rc;
}

/* The runtime still works: the GIL, a thread, a lock, an event, nested
   ensure.  Everything it makes it frees, so it must not change the count
   of live blocks either.  (A thread's state goes to its interpreter's
   pool when the thread ends, core/tstate.c "The pool", and the next thread
   takes it from there: the first thread ever run here may leave one block
   in the pool, so the count is taken after one.) */
static void check_usable(void)
{
    ASSERT_EQ(t_join(t_start(g_interp, t_return_arg, RESULT(TETHER_EXIT))),
              TETHER_EXIT);
    long live = rel_live_blocks();
    tether_gilstate st;
    ASSERT_OK(tether_ensure(g_interp, &st));
    ASSERT_OK(tether_checkpoint());
    ASSERT_EQ(t_join(t_start(g_interp, t_return_arg, RESULT(TETHER_EXIT))),
              TETHER_EXIT);
    tether_lock l;
    tether_event e;
    ASSERT_OK(tether_lock_new(&l));
    ASSERT_OK(tether_lock_acquire(l, 0));
    ASSERT_OK(tether_lock_release(l));
    ASSERT_OK(tether_lock_free(l));
    ASSERT_OK(tether_event_new(&e));
    ASSERT_OK(tether_event_set(e));
    ASSERT_OK(tether_event_wait(e, 0));
    ASSERT_OK(tether_event_free(e));
    ASSERT_OK(tether_release(st));
    ASSERT_EQ(rel_live_blocks(), live);
}

/* The name of the function a sweep's `what` ("tether_ensure (new thread)")
   is about: its first word. */
static const char *function_of(const char *what, char *buf, size_t size)
{
    size_t n = strcspn(what, " ");
    if (n >= size)
        n = size - 1;
    memcpy(buf, what, n);
    buf[n] = '\0';
    return buf;
}

/* Sweeps one operation with faults of `count` (1 transient, 0 persistent).
   An attempt on another thread (`remote`) checks the last error there. */
static void sweep_on(const char *what, attempt_fn attempt, uint64_t count,
                     int remote)
{
    char func[64];
    function_of(what, func, sizeof func);
    const fault none = {0, 0};
    ASSERT_OK(attempt(&none)); /* warm caches, grow the handle table */
    ASSERT_OK(attempt(&none));
    long need = atomic_load(&g_made);
    ASSERT(need > 0);
    for (uint64_t n = 1;; n++) {
        if (n > MAX_STEPS)
            runner_fail(__FILE__, __LINE__, "%s never succeeded", what);
        long live = rel_live_blocks();
        int rc = attempt(&(fault){n, count});
        if (rc == TETHER_OK) {
            if ((long)n - 1 < need)
                runner_fail(__FILE__, __LINE__,
                            "%s succeeded with allocation %llu of %ld failing",
                            what, (unsigned long long)n, need);
            break;
        }
        if (rc != TETHER_ENOMEM)
            runner_fail(__FILE__, __LINE__, "%s, allocation %llu failing: got "
                        "%s: %s", what, (unsigned long long)n,
                        tether_status_name(rc), tether_last_error());
        if (!remote && !strstr(tether_last_error(), func))
            runner_fail(__FILE__, __LINE__, "%s, allocation %llu failing: the "
                        "last error does not name %s: \"%s\"", what,
                        (unsigned long long)n, func, tether_last_error());
        if (rel_live_blocks() != live)
            runner_fail(__FILE__, __LINE__, "%s, allocation %llu failing: %ld "
                        "block(s) leaked", what, (unsigned long long)n,
                        rel_live_blocks() - live);
        if (g_rt)
            check_usable();
    }
}

/* An operation that allocates nothing (a new thread's state taken from
   its interpreter's pool): it succeeds with every allocation failing, and
   leaves the count of live blocks as it was. */
static void check_needs_nothing(const char *what, attempt_fn attempt)
{
    const fault none = {0, 0};
    ASSERT_OK(attempt(&none)); /* fills the pool */
    ASSERT_OK(attempt(&none));
    if (atomic_load(&g_made) != 0)
        runner_fail(__FILE__, __LINE__, "%s made %ld block(s), expected none",
                    what, (long)atomic_load(&g_made));
    long live = rel_live_blocks();
    int rc = attempt(&(fault){1, 0});
    if (rc != TETHER_OK)
        runner_fail(__FILE__, __LINE__, "%s, every allocation failing: got "
                    "%s: %s", what, tether_status_name(rc), tether_last_error());
    ASSERT_EQ(rel_live_blocks(), live);
}

static void sweep_both(const char *what, attempt_fn attempt)
{
    sweep_on(what, attempt, 1, 0);
    sweep_on(what, attempt, 0, 0);
}

/* A runtime (and a second interpreter) made with the counting allocator;
   the main thread holds the GIL. */
static void setup(uint32_t flags)
{
    rel_count_allocations();
    tether_config cfg = {sizeof cfg, flags, 0, NULL, NULL};
    ASSERT_OK(tether_runtime_create(&cfg, &g_rt));
    g_interp = t_main_interp(g_rt);
    ASSERT_OK(tether_interp_create(g_rt, &g_second));
}

static void teardown(void)
{
    ASSERT_OK(tether_interp_destroy(g_second, SECONDS(10)));
    t_finalize(g_rt);
    g_rt = 0;
}

/* ------------------------------------------------------------------------
 * Attempts on the calling thread
 * ---------------------------------------------------------------------- */

static uint32_t g_create_flags;

static int try_runtime_create(const fault *f)
{
    tether_runtime rt = UNTOUCHED;
    tether_config cfg = {sizeof cfg, g_create_flags, 0, NULL, NULL};
    arm(f);
    int rc = disarm(tether_runtime_create(&cfg, &rt));
    if (rc == TETHER_OK) {
        t_finalize(rt);
        return rc;
    }
    ASSERT_EQ(rt, UNTOUCHED);
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_CONTAINS(tether_last_error(), "tether_runtime_create");
    return rc;
}

static int try_interp_create(const fault *f)
{
    tether_interp interp = UNTOUCHED;
    arm(f);
    int rc = disarm(tether_interp_create(g_rt, &interp));
    if (rc == TETHER_OK)
        ASSERT_OK(tether_interp_destroy(interp, SECONDS(10)));
    else
        ASSERT_EQ(interp, UNTOUCHED);
    return rc;
}

static tether_thread_opts g_opts;

/* With g_start_fresh, each attempt starts its thread in a new
   interpreter, whose pool of ready states is empty (core/tstate.c, "The
   pool"), so that the thread's state is allocated too. */
static int g_start_fresh;

static int try_thread_start(const fault *f)
{
    tether_interp in = g_interp;
    if (g_start_fresh)
        ASSERT_OK(tether_interp_create(g_rt, &in));
    size_t before = t_thread_count(in);
    tether_thread t = UNTOUCHED;
    arm(f);
    int rc = disarm(tether_thread_start(in, t_return_arg, NULL,
                                        g_opts.size ? &g_opts : NULL, &t));
    if (rc == TETHER_OK) {
        ASSERT_EQ(t_join(t), TETHER_OK);
    } else {
        ASSERT_EQ(t, UNTOUCHED);
        ASSERT_EQ(t_thread_count(in), before);
        ASSERT_CONTAINS(tether_last_error(), "tether_thread_start");
    }
    if (g_start_fresh)
        ASSERT_OK(tether_interp_destroy(in, SECONDS(10)));
    return rc;
}

/* Ensure of an interpreter the caller never used, while attached to the
   main one: a failure must leave the caller attached to the main
   interpreter.  Each attempt uses a new interpreter (destroying it evicts
   the caller's cached state), so each one makes a thread state. */
static int try_ensure_other(const fault *f)
{
    tether_interp other;
    tether_gilstate st = UNTOUCHED;
    ASSERT_OK(tether_interp_create(g_rt, &other));
    arm(f);
    int rc = disarm(tether_ensure(other, &st));
    ASSERT_EQ(tether_gil_held(), 1);
    if (rc == TETHER_OK) {
        ASSERT_OK(tether_release(st));
    } else {
        ASSERT_EQ(st, UNTOUCHED);
        ASSERT_CONTAINS(tether_last_error(), "tether_ensure");
    }
    ASSERT_OK(tether_checkpoint());
    ASSERT_OK(tether_interp_destroy(other, SECONDS(10)));
    return rc;
}

static int try_lock_new(const fault *f)
{
    tether_lock l = UNTOUCHED;
    arm(f);
    int rc = disarm(tether_lock_new(&l));
    if (rc == TETHER_OK)
        ASSERT_OK(tether_lock_free(l));
    else
        ASSERT_EQ(l, UNTOUCHED);
    return rc;
}

static int try_event_new(const fault *f)
{
    tether_event e = UNTOUCHED;
    arm(f);
    int rc = disarm(tether_event_new(&e));
    if (rc == TETHER_OK)
        ASSERT_OK(tether_event_free(e));
    else
        ASSERT_EQ(e, UNTOUCHED);
    return rc;
}

static int try_channel_new(const fault *f)
{
    tether_channel ch = UNTOUCHED;
    arm(f);
    int rc = disarm(tether_channel_new(4, &ch));
    if (rc == TETHER_OK)
        ASSERT_OK(tether_channel_release(ch));
    else
        ASSERT_EQ(ch, UNTOUCHED);
    return rc;
}

static int g_soon_runs;

static int soon(void *arg)
{
    (void)arg;
    g_soon_runs++;
    return TETHER_OK;
}

static int try_call_soon(const fault *f)
{
    int before = g_soon_runs;
    arm(f);
    int rc = disarm(tether_call_soon(g_interp, soon, NULL));
    ASSERT_OK(tether_checkpoint()); /* runs it, if it was queued */
    ASSERT_EQ(g_soon_runs, before + (rc == TETHER_OK));
    return rc;
}

static int guest_noop(void **args, void *ret, void *ud)
{
    (void)args, (void)ret, (void)ud;
    return TETHER_OK;
}

static const char *g_signature = "i32(i32,ptr)";

static int try_callback_new(const fault *f)
{
    tether_callback cb = UNTOUCHED;
    arm(f);
    int rc = disarm(tether_callback_new(g_interp, g_signature, guest_noop,
                                        NULL, &cb));
    if (rc == TETHER_OK)
        ASSERT_OK(tether_callback_free(cb));
    else
        ASSERT_EQ(cb, UNTOUCHED);
    return rc;
}

#ifdef REL_PLUGIN_PATH
static int try_plugin_load(const fault *f)
{
    tether_plugin p = UNTOUCHED;
    arm(f);
    int rc = disarm(tether_plugin_load(g_rt, REL_PLUGIN_PATH, &p));
    if (rc == TETHER_OK)
        ASSERT_OK(tether_plugin_unload(p, SECONDS(10)));
    else
        ASSERT_EQ(p, UNTOUCHED);
    return rc;
}
#endif

/* Finalize's one allocation (its list of the interpreters) failing used
   to close the runtime's handle with its interpreters neither stopped nor
   closed, and returned TETHER_ENOMEM, a status its header did not list:
   the interpreters ran on, and nothing could finalize them any more.  Now
   such a step changes nothing: the caller stays attached, the runtime is
   whole and usable, and it can be finalized again.  Each attempt
   finalizes a runtime of its own. */
static int try_finalize(const fault *f)
{
    tether_interp main_interp;
    tether_runtime rt = t_runtime_main(NULL, &main_interp);
    arm(f);
    int rc = disarm(tether_runtime_finalize(rt, SECONDS(30)));
    if (rc == TETHER_OK) {
        ASSERT_EQ(tether_gil_held(), 0);
        return rc;
    }
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_EQ(t_main_interp(rt), main_interp);
    ASSERT_OK(tether_checkpoint());
    g_interp = main_interp;
    check_usable();
    t_finalize(rt);
    return rc;
}

/* ------------------------------------------------------------------------
 * Attempts on a new pthread (a thread the runtime has never seen)
 * ---------------------------------------------------------------------- */

struct remote {
    const fault *f;
    int rc;
};

/* The interpreter the ensure attempts below make a state of: with
   g_fresh, a new one for each attempt, whose pool is empty, so that the
   state is allocated; else the main one, whose pool holds the state the
   previous attempt's thread left when it exited (core/tstate.c, "The
   pool"). */
static int g_fresh;
static tether_interp g_target;

/* Ensure on a thread with no state: the thread record and the state are
   made now.  The pthread exits afterwards, so each attempt starts afresh. */
static void *ensure_fresh(void *p)
{
    struct remote *r = p;
    tether_gilstate st = UNTOUCHED;
    arm(r->f);
    r->rc = disarm(tether_ensure(g_target, &st));
    if (r->rc == TETHER_OK) {
        ASSERT_OK(tether_release(st));
    } else {
        ASSERT_EQ(st, UNTOUCHED);
        ASSERT_EQ(tether_gil_held(), 0);
        ASSERT_CONTAINS(tether_last_error(), "tether_ensure");
    }
    return NULL;
}

/* A foreign thread attached to the main interpreter ensures another one
   (g_target). */
static void *ensure_second_fresh(void *p)
{
    struct remote *r = p;
    tether_gilstate outer, st = UNTOUCHED;
    ASSERT_OK(tether_ensure(g_interp, &outer));
    arm(r->f);
    r->rc = disarm(tether_ensure(g_target, &st));
    ASSERT_EQ(tether_gil_held(), 1);
    if (r->rc == TETHER_OK)
        ASSERT_OK(tether_release(st));
    else
        ASSERT_EQ(st, UNTOUCHED);
    ASSERT_OK(tether_checkpoint());
    ASSERT_OK(tether_release(outer));
    return NULL;
}

/* A foreign thread asks for its thread object (made on first use). */
static void *current_fresh(void *p)
{
    struct remote *r = p;
    tether_gilstate st;
    tether_thread t = UNTOUCHED;
    ASSERT_OK(tether_ensure(g_interp, &st));
    arm(r->f);
    r->rc = disarm(tether_thread_current(&t));
    if (r->rc == TETHER_OK)
        ASSERT_OK(tether_thread_release(t));
    else
        ASSERT_EQ(t, UNTOUCHED);
    ASSERT_OK(tether_release(st));
    return NULL;
}

static void *(*g_remote_fn)(void *);

static int try_remote(const fault *f)
{
    struct remote r = {f, -1000};
    if (g_fresh)
        ASSERT_OK(tether_interp_create(g_rt, &g_target));
    t_run_foreign(g_remote_fn, &r);
    if (g_fresh) /* frees the pool with the interpreter */
        ASSERT_OK(tether_interp_destroy(g_target, SECONDS(10)));
    return r.rc;
}

/* Sweeps `fn` on new threads; an ensure in it makes its state in `target`,
   or in a new interpreter each time when `target` is 0. */
static void sweep_remote(const char *what, void *(*fn)(void *),
                         tether_interp target)
{
    g_remote_fn = fn;
    g_fresh = target == 0;
    g_target = target;
    sweep_on(what, try_remote, 1, 1);
    sweep_on(what, try_remote, 0, 1);
    g_fresh = 0;
}

/* ------------------------------------------------------------------------
 * Cases
 * ---------------------------------------------------------------------- */

TEST(sweep_runtime_create)
{
    rel_count_allocations();
    sweep_both("tether_runtime_create", try_runtime_create);
    g_create_flags = TETHER_CONFIG_PER_INTERP_GIL;
    sweep_both("tether_runtime_create (per-interp GIL)", try_runtime_create);
}

TEST(sweep_interp_create)
{
    setup(0);
    sweep_both("tether_interp_create", try_interp_create);
    teardown();
}

TEST(sweep_interp_create_own_gil)
{
    setup(TETHER_CONFIG_PER_INTERP_GIL);
    sweep_both("tether_interp_create (per-interp GIL)", try_interp_create);
    teardown();
}

TEST(sweep_thread_start)
{
    setup(0);
    sweep_both("tether_thread_start", try_thread_start);
    g_opts = (tether_thread_opts){sizeof g_opts, "named", 1, 256 * 1024};
    sweep_both("tether_thread_start (named daemon)", try_thread_start);
    g_opts = (tether_thread_opts){0, NULL, 0, 0};
    g_start_fresh = 1;
    sweep_both("tether_thread_start (new interpreter, empty pool)",
               try_thread_start);
    g_start_fresh = 0;
    teardown();
}

TEST(sweep_ensure_new_thread)
{
    setup(0);
    sweep_remote("tether_ensure (new thread)", ensure_fresh, 0);
    /* Once a thread of the interpreter has exited, a new thread's ensure
       takes its state from the pool and allocates nothing. */
    g_remote_fn = ensure_fresh;
    g_target = g_interp;
    check_needs_nothing("tether_ensure (new thread, pooled state)", try_remote);
    teardown();
}

TEST(sweep_ensure_second_interp)
{
    setup(0);
    sweep_both("tether_ensure (second interp)", try_ensure_other);
    sweep_remote("tether_ensure (second interp, new thread)", ensure_second_fresh, 0);
    teardown();
}

TEST(sweep_ensure_second_interp_own_gil)
{
    setup(TETHER_CONFIG_PER_INTERP_GIL);
    sweep_both("tether_ensure (second interp, own GIL)", try_ensure_other);
    sweep_remote("tether_ensure (second interp, own GIL, new thread)",
                 ensure_second_fresh, 0);
    teardown();
}

TEST(sweep_thread_current_foreign)
{
    setup(0);
    sweep_remote("tether_thread_current (foreign thread)", current_fresh, g_interp);
    teardown();
}

TEST(sweep_sync_objects)
{
    setup(0);
    sweep_both("tether_lock_new", try_lock_new);
    sweep_both("tether_event_new", try_event_new);
    sweep_both("tether_channel_new", try_channel_new);
    teardown();
}

TEST(sweep_call_soon)
{
    setup(0);
    sweep_both("tether_call_soon", try_call_soon);
    teardown();
}

TEST(sweep_callback_new)
{
    setup(0);
    sweep_both("tether_callback_new", try_callback_new);
    g_signature = "void(i32)";
    sweep_both("tether_callback_new (void return)", try_callback_new);
    teardown();
}

TEST(sweep_runtime_finalize)
{
    rel_count_allocations();
    sweep_both("tether_runtime_finalize", try_finalize);
}

#ifdef REL_PLUGIN_PATH
TEST(sweep_plugin_load)
{
    setup(0);
    sweep_both("tether_plugin_load", try_plugin_load);
    teardown();
}
#define PLUGIN_CASES , TEST_ENTRY(sweep_plugin_load)
#else
/* TODO(plugins): built only when the sample plugin target exists. */
#define PLUGIN_CASES
#endif

/* The Lua binding's operations (tether.thread, queue, callback, ...) under
   a failing lua_Alloc and a failing tether allocator: test_lua_oom_sweep.c. */

RUNNER_MAIN(TEST_ENTRY(sweep_runtime_create), TEST_ENTRY(sweep_interp_create),
            TEST_ENTRY(sweep_interp_create_own_gil), TEST_ENTRY(sweep_thread_start),
            TEST_ENTRY(sweep_ensure_new_thread), TEST_ENTRY(sweep_ensure_second_interp),
            TEST_ENTRY(sweep_ensure_second_interp_own_gil),
            TEST_ENTRY(sweep_thread_current_foreign), TEST_ENTRY(sweep_sync_objects),
            TEST_ENTRY(sweep_call_soon), TEST_ENTRY(sweep_callback_new),
            TEST_ENTRY(sweep_runtime_finalize) PLUGIN_CASES)
