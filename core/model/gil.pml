/*
 * gil.pml - a Promela model of tether's GIL protocol, checked with spin.
 *
 * It follows core/gil.c statement by statement (each inline is named after
 * the C function it models), plus the parts of core/gilstate.c, core/wait.c
 * and core/runtime.c that take, drop or interrupt the GIL: ensure/release,
 * the eval breaker, asynchronous exceptions delivered to a thread that
 * checkpoints or is blocked in a tether wait, and finalize.  README.md next
 * to this file maps every variable and process to the C, says what each
 * check proves, and gives the spin command lines.
 *
 * Configurations (spin -D<name>):
 *   (none)  NT workers contend for the GIL: take, guest code with
 *           checkpoints (drop requests, forced switching), drop, and
 *           blocking sections that come back with the convoy rule.
 *   FIN     finalize racing with a daemon thread that checkpoints and
 *           makes blocking calls, and a foreign thread in a nested
 *           ensure/release loop (with -DWAITER: a thread blocked in an
 *           event wait instead of the foreign thread).
 *   ASYNC   asynchronous exceptions raised at a thread that alternates
 *           between checkpoints (with defer/allow) and a blocked event wait,
 *           while another thread contends for the GIL.
 * Variants: -DNT=3 -DROUNDS=1 (three workers, one round each: the queue
 * of waiters), -DNO_BLOCKING (FIN: the daemon makes no blocking calls),
 * -DNO_OTHER (ASYNC: no contending thread), -DTIGHT (default: a worker may
 * re-take the GIL at once, see README), -DPLAIN_MUTEX (safety runs).
 * Properties: -DLIVE=t, -DFIN_LIVE, -DASYNC_LIVE select an LTL formula
 * (at the end of the file); without one, assertions and deadlocks.
 *
 * Everything is sequentially consistent: the model checks the protocol,
 * not the C memory orderings (ThreadSanitizer runs cover those).
 */

#if defined(FIN) || defined(ASYNC)
#undef NT
#define NT 2
#endif
#ifndef NT
#define NT 2
#endif
#define NPROC (NT + 1)       /* thread ids 1..NT, plus the finalizer/raiser */
#define CTL NPROC            /* the finalizer's or raiser's id */

#define OK 0
#define EFINALIZING 7
#define EASYNC 8
#define AGAIN 1              /* WAIT_AGAIN */

/* gil->word */
#define LOCKED 1
#define PIN 2

/* tstate->breaker bits (core/internal.h) */
#define BRK_DROP 1
#define BRK_ASYNC 2
#define BRK_FINAL 8

/* ---- mutexes: FIFO ticket locks, so that weak fairness makes them
        starvation-free and a liveness failure is the protocol's.  Safety
        runs use -DPLAIN_MUTEX (a test-and-set mutex, fewer states: mutual
        exclusion and deadlock freedom do not depend on the mutex's order). */

#define M_GIL 0              /* gil->mutex (rank 3) */
#define M_INTERP 1           /* interp->mutex (rank 2) */
#define M_OBJ 2              /* the event's mutex (rank 4) */
#define NMUTEX 3
#define TICKETS (NPROC + 2)

byte mtx[NMUTEX];            /* owner id, 0 = free */
byte tk_next[NMUTEX];
byte tk_serve[NMUTEX];

/* ---- struct gil ------------------------------------------------------ */

byte word;                   /* locked bit | pins << 1 */
byte holder;                 /* the holding thread id, 0 = NULL */
byte switch_waiters;
/*
 * gil->acquisitions.  The C only compares it with a sample the same thread
 * took earlier, so the model keeps, per thread, how many acquisitions
 * happened since each sample (saturating), which is exact and bounded:
 *   since_seen[t]  since take_slow sampled `seen` before a timed wait (0, 1)
 *   since_drop[t]  since ts->acq_at_drop was recorded by a drop (0, 1, 2+);
 *                  drop_locked's `seen` is the same sample
 */
byte since_seen[NT + 1];
byte since_drop[NT + 1];

/* gil->switch_cond and the event's cond: FIFO queues of ids.  woken[c]
   counts threads a signal or broadcast took off queue c that have not
   queued for the mutex yet. */
chan switch_cond = [NPROC] of { byte };
chan obj_cond = [NPROC] of { byte };
#define W_SWITCH 1
#define W_OBJ 2
byte woken[3];

/* The queue of waiters (gil->head ... tail): thread ids, head at qid[0];
   the first nprio are returners (up to gil->prio_last).  Each waiter
   sleeps on its own cond: asleep[t] is 0 (awake), 1 (untimed) or 2 (timed:
   the head's interval); signalled[t] is its struct gil_waiter's
   `signalled`, and nsig counts the threads signalled and not back yet;
   watching[t] is its `watching` (the head watches the word in q_spin:
   awake, not woken, no pin). */
