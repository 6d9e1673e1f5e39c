/*
 * test_oom.c - out-of-memory sweeps: each operation is run with its first,
 * second, third, ... allocation failing until it succeeds.  Every failing
 * step must return TETHER_ENOMEM, write no out-parameter and change
 * nothing; the ASan build's leak checker sees anything a step leaked.
 */
#include <tether/tether.h>

#include "runner.h"
#include "support.h"

#define UNTOUCHED 0x5e5e5e5eu
enum { MAX_STEPS = 200 };

static tether_runtime g_rt;
static tether_interp g_interp;

/* One attempt of an operation: returns its status, undoing a success.  It
   passes the operation's status through disarm() at once, so the checks
   and the undoing run without failing allocations. */
typedef int (*attempt_fn)(void);

static int disarm(int rc)
{
    ASSERT_OK(tether_fault_inject(TETHER_FAULT_ALLOC, 0, 0));
    return rc;
}

/* Runs `attempt` with allocation n failing, for n = 1, 2, ... until it
   succeeds; each failure must leave a sentence naming `what` (on the
   attempt's own thread, which checks it if it is not this one).  Returns
   the number of failing steps. */
static int sweep(const char *what, attempt_fn attempt, int remote)
{
    for (int n = 1; n <= MAX_STEPS; n++) {
        ASSERT_OK(tether_fault_inject(TETHER_FAULT_ALLOC, (uint64_t)n, 1));
        int rc = attempt();
        if (rc == TETHER_OK)
            return n - 1;
        if (rc != TETHER_ENOMEM)
            runner_fail(__FILE__, __LINE__, "%s, allocation %d failing: got %s: %s",
                        what, n, tether_status_name(rc), tether_last_error());
        if (!remote)
            ASSERT_CONTAINS(tether_last_error(), what);
    }
    runner_fail(__FILE__, __LINE__, "%s never succeeded", what);
}

static void setup(void)
{
    g_rt = t_runtime(NULL);
    g_interp = t_main_interp(g_rt);
}

/* ------------------------------------------------------------------------
 * Attempts
 * ---------------------------------------------------------------------- */

static int try_runtime(void)
{
    tether_runtime rt = UNTOUCHED;
    int rc = disarm(tether_runtime_create(NULL, &rt));
    if (rc != TETHER_OK) {
        ASSERT_EQ(rt, UNTOUCHED);
        ASSERT_EQ(tether_gil_held(), 0);
        return rc;
    }
    t_finalize(rt);
    return rc;
}

static int try_interp(void)
{
    tether_interp interp = UNTOUCHED;
    int rc = disarm(tether_interp_create(g_rt, &interp));
    if (rc != TETHER_OK) {
        ASSERT_EQ(interp, UNTOUCHED);
        return rc;
    }
    ASSERT_OK(tether_interp_destroy(interp, SECONDS(10)));
    return rc;
}

static int try_thread(void)
{
    size_t before = t_thread_count(g_interp);
    tether_thread t = UNTOUCHED;
    int rc = disarm(tether_thread_start(g_interp, t_return_arg, RESULT(TETHER_EXIT),
                                        NULL, &t));
    if (rc != TETHER_OK) {
        ASSERT_EQ(t, UNTOUCHED);
        ASSERT_EQ(t_thread_count(g_interp), before);
        return rc;
    }
    ASSERT_EQ(t_join(t), TETHER_EXIT);
    return rc;
}

static int try_lock(void)
{
    tether_lock l = UNTOUCHED;
    int rc = disarm(tether_lock_new(&l));
    if (rc != TETHER_OK)
        ASSERT_EQ(l, UNTOUCHED);
    else
        ASSERT_OK(tether_lock_free(l));
    return rc;
}

static int try_event(void)
{
    tether_event e = UNTOUCHED;
    int rc = disarm(tether_event_new(&e));
    if (rc != TETHER_OK)
        ASSERT_EQ(e, UNTOUCHED);
    else
        ASSERT_OK(tether_event_free(e));
    return rc;
}

static int try_channel(void)
{
    tether_channel ch = UNTOUCHED;
    int rc = disarm(tether_channel_new(2, &ch));
    if (rc != TETHER_OK)
        ASSERT_EQ(ch, UNTOUCHED);
    else
        ASSERT_OK(tether_channel_release(ch));
    return rc;
}

static int g_called;

static int pending(void *arg)
{
    (void)arg;
    g_called++;
    return TETHER_OK;
}

