/*
 * test_tstate.c - who owns a thread state (docs/threading-model.md, "Who
 * owns a thread state"), and what ensure tokens mean around finalize.
 *
 * A thread started by tether_thread_start owns its start-up state through
 * its bootstrap: an ensure that finds it finalizing, and finalize or
 * destroy called from the thread itself, must not free it (the thread's
 * exit would free it again).  Before the fix these cases double-freed
 * (glibc aborts; ASan reports it) or joined themselves.
 */
#include <tether/tether.h>

#include <pthread.h>
#include <stdlib.h>

#include "runner.h"
#include "support.h"

static tether_runtime g_rt;
static tether_interp g_main, g_x;
static tether_event g_entered, g_never;
static atomic_int g_rc1, g_rc2, g_rc3;

static void setup(void)
{
    g_rt = t_runtime_main(NULL, &g_main);
    ASSERT_OK(tether_interp_create(g_rt, &g_x));
    ASSERT_OK(tether_event_new(&g_entered));
    ASSERT_OK(tether_event_new(&g_never));
    atomic_store(&g_rc1, -1000);
    atomic_store(&g_rc2, -1000);
    atomic_store(&g_rc3, -1000);
}

static void teardown_events(void)
{
    ASSERT_OK(tether_event_free(g_entered));
    ASSERT_OK(tether_event_free(g_never));
}

/* ------------------------------------------------------------------------
 * F1: an ensure of the thread's own, finalizing interpreter
 * ---------------------------------------------------------------------- */

/* Waits until finalize wakes it, then ensures its own interpreter: the
   ensure must answer EFINALIZING without freeing the start-up state. */
static int wait_then_ensure_own(void *arg)
{
    tether_interp own = (tether_interp)(uintptr_t)arg;
    tether_gilstate st;
    ASSERT_OK(tether_event_set(g_entered));
    atomic_store(&g_rc1, tether_event_wait(g_never, -1));
    atomic_store(&g_rc2, tether_ensure(own, &st));
    /* Twice: the state is still the thread's, and still finalizing. */
    atomic_store(&g_rc3, tether_ensure(own, &st));
    return TETHER_EXIT;
}

TEST(ensure_own_interp_after_finalize)
{
    setup();
    tether_thread t = t_start_daemon(g_main, wait_then_ensure_own,
                                     (void *)(uintptr_t)g_main);
    ASSERT_OK(tether_event_wait(g_entered, -1));
    ASSERT_OK(tether_runtime_finalize(g_rt, SECONDS(30)));
    ASSERT_EQ(t_join(t), TETHER_EXIT); /* its exit frees the state once */
    ASSERT_EQ(atomic_load(&g_rc1), TETHER_EFINALIZING);
    ASSERT_EQ(atomic_load(&g_rc2), TETHER_EFINALIZING);
    ASSERT_EQ(atomic_load(&g_rc3), TETHER_EFINALIZING);
    teardown_events();
}

TEST(ensure_own_interp_after_destroy)
{
    setup();
    tether_thread t = t_start_daemon(g_x, wait_then_ensure_own,
                                     (void *)(uintptr_t)g_x);
    ASSERT_OK(tether_event_wait(g_entered, -1));
    ASSERT_OK(tether_interp_destroy(g_x, SECONDS(30)));
    ASSERT_EQ(t_join(t), TETHER_EXIT);
    ASSERT_EQ(atomic_load(&g_rc1), TETHER_EFINALIZING);
    ASSERT_EQ(atomic_load(&g_rc2), TETHER_EFINALIZING);
    ASSERT_EQ(atomic_load(&g_rc3), TETHER_EFINALIZING);
    t_finalize(g_rt);
    teardown_events();
}

/* ------------------------------------------------------------------------
 * F2, F3: finalize and destroy from a thread of the runtime, not attached
 * to its own interpreter.  A finite timeout, so that the unfixed library
 * fails (self-join times out, then a double free) instead of hanging.
 * ---------------------------------------------------------------------- */

enum how { DETACHED, VIA_MAIN, VIA_OTHER_RUNTIME };

static tether_runtime g_other;

/* Calls `call` with the thread detached (inside ALLOW_THREADS), attached
   to the main interpreter through an ensure, or attached to another
   runtime's interpreter. */
