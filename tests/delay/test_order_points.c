/*
 * test_order_points.c - orderings the documentation promises, checked by
 * holding their window open at the core's named delay points (core/delay.h,
 * debug builds).  Each case names the mutant of scripts/mutants.txt it
 * kills; docs/testing.md ("Ordering tests") has the list.
 *
 * No case sleeps to make a window likely: a parked thread stays parked
 * until the case has checked what must hold while it is there.
 */
#include <sched.h>
#include <stdio.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "delay_ctl.h"
#include "sanitizers.h"
#include "support.h"

/* ---- S1: while a pin is present, the GIL changes hands under the mutex -- */

static tether_interp s1_interp;
static char s1_log[8];
static atomic_int s1_len;

static void s1_took(char who)
{
    s1_log[atomic_fetch_add(&s1_len, 1)] = who;
}

static void *s1_waiter(void *arg)
{
    tether_gilstate st;
    ASSERT_OK(tether_ensure(s1_interp, &st));
    s1_took(*(const char *)arg);
    if (*(const char *)arg == 'C')
        dctl_note("test.c.took");
    ASSERT_OK(tether_release(st));
    return NULL;
}

/* A waiter (B) is pinned, inside the slow path under the GIL mutex, and
   has just seen the GIL free after the holder dropped it.  A third thread
   (C) that asks for the GIL now must go through the mutex, and so queue
   behind B: B takes it first.  With mutant S1, C's fast path takes the GIL
   from under B's pin. */
TEST(s1_pinned_gil_changes_hands_under_the_mutex)
{
    tether_runtime rt = t_runtime_main(NULL, &s1_interp);
    unsigned long sleeps = dctl_passes("gil.take.slow.sleep");
    dctl_arm("gil.take.slow.free", 1, DCTL_PARK, 0);
    static const char b = 'B', c = 'C';
    pthread_t tb = t_pthread(s1_waiter, (void *)&b);
    /* B is about to sleep on the GIL's cond: it holds a pin. */
    dctl_wait_passes("gil.take.slow.sleep", sleeps);
    tether_tstate saved;
    ASSERT_OK(tether_save_thread(&saved)); /* the slow drop wakes B */
    dctl_wait_parked("gil.take.slow.free");
    unsigned long enters = dctl_passes("gil.take.slow.enter");
    pthread_t tc = t_pthread(s1_waiter, (void *)&c);
    /* C either entered the slow path (correct) or took the GIL already. */
    int took = dctl_wait_either("gil.take.slow.enter", enters, "test.c.took", 0);
    dctl_release("gil.take.slow.free");
    t_pthread_join(tb);
    t_pthread_join(tc);
    ASSERT_EQ(took, 0);
    ASSERT_EQ(atomic_load(&s1_len), 2);
    ASSERT_EQ(s1_log[0], 'B');
    ASSERT_EQ(s1_log[1], 'C');
    ASSERT_OK(tether_restore_thread(saved));
    t_finalize(rt);
}

/* ---- S2: a thread is alive until its state is gone ---------------------- */

static t_sem s2_entered, s2_go;
static atomic_int s2_dtor_runs;

static void s2_blocking_dtor(void *payload)
{
    (void)payload;
    atomic_fetch_add(&s2_dtor_runs, 1);
    t_sem_post(&s2_entered);
    t_sem_wait(&s2_go);
}

/* Leaves an undelivered asynchronous exception on its own state, so that
   deleting the state runs s2_blocking_dtor. */
static int s2_body(void *arg)
{
    (void)arg;
    tether_thread self;
    ASSERT_OK(tether_async_defer());
    ASSERT_OK(tether_thread_current(&self));
    ASSERT_OK(tether_thread_raise(self, 7, NULL, s2_blocking_dtor));
    ASSERT_OK(tether_thread_release(self));
    return TETHER_OK;
}

/* While the thread's state teardown runs (here: a payload destructor that
   blocks), the thread is alive, has no result yet, and finalize would
   still wait for it.  With mutant S2 (thread_finish before the teardown)
   is_alive already says 0 and the result already answers. */
TEST(s2_thread_alive_until_its_state_is_deleted)
{
    t_sem_init(&s2_entered);
    t_sem_init(&s2_go);
    tether_runtime rt = t_runtime(NULL);
    tether_interp interp = t_main_interp(rt);
    tether_thread t = t_start(interp, s2_body, NULL);
    tether_tstate saved;
    ASSERT_OK(tether_save_thread(&saved));
    t_sem_wait(&s2_entered); /* the thread is inside its state's teardown */
    int alive = tether_thread_is_alive(t), result = 0;
    int rc = tether_thread_result(t, &result);
    t_sem_post(&s2_go);
    ASSERT_EQ(alive, 1);
    ASSERT_STATUS(rc, TETHER_ESTATE);
    ASSERT_OK(tether_restore_thread(saved));
    ASSERT_EQ(t_join(t), TETHER_OK);
    ASSERT_EQ(atomic_load(&s2_dtor_runs), 1);
    t_finalize(rt);
}

/* ---- S3: when thread_start returns, the thread is registered ------------ */

static int s3_body(void *arg)
{
    (void)arg;
    int rc = tether_checkpoint();
    int64_t code = 0;
    if (rc == TETHER_EASYNC)
        ASSERT_OK(tether_async_fetch(&code, NULL, NULL));
    return code == 5 ? TETHER_OK : TETHER_EINVAL;
}

/* The child is parked right after the started-handshake.  Everything that
   looks a thread up must already find it: an asynchronous exception by its
   ident reaches it.  With mutant S3 (handshake before ts_bind) its state
   has no OS thread yet and the raise finds nobody. */
TEST(s3_thread_registered_when_start_returns)
{
    tether_runtime rt = t_runtime(NULL);
    tether_interp interp = t_main_interp(rt);
    dctl_arm("thread.boot.after_handshake", 1, DCTL_PARK, 0);
    tether_thread t = t_start(interp, s3_body, NULL);
    uint64_t ident = 0;
    ASSERT_OK(tether_thread_ident(t, &ident));
    ASSERT_NE(ident, 0);
    int found = -1;
    ASSERT_OK(tether_raise_by_ident(interp, ident, 5, NULL, NULL, &found));
    size_t live = t_thread_count(interp);
    int alive = tether_thread_is_alive(t);
    dctl_release("thread.boot.after_handshake");
    ASSERT_EQ(found, 1);
    ASSERT_EQ(alive, 1);
    ASSERT_EQ(live, 1); /* the main thread has no thread object yet */
    ASSERT_EQ(t_join(t), TETHER_OK);
    t_finalize(rt);
}

/* ---- a served drop request is cleared ----------------------------------- */

static tether_interp dr_interp;
static atomic_int dr_took;

static void *dr_waiter(void *arg)
{
    (void)arg;
    tether_gilstate st;
    ASSERT_OK(tether_ensure(dr_interp, &st));
    atomic_store(&dr_took, 1);
    ASSERT_OK(tether_release(st));
    return NULL;
}

/* A waiter's drop request is served at a checkpoint; after that, with
   nobody waiting, checkpoints do not drop the GIL (the acquisition counter
   stands still).  A request left set would make every later checkpoint
   yield. */
TEST(served_drop_request_is_cleared)
{
    tether_runtime rt = t_runtime_interval(1000);
    dr_interp = t_main_interp(rt);
    pthread_t w = t_pthread(dr_waiter, NULL);
    while (!atomic_load(&dr_took))
        ASSERT_OK(tether_checkpoint());
    t_join_foreign(&w, 1);
    tether_gil_stats before = t_gil_stats(dr_interp);
    for (int i = 0; i < 1000; i++)
        ASSERT_OK(tether_checkpoint());
    tether_gil_stats after = t_gil_stats(dr_interp);
    ASSERT_EQ(after.acquisitions, before.acquisitions);
    ASSERT_EQ(after.forced_drops, before.forced_drops);
    t_finalize(rt);
}

/* ---- a drop signals the waiter ------------------------------------------ */

/* With a 10 s switch interval, a waiter that sleeps on the GIL is woken
   by the drop's signal, not by its interval running out: its sleep ends
   "woken", never "timed out".  (A lost signal would cost it 10 s and show
   here as a timed-out sleep, not as a slow test.) */
