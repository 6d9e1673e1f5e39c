/*
 * test_handles.c - zero, stale, forged and wrong-type handles get
 * TETHER_EBADHANDLE from every handle-taking function of tether.h (and
 * tether_callback_code returns NULL), with a last-error sentence naming the
 * function, and change nothing.
 *
 * One table lists every such function.  A fixture holds one live handle of
 * each kind and one stale handle of each kind; each case feeds one family
 * of bad values to every entry of the table and then checks that the live
 * objects still work.
 */
#include <tether/tether.h>

#include "runner.h"
#include "support.h"

enum kind {
    K_RUNTIME,
    K_INTERP,
    K_THREAD,
    K_LOCK,
    K_EVENT,
    K_PLUGIN,
    K_CALLBACK,
    K_CHANNEL,
    K__COUNT
};

static struct {
    uint64_t live[K__COUNT];
    uint64_t stale[K__COUNT];
    size_t threads; /* live threads of the main interpreter */
} fx;

/* Set by callbacks that a rejected call must never run. */
static atomic_int g_ran;

static int never_runs(void *arg)
{
    (void)arg;
    atomic_store(&g_ran, 1);
    return TETHER_OK;
}

static void never_breaks(void *thread_ud, void *ud)
{
    (void)thread_ud;
    (void)ud;
}

static int never_called_back(void **args, void *ret, void *ud)
{
    (void)args;
    (void)ret;
    (void)ud;
    atomic_store(&g_ran, 1);
    return TETHER_OK;
}

/* ------------------------------------------------------------------------
 * One wrapper per function: the handle is the only bad argument, and outs
 * must stay untouched on failure.
 * ---------------------------------------------------------------------- */

#define CHECK_OUT(rc, out)                                                    \
    do {                                                                      \
        if ((rc) != TETHER_OK)                                                \
            ASSERT_EQ((out), UNTOUCHED);                                      \
    } while (0)

static int c_runtime_main_interp(uint64_t h)
{
    tether_interp out = UNTOUCHED;
    int rc = tether_runtime_main_interp(h, &out);
    CHECK_OUT(rc, out);
    return rc;
}

static int c_runtime_finalize(uint64_t h) { return tether_runtime_finalize(h, 0); }

static int c_interp_create(uint64_t h)
{
    tether_interp out = UNTOUCHED;
    int rc = tether_interp_create(h, &out);
    CHECK_OUT(rc, out);
    return rc;
}

static int c_set_switch_interval(uint64_t h)
{
    return tether_set_switch_interval(h, 1234);
}

static int c_get_switch_interval(uint64_t h)
{
    uint32_t out = UNTOUCHED;
    int rc = tether_get_switch_interval(h, &out);
    CHECK_OUT(rc, out);
    return rc;
}

static int c_interp_destroy(uint64_t h) { return tether_interp_destroy(h, 0); }

static int c_ensure(uint64_t h)
{
    tether_gilstate out = UNTOUCHED;
    int rc = tether_ensure(h, &out);
    CHECK_OUT(rc, out);
    return rc;
}

static int c_thread_start(uint64_t h)
{
    tether_thread out = UNTOUCHED;
    int rc = tether_thread_start(h, never_runs, NULL, NULL, &out);
    CHECK_OUT(rc, out);
    return rc;
}

static int c_thread_list(uint64_t h)
{
    size_t count = UNTOUCHED;
    tether_thread buf[4] = {UNTOUCHED, UNTOUCHED, UNTOUCHED, UNTOUCHED};
    int rc = tether_thread_list(h, buf, 4, &count);
    CHECK_OUT(rc, count);
    CHECK_OUT(rc, buf[0]);
    return rc;
}

static int c_raise_by_ident(uint64_t h)
{
    int count = UNTOUCHED;
    int before = atomic_load(&t_dtor_calls);
    int rc = tether_raise_by_ident(h, 1, 7, &count, t_count_dtor, &count);
    CHECK_OUT(rc, count);
    ASSERT_EQ(atomic_load(&t_dtor_calls), before); /* payload not taken */
    return rc;
}

static int c_gil_stats_get(uint64_t h)
{
    tether_gil_stats st = {.size = sizeof st, .acquisitions = UNTOUCHED};
    int rc = tether_gil_stats_get(h, &st);
    CHECK_OUT(rc, st.acquisitions);
    return rc;
}

static int c_call_soon(uint64_t h) { return tether_call_soon(h, never_runs, NULL); }

