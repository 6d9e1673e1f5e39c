/*
 * b_ffi.c - a C callback into guest code, called from a thread the runtime
 * did not create: tether's libffi closure (tether_callback_new) against a
 * ctypes CFUNCTYPE called from a C thread.
 *
 * The callback API is built only when the core provides it
 * (TETHER_BENCH_HAVE_CALLBACK, found by bench/CMakeLists.txt); without it
 * the rows report the gap.
 */
#include "bench.h"

#if TETHER_BENCH_HAVE_CALLBACK

/* The empty guest function: ignores its arguments, returns 0. */
static int empty_guest(void **args, void *ret, void *userdata)
{
    (void)args;
    (void)userdata;
    *(int32_t *)ret = 0;
    return TETHER_OK;
}

typedef struct cb_run {
    int (*fn)(int, int);
    uint64_t n;
    double ns;
} cb_run;

static void *cb_thread(void *p)
{
    cb_run *c = p;
    int acc = c->fn(1, 2); /* the first call creates the cached state */
    uint64_t t0 = bench_now();
    for (uint64_t i = 0; i < c->n; i++)
        acc |= c->fn(1, 2);
    c->ns = (double)(bench_now() - t0) / (double)c->n;
    if (acc != 0)
        bench_fail("the tether callback returned %d", acc);
    return NULL;
}

static void t_callback(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    tether_callback cb;
    tether_tstate main_ts;
    bench_ok(tether_callback_new(ctx->interp, "i32(i32,i32)", empty_guest,
                                 NULL, &cb),
             "tether_callback_new");
    cb_run c = {NULL, bench_count(ctx, 1000000, 20), 0};
    *(void **)&c.fn = tether_callback_code(cb); /* as dlsym */
    bench_ok(tether_save_thread(&main_ts), "tether_save_thread");
    bench_join(bench_spawn(cb_thread, &c));
    bench_ok(tether_restore_thread(main_ts), "tether_restore_thread");
    bench_ok(tether_callback_free(cb), "tether_callback_free");
    out[0] = out[1] = c.ns;
}
#define T_CALLBACK t_callback
#else
#define T_CALLBACK ((bench_side_fn)0)
#endif

static void ffi_run(bench_ctx *ctx)
{
    bench_row *fresh = bench_row_new(
        ctx, "ffi.callback",
        "C callback into an empty guest fn, from a foreign thread",
        "ctypes CFUNCTYPE from a C thread", UNIT_NS);
    bench_row *kept = bench_row_new(
        ctx, "ffi.callback.kept",
        "C callback into an empty guest fn, from a foreign thread",
        "ctypes, C thread holding a kept thread state", UNIT_NS);
    bench_row_note(fresh, "ctypes makes and frees a thread state on every "
                          "call from a thread Python does not know; the "
                          "next row keeps one alive with an outer "
                          "PyGILState_Ensure.");
    if (!TETHER_BENCH_HAVE_CALLBACK)
        bench_row_note(fresh, "The tether column is missing: this build of "
                              "the core has no tether_callback_new.");
    const bench_side sides[] = {
        {T_CALLBACK, NULL, BENCH_TETHER, {fresh, kept}},
        {PY_SIDE(py_ctypes_callback), NULL, BENCH_PYTHON, {fresh}},
        {PY_SIDE(py_ctypes_callback_kept), NULL, BENCH_PYTHON, {kept}},
    };
    bench_round_robin(ctx, sides, sizeof sides / sizeof sides[0]);
}

const bench_group bench_group_ffi = {"ffi", 1, ffi_run};
