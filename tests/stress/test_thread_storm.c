/*
 * test_thread_storm.c - a thousand threads, and nothing lost.
 *
 * THREADS tether threads, all alive at once, and FOREIGN plain pthreads
 * run ensure/release + checkpoint loops, blocking sections and yields,
 * while the main thread raises asynchronous exceptions at random threads
 * (by handle and, for the foreign ones, by ident) and starts and joins
 * EXTRA more threads.  At the end:
 *   - a counter that only the GIL protects (a plain long) is exactly the
 *     number of increments the threads made: no two threads ever held the
 *     GIL at once, and no increment was lost;
 *   - every thread started was joined and returned TETHER_OK;
 *   - every payload raised was destroyed exactly once: by its receiver after
 *     delivery, by a newer raise that replaced it, or with its thread state.
 * Sizes are divided by TETHER_TEST_ROUNDS_DIV in the sanitizer builds.
 */
#include <tether/tether.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "rel.h"
#include "runner.h"
#include "support.h"

enum { THREADS = 1000, FOREIGN = 64, EXTRA = 200, ITERS = 40, RAISES = 3000 };

struct slot {
    tether_thread handle;  /* Synchronization: main thread */
    long iters;            /* Synchronization: the GIL */
    _Atomic uint64_t ident; /* foreign threads: set once attached */
    atomic_int done;
};

static tether_interp g_interp;
static tether_event g_go;
static int g_iters;
static long g_counter;          /* Synchronization: the GIL, and only it */
static atomic_long g_raised, g_destroyed, g_fetched;
static struct slot g_slots[THREADS + EXTRA], g_foreign[FOREIGN];

static void destroy_payload(void *p)
{
    free(p);
    atomic_fetch_add(&g_destroyed, 1);
}

/* Takes the delivered exception and destroys its payload, as a receiver
   owns it.  Called after a tether call returned TETHER_EASYNC. */
static void take_async(void)
{
    void *payload = NULL;
    tether_dtor dtor = NULL;
    ASSERT_OK(tether_async_fetch(NULL, &payload, &dtor));
    ASSERT(dtor == destroy_payload);
    dtor(payload);
    atomic_fetch_add(&g_fetched, 1);
}

/* A status that may only be OK or a delivered exception. */
static void ok_or_async(int rc)
{
    if (rc == TETHER_EASYNC)
        take_async();
    else
        ASSERT_OK(rc);
}

/* One round of work holding the GIL (nested ensure, counter, checkpoint),
   then a way of letting go of the GIL that depends on the round. */
static void round_of_work(struct slot *s, int i)
{
    tether_gilstate st;
    ASSERT_OK(tether_ensure(g_interp, &st));
    g_counter++;
    s->iters++;
    ok_or_async(tether_checkpoint());
    ASSERT_OK(tether_release(st));
    if (i % 3 == 0) {
        tether_tstate ts;
        ASSERT_OK(tether_save_thread(&ts));
        sched_yield();
        ok_or_async(tether_restore_thread(ts));
    } else if (i % 3 == 1) {
        ok_or_async(tether_sleep(0));
    }
}

/* A tether thread: waits for the go (an exception may interrupt the wait),
   then works its rounds. */
static int worker(void *arg)
{
    struct slot *s = arg;
    int rc;
    while ((rc = tether_event_wait(g_go, -1)) == TETHER_EASYNC)
        take_async();
    ASSERT_OK(rc);
    for (int i = 0; i < g_iters; i++)
        round_of_work(s, i);
    atomic_store(&s->done, 1);
    return TETHER_OK;
}

/* A foreign pthread: each round is a fresh outermost ensure. */
static void *foreign(void *arg)
{
    struct slot *s = arg;
    tether_gilstate st;
    tether_thread self;
    ASSERT_OK(tether_ensure(g_interp, &st));
    ASSERT_OK(tether_thread_current(&self));
    uint64_t ident;
    ASSERT_OK(tether_thread_ident(self, &ident));
    ASSERT_OK(tether_thread_release(self));
    atomic_store(&s->ident, ident);
    int rc;
    while ((rc = tether_event_wait(g_go, -1)) == TETHER_EASYNC)
        take_async();
    ASSERT_OK(rc);
    for (int i = 0; i < g_iters; i++)
        round_of_work(s, i);
    ASSERT_OK(tether_release(st));
    atomic_store(&s->done, 1);
    return NULL;
}

