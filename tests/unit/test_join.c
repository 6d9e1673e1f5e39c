/*
 * test_join.c - tether_thread_join around the end of the OS thread: the
 * window between the sentinel (the thread state is deleted) and the C
 * library's end of the thread, where key destructors run.  A key
 * destructor may run tether code (tstate.c's thread-exit destructor allows
 * for it), and join must neither deadlock with it nor return while it
 * runs; a thread that joins itself from there gets TETHER_EDEADLK.
 */
#include <tether/tether.h>

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "runner.h"
#include "support.h"

static tether_runtime g_rt;
static tether_interp g_interp;

/* Whether the library reaps with a plain pthread_join (its valgrind build:
   tests/unit/CMakeLists.txt): then a join cannot time out while a key
   destructor runs, and the cases that need it to skip themselves. */
static int reap_has_no_deadline(void)
{
#ifdef TEST_REAP_WITHOUT_DEADLINE
    return 1;
#else
    return 0;
#endif
}

/* The thread's key: its destructor runs after the thread's sentinel. */
static pthread_key_t g_key;
static t_sem g_in_dtor; /* posted by the destructor once it runs */
static t_sem g_go;      /* the destructor waits for it */
static tether_thread g_target;
static atomic_int g_dtor_rc;   /* what the destructor's tether call returned */
static atomic_int g_dtor_done; /* set as the destructor's last step */

enum dtor_kind { DTOR_ENSURES = 1, DTOR_JOINS_ITSELF, DTOR_SLOW };

static void key_dtor(void *arg)
{
    t_sem_post(&g_in_dtor);
    t_sem_wait(&g_go);
    int rc = TETHER_OK;
    switch ((enum dtor_kind)(intptr_t)arg) {
    case DTOR_ENSURES: { /* takes the GIL: the joiner must not hold it */
        tether_gilstate st;
        rc = tether_ensure(g_interp, &st);
        if (rc == TETHER_OK) {
            rc = tether_checkpoint();
            (void)tether_release(st);
        }
        break;
    }
    case DTOR_JOINS_ITSELF:
        rc = tether_thread_join(g_target, -1);
        break;
    case DTOR_SLOW:
        break;
    }
    atomic_store(&g_dtor_rc, rc);
    atomic_store(&g_dtor_done, 1);
}

static int sets_key(void *arg)
{
    ASSERT_EQ(pthread_setspecific(g_key, arg), 0);
    return TETHER_OK;
}

static void setup(void)
{
    g_rt = t_runtime_main(NULL, &g_interp);
    ASSERT_EQ(pthread_key_create(&g_key, key_dtor), 0);
    t_sem_init(&g_in_dtor);
    t_sem_init(&g_go);
    atomic_store(&g_dtor_rc, 1000);
    atomic_store(&g_dtor_done, 0);
}

/* Waits, the GIL released (the thread needs it to run), until the
   thread's key destructor runs: its sentinel is released by then.  The
   caller holds its GIL again on return. */
static void wait_in_dtor(void)
{
    TETHER_BEGIN_ALLOW_THREADS
    t_sem_wait(&g_in_dtor);
    TETHER_END_ALLOW_THREADS
}

static void teardown(void)
{
    t_finalize(g_rt);
    ASSERT_EQ(pthread_key_delete(g_key), 0);
    t_sem_destroy(&g_in_dtor);
    t_sem_destroy(&g_go);
}

/* The joiner holds its GIL and finds the sentinel already released (the
   key destructor runs only after it): the reap must not keep the GIL, or
   the destructor's ensure and the join wait for each other forever. */
