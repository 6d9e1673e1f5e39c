/*
 * test_ffi_race.c - tether_callback_free against a call that has entered
 * the callback's closure but not yet counted itself (issue 12 F6).
 *
 * Built with the library's sources and TETHER_TEST_HOOKS, which gives the
 * test a hook in that window (core/ffi.c: ffi_test_entry_hook).  The hook
 * holds the call there while another thread frees the callback.  Before
 * the fix the free returned at once and destroyed the callback under the
 * held call (a use after free: the call then locked the freed mutex); now
 * the free waits for the call to leave the window.  The pause only gives a
 * wrong free time to return; a right one waits whatever the timing.
 *
 * Earlier still, a call is in libffi's trampoline and has not reached the
 * entry lock at all: no free can see it.  ffi_test_trampoline_hook holds a
 * call there while the free runs to its end; the call must then find the
 * closure block (in limbo) intact and its callback gone, and return zero
 * without running the guest.  Before the closure block existed, the call
 * read the freed callback record (ASan: heap-use-after-free in enter).
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <tether/tether.h>

#include "runner.h"
#include "sanitizers.h"

extern void (*ffi_test_entry_hook)(void);
extern void (*ffi_test_trampoline_hook)(void);
extern void (*ffi_test_after_entry_hook)(void);
extern size_t ffi_test_limbo_count(void);

static atomic_int g_armed, g_entered, g_go, g_freed, g_freed_in_window;
static tether_callback g_cb;
static int g_free_rc = -99;
static int32_t g_result = -1;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void hold_in_window(void)
{
    if (!atomic_exchange(&g_armed, 0))
        return;
    atomic_store(&g_entered, 1);
    while (!atomic_load(&g_go))
        sleep_ms(1);
    atomic_store(&g_freed_in_window, atomic_load(&g_freed));
}

static int plus_one(void **args, void *ret, void *userdata)
{
    (void)userdata;
    *(int32_t *)ret = *(int32_t *)args[0] + 1;
    return TETHER_OK;
}

static void *caller(void *arg)
{
    int32_t (*code)(int32_t);
    memcpy(&code, &arg, sizeof code);
    g_result = code(5);
    return NULL;
}

static void *freer(void *arg)
{
    (void)arg;
    g_free_rc = tether_callback_free(g_cb);
    atomic_store(&g_freed, 1);
    return NULL;
}

TEST(free_waits_for_a_call_in_the_closure_not_yet_counted)
{
    tether_runtime rt;
    tether_interp interp;
    ASSERT_OK(tether_runtime_create(NULL, &rt));
    ASSERT_OK(tether_runtime_main_interp(rt, &interp));
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts)); /* the call needs the GIL */
    ASSERT_OK(tether_callback_new(interp, "i32(i32)", plus_one, NULL, &g_cb));
    ffi_test_entry_hook = hold_in_window;
    atomic_store(&g_armed, 1);

    pthread_t c, f;
    ASSERT_EQ(pthread_create(&c, NULL, caller, tether_callback_code(g_cb)), 0);
    while (!atomic_load(&g_entered))
        sleep_ms(1);
    ASSERT_EQ(pthread_create(&f, NULL, freer, NULL), 0);
    sleep_ms(50); /* time for a free that does not wait to return */
    atomic_store(&g_go, 1);
    pthread_join(c, NULL);
    pthread_join(f, NULL);

    ASSERT_EQ(atomic_load(&g_freed_in_window), 0);
    ASSERT_OK(g_free_rc);
    ASSERT_EQ(g_result, 0); /* it saw the callback closing: zero */
    ffi_test_entry_hook = NULL;
    ASSERT_OK(tether_restore_thread(ts));
    ASSERT_OK(tether_runtime_finalize(rt, -1));
}

static atomic_int g_guest_runs, g_on_free_runs, g_t_armed, g_t_entered, g_t_go;

static void hold_in_trampoline(void)
{
    if (!atomic_exchange(&g_t_armed, 0))
        return;
    atomic_store(&g_t_entered, 1);
    while (!atomic_load(&g_t_go))
        sleep_ms(1);
}

