/*
 * test_gil.c - the GIL under load: mutual exclusion, fairness with a short
 * switch interval, and the convoy fix (a thread returning from a blocking
 * call gets the GIL from a CPU-bound holder long before a switch interval
 * has passed).
 *
 * Nothing here measures time.  Fairness is counted in GIL switches.  The
 * convoy cases use a 10 s switch interval and a 20 s case timeout: ten
 * returns that each waited out an interval would fail as a timeout, and the
 * forced-drop count shows that each return took the GIL from the holder.
 */
#include <tether/tether.h>

#include "runner.h"
#include "support.h"

static tether_runtime g_rt;
static tether_interp g_interp;
static atomic_int g_stop;

/* ------------------------------------------------------------------------
 * Mutual exclusion
 * ---------------------------------------------------------------------- */

enum { STARTED = 8, FOREIGN = 4 };

/* Synchronization: gil.  Deliberately plain: TSan reports any access that
   the GIL does not order. */
static long g_counter;
static uintptr_t g_owner;

/* One critical section: nobody else may run between entry and exit. */
static void critical_section(uintptr_t me)
{
    g_owner = me;
    long v = g_counter;
    for (volatile int spin = 0; spin < 50; spin++)
        ;
    g_counter = v + 1;
    ASSERT(g_owner == me);
}

static int increment(void *arg)
{
    int rounds = runner_rounds(20000);
    for (int i = 0; i < rounds; i++) {
        critical_section((uintptr_t)arg);
        ASSERT_OK(tether_checkpoint());
    }
    return TETHER_OK;
}

static void *increment_foreign(void *arg)
{
    int rounds = runner_rounds(5000);
    for (int i = 0; i < rounds; i++) {
        tether_gilstate st;
        ASSERT_OK(tether_ensure(g_interp, &st));
        critical_section((uintptr_t)arg);
        ASSERT_OK(tether_release(st));
    }
    return NULL;
}

TEST(mutual_exclusion)
{
    g_rt = t_runtime_interval(1);
    g_interp = t_main_interp(g_rt);
    tether_thread ts[STARTED];
    pthread_t raw[FOREIGN];
    for (uintptr_t i = 0; i < STARTED; i++)
        ts[i] = t_start(g_interp, increment, (void *)(i + 1));
    for (uintptr_t i = 0; i < FOREIGN; i++)
        raw[i] = t_pthread(increment_foreign, (void *)(STARTED + i + 1));
    for (int i = 0; i < STARTED; i++)
        ASSERT_EQ(t_join(ts[i]), TETHER_OK);
    TETHER_BEGIN_ALLOW_THREADS
    for (int i = 0; i < FOREIGN; i++)
        t_pthread_join(raw[i]);
    TETHER_END_ALLOW_THREADS
    ASSERT_EQ(g_counter, (long)STARTED * runner_rounds(20000) +
                             (long)FOREIGN * runner_rounds(5000));
    tether_gil_stats st = t_gil_stats(g_interp);
    ASSERT(st.switches > STARTED + FOREIGN); /* they did interleave */
    t_finalize(g_rt);
}

/* ------------------------------------------------------------------------
 * Fairness
 * ---------------------------------------------------------------------- */

enum { WORKERS = 4, ROUNDS = 4, SWITCHES_PER_ROUND = 200 };

static long g_progress[WORKERS]; /* Synchronization: gil. */

static int cpu_bound(void *arg)
{
    int me = (int)(intptr_t)arg;
    while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        g_progress[me]++;
        ASSERT_OK(tether_checkpoint());
    }
    return TETHER_OK;
}

/* With a 1 ms interval and four CPU-bound threads, every thread makes
   progress within every window of SWITCHES_PER_ROUND GIL switches.  The
   main thread samples the counters holding the GIL. */
