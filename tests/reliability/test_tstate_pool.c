/*
 * test_tstate_pool.c - the interpreters' pools of ready thread states
 * (core/tstate.c, "The pool"), seen through the library's exact block
 * count (rel.h's counting allocator):
 *   - a thread's state goes to its interpreter's pool when the thread
 *     exits, and the next new threads take those states without
 *     allocating (they succeed with every allocation failing);
 *   - the pool is bounded (TS_POOL_MAX): a crowd of threads exiting
 *     leaves at most that many blocks behind;
 *   - tether_interp_destroy empties the pool at once, even while a thread
 *     still has a cached state there that keeps the interpreter's memory
 *     alive; tether_runtime_finalize does too, with a thread saved in it;
 *   - a fork child drops the parent's pooled records (and can still make
 *     states of its own);
 *   - a state with an undelivered asynchronous exception is freed, its
 *     payload's destructor run, and not pooled.
 * Every case ends with no block of the library alive.
 */
#include <tether/tether.h>

#include <errno.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rel.h"
#include "runner.h"
#include "support.h"
#include "tuning.h" /* TS_POOL_MAX */
#include "sanitizers.h"

/* As tests/unit/test_fork.c: under TSan a fork child of a multi-threaded
   process starts no thread. */
#define CHILD_MAY_START_THREADS (!TEST_SANITIZER_THREAD)

enum { CROWD_MAX = TS_POOL_MAX + 8 };

static tether_runtime g_rt;
static tether_interp g_main, g_target;
static t_sem g_ready, g_go;      /* the crowd's */
static t_sem g_held, g_let_go;   /* the one thread that stays meanwhile */

/* Ensures g_target once (the state stays cached, detached), says so, and
   exits when told. */
static void *ensure_and_wait(void *arg)
{
    (void)arg;
    tether_gilstate st;
    ASSERT_OK(tether_ensure(g_target, &st));
    ASSERT_OK(tether_release(st));
    t_sem_post(&g_ready);
    t_sem_wait(&g_go);
    return NULL;
}

/* n new threads, each with a state of g_target, all at once; then they
   exit.  The caller is detached. */
static void crowd(int n)
{
    pthread_t th[CROWD_MAX];
    ASSERT(n <= CROWD_MAX);
    for (int i = 0; i < n; i++)
        th[i] = t_pthread(ensure_and_wait, NULL);
    for (int i = 0; i < n; i++)
        t_sem_wait(&g_ready);
    for (int i = 0; i < n; i++)
        t_sem_post(&g_go);
    t_join_foreign(th, n);
}

static void setup(void)
{
    rel_count_allocations();
    t_sem_init(&g_ready);
    t_sem_init(&g_go);
    t_sem_init(&g_held);
    t_sem_init(&g_let_go);
    g_rt = t_runtime_main(NULL, &g_main);
    g_target = g_main;
}

static void teardown(void)
{
    t_finalize(g_rt);
    t_sem_destroy(&g_ready);
    t_sem_destroy(&g_go);
    t_sem_destroy(&g_held);
    t_sem_destroy(&g_let_go);
    ASSERT_EQ(rel_live_blocks(), 0);
}

TEST(exited_threads_states_are_reused_without_allocating)
{
    setup();
    TETHER_BEGIN_ALLOW_THREADS
    long before = rel_live_blocks();
    crowd(4);
    ASSERT_EQ(rel_live_blocks(), before + 4); /* in the pool */
    ASSERT_OK(tether_fault_inject(TETHER_FAULT_ALLOC, 1, 0)); /* all fail */
    crowd(4);
    ASSERT_OK(tether_fault_inject(TETHER_FAULT_ALLOC, 0, 0));
    ASSERT_EQ(rel_live_blocks(), before + 4); /* back in the pool */
    TETHER_END_ALLOW_THREADS
    teardown();
}

