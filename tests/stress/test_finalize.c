/*
 * test_finalize.c - finalize while threads are busy: daemon threads in
 * checkpoint loops, threads blocked in every kind of wait, foreign pthreads
 * hammering ensure/release, non-daemon threads that do not finish in time,
 * a holder that never checkpoints, and destroying a busy interpreter.
 * Finalize must return (by its timeout), every thread must get
 * EFINALIZING or EBADHANDLE and leave, and nothing may touch freed memory
 * (the ASan and TSan builds run the same cases).
 *
 * Threads report what they saw through t_sem and atomics, not through
 * tether, which is gone by then.
 */
#include <tether/tether.h>

#include <errno.h>
#include <unistd.h>

#include "runner.h"
#include "support.h"

static tether_runtime g_rt;
static tether_interp g_interp;
static atomic_int g_entered; /* threads that reached their loop or wait */
static t_sem g_left;         /* posted by each thread as it leaves */

enum { MAX_THREADS = 16 };
static atomic_int g_rc[MAX_THREADS];

static void setup(uint32_t interval_us)
{
    g_rt = t_runtime_interval(interval_us);
    g_interp = t_main_interp(g_rt);
    t_sem_init(&g_left);
    for (int i = 0; i < MAX_THREADS; i++)
        atomic_store(&g_rc[i], 1000);
}

/* Records thread i's final status and lets the main thread know. */
static int leave(int i, int rc)
{
    atomic_store(&g_rc[i], rc);
    t_sem_post(&g_left);
    return rc;
}

/* Holding the GIL, waits until n threads have entered. */
static void wait_entered(int n)
{
    while (atomic_load(&g_entered) < n)
        ASSERT_OK(tether_sleep(MS(1)));
    ASSERT_OK(tether_sleep(MS(20))); /* let the blockers block */
}

/* Waits for n threads to leave; each must have seen `want`. */
static void expect_left(int n, int want)
{
    for (int i = 0; i < n; i++)
        t_sem_wait(&g_left);
    for (int i = 0; i < n; i++)
        ASSERT_STATUS(atomic_load(&g_rc[i]), want);
}

static void release_all(tether_thread *ts, int n)
{
    for (int i = 0; i < n; i++)
        ASSERT_OK(tether_thread_release(ts[i]));
}

/* ------------------------------------------------------------------------
 * Daemon threads
 * ---------------------------------------------------------------------- */

static int spin_until_refused(void *arg)
{
    int rc;
    atomic_fetch_add(&g_entered, 1);
    while ((rc = tether_checkpoint()) == TETHER_OK)
        ;
    return leave((int)(intptr_t)arg, rc);
}

TEST(busy_daemons)
{
    enum { N = 4 };
    setup(100);
    tether_thread ts[N];
    for (intptr_t i = 0; i < N; i++)
        ts[i] = t_start_daemon(g_interp, spin_until_refused, (void *)i);
    wait_entered(N);
    ASSERT_OK(tether_runtime_finalize(g_rt, SECONDS(10)));
    ASSERT_EQ(tether_gil_held(), 0);
    expect_left(N, TETHER_EFINALIZING);
    release_all(ts, N);
}

/* Daemon threads blocked in each kind of wait are woken by finalize. */
enum blocker { IN_LOCK, IN_EVENT, IN_SLEEP, IN_JOIN, IN_CALL_BLOCKING, BLOCKERS };
static tether_lock g_lock;
static tether_event g_never;
static tether_thread g_joined;
static int g_pipe[2];

static int read_pipe(void *arg)
{
    char byte;
    (void)arg;
    while (read(g_pipe[0], &byte, 1) < 0 && errno == EINTR)
        ;
    return TETHER_OK;
}

static void write_pipe(void *arg)
{
    (void)arg;
    ASSERT_EQ(write(g_pipe[1], "x", 1), 1);
}

static int block(enum blocker kind)
{
    switch (kind) {
    case IN_LOCK:
        return tether_lock_acquire(g_lock, -1);
    case IN_EVENT:
        return tether_event_wait(g_never, -1);
    case IN_SLEEP:
        return tether_sleep(SECONDS(3600));
    case IN_JOIN:
        return tether_thread_join(g_joined, -1);
    case IN_CALL_BLOCKING:
        return tether_call_blocking(read_pipe, NULL, write_pipe, NULL);
    case BLOCKERS:
        break;
    }
    return TETHER_EINVAL;
}

