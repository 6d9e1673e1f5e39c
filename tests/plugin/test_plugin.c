/*
 * test_plugin.c - the plugin loader: the sample plugins at work, every way a
 * load is refused, version skew in both directions, reference counts, and
 * unload safety (label "plugin").
 *
 * Whether a library is still mapped is read with dlopen(RTLD_NOLOAD), which
 * finds a loaded library without loading it.
 */
#include <dlfcn.h>
#include <sched.h>
#include <signal.h>
#include <limits.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <tether/tether_plugin.h>

#include "support.h"

#define FIXTURE(name) FIXTURE_DIR "/fx_" name ".so"

/* 1 if the library at `path` is mapped in this process. */
static int is_mapped(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (h)
        dlclose(h);
    return h != NULL;
}

static tether_plugin load(tether_runtime rt, const char *path)
{
    tether_plugin p = 0;
    ASSERT_OK(tether_plugin_load(rt, path, &p));
    ASSERT(p != 0);
    return p;
}

/* Sets `var`, a function pointer, to the plugin's symbol `name`. */
#define LOOKUP(var, p, name)                                                  \
    do {                                                                      \
        void *sym_ = NULL;                                                    \
        ASSERT_OK(tether_plugin_symbol((p), (name), &sym_));                  \
        ASSERT(sym_ != NULL);                                                 \
        memcpy(&(var), &sym_, sizeof(var));                                   \
    } while (0)

/* Sleeps with the GIL released until *flag is nonzero. */
static void await_flag(atomic_int *flag)
{
    while (!atomic_load(flag))
        ASSERT_OK(tether_sleep(MS(1)));
}

/* The sample plugins' exports. */
typedef void (*tick_fn)(void *ud, int32_t thread, int32_t tick);
typedef int32_t (*ticker_start_fn)(tick_fn, void *, int32_t, int32_t, int32_t);
typedef int32_t (*ticker_wait_fn)(int64_t timeout_ms);
typedef int64_t (*ticker_delivered_fn)(void);

struct ticker {
    ticker_start_fn start;
    ticker_wait_fn wait;
    ticker_delivered_fn delivered;
};

static struct ticker ticker_api(tether_plugin p)
{
    struct ticker t;
    LOOKUP(t.start, p, "ticker_start");
    LOOKUP(t.wait, p, "ticker_wait");
    LOOKUP(t.delivered, p, "ticker_delivered");
    return t;
}

/* ------------------------------------------------------------------------
 * ticker: native threads calling back into guest code
 * ---------------------------------------------------------------------- */

static int64_t g_ticks; /* not atomic: only touched holding the GIL */

static void count_tick(void *ud, int32_t thread, int32_t tick)
{
    (void)ud, (void)thread, (void)tick;
    ASSERT(tether_gil_held());
    g_ticks++;
}

TEST(ticker_native_threads_count_exactly)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, TICKER_PATH);
    const char *name = NULL, *version = NULL;
    ASSERT_OK(tether_plugin_info(p, &name, &version));
    ASSERT_STREQ(name, "ticker");
    ASSERT_STREQ(version, "1.0.0");
    struct ticker t = ticker_api(p);

    ASSERT_OK(t.start(count_tick, NULL, 8, 1000, 0));
    ASSERT_OK(t.wait(-1)); /* releases the GIL while the workers run */
    ASSERT_EQ(g_ticks, 8 * 1000);
    ASSERT_EQ(t.delivered(), 8 * 1000);

    ASSERT_OK(tether_plugin_unload(p, -1));
    ASSERT(!is_mapped(TICKER_PATH)); /* ticker is unloadable */
    t_finalize(rt);
}

/* The guest side of a "void(ptr,i32,i32)" callback handed to ticker. */
static int guest_tick(void **args, void *ret, void *userdata)
{
    (void)ret;
    int64_t *sum = userdata;
    *sum += *(int32_t *)args[2] + 1;
    return TETHER_OK;
}

TEST(ticker_calls_a_callback_through_ffi_call)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, TICKER_PATH);
    int64_t sum = 0; /* only touched holding the GIL */
    tether_callback cb;
    ASSERT_OK(tether_callback_new(t_main_interp(rt), "void(ptr,i32,i32)",
                                  guest_tick, &sum, &cb));

    void *start = NULL, *wait = NULL, *code = tether_callback_code(cb);
    ASSERT_OK(tether_plugin_symbol(p, "ticker_start", &start));
    ASSERT_OK(tether_plugin_symbol(p, "ticker_wait", &wait));
    void *ud = NULL;
    int32_t nthreads = 4, ticks = 50, interval = 0, rc = -99;
    void *start_args[] = {&code, &ud, &nthreads, &ticks, &interval};
    ASSERT_OK(tether_ffi_call(start, "i32(ptr,ptr,i32,i32,i32)", start_args, &rc));
    ASSERT_OK(rc);
    int64_t forever = -1;
    void *wait_args[] = {&forever};
    ASSERT_OK(tether_ffi_call(wait, "i32(i64)", wait_args, &rc));
    ASSERT_OK(rc);
    ASSERT_EQ(sum, 4 * (50 * 51 / 2)); /* each thread: ticks 0..49, plus one */

    ASSERT_OK(tether_callback_free(cb));
    ASSERT_OK(tether_plugin_unload(p, -1));
    t_finalize(rt);
}

static atomic_long g_async_ticks;

static void atomic_tick(void *ud, int32_t thread, int32_t tick)
{
    (void)ud, (void)thread, (void)tick;
    atomic_fetch_add(&g_async_ticks, 1);
}

TEST(unload_stops_ticker_threads_that_still_call_back)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, TICKER_PATH);
    struct ticker t = ticker_api(p);
    ASSERT_OK(t.start(atomic_tick, NULL, 4, 1000000, 100)); /* for ever */
    while (atomic_load(&g_async_ticks) < 100)
        ASSERT_OK(tether_sleep(MS(1)));

    /* fini stops and joins the threads; unload waits for it. */
    ASSERT_OK(tether_plugin_unload(p, -1));
    ASSERT(!is_mapped(TICKER_PATH));
    long after = atomic_load(&g_async_ticks);
    ASSERT_OK(tether_sleep(MS(20)));
    ASSERT_EQ(atomic_load(&g_async_ticks), after); /* no thread is left */
    t_finalize(rt);
}

static atomic_int g_final_seen;

/* Keeps the GIL busy until finalize makes the checkpoint fail. */
static void busy_tick(void *ud, int32_t thread, int32_t tick)
{
    (void)ud, (void)thread, (void)tick;
    atomic_fetch_add(&g_async_ticks, 1);
    for (int i = 0; i < 1000; i++)
        if (tether_checkpoint() == TETHER_EFINALIZING) {
            atomic_fetch_add(&g_final_seen, 1);
            return; /* detached now: must not touch guest state */
        }
}

TEST(finalize_while_native_threads_are_mid_callback)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, TICKER_PATH);
    struct ticker t = ticker_api(p);
    ASSERT_OK(t.start(busy_tick, NULL, 4, 1000000, 0));
    while (atomic_load(&g_async_ticks) < 50)
        ASSERT_OK(tether_sleep(MS(1)));

    /* Every worker's next ensure fails, so the run ends by itself; then
       finalize unloads the plugin: its fini joins the workers, and it is
       unmapped (ticker is unloadable). */
    int rc = tether_runtime_finalize(rt, SECONDS(10));
    ASSERT(rc == TETHER_OK || rc == TETHER_ETIMEDOUT);
    long after = atomic_load(&g_async_ticks);
    ASSERT(after < 4L * 1000000);
    ASSERT_STATUS(tether_plugin_info(p, NULL, NULL), TETHER_EBADHANDLE);
    ASSERT_STATUS(tether_plugin_unload(p, -1), TETHER_EBADHANDLE);
    ASSERT_EQ(atomic_load(&g_async_ticks), after);
    ASSERT(!is_mapped(TICKER_PATH));
}

/* ------------------------------------------------------------------------
 * pool: a directly linked plugin; blockio: interruptible blocking reads
 * ---------------------------------------------------------------------- */

static int g_jobs_run; /* only touched holding the GIL */

static int32_t job_times_ten(void *ud)
{
    ASSERT(tether_gil_held());
    g_jobs_run++;
    return *(int *)ud * 10;
}

