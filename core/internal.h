/*
 * internal.h - the core's data structures and the functions its files share.
 *
 * Lock order (core/lockrank.h ranks them and debug builds check it; a
 * thread takes them only in this order, and never waits for the GIL itself
 * while holding any of them):
 *
 *   0  g_rt_lock          the list of live runtimes (runtime.c)
 *   1  runtime->mutex     a runtime's interpreters and finalize state
 *   2  interp->mutex      an interpreter's thread states, thread registry,
 *                         pending calls, and every thread state's
 *                         asynchronous-exception slots and wait registration;
 *                         its pool of ready thread states (tstate.c)
 *   3  gil->mutex         the GIL's slow path
 *   4  object mutexes     a thread's sentinel, a lock, an event, a channel,
 *                         a thread state's sleep cond; never two at once
 *   5  the plugin registry's lock (pluginreg.c): its records and pins
 *   6  g_handle_lock      the handle table's free list and names
 *   7  g_fault_lock       the fault switches
 *   8  g_lock (trace.c)   the trace recorder: its rings list and strings
 *
 * Every shared field says how it is synchronised, in the same words:
 * "Synchronization: <mutex> | atomic | owner | immutable".  "owner" means
 * only the OS thread the thread state belongs to touches it.
 */
#ifndef TETHER_INTERNAL_H
#define TETHER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "tether/tether.h"
#include "tuning.h"

/* Eval-breaker bits (tstate->breaker). */
#define BREAKER_DROP 0x1u    /* another thread waits for the GIL: drop it */
#define BREAKER_ASYNC 0x2u   /* an asynchronous exception waits for delivery */
#define BREAKER_PENDING 0x4u /* pending calls (main thread only) */
#define BREAKER_FINALIZING 0x8u   /* the interpreter is finalizing */

/* Keeps a slow path out of its fast path's frame. */
#if defined(__GNUC__)
#define T_NOINLINE __attribute__((noinline))
#else
#define T_NOINLINE
#endif

struct tstate;
struct gil_waiter;

struct gil {
    /* Bit 0: locked.  Bits 1..: threads pinning the slow path (waiters, and
       threads that must read `holder` safely).  While any pin is present,
       the GIL changes hands only under `mutex`.  Synchronization: atomic. */
    _Atomic uint64_t word;
    /* The thread state holding the GIL, or NULL while being taken or
       released.  Synchronization: atomic; stable while pinned and locked. */
    _Atomic(struct tstate *) holder;
    /* Counts every acquisition; a waiter compares it across its timed wait
       to see whether any switch happened.  Synchronization: atomic, written
       by the holder. */
    _Atomic uint64_t acquisitions;
    /* The statistics of tether_gil_stats_get.  Synchronization: atomic,
       written by the holder (wait_ns_* by each waiter once it took the
       GIL), read by anyone. */
    _Atomic uint64_t switches;
    _Atomic uint64_t forced_drops;
    _Atomic uint64_t wait_ns_total;
    _Atomic uint64_t wait_ns_max;
    /* The switch interval.  Synchronization: atomic (set by
       tether_set_switch_interval on any thread). */
    _Atomic uint32_t interval_us;
    /* The last thread state that held the GIL.  Synchronization: gil (the
       logical lock: only the holder reads or writes it). */
    struct tstate *last_holder;
    /* Threads in forced switching, waiting on switch_cond for an
       acquisition by someone else.  Synchronization: mutex. */
    int switch_waiters;
    /* The waiters, in the order they get the GIL (gil.c, "The queue"):
       threads coming back from a voluntary wait first (up to prio_last),
       then the others.  Each node is on its waiter's stack.  normal_first
       and normal_since: the first of the others, and since when a
       returner saw it there (anti-starvation).  Synchronization: mutex. */
    struct gil_waiter *head, *tail, *prio_last, *normal_first;
    int64_t normal_since;
    /* A waiter that stood a whole interval at the head of the queue: the
       next drop hands the GIL straight to it (gil.c, "Hand-over").
       Synchronization: mutex. */
    struct gil_waiter *handoff;
    /* Waiters asleep behind the head without a pin (gil.c, "Sleeping
       without a pin"): gil_contended and the forced switch count them
       with the pins.  Synchronization: written under mutex, read
       atomically. */
    _Atomic uint32_t unpinned;
    pthread_mutex_t mutex; /* rank 3: the slow path, the queue, switch_cond
                              and every waiter's own cond */
    pthread_cond_t switch_cond; /* someone took the GIL */
};

