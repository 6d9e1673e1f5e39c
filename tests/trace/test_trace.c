/*
 * test_trace.c - tether_trace_start / tether_trace_stop and TETHER_TRACE
 * (labels unit, trace).  The JSON itself is validated by check_trace.py.
 */
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support.h"

static char g_dir[64];

/* A fresh directory for the case's files. */
static const char *tmp_path(const char *name)
{
    static char path[128];
    if (!g_dir[0]) {
        snprintf(g_dir, sizeof g_dir, "/tmp/tether-trace-XXXXXX");
        ASSERT(mkdtemp(g_dir) != NULL);
    }
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    return path;
}

static char *slurp(const char *path)
{
    int fd = open(path, O_RDONLY);
    ASSERT(fd >= 0);
    char *s = t_read_all(fd);
    close(fd);
    return s;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 50; i++) {
        tether_checkpoint();
        tether_sleep(100000);
    }
    return TETHER_OK;
}

/* Bad input gets a status and a sentence, and starts nothing. */
TEST(bad_input_changes_nothing)
{
    tether_runtime rt = t_runtime(NULL);
    const char *p = tmp_path("bad.json");
    ASSERT_FAILS(tether_trace_start(rt, p, -1, 0x80), TETHER_EINVAL, "tether_trace_start");
    ASSERT_CONTAINS(tether_last_error(), "flags");
    ASSERT_FAILS(tether_trace_start(rt, p, 1, 0), TETHER_EINVAL, "tether_trace_start");
    ASSERT_FAILS(tether_trace_start(rt, NULL, -1, 0), TETHER_EINVAL, "tether_trace_start");
    ASSERT_FAILS(tether_trace_start(rt, "", -1, 0), TETHER_EINVAL, "tether_trace_start");
    ASSERT_FAILS(tether_trace_start(0, p, -1, 0), TETHER_EBADHANDLE, "tether_trace_start");
    ASSERT_FAILS(tether_trace_start(rt, NULL, 987, 0), TETHER_EINVAL, "tether_trace_start");
    ASSERT_CONTAINS(tether_last_error(), "descriptor 987");
    ASSERT_FAILS(tether_trace_start(rt, "/nonexistent-dir/x/t.json", -1, 0),
                 TETHER_EINVAL, "tether_trace_start");
    ASSERT_CONTAINS(tether_last_error(), "/nonexistent-dir/x/t.json");
    ASSERT(!file_exists(p));
    ASSERT_FAILS(tether_trace_stop(rt), TETHER_ESTATE, "tether_trace_stop");
    ASSERT_FAILS(tether_trace_stop(0), TETHER_EBADHANDLE, "tether_trace_stop");
    t_finalize(rt);
}

/* One trace at a time: a second start, of the same runtime or another, is
   refused and leaves the first trace's file and recording alone. */
TEST(one_trace_at_a_time)
{
    tether_runtime rt = t_runtime(NULL);
    char p1[128], p2[128];
    snprintf(p1, sizeof p1, "%s", tmp_path("one.json"));
    snprintf(p2, sizeof p2, "%s", tmp_path("two.json"));
    ASSERT_OK(tether_trace_start(rt, p1, -1, 0));
    ASSERT_FAILS(tether_trace_start(rt, p2, -1, 0), TETHER_ESTATE, "tether_trace_start");
    ASSERT_FAILS(tether_trace_start(rt, p1, -1, 0), TETHER_ESTATE, "tether_trace_start");
    ASSERT(!file_exists(p2));
    ASSERT(file_exists(p1));
    ASSERT_OK(tether_trace_stop(rt));
    char *s = slurp(p1);
    ASSERT_CONTAINS(s, "\"traceEvents\"");
    free(s);
    /* Stopped: it may start again, into the same file. */
    ASSERT_OK(tether_trace_start(rt, p1, -1, 0));
    ASSERT_OK(tether_trace_stop(rt));
    ASSERT_FAILS(tether_trace_stop(rt), TETHER_ESTATE, "tether_trace_stop");
    t_finalize(rt);
}