TEST(pool_runs_guest_jobs_on_its_workers)
{
    typedef void *(*submit_fn)(int32_t (*)(void *), void *, int32_t);
    typedef int32_t (*wait_fn)(void *, int64_t, int32_t *);
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, POOL_PATH);
    submit_fn submit;
    wait_fn wait;
    LOOKUP(submit, p, "pool_submit");
    LOOKUP(wait, p, "pool_wait");

    int values[16];
    void *tickets[16];
    for (int i = 0; i < 16; i++) {
        values[i] = i;
        ASSERT((tickets[i] = submit(job_times_ten, &values[i], 1000)) != NULL);
    }
    for (int i = 0; i < 16; i++) {
        int32_t r = -1;
        ASSERT_OK(wait(tickets[i], -1, &r));
        ASSERT_EQ(r, i * 10);
    }
    ASSERT_EQ(g_jobs_run, 16);

    /* The job's guest part needs the GIL, which this thread keeps while it
       tries once: the wait must time out, and the ticket stays valid. */
    void *late = submit(job_times_ten, &values[3], 0);
    int32_t r = -1;
    ASSERT_STATUS(wait(late, 0, &r), TETHER_ETIMEDOUT);
    ASSERT_OK(wait(late, 5000, &r));
    ASSERT_EQ(r, 30);

    ASSERT_OK(tether_plugin_unload(p, -1));
    ASSERT(is_mapped(POOL_PATH)); /* not unloadable: stays mapped */
    t_finalize(rt);
}

typedef int32_t (*blockio_read_fn)(int32_t, void *, int32_t, int32_t *);

TEST(blockio_reads_what_was_written)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, BLOCKIO_PATH);
    blockio_read_fn read_fn;
    int32_t (*pipe_fn)(int32_t *);
    int32_t (*write_fn)(int32_t, const void *, int32_t);
    LOOKUP(read_fn, p, "blockio_read");
    LOOKUP(pipe_fn, p, "blockio_pipe");
    LOOKUP(write_fn, p, "blockio_write");
    int32_t fds[2];
    ASSERT_OK(pipe_fn(fds));
    ASSERT_EQ(write_fn(fds[1], "hello", 5), 5);
    char buf[16] = {0};
    int32_t n = -1;
    ASSERT_OK(read_fn(fds[0], buf, sizeof buf, &n));
    ASSERT_EQ(n, 5);
    ASSERT_STREQ(buf, "hello");
    close(fds[0]);
    close(fds[1]);
    ASSERT_OK(tether_plugin_unload(p, -1));
    t_finalize(rt);
}

struct reader {
    blockio_read_fn read;
    int fd;
    atomic_int started;
    int rc;
    int64_t code;
    t_sem done;
};

static int reader_thread(void *arg)
{
    struct reader *r = arg;
    char buf[8];
    int32_t n;
    atomic_store(&r->started, 1);
    r->rc = r->read(r->fd, buf, sizeof buf, &n);
    if (r->rc == TETHER_EASYNC)
        ASSERT_OK(tether_async_fetch(&r->code, NULL, NULL));
    t_sem_post(&r->done); /* no tether call after finalize */
    return TETHER_OK;
}

/* Starts a thread blocked reading an empty pipe; returns blockio. */
static tether_plugin start_reader(tether_runtime rt, struct reader *r,
                                  int fds[2], tether_thread *t, int daemon)
{
    tether_plugin p = load(rt, BLOCKIO_PATH);
    LOOKUP(r->read, p, "blockio_read");
    ASSERT_EQ(pipe(fds), 0);
    r->fd = fds[0];
    t_sem_init(&r->done);
    *t = daemon ? t_start_daemon(t_main_interp(rt), reader_thread, r)
                : t_start(t_main_interp(rt), reader_thread, r);
    await_flag(&r->started);
    ASSERT_OK(tether_sleep(MS(20))); /* most likely blocked in poll by now */
    return p;
}

TEST(blockio_read_is_interrupted_by_an_async_exception)
{
    tether_runtime rt = t_runtime(NULL);
    struct reader r = {0};
    int fds[2];
    tether_thread t;
    tether_plugin p = start_reader(rt, &r, fds, &t, 0);
    ASSERT_OK(tether_thread_raise(t, 42, NULL, NULL));
    ASSERT_OK(t_join(t));
    ASSERT_STATUS(r.rc, TETHER_EASYNC);
    ASSERT_EQ(r.code, 42);
    close(fds[0]);
    close(fds[1]);
    ASSERT_OK(tether_plugin_unload(p, -1));
    t_finalize(rt);
}

TEST(blockio_read_is_interrupted_by_finalize)
{
    tether_runtime rt = t_runtime(NULL);
    struct reader r = {0};
    int fds[2];
    tether_thread t;
    tether_plugin p = start_reader(rt, &r, fds, &t, 1);
    ASSERT_OK(tether_thread_release(t));
    ASSERT_OK(tether_runtime_finalize(rt, SECONDS(10)));
    t_sem_wait(&r.done);
    ASSERT_STATUS(r.rc, TETHER_EFINALIZING);
    /* finalize unloaded the plugin with its runtime */
    ASSERT_STATUS(tether_plugin_unload(p, -1), TETHER_EBADHANDLE);
}

/* ------------------------------------------------------------------------
 * Refused loads: each has its own status and sentence, and leaves nothing
 * loaded
 * ---------------------------------------------------------------------- */

/* `also` (may be NULL) is a second fragment the sentence must contain. */
static void expect_refused(const char *path, int status, const char *fragment,
                           const char *also)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = 12345;
    ASSERT_STATUS(tether_plugin_load(rt, path, &p), status);
    ASSERT_EQ(p, 12345); /* out is written only on success */
    ASSERT_CONTAINS(tether_last_error(), "tether_plugin_load: ");
    ASSERT_CONTAINS(tether_last_error(), path);
    ASSERT_CONTAINS(tether_last_error(), fragment);
    if (also)
        ASSERT_CONTAINS(tether_last_error(), also);
    ASSERT(!is_mapped(path));
    t_finalize(rt);
}

TEST(refuses_a_plugin_whose_init_fails)
{
    /* A failed init is unloaded by an unload's rules: a plugin that is not
       unloadable stays mapped for ever, since whatever init started may
       still run its code. */
    tether_runtime rt = t_runtime(NULL);
    const char *path = FIXTURE("failing_init");
    tether_plugin p = 12345;
    ASSERT_STATUS(tether_plugin_load(rt, path, &p), TETHER_EPLUGIN);
    ASSERT_EQ(p, 12345);
    ASSERT_CONTAINS(tether_last_error(), "the init of plugin 'failing_init' (");
    ASSERT_CONTAINS(tether_last_error(), ") failed with EINVAL (-1)");
    /* the failed host call's sentence is kept (issue 14 P7) */
    ASSERT_CONTAINS(tether_last_error(), ": tether_event_new: ");
    ASSERT(is_mapped(path));
    t_finalize(rt);
}

TEST(init_says_why_it_failed_with_set_error)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p;
    ASSERT_STATUS(tether_plugin_load(rt, FIXTURE("init_set_error"), &p),
                  TETHER_EPLUGIN);
    ASSERT_CONTAINS(tether_last_error(),
                    ") failed with ENOMEM (-3): the device is busy");
    t_finalize(rt);
}

TEST(set_error_cuts_at_a_character_boundary)
{
    char msg[1001];
    for (int i = 0; i < 1000; i += 2) /* 500 times U+00E9, 2 bytes each */
        msg[i] = (char)0xC3, msg[i + 1] = (char)0xA9;
    msg[1000] = '\0';
    ASSERT_EQ(tether_set_error(TETHER_EPLUGIN, msg), TETHER_EPLUGIN);
    size_t n = strlen(tether_last_error());
    ASSERT(n > 400 && n < 1000);
    ASSERT_EQ(n % 2, 0); /* whole characters only */
    ASSERT_EQ(tether_set_error(TETHER_EINVAL, "short"), TETHER_EINVAL);
    ASSERT_STREQ(tether_last_error(), "short");
    ASSERT_STATUS(tether_set_error(TETHER_OK, NULL), TETHER_EINVAL);
    ASSERT_CONTAINS(tether_last_error(), "tether_set_error: message must not");
}

TEST(refuses_a_missing_file)
{
    expect_refused("/nonexistent/plugin.so", TETHER_EPLUGIN,
                   "cannot open plugin '/nonexistent/plugin.so': No such file", NULL);
}

TEST(refuses_a_file_that_is_not_a_shared_object)
{
    expect_refused(NOT_A_PLUGIN, TETHER_EPLUGIN, "is not a loadable shared object: ", NULL);
}

TEST(refuses_a_library_without_an_entry)
{
    expect_refused(FIXTURE("no_entry"), TETHER_EPLUGIN,
                   "has no tether_plugin_entry, so it is not a tether plugin", NULL);
}

TEST(refuses_an_entry_returning_null)
{
    expect_refused(FIXTURE("null_desc"), TETHER_EPLUGIN,
                   "returned NULL: the plugin refused host ABI", NULL);
}

