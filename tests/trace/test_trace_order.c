/*
 * test_trace_order.c - orderings of the trace recorder held open at its
 * delay points (core/delay.h; labels unit, trace).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "delay_ctl.h"
#include "sanitizers.h"
#include "support.h"

static tether_runtime g_rt;

static void *stopper(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_trace_stop(g_rt));
    return NULL;
}

static int quick(void *arg)
{
    (void)arg;
    return TETHER_OK;
}

static char *slurp(const char *path)
{
    int fd = open(path, O_RDONLY);
    ASSERT(fd >= 0);
    char *s = t_read_all(fd);
    close(fd);
    return s;
}

/* A stop parked after it took the trace: the next trace starts and interns
   a name (the join of a named thread).  The parked stop must not take the
   next trace's strings with its own: the join keeps its name. */
TEST(next_trace_keeps_its_strings)
{
    char dir[] = "/tmp/tether-trace-order-XXXXXX", p1[96], p2[96];
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(p1, sizeof p1, "%s/one.json", dir);
    snprintf(p2, sizeof p2, "%s/two.json", dir);
    tether_interp interp;
    g_rt = t_runtime_main(NULL, &interp);
    ASSERT_OK(tether_trace_start(g_rt, p1, -1, 0));
    dctl_arm("trace.stop.closing", 1, DCTL_PARK, 0);
    pthread_t th = t_pthread(stopper, NULL);
    dctl_wait_parked("trace.stop.closing");
    ASSERT_OK(tether_trace_start(g_rt, p2, -1, 0));
    tether_thread_opts o = {sizeof o, "second-trace-worker", 0, 0};
    ASSERT_EQ(t_join(t_start_opts(interp, quick, NULL, &o)), TETHER_OK);
    dctl_release("trace.stop.closing");
    t_pthread_join(th);
    ASSERT_OK(tether_trace_stop(g_rt));
    char *s = slurp(p2);
    ASSERT_CONTAINS(s, "\"join second-trace-worker\"");
    free(s);
    s = slurp(p1);
    ASSERT_CONTAINS(s, "\"traceEvents\"");
    free(s);
    unlink(p1);
    unlink(p2);
    rmdir(dir);
    t_finalize(g_rt);
}

/* A fork while a start of another thread is under way: the child has no
   such thread, so the claim is not its own and it may start a trace. */
static char g_path[96];

static void *starter(void *arg)
{
    (void)arg;
    ASSERT_OK(tether_trace_start(g_rt, g_path, -1, 0));
    return NULL;
}

TEST(fork_during_a_start)
{
    /* Not under ThreadSanitizer: its runtime (gcc 12's) takes none of its
       own locks across fork, and the child of this multi-threaded process
       hung once for the whole 240 s (clean clone 31; 0 hangs in 20 runs
       of the case alone), in ThreadSanitizer's code or in tether's: it
       cannot be told there.  The dev, asan-ubsan and valgrind builds run
       it. */
    if (TEST_SANITIZER_THREAD)
        return;
    char dir[] = "/tmp/tether-trace-order-XXXXXX", child[96];
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(g_path, sizeof g_path, "%s/parent.json", dir);
    snprintf(child, sizeof child, "%s/child.json", dir);
    g_rt = t_runtime(NULL);
    dctl_arm("trace.start.claimed", 1, DCTL_PARK, 0);
    pthread_t th = t_pthread(starter, NULL);
    dctl_wait_parked("trace.start.claimed");
    ASSERT_FAILS(tether_trace_start(g_rt, child, -1, 0), TETHER_ESTATE,
                 "under way");
    tether_tstate saved; /* the child makes a runtime of its own */
    ASSERT_OK(tether_save_thread(&saved));
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        tether_runtime rt;
        int rc = tether_runtime_create(NULL, &rt);
        if (rc == TETHER_OK)
            rc = tether_trace_start(rt, child, -1, 0);
        if (rc == TETHER_OK)
            rc = tether_trace_stop(rt);
        if (rc != TETHER_OK)
            fprintf(stderr, "child: %s\n", tether_last_error());
        _exit(rc == TETHER_OK ? 0 : 1);
    }
    int st = 0;
    ASSERT(waitpid(pid, &st, 0) == pid);
    ASSERT_OK(tether_restore_thread(saved));
    dctl_release("trace.start.claimed");
    t_pthread_join(th);
    ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ASSERT_OK(tether_trace_stop(g_rt));
    char *s = slurp(child);
    ASSERT_CONTAINS(s, "\"traceEvents\"");
    free(s);
    s = slurp(g_path);
    ASSERT_CONTAINS(s, "\"traceEvents\"");
    free(s);
    unlink(child);
    unlink(g_path);
    rmdir(dir);
    t_finalize(g_rt);
}

/* A waiter W asks the holder (main) to drop, and the holder sees the
   request and drops before W goes on: W parked at gil.request_drop.posted,
   main's drop stamped and parked at gil.drop.slow (before the mutex W
   holds), then W let go.  The request must be stamped before the drop it
   caused, so that the trace draws the flow arrow from it to that drop;
   stamped after its post, it came after the drop (no arrow), and a flow
   matched that way could go back in time (CI, trace.invariants). */
static tether_interp g_interp;

static void *drop_asker(void *arg)
{
    (void)arg;
    tether_gilstate st;
    ASSERT_OK(tether_ensure(g_interp, &st));
    ASSERT_OK(tether_release(st));
    return NULL;
}

static void *drop_releaser(void *arg)
{
    (void)arg;
    dctl_wait_parked("gil.drop.slow"); /* main's drop is stamped */
    dctl_release("gil.request_drop.posted");
    dctl_release("gil.drop.slow");
    return NULL;
}

/* The "ts" of the first event of phase `ph` in trace `s`, or -1. */
static double event_ts(const char *s, const char *ph)
{
    char key[16];
    snprintf(key, sizeof key, "{\"ph\":\"%s\"", ph);
    const char *e = strstr(s, key);
    const char *ts = e ? strstr(e, "\"ts\":") : NULL;
    return ts ? strtod(ts + 5, NULL) : -1;
}

TEST(request_is_stamped_before_the_drop_it_causes)
{
    char dir[] = "/tmp/tether-trace-order-XXXXXX", path[96];
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/flow.json", dir);
    g_rt = t_runtime_interval(1000); /* W asks after 1 ms */
    g_interp = t_main_interp(g_rt);
    ASSERT_OK(tether_trace_start(g_rt, path, -1, 0));
    dctl_arm("gil.request_drop.posted", 1, DCTL_PARK, 0);
    dctl_arm("gil.drop.slow", 1, DCTL_PARK, 0);
    pthread_t w = t_pthread(drop_asker, NULL);
    dctl_wait_parked("gil.request_drop.posted");
    pthread_t r = t_pthread(drop_releaser, NULL);
    tether_tstate saved;
    ASSERT_OK(tether_save_thread(&saved)); /* the requested drop */
    t_pthread_join(w);
    t_pthread_join(r);
    ASSERT_OK(tether_restore_thread(saved));
    ASSERT_OK(tether_trace_stop(g_rt));
    char *s = slurp(path);
    double from = event_ts(s, "s"), to = event_ts(s, "f");
    ASSERT(from >= 0 && to >= 0); /* the requested drop has its arrow */
    ASSERT(from <= to);
    free(s);
    unlink(path);
    rmdir(dir);
    t_finalize(g_rt);
}

RUNNER_MAIN(TEST_ENTRY(next_trace_keeps_its_strings),
            TEST_ENTRY(fork_during_a_start),
            TEST_ENTRY(request_is_stamped_before_the_drop_it_causes))
