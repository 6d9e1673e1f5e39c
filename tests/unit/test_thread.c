/*
 * test_thread.c - tether_thread_*: the started handshake, join (timeouts,
 * many joiners, self, never started), results, names, idents, is_alive,
 * the thread list, handle references and an OS that refuses threads.
 */
#include <tether/tether.h>

#include <pthread.h>
#include <stdio.h>

#include "runner.h"
#include "support.h"

static tether_runtime g_rt;
static tether_interp g_interp;
static tether_event g_go; /* parked threads wait for it */

static void setup(void)
{
    g_rt = t_runtime_main(NULL, &g_interp);
    ASSERT_OK(tether_event_new(&g_go));
}

/* Finalize first: it waits for released non-daemon threads still using
   g_go. */
static void teardown(void)
{
    t_finalize(g_rt);
    ASSERT_OK(tether_event_free(g_go));
}

/* Waits for g_go, then returns `arg`. */
static int parked(void *arg)
{
    ASSERT_OK(tether_event_wait(g_go, -1));
    return (int)(intptr_t)arg;
}

static uint64_t ident_of(tether_thread t)
{
    uint64_t ident = 0;
    ASSERT_OK(tether_thread_ident(t, &ident));
    return ident;
}

/* ------------------------------------------------------------------------
 * Start, result, handshake
 * ---------------------------------------------------------------------- */

TEST(start_join_result)
{
    setup();
    ASSERT_EQ(t_join(t_start(g_interp, t_return_arg, RESULT(TETHER_OK))),
              TETHER_OK);
    ASSERT_EQ(t_join(t_start(g_interp, t_return_arg, RESULT(TETHER_EXIT))),
              TETHER_EXIT);

    tether_thread t = t_start(g_interp, parked, RESULT(TETHER_EXIT));
    int result = 77;
    ASSERT_FAILS(tether_thread_result(t, &result), TETHER_ESTATE,
                 "tether_thread_result");
    ASSERT_EQ(result, 77);
    ASSERT_OK(tether_event_set(g_go));
    ASSERT_EQ(t_join(t), TETHER_EXIT);
    teardown();
}

static int holds_gil(void *arg)
{
    (void)arg;
    return tether_gil_held() == 1 ? TETHER_OK : TETHER_EXIT;
}

TEST(runs_holding_gil)
{
    setup();
    ASSERT_EQ(t_join(t_start(g_interp, holds_gil, NULL)), TETHER_OK);
    teardown();
}

/* When start returns, the thread is alive and listed, whether or not its
   function has begun. */
TEST(started_handshake)
{
    setup();
    size_t before = t_thread_count(g_interp);
    tether_thread t = t_start(g_interp, parked, NULL);
    ASSERT_EQ(tether_thread_is_alive(t), 1);
    ASSERT_EQ(t_thread_count(g_interp), before + 1);
    ASSERT_OK(tether_event_set(g_go));
    ASSERT_OK(tether_thread_join(t, -1));
    ASSERT_EQ(tether_thread_is_alive(t), 0);
    ASSERT_EQ(t_thread_count(g_interp), before);
    ASSERT_OK(tether_thread_release(t));
    teardown();
}

static void *start_from_foreign(void *arg)
{
    (void)arg;
    ASSERT_EQ(tether_gil_held(), 0);
    tether_thread t = t_start(g_interp, t_return_arg, RESULT(TETHER_EXIT));
    ASSERT_EQ(t_join(t), TETHER_EXIT);
    return NULL;
}

TEST(start_from_unattached_thread)
{
    setup();
    t_run_foreign(start_from_foreign, NULL);
    teardown();
}

TEST(many_in_sequence)
{
    setup();
    int n = runner_rounds(200);
    for (int i = 0; i < n; i++) {
        intptr_t result = i % 2 ? TETHER_EXIT : TETHER_OK;
        ASSERT_EQ(t_join(t_start(g_interp, t_return_arg, (void *)result)), result);
    }
    teardown();
}