TEST(join_of_ended_thread_whose_key_dtor_ensures)
{
    setup();
    g_target = t_start(g_interp, sets_key, RESULT(DTOR_ENSURES));
    wait_in_dtor(); /* from here the GIL is held throughout */
    ASSERT_EQ(tether_thread_is_alive(g_target), 0);
    t_sem_post(&g_go);
    ASSERT_OK(tether_thread_join(g_target, -1));
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_EQ(atomic_load(&g_dtor_done), 1); /* no instruction of it runs */
    ASSERT_STATUS(atomic_load(&g_dtor_rc), TETHER_OK);
    ASSERT_OK(tether_thread_release(g_target));
    teardown();
}

/* A raw pthread claims the reap of the ended thread and waits in it for
   the destructor; the main thread joins meanwhile holding its GIL and
   waits for that reap: it must let the GIL go while it does. */
static void *joins_raw(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_thread_join(g_target, -1));
    ASSERT_EQ(atomic_load(&g_dtor_done), 1);
    return NULL;
}

TEST(second_joiner_waits_for_reap_without_gil)
{
    setup();
    g_target = t_start(g_interp, sets_key, RESULT(DTOR_ENSURES));
    wait_in_dtor();
    pthread_t raw = t_pthread(joins_raw, NULL); /* reaps, or joins after us */
    t_sem_post(&g_go);
    ASSERT_OK(tether_thread_join(g_target, -1));
    ASSERT_EQ(atomic_load(&g_dtor_done), 1);
    ASSERT_STATUS(atomic_load(&g_dtor_rc), TETHER_OK);
    t_join_foreign(&raw, 1);
    ASSERT_OK(tether_thread_release(g_target));
    teardown();
}

/* A thread that joins itself after its sentinel (from a key destructor)
   gets TETHER_EDEADLK, and is not marked reaped: a later join still waits
   for its OS thread. */
TEST(join_self_from_key_dtor)
{
    setup();
    g_target = t_start(g_interp, sets_key, RESULT(DTOR_JOINS_ITSELF));
    wait_in_dtor();
    t_sem_post(&g_go);
    ASSERT_OK(tether_thread_join(g_target, -1));
    ASSERT_EQ(atomic_load(&g_dtor_done), 1);
    ASSERT_STATUS(atomic_load(&g_dtor_rc), TETHER_EDEADLK);
    ASSERT_OK(tether_thread_release(g_target));
    teardown();
}

/* Joins of a thread in its key destructor, from several threads with and
   without timeouts, tether threads and raw pthreads: none returns OK
   before the destructor's end. */
enum { JOINERS = 6 };
static atomic_int g_joined_ok;

static int joins_looping(void *arg)
{
    int64_t timeout = (int64_t)(intptr_t)arg;
    int rc;
    while ((rc = tether_thread_join(g_target, timeout)) == TETHER_ETIMEDOUT)
        ;
    ASSERT_STATUS(rc, TETHER_OK);
    ASSERT_EQ(atomic_load(&g_dtor_done), 1);
    atomic_fetch_add(&g_joined_ok, 1);
    return TETHER_OK;
}

static void *joins_looping_raw(void *arg)
{
    (void)joins_looping(arg);
    return NULL;
}

TEST(joins_with_timeouts_during_key_dtor)
{
    setup();
    atomic_store(&g_joined_ok, 0);
    g_target = t_start(g_interp, sets_key, RESULT(DTOR_SLOW));
    wait_in_dtor();
    static const int64_t timeouts[JOINERS] = {-1, 0, 1, 1000, 60000, MS(1)};
    tether_thread th[JOINERS / 2];
    pthread_t raw[JOINERS / 2];
    for (int i = 0; i < JOINERS / 2; i++) {
        th[i] = t_start(g_interp, joins_looping, (void *)(intptr_t)timeouts[i]);
        raw[i] = t_pthread(joins_looping_raw,
                           (void *)(intptr_t)timeouts[i + JOINERS / 2]);
    }
    ASSERT_OK(tether_sleep(MS(5))); /* let them join (not needed to pass) */
    t_sem_post(&g_go);
    for (int i = 0; i < JOINERS / 2; i++)
        ASSERT_EQ(t_join(th[i]), TETHER_OK);
    t_join_foreign(raw, JOINERS / 2);
    ASSERT_EQ(atomic_load(&g_joined_ok), JOINERS);
    ASSERT_OK(tether_thread_join(g_target, 0));
    ASSERT_OK(tether_thread_release(g_target));
    teardown();
}