byte qid[NPROC];
byte qlen;
byte nprio;
byte asleep[NPROC + 1];
bit signalled[NPROC + 1];
byte nsig;
bit watching[NPROC + 1];
/* pinned[t] is its `pinned`: it holds a pin on the word, always but while
   it sleeps away from the head (take_slow) or watches (q_spin).  The model
   also sets it for the pin every slow path takes before it queues, or
   without queuing (take_slow, drop_locked, gil_barrier; implicit in the
   C), so that the pins of `word` are exactly the threads with `pinned`
   set (PINS_OK). */
bit pinned[NPROC + 1];
/* gil->unpinned: the waiters asleep behind the head without a pin
   (take_slow counts its own unpin and re-pin, q_pin_for its pin on the
   new head's behalf), counted with the pins by the forced switch
   (drop_locked) and by gil_contended (not modelled: tether_sleep(0) is
   not).  UNPINNED_OK checks it against the queue. */
byte unpinned;
/* freed[t] is its `freed`: the wake-up on its way came (also) from a drop
   that freed the GIL (release_locked); only such a wake-up makes it watch
   (take_slow's `hot`). */
bit freed[NPROC + 1];
/* gil->handoff (a thread id, 0 = NULL): the waiter that stood a whole
   interval at the head, to which the next drop hands the GIL; granted[t]
   is its struct gil_waiter's `granted`. */
byte handoff;
bit granted[NPROC + 1];

/* ---- interpreter and thread states ------------------------------------ */

bit finalizing;              /* interp->finalizing */
byte breaker[NPROC + 1];     /* tstate->breaker */
bit attached[NPROC + 1];     /* tstate->attached */
bit wait_reg[NPROC + 1];     /* tstate->wait_mutex/wait_cond registered */
bit has_pending[NPROC + 1];  /* asynchronous exception slots */
bit has_delivered[NPROC + 1];
byte defer[NPROC + 1];

/* ---- observation, for the properties ---------------------------------- */

byte in_guest;               /* threads running guest code */
bit fin_done;                /* finalize returned */
bit gone[NPROC + 1];         /* the thread returned for good */
byte raised;
#ifdef LIVE
bit want[NPROC + 1];         /* asked for the GIL ... */
bit has[NPROC + 1];          /* ... and got it */
#define WANT(t, v) want[t] = v
#define HAS(t, v)  has[t] = v
#else
#define WANT(t, v) skip
#define HAS(t, v)  skip
#endif

/* ---- mutexes and condition variables ---------------------------------- */

#ifdef PLAIN_MUTEX
#define TICKET(m)    skip
#define TURN(m)      mtx[m] == 0
#define NEXT(m)      skip
#else
#define TICKET(m)    tk = tk_next[m]; tk_next[m] = (tk_next[m] + 1) % TICKETS
#define TURN(m)      tk_serve[m] == tk
/* The next ticket; with nobody queued, both counters go back to 0 so that
   equal states are not told apart by where the counters happen to be. */
#define NEXT(m)      tk_serve[m] = (tk_serve[m] + 1) % TICKETS;              \
                     if                                                      \
                     :: tk_serve[m] == tk_next[m] -> tk_serve[m] = 0; tk_next[m] = 0 \
                     :: else -> skip                                         \
                     fi
#endif

inline mutex_lock(m, me)
{
    atomic { TICKET(m) };
    atomic { TURN(m) -> mtx[m] = me; tk = 0 }
}

/* No lost wake-up, checked whenever the GIL mutex is let go (everything
   it reads changes only under that mutex): the head of the queue is never
   asleep without a timeout unless a wake-up is on its way, and never
   asleep at all, unwoken, while the GIL is free.  A watching head
   (q_spin) is awake: it looks under the mutex before it sleeps. */
#define HEAD_OK (qlen == 0 || signalled[qid[0]] || watching[qid[0]] ||         \
                 asleep[qid[0]] == 0 ||                                       \
                 (asleep[qid[0]] == 2 && (word & LOCKED)))
/* The head of the queue holds a pin unless it watches: a head that was
   woken and is on its way (signalled) is pinned, so the holder's drop
   takes the slow path, and a thread that finds the GIL free looks under
   the mutex, where kept_for_head sees the head (a barger's fast CAS would
   bypass it).  Waiters away from the head sleep without a pin; q_leave
   pins the new head on its behalf before it wakes it (q_pin_for). */
#define HEAD_PINNED (qlen == 0 || pinned[qid[0]] || watching[qid[0]])
/* The pins of the word are the threads with `pinned` set. */
#if NPROC == 3
#define NPINNED (pinned[1] + pinned[2] + pinned[3])
#elif NPROC == 4
#define NPINNED (pinned[1] + pinned[2] + pinned[3] + pinned[4])
#else
#error "NPINNED: add a case for this NPROC"
#endif
#define PINS_OK ((word >> 1) == NPINNED)
/* gil->unpinned is the number of queued waiters that neither hold a pin
   nor watch (the queue's slots past qlen are 0). */
