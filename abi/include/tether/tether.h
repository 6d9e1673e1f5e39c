/*
 * tether.h - the public C interface of libtether, ABI version 1.
 *
 * tether runs guest code (scripts, plugins, callbacks from other languages)
 * on threads the host created, safely: interpreter and thread states, a GIL
 * with a switch interval and forced switching, ensure/release for foreign
 * threads, an eval breaker that delivers asynchronous exceptions, and
 * joinable threads with a clean finalize.
 *
 * If a function does not appear in this file (or in tether_plugin.h), it is
 * not part of the published interface.
 *
 * Conventions, which every declaration below follows:
 *
 *  - Every function that can fail returns int: TETHER_OK (0) or a negative
 *    TETHER_E* status.  Results go through out-parameters, which are written
 *    only on success.  A failed call changes nothing.  The few that answer
 *    a yes/no question (tether_gil_held, tether_thread_is_alive,
 *    tether_event_is_set) return 1 or 0 instead (the last two, given a bad
 *    handle, TETHER_EBADHANDLE).
 *  - Out-parameters are the pointer arguments a result is written through
 *    (`out`, `count`, `data`/`len`, `*_out`).  Each must point to writable
 *    storage: a NULL one gets TETHER_EINVAL, unless the comment says it
 *    "may be NULL", and then that result is not written.
 *  - Other pointer arguments are read during the call and not kept (the
 *    library copies what it needs), unless the comment says they must stay
 *    valid.  One the call needs (a path, a signature, a function to run)
 *    must not be NULL: NULL gets TETHER_EINVAL, unless the comment says it
 *    "may be NULL" or what NULL means (the defaults, no options, no hook).
 *    Pointers the library only hands back to the caller's own functions
 *    (`arg`, `ud`, `userdata`, `payload`) may be anything, NULL included,
 *    and so may a payload's optional `dtor` (NULL: nothing to destroy).
 *  - Strings the library returns (const char *) are owned by it, never
 *    NULL unless the comment says so, and live as long as the comment
 *    says; the caller never frees them.
 *  - After a failure, tether_last_error() on the same thread returns a
 *    sentence that names the function and the problem.
 *  - Handles are 64-bit values issued from a typed, generation-checked table.
 *    A zero, stale, forged or wrong-type handle gets TETHER_EBADHANDLE, never
 *    a crash.  No handle value is issued twice in a process: each slot of
 *    the table counts 2^32 - 1 generations and is then retired, never
 *    reused, so a stale handle stays stale however many objects are made
 *    after it.  The bits of a handle are not part of the ABI.  A handle a function hands out is owned by the caller until the
 *    matching _free/_release; a handle passed in is only borrowed.
 *    Passing 0 to a _free or _release function is a harmless no-op.
 *  - Timeouts are int64_t nanoseconds on the monotonic clock: a negative
 *    timeout waits forever, 0 tries once.
 *  - Thread tags: [any-thread] may be called by any thread, attached or not;
 *    [gil-held] only by a thread holding its interpreter's GIL;
 *    [owner-thread] only by the thread that made the handle or token;
 *    [async-signal-safe] also from a signal handler.
 *  - Functions the library calls back (every function-pointer type below,
 *    and those of tether_plugin.h) say in a "Thread rules:" sentence on
 *    which thread they are called, whether it holds a GIL, and what they
 *    may call.  "No lock of the library held" means they may call tether;
 *    "must not wait" means no tether_ensure, no tether wait, nothing that
 *    blocks on another thread of the runtime.
 */
#ifndef TETHER_H
#define TETHER_H

#include <stddef.h>
#include <stdint.h>

#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(TETHER_BUILDING_LIBRARY) && defined(__GNUC__)
#define TETHER_API __attribute__((visibility("default")))
#else
#define TETHER_API
#endif

/* ------------------------------------------------------------------------
 * Status codes
 *
 * One list generates the constants, tether_status_name() and
 * tether_strerror(), so names, values and messages cannot drift apart.  The
 * values are part of the ABI and never change.
 * ---------------------------------------------------------------------- */

#define TETHER_STATUS_MAP(XX)                                                 \
    XX(OK, 0, "success")                                                      \
    XX(EINVAL, -1, "invalid argument")                                        \
    XX(EBADHANDLE, -2, "stale, forged or wrong-type handle")                  \
    XX(ENOMEM, -3, "out of memory")                                           \
    XX(ETIMEDOUT, -4, "the timeout elapsed")                                  \
    XX(ESTATE, -5, "not valid in the current state")                          \
    XX(EDEADLK, -6, "the operation would deadlock")                           \
    XX(EFINALIZING, -7, "the runtime or interpreter is shutting down")        \
    XX(EASYNC, -8, "an asynchronous exception was delivered to this thread")  \
    XX(EVERSION, -9, "ABI version mismatch")                                  \
    XX(EPLUGIN, -10, "a plugin failed to load, resolve or initialise")        \
    XX(EAGAIN, -11, "a resource is temporarily exhausted")                    \
    XX(ESIGNATURE, -12, "malformed FFI signature")                            \
    XX(ECLOSED, -13, "the channel is closed")

enum {
#define TETHER__STATUS_ENUM(name, value, msg) TETHER_##name = (value),
    TETHER_STATUS_MAP(TETHER__STATUS_ENUM)
#undef TETHER__STATUS_ENUM
    TETHER__STATUS_LAST = -13
};

/* A thread function's silent exit, like Python's SystemExit. */
#define TETHER_EXIT 1

/* Returns a static English description of `code` ("the timeout elapsed"), or
   "unknown status" for a value that is not a status.  Never NULL.
   [any-thread] [async-signal-safe] */
TETHER_API const char *tether_strerror(int code);

/* Returns the constant's name without its prefix's TETHER_ part
   ("ETIMEDOUT", "OK"), or "UNKNOWN".  Never NULL.
   [any-thread] [async-signal-safe] */
TETHER_API const char *tether_status_name(int code);

/* Returns a sentence about the most recent failure of a tether call on the
   calling thread ("tether_thread_join: a thread cannot join itself"), or ""
   if there was none.  Never NULL.  The string is owned by the library and
   stays valid until the calling thread's next failing tether call.
   [any-thread] */
TETHER_API const char *tether_last_error(void);

/* ------------------------------------------------------------------------
 * Version
 * ---------------------------------------------------------------------- */

/* (TETHER_ABI_MAJOR << 16) | TETHER_ABI_MINOR of the loaded library.
   [any-thread] [async-signal-safe] */
TETHER_API uint32_t tether_abi_version(void);

/* "MAJOR.MINOR.PATCH" of the loaded library, e.g. "1.1.0".
   [any-thread] [async-signal-safe] */
TETHER_API const char *tether_version_string(void);

/* ------------------------------------------------------------------------
 * Handles
 * ---------------------------------------------------------------------- */

typedef uint64_t tether_runtime;
typedef uint64_t tether_interp;
typedef uint64_t tether_thread;
typedef uint64_t tether_lock;
typedef uint64_t tether_event;
typedef uint64_t tether_plugin;
typedef uint64_t tether_callback;
typedef uint64_t tether_channel;

/* An ensure token; pass it back to tether_release on the same thread. */
typedef uint64_t tether_gilstate;
/* A saved thread state; pass it back to tether_restore_thread. */
typedef uint64_t tether_tstate;

/* ------------------------------------------------------------------------
 * Runtime and interpreters
 * ---------------------------------------------------------------------- */

/* Each interpreter has its own GIL, so threads of different interpreters run
   in parallel.  Without it, all interpreters of a runtime share one GIL. */
