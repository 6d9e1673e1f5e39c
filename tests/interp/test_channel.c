/*
 * test_channel.c - channels: FIFO order across threads and interpreters,
 * capacity, timeouts, close, release while waiting, asynchronous exceptions
 * into blocked senders and receivers, interp_destroy of a receiver's
 * interpreter, and bad input.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <tether/tether.h>

#include "runner.h"
#include "support.h"

static tether_channel new_channel(size_t cap)
{
    tether_channel ch;
    ASSERT_OK(tether_channel_new(cap, &ch));
    return ch;
}

static int recv_int(tether_channel ch, int *v, int64_t timeout)
{
    void *d;
    size_t n;
    int rc = tether_channel_recv(ch, &d, &n, timeout);
    if (rc == TETHER_OK) {
        ASSERT_EQ(n, sizeof *v);
        memcpy(v, d, sizeof *v);
        tether_channel_msg_free(d);
    }
    return rc;
}

TEST(fifo_and_sizes)
{
    tether_channel ch = new_channel(0);
    const char *words[] = {"", "a", "hello, channel"};
    for (int i = 0; i < 3; i++)
        ASSERT_OK(tether_channel_send(ch, words[i], strlen(words[i]), 0));
    size_t count;
    ASSERT_OK(tether_channel_count(ch, &count));
    ASSERT_EQ(count, 3);
    for (int i = 0; i < 3; i++) {
        void *d;
        size_t n;
        ASSERT_OK(tether_channel_recv(ch, &d, &n, 0));
        ASSERT(d != NULL);
        ASSERT_EQ(n, strlen(words[i]));
        ASSERT(memcmp(d, words[i], n) == 0);
        tether_channel_msg_free(d);
    }
    void *d;
    size_t n;
    ASSERT_FAILS(tether_channel_recv(ch, &d, &n, 0), TETHER_ETIMEDOUT,
                 "tether_channel_recv");
    ASSERT_FAILS(tether_channel_recv(ch, &d, &n, MS(10)), TETHER_ETIMEDOUT,
                 "tether_channel_recv");
    ASSERT_OK(tether_channel_release(ch));
}

TEST(capacity_bounds_senders)
{
    tether_channel ch = new_channel(2);
    int v = 1;
    ASSERT_OK(tether_channel_send(ch, &v, sizeof v, 0));
    ASSERT_OK(tether_channel_send(ch, &v, sizeof v, 0));
    ASSERT_FAILS(tether_channel_send(ch, &v, sizeof v, 0), TETHER_ETIMEDOUT,
                 "tether_channel_send");
    ASSERT_FAILS(tether_channel_send(ch, &v, sizeof v, MS(5)), TETHER_ETIMEDOUT,
                 "tether_channel_send");
    ASSERT_OK(recv_int(ch, &v, 0));
    ASSERT_OK(tether_channel_send(ch, &v, sizeof v, 0));
    ASSERT_OK(tether_channel_release(ch));
}

/* Producers in several interpreters, one consumer: every message arrives
   once, and each producer's messages arrive in its order. */
#define PRODUCERS 4
#define PER_PRODUCER 2000

struct producer {
    tether_channel ch;
    int id;
};

static int produce(void *arg)
{
    struct producer *p = arg;
    for (int i = 0; i < PER_PRODUCER; i++) {
        int v = p->id * PER_PRODUCER + i;
        int rc = tether_channel_send(p->ch, &v, sizeof v, -1);
        if (rc != TETHER_OK)
            return rc;
    }
    return TETHER_OK;
}

