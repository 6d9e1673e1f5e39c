/*
 * test_async.c - asynchronous exceptions: delivery at checkpoints and into
 * every kind of blocked wait, defer/allow, raise by ident, replacement of
 * an undelivered raise, tether_call_blocking's unblock function, and the
 * join of a thread that was raised at.
 */
#include <tether/tether.h>

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runner.h"
#include "support.h"

static tether_runtime g_rt;
static tether_interp g_interp;
static tether_event g_ready; /* the target is about to block or spin */

/* What the target thread saw. */
static struct {
    atomic_int rc;
    atomic_llong code;
    _Atomic(void *) payload;
    _Atomic(tether_dtor) dtor;
} g_seen;

static int g_payload_a, g_payload_b;

static void setup(void)
{
    g_rt = t_runtime_main(NULL, &g_interp);
    ASSERT_OK(tether_event_new(&g_ready));
    atomic_store(&g_seen.rc, 1000);
}

static void teardown(void)
{
    ASSERT_OK(tether_event_free(g_ready));
    t_finalize(g_rt);
}

/* Records `rc` and, if it is EASYNC, fetches the exception. */
static int record(int rc)
{
    atomic_store(&g_seen.rc, rc);
    if (rc == TETHER_EASYNC) {
        int64_t code = 0;
        void *payload = NULL;
        tether_dtor dtor = NULL;
        ASSERT_OK(tether_async_fetch(&code, &payload, &dtor));
        atomic_store(&g_seen.code, code);
        atomic_store(&g_seen.payload, payload);
        atomic_store(&g_seen.dtor, dtor);
        ASSERT_FAILS(tether_async_fetch(NULL, NULL, NULL), TETHER_ESTATE,
                     "tether_async_fetch");
    }
    return TETHER_OK;
}

static void expect_seen(int64_t code, void *payload)
{
    ASSERT_STATUS(atomic_load(&g_seen.rc), TETHER_EASYNC);
    ASSERT_EQ(atomic_load(&g_seen.code), code);
    ASSERT(atomic_load(&g_seen.payload) == payload);
    ASSERT(atomic_load(&g_seen.dtor) == t_count_dtor);
    ASSERT_EQ(atomic_load(&t_dtor_calls), 0); /* the fetcher owns it */
}

/* Raises at `t` once it announced itself, then joins it. */
static void raise_and_join(tether_thread t, int64_t code, void *payload)
{
    ASSERT_OK(tether_event_wait(g_ready, -1));
    ASSERT_OK(tether_sleep(MS(20))); /* let it get into its wait */
    ASSERT_OK(tether_thread_raise(t, code, payload, t_count_dtor));
    ASSERT_EQ(t_join(t), TETHER_OK);
}

/* ------------------------------------------------------------------------
 * Delivery
 * ---------------------------------------------------------------------- */

static int spinner(void *arg)
{
    (void)arg;
    int rc;
    ASSERT_OK(tether_event_set(g_ready));
    while ((rc = tether_checkpoint()) == TETHER_OK)
        ;
    return record(rc);
}

TEST(into_checkpoint_loop)
{
    setup();
    raise_and_join(t_start(g_interp, spinner, NULL), 42, &g_payload_a);
    expect_seen(42, &g_payload_a);
    teardown();
}

/* The kinds of wait a target blocks in, forever but for the exception. */
enum blocker { IN_JOIN, IN_LOCK, IN_EVENT, IN_SLEEP };
static tether_thread g_parked;
static tether_lock g_lock;
static tether_event g_never;

static int parked(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_event_wait(g_never, -1));
    return TETHER_OK;
}

static int blocked(void *arg)
{
    ASSERT_OK(tether_event_set(g_ready));
    switch ((enum blocker)(intptr_t)arg) {
    case IN_JOIN:
        return record(tether_thread_join(g_parked, -1));
    case IN_LOCK:
        return record(tether_lock_acquire(g_lock, -1));
    case IN_EVENT:
        return record(tether_event_wait(g_never, -1));
    case IN_SLEEP:
        return record(tether_sleep(SECONDS(3600)));
    }
    return TETHER_EINVAL;
}

