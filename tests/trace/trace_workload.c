/*
 * trace_workload.c - runs a GIL workload under tether_trace_start and
 * writes the trace (tests/trace/check_trace.py validates it;
 * docs/tracing.md's pictures are drawn from it by scripts/gil-timeline).
 *
 *   trace_workload SCENARIO OUT.json [SECONDS]
 *
 * Scenarios:
 *   convoy   one CPU-bound thread and one that does 1 ms blocking calls
 *            (the convoy case of docs/performance.md), then 100 us of work
 *   convoy-ensure  the same, but the second thread is a foreign pthread
 *            that comes back with tether_ensure, an ordinary take without
 *            the convoy rule's priority: CPython's behaviour
 *   cpu8     eight CPU-bound threads sharing the GIL (they begin together)
 *   interps  two interpreters with a GIL each (TETHER_CONFIG_PER_INTERP_GIL),
 *            two CPU-bound threads in each
 *   mixed    everything the recorder knows: CPU-bound and blocking
 *            threads, joins, an asynchronous exception, ensure/release
 *            from foreign pthreads, a drop request answered by a wait, and
 *            a finalize that refuses the GIL to daemon threads still
 *            asking for it
 *
 * The trace ends at tether_runtime_finalize, which writes it.  Exit status
 * 0, or 1 with a message.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <tether/tether.h>

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void check(int rc, const char *what)
{
    if (rc != TETHER_OK) {
        fprintf(stderr, "trace_workload: %s: %s: %s\n", what,
                tether_status_name(rc), tether_last_error());
        exit(1);
    }
}

static int64_t g_until; /* written before any thread starts */
static tether_runtime g_rt;
static tether_event g_go; /* cpu8: set once every thread has started */
static tether_interp g_interp;
static atomic_int g_stop;

/* A CPU-bound guest: computes, and calls the eval breaker every few
   thousand iterations, as an interpreter loop does. */
static int cpu_bound(void *arg)
{
    (void)arg;
    volatile uint64_t x = 1;
    while (now_ns() < g_until && !atomic_load(&g_stop)) {
        for (int i = 0; i < 2000; i++)
            x = x * 6364136223846793005u + 1442695040888963407u;
        int rc = tether_checkpoint();
        if (rc == TETHER_EASYNC) {
            int64_t code;
            tether_async_fetch(&code, NULL, NULL);
            return TETHER_EXIT; /* asked to stop */
        }
        if (rc != TETHER_OK)
            return TETHER_EXIT;
    }
    return TETHER_OK;
}

/* About 100 us of work holding the GIL (handling what was read). */
static void handle_input(void)
{
    int64_t end = now_ns() + 100000;
    volatile uint64_t x = 1;
    while (now_ns() < end)
        x = x * 3 + 1;
}

/* Computes until an asynchronous exception stops it (30 s at most). */
static int victim_fn(void *arg)
{
    (void)arg;
    int64_t failsafe = now_ns() + 30000000000;
    volatile uint64_t x = 1;
    while (now_ns() < failsafe) {
        for (int i = 0; i < 2000; i++)
            x = x * 6364136223846793005u + 1442695040888963407u;
        int rc = tether_checkpoint();
        if (rc == TETHER_EASYNC) {
            tether_async_fetch(NULL, NULL, NULL);
            return TETHER_EXIT;
        }
        if (rc != TETHER_OK)
            return TETHER_EXIT;
    }
    return TETHER_OK;
}

/* A thread that blocks for 1 ms at a time without the GIL (I/O). */
static int io_bound(void *arg)
{
    (void)arg;
    while (now_ns() < g_until && !atomic_load(&g_stop)) {
        tether_tstate st;
        if (tether_save_thread(&st) != TETHER_OK)
            return TETHER_EXIT;
        struct timespec d = {0, 1000000};
        nanosleep(&d, NULL);
        if (tether_restore_thread(st) != TETHER_OK)
            return TETHER_EXIT;
        handle_input();
    }
    return TETHER_OK;
}

/* The same as a foreign pthread: 1 ms outside, then ensure, work,
   release. */
static void *io_foreign(void *arg)
{
    (void)arg;
    while (now_ns() < g_until) {
        struct timespec d = {0, 1000000};
        nanosleep(&d, NULL);
        tether_gilstate g;
        if (tether_ensure(g_interp, &g) != TETHER_OK)
            break;
        handle_input();
        tether_release(g);
    }
    return NULL;
}

/* Sleeps in a tether wait, so its drops are "wait" drops. */
static int sleeper(void *arg)
{
    (void)arg;
    while (now_ns() < g_until && !atomic_load(&g_stop))
        if (tether_sleep(2000000) != TETHER_OK)
            return TETHER_EXIT;
    return TETHER_OK;
}

/* A daemon that keeps asking for the GIL until finalize refuses it. */
static int daemon_spin(void *arg)
{
    (void)arg;
    for (;;) {
        int rc = tether_sleep(0);
        if (rc == TETHER_EFINALIZING)
            return TETHER_OK;
        if (rc != TETHER_OK && rc != TETHER_EASYNC)
            return TETHER_EXIT;
        tether_checkpoint();
    }
}

/* A foreign pthread that calls into the runtime with ensure/release. */
static void *foreign(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20; i++) {
        tether_gilstate g;
        if (tether_ensure(g_interp, &g) != TETHER_OK)
            break;
        volatile uint64_t x = 1;
        for (int k = 0; k < 20000; k++)
            x += (uint64_t)k * x;
        tether_release(g);
        struct timespec d = {0, 300000};
        nanosleep(&d, NULL);
    }
    return NULL;
}

