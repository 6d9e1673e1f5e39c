/*
 * test_thread_fail.c - the OS refuses a thread.
 *
 * TETHER_FAULT_THREAD_CREATE makes pthread_create fail with EAGAIN.  Each
 * case starts a run of threads with the k-th creation failing, for every k
 * (transient: only that one; persistent: that one and every later one),
 * from every kind of caller: the thread that made the runtime, a thread
 * tether started, a foreign thread attached by ensure, and a foreign thread
 * that is not attached at all.  Every refused start must return
 * TETHER_EAGAIN with a sentence, write no handle, leave nothing registered
 * (the thread list and finalize do not see a phantom thread), never reach
 * the excepthook, and give back every block it took; the other starts of
 * the run must work as usual.
 */
#include <tether/tether.h>

#include <pthread.h>
#include <stdatomic.h>

#include "rel.h"
#include "runner.h"
#include "support.h"

enum { RUN = 5 };

static tether_runtime g_rt;
static tether_interp g_interp;
static atomic_int g_ran, g_hooked;

static void hook(tether_thread t, int code, const char *message, void *ud)
{
    (void)t, (void)code, (void)message, (void)ud;
    atomic_fetch_add(&g_hooked, 1);
}

static int hold_until_set(void *arg)
{
    return tether_event_wait((tether_event)(uintptr_t)arg, -1);
}

/* RUN + 1 threads at once, then they end: their states wait in the
   interpreter's pool (core/tstate.c, "The pool"), so a run of RUN starts
   made from a thread that has a state of its own (a tether thread, a
   foreign one attached) takes its states from there and the block counts
   below stay exact (a refused start gives its state back to the pool
   too). */
static void fill_pool(void)
{
    tether_event go;
    tether_thread t[RUN + 1];
    ASSERT_OK(tether_event_new(&go));
    for (int i = 0; i < RUN + 1; i++)
        t[i] = t_start(g_interp, hold_until_set, (void *)(uintptr_t)go);
    ASSERT_OK(tether_event_set(go));
    for (int i = 0; i < RUN + 1; i++)
        ASSERT_EQ(t_join(t[i]), TETHER_OK);
    ASSERT_OK(tether_event_free(go));
}

static void setup(void)
{
    rel_count_allocations();
    tether_config cfg = {sizeof cfg, 0, 0, hook, NULL};
    ASSERT_OK(tether_runtime_create(&cfg, &g_rt));
    g_interp = t_main_interp(g_rt);
    fill_pool();
}

/* No thread was lost or reported, and finalize finds nothing to wait for. */
static void teardown(void)
{
    ASSERT_EQ(atomic_load(&g_hooked), 0);
    ASSERT_OK(tether_runtime_finalize(g_rt, SECONDS(30)));
}

/* A started thread: holds on until the run's event is set. */
static int wait_for_go(void *arg)
{
    atomic_fetch_add(&g_ran, 1);
    return tether_event_wait((tether_event)(uintptr_t)arg, -1);
}

/* Starts RUN threads with creation k failing (and the later ones too when
   `persistent`); checks the refusals, then lets the others finish. */
static void start_run(int k, int persistent, int daemon)
{
    long live = rel_live_blocks();
    tether_event go;
    ASSERT_OK(tether_event_new(&go));
    tether_thread_opts opts = {sizeof opts, NULL, daemon, 0};
    tether_thread t[RUN];
    int started = 0, ran = atomic_load(&g_ran);
    size_t listed = t_thread_count(g_interp);
    ASSERT_OK(tether_fault_inject(TETHER_FAULT_THREAD_CREATE, (uint64_t)k,
                                  persistent ? 0 : 1));
    for (int i = 1; i <= RUN; i++) {
        tether_thread h = UNTOUCHED;
        int rc = tether_thread_start(g_interp, wait_for_go,
                                     (void *)(uintptr_t)go, &opts, &h);
        if (i == k || (persistent && i > k)) {
            ASSERT_STATUS(rc, TETHER_EAGAIN);
            ASSERT_EQ(h, UNTOUCHED);
            ASSERT_CONTAINS(tether_last_error(), "tether_thread_start");
        } else {
            ASSERT_OK(rc);
            t[started++] = h;
        }
    }
    ASSERT_OK(tether_fault_inject(TETHER_FAULT_THREAD_CREATE, 0, 0));
    ASSERT_EQ(t_thread_count(g_interp), listed + (size_t)started);
    ASSERT_OK(tether_event_set(go));
    for (int i = 0; i < started; i++)
        ASSERT_EQ(t_join(t[i]), TETHER_OK);
    ASSERT_EQ(atomic_load(&g_ran), ran + started);
    ASSERT_EQ(t_thread_count(g_interp), listed);
    ASSERT_OK(tether_event_free(go));
    ASSERT_EQ(rel_live_blocks(), live);
}

/* Every position, transient and persistent, daemon and not. */
static void sweep_positions(void)
{
    for (int k = 1; k <= RUN; k++) {
        start_run(k, 0, k % 2);
        start_run(k, 1, (k + 1) % 2);
    }
}

static int sweep_in_thread(void *arg)
{
    (void)arg;
    sweep_positions();
    return TETHER_OK;
}

static void *sweep_attached(void *arg)
{
    (void)arg;
    tether_gilstate st;
    ASSERT_OK(tether_ensure(g_interp, &st));
    sweep_positions();
    ASSERT_OK(tether_release(st));
    return NULL;
}

static void *sweep_unattached(void *arg)
{
    (void)arg;
    ASSERT_EQ(tether_gil_held(), 0);
    sweep_positions();
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(refused_from_main_thread)
{
    setup();
    sweep_positions();
    teardown();
}

TEST(refused_from_tether_thread)
{
    setup();
    ASSERT_EQ(t_join(t_start(g_interp, sweep_in_thread, NULL)), TETHER_OK);
    teardown();
}

TEST(refused_from_foreign_thread)
{
    setup();
    t_run_foreign(sweep_attached, NULL);
    t_run_foreign(sweep_unattached, NULL);
    teardown();
}

/* Allocation faults and a refused thread together: every allocation of the
   start fails in turn while the OS also refuses the thread; each attempt
   fails cleanly with ENOMEM or EAGAIN, whichever comes first. */
TEST(refused_with_allocation_faults)
{
    setup();
    long live = rel_live_blocks();
    for (uint64_t n = 1;; n++) {
        ASSERT(n < 100);
        tether_thread h = UNTOUCHED;
        ASSERT_OK(tether_fault_inject(TETHER_FAULT_ALLOC, n, 1));
        ASSERT_OK(tether_fault_inject(TETHER_FAULT_THREAD_CREATE, 1, 1));
        int rc = tether_thread_start(g_interp, t_return_arg, NULL, NULL, &h);
        ASSERT_OK(tether_fault_inject(TETHER_FAULT_ALLOC, 0, 0));
        ASSERT_OK(tether_fault_inject(TETHER_FAULT_THREAD_CREATE, 0, 0));
        ASSERT_EQ(h, UNTOUCHED);
        ASSERT_EQ(rel_live_blocks(), live);
        if (rc == TETHER_EAGAIN)
            break; /* every allocation came before pthread_create */
        ASSERT_STATUS(rc, TETHER_ENOMEM);
    }
    ASSERT_EQ(t_join(t_start(g_interp, t_return_arg, NULL)), TETHER_OK);
    teardown();
}

RUNNER_MAIN(TEST_ENTRY(refused_from_main_thread), TEST_ENTRY(refused_from_tether_thread),
            TEST_ENTRY(refused_from_foreign_thread),
            TEST_ENTRY(refused_with_allocation_faults))