/* ------------------------------------------------------------------------
 * Join
 * ---------------------------------------------------------------------- */

TEST(join_timeout)
{
    setup();
    tether_thread t = t_start(g_interp, parked, NULL);
    ASSERT_FAILS(tether_thread_join(t, 0), TETHER_ETIMEDOUT, "tether_thread_join");
    int64_t start = t_now_ns();
    ASSERT_STATUS(tether_thread_join(t, MS(20)), TETHER_ETIMEDOUT);
    ASSERT(t_now_ns() - start >= MS(20)); /* a lower bound: never flaky */
    ASSERT_EQ(tether_thread_is_alive(t), 1);
    ASSERT_OK(tether_event_set(g_go));
    ASSERT_EQ(t_join(t), TETHER_OK);
    teardown();
}

/* Eight threads join one thread at once: half started by tether, half raw
   pthreads that are not attached. */
enum { JOINERS = 8 };
static tether_thread g_target;
static atomic_int g_joining;
static atomic_int g_join_rc[JOINERS];

static int join_target(void *arg)
{
    atomic_fetch_add(&g_joining, 1);
    atomic_store(&g_join_rc[(intptr_t)arg], tether_thread_join(g_target, -1));
    return TETHER_OK;
}

static void *join_target_raw(void *arg)
{
    (void)join_target(arg);
    return NULL;
}

TEST(join_many)
{
    setup();
    g_target = t_start(g_interp, parked, RESULT(TETHER_EXIT));
    tether_thread joiners[JOINERS / 2];
    pthread_t raw[JOINERS / 2];
    for (intptr_t i = 0; i < JOINERS / 2; i++) {
        atomic_store(&g_join_rc[i], 1000);
        atomic_store(&g_join_rc[i + JOINERS / 2], 1000);
        joiners[i] = t_start(g_interp, join_target, (void *)i);
        raw[i] = t_pthread(join_target_raw, (void *)(i + JOINERS / 2));
    }
    while (atomic_load(&g_joining) < JOINERS)
        ASSERT_OK(tether_sleep(MS(1)));
    ASSERT_OK(tether_sleep(MS(20))); /* let them block in join */
    ASSERT_OK(tether_event_set(g_go));
    for (int i = 0; i < JOINERS / 2; i++) {
        ASSERT_EQ(t_join(joiners[i]), TETHER_OK);
        TETHER_BEGIN_ALLOW_THREADS
        t_pthread_join(raw[i]);
        TETHER_END_ALLOW_THREADS
    }
    for (int i = 0; i < JOINERS; i++)
        ASSERT_STATUS(atomic_load(&g_join_rc[i]), TETHER_OK);
    ASSERT_EQ(t_join(g_target), TETHER_EXIT);
    teardown();
}

static int joins_itself(void *arg)
{
    (void)arg;
    tether_thread me;
    ASSERT_OK(tether_thread_current(&me));
    ASSERT_FAILS(tether_thread_join(me, -1), TETHER_EDEADLK, "tether_thread_join");
    ASSERT_FAILS(tether_thread_join(me, 0), TETHER_EDEADLK, "tether_thread_join");
    ASSERT_EQ(tether_thread_is_alive(me), 1);
    ASSERT_OK(tether_thread_release(me));
    return TETHER_OK;
}

TEST(join_self)
{
    setup();
    ASSERT_EQ(t_join(t_start(g_interp, joins_itself, NULL)), TETHER_OK);
    teardown();
}

/* Joining a thread tether did not start (the main thread, a foreign
   thread) is a state error, from any thread. */
static tether_thread g_not_started;

static int joins_not_started(void *arg)
{
    (void)arg;
    ASSERT_FAILS(tether_thread_join(g_not_started, -1), TETHER_ESTATE,
                 "tether_thread_join");
    return TETHER_OK;
}

