/*
 * test_fini_reentry.c - a thread attached to runtime Y finalizes runtime X
 * (or destroys an interpreter): finalize lets go of Y's GIL while it waits
 * (core/runtime.c, let_go) and takes it back before it returns
 * (take_back).  Meanwhile X's plugin fini runs on the same thread and acts
 * on Y: ensures it, destroys an interpreter of it, finalizes it, leaves an
 * ensure open; or another thread finalizes Y; or the caller is a tether
 * thread of Y.  The same for tether_call_blocking, whose fn does it
 * (the "baseline" cases).  What each answers is tether.h's.
 *
 * From the second hostile review of the crosswise-finalize fix, which
 * wrote the cases; six failed before their fixes:
 *   fini_leaves_an_ensure_of_the_callers_interp and
 *   baseline_call_blocking_fn_leaves_an_ensure hung: the thread, attached
 *       again by the ensure left open, waited for its own GIL (now
 *       TETHER_ESTATE, misuse; it stays attached through that ensure);
 *   fini_finalizes_the_callers_runtime_thread_exits and
 *   baseline_call_blocking_fn_finalizes_y_nested_token: a token got on the
 *       caller's state, detached for the wait, stayed valid after a
 *       finalize of its runtime on the same thread (release: OK, not
 *       ESTATE);
 *   fini_finalizes_two_runtimes_with_saved_states and
 *   baseline_two_saved_states_finalized: of two saved states finalize
 *       deleted, the older one's restore was "not a state saved on this
 *       thread" (misuse), not TETHER_EFINALIZING: one evicted token was
 *       remembered.
 */
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tether/tether_plugin.h>

#include "support.h"

/* A contract check that reports and goes on (the rest of the case, and
   LSan at exit, still run); the case fails at its end. */
static int g_soft_failed;
#define SOFT_STATUS(expr, want)                                               \
    do {                                                                      \
        int soft_rc_ = (expr);                                                \
        if (soft_rc_ != (want)) {                                             \
            fprintf(stderr, "%s:%d: %s: got %s, want %s (%s)\n", __FILE__,     \
                    __LINE__, #expr, tether_status_name(soft_rc_),            \
                    tether_status_name(want), tether_last_error());           \
            g_soft_failed = 1;                                                \
        }                                                                     \
    } while (0)

#define FIXTURE(name) FIXTURE_DIR "/fx_" name ".so"

typedef void (*fx_setup_fn)(tether_runtime, const char *,
                            void (*)(const char *, int), int);

static void (*g_fini_action)(void);
static atomic_int g_fini_ran;

static void report(const char *what, int status)
{
    (void)status;
    if (strcmp(what, "fini") == 0) {
        atomic_fetch_add(&g_fini_ran, 1);
        if (g_fini_action)
            g_fini_action();
    }
}

/* A runtime X, made and left by the calling thread (attached to nothing
   on return if it was attached to nothing before; else to what it was
   attached to), with the hostile_default fixture loaded whose fini calls
   g_fini_action. */
static tether_runtime runtime_with_fini(void (*action)(void))
{
    tether_tstate before = 0;
    if (tether_gil_held())
        ASSERT_OK(tether_save_thread(&before));
    tether_runtime x = t_runtime(NULL);
    tether_plugin p = 0;
    ASSERT_OK(tether_plugin_load(x, FIXTURE("hostile_default"), &p));
    void *sym = NULL;
    ASSERT_OK(tether_plugin_symbol(p, "fx_setup", &sym));
    fx_setup_fn setup;
    memcpy(&setup, &sym, sizeof setup);
    g_fini_action = action;
    setup(x, FIXTURE("hostile_default"), report, 0);
    tether_tstate xs;
    ASSERT_OK(tether_save_thread(&xs)); /* left saved: finalize forgets it */
    if (before)
        ASSERT_OK(tether_restore_thread(before));
    return x;
}

static tether_runtime g_y, g_x2;
static tether_interp g_ymain, g_yi2;
static int g_rc1 = -99, g_rc2 = -99, g_rc3 = -99;

/* ---- 2: the fini ensures the caller's interpreter ------------------------ */

static void fini_ensure_y(void)
{
    tether_gilstate g;
    g_rc1 = tether_ensure(g_ymain, &g);
    if (g_rc1 == TETHER_OK)
        g_rc2 = tether_release(g);
}

