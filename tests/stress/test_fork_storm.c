/*
 * test_fork_storm.c - fork() from random threads while others churn.
 *
 * Tether threads and foreign pthreads keep taking and dropping the GIL
 * (ensure/release, checkpoints, yields, blocking sections), while the main
 * thread asks a random one of them to fork, in a random state: holding
 * the GIL, detached by tether_save_thread, attached by ensure from a
 * foreign thread, detached with a cached state, or never having used
 * tether.  Every child, whatever the state of the forking thread, must find
 * one thread and a working runtime: the GIL held exactly when the forking
 * thread held it, ensure and checkpoint working, joins of the parent's
 * threads returning at once, new threads starting and joining, and
 * finalize working where the forking thread may call it.  The child exits
 * 0; one that deadlocks (even inside fork() itself) is killed and counted.  The parent's
 * threads go on undisturbed, and all of them are joined at the end.
 */
#include <tether/tether.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rel.h"
#include "runner.h"
#include "support.h"
#include "sanitizers.h"

/* ThreadSanitizer cannot follow threads started in the child of a
   multi-threaded fork, and AddressSanitizer's allocator does not take its
   size-class locks around fork(): a new thread's first malloc in the child
   can wait for ever on a lock that a vanished parent thread held (seen:
   __sanitizer::SizeClassAllocator64::GetFromAllocator).  Under either, the
   child checks everything but starting a thread; the normal build does that
   too. */
#define CHILD_MAY_START_THREADS (!TEST_SANITIZER_THREAD && !TEST_SANITIZER_ADDRESS)

enum { CHURNERS = 4, FOREIGN = 3, FORKS = 60 };

/* The state the forking thread is in when it forks. */
enum how {
    TETHER_HELD,      /* a tether thread holding the GIL */
    TETHER_SAVED,     /* a tether thread inside save/restore */
    FOREIGN_ENSURED,  /* a foreign thread inside ensure/release */
    FOREIGN_DETACHED, /* a foreign thread between ensures (a cached state) */
    RAW,              /* a thread that never called tether */
    MAIN_HELD,        /* the thread that made the runtime, holding the GIL */
    NHOW
};

static tether_runtime g_rt;
static tether_interp g_interp;
static tether_thread g_churners[CHURNERS];
static size_t g_listed; /* thread_list count before anything started */
static atomic_int g_stop, g_rounds;
/* The next fork, encode(how, thread index), taken by that thread;
   g_forked counts the forks done, g_failed the children that failed. */
static atomic_int g_request, g_forked, g_failed;

enum { CHILD_SECONDS = 10 };

/* Waits for the child; one that has not exited after CHILD_SECONDS (a
   deadlock, possibly inside fork() itself, before its alarm was set) is
   killed and counts as failed.  Returns the exit status, or -1. */
static int wait_child(pid_t pid)
{
    long limit_ms = (long)CHILD_SECONDS * 1000 * runner_timeout_scale();
    struct timespec ms = {0, 1000000};
    int status = 0;
    for (long waited = 0;; waited++) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        ASSERT(r == 0 || errno == EINTR);
        if (waited == limit_ms) {
            fprintf(stderr, "fork_storm: child %d still running after %d s; "
                    "killed\n", (int)pid, CHILD_SECONDS * runner_timeout_scale());
            kill(pid, SIGKILL);
        }
        nanosleep(&ms, NULL);
    }
}

/* In the child: the runtime works for this, the only thread. */
static void check_child(enum how how, int self)
{
    int held = how == TETHER_HELD || how == FOREIGN_ENSURED || how == MAIN_HELD;
    ASSERT_EQ(rel_os_threads(), 1);
    ASSERT_EQ(tether_gil_held(), held);
    tether_gilstate st;
    ASSERT_OK(tether_ensure(g_interp, &st));
    ASSERT_OK(tether_checkpoint());
    for (int i = 0; i < CHURNERS; i++) {
        if (i == self && how <= TETHER_SAVED)
            continue; /* joining oneself would be EDEADLK */
        ASSERT_EQ(tether_thread_is_alive(g_churners[i]), 0);
        ASSERT_OK(tether_thread_join(g_churners[i], 0)); /* at once */
    }
    if (CHILD_MAY_START_THREADS)
        ASSERT_EQ(t_join(t_start(g_interp, t_return_arg, RESULT(TETHER_EXIT))),
                  TETHER_EXIT);
    tether_lock l;
    ASSERT_OK(tether_lock_new(&l));
    ASSERT_OK(tether_lock_acquire(l, -1));
    ASSERT_OK(tether_lock_release(l));
    ASSERT_OK(tether_lock_free(l));
    ASSERT_OK(tether_release(st));
    ASSERT_EQ(tether_gil_held(), held);
    if (how != TETHER_HELD && how != TETHER_SAVED)
        ASSERT_OK(tether_runtime_finalize(g_rt, SECONDS(10)));
    _exit(0);
}

