/*
 * test_channel_order.c - a channel send that finalize stops, in each of
 * its windows, held open at the core's named delay points (core/delay.h,
 * debug builds; the wait is wait_run in core/wait.c):
 *
 *   - refused at the top of the wait's loop, before it ever slept (the
 *     breaker is seen while the sender holds the GIL);
 *   - woken in its sleep by finalize, then refused the GIL;
 *   - its message queued while it was detached, then refused the GIL.
 *
 * All three return TETHER_EFINALIZING.  In the first two the message was
 * not queued: it goes to the channel's discard function at once, on the
 * sending thread.  In the third it is in the channel: no discard then, and
 * the channel's release discards it if nobody received it.  Either way the
 * message is no longer the caller's (tether.h, tether_channel_send).
 *
 * The sender runs in an interpreter of its own (its own GIL), which the
 * case destroys.  No case sleeps to make a window likely.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "delay_ctl.h"
#include "support.h"

/* What the discard function saw.  Written by the sender's thread or the
   releasing one, read after a join. */
static struct {
    int calls;
    char seen[8]; /* the first byte of each message discarded, in order */
    pthread_t last; /* the thread of the last call */
} g_disc;

static void note_discard(void *data, size_t len, void *ud)
{
    ASSERT(ud == &g_disc);
    ASSERT_EQ(len, 1);
    if (g_disc.calls < (int)sizeof g_disc.seen)
        g_disc.seen[g_disc.calls] = *(const char *)data;
    g_disc.calls++;
    g_disc.last = pthread_self();
}

static tether_channel g_ch;
static tether_interp g_b;

/* A runtime with interpreter g_b (its own GIL), and g_ch of capacity 1
   holding "a", whose discard is note_discard. */
static tether_runtime setup(void)
{
    memset(&g_disc, 0, sizeof g_disc);
    tether_runtime rt = t_runtime(&t_per_interp_gil);
    ASSERT_OK(tether_interp_create(rt, &g_b));
    ASSERT_OK(tether_channel_new(1, &g_ch));
    ASSERT_OK(tether_channel_set_discard(g_ch, note_discard, &g_disc));
    ASSERT_OK(tether_channel_send(g_ch, "a", 1, 0)); /* full */
    return rt;
}

static size_t queued(void)
{
    size_t n;
    ASSERT_OK(tether_channel_count(g_ch, &n));
    return n;
}

/* Releases g_ch: every message still queued is discarded then. */
static void release_and_finalize(tether_runtime rt)
{
    ASSERT_OK(tether_channel_release(g_ch));
    t_finalize(rt);
}

static int send_b(void *arg)
{
    (void)arg;
    return tether_channel_send(g_ch, "b", 1, -1);
}

/* ---- refused at the loop top ------------------------------------------- */

static t_sem g_in_body, g_go;
static atomic_int g_destroy_rc = 1000;

static int send_b_when_told(void *arg)
{
    t_sem_post(&g_in_body);
    t_sem_wait(&g_go); /* holding g_b's GIL: the destroy's barrier waits */
    return send_b(arg);
}

static void *destroy_b(void *arg)
{
    (void)arg;
    atomic_store(&g_destroy_rc, tether_interp_destroy(g_b, SECONDS(30)));
    return NULL;
}

/* The destroy has flagged the sender's breaker and waits, in its pass
   through g_b's GIL, for the sender to let go of it.  The sender's first
   try finds the channel full, and the top of the wait's loop sees the
   flag: it detaches and returns EFINALIZING without ever sleeping, its
   message not queued, which the discard gets before the send returns. */