#define TETHER_CONFIG_PER_INTERP_GIL 0x1u
/* Misuse (bad handles, unbalanced release, wrong-thread tokens, ...) prints
   the last-error sentence and aborts, instead of returning the status.
   The flag is this runtime's: it applies to a thread attached to one of
   its interpreters, or, attached to none, holding a thread state of one
   (a saved state, or one cached after its last release).  A thread
   attached to another runtime, or that never used this one, gets the
   status back.  A call of an FFI callback whose interpreter is gone is not
   misuse: it returns zero, as tether_callback_code says. */
#define TETHER_CONFIG_ABORT_ON_MISUSE 0x2u

/* Called for a thread whose function returned an error status, and for an
   FFI callback whose guest function did (then `t` is the calling thread's
   handle, or 0).  `message` is the thread's last-error sentence, or "".
   Thread rules: called on the thread in question (the dying thread, or
   the thread that called the callback), holding its interpreter's GIL,
   with no lock of the library held. */
typedef void (*tether_excepthook_fn)(tether_thread t, int code,
                                     const char *message, void *ud);

typedef struct tether_config {
    size_t size;                 /* sizeof(tether_config) */
    uint32_t flags;              /* TETHER_CONFIG_* */
    uint32_t switch_interval_us; /* 0 = the default, 5000 */
    tether_excepthook_fn excepthook; /* NULL = one line on stderr */
    void *excepthook_ud;
} tether_config;

/* Creates a runtime with its main interpreter and leaves the calling thread
   attached to the main interpreter, holding its GIL (like Py_Initialize).
   `cfg` may be NULL for the defaults; its `size` must be at least
   offsetof(tether_config, flags) + sizeof(uint32_t) and members beyond
   `size` take their defaults.
   Returns TETHER_EINVAL (NULL out, bad size or unknown flags),
   TETHER_ESTATE (the calling thread already holds a GIL), TETHER_ENOMEM.
   [any-thread] */
TETHER_API int tether_runtime_create(const tether_config *cfg,
                                     tether_runtime *out);

/* Returns the runtime's main interpreter (a borrowed handle, valid until the
   runtime is finalized).
   Returns TETHER_EINVAL, TETHER_EBADHANDLE.  [any-thread] */
TETHER_API int tether_runtime_main_interp(tether_runtime rt,
                                          tether_interp *out);

/* Shuts the runtime down.  Waits up to `timeout_ns` in all for every
   non-daemon thread of every interpreter to finish; then every daemon or
   foreign thread's next tether_ensure, tether_restore_thread,
   tether_checkpoint or wait fails with TETHER_EFINALIZING, and threads blocked
   in a tether wait are woken.  The handles of the runtime and its
   interpreters become invalid.  Then every plugin still loaded into the
   runtime is unloaded (its fini runs; its handle becomes invalid), newest
   first.  Memory is freed only when the last thread
   has left, so a late daemon thread never touches freed memory, and the
   call never waits past its timeout.  The caller must not be a thread the
   runtime started; if it holds the GIL of the runtime it is detached.  On
   the calling thread it makes invalid every tether_ensure token got
   while a state of the runtime was attached, or before an ensure that
   detached one to attach another, and every token outer to those
   (tether_release refuses them); a token got while attached to
   another runtime, inner to all of those, stays valid, even if the
   runtime's state, saved, was restored meanwhile (within the bound
   docs/threading-model.md gives, "A finalize called on the thread
   itself").  A
   caller attached to another runtime is detached while it waits, so that
   it never holds a GIL that the threads waited for, or a finalize of its
   own runtime on another thread, need; it is attached again before the
   call returns, and an asynchronous exception raised at it meanwhile is
   delivered at its next checkpoint.
   Returns TETHER_OK, TETHER_ETIMEDOUT (at the deadline, non-daemon threads
   were still running, or a thread, foreign or not, still held a GIL of the
   runtime without reaching a checkpoint; the runtime was finalized anyway
   and they fail at their next checkpoint),
   TETHER_EBADHANDLE, TETHER_ESTATE (called from a thread tether_thread_start
   started in this runtime, whether it is attached, detached, or attached to
   another interpreter through tether_ensure; or the runtime is already
   finalizing; nothing changes; or, the runtime finalized, a plugin's fini
   left a tether_ensure unreleased on this thread, which stays attached
   through it), TETHER_ENOMEM (nothing changes: the runtime runs on and may
   be finalized again), TETHER_EFINALIZING (the
   runtime was finalized, but the interpreter of another runtime that the
   caller was attached to began finalizing meanwhile: the caller is left
   detached, as after any wait that returns it; it is returned in place of
   TETHER_ETIMEDOUT when both happened).
   [any-thread] */
TETHER_API int tether_runtime_finalize(tether_runtime rt, int64_t timeout_ns);

/* Creates an interpreter in `rt`.  The calling thread is not attached to it.
   Returns TETHER_EINVAL, TETHER_EBADHANDLE, TETHER_EFINALIZING, TETHER_ENOMEM.
   [any-thread] */
TETHER_API int tether_interp_create(tether_runtime rt, tether_interp *out);

/* Joins the interpreter's non-daemon threads (up to `timeout_ns`), then
   finalizes it with the same guarantees as tether_runtime_finalize.  The
   main interpreter is destroyed only by tether_runtime_finalize.
   A caller attached to another interpreter is detached while it waits and
   attached again before it returns.
   Returns TETHER_OK, TETHER_ETIMEDOUT (as for tether_runtime_finalize: its
   non-daemon threads, or a holder of its GIL that reached no checkpoint,
   were still running at the deadline; it was destroyed anyway),
   TETHER_EBADHANDLE, TETHER_EINVAL (the
   main interpreter), TETHER_ESTATE (the caller is attached to it, or is a
   thread tether_thread_start started in it, even when detached or attached
   to another interpreter, or another tether_interp_destroy of it is in
   progress; nothing changes), TETHER_EFINALIZING (`interp` was
   destroyed, but the caller's own interpreter began finalizing meanwhile:
   the caller is left detached, as after any wait that returns it; it is
   returned in place of TETHER_ETIMEDOUT when both happened).
   [any-thread] */
TETHER_API int tether_interp_destroy(tether_interp interp, int64_t timeout_ns);

/* Sets the switch interval of every GIL of the runtime, in microseconds
   (1 .. 10,000,000), taking effect at once, also for a thread already
   waiting for a GIL.  Returns TETHER_EINVAL, TETHER_EBADHANDLE.
   [any-thread] */
TETHER_API int tether_set_switch_interval(tether_runtime rt, uint32_t us);

/* Reads the switch interval in microseconds.
   Returns TETHER_EINVAL, TETHER_EBADHANDLE.  [any-thread] */
TETHER_API int tether_get_switch_interval(tether_runtime rt, uint32_t *out);

/* ------------------------------------------------------------------------
 * The GIL and thread states
 * ---------------------------------------------------------------------- */

/* Makes the calling thread hold `interp`'s GIL with a thread state of that
   interpreter, creating the state on first use; works on any thread,
   including threads the runtime did not create.  Calls nest: each returns a
   token to pass to tether_release, innermost first.  A thread holds at most
   one GIL: ensuring interpreter B while attached to A detaches from A, and
   the matching release re-attaches A.  After the outermost release the
   thread state stays cached on the OS thread until it exits, so the next
   ensure costs one GIL acquisition.
   Returns TETHER_EINVAL (NULL out), TETHER_EBADHANDLE, TETHER_EFINALIZING
   (never hangs at shutdown), TETHER_ENOMEM, TETHER_ESTATE (2^24 - 1
   ensures of this thread are outstanding; nothing changes).  [any-thread] */