/* An ensure that attached a state (nested ensures of the state already
   attached only move os->tok). */
struct frame {
    struct tstate *ts;   /* the state this ensure attached */
    struct tstate *prev; /* the state attached before (re-attached later) */
    uint64_t tok;        /* the token this ensure returned */
};

/* Whose the outstanding tokens of a thread are: the tokens from `start`
   up to the next run's start - 1 (or os->tok, for the innermost run)
   were got while a state of the runtime whose handle is `rt` was
   attached (the tokens from os->wild_at on, if set, are every
   runtime's: tuning.h, OWNER_RUNS).  Kept by os_note_owner at each change of the attached
   state, so that a nested ensure, which keeps the owner, costs nothing
   here (runtime.c, innermost_token_of). */
struct owner_run {
    uint64_t start;
    uint64_t rt;
};

/* Ensure tokens are os->tok after the ensure: [ 40 OS-thread serial |
   24 nesting level ] (see struct osthread). */
#define TOKEN_LEVEL_BITS 24
#define TOKEN_LEVEL_MASK ((1u << TOKEN_LEVEL_BITS) - 1)

/* Per-OS-thread record: what this thread is attached to, its ensure stack,
   and its cached thread states.  Synchronization: owner (thread-local),
   except `cache`, which the fork child and finalize walk only for their own
   thread. */
struct osthread {
    struct tstate *current; /* attached state, or NULL (os_set_current) */
    /* Derived from the fields below by os_refresh, for the nested fast
       paths of tether_ensure and tether_release (ensure.c): the handle of
       the attached interpreter (0: detached), and the highest token that
       tether_release must not treat as a nested no-op (the innermost
       frame's, the finalize floor, the level-0 base; all ones: detached),
       and the token at which the nesting level is full (0: detached). */
    uint64_t cur_h;
    uint64_t rel_floor;
    uint64_t ens_limit;
    struct tstate *cache;   /* states of this thread, linked by os_next */
    uint32_t made;          /* states cached so far: their stamps */
    struct frame *frames;
    uint32_t depth, cap;
    /* [ serial | nesting level ]: the token of the innermost ensure; the
       serial is unique per OS thread, so a token of another thread never
       matches. */
    uint64_t tok;
    uint64_t serial;
    /* The innermost token when a tether_runtime_finalize on this thread
       detached it and dropped its ensure frames: that token and every
       outer one are invalid, and releasing one is refused. */
    uint64_t tok_floor;
    uint64_t ident;
    /* The state tether_thread_start made for this thread, while its
       bootstrap runs.  Owned by the bootstrap: no other path frees it (an
       ensure that finds it finalizing, finalize's eviction), and finalize
       and destroy refuse to run on this thread (docs/threading-model.md,
       "Who owns a thread state"). */
    struct tstate *boot;
    struct thread *boot_thread; /* its thread object, while boot is set */
    /* The tokens of the last EVICTED_MAX saved states that finalize
       deleted from the cache (0: none), so that restoring one answers
       EFINALIZING rather than "not saved here"; `evicted_next` is the
       slot the next one takes.  Last: away from the fast paths' fields. */
    uint64_t evicted[EVICTED_MAX];
    uint32_t evicted_next;
    /* The owners of the outstanding tokens, outermost first (struct
       owner_run).  Runs that start above os->tok + 1 are stale: every
       token of theirs was released, and the next os_note_owner drops
       them.  While attached, the innermost run is the attached state's
       runtime's and starts at most at os->tok + 1, and os->rel_floor keeps
       the fast release from bringing os->tok below its start - 1: a token
       of an outer run is released on the slow path, which notes the
       owner again. */
    uint32_t nruns;
    /* The stack was full when another runtime was attached: the tokens
       from this level on are every runtime's (a finalize on the thread
       makes them invalid whatever its runtime).  0: none.  Cleared by
       os_note_owner once no token of that level is outstanding, so the
       over-reach ends with the tokens past the bound (a run noted for a
       moment, with no token got, leaves none).  Beside nruns: the
       inline os_note_owner reads both. */
    uint64_t wild_at;
    struct owner_run runs[OWNER_RUNS];
};

struct interp;
struct thread;

struct tstate {
    /* tether_sleep waits here.  rank 4.  First, so that clearing the rest
       (TS_CLEAR_FROM) leaves them initialised. */
    pthread_mutex_t sleep_mutex;
    pthread_cond_t sleep_cond;
    /* ubf_calls went to 0; waited on with interp->mutex. */
    pthread_cond_t ubf_idle;