static void into_wait(enum blocker kind)
{
    setup();
    ASSERT_OK(tether_event_new(&g_never));
    ASSERT_OK(tether_lock_new(&g_lock));
    ASSERT_OK(tether_lock_acquire(g_lock, 0));
    g_parked = t_start(g_interp, parked, NULL);

    raise_and_join(t_start(g_interp, blocked, (void *)(intptr_t)kind), 7,
                   &g_payload_b);
    expect_seen(7, &g_payload_b);

    ASSERT_OK(tether_event_set(g_never));
    ASSERT_EQ(t_join(g_parked), TETHER_OK);
    ASSERT_OK(tether_lock_release(g_lock));
    ASSERT_OK(tether_lock_free(g_lock));
    ASSERT_OK(tether_event_free(g_never));
    teardown();
}

TEST(into_join) { into_wait(IN_JOIN); }
TEST(into_lock_acquire) { into_wait(IN_LOCK); }
TEST(into_event_wait) { into_wait(IN_EVENT); }
TEST(into_sleep) { into_wait(IN_SLEEP); }

/* A raise made while the target holds the GIL is seen by its next wait. */
static int wait_after_raise(void *arg)
{
    (void)arg;
    tether_thread me;
    ASSERT_OK(tether_thread_current(&me));
    ASSERT_OK(tether_thread_raise(me, 5, &g_payload_a, t_count_dtor));
    ASSERT_OK(tether_thread_release(me));
    return record(tether_sleep(SECONDS(3600)));
}

TEST(pending_before_wait)
{
    setup();
    ASSERT_EQ(t_join(t_start(g_interp, wait_after_raise, NULL)), TETHER_OK);
    expect_seen(5, &g_payload_a);
    teardown();
}

/* ------------------------------------------------------------------------
 * Defer and allow
 * ---------------------------------------------------------------------- */

static atomic_int g_raised; /* main has raised (twice, for `replace`) */

static void spin_until_raised(void)
{
    while (!atomic_load(&g_raised))
        ASSERT_OK(tether_checkpoint());
    for (int i = 0; i < 1000; i++)
        ASSERT_OK(tether_checkpoint());
}

static int deferring(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_async_defer());
    ASSERT_OK(tether_async_defer());
    ASSERT_OK(tether_event_set(g_ready));
    spin_until_raised();
    ASSERT_OK(tether_sleep(MS(1))); /* waits hold it too */
    ASSERT_OK(tether_async_allow());
    ASSERT_OK(tether_checkpoint()); /* one defer left */
    ASSERT_OK(tether_async_allow());
    int rc = record(tether_checkpoint());
    ASSERT_FAILS(tether_async_allow(), TETHER_ESTATE, "tether_async_allow");
    return rc;
}

TEST(defer_holds_until_allow)
{
    setup();
    tether_thread t = t_start(g_interp, deferring, NULL);
    ASSERT_OK(tether_event_wait(g_ready, -1));
    ASSERT_OK(tether_thread_raise(t, 9, &g_payload_a, t_count_dtor));
    atomic_store(&g_raised, 1);
    ASSERT_EQ(t_join(t), TETHER_OK);
    expect_seen(9, &g_payload_a);
    teardown();
}

/* A newer raise replaces an undelivered one, whose destructor runs. */
TEST(replace_undelivered)
{
    setup();
    tether_thread t = t_start(g_interp, deferring, NULL);
    ASSERT_OK(tether_event_wait(g_ready, -1));
    ASSERT_OK(tether_thread_raise(t, 1, &g_payload_a, t_count_dtor));
    ASSERT_EQ(atomic_load(&t_dtor_calls), 0);
    ASSERT_OK(tether_thread_raise(t, 2, &g_payload_b, t_count_dtor));
    ASSERT_EQ(atomic_load(&t_dtor_calls), 1);
    ASSERT(atomic_load(&t_dtor_last) == &g_payload_a);
    atomic_store(&g_raised, 1);
    ASSERT_EQ(t_join(t), TETHER_OK);
    atomic_store(&t_dtor_calls, 0);
    expect_seen(2, &g_payload_b);
    teardown();
}