static void start_worker(struct slot *s)
{
    tether_thread_opts o = {sizeof o, NULL, 0, 256 * 1024};
    s->handle = t_start_opts(g_interp, worker, s, &o);
}

/* Raises at a random thread; a payload nobody took goes back. */
static void raise_somewhere(uint32_t *seed, int nthreads, int nforeign)
{
    int *payload = malloc(sizeof *payload);
    ASSERT(payload != NULL);
    uint32_t r = rel_rand(seed);
    int rc, taken = 0;
    if (r % 4 == 0 && nforeign > 0) {
        uint64_t ident = atomic_load(&g_foreign[(r >> 2) % (uint32_t)nforeign].ident);
        ASSERT_OK(tether_raise_by_ident(g_interp, ident, 7, payload,
                                        destroy_payload, &taken));
    } else {
        struct slot *s = &g_slots[(r >> 2) % (uint32_t)nthreads];
        rc = tether_thread_raise(s->handle, 7, payload, destroy_payload);
        if (rc != TETHER_ESTATE) /* ESTATE: it has finished */
            ASSERT_OK(rc);
        taken = rc == TETHER_OK;
    }
    if (taken)
        atomic_fetch_add(&g_raised, 1);
    else
        free(payload);
}

static int all_done(int n)
{
    for (int i = 0; i < n; i++)
        if (!atomic_load(&g_slots[i].done))
            return 0;
    return 1;
}

/* The controller: raises, and starts EXTRA threads as it goes. */
static int control(int nthreads, int nforeign, int extra, int raises)
{
    uint32_t seed = 0x9e3779b9u;
    int started = nthreads;
    /* A bound on a hang, not on speed: the threads' last rounds take what
       the machine gives them (600 polls of 1 ms were too few for a loaded
       2-core machine: a clean-clone run failed there). */
    int64_t deadline = t_now_ns() + SECONDS(600);
    for (int k = 0; k < raises || !all_done(started); k++) {
        if (k < raises)
            raise_somewhere(&seed, started, nforeign);
        if (started < nthreads + extra && k % 8 == 0)
            start_worker(&g_slots[started++]);
        ASSERT_OK(tether_sleep(k < raises ? 20000 : 1000000));
        ASSERT(t_now_ns() < deadline); /* ten minutes at most */
    }
    return started;
}

TEST(thousand_threads)
{
    int nthreads = runner_rounds(THREADS), nforeign = runner_rounds(FOREIGN);
    int extra = runner_rounds(EXTRA), raises = runner_rounds(RAISES);
    g_iters = runner_rounds(ITERS);
    tether_runtime rt = t_runtime_interval(1000);
    g_interp = t_main_interp(rt);
    ASSERT_OK(tether_event_new(&g_go));
    size_t base = t_thread_count(g_interp);
    for (int i = 0; i < nthreads; i++)
        start_worker(&g_slots[i]);
    pthread_t pt[FOREIGN];
    for (int i = 0; i < nforeign; i++)
        pt[i] = t_pthread(foreign, &g_foreign[i]);
    for (int i = 0; i < nforeign; i++)
        while (!atomic_load(&g_foreign[i].ident))
            ASSERT_OK(tether_sleep(1000000));
    /* Everybody is alive and blocked on the event. */
    ASSERT_EQ(t_thread_count(g_interp), base + (size_t)nthreads + (size_t)nforeign);
    ASSERT_OK(tether_event_set(g_go));
    int started = control(nthreads, nforeign, extra, raises);
    for (int i = 0; i < started; i++)
        ASSERT_EQ(t_join(g_slots[i].handle), TETHER_OK);
    t_join_foreign(pt, nforeign);

    long want = (long)(started + nforeign) * g_iters, sum = 0;
    for (int i = 0; i < started; i++)
        sum += g_slots[i].iters;
    for (int i = 0; i < nforeign; i++)
        sum += g_foreign[i].iters;
    ASSERT_EQ(sum, want);
    ASSERT_EQ(g_counter, want);
    ASSERT_EQ(t_thread_count(g_interp), base);
    ASSERT_EQ(atomic_load(&g_destroyed), atomic_load(&g_raised));
    ASSERT(atomic_load(&g_fetched) > 0);
    ASSERT(atomic_load(&g_fetched) <= atomic_load(&g_raised));
    ASSERT_OK(tether_event_free(g_go));
    t_finalize(rt);
}

RUNNER_MAIN(TEST_ENTRY_T(thousand_threads, 600))
