/*
 * test_runtime.c - runtimes and interpreters, configuration, the switch
 * interval, pending calls, GIL statistics, the excepthook, thread user data
 * and the breaker hook.
 */
#include <tether/tether.h>

#include <stddef.h>
#include <unistd.h>

#include "runner.h"
#include "support.h"

static tether_interp g_interp;

/* ------------------------------------------------------------------------
 * Creation, configuration, interpreters
 * ---------------------------------------------------------------------- */

TEST(create_finalize_twice)
{
    for (int i = 0; i < 2; i++) {
        tether_runtime rt = t_runtime(NULL);
        ASSERT_EQ(tether_gil_held(), 1);
        t_finalize(rt);
        ASSERT_EQ(tether_gil_held(), 0);
    }
}

TEST(config_validation)
{
    tether_runtime rt = 0x5e5e;
    tether_config cfg = {.size = sizeof cfg};
    ASSERT_FAILS(tether_runtime_create(NULL, NULL), TETHER_EINVAL,
                 "tether_runtime_create");
    cfg.size = offsetof(tether_config, flags);
    ASSERT_FAILS(tether_runtime_create(&cfg, &rt), TETHER_EINVAL,
                 "tether_runtime_create");
    cfg.size = sizeof cfg;
    cfg.flags = 0x80000000u;
    ASSERT_FAILS(tether_runtime_create(&cfg, &rt), TETHER_EINVAL,
                 "tether_runtime_create");
    ASSERT_EQ(rt, 0x5e5e);
    ASSERT_EQ(tether_gil_held(), 0);

    /* The smallest accepted size: members past it take their defaults. */
    cfg.size = offsetof(tether_config, flags) + sizeof(uint32_t);
    cfg.flags = 0;
    cfg.switch_interval_us = 777;
    rt = t_runtime(&cfg);
    uint32_t us = 0;
    ASSERT_OK(tether_get_switch_interval(rt, &us));
    ASSERT_EQ(us, 5000);

    tether_runtime other = 0x5e5e;
    ASSERT_FAILS(tether_runtime_create(NULL, &other), TETHER_ESTATE,
                 "tether_runtime_create"); /* this thread holds a GIL */
    ASSERT_EQ(other, 0x5e5e);
    t_finalize(rt);
}

TEST(switch_interval)
{
    tether_runtime rt = t_runtime_interval(2500);
    uint32_t us = 0;
    ASSERT_OK(tether_get_switch_interval(rt, &us));
    ASSERT_EQ(us, 2500);
    ASSERT_OK(tether_set_switch_interval(rt, 1));
    ASSERT_OK(tether_set_switch_interval(rt, 10000000));
    ASSERT_FAILS(tether_set_switch_interval(rt, 0), TETHER_EINVAL,
                 "tether_set_switch_interval");
    ASSERT_FAILS(tether_set_switch_interval(rt, 10000001), TETHER_EINVAL,
                 "tether_set_switch_interval");
    ASSERT_FAILS(tether_get_switch_interval(rt, NULL), TETHER_EINVAL,
                 "tether_get_switch_interval");
    ASSERT_OK(tether_get_switch_interval(rt, &us));
    ASSERT_EQ(us, 10000000);
    t_finalize(rt);
}

/* Two runtimes live at once, each made on its own thread. */
static void *second_runtime(void *arg)
{
    (void)arg;
    tether_runtime rt = t_runtime(NULL);
    ASSERT_EQ(tether_gil_held(), 1);
    t_finalize(rt);
    return NULL;
}

TEST(two_runtimes)
{
    tether_runtime rt = t_runtime(NULL);
    t_pthread_join(t_pthread(second_runtime, NULL)); /* our GIL stays held */
    ASSERT_EQ(tether_gil_held(), 1);
    t_finalize(rt);
}

