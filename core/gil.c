/*
 * gil.c - the global interpreter lock.
 *
 * Notes on the implementation
 * ===========================
 *
 * What it guarantees.  At most one thread holds a GIL at a time; a thread
 * that waits gets it within about one switch interval as long as the holder
 * keeps calling tether_checkpoint; a thread coming back from a blocking
 * call does not queue behind a CPU-bound holder for a whole interval.
 *
 * The state machine.  A GIL is one atomic word, a mutex, a queue of
 * waiters (each with its own condition variable) and one condition
 * variable for forced switching:
 *
 *     word = locked (bit 0) | pins << 1
 *
 * A "pin" is a thread inside the slow path: a waiter (except one asleep
 * behind the head of the queue, and the head while it watches the word:
 * see below), a holder doing a forced switch, or a thread that needs to
 * look at the holder (to post a drop request or an asynchronous
 * exception).  The rule that makes the
 * rest simple: while any pin is present, the GIL changes hands only under
 * the mutex.  So:
 *
 *   - take, fast path: CAS word 0 -> 1.  It succeeds only when the GIL is
 *     free *and* nobody waits, so an uncontended take is one CAS.
 *   - drop, fast path: CAS word 1 -> 0, again only with no pins.
 *   - slow paths: lock the mutex, add a pin, and flip the locked bit with a
 *     CAS that preserves the pins; drops wake the head of the queue.
 *
 * A thread that holds the mutex and has pinned the word can read `holder`
 * and know it stays the holder until the mutex is released: the holder's
 * drop cannot use the fast path (pins are present) and its slow path needs
 * the mutex.  That is how waiters post drop requests to the holder's own
 * thread state, and how asynchronous exceptions reach the binding's hook,
 * without a reference count on thread states.
 *
 * The queue.  A waiter that finds the GIL held queues a node on its own
 * stack and sleeps on the node's own condition variable.  Only the head of
 * the queue sleeps with a timeout (the switch interval); the others sleep
 * until woken, and only ever one at a time: a drop wakes the head (unless
 * a wake-up is already on its way to it), and a head that leaves the queue
 * wakes the new head so that it starts its timed wait.  So the cost of
 * waiting does not grow with the number of waiters: one timer per GIL, one
 * wake-up per drop, one per hand-over.  (CPython, and this GIL before the
 * queue, had every waiter time its own interval: N waiters made N timer
 * wake-ups and N drop requests per interval, and a 1000-thread pool spent
 * its time in the scheduler.)  Waiters get the GIL in queue order, except
 * that a thread in the slow path may take a free GIL (barging, below).
 *
 * Sleeping without a pin.  A waiter that sleeps behind the head takes its
 * pin away first (take_slow): only the head's leaving wakes it (or
 * finalize, or a spurious wake-up), and it looks at nothing while it
 * sleeps.  The head that leaves gives the new head its pin back before it
 * wakes it (q_pin_for, in q_leave), so a woken head is always pinned:
 * from that moment the holder's drops take the slow path and find it, and
 * a thread that finds the GIL free looks under the mutex, where
 * kept_for_head sees the woken head (without it, a drop in that window
 * was a fast CAS that freed the GIL unannounced, and a thread back from a
 * forced switch took it from under the woken head: order_points
 * new_head_is_pinned_before_it_wakes).  Any other waiter pins the word
 * again as it wakes, before it looks.  Where the pins stood for "somebody
 * waits", the sleepers are counted instead (g->unpinned): gil_contended,
 * so that a holder's tether_sleep(0) yields to them, and a forced
 * switch, which waits for someone else to take the GIL as long as
 * anybody waits (without them, it took the GIL straight back from under
 * a returner asleep behind a watching head: order_points
 * forced_switch_behind_a_watching_head_waits_for_the_queue,
 * sleep0_yields_to_a_waiter_behind_a_watching_head).  So the queue costs
 * the holder nothing beyond the head's pin: with the head watching
 * (below), the holder's drops and re-takes take the fast path however
 * many wait (8 threads releasing and re-taking in a loop went from 13 to
 * about 38 million acquisitions a second on two cores, 64 threads from
 * 13 to 33).
 *
 * Watching before sleeping.  A head woken by a drop that freed the GIL
 * (release_locked marks the wake-up `freed`) and that finds the GIL
 * taken again is next to a holder that releases and re-takes it in a loop.
 * (Only such a wake-up: a head woken because the head before it left the
 * queue with the GIL has no reason to think the holder loops, and while
 * it watched, the holder's next drop would not wake it, so that a thread
 * back from a forced switch would take the GIL from under it: see
 * "Barging".)
 * Going back to sleep would make the holder's next drop wake it again (a
 * futex system call on the holder's side for each of its drops, and a
 * wake-up that loses the same race): on two cores, two such threads spent
 * their time there (perf: 0.65 of a CPU in system time, 50 000 context
 * switches a second).  So on a multi-core machine the woken head watches
 * the word from outside the mutex instead (q_spin), reading only, every
 * few hundred cycles, in a state of its own (`watching`: drops do not wake
 * it, and it is not counted as woken, see "Barging"): until its turn
 * (below), for at most 2 ms, and only while the holder
 * keeps releasing and re-taking (the acquisition counter moves at least
 * every 50 us; a holder that keeps the GIL is running guest code or is not
 * running at all, and the head sleeps).  It comes back under the mutex
 * early only for a real release: the GIL free and no acquisition since its
 * last look.  It never fights the holder for the GIL: the holder gives it
 * up at the head's turn.  While it watches it holds no pin (it does not
 * look at the holder), and the waiters asleep behind it hold none either,
 * so the holder's drops and re-takes take the fast path again; its queue
 * node keeps its place, and it pins the word again under the mutex before
 * it looks.
 *
 * Hand-over: the head's turn.  A head that has stood a whole switch
 * interval at the head of the queue without getting the GIL takes its
 * turn: it sets `handoff` to itself, and the next drop, plain or forced,
 * does not release the GIL but hands it over (hand_over: the locked bit
 * stays set, the holder and the counters are the new holder's, its
 * `granted` is set and it is woken).  Nobody can barge in between, so a
 * thread that releases and re-takes the GIL with nothing in between cannot
 * keep it from a waiter for more than an interval (before the hand-over it
 * could, CPython's can: the woken waiter usually lost the race, and with 8
 * such threads the slowest got half of a fair share).  The turns also make
 * the holder's runs long: two threads in such a loop trade the GIL once
 * per interval and otherwise run at the speed of one.  With more looping
 * threads than cores the turn is only the bound: a holder preempted while
 * it holds the GIL outlasts the watching head's 50 us, the head sleeps,
 * and the holder's next drop wakes it to take the free GIL before the
 * re-take.  With 8 such threads on 2 cores most changes of hands were
 * those races (0 to 2 turns per thread in 7 to 19 changes, a loaded
 * machine), which leaves the shares to chance (docs/performance.md,
 * "GIL acquisitions/s and fairness").  A waiter that leaves the queue
 * clears `handoff` if it is its own.
 *
 * Returners first.  A thread coming back from a voluntary wait (a blocking
 * call, a sleep, a tether wait: gil_take with `urgent`) queues behind the
 * other returners but ahead of the threads that were made to yield or
 * arrive fresh, so that an I/O thread does not wait for a round of every
 * CPU-bound thread.  Returners cannot starve the others: the first of the
 * others, once it has stood at the front of its part of the queue for a
 * whole switch interval while returners went ahead, becomes a returner
 * itself (q_push).
 *
 * The drop-request protocol (CPython's, since 3.2).  The head of the queue
 * sleeps until one switch interval after it became the head (or after its
 * last turn).  If by then the GIL is still held and no acquisition happened
 * (the acquisition counter did not move), then besides taking its turn it
 * sets BREAKER_DROP in the holder's eval breaker.  The
 * holder sees it at its next tether_checkpoint (one relaxed load when
 * nothing is pending) and calls gil_yield.  The request lives in the
 * holder's own breaker word, not in the GIL, and every drop clears it: a
 * thread that exits or blocks cannot leave a stale request for the next
 * holder (CPython gh-96387).
 *
 * Forced switching.  A holder that drops because of a request must not
 * take the GIL straight back, or on a multi-core machine it usually wins
 * the race against the waiter it was asked to make way for.  When the
 * request comes with a turn, the drop hands the GIL over and that is
 * that; otherwise (the convoy rule's requests, below) gil_yield drops,
 * then waits on `switch_cond` until the acquisition counter moves (someone
 * else took it), and only then queues again, at the tail: CPU-bound
 * threads take the GIL in turn.  Every slow-path take signals
 * `switch_cond` when a yielder is waiting.  A plain drop (save_thread, a
 * wait) answers a pending request without forcing the switch: gil_drop
 * says why.
 *
 * The convoy effect, and what we do about it.  In CPython a thread that
 * comes back from a short blocking call (an I/O read, a 1 ms sleep) while a
 * CPU-bound thread holds the GIL waits a full switch interval (5 ms) before
 * it even asks for a drop: every short blocking call costs 5 ms of latency.
 * Here a returning thread (gil_take with `urgent`) looks at the acquisition
 * counter it recorded when it dropped: if exactly one acquisition happened
 * since, the current holder took the GIL right after it and has held it
 * ever since, so it is CPU-bound relative to us and the request is posted
 * at once.  If the counter moved more, the GIL is changing hands freely
 * (threads re-taking it in a loop) and the thread waits the normal way
 * (at the front of the queue, as a returner), which keeps acquisition
 * throughput high when everybody releases often.  A thread back from one
 * of tether's waits does not wait out an interval there: at the head,
 * once nobody has taken the GIL for SPIN_HELD_NS (`held_since`: the holder
 * took it while the thread was away and runs guest code since), it posts
 * the request then (before, 1 to 3 sleeps a second of the 1 ms sleeper
 * below waited 1.5-5 ms for the GIL); and so again whenever the GIL has
 * changed hands since it asked (`asked_at`: the holder it asked dropped,
 * and another thread took the GIL before it looked; before, it waited
 * for its turn: order_points
 * returner_asks_again_a_holder_that_took_the_gil_past_its_request).  A
 * thread back from
 * one of tether's waits (a sleep, an event, a lock, a channel, a join),
 * having posted its request, waits for the drop at the head of the queue
 * awake (q_await, at most AWAIT_NS) rather than asleep: the holder
 * answers at its next checkpoint, usually within microseconds, where a
 * sleeper's wake-up from another CPU costs tens of them.  With a thread
 * sleeping 1 ms in a loop next to 8 CPU-bound Lua threads on two vCPUs,
 * the GIL stood free between the holder's drop and the sleeper's take
 * 8 us on average instead of 25 (bench/lua/b_io_priority.lua).
 *
 * Barging.  A thread may take a free GIL even though others wait (under
 * the mutex).  That keeps a thread that releases and re-takes the GIL in a
 * loop fast; fairness comes from the head's turn (hand-over), drop
 * requests and forced switching.  Two exceptions (kept_for_head), both
 * only while the head of the queue has been woken and is on its way
 * (`signalled`; not while it watches the word, which it does only next to
 * a holder that releases and re-takes, until its turn: a looker then
 * barges as past a sleeping head, and the 2-thread loop keeps its fast
 * path; the turn bounds the head's wait either way): a
 * thread that is not a returner does not take the GIL from under a
 * returner at the head; and a thread coming back from a forced switch
 * that answered a drop request does not take it from under any head.  (A
 * tether_sleep(0) that yields unasked still barges: keeping the GIL for
 * the woken head there turned every such yield into a sleep and a
 * wake-up, and a thousand threads yielding in a loop on a loaded machine
 * ran several times slower: rel_stress_threads.)  Without the second
 * rule, a CPU-bound thread that yielded to a returner took the GIL back as
 * soon as the returner dropped it again (it was awake, the woken head not
 * yet), every time: the others' head never got its turn, became a
 * returner after an interval (q_push), and the next returner then waited
 * behind it for a whole interval.  With 8 CPU-bound Lua threads and a
 * thread sleeping 1 ms in a loop, that was 1 sleep in 10 coming back
 * 5-10 ms late (bench/lua/b_io_priority.lua).
 *
 * Finalize.  Once the interpreter of the taking thread is finalizing,
 * gil_take returns TETHER_EFINALIZING instead of the GIL (CPython hangs
 * such threads forever).  gil_wake_all wakes every waiter so they notice;
 * each one that leaves the queue from its head wakes the next.
 * gil_barrier queues as a returner.
 *
 * Where the GIL changes hands.  A take completes in one of three places:
 * the fast CAS of gil_take, the CAS of take_slow (then note_holder, in the
 * same function), or hand_over (called by drop_locked, which does the new
 * holder's note_holder; take_slow then sees `granted`); gil_barrier takes
 * and at once releases.  A drop is the fast CAS of gil_drop, or
 * drop_locked: plain (gil_drop's slow path) or forced (gil_yield), either
 * of which releases the GIL or hands it over.
 *
 * errno.  Nothing here can change errno on success paths that matter to
 * guests: pthread functions return their errors instead of setting errno,
 * and clock_gettime on CLOCK_MONOTONIC does not fail.
 */
