/*
 * test_token_rule.c - which ensure tokens a tether_runtime_finalize on the
 * calling thread makes invalid (tether.h tether_release;
 * docs/threading-model.md, "A finalize called on the thread itself makes
 * invalid"), where a state is re-entered through another runtime, saves
 * and blocking sections nest, or a blocking section's fn misuses a token.
 * From the fourth review of the rule's rework; every case failed 3 runs
 * of 3 before its fix (the state's came_at moved by a re-entry through a
 * frame; left_at moved by a nested save or block; a release inside
 * tether_call_blocking's fn of the blocked state's token was accepted).
 */
#include <tether/tether.h>

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"
#include "support.h"

/* D1 (under-reach).  Y's state is the prev of Z's frame (in use); an ensure
   of Y inside Z re-attaches it and moves its came_at up; after both frames
   are released the thread is back on Y at a level below came_at, so the
   finalize of Y finds "no token of Y" and t1 (got while attached to Y)
   stays valid.  Rule: t1 invalid. */
TEST(came_at_moved_by_reentry_through_another_runtime)
{
    tether_interp ym, zm;
    tether_runtime z = t_runtime_elsewhere(&zm);
    tether_runtime y = t_runtime_main(NULL, &ym); /* attached, frameless */
    tether_gilstate t1, t2, t3;
    ASSERT_OK(tether_ensure(ym, &t1)); /* nested on Y */
    ASSERT_OK(tether_ensure(zm, &t2)); /* frame, prev = Y */
    ASSERT_OK(tether_ensure(ym, &t3)); /* frame, prev = Z: Y's came_at := 2 */
    ASSERT_OK(tether_release(t3));
    ASSERT_OK(tether_release(t2)); /* back on Y, level 1 */
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_runtime_finalize(y, SECONDS(30)));
    ASSERT_FAILS(tether_release(t1), TETHER_ESTATE, "finalize");
    t_finalize(z);
}

static tether_interp g_ym, g_zm;
static tether_runtime g_y;

/* Runs fn on a new thread, with runtimes Y (g_y, g_ym) and Z (g_zm) made
   elsewhere; finalizes Z after, and Y too unless fn did. */
static void on_a_thread_with_y_and_z(void *(*fn)(void *), int finalize_y)
{
    tether_runtime z = t_runtime_elsewhere(&g_zm);
    g_y = t_runtime_elsewhere(&g_ym);
    t_pthread_join(t_pthread(fn, NULL));
    if (finalize_y)
        t_finalize(g_y);
    t_finalize(z);
}

/* D1, with frames only (foreign thread). */
static void *frames_only(void *arg)
{
    (void)arg;
    tether_gilstate t1, t2, t3;
    ASSERT_OK(tether_ensure(g_ym, &t1)); /* frame Y */
    ASSERT_OK(tether_ensure(g_zm, &t2)); /* frame Z, prev Y */
    ASSERT_OK(tether_ensure(g_ym, &t3)); /* frame Y, prev Z */
    ASSERT_OK(tether_release(t3));
    ASSERT_OK(tether_release(t2));
    ASSERT_OK(tether_runtime_finalize(g_y, SECONDS(30)));
    ASSERT_FAILS(tether_release(t1), TETHER_ESTATE, "finalize");
    return NULL;
}

TEST(came_at_moved_by_reentry_foreign)
{
    on_a_thread_with_y_and_z(frames_only, 0);
}

/* D2 (over-reach).  A save nested inside an ensure that re-attached a
   saved state moves left_at up; after its restore and the release of that
   ensure the state is saved again by the outer save, but left_at keeps the
   inner level.  A later token of Z at that level is then refused.
   Rule: t1 invalid (Y's), tz valid (got later, attached to Z). */
static void *stale_left_at(void *arg)
{
    (void)arg;
    tether_gilstate t1, t2, tz;
    tether_tstate sy, sy2;
    ASSERT_OK(tether_ensure(g_ym, &t1)); /* level 1 */
    ASSERT_OK(tether_save_thread(&sy)); /* left_at 1 */
    ASSERT_OK(tether_ensure(g_ym, &t2)); /* re-attaches the saved state */
    ASSERT_OK(tether_save_thread(&sy2)); /* left_at 2 */
    ASSERT_OK(tether_restore_thread(sy2));
    ASSERT_OK(tether_release(t2)); /* saved again (outer save), level 1 */
    ASSERT_OK(tether_ensure(g_zm, &tz)); /* level 2, Z */
    ASSERT_OK(tether_runtime_finalize(g_y, SECONDS(30)));
    ASSERT_OK(tether_release(tz));
    ASSERT_STATUS(tether_restore_thread(sy), TETHER_EFINALIZING);
    ASSERT_FAILS(tether_release(t1), TETHER_ESTATE, "finalize");
    return NULL;
}

TEST(stale_left_at_of_a_nested_save)
{
    on_a_thread_with_y_and_z(stale_left_at, 0);
}

/* D2 through a blocking section: fn re-attaches the blocked state with an
   ensure and runs a nested tether_call_blocking (left_at := its level). */
static int nothing(void *arg)
{
    (void)arg;
    return TETHER_OK;
}