TEST(fini_ensures_the_callers_interp)
{
    g_y = t_runtime_main(NULL, &g_ymain);
    tether_gilstate outer;
    ASSERT_OK(tether_ensure(g_ymain, &outer)); /* nested, no frame */
    tether_runtime x = runtime_with_fini(fini_ensure_y);
    ASSERT_OK(tether_runtime_finalize(x, SECONDS(30)));
    ASSERT_EQ(g_rc1, TETHER_OK);
    ASSERT_EQ(g_rc2, TETHER_OK);
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_release(outer));
    ASSERT_OK(tether_ensure(g_ymain, &outer));
    ASSERT_OK(tether_release(outer));
    t_finalize(g_y);
}

/* The fini ensures Y and leaves it ensured (a misbehaving fini): the
   thread is attached already when finalize would attach it again, which
   hung (take_back waited for the GIL the thread held).  Misuse, answered
   with TETHER_ESTATE; the thread stays attached through that ensure, whose
   release attaches the caller's own state again. */
static tether_gilstate g_kept;

static void fini_ensure_y_and_keep(void)
{
    g_rc1 = tether_ensure(g_ymain, &g_kept);
}

static void *keep_thread(void *arg)
{
    (void)arg;
    g_y = t_runtime_main(NULL, &g_ymain);
    tether_runtime x = runtime_with_fini(fini_ensure_y_and_keep);
    ASSERT_FAILS(tether_runtime_finalize(x, SECONDS(30)), TETHER_ESTATE,
                 "tether_runtime_finalize");
    ASSERT_EQ(g_rc1, TETHER_OK);
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_release(g_kept)); /* re-attaches the caller's state */
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_checkpoint());
    t_finalize(g_y);
    return NULL;
}

TEST(fini_leaves_an_ensure_of_the_callers_interp)
{
    t_pthread_join(t_pthread(keep_thread, NULL));
}

/* ---- 2: the fini destroys another interpreter of the caller's runtime -- */

static void fini_destroy_yi2(void)
{
    g_rc1 = tether_interp_destroy(g_yi2, SECONDS(30));
}

TEST(fini_destroys_another_interp_of_the_callers_runtime)
{
    g_y = t_runtime_main(NULL, &g_ymain);
    ASSERT_OK(tether_interp_create(g_y, &g_yi2));
    tether_runtime x = runtime_with_fini(fini_destroy_yi2);
    ASSERT_OK(tether_runtime_finalize(x, SECONDS(30)));
    ASSERT_EQ(g_rc1, TETHER_OK);
    ASSERT_EQ(tether_gil_held(), 1);
    t_finalize(g_y);
}

/* Attached to I2 through a frame over Y's main state; the fini destroys I2. */
static void *destroy_own_thread(void *arg)
{
    (void)arg;
    g_y = t_runtime_main(NULL, &g_ymain);
    ASSERT_OK(tether_interp_create(g_y, &g_yi2));
    tether_runtime x = runtime_with_fini(fini_destroy_yi2);
    tether_gilstate t1;
    ASSERT_OK(tether_ensure(g_yi2, &t1));
    ASSERT_FAILS(tether_runtime_finalize(x, SECONDS(30)), TETHER_EFINALIZING,
                 "tether_runtime_finalize");
    ASSERT_EQ(g_rc1, TETHER_OK);
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_OK(tether_release(t1)); /* back on Y's main interpreter */
    ASSERT_EQ(tether_gil_held(), 1);
    tether_gilstate t2;
    int rc = tether_ensure(g_yi2, &t2);
    ASSERT(rc == TETHER_EBADHANDLE || rc == TETHER_EFINALIZING);
    t_finalize(g_y);
    return NULL;
}

TEST(fini_destroys_the_interp_the_caller_is_ensured_to)
{
    t_pthread_join(t_pthread(destroy_own_thread, NULL));
}

/* ---- 1, 3: the fini finalizes the caller's runtime, nested frames ------ */

static void fini_finalize_y(void)
{
    g_rc1 = tether_runtime_finalize(g_y, SECONDS(30));
}

