/*
 * report.c - turns the rows into results.json, results.csv, results.md and
 * the data files the gnuplot script draws.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* ---- statistics ---- */

static int column_stats(const bench_row *r, int col, double *med, double *lo,
                        double *hi)
{
    int n = r->n[col];
    if (n == 0)
        return 0;
    double v[BENCH_MAX_REPS];
    memcpy(v, r->v[col], (size_t)n * sizeof v[0]);
    *med = bench_median(v, (size_t)n); /* sorts v */
    *lo = v[0];
    *hi = v[n - 1];
    return 1;
}

static const char *verdict(int have, int ok)
{
    return !have ? "n/a" : ok ? "pass" : "miss";
}

static const char *judge(const bench_row *r, const row_stats *s)
{
    double t = s->med[BENCH_TETHER], goal = r->target_value;
    switch (r->target) {
    case TARGET_NONE:
        return "-";
    case TARGET_RATIO_MAX:
        return verdict(s->have_ratio, s->ratio <= goal);
    case TARGET_RATIO_MIN:
        return verdict(s->have_ratio, s->ratio >= goal);
    case TARGET_ABS_MAX:
        return verdict(s->have[BENCH_TETHER], t <= goal);
    case TARGET_ABS_MIN:
        return verdict(s->have[BENCH_TETHER], t >= goal);
    }
    return "n/a";
}

row_stats report_stats(const bench_row *r, int smoke)
{
    row_stats s;
    memset(&s, 0, sizeof s);
    for (int c = 0; c < 2; c++)
        s.have[c] = column_stats(r, c, &s.med[c], &s.lo[c], &s.hi[c]);
    s.have_ratio = s.have[0] && s.have[1] && s.med[1] != 0;
    if (s.have_ratio)
        s.ratio = s.med[0] / s.med[1];
    s.verdict = judge(r, &s);
    if (smoke && r->target != TARGET_NONE)
        s.verdict = "smoke";
    return s;
}

/* ---- formatting ---- */

static void fmt_value(bench_unit unit, double v, char *buf, size_t cap)
{
    switch (unit) {
    case UNIT_NS:
        if (v < 10)
            snprintf(buf, cap, "%.2f ns", v);
        else if (v < 1e3)
            snprintf(buf, cap, "%.1f ns", v);
        else if (v < 1e6)
            snprintf(buf, cap, "%.1f µs", v / 1e3);
        else
            snprintf(buf, cap, "%.2f ms", v / 1e6);
        return;
    case UNIT_PER_S:
        if (v >= 1e6)
            snprintf(buf, cap, "%.2f M/s", v / 1e6);
        else if (v >= 1e3)
            snprintf(buf, cap, "%.1f k/s", v / 1e3);
        else
            snprintf(buf, cap, "%.0f /s", v);
        return;
    case UNIT_FRACTION:
        snprintf(buf, cap, "%.3f", v);
        return;
    case UNIT_BYTES:
        if (v >= 1e6)
            snprintf(buf, cap, "%.2f MB", v / 1e6);
        else if (v >= 1e3)
            snprintf(buf, cap, "%.1f kB", v / 1e3);
        else
            snprintf(buf, cap, "%.0f B", v);
        return;
    }
}

static void fmt_target(const bench_row *r, char *buf, size_t cap)
{
    char v[32];
    switch (r->target) {
    case TARGET_NONE:
        snprintf(buf, cap, "report");
        return;
    case TARGET_RATIO_MAX:
        snprintf(buf, cap, "≤ %g×", r->target_value);
        return;
    case TARGET_RATIO_MIN:
        snprintf(buf, cap, "≥ %g×", r->target_value);
        return;
    case TARGET_ABS_MAX:
        fmt_value(r->unit, r->target_value, v, sizeof v);
        snprintf(buf, cap, "≤ %s", v);
        return;
    case TARGET_ABS_MIN:
        fmt_value(r->unit, r->target_value, v, sizeof v);
        snprintf(buf, cap, "≥ %s", v);
        return;
    }
}

/* A table cell: a column's median and its min - max. */
typedef struct cell {
    char med[32];
    char spread[80];
} cell;

