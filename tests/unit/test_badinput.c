/*
 * test_badinput.c - every public function given NULL outs, out-of-range
 * arguments, or called in the wrong state returns its documented status,
 * leaves a last-error sentence naming itself, and changes nothing.  Also:
 * status names and messages, the version functions, and
 * TETHER_CONFIG_ABORT_ON_MISUSE.  (Bad handles: test_handles.c.)
 */
#include <tether/tether.h>

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"
#include "support.h"

static tether_runtime g_rt;
static tether_interp g_interp;

static void setup(void)
{
    g_rt = t_runtime_main(NULL, &g_interp);
}

/* ------------------------------------------------------------------------
 * NULL outs and bad arguments
 * ---------------------------------------------------------------------- */

TEST(null_outs)
{
    setup();
    tether_thread me;
    ASSERT_OK(tether_thread_current(&me));
    ASSERT_FAILS(tether_runtime_create(NULL, NULL), TETHER_EINVAL,
                 "tether_runtime_create");
    ASSERT_FAILS(tether_runtime_main_interp(g_rt, NULL), TETHER_EINVAL,
                 "tether_runtime_main_interp");
    ASSERT_FAILS(tether_interp_create(g_rt, NULL), TETHER_EINVAL,
                 "tether_interp_create");
    ASSERT_FAILS(tether_get_switch_interval(g_rt, NULL), TETHER_EINVAL,
                 "tether_get_switch_interval");
    ASSERT_FAILS(tether_ensure(g_interp, NULL), TETHER_EINVAL, "tether_ensure");
    ASSERT_FAILS(tether_save_thread(NULL), TETHER_EINVAL, "tether_save_thread");
    ASSERT_FAILS(tether_thread_start(g_interp, t_return_arg, NULL, NULL, NULL),
                 TETHER_EINVAL, "tether_thread_start");
    ASSERT_FAILS(tether_thread_current(NULL), TETHER_EINVAL, "tether_thread_current");
    ASSERT_FAILS(tether_thread_ident(me, NULL), TETHER_EINVAL, "tether_thread_ident");
    ASSERT_FAILS(tether_thread_name(me, NULL), TETHER_EINVAL, "tether_thread_name");
    ASSERT_FAILS(tether_thread_result(me, NULL), TETHER_EINVAL,
                 "tether_thread_result");
    ASSERT_FAILS(tether_thread_list(g_interp, NULL, 0, NULL), TETHER_EINVAL,
                 "tether_thread_list");
    ASSERT_FAILS(tether_lock_new(NULL), TETHER_EINVAL, "tether_lock_new");
    ASSERT_FAILS(tether_event_new(NULL), TETHER_EINVAL, "tether_event_new");
    ASSERT_FAILS(tether_gil_stats_get(g_interp, NULL), TETHER_EINVAL,
                 "tether_gil_stats_get");
    ASSERT_FAILS(tether_get_thread_userdata(NULL), TETHER_EINVAL,
                 "tether_get_thread_userdata");
    ASSERT_OK(tether_thread_release(me));
    ASSERT_EQ(tether_gil_held(), 1);
    t_finalize(g_rt);
}

/* NULL functions, NULL buffers with room, bad option sizes, bad ranges:
   and afterwards nothing was started, queued or changed. */