#include <unistd.h>

#include "annotate.h"
#include "delay.h"
#include "internal.h"
#include "lockrank.h"
#include "platform.h"
#include "trace.h"

#define W_LOCKED 1u
#define W_PIN 2u

/* ---- for helgrind and DRD (annotate.h) ---------------------------------- */

/* The GIL hands data over through C11 atomics, which these tools cannot
   see; each kind of hand-over is named once here, so the code below reads
   as the essay above. */

/* The word, the holder and the counters are read and written only through
   atomics, concurrently by design (waiters read the word, the holder and
   the counters while the holder writes them). */
static inline void ann_gil_atomics(struct gil *g)
{
    (void)g;
    ann_atomic(g->word);
    ann_atomic(g->holder);
    ann_atomic(g->acquisitions);
    ann_atomic(g->switches);
    ann_atomic(g->forced_drops);
    ann_atomic(g->wait_ns_total);
    ann_atomic(g->wait_ns_max);
    ann_atomic(g->interval_us);
    ann_atomic(g->unpinned);
}

/* The GIL changes hands: the release of W_LOCKED, and the acquire that
   takes it (see gil_take). */
static inline void ann_gil_released(struct gil *g)
{
    (void)g;
    ann_happens_before(&g->word);
}
static inline void ann_gil_acquired(struct gil *g)
{
    (void)g;
    ann_happens_after(&g->word);
}

