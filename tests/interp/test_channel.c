/*
 * test_channel.c - channels: FIFO order across threads and interpreters,
 * capacity, timeouts, close, release while waiting, asynchronous exceptions
 * into blocked senders and receivers, interp_destroy of a receiver's
 * interpreter, and bad input.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
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

/* ---- rev3: sends stopped by finalize, many at once ---------------------- */

/* Every message of a round reaches exactly one of: a receiver, the discard
   at send time (on the sender's thread, before its send returns), the
   discard at the channel's last release; a sender whose send failed with
   another status (TETHER_EBADHANDLE: the channel was released while it
   waited) owns its message, which reaches neither. */
#define R3_SENDERS 16

static struct {
    atomic_int recvd[R3_SENDERS + 1];
    atomic_int at_send[R3_SENDERS + 1];
    atomic_int at_release[R3_SENDERS + 1];
    atomic_int releasing;               /* the release-time phase began */
    atomic_int called[R3_SENDERS + 1];  /* the sender's body ran */
    atomic_int bad;                     /* a discard saw a bad message */
} g_r3;

static _Thread_local int t_r3_id = -1; /* the id this thread sends, if any */

struct r3_sender {
    tether_channel ch;
    int id;
};

static void r3_discard(void *data, size_t len, void *ud)
{
    (void)ud;
    int id;
    if (len != sizeof id || !data) {
        atomic_fetch_add(&g_r3.bad, 1);
        return;
    }
    memcpy(&id, data, sizeof id);
    if (id < 0 || id > R3_SENDERS) {
        atomic_fetch_add(&g_r3.bad, 1);
        return;
    }
    if (t_r3_id == id)
        atomic_fetch_add(&g_r3.at_send[id], 1);
    else
        atomic_fetch_add(&g_r3.at_release[id], 1);
}

static int r3_send(void *arg)
{
    struct r3_sender *s = arg;
    t_r3_id = s->id;
    atomic_store(&g_r3.called[s->id], 1);
    return tether_channel_send(s->ch, &s->id, sizeof s->id, -1);
}

/* Receives `n` messages (fewer if a receive fails), a little apart. */
struct r3_recv {
    tether_channel ch;
    int n;
};

static void r3_count_recv(void *d, size_t n)
{
    int id;
    if (n != sizeof id) {
        atomic_fetch_add(&g_r3.bad, 1);
        tether_channel_msg_free(d);
        return;
    }
    memcpy(&id, d, sizeof id);
    tether_channel_msg_free(d);
    if (id < 0 || id > R3_SENDERS)
        atomic_fetch_add(&g_r3.bad, 1);
    else
        atomic_fetch_add(&g_r3.recvd[id], 1);
}

static int r3_receiver(void *arg)
{
    struct r3_recv *r = arg;
    for (int i = 0; i < r->n; i++) {
        void *d;
        size_t n;
        int rc = tether_channel_recv(r->ch, &d, &n, -1);
        if (rc != TETHER_OK)
            return rc;
        r3_count_recv(d, n);
        if (tether_sleep(MS(1)) != TETHER_OK)
            return TETHER_EFINALIZING;
    }
    return TETHER_OK;
}

/* How a round ends: the runtime finalized, or the senders' interpreter
   destroyed; and whether the channel's last reference goes on another
   thread while that happens. */
enum r3_end { R3_FINALIZE, R3_DESTROY };

struct r3_release {
    tether_channel ch;
    t_sem go;
};

static void *r3_release_main(void *arg)
{
    struct r3_release *r = arg;
    t_sem_wait(&r->go);
    ASSERT_OK(tether_channel_release(r->ch));
    return NULL;
}