static void *nested_thread(void *arg)
{
    (void)arg;
    tether_gilstate t1, t2, t3;
    ASSERT_OK(tether_ensure(g_ymain, &t1)); /* frame {S, -} */
    ASSERT_OK(tether_ensure(g_ymain, &t2)); /* nested */
    ASSERT_OK(tether_ensure(g_yi2, &t3));   /* frame {S2, S} */
    tether_runtime x = runtime_with_fini(fini_finalize_y);
    ASSERT_FAILS(tether_runtime_finalize(x, SECONDS(30)), TETHER_EFINALIZING,
                 "tether_runtime_finalize");
    ASSERT_EQ(g_rc1, TETHER_OK);
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_STATUS(tether_release(t3), TETHER_ESTATE);
    ASSERT_STATUS(tether_release(t2), TETHER_ESTATE);
    ASSERT_STATUS(tether_release(t1), TETHER_ESTATE);
    tether_gilstate t4;
    int rc4 = tether_ensure(g_ymain, &t4);
    ASSERT(rc4 == TETHER_EBADHANDLE || rc4 == TETHER_EFINALIZING);
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(fini_finalizes_the_callers_runtime_under_frames)
{
    g_y = t_runtime_main(NULL, &g_ymain);
    ASSERT_OK(tether_interp_create(g_y, &g_yi2));
    tether_tstate mine;
    ASSERT_OK(tether_save_thread(&mine));
    t_pthread_join(t_pthread(nested_thread, NULL));
    ASSERT_STATUS(tether_restore_thread(mine), TETHER_EFINALIZING);
}

/* Y's state is saved and re-attached by an ensure (nested in the save). */
static void *saved_thread(void *arg)
{
    (void)arg;
    g_y = t_runtime_main(NULL, &g_ymain);
    tether_tstate sy;
    ASSERT_OK(tether_save_thread(&sy));
    tether_runtime x = runtime_with_fini(fini_finalize_y);
    tether_gilstate t1;
    ASSERT_OK(tether_ensure(g_ymain, &t1)); /* the saved state again */
    ASSERT_FAILS(tether_runtime_finalize(x, SECONDS(30)), TETHER_EFINALIZING,
                 "tether_runtime_finalize");
    ASSERT_EQ(g_rc1, TETHER_OK);
    ASSERT_STATUS(tether_release(t1), TETHER_ESTATE);
    ASSERT_STATUS(tether_restore_thread(sy), TETHER_EFINALIZING);
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(fini_finalizes_the_callers_runtime_saved_state)
{
    t_pthread_join(t_pthread(saved_thread, NULL));
}

/* Two saved states, both freed: one by the fini's finalize, one by
   take_back. */
static void fini_finalize_y_and_x2(void)
{
    g_rc1 = tether_runtime_finalize(g_y, SECONDS(30));
    g_rc2 = tether_runtime_finalize(g_x2, SECONDS(30));
}

static void *two_saved_thread(void *arg)
{
    (void)arg;
    g_y = t_runtime_main(NULL, &g_ymain);
    tether_tstate sy, sw;
    ASSERT_OK(tether_save_thread(&sy));
    tether_interp wmain;
    g_x2 = t_runtime_main(NULL, &wmain);
    ASSERT_OK(tether_save_thread(&sw));
    tether_runtime x = runtime_with_fini(fini_finalize_y_and_x2);
    tether_gilstate t1;
    ASSERT_OK(tether_ensure(wmain, &t1)); /* W's saved state again */
    ASSERT_FAILS(tether_runtime_finalize(x, SECONDS(30)), TETHER_EFINALIZING,
                 "tether_runtime_finalize");
    ASSERT_EQ(g_rc1, TETHER_OK);
    ASSERT_EQ(g_rc2, TETHER_OK);
    ASSERT_STATUS(tether_release(t1), TETHER_ESTATE);
    ASSERT_STATUS(tether_restore_thread(sw), TETHER_EFINALIZING);
    SOFT_STATUS(tether_restore_thread(sy), TETHER_EFINALIZING);
    return NULL;
}

TEST(fini_finalizes_two_runtimes_with_saved_states)
{
    t_pthread_join(t_pthread(two_saved_thread, NULL));
    ASSERT_EQ(g_soft_failed, 0);
}

/* The caller's runtime Y is attached by creation only (no frame) on a
   pthread that exits afterwards: the state is freed once (LSan, ASan). */
static void *plain_thread(void *arg)
{
    (void)arg;
    g_y = t_runtime_main(NULL, &g_ymain);
    ASSERT_OK(tether_interp_create(g_y, &g_yi2));
    tether_gilstate a, b;
    ASSERT_OK(tether_ensure(g_yi2, &a)); /* frame {S2, S} */
    ASSERT_OK(tether_release(a));        /* S2 stays cached */
    ASSERT_OK(tether_ensure(g_ymain, &b)); /* nested on S */
    tether_runtime x = runtime_with_fini(fini_finalize_y);
    ASSERT_FAILS(tether_runtime_finalize(x, SECONDS(30)), TETHER_EFINALIZING,
                 "tether_runtime_finalize");
    SOFT_STATUS(tether_release(b), TETHER_ESTATE);
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(fini_finalizes_the_callers_runtime_thread_exits)
{
    t_pthread_join(t_pthread(plain_thread, NULL));
    ASSERT_EQ(g_soft_failed, 0);
}

/* ---- 4: tether_call_blocking around the finalize ------------------------ */

static tether_runtime g_blk_x;

static int blocking_finalize_x(void *arg)
{
    (void)arg;
    g_rc3 = tether_runtime_finalize(g_blk_x, SECONDS(30));
    return 42;
}

TEST(call_blocking_fn_finalizes_x_whose_fini_finalizes_y)
{
    g_y = t_runtime_main(NULL, &g_ymain);
    g_blk_x = runtime_with_fini(fini_finalize_y);
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_FAILS(tether_call_blocking(blocking_finalize_x, NULL, NULL, NULL),
                 TETHER_EFINALIZING, "tether_call_blocking");
    ASSERT_EQ(g_rc3, TETHER_OK);
    ASSERT_EQ(g_rc1, TETHER_OK);
    ASSERT_EQ(tether_gil_held(), 0);
}

TEST(call_blocking_fn_finalizes_x)
{
    g_y = t_runtime_main(NULL, &g_ymain);
    g_blk_x = runtime_with_fini(fini_ensure_y);
    ASSERT_STATUS(tether_call_blocking(blocking_finalize_x, NULL, NULL, NULL), 42);
    ASSERT_EQ(g_rc3, TETHER_OK);
    ASSERT_EQ(g_rc1, TETHER_OK);
    ASSERT_EQ(g_rc2, TETHER_OK);
    ASSERT_EQ(tether_gil_held(), 1);
    t_finalize(g_y);
}

/* The fini runs tether_call_blocking inside an ensure of Y, and its fn
   finalizes Y. */
static int blocking_finalize_y(void *arg)
{
    (void)arg;
    g_rc2 = tether_runtime_finalize(g_y, SECONDS(30));
    return 7;
}

static void fini_ensure_block_finalize_y(void)
{
    tether_gilstate g;
    g_rc1 = tether_ensure(g_ymain, &g);
    if (g_rc1 == TETHER_OK) {
        g_rc3 = tether_call_blocking(blocking_finalize_y, NULL, NULL, NULL);
        int rc = tether_release(g);
        if (rc != TETHER_ESTATE)
            fprintf(stderr, "release in fini -> %d\n", rc);
    }
}

static void *ensure_block_thread(void *arg)
{
    (void)arg;
    g_y = t_runtime_main(NULL, &g_ymain);
    tether_runtime x = runtime_with_fini(fini_ensure_block_finalize_y);
    ASSERT_FAILS(tether_runtime_finalize(x, SECONDS(30)), TETHER_EFINALIZING,
                 "tether_runtime_finalize");
    ASSERT_EQ(g_rc1, TETHER_OK);
    ASSERT_EQ(g_rc2, TETHER_OK);
    ASSERT_EQ(g_rc3, TETHER_EFINALIZING);
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(fini_call_blocking_finalizes_the_callers_runtime)
{
    t_pthread_join(t_pthread(ensure_block_thread, NULL));
}

/* ---- 1: another thread finalizes Y while finalize(X) waits -------------- */

static atomic_int g_go;

static int wait_go(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_go))
        if (tether_sleep(MS(1)) != TETHER_OK)
            break;
    return TETHER_OK;
}

static void *finalize_y_thread(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_runtime_finalize(g_y, SECONDS(30)));
    atomic_store(&g_go, 1);
    return NULL;
}

static void *cross_thread(void *arg)
{
    int variant = (int)(intptr_t)arg;
    g_y = t_runtime_main(NULL, &g_ymain);
    ASSERT_OK(tether_interp_create(g_y, &g_yi2));
    tether_gilstate a = 0;
    if (variant == 1)
        ASSERT_OK(tether_ensure(g_yi2, &a));
    tether_tstate ys;
    ASSERT_OK(tether_save_thread(&ys));
    tether_interp xmain;
    tether_runtime x = t_runtime_main(NULL, &xmain);
    tether_thread t = 0;
    ASSERT_OK(tether_thread_start(xmain, wait_go, NULL, NULL, &t));
    tether_tstate xs;
    ASSERT_OK(tether_save_thread(&xs));
    ASSERT_OK(tether_restore_thread(ys));
    atomic_store(&g_go, 0);
    pthread_t u = t_pthread(finalize_y_thread, NULL);
    ASSERT_FAILS(tether_runtime_finalize(x, SECONDS(30)), TETHER_EFINALIZING,
                 "tether_runtime_finalize");
    t_pthread_join(u);
    if (variant == 1)
        ASSERT_STATUS(tether_release(a), TETHER_EFINALIZING);
    ASSERT_EQ(tether_gil_held(), 0);
    tether_gilstate g;
    int rcg = tether_ensure(g_ymain, &g);
    ASSERT(rcg == TETHER_EBADHANDLE || rcg == TETHER_EFINALIZING);
    (void)tether_thread_release(t);
    return NULL;
}

TEST(another_thread_finalizes_y_meanwhile)
{
    t_pthread_join(t_pthread(cross_thread, (void *)(intptr_t)0));
}

TEST(another_thread_finalizes_y_meanwhile_framed)
{
    t_pthread_join(t_pthread(cross_thread, (void *)(intptr_t)1));
}

/* ---- baselines without a fini (what the library does elsewhere) -------- */

static void *base_two_saved(void *arg)
{
    (void)arg;
    tether_interp m;
    tether_runtime y = t_runtime_main(NULL, &m);
    tether_tstate sy, sw;
    ASSERT_OK(tether_save_thread(&sy));
    tether_runtime w = t_runtime_main(NULL, &m);
    ASSERT_OK(tether_save_thread(&sw));
    ASSERT_OK(tether_runtime_finalize(y, SECONDS(30)));
    ASSERT_OK(tether_runtime_finalize(w, SECONDS(30)));
    SOFT_STATUS(tether_restore_thread(sw), TETHER_EFINALIZING);
    SOFT_STATUS(tether_restore_thread(sy), TETHER_EFINALIZING);
    return NULL;
}

TEST(baseline_two_saved_states_finalized)
{
    t_pthread_join(t_pthread(base_two_saved, NULL));
    ASSERT_EQ(g_soft_failed, 0);
}

static int finalize_y_fn(void *arg)
{
    (void)arg;
    g_rc1 = tether_runtime_finalize(g_y, SECONDS(30));
    return 0;
}

static void *base_nested_blocking(void *arg)
{
    (void)arg;
    g_y = t_runtime_main(NULL, &g_ymain);
    tether_gilstate b;
    ASSERT_OK(tether_ensure(g_ymain, &b)); /* nested on the creator's state */
    ASSERT_STATUS(tether_call_blocking(finalize_y_fn, NULL, NULL, NULL),
                  TETHER_EFINALIZING);
    ASSERT_OK(g_rc1);
    SOFT_STATUS(tether_release(b), TETHER_ESTATE);
    return NULL;
}

TEST(baseline_call_blocking_fn_finalizes_y_nested_token)
{
    t_pthread_join(t_pthread(base_nested_blocking, NULL));
    ASSERT_EQ(g_soft_failed, 0);
}

static void *base_nested_direct(void *arg)
{
    (void)arg;
    g_y = t_runtime_main(NULL, &g_ymain);
    tether_gilstate b;
    ASSERT_OK(tether_ensure(g_ymain, &b));
    ASSERT_OK(tether_runtime_finalize(g_y, SECONDS(30)));
    SOFT_STATUS(tether_release(b), TETHER_ESTATE);
    return NULL;
}

TEST(baseline_finalize_y_nested_token)
{
    t_pthread_join(t_pthread(base_nested_direct, NULL));
    ASSERT_EQ(g_soft_failed, 0);
}

/* The same in tether_call_blocking: fn leaves an ensure of the caller's
   interpreter open (hung the same way). */
static int ensure_and_keep_fn(void *arg)
{
    (void)arg;
    return tether_ensure(g_ymain, &g_kept);
}

static void *base_blocking_keeps(void *arg)
{
    (void)arg;
    g_y = t_runtime_main(NULL, &g_ymain);
    ASSERT_FAILS(tether_call_blocking(ensure_and_keep_fn, NULL, NULL, NULL),
                 TETHER_ESTATE, "tether_call_blocking");
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_release(g_kept)); /* re-attaches the caller's state */
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_checkpoint());
    t_finalize(g_y);
    return NULL;
}