#define Q_UNPINNED(k) (qlen > k && !pinned[qid[k]] && !watching[qid[k]])
#if NPROC == 3
#define NUNPINNED (Q_UNPINNED(0) + Q_UNPINNED(1) + Q_UNPINNED(2))
#elif NPROC == 4
#define NUNPINNED (Q_UNPINNED(0) + Q_UNPINNED(1) + Q_UNPINNED(2) + Q_UNPINNED(3))
#else
#error "NUNPINNED: add a case for this NPROC"
#endif
#define UNPINNED_OK (unpinned == NUNPINNED)
#define CHECK_QUEUE(m) if :: m == M_GIL -> assert(HEAD_OK && HEAD_PINNED && PINS_OK && UNPINNED_OK) :: else -> skip fi
/* A fast path (the CAS of gil_take or gil_drop) can succeed only with no
   pins: the queue is empty or its head watches (and everybody behind it
   sleeps without a pin).  Otherwise a fast take would bypass kept_for_head
   and a fast drop would not wake a sleeping head. */
#define FAST_OK (qlen == 0 || watching[qid[0]])

inline mutex_unlock(m, me)
{
    atomic { assert(mtx[m] == me); CHECK_QUEUE(m); mtx[m] = 0; NEXT(m) }
}

/* Releases the mutex and queues on `c` in one step (as pthread_cond_wait). */
inline cond_enqueue(c, m, me)
{
    atomic { c!me; assert(mtx[m] == me); CHECK_QUEUE(m); mtx[m] = 0; NEXT(m) }
}

/*
 * plat_cond_wait with a deadline.  `timed_out` is what it returns: it
 * compares the clock with the deadline after waking, so a signalled wait
 * may report 1 too.  All waits on one condition variable use the same
 * interval, so the thread that queued first times out first: only the head
 * of the queue may time out, and only once the threads a signal woke ahead
 * of it have queued for the mutex (wake-ups reach the mutex in the order
 * the threads queued).
 */
inline cond_timedwait(c, w, m, me, timed_out)
{
    cond_enqueue(c, m, me);
    if
    :: atomic { !(c??[eval(me)]) -> timed_out = 0; woken[w]--;
                TICKET(m) }
    :: atomic { !(c??[eval(me)]) -> timed_out = 1; woken[w]--;
                TICKET(m) }
    :: atomic { c?[eval(me)] && woken[w] == 0 -> c?_; timed_out = 1;
                TICKET(m) }
    fi;
    atomic { TURN(m) -> mtx[m] = me; tk = 0 }
}

/* plat_cond_wait without a deadline (no spurious wake-ups: the C re-checks
   its predicate in a loop, so they only add iterations). */
inline cond_wait(c, w, m, me)
{
    cond_enqueue(c, m, me);
    atomic { !(c??[eval(me)]) -> woken[w]--;
             TICKET(m) };
    atomic { TURN(m) -> mtx[m] = me; tk = 0 }
}

inline cond_signal(c, w)
{
    atomic {
        if
        :: nempty(c) -> c?_; woken[w]++
        :: empty(c) -> skip
        fi
    }
}

inline cond_broadcast(c, w)
{
    atomic {
        do
        :: nempty(c) -> c?_; woken[w]++
        :: empty(c) -> break
        od
    }
}

/* ======================================================================
 * gil.c
 * ====================================================================== */

/* took(): the new holder's bookkeeping (holder, acquisitions); `me` is
   the new holder (hand_over calls it for the waiter it hands to). */
inline took(me)
{
    holder = me;
    d_step {
        i = 1;
        do
        :: i <= NT ->
            since_seen[i] = 1;
            if
            :: since_drop[i] < 2 -> since_drop[i]++
            :: else -> skip
            fi;
            i++
        :: else -> break
        od;
        i = 0
    }
}

/* request_drop(): pinned, gil mutex held, so the holder cannot change. */
inline request_drop(me)
{
    atomic {
        assert(mtx[M_GIL] == me && (word >> 1) > 0);
        if
        :: holder != 0 && (word & LOCKED) -> breaker[holder] = breaker[holder] | BRK_DROP; found = 1
        :: else -> found = 0
        fi
    }
}

/* q_wake(): gil mutex held.  A watching waiter is awake: no wake-up. */
inline q_wake(t)
{
    if
    :: !signalled[t] && !watching[t] -> signalled[t] = 1; nsig++
    :: else -> skip
    fi
}

/* q_push(): at the tail, or a returner behind the other returners.  The
   anti-starvation rule depends on time (the first of the others has stood
   there a whole interval): the model takes either branch whenever there
   is such a thread. */
inline q_push(me, prio)
{
    atomic {
        /* q_push clears `freed` and `watching` in the C; q_leave does it
           here, so that a state does not remember a waiter gone */
        assert(mtx[M_GIL] == me && !signalled[me] && !freed[me] && !watching[me]);
        pinned[me] = 1; /* every thread in the slow path pinned on entry
                           (the model's pinned[me] is 1 already) */
        if
        :: prio ->
            if
            :: qlen > nprio -> nprio++
            :: true -> skip
            fi;
            i = qlen;
            do
            :: i > nprio -> qid[i] = qid[i - 1]; i--
            :: else -> break
            od;
            qid[nprio] = me;
            nprio++
        :: else -> qid[qlen] = me
        fi;
        qlen++;
        i = 0
    }
}