/* A stop writes the threads' GIL slices, names and the counters. */
TEST(stop_writes_the_timeline)
{
    tether_interp interp;
    tether_runtime rt = t_runtime_main(NULL, &interp);
    const char *p = tmp_path("timeline.json");
    ASSERT_OK(tether_trace_start(rt, p, -1, 0));
    tether_thread_opts o = {sizeof o, "worker-a", 0, 0};
    tether_thread a = t_start_opts(interp, worker, NULL, &o);
    o.name = "worker-b";
    tether_thread b = t_start_opts(interp, worker, NULL, &o);
    ASSERT_EQ(t_join(a), TETHER_OK);
    ASSERT_EQ(t_join(b), TETHER_OK);
    ASSERT_OK(tether_trace_stop(rt));
    char *s = slurp(p);
    ASSERT_CONTAINS(s, "\"name\":\"worker-a\"");
    ASSERT_CONTAINS(s, "\"name\":\"worker-b\"");
    ASSERT_CONTAINS(s, "\"name\":\"main\"");
    ASSERT_CONTAINS(s, "\"holds GIL\"");
    ASSERT_CONTAINS(s, "\"drop\":\"wait\"");
    ASSERT_CONTAINS(s, "\"join worker-a\"");
    ASSERT_CONTAINS(s, "\"thread start\"");
    ASSERT_CONTAINS(s, "\"bytes_per_event\":32");
    ASSERT_CONTAINS(s, "\"dropped_events\":0");
    free(s);
    t_finalize(rt);
}

/* The descriptor form: the library writes to its duplicate, so the caller
   may close its own at once. */
TEST(descriptor_is_duplicated)
{
    tether_runtime rt = t_runtime(NULL);
    const char *p = tmp_path("fd.json");
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT(fd >= 0);
    ASSERT_OK(tether_trace_start(rt, NULL, fd, 0));
    close(fd);
    ASSERT_OK(tether_sleep(1000000));
    ASSERT_OK(tether_trace_stop(rt));
    char *s = slurp(p);
    ASSERT_CONTAINS(s, "\"traceEvents\"");
    ASSERT_CONTAINS(s, "\"drop\":\"wait\"");
    free(s);
    t_finalize(rt);
}

/* Finalize of the traced runtime writes the trace, with its phases; the
   trace is over afterwards (another runtime may start one). */
TEST(finalize_writes_the_trace)
{
    tether_interp interp;
    tether_runtime rt = t_runtime_main(NULL, &interp);
    char p[128];
    snprintf(p, sizeof p, "%s", tmp_path("fin.json"));
    ASSERT_OK(tether_trace_start(rt, p, -1, 0));
    t_join(t_start(interp, worker, NULL));
    t_finalize(rt);
    char *s = slurp(p);
    ASSERT_CONTAINS(s, "\"finalize: join non-daemon threads\"");
    ASSERT_CONTAINS(s, "\"finalize: stop the interpreters\"");
    ASSERT_CONTAINS(s, "}}\n");
    free(s);
    tether_runtime rt2 = t_runtime(NULL);
    ASSERT_OK(tether_trace_start(rt2, p, -1, 0));
    ASSERT_OK(tether_trace_stop(rt2));
    t_finalize(rt2);
}

/* TETHER_TRACE=path starts a trace at tether_runtime_create; %p is the
   process id. */
TEST(environment_variable)
{
    char want[160];
    snprintf(want, sizeof want, "%s", tmp_path("env-"));
    char pat[200];
    snprintf(pat, sizeof pat, "%s%%p.json", want);
    setenv("TETHER_TRACE", pat, 1);
    tether_runtime rt = t_runtime(NULL);
    unsetenv("TETHER_TRACE");
    ASSERT_FAILS(tether_trace_start(rt, tmp_path("x.json"), -1, 0),
                 TETHER_ESTATE, "tether_trace_start");
    t_finalize(rt);
    char path[240];
    snprintf(path, sizeof path, "%s%ld.json", want, (long)getpid());
    char *s = slurp(path);
    ASSERT_CONTAINS(s, "\"traceEvents\"");
    ASSERT_CONTAINS(s, "\"holds GIL\"");
    free(s);
}