/* A new holder is published in g->holder, and read by a pinned thread.
   The publication is named &ts->interp: `ts` itself is the address of its
   sleep_mutex, and DRD keeps one object per address. */
static inline void ann_holder_published(struct tstate *ts)
{
    (void)ts;
    ann_happens_before(&ts->interp);
}
static inline void ann_holder_read(struct tstate *ts)
{
    (void)ts;
    ann_happens_after(&ts->interp);
}

static inline void stat_add(_Atomic uint64_t *c, uint64_t n)
{
    /* Written only by the GIL holder: a plain load and store suffice. */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

void gil_init(struct gil *g, uint32_t interval_us)
{
    atomic_init(&g->word, 0);
    atomic_init(&g->holder, NULL);
    atomic_init(&g->acquisitions, 0);
    atomic_init(&g->switches, 0);
    atomic_init(&g->forced_drops, 0);
    atomic_init(&g->wait_ns_total, 0);
    atomic_init(&g->wait_ns_max, 0);
    atomic_init(&g->interval_us, interval_us);
    g->last_holder = NULL;
    g->switch_waiters = 0;
    g->head = g->tail = g->prio_last = g->normal_first = NULL;
    g->normal_since = 0;
    g->handoff = NULL;
    atomic_init(&g->unpinned, 0);
    ann_gil_atomics(g);
    pthread_mutex_init(&g->mutex, NULL);
    plat_cond_init(&g->switch_cond);
}

void gil_destroy(struct gil *g)
{
    pthread_cond_destroy(&g->switch_cond);
    pthread_mutex_destroy(&g->mutex);
}

/* ---- the queue (gil->mutex held throughout) ----------------------------- */

/* A thread waiting in the slow path.  Lives on the waiter's stack from its
   first sleep until it leaves take_slow (or gil_barrier). */
struct gil_waiter {
    pthread_cond_t cond; /* this waiter's own wake-up */
    struct gil_waiter *prev, *next;
    struct tstate *ts; /* the waiting thread's state */
    int prio;      /* in the returners' part of the queue */
    int signalled; /* woken, and not yet back under the mutex to look */
    int watching;  /* the head watches the word outside the mutex (q_spin):
                      awake, not woken, holds no pin */
    int freed;     /* a drop that freed the GIL woke it (release_locked) */
    int pinned;    /* holds a pin on the word: always but while it sleeps
                      away from the head or watches (see "Sleeping without
                      a pin") */
    int granted;   /* the GIL was handed to it (hand_over) */
};

static int64_t interval_ns(struct gil *g)
{
    return (int64_t)atomic_load(&g->interval_us) * 1000;
}

/* Wakes `w` unless a wake-up is already on its way to it, or it is
   awake anyway: watching the word (q_spin), it looks under the mutex
   before it sleeps again. */
static void q_wake(struct gil_waiter *w)
{
    if (w && !w->signalled && !w->watching) {
        w->signalled = 1;
        pthread_cond_signal(&w->cond);
    }
}

/* Links `w` in after `pos` (NULL: at the head). */
static void q_link_after(struct gil *g, struct gil_waiter *pos,
                         struct gil_waiter *w)
{
    w->prev = pos;
    w->next = pos ? pos->next : g->head;
    if (w->next)
        w->next->prev = w;
    else
        g->tail = w;
    if (pos)
        pos->next = w;
    else
        g->head = w;
}

/* Queues `w`: at the tail, or, for a thread coming back from a voluntary
   wait (`prio`), behind the other returners and ahead of everybody else.
   Unless the first of the others has been first for a whole switch
   interval while returners went ahead of it: it then becomes a returner
   itself, so that returners cannot starve the CPU-bound threads. */
static void q_push(struct gil *g, struct gil_waiter *w, int prio)
{
    w->prio = prio;
    w->signalled = 0;
    w->watching = 0;
    w->freed = 0;
    w->pinned = 1; /* every thread in the slow path pinned on entry */
    if (!prio) {
        q_link_after(g, g->tail, w);
        return;
    }
    struct gil_waiter *first = g->prio_last ? g->prio_last->next : g->head;
    if (first) {
        int64_t now = plat_now_ns();
        if (first != g->normal_first) {
            g->normal_first = first;
            g->normal_since = now;
        } else if (now - g->normal_since >= interval_ns(g)) {
            first->prio = 1;
            g->prio_last = first;
            g->normal_first = NULL;
        }
    }
    q_link_after(g, g->prio_last, w);
    g->prio_last = w;
}

/* Gives `w`, asleep away from the head without a pin and now made the
   head, its pin back on its behalf, before it is woken: from this moment
   the holder's drops take the slow path and wake it, and a thread that
   finds the GIL free looks under the mutex, where kept_for_head sees the
   woken head (see "Sleeping without a pin").  A watching head re-pins
   itself (q_spin). */
static void q_pin_for(struct gil *g, struct gil_waiter *w)
{
    if (!w->pinned && !w->watching) {
        atomic_fetch_add(&g->word, W_PIN);
        w->pinned = 1;
        atomic_fetch_sub(&g->unpinned, 1);
    }
}

/* Unlinks `w`.  If it was the head, the new head is woken: it must start
   the timed wait only the head makes (or look at a free GIL). */
static void q_leave(struct gil *g, struct gil_waiter *w)
{
    int was_head = g->head == w;
    if (w == g->prio_last)
        g->prio_last = w->prev; /* returners come first: NULL or one */
    if (w == g->normal_first)
        g->normal_first = NULL;
    if (w->prev)
        w->prev->next = w->next;
    else
        g->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        g->tail = w->prev;
    if (was_head && g->head) {
        q_pin_for(g, g->head);
        q_wake(g->head);
    }
}

/* Sleeps on the waiter's own cond: with a deadline at the head of the
   queue, without one elsewhere.  Returns 1 if a wake-up reached it. */
static int q_sleep(struct gil *g, struct gil_waiter *w, int64_t deadline)
{
    (void)plat_cond_wait(&w->cond, &g->mutex, deadline);
    int woken = w->signalled;
    w->signalled = 0;
    return woken;
}

/* The CPUs online, read once (spinning is for a multi-core machine). */
static int ncpus(void)
{
    static _Atomic int n;
    int v = atomic_load_explicit(&n, memory_order_relaxed);
    if (!v) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        v = c > 0 ? (int)c : 1;
        atomic_store_explicit(&n, v, memory_order_relaxed);
    }
    return v;
}

