/*
 * tuning.h - the core's limits and defaults, in one place (as Lua's
 * luaconf.h).  Each is a number some code was written around; none is
 * part of the ABI unless docs/abi.md says so.
 */
#ifndef TETHER_TUNING_H
#define TETHER_TUNING_H

/* The GIL's switch interval when tether_config leaves it 0 (CPython's
   default), and the largest one tether_config and
   tether_set_switch_interval accept. */
#define DEFAULT_SWITCH_US 5000u
#define MAX_SWITCH_US 10000000u

/* Ensure frames kept in the thread's own TLS record before the stack
   moves to the heap, and the most it may grow to. */
#define INLINE_FRAMES 8
#define MAX_FRAMES (1u << 23)

/* Owner runs of one thread's outstanding tokens (struct osthread, runs):
   beyond this many the tokens got past the bound, while they are held,
   stand for every runtime (osthread.wild_at; an over-reach of the token
   rule, docs/threading-model.md). */
#define OWNER_RUNS 16

/* Saved states of one thread that finalize deleted, whose restore still
   answers EFINALIZING (the newest this many; an older one's restore is
   "not a state saved on this thread"). */
#define EVICTED_MAX 4

/* Ready thread states an interpreter keeps for new threads (tstate.c,
   "The pool"): deleted states beyond this many go back to the
   allocator. */
#define TS_POOL_MAX 32u

/* How long a join spins, the GIL released, before it parks (wait.c,
   thread.c): while the thread is ending (an asynchronous exception was
   raised at it, or its state is gone), for its sentinel; then, once the
   sentinel is released, for the C library's end of the OS thread.  A
   park and its wake-up cost tens of microseconds on a virtual machine
   (an idle vCPU halts), more than either wait usually lasts. */
#define JOIN_SPIN_NS 50000
#define REAP_SPIN_NS 50000

/* The least time a join gives the reap of a finished thread, whatever its
   own timeout (thread.c): a thread past its sentinel is usually gone within
   microseconds, and `join(t, 0)` of a thread that is_alive calls finished
   should not fail on that; only key destructors that run longer make a
   timed join give up on the reap. */
#define JOIN_REAP_GRACE_NS 10000000

/* A thread name is refused at this many bytes or more (with its NUL, the
   most a name may take). */
#define THREAD_NAME_MAX 128

/* The per-thread last-error sentence, with its NUL. */
#define ERR_BUF 512

/* The handle table grows by chunks of 2^CHUNK_BITS slots, up to
   MAX_CHUNKS chunks (4 Mi live handles). */
#define CHUNK_BITS 10
#define MAX_CHUNKS 4096u

#endif
