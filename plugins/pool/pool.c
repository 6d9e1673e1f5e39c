/*
 * pool - a worker pool plugin that links libtether directly.
 *
 * pool_submit(job, ud, native_us) queues a job.  One of the pool's workers
 * (native pthreads started by init) does the job's native part first,
 * holding no GIL -- here it just sleeps native_us microseconds, standing in
 * for I/O or number crunching -- and then runs job(ud), a guest callback,
 * holding the GIL of the interpreter the plugin was loaded into.
 * pool_wait(ticket, timeout_ms, &result) waits for a job on a tether event:
 * an interruptible wait that releases the caller's GIL while blocked.
 *
 * Unlike ticker and blockio, this plugin calls tether_* directly and links
 * libtether (the host table works just as well; both are supported).  It
 * does not set TETHER_PLUGIN_UNLOADABLE, so it stays mapped after unload.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include <tether/tether_plugin.h>

#define POOL_WORKERS 4

typedef int32_t (*pool_job_fn)(void *ud);

struct job {
    pool_job_fn fn;
    void *ud;
    int32_t native_us;
    int32_t result;     /* written by the worker before it sets `done` */
    tether_event done;
    struct job *next;   /* the queue.  Synchronization: g.mu */
    struct job **prev_all, *next_all; /* every job.  Synchronization: g.mu */
};

/* `mu` protects the queue, the list of jobs and `stopping`; `cv` is
   signalled when a job is queued or stopping is requested. */
static struct {
    tether_interp interp;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *head, *tail; /* queued, not yet taken by a worker */
    struct job *all;         /* submitted and not yet waited for */
    bool stopping;
    pthread_t workers[POOL_WORKERS];
    int nworkers;
    bool loaded;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* Takes the next job, or NULL when the pool stops. */
static struct job *next_job(void)
{
    pthread_mutex_lock(&g.mu);
    while (!g.head && !g.stopping)
        pthread_cond_wait(&g.cv, &g.mu);
    struct job *j = g.stopping ? NULL : g.head;
    if (j && !(g.head = j->next))
        g.tail = NULL;
    pthread_mutex_unlock(&g.mu);
    return j;
}

static void run_job(struct job *j)
{
    struct timespec ns = {j->native_us / 1000000, (j->native_us % 1000000) * 1000L};
    nanosleep(&ns, NULL); /* the native part: no GIL held */
    tether_gilstate st;
    int rc = tether_ensure(g.interp, &st);
    if (rc == TETHER_OK) {
        j->result = j->fn(j->ud); /* the guest part */
        tether_release(st);
    } else {
        j->result = rc;
    }
    tether_event_set(j->done);
}

static void *worker_main(void *arg)
{
    (void)arg;
    for (struct job *j; (j = next_job());)
        run_job(j);
    return NULL;
}

/* Queues a job and returns its ticket, or NULL (out of memory, or not
   loaded). */
TETHER_PLUGIN_EXPORT void *pool_submit(pool_job_fn fn, void *ud, int32_t native_us)
{
    struct job *j = calloc(1, sizeof *j);
    if (!fn || native_us < 0 || !j || tether_event_new(&j->done) != TETHER_OK) {
        free(j);
        return NULL;
    }
    j->fn = fn, j->ud = ud, j->native_us = native_us;
    pthread_mutex_lock(&g.mu);
    bool ok = g.loaded && !g.stopping;
    if (ok) {
        *(g.tail ? &g.tail->next : &g.head) = j;
        g.tail = j;
        if ((j->next_all = g.all))
            g.all->prev_all = &j->next_all;
        j->prev_all = &g.all;
        g.all = j;
        pthread_cond_signal(&g.cv);
    }
    pthread_mutex_unlock(&g.mu);
    if (!ok) {
        tether_event_free(j->done);
        free(j);
    }
    return ok ? j : NULL;
}

/* Unlinks a job from the list of all jobs and frees it.  Called with g.mu
   held for the unlinking. */
static void forget(struct job *j)
{
    if ((*j->prev_all = j->next_all))
        j->next_all->prev_all = j->prev_all;
    tether_event_free(j->done);
    free(j);
}

/* Waits up to timeout_ms (negative: for ever) for the job; on TETHER_OK
   stores its result in *result and the ticket is gone.
   Returns TETHER_OK, TETHER_EINVAL, TETHER_ETIMEDOUT (the ticket stays
   valid), TETHER_EASYNC, TETHER_EFINALIZING. */
TETHER_PLUGIN_EXPORT int32_t pool_wait(void *ticket, int64_t timeout_ms,
                                       int32_t *result)
{
    struct job *j = ticket;
    if (!j || !result)
        return TETHER_EINVAL;
    int rc = tether_event_wait(j->done, timeout_ms < 0 ? -1 : timeout_ms * 1000000);
    if (rc == TETHER_OK) {
        *result = j->result;
        pthread_mutex_lock(&g.mu);
        forget(j);
        pthread_mutex_unlock(&g.mu);
    }
    return rc;
}

static void pool_fini(void *state);

static int pool_init(const tether_host_api *host, tether_interp interp,
                     void **state)
{
    (void)host, (void)state;
    pthread_mutex_lock(&g.mu);
    bool busy = g.loaded; /* one runtime at a time */
    if (!busy) {
        g.interp = interp;
        g.loaded = true;
        g.stopping = false;
    }
    pthread_mutex_unlock(&g.mu);
    if (busy)
        return TETHER_ESTATE;
    for (; g.nworkers < POOL_WORKERS; g.nworkers++)
        if (pthread_create(&g.workers[g.nworkers], NULL, worker_main, NULL) != 0) {
            pool_fini(NULL); /* init must undo what it did when it fails */
            return TETHER_EAGAIN;
        }
    return TETHER_OK;
}

/* Runs without the GIL: stops the workers (a worker in a guest callback
   finishes it first) and frees the jobs nobody waited for. */
static void pool_fini(void *state)
{
    (void)state;
    pthread_mutex_lock(&g.mu);
    g.stopping = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    for (int i = 0; i < g.nworkers; i++)
        pthread_join(g.workers[i], NULL);
    pthread_mutex_lock(&g.mu);
    g.nworkers = 0;
    while (g.all)
        forget(g.all);
    g.head = g.tail = NULL;
    g.loaded = false;
    pthread_mutex_unlock(&g.mu);
}

static const tether_plugin_desc pool_desc = {
    .size = sizeof(tether_plugin_desc),
    .abi_version = TETHER_ABI_VERSION,
    .flags = 0,
    .name = "pool",
    .version = "1.0.0",
    .init = pool_init,
    .fini = pool_fini,
};

TETHER_PLUGIN_EXPORT const tether_plugin_desc *
tether_plugin_entry(uint32_t host_abi_version)
{
    /* This plugin links libtether, so the library it calls is the host's
       own: the host checks our abi_version against its own. */
    (void)host_abi_version;
    return &pool_desc;
}