static cell fmt_cell(const bench_row *r, const row_stats *s, int col)
{
    cell c = {"—", "—"};
    if (!s->have[col])
        return c;
    char lo[32], hi[32];
    fmt_value(r->unit, s->med[col], c.med, sizeof c.med);
    fmt_value(r->unit, s->lo[col], lo, sizeof lo);
    fmt_value(r->unit, s->hi[col], hi, sizeof hi);
    snprintf(c.spread, sizeof c.spread, "%s – %s", lo, hi);
    return c;
}

static const char *unit_name(bench_unit u)
{
    return u == UNIT_NS      ? "ns"
           : u == UNIT_PER_S ? "per_s"
           : u == UNIT_BYTES ? "bytes"
                             : "fraction";
}

static const char *target_name(bench_target t)
{
    static const char *names[] = {"none", "ratio_max", "ratio_min", "abs_max",
                                  "abs_min"};
    return names[t];
}

/* ---- machine facts ---- */

static void read_cpu_model(char *buf, size_t cap)
{
    snprintf(buf, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon) {
            snprintf(buf, cap, "%s", colon + 2);
            buf[strcspn(buf, "\n")] = '\0';
            break;
        }
    }
    fclose(f);
}

double report_loadavg(void)
{
    double load = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &load) != 1)
            load = -1;
        fclose(f);
    }
    return load;
}

void report_run_info(run_info *info)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(info->date, sizeof info->date, "%Y-%m-%d %H:%M UTC", &tm);
    read_cpu_model(info->cpu, sizeof info->cpu);
    info->cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
    struct utsname u;
    if (uname(&u) == 0)
        snprintf(info->kernel, sizeof info->kernel, "%s %s", u.sysname,
                 u.release);
#if defined(__clang__)
    snprintf(info->compiler, sizeof info->compiler, "clang %s",
             __clang_version__);
#elif defined(__GNUC__)
    snprintf(info->compiler, sizeof info->compiler, "gcc %s", __VERSION__);
#endif
#if TETHER_BENCH_HAVE_PYTHON
    snprintf(info->python, sizeof info->python, "%s", py_version());
#else
    snprintf(info->python, sizeof info->python, "not built");
#endif
    info->tether = tether_version_string();
    info->load[0] = info->load[1] = report_loadavg();
}

/* ---- Markdown ---- */

static void markdown_row(const bench_row *r, int smoke, FILE *f)
{
    row_stats s = report_stats(r, smoke);
    cell t = fmt_cell(r, &s, BENCH_TETHER), b = fmt_cell(r, &s, BENCH_BASE);
    char target[48], ratio[32];
    fmt_target(r, target, sizeof target);
    if (s.have_ratio)
        snprintf(ratio, sizeof ratio, "%.3g×", s.ratio);
    else
        snprintf(ratio, sizeof ratio, "—");
    int miss = strcmp(s.verdict, "miss") == 0;
    fprintf(f, "| %s | %s | %s (%s) | %s | %s | %s | %s | %s%s%s |\n", r->what,
            t.med, b.med, r->base_name, ratio, t.spread, b.spread, target,
            miss ? "**" : "", s.verdict, miss ? "**" : "");
}

static void markdown_notes(const bench_results *res, FILE *f)
{
    int any = 0;
    for (int i = 0; i < res->nrows; i++) {
        const bench_row *r = &res->rows[i];
        if (!r->note[0])
            continue;
        if (!any)
            fprintf(f, "\nNotes:\n\n");
        any = 1;
        fprintf(f, "- *%s* (vs %s): %s\n", r->what, r->base_name, r->note);
    }
}

static void markdown_misses(const bench_results *res, const run_info *info,
                            FILE *f)
{
    int n = 0;
    for (int i = 0; i < res->nrows; i++) {
        row_stats s = report_stats(&res->rows[i], info->smoke);
        if (strcmp(s.verdict, "miss") != 0)
            continue;
        fprintf(f, "%s- %s (vs %s)\n", n++ ? "" : "\nMissed targets:\n\n",
                res->rows[i].what, res->rows[i].base_name);
    }
    for (int i = 0; i < info->nfailed; i++)
        fprintf(f, "%s- group %s\n", i ? "" : "\nGroups that failed:\n\n",
                info->failed[i]);
}

