/*
 * test_lang_plugins.c - the plugins written in Rust (plugins/rustworkers)
 * and Go (plugins/goworkers), loaded by a C host: their own threads
 * (std::threads, goroutines) call a guest callback, each call holding the
 * GIL; a host that holds the GIL or not; bad arguments; unload and load
 * again; the Go plugin staying mapped; and the wrong-thread release an
 * unpinned goroutine would do.
 *
 * The plugins' paths come from TETHER_RUSTWORKERS and TETHER_GOWORKERS
 * (tests/lang/CMakeLists.txt); a case whose plugin was not built is not
 * registered there.
 */
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <tether/tether.h>

#include "support.h"

typedef void (*guest_fn)(void *ud, int32_t thread, int32_t call);
typedef int64_t (*run_fn)(guest_fn fn, void *ud, int32_t n, int32_t calls);

/* What the guest callback counts.  Written only under the GIL, so plain
   fields; `not_held` counts calls that found the GIL not held (none). */
struct tally {
    int64_t calls;
    int64_t not_held;
    int64_t per_thread[16];
};

static int guest(void **args, void *ret, void *userdata)
{
    (void)ret;
    struct tally *t = userdata;
    int32_t thread = *(int32_t *)args[1];
    if (!tether_gil_held())
        t->not_held++;
    t->calls++;
    if (thread >= 0 && thread < 16)
        t->per_thread[thread]++;
    return TETHER_OK;
}

/* A function pointer from a data pointer (dlsym's), which ISO C does not
   convert directly. */
#define AS_FN(type, ptr) as_fn_##type(ptr)
#define DEFINE_AS_FN(type)                                                    \
    static type as_fn_##type(void *p)                                         \
    {                                                                         \
        type f;                                                               \
        memcpy(&f, &p, sizeof f);                                             \
        return f;                                                             \
    }
typedef int (*int_fn)(void);
DEFINE_AS_FN(guest_fn)
DEFINE_AS_FN(run_fn)
DEFINE_AS_FN(int_fn)

static const char *path_of(const char *var)
{
    const char *p = getenv(var);
    if (!p || !*p)
        runner_fail(__FILE__, __LINE__, "%s is not set", var);
    return p;
}

/* Loads the plugin, runs its `run` symbol (rw_run or gw_run) with `n`
   threads of `calls` calls each, holding the GIL or not, and checks the
   tally.  The caller holds the GIL of `interp` on entry and on return. */
static void run_plugin(tether_runtime rt, tether_interp interp, const char *path,
                       const char *run, int32_t n, int32_t calls, int hold_gil)
{
    tether_plugin p;
    ASSERT_OK(tether_plugin_load(rt, path, &p));
    void *sym = NULL;
    ASSERT_OK(tether_plugin_symbol(p, run, &sym));
    struct tally t = {0};
    tether_callback cb;
    ASSERT_OK(tether_callback_new(interp, "void(ptr,i32,i32)", guest, &t, &cb));
    guest_fn code = AS_FN(guest_fn, tether_callback_code(cb));
    ASSERT(code != NULL);

    tether_tstate ts = 0;
    if (!hold_gil)
        ASSERT_OK(tether_save_thread(&ts));
    ASSERT_OK(tether_plugin_enter(p));
    int64_t made = AS_FN(run_fn, sym)(code, NULL, n, calls);
    ASSERT_OK(tether_plugin_leave(p));
    if (!hold_gil)
        ASSERT_OK(tether_restore_thread(ts));

    ASSERT_EQ(made, (int64_t)n * calls);
    ASSERT_EQ(t.calls, (int64_t)n * calls);
    ASSERT_EQ(t.not_held, 0);
    for (int32_t i = 0; i < n && i < 16; i++)
        ASSERT_EQ(t.per_thread[i], calls);
    /* Bad arguments change nothing and say so. */
    ASSERT_OK(tether_plugin_enter(p));
    ASSERT_EQ(AS_FN(run_fn, sym)(code, NULL, 0, calls), TETHER_EINVAL);
    ASSERT_EQ(AS_FN(run_fn, sym)(NULL, NULL, 1, calls), TETHER_EINVAL);
    ASSERT_OK(tether_plugin_leave(p));
    ASSERT_EQ(t.calls, (int64_t)n * calls);
    ASSERT_OK(tether_callback_free(cb));
    ASSERT_OK(tether_plugin_unload(p, SECONDS(60)));
}

/* ---- Rust ---------------------------------------------------------------- */

TEST(rust_threads_call_the_guest_holding_the_gil)
{
    tether_interp interp;
    tether_runtime rt = t_runtime_main(NULL, &interp);
    run_plugin(rt, interp, path_of("TETHER_RUSTWORKERS"), "rw_run", 4, 50, 1);
    run_plugin(rt, interp, path_of("TETHER_RUSTWORKERS"), "rw_run", 3, 20, 0);
    t_finalize(rt);
}

TEST(rust_plugin_unloads_and_loads_again)
{
    const char *path = path_of("TETHER_RUSTWORKERS");
    tether_interp interp;
    tether_runtime rt = t_runtime_main(NULL, &interp);
    for (int round = 0; round < 3; round++)
        run_plugin(rt, interp, path, "rw_run", 2, 10, round & 1);
    t_finalize(rt);
    /* A second runtime: the plugin's init runs again for it. */
    rt = t_runtime_main(NULL, &interp);
    run_plugin(rt, interp, path, "rw_run", 2, 10, 1);
    t_finalize(rt);
}

