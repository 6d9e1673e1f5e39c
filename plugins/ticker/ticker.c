/*
 * ticker - a plugin whose own native threads call back into guest code.
 *
 * ticker_start(fn, ud, nthreads, ticks, interval_us) starts `nthreads`
 * pthreads that the runtime knows nothing about.  Each calls
 * fn(ud, thread, tick) `ticks` times, `interval_us` apart, holding the GIL
 * of the interpreter the plugin was loaded into: it takes it with
 * host->ensure and hands it back with host->release around every call, as
 * any foreign thread must.  ticker_wait joins them; fini stops and joins
 * them, which is what makes the plugin safe to dlclose (it sets
 * TETHER_PLUGIN_UNLOADABLE).
 *
 * The plugin reaches libtether only through the host API table; it does
 * not link it.  One run at a time, in one runtime at a time.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include <tether/tether_plugin.h>

typedef void (*ticker_fn)(void *ud, int32_t thread, int32_t tick);

/* The plugin's state.  Every field is written under `mu`; the workers read
   host, interp and the run's parameters without it, since those are set
   before the workers start and stay until they are joined.  `cv` (on
   CLOCK_MONOTONIC) is broadcast when stopping is requested, when a worker
   finishes, and when a wait is interrupted. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const tether_host_api *host; /* set by init, cleared by fini */
    tether_interp interp;
    /* The run in progress, set by ticker_start. */
    ticker_fn fn;
    void *ud;
    int32_t ticks, interval_us;
    pthread_t *workers;
    int32_t nworkers;
    int32_t running;   /* workers that have not finished */
    int64_t delivered; /* calls of fn that returned */
    bool stopping;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Sleeps `us` microseconds unless stopping is requested meanwhile.
   Returns true when stopping.  Called with g.mu held. */
static bool pause_or_stop(int32_t us)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += (long)(us % 1000000) * 1000;
    until.tv_sec += us / 1000000 + until.tv_nsec / 1000000000;
    until.tv_nsec %= 1000000000;
    while (!g.stopping && us > 0)
        if (pthread_cond_timedwait(&g.cv, &g.mu, &until) != 0)
            break;
    return g.stopping;
}

static void *worker_main(void *arg)
{
    int32_t no = (int32_t)(intptr_t)arg;
    pthread_mutex_lock(&g.mu);
    for (int32_t k = 0; k < g.ticks && !pause_or_stop(g.interval_us); k++) {
        pthread_mutex_unlock(&g.mu);
        tether_gilstate st;
        bool ok = g.host->ensure(g.interp, &st) == TETHER_OK;
        if (ok) {
            g.fn(g.ud, no, k);
            g.host->release(st);
        }
        pthread_mutex_lock(&g.mu);
        if (!ok)
            break; /* the interpreter is shutting down */
        g.delivered++;
    }
    g.running--;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    return NULL;
}

/* Joins and forgets the workers of the last run, which have finished or
   are stopping. */
static void join_workers(void)
{
    pthread_mutex_lock(&g.mu);
    pthread_t *workers = g.workers;
    int32_t n = g.nworkers;
    g.workers = NULL;
    g.nworkers = 0;
    pthread_mutex_unlock(&g.mu);
    for (int32_t i = 0; i < n; i++)
        pthread_join(workers[i], NULL);
    free(workers);
}

/* Starts the run: nthreads workers, each calling fn(ud, thread, tick)
   `ticks` times, `interval_us` apart.  Returns TETHER_OK, TETHER_EINVAL,
   TETHER_ESTATE (not loaded, or the last run was not waited for),
   TETHER_EAGAIN (no more threads; the ones started are stopped). */
TETHER_PLUGIN_EXPORT int32_t ticker_start(ticker_fn fn, void *ud,
                                          int32_t nthreads, int32_t ticks,
                                          int32_t interval_us)
{
    if (!fn || nthreads <= 0 || ticks < 0 || interval_us < 0)
        return TETHER_EINVAL;
    pthread_mutex_lock(&g.mu);
    int32_t rc = !g.host || g.workers ? TETHER_ESTATE : TETHER_OK;
    if (rc == TETHER_OK && !(g.workers = calloc((size_t)nthreads, sizeof *g.workers)))
        rc = TETHER_ENOMEM;
    if (rc == TETHER_OK) {
        g.fn = fn, g.ud = ud, g.ticks = ticks, g.interval_us = interval_us;
        g.stopping = false;
        for (; g.nworkers < nthreads; g.nworkers++, g.running++)
            if (pthread_create(&g.workers[g.nworkers], NULL, worker_main,
                               (void *)(intptr_t)g.nworkers) != 0)
                break;
        if (g.nworkers < nthreads) {
            g.stopping = true;
            pthread_cond_broadcast(&g.cv);
            rc = TETHER_EAGAIN;
        }
    }
    pthread_mutex_unlock(&g.mu);
    if (rc == TETHER_EAGAIN)
        join_workers();
    return rc;
}