static int blocked(void *arg)
{
    atomic_fetch_add(&g_entered, 1);
    int i = (int)(intptr_t)arg;
    return leave(i, block(i == BLOCKERS ? IN_EVENT : (enum blocker)i));
}

TEST(blocked_daemons)
{
    setup(5000);
    ASSERT_EQ(pipe(g_pipe), 0);
    ASSERT_OK(tether_lock_new(&g_lock));
    ASSERT_OK(tether_event_new(&g_never));
    ASSERT_OK(tether_lock_acquire(g_lock, 0));
    tether_thread ts[BLOCKERS + 1];
    /* Thread BLOCKERS waits on the event; IN_JOIN joins it. */
    g_joined = ts[BLOCKERS] = t_start_daemon(g_interp, blocked,
                                             (void *)(intptr_t)BLOCKERS);
    for (intptr_t i = 0; i < BLOCKERS; i++)
        ts[i] = t_start_daemon(g_interp, blocked, (void *)i);
    wait_entered(BLOCKERS + 1);
    ASSERT_OK(tether_runtime_finalize(g_rt, SECONDS(10)));
    expect_left(BLOCKERS + 1, TETHER_EFINALIZING);
    release_all(ts, BLOCKERS + 1);
    ASSERT_OK(tether_lock_release(g_lock));
    ASSERT_OK(tether_lock_free(g_lock));
    ASSERT_OK(tether_event_free(g_never));
    close(g_pipe[0]);
    close(g_pipe[1]);
}

/* ------------------------------------------------------------------------
 * Foreign threads
 * ---------------------------------------------------------------------- */

enum { HAMMERS = 8 };
static atomic_long g_ensures;
static atomic_int g_bad_release;

static void *hammer(void *arg)
{
    int i = (int)(intptr_t)arg, rc;
    tether_gilstate st;
    atomic_fetch_add(&g_entered, 1);
    while ((rc = tether_ensure(g_interp, &st)) == TETHER_OK) {
        atomic_fetch_add(&g_ensures, 1);
        (void)tether_checkpoint(); /* may be refused: we are then detached */
        if (tether_release(st) != TETHER_OK)
            atomic_fetch_add(&g_bad_release, 1);
    }
    leave(i, rc);
    return NULL;
}

/* Foreign pthreads ensure and release in a loop across finalize: each ends
   with EFINALIZING or EBADHANDLE, never a crash or a hang. */
TEST(foreign_hammer)
{
    setup(100);
    pthread_t th[HAMMERS];
    for (intptr_t i = 0; i < HAMMERS; i++)
        th[i] = t_pthread(hammer, (void *)i);
    wait_entered(HAMMERS);
    while (atomic_load(&g_ensures) < 2000)
        ASSERT_OK(tether_sleep(MS(1)));
    ASSERT_OK(tether_runtime_finalize(g_rt, SECONDS(10)));
    for (int i = 0; i < HAMMERS; i++)
        t_pthread_join(th[i]);
    for (int i = 0; i < HAMMERS; i++) {
        int rc = atomic_load(&g_rc[i]);
        if (rc != TETHER_EFINALIZING && rc != TETHER_EBADHANDLE)
            runner_fail(__FILE__, __LINE__, "hammer %d ended with %s", i,
                        tether_status_name(rc));
    }
    ASSERT_EQ(atomic_load(&g_bad_release), 0);
}

/* ------------------------------------------------------------------------
 * Threads that do not finish in time
 * ---------------------------------------------------------------------- */

static int sleepy(void *arg)
{
    int rc;
    atomic_fetch_add(&g_entered, 1);
    while ((rc = tether_sleep(MS(1))) == TETHER_OK)
        ;
    return leave((int)(intptr_t)arg, rc);
}

/* A non-daemon thread that never finishes: finalize waits its timeout,
   returns ETIMEDOUT, and the thread's next wait is refused. */
TEST(nondaemon_timeout)
{
    setup(5000);
    tether_thread t = t_start(g_interp, sleepy, (void *)(intptr_t)0);
    wait_entered(1);
    int64_t start = t_now_ns();
    ASSERT_STATUS(tether_runtime_finalize(g_rt, MS(100)), TETHER_ETIMEDOUT);
    ASSERT(t_now_ns() - start >= MS(100));
    expect_left(1, TETHER_EFINALIZING);
    ASSERT_OK(tether_thread_release(t));
}

static atomic_int g_let_go;