/* Join with a timeout is bounded past the sentinel too: while the OS
   thread runs its key destructors, a join that waits for the reap (its
   own, or another joiner's) gives up at its deadline with
   TETHER_ETIMEDOUT, and a later join still reaps the thread. */
static atomic_int g_raw_rc;

static void *joins_raw_forever(void *arg)
{
    (void)arg;
    atomic_store(&g_raw_rc, tether_thread_join(g_target, -1));
    return NULL;
}

static void *joins_raw_briefly(void *arg)
{
    (void)arg;
    atomic_store(&g_raw_rc, tether_thread_join(g_target, MS(1)));
    return NULL;
}

TEST(timed_join_during_key_dtor)
{
    if (reap_has_no_deadline())
        return;
    setup();
    g_target = t_start(g_interp, sets_key, RESULT(DTOR_SLOW));
    wait_in_dtor(); /* it waits for g_go, which comes after the joins below */
    ASSERT_FAILS(tether_thread_join(g_target, 0), TETHER_ETIMEDOUT,
                 "tether_thread_join");
    ASSERT_FAILS(tether_thread_join(g_target, 1), TETHER_ETIMEDOUT,
                 "tether_thread_join");
    ASSERT_FAILS(tether_thread_join(g_target, MS(1)), TETHER_ETIMEDOUT,
                 "tether_thread_join");
    ASSERT_EQ(tether_gil_held(), 1);
    atomic_store(&g_raw_rc, 1000);
    t_run_foreign(joins_raw_briefly, NULL); /* not attached */
    ASSERT_STATUS(atomic_load(&g_raw_rc), TETHER_ETIMEDOUT);
    ASSERT_EQ(tether_thread_is_alive(g_target), 0);
    ASSERT_EQ(atomic_load(&g_dtor_done), 0);
    /* A joiner without a timeout claims the reap or waits for it; timed
       joins meanwhile still time out. */
    atomic_store(&g_raw_rc, 1000);
    pthread_t raw = t_pthread(joins_raw_forever, NULL);
    for (int i = 0; i < 20; i++)
        ASSERT_FAILS(tether_thread_join(g_target, 100000), TETHER_ETIMEDOUT,
                     "tether_thread_join");
    ASSERT_EQ(atomic_load(&g_dtor_done), 0);
    t_sem_post(&g_go);
    ASSERT_OK(tether_thread_join(g_target, -1));
    ASSERT_EQ(atomic_load(&g_dtor_done), 1);
    t_join_foreign(&raw, 1);
    ASSERT_STATUS(atomic_load(&g_raw_rc), TETHER_OK);
    ASSERT_OK(tether_thread_release(g_target));
    teardown();
}

/* A timed join whose reap outlasts the spin and ends before the deadline
   (a key destructor that goes on a little later, from another thread):
   TETHER_OK, and the destructor's end came first. */
static void *posts_go_later(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 20 * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
    t_sem_post(&g_go);
    return NULL;
}

TEST(timed_join_outlasting_the_spin)
{
    setup();
    g_target = t_start(g_interp, sets_key, RESULT(DTOR_SLOW));
    wait_in_dtor();
    pthread_t raw = t_pthread(posts_go_later, NULL);
    ASSERT_OK(tether_thread_join(g_target, SECONDS(60)));
    ASSERT_EQ(atomic_load(&g_dtor_done), 1);
    t_join_foreign(&raw, 1);
    ASSERT_OK(tether_thread_release(g_target));
    teardown();
}

