/*
 * harness.c - rows, series, the round-robin runner and the forked group
 * driver.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

bench_row *bench_row_new(bench_ctx *ctx, const char *id, const char *what,
                         const char *base_name, bench_unit unit)
{
    bench_results *res = ctx->res;
    if (res->nrows == BENCH_MAX_ROWS)
        bench_fail("too many rows (raise BENCH_MAX_ROWS)");
    bench_row *r = &res->rows[res->nrows++];
    memset(r, 0, sizeof *r);
    copy_str(r->group, sizeof r->group, ctx->group);
    copy_str(r->id, sizeof r->id, id);
    copy_str(r->what, sizeof r->what, what);
    copy_str(r->base_name, sizeof r->base_name, base_name);
    r->unit = unit;
    return r;
}

void bench_row_target(bench_row *r, bench_target kind, double value)
{
    r->target = kind;
    r->target_value = value;
}

void bench_row_note(bench_row *r, const char *fmt, ...)
{
    size_t len = strlen(r->note);
    if (len > 0 && len + 1 < sizeof r->note)
        r->note[len++] = ' ';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->note + len, sizeof r->note - len, fmt, ap);
    va_end(ap);
}

void bench_row_add(bench_row *r, int column, double value)
{
    if (r->n[column] < BENCH_MAX_REPS)
        r->v[column][r->n[column]++] = value;
}

bench_series *bench_series_get(bench_ctx *ctx, const char *name)
{
    bench_results *res = ctx->res;
    for (int i = 0; i < res->nseries; i++)
        if (strcmp(res->series[i].name, name) == 0)
            return &res->series[i];
    if (res->nseries == BENCH_MAX_SERIES)
        bench_fail("too many series (raise BENCH_MAX_SERIES)");
    bench_series *s = &res->series[res->nseries++];
    copy_str(s->name, sizeof s->name, name);
    s->n = 0;
    return s;
}

void bench_series_add(bench_series *s, double value)
{
    if (s->n < BENCH_SERIES_CAP)
        s->v[s->n++] = value;
}

/* Notes once, on each of the side's rows, that its CPython baseline is
   missing.  (A missing tether column is explained by its group.) */
static void note_missing(const bench_side *side)
{
    for (int m = 0; m < BENCH_METRICS; m++) {
        bench_row *r = side->rows[m];
        if (r && !strstr(r->note, "not built"))
            bench_row_note(r, "The CPython baseline was not built "
                              "(python3-dev / pkg-config python3-embed "
                              "missing) or was disabled.");
    }
}

static int runnable(const bench_ctx *ctx, const bench_side *side)
{
    return side->fn && (side->column != BENCH_PYTHON || ctx->python);
}

static void run_side(bench_ctx *ctx, const bench_side *side)
{
    double out[BENCH_METRICS] = {0};
    int column = side->column == BENCH_TETHER ? BENCH_TETHER : BENCH_BASE;
    side->fn(ctx, side->arg, out);
    for (int m = 0; m < BENCH_METRICS; m++)
        if (side->rows[m])
            bench_row_add(side->rows[m], column, out[m]);
}

void bench_round_robin(bench_ctx *ctx, const bench_side *sides, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (sides[i].column == BENCH_PYTHON && !runnable(ctx, &sides[i]))
            note_missing(&sides[i]);
    for (int rep = 0; rep < ctx->reps; rep++) {
        for (size_t k = 0; k < n; k++) {
            const bench_side *side = &sides[(k + (size_t)rep) % n];
            if (runnable(ctx, side))
                run_side(ctx, side);
        }
    }
}

/* ---- the group driver ---- */

bench_results *harness_results_new(void)
{
    void *p = mmap(NULL, sizeof(bench_results), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        bench_fail("mmap of the results failed");
    memset(p, 0, sizeof(bench_results));
    return p;
}

/* The child: sets up the runtime (and CPython) and runs the group. */
static _Noreturn void group_child(const bench_group *g, bench_ctx ctx)
{
    ctx.group = g->id;
    ctx.python = ctx.python && g->python;
    if (ctx.python && ctx.python_init)
        ctx.python_init();
    bench_ok(tether_runtime_create(NULL, &ctx.rt), "tether_runtime_create");
    bench_ok(tether_runtime_main_interp(ctx.rt, &ctx.interp),
             "tether_runtime_main_interp");
    g->run(&ctx);
    fflush(NULL);
    /* No finalize: the group's threads are joined, and a benchmark process
       has no business timing its own teardown. */
    _exit(0);
}

/* Waits for the child up to timeout_s; kills it after.  Returns its wait
   status, or -1 when it was killed for the timeout. */
static int wait_child(pid_t pid, unsigned timeout_s)
{
    uint64_t deadline = bench_now() + (uint64_t)timeout_s * 1000000000u;
    for (;;) {
        int status;
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid)
            return status;
        if (bench_now() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        bench_sleep_ns(10 * 1000000u);
    }
}

static void describe_failure(int status, unsigned timeout_s, char *buf,
                             size_t cap)
{
    if (status == -1)
        snprintf(buf, cap, "timed out after %u s (killed)", timeout_s);
    else if (WIFSIGNALED(status))
        snprintf(buf, cap, "crashed: %s", strsignal(WTERMSIG(status)));
    else
        snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
}

int harness_run_group(const bench_group *g, const bench_ctx *proto,
                      unsigned timeout_s, char *why, size_t cap)
{
    int first_row = proto->res->nrows;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        bench_fail("fork failed");
    if (pid == 0)
        group_child(g, *proto);
    int status = wait_child(pid, timeout_s);
    if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    describe_failure(status, timeout_s, why, cap);
    fprintf(stderr, "bench: group %s %s\n", g->id, why);
    for (int i = first_row; i < proto->res->nrows; i++)
        bench_row_note(&proto->res->rows[i], "Group %s %s.", g->id, why);
    return -1;
}