    struct interp *interp;  /* holds a reference.  Synchronization: immutable */
    /* The binding: NULL/0 until bound, then immutable.  Written under
       interp->mutex (a linked state's binding is read under it by other
       threads: tether_raise_by_ident); the owner reads it freely. */
    struct osthread *os;
    uint64_t ident;
    _Atomic unsigned breaker; /* BREAKER_*.  Synchronization: atomic */
    int attached;           /* holds its GIL.  Synchronization: owner */
    /* Outstanding tether_save_thread calls of this state: a save inside an
       ensure that re-attached a saved state nests in the outer save.
       Synchronization: owner */
    unsigned saved;
    int blocking;           /* detached by tether_call_blocking while fn runs,
                               or by a finalize or destroy while it waits
                               (runtime.c, let_go); nested calls count.
                               Synchronization: owner */
    /* os->tok when this use of it began (cached, or attached again by an
       ensure after its last use ended), and when it was last saved or
       blocked: a nested token in between, released while no frame is
       left, is one of its own (ensure.c, innermost_paused).  Which
       tokens a finalize makes invalid is the owner runs' to say
       (struct owner_run).  Synchronization: owner */
    uint64_t came_at, left_at;
    /* The number its thread gave it (os->made), in its tether_tstate
       token (ts_save_token).  Synchronization: owner */
    uint16_t stamp;
    uint64_t acq_at_drop;   /* gil acquisitions when it last dropped.
                               Synchronization: owner */
    _Atomic(void *) userdata; /* read by requesting threads.
                                 Synchronization: atomic */
    _Atomic uint32_t ensures; /* outstanding ensure frames (debug report).
                                 Synchronization: atomic */
    struct tstate *os_next; /* Synchronization: owner */
    struct tstate *prev, *next; /* interp list.  Synchronization: interp->mutex */
    struct thread *thread;  /* Synchronization: interp->mutex */

    /* Asynchronous exceptions.  Synchronization: interp->mutex. */
    int defer;
    int has_pending, has_delivered;
    int64_t pending_code, delivered_code;
    void *pending_payload, *delivered_payload;
    tether_dtor pending_dtor, delivered_dtor;
    /* The wait this thread is blocked in, woken by a raise or finalize.
       Synchronization: interp->mutex. */
    pthread_mutex_t *wait_mutex;
    pthread_cond_t *wait_cond;
    tether_unblock_fn ubf;
    void *ubf_arg;
    /* A raise or finalize asked for ubf; breaker_unblock calls it once
       interp->mutex is released.  ubf_calls counts the calls of ubf in
       progress: tether_call_blocking does not return before they end.
       Synchronization: interp->mutex. */
    int ubf_due;
    unsigned ubf_calls;
};
#define TS_CLEAR_FROM offsetof(struct tstate, interp)

struct plugin;

/* A call queued by tether_call_soon.  Synchronization: interp->mutex while
   queued; its taker's alone once unlinked. */
struct pending_call {
    int (*fn)(void *);
    void *arg;
    struct plugin *pin; /* keeps an unloadable plugin holding fn mapped */
    struct pending_call *next;
};

struct runtime;

struct interp {
    uint64_t handle;        /* Synchronization: immutable */
    uint64_t rt_handle;     /* rt->handle, one load nearer for
                               os_note_owner.  Synchronization: immutable */
    struct runtime *rt;     /* holds a reference.  Synchronization: immutable */
    struct gil *gil;        /* Synchronization: immutable */
    struct gil own_gil;     /* used with TETHER_CONFIG_PER_INTERP_GIL */
    int is_main;            /* Synchronization: immutable */
    pthread_mutex_t mutex;  /* rank 2 */
    struct tstate *tstates; /* Synchronization: mutex */
    /* Ready thread states for ts_new to take before it allocates
       (tstate.c, "The pool"): unlinked from `tstates`, bound to no
       thread, holding no interp reference, their mutex and conds
       initialised; linked by `next`; at most TS_POOL_MAX.  Emptied for
       good when `finalizing` is set, and in a fork child.
       Synchronization: mutex. */
    struct tstate *pool;
    unsigned pool_len;      /* Synchronization: mutex */
    struct tstate *main_ts; /* runs pending calls.  Synchronization: mutex */
    struct thread *threads; /* started, not finished.  Synchronization: mutex */
    struct pending_call *pending_head, *pending_tail; /* Synchronization: mutex */
    _Atomic int finalizing; /* set once, never cleared.  Synchronization: atomic */
    _Atomic int destroying; /* a tether_interp_destroy runs.  Synchronization: atomic */
    /* The binding's breaker hook and its argument.  Synchronization:
       atomic (hook_ud is stored first; see tether_interp_set_breaker_hook). */
    _Atomic(tether_breaker_fn) hook;
    _Atomic(void *) hook_ud;
    struct interp *next;    /* Synchronization: rt->mutex */
};