/* A ring that fills overwrites its oldest events and counts them. */
TEST(full_ring_counts_dropped_events)
{
    setenv("TETHER_TRACE_EVENTS", "64", 1);
    tether_interp interp;
    tether_runtime rt = t_runtime_main(NULL, &interp);
    const char *p = tmp_path("small.json");
    ASSERT_OK(tether_trace_start(rt, p, -1, 0));
    unsetenv("TETHER_TRACE_EVENTS");
    tether_thread self;
    uint64_t ident;
    ASSERT_OK(tether_thread_current(&self));
    ASSERT_OK(tether_thread_ident(self, &ident));
    for (int i = 0; i < 200; i++) { /* two events each: posted, delivered */
        int n;
        ASSERT_OK(tether_raise_by_ident(interp, ident, i, NULL, NULL, &n));
        ASSERT_STATUS(tether_checkpoint(), TETHER_EASYNC);
        ASSERT_OK(tether_async_fetch(NULL, NULL, NULL));
    }
    ASSERT_OK(tether_thread_release(self));
    ASSERT_OK(tether_trace_stop(rt));
    char *s = slurp(p);
    ASSERT_CONTAINS(s, "\"ring_events_max\":64");
    ASSERT(strstr(s, "\"dropped_events\":0,") == NULL);
    free(s);
    t_finalize(rt);
}

/* A pipe whose reader is gone: stop reports the write error (EPIPE) as a
   status; the process is not killed by SIGPIPE, and no SIGPIPE is left
   pending for the host. */
TEST(pipe_without_a_reader_is_a_status_not_sigpipe)
{
    signal(SIGPIPE, SIG_DFL);
    tether_runtime rt = t_runtime(NULL);
    int pfd[2];
    ASSERT(pipe(pfd) == 0);
    ASSERT_OK(tether_trace_start(rt, NULL, pfd[1], 0));
    close(pfd[1]);
    close(pfd[0]);
    ASSERT_OK(tether_sleep(1000000));
    ASSERT_FAILS(tether_trace_stop(rt), TETHER_EINVAL, "tether_trace_stop");
    ASSERT_CONTAINS(tether_last_error(), "the trace is lost");
    sigset_t pending;
    ASSERT(sigpending(&pending) == 0);
    ASSERT(!sigismember(&pending, SIGPIPE));
    /* The recording stopped all the same. */
    ASSERT_FAILS(tether_trace_stop(rt), TETHER_ESTATE, "tether_trace_stop");
    t_finalize(rt);
}

/* A full disk: the descriptor form and the path form of /dev/full both
   start, and stop says TETHER_EAGAIN. */
TEST(write_error_of_a_full_disk)
{
    tether_runtime rt = t_runtime(NULL);
    int fd = open("/dev/full", O_WRONLY);
    ASSERT(fd >= 0);
    ASSERT_OK(tether_trace_start(rt, NULL, fd, 0));
    close(fd);
    ASSERT_FAILS(tether_trace_stop(rt), TETHER_EAGAIN, "tether_trace_stop");
    ASSERT_CONTAINS(tether_last_error(), "the descriptor");
    /* A path that is a device: nothing to truncate, it must start. */
    ASSERT_OK(tether_trace_start(rt, "/dev/full", -1, 0));
    ASSERT_FAILS(tether_trace_stop(rt), TETHER_EAGAIN, "tether_trace_stop");
    ASSERT_CONTAINS(tether_last_error(), "/dev/full");
    t_finalize(rt);
}

/* A descriptor not open for writing is refused at start, not found out at
   stop when the trace is lost. */