static int c_set_breaker_hook(uint64_t h)
{
    return tether_interp_set_breaker_hook(h, never_breaks, NULL);
}

static int c_thread_join(uint64_t h) { return tether_thread_join(h, 0); }
static int c_thread_is_alive(uint64_t h) { return tether_thread_is_alive(h); }

static int c_thread_ident(uint64_t h)
{
    uint64_t out = UNTOUCHED;
    int rc = tether_thread_ident(h, &out);
    CHECK_OUT(rc, out);
    return rc;
}

static int c_thread_name(uint64_t h)
{
    static const char untouched[] = "untouched";
    const char *out = untouched;
    int rc = tether_thread_name(h, &out);
    if (rc != TETHER_OK)
        ASSERT(out == untouched);
    return rc;
}

static int c_thread_result(uint64_t h)
{
    int out = (int)UNTOUCHED;
    int rc = tether_thread_result(h, &out);
    CHECK_OUT(rc, (unsigned)out);
    return rc;
}

static int c_thread_release(uint64_t h) { return tether_thread_release(h); }

static int c_thread_raise(uint64_t h)
{
    static int payload;
    int before = atomic_load(&t_dtor_calls);
    int rc = tether_thread_raise(h, 7, &payload, t_count_dtor);
    ASSERT_EQ(atomic_load(&t_dtor_calls), before); /* payload not taken */
    return rc;
}

static int c_lock_free(uint64_t h) { return tether_lock_free(h); }
static int c_lock_acquire(uint64_t h) { return tether_lock_acquire(h, 0); }
static int c_lock_release(uint64_t h) { return tether_lock_release(h); }
static int c_event_free(uint64_t h) { return tether_event_free(h); }
static int c_event_set(uint64_t h) { return tether_event_set(h); }
static int c_event_clear(uint64_t h) { return tether_event_clear(h); }
static int c_event_wait(uint64_t h) { return tether_event_wait(h, 0); }
static int c_event_is_set(uint64_t h) { return tether_event_is_set(h); }

static int c_plugin_load(uint64_t h)
{
    tether_plugin out = UNTOUCHED;
    int rc = tether_plugin_load(h, TETHER_TEST_PLUGIN, &out);
    CHECK_OUT(rc, out);
    return rc;
}

static int c_plugin_unload(uint64_t h) { return tether_plugin_unload(h, 0); }

static int c_plugin_symbol(uint64_t h)
{
    void *out = &g_ran;
    int rc = tether_plugin_symbol(h, "tether_plugin_entry", &out);
    if (rc != TETHER_OK)
        ASSERT(out == &g_ran);
    return rc;
}

static int c_plugin_info(uint64_t h)
{
    static const char untouched[] = "untouched";
    const char *name = untouched, *version = untouched;
    int rc = tether_plugin_info(h, &name, &version);
    if (rc != TETHER_OK)
        ASSERT(name == untouched && version == untouched);
    return rc;
}

static int c_callback_new(uint64_t h)
{
    tether_callback out = UNTOUCHED;
    int rc = tether_callback_new(h, "void()", never_called_back, NULL, &out);
    CHECK_OUT(rc, out);
    return rc;
}

/* The one handle-taking function without a status: NULL means rejected. */
static int c_callback_code(uint64_t h)
{
    return tether_callback_code(h) ? TETHER_OK : TETHER_EBADHANDLE;
}

static int c_callback_free(uint64_t h) { return tether_callback_free(h); }
static int c_channel_retain(uint64_t h) { return tether_channel_retain(h); }
static int c_channel_release(uint64_t h) { return tether_channel_release(h); }
static int c_channel_send(uint64_t h) { return tether_channel_send(h, "x", 1, 0); }

static int c_channel_recv(uint64_t h)
{
    void *data = &g_ran;
    size_t len = UNTOUCHED;
    int rc = tether_channel_recv(h, &data, &len, 0);
    if (rc != TETHER_OK)
        ASSERT(data == &g_ran && len == UNTOUCHED);
    return rc;
}

static int c_channel_close(uint64_t h) { return tether_channel_close(h); }

static int c_channel_count(uint64_t h)
{
    size_t out = UNTOUCHED;
    int rc = tether_channel_count(h, &out);
    CHECK_OUT(rc, out);
    return rc;
}

static void discard_nothing(void *data, size_t len, void *ud)
{
    (void)data, (void)len, (void)ud;
}

