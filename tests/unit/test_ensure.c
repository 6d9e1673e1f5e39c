/*
 * test_ensure.c - tether_ensure/tether_release, save/restore and
 * tether_gil_held: nesting, tokens bound to their thread and depth, the
 * cached thread state, and attaching to another interpreter.
 */
#include <tether/tether.h>

#include "runner.h"
#include "support.h"

static tether_interp g_interp;

/* ------------------------------------------------------------------------
 * Nesting and tokens
 * ---------------------------------------------------------------------- */

static void *nest_three(void *arg)
{
    (void)arg;
    tether_gilstate st[3];
    ASSERT_EQ(tether_gil_held(), 0);
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(tether_ensure(g_interp, &st[i]));
        ASSERT_EQ(tether_gil_held(), 1);
    }
    for (int i = 2; i >= 0; i--) {
        ASSERT_EQ(tether_gil_held(), 1);
        ASSERT_OK(tether_release(st[i]));
    }
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(nested_on_foreign_thread)
{
    t_foreign_case(&g_interp, nest_three, NULL);
}

/* An ensure on a thread that already holds the GIL takes nothing, so its
   release drops nothing. */
TEST(ensure_while_holding)
{
    tether_runtime rt = t_runtime(NULL);
    tether_gilstate st;
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_ensure(t_main_interp(rt), &st));
    ASSERT_NE(st, 0);
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_release(st));
    ASSERT_EQ(tether_gil_held(), 1);
    t_finalize(rt);
}

static void *out_of_order(void *arg)
{
    (void)arg;
    tether_gilstate st[3];
    for (int i = 0; i < 3; i++)
        ASSERT_OK(tether_ensure(g_interp, &st[i]));
    ASSERT_FAILS(tether_release(st[0]), TETHER_ESTATE, "tether_release");
    ASSERT_FAILS(tether_release(st[1]), TETHER_ESTATE, "tether_release");
    ASSERT_EQ(tether_gil_held(), 1); /* nothing changed: still three deep */
    ASSERT_OK(tether_release(st[2]));
    ASSERT_OK(tether_release(st[1]));
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_release(st[0]));
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_FAILS(tether_release(st[0]), TETHER_ESTATE, "tether_release");
    ASSERT_FAILS(tether_release(st[2]), TETHER_ESTATE, "tether_release");
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(release_out_of_order)
{
    t_foreign_case(&g_interp, out_of_order, NULL);
}

TEST(release_zero_token)
{
    tether_runtime rt = t_runtime(NULL);
    ASSERT_FAILS(tether_release(0), TETHER_EINVAL, "tether_release");
    ASSERT_FAILS(tether_release(0x1234567890abcdefull), TETHER_ESTATE,
                 "tether_release");
    ASSERT_EQ(tether_gil_held(), 1);
    t_finalize(rt);
}

/* Thread A holds a depth-1 token and is detached; thread B, also at depth
   1, cannot release A's token. */
static struct {
    tether_gilstate a_token;
    t_sem a_saved, b_done;
} g_cross;

static void *cross_a(void *arg)
{
    (void)arg;
    tether_tstate ts;
    ASSERT_OK(tether_ensure(g_interp, &g_cross.a_token));
    ASSERT_OK(tether_save_thread(&ts));
    t_sem_post(&g_cross.a_saved);
    t_sem_wait(&g_cross.b_done);
    ASSERT_OK(tether_restore_thread(ts));
    ASSERT_OK(tether_release(g_cross.a_token));
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

static void *cross_b(void *arg)
{
    (void)arg;
    tether_gilstate mine;
    t_sem_wait(&g_cross.a_saved);
    ASSERT_OK(tether_ensure(g_interp, &mine));
    ASSERT_FAILS(tether_release(g_cross.a_token), TETHER_ESTATE, "tether_release");
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_release(mine));
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_FAILS(tether_release(g_cross.a_token), TETHER_ESTATE, "tether_release");
    t_sem_post(&g_cross.b_done);
    return NULL;
}

TEST(release_token_of_other_thread)
{
    tether_runtime rt = t_runtime_main(NULL, &g_interp);
    t_sem_init(&g_cross.a_saved);
    t_sem_init(&g_cross.b_done);
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    pthread_t a = t_pthread(cross_a, NULL), b = t_pthread(cross_b, NULL);
    t_pthread_join(a);
    t_pthread_join(b);
    ASSERT_OK(tether_restore_thread(ts));
    t_sem_destroy(&g_cross.a_saved);
    t_sem_destroy(&g_cross.b_done);
    t_finalize(rt);
}