TEST(read_only_descriptor_is_refused_at_start)
{
    tether_runtime rt = t_runtime(NULL);
    const char *p = tmp_path("ro.json");
    int w = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT(w >= 0);
    close(w);
    int fd = open(p, O_RDONLY);
    ASSERT(fd >= 0);
    ASSERT_FAILS(tether_trace_start(rt, NULL, fd, 0), TETHER_EINVAL,
                 "tether_trace_start");
    ASSERT_CONTAINS(tether_last_error(), "not open for writing");
    close(fd);
    ASSERT_FAILS(tether_trace_stop(rt), TETHER_ESTATE, "tether_trace_stop");
    t_finalize(rt);
}

/* No descriptor left: TETHER_EAGAIN, as tether.h says, for both forms. */
TEST(no_descriptor_left_is_eagain)
{
    tether_runtime rt = t_runtime(NULL);
    struct rlimit old, low;
    ASSERT(getrlimit(RLIMIT_NOFILE, &old) == 0);
    int fds[64], n = 0;
    low = old;
    low.rlim_cur = 64;
    ASSERT(setrlimit(RLIMIT_NOFILE, &low) == 0);
    int fd;
    while (n < 64 && (fd = open("/dev/null", O_WRONLY)) >= 0)
        fds[n++] = fd;
    ASSERT(n < 64 || open("/dev/null", O_WRONLY) < 0);
    int a = tether_trace_start(rt, tmp_path("emfile.json"), -1, 0);
    char msg_a[256];
    snprintf(msg_a, sizeof msg_a, "%s", tether_last_error());
    int b = n ? tether_trace_start(rt, NULL, fds[0], 0) : TETHER_EAGAIN;
    while (n)
        close(fds[--n]);
    ASSERT(setrlimit(RLIMIT_NOFILE, &old) == 0);
    ASSERT_STATUS(a, TETHER_EAGAIN);
    ASSERT_CONTAINS(msg_a, "tether_trace_start");
    ASSERT_STATUS(b, TETHER_EAGAIN);
    ASSERT_FAILS(tether_trace_stop(rt), TETHER_ESTATE, "tether_trace_stop");
    t_finalize(rt);
}

/* Many threads start a trace into one path at once: exactly one wins, and
   the refused ones never remove the winner's file. */
enum { RACERS = 8 };
struct race {
    tether_runtime rt;
    const char *path;
    pthread_barrier_t go;
    atomic_int wins;
};

static void *racer(void *arg)
{
    struct race *r = arg;
    pthread_barrier_wait(&r->go);
    int rc = tether_trace_start(r->rt, r->path, -1, 0);
    if (rc == TETHER_OK)
        atomic_fetch_add(&r->wins, 1);
    else if (rc != TETHER_ESTATE)
        fprintf(stderr, "racer: %s\n", tether_last_error());
    return NULL;
}

TEST(concurrent_starts_into_one_path)
{
    struct race r = {.rt = t_runtime(NULL)};
    char p[128];
    snprintf(p, sizeof p, "%s", tmp_path("race.json"));
    r.path = p;
    for (int round = 0; round < 100; round++) {
        unlink(p);
        atomic_store(&r.wins, 0);
        pthread_barrier_init(&r.go, NULL, RACERS);
        pthread_t th[RACERS];
        for (int i = 0; i < RACERS; i++)
            th[i] = t_pthread(racer, &r);
        for (int i = 0; i < RACERS; i++)
            t_pthread_join(th[i]);
        pthread_barrier_destroy(&r.go);
        ASSERT_EQ(atomic_load(&r.wins), 1);
        ASSERT(file_exists(p));
        ASSERT_OK(tether_trace_stop(r.rt));
        char *s = slurp(p);
        ASSERT_CONTAINS(s, "\"traceEvents\"");
        free(s);
    }
    t_finalize(r.rt);
}

/* Thread names are cut to fit a track name; the cut never splits a UTF-8
   character, and bytes that are not UTF-8 are replaced: the file stays
   JSON (RFC 8259 wants UTF-8). */
