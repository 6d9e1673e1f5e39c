/*
 * b_contention.c - many threads on one GIL: acquisitions per second (and
 * how fairly they are shared) against CPython, and ensure/release with 1000
 * live threads against 8.
 */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

/* A loop thread's attachment: an outer ensure held open, and the state
   saved between operations. */
typedef struct kept {
    tether_interp interp;
    tether_gilstate outer;
    tether_tstate ts;
} kept;

static void *kept_setup(void *ud)
{
    kept *k = malloc(sizeof *k);
    if (!k)
        bench_fail("out of memory");
    k->interp = *(const tether_interp *)ud;
    bench_ok(tether_ensure(k->interp, &k->outer), "tether_ensure");
    bench_ok(tether_save_thread(&k->ts), "tether_save_thread");
    return k;
}

static void kept_teardown(void *state)
{
    kept *k = state;
    bench_ok(tether_restore_thread(k->ts), "tether_restore_thread");
    bench_ok(tether_release(k->outer), "tether_release");
    free(k);
}

/* One GIL acquisition: re-take the GIL, drop it. */
static void acquire_op(void *state)
{
    kept *k = state;
    if (tether_restore_thread(k->ts) != TETHER_OK ||
        tether_save_thread(&k->ts) != TETHER_OK)
        bench_fail("restore/save: %s", tether_last_error());
}

/* One outermost ensure/release on a thread whose state is cached. */
static void ensure_op(void *state)
{
    tether_gilstate g;
    if (tether_ensure(*(const tether_interp *)state, &g) != TETHER_OK ||
        tether_release(g) != TETHER_OK)
        bench_fail("ensure/release: %s", tether_last_error());
}

static void *cached_setup(void *ud)
{
    ensure_op(ud); /* creates the cached state */
    return ud;
}

static void cached_teardown(void *state)
{
    (void)state;
}

/* Runs the loop with the main thread detached. */
static bench_loop_result detached_loop(bench_ctx *ctx, bench_loop *spec)
{
    tether_tstate main_ts;
    spec->ud = &ctx->interp;
    bench_ok(tether_save_thread(&main_ts), "tether_save_thread");
    bench_loop_result r = bench_loop_run(ctx, spec);
    bench_ok(tether_restore_thread(main_ts), "tether_restore_thread");
    return r;
}

static void t_gil_contention(bench_ctx *ctx, const void *arg, double out[])
{
    bench_loop spec = {*(const int *)arg, kept_setup, acquire_op,
                       kept_teardown, NULL};
    bench_loop_result r = detached_loop(ctx, &spec);
    out[0] = r.per_s;
    out[1] = r.min_share;
}

static void t_ensure_scale(bench_ctx *ctx, const void *arg, double out[])
{
    bench_loop spec = {*(const int *)arg, cached_setup, ensure_op,
                       cached_teardown, NULL};
    out[0] = out[1] = detached_loop(ctx, &spec).per_s;
}

/* ---- GIL acquisitions per second against the number of threads ---- */

static const int sweep_normal[] = {1, 2, 4, 8, 16, 64};
static const int sweep_smoke[] = {1, 2, 8};
#define SWEEP_MAX (sizeof sweep_normal / sizeof sweep_normal[0])

/* The rows of one thread count: acquisitions/s, and for the counts the
   issue sets a target on (2 and 8), the fairness of the shares. */
static void sweep_rows(bench_ctx *ctx, int n, bench_row **acq,
                       bench_row **share)
{
    char id[40], what[128];
    int targeted = n == 2 || n == 8;
    snprintf(id, sizeof id, "gil.acq.%d", n);
    snprintf(what, sizeof what, "GIL acquisitions/s, %d %s", n,
             n == 1 ? "thread (uncontended)" : "contending threads");
    *acq = bench_row_new(ctx, id, what, "CPython", UNIT_PER_S);
    if (targeted)
        bench_row_target(*acq, TARGET_RATIO_MIN, 2.0);
    *share = NULL;
    if (!targeted)
        return;
    snprintf(id, sizeof id, "gil.share.%d", n);
    snprintf(what, sizeof what,
             "GIL, %d contending threads: smallest share ÷ fair share", n);
    *share = bench_row_new(ctx, id, what, "CPython", UNIT_FRACTION);
    bench_row_target(*share, TARGET_ABS_MIN, 0.8);
}

static void contention_run(bench_ctx *ctx)
{
    const int *counts = ctx->smoke ? sweep_smoke : sweep_normal;
    size_t n = ctx->smoke ? sizeof sweep_smoke / sizeof sweep_smoke[0]
                          : SWEEP_MAX;
    bench_side sides[2 * SWEEP_MAX];
    for (size_t i = 0; i < n; i++) {
        bench_row *acq, *share;
        sweep_rows(ctx, counts[i], &acq, &share);
        sides[2 * i] = (bench_side){t_gil_contention, &counts[i],
                                    BENCH_TETHER, {acq, share}};
        sides[2 * i + 1] = (bench_side){PY_SIDE(py_gil_contention),
                                        &counts[i], BENCH_PYTHON,
                                        {acq, share}};
    }
    bench_round_robin(ctx, sides, 2 * n);
}

const bench_group bench_group_contention = {"contention", 1, contention_run};

/* ---- ensure/release with 1000 live threads ---- */

static void scale_run(bench_ctx *ctx)
{
    int few = 8, many = ctx->smoke ? 32 : 1000;
    char what[128], base[64];
    snprintf(what, sizeof what,
             "scale: ensure/release throughput, %d threads vs %d", many, few);
    snprintf(base, sizeof base, "tether, %d threads", few);
    bench_row *scale = bench_row_new(ctx, "scale", what, base, UNIT_PER_S);
    bench_row_target(scale, TARGET_RATIO_MIN, 0.5);
    snprintf(what, sizeof what, "ensure/release throughput, %d threads", many);
    bench_row *py_many = bench_row_new(ctx, "scale.many", what, "CPython",
                                       UNIT_PER_S);
    snprintf(what, sizeof what, "ensure/release throughput, %d threads", few);
    bench_row *py_few = bench_row_new(ctx, "scale.few", what, "CPython",
                                      UNIT_PER_S);
    const bench_side sides[] = {
        {t_ensure_scale, &many, BENCH_TETHER, {scale, py_many}},
        {t_ensure_scale, &few, BENCH_BASE, {scale}},
        {t_ensure_scale, &few, BENCH_TETHER, {NULL, py_few}},
        {PY_SIDE(py_ensure_scale), &many, BENCH_PYTHON, {py_many}},
        {PY_SIDE(py_ensure_scale), &few, BENCH_PYTHON, {py_few}},
    };
    bench_round_robin(ctx, sides, sizeof sides / sizeof sides[0]);
}

const bench_group bench_group_scale = {"scale", 1, scale_run};