static int c_channel_set_discard(uint64_t h)
{
    return tether_channel_set_discard(h, discard_nothing, NULL);
}

struct api_fn {
    const char *name;
    enum kind kind;
    int zero_ok; /* a _free/_release: 0 is a harmless no-op */
    int (*call)(uint64_t h);
};

#define API(fn, kind, zero_ok) {"tether_" #fn, kind, zero_ok, c_##fn}

/* Every function of tether.h that takes a handle. */
static const struct api_fn k_api[] = {
    API(runtime_main_interp, K_RUNTIME, 0),
    API(runtime_finalize, K_RUNTIME, 0),
    API(interp_create, K_RUNTIME, 0),
    API(set_switch_interval, K_RUNTIME, 0),
    API(get_switch_interval, K_RUNTIME, 0),
    API(interp_destroy, K_INTERP, 0),
    API(ensure, K_INTERP, 0),
    API(thread_start, K_INTERP, 0),
    API(thread_list, K_INTERP, 0),
    API(raise_by_ident, K_INTERP, 0),
    API(gil_stats_get, K_INTERP, 0),
    API(call_soon, K_INTERP, 0),
    {"tether_interp_set_breaker_hook", K_INTERP, 0, c_set_breaker_hook},
    API(thread_join, K_THREAD, 0),
    API(thread_is_alive, K_THREAD, 0),
    API(thread_ident, K_THREAD, 0),
    API(thread_name, K_THREAD, 0),
    API(thread_result, K_THREAD, 0),
    API(thread_release, K_THREAD, 1),
    API(thread_raise, K_THREAD, 0),
    API(lock_free, K_LOCK, 1),
    API(lock_acquire, K_LOCK, 0),
    API(lock_release, K_LOCK, 0),
    API(event_free, K_EVENT, 1),
    API(event_set, K_EVENT, 0),
    API(event_clear, K_EVENT, 0),
    API(event_wait, K_EVENT, 0),
    API(event_is_set, K_EVENT, 0),
    API(plugin_load, K_RUNTIME, 0),
    API(plugin_unload, K_PLUGIN, 0),
    API(plugin_symbol, K_PLUGIN, 0),
    API(plugin_info, K_PLUGIN, 0),
    API(callback_new, K_INTERP, 0),
    API(callback_code, K_CALLBACK, 0),
    API(callback_free, K_CALLBACK, 1),
    API(channel_retain, K_CHANNEL, 0),
    API(channel_release, K_CHANNEL, 1),
    API(channel_send, K_CHANNEL, 0),
    API(channel_recv, K_CHANNEL, 0),
    API(channel_close, K_CHANNEL, 0),
    API(channel_count, K_CHANNEL, 0),
    API(channel_set_discard, K_CHANNEL, 0),
};
#define N_API (sizeof k_api / sizeof k_api[0])

/* Calls `f` with `h`, which must be rejected with EBADHANDLE and a sentence
   naming the function.  A known failure first makes sure the sentence is
   fresh. */
static void expect_bad(const struct api_fn *f, uint64_t h)
{
    ASSERT_STATUS(tether_sleep(-1), TETHER_EINVAL);
    int rc = f->call(h);
    if (rc != TETHER_EBADHANDLE)
        runner_fail(__FILE__, __LINE__, "%s(0x%016llx): got %s, want EBADHANDLE",
                    f->name, (unsigned long long)h, tether_status_name(rc));
    ASSERT_CONTAINS(tether_last_error(), f->name);
}

/* ------------------------------------------------------------------------
 * The fixture
 * ---------------------------------------------------------------------- */

/* A runtime made and finalized on a thread that then exits, so nothing of
   it stays referenced: its handles are simply stale. */
static void *make_stale_runtime(void *arg)
{
    uint64_t *stale = arg;
    tether_runtime rt = t_runtime(NULL);
    stale[K_RUNTIME] = rt;
    t_finalize(rt);
    return NULL;
}

