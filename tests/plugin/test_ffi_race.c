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
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include <tether/tether.h>

#include "runner.h"

extern void (*ffi_test_entry_hook)(void);

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

RUNNER_MAIN(TEST_ENTRY(free_waits_for_a_call_in_the_closure_not_yet_counted))
