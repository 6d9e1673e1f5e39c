/*
 * test_finalize_storm.c - create, run, finalize, 200 times in one process.
 *
 * Each iteration makes a runtime and, while finalize runs, has:
 *   - daemon threads spinning on tether_checkpoint;
 *   - daemon threads blocked in every kind of wait: a lock, an event, a
 *     sleep, a join, a channel receive, and tether_call_blocking (a read on
 *     a pipe, cut short by its unblock function);
 *   - a non-daemon thread that finalize joins;
 *   - foreign pthreads calling tether_ensure/tether_release in a loop, and
 *     one calling an FFI callback in a loop;
 *   - the ticker sample plugin's native threads calling back into guest
 *     code (when the plugin is built).
 * Finalize must return TETHER_OK; every blocked thread must get
 * TETHER_EFINALIZING; every thread, tether's or not, must leave.  Between
 * iterations the process must be back where it started: no OS thread
 * left over, and exactly as many library blocks as before (the suite counts them through
 * tether_set_allocator).  Over the run, the resident size may not grow
 * (iteration 20 against the last, in the builds without a sanitizer).
 */
#include <tether/tether.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "rel.h"
#include "runner.h"
#include "support.h"

enum { ITERATIONS = 200, RSS_FROM = 20, RSS_SLACK_KIB = 8 * 1024 };

enum blocker { SPIN, SPIN2, LOCK, EVENT, SLEEP, JOIN, CHANNEL, BLOCKING, NDAEMON };

static tether_interp g_interp;
static tether_lock g_lock;
static tether_event g_event;
static tether_channel g_channel;
static tether_thread g_daemon[NDAEMON];
static int g_pipe[2];
static atomic_int g_entered, g_left, g_rc[NDAEMON];
static long g_guest_calls;       /* Synchronization: the GIL */

static int read_pipe(void *arg)
{
    (void)arg;
    char c;
    return read(g_pipe[0], &c, 1) == 1 ? TETHER_OK : TETHER_EINVAL;
}

static void poke_pipe(void *arg)
{
    (void)arg;
    char c = 0;
    ASSERT_EQ(write(g_pipe[1], &c, 1), 1);
}

/* The wait each blocker blocks in; a spinner spins. */
static int block_in(enum blocker b)
{
    void *data;
    size_t len;
    int rc;
    switch (b) {
    case SPIN:
    case SPIN2:
        while ((rc = tether_checkpoint()) == TETHER_OK)
            ;
        return rc;
    case LOCK: return tether_lock_acquire(g_lock, -1);
    case EVENT: return tether_event_wait(g_event, -1);
    case SLEEP: return tether_sleep(SECONDS(3600));
    case JOIN: return tether_thread_join(g_daemon[SPIN], -1);
    case CHANNEL: return tether_channel_recv(g_channel, &data, &len, -1);
    case BLOCKING: return tether_call_blocking(read_pipe, NULL, poke_pipe, NULL);
    default: return TETHER_EINVAL;
    }
}

static int daemon_main(void *arg)
{
    enum blocker b = (enum blocker)(intptr_t)arg;
    atomic_fetch_add(&g_entered, 1);
    atomic_store(&g_rc[b], block_in(b));
    atomic_fetch_add(&g_left, 1);
    return TETHER_EXIT;
}

/* A foreign thread: ensure, work, release, until ensure is refused. */
static void *ensure_loop(void *arg)
{
    (void)arg;
    tether_gilstate st;
    int rc;
    atomic_fetch_add(&g_entered, 1);
    while ((rc = tether_ensure(g_interp, &st)) == TETHER_OK) {
        g_guest_calls++;
        (void)tether_checkpoint(); /* EFINALIZING detaches; release still pairs */
        ASSERT_OK(tether_release(st));
    }
    ASSERT(rc == TETHER_EFINALIZING || rc == TETHER_EBADHANDLE);
    return NULL;
}

static int guest(void **args, void *ret, void *ud)
{
    (void)args, (void)ud;
    g_guest_calls++;
    *(int32_t *)ret = 1;
    return TETHER_OK;
}

/* A foreign thread calling a callback in a loop.  The guest returns 1;
   once the interpreter is gone a call returns 0 without running it (and
   the library says so once on stderr), and the loop ends. */
static void *callback_loop(void *arg)
{
    int32_t (*fn)(void);
    *(void **)&fn = arg; /* a code pointer from tether_callback_code */
    atomic_fetch_add(&g_entered, 1);
    while (fn() == 1)
        ;
    return NULL;
}

#ifdef REL_TICKER_PATH
typedef int32_t (*ticker_start_fn)(void (*)(void *, int32_t, int32_t), void *,
                                   int32_t, int32_t, int32_t);

static void tick(void *ud, int32_t thread, int32_t n)
{
    (void)ud, (void)thread, (void)n;
    g_guest_calls++;
}

