/*
 * bench.h - the benchmark harness: tether against raw pthreads and CPython,
 * side by side in one run.
 *
 * A benchmark *group* runs in a forked child (so a hang or crash in one
 * group fails that group with its name and the others still run).  A group
 * has *sides* (the tether code, and one or more baselines doing the same
 * thing); the harness runs the sides round-robin, rotating which goes first
 * in each repetition, so drift on a shared machine hits every side alike.
 * Each side call produces up to BENCH_METRICS numbers, each routed to a
 * *row* of the results table, in the row's tether or baseline column.  The
 * table shows per row the median of each column over the repetitions, the
 * spread (min-max), the ratio tether/baseline of the medians, and whether
 * the row's target (from issue 7) was met.
 *
 * The child writes its rows into a shared anonymous mapping the parent
 * reads after the child exits; nothing else is shared between them.
 */
#ifndef TETHER_BENCH_H
#define TETHER_BENCH_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <tether/tether.h>

#define BENCH_MAX_REPS 32
#define BENCH_MAX_ROWS 64
#define BENCH_MAX_SERIES 4
#define BENCH_SERIES_CAP 16384
#define BENCH_METRICS 4

/* The two columns of a row.  A side that fills the baseline column from
   CPython says BENCH_PYTHON, so that it is left out (and the gap noted)
   when CPython is not built or disabled. */
enum { BENCH_TETHER = 0, BENCH_BASE = 1, BENCH_PYTHON = 2 };

/* How a row's target is judged, on the medians. */
typedef enum bench_target {
    TARGET_NONE,      /* reported only */
    TARGET_RATIO_MAX, /* tether / baseline <= value */
    TARGET_RATIO_MIN, /* tether / baseline >= value */
    TARGET_ABS_MAX,   /* tether <= value (in the row's unit) */
    TARGET_ABS_MIN    /* tether >= value */
} bench_target;

/* The unit of a row's values, which decides how they are printed. */
typedef enum bench_unit {
    UNIT_NS,      /* nanoseconds per operation */
    UNIT_PER_S,   /* operations per second */
    UNIT_FRACTION, /* a dimensionless ratio */
    UNIT_BYTES     /* bytes */
} bench_unit;

/* One row of the results table. */
typedef struct bench_row {
    char group[24];      /* the group that made it */
    char id[40];         /* stable key, e.g. "ensure.nested" */
    char what[128];      /* what is measured, for people */
    char base_name[64];  /* what the baseline column is */
    bench_unit unit;
    bench_target target;
    double target_value;
    int n[2];                    /* samples per column */
    double v[2][BENCH_MAX_REPS]; /* one sample per repetition */
    char note[256];              /* e.g. why a column is missing */
} bench_row;

/* A named list of raw values (e.g. every convoy latency, for the CDF). */
typedef struct bench_series {
    char name[40];
    int n;
    double v[BENCH_SERIES_CAP];
} bench_series;

/* Everything the children report; lives in a shared mapping. */
typedef struct bench_results {
    int nrows;
    bench_row rows[BENCH_MAX_ROWS];
    int nseries;
    bench_series series[BENCH_MAX_SERIES];
} bench_results;

/* What a group runs with, set up in the child before the group runs. */
typedef struct bench_ctx {
    const char *group;      /* the running group's id */
    int smoke;              /* tiny counts; times mean nothing */
    int reps;               /* repetitions of every side */
    int python;             /* the CPython baselines are available */
    void (*python_init)(void); /* starts CPython in a group's child (main.c
                                  hands the driver py_init: the driver sits
                                  below the sides it runs) */
    bench_results *res;     /* where rows go */
    tether_runtime rt;      /* created for the group; the main thread */
    tether_interp interp;   /* holds this interp's GIL between sides */
} bench_ctx;

/* One side of a group.  fn writes its metrics to out[]; out[i] goes to
   rows[i] (NULL rows are dropped) in the given column.  A NULL fn is a
   side that was not built (PY_SIDE without CPython); it is skipped, and a
   BENCH_PYTHON side's rows say why. */