void report_markdown(const bench_results *res, const run_info *info, FILE *f)
{
    fprintf(f, "Run %s on %d × %s, %s, %s; tether %s, CPython %s; "
               "%d repetitions per side; load average %.2f at the start, "
               "%.2f at the end%s.\n\n",
            info->date, info->cpus, info->cpu, info->kernel, info->compiler,
            info->tether, info->python, info->reps, info->load[0],
            info->load[1],
            info->smoke ? " (SMOKE MODE: the numbers mean nothing)" : "");
    fprintf(f, "| benchmark | tether | baseline | ratio | tether min – max "
               "| baseline min – max | target | result |\n");
    fprintf(f, "|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < res->nrows; i++)
        markdown_row(&res->rows[i], info->smoke, f);
    markdown_notes(res, f);
    markdown_misses(res, info, f);
}

/* ---- JSON and CSV ---- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        if ((unsigned char)*s >= 0x20)
            fputc(*s, f);
    }
    fputc('"', f);
}

static void json_column(FILE *f, const bench_row *r, const row_stats *s,
                        int col)
{
    if (!s->have[col]) {
        fprintf(f, "null");
        return;
    }
    fprintf(f, "{\"median\": %.6g, \"min\": %.6g, \"max\": %.6g, "
               "\"samples\": [",
            s->med[col], s->lo[col], s->hi[col]);
    for (int k = 0; k < r->n[col]; k++)
        fprintf(f, "%s%.6g", k ? ", " : "", r->v[col][k]);
    fprintf(f, "]}");
}

static void json_row(FILE *f, const bench_row *r, int smoke)
{
    row_stats s = report_stats(r, smoke);
    fprintf(f, "    {\"id\": ");
    json_str(f, r->id);
    fprintf(f, ", \"group\": ");
    json_str(f, r->group);
    fprintf(f, ", \"what\": ");
    json_str(f, r->what);
    fprintf(f, ", \"baseline\": ");
    json_str(f, r->base_name);
    fprintf(f, ", \"unit\": \"%s\",\n     \"tether\": ", unit_name(r->unit));
    json_column(f, r, &s, 0);
    fprintf(f, ",\n     \"base\": ");
    json_column(f, r, &s, 1);
    if (s.have_ratio)
        fprintf(f, ",\n     \"ratio\": %.6g", s.ratio);
    else
        fprintf(f, ",\n     \"ratio\": null");
    fprintf(f, ", \"target\": {\"kind\": \"%s\", \"value\": %g}, \"result\": ",
            target_name(r->target), r->target_value);
    json_str(f, s.verdict);
    fprintf(f, ", \"note\": ");
    json_str(f, r->note);
    fprintf(f, "}");
}

static void write_json(const bench_results *res, const run_info *info, FILE *f)
{
    fprintf(f, "{\n  \"machine\": {\"date\": \"%s\", \"cpu\": ", info->date);
    json_str(f, info->cpu);
    fprintf(f, ", \"cpus\": %d, \"kernel\": ", info->cpus);
    json_str(f, info->kernel);
    fprintf(f, ", \"compiler\": ");
    json_str(f, info->compiler);
    fprintf(f, ", \"python\": \"%s\", \"tether\": \"%s\", "
               "\"load\": [%.2f, %.2f]},\n",
            info->python, info->tether, info->load[0], info->load[1]);
    fprintf(f, "  \"smoke\": %s, \"reps\": %d, \"failed_groups\": [",
            info->smoke ? "true" : "false", info->reps);
    for (int i = 0; i < info->nfailed; i++) {
        fprintf(f, "%s", i ? ", " : "");
        json_str(f, info->failed[i]);
    }
    fprintf(f, "],\n  \"rows\": [\n");
    for (int i = 0; i < res->nrows; i++) {
        json_row(f, &res->rows[i], info->smoke);
        fprintf(f, "%s\n", i + 1 < res->nrows ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
}

static void csv_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void csv_num(FILE *f, int have, double v)
{
    if (have)
        fprintf(f, ",%.6g", v);
    else
        fprintf(f, ",");
}

static void write_csv(const bench_results *res, int smoke, FILE *f)
{
    fprintf(f, "id,what,baseline,unit,tether_median,tether_min,tether_max,"
               "base_median,base_min,base_max,ratio,target_kind,target_value,"
               "result\n");
    for (int i = 0; i < res->nrows; i++) {
        const bench_row *r = &res->rows[i];
        row_stats s = report_stats(r, smoke);
        csv_str(f, r->id);
        fputc(',', f);
        csv_str(f, r->what);
        fputc(',', f);
        csv_str(f, r->base_name);
        fprintf(f, ",%s", unit_name(r->unit));
        for (int c = 0; c < 2; c++) {
            csv_num(f, s.have[c], s.med[c]);
            csv_num(f, s.have[c], s.lo[c]);
            csv_num(f, s.have[c], s.hi[c]);
        }
        csv_num(f, s.have_ratio, s.ratio);
        fprintf(f, ",%s,%g,%s\n", target_name(r->target), r->target_value,
                s.verdict);
    }
}

/* ---- plot data ---- */

/* A sweep file: threads, then median/min/max of tether and of CPython, for
   the rows "<prefix><threads>" in the order they were made
   (gil_sweep.dat: "gil.acq."; scale_sweep.dat: "scale.ensure."). */
static void write_sweep(const bench_results *res, const char *prefix, FILE *f)
{
    size_t len = strlen(prefix);
    fprintf(f, "# threads tether_med tether_min tether_max "
               "cpython_med cpython_min cpython_max (%s*, per second)\n",
            prefix);
    for (int i = 0; i < res->nrows; i++) {
        const bench_row *r = &res->rows[i];
        if (strncmp(r->id, prefix, len) != 0)
            continue;
        row_stats s = report_stats(r, 1);
        fprintf(f, "%s", r->id + len);
        for (int c = 0; c < 2; c++) {
            if (s.have[c])
                fprintf(f, " %.6g %.6g %.6g", s.med[c], s.lo[c], s.hi[c]);
            else
                fprintf(f, " NaN NaN NaN");
        }
        fprintf(f, "\n");
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* <series>.cdf.dat: each value in µs with the fraction of values <= it. */
static void write_cdf(const bench_series *s, FILE *f)
{
    double *v = malloc((size_t)(s->n ? s->n : 1) * sizeof *v);
    if (!v)
        return;
    memcpy(v, s->v, (size_t)s->n * sizeof *v);
    qsort(v, (size_t)s->n, sizeof *v, cmp_double);
    fprintf(f, "# %s: latency_us cumulative_fraction (%d samples)\n", s->name,
            s->n);
    for (int i = 0; i < s->n; i++)
        fprintf(f, "%.6g %.6g\n", v[i] / 1e3, (double)(i + 1) / s->n);
    free(v);
}

/* Every writer has this shape; `extra` is what the writer needs beyond the
   results (the series, for the CDF files). */
typedef void (*writer_fn)(const bench_results *res, const run_info *info,
                          const void *extra, FILE *f);

static int write_file(const char *dir, const char *name, writer_fn w,
                      const bench_results *res, const run_info *info,
                      const void *extra)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f) {
        w(res, info, extra, f);
        if (fclose(f) == 0)
            return 0;
    }
    fprintf(stderr, "bench: cannot write %s\n", path);
    return -1;
}

static void w_json(const bench_results *res, const run_info *info,
                   const void *extra, FILE *f)
{
    (void)extra;
    write_json(res, info, f);
}

static void w_csv(const bench_results *res, const run_info *info,
                  const void *extra, FILE *f)
{
    (void)extra;
    write_csv(res, info->smoke, f);
}

static void w_markdown(const bench_results *res, const run_info *info,
                       const void *extra, FILE *f)
{
    (void)extra;
    report_markdown(res, info, f);
}

static void w_sweep(const bench_results *res, const run_info *info,
                    const void *extra, FILE *f)
{
    (void)info;
    write_sweep(res, extra, f);
}

static void w_cdf(const bench_results *res, const run_info *info,
                  const void *extra, FILE *f)
{
    (void)res;
    (void)info;
    write_cdf(extra, f);
}

int report_write_all(const bench_results *res, const run_info *info,
                     const char *dir)
{
    int rc = 0;
    rc |= write_file(dir, "results.json", w_json, res, info, NULL);
    rc |= write_file(dir, "results.csv", w_csv, res, info, NULL);
    rc |= write_file(dir, "results.md", w_markdown, res, info, NULL);
    rc |= write_file(dir, "gil_sweep.dat", w_sweep, res, info, "gil.acq.");
    rc |= write_file(dir, "scale_sweep.dat", w_sweep, res, info,
                     "scale.ensure.");
    for (int i = 0; i < res->nseries; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s.cdf.dat", res->series[i].name);
        rc |= write_file(dir, name, w_cdf, res, info, &res->series[i]);
    }
    return rc;
}