TEST(fairness)
{
    g_rt = t_runtime_interval(1000);
    g_interp = t_main_interp(g_rt);
    tether_thread ts[WORKERS];
    for (intptr_t i = 0; i < WORKERS; i++)
        ts[i] = t_start(g_interp, cpu_bound, (void *)i);
    tether_gil_stats first = t_gil_stats(g_interp);
    for (int round = 0; round < ROUNDS; round++) {
        long seen[WORKERS];
        memcpy(seen, g_progress, sizeof seen);
        uint64_t until = t_gil_stats(g_interp).switches + SWITCHES_PER_ROUND;
        while (t_gil_stats(g_interp).switches < until)
            ASSERT_OK(tether_sleep(MS(5)));
        for (int i = 0; i < WORKERS; i++)
            if (g_progress[i] <= seen[i])
                runner_fail(__FILE__, __LINE__,
                            "round %d: thread %d made no progress in %d switches",
                            round, i, SWITCHES_PER_ROUND);
    }
    tether_gil_stats last = t_gil_stats(g_interp);
    uint64_t forced = last.forced_drops - first.forced_drops;
    uint64_t switches = last.switches - first.switches;
    ASSERT(forced >= WORKERS);
    /* Forced switching: a thread that drops the GIL on request waits until
       another thread took it, so each forced drop is followed by a switch
       (give or take one per thread at the edges of the window). */
    if (switches + WORKERS < forced)
        runner_fail(__FILE__, __LINE__, "%llu forced drops but only %llu switches",
                    (unsigned long long)forced, (unsigned long long)switches);
    atomic_store(&g_stop, 1);
    for (int i = 0; i < WORKERS; i++)
        ASSERT_EQ(t_join(ts[i]), TETHER_OK);
    t_finalize(g_rt);
}

/* ------------------------------------------------------------------------
 * Fair turns: CPU-bound threads take the GIL in turn (issue 19, item 2)
 * ---------------------------------------------------------------------- */

enum { TURN_THREADS = 8, TURN_ROUNDS = 40, TURN_LOG = TURN_THREADS * TURN_ROUNDS };

/* The order in which the threads held the GIL.  Synchronization: gil. */
static int g_turn_log[TURN_LOG];
static int g_turns;
static int g_turn_last = -1;

static int cpu_turns(void *arg)
{
    int me = (int)(intptr_t)arg;
    while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        if (g_turn_last != me) {
            g_turn_last = me;
            if (g_turns < TURN_LOG)
                g_turn_log[g_turns++] = me;
            else
                atomic_store(&g_stop, 1);
        }
        ASSERT_OK(tether_checkpoint());
    }
    return TETHER_OK;
}

/* Eight threads that only ever give the GIL up when asked take it in
   turn: once the queue has formed (after the first two rounds), no thread
   waits more than two rounds of the others between two of its turns.
   With every waiter timing its own drop request (the GIL before the
   queue), who goes next was the scheduler's choice, and a thread sat out
   dozens of turns.  Nothing is timed: turns are counted. */
TEST(fair_turns)
{
    g_rt = t_runtime_interval(1000);
    g_interp = t_main_interp(g_rt);
    atomic_store(&g_stop, 0);
    tether_thread ts[TURN_THREADS];
    for (intptr_t i = 0; i < TURN_THREADS; i++)
        ts[i] = t_start(g_interp, cpu_turns, (void *)i);
    /* The main thread waits detached (tether_thread_join drops the GIL). */
    for (int i = 0; i < TURN_THREADS; i++)
        ASSERT_EQ(t_join(ts[i]), TETHER_OK);
    ASSERT_EQ(g_turns, TURN_LOG);
    int last[TURN_THREADS], worst = 0, worst_thread = -1;
    for (int i = 0; i < TURN_THREADS; i++)
        last[i] = -1;
    for (int k = 2 * TURN_THREADS; k < TURN_LOG; k++) {
        int t = g_turn_log[k];
        if (last[t] >= 0 && k - last[t] > worst) {
            worst = k - last[t];
            worst_thread = t;
        }
        last[t] = k;
    }
    for (int i = 0; i < TURN_THREADS; i++)
        if (last[i] < 0)
            runner_fail(__FILE__, __LINE__, "thread %d had no turn after the first "
                        "two rounds", i);
    if (worst > 3 * TURN_THREADS)
        runner_fail(__FILE__, __LINE__, "thread %d waited %d turns between two of "
                    "its own (%d threads)", worst_thread, worst, TURN_THREADS);
    t_finalize(g_rt);
}

/* ------------------------------------------------------------------------
 * Convoy
 * ---------------------------------------------------------------------- */

enum { RETURNS = 10 };
enum how { BY_EVENT_WAIT, BY_SAVE_RESTORE, BY_CALL_BLOCKING, BY_SLEEP };

static tether_event g_go;   /* the holder runs */
static tether_event g_back; /* BY_EVENT_WAIT: the holder lets the returner go */
static t_sem g_back_sem;    /* the same for the other ways of blocking */
static t_sem g_ready;       /* the returner holds the GIL for the first time */
static int g_away;          /* Synchronization: gil.  The returner blocks. */
static atomic_int g_returns;