static void *foreign_handle(void *arg)
{
    tether_gilstate st;
    ASSERT_OK(tether_ensure(g_interp, &st));
    ASSERT_OK(tether_thread_current(arg));
    ASSERT_OK(tether_release(st));
    return NULL;
}

TEST(join_not_started)
{
    setup();
    ASSERT_OK(tether_thread_current(&g_not_started)); /* the main thread */
    ASSERT_EQ(t_join(t_start(g_interp, joins_not_started, NULL)), TETHER_OK);
    ASSERT_OK(tether_thread_release(g_not_started));

    tether_thread foreign = 0;
    t_run_foreign(foreign_handle, &foreign);
    ASSERT_FAILS(tether_thread_join(foreign, -1), TETHER_ESTATE,
                 "tether_thread_join");
    ASSERT_OK(tether_thread_release(foreign));
    teardown();
}

/* Another reference from tether_thread_list outlives the start reference. */
TEST(join_after_other_handle_released)
{
    setup();
    tether_thread t = t_start(g_interp, parked, RESULT(TETHER_EXIT));
    uint64_t ident = ident_of(t);
    tether_thread list[16], other = 0;
    size_t count = 0;
    ASSERT_OK(tether_thread_list(g_interp, list, 16, &count));
    ASSERT(count <= 16);
    for (size_t i = 0; i < count; i++) {
        if (ident_of(list[i]) == ident && !other)
            other = list[i];
        else
            ASSERT_OK(tether_thread_release(list[i]));
    }
    ASSERT_NE(other, 0);
    ASSERT_OK(tether_thread_release(t));
    ASSERT_EQ(tether_thread_is_alive(other), 1);
    ASSERT_OK(tether_event_set(g_go));
    ASSERT_EQ(t_join(other), TETHER_EXIT);
    ASSERT_STATUS(tether_thread_is_alive(other), TETHER_EBADHANDLE);
    teardown();
}

/* A released, unjoined non-daemon thread runs on, and finalize waits for
   it. */
static atomic_int g_finished;

static int finishes_late(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_event_wait(g_go, -1));
    for (int i = 0; i < 100; i++)
        ASSERT_OK(tether_checkpoint());
    atomic_store(&g_finished, 1);
    return TETHER_OK;
}

TEST(release_running_thread)
{
    setup();
    ASSERT_OK(tether_thread_release(t_start(g_interp, finishes_late, NULL)));
    ASSERT_OK(tether_event_set(g_go));
    teardown();
    ASSERT_EQ(atomic_load(&g_finished), 1);
}

/* ------------------------------------------------------------------------
 * Names, idents, the list
 * ---------------------------------------------------------------------- */

static int default_number(tether_thread t)
{
    const char *name = NULL;
    int n = -1, end = 0;
    ASSERT_OK(tether_thread_name(t, &name));
    ASSERT(sscanf(name, "Thread-%d%n", &n, &end) == 1);
    ASSERT_EQ(name[end], '\0');
    return n;
}

TEST(names)
{
    setup();
    tether_thread a = t_start(g_interp, parked, NULL);
    tether_thread b = t_start(g_interp, parked, NULL);
    ASSERT_NE(default_number(a), default_number(b));

    char buf[32] = "worker-7";
    tether_thread_opts opts = {.size = sizeof opts, .name = buf};
    tether_thread c = t_start_opts(g_interp, parked, NULL, &opts);
    buf[0] = 'X'; /* the name was copied */
    const char *name = NULL;
    ASSERT_OK(tether_thread_name(c, &name));
    ASSERT_STREQ(name, "worker-7");

    ASSERT_OK(tether_event_set(g_go));
    ASSERT_OK(tether_thread_join(c, -1));
    ASSERT_OK(tether_thread_name(c, &name)); /* valid until the last release */
    ASSERT_STREQ(name, "worker-7");
    ASSERT_OK(tether_thread_release(c));
    t_join(a);
    t_join(b);
    teardown();
}