TEST(drop_signals_the_waiter)
{
    tether_runtime rt = t_runtime_interval(10000000);
    dr_interp = t_main_interp(rt);
    atomic_store(&dr_took, 0);
    unsigned long sleeps = dctl_passes("gil.take.slow.sleep");
    unsigned long timeouts = dctl_passes("gil.take.slow.timed_out");
    unsigned long wakes = dctl_passes("gil.take.slow.woken");
    pthread_t w = t_pthread(dr_waiter, NULL);
    dctl_wait_passes("gil.take.slow.sleep", sleeps);
    t_join_foreign(&w, 1);
    ASSERT_EQ(atomic_load(&dr_took), 1);
    ASSERT_EQ(dctl_passes("gil.take.slow.timed_out"), timeouts);
    ASSERT(dctl_passes("gil.take.slow.woken") > wakes);
    t_finalize(rt);
}

/* ---- a waiter's turn: the next drop hands the GIL over ----------------- */

/* A waiter that stood a whole switch interval at the head of the queue
   gets the GIL from the holder's next drop, even if the holder asks for it
   again at once: a thread that releases and re-takes the GIL with nothing
   in between cannot keep it from a waiter.  The holder here waits until
   the waiter has slept twice (its first interval at the head ran out, and
   its turn is posted under the GIL mutex before the second sleep), then
   drops and re-takes: the waiter must have held the GIL in between.
   Before the hand-over (gil.c, "Hand-over"), the re-take won the race
   against the waiter the drop had only woken. */
TEST(turn_hands_the_gil_over)
{
    tether_runtime rt = t_runtime_interval(1000);
    dr_interp = t_main_interp(rt);
    atomic_store(&dr_took, 0);
    unsigned long sleeps = dctl_passes("gil.take.slow.sleep");
    pthread_t w = t_pthread(dr_waiter, NULL);
    dctl_wait_passes("gil.take.slow.sleep", sleeps + 1);
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    ASSERT_OK(tether_restore_thread(ts));
    ASSERT_EQ(atomic_load(&dr_took), 1);
    t_join_foreign(&w, 1);
    t_finalize(rt);
}

/* ---- a raise that came before a defer waits for the allow -------------- */

/* The exception is posted (the breaker bit set) while the thread runs
   freely, and the thread defers before its next checkpoint: the checkpoint
   that sees the bit must still hold the exception until the allow.  Only
   this order reaches the delivery with a defer in force (a raise during a
   defer sets no bit). */
TEST(raise_then_defer_holds_until_allow)
{
    tether_runtime rt = t_runtime(NULL);
    tether_thread self;
    ASSERT_OK(tether_thread_current(&self));
    ASSERT_OK(tether_thread_raise(self, 9, NULL, NULL));
    ASSERT_OK(tether_async_defer());
    ASSERT_OK(tether_checkpoint());
    ASSERT_OK(tether_checkpoint());
    ASSERT_OK(tether_async_allow());
    ASSERT_STATUS(tether_checkpoint(), TETHER_EASYNC);
    int64_t code = 0;
    ASSERT_OK(tether_async_fetch(&code, NULL, NULL));
    ASSERT_EQ(code, 9);
    ASSERT_OK(tether_thread_release(self));
    t_finalize(rt);
}

/* ---- a raise wakes a wait that sleeps ----------------------------------- */

static tether_event rw_event;

static int rw_body(void *arg)
{
    (void)arg;
    int rc = tether_event_wait(rw_event, SECONDS(10));
    int64_t code = 0;
    if (rc == TETHER_EASYNC)
        ASSERT_OK(tether_async_fetch(&code, NULL, NULL));
    return rc == TETHER_EASYNC && code == 3 ? TETHER_OK : TETHER_EINVAL;
}

/* The raise comes once the waiter sleeps on the event's cond (the point is
   passed with the event's mutex held, so the raiser's broadcast cannot come
   earlier): the waiter must be woken, and get the exception.  A raise that
   set the bit without waking the wait would leave it to run out its 10 s
   (its sleep ends "expired"). */
TEST(raise_wakes_a_sleeping_wait)
{
    tether_runtime rt = t_runtime(NULL);
    tether_interp interp = t_main_interp(rt);
    ASSERT_OK(tether_event_new(&rw_event));
    unsigned long sleeps = dctl_passes("wait.sleep");
    unsigned long expired = dctl_passes("wait.expired");
    tether_thread t = t_start(interp, rw_body, NULL);
    tether_tstate saved;
    ASSERT_OK(tether_save_thread(&saved));
    dctl_wait_passes("wait.sleep", sleeps);
    ASSERT_OK(tether_thread_raise(t, 3, NULL, NULL));
    ASSERT_OK(tether_restore_thread(saved));
    ASSERT_EQ(t_join(t), TETHER_OK);
    /* Woken by the raise, not by its deadline (the loop would deliver the
       exception after a timeout too). */
    ASSERT_EQ(dctl_passes("wait.expired"), expired);
    ASSERT_OK(tether_event_free(rw_event));
    t_finalize(rt);
}

/* ---- an interpreter created while its runtime finalizes -------------- */

static tether_runtime fin_rt;
static atomic_int fin_create_rc = 1000;
static tether_interp fin_interp;

static void *fin_creator(void *arg)
{
    (void)arg;
    tether_interp x = 0;
    int rc = tether_interp_create(fin_rt, &x);
    fin_interp = x;
    atomic_store(&fin_create_rc, rc);
    return NULL;
}

/* tether_interp_create saw the runtime not finalizing and linked the new
   interpreter after finalize had taken its list: the interpreter was never
   finalized nor closed, and ran guest code (tether_ensure answered OK) in
   a runtime that tether_runtime_finalize had shut down.  The create, held
   between its check and the link while a whole finalize runs, must answer
   TETHER_EFINALIZING. */
TEST(interp_created_during_finalize)
{
    fin_rt = t_runtime(NULL);
    dctl_arm("interp.create.before_link", 1, DCTL_PARK, 0);
    pthread_t th = t_pthread(fin_creator, NULL);
    dctl_wait_parked("interp.create.before_link");
    ASSERT_OK(tether_runtime_finalize(fin_rt, SECONDS(30)));
    dctl_release("interp.create.before_link");
    t_pthread_join(th);
    ASSERT_STATUS(atomic_load(&fin_create_rc), TETHER_EFINALIZING);
    ASSERT_EQ(fin_interp, 0);
}

/* ---- one destroy of an interpreter at a time ---------------------------- */

static tether_interp dd_x;
static tether_event dd_go;
static atomic_int dd_rc = 1000;

static int dd_worker(void *arg)
{
    (void)arg;
    return tether_event_wait(dd_go, -1);
}

static void *dd_destroyer(void *arg)
{
    (void)arg;
    atomic_store(&dd_rc, tether_interp_destroy(dd_x, -1));
    return NULL;
}

/* A destroy that waits (timeout -1) for the interpreter's non-daemon
   thread was cut short by a second destroy with timeout 0: the second
   finalized the interpreter under the first one's wait, so the thread the
   first promised to join was stopped, and both reported success or a
   timeout.  Like a second tether_runtime_finalize, the second destroy is
   refused with TETHER_ESTATE and changes nothing. */
TEST(second_destroy_is_refused)
{
    tether_runtime rt = t_runtime(NULL);
    ASSERT_OK(tether_interp_create(rt, &dd_x));
    ASSERT_OK(tether_event_new(&dd_go));
    unsigned long sleeps = dctl_passes("wait.sleep");
    tether_thread t = t_start(dd_x, dd_worker, NULL);
    pthread_t th;
    TETHER_BEGIN_ALLOW_THREADS
    dctl_wait_passes("wait.sleep", sleeps); /* the worker waits for dd_go */
    sleeps = dctl_passes("wait.sleep");
    th = t_pthread(dd_destroyer, NULL);
    dctl_wait_passes("wait.sleep", sleeps); /* the destroyer joins it */
    TETHER_END_ALLOW_THREADS
    ASSERT_FAILS(tether_interp_destroy(dd_x, 0), TETHER_ESTATE,
                 "tether_interp_destroy");
    ASSERT_EQ(tether_thread_is_alive(t), 1);
    ASSERT_OK(tether_event_set(dd_go));
    TETHER_BEGIN_ALLOW_THREADS
    t_pthread_join(th);
    TETHER_END_ALLOW_THREADS
    ASSERT_OK(atomic_load(&dd_rc));
    ASSERT_EQ(t_join(t), TETHER_OK);
    ASSERT_OK(tether_event_free(dd_go));
    t_finalize(rt);
}