TEST(bad_arguments)
{
    setup();
    size_t threads = t_thread_count(g_interp);
    tether_thread t = UNTOUCHED;
    size_t count = UNTOUCHED;
    ASSERT_FAILS(tether_thread_start(g_interp, NULL, NULL, NULL, &t), TETHER_EINVAL,
                 "tether_thread_start");
    tether_thread_opts opts = {.size = 0};
    ASSERT_FAILS(tether_thread_start(g_interp, t_return_arg, NULL, &opts, &t),
                 TETHER_EINVAL, "tether_thread_start");
    ASSERT_EQ(t, UNTOUCHED);
    ASSERT_FAILS(tether_thread_list(g_interp, NULL, 4, &count), TETHER_EINVAL,
                 "tether_thread_list");
    ASSERT_EQ(count, UNTOUCHED);
    ASSERT_EQ(t_thread_count(g_interp), threads);

    ASSERT_FAILS(tether_call_soon(g_interp, NULL, NULL), TETHER_EINVAL,
                 "tether_call_soon");
    ASSERT_FAILS(tether_call_blocking(NULL, NULL, NULL, NULL), TETHER_EINVAL,
                 "tether_call_blocking");
    ASSERT_FAILS(tether_sleep(-1), TETHER_EINVAL, "tether_sleep");
    ASSERT_FAILS(tether_sleep(INT64_MIN), TETHER_EINVAL, "tether_sleep");
    ASSERT_OK(tether_checkpoint()); /* nothing was queued */

    ASSERT_FAILS(tether_set_switch_interval(g_rt, 0), TETHER_EINVAL,
                 "tether_set_switch_interval");
    ASSERT_FAILS(tether_set_switch_interval(g_rt, UINT32_MAX), TETHER_EINVAL,
                 "tether_set_switch_interval");
    uint32_t us = 0;
    ASSERT_OK(tether_get_switch_interval(g_rt, &us));
    ASSERT_EQ(us, 5000);
    ASSERT_FAILS(tether_fault_inject(0, 1, 1), TETHER_EINVAL, "tether_fault_inject");
    ASSERT_FAILS(tether_fault_inject(99, 1, 1), TETHER_EINVAL, "tether_fault_inject");
    ASSERT_FAILS(tether_interp_destroy(g_interp, 0), TETHER_EINVAL,
                 "tether_interp_destroy");
    ASSERT_EQ(tether_gil_held(), 1);
    t_finalize(g_rt);
}

/* ------------------------------------------------------------------------
 * Wrong state
 * ---------------------------------------------------------------------- */

static int dummy_blocking(void *arg)
{
    (void)arg;
    return TETHER_OK;
}

/* A thread that never attached may call none of the [gil-held] or
   [owner-thread] functions. */
static void *unattached(void *arg)
{
    (void)arg;
    tether_tstate ts = UNTOUCHED;
    tether_thread t = UNTOUCHED;
    void *ud = &ud;
    int64_t code = UNTOUCHED;
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_FAILS(tether_save_thread(&ts), TETHER_ESTATE, "tether_save_thread");
    ASSERT_EQ(ts, UNTOUCHED);
    ASSERT_FAILS(tether_restore_thread(ts), TETHER_ESTATE, "tether_restore_thread");
    ASSERT_FAILS(tether_checkpoint(), TETHER_ESTATE, "tether_checkpoint");
    ASSERT_FAILS(tether_thread_current(&t), TETHER_ESTATE, "tether_thread_current");
    ASSERT_EQ(t, UNTOUCHED);
    ASSERT_FAILS(tether_call_blocking(dummy_blocking, NULL, NULL, NULL),
                 TETHER_ESTATE, "tether_call_blocking");
    ASSERT_FAILS(tether_async_fetch(&code, NULL, NULL), TETHER_ESTATE,
                 "tether_async_fetch");
    ASSERT_EQ(code, UNTOUCHED);
    ASSERT_FAILS(tether_async_defer(), TETHER_ESTATE, "tether_async_defer");
    ASSERT_FAILS(tether_async_allow(), TETHER_ESTATE, "tether_async_allow");
    ASSERT_FAILS(tether_set_thread_userdata(NULL), TETHER_ESTATE,
                 "tether_set_thread_userdata");
    ASSERT_FAILS(tether_get_thread_userdata(&ud), TETHER_ESTATE,
                 "tether_get_thread_userdata");
    ASSERT(ud == &ud);
    ASSERT_FAILS(tether_release(0x77), TETHER_ESTATE, "tether_release");
    return NULL;
}

TEST(unattached_thread)
{
    setup();
    t_run_foreign(unattached, NULL);
    t_finalize(g_rt);
}

TEST(attached_misuse)
{
    setup();
    ASSERT_FAILS(tether_restore_thread(0x77), TETHER_ESTATE, "tether_restore_thread");
    ASSERT_FAILS(tether_async_allow(), TETHER_ESTATE, "tether_async_allow");
    ASSERT_FAILS(tether_async_fetch(NULL, NULL, NULL), TETHER_ESTATE,
                 "tether_async_fetch");
    ASSERT_FAILS(tether_release(0), TETHER_EINVAL, "tether_release");
    tether_runtime rt2 = UNTOUCHED;
    ASSERT_FAILS(tether_runtime_create(NULL, &rt2), TETHER_ESTATE,
                 "tether_runtime_create");
    ASSERT_EQ(rt2, UNTOUCHED);
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_checkpoint());
    t_finalize(g_rt);
}