static void *deep(void *arg)
{
    (void)arg;
    enum { DEPTH = 200 };
    tether_gilstate st[DEPTH];
    for (int i = 0; i < DEPTH; i++)
        ASSERT_OK(tether_ensure(g_interp, &st[i]));
    for (int i = DEPTH - 1; i >= 0; i--)
        ASSERT_OK(tether_release(st[i]));
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(deep_nesting)
{
    t_foreign_case(&g_interp, deep, NULL);
}

/* ------------------------------------------------------------------------
 * The cached thread state
 * ---------------------------------------------------------------------- */

static void *reuse(void *arg)
{
    static int marker;
    (void)arg;
    tether_gilstate st;
    tether_thread self;
    uint64_t ident1, ident2;
    void *ud = NULL;

    ASSERT_OK(tether_ensure(g_interp, &st));
    ASSERT_OK(tether_set_thread_userdata(&marker));
    ASSERT_OK(tether_thread_current(&self));
    ASSERT_OK(tether_thread_ident(self, &ident1));
    ASSERT_OK(tether_thread_release(self));
    ASSERT_OK(tether_release(st));

    ASSERT_OK(tether_ensure(g_interp, &st)); /* the same state again */
    ASSERT_OK(tether_get_thread_userdata(&ud));
    ASSERT(ud == &marker);
    ASSERT_OK(tether_thread_current(&self));
    ASSERT_OK(tether_thread_ident(self, &ident2));
    ASSERT_EQ(ident1, ident2);
    ASSERT_OK(tether_thread_release(self));
    ASSERT_OK(tether_release(st));

    /* A cached state costs no allocation: with every allocation failing,
       an outermost ensure/release still works. */
    ASSERT_OK(tether_fault_inject(TETHER_FAULT_ALLOC, 1, 0));
    int rc = tether_ensure(g_interp, &st);
    int rc2 = rc == TETHER_OK ? tether_release(st) : TETHER_OK;
    ASSERT_OK(tether_fault_inject(TETHER_FAULT_ALLOC, 0, 0));
    ASSERT_OK(rc);
    ASSERT_OK(rc2);
    return NULL;
}

TEST(cached_state_reuse)
{
    t_foreign_case(&g_interp, reuse, NULL);
}

/* ------------------------------------------------------------------------
 * Save and restore
 * ---------------------------------------------------------------------- */

static atomic_int g_foreign_ran;

static void *touch_gil(void *arg)
{
    (void)arg;
    tether_gilstate st;
    ASSERT_OK(tether_ensure(g_interp, &st));
    atomic_fetch_add(&g_foreign_ran, 1);
    ASSERT_OK(tether_release(st));
    return NULL;
}

static tether_tstate g_saved;

static void *restore_elsewhere(void *arg)
{
    (void)arg;
    ASSERT_FAILS(tether_restore_thread(g_saved), TETHER_ESTATE,
                 "tether_restore_thread");
    return NULL;
}

TEST(save_restore)
{
    tether_runtime rt = t_runtime_main(NULL, &g_interp);
    ASSERT_FAILS(tether_save_thread(NULL), TETHER_EINVAL, "tether_save_thread");
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_FAILS(tether_restore_thread(g_saved), TETHER_ESTATE,
                 "tether_restore_thread"); /* attached */

    ASSERT_OK(tether_save_thread(&g_saved));
    ASSERT_EQ(tether_gil_held(), 0);
    tether_tstate again = 0;
    ASSERT_FAILS(tether_save_thread(&again), TETHER_ESTATE, "tether_save_thread");
    ASSERT_EQ(again, 0);
    t_pthread_join(t_pthread(touch_gil, NULL)); /* the GIL is free */
    ASSERT_EQ(atomic_load(&g_foreign_ran), 1);
    t_pthread_join(t_pthread(restore_elsewhere, NULL));
    ASSERT_FAILS(tether_restore_thread(0), TETHER_ESTATE, "tether_restore_thread");
    ASSERT_FAILS(tether_restore_thread(g_saved ^ 0x40), TETHER_ESTATE,
                 "tether_restore_thread");
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_OK(tether_restore_thread(g_saved));
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_FAILS(tether_restore_thread(g_saved), TETHER_ESTATE,
                 "tether_restore_thread");
    t_finalize(rt);
}

TEST(allow_threads_macros)
{
    tether_runtime rt = t_runtime_main(NULL, &g_interp);
    TETHER_BEGIN_ALLOW_THREADS
    ASSERT_EQ(tether_gil_held(), 0);
    t_pthread_join(t_pthread(touch_gil, NULL));
    TETHER_END_ALLOW_THREADS
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_EQ(atomic_load(&g_foreign_ran), 1);
    t_finalize(rt);
}

TEST(gil_held_unattached)
{
    ASSERT_EQ(tether_gil_held(), 0);
    tether_runtime rt = t_runtime(NULL);
    ASSERT_EQ(tether_gil_held(), 1);
    t_finalize(rt);
    ASSERT_EQ(tether_gil_held(), 0);
}

static int ensure_in_thread(void *arg)
{
    (void)arg;
    tether_gilstate st;
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_ensure(g_interp, &st));
    ASSERT_OK(tether_release(st));
    ASSERT_EQ(tether_gil_held(), 1);
    return TETHER_OK;
}

TEST(ensure_in_started_thread)
{
    tether_runtime rt = t_runtime_main(NULL, &g_interp);
    ASSERT_EQ(t_join(t_start(g_interp, ensure_in_thread, NULL)), TETHER_OK);
    t_finalize(rt);
}