struct runtime {
    uint64_t handle;          /* Synchronization: immutable */
    uint32_t flags;           /* Synchronization: immutable */
    tether_excepthook_fn excepthook; /* Synchronization: immutable */
    void *excepthook_ud;      /* Synchronization: immutable */
    pthread_mutex_t mutex;    /* rank 1 */
    struct interp *interps;   /* Synchronization: mutex */
    struct interp *main;      /* Synchronization: immutable */
    uint64_t main_handle;     /* main's handle.  Synchronization: immutable
                                 (read after finalize freed main) */
    struct gil gil;           /* shared by the interpreters by default */
    /* Set by the one tether_runtime_finalize that runs (cleared again only
       if it failed before changing anything).  Synchronization: atomic. */
    _Atomic int finalizing;
    _Atomic uint64_t thread_names; /* for "Thread-N".  Synchronization: atomic */
    uint64_t creator_serial;  /* the creating OS thread.  Synchronization:
                                 immutable */
    struct runtime *next;     /* Synchronization: g_rt_lock */
};

/* How far the OS thread of a joinable thread was reaped (pthread_join). */
enum thread_reap {
    REAP_NOT_YET,     /* a join reaps it; the handle's end detaches it */
    REAP_IN_PROGRESS, /* one joiner reaps; others wait (it gives the
                         claim back, REAP_NOT_YET, if its deadline passes) */
    REAP_DONE         /* joined (or it exists only in the fork parent) */
};

struct thread {
    uint64_t handle;         /* Synchronization: immutable */
    struct interp *interp;   /* referenced while the OS thread runs; NULL for
                                threads tether did not start.  immutable */
    char *name;              /* Synchronization: immutable */
    int daemon;              /* Synchronization: immutable */
    int joinable;            /* started by tether_thread_start.  immutable
                                once started */
    /* What tether_thread_start was given.  Synchronization: immutable
       (written before pthread_create, which publishes them). */
    size_t stack_size;
    tether_thread_fn fn;
    void *arg;
    /* fn's unloadable plugin, while fn may run.  Synchronization: owner
       (set before pthread_create; the thread itself clears it). */
    struct plugin *pin;
    pthread_t pt;            /* Synchronization: immutable once created */
    uint64_t ident;          /* Synchronization: mutex (set at handshake) */
    pthread_mutex_t mutex;   /* rank 4: the sentinel and the fields below */
    pthread_cond_t cond;
    int started;             /* Synchronization: mutex */
    /* The sentinel.  Synchronization: written under mutex; atomic, since
       a spinning joiner also reads it without the mutex (thread.c). */
    _Atomic int done;
    enum thread_reap reap;   /* Synchronization: mutex */
    int result;              /* fn's, once done.  Synchronization: mutex */
    int user_refs;           /* handles the user holds.  Synchronization: mutex */
    struct tstate *ts;       /* Synchronization: interp->mutex */
    struct thread *reg_prev, *reg_next; /* Synchronization: interp->mutex */
};

/* ---- osthread.c ------------------------------------------------------ */

/* The calling thread's record.  Synchronization: thread-local. */
extern __thread struct osthread *t_os __attribute__((tls_model("initial-exec")));

/* The breaker word tether_checkpoint reads: the attached state's, or
   g_breaker_detached (never 0, never written) while none is.  Kept by
   os_refresh.  Synchronization: thread-local (the pointer). */
extern _Atomic unsigned g_breaker_detached;
extern __thread _Atomic unsigned *t_breaker __attribute__((tls_model("initial-exec")));

/* Notes that the tokens from os->tok + 1 on are got while os->current
   (attached) is: drops the stale runs and starts one for its runtime
   unless the innermost is that runtime's already (struct owner_run).
   Returns the innermost token the fast release must not pass: the
   innermost run's start - 1, or os->wild_at.  Inline, the usual case:
   within the bound, the innermost run is the attached runtime's and holds
   no stale start (it begins at os->tok + 1 at the latest), so nothing
   changes (an outermost ensure after a release of the same runtime's
   frame, a restore of the state saved last); os_note_owner_slow
   (tstate.c) does the rest. */