static int counted_plus_one(void **args, void *ret, void *userdata)
{
    (void)userdata;
    atomic_fetch_add(&g_guest_runs, 1);
    *(int32_t *)ret = *(int32_t *)args[0] + 1;
    return TETHER_OK;
}

static void note_free(void *ud)
{
    (void)ud;
    atomic_fetch_add(&g_on_free_runs, 1);
}

TEST(a_call_still_in_the_trampoline_outlives_the_free)
{
    tether_runtime rt;
    tether_interp interp;
    ASSERT_OK(tether_runtime_create(NULL, &rt));
    ASSERT_OK(tether_runtime_main_interp(rt, &interp));
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    ASSERT_OK(tether_callback_new(interp, "i32(i32)", counted_plus_one, NULL,
                                  &g_cb));
    ASSERT_OK(tether_callback_on_free(g_cb, note_free, NULL));
    size_t in_limbo = ffi_test_limbo_count();
    ffi_test_trampoline_hook = hold_in_trampoline;
    atomic_store(&g_t_armed, 1);

    pthread_t c;
    ASSERT_EQ(pthread_create(&c, NULL, caller, tether_callback_code(g_cb)), 0);
    while (!atomic_load(&g_t_entered))
        sleep_ms(1);
    /* The call has not taken the entry lock: the free cannot see it, and
       destroys the callback at once. */
    ASSERT_OK(tether_callback_free(g_cb));
    ASSERT_EQ(atomic_load(&g_on_free_runs), 1);
    ASSERT_EQ(ffi_test_limbo_count(), in_limbo + 1);
    atomic_store(&g_t_go, 1); /* now it goes on, into freed territory */
    pthread_join(c, NULL);

    ASSERT_EQ(g_result, 0);
    ASSERT_EQ(atomic_load(&g_guest_runs), 0);
    ffi_test_trampoline_hook = NULL;
    ASSERT_OK(tether_restore_thread(ts));
    ASSERT_OK(tether_runtime_finalize(rt, -1));
}

/* The limbo frees a block only after LIMBO_NS (250 ms), when a later
   callback_new or destruction looks: the sleep makes the first block old
   enough, whatever the load; the second is measured against the clock
   reading that put it there, so it is never freed at once. */
TEST(closure_blocks_wait_in_limbo_then_are_freed)
{
    tether_runtime rt;
    tether_interp interp;
    ASSERT_OK(tether_runtime_create(NULL, &rt));
    ASSERT_OK(tether_runtime_main_interp(rt, &interp));
    tether_callback a, b;
    ASSERT_OK(tether_callback_new(interp, "i32(i32)", plus_one, NULL, &a));
    ASSERT_OK(tether_callback_free(a));
    ASSERT_NE(ffi_test_limbo_count(), 0);
    sleep_ms(300);
    ASSERT_OK(tether_callback_new(interp, "i32(i32)", plus_one, NULL, &b));
    ASSERT_EQ(ffi_test_limbo_count(), 0);
    ASSERT_OK(tether_callback_free(b));
    ASSERT_EQ(ffi_test_limbo_count(), 1);
    ASSERT_OK(tether_runtime_finalize(rt, -1));
}

/* The fork handlers around the entry lock: prepare takes it for writing,
   the parent and the child let it go.  glibc's unlock tells a writer from
   a reader by the caller's thread id, which in the child is not the id
   that locked it: an unlock there released a read lock that was never
   taken, left the lock written-locked, and the child's first call or free
   of any callback hung (the case's timeout).  The child now starts with a
   new lock.  Its own calls and frees must work, and a block in limbo from
   before the fork must be freed as usual. */
