/*
 * b_gilstate.c - ensure/release, save/restore and checkpoint, against
 * CPython's PyGILState_* / PyEval_SaveThread and a physical floor.
 *
 * Every tether side is entered and left with the main thread attached to
 * ctx->interp, holding its GIL (the state tether_runtime_create leaves).
 */
#include "bench.h"
#include "floor.h"

/* ---- nested ensure/release: the GIL is already held ---- */

static void t_ensure_nested(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    uint64_t n = bench_count(ctx, 2000000, 100);
    uint64_t t0 = bench_now();
    for (uint64_t i = 0; i < n; i++) {
        tether_gilstate g;
        if (tether_ensure(ctx->interp, &g) != TETHER_OK ||
            tether_release(g) != TETHER_OK)
            bench_fail("nested ensure/release: %s", tether_last_error());
    }
    out[0] = (double)(bench_now() - t0) / (double)n;
}

/* ---- ensure/release on a thread the runtime did not create ---- */

typedef struct foreign_run {
    tether_interp interp;
    uint64_t n;
    double ns; /* per ensure/release pair */
} foreign_run;

static void ensure_release(tether_interp interp)
{
    tether_gilstate g;
    bench_ok(tether_ensure(interp, &g), "tether_ensure");
    bench_ok(tether_release(g), "tether_release");
}

static void *foreign_thread(void *p)
{
    foreign_run *f = p;
    ensure_release(f->interp); /* creates the state that stays cached */
    uint64_t t0 = bench_now();
    for (uint64_t i = 0; i < f->n; i++)
        ensure_release(f->interp);
    f->ns = (double)(bench_now() - t0) / (double)f->n;
    return NULL;
}

static void t_ensure_foreign(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    foreign_run f = {ctx->interp, bench_count(ctx, 1000000, 100), 0};
    tether_tstate main_ts;
    bench_ok(tether_save_thread(&main_ts), "tether_save_thread");
    bench_join(bench_spawn(foreign_thread, &f));
    bench_ok(tether_restore_thread(main_ts), "tether_restore_thread");
    out[0] = f.ns;
}

/* ---- the first ensure/release of a brand-new thread ---- */

typedef struct fresh_run {
    tether_interp interp;
    uint64_t ns; /* ensure + release, timed inside the thread */
} fresh_run;

static void *fresh_thread(void *p)
{
    fresh_run *f = p;
    uint64_t t0 = bench_now();
    ensure_release(f->interp);
    f->ns = bench_now() - t0;
    return NULL; /* the cached state goes back to the pool as the thread exits */
}

/* out[0]: the ensure/release pair inside a new thread; out[1]: the whole
   life of that thread, create to join (which includes freeing the state). */
static void t_ensure_fresh(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    uint64_t k = bench_count(ctx, 300, 3), inner = 0;
    tether_tstate main_ts;
    bench_ok(tether_save_thread(&main_ts), "tether_save_thread");
    uint64_t t0 = bench_now();
    for (uint64_t i = 0; i < k; i++) {
        fresh_run f = {ctx->interp, 0};
        bench_join(bench_spawn(fresh_thread, &f));
        inner += f.ns;
    }
    out[1] = (double)(bench_now() - t0) / (double)k;
    bench_ok(tether_restore_thread(main_ts), "tether_restore_thread");
    out[0] = (double)inner / (double)k;
}

/* ---- save/restore with nobody else around ---- */

static void t_save_restore(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    uint64_t n = bench_count(ctx, 2000000, 100);
    uint64_t t0 = bench_now();
    for (uint64_t i = 0; i < n; i++) {
        tether_tstate ts;
        if (tether_save_thread(&ts) != TETHER_OK ||
            tether_restore_thread(ts) != TETHER_OK)
            bench_fail("save/restore: %s", tether_last_error());
    }
    out[0] = (double)(bench_now() - t0) / (double)n;
}