TEST(refuses_a_descriptor_too_small_for_its_version)
{
    expect_refused(FIXTURE("tiny_desc"), TETHER_EPLUGIN,
                   "is 4 bytes, too small to hold even its ABI version", NULL);
}

TEST(refuses_an_undersized_descriptor)
{
    char want[128];
    snprintf(want, sizeof want, "is %zu bytes, smaller than the %zu of tether "
             "ABI 1.0", offsetof(tether_plugin_desc, init),
             sizeof(tether_plugin_desc));
    expect_refused(FIXTURE("small_desc"), TETHER_EPLUGIN, want, NULL);
}

TEST(refuses_another_major_version)
{
    char want[128];
    snprintf(want, sizeof want, "needs tether ABI %d.0, but this host has ABI %d.%d "
             "(another major version)", TETHER_ABI_MAJOR + 1, TETHER_ABI_MAJOR,
             TETHER_ABI_MINOR);
    expect_refused(FIXTURE("wrong_major"), TETHER_EVERSION, want, NULL);
}

TEST(refuses_a_newer_minor_version)
{
    char want[128];
    snprintf(want, sizeof want, "needs tether ABI %d.%d, but this host has ABI %d.%d "
             "(a newer minor version)", TETHER_ABI_MAJOR, TETHER_ABI_MINOR + 1,
             TETHER_ABI_MAJOR, TETHER_ABI_MINOR);
    expect_refused(FIXTURE("newer_minor"), TETHER_EVERSION, want, NULL);
}

TEST(refuses_unknown_flags)
{
    expect_refused(FIXTURE("bad_flags"), TETHER_EPLUGIN, "has unknown flags 0x80", NULL);
}

TEST(refuses_a_descriptor_without_a_name)
{
    expect_refused(FIXTURE("no_name"), TETHER_EPLUGIN, "has no name", NULL);
}


/* ------------------------------------------------------------------------
 * Version skew in both directions
 * ---------------------------------------------------------------------- */

TEST(plugin_for_a_newer_host_degrades_with_api_has)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, FIXTURE("skew_newer"));
    int32_t (*mode)(void);
    LOOKUP(mode, p, "skew_mode");
    ASSERT_EQ(mode(), 1); /* fell back: this host has no future_call */
    ASSERT_OK(tether_plugin_unload(p, -1));
    t_finalize(rt);
}

TEST(debug_host_reports_a_missing_member_and_aborts)
{
#ifdef NDEBUG
    return; /* the pad slots exist in debug builds only */
#else
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        tether_runtime rt;
        tether_plugin p;
        void *sym;
        if (tether_runtime_create(NULL, &rt) != TETHER_OK ||
            tether_plugin_load(rt, FIXTURE("skew_newer"), &p) != TETHER_OK ||
            tether_plugin_symbol(p, "skew_call_unchecked", &sym) != TETHER_OK)
            _exit(1);
        int32_t (*call)(void);
        memcpy(&call, &sym, sizeof call);
        call(); /* reads the member past this host's table */
        _exit(2);
    }
    close(fds[1]);
    char *err = t_read_all(fds[0]);
    close(fds[0]);
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    ASSERT_CONTAINS(err, "this host has no such member");
    ASSERT_CONTAINS(err, "TETHER_API_HAS");
    free(err);
#endif
}

TEST(plugin_for_an_older_host_finds_its_members)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, FIXTURE("skew_older"));
    int32_t (*ok)(void);
    LOOKUP(ok, p, "skew_older_ok");
    ASSERT_EQ(ok(), 1);
    ASSERT_OK(tether_plugin_unload(p, -1));
    t_finalize(rt);
}

/* ------------------------------------------------------------------------
 * References and unload safety
 * ---------------------------------------------------------------------- */

TEST(loading_the_same_file_twice_counts_references)
{
    tether_runtime rt = t_runtime(NULL);
    /* The same file through another spelling of its path: dir/./file. */
    char other[PATH_MAX];
    const char *slash = strrchr(TICKER_PATH, '/');
    snprintf(other, sizeof other, "%.*s/.%s", (int)(slash - TICKER_PATH),
             TICKER_PATH, slash);
    tether_plugin a = load(rt, TICKER_PATH), b = load(rt, other);
    ASSERT_EQ(a, b);

    ASSERT_OK(tether_plugin_unload(a, -1));
    ASSERT(is_mapped(TICKER_PATH));
    struct ticker t = ticker_api(b); /* still loaded and usable */
    ASSERT_EQ(t.delivered(), 0);
    ASSERT_OK(tether_plugin_unload(b, -1));
    ASSERT(!is_mapped(TICKER_PATH));
    ASSERT_STATUS(tether_plugin_unload(a, -1), TETHER_EBADHANDLE);
    t_finalize(rt);
}

struct loader {
    tether_runtime rt;
    tether_plugin p;
    int rc;
};

static void *load_on_foreign_thread(void *arg)
{
    struct loader *l = arg;
    l->rc = tether_plugin_load(l->rt, FIXTURE("unloadable"), &l->p);
    return NULL;
}

TEST(concurrent_loads_share_one_init)
{
    tether_runtime rt = t_runtime(NULL);
    ASSERT_EQ(setenv("FX_INIT_SLEEP_MS", "30", 1), 0); /* loads meet init */
    struct loader l[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        l[i] = (struct loader){rt, 0, -99};
        th[i] = t_pthread(load_on_foreign_thread, &l[i]);
    }
    TETHER_BEGIN_ALLOW_THREADS
    for (int i = 0; i < 4; i++)
        t_pthread_join(th[i]);
    TETHER_END_ALLOW_THREADS
    for (int i = 0; i < 4; i++) {
        ASSERT_OK(l[i].rc);
        ASSERT_EQ(l[i].p, l[0].p);
    }
    int32_t (*inits)(void);
    LOOKUP(inits, l[0].p, "fx_inits");
    ASSERT_EQ(inits(), 1);
    for (int i = 0; i < 4; i++) {
        ASSERT(is_mapped(FIXTURE("unloadable")));
        ASSERT_OK(tether_plugin_unload(l[i].p, -1));
    }
    ASSERT(!is_mapped(FIXTURE("unloadable")));
    t_finalize(rt);
}

struct blocked_call {
    void *fn;
    atomic_int flags[2]; /* [0]: inside the plugin; [1]: may return */
    int rc;
    int32_t result;
};

static void *call_into_plugin(void *arg)
{
    struct blocked_call *b = arg;
    atomic_int *flags = b->flags;
    void *args[] = {&flags};
    b->rc = tether_ffi_call(b->fn, "i32(ptr)", args, &b->result);
    return NULL;
}

TEST(unload_times_out_while_a_call_is_in_progress)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, FIXTURE("unloadable"));
    struct blocked_call b = {0};
    ASSERT_OK(tether_plugin_symbol(p, "fx_block", &b.fn));
    pthread_t th = t_pthread(call_into_plugin, &b);
    await_flag(&b.flags[0]);

    ASSERT_STATUS(tether_plugin_unload(p, MS(50)), TETHER_ETIMEDOUT);
    ASSERT_CONTAINS(tether_last_error(), "calls into it were still in progress");
    /* Kept: loaded, usable, and the reference is still ours. */
    int32_t (*call_self)(int32_t);
    LOOKUP(call_self, p, "fx_call_self");
    ASSERT_EQ(call_self(21), 42);

    atomic_store(&b.flags[1], 1);
    t_pthread_join(th);
    ASSERT_OK(b.rc);
    ASSERT_EQ(b.result, 7);
    ASSERT_OK(tether_plugin_unload(p, -1));
    ASSERT(!is_mapped(FIXTURE("unloadable")));
    t_finalize(rt);
}

struct unloader {
    tether_plugin p;
    atomic_int *release_flag;
    int rc;
    int released_before_return;
};

static void *unload_on_foreign_thread(void *arg)
{
    struct unloader *u = arg;
    u->rc = tether_plugin_unload(u->p, -1);
    u->released_before_return = atomic_load(u->release_flag);
    return NULL;
}

TEST(unload_waits_for_a_call_in_progress)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, FIXTURE("unloadable"));
    struct blocked_call b = {0};
    ASSERT_OK(tether_plugin_symbol(p, "fx_block", &b.fn));
    pthread_t caller = t_pthread(call_into_plugin, &b);
    await_flag(&b.flags[0]);

    struct unloader u = {p, &b.flags[1], -99, 0};
    pthread_t unloader = t_pthread(unload_on_foreign_thread, &u);
    ASSERT_OK(tether_sleep(MS(20))); /* most likely waiting by now */
    atomic_store(&b.flags[1], 1);
    TETHER_BEGIN_ALLOW_THREADS
    t_pthread_join(caller);
    t_pthread_join(unloader);
    TETHER_END_ALLOW_THREADS
    ASSERT_OK(b.rc);
    ASSERT_OK(u.rc);
    ASSERT_EQ(u.released_before_return, 1);
    ASSERT(!is_mapped(FIXTURE("unloadable")));
    t_finalize(rt);
}