/* Finalize joins its non-daemon threads within its deadline, the reap
   included: a thread it was waiting for ends while finalize waits, and its
   key destructor blocks until finalize has returned (before, finalize
   waited for the reap forever). */
static t_sem g_fn_go;

static int waits_then_sets_key(void *arg)
{
    TETHER_BEGIN_ALLOW_THREADS
    t_sem_wait(&g_fn_go);
    TETHER_END_ALLOW_THREADS
    return sets_key(arg);
}

static void *posts_fn_go_later(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 50 * 1000000}; /* finalize is joining by then */
    while (nanosleep(&ts, &ts) != 0)
        ;
    t_sem_post(&g_fn_go);
    return NULL;
}

TEST(finalize_during_key_dtor)
{
    if (reap_has_no_deadline()) /* finalize's join would wait for the dtor */
        return;
    setup();
    t_sem_init(&g_fn_go);
    g_target = t_start(g_interp, waits_then_sets_key, RESULT(DTOR_SLOW));
    pthread_t raw = t_pthread(posts_fn_go_later, NULL);
    int rc = tether_runtime_finalize(g_rt, MS(300));
    ASSERT(rc == TETHER_OK || rc == TETHER_ETIMEDOUT);
    ASSERT_EQ(atomic_load(&g_dtor_done), 0);
    t_sem_post(&g_go);
    ASSERT_OK(tether_thread_join(g_target, -1));
    ASSERT_EQ(atomic_load(&g_dtor_done), 1);
    ASSERT_OK(tether_thread_release(g_target));
    t_pthread_join(raw);
    ASSERT_EQ(pthread_key_delete(g_key), 0);
    t_sem_destroy(&g_in_dtor);
    t_sem_destroy(&g_go);
    t_sem_destroy(&g_fn_go);
}

/* A joiner inside nested ensures (a foreign thread) joins a thread whose
   key destructor takes the GIL: the join lets the GIL go whatever the
   nesting, and the joiner holds it again, at the same depth, after. */
static void *joins_in_nested_ensures(void *arg)
{
    (void)arg;
    tether_gilstate st[3];
    for (int i = 0; i < 3; i++)
        ASSERT_OK(tether_ensure(g_interp, &st[i]));
    wait_in_dtor();
    t_sem_post(&g_go);
    ASSERT_OK(tether_thread_join(g_target, -1));
    ASSERT_EQ(tether_gil_held(), 1);
    ASSERT_EQ(atomic_load(&g_dtor_done), 1);
    for (int i = 2; i >= 0; i--)
        ASSERT_OK(tether_release(st[i]));
    ASSERT_EQ(tether_gil_held(), 0);
    return NULL;
}

TEST(joiner_in_nested_ensures)
{
    setup();
    g_target = t_start(g_interp, sets_key, RESULT(DTOR_ENSURES));
    t_run_foreign(joins_in_nested_ensures, NULL);
    ASSERT_STATUS(atomic_load(&g_dtor_rc), TETHER_OK);
    ASSERT_OK(tether_thread_release(g_target));
    teardown();
}

/* An asynchronous exception raised at a joiner while it reaps does not
   interrupt the reap: the join returns OK and the next checkpoint
   delivers the exception. */
static int joins_then_checkpoints(void *arg)
{
    (void)arg;
    TETHER_BEGIN_ALLOW_THREADS
    t_sem_wait(&g_in_dtor);
    TETHER_END_ALLOW_THREADS
    tether_thread me;
    ASSERT_OK(tether_thread_current(&me));
    ASSERT_OK(tether_thread_raise(me, 77, NULL, NULL)); /* at itself */
    ASSERT_OK(tether_thread_release(me));
    t_sem_post(&g_go);
    ASSERT_OK(tether_thread_join(g_target, -1));
    ASSERT_EQ(atomic_load(&g_dtor_done), 1);
    ASSERT_STATUS(tether_checkpoint(), TETHER_EASYNC);
    int64_t code = 0;
    ASSERT_OK(tether_async_fetch(&code, NULL, NULL));
    ASSERT_EQ(code, 77);
    return TETHER_OK;
}