TEST(baseline_call_blocking_fn_leaves_an_ensure)
{
    t_pthread_join(t_pthread(base_blocking_keeps, NULL));
}

/* ---- 1: the caller is a tether thread of Y (os->boot), Y finalized or
   its interpreter destroyed by another thread while finalize(X) waits --- */

static tether_runtime g_bx;
static atomic_int g_boot_in, g_boot_done;

static int boot_fn(void *arg)
{
    (void)arg;
    atomic_store(&g_boot_in, 1);
    int rc = tether_runtime_finalize(g_bx, SECONDS(30));
    g_rc3 = rc;
    atomic_store(&g_boot_done, 1);
    return rc;
}

static void *boot_case(void *arg)
{
    int destroy = (int)(intptr_t)arg;
    g_y = t_runtime_main(NULL, &g_ymain);
    ASSERT_OK(tether_interp_create(g_y, &g_yi2));
    tether_tstate ys;
    ASSERT_OK(tether_save_thread(&ys));
    tether_interp xmain;
    g_bx = t_runtime_main(NULL, &xmain);
    tether_thread xt = 0;
    atomic_store(&g_go, 0);
    ASSERT_OK(tether_thread_start(xmain, wait_go, NULL, NULL, &xt));
    tether_tstate xs;
    ASSERT_OK(tether_save_thread(&xs));
    ASSERT_OK(tether_restore_thread(ys));
    tether_thread_opts o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    o.daemon = 1;
    tether_thread bt = 0;
    ASSERT_OK(tether_thread_start(destroy ? g_yi2 : g_ymain, boot_fn, NULL, &o, &bt));
    tether_tstate ys2;
    ASSERT_OK(tether_save_thread(&ys2));
    while (!atomic_load(&g_boot_in))
        ;
    struct timespec d = {0, 20 * 1000 * 1000};
    nanosleep(&d, NULL);
    if (destroy) {
        ASSERT_OK(tether_restore_thread(ys2));
        ASSERT_OK(tether_interp_destroy(g_yi2, SECONDS(30)));
        ASSERT_OK(tether_save_thread(&ys2));
    } else {
        ASSERT_OK(tether_runtime_finalize(g_y, SECONDS(30)));
    }
    atomic_store(&g_go, 1);
    int jr = tether_thread_join(bt, SECONDS(30));
    fprintf(stderr, "join -> %s\n", tether_status_name(jr));
    while (!atomic_load(&g_boot_done))
        ;
    fprintf(stderr, "boot thread's finalize(X) -> %s\n", tether_status_name(g_rc3));
    ASSERT_EQ(g_rc3, TETHER_EFINALIZING);
    (void)tether_thread_release(bt);
    (void)tether_thread_release(xt);
    if (destroy) {
        ASSERT_OK(tether_restore_thread(ys2));
        t_finalize(g_y);
    }
    return NULL;
}