/* How long the head watches a GIL that its holder keeps for itself
   before it goes to sleep, the most it watches after one wake-up, and how
   many pause instructions lie between two looks (q_spin).  SPIN_HELD_NS
   is also how long a returner at the head lets a holder keep the GIL
   before it asks it to drop (take_slow, `held_since`): either way, a
   holder that kept the GIL that long runs guest code. */
#define SPIN_HELD_NS 50000
#define SPIN_MAX_NS 2000000
#define SPIN_PAUSES 64

/* The head of the queue was woken by a drop that freed the GIL (`freed`;
   not by the head before it leaving the queue with the GIL) and found the
   GIL taken again: the holder releases and re-takes it in a loop.  Sleeping again would
   cost the holder a system call at its next drop (the wake-up), and the
   woken head would lose the same race: on two cores, two contending
   threads spent their time there.  Instead the head watches from outside
   the mutex, reading only (the holder keeps its cache line), until
   `until` (its turn: take_slow), for at most SPIN_MAX_NS, and only as long
   as the holder keeps releasing and re-taking (the acquisition counter
   moves at least every SPIN_HELD_NS: otherwise the holder runs guest code,
   or is not running at all, and the head sleeps).  It goes back under the
   mutex early only for a real release: the GIL free and no acquisition
   since its last look, so that it does not fight a holder that re-takes
   at once (that one gives the GIL up at the head's turn, by hand-over).
   Meanwhile it is `watching`, a state of its own: drops do not wake it
   (q_wake), and it is not asleep, so no wake-up is lost (it looks again
   under the mutex before it sleeps).  It is not `signalled`: it is not on
   its way to a free GIL, so kept_for_head does not keep the GIL for it
   and a thread in the slow path barges as it would past a sleeping head
   (keeping the GIL for a watcher would send every non-returner that
   drops and re-takes to sleep behind it).  And
   it takes its pin away: it does not look at the holder, and as the
   waiters asleep behind it hold none either, the holder's drops and
   re-takes go back to the fast path (the looping threads then run at the
   speed of one between turns).  Its node
   stays in the queue, so it keeps its place; it pins the word again
   under the mutex before it looks.  (Meanwhile gil_contended does not
   count it, so a holder's tether_sleep(0) does not yield to it alone;
   once the holder has kept the GIL for SPIN_HELD_NS the head pins the
   word again and sleeps, and the next tether_sleep(0) yields.  The
   waiters asleep behind it are counted: g->unpinned.) */