TEST(exception_at_the_joiner_during_the_reap)
{
    setup();
    g_target = t_start(g_interp, sets_key, RESULT(DTOR_ENSURES));
    ASSERT_EQ(t_join(t_start(g_interp, joins_then_checkpoints, NULL)),
              TETHER_OK);
    ASSERT_OK(tether_thread_release(g_target));
    teardown();
}

/* A daemon thread told to stop by finalize is joined across it: from a
   raw pthread while finalize runs, and from the finalizing thread after. */
static tether_event g_daemon_ready;

static int daemon_spinner(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_event_set(g_daemon_ready));
    int rc;
    while ((rc = tether_checkpoint()) == TETHER_OK)
        ;
    return rc;
}

static void *joins_daemon(void *arg)
{
    (void)arg;
    atomic_store(&g_raw_rc, tether_thread_join(g_target, -1));
    return NULL;
}

TEST(daemon_joined_across_finalize)
{
    setup();
    ASSERT_OK(tether_event_new(&g_daemon_ready));
    g_target = t_start_daemon(g_interp, daemon_spinner, NULL);
    ASSERT_OK(tether_event_wait(g_daemon_ready, -1));
    atomic_store(&g_raw_rc, 1000);
    pthread_t raw = t_pthread(joins_daemon, NULL);
    ASSERT_OK(tether_event_free(g_daemon_ready));
    ASSERT_OK(tether_runtime_finalize(g_rt, SECONDS(30)));
    ASSERT_OK(tether_thread_join(g_target, -1));
    int result = 0;
    ASSERT_OK(tether_thread_result(g_target, &result));
    ASSERT_STATUS(result, TETHER_EFINALIZING);
    t_pthread_join(raw);
    ASSERT_STATUS(atomic_load(&g_raw_rc), TETHER_OK);
    ASSERT_OK(tether_thread_release(g_target));
    ASSERT_EQ(pthread_key_delete(g_key), 0);
    t_sem_destroy(&g_in_dtor);
    t_sem_destroy(&g_go);
}

/* Joins of a thread told to stop race the destroy of its interpreter,
   which joins it too: every join returns OK, the destroy OK. */
static t_sem g_spinning;

static int spins_until_told(void *arg)
{
    (void)arg;
    t_sem_post(&g_spinning);
    int rc;
    while ((rc = tether_checkpoint()) == TETHER_OK)
        ;
    ASSERT_STATUS(rc, TETHER_EASYNC);
    ASSERT_OK(tether_async_fetch(NULL, NULL, NULL));
    return TETHER_EXIT; /* silent */
}

TEST(joins_racing_interp_destroy)
{
    setup();
    t_sem_init(&g_spinning);
    for (int round = 0; round < runner_rounds(20); round++) {
        tether_interp sub = 0;
        ASSERT_OK(tether_interp_create(g_rt, &sub));
        g_target = t_start(sub, spins_until_told, NULL);
        TETHER_BEGIN_ALLOW_THREADS
        t_sem_wait(&g_spinning);
        TETHER_END_ALLOW_THREADS
        ASSERT_OK(tether_thread_raise(g_target, 3, NULL, NULL));
        atomic_store(&g_raw_rc, 1000);
        pthread_t raw = t_pthread(joins_daemon, NULL); /* joins g_target */
        ASSERT_OK(tether_interp_destroy(sub, SECONDS(30)));
        ASSERT_OK(tether_thread_join(g_target, round % 2 ? 0 : -1));
        t_join_foreign(&raw, 1);
        ASSERT_STATUS(atomic_load(&g_raw_rc), TETHER_OK);
        int result = 0;
        ASSERT_OK(tether_thread_result(g_target, &result));
        ASSERT_STATUS(result, TETHER_EXIT);
        ASSERT_OK(tether_thread_release(g_target));
    }
    t_sem_destroy(&g_spinning);
    teardown();
}