/* ---- finalize during a destroy closes the interpreter too ------------- */

static tether_interp fd_x;
static atomic_int fd_rc = 1000;

static void *fd_destroyer(void *arg)
{
    (void)arg;
    atomic_store(&fd_rc, tether_interp_destroy(fd_x, -1));
    return NULL;
}

/* The API fuzzer's seed x05: a tether_runtime_finalize that ran while a
   tether_interp_destroy of one of its interpreters was between stopping
   it and closing its handle skipped that interpreter ("destroyed
   already"), and returned with its handle still answering TETHER_OK,
   although finalize promises that the handles of the runtime's
   interpreters are invalid when it returns.  The destroy, held in that
   window while the whole finalize runs, must find its handle closed;
   both calls succeed. */
TEST(finalize_during_destroy_closes_the_interp)
{
    tether_runtime rt = t_runtime(NULL);
    ASSERT_OK(tether_interp_create(rt, &fd_x));
    /* Detached for good: the destroy's GIL barrier needs the shared GIL
       free, and finalize ends this thread's state of the runtime. */
    tether_tstate saved;
    ASSERT_OK(tether_save_thread(&saved));
    dctl_arm("destroy.stopped", 1, DCTL_PARK, 0);
    pthread_t th = t_pthread(fd_destroyer, NULL);
    dctl_wait_parked("destroy.stopped");
    ASSERT_OK(tether_runtime_finalize(rt, SECONDS(30)));
    tether_gil_stats st = {.size = sizeof st};
    ASSERT_STATUS(tether_gil_stats_get(fd_x, &st), TETHER_EBADHANDLE);
    dctl_release("destroy.stopped");
    t_pthread_join(th);
    ASSERT_OK(atomic_load(&fd_rc));
}

/* ---- F13: a set and a clear before the waiter blocks still wake it ----- */

static tether_event sc_event;

static int sc_body(void *arg)
{
    (void)arg;
    /* Armed here, so that no other wait parks at the point: this one has
       looked at the event once (not set) and parks before it blocks. */
    dctl_arm("wait.registered", 1, DCTL_PARK, 0);
    return tether_event_wait(sc_event, SECONDS(5));
}

/* The waiter has begun its wait (its first look found the event clear)
   and is parked, holding the GIL, before it blocks; the main thread,
   detached, sets the event and clears it at once, then lets the waiter
   block.  Like Python's Event.wait, the wait must return OK: the event
   was set after it began.  Mutant F13 (the waiter only looks at the flag)
   goes to sleep and runs out its 5 s instead.  Unlike
   unit_wait's event_set_then_clear_wakes_waiter, the clear always comes
   before the waiter looks again. */
TEST(event_set_and_clear_before_the_waiter_blocks)
{
    tether_runtime rt = t_runtime(NULL);
    tether_interp interp = t_main_interp(rt);
    ASSERT_OK(tether_event_new(&sc_event));
    tether_tstate saved;
    ASSERT_OK(tether_save_thread(&saved));
    tether_thread t = t_start(interp, sc_body, NULL);
    dctl_wait_parked("wait.registered");
    ASSERT_OK(tether_event_set(sc_event));
    ASSERT_OK(tether_event_clear(sc_event));
    dctl_release("wait.registered");
    ASSERT_OK(tether_restore_thread(saved));
    ASSERT_EQ(t_join(t), TETHER_OK);
    /* A wait that begins after the clear is not woken by the old set. */
    ASSERT_STATUS(tether_event_wait(sc_event, 0), TETHER_ETIMEDOUT);
    ASSERT_OK(tether_event_free(sc_event));
    t_finalize(rt);
}

/* ---- a forced switch leaves a woken head its turn ----------------------- */

static tether_interp ys_interp;
static atomic_int ys_stop, ys_y_in, ys_seq, ys_n_at, ys_y_at;
/* Sleeps on the GIL counted when the main thread comes back.  The main
   thread's own sleep and N's renewed one follow; the case waits for one
   more only (a main thread that got the GIL without sleeping must not hang
   it): if that was the main thread's, N may still be awake when the GIL is
   dropped, and then takes it first anyway (that round checks nothing). */
static unsigned long ys_sleeps;

/* A round's start: Y and N of `rt`'s main interpreter, nothing seen. */
static void ys_reset(tether_runtime rt)
{
    ys_interp = t_main_interp(rt);
    atomic_store(&ys_stop, 0);
    atomic_store(&ys_y_in, 0);
    atomic_store(&ys_seq, 0);
    atomic_store(&ys_n_at, 0);
    atomic_store(&ys_y_at, 0);
}

/* Y: CPU-bound, checkpoints until told to stop; records when it first
   runs again after a forced switch. */
static void *ys_cpu(void *arg)
{
    (void)arg;
    tether_gilstate st;
    unsigned long yields = dctl_passes("gil.yield.dropped");
    ASSERT_OK(tether_ensure(ys_interp, &st));
    atomic_store(&ys_y_in, 1);
    while (!atomic_load(&ys_stop)) {
        ASSERT_OK(tether_checkpoint());
        if (!atomic_load(&ys_y_at) && dctl_passes("gil.yield.dropped") > yields)
            atomic_store(&ys_y_at, atomic_fetch_add(&ys_seq, 1) + 1);
    }
    ASSERT_OK(tether_release(st));
    return NULL;
}

/* N: a plain waiter. */
static void *ys_next(void *arg)
{
    (void)arg;
    tether_gilstate st;
    ASSERT_OK(tether_ensure(ys_interp, &st));
    atomic_store(&ys_n_at, atomic_fetch_add(&ys_seq, 1) + 1);
    ASSERT_OK(tether_release(st));
    return NULL;
}

/* Runs while the main thread is in a blocking call: Y holds the GIL; N
   queues behind it; and Y's next forced switch is armed to park. */
static int ys_blocked(void *arg)
{
    pthread_t *n = arg;
    while (!atomic_load(&ys_y_in))
        sched_yield();
    unsigned long sleeps = dctl_passes("gil.take.slow.sleep");
    *n = t_pthread(ys_next, NULL);
    dctl_wait_passes("gil.take.slow.sleep", sleeps); /* N sleeps on the GIL */
    dctl_arm("gil.yield.dropped", 1, DCTL_PARK, 0);
    /* N, woken when this thread leaves the head, must sleep again, not
       watch the word (q_spin): a watching head is not woken by the drop,
       so Y would take the GIL from under it.  Parked there, a watching N
       loses the round for sure (mutant GH2), instead of only when the
       drop comes within the 50 us it watches. */
    dctl_arm("gil.take.slow.spin", 1, DCTL_PARK, 0);
    ys_sleeps = dctl_passes("gil.take.slow.sleep");
    return TETHER_OK;
}

/* Y holds the GIL, N waits for it, and the main thread comes back from a
   blocking call: its drop request makes Y yield, and Y is parked right
   after its forced switch.  The main thread drops the GIL again at once,
   which wakes N (the head); Y is let go in the same moment, and races N
   for the free GIL.  N must win: a thread coming back from a forced switch
   queues behind a woken head instead of taking the GIL from under it; and
   N, woken by the main thread's leaving the head (not by a drop that freed
   the GIL), sleeps again rather than watch the word, so that the drop
   wakes it.
   (Without that rule Y wins about half the time, so the case repeats; the
   busy threads then kept the GIL among themselves while a woken waiter
   lost its turn, and the returner behind them waited a whole interval:
   issue 20, the I/O-priority benchmark.) */