TEST(many_producers_across_interps)
{
    tether_runtime rt = t_runtime(&t_per_interp_gil);
    tether_channel ch = new_channel(16);
    struct producer p[PRODUCERS];
    tether_thread t[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        tether_interp in;
        ASSERT_OK(tether_interp_create(rt, &in));
        p[i] = (struct producer){ch, i};
        t[i] = t_start(in, produce, &p[i]);
    }
    int next[PRODUCERS] = {0};
    for (int n = 0; n < PRODUCERS * PER_PRODUCER; n++) {
        int v;
        ASSERT_OK(recv_int(ch, &v, SECONDS(30)));
        int id = v / PER_PRODUCER;
        ASSERT(id >= 0 && id < PRODUCERS);
        ASSERT_EQ(v % PER_PRODUCER, next[id]);
        next[id]++;
    }
    for (int i = 0; i < PRODUCERS; i++)
        ASSERT_OK(t_join(t[i]));
    ASSERT_OK(tether_channel_release(ch));
    t_finalize(rt);
}

static int recv_blocked(void *arg)
{
    int v;
    return recv_int(*(tether_channel *)arg, &v, -1);
}

static int send_blocked(void *arg)
{
    int v = 7;
    tether_channel ch = *(tether_channel *)arg;
    int rc;
    while ((rc = tether_channel_send(ch, &v, sizeof v, -1)) == TETHER_OK)
        ;
    return rc;
}

/* Waits until `t` is blocked: its thread state stays alive, so poll a
   little with the GIL released. */
static void let_it_block(void) { ASSERT_OK(tether_sleep(MS(20))); }

TEST(close_wakes_receivers_and_senders)
{
    tether_runtime rt = t_runtime(NULL);
    tether_interp in = t_main_interp(rt);
    tether_channel empty = new_channel(1), full = new_channel(1);
    tether_thread r = t_start(in, recv_blocked, &empty);
    tether_thread s = t_start(in, send_blocked, &full);
    let_it_block();
    ASSERT_EQ(tether_thread_is_alive(r), 1);
    ASSERT_OK(tether_channel_close(empty));
    ASSERT_OK(tether_channel_close(full));
    ASSERT_OK(tether_channel_close(full)); /* twice is harmless */
    ASSERT_STATUS(t_join(r), TETHER_ECLOSED);
    ASSERT_STATUS(t_join(s), TETHER_ECLOSED);
    /* Receivers drain before they see the close. */
    int v;
    ASSERT_OK(recv_int(full, &v, 0));
    ASSERT_EQ(v, 7);
    ASSERT_FAILS(recv_int(full, &v, 0), TETHER_ECLOSED, "tether_channel_recv");
    ASSERT_FAILS(tether_channel_send(full, &v, sizeof v, 0), TETHER_ECLOSED,
                 "tether_channel_send");
    ASSERT_OK(tether_channel_release(empty));
    ASSERT_OK(tether_channel_release(full));
    t_finalize(rt);
}

TEST(release_while_waiting)
{
    tether_runtime rt = t_runtime(NULL);
    tether_channel ch = new_channel(1);
    ASSERT_OK(tether_channel_retain(ch));
    tether_thread r = t_start(t_main_interp(rt), recv_blocked, &ch);
    let_it_block();
    ASSERT_OK(tether_channel_release(ch)); /* one reference left */
    ASSERT_EQ(tether_thread_is_alive(r), 1);
    ASSERT_OK(tether_channel_release(ch)); /* the last: waiters leave */
    ASSERT_STATUS(t_join(r), TETHER_EBADHANDLE);
    ASSERT_FAILS(tether_channel_release(ch), TETHER_EBADHANDLE,
                 "tether_channel_release");
    t_finalize(rt);
}

TEST(async_exception_wakes_blocked_recv_in_other_interp)
{
    tether_runtime rt = t_runtime(&t_per_interp_gil);
    tether_interp b;
    ASSERT_OK(tether_interp_create(rt, &b));
    tether_channel ch = new_channel(1);
    tether_thread r = t_start(b, recv_blocked, &ch);
    let_it_block();
    ASSERT_OK(tether_thread_raise(r, 5, NULL, NULL));
    ASSERT_STATUS(t_join(r), TETHER_EASYNC);
    /* Nothing was taken: a message sent now is still there. */
    int v = 3;
    ASSERT_OK(tether_channel_send(ch, &v, sizeof v, 0));
    size_t count;
    ASSERT_OK(tether_channel_count(ch, &count));
    ASSERT_EQ(count, 1);
    ASSERT_OK(tether_channel_release(ch));
    t_finalize(rt);
}