static void q_spin(struct gil *g, struct gil_waiter *w, int64_t until)
{
    w->watching = 1;
    w->pinned = 0;
    atomic_fetch_sub(&g->word, W_PIN);
    rank_unlock(&g->mutex, RANK_GIL);
    TETHER_DELAY_POINT("gil.take.slow.spin");
    uint64_t acq = atomic_load_explicit(&g->acquisitions, memory_order_relaxed);
    int64_t now = plat_now_ns(), moved = now;
    if (until < 0 || until - now > SPIN_MAX_NS)
        until = now + SPIN_MAX_NS;
    while (now < until && now - moved < SPIN_HELD_NS) {
        for (int k = 0; k < SPIN_PAUSES; k++)
            plat_cpu_relax();
        now = plat_now_ns();
        uint64_t a = atomic_load_explicit(&g->acquisitions, memory_order_relaxed);
        if (a != acq) {
            acq = a;
            moved = now;
        } else if (!(atomic_load_explicit(&g->word, memory_order_relaxed) &
                     W_LOCKED) ||
                   atomic_load_explicit(&w->ts->interp->finalizing,
                                        memory_order_relaxed)) {
            break;
        }
    }
    rank_lock(&g->mutex, RANK_GIL);
    atomic_fetch_add(&g->word, W_PIN);
    w->pinned = 1;
    w->watching = 0;
}

/* How long an urgent returner waits awake for the drop it asked for
   (q_await) before it sleeps.  Measured on two vCPUs with a Lua thread
   answering the request at its next line hook: the drop came within 5 us
   when the holder was running, and never within 50 us when it was not
   (preempted on the returner's own CPU); a wake-up from sleep costs about
   20 us there across CPUs.  So a little more than the first case, well
   under the second. */
#define AWAIT_NS 10000

/* A thread back from one of tether's waits (GIL_URGENT_WAITED: a sleep,
   an event, a lock, a channel, a join), at the head of the queue, that
   asked the holder to drop (the convoy rule; the holder then, or, if it
   asked from behind another returner, whoever took the GIL since: the
   await then costs at most AWAIT_NS) waits for the drop awake:
   the holder answers at its next checkpoint, usually within
   microseconds, sooner than a sleeper's wake-up would come (from another
   CPU: AWAIT_NS).  Not a thread back from tether_restore_thread or a
   blocking call: those also come back at once, in loops that release and
   re-take the GIL, where taking it at the holder's next drop makes a
   change of hands per loop (measured: 7 to 12 % fewer acquisitions with
   4 to 64 such threads).  It lets go of the mutex and watches the word,
   reading only, for at most AWAIT_NS.
   Unlike a watching head (q_spin) it keeps its pin: the drop it waits for
   takes the slow path and finds it at the head, and its q_wake, though
   nobody sleeps on the cond, marks it `signalled`, so that kept_for_head
   keeps the freed GIL for it as for a head woken and on its way.  Back
   under the mutex it is on nobody's way: `signalled` and `freed` are
   cleared (a wake-up sent meanwhile found nobody asleep), and take_slow
   looks at the word before it sleeps, so a drop in between is not lost.
   Not for a head whose turn it is (`handoff`, as for q_spin): the drop
   then hands the GIL over and leaves the word locked, and the await
   would spin out its AWAIT_NS with the GIL already its own (order_points
   returner_whose_turn_it_is_does_not_await). */
static void q_await(struct gil *g, struct gil_waiter *w)
{
    rank_unlock(&g->mutex, RANK_GIL);
    TETHER_DELAY_POINT("gil.take.slow.await");
    int64_t until = plat_now_ns() + AWAIT_NS;
    while ((atomic_load_explicit(&g->word, memory_order_relaxed) & W_LOCKED) &&
           !atomic_load_explicit(&w->ts->interp->finalizing,
                                 memory_order_relaxed) &&
           plat_now_ns() < until) {
        for (int k = 0; k < SPIN_PAUSES; k++)
            plat_cpu_relax();
    }
    rank_lock(&g->mutex, RANK_GIL);
    w->signalled = 0;
    w->freed = 0;
}

/* Bookkeeping of the new holder. */
static void note_holder(struct gil *g, struct tstate *ts)
{
    /* Release: a pinned reader that finds `ts` here also sees its
       initialisation (a brand-new state of a foreign thread). */
    ann_holder_published(ts);
    atomic_store_explicit(&g->holder, ts, memory_order_release);
    stat_add(&g->acquisitions, 1);
    if (g->last_holder != ts) {
        stat_add(&g->switches, 1);
        g->last_holder = ts;
    }
}

static int interp_finalizing(struct tstate *ts)
{
    return atomic_load_explicit(&ts->interp->finalizing, memory_order_acquire);
}

void gil_call_hook(struct tstate *h)
{
    tether_breaker_fn hook = atomic_load(&h->interp->hook);
    if (hook) {
        ann_happens_after(&h->interp->hook); /* see set_breaker_hook */
        void *ud = atomic_load_explicit(&h->userdata, memory_order_acquire);
        if (ud)
            ann_happens_after(&h->userdata); /* see set_thread_userdata */
        hook(ud, atomic_load(&h->interp->hook_ud));
    }
}

/* Asks the holder to drop the GIL.  Called pinned, with the mutex held, so
   the holder cannot go away.  Returns 1 if a holder was found. */
static int request_drop(struct gil *g)
{
    struct tstate *h = atomic_load_explicit(&g->holder, memory_order_acquire);
    if (!h || !(atomic_load(&g->word) & W_LOCKED))
        return 0;
    ann_holder_read(h); /* the acquire of note_holder()'s release */
    /* Stamped before the post: the holder may see the request and drop
       at once, and the trace must not show the drop before the request
       that caused it. */
    TRACE(trace_gil_request(g, h));
    atomic_fetch_or(&h->breaker, BREAKER_DROP);
    TETHER_DELAY_POINT("gil.request_drop.posted");
    gil_call_hook(h);
    return 1;
}

static void record_wait(struct gil *g, int64_t t0)
{
    uint64_t waited = (uint64_t)(plat_now_ns() - t0);
    stat_add(&g->wait_ns_total, waited);
    if (waited > atomic_load_explicit(&g->wait_ns_max, memory_order_relaxed))
        atomic_store_explicit(&g->wait_ns_max, waited, memory_order_relaxed);
}