TETHER_API int tether_ensure(tether_interp interp, tether_gilstate *out);

/* Undoes the tether_ensure that returned `st`: drops the GIL if that ensure
   took it and re-attaches what the ensure detached.  If finalize detached
   the thread meanwhile (a checkpoint or wait answered TETHER_EFINALIZING),
   the release still pairs with the ensure and re-attaches what the ensure
   detached.
   Returns TETHER_OK, TETHER_EFINALIZING (the interpreter the ensure
   detached from is finalizing or was destroyed, so it could not be
   re-attached: the token is released and the thread is left detached),
   TETHER_ESTATE (a token of another thread, out of order, already
   released, or made invalid by tether_runtime_finalize on this thread; or
   the ensure's thread state is detached by tether_save_thread, or by a
   tether_call_blocking whose fn makes the release; nothing changes),
   TETHER_EINVAL (zero token).
   [owner-thread] */
TETHER_API int tether_release(tether_gilstate st);

/* Detaches the calling thread from its interpreter and drops the GIL, so
   other threads run while it blocks.  *out, all 64 bits of it (its upper
   bits are in use), must be passed back to tether_restore_thread on the
   same thread.  Saves nest: a tether_ensure
   made while the state is saved attaches the same state again, and a
   save and restore inside it leave the outer save in place.
   Returns TETHER_EINVAL (NULL out), TETHER_ESTATE (not attached).
   [gil-held] */
TETHER_API int tether_save_thread(tether_tstate *out);

/* Re-takes the GIL and re-attaches the state saved by tether_save_thread.
   A thread coming back from a blocking call is not made to wait a whole
   switch interval behind a CPU-bound holder: it asks for the GIL at once.
   Returns TETHER_OK (attached), TETHER_EASYNC (attached, and an asynchronous
   exception was delivered: fetch it with tether_async_fetch),
   TETHER_EFINALIZING (the interpreter is shutting down: the thread stays
   detached and must return without touching guest state; also for a state
   a finalize on this thread deleted, for the newest four such states,
   once each),
   TETHER_ESTATE (not a state saved on this thread, or the thread is
   attached).  [owner-thread] */
TETHER_API int tether_restore_thread(tether_tstate ts);

/* The eval breaker: guest code calls this periodically while holding the
   GIL.  With nothing pending it costs one relaxed atomic load.  It hands the
   GIL over when another thread has waited longer than the switch interval,
   runs pending calls (on the main thread), and reports asynchronous
   exceptions and shutdown.
   Returns TETHER_OK, TETHER_EASYNC (an asynchronous exception was delivered:
   tether_async_fetch takes it), TETHER_EFINALIZING (the interpreter is
   shutting down: the GIL has been dropped and the thread is detached, so it
   must return without touching guest state), TETHER_ESTATE (not attached),
   or the first error status of a pending call.  [gil-held] */
TETHER_API int tether_checkpoint(void);

/* 1 if the calling thread holds its interpreter's GIL, else 0.
   [any-thread] */
TETHER_API int tether_gil_held(void);

#define TETHER_BEGIN_ALLOW_THREADS                                            \
    {                                                                         \
        tether_tstate tether__save = 0;                                       \
        (void)tether_save_thread(&tether__save);
#define TETHER_END_ALLOW_THREADS                                              \
        (void)tether_restore_thread(tether__save);                            \
    }

/* ------------------------------------------------------------------------
 * Threads
 * ---------------------------------------------------------------------- */

/* Runs holding the interpreter's GIL.  Returns TETHER_OK, TETHER_EXIT
   (silent exit) or an error status, which goes to the excepthook.  A fn
   that ends its thread with pthread_exit finishes as if it returned
   TETHER_EXIT: the GIL is dropped and joiners return.
   Thread rules: called once, on the new thread tether_thread_start made,
   holding its interpreter's GIL, with no lock of the library held: it may
   call anything a [gil-held] thread may. */
typedef int (*tether_thread_fn)(void *arg);

typedef struct tether_thread_opts {
    size_t size;       /* sizeof(tether_thread_opts) */
    const char *name;  /* copied; NULL = "Thread-N"; at most 127 bytes
                          (without the NUL), else TETHER_EINVAL */
    int daemon;        /* 0 = non-daemon: finalize waits for it */
    size_t stack_size; /* 0 = the default */
} tether_thread_opts;

/* Starts an OS thread that attaches to `interp` and runs fn(arg) holding its
   GIL.  Returns only once the new thread has started and is registered (the
   started handshake); the caller's GIL is released while it waits.  `opts`
   may be NULL.
   While fn may run, an unloadable plugin holding it stays loaded.
   If finalize begins before the new thread first holds the GIL, fn is
   never called: the thread ends at once with the result
   TETHER_EFINALIZING (tether_thread_result), so an `arg` that fn would
   have freed is the owner's to free after tether_thread_join.
   Returns TETHER_EINVAL (NULL fn or out, bad opts, a name longer than
   127 bytes: names are never cut), TETHER_EBADHANDLE,
   TETHER_EFINALIZING (also when finalize began while the caller waited for
   the handshake: the thread runs on, without a handle, and the caller stays
   detached), TETHER_ENOMEM, TETHER_EAGAIN (the OS refused a thread;
   nothing is left registered), TETHER_ESTATE (fn is in a plugin being
   unloaded).  [any-thread] */
TETHER_API int tether_thread_start(tether_interp interp, tether_thread_fn fn,
                                   void *arg, const tether_thread_opts *opts,
                                   tether_thread *out);

/* Waits up to `timeout_ns` (negative: no limit; 0: do not wait) for the thread
   to finish and its OS thread to end.  The thread counts as finished once
   its thread state is deleted (tether_thread_is_alive says 0 from then
   on); join then reaps the OS thread (once, whichever joiner gets there
   first; the others wait for that reap), so when join returns OK no
   instruction of the thread is still running.  Any number of threads may
   join the same thread.  The caller's GIL is released while it waits, and
   an asynchronous exception wakes it; the GIL is released too while join
   waits for the reap (the thread's pthread key destructors run before its
   OS thread ends and may take the GIL), which an asynchronous exception
   does not interrupt (it is delivered at the next checkpoint or wait).
   Returns TETHER_OK, TETHER_ETIMEDOUT (still running, or finished but its
   OS thread still runs its key destructors: not reaped, a later join reaps
   it; the reap of a finished thread is given at least 10 ms whatever the
   timeout, so a join with timeout 0 of a thread tether_thread_is_alive
   calls finished succeeds unless its key destructors run longer; without
   pthread_clockjoin_np the reap itself waits without a limit),
   TETHER_EDEADLK (join itself, also from one of its key destructors),
   TETHER_ESTATE (a thread that was not started by
   tether_thread_start, e.g. the main thread), TETHER_EASYNC,
   TETHER_EFINALIZING (the caller could not re-take its GIL: it stays
   detached; the thread may have been reaped), TETHER_EBADHANDLE.
   [any-thread] */
TETHER_API int tether_thread_join(tether_thread t, int64_t timeout_ns);

/* 1 while the thread runs, 0 once it finished, or TETHER_EBADHANDLE.
   [any-thread] */
TETHER_API int tether_thread_is_alive(tether_thread t);

/* Returns a handle to the calling thread (a new reference: release it with
   tether_thread_release).  Works on threads the runtime did not start once
   they are attached.
   Returns TETHER_EINVAL, TETHER_ESTATE (not attached), TETHER_ENOMEM.
   [gil-held] */
TETHER_API int tether_thread_current(tether_thread *out);