TEST(destroy_interp_with_threads_blocked_on_channel)
{
    tether_runtime rt = t_runtime(&t_per_interp_gil);
    tether_interp b;
    ASSERT_OK(tether_interp_create(rt, &b));
    tether_channel ch = new_channel(1);
    tether_thread rs[3];
    for (int i = 0; i < 3; i++)
        rs[i] = t_start_daemon(b, recv_blocked, &ch);
    let_it_block();
    ASSERT_OK(tether_interp_destroy(b, SECONDS(30)));
    for (int i = 0; i < 3; i++)
        ASSERT_STATUS(t_join(rs[i]), TETHER_EFINALIZING);
    ASSERT_OK(tether_channel_release(ch));
    t_finalize(rt);
}

TEST(unattached_threads_use_channels)
{
    tether_channel ch = new_channel(0);
    int v = 42;
    ASSERT_OK(tether_channel_send(ch, &v, sizeof v, -1));
    ASSERT_OK(recv_int(ch, &v, -1));
    ASSERT_EQ(v, 42);
    ASSERT_OK(tether_channel_release(ch));
}

/* What the discard functions saw. */
static struct {
    int calls;
    char seen[8];  /* first byte of each discarded message, in order */
    uint64_t thread; /* pthread_self of the last call, as an integer */
} g_disc;

static void count_discard(void *data, size_t len, void *ud)
{
    ASSERT(ud == &g_disc);
    ASSERT(len >= 1);
    if (g_disc.calls < (int)sizeof g_disc.seen)
        g_disc.seen[g_disc.calls] = *(char *)data;
    g_disc.calls++;
    g_disc.thread = (uint64_t)pthread_self();
}

/* A message that carries a channel handle (its first byte is 'h'). */
static void release_carried(void *data, size_t len, void *ud)
{
    count_discard(data, len, ud);
    tether_channel inner;
    ASSERT_EQ(len, 1 + sizeof inner);
    memcpy(&inner, (char *)data + 1, sizeof inner);
    ASSERT_OK(tether_channel_release(inner));
}

TEST(discard_undelivered_messages)
{
    memset(&g_disc, 0, sizeof g_disc);
    tether_channel ch = new_channel(0);
    ASSERT_OK(tether_channel_set_discard(ch, count_discard, &g_disc));
    ASSERT_OK(tether_channel_send(ch, "a", 1, 0));
    ASSERT_OK(tether_channel_send(ch, "b", 1, 0));
    ASSERT_OK(tether_channel_send(ch, "c", 1, 0));
    void *d;
    size_t n;
    ASSERT_OK(tether_channel_recv(ch, &d, &n, 0)); /* delivered: not discarded */
    tether_channel_msg_free(d);
    ASSERT_OK(tether_channel_retain(ch));
    ASSERT_OK(tether_channel_release(ch)); /* not the last reference */
    ASSERT_OK(tether_channel_close(ch));   /* closing keeps the messages */
    ASSERT_EQ(g_disc.calls, 0);
    ASSERT_OK(tether_channel_release(ch));
    ASSERT_EQ(g_disc.calls, 2);
    ASSERT(memcmp(g_disc.seen, "bc", 2) == 0);
    ASSERT(g_disc.thread == (uint64_t)pthread_self());

    /* NULL removes the function: messages are just freed. */
    memset(&g_disc, 0, sizeof g_disc);
    ch = new_channel(0);
    ASSERT_OK(tether_channel_set_discard(ch, count_discard, &g_disc));
    ASSERT_OK(tether_channel_set_discard(ch, NULL, NULL));
    ASSERT_OK(tether_channel_send(ch, "x", 1, 0));
    ASSERT_OK(tether_channel_release(ch));
    ASSERT_EQ(g_disc.calls, 0);
}

/* A discarded message that holds the last reference to another channel
   with queued messages: that channel's discard runs from inside the first
   one's, and everything is freed (LeakSanitizer checks the rest). */