/* Forks in the caller's current state; the parent waits for the child
   without holding the GIL and records its fate. */
static void fork_here(enum how how, int self)
{
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        alarm((unsigned)(CHILD_SECONDS * runner_timeout_scale()));
        check_child(how, self);
    }
    int held = tether_gil_held();
    tether_tstate ts = 0;
    if (held)
        ASSERT_OK(tether_save_thread(&ts));
    int status = wait_child(pid);
    if (held)
        ASSERT_OK(tether_restore_thread(ts));
    if (status != 0) {
        fprintf(stderr, "fork_storm: the child of a fork from state %d "
                "(enum how) failed (status %d)\n", (int)how, status);
        atomic_fetch_add(&g_failed, 1);
    }
    atomic_fetch_add(&g_forked, 1);
}

static int encode(enum how how, int self) { return ((int)how << 8 | self) + 1; }

/* Takes the pending request if it asks thread `self` to fork in state
   `how`, and forks. */
static void fork_if_asked(enum how how, int self)
{
    int want = encode(how, self);
    if (atomic_load(&g_request) == want &&
        atomic_compare_exchange_strong(&g_request, &want, 0))
        fork_here(how, self);
}

static int churner(void *arg)
{
    int self = (int)(intptr_t)arg;
    while (!atomic_load(&g_stop)) {
        tether_gilstate st;
        ASSERT_OK(tether_ensure(g_interp, &st));
        ASSERT_OK(tether_checkpoint());
        ASSERT_OK(tether_release(st));
        fork_if_asked(TETHER_HELD, self);
        tether_tstate ts;
        ASSERT_OK(tether_save_thread(&ts));
        fork_if_asked(TETHER_SAVED, self);
        ASSERT_OK(tether_restore_thread(ts));
        ASSERT_OK(tether_sleep(0));
        atomic_fetch_add(&g_rounds, 1);
    }
    return TETHER_OK;
}

static void *foreign(void *arg)
{
    int self = CHURNERS + (int)(intptr_t)arg;
    while (!atomic_load(&g_stop)) {
        if (self == CHURNERS + FOREIGN - 1) {
            fork_if_asked(RAW, self); /* this thread never calls tether */
            usleep(100);
            continue;
        }
        tether_gilstate st;
        ASSERT_OK(tether_ensure(g_interp, &st));
        ASSERT_OK(tether_checkpoint());
        fork_if_asked(FOREIGN_ENSURED, self);
        ASSERT_OK(tether_release(st));
        fork_if_asked(FOREIGN_DETACHED, self);
        atomic_fetch_add(&g_rounds, 1);
    }
    return NULL;
}

/* The thread that can fork in state `how`, chosen at random. */
static int pick_thread(enum how how, uint32_t r)
{
    switch (how) {
    case TETHER_HELD:
    case TETHER_SAVED: return (int)(r % CHURNERS);
    case FOREIGN_ENSURED:
    case FOREIGN_DETACHED: return CHURNERS + (int)(r % (FOREIGN - 1));
    default: return CHURNERS + FOREIGN - 1; /* RAW */
    }
}

static void request_fork(enum how how, uint32_t r)
{
    int done = atomic_load(&g_forked);
    if (how == MAIN_HELD) {
        fork_here(how, -1);
        return;
    }
    atomic_store(&g_request, encode(how, pick_thread(how, r)));
    while (atomic_load(&g_forked) == done)
        ASSERT_OK(tether_sleep(MS(1)));
}

TEST(fork_storm)
{
    g_rt = t_runtime_interval(500);
    g_interp = t_main_interp(g_rt);
    g_listed = t_thread_count(g_interp);
    for (int i = 0; i < CHURNERS; i++)
        g_churners[i] = t_start(g_interp, churner, (void *)(intptr_t)i);
    pthread_t pt[FOREIGN];
    for (int i = 0; i < FOREIGN; i++)
        pt[i] = t_pthread(foreign, (void *)(intptr_t)i);
    while (atomic_load(&g_rounds) < 100)
        ASSERT_OK(tether_sleep(MS(1)));
    uint32_t seed = 0x2545f491u;
    int forks = runner_rounds(FORKS);
    int k = 0;
    for (; k < forks && atomic_load(&g_failed) == 0; k++) {
        uint32_t r = rel_rand(&seed);
        request_fork((enum how)(k % NHOW), r >> 3);
    }
    ASSERT_EQ(atomic_load(&g_failed), 0);
    ASSERT_EQ(atomic_load(&g_forked), k);
    ASSERT_EQ(k, forks);
    atomic_store(&g_stop, 1);
    for (int i = 0; i < CHURNERS; i++)
        ASSERT_EQ(t_join(g_churners[i]), TETHER_OK);
    t_join_foreign(pt, FOREIGN);
    ASSERT_EQ(t_thread_count(g_interp), g_listed);
    t_finalize(g_rt);
}

RUNNER_MAIN(TEST_ENTRY_T(fork_storm, 300))
