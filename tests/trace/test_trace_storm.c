/*
 * test_trace_storm.c - the trace recorder under load (labels stress,
 * trace): traces started and stopped from several threads at once while
 * eight threads trade the GIL as fast as a short switch interval makes
 * them, foreign threads come in and out with ensure/release, and threads
 * start and end; a fork in the middle; finalize while a trace records.
 * Every call answers one of its documented statuses, every file written
 * is a whole trace, and the sanitizer presets see no race or leak.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

enum { WORKERS = 8, FOREIGN = 3, CONTROLLERS = 4, ROUNDS = 150 };

static tether_interp g_interp;
static tether_runtime g_rt;
static atomic_int g_stop;
static atomic_int g_bad; /* an undocumented status was seen */
static char g_dir[64];

static void bad(const char *what, int rc)
{
    fprintf(stderr, "%s: %s (%d): %s\n", what, tether_status_name(rc), rc,
            tether_last_error());
    atomic_store(&g_bad, 1);
}

static int spinner(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_stop)) {
        int rc = tether_checkpoint();
        if (rc != TETHER_OK)
            return rc;
    }
    return TETHER_OK;
}

static int short_lived(void *arg)
{
    (void)arg;
    return tether_checkpoint();
}

static void *foreign(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_stop)) {
        tether_gilstate st;
        int rc = tether_ensure(g_interp, &st);
        if (rc != TETHER_OK) {
            bad("ensure", rc);
            return NULL;
        }
        tether_thread t;
        tether_thread_opts o = {sizeof o, "short-lived", 0, 0};
        if (tether_thread_start(g_interp, short_lived, NULL, &o, &t) == TETHER_OK) {
            rc = tether_thread_join(t, -1);
            if (rc != TETHER_OK)
                bad("join", rc);
            tether_thread_release(t);
        }
        if ((rc = tether_release(st)) != TETHER_OK)
            bad("release", rc);
    }
    return NULL;
}

/* A whole trace: its last line closes the document.  A missing file is
   fine unless `must` (another controller's start of the round won). */
static void check_file(const char *path, int must)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        if (must) {
            fprintf(stderr, "%s was not written\n", path);
            atomic_store(&g_bad, 1);
        }
        return;
    }
    char *s = t_read_all(fd);
    close(fd);
    size_t n = strlen(s);
    if (n && (strncmp(s, "{\"traceEvents\":[", 16) != 0 ||
              n < 3 || strcmp(s + n - 3, "}}\n") != 0)) {
        fprintf(stderr, "%s is not a whole trace (%zu bytes)\n", path, n);
        atomic_store(&g_bad, 1);
    }
    free(s);
}

static void *controller(void *arg)
{
    int id = (int)(intptr_t)arg;
    char path[128];
    for (int i = 0; i < ROUNDS && !atomic_load(&g_bad); i++) {
        snprintf(path, sizeof path, "%s/c%d-%d.json", g_dir, id, i);
        int rc;
        if (i % 3 == 0) {
            int fd = open("/dev/null", O_WRONLY);
            rc = tether_trace_start(g_rt, NULL, fd, 0);
            close(fd);
        } else {
            rc = tether_trace_start(g_rt, path, -1, 0);
        }
        if (rc != TETHER_OK && rc != TETHER_ESTATE)
            bad("tether_trace_start", rc);
        sched_yield();
        /* Anyone may stop anyone's trace. */
        rc = tether_trace_stop(g_rt);
        if (rc != TETHER_OK && rc != TETHER_ESTATE)
            bad("tether_trace_stop", rc);
        /* Checked at the end: the stop that writes this file may be
           another controller's, still writing when this one's returns. */
        if (id == 0 && i == ROUNDS / 2) {
            /* A fork while traces come and go: the child forgets the
               parent's trace and may start its own. */
            pid_t pid = fork();
            if (pid == 0) {
                tether_runtime rt;
                const char *step = "tether_runtime_create";
                int ok = tether_runtime_create(NULL, &rt) == TETHER_OK;
                snprintf(path, sizeof path, "%s/child.json", g_dir);
                if (ok && (step = "tether_trace_start",
                           tether_trace_start(rt, path, -1, 0) != TETHER_OK))
                    ok = 0;
                if (ok && (step = "tether_trace_stop",
                           tether_trace_stop(rt) != TETHER_OK))
                    ok = 0;
                if (!ok)
                    fprintf(stderr, "child: %s: %s\n", step, tether_last_error());
                _exit(ok ? 0 : 1);
            }
            int st = 0;
            if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
                WEXITSTATUS(st) != 0) {
                fprintf(stderr, "the forked child failed (status 0x%x)\n", st);
                atomic_store(&g_bad, 1);
            }
        }
    }
    return NULL;
}

