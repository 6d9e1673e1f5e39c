/*
 * test_fork.c - fork() while other threads run, hold the GIL or wait for
 * it.  The child has one thread and a working runtime: ensure, start, join
 * and finalize work, and joins of threads that only existed in the parent
 * return at once.  The child exits 0 and the parent checks that.
 */
#include <tether/tether.h>

#include <dirent.h>
#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"
#include "support.h"
#include "sanitizers.h"

/* ThreadSanitizer cannot follow threads started after a fork of a
   multi-threaded process (its registry keeps the vanished threads and
   reports "dup thread with used id"), so under TSan the child checks
   everything except starting threads. */
#define CHILD_MAY_START_THREADS (!TEST_SANITIZER_THREAD)

enum { SPINNERS = 2 };

static tether_runtime g_rt;
static tether_interp g_interp;
static tether_event g_never; /* the parked thread waits for it */
static tether_thread g_threads[SPINNERS + 1];
static size_t g_threads_before; /* thread_list count before they started */
static atomic_int g_stop, g_spins;

static int spinner(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_stop)) {
        ASSERT_OK(tether_checkpoint());
        atomic_fetch_add(&g_spins, 1);
    }
    return TETHER_OK;
}

static int parked(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_event_wait(g_never, -1));
    return TETHER_OK;
}

/* Two spinners that keep passing the GIL around, and one parked thread. */
static void start_threads(void)
{
    g_rt = t_runtime_interval(200);
    g_interp = t_main_interp(g_rt);
    ASSERT_OK(tether_event_new(&g_never));
    g_threads_before = t_thread_count(g_interp);
    for (int i = 0; i < SPINNERS; i++)
        g_threads[i] = t_start(g_interp, spinner, NULL);
    g_threads[SPINNERS] = t_start(g_interp, parked, NULL);
    while (atomic_load(&g_spins) < 1000)
        ASSERT_OK(tether_sleep(MS(1)));
}

static void stop_threads(void)
{
    atomic_store(&g_stop, 1);
    ASSERT_OK(tether_event_set(g_never));
    for (int i = 0; i <= SPINNERS; i++)
        ASSERT_EQ(t_join(g_threads[i]), TETHER_OK);
    ASSERT_OK(tether_event_free(g_never));
    t_finalize(g_rt);
}

static int os_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    ASSERT(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void *ensure_release(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100; i++) {
        tether_gilstate st;
        ASSERT_OK(tether_ensure(g_interp, &st));
        ASSERT_OK(tether_release(st));
    }
    return NULL;
}

/* Runs in the child, attached and holding the GIL. */
static void check_child(void)
{
    ASSERT_EQ(os_threads(), 1);
    ASSERT_EQ(t_thread_count(g_interp), g_threads_before);
    for (int i = 0; i <= SPINNERS; i++) {
        ASSERT_EQ(tether_thread_is_alive(g_threads[i]), 0);
        ASSERT_OK(tether_thread_join(g_threads[i], 0)); /* at once */
        ASSERT_OK(tether_thread_release(g_threads[i]));
    }
    if (CHILD_MAY_START_THREADS) {
        t_run_foreign(ensure_release, NULL);
        tether_thread t = t_start(g_interp, t_return_arg, RESULT(TETHER_EXIT));
        ASSERT_EQ(t_join(t), TETHER_EXIT);
    } else {
        tether_tstate ts;
        ASSERT_OK(tether_save_thread(&ts));
        ensure_release(NULL);
        ASSERT_OK(tether_restore_thread(ts));
    }
    ASSERT_OK(tether_checkpoint());
    t_finalize(g_rt);
}

static void expect_child_ok(pid_t pid)
{
    int status = 0;
    ASSERT(pid > 0);
    TETHER_BEGIN_ALLOW_THREADS
    while (waitpid(pid, &status, 0) < 0)
        ASSERT(errno == EINTR);
    TETHER_END_ALLOW_THREADS
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
}

/* The forking thread holds the GIL; the spinners wait for it. */
TEST(fork_holding_gil)
{
    start_threads();
    ASSERT_EQ(tether_gil_held(), 1);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        ASSERT_EQ(tether_gil_held(), 1);
        check_child();
        _exit(0);
    }
    expect_child_ok(pid);
    stop_threads();
}

/* The forking thread is detached; a spinner holds the GIL, which no thread
   of the child holds. */
TEST(fork_while_other_holds)
{
    start_threads();
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    int spins = atomic_load(&g_spins);
    while (atomic_load(&g_spins) < spins + 1000)
        ; /* the spinners run: one of them holds the GIL */
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        ASSERT_EQ(tether_gil_held(), 0);
        ASSERT_OK(tether_restore_thread(ts));
        check_child();
        _exit(0);
    }
    ASSERT_OK(tether_restore_thread(ts));
    expect_child_ok(pid);
    stop_threads();
}

/* A child can fork again, and each generation keeps working. */
TEST(fork_twice)
{
    start_threads();
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        fflush(NULL);
        pid_t grandchild = fork();
        if (grandchild == 0) {
            check_child();
            _exit(0);
        }
        expect_child_ok(grandchild);
        check_child();
        _exit(0);
    }
    expect_child_ok(pid);
    stop_threads();
}

RUNNER_MAIN(TEST_ENTRY(fork_holding_gil), TEST_ENTRY(fork_while_other_holds),
            TEST_ENTRY(fork_twice))