/* ------------------------------------------------------------------------
 * Raise by ident, finished targets, fetch
 * ---------------------------------------------------------------------- */

TEST(raise_by_ident)
{
    setup();
    tether_thread t = t_start(g_interp, spinner, NULL);
    uint64_t ident = 0;
    int count = -1;
    ASSERT_OK(tether_thread_ident(t, &ident));
    ASSERT_OK(tether_event_wait(g_ready, -1));

    ASSERT_OK(tether_raise_by_ident(g_interp, ~ident, 3, &g_payload_b,
                                    t_count_dtor, &count));
    ASSERT_EQ(count, 0);
    ASSERT_OK(tether_raise_by_ident(g_interp, 0, 3, &g_payload_b, t_count_dtor, NULL));
    ASSERT_EQ(atomic_load(&t_dtor_calls), 0); /* not taken */

    ASSERT_OK(tether_raise_by_ident(g_interp, ident, 3, &g_payload_a,
                                    t_count_dtor, &count));
    ASSERT_EQ(count, 1);
    ASSERT_EQ(t_join(t), TETHER_OK);
    expect_seen(3, &g_payload_a);

    /* The thread is gone now: nobody has that ident. */
    ASSERT_OK(tether_raise_by_ident(g_interp, ident, 3, &g_payload_b,
                                    t_count_dtor, &count));
    ASSERT_EQ(count, 0);
    ASSERT_EQ(atomic_load(&t_dtor_calls), 0);
    teardown();
}

/* The main thread raises at itself by ident and sees it at once. */
TEST(raise_by_ident_self)
{
    setup();
    tether_thread me;
    uint64_t ident;
    int count = 0;
    ASSERT_OK(tether_thread_current(&me));
    ASSERT_OK(tether_thread_ident(me, &ident));
    ASSERT_OK(tether_thread_release(me));
    ASSERT_OK(tether_raise_by_ident(g_interp, ident, 11, &g_payload_a,
                                    t_count_dtor, &count));
    ASSERT_EQ(count, 1);
    record(tether_checkpoint());
    expect_seen(11, &g_payload_a);
    ASSERT_OK(tether_checkpoint());
    teardown();
}

/* A raise by ident walks the interpreter's states while threads attach:
   a state is linked before its thread is bound to it (a new thread's
   first ensure, a started thread's bootstrap), so the binding must be
   written under the interpreter's mutex the walk holds.  Under
   ThreadSanitizer this case failed with a race between ts_bind and
   tether_raise_by_ident (seen in the API fuzzer's replay of x06). */
static atomic_int g_raiser_stop;

static void *nobody_raiser(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_raiser_stop)) {
        int count = -1;
        ASSERT_OK(tether_raise_by_ident(g_interp, 1, 9, NULL, NULL, &count));
        ASSERT_EQ(count, 0); /* no thread has ident 1 */
    }
    return NULL;
}

/* A foreign thread's first ensure, then a raise at itself by its ident:
   the walk finds its new state. */
static void *attach_and_raise_self(void *arg)
{
    (void)arg;
    tether_gilstate g;
    tether_thread me;
    uint64_t ident;
    int count = 0;
    ASSERT_OK(tether_ensure(g_interp, &g));
    ASSERT_OK(tether_thread_current(&me));
    ASSERT_OK(tether_thread_ident(me, &ident));
    ASSERT_OK(tether_thread_release(me));
    ASSERT_OK(tether_raise_by_ident(g_interp, ident, 12, NULL, NULL, &count));
    ASSERT_EQ(count, 1);
    ASSERT_STATUS(tether_checkpoint(), TETHER_EASYNC);
    int64_t code = 0;
    ASSERT_OK(tether_async_fetch(&code, NULL, NULL));
    ASSERT_EQ(code, 12);
    ASSERT_OK(tether_release(g));
    return NULL;
}

static int started_returns(void *arg)
{
    (void)arg;
    return TETHER_OK;
}