/* q_pin_for(): gives the new head `t`, asleep away from the head without
   a pin, its pin back on its behalf before it is woken.  A watching head
   re-pins itself (q_spin). */
inline q_pin_for(t)
{
    if
    :: !pinned[t] && !watching[t] -> word = word + PIN; pinned[t] = 1; unpinned--
    :: else -> skip
    fi
}

/* q_leave(): unlink; a head that leaves pins and wakes the new head. */
inline q_leave(me)
{
    d_step {
        i = 0;
        do
        :: qid[i] != me -> i++
        :: else -> break
        od;
        if
        :: i < nprio -> nprio--
        :: else -> skip
        fi;
        hd = (i == 0);
        do
        :: i + 1 < qlen -> qid[i] = qid[i + 1]; i++
        :: else -> break
        od;
        qlen--;
        qid[qlen] = 0;
        freed[me] = 0;
        i = 0;
        if
        :: hd && qlen > 0 -> q_pin_for(qid[0]); q_wake(qid[0])
        :: else -> skip
        fi;
        hd = 0
    }
}

/* q_sleep(): plat_cond_wait on the waiter's own cond, with the interval
   as timeout if `timed` (the head), forever otherwise.  A timed wait may
   end at any moment; a signalled one may report a timeout too (the C
   compares the clock with the deadline after waking).  `hot`: a wake-up
   reached it and it was `freed` (take_slow: watch before sleeping
   again); `freed` is cleared. */
inline q_sleep(me, timed, timed_out)
{
    /* It sleeps only while the GIL is held or kept for the woken head, or,
       away from the head and without a pin, while the head watches: the
       holder's fast drop may have freed the GIL since it looked (no pin is
       left), and the head, watching, looks. */
    atomic { assert(mtx[M_GIL] == me && !watching[me] &&
                    ((word & LOCKED) ||
                     (qlen > 0 && qid[0] != me &&
                      (signalled[qid[0]] || (!pinned[me] && watching[qid[0]])))));
             asleep[me] = 1 + timed;
             CHECK_QUEUE(M_GIL); mtx[M_GIL] = 0; NEXT(M_GIL) };
    if
    :: atomic { signalled[me] -> asleep[me] = 0; timed_out = 0; TICKET(M_GIL) }
    :: atomic { asleep[me] == 2 -> asleep[me] = 0; timed_out = 1; TICKET(M_GIL) }
    fi;
    atomic { TURN(M_GIL) -> mtx[M_GIL] = me; tk = 0 };
    atomic { if :: signalled[me] -> signalled[me] = 0; nsig--; hot = freed[me]
                :: else -> hot = 0 fi;
             freed[me] = 0 }
}

/* q_spin(): the head, woken while the holder releases and re-takes,
   watches the word outside the mutex, `watching` (not signalled: drops do
   not wake it, and KEPT does not keep the GIL for it) and without its
   pin, and comes back under the mutex (when, is a matter of time: any
   moment; it is not counted in nsig, so the workers' "something else"
   does not wait for it to come back). */
inline q_spin(me)
{
    atomic { assert(mtx[M_GIL] == me && !signalled[me] && !watching[me] && pinned[me]);
             watching[me] = 1 };
    atomic { pinned[me] = 0; word = word - PIN };
    mutex_unlock(M_GIL, me);
    mutex_lock(M_GIL, me);
    atomic { word = word + PIN; pinned[me] = 1 };
    watching[me] = 0
}

/* q_await(): an urgent returner at the head of the queue that posted its
   drop request waits for that drop awake, outside the mutex and pinned
   (not `watching`: a drop takes the slow path and its q_wake marks it
   `signalled` though it is awake, so KEPT keeps the freed GIL for it),
   and comes back under the mutex (when is a matter of time: any moment,
   before or after the drop).  Back, it clears `signalled` and `freed`:
   a wake-up sent meanwhile found nobody asleep. */
inline q_await(me)
{
    assert(mtx[M_GIL] == me && !signalled[me] && !watching[me] && pinned[me] &&
           qlen > 0 && qid[0] == me);
    mutex_unlock(M_GIL, me);
    mutex_lock(M_GIL, me);
    atomic { if :: signalled[me] -> signalled[me] = 0; nsig-- :: else -> skip fi;
             freed[me] = 0 }
}

/* hand_over(): the dropper, mutex held, gives the GIL (still locked) to
   the waiter `t` that asked for its turn. */
inline hand_over(t)
{
    assert(mtx[M_GIL] != 0 && (word & LOCKED) && handoff == t);
    handoff = 0;
    granted[t] = 1;
    took(t);
    q_wake(t)
}

/* release_locked(): gil mutex held. */
inline release_locked(me)
{
    atomic {
        assert(mtx[M_GIL] == me);
        word = word & ~LOCKED;
        if
        :: qlen > 0 ->
            if
            :: !watching[qid[0]] -> freed[qid[0]] = 1
            :: else -> skip
            fi;
            q_wake(qid[0])
        :: else -> skip
        fi
    }
}