TEST(forced_switch_leaves_a_woken_head_its_turn)
{
    /* Not under ThreadSanitizer: there N, woken when the main thread left
       the head, has been seen still on its way to its renewed sleep when
       the main thread dropped the GIL (the case waits for one sleep of
       either thread), and the round then races Y against an N that is not
       the woken head the rule is about (1 failure seen; not understood
       further).  The dev and asan-ubsan builds run it. */
    if (TEST_SANITIZER_THREAD)
        return;
    for (int round = 0; round < 20; round++) {
        tether_runtime rt = t_runtime_interval(10000000);
        ys_reset(rt);
        pthread_t y = t_pthread(ys_cpu, NULL), n;
        ASSERT_OK(tether_call_blocking(ys_blocked, &n, NULL, NULL));
        /* Back with the GIL: Y yielded to this thread and is parked; N was
           woken when this thread left the queue's head: wait until it
           sleeps again. */
        dctl_wait_parked("gil.yield.dropped");
        dctl_wait_passes("gil.take.slow.sleep", ys_sleeps);
        tether_tstate saved;
        ASSERT_OK(tether_save_thread(&saved)); /* wakes N */
        dctl_release("gil.yield.dropped");
        while (!atomic_load(&ys_n_at) && !atomic_load(&ys_y_at))
            sched_yield();
        dctl_release("gil.take.slow.spin"); /* disarmed; a watcher goes on */
        atomic_store(&ys_stop, 1);
        t_pthread_join(n);
        t_pthread_join(y);
        ASSERT_EQ(atomic_load(&ys_n_at), 1);
        ASSERT_EQ(atomic_load(&ys_y_at), 2);
        ASSERT_OK(tether_restore_thread(saved));
        t_finalize(rt);
    }
}

/* ---- a waiter made the head by the head's leaving is pinned at once ---- */

/* Y and N are the previous case's ys_cpu and ys_next (ys_interp). */
static atomic_int hp_m_in, hp_m_go, hp_m_done;

/* M: the head of the queue; gets the GIL at its turn, then drops it when
   told. */
static void *hp_head(void *arg)
{
    (void)arg;
    tether_gilstate st;
    ASSERT_OK(tether_ensure(ys_interp, &st));
    atomic_store(&hp_m_in, 1);
    while (!atomic_load(&hp_m_go))
        sched_yield();
    ASSERT_OK(tether_release(st));
    atomic_store(&hp_m_done, 1);
    return NULL;
}

static void *hp_unpark_later(void *arg)
{
    (void)arg;
    struct timespec d = {0, 50 * 1000 * 1000};
    nanosleep(&d, NULL);
    dctl_release("gil.take.slow.woken_behind");
    return NULL;
}

/* N sleeps behind the head M, without a pin (only M's leaving wakes it).
   M takes the GIL at its turn from CPU-bound Y, whose forced switch is
   parked; M's leaving makes N the head and wakes it, and N is parked as
   it wakes (holding the GIL mutex).  M then drops the GIL and Y is let
   go.  N must win: made the head, it holds a pin from that moment (given
   by M's q_leave), so M's drop takes the slow path (it waits for the
   mutex until N is let go 50 ms later) and Y, back from a forced switch,
   leaves the GIL to the woken head (kept_for_head).  Without the pin,
   M's drop is a fast CAS that frees the GIL with nobody told, and Y's
   fast CAS takes it from under N every time. */
TEST(new_head_is_pinned_before_it_wakes)
{
    tether_runtime rt = t_runtime_interval(50000); /* 50 ms */
    ys_reset(rt);
    tether_tstate saved;
    ASSERT_OK(tether_save_thread(&saved));
    pthread_t y = t_pthread(ys_cpu, NULL);
    while (!atomic_load(&ys_y_in))
        sched_yield();
    unsigned long sleeps = dctl_passes("gil.take.slow.sleep");
    pthread_t m = t_pthread(hp_head, NULL);
    dctl_wait_passes("gil.take.slow.sleep", sleeps); /* M asleep at the head */
    sleeps = dctl_passes("gil.take.slow.sleep");
    dctl_arm("gil.take.slow.woken_behind", 1, DCTL_PARK, 0);
    dctl_arm("gil.yield.dropped", 1, DCTL_PARK, 0);
    pthread_t n = t_pthread(ys_next, NULL);
    dctl_wait_passes("gil.take.slow.sleep", sleeps); /* N asleep behind M */
    /* M's turn: Y hands it the GIL and parks; M's leaving wakes N. */
    dctl_wait_parked("gil.yield.dropped");
    dctl_wait_parked("gil.take.slow.woken_behind");
    while (!atomic_load(&hp_m_in))
        sched_yield();
    pthread_t unpark = t_pthread(hp_unpark_later, NULL);
    atomic_store(&hp_m_go, 1);
    while (!atomic_load(&hp_m_done))
        sched_yield();
    dctl_release("gil.yield.dropped");
    while (!atomic_load(&ys_n_at) && !atomic_load(&ys_y_at))
        sched_yield();
    atomic_store(&ys_stop, 1);
    t_pthread_join(unpark);
    t_pthread_join(n);
    t_pthread_join(m);
    t_pthread_join(y);
    ASSERT_EQ(atomic_load(&ys_n_at), 1);
    ASSERT_EQ(atomic_load(&ys_y_at), 2);
    ASSERT_OK(tether_restore_thread(saved));
    t_finalize(rt);
}

/* ---- a shorter switch interval reaches a head already asleep ----------- */

static tether_interp si_interp;

static void *si_waiter(void *arg)
{
    (void)arg;
    tether_gilstate st;
    ASSERT_OK(tether_ensure(si_interp, &st));
    ASSERT_OK(tether_release(st));
    return NULL;
}

/* The head of the queue sleeps until one switch interval after it became
   the head (10 s here).  tether_set_switch_interval to 1 ms must reach it
   where it sleeps: it is woken to start over with the new interval, not
   left to sleep out the old one (a waiter would then wait up to 10 s for
   a turn the new interval promises after 1 ms).  The holder neither drops
   nor checkpoints until the head's sleep has ended, so only the interval
   change can end it early: "woken", not "timed out".  (Before the fix the
   case took 10 s and saw "timed out".) */
TEST(shorter_interval_wakes_a_sleeping_head)
{
    tether_runtime rt = t_runtime_interval(10000000);
    si_interp = t_main_interp(rt);
    unsigned long sleeps = dctl_passes("gil.take.slow.sleep");
    pthread_t w = t_pthread(si_waiter, NULL);
    dctl_wait_passes("gil.take.slow.sleep", sleeps); /* asleep at the head */
    unsigned long wakes = dctl_passes("gil.take.slow.woken");
    unsigned long timeouts = dctl_passes("gil.take.slow.timed_out");
    ASSERT_OK(tether_set_switch_interval(rt, 1000));
    int which = dctl_wait_either("gil.take.slow.woken", wakes,
                                 "gil.take.slow.timed_out", timeouts);
    ASSERT_EQ(which, 0);
    /* Dropping the GIL lets the waiter in. */
    t_join_foreign(&w, 1);
    t_finalize(rt);
}

/* ---- finalize while the head watches the word --------------------------- */

static tether_interp fw_interp;
static atomic_int fw_rc[2];

/* Releases and re-takes the GIL in a loop until finalize refuses it. */
static void *fw_looper(void *arg)
{
    int me = (int)(intptr_t)arg;
    tether_gilstate st;
    int rc = tether_ensure(fw_interp, &st);
    while (rc == TETHER_OK) {
        tether_tstate saved;
        ASSERT_OK(tether_save_thread(&saved));
        rc = tether_restore_thread(saved);
    }
    atomic_store(&fw_rc[me], rc);
    (void)tether_release(st);
    return NULL;
}

/* Two threads release and re-take the GIL in a loop until one of them, the
   head of the queue, watches the word (q_spin: parked there, outside the
   GIL mutex, without a pin, its node in the queue, not woken by drops nor
   by gil_wake_all).  Finalize runs in that window and must return (its
   barrier takes the GIL past the watcher); the watcher, let go, must
   notice the finalize and leave with TETHER_EFINALIZING, not take the GIL
   nor wait for a wake-up that finalize did not send.  (Mutant: q_spin
   goes back to sleep instead of returning under the mutex -- the watcher
   then waits for a drop that never comes, and the case hangs.) */
TEST(finalize_while_the_head_watches)
{
    tether_runtime rt = t_runtime_interval(10000000);
    fw_interp = t_main_interp(rt);
    tether_tstate main_saved;
    ASSERT_OK(tether_save_thread(&main_saved));
    atomic_store(&fw_rc[0], 1000);
    atomic_store(&fw_rc[1], 1000);
    dctl_arm("gil.take.slow.spin", 1, DCTL_PARK, 0);
    pthread_t t[2] = {t_pthread(fw_looper, (void *)0),
                      t_pthread(fw_looper, (void *)1)};
    dctl_wait_parked("gil.take.slow.spin"); /* a looper watches */
    ASSERT_OK(tether_runtime_finalize(rt, SECONDS(60)));
    dctl_release("gil.take.slow.spin");
    t_pthread_join(t[0]);
    t_pthread_join(t[1]);
    ASSERT_EQ(atomic_load(&fw_rc[0]), TETHER_EFINALIZING);
    ASSERT_EQ(atomic_load(&fw_rc[1]), TETHER_EFINALIZING);
}