/* A foreign thread that exits still attached gives the GIL back. */
static void *exit_attached(void *arg)
{
    (void)arg;
    tether_gilstate st;
    ASSERT_OK(tether_ensure(g_interp, &st));
    return NULL;
}

TEST(thread_exits_attached)
{
    tether_runtime rt = t_runtime_main(NULL, &g_interp);
    t_run_foreign(exit_attached, NULL); /* restoring needs the GIL back */
    t_run_foreign(touch_gil, NULL);
    ASSERT_EQ(atomic_load(&g_foreign_ran), 1);
    t_finalize(rt);
}

/* ------------------------------------------------------------------------
 * Other interpreters
 * ---------------------------------------------------------------------- */

TEST(ensure_other_interp)
{
    static int in_main, in_second;
    tether_runtime rt = t_runtime(NULL);
    tether_interp main_interp = t_main_interp(rt), second;
    tether_gilstate st, st2;
    void *ud = NULL;
    ASSERT_OK(tether_interp_create(rt, &second));
    ASSERT_OK(tether_set_thread_userdata(&in_main));

    ASSERT_OK(tether_ensure(second, &st)); /* detaches main_interp */
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_get_thread_userdata(&ud));
    ASSERT(ud == NULL); /* a new thread state of `second` */
    ASSERT_OK(tether_set_thread_userdata(&in_second));

    ASSERT_OK(tether_ensure(main_interp, &st2)); /* back to the first state */
    ASSERT_OK(tether_get_thread_userdata(&ud));
    ASSERT(ud == &in_main);
    ASSERT_OK(tether_release(st2));
    ASSERT_OK(tether_get_thread_userdata(&ud));
    ASSERT(ud == &in_second);

    ASSERT_OK(tether_release(st)); /* re-attaches main_interp */
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_get_thread_userdata(&ud));
    ASSERT(ud == &in_main);
    ASSERT_FAILS(tether_interp_destroy(main_interp, 0), TETHER_EINVAL,
                 "tether_interp_destroy");
    ASSERT_OK(tether_interp_destroy(second, SECONDS(10)));
    t_finalize(rt);
}

/* With a GIL per interpreter, a thread of another interpreter runs while
   the main thread holds the main GIL, and ensuring another interpreter
   lets go of the first one's GIL. */
TEST(per_interp_gil)
{
    tether_interp main_interp, second;
    tether_runtime rt = t_runtime_main(&t_per_interp_gil, &main_interp);
    ASSERT_OK(tether_interp_create(rt, &second));

    g_interp = second; /* main keeps the main GIL meanwhile */
    t_pthread_join(t_pthread(touch_gil, NULL));
    ASSERT_EQ(atomic_load(&g_foreign_ran), 1);
    ASSERT_EQ(tether_gil_held(), 1);

    tether_gilstate st;
    ASSERT_OK(tether_ensure(second, &st)); /* drops the main GIL */
    g_interp = main_interp;
    t_pthread_join(t_pthread(touch_gil, NULL));
    ASSERT_EQ(atomic_load(&g_foreign_ran), 2);
    ASSERT_OK(tether_release(st));
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_OK(tether_interp_destroy(second, SECONDS(10)));
    t_finalize(rt);
}

/* Ensures nest 2^24 - 1 deep on one thread; the next is refused with
   TETHER_ESTATE and changes nothing.  The header did not list ESTATE for
   tether_ensure (the API fuzzer's oracle, which reads the header, would
   have called it undocumented). */
static void *too_deep(void *arg)
{
    (void)arg;
    enum { LIMIT = (1 << 24) - 1 };
    tether_gilstate first = 0, st = 0, last = 0;
    ASSERT_OK(tether_ensure(g_interp, &first));
    for (int i = 1; i < LIMIT; i++)
        ASSERT_OK(tether_ensure(g_interp, &last));
    ASSERT_FAILS(tether_ensure(g_interp, &st), TETHER_ESTATE, "tether_ensure");
    ASSERT_EQ(st, 0);
    ASSERT_EQ(tether_gil_held(), 1);
    for (int i = 1; i < LIMIT; i++)
        ASSERT_OK(tether_release(last--));
    ASSERT_EQ(last, first);
    ASSERT_OK(tether_release(first));
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(nesting_limit)
{
    t_foreign_case(&g_interp, too_deep, NULL);
}

RUNNER_MAIN(TEST_ENTRY(nested_on_foreign_thread), TEST_ENTRY(ensure_while_holding),
            TEST_ENTRY(release_out_of_order), TEST_ENTRY(release_zero_token),
            TEST_ENTRY(release_token_of_other_thread), TEST_ENTRY(deep_nesting),
            TEST_ENTRY(cached_state_reuse), TEST_ENTRY(save_restore),
            TEST_ENTRY(allow_threads_macros), TEST_ENTRY(gil_held_unattached),
            TEST_ENTRY(ensure_in_started_thread), TEST_ENTRY(thread_exits_attached),
            TEST_ENTRY(ensure_other_interp), TEST_ENTRY(per_interp_gil),
            TEST_ENTRY(nesting_limit))