TEST(raise_by_ident_while_threads_attach)
{
    setup();
    atomic_store(&g_raiser_stop, 0);
    pthread_t raiser = t_pthread(nobody_raiser, NULL);
    tether_tstate main_ts;
    ASSERT_OK(tether_save_thread(&main_ts));
    for (int round = 0; round < 20; round++) {
        pthread_t foreign[4];
        tether_thread started[4];
        for (int i = 0; i < 4; i++) {
            foreign[i] = t_pthread(attach_and_raise_self, NULL);
            started[i] = t_start(g_interp, started_returns, NULL);
        }
        for (int i = 0; i < 4; i++) {
            t_pthread_join(foreign[i]);
            ASSERT_EQ(t_join(started[i]), TETHER_OK);
        }
    }
    atomic_store(&g_raiser_stop, 1);
    t_pthread_join(raiser);
    ASSERT_OK(tether_restore_thread(main_ts));
    teardown();
}

/* ------------------------------------------------------------------------
 * Joining a thread that was raised at (the joiner spins before it parks,
 * then reaps the OS thread)
 * ---------------------------------------------------------------------- */

/* Set by the key destructor of a target: the last code of its OS thread,
   run by the C library after the thread's function and tether's end. */
static atomic_int g_key_ran;
static pthread_key_t g_key;

static void key_dtor(void *arg)
{
    if (arg == RESULT(1)) {
        struct timespec ts = {0, 20 * 1000000}; /* outlasts the join's spin */
        while (nanosleep(&ts, &ts) != 0)
            ;
    }
    atomic_store(&g_key_ran, 1);
}

/* A spinner whose OS thread ends with a key destructor (slow if arg). */
static int spinner_with_key(void *arg)
{
    ASSERT_EQ(pthread_setspecific(g_key, arg ? RESULT(1) : RESULT(2)), 0);
    return spinner(NULL);
}

/* Join returns only once no instruction of the thread runs: the C
   library's end of the OS thread (here a key destructor) included, both
   when it ends within the joiner's spin and when it outlasts it. */
static void join_waits_for_os_thread(int slow)
{
    setup();
    ASSERT_EQ(pthread_key_create(&g_key, key_dtor), 0);
    atomic_store(&g_key_ran, 0);
    tether_thread t = t_start(g_interp, spinner_with_key, slow ? RESULT(1) : NULL);
    ASSERT_OK(tether_event_wait(g_ready, -1));
    ASSERT_OK(tether_thread_raise(t, 5, &g_payload_a, t_count_dtor));
    ASSERT_OK(tether_thread_join(t, -1));
    ASSERT_EQ(atomic_load(&g_key_ran), 1);
    ASSERT_EQ(tether_thread_is_alive(t), 0);
    ASSERT_OK(tether_thread_release(t));
    expect_seen(5, &g_payload_a);
    ASSERT_EQ(pthread_key_delete(g_key), 0);
    teardown();
}

TEST(join_raised_waits_for_os_thread) { join_waits_for_os_thread(0); }
TEST(join_raised_waits_for_slow_os_thread) { join_waits_for_os_thread(1); }

/* A target that takes the exception and goes on (it keeps it delivered
   and unfetched, so a joiner spins before it parks). */
static tether_event g_took, g_go_on;

static int takes_and_goes_on(void *arg)
{
    (void)arg;
    int rc;
    ASSERT_OK(tether_event_set(g_ready));
    while ((rc = tether_checkpoint()) == TETHER_OK)
        ;
    ASSERT_STATUS(rc, TETHER_EASYNC);
    ASSERT_OK(tether_event_set(g_took));
    ASSERT_OK(tether_event_wait(g_go_on, -1));
    return record(rc);
}

/* The join's spin and its reap are for a thread that ends: a join of one
   that goes on times out as any join does, leaves it running and
   unreaped, and joins it once it ends. */