TEST(unload_keeps_a_plugin_mapped_while_a_callback_into_it_lives)
{
    tether_runtime rt = t_runtime(NULL);
    tether_interp interp = t_main_interp(rt);
    tether_plugin p = load(rt, FIXTURE("unloadable"));
    tether_guest_fn guest;
    LOOKUP(guest, p, "fx_guest");
    tether_callback cb;
    ASSERT_OK(tether_callback_new(interp, "i32(i32)", guest, NULL, &cb));
    int32_t (*code)(int32_t);
    void *c = tether_callback_code(cb);
    memcpy(&code, &c, sizeof code);
    ASSERT_EQ(code(5), 10);

    /* fini runs (and frees the plugin's own callback), then the wait for
       ours times out: finalized, but still mapped. */
    ASSERT_STATUS(tether_plugin_unload(p, MS(20)), TETHER_ETIMEDOUT);
    ASSERT_CONTAINS(tether_last_error(), "still alive after fini");
    ASSERT(is_mapped(FIXTURE("unloadable")));
    ASSERT_EQ(code(6), 12);
    void *sym;
    ASSERT_STATUS(tether_plugin_symbol(p, "fx_guest", &sym), TETHER_ESTATE);
    tether_callback late;
    ASSERT_STATUS(tether_callback_new(interp, "i32(i32)", guest, NULL, &late),
                  TETHER_ESTATE);

    ASSERT_OK(tether_callback_free(cb));
    ASSERT_OK(tether_plugin_unload(p, -1));
    ASSERT(!is_mapped(FIXTURE("unloadable")));
    t_finalize(rt);
}

TEST(unload_keeps_a_plugin_mapped_while_a_channel_discards_into_it)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, FIXTURE("unloadable"));
    tether_channel_discard_fn discard;
    LOOKUP(discard, p, "fx_discard");
    atomic_int discarded = 0;
    tether_channel ch, other;
    ASSERT_OK(tether_channel_new(0, &ch));
    ASSERT_OK(tether_channel_new(0, &other));
    ASSERT_OK(tether_channel_set_discard(ch, discard, &discarded));
    ASSERT_OK(tether_channel_send(ch, "x", 1, 0));

    /* The channel's discard pins the plugin: unloading times out, mapped. */
    ASSERT_STATUS(tether_plugin_unload(p, MS(20)), TETHER_ETIMEDOUT);
    ASSERT(is_mapped(FIXTURE("unloadable")));
    ASSERT_STATUS(tether_channel_set_discard(other, discard, &discarded),
                  TETHER_ESTATE);
    ASSERT_CONTAINS(tether_last_error(), "plugin being unloaded");

    ASSERT_OK(tether_channel_release(ch)); /* runs the discard, unpins */
    ASSERT_EQ(atomic_load(&discarded), 1);
    ASSERT_OK(tether_plugin_unload(p, -1));
    ASSERT(!is_mapped(FIXTURE("unloadable")));
    ASSERT_OK(tether_channel_release(other));
    t_finalize(rt);
}

/* ------------------------------------------------------------------------
 * Code that may still run is never unmapped (issue 14 P1, P2, P11; issue
 * 12 F4, F5)
 * ---------------------------------------------------------------------- */

/* Makes an event and names it in FX_EVENT for the init_thread fixtures. */
static tether_event fx_event(void)
{
    tether_event ev;
    ASSERT_OK(tether_event_new(&ev));
    char text[32];
    snprintf(text, sizeof text, "%llu", (unsigned long long)ev);
    ASSERT_EQ(setenv("FX_EVENT", text, 1), 0);
    return ev;
}

TEST(failed_init_keeps_an_unloadable_plugin_mapped_while_its_thread_runs)
{
    tether_runtime rt = t_runtime(NULL);
    tether_event ev = fx_event();
    const char *path = FIXTURE("init_thread");
    tether_plugin p = 12345;
    ASSERT_STATUS(tether_plugin_load(rt, path, &p), TETHER_EPLUGIN);
    ASSERT_EQ(p, 12345);
    /* The thread init started waits in the plugin's code: mapped. */
    ASSERT(is_mapped(path));
    ASSERT_OK(tether_event_set(ev));
    /* finalize joins the thread; then nothing runs the plugin's code and it
       is unmapped. */
    t_finalize(rt);
    ASSERT(!is_mapped(path));
    ASSERT_OK(tether_event_free(ev));
}

TEST(failed_init_keeps_a_default_plugin_mapped_for_its_plain_thread)
{
    tether_runtime rt = t_runtime(NULL);
    tether_event ev = fx_event();
    const char *path = FIXTURE("init_pthread");
    tether_plugin p;
    ASSERT_STATUS(tether_plugin_load(rt, path, &p), TETHER_EPLUGIN);
    ASSERT(is_mapped(path));
    ASSERT_OK(tether_event_set(ev));
    /* The thread returns through the plugin's code: it must still be
       there (it was unmapped at once, and this crashed). */
    void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    ASSERT(lib != NULL);
    int32_t (*returned)(void);
    void *sym = dlsym(lib, "fx_returned");
    ASSERT(sym != NULL);
    memcpy(&returned, &sym, sizeof returned);
    while (returned() == 0)
        ASSERT_OK(tether_sleep(MS(1)));
    ASSERT_OK(tether_sleep(MS(20))); /* let it leave the plugin's code */
    dlclose(lib);
    ASSERT(is_mapped(path)); /* not unloadable: mapped for ever */
    t_finalize(rt);
    ASSERT_OK(tether_event_free(ev));
}

TEST(unload_of_a_default_plugin_waits_for_a_call_in_progress)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, FIXTURE("default"));
    struct blocked_call b = {0};
    ASSERT_OK(tether_plugin_symbol(p, "fx_block", &b.fn));
    pthread_t th = t_pthread(call_into_plugin, &b);
    await_flag(&b.flags[0]);

    /* fini must not run under the call: it times out and stays loaded. */
    ASSERT_STATUS(tether_plugin_unload(p, MS(50)), TETHER_ETIMEDOUT);
    ASSERT_CONTAINS(tether_last_error(), "calls into it were still in progress");
    int32_t (*call_self)(int32_t);
    LOOKUP(call_self, p, "fx_call_self"); /* fini did not free its callback */
    ASSERT_EQ(call_self(21), 42);

    atomic_store(&b.flags[1], 1);
    t_pthread_join(th);
    ASSERT_OK(b.rc);
    ASSERT_OK(tether_plugin_unload(p, -1));
    t_finalize(rt);
}

static tether_plugin g_self_unload_p;
static int g_self_unload_rc = -99;

/* A guest function called from the plugin's code: unloads the plugin. */
static int unload_from_guest(void **args, void *ret, void *userdata)
{
    (void)userdata;
    g_self_unload_rc = tether_plugin_unload(g_self_unload_p, 0);
    *(int32_t *)ret = *(int32_t *)args[0] + 1;
    return TETHER_OK;
}

TEST(unload_from_the_plugins_own_code_is_refused)
{
    tether_runtime rt = t_runtime(NULL);
    tether_interp interp = t_main_interp(rt);
    tether_plugin p = g_self_unload_p = load(rt, FIXTURE("unloadable"));
    tether_callback cb;
    ASSERT_OK(tether_callback_new(interp, "i32(i32)", unload_from_guest, NULL,
                                  &cb));
    /* A direct call (the docs' host pattern): the plugin calls the
       callback, whose guest unloads the plugin.  It returned OK and the
       call returned into unmapped code. */
    int32_t (*call)(void *, int32_t);
    LOOKUP(call, p, "fx_call");
    ASSERT_EQ(call(tether_callback_code(cb), 4), 5);
    ASSERT_STATUS(g_self_unload_rc, TETHER_EDEADLK);
    ASSERT_CONTAINS(tether_last_error(), "running code of 'unloadable'");
    ASSERT(is_mapped(FIXTURE("unloadable")));
    ASSERT_OK(tether_callback_free(cb));
    ASSERT_OK(tether_plugin_unload(p, -1));
    ASSERT(!is_mapped(FIXTURE("unloadable")));
    t_finalize(rt);
}

struct cycler {
    tether_runtime rt;
    int rounds;
    int failures;
};