static int call_as(enum how how, int (*call)(void))
{
    int rc = -1000;
    if (how == DETACHED) {
        TETHER_BEGIN_ALLOW_THREADS
        ASSERT_EQ(tether_gil_held(), 0);
        rc = call();
        TETHER_END_ALLOW_THREADS
    } else {
        tether_interp target = how == VIA_MAIN ? g_main : t_main_interp(g_other);
        tether_gilstate st;
        ASSERT_OK(tether_ensure(target, &st));
        rc = call();
        ASSERT_EQ(tether_gil_held(), 1);
        ASSERT_OK(tether_release(st));
    }
    ASSERT_EQ(tether_gil_held(), 1); /* back on its own state */
    return rc;
}

static int finalize_rt(void) { return tether_runtime_finalize(g_rt, MS(300)); }
static int destroy_x(void) { return tether_interp_destroy(g_x, MS(300)); }

static int finalize_as(void *arg)
{
    atomic_store(&g_rc1, call_as((enum how)(intptr_t)arg, finalize_rt));
    return TETHER_OK;
}

static int destroy_as(void *arg)
{
    atomic_store(&g_rc1, call_as((enum how)(intptr_t)arg, destroy_x));
    return TETHER_OK;
}

/* Runs `fn(how)` on a non-daemon thread of `interp`; it must be refused
   with ESTATE, after which the runtime finalizes normally. */
static void expect_refused(tether_interp interp, tether_thread_fn fn, enum how how)
{
    tether_thread t = t_start(interp, fn, (void *)(intptr_t)how);
    ASSERT_EQ(t_join(t), TETHER_OK);
    ASSERT_EQ(atomic_load(&g_rc1), TETHER_ESTATE);
    t_finalize(g_rt);
    teardown_events();
}

TEST(finalize_from_detached_thread)
{
    setup();
    expect_refused(g_main, finalize_as, DETACHED);
}

TEST(finalize_from_thread_of_subinterp_detached)
{
    setup();
    expect_refused(g_x, finalize_as, DETACHED);
}

TEST(finalize_from_thread_attached_elsewhere)
{
    setup();
    expect_refused(g_x, finalize_as, VIA_MAIN);
}

TEST(finalize_from_thread_attached_to_other_runtime)
{
    tether_tstate mine, other;
    setup();
    ASSERT_OK(tether_save_thread(&mine));
    g_other = t_runtime(NULL);
    ASSERT_OK(tether_save_thread(&other));
    ASSERT_OK(tether_restore_thread(mine));
    tether_thread t = t_start(g_main, finalize_as, (void *)(intptr_t)VIA_OTHER_RUNTIME);
    ASSERT_EQ(t_join(t), TETHER_OK);
    ASSERT_EQ(atomic_load(&g_rc1), TETHER_ESTATE);
    t_finalize(g_rt);
    teardown_events();
    ASSERT_OK(tether_restore_thread(other));
    t_finalize(g_other);
}

TEST(destroy_from_detached_thread)
{
    setup();
    expect_refused(g_x, destroy_as, DETACHED);
}

TEST(destroy_from_thread_attached_to_main)
{
    setup();
    expect_refused(g_x, destroy_as, VIA_MAIN);
}

/* A thread of the main interpreter may destroy another interpreter. */
TEST(destroy_other_interp_from_thread_allowed)
{
    setup();
    tether_thread t = t_start(g_main, destroy_as, (void *)(intptr_t)DETACHED);
    ASSERT_EQ(t_join(t), TETHER_OK);
    ASSERT_EQ(atomic_load(&g_rc1), TETHER_OK);
    t_finalize(g_rt);
    teardown_events();
}

/* ------------------------------------------------------------------------
 * F7, F15: release after the interpreter of the ensure, or the one it
 * detached, was destroyed
 * ---------------------------------------------------------------------- */

static void *destroy_x_thread(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_interp_destroy(g_x, SECONDS(30)));
    return NULL;
}

/* The creator, attached to the main interpreter, ensures X (a callback of
   X, say); X is destroyed while the guest waits.  The release must give
   the thread its main-interpreter GIL back. */