static void fixture_up(void)
{
    t_pthread_join(t_pthread(make_stale_runtime, fx.stale));

    tether_runtime rt = t_runtime(NULL);
    fx.live[K_RUNTIME] = rt;
    fx.live[K_INTERP] = t_main_interp(rt);
    ASSERT_OK(tether_thread_current(&fx.live[K_THREAD]));
    ASSERT_OK(tether_lock_new(&fx.live[K_LOCK]));
    ASSERT_OK(tether_event_new(&fx.live[K_EVENT]));
    ASSERT_OK(tether_callback_new(fx.live[K_INTERP], "void()", never_called_back,
                                  NULL, &fx.live[K_CALLBACK]));
    ASSERT_OK(tether_channel_new(4, &fx.live[K_CHANNEL]));

    ASSERT_OK(tether_interp_create(rt, &fx.stale[K_INTERP]));
    ASSERT_OK(tether_interp_destroy(fx.stale[K_INTERP], SECONDS(10)));
    tether_thread t = t_start(fx.live[K_INTERP], t_return_arg, NULL);
    ASSERT_EQ(t_join(t), TETHER_OK);
    fx.stale[K_THREAD] = t;
    fx.threads = t_thread_count(fx.live[K_INTERP]);
    ASSERT_OK(tether_lock_new(&fx.stale[K_LOCK]));
    ASSERT_OK(tether_lock_free(fx.stale[K_LOCK]));
    ASSERT_OK(tether_event_new(&fx.stale[K_EVENT]));
    ASSERT_OK(tether_event_free(fx.stale[K_EVENT]));
    ASSERT_OK(tether_callback_new(fx.live[K_INTERP], "void()", never_called_back,
                                  NULL, &fx.stale[K_CALLBACK]));
    ASSERT_OK(tether_callback_free(fx.stale[K_CALLBACK]));
    ASSERT_OK(tether_channel_new(0, &fx.stale[K_CHANNEL]));
    ASSERT_OK(tether_channel_release(fx.stale[K_CHANNEL]));
    /* Loading the same library again would give the same handle back, so
       the stale one is unloaded first. */
    ASSERT_OK(tether_plugin_load(rt, TETHER_TEST_PLUGIN, &fx.stale[K_PLUGIN]));
    ASSERT_OK(tether_plugin_unload(fx.stale[K_PLUGIN], SECONDS(10)));
    ASSERT_OK(tether_plugin_load(rt, TETHER_TEST_PLUGIN, &fx.live[K_PLUGIN]));
    ASSERT_NE(fx.live[K_PLUGIN], fx.stale[K_PLUGIN]);
}

/* The live objects still work and nothing the rejected calls would have
   done happened. */
static void fixture_check(void)
{
    uint32_t us = 0;
    ASSERT_OK(tether_get_switch_interval(fx.live[K_RUNTIME], &us));
    ASSERT_EQ(us, 5000);
    ASSERT_EQ(tether_gil_held(), 1);
    tether_gilstate st;
    ASSERT_OK(tether_ensure(fx.live[K_INTERP], &st));
    ASSERT_OK(tether_release(st));
    ASSERT_OK(tether_checkpoint()); /* would run a wrongly queued call */
    ASSERT_EQ(atomic_load(&g_ran), 0);
    ASSERT_EQ(t_thread_count(fx.live[K_INTERP]), fx.threads); /* none started */
    uint64_t ident;
    ASSERT_OK(tether_thread_ident(fx.live[K_THREAD], &ident));
    ASSERT_OK(tether_lock_acquire(fx.live[K_LOCK], 0));
    ASSERT_OK(tether_lock_release(fx.live[K_LOCK]));
    ASSERT_EQ(tether_event_is_set(fx.live[K_EVENT]), 0);
    ASSERT_OK(tether_event_set(fx.live[K_EVENT]));
    ASSERT_EQ(tether_event_is_set(fx.live[K_EVENT]), 1);
    ASSERT_OK(tether_event_clear(fx.live[K_EVENT]));
    const char *name = NULL;
    ASSERT_OK(tether_plugin_info(fx.live[K_PLUGIN], &name, NULL));
    ASSERT_STREQ(name, "handles");
    ASSERT(tether_callback_code(fx.live[K_CALLBACK]) != NULL);
    size_t count = UNTOUCHED;
    ASSERT_OK(tether_channel_count(fx.live[K_CHANNEL], &count));
    ASSERT_EQ(count, 0); /* nothing was sent */
    ASSERT_OK(tether_channel_send(fx.live[K_CHANNEL], "y", 1, 0)); /* not closed */
    void *data = NULL;
    size_t len = 0;
    ASSERT_OK(tether_channel_recv(fx.live[K_CHANNEL], &data, &len, 0));
    ASSERT_EQ(len, 1);
    tether_channel_msg_free(data);
}