static tether_thread start(tether_thread_fn fn, const char *name, int daemon)
{
    tether_thread_opts o = {sizeof o, name, daemon, 0};
    tether_thread t;
    check(tether_thread_start(g_interp, fn, NULL, &o, &t), "tether_thread_start");
    return t;
}

static void join(tether_thread t)
{
    check(tether_thread_join(t, -1), "tether_thread_join");
    tether_thread_release(t);
}

/* The main thread waits without holding the GIL until the end. */
static void wait_until_end(void)
{
    int64_t left = g_until - now_ns();
    if (left > 0)
        tether_sleep(left);
}

static void scenario_convoy(void)
{
    tether_thread a = start(cpu_bound, "cpu", 0);
    tether_thread b = start(io_bound, "io (1 ms calls)", 0);
    wait_until_end();
    join(a);
    join(b);
}

static void scenario_convoy_ensure(void)
{
    tether_thread a = start(cpu_bound, "cpu", 0);
    pthread_t f;
    pthread_create(&f, NULL, io_foreign, NULL);
    wait_until_end();
    join(a);
    tether_tstate st;
    check(tether_save_thread(&st), "tether_save_thread");
    pthread_join(f, NULL);
    check(tether_restore_thread(st), "tether_restore_thread");
}

/* cpu_bound once every thread has started. */
static int cpu_after_go(void *arg)
{
    if (tether_event_wait(g_go, -1) != TETHER_OK)
        return TETHER_EXIT;
    return cpu_bound(arg);
}

static void scenario_cpu8(void)
{
    tether_thread t[8];
    char name[16];
    check(tether_event_new(&g_go), "tether_event_new");
    for (int i = 0; i < 8; i++) {
        snprintf(name, sizeof name, "cpu-%d", i + 1);
        t[i] = start(cpu_after_go, name, 0);
    }
    check(tether_event_set(g_go), "tether_event_set");
    wait_until_end();
    for (int i = 0; i < 8; i++)
        join(t[i]);
    tether_event_free(g_go);
}

static void scenario_interps(void)
{
    tether_interp second;
    tether_runtime_main_interp(g_rt, &g_interp);
    check(tether_interp_create(g_rt, &second), "tether_interp_create");
    tether_thread t[4];
    const char *names[] = {"main-interp-1", "main-interp-2", "second-1", "second-2"};
    for (int i = 0; i < 4; i++) {
        tether_thread_opts o = {sizeof o, names[i], 0, 0};
        check(tether_thread_start(i < 2 ? g_interp : second, cpu_bound, NULL, &o,
                                  &t[i]), "tether_thread_start");
    }
    wait_until_end();
    for (int i = 0; i < 4; i++)
        join(t[i]);
    check(tether_interp_destroy(second, 10000000000), "tether_interp_destroy");
}

static void scenario_mixed(void)
{
    tether_thread cpu = start(cpu_bound, "cpu", 0);
    tether_thread io = start(io_bound, "io", 0);
    tether_thread sl = start(sleeper, "sleeper", 0);
    tether_thread victim = start(victim_fn, "victim", 0);
    pthread_t f[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&f[i], NULL, foreign, NULL);
    tether_sleep((g_until - now_ns()) / 2 > 0 ? (g_until - now_ns()) / 2 : 0);
    check(tether_thread_raise(victim, 42, NULL, NULL), "tether_thread_raise");
    join(victim);
    wait_until_end();
    join(cpu);
    join(io);
    join(sl);
    tether_tstate st;
    check(tether_save_thread(&st), "tether_save_thread");
    for (int i = 0; i < 2; i++)
        pthread_join(f[i], NULL);
    check(tether_restore_thread(st), "tether_restore_thread");
    /* Daemons asking for the GIL when finalize comes. */
    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "daemon-%d", i + 1);
        tether_thread d = start(daemon_spin, name, 1);
        tether_thread_release(d);
    }
    tether_sleep(20000000);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: trace_workload convoy|convoy-ensure|cpu8|interps|mixed OUT.json [SECONDS]\n");
        return 2;
    }
    double secs = argc > 3 ? atof(argv[3]) : 0.3;
    tether_runtime rt;
    tether_config cfg = {sizeof cfg, 0, 0, NULL, NULL};
    if (!strcmp(argv[1], "interps"))
        cfg.flags = TETHER_CONFIG_PER_INTERP_GIL;
    check(tether_runtime_create(&cfg, &rt), "tether_runtime_create");
    g_rt = rt;
    check(tether_runtime_main_interp(rt, &g_interp), "tether_runtime_main_interp");
    check(tether_trace_start(rt, argv[2], -1, 0), "tether_trace_start");
    g_until = now_ns() + (int64_t)(secs * 1e9);
    if (!strcmp(argv[1], "convoy"))
        scenario_convoy();
    else if (!strcmp(argv[1], "convoy-ensure"))
        scenario_convoy_ensure();
    else if (!strcmp(argv[1], "cpu8"))
        scenario_cpu8();
    else if (!strcmp(argv[1], "mixed"))
        scenario_mixed();
    else if (!strcmp(argv[1], "interps"))
        scenario_interps();
    else {
        fprintf(stderr, "trace_workload: unknown scenario '%s'\n", argv[1]);
        return 2;
    }
    /* Finalize writes the trace. */
    int rc = tether_runtime_finalize(rt, 10000000000);
    if (rc != TETHER_OK && rc != TETHER_ETIMEDOUT)
        check(rc, "tether_runtime_finalize");
    return 0;
}