/* The thread's OS identifier (the value tether_raise_by_ident takes).
   Returns TETHER_EINVAL, TETHER_EBADHANDLE.  [any-thread] */
TETHER_API int tether_thread_ident(tether_thread t, uint64_t *out);

/* The thread's name, owned by the handle and valid until its last release.
   Returns TETHER_EINVAL, TETHER_EBADHANDLE.  [any-thread] */
TETHER_API int tether_thread_name(tether_thread t, const char **out);

/* The value the thread function returned, once the thread finished.
   Returns TETHER_EINVAL, TETHER_EBADHANDLE, TETHER_ESTATE (still running).
   [any-thread] */
TETHER_API int tether_thread_result(tether_thread t, int *out);

/* Drops one reference to the handle; the thread runs on.  The handle dies
   with its last reference.  Returns TETHER_OK, TETHER_EBADHANDLE (0 is OK).
   [any-thread] */
TETHER_API int tether_thread_release(tether_thread t);

/* Writes up to `cap` handles (new references) of the live threads of
   `interp` to `buf`, and the number of live threads to *count (which may
   exceed `cap`).  `buf` may be NULL when `cap` is 0.
   Returns TETHER_EINVAL, TETHER_EBADHANDLE, TETHER_ENOMEM.  [any-thread] */
TETHER_API int tether_thread_list(tether_interp interp, tether_thread *buf,
                                  size_t cap, size_t *count);

/* ------------------------------------------------------------------------
 * Blocking calls that can be interrupted
 * ---------------------------------------------------------------------- */

/* Cuts a blocking call of tether_call_blocking short (closes a socket,
   writes a pipe, sets a flag the call polls).
   Thread rules: called on the thread that raises an asynchronous
   exception at the blocked thread, or that finalizes its runtime, not on
   the blocked thread; that thread may hold its own GIL; no lock of the
   library is held.  It must be quick and must not wait (the caller, GIL
   in hand, may be waiting for it); it may call the [any-thread] functions
   that do not wait.  Never called twice at once for one blocking call,
   never after tether_call_blocking returned.  tether_call_blocking says
   the rest. */
typedef void (*tether_unblock_fn)(void *arg);

/* Runs fn(arg) with the GIL released.  While it runs, an asynchronous
   exception raised at this thread, or finalize, calls ubf(ubf_arg) from the
   raising thread so that fn returns early.  `ubf` may be NULL.
   The unblock function runs on the raising (or finalizing) thread, which
   may hold its own GIL, with no lock of the library held: it may call the
   functions any thread may call that do not wait, such as
   tether_call_soon, tether_event_set, tether_channel_close or
   tether_thread_raise.  It must be quick and must not wait for a GIL (no
   tether_ensure, no waits), since this thread, holding its GIL, may be
   waiting for it to return.  It is not called again while a call of it
   is in progress (so it may raise at the very thread it unblocks), and
   never after tether_call_blocking has returned, so ubf_arg may be freed
   then.
   Returns fn's result, or TETHER_EASYNC / TETHER_EFINALIZING when
   re-attaching found one pending (fn's result is then lost);
   TETHER_EINVAL (NULL fn), TETHER_ESTATE (not attached; or fn left a
   tether_ensure of this thread unreleased, so the thread is attached
   through it: it stays so, and fn's result is lost).  [gil-held] */
TETHER_API int tether_call_blocking(int (*fn)(void *arg), void *arg,
                                    tether_unblock_fn ubf, void *ubf_arg);

/* ------------------------------------------------------------------------
 * Asynchronous exceptions
 * ---------------------------------------------------------------------- */

/* Destroys the payload of an asynchronous exception that the library
   drops instead of handing over: a pending one replaced by a newer raise,
   a delivered one not fetched before the next delivery, or either kind
   still there when its thread state is deleted (the thread exits, or
   finalize or tether_interp_destroy deletes it).  A payload taken with
   tether_async_fetch is the caller's, and the library never calls its
   dtor; a raise that fails takes neither.
   Thread rules: called once per dropped payload, on the thread that drops
   it: the raising thread (a newer raise), the receiving thread (a newer
   delivery, at its checkpoint or wait), the exiting thread, or the thread
   running finalize or destroy; it may or may not hold a GIL and must not
   need one; no lock of the library is held.  It must not wait; it may
   free memory and call the [any-thread] functions that do not wait. */
typedef void (*tether_dtor)(void *payload);

/* Raises an asynchronous exception in thread `t`: it sees TETHER_EASYNC at
   its next checkpoint, or at once when blocked in any tether wait.  A newer
   raise replaces an undelivered older one (the older payload's destructor
   runs).  On failure the payload is not taken.
   Returns TETHER_EBADHANDLE, TETHER_ESTATE (the thread has finished).
   [any-thread] */
TETHER_API int tether_thread_raise(tether_thread t, int64_t code,
                                   void *payload, tether_dtor dtor);

/* Like tether_thread_raise, for the attached thread of `interp` whose ident
   is `ident`.  *count_out (may be NULL) is 1 if one was found, else 0, and
   the payload is not taken (CPython's PyThreadState_SetAsyncExc).
   Returns TETHER_OK, TETHER_EBADHANDLE.  [any-thread] */
TETHER_API int tether_raise_by_ident(tether_interp interp, uint64_t ident,
                                     int64_t code, void *payload,
                                     tether_dtor dtor, int *count_out);

/* Takes the delivered asynchronous exception off the calling thread; the
   caller owns the payload (and calls dtor on it if it wants).  Any out may
   be NULL.  Returns TETHER_ESTATE (nothing delivered or not attached).
   [owner-thread] */
TETHER_API int tether_async_fetch(int64_t *code_out, void **payload_out,
                                  tether_dtor *dtor_out);

/* Holds asynchronous exceptions of the calling thread pending (nestable),
   for cleanup code that must not be torn in half.
   Returns TETHER_ESTATE (not attached).  [gil-held] */
TETHER_API int tether_async_defer(void);

/* Undoes one tether_async_defer; a pending exception is delivered at the
   next checkpoint or wait.  Returns TETHER_ESTATE (no defer to undo).
   [gil-held] */
TETHER_API int tether_async_allow(void);

/* ------------------------------------------------------------------------
 * Interruptible waits and synchronisation
 *
 * Every wait first tries once without blocking, then releases the caller's
 * GIL while blocked, measures its timeout on the monotonic clock, and is
 * woken by an asynchronous exception (TETHER_EASYNC) or finalize
 * (TETHER_EFINALIZING, after which the thread stays detached, as after
 * tether_checkpoint).  A wait that succeeded is not undone by an asynchronous
 * exception that arrives while it re-takes the GIL: the exception is
 * delivered at the next checkpoint or wait.  Waits may also be called by
 * unattached threads, which they cannot interrupt.
 * ---------------------------------------------------------------------- */

/* Sleeps `ns` (0 yields the GIL to a waiting thread).
   Returns TETHER_OK, TETHER_EASYNC, TETHER_EFINALIZING, TETHER_EINVAL
   (negative).  [any-thread] */
TETHER_API int tether_sleep(int64_t ns);

/* A non-recursive lock that any thread may release (like Python's Lock).
   Returns TETHER_EINVAL, TETHER_ENOMEM.  [any-thread] */
TETHER_API int tether_lock_new(tether_lock *out);
/* Frees the lock; waiters wake with TETHER_EBADHANDLE.  [any-thread] */
TETHER_API int tether_lock_free(tether_lock l);
/* Returns TETHER_OK, TETHER_ETIMEDOUT, TETHER_EDEADLK (the caller holds it
   and would wait forever: the calling thread itself acquired it, and no
   release came since; a lock held by a thread that has exited is not held
   by a new thread, even one the OS gave the same pthread_t),
   TETHER_EASYNC, TETHER_EFINALIZING, TETHER_EBADHANDLE.  [any-thread] */
