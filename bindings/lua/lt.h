/*
 * lt.h - internals of the Lua 5.4 binding (tether.so), shared by its files.
 *
 * The model
 * =========
 *
 * One Lua state is one tether interpreter.  Every OS thread that runs Lua
 * in it runs its own coroutine of that state (a tether.thread gets one made
 * by lua_newthread; a native thread calling a callback borrows one from a
 * pool), and only the holder of the interpreter's GIL touches the state.
 * Everything GIL-protected below says "Synchronization: gil".
 *
 * The GIL changes hands in two ways.  Every blocking function of the module
 * calls a tether wait, which drops the GIL while it blocks.  And while Lua
 * code runs, the core calls lt_on_breaker (lt_hook.c) on the thread that
 * wants something from the holder (a waiter that timed out, a raise, the
 * finalizer); it installs a one-shot line hook on the coroutine the holder
 * runs *now* (lt_tstate.running, kept current by the module's own
 * coroutine.resume/wrap/close); at the holder's next line, loop iteration
 * or call the hook removes itself, calls tether_checkpoint, and raises a
 * delivered asynchronous exception as a Lua error.  Nothing is installed
 * when nothing is asked: a thread alone runs at plain-Lua speed.
 *
 * Leaving Lua for good.  When a wait or checkpoint answers
 * TETHER_EFINALIZING the thread no longer holds the GIL and must not touch
 * the state again.  It longjmps to its nearest exit point (the bootstrap
 * of a tether.thread, or the callback it is in), skipping the Lua frames in
 * between the way a Lua error skips C frames, but without running any Lua;
 * a thread with no exit point (the one that required the module) parks for
 * ever.
 *
 * Closing.  The newest of the module's finalizable objects is always a
 * "sentinel" userdata (renewed whenever the module makes one), so when
 * lua_close runs finalizers newest first, the sentinel's runs before any
 * other tether object's: it joins the non-daemon threads and finalizes the
 * runtime while locks, queues and callbacks still work.
 */
#ifndef TETHER_LT_H
#define TETHER_LT_H

#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include <tether/tether.h>

#include "lt_conf.h"

/* Metatable names, which tostring and error messages show. */
#define LT_THREAD_MT "tether.thread"
#define LT_LOCK_MT "tether.lock"
#define LT_RLOCK_MT "tether.rlock"
#define LT_EVENT_MT "tether.event"
#define LT_COND_MT "tether.condition"
#define LT_QUEUE_MT "tether.queue"
#define LT_CALLBACK_MT "tether.callback"
#define LT_PLUGIN_MT "tether.plugin"
#define LT_CHANNEL_MT "tether.channel"
#define LT_INTERP_MT "tether.interpreter" /* "tether.interp" is a registry field */
#define LT_ITHREAD_MT "tether.ithread"
#define LT_SENTINEL_MT "tether.sentinel"

/* Registry fields the host may set before `require "tether"` to make the
   module join a runtime it created (integers holding the handles). */
#define LT_REG_HOST_RUNTIME "tether.runtime"
#define LT_REG_HOST_INTERP "tether.interp"

/* Codes of the asynchronous exceptions the module raises.  LT_ASYNC_VALUE
   carries an lt_payload whose destructor is lt_heldref_drop. */
#define LT_ASYNC_CANCEL INT64_C(0x4c7561436e636c64) /* "LuaCncld" */
#define LT_ASYNC_VALUE INT64_C(0x4c75615261697365)  /* "LuaRaise" */
/* LT_ASYNC_COPY carries an lt_blob (a value raised from another
   interpreter) whose destructor is lt_blob_dtor. */
#define LT_ASYNC_COPY INT64_C(0x4c7561436f707921)   /* "LuaCopy!" */
/* LT_ASYNC_INTERRUPT (no payload): Ctrl-C reached the thread that
   required the module (lt_signal.c); raised as lua.c's "interrupted!". */
#define LT_ASYNC_INTERRUPT INT64_C(0x4c7561496e747221) /* "LuaIntr!" */