static void *count_malloc(size_t n, void *ud)
{
    (void)ud;
    return malloc(n);
}

static void count_free(void *p, void *ud)
{
    (void)ud;
    free(p);
}

TEST(allocator_arguments)
{
    tether_allocator a = {.size = sizeof a, .malloc_fn = count_malloc,
                          .free_fn = count_free};
    tether_allocator small = a, half = a;
    small.size = 1;
    half.free_fn = NULL;
    ASSERT_FAILS(tether_set_allocator(&small), TETHER_EINVAL, "tether_set_allocator");
    ASSERT_FAILS(tether_set_allocator(&half), TETHER_EINVAL, "tether_set_allocator");
    setup();
    ASSERT_FAILS(tether_set_allocator(&a), TETHER_ESTATE, "tether_set_allocator");
    ASSERT_FAILS(tether_set_allocator(NULL), TETHER_ESTATE, "tether_set_allocator");
    t_finalize(g_rt);
}

/* The allocator is replaced only while nothing made with the current one
   is alive, so no block is freed by an allocator that did not make it:
   a lock, an event, a channel and a received message each keep it. */
static atomic_long g_swap_live;

static void *swap_malloc(size_t n, void *ud)
{
    (void)ud;
    atomic_fetch_add(&g_swap_live, 1);
    return malloc(n);
}

static void swap_free(void *p, void *ud)
{
    (void)ud;
    atomic_fetch_sub(&g_swap_live, 1);
    free(p);
}

TEST(allocator_refused_while_blocks_live)
{
    tether_allocator a = {.size = sizeof a, .malloc_fn = swap_malloc,
                          .free_fn = swap_free};
    tether_lock l;
    tether_event e;
    tether_channel ch;
    void *msg;
    size_t len;

    ASSERT_OK(tether_lock_new(&l));
    ASSERT_FAILS(tether_set_allocator(&a), TETHER_ESTATE, "tether_set_allocator");
    ASSERT_CONTAINS(tether_last_error(), "still alive");
    ASSERT_OK(tether_lock_free(l));

    ASSERT_OK(tether_event_new(&e));
    ASSERT_FAILS(tether_set_allocator(&a), TETHER_ESTATE, "tether_set_allocator");
    ASSERT_OK(tether_event_free(e));

    ASSERT_OK(tether_channel_new(0, &ch));
    ASSERT_OK(tether_channel_send(ch, "abc", 3, 0));
    ASSERT_OK(tether_channel_recv(ch, &msg, &len, 0));
    ASSERT_OK(tether_channel_release(ch));
    ASSERT_FAILS(tether_set_allocator(&a), TETHER_ESTATE, "tether_set_allocator");
    tether_channel_msg_free(msg);

    /* Nothing alive: it is replaced, and what it makes it frees. */
    ASSERT_OK(tether_set_allocator(&a));
    ASSERT_OK(tether_lock_new(&l));
    ASSERT(atomic_load(&g_swap_live) > 0);
    ASSERT_FAILS(tether_set_allocator(NULL), TETHER_ESTATE, "tether_set_allocator");
    ASSERT_OK(tether_lock_free(l));
    ASSERT_EQ(atomic_load(&g_swap_live), 0);
    ASSERT_OK(tether_set_allocator(NULL));

    /* After a runtime is finalized, its blocks are gone too. */
    tether_runtime rt = t_runtime(NULL);
    t_finalize(rt);
    ASSERT_OK(tether_set_allocator(&a));
    rt = t_runtime(NULL);
    t_finalize(rt);
    ASSERT_EQ(atomic_load(&g_swap_live), 0);
    ASSERT_OK(tether_set_allocator(NULL));
}

/* ------------------------------------------------------------------------
 * Statuses, versions, the last error
 * ---------------------------------------------------------------------- */

static void check_status(int code, int value, const char *name, const char *msg)
{
    ASSERT_EQ(code, value);
    ASSERT_STREQ(tether_status_name(code), name);
    ASSERT_STREQ(tether_strerror(code), msg);
}