static void release_reattaches_outer(uint32_t flags)
{
    tether_config cfg = {.size = sizeof cfg, .flags = flags};
    g_rt = t_runtime_main(&cfg, &g_main);
    ASSERT_OK(tether_interp_create(g_rt, &g_x));
    ASSERT_OK(tether_event_new(&g_never));
    tether_gilstate st;
    ASSERT_OK(tether_ensure(g_x, &st));
    pthread_t d = t_pthread(destroy_x_thread, NULL);
    ASSERT_STATUS(tether_event_wait(g_never, -1), TETHER_EFINALIZING);
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_OK(tether_release(st));
    ASSERT_EQ(tether_gil_held(), 1);
    tether_thread self;
    ASSERT_OK(tether_thread_current(&self)); /* attached to main again */
    ASSERT_OK(tether_thread_release(self));
    ASSERT_OK(tether_checkpoint());
    TETHER_BEGIN_ALLOW_THREADS /* the destroyer passes through the GIL */
    t_pthread_join(d);
    TETHER_END_ALLOW_THREADS
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_event_free(g_never));
    t_finalize(g_rt);
}

TEST(release_reattaches_outer_shared_gil) { release_reattaches_outer(0); }

TEST(release_reattaches_outer_own_gil)
{
    release_reattaches_outer(TETHER_CONFIG_PER_INTERP_GIL);
}

static tether_event g_ready, g_destroyed;

/* Attached to X, then to main through a nested ensure; X is destroyed
   meanwhile.  The release that must switch back to X answers EFINALIZING
   and leaves the thread detached; the outer release still pairs. */
static void *outer_destroyed(void *arg)
{
    (void)arg;
    tether_gilstate gx, gm;
    ASSERT_OK(tether_ensure(g_x, &gx));
    ASSERT_OK(tether_ensure(g_main, &gm));
    ASSERT_OK(tether_event_set(g_ready));
    ASSERT_OK(tether_event_wait(g_destroyed, -1));
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_FAILS(tether_release(gm), TETHER_EFINALIZING, "tether_release");
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_STATUS(tether_release(gm), TETHER_ESTATE); /* released already */
    ASSERT_OK(tether_release(gx));
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(release_outer_destroyed_answers_efinalizing)
{
    setup();
    ASSERT_OK(tether_event_new(&g_ready));
    ASSERT_OK(tether_event_new(&g_destroyed));
    pthread_t f = t_pthread(outer_destroyed, NULL);
    ASSERT_OK(tether_event_wait(g_ready, -1));
    ASSERT_OK(tether_interp_destroy(g_x, SECONDS(30)));
    ASSERT_OK(tether_event_set(g_destroyed));
    TETHER_BEGIN_ALLOW_THREADS
    t_pthread_join(f);
    TETHER_END_ALLOW_THREADS
    ASSERT_OK(tether_event_free(g_ready));
    ASSERT_OK(tether_event_free(g_destroyed));
    t_finalize(g_rt);
    teardown_events();
}

/* A brand-new thread's only frame (no outer state) with a nested ensure
   on it, detached by the destroy of its interpreter: both releases pair,
   and the thread's next ensure of another interpreter attaches and nests
   through the fast path (its fields refreshed by the outermost release,
   issue 19 item 4's review). */
static void *fresh_thread_detached_then_reensures(void *arg)
{
    (void)arg;
    tether_gilstate g1, g2, m1, m2;
    ASSERT_OK(tether_ensure(g_x, &g1));
    ASSERT_OK(tether_ensure(g_x, &g2));
    ASSERT_OK(tether_event_set(g_ready));
    ASSERT_STATUS(tether_event_wait(g_never, -1), TETHER_EFINALIZING);
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_OK(tether_release(g2));
    ASSERT_OK(tether_release(g1));
    ASSERT_STATUS(tether_release(g1), TETHER_ESTATE); /* released already */
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_OK(tether_ensure(g_main, &m1));
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_ensure(g_main, &m2));
    ASSERT_OK(tether_checkpoint());
    ASSERT_OK(tether_release(m2));
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_release(m1));
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(fresh_thread_detached_by_destroy_ensures_again)
{
    setup();
    ASSERT_OK(tether_event_new(&g_ready));
    tether_interp x = g_x;
    pthread_t f = t_pthread(fresh_thread_detached_then_reensures, NULL);
    TETHER_BEGIN_ALLOW_THREADS
    ASSERT_OK(tether_event_wait(g_ready, -1));
    TETHER_END_ALLOW_THREADS
    ASSERT_OK(tether_interp_destroy(x, SECONDS(30)));
    TETHER_BEGIN_ALLOW_THREADS
    t_pthread_join(f);
    TETHER_END_ALLOW_THREADS
    ASSERT_OK(tether_event_free(g_ready));
    t_finalize(g_rt);
    teardown_events();
}

