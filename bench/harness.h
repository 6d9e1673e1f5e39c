/*
 * harness.h - what main.c needs from the driver and the report writers.
 */
#ifndef TETHER_BENCH_HARNESS_H
#define TETHER_BENCH_HARNESS_H

#include <stdio.h>

#include "bench.h"

/* A zeroed results block in a shared mapping (children write into it). */
bench_results *harness_results_new(void);

/* Runs group g in a forked child with a copy of *proto, killing it after
   timeout_s.  Returns 0, or -1 with a sentence in why[0..cap) when the
   child crashed, failed or timed out (its rows are noted too). */
int harness_run_group(const bench_group *g, const bench_ctx *proto,
                      unsigned timeout_s, char *why, size_t cap);

/* The summary of one row, computed from its samples. */
typedef struct row_stats {
    int have[2];                 /* the column has samples */
    double med[2], lo[2], hi[2]; /* median, min, max */
    int have_ratio;
    double ratio; /* median tether / median baseline */
    const char *verdict; /* "pass", "miss", "n/a", "-" (no target) */
} row_stats;

/* Computes the summary (sorts copies; the row is not changed).  In smoke
   mode no verdict is given. */
row_stats report_stats(const bench_row *r, int smoke);

/* The facts about the machine and the run, written into every report. */
typedef struct run_info {
    char date[32];
    char cpu[128];
    int cpus;
    char kernel[160];
    char compiler[128];
    char python[32]; /* "3.11.2", or "not built" */
    const char *tether;
    double load[2]; /* the 1-minute load average at the start and the end */
    int smoke, reps;
    int nfailed;
    char failed[16][160]; /* "group: why", one per failed group */
} run_info;

/* Fills in the machine facts (and the load at the start). */
void report_run_info(run_info *info);

/* The 1-minute load average, or -1 when /proc/loadavg cannot be read. */
double report_loadavg(void);

/* Writes results.json, results.csv, results.md, gil_sweep.dat and the
   convoy CDF files into dir.  Returns 0, or -1 (a message was printed). */
int report_write_all(const bench_results *res, const run_info *info,
                     const char *dir);

/* Prints the Markdown table to f. */
void report_markdown(const bench_results *res, const run_info *info, FILE *f);

#endif