uint64_t os_note_owner_slow(struct osthread *os);
static inline uint64_t os_note_owner(struct osthread *os)
{
    uint32_t n = os->nruns;
    if (n && !os->wild_at) {
        const struct owner_run *r = &os->runs[n - 1];
        if (r->start <= os->tok + 1 &&
            r->rt == os->current->interp->rt_handle)
            return r->start - 1;
    }
    return os_note_owner_slow(os);
}

/* Recomputes what the fast paths read (cur_h, rel_floor, ens_limit,
   t_breaker) after a change of the calling thread's attached state, ensure
   stack, token floor, or of os->tok on a slow path; and notes the owner of
   the next tokens (os_note_owner).  `os` is the calling thread's
   record. */
static inline void os_refresh_attached(struct osthread *os, uint64_t floor);
static inline void os_refresh(struct osthread *os)
{
    if (!os->current) {
        os->cur_h = 0;
        os->rel_floor = UINT64_MAX;
        os->ens_limit = 0;
        t_breaker = &g_breaker_detached;
        return;
    }
    os_refresh_attached(os, os_note_owner(os));
}

/* os_refresh of an attached thread whose owner runs are noted already:
   `floor` is what os_note_owner returned (push_frame notes before it
   takes the frame's token, and the floor stays the same after). */
static inline void os_refresh_attached(struct osthread *os, uint64_t floor)
{
    struct tstate *ts = os->current;
    uint64_t f = os->depth ? os->frames[os->depth - 1].tok
                           : os->serial << TOKEN_LEVEL_BITS;
    if (f < os->tok_floor)
        f = os->tok_floor;
    /* A token of an outer owner run goes to the slow path (owner_run). */
    os->rel_floor = f > floor ? f : floor;
    os->cur_h = ts->interp->handle;
    os->ens_limit = os->serial << TOKEN_LEVEL_BITS | TOKEN_LEVEL_MASK;
    t_breaker = &ts->breaker;
}

/* Attaches (or, with NULL, detaches) the calling thread's record to `ts`,
   bookkeeping only (the GIL is the caller's business). */
static inline void os_set_current(struct osthread *os, struct tstate *ts)
{
    os->current = ts;
    os_refresh(os);
}

/* The record if it exists; never allocates.  Inline: every public entry
   point asks, from every file. */
static inline struct osthread *osthread_peek(void) { return t_os; }
/* The attached thread state of the calling thread, or NULL. */
static inline struct tstate *ts_current(void)
{
    return t_os ? t_os->current : NULL;
}

/* ---- gil.c ----------------------------------------------------------- */

void gil_init(struct gil *g, uint32_t interval_us);
void gil_destroy(struct gil *g);
/* Takes the GIL for `ts`.  `urgent`: 0, or the caller is coming back
   from a blocking call (the convoy rule): 1, or GIL_URGENT_WAITED for one
   of tether's waits (wait.c), which may also wait awake for the drop it
   asks for (gil.c, q_await).  Returns TETHER_OK or TETHER_EFINALIZING
   (its interpreter is finalizing; the GIL was not taken). */
#define GIL_URGENT_WAITED 2
int gil_take(struct gil *g, struct tstate *ts, int urgent);
/* Releases the GIL held by `ts`. */
void gil_drop(struct gil *g, struct tstate *ts);
/* Drops and, once another thread took it, re-takes the GIL (a forced
   switch, or tether_sleep(0)).  Same returns as gil_take. */
int gil_yield(struct gil *g, struct tstate *ts);
/* 1 if another thread is waiting for the GIL. */
int gil_contended(struct gil *g);
/* Calls fn(holder, ud) with the holder pinned (it cannot release), if the
   GIL is held; fn runs under the gil mutex. */
void gil_with_holder(struct gil *g, void (*fn)(struct tstate *, void *),
                     void *ud);
/* Calls the binding's breaker hook of `h`'s interpreter, if one is set,
   for `h`, a holder pinned by the caller. */
void gil_call_hook(struct tstate *h);
/* Wakes every waiter (finalize). */
void gil_wake_all(struct gil *g);
/* Wakes the head of the queue after g->interval_us changed, so that it
   does not sleep out the old interval.  Takes the gil mutex. */
