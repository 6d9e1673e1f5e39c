/*
 * util.c - clocks, statistics and thread helpers shared by the groups.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

/* Benchmark threads only run short loops: a small stack keeps 1000 of them
   cheap. */
#define BENCH_STACK_SIZE (256u * 1024u)

uint64_t bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bench_sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u),
                          (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

uint64_t bench_count(const bench_ctx *ctx, uint64_t normal, uint64_t floor)
{
    if (!ctx->smoke)
        return normal;
    return normal / 1000 > floor ? normal / 1000 : floor;
}

uint64_t bench_window_ns(const bench_ctx *ctx, unsigned normal_ms,
                         unsigned smoke_ms)
{
    return (uint64_t)(ctx->smoke ? smoke_ms : normal_ms) * 1000000u;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_percentile(double *v, size_t n, double p)
{
    qsort(v, n, sizeof *v, cmp_double);
    double pos = p * (double)(n - 1);
    size_t lo = (size_t)pos;
    if (lo + 1 >= n)
        return v[n - 1];
    return v[lo] + (pos - (double)lo) * (v[lo + 1] - v[lo]);
}

double bench_median(double *v, size_t n)
{
    return bench_percentile(v, n, 0.5);
}

void bench_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(NULL);
    _exit(2);
}

void bench_ok(int rc, const char *what)
{
    if (rc != TETHER_OK)
        bench_fail("%s: %s (%s)", what, tether_status_name(rc),
                   tether_last_error());
}

pthread_t bench_spawn(void *(*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    pthread_t t;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, BENCH_STACK_SIZE);
    int rc = pthread_create(&t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        bench_fail("pthread_create: %s", strerror(rc));
    return t;
}

void bench_join(pthread_t thread)
{
    int rc = pthread_join(thread, NULL);
    if (rc != 0)
        bench_fail("pthread_join: %s", strerror(rc));
}

double bench_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size, resident;
    if (!f)
        bench_fail("/proc/self/statm: %s", strerror(errno));
    int ok = fscanf(f, "%lu %lu", &size, &resident) == 2;
    fclose(f);
    if (!ok)
        bench_fail("/proc/self/statm: unexpected contents");
    return (double)resident * (double)sysconf(_SC_PAGESIZE);
}

double bench_in_child(double (*fn)(void *), void *arg)
{
    int fd[2];
    if (pipe(fd) != 0)
        bench_fail("pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        bench_fail("fork: %s", strerror(errno));
    if (pid == 0) {
        close(fd[0]);
        double v = fn(arg);
        _exit(write(fd[1], &v, sizeof v) == (ssize_t)sizeof v ? 0 : 3);
    }
    close(fd[1]);
    double v = 0;
    ssize_t got;
    while ((got = read(fd[0], &v, sizeof v)) < 0 && errno == EINTR) {
    }
    close(fd[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (got != (ssize_t)sizeof v || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        bench_fail("the measuring child failed (status %d)", status);
    return v;
}

uint64_t bench_work(uint64_t x)
{
    /* 32 dependent multiply-adds (a 64-bit LCG): about 100 cycles that no
       compiler can fold, standing in for a few bytecodes of guest code. */
    for (int i = 0; i < 32; i++)
        x = x * 6364136223846793005u + 1442695040888963407u;
    return x;
}

struct bench_gate {
    pthread_mutex_t mu; /* protects open */
    pthread_cond_t cv;
    int open;
};

bench_gate *bench_gate_new(void)
{
    bench_gate *g = calloc(1, sizeof *g);
    if (!g)
        bench_fail("out of memory");
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    return g;
}

void bench_gate_wait(bench_gate *g)
{
    pthread_mutex_lock(&g->mu);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

void bench_gate_open(bench_gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

void bench_gate_free(bench_gate *g)
{
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}