TEST(status_names)
{
#define CHECK(name, value, msg) check_status(TETHER_##name, value, #name, msg);
    TETHER_STATUS_MAP(CHECK)
#undef CHECK
    for (int code = TETHER__STATUS_LAST; code <= 0; code++)
        ASSERT(strcmp(tether_status_name(code), "UNKNOWN") != 0);
    const int unknown[] = {TETHER__STATUS_LAST - 1, -1000, 2, 12345, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        ASSERT_STREQ(tether_status_name(unknown[i]), "UNKNOWN");
        ASSERT_STREQ(tether_strerror(unknown[i]), "unknown status");
    }
}

TEST(versions)
{
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", TETHER_VERSION_MAJOR,
             TETHER_VERSION_MINOR, TETHER_VERSION_PATCH);
    ASSERT_STREQ(tether_version_string(), want);
    ASSERT_EQ(tether_abi_version(), TETHER_ABI_VERSION);
    ASSERT_EQ(tether_abi_version(),
              ((uint32_t)TETHER_ABI_MAJOR << 16) | TETHER_ABI_MINOR);
}

static void *fresh_last_error(void *arg)
{
    (void)arg;
    ASSERT_STREQ(tether_last_error(), "");
    ASSERT_FAILS(tether_sleep(-1), TETHER_EINVAL, "tether_sleep");
    return NULL;
}

/* The sentence is per thread: a new thread starts with "", and another
   thread's failure does not change ours. */
TEST(last_error_per_thread)
{
    ASSERT_STREQ(tether_last_error(), "");
    ASSERT_FAILS(tether_lock_new(NULL), TETHER_EINVAL, "tether_lock_new");
    t_pthread_join(t_pthread(fresh_last_error, NULL));
    ASSERT_CONTAINS(tether_last_error(), "tether_lock_new");
}

/* ------------------------------------------------------------------------
 * TETHER_CONFIG_ABORT_ON_MISUSE
 * ---------------------------------------------------------------------- */

/* Runs fn in a forked child whose stderr is captured; returns the wait
   status and the stderr text (to free). */
static int in_child(void (*fn)(void), char **err)
{
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        fn();
        _exit(0);
    }
    close(fds[1]);
    *err = t_read_all(fds[0]);
    close(fds[0]);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    return status;
}

static tether_runtime abort_runtime(void)
{
    tether_config cfg = {.size = sizeof cfg, .flags = TETHER_CONFIG_ABORT_ON_MISUSE};
    return t_runtime(&cfg);
}

static void misuse_release(void)
{
    abort_runtime();
    (void)tether_release(0x1234567);
    _exit(3); /* not reached */
}

static void misuse_bad_handle(void)
{
    abort_runtime();
    (void)tether_lock_acquire(0xdeadbeefull, 0);
    _exit(3);
}

/* A failure that is not misuse (a timeout) still returns. */
static void no_misuse(void)
{
    tether_lock l;
    tether_runtime rt = abort_runtime();
    ASSERT_OK(tether_lock_new(&l));
    ASSERT_OK(tether_lock_acquire(l, 0));
    ASSERT_STATUS(tether_lock_acquire(l, 0), TETHER_ETIMEDOUT);
    ASSERT_OK(tether_lock_release(l));
    ASSERT_OK(tether_lock_free(l));
    t_finalize(rt);
}

/* Runs fn in a child that must die of signal `sig`, or exit 0 if `sig` is
   0; its stderr must name `func` if that is not NULL. */
static void expect_child(void (*fn)(void), int sig, const char *func)
{
    char *err = NULL;
    int status = in_child(fn, &err);
    int ok = sig ? WIFSIGNALED(status) && WTERMSIG(status) == sig
                 : WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok)
        runner_fail(__FILE__, __LINE__, "child wait status 0x%x; stderr: %s",
                    status, err);
    if (func)
        ASSERT_CONTAINS(err, func);
    free(err);
}

/* The flag is the runtime's: a thread attached to another runtime made
   without it gets the status back. */
static void misuse_in_other_runtime(void)
{
    abort_runtime();
    tether_tstate saved;
    ASSERT_OK(tether_save_thread(&saved));
    tether_runtime plain = t_runtime(NULL); /* attached to this one now */
    ASSERT_FAILS(tether_lock_acquire(0xdeadbeefull, 0), TETHER_EBADHANDLE,
                 "tether_lock_acquire");
    ASSERT_FAILS(tether_release(0x1234567), TETHER_ESTATE, "tether_release");
    t_finalize(plain);
    ASSERT_OK(tether_restore_thread(saved)); /* back in the aborting one */
}