/* ---- a head that leaves the queue wakes the next ------------------------ */

static tether_interp nh_interp;
static atomic_int nh_second_took;

/* The first waiter: once it has the GIL it runs "guest code" (checkpoints)
   until the second waiter got the GIL. */
static void *nh_first(void *arg)
{
    (void)arg;
    tether_gilstate st;
    ASSERT_OK(tether_ensure(nh_interp, &st));
    while (!atomic_load(&nh_second_took))
        ASSERT_OK(tether_checkpoint());
    ASSERT_OK(tether_release(st));
    return NULL;
}

static void *nh_second(void *arg)
{
    (void)arg;
    tether_gilstate st;
    ASSERT_OK(tether_ensure(nh_interp, &st));
    atomic_store(&nh_second_took, 1);
    ASSERT_OK(tether_release(st));
    return NULL;
}

/* Two waiters queue on the held GIL, the second one asleep without a
   deadline (only the head times its sleep).  The holder drops; the first
   takes the GIL and keeps it, checkpointing.  Leaving the head, it must
   wake the second, which then times its interval at the head and gets a
   turn: the first's checkpoints hand it over.  Nobody else drops the GIL,
   so a new head left asleep is never woken, and the case hangs (mutant
   GH5). */
TEST(leaving_head_wakes_the_next)
{
    /* 10 s while they queue: the head's sleep does not time out, so the
       second pass of the sleep point is the second waiter's. */
    tether_runtime rt = t_runtime_interval(10000000);
    nh_interp = t_main_interp(rt);
    atomic_store(&nh_second_took, 0);
    unsigned long sleeps = dctl_passes("gil.take.slow.sleep");
    pthread_t a = t_pthread(nh_first, NULL);
    dctl_wait_passes("gil.take.slow.sleep", sleeps); /* the head */
    sleeps = dctl_passes("gil.take.slow.sleep");
    pthread_t b = t_pthread(nh_second, NULL);
    dctl_wait_passes("gil.take.slow.sleep", sleeps); /* behind it */
    ASSERT_OK(tether_set_switch_interval(rt, 1000));
    pthread_t both[2] = {a, b};
    t_join_foreign(both, 2); /* drops the GIL: the head takes it */
    ASSERT_EQ(atomic_load(&nh_second_took), 1);
    t_finalize(rt);
}

/* W and X of the next two cases: each releases and re-takes the GIL in a
   loop until `*phase` is set, counting itself in `*looping` once in the
   loop.  The first to run after that is X: it
   returns 1, holding the GIL (`*st`).  The other, W (parked watching the
   word meanwhile), notes in `*other_took` that it had the GIL, releases
   it and returns 0. */
static int looper_role(tether_interp interp, atomic_int *looping,
                       atomic_int *phase, atomic_int *x_role,
                       atomic_int *other_took, tether_gilstate *st)
{
    ASSERT_OK(tether_ensure(interp, st));
    atomic_fetch_add(looping, 1);
    for (;;) {
        tether_tstate saved;
        ASSERT_OK(tether_save_thread(&saved));
        ASSERT_OK(tether_restore_thread(saved));
        if (!atomic_load(phase))
            continue;
        int zero = 0;
        if (atomic_compare_exchange_strong(x_role, &zero, 1))
            return 1;
        atomic_store(other_took, 1);
        ASSERT_OK(tether_release(*st));
        return 0;
    }
}

/* Starts two loopers (looper_role) and parks the first of them to watch
   the word as the head of the queue, W, once both are in their loop: W's
   take is then a restore's, a returner's, which a returner coming later
   queues behind (in its first ensure W would be a plain waiter, which a
   returner passes). */
static void start_loopers(pthread_t l[2], void *(*fn)(void *), atomic_int *looping)
{
    l[0] = t_pthread(fn, NULL);
    l[1] = t_pthread(fn, NULL);
    while (atomic_load(looping) < 2)
        sched_yield();
    dctl_arm("gil.take.slow.spin", 1, DCTL_PARK, 0);
    dctl_wait_parked("gil.take.slow.spin");
}

/* ---- a forced switch behind a watching head hands the GIL on ----------- */

static tether_interp fs_interp;
static atomic_int fs_looping, fs_phase, fs_x_role, fs_x_saved, fs_go_x, fs_x_holding,
    fs_r_saved, fs_go_r, fs_r_asleep, fs_other_took, fs_x_saw_other;

/* W and X: release and re-take the GIL in a loop (returners).  Once the
   case moves to phase 1, the one that runs (X: the other, W, is parked
   watching) drops the GIL and waits; let go, it takes it back, waits
   until R sleeps behind W (without its pin: R's drop request is then
   all X's checkpoint can see of it), checkpoints until its checkpoint
   has yielded, and records whether
   another thread had the GIL in between.  W, back from its watch, notes
   that it took the GIL and leaves. */
static void *fs_looper(void *arg)
{
    (void)arg;
    tether_gilstate st;
    if (!looper_role(fs_interp, &fs_looping, &fs_phase, &fs_x_role, &fs_other_took,
                     &st))
        return NULL; /* W */
    tether_tstate saved;
    ASSERT_OK(tether_save_thread(&saved));
    atomic_store(&fs_x_saved, 1);
    while (!atomic_load(&fs_go_x))
        sched_yield();
    ASSERT_OK(tether_restore_thread(saved));
    atomic_store(&fs_x_holding, 1);
    while (!atomic_load(&fs_r_asleep))
        sched_yield();
    unsigned long yields = dctl_passes("gil.yield.dropped");
    while (dctl_passes("gil.yield.dropped") == yields)
        ASSERT_OK(tether_checkpoint());
    atomic_store(&fs_x_saw_other, atomic_load(&fs_other_took));
    ASSERT_OK(tether_release(st));
    return NULL;
}

/* R: takes the GIL and drops it just before X takes it, then comes back
   while X holds it: exactly one acquisition since it left, so it asks X
   to drop at once (the convoy rule) and queues behind W. */
static void *fs_returner(void *arg)
{
    (void)arg;
    tether_gilstate st;
    tether_tstate saved;
    ASSERT_OK(tether_ensure(fs_interp, &st));
    ASSERT_OK(tether_save_thread(&saved));
    atomic_store(&fs_r_saved, 1);
    while (!atomic_load(&fs_go_r))
        sched_yield();
    ASSERT_OK(tether_restore_thread(saved));
    atomic_store(&fs_other_took, 1);
    ASSERT_OK(tether_release(st));
    return NULL;
}

/* The head of the queue, W, watches the word (parked at
   gil.take.slow.spin: no pin).  X holds the GIL, CPU-bound; R, back from
   a blocking call, posts a drop request to X and queues behind W (both
   returners), where it sleeps away from the head.  X's checkpoint answers
   the request with a forced switch: it must not take the GIL straight
   back while a thread still waits for it (the essay, "Forced switching"),
   so it waits (gil.yield.waiting) and comes back only after W or R had
   the GIL.  Seen failing: R sleeps
   without a pin and W watches without one, so drop_locked finds no pin
   but X's own, does not wait, and X's fast CAS takes the GIL back at
   once; R then waits for W's turn, a whole switch interval, though it
   asked X to drop. */