static void fixture_down(void)
{
    fixture_check();
    ASSERT_OK(tether_lock_free(fx.live[K_LOCK]));
    ASSERT_OK(tether_event_free(fx.live[K_EVENT]));
    ASSERT_OK(tether_thread_release(fx.live[K_THREAD]));
    ASSERT_OK(tether_callback_free(fx.live[K_CALLBACK]));
    ASSERT_OK(tether_channel_release(fx.live[K_CHANNEL]));
    ASSERT_OK(tether_plugin_unload(fx.live[K_PLUGIN], SECONDS(10)));
    t_finalize(fx.live[K_RUNTIME]);
}

/* ------------------------------------------------------------------------
 * Cases
 * ---------------------------------------------------------------------- */

TEST(zero_handles)
{
    fixture_up();
    for (size_t i = 0; i < N_API; i++) {
        if (k_api[i].zero_ok)
            ASSERT_OK(k_api[i].call(0));
        else
            expect_bad(&k_api[i], 0);
    }
    fixture_down();
}

TEST(stale_handles)
{
    fixture_up();
    for (size_t i = 0; i < N_API; i++)
        expect_bad(&k_api[i], fx.stale[k_api[i].kind]);
    fixture_down();
}

/* Bit patterns made from a live handle of the right kind: another
   generation, a slot far past the table, another kind's slot relabelled
   with this kind's top byte, and plain garbage. */
static void forgeries(uint64_t live, uint64_t other, uint64_t out[5])
{
    const uint64_t top = 0xff00000000000000ull;
    out[0] = live ^ (1ull << 55);
    out[1] = (live & ~0xffffffffull) | 0xfffffff0u;
    out[2] = (other & ~top) | (live & top);
    out[3] = 0xdeadbeefdeadbeefull;
    out[4] = UINT64_MAX;
}

TEST(forged_handles)
{
    fixture_up();
    for (size_t i = 0; i < N_API; i++) {
        enum kind k = k_api[i].kind;
        uint64_t forged[5];
        forgeries(fx.live[k], fx.live[(k + 1) % K__COUNT], forged);
        for (size_t j = 0; j < 5; j++)
            expect_bad(&k_api[i], forged[j]);
    }
    fixture_down();
}

TEST(wrong_type_handles)
{
    fixture_up();
    for (size_t i = 0; i < N_API; i++)
        for (int k = 0; k < K__COUNT; k++)
            if (k != (int)k_api[i].kind)
                expect_bad(&k_api[i], fx.live[k]);
    fixture_down();
}

/* Freeing twice is a stale handle the second time. */
TEST(double_free)
{
    fixture_up();
    tether_lock l;
    tether_event e;
    ASSERT_OK(tether_lock_new(&l));
    ASSERT_OK(tether_event_new(&e));
    ASSERT_OK(tether_lock_free(l));
    ASSERT_OK(tether_event_free(e));
    ASSERT_FAILS(tether_lock_free(l), TETHER_EBADHANDLE, "tether_lock_free");
    ASSERT_FAILS(tether_event_free(e), TETHER_EBADHANDLE, "tether_event_free");
    ASSERT_FAILS(tether_thread_release(fx.stale[K_THREAD]), TETHER_EBADHANDLE,
                 "tether_thread_release");
    fixture_down();
}

/* Slots are recycled, but an old handle never reaches the new object. */
TEST(recycled_slot)
{
    fixture_up();
    enum { N = 2000 };
    static tether_lock old[N];
    for (int i = 0; i < N; i++) {
        ASSERT_OK(tether_lock_new(&old[i]));
        ASSERT_OK(tether_lock_free(old[i]));
    }
    tether_lock fresh[4];
    for (int i = 0; i < 4; i++) {
        ASSERT_OK(tether_lock_new(&fresh[i]));
        ASSERT_OK(tether_lock_acquire(fresh[i], 0));
    }
    for (int i = 0; i < N; i++) {
        ASSERT_STATUS(tether_lock_release(old[i]), TETHER_EBADHANDLE);
        ASSERT_STATUS(tether_lock_free(old[i]), TETHER_EBADHANDLE);
    }
    for (int i = 0; i < 4; i++) {
        ASSERT_OK(tether_lock_release(fresh[i])); /* still held: untouched */
        ASSERT_OK(tether_lock_free(fresh[i]));
    }
    fixture_down();
}

RUNNER_MAIN(TEST_ENTRY(zero_handles), TEST_ENTRY(stale_handles),
            TEST_ENTRY(forged_handles), TEST_ENTRY(wrong_type_handles),
            TEST_ENTRY(double_free), TEST_ENTRY(recycled_slot))