static int reenter_block_then_z(void *arg)
{
    (void)arg;
    tether_gilstate t2, tz;
    ASSERT_OK(tether_ensure(g_ym, &t2)); /* re-attaches the blocked state */
    ASSERT_OK(tether_call_blocking(nothing, NULL, NULL, NULL)); /* left_at 2 */
    ASSERT_OK(tether_release(t2)); /* detached again, still blocked */
    ASSERT_OK(tether_ensure(g_zm, &tz)); /* level 2, Z */
    ASSERT_OK(tether_runtime_finalize(g_y, SECONDS(30)));
    ASSERT_OK(tether_release(tz));
    return TETHER_OK;
}

static void *stale_left_at_blocking(void *arg)
{
    (void)arg;
    tether_gilstate t1;
    ASSERT_OK(tether_ensure(g_ym, &t1));
    ASSERT_STATUS(tether_call_blocking(reenter_block_then_z, NULL, NULL, NULL),
                  TETHER_EFINALIZING);
    ASSERT_FAILS(tether_release(t1), TETHER_ESTATE, "finalize");
    return NULL;
}

TEST(stale_left_at_of_a_nested_blocking_section)
{
    on_a_thread_with_y_and_z(stale_left_at_blocking, 0);
}

/* D2, second consequence: ts_unblock's fix-up of an ensure fn left open
   compares frame tokens with the stale left_at, so the leftover Z frame
   (at the level of the inner block) is not given the blocked state as its
   prev: its release leaves the thread detached instead of back on Y
   (blocking_fn_that_leaves_an_ensure_open, with one nested block first). */
static tether_gilstate g_tz;
static int reenter_block_then_leave_z(void *arg)
{
    (void)arg;
    tether_gilstate t2;
    ASSERT_OK(tether_ensure(g_ym, &t2));
    ASSERT_OK(tether_call_blocking(nothing, NULL, NULL, NULL));
    ASSERT_OK(tether_release(t2));
    ASSERT_OK(tether_ensure(g_zm, &g_tz)); /* left open: misuse */
    return 7;
}

static void *leftover_after_nested_block(void *arg)
{
    (void)arg;
    tether_gilstate t1;
    ASSERT_OK(tether_ensure(g_ym, &t1));
    ASSERT_FAILS(tether_call_blocking(reenter_block_then_leave_z, NULL, NULL,
                                      NULL),
                 TETHER_ESTATE, "tether_call_blocking");
    ASSERT_OK(tether_release(g_tz)); /* back on Y */
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_release(t1));
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(leftover_ensure_after_a_nested_block_reattaches_nothing)
{
    on_a_thread_with_y_and_z(leftover_after_nested_block, 1);
}

/* D3 (misuse accepted).  Inside a blocking section fn releases the
   caller's nested token of the blocked state: answered OK (a release
   while saved is ESTATE). */
static tether_gilstate g_t1;
static int release_outer(void *arg)
{
    (void)arg;
    ASSERT_FAILS(tether_release(g_t1), TETHER_ESTATE, "tether_release");
    return TETHER_OK;
}

TEST(release_of_the_blocked_states_token_inside_fn)
{
    tether_interp ym;
    tether_runtime y = t_runtime_main(NULL, &ym);
    ASSERT_OK(tether_ensure(ym, &g_t1));
    ASSERT_OK(tether_call_blocking(release_outer, NULL, NULL, NULL));
    ASSERT_OK(tether_release(g_t1));
    t_finalize(y);
}

/* The same release after fn restored a state of Z saved before the
   section: it pairs, as the release of a saved state's nested token
   under a restored state does (stale_frame_left_...), and the caller's
   own release of it after the section is then refused (released once).
   docs/threading-model.md says both (rev5 review's note). */
static tether_tstate g_sz;
static tether_gilstate g_t2;
static int release_outer_under_z(void *arg)
{
    (void)arg;
    ASSERT_FAILS(tether_release(g_t2), TETHER_ESTATE, "tether_release");
    ASSERT_OK(tether_restore_thread(g_sz));
    ASSERT_OK(tether_release(g_t2));
    ASSERT_OK(tether_save_thread(&g_sz));
    return TETHER_OK;
}

static void *release_under_z_in_a_section(void *arg)
{
    (void)arg;
    tether_gilstate tz, t1;
    ASSERT_OK(tether_ensure(g_zm, &tz));
    ASSERT_OK(tether_save_thread(&g_sz));
    ASSERT_OK(tether_ensure(g_ym, &t1));
    ASSERT_OK(tether_ensure(g_ym, &g_t2));
    ASSERT_OK(tether_call_blocking(release_outer_under_z, NULL, NULL, NULL));
    ASSERT_FAILS(tether_release(g_t2), TETHER_ESTATE, "tether_release");
    ASSERT_OK(tether_release(t1));
    ASSERT_OK(tether_restore_thread(g_sz));
    ASSERT_OK(tether_release(tz));
    return NULL;
}

TEST(release_of_the_blocked_states_token_under_a_state_the_fn_restored)
{
    on_a_thread_with_y_and_z(release_under_z_in_a_section, 1);
}

/* A nested token of runtime B's creator state, with runtime A's state
   saved before B's use began: another thread finalizes B (this thread's
   checkpoint answers EFINALIZING and detaches it), and the release still
   pairs.  It was refused: any saved state of the thread made a release
   without a frame look unbalanced (fifth review; failed before this
   session's changes too). */