TEST(forced_switch_behind_a_watching_head_waits_for_the_queue)
{
    tether_runtime rt = t_runtime_interval(10000000); /* 10 s */
    fs_interp = t_main_interp(rt);
    tether_tstate main_saved;
    ASSERT_OK(tether_save_thread(&main_saved));
    pthread_t l[2];
    start_loopers(l, fs_looper, &fs_looping); /* W watches */
    atomic_store(&fs_phase, 1);
    while (!atomic_load(&fs_x_saved))
        sched_yield();
    pthread_t r = t_pthread(fs_returner, NULL);
    while (!atomic_load(&fs_r_saved))
        sched_yield();
    atomic_store(&fs_go_x, 1);
    while (!atomic_load(&fs_x_holding))
        sched_yield();
    unsigned long sleeps = dctl_passes("gil.take.slow.sleep");
    atomic_store(&fs_go_r, 1);
    /* R passes the point holding the GIL's mutex, and unpins and sleeps
       before it lets go of it: X's forced switch, which takes the mutex,
       finds R asleep without a pin. */
    dctl_wait_passes("gil.take.slow.sleep", sleeps);
    unsigned long waits = dctl_passes("gil.yield.waiting"),
                  drops = dctl_passes("gil.yield.dropped");
    atomic_store(&fs_r_asleep, 1);
    /* While W is parked nobody can take the GIL: X's forced switch either
       waits for that (right) or comes back (wrong), whichever it does
       first is final. */
    while (dctl_passes("gil.yield.waiting") == waits &&
           dctl_passes("gil.yield.dropped") == drops)
        sched_yield();
    ASSERT(dctl_passes("gil.yield.dropped") == drops);
    dctl_release("gil.take.slow.spin");
    t_pthread_join(r);
    t_pthread_join(l[0]);
    t_pthread_join(l[1]);
    ASSERT_EQ(atomic_load(&fs_x_saw_other), 1);
    ASSERT_OK(tether_restore_thread(main_saved));
    t_finalize(rt);
}

/* ---- tether_sleep(0) yields to a waiter asleep behind a watching head --- */

static tether_interp sz_interp;
static atomic_int sz_looping, sz_phase, sz_x_role, sz_x_holding, sz_go_x, sz_other_took,
    sz_x_back, sz_x_saw_other;

/* W and X release and re-take the GIL in a loop until phase 1; then the
   one that runs (X; W is parked watching) keeps the GIL and, told to,
   calls tether_sleep(0), recording whether another thread had the GIL
   before it came back.  W, back from its watch, notes that it took the
   GIL and leaves. */
static void *sz_looper(void *arg)
{
    (void)arg;
    tether_gilstate st;
    if (!looper_role(sz_interp, &sz_looping, &sz_phase, &sz_x_role, &sz_other_took,
                     &st))
        return NULL; /* W */
    atomic_store(&sz_x_holding, 1);
    while (!atomic_load(&sz_go_x))
        sched_yield();
    ASSERT_OK(tether_sleep(0));
    atomic_store(&sz_x_saw_other, atomic_load(&sz_other_took));
    atomic_store(&sz_x_back, 1);
    ASSERT_OK(tether_release(st));
    return NULL;
}

/* N: a plain waiter, queued behind W. */
static void *sz_waiter(void *arg)
{
    (void)arg;
    tether_gilstate st;
    ASSERT_OK(tether_ensure(sz_interp, &st));
    atomic_store(&sz_other_took, 1);
    ASSERT_OK(tether_release(st));
    return NULL;
}

/* The two cases below: the main thread detached, W watching (parked),
   X holding the GIL, waiting for sz_go_x. */
static tether_runtime sz_begin(tether_tstate *main_saved, pthread_t l[2])
{
    tether_runtime rt = t_runtime_interval(10000000); /* 10 s */
    sz_interp = t_main_interp(rt);
    ASSERT_OK(tether_save_thread(main_saved));
    start_loopers(l, sz_looper, &sz_looping); /* W watches */
    atomic_store(&sz_phase, 1);
    while (!atomic_load(&sz_x_holding))
        sched_yield();
    return rt;
}

/* Lets X call tether_sleep(0), and gives a wrong X 200 ms to come back. */
static void sz_go_x_and_wait(void)
{
    atomic_store(&sz_go_x, 1);
    for (int i = 0; i < 200 && !atomic_load(&sz_x_back); i++) {
        struct timespec d = {0, 1000 * 1000};
        nanosleep(&d, NULL);
    }
}

/* Lets W go, joins N, W and X, and ends the case. */
static void sz_end(tether_runtime rt, tether_tstate main_saved,
                   pthread_t n, pthread_t l[2])
{
    dctl_release("gil.take.slow.spin");
    t_pthread_join(n);
    t_pthread_join(l[0]);
    t_pthread_join(l[1]);
    ASSERT_EQ(atomic_load(&sz_x_saw_other), 1);
    ASSERT_OK(tether_restore_thread(main_saved));
    t_finalize(rt);
}

/* The head W watches the word (parked at gil.take.slow.spin, no pin); X
   holds the GIL; N waits, asleep behind W.  X's tether_sleep(0) must
   yield: another thread waits for the GIL (docs/lua.md: "sleep(0) hands
   the GIL to a thread waiting for it"; threading-model.md: the forced
   switch's move, made voluntarily "when another thread waits"), so X
   comes back only after W or N had the GIL.  Seen failing: N sleeps
   without a pin and W watches without one, so gil_contended reads no pin
   and tether_sleep(0) returns without dropping the GIL. */
TEST(sleep0_yields_to_a_waiter_behind_a_watching_head)
{
    tether_tstate main_saved;
    pthread_t l[2];
    tether_runtime rt = sz_begin(&main_saved, l);
    unsigned long sleeps = dctl_passes("gil.take.slow.sleep");
    pthread_t n = t_pthread(sz_waiter, NULL);
    dctl_wait_passes("gil.take.slow.sleep", sleeps); /* N asleep behind W */
    sz_go_x_and_wait(); /* X must stay in its switch while W is parked */
    sz_end(rt, main_saved, n, l);
}

/* As above, but X's tether_sleep(0) comes while N, queued behind W, is
   between its pin and its sleep (parked at gil.take.slow.unpin, holding
   the GIL mutex): N must count for gil_contended at every moment of that
   step, so X yields (and waits for the mutex) instead of coming back.
   Mutant GH13: N lets go of its pin before it is counted as a sleeper, and
   in between gil_contended reads neither (what made the case above fail
   once under TSan, whose X came in that window). */
TEST(sleep0_yields_to_a_waiter_on_its_way_to_sleep)
{
    tether_tstate main_saved;
    pthread_t l[2];
    tether_runtime rt = sz_begin(&main_saved, l);
    dctl_arm("gil.take.slow.unpin", 1, DCTL_PARK, 0);
    pthread_t n = t_pthread(sz_waiter, NULL);
    dctl_wait_parked("gil.take.slow.unpin");
    sz_go_x_and_wait();
    int back_early = atomic_load(&sz_x_back);
    dctl_release("gil.take.slow.unpin");
    ASSERT_EQ(back_early, 0);
    sz_end(rt, main_saved, n, l);
}

/* ---- an urgent returner awaits the drop it asked for ------------------ */

/* Sets up the convoy rule's case for one of tether's waits: R waits on an
   event (dropping the GIL), the main thread takes the GIL (one
   acquisition since R left) and sets the event: R comes back while the
   main thread holds the GIL, posts a drop request and, at the head of the
   queue, waits for the drop awake (gil.c, q_await).  The main thread
   holds the GIL on entry and on return; R is inside its wait. */
static tether_interp aw_interp;
static tether_event aw_event;

static void *aw_returner(void *arg)
{
    (void)arg;
    tether_gilstate st;
    ASSERT_OK(tether_ensure(aw_interp, &st));
    ASSERT_OK(tether_event_wait(aw_event, -1));
    s1_took('R'); /* the log of S1, whose waiter is the newcomer */
    ASSERT_OK(tether_release(st));
    return NULL;
}

static pthread_t aw_start_returner_after(tether_runtime rt, int retakes);
static pthread_t aw_start_returner(tether_runtime rt)
{
    return aw_start_returner_after(rt, 0);
}

/* The same, the main thread dropping and taking the GIL `retakes` more
   times before it sets the event: R comes back 1 + retakes acquisitions
   after it left. */
static pthread_t aw_start_returner_after(tether_runtime rt, int retakes)
{
    s1_interp = aw_interp = t_main_interp(rt);
    atomic_store(&s1_len, 0);
    ASSERT_OK(tether_event_new(&aw_event));
    tether_tstate main_saved;
    ASSERT_OK(tether_save_thread(&main_saved));
    unsigned long waits = dctl_passes("wait.registered");
    pthread_t r = t_pthread(aw_returner, NULL);
    dctl_wait_passes("wait.registered", waits); /* R is dropping the GIL */
    ASSERT_OK(tether_restore_thread(main_saved)); /* after R's drop */
    for (int i = 0; i < retakes; i++) {
        ASSERT_OK(tether_save_thread(&main_saved));
        ASSERT_OK(tether_restore_thread(main_saved));
    }
    ASSERT_OK(tether_event_set(aw_event));
    return r;
}