static tether_plugin start_ticker(tether_runtime rt)
{
    tether_plugin p;
    void *sym;
    ASSERT_OK(tether_plugin_load(rt, REL_TICKER_PATH, &p));
    ASSERT_OK(tether_plugin_symbol(p, "ticker_start", &sym));
    ticker_start_fn start;
    *(void **)&start = sym;
    ASSERT_OK(start(tick, NULL, 2, 1 << 30, 50));
    return p;
}
#endif

struct iteration {
    tether_runtime rt;
    tether_callback cb;
    tether_plugin ticker;
    tether_thread quick;
    pthread_t foreign[3];
};

static void start_everything(struct iteration *it)
{
    atomic_store(&g_entered, 0);
    atomic_store(&g_left, 0);
    it->rt = t_runtime_interval(1000);
    g_interp = t_main_interp(it->rt);
    ASSERT_OK(tether_lock_new(&g_lock));
    ASSERT_OK(tether_lock_acquire(g_lock, 0)); /* held: the LOCK daemon waits */
    ASSERT_OK(tether_event_new(&g_event));
    ASSERT_OK(tether_channel_new(1, &g_channel));
    ASSERT_EQ(pipe(g_pipe), 0);
    for (int b = 0; b < NDAEMON; b++) {
        atomic_store(&g_rc[b], 1000);
        g_daemon[b] = t_start_daemon(g_interp, daemon_main, (void *)(intptr_t)b);
    }
    it->quick = t_start(g_interp, t_return_arg, NULL);
    ASSERT_OK(tether_callback_new(g_interp, "i32()", guest, NULL, &it->cb));
    it->foreign[0] = t_pthread(ensure_loop, NULL);
    it->foreign[1] = t_pthread(ensure_loop, NULL);
    it->foreign[2] = t_pthread(callback_loop, tether_callback_code(it->cb));
#ifdef REL_TICKER_PATH
    it->ticker = start_ticker(it->rt);
#endif
    while (atomic_load(&g_entered) < NDAEMON + 3)
        ASSERT_OK(tether_sleep(MS(1)));
    ASSERT_OK(tether_sleep(MS(2))); /* let the blockers block */
}

static int daemons_left(void *arg)
{
    (void)arg;
    return atomic_load(&g_left) == NDAEMON;
}

/* After finalize: everything leaves, and every resource goes back. */
static void collect_everything(struct iteration *it)
{
    rel_wait_until(daemons_left, NULL, 30, "the daemon threads to leave");
    for (int b = 0; b < NDAEMON; b++)
        ASSERT_STATUS(atomic_load(&g_rc[b]), TETHER_EFINALIZING);
    t_pthread_join(it->foreign[0]);
    t_pthread_join(it->foreign[1]);
    t_pthread_join(it->foreign[2]);
#ifdef REL_TICKER_PATH
    /* finalize unloaded it (its fini joined the ticker's threads) */
    ASSERT_STATUS(tether_plugin_unload(it->ticker, SECONDS(30)),
                  TETHER_EBADHANDLE);
#endif
    ASSERT_OK(tether_callback_free(it->cb));
    for (int b = 0; b < NDAEMON; b++)
        ASSERT_OK(tether_thread_release(g_daemon[b]));
    ASSERT_OK(tether_thread_release(it->quick));
    ASSERT_OK(tether_lock_free(g_lock));
    ASSERT_OK(tether_event_free(g_event));
    ASSERT_OK(tether_channel_release(g_channel));
    close(g_pipe[0]);
    close(g_pipe[1]);
}

static void *nothing(void *arg) { return arg; }

TEST(finalize_storm)
{
    int iterations = runner_rounds(ITERATIONS);
    rel_count_allocations();
#ifdef REL_TICKER_PATH
    dlopen(REL_TICKER_PATH, RTLD_NOW); /* one mapping for the whole run */
#endif
    long blocks = -1, rss_from = 0;
    t_pthread_join(t_pthread(nothing, NULL)); /* TSan starts its own thread */
    int threads = rel_os_threads();
    for (int i = 1; i <= iterations; i++) {
        struct iteration it = {0};
        start_everything(&it);
        ASSERT_OK(tether_runtime_finalize(it.rt, SECONDS(30)));
        ASSERT_EQ(tether_gil_held(), 0);
        collect_everything(&it);
        rel_wait_os_threads(threads);
        if (blocks < 0)
            blocks = rel_live_blocks(); /* after the first: the handle table grew */
        rel_wait_live_blocks(blocks);
        if (i == RSS_FROM)
            rss_from = rel_rss_kib();
    }
    ASSERT(g_guest_calls > 0);
    if (!rel_sanitized() && iterations > RSS_FROM) {
        long grown = rel_rss_kib() - rss_from;
        if (grown > RSS_SLACK_KIB)
            runner_fail(__FILE__, __LINE__, "RSS grew by %ld KiB from iteration "
                        "%d to %d", grown, RSS_FROM, iterations);
    }
}

RUNNER_MAIN(TEST_ENTRY_T(finalize_storm, 600))