static void *load_unload_loop(void *arg)
{
    struct cycler *c = arg;
    for (int i = 0; i < c->rounds; i++) {
        tether_plugin p;
        int rc = tether_plugin_load(c->rt, FIXTURE("unloadable"), &p);
        if (rc != TETHER_OK) {
            c->failures++;
            continue;
        }
        /* Another thread's last unload may be running: ESTATE is allowed,
           and the reference then stays ours to drop again. */
        while ((rc = tether_plugin_unload(p, -1)) == TETHER_ESTATE)
            sched_yield();
        if (rc != TETHER_OK)
            c->failures++;
    }
    return NULL;
}

TEST(concurrent_loads_and_unloads_of_one_path)
{
    /* A slow fini widens the window in which a load takes back a record
       that another thread is unloading. */
    ASSERT_EQ(setenv("FX_FINI_SLEEP_MS", "1", 1), 0);
    tether_runtime rt = t_runtime(NULL);
    struct cycler c[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        c[i] = (struct cycler){rt, runner_rounds(200), 0};
        th[i] = t_pthread(load_unload_loop, &c[i]);
    }
    TETHER_BEGIN_ALLOW_THREADS /* init runs holding the main GIL */
    for (int i = 0; i < 4; i++)
        t_pthread_join(th[i]);
    TETHER_END_ALLOW_THREADS
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(c[i].failures, 0);
    ASSERT(!is_mapped(FIXTURE("unloadable")));
    t_finalize(rt);
    ASSERT_EQ(unsetenv("FX_FINI_SLEEP_MS"), 0);
}

/* ------------------------------------------------------------------------
 * Plugins and finalize (issue 14 P3, issue 12 F17)
 * ---------------------------------------------------------------------- */

struct other_runtime {
    tether_runtime rt;
    tether_plugin p;
};

/* Makes a runtime on a foreign thread, loads the fixture into it and
   detaches. */
static void *make_other_runtime(void *arg)
{
    struct other_runtime *o = arg;
    ASSERT_OK(tether_runtime_create(NULL, &o->rt));
    o->p = load(o->rt, FIXTURE("unloadable"));
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    return NULL;
}

TEST(finalize_unloads_the_plugins_of_its_runtime)
{
    struct other_runtime o;
    t_run_foreign(make_other_runtime, &o);
    tether_runtime rt = t_runtime(NULL), other = o.rt;
    tether_plugin p = load(rt, FIXTURE("unloadable"));
    ASSERT_EQ(load(rt, FIXTURE("unloadable")), p); /* two references */
    tether_plugin q = o.p;
    ASSERT(q != p);
    t_finalize(rt);
    /* fini ran (it frees the plugin's own callback, without which the
       library would stay mapped), the handle is stale, and the other
       runtime's load is untouched. */
    ASSERT_STATUS(tether_plugin_info(p, NULL, NULL), TETHER_EBADHANDLE);
    ASSERT_STATUS(tether_plugin_unload(p, -1), TETHER_EBADHANDLE);
    const char *name;
    ASSERT_OK(tether_plugin_info(q, &name, NULL));
    ASSERT_STREQ(name, "unloadable");
    ASSERT(is_mapped(FIXTURE("unloadable")));
    t_finalize(other);
    ASSERT_STATUS(tether_plugin_info(q, NULL, NULL), TETHER_EBADHANDLE);
    ASSERT(!is_mapped(FIXTURE("unloadable")));
}

static tether_runtime g_finalize_rt;

/* Called by the plugin's code (fx_call): finalizes the runtime. */
static int32_t finalize_from_plugin(int32_t x)
{
    return tether_runtime_finalize(g_finalize_rt, SECONDS(10)) == TETHER_OK
               ? x + 1 : -1;
}

TEST(finalize_from_the_plugins_own_code_keeps_it_mapped)
{
    tether_runtime rt = g_finalize_rt = t_runtime(NULL);
    tether_plugin p = load(rt, FIXTURE("unloadable"));
    int32_t (*call)(int32_t (*)(int32_t), int32_t);
    LOOKUP(call, p, "fx_call");
    /* finalize runs inside the plugin's fx_call: the plugin must not be
       finalized and unmapped under it (it returned into unmapped code). */
    ASSERT_EQ(call(finalize_from_plugin, 1), 2);
    ASSERT_STATUS(tether_plugin_info(p, NULL, NULL), TETHER_EBADHANDLE);
    ASSERT(is_mapped(FIXTURE("unloadable")));
}

TEST(debug_report_lists_plugins_never_unloaded)
{
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        setenv("TETHER_DEBUG", "1", 1);
        tether_runtime rt;
        tether_plugin p;
        if (tether_runtime_create(NULL, &rt) != TETHER_OK ||
            tether_plugin_load(rt, FIXTURE("unloadable"), &p) != TETHER_OK ||
            tether_runtime_finalize(rt, -1) != TETHER_OK)
            _exit(1);
        _exit(0);
    }
    close(fds[1]);
    char *err = t_read_all(fds[0]);
    close(fds[0]);
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ASSERT_CONTAINS(err, "TETHER_DEBUG: plugin handle 0x");
    ASSERT_CONTAINS(err, "\"unloadable\"");
    ASSERT_CONTAINS(err, "tether_runtime_finalize unloads it");
    free(err);
}

/* ------------------------------------------------------------------------
 * The plugin SDK of ABI 1.2 (issue 14 P2, P4, P5)
 * ---------------------------------------------------------------------- */

TEST(enter_holds_off_the_unload_of_a_direct_call)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, FIXTURE("default"));
    int32_t (*call_self)(int32_t);
    LOOKUP(call_self, p, "fx_call_self");
    /* The docs' host pattern: enter, call, leave. */
    ASSERT_OK(tether_plugin_enter(p));
    ASSERT_STATUS(tether_plugin_unload(p, MS(20)), TETHER_ETIMEDOUT);
    ASSERT_CONTAINS(tether_last_error(), "calls into it were still in progress");
    ASSERT_EQ(call_self(4), 8); /* fini did not run */
    ASSERT_OK(tether_plugin_leave(p));
    ASSERT_STATUS(tether_plugin_leave(p), TETHER_ESTATE);
    ASSERT_CONTAINS(tether_last_error(), "no tether_plugin_enter of 'default'");
    ASSERT_OK(tether_plugin_unload(p, -1));
    ASSERT_STATUS(tether_plugin_enter(p), TETHER_EBADHANDLE);
    ASSERT_STATUS(tether_plugin_leave(p), TETHER_EBADHANDLE);
    t_finalize(rt);
}

TEST(leave_works_after_finalize_abandoned_the_plugin)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, FIXTURE("unloadable"));
    ASSERT_OK(tether_plugin_enter(p));
    /* finalize cannot run fini under the open enter: at its deadline it
       abandons the plugin, mapped, and its handle is stale... */
    ASSERT_OK(tether_runtime_finalize(rt, MS(20)));
    ASSERT_STATUS(tether_plugin_info(p, NULL, NULL), TETHER_EBADHANDLE);
    ASSERT(is_mapped(FIXTURE("unloadable")));
    /* ...but the enter can still be left. */
    ASSERT_OK(tether_plugin_leave(p));
    int rc = tether_plugin_leave(p); /* nothing left open */
    ASSERT(rc == TETHER_ESTATE || rc == TETHER_EBADHANDLE);
}

struct instance_runtime {
    tether_runtime rt;
    tether_plugin p;
    void *state;
};

static void *load_in_own_runtime(void *arg)
{
    struct instance_runtime *o = arg;
    ASSERT_OK(tether_runtime_create(NULL, &o->rt));
    o->p = load(o->rt, FIXTURE("unloadable"));
    ASSERT_OK(tether_plugin_state(o->p, &o->state));
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    return NULL;
}

TEST(two_runtimes_get_two_instances_of_one_plugin)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, FIXTURE("unloadable"));
    void *state;
    ASSERT_OK(tether_plugin_state(p, &state));
    ASSERT(state != NULL);
    struct instance_runtime b;
    t_run_foreign(load_in_own_runtime, &b);
    ASSERT(b.p != p);
    ASSERT(b.state != state);
    int32_t (*call_instance)(void *, int32_t);
    LOOKUP(call_instance, p, "fx_call_instance");
    ASSERT_EQ(call_instance(state, 21), 42);
    /* B's unload runs B's fini only: A's instance still works. */
    ASSERT_OK(tether_plugin_unload(b.p, -1));
    ASSERT_EQ(call_instance(state, 5), 10);
    ASSERT_STATUS(tether_plugin_state(b.p, &state), TETHER_EBADHANDLE);
    ASSERT_STATUS(tether_plugin_state(p, NULL), TETHER_EINVAL);
    t_finalize(b.rt);
    t_finalize(rt);
    ASSERT(!is_mapped(FIXTURE("unloadable")));
}