/* One ticker_wait. */
struct wait_arg {
    bool forever;
    struct timespec until;
    bool interrupted; /* Synchronization: g.mu */
};

static int wait_running(void *arg)
{
    struct wait_arg *w = arg;
    int rc = TETHER_OK;
    pthread_mutex_lock(&g.mu);
    while (g.running > 0 && !w->interrupted && rc == TETHER_OK)
        if (w->forever)
            pthread_cond_wait(&g.cv, &g.mu);
        else if (pthread_cond_timedwait(&g.cv, &g.mu, &w->until) != 0)
            rc = TETHER_ETIMEDOUT;
    if (g.running > 0 && rc == TETHER_OK)
        rc = TETHER_EASYNC; /* interrupted */
    pthread_mutex_unlock(&g.mu);
    if (rc == TETHER_OK)
        join_workers();
    return rc;
}

/* The unblock function: an asynchronous exception aimed at the waiting
   thread, or finalize, cuts the wait short. */
static void wake_waiter(void *arg)
{
    struct wait_arg *w = arg;
    pthread_mutex_lock(&g.mu);
    w->interrupted = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
}

/* Waits up to timeout_ms (negative: for ever) for the run to finish and
   joins its workers.  A caller holding the GIL lets go of it while it
   waits, so the workers can run, and can be interrupted.
   Returns TETHER_OK, TETHER_ETIMEDOUT, TETHER_EASYNC, TETHER_EFINALIZING. */
TETHER_PLUGIN_EXPORT int32_t ticker_wait(int64_t timeout_ms)
{
    struct wait_arg w = {.forever = timeout_ms < 0};
    clock_gettime(CLOCK_MONOTONIC, &w.until);
    if (timeout_ms > 0) {
        w.until.tv_sec += (time_t)(timeout_ms / 1000);
        w.until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
        w.until.tv_sec += w.until.tv_nsec / 1000000000;
        w.until.tv_nsec %= 1000000000;
    }
    if (g.host && g.host->gil_held())
        return g.host->call_blocking(wait_running, &w, wake_waiter, &w);
    return wait_running(&w);
}

/* The number of callback calls that have returned since the plugin was
   loaded. */
TETHER_PLUGIN_EXPORT int64_t ticker_delivered(void)
{
    pthread_mutex_lock(&g.mu);
    int64_t n = g.delivered;
    pthread_mutex_unlock(&g.mu);
    return n;
}

static int ticker_init(const tether_host_api *host, tether_interp interp,
                       void **state)
{
    (void)state;
    pthread_mutex_lock(&g.mu);
    int rc = g.host ? TETHER_ESTATE : TETHER_OK; /* one runtime at a time */
    if (rc == TETHER_OK) {
        pthread_condattr_t a;
        pthread_condattr_init(&a);
        pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
        pthread_cond_init(&g.cv, &a);
        pthread_condattr_destroy(&a);
        g.host = host;
        g.interp = interp;
        g.delivered = 0;
    }
    pthread_mutex_unlock(&g.mu);
    return rc;
}

/* Runs without the GIL, so a worker inside a callback can finish it. */
static void ticker_fini(void *state)
{
    (void)state;
    pthread_mutex_lock(&g.mu);
    g.stopping = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    join_workers();
    pthread_mutex_lock(&g.mu);
    g.host = NULL;
    pthread_cond_destroy(&g.cv);
    pthread_mutex_unlock(&g.mu);
}

static const tether_plugin_desc ticker_desc = {
    .size = sizeof(tether_plugin_desc),
    .abi_version = TETHER_ABI_VERSION,
    .flags = TETHER_PLUGIN_UNLOADABLE,
    .name = "ticker",
    .version = "1.0.0",
    .init = ticker_init,
    .fini = ticker_fini,
};

TETHER_PLUGIN_EXPORT const tether_plugin_desc *
tether_plugin_entry(uint32_t host_abi_version)
{
    (void)host_abi_version; /* the host checks our abi_version */
    return &ticker_desc;
}