TEST(the_pool_is_bounded)
{
    setup();
    TETHER_BEGIN_ALLOW_THREADS
    long before = rel_live_blocks();
    crowd(CROWD_MAX);
    ASSERT_EQ(rel_live_blocks(), before + (long)TS_POOL_MAX);
    /* As many new threads at once as the pool holds take all of it,
       without allocating. */
    ASSERT_OK(tether_fault_inject(TETHER_FAULT_ALLOC, 1, 0));
    crowd(TS_POOL_MAX);
    ASSERT_OK(tether_fault_inject(TETHER_FAULT_ALLOC, 0, 0));
    ASSERT_EQ(rel_live_blocks(), before + (long)TS_POOL_MAX);
    TETHER_END_ALLOW_THREADS
    teardown();
}

/* A thread with a cached state of g_target, alive until its semaphore
   `arg` is posted. */
static void *linger(void *arg)
{
    tether_gilstate st;
    ASSERT_OK(tether_ensure(g_target, &st));
    ASSERT_OK(tether_release(st));
    t_sem_post(&g_held);
    t_sem_wait(arg);
    /* Its interpreter is gone: the state is deleted, not pooled. */
    ASSERT_EQ(tether_ensure(g_target, &st), TETHER_EFINALIZING);
    return NULL;
}

TEST(destroy_empties_the_pool_while_the_interp_lives_on)
{
    setup();
    ASSERT_OK(tether_interp_create(g_rt, &g_target));
    pthread_t first, second;
    t_sem let_first, let_second;
    t_sem_init(&let_first);
    t_sem_init(&let_second);
    long lingering;
    TETHER_BEGIN_ALLOW_THREADS
    first = t_pthread(linger, &let_first);
    second = t_pthread(linger, &let_second);
    t_sem_wait(&g_held);
    t_sem_wait(&g_held);
    lingering = rel_live_blocks();
    crowd(4);
    ASSERT_EQ(rel_live_blocks(), lingering + 4);
    TETHER_END_ALLOW_THREADS
    /* The lingering threads' states hold the interpreter's memory: what
       frees the four pooled states is the destroy itself. */
    ASSERT_OK(tether_interp_destroy(g_target, SECONDS(10)));
    ASSERT_EQ(rel_live_blocks(), lingering);
    /* A state deleted after the destroy is freed, not put back into the
       pool (the second thread still keeps the interpreter's memory). */
    t_sem_post(&let_first);
    TETHER_BEGIN_ALLOW_THREADS
    t_pthread_join(first);
    ASSERT_EQ(rel_live_blocks(), lingering - 1);
    t_sem_post(&let_second);
    t_pthread_join(second);
    TETHER_END_ALLOW_THREADS
    t_sem_destroy(&let_first);
    t_sem_destroy(&let_second);
    teardown();
}

/* Saved in the runtime (detached, its token in hand) across a finalize;
   then its restore answers EFINALIZING. */
static void *saved_across_finalize(void *arg)
{
    (void)arg;
    tether_gilstate st;
    tether_tstate saved;
    ASSERT_OK(tether_ensure(g_target, &st));
    ASSERT_OK(tether_save_thread(&saved));
    t_sem_post(&g_held);
    t_sem_wait(&g_let_go);
    ASSERT_EQ(tether_restore_thread(saved), TETHER_EFINALIZING);
    ASSERT_OK(tether_release(st)); /* pairs; the thread stays detached */
    return NULL;
}

TEST(finalize_empties_the_pool_with_a_thread_saved)
{
    setup();
    pthread_t saver;
    TETHER_BEGIN_ALLOW_THREADS
    saver = t_pthread(saved_across_finalize, NULL);
    t_sem_wait(&g_held);
    crowd(4);
    TETHER_END_ALLOW_THREADS
    long pooled = rel_live_blocks();
    ASSERT_OK(tether_runtime_finalize(g_rt, SECONDS(30)));
    /* What finalize frees besides the pool is the same with or without
       it; the exact count is the last line's: nothing left at the end. */
    ASSERT(rel_live_blocks() <= pooled - 4);
    t_sem_post(&g_let_go);
    t_pthread_join(saver);
    t_sem_destroy(&g_ready);
    t_sem_destroy(&g_go);
    t_sem_destroy(&g_held);
    t_sem_destroy(&g_let_go);
    ASSERT_EQ(rel_live_blocks(), 0);
}