/* kept_for_head(): a free GIL is left to the head of the queue when the
   head was woken and is on its way (signalled; a watching head is not),
   and either it is a returner (the
   returners come first in the queue) and the looker is not, or the looker
   comes back from a forced switch that answered a drop request (yld). */
#define KEPT(me) (!ret && qlen > 0 && qid[0] != me && signalled[qid[0]] &&     \
                  (nprio > 0 || yld))

inline take_slow(me, rc)
{
    mutex_lock(M_GIL, me);
    atomic { word = word + PIN; pinned[me] = 1 };
    ret = urg;
    urg = (urg && since_drop[me] == 1);
    do
    :: granted[me] -> granted[me] = 0; gr = 1; taken = 1; break
    :: else ->
        if
        :: finalizing -> rc = EFINALIZING; break
        :: !finalizing && !(word & LOCKED) && !KEPT(me) -> word = word | LOCKED; taken = 1; break
        :: !finalizing && ((word & LOCKED) || KEPT(me)) ->
            if
            :: urg && !requested -> request_drop(me); requested = found
            :: else -> skip
            fi;
            if
            :: !queued -> q_push(me, ret); queued = 1
            :: else -> skip
            fi;
            hd = (qid[0] == me);
            /* head_since (hs): a whole interval at the head has surely
               passed after a timed sleep that timed out (`due`: its
               deadline was head_since + interval); after a wake-up or a
               spin it is a matter of time, so either branch may run */
            if
            :: !hd -> hs = 0
            :: hd && !hs -> hs = 1; since_seen[me] = 0
            :: hd && hs && !due -> skip
            :: hd && hs ->
                if
                :: handoff == 0 -> handoff = me
                :: else -> skip
                fi;
                if
                :: since_seen[me] == 0 -> request_drop(me)
                :: else -> skip
                fi;
                since_seen[me] = 0
            fi;
            due = 0;
            /* The held-holder rule: a returner at the head that has not
               asked (the convoy rule found that the GIL changed hands
               while it was away) asks once the holder has kept the GIL
               for SPIN_HELD_NS.  When, is a matter of time: at any look,
               or never.  (The C: only a thread back from one of tether's
               waits; the model: every returner, a superset.)  One that
               asked asks again once the GIL has changed hands since (the
               holder it asked dropped, and another took the GIL before it
               looked: the C's `asked_at`); the model lets it ask again at
               any look, a superset (but for a holder already asked, where
               a request changes no state of the model). */
            if
            :: ret && hd && !requested -> request_drop(me); requested = found
            :: ret && hd && requested && holder != 0 &&
               !(breaker[holder] & BRK_DROP) -> request_drop(me)
            :: true -> skip
            fi;
            if
            :: requested && hd && !aw && handoff != me -> aw = 1; q_await(me)
            :: hot && hd && handoff != me -> q_spin(me); hot = 0
            :: true ->
                /* Away from the head: nothing but the head's leaving wakes
                   it (q_leave, which pins it again), so it holds no pin
                   while it sleeps. */
                atomic { if
                         :: !hd && pinned[me] -> word = word - PIN; pinned[me] = 0; unpinned++
                         :: else -> skip
                         fi };
                q_sleep(me, hd, timed_out);
                /* Woken otherwise than as the new head (finalize; a
                   hand-over to a waiter a returner went ahead of): it pins
                   the word again, as everyone in the slow path. */
                atomic { if
                         :: !pinned[me] -> word = word + PIN; pinned[me] = 1; unpinned--
                         :: else -> skip
                         fi };
                due = timed_out
            fi;
            hd = 0
        fi
    od;
    if
    :: queued -> q_leave(me); queued = 0
    :: else -> skip
    fi;
    if
    :: handoff == me -> handoff = 0
    :: else -> skip
    fi;
    atomic { word = word - PIN; pinned[me] = 0 };
    if
    :: taken ->
        if
        :: !gr -> took(me)
        :: else -> skip
        fi;
        if
        :: switch_waiters > 0 -> cond_broadcast(switch_cond, W_SWITCH)
        :: else -> skip
        fi
    :: else -> skip
    fi;
    mutex_unlock(M_GIL, me);
    hs = 0; hot = 0; gr = 0; due = 0; aw = 0
}

/* gil_take: the fast CAS, else the slow path; then the finalizing check
   made after taking (the GIL is dropped again if it is set). */
inline gil_take(me, urgent, rc)
{
    urg = urgent;
    rc = OK;
    atomic { if :: word == 0 -> assert(FAST_OK); word = LOCKED; fast = 1 :: else -> fast = 0 fi };
    if
    :: fast -> took(me)
    :: else -> take_slow(me, rc)
    fi;
    if
    :: rc == OK && finalizing -> gil_drop(me); rc = EFINALIZING
    :: else -> skip
    fi;
    fast = 0; requested = 0; taken = 0; timed_out = 0; found = 0; urg = 0; ret = 0; yld = 0
}