/* Holds the GIL without ever checkpointing until told, then checkpoints. */
static int hold_without_checkpoints(void *arg)
{
    atomic_fetch_add(&g_entered, 1);
    t_sem_post(&g_left);
    while (!atomic_load(&g_let_go))
        ;
    return leave((int)(intptr_t)arg, tether_checkpoint());
}

/* Finalize cannot take the GIL from a holder that never checkpoints; it
   still returns by its timeout, and the holder is refused afterwards. */
TEST(stuck_holder)
{
    setup(5000);
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    tether_thread t = t_start(g_interp, hold_without_checkpoints, (void *)(intptr_t)0);
    t_sem_wait(&g_left); /* it holds the GIL now */
    ASSERT_STATUS(tether_runtime_finalize(g_rt, MS(100)), TETHER_ETIMEDOUT);
    atomic_store(&g_let_go, 1);
    expect_left(1, TETHER_EFINALIZING);
    ASSERT_OK(tether_thread_release(t));
}

/* A foreign thread (no tether thread at all) that holds the GIL without
   checkpointing: there is nothing to join, but finalize's pass through
   the GIL (threading-model.md, Flow 6, step 4) gives up at the deadline,
   and that too is TETHER_ETIMEDOUT (tether.h).  The holder is refused at
   its next checkpoint and its release still pairs. */
static void *foreign_holder(void *arg)
{
    (void)arg;
    tether_gilstate g;
    int rc = tether_ensure(g_interp, &g);
    t_sem_post(&g_left);
    if (rc != TETHER_OK)
        return (void *)(intptr_t)rc;
    while (!atomic_load(&g_let_go))
        ;
    atomic_store(&g_rc[0], tether_checkpoint());
    atomic_store(&g_rc[1], tether_release(g));
    return NULL;
}

TEST(stuck_foreign_holder)
{
    setup(5000);
    atomic_store(&g_let_go, 0);
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    pthread_t t = t_pthread(foreign_holder, NULL);
    t_sem_wait(&g_left); /* it holds the GIL now */
    int64_t start = t_now_ns();
    ASSERT_STATUS(tether_runtime_finalize(g_rt, MS(100)), TETHER_ETIMEDOUT);
    ASSERT(t_now_ns() - start >= MS(100));
    atomic_store(&g_let_go, 1);
    t_pthread_join(t);
    ASSERT_STATUS(atomic_load(&g_rc[0]), TETHER_EFINALIZING);
    ASSERT_STATUS(atomic_load(&g_rc[1]), TETHER_OK);
}

/* The finalizing thread's own saved state is refused like every other
   thread's: restore returns EFINALIZING (tether.h, tether_runtime_finalize
   and tether_restore_thread), so TETHER_BEGIN/END_ALLOW_THREADS around
   finalize is not misuse (which TETHER_CONFIG_ABORT_ON_MISUSE would turn
   into an abort). */
TEST(restore_after_own_finalize)
{
    setup(5000);
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    ASSERT_OK(tether_runtime_finalize(g_rt, SECONDS(10)));
    ASSERT_STATUS(tether_restore_thread(ts), TETHER_EFINALIZING);
    ASSERT_EQ(tether_gil_held(), 0);
}

/* ------------------------------------------------------------------------
 * Destroying one busy interpreter
 * ---------------------------------------------------------------------- */

TEST(destroy_busy_interp)
{
    enum { N = 3 };
    setup(100);
    tether_interp second;
    ASSERT_OK(tether_interp_create(g_rt, &second));
    tether_thread ts[N];
    for (intptr_t i = 0; i < N; i++)
        ts[i] = t_start_daemon(second, spin_until_refused, (void *)i);
    wait_entered(N);
    ASSERT_OK(tether_interp_destroy(second, SECONDS(10)));
    expect_left(N, TETHER_EFINALIZING);
    release_all(ts, N);
    ASSERT_EQ(tether_gil_held(), 1); /* the main interpreter is untouched */
    tether_thread t = t_start(g_interp, t_return_arg, RESULT(TETHER_EXIT));
    ASSERT_EQ(t_join(t), TETHER_EXIT);
    t_finalize(g_rt);
}

RUNNER_MAIN(TEST_ENTRY(busy_daemons), TEST_ENTRY(blocked_daemons),
            TEST_ENTRY(foreign_hammer), TEST_ENTRY(nondaemon_timeout),
            TEST_ENTRY(stuck_holder), TEST_ENTRY(stuck_foreign_holder),
            TEST_ENTRY(restore_after_own_finalize),
            TEST_ENTRY(destroy_busy_interp))