TEST(join_raised_thread_that_goes_on)
{
    setup();
    ASSERT_OK(tether_event_new(&g_took));
    ASSERT_OK(tether_event_new(&g_go_on));
    tether_thread t = t_start(g_interp, takes_and_goes_on, NULL);
    ASSERT_OK(tether_event_wait(g_ready, -1));
    ASSERT_OK(tether_thread_raise(t, 9, &g_payload_b, t_count_dtor));
    ASSERT_OK(tether_event_wait(g_took, -1));
    ASSERT_FAILS(tether_thread_join(t, MS(1)), TETHER_ETIMEDOUT,
                 "tether_thread_join");
    ASSERT_FAILS(tether_thread_join(t, 1000), TETHER_ETIMEDOUT,
                 "tether_thread_join");
    ASSERT_EQ(tether_thread_is_alive(t), 1);
    ASSERT_OK(tether_event_set(g_go_on));
    ASSERT_EQ(t_join(t), TETHER_OK);
    expect_seen(9, &g_payload_b);
    ASSERT_OK(tether_event_free(g_took));
    ASSERT_OK(tether_event_free(g_go_on));
    teardown();
}

TEST(raise_finished_thread)
{
    setup();
    tether_thread t = t_start(g_interp, t_return_arg, NULL);
    ASSERT_OK(tether_thread_join(t, -1));
    ASSERT_FAILS(tether_thread_raise(t, 1, &g_payload_a, t_count_dtor),
                 TETHER_ESTATE, "tether_thread_raise");
    ASSERT_EQ(atomic_load(&t_dtor_calls), 0);
    ASSERT_OK(tether_thread_release(t));
    teardown();
}

TEST(fetch_nothing)
{
    setup();
    int64_t code = 5;
    ASSERT_FAILS(tether_async_fetch(&code, NULL, NULL), TETHER_ESTATE,
                 "tether_async_fetch");
    ASSERT_EQ(code, 5);
    teardown();
}

/* ------------------------------------------------------------------------
 * tether_call_blocking
 * ---------------------------------------------------------------------- */

static int g_pipe[2];
static atomic_int g_ubf_calls;

/* Blocks in read(2) on the pipe until the unblock function writes to it. */
static int read_pipe(void *arg)
{
    char byte;
    ssize_t n;
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_OK(tether_event_set(g_ready));
    while ((n = read(g_pipe[0], &byte, 1)) < 0 && errno == EINTR)
        ;
    ASSERT_EQ(n, 1);
    return (int)(intptr_t)arg;
}

static void write_pipe(void *arg)
{
    ASSERT(arg == &g_pipe);
    atomic_fetch_add(&g_ubf_calls, 1);
    ASSERT_EQ(write(g_pipe[1], "x", 1), 1);
}

static int blocking_reader(void *arg)
{
    (void)arg;
    int rc = tether_call_blocking(read_pipe, RESULT(TETHER_OK),
                                  write_pipe, &g_pipe);
    ASSERT_EQ(tether_gil_held(), 1);
    return record(rc);
}

TEST(call_blocking_unblocked)
{
    setup();
    ASSERT_EQ(pipe(g_pipe), 0);
    raise_and_join(t_start(g_interp, blocking_reader, NULL), 13, &g_payload_a);
    expect_seen(13, &g_payload_a);
    ASSERT_EQ(atomic_load(&g_ubf_calls), 1);
    close(g_pipe[0]);
    close(g_pipe[1]);
    teardown();
}

/* The unblock function runs with no lock of the library held, so it may
   call tether: here it queues a pending call before waking fn.  (It was
   called holding the interpreter's mutex, and tether_call_soon took that
   mutex again: a deadlock, reported as a lock-order violation by debug
   builds.) */
static atomic_int g_soon_rc = 1000, g_soon_ran;

static int soon_noop(void *arg)
{
    (void)arg;
    atomic_fetch_add(&g_soon_ran, 1);
    return TETHER_OK;
}

static void queue_then_write(void *arg)
{
    atomic_store(&g_soon_rc, tether_call_soon(g_interp, soon_noop, NULL));
    write_pipe(arg);
}

static int blocking_reader_calling_soon(void *arg)
{
    (void)arg;
    int rc = tether_call_blocking(read_pipe, RESULT(TETHER_OK),
                                  queue_then_write, &g_pipe);
    return record(rc);
}