/* ...and a thread that never used the aborting runtime too. */
static void *misuse_unrelated_thread(void *arg)
{
    (void)arg;
    ASSERT_FAILS(tether_lock_acquire(0xdeadbeefull, 0), TETHER_EBADHANDLE,
                 "tether_lock_acquire");
    ASSERT_FAILS(tether_checkpoint(), TETHER_ESTATE, "tether_checkpoint");
    return NULL;
}

static void misuse_on_unrelated_thread(void)
{
    abort_runtime();
    t_run_foreign(misuse_unrelated_thread, NULL);
}

/* Calling a callback whose interpreter was destroyed returns zero
   (ffi.md), even on a thread of an aborting runtime: the library's own
   ensure of the dead interpreter is not the caller's misuse. */
static int never_called(void **args, void *ret, void *ud)
{
    (void)args, (void)ret, (void)ud;
    ASSERT(0);
    return TETHER_OK;
}

static void callback_of_destroyed_interp(void)
{
    tether_runtime rt = abort_runtime();
    tether_interp sub;
    tether_callback cb;
    ASSERT_OK(tether_interp_create(rt, &sub));
    ASSERT_OK(tether_callback_new(sub, "i32(i32)", never_called, NULL, &cb));
    int32_t (*code)(int32_t);
    *(void **)&code = tether_callback_code(cb);
    ASSERT(code != NULL);
    ASSERT_OK(tether_interp_destroy(sub, SECONDS(10)));
    ASSERT_EQ(code(42), 0);
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_callback_free(cb));
    t_finalize(rt);
}

TEST(abort_on_misuse_is_per_runtime)
{
    expect_child(misuse_in_other_runtime, 0, NULL);
    expect_child(misuse_on_unrelated_thread, 0, NULL);
    expect_child(callback_of_destroyed_interp, 0, NULL);
}

TEST(abort_on_misuse)
{
    expect_child(misuse_release, SIGABRT, "tether_release");
    expect_child(misuse_bad_handle, SIGABRT, "tether_lock_acquire");
    expect_child(no_misuse, 0, NULL);
}

/* Without the flag, the same misuse only returns a status. */
TEST(misuse_returns_by_default)
{
    setup();
    ASSERT_FAILS(tether_release(0x1234567), TETHER_ESTATE, "tether_release");
    ASSERT_FAILS(tether_lock_acquire(0xdeadbeefull, 0), TETHER_EBADHANDLE,
                 "tether_lock_acquire");
    t_finalize(g_rt);
}

/* A thread whose ensures nested deeper than the ensure stack's inline
   frames, then unwound, keeps no block alive: once its runtime is
   finalized the allocator may be replaced (tether.h's rule), as before
   the stack went through t_malloc (issue 17 review). */
TEST(allocator_after_a_deep_ensure_stack)
{
    tether_allocator a = {.size = sizeof a, .malloc_fn = swap_malloc,
                          .free_fn = swap_free};
    tether_runtime rt = t_runtime(NULL);
    tether_interp mi, other;
    ASSERT_OK(tether_runtime_main_interp(rt, &mi));
    ASSERT_OK(tether_interp_create(rt, &other));
    tether_gilstate st[20];
    for (int i = 0; i < 20; i++) /* each switch is a frame: past the 8 inline */
        ASSERT_OK(tether_ensure(i % 2 ? mi : other, &st[i]));
    for (int i = 20; i-- > 0;)
        ASSERT_OK(tether_release(st[i]));
    ASSERT_OK(tether_interp_destroy(other, -1));
    t_finalize(rt);
    ASSERT_OK(tether_set_allocator(&a));
    ASSERT_OK(tether_set_allocator(NULL));
}

RUNNER_MAIN(TEST_ENTRY(null_outs), TEST_ENTRY(bad_arguments),
            TEST_ENTRY(unattached_thread), TEST_ENTRY(attached_misuse),
            TEST_ENTRY(allocator_arguments), TEST_ENTRY(status_names),
            TEST_ENTRY(versions), TEST_ENTRY(last_error_per_thread),
            TEST_ENTRY(abort_on_misuse), TEST_ENTRY(misuse_returns_by_default),
            TEST_ENTRY(abort_on_misuse_is_per_runtime),
            TEST_ENTRY(allocator_refused_while_blocks_live),
            TEST_ENTRY(allocator_after_a_deep_ensure_stack))
