/*
 * demo.c - a tour of tether from a C host.
 *
 * The host creates a runtime (which leaves the main thread holding the main
 * interpreter's GIL, like Py_Initialize) and then plays a sequence of acts,
 * each showing one part of the threading model.  Every act also checks what
 * it shows, so the demo doubles as a smoke test: ctest runs it, and it exits
 * 1 with the failing call's status and last-error sentence if anything is
 * not as described.  A new act is a function plus a line in `acts`.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tether/tether.h>

#define MS ((int64_t)1000000)

/* What every act gets: the runtime and the interpreter it plays in. */
typedef struct demo {
    tether_runtime rt;
    tether_interp interp;
} demo;

/* ------------------------------------------------------------------------
 * Checking
 * ---------------------------------------------------------------------- */

/* Stops the demo unless `rc` is `want`, naming the call and the reason. */
static void expect_status(int rc, int want, const char *call, int line)
{
    if (rc == want)
        return;
    fprintf(stderr, "demo.c:%d: %s returned %s, expected %s: %s\n", line,
            call, tether_status_name(rc), tether_status_name(want),
            tether_last_error());
    exit(1);
}

/* Stops the demo unless `cond` holds. */
static void expect_true(int cond, const char *what, int line)
{
    if (cond)
        return;
    fprintf(stderr, "demo.c:%d: expected %s\n", line, what);
    exit(1);
}

#define EXPECT(want, call) expect_status((call), (want), #call, __LINE__)
#define CHECK(call) EXPECT(TETHER_OK, call)
#define REQUIRE(cond) expect_true((cond), #cond, __LINE__)

/* Starts fn(arg) on a new tether thread called `name`. */
static tether_thread start(demo *d, const char *name, tether_thread_fn fn,
                           void *arg)
{
    tether_thread_opts opts = {.size = sizeof opts, .name = name};
    tether_thread t = 0;

    CHECK(tether_thread_start(d->interp, fn, arg, &opts, &t));
    return t;
}

/* Joins `t` without a timeout and returns what its function returned. */
static int join(tether_thread t)
{
    int result = 0;

    CHECK(tether_thread_join(t, -1));
    CHECK(tether_thread_result(t, &result));
    CHECK(tether_thread_release(t));
    return result;
}

/* ------------------------------------------------------------------------
 * Act 1: threads share guest state under the GIL
 * ---------------------------------------------------------------------- */

enum { COUNTER_THREADS = 4, COUNTER_STEPS = 5000000 };

/* Guest state.  Only the GIL holder touches it, so it needs no lock. */
typedef struct counter {
    long value;
    int last_writer; /* the thread that incremented last, or -1 */
    long handoffs;   /* times the incrementing thread changed */
} counter;

typedef struct counter_arg {
    counter *c;
    int id;
} counter_arg;

/* The guest loop: work, then a checkpoint, where the GIL may change hands. */
static int count_up(void *p)
{
    counter_arg *a = p;

    for (int i = 0; i < COUNTER_STEPS; i++) {
        if (a->c->last_writer != a->id) {
            a->c->handoffs += a->c->last_writer >= 0;
            a->c->last_writer = a->id;
        }
        a->c->value++;
        int rc = tether_checkpoint();
        if (rc != TETHER_OK)
            return rc;
    }
    return TETHER_OK;
}

static void act_counter(demo *d)
{
    static const char *const names[COUNTER_THREADS] = {
        "count-1", "count-2", "count-3", "count-4"};
    counter c = {.last_writer = -1};
    counter_arg args[COUNTER_THREADS];
    tether_thread t[COUNTER_THREADS];

    for (int i = 0; i < COUNTER_THREADS; i++) {
        args[i] = (counter_arg){&c, i};
        t[i] = start(d, names[i], count_up, &args[i]);
    }
    for (int i = 0; i < COUNTER_THREADS; i++)
        EXPECT(TETHER_OK, join(t[i]));
    printf("   %d threads x %d increments, no lock but the GIL: counter = %ld\n",
           COUNTER_THREADS, COUNTER_STEPS, c.value);
    printf("   the counting moved from one thread to another %ld times\n",
           c.handoffs);
    REQUIRE(c.value == (long)COUNTER_THREADS * COUNTER_STEPS);
}

/* ------------------------------------------------------------------------
 * Act 2: a thread the runtime did not create borrows the GIL
 * ---------------------------------------------------------------------- */

typedef struct foreign_arg {
    tether_interp interp;
    pthread_t pt;
    int guest_calls; /* guest state: touched only under the GIL */
} foreign_arg;

