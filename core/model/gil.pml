/*
 * gil.pml - a Promela model of tether's GIL protocol, checked with spin.
 *
 * It models core/gil.c line by line (the names of the inlines are the names
 * of the C functions), plus the parts of core/gilstate.c and the finalize
 * path of core/runtime.c that touch the GIL.  README.md next to this file
 * maps every variable and process to the C and gives the spin commands.
 *
 * Configurations (spin -D...):
 *   (default)  NT worker threads contending: take, guest code, checkpoint
 *              (drop requests, forced switching), drop, and blocking
 *              sections that come back with the convoy rule.
 *   FIN        finalize racing with a daemon thread, a foreign thread in an
 *              ensure loop, and a waiter that posts drop requests.
 *
 * Everything here is sequentially consistent: the model checks the protocol,
 * not the memory orderings of the C (ThreadSanitizer covers those).
 */

#ifndef NT
#define NT 2
#endif

#define OK 0
#define EFINALIZING 7

/* gil->word */
#define LOCKED 1
#define PIN 2

/* tstate->breaker bits (core/internal.h) */
#define BRK_DROP 1
#define BRK_ASYNC 2
#define BRK_FINAL 8

/* ---- struct gil ------------------------------------------------------ */

byte word;           /* locked bit | pins << 1 */
byte holder;         /* thread id holding the GIL, 0 = NULL */
byte switch_waiters;
/*
 * gil->acquisitions.  The C only ever compares it with a sample taken
 * earlier by the same thread, so the model keeps, per thread, how many
 * acquisitions happened since each sample (saturating), which is exact
 * without an unbounded counter:
 *   since_seen[t]  since take_slow sampled `seen`      (0 or 1)
 *   since_drop[t]  since ts->acq_at_drop was recorded  (0, 1 or 2+)
 */
byte since_seen[NT + 1];
byte since_drop[NT + 1];

/* gil->mutex: a FIFO ticket lock, so weak fairness implies the mutex is
   starvation-free and a liveness failure is the GIL's, not glibc's. */
byte mtx;            /* owner, 0 = free */
byte tk_next, tk_serve;
#define TICKETS (NT + 3)

/* gil->cond and gil->switch_cond: FIFO queues of waiting thread ids.
   `woken` counts threads a signal or broadcast removed from a queue that
   have not yet queued for the mutex again (see Worker: it is how the model
   says "a blocking call lasts longer than a wake-up"). */
chan cond = [NT + 2] of { byte };
chan switch_cond = [NT + 2] of { byte };
byte woken;

/* ---- interpreter and thread states ------------------------------------ */

byte breaker[NT + 1]; /* tstate->breaker */
bit finalizing;       /* interp->finalizing */
byte attached;        /* interp->attached */

/* ---- observation, for the properties ---------------------------------- */

byte in_guest;       /* threads running guest code (holding the GIL) */
bit want[NT + 1];    /* in gil_take */
bit has[NT + 1];     /* took the GIL and runs guest code */

/* ---- gil->mutex and the condition variables --------------------------- */

inline mutex_lock(me)
{
    atomic { tk = tk_next; tk_next = (tk_next + 1) % TICKETS };
    atomic { tk_serve == tk -> mtx = me }
}

inline mutex_unlock(me)
{
    atomic { assert(mtx == me); mtx = 0; tk_serve = (tk_serve + 1) % TICKETS }
}

/* plat_cond_wait with a deadline: releases the mutex and queues in one
   step, wakes when signalled or when the deadline passes, re-takes the
   mutex; `timed_out` is what plat_cond_wait returns (it compares the clock
   with the deadline after waking, so a signalled wait may report 1). */
inline cond_timedwait(c, me, timed_out)
{
    atomic { c!me; assert(mtx == me); mtx = 0; tk_serve = (tk_serve + 1) % TICKETS };
    if
    :: atomic { !(c??[eval(me)]) -> timed_out = 0; woken--;
                tk = tk_next; tk_next = (tk_next + 1) % TICKETS }
    :: atomic { !(c??[eval(me)]) -> timed_out = 1; woken--;
                tk = tk_next; tk_next = (tk_next + 1) % TICKETS }
    :: atomic { c??[eval(me)] -> c??eval(me); timed_out = 1;
                tk = tk_next; tk_next = (tk_next + 1) % TICKETS }
    fi;
    atomic { tk_serve == tk -> mtx = me }
}

inline cond_signal(c)
{
    atomic {
        if
        :: nempty(c) -> c?_; woken++
        :: empty(c) -> skip
        fi
    }
}

inline cond_broadcast(c)
{
    atomic {
        do
        :: nempty(c) -> c?_; woken++
        :: empty(c) -> break
        od
    }
}

/* ---- gil.c ------------------------------------------------------------- */

/* took(): the bookkeeping of the new holder. */
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