TEST(discard_releases_carried_channels)
{
    memset(&g_disc, 0, sizeof g_disc);
    tether_channel outer = new_channel(0), inner = new_channel(0);
    ASSERT_OK(tether_channel_set_discard(inner, count_discard, &g_disc));
    ASSERT_OK(tether_channel_set_discard(outer, release_carried, &g_disc));
    ASSERT_OK(tether_channel_send(inner, "i", 1, 0));
    char msg[1 + sizeof inner] = {'h'};
    memcpy(msg + 1, &inner, sizeof inner); /* the message owns the reference */
    ASSERT_OK(tether_channel_send(outer, msg, sizeof msg, 0));
    ASSERT_OK(tether_channel_release(outer));
    ASSERT_EQ(g_disc.calls, 2);
    ASSERT(memcmp(g_disc.seen, "hi", 2) == 0);
    size_t n;
    ASSERT_FAILS(tether_channel_count(inner, &n), TETHER_EBADHANDLE,
                 "tether_channel_count");
}

/* A send that finalize stops before it could queue its message hands the
   message to the discard function, on the sending thread, before it
   returns TETHER_EFINALIZING: the message is never the caller's after that
   status (a binding leaves the references a message holds to it).  The
   daemon blocks on the full channel, or is about to, when finalize comes:
   either way its message is not queued.  (tests/delay's channel_order
   holds each of the two ways open, and the case where the message was
   queued.) */
static tether_event g_sender_ready;

static int send_b_after_ready(void *arg)
{
    tether_channel ch = *(tether_channel *)arg;
    ASSERT_OK(tether_event_set(g_sender_ready));
    return tether_channel_send(ch, "b", 1, -1); /* full: until finalize */
}

TEST(finalize_hands_an_unsent_message_to_the_discard)
{
    memset(&g_disc, 0, sizeof g_disc);
    tether_runtime rt = t_runtime(NULL);
    tether_channel ch = new_channel(1);
    ASSERT_OK(tether_channel_set_discard(ch, count_discard, &g_disc));
    ASSERT_OK(tether_channel_send(ch, "a", 1, 0)); /* full now */
    ASSERT_OK(tether_event_new(&g_sender_ready));
    tether_thread t = t_start_daemon(t_main_interp(rt), send_b_after_ready, &ch);
    ASSERT_OK(tether_event_wait(g_sender_ready, -1)); /* it is in its body */
    ASSERT_OK(tether_event_free(g_sender_ready));
    ASSERT_OK(tether_runtime_finalize(rt, SECONDS(30)));
    ASSERT_STATUS(t_join(t), TETHER_EFINALIZING);
    /* "b" went to the discard on the sender's thread; "a" is still queued. */
    ASSERT_EQ(g_disc.calls, 1);
    ASSERT_EQ(g_disc.seen[0], 'b');
    ASSERT(g_disc.thread != (uint64_t)pthread_self());
    size_t n;
    ASSERT_OK(tether_channel_count(ch, &n));
    ASSERT_EQ(n, 1);
    /* Every undelivered message is discarded once: "a" at the release. */
    ASSERT_OK(tether_channel_release(ch));
    ASSERT_EQ(g_disc.calls, 2);
    ASSERT(memcmp(g_disc.seen, "ba", 2) == 0);
}

/* Releases the channel a message carries (the whole message is a handle). */
static void release_handle_msg(void *data, size_t len, void *ud)
{
    tether_channel inner;
    ASSERT_EQ(len, sizeof inner);
    memcpy(&inner, data, sizeof inner);
    ASSERT_OK(tether_channel_release(inner));
    (*(int *)ud)++;
}

/* 100,000 channels (fewer in the sanitizer and valgrind builds), each
   queued in the one before: releasing the first frees them all, one
   discard after another, in constant stack (nested, this overflowed the
   8 MB main stack of the dev build; the test fails that way if it is). */