TETHER_API int tether_lock_acquire(tether_lock l, int64_t timeout_ns);
/* Returns TETHER_ESTATE (not locked), TETHER_EBADHANDLE.  [any-thread] */
TETHER_API int tether_lock_release(tether_lock l);

/* An event flag (like Python's threading.Event).
   Returns TETHER_EINVAL, TETHER_ENOMEM.  [any-thread] */
TETHER_API int tether_event_new(tether_event *out);
/* Frees the event; waiters wake with TETHER_EBADHANDLE.  [any-thread] */
TETHER_API int tether_event_free(tether_event e);
/* Sets the flag and wakes every waiter: each wait that began before the
   set returns TETHER_OK, even if the flag is cleared again before the
   waiter runs (as Python's Event.wait returns True).  [any-thread] */
TETHER_API int tether_event_set(tether_event e);
/* Clears the flag.  Waits that began before a set are not affected.
   [any-thread] */
TETHER_API int tether_event_clear(tether_event e);
/* Waits for the flag: returns TETHER_OK if it is set, or once it has been
   set since the wait began (cleared again or not).  Returns TETHER_OK,
   TETHER_ETIMEDOUT, TETHER_EASYNC, TETHER_EFINALIZING, TETHER_EBADHANDLE.
   [any-thread] */
TETHER_API int tether_event_wait(tether_event e, int64_t timeout_ns);
/* 1 if set, 0 if not, or TETHER_EBADHANDLE.  [any-thread] */
TETHER_API int tether_event_is_set(tether_event e);

/* ------------------------------------------------------------------------
 * Observability
 * ---------------------------------------------------------------------- */

typedef struct tether_gil_stats {
    size_t size;            /* sizeof(tether_gil_stats) */
    uint64_t acquisitions;  /* times any thread took the GIL */
    uint64_t switches;      /* acquisitions by a thread other than the last holder */
    uint64_t forced_drops;  /* drops caused by a drop request */
    uint64_t wait_ns_total; /* time threads spent waiting for the GIL */
    uint64_t wait_ns_max;
} tether_gil_stats;

/* Copies the counters of the GIL `interp` uses; out->size must be set and
   only that many bytes are written.
   Returns TETHER_EINVAL, TETHER_EBADHANDLE.  [any-thread] */
TETHER_API int tether_gil_stats_get(tether_interp interp,
                                    tether_gil_stats *out);

/* ------------------------------------------------------------------------
 * Tracing (ABI 1.3)
 *
 * A trace records, per thread and timestamped, who held each GIL of a
 * runtime, who waited for it and why it changed hands: takes (fast or
 * slow, with the wait), drops (release, yield, forced switch, blocking
 * call, wait, and whether a drop request was pending), drop requests and
 * who posted them, asynchronous exceptions posted and delivered, thread
 * start, exit and join, ensure and release, plugin load and unload, and
 * the phases of finalize.  It is written as Chrome/Perfetto trace-event
 * JSON (one track per thread, "holds GIL" and "waits for GIL" slices,
 * flow arrows from a drop request to the drop it caused), which opens
 * as-is in ui.perfetto.dev or chrome://tracing; scripts/gil-timeline
 * draws it as a picture.  docs/tracing.md describes the format.
 *
 * One trace records at a time in a process.  While none does, the hooks
 * cost one predictable branch each.  Each thread records into a ring of
 * its own (no lock on the GIL's paths), of at most TETHER_TRACE_EVENTS
 * events (the environment variable, read at start: 64 to 16777216, a
 * number out of that range is brought into it; default 65536; an event
 * is 32 bytes in memory); a full ring overwrites its oldest events, and the JSON
 * counts them ("dropped_events").  The trace is written when it stops:
 * tether_trace_stop, tether_runtime_finalize of the traced runtime, or the
 * exit of the process (atexit).  Setting TETHER_TRACE=path in the
 * environment starts a trace into `path` ("%p" becomes the process id) in
 * every tether_runtime_create while no trace records.
 * ---------------------------------------------------------------------- */

/* Starts recording a trace of runtime `rt`, to be written to the file
   `path` (created or truncated now, so that a bad path fails here), or,
   with `path` NULL, to the descriptor `fd` (duplicated now: the caller
   keeps `fd` and may close it; the library writes to its duplicate at
   stop and closes that).  Exactly one of the two: a path with fd -1, or
   NULL with fd >= 0.  `flags` must be 0 (none are defined yet).
   A path that is not a regular file (a device, a FIFO) is not truncated.
   Returns TETHER_OK, TETHER_EINVAL (flags not 0, both or neither of path
   and fd, an empty path, a path that cannot be opened for writing, or a
   descriptor that is not open or not open for writing: the sentence says
   which), TETHER_EBADHANDLE, TETHER_EFINALIZING (the runtime is
   finalizing), TETHER_ESTATE (a trace already records, of this runtime or
   another, or another start is under way; nothing changes: the file is
   not opened), TETHER_ENOMEM, TETHER_EAGAIN (no descriptor left).  A
   start racing a finalize of `rt` either fails or is written by it.
   [any-thread] */
TETHER_API int tether_trace_start(tether_runtime rt, const char *path,
                                  int fd, uint32_t flags);

/* Stops the trace of `rt` and writes it (before returning) to the file or
   descriptor tether_trace_start was given.  Threads that record an event
   meanwhile are waited for, never blocked: their later events are not
   recorded.
   The write never raises SIGPIPE: a pipe or socket whose reader is gone
   is a write error like any other.
   Returns TETHER_OK, TETHER_EBADHANDLE, TETHER_ESTATE (no trace of `rt`
   records), TETHER_EAGAIN (the disk is full: the trace is lost; the
   recording stopped all the same), TETHER_ENOMEM (no memory to build the
   file: the same), TETHER_EINVAL (another write error, such as EPIPE: the
   same).
   [any-thread] */
TETHER_API int tether_trace_stop(tether_runtime rt);

/* ------------------------------------------------------------------------
 * Pending calls
 * ---------------------------------------------------------------------- */

/* Queues fn(arg) to run on the interpreter's main thread (the first thread
   attached to it that is still alive) at its next checkpoint, holding the
   GIL.  A checkpoint runs only the calls queued before it began, in order;
   calls queued meanwhile, by other threads or by those calls themselves,
   wait for the next checkpoint (as in CPython), so a call that queues
   itself again cannot keep one checkpoint busy for ever.  A non-OK return
   of fn is returned by that checkpoint, and the calls after it wait for the
   next one.  fn may finalize the runtime: that checkpoint then returns
   TETHER_EFINALIZING with the thread detached.  Calls still queued at
   finalize are dropped.
   Returns TETHER_EINVAL, TETHER_EBADHANDLE, TETHER_EFINALIZING,
   TETHER_ESTATE (fn is in a plugin being unloaded), TETHER_ENOMEM.
   [any-thread] */
TETHER_API int tether_call_soon(tether_interp interp, int (*fn)(void *),
                                void *arg);

/* ------------------------------------------------------------------------
 * Bindings: waking a guest language's own loop
 * ---------------------------------------------------------------------- */