void gil_interval_changed(struct gil *g);
/* Takes and at once drops the GIL, ignoring finalize, to be sure every
   thread that held it before has let go (threads that take it afterwards
   see the finalizing flag).  Returns 0, or -1 if the deadline passed first. */
int gil_barrier(struct gil *g, int64_t deadline);
void gil_atfork_prepare(struct gil *g);
void gil_atfork_parent(struct gil *g);
void gil_atfork_child(struct gil *g, struct tstate *survivor);

/* ---- interp.c -------------------------------------------------------- */

void interp_ref(struct interp *interp);
void interp_unref(struct interp *interp);
/* Looks an interp handle up; accepts one being finalized (so the caller
   can answer TETHER_EFINALIZING).  Returns a new reference or NULL. */
struct interp *interp_lookup_any(tether_interp h);
/* Looks up an open interp handle (a new reference); on failure sets the
   last error of `fn` and returns NULL. */
struct interp *interp_lookup_open(tether_interp h, const char *fn);
/* Looks a runtime handle up (a new reference), or sets the last error of
   `fn` and returns NULL. */
struct runtime *runtime_get(tether_runtime h, const char *fn);
/* A new runtime with the settings of `c`, in the list of live runtimes;
   NULL when out of memory. */
struct runtime *runtime_new(const tether_config *c);
/* A new interpreter of `rt`, linked into its list.  Returns TETHER_OK,
   TETHER_ENOMEM, or TETHER_EFINALIZING (`rt` is finalizing; only the main
   interpreter is made then). */
int interp_new(struct runtime *rt, int is_main, struct interp **out);
/* Fork (fork.c orders the handlers): prepare takes every registry lock
   (the list, each runtime, each interpreter, each GIL) in rank order;
   parent and child release them (the child makes the GILs anew, keeping
   the calling thread as holder if it held one).  Between prepare and
   child, the child may walk every interpreter with
   registry_foreach_interp_locked. */
void registry_atfork_prepare(void);
void registry_atfork_parent(void);
void registry_atfork_child(void);
void registry_foreach_interp_locked(void (*fn)(struct interp *, void *),
                                    void *ud);

/* ---- breaker.c ------------------------------------------------------- */

/* Sets breaker bits and wakes what must be woken (a blocked wait, the
   binding's hook), and marks an unblock function due.  Called with
   interp->mutex held; the caller then calls breaker_unblock. */
void breaker_signal(struct tstate *ts, unsigned bits);
/* Calls the unblock functions of `interp`'s states marked due, with no
   lock held (they may call tether_call_soon and the like).  Called without
   interp->mutex, holding a reference on `interp`. */
void breaker_unblock(struct interp *interp);

/* ---- threadobj.c ----------------------------------------------------- */

/* A thread object with one user reference and one more reference held by
   the thread itself (dropped when it finishes).  Returns TETHER_OK or
   TETHER_ENOMEM. */
int thread_new(struct interp *interp, const char *name, int joinable,
               struct thread **out);
/* Adds a user reference; the handle is open (the caller holds a lookup
   reference or the thread's state). */
void thread_ref_user(struct thread *t);
/* Drops a user reference; the handle closes with the last one once the
   thread is done.  TETHER_EBADHANDLE if none was left. */
int thread_unref_user(struct thread *t);
/* Links `t` into, or takes it off (if it is on it), its interpreter's
   registry of started threads.  Called with interp->mutex held. */
void thread_register(struct thread *t);
void thread_unregister(struct thread *t);
/* Marks the thread finished (releases the sentinel); a joinable one also
   leaves the registry. */
void thread_finish(struct thread *t, int result);
/* The thread object of the calling thread's attached state, created for
   threads tether did not start (a new user reference).  */
int thread_for_state(struct tstate *ts, uint64_t *out);
/* The one report of an error that no caller can receive: to the
   excepthook of `rt` with the thread handle `t` (0 for none), or else to
   stderr as "tether: WHERE: STATUS_NAME (meaning): MESSAGE". */
void thread_excepthook(const struct runtime *rt, tether_thread t, int code,
                       const char *message, const char *where);
/* Reports the failure of a thread tether started to the runtime's
   excepthook, with the calling thread's last error (GIL held). */
void thread_report(struct interp *interp, struct thread *t, int code);
/* Fork child: a thread of the parent that vanished. */
void thread_atfork_vanished(struct thread *t);

/* ---- tstate.c ------------------------------------------------------- */