TEST(call_blocking_ubf_may_call_tether)
{
    setup();
    ASSERT_EQ(pipe(g_pipe), 0);
    raise_and_join(t_start(g_interp, blocking_reader_calling_soon, NULL), 14,
                   &g_payload_a);
    expect_seen(14, &g_payload_a);
    ASSERT_EQ(atomic_load(&g_ubf_calls), 1);
    ASSERT_OK(atomic_load(&g_soon_rc));
    ASSERT_OK(tether_checkpoint()); /* this is the main thread: it runs it */
    ASSERT_EQ(atomic_load(&g_soon_ran), 1);
    close(g_pipe[0]);
    close(g_pipe[1]);
    teardown();
}

/* The same from finalize: the daemon thread's unblock function lists the
   interpreter's threads (which takes the interpreter's mutex) while
   finalize stops it. */
static atomic_size_t g_listed = 1000;

static void list_then_write(void *arg)
{
    size_t n = 0;
    atomic_store(&g_soon_rc, tether_thread_list(g_interp, NULL, 0, &n));
    atomic_store(&g_listed, n);
    write_pipe(arg);
}

static int blocking_daemon(void *arg)
{
    (void)arg;
    int rc = tether_call_blocking(read_pipe, RESULT(TETHER_OK),
                                  list_then_write, &g_pipe);
    atomic_store(&g_seen.rc, rc);
    return TETHER_OK;
}

TEST(call_blocking_ubf_calls_tether_at_finalize)
{
    setup();
    ASSERT_EQ(pipe(g_pipe), 0);
    tether_thread t = t_start_daemon(g_interp, blocking_daemon, NULL);
    ASSERT_OK(tether_event_wait(g_ready, -1));
    ASSERT_OK(tether_event_free(g_ready));
    ASSERT_OK(tether_runtime_finalize(g_rt, SECONDS(30)));
    /* The unblock function has returned before finalize did. */
    ASSERT_EQ(atomic_load(&g_ubf_calls), 1);
    ASSERT_OK(atomic_load(&g_soon_rc));
    ASSERT_EQ(atomic_load(&g_listed), 1); /* the daemon */
    ASSERT_OK(tether_thread_release(t));
    close(g_pipe[1]); /* the daemon may still be on its way out */
}

static void *call_blocking_unattached(void *arg)
{
    (void)arg;
    ASSERT_FAILS(tether_call_blocking(read_pipe, NULL, NULL, NULL), TETHER_ESTATE,
                 "tether_call_blocking");
    return NULL;
}

/* Without an exception, fn's result comes back and the GIL is re-taken. */
TEST(call_blocking_result)
{
    setup();
    ASSERT_EQ(pipe(g_pipe), 0);
    ASSERT_EQ(write(g_pipe[1], "x", 1), 1);
    ASSERT_STATUS(tether_call_blocking(read_pipe, RESULT(TETHER_ETIMEDOUT),
                                       write_pipe, &g_pipe),
                  TETHER_ETIMEDOUT);
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_EQ(atomic_load(&g_ubf_calls), 0);
    ASSERT_FAILS(tether_call_blocking(NULL, NULL, NULL, NULL), TETHER_EINVAL,
                 "tether_call_blocking");
    t_run_foreign(call_blocking_unattached, NULL);
    close(g_pipe[0]);
    close(g_pipe[1]);
    teardown();
}

/* An unblock function may raise at the very thread it unblocks (here, to
   be sure the blocked call ends with an exception).  That raise came back
   into breaker_unblock on the raiser's stack, which called the unblock
   function again, which raised again: unbounded recursion until the stack
   overflowed.  A call of the unblock function already in progress is not
   followed by another. */
static tether_thread g_self_target;

static void raise_self_then_write(void *arg)
{
    ASSERT_OK(tether_thread_raise(g_self_target, 16, NULL, NULL));
    write_pipe(arg);
}