/* Spins on checkpoints, never letting go of the GIL unless asked.  Each
   time it finds the returner gone, it wakes it while keeping the GIL, so
   the returner comes back to a GIL held by one thread since it left. */
static int holder(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_event_set(g_go));
    while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        ASSERT_OK(tether_checkpoint());
        if (g_away) {
            g_away = 0;
            ASSERT_OK(tether_event_set(g_back));
            t_sem_post(&g_back_sem);
        }
    }
    return TETHER_OK;
}

static int wait_for_holder(void *arg)
{
    (void)arg;
    t_sem_wait(&g_back_sem);
    return TETHER_OK;
}

/* Blocks once in the given way.  Except for BY_SLEEP, it comes back only
   when the holder, holding the GIL, lets it. */
static void block_once(enum how how)
{
    tether_tstate ts;
    g_away = 1;
    switch (how) {
    case BY_EVENT_WAIT:
        ASSERT_OK(tether_event_wait(g_back, -1));
        ASSERT_OK(tether_event_clear(g_back));
        break;
    case BY_SAVE_RESTORE:
        ASSERT_OK(tether_save_thread(&ts));
        wait_for_holder(NULL);
        ASSERT_OK(tether_restore_thread(ts));
        break;
    case BY_CALL_BLOCKING:
        ASSERT_OK(tether_call_blocking(wait_for_holder, NULL, NULL, NULL));
        break;
    case BY_SLEEP:
        g_away = 0;
        ASSERT_OK(tether_sleep(MS(1)));
        break;
    }
}

static int returner(void *arg)
{
    t_sem_post(&g_ready);
    ASSERT_OK(tether_event_wait(g_go, -1)); /* the holder runs from here on */
    for (int i = 0; i < RETURNS; i++) {
        block_once((enum how)(intptr_t)arg);
        ASSERT_EQ(tether_gil_held(), 1);
        atomic_fetch_add(&g_returns, 1);
    }
    atomic_store(&g_stop, 1);
    return TETHER_OK;
}

/* The main thread stays detached, so only the holder and the returner use
   the GIL.  The holder drops it only when asked, so every return but the
   sleeping kind costs one forced drop.  The holder starts only once the
   returner has had the GIL: a new thread's first acquisition is not a
   return from a blocking call, and would wait out a switch interval. */
static void convoy(enum how how)
{
    g_rt = t_runtime_interval(10000000);
    g_interp = t_main_interp(g_rt);
    ASSERT_OK(tether_event_new(&g_go));
    ASSERT_OK(tether_event_new(&g_back));
    t_sem_init(&g_back_sem);
    t_sem_init(&g_ready);
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    tether_gil_stats before = t_gil_stats(g_interp);
    tether_thread r = t_start(g_interp, returner, (void *)(intptr_t)how);
    t_sem_wait(&g_ready);
    tether_thread h = t_start(g_interp, holder, NULL);
    ASSERT_EQ(t_join(r), TETHER_OK);
    ASSERT_EQ(t_join(h), TETHER_OK);
    ASSERT_EQ(atomic_load(&g_returns), RETURNS);
    tether_gil_stats after = t_gil_stats(g_interp);
    if (how != BY_SLEEP)
        ASSERT(after.forced_drops >= before.forced_drops + RETURNS);
    ASSERT_OK(tether_restore_thread(ts));
    t_sem_destroy(&g_back_sem);
    t_sem_destroy(&g_ready);
    ASSERT_OK(tether_event_free(g_back));
    ASSERT_OK(tether_event_free(g_go));
    t_finalize(g_rt);
}

TEST(convoy_event_wait) { convoy(BY_EVENT_WAIT); }
TEST(convoy_save_restore) { convoy(BY_SAVE_RESTORE); }
TEST(convoy_call_blocking) { convoy(BY_CALL_BLOCKING); }
TEST(convoy_sleep) { convoy(BY_SLEEP); }

RUNNER_MAIN(TEST_ENTRY(mutual_exclusion), TEST_ENTRY(fairness), TEST_ENTRY(fair_turns),
            TEST_ENTRY_T(convoy_event_wait, 20), TEST_ENTRY_T(convoy_save_restore, 20),
            TEST_ENTRY_T(convoy_call_blocking, 20), TEST_ENTRY_T(convoy_sleep, 20))