/* Two runtimes finalized crosswise: each finalizer is attached to, and
   holds the GIL of, the runtime the other finalizes.  Finalize waits for
   each GIL of its runtime (and for its non-daemon threads), so it must not
   hold another runtime's GIL while it waits: both calls deadlocked, found
   by api_fuzz.  Each call returns OK, or EFINALIZING when its caller's own
   runtime began finalizing before the caller could attach to it again. */
static struct {
    pthread_barrier_t made;
    tether_runtime rt[2];
    int rc[2];
} g_cross;

static void *finalize_the_other(void *arg)
{
    int me = (int)(intptr_t)arg;
    g_cross.rt[me] = t_runtime(NULL); /* attached to it, holding its GIL */
    pthread_barrier_wait(&g_cross.made);
    int rc = tether_runtime_finalize(g_cross.rt[!me], SECONDS(30));
    g_cross.rc[me] = rc;
    if (rc == TETHER_OK) { /* attached again: let the other finalize through */
        ASSERT_EQ(tether_gil_held(), 1);
        tether_tstate saved;
        ASSERT_OK(tether_save_thread(&saved));
    } else {
        ASSERT_EQ(rc, TETHER_EFINALIZING);
        ASSERT_CONTAINS(tether_last_error(), "tether_runtime_finalize");
    }
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(finalize_crosswise)
{
    ASSERT_EQ(pthread_barrier_init(&g_cross.made, NULL, 2), 0);
    pthread_t a = t_pthread(finalize_the_other, (void *)(intptr_t)0);
    pthread_t b = t_pthread(finalize_the_other, (void *)(intptr_t)1);
    t_pthread_join(a);
    t_pthread_join(b);
    pthread_barrier_destroy(&g_cross.made);
    for (int i = 0; i < 2; i++) {
        ASSERT(g_cross.rc[i] == TETHER_OK || g_cross.rc[i] == TETHER_EFINALIZING);
        ASSERT_FAILS(tether_runtime_finalize(g_cross.rt[i], 0), TETHER_EBADHANDLE,
                     "tether_runtime_finalize");
    }
}

/* Finalize is not a checkpoint of the caller's own runtime: an exception
   raised at the caller while it joins another runtime's threads stays
   pending for the caller's next checkpoint.  The join ran as a wait of
   the caller's state, saw the exception, and finalize answered
   TETHER_ETIMEDOUT with no deadline. */
static tether_thread g_finalizer;
static tether_interp g_mine; /* the finalizer's interpreter */

static int raise_at_finalizer(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_thread_raise(g_finalizer, 42, NULL, NULL));
    /* The finalizer's GIL is free only once it waits: this thread ends
       after finalize has begun to join it. */
    tether_gilstate st;
    ASSERT_OK(tether_ensure(g_mine, &st));
    ASSERT_OK(tether_release(st));
    return TETHER_OK;
}

static void *runtime_with_thread(void *arg)
{
    tether_runtime rt = t_runtime(NULL);
    ASSERT_OK(tether_thread_release(t_start(t_main_interp(rt), raise_at_finalizer,
                                            NULL)));
    tether_tstate saved;
    ASSERT_OK(tether_save_thread(&saved)); /* this thread leaves the runtime */
    *(tether_runtime *)arg = rt;
    return NULL;
}

TEST(finalize_leaves_the_callers_exception_pending)
{
    tether_runtime mine = t_runtime_main(NULL, &g_mine), other;
    ASSERT_OK(tether_thread_current(&g_finalizer));
    t_pthread_join(t_pthread(runtime_with_thread, &other));
    ASSERT_OK(tether_runtime_finalize(other, -1));
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_STATUS(tether_checkpoint(), TETHER_EASYNC);
    int64_t code = 0;
    ASSERT_OK(tether_async_fetch(&code, NULL, NULL));
    ASSERT_EQ(code, 42);
    ASSERT_OK(tether_thread_release(g_finalizer));
    t_finalize(mine);
}