/* Called by the library when it sets something in the eval breaker of the
   thread that currently holds `interp`'s GIL (a drop request, an
   asynchronous exception, a pending call, shutdown), so that a binding can
   arrange for its guest to call tether_checkpoint soon (the Lua binding
   installs a one-shot hook).  `thread_ud` is the holder's value of
   tether_set_thread_userdata.  It runs on the requesting thread while the
   holder cannot let go of the GIL, so it must be quick, must not block and
   must not call tether.
   Thread rules: called on the requesting thread (any thread: a raiser, a
   thread asking for the GIL, one queueing a pending call, the finalizing
   thread), possibly while the library holds the interpreter's locks: it
   must not call tether at all and must not block. */
typedef void (*tether_breaker_fn)(void *thread_ud, void *ud);

/* Installs (or with NULL fn removes) the interpreter's breaker hook.
   Returns TETHER_EBADHANDLE.  [any-thread] */
TETHER_API int tether_interp_set_breaker_hook(tether_interp interp,
                                              tether_breaker_fn fn, void *ud);

/* Sets the calling thread's user value for its current interpreter.
   Returns TETHER_ESTATE (not attached).  [gil-held] */
TETHER_API int tether_set_thread_userdata(void *ud);

/* Reads it (NULL if unset).  Returns TETHER_EINVAL, TETHER_ESTATE.
   [gil-held] */
TETHER_API int tether_get_thread_userdata(void **out);

/* ------------------------------------------------------------------------
 * Memory and fault injection
 * ---------------------------------------------------------------------- */

/* The library's allocator.  malloc_fn returns a block of at least `n`
   bytes, aligned as malloc's are, or NULL (the call that needed it then
   fails with TETHER_ENOMEM); free_fn frees a block malloc_fn made (it is
   never given NULL).  `ud` is passed to both untouched.
   Thread rules: both are called on any thread, attached or not, with or
   without a GIL, from several threads at once, and possibly while the
   library holds its internal locks: they must be thread-safe, must not
   call tether and must not wait for other threads of the runtime. */
typedef struct tether_allocator {
    size_t size; /* sizeof(tether_allocator) */
    void *(*malloc_fn)(size_t n, void *ud);
    void (*free_fn)(void *p, void *ud);
    void *ud;
} tether_allocator;

/* Replaces the allocator every later allocation of the library uses (NULL
   restores malloc/free).  Every block is freed by the allocator that made
   it, so the allocator can be replaced only while no block made with the
   current one is alive: no runtime exists, and every lock, event, channel,
   received message, callback and thread handle made since the last
   replacement has been freed or released, and every thread that used the
   library has exited or had its states freed by finalize.  The simplest
   is to set it once, before any other tether call.  Blocks the library
   keeps for the life of the process (the handle table) come from the
   system allocator.
   Returns TETHER_EINVAL (bad size or NULL members), TETHER_ESTATE (a runtime
   exists, or blocks of the current allocator are alive: the message says
   how many; nothing changed).  [any-thread] */
TETHER_API int tether_set_allocator(const tether_allocator *a);

/* What tether_fault_inject can make fail. */
#define TETHER_FAULT_ALLOC 1u         /* an allocation returns NULL */
#define TETHER_FAULT_THREAD_CREATE 2u /* pthread_create fails with EAGAIN */

/* For tests: makes the `nth` next operation of kind `what` (1 = the very
   next) fail, and the `count` - 1 after it too (count 0 = every one from
   then on).  nth 0 turns the fault off.  Process-wide.
   Returns TETHER_EINVAL (unknown kind).  [any-thread] */
TETHER_API int tether_fault_inject(uint32_t what, uint64_t nth,
                                   uint64_t count);

/* ------------------------------------------------------------------------
 * Plugins
 *
 * A plugin is a shared object that exports tether_plugin_entry, declared
 * with the descriptor and the host API table in tether_plugin.h; the guide
 * is docs/plugins.md.
 * ---------------------------------------------------------------------- */

/* Loads the plugin at `path` into `rt`: dlopen(RTLD_NOW | RTLD_LOCAL), calls
   its tether_plugin_entry with this library's ABI version, checks the
   descriptor it returns, and runs its init holding the GIL of the runtime's
   main interpreter.  Loading a library that is already loaded into `rt`
   (through any path naming the same file) returns the same handle and
   counts one more reference; each load needs its own tether_plugin_unload.
   The caller's GIL is released while the library is opened.  On failure
   the runtime keeps no reference and fini is not called; a failed init is
   unloaded by tether_plugin_unload's rules (the library stays mapped while
   code of it may run: for ever unless the plugin is unloadable).
   Returns TETHER_EINVAL (NULL path or out), TETHER_EBADHANDLE,
   TETHER_EVERSION (built for another ABI major, or needing a newer minor
   than this library: the message names both versions and the file),
   TETHER_EPLUGIN (no such file, not a loadable shared object, no
   tether_plugin_entry, the entry returned NULL, a malformed descriptor, or
   init failed: the message says which, with the dynamic loader's text when
   there is one), TETHER_EDEADLK (the library's init or fini is running
   and the calling thread is running code of the plugin, so it must not
   wait for it: the fini itself, or a thread the fini may be joining),
   TETHER_EFINALIZING (the runtime is finalizing; or it was finalized
   while init ran, and the plugin was unloaded again, fini included),
   TETHER_EASYNC (an asynchronous
   exception arrived while the GIL was released), TETHER_ENOMEM.
   [any-thread] */
TETHER_API int tether_plugin_load(tether_runtime rt, const char *path,
                                  tether_plugin *out);

/* Drops one reference to the plugin; the last one unloads it.  Unloading
   waits until no tether_ffi_call into the plugin's code is in progress
   and no init or fini of the same library runs in another runtime (the
   init and fini calls of one library never run at the same time), runs
   its fini holding no GIL, and forgets it.  By default the library
   stays mapped for the life of the process.  A plugin whose descriptor sets
   TETHER_PLUGIN_UNLOADABLE is then dlclosed, once no callback whose function
   is in its code is alive, no thread started with a function in its code
   is running and no call of a function in its code queued with
   tether_call_soon is still pending.  All the waiting together takes at most `timeout_ns`, with
   the caller's GIL released.
   tether_runtime_finalize unloads the plugins still loaded into its
   runtime; their handles are stale afterwards.
   Returns TETHER_OK, TETHER_EBADHANDLE, TETHER_EDEADLK (the calling thread
   is running code of the plugin: a callback called from it, a function of
   it; or it is running an init or fini of the library, which the unload
   would wait for; nothing changes), TETHER_ETIMEDOUT (calls into the
   plugin, or an init or fini of its library in another runtime, were
   still in progress: it stays loaded, usable, and the reference
   is kept; or, for an unloadable plugin, callbacks or threads into it were
   still alive after fini: it stays mapped but finalized, and a later unload
   waits again), TETHER_ESTATE (another unload of the last reference is in
   progress), TETHER_EASYNC / TETHER_EFINALIZING (an asynchronous exception
   or shutdown was pending when the caller re-took its GIL; if it cut the
   waiting short the plugin stays loaded, and tether_plugin_info tells).
   [any-thread] */
TETHER_API int tether_plugin_unload(tether_plugin p, int64_t timeout_ns);

/* Looks up `name` in the plugin's library (dlsym).  The pointer stays valid
   until the plugin is unloaded, or for ever unless it is unloadable.
   Returns TETHER_EINVAL (NULL name or out), TETHER_EBADHANDLE,
   TETHER_EPLUGIN (no such symbol; the message has the loader's text),
   TETHER_ESTATE (the plugin is being unloaded).  [any-thread] */
TETHER_API int tether_plugin_symbol(tether_plugin p, const char *name,
                                    void **out);