static int blocking_reader_raising_self(void *arg)
{
    (void)arg;
    int rc = tether_call_blocking(read_pipe, RESULT(TETHER_OK),
                                  raise_self_then_write, &g_pipe);
    atomic_store(&g_seen.rc, rc);
    if (rc == TETHER_EASYNC) {
        int64_t code = 0;
        ASSERT_OK(tether_async_fetch(&code, NULL, NULL));
        atomic_store(&g_seen.code, code);
    }
    return TETHER_OK;
}

TEST(call_blocking_ubf_raises_its_own_thread)
{
    setup();
    ASSERT_EQ(pipe(g_pipe), 0);
    g_self_target = t_start(g_interp, blocking_reader_raising_self, NULL);
    ASSERT_OK(tether_event_wait(g_ready, -1));
    ASSERT_OK(tether_thread_raise(g_self_target, 15, NULL, NULL));
    ASSERT_EQ(t_join(g_self_target), TETHER_OK);
    ASSERT_EQ(atomic_load(&g_ubf_calls), 1);
    ASSERT_STATUS(atomic_load(&g_seen.rc), TETHER_EASYNC);
    ASSERT_EQ(atomic_load(&g_seen.code), 16); /* the newer raise replaced 15 */
    close(g_pipe[0]);
    close(g_pipe[1]);
    teardown();
}

/* fn may finalize the runtime (the runtime's creator shutting down from a
   blocking call).  Finalize on this thread forgot the thread's cached
   states, including the one tether_call_blocking had detached and then
   used again: a use after free.  The allocator below fills freed blocks,
   so that the use is seen without a sanitizer. */
static void *poison_malloc(size_t n, void *ud)
{
    (void)ud;
    size_t *p = malloc(n + sizeof(max_align_t));
    if (!p)
        return NULL;
    *p = n;
    return (char *)p + sizeof(max_align_t);
}

static void poison_free(void *q, void *ud)
{
    (void)ud;
    size_t *p = (size_t *)(void *)((char *)q - sizeof(max_align_t));
    memset(q, 0xa5, *p);
    free(p);
}

static int finalize_inside(void *arg)
{
    (void)arg;
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_OK(tether_runtime_finalize(g_rt, SECONDS(30)));
    return TETHER_OK;
}

TEST(call_blocking_fn_finalizes)
{
    tether_allocator a = {sizeof a, poison_malloc, poison_free, NULL};
    ASSERT_OK(tether_set_allocator(&a));
    g_rt = t_runtime(NULL);
    ASSERT_FAILS(tether_call_blocking(finalize_inside, NULL, NULL, NULL),
                 TETHER_EFINALIZING, "tether_call_blocking");
    ASSERT_EQ(tether_gil_held(), 0);
    ASSERT_OK(tether_set_allocator(NULL)); /* nothing of it is left */
}

RUNNER_MAIN(TEST_ENTRY(into_checkpoint_loop), TEST_ENTRY(into_join),
            TEST_ENTRY(into_lock_acquire), TEST_ENTRY(into_event_wait),
            TEST_ENTRY(into_sleep), TEST_ENTRY(pending_before_wait),
            TEST_ENTRY(defer_holds_until_allow), TEST_ENTRY(replace_undelivered),
            TEST_ENTRY(raise_by_ident), TEST_ENTRY(raise_by_ident_self),
            TEST_ENTRY(raise_by_ident_while_threads_attach),
            TEST_ENTRY(raise_finished_thread), TEST_ENTRY(fetch_nothing),
            TEST_ENTRY(join_raised_waits_for_os_thread),
            TEST_ENTRY(join_raised_waits_for_slow_os_thread),
            TEST_ENTRY(join_raised_thread_that_goes_on),
            TEST_ENTRY(call_blocking_unblocked), TEST_ENTRY(call_blocking_result),
            TEST_ENTRY(call_blocking_ubf_may_call_tether),
            TEST_ENTRY(call_blocking_ubf_calls_tether_at_finalize),
            TEST_ENTRY(call_blocking_ubf_raises_its_own_thread),
            TEST_ENTRY(call_blocking_fn_finalizes))