static tether_runtime g_b;

static void *finalize_b(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_runtime_finalize(g_b, SECONDS(30)));
    return NULL;
}

TEST(release_pairs_after_finalize_with_an_older_state_saved)
{
    tether_runtime a = t_runtime(NULL);
    tether_tstate sa;
    ASSERT_OK(tether_save_thread(&sa));
    tether_interp bm;
    g_b = t_runtime_main(NULL, &bm);
    tether_gilstate tb;
    ASSERT_OK(tether_ensure(bm, &tb)); /* nested: no frame */
    pthread_t f = t_pthread(finalize_b, NULL);
    int rc;
    while ((rc = tether_checkpoint()) == TETHER_OK)
        sched_yield();
    ASSERT_STATUS(rc, TETHER_EFINALIZING);
    t_pthread_join(f);
    ASSERT_OK(tether_release(tb));
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_OK(tether_restore_thread(sa));
    t_finalize(a);
}

/* Under-reach (rev1 review, after the API fuzzer's crash-d3118db3): an
   ensure re-attaches the saved creator state (inside
   TETHER_BEGIN_ALLOW_THREADS), a nested ensure of the same interpreter
   takes t2 without a frame, and a nested save pauses the state again: its
   left_at stays at the outer save's level (stale_left_at_of_a_nested_save)
   and only the frame's own token t1 was found, so after a finalize on this
   thread t2, got while attached to the runtime, released with OK.
   Rule: t1 and t2 invalid. */
TEST(nested_token_of_a_state_ensured_while_saved)
{
    tether_interp ym;
    tether_runtime y = t_runtime_main(NULL, &ym);
    tether_tstate s1, s2;
    tether_gilstate t1, t2;
    ASSERT_OK(tether_save_thread(&s1));
    ASSERT_OK(tether_ensure(ym, &t1)); /* frame: re-attaches the saved state */
    ASSERT_OK(tether_ensure(ym, &t2)); /* nested: no frame */
    ASSERT_OK(tether_save_thread(&s2)); /* nested save */
    ASSERT_OK(tether_runtime_finalize(y, SECONDS(30)));
    ASSERT_STATUS(tether_restore_thread(s2), TETHER_EFINALIZING);
    ASSERT_FAILS(tether_release(t2), TETHER_ESTATE, "finalize");
    ASSERT_FAILS(tether_release(t1), TETHER_ESTATE, "finalize");
    ASSERT_EQ(tether_gil_held(), 0);
}

/* rev2 E1 (over-reach, frame.left stale).  Y's frame records left = 3 at a
   save with a nested token of Y outstanding; Z's saved state is restored
   (no frame), the nested token of Y is released (level 2), and a nested
   ensure of Z takes level 3 again, attached to Z.  frame.left still says
   3, so a finalize of Y invalidates Z's token.  Rule: tz valid (got
   attached to Z, inner to every token of Y). */
static void *stale_frame_left(void *arg)
{
    (void)arg;
    tether_gilstate tz0, t1, t2, tz;
    tether_tstate sz, sy, sz2;
    ASSERT_OK(tether_ensure(g_zm, &tz0)); /* frame Z, level 1 */
    ASSERT_OK(tether_save_thread(&sz));
    ASSERT_OK(tether_ensure(g_ym, &t1)); /* frame Y, level 2 */
    ASSERT_OK(tether_ensure(g_ym, &t2)); /* nested, level 3 */
    ASSERT_OK(tether_save_thread(&sy)); /* frame.left := 3 */
    ASSERT_OK(tether_restore_thread(sz)); /* Z, no frame */
    ASSERT_OK(tether_release(t2)); /* level 2 */
    ASSERT_OK(tether_ensure(g_zm, &tz)); /* level 3, attached to Z */
    ASSERT_OK(tether_runtime_finalize(g_y, SECONDS(30)));
    ASSERT_OK(tether_release(tz));
    ASSERT_OK(tether_save_thread(&sz2));
    (void)sy;
    return NULL;
}

TEST(stale_frame_left_after_a_release_under_another_state)
{
    on_a_thread_with_y_and_z(stale_frame_left, 0);
}

/* rev2 E2 (over-reach).  Saves restored out of order: Z's nested token tz
   is got between two uses of Y's state with no frame of Z; Y's second
   save records its level (left_at and frame.left).  Rule: tz valid. */
static void *interleaved_saves(void *arg)
{
    (void)arg;
    tether_gilstate tz0, t1, tz;
    tether_tstate sz, sy, sz2, sy2, sz3;
    ASSERT_OK(tether_ensure(g_zm, &tz0)); /* frame Z, level 1 */
    ASSERT_OK(tether_save_thread(&sz));
    ASSERT_OK(tether_ensure(g_ym, &t1)); /* frame Y, level 2 */
    ASSERT_OK(tether_save_thread(&sy));
    ASSERT_OK(tether_restore_thread(sz)); /* Z */
    ASSERT_OK(tether_ensure(g_zm, &tz)); /* level 3, Z */
    ASSERT_OK(tether_save_thread(&sz2));
    ASSERT_OK(tether_restore_thread(sy)); /* Y again, level 3 */
    ASSERT_OK(tether_save_thread(&sy2));
    ASSERT_OK(tether_runtime_finalize(g_y, SECONDS(30)));
    ASSERT_OK(tether_restore_thread(sz2));
    ASSERT_OK(tether_release(tz));
    ASSERT_OK(tether_save_thread(&sz3));
    (void)sy2;
    return NULL;
}