/* The last reference to the handle is released while a joiner spins or
   waits on the thread (told to stop, going on until let go): the join
   still reaps it and returns OK, and the handle is closed afterwards
   (a new handle never takes its generation). */
static t_sem g_took_it, g_let_go;

static int takes_and_waits(void *arg)
{
    (void)arg;
    t_sem_post(&g_spinning);
    int rc;
    while ((rc = tether_checkpoint()) == TETHER_OK)
        ;
    ASSERT_STATUS(rc, TETHER_EASYNC); /* left delivered, unfetched */
    t_sem_post(&g_took_it);
    TETHER_BEGIN_ALLOW_THREADS
    t_sem_wait(&g_let_go);
    TETHER_END_ALLOW_THREADS
    ASSERT_OK(tether_async_fetch(NULL, NULL, NULL));
    return TETHER_EXIT;
}

TEST(handle_released_while_joining)
{
    setup();
    t_sem_init(&g_spinning);
    t_sem_init(&g_took_it);
    t_sem_init(&g_let_go);
    g_target = t_start(g_interp, takes_and_waits, NULL);
    TETHER_BEGIN_ALLOW_THREADS
    t_sem_wait(&g_spinning);
    TETHER_END_ALLOW_THREADS
    ASSERT_OK(tether_thread_raise(g_target, 4, NULL, NULL));
    TETHER_BEGIN_ALLOW_THREADS
    t_sem_wait(&g_took_it);
    TETHER_END_ALLOW_THREADS
    atomic_store(&g_raw_rc, 1000);
    pthread_t raw = t_pthread(joins_daemon, NULL); /* joins g_target */
    ASSERT_OK(tether_sleep(MS(20))); /* let it join (not needed to pass) */
    tether_thread stale = g_target;
    ASSERT_OK(tether_thread_release(g_target)); /* the last user reference */
    t_sem_post(&g_let_go);
    t_join_foreign(&raw, 1);
    /* EBADHANDLE only if the joiner came after the handle closed. */
    int rc = atomic_load(&g_raw_rc);
    ASSERT(rc == TETHER_OK || rc == TETHER_EBADHANDLE);
    ASSERT_STATUS(tether_thread_is_alive(stale), TETHER_EBADHANDLE);
    ASSERT_STATUS(tether_thread_join(stale, 0), TETHER_EBADHANDLE);
    tether_thread fresh = t_start(g_interp, t_return_arg, NULL);
    ASSERT_NE(fresh, stale);
    ASSERT_EQ(t_join(fresh), TETHER_OK);
    t_sem_destroy(&g_spinning);
    t_sem_destroy(&g_took_it);
    t_sem_destroy(&g_let_go);
    teardown();
}

RUNNER_MAIN(TEST_ENTRY_T(join_of_ended_thread_whose_key_dtor_ensures, 30),
            TEST_ENTRY_T(second_joiner_waits_for_reap_without_gil, 30),
            TEST_ENTRY_T(join_self_from_key_dtor, 30),
            TEST_ENTRY_T(joins_with_timeouts_during_key_dtor, 30),
            TEST_ENTRY_T(timed_join_during_key_dtor, 30),
            TEST_ENTRY_T(timed_join_outlasting_the_spin, 30),
            TEST_ENTRY_T(finalize_during_key_dtor, 30),
            TEST_ENTRY_T(joiner_in_nested_ensures, 30),
            TEST_ENTRY_T(exception_at_the_joiner_during_the_reap, 30),
            TEST_ENTRY_T(daemon_joined_across_finalize, 30),
            TEST_ENTRY_T(joins_racing_interp_destroy, 60),
            TEST_ENTRY_T(handle_released_while_joining, 30))