static int valid_utf8(const unsigned char *s)
{
    while (*s) {
        int n = *s < 0x80 ? 0 : (*s & 0xe0) == 0xc0 ? 1 : (*s & 0xf0) == 0xe0 ? 2
              : (*s & 0xf8) == 0xf0 ? 3 : -1;
        if (n < 0 || (n == 1 && *s < 0xc2))
            return 0;
        s++;
        for (int i = 0; i < n; i++, s++)
            if ((*s & 0xc0) != 0x80)
                return 0;
    }
    return 1;
}

static int quick(void *arg)
{
    (void)arg;
    return tether_sleep(100000);
}

TEST(names_stay_utf8)
{
    tether_interp interp;
    tether_runtime rt = t_runtime_main(NULL, &interp);
    const char *p = tmp_path("utf8.json");
    ASSERT_OK(tether_trace_start(rt, p, -1, 0));
    char name[128] = "";
    for (int i = 0; i < 40; i++)
        strcat(name, "\xc3\xa9"); /* é: 80 bytes, more than a track keeps */
    tether_thread_opts o = {sizeof o, name, 0, 0};
    ASSERT_EQ(t_join(t_start_opts(interp, quick, NULL, &o)), TETHER_OK);
    o.name = "bad \xff\xfe byte";
    ASSERT_EQ(t_join(t_start_opts(interp, quick, NULL, &o)), TETHER_OK);
    ASSERT_OK(tether_trace_stop(rt));
    char *s = slurp(p);
    ASSERT(valid_utf8((const unsigned char *)s));
    ASSERT_CONTAINS(s, "\xc3\xa9\xc3\xa9\xc3\xa9");
    ASSERT_CONTAINS(s, "bad \\ufffd\\ufffd byte");
    free(s);
    t_finalize(rt);
}

/* A start that races with finalize of its runtime either is refused
   (TETHER_EFINALIZING, TETHER_EBADHANDLE) or is written by that finalize:
   no trace is left recording a finalized runtime. */
struct fin_race {
    tether_runtime rt;
    const char *path;
    pthread_barrier_t go;
    int rc;
};

static void *fin_starter(void *arg)
{
    struct fin_race *f = arg;
    pthread_barrier_wait(&f->go);
    f->rc = tether_trace_start(f->rt, f->path, -1, 0);
    return NULL;
}

TEST(start_racing_finalize_leaves_no_trace)
{
    char p[128];
    snprintf(p, sizeof p, "%s", tmp_path("finrace.json"));
    for (int round = 0; round < 300; round++) {
        struct fin_race f = {.rt = t_runtime(NULL), .path = p};
        pthread_barrier_init(&f.go, NULL, 2);
        pthread_t th = t_pthread(fin_starter, &f);
        pthread_barrier_wait(&f.go);
        t_finalize(f.rt);
        t_pthread_join(th);
        pthread_barrier_destroy(&f.go);
        ASSERT(f.rc == TETHER_OK || f.rc == TETHER_EFINALIZING ||
               f.rc == TETHER_EBADHANDLE);
        tether_runtime probe = t_runtime(NULL);
        int rc = tether_trace_start(probe, p, -1, 0);
        if (rc != TETHER_OK)
            fprintf(stderr, "round %d: %s\n", round, tether_last_error());
        ASSERT_OK(rc);
        ASSERT_OK(tether_trace_stop(probe));
        t_finalize(probe);
    }
}

/* The events of threads that live on after a stop are freed by the stop:
   an idle thread that never records again does not keep its ring's
   events (up to 2 MiB each) for the life of the process. */
enum { IDLERS = 8 };