TEST(interleaved_saves_of_two_runtimes)
{
    on_a_thread_with_y_and_z(interleaved_saves, 0);
}

/* Under-reach side of the owner runs: Y's nested token is released under
   Z (a token of an outer run: the slow path), and the level it had is
   got again by a nested ensure of Y itself, restored.  That token is Y's:
   Y's finalize makes it invalid, with every outer one. */
static void *released_level_reensured_on_y(void *arg)
{
    (void)arg;
    tether_gilstate tz0, t1, t2, ty;
    tether_tstate sz, sy;
    ASSERT_OK(tether_ensure(g_zm, &tz0)); /* frame Z, level 1 */
    ASSERT_OK(tether_save_thread(&sz));
    ASSERT_OK(tether_ensure(g_ym, &t1)); /* frame Y, level 2 */
    ASSERT_OK(tether_ensure(g_ym, &t2)); /* nested, level 3 */
    ASSERT_OK(tether_save_thread(&sy));
    ASSERT_OK(tether_restore_thread(sz)); /* Z, no frame */
    ASSERT_OK(tether_release(t2));        /* level 2, under Z */
    ASSERT_OK(tether_save_thread(&sz));
    ASSERT_OK(tether_restore_thread(sy)); /* Y again, level 2 */
    ASSERT_OK(tether_ensure(g_ym, &ty));  /* level 3 again: Y's */
    ASSERT_OK(tether_save_thread(&sy));
    ASSERT_OK(tether_restore_thread(sz));
    ASSERT_OK(tether_runtime_finalize(g_y, SECONDS(30)));
    ASSERT_FAILS(tether_release(ty), TETHER_ESTATE, "finalize");
    ASSERT_FAILS(tether_release(t1), TETHER_ESTATE, "finalize");
    ASSERT_FAILS(tether_release(tz0), TETHER_ESTATE, "finalize");
    ASSERT_OK(tether_save_thread(&sz));
    return NULL;
}

TEST(released_level_got_again_on_the_finalized_runtime_is_invalid)
{
    on_a_thread_with_y_and_z(released_level_reensured_on_y, 0);
}

/* Three runtimes.  X's nested token lies between Y's frame and a later
   frame of Y (re-attaching its saved state inside a frame of Z) whose
   level a nested token of Z takes after its release.  Y's finalize makes
   Y's frame token and the outer X one invalid; X's inner token and Z's
   stay valid. */
static tether_interp g_xm;
static void *three_runtimes(void *arg)
{
    (void)arg;
    tether_gilstate tx1, ty2, tx3, tz4, ty5, tz5;
    tether_tstate sx, sy;
    ASSERT_OK(tether_ensure(g_xm, &tx1)); /* frame X, level 1 */
    ASSERT_OK(tether_save_thread(&sx));
    ASSERT_OK(tether_ensure(g_ym, &ty2)); /* frame Y, level 2 */
    ASSERT_OK(tether_save_thread(&sy));
    ASSERT_OK(tether_restore_thread(sx)); /* X, no frame */
    ASSERT_OK(tether_ensure(g_xm, &tx3)); /* level 3: X's */
    ASSERT_OK(tether_save_thread(&sx));
    ASSERT_OK(tether_ensure(g_zm, &tz4)); /* frame Z, level 4 */
    ASSERT_OK(tether_ensure(g_ym, &ty5)); /* frame Y (saved), prev Z */
    ASSERT_OK(tether_release(ty5));       /* back on Z, level 4 */
    ASSERT_OK(tether_ensure(g_zm, &tz5)); /* level 5 again: Z's */
    ASSERT_OK(tether_runtime_finalize(g_y, SECONDS(30)));
    ASSERT_OK(tether_release(tz5));
    ASSERT_OK(tether_release(tz4)); /* its frame's: detached */
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_OK(tether_restore_thread(sx));
    ASSERT_OK(tether_release(tx3));
    ASSERT_FAILS(tether_release(ty2), TETHER_ESTATE, "finalize");
    ASSERT_FAILS(tether_release(tx1), TETHER_ESTATE, "finalize");
    ASSERT_OK(tether_save_thread(&sx));
    return NULL;
}

TEST(three_runtimes_interleaved)
{
    tether_runtime x = t_runtime_elsewhere(&g_xm);
    on_a_thread_with_y_and_z(three_runtimes, 0);
    t_finalize(x);
}

/* The owner runs' bound (tuning.h, OWNER_RUNS 16): Y and Z restored in
   turn, each taking a nested token, `rounds` times; a last token of Z is
   innermost.  Within the bound Y's finalize leaves it valid; beyond it
   the innermost run stands for every runtime and it is made invalid too
   (the over-reach docs/threading-model.md names).  Y's own innermost
   token is invalid either way. */