static void gilstate_run(bench_ctx *ctx)
{
    const char *py = "CPython";
    bench_row *nested = bench_row_new(
        ctx, "ensure.nested", "ensure/release, already attached (nested)", py,
        UNIT_NS);
    bench_row *foreign = bench_row_new(
        ctx, "ensure.foreign",
        "ensure/release, foreign thread, cached state, GIL free", py, UNIT_NS);
    bench_row *fresh = bench_row_new(
        ctx, "ensure.fresh", "ensure/release on a brand-new thread", py,
        UNIT_NS);
    bench_row *life = bench_row_new(
        ctx, "ensure.fresh.life",
        "brand-new thread: create + ensure/release + exit + join", py, UNIT_NS);
    bench_row *save = bench_row_new(ctx, "save_restore",
                                    "save/restore, uncontended", py, UNIT_NS);
    bench_row_target(nested, TARGET_RATIO_MAX, 0.5);
    bench_row_target(foreign, TARGET_RATIO_MAX, 0.5);
    bench_row_target(fresh, TARGET_RATIO_MAX, 0.2);
    bench_row_target(save, TARGET_RATIO_MAX, 0.5);
    bench_row_note(fresh, "Timed inside the new thread.  CPython creates and "
                          "deletes its thread state inside the pair; tether "
                          "takes it in ensure from the interpreter's pool of "
                          "ready states (which the previous thread's exit "
                          "filled) and gives it back when the thread exits, "
                          "which the next row includes.");
    const bench_side sides[] = {
        {t_ensure_nested, NULL, BENCH_TETHER, {nested}},
        {PY_SIDE(py_ensure_nested), NULL, BENCH_PYTHON, {nested}},
        {t_ensure_foreign, NULL, BENCH_TETHER, {foreign}},
        {PY_SIDE(py_ensure_foreign), NULL, BENCH_PYTHON, {foreign}},
        {t_ensure_fresh, NULL, BENCH_TETHER, {fresh, life}},
        {PY_SIDE(py_ensure_fresh), NULL, BENCH_PYTHON, {fresh, life}},
        {t_save_restore, NULL, BENCH_TETHER, {save}},
        {PY_SIDE(py_save_restore), NULL, BENCH_PYTHON, {save}},
    };
    bench_round_robin(ctx, sides, sizeof sides / sizeof sides[0]);
}

const bench_group bench_group_gilstate = {"gilstate", 1, gilstate_run};

/* ---- checkpoint with nothing pending, against the physical floor ---- */

static void t_checkpoint(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    uint64_t n = bench_count(ctx, 50000000, 1000);
    int acc = 0;
    uint64_t t0 = bench_now();
    for (uint64_t i = 0; i < n; i++)
        acc |= tether_checkpoint();
    out[0] = out[1] = (double)(bench_now() - t0) / (double)n;
    if (acc != TETHER_OK)
        bench_fail("tether_checkpoint returned %s", tether_status_name(acc));
}

/* The floor sides call their function directly, as t_checkpoint calls
   tether_checkpoint: through the PLT of the library it lives in.  (A call
   through a function pointer skips the PLT's jump and would make the floor
   one indirect jump cheaper than any client's call.) */
#define FLOOR_SIDE(name, check)                                              \
    static void name(bench_ctx *ctx, const void *arg, double out[])          \
    {                                                                        \
        (void)arg;                                                           \
        uint64_t n = bench_count(ctx, 50000000, 1000);                       \
        int acc = 0;                                                         \
        uint64_t t0 = bench_now();                                           \
        for (uint64_t i = 0; i < n; i++)                                     \
            acc |= check();                                                  \
        out[0] = (double)(bench_now() - t0) / (double)n;                     \
        if (acc != 0)                                                        \
            bench_fail("the floor checkpoint saw a pending bit");            \
    }
FLOOR_SIDE(floor_ie, bench_floor_checkpoint_ie)
FLOOR_SIDE(floor_gd, bench_floor_checkpoint_gd)

static void checkpoint_run(bench_ctx *ctx)
{
    bench_row *ie = bench_row_new(
        ctx, "checkpoint", "checkpoint with nothing pending",
        "floor: .so call + initial-exec TLS + relaxed load", UNIT_NS);
    bench_row *gd = bench_row_new(
        ctx, "checkpoint.dyn", "checkpoint with nothing pending",
        "floor: .so call + dynamic TLS + relaxed load", UNIT_NS);
    bench_row_target(ie, TARGET_RATIO_MAX, 1.0); /* issue 19 item 4 */
    bench_floor_attach();
    const bench_side sides[] = {
        {t_checkpoint, NULL, BENCH_TETHER, {ie, gd}},
        {floor_ie, NULL, BENCH_BASE, {ie}},
        {floor_gd, NULL, BENCH_BASE, {gd}},
    };
    bench_round_robin(ctx, sides, sizeof sides / sizeof sides[0]);
}

const bench_group bench_group_checkpoint = {"checkpoint", 0, checkpoint_run};