/* Grows the ensure stack.  Returns TETHER_OK or TETHER_ENOMEM. */
int osthread_grow_frames(struct osthread *os);
/* Once the ensure stack is empty again, gives a grown one back (to the
   allocator that made it, so tether_set_allocator is not kept waiting by
   a thread that is in no ensure) and goes back to the inline frames. */
void osthread_shrink_frames(struct osthread *os);
/* Frees a state that is not linked anywhere. */
void ts_free_unlinked(struct tstate *ts);
/* 1 if `ts` must outlive what the caller is doing: attached, named by an
   ensure frame of `os`, its bootstrap's own state (os->boot), or detached
   by a tether_call_blocking whose fn is running or a finalize or destroy
   that waits (ts->blocking). */
int osthread_refers(const struct osthread *os, const struct tstate *ts);
/* The tether_tstate token of `ts` (tether_save_thread): its address, with
   its stamp in the 16 bits above a 48-bit address, so that a state made
   at the address of a deleted one has another token (os->evicted). */
static inline uint64_t ts_save_token(const struct tstate *ts)
{
    uint64_t a = (uint64_t)(uintptr_t)ts;
    return a >> 48 ? a : a | (uint64_t)ts->stamp << 48;
}
/* 1 if `ts` is detached but in use: saved (tether_save_thread) or kept by
   a blocking section (ts_block). */
static inline int ts_paused(const struct tstate *ts)
{
    return ts->saved || ts->blocking;
}
/* 1 if an ensure frame of `os` names `ts`: attached by it, or detached by
   it to be attached again at its release. */
static inline int osthread_in_frames(const struct osthread *os,
                                     const struct tstate *ts)
{
    for (uint32_t i = 0; i < os->depth; i++)
        if (os->frames[i].ts == ts || os->frames[i].prev == ts)
            return 1;
    return 0;
}
/* Removes a state from the calling thread's cache and deletes it (a saved
   one's token is remembered in os->evicted). */
void ts_uncache_and_free(struct osthread *os, struct tstate *ts);
/* 1 if `tok` is the token of a saved state deleted by finalize (forgotten
   once answered: a second restore of it is misuse). */
int osthread_take_evicted(struct osthread *os, uint64_t tok);

/* The calling thread's record, created on first use (NULL on ENOMEM). */
struct osthread *osthread_get(void);

/* A new, unbound thread state of `interp` (takes an interp reference),
   for another thread to bind (ts_bind). */
struct tstate *ts_new(struct interp *interp);
/* A new thread state of `interp` bound to the calling thread's record
   `os` and cached on it, taking over the caller's reference on `interp`
   (only when it returns a state). */
struct tstate *ts_new_taking(struct interp *interp, struct osthread *os);
/* Frees `interp`'s pool of ready states (finalize and destroy, with
   `finalizing` set, so that none comes back; interp_dtor).  Called
   without interp->mutex. */
void ts_pool_drain(struct interp *interp);
/* Binds a state made by ts_new to the calling OS thread (under
   interp->mutex) and caches it there. */
void ts_bind(struct tstate *ts, struct osthread *os);
/* Unlinks and frees a detached state (drops its interp reference), or
   gives it to its interpreter's pool; a thread object of a thread tether
   did not start finishes with it. */
void ts_unlink_and_free(struct tstate *ts);
/* Takes `ts` off its interpreter's list (only that).  Called with
   interp->mutex held. */
void ts_unlink(struct tstate *ts);
/* Attaches `ts` (takes its GIL).  Same returns as gil_take. */
int ts_attach(struct tstate *ts, int urgent);
/* Detaches the attached `ts` (drops its GIL). */
void ts_detach(struct tstate *ts);
/* A blocking section of the calling thread, whose attached state is `ts`
   (tether_call_blocking; finalize and destroy waiting).
   ts_block detaches `ts` and keeps it: ts->blocking, so that what runs
   meanwhile on this thread (a finalize of its runtime, an ensure that
   meets it finalizing) frees no state so kept.  It returns a mark
   (os->tok then) for ts_unblock.
   ts_unblock attaches `ts` again.  Returns TETHER_OK; TETHER_EFINALIZING
   (its interpreter is finalizing: the thread stays detached, and the
   state is freed unless something else refers to it); or TETHER_ESTATE
   (code run meanwhile left an ensure unreleased, so the thread is
   attached already: it stays attached through that ensure, whose release
   re-attaches `ts`). */
uint64_t ts_block(struct tstate *ts);
int ts_unblock(struct tstate *ts, uint64_t mark);
/* The end of a thread tether started, once fn has returned (or left
   through pthread_exit: the thread-exit destructor calls it): drops every
   GIL, frees the start-up state os->boot and finishes the thread object
   with `result`. */