/* The main thread, holding the GIL, checkpoints as a CPU-bound holder
   does until R (aw_returner) has taken the GIL, for at most 5 s (a bound
   on a drop request that never comes, not on speed: the callers' switch
   interval is 10 s); then lets R finish, checks that it took the GIL in
   that loop, and ends the case. */
static void aw_checkpoint_until_r_took(pthread_t r, tether_runtime rt)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        ASSERT_OK(tether_checkpoint());
        clock_gettime(CLOCK_MONOTONIC, &t1);
    } while (atomic_load(&s1_len) == 0 && t1.tv_sec - t0.tv_sec < 5);
    int asked = atomic_load(&s1_len) == 1;
    tether_tstate main_saved;
    ASSERT_OK(tether_save_thread(&main_saved));
    t_pthread_join(r);
    ASSERT(asked);
    ASSERT_OK(tether_restore_thread(main_saved));
    ASSERT_OK(tether_event_free(aw_event));
    t_finalize(rt);
}

static int one_cpu(void)
{
    if (sysconf(_SC_NPROCESSORS_ONLN) > 1)
        return 0;
    fprintf(stderr, "  (one CPU: a returner never awaits; nothing to check)\n");
    return 1;
}

/* R awaits the drop awake (parked at gil.take.slow.await: the mutex let
   go, R pinned).  The main thread's drop frees the GIL and marks R on its
   way (its wake-up finds R awake); a newcomer C (S1's waiter) that looks
   now must leave the GIL to R, a returner on its way to it
   (kept_for_head), and queue behind: R takes it first.  Mutant GH10: R
   lets go of its pin while it waits, so the drop leaves no pin and C's
   fast CAS takes the GIL from under R. */
TEST(awaiting_returner_keeps_a_freed_gil)
{
    if (one_cpu())
        return;
    tether_runtime rt = t_runtime_interval(10000000); /* 10 s: no turns */
    dctl_arm("gil.take.slow.await", 1, DCTL_PARK, 0);
    pthread_t r = aw_start_returner(rt);
    dctl_wait_parked("gil.take.slow.await");
    tether_tstate main_saved;
    ASSERT_OK(tether_save_thread(&main_saved)); /* answers R's request */
    unsigned long sleeps = dctl_passes("gil.take.slow.sleep");
    static const char c = 'C';
    pthread_t tc = t_pthread(s1_waiter, (void *)&c);
    /* C either queued (about to sleep: correct) or took the GIL. */
    int took = dctl_wait_either("gil.take.slow.sleep", sleeps, "test.c.took", 0);
    dctl_release("gil.take.slow.await");
    t_pthread_join(r);
    t_pthread_join(tc);
    ASSERT_EQ(took, 0);
    ASSERT_EQ(atomic_load(&s1_len), 2);
    ASSERT_EQ(s1_log[0], 'R');
    ASSERT_EQ(s1_log[1], 'C');
    ASSERT_OK(tether_restore_thread(main_saved));
    ASSERT_OK(tether_event_free(aw_event));
    t_finalize(rt);
}

/* A drop wakes R while it awaits (parked at gil.take.slow.await; the
   wake-up finds it awake), and the main thread, back from its own save
   (a returner, which may take a free GIL from under a returner on its
   way), takes the GIL first.  R's wait then ends with the GIL held, and
   R sleeps at the head of the queue; the main thread's next drop must
   wake it.  With a 10 s switch interval R has the GIL long before its
   interval could run out (5 s: a bound on a lost wake-up, not on speed).
   Mutant GH11: R keeps the `signalled` of the wake-up that found it
   awake, so the drop sends it none (q_wake: one is on its way) and R
   sleeps out its 10 s. */