static int count_to_ten(void *arg)
{
    for (int i = 0; i < 10; i++) {
        ASSERT_OK(tether_checkpoint());
        atomic_fetch_add((atomic_int *)arg, 1);
    }
    return TETHER_OK;
}

TEST(interp_lifecycle)
{
    tether_runtime rt = t_runtime(NULL);
    tether_interp second = 0;
    atomic_int counter = 0;
    ASSERT_FAILS(tether_interp_create(rt, NULL), TETHER_EINVAL,
                 "tether_interp_create");
    ASSERT_OK(tether_interp_create(rt, &second));
    ASSERT_EQ(t_join(t_start(second, count_to_ten, &counter)), TETHER_OK);
    ASSERT_EQ(atomic_load(&counter), 10);

    tether_gilstate st;
    ASSERT_OK(tether_ensure(second, &st));
    ASSERT_FAILS(tether_interp_destroy(second, 0), TETHER_ESTATE,
                 "tether_interp_destroy"); /* attached to it */
    ASSERT_OK(tether_release(st));
    ASSERT_FAILS(tether_interp_destroy(t_main_interp(rt), 0), TETHER_EINVAL,
                 "tether_interp_destroy");
    ASSERT_OK(tether_interp_destroy(second, SECONDS(10)));
    ASSERT_FAILS(tether_interp_destroy(second, 0), TETHER_EBADHANDLE,
                 "tether_interp_destroy");
    t_finalize(rt);
}

/* Finalize from a thread the runtime started is refused. */
static tether_runtime g_rt;

static int finalize_from_inside(void *arg)
{
    (void)arg;
    ASSERT_FAILS(tether_runtime_finalize(g_rt, 0), TETHER_ESTATE,
                 "tether_runtime_finalize");
    return TETHER_OK;
}

TEST(finalize_from_runtime_thread)
{
    g_rt = t_runtime(NULL);
    ASSERT_EQ(t_join(t_start(t_main_interp(g_rt), finalize_from_inside, NULL)),
              TETHER_OK);
    t_finalize(g_rt);
}

/* ------------------------------------------------------------------------
 * Pending calls
 * ---------------------------------------------------------------------- */

static pthread_t g_main_thread;
static int g_calls[8]; /* written under the GIL, on the main thread */
static int g_ncalls;

static int pending(void *arg)
{
    ASSERT(pthread_equal(pthread_self(), g_main_thread));
    ASSERT_EQ(tether_gil_held(), 1);
    g_calls[g_ncalls++] = (int)(intptr_t)arg;
    return (int)(intptr_t)arg == 3 ? TETHER_ETIMEDOUT : TETHER_OK;
}

static void *queue_calls(void *arg)
{
    (void)arg;
    for (intptr_t i = 1; i <= 3; i++)
        ASSERT_OK(tether_call_soon(g_interp, pending, (void *)i));
    return NULL;
}

TEST(call_soon_from_foreign_thread)
{
    tether_runtime rt = t_runtime_main(NULL, &g_interp);
    g_main_thread = pthread_self();
    t_pthread_join(t_pthread(queue_calls, NULL)); /* we keep the GIL */
    ASSERT_EQ(g_ncalls, 0);
    /* One checkpoint runs all three in order; the third one's error is the
       checkpoint's result. */
    ASSERT_STATUS(tether_checkpoint(), TETHER_ETIMEDOUT);
    ASSERT_EQ(g_ncalls, 3);
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(g_calls[i], i + 1);
    ASSERT_OK(tether_checkpoint());
    ASSERT_FAILS(tether_call_soon(g_interp, NULL, NULL), TETHER_EINVAL,
                 "tether_call_soon");
    t_finalize(rt);
}

/* A call queued by a started thread runs on the main thread, not on the
   thread that queued it, even when that thread checkpoints. */
static int queue_and_checkpoint(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_call_soon(g_interp, pending, (void *)(intptr_t)1));
    for (int i = 0; i < 1000; i++)
        ASSERT_OK(tether_checkpoint());
    return TETHER_OK;
}