static int g_rounds, g_last_z_status;
static void *alternate(void *arg)
{
    (void)arg;
    tether_gilstate t, ty = 0, tz;
    tether_tstate sz, sy;
    ASSERT_OK(tether_ensure(g_zm, &t)); /* frame Z */
    ASSERT_OK(tether_save_thread(&sz));
    ASSERT_OK(tether_ensure(g_ym, &t)); /* frame Y */
    ASSERT_OK(tether_save_thread(&sy));
    for (int i = 0; i < g_rounds; i++) {
        ASSERT_OK(tether_restore_thread(sz));
        ASSERT_OK(tether_ensure(g_zm, &t));
        ASSERT_OK(tether_save_thread(&sz));
        ASSERT_OK(tether_restore_thread(sy));
        ASSERT_OK(tether_ensure(g_ym, &ty));
        ASSERT_OK(tether_save_thread(&sy));
    }
    ASSERT_OK(tether_restore_thread(sz));
    ASSERT_OK(tether_ensure(g_zm, &tz));
    ASSERT_OK(tether_runtime_finalize(g_y, SECONDS(30)));
    g_last_z_status = tether_release(tz);
    if (g_last_z_status == TETHER_OK)
        ASSERT_FAILS(tether_release(ty), TETHER_ESTATE, "finalize");
    ASSERT_OK(tether_save_thread(&sz));
    return NULL;
}

TEST(owner_runs_past_their_bound_over_reach_only)
{
    g_rounds = 6; /* 2 + 12 + 1 runs */
    on_a_thread_with_y_and_z(alternate, 0);
    ASSERT_STATUS(g_last_z_status, TETHER_OK);
    g_rounds = 8; /* 2 + 16 + 1 */
    on_a_thread_with_y_and_z(alternate, 0);
    ASSERT_STATUS(g_last_z_status, TETHER_ESTATE);
}

/* rev5 R1 (over-reach that never ends).  Tokens at or below the
   finalize floor (osthread.tok_floor) are never released, so os->tok never
   goes below it and the owner runs covering those levels never go stale:
   each cycle of "ensure Y, ensure Z, finalize Y on the thread" leaves Y's
   run behind for good.  After 16 cycles the stack is full, its innermost
   run stands for every runtime, and from then on a finalize on the
   thread makes invalid every token it holds, with two outstanding
   (within the bound), even a finalize of a runtime the thread never used.
   Rule: tz, got attached to Z, stays valid; a finalize of Q, which got
   none, makes nothing invalid. */
static void *runs_left_below_the_floor(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20; i++) {
        tether_interp ym;
        tether_runtime y = t_runtime_elsewhere(&ym);
        tether_gilstate ty, tz;
        ASSERT_OK(tether_ensure(ym, &ty));   /* frame Y */
        ASSERT_OK(tether_ensure(g_zm, &tz)); /* frame Z, prev Y */
        ASSERT_OK(tether_runtime_finalize(y, SECONDS(30)));
        int rc = tether_release(tz); /* EFINALIZING: prev is Y's */
        if (rc != TETHER_EFINALIZING) {
            fprintf(stderr, "cycle %d: %s (%s)\n", i, tether_status_name(rc),
                    tether_last_error());
        }
        ASSERT_STATUS(rc, TETHER_EFINALIZING);
        ASSERT_FAILS(tether_release(ty), TETHER_ESTATE, "finalize");
        ASSERT_EQ(tether_gil_held(), 0);
    }
    /* A runtime this thread never used. */
    tether_interp qm;
    tether_runtime q = t_runtime_elsewhere(&qm);
    (void)qm;
    tether_gilstate tz;
    ASSERT_OK(tether_ensure(g_zm, &tz));
    ASSERT_OK(tether_runtime_finalize(q, SECONDS(30)));
    ASSERT_EQ(tether_gil_held(), 1);
    int rc = tether_release(tz);
    if (rc != TETHER_OK)
        fprintf(stderr, "release after Q's finalize: %s (%s)\n",
                tether_status_name(rc), tether_last_error());
    if (tether_gil_held()) { /* stuck on Z: the test must still end */
        tether_tstate s;
        ASSERT_OK(tether_save_thread(&s));
    }
    ASSERT_STATUS(rc, TETHER_OK);
    return NULL;
}

TEST(owner_runs_below_the_finalize_floor_do_not_pile_up)
{
    on_a_thread_with_y_and_z(runs_left_below_the_floor, 1);
}

/* rev5: the OWNER_RUNS bound exactly, and after the runs shrink back.
   Run k (level k) is got attached to Z if k % 2 == g_parity, else to Y;
   runs 1 and 2 are frames, the rest nested ensures of a restored state. */
static int g_parity;
static tether_gilstate g_btok[40];
static tether_tstate g_bsz, g_bsy;

static void build_runs(int from, int to)
{
    for (int k = from; k <= to; k++) {
        int z = k % 2 == g_parity;
        tether_tstate *s = z ? &g_bsz : &g_bsy;
        if (k > 2)
            ASSERT_OK(tether_restore_thread(*s));
        ASSERT_OK(tether_ensure(z ? g_zm : g_ym, &g_btok[k]));
        ASSERT_OK(tether_save_thread(s));
    }
}

/* Restores Z, finalizes Y on the thread and checks the innermost token
   `top` (Z's) stays valid and `top - 1` (Y's) is invalid. */
