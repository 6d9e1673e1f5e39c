/*
 * main.c - tether-bench: runs every benchmark group and writes the report.
 *
 *   tether-bench [--smoke] [--reps N] [--out DIR] [--only G1,G2]
 *                [--no-python] [--timeout S] [--list]
 *
 * --smoke runs every group with tiny counts (for the test suite: it checks
 * that the benchmarks still run, not how fast).  The exit status is 0 when
 * every group ran to the end, 1 when one crashed, failed or timed out, 2 on
 * a usage error.  Missed targets are reported, not turned into a failure:
 * times on a shared machine are not a test.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static const bench_group *const groups[] = {
    &bench_group_gilstate, &bench_group_checkpoint, &bench_group_contention,
    &bench_group_scale,    &bench_group_share,      &bench_group_memory,
    &bench_group_threads,  &bench_group_locks,
    &bench_group_async,    &bench_group_convoy,     &bench_group_ffi,
    &bench_group_trace,
};
#define NGROUPS (sizeof groups / sizeof groups[0])
_Static_assert(NGROUPS <= sizeof ((run_info *)0)->failed /
                              sizeof ((run_info *)0)->failed[0],
               "run_info.failed must hold every group");

typedef struct options {
    int smoke, reps, python, list;
    unsigned timeout_s;
    const char *out;
    const char *only; /* comma-separated group ids, or NULL for all */
} options;

static int usage(void)
{
    fprintf(stderr,
            "usage: tether-bench [--smoke] [--reps N] [--out DIR] "
            "[--only G1,G2] [--no-python] [--timeout S] [--list]\n");
    return 2;
}

static int parse_args(int argc, char **argv, options *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--smoke") == 0)
            o->smoke = 1;
        else if (strcmp(a, "--no-python") == 0)
            o->python = 0;
        else if (strcmp(a, "--list") == 0)
            o->list = 1;
        else if (strcmp(a, "--reps") == 0 && next)
            o->reps = atoi(argv[++i]);
        else if (strcmp(a, "--timeout") == 0 && next)
            o->timeout_s = (unsigned)atoi(argv[++i]);
        else if (strcmp(a, "--out") == 0 && next)
            o->out = argv[++i];
        else if (strcmp(a, "--only") == 0 && next)
            o->only = argv[++i];
        else
            return -1;
    }
    if (o->reps < 1 || o->reps > BENCH_MAX_REPS || o->timeout_s == 0)
        return -1;
    return 0;
}

/* Whether id is one of the comma-separated names in list (NULL: all). */
static int selected(const char *list, const char *id)
{
    if (!list)
        return 1;
    size_t n = strlen(id);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, id, n) == 0)
            return 1;
        p += len + (end != NULL);
    }
    return 0;
}

static void run_groups(const options *o, bench_results *res, run_info *info)
{
    bench_ctx proto = {0};
    proto.smoke = o->smoke;
    proto.reps = o->reps;
    proto.python = o->python;
#if TETHER_BENCH_HAVE_PYTHON
    proto.python_init = py_init;
#endif
    proto.res = res;
    for (size_t i = 0; i < NGROUPS; i++) {
        if (!selected(o->only, groups[i]->id))
            continue;
        fprintf(stderr, "bench: %s ...\n", groups[i]->id);
        char why[96];
        if (harness_run_group(groups[i], &proto, o->timeout_s, why,
                              sizeof why) == 0)
            continue;
        snprintf(info->failed[info->nfailed++], sizeof info->failed[0],
                 "%s: %s", groups[i]->id, why);
    }
}

int main(int argc, char **argv)
{
    options o = {.reps = 7, .python = TETHER_BENCH_HAVE_PYTHON,
                 .timeout_s = 600, .out = "."};
    if (parse_args(argc, argv, &o) != 0)
        return usage();
    if (o.list) {
        for (size_t i = 0; i < NGROUPS; i++)
            printf("%s\n", groups[i]->id);
        return 0;
    }
    if (!TETHER_BENCH_HAVE_PYTHON)
        fprintf(stderr, "bench: CPython baselines not built (python3-dev / "
                        "pkg-config python3-embed not found); running the "
                        "rest\n");
    bench_results *res = harness_results_new();
    run_info info = {0};
    report_run_info(&info);
    info.smoke = o.smoke;
    info.reps = o.reps;
    if (!o.python)
        snprintf(info.python, sizeof info.python, "disabled");
    run_groups(&o, res, &info);
    info.load[1] = report_loadavg();
    report_markdown(res, &info, stdout);
    int wrote = report_write_all(res, &info, o.out);
    return info.nfailed > 0 || wrote != 0 ? 1 : 0;
}