/* The binding's locks and their order.  A thread takes one only while it
   holds none of the same or a higher rank; debug builds (no NDEBUG) check
   it at every lt_mutex_lock and abort with the ranks' names on the first
   violation (core/lockrank.h is the core's twin).  All are leaves below
   the core too: lt_on_breaker takes hook_mu under the core's GIL mutex,
   and nothing of the core is called, nor another lock taken, while any
   is held (the core's checker cannot see the binding's locks: it is not
   part of the library's interface). */
enum lt_lock_rank {
    LT_RANK_HOOK, /* lt_state.hook_mu */
    LT_RANK_DEAD, /* lt_state.dead_mu */
    LT_RANK_WAITQ, /* lt_sync.c's waitq_mu: the links of every lt_waitq */
    LT_RANK__COUNT
};

#ifdef NDEBUG
static inline void lt_rank_take(enum lt_lock_rank r) { (void)r; }
static inline void lt_rank_give(enum lt_lock_rank r) { (void)r; }
#else
/* Aborts if the calling thread holds a lock of rank >= r; notes r held. */
void lt_rank_take(enum lt_lock_rank r);
/* Notes r given back. */
void lt_rank_give(enum lt_lock_rank r);
#endif

static inline void lt_mutex_lock(pthread_mutex_t *m, enum lt_lock_rank r)
{
    lt_rank_take(r);
    pthread_mutex_lock(m);
}

static inline void lt_mutex_unlock(pthread_mutex_t *m, enum lt_lock_rank r)
{
    pthread_mutex_unlock(m);
    lt_rank_give(r);
}

typedef struct lt_state lt_state;
typedef struct lt_tstate lt_tstate;
typedef struct lt_worker lt_worker;
typedef struct lt_pool lt_pool;

/* A thread waiting on an lt_waitq (condition, queue, require and file
   handle waits), on the waiter's own stack.  Synchronization: waitq_mu
   (lt_sync.c) for prev, next, linked and notified; `ev` is the core's
   event, which any thread may set.  The waiter unlinks itself on every way
   out of lt_waitq_wait, the end of the program included (issue 20). */
typedef struct lt_waiter {
    struct lt_waiter *prev, *next;
    tether_event ev;
    int linked, notified;
} lt_waiter;

/* Linked under the GIL *and* waitq_mu; unlinked under waitq_mu, with or
   without the GIL: a thread that finalize detached (TETHER_EFINALIZING)
   has no GIL, and must still take its stack record off the list before
   it leaves.  Zeroed memory is an empty list. */
typedef struct lt_waitq {
    lt_waiter *head, *tail;  /* Synchronization: waitq_mu. */
    atomic_int n;            /* linked waiters.  Synchronization: atomic;
                                written under waitq_mu, read without it by
                                wakers (which hold the GIL, so no waiter
                                can link meanwhile). */
} lt_waitq;

/* Makes q an empty list. */
static inline void lt_waitq_init(lt_waitq *q)
{
    q->head = q->tail = NULL;
    atomic_init(&q->n, 0);
}

/* Someone waiting for a source to change (tether.select, future:result):
   the source sets `ev` and leaves the record linked.  Synchronization:
   gil (the record lives on the waiter's stack). */
typedef struct lt_watch {
    struct lt_watch *prev, *next;
    tether_event ev;
    int efd; /* >= 0: an eventfd written instead (a select with descriptors) */
} lt_watch;

/* The watchers of one source.  Synchronization: gil. */
typedef struct lt_watchlist {
    lt_watch *head;
} lt_watchlist;

/* Links / unlinks a watcher.  [gil-held] */
static inline void lt_watch_add(lt_watchlist *l, lt_watch *w)
{
    w->prev = NULL;
    w->next = l->head;
    if (l->head)
        l->head->prev = w;
    l->head = w;
}