/* Clears the locked bit under the mutex and wakes the head of the queue,
   unless it was woken already and has not come back to look yet: it will
   find the GIL free, and waking a second one only makes them fight for
   the mutex. */
static void release_locked(struct gil *g)
{
    ann_gil_released(g);
    atomic_fetch_and(&g->word, ~(uint64_t)W_LOCKED);
    if (g->head && !g->head->watching)
        g->head->freed = 1;
    q_wake(g->head);
}

/* Whether a free GIL is kept for the head of the queue instead of going
   to the thread that looks at it (see "Barging"): the head was woken and
   is on its way (`signalled`; a head that watches the word in q_spin is
   not: it is not on its way, and the looker barges), and either it is a
   returner and the looker is not, or the looker comes back from a forced
   switch that answered a drop request (`yielded`) and the head is the
   next in turn. */
static int kept_for_head(struct gil *g, const struct gil_waiter *self,
                         int returner, int yielded)
{
    const struct gil_waiter *h = g->head;
    return !returner && h && h != self && h->signalled && (h->prio || yielded);
}

/* Hands the GIL, held by the caller, straight to the waiter `w` that
   stood a whole interval at the head of the queue: the locked bit stays
   set, so no thread in the slow path can barge in between. */
static void hand_over(struct gil *g, struct gil_waiter *w)
{
    g->handoff = NULL;
    w->granted = 1;
    ann_gil_released(g);
    note_holder(g, w->ts);
    q_wake(w);
}

static int take_slow(struct gil *g, struct tstate *ts, int urgent, int yielded)
{
    int64_t t0 = 0; /* read the clock only once we have to wait */
    int64_t head_since = 0; /* since when this thread is the head */
    uint64_t seen = 0;      /* the acquisitions then */
    int rc = TETHER_OK, requested = 0, taken = 0, queued = 0, awaited = 0;
    int hot = 0; /* woken by a drop that freed the GIL (q_sleep, `freed`):
                    watch before sleeping again */
    int64_t held_since = 0; /* a waited returner at the head, unanswered:
                               since when nobody took the GIL */
    uint64_t held_seen = 0; /* the acquisitions then */
    uint64_t asked_at = 0;  /* the acquisitions when it last asked */
    struct gil_waiter self;
    self.ts = ts;
    self.granted = 0;
    TRACE(trace_gil_wait(g, ts));
    TETHER_DELAY_POINT("gil.take.slow.enter");
    rank_lock(&g->mutex, RANK_GIL);
    atomic_fetch_add(&g->word, W_PIN);
    /* A returner queues ahead of the others; it posts its request at once
       only if the holder has held the GIL since this thread left.  One
       back from a tether wait (`waited`) asks later too (held_since). */
    int returner = urgent != 0, waited = urgent == GIL_URGENT_WAITED;
    urgent = urgent && atomic_load(&g->acquisitions) == ts->acq_at_drop + 1;
    for (;;) {
        if (self.granted) {
            /* Handed over (hand_over): ours, the bookkeeping done. */
            ann_gil_acquired(g);
            taken = 1;
            break;
        }
        if (interp_finalizing(ts)) {
            rc = TETHER_EFINALIZING;
            break;
        }
        uint64_t w = atomic_load(&g->word);
        if (!(w & W_LOCKED) && !kept_for_head(g, &self, returner, yielded)) {
            TETHER_DELAY_POINT("gil.take.slow.free");
            if (atomic_compare_exchange_strong(&g->word, &w, w | W_LOCKED)) {
                ann_gil_acquired(g);
                taken = 1;
                break;
            }
            continue;
        }
        if (urgent && !requested) {
            requested = request_drop(g);
            asked_at = atomic_load(&g->acquisitions);
        }
        if (!queued) {
            plat_cond_init(&self.cond);
            q_push(g, &self, returner);
            queued = 1;
        }
        int head = g->head == &self;
        int64_t now = plat_now_ns();
        if (!t0)
            t0 = now;
        if (!head) {
            head_since = 0;
        } else if (!head_since) {
            head_since = now;
            seen = atomic_load(&g->acquisitions);
        } else if (now - head_since >= interval_ns(g)) {
            /* A whole interval at the head without the GIL: the next drop
               hands it over, and a holder that kept it all along is asked
               to drop. */
            TETHER_DELAY_POINT("gil.take.slow.turn");
            if (!g->handoff)
                g->handoff = &self;
            if (atomic_load(&g->acquisitions) == seen)
                request_drop(g);
            head_since = now;
            seen = atomic_load(&g->acquisitions);
        }
        if (!(waited && head &&
              (!requested || atomic_load(&g->acquisitions) != asked_at))) {
            held_since = 0;
        } else if (!held_since ||
                   atomic_load(&g->acquisitions) != held_seen) {
            held_since = now;
            held_seen = atomic_load(&g->acquisitions);
        } else if (now - held_since >= SPIN_HELD_NS) {
            /* The GIL changed hands while this thread was away, or since
               it last asked (the holder it asked dropped, and another
               took the GIL before this thread looked), and the holder has
               kept it since: it runs guest code (see "The convoy
               effect").  Asked now, not at the turn. */
            if (request_drop(g)) {
                requested = 1;
                asked_at = held_seen;
            }
            held_since = 0;
        }
        if (requested && head && waited && !awaited &&
            g->handoff != &self && ncpus() > 1) {
            /* Once: a holder that did not drop by then is not running,
               or not checkpointing.  Not on its turn (see q_await). */
            awaited = 1;
            q_await(g, &self);
            continue;
        }
        TETHER_DELAY_POINT("gil.take.slow.sleep");
        int64_t deadline = head ? head_since + interval_ns(g) : -1;
        if (held_since && held_since + SPIN_HELD_NS < deadline)
            deadline = held_since + SPIN_HELD_NS;
        if (hot && head && g->handoff != &self && ncpus() > 1) {
            q_spin(g, &self, deadline);
            hot = 0;
        } else {
            if (!head && self.pinned) {
                /* Away from the head: nothing but the head's leaving
                   wakes it (q_leave, which pins it again), so it holds
                   no pin while it sleeps.  Counted as a sleeper before
                   its pin goes: gil_contended reads the pins, then the
                   sleepers, without the mutex, and in this order finds
                   a waiter on its way to sleep in one or the other (see
                   gil_contended for the way back). */
                atomic_fetch_add(&g->unpinned, 1);
                TETHER_DELAY_POINT("gil.take.slow.unpin");
                atomic_fetch_sub(&g->word, W_PIN);
                self.pinned = 0;
            }
            int woken = q_sleep(g, &self, deadline);
            if (!head)
                TETHER_DELAY_POINT("gil.take.slow.woken_behind");
            if (!self.pinned) {
                /* Woken otherwise than as the new head (finalize, a
                   spurious wake-up, or a hand-over: a waiter whose turn
                   was due can be behind a returner that queued ahead of
                   it, and while that returner watches, drops take the
                   fast path and the turn waits for its watch to end):
                   it looks pinned, as everyone in the slow path. */
                atomic_fetch_add(&g->word, W_PIN);
                self.pinned = 1;
                atomic_fetch_sub(&g->unpinned, 1);
            }
            hot = woken && self.freed;
            self.freed = 0;
            TETHER_DELAY_POINT(woken ? "gil.take.slow.woken" : "gil.take.slow.timed_out");
        }
    }
    if (queued)
        q_leave(g, &self);
    if (g->handoff == &self)
        g->handoff = NULL;
    atomic_fetch_sub(&g->word, W_PIN);
    if (taken && self.granted) {
        TRACE(trace_gil_take(g, ts, 1));
        if (t0)
            record_wait(g, t0);
        if (g->switch_waiters)
            pthread_cond_broadcast(&g->switch_cond);
    } else if (taken) {
        /* The GIL is ours from the CAS on: the stats are ours to write.
           One of the two places where a slow-path take completes (the
           other: hand_over). */
        note_holder(g, ts);
        TRACE(trace_gil_take(g, ts, 1));
        if (t0)
            record_wait(g, t0);
        if (g->switch_waiters)
            pthread_cond_broadcast(&g->switch_cond);
    } else {
        TRACE(trace_gil_refused(g, ts));
    }
    rank_unlock(&g->mutex, RANK_GIL);
    if (queued)
        pthread_cond_destroy(&self.cond);
    return rc;
}