/* The name and version from the plugin's descriptor: copies owned by the
   handle, valid until the plugin is unloaded.  Either out may be NULL.
   Returns TETHER_EBADHANDLE.  [any-thread] */
TETHER_API int tether_plugin_info(tether_plugin p, const char **name,
                                  const char **version);

/* ------------------------------------------------------------------------
 * FFI: C callbacks into guest code, and dynamic calls
 *
 * A signature is "ret(arg,arg,...)" over the types void i8 u8 i16 u16 i32
 * u32 i64 u64 f32 f64 ptr str, e.g. "i32(i32,f64,ptr)" or "void()".  str is
 * a const char *; void is allowed only as the return type or alone between
 * the parentheses; spaces between tokens are ignored; at most 32 arguments.
 * A malformed signature gets TETHER_ESIGNATURE and a message with the
 * column of the problem.  Values travel by address: args[i] points to a
 * value of the i-th argument's C type (int8_t ... uint64_t, float, double,
 * void *, const char *) and `ret` to storage of the return type's.  The
 * guide is docs/ffi.md.
 * ---------------------------------------------------------------------- */

/* The guest side of a callback.  Called holding the GIL of the callback's
   interpreter; `ret` is NULL when the return type is void.  Returns
   TETHER_OK, or an error status: the C caller then gets a zeroed return
   value, and the status with the thread's last-error sentence goes to the
   runtime's excepthook, as ctypes does for a callback that raised.
   Thread rules: called on whatever thread calls the callback's code (any
   thread, attached or not: the library ensures it into the callback's
   interpreter first), holding that interpreter's GIL, with no lock of the
   library held: it may call anything a [gil-held] thread may. */
typedef int (*tether_guest_fn)(void **args, void *ret, void *userdata);

/* Makes a C function with the given signature that runs fn(args, ret,
   userdata) under tether_ensure/tether_release of `interp` (a libffi
   closure; tether_callback_code gives its address).
   Returns TETHER_EINVAL (NULL signature, fn or out), TETHER_ESIGNATURE,
   TETHER_EBADHANDLE (interp), TETHER_ESTATE (fn is in a plugin that is
   being unloaded), TETHER_ENOMEM.  [any-thread] */
TETHER_API int tether_callback_new(tether_interp interp, const char *signature,
                                   tether_guest_fn fn, void *userdata,
                                   tether_callback *out);

/* The callback's address: a real C function of the callback's signature
   that any C code may call, on any thread, attached or not, until
   tether_callback_free.  Cast it to the matching function pointer type.
   Once the interpreter is finalized or destroyed a call does not run fn: it
   returns zero, and the first such call prints one line on stderr.
   Returns NULL for a bad handle.  [any-thread] */
TETHER_API void *tether_callback_code(tether_callback cb);

/* Frees the callback: drops the owner tether_callback_new made, and when
   it was the last (tether_callback_retain adds owners) frees it.  Until
   then it returns at once and the code stays valid.  When it frees, calls
   running on other threads are waited for (with
   the caller's GIL released), so that when this returns fn runs no more and
   its userdata may be released; calls that had not yet reached fn return
   zero.  Freed from inside its own fn, it does not wait: the callback is
   freed when the last running call returns.  It is an error to call the
   code after the last owner is gone.
   Returns TETHER_OK, TETHER_EBADHANDLE (0 is OK), TETHER_EASYNC /
   TETHER_EFINALIZING (the caller waited without its GIL and re-attaching
   found one pending; the callback is freed all the same).  [any-thread] */
TETHER_API int tether_callback_free(tether_callback cb);

/* Calls the C function at `fnptr` as the signature describes: args[i]
   points to the i-th argument, and the return value is stored in *ret
   (`ret` may be NULL to discard it).  The call runs on the calling thread
   and leaves the GIL as it is.  While it runs, an unloadable plugin holding
   fnptr is not unloaded.
   Returns TETHER_OK, TETHER_EINVAL (NULL fnptr or signature, or NULL args
   with arguments), TETHER_ESIGNATURE, TETHER_ESTATE (fnptr is in a plugin
   that is being unloaded).  [any-thread] */
TETHER_API int tether_ffi_call(void *fnptr, const char *signature, void **args,
                               void *ret);

/* ------------------------------------------------------------------------
 * Channels (ABI 1.1)
 *
 * A channel is a FIFO of byte messages that any thread of any interpreter
 * may send to and receive from: the way isolated interpreters talk.  It is
 * bounded by `capacity` messages (0 = unbounded).  Sending copies the bytes;
 * receiving hands the receiver a buffer it owns.  Send and receive are
 * interruptible waits (see above): they release the GIL while blocked and
 * are woken by asynchronous exceptions and finalize.  Closing wakes every
 * waiter: blocked senders get TETHER_ECLOSED; receivers first drain what is
 * queued, then get TETHER_ECLOSED.
 * ---------------------------------------------------------------------- */

/* Makes a channel holding up to `capacity` messages (0 = no bound), with
   one reference owned by the caller.
   Returns TETHER_EINVAL (NULL out), TETHER_ENOMEM.  [any-thread] */
TETHER_API int tether_channel_new(size_t capacity, tether_channel *out);

/* Adds a reference (for another owner, e.g. another interpreter).
   Returns TETHER_EBADHANDLE.  [any-thread] */
TETHER_API int tether_channel_retain(tether_channel ch);

/* Drops a reference; with the last one the channel is closed, its waiters
   are woken with TETHER_EBADHANDLE, and the messages still queued are
   passed to its discard function (tether_channel_set_discard), on this
   thread, and freed.
   Returns TETHER_OK, TETHER_EBADHANDLE (0 is OK).  [any-thread] */
TETHER_API int tether_channel_release(tether_channel ch);

/* Queues a copy of `len` bytes at `data` (`data` may be NULL when `len` is
   0), waiting up to `timeout_ns` for room.
   Returns TETHER_OK, TETHER_ETIMEDOUT, TETHER_ECLOSED, TETHER_EASYNC,
   TETHER_EFINALIZING (the message is no longer the caller's, see below),
   TETHER_EINVAL, TETHER_EBADHANDLE, TETHER_ENOMEM.
   On TETHER_EFINALIZING the thread stays detached, and the message was
   either queued (the thread could not re-attach afterwards): then a
   receiver gets it, or the discard function (tether_channel_set_discard)
   does when the channel is freed; or not queued: then it was passed to the
   discard function, on this thread, before the call returned.  Either way
   it reaches a receiver or the discard function once, so references the
   message carries are the message's after that status.  After any other
   failure nothing was queued and the discard function was not called for
   it.  [any-thread] */
TETHER_API int tether_channel_send(tether_channel ch, const void *data,
                                   size_t len, int64_t timeout_ns);

/* Takes the oldest message, waiting up to `timeout_ns` for one.  *data
   receives a buffer owned by the caller (free it with
   tether_channel_msg_free; never NULL on success, even for 0 bytes) and
   *len its length.
   Returns TETHER_OK, TETHER_ETIMEDOUT, TETHER_ECLOSED (closed and empty),
   TETHER_EASYNC, TETHER_EFINALIZING (nothing was taken), TETHER_EINVAL,
   TETHER_EBADHANDLE.  [any-thread] */
TETHER_API int tether_channel_recv(tether_channel ch, void **data, size_t *len,
                                   int64_t timeout_ns);

/* Frees a buffer returned by tether_channel_recv (NULL is a no-op).
   [any-thread] */
TETHER_API void tether_channel_msg_free(void *data);

/* Closes the channel: later sends fail with TETHER_ECLOSED, receives drain
   what is queued and then fail with TETHER_ECLOSED, and every waiter is
   woken.  Closing twice is harmless.
   Returns TETHER_OK, TETHER_EBADHANDLE.  [any-thread] */