static size_t heap_in_use(void) /* blocks, and the big ones mapped alone */
{
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

struct idle {
    tether_interp interp;
    t_sem recorded, done;
};

static void *idler(void *arg)
{
    struct idle *d = arg;
    for (int i = 0; i < 3000; i++) { /* 6000 events: a ring of 8192 */
        tether_gilstate st;
        ASSERT_OK(tether_ensure(d->interp, &st));
        ASSERT_OK(tether_release(st));
    }
    t_sem_post(&d->recorded);
    t_sem_wait(&d->done); /* idle, alive, past the stop */
    return NULL;
}

TEST(stop_frees_the_events_of_live_threads)
{
    mallopt(M_ARENA_MAX, 1); /* every thread's blocks in mallinfo2's arena */
    struct idle d;
    tether_runtime rt = t_runtime_main(NULL, &d.interp);
    t_sem_init(&d.recorded);
    t_sem_init(&d.done);
    int fd = open("/dev/null", O_WRONLY);
    ASSERT(fd >= 0);
    tether_tstate saved;
    ASSERT_OK(tether_save_thread(&saved));
    size_t before = heap_in_use();
    ASSERT_OK(tether_trace_start(rt, NULL, fd, 0));
    close(fd);
    pthread_t th[IDLERS];
    for (int i = 0; i < IDLERS; i++)
        th[i] = t_pthread(idler, &d);
    for (int i = 0; i < IDLERS; i++)
        t_sem_wait(&d.recorded);
    size_t during = heap_in_use();
    ASSERT_OK(tether_trace_stop(rt));
    size_t after = heap_in_use();
    for (int i = 0; i < IDLERS; i++)
        t_sem_post(&d.done);
    for (int i = 0; i < IDLERS; i++)
        t_pthread_join(th[i]);
    ASSERT_OK(tether_restore_thread(saved));
    fprintf(stderr, "heap in use: %zu before, %zu recording, %zu after stop\n",
            before, during, after);
    /* 8 rings of 8192 events are 2 MiB; what stays is their heads. */
    if (during > before + (1u << 20)) /* mallinfo2 sees the heap (not ASan) */
        ASSERT(after < before + (256u << 10));
    t_sem_destroy(&d.recorded);
    t_sem_destroy(&d.done);
    t_finalize(rt);
}

/* TETHER_TRACE_EVENTS out of its range is brought into it (64 to 2^24),
   not silently replaced by the default; one that is not a number keeps
   the default with a message on stderr. */
static char *events_max_with(const char *value)
{
    setenv("TETHER_TRACE_EVENTS", value, 1);
    tether_runtime rt = t_runtime(NULL);
    const char *p = tmp_path("envmax.json");
    ASSERT_OK(tether_trace_start(rt, p, -1, 0));
    unsetenv("TETHER_TRACE_EVENTS");
    ASSERT_OK(tether_trace_stop(rt));
    t_finalize(rt);
    return slurp(p);
}

TEST(ring_size_from_the_environment)
{
    char *s = events_max_with("10");
    ASSERT_CONTAINS(s, "\"ring_events_max\":64,");
    free(s);
    s = events_max_with("4000000000");
    ASSERT_CONTAINS(s, "\"ring_events_max\":16777216,");
    free(s);
    s = events_max_with("1000");
    ASSERT_CONTAINS(s, "\"ring_events_max\":1000,");
    free(s);
    s = events_max_with("lots");
    ASSERT_CONTAINS(s, "\"ring_events_max\":65536,");
    free(s);
}

RUNNER_MAIN(TEST_ENTRY(bad_input_changes_nothing),
            TEST_ENTRY(one_trace_at_a_time),
            TEST_ENTRY(stop_writes_the_timeline),
            TEST_ENTRY(descriptor_is_duplicated),
            TEST_ENTRY(finalize_writes_the_trace),
            TEST_ENTRY(environment_variable),
            TEST_ENTRY(full_ring_counts_dropped_events),
            TEST_ENTRY(pipe_without_a_reader_is_a_status_not_sigpipe),
            TEST_ENTRY(write_error_of_a_full_disk),
            TEST_ENTRY(read_only_descriptor_is_refused_at_start),
            TEST_ENTRY(no_descriptor_left_is_eagain),
            TEST_ENTRY(concurrent_starts_into_one_path),
            TEST_ENTRY(names_stay_utf8),
            TEST_ENTRY(start_racing_finalize_leaves_no_trace),
            TEST_ENTRY(stop_frees_the_events_of_live_threads),
            TEST_ENTRY(ring_size_from_the_environment))