/* One call into the guest, the way a plugin's native thread makes it. */
static void call_guest(foreign_arg *f)
{
    tether_gilstate st = 0;

    CHECK(tether_ensure(f->interp, &st));
    f->guest_calls++;
    CHECK(tether_release(st));
}

/* The body of a raw pthread: three guest calls, one of them nested. */
static void *foreign_main(void *p)
{
    foreign_arg *f = p;
    tether_gilstate outer = 0, inner = 0;

    REQUIRE(!tether_gil_held());
    CHECK(tether_ensure(f->interp, &outer));
    REQUIRE(tether_gil_held());
    printf("   foreign pthread: tether_ensure -> holds the GIL\n");
    CHECK(tether_ensure(f->interp, &inner));
    f->guest_calls++;
    CHECK(tether_release(inner));
    REQUIRE(tether_gil_held());
    CHECK(tether_release(outer));
    REQUIRE(!tether_gil_held());
    printf("   foreign pthread: nested ensure/release, then released the GIL\n");

    EXPECT(TETHER_ESTATE, tether_release(outer));
    printf("   foreign pthread: releasing the same token again -> %s, "
           "nothing changed\n", tether_status_name(TETHER_ESTATE));

    call_guest(f);
    call_guest(f);
    return NULL;
}

/* pthread_join as a blocking call: the GIL is released around it, or the
   foreign thread's tether_ensure would wait for the main thread forever. */
static int join_pthread(void *p)
{
    foreign_arg *f = p;

    return pthread_join(f->pt, NULL) == 0 ? TETHER_OK : TETHER_ESTATE;
}

static void act_foreign(demo *d)
{
    foreign_arg f = {.interp = d->interp};

    REQUIRE(pthread_create(&f.pt, NULL, foreign_main, &f) == 0);
    CHECK(tether_call_blocking(join_pthread, &f, NULL, NULL));
    printf("   %d guest calls ran on the foreign thread; its thread state "
           "stays cached for the next ensure\n", f.guest_calls);
    REQUIRE(f.guest_calls == 3);
}

/* ------------------------------------------------------------------------
 * Act 3: asynchronous exceptions
 * ---------------------------------------------------------------------- */

enum { STOP_CODE = 42 };

typedef struct target {
    tether_event ready;   /* set by the target once it is running */
    long checkpoints;     /* how many checkpoints a spinner passed */
    int wait_rc;          /* what a blocked waiter's wait returned */
    int64_t code;         /* the exception code the target fetched */
} target;

/* Takes the delivered exception and exits silently, like SystemExit. */
static int catch_async(target *t)
{
    CHECK(tether_async_fetch(&t->code, NULL, NULL));
    return TETHER_EXIT;
}

/* A CPU-bound guest loop that only ever passes checkpoints. */
static int spin(void *p)
{
    target *t = p;
    int rc = tether_event_set(t->ready);

    while (rc == TETHER_OK) {
        t->checkpoints++;
        rc = tether_checkpoint();
    }
    return rc == TETHER_EASYNC ? catch_async(t) : rc;
}

/* A guest blocked in a wait that nothing else will ever end. */
static int block(void *p)
{
    target *t = p;
    tether_event never = 0;

    CHECK(tether_event_new(&never));
    CHECK(tether_event_set(t->ready));
    t->wait_rc = tether_event_wait(never, -1);
    CHECK(tether_event_free(never));
    return t->wait_rc == TETHER_EASYNC ? catch_async(t) : t->wait_rc;
}

/* Starts fn, waits until it runs, raises STOP_CODE in it and joins it. */
static target raise_into(demo *d, const char *name, tether_thread_fn fn)
{
    target tg = {0};
    tether_thread t = 0;

    CHECK(tether_event_new(&tg.ready));
    t = start(d, name, fn, &tg);
    CHECK(tether_event_wait(tg.ready, -1));
    CHECK(tether_thread_raise(t, STOP_CODE, NULL, NULL));
    EXPECT(TETHER_EXIT, join(t));
    CHECK(tether_event_free(tg.ready));
    REQUIRE(tg.code == STOP_CODE);
    return tg;
}

static void act_async(demo *d)
{
    target spinner = raise_into(d, "spinner", spin);
    printf("   spinner: called tether_checkpoint %ld times; the last call "
           "delivered code %lld\n", spinner.checkpoints,
           (long long)spinner.code);

    target blocked = raise_into(d, "blocked", block);
    printf("   blocked: its endless event wait returned %s with code %lld\n",
           tether_status_name(blocked.wait_rc), (long long)blocked.code);
}

/* ------------------------------------------------------------------------
 * Act 4: join with a timeout
 * ---------------------------------------------------------------------- */