TEST(call_soon_runs_on_main_thread)
{
    tether_runtime rt = t_runtime_main(NULL, &g_interp);
    g_main_thread = pthread_self();
    ASSERT_EQ(t_join(t_start(g_interp, queue_and_checkpoint, NULL)), TETHER_OK);
    for (int i = 0; i < 10 && g_ncalls == 0; i++)
        ASSERT_OK(tether_checkpoint());
    ASSERT_EQ(g_ncalls, 1);
    t_finalize(rt);
}

/* A call that queues itself again runs once per checkpoint, not for ever:
   a checkpoint runs only the calls queued before it began (as CPython
   does), so the GIL can change hands between them. */
static int g_requeues;

static int requeue_self(void *arg)
{
    (void)arg;
    if (++g_requeues < 1000)
        ASSERT_OK(tether_call_soon(g_interp, requeue_self, NULL));
    return TETHER_OK;
}

TEST(call_soon_requeued_runs_at_next_checkpoint)
{
    tether_runtime rt = t_runtime_main(NULL, &g_interp);
    ASSERT_OK(tether_call_soon(g_interp, requeue_self, NULL));
    ASSERT_OK(tether_checkpoint());
    ASSERT_EQ(g_requeues, 1);
    ASSERT_OK(tether_checkpoint());
    ASSERT_EQ(g_requeues, 2);
    t_finalize(rt); /* drops the queued one */
    ASSERT_EQ(g_requeues, 2);
}

/* A pending call may finalize the runtime of the thread running it: the
   checkpoint then answers EFINALIZING with the thread detached, and
   touches neither its freed thread state nor the interpreter; the calls
   queued behind it are dropped. */
static tether_runtime g_pending_rt;
static int g_after_finalize;

static int finalize_from_pending(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_runtime_finalize(g_pending_rt, SECONDS(30)));
    ASSERT_EQ(tether_gil_held(), 0);
    return TETHER_OK;
}

static int count_after_finalize(void *arg)
{
    (void)arg;
    g_after_finalize++;
    return TETHER_OK;
}

TEST(call_soon_that_finalizes)
{
    g_pending_rt = t_runtime_main(NULL, &g_interp);
    ASSERT_OK(tether_call_soon(g_interp, finalize_from_pending, NULL));
    ASSERT_OK(tether_call_soon(g_interp, count_after_finalize, NULL));
    ASSERT_FAILS(tether_checkpoint(), TETHER_EFINALIZING, "tether_checkpoint");
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_EQ(g_after_finalize, 0);
    /* The thread is free to make a new runtime. */
    t_finalize(t_runtime(NULL));
}

/* ------------------------------------------------------------------------
 * GIL statistics
 * ---------------------------------------------------------------------- */

/* Two threads checkpoint until each has had the GIL five separate times,
   which takes at least ten switches. */
static int g_last_turn = -1; /* Synchronization: gil. */
static int g_turns[2];       /* Synchronization: gil. */

static int take_turns(void *arg)
{
    int me = (int)(intptr_t)arg;
    while (g_turns[0] < 5 || g_turns[1] < 5) {
        if (g_last_turn != me) {
            g_last_turn = me;
            g_turns[me]++;
        }
        ASSERT_OK(tether_checkpoint());
    }
    return TETHER_OK;
}