typedef void (*bench_side_fn)(bench_ctx *ctx, const void *arg,
                              double out[BENCH_METRICS]);
typedef struct bench_side {
    bench_side_fn fn;
    const void *arg;
    int column;
    bench_row *rows[BENCH_METRICS];
} bench_side;

/* A benchmark group. */
typedef struct bench_group {
    const char *id;
    int python; /* has CPython sides: start CPython in its child */
    void (*run)(bench_ctx *ctx);
} bench_group;

/* ---- harness.c ---- */

/* Adds a row to the results and returns it. */
bench_row *bench_row_new(bench_ctx *ctx, const char *id, const char *what,
                         const char *base_name, bench_unit unit);
/* Sets the row's target. */
void bench_row_target(bench_row *r, bench_target kind, double value);
/* Appends to the row's note (sentences). */
void bench_row_note(bench_row *r, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Adds one sample to a column of the row. */
void bench_row_add(bench_row *r, int column, double value);

/* Returns the named series, creating it. */
bench_series *bench_series_get(bench_ctx *ctx, const char *name);
/* Appends a value (dropped once the series is full). */
void bench_series_add(bench_series *s, double value);

/* Runs every side ctx->reps times, round-robin, the first side rotating
   with each repetition. */
void bench_round_robin(bench_ctx *ctx, const bench_side *sides, size_t n);

/* ---- util.c ---- */

/* The monotonic clock, in nanoseconds. */
uint64_t bench_now(void);
/* Sleeps without touching any GIL. */
void bench_sleep_ns(uint64_t ns);
/* `normal` in a real run, max(normal / 1000, floor) in smoke mode. */
uint64_t bench_count(const bench_ctx *ctx, uint64_t normal, uint64_t floor);
/* A duration: `normal_ms` in a real run, `smoke_ms` in smoke mode. */
uint64_t bench_window_ns(const bench_ctx *ctx, unsigned normal_ms,
                         unsigned smoke_ms);
/* The median, and the p-quantile (0 <= p <= 1, interpolated), of
   v[0..n); n > 0, and v is sorted in place. */
double bench_median(double *v, size_t n);
double bench_percentile(double *v, size_t n, double p);
/* Fails the group: prints the message and exits the child with status 2. */
void bench_fail(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2), noreturn))
#endif
    ;
/* Fails the group unless rc is TETHER_OK (what names the call). */
void bench_ok(int rc, const char *what);
/* pthread_create with a small stack (threads that only run benchmark
   loops); fails the group if the OS refuses. */
pthread_t bench_spawn(void *(*fn)(void *), void *arg);
/* pthread_join that fails the group on error. */
void bench_join(pthread_t thread);
/* About 100 cycles of dependent integer work (a few "bytecodes"). */
uint64_t bench_work(uint64_t x);

/* The resident set of the process, in bytes (/proc/self/statm). */
double bench_rss_bytes(void);
/* Runs fn(arg) in a forked child and returns what it returned there (a
   measurement that must not see memory an earlier run freed).  The caller
   must be the only thread.  Fails the group if the child fails. */
double bench_in_child(double (*fn)(void *), void *arg);

/* A gate that many threads wait at until it opens (mutex + condvar). */
typedef struct bench_gate bench_gate;
bench_gate *bench_gate_new(void);
void bench_gate_wait(bench_gate *g);  /* blocks until opened */
void bench_gate_open(bench_gate *g);
void bench_gate_free(bench_gate *g);

/* A per-thread counter on its own cache line, written by its thread and
   read by the main thread. */
typedef struct bench_counter {
    _Alignas(64) _Atomic uint64_t n;
} bench_counter;

/* ---- loop.c: n threads repeating one operation ---- */

/* Each of `nthreads` threads calls setup (before the start gate; it returns
   the thread's state), then op(state) until told to stop, then
   teardown(state).  The caller must not hold a GIL the operation needs. */