TEST(boot_thread_finalizes_x_while_y_is_finalized)
{
    t_pthread_join(t_pthread(boot_case, (void *)(intptr_t)0));
}

TEST(boot_thread_finalizes_x_while_its_interp_is_destroyed)
{
    t_pthread_join(t_pthread(boot_case, (void *)(intptr_t)1));
}

/* ---- 1: an exception raised at the waiting caller, whose state take_back
   then frees (Y finalized by another thread) or re-attaches ------------- */

static uint64_t g_ident;
static int g_raise_count = -1;

static void *raise_then_finalize_y(void *arg)
{
    int finalize_y = (int)(intptr_t)arg;
    struct timespec d = {0, 20 * 1000 * 1000};
    nanosleep(&d, NULL);
    ASSERT_OK(tether_raise_by_ident(g_ymain, g_ident, 5, (void *)&g_ident,
                                    t_count_dtor, &g_raise_count));
    if (finalize_y)
        ASSERT_OK(tether_runtime_finalize(g_y, SECONDS(30)));
    atomic_store(&g_go, 1);
    return NULL;
}

static void *raise_case(void *arg)
{
    int finalize_y = (int)(intptr_t)arg;
    g_y = t_runtime_main(NULL, &g_ymain);
    tether_thread me;
    ASSERT_OK(tether_thread_current(&me));
    ASSERT_OK(tether_thread_ident(me, &g_ident));
    tether_tstate ys;
    ASSERT_OK(tether_save_thread(&ys));
    tether_interp xmain;
    tether_runtime x = t_runtime_main(NULL, &xmain);
    tether_thread xt = 0;
    atomic_store(&g_go, 0);
    ASSERT_OK(tether_thread_start(xmain, wait_go, NULL, NULL, &xt));
    tether_tstate xs;
    ASSERT_OK(tether_save_thread(&xs));
    ASSERT_OK(tether_restore_thread(ys));
    pthread_t u = t_pthread(raise_then_finalize_y, arg);
    int rc = tether_runtime_finalize(x, SECONDS(30));
    t_pthread_join(u);
    fprintf(stderr, "finalize(X) -> %s, raise count %d, dtor calls %d\n",
            tether_status_name(rc), g_raise_count, atomic_load(&t_dtor_calls));
    if (finalize_y) {
        ASSERT_EQ(rc, TETHER_EFINALIZING);
        ASSERT_EQ(atomic_load(&t_dtor_calls), g_raise_count);
    } else {
        ASSERT_OK(rc);
        ASSERT_EQ(g_raise_count, 1);
        ASSERT_STATUS(tether_checkpoint(), TETHER_EASYNC);
        int64_t code = 0;
        void *pl = NULL;
        tether_dtor dt = NULL;
        ASSERT_OK(tether_async_fetch(&code, &pl, &dt));
        ASSERT_EQ(code, 5);
        t_finalize(g_y);
    }
    (void)tether_thread_release(xt);
    (void)tether_thread_release(me);
    return NULL;
}

