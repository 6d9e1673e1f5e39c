/*
 * trace.h - the GIL timeline recorder (tether_trace_start/stop,
 * TETHER_TRACE=path; docs/tracing.md).
 *
 * Every hook is one line at its call site, `TRACE(trace_xxx(...));`, and
 * costs one relaxed load of a global and one predictable branch while no
 * trace records: the call is made only when `trace_on` is set.  The
 * functions below check themselves that the event belongs to the runtime
 * being traced (one trace records at a time, per process).
 */
#ifndef TETHER_TRACE_H
#define TETHER_TRACE_H

#include <stdatomic.h>
#include <stdint.h>

struct gil;
struct runtime;
struct tstate;
struct thread;

/* Nonzero while a trace records.  Synchronization: atomic (set by
   trace_start, cleared by trace_stop; read relaxed by every hook). */
extern _Atomic int trace_on;

#if defined(__GNUC__)
#define TRACE_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define TRACE_UNLIKELY(x) (x)
#endif

/* The start of something traced as a slice: the clock while a trace
   records, else 0 (the matching hook then records nothing). */
int64_t trace_now_if_on(void);

#ifdef TETHER_NO_TRACE
/* The hooks compiled out: only bench/'s tether-notrace library, the
   baseline of the row trace.acquire_off (what the hooks cost while no
   trace records).  Never a shipped build. */
#define TRACE(call)                                                           \
    do {                                                                      \
        if (0) /* no code, but what `call` names stays used */                \
            call;                                                             \
    } while (0)
#define TRACE_T0() ((int64_t)0)
#else
/* Runs `call` only while a trace records. */
#define TRACE(call)                                                           \
    do {                                                                      \
        if (TRACE_UNLIKELY(atomic_load_explicit(&trace_on,                    \
                                                memory_order_relaxed)))       \
            call;                                                             \
    } while (0)
#define TRACE_T0()                                                            \
    (TRACE_UNLIKELY(atomic_load_explicit(&trace_on, memory_order_relaxed))    \
         ? trace_now_if_on()                                                  \
         : 0)
#endif

/* Why a holder let the GIL go (the "drop" argument of a "holds GIL"
   slice). */
enum trace_drop {
    TRACE_DROP_RELEASE,  /* release, thread exit, switching interpreters */
    TRACE_DROP_YIELD,    /* gil_yield without a drop request (sleep(0)) */
    TRACE_DROP_FORCED,   /* forced switch: gil_yield answering a request */
    TRACE_DROP_BLOCKING, /* tether_call_blocking or tether_save_thread */
    TRACE_DROP_WAIT      /* a tether wait (join, lock, event, sleep, ...) */
};

/* ---- GIL hooks (gil.c) --------------------------------------------------- */

/* `ts` enters the slow path of a take: its wait starts now. */
void trace_gil_wait(struct gil *g, struct tstate *ts);
/* `ts` took the GIL (`slow`: through the slow path). */
void trace_gil_take(struct gil *g, struct tstate *ts, int slow);
/* `ts` gave up waiting: its interpreter is finalizing. */
void trace_gil_refused(struct gil *g, struct tstate *ts);
/* `ts` is about to drop the GIL (called before the drop); `forced`:
   gil_yield.  Whether a drop request is pending is read from its breaker. */
void trace_gil_drop(struct gil *g, struct tstate *ts, int forced);
/* The calling thread posted a drop request to the holder `h` (pinned). */
void trace_gil_request(struct gil *g, struct tstate *h);

/* ---- other events --------------------------------------------------------- */

/* The calling thread, started by tether_thread_start, begins running
   `name` (called always, trace or not: the name is kept for the track). */
void trace_thread_named(const char *name);
/* The calling thread (tether_thread_start's) starts / ends with `result`. */
void trace_thread_begin(struct runtime *rt);
void trace_thread_end(struct runtime *rt, int result);
/* A join of `t` that began at t0 (TRACE_T0) returned rc; `ts` is the
   joiner's attached state (an unattached joiner records nothing). */
void trace_join(struct tstate *ts, int64_t t0, const struct thread *t, int rc);
/* An outermost ensure attached `ts` / the matching release detached it. */
void trace_ensure(struct tstate *ts);
void trace_release(struct tstate *ts);
/* An asynchronous exception `code` was posted to thread `ident`, or
   delivered to `ts`. */
void trace_async_posted(struct runtime *rt, uint64_t ident, int64_t code);
void trace_async_delivered(struct tstate *ts, int64_t code);
/* A plugin load (of `what`, a path) or unload (of `what`, a name) into
   the runtime with handle `rt` begins / ends with rc. */
void trace_plugin_begin(uint64_t rt, int unload, const char *what);
void trace_plugin_end(uint64_t rt, int rc);
/* A finalize phase `name` of `rt` that began at t0 ended. */
void trace_finalize_phase(struct runtime *rt, int64_t t0, const char *name);

/* ---- lifecycle (runtime.c) ------------------------------------------------- */

/* A runtime was created: starts a trace when TETHER_TRACE is set and none
   records.  Never fails the creation (a bad path is reported on stderr). */
void trace_runtime_created(struct runtime *rt);
/* `rt` is finalized: writes and ends its trace, if it has one. */
void trace_runtime_finalized(struct runtime *rt);

#endif