static void r3_round(enum r3_end end, int release_meanwhile, int round)
{
    memset(&g_r3, 0, sizeof g_r3);
    tether_interp main_in;
    tether_runtime rt = t_runtime_main(&t_per_interp_gil, &main_in);
    tether_interp in = main_in;
    if (end == R3_DESTROY)
        ASSERT_OK(tether_interp_create(rt, &in));
    tether_channel ch = new_channel(1);
    ASSERT_OK(tether_channel_set_discard(ch, r3_discard, NULL));
    int zero = 0;
    ASSERT_OK(tether_channel_send(ch, &zero, sizeof zero, 0)); /* full */
    struct r3_sender s[R3_SENDERS];
    tether_thread t[R3_SENDERS];
    for (int i = 0; i < R3_SENDERS; i++) {
        s[i] = (struct r3_sender){ch, i + 1};
        t[i] = t_start_daemon(in, r3_send, &s[i]);
    }
    struct r3_recv rv = {ch, round % 5};
    tether_thread r = t_start_daemon(in, r3_receiver, &rv);
    if (round % 2)
        let_it_block(); /* some blocked, likely */
    struct r3_release rel;
    memset(&rel, 0, sizeof rel);
    rel.ch = ch;
    pthread_t relt;
    if (release_meanwhile) {
        t_sem_init(&rel.go);
        relt = t_pthread(r3_release_main, &rel);
        t_sem_post(&rel.go);
    }
    if (end == R3_DESTROY)
        ASSERT_OK(tether_interp_destroy(in, SECONDS(30)));
    else
        ASSERT_OK(tether_runtime_finalize(rt, SECONDS(30)));
    int rcs[R3_SENDERS + 1];
    rcs[0] = TETHER_OK;
    for (int i = 0; i < R3_SENDERS; i++)
        rcs[i + 1] = t_join(t[i]);
    int rrc = t_join(r);
    ASSERT(rrc == TETHER_OK || rrc == TETHER_EFINALIZING || rrc == TETHER_EBADHANDLE);
    if (release_meanwhile) {
        t_pthread_join(relt);
        t_sem_destroy(&rel.go); /* made again next round (DRD) */
    } else {
        if (round % 3 == 0) { /* take what is left, if anything */
            void *d;
            size_t n;
            if (tether_channel_recv(ch, &d, &n, 0) == TETHER_OK)
                r3_count_recv(d, n);
        }
        atomic_store(&g_r3.releasing, 1);
        ASSERT_OK(tether_channel_release(ch));
    }
    if (end == R3_DESTROY)
        t_finalize(rt);
    ASSERT_EQ(atomic_load(&g_r3.bad), 0);
    for (int id = 0; id <= R3_SENDERS; id++) {
        int got = atomic_load(&g_r3.recvd[id]), at_send = atomic_load(&g_r3.at_send[id]),
            at_rel = atomic_load(&g_r3.at_release[id]);
        int total = got + at_send + at_rel;
        if (id && !atomic_load(&g_r3.called[id])) { /* never ran: no message */
            if (total != 0 || rcs[id] != TETHER_EFINALIZING)
                runner_fail(__FILE__, __LINE__, "round %d id %d (never sent, %s): "
                            "recv %d, send-discard %d, release-discard %d", round,
                            id, tether_status_name(rcs[id]), got, at_send, at_rel);
        } else if (rcs[id] == TETHER_OK) {
            if (total != 1 || at_send)
                runner_fail(__FILE__, __LINE__, "round %d id %d (sent OK): recv %d, "
                            "send-discard %d, release-discard %d", round, id, got,
                            at_send, at_rel);
        } else if (rcs[id] == TETHER_EFINALIZING) {
            if (total != 1)
                runner_fail(__FILE__, __LINE__, "round %d id %d (EFINALIZING): "
                            "recv %d, send-discard %d, release-discard %d", round,
                            id, got, at_send, at_rel);
        } else if (rcs[id] == TETHER_EBADHANDLE && release_meanwhile) {
            if (total != 0)
                runner_fail(__FILE__, __LINE__, "round %d id %d (EBADHANDLE): "
                            "recv %d, send-discard %d, release-discard %d", round,
                            id, got, at_send, at_rel);
        } else {
            runner_fail(__FILE__, __LINE__, "round %d id %d: send returned %s",
                        round, id, tether_status_name(rcs[id]));
        }
    }
}

TEST(many_senders_stopped_by_finalize_each_message_once)
{
    for (int i = 0; i < runner_rounds(20); i++)
        r3_round(R3_FINALIZE, 0, i);
}

TEST(many_senders_stopped_by_interp_destroy_each_message_once)
{
    for (int i = 0; i < runner_rounds(20); i++)
        r3_round(R3_DESTROY, 0, i);
}

TEST(many_senders_stopped_while_another_thread_releases_the_channel)
{
    for (int i = 0; i < runner_rounds(20); i++)
        r3_round(i % 2 ? R3_DESTROY : R3_FINALIZE, 1, i);
}

/* A discard that sends into its own (full) channel with timeout 0, once:
   the inner send is refused (ETIMEDOUT, or EFINALIZING with its message
   discarded, nested) and nothing is lost or doubled. */
static struct {
    int calls, depth, max_depth, inner_rc;
    char seen[8];
    tether_channel ch;
    int release_in_discard;
    int nested_release_discard; /* "a" was discarded while "b"'s discard ran */
} g_self;

static void self_discard(void *data, size_t len, void *ud)
{
    (void)ud;
    g_self.depth++;
    if (g_self.depth > g_self.max_depth)
        g_self.max_depth = g_self.depth;
    if (g_self.calls < (int)sizeof g_self.seen)
        g_self.seen[g_self.calls] = len ? *(char *)data : '0';
    g_self.calls++;
    char c = len ? *(char *)data : '0';
    if (g_self.depth > 1 && c == 'a')
        g_self.nested_release_discard = 1;
    if (c == 'b' && !g_self.release_in_discard)
        g_self.inner_rc = tether_channel_send(g_self.ch, "c", 1, 0);
    if (c == 'b' && g_self.release_in_discard)
        ASSERT_OK(tether_channel_release(g_self.ch)); /* the last reference */
    g_self.depth--;
}

static int send_b(void *arg)
{
    tether_channel ch = *(tether_channel *)arg;
    return tether_channel_send(ch, "b", 1, -1);
}