TETHER_API int tether_channel_close(tether_channel ch);

/* The number of messages queued now.
   Returns TETHER_EINVAL, TETHER_EBADHANDLE.  [any-thread] */
TETHER_API int tether_channel_count(tether_channel ch, size_t *out);

/* Called once for each message a channel frees without delivering it:
   those still queued when its last reference is released, and the message
   of a tether_channel_send that returns TETHER_EFINALIZING without having
   queued it.  `data` and `len` are the message (aligned as
   tether_channel_recv's; the function must not free it) and `ud` the
   pointer given with the function.  It runs with no lock of the channel
   held, and may call any tether function, including releasing other
   channels: a channel whose last reference goes inside a discard has its
   own discards run after that one returns, not nested, so chains of
   channels queued in channels of any length are freed in constant stack.
   Use it when messages carry references (handles, pointers) of their own;
   a channel queued inside itself, directly or through others, is a
   reference cycle and is never freed.
   Thread rules: called on the thread that releases the channel's last
   reference, with or without a GIL (whatever that thread holds), or, for
   the message of such a send, on the sending thread before the send
   returns, detached (holding no GIL); with no lock of the library held
   either way: it may call any tether function that thread may call. */
typedef void (*tether_channel_discard_fn)(void *data, size_t len, void *ud);

/* Sets the channel's discard function (NULL: none, the default) and its
   `ud`, replacing any earlier one.  Both must stay valid until the channel
   is freed: a function inside an unloadable plugin keeps that plugin
   mapped until then.  A function replaced while a send on the channel is
   ending may still be called once more, with its `ud`, for that send's
   message (tether_channel_send; its plugin stays mapped for that call).
   Only the channel's creator should set it: it decides what the messages
   hold.
   Returns TETHER_OK, TETHER_EBADHANDLE, TETHER_ESTATE (fn lies in a plugin
   being unloaded; nothing changed).  [any-thread] */
TETHER_API int tether_channel_set_discard(tether_channel ch,
                                          tether_channel_discard_fn fn, void *ud);

/* Makes the channel set event `ev` every time it may have become ready for
   tether_channel_recv: a message was queued, or the channel was closed.
   This is how one thread waits on several sources at once (a channel and
   others, all setting one event): register the event with each, then in a
   loop clear the event, try each source without blocking (timeout 0), and
   wait on the event only if none was ready.  A message queued after the
   registration sets the event, so no wake-up is lost between the tries and
   the wait.  The event may be set when nothing is left to take (another
   receiver was first), and by a send that raced with
   tether_channel_unwatch: clear it before every round of tries.  An event
   may watch any number of channels and a channel be watched by any number
   of events; registering the same pair twice needs two unwatches.  The
   event's handle is only stored: freeing it while it watches is allowed
   (the channel then sets a dead handle, which does nothing), though
   unwatching first is the rule.
   Returns TETHER_OK, TETHER_EBADHANDLE (ch or ev is not a live handle of
   its type; nothing changes), TETHER_ENOMEM (nothing changes).
   [any-thread] */
TETHER_API int tether_channel_watch(tether_channel ch, tether_event ev);

/* Undoes one tether_channel_watch of the pair: the channel no longer sets
   `ev` (a send already under way may still set it once).
   Returns TETHER_OK, TETHER_EBADHANDLE (ch), TETHER_EINVAL (ev does not
   watch ch; nothing changes).  [any-thread] */
TETHER_API int tether_channel_unwatch(tether_channel ch, tether_event ev);

/* ------------------------------------------------------------------------
 * Plugin SDK (ABI 1.2)
 *
 * Direct calls into a plugin that unload waits for, the state of each load,
 * callbacks a plugin can keep alive, and an error sentence a plugin can
 * leave for its caller.  docs/plugins.md is the guide.
 * ---------------------------------------------------------------------- */

/* Marks the calling thread as running code of the plugin, for a host that
   calls a function found with tether_plugin_symbol directly: until the
   matching tether_plugin_leave, the plugin's last unload waits (as for a
   tether_ffi_call in progress) and does not run fini.  Pairs nest and may
   be used on any number of threads.
   Returns TETHER_OK, TETHER_EBADHANDLE, TETHER_ESTATE (the plugin is being
   unloaded: do not call into it).  [any-thread] */
TETHER_API int tether_plugin_enter(tether_plugin p);

/* Ends one tether_plugin_enter of the plugin; works after the handle was
   unloaded by finalize, as long as the enter is still open.
   Returns TETHER_OK, TETHER_EBADHANDLE, TETHER_ESTATE (no enter of this
   plugin is open).  [any-thread] */
TETHER_API int tether_plugin_leave(tether_plugin p);

/* The instance state the plugin's init stored in *state for this load:
   one per runtime that loads the plugin (a repeated load into the same
   runtime shares it).  A plugin whose exported functions need their
   instance takes it as their first argument; the host passes this.
   Returns TETHER_OK, TETHER_EINVAL (NULL out), TETHER_EBADHANDLE.
   [any-thread] */
TETHER_API int tether_plugin_state(tether_plugin p, void **out);

/* Adds an owner to the callback: its code stays valid, and calls keep
   running fn, until every owner has let go (tether_callback_new makes the
   first owner; tether_callback_free and tether_callback_release each drop
   one).  A plugin that keeps a callback's code for its own threads
   retains it so that the host freeing it cannot leave it with a dangling
   pointer.
   Returns TETHER_OK, TETHER_EBADHANDLE (also once the last owner is
   gone).  [any-thread] */
TETHER_API int tether_callback_retain(tether_callback cb);

/* Drops one owner of the callback; the last one frees it exactly as
   tether_callback_free does (and returns what it returns).
   Returns TETHER_OK, TETHER_EBADHANDLE (0 is OK), TETHER_EASYNC /
   TETHER_EFINALIZING (as tether_callback_free).  [any-thread] */
TETHER_API int tether_callback_release(tether_callback cb);

/* Asks for fn(ud) to be called once the callback is destroyed: when the
   last owner is gone (tether_callback_free, tether_callback_release) and
   no call of it is running any more, so that a binding can release the
   userdata it gave tether_callback_new only when nothing can use it.  fn
   is called exactly once, after the callback's code is gone, on the thread
   that destroys it: the one that drops the last owner; if calls were
   running then, the one whose call returns last (a plugin's worker, say,
   attached or not); or one whose tether_callback_* call on it was still
   in progress.  fn runs with no lock of the library held (the thread may
   hold its GIL or not: fn must not need it) and
   must not call tether_callback_* on this callback (its handle is stale).
   Setting it again replaces fn and ud; a callback freed without it calls
   nothing.  While it is set, an unloadable plugin holding fn stays mapped.
   Returns TETHER_OK, TETHER_EINVAL (NULL fn; nothing is set),
   TETHER_EBADHANDLE (also once the last owner is gone), TETHER_ESTATE (fn
   lies in a plugin being unloaded; nothing is set).  [any-thread] */
TETHER_API int tether_callback_on_free(tether_callback cb,
                                       void (*fn)(void *ud), void *ud);

/* Sets the calling thread's last-error sentence (tether_last_error) to
   `message`, cut to the buffer's size at a character boundary, and returns
   `code`: a plugin's init writes `return host->set_error(TETHER_EINVAL,
   "no device");` and the load error quotes the sentence.
   Returns `code`, or TETHER_EINVAL (NULL message; nothing is set).
   [any-thread] */
TETHER_API int tether_set_error(int code, const char *message);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_H */