/* ------------------------------------------------------------------------
 * F16: tokens made invalid by finalize; nested releases while saved
 * ---------------------------------------------------------------------- */

/* The creator's nested ensure (no frame) is invalid after its own
   finalize. */
TEST(finalize_invalidates_nested_token)
{
    tether_runtime rt = t_runtime(NULL);
    tether_gilstate st;
    ASSERT_OK(tether_ensure(t_main_interp(rt), &st));
    t_finalize(rt);
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_FAILS(tether_release(st), TETHER_ESTATE, "finalize");
    /* A new runtime's tokens on the same thread work as usual. */
    rt = t_runtime(NULL);
    tether_gilstate a, b;
    ASSERT_OK(tether_ensure(t_main_interp(rt), &a));
    ASSERT_OK(tether_ensure(t_main_interp(rt), &b));
    ASSERT_FAILS(tether_release(st), TETHER_ESTATE, "tether_release");
    ASSERT_OK(tether_release(b));
    ASSERT_OK(tether_release(a));
    ASSERT_FAILS(tether_release(st), TETHER_ESTATE, "finalize");
    t_finalize(rt);
}

static tether_runtime g_frt;

/* A foreign thread's ensure (a frame) is invalid after it finalizes. */
static void *ensure_then_finalize(void *arg)
{
    (void)arg;
    tether_gilstate outer, inner;
    ASSERT_OK(tether_ensure(t_main_interp(g_frt), &outer));
    ASSERT_OK(tether_ensure(t_main_interp(g_frt), &inner));
    ASSERT_OK(tether_runtime_finalize(g_frt, SECONDS(30)));
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_FAILS(tether_release(inner), TETHER_ESTATE, "finalize");
    ASSERT_FAILS(tether_release(outer), TETHER_ESTATE, "finalize");
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(finalize_invalidates_frame_tokens)
{
    g_frt = t_runtime(NULL);
    tether_tstate saved;
    ASSERT_OK(tether_save_thread(&saved));
    t_pthread_join(t_pthread(ensure_then_finalize, NULL));
    ASSERT_STATUS(tether_restore_thread(saved), TETHER_EFINALIZING);
}

/* A foreign thread ensures runtime A (a frame), nests it, then ensures
   runtime B (a frame on top), and finalizes A while attached to B: the
   API fuzzer's seed x06.  The tokens it got while attached to A are
   invalid, as when it finalizes A attached to it; B's token stays valid,
   and its release answers EFINALIZING (the state it would re-attach is
   A's) and leaves the thread detached. */
static tether_runtime g_brt;

static void *finalize_while_attached_elsewhere(void *arg)
{
    (void)arg;
    tether_gilstate a1, a2, b;
    ASSERT_OK(tether_ensure(t_main_interp(g_frt), &a1));
    ASSERT_OK(tether_ensure(t_main_interp(g_frt), &a2));
    ASSERT_OK(tether_ensure(t_main_interp(g_brt), &b));
    ASSERT_OK(tether_runtime_finalize(g_frt, SECONDS(30)));
    ASSERT_EQ(tether_gil_held(), 1); /* still attached to B */
    ASSERT_FAILS(tether_release(a2), TETHER_ESTATE, "tether_release");
    ASSERT_FAILS(tether_release(b), TETHER_EFINALIZING, "finaliz");
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_FAILS(tether_release(a2), TETHER_ESTATE, "finalize");
    ASSERT_FAILS(tether_release(a1), TETHER_ESTATE, "finalize");
    /* The thread goes on: B works as usual. */
    ASSERT_OK(tether_ensure(t_main_interp(g_brt), &b));
    ASSERT_OK(tether_release(b));
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(finalize_invalidates_tokens_under_another_runtime)
{
    g_frt = t_runtime(NULL);
    tether_tstate saved_a;
    ASSERT_OK(tether_save_thread(&saved_a));
    g_brt = t_runtime(NULL);
    tether_tstate saved_b;
    ASSERT_OK(tether_save_thread(&saved_b));
    t_pthread_join(t_pthread(finalize_while_attached_elsewhere, NULL));
    ASSERT_OK(tether_restore_thread(saved_b));
    t_finalize(g_brt);
    ASSERT_STATUS(tether_restore_thread(saved_a), TETHER_EFINALIZING);
}

/* The same thread's tokens when it finalizes its runtime while its state
   is saved (TETHER_BEGIN_ALLOW_THREADS around the finalize). */
static void *finalize_while_saved(void *arg)
{
    (void)arg;
    tether_gilstate outer, inner;
    tether_tstate saved;
    ASSERT_OK(tether_ensure(t_main_interp(g_frt), &outer));
    ASSERT_OK(tether_ensure(t_main_interp(g_frt), &inner));
    ASSERT_OK(tether_save_thread(&saved));
    ASSERT_OK(tether_runtime_finalize(g_frt, SECONDS(30)));
    ASSERT_STATUS(tether_restore_thread(saved), TETHER_EFINALIZING);
    ASSERT_FAILS(tether_release(inner), TETHER_ESTATE, "finalize");
    ASSERT_FAILS(tether_release(outer), TETHER_ESTATE, "finalize");
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(finalize_while_saved_invalidates_tokens)
{
    g_frt = t_runtime(NULL);
    tether_tstate saved;
    ASSERT_OK(tether_save_thread(&saved));
    t_pthread_join(t_pthread(finalize_while_saved, NULL));
    ASSERT_STATUS(tether_restore_thread(saved), TETHER_EFINALIZING);
}

/* A callback that releases the GIL while its host is itself inside an
   allow-threads region of the same interpreter: save, ensure (it
   re-attaches the saved state), save, restore, release, restore.  The
   inner pair used to clear the outer save's mark, and the outer restore
   answered "not a state saved on this thread" (found by the Rust
   binding's plugin, issue 22). */
static void *saves_nest_in_an_ensure(void *arg)
{
    (void)arg;
    tether_gilstate outer, st;
    tether_tstate a, b;
    ASSERT_OK(tether_ensure(g_main, &outer));
    ASSERT_OK(tether_save_thread(&a));
    ASSERT_OK(tether_ensure(g_main, &st));
    ASSERT_OK(tether_save_thread(&b));
    ASSERT_FAILS(tether_release(st), TETHER_ESTATE, "tether_save_thread");
    ASSERT_OK(tether_restore_thread(b));
    ASSERT_OK(tether_release(st));
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_OK(tether_restore_thread(a));
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_FAILS(tether_restore_thread(a), TETHER_ESTATE, "not a state saved");
    ASSERT_OK(tether_release(outer));
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(save_nests_inside_an_ensure_inside_a_save)
{
    setup();
    t_run_foreign(saves_nest_in_an_ensure, NULL);
    t_finalize(g_rt);
}

/* A release of a nested ensure (it took nothing) while the state is saved
   is unbalanced, like one of an ensure that attached: refused, and
   nothing changes. */
TEST(nested_release_while_saved_refused)
{
    tether_runtime rt = t_runtime(NULL);
    tether_gilstate st;
    tether_tstate saved;
    ASSERT_OK(tether_ensure(t_main_interp(rt), &st));
    ASSERT_OK(tether_save_thread(&saved));
    ASSERT_FAILS(tether_release(st), TETHER_ESTATE, "tether_save_thread");
    ASSERT_OK(tether_restore_thread(saved));
    ASSERT_OK(tether_release(st));
    ASSERT_EQ(tether_gil_held(), 1);
    t_finalize(rt);
}

/* The same on a foreign thread whose ensure attached (a frame) and then
   nested. */
static void *nested_saved_foreign(void *arg)
{
    (void)arg;
    tether_gilstate outer, inner;
    tether_tstate saved;
    ASSERT_OK(tether_ensure(g_main, &outer));
    ASSERT_OK(tether_ensure(g_main, &inner));
    ASSERT_OK(tether_save_thread(&saved));
    ASSERT_FAILS(tether_release(inner), TETHER_ESTATE, "saved");
    ASSERT_OK(tether_restore_thread(saved));
    ASSERT_OK(tether_release(inner));
    ASSERT_OK(tether_release(outer));
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(nested_release_while_saved_refused_foreign)
{
    setup();
    t_run_foreign(nested_saved_foreign, NULL);
    t_finalize(g_rt);
    teardown_events();
}

/* A nested release after finalize detached the thread (not saved) still
   pairs: the thread stays detached. */
static void *nested_after_finalize(void *arg)
{
    (void)arg;
    tether_gilstate outer, inner;
    ASSERT_OK(tether_ensure(g_main, &outer));
    ASSERT_OK(tether_ensure(g_main, &inner));
    ASSERT_OK(tether_event_set(g_entered));
    ASSERT_STATUS(tether_event_wait(g_never, -1), TETHER_EFINALIZING);
    ASSERT_OK(tether_release(inner));
    ASSERT_OK(tether_release(outer));
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(nested_release_after_finalize_pairs)
{
    setup();
    tether_tstate saved;
    ASSERT_OK(tether_save_thread(&saved));
    pthread_t f = t_pthread(nested_after_finalize, NULL);
    ASSERT_OK(tether_event_wait(g_entered, -1));
    ASSERT_OK(tether_runtime_finalize(g_rt, SECONDS(30)));
    t_pthread_join(f);
    ASSERT_STATUS(tether_restore_thread(saved), TETHER_EFINALIZING);
    teardown_events();
}

/* ------------------------------------------------------------------------
 * Tokens around a state detached in use: saved, or kept by a blocking
 * section (tether_call_blocking; a finalize waiting on another runtime).
 * From the third review of the crosswise-finalize fix; each case failed
 * before its fix, 5 runs of 5.
 * ---------------------------------------------------------------------- */

static tether_runtime g_zrt;
static tether_interp g_ym, g_zm;
static tether_gilstate g_tz;

/* fn ensures Z (a frame whose ensure found the thread detached) and
   finalizes Y, the runtime of the caller's blocked state. */
static int ensure_z_finalize_y(void *arg)
{
    ASSERT_OK(tether_ensure(g_zm, &g_tz));
    ASSERT_OK(tether_runtime_finalize(*(tether_runtime *)arg, SECONDS(30)));
    ASSERT_OK(tether_release(g_tz));
    return TETHER_OK;
}

/* A token got while Y's state was in use survived: the frame above it
   named no state it had detached (the thread was detached by the block),
   and only a state without a frame above it counted. */
TEST(finalize_invalidates_the_tokens_of_a_blocked_state)
{
    g_zrt = t_runtime_elsewhere(&g_zm);
    tether_runtime y = t_runtime_main(NULL, &g_ym);
    tether_gilstate tok_y;
    ASSERT_OK(tether_ensure(g_ym, &tok_y)); /* nested: no frame */
    ASSERT_STATUS(tether_call_blocking(ensure_z_finalize_y, &y, NULL, NULL),
                  TETHER_EFINALIZING);
    ASSERT_FAILS(tether_release(tok_y), TETHER_ESTATE, "finalize");
    t_finalize(g_zrt);
}

/* fn makes Z (attached to it, no frame), takes a nested token of it,
   saves Z and finalizes Y. */
static int token_of_z_then_finalize_y(void *arg)
{
    g_zrt = t_runtime_main(NULL, &g_zm);
    ASSERT_OK(tether_ensure(g_zm, &g_tz));
    tether_tstate sz;
    ASSERT_OK(tether_save_thread(&sz));
    ASSERT_OK(tether_runtime_finalize(*(tether_runtime *)arg, SECONDS(30)));
    ASSERT_OK(tether_restore_thread(sz));
    ASSERT_OK(tether_release(g_tz)); /* got later, attached to Z: valid */
    t_finalize(g_zrt);
    return TETHER_OK;
}

/* The other way: every token was made invalid, also those got later on
   another runtime, once Y's state counted as in use (a regression of the
   review's first fix; with two saves it was so before). */
TEST(finalize_leaves_later_tokens_of_another_runtime)
{
    tether_runtime y = t_runtime_main(NULL, &g_ym);
    tether_gilstate tok_y;
    ASSERT_OK(tether_ensure(g_ym, &tok_y));
    ASSERT_STATUS(tether_call_blocking(token_of_z_then_finalize_y, &y, NULL,
                                       NULL),
                  TETHER_EFINALIZING);
    ASSERT_FAILS(tether_release(tok_y), TETHER_ESTATE, "finalize");
}

TEST(finalize_leaves_later_tokens_of_another_saved_runtime)
{
    tether_runtime y = t_runtime_main(NULL, &g_ym);
    tether_gilstate tok_y;
    tether_tstate sy, sz;
    ASSERT_OK(tether_ensure(g_ym, &tok_y));
    ASSERT_OK(tether_save_thread(&sy));
    g_zrt = t_runtime_main(NULL, &g_zm);
    ASSERT_OK(tether_ensure(g_zm, &g_tz));
    ASSERT_OK(tether_save_thread(&sz));
    ASSERT_OK(tether_runtime_finalize(y, SECONDS(30)));
    ASSERT_OK(tether_restore_thread(sz));
    ASSERT_OK(tether_release(g_tz));
    t_finalize(g_zrt);
    ASSERT_STATUS(tether_restore_thread(sy), TETHER_EFINALIZING);
    ASSERT_FAILS(tether_release(tok_y), TETHER_ESTATE, "finalize");
}

/* fn leaves an ensure of Z open: misuse, answered ESTATE; the release of
   that ensure re-attaches the caller's state, so the caller's own tokens
   release in order (its release detached the thread, and the caller's
   next release was refused). */
static int leave_z_ensured(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_ensure(g_zm, &g_tz));
    return 7;
}

static void *blocking_leaves_an_ensure(void *arg)
{
    (void)arg;
    tether_gilstate tok_y;
    ASSERT_OK(tether_ensure(g_ym, &tok_y));
    ASSERT_FAILS(tether_call_blocking(leave_z_ensured, NULL, NULL, NULL),
                 TETHER_ESTATE, "tether_call_blocking");
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_release(g_tz)); /* back on Y */
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_checkpoint());
    ASSERT_OK(tether_release(tok_y));
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(blocking_fn_that_leaves_an_ensure_open)
{
    g_zrt = t_runtime_elsewhere(&g_zm);
    tether_runtime y = t_runtime_elsewhere(&g_ym);
    t_pthread_join(t_pthread(blocking_leaves_an_ensure, NULL));
    t_finalize(y);
    t_finalize(g_zrt);
}

/* An allocator that gives a freed block back to the next allocation of
   its size (LIFO), so that a new thread state is made at the address of
   the one finalize deleted. */
enum { LIFO_SLOTS = 64 };
static struct {
    pthread_mutex_t mu;
    size_t size[LIFO_SLOTS];
    void *block[LIFO_SLOTS];
    int n;
} g_lifo = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void *lifo_malloc(size_t n, void *ud)
{
    (void)ud;
    pthread_mutex_lock(&g_lifo.mu);
    for (int i = g_lifo.n; i-- > 0;) {
        if (g_lifo.size[i] == n) {
            void *p = g_lifo.block[i];
            g_lifo.n--;
            g_lifo.size[i] = g_lifo.size[g_lifo.n];
            g_lifo.block[i] = g_lifo.block[g_lifo.n];
            pthread_mutex_unlock(&g_lifo.mu);
            return p;
        }
    }
    pthread_mutex_unlock(&g_lifo.mu);
    size_t *h = malloc(n + 16);
    if (!h)
        return NULL;
    *h = n;
    return (char *)h + 16;
}

static void lifo_free(void *p, void *ud)
{
    (void)ud;
    if (!p)
        return;
    size_t *h = (size_t *)((char *)p - 16);
    pthread_mutex_lock(&g_lifo.mu);
    if (g_lifo.n < LIFO_SLOTS) {
        /* The newest last: a later free of the same size goes after it. */
        g_lifo.size[g_lifo.n] = *h;
        g_lifo.block[g_lifo.n++] = p;
        h = NULL;
    }
    pthread_mutex_unlock(&g_lifo.mu);
    free(h);
}

/* The token of a saved state finalize deleted, whose address a new state
   of the thread took: its restore answered "not a state saved on this
   thread" (found the new state: tokens were bare addresses), misuse, and
   an abort under TETHER_CONFIG_ABORT_ON_MISUSE. */
TEST(restore_of_a_deleted_state_whose_address_was_reused)
{
    tether_allocator a = {sizeof a, lifo_malloc, lifo_free, NULL};
    ASSERT_OK(tether_set_allocator(&a));
    tether_runtime y = t_runtime(NULL);
    tether_tstate sy, sw;
    ASSERT_OK(tether_save_thread(&sy));
    ASSERT_OK(tether_runtime_finalize(y, SECONDS(30)));
    tether_runtime w = t_runtime(NULL); /* its state: sy's block */
    ASSERT_OK(tether_save_thread(&sw));
    ASSERT_EQ(sw & 0xffffffffffffu, sy & 0xffffffffffffu); /* reused */
    ASSERT(sw != sy);
    ASSERT_OK(tether_restore_thread(sw));
    ASSERT_FAILS(tether_restore_thread(sy), TETHER_EFINALIZING,
                 "tether_restore_thread");
    ASSERT_FAILS(tether_restore_thread(sy), TETHER_ESTATE, /* answered once */
                 "tether_restore_thread");
    t_finalize(w);
}

/* The newest four saved states finalize deleted on the thread answer
   EFINALIZING, once each; the oldest of five is forgotten. */
TEST(restore_of_the_newest_four_deleted_states)
{
    tether_runtime rt[5];
    tether_tstate saved[5];
    for (int i = 0; i < 5; i++) {
        rt[i] = t_runtime(NULL);
        ASSERT_OK(tether_save_thread(&saved[i]));
    }
    for (int i = 0; i < 5; i++)
        ASSERT_OK(tether_runtime_finalize(rt[i], SECONDS(30)));
    ASSERT_FAILS(tether_restore_thread(saved[0]), TETHER_ESTATE, "not a state");
    for (int i = 1; i < 5; i++) {
        ASSERT_STATUS(tether_restore_thread(saved[i]), TETHER_EFINALIZING);
        ASSERT_STATUS(tether_restore_thread(saved[i]), TETHER_ESTATE);
    }
}

RUNNER_MAIN(TEST_ENTRY(ensure_own_interp_after_finalize),
            TEST_ENTRY(ensure_own_interp_after_destroy),
            TEST_ENTRY(finalize_from_detached_thread),
            TEST_ENTRY(finalize_from_thread_of_subinterp_detached),
            TEST_ENTRY(finalize_from_thread_attached_elsewhere),
            TEST_ENTRY(finalize_from_thread_attached_to_other_runtime),
            TEST_ENTRY(destroy_from_detached_thread),
            TEST_ENTRY(destroy_from_thread_attached_to_main),
            TEST_ENTRY(destroy_other_interp_from_thread_allowed),
            TEST_ENTRY(release_reattaches_outer_shared_gil),
            TEST_ENTRY(release_reattaches_outer_own_gil),
            TEST_ENTRY(release_outer_destroyed_answers_efinalizing),
            TEST_ENTRY(fresh_thread_detached_by_destroy_ensures_again),
            TEST_ENTRY(finalize_invalidates_nested_token),
            TEST_ENTRY(finalize_invalidates_frame_tokens),
            TEST_ENTRY(finalize_invalidates_tokens_under_another_runtime),
            TEST_ENTRY(finalize_while_saved_invalidates_tokens),
            TEST_ENTRY(save_nests_inside_an_ensure_inside_a_save),
            TEST_ENTRY(nested_release_while_saved_refused),
            TEST_ENTRY(nested_release_while_saved_refused_foreign),
            TEST_ENTRY(nested_release_after_finalize_pairs),
            TEST_ENTRY(finalize_invalidates_the_tokens_of_a_blocked_state),
            TEST_ENTRY(finalize_leaves_later_tokens_of_another_runtime),
            TEST_ENTRY(finalize_leaves_later_tokens_of_another_saved_runtime),
            TEST_ENTRY(blocking_fn_that_leaves_an_ensure_open),
            TEST_ENTRY(restore_of_a_deleted_state_whose_address_was_reused),
            TEST_ENTRY(restore_of_the_newest_four_deleted_states))