TEST(discard_chain_runs_in_constant_stack)
{
    const int N = runner_rounds(100000);
    int discarded = 0;
    tether_channel first = new_channel(0), prev = first, last = first;
    ASSERT_OK(tether_channel_set_discard(first, release_handle_msg, &discarded));
    for (int i = 1; i < N; i++) {
        tether_channel next = new_channel(0);
        ASSERT_OK(tether_channel_set_discard(next, release_handle_msg, &discarded));
        ASSERT_OK(tether_channel_send(prev, &next, sizeof next, 0)); /* owns it now */
        prev = last = next;
    }
    ASSERT_OK(tether_channel_release(first));
    ASSERT_EQ(discarded, N - 1);
    size_t n;
    ASSERT_FAILS(tether_channel_count(last, &n), TETHER_EBADHANDLE,
                 "tether_channel_count");
}

/* tether_channel_watch: one event watching two channels wakes a thread
   blocked on it for a message on either, from another interpreter; a
   close sets it too; after unwatch nothing does. */
struct watched {
    tether_channel a, b;
    int sends;
};

static int send_to_both(void *arg)
{
    struct watched *w = arg;
    for (int i = 0; i < w->sends; i++) {
        int v = i;
        int rc = tether_channel_send(i % 2 ? w->b : w->a, &v, sizeof v, -1);
        if (rc != TETHER_OK)
            return rc;
    }
    return TETHER_OK;
}

TEST(watch_wakes_one_event_for_several_channels)
{
    enum { SENDS = 200 };
    tether_runtime rt = t_runtime(&t_per_interp_gil);
    struct watched w = {new_channel(4), new_channel(4), SENDS};
    tether_event ev;
    ASSERT_OK(tether_event_new(&ev));
    ASSERT_OK(tether_channel_watch(w.a, ev));
    ASSERT_OK(tether_channel_watch(w.b, ev));
    ASSERT_OK(tether_channel_watch(w.b, ev)); /* twice: two unwatches */
    tether_interp in;
    ASSERT_OK(tether_interp_create(rt, &in));
    tether_thread t = t_start(in, send_to_both, &w);
    int got = 0, next[2] = {0, 1};
    while (got < SENDS) {
        ASSERT_OK(tether_event_clear(ev));
        int v, progress = 0;
        for (int c = 0; c < 2; c++) {
            while (recv_int(c ? w.b : w.a, &v, 0) == TETHER_OK) {
                ASSERT_EQ(v, next[c]);
                next[c] += 2;
                got++;
                progress = 1;
            }
        }
        if (!progress) /* nothing was ready: the next message sets ev */
            ASSERT_OK(tether_event_wait(ev, SECONDS(30)));
    }
    ASSERT_OK(t_join(t));
    ASSERT_OK(tether_event_clear(ev));
    ASSERT_OK(tether_channel_close(w.a));
    ASSERT_EQ(tether_event_is_set(ev), 1); /* a close wakes watchers */
    ASSERT_OK(tether_channel_unwatch(w.a, ev));
    ASSERT_FAILS(tether_channel_unwatch(w.a, ev), TETHER_EINVAL,
                 "tether_channel_unwatch");
    ASSERT_OK(tether_channel_unwatch(w.b, ev));
    ASSERT_OK(tether_event_clear(ev));
    ASSERT_OK(tether_channel_send(w.b, "x", 1, 0));
    ASSERT_EQ(tether_event_is_set(ev), 1); /* still watched once */
    ASSERT_OK(tether_channel_unwatch(w.b, ev));
    ASSERT_OK(tether_event_clear(ev));
    ASSERT_OK(tether_channel_send(w.b, "x", 1, 0));
    ASSERT_EQ(tether_event_is_set(ev), 0);
    /* A watcher freed before it unwatched is set no more: harmless. */
    tether_event gone;
    ASSERT_OK(tether_event_new(&gone));
    ASSERT_OK(tether_channel_watch(w.b, gone));
    ASSERT_OK(tether_event_free(gone));
    ASSERT_OK(tether_channel_send(w.b, "x", 1, 0));
    ASSERT_OK(tether_channel_release(w.a));
    ASSERT_OK(tether_channel_release(w.b));
    ASSERT_OK(tether_event_free(ev));
    t_finalize(rt);
}