/* request_drop(): pinned, mutex held. */
inline request_drop(me, found)
{
    assert(mtx == me);
    atomic {
        if
        :: holder != 0 && (word & LOCKED) -> breaker[holder] = breaker[holder] | BRK_DROP; found = 1
        :: else -> found = 0
        fi
    }
}

/* release_locked(): mutex held. */
inline release_locked(me)
{
    assert(mtx == me);
    word = word & ~LOCKED;
    cond_signal(cond)
}

inline take_slow(me, rc)
{
    mutex_lock(me);
    word = word + PIN;
    urg = (urg && since_drop[me] == 1);
    requested = 0;
    taken = 0;
    do
    :: finalizing -> rc = EFINALIZING; break
    :: else ->
        if
        :: !(word & LOCKED) -> word = word | LOCKED; taken = 1; break
        :: else ->
            if
            :: urg && !requested -> request_drop(me, requested)
            :: else -> skip
            fi;
            since_seen[me] = 0;
            cond_timedwait(cond, me, timed_out);
            if
            :: timed_out && since_seen[me] == 0 -> request_drop(me, found)
            :: else -> skip
            fi
        fi
    od;
    word = word - PIN;
    if
    :: taken ->
        took(me);
        if
        :: switch_waiters > 0 -> cond_broadcast(switch_cond)
        :: else -> skip
        fi
    :: else -> skip
    fi;
    mutex_unlock(me)
}

inline gil_take(me, urgent, rc)
{
    urg = urgent;
    rc = OK;
    fast = 0;
    if
    :: !finalizing -> atomic { if :: word == 0 -> word = LOCKED; fast = 1 :: else -> skip fi }
    :: else -> skip
    fi;
    if
    :: fast -> took(me)
    :: else -> take_slow(me, rc)
    fi;
    fast = 0; requested = 0; taken = 0; timed_out = 0; found = 0; urg = 0
}

inline gil_drop(me)
{
    breaker[me] = breaker[me] & ~BRK_DROP;
    since_drop[me] = 0;
    holder = 0;
    atomic { if :: word == LOCKED -> word = 0; fast = 1 :: else -> fast = 0 fi };
    if
    :: fast -> skip
    :: else ->
        mutex_lock(me);
        breaker[me] = breaker[me] & ~BRK_DROP;
        release_locked(me);
        mutex_unlock(me)
    fi;
    fast = 0
}

inline gil_yield(me, rc)
{
    mutex_lock(me);
    breaker[me] = breaker[me] & ~BRK_DROP;
    since_drop[me] = 0;
    holder = 0;
    word = word + PIN;
    release_locked(me);
    switch_waiters++;
    do
    :: since_drop[me] == 0 && (word >> 1) > 1 && !finalizing ->
        cond_timedwait(switch_cond, me, timed_out)
    :: else -> break
    od;
    switch_waiters--;
    word = word - PIN;
    mutex_unlock(me);
    timed_out = 0;
    gil_take(me, 0, rc)
}

/* ---- gilstate.c (the parts that touch the GIL) ------------------------- */

/* Guest code: the one place a thread may be while it holds the GIL. */
inline guest(me)
{
    want[me] = 0;
    has[me] = 1;
    atomic { in_guest++; assert(in_guest == 1 && (word & LOCKED)) };
    in_guest--;
    has[me] = 0
}

/* tether_checkpoint with a drop request: yield. */
inline checkpoint(me, rc)
{
    if
    :: breaker[me] & BRK_DROP -> gil_yield(me, rc)
    :: else -> rc = OK
    fi
}

#define LOCALS  byte tk, i; bit fast, taken, requested, timed_out, found, urg; byte rc

/*
 * A thread that takes the GIL, runs guest code with checkpoints (possibly
 * forever: a CPU-bound thread), and drops it, to do something else before
 * it takes the GIL again: either non-GIL work (tether_release, then a later
 * tether_ensure) or a blocking call (save/restore, which re-takes the GIL
 * with the convoy rule).  Time is not modelled, so "something else" is
 * assumed to last at least as long as it takes a thread that a signal woke
 * to queue for the mutex again (woken == 0).  With -DTIGHT it may also
 * re-take at once (a release/ensure loop with nothing in between).
 */
proctype Worker(byte me)
{
    LOCALS;
    bit blocked;
    do
    :: want[me] = 1;
       gil_take(me, blocked, rc);
       assert(rc == OK);
       guest(me);
       do
       :: checkpoint(me, rc); assert(rc == OK); guest(me)
       :: break
       od;
       gil_drop(me);
       if
       :: blocked = 0
       :: blocked = 1
       fi;
#ifdef TIGHT
       if
       :: woken == 0
       :: skip
       fi
#else
       woken == 0
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

/* Liveness, compiled in with -DLIVE=t: thread t, once it asks for the GIL,
   eventually gets it (checked with pan -a -f, weak fairness). */
#ifdef LIVE
ltl starve { [] (want[LIVE] -> <> has[LIVE]) }
#endif