TEST(host_table_allow_threads_macros_link_without_libtether)
{
    /* The fixture uses only the host table and links with -z defs: with
       the plain macros it did not link (issue 14 P6). */
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, FIXTURE("unloadable"));
    int32_t (*allow)(void);
    LOOKUP(allow, p, "fx_allow_threads");
    ASSERT_EQ(allow(), 1); /* released inside, held again after */
    TETHER_BEGIN_ALLOW_THREADS
    ASSERT_EQ(allow(), 0); /* a thread holding no GIL passes through */
    TETHER_END_ALLOW_THREADS
    ASSERT_OK(tether_plugin_unload(p, -1));
    t_finalize(rt);
}

static int plus_one(void **args, void *ret, void *userdata)
{
    (void)userdata;
    *(int32_t *)ret = *(int32_t *)args[0] + 1;
    return TETHER_OK;
}

TEST(a_retained_callback_outlives_the_hosts_free)
{
    tether_runtime rt = t_runtime(NULL);
    tether_callback cb;
    ASSERT_OK(tether_callback_new(t_main_interp(rt), "i32(i32)", plus_one,
                                  NULL, &cb));
    int32_t (*code)(int32_t);
    void *c = tether_callback_code(cb);
    memcpy(&code, &c, sizeof code);
    ASSERT_OK(tether_callback_retain(cb)); /* e.g. a plugin's worker */
    ASSERT_OK(tether_callback_free(cb));   /* the host lets go */
    ASSERT_EQ(code(1), 2);                 /* still valid, still runs fn */
    ASSERT(tether_callback_code(cb) == c);
    ASSERT_OK(tether_callback_release(cb)); /* the last owner frees it */
    ASSERT_STATUS(tether_callback_retain(cb), TETHER_EBADHANDLE);
    ASSERT_STATUS(tether_callback_release(cb), TETHER_EBADHANDLE);
    ASSERT_OK(tether_callback_release(0));
    t_finalize(rt);
}

TEST(load_survives_every_allocation_failure)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = 0;
    int rc;
    for (uint64_t n = 1;; n++) {
        ASSERT(n < 1000);
        ASSERT_OK(tether_fault_inject(TETHER_FAULT_ALLOC, n, 1));
        rc = tether_plugin_load(rt, FIXTURE("unloadable"), &p);
        ASSERT_OK(tether_fault_inject(TETHER_FAULT_ALLOC, 0, 0));
        if (rc == TETHER_OK)
            break;
        /* The failed allocation was the loader's, or init's own. */
        if (rc == TETHER_EPLUGIN)
            ASSERT_CONTAINS(tether_last_error(), "failed with ENOMEM");
        else
            ASSERT_STATUS(rc, TETHER_ENOMEM);
        ASSERT(!is_mapped(FIXTURE("unloadable")));
    }
    ASSERT_OK(tether_plugin_unload(p, -1));
    ASSERT(!is_mapped(FIXTURE("unloadable")));
    t_finalize(rt);
}

TEST(bad_arguments_get_errors)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = 0;
    ASSERT_STATUS(tether_plugin_load(rt, NULL, &p), TETHER_EINVAL);
    ASSERT_STATUS(tether_plugin_load(rt, TICKER_PATH, NULL), TETHER_EINVAL);
    ASSERT_STATUS(tether_plugin_load(0, TICKER_PATH, &p), TETHER_EBADHANDLE);
    ASSERT_STATUS(tether_plugin_unload(0, -1), TETHER_EBADHANDLE);
    ASSERT_STATUS(tether_plugin_info(0, NULL, NULL), TETHER_EBADHANDLE);
    void *sym;
    ASSERT_STATUS(tether_plugin_symbol(0, "x", &sym), TETHER_EBADHANDLE);

    p = load(rt, BLOCKIO_PATH);
    ASSERT_OK(tether_plugin_info(p, NULL, NULL));
    ASSERT_STATUS(tether_plugin_symbol(p, "nope", &sym), TETHER_EPLUGIN);
    ASSERT_CONTAINS(tether_last_error(), "plugin 'blockio' has no symbol 'nope'");
    ASSERT_STATUS(tether_plugin_symbol(p, NULL, &sym), TETHER_EINVAL);
    ASSERT_OK(tether_plugin_unload(p, -1));
    ASSERT_STATUS(tether_plugin_symbol(p, "blockio_read", &sym), TETHER_EBADHANDLE);
    t_finalize(rt);
    ASSERT_STATUS(tether_plugin_load(rt, TICKER_PATH, &p), TETHER_EBADHANDLE);
}

/* ------------------------------------------------------------------------
 * SDK review (issue 14, second pass): the fixture "hostile" does what
 * plugin authors get wrong.
 * ---------------------------------------------------------------------- */

typedef void (*fx_setup_fn)(tether_runtime, const char *,
                            void (*)(const char *, int), int);

/* What the fixture's fini and threads report (fx_setup's report_fn). */
static atomic_int g_fini_runs;
static int g_reported_rc = -99;
static char g_reported[1024];

static void hostile_report(const char *what, int status)
{
    if (strcmp(what, "fini") == 0) {
        atomic_fetch_add(&g_fini_runs, 1);
        return;
    }
    g_reported_rc = status;
    snprintf(g_reported, sizeof g_reported, "%s", what);
}

static void hostile_setup(tether_plugin p, tether_runtime rt,
                          const char *path, int load_in_fini)
{
    fx_setup_fn setup;
    LOOKUP(setup, p, "fx_setup");
    atomic_store(&g_fini_runs, 0);
    g_reported_rc = -99;
    g_reported[0] = '\0';
    setup(rt, path, hostile_report, load_in_fini);
}

/* A plugin's fini runs on the thread that finalizes its runtime, and that
   thread, attached to another runtime, is detached from it meanwhile
   (tether_runtime_finalize lets go of its GIL).  A fini that finalizes the
   caller's own runtime freed the caller's state there, which finalize then
   attached again (heap-use-after-free in take_back under asan-ubsan, a
   SIGSEGV in dev).  Now the state is kept while finalize waits, and the
   call answers TETHER_EFINALIZING with the caller detached. */
static tether_runtime g_callers_rt;
static int g_fini_finalize_rc = -99;

static void finalize_callers_rt_in_fini(const char *what, int status)
{
    (void)status;
    if (strcmp(what, "fini") == 0)
        g_fini_finalize_rc = tether_runtime_finalize(g_callers_rt, SECONDS(30));
}

TEST(fini_that_finalizes_the_callers_runtime)
{
    g_callers_rt = t_runtime(NULL); /* attached to it, with no ensure frame */
    tether_tstate mine, theirs;
    ASSERT_OK(tether_save_thread(&mine));
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, FIXTURE("hostile_default"));
    fx_setup_fn setup;
    LOOKUP(setup, p, "fx_setup");
    setup(rt, FIXTURE("hostile_default"), finalize_callers_rt_in_fini, 0);
    ASSERT_OK(tether_save_thread(&theirs));
    ASSERT_OK(tether_restore_thread(mine));
    ASSERT_FAILS(tether_runtime_finalize(rt, SECONDS(30)), TETHER_EFINALIZING,
                 "tether_runtime_finalize");
    ASSERT_EQ(g_fini_finalize_rc, TETHER_OK);
    ASSERT_EQ(tether_gil_held(), 0);
}

static atomic_int g_block_flags[2];

static void *ffi_call_block(void *arg)
{
    atomic_int *flags = g_block_flags;
    void *args[] = {&flags};
    int32_t r = 0;
    ASSERT_OK(tether_ffi_call(arg, "i32(ptr)", args, &r));
    ASSERT_EQ(r, 7);
    return NULL;
}

TEST(leave_without_an_enter_does_not_end_a_call_in_progress)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, FIXTURE("hostile_default"));
    hostile_setup(p, rt, FIXTURE("hostile_default"), 0);
    void *block;
    ASSERT_OK(tether_plugin_symbol(p, "fx_block", &block));
    atomic_store(&g_block_flags[0], 0);
    atomic_store(&g_block_flags[1], 0);
    pthread_t th = t_pthread(ffi_call_block, block);
    await_flag(&g_block_flags[0]);
    /* A leave nobody entered: it took the tether_ffi_call's pin, and the
       unload then ran fini under the call. */
    ASSERT_STATUS(tether_plugin_leave(p), TETHER_ESTATE);
    ASSERT_CONTAINS(tether_last_error(), "no tether_plugin_enter of");
    ASSERT_STATUS(tether_plugin_unload(p, MS(20)), TETHER_ETIMEDOUT);
    ASSERT_EQ(atomic_load(&g_fini_runs), 0);
    atomic_store(&g_block_flags[1], 1);
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    t_pthread_join(th);
    ASSERT_OK(tether_restore_thread(ts));
    ASSERT_OK(tether_plugin_unload(p, -1));
    ASSERT_EQ(atomic_load(&g_fini_runs), 1);
    t_finalize(rt);
}