TEST(send_refused_before_it_slept_hands_its_message_to_the_discard)
{
    tether_runtime rt = setup();
    t_sem_init(&g_in_body);
    t_sem_init(&g_go);
    tether_thread t = t_start_daemon(g_b, send_b_when_told, NULL);
    t_sem_wait(&g_in_body); /* it holds g_b's GIL */
    unsigned long marked = dctl_passes("finalize.marked");
    unsigned long registered = dctl_passes("wait.registered");
    pthread_t d = t_pthread(destroy_b, NULL);
    dctl_wait_passes("finalize.marked", marked);
    t_sem_post(&g_go);
    t_pthread_join(d); /* past its barrier: the sender let go of the GIL */
    ASSERT_OK(atomic_load(&g_destroy_rc));
    /* (before the join below, whose own wait registers) */
    ASSERT_EQ(dctl_passes("wait.registered"), registered); /* never slept */
    ASSERT_STATUS(t_join(t), TETHER_EFINALIZING);
    ASSERT_EQ(g_disc.calls, 1);
    ASSERT_EQ(g_disc.seen[0], 'b');
    ASSERT(!pthread_equal(g_disc.last, pthread_self()));
    ASSERT_EQ(queued(), 1); /* "a" alone */
    release_and_finalize(rt);
    ASSERT_EQ(g_disc.calls, 2);
    ASSERT(memcmp(g_disc.seen, "ba", 2) == 0);
    t_sem_destroy(&g_in_body);
    t_sem_destroy(&g_go);
}

/* ---- woken by finalize, then refused the GIL --------------------------- */

/* The sender sleeps on the full channel; the destroy wakes it, its poll
   finds the channel still full, and taking g_b's GIL back fails: its
   message was not queued, and the discard gets it. */
TEST(send_woken_by_finalize_hands_its_message_to_the_discard)
{
    tether_runtime rt = setup();
    unsigned long sleeps = dctl_passes("wait.sleep");
    unsigned long woken = dctl_passes("wait.woken");
    tether_thread t = t_start_daemon(g_b, send_b, NULL);
    dctl_wait_passes("wait.sleep", sleeps); /* it holds g_ch's mutex till it sleeps */
    ASSERT_OK(tether_interp_destroy(g_b, SECONDS(30)));
    ASSERT_STATUS(t_join(t), TETHER_EFINALIZING);
    ASSERT(dctl_passes("wait.woken") > woken);
    ASSERT_EQ(g_disc.calls, 1);
    ASSERT_EQ(g_disc.seen[0], 'b');
    ASSERT(!pthread_equal(g_disc.last, pthread_self()));
    ASSERT_EQ(queued(), 1);
    release_and_finalize(rt);
    ASSERT_EQ(g_disc.calls, 2);
    ASSERT(memcmp(g_disc.seen, "ba", 2) == 0);
}

/* ---- queued, then refused the GIL --------------------------------------- */

/* The sender sleeps on the full channel; a receive makes room, the
   sender's poll queues "b", and the sender is parked before it takes
   g_b's GIL back.  The destroy comes in that window, so the re-attach
   fails: EFINALIZING, but the message is the channel's, so the discard is
   not called at the send, only at the release (nobody received it). */
TEST(send_queued_before_a_refused_reattach_is_discarded_only_with_the_channel)
{
    tether_runtime rt = setup();
    unsigned long sleeps = dctl_passes("wait.sleep");
    dctl_arm("wait.woken", 1, DCTL_PARK, 0);
    tether_thread t = t_start_daemon(g_b, send_b, NULL);
    dctl_wait_passes("wait.sleep", sleeps);
    void *d;
    size_t n;
    ASSERT_OK(tether_channel_recv(g_ch, &d, &n, 0)); /* "a": room for "b" */
    ASSERT(n == 1 && *(char *)d == 'a');
    tether_channel_msg_free(d);
    dctl_wait_parked("wait.woken"); /* "b" queued, the sender detached */
    ASSERT_EQ(queued(), 1);
    ASSERT_OK(tether_interp_destroy(g_b, SECONDS(30)));
    dctl_release("wait.woken");
    ASSERT_STATUS(t_join(t), TETHER_EFINALIZING);
    ASSERT_EQ(g_disc.calls, 0);
    ASSERT_EQ(queued(), 1);
    release_and_finalize(rt);
    ASSERT_EQ(g_disc.calls, 1);
    ASSERT_EQ(g_disc.seen[0], 'b');
}

RUNNER_MAIN(TEST_ENTRY_T(send_refused_before_it_slept_hands_its_message_to_the_discard, 30),
            TEST_ENTRY_T(send_woken_by_finalize_hands_its_message_to_the_discard, 30),
            TEST_ENTRY_T(send_queued_before_a_refused_reattach_is_discarded_only_with_the_channel,
                         30))