static void finalize_y_and_check(int top)
{
    ASSERT_EQ(top % 2 == g_parity, 1);
    ASSERT_OK(tether_restore_thread(g_bsz));
    ASSERT_OK(tether_runtime_finalize(g_y, SECONDS(30)));
    int rc = tether_release(g_btok[top]);
    if (rc != TETHER_OK)
        fprintf(stderr, "level %d: %s (%s)\n", top, tether_status_name(rc),
                tether_last_error());
    ASSERT_STATUS(rc, TETHER_OK);
    ASSERT_FAILS(tether_release(g_btok[top - 1]), TETHER_ESTATE, "finalize");
    ASSERT_OK(tether_save_thread(&g_bsz));
}

static void *exactly_sixteen_runs(void *arg)
{
    (void)arg;
    g_parity = 0;
    build_runs(1, 16);
    finalize_y_and_check(16);
    return NULL;
}

static void *seventeen_then_shrink_back(void *arg)
{
    (void)arg;
    g_parity = 1;
    build_runs(1, 17); /* the 17th: run 16 stands for every runtime */
    ASSERT_OK(tether_restore_thread(g_bsz));
    for (int k = 17; k > 8; k--)
        ASSERT_OK(tether_release(g_btok[k]));
    ASSERT_OK(tether_save_thread(&g_bsz));
    build_runs(9, 15);
    finalize_y_and_check(15);
    return NULL;
}

TEST(owner_runs_exactly_at_the_bound_and_after_shrinking_back)
{
    on_a_thread_with_y_and_z(exactly_sixteen_runs, 0);
    on_a_thread_with_y_and_z(seventeen_then_shrink_back, 0);
}

/* rev5 R2 (over-reach that outlives the bound).  With exactly 16 runs
   outstanding (within OWNER_RUNS), attaching a state of Y for a moment,
   restored and saved again with no token got, or ensured and released
   by a tether_call_blocking fn (a callback), made the 16th run (Z's)
   stand for every runtime for as long as its tokens are held: Y's
   finalize then made Z's innermost token invalid, with 16 runs
   outstanding and Y's run long gone.  Rule (the bound: at most 16
   outstanding): Z's innermost token stays valid. */
static int ensure_and_release_y(void *arg)
{
    (void)arg;
    tether_gilstate t;
    ASSERT_OK(tether_ensure(g_ym, &t));
    ASSERT_OK(tether_release(t));
    return TETHER_OK;
}

static void *sixteen_runs_then_y_attached_for_a_moment(void *arg)
{
    (void)arg;
    g_parity = 0;
    build_runs(1, 16);
    ASSERT_OK(tether_restore_thread(g_bsy)); /* no token got */
    ASSERT_OK(tether_save_thread(&g_bsy));
    /* Back on Z, a nested token takes the level past the bound: Z's. */
    ASSERT_OK(tether_restore_thread(g_bsz));
    ASSERT_OK(tether_ensure(g_zm, &g_btok[17]));
    ASSERT_OK(tether_runtime_finalize(g_y, SECONDS(30)));
    ASSERT_OK(tether_release(g_btok[17]));
    ASSERT_OK(tether_release(g_btok[16]));
    ASSERT_FAILS(tether_release(g_btok[15]), TETHER_ESTATE, "finalize");
    ASSERT_OK(tether_save_thread(&g_bsz));
    return NULL;
}

static void *sixteen_runs_then_a_callback_of_y(void *arg)
{
    (void)arg;
    g_parity = 0;
    build_runs(1, 16);
    ASSERT_OK(tether_restore_thread(g_bsz));
    ASSERT_OK(tether_call_blocking(ensure_and_release_y, NULL, NULL, NULL));
    ASSERT_OK(tether_save_thread(&g_bsz));
    finalize_y_and_check(16);
    return NULL;
}

TEST(owner_runs_a_moment_past_the_bound_leaves_no_over_reach)
{
    on_a_thread_with_y_and_z(sixteen_runs_then_y_attached_for_a_moment, 0);
    on_a_thread_with_y_and_z(sixteen_runs_then_a_callback_of_y, 0);
}

/* rev5: another thread finalizes Y while this one holds Y's tokens
   (saved) under a run of Z; every release pairs, in order. */
static void *finalize_y_elsewhere(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_runtime_finalize(g_y, SECONDS(30)));
    return NULL;
}