static tether_plugin g_deep_p;
static int g_deep_rc = -99;

/* Unloads g_deep_p from `depth` frames of the host's own code down. */
static int __attribute__((noinline)) unload_deep(int depth)
{
    if (depth > 0) {
        volatile int r = unload_deep(depth - 1);
        return r + 1;
    }
    g_deep_rc = tether_plugin_unload(g_deep_p, -1);
    return 0;
}

static void unload_deep_on_worker(void *arg)
{
    unload_deep((int)(intptr_t)arg);
}

TEST(unload_from_deep_inside_a_plugin_worker_is_refused)
{
    /* The plugin's frame lay below the 256 frames the loader looked at:
       unload ran fini on the worker it joins and unmapped the code the
       worker returns into. */
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = g_deep_p = load(rt, FIXTURE("hostile"));
    int32_t (*run)(void (*)(void *), void *);
    void (*join)(void);
    LOOKUP(run, p, "fx_run_worker");
    LOOKUP(join, p, "fx_join_worker");
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    ASSERT_OK(run(unload_deep_on_worker, (void *)(intptr_t)600));
    join();
    ASSERT_OK(tether_restore_thread(ts));
    ASSERT_STATUS(g_deep_rc, TETHER_EDEADLK);
    ASSERT(is_mapped(FIXTURE("hostile")));
    ASSERT_OK(tether_plugin_unload(p, -1));
    ASSERT(!is_mapped(FIXTURE("hostile")));
    t_finalize(rt);
}

TEST(load_from_the_plugins_own_fini_is_refused)
{
    /* It waited for the fini it was called from: for ever. */
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, FIXTURE("hostile"));
    hostile_setup(p, rt, FIXTURE("hostile"), 1);
    ASSERT_OK(tether_plugin_unload(p, -1));
    ASSERT_STATUS(g_reported_rc, TETHER_EDEADLK);
    ASSERT_CONTAINS(g_reported, "the fini of 'hostile' is running");
    ASSERT_EQ(atomic_load(&g_fini_runs), 1);
    ASSERT(!is_mapped(FIXTURE("hostile")));
    t_finalize(rt);
}

TEST(load_from_a_thread_the_fini_joins_is_refused)
{
    /* A plugin thread loads its own library while fini joins it: the load
       waited for that fini, and the fini for the thread, for ever. */
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, FIXTURE("hostile"));
    hostile_setup(p, rt, FIXTURE("hostile"), 0);
    int32_t (*start_loader)(void);
    LOOKUP(start_loader, p, "fx_start_loader");
    ASSERT_OK(start_loader());
    ASSERT_OK(tether_plugin_unload(p, -1));
    ASSERT_STATUS(g_reported_rc, TETHER_EDEADLK);
    ASSERT_CONTAINS(g_reported, "the fini of 'hostile' is running");
    ASSERT_EQ(atomic_load(&g_fini_runs), 1);
    ASSERT(!is_mapped(FIXTURE("hostile")));
    t_finalize(rt);
}

static void *enter_and_block(void *arg)
{
    tether_plugin p = *(tether_plugin *)arg;
    int32_t (*block)(atomic_int *);
    LOOKUP(block, p, "fx_block");
    ASSERT_OK(tether_plugin_enter(p));
    ASSERT_EQ(block(g_block_flags), 7);
    ASSERT_OK(tether_plugin_leave(p));
    return NULL;
}

TEST(finalize_keeps_a_plugin_whose_fini_never_ran_mapped)
{
    /* Finalize abandons an unloadable plugin still called into at its
       deadline without its fini; when the call ended, the plugin was
       dlclosed under the thread its fini would have stopped. */
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, FIXTURE("hostile"));
    int32_t (*spin_start)(void), (*spins)(void);
    LOOKUP(spin_start, p, "fx_spin_start");
    LOOKUP(spins, p, "fx_spins");
    ASSERT_OK(spin_start());
    atomic_store(&g_block_flags[0], 0);
    atomic_store(&g_block_flags[1], 0);
    pthread_t th = t_pthread(enter_and_block, &p);
    await_flag(&g_block_flags[0]);
    ASSERT_OK(tether_runtime_finalize(rt, MS(20)));
    atomic_store(&g_block_flags[1], 1);
    t_pthread_join(th);
    /* Anything that reaps: another runtime's load and finalize. */
    tether_runtime rt2 = t_runtime(NULL);
    tether_plugin q = load(rt2, FIXTURE("unloadable"));
    ASSERT_OK(tether_plugin_unload(q, -1));
    t_finalize(rt2);
    ASSERT(is_mapped(FIXTURE("hostile")));
    int32_t laps = spins(); /* the spinner still runs the plugin's code */
    while (spins() < laps + 3)
        sched_yield();
}

TEST(on_free_into_a_plugin_keeps_it_mapped)
{
    /* tether_callback_on_free's function lay in an unloadable plugin that
       was then unloaded: the callback's free called unmapped code. */
    tether_runtime rt = t_runtime(NULL);
    tether_interp interp = t_main_interp(rt);
    tether_plugin p = load(rt, FIXTURE("hostile"));
    void (*count)(void *);
    LOOKUP(count, p, "fx_count");
    tether_callback cb;
    ASSERT_OK(tether_callback_new(interp, "i32(i32)", plus_one, NULL, &cb));
    static atomic_int freed;
    ASSERT_OK(tether_callback_on_free(cb, count, &freed));
    ASSERT_STATUS(tether_plugin_unload(p, MS(10)), TETHER_ETIMEDOUT);
    ASSERT_CONTAINS(tether_last_error(), "still alive after fini");
    ASSERT(is_mapped(FIXTURE("hostile")));
    ASSERT_OK(tether_callback_free(cb));
    ASSERT_EQ(atomic_load(&freed), 1);
    ASSERT_OK(tether_plugin_unload(p, -1));
    ASSERT(!is_mapped(FIXTURE("hostile")));
    t_finalize(rt);
}

TEST(a_long_init_error_is_quoted_in_whole_characters)
{
    /* The loader quoted init's sentence cut at a byte count, so the load
       error could end in half a character. */
    char msg[1001];
    for (int i = 0; i < 1000; i += 2)
        msg[i] = (char)0xC3, msg[i + 1] = (char)0xA9;
    msg[1000] = '\0';
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p;
    ASSERT(setenv("FX_SET_ERROR", msg, 1) == 0);
    int rc = tether_plugin_load(rt, FIXTURE("init_set_error"), &p);
    unsetenv("FX_SET_ERROR");
    ASSERT_STATUS(rc, TETHER_EPLUGIN);
    const unsigned char *e = (const unsigned char *)tether_last_error();
    ASSERT_CONTAINS((const char *)e, "failed with ENOMEM (-3): \xC3\xA9");
    size_t n = strlen((const char *)e);
    ASSERT(n > 0);
    /* Ends in a whole U+00E9, not in its first byte. */
    ASSERT_EQ(e[n - 1], 0xA9);
    ASSERT_EQ(e[n - 2], 0xC3);
    t_finalize(rt);
}

/* A call queued with tether_call_soon that no checkpoint ran before the
   runtime's finalize is dropped (tether.h), and so is its pin of the
   plugin its function is in.  It used to stay queued, pinned, until the
   interpreter's memory was freed, which the cached thread state of a
   thread that once ensured the interpreter (here the one whose load ran
   init) puts off until that thread exits: finalize ran fini and then
   waited for the pin until its deadline, and left the unloadable plugin
   mapped; an unload with no timeout waited for ever (API fuzzer seed
   x10). */
struct soon_loader {
    tether_runtime rt;
    tether_plugin p;
    t_sem loaded, end;
};

static void *soon_load(void *arg)
{
    struct soon_loader *s = arg;
    s->p = load(s->rt, FIXTURE("unloadable")); /* init ensures: cached */
    t_sem_post(&s->loaded);
    t_sem_wait(&s->end); /* alive, with its cached state, until the end */
    return NULL;
}