static inline void lt_watch_remove(lt_watchlist *l, lt_watch *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        l->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

/* Sets the event of every watcher of l (they stay linked).  [gil-held] */
static inline void lt_watch_notify(lt_watchlist *l)
{
    for (lt_watch *w = l->head; w; w = w->next) {
        if (w->efd >= 0) {
            uint64_t one = 1;
            if (write(w->efd, &one, sizeof one) < 0)
                (void)0; /* the counter is full: readable all the same */
        } else {
            (void)tether_event_set(w->ev);
        }
    }
}

/* What the module knows of one OS thread running Lua in a state.  It is
   the thread's tether userdata (tether_set_thread_userdata) while the
   thread runs Lua. */
struct lt_tstate {
    lt_state *S;       /* Synchronization: immutable. */
    lt_worker *worker; /* Synchronization: immutable; NULL unless a tether.thread. */
    /* Synchronization: atomic, by the protocol of lt_hook.c. */
    _Atomic(lua_State *) running; /* the coroutine the thread runs now, or NULL */
    atomic_int requested;         /* a checkpoint was asked for, not yet made */
    atomic_int arming;            /* a requester is hooking `running` */
    /* Synchronization: owner thread. */
    jmp_buf *exit;        /* where to leave Lua at shutdown; NULL = park */
    tether_event wait_ev; /* for condition and queue waits; 0 until used */
    tether_event select_ev; /* for select and future waits; 0 until used */
    int async_ref;        /* registry ref of the last asynchronous value raised */
    int cancelled;        /* tether.Cancelled was raised here: raised again at
                             every later checkpoint (lt_raise_fetched) */
    int in_hook;          /* lt_hook is checkpointing: an error now is raised
                             inside a hook (see the module's xpcall) */
    struct lt_resumer *resumers; /* the module's resumes under way here,
                                    innermost first (lt_in_finalizer) */
    void *outer;          /* the userdata this one replaced (nested callbacks) */
    lt_tstate *tl_outer;  /* lt_tl_get() before this one was pushed */
};

/* A coroutine.resume (or wrap, or close) of the module under way: the
   coroutine `from` resumed another one.  On the resuming C stack.
   Synchronization: owner thread (listed in its lt_tstate.resumers). */
struct lt_resumer {
    lua_State *from;
    struct lt_resumer *prev;
};

/* One Lua state and the tether interpreter it is.  Reference counted: the
   state, each worker record, sentinel, raised value and callback hold one,
   so threads that outlive the state never touch freed memory. */
struct lt_state {
    atomic_int refs; /* Synchronization: atomic. */
    /* Synchronization: immutable after luaopen_tether. */
    tether_runtime rt;
    tether_interp interp;
    int owns_runtime;           /* created here, so finalized at close */
    tether_thread main_thread;  /* a reference to the requiring thread */
    lua_CFunction open_module;  /* luaopen_tether, for the states that
                                   tether.interp makes (lt_interp.c) */
    lua_State *seed;            /* makes callback coroutines (lt_ffi.c) */
    lt_pool *pool;              /* the small-block cache (lt_alloc.c), or NULL */
    /* Synchronization: atomic.  Set once the Lua state is closing: threads
       that come back to Lua after that leave at once. */
    atomic_int closed;
    /* Synchronization: atomic.  Set when another thread than the one that
       required the module starts closing the state (os.exit(code, true) in
       a tether.thread): lua_close runs on the state's main Lua thread, so
       the requiring thread's Lua must not run on beside it; it leaves at
       its next checkpoint or wait as if the state were closed. */
    atomic_int main_stop;
    /* Synchronization: gil. */
    int shutting_down;
    int interrupted;            /* Ctrl-C raised "interrupted!" in the requiring
                                   thread: the exit cancels threads at once */
    int sigint;                 /* lt_signal.c's handler was installed for it */
    int64_t atexit_ns;          /* tether.atexit_timeout, -1 = none */
    int finalized;              /* shut_down finalized the runtime */
    int left_alive;             /* shut_down gave up waiting for threads
                                   still in Lua or in a call with the GIL
                                   released: lua_close frees nothing */
    lt_worker *workers;         /* every tether.thread record, newest first */
    lt_tstate main_ts;          /* of the thread that required the module */
    lua_State *cb_pool[LT_CB_POOL]; /* idle callback coroutines */
    int cb_refs[LT_CB_POOL];        /* their registry references */
    int cb_idle;
    tether_plugin *plugins;     /* loaded and not unloaded, one per load */
    int nplugins, plugins_cap;
    /* Protects saved[], and each
       lua_sethook/lua_gethook on a coroutine that another thread may be
       running; serialises requesters.  Rank LT_RANK_HOOK, a leaf: taken
       under the GIL's mutex by lt_on_breaker, and nothing is taken under
       it. */
    pthread_mutex_t hook_mu;
    struct lt_saved {
        lua_State *co;
        lua_Hook hook;
        int mask, count;
    } saved[LT_SAVED_HOOKS];
    /* Protects `dead`.  Rank LT_RANK_DEAD, a leaf. */
    pthread_mutex_t dead_mu;
    struct lt_heldref *dead; /* registry references dropped off the GIL */
};

/* A tether.thread: its coroutine, results and bookkeeping.  Freed once no
   Lua handle refers to it and its OS thread has finished. */
struct lt_worker {
    lt_tstate ts;       /* the thread's own; ts.worker points back here */
    /* Synchronization: gil. */
    tether_thread h;    /* the thread's handle (the Lua handles own the references) */
    lua_State *co;      /* the thread's coroutine (anchored by co_ref) */
    int co_ref;
    lua_State *res;     /* holds the results once finished, so that co is left
                           empty and reads "dead" (anchored by res_ref) */
    int res_ref;
    lua_State *vals;    /* where the results are: res, or co if res had no room */
    int nargs;          /* arguments waiting on co until the thread runs */
    int status;         /* LT_RUNNING, LT_DONE, LT_ERROR, LT_CANCELLED */
    int nres;           /* values on co once finished: results, or err + tb */
    int handles;        /* Lua handles (lt_handle) pointing here */
    int reported;       /* the error went to join or to the excepthook */
    int daemon;
    lt_watchlist watchers; /* told when the thread finishes (tether.select) */
    lt_worker *next, *prev; /* S->workers */
};

enum { LT_RUNNING, LT_DONE, LT_ERROR, LT_CANCELLED };

/* A registry reference that may be dropped on any thread, with or
   without the GIL: a value raised with t:raise whose exception died, a
   callback the core destroyed.  lt_heldref_drop queues it on S->dead for
   the state's next lt_heldref_drain, or, once the state is closed, frees
   it at once (the reference went with the state).  The first member of a
   record that holds one, allocated with malloc or calloc: dropping frees
   the whole record. */
typedef struct lt_heldref {
    lt_state *S; /* one reference */
    int ref;     /* in S's registry */
    /* Synchronization: S->dead_mu. */
    struct lt_heldref *next; /* on S->dead */
} lt_heldref;

/* A value raised with t:raise, travelling as an exception payload whose
   destructor is lt_heldref_drop. */
typedef lt_heldref lt_payload;


/* ---- lt_base.c: the state, errors, waits, asynchronous exceptions ---- */

/* The state of the module function or method running: its upvalue 1. */
lt_state *lt_upvalue_state(lua_State *L);
/* The state of Lua state L, from L's registry (for hooks, which have no
   upvalues).  [gil-held] */
lt_state *lt_registry_state(lua_State *L);
/* The calling thread's record (its lt_tstate, the core's thread userdata),
   or NULL for a thread the module does not know.  [gil-held] */
lt_tstate *lt_current_tstate(void);
/* The lt_tstate the module pushed last on the calling OS thread (a stack
   kept by lt_ts_push/lt_ts_pop, whatever the state): a fast guess at
   lt_current_tstate() that the caller must check (lt_hook.c's ts_here).
   A pthread key, not __thread: LeakSanitizer's tracer crashed on the
   dynamic TLS of a dlopen'ed module in threads still running at exit. */
lt_tstate *lt_tl_get(void);
void lt_tl_set(lt_tstate *ts);
/* Initialises a thread's lt_tstate (worker may be NULL). */
void lt_ts_init(lt_tstate *ts, lt_state *S, lt_worker *worker);
/* Makes `ts` the calling thread's userdata, remembering the one it
   replaces; lt_ts_pop puts that back.  [gil-held] */
void lt_ts_push(lt_tstate *ts);
void lt_ts_pop(lt_tstate *ts);
void lt_state_ref(lt_state *S);
void lt_state_unref(lt_state *S);

/* Optional timeout in seconds at `idx`: nil/none = for ever (-1), else
   nanoseconds; negative or NaN is an argument error.  Inside a finalizer
   it is always 0 (see lt_in_finalizer). */
int64_t lt_opt_timeout(lua_State *L, int idx);
/* 1 while L runs a finalizer (__gc), when Lua's collector is stopped for
   every thread of the state: the module's waits then do not block, and
   its checkpoints do not hand the GIL over. */
int lt_in_finalizer(lua_State *L);
/* Raises the Lua error "what: <tether's last error>" for status `rc`;
   returns what lua_error does (use: return lt_status_error(...)). */
int lt_status_error(lua_State *L, const char *what, int rc);
/* Whether a tether wait succeeded, from its status: 1 for TETHER_OK, 0
   for TETHER_ETIMEDOUT; raises the delivered exception for TETHER_EASYNC;
   leaves Lua for TETHER_EFINALIZING; raises an error naming `what` for
   anything else. */
int lt_wait_ok(lua_State *L, lt_tstate *ts, int rc, const char *what);
/* Runs tether_checkpoint and acts on its answer like lt_wait_ok. */
void lt_checkpoint(lua_State *L, lt_tstate *ts);
/* Raises the asynchronous exception delivered to the calling thread. */
int lt_raise_async(lua_State *L, lt_tstate *ts);
/* The checkpoint at the end of a thread whose function returned normally
   (issue 18): co holds [message handler, results...].  An asynchronous
   exception that arrived while the function ran its last line, and that
   no later line was left to raise, is raised now through the handler in
   place of the results (co then holds [handler, error]), so that join
   reports it rather than lose it.  Returns LUA_OK (nothing pending, co
   unchanged) or the status of that raise.  Leaves Lua (lt_leave) at
   finalize.  [gil-held], on the thread that ran the function. */
int lt_end_checkpoint(lua_State *co, lt_tstate *ts);
/* Raises an exception already taken with tether_async_fetch. */
int lt_raise_fetched(lua_State *L, lt_tstate *ts, int64_t code, void *payload,
                     tether_dtor dtor);
/* Leaves Lua for good (see the model above).  Never returns. */
_Noreturn void lt_leave(lt_tstate *ts);
/* 1 if the calling thread (ts, NULL for a foreign one) must leave Lua now:
   the state is closed, or another thread closes it and ts is the thread
   that required the module (lt_state.main_stop). */
int lt_must_leave(const lt_tstate *ts);
/* After a call that let the GIL go outside the waits (lt_wait_ok does
   it too): leaves Lua when lt_must_leave says so. */
void lt_back_in_lua(lt_tstate *ts);
/* Drops an lt_heldref (a tether_dtor: any thread, GIL or not). */
void lt_heldref_drop(void *ref);
/* Releases the registry references dropped since.  [gil-held] */
void lt_heldref_drain(lua_State *L, lt_state *S);
/* Makes a fresh sentinel the newest finalizable object of the module
   (nothing once the state is shutting down: Lua runs no finalizer of an
   object made while lua_close runs finalizers, so its reference would
   leak).  Its metatable, LT_SENTINEL_MT, is lt_module.c's. */
void lt_renew_sentinel(lua_State *L, lt_state *S);
/* Creates metatable `name` whose __index is a table of `methods` (or
   none), with the entries of `meta` (or none); every function gets S as
   upvalue 1.  With `index`, __index is instead the C closure `index` with
   upvalues S and the methods table, for fields besides the methods.
   (lt_class.c) */
void lt_new_class(lua_State *L, lt_state *S, const char *name,
                  const luaL_Reg *methods, const luaL_Reg *meta,
                  lua_CFunction index);
/* Whether the value at idx can be called: a function, or a value with a
   __call metamethod.  (lt_class.c) */
int lt_is_callable(lua_State *L, int idx);
/* Pushes and returns a short description of the value at idx for an error
   message: a string as it is (with `quote`: in quotes, cut after 60 bytes
   or at a NUL, with its length), anything else as tostring shows it, and
   by type and address if its __tostring fails.  Raises only when out of
   memory; needs 3 free stack slots.  (lt_class.c) */
const char *lt_describe(lua_State *L, int idx, int quote);
/* Pushes the module table (nil before luaopen_tether made it).  [gil-held] */
void lt_push_module(lua_State *L);
/* Pops the table on the top into the registry as the module table. */
void lt_set_module(lua_State *L);
/* Records S as the state of L's registry (lt_registry_state). */
void lt_set_state(lua_State *L, lt_state *S);
/* Makes the pthread key of lt_tl_get (once per process). */
void lt_tl_init(void);
/* 1 if the value at idx is the current sentinel (lt_renew_sentinel). */
int lt_is_sentinel(lua_State *L, int idx);

/* ---- lt_signal.c: Ctrl-C in the stock interpreter ------------------- */

/* Installs the module's SIGINT handler in front of lua.c's, if lua.c's is
   the current one (see lt_signal.c), with a watcher thread that raises
   LT_ASYNC_INTERRUPT at the calling thread.  Returns 1 if installed (once
   per process).  [gil-held, the thread that requires the module] */
int lt_sigint_install(void);
/* Before a blocking wait: puts the module's handler back in if lua.c set
   its own again (lua5.4 -i does for every line).  Does nothing on any
   thread but the installing one.  [any-thread] */
void lt_sigint_rearm(void);
/* Puts lua.c's handler back if the module's is current, and stops the
   watcher (nothing in a forked child).  [any-thread] */
void lt_sigint_remove(void);
/* 1 if the module's handler is installed in this process and the caller
   is not the thread it interrupts: Ctrl-C is the installing thread's
   business, and the caller must not ignore SIGINT for it (os.execute on
   another thread).  [any-thread] */
int lt_sigint_elsewhere(void);

/* ---- lt_alloc.c: the small-block cache -------------------------------- */

/* Puts the cache in front of L's allocator; NULL if out of memory or
   disabled (TETHER_LUA_POOL=0). */
lt_pool *lt_pool_install(lua_State *L);
/* Empties it and puts the previous allocator back (at close). */
void lt_pool_remove(lua_State *L, lt_pool *pool);
/* From now on L's allocator frees nothing (its blocks are leaked on
   purpose): for a state that closes while threads that the close gave up
   waiting for may still read or write its memory (a string being
   written, a buffer being read into, with the GIL released).  [the
   closing thread, in lua_close] */
void lt_alloc_never_free(lua_State *L);

/* ---- lt_hook.c: switching while Lua runs, coroutine tracking ---------- */

/* The interpreter's breaker hook (tether_breaker_fn). */
void lt_on_breaker(void *thread_ud, void *ud);
/* Records that `ts` now runs `co` (NULL: none), arming it if a request is
   pending.  [gil-held] */
void lt_switch(lt_tstate *ts, lua_State *co);
/* Arms the calling thread's running coroutine, so that it checkpoints at
   its next line, loop iteration or call.  [gil-held] */
void lt_request_self(lt_tstate *ts);
/* Replaces coroutine.resume/wrap/close with tracking versions,
   debug.sethook/gethook with ones that see through the module's hook, and
   the global xpcall with one whose handler never runs inside that hook
   (upvalue 1 = S). */
void lt_open_hooks(lua_State *L, lt_state *S);

/* ---- lt_thread.c: tether.thread and the thread handles --------------- */

void lt_open_thread(lua_State *L, lt_state *S);
/* Joins every non-daemon tether.thread, the GIL released while waiting,
   by the exit policy: without a limit, or up to S->atexit_ns; after it
   (at once when S->interrupted) cancels those still running and waits up
   to the same time again, but at least LT_CANCEL_GRACE_NS;
   those still running then are abandoned with a warning on stderr.
   Returns 1 if some were abandoned. */
int lt_join_all(lt_state *S);
/* As the state closes: waits up to timeout_ns in all for the threads that
   are leaving Lua, so that their records can be freed.  Returns 1 if some
   were still running at the deadline. */
int lt_reap_workers(lt_state *S, int64_t timeout_ns);
/* Starts a tether.thread running the function at `first` with the values
   up to `last` as arguments, with no Lua handle: *out receives the
   reference tether_thread_start returned, which the caller must keep until
   the thread's record is freed (the record borrows it).  `o` is passed to
   tether_thread_start (its daemon flag is the thread's too).  Raises on
   failure.  [gil-held] */
void lt_thread_start_bare(lua_State *L, lt_state *S, int first, int last,
                          const tether_thread_opts *o, tether_thread *out);
/* Reads a thread options table at idx (name, daemon, stack_size) into o;
   an argument error for anything else.  o->name points into the table. */
void lt_read_thread_opts(lua_State *L, int idx, tether_thread_opts *o);
/* Frees the records of finished threads that no handle refers to. */
void lt_sweep_workers(lua_State *L, lt_state *S);
/* Pushes a handle of the calling thread. */
void lt_push_current(lua_State *L, lt_state *S);
/* Calls tether.excepthook(thread at `thread_idx`, err, tb) protected; a
   failure of the hook itself is printed on stderr. */
void lt_call_excepthook(lua_State *L, int thread_idx, int err_idx, int tb_idx);
/* A message handler that stores the traceback in the registry under the
   lightuserdata key in its upvalue 1 and returns the error unchanged. */
int lt_traceback_handler(lua_State *L);

/* ---- lt_sync.c: sleep, lock, rlock, event, condition, queue ---------- */

void lt_open_sync(lua_State *L, lt_state *S);
/* Blocks on `q` until lt_waitq_wake or the timeout; *notified says which.
   Returns the status of the underlying event wait. */
int lt_waitq_wait(lt_tstate *ts, lt_waitq *q, int64_t timeout_ns,
                  int *notified);
/* Wakes up to `n` waiters of `q`, oldest first.  Returns how many.
   [gil-held], or a thread leaving at finalize. */
int lt_waitq_wake(lt_waitq *q, int n);
/* Takes / gives back waitq_mu, for a list that a waiter also has to
   unlink itself from without the GIL (lt_require.c's waits-for list).
   A leaf: take nothing and call nothing of the core while it is held. */
void lt_waitq_lock(void);
void lt_waitq_unlock(void);
/* Frees the thread's cached wait event. */
void lt_ts_release(lua_State *L, lt_tstate *ts);

/* ---- lt_io.c: Lua's io and os libraries, the GIL released -------------- */

/* Replaces the blocking functions of the io and os tables (when loaded)
   and the methods of Lua's FILE* metatable with ones that release the
   GIL while they block.  They do not use S, which is freed before the
   finalizers of files older than the module run at lua_close. */
void lt_open_io(lua_State *L, lt_state *S);

/* ---- lt_codec.c: the values that cross between states --------------- */

/* How the codec takes (retain) and drops (release) a channel reference;
   each returns a tether status.  [any-thread] */
typedef struct lt_chanrefs {
    int (*retain)(tether_channel ch);
    int (*release)(tether_channel ch);
} lt_chanrefs;

/* Gives the codec its channel reference calls (the module: the core's
   tether_channel_retain and tether_channel_release).  Once, before any
   other call of the codec. */
void lt_codec_init(const lt_chanrefs *refs);
/* Makes the metatable of channel values (LT_CHANNEL_MT: __gc drops the
   reference, __eq, __tostring) and tether.Cancelled in L's registry, if
   not made yet. */
void lt_open_codec(lua_State *L);
/* Pushes tether.Cancelled. */
void lt_push_cancelled(lua_State *L);

/* An encoding of values (see lt_codec.c), and the channel references it
   holds.  As a Lua userdata (lt_blob_push) it is freed with the state; on
   the heap (lt_blob_move) with lt_blob_dtor.  Synchronization: its owner
   (the GIL for a userdata; a heap blob is handed from thread to thread as
   a payload, one owner at a time). */
typedef struct lt_blob {
    unsigned char *data;
    size_t len, cap;
    void (*release)(void *); /* frees `data`: free or tether_channel_msg_free */
    tether_channel *chans;   /* references dropped when the blob is freed */
    size_t nchans, chcap;
    int message; /* a received message: holds the references in `data` */
} lt_blob;

/* A tether.channel userdata: one reference, 0 once collected.
   Synchronization: gil. */
typedef struct lt_chan {
    tether_channel ch;
} lt_chan;

/* Pushes an empty blob userdata. */
lt_blob *lt_blob_push(lua_State *L);
/* Moves the contents of `b` to a new heap blob, leaving `b` empty. */
lt_blob *lt_blob_move(lua_State *L, lt_blob *b);
/* Frees the contents of a blob and leaves it empty. */
void lt_blob_clear(lt_blob *b);
/* Clears and frees a heap blob (a tether_dtor: any thread). */
void lt_blob_dtor(void *b);
/* Appends the value at idx to `b`.  Raises "cannot copy a <type> at
   <root><path>" if it cannot be copied (or holds what cannot be). */
void lt_encode(lua_State *L, lt_blob *b, int idx, const char *root);
/* Pushes the values encoded in data[0..len) and returns their number; the
   channels among them take references of their own.  Raises on a
   malformed encoding. */
int lt_decode(lua_State *L, const void *data, size_t len);
/* Drops the channel references an encoding holds (a message freed
   undecoded or once decoded); stops at anything that is not our
   encoding.  [any-thread] */
void lt_drop_channels(const void *data, size_t len);
/* Pushes the bytecode of the Lua function at `arg`, which
   must have no upvalue but _ENV (an argument error otherwise). */
void lt_dump_function(lua_State *L, int arg);
/* Pushes the function whose bytecode is the string at idx, its _ENV
   upvalues set to L's globals. */
void lt_load_function(lua_State *L, int idx);
/* Pushes a channel userdata owning the reference `ch`. */
void lt_push_channel(lua_State *L, tether_channel ch);

/* ---- lt_channel.c: tether.channel ------------------------------------ */

/* Adds the channel methods to LT_CHANNEL_MT (lt_open_codec first) and
   tether.channel to the module table on the top. */
void lt_open_channel(lua_State *L, lt_state *S);

/* ---- lt_require.c: require with an import lock per module name ------ */

/* Replaces the global `require` with one that runs each module's loader
   once however many threads require it at the same time (the others
   wait); nothing if the package library is not loaded. */
void lt_open_require(lua_State *L, lt_state *S);

/* ---- lt_capi.c: the C interface for other modules (tether/lua.h) ---- */

/* Puts the function table of tether/lua.h in L's registry. */
void lt_open_capi(lua_State *L);

/* ---- lt_interp.c: tether.interp and threads of other interpreters ---- */

void lt_open_interp(lua_State *L, lt_state *S);

/* ---- lt_ffi.c: tether.callback and tether.load ----------------------- */

void lt_open_ffi(lua_State *L, lt_state *S);
/* Unloads the plugins still loaded (at close, after finalize). */
void lt_unload_plugins(lt_state *S);

/* ---- lt_select.c: tether.select ------------------------------------- */

/* tether.select, and the private wait on futures of lt_future.c. */
void lt_open_select(lua_State *L, lt_state *S);
/* Sources: for the value at idx, the watch list if it is a source of the
   file's kind (else NULL), and its take: pushes the values select returns
   for it and returns their number, consuming one item, or returns -1 if
   it is not ready (pushing nothing).  [gil-held] */
lt_watchlist *lt_sync_source(lua_State *L, int idx);   /* queue, event */
int lt_sync_take(lua_State *L, int idx);
lt_watchlist *lt_thread_source(lua_State *L, int idx); /* tether.thread */
int lt_thread_take(lua_State *L, int idx);
lt_watchlist *lt_future_source(lua_State *L, int idx); /* future */
int lt_future_take(lua_State *L, int idx);
/* 1 if the future at idx is done (finished, failed or cancelled). */
int lt_future_done(lua_State *L, int idx);

/* ---- lt_future.c: futures, the executor, tether.wait, as_completed --- */

void lt_open_future(lua_State *L, lt_state *S);

/* ---- lt_local.c: tether.local ---------------------------------------- */

void lt_open_local(lua_State *L, lt_state *S);
/* Registry field: a C function lt_thread.c calls (protected, on the
   thread's coroutine) as a tether.thread finishes; lt_local.c sets it. */
#define LT_REG_THREAD_END "tether.on_thread_end"

/* ---- lt_module.c: luaopen_tether, closing, the module functions ----- */

/* The module's entry point: the only symbol tether.so exports. */
__attribute__((visibility("default"))) int luaopen_tether(lua_State *L);

#endif