/* drop_locked(): releases the GIL with the mutex held, or hands it to the
   waiter whose turn it is; with `always` (gil_yield: forced switching)
   waits until another thread took the GIL, as long as one still waits:
   another pin, or a waiter asleep behind the head without one
   (gil->unpinned). */
inline drop_locked(me, always)
{
    atomic { breaker[me] = breaker[me] & ~BRK_DROP };
    since_drop[me] = 0;
    holder = 0;
    atomic { word = word + PIN; pinned[me] = 1 };
    if
    :: handoff != 0 -> ho = handoff; hand_over(ho); ho = 0
    :: else -> release_locked(me)
    fi;
    if
    :: always ->
        switch_waiters++;
        do
        :: since_drop[me] == 0 && ((word >> 1) > 1 || unpinned > 0) && !finalizing ->
            cond_timedwait(switch_cond, W_SWITCH, M_GIL, me, timed_out)
        :: else -> break
        od;
        switch_waiters--
    :: else -> skip
    fi;
    atomic { word = word - PIN; pinned[me] = 0 };
    requested = 0; timed_out = 0
}

/* gil_drop(): the fast CAS only with no drop request pending. */
inline gil_drop(me)
{
    if
    :: !(breaker[me] & BRK_DROP) ->
        since_drop[me] = 0;
        holder = 0;
        atomic { if :: word == LOCKED -> assert(FAST_OK); word = 0; fast = 1 :: else -> fast = 0 fi }
    :: else -> fast = 0
    fi;
    if
    :: fast -> skip
    :: else ->
        mutex_lock(M_GIL, me);
        drop_locked(me, 0);
        mutex_unlock(M_GIL, me)
    fi;
    fast = 0
}

inline gil_yield(me, rc)
{
    mutex_lock(M_GIL, me);
    yld = ((breaker[me] & BRK_DROP) != 0); /* what drop_locked returns */
    drop_locked(me, 1);
    mutex_unlock(M_GIL, me);
    gil_take(me, 0, rc)
}

inline gil_wake_all(me)
{
    mutex_lock(M_GIL, me);
    d_step {
        i = 0;
        do
        :: i < qlen -> q_wake(qid[i]); i++
        :: else -> break
        od;
        i = 0
    };
    cond_broadcast(switch_cond, W_SWITCH);
    mutex_unlock(M_GIL, me)
}

/* gil_barrier with no deadline: pass through the GIL once, queued as a
   returner while it waits. */
inline gil_barrier(me)
{
    mutex_lock(M_GIL, me);
    atomic { word = word + PIN; pinned[me] = 1 };
    do
    :: !(word & LOCKED) -> word = word | LOCKED;
        if
        :: queued -> q_leave(me); queued = 0
        :: else -> skip
        fi;
        release_locked(me); break
    :: else ->
        request_drop(me);
        if
        :: !queued -> q_push(me, 1); queued = 1
        :: else -> skip
        fi;
        q_sleep(me, 1, timed_out); hot = 0
    od;
    atomic { word = word - PIN; pinned[me] = 0 };
    mutex_unlock(M_GIL, me);
    timed_out = 0; found = 0
}

/* ======================================================================
 * gilstate.c
 * ====================================================================== */

inline ts_attach(me, urgent, rc)
{
    gil_take(me, urgent, rc);
    if
    :: rc == OK -> attached[me] = 1
    :: else -> skip
    fi
}

inline ts_detach(me)
{
    attached[me] = 0;
    gil_drop(me)
}

/* Guest code: where a thread may only be while it holds the GIL. */
inline guest(me)
{
    WANT(me, 0);
    HAS(me, 1);
    atomic {
        in_guest++;
        assert(in_guest == 1 && (word & LOCKED) && attached[me]);
        assert(!fin_done)      /* nothing runs guest code after finalize */
    };
    in_guest--;
    HAS(me, 0)
}

/* async_deliver: move pending to delivered (interp mutex). */
inline async_deliver(me, rc)
{
    mutex_lock(M_INTERP, me);
    breaker[me] = breaker[me] & ~BRK_ASYNC;
    if
    :: has_pending[me] && defer[me] == 0 ->
        has_pending[me] = 0; has_delivered[me] = 1; rc = EASYNC
    :: else -> rc = OK
    fi;
    mutex_unlock(M_INTERP, me)
}

inline breaker_after_block(me, rc)
{
    b = breaker[me];
    if
    :: b & BRK_FINAL -> ts_detach(me); rc = EFINALIZING
    :: else ->
        if
        :: b & BRK_ASYNC -> async_deliver(me, rc)
        :: else -> rc = OK
        fi
    fi
}

/* tether_checkpoint (the relaxed-load fast path, then checkpoint_slow). */
inline checkpoint(me, rc)
{
    rc = OK;
    if
    :: breaker[me] == 0 -> skip
    :: else ->
        b = breaker[me];
        if
        :: b & BRK_FINAL -> ts_detach(me); rc = EFINALIZING
        :: else ->
            if
            :: b & BRK_DROP ->
                gil_yield(me, rc);
                if
                :: rc != OK -> attached[me] = 0
                :: else -> skip
                fi
            :: else -> skip
            fi;
            if
            :: rc == OK -> breaker_after_block(me, rc)
            :: else -> skip
            fi
        fi
    fi
}