/* gil_take, and gil_yield's take (`yielded`: it answered a drop
   request). */
static int take(struct gil *g, struct tstate *ts, int urgent, int yielded)
{
    uint64_t w = 0;
    int rc;
    if (atomic_compare_exchange_strong_explicit(&g->word, &w, W_LOCKED,
                                                memory_order_acquire,
                                                memory_order_relaxed)) {
        /* For helgrind and DRD: every take of the GIL (a CAS setting the
           locked bit) acquires what every earlier drop (a CAS or fetch_and
           clearing it, after ann_happens_before) released. */
        TETHER_DELAY_POINT("gil.take.fast.after_cas");
        ann_gil_acquired(g);
        note_holder(g, ts);
        TRACE(trace_gil_take(g, ts, 0));
        rc = TETHER_OK;
    } else {
        rc = take_slow(g, ts, urgent, yielded);
    }
    /* Checked after taking: the finalizer sets the flag and then passes
       through the GIL (gil_barrier), so whoever takes the GIL after that
       pass sees the flag here, and whoever took it before was made to drop
       it by BREAKER_FINALIZING before the pass completed. */
    if (rc == TETHER_OK && interp_finalizing(ts)) {
        gil_drop(g, ts);
        rc = TETHER_EFINALIZING;
    }
    return rc;
}

int gil_take(struct gil *g, struct tstate *ts, int urgent)
{
    return take(g, ts, urgent, 0);
}

/* Releases the GIL held by `ts`, with the mutex held.  With `forced`
   (gil_yield), waits until another thread took the GIL, as long as one
   still waits for it.  Returns 1 if a drop request was pending. */
static int drop_locked(struct gil *g, struct tstate *ts, int forced)
{
    int requested = (atomic_fetch_and(&ts->breaker, ~BREAKER_DROP) & BREAKER_DROP) != 0;
    if (requested && forced)
        stat_add(&g->forced_drops, 1);
    uint64_t seen = atomic_load(&g->acquisitions);
    ts->acq_at_drop = seen;
    atomic_store_explicit(&g->holder, NULL, memory_order_relaxed);
    atomic_fetch_add(&g->word, W_PIN);
    if (g->handoff)
        hand_over(g, g->handoff);
    else
        release_locked(g);
    if (forced) {
        g->switch_waiters++;
        while (atomic_load(&g->acquisitions) == seen &&
               ((atomic_load(&g->word) >> 1) > 1 ||
                atomic_load(&g->unpinned)) &&
               !interp_finalizing(ts)) {
            TETHER_DELAY_POINT("gil.yield.waiting");
            plat_cond_wait(&g->switch_cond, &g->mutex, plat_now_ns() + interval_ns(g));
        }
        g->switch_waiters--;
    }
    atomic_fetch_sub(&g->word, W_PIN);
    return requested;
}

void gil_drop(struct gil *g, struct tstate *ts)
{
    TRACE(trace_gil_drop(g, ts, 0));
    if (!(atomic_load_explicit(&ts->breaker, memory_order_relaxed) & BREAKER_DROP)) {
        ts->acq_at_drop = atomic_load_explicit(&g->acquisitions, memory_order_relaxed);
        atomic_store_explicit(&g->holder, NULL, memory_order_relaxed);
        uint64_t w = W_LOCKED;
        TETHER_DELAY_POINT("gil.drop.before_cas");
        /* Before the CAS: if it fails, the slow path announces again. */
        ann_gil_released(g);
        if (atomic_compare_exchange_strong_explicit(&g->word, &w, 0,
                                                    memory_order_release,
                                                    memory_order_relaxed))
            return;
    }
    /* Someone waits: hand over under the mutex.  No forced switch here,
       unlike CPython's drop_gil: a thread coming back from a blocking call
       asks for the GIL at once (the convoy rule), so forcing the switch on
       every drop that answers such a request turns two threads that release
       and re-take the GIL into a strict ping-pong of context switches
       (measured: 10x fewer acquisitions).  The dropper is about to block
       anyway; the waiter gets the GIL from the signal. */
    TETHER_DELAY_POINT("gil.drop.slow");
    rank_lock(&g->mutex, RANK_GIL);
    drop_locked(g, ts, 0);
    rank_unlock(&g->mutex, RANK_GIL);
}