static void self_round(int release_in_discard)
{
    memset(&g_self, 0, sizeof g_self);
    g_self.inner_rc = 12345;
    g_self.release_in_discard = release_in_discard;
    tether_runtime rt = t_runtime(NULL);
    tether_channel ch = new_channel(1);
    g_self.ch = ch;
    ASSERT_OK(tether_channel_set_discard(ch, self_discard, NULL));
    ASSERT_OK(tether_channel_send(ch, "a", 1, 0)); /* full */
    tether_thread t = t_start_daemon(t_main_interp(rt), send_b, &ch);
    let_it_block(); /* blocked, likely; else about to */
    ASSERT_OK(tether_runtime_finalize(rt, SECONDS(30)));
    ASSERT_STATUS(t_join(t), TETHER_EFINALIZING);
    if (release_in_discard) {
        /* "b" at send time; its discard released the channel: "a" then. */
        ASSERT_EQ(g_self.calls, 2);
        ASSERT(memcmp(g_self.seen, "ba", 2) == 0);
        size_t n;
        ASSERT_STATUS(tether_channel_count(ch, &n), TETHER_EBADHANDLE);
        /* tether.h: a channel whose last reference goes inside a discard
           has its own discards run after that one returns, not nested. */
        ASSERT_EQ(g_self.nested_release_discard, 0);
        return;
    }
    printf("# the discard's own send: %s\n", tether_status_name(g_self.inner_rc));
    if (g_self.inner_rc == TETHER_ETIMEDOUT) {
        ASSERT_EQ(g_self.calls, 1);
    } else {
        ASSERT_STATUS(g_self.inner_rc, TETHER_EFINALIZING);
        ASSERT_EQ(g_self.calls, 2); /* "c" too, nested */
        ASSERT(memcmp(g_self.seen, "bc", 2) == 0);
    }
    size_t n;
    ASSERT_OK(tether_channel_count(ch, &n));
    ASSERT_EQ(n, 1); /* "a" only */
    int before = g_self.calls;
    ASSERT_OK(tether_channel_release(ch));
    ASSERT_EQ(g_self.calls, before + 1);
    ASSERT_EQ(g_self.seen[before], 'a');
}

TEST(a_send_time_discard_that_sends_into_its_channel)
{
    self_round(0);
}

TEST(a_send_time_discard_that_releases_its_channel)
{
    self_round(1);
}

/* A zero-length message (data NULL, len 0) stopped by finalize reaches the
   discard with len 0 and a non-NULL data pointer (as tether_channel_recv's). */
static struct {
    int calls;
    size_t len;
    int data_null;
} g_zero;

static void zero_discard(void *data, size_t len, void *ud)
{
    (void)ud;
    g_zero.calls++;
    g_zero.len = len;
    g_zero.data_null = data == NULL;
}

static int send_empty(void *arg)
{
    tether_channel ch = *(tether_channel *)arg;
    return tether_channel_send(ch, NULL, 0, -1);
}

TEST(a_zero_length_send_stopped_by_finalize_is_discarded)
{
    memset(&g_zero, 0, sizeof g_zero);
    tether_runtime rt = t_runtime(NULL);
    tether_channel ch = new_channel(1);
    ASSERT_OK(tether_channel_set_discard(ch, zero_discard, NULL));
    ASSERT_OK(tether_channel_send(ch, NULL, 0, 0)); /* full */
    tether_thread t = t_start_daemon(t_main_interp(rt), send_empty, &ch);
    let_it_block();
    ASSERT_OK(tether_runtime_finalize(rt, SECONDS(30)));
    ASSERT_STATUS(t_join(t), TETHER_EFINALIZING);
    ASSERT_EQ(g_zero.calls, 1);
    ASSERT_EQ(g_zero.len, 0);
    ASSERT_EQ(g_zero.data_null, 0);
    ASSERT_OK(tether_channel_release(ch));
    ASSERT_EQ(g_zero.calls, 2);
    ASSERT_EQ(g_zero.len, 0);
    ASSERT_EQ(g_zero.data_null, 0);
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
            TEST_ENTRY_T(many_senders_stopped_by_finalize_each_message_once, 120),
            TEST_ENTRY_T(many_senders_stopped_by_interp_destroy_each_message_once, 120),
            TEST_ENTRY_T(many_senders_stopped_while_another_thread_releases_the_channel, 120),
            TEST_ENTRY(a_send_time_discard_that_sends_into_its_channel),
            TEST_ENTRY(a_send_time_discard_that_releases_its_channel),
            TEST_ENTRY(a_zero_length_send_stopped_by_finalize_is_discarded),
            TEST_ENTRY(capacity_bounds_senders),
            TEST_ENTRY(many_producers_across_interps),
            TEST_ENTRY(close_wakes_receivers_and_senders),
            TEST_ENTRY(release_while_waiting),
            TEST_ENTRY(async_exception_wakes_blocked_recv_in_other_interp),
            TEST_ENTRY(destroy_interp_with_threads_blocked_on_channel),
            TEST_ENTRY(unattached_threads_use_channels),
            TEST_ENTRY(watch_wakes_one_event_for_several_channels), TEST_ENTRY(bad_input))