static int child_uses_callbacks(tether_interp interp, tether_callback old)
{
    tether_callback cb;
    if (tether_callback_new(interp, "i32(i32)", plus_one, NULL, &cb) != TETHER_OK)
        return 10;
    int32_t (*f)(int32_t);
    void *code = tether_callback_code(cb);
    memcpy(&f, &code, sizeof f);
    if (f(41) != 42)
        return 11;
    if (tether_callback_free(cb) != TETHER_OK ||
        tether_callback_free(old) != TETHER_OK)
        return 12;
    sleep_ms(300); /* the limbo's blocks are old enough */
    if (tether_callback_new(interp, "i32(i32)", plus_one, NULL, &cb) != TETHER_OK ||
        ffi_test_limbo_count() != 0 || tether_callback_free(cb) != TETHER_OK)
        return 13;
    return 0;
}

TEST(callbacks_work_in_a_fork_child)
{
    tether_runtime rt;
    tether_interp interp;
    ASSERT_OK(tether_runtime_create(NULL, &rt));
    ASSERT_OK(tether_runtime_main_interp(rt, &interp));
    tether_callback first, old;
    /* Installs the fork handlers, and leaves a block in limbo. */
    ASSERT_OK(tether_callback_new(interp, "i32(i32)", plus_one, NULL, &first));
    ASSERT_OK(tether_callback_free(first));
    ASSERT_OK(tether_callback_new(interp, "i32(i32)", plus_one, NULL, &old));
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    pid_t pid = fork();
    ASSERT_NE(pid, -1);
    if (pid == 0)
        _exit(child_uses_callbacks(interp, old));
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_EQ(WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status), 0);
    ASSERT_OK(tether_restore_thread(ts));
    /* And the parent's lock is still usable. */
    ASSERT_OK(tether_callback_free(old));
    ASSERT_OK(tether_runtime_finalize(rt, -1));
}


/* A late call (the code called after its callback was destroyed, while the
   block is in limbo) lets go of the entry lock and then says so on stderr.
   It must not read its block after letting go: from that moment a sweep
   may free it.  The hook, right after the call lets go, waits until the
   block is old enough and makes a new callback of another signature, whose
   sweep frees the block (the test build zeroes a block's own part first;
   the new callback may reuse the memory as well).  Before the fix the
   report read the freed block: it printed the wrong signature (or none)
   and set the flag of whichever callback then owned the memory. */
static tether_interp g_late_interp;
static tether_callback g_late_new;
static atomic_int g_late_armed;
static int g_late_new_rc = -99;

static int twice(void **args, void *ret, void *userdata)
{
    (void)userdata;
    *(double *)ret = *(double *)args[0] * 2;
    return TETHER_OK;
}

static void sweep_after_entry(void)
{
    if (!atomic_exchange(&g_late_armed, 0))
        return;
    sleep_ms(300); /* older than the limbo, whatever the load */
    g_late_new_rc = tether_callback_new(g_late_interp, "f64(f64)", twice, NULL,
                                        &g_late_new);
}

TEST(a_late_call_reports_without_reading_a_freed_block)
{
    tether_runtime rt;
    ASSERT_OK(tether_runtime_create(NULL, &rt));
    ASSERT_OK(tether_runtime_main_interp(rt, &g_late_interp));
    tether_callback cb;
    ASSERT_OK(tether_callback_new(g_late_interp, "i32(i32)", plus_one, NULL, &cb));
    int32_t (*f)(int32_t);
    void *code = tether_callback_code(cb);
    memcpy(&f, &code, sizeof f);
    ASSERT_OK(tether_callback_free(cb));

    char path[] = "/tmp/tether_late_call_XXXXXX";
    int fd = mkstemp(path);
    ASSERT_NE(fd, -1);
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    ASSERT_NE(saved, -1);
    ASSERT_NE(dup2(fd, 2), -1);
    ffi_test_after_entry_hook = sweep_after_entry;
    atomic_store(&g_late_armed, 1);
    int32_t r = f(5); /* the late call */
    ffi_test_after_entry_hook = NULL;
    fflush(stderr);
    ASSERT_NE(dup2(saved, 2), -1);
    close(saved);

    char out[1024] = {0};
    ASSERT_NE(lseek(fd, 0, SEEK_SET), (off_t)-1);
    ssize_t n = read(fd, out, sizeof out - 1);
    close(fd);
    ASSERT(n > 0);
    fprintf(stderr, "late call printed: %s", out);
    ASSERT_EQ(r, 0);
    ASSERT_OK(g_late_new_rc);
    ASSERT_CONTAINS(out, "callback i32(i32) was called after it was freed");
    ASSERT_OK(tether_callback_free(g_late_new));
    ASSERT_OK(tether_runtime_finalize(rt, -1));
}