/* breaker_signal: called with the interp mutex held. */
inline breaker_signal(t, bits, me)
{
    assert(mtx[M_INTERP] == me);
    breaker[t] = breaker[t] | bits;
    if
    :: wait_reg[t] ->
        mutex_lock(M_OBJ, me);
        cond_broadcast(obj_cond, W_OBJ);
        mutex_unlock(M_OBJ, me)
    :: else -> skip
    fi
}

/* tether_thread_raise -> post_async. */
inline thread_raise(t, me)
{
    mutex_lock(M_INTERP, me);
    raised++;
    has_pending[t] = 1;         /* replaces an undelivered one */
    if
    :: defer[t] == 0 -> breaker_signal(t, BRK_ASYNC, me)
    :: else -> skip
    fi;
    mutex_unlock(M_INTERP, me)
}

inline async_fetch(me)
{
    mutex_lock(M_INTERP, me);
    assert(has_delivered[me]);
    has_delivered[me] = 0;
    mutex_unlock(M_INTERP, me)
}

inline async_defer(me)
{
    mutex_lock(M_INTERP, me);
    defer[me]++;
    mutex_unlock(M_INTERP, me)
}

inline async_allow(me)
{
    mutex_lock(M_INTERP, me);
    defer[me]--;
    if
    :: defer[me] == 0 && has_pending[me] -> breaker[me] = breaker[me] | BRK_ASYNC
    :: else -> skip
    fi;
    mutex_unlock(M_INTERP, me)
}

/* ======================================================================
 * wait.c: wait_run on an event nobody sets (only an asynchronous exception
 * or finalize ends it), with no timeout.
 * ====================================================================== */

inline set_wait(me, v)
{
    mutex_lock(M_INTERP, me);
    wait_reg[me] = v;
    mutex_unlock(M_INTERP, me)
}

/* block(): the event is never set, so poll always says WAIT_AGAIN. */
inline block(me)
{
    mutex_lock(M_OBJ, me);
    do
    :: breaker[me] & (BRK_ASYNC | BRK_FINAL) -> break
    :: else -> cond_wait(obj_cond, W_OBJ, M_OBJ, me)
    od;
    mutex_unlock(M_OBJ, me)
}

inline event_wait(me, rc)
{
    rc = AGAIN;
    do
    :: breaker[me] & (BRK_ASYNC | BRK_FINAL) ->
        breaker_after_block(me, rc);
        if
        :: rc != OK -> break
        :: else -> skip         /* a defer swallowed it: wait on */
        fi
    :: else ->
        set_wait(me, 1);
        ts_detach(me);
        block(me);
        set_wait(me, 0);
        ts_attach(me, 1, rc);
        if
        :: rc != OK -> break    /* EFINALIZING: stays detached */
        :: else -> skip         /* interrupted: deliver at the top */
        fi
    od
}

/* ======================================================================
 * runtime.c: finalize of the interpreter (steps 3 and 4; there is no
 * non-daemon thread to join, and no deadline).
 * ====================================================================== */

inline mark_finalizing(me)
{
    finalizing = 1;
    mutex_lock(M_INTERP, me);
    i = 1;
    do
    :: i <= NT -> breaker_signal(i, BRK_FINAL, me); i++
    :: else -> break
    od;
    i = 0;
    mutex_unlock(M_INTERP, me);
    gil_wake_all(me)
}

#define LOCALS byte tk, i, rc, b, ho; bit fast, taken, requested, timed_out, found, urg, ret, yld, queued, hd, hs, hot, gr, due, aw

/* ======================================================================
 * The threads of each configuration
 * ====================================================================== */

#if !defined(FIN) && !defined(ASYNC)

/*
 * A worker takes the GIL, runs guest code with checkpoints (possibly
 * forever: a CPU-bound thread), drops it, and does something else before
 * it asks again: non-GIL work, or a blocking call (which re-takes with the
 * convoy rule).  Time is not modelled; "something else" is assumed to last
 * at least as long as a signalled thread takes to queue for the mutex
 * (woken[] == 0).  -DTIGHT drops that assumption: a release/ensure loop with
 * nothing in between (see README: it starves the other thread).
 */
proctype Worker(byte me)
{
    LOCALS;
    bit blocked;
#ifdef ROUNDS
    byte round;
    if                  /* the first take may come back from a wait too */
    :: blocked = 0
    :: blocked = 1
    fi;
#endif
    do
#ifdef ROUNDS
    :: round == ROUNDS -> break
    :: round < ROUNDS -> round++;
#else
    ::
#endif
       WANT(me, 1);
       ts_attach(me, blocked, rc);
       assert(rc == OK);
       guest(me);
#ifdef ROUNDS
       if
       :: checkpoint(me, rc); assert(rc == OK); guest(me)
       :: skip
       fi;
#else
       do
       :: checkpoint(me, rc); assert(rc == OK); guest(me)
       :: break
       od;
#endif
       ts_detach(me);
       if
       :: blocked = 0
       :: blocked = 1
       fi;
#ifdef TIGHT
       if
       :: nsig == 0 && woken[W_SWITCH] == 0
       :: skip
       fi
#else
       nsig == 0 && woken[W_SWITCH] == 0
#endif
    od
}