void osthread_boot_exit(struct osthread *os, int result);
/* Fork child, under the interpreters' mutexes: unlinks the states of
   threads that vanished (and their thread objects from the registries)
   and makes the survivor's own mutex and conds anew.  Then, with every
   lock released, tstate_atfork_release drops their references. */
void tstate_atfork_child(void);
void tstate_atfork_release(void);
/* The calling thread's cached state for `interp` handle value, or NULL. */
struct tstate *ts_cached(struct osthread *os, tether_interp h);
/* Deletes the calling thread's cached states of the finalized `rt` (or of
   one interp when `only` is set). */
void ts_uncache_finalized(struct osthread *os, struct runtime *rt, struct interp *only);

/* ---- async.c --------------------------------------------------------- */

/* Moves the pending asynchronous exception to the delivered slot and
   returns TETHER_EASYNC, or TETHER_OK if there was none (interp->mutex not
   held). */
int async_deliver(struct tstate *ts);

/* ---- pending.c ------------------------------------------------------- */

/* Runs the pending calls queued before it began, if `ts` is its
   interpreter's main thread state (see pending.c).  Returns TETHER_OK, a
   call's failure, or TETHER_EFINALIZING/ESTATE when a call left the
   thread detached. */
int pending_run(struct tstate *ts);

/* Drops the calls still queued on `interp`, without running them, with
   their plugin pins (tether.h: "Calls still queued at finalize are
   dropped").  Called once the interpreter is marked finalizing, so that
   tether_call_soon queues nothing more: left queued, they pinned an
   unloadable plugin until the interpreter's memory was freed, which a
   thread's cached state may put off for the life of that thread, and an
   unload or finalize waited for them (API fuzzer seed x10).  No lock
   held. */
void pending_drop(struct interp *interp);

/* ---- checkpoint.c ---------------------------------------------------- */

/* Checks the breaker of a thread that just re-attached after blocking:
   TETHER_EASYNC (delivered), or TETHER_EFINALIZING (now detached). */
int breaker_after_block(struct tstate *ts);

/* ---- wait.c ---------------------------------------------------------- */

/* What a wait waits for: `poll` is called with `mutex` held and returns
   WAIT_AGAIN, or a final status (having taken the resource on TETHER_OK);
   `undo` gives the resource back when the waiter cannot re-attach. */
#define WAIT_AGAIN 1
struct waitspec {
    pthread_mutex_t *mutex;
    pthread_cond_t *cond;
    int (*poll)(void *obj);
    void (*undo)(void *obj);
    void *obj;
};
/* Tries once, then waits with the caller's GIL released, interruptible by
   asynchronous exceptions and finalize.  Returns poll's final status,
   TETHER_ETIMEDOUT, TETHER_EASYNC or TETHER_EFINALIZING. */
int wait_run(const char *func, const struct waitspec *w, int64_t timeout_ns);

/* For a wait that usually ends sooner than a park and a wake-up: `budget`
   says (asked once, no lock held) how many nanoseconds to spin, with the
   GIL released, before parking (0: park at once); `peek`, read without
   the mutex while spinning, whether poll may succeed now; `finish` runs
   after poll succeeded, before the caller re-takes the GIL. */
struct waitspin {
    int64_t (*budget)(void *obj);
    int (*peek)(void *obj);
    void (*finish)(void *obj);
};
/* wait_run, spinning and finishing as `s` says. */
int wait_run_spin(const char *func, const struct waitspec *w,
                  const struct waitspin *s, int64_t timeout_ns);

/* Fork child: makes a lock's or an event's mutex and cond anew. */
void wait_atfork_child_object(int type, void *obj);

/* Sets event `h` as tether_event_set does, quietly doing nothing if `h` is
   no longer a live event (a channel's watcher freed before it unwatched).
   Takes the event's mutex: call it holding no RANK_OBJECT lock. */
void event_notify(uint64_t h);
/* Fork child: the same for a channel. */
void channel_atfork_child_object(int type, void *obj);

/* ---- thread.c -------------------------------------------------------- */

/* Joins a thread object (wait on the sentinel, then reap). */
int thread_join_obj(struct thread *t, int64_t timeout_ns);

/* ---- fork.c ---------------------------------------------------------- */

/* Installs the core's pthread_atfork handlers, once. */
void fork_install(void);

#endif