static void *tokens_of_y_finalized_elsewhere(void *arg)
{
    (void)arg;
    tether_gilstate t1, t2, t3, t4;
    tether_tstate sy;
    ASSERT_OK(tether_ensure(g_ym, &t1)); /* frame Y */
    ASSERT_OK(tether_ensure(g_ym, &t2)); /* nested Y */
    ASSERT_OK(tether_save_thread(&sy));
    ASSERT_OK(tether_ensure(g_zm, &t3)); /* frame Z, run Z */
    ASSERT_OK(tether_ensure(g_zm, &t4));
    t_pthread_join(t_pthread(finalize_y_elsewhere, NULL));
    ASSERT_FAILS(tether_release(t3), TETHER_ESTATE, "tether_release");
    ASSERT_FAILS(tether_release(t2), TETHER_ESTATE, "tether_release");
    ASSERT_OK(tether_release(t4));
    ASSERT_FAILS(tether_release(t4), TETHER_ESTATE, "tether_release");
    ASSERT_OK(tether_release(t3));
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_STATUS(tether_restore_thread(sy), TETHER_EFINALIZING);
    ASSERT_OK(tether_release(t2));
    ASSERT_OK(tether_release(t1));
    ASSERT_FAILS(tether_release(t1), TETHER_ESTATE, "tether_release");
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(tokens_pair_after_a_finalize_on_another_thread_under_a_run_of_z)
{
    on_a_thread_with_y_and_z(tokens_of_y_finalized_elsewhere, 0);
}

/* rev5: fork with runs of Y and Z outstanding.  The child keeps the
   forking thread's runs: its finalize of Y makes Y's frame token invalid
   and leaves Z's valid; the parent's tokens all pair. */
static void *fork_with_runs(void *arg)
{
    (void)arg;
    tether_gilstate ty, ty2, tz, tz2;
    ASSERT_OK(tether_ensure(g_ym, &ty));  /* frame Y */
    ASSERT_OK(tether_ensure(g_ym, &ty2));
    ASSERT_OK(tether_ensure(g_zm, &tz));  /* frame Z, prev Y */
    ASSERT_OK(tether_ensure(g_zm, &tz2));
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int ok = tether_runtime_finalize(g_y, SECONDS(30)) == TETHER_OK &&
                 tether_release(tz2) == TETHER_OK &&
                 tether_release(tz) == TETHER_EFINALIZING &&
                 tether_release(ty2) == TETHER_ESTATE &&
                 strstr(tether_last_error(), "finalize") != NULL &&
                 tether_gil_held() == 0;
        _exit(ok ? 0 : 1);
    }
    ASSERT(pid > 0);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        ;
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    ASSERT_OK(tether_release(tz2));
    ASSERT_OK(tether_release(tz));
    ASSERT_OK(tether_release(ty2));
    ASSERT_OK(tether_release(ty));
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(fork_with_owner_runs_outstanding)
{
    on_a_thread_with_y_and_z(fork_with_runs, 1);
}

/* rev5: a thread exits with runs of Y and Z outstanding (attached to
   Z, Y's state saved under a frame): both finalize, and a new thread
   starts with no runs (a finalize of Y there leaves its Z token valid). */
static void *exit_with_runs(void *arg)
{
    (void)arg;
    tether_gilstate t;
    tether_tstate s;
    ASSERT_OK(tether_ensure(g_ym, &t));
    ASSERT_OK(tether_ensure(g_ym, &t));
    ASSERT_OK(tether_save_thread(&s));
    ASSERT_OK(tether_ensure(g_zm, &t));
    ASSERT_OK(tether_ensure(g_zm, &t));
    return NULL;
}

static void *fresh_thread(void *arg)
{
    (void)arg;
    tether_gilstate tz;
    ASSERT_OK(tether_ensure(g_zm, &tz));
    ASSERT_OK(tether_runtime_finalize(g_y, SECONDS(30)));
    ASSERT_OK(tether_release(tz));
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

static void *exit_then_fresh(void *arg)
{
    (void)arg;
    t_pthread_join(t_pthread(exit_with_runs, NULL));
    t_pthread_join(t_pthread(fresh_thread, NULL));
    return NULL;
}

TEST(thread_exit_with_owner_runs_outstanding)
{
    on_a_thread_with_y_and_z(exit_then_fresh, 0);
}

/* Random sequences against a model of the rule: ensures, releases, saves
   and restores on three runtimes (X, Y, Z), then a finalize of one of
   them on the thread.  The model knows the runtime attached when each
   outstanding token was got and the runtime each frame detached; the
   finalize must make invalid exactly the tokens up to the innermost one
   of the finalized runtime (or before an ensure frame that detached one
   of its states), checked by releasing from the innermost token down:
   a token at or below that level is refused as made invalid by the
   finalize, one above it is not.  Saves nest (a state saved twice is
   restored twice), and a saved state may be ensured (a frame
   re-attaches it; rev5: up to 68 steps, 6,000 seeds). */
#define RAND_LEVELS 64
static tether_interp g_rand_m[3];
static tether_runtime g_rand_rt[3];
static unsigned g_rand_seed;

struct rand_model {
    int cur;                    /* attached runtime, -1: none */
    int saved[3];               /* saves outstanding */
    int top;                    /* outstanding tokens: levels 1..top */
    tether_gilstate tok[RAND_LEVELS + 1];
    int owner[RAND_LEVELS + 1]; /* runtime attached when it was got */
    int frame[RAND_LEVELS + 1]; /* an ensure that attached a state */
    int prev[RAND_LEVELS + 1];  /* the runtime that frame detached, -1 */
};

static unsigned rand_next(unsigned *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

/* 1 if runtime r is some frame's prev (its state, detached by that
   frame, must not be saved: the frame's release re-attaches it). */
static int rand_is_prev(const struct rand_model *m, int r)
{
    for (int l = 1; l <= m->top; l++)
        if (m->frame[l] && m->prev[l] == r)
            return 1;
    return 0;
}

static tether_tstate g_rand_saved_tok[3]; /* each runtime's saved state */

#define LOG(...) (len += (size_t)snprintf(log + len, sizeof log - len, __VA_ARGS__))

static void *rand_thread(void *arg)
{
    (void)arg;
    unsigned x = g_rand_seed * 2654435761u + 1;
    struct rand_model m = {.cur = -1};
    char log[4096];
    size_t len = 0;
    int steps = 8 + (int)(rand_next(&x) % 60);
    for (int i = 0; i < steps; i++) {
        unsigned op = rand_next(&x) % 5;
        int r = (int)(rand_next(&x) % 3), l = m.top + 1;
        if (op <= 1 && m.top < RAND_LEVELS) {
            ASSERT_OK(tether_ensure(g_rand_m[r], &m.tok[l]));
            m.owner[l] = r;
            m.frame[l] = m.cur != r;
            m.prev[l] = m.cur != r ? m.cur : -1;
            m.cur = r;
            m.top = l;
            LOG(" E%c", "XYZ"[r]);
        } else if (op == 2 && m.top && m.cur >= 0 &&
                   (!m.frame[m.top] || m.owner[m.top] == m.cur)) {
            ASSERT_OK(tether_release(m.tok[m.top]));
            if (m.frame[m.top])
                m.cur = m.prev[m.top];
            m.top--;
            LOG(" R");
        } else if (op == 3 && m.cur >= 0 && !rand_is_prev(&m, m.cur)) {
            ASSERT_OK(tether_save_thread(&g_rand_saved_tok[m.cur]));
            LOG(" S%c", "XYZ"[m.cur]);
            m.saved[m.cur]++;
            m.cur = -1;
        } else if (op == 4 && m.cur < 0 && m.saved[r]) {
            ASSERT_OK(tether_restore_thread(g_rand_saved_tok[r]));
            m.saved[r]--;
            m.cur = r;
            LOG(" r%c", "XYZ"[r]);
        }
    }
    /* Segments of owners (the library's runs, at most one more): past
       its bound the check does not hold (owner_runs_past_...). */
    int segs = 0;
    for (int l = 1; l <= m.top; l++)
        if (l == 1 || m.owner[l] != m.owner[l - 1])
            segs++;
    int f = (int)(rand_next(&x) % 3), floor = 0;
    for (int l = 1; l <= m.top; l++) {
        if (m.owner[l] == f)
            floor = l;
        if (m.frame[l] && m.prev[l] == f && l - 1 > floor)
            floor = l - 1;
    }
    LOG(" F%c (floor %d)", "XYZ"[f], floor);
    ASSERT_OK(tether_runtime_finalize(g_rand_rt[f], SECONDS(30)));
    if (segs >= 15)
        return NULL;
    for (int l = m.top; l >= 1; l--) {
        int rc = tether_release(m.tok[l]);
        int invalid = rc == TETHER_ESTATE &&
                      strstr(tether_last_error(), "finalize") != NULL;
        if (invalid != (l <= floor)) {
            fprintf(stderr, "seed %u:%s: level %d: %s (%s)\n", g_rand_seed,
                    log, l, tether_status_name(rc), tether_last_error());
            ASSERT_EQ(invalid, l <= floor);
        }
        if (rc != TETHER_OK && rc != TETHER_EFINALIZING)
            break;
    }
    return NULL;
}

TEST(random_sequences_against_a_model_of_the_rule)
{
    for (g_rand_seed = 1; g_rand_seed <= 6000; g_rand_seed++) {
        for (int r = 0; r < 3; r++)
            g_rand_rt[r] = t_runtime_elsewhere(&g_rand_m[r]);
        t_pthread_join(t_pthread(rand_thread, NULL));
        for (int r = 0; r < 3; r++)
            tether_runtime_finalize(g_rand_rt[r], SECONDS(30));
    }
}

RUNNER_MAIN(TEST_ENTRY(owner_runs_below_the_finalize_floor_do_not_pile_up),
            TEST_ENTRY(release_of_the_blocked_states_token_under_a_state_the_fn_restored),
            TEST_ENTRY(thread_exit_with_owner_runs_outstanding),
            TEST_ENTRY(fork_with_owner_runs_outstanding),
            TEST_ENTRY(owner_runs_a_moment_past_the_bound_leaves_no_over_reach),
            TEST_ENTRY(tokens_pair_after_a_finalize_on_another_thread_under_a_run_of_z),
            TEST_ENTRY(owner_runs_exactly_at_the_bound_and_after_shrinking_back),
            TEST_ENTRY(stale_frame_left_after_a_release_under_another_state),
            TEST_ENTRY(interleaved_saves_of_two_runtimes),
            TEST_ENTRY(released_level_got_again_on_the_finalized_runtime_is_invalid),
            TEST_ENTRY(three_runtimes_interleaved),
            TEST_ENTRY(owner_runs_past_their_bound_over_reach_only),
            TEST_ENTRY(random_sequences_against_a_model_of_the_rule),
            TEST_ENTRY(came_at_moved_by_reentry_through_another_runtime),
            TEST_ENTRY(nested_token_of_a_state_ensured_while_saved),
            TEST_ENTRY(release_pairs_after_finalize_with_an_older_state_saved),
            TEST_ENTRY(came_at_moved_by_reentry_foreign),
            TEST_ENTRY(stale_left_at_of_a_nested_save),
            TEST_ENTRY(stale_left_at_of_a_nested_blocking_section),
            TEST_ENTRY(leftover_ensure_after_a_nested_block_reattaches_nothing),
            TEST_ENTRY(release_of_the_blocked_states_token_inside_fn))