/* Names of 128 bytes or more are refused, not cut (a cut could split a
   UTF-8 character), and nothing is started; 127 bytes are kept whole
   (issue 12 F19). */
TEST(long_names)
{
    setup();
    char name[256];
    memset(name, 'a', sizeof name);
    /* "\xc3\xa9" (e-acute) across the old cut: bytes 126 and 127. */
    name[126] = '\xc3';
    name[127] = '\xa9';
    name[200] = '\0';
    tether_thread_opts opts = {.size = sizeof opts, .name = name};
    tether_thread t = 0;
    size_t before = t_thread_count(g_interp);
    ASSERT_FAILS(tether_thread_start(g_interp, parked, NULL, &opts, &t),
                 TETHER_EINVAL, "200 bytes");
    ASSERT_EQ(t, 0);
    name[128] = '\0';
    ASSERT_FAILS(tether_thread_start(g_interp, parked, NULL, &opts, &t),
                 TETHER_EINVAL, "limit is 127 bytes");
    ASSERT_EQ(t, 0);
    ASSERT_EQ(t_thread_count(g_interp), before);

    name[126] = 'z';
    name[127] = '\0'; /* 127 bytes: the longest name, kept whole */
    tether_thread c = t_start_opts(g_interp, parked, NULL, &opts);
    const char *got = NULL;
    ASSERT_OK(tether_thread_name(c, &got));
    ASSERT_STREQ(got, name);
    ASSERT_EQ(strlen(got), 127);
    ASSERT_OK(tether_event_set(g_go));
    t_join(c);
    teardown();
}

static int record_ident(void *arg)
{
    tether_thread me;
    ASSERT_OK(tether_thread_current(&me));
    ASSERT_OK(tether_thread_ident(me, arg));
    ASSERT_OK(tether_thread_release(me));
    return TETHER_OK;
}

TEST(idents)
{
    setup();
    uint64_t inside_a = 0, inside_b = 0, main_ident = 0;
    tether_thread a = t_start(g_interp, record_ident, &inside_a);
    tether_thread b = t_start(g_interp, record_ident, &inside_b);
    uint64_t outside_a = ident_of(a), outside_b = ident_of(b);
    t_join(a);
    t_join(b);
    ASSERT_EQ(inside_a, outside_a);
    ASSERT_EQ(inside_b, outside_b);
    ASSERT_NE(outside_a, outside_b);
    tether_thread me;
    ASSERT_OK(tether_thread_current(&me));
    main_ident = ident_of(me);
    ASSERT_NE(main_ident, outside_a);
    ASSERT_NE(main_ident, outside_b);
    ASSERT_OK(tether_thread_release(me));
    teardown();
}

static int ident_listed(const tether_thread *list, size_t n, uint64_t ident)
{
    int found = 0;
    for (size_t i = 0; i < n; i++)
        found += ident_of(list[i]) == ident;
    return found;
}

TEST(thread_list)
{
    setup();
    size_t before = t_thread_count(g_interp), count = 0;
    tether_thread t[3], list[16];
    for (int i = 0; i < 3; i++)
        t[i] = t_start(g_interp, parked, NULL);

    list[2] = 0x5e5e;
    ASSERT_OK(tether_thread_list(g_interp, list, 2, &count));
    ASSERT_EQ(count, before + 3); /* more than fit */
    ASSERT_EQ(list[2], 0x5e5e);
    for (int i = 0; i < 2; i++)
        ASSERT_OK(tether_thread_release(list[i]));

    ASSERT_OK(tether_thread_list(g_interp, list, 16, &count));
    ASSERT_EQ(count, before + 3);
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(ident_listed(list, count, ident_of(t[i])), 1);
    for (size_t i = 0; i < count; i++)
        ASSERT_OK(tether_thread_release(list[i]));

    ASSERT_OK(tether_event_set(g_go));
    for (int i = 0; i < 3; i++)
        t_join(t[i]);
    ASSERT_EQ(t_thread_count(g_interp), before);
    teardown();
}