TEST(returner_whose_await_ended_in_vain_is_woken_by_the_next_drop)
{
    if (one_cpu())
        return;
    tether_runtime rt = t_runtime_interval(10000000); /* 10 s */
    dctl_arm("gil.take.slow.await", 1, DCTL_PARK, 0);
    pthread_t r = aw_start_returner(rt);
    dctl_wait_parked("gil.take.slow.await");
    tether_tstate main_saved;
    ASSERT_OK(tether_save_thread(&main_saved)); /* wakes R, awake */
    ASSERT_OK(tether_restore_thread(main_saved)); /* and takes it back */
    unsigned long sleeps = dctl_passes("gil.take.slow.sleep");
    dctl_release("gil.take.slow.await");
    dctl_wait_passes("gil.take.slow.sleep", sleeps); /* R goes to sleep */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ASSERT_OK(tether_save_thread(&main_saved));
    t_pthread_join(r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ASSERT(t1.tv_sec - t0.tv_sec < 5);
    ASSERT_EQ(atomic_load(&s1_len), 1);
    ASSERT_OK(tether_restore_thread(main_saved));
    ASSERT_OK(tether_event_free(aw_event));
    t_finalize(rt);
}

/* R's first look at the GIL finds it taken by a thread (H) whose fast CAS
   has not yet published it (parked at gil.take.fast.after_cas: `holder`
   still NULL), so its drop request goes nowhere and it sleeps at the head
   of the queue; each later request goes nowhere too, until R's interval
   at the head runs out and it takes its turn (`handoff`).  H then holds
   the GIL as a plain holder, which wakes nobody, and R, which has seen no
   acquisition since it came back, posts its request to H at last (the
   held-holder rule, 50 us later: gil.request_drop.posted): H's next drop
   hands the GIL straight to R (hand_over), leaving the word locked.  An
   await then watches for a free word that never comes: R spins its whole
   AWAIT_NS with the GIL already its own, and nobody runs.  Like a head
   whose turn it is (q_spin is not for it either), R must sleep and be
   woken by the hand-over instead.  On 4cca82f R awaits; mutant GH12. */
static t_sem hw_go;

static void *hw_holder(void *arg)
{
    (void)arg;
    tether_gilstate st;
    ASSERT_OK(tether_ensure(aw_interp, &st)); /* the fast CAS, parked */
    t_sem_wait(&hw_go);
    ASSERT_OK(tether_release(st)); /* hands the GIL over to R */
    return NULL;
}

TEST(returner_whose_turn_it_is_does_not_await)
{
    if (one_cpu())
        return;
    tether_runtime rt = t_runtime_interval(20000); /* 20 ms */
    t_sem_init(&hw_go);
    s1_interp = aw_interp = t_main_interp(rt);
    atomic_store(&s1_len, 0);
    ASSERT_OK(tether_event_new(&aw_event));
    tether_tstate main_saved;
    ASSERT_OK(tether_save_thread(&main_saved));
    unsigned long waits = dctl_passes("wait.registered");
    pthread_t r = t_pthread(aw_returner, NULL);
    dctl_wait_passes("wait.registered", waits); /* R is dropping the GIL */
    /* One acquisition since R left (the convoy rule's case), then a fast
       drop that clears `holder`. */
    ASSERT_OK(tether_restore_thread(main_saved));
    ASSERT_OK(tether_save_thread(&main_saved));
    dctl_arm("gil.take.fast.after_cas", 1, DCTL_PARK, 0);
    pthread_t h = t_pthread(hw_holder, NULL);
    dctl_wait_parked("gil.take.fast.after_cas");
    unsigned long sleeps = dctl_passes("gil.take.slow.sleep");
    ASSERT_OK(tether_event_set(aw_event));
    dctl_wait_passes("gil.take.slow.sleep", sleeps); /* R asleep, unasked */
    dctl_wait_passes("gil.take.slow.turn", dctl_passes("gil.take.slow.turn"));
    dctl_arm("gil.request_drop.posted", 1, DCTL_PARK, 0);
    dctl_release("gil.take.fast.after_cas"); /* H holds; R is not woken */
    dctl_wait_parked("gil.request_drop.posted"); /* R asked, its turn taken */
    sleeps = dctl_passes("gil.take.slow.sleep");
    unsigned long awaits = dctl_passes("gil.take.slow.await");
    dctl_arm("gil.take.slow.await", 1, DCTL_PARK, 0);
    dctl_release("gil.request_drop.posted");
    /* R either sleeps (correct) or awaits. */
    int which = dctl_wait_either("gil.take.slow.await", awaits,
                                 "gil.take.slow.sleep", sleeps);
    dctl_release("gil.take.slow.await");
    t_sem_post(&hw_go);
    t_pthread_join(h);
    t_pthread_join(r);
    ASSERT_EQ(which, 1);
    ASSERT_EQ(atomic_load(&s1_len), 1);
    ASSERT_OK(tether_restore_thread(main_saved));
    ASSERT_OK(tether_event_free(aw_event));
    t_sem_destroy(&hw_go);
    t_finalize(rt);
}

/* R awaits the drop it asked for (parked at gil.take.slow.await) from a
   holder H that keeps the GIL without checkpointing; finalize runs on a
   third thread meanwhile, and its barrier waits for H.  R, let go, must
   leave with TETHER_EFINALIZING while H still holds the GIL (its await
   notices the flag; it does not wait for H's drop). */
static t_sem fa_go;
static atomic_int fa_rc = 1000, fa_fin_rc = 1000;
static tether_runtime fa_rt;

static void *fa_returner(void *arg)
{
    (void)arg;
    tether_gilstate st;
    ASSERT_OK(tether_ensure(aw_interp, &st));
    atomic_store(&fa_rc, tether_event_wait(aw_event, -1));
    (void)tether_release(st);
    return NULL;
}

static void *fa_holder(void *arg)
{
    (void)arg;
    tether_gilstate st;
    ASSERT_OK(tether_ensure(aw_interp, &st));
    dctl_note("test.h.took");
    t_sem_wait(&fa_go);
    (void)tether_release(st);
    return NULL;
}

static void *fa_finalizer(void *arg)
{
    (void)arg;
    atomic_store(&fa_fin_rc, tether_runtime_finalize(fa_rt, SECONDS(60)));
    return NULL;
}

TEST(finalize_while_a_returner_awaits)
{
    if (one_cpu())
        return;
    fa_rt = t_runtime_interval(10000000);
    t_sem_init(&fa_go);
    aw_interp = t_main_interp(fa_rt);
    ASSERT_OK(tether_event_new(&aw_event));
    tether_tstate main_saved;
    ASSERT_OK(tether_save_thread(&main_saved));
    (void)main_saved;
    unsigned long waits = dctl_passes("wait.registered");
    pthread_t r = t_pthread(fa_returner, NULL);
    dctl_wait_passes("wait.registered", waits);
    unsigned long took = dctl_passes("test.h.took");
    pthread_t h = t_pthread(fa_holder, NULL);
    dctl_wait_passes("test.h.took", took);
    dctl_arm("gil.take.slow.await", 1, DCTL_PARK, 0);
    ASSERT_OK(tether_event_set(aw_event));
    dctl_wait_parked("gil.take.slow.await");
    unsigned long marked = dctl_passes("finalize.marked");
    pthread_t f = t_pthread(fa_finalizer, NULL);
    dctl_wait_passes("finalize.marked", marked);
    dctl_release("gil.take.slow.await");
    t_pthread_join(r); /* H still holds the GIL */
    ASSERT_EQ(atomic_load(&fa_rc), TETHER_EFINALIZING);
    t_sem_post(&fa_go);
    t_pthread_join(h);
    t_pthread_join(f);
    ASSERT_OK(atomic_load(&fa_fin_rc));
    t_sem_destroy(&fa_go);
}

/* R comes back from its wait after two acquisitions (the main thread
   took the GIL, dropped it and took it again while R waited), so the
   convoy rule does not ask at once: the GIL changed hands while R was
   away.  The main thread then keeps the GIL and checkpoints, as a
   CPU-bound holder does.  R, at the head of the queue, must ask it to
   drop once it has kept the GIL for SPIN_HELD_NS without a change of
   hands, not wait for its turn after a whole switch interval (10 s here:
   the loop's 5 s bound catches a request that never comes; it is no bound
   on speed).  Mutant GH14: R waits for its turn. */
TEST(returner_asks_a_holder_that_took_the_gil_while_it_was_away)
{
    tether_runtime rt = t_runtime_interval(10000000); /* 10 s */
    pthread_t r = aw_start_returner_after(rt, 1); /* two acquisitions */
    aw_checkpoint_until_r_took(r, rt);
}

/* R comes back while the main thread holds the GIL, one acquisition
   after it left, so the convoy rule posts its request at once, and R
   awaits the drop (parked at gil.take.slow.await).  The main thread
   answers with a plain drop (its save, which wakes R, awake) and, back
   from that save (a returner, which may take a free GIL from under a
   returner on its way), takes the GIL again before R looks: R's request
   went to a holder that is gone, and R sleeps at the head of the queue.
   The main thread then keeps the GIL and checkpoints, as a CPU-bound
   holder does.  Nobody takes the GIL any more, so R must ask the holder
   it has now, as the held-holder rule asks one that took the GIL while
   R was away, not wait for its turn after a whole switch interval (10 s:
   the loop's 5 s bound catches a request that never comes; it is no
   bound on speed).  On 8f5bac8 R has `requested` from its first
   request and never asks again. */
TEST(returner_asks_again_a_holder_that_took_the_gil_past_its_request)
{
    if (one_cpu())
        return;
    tether_runtime rt = t_runtime_interval(10000000); /* 10 s */
    dctl_arm("gil.take.slow.await", 1, DCTL_PARK, 0);
    pthread_t r = aw_start_returner(rt);
    dctl_wait_parked("gil.take.slow.await"); /* R asked the main thread */
    tether_tstate main_saved;
    ASSERT_OK(tether_save_thread(&main_saved)); /* answers; wakes R, awake */
    ASSERT_OK(tether_restore_thread(main_saved)); /* and takes it back */
    unsigned long sleeps = dctl_passes("gil.take.slow.sleep");
    dctl_release("gil.take.slow.await");
    dctl_wait_passes("gil.take.slow.sleep", sleeps); /* R goes to sleep */
    aw_checkpoint_until_r_took(r, rt);
}

RUNNER_MAIN(TEST_ENTRY_T(s1_pinned_gil_changes_hands_under_the_mutex, 30),
            TEST_ENTRY_T(s2_thread_alive_until_its_state_is_deleted, 30),
            TEST_ENTRY_T(s3_thread_registered_when_start_returns, 30),
            TEST_ENTRY_T(served_drop_request_is_cleared, 30),
            TEST_ENTRY_T(drop_signals_the_waiter, 30),
            TEST_ENTRY_T(turn_hands_the_gil_over, 30),
            TEST_ENTRY_T(raise_then_defer_holds_until_allow, 30),
            TEST_ENTRY_T(raise_wakes_a_sleeping_wait, 30),
            TEST_ENTRY_T(interp_created_during_finalize, 30),
            TEST_ENTRY_T(second_destroy_is_refused, 30),
            TEST_ENTRY_T(finalize_during_destroy_closes_the_interp, 30),
            TEST_ENTRY_T(event_set_and_clear_before_the_waiter_blocks, 30),
            TEST_ENTRY_T(forced_switch_leaves_a_woken_head_its_turn, 120),
            TEST_ENTRY(new_head_is_pinned_before_it_wakes),
            TEST_ENTRY_T(shorter_interval_wakes_a_sleeping_head, 60),
            TEST_ENTRY_T(finalize_while_the_head_watches, 60),
            TEST_ENTRY_T(leaving_head_wakes_the_next, 60),
            TEST_ENTRY_T(forced_switch_behind_a_watching_head_waits_for_the_queue, 60),
            TEST_ENTRY_T(sleep0_yields_to_a_waiter_behind_a_watching_head, 60),
            TEST_ENTRY_T(sleep0_yields_to_a_waiter_on_its_way_to_sleep, 60),
            TEST_ENTRY_T(awaiting_returner_keeps_a_freed_gil, 60),
            TEST_ENTRY_T(returner_whose_await_ended_in_vain_is_woken_by_the_next_drop, 60),
            TEST_ENTRY_T(returner_whose_turn_it_is_does_not_await, 60),
            TEST_ENTRY_T(finalize_while_a_returner_awaits, 60),
            TEST_ENTRY_T(returner_asks_a_holder_that_took_the_gil_while_it_was_away, 60),
            TEST_ENTRY_T(returner_asks_again_a_holder_that_took_the_gil_past_its_request, 60))