int gil_yield(struct gil *g, struct tstate *ts)
{
    TRACE(trace_gil_drop(g, ts, 1));
    rank_lock(&g->mutex, RANK_GIL);
    int requested = drop_locked(g, ts, 1);
    rank_unlock(&g->mutex, RANK_GIL);
    TETHER_DELAY_POINT("gil.yield.dropped");
    return take(g, ts, 0, requested);
}

/* The pins first, then the sleepers (the acquire keeps the second load
   after the first): a waiter going to sleep is counted as a sleeper
   before its pin goes (take_slow), so it is found either way.  On the
   way back a waiter pins itself before it stops counting as a sleeper,
   and a reading that straddles both steps finds neither; only a sleeper
   woken while the caller holds the GIL takes that way, which is a
   spurious wake-up, finalize or destroy (every other wake-up of a
   sleeper behind the head comes from the holder: its drop, or a
   hand-over), and the cost is one tether_sleep(0) that does not yield. */
int gil_contended(struct gil *g)
{
    return (atomic_load_explicit(&g->word, memory_order_acquire) >> 1) != 0 ||
           atomic_load_explicit(&g->unpinned, memory_order_relaxed) != 0;
}

void gil_with_holder(struct gil *g, void (*fn)(struct tstate *, void *),
                     void *ud)
{
    rank_lock(&g->mutex, RANK_GIL);
    atomic_fetch_add(&g->word, W_PIN);
    struct tstate *h = atomic_load_explicit(&g->holder, memory_order_acquire);
    if (h && (atomic_load(&g->word) & W_LOCKED)) {
        ann_holder_read(h);
        fn(h, ud);
    }
    atomic_fetch_sub(&g->word, W_PIN);
    rank_unlock(&g->mutex, RANK_GIL);
}

void gil_interval_changed(struct gil *g)
{
    /* The head sleeps until one interval after it became the head, as the
       interval was when it went to sleep: woken, it starts over with the
       new one (a waiting head takes its turn, a shorter interval's turn
       comes sooner).  Nobody else's sleep depends on the interval: the
       others sleep until woken, a watching head at most SPIN_MAX_NS, a
       forced switch until the GIL changed hands (its timeout is only a
       safety net). */
    rank_lock(&g->mutex, RANK_GIL);
    q_wake(g->head);
    rank_unlock(&g->mutex, RANK_GIL);
}

void gil_wake_all(struct gil *g)
{
    rank_lock(&g->mutex, RANK_GIL);
    for (struct gil_waiter *w = g->head; w; w = w->next)
        q_wake(w);
    pthread_cond_broadcast(&g->switch_cond);
    rank_unlock(&g->mutex, RANK_GIL);
}

int gil_barrier(struct gil *g, int64_t deadline)
{
    int rc = -1, queued = 0;
    struct gil_waiter self;
    rank_lock(&g->mutex, RANK_GIL);
    atomic_fetch_add(&g->word, W_PIN);
    for (;;) {
        uint64_t w = atomic_load(&g->word);
        if (!(w & W_LOCKED)) {
            if (!atomic_compare_exchange_strong(&g->word, &w, w | W_LOCKED))
                continue;
            ann_gil_acquired(g);
            if (queued) {
                q_leave(g, &self);
                queued = -1;
            }
            release_locked(g); /* nobody ran meanwhile: hand it straight on */
            rc = 0;
            break;
        }
        int64_t now = plat_now_ns();
        if (deadline >= 0 && now >= deadline)
            break;
        request_drop(g);
        if (!queued) {
            /* Finalize goes ahead of every waiter but the returners. */
            plat_cond_init(&self.cond);
            q_push(g, &self, 1);
            queued = 1;
        }
        int64_t until = now + interval_ns(g);
        q_sleep(g, &self, deadline >= 0 && deadline < until ? deadline : until);
    }
    if (queued > 0)
        q_leave(g, &self);
    atomic_fetch_sub(&g->word, W_PIN);
    rank_unlock(&g->mutex, RANK_GIL);
    if (queued)
        pthread_cond_destroy(&self.cond);
    return rc;
}

void gil_atfork_prepare(struct gil *g) { pthread_mutex_lock(&g->mutex); }
void gil_atfork_parent(struct gil *g) { pthread_mutex_unlock(&g->mutex); }

void gil_atfork_child(struct gil *g, struct tstate *survivor)
{
    /* The mutex was taken by prepare on this very thread; the conds may
       have had waiters that no longer exist, so both are made anew.  So is
       the mutex, once unlocked: a thread that vanished asleep on `cond`
       still counts as one of its users (glibc's cond wait releases the
       mutex without dropping that count), and gil_destroy's
       pthread_mutex_destroy would fail with EBUSY (helgrind reported it). */
    pthread_mutex_unlock(&g->mutex);
    pthread_mutex_init(&g->mutex, NULL);
    plat_cond_init(&g->switch_cond);
    g->switch_waiters = 0;
    /* The waiters' nodes were on stacks of threads that are gone. */
    g->head = g->tail = g->prio_last = g->normal_first = NULL;
    g->handoff = NULL;
    atomic_store(&g->unpinned, 0);
    int held = survivor && atomic_load(&g->holder) == survivor &&
               (atomic_load(&g->word) & W_LOCKED);
    atomic_store(&g->word, held ? W_LOCKED : 0);
    atomic_store(&g->holder, held ? survivor : NULL);
    g->last_holder = held ? survivor : NULL;
}