static void *ensure_once(void *arg)
{
    (void)arg;
    tether_gilstate st;
    ASSERT_OK(tether_ensure(g_target, &st));
    ASSERT_OK(tether_release(st));
    return NULL;
}

TEST(a_fork_child_drops_the_pool)
{
    setup();
    TETHER_BEGIN_ALLOW_THREADS
    crowd(4);
    TETHER_END_ALLOW_THREADS
    long parent = rel_live_blocks();
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* The fork handlers freed the four pooled records, and nothing
           else (no other thread had a state). */
        ASSERT_EQ(rel_live_blocks(), parent - 4);
        ASSERT_EQ(tether_gil_held(), 1);
        if (CHILD_MAY_START_THREADS) {
            TETHER_BEGIN_ALLOW_THREADS
            t_run_foreign(ensure_once, NULL); /* a state made anew */
            t_run_foreign(ensure_once, NULL); /* and taken back from the pool */
            TETHER_END_ALLOW_THREADS
            ASSERT_EQ(rel_live_blocks(), parent - 3);
        }
        t_finalize(g_rt);
        ASSERT_EQ(rel_live_blocks(), 0);
        _exit(0);
    }
    int status = 0;
    ASSERT(pid > 0);
    TETHER_BEGIN_ALLOW_THREADS
    while (waitpid(pid, &status, 0) < 0)
        ASSERT(errno == EINTR);
    TETHER_END_ALLOW_THREADS
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    ASSERT_EQ(rel_live_blocks(), parent); /* the parent's pool is intact */
    teardown();
}

/* A new thread's state with an asynchronous exception raised at it while
   it is detached, never delivered. */
static tether_thread g_obj;

static void *raised_at_while_detached(void *arg)
{
    (void)arg;
    tether_gilstate st;
    ASSERT_OK(tether_ensure(g_target, &st));
    ASSERT_OK(tether_thread_current(&g_obj));
    ASSERT_OK(tether_release(st));
    t_sem_post(&g_held);
    t_sem_wait(&g_let_go); /* raised at meanwhile; exits without a checkpoint */
    return NULL;
}

TEST(a_state_with_an_undelivered_exception_is_not_pooled)
{
    setup();
    TETHER_BEGIN_ALLOW_THREADS
    long before = rel_live_blocks();
    pthread_t th = t_pthread(raised_at_while_detached, NULL);
    t_sem_wait(&g_held);
    static int payload;
    atomic_store(&t_dtor_calls, 0);
    ASSERT_OK(tether_thread_raise(g_obj, 7, &payload, t_count_dtor));
    ASSERT_OK(tether_thread_release(g_obj));
    t_sem_post(&g_let_go);
    t_pthread_join(th);
    ASSERT_EQ(atomic_load(&t_dtor_calls), 1);
    ASSERT_EQ(atomic_load(&t_dtor_last), (void *)&payload);
    ASSERT_EQ(rel_live_blocks(), before); /* freed, not pooled */
    TETHER_END_ALLOW_THREADS
    teardown();
}

RUNNER_MAIN(TEST_ENTRY(exited_threads_states_are_reused_without_allocating),
            TEST_ENTRY(the_pool_is_bounded),
            TEST_ENTRY(destroy_empties_the_pool_while_the_interp_lives_on),
            TEST_ENTRY(finalize_empties_the_pool_with_a_thread_saved),
            TEST_ENTRY(a_fork_child_drops_the_pool),
            TEST_ENTRY(a_state_with_an_undelivered_exception_is_not_pooled))