/* A fork while other threads make and free callbacks: libffi's closure
   allocator has a mutex of its own and no fork handler, so a child forked
   while another thread was inside ffi_closure_alloc or ffi_closure_free
   inherited that mutex locked and hung at its first callback_new or sweep
   (about one fork in six, 18 of 100 here before the fix).  The library now
   allocates and frees closures under a lock its fork handlers hold.  The
   child's alarm only turns a hang into a failure. */
static atomic_int g_churn_stop;
static tether_interp g_churn_interp;

static void *churn(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_churn_stop)) {
        tether_callback c;
        if (tether_callback_new(g_churn_interp, "i32(i32)", plus_one, NULL, &c) ==
            TETHER_OK)
            tether_callback_free(c);
    }
    return NULL;
}

static int child_makes_a_callback(void)
{
    alarm(20);
    tether_callback c;
    if (tether_callback_new(g_churn_interp, "i32(i32)", plus_one, NULL, &c) !=
        TETHER_OK)
        return 10;
    int32_t (*f)(int32_t);
    void *code = tether_callback_code(c);
    memcpy(&f, &code, sizeof f);
    if (f(41) != 42)
        return 11;
    return tether_callback_free(c) == TETHER_OK ? 0 : 12;
}

/* Under ASan or TSan the sanitizer's own allocator is not fork-safe: a
   child forked while a churning thread was in malloc hangs in its first
   malloc, whatever the library does (seen: SizeClassAllocator64::
   GetFromAllocator; tests/stress/test_fork_storm.c says the same).  The
   case runs in the builds without them. */
#define FORK_UNDER_CHURN (!TEST_SANITIZER_THREAD && !TEST_SANITIZER_ADDRESS)

TEST(a_fork_while_callbacks_are_made_and_freed)
{
    if (!FORK_UNDER_CHURN) {
        fprintf(stderr, "# skipped: the sanitizer's allocator is not fork-safe\n");
        return;
    }
    tether_runtime rt;
    ASSERT_OK(tether_runtime_create(NULL, &rt));
    ASSERT_OK(tether_runtime_main_interp(rt, &g_churn_interp));
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_create(&th[i], NULL, churn, NULL), 0);
    int failed = 0, first_status = 0;
    for (int i = 0; i < 60; i++) {
        pid_t pid = fork();
        ASSERT_NE(pid, -1);
        if (pid == 0)
            _exit(child_makes_a_callback());
        int status = 0;
        ASSERT_EQ(waitpid(pid, &status, 0), pid);
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
        if (code != 0) { /* one hang is enough */
            failed++;
            first_status = code;
            break;
        }
    }
    atomic_store(&g_churn_stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    ASSERT_EQ(first_status, 0); /* 114: SIGALRM, the child hung */
    ASSERT_EQ(failed, 0);
    ASSERT_OK(tether_restore_thread(ts));
    ASSERT_OK(tether_runtime_finalize(rt, -1));
}

RUNNER_MAIN(TEST_ENTRY(free_waits_for_a_call_in_the_closure_not_yet_counted),
            TEST_ENTRY_T(callbacks_work_in_a_fork_child, 30),
            TEST_ENTRY(a_call_still_in_the_trampoline_outlives_the_free),
            TEST_ENTRY(closure_blocks_wait_in_limbo_then_are_freed),
            TEST_ENTRY(a_late_call_reports_without_reading_a_freed_block),
            TEST_ENTRY_T(a_fork_while_callbacks_are_made_and_freed, 300))