init {
    atomic {
        byte t = 1;
        do
        :: t <= NT -> run Worker(t); t++
        :: else -> break
        od
    }
}

#endif /* default */

#ifdef FIN

/* Thread 1: a daemon thread started by tether, running guest code with
   checkpoints; it returns when a take or a checkpoint says EFINALIZING. */
proctype Daemon(byte me)
{
    LOCALS;
    ts_attach(me, 0, rc);
    do
    :: rc != OK -> break
    :: else ->
        guest(me);
        checkpoint(me, rc);
#ifndef NO_BLOCKING
        if
        :: rc == OK ->
            if
            :: ts_detach(me); ts_attach(me, 1, rc)  /* a blocking call */
            :: skip
            fi
        :: else -> skip
        fi
#endif
        skip
    od;
    assert(!attached[me]);
    gone[me] = 1
}

/* Thread 2: a foreign thread calling into the interpreter in a loop with
   nested ensures; ensure says EFINALIZING once finalize started. */
proctype Foreign(byte me)
{
    LOCALS;
    do
    :: finalizing -> break      /* state_for: the cached state is finalizing */
    :: else ->
        ts_attach(me, 0, rc);
        if
        :: rc != OK -> break
        :: else -> skip
        fi;
        guest(me);
        /* a nested ensure: a frame only, no GIL work */
        checkpoint(me, rc);
        if
        :: rc == OK -> guest(me); ts_detach(me)  /* inner release: nothing; outermost: drop */
        :: else -> break                         /* detached by finalize: releases are no-ops */
        fi
    od;
    assert(!attached[me]);
    gone[me] = 1
}

/* Thread 2 with -DWAITER: blocked in tether_event_wait(e, -1) on an event
   nobody sets. */
proctype Waiter(byte me)
{
    LOCALS;
    ts_attach(me, 0, rc);
    if
    :: rc == OK -> guest(me); event_wait(me, rc); assert(rc == EFINALIZING)
    :: else -> skip
    fi;
    assert(!attached[me]);
    gone[me] = 1
}

proctype Finalizer(byte me)
{
    LOCALS;
    mark_finalizing(me);
    gil_barrier(me);
    fin_done = 1
}

init {
    atomic {
        run Daemon(1);
#ifdef WAITER
        run Waiter(2);
#else
        run Foreign(2);
#endif
        run Finalizer(CTL)
    }
}

#endif /* FIN */

#ifdef ASYNC

#define RAISES 2

/* Thread 1: the target.  Each round it may run a cleanup section inside
   defer/allow (where exceptions stay pending), and then either runs guest
   code with a checkpoint or blocks in an event wait that only an
   asynchronous exception can end. */
proctype Target(byte me)
{
    LOCALS;
    ts_attach(me, 0, rc);
    assert(rc == OK);
    do
    :: if
       :: async_defer(me); guest(me); checkpoint(me, rc); assert(rc == OK);
          async_allow(me)
       :: skip
       fi;
       if
       :: guest(me); checkpoint(me, rc);
          if
          :: rc == EASYNC -> async_fetch(me)
          :: else -> assert(rc == OK)
          fi
       :: event_wait(me, rc); assert(rc == EASYNC); async_fetch(me)
       fi
    od
}

/* Thread 2: contends for the GIL, so the target's waits and checkpoints
   go through the slow paths. */
proctype Other(byte me)
{
    LOCALS;
    do
    :: ts_attach(me, 0, rc); assert(rc == OK); guest(me);
       checkpoint(me, rc); assert(rc == OK); ts_detach(me);
       nsig == 0 && woken[W_SWITCH] == 0   /* as Worker */
    od
}

proctype Raiser(byte me)
{
    LOCALS;
    do
    :: raised < RAISES -> thread_raise(1, me)
    :: else -> break
    od
}

init {
    atomic {
        run Target(1);
#ifndef NO_OTHER
        run Other(2);
#endif
        run Raiser(CTL)
    }
}

#endif /* ASYNC */

/* ======================================================================
 * Liveness, compiled in on demand (pan -a -f: weak fairness)
 * ====================================================================== */

#ifdef LIVE
/* Thread LIVE, once it asks for the GIL, eventually gets it. */
ltl starve { [] (want[LIVE] -> <> has[LIVE]) }
#endif
#ifdef FIN_LIVE
/* Finalize returns, and every thread then leaves for good. */
ltl finalize_ends { <> (fin_done && gone[1] && gone[2]) }
#endif
#ifdef ASYNC_LIVE
/* Every raise is delivered or replaced by a newer one: nothing stays
   pending while the target is not deferring. */
ltl delivered_all { [] ((has_pending[1] && defer[1] == 0) -> <> !has_pending[1]) }
#endif