TEST(finalize_drops_a_queued_call_and_its_plugin_pin)
{
    struct soon_loader s = {.rt = t_runtime(NULL)};
    t_sem_init(&s.loaded);
    t_sem_init(&s.end);
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts)); /* init needs the GIL */
    pthread_t th = t_pthread(soon_load, &s);
    t_sem_wait(&s.loaded);
    ASSERT_OK(tether_restore_thread(ts));
    int (*pending)(void *);
    LOOKUP(pending, s.p, "fx_pending");
    ASSERT_OK(tether_call_soon(t_main_interp(s.rt), pending, NULL));
    /* No checkpoint runs it: finalize drops it and unmaps the plugin. */
    t_finalize(s.rt);
    ASSERT(!is_mapped(FIXTURE("unloadable")));
    t_sem_post(&s.end);
    t_pthread_join(th);
}

/* A callback whose guest function is in an unloadable plugin outlives the
   runtime's finalize, which runs fini and, unable to wait for it (its
   deadline has passed), leaves the plugin mapped, an orphan.  The free of
   the callback, holding no GIL, drops the last pin: it must dlclose the
   plugin then, as no load, unload or finalize may come to do it (API
   fuzzer seed x12: the record and its handle, 5 blocks, were still live
   at the end, and the library mapped). */
TEST(a_callback_freed_after_finalize_unmaps_its_plugin)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, FIXTURE("unloadable"));
    tether_guest_fn guest;
    LOOKUP(guest, p, "fx_guest");
    tether_callback cb;
    ASSERT_OK(tether_callback_new(t_main_interp(rt), "i32(i32)", guest, NULL, &cb));
    ASSERT_OK(tether_runtime_finalize(rt, 0));
    ASSERT(is_mapped(FIXTURE("unloadable"))); /* the callback holds it */
    ASSERT_OK(tether_callback_free(cb));
    ASSERT(!is_mapped(FIXTURE("unloadable")));
}

/* A tether_ffi_call into a plugin still running at the finalize
   deadline: the plugin is abandoned without fini (mapped for good, as one
   that is not unloadable always is), and the call's end, holding no GIL,
   drops the last pin.  It must free the record and its handle at once:
   the stale handle then answers EBADHANDLE (it answered ESTATE, the
   registry still holding it, until some later load, unload or finalize).
   (fx_default: the unloadable fixture's own callback, which its fini would
   free, would pin it as well.) */
TEST(a_call_that_outlived_finalize_frees_its_plugins_record)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, FIXTURE("default"));
    struct blocked_call b = {0};
    ASSERT_OK(tether_plugin_symbol(p, "fx_block", &b.fn));
    pthread_t th = t_pthread(call_into_plugin, &b);
    await_flag(&b.flags[0]);
    ASSERT_OK(tether_runtime_finalize(rt, 0));
    atomic_store(&b.flags[1], 1);
    t_pthread_join(th); /* a thread holding no GIL */
    ASSERT_OK(b.rc);
    ASSERT_EQ(b.result, 7);
    ASSERT_STATUS(tether_plugin_leave(p), TETHER_EBADHANDLE);
}

/* tether_runtime_finalize with no timeout, while a callback whose guest
   function is in an unloadable plugin is alive: finalize runs fini and
   returns, leaving the plugin an orphan for the callback's free to
   dlclose ("later, by itself", docs/plugins.md).  It waited for the
   callback for ever, though the host frees it only after finalize
   returns, or from a thread waiting for a GIL the finalizing thread holds
   (API fuzzer seed x13, a hang). */
TEST(finalize_without_timeout_leaves_a_live_callback_to_the_host)
{
    tether_runtime rt = t_runtime(NULL);
    tether_plugin p = load(rt, FIXTURE("unloadable"));
    tether_guest_fn guest;
    LOOKUP(guest, p, "fx_guest");
    tether_callback cb;
    ASSERT_OK(tether_callback_new(t_main_interp(rt), "i32(i32)", guest, NULL, &cb));
    ASSERT_OK(tether_runtime_finalize(rt, -1));
    ASSERT_STATUS(tether_plugin_info(p, NULL, NULL), TETHER_EBADHANDLE);
    ASSERT(is_mapped(FIXTURE("unloadable"))); /* the callback holds it */
    ASSERT_OK(tether_callback_free(cb));
    ASSERT(!is_mapped(FIXTURE("unloadable")));
}

RUNNER_MAIN(TEST_ENTRY(ticker_native_threads_count_exactly),
            TEST_ENTRY(ticker_calls_a_callback_through_ffi_call),
            TEST_ENTRY(unload_stops_ticker_threads_that_still_call_back),
            TEST_ENTRY(finalize_while_native_threads_are_mid_callback),
            TEST_ENTRY(pool_runs_guest_jobs_on_its_workers),
            TEST_ENTRY(blockio_reads_what_was_written),
            TEST_ENTRY(blockio_read_is_interrupted_by_an_async_exception),
            TEST_ENTRY(blockio_read_is_interrupted_by_finalize),
            TEST_ENTRY(refuses_a_missing_file),
            TEST_ENTRY(refuses_a_file_that_is_not_a_shared_object),
            TEST_ENTRY(refuses_a_library_without_an_entry),
            TEST_ENTRY(refuses_an_entry_returning_null),
            TEST_ENTRY(refuses_a_descriptor_too_small_for_its_version),
            TEST_ENTRY(refuses_an_undersized_descriptor),
            TEST_ENTRY(refuses_another_major_version),
            TEST_ENTRY(refuses_a_newer_minor_version),
            TEST_ENTRY(refuses_unknown_flags),
            TEST_ENTRY(refuses_a_descriptor_without_a_name),
            TEST_ENTRY(refuses_a_plugin_whose_init_fails),
            TEST_ENTRY(plugin_for_a_newer_host_degrades_with_api_has),
            TEST_ENTRY(plugin_for_an_older_host_finds_its_members),
            TEST_ENTRY(debug_host_reports_a_missing_member_and_aborts),
            TEST_ENTRY(loading_the_same_file_twice_counts_references),
            TEST_ENTRY(concurrent_loads_share_one_init),
            TEST_ENTRY(unload_times_out_while_a_call_is_in_progress),
            TEST_ENTRY(unload_waits_for_a_call_in_progress),
            TEST_ENTRY(unload_keeps_a_plugin_mapped_while_a_callback_into_it_lives),
            TEST_ENTRY(unload_keeps_a_plugin_mapped_while_a_channel_discards_into_it),
            TEST_ENTRY(failed_init_keeps_an_unloadable_plugin_mapped_while_its_thread_runs),
            TEST_ENTRY(failed_init_keeps_a_default_plugin_mapped_for_its_plain_thread),
            TEST_ENTRY(unload_of_a_default_plugin_waits_for_a_call_in_progress),
            TEST_ENTRY(unload_from_the_plugins_own_code_is_refused),
            TEST_ENTRY(concurrent_loads_and_unloads_of_one_path),
            TEST_ENTRY(finalize_unloads_the_plugins_of_its_runtime),
            TEST_ENTRY(finalize_from_the_plugins_own_code_keeps_it_mapped),
            TEST_ENTRY(debug_report_lists_plugins_never_unloaded),
            TEST_ENTRY(init_says_why_it_failed_with_set_error),
            TEST_ENTRY(set_error_cuts_at_a_character_boundary),
            TEST_ENTRY(enter_holds_off_the_unload_of_a_direct_call),
            TEST_ENTRY(leave_works_after_finalize_abandoned_the_plugin),
            TEST_ENTRY(two_runtimes_get_two_instances_of_one_plugin),
            TEST_ENTRY(a_retained_callback_outlives_the_hosts_free),
            TEST_ENTRY(host_table_allow_threads_macros_link_without_libtether),
            TEST_ENTRY(load_survives_every_allocation_failure),
            TEST_ENTRY(bad_arguments_get_errors),
            TEST_ENTRY(leave_without_an_enter_does_not_end_a_call_in_progress),
            TEST_ENTRY(fini_that_finalizes_the_callers_runtime),
            TEST_ENTRY(unload_from_deep_inside_a_plugin_worker_is_refused),
            TEST_ENTRY(load_from_the_plugins_own_fini_is_refused),
            TEST_ENTRY(load_from_a_thread_the_fini_joins_is_refused),
            TEST_ENTRY(finalize_keeps_a_plugin_whose_fini_never_ran_mapped),
            TEST_ENTRY(on_free_into_a_plugin_keeps_it_mapped),
            TEST_ENTRY(a_long_init_error_is_quoted_in_whole_characters),
            TEST_ENTRY(finalize_drops_a_queued_call_and_its_plugin_pin),
            TEST_ENTRY(a_callback_freed_after_finalize_unmaps_its_plugin),
            TEST_ENTRY(a_call_that_outlived_finalize_frees_its_plugins_record),
            TEST_ENTRY_T(finalize_without_timeout_leaves_a_live_callback_to_the_host, 30))