TEST(storm)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/tether-trace-storm-XXXXXX");
    ASSERT(mkdtemp(g_dir) != NULL);
    g_rt = t_runtime_interval(50);
    g_interp = t_main_interp(g_rt);
    tether_thread w[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        tether_thread_opts o = {sizeof o, "spinner", 0, 0};
        w[i] = t_start_opts(g_interp, spinner, NULL, &o);
    }
    pthread_t th[FOREIGN + CONTROLLERS];
    for (int i = 0; i < FOREIGN; i++)
        th[i] = t_pthread(foreign, NULL);
    for (int i = 0; i < CONTROLLERS; i++)
        th[FOREIGN + i] = t_pthread(controller, (void *)(intptr_t)i);
    tether_tstate saved;
    ASSERT_OK(tether_save_thread(&saved));
    for (int i = 0; i < CONTROLLERS; i++)
        t_pthread_join(th[FOREIGN + i]);
    ASSERT_OK(tether_restore_thread(saved));
    /* A last trace, left recording: finalize writes it. */
    char last[128];
    snprintf(last, sizeof last, "%s/last.json", g_dir);
    ASSERT_OK(tether_trace_start(g_rt, last, -1, 0));
    atomic_store(&g_stop, 1);
    ASSERT_OK(tether_save_thread(&saved));
    for (int i = 0; i < FOREIGN; i++)
        t_pthread_join(th[i]);
    ASSERT_OK(tether_restore_thread(saved));
    for (int i = 0; i < WORKERS; i++)
        ASSERT_EQ(t_join(w[i]), TETHER_OK);
    t_finalize(g_rt);
    char path[128];
    for (int c = 0; c < CONTROLLERS; c++)
        for (int i = 0; i < ROUNDS; i++) {
            snprintf(path, sizeof path, "%s/c%d-%d.json", g_dir, c, i);
            check_file(path, 0);
            unlink(path);
        }
    check_file(last, 1);
    unlink(last);
    char child[128];
    snprintf(child, sizeof child, "%s/child.json", g_dir);
    check_file(child, 1);
    unlink(child);
    rmdir(g_dir);
    ASSERT_EQ(atomic_load(&g_bad), 0);
}

/* Finalize while a trace records, daemon threads spin and foreign threads
   keep coming in with ensure: finalize writes a whole trace; the foreign
   threads are refused from then on (any status but a crash). */
static atomic_int g_fin_done;

static void *foreign_until_refused(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_fin_done)) {
        tether_gilstate st;
        if (tether_ensure(g_interp, &st) != TETHER_OK)
            break; /* finalizing or finalized */
        tether_checkpoint();
        if (tether_release(st) != TETHER_OK)
            break;
    }
    return NULL;
}

TEST(finalize_while_busy)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/tether-trace-storm-XXXXXX");
    ASSERT(mkdtemp(g_dir) != NULL);
    g_rt = t_runtime_interval(50);
    g_interp = t_main_interp(g_rt);
    char path[128];
    snprintf(path, sizeof path, "%s/fin.json", g_dir);
    ASSERT_OK(tether_trace_start(g_rt, path, -1, 0));
    for (int i = 0; i < 4; i++) {
        tether_thread_opts o = {sizeof o, "daemon", 1, 0};
        tether_thread t = t_start_opts(g_interp, spinner, NULL, &o);
        ASSERT_OK(tether_thread_release(t));
    }
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        th[i] = t_pthread(foreign_until_refused, NULL);
    ASSERT_OK(tether_sleep(20000000));
    t_finalize(g_rt);
    atomic_store(&g_fin_done, 1);
    for (int i = 0; i < 2; i++)
        t_pthread_join(th[i]);
    check_file(path, 1);
    unlink(path);
    rmdir(g_dir);
    ASSERT_EQ(atomic_load(&g_bad), 0);
}

RUNNER_MAIN(TEST_ENTRY(storm), TEST_ENTRY(finalize_while_busy))