TEST(gil_stats_move)
{
    tether_runtime rt = t_runtime_interval(100);
    g_interp = t_main_interp(rt);
    tether_gil_stats before = t_gil_stats(g_interp);
    tether_thread a = t_start(g_interp, take_turns, (void *)(intptr_t)0);
    tether_thread b = t_start(g_interp, take_turns, (void *)(intptr_t)1);
    ASSERT_EQ(t_join(a), TETHER_OK);
    ASSERT_EQ(t_join(b), TETHER_OK);
    tether_gil_stats after = t_gil_stats(g_interp);
    ASSERT(after.acquisitions >= before.acquisitions + 10);
    ASSERT(after.switches >= before.switches + 10);
    ASSERT(after.forced_drops >= before.forced_drops + 1);
    ASSERT(after.wait_ns_max <= after.wait_ns_total);

    /* Only out->size bytes are written. */
    tether_gil_stats part;
    memset(&part, 0x5e, sizeof part);
    part.size = offsetof(tether_gil_stats, switches);
    ASSERT_OK(tether_gil_stats_get(g_interp, &part));
    ASSERT(part.acquisitions >= after.acquisitions);
    ASSERT_EQ(part.switches, 0x5e5e5e5e5e5e5e5eull);
    ASSERT_FAILS(tether_gil_stats_get(g_interp, NULL), TETHER_EINVAL,
                 "tether_gil_stats_get");
    t_finalize(rt);
}

/* ------------------------------------------------------------------------
 * The excepthook
 * ---------------------------------------------------------------------- */

static struct {
    atomic_int calls;
    atomic_int code;
    atomic_int held;
    atomic_uint_fast64_t ident;
    char message[256];
} g_hook;

static void excepthook(tether_thread t, int code, const char *message, void *ud)
{
    ASSERT(ud == &g_hook);
    atomic_store(&g_hook.held, tether_gil_held());
    uint64_t ident = 0;
    ASSERT_OK(tether_thread_ident(t, &ident));
    atomic_store(&g_hook.ident, ident);
    snprintf(g_hook.message, sizeof g_hook.message, "%s", message);
    atomic_store(&g_hook.code, code);
    atomic_fetch_add(&g_hook.calls, 1);
}

/* Fails with the status of a failing tether call, as a guest would. */
static int fails(void *arg)
{
    (void)arg;
    return tether_lock_release(0);
}

TEST(excepthook_called)
{
    tether_config cfg = {.size = sizeof cfg, .excepthook = excepthook,
                         .excepthook_ud = &g_hook};
    tether_runtime rt = t_runtime_main(&cfg, &g_interp);

    ASSERT_EQ(t_join(t_start(g_interp, t_return_arg, RESULT(TETHER_EXIT))),
              TETHER_EXIT);
    ASSERT_EQ(t_join(t_start(g_interp, t_return_arg, RESULT(TETHER_OK))),
              TETHER_OK);
    ASSERT_EQ(atomic_load(&g_hook.calls), 0);

    tether_thread t = t_start(g_interp, fails, NULL);
    uint64_t ident = 0;
    ASSERT_OK(tether_thread_ident(t, &ident));
    ASSERT_EQ(t_join(t), TETHER_EBADHANDLE);
    ASSERT_EQ(atomic_load(&g_hook.calls), 1);
    ASSERT_STATUS(atomic_load(&g_hook.code), TETHER_EBADHANDLE);
    ASSERT_EQ(atomic_load(&g_hook.held), 1);
    ASSERT_EQ(atomic_load(&g_hook.ident), ident);
    ASSERT_CONTAINS(g_hook.message, "tether_lock_release");
    t_finalize(rt);
}