TEST(bad_input)
{
    tether_channel ch = new_channel(1);
    void *d;
    size_t n;
    ASSERT_FAILS(tether_channel_new(1, NULL), TETHER_EINVAL, "tether_channel_new");
    ASSERT_FAILS(tether_channel_send(ch, NULL, 3, 0), TETHER_EINVAL,
                 "tether_channel_send");
    ASSERT_FAILS(tether_channel_recv(ch, NULL, &n, 0), TETHER_EINVAL,
                 "tether_channel_recv");
    ASSERT_FAILS(tether_channel_recv(ch, &d, NULL, 0), TETHER_EINVAL,
                 "tether_channel_recv");
    ASSERT_FAILS(tether_channel_count(ch, NULL), TETHER_EINVAL,
                 "tether_channel_count");
    tether_lock l;
    ASSERT_OK(tether_lock_new(&l));
    uint64_t bad[] = {0, ch + 1, ch ^ (1ull << 40), l};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ASSERT_FAILS(tether_channel_send(bad[i], "x", 1, 0), TETHER_EBADHANDLE,
                     "tether_channel_send");
        ASSERT_FAILS(tether_channel_recv(bad[i], &d, &n, 0), TETHER_EBADHANDLE,
                     "tether_channel_recv");
        ASSERT_FAILS(tether_channel_close(bad[i]), TETHER_EBADHANDLE,
                     "tether_channel_close");
        ASSERT_FAILS(tether_channel_retain(bad[i]), TETHER_EBADHANDLE,
                     "tether_channel_retain");
        ASSERT_FAILS(tether_channel_count(bad[i], &n), TETHER_EBADHANDLE,
                     "tether_channel_count");
        ASSERT_FAILS(tether_channel_set_discard(bad[i], NULL, NULL),
                     TETHER_EBADHANDLE, "tether_channel_set_discard");
        ASSERT_FAILS(tether_channel_watch(bad[i], 0), TETHER_EBADHANDLE,
                     "tether_channel_watch");
        ASSERT_FAILS(tether_channel_unwatch(bad[i], 0), TETHER_EBADHANDLE,
                     "tether_channel_unwatch");
    }
    ASSERT_FAILS(tether_channel_watch(ch, l), TETHER_EBADHANDLE,
                 "tether_channel_watch");
    ASSERT_FAILS(tether_channel_unwatch(ch, l), TETHER_EINVAL,
                 "tether_channel_unwatch");
    ASSERT_OK(tether_channel_release(0));
    tether_channel_msg_free(NULL);
    ASSERT_OK(tether_lock_free(l));
    /* Nothing changed: the channel still works. */
    ASSERT_OK(tether_channel_send(ch, "x", 1, 0));
    ASSERT_OK(tether_channel_release(ch));
    ASSERT_FAILS(tether_channel_send(ch, "x", 1, 0), TETHER_EBADHANDLE,
                 "tether_channel_send");
}

RUNNER_MAIN(TEST_ENTRY(fifo_and_sizes), TEST_ENTRY(discard_undelivered_messages),
            TEST_ENTRY(discard_releases_carried_channels),
            TEST_ENTRY(discard_chain_runs_in_constant_stack),
            TEST_ENTRY(finalize_hands_an_unsent_message_to_the_discard),
            TEST_ENTRY(capacity_bounds_senders),
            TEST_ENTRY(many_producers_across_interps),
            TEST_ENTRY(close_wakes_receivers_and_senders),
            TEST_ENTRY(release_while_waiting),
            TEST_ENTRY(async_exception_wakes_blocked_recv_in_other_interp),
            TEST_ENTRY(destroy_interp_with_threads_blocked_on_channel),
            TEST_ENTRY(unattached_threads_use_channels),
            TEST_ENTRY(watch_wakes_one_event_for_several_channels), TEST_ENTRY(bad_input))
