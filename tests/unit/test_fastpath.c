/*
 * test_fastpath.c - what the one-test fast paths of tether_checkpoint,
 * tether_ensure and tether_release read (core/internal.h, os_refresh: the
 * attached state's breaker word, the attached interpreter's handle, the
 * release floor) follows every attach, detach, switch and ensure frame.
 * Each case names the stale value it would catch.
 */
#include <tether/tether.h>

#include "runner.h"
#include "support.h"

static tether_thread current_thread(void)
{
    tether_thread t;
    ASSERT_OK(tether_thread_current(&t));
    return t;
}

/* The checkpoint reads the breaker of the state attached now: after a
   switch to another interpreter's state and back, and after a save, it
   never reads the one attached before. */
TEST(checkpoint_reads_the_attached_state)
{
    tether_interp a, b;
    tether_runtime rt = t_runtime_main(NULL, &a);
    ASSERT_OK(tether_checkpoint());
    ASSERT_OK(tether_interp_create(rt, &b));

    tether_gilstate f;
    ASSERT_OK(tether_ensure(b, &f)); /* one GIL: a switch of states */
    tether_thread tb = current_thread();
    ASSERT_OK(tether_thread_raise(tb, 7, NULL, NULL));
    ASSERT_STATUS(tether_checkpoint(), TETHER_EASYNC);
    int64_t code = 0;
    ASSERT_OK(tether_async_fetch(&code, NULL, NULL));
    ASSERT_EQ(code, 7);
    /* Pending on b's state, which the release leaves: a's checkpoint must
       not see it. */
    ASSERT_OK(tether_thread_raise(tb, 8, NULL, NULL));
    ASSERT_OK(tether_release(f));
    ASSERT_OK(tether_checkpoint());

    tether_tstate saved;
    ASSERT_OK(tether_save_thread(&saved));
    ASSERT_FAILS(tether_checkpoint(), TETHER_ESTATE, "tether_checkpoint");
    ASSERT_OK(tether_restore_thread(saved));
    ASSERT_OK(tether_checkpoint());

    ASSERT_OK(tether_ensure(b, &f)); /* b's exception is delivered now */
    ASSERT_STATUS(tether_checkpoint(), TETHER_EASYNC);
    ASSERT_OK(tether_async_fetch(&code, NULL, NULL));
    ASSERT_EQ(code, 8);
    ASSERT_OK(tether_release(f));
    ASSERT_OK(tether_thread_release(tb));
    t_finalize(rt);
}

/* An ensure frame raises the release floor: the frame's own token is
   never released as a nested no-op, so its release switches back. */
TEST(release_of_a_frame_is_never_the_nested_fast_path)
{
    tether_interp a, b;
    tether_runtime rt = t_runtime_main(NULL, &a);
    ASSERT_OK(tether_interp_create(rt, &b));
    tether_thread ta = current_thread();
    tether_gilstate f, n1, n2;
    ASSERT_OK(tether_ensure(b, &f));
    tether_thread tb = current_thread();
    ASSERT_NE(ta, tb);
    ASSERT_OK(tether_ensure(b, &n1));
    ASSERT_OK(tether_ensure(b, &n2));
    ASSERT_OK(tether_release(n2));
    ASSERT_OK(tether_release(n1));
    ASSERT_OK(tether_release(f)); /* back on a */
    tether_thread t = current_thread();
    ASSERT_EQ(t, ta);
    ASSERT_OK(tether_thread_release(t));
    ASSERT_FAILS(tether_release(f), TETHER_ESTATE, "tether_release");
    /* Nested ensures of a, with no frame: the floor is the level-0 token. */
    ASSERT_OK(tether_ensure(a, &n1));
    ASSERT_OK(tether_release(n1));
    ASSERT_FAILS(tether_release(n1), TETHER_ESTATE, "tether_release");
    ASSERT_FAILS(tether_release(n1 - 1), TETHER_ESTATE, "tether_release");
    ASSERT_OK(tether_thread_release(ta));
    ASSERT_OK(tether_thread_release(tb));
    t_finalize(rt);
}

/* While detached, the fast ensure finds no attached interpreter, whatever
   handle it is given: 0 and a live handle alike take the slow path. */
TEST(detached_ensure_takes_the_slow_path)
{
    tether_interp a;
    tether_runtime rt = t_runtime_main(NULL, &a);
    tether_tstate saved;
    ASSERT_OK(tether_save_thread(&saved));
    tether_gilstate g;
    ASSERT_FAILS(tether_ensure(0, &g), TETHER_EBADHANDLE, "tether_ensure");
    ASSERT_OK(tether_restore_thread(saved));
    /* After the runtime's finalize on this thread, its old tokens are
       refused and a new ensure is slow again. */
    ASSERT_OK(tether_ensure(a, &g));
    t_finalize(rt);
    ASSERT_FAILS(tether_release(g), TETHER_ESTATE, "tether_release");
    ASSERT_FAILS(tether_checkpoint(), TETHER_ESTATE, "tether_checkpoint");
}

RUNNER_MAIN(TEST_ENTRY(checkpoint_reads_the_attached_state),
            TEST_ENTRY(release_of_a_frame_is_never_the_nested_fast_path),
            TEST_ENTRY(detached_ensure_takes_the_slow_path))