TEST(rust_plugin_descriptor)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p;
    ASSERT_OK(tether_plugin_load(rt, path_of("TETHER_RUSTWORKERS"), &p));
    const char *name = NULL, *version = NULL;
    ASSERT_OK(tether_plugin_info(p, &name, &version));
    ASSERT(strcmp(name, "rustworkers") == 0);
    ASSERT(strcmp(version, "1.0.0") == 0);
    void *sym = NULL;
    ASSERT_FAILS(tether_plugin_symbol(p, "rw_no_such_function", &sym),
                 TETHER_EPLUGIN, "tether_plugin_symbol");
    ASSERT_OK(tether_plugin_unload(p, SECONDS(60)));
    t_finalize(rt);
}

/* ---- Go ------------------------------------------------------------------ */

TEST(go_goroutines_call_the_guest_holding_the_gil)
{
    tether_interp interp;
    tether_runtime rt = t_runtime_main(NULL, &interp);
    run_plugin(rt, interp, path_of("TETHER_GOWORKERS"), "gw_run", 8, 50, 1);
    run_plugin(rt, interp, path_of("TETHER_GOWORKERS"), "gw_run", 5, 20, 0);
    t_finalize(rt);
}

/* More goroutines than GW_MAX_GOROUTINES is bad input: each pinned
   goroutine needs an OS thread, and past the Go runtime's 10000-thread
   limit the whole host process dies ("program exceeds 10000-thread
   limit").  It is refused before any goroutine starts (calls = 0, so the
   check costs nothing even when it is missing). */
TEST(go_too_many_goroutines_is_refused)
{
    tether_interp interp;
    tether_runtime rt = t_runtime_main(NULL, &interp);
    tether_plugin p;
    ASSERT_OK(tether_plugin_load(rt, path_of("TETHER_GOWORKERS"), &p));
    void *sym = NULL;
    ASSERT_OK(tether_plugin_symbol(p, "gw_run", &sym));
    struct tally t = {0};
    tether_callback cb;
    ASSERT_OK(tether_callback_new(interp, "void(ptr,i32,i32)", guest, &t, &cb));
    guest_fn code = AS_FN(guest_fn, tether_callback_code(cb));
    ASSERT_OK(tether_plugin_enter(p));
    ASSERT_EQ(AS_FN(run_fn, sym)(code, NULL, 1025, 0), TETHER_EINVAL);
    ASSERT_EQ(AS_FN(run_fn, sym)(code, NULL, INT32_MAX, 1), TETHER_EINVAL);
    ASSERT_EQ(AS_FN(run_fn, sym)(code, NULL, 1024, 0), 0);
    ASSERT_OK(tether_plugin_leave(p));
    ASSERT_EQ(t.calls, 0);
    ASSERT_OK(tether_callback_free(cb));
    ASSERT_OK(tether_plugin_unload(p, SECONDS(60)));
    t_finalize(rt);
}

/* The release of a token on another OS thread than its ensure's, which an
   unpinned goroutine does when the scheduler moves it: refused with
   TETHER_ESTATE, and the GIL stays with the thread that took it (which
   then releases it; everything runs on afterwards). */
TEST(go_wrong_thread_release_is_refused)
{
    const char *path = path_of("TETHER_GOWORKERS");
    tether_interp interp;
    tether_runtime rt = t_runtime_main(NULL, &interp);
    tether_plugin p;
    ASSERT_OK(tether_plugin_load(rt, path, &p));
    void *sym = NULL;
    ASSERT_OK(tether_plugin_symbol(p, "gw_wrong_thread", &sym));
    ASSERT_OK(tether_plugin_enter(p));
    ASSERT_EQ(AS_FN(int_fn, sym)(), TETHER_ESTATE);
    ASSERT_OK(tether_plugin_leave(p));
    ASSERT_OK(tether_plugin_unload(p, SECONDS(60)));
    run_plugin(rt, interp, path, "gw_run", 4, 10, 1);
    t_finalize(rt);
}

/* A Go runtime cannot be unloaded: the descriptor does not say
   TETHER_PLUGIN_UNLOADABLE, so the last unload runs fini and keeps the
   library mapped; a new load runs init again on the same Go runtime. */
TEST(go_plugin_stays_mapped_and_loads_again)
{
    const char *path = path_of("TETHER_GOWORKERS");
    tether_interp interp;
    tether_runtime rt = t_runtime_main(NULL, &interp);
    run_plugin(rt, interp, path, "gw_run", 2, 10, 1);
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    ASSERT(h != NULL); /* still mapped after the unload */
    dlclose(h);
    run_plugin(rt, interp, path, "gw_run", 2, 10, 0);
    t_finalize(rt);
    rt = t_runtime_main(NULL, &interp);
    run_plugin(rt, interp, path, "gw_run", 3, 10, 1);
    t_finalize(rt);
}

RUNNER_MAIN(TEST_ENTRY_T(rust_threads_call_the_guest_holding_the_gil, 120),
            TEST_ENTRY_T(rust_plugin_unloads_and_loads_again, 120),
            TEST_ENTRY(rust_plugin_descriptor),
            TEST_ENTRY_T(go_goroutines_call_the_guest_holding_the_gil, 120),
            TEST_ENTRY_T(go_too_many_goroutines_is_refused, 120),
            TEST_ENTRY(go_wrong_thread_release_is_refused),
            TEST_ENTRY_T(go_plugin_stays_mapped_and_loads_again, 120))