/* ------------------------------------------------------------------------
 * Options and failures
 * ---------------------------------------------------------------------- */

TEST(options)
{
    setup();
    tether_thread t = 0x5e5e;
    tether_thread_opts bad = {.size = 1};
    ASSERT_FAILS(tether_thread_start(g_interp, t_return_arg, NULL, &bad, &t),
                 TETHER_EINVAL, "tether_thread_start");
    ASSERT_EQ(t, 0x5e5e);
    tether_thread_opts opts = {.size = sizeof opts, .daemon = 1,
                               .stack_size = 256 * 1024};
    ASSERT_EQ(t_join(t_start_opts(g_interp, t_return_arg, NULL, &opts)), TETHER_OK);
    teardown();
}

/* The OS refuses a thread: EAGAIN, nothing registered, and the next start
   works. */
TEST(start_eagain)
{
    setup();
    size_t before = t_thread_count(g_interp);
    tether_thread t = 0x5e5e;
    ASSERT_OK(tether_fault_inject(TETHER_FAULT_THREAD_CREATE, 1, 1));
    ASSERT_FAILS(tether_thread_start(g_interp, t_return_arg, NULL, NULL, &t),
                 TETHER_EAGAIN, "tether_thread_start");
    ASSERT_EQ(t, 0x5e5e);
    ASSERT_EQ(t_thread_count(g_interp), before);
    ASSERT_EQ(t_join(t_start(g_interp, t_return_arg, RESULT(TETHER_EXIT))),
              TETHER_EXIT);
    ASSERT_EQ(t_thread_count(g_interp), before);
    teardown();
}

/* A thread function may leave through pthread_exit (C code that ends its
   thread the POSIX way), holding the GIL or inside
   TETHER_BEGIN_ALLOW_THREADS.  The thread was never marked finished: join
   and finalize waited for it for ever, and the GIL it held was dropped only
   by its exit.  It now finishes with the silent-exit result. */
static int exit_holding_gil(void *arg)
{
    (void)arg;
    pthread_exit(NULL);
}

static int exit_detached(void *arg)
{
    (void)arg;
    TETHER_BEGIN_ALLOW_THREADS
    pthread_exit(NULL);
    TETHER_END_ALLOW_THREADS
    return TETHER_OK;
}

TEST(fn_calls_pthread_exit)
{
    setup();
    tether_thread_fn fns[] = {exit_holding_gil, exit_detached};
    for (int i = 0; i < 2; i++) {
        tether_thread t = t_start(g_interp, fns[i], NULL);
        ASSERT_OK(tether_thread_join(t, -1));
        ASSERT_EQ(tether_thread_is_alive(t), 0);
        int result = 0;
        ASSERT_OK(tether_thread_result(t, &result));
        ASSERT_EQ(result, TETHER_EXIT);
        ASSERT_OK(tether_thread_release(t));
        ASSERT_EQ(t_thread_count(g_interp), 0);
    }
    teardown(); /* finalize joins no thread that is gone */
}

RUNNER_MAIN(TEST_ENTRY(start_join_result), TEST_ENTRY(runs_holding_gil),
            TEST_ENTRY(started_handshake), TEST_ENTRY(start_from_unattached_thread),
            TEST_ENTRY(many_in_sequence), TEST_ENTRY(join_timeout),
            TEST_ENTRY(join_many), TEST_ENTRY(join_self),
            TEST_ENTRY(join_not_started),
            TEST_ENTRY(join_after_other_handle_released),
            TEST_ENTRY(release_running_thread), TEST_ENTRY(names),
            TEST_ENTRY(long_names),
            TEST_ENTRY(idents), TEST_ENTRY(thread_list), TEST_ENTRY(options),
            TEST_ENTRY(start_eagain), TEST_ENTRY(fn_calls_pthread_exit))