TEST(raise_at_the_waiting_caller_then_finalize_y)
{
    t_pthread_join(t_pthread(raise_case, (void *)(intptr_t)1));
}

TEST(raise_at_the_waiting_caller)
{
    t_pthread_join(t_pthread(raise_case, (void *)(intptr_t)0));
}

int main(int argc, char **argv)
{
    static const test_case cases[] = {
        TEST_ENTRY(fini_ensures_the_callers_interp),
        TEST_ENTRY_T(fini_leaves_an_ensure_of_the_callers_interp, 20),
        TEST_ENTRY(fini_destroys_another_interp_of_the_callers_runtime),
        TEST_ENTRY(fini_destroys_the_interp_the_caller_is_ensured_to),
        TEST_ENTRY(fini_finalizes_the_callers_runtime_under_frames),
        TEST_ENTRY(fini_finalizes_the_callers_runtime_saved_state),
        TEST_ENTRY(fini_finalizes_two_runtimes_with_saved_states),
        TEST_ENTRY(fini_finalizes_the_callers_runtime_thread_exits),
        TEST_ENTRY(call_blocking_fn_finalizes_x_whose_fini_finalizes_y),
        TEST_ENTRY(call_blocking_fn_finalizes_x),
        TEST_ENTRY(fini_call_blocking_finalizes_the_callers_runtime),
        TEST_ENTRY(another_thread_finalizes_y_meanwhile),
        TEST_ENTRY(another_thread_finalizes_y_meanwhile_framed),
        TEST_ENTRY(boot_thread_finalizes_x_while_y_is_finalized),
        TEST_ENTRY(boot_thread_finalizes_x_while_its_interp_is_destroyed),
        TEST_ENTRY(raise_at_the_waiting_caller_then_finalize_y),
        TEST_ENTRY(raise_at_the_waiting_caller),
        TEST_ENTRY(baseline_two_saved_states_finalized),
        TEST_ENTRY(baseline_call_blocking_fn_finalizes_y_nested_token),
        TEST_ENTRY(baseline_finalize_y_nested_token),
        TEST_ENTRY_T(baseline_call_blocking_fn_leaves_an_ensure, 20),
    };
    return runner_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