/* Without a hook, one line naming the thread goes to stderr. */
TEST(default_excepthook)
{
    tether_runtime rt = t_runtime_main(NULL, &g_interp);
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    ASSERT_EQ(dup2(fds[1], STDERR_FILENO), STDERR_FILENO);
    close(fds[1]);

    tether_thread_opts opts = {.size = sizeof opts, .name = "boom-thread"};
    tether_thread t = t_start_opts(g_interp, t_return_arg,
                                   RESULT(TETHER_EINVAL), &opts);
    int rc = t_join(t);
    t = t_start_opts(g_interp, t_return_arg, RESULT(TETHER_EXIT), &opts);
    int rc2 = t_join(t);

    ASSERT_EQ(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    char *out = t_read_all(fds[0]);
    close(fds[0]);
    ASSERT_EQ(rc, TETHER_EINVAL);
    ASSERT_EQ(rc2, TETHER_EXIT);
    ASSERT_CONTAINS(out, "boom-thread");
    ASSERT(strchr(out, '\n') == out + strlen(out) - 1); /* one line */
    free(out);
    t_finalize(rt);
}

/* ------------------------------------------------------------------------
 * User data and the breaker hook
 * ---------------------------------------------------------------------- */

static void *userdata_unattached(void *arg)
{
    (void)arg;
    void *ud = NULL;
    ASSERT_FAILS(tether_set_thread_userdata(&ud), TETHER_ESTATE,
                 "tether_set_thread_userdata");
    ASSERT_FAILS(tether_get_thread_userdata(&ud), TETHER_ESTATE,
                 "tether_get_thread_userdata");
    return NULL;
}

TEST(thread_userdata)
{
    static int mine;
    tether_runtime rt = t_runtime(NULL);
    void *ud = &ud;
    ASSERT_OK(tether_get_thread_userdata(&ud));
    ASSERT(ud == NULL);
    ASSERT_OK(tether_set_thread_userdata(&mine));
    ASSERT_OK(tether_get_thread_userdata(&ud));
    ASSERT(ud == &mine);
    ASSERT_FAILS(tether_get_thread_userdata(NULL), TETHER_EINVAL,
                 "tether_get_thread_userdata");
    t_run_foreign(userdata_unattached, NULL);
    t_finalize(rt);
}

static struct {
    atomic_int calls;
    _Atomic(void *) thread_ud;
} g_breaker;

static void breaker(void *thread_ud, void *ud)
{
    ASSERT(ud == &g_breaker);
    atomic_store(&g_breaker.thread_ud, thread_ud);
    atomic_fetch_add(&g_breaker.calls, 1);
}

static int noop(void *arg)
{
    (void)arg;
    return TETHER_OK;
}

static void *queue_noop(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_call_soon(g_interp, noop, NULL));
    return NULL;
}

/* A pending call for the holder of the GIL calls the hook with the
   holder's user data; once removed, the hook is not called. */
TEST(breaker_hook)
{
    static int main_ud;
    tether_runtime rt = t_runtime_main(NULL, &g_interp);
    ASSERT_OK(tether_set_thread_userdata(&main_ud));
    ASSERT_OK(tether_interp_set_breaker_hook(g_interp, breaker, &g_breaker));
    t_pthread_join(t_pthread(queue_noop, NULL));
    ASSERT(atomic_load(&g_breaker.calls) >= 1);
    ASSERT(atomic_load(&g_breaker.thread_ud) == &main_ud);
    ASSERT_OK(tether_checkpoint());

    ASSERT_OK(tether_interp_set_breaker_hook(g_interp, NULL, NULL));
    int calls = atomic_load(&g_breaker.calls);
    t_pthread_join(t_pthread(queue_noop, NULL));
    ASSERT_OK(tether_checkpoint());
    ASSERT_EQ(atomic_load(&g_breaker.calls), calls);
    t_finalize(rt);
}

RUNNER_MAIN(TEST_ENTRY(create_finalize_twice), TEST_ENTRY(config_validation),
            TEST_ENTRY(switch_interval), TEST_ENTRY(two_runtimes),
            TEST_ENTRY(finalize_crosswise),
            TEST_ENTRY(finalize_leaves_the_callers_exception_pending),
            TEST_ENTRY(interp_lifecycle), TEST_ENTRY(finalize_from_runtime_thread),
            TEST_ENTRY(call_soon_from_foreign_thread),
            TEST_ENTRY(call_soon_runs_on_main_thread), TEST_ENTRY(gil_stats_move),
            TEST_ENTRY(call_soon_requeued_runs_at_next_checkpoint),
            TEST_ENTRY(call_soon_that_finalizes),
            TEST_ENTRY(excepthook_called), TEST_ENTRY(default_excepthook),
            TEST_ENTRY(thread_userdata), TEST_ENTRY(breaker_hook))