typedef struct bench_loop {
    int nthreads;
    void *(*setup)(void *ud);
    void (*op)(void *state);
    void (*teardown)(void *state);
    void *ud;
} bench_loop;

typedef struct bench_loop_result {
    double per_s;     /* operations per second, all threads together */
    double min_share; /* the slowest thread's share / the fair share 1/n */
} bench_loop_result;

/* Runs the loop: opens the gate once every thread is set up, lets it warm
   up, then counts operations over a window of wall time. */
bench_loop_result bench_loop_run(const bench_ctx *ctx, const bench_loop *spec);

/* Runs the loop timing every op; each thread keeps the times of its last
   BENCH_LAT_KEEP ops.  Returns the p-quantile of all of them, in ns. */
#define BENCH_LAT_KEEP 256
double bench_loop_latency(const bench_ctx *ctx, const bench_loop *spec,
                          double p);

/* ---- the groups ---- */

extern const bench_group bench_group_gilstate;   /* b_gilstate.c */
extern const bench_group bench_group_checkpoint; /* b_gilstate.c */
extern const bench_group bench_group_contention; /* b_contention.c */
extern const bench_group bench_group_scale;      /* b_contention.c */
extern const bench_group bench_group_share;      /* b_contention.c */
extern const bench_group bench_group_memory;     /* b_contention.c */
extern const bench_group bench_group_threads;    /* b_threads.c */
extern const bench_group bench_group_locks;      /* b_threads.c */
extern const bench_group bench_group_async;      /* b_async.c */
extern const bench_group bench_group_trace;      /* b_trace.c */
extern const bench_group bench_group_convoy;     /* b_convoy.c */
extern const bench_group bench_group_ffi;        /* b_ffi.c */

/* ---- cpython.c (only with TETHER_BENCH_HAVE_PYTHON) ---- */

/* Starts an embedded CPython; the calling thread then holds its GIL. */
void py_init(void);
/* "3.11.2": the version of the libpython the harness was built with. */
const char *py_version(void);

/* The CPython side of every benchmark; see cpython.c.  Each is entered and
   left with the calling thread holding the CPython GIL. */
void py_ensure_nested(bench_ctx *ctx, const void *arg, double out[]);
void py_ensure_foreign(bench_ctx *ctx, const void *arg, double out[]);
void py_ensure_fresh(bench_ctx *ctx, const void *arg, double out[]);
void py_save_restore(bench_ctx *ctx, const void *arg, double out[]);
void py_gil_contention(bench_ctx *ctx, const void *arg, double out[]);
void py_ensure_scale(bench_ctx *ctx, const void *arg, double out[]);
void py_ensure_p99(bench_ctx *ctx, const void *arg, double out[]);
void py_cpu_share(bench_ctx *ctx, const void *arg, double out[]);
void py_idle_memory(bench_ctx *ctx, const void *arg, double out[]);
void py_thread_start_join(bench_ctx *ctx, const void *arg, double out[]);
void py_async_spinner(bench_ctx *ctx, const void *arg, double out[]);
void py_async_blocked(bench_ctx *ctx, const void *arg, double out[]);
void py_convoy(bench_ctx *ctx, const void *arg, double out[]);
void py_ctypes_callback(bench_ctx *ctx, const void *arg, double out[]);
void py_ctypes_callback_kept(bench_ctx *ctx, const void *arg, double out[]);

#if TETHER_BENCH_HAVE_PYTHON
#define PY_SIDE(fn) (fn)
#else
#define PY_SIDE(fn) ((bench_side_fn)0)
#endif

/* How long (ms) the CPython thread of the blocked-wait row waits: CPython
   delivers the asynchronous exception only when this wait times out. */
#define PY_BLOCKED_WAIT_MS 50

/* The convoy benchmark's shape, shared by both sides. */
#define CONVOY_IDLE_NS 1000000u /* the I/O thread waits 1 ms between calls */

#endif