/* Finishes only once the main thread says go. */
static int wait_for_go(void *p)
{
    return tether_event_wait(*(tether_event *)p, -1);
}

static void act_join(demo *d)
{
    tether_event go = 0;
    tether_thread t = 0;

    CHECK(tether_event_new(&go));
    t = start(d, "slow", wait_for_go, &go);
    EXPECT(TETHER_ETIMEDOUT, tether_thread_join(t, 50 * MS));
    REQUIRE(tether_thread_is_alive(t) == 1);
    printf("   join(slow, 50 ms) -> %s; the thread is still alive\n",
           tether_status_name(TETHER_ETIMEDOUT));
    CHECK(tether_event_set(go));
    EXPECT(TETHER_OK, join(t));
    printf("   told it to finish; join(slow, forever) -> OK, and no "
           "instruction of it runs any more\n");
    CHECK(tether_event_free(go));
}

/* ------------------------------------------------------------------------
 * The show
 * ---------------------------------------------------------------------- */

/* ------------------------------------------------------------------------
 * Act 5: a plugin's own native threads call back into guest code
 * ---------------------------------------------------------------------- */

static long g_ticks; /* only touched holding the GIL: no atomics needed */

/* Called on the ticker plugin's pthreads, which took the GIL with
   tether_ensure through the host API table. */
static void on_tick(void *ud, int32_t thread, int32_t tick)
{
    (void)ud;
    g_ticks++;
    if (tick == 0)
        printf("   native thread %d calls back (GIL held: %d)\n", thread,
               tether_gil_held());
}

static void act_ticker(demo *d)
{
    tether_plugin p;
    const char *name, *version;
    void *sym;
    int32_t (*start)(void (*)(void *, int32_t, int32_t), void *, int32_t,
                     int32_t, int32_t);
    int32_t (*wait)(int64_t timeout_ms);

    CHECK(tether_plugin_load(d->rt, TETHER_DEMO_TICKER, &p));
    CHECK(tether_plugin_info(p, &name, &version));
    printf("   loaded plugin %s %s\n", name, version);
    CHECK(tether_plugin_symbol(p, "ticker_start", &sym));
    memcpy(&start, &sym, sizeof start);
    CHECK(tether_plugin_symbol(p, "ticker_wait", &sym));
    memcpy(&wait, &sym, sizeof wait);
    REQUIRE(start(on_tick, NULL, 4, 250, 0) == 0); /* 4 pthreads x 250 ticks */
    REQUIRE(wait(-1) == 0);                        /* releases the GIL */
    printf("   %ld callbacks from 4 native threads, counted without a lock\n",
           g_ticks);
    REQUIRE(g_ticks == 1000);
    CHECK(tether_plugin_unload(p, -1)); /* fini joins its threads */
}

typedef struct act {
    const char *title;
    void (*run)(demo *d);
} act;

static const act acts[] = {
    {"Threads share guest state under the GIL", act_counter},
    {"A thread the runtime did not create borrows the GIL", act_foreign},
    {"Asynchronous exceptions: a spinning thread, a blocked one", act_async},
    {"Join with a timeout", act_join},
    {"A plugin's native threads call back into guest code", act_ticker},
};

static void print_gil_stats(demo *d)
{
    tether_gil_stats s = {.size = sizeof s};

    CHECK(tether_gil_stats_get(d->interp, &s));
    printf("GIL: %llu acquisitions, %llu switches between threads, "
           "%llu forced by a drop request;\n"
           "     threads waited %.1f ms for it in all, %.1f ms at most\n",
           (unsigned long long)s.acquisitions, (unsigned long long)s.switches,
           (unsigned long long)s.forced_drops, s.wait_ns_total / 1e6,
           s.wait_ns_max / 1e6);
}

int main(void)
{
    /* A short switch interval, so that act 1 shows the GIL moving. */
    tether_config cfg = {.size = sizeof cfg, .switch_interval_us = 1000};
    demo d = {0};

    CHECK(tether_runtime_create(&cfg, &d.rt));
    CHECK(tether_runtime_main_interp(d.rt, &d.interp));
    printf("tether %s: runtime created; the main thread holds the GIL "
           "(switch interval 1 ms)\n", tether_version_string());
    REQUIRE(tether_gil_held());

    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) {
        printf("\n%zu. %s\n", i + 1, acts[i].title);
        acts[i].run(&d);
    }

    printf("\n");
    print_gil_stats(&d);
    CHECK(tether_runtime_finalize(d.rt, 1000 * MS));
    printf("runtime finalized: every thread joined, every handle closed\n");
    return 0;
}