static int try_call_soon(void)
{
    int rc = disarm(tether_call_soon(g_interp, pending, NULL));
    int before = g_called;
    ASSERT_OK(tether_checkpoint());
    ASSERT_EQ(g_called, before + (rc == TETHER_OK));
    return rc;
}

static int guest(void **args, void *ret, void *ud)
{
    (void)args;
    (void)ret;
    (void)ud;
    return TETHER_OK;
}

static int try_callback(void)
{
    tether_callback cb = UNTOUCHED;
    int rc = disarm(tether_callback_new(g_interp, "void(i32)", guest, NULL, &cb));
    if (rc != TETHER_OK)
        ASSERT_EQ(cb, UNTOUCHED);
    else
        ASSERT_OK(tether_callback_free(cb));
    return rc;
}

/* Ensure on a thread that has no thread state yet creates one.  Each
   attempt runs on a new pthread, so each one starts from nothing. */
static atomic_int g_ensure_rc;

static void *ensure_fresh(void *arg)
{
    (void)arg;
    tether_gilstate st = UNTOUCHED;
    int rc = disarm(tether_ensure(g_interp, &st));
    if (rc == TETHER_OK) {
        ASSERT_OK(tether_release(st));
    } else {
        ASSERT_EQ(st, UNTOUCHED);
        ASSERT_EQ(tether_gil_held(), 0);
        ASSERT_CONTAINS(tether_last_error(), "tether_ensure");
    }
    atomic_store(&g_ensure_rc, rc);
    return NULL;
}

static int try_ensure(void)
{
    t_pthread_join(t_pthread(ensure_fresh, NULL));
    return atomic_load(&g_ensure_rc);
}

/* ------------------------------------------------------------------------
 * Cases
 * ---------------------------------------------------------------------- */

TEST(oom_runtime_create) { ASSERT(sweep("tether_runtime_create", try_runtime, 0) > 0); }

TEST(oom_interp_create)
{
    setup();
    ASSERT(sweep("tether_interp_create", try_interp, 0) > 0);
    t_finalize(g_rt);
}

TEST(oom_thread_start)
{
    setup();
    ASSERT(sweep("tether_thread_start", try_thread, 0) > 0);
    t_finalize(g_rt);
}

TEST(oom_sync_objects)
{
    setup();
    ASSERT(sweep("tether_lock_new", try_lock, 0) > 0);
    ASSERT(sweep("tether_event_new", try_event, 0) > 0);
    ASSERT(sweep("tether_channel_new", try_channel, 0) > 0);
    t_finalize(g_rt);
}

TEST(oom_call_soon)
{
    setup();
    ASSERT(sweep("tether_call_soon", try_call_soon, 0) > 0);
    t_finalize(g_rt);
}

TEST(oom_callback_new)
{
    setup();
    ASSERT(sweep("tether_callback_new", try_callback, 0) > 0);
    t_finalize(g_rt);
}

TEST(oom_ensure_new_thread)
{
    setup();
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    ASSERT(sweep("tether_ensure", try_ensure, 1) > 0);
    ASSERT_OK(tether_restore_thread(ts));
    t_finalize(g_rt);
}

/* Finalize's one allocation (its list of the interpreters) failing used
   to close the runtime's handle with its interpreters neither stopped nor
   closed, and returned TETHER_ENOMEM, a status its header did not list:
   the interpreters ran on, and nothing could finalize them any more.  Now
   such a step changes nothing: the caller stays attached and the runtime
   can be finalized again. */
static int try_finalize(void)
{
    int rc = disarm(tether_runtime_finalize(g_rt, SECONDS(30)));
    if (rc != TETHER_OK) {
        ASSERT_EQ(tether_gil_held(), 1);
        tether_interp interp = 0;
        ASSERT_OK(tether_runtime_main_interp(g_rt, &interp));
        ASSERT_EQ(interp, g_interp);
        ASSERT_OK(tether_checkpoint());
        return rc;
    }
    ASSERT_EQ(tether_gil_held(), 0);
    return rc;
}

TEST(oom_finalize)
{
    setup();
    ASSERT(sweep("tether_runtime_finalize", try_finalize, 0) > 0);
}

RUNNER_MAIN(TEST_ENTRY(oom_runtime_create), TEST_ENTRY(oom_interp_create),
            TEST_ENTRY(oom_thread_start), TEST_ENTRY(oom_sync_objects),
            TEST_ENTRY(oom_call_soon), TEST_ENTRY(oom_callback_new),
            TEST_ENTRY(oom_ensure_new_thread),
            TEST_ENTRY(oom_finalize))
